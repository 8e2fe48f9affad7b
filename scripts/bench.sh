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
# Environment: SHARED, RESULTS_DIR, PYTHON, PINGAP, NO_INSTALL as in scripts/bench-common.sh;
# RESULTS_DIR gets pingap-<path>-<stamp>.json and its work dir (configs, pingap.log, access
# log, wrk outputs) unless you pass --json / --workdir yourself. And:
#   NO_BASELINE=1       skip the bare gevent+h11 proxy (scripts/bench/h11_baseline.py) that
#                       otherwise runs beside pingap as the core issue's floor
#   NO_H11=1            skip the second pingap row, the same config with http1_codec = "h11"
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bench-common.sh"
tpl="$here/bench/pingap-bench.toml.tpl"
[[ -f "$tpl" ]] || { echo "bench.sh: template $tpl not found" >&2; exit 2; }
bench_harness
bench_tools nginx wrk taskset
bench_python gevent h11 httptools

# --- the pingap command (config written into the harness work dir) ---------------------------
# One command per HTTP/1 codec (servers.<name>.http1_codec): the default "fast" (httptools)
# and the reference "h11". Each run gets its own config and work files ({name} differs).
pingap_cmd() {
  local codec="$1" cmd
  cmd="sed -e 's|@PORT@|{port}|g' -e 's|@UPSTREAM@|{upstream}|g' -e 's|@WORKDIR@|{workdir}/{name}|g' -e 's|@CODEC@|$codec|g'"
  # cd: workers run `python -m workers`, which puts the cwd first on sys.path; keep it neutral.
  cmd+=" $(q "$tpl") > '{workdir}/{name}.toml' && mkdir -p '{workdir}/{name}' && cd '{workdir}' && exec ${2:-$pingap_prog} -c '{workdir}/{name}.toml'"
  printf '%s' "$cmd"
}

# --- results dir, JSON and work dir unless given ---------------------------------------------
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
bench_before pingap "$(pingap_cmd fast)"
bench_alt pingap "$(pingap_cmd fast @PINGAP@)"
exec "$python" "$bench_py" "${codecs[@]}" "${before_args[@]}" "${alt_args[@]}" "${baseline[@]}" \
  "${extra[@]}" "$@"
