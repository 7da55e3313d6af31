#!/usr/bin/env bash
# The system layer of both image variants (run by docker/Dockerfile, mounted, not copied): the extra CA
# certificates of the build context (docker/ca-certificates/*.crt) put in place before `ca-certificates` is
# installed, so apt's and pip's HTTPS trust them; the given apt packages; a virtual environment /opt/venv.
#   system-deps.sh PYTHON PACKAGE...
# Exact apt versions are not pinned: they follow the base image's release, and the archive drops superseded
# versions on security updates, which would break rebuilds.
set -euo pipefail
python=${1:?usage: system-deps.sh PYTHON PACKAGE...}
shift
mkdir -p /usr/local/share/ca-certificates
find /tmp/extra-ca -name '*.crt' -exec cp {} /usr/local/share/ca-certificates/ \;
apt-get update
apt-get install -y --no-install-recommends ca-certificates "$@"
update-ca-certificates
rm -rf /var/lib/apt/lists/*
"$python" -m venv /opt/venv
