#!/usr/bin/env bash
# Body-plugin benchmarks with shared/bench/proxybench.py, 100 KB responses (--path /100k.bin):
#
#   scripts/bench-body.sh static --runs 3   # directory plugin vs nginx serving the same file
#                                           # (the harness's "direct" row: its backend nginx)
#   scripts/bench-body.sh cache --runs 3    # cache hit (memory) vs nginx proxy_cache
#
# static also runs scripts/bench/static_floor.py, a bare gevent + httptools file server (open,
# fstat, head, sendfile; nothing else), as the "static-floor" row; NO_BASELINE=1 skips it.
# pingap: one master + one worker pinned to cpu 0 (the harness default), access log off as
# the harness's nginx; configs in scripts/bench/pingap-{static,cache}.toml.tpl and
# scripts/bench/nginx-cache.conf.tpl. Other arguments go to proxybench.py; SHARED, PYTHON,
# PINGAP, RESULTS_DIR, NO_INSTALL as in scripts/bench-common.sh.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bench-common.sh"
kind="${1:?usage: bench-body.sh static|cache [proxybench args]}"; shift
bench_harness
bench_tools nginx wrk taskset
bench_python gevent h11 httptools
subst="sed -e 's|@PORT@|{port}|g' -e 's|@UPSTREAM@|{upstream}|g' -e 's|@WORKDIR@|{workdir}/{name}|g' -e 's|@WWW@|{workdir}/www|g'"
pingap_tail="$subst $here/bench/pingap-$kind.toml.tpl > '{workdir}/{name}.toml' && mkdir -p '{workdir}/{name}' && cd '{workdir}' && exec @PINGAP@ -c '{workdir}/{name}.toml'"
pingap_cmd="${pingap_tail//@PINGAP@/"$pingap_prog"}"
proxies=(--proxy "pingap-$kind=$pingap_cmd")
bench_before "pingap-$kind" "$pingap_cmd"
bench_alt "pingap-$kind" "$pingap_tail"
proxies+=("${before_args[@]}" "${alt_args[@]}")
if [[ "$kind" == static && -z "${NO_BASELINE:-}" ]]; then
  # the floor: a bare gevent loop serving the same file (NO_BASELINE=1 skips it)
  proxies+=(--proxy "static-floor=$(q "$python") $(q "$here/bench/static_floor.py") --listen 127.0.0.1:{port} --root '{workdir}/www'")
fi
if [[ "$kind" == cache ]]; then
  nginx_cmd="mkdir -p '{workdir}/{name}/cache' && $subst $here/bench/nginx-cache.conf.tpl > '{workdir}/{name}.conf' && exec nginx -c '{workdir}/{name}.conf' -p '{workdir}/{name}/' -e '{workdir}/{name}/error.log'"
  proxies+=(--proxy "nginx-cache=$nginx_cmd")
fi
# a work dir of our own: proxybench's default (mkdtemp, mode 0700) is unreadable to the
# backend nginx's workers, which then answer 403
mkdir -p "$results"
exec "$python" "$bench_py" --path /100k.bin "${proxies[@]}" \
  --json "$results/body-$kind-$stamp.json" --workdir "$results/body-$kind-$stamp-wd" "$@"
