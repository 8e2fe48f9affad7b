# Sourced by the scripts/bench*.sh benchmarks: where things are, the tools they need, and the
# pingap command they run. Not a command of its own.
#
# After `source "$(dirname "${BASH_SOURCE[0]}")/bench-common.sh"` a script has:
#   here root shared bench_py python results stamp pingap_prog, and q (printf %q),
#   PYTHONPATH starting with this checkout (master and worker import it even if another
#   one is installed), and these steps to call:
#   bench_harness          fail unless shared/bench/proxybench.py is there
#   bench_tools TOOL...    apt-get install the package of each missing tool
#   bench_python MODULE... fail unless $PYTHON imports them (skipped when PINGAP is set)
#
# Environment (every benchmark):
#   SHARED=/path        the shared dir holding bench/proxybench.py (default: <repo>/../shared)
#   RESULTS_DIR=/path   where JSON results and kept work dirs go (default: <repo>/tmp/bench,
#                       git-ignored)
#   PYTHON=python3      interpreter for the harness (and for pingap when `pingap` is not on PATH)
#   PINGAP=cmd          program to run as pingap (gets `-c CONFIG`; default: `pingap` on PATH)
#   NO_INSTALL=1        never run apt-get; just fail if a tool is missing
#   BEFORE=/path        another checkout of pingap (a worktree at an older commit): its code
#                       runs as one more row, "<row>-before", in the same round, so that a
#                       change is compared within one run (this VM drifts by more between
#                       runs than most changes move)
#   ALT_PYTHON=/usr/bin/python3.11
#                       another interpreter: this checkout's code under it runs as one more
#                       row, "<row>-<ALT_NAME>" (default "alt"), in the same round; its
#                       dependencies go into a venv under RESULTS_DIR (made once). For
#                       comparing CPython builds: an optimized one (PGO + LTO, as Debian's
#                       python3) against the one on PATH (bench.sh and bench-body.sh)

bench_name="$(basename "$0")"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(git -C "$here" rev-parse --show-toplevel 2>/dev/null || (cd "$here/.." && pwd))"
shared="${SHARED:-$root/../shared}"
bench_py="$shared/bench/proxybench.py"
python="${PYTHON:-python3}"
results="${RESULTS_DIR:-$root/tmp/bench}"
stamp="$(date +%Y%m%d-%H%M%S)"
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"

q() { printf '%q' "$1"; }

# proxybench runs a command with /bin/sh after str.format(): it must hold no other braces
if [[ -n "${PINGAP:-}" ]]; then
  pingap_prog="$PINGAP"
elif command -v pingap >/dev/null 2>&1; then
  pingap_prog="$(q "$(command -v pingap)")"
else
  pingap_prog="$(q "$python") -c 'import sys; from master.cli import main; sys.exit(main())'"
fi

# bench_before NAME CMD: sets before_args to the harness flags of the BEFORE row (CMD with
# the BEFORE checkout first on PYTHONPATH), or to nothing when BEFORE is not set
bench_before() {
  before_args=()
  [[ -n "${BEFORE:-}" ]] || return 0
  [[ -f "$BEFORE/pingap/__init__.py" ]] || {
    echo "$bench_name: BEFORE=$BEFORE is not a pingap checkout" >&2; exit 2; }
  before_args=(--proxy "$1-before=$2" --env "$1-before=PYTHONPATH=$(cd "$BEFORE" && pwd)")
}

# bench_alt NAME CMD_TAIL: sets alt_args to the harness flags of the ALT_PYTHON row: CMD_TAIL
# (a command line ending in `exec <pingap program>`, where the program is the alt venv's
# interpreter running master.cli), or to nothing when ALT_PYTHON is not set
bench_alt() {
  alt_args=()
  [[ -n "${ALT_PYTHON:-}" ]] || return 0
  local venv="$results/venv-${ALT_NAME:-alt}"
  if [[ ! -x "$venv/bin/python" ]]; then
    echo "$bench_name: making $venv with $ALT_PYTHON" >&2
    "$ALT_PYTHON" -m venv "$venv" && "$venv/bin/python" -m pip install -q "$root" >&2 || {
      echo "$bench_name: cannot make a venv with $ALT_PYTHON" >&2; exit 2; }
  fi
  local prog
  prog="$(q "$venv/bin/python") -c 'import sys; from master.cli import main; sys.exit(main())'"
  alt_args=(--proxy "$1-${ALT_NAME:-alt}=${2//@PINGAP@/"$prog"}")
}

bench_harness() {
  [[ -f "$bench_py" ]] || {
    echo "$bench_name: $bench_py not found (set SHARED=/path/to/shared)" >&2; exit 2; }
}

bench_tools() {
  local tool missing=() sudo=""
  for tool in "$@"; do
    command -v "$tool" >/dev/null 2>&1 && continue
    case "$tool" in
      nginx) missing+=(nginx-light) ;;
      h2load) missing+=(nghttp2-client) ;;
      taskset) missing+=(util-linux) ;;
      *) missing+=("$tool") ;;  # wrk, curl, openssl: the package has the tool's name
    esac
  done
  ((${#missing[@]})) || return 0
  if [[ -n "${NO_INSTALL:-}" ]]; then
    echo "$bench_name: missing packages: ${missing[*]} (NO_INSTALL is set)" >&2; exit 2
  fi
  [[ $(id -u) -eq 0 ]] || sudo="sudo"
  echo "$bench_name: installing ${missing[*]}" >&2
  $sudo apt-get install -y "${missing[@]}" ||
    { $sudo apt-get update && $sudo apt-get install -y "${missing[@]}"; }
}

bench_python() {
  [[ -n "${PINGAP:-}" ]] && return 0
  local modules
  modules="$(IFS=,; printf '%s' "$*")"
  "$python" -c "import $modules" 2>/dev/null || {
    echo "$bench_name: $python cannot import pingap's dependencies; run: pip install -e $root" >&2
    exit 2; }
}
