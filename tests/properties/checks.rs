//! The properties rmilter's parsers and writers keep, as plain functions
//! over their inputs. `tests/properties.rs` runs them on proptest's inputs in
//! the ordinary test run; the cargo-fuzz targets under `fuzz/` include this
//! file (`#[path]`) and run them on libFuzzer's. Every function panics when
//! a property fails, and none of them touches the network or the clock
//! (except the signer's `t=`, handled in [`signer_whole_vs_chunked`]).
//!
//! The byte formats of the fuzz inputs (and of the seed corpus under
//! `fuzz/corpus/`) are decoded here too, so a crash input found by the
//! fuzzer can be replayed by a unit test through the same function.

use mail_auth::AuthenticatedMessage;
use mail_auth::dkim::{Canonicalization, DkimSigner, DomainKey};
use mail_auth::dmarc::Policy;
use mail_auth::dns::TxtRecordParser;
use rmilter::config::{self, Canon, Config, Overrides, Signing, Source};
use rmilter::identity::{self, Author};
use rmilter::keys::LoadedKey;
use rmilter::milter::wire::header_section;
use rmilter::sign::{self, MessageSigner};
use rmilter::verify::authres::{self, ResInfo};
use rmilter::verify::dkim::{DkimStatus, DkimVerdict, is_dns_token, prefilter};
use rmilter::verify::dmarc::record::{self as dmarc_record_parser, Record as DmarcRecord};
use rmilter::verify::spf::{self, Lookup, MAX_REASON, SpfDns, SpfLimits, SpfOutcome, SpfResult};
use rmilter::verify::{ArcVerdict, DmarcStatus, DmarcVerdict, Verdict, decision};
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

// ---------------------------------------------------------------------------
// Input formats

/// Header fields as `name\0value\0name\0value...` (the from_gate format).
pub fn nul_fields(data: &[u8]) -> Vec<(&[u8], &[u8])> {
    let parts: Vec<&[u8]> = data.split(|&b| b == 0).collect();
    parts
        .chunks(2)
        .filter_map(|c| Some((c[0], *c.get(1)?)))
        .collect()
}

/// One header field: name without colon, value in milter form.
pub type Field = (Vec<u8>, Vec<u8>);

/// A raw message (CRLF or LF line ends) as the milter receives it: the
/// header fields with values in milter form (leading space kept, folds as
/// "\n" + WSP, no line end) and the body. Lines of the header section
/// without a colon are dropped, as Postfix never sends them as fields.
pub fn milter_message(raw: &[u8]) -> (Vec<Field>, &[u8]) {
    let (head, body) = match find(raw, b"\r\n\r\n") {
        Some(i) if find(raw, b"\n\n").is_none_or(|j| i < j) => (&raw[..i], &raw[i + 4..]),
        _ => match find(raw, b"\n\n") {
            Some(j) => (&raw[..j], &raw[j + 2..]),
            None => (raw, &b""[..]),
        },
    };
    let mut fields: Vec<Field> = Vec::new();
    let mut continuing = false;
    for line in head.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if matches!(line.first(), Some(b' ' | b'\t')) {
            if continuing && let Some(last) = fields.last_mut() {
                last.1.push(b'\n');
                last.1.extend_from_slice(line);
            }
            continue;
        }
        continuing = false;
        if let Some(colon) = line.iter().position(|&b| b == b':')
            && colon > 0
        {
            fields.push((line[..colon].to_vec(), line[colon + 1..].to_vec()));
            continuing = true;
        }
    }
    (fields, body)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A field name as Postfix delivers one: printable ASCII without colon,
/// optionally followed by the whitespace of an obsolete `Name :`.
pub fn postfix_name(name: &[u8]) -> Vec<u8> {
    let trailing = name.iter().rev().take_while(|&&b| is_wsp(b)).count();
    let mut out: Vec<u8> = name[..name.len() - trailing]
        .iter()
        .copied()
        .filter(|&b| b.is_ascii_graphic() && b != b':')
        .collect();
    if out.is_empty() {
        out.extend_from_slice(b"X");
    }
    out.extend_from_slice(&name[name.len() - trailing..]);
    out
}

/// A field value as Postfix delivers one: every "\n" is a fold, followed by
/// a space or tab (one is added where missing).
pub fn postfix_value(value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len() + 4);
    for (i, &b) in value.iter().enumerate() {
        out.push(b);
        if b == b'\n' && !value.get(i + 1).is_some_and(|&n| is_wsp(n)) {
            out.push(b' ');
        }
    }
    out
}

