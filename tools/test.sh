#!/usr/bin/env bash
# The test command: builds/updates the local venv (.venv) and runs the whole suite, then the
# core tests again under transformers 4.57.3. Needs only python3 (and espeak-ng for a few tests).
#     bash tools/test.sh [extra pytest args]
set -uo pipefail
cd "$(dirname "$0")/.."
source tools/env.sh || exit 1

# pytest exits 5 when it collects no tests. For the whole suite that means the suite is broken
# (a failure, said so); for the marker-selected second pass it only means no test is marked.
run_pytest() {
    local allow_empty=$1; shift
    "$PY" -m pytest "$@"
    local rc=$?
    if [ $rc -eq 5 ]; then
        echo "tools/test.sh: pytest collected no tests for: $*" >&2
        [ "$allow_empty" = yes ] && rc=0
    fi
    return $rc
}

echo "== transformers $("$PY" -c 'import transformers; print(transformers.__version__)'): whole suite"
run_pytest no tests -q "$@"; rc_main=$?
echo "== transformers $(PYTHONPATH=$T457 "$PY" -c 'import transformers; print(transformers.__version__)'): core tests"
PYTHONPATH="$T457" run_pytest yes tests -q -m core "$@"; rc_457=$?
[ $rc_main -eq 0 ] && [ $rc_457 -eq 0 ]
