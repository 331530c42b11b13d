#!/bin/bash
# benches/setup.sh -- prepare everything the benchmark needs, from scratch, on Debian 12 (root):
#   Debian packages (Postfix, OpenDKIM, OpenDMARC, nsd, ...), the release builds of rmilter and
#   milterload, DKIM keys, DNS zones, milter and Postfix configs and the test messages, all under
#   $BENCH_ROOT (default /srv/rmilter-bench; OpenDKIM refuses key/config paths under
#   world-writable directories such as /tmp).  Nothing is started here: run.sh starts every
#   daemon inside a private network + mount namespace and stops it again.
#
#   usage: bash benches/setup.sh            # packages + build + (re)generate the state
#          bash benches/setup.sh --build    # only (re)build rmilter, floor-milter and milterload
#          SKIP_APT=1 bash benches/setup.sh # do not check/install Debian packages
#
# Layout of $BENCH_ROOT:
#   keys/     example.test s=bench (RSA-2048) and s=ed (Ed25519): the signing keys of both
#             implementations; sender.test s=s1 (RSA-2048) pre-signs the inbound messages
#   dns/      nsd.conf and zones: a root zone (every unknown name is NXDOMAIN), example.test,
#             sender.test (DKIM keys, SPF, DMARC p=reject); served on 127.0.0.53:53 in the netns
#   etc/      opendkim-{sign-rsa,sign-ed25519,verify}.conf, opendmarc.conf,
#             rmilter-{sign-rsa,sign-ed25519,verify}.toml, resolv.conf, unbound client conf
#   postfix/  private Postfix config_directory;  spool/ its queue_directory
#   msgs/     out-{2k,100k,10m}.eml (unsigned, From example.test: signing runs) and
#             in-{2k,100k,10m}.eml (DKIM-signed by sender.test: verify runs), LF line ends
#   lib/      ub-config-lock.so (LD_PRELOAD shim, see below)
#   results/  one directory per run.sh run (kept across re-setup)
#   ready     marker: setup finished for this version of the setup (run.sh checks it)
set -euo pipefail
BENCH_ROOT=${BENCH_ROOT:-/srv/rmilter-bench}
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
PY=/usr/bin/python3
SETUP_VERSION=3   # bump when the generated state changes; run.sh re-runs setup on mismatch