fn is_wsp(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

// ---------------------------------------------------------------------------
// From gate

/// The From gate never panics; an accepted author is one plain address
/// whose domain is a lower-case A-label name, and it passes the gate again
/// with the same domain.
pub fn from_gate(fields: &[(&[u8], &[u8])]) -> bool {
    let Ok(author) = identity::author(fields.iter().copied()) else {
        return false;
    };
    check_author(&author);
    let value = format!(" {}", author.address);
    let again = identity::author([(&b"From"[..], value.as_bytes())])
        .unwrap_or_else(|e| panic!("accepted address {:?} refused again: {e}", author.address));
    assert_eq!(again.domain, author.domain);
    assert_eq!(again.address, author.address);
    true
}

fn check_author(author: &Author) {
    let domain = &author.domain;
    assert!(
        !domain.is_empty() && domain.len() <= 253,
        "domain {domain:?}"
    );
    assert!(
        domain.is_ascii() && *domain == domain.to_ascii_lowercase(),
        "domain {domain:?}"
    );
    assert!(
        !domain.ends_with('.') && !domain.contains(|c: char| c.is_ascii_whitespace()),
        "domain {domain:?}"
    );
    assert!(
        author.address.ends_with(&format!("@{domain}")),
        "address {:?} domain {domain:?}",
        author.address
    );
}

// ---------------------------------------------------------------------------
// Header section assembly

/// The milter header fields → CRLF header section conversion: for fields
/// in the form Postfix sends (see [`postfix_name`], [`postfix_value`]) the
/// section splits back into exactly those fields, with the same names and,
/// reading CRLF as LF, the same values; mail-auth's parser (the one the
/// verifier runs on the section) sees the same fields.
pub fn header_assembly(fields: &[(&[u8], &[u8])], leading_space: bool, body: &[u8]) {
    let fields: Vec<(Vec<u8>, Vec<u8>)> = fields
        .iter()
        .map(|(n, v)| (postfix_name(n), postfix_value(v)))
        .collect();
    let block = header_section(fields.iter().map(|(n, v)| (&n[..], &v[..])), leading_space);
    // Every LF is part of a CRLF, and the section ends with one.
    for (i, &b) in block.iter().enumerate() {
        if b == b'\n' {
            assert!(i > 0 && block[i - 1] == b'\r', "bare LF at {i}");
        }
    }
    assert!(fields.is_empty() || block.ends_with(b"\r\n"));
    // No empty line: the section cannot end early.
    assert!(find(&block, b"\r\n\r\n").is_none() || fields.is_empty());
    assert!(!block.starts_with(b"\r\n"));

    let back = split_section(&block);
    assert_eq!(back.len(), fields.len(), "field count");
    for ((name, value), (bname, bvalue)) in fields.iter().zip(&back) {
        assert_eq!(name, bname, "name");
        let bvalue = if leading_space {
            &bvalue[..]
        } else {
            bvalue
                .strip_prefix(b" ")
                .unwrap_or_else(|| panic!("no space put back after the colon"))
        };
        assert_eq!(crlf_to_lf(value), crlf_to_lf(bvalue), "value of {name:?}");
    }

    if fields.is_empty() {
        return;
    }
    let mut message = block.clone();
    message.extend_from_slice(b"\r\n");
    message.extend_from_slice(body);
    if let Some(parsed) = AuthenticatedMessage::parse(&message) {
        let names: Vec<&[u8]> = parsed.headers().iter().map(|(n, _)| *n).collect();
        let ours: Vec<&[u8]> = fields.iter().map(|(n, _)| &n[..]).collect();
        // mail-auth ends a line at a bare CR as well; compare only when no
        // value holds one.
        if !fields.iter().any(|(_, v)| v.contains(&b'\r')) {
            assert_eq!(names, ours, "mail-auth reads other fields");
        }
    }
}

/// Split a CRLF header section into (name, value without the final CRLF).
fn split_section(block: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i + 1 < block.len() {
        if block[i] == b'\r'
            && block[i + 1] == b'\n'
            && !block.get(i + 2).is_some_and(|&b| is_wsp(b))
        {
            let field = &block[start..i];
            let colon = field
                .iter()
                .position(|&b| b == b':')
                .unwrap_or_else(|| panic!("field without colon: {field:?}"));
            out.push((field[..colon].to_vec(), field[colon + 1..].to_vec()));
            start = i + 2;
            i += 2;
        } else {
            i += 1;
        }
    }
    assert_eq!(start, block.len(), "section does not end with CRLF");
    out
}

fn crlf_to_lf(v: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len());
    for (i, &b) in v.iter().enumerate() {
        if !(b == b'\r' && v.get(i + 1) == Some(&b'\n')) {
            out.push(b);
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Authentication-Results: the authserv-id reader

/// The authserv-id reader never panics, returns a lower-case non-empty id
/// within its scan limit, and ignores leading CFWS; the forged-field check
/// removes every value it cannot read or reads as ours.
pub fn authserv_id_reader(value: &[u8]) -> bool {
    let id = authres::authserv_id(value);
    if let Some(id) = &id {
        // Bytes of a quoted-string beyond ASCII come back as one char each.
        let chars = id.chars().count();
        assert!(!id.is_empty() && chars <= 4096, "id of {chars} chars");
        assert_eq!(*id, id.to_ascii_lowercase());
    }
    let prefix = b" (a comment)\r\n\t";
    if value.len() + prefix.len() <= 4096 {
        let mut longer = prefix.to_vec();
        longer.extend_from_slice(value);
        assert_eq!(authres::authserv_id(&longer), id, "CFWS before the id");
    }
    // Whatever the reader cannot read, or reads as ours, is removed.
    let ours = "mx.example.org";
    if id.as_deref().is_none_or(|id| id == ours) {
        assert!(authres::forged(value, ours).is_some(), "kept: {id:?}");
    }
    id.is_some()
}

/// Whether the configuration accepts `id` as `authserv_id` (checked
/// through the real loader).
pub fn config_accepts_id(id: &str) -> bool {
    if id.is_empty() || id.contains(['"', '\\']) || id.chars().any(char::is_control) {
        return false;
    }
    config::from_text(
        Source::Embedded,
        &format!("authserv_id = \"{id}\"\n"),
        &Overrides::default(),
    )
    .is_ok_and(|c| c.authserv_id == id)
}

// ---------------------------------------------------------------------------
// Authentication-Results: the writer

pub const METHODS: &[&str] = &["dkim", "spf", "dmarc", "arc", "iprev", "auth"];
pub const RESULTS: &[&str] = &[
    "pass",
    "fail",
    "none",
    "neutral",
    "policy",
    "softfail",
    "temperror",
    "permerror",
];
pub const PROPS: &[&str] = &[
    "header.d",
    "header.s",
    "header.a",
    "header.b",
    "header.i",
    "header.from",
    "smtp.mailfrom",
    "smtp.helo",
    "policy.dmarc",
];

fn pick<'a>(list: &[&'a str], word: &[u8]) -> &'a str {
    list.iter()
        .find(|m| m.as_bytes().eq_ignore_ascii_case(word))
        .copied()
        .unwrap_or_else(|| {
            let h = word
                .iter()
                .fold(0usize, |h, &b| h.wrapping_mul(31).wrapping_add(b.into()));
            list[h % list.len()]
        })
}

