//! Offline DNS for `rmilter explain --dns ZONEFILE`: a zone file read into
//! memory and served by a small authoritative server on 127.0.0.1 (UDP and
//! TCP on one port), which the verifier's resolver is then pointed at.
//!
//! The server answers for the whole tree (it acts as the root zone): a name
//! the file does not hold gets NXDOMAIN with the root SOA, a name that exists
//! without the asked type (or only has names below it) gets NODATA, CNAMEs
//! are followed inside the data, and a UDP answer larger than the client's
//! EDNS size comes with TC=1 so the client retries over TCP.
//!
//! The file format is the zone-file subset that `rmilter keys dns` and
//! `keys rotate` print: `name [TTL] [IN] TYPE rdata` lines, `;` comments,
//! `$ORIGIN` and `$TTL`, `@`, records continued over lines in parentheses,
//! TXT data as quoted strings (`"a" "b"`, with `\"`, `\\` and `\DDD`); an
//! unquoted TXT value is taken as one string of the rest of the line up to
//! a `;` comment (so `name TXT v=spf1 -all` reads as written; quote values
//! that hold `;`, as DKIM and DMARC records do). Types: TXT, A, AAAA, MX, PTR,
//! CNAME; SOA and NS lines are accepted and ignored.

use mail_auth::hickory_resolver::proto::op::{
    Edns, Message, MessageType, OpCode, Query, ResponseCode,
};
use mail_auth::hickory_resolver::proto::rr::rdata::{A, AAAA, CNAME, MX, PTR, SOA, TXT};
use mail_auth::hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
use std::collections::{BTreeMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

/// TTL of records without one (and without `$TTL`).
const DEFAULT_TTL: u32 = 60;
/// Negative-caching time of NXDOMAIN and NODATA answers.
pub const NEGATIVE_TTL: u32 = 1;
const MAX_UDP_PAYLOAD: usize = 4096;
const MAX_CNAME_CHAIN: usize = 16;

/// A zone file line that cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ZoneError {
    pub line: usize,
    pub message: String,
}

/// The records of a zone file: lower-case owner names without the trailing
/// dot ("" is the root), each with its records in file order.
#[derive(Debug, Clone)]
pub struct Zone {
    records: BTreeMap<String, Vec<(u32, RData)>>,
}

impl Default for Zone {
    fn default() -> Self {
        Self::new()
    }
}

impl Zone {
    /// A zone holding only the root SOA (whose minimum, [`NEGATIVE_TTL`],
    /// is the negative-caching time of its NXDOMAIN and NODATA answers).
    pub fn new() -> Zone {
        let soa = SOA::new(
            name_or_root("ns.invalid").unwrap_or_else(Name::root),
            name_or_root("hostmaster.invalid").unwrap_or_else(Name::root),
            1,
            3600,
            600,
            86400,
            NEGATIVE_TTL,
        );
        let mut records = BTreeMap::new();
        records.insert(String::new(), vec![(NEGATIVE_TTL, RData::SOA(soa))]);
        Zone { records }
    }

    /// Add a record at `owner` (its labels are matched case-insensitively,
    /// as raw octets).
    pub fn insert(&mut self, owner: &Name, ttl: u32, data: RData) {
        self.records
            .entry(label_key(owner))
            .or_default()
            .push((ttl, data));
    }

