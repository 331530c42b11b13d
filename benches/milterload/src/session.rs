//! One simulated Postfix SMTP session against a chain of milters: connect and negotiate
//! with each milter, send connect/helo, then one or more transactions (mail, rcpt, data,
//! headers, eoh, body chunks, eom), with the macros, flags and chain rules of Postfix 3.7's
//! smtpd/cleanup and milter8.c. Every stage is timed.

use std::collections::BTreeMap;
use std::io::{self, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::message::{chunks, Message};
use crate::wire::{self, Family, Modification, Negotiated, Reply, Send, Stage};

/// Where a milter listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Unix(PathBuf),
    Inet(SocketAddr),
}

/// A milter of the chain: the spec as given and where it resolved to.
#[derive(Clone, Debug)]
pub struct MilterSpec {
    pub spec: String,
    pub endpoint: Endpoint,
}

/// Latency stages reported, in order. "total" is connect (or MAIL, for a later message on
/// the same connection) to the final reply of the transaction.
pub const LAT_STAGES: [&str; 10] = [
    "connect", "helo", "mail", "rcpt", "data", "header", "eoh", "body", "eom", "total",
];
pub const L_CONNECT: usize = 0;
pub const L_HELO: usize = 1;
pub const L_MAIL: usize = 2;
pub const L_RCPT: usize = 3;
pub const L_DATA: usize = 4;
pub const L_HEADER: usize = 5;
pub const L_EOH: usize = 6;
pub const L_BODY: usize = 7;
pub const L_EOM: usize = 8;
pub const L_TOTAL: usize = 9;

/// The SMTP client as the milter is told about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientAddr {
    Ip(IpAddr),
    /// A local (AF_UNIX) client: SMFIC_CONNECT family 'L', port 0, the socket path.
    Unix(String),
}

impl std::fmt::Display for ClientAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientAddr::Ip(a) => write!(f, "{a}"),
            ClientAddr::Unix(p) => write!(f, "{p}"),
        }
    }
}

/// Everything a session needs besides the message.
#[derive(Debug)]
pub struct Options {
    pub milters: Vec<MilterSpec>,
    pub client: ClientAddr,
    pub client_name: String,
    pub helo: String,
    /// None: take the From: address of each message. Some(""): null sender.
    pub mail_from: Option<String>,
    pub rcpts: Vec<String>,
    pub auth: Option<String>,
    pub daemon_name: String,
    /// Extra macros per stage from --macro, sent at that stage to every milter.
    pub extra_macros: BTreeMap<Stage, Vec<(String, String)>>,
    pub chunk: usize,
    pub timeout: Duration,
    pub per_connection: u32,
    /// TCP_NODELAY and one write per batch; false: like Postfix (Nagle on, one write per
    /// packet).
    pub tcp_nodelay: bool,
    /// Record a human-readable trace of every event (for --check).
    pub trace: bool,
}

/// Postfix 3.7 defaults (postconf milter_*_macros).
fn default_macro_names(stage: Stage) -> &'static [&'static str] {
    match stage {
        Stage::Connect => &["j", "{daemon_name}", "{daemon_addr}", "v", "_"],
        Stage::Helo => &[
            "{tls_version}",
            "{cipher}",
            "{cipher_bits}",
            "{cert_subject}",
            "{cert_issuer}",
        ],
        Stage::Mail => &[
            "i",
            "{auth_type}",
            "{auth_authen}",
            "{auth_author}",
            "{mail_addr}",
            "{mail_host}",
            "{mail_mailer}",
        ],
        Stage::Rcpt => &["i", "{rcpt_addr}", "{rcpt_host}", "{rcpt_mailer}"],
        Stage::Data | Stage::Eoh | Stage::Eom => &["i"],
    }
}

/// How a transaction (or a session) ended, as counted in "replies".
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    Accept,
    Continue,
    Reject,
    Tempfail,
    Discard,
    Shutdown,
}

impl Outcome {
    pub const ALL: [Outcome; 6] = [
        Outcome::Accept,
        Outcome::Continue,
        Outcome::Reject,
        Outcome::Tempfail,
        Outcome::Discard,
        Outcome::Shutdown,
    ];
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Accept => "accept",
            Outcome::Continue => "continue",
            Outcome::Reject => "reject",
            Outcome::Tempfail => "tempfail",
            Outcome::Discard => "discard",
            Outcome::Shutdown => "shutdown",
        }
    }
    pub fn index(self) -> usize {
        self as usize
    }
}

/// A failed message: connection failure, protocol error, timeout or unexpected reply.
#[derive(Debug)]
pub struct Failure {
    pub kind: &'static str,
    pub detail: String,
}

impl Failure {
    fn io(milter: &str, what: &str, e: io::Error) -> Failure {
        let kind = match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => "timeout",
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe => "connection_lost",
            _ => "io",
        };
        let detail = if kind == "timeout" {
            format!("{milter}: {what}: timed out")
        } else {
            format!("{milter}: {what}: {e}")
        };
        Failure { kind, detail }
    }
    fn protocol(milter: &str, detail: String) -> Failure {
        Failure {
            kind: "protocol",
            detail: format!("{milter}: {detail}"),
        }
    }
    fn unexpected(milter: &str, detail: String) -> Failure {
        Failure {
            kind: "unexpected_reply",
            detail: format!("{milter}: {detail}"),
        }
    }
}

/// The result of one transaction.
#[derive(Debug)]
pub struct MsgResult {
    /// Microseconds per latency stage, summed over the chain; None when nothing answered.
    pub lat: [Option<u64>; 10],
    /// Stages sent without waiting for a reply (SMFIP_NR_*) by every milter that got them.
    pub no_reply: [bool; 10],
    /// Stages no milter received (SMFIP_NO*).
    pub skipped: [bool; 10],
    pub outcome: Outcome,
    /// The reply text for a reject/tempfail from SMFIR_REPLYCODE.
    pub reply_text: Option<String>,
    /// Modifications by milter index.
    pub mods: Vec<(usize, Modification)>,
}