/// Decode a fuzz input written like an Authentication-Results value:
/// `authserv-id; method=result (comment) ptype.prop=value ...; ...`.
/// Methods, results and property names are mapped onto rmilter's fixed
/// vocabulary; comments and property values are kept as raw bytes (CR, LF,
/// parentheses and all). An id the configuration refuses is replaced.
pub fn decode_results(data: &[u8]) -> (String, Vec<ResInfo>) {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.split(';');
    let id = parts.next().unwrap_or("").trim().to_string();
    let id = if id.len() <= 64 && config_accepts_id(&id) {
        id
    } else {
        "mx.example.org".to_string()
    };
    let mut results = Vec::new();
    for part in parts {
        let part = part.trim_start();
        let (head, mut rest) = part.split_at(part.find([' ', '(']).unwrap_or(part.len()));
        let (method, result) = head.split_once('=').unwrap_or((head, ""));
        let mut info = ResInfo::new(
            pick(METHODS, method.as_bytes()),
            pick(RESULTS, result.as_bytes()),
        );
        rest = rest.trim_start_matches(' ');
        if let Some(inner) = rest.strip_prefix('(') {
            let end = inner.rfind(')').unwrap_or(inner.len());
            info = info.comment(&inner[..end]);
            rest = inner.get(end + 1..).unwrap_or("");
        }
        for word in rest.split(' ').filter(|w| !w.is_empty()) {
            let (name, value) = word.split_once('=').unwrap_or((word, ""));
            info = info.prop(pick(PROPS, name.as_bytes()), value);
        }
        results.push(info);
    }
    (id, results)
}

/// One token of a rendered Authentication-Results value.
#[derive(Debug, PartialEq, Eq)]
enum ArToken {
    Word(String),
    Comment(String),
    Semicolon,
}

/// The writer's output is one header field that reads back: printable
/// ASCII folded with "\n\t" only, lines within 78 characters unless one
/// word is longer and always within 998, the authserv-id first, and, token
/// by token, exactly the results given: `method=result`, the comment as
/// sanitised text, and only the property values that are tokens.
pub fn authres_render(id: &str, results: &[ResInfo]) {
    let value = authres::render(id, results);
    check_one_field(&value, id);
    let mut expected = vec![ArToken::Word(id.to_string()), ArToken::Semicolon];
    if results.is_empty() {
        expected.push(ArToken::Word("none".into()));
    }
    for (n, r) in results.iter().enumerate() {
        expected.push(ArToken::Word(format!("{}={}", r.method, r.result)));
        if let Some(c) = &r.comment {
            expected.push(ArToken::Comment(sanitised(c, 200)));
        }
        for (name, v) in &r.props {
            if authres::is_token(v) {
                expected.push(ArToken::Word(format!("{name}={v}")));
            }
        }
        if n + 1 < results.len() {
            expected.push(ArToken::Semicolon);
        }
    }
    assert_eq!(tokens(&value), expected, "rendered {value:?}");
}

/// What a comment may show of `text`: printable ASCII, line breaks and tabs
/// as spaces, anything else as `?`.
fn sanitised(text: &str, max: usize) -> String {
    text.chars()
        .take(max)
        .map(|c| match c {
            ' '..='~' => c,
            '\t' | '\r' | '\n' => ' ',
            _ => '?',
        })
        .collect()
}

/// Properties of any Authentication-Results value rmilter writes.
pub fn check_one_field(value: &str, id: &str) {
    assert!(value.starts_with(' '), "{value:?}");
    let mut first = true;
    for line in value.split('\n') {
        let full = if first {
            format!("Authentication-Results:{line}")
        } else {
            assert!(line.starts_with('\t'), "continuation line {line:?}");
            line.to_string()
        };
        assert!(
            full.bytes()
                .all(|b| b == b'\t' || (b' '..=b'~').contains(&b)),
            "line {full:?}"
        );
        assert!(full.len() <= 998, "line of {} octets", full.len());
        let words = full
            .trim_start_matches('\t')
            .strip_prefix("Authentication-Results: ")
            .unwrap_or(full.trim_start_matches('\t'));
        assert!(
            full.len() <= 78 || !words.contains(' '),
            "line of {} characters with several words: {full:?}",
            full.len()
        );
        first = false;
    }
    // Comments balance and nothing follows the last result.
    let _ = tokens(value);
    // Exactly one field, as the verifier's parser sees the message.
    let message = format!(
        "Authentication-Results:{}\r\n\r\nbody\r\n",
        value.replace('\n', "\r\n")
    );
    let parsed = AuthenticatedMessage::parse(message.as_bytes()).expect("parses");
    assert_eq!(parsed.headers().len(), 1, "{value:?}");
    assert_eq!(parsed.headers()[0].0, b"Authentication-Results");
    // The id reads back.
    assert_eq!(
        authres::authserv_id(value.as_bytes()).as_deref(),
        Some(id.to_ascii_lowercase().as_str())
    );
}

