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
# Arguments go on to proxybench.py; SHARED, PYTHON, PINGAP, RESULTS_DIR as for scripts/bench.sh.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
shared="${SHARED:-$root/../shared}"
bench_py="$shared/bench/proxybench.py"
tpl="$here/bench/pingap-plugins-bench.toml.tpl"
python="${PYTHON:-python3}"
[[ -f "$bench_py" ]] || { echo "bench-plugins.sh: $bench_py not found (set SHARED=...)" >&2; exit 2; }

export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
q() { printf '%q' "$1"; }
if [[ -n "${PINGAP:-}" ]]; then
  prog="$PINGAP"
elif command -v pingap >/dev/null 2>&1; then
  prog="$(q "$(command -v pingap)")"
else
  prog="$(q "$python") -c 'import sys; from master.cli import main; sys.exit(main())'"
fi
# proxybench formats the command with str.format and runs it with /bin/sh: no other braces
row() {
  local plugins="$1"
  printf '%s' "sed -e 's|@PORT@|{port}|g' -e 's|@UPSTREAM@|{upstream}|g' \
-e 's|@WORKDIR@|{workdir}/{name}|g' -e 's|@PLUGINS@|$plugins|g' $(q "$tpl") \
> '{workdir}/{name}.toml' && mkdir -p '{workdir}/{name}' && cd '{workdir}' \
&& exec $prog -c '{workdir}/{name}.toml'"
}
results="${RESULTS_DIR:-$root/tmp/bench}"
mkdir -p "$results"
stamp="$(date +%Y%m%d-%H%M%S)"
exec "$python" "$bench_py" --path '/?apikey=bench-key' \
  --proxy "no-plugins=$(row '')" \
  --proxy "plugins=$(row '"rid", "resp", "cors", "key"')" \
  --json "$results/plugins-$stamp.json" --workdir "$results/plugins-$stamp-wd" "$@"