    /// Read a zone file.
    pub fn parse(text: &str) -> Result<Zone, ZoneError> {
        let mut zone = Zone::new();
        let mut origin: Option<String> = None;
        let mut default_ttl = DEFAULT_TTL;
        for (line_no, entry) in entries(text)? {
            let err = |message: String| ZoneError {
                line: line_no,
                message,
            };
            let mut tokens = entry.iter();
            let Some(first) = tokens.next() else { continue };
            if first.text.eq_ignore_ascii_case("$ORIGIN") {
                let value = tokens
                    .next()
                    .ok_or_else(|| err("$ORIGIN without a name".into()))?;
                origin = Some(key(&value.text));
                continue;
            }
            if first.text.eq_ignore_ascii_case("$TTL") {
                let value = tokens
                    .next()
                    .ok_or_else(|| err("$TTL without a value".into()))?;
                default_ttl = parse_ttl(&value.text)
                    .ok_or_else(|| err(format!("bad $TTL {:?}", value.text)))?;
                continue;
            }
            if first.text.starts_with('$') {
                return Err(err(format!("unsupported directive {}", first.text)));
            }
            let owner = absolute(&first.text, origin.as_deref());
            let mut ttl = default_ttl;
            let mut rtype = None;
            for token in tokens.by_ref() {
                if token.quoted {
                    return Err(err(format!(
                        "expected a record type, got \"{}\"",
                        token.text
                    )));
                }
                if let Some(t) = parse_ttl(&token.text) {
                    ttl = t;
                } else if token.text.eq_ignore_ascii_case("IN") {
                } else {
                    rtype = Some(token.text.to_ascii_uppercase());
                    break;
                }
            }
            let rtype = rtype.ok_or_else(|| err("no record type".into()))?;
            let rdata: Vec<&Token> = tokens.collect();
            let single = |what: &str| -> Result<&str, ZoneError> {
                match rdata.as_slice() {
                    [one] if !one.quoted => Ok(one.text.as_str()),
                    _ => Err(err(format!("{what} takes one value"))),
                }
            };
            let target = |text: &str| -> Result<Name, ZoneError> {
                name_or_root(&absolute(text, origin.as_deref()))
                    .ok_or_else(|| err(format!("bad name {text:?}")))
            };
            let data = match rtype.as_str() {
                "TXT" | "SPF" => {
                    if rdata.is_empty() {
                        return Err(err("TXT without data".into()));
                    }
                    let strings: Vec<Vec<u8>> = if rdata.iter().all(|t| t.quoted) {
                        rdata.iter().map(|t| t.bytes.clone()).collect()
                    } else {
                        // Unquoted: the rest of the line is one value.
                        let joined = rdata
                            .iter()
                            .map(|t| t.text.as_str())
                            .collect::<Vec<_>>()
                            .join(" ");
                        joined.as_bytes().chunks(255).map(<[u8]>::to_vec).collect()
                    };
                    if strings.iter().any(|s| s.len() > 255) {
                        return Err(err("a TXT string is at most 255 bytes".into()));
                    }
                    RData::TXT(TXT::from_bytes(strings.iter().map(Vec::as_slice).collect()))
                }
                "A" => RData::A(A(single("A")?
                    .parse()
                    .map_err(|_| err("bad IPv4 address".into()))?)),
                "AAAA" => RData::AAAA(AAAA(
                    single("AAAA")?
                        .parse()
                        .map_err(|_| err("bad IPv6 address".into()))?,
                )),
                "MX" => match rdata.as_slice() {
                    [preference, exchange] => RData::MX(MX::new(
                        preference
                            .text
                            .parse()
                            .map_err(|_| err("bad MX preference".into()))?,
                        target(&exchange.text)?,
                    )),
                    _ => return Err(err("MX takes a preference and a name".into())),
                },
                "PTR" => RData::PTR(PTR(target(single("PTR")?)?)),
                "CNAME" => RData::CNAME(CNAME(target(single("CNAME")?)?)),
                "SOA" | "NS" => continue,
                other => return Err(err(format!("unsupported record type {other}"))),
            };
            zone.records.entry(owner).or_default().push((ttl, data));
        }
        Ok(zone)
    }

