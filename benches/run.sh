#!/bin/bash
# benches/run.sh -- rmilter against OpenDKIM + OpenDMARC, in one run, on the same messages.
#
#   bash benches/run.sh [--reps 3] [--sizes "2k 100k 10m"] [--modes "verify sign-ed25519 sign-rsa"]
#                       [--sessions 20] [--seconds 10] [--pf-count 3000] [--quiet-wait 5]
#                       [--no-postfix] [--no-build] [--quick] [--runid ID] [--transports "unix inet"]
#                       [--domains 10000]
#
# Runs benches/setup.sh first when $BENCH_ROOT (default /srv/rmilter-bench) is not set up, and
# (re)builds rmilter and milterload (release) unless --no-build.  Then, inside a private network +
# mount namespace (only "lo"; /etc/resolv.conf -> nsd on 127.0.0.53; a private /dev with a
# /dev/log sink), so that no packet leaves the machine:
#   1. milter alone: milterload drives each milter over the milter protocol with 20 concurrent
#      sessions, for every size x mode x repetition, rmilter and the incumbents interleaved;
#      each milter process is started fresh per measurement; the first repetition checks that
#      the milter really signed / verified (DKIM-Signature, dkim=pass spf=pass dmarc=pass);
#      `openssl speed` gives the raw RSA-2048 / Ed25519 signature cost and SHA-256 throughput
#      once per repetition.
#   2. through Postfix (2 KB): smtp-source -> Postfix smtpd -> milter(s) -> qmgr/smtp -> smtp-sink,
#      no-milter baseline (first and last in each repetition) and every mode for both
#      implementations, interleaved, per repetition;
#      the delivered headers of the first repetition are checked like above.
#   rmilter runs on its unix socket and on inet:127.0.0.1:8891 (--transports), the incumbents on
#   unix sockets. floor-milter (benches/floor_milter.rs: rmilter's listener and negotiation, no
#   other work) runs once per repetition in every phase: what the milter protocol itself costs.
#   Besides the 20-session throughput runs: one session at a time (milterload
#   --sessions 1: latency per milter stage, p50/p99; and one SMTP session at a time through
#   Postfix: end-of-message latency against the no-milter baseline). A loaded run during which
#   the machine was mostly idle is flagged "idle" (messages waited on something other than CPU).
#   3. many domains (--domains N, default 10000; 0 skips; off with --quick unless given):
#      N signing domains and N per-domain policies, static and managed, Ed25519 and RSA, against
#      one domain: check-config, start, reload, RSS, milter CPU per message
#      (benches/many_domains.py; its files are generated once under $BENCH_ROOT/many/).
# Prints a markdown report (medians, rmilter/peer ratios, PASS/FAIL per target, how busy the
# machine was); raw JSON and the report go to $BENCH_ROOT/results/<runid>/.
# --quick: 1 repetition, 2k only, small counts (smoke test, ~2-3 minutes).
# Exit status: 0 measured (targets may still FAIL: see the report), 1 setup/sanity error,
# 3 some run had errors (listed under "Failures").
set -euo pipefail

