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
# Environment: SHARED, RESULTS_DIR, PYTHON, PINGAP, NO_INSTALL as in scripts/bench-common.sh;
# RESULTS_DIR gets h2-<mode>-<path>-<stamp>.json and its work dir (configs, pingap.log, access
# log, h2load outputs) unless you pass --json / --workdir yourself.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bench-common.sh"
h2bench="$here/bench/h2bench.py"
bench_harness
bench_tools nginx h2load taskset openssl
bench_python gevent h11 h2 httptools

# --- results dir, JSON and work dir unless given ---------------------------------------------
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
extra=(--proxybench "$bench_py")
[[ -n "$have_json" ]] || extra+=(--json "$results/h2-$mode-$slug-$stamp.json")
[[ -n "$have_wd" ]] || extra+=(--workdir "$results/h2-$mode-$slug-$stamp-wd")
[[ -z "${PINGAP:-}" ]] || extra+=(--pingap "$PINGAP")

echo "bench-h2.sh: $h2bench with $bench_py, results in $results" >&2
exec "$python" "$h2bench" "${extra[@]}" "$@"
