#!/usr/bin/env bash
# Throughput benchmark of pingap (this checkout) against nginx, with shared/bench/proxybench.py.
#
#   scripts/bench.sh --runs 3                      # path / (4-byte "pong" body)
#   scripts/bench.sh --path /100k.bin --runs 3     # 100 KB body
#
# Every argument is passed on to proxybench.py (see shared/bench/README.md for its flags).
# What is measured: pingap twice — "pingap" with the default HTTP/1 codec (httptools,
# http1_codec = "fast") and "pingap-h11" with http1_codec = "h11" — each one master + ONE
# gevent worker (basic.threads = 1), one server on
# 127.0.0.1:{port}, one location "/" -> upstream {upstream} (the harness backend nginx), access
# log ON (combined) to {workdir}/pingap-access.log. The config comes from
# scripts/bench/pingap-bench.toml.tpl. The proxy (master + worker) is pinned to cpu 0 (the
# harness default --proxy-cpus; the master is idle), wrk + backend share cpu 1. The harness
# counts the CPU and RSS of the whole process tree/session (master + worker).
#
# Environment:
#   SHARED=/path        the shared dir holding bench/proxybench.py (default: <repo>/../shared)
#   RESULTS_DIR=/path   where the JSON results and kept work dirs go (default: <repo>/tmp/bench,
#                       git-ignored). Each invocation writes pingap-<path>-<stamp>.json there and
#                       keeps its work dir (configs, pingap.log, access log, wrk outputs) unless
#                       you pass --json / --workdir yourself.
#   PYTHON=python3      interpreter for the harness (and for pingap when `pingap` is not on PATH)
#   PINGAP=cmd          program to run as pingap (gets `-c CONFIG`; default: `pingap` on PATH)
#   NO_INSTALL=1        never run apt-get; just fail if a tool is missing
#   NO_BASELINE=1       skip the bare gevent+h11 proxy (scripts/bench/h11_baseline.py) that
#                       otherwise runs beside pingap as the core issue's floor
#   NO_H11=1            skip the second pingap row, the same config with http1_codec = "h11"
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(git -C "$here" rev-parse --show-toplevel 2>/dev/null || (cd "$here/.." && pwd))"
shared="${SHARED:-$root/../shared}"
bench_py="$shared/bench/proxybench.py"
tpl="$here/bench/pingap-bench.toml.tpl"
python="${PYTHON:-python3}"

[[ -f "$bench_py" ]] || { echo "bench.sh: $bench_py not found (set SHARED=/path/to/shared)" >&2; exit 2; }
[[ -f "$tpl" ]] || { echo "bench.sh: template $tpl not found" >&2; exit 2; }

# --- 1. tools: nginx, wrk, taskset (apt-get only what is missing) ---------------------------
missing=()
command -v nginx   >/dev/null 2>&1 || missing+=(nginx-light)
command -v wrk     >/dev/null 2>&1 || missing+=(wrk)
command -v taskset >/dev/null 2>&1 || missing+=(util-linux)
if ((${#missing[@]})); then
  if [[ -n "${NO_INSTALL:-}" ]]; then
    echo "bench.sh: missing packages: ${missing[*]} (NO_INSTALL is set)" >&2; exit 2
  fi
  sudo=""; [[ $(id -u) -eq 0 ]] || sudo="sudo"
  echo "bench.sh: installing ${missing[*]}" >&2
  $sudo apt-get install -y "${missing[@]}" || { $sudo apt-get update && $sudo apt-get install -y "${missing[@]}"; }
fi
if [[ -z "${PINGAP:-}" ]]; then
  "$python" -c 'import gevent, h11, httptools' 2>/dev/null || {
    echo "bench.sh: $python cannot import pingap's dependencies; run: pip install -e $root" >&2; exit 2; }
fi

# --- 2. the pingap command (config written into the harness work dir) -----------------------
# proxybench runs it with /bin/sh after str.format(): {port} {upstream} {workdir} are its
# placeholders, so no other braces may appear in it. PYTHONPATH (inherited through the harness)
# makes master and worker import this checkout even if another one is installed.
# PINGAP overrides the program (default: the `pingap` entry point, else $PYTHON -c main()).
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
q() { printf '%q' "$1"; }
if [[ -n "${PINGAP:-}" ]]; then
  pingap_prog="$PINGAP"
elif command -v pingap >/dev/null 2>&1; then
  pingap_prog="$(q "$(command -v pingap)")"
else
  pingap_prog="$(q "$python") -c 'import sys; from master.cli import main; sys.exit(main())'"
fi
# One command per HTTP/1 codec (servers.<name>.http1_codec): the default "fast" (httptools)
# and the reference "h11". Each run gets its own config and work files ({name} differs).
pingap_cmd() {
  local codec="$1" cmd
  cmd="sed -e 's|@PORT@|{port}|g' -e 's|@UPSTREAM@|{upstream}|g' -e 's|@WORKDIR@|{workdir}/{name}|g' -e 's|@CODEC@|$codec|g'"
  # cd: workers run `python -m workers`, which puts the cwd first on sys.path; keep it neutral.
  cmd+=" $(q "$tpl") > '{workdir}/{name}.toml' && mkdir -p '{workdir}/{name}' && cd '{workdir}' && exec $pingap_prog -c '{workdir}/{name}.toml'"
  printf '%s' "$cmd"
}

# --- 3. results dir, JSON and work dir unless given ------------------------------------------
results="${RESULTS_DIR:-$root/tmp/bench}"
mkdir -p "$results"
path="/"; have_json=""; have_wd=""
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[i]}" in
    --path) path="${args[i+1]:-/}" ;;
    --path=*) path="${args[i]#--path=}" ;;
    --json|--json=*) have_json=1 ;;
    --workdir|--workdir=*) have_wd=1 ;;
  esac
done
slug="$(printf '%s' "$path" | tr -c 'A-Za-z0-9.' '_' | sed 's/^_*//')"; slug="${slug:-pong}"
stamp="$(date +%Y%m%d-%H%M%S)"
extra=()
[[ -n "$have_json" ]] || extra+=(--json "$results/pingap-$slug-$stamp.json")
[[ -n "$have_wd" ]] || extra+=(--workdir "$results/pingap-$slug-$stamp-wd")

echo "bench.sh: $bench_py, results in $results" >&2
# The issue's floor is "what a bare h11 loop does here": measure one in the same run
# (NO_BASELINE=1 skips it).
baseline=()
if [[ -z "${NO_BASELINE:-}" ]]; then
  baseline=(--proxy "h11-baseline=$(q "$python") $(q "$here/bench/h11_baseline.py") --listen 127.0.0.1:{port} --upstream {upstream}")
fi
codecs=(--proxy "pingap=$(pingap_cmd fast)")
[[ -n "${NO_H11:-}" ]] || codecs+=(--proxy "pingap-h11=$(pingap_cmd h11)")
exec "$python" "$bench_py" "${codecs[@]}" "${baseline[@]}" "${extra[@]}" "$@"
