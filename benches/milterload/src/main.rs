//! milterload: a milter load generator. It replays RFC 5322 messages over N concurrent
//! milter sessions to any milter socket (unix or inet, loopback only) the way Postfix 3.7
//! does — connect, helo, mail, rcpt, data, headers, end of headers, body chunks, end of
//! message, with Postfix's default macros and option negotiation — optionally through a
//! chain of milters in order as `smtpd_milters` would, and reports messages/s, latency
//! p50/p99/max per stage, errors, replies by kind, modifications, and the CPU seconds and
//! peak RSS of given pids. Bounded in count (≤ 1,000,000 messages) and time (--max-seconds).
//!
//! Why the protocol is written by hand (src/wire.rs, src/session.rs) rather than taken from
//! a crate: the Rust milter crates are milter *servers* (indymilter, milter), and the MTA-side
//! ones are test helpers — `indymilter-test` drives indymilter-based milters only, and
//! `miltr-client` calls itself "relatively barebone … an example client to mess around and
//! test behaviour with": it turns any non-continue reply into an error, has no per-stage
//! timing, does not send the SMTP stages' macros the way Postfix does (including the macros
//! before every header and body chunk), and pulls an async stack. A load generator has to
//! imitate Postfix's milter8.c exactly (offered flags, NR_* replies not awaited, NO* events
//! still preceded by their macros, SMFIR_SKIP/PROGRESS, the space after the colon, LF-folded
//! header values, 65535-byte body chunks, ABORT between transactions, chain order and
//! edits), and time each step; the protocol is small enough that owning it is cheaper.

mod message;
mod procs;
mod session;
mod wire;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::{json, Map, Value};

use message::Message;
use session::{ClientAddr, Endpoint, MilterSpec, Options, Outcome, Session, LAT_STAGES};
use wire::Stage;