impl MsgResult {
    fn new() -> MsgResult {
        MsgResult {
            lat: [None; 10],
            no_reply: [false; 10],
            skipped: [false; 10],
            outcome: Outcome::Continue,
            reply_text: None,
            mods: Vec::new(),
        }
    }
    fn mark(&mut self, stage: usize, a: Answer, t0: Instant) {
        match a {
            Answer::Replied => self.add(stage, t0.elapsed()),
            Answer::NoReply => self.no_reply[stage] = true,
            Answer::Skipped => self.skipped[stage] = true,
        }
    }

    fn add(&mut self, stage: usize, d: Duration) {
        let us = d.as_micros() as u64;
        self.lat[stage] = Some(self.lat[stage].unwrap_or(0) + us);
    }
}

enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    fn try_clone(&self) -> io::Result<Stream> {
        Ok(match self {
            Stream::Tcp(s) => Stream::Tcp(s.try_clone()?),
            Stream::Unix(s) => Stream::Unix(s.try_clone()?),
        })
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Per-milter transaction state, as milter8.c tracks it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Taking events.
    Envelope,
    /// Accepted this message (SMFIR_ACCEPT after connect/helo): no more events until abort.
    /// (A milter that accepted or refused the connection is closed: its slot is None.)
    AcceptMsg,
}

struct Conn {
    name: String,
    writer: Stream,
    reader: BufReader<Stream>,
    wbuf: Vec<u8>,
    /// One write(2) per milter packet, as Postfix's milter8_write_cmd does.
    per_packet: bool,
    neg: Negotiated,
    state: State,
    /// Macro names per stage: the milter's own list from OPTNEG, or Postfix's defaults.
    macro_names: BTreeMap<Stage, Vec<String>>,
}

/// Whether a command was answered, sent without a reply (SMFIP_NR_*) or not sent
/// (SMFIP_NO*). Ordered so that the "most answered" of a chain wins.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Answer {
    Skipped,
    NoReply,
    Replied,
}

/// What a milter said to one event.
enum Verdict {
    /// Continue (or no reply expected, or event skipped).
    Go,
    /// Accept: no more events from this milter for the message (or connection).
    Accept,
    /// Skip the rest of this event type (body chunks).
    Skip,
    /// The transaction ends here.
    Stop(Outcome, Option<String>),
}

static QUEUE_ID: AtomicU64 = AtomicU64::new(0);

/// A fresh Postfix-looking queue id (hex, 10 digits) for the "i" macro.
fn queue_id() -> String {
    static BASE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let base = *BASE.get_or_init(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0)
    });
    let n = QUEUE_ID.fetch_add(1, Ordering::Relaxed);
    format!(
        "{:010X}",
        base.wrapping_mul(2654435761).wrapping_add(n) & 0xFF_FFFF_FFFF
    )
}

/// Values of the macros this tool knows; everything else has no value and is not sent.
struct MacroValues<'a> {
    opts: &'a Options,
    queue_id: &'a str,
    mail_addr: &'a str,
    rcpt_addr: &'a str,
    client_port: u16,
}

impl MacroValues<'_> {
    fn get(&self, name: &str) -> Option<String> {
        let o = self.opts;
        Some(match name {
            "j" => "mx.example.test".into(),
            "v" => "Postfix 3.7.11".into(),
            "_" => format!("{} [{}]", o.client_name, o.client),
            "{daemon_name}" => o.daemon_name.clone(),
            "i" => self.queue_id.into(),
            "{auth_type}" if o.auth.is_some() => "PLAIN".into(),
            "{auth_authen}" => o.auth.clone()?,
            "{mail_addr}" => self.mail_addr.into(),
            "{rcpt_addr}" if !self.rcpt_addr.is_empty() => self.rcpt_addr.into(),
            // Not in Postfix's default lists, but Postfix knows them; sent when a milter
            // asks for them in its OPTNEG reply.
            "{client_addr}" => o.client.to_string(),
            "{client_name}" | "{client_ptr}" => o.client_name.clone(),
            "{client_port}" => self.client_port.to_string(),
            _ => return None,
        })
    }
}

fn open(spec: &MilterSpec, timeout: Duration, nodelay: bool) -> Result<Stream, Failure> {
    let fail = |e: io::Error| Failure {
        kind: "connect",
        detail: format!("{}: connect: {e}", spec.spec),
    };
    let s = match &spec.endpoint {
        Endpoint::Inet(addr) => {
            let s = TcpStream::connect_timeout(addr, timeout).map_err(fail)?;
            s.set_nodelay(nodelay).map_err(fail)?;
            s.set_read_timeout(Some(timeout)).map_err(fail)?;
            s.set_write_timeout(Some(timeout)).map_err(fail)?;
            Stream::Tcp(s)
        }
        Endpoint::Unix(path) => {
            let s = UnixStream::connect(path).map_err(fail)?;
            s.set_read_timeout(Some(timeout)).map_err(fail)?;
            s.set_write_timeout(Some(timeout)).map_err(fail)?;
            Stream::Unix(s)
        }
    };
    Ok(s)
}