    /// How many records the file held.
    pub fn len(&self) -> usize {
        self.records.values().map(Vec::len).sum::<usize>() - 1
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn is_empty_non_terminal(&self, key: &str) -> bool {
        let suffix = format!(".{key}");
        key.is_empty() || self.records.keys().any(|k| k.ends_with(&suffix))
    }

    fn resolve(&self, qname: &Name, qtype: RecordType) -> (Vec<Record>, ResponseCode, bool) {
        let mut answers = Vec::new();
        let mut owner = qname.clone();
        let mut seen = HashSet::new();
        loop {
            let owner_key = label_key(&owner);
            if !seen.insert(owner_key.clone()) || seen.len() > MAX_CNAME_CHAIN {
                return (answers, ResponseCode::NoError, false);
            }
            let Some(rdatas) = self.records.get(&owner_key) else {
                let code = if self.is_empty_non_terminal(&owner_key) {
                    ResponseCode::NoError
                } else {
                    ResponseCode::NXDomain
                };
                return (answers, code, true);
            };
            let matching: Vec<&(u32, RData)> = rdatas
                .iter()
                .filter(|(_, r)| qtype == RecordType::ANY || r.record_type() == qtype)
                .collect();
            if !matching.is_empty() {
                for (ttl, data) in matching {
                    answers.push(Record::from_rdata(owner.clone(), *ttl, data.clone()));
                }
                return (answers, ResponseCode::NoError, false);
            }
            let cname = rdatas.iter().find_map(|(ttl, r)| match r {
                RData::CNAME(CNAME(target)) => Some((*ttl, target.clone())),
                _ => None,
            });
            match cname {
                Some((ttl, target)) => {
                    answers.push(Record::from_rdata(
                        owner.clone(),
                        ttl,
                        RData::CNAME(CNAME(target.clone())),
                    ));
                    owner = target;
                }
                None => return (answers, ResponseCode::NoError, true),
            }
        }
    }

    /// Answer `qname`/`qtype` from the data into `response`: authoritative,
    /// the records (following CNAMEs inside the zone), and for NXDOMAIN or
    /// NODATA the root SOA in the authority section.
    pub fn answer(&self, response: &mut Message, qname: &Name, qtype: RecordType) {
        response.metadata.authoritative = true;
        let (answers, code, negative) = self.resolve(qname, qtype);
        response.metadata.response_code = code;
        response.add_answers(answers);
        if negative && let Some(soa) = self.soa() {
            response.add_authority(soa);
        }
    }

    fn soa(&self) -> Option<Record> {
        self.records.get("").and_then(|r| {
            r.iter()
                .find(|(_, d)| d.record_type() == RecordType::SOA)
                .map(|(_, d)| Record::from_rdata(Name::root(), NEGATIVE_TTL, d.clone()))
        })
    }
}

/// A running server; dropping it stops it.
pub struct ZoneServer {
    addr: SocketAddr,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl ZoneServer {
    /// Serve `zone` on a free port of 127.0.0.1 (UDP and TCP). Must be
    /// called inside a tokio runtime.
    pub async fn start(zone: Zone) -> std::io::Result<ZoneServer> {
        let zone = Arc::new(zone);
        let mut last = None;
        for _ in 0..50 {
            let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await?;
            let addr = udp.local_addr()?;
            match TcpListener::bind(addr).await {
                Ok(tcp) => {
                    let udp = Arc::new(udp);
                    let tasks = vec![
                        tokio::spawn(serve_udp(udp, zone.clone())),
                        tokio::spawn(serve_tcp(tcp, zone)),
                    ];
                    return Ok(ZoneServer { addr, tasks });
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| std::io::Error::other("no free port")))
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for ZoneServer {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

async fn serve_udp(socket: Arc<UdpSocket>, zone: Arc<Zone>) {
    let mut buf = vec![0u8; 65535];
    loop {
        let Ok((len, peer)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        if let Some(bytes) = answer(&zone, &buf[..len], true) {
            let _ = socket.send_to(&bytes, peer).await;
        }
    }
}

async fn serve_tcp(listener: TcpListener, zone: Arc<Zone>) {
    loop {
        if let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve_connection(stream, zone.clone()));
        }
    }
}

async fn serve_connection(mut stream: TcpStream, zone: Arc<Zone>) {
    loop {
        let mut len = [0u8; 2];
        if stream.read_exact(&mut len).await.is_err() {
            return;
        }
        let mut packet = vec![0u8; usize::from(u16::from_be_bytes(len))];
        if stream.read_exact(&mut packet).await.is_err() {
            return;
        }
        let Some(bytes) = answer(&zone, &packet, false) else {
            continue;
        };
        let Ok(len) = u16::try_from(bytes.len()) else {
            return;
        };
        let mut frame = Vec::with_capacity(bytes.len() + 2);
        frame.extend_from_slice(&len.to_be_bytes());
        frame.extend_from_slice(&bytes);
        if stream.write_all(&frame).await.is_err() {
            return;
        }
    }
}

/// The encoded answer to one query packet; `None`: send nothing.
fn answer(zone: &Zone, packet: &[u8], udp: bool) -> Option<Vec<u8>> {
    let request = match decode(packet) {
        Ok(request) => request,
        Err(reply) => return reply,
    };
    let (mut response, query) = match prepare(&request) {
        Ok(prepared) => prepared,
        Err(done) => return encode(&done, &request, udp),
    };
    zone.answer(&mut response, query.name(), query.query_type());
    encode(&response, &request, udp)
}

/// A received packet as a query. `Err`: what to send instead (a FORMERR
/// for a packet that is not a DNS message but has an ID; nothing for a
/// response or a packet too short to answer).
pub fn decode(packet: &[u8]) -> Result<Message, Option<Vec<u8>>> {
    match Message::from_vec(packet) {
        Ok(request) if request.message_type == MessageType::Query => Ok(request),
        Ok(_) => Err(None),
        Err(_) if packet.len() >= 2 => {
            let id = u16::from_be_bytes([packet[0], packet[1]]);
            Err(Message::error_msg(id, OpCode::Query, ResponseCode::FormErr)
                .to_vec()
                .ok())
        }
        Err(_) => Err(None),
    }
}

/// The response to `request` with its header, question and EDNS set, ready
/// for [`Zone::answer`], and the one question. `Err`: the finished response to a request the
/// server does not answer from its data (EDNS version above 0: BADVERS; an
/// opcode other than QUERY: NOTIMP; not exactly one question: FORMERR).
pub fn prepare(request: &Message) -> Result<(Message, &Query), Box<Message>> {
    let mut response = Message::response(request.id, request.op_code);
    response.metadata.recursion_desired = request.recursion_desired;
    response.add_queries(request.queries.iter().cloned());
    if let Some(edns) = &request.edns {
        let mut ours = Edns::new();
        ours.set_max_payload(MAX_UDP_PAYLOAD as u16);
        response.set_edns(ours);
        if edns.version() > 0 {
            response.metadata.response_code = ResponseCode::BADVERS;
            return Err(Box::new(response));
        }
    }
    if request.op_code != OpCode::Query {
        response.metadata.response_code = ResponseCode::NotImp;
        return Err(Box::new(response));
    }
    let [query] = request.queries.as_slice() else {
        response.metadata.response_code = ResponseCode::FormErr;
        return Err(Box::new(response));
    };
    Ok((response, query))
}

/// The bytes of `response`; over UDP an answer larger than the client
/// accepts (its EDNS size, 512 without EDNS, at most 4096) goes out empty
/// with TC=1, so the client asks again over TCP. A response that cannot be
/// encoded becomes a SERVFAIL.
pub fn encode(response: &Message, request: &Message, udp: bool) -> Option<Vec<u8>> {
    let Ok(bytes) = response.to_vec() else {
        return Message::error_msg(request.id, request.op_code, ResponseCode::ServFail)
            .to_vec()
            .ok();
    };
    let limit = usize::from(request.max_payload()).min(MAX_UDP_PAYLOAD);
    if udp && bytes.len() > limit {
        return response.truncate().to_vec().ok();
    }
    Some(bytes)
}

/// One token of a zone file entry.
#[derive(Debug, Clone)]
struct Token {
    /// The text (for quoted strings, lossily decoded).
    text: String,
    /// The exact bytes of a quoted string.
    bytes: Vec<u8>,
    quoted: bool,
}

/// The entries of a zone file: each a line's tokens, with parenthesised
/// groups joined across lines, numbered by the line they start on.
fn entries(text: &str) -> Result<Vec<(usize, Vec<Token>)>, ZoneError> {
    let mut out = Vec::new();
    let mut current: Vec<Token> = Vec::new();
    let mut start = 0;
    let mut depth = 0usize;
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        if depth == 0 {
            start = line_no;
            // `#` comments as in the test zones; `;` is the zone-file comment.
            if line.trim_start().starts_with('#') {
                continue;
            }
        }
        let bytes = line.as_bytes();
        let mut pos = 0;
        let err = |message: &str| ZoneError {
            line: line_no,
            message: message.to_string(),
        };
        while pos < bytes.len() {
            match bytes[pos] {
                b' ' | b'\t' | b'\r' => pos += 1,
                b';' => break,
                b'(' => {
                    depth += 1;
                    pos += 1;
                }
                b')' => {
                    depth = depth.checked_sub(1).ok_or_else(|| err("unbalanced )"))?;
                    pos += 1;
                }
                b'"' => {
                    pos += 1;
                    let mut value = Vec::new();
                    loop {
                        match bytes.get(pos) {
                            None => return Err(err("unterminated quoted string")),
                            Some(b'"') => {
                                pos += 1;
                                break;
                            }
                            Some(b'\\') => {
                                let first = *bytes.get(pos + 1).ok_or_else(|| err("bad escape"))?;
                                if first.is_ascii_digit() {
                                    let digits = bytes
                                        .get(pos + 1..pos + 4)
                                        .filter(|d| d.iter().all(u8::is_ascii_digit))
                                        .ok_or_else(|| err("bad \\DDD escape"))?;
                                    let n = digits
                                        .iter()
                                        .fold(0u32, |n, d| n * 10 + u32::from(d - b'0'));
                                    value.push(
                                        u8::try_from(n).map_err(|_| err("bad \\DDD escape"))?,
                                    );
                                    pos += 4;
                                } else {
                                    value.push(first);
                                    pos += 2;
                                }
                            }
                            Some(&b) => {
                                value.push(b);
                                pos += 1;
                            }
                        }
                    }
                    current.push(Token {
                        text: String::from_utf8_lossy(&value).into_owned(),
                        bytes: value,
                        quoted: true,
                    });
                }
                _ => {
                    let begin = pos;
                    while pos < bytes.len()
                        && !matches!(bytes[pos], b' ' | b'\t' | b'\r' | b';' | b'(' | b')' | b'"')
                    {
                        pos += 1;
                    }
                    let word = &line[begin..pos];
                    current.push(Token {
                        text: word.to_string(),
                        bytes: word.as_bytes().to_vec(),
                        quoted: false,
                    });
                }
            }
        }
        if depth == 0 && !current.is_empty() {
            out.push((start, std::mem::take(&mut current)));
        }
    }
    if depth != 0 {
        return Err(ZoneError {
            line: start,
            message: "unbalanced (".to_string(),
        });
    }
    Ok(out)
}

/// A TTL: seconds, or a number with s, m, h, d or w.
fn parse_ttl(text: &str) -> Option<u32> {
    let (digits, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => text.split_at(i),
        None => (text, ""),
    };
    let n: u32 = digits.parse().ok()?;
    let factor = match unit.to_ascii_lowercase().as_str() {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        "w" => 604_800,
        _ => return None,
    };
    n.checked_mul(factor)
}

/// An owner or target name as a zone key: relative names get `$ORIGIN`
/// (without one they are taken as absolute), `@` is the origin.
fn absolute(text: &str, origin: Option<&str>) -> String {
    if text == "@" {
        return origin.unwrap_or("").to_string();
    }
    if text.ends_with('.') {
        return key(text);
    }
    match origin {
        Some(o) if !o.is_empty() => format!("{}.{o}", key(text)),
        _ => key(text),
    }
}

fn key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// The lookup key of a name: its raw labels, lower-cased, joined with dots
/// (not `to_ascii`, which escapes octets such as `:` and `/`); "" for the root.
pub fn label_key(name: &Name) -> String {
    name.iter()
        .map(|label| String::from_utf8_lossy(label).to_ascii_lowercase())
        .collect::<Vec<_>>()
        .join(".")
}

fn name_or_root(key: &str) -> Option<Name> {
    let key = key.trim_end_matches('.');
    if key.is_empty() {
        return Some(Name::root());
    }
    Name::from_ascii(format!("{key}."))
        .or_else(|_| {
            let mut name = Name::from_labels(key.split('.').map(str::as_bytes))?;
            name.set_fqdn(true);
            Ok::<Name, mail_auth::hickory_resolver::proto::ProtoError>(name)
        })
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_keys_dns_prints() {
        let long = "v=DKIM1; k=rsa; p=".to_string() + &"A".repeat(400);
        let entry = crate::keys::zone_entry("example.com", "s1", &long);
        let text = format!(
            "; comment\n$TTL 300\n{entry}\nexample.com. 3600 IN TXT \"v=spf1 -all\" ; trailing\n\
             _dmarc.example.com IN TXT v=DMARC1;p=reject ; comment\n\
             $ORIGIN example.org.\n@ A 192.0.2.1\nmail 1h AAAA 2001:db8::1\n@ MX 10 mail\n\
             alias CNAME mail.example.org.\n# test-zone comment\n\
             quoted TXT \"a\\\"b\" \"c\\059d\"\n@ SOA ns hostmaster 1 2 3 4 5\n"
        );
        let zone = Zone::parse(&text).unwrap();
        assert_eq!(zone.len(), 8);
        let txt = |name: &str| -> Vec<Vec<u8>> {
            zone.records[name]
                .iter()
                .filter_map(|(_, r)| match r {
                    RData::TXT(t) => Some(t.txt_data.iter().flatten().copied().collect()),
                    _ => None,
                })
                .collect()
        };
        assert_eq!(txt("s1._domainkey.example.com"), vec![long.into_bytes()]);
        assert_eq!(zone.records["s1._domainkey.example.com"][0].0, 300);
        assert_eq!(txt("example.com"), vec![b"v=spf1 -all".to_vec()]);
        assert_eq!(zone.records["example.com"][0].0, 3600);
        assert_eq!(txt("_dmarc.example.com"), vec![b"v=DMARC1".to_vec()]);
        assert_eq!(txt("quoted.example.org"), vec![b"a\"bc;d".to_vec()]);
        assert!(matches!(zone.records["example.org"][0].1, RData::A(_)));
        assert_eq!(zone.records["mail.example.org"][0].0, 3600);
        assert!(matches!(zone.records["example.org"][1].1, RData::MX(_)));
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        for (text, line, message) in [
            ("a.example TXT \"open", 1, "unterminated quoted string"),
            ("a.example A 300.1.1.1", 1, "bad IPv4 address"),
            ("a.example HINFO x y", 1, "unsupported record type HINFO"),
            ("\n\na.example TXT ( \"x\"", 3, "unbalanced ("),
            ("a.example 300 IN", 1, "no record type"),
            ("$INCLUDE other", 1, "unsupported directive $INCLUDE"),
        ] {
            let e = Zone::parse(text).unwrap_err();
            assert_eq!((e.line, e.message.as_str()), (line, message), "{text}");
        }
    }

    #[tokio::test]
    async fn serves_answers_nxdomain_and_nodata() {
        use mail_auth::hickory_resolver::config::{
            NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
        };
        let zone = Zone::parse(
            "a.example TXT \"hello\"\nb.example CNAME a.example.\nsub.c.example A 192.0.2.9\n",
        )
        .unwrap();
        let server = ZoneServer::start(zone).await.unwrap();
        let mut ns = NameServerConfig::udp_and_tcp(server.addr().ip());
        for c in &mut ns.connections {
            c.port = server.addr().port();
        }
        let mut opts = ResolverOpts::default();
        opts.cache_size = 0;
        opts.attempts = 0;
        opts.use_hosts_file = ResolveHosts::Never;
        let resolver =
            mail_auth::MessageAuthenticator::new(ResolverConfig::from_name_servers(vec![ns]), opts)
                .unwrap();
        let r = resolver.resolver();
        let txt = r.txt_lookup("b.example.").await.unwrap();
        assert!(
            txt.answers().iter().any(
                |rec| matches!(&rec.data, RData::TXT(t) if t.txt_data[0].as_ref() == b"hello")
            )
        );
        let nx = r.txt_lookup("nothing.example.").await.unwrap_err();
        assert!(nx.is_nx_domain(), "{nx}");
        let nodata = r.txt_lookup("c.example.").await.unwrap_err();
        assert!(
            nodata.is_no_records_found() && !nodata.is_nx_domain(),
            "{nodata}"
        );
    }
}
