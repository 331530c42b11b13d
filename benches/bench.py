#!/usr/bin/python3
"""rmilter benchmark harness (run by benches/run.sh inside a private network + mount namespace).

  bench.py run ...            the whole benchmark: milter alone (milterload) and through Postfix
  bench.py report DIR         re-render DIR/report.md from DIR/raw.jsonl
  bench.py procstat L=PID...  CPU / memory snapshot of process trees and the machine (JSON)
  bench.py syslog-sink SOCK FILE   a /dev/log datagram sink for the incumbents' syslog()

Every daemon this script starts is recorded by pid and stopped (TERM, then KILL after 10 s) by
that pid when a run ends, including on errors and signals.  Every loop has a bound.
"""
import argparse, datetime, json, os, re, signal, socket, statistics, subprocess, sys, time

HZ = os.sysconf("SC_CLK_TCK")
PY = "/usr/bin/python3"
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import many_domains  # noqa: E402 -- benches/many_domains.py, beside this file
MODES = ("verify", "sign-ed25519", "sign-rsa")
SIZES = ("2k", "100k", "10m")
# rmilter on a unix socket ("rmilter") and on inet:127.0.0.1:8891 ("rmilter-inet", what chrooted
# Postfix setups use); the incumbents always on unix sockets
INET = "inet:127.0.0.1:8891"
IMPLS = ("rmilter", "rmilter-inet", "peer")
# floor-milter (benches/floor_milter.rs): rmilter's listener and protocol stack, the same
# negotiation, one inserted header at end of message, no other work. Run once per repetition
# ("floor" is both its mode and its impl): what the milter protocol itself costs on this machine,
# and what it leaves of Postfix's end-to-end rate.
FLOOR = "floor"
# the same with every event but end of message skipped (--only-eom), through Postfix only: what
# Postfix pays for a milter it talks to once per message
FLOOR_EOM = "floor-eom"


def machine_busy(o):
    """Share of the machine's CPUs busy over a measurement window (outside() record), 0..1."""
    w = o.get("window_s") or 0
    return o["busy_cpu_s"] / (w * (os.cpu_count() or 1)) if w else None


# a loaded run (20 sessions, messages always waiting) on a machine less busy than this was
# waiting on something other than CPU: a transport stall, a lock, a timer
IDLE_BELOW = 0.85


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# /proc accounting
def _stat(pid):
    try:
        s = open(f"/proc/{pid}/stat").read()
    except OSError:
        return None
    rest = s[s.rindex(")") + 2:].split()
    # state(3) ppid(4) ... utime(14) stime(15) cutime(16) cstime(17): rest[0] is field 3
    return int(rest[1]), sum(int(x) for x in rest[11:15])


def _mem_kb(pid):
    rss = hwm = 0
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
    except OSError:
        pass
    return rss, hwm


def procstat(labels):
    """labels: {label: [pid, ...]} -> {label: {cpu_s, rss_kb, hwm_kb, nproc}, "system": {...}}.
    CPU of a label = utime+stime+cutime+cstime summed over each pid's live process tree (reaped
    children count through cutime).  hwm_kb = sum of VmHWM (peak RSS since start) over the tree.
    system.foreign_cpu_s = CPU of user processes outside this network namespace (other work on
    the machine), kthread_cpu_s = kernel threads, netns_cpu_s = everything of the benchmark."""
    procs = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            st = _stat(d)
            if st:
                procs[int(d)] = st
    kids = {}
    for pid, (ppid, _) in procs.items():
        kids.setdefault(ppid, []).append(pid)
    mynet = os.readlink("/proc/self/ns/net")
    foreign = kthread = ours = 0
    for pid, (ppid, cpu) in procs.items():
        if pid == 2 or ppid == 2:
            kthread += cpu
            continue
        try:
            if os.readlink(f"/proc/{pid}/ns/net") != mynet:
                foreign += cpu
            else:
                ours += cpu
        except OSError:
            pass
    res = {}
    for label, pids in labels.items():
        tot = n = rss = hwm = 0
        seen = set()
        todo = [p for p in pids if p]
        while todo:
            p = todo.pop()
            if p in seen or p not in procs:
                continue
            seen.add(p)
            tot += procs[p][1]
            n += 1
            r, h = _mem_kb(p)
            rss += r
            hwm += h
            todo.extend(kids.get(p, []))
        res[label] = {"cpu_s": tot / HZ, "nproc": n, "rss_kb": rss, "hwm_kb": hwm} if n else None
    f = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    total = sum(f[:8])
    idle = f[3] + f[4]
    res["system"] = {"t": time.time(), "busy_s": (total - idle) / HZ, "steal_s": f[7] / HZ,
                     "ncpu": os.cpu_count(), "foreign_cpu_s": foreign / HZ,
                     "kthread_cpu_s": kthread / HZ, "netns_cpu_s": ours / HZ}
    return res


def outside(c0, c1):
    """CPU used outside the benchmark between two procstat() snapshots.  foreign_cpu_s sums the
    processes outside this network namespace; it drops (even below zero) when a big foreign
    process exits and its reaper is not visible (e.g. a finished cargo build).  unattributed_cpu_s
    = machine busy time - benchmark processes - kernel threads: foreign work plus interrupt time
    (partly the benchmark's loopback traffic), robust against exits.  outside_cpu_s, the number
    the report uses, is foreign_cpu_s, or unattributed_cpu_s when foreign_cpu_s is negative."""
    s0, s1 = c0["system"], c1["system"]
    foreign = s1["foreign_cpu_s"] - s0["foreign_cpu_s"]
    unattr = (s1["busy_s"] - s0["busy_s"]) - (s1["netns_cpu_s"] - s0["netns_cpu_s"]) - \
        (s1["kthread_cpu_s"] - s0["kthread_cpu_s"])
    return {"window_s": round(s1["t"] - s0["t"], 3),
            "outside_cpu_s": round(foreign if foreign >= 0 else max(unattr, 0), 2),
            "foreign_cpu_s": round(s1["foreign_cpu_s"] - s0["foreign_cpu_s"], 2),
            "kthread_cpu_s": round(s1["kthread_cpu_s"] - s0["kthread_cpu_s"], 2),
            "steal_s": round(s1["steal_s"] - s0["steal_s"], 2),
            "bench_cpu_s": round(s1["netns_cpu_s"] - s0["netns_cpu_s"], 2),
            "unattributed_cpu_s": round(unattr, 2),
            "busy_cpu_s": round(s1["busy_s"] - s0["busy_s"], 2)}


# ---------------------------------------------------------------------------------------------
# processes
class Procs:
    """Daemons started by this run, by pid; stop() ends exactly these."""

    def __init__(self):
        self.live = {}  # name -> (pid, Popen or None)

    def add(self, name, pid, popen=None):
        self.live[name] = (pid, popen)

    def pid(self, name):
        return self.live.get(name, (None, None))[0]

    def stop(self, name):
        pid, popen = self.live.pop(name, (None, None))
        if not pid:
            return
        def alive():
            if popen is not None:
                return popen.poll() is None
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return False
            try:  # a zombie (not our child) counts as gone
                return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
            except OSError:
                return False
        if not alive():
            reap()
            return
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        for _ in range(100):
            if not alive():
                reap()
                return
            time.sleep(0.1)
        log(f"  {name} ({pid}) did not exit on TERM within 10 s; KILL")
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if popen is not None:
            try:
                popen.wait(5)
            except subprocess.TimeoutExpired:
                pass
        reap()

    def stop_all(self):
        for name in list(self.live)[::-1]:
            self.stop(name)