impl Conn {
    /// Connect and negotiate options (SMFIC_OPTNEG with Postfix's masks).
    fn establish(spec: &MilterSpec, timeout: Duration, nodelay: bool) -> Result<Conn, Failure> {
        let writer = open(spec, timeout, nodelay)?;
        let reader = BufReader::with_capacity(
            16 * 1024,
            writer
                .try_clone()
                .map_err(|e| Failure::io(&spec.spec, "clone socket", e))?,
        );
        let mut c = Conn {
            name: spec.spec.clone(),
            writer,
            reader,
            wbuf: Vec::with_capacity(8192),
            per_packet: !nodelay,
            neg: Negotiated {
                version: 0,
                actions: 0,
                protocol: 0,
                macro_lists: Vec::new(),
            },
            state: State::Envelope,
            macro_names: BTreeMap::new(),
        };
        wire::optneg(
            &mut c.wbuf,
            wire::VERSION,
            wire::POSTFIX_ACTIONS,
            wire::POSTFIX_PROTOCOL,
        );
        c.flush()?;
        let (cmd, data) = c.read_packet()?;
        if cmd != wire::C_OPTNEG {
            return Err(Failure::unexpected(
                &c.name,
                format!("reply {:?} to OPTNEG", cmd as char),
            ));
        }
        c.neg = wire::parse_optneg(&data, wire::POSTFIX_ACTIONS)
            .map_err(|e| Failure::protocol(&c.name, e))?;
        for stage in Stage::ALL {
            let own = c
                .neg
                .macro_lists
                .iter()
                .rev()
                .find(|(s, _)| *s == stage)
                .map(|(_, l)| l.clone());
            let names = own.unwrap_or_else(|| {
                default_macro_names(stage)
                    .iter()
                    .map(|s| s.to_string())
                    .collect()
            });
            c.macro_names.insert(stage, names);
        }
        Ok(c)
    }

    fn flush(&mut self) -> Result<(), Failure> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        let r = if self.per_packet {
            // Packets are length-prefixed (4 bytes, big endian): write them one by one.
            let mut rest = &self.wbuf[..];
            let mut r = Ok(());
            while !rest.is_empty() && r.is_ok() {
                let len = rest
                    .get(..4)
                    .map_or(rest.len(), |l| {
                        4 + u32::from_be_bytes([l[0], l[1], l[2], l[3]]) as usize
                    })
                    .min(rest.len());
                r = self.writer.write_all(&rest[..len]);
                rest = &rest[len..];
            }
            r
        } else {
            self.writer.write_all(&self.wbuf)
        };
        self.wbuf.clear();
        r.map_err(|e| Failure::io(&self.name, "write", e))
    }

    fn read_packet(&mut self) -> Result<(u8, Vec<u8>), Failure> {
        let mut len = [0u8; 4];
        self.reader
            .read_exact(&mut len)
            .map_err(|e| Failure::io(&self.name, "read reply", e))?;
        let len = wire::packet_len(len).map_err(|e| Failure::protocol(&self.name, e))?;
        let mut buf = vec![0u8; len];
        self.reader
            .read_exact(&mut buf)
            .map_err(|e| Failure::io(&self.name, "read reply", e))?;
        let cmd = buf[0];
        buf.remove(0);
        Ok((cmd, buf))
    }

    /// Read one reply, waiting through SMFIR_PROGRESS (milter8.c keeps reading).
    fn read_reply(&mut self) -> Result<Reply, Failure> {
        self.flush()?;
        loop {
            let (cmd, data) = self.read_packet()?;
            let r = wire::parse_reply(cmd, &data).map_err(|e| Failure::protocol(&self.name, e))?;
            if r != Reply::Progress {
                return Ok(r);
            }
        }
    }

    fn send_macros(&mut self, event: u8, stage: Stage, vals: &MacroValues, opts: &Options) {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for name in &self.macro_names[&stage] {
            if let Some(v) = vals.get(name) {
                pairs.push((name.clone(), v));
            }
        }
        if let Some(extra) = opts.extra_macros.get(&stage) {
            for (n, v) in extra {
                pairs.retain(|(pn, _)| pn != n);
                pairs.push((n.clone(), v.clone()));
            }
        }
        if pairs.is_empty() {
            return;
        }
        let refs: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        wire::macros(&mut self.wbuf, event, &refs);
    }
}

/// One SMTP session's worth of milter connections.
pub struct Session<'a> {
    opts: &'a Options,
    conns: Vec<Option<Conn>>,
    client_port: u16,
    /// Set when a connect/helo-level reject, tempfail or shutdown ended the session.
    pub dead: bool,
    pub trace: Vec<String>,
    started: Option<Instant>,
}

fn classify_code(text: &str) -> Outcome {
    if text.starts_with('4') {
        Outcome::Tempfail
    } else {
        Outcome::Reject
    }
}

