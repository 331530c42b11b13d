//! A scripted, authoritative DNS server on loopback for rmilter's tests, so that no test touches
//! live DNS. It serves the root zone: every name the test data does not hold gets a real NXDOMAIN
//! (with the root SOA), a name that exists without the asked type, or that only has names below
//! it, gets NODATA, and CNAMEs are followed inside the data. UDP and TCP listen on the same port
//! of 127.0.0.1; a UDP answer larger than the client's EDNS size (512 without EDNS) is sent with
//! TC=1, so the client retries over TCP. Faults can be injected per name (and the names below it)
//! and record type, every query is logged with its transport, and the zone can be replaced while
//! the server runs. The server runs on its own thread and tokio runtime, so synchronous and async
//! tests can both use it.
//!
//! The answers themselves come from [`rmilter::dns::zone`], the server behind
//! `rmilter explain --dns` (decoding, EDNS, NXDOMAIN/NODATA, CNAME chains, TC=1), so the tests
//! exercise the same DNS code users run. This file adds what tests need around it: faults
//! below the request handler ("never answer", "close the TCP connection", "TC=1 on UDP
//! only", delays), the query log, a zone replaced at run time, and a thread of its own.

#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use mail_auth::MessageAuthenticator;
use mail_auth::hickory_resolver::config::{
    NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use mail_auth::hickory_resolver::proto::op::ResponseCode;
use mail_auth::hickory_resolver::proto::rr::rdata::{A, AAAA, CNAME, MX, PTR, TXT};
use mail_auth::hickory_resolver::proto::rr::{Name, RData, Record};
use rmilter::dns::zone::{self as served, label_key};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::oneshot;

pub use mail_auth::hickory_resolver::proto::rr::RecordType as RType;

/// TTL of the records in a [`Zone`] unless [`Zone::ttl`] changes it.
pub const DEFAULT_TTL: u32 = 60;
/// TTL and minimum of the root SOA, hence the negative-caching time of NXDOMAIN and NODATA
/// answers: short, so that a record published later by a test is seen at once.
#[allow(unused_imports)]
pub use rmilter::dns::zone::NEGATIVE_TTL;
/// Total length of the padding TXT record that [`Fault::Oversized`] adds.
pub const OVERSIZED_TXT_LEN: usize = 9000;

/// How a query reached the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
}

/// A failure injected for the queries that match a name (and the names below it) and a type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Never answer (UDP and TCP; the TCP connection stays open).
    Timeout,
    /// Answer normally after this delay.
    Delay(Duration),
    /// Answer SERVFAIL.
    ServFail,
    /// Answer REFUSED.
    Refused,
    /// Over UDP answer with TC=1 and no records; over TCP close the connection without
    /// answering, so the client's retry over TCP fails.
    Truncated,
    /// Add a TXT record of [`OVERSIZED_TXT_LEN`] bytes (to the answer for TXT queries, to the
    /// additional section otherwise), so that the answer never fits in UDP and arrives over TCP.
    Oversized,
    /// Answer `name CNAME loop.name` and `loop.name CNAME name`, whatever the zone holds.
    CnameLoop,
}

/// The records the server answers from. Names are case-insensitive and may be written with or
/// without the trailing dot; a missing name is NXDOMAIN. The root SOA is always there. The
/// server answers from it with the code of `rmilter explain --dns` ([`rmilter::dns::zone`]):
/// NXDOMAIN or NODATA with the root SOA, CNAMEs followed inside the data, TC=1 over UDP.
#[derive(Clone, Debug)]
pub struct Zone {
    /// Owner and data, in insertion order.
    records: Vec<(Name, RData)>,
    ttl: u32,
}

impl Default for Zone {
    fn default() -> Self {
        Self::new()
    }
}

impl Zone {
    /// A zone with nothing but the root SOA.
    pub fn new() -> Zone {
        Zone {
            records: Vec::new(),
            ttl: DEFAULT_TTL,
        }
    }

    /// The TTL of every record but the SOA (default [`DEFAULT_TTL`]).
    pub fn ttl(mut self, ttl: u32) -> Zone {
        self.ttl = ttl;
        self
    }

    /// A TXT record holding `value`, split into strings of at most 255 bytes.
    pub fn txt(self, owner: &str, value: &str) -> Zone {
        let strings: Vec<&[u8]> = if value.is_empty() {
            vec![b""]
        } else {
            value.as_bytes().chunks(255).collect()
        };
        self.txt_strings(owner, &strings)
    }