main() {
  HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
  REPO=$(cd "$HERE/.." && pwd)
  export BENCH_ROOT=${BENCH_ROOT:-/srv/rmilter-bench}
  local PY=/usr/bin/python3

  if [ -n "${BENCH_IN_NS:-}" ]; then in_namespace "$@"; return; fi

  local REPS=3 SIZES="2k 100k 10m" MODES="verify sign-ed25519 sign-rsa" SESSIONS=20 SECONDS_=10 PFCOUNT=3000
  local QW=5 POSTFIX=1 BUILD=1 QUICK=0 RUNID="" TRANSPORTS="unix inet" DOMAINS=10000
  local set_reps="" set_sizes="" set_pf="" set_qw="" set_domains=""
  while [ $# -gt 0 ]; do
    case "$1" in
      --reps) REPS=$2; set_reps=1; shift 2;;
      --sizes) SIZES=$2; set_sizes=1; shift 2;;
      --modes) MODES=$2; shift 2;;
      --sessions) SESSIONS=$2; shift 2;;
      --seconds) SECONDS_=$2; shift 2;;
      --pf-count) PFCOUNT=$2; set_pf=1; shift 2;;
      --quiet-wait) QW=$2; set_qw=1; shift 2;;
      --no-postfix) POSTFIX=0; shift;;
      --no-build) BUILD=0; shift;;
      --quick) QUICK=1; shift;;
      --runid) RUNID=$2; shift 2;;
      --transports) TRANSPORTS=$2; shift 2;;
      --domains) DOMAINS=$2; set_domains=1; shift 2;;
      -h|--help) sed -n '2,/^set -euo/p' "$HERE/run.sh" | sed '$d; s/^# \{0,1\}//'; return 0;;
      *) echo "run.sh: unknown argument $1 (see --help)" >&2; return 2;;
    esac
  done
  if [ "$QUICK" = 1 ]; then
    [ -n "$set_reps" ] || REPS=1
    [ -n "$set_sizes" ] || SIZES=2k
    [ -n "$set_pf" ] || PFCOUNT=1000
    [ -n "$set_qw" ] || QW=3
    [ -n "$set_domains" ] || DOMAINS=0
  fi
  [ "$(id -u)" = 0 ] || { echo "run.sh: needs root (network namespace, private Postfix)" >&2; return 1; }

  # --- setup / build (outside the namespace: needs the package mirrors and crates.io) -------
  if [ "$(cat "$BENCH_ROOT/ready" 2>/dev/null)" != "$(sed -n 's/^SETUP_VERSION=\([0-9]*\).*/\1/p' "$HERE/setup.sh")" ]; then
    echo "run.sh: $BENCH_ROOT not set up (or set up by an older setup.sh): running setup.sh" >&2
    bash "$HERE/setup.sh" >&2
  elif [ "$BUILD" = 1 ]; then
    bash "$HERE/setup.sh" --build >&2
  fi
  local TD; TD=$(bash "$HERE/setup.sh" --target-dir)
  local RMILTER=${RMILTER_BIN:-$TD/release/rmilter} MILTERLOAD=${MILTERLOAD_BIN:-$TD/release/milterload}
  local FLOOR=${FLOOR_BIN:-$TD/release/examples/floor-milter}
  if [ ! -x "$FLOOR" ]; then
    echo "run.sh: WARNING: no floor-milter at $FLOOR: the report has no floor rows" >&2
    FLOOR=""
  fi
  [ -x "$RMILTER" ] || { echo "run.sh: no rmilter binary at $RMILTER" >&2; return 1; }
  if [ ! -x "$MILTERLOAD" ]; then
    echo "run.sh: WARNING: no milterload at $MILTERLOAD: the milter-alone part is skipped" >&2
    MILTERLOAD=""
  fi
  for m in sign-rsa sign-ed25519 verify; do
    "$RMILTER" check-config -c "$BENCH_ROOT/etc/rmilter-$m.toml" >/dev/null \
      || { echo "run.sh: rmilter rejects $BENCH_ROOT/etc/rmilter-$m.toml; re-run setup.sh" >&2; return 1; }
  done

  # --- run id, metadata ---------------------------------------------------------------------
  [ -n "$RUNID" ] || RUNID=$(date -u +%Y%m%dT%H%M%SZ)$([ "$QUICK" = 1 ] && echo -quick)
  local OUT=$BENCH_ROOT/results/$RUNID
  mkdir -p "$OUT"
  local commit dirty
  commit=$(git -C "$REPO" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
  dirty=$(git -C "$REPO" status --porcelain --untracked-files=no 2>/dev/null | grep -qv '^.. benches/' && echo " (working tree has uncommitted changes outside benches/)" || true)
  RUNID=$RUNID GIT="$commit$dirty" ARGS="reps=$REPS sizes=[$SIZES] modes=[$MODES] sessions=$SESSIONS seconds=$SECONDS_ pf-count=$PFCOUNT quiet-wait=$QW postfix=$POSTFIX quick=$QUICK transports=[$TRANSPORTS] domains=$DOMAINS" \
  RMILTER=$RMILTER $PY - "$OUT/meta.json" <<'EOF'
import json, os, platform, subprocess, sys, datetime
def sh(*c):
    try: return subprocess.run(c, capture_output=True, text=True, timeout=30).stdout.strip()
    except Exception as e: return f"? ({e})"
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
ver = lambda p: sh("dpkg-query", "-W", "-f=${Version}", p)
json.dump({"runid": os.environ["RUNID"], "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
           "git": os.environ["GIT"], "host": platform.node(), "cpu": cpu, "ncpu": os.cpu_count(),
           "kernel": platform.release(), "rmilter": sh(os.environ["RMILTER"], "--version") or os.environ["RMILTER"],
           "opendkim": ver("opendkim"), "opendmarc": ver("opendmarc"), "postfix": ver("postfix"), "nsd": ver("nsd"),
           "messages": {f: os.path.getsize(os.path.join(os.environ["BENCH_ROOT"], "msgs", f))
                        for f in sorted(os.listdir(os.path.join(os.environ["BENCH_ROOT"], "msgs")))},
           "args": os.environ["ARGS"]}, open(sys.argv[1], "w"), indent=1)
EOF
  echo "run.sh: run $RUNID -> $OUT" >&2
  # stop leftovers of an aborted earlier run (recorded pids only)
  stale_check

  # --- into the namespace ---------------------------------------------------------------------
  local rc=0
  BENCH_IN_NS=1 unshare --net --mount --propagation private bash "$HERE/run.sh" \
    run --root "$BENCH_ROOT" --out "$OUT" --rmilter "$RMILTER" --milterload "$MILTERLOAD" --floor "$FLOOR" --reps "$REPS" \
    --sizes "$SIZES" --modes "$MODES" --sessions "$SESSIONS" --seconds "$SECONDS_" --pf-count "$PFCOUNT" \
    --quiet-wait "$QW" --transports "$TRANSPORTS" --domains "$DOMAINS" $([ "$POSTFIX" = 0 ] && echo --no-postfix) $([ "$QUICK" = 1 ] && echo --quick) \
    2> >(tee -a "$OUT/progress.log" >&2) | tee "$OUT/output.md" || rc=$?
  echo "run.sh: report: $OUT/report.md (raw: $OUT/raw.jsonl, sanity checks: $OUT/checks.txt)" >&2
  return $rc
}

