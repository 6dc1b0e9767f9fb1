#!/usr/bin/env bash
# `make test`'s Molecule step: every scenario (each directory of molecule/ with a molecule.yml),
# `molecule test -s <name>`, in QDB_MOLECULE_LANES parallel lanes (default 2; 1 = one after
# the other, as `molecule test --all`). A scenario's containers, ports and ephemeral directory
# are its own, so scenarios can run side by side; each lane gets its own copy of the apt cache
# (two containers running apt on one cache directory collide on its lock).
# Lanes are filled longest first from the durations last measured (seconds, below: two lanes
# on the 2-CPU build host; a new scenario counts as 300 until listed). Each scenario's output
# goes to reports/molecule/<name>.log; a failure prints the tail of its log. Exit status: non-zero when any scenario failed.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
cd "$here"

lanes="${QDB_MOLECULE_LANES:-2}"
[[ $lanes =~ ^[1-9]$ ]] || { echo "molecule-lanes: QDB_MOLECULE_LANES must be 1-9 (got '$lanes')" >&2; exit 2; }
declare -A seconds=([default]=2270 [backup]=950 [maintenance]=380 [monitoring]=300 [fresh_check]=240 [roles_alone]=170 [pgbouncer]=310)

scenarios=()
for f in molecule/*/molecule.yml; do scenarios+=("$(basename "$(dirname "$f")")"); done
[ "${#scenarios[@]}" -gt 0 ] || { echo "molecule-lanes: no scenario in molecule/" >&2; exit 1; }
# Longest first, then each to the lane with the least work so far.
mapfile -t ordered < <(for s in "${scenarios[@]}"; do echo "${seconds[$s]:-300} $s"; done | sort -rn | awk '{print $2}')
declare -a load plan
for ((i = 0; i < lanes; i++)); do load[i]=0; plan[i]=""; done
for s in "${ordered[@]}"; do
    best=0
    for ((i = 1; i < lanes; i++)); do (( load[i] < load[best] )) && best=$i; done
    load[best]=$(( load[best] + ${seconds[$s]:-300} ))
    plan[best]="${plan[best]} $s"
done

mkdir -p reports/molecule
base_cache="${QDB_APT_CACHE:-/var/cache/quantdb-ops/apt-archives}"
run_lane() {   # lane-number scenario...
    local lane="$1"; shift
    local cache="$base_cache"
    if (( lanes > 1 )); then
        cache="${base_cache%/}-lane$lane"
        mkdir -p "$cache/partial"
        cp -n "$base_cache"/*.deb "$cache"/ 2>/dev/null || true
    fi
    local s t0 rc=0
    for s in "$@"; do
        t0=$SECONDS
        echo "  lane $lane: $s started"
        if QDB_APT_CACHE="$cache" molecule test -s "$s" >"reports/molecule/$s.log" 2>&1; then
            echo "  lane $lane: $s passed in $((SECONDS - t0))s"
        else
            echo "  lane $lane: $s FAILED after $((SECONDS - t0))s; the end of reports/molecule/$s.log:"
            tail -n 60 "reports/molecule/$s.log" | sed 's/^/    /'
            rc=1
        fi
    done
    return $rc
}

pids=()
for ((i = 0; i < lanes; i++)); do
    [ -n "${plan[i]}" ] || continue
    echo "molecule lane $i:${plan[i]} (about ${load[i]}s)"
    # shellcheck disable=SC2086  # the plan is a list of names
    run_lane "$i" ${plan[i]} &
    pids+=($!)
done
failed=0
for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
if (( failed )); then
    echo "molecule-lanes: a scenario failed (logs in reports/molecule/)" >&2
    exit 1
fi
echo "molecule-lanes: ${#scenarios[@]} scenarios passed"
