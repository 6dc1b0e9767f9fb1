#!/usr/bin/env bash
# make bench (docs/benchmarks.md): sample data, a timed no-op re-run of site.yml, then
# playbooks/bench.yml (tuned vs naive, same data, same container, same run) and the report.
#   BENCH_SCALE=full  (default) 2,500 tickers x 10 years -> bench/results.json, docs/benchmarks.md
#   BENCH_SCALE=small 20 tickers x 2 years, fewer runs   -> reports/bench-small.json (make test)
#   BENCH_INVENTORY   inventory to run against (default inventory/lab; tests pass Molecule's)
# At full scale it also times a full pgBackRest backup, a point-in-time restore of the lab's
# cluster and a restore drill (when the backup role has configured pgBackRest there).
set -euo pipefail
cd "$(dirname "$0")/.."

scale="${BENCH_SCALE:-full}"
inventory="${BENCH_INVENTORY:-inventory/lab}"
case "$scale" in
    full)  tickers=1250 years=10 iterations="${BENCH_ITERATIONS:-200}" warmup=20
           src=data/bench.csv.gz db=bench out="${BENCH_OUT:-bench/results.json}" backups=true ;;
    small) tickers=10 years=2 iterations="${BENCH_ITERATIONS:-30}" warmup=5
           src=data/bench-small.csv.gz db=bench_small out="${BENCH_OUT:-reports/bench-small.json}" backups=false ;;
    *) echo "bench: BENCH_SCALE must be full or small (got '$scale')" >&2; exit 2 ;;
esac
manifest="${src%.csv.gz}.json"
raw="reports/bench-raw-$scale.json"
mkdir -p data reports

if [[ ! -s $src || ! -s $manifest || ! -s $src.tickers || ! -s $src.sessions ]]; then
    echo "bench: writing $src ($tickers tickers per region x $years years)"
    python tools/sample_data.py --tickers "$tickers" --years "$years" --out "$src" --manifest "$manifest"
    rm -f "$src".*.loads.json          # new data: the databases reload
fi
rows="$(python -c 'import json, sys; print(json.load(open(sys.argv[1]))["rows"])' "$manifest")"
as_of="$(python -c 'import json, sys; print(json.load(open(sys.argv[1]))["end"])' "$manifest")"   # audit as of the data's last day

# The nightly load (issue 16): every ticker's bar of the first session after the data's last
# day that all its exchanges hold (from the sample's own calendars), loaded into the full table
# through ohlcv_ingest, timed, then taken out again so the next run finds the same table.
nightly_src="${src%.csv.gz}-nightly.csv.gz"
nightly="$(python - "$src.sessions" "$as_of" <<'PY'
import csv, sys
days = {}
with open(sys.argv[1]) as handle:
    for row in csv.DictReader(handle):
        days.setdefault(row["exchange"], set()).add(row["session"])
later = sorted(d for d in set.intersection(*days.values()) if d > sys.argv[2])
print(later[0] if later else "")
PY
)"
if [[ -z $nightly ]]; then
    echo "bench: no session after $as_of common to every exchange in $src.sessions" >&2; exit 2
fi
if [[ ! -s $nightly_src ]] || ! grep -q "\"end\": \"$nightly\"" "${nightly_src%.csv.gz}.json" 2>/dev/null; then
    echo "bench: writing $nightly_src (the session $nightly, $tickers tickers per region)"
    python tools/sample_data.py --tickers "$tickers" --years 0 --end "$nightly" --out "$nightly_src" \
        --manifest "${nightly_src%.csv.gz}.json"
fi

report_args=()
if [[ $scale == full ]]; then
    # site.yml has just converged the lab (make bench runs make site first): time a no-op re-run.
    echo "bench: timing a no-op re-run of site.yml"
    stats="$(mktemp)"
    start=$(date +%s.%N)
    # The recap as JSON (callback_plugins/quantdb_stats.py), not parsed from the human output.
    QDB_STATS_FILE="$stats" ANSIBLE_CALLBACKS_ENABLED=quantdb_stats \
        ansible-playbook -i "$inventory" playbooks/site.yml > /dev/null
    seconds=$(python -c "import sys; print(round($(date +%s.%N) - $start, 1))")
    changed=$(python -c 'import json, sys; print(sum(h["changed"] for h in json.load(open(sys.argv[1]))["stats"].values()))' "$stats")
    rm -f "$stats"
    echo "bench: no-op re-run ${seconds} s, changed=${changed}"
    report_args+=(--noop-seconds "$seconds" --noop-changed "$changed" --docs docs/benchmarks.md --chart docs/benchmarks.png)
fi

ansible-playbook -i "$inventory" playbooks/bench.yml -e "bench_src=$src" -e "bench_rows=$rows" -e "bench_as_of=$as_of" \
    -e "bench_nightly_src=$nightly_src" -e "bench_nightly_date=$nightly" \
    -e "bench_database=$db" -e "bench_naive_database=${db}_naive" \
    -e "bench_iterations=$iterations" -e "bench_warmup=$warmup" -e "bench_result=$raw" -e "bench_backup=${BENCH_BACKUP:-$backups}"
python bench/report.py --raw "$raw" --out "$out" --scale "$scale" "${report_args[@]}"
echo "bench: wrote $out"

# PgBouncer: 500 clients through the pool against direct connections, on the lab's database
# container (bench/pgbouncer.py; also `make bench-pgbouncer` alone). Its key in $out is its own.
if [[ $scale == full && $inventory == inventory/lab ]]; then
    echo "bench: PgBouncer, 500 clients (bench/pgbouncer.py)"
    python bench/pgbouncer.py --results "$out" || echo "bench: the PgBouncer goal was not met (see above)"
fi