/// println! that does not panic when stdout is a closed pipe (`milterload ... | head`).
macro_rules! say {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

const MAX_SESSIONS: u32 = 500;
const MAX_COUNT: u64 = 1_000_000;
const MAX_SECONDS: u64 = 7200;

/// Milter load generator: replays messages over concurrent milter sessions like Postfix.
///
/// Each session connects to every milter of the chain (in --milter order, like
/// smtpd_milters), negotiates as Postfix 3.7 does (protocol 6, all actions, all SMFIP_NO*,
/// SMFIP_NR_*, SKIP, RCPT_REJ and HDR_LEADSPC offered; the milter's answer honoured), sends
/// connect and helo, then --per-connection transactions (MAIL, RCPT, DATA, each header,
/// EOH, body in --chunk byte chunks with CRLF line ends, EOM; SMFIC_ABORT after each, as
/// smtpd's mail_reset does), then QUIT. Macros are Postfix's default lists with the values
/// j=mx.example.test, v="Postfix 3.7.11", _="NAME [IP]", {daemon_name}, i (a fresh queue id
/// per message), {mail_addr}, {rcpt_addr}, {auth_type}/{auth_authen} with --auth; a milter
/// that sends its own macro lists at negotiation gets those (also {client_addr},
/// {client_name}, {client_ptr}, {client_port}). Header values go out as Postfix sends them:
/// folded lines joined by "\n" and, unless the milter asked for SMFIP_HDR_LEADSPC, one
/// space after the colon removed. A milter's edits (headers, body) are applied before the
/// next milter of the chain sees the message, as cleanup does. Reject, tempfail and discard
/// end the transaction for the rest of the chain and are counted by kind; errors are
/// connection failures, protocol errors, timeouts and unexpected replies.
///
/// Latency per stage is wall clock from sending the command to its reply, summed over the
/// chain ("connect" includes the socket connect and option negotiation; stages whose
/// replies the milter switched off with SMFIP_NR_* are counted as "no reply", and their
/// time shows up in the next answered stage). "total" is connect (or MAIL, for a later
/// message on the same connection) to the final reply.
///
/// Exit status: 0 when there were no errors and at least one message (or a check passed);
/// 1 on errors or when nothing was measured; 2 on bad arguments.
#[derive(Parser, Debug)]
#[command(name = "milterload", version, verbatim_doc_comment)]
struct Cli {
    /// Milter socket: unix:/abs/path, local:/abs/path, inet:127.0.0.1:PORT,
    /// inet:[::1]:PORT, inet6:[::1]:PORT, inet:localhost:PORT or inet:PORT@HOST.
    /// Repeat for a chain, in order. Only loopback addresses are accepted.
    #[arg(long = "milter", value_name = "SOCKET", required = true)]
    milters: Vec<String>,

    /// RFC 5322 message file (LF or CRLF line ends); repeat for several, used round-robin.
    #[arg(long = "message", value_name = "FILE", required = true)]
    messages: Vec<PathBuf>,

    /// Concurrent milter sessions (1..=500).
    #[arg(long, default_value_t = 20)]
    sessions: u32,

    /// Measured messages (1..=1000000).
    #[arg(long, default_value_t = 1000)]
    count: u64,

    /// Messages sent first and not measured (not in latency, CPU or RSS).
    #[arg(long, default_value_t = 0)]
    warmup: u64,

    /// Stop starting messages after this many seconds (warm-up included; messages in
    /// flight finish, bounded by --timeout-ms), report what was done and say it stopped
    /// early (1..=7200).
    #[arg(long = "max-seconds", default_value_t = 300)]
    max_seconds: u64,

    /// Messages per milter connection; K>1 sends SMFIC_ABORT and a new MAIL between them,
    /// as Postfix does for several transactions in one SMTP session.
    #[arg(long = "per-connection", value_name = "K", default_value_t = 1)]
    per_connection: u32,

    /// Client address in the connect information and macros: an IPv4/IPv6 address
    /// (family '4'/'6'), or unix:/path for a local client (family 'L', port 0).
    #[arg(long = "client-ip", value_name = "IP", default_value = "127.0.0.1")]
    client_ip: String,

    /// Client host name in the connect information.
    #[arg(long = "client-name", default_value = "localhost")]
    client_name: String,

    /// HELO/EHLO name.
    #[arg(long, default_value = "client.example.test")]
    helo: String,

    /// Envelope sender; default: the address in the message's From: header; "" sends the
    /// null sender <>.
    #[arg(long = "mail-from", value_name = "ADDR")]
    mail_from: Option<String>,

    /// Envelope recipient (repeatable).
    #[arg(
        long = "rcpt",
        value_name = "ADDR",
        default_value = "postmaster@example.test"
    )]
    rcpts: Vec<String>,

    /// SASL-authenticated user: sets {auth_type}=PLAIN {auth_authen}=USER in the MAIL
    /// macros (outbound submission).
    #[arg(long, value_name = "USER")]
    auth: Option<String>,

    /// {daemon_name} macro at connect.
    #[arg(long = "daemon-name", value_name = "NAME", default_value = "smtpd")]
    daemon_name: String,

    /// Extra macro, always sent at that stage to every milter:
    /// STAGE:NAME=VALUE with STAGE in connect|helo|mail|rcpt|data|eoh|eom (repeatable).
    #[arg(long = "macro", value_name = "STAGE:NAME=VALUE")]
    macros: Vec<String>,

    /// Body chunk size in bytes (1..=65535; Postfix uses 65535).
    #[arg(long, value_name = "BYTES", default_value_t = 65535)]
    chunk: usize,

    /// Per-reply timeout in milliseconds; a timeout counts as an error.
    #[arg(long = "timeout-ms", value_name = "T", default_value_t = 30000)]
    timeout_ms: u64,

    /// Set TCP_NODELAY on inet milter sockets and write everything queued before a reply
    /// in one write. Without it milterload writes like Postfix: one write per milter packet,
    /// Nagle's algorithm left on (Postfix never sets TCP_NODELAY), so a milter whose side
    /// delays its ACKs shows the stall Postfix would see.
    #[arg(long = "tcp-nodelay")]
    tcp_nodelay: bool,

    /// Processes to measure: LABEL=PID[,PID...] (repeatable). Reports CPU seconds
    /// (utime+stime of the processes, their threads and descendants) during the measured
    /// phase, CPU ms per message, and peak RSS (VmHWM after a reset via clear_refs when
    /// permitted, and VmRSS sampled every 50 ms; several pids are summed per sample).
    #[arg(long = "pid", value_name = "LABEL=PID[,PID...]")]
    pids: Vec<String>,

    /// Write the result as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,

    /// Send one message, print the negotiation, every reply and every modification each
    /// milter returned, and the final result; exit 0 if all replies were accept/continue.
    #[arg(long)]
    check: bool,
}

