#!/usr/bin/env bash
# pytest, where exit 5 ("no tests collected") is not a failure: a suite may be empty.
set -uo pipefail
python -m pytest "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
    echo "pytest: no tests collected in $*; not a failure"
    exit 0
fi
exit "$rc"