/// Tokenise an unfolded value: words, comments (quoted-pairs decoded) and
/// semicolons. Panics on an unbalanced comment.
fn tokens(value: &str) -> Vec<ArToken> {
    let unfolded = value.replace("\n\t", " ");
    assert!(!unfolded.contains(['\n', '\r']), "{value:?}");
    let bytes = unfolded.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut Vec<ArToken>| {
        if !word.is_empty() {
            out.push(ArToken::Word(std::mem::take(word)));
        }
    };
    while i < bytes.len() {
        match bytes[i] {
            b' ' => flush(&mut word, &mut out),
            b';' => {
                flush(&mut word, &mut out);
                out.push(ArToken::Semicolon);
            }
            b'(' => {
                flush(&mut word, &mut out);
                let mut depth = 1;
                let mut text = String::new();
                i += 1;
                while depth > 0 {
                    let b = *bytes
                        .get(i)
                        .unwrap_or_else(|| panic!("open comment: {value:?}"));
                    match b {
                        b'\\' => {
                            i += 1;
                            text.push(char::from(bytes[i]));
                        }
                        b'(' => {
                            depth += 1;
                            text.push('(');
                        }
                        b')' => {
                            depth -= 1;
                            if depth > 0 {
                                text.push(')');
                            }
                        }
                        _ => text.push(char::from(b)),
                    }
                    i += 1;
                }
                out.push(ArToken::Comment(text));
                continue;
            }
            b => word.push(char::from(b)),
        }
        i += 1;
    }
    flush(&mut word, &mut out);
    out
}

/// The default configuration (embedded defaults, fixed authserv-id).
pub fn default_config() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(|| {
        config::from_text(
            Source::Embedded,
            "authserv_id = \"mx.example.org\"\n",
            &Overrides::default(),
        )
        .expect("defaults load")
    })
}

/// A verdict built from fuzzed text, for [`results_field`].
pub fn verdict_from(
    texts: &[String],
    record: Option<Arc<DmarcRecord>>,
    status: DmarcStatus,
) -> (Verdict, Author) {
    let t = |i: usize| texts.get(i).cloned().unwrap_or_default();
    let spf = |domain: String, reason: String| SpfOutcome {
        result: SpfResult::Fail,
        domain,
        reason,
        dns_queries: 1,
        void_lookups: 0,
    };
    let verdict = Verdict {
        dkim: vec![DkimVerdict {
            domain: t(0),
            selector: t(1),
            algorithm: t(2),
            b: t(3),
            status: DkimStatus::Fail,
            reason: t(4),
        }],
        dkim_skipped: texts.len(),
        spf_helo: spf(t(5), t(6)),
        spf_mail_from: spf(t(7), t(8)),
        arc: ArcVerdict {
            status: "fail",
            sealer: Some(t(9)),
            sealer_results: Some((1, t(9).into_bytes())),
        },
        dmarc: DmarcVerdict {
            status,
            domain: t(10),
            policy: record.as_ref().map_or(Policy::None, |r| r.p),
            record,
            dkim_aligned: false,
            spf_aligned: false,
            reason: t(11),
            policy_record: None,
            discovery: None,
        },
    };
    let author = Author {
        address: format!("a@{}", t(10)),
        domain: t(10),
        display_domain: Some(t(12)),
    };
    (verdict, author)
}

/// rmilter's own A-R field (`results_field`) is one field that reads back,
/// whatever text the verdict carries.
pub fn results_field(verdict: &Verdict, author: &Author) {
    let id = &default_config().authserv_id;
    let value = rmilter::milter::results_field(id, verdict, author);
    check_one_field(&value, id);
}

// ---------------------------------------------------------------------------
// SPF over an in-memory zone

/// A zone given as text lines: `client IP`, `helo NAME`, `mailfrom ADDR`,
/// and records `NAME TXT text`, `NAME A IPv4`, `NAME AAAA IPv6`,
/// `NAME MX PREF HOST`, `NAME PTR HOST` (NAME a reverse name),
/// `NAME CNAME TARGET`, `NAME TIMEOUT` (every query a temporary error),
/// `NAME EXISTS` (the name exists without records). A TXT text may use
/// `\n` and `\r` escapes. Bad lines are ignored.
#[derive(Default)]
pub struct Zone {
    pub client: Option<IpAddr>,
    pub helo: String,
    pub mail_from: String,
    txt: HashMap<String, Vec<Vec<u8>>>,
    a: HashMap<String, Vec<Ipv4Addr>>,
    aaaa: HashMap<String, Vec<Ipv6Addr>>,
    mx: HashMap<String, Vec<(u16, String)>>,
    ptr: HashMap<String, Vec<String>>,
    cname: HashMap<String, String>,
    timeout: HashSet<String>,
    exists: HashSet<String>,
    queries: AtomicU64,
}

