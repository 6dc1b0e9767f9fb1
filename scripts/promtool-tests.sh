#!/usr/bin/env bash
# The monitoring files checked with Prometheus' and Alertmanager's own tools, no server needed
# (docs/monitoring.md#tests): the rendered rules file is up to date with its template and
# thresholds, `promtool check rules`, `promtool test rules tests/promtool/*.test.yml`, and the
# Alertmanager template rendered twice (defaults: no receiver; example receivers: webhooks
# and email) and checked with `amtool check-config` and a routing test.
# promtool and amtool come from the Debian packages prometheus and prometheus-alertmanager
# (`make setup` installs them). Exit 3 when one is missing.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
cd "$here"
t0=$SECONDS

for tool in promtool amtool; do
    if ! command -v "$tool" >/dev/null; then
        echo "promtool-tests: $tool not found; apt-get install prometheus prometheus-alertmanager (make setup does)" >&2
        exit 3
    fi
done
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && PY=.venv/bin/python
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

rules=monitoring/prometheus/rules/quantdb.rules.yml
echo "==> rendered rules up to date ($rules)"
"$PY" tools/render_rules.py --check

echo "==> promtool check rules"
promtool check rules "$rules"

echo "==> promtool test rules"
promtool test rules tests/promtool/*.test.yml

am=roles/alertmanager
for variant in defaults example; do
    out="$tmp/alertmanager-$variant.yml"
    vars=(--vars "$am/defaults/main.yml")
    [ "$variant" = example ] && vars+=(--vars monitoring/alertmanager/example_vars.yml)
    echo "==> amtool check-config (alertmanager.yml.j2 with $variant receivers)"
    "$PY" tools/render_rules.py --template "$am/templates/alertmanager.yml.j2" "${vars[@]}" --out "$out" >/dev/null
    amtool check-config "$out"
done

echo "==> amtool config routes test (example receivers)"
check_route() {   # labels... expected-receiver
    local want="${*: -1}" got
    got="$(amtool config routes test --config.file="$tmp/alertmanager-example.yml" "${@:1:$#-1}")"
    if [ "$got" != "$want" ]; then
        echo "promtool-tests: route of ${*:1:$#-1} is '$got', expected '$want'" >&2
        exit 1
    fi
    echo "  ${*:1:$#-1} -> $got"
}
check_route severity=critical alertname=DatabaseDown default
check_route severity=warning alertname=DataStale default
check_route severity=info alertname=TableSizeGrowing default
got="$(amtool config routes test --config.file="$tmp/alertmanager-defaults.yml" severity=critical alertname=DatabaseDown)"
[ "$got" = blackhole ] || { echo "promtool-tests: without receivers, critical routes to '$got'" >&2; exit 1; }
echo "  (defaults) severity=critical -> $got"

echo "promtool-tests: all passed in $((SECONDS - t0))s"