    /// A TXT record made of exactly these strings (each at most 255 bytes).
    pub fn txt_strings<S: AsRef<[u8]>>(self, owner: &str, strings: &[S]) -> Zone {
        let strings: Vec<&[u8]> = strings.iter().map(AsRef::as_ref).collect();
        assert!(
            strings.iter().all(|s| s.len() <= 255),
            "a TXT string is at most 255 bytes"
        );
        self.add(owner, RData::TXT(TXT::from_bytes(strings)))
    }

    pub fn a(self, owner: &str, addr: Ipv4Addr) -> Zone {
        self.add(owner, RData::A(A(addr)))
    }

    pub fn aaaa(self, owner: &str, addr: Ipv6Addr) -> Zone {
        self.add(owner, RData::AAAA(AAAA(addr)))
    }

    pub fn mx(self, owner: &str, preference: u16, exchange: &str) -> Zone {
        self.add(owner, RData::MX(MX::new(preference, name(exchange))))
    }

    pub fn ptr(self, owner: &str, target: &str) -> Zone {
        self.add(owner, RData::PTR(PTR(name(target))))
    }

    /// A PTR record for `addr` at its `in-addr.arpa` or `ip6.arpa` name.
    pub fn ptr_for(self, addr: IpAddr, target: &str) -> Zone {
        let owner = Name::from(addr).to_ascii();
        self.ptr(&owner, target)
    }

    pub fn cname(self, owner: &str, target: &str) -> Zone {
        self.add(owner, RData::CNAME(CNAME(name(target))))
    }

    /// Reads "name TYPE value" lines (TXT, A, AAAA, MX, PTR, CNAME). A TXT value written in
    /// double quotes is taken as those strings (`"a" "b"`, with `\"`, `\\` and `\DDD` escapes);
    /// otherwise the rest of the line is one value, split automatically. Blank lines and lines
    /// starting with `;` or `#` are skipped. Panics on a line it cannot read.
    pub fn from_zone_file_lines(text: &str) -> Zone {
        let mut zone = Zone::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with(';') || line.starts_with('#') {
                continue;
            }
            let (owner, rest) = line
                .split_once(char::is_whitespace)
                .unwrap_or_else(|| panic!("no record type in zone line {line:?}"));
            let (rtype, value) = rest
                .trim_start()
                .split_once(char::is_whitespace)
                .unwrap_or_else(|| panic!("no value in zone line {line:?}"));
            let value = value.trim();
            let bad = |what: &str| -> ! { panic!("bad {what} in zone line {line:?}") };
            zone = match rtype.to_ascii_uppercase().as_str() {
                "TXT" if value.starts_with('"') => {
                    let strings = parse_quoted_strings(value).unwrap_or_else(|| bad("TXT"));
                    zone.txt_strings(owner, &strings)
                }
                "TXT" => zone.txt(owner, value),
                "A" => zone.a(owner, value.parse().unwrap_or_else(|_| bad("A"))),
                "AAAA" => zone.aaaa(owner, value.parse().unwrap_or_else(|_| bad("AAAA"))),
                "MX" => {
                    let (preference, exchange) = value
                        .split_once(char::is_whitespace)
                        .unwrap_or_else(|| bad("MX"));
                    let preference = preference.parse().unwrap_or_else(|_| bad("MX"));
                    zone.mx(owner, preference, exchange.trim())
                }
                "PTR" => zone.ptr(owner, value),
                "CNAME" => zone.cname(owner, value),
                _ => bad("record type"),
            };
        }
        zone
    }

    fn add(mut self, owner: &str, data: RData) -> Zone {
        self.records.push((name(owner), data));
        self
    }

    /// The data as the server holds it: every record with this zone's TTL.
    fn served(&self) -> served::Zone {
        let mut zone = served::Zone::new();
        for (owner, data) in &self.records {
            zone.insert(owner, self.ttl, data.clone());
        }
        zone
    }
}

struct FaultRule {
    /// Lower-case, no trailing dot; "" matches every name.
    name: String,
    /// Match only `name` itself, not the names below it.
    exact: bool,
    rtype: Option<RType>,
    fault: Fault,
}

impl FaultRule {
    fn matches(&self, qname: &str, qtype: RType) -> bool {
        let name_matches = qname == self.name
            || (!self.exact
                && (self.name.is_empty()
                    || qname
                        .strip_suffix(&self.name)
                        .is_some_and(|head| head.ends_with('.'))));
        name_matches && self.rtype.is_none_or(|t| t == qtype)
    }
}