impl Zone {
    pub fn parse(text: &[u8]) -> Zone {
        let mut zone = Zone::default();
        for line in String::from_utf8_lossy(text).lines() {
            let mut it = line.splitn(3, ' ');
            let (Some(name), Some(kind)) = (it.next(), it.next()) else {
                continue;
            };
            let rest = it.next().unwrap_or("");
            let key = name.trim_end_matches('.').to_ascii_lowercase();
            match (name, kind) {
                ("client", _) => {
                    zone.client = kind.parse().ok();
                    continue;
                }
                ("helo", _) => {
                    zone.helo = kind.to_string();
                    continue;
                }
                ("mailfrom", _) => {
                    zone.mail_from = kind.to_string();
                    continue;
                }
                (_, "TXT") => {
                    let text = rest.replace("\\n", "\n").replace("\\r", "\r");
                    zone.txt
                        .entry(key.clone())
                        .or_default()
                        .push(text.into_bytes());
                }
                (_, "A") => {
                    if let Ok(ip) = rest.parse() {
                        zone.a.entry(key.clone()).or_default().push(ip);
                    }
                }
                (_, "AAAA") => {
                    if let Ok(ip) = rest.parse() {
                        zone.aaaa.entry(key.clone()).or_default().push(ip);
                    }
                }
                (_, "MX") => {
                    let (pref, host) = rest.split_once(' ').unwrap_or(("0", rest));
                    zone.mx
                        .entry(key.clone())
                        .or_default()
                        .push((pref.parse().unwrap_or(0), host.to_string()));
                }
                (_, "PTR") => zone
                    .ptr
                    .entry(key.clone())
                    .or_default()
                    .push(rest.to_string()),
                (_, "CNAME") => {
                    zone.cname
                        .insert(key.clone(), rest.trim_end_matches('.').to_ascii_lowercase());
                }
                (_, "TIMEOUT") => {
                    zone.timeout.insert(key.clone());
                }
                _ => {}
            }
            zone.exists.insert(key);
        }
        zone
    }

    pub fn queries(&self) -> u64 {
        self.queries.load(Ordering::Relaxed)
    }

    fn answer<T: Clone>(&self, name: &str, map: &HashMap<String, Vec<T>>) -> Lookup<Vec<T>> {
        self.queries.fetch_add(1, Ordering::Relaxed);
        let mut name = name.trim_end_matches('.').to_ascii_lowercase();
        for _ in 0..8 {
            if self.timeout.contains(&name) {
                return Lookup::TempError("timeout".into());
            }
            if let Some(v) = map.get(&name) {
                return Lookup::Found(v.clone());
            }
            match self.cname.get(&name) {
                Some(target) => name.clone_from(target),
                None if self.exists.contains(&name) => return Lookup::NoData,
                None => return Lookup::NxDomain,
            }
        }
        Lookup::TempError("CNAME chain too long".into())
    }
}

impl SpfDns for Zone {
    async fn txt(&self, name: &str) -> Lookup<Vec<Vec<u8>>> {
        self.answer(name, &self.txt)
    }
    async fn a(&self, name: &str) -> Lookup<Vec<Ipv4Addr>> {
        self.answer(name, &self.a)
    }
    async fn aaaa(&self, name: &str) -> Lookup<Vec<Ipv6Addr>> {
        self.answer(name, &self.aaaa)
    }
    async fn mx(&self, name: &str) -> Lookup<Vec<(u16, String)>> {
        self.answer(name, &self.mx)
    }
    async fn ptr(&self, ip: IpAddr) -> Lookup<Vec<String>> {
        self.answer(&reverse_name(ip), &self.ptr)
    }
}

fn reverse_name(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}.in-addr.arpa", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v6) => {
            let mut s = String::new();
            for b in v6.octets().iter().rev() {
                s.push_str(&format!("{:x}.{:x}.", b & 0xf, b >> 4));
            }
            s + "ip6.arpa"
        }
    }
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime")
    })
}

/// SPF over any zone: the record parser, macro expansion and `check_host`
/// never panic; the DNS queries of the HELO and MAIL FROM checks together
/// stay within twice [`SpfLimits::max_dns_queries`] (`exp=` is never
/// fetched); reasons are bounded printable ASCII; an outcome without a
/// domain is `none`; and evaluation is deterministic.
pub fn spf_zone(text: &[u8]) -> (SpfResult, SpfResult) {
    let zone = Zone::parse(text);
    let limits = SpfLimits::default();
    let ip = zone
        .client
        .unwrap_or(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));
    let run = || {
        runtime().block_on(spf::verify(
            &zone,
            &limits,
            ip,
            &zone.helo,
            &zone.mail_from,
            "receiver.example",
        ))
    };
    let (helo, mail_from) = run();
    let queries = zone.queries();
    assert!(
        queries <= 2 * limits.max_dns_queries(),
        "{queries} DNS queries"
    );
    for outcome in [&helo, &mail_from] {
        check_spf_outcome(outcome);
    }
    let again = run();
    assert_eq!(helo, again.0, "SPF is not deterministic");
    assert_eq!(mail_from, again.1, "SPF is not deterministic");
    (helo.result, mail_from.result)
}

fn check_spf_outcome(o: &SpfOutcome) {
    assert!(o.reason.len() <= MAX_REASON, "reason {:?}", o.reason);
    assert!(
        o.reason
            .bytes()
            .all(|b| (b' '..=b'~').contains(&b) && !b"()\\".contains(&b)),
        "reason {:?}",
        o.reason
    );
    if o.domain.is_empty() {
        assert_eq!(o.result, SpfResult::None, "{o:?}");
    } else {
        assert!(!o.domain.ends_with('.'), "{o:?}");
        assert_eq!(o.domain, o.domain.to_ascii_lowercase(), "{o:?}");
        assert!(o.domain.is_ascii(), "{o:?}");
    }
}

// ---------------------------------------------------------------------------
// DKIM-Signature fields and key records

