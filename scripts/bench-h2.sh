#!/usr/bin/env bash
# HTTP/2 throughput benchmark of pingap (this checkout) against nginx's HTTP/2, with h2load, in
# one run: scripts/bench/h2bench.py (which imports shared/bench/proxybench.py for the backend,
# the reference nginx, process handling, CPU/RSS sampling and pinning).
#
#   scripts/bench-h2.sh --runs 3                        # h2c prior knowledge, path / ("pong")
#   scripts/bench-h2.sh --path /100k.bin --runs 3       # 100 KB body
#   scripts/bench-h2.sh --tls --runs 3                  # TLS + ALPN h2 (self-signed certificate)
#
# Every argument is passed on to h2bench.py (`scripts/bench/h2bench.py --help` lists them:
# -c/-m connections and streams, --duration, --warmup, --runs, --path, --tls, --json, ...).
# What is measured: h2load -c 20 -m 10 -D 10 --warm-up-time 2, three runs round-robin, against
# nginx (1 worker, `listen ... http2`, HTTP/1.1 keep-alive to the backend) and pingap (one
# gevent worker, basic.threads = 1, access log on, enabled_h2 = true; the config is
# scripts/bench/pingap-bench.toml.tpl with HTTP/2 turned on). Both proxies are pinned to cpu 0,
# h2load and the backend nginx share cpu 1.
#
# Environment:
#   SHARED=/path        the shared dir holding bench/proxybench.py (default: <repo>/../shared)
#   RESULTS_DIR=/path   where the JSON results and kept work dirs go (default: <repo>/tmp/bench,
#                       git-ignored). Each invocation writes h2-<mode>-<path>-<stamp>.json there
#                       and keeps its work dir (configs, pingap.log, access log, h2load outputs)
#                       unless you pass --json / --workdir yourself.
#   PYTHON=python3      interpreter for the harness (and for pingap when `pingap` is not on PATH)
#   PINGAP=cmd          program to run as pingap (gets `-c CONFIG`; default: `pingap` on PATH)
#   NO_INSTALL=1        never run apt-get; just fail if a tool is missing
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(git -C "$here" rev-parse --show-toplevel 2>/dev/null || (cd "$here/.." && pwd))"
shared="${SHARED:-$root/../shared}"
bench_py="$shared/bench/proxybench.py"
h2bench="$here/bench/h2bench.py"
python="${PYTHON:-python3}"

[[ -f "$bench_py" ]] || { echo "bench-h2.sh: $bench_py not found (set SHARED=/path/to/shared)" >&2; exit 2; }

# --- 1. tools: nginx, h2load, taskset, openssl (apt-get only what is missing) ---------------
missing=()
command -v nginx   >/dev/null 2>&1 || missing+=(nginx-light)
command -v h2load  >/dev/null 2>&1 || missing+=(nghttp2-client)
command -v taskset >/dev/null 2>&1 || missing+=(util-linux)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
if ((${#missing[@]})); then
  if [[ -n "${NO_INSTALL:-}" ]]; then
    echo "bench-h2.sh: missing packages: ${missing[*]} (NO_INSTALL is set)" >&2; exit 2
  fi
  sudo=""; [[ $(id -u) -eq 0 ]] || sudo="sudo"
  echo "bench-h2.sh: installing ${missing[*]}" >&2
  $sudo apt-get install -y "${missing[@]}" || { $sudo apt-get update && $sudo apt-get install -y "${missing[@]}"; }
fi
if [[ -z "${PINGAP:-}" ]]; then
  "$python" -c 'import gevent, h11, h2, httptools' 2>/dev/null || {
    echo "bench-h2.sh: $python cannot import pingap's dependencies; run: pip install -e $root" >&2; exit 2; }
fi

# --- 2. results dir, JSON and work dir unless given ------------------------------------------
results="${RESULTS_DIR:-$root/tmp/bench}"
mkdir -p "$results"
path="/"; mode="h2c"; have_json=""; have_wd=""
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[i]}" in
    --path) path="${args[i+1]:-/}" ;;
    --path=*) path="${args[i]#--path=}" ;;
    --tls) mode="tls" ;;
    --json|--json=*) have_json=1 ;;
    --workdir|--workdir=*) have_wd=1 ;;
  esac
done
slug="$(printf '%s' "$path" | tr -c 'A-Za-z0-9.' '_' | sed 's/^_*//')"; slug="${slug:-pong}"
stamp="$(date +%Y%m%d-%H%M%S)"
extra=(--proxybench "$bench_py")
[[ -n "$have_json" ]] || extra+=(--json "$results/h2-$mode-$slug-$stamp.json")
[[ -n "$have_wd" ]] || extra+=(--workdir "$results/h2-$mode-$slug-$stamp-wd")
[[ -z "${PINGAP:-}" ]] || extra+=(--pingap "$PINGAP")

echo "bench-h2.sh: $h2bench with $bench_py, results in $results" >&2
exec "$python" "$h2bench" "${extra[@]}" "$@"