/// State shared by the test and the server thread. No lock is held across an await.
struct Shared {
    /// The data served, and the TTL of the records the faults make up.
    zone: RwLock<(served::Zone, u32)>,
    faults: Mutex<Vec<FaultRule>>,
    log: Mutex<Vec<(String, RType, Transport)>>,
}

/// The running server. Dropping it stops it.
pub struct TestDns {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl TestDns {
    /// Starts a server on a free port of 127.0.0.1 (the same port for UDP and TCP).
    pub fn start(zone: Zone) -> TestDns {
        for _ in 0..100 {
            let udp = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind UDP");
            let addr = udp.local_addr().expect("UDP address");
            if let Ok(tcp) = std::net::TcpListener::bind(addr) {
                return Self::run(udp, tcp, zone);
            }
        }
        panic!("no port of 127.0.0.1 was free for both UDP and TCP");
    }

    /// Starts a server at exactly `addr`, for example where a stopped one was, so that a test
    /// can take the resolver away and bring it back.
    pub fn start_on(addr: SocketAddr, zone: Zone) -> TestDns {
        let udp = std::net::UdpSocket::bind(addr).expect("bind UDP");
        let tcp = std::net::TcpListener::bind(addr).expect("bind TCP");
        Self::run(udp, tcp, zone)
    }

    fn run(udp: std::net::UdpSocket, tcp: std::net::TcpListener, zone: Zone) -> TestDns {
        let addr = udp.local_addr().expect("UDP address");
        udp.set_nonblocking(true).expect("non-blocking UDP");
        tcp.set_nonblocking(true).expect("non-blocking TCP");
        let shared = Arc::new(Shared {
            zone: RwLock::new((zone.served(), zone.ttl)),
            faults: Mutex::new(Vec::new()),
            log: Mutex::new(Vec::new()),
        });
        let (stop, stopped) = oneshot::channel();
        let server = shared.clone();
        let thread = std::thread::Builder::new()
            .name("test-dns".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("tokio runtime");
                runtime.block_on(async move {
                    let udp = Arc::new(UdpSocket::from_std(udp).expect("tokio UDP"));
                    let tcp = TcpListener::from_std(tcp).expect("tokio TCP");
                    tokio::select! {
                        _ = serve_udp(udp, server.clone()) => {}
                        _ = serve_tcp(tcp, server) => {}
                        _ = stopped => {}
                    }
                });
                // Dropping the runtime drops every delayed answer and open TCP connection.
            })
            .expect("spawn the DNS server thread");
        TestDns {
            addr,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Replaces the zone; the next query sees the new data.
    pub fn set_zone(&self, zone: Zone) {
        *self.shared.zone.write().unwrap() = (zone.served(), zone.ttl);
    }

    /// Injects `fault` for `name_or_suffix` and every name below it ("" or "." for every name),
    /// for one record type or, with `None`, all. When several faults match a query, the one set
    /// last applies.
    pub fn set_fault(&self, name_or_suffix: &str, rtype: Option<RType>, fault: Fault) {
        self.shared.faults.lock().unwrap().push(FaultRule {
            name: key(name_or_suffix),
            exact: false,
            rtype,
            fault,
        });
    }

    /// Like [`TestDns::set_fault`] for `name` alone, not the names below it.
    pub fn set_fault_exact(&self, name: &str, rtype: Option<RType>, fault: Fault) {
        self.shared.faults.lock().unwrap().push(FaultRule {
            name: key(name),
            exact: true,
            rtype,
            fault,
        });
    }

    pub fn clear_faults(&self) {
        self.shared.faults.lock().unwrap().clear();
    }

    /// Every query received so far, in order: name (lower case, no trailing dot), type and
    /// transport. Queries that got a fault are logged too.
    pub fn query_log(&self) -> Vec<(String, RType, Transport)> {
        self.shared.log.lock().unwrap().clone()
    }

    pub fn clear_log(&self) {
        self.shared.log.lock().unwrap().clear();
    }

    /// Stops the server and closes its sockets (queries then fail with "connection refused").
    pub fn stop(self) {}

    /// A resolver configuration that asks only this server, over UDP and TCP.
    pub fn resolver_config(&self) -> ResolverConfig {
        let mut server = NameServerConfig::udp_and_tcp(self.addr.ip());
        for connection in &mut server.connections {
            connection.port = self.addr.port();
        }
        ResolverConfig::from_name_servers(vec![server])
    }

    /// A mail-auth authenticator that asks only this server with [`resolver_opts`].
    pub fn authenticator(&self, timeout: Duration) -> MessageAuthenticator {
        MessageAuthenticator::new(self.resolver_config(), resolver_opts(timeout))
            .expect("build the resolver")
    }
}

impl Drop for TestDns {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Resolver options for tests: one try with `timeout`, no cache, no hosts file, no search
/// domains. hickory's `attempts` counts retries after the first try (the default 2 means up to
/// three times `timeout`), so it is 0 here: a lookup fails within one `timeout`.
pub fn resolver_opts(timeout: Duration) -> ResolverOpts {
    let mut opts = ResolverOpts::default();
    opts.timeout = timeout;
    opts.attempts = 0;
    opts.cache_size = 0;
    opts.ndots = 0;
    opts.num_concurrent_reqs = 1;
    opts.use_hosts_file = ResolveHosts::Never;
    opts
}

/// What to do with one received packet.
enum Reply {
    /// Send nothing.
    Silent,
    /// Close the TCP connection (UDP: send nothing).
    Close,
    Send {
        delay: Option<Duration>,
        bytes: Vec<u8>,
    },
}

async fn serve_udp(socket: Arc<UdpSocket>, shared: Arc<Shared>) {
    let mut buf = vec![0u8; 65535];
    loop {
        let Ok((len, peer)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        match handle(&shared, &buf[..len], Transport::Udp) {
            Reply::Silent | Reply::Close => {}
            Reply::Send { delay: None, bytes } => {
                let _ = socket.send_to(&bytes, peer).await;
            }
            Reply::Send {
                delay: Some(delay),
                bytes,
            } => {
                let socket = socket.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _ = socket.send_to(&bytes, peer).await;
                });
            }
        }
    }
}

async fn serve_tcp(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        if let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve_connection(stream, shared.clone()));
        }
    }
}

