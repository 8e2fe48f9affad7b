#!/usr/bin/env bash
# What a plugin chain costs: the same pingap location with and without request_id,
# response_headers, cors and key_auth, in the same proxybench run (shared/bench/proxybench.py).
#
#   scripts/bench-plugins.sh --runs 3
#
# Rows: "no-plugins" and "plugins" — each one master + ONE gevent worker, the fast HTTP/1
# codec, access log on (scripts/bench/pingap-plugins-bench.toml.tpl). Both are driven at
# /?apikey=bench-key (key_auth reads the query; the backend ignores it), so the only
# difference is the plugin list. wrk sends no Origin, so cors only checks for one.
# Arguments go on to proxybench.py; SHARED, PYTHON, PINGAP, RESULTS_DIR, NO_INSTALL as in
# scripts/bench-common.sh.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bench-common.sh"
tpl="$here/bench/pingap-plugins-bench.toml.tpl"
bench_harness
bench_tools nginx wrk taskset
bench_python gevent h11 httptools

# proxybench formats the command with str.format and runs it with /bin/sh: no other braces
row() {
  local plugins="$1"
  printf '%s' "sed -e 's|@PORT@|{port}|g' -e 's|@UPSTREAM@|{upstream}|g' \
-e 's|@WORKDIR@|{workdir}/{name}|g' -e 's|@PLUGINS@|$plugins|g' $(q "$tpl") \
> '{workdir}/{name}.toml' && mkdir -p '{workdir}/{name}' && cd '{workdir}' \
&& exec $pingap_prog -c '{workdir}/{name}.toml'"
}
mkdir -p "$results"
exec "$python" "$bench_py" --path '/?apikey=bench-key' \
  --proxy "no-plugins=$(row '')" \
  --proxy "plugins=$(row '"rid", "resp", "cors", "key"')" \
  --json "$results/plugins-$stamp.json" --workdir "$results/plugins-$stamp-wd" "$@"