stale_check() {
  local pf pid
  for pf in "$BENCH_ROOT"/run/*.pid "$BENCH_ROOT"/run/*/*.pid "$BENCH_ROOT"/spool/pid/master.pid; do
    [ -f "$pf" ] || continue
    pid=$(tr -dc 0-9 <"$pf")
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
      echo "run.sh: pid $pid from $pf is still running: another run.sh, or leftovers of a killed one" >&2
      echo "        (stop it by that pid if it is a leftover, then retry)" >&2
      exit 1
    fi
  done
}

in_namespace() { # runs as: BENCH_IN_NS=1 unshare --net --mount bash run.sh run ARGS...
  shift  # "run"
  ip link set lo up
  mount --bind "$BENCH_ROOT/etc/resolv.conf" /etc/resolv.conf
  # private /dev: the host may have no /dev/log; the incumbents syslog every message, so give
  # them a sink (like rsyslog writing a file); rmilter logs to stderr -> a file
  mount -t tmpfs -o mode=755,size=1m benchdev /dev
  mknod -m 666 /dev/null c 1 3; mknod -m 666 /dev/zero c 1 5; mknod -m 666 /dev/full c 1 7
  mknod -m 666 /dev/random c 1 8; mknod -m 666 /dev/urandom c 1 9; mknod -m 666 /dev/tty c 5 0
  ln -s /proc/self/fd /dev/fd; ln -s /proc/self/fd/0 /dev/stdin; ln -s /proc/self/fd/1 /dev/stdout
  ln -s /proc/self/fd/2 /dev/stderr
  mkdir /dev/shm && mount -t tmpfs -o mode=1777 benchshm /dev/shm
  exec /usr/bin/python3 "$HERE/bench.py" run "$@"
}

# (one line: bash has parsed it all before running, so editing this file mid-run is safe)
main "$@"; exit $?