case "$BENCH_ROOT" in /|/etc|/etc/*|/usr|/usr/*|/var|/var/*|/tmp|/tmp/*|/proc*|/sys*|/dev*) echo "refusing BENCH_ROOT=$BENCH_ROOT" >&2; exit 2;; esac
[ "$(id -u)" = 0 ] || { echo "setup.sh: needs root (packages, private Postfix, network namespace)" >&2; exit 1; }

# --- cargo ------------------------------------------------------------------------------------
# Target dir: $CARGO_TARGET_DIR, else the repository's target/.  --ignore-rust-version: mail-auth 0.15 pulls mail-parser 1.0,
# which declares rust-version 1.98 but builds with older toolchains (see the Makefile).
target_dir() {
  if [ -n "${CARGO_TARGET_DIR:-}" ]; then echo "$CARGO_TARGET_DIR"
  else echo "$REPO/target"; fi
}
build() {
  export PATH="$HOME/.cargo/bin:$PATH"
  if ! command -v cargo >/dev/null; then
    if [ "${BENCH_INSTALL_RUST:-1}" = 1 ]; then
      echo "setup.sh: no cargo; installing the stable Rust toolchain with rustup (BENCH_INSTALL_RUST=0 to refuse)"
      command -v curl >/dev/null || { apt-get update -q; DEBIAN_FRONTEND=noninteractive apt-get install -y -q curl ca-certificates; }
      curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
      export PATH="$HOME/.cargo/bin:$PATH"
    else
      echo "setup.sh: cargo not found; install Rust (https://rustup.rs)" >&2; exit 1
    fi
  fi
  local td; td=$(target_dir)
  echo "setup.sh: building rmilter (release, target dir $td)"
  (cd "$REPO" && CARGO_TARGET_DIR=$td cargo build --release --ignore-rust-version)
  echo "setup.sh: building floor-milter (benches/floor_milter.rs)"
  (cd "$REPO" && CARGO_TARGET_DIR=$td cargo build --release --ignore-rust-version --example floor-milter) \
    || echo "setup.sh: floor-milter did not build: the report has no floor rows" >&2
  if [ -f "$HERE/milterload/Cargo.toml" ]; then
    echo "setup.sh: building milterload"
    CARGO_TARGET_DIR=$td cargo build --release --ignore-rust-version --manifest-path "$HERE/milterload/Cargo.toml" \
      || echo "setup.sh: milterload did not build: the milter-alone part cannot run" >&2
  else
    echo "setup.sh: benches/milterload/Cargo.toml missing: the milter-alone part cannot run" >&2
  fi
}
if [ "${1:-}" = --build ]; then build; exit 0; fi
if [ "${1:-}" = --target-dir ]; then target_dir; exit 0; fi

# --- packages ---------------------------------------------------------------------------------
#   postfix (smtpd, smtp-source, smtp-sink)  the end-to-end pipeline and the load generator
#   opendkim opendkim-tools opendmarc        the incumbents (Debian 12: 2.11.0~beta2, 1.4.2)
#   nsd                                      authoritative DNS on loopback inside the netns
#   python3 python3-dkim python3-cryptography  messages (pre-signed by dkimpy), keys, the harness
#   openssl                                  raw RSA-2048 / Ed25519 signature cost (openssl speed)
#   gcc libc6-dev make pkg-config            the LD_PRELOAD shim; Rust crates with C parts
#   iproute2 util-linux dnsutils publicsuffix  ip/unshare, dig, OpenDMARC's public suffix list
PKGS="postfix opendkim opendkim-tools opendmarc nsd python3 python3-dkim python3-cryptography openssl gcc libc6-dev make pkg-config iproute2 util-linux dnsutils publicsuffix ca-certificates curl"
if [ -z "${SKIP_APT:-}" ]; then
  missing=""
  for p in $PKGS; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $p"; done
  if [ -n "$missing" ]; then
    echo "setup.sh: installing$missing"
    # packaged daemons must not start from maintainer scripts: we run private instances only
    rm_policy=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; rm_policy=1; fi
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends $missing
    [ -n "$rm_policy" ] && rm -f /usr/sbin/policy-rc.d
  fi
fi

# --- state directory --------------------------------------------------------------------------
# refuse to wipe a root whose daemons still run
if [ -d "$BENCH_ROOT/run" ]; then
  for pf in "$BENCH_ROOT"/run/*.pid "$BENCH_ROOT"/run/*/*.pid "$BENCH_ROOT"/spool/pid/master.pid; do
    [ -f "$pf" ] || continue
    pid=$(tr -dc 0-9 <"$pf"); [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null \
      && { echo "setup.sh: daemon pid $pid ($pf) still running; is run.sh running?" >&2; exit 1; }
  done
fi
[ -d "$BENCH_ROOT/results" ] && { rm -rf "$BENCH_ROOT.results.keep"; mv "$BENCH_ROOT/results" "$BENCH_ROOT.results.keep"; }
rm -rf "$BENCH_ROOT"
mkdir -p "$BENCH_ROOT"
[ -d "$BENCH_ROOT.results.keep" ] && mv "$BENCH_ROOT.results.keep" "$BENCH_ROOT/results"
mkdir -p "$BENCH_ROOT"/{keys,dns,etc,postfix,spool,data,msgs,log,results,lib,run/opendkim,run/opendmarc,run/rmilter}
chmod 755 "$BENCH_ROOT" "$BENCH_ROOT/run"
chown opendkim:opendkim "$BENCH_ROOT/run/opendkim"
chown opendmarc:opendmarc "$BENCH_ROOT/run/opendmarc"
chgrp postfix "$BENCH_ROOT/run/rmilter"; chmod 750 "$BENCH_ROOT/run/rmilter"

# --- keys -------------------------------------------------------------------------------------
# One key set for both implementations (same selectors, same DNS records).
cd "$BENCH_ROOT/keys"
opendkim-genkey -b 2048 -d example.test -s bench -D "$BENCH_ROOT/keys"   # bench.private (PKCS#1) bench.txt
opendkim-genkey -b 2048 -d sender.test  -s s1    -D "$BENCH_ROOT/keys"   # s1.private s1.txt
openssl genpkey -algorithm ed25519 -out ed.private 2>/dev/null           # PKCS#8 PEM (RFC 8463)
$PY - <<'EOF'
import base64
from cryptography.hazmat.primitives import serialization
k = serialization.load_pem_private_key(open('ed.private', 'rb').read(), None)
pub = k.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
open('ed.txt', 'w').write('ed._domainkey\tIN\tTXT\t( "v=DKIM1; k=ed25519; p=%s" )\n' % base64.b64encode(pub).decode())
EOF
# rmilter gets its own root-owned copies (it checks key file ownership and mode)
cp bench.private rmilter-bench.pem; cp ed.private rmilter-ed.pem
chmod 600 rmilter-bench.pem rmilter-ed.pem
chown opendkim:opendkim bench.private ed.private s1.private
chmod 600 bench.private ed.private s1.private

# --- LD_PRELOAD shim for OpenDKIM's verify mode -----------------------------------------------
# Debian 12's opendkim (2.11.0~beta2, _FFR_VBR + libunbound) creates a libunbound context per
# message and, with ResolverConfiguration set (needed to reach nsd and to un-block the RFC 6761
# "test." zone that libunbound serves empty by default), calls ub_ctx_config() on it; that
# parser is not reentrant and opendkim crashes under concurrent load.  The shim serialises
# ub_ctx_config() with one mutex and changes nothing else.
cat >"$BENCH_ROOT/lib/ub-config-lock.c" <<'EOF'
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
struct ub_ctx;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
int ub_ctx_config(struct ub_ctx *ctx, const char *fname)
{
	static int (*real)(struct ub_ctx *, const char *);
	int r;
	pthread_mutex_lock(&lock);
	if (real == NULL)
		real = (int (*)(struct ub_ctx *, const char *)) dlsym(RTLD_NEXT, "ub_ctx_config");
	r = real(ctx, fname);
	pthread_mutex_unlock(&lock);
	return r;
}
EOF
gcc -shared -fPIC -O2 -Wall -o "$BENCH_ROOT/lib/ub-config-lock.so" "$BENCH_ROOT/lib/ub-config-lock.c" -ldl -lpthread
chmod 755 "$BENCH_ROOT/lib" "$BENCH_ROOT/lib/ub-config-lock.so"

# --- DNS: nsd, authoritative, 127.0.0.53:53 inside the namespace -----------------------------
mkzone() { # domain spf dmarc keyfiles...
  local d=$1 spf=$2 dmarc=$3; shift 3
  {
    printf '$ORIGIN %s.\n$TTL 300\n' "$d"
    printf '@\tIN\tSOA\tns.%s. hostmaster.%s. 1 3600 600 86400 300\n' "$d" "$d"
    printf '@\tIN\tNS\tns.%s.\nns\tIN\tA\t127.0.0.53\n@\tIN\tA\t127.0.0.1\n@\tIN\tMX\t10 mx.%s.\nmx\tIN\tA\t127.0.0.1\n' "$d" "$d"
    printf '@\tIN\tTXT\t"%s"\n' "$spf"
    printf '_dmarc\tIN\tTXT\t"%s"\n' "$dmarc"
    for k in "$@"; do cat "$BENCH_ROOT/keys/$k"; done
  } >"$BENCH_ROOT/dns/$d.zone"
}
mkzone example.test "v=spf1 ip4:127.0.0.0/8 -all" "v=DMARC1; p=reject; rua=mailto:dmarc-rua@example.test" bench.txt ed.txt
mkzone sender.test  "v=spf1 ip4:127.0.0.1 -all"   "v=DMARC1; p=reject; rua=mailto:dmarc-rua@sender.test; fo=1" s1.txt
# a root zone: every other name (remote.test, the DMARC tree walk, ...) gets a quick NXDOMAIN
cat >"$BENCH_ROOT/dns/root.zone" <<'EOF'
$ORIGIN .
$TTL 300
@	IN	SOA	ns.root-servers.test. hostmaster.root-servers.test. 1 3600 600 86400 300
@	IN	NS	ns.root-servers.test.
example.test.	IN	NS	ns.example.test.
sender.test.	IN	NS	ns.sender.test.
ns.example.test.	IN	A	127.0.0.53
ns.sender.test.	IN	A	127.0.0.53
ns.root-servers.test.	IN	A	127.0.0.53
EOF
cat >"$BENCH_ROOT/dns/nsd.conf" <<EOF
server:
  ip-address: 127.0.0.53
  port: 53
  do-ip6: no
  username: ""
  chroot: ""
  zonesdir: "$BENCH_ROOT/dns"
  zonelistfile: "$BENCH_ROOT/dns/zone.list"
  xfrdfile: "$BENCH_ROOT/dns/xfrd.state"
  xfrdir: "$BENCH_ROOT/dns"
  database: ""
  pidfile: "$BENCH_ROOT/run/nsd.pid"
  logfile: "$BENCH_ROOT/log/nsd.log"
  server-count: 1
  verbosity: 1
  hide-version: yes
  # every query comes from 127.0.0.1: response-rate-limiting (200 qps by default) would
  # drop answers and cause resolver timeouts in the milters
  rrl-ratelimit: 0
  rrl-whitelist-ratelimit: 0
remote-control:
  control-enable: no
zone:
  name: "."
  zonefile: root.zone
zone:
  name: example.test
  zonefile: example.test.zone
zone:
  name: sender.test
  zonefile: sender.test.zone
EOF
nsd-checkconf "$BENCH_ROOT/dns/nsd.conf"
nsd-checkzone . "$BENCH_ROOT/dns/root.zone" >/dev/null
nsd-checkzone example.test "$BENCH_ROOT/dns/example.test.zone" >/dev/null
nsd-checkzone sender.test "$BENCH_ROOT/dns/sender.test.zone" >/dev/null

# libc resolver (opendmarc, libspf2) and libunbound (opendkim) both ask nsd only; rmilter is
# pointed at it by [dns] nameservers.  run.sh bind-mounts resolv.conf over /etc/resolv.conf
# inside the namespace.
echo "nameserver 127.0.0.53" >"$BENCH_ROOT/etc/resolv.conf"
cat >"$BENCH_ROOT/etc/unbound-client.conf" <<'EOF'
server:
  do-not-query-localhost: no
  do-ip6: no
  harden-dnssec-stripped: no
  # libunbound serves RFC 6761 "test." as an empty static local zone by default
  local-zone: "test." nodefault
forward-zone:
  name: "."
  forward-addr: 127.0.0.53@53
EOF
chmod 644 "$BENCH_ROOT/etc/unbound-client.conf"

# --- the incumbents: OpenDKIM and OpenDMARC ---------------------------------------------------
# Debian defaults (relaxed/simple, OversignHeaders From, syslog on); the client 127.0.0.1 is an
# internal host in the signing configs and an external one in the verify config.
echo "127.0.0.1" >"$BENCH_ROOT/etc/internal-hosts-local"
echo "192.0.2.1" >"$BENCH_ROOT/etc/internal-hosts-none"
common_dkim() {
cat <<EOF
# generated by benches/setup.sh; Debian's /etc/opendkim.conf defaults
Syslog			yes
SyslogSuccess		yes
Canonicalization	relaxed/simple
OversignHeaders		From
UserID			opendkim
UMask			000
Socket			local:$BENCH_ROOT/run/opendkim/opendkim.sock
PidFile			$BENCH_ROOT/run/opendkim/opendkim.pid
AuthservID		bench.example.test
EOF
}
{ common_dkim; cat <<EOF
Mode			s
InternalHosts		$BENCH_ROOT/etc/internal-hosts-local
Domain			example.test
Selector		bench
KeyFile			$BENCH_ROOT/keys/bench.private
SignatureAlgorithm	rsa-sha256
EOF
} >"$BENCH_ROOT/etc/opendkim-sign-rsa.conf"
{ common_dkim; cat <<EOF
Mode			s
InternalHosts		$BENCH_ROOT/etc/internal-hosts-local
Domain			example.test
Selector		ed
KeyFile			$BENCH_ROOT/keys/ed.private
SignatureAlgorithm	ed25519-sha256
EOF
} >"$BENCH_ROOT/etc/opendkim-sign-ed25519.conf"
{ common_dkim; cat <<EOF
Mode			v
InternalHosts		$BENCH_ROOT/etc/internal-hosts-none
# makes libunbound ask nsd (and un-blocks "test."); run.sh preloads ub-config-lock.so
ResolverConfiguration	$BENCH_ROOT/etc/unbound-client.conf
EOF
} >"$BENCH_ROOT/etc/opendkim-verify.conf"
# OpenDMARC: SPF itself (SPFSelfValidate), DKIM results from OpenDKIM's Authentication-Results,
# and the history file (its aggregate-report input; rmilter records the same with [report]).
cat >"$BENCH_ROOT/etc/opendmarc.conf" <<EOF
# generated by benches/setup.sh
PidFile			$BENCH_ROOT/run/opendmarc/opendmarc.pid
PublicSuffixList	/usr/share/publicsuffix/public_suffix_list.dat
Socket			local:$BENCH_ROOT/run/opendmarc/opendmarc.sock
Syslog			true
UMask			0000
UserID			opendmarc
AuthservID		bench.example.test
TrustedAuthservIDs	bench.example.test
IgnoreHosts		$BENCH_ROOT/etc/internal-hosts-none
SPFSelfValidate		true
HistoryFile		$BENCH_ROOT/run/opendmarc/opendmarc.dat
RejectFailures		false
RequiredHeaders		false
EOF

# --- rmilter ---------------------------------------------------------------------------------
# Same work as the incumbents: relaxed/simple, one key per signing mode; in verify mode
# DKIM + SPF + DMARC (+ ARC, which finds no ARC headers here) with the aggregate-report store on
# (like OpenDMARC's HistoryFile).  The client 127.0.0.1 is internal (signs) in the signing
# configs and external (verifies) in the verify config, like OpenDKIM's InternalHosts.
rmilter_conf() { # mode networks keys...
  local mode=$1 nets=$2; shift 2
  cat <<EOF
# generated by benches/setup.sh ($mode)
listen = "unix:$BENCH_ROOT/run/rmilter/rmilter.sock"
authserv_id = "bench.example.test"
log_level = "info"
pid_file = ""

[socket]
mode = "0660"
group = "postfix"

[outbound]
authenticated = true
networks = $nets
daemon_names = ["ORIGINATING"]
local_submission = true

[signing]
canonicalization = "relaxed/simple"

[dns]
nameservers = ["127.0.0.53"]
timeout = "2s"

[report]
enabled = true
store = "$BENCH_ROOT/run/rmilter/reports.db"
reporting_domain = "bench.example.test"
EOF
  for k in "$@"; do
    IFS=: read -r sel file alg <<<"$k"
    printf '\n[[key]]\ndomain = "example.test"\nselector = "%s"\nfile = "%s"\nalgorithm = "%s"\n' "$sel" "$BENCH_ROOT/keys/$file" "$alg"
  done
}
rmilter_conf sign-rsa     '["127.0.0.0/8"]' bench:rmilter-bench.pem:rsa   >"$BENCH_ROOT/etc/rmilter-sign-rsa.toml"
rmilter_conf sign-ed25519 '["127.0.0.0/8"]' ed:rmilter-ed.pem:ed25519     >"$BENCH_ROOT/etc/rmilter-sign-ed25519.toml"
rmilter_conf verify       '[]'                                            >"$BENCH_ROOT/etc/rmilter-verify.toml"

# --- Postfix: private instance (smtpd 127.0.0.1:2525 -> relay to smtp-sink 127.0.0.1:2626) ----
PF=$BENCH_ROOT/postfix
cat >"$PF/main.cf" <<EOF
# private benchmark instance, started by run.sh inside the network namespace
compatibility_level = 3.6
queue_directory = $BENCH_ROOT/spool
data_directory = $BENCH_ROOT/data
mail_owner = postfix
setgid_group = postdrop
myhostname = bench.example.test
mydomain = example.test
myorigin = \$mydomain
mydestination =
local_transport = error:no local delivery in bench
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relayhost = [127.0.0.1]:2626
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_recipient_restrictions =
smtpd_peername_lookup = no
smtp_dns_support_level = disabled
smtp_host_lookup = native
biff = no
append_dot_mydomain = no
readme_directory = no
maillog_file = $BENCH_ROOT/log/postfix.log
maillog_file_prefixes = $BENCH_ROOT/log
smtputf8_enable = no
alias_maps =
alias_database =
local_recipient_maps =
smtpd_milters =
non_smtpd_milters =
milter_default_action = tempfail
milter_protocol = 6
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
smtpd_client_message_rate_limit = 0
anvil_rate_time_unit = 60s
message_size_limit = 20971520
EOF
cat >"$PF/master.cf" <<'EOF'
# service type  private unpriv  chroot  wakeup  maxproc command
127.0.0.1:2525 inet n   -       n       -       -       smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
EOF
postfix -c "$PF" set-permissions >/dev/null 2>&1 || true
script -qec "postfix -c $PF check" /dev/null  # postfix prints its complaints only to a tty

# --- messages -------------------------------------------------------------------------------
$PY "$HERE/make-messages.py" "$BENCH_ROOT"

# --- build, and check the rmilter configs with the binary ------------------------------------
build
RMILTER=$(target_dir)/release/rmilter
for m in sign-rsa sign-ed25519 verify; do
  "$RMILTER" check-config -c "$BENCH_ROOT/etc/rmilter-$m.toml" >/dev/null \
    || { echo "setup.sh: rmilter check-config failed for etc/rmilter-$m.toml" >&2; "$RMILTER" check-config -c "$BENCH_ROOT/etc/rmilter-$m.toml"; exit 1; }
done

echo "$SETUP_VERSION" >"$BENCH_ROOT/ready"
echo "setup.sh: done: $BENCH_ROOT"