impl<'a> Session<'a> {
    pub fn new(opts: &'a Options, client_port: u16) -> Session<'a> {
        Session {
            opts,
            conns: Vec::new(),
            client_port,
            dead: false,
            trace: Vec::new(),
            started: None,
        }
    }

    fn log(&mut self, i: usize, what: String) {
        if self.opts.trace {
            self.trace.push(format!(
                "milter#{} {}: {what}",
                i + 1,
                self.opts.milters[i].spec
            ));
        }
    }

    /// Send one event to milter `i`: macros (even when the milter said SMFIP_NO* for it,
    /// as milter8.c does for envelope events), the command unless skipped, and the reply
    /// unless SMFIP_NR_*. Returns the verdict and whether a reply was awaited.
    #[allow(clippy::too_many_arguments)]
    fn event(
        &mut self,
        i: usize,
        macro_stage: Option<Stage>,
        vals: &MacroValues,
        cmd: u8,
        data: &[&[u8]],
        raw: bool,
        res: &mut MsgResult,
    ) -> Result<(Verdict, Answer), Failure> {
        let opts = self.opts;
        let conn = self.conns[i].as_mut().expect("event to a closed milter");
        if let Some(stage) = macro_stage {
            conn.send_macros(cmd, stage, vals, opts);
        }
        let mode = wire::send_mode(cmd, conn.neg.protocol);
        if opts.trace && mode != Send::Reply && cmd != wire::C_HEADER && cmd != wire::C_BODY {
            let why = if mode == Send::Skip {
                "not sent (SMFIP_NO*)"
            } else {
                "sent, no reply (SMFIP_NR_*)"
            };
            self.trace.push(format!(
                "milter#{} {}: {} {why}",
                i + 1,
                conn.name,
                cmd_name(cmd)
            ));
        }
        if mode == Send::Skip {
            return Ok((Verdict::Go, Answer::Skipped));
        }
        if raw {
            wire::packet(&mut conn.wbuf, cmd, data.first().copied().unwrap_or(b""));
        } else {
            wire::packet_strs(&mut conn.wbuf, cmd, data);
        }
        if mode == Send::NoReply {
            if conn.wbuf.len() >= 64 * 1024 {
                conn.flush()?;
            }
            return Ok((Verdict::Go, Answer::NoReply));
        }
        let in_connect = cmd == wire::C_CONNECT || cmd == wire::C_HELO;
        loop {
            let reply = conn.read_reply()?;
            let name = conn.name.clone();
            let v = match reply {
                Reply::Continue => Verdict::Go,
                Reply::Accept => Verdict::Accept,
                Reply::Skip => Verdict::Skip,
                Reply::Reject => Verdict::Stop(Outcome::Reject, None),
                Reply::Tempfail => Verdict::Stop(Outcome::Tempfail, None),
                Reply::Code(t) => Verdict::Stop(classify_code(&t), Some(t)),
                Reply::Shutdown => Verdict::Stop(Outcome::Shutdown, None),
                Reply::Discard if in_connect => {
                    return Err(Failure::unexpected(
                        &name,
                        "DISCARD is not allowed for connect or helo".into(),
                    ))
                }
                Reply::Discard => Verdict::Stop(Outcome::Discard, None),
                // Quarantine does not change the receiver state (milter8.c): keep reading.
                Reply::Modify(m @ Modification::Quarantine(_)) => {
                    if opts.trace {
                        self.trace
                            .push(format!("milter#{} {name}: {}", i + 1, show_mod(&m)));
                    }
                    res.mods.push((i, m));
                    continue;
                }
                Reply::Modify(m) if cmd == wire::C_BODYEOB => {
                    if opts.trace {
                        self.trace
                            .push(format!("milter#{} {name}: {}", i + 1, show_mod(&m)));
                    }
                    res.mods.push((i, m));
                    continue;
                }
                Reply::Modify(m) => {
                    return Err(Failure::unexpected(
                        &name,
                        format!("modification {} after event {:?}", m.kind(), cmd as char),
                    ))
                }
                Reply::Progress => unreachable!("read_reply skips progress"),
            };
            if self.opts.trace {
                let what = match &v {
                    Verdict::Go => "continue".to_string(),
                    Verdict::Accept => "accept".into(),
                    Verdict::Skip => "skip".into(),
                    Verdict::Stop(o, t) => match t {
                        Some(t) => format!("{} ({t})", o.name()),
                        None => o.name().into(),
                    },
                };
                self.trace.push(format!(
                    "milter#{} {name}: {} -> {what}",
                    i + 1,
                    cmd_name(cmd)
                ));
            }
            return Ok((v, Answer::Replied));
        }
    }

    fn close(&mut self, i: usize, quit: bool) {
        if let Some(mut c) = self.conns[i].take() {
            if quit {
                wire::packet(&mut c.wbuf, wire::C_QUIT, b"");
                let _ = c.flush();
            }
        }
    }

    /// Connect to every milter in order and send connect + helo. Times go to `res`.
    /// Returns Some(outcome) when the session was refused at connect/helo.
    fn open_session(&mut self, res: &mut MsgResult) -> Result<Option<Outcome>, Failure> {
        let opts = self.opts;
        let (family, addr) = match &opts.client {
            ClientAddr::Ip(IpAddr::V4(a)) => (Family::Inet4, a.to_string()),
            ClientAddr::Ip(IpAddr::V6(a)) => (Family::Inet6, a.to_string()),
            ClientAddr::Unix(p) => (Family::Unix, p.clone()),
        };
        let vals = MacroValues {
            opts,
            queue_id: "",
            mail_addr: "",
            rcpt_addr: "",
            client_port: self.client_port,
        };
        self.conns = (0..opts.milters.len()).map(|_| None).collect();
        // milter_conn_event: milters in order, stopping at the first non-continue reply.
        for i in 0..opts.milters.len() {
            let t0 = Instant::now();
            let conn = Conn::establish(&opts.milters[i], opts.timeout, opts.tcp_nodelay)?;
            self.conns[i] = Some(conn);
            if opts.trace {
                let n = self.conns[i].as_ref().unwrap().neg.clone();
                self.log(
                    i,
                    format!(
                        "negotiated version {} actions {:#x} protocol {:#x} ({}){}",
                        n.version,
                        n.actions,
                        n.protocol,
                        protocol_names(n.protocol),
                        if n.macro_lists.is_empty() {
                            String::new()
                        } else {
                            format!(
                                "; macro lists {}",
                                n.macro_lists
                                    .iter()
                                    .map(|(s, l)| format!("{}=[{}]", s.name(), l.join(" ")))
                                    .collect::<Vec<_>>()
                                    .join(" ")
                            )
                        }
                    ),
                );
            }
            let mut cdata = Vec::new();
            wire::connect(
                &mut cdata,
                &opts.client_name,
                family,
                self.client_port,
                &addr,
            );
            // The packet helper frames it; peel the frame off to reuse event().
            let payload = cdata[5..].to_vec();
            // Connect time always counts: socket, negotiation and (if any) the reply.
            let (v, _) = self.event(
                i,
                Some(Stage::Connect),
                &vals,
                wire::C_CONNECT,
                &[&payload],
                true,
                res,
            )?;
            res.add(L_CONNECT, t0.elapsed());
            match v {
                Verdict::Go | Verdict::Skip => {}
                // Accept at connect: no more events this connection; Postfix closes it.
                Verdict::Accept => self.close(i, false),
                Verdict::Stop(o, t) => {
                    res.reply_text = t;
                    return Ok(Some(o));
                }
            }
        }
        for i in 0..opts.milters.len() {
            if self.conns[i].is_none() {
                continue;
            }
            let t0 = Instant::now();
            let (v, answered) = self.event(
                i,
                Some(Stage::Helo),
                &vals,
                wire::C_HELO,
                &[opts.helo.as_bytes()],
                false,
                res,
            )?;
            res.mark(L_HELO, answered, t0);
            match v {
                Verdict::Go | Verdict::Skip => {}
                Verdict::Accept => self.close(i, false),
                Verdict::Stop(o, t) => {
                    res.reply_text = t;
                    return Ok(Some(o));
                }
            }
        }
        Ok(None)
    }

    /// Run one transaction. The first call of a session also opens the milter connections.
    /// On Err the session must be dropped (its protocol state is unknown).
    // Milter indexes address both the connections and the per-milter verdicts.
    #[allow(clippy::needless_range_loop)]
    /// One envelope event (MAIL, DATA) to every milter still in the
    /// transaction, in order, as Postfix's milter_*_event do: a milter that
    /// accepts gets no more events for this message, and the first refusal
    /// ends the transaction for the milters after it.
    #[allow(clippy::too_many_arguments)]
    fn envelope_event(
        &mut self,
        stage: Stage,
        vals: &MacroValues,
        cmd: u8,
        args: &[&[u8]],
        latency: usize,
        last: &mut [Outcome],
        res: &mut MsgResult,
    ) -> Result<Option<(Outcome, Option<String>)>, Failure> {
        for i in 0..self.opts.milters.len() {
            if !self.in_envelope(i) {
                continue;
            }
            let t0 = Instant::now();
            let (v, answered) = self.event(i, Some(stage), vals, cmd, args, false, res)?;
            res.mark(latency, answered, t0);
            match v {
                Verdict::Go | Verdict::Skip => {}
                Verdict::Accept => self.accept_message(i, last),
                Verdict::Stop(o, t) => return Ok(Some((o, t))),
            }
        }
        Ok(None)
    }

    /// Milter `i` accepted the message: no more events for it.
    fn accept_message(&mut self, i: usize, last: &mut [Outcome]) {
        if let Some(conn) = self.conns[i].as_mut() {
            conn.state = State::AcceptMsg;
        }
        last[i] = Outcome::Accept;
    }

    /// Whether milter `i` still takes envelope events for this message.
    fn in_envelope(&self, i: usize) -> bool {
        self.conns[i]
            .as_ref()
            .is_some_and(|c| c.state == State::Envelope)
    }

    pub fn transaction(&mut self, msg: &Message) -> Result<MsgResult, Failure> {
        let opts = self.opts;
        let mut res = MsgResult::new();
        let t_start = Instant::now();
        if self.started.is_none() {
            self.started = Some(t_start);
            if let Some(o) = self.open_session(&mut res)? {
                self.dead = true;
                res.outcome = o;
                res.add(L_TOTAL, t_start.elapsed());
                return Ok(res);
            }
        }
        let n = opts.milters.len();
        let qid = queue_id();
        let mail_from = match &opts.mail_from {
            Some(a) => a.clone(),
            None => msg.author_address().unwrap_or_default(),
        };
        let mail_arg = format!("<{mail_from}>");
        let stop = |res: &mut MsgResult, o: Outcome, t: Option<String>| {
            res.outcome = o;
            res.reply_text = t;
        };
        // Per-milter verdict for this message; a milter that accepted gets no more events.
        let mut last: Vec<Outcome> = vec![Outcome::Continue; n];
        // MAIL: each milter in order (milter_mail_event).
        let mut ended = {
            let vals = MacroValues {
                opts,
                queue_id: &qid,
                mail_addr: &mail_from,
                rcpt_addr: "",
                client_port: self.client_port,
            };
            self.envelope_event(
                Stage::Mail,
                &vals,
                wire::C_MAIL,
                &[mail_arg.as_bytes()],
                L_MAIL,
                &mut last,
                &mut res,
            )?
        };

        // RCPT: each recipient to each milter; a refused recipient is not offered to the
        // milters after the one that refused it; no recipient left ends the transaction.
        if ended.is_none() {
            let mut accepted = 0usize;
            let mut refusal: Option<(Outcome, Option<String>)> = None;
            for rcpt in &opts.rcpts {
                let vals = MacroValues {
                    opts,
                    queue_id: &qid,
                    mail_addr: &mail_from,
                    rcpt_addr: rcpt,
                    client_port: self.client_port,
                };
                let arg = format!("<{rcpt}>");
                let mut ok = true;
                for i in 0..n {
                    if !self.in_envelope(i) {
                        continue;
                    }
                    let t0 = Instant::now();
                    let (v, answered) = self.event(
                        i,
                        Some(Stage::Rcpt),
                        &vals,
                        wire::C_RCPT,
                        &[arg.as_bytes()],
                        false,
                        &mut res,
                    )?;
                    res.mark(L_RCPT, answered, t0);
                    match v {
                        Verdict::Go | Verdict::Skip => {}
                        Verdict::Accept => self.accept_message(i, &mut last),
                        Verdict::Stop(Outcome::Discard, t) => {
                            ended = Some((Outcome::Discard, t));
                            break;
                        }
                        Verdict::Stop(o, t) => {
                            refusal = Some((o, t));
                            ok = false;
                            break;
                        }
                    }
                }
                if ended.is_some() {
                    break;
                }
                if ok {
                    accepted += 1;
                }
            }
            if ended.is_none() && accepted == 0 {
                ended = refusal.or(Some((Outcome::Reject, None)));
            }
        }

        // DATA.
        if ended.is_none() {
            let vals = MacroValues {
                opts,
                queue_id: &qid,
                mail_addr: &mail_from,
                rcpt_addr: "",
                client_port: self.client_port,
            };
            ended = self.envelope_event(
                Stage::Data,
                &vals,
                wire::C_DATA,
                &[],
                L_DATA,
                &mut last,
                &mut res,
            )?;
        }

        // Content: cleanup runs the milters one after another over the whole message, each
        // seeing the previous milters' edits.
        if ended.is_none() {
            let mut edited: Option<Message> = None;
            let vals = MacroValues {
                opts,
                queue_id: &qid,
                mail_addr: &mail_from,
                rcpt_addr: "",
                client_port: self.client_port,
            };
            for (i, verdict) in last.iter_mut().enumerate() {
                if !self.in_envelope(i) {
                    continue;
                }
                let cur = edited.as_ref().unwrap_or(msg);
                let (v, mods_from) = {
                    let before = res.mods.len();
                    let v = self.content(i, cur, &vals, &mut res)?;
                    (v, before)
                };
                match v {
                    Verdict::Go | Verdict::Skip => {}
                    Verdict::Accept => *verdict = Outcome::Accept,
                    Verdict::Stop(o, t) => {
                        ended = Some((o, t));
                        break;
                    }
                }
                // Apply this milter's edits for the milters after it.
                if i + 1 < n && res.mods.len() > mods_from {
                    let leadspc = self.conns[i]
                        .as_ref()
                        .map(|c| c.neg.has(wire::P_HDR_LEADSPC))
                        .unwrap_or(false);
                    let mut m = edited.take().unwrap_or_else(|| msg.clone());
                    apply(&mut m, &res.mods[mods_from..], leadspc);
                    edited = Some(m);
                }
            }
        }

        match ended {
            Some((o, t)) => stop(&mut res, o, t),
            None => {
                // The message passed the chain: report the last participating milter's word.
                res.outcome = (0..n)
                    .rev()
                    .find(|&i| self.conns[i].is_some())
                    .map(|i| last[i])
                    .unwrap_or(Outcome::Accept);
            }
        }
        res.add(L_TOTAL, t_start.elapsed());

        // smtpd's mail_reset(): SMFIC_ABORT to every milter still connected, then the
        // next transaction starts with MAIL on the same connections.
        for c in self.conns.iter_mut().flatten() {
            wire::packet(&mut c.wbuf, wire::C_ABORT, b"");
            c.state = State::Envelope;
            c.flush()?;
        }
        if self.opts.trace {
            let text = res.reply_text.clone().unwrap_or_default();
            self.trace.push(format!(
                "result: {}{}",
                res.outcome.name(),
                if text.is_empty() {
                    String::new()
                } else {
                    format!(" ({text})")
                }
            ));
        }
        Ok(res)
    }

    /// Headers, end of headers, body chunks and end of message to milter `i`.
    fn content(
        &mut self,
        i: usize,
        msg: &Message,
        vals: &MacroValues,
        res: &mut MsgResult,
    ) -> Result<Verdict, Failure> {
        let opts = self.opts;
        let (protocol, leadspc) = {
            let c = self.conns[i].as_ref().unwrap();
            (c.neg.protocol, c.neg.has(wire::P_HDR_LEADSPC))
        };
        for (flag, stage) in [
            (wire::P_NOHDRS, L_HEADER),
            (wire::P_NOEOH, L_EOH),
            (wire::P_NOBODY, L_BODY),
        ] {
            if protocol & flag != 0 {
                res.skipped[stage] = true;
            }
        }
        // Headers (each with the end-of-header macros, as milter8_header sends them).
        if protocol & wire::P_NOHDRS == 0 {
            let t0 = Instant::now();
            let mut acc = Answer::Skipped;
            for h in &msg.headers {
                let (v, answered) = self.event(
                    i,
                    Some(Stage::Eoh),
                    vals,
                    wire::C_HEADER,
                    &[&h.name, h.wire_value(leadspc)],
                    false,
                    res,
                )?;
                acc = acc.max(answered);
                match v {
                    Verdict::Go | Verdict::Skip => {}
                    Verdict::Accept | Verdict::Stop(..) => {
                        res.add(L_HEADER, t0.elapsed());
                        return Ok(v);
                    }
                }
            }
            res.mark(L_HEADER, acc, t0);
        }
        if protocol & wire::P_NOEOH == 0 {
            let t0 = Instant::now();
            let (v, answered) =
                self.event(i, Some(Stage::Eoh), vals, wire::C_EOH, &[], false, res)?;
            res.mark(L_EOH, answered, t0);
            match v {
                Verdict::Go | Verdict::Skip => {}
                _ => return Ok(v),
            }
        }
        if protocol & wire::P_NOBODY == 0 && !msg.body.is_empty() {
            let t0 = Instant::now();
            let mut acc = Answer::Skipped;
            for chunk in chunks(&msg.body, opts.chunk) {
                let (v, answered) =
                    self.event(i, Some(Stage::Eom), vals, wire::C_BODY, &[chunk], true, res)?;
                acc = acc.max(answered);
                match v {
                    Verdict::Go => {}
                    // SMFIR_SKIP: no more body chunks to this milter.
                    Verdict::Skip => break,
                    Verdict::Accept | Verdict::Stop(..) => {
                        res.add(L_BODY, t0.elapsed());
                        return Ok(v);
                    }
                }
            }
            res.mark(L_BODY, acc, t0);
        }
        let t0 = Instant::now();
        let (v, _) = self.event(i, Some(Stage::Eom), vals, wire::C_BODYEOB, &[], true, res)?;
        res.add(L_EOM, t0.elapsed());
        Ok(match v {
            Verdict::Skip => {
                return Err(Failure::unexpected(
                    &self.opts.milters[i].spec,
                    "SKIP at end of message".into(),
                ))
            }
            v => v,
        })
    }

    /// End the session: SMFIC_QUIT to every milter still connected.
    pub fn quit(mut self) {
        for i in 0..self.conns.len() {
            self.close(i, true);
        }
    }
}

/// Apply a milter's edits to the message the next milter in the chain will see.
fn apply(m: &mut Message, mods: &[(usize, Modification)], leadspc: bool) {
    // Without SMFIP_HDR_LEADSPC, Postfix puts one space after the colon itself.
    let raw = |v: &[u8]| {
        if leadspc {
            v.to_vec()
        } else {
            let mut r = Vec::with_capacity(v.len() + 1);
            r.push(b' ');
            r.extend_from_slice(v);
            r
        }
    };
    for (_, md) in mods {
        match md {
            Modification::AddHeader { name, value } => m.add_header(name, raw(value)),
            Modification::InsertHeader { index, name, value } => {
                m.insert_header(*index, name, raw(value))
            }
            Modification::ChangeHeader { index, name, value } => m.change_header(
                *index,
                name,
                if value.is_empty() {
                    None
                } else {
                    Some(raw(value))
                },
            ),
            Modification::ReplaceBody(_) => {}
            _ => {}
        }
    }
    // Body replacement arrives in pieces; the pieces together are the new body.
    let mut body: Option<Vec<u8>> = None;
    for (_, md) in mods {
        if let Modification::ReplaceBody(b) = md {
            body.get_or_insert_with(Vec::new).extend_from_slice(b);
        }
    }
    if let Some(b) = body {
        m.body = b;
    }
}

fn cmd_name(cmd: u8) -> &'static str {
    match cmd {
        wire::C_CONNECT => "connect",
        wire::C_HELO => "helo",
        wire::C_MAIL => "mail",
        wire::C_RCPT => "rcpt",
        wire::C_DATA => "data",
        wire::C_HEADER => "header",
        wire::C_EOH => "eoh",
        wire::C_BODY => "body",
        wire::C_BODYEOB => "eom",
        _ => "?",
    }
}

