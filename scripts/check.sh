#!/usr/bin/env bash
# Run vdisk's test stages and end with exactly one line:
#     N passed, N failed, N skipped
#
# Usage: scripts/check.sh STAGE...
#   unit              meson test in $BUILD (C unit tests, docs/example)
#   integration       pytest tests/integration against $BUILD/vdisk
#   asan-unit         meson test in $ASAN_BUILD
#   asan-integration  pytest against $ASAN_BUILD/vdisk
#
# The build directories must be built already (the Makefile does that).
# Skips are counted apart from passes; a runner that fails without a
# counted failure (collection error, crash) counts as one failure.
set -uo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
build=${BUILD:-build}
asan_build=${ASAN_BUILD:-build-asan}
python=${PYTHON:-/usr/bin/python3}

asan_env=(
    "ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}"
    "UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
)

# Print "passed failed skipped" from meson's testlog.json.
count_meson() {
    "$python" - "$1" <<'EOF'
import json, sys
p = f = s = 0
try:
    with open(sys.argv[1]) as fh:
        for line in fh:
            if not line.strip():
                continue
            r = json.loads(line).get("result")
            if r in ("OK", "EXPECTEDFAIL"):
                p += 1
            elif r == "SKIP":
                s += 1
            else:
                f += 1
except FileNotFoundError:
    pass
print(p, f, s)
EOF
}

# Print "passed failed skipped" from pytest's JUnit XML.
count_junit() {
    "$python" - "$1" <<'EOF'
import sys
import xml.etree.ElementTree as ET
t = f = s = 0
try:
    root = ET.parse(sys.argv[1]).getroot()
    suites = [root] if root.tag == "testsuite" else root.iter("testsuite")
    for su in suites:
        t += int(su.get("tests", 0))
        f += int(su.get("failures", 0)) + int(su.get("errors", 0))
        s += int(su.get("skipped", 0))
except (FileNotFoundError, ET.ParseError):
    pass
print(max(t - f - s, 0), f, s)
EOF
}

total_p=0 total_f=0 total_s=0
lines=()

run_stage() {
    local name=$1 dir=$2 kind=$3 rc p f s
    local -a env=()
    case $name in asan-*) env=("${asan_env[@]}") ;; esac

    echo
    echo "=== $name ($dir) ==="
    case $kind in
    unit)
        local log=$dir/meson-logs/testlog.json
        rm -f "$log"
        local -a mopts=(--print-errorlogs)
        case $name in asan-*) mopts+=(--timeout-multiplier 4) ;; esac
        env "${env[@]}" meson test -C "$dir" "${mopts[@]}"
        rc=$?
        read -r p f s < <(count_meson "$log")
        ;;
    integration)
        local xml=$dir/pytest-junit.xml
        rm -f "$xml"
        local bin=$dir/vdisk
        case $bin in /*) ;; *) bin=$repo/$bin ;; esac
        env "${env[@]}" VDISK="$bin" \
            "$python" -m pytest tests/integration --junitxml="$xml"
        rc=$?
        read -r p f s < <(count_junit "$xml")
        ;;
    esac
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        echo "check: $name: runner exited with $rc"
        f=1
    fi
    total_p=$((total_p + p))
    total_f=$((total_f + f))
    total_s=$((total_s + s))
    lines+=("$(printf '%-17s %d passed, %d failed, %d skipped' \
        "$name:" "$p" "$f" "$s")")
}

if [ $# -eq 0 ]; then
    echo "usage: $0 unit|integration|asan-unit|asan-integration..." >&2
    exit 2
fi

for stage in "$@"; do
    case $stage in
    unit)             run_stage unit "$build" unit ;;
    integration)      run_stage integration "$build" integration ;;
    asan-unit)        run_stage asan-unit "$asan_build" unit ;;
    asan-integration) run_stage asan-integration "$asan_build" integration ;;
    *) echo "$0: unknown stage '$stage'" >&2; exit 2 ;;
    esac
done

echo
for l in "${lines[@]}"; do
    echo "  $l"
done
echo "$total_p passed, $total_f failed, $total_s skipped"
[ "$total_f" -eq 0 ]
