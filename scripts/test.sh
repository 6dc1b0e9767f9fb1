#!/usr/bin/env bash
# `make test`: every check, in order of cost; stops at the first failure and says which.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
cd "$here"

declare -a timings=()
step() {
    local name="$1"; shift
    local t0=$SECONDS
    echo "==> $name"
    if ! "$@"; then
        echo "FAILED: $name" >&2
        exit 1
    fi
    timings+=("$(printf '%-14s %4ss' "$name" $((SECONDS - t0)))")
}

step yamllint      yamllint -s .
step ansible-lint  ansible-lint --profile production -q
step pytest        bash scripts/run-pytest.sh -q tests
step sanity        bash scripts/sanity.sh
step molecule      bash scripts/molecule-lanes.sh

echo "==> timings"
printf '  %s\n' "${timings[@]}"
echo "make test: all steps passed in $((SECONDS))s"