/// DKIM-Signature parsing and rmilter's prefilter: no panic; every
/// signature ends up either verified (kept), skipped or with exactly one
/// verdict; kept signatures are at most `max`, author-aligned ones first,
/// and each has a plain `d=`/`s=`, From in `h=`, no `l=` and no rsa-sha1;
/// verdict identifiers are plain tokens or empty.
pub fn dkim_message(raw: &[u8], max: usize) -> usize {
    let Some(mut message) = AuthenticatedMessage::parse(raw) else {
        return 0;
    };
    // mail-auth's values end with the line end; the milter's do not.
    let fields: Vec<(&[u8], &[u8])> = message
        .headers()
        .iter()
        .map(|&(n, v)| (n, v.strip_suffix(b"\r\n").unwrap_or(v)))
        .collect();
    let author = identity::author(fields)
        .map(|a| a.domain)
        .unwrap_or_default();
    let errors = message
        .errors()
        .iter()
        .filter(|e| e.name.eq_ignore_ascii_case(b"dkim-signature"))
        .count();
    let before = message.dkim_signatures().len();
    let eligible = |s: &mail_auth::dkim::Signature| {
        is_dns_token(&s.d)
            && is_dns_token(&s.s)
            && s.h.iter().any(|h| h.eq_ignore_ascii_case("from"))
            && s.a != mail_auth::crypto::Algorithm::RsaSha1
            && s.l == 0
    };
    let aligned = |d: &str| {
        let d = d.to_ascii_lowercase();
        d == author || author.ends_with(&format!(".{d}")) || d.ends_with(&format!(".{author}"))
    };
    let n_eligible = message
        .dkim_signatures()
        .iter()
        .filter(|h| eligible(&h.header))
        .count();
    let n_aligned = message
        .dkim_signatures()
        .iter()
        .filter(|h| eligible(&h.header) && aligned(&h.header.d))
        .count();

    let pre = prefilter(&mut message, &author, max, false);
    let kept = message.dkim_signatures();
    let listed = pre.verdicts.len() - usize::from(pre.summarised > 0);
    assert_eq!(
        listed + pre.summarised + pre.skipped + kept.len(),
        errors + before,
        "a signature was lost or counted twice"
    );
    // Refused signatures are listed up to the cap, then summarised.
    assert!(listed <= max, "{listed} refused signatures listed");
    // Body hash failures and expired signatures are decided before the
    // cap and take no place.
    let failed = pre.decided_before_cap.len();
    let failed_aligned = pre.decided_before_cap.iter().filter(|d| aligned(d)).count();
    if n_eligible <= max {
        assert_eq!(failed, 0, "decided before the cap within the cap");
    }
    assert_eq!(kept.len(), (n_eligible - failed).min(max));
    assert_eq!(
        kept.iter().filter(|h| aligned(&h.header.d)).count(),
        (n_aligned - failed_aligned).min(max),
        "aligned signatures are not verified first"
    );
    for h in kept {
        assert!(eligible(&h.header), "kept {:?}", h.header);
    }
    for v in &pre.verdicts {
        assert_ne!(v.status, DkimStatus::Pass);
        for t in [&v.domain, &v.selector] {
            assert!(t.is_empty() || is_dns_token(t), "verdict token {t:?}");
        }
    }
    errors + before
}

/// Key records (`v=DKIM1; k=...; p=...`): mail-auth's parser and rmilter's
/// RSA key-size reader never panic, and a size is never more bits than the
/// key has octets.
pub fn dkim_key_record(txt: &[u8]) -> bool {
    let parsed = DomainKey::parse(txt).is_ok();
    let text = String::from_utf8_lossy(txt);
    if let Some(p) = text
        .split(';')
        .find_map(|tag| tag.trim().strip_prefix("p="))
    {
        use base64::Engine;
        let p: String = p.chars().filter(|c| !c.is_whitespace()).collect();
        if let Ok(der) = base64::engine::general_purpose::STANDARD.decode(p)
            && let Some(bits) = rmilter::keys::der_rsa_public_bits(&der)
        {
            assert!(
                bits <= der.len() * 8,
                "{bits} bits from {} octets",
                der.len()
            );
        }
    }
    // The raw DER itself, as a fuzzer would send it.
    if let Some(bits) = rmilter::keys::der_rsa_public_bits(txt) {
        assert!(bits <= txt.len() * 8);
    }
    parsed
}

// ---------------------------------------------------------------------------
// DMARC records

/// DMARC records: rmilter's parser never panics; for a parsed record
/// rmilter's policy decision holds its table (pass and none accept, a
/// temperror is never a 5xx, a failure acts on the published policy) and
/// the A-R field stays one field.
pub fn dmarc_record(txt: &[u8]) -> bool {
    let Some(record) = dmarc_record_parser::parse(txt) else {
        return false;
    };
    let record = Arc::new(record);
    let config = default_config();
    for status in [
        DmarcStatus::Pass,
        DmarcStatus::Fail,
        DmarcStatus::TempError,
        DmarcStatus::PermError,
        DmarcStatus::None,
    ] {
        let texts = vec!["example.com".to_string(); 13];
        let (verdict, author) = verdict_from(&texts, Some(record.clone()), status);
        let d = decision::decide(&verdict, &config.policy, &config.verify, None, None, |_| {
            false
        });
        let table = &config.policy.global;
        match status {
            DmarcStatus::Pass | DmarcStatus::None => {
                assert_eq!(d.action, config::Action::Accept)
            }
            DmarcStatus::TempError => {
                assert_eq!(d.action, table.temperror);
                assert_eq!((d.reply.0, d.reply.1), ("451", "4.4.3"));
            }
            DmarcStatus::PermError => assert_eq!(d.action, table.permerror),
            DmarcStatus::Fail => {
                let want = match verdict.dmarc.policy {
                    Policy::Reject => table.reject,
                    Policy::Quarantine => table.quarantine,
                    Policy::None | Policy::Unspecified => table.none,
                };
                assert_eq!(d.action, want, "policy {:?}", verdict.dmarc.policy);
            }
        }
        results_field(&verdict, &author);
    }
    true
}

