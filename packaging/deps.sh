#!/usr/bin/env bash
# Install what `make deb` needs when missing: debhelper (and dpkg-dev) to
# build the package, lintian to check it. Both come from apt; nothing is
# compiled. Needs root when something is missing.
set -euo pipefail
PKGS="debhelper dpkg-dev lintian"
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "packaging/deps.sh: missing packages:$missing (run as root to install them)" >&2
  exit 1
fi
echo "packaging/deps.sh: installing$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends $missing
