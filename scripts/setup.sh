#!/usr/bin/env bash
# Idempotent set-up of the control node: apt packages, .venv, collections, target image.
# Each step is skipped when already done, so `make setup` costs seconds on a re-run.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
cd "$here"

# aardvark-dns: containers on one podman network find each other by name (the lab's
# Prometheus scrapes qdb-lab-db1); podman only recommends it.
APT_PACKAGES=(podman runc debootstrap uidmap slirp4netns netavark aardvark-dns containernetworking-plugins
              postgresql-client python3-venv make git)
missing=()
for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "setup: apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# promtool and amtool for scripts/promtool-tests.sh (docs/monitoring.md#tests). Installing the
# packages may start their daemons (systemd, or an init script where policy-rc.d allows it):
# the control node only needs the tools, so what this step installed is stopped and disabled.
MONITORING_PACKAGES=(prometheus prometheus-alertmanager)
mon_missing=()
for p in "${MONITORING_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || mon_missing+=("$p")
done
if [ "${#mon_missing[@]}" -gt 0 ]; then
    echo "setup: apt-get install ${mon_missing[*]} (promtool, amtool; services left stopped)"
    export DEBIAN_FRONTEND=noninteractive
    [ "${#missing[@]}" -gt 0 ] || apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${mon_missing[@]}" >/dev/null
    for svc in "${mon_missing[@]}"; do   # the service is named after its package
        if [ -d /run/systemd/system ]; then
            systemctl disable --now "$svc" >/dev/null 2>&1 || true
        elif [ -x "/etc/init.d/$svc" ]; then
            "/etc/init.d/$svc" stop >/dev/null 2>&1 || true
            update-rc.d "$svc" disable >/dev/null 2>&1 || true
        fi
    done
fi

PY="${PYTHON:-python3}"
stamp=.venv/.requirements.sha256
want="$(cat requirements.txt requirements.yml | sha256sum | cut -d' ' -f1)"
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "setup: python venv from requirements.txt"
    [ -x .venv/bin/python ] || "$PY" -m venv .venv
    .venv/bin/pip install -q --disable-pip-version-check -r requirements.txt
    .venv/bin/ansible-galaxy collection install -r requirements.yml >/dev/null
    echo "$want" >"$stamp"
fi

mkdir -p /var/cache/quantdb-ops/apt-archives
bash scripts/build-image.sh
