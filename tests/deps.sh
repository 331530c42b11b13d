#!/usr/bin/env bash
# Install the Debian packages the tests use when any is missing (needs root
# and the package mirrors). On a machine that has them, this does nothing.
#   postfix, sasl2-bin, libsasl2-modules  the real-Postfix end-to-end tests
#   python3-dkim                          dkimpy, the independent DKIM verifier
#   opendkim, opendkim-tools, openssl     OpenDKIM, a second independent signer/verifier
#   opendmarc                             OpenDMARC: its stock configuration for the migrate corpus, and its verdicts
#   libxml2-utils                         xmllint, validates DMARC reports against the RFC 9990 schema
#   postgresql                            a private PostgreSQL server for the shared report store tests
#                                         (openssl also makes its test CA for TLS)
#   systemd                               systemd-analyze verify of the shipped units
#   debhelper, lintian                    build and check the Debian package (tests/package.rs)
#   python3-venv                          the venv for the PyPI test tools below
# and, from PyPI into the venv /opt/rmilter-test-venv (RMILTER_TEST_VENV),
# so the system Python stays clean:
#   parsedmarc (pinned)                   an independent DMARC failure-report parser
#                                         (tests/report_failure_format.rs); some 10 s to install
set -euo pipefail

PARSEDMARC_VERSION=11.1.0
VENV="${RMILTER_TEST_VENV:-/opt/rmilter-test-venv}"

# The PyPI tools, after the Debian packages (python3 -m venv needs them).
pypi() {
  if "$VENV/bin/python" -c "import parsedmarc, sys; sys.exit(parsedmarc.__version__ != '$PARSEDMARC_VERSION')" 2>/dev/null; then
    return 0
  fi
  echo "tests/deps.sh: installing parsedmarc==$PARSEDMARC_VERSION into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "parsedmarc==$PARSEDMARC_VERSION"
}

PKGS="postfix sasl2-bin libsasl2-modules python3-dkim opendkim opendkim-tools openssl opendmarc libxml2-utils postgresql systemd debhelper lintian python3-venv"

missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $p"
done
if [ -z "$missing" ]; then
  pypi
  exit 0
fi

if [ "$(id -u)" != 0 ]; then
  echo "tests/deps.sh: missing packages:$missing (run as root to install them)" >&2
  exit 1
fi
echo "tests/deps.sh: installing$missing"
# Packaged daemons must not start: the tests run their own private instances.
cleanup_policy=""
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
  chmod +x /usr/sbin/policy-rc.d
  cleanup_policy=1
fi
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends $missing
[ -n "$cleanup_policy" ] && rm -f /usr/sbin/policy-rc.d
pypi
exit 0