/// Parse a milter socket spec; refuse anything not on loopback.
fn parse_milter(spec: &str) -> Result<MilterSpec, String> {
    let (kind, rest) = spec
        .split_once(':')
        .ok_or_else(|| format!("milter {spec:?}: expected unix:/path or inet:HOST:PORT"))?;
    let endpoint = match kind {
        "unix" | "local" => {
            let p = PathBuf::from(rest);
            if !p.is_absolute() {
                return Err(format!("milter {spec:?}: socket path must be absolute"));
            }
            Endpoint::Unix(p)
        }
        "inet" | "inet6" => {
            // Postfix form HOST:PORT (HOST may be [v6]); Sendmail form PORT@HOST.
            let (host, port) = if let Some((port, host)) = rest.split_once('@') {
                (host, port)
            } else {
                rest.rsplit_once(':')
                    .ok_or_else(|| format!("milter {spec:?}: expected inet:HOST:PORT"))?
            };
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let port: u16 = port
                .parse()
                .map_err(|_| format!("milter {spec:?}: bad port {port:?}"))?;
            let addrs: Vec<SocketAddr> = (host, port)
                .to_socket_addrs()
                .map_err(|e| format!("milter {spec:?}: cannot resolve {host:?}: {e}"))?
                .filter(|a| kind == "inet" || a.is_ipv6())
                .collect();
            if addrs.is_empty() {
                return Err(format!("milter {spec:?}: no address for {host:?}"));
            }
            if let Some(a) = addrs.iter().find(|a| !a.ip().is_loopback()) {
                return Err(format!(
                    "milter {spec:?}: {} is not a loopback address; milterload only \
                     sends to 127.0.0.0/8 or ::1",
                    a.ip()
                ));
            }
            Endpoint::Inet(addrs[0])
        }
        other => {
            return Err(format!(
                "milter {spec:?}: unknown transport {other:?} (use unix, local, inet or inet6)"
            ))
        }
    };
    Ok(MilterSpec {
        spec: spec.to_string(),
        endpoint,
    })
}

fn parse_macro(s: &str) -> Result<(Stage, String, String), String> {
    let (stage, nv) = s
        .split_once(':')
        .ok_or_else(|| format!("--macro {s:?}: expected STAGE:NAME=VALUE"))?;
    let stage = Stage::parse(stage).ok_or_else(|| {
        format!("--macro {s:?}: stage must be one of connect|helo|mail|rcpt|data|eoh|eom")
    })?;
    let (name, value) = nv
        .split_once('=')
        .ok_or_else(|| format!("--macro {s:?}: expected NAME=VALUE"))?;
    if name.is_empty() {
        return Err(format!("--macro {s:?}: empty macro name"));
    }
    Ok((stage, name.to_string(), value.to_string()))
}

struct Config {
    opts: Options,
    messages: Vec<Message>,
    watches: Vec<procs::Watch>,
}

