#!/usr/bin/env bash
# Idempotent set-up of the control node: apt packages, .venv, collections, target image.
# Each step is skipped when already done, so `make setup` costs seconds on a re-run.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
cd "$here"

APT_PACKAGES=(podman runc debootstrap uidmap slirp4netns netavark containernetworking-plugins
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