// ---------------------------------------------------------------------------
// Configuration

/// Configuration text never panics the loader: it is a configuration or an
/// error on one line; a loaded authserv-id reads back from the A-R field
/// rmilter writes, and loading is deterministic. Returns whether the text
/// got past the TOML parser to validation.
pub fn config_text(text: &str) -> bool {
    let load = || config::from_text(Source::Embedded, text, &Overrides::default());
    match load() {
        Ok(config) => {
            authres_render(&config.authserv_id, &[]);
            assert_eq!(load().ok(), Some(config));
            true
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(!msg.is_empty());
            assert!(!msg.contains('\n'), "error on several lines: {msg}");
            !matches!(e, config::ConfigError::Syntax { .. })
        }
    }
}

// ---------------------------------------------------------------------------
// The signer: whole versus chunked

/// The signing keys: a fresh Ed25519 key and dkimpy's public RSA-2048
/// test key (tests/data/keys), loaded through the real loader.
pub fn signing_keys() -> &'static [Arc<LoadedKey>; 2] {
    static KEYS: OnceLock<[Arc<LoadedKey>; 2]> = OnceLock::new();
    KEYS.get_or_init(|| {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let dir = tempfile::tempdir().expect("temporary directory");
        let ed = rmilter::keys::generate(
            dir.path(),
            "example.com",
            "ed",
            config::KeyAlgorithm::Ed25519,
            0,
        )
        .expect("Ed25519 key");
        let path = dir.path().join("rsa.pem");
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .and_then(|mut f| f.write_all(include_bytes!("../data/keys/2048_testkey.key")))
            .expect("write RSA key");
        let rsa = LoadedKey::load(&config::KeySpec {
            domain: "example.com".into(),
            selector: "rsa".into(),
            path,
            algorithm: None,
            origin: "properties".into(),
            ..Default::default()
        })
        .expect("RSA key");
        [Arc::new(ed.key), Arc::new(rsa)]
    })
}