fn build(cli: &Cli) -> Result<Config, String> {
    if cli.sessions == 0 || cli.sessions > MAX_SESSIONS {
        return Err(format!("--sessions must be 1..={MAX_SESSIONS}"));
    }
    if cli.count == 0 || cli.count > MAX_COUNT {
        return Err(format!("--count must be 1..={MAX_COUNT}"));
    }
    if cli.warmup > MAX_COUNT {
        return Err(format!("--warmup must be at most {MAX_COUNT}"));
    }
    if cli.max_seconds == 0 || cli.max_seconds > MAX_SECONDS {
        return Err(format!("--max-seconds must be 1..={MAX_SECONDS}"));
    }
    if cli.per_connection == 0 || cli.per_connection > 100_000 {
        return Err("--per-connection must be 1..=100000".into());
    }
    if cli.chunk == 0 || cli.chunk > 65535 {
        return Err("--chunk must be 1..=65535".into());
    }
    if cli.timeout_ms == 0 || cli.timeout_ms > 600_000 {
        return Err("--timeout-ms must be 1..=600000".into());
    }
    if cli.rcpts.is_empty() {
        return Err("at least one --rcpt is needed".into());
    }
    let milters = cli
        .milters
        .iter()
        .map(|m| parse_milter(m))
        .collect::<Result<Vec<_>, _>>()?;
    let mut extra_macros: BTreeMap<Stage, Vec<(String, String)>> = BTreeMap::new();
    for m in &cli.macros {
        let (stage, n, v) = parse_macro(m)?;
        extra_macros.entry(stage).or_default().push((n, v));
    }
    let mut messages = Vec::new();
    for p in &cli.messages {
        let bytes = std::fs::read(p).map_err(|e| format!("message {}: {e}", p.display()))?;
        let m = Message::parse(&bytes).map_err(|e| format!("message {}: {e}", p.display()))?;
        if cli.mail_from.is_none() && m.author_address().is_none() {
            return Err(format!(
                "message {}: no address in From:; give --mail-from",
                p.display()
            ));
        }
        messages.push(m);
    }
    let client = match cli.client_ip.strip_prefix("unix:") {
        Some(p) if !p.is_empty() => ClientAddr::Unix(p.to_string()),
        _ => ClientAddr::Ip(cli.client_ip.parse::<IpAddr>().map_err(|_| {
            format!(
                "--client-ip {:?}: not an IP address or unix:/path",
                cli.client_ip
            )
        })?),
    };
    let watches = cli
        .pids
        .iter()
        .map(|s| procs::parse_watch(s))
        .collect::<Result<Vec<_>, _>>()?;
    for w in &watches {
        for p in &w.pids {
            if procs::stat_ticks(*p).is_none() {
                return Err(format!("--pid {}: no process {p}", w.label));
            }
        }
    }
    Ok(Config {
        opts: Options {
            milters,
            client,
            client_name: cli.client_name.clone(),
            helo: cli.helo.clone(),
            mail_from: cli.mail_from.clone(),
            rcpts: cli.rcpts.clone(),
            auth: cli.auth.clone(),
            daemon_name: cli.daemon_name.clone(),
            extra_macros,
            chunk: cli.chunk,
            timeout: Duration::from_millis(cli.timeout_ms),
            per_connection: cli.per_connection,
            tcp_nodelay: cli.tcp_nodelay,
            trace: cli.check,
        },
        messages,
        watches,
    })
}

/// Counters of one phase, per thread and merged.
#[derive(Default)]
struct Stats {
    messages: u64,
    errors: u64,
    error_kinds: BTreeMap<&'static str, u64>,
    error_samples: Vec<String>,
    outcomes: [u64; 6],
    mods: BTreeMap<&'static str, u64>,
    lat: [Vec<u32>; 10],
    no_reply: [u64; 10],
    skipped: [u64; 10],
}

impl Stats {
    fn merge(&mut self, o: Stats) {
        self.messages += o.messages;
        self.errors += o.errors;
        for (k, v) in o.error_kinds {
            *self.error_kinds.entry(k).or_default() += v;
        }
        for s in o.error_samples {
            if self.error_samples.len() < 10 {
                self.error_samples.push(s);
            }
        }
        for i in 0..6 {
            self.outcomes[i] += o.outcomes[i];
        }
        for (k, v) in o.mods {
            *self.mods.entry(k).or_default() += v;
        }
        for (i, v) in o.lat.into_iter().enumerate() {
            self.lat[i].extend(v);
            self.no_reply[i] += o.no_reply[i];
            self.skipped[i] += o.skipped[i];
        }
    }

    fn error(&mut self, f: session::Failure) {
        self.errors += 1;
        *self.error_kinds.entry(f.kind).or_default() += 1;
        if self.error_samples.len() < 10 {
            self.error_samples.push(format!("{}: {}", f.kind, f.detail));
        }
    }
}