/// One TCP connection: length-prefixed queries, possibly several at once; each answer is
/// written when ready, so a delayed answer does not hold up the others.
async fn serve_connection(stream: TcpStream, shared: Arc<Shared>) {
    let (mut reader, writer) = stream.into_split();
    let writer = Arc::new(tokio::sync::Mutex::new(writer));
    loop {
        let mut len = [0u8; 2];
        if reader.read_exact(&mut len).await.is_err() {
            return;
        }
        let mut packet = vec![0u8; usize::from(u16::from_be_bytes(len))];
        if reader.read_exact(&mut packet).await.is_err() {
            return;
        }
        match handle(&shared, &packet, Transport::Tcp) {
            Reply::Silent => {}
            Reply::Close => {
                let _ = writer.lock().await.shutdown().await;
                return;
            }
            Reply::Send { delay, bytes } => {
                let writer = writer.clone();
                tokio::spawn(async move {
                    if let Some(delay) = delay {
                        tokio::time::sleep(delay).await;
                    }
                    write_frame(&writer, &bytes).await;
                });
            }
        }
    }
}

async fn write_frame(writer: &tokio::sync::Mutex<OwnedWriteHalf>, bytes: &[u8]) {
    let Ok(len) = u16::try_from(bytes.len()) else {
        return;
    };
    let mut frame = Vec::with_capacity(bytes.len() + 2);
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(bytes);
    let _ = writer.lock().await.write_all(&frame).await;
}

