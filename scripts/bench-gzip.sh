#!/usr/bin/env bash
# gzip of a 100 KB text response: pingap (directory + compression, gzip_level 6) beside
# nginx (gzip on, gzip_comp_level 6), same file, one worker each on cpu 0, wrk on cpu 1
# with "Accept-Encoding: gzip" (proxybench's wrk sends none, hence this script).
#   scripts/bench-gzip.sh [seconds]
# PYTHON, PINGAP, NO_INSTALL as in scripts/bench-common.sh.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bench-common.sh"
bench_tools nginx wrk taskset curl
bench_python gevent h11 httptools
secs="${1:-8}"
work="$(mktemp -d)"
trap 'kill $(cat "$work"/*.pid 2>/dev/null) 2>/dev/null || true; rm -rf "$work"' EXIT
mkdir -p "$work/www"
"$python" - "$work/www/100k.txt" <<'PY'
import random, sys
rng = random.Random(1)
words = ["proxy", "pingap", "worker", "gevent", "stream", "header", "body", "cache"]
text = " ".join(rng.choice(words) for _ in range(40000)).encode()[:100_000]
open(sys.argv[1], "wb").write(text)
PY
cat > "$work/pingap.toml" <<TOML
[basic]
threads = 1
pid_file = "$work/pingap.pid"
[plugins.files]
category = "directory"
path = "$work/www"
chunk_size = "128kb"
[plugins.gzip]
category = "compression"
gzip_level = 6
[locations.files]
path = "/"
plugins = ["files", "gzip"]
[servers.s]
addr = "127.0.0.1:19301"
locations = ["files"]
TOML
cat > "$work/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $work/nginx.pid;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 10000000;
    client_body_temp_path $work; proxy_temp_path $work; fastcgi_temp_path $work;
    uwsgi_temp_path $work; scgi_temp_path $work;
    gzip on; gzip_comp_level 6; gzip_types text/plain;
    server { listen 127.0.0.1:19302; root $work/www; default_type text/plain; }
}
CONF
taskset -c 0 sh -c "exec $pingap_prog -c $(q "$work/pingap.toml")" > "$work/pingap.log" 2>&1 &
taskset -c 0 nginx -c "$work/nginx.conf" -p "$work/" -e "$work/nginx-error.log" &
for port in 19301 19302; do
  for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$port/100k.txt" && break; sleep 0.1; done
done
for name in pingap:19301 nginx:19302; do
  port="${name#*:}"
  size=$(curl -s -H 'Accept-Encoding: gzip' -o /dev/null -w '%{size_download}' "http://127.0.0.1:$port/100k.txt")
  before=$(grep '^cpu0 ' /proc/stat | awk '{print $2+$3+$4+$7+$8}')
  out=$(taskset -c 1 wrk -t1 -c20 -d"${secs}s" -H 'Accept-Encoding: gzip' "http://127.0.0.1:$port/100k.txt")
  after=$(grep '^cpu0 ' /proc/stat | awk '{print $2+$3+$4+$7+$8}')
  rps=$(printf '%s\n' "$out" | awk '/Requests\/sec/ {print $2}')
  busy=$(( (after - before) * 100 / ( $(getconf CLK_TCK) * secs ) ))
  echo "$name gzip body ${size} B, ${rps} req/s, cpu0 busy ${busy}%"
done