/// Tags of a signature value (folding and whitespace removed).
fn sig_tags(value: &str) -> Vec<(String, String)> {
    let flat: String = value.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    flat.split(';')
        .filter(|t| !t.is_empty())
        .map(|t| {
            let (k, v) = t.split_once('=').unwrap_or((t, ""));
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// Sign the message whose header fields are `fields` (milter form) and
/// whose body is `body`: once with the body in one chunk, once in the
/// chunks `splits` cut it into, and once through mail-auth's one-shot
/// signer on the assembled message. The three signatures agree on every
/// tag; `b=` is compared when the three carry the same `t=` (Ed25519 and
/// RSA PKCS#1 v1.5 signatures are deterministic). Only messages the From
/// gate accepts are signed, as in the milter.
pub fn signer_whole_vs_chunked(
    fields: &[(&[u8], &[u8])],
    body: &[u8],
    splits: &[usize],
    flags: u8,
) -> bool {
    if identity::author(fields.iter().copied()).is_err() {
        return false;
    }
    let fields: Vec<(Vec<u8>, Vec<u8>)> = fields
        .iter()
        .map(|(n, v)| (postfix_name(n), postfix_value(v)))
        .collect();
    let canon = |bit: u8| {
        if flags & bit != 0 {
            Canon::Simple
        } else {
            Canon::Relaxed
        }
    };
    let signing = Signing {
        header_canon: canon(1),
        body_canon: canon(2),
        ..default_config().signing.clone()
    };
    let key = &signing_keys()[usize::from(flags & 4 != 0)];
    let keys = &sign::Selected::own(std::slice::from_ref(key));
    let leading_space = flags & 8 != 0;
    let names = sign::header_list(&signing, fields.iter().map(|(n, _)| &n[..]));
    let block = header_section(fields.iter().map(|(n, v)| (&n[..], &v[..])), leading_space);

    let mut whole = MessageSigner::start(keys, &names, &signing, &block);
    whole.body(body);
    let mut chunked = MessageSigner::start(keys, &names, &signing, &block);
    let mut rest = body;
    for &cut in splits {
        let (chunk, tail) = rest.split_at(cut.min(rest.len()));
        chunked.body(chunk);
        rest = tail;
    }
    chunked.body(rest);

    // The one-shot signer gets the section as the streaming signer signs
    // it: no whitespace between a field name and its colon (mail-auth
    // matches h= names byte for byte; see rmilter's sign module).
    let mut message = Vec::with_capacity(block.len() + body.len() + 2);
    for line in block.split_inclusive(|&b| b == b'\n') {
        match line.iter().position(|&b| b == b':') {
            Some(c) if !matches!(line.first(), Some(b' ' | b'\t')) => {
                let name = &line[..c];
                let keep = name.len() - name.iter().rev().take_while(|&&b| is_wsp(b)).count();
                message.extend_from_slice(&name[..keep]);
                message.extend_from_slice(&line[c..]);
            }
            _ => message.extend_from_slice(line),
        }
    }
    message.extend_from_slice(b"\r\n");
    message.extend_from_slice(body);
    let to_mail_auth = |c: Canon| match c {
        Canon::Simple => Canonicalization::Simple,
        Canon::Relaxed => Canonicalization::Relaxed,
    };
    let one_shot = DkimSigner::from_key(key.key.clone())
        .domain(key.domain.clone())
        .selector(key.selector.clone())
        .headers(names.iter().cloned())
        .header_canonicalization(to_mail_auth(signing.header_canon))
        .body_canonicalization(to_mail_auth(signing.body_canon))
        .sign(&message);

    let whole = whole.finish().expect("whole signs");
    let chunked = chunked.finish().expect("chunked signs");
    let one_shot = one_shot.expect("one-shot signs");
    let one_shot = mail_auth::headers::HeaderWriter::to_header(&one_shot);
    let one_shot = one_shot
        .split_once(':')
        .map_or(&one_shot[..], |(_, v)| v)
        .to_string();
    let [w, c, o] = [&whole[0].value, &chunked[0].value, &one_shot].map(|v| sig_tags(v));
    let t = |tags: &[(String, String)]| tags.iter().find(|(k, _)| k == "t").map(|(_, v)| v.clone());
    let same_time = t(&w) == t(&c) && t(&w) == t(&o);
    let strip = |tags: &[(String, String)]| -> Vec<(String, String)> {
        tags.iter()
            .filter(|(k, _)| same_time || !matches!(k.as_str(), "t" | "x" | "b"))
            .cloned()
            .collect()
    };
    assert_eq!(strip(&w), strip(&c), "whole vs chunked");
    assert_eq!(strip(&w), strip(&o), "streaming vs one-shot");
    assert!(whole[0].value.starts_with(' ') && !whole[0].value.contains('\r'));
    true
}

// ---------------------------------------------------------------------------
// Fuzz inputs: each target's byte format, decoded and checked

/// `name\0value\0...` header fields.
pub fn input_from_gate(data: &[u8]) -> bool {
    from_gate(&nul_fields(data))
}

/// A flags byte (bit 0: leading space negotiated), then `name\0value\0...`
/// header fields; a final odd part is the body.
pub fn input_header_assembly(data: &[u8]) -> bool {
    let Some((&flags, rest)) = data.split_first() else {
        return false;
    };
    let parts: Vec<&[u8]> = rest.split(|&b| b == 0).collect();
    let body = if parts.len() % 2 == 1 {
        parts[parts.len() - 1]
    } else {
        b""
    };
    let fields = nul_fields(rest);
    header_assembly(&fields, flags & 1 != 0, body);
    !fields.is_empty()
}

/// An Authentication-Results value.
pub fn input_authserv_id(data: &[u8]) -> bool {
    authserv_id_reader(data)
}

/// An Authentication-Results value, decoded by [`decode_results`] and
/// rendered both directly and as rmilter's own field.
pub fn input_authres_render(data: &[u8]) -> bool {
    let (id, results) = decode_results(data);
    authres_render(&id, &results);
    let texts: Vec<String> = String::from_utf8_lossy(data)
        .split(';')
        .map(str::to_string)
        .collect();
    let status = [
        DmarcStatus::Pass,
        DmarcStatus::Fail,
        DmarcStatus::TempError,
        DmarcStatus::PermError,
        DmarcStatus::None,
    ][data.len() % 5];
    let (verdict, author) = verdict_from(&texts, None, status);
    results_field(&verdict, &author);
    !results.is_empty()
}

/// A zone in the text format of [`Zone`].
pub fn input_spf(data: &[u8]) -> bool {
    spf_zone(data).1 != SpfResult::None
}

/// A raw message; the number of signatures verified is its length mod 4.
pub fn input_dkim_signature(data: &[u8]) -> bool {
    dkim_message(data, data.len() % 4) > 0
}

/// A DKIM key record (TXT value).
pub fn input_dkim_key(data: &[u8]) -> bool {
    dkim_key_record(data)
}

/// A DMARC record (TXT value).
pub fn input_dmarc_record(data: &[u8]) -> bool {
    dmarc_record(data)
}

/// Configuration text (invalid UTF-8 is read lossily).
pub fn input_config(data: &[u8]) -> bool {
    config_text(&String::from_utf8_lossy(data))
}

/// A flags byte (bit 0: simple header canonicalization, bit 1: simple
/// body, bit 2: RSA instead of Ed25519, bit 3: leading space), four chunk
/// lengths, then a raw message.
pub fn input_signer(data: &[u8]) -> bool {
    if data.len() < 5 {
        return false;
    }
    let flags = data[0];
    let splits: Vec<usize> = data[1..5].iter().map(|&b| usize::from(b)).collect();
    let (fields, body) = milter_message(&data[5..]);
    let fields: Vec<(&[u8], &[u8])> = fields.iter().map(|(n, v)| (&n[..], &v[..])).collect();
    signer_whole_vs_chunked(&fields, body, &splits, flags)
}

/// A target's input function: decodes the input, asserts the properties
/// and returns whether the input reached the code under test (a From
/// accepted, a record parsed, a message signed...).
pub type Input = fn(&[u8]) -> bool;

/// Every fuzz target: its name (also its corpus directory) and its input.
pub const TARGETS: &[(&str, Input)] = &[
    ("from_gate", input_from_gate),
    ("header_assembly", input_header_assembly),
    ("authserv_id", input_authserv_id),
    ("authres_render", input_authres_render),
    ("spf", input_spf),
    ("dkim_signature", input_dkim_signature),
    ("dkim_key", input_dkim_key),
    ("dmarc_record", input_dmarc_record),
    ("config", input_config),
    ("signer", input_signer),
];