def subreaper():
    """Become the child subreaper: daemons that fork into the background (nsd, Postfix, OpenDKIM,
    OpenDMARC) are re-parented to this process, inside the namespace, instead of to PID 1
    outside it; reaping them here keeps their CPU in the benchmark's account (cutime) rather
    than in "outside CPU"."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    PR_SET_CHILD_SUBREAPER = 36
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        log("bench.py: warning: prctl(PR_SET_CHILD_SUBREAPER) failed")


def reap():
    """Collect exited children (bounded: at most 1000 per call)."""
    for _ in range(1000):
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def read_pidfile(path, wait_s=10):
    for _ in range(int(wait_s * 10)):
        try:
            v = open(path).read().strip()
            if v.isdigit():
                return int(v)
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"no pid in {path} after {wait_s} s")


def sock_up(spec, wait_s=10, poll_s=0.1):
    """-> seconds until `spec` accepted a connection; RuntimeError after wait_s."""
    t0 = time.monotonic()
    kind, _, addr = spec.partition(":")
    err = None
    for _ in range(int(wait_s / poll_s)):
        if kind == "unix":
            s = socket.socket(socket.AF_UNIX)
            target = addr
        else:
            host, port = addr.rsplit(":", 1)
            s = socket.socket()
            target = (host, int(port))
        s.settimeout(1)
        try:
            s.connect(target)
            s.close()
            return time.monotonic() - t0
        except OSError as e:
            err = e
            s.close()
        time.sleep(poll_s)
    raise RuntimeError(f"{spec}: nothing accepts connections after {wait_s} s ({err})")


# ---------------------------------------------------------------------------------------------
class Bench:
    def __init__(self, a):
        self.a = a
        self.root = a.root
        self.run = os.path.join(a.root, "run")
        self.out = a.out
        self.procs = Procs()
        self.raw = open(os.path.join(self.out, "raw.jsonl"), "a")
        self.failures = []
        self.phases = []

    # --- infrastructure -------------------------------------------------------------------
    def start_infra(self):
        p = subprocess.Popen([PY, __file__, "syslog-sink", "/dev/log", f"{self.root}/log/syslog.log"],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.add("syslog-sink", p.pid, p)
        for f in ("nsd.pid",):
            try:
                os.unlink(os.path.join(self.run, f))
            except FileNotFoundError:
                pass
        subprocess.run(["nsd", "-c", f"{self.root}/dns/nsd.conf"], check=True, timeout=30)
        self.procs.add("nsd", read_pidfile(f"{self.run}/nsd.pid"))
        for _ in range(50):
            r = subprocess.run(["dig", "+short", "+time=1", "+tries=1", "TXT", "_dmarc.sender.test"],
                               capture_output=True, text=True, timeout=10)
            if "DMARC1" in r.stdout:
                break
            time.sleep(0.2)
        else:
            raise RuntimeError("nsd does not answer through /etc/resolv.conf")
        r = subprocess.run(["dig", "+time=1", "+tries=1", "TXT", "nonexistent.remote.test"],
                           capture_output=True, text=True, timeout=10)
        if "NXDOMAIN" not in r.stdout:
            raise RuntimeError("nsd root zone: unknown names do not get NXDOMAIN:\n" + r.stdout)

    # --- milters -------------------------------------------------------------------------
    def start_milters(self, impl, mode):
        """-> (list of sockets in chain order, {label: pid})"""
        # each measurement starts with empty aggregate-report stores (rmilter's SQLite store,
        # OpenDMARC's history file), so that repetitions are alike, and without the socket file
        # rmilter and floor-milter listen on
        for f in ("rmilter/reports.db", "rmilter/reports.db-wal", "rmilter/reports.db-shm", "opendmarc/opendmarc.dat",
                  "rmilter/rmilter.sock"):
            try:
                os.unlink(os.path.join(self.run, f))
            except FileNotFoundError:
                pass
        if impl in (FLOOR, FLOOR_EOM):
            sock = f"{self.run}/rmilter/rmilter.sock"
            p = subprocess.Popen([self.a.floor, "unix:" + sock] + (["--only-eom"] if impl == FLOOR_EOM else []),
                                 stdin=subprocess.DEVNULL,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.procs.add("floor", p.pid, p)
            sock_up("unix:" + sock)
            return ["unix:" + sock], {"floor": p.pid}
        if impl.startswith("rmilter"):
            sock = f"{self.run}/rmilter/rmilter.sock"
            self.rlog = f"{self.root}/log/rmilter-{mode}.log"
            self.rlog_off = os.path.getsize(self.rlog) if os.path.exists(self.rlog) else 0
            lf = open(self.rlog, "a")
            spec = INET if impl == "rmilter-inet" else "unix:" + sock
            p = subprocess.Popen([self.a.rmilter, "run", "-c", f"{self.root}/etc/rmilter-{mode}.toml",
                                  "--listen", spec], stdin=subprocess.DEVNULL, stdout=lf, stderr=lf)
            lf.close()
            self.procs.add("rmilter", p.pid, p)
            try:
                sock_up(spec)
            except RuntimeError:
                if p.poll() is not None:
                    raise RuntimeError(f"rmilter exited ({p.returncode}); see {self.root}/log/rmilter-{mode}.log")
                raise
            return [spec], {"rmilter": p.pid}
        pids, socks = {}, []
        dkim_conf = f"{self.root}/etc/opendkim-{mode}.conf"
        sock = f"{self.run}/opendkim/opendkim.sock"
        for f in (sock, f"{self.run}/opendkim/opendkim.pid"):
            try:
                os.unlink(f)
            except FileNotFoundError:
                pass
        env = dict(os.environ)
        if mode == "verify":  # see setup.sh: Debian's opendkim crashes without this under load
            env["LD_PRELOAD"] = f"{self.root}/lib/ub-config-lock.so"
        subprocess.run(["opendkim", "-x", dkim_conf], env=env, check=True, timeout=30)
        pids["opendkim"] = read_pidfile(f"{self.run}/opendkim/opendkim.pid")
        self.procs.add("opendkim", pids["opendkim"])
        sock_up("unix:" + sock)
        socks.append("unix:" + sock)
        if mode == "verify":
            sock = f"{self.run}/opendmarc/opendmarc.sock"
            for f in (sock, f"{self.run}/opendmarc/opendmarc.pid"):
                try:
                    os.unlink(f)
                except FileNotFoundError:
                    pass
            subprocess.run(["opendmarc", "-c", f"{self.root}/etc/opendmarc.conf"], check=True, timeout=30)
            pids["opendmarc"] = read_pidfile(f"{self.run}/opendmarc/opendmarc.pid")
            self.procs.add("opendmarc", pids["opendmarc"])
            sock_up("unix:" + sock)
            socks.append("unix:" + sock)
        return socks, pids

    def stop_milters(self):
        for n in ("rmilter", "floor", "opendmarc", "opendkim"):
            self.procs.stop(n)

    def rmilter_log_problems(self, impl):
        """WARN/ERROR lines rmilter logged during the last run (its log is per mode)."""
        if not impl.startswith("rmilter"):
            return []
        with open(self.rlog, "rb") as f:
            f.seek(self.rlog_off)
            lines = f.read().decode(errors="replace").splitlines()
        return [l for l in lines if re.search(r"\b(WARN|ERROR)\b", l)]

    # --- envelope per mode ---------------------------------------------------------------
    @staticmethod
    def envelope(mode):
        if mode == "verify":  # inbound: signed by sender.test, SPF ip4:127.0.0.1, DMARC p=reject
            return {"dir": "in", "mail_from": "alice@sender.test", "rcpt": "bob@example.test",
                    "helo": "client.sender.test"}
        return {"dir": "out", "mail_from": "bench@example.test", "rcpt": "rcpt@remote.test",
                "helo": "client.example.test"}

    @staticmethod
    def expectations(mode):
        """(regexes that must all match the milter's modifications / the delivered headers,
            regexes that must not match)"""
        if mode in (FLOOR, FLOOR_EOM):
            return ([r"Authentication-Results: bench\.example\.test; none"], [])
        if mode == "verify":
            return ([r"dkim=pass", r"spf=pass", r"dmarc=pass"], [r"dkim=(fail|neutral|temperror|permerror|none)",
                                                                 r"dmarc=(fail|temperror|permerror|none)"])
        alg = "ed25519-sha256" if mode == "sign-ed25519" else "rsa-sha256"
        sel = "ed" if mode == "sign-ed25519" else "bench"
        return ([r"DKIM-Signature", rf"a={alg}", r"d=example\.test", rf"s={sel};"], [])

    def check_text(self, text, mode):
        must, mustnot = self.expectations(mode)
        missing = [m for m in must if not re.search(m, text, re.I)]
        bad = [m for m in mustnot if re.search(m, text, re.I)]
        return missing, bad

    # --- milterload ----------------------------------------------------------------------
    def milterload_args(self, socks, mode, size, pids):
        env = self.envelope(mode)
        args = [self.a.milterload]
        for s in socks:
            args += ["--milter", s]
        args += ["--message", f"{self.root}/msgs/{env['dir']}-{size}.eml",
                 "--client-ip", "127.0.0.1", "--client-name", "unknown", "--helo", env["helo"],
                 "--mail-from", env["mail_from"], "--rcpt", env["rcpt"], "--timeout-ms", "120000"]
        for label, pid in pids.items():
            args += ["--pid", f"{label}={pid}"]
        return args

    def sanity(self, impl, mode, size, socks, pids):
        args = self.milterload_args(socks, mode, size, pids) + ["--check"]
        r = subprocess.run(args, capture_output=True, text=True, timeout=300)
        text = r.stdout + r.stderr
        missing, bad = self.check_text(text, mode)
        ok = r.returncode == 0 and not missing and not bad
        with open(os.path.join(self.out, "checks.txt"), "a") as f:
            f.write(f"===== milterload --check {impl} {mode} {size}: {'OK' if ok else 'FAILED'} (rc {r.returncode})\n"
                    f"$ {' '.join(args)}\n{text}\n")
        if not ok:
            raise RuntimeError(f"sanity check failed: {impl} {mode} {size}: rc={r.returncode} "
                               f"missing={missing} unexpected={bad}\n{text[-3000:]}")
        return text

    def alone_params(self, size):
        q = self.a.quick
        if size == "2k":
            return dict(count=3000 if q else 30000, warmup=100 if q else 300, max_s=6 if q else self.a.seconds)
        if size == "100k":
            return dict(count=1000 if q else 10000, warmup=40 if q else 100, max_s=6 if q else self.a.seconds)
        # 100 x 10 MB: 20 sessions, so 20 messages in flight at once, 5 rounds (enough CPU ticks)
        return dict(count=20 if q else 100, warmup=0, max_s=120 if q else 300)

    def run_alone(self, impl, mode, size, rep):
        socks, pids = self.start_milters(impl, mode)
        try:
            if rep == 1:
                self.sanity(impl, mode, size, socks, pids)
            p = self.alone_params(size)
            jpath = os.path.join(self.out, "milterload", f"{size}-{mode}-{impl}-{rep}.json")
            args = self.milterload_args(socks, mode, size, pids) + [
                "--sessions", str(self.a.sessions), "--count", str(p["count"]), "--warmup", str(p["warmup"]),
                "--max-seconds", str(p["max_s"]), "--json", jpath]
            if impl == "peer" and len(pids) > 1:
                args += ["--pid", "milter=" + ",".join(str(x) for x in pids.values())]
            qw, quiet = self.quiet_gate()
            c0 = procstat({})
            r = subprocess.run(args, capture_output=True, text=True, timeout=p["max_s"] + 300)
            c1 = procstat({})
            if r.returncode != 0 or not os.path.exists(jpath):
                raise RuntimeError(f"milterload failed (rc {r.returncode}): {' '.join(args)}\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
            j = json.load(open(jpath))
            alive = {k: self._alive(v) for k, v in pids.items()}
        finally:
            self.stop_milters()
        procs = j.get("procs", {})
        labels = list(pids) if len(pids) == 1 else ["milter"]
        cpu = sum(procs[l]["cpu_s"] for l in labels if procs.get(l))
        rss = sum(procs[l]["peak_rss_kib"] for l in labels if procs.get(l))
        n = j["messages"]
        reps = j.get("replies", {})
        bad_replies = sum(reps.get(k, 0) for k in ("reject", "tempfail", "discard"))
        rec = {"kind": "alone", "size": size, "mode": mode, "impl": impl, "rep": rep,
               "messages": n, "errors": j.get("errors", 0), "bad_replies": bad_replies, "replies": reps,
               "msgs_per_s": j["msgs_per_s"], "elapsed_s": j["elapsed_s"], "stopped_early": j.get("stopped_early"),
               "cpu_s": cpu, "cpu_ms_per_msg": 1000 * cpu / n if n else None,
               "cpu_ms_per_msg_by_proc": {k: v.get("cpu_ms_per_msg") for k, v in procs.items()},
               "p99_ms": j["latency_ms"]["total"]["p99"], "p50_ms": j["latency_ms"]["total"]["p50"],
               "eom_p99_ms": j["latency_ms"].get("eom", {}).get("p99"),
               "peak_rss_kib": rss, "peak_rss_kib_by_proc": {k: v.get("peak_rss_kib") for k, v in procs.items()},
               "milter_alive_after": alive, "quiet_wait_s": qw, "quiet": quiet, "outside": outside(c0, c1),
               "sessions": self.a.sessions}
        rec["machine_busy"] = machine_busy(rec["outside"])
        rec["idle_waiting"] = rec["machine_busy"] is not None and rec["machine_busy"] < IDLE_BELOW
        probs = self.rmilter_log_problems(impl)
        rec["rmilter_log_problems"] = len(probs)
        if probs:
            self.failures.append(f"milter alone {size} {mode} {impl} rep {rep}: rmilter logged {len(probs)} "
                                 f"WARN/ERROR lines, e.g. {probs[0][:300]}")
        if rec["errors"] or bad_replies or not all(alive.values()) or n == 0:
            self.failures.append(f"milter alone {size} {mode} {impl} rep {rep}: errors={rec['errors']} "
                                 f"bad replies={bad_replies} alive={alive} messages={n}")
        self.emit(rec)
        return rec

    @staticmethod
    def _alive(pid):
        try:
            os.kill(pid, 0)
            return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False

    def emit(self, rec):
        rec["ts"] = round(time.time(), 1)
        self.raw.write(json.dumps(rec) + "\n")
        self.raw.flush()
        if rec["kind"] == "alone":
            log(f"  {rec['size']:>4} {rec['mode']:<12} {rec['impl']:<7} rep {rec['rep']}: {rec['messages']} msgs "
                f"{rec['msgs_per_s']:.0f}/s cpu {rec['cpu_ms_per_msg']:.3f} ms/msg p99 {rec['p99_ms']:.1f} ms "
                f"rss {rec['peak_rss_kib'] / 1024:.1f} MiB outside {rec['outside']['outside_cpu_s']} s")
        elif rec["kind"] == "postfix":
            log(f"  postfix 2k {rec['mode']:<12} {rec['impl']:<8} rep {rec['rep']}: {rec['sent']}/{rec['count']} sent "
                f"{rec['e2e_msgs_per_s']:.0f}/s milter cpu {rec['milter_cpu_ms_per_msg']:.3f} ms/msg "
                f"outside {rec['outside']['outside_cpu_s']} s")
        elif rec["kind"] == "raw":
            log(f"  raw signature cost: {rec}")

    # --- quiet gate ----------------------------------------------------------------------
    def quiet_gate(self):
        """Wait (at most --quiet-wait s) until processes outside the benchmark use < 5 % of a CPU."""
        t0 = time.time()
        if self.a.quiet_wait <= 0:
            return 0, None
        while True:
            a = procstat({})["system"]["foreign_cpu_s"]
            time.sleep(1)
            b = procstat({})["system"]["foreign_cpu_s"]
            if -0.05 < b - a < 0.05:
                return round(time.time() - t0, 1), True
            if time.time() - t0 >= self.a.quiet_wait:
                log(f"  machine busy (outside CPU {b - a:.2f} s/s); measuring anyway after {time.time() - t0:.0f} s")
                return round(time.time() - t0, 1), False

    # --- raw signature cost --------------------------------------------------------------
    def raw_cost(self, rep):
        secs = "1" if self.a.quick else "3"
        out = {}
        for alg, key in (("rsa2048", "rsa2048"), ("ed25519", "ed25519")):
            r = subprocess.run(["openssl", "speed", "-seconds", secs, "-mr", alg], capture_output=True,
                               text=True, timeout=120)
            # -mr result lines end in "<sign/s>:<verify/s>": "+F2:<i>:2048:<sign/s>:<verify/s>" (RSA),
            # "+F6:<i>:253:Ed25519:<sign/s>:<verify/s>" (EdDSA); openssl speed divides by user CPU time
            for line in r.stdout.splitlines():
                if line.startswith(("+F2:", "+F6:")):
                    f = line.split(":")
                    try:
                        out[key] = {"sign_ms": 1000 / float(f[-2]), "verify_ms": 1000 / float(f[-1]),
                                    "sign_per_s": float(f[-2])}
                    except (ValueError, IndexError, ZeroDivisionError):
                        pass
            if key not in out:
                raise RuntimeError(f"cannot parse openssl speed {alg}:\n{r.stdout}\n{r.stderr}")
        # SHA-256 throughput (16 KB blocks): the body-hash floor of any DKIM signer or verifier
        r = subprocess.run(["openssl", "speed", "-seconds", secs, "-mr", "-bytes", "16384", "sha256"],
                           capture_output=True, text=True, timeout=120)
        for line in r.stdout.splitlines():
            if line.startswith("+F:") and ":sha256:" in line:
                try:
                    out["sha256_mb_per_s"] = float(line.split(":")[-1]) / 1e6
                except ValueError:
                    pass
        rec = {"kind": "raw", "rep": rep, "openssl": subprocess.run(["openssl", "version"], capture_output=True,
                                                                   text=True).stdout.strip(), **out}
        self.emit(rec)

    # --- Postfix end to end --------------------------------------------------------------
    def pf(self, *args, check=True):
        return subprocess.run(["postfix", "-c", f"{self.root}/postfix", *args], capture_output=True, text=True,
                              timeout=60, check=check)

    def start_sink(self, dump):
        self.procs.stop("smtp-sink")
        args = ["smtp-sink", "-u", "nobody", "-h", "sink.test", "-m", "512"]
        if dump:
            d = f"{self.root}/dump"
            subprocess.run(["rm", "-rf", d])
            os.makedirs(d)
            os.chown(d, *self._nobody())
            args += ["-d", f"{d}/%H%M%S."]
        p = subprocess.Popen(args + ["127.0.0.1:2626", "1024"], stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.add("smtp-sink", p.pid, p)
        sock_up("inet:127.0.0.1:2626")

    @staticmethod
    def _nobody():
        import pwd
        p = pwd.getpwnam("nobody")
        return p.pw_uid, p.pw_gid

    def log_size(self):
        try:
            return os.path.getsize(self.pflog)
        except OSError:
            return 0

    def log_since(self, off):
        with open(self.pflog, "rb") as f:
            f.seek(off)
            return f.read().decode(errors="replace")

    def wait_sent(self, off, n, max_s):
        end = time.time() + max_s
        while time.time() < end:
            if self.log_since(off).count("status=sent") >= n:
                return True
            time.sleep(0.1)
        return False

    def smtp_source(self, mode, sessions, count, max_s):
        env = self.envelope(mode if mode != "baseline" else "verify")
        f = f"{self.root}/msgs/{env['dir']}-2k.eml"
        return subprocess.run(["timeout", str(max_s), "smtp-source", "-M", env["helo"], "-f", env["mail_from"],
                               "-t", env["rcpt"], "-F", f, "-s", str(sessions), "-m", str(count), "127.0.0.1:2525"],
                              capture_output=True, text=True)

    def postfix_up(self, impl, mode):
        """Start the milters of impl (none for the baseline) and a Postfix using them, with an
        empty queue -> (milter sockets, {label: pid}). postfix_down() undoes it, also after errors."""
        socks, pids = self.start_milters(impl, mode) if impl != "baseline" else ([], {})
        subprocess.run(["postconf", "-c", f"{self.root}/postfix", "-e",
                        "smtpd_milters = " + ", ".join(socks)], check=True, timeout=30)
        subprocess.run(["postsuper", "-c", f"{self.root}/postfix", "-d", "ALL"], capture_output=True, timeout=60)
        self.pf("start")
        self.procs.add("postfix", read_pidfile(f"{self.root}/spool/pid/master.pid"))
        sock_up("inet:127.0.0.1:2525")
        return socks, pids

    def postfix_down(self):
        self.procs.stop("smtp-sink")
        if self.procs.pid("postfix"):
            self.pf("stop", check=False)
            self.procs.stop("postfix")
        self.stop_milters()

    def run_postfix(self, impl, mode, rep):
        """impl: baseline | rmilter | peer; mode: the milter mode (baseline: message direction only)."""
        self.pflog = f"{self.root}/log/postfix.log"
        try:
            _, pids = self.postfix_up(impl, mode)
            # warm-up, delivered to a dumping sink: the delivered headers are the sanity check
            self.start_sink(dump=(rep == 1))
            off = self.log_size()
            r = self.smtp_source(mode, 4, 40, 120)
            if r.returncode != 0 or not self.wait_sent(off, 40, 60):
                raise RuntimeError(f"postfix warm-up ({impl} {mode}) failed: rc={r.returncode} {r.stderr[-500:]}\n"
                                   f"{self.log_since(off)[-2000:]}")
            if rep == 1:
                time.sleep(0.3)
                files = sorted(os.listdir(f"{self.root}/dump"))
                if not files:
                    raise RuntimeError("postfix check: smtp-sink dumped nothing")
                text = open(os.path.join(f"{self.root}/dump", files[0]), errors="replace").read()
                head = text.split("\n\n", 1)[0].split("\r\n\r\n", 1)[0]
                ok = True
                if impl != "baseline":
                    missing, bad = self.check_text(head, mode)
                    # our own Authentication-Results must be there (not just the sender's)
                    ok = not missing and not bad
                with open(os.path.join(self.out, "checks.txt"), "a") as f:
                    f.write(f"===== postfix delivered headers {impl} {mode}: {'OK' if ok else 'FAILED'}\n{head[:4000]}\n\n")
                if not ok:
                    raise RuntimeError(f"postfix check failed for {impl} {mode}: missing={missing} unexpected={bad}\n{head[:3000]}")
                self.start_sink(dump=False)
            time.sleep(0.5)
            qw, quiet = self.quiet_gate()
            lab = {"postfix": [self.procs.pid("postfix")], "sink": [self.procs.pid("smtp-sink")],
                   "nsd": [self.procs.pid("nsd")]}
            for k, v in pids.items():
                lab[k] = [v]
            off = self.log_size()
            c0 = procstat(lab)
            t0 = time.time()
            n = self.a.pf_count
            r = self.smtp_source(mode, self.a.sessions, n, 600)
            t1 = time.time()
            drained = self.wait_sent(off, n, 300 if r.returncode == 0 else 10)
            t2 = time.time()
            c1 = procstat(lab)
            text = self.log_since(off)
            alive = {k: self._alive(v) for k, v in pids.items()}
        finally:
            self.postfix_down()
        d = lambda k: (c1[k]["cpu_s"] - c0[k]["cpu_s"]) if c0.get(k) and c1.get(k) else 0.0
        mil = sum(d(k) for k in pids)
        sent = text.count("status=sent")
        rec = {"kind": "postfix", "size": "2k", "mode": mode, "impl": impl, "rep": rep, "count": n,
               "sessions": self.a.sessions, "smtp_source_rc": r.returncode, "drained": drained, "sent": sent,
               "deferred": text.count("status=deferred"), "bounced": text.count("status=bounced"),
               "milter_reject": text.count("milter-reject"), "milter_errors": len(re.findall(r"warning: .*milter", text)),
               "accept_s": round(t1 - t0, 3), "e2e_s": round(t2 - t0, 3),
               "accept_msgs_per_s": n / (t1 - t0), "e2e_msgs_per_s": n / (t2 - t0),
               "milter_cpu_s": mil, "milter_cpu_ms_per_msg": 1000 * mil / n,
               "cpu_ms_per_msg_by_proc": {k: 1000 * d(k) / n for k in lab},
               "milter_peak_rss_kib": sum((c1[k] or {}).get("hwm_kb", 0) for k in pids),
               "milter_alive_after": alive, "quiet_wait_s": qw, "quiet": quiet, "outside": outside(c0, c1)}
        rec["machine_busy"] = machine_busy(rec["outside"])
        rec["idle_waiting"] = rec["machine_busy"] is not None and rec["machine_busy"] < IDLE_BELOW
        probs = self.rmilter_log_problems(impl)
        rec["rmilter_log_problems"] = len(probs)
        if probs:
            self.failures.append(f"postfix {mode} {impl} rep {rep}: rmilter logged {len(probs)} WARN/ERROR lines, "
                                 f"e.g. {probs[0][:300]}")
        if r.returncode != 0 or not drained or sent < n or rec["milter_reject"] or not all(alive.values()):
            self.failures.append(f"postfix {mode} {impl} rep {rep}: smtp-source rc={r.returncode} drained={drained} "
                                 f"sent={sent}/{n} milter-reject={rec['milter_reject']} alive={alive}")
        self.emit(rec)

    # --- one session: latency per stage ------------------------------------------------
    def run_single(self, impl, mode, rep):
        """milterload with one session (one message at a time, written like Postfix: one write per
        packet, Nagle on): latency per milter stage, p50/p99."""
        socks, pids = self.start_milters(impl, mode)
        try:
            n = 300 if self.a.quick else 2000
            jpath = os.path.join(self.out, "milterload", f"single-2k-{mode}-{impl}-{rep}.json")
            args = self.milterload_args(socks, mode, "2k", pids) + [
                "--sessions", "1", "--count", str(n), "--warmup", "20", "--max-seconds", "30", "--json", jpath]
            r = subprocess.run(args, capture_output=True, text=True, timeout=330)
            if r.returncode != 0 or not os.path.exists(jpath):
                raise RuntimeError(f"milterload failed (rc {r.returncode}): {' '.join(args)}\n{r.stderr[-2000:]}")
            j = json.load(open(jpath))
        finally:
            self.stop_milters()
        lat = {k: {"p50": v.get("p50"), "p99": v.get("p99")} for k, v in j["latency_ms"].items()
               if isinstance(v, dict)}
        rec = {"kind": "single", "size": "2k", "mode": mode, "impl": impl, "rep": rep,
               "messages": j["messages"], "msgs_per_s": j["msgs_per_s"], "latency_ms": lat,
               "errors": j.get("errors", 0)}
        if rec["errors"]:
            self.failures.append(f"single session {mode} {impl} rep {rep}: errors={rec['errors']}")
        self.emit(rec)

    def smtp_single(self, mode, n):
        """n messages, one SMTP session each, one after another (the client writes each command in
        one segment): end-of-message latency (final "." to the 250) per message, in ms."""
        env = self.envelope(mode if mode != "baseline" else "verify")
        data = open(f"{self.root}/msgs/{env['dir']}-2k.eml", "rb").read().replace(b"\r\n", b"\n")
        data = data.replace(b"\n", b"\r\n").replace(b"\r\n.", b"\r\n..")
        if not data.endswith(b"\r\n"):
            data += b"\r\n"
        eom, whole = [], []
        for _ in range(n):
            t0 = time.perf_counter()
            c = socket.create_connection(("127.0.0.1", 2525), timeout=60)
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            f = c.makefile("rb")

            def reply():
                while True:
                    line = f.readline()
                    if not line:
                        raise RuntimeError("smtpd closed the connection")
                    if line[3:4] != b"-":
                        return line
            reply()
            for cmd in (f"EHLO {env['helo']}", f"MAIL FROM:<{env['mail_from']}>", f"RCPT TO:<{env['rcpt']}>", "DATA"):
                c.sendall(cmd.encode() + b"\r\n")
                line = reply()
                if line[:1] not in (b"2", b"3"):
                    raise RuntimeError(f"smtpd answered {cmd!r} with {line!r}")
            t1 = time.perf_counter()
            c.sendall(data + b".\r\n")
            line = reply()
            t2 = time.perf_counter()
            if not line.startswith(b"250"):
                raise RuntimeError(f"smtpd answered the message with {line!r}")
            c.sendall(b"QUIT\r\n")
            reply()
            c.close()
            eom.append(1000 * (t2 - t1))
            whole.append(1000 * (t2 - t0))
        return eom, whole

    def run_single_postfix(self, impl, mode, rep):
        """One SMTP session at a time through Postfix: end-of-message latency p50/p99."""
        self.pflog = f"{self.root}/log/postfix.log"
        n = 100 if self.a.quick else 400
        try:
            self.postfix_up(impl, mode)
            self.start_sink(dump=False)
            self.smtp_single(mode, 10)
            eom, whole = self.smtp_single(mode, n)
        finally:
            self.postfix_down()
        q = lambda v, x: sorted(v)[min(len(v) - 1, int(x * len(v)))]
        rec = {"kind": "single-postfix", "size": "2k", "mode": mode, "impl": impl, "rep": rep, "messages": n,
               "eom_p50_ms": q(eom, 0.5), "eom_p99_ms": q(eom, 0.99), "session_p50_ms": q(whole, 0.5),
               "msgs_per_s": n / (sum(whole) / 1000)}
        self.emit(rec)

    # --- the whole run -------------------------------------------------------------------
    def phase(self, name, fn):
        c0 = procstat({})
        t0 = time.time()
        try:
            fn()
        finally:
            c1 = procstat({})
            rec = {"kind": "phase", "phase": name, "wall_s": round(time.time() - t0, 1), **outside(c0, c1)}
            self.emit(rec)
            self.phases.append(rec)

    def main(self):
        a = self.a
        os.makedirs(os.path.join(self.out, "milterload"), exist_ok=True)
        # the daemons' logs are diagnostics of the latest run only
        for f in os.listdir(f"{self.root}/log"):
            open(os.path.join(self.root, "log", f), "w").close()
        self.start_infra()
        impls = tuple(i for i in IMPLS if i == "peer" or
                      ("inet" if i == "rmilter-inet" else "unix") in a.transports)

        def alone():
            for rep in range(1, a.reps + 1):
                self.raw_cost(rep)
                if a.floor and "2k" in a.sizes:
                    self.run_alone(FLOOR, FLOOR, "2k", rep)
                for size in a.sizes:
                    for mode in a.modes:
                        # interleave, and alternate which implementation goes first
                        order = impls if (rep + a.modes.index(mode)) % 2 else impls[::-1]
                        for impl in order:
                            self.run_alone(impl, mode, size, rep)

        def single():
            for rep in range(1, a.reps + 1):
                if a.floor:
                    self.run_single(FLOOR, FLOOR, rep)
                for mode in a.modes:
                    order = impls if (rep + a.modes.index(mode)) % 2 else impls[::-1]
                    for impl in order:
                        self.run_single(impl, mode, rep)

        def single_postfix():
            for rep in range(1, a.reps + 1):
                self.run_single_postfix("baseline", "baseline", rep)
                if a.floor:
                    self.run_single_postfix(FLOOR, FLOOR, rep)
                    self.run_single_postfix(FLOOR_EOM, FLOOR_EOM, rep)
                for mode in a.modes:
                    order = impls if (rep + a.modes.index(mode)) % 2 else impls[::-1]
                    for impl in order:
                        self.run_single_postfix(impl, mode, rep)
                self.run_single_postfix("baseline", "baseline", rep)

        def postfix():
            # the no-milter baseline opens and closes every repetition (drift shows; its median
            # uses both)
            for rep in range(1, a.reps + 1):
                self.run_postfix("baseline", "baseline", rep)
                if a.floor:
                    self.run_postfix(FLOOR, FLOOR, rep)
                    self.run_postfix(FLOOR_EOM, FLOOR_EOM, rep)
                for mode in a.modes:
                    order = impls if (rep + a.modes.index(mode)) % 2 else impls[::-1]
                    for impl in order:
                        self.run_postfix(impl, mode, rep)
                self.run_postfix("baseline", "baseline", rep)

        try:
            if a.milterload:
                log(f"== milter alone (milterload, {a.sessions} sessions): sizes {' '.join(a.sizes)}, "
                    f"modes {' '.join(a.modes)}, {a.reps} rep(s)")
                self.phase("milter-alone", alone)
                log(f"== one session (milterload --sessions 1, 2k): modes {' '.join(a.modes)}")
                self.phase("single", single)
                if a.domains:
                    log(f"== many domains ({a.domains} signing domains and policies): start, reload, RSS, CPU")
                    self.phase("many-domains", lambda: many_domains.run(
                        self, a.domains, a.reps, log, sock_up=sock_up, mem_kb=_mem_kb))
            else:
                log("== milter alone: skipped (no milterload binary)")
            if a.postfix:
                log("== one SMTP session at a time through Postfix (2k): end-of-message latency")
                self.phase("single-postfix", single_postfix)
                log(f"== through Postfix (2k, smtp-source {a.sessions} sessions x {a.pf_count} msgs)")
                self.phase("postfix", postfix)
        finally:
            self.procs.stop_all()
            with open(os.path.join(self.out, "failures.json"), "w") as f:
                json.dump(self.failures, f, indent=1)


# ---------------------------------------------------------------------------------------------
# report
def med(v):
    v = [x for x in v if x is not None]
    return statistics.median(v) if v else None


def fmt(x, nd=2):
    if x is None:
        return "-"
    if isinstance(x, float) and abs(x) >= 100:
        return f"{x:.0f}"
    return f"{x:.{nd}f}"


def ratio(a, b):
    return a / b if a is not None and b else None


def report(out):
    recs = [json.loads(l) for l in open(os.path.join(out, "raw.jsonl")) if l.strip()]
    meta = json.load(open(os.path.join(out, "meta.json"))) if os.path.exists(os.path.join(out, "meta.json")) else {}
    try:
        failures = json.load(open(os.path.join(out, "failures.json")))
    except (OSError, ValueError):
        failures = ["(run did not finish: no failures.json)"]
    L = []
    p = L.append
    p(f"# rmilter benchmark {meta.get('runid', os.path.basename(out))}")
    p("")
    for k in ("date", "git", "host", "cpu", "ncpu", "kernel", "rmilter", "opendkim", "opendmarc", "postfix", "nsd",
              "args"):
        if k in meta:
            p(f"- {k}: {meta[k]}")
    raws = [r for r in recs if r["kind"] == "raw"]
    rsa_raw = med([r["rsa2048"]["sign_ms"] for r in raws])
    ed_raw = med([r["ed25519"]["sign_ms"] for r in raws])
    sha = med([r.get("sha256_mb_per_s") for r in raws])
    if raws:
        p(f"- raw signature cost ({raws[0]['openssl']}, `openssl speed`, one core, median of {len(raws)}): "
          f"RSA-2048 sign {fmt(rsa_raw, 3)} ms, Ed25519 sign {fmt(ed_raw, 4)} ms")
    if sha:
        p(f"- SHA-256 throughput (`openssl speed -bytes 16384 sha256`): {sha:.0f} MB/s, i.e. hashing a body costs "
          f"{2048 / sha / 1000:.4f} ms (2 KB), {102400 / sha / 1000:.3f} ms (100 KB), {10485760 / sha / 1000:.1f} ms "
          f"(10 MB) of CPU: the floor of any DKIM signer or verifier, before the milter protocol and I/O")
    if meta.get("messages"):
        p("- messages (bytes, LF line ends; the milters see CRLF): " +
          ", ".join(f"{k} {v}" for k, v in meta["messages"].items()))
    p("")

    alone = [r for r in recs if r["kind"] == "alone"]
    grp = {}
    for r in alone:
        grp.setdefault((r["size"], r["mode"], r["impl"]), []).append(r)
    sizes = [s for s in SIZES if any(k[0] == s for k in grp)]
    modes = [m for m in MODES if any(k[1] == m for k in grp)]
    M = {}
    for k, rs in grp.items():
        M[k] = {"msgs_per_s": med([r["msgs_per_s"] for r in rs]), "cpu": med([r["cpu_ms_per_msg"] for r in rs]),
                "p99": med([r["p99_ms"] for r in rs]), "rss": max(r["peak_rss_kib"] for r in rs) / 1024,
                "n": len(rs), "msgs": med([r["messages"] for r in rs]),
                "bad": sum(1 for r in rs if r["errors"] or r["bad_replies"] or not all(r["milter_alive_after"].values())),
                "outside": max(r["outside"]["outside_cpu_s"] for r in rs),
                "busy": sum(1 for r in rs if r["outside"]["outside_cpu_s"] > 0.05 * r["outside"]["window_s"]),
                "machine": med([r.get("machine_busy") for r in rs]),
                "idle": sum(1 for r in rs if r.get("idle_waiting"))}
    if alone:
        sess = alone[0]["sessions"]
        p(f"## Milter alone (milterload, {sess} concurrent sessions; medians over repetitions, peak RSS = max)")
        p("")
        p("peer = OpenDKIM (sign modes); OpenDKIM → OpenDMARC chain (verify). ratio = rmilter / peer.")
        p("")
        p("| size | mode | reps × msgs (rmilter / peer) | msgs/s rmilter | msgs/s peer | ratio | CPU ms/msg rmilter | CPU ms/msg peer | ratio | p99 ms rmilter | p99 ms peer | ratio | peak RSS MiB rmilter | peak RSS MiB peer | ratio | outside CPU s max (rmilter / peer) |")
        p("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for s in sizes:
            for m in modes:
                a, b = M.get((s, m, "rmilter")), M.get((s, m, "peer"))
                if not a and not b:
                    continue
                g = lambda x, k: x[k] if x else None
                flag = lambda x: (f" ({x['bad']} bad)" if x and x["bad"] else "") + (f" ({x['busy']} busy)" if x and x["busy"] else "")
                reps = f"{g(a, 'n') or 0}×{fmt(g(a, 'msgs'), 0)}{flag(a)} / {g(b, 'n') or 0}×{fmt(g(b, 'msgs'), 0)}{flag(b)}"
                p(f"| {s} | {m} | {reps} | {fmt(g(a, 'msgs_per_s'), 0)} | {fmt(g(b, 'msgs_per_s'), 0)} | "
                  f"{fmt(ratio(g(a, 'msgs_per_s'), g(b, 'msgs_per_s')))} | {fmt(g(a, 'cpu'), 3)} | {fmt(g(b, 'cpu'), 3)} | "
                  f"{fmt(ratio(g(a, 'cpu'), g(b, 'cpu')), 3)} | {fmt(g(a, 'p99'), 1)} | {fmt(g(b, 'p99'), 1)} | "
                  f"{fmt(ratio(g(a, 'p99'), g(b, 'p99')))} | {fmt(g(a, 'rss'), 1)} | {fmt(g(b, 'rss'), 1)} | "
                  f"{fmt(ratio(g(a, 'rss'), g(b, 'rss')))} | {fmt(g(a, 'outside'), 1)} / {fmt(g(b, 'outside'), 1)} |")
        p("")
        if any(k[2] == "rmilter-inet" for k in M):
            p(f"rmilter on `{INET}` against rmilter on its unix socket (same run). machine busy = share of all "
              f"CPUs busy during the run; **idle** marks runs below {IDLE_BELOW:.0%} while {sess} sessions kept "
              "messages waiting (time lost to something other than CPU: a transport stall, a lock, a timer).")
            p("")
            p("| size | mode | msgs/s unix | msgs/s inet | inet/unix | CPU ms/msg unix | CPU ms/msg inet | p99 ms unix | p99 ms inet | machine busy unix / inet |")
            p("|---|---|---|---|---|---|---|---|---|---|")
            for s_ in sizes:
                for m in modes:
                    a, b = M.get((s_, m, "rmilter")), M.get((s_, m, "rmilter-inet"))
                    if not a or not b:
                        continue
                    mb = lambda x: (f"{x['machine']:.0%}" if x["machine"] is not None else "?") + \
                        (f" **idle** ({x['idle']})" if x["idle"] else "")
                    p(f"| {s_} | {m} | {fmt(a['msgs_per_s'], 0)} | {fmt(b['msgs_per_s'], 0)} | "
                      f"{fmt(ratio(b['msgs_per_s'], a['msgs_per_s']))} | {fmt(a['cpu'], 3)} | {fmt(b['cpu'], 3)} | "
                      f"{fmt(a['p99'], 1)} | {fmt(b['p99'], 1)} | {mb(a)} / {mb(b)} |")
            p("")

    single = [r for r in recs if r["kind"] == "single"]
    if single:
        S = {}
        for r in single:
            S.setdefault((r["mode"], r["impl"]), []).append(r)
        stages = [st for st in ("connect", "helo", "mail", "rcpt", "data", "header", "eoh", "body", "eom", "total")
                  if any(st in r["latency_ms"] and r["latency_ms"][st].get("p50") is not None for r in single)]
        p("## One session (milterload --sessions 1, 2 KB, written like Postfix: one write per packet, Nagle on)")
        p("")
        p("Latency per milter stage, p50 / p99 ms (medians over repetitions); a stage rmilter answers "
          "with no reply shows no figure, its time goes to the next answered stage.")
        p("")
        p("| mode | impl | msgs/s | " + " | ".join(stages) + " |")
        p("|---|---|---|" + "---|" * len(stages))
        for m, impl in [(FLOOR, FLOOR)] + [(m, i) for m in MODES for i in IMPLS]:
            rs = S.get((m, impl))
            if rs:
                cell = lambda st: (f"{fmt(med([r['latency_ms'].get(st, {}).get('p50') for r in rs]), 2)} / "
                                   f"{fmt(med([r['latency_ms'].get(st, {}).get('p99') for r in rs]), 2)}")
                p(f"| {m} | {impl} | {fmt(med([r['msgs_per_s'] for r in rs]), 0)} | " +
                  " | ".join(cell(st) for st in stages) + " |")
        p("")

    sp = [r for r in recs if r["kind"] == "single-postfix"]
    SP = {}
    for r in sp:
        SP.setdefault((r["mode"], r["impl"]), []).append(r)
    if sp:
        bl = med([r["eom_p50_ms"] for r in SP.get(("baseline", "baseline"), [])])
        p("## One SMTP session at a time through Postfix (2 KB; end-of-message latency: final \".\" to 250)")
        p("")
        p("| mode | impl | reps × msgs | EOM p50 ms | EOM p99 ms | p50 over the no-milter baseline ms | msgs/s (whole sessions) |")
        p("|---|---|---|---|---|---|---|")
        for m in ("baseline", FLOOR, FLOOR_EOM) + MODES:
            for impl in ("baseline", FLOOR, FLOOR_EOM) + IMPLS:
                rs = SP.get((m, impl))
                if not rs:
                    continue
                e50 = med([r["eom_p50_ms"] for r in rs])
                p(f"| {m} | {impl} | {len(rs)}×{rs[0]['messages']} | {fmt(e50, 2)} | "
                  f"{fmt(med([r['eom_p99_ms'] for r in rs]), 2)} | "
                  f"{fmt(e50 - bl, 2) if impl != 'baseline' and bl is not None else '-'} | "
                  f"{fmt(med([r['msgs_per_s'] for r in rs]), 0)} |")
        p("")

    pfr = [r for r in recs if r["kind"] == "postfix"]
    P = {}
    for r in pfr:
        P.setdefault((r["mode"], r["impl"]), []).append(r)
    base = med([r["e2e_msgs_per_s"] for r in P.get(("baseline", "baseline"), [])])

    def paired(rs):
        """Median over runs of e2e / the mean of the same repetition's baselines (which open
        and close it): the host's speed drifts between repetitions, so a run is compared with
        the baselines measured minutes from it, not with the median of all of them."""
        vals = []
        for r in rs:
            bs = [b["e2e_msgs_per_s"] for b in P.get(("baseline", "baseline"), []) if b["rep"] == r["rep"]]
            if bs:
                vals.append(r["e2e_msgs_per_s"] / (sum(bs) / len(bs)))
        return med(vals) if vals else None
    if pfr:
        n0 = pfr[0]
        p(f"## Through Postfix (2 KB; smtp-source, {n0['sessions']} sessions → Postfix smtpd → milter(s) → "
          f"qmgr/smtp → smtp-sink; medians)")
        p("")
        p("The ratio is paired: each run against the mean of its own repetition's baselines, then the median.")
        p("")
        p(f"machine busy = share of all CPUs busy during the run (median); **idle** marks runs below "
          f"{IDLE_BELOW:.0%} while {n0['sessions']} sessions kept messages waiting.")
        p("")
        p("milter / Postfix CPU = the milter's CPU over Postfix's in the same run (median over runs): the "
          "host's speed moves both, so this drifts less between runs than either.")
        p("")
        p("| mode | impl | reps × msgs | e2e msgs/s | ratio vs no-milter baseline | milter CPU ms/msg | Postfix CPU ms/msg | milter / Postfix CPU | milter peak RSS MiB | outside CPU s max | machine busy |")
        p("|---|---|---|---|---|---|---|---|---|---|---|")
        for m in ("baseline", FLOOR, FLOOR_EOM) + MODES:
            for impl in ("baseline", FLOOR, FLOOR_EOM) + IMPLS:
                rs = P.get((m, impl))
                if not rs:
                    continue
                bad = sum(1 for r in rs if r["sent"] < r["count"] or r["smtp_source_rc"] or r["milter_reject"]
                          or not all(r["milter_alive_after"].values()))
                busy = sum(1 for r in rs if r["outside"]["outside_cpu_s"] > 0.05 * r["outside"]["window_s"])
                e2e = med([r["e2e_msgs_per_s"] for r in rs])
                flag = (f" ({bad} bad)" if bad else "") + (f" ({busy} busy)" if busy else "")
                p(f"| {m} | {impl} | {len(rs)}×{rs[0]['count']}{flag} | {fmt(e2e, 0)} | {fmt(paired(rs))} | "
                  f"{fmt(med([r['milter_cpu_ms_per_msg'] for r in rs]), 3) if impl != 'baseline' else '-'} | "
                  f"{fmt(med([r['cpu_ms_per_msg_by_proc'].get('postfix') for r in rs]), 3)} | "
                  f"{fmt(med([ratio(r['milter_cpu_ms_per_msg'], r['cpu_ms_per_msg_by_proc'].get('postfix')) for r in rs]), 3) if impl != 'baseline' else '-'} | "
                  f"{fmt(max(r['milter_peak_rss_kib'] for r in rs) / 1024, 1) if impl != 'baseline' else '-'} | "
                  f"{fmt(max(r['outside']['foreign_cpu_s'] for r in rs), 1)} | "
                  f"{fmt(100 * med([r.get('machine_busy') for r in rs]), 0) if med([r.get('machine_busy') for r in rs]) is not None else '?'} %"
                  f"{' **idle** (' + str(sum(1 for r in rs if r.get('idle_waiting'))) + ')' if any(r.get('idle_waiting') for r in rs) else ''} |")
        p("")

    floor_section(p, M, SP, P, paired)

    # targets
    T = []
    def target(ok, text):
        T.append(f"- **{'PASS' if ok else 'FAIL'}** {text}" if ok is not None else f"- **n/a** {text}")
    for s in sizes:
        a, b = M.get((s, "verify", "rmilter")), M.get((s, "verify", "peer"))
        if a and b:
            r_ = ratio(a["cpu"], b["cpu"])
            text = (f"verify {s}: milter CPU/msg rmilter {fmt(a['cpu'], 3)} ms / OpenDKIM+OpenDMARC "
                    f"{fmt(b['cpu'], 3)} ms = {fmt(r_, 3)}")
            if s == "2k":
                target(r_ <= 0.2, text + " (target ≤ 0.200)")
            else:
                T.append(f"- info: {text} (the target is for 2 KB mail)")
    for s in sizes:
        a, b = M.get((s, "sign-ed25519", "rmilter")), M.get((s, "sign-ed25519", "peer"))
        if a and b:
            r_ = ratio(a["cpu"], b["cpu"])
            text = (f"Ed25519 sign {s}: milter CPU/msg rmilter {fmt(a['cpu'], 3)} ms / OpenDKIM "
                    f"{fmt(b['cpu'], 3)} ms = {fmt(r_, 3)}")
            if s == "2k":
                target(r_ <= 1 / 6, text + " (target ≤ 0.167)")
            else:
                T.append(f"- info: {text} (the target is for 2 KB mail)")
    for s in sizes:
        a = M.get((s, "sign-rsa", "rmilter"))
        if a and rsa_raw:
            r_ = a["cpu"] / rsa_raw
            if s == "2k":
                target(r_ <= 1.5, f"RSA-2048 sign {s}: rmilter CPU/msg {fmt(a['cpu'], 3)} ms / raw RSA-2048 "
                       f"signature {fmt(rsa_raw, 3)} ms = {fmt(r_)}× (target ≤ 1.5×)")
            else:
                T.append(f"- info: RSA-2048 sign {s}: rmilter CPU/msg {fmt(a['cpu'], 3)} ms = {fmt(r_)}× the raw "
                         f"RSA-2048 signature (body hashing included; the 1.5× target is for 2 KB)")
            b = M.get((s, "sign-rsa", "peer"))
            if b and s == "2k":
                T.append(f"- info: RSA-2048 sign {s}: OpenDKIM CPU/msg {fmt(b['cpu'], 3)} ms = "
                         f"{fmt(b['cpu'] / rsa_raw)}× the raw signature; rmilter/OpenDKIM = {fmt(ratio(a['cpu'], b['cpu']), 3)}")
    for (m, lim), impl in [(x, i) for i in ("rmilter", "rmilter-inet")
                           for x in (("verify", 0.75), ("sign-ed25519", 0.75), ("sign-rsa", 0.65))]:
        rs = P.get((m, impl))
        if rs and base:
            e, q = med([r["e2e_msgs_per_s"] for r in rs]), paired(rs)
            pq = paired(P.get((m, "peer"), []))
            target(q is not None and q >= lim, f"Postfix 2k {m}: e2e {impl} {fmt(e, 0)} msgs/s vs its "
                   f"repetitions' no-milter baselines (median {fmt(base, 0)} msgs/s) = {fmt(q)} "
                   f"(paired median; target ≥ {lim}; peer: {fmt(pq)})")
    fq, fqe = paired(P.get((FLOOR, FLOOR), [])), paired(P.get((FLOOR_EOM, FLOOR_EOM), []))
    if fq is not None:
        T.append(f"- info: floor-milter (the milter protocol and nothing else) through Postfix: e2e {fmt(fq)} of the "
                 f"no-milter baseline (paired median): what the milter protocol alone leaves on this machine"
                 + (f"; {fmt(fqe)} when it skips every event but end of message" if fqe is not None else ""))
    r2 = [(k, v) for k, v in M.items() if k[0] == "2k" and k[2] == "rmilter"]
    if r2:
        worst = max(r2, key=lambda kv: kv[1]["rss"])
        pf_rss = [r["milter_peak_rss_kib"] / 1024 for r in pfr if r["impl"] == "rmilter"]
        extra = f"; through Postfix max {fmt(max(pf_rss), 1)} MiB" if pf_rss else ""
        target(worst[1]["rss"] <= 12, f"peak RSS, 2 KB, {alone[0]['sessions']} sessions: rmilter max "
               f"{fmt(worst[1]['rss'], 1)} MiB ({worst[0][1]}){extra} (target ≤ 12 MiB)")
    for m in modes:
        a, b = M.get(("10m", m, "rmilter")), M.get(("10m", m, "peer"))
        if a or b:
            T.append(f"- stated: peak RSS, {alone[0]['sessions']} concurrent 10 MB messages, {m}: rmilter "
                     f"{fmt(a['rss'] if a else None, 1)} MiB, peer {fmt(b['rss'] if b else None, 1)} MiB")
    many_domains.report(recs, p, med, fmt)
    if T:
        p("## Targets")
        p("")
        L.extend(T)
        p("")

    ph = [r for r in recs if r["kind"] == "phase"]
    if ph:
        p("## How busy the machine was")
        p("")
        p("outside CPU = CPU seconds used by processes outside the benchmark's network namespace (other work "
          "on this machine); it can drop below zero when a big foreign process exits, so unattributed = "
          "machine busy - benchmark - kernel threads (foreign work + interrupt time) is given too. A run is "
          "flagged busy when its outside CPU exceeds 5 % of one CPU over its window (2 CPUs = 200 %).")
        p("")
        p("| phase | wall s | machine busy CPU s | benchmark CPU s | outside CPU s (foreign processes) | unattributed CPU s | kernel threads CPU s | steal s | runs flagged busy |")
        p("|---|---|---|---|---|---|---|---|---|")
        for r in ph:
            kind = {"milter-alone": "alone", "single": "single", "single-postfix": "single-postfix"}.get(r["phase"], "postfix")
            runs = [x for x in recs if x["kind"] == kind]
            busy = sum(1 for x in runs if "outside" in x and x["outside"]["outside_cpu_s"] > 0.05 * x["outside"]["window_s"])
            p(f"| {r['phase']} | {r['wall_s']} | {r['busy_cpu_s']} | {r['bench_cpu_s']} | {r['foreign_cpu_s']} | "
              f"{r['unattributed_cpu_s']} | {r['kthread_cpu_s']} | {r['steal_s']} | {busy} of {len(runs)} |")
        p("")
    p("## Failures")
    p("")
    if failures:
        for f in failures:
            p(f"- {f}")
    else:
        p("none (every milter run: no errors, no reject/tempfail/discard replies, milters alive afterwards, "
          "no WARN/ERROR in rmilter's log; every Postfix run: all messages delivered, no milter-reject)")
    p("")
    if alone or pfr:
        p("## Per run")
        p("")
        p("| phase | size | mode | impl | rep | msgs | msgs/s | milter CPU ms/msg (per process) | p99 ms | peak RSS MiB | outside CPU s / window s | quiet wait s |")
        p("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for r in alone:
            per = ", ".join(f"{k} {fmt(v, 3)}" for k, v in r["cpu_ms_per_msg_by_proc"].items() if v is not None)
            p(f"| alone | {r['size']} | {r['mode']} | {r['impl']} | {r['rep']} | {r['messages']} | {fmt(r['msgs_per_s'], 0)} | "
              f"{fmt(r['cpu_ms_per_msg'], 3)} ({per}) | {fmt(r['p99_ms'], 1)} | {fmt(r['peak_rss_kib'] / 1024, 1)} | "
              f"{r['outside']['foreign_cpu_s']} / {r['outside']['window_s']:.0f} | {r['quiet_wait_s']} |")
        for r in pfr:
            per = ", ".join(f"{k} {fmt(v, 3)}" for k, v in r["cpu_ms_per_msg_by_proc"].items())
            p(f"| postfix | 2k | {r['mode']} | {r['impl']} | {r['rep']} | {r['sent']}/{r['count']} | {fmt(r['e2e_msgs_per_s'], 0)} | "
              f"{fmt(r['milter_cpu_ms_per_msg'], 3)} ({per}) | - | {fmt(r['milter_peak_rss_kib'] / 1024, 1)} | "
              f"{r['outside']['foreign_cpu_s']} / {r['outside']['window_s']:.0f} | {r['quiet_wait_s']} |")
        p("")
    text = "\n".join(L) + "\n"
    open(os.path.join(out, "report.md"), "w").write(text)
    return text


# ---------------------------------------------------------------------------------------------
def floor_section(p, M, SP, P, paired):
    """rmilter against floor-milter: what each message costs beyond the milter protocol, alone and
    through Postfix, and how close rmilter comes to the end-to-end rate of a milter doing nothing."""
    fa = M.get(("2k", FLOOR, FLOOR))
    fp = P.get((FLOOR, FLOOR), [])
    if not fa and not fp:
        return
    cpu = lambda rs: med([r["milter_cpu_ms_per_msg"] for r in rs]) if rs else None
    eom = lambda rs: med([r["eom_p50_ms"] for r in rs]) if rs else None
    fcpu, fq = cpu(fp), (paired(fp) if fp else None)
    feom = eom(SP.get((FLOOR, FLOOR)))
    p("## Above the floor (floor-milter: the same listener, protocol stack and negotiation as rmilter, "
      "one inserted header, no other work; 2 KB)")
    p("")
    p("above = rmilter minus floor-milter in the same run. share = rmilter's end-to-end ratio over "
      "floor-milter's: 1.00 would be a milter whose own work costs nothing through Postfix. "
      "floor-eom = floor-milter with every event but end of message skipped (no headers, no body).")
    p("")
    p("| mode | impl | alone CPU ms/msg | above | through Postfix CPU ms/msg | above | e2e ratio vs no milter | share of the floor's | one-session EOM p50 ms | above |")
    p("|---|---|---|---|---|---|---|---|---|---|")
    d = lambda a, b: fmt(a - b, 3) if a is not None and b is not None else "-"
    p(f"| {FLOOR} | floor-milter | {fmt(fa['cpu'] if fa else None, 3)} | - | {fmt(fcpu, 3)} | - | {fmt(fq)} | {'1.00' if fq is not None else '-'} | "
      f"{fmt(feom, 2)} | - |")
    fe = P.get((FLOOR_EOM, FLOOR_EOM), [])
    if fe:
        q, e = paired(fe), eom(SP.get((FLOOR_EOM, FLOOR_EOM)))
        p(f"| {FLOOR_EOM} | floor-milter --only-eom | - | - | {fmt(cpu(fe), 3)} | {d(cpu(fe), fcpu)} | {fmt(q)} | "
          f"{fmt(ratio(q, fq))} | {fmt(e, 2)} | {d(e, feom)} |")
    for m in MODES:
        for impl in ("rmilter", "rmilter-inet"):
            a, rs = M.get(("2k", m, impl)), P.get((m, impl), [])
            if not a and not rs:
                continue
            ac, pc, q, e = a["cpu"] if a else None, cpu(rs), (paired(rs) if rs else None), eom(SP.get((m, impl)))
            p(f"| {m} | {impl} | {fmt(ac, 3)} | {d(ac, fa['cpu'] if fa else None)} | {fmt(pc, 3)} | {d(pc, fcpu)} | "
              f"{fmt(q)} | {fmt(ratio(q, fq))} | {fmt(e, 2)} | {d(e, feom)} |")
    p("")


def syslog_sink(path, out):
    """A /dev/log sink, like rsyslog writing to a file: the incumbents log every message."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    os.chmod(path, 0o666)
    f = open(out, "ab", buffering=65536)
    signal.signal(signal.SIGTERM, lambda *_: (f.flush(), os._exit(0)))
    while True:
        f.write(s.recv(65536) + b"\n")


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--root", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--rmilter", required=True)
    r.add_argument("--milterload", default="")
    r.add_argument("--floor", default="", help="floor-milter binary (none: no floor rows)")
    r.add_argument("--reps", type=int, default=3)
    r.add_argument("--sizes", default="2k 100k 10m")
    r.add_argument("--modes", default="verify sign-ed25519 sign-rsa")
    r.add_argument("--sessions", type=int, default=20)
    r.add_argument("--seconds", type=int, default=10, help="cap per milter-alone run (2k, 100k)")
    r.add_argument("--pf-count", type=int, default=3000)
    r.add_argument("--quiet-wait", type=int, default=5)
    r.add_argument("--no-postfix", dest="postfix", action="store_false")
    r.add_argument("--transports", default="unix inet", help="rmilter's sockets: unix, inet or both")
    r.add_argument("--quick", action="store_true")
    r.add_argument("--domains", type=int, default=0, help="many-domains rows with N domains (0: none)")
    rp = sub.add_parser("report")
    rp.add_argument("dir")
    ps = sub.add_parser("procstat")
    ps.add_argument("labels", nargs="*")
    sk = sub.add_parser("syslog-sink")
    sk.add_argument("sock")
    sk.add_argument("file")
    a = ap.parse_args()
    if a.cmd == "report":
        sys.stdout.write(report(a.dir))
        return
    if a.cmd == "procstat":
        print(json.dumps(procstat({l.split("=")[0]: [int(x) for x in l.split("=")[1].split(",") if x]
                                   for l in a.labels})))
        return
    if a.cmd == "syslog-sink":
        syslog_sink(a.sock, a.file)
        return
    a.sizes = a.sizes.split()
    a.transports = a.transports.split()
    if not a.transports or any(t not in ("unix", "inet") for t in a.transports):
        sys.exit(f"unknown transport in {a.transports} (unix, inet)")
    a.modes = a.modes.split()
    bad = [s for s in a.sizes if s not in SIZES] + [m for m in a.modes if m not in MODES]
    if bad:
        sys.exit(f"unknown size/mode: {bad} (sizes: {SIZES}, modes: {MODES})")
    # hard bounds on every load loop
    if not (1 <= a.reps <= 10 and 1 <= a.sessions <= 100 and 1 <= a.seconds <= 120 and 100 <= a.pf_count <= 20000
            and 0 <= a.quiet_wait <= 300 and 0 <= a.domains <= 100000):
        sys.exit("bounds: 1<=reps<=10, 1<=sessions<=100, 1<=seconds<=120, 100<=pf-count<=20000, quiet-wait<=300, "
                 "domains<=100000")
    a.milterload = a.milterload if a.milterload and os.access(a.milterload, os.X_OK) else ""
    a.floor = a.floor if a.floor and os.access(a.floor, os.X_OK) else ""
    subreaper()
    b = Bench(a)

    def on_signal(signum, _frame):
        raise SystemExit(128 + signum)
    for sg in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sg, on_signal)
    rc = 0
    try:
        b.main()
    except Exception as e:  # noqa: BLE001 -- reported, then the report of what was measured
        log(f"bench.py: ERROR: {e}")
        b.failures.append(f"aborted: {str(e)[:2000]}")
        with open(os.path.join(a.out, "failures.json"), "w") as f:
            json.dump(b.failures, f, indent=1)
        rc = 1
    print(report(a.out), flush=True)
    if b.failures:
        rc = rc or 3
    sys.exit(rc)


if __name__ == "__main__":
    main()