/// Decodes one query, logs it, applies the fault or the zone, and encodes the answer.
fn handle(shared: &Shared, packet: &[u8], transport: Transport) -> Reply {
    let udp = transport == Transport::Udp;
    let request = match served::decode(packet) {
        Ok(request) => request,
        Err(reply) => return send(reply, None),
    };
    // Every question is logged, whatever the answer.
    if let [query] = request.queries.as_slice() {
        let qkey = label_key(query.name());
        let mut log = shared.log.lock().unwrap();
        log.push((qkey, query.query_type(), transport));
    }
    let (mut response, query) = match served::prepare(&request) {
        Ok(prepared) => prepared,
        Err(done) => return send(served::encode(&done, &request, udp), None),
    };
    let qname = query.name().clone();
    let qtype = query.query_type();
    let qkey = label_key(&qname);

    let fault = shared
        .faults
        .lock()
        .unwrap()
        .iter()
        .rev()
        .find(|rule| rule.matches(&qkey, qtype))
        .map(|rule| rule.fault.clone());

    let mut delay = None;
    match fault {
        Some(Fault::Timeout) => return Reply::Silent,
        Some(Fault::ServFail) => {
            response.metadata.response_code = ResponseCode::ServFail;
            return send(served::encode(&response, &request, udp), None);
        }
        Some(Fault::Refused) => {
            response.metadata.response_code = ResponseCode::Refused;
            return send(served::encode(&response, &request, udp), None);
        }
        Some(Fault::Truncated) if transport == Transport::Tcp => return Reply::Close,
        Some(Fault::Truncated) => {
            response.metadata.authoritative = true;
            response.metadata.truncation = true;
            return send(served::encode(&response, &request, udp), None);
        }
        Some(Fault::CnameLoop) => {
            let ttl = shared.zone.read().unwrap().1;
            let other = Name::from_ascii(format!("loop.{}", qname.to_ascii()))
                .unwrap_or_else(|_| qname.clone());
            response.metadata.authoritative = true;
            response.add_answer(Record::from_rdata(
                qname.clone(),
                ttl,
                RData::CNAME(CNAME(other.clone())),
            ));
            response.add_answer(Record::from_rdata(other, ttl, RData::CNAME(CNAME(qname))));
            return send(served::encode(&response, &request, udp), None);
        }
        Some(Fault::Delay(d)) => delay = Some(d),
        Some(Fault::Oversized) | None => {}
    }

    let zone = shared.zone.read().unwrap();
    zone.0.answer(&mut response, &qname, qtype);
    if fault == Some(Fault::Oversized) {
        let record = oversized_record(qname, zone.1);
        if qtype == RType::TXT {
            response.metadata.response_code = ResponseCode::NoError;
            response.authorities.clear();
            response.add_answer(record);
        } else {
            response.add_additional(record);
        }
    }
    drop(zone);
    send(served::encode(&response, &request, udp), delay)
}

/// The padding of [`Fault::Oversized`]: one TXT record of [`OVERSIZED_TXT_LEN`] bytes of `x`,
/// in strings of 250.
fn oversized_record(owner: Name, ttl: u32) -> Record {
    let padding = [b'x'; 250];
    let strings: Vec<&[u8]> = (0..OVERSIZED_TXT_LEN / 250).map(|_| &padding[..]).collect();
    Record::from_rdata(owner, ttl, RData::TXT(TXT::from_bytes(strings)))
}

/// Send these bytes (after `delay`), or nothing.
fn send(bytes: Option<Vec<u8>>, delay: Option<Duration>) -> Reply {
    match bytes {
        Some(bytes) => Reply::Send { delay, bytes },
        None => Reply::Silent,
    }
}

/// The zone's key for a name: lower case, no trailing dot ("" for the root).
fn key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// A fully qualified name from test data.
fn name(text: &str) -> Name {
    let key = key(text);
    if key.is_empty() {
        return Name::root();
    }
    // Labels are raw octets (RFC 2181 §11): names such as `foo:bar/baz` that
    // a zone file cannot spell are still valid in the DNS.
    Name::from_ascii(format!("{key}."))
        .or_else(|_| {
            let mut name = Name::from_labels(key.split('.').map(str::as_bytes))?;
            name.set_fqdn(true);
            Ok::<Name, mail_auth::hickory_resolver::proto::ProtoError>(name)
        })
        .unwrap_or_else(|e| panic!("bad DNS name {text:?}: {e}"))
}

/// Splits `"a" "b\"c"` into its strings; `None` when the text is not a list of quoted strings.
fn parse_quoted_strings(text: &str) -> Option<Vec<Vec<u8>>> {
    let mut strings = Vec::new();
    let mut bytes = text.bytes().peekable();
    loop {
        while bytes.next_if(u8::is_ascii_whitespace).is_some() {}
        match bytes.next() {
            None => return Some(strings),
            Some(b'"') => {}
            Some(_) => return None,
        }
        let mut current = Vec::new();
        loop {
            match bytes.next()? {
                b'"' => break,
                b'\\' => {
                    let first = bytes.next()?;
                    if first.is_ascii_digit() {
                        let mut value = u32::from(first - b'0');
                        for _ in 0..2 {
                            let digit = bytes.next_if(u8::is_ascii_digit)?;
                            value = value * 10 + u32::from(digit - b'0');
                        }
                        current.push(u8::try_from(value).ok()?);
                    } else {
                        current.push(first);
                    }
                }
                byte => current.push(byte),
            }
        }
        strings.push(current);
    }
}
