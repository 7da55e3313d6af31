#!/usr/bin/env bash
# Make a local Debian base image when no container registry is reachable (`make docker-base`):
# debootstrap a minimal Debian rootfs from an apt mirror and `docker import` it.
#   docker/make-base.sh [IMAGE]          (default: sspo-base:bookworm)
# Env: SUITE (bookworm: its python3 is 3.11), MIRROR (default: the first Debian mirror of this host's apt
# sources, else http://deb.debian.org/debian), FORCE=1 (rebuild an existing image), DOCKER (the client), TMPDIR (the rootfs,
# ~250 MB, is made there). Needs root (debootstrap) and `docker` (DOCKER_HOST is honoured).
set -euo pipefail

IMAGE=${1:-sspo-base:bookworm}
DOCKER=${DOCKER:-docker}
SUITE=${SUITE:-bookworm}

host_mirror() {
    # deb822 (.sources: "URIs: ...") and one-line ("deb [opts] URI suite ...") formats
    local f
    for f in /etc/apt/sources.list.d/*.sources /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -r $f ]] || continue
        awk '/^URIs:/ {print $2} /^deb / {for (i = 2; i <= NF; i++) if ($i !~ /^\[/ && $i !~ /\]$/) {print $i; break}}' "$f"
    done | grep -E '/debian/?$' | head -n 1
}
MIRROR=${MIRROR:-$(host_mirror || true)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}

if [[ ${FORCE:-0} != 1 ]] && "$DOCKER" image inspect "$IMAGE" > /dev/null 2>&1; then
    echo "make-base: $IMAGE exists (FORCE=1 rebuilds it)"
    exit 0
fi
if [[ $(id -u) != 0 ]]; then
    echo "make-base: debootstrap needs root; run as root (sudo) or pull a base image and pass BASE_IMAGE=..." >&2
    exit 1
fi
command -v debootstrap > /dev/null || { echo "make-base: debootstrap missing: apt-get install debootstrap" >&2; exit 1; }

ROOTFS=$(mktemp -d "${TMPDIR:-/tmp}/sspo-rootfs.XXXXXX")
trap 'rm -rf "$ROOTFS"' EXIT
echo "make-base: debootstrap --variant=minbase $SUITE from $MIRROR"
debootstrap --variant=minbase "$SUITE" "$ROOTFS" "$MIRROR"
rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/archives/*.deb
tar --numeric-owner -C "$ROOTFS" -c . | "$DOCKER" import --change 'CMD ["/bin/bash"]' - "$IMAGE"
"$DOCKER" image ls "$IMAGE"