/// Run `total` messages over the configured sessions until done or `deadline`.
fn run_phase(cfg: &Arc<Config>, sessions: u32, total: u64, deadline: Instant) -> (Stats, f64) {
    let next = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let threads = (sessions as u64).min(total).max(1);
    let handles: Vec<_> = (0..threads)
        .map(|tix| {
            let cfg = cfg.clone();
            let next = next.clone();
            thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || {
                    let mut st = Stats::default();
                    let claim = || {
                        if Instant::now() >= deadline {
                            return None;
                        }
                        let t = next.fetch_add(1, Ordering::Relaxed);
                        (t < total).then_some(t)
                    };
                    let mut conn_no = 0u64;
                    'sessions: while let Some(first) = claim() {
                        conn_no += 1;
                        let port = 1024 + ((tix * 1009 + conn_no) % 64000) as u16;
                        let mut s = Session::new(&cfg.opts, port);
                        let mut ticket = Some(first);
                        for k in 0..cfg.opts.per_connection {
                            let t = match ticket.take() {
                                Some(t) => t,
                                None => match claim() {
                                    Some(t) => t,
                                    None => {
                                        s.quit();
                                        break 'sessions;
                                    }
                                },
                            };
                            let msg = &cfg.messages[(t % cfg.messages.len() as u64) as usize];
                            match s.transaction(msg) {
                                Ok(r) => {
                                    st.messages += 1;
                                    st.outcomes[r.outcome.index()] += 1;
                                    for (_, m) in &r.mods {
                                        *st.mods.entry(m.kind()).or_default() += 1;
                                    }
                                    for (i, v) in r.lat.iter().enumerate() {
                                        if let Some(us) = v {
                                            st.lat[i].push((*us).min(u32::MAX as u64) as u32);
                                        } else if r.no_reply[i] {
                                            st.no_reply[i] += 1;
                                        } else if r.skipped[i] {
                                            st.skipped[i] += 1;
                                        }
                                    }
                                    if s.dead {
                                        break;
                                    }
                                }
                                Err(f) => {
                                    st.error(f);
                                    // Protocol state unknown: drop this session.
                                    let _ = k;
                                    continue 'sessions;
                                }
                            }
                        }
                        s.quit();
                    }
                    st
                })
                .expect("spawn session thread")
        })
        .collect();
    let mut all = Stats::default();
    for h in handles {
        match h.join() {
            Ok(st) => all.merge(st),
            Err(_) => {
                all.errors += 1;
                *all.error_kinds.entry("internal").or_default() += 1;
            }
        }
    }
    (all, t0.elapsed().as_secs_f64())
}

fn pct(sorted: &[u32], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    // Nearest rank.
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    Some(sorted[rank.min(sorted.len()) - 1] as f64 / 1000.0)
}

fn ms(v: Option<f64>) -> Value {
    v.map(|x| json!((x * 1000.0).round() / 1000.0))
        .unwrap_or(Value::Null)
}

