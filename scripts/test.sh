#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs what the tests run for real
# (Debian packages, the project with its test extras), then lint, types and pytest.
#   scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

# Debian packages the integration tests drive as real processes.
need=()
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
command -v pebble >/dev/null 2>&1 || need+=(pebble)  # ACME test CA (+ pebble-challtestsrv)
command -v h2load >/dev/null 2>&1 || need+=(nghttp2-client)
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)  # config storage tests
command -v chromedriver >/dev/null 2>&1 || need+=(chromium chromium-driver)  # admin UI tests
if [ ${#need[@]} -gt 0 ]; then
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

"$PYTHON" -m pip install -q --disable-pip-version-check -e '.[test]'
# the worked example of an out-of-tree plugin, installed the way a user would
"$PYTHON" -m pip install -q --disable-pip-version-check ./tests/plugin_example

"$PYTHON" -m ruff check pingap master workers tests scripts
"$PYTHON" -m mypy pingap master workers
exec "$PYTHON" -m pytest -q -p no:cacheprovider "$@"
