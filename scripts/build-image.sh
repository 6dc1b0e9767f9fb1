#!/usr/bin/env bash
# Build the local Debian 13 (trixie) target image with systemd and python3, from the
# machine's own apt mirror (no container registry is reachable), and `podman import` it.
# Idempotent: does nothing when the image already exists (FORCE=1 rebuilds).
set -euo pipefail

IMAGE="${QDB_IMAGE:-localhost/quantdb-ops/debian13-systemd:latest}"
SUITE="${QDB_SUITE:-trixie}"
here="$(cd "$(dirname "$0")/.." && pwd)"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$here/lab/containers.conf}"

if [ "${FORCE:-0}" != 1 ] && podman image exists "$IMAGE"; then
    echo "image $IMAGE present"
    exit 0
fi

# The mirror is whatever this machine's apt uses: deb822 sources first, then sources.list.
mirror="${QDB_APT_MIRROR:-}"
if [ -z "$mirror" ]; then
    mirror="$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep -v -- '-security' | head -n1 || true)"
fi
if [ -z "$mirror" ]; then
    mirror="$(grep -hs '^deb ' /etc/apt/sources.list | awk '{print $2}' | grep -v -- '-security' | head -n1 || true)"
fi
[ -n "$mirror" ] || { echo "build-image: no apt mirror found in /etc/apt (set QDB_APT_MIRROR)" >&2; exit 1; }

rootfs="$(mktemp -d /var/tmp/qdb-rootfs.XXXXXX)"
trap 'rm -rf "$rootfs"' EXIT
echo "debootstrap $SUITE into $rootfs"
debootstrap --variant=minbase \
    --include=python3,sudo,systemd,systemd-sysv,iproute2,ca-certificates,locales \
    "$SUITE" "$rootfs" "$mirror" >"$rootfs.log" 2>&1 || { tail -n 30 "$rootfs.log" >&2; exit 1; }
rm -f "$rootfs.log"

# Trim what a container does not want at boot; keep apt's downloads for the shared cache.
chroot "$rootfs" systemctl mask systemd-logind.service getty.target console-getty.service \
    systemd-udevd.service systemd-udev-trigger.service systemd-firstboot.service >/dev/null 2>&1 || true
rm -f "$rootfs/etc/apt/apt.conf.d/docker-clean"
printf 'Binary::apt::APT::Keep-Downloaded-Packages "true";\n' >"$rootfs/etc/apt/apt.conf.d/10keep-downloads"
: >"$rootfs/etc/machine-id"
apt-get -o RootDir="$rootfs" clean >/dev/null 2>&1 || true
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/archives/*.deb

tar -C "$rootfs" -c . | podman import \
    --change 'CMD ["/sbin/init"]' --change 'ENV container=podman' - "$IMAGE" >/dev/null
echo "built $IMAGE"