fn check(cfg: &Config) -> ExitCode {
    let mut s = Session::new(&cfg.opts, 40000);
    let r = s.transaction(&cfg.messages[0]);
    for line in &s.trace {
        say!("{line}");
    }
    let code = match r {
        Ok(r) => {
            say!("modifications: {}", r.mods.len());
            for (i, m) in &r.mods {
                say!(
                    "  milter#{} {}: {}",
                    i + 1,
                    cfg.opts.milters[*i].spec,
                    session::show_mod(m)
                );
            }
            say!(
                "final reply: {}{}",
                r.outcome.name(),
                r.reply_text
                    .as_ref()
                    .map(|t| format!(" ({t})"))
                    .unwrap_or_default()
            );
            if matches!(r.outcome, Outcome::Accept | Outcome::Continue) {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(f) => {
            say!("error ({}): {}", f.kind, f.detail);
            ExitCode::from(1)
        }
    };
    s.quit();
    code
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let cfg = match build(&cli) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            eprintln!("milterload: {e}");
            return ExitCode::from(2);
        }
    };
    if cli.check {
        return check(&cfg);
    }
    let deadline = Instant::now() + Duration::from_secs(cli.max_seconds);
    let warm = if cli.warmup > 0 {
        Some(run_phase(&cfg, cli.sessions, cli.warmup, deadline))
    } else {
        None
    };
    let me = std::process::id();
    let own0 = procs::stat_ticks(me).map(|t| t.0).unwrap_or(0);
    let monitor = procs::Monitor::start(cfg.watches.clone());
    let (mut st, elapsed) = run_phase(&cfg, cli.sessions, cli.count, deadline);
    let procs = monitor.stop();
    // milterload's own CPU in the measured phase: it shares the machine with the milter.
    let own_cpu_s = procs::stat_ticks(me)
        .map(|t| t.0)
        .unwrap_or(0)
        .saturating_sub(own0) as f64
        / procs::clk_tck();
    let stopped_early = st.messages + st.errors < cli.count;

    for v in st.lat.iter_mut() {
        v.sort_unstable();
    }
    let rate = if elapsed > 0.0 {
        st.messages as f64 / elapsed
    } else {
        0.0
    };

    // Human summary.
    let names: Vec<&str> = cfg.opts.milters.iter().map(|m| m.spec.as_str()).collect();
    say!(
        "milterload: {} measured messages in {:.2}s = {:.1} msg/s over {} sessions ({} per connection), chain: {}",
        st.messages,
        elapsed,
        rate,
        cli.sessions,
        cli.per_connection,
        names.join(" -> ")
    );
    if let Some((w, we)) = &warm {
        say!(
            "warm-up: {} messages, {} errors in {:.2}s (not counted)",
            w.messages,
            w.errors,
            we
        );
    }
    let replies: Vec<String> = Outcome::ALL
        .iter()
        .filter(|o| st.outcomes[o.index()] > 0)
        .map(|o| format!("{} {}", o.name(), st.outcomes[o.index()]))
        .collect();
    say!(
        "replies: {}; errors: {}{}",
        if replies.is_empty() {
            "none".into()
        } else {
            replies.join(", ")
        },
        st.errors,
        if st.errors > 0 {
            format!(
                " ({})",
                st.error_kinds
                    .iter()
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        } else {
            String::new()
        }
    );
    let mut shown: Vec<&String> = Vec::new();
    for s in &st.error_samples {
        if shown.len() < 3 && !shown.contains(&s) {
            say!("  e.g. {s}");
            shown.push(s);
        }
    }
    if stopped_early {
        say!(
            "STOPPED EARLY: --max-seconds {} reached after {} of {} messages",
            cli.max_seconds,
            st.messages + st.errors,
            cli.count
        );
    }
    let fmt = |v: Option<f64>| v.map(|x| format!("{x:.3}")).unwrap_or_else(|| "-".into());
    say!(
        "{:<8} {:>9} {:>9} {:>9} {:>10} {:>10} {:>10}",
        "stage",
        "samples",
        "no-reply",
        "skipped",
        "p50 ms",
        "p99 ms",
        "max ms"
    );
    for (i, name) in LAT_STAGES.iter().enumerate() {
        let v = &st.lat[i];
        say!(
            "{:<8} {:>9} {:>9} {:>9} {:>10} {:>10} {:>10}",
            name,
            v.len(),
            st.no_reply[i],
            st.skipped[i],
            fmt(pct(v, 50.0)),
            fmt(pct(v, 99.0)),
            fmt(v.last().map(|&x| x as f64 / 1000.0))
        );
    }
    for p in &procs {
        let per = if st.messages > 0 {
            format!("{:.3}", p.cpu_s * 1000.0 / st.messages as f64)
        } else {
            "-".into()
        };
        say!(
            "proc {} (pids {:?}): cpu {:.2}s = {} ms/msg, peak RSS {} KiB ({}{})",
            p.label,
            p.pids,
            p.cpu_s,
            per,
            p.peak_rss_kib,
            p.rss_source,
            if p.hwm_reset {
                ""
            } else {
                "; high-water mark not reset"
            }
        );
    }
    say!("milterload's own cpu: {own_cpu_s:.2}s");
    if !st.mods.is_empty() && st.messages > 0 {
        say!(
            "modifications per message: {}",
            st.mods
                .iter()
                .map(|(k, v)| format!("{k} {:.2}", *v as f64 / st.messages as f64))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }

    if let Some(path) = &cli.json {
        let mut lat = Map::new();
        for (i, name) in LAT_STAGES.iter().enumerate() {
            let v = &st.lat[i];
            lat.insert(
                name.to_string(),
                json!({
                    "n": v.len(),
                    "no_reply": st.no_reply[i],
                    "skipped": st.skipped[i],
                    "p50": ms(pct(v, 50.0)),
                    "p99": ms(pct(v, 99.0)),
                    "max": ms(v.last().map(|&x| x as f64 / 1000.0)),
                }),
            );
        }
        let mut replies = Map::new();
        for o in Outcome::ALL {
            replies.insert(o.name().into(), json!(st.outcomes[o.index()]));
        }
        let mut pj = Map::new();
        for p in &procs {
            pj.insert(
                p.label.clone(),
                json!({
                    "pids": p.pids,
                    "cpu_s": (p.cpu_s * 1000.0).round() / 1000.0,
                    "cpu_ms_per_msg": if st.messages > 0 {
                        json!((p.cpu_s * 1e6 / st.messages as f64).round() / 1000.0)
                    } else { Value::Null },
                    "peak_rss_kib": p.peak_rss_kib,
                    "peak_rss_source": p.rss_source,
                    "hwm_reset": p.hwm_reset,
                }),
            );
        }
        let mut mods_per = Map::new();
        let mut mods_total = Map::new();
        for (k, v) in &st.mods {
            mods_total.insert(k.to_string(), json!(v));
            if st.messages > 0 {
                mods_per.insert(
                    k.to_string(),
                    json!((*v as f64 / st.messages as f64 * 1000.0).round() / 1000.0),
                );
            }
        }
        let doc = json!({
            "messages": st.messages,
            "errors": st.errors,
            "error_kinds": st.error_kinds,
            "error_samples": st.error_samples,
            "replies": replies,
            "elapsed_s": (elapsed * 1000.0).round() / 1000.0,
            "msgs_per_s": (rate * 10.0).round() / 10.0,
            "stopped_early": stopped_early,
            "count": cli.count,
            "latency_ms": lat,
            "procs": pj,
            "client_cpu_s": (own_cpu_s * 1000.0).round() / 1000.0,
            "modifications_per_msg": mods_per,
            "modifications_total": mods_total,
            "sessions": cli.sessions,
            "per_connection": cli.per_connection,
            "chunk": cli.chunk,
            "milters": names,
            "message_files": cli.messages.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
            "warmup": warm.as_ref().map(|(w, e)| json!({
                "messages": w.messages, "errors": w.errors, "elapsed_s": (e * 1000.0).round() / 1000.0
            })).unwrap_or(json!({"messages": 0, "errors": 0, "elapsed_s": 0.0})),
        });
        let text = serde_json::to_string_pretty(&doc).expect("json") + "\n";
        if let Err(e) = std::fs::write(path, text) {
            eprintln!("milterload: writing {}: {e}", path.display());
            return ExitCode::from(1);
        }
    }

    let warm_errors = warm.as_ref().map(|(w, _)| w.errors).unwrap_or(0);
    if st.errors > 0 || warm_errors > 0 || st.messages == 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milter_specs() {
        assert_eq!(
            parse_milter("inet:127.0.0.1:8891").unwrap().endpoint,
            Endpoint::Inet("127.0.0.1:8891".parse().unwrap())
        );
        assert_eq!(
            parse_milter("inet:8891@127.0.0.2").unwrap().endpoint,
            Endpoint::Inet("127.0.0.2:8891".parse().unwrap())
        );
        assert_eq!(
            parse_milter("inet6:[::1]:25").unwrap().endpoint,
            Endpoint::Inet("[::1]:25".parse().unwrap())
        );
        assert_eq!(
            parse_milter("local:/run/m.sock").unwrap().endpoint,
            Endpoint::Unix("/run/m.sock".into())
        );
        assert!(parse_milter("unix:relative.sock").is_err());
        assert!(parse_milter("inet:10.0.0.1:8891").is_err());
        assert!(parse_milter("inet:192.168.1.1:8891").is_err());
        assert!(parse_milter("inet:[2001:db8::1]:8891").is_err());
        assert!(parse_milter("tcp:127.0.0.1:1").is_err());
        assert!(parse_milter("inet:127.0.0.1:x").is_err());
    }

    #[test]
    fn macro_args() {
        assert_eq!(
            parse_macro("connect:{client_addr}=10.1.2.3").unwrap(),
            (Stage::Connect, "{client_addr}".into(), "10.1.2.3".into())
        );
        assert!(parse_macro("body:x=y").is_err());
        assert!(parse_macro("mail:novalue").is_err());
    }

    #[test]
    fn percentiles_nearest_rank() {
        let v: Vec<u32> = (1..=100).map(|x| x * 1000).collect();
        assert_eq!(pct(&v, 50.0), Some(50.0));
        assert_eq!(pct(&v, 99.0), Some(99.0));
        assert_eq!(pct(&[7000], 99.0), Some(7.0));
        assert_eq!(pct(&[], 50.0), None);
    }
}