pub fn protocol_names(p: u32) -> String {
    const NAMES: [&str; 21] = [
        "NOCONNECT",
        "NOHELO",
        "NOMAIL",
        "NORCPT",
        "NOBODY",
        "NOHDRS",
        "NOEOH",
        "NR_HDR",
        "NOUNKNOWN",
        "NODATA",
        "SKIP",
        "RCPT_REJ",
        "NR_CONN",
        "NR_HELO",
        "NR_MAIL",
        "NR_RCPT",
        "NR_DATA",
        "NR_UNKN",
        "NR_EOH",
        "NR_BODY",
        "HDR_LEADSPC",
    ];
    let v: Vec<&str> = NAMES
        .iter()
        .enumerate()
        .filter(|(b, _)| p & (1 << b) != 0)
        .map(|(_, n)| *n)
        .collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(",")
    }
}

/// A one-line rendering of a modification for --check.
pub fn show_mod(m: &Modification) -> String {
    let s = |b: &[u8]| String::from_utf8_lossy(b).replace('\n', "\\n");
    match m {
        Modification::AddHeader { name, value } => {
            format!("add header {}:{}", s(name), s(value))
        }
        Modification::InsertHeader { index, name, value } => {
            format!("insert header at {index} {}:{}", s(name), s(value))
        }
        Modification::ChangeHeader { index, name, value } if value.is_empty() => {
            format!("delete header {}[{index}]", s(name))
        }
        Modification::ChangeHeader { index, name, value } => {
            format!("change header {}[{index}]:{}", s(name), s(value))
        }
        Modification::ReplaceBody(b) => format!("replace body ({} bytes)", b.len()),
        Modification::AddRcpt { rcpt, args } => format!(
            "add recipient {}{}",
            s(rcpt),
            args.as_ref()
                .map(|a| format!(" {}", s(a)))
                .unwrap_or_default()
        ),
        Modification::DelRcpt(r) => format!("delete recipient {}", s(r)),
        Modification::ChangeFrom { from, args } => format!(
            "change sender {}{}",
            s(from),
            args.as_ref()
                .map(|a| format!(" {}", s(a)))
                .unwrap_or_default()
        ),
        Modification::Quarantine(r) => format!("quarantine: {}", s(r)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::thread;

    /// A scripted milter: negotiates `protocol`, then answers every command that expects
    /// a reply with continue, and at end of message inserts a header and accepts.
    /// Returns the commands it saw (command byte and data).
    type Seen = thread::JoinHandle<Vec<(u8, Vec<u8>)>>;

    fn fake_milter(protocol: u32) -> (SocketAddr, Seen) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let h = thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut seen = Vec::new();
            loop {
                let mut len = [0u8; 4];
                if s.read_exact(&mut len).is_err() {
                    break;
                }
                let mut buf = vec![0u8; u32::from_be_bytes(len) as usize];
                s.read_exact(&mut buf).unwrap();
                let cmd = buf[0];
                let data = buf[1..].to_vec();
                seen.push((cmd, data));
                let mut out = Vec::new();
                match cmd {
                    wire::C_OPTNEG => {
                        let mut d = 6u32.to_be_bytes().to_vec();
                        d.extend_from_slice(&(wire::F_ADDHDRS).to_be_bytes());
                        d.extend_from_slice(&protocol.to_be_bytes());
                        wire::packet(&mut out, wire::C_OPTNEG, &d);
                    }
                    wire::C_MACRO | wire::C_ABORT => {}
                    wire::C_QUIT => break,
                    wire::C_BODYEOB => {
                        wire::packet(&mut out, wire::R_PROGRESS, b"");
                        let mut d = 0u32.to_be_bytes().to_vec();
                        d.extend_from_slice(b"X-Test\0 yes\0");
                        wire::packet(&mut out, wire::R_INSHEADER, &d);
                        wire::packet(&mut out, wire::R_ACCEPT, b"");
                    }
                    c => {
                        if wire::send_mode(c, protocol) == Send::Reply {
                            wire::packet(&mut out, wire::R_CONTINUE, b"");
                        }
                    }
                }
                s.write_all(&out).unwrap();
            }
            seen
        });
        (addr, h)
    }

    fn opts(addr: SocketAddr) -> Options {
        Options {
            milters: vec![MilterSpec {
                spec: format!("inet:{addr}"),
                endpoint: Endpoint::Inet(addr),
            }],
            client: ClientAddr::Ip("127.0.0.1".parse().unwrap()),
            client_name: "localhost".into(),
            helo: "client.example.test".into(),
            mail_from: None,
            rcpts: vec!["postmaster@example.test".into()],
            auth: Some("user".into()),
            daemon_name: "smtpd".into(),
            extra_macros: BTreeMap::new(),
            chunk: 8,
            timeout: Duration::from_secs(5),
            per_connection: 2,
            trace: true,
            tcp_nodelay: false,
        }
    }

    const MSG: &[u8] = b"From: a@example.test\nSubject: hi\n there\n\n0123456789abcdef\n";

    #[test]
    fn full_session_with_no_reply_headers_and_leading_space() {
        let proto = wire::P_NR_HDR | wire::P_HDR_LEADSPC | wire::P_NOHELO;
        let (addr, h) = fake_milter(proto);
        let o = opts(addr);
        let msg = Message::parse(MSG).unwrap();
        let mut s = Session::new(&o, 4000);
        let r1 = s.transaction(&msg).unwrap();
        let r2 = s.transaction(&msg).unwrap();
        s.quit();
        let seen = h.join().unwrap();
        assert_eq!(r1.outcome, Outcome::Accept);
        assert_eq!(r2.outcome, Outcome::Accept);
        assert_eq!(r1.mods.len(), 1);
        assert!(r1.no_reply[L_HEADER] && !r1.skipped[L_HEADER]);
        assert!(r1.skipped[L_HELO] && !r1.no_reply[L_HELO]);
        assert!(r1.lat[L_HEADER].is_none());
        assert!(r1.lat[L_CONNECT].is_some() && r2.lat[L_CONNECT].is_none());
        assert!(r1.lat[L_HELO].is_none(), "HELO was NO'd");
        let cmds: String = seen.iter().map(|(c, _)| *c as char).collect();
        // Connect macros, connect, helo macros only (NOHELO), mail macros, mail, ...
        // headers each preceded by eoh macros; body in 8-byte chunks with eom macros.
        let txn = "DMDRDTDLDLDNDBDBDBDEA";
        assert_eq!(cmds, format!("ODC{txn}{txn}Q"));
        // Header value keeps the leading space and the LF folding.
        let hdr = seen
            .iter()
            .find(|(c, d)| *c == b'L' && d.starts_with(b"Subject"))
            .unwrap();
        assert_eq!(hdr.1, b"Subject\0 hi\n there\0");
        // Connect info: hostname, '4', port, address.
        let conn = seen.iter().find(|(c, _)| *c == b'C').unwrap();
        assert_eq!(conn.1, b"localhost\x004\x0f\xa0127.0.0.1\0");
        // Mail macros include auth and the From address; fresh queue id per message.
        let mail_macros: Vec<_> = seen
            .iter()
            .filter(|(c, d)| *c == b'D' && d[0] == b'M')
            .collect();
        assert_eq!(mail_macros.len(), 2);
        let m = String::from_utf8_lossy(&mail_macros[0].1).into_owned();
        assert!(
            m.contains("{auth_type}\0PLAIN\0{auth_authen}\0user\0"),
            "{m:?}"
        );
        assert!(m.contains("{mail_addr}\0a@example.test\0"), "{m:?}");
        assert_ne!(mail_macros[0].1, mail_macros[1].1, "queue id must change");
        // Body chunks are CRLF and at most 8 bytes.
        let body: Vec<u8> = seen
            .iter()
            .filter(|(c, _)| *c == b'B')
            .take(3)
            .flat_map(|(_, d)| {
                assert!(d.len() <= 8);
                d.clone()
            })
            .collect();
        assert_eq!(body, b"0123456789abcdef\r\n");
    }

    #[test]
    fn space_eaten_without_leadspc() {
        let (addr, h) = fake_milter(0);
        let mut o = opts(addr);
        o.per_connection = 1;
        let msg = Message::parse(MSG).unwrap();
        let mut s = Session::new(&o, 4000);
        let r = s.transaction(&msg).unwrap();
        s.quit();
        let seen = h.join().unwrap();
        assert!(r.lat[L_HEADER].is_some() && r.lat[L_HELO].is_some());
        let hdr = seen
            .iter()
            .find(|(c, d)| *c == b'L' && d.starts_with(b"Subject"))
            .unwrap();
        assert_eq!(hdr.1, b"Subject\0hi\n there\0");
    }

    #[test]
    fn apply_edits_for_next_milter() {
        let mut m = Message::parse(MSG).unwrap();
        apply(
            &mut m,
            &[(
                0,
                Modification::InsertHeader {
                    index: 0,
                    name: b"DKIM-Signature".to_vec(),
                    value: b"v=1".to_vec(),
                },
            )],
            false,
        );
        assert_eq!(m.headers[0].raw, b" v=1");
    }
}
