//! The SPF record parser (RFC 7208 §4.5, §4.6, §5, §6, §7.1, Appendix A).
//!
//! rmilter parses records itself rather than through mail-auth's
//! `SpfRecord::parse`: that parser accepts out-of-range CIDR lengths (it clamps
//! `/33` to `/32`), leading zeros, IPv4 octets above 255, control characters
//! and non-ASCII bytes as separators or text, domain-specs without a valid
//! top label, modifiers with invalid names, and it rejects valid records such
//! as `a:foo:bar/baz.example.com`; the OpenSPF suite expects the opposite in
//! each case. The whole record is parsed before evaluation, so a syntax error
//! anywhere gives `permerror` (RFC 7208 §4.6).

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use thiserror::Error;

use super::macros::{Context, MacroError, MacroString};

/// The version tag (RFC 7208 §4.5).
const VERSION: &[u8] = b"v=spf1";
/// How much of an offending term a syntax error quotes.
const MAX_QUOTED: usize = 40;

/// Why a record does not parse. Every variant is a `permerror`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub(crate) enum ParseError {
    /// RFC 7208 §3.1, §4.6.1: records are 7-bit ASCII and terms are separated by SP only.
    #[error("invalid character 0x{0:02x} in record")]
    BadCharacter(u8),
    /// Text after the version tag without a separating space.
    #[error("not a v=spf1 record")]
    NotSpf1,
    /// A mechanism name that RFC 7208 §5 does not define.
    #[error("unknown mechanism '{0}'")]
    UnknownMechanism(Quoted),
    /// A term that is neither a directive nor a modifier (bad modifier name, qualifier on a modifier).
    #[error("invalid term '{0}'")]
    InvalidTerm(Quoted),
    /// A mechanism argument that does not fit its syntax.
    #[error("invalid argument in '{0}'")]
    BadArgument(Quoted),
    /// RFC 7208 §5.6: a CIDR length out of range or with leading zeros.
    #[error("invalid cidr length in '{0}'")]
    BadCidr(Quoted),
    /// RFC 7208 §5.6: not an IPv4 or IPv6 network.
    #[error("invalid ip address in '{0}'")]
    BadAddress(Quoted),
    /// RFC 7208 §7.1: `domain-spec` must end in a macro or a valid top label.
    #[error("invalid domain-spec in '{0}'")]
    BadDomainSpec(Quoted),
    /// RFC 7208 §7.1 macro syntax.
    #[error("invalid macro in '{term}': {source}")]
    Macro {
        term: Quoted,
        #[source]
        source: MacroError,
    },
    /// RFC 7208 §6: `redirect` and `exp` appear at most once.
    #[error("duplicate {0} modifier")]
    DuplicateModifier(&'static str),
}

/// A bounded copy of an offending term for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Quoted(String);

impl Quoted {
    fn new(term: &str) -> Quoted {
        Quoted(term.chars().take(MAX_QUOTED).collect())
    }
}

impl fmt::Display for Quoted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The qualifier of a directive (RFC 7208 §4.6.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Qualifier {
    Pass,
    Fail,
    SoftFail,
    Neutral,
}

/// A mechanism (RFC 7208 §5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Mechanism {
    All,
    Include(MacroString),
    A {
        domain: Option<MacroString>,
        cidr4: u8,
        cidr6: u8,
    },
    Mx {
        domain: Option<MacroString>,
        cidr4: u8,
        cidr6: u8,
    },
    Ptr(Option<MacroString>),
    Ip4 {
        network: Ipv4Addr,
        prefix: u8,
    },
    Ip6 {
        network: Ipv6Addr,
        prefix: u8,
    },
    Exists(MacroString),
}

impl Mechanism {
    /// RFC 7208 §4.6.4: the mechanisms that cause DNS queries and count toward the limit of 10.
    pub(crate) fn queries_dns(&self) -> bool {
        matches!(
            self,
            Mechanism::Include(_)
                | Mechanism::A { .. }
                | Mechanism::Mx { .. }
                | Mechanism::Ptr(_)
                | Mechanism::Exists(_)
        )
    }
}

/// A directive: qualifier, mechanism and the term as written (for logs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Directive {
    pub qualifier: Qualifier,
    pub mechanism: Mechanism,
    pub text: String,
}

/// A parsed `v=spf1` record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    pub directives: Vec<Directive>,
    pub redirect: Option<MacroString>,
    /// Whether the record has `exp=`: its syntax is checked, its target
    /// never fetched (see [`super::eval`]).
    pub has_exp: bool,
}

/// RFC 7208 §4.5: a TXT record is an SPF record when it starts with
/// `v=spf1` (case-insensitive) followed by a space or the end.
/// `v=spf10` is not.
pub(crate) fn is_spf_record(txt: &[u8]) -> bool {
    txt.len() >= VERSION.len()
        && txt[..VERSION.len()].eq_ignore_ascii_case(VERSION)
        && txt.get(VERSION.len()).is_none_or(|b| *b == b' ')
}

/// Parse a record already selected by [`is_spf_record`].
pub(crate) fn parse(txt: &[u8]) -> Result<Record, ParseError> {
    // RFC 7208 §3.1 and §4.6.1: printable 7-bit ASCII; terms separated by SP only,
    // so any control character (CR, LF, TAB, NUL) or non-ASCII byte is an error.
    if let Some(b) = txt.iter().find(|b| !(0x20..=0x7e).contains(*b)) {
        return Err(ParseError::BadCharacter(*b));
    }
    let text = std::str::from_utf8(txt).map_err(|_| ParseError::NotSpf1)?;
    if !is_spf_record(txt) {
        return Err(ParseError::NotSpf1);
    }
    let mut record = Record {
        directives: Vec::new(),
        redirect: None,
        has_exp: false,
    };
    // RFC 7208 §4.6.1: terms = *( 1*SP ( directive / modifier ) ); trailing SP allowed (§4.5).
    for term in text[VERSION.len()..].split(' ').filter(|t| !t.is_empty()) {
        parse_term(term, &mut record)?;
    }
    Ok(record)
}

fn parse_term(term: &str, record: &mut Record) -> Result<(), ParseError> {
    let (qualifier, body) = match term.as_bytes().first() {
        Some(b'+') => (Some(Qualifier::Pass), &term[1..]),
        Some(b'-') => (Some(Qualifier::Fail), &term[1..]),
        Some(b'~') => (Some(Qualifier::SoftFail), &term[1..]),
        Some(b'?') => (Some(Qualifier::Neutral), &term[1..]),
        _ => (None, term),
    };
    // RFC 7208 §4.6.1: name = ALPHA *( ALPHA / DIGIT / "-" / "_" / "." ).
    let name_len = if body.starts_with(|c: char| c.is_ascii_alphabetic()) {
        body.find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
            .unwrap_or(body.len())
    } else {
        0
    };
    let (name, rest) = body.split_at(name_len);
    if let Some(value) = rest.strip_prefix('=') {
        // RFC 7208 §4.6.1: a modifier has no qualifier and a valid name.
        if qualifier.is_some() || name.is_empty() {
            return Err(ParseError::InvalidTerm(Quoted::new(term)));
        }
        return parse_modifier(term, name, value, record);
    }
    if name.is_empty() {
        return Err(ParseError::InvalidTerm(Quoted::new(term)));
    }
    let mechanism = parse_mechanism(term, name, rest)?;
    record.directives.push(Directive {
        qualifier: qualifier.unwrap_or(Qualifier::Pass),
        mechanism,
        text: term.to_owned(),
    });
    Ok(())
}

fn parse_modifier(
    term: &str,
    name: &str,
    value: &str,
    record: &mut Record,
) -> Result<(), ParseError> {
    if name.eq_ignore_ascii_case("redirect") {
        // RFC 7208 §6: redirect appears at most once; §6.1 redirect = "redirect" "=" domain-spec.
        if record.redirect.is_some() {
            return Err(ParseError::DuplicateModifier("redirect"));
        }
        record.redirect = Some(domain_spec(term, value)?);
    } else if name.eq_ignore_ascii_case("exp") {
        // RFC 7208 §6: exp appears at most once; §6.2 explanation = "exp" "=" domain-spec
        // (an empty domain-spec is a permerror, per the suite's exp-empty-domain).
        if record.has_exp {
            return Err(ParseError::DuplicateModifier("exp"));
        }
        domain_spec(term, value)?;
        record.has_exp = true;
    } else {
        // RFC 7208 §6 and Appendix A: unknown-modifier = name "=" macro-string;
        // it is ignored, but its macro syntax must be valid.
        MacroString::parse(value, Context::ModifierValue).map_err(|source| ParseError::Macro {
            term: Quoted::new(term),
            source,
        })?;
    }
    Ok(())
}

fn parse_mechanism(term: &str, name: &str, args: &str) -> Result<Mechanism, ParseError> {
    let bad_argument = || ParseError::BadArgument(Quoted::new(term));
    // RFC 7208 §4.6.1: mechanism names are case-insensitive.
    let lower = name.to_ascii_lowercase();
    match lower.as_str() {
        // RFC 7208 §5.1: all = "all".
        "all" if args.is_empty() => Ok(Mechanism::All),
        "all" => Err(bad_argument()),
        // RFC 7208 §5.2: include = "include" ":" domain-spec.
        "include" => {
            let spec = args.strip_prefix(':').ok_or_else(bad_argument)?;
            Ok(Mechanism::Include(domain_spec(term, spec)?))
        }
        // RFC 7208 §5.7: exists = "exists" ":" domain-spec.
        "exists" => {
            let spec = args.strip_prefix(':').ok_or_else(bad_argument)?;
            Ok(Mechanism::Exists(domain_spec(term, spec)?))
        }
        // RFC 7208 §5.5: PTR = "ptr" [ ":" domain-spec ].
        "ptr" => match args.strip_prefix(':') {
            Some(spec) => Ok(Mechanism::Ptr(Some(domain_spec(term, spec)?))),
            None if args.is_empty() => Ok(Mechanism::Ptr(None)),
            None => Err(bad_argument()),
        },
        // RFC 7208 §5.3, §5.4: "a"/"mx" [ ":" domain-spec ] [ dual-cidr-length ].
        "a" | "mx" => {
            let (domain, cidr4, cidr6) = match args.strip_prefix(':') {
                Some(spec_and_cidr) => {
                    let (spec, c4, c6) = split_dual_cidr(spec_and_cidr);
                    let (cidr4, cidr6) = cidr_lengths(term, c4, c6)?;
                    (Some(domain_spec(term, spec)?), cidr4, cidr6)
                }
                None => {
                    let (c4, c6) = exact_dual_cidr(args).ok_or_else(bad_argument)?;
                    let (cidr4, cidr6) = cidr_lengths(term, c4, c6)?;
                    (None, cidr4, cidr6)
                }
            };
            Ok(if lower == "a" {
                Mechanism::A {
                    domain,
                    cidr4,
                    cidr6,
                }
            } else {
                Mechanism::Mx {
                    domain,
                    cidr4,
                    cidr6,
                }
            })
        }
        // RFC 7208 §5.6: ip4 = "ip4" ":" ip4-network [ ip4-cidr-length ].
        "ip4" => {
            let spec = args.strip_prefix(':').ok_or_else(bad_argument)?;
            let (addr, cidr) = match spec.split_once('/') {
                Some((a, c)) => (a, Some(c)),
                None => (spec, None),
            };
            let network =
                parse_ip4(addr).ok_or_else(|| ParseError::BadAddress(Quoted::new(term)))?;
            let prefix = match cidr {
                Some(c) => {
                    cidr_value(c, 32).ok_or_else(|| ParseError::BadCidr(Quoted::new(term)))?
                }
                None => 32,
            };
            Ok(Mechanism::Ip4 { network, prefix })
        }
        // RFC 7208 §5.6: ip6 = "ip6" ":" ip6-network [ ip6-cidr-length ].
        "ip6" => {
            let spec = args.strip_prefix(':').ok_or_else(bad_argument)?;
            let (addr, cidr) = match spec.split_once('/') {
                Some((a, c)) => (a, Some(c)),
                None => (spec, None),
            };
            let network: Ipv6Addr = addr
                .parse()
                .map_err(|_| ParseError::BadAddress(Quoted::new(term)))?;
            let prefix = match cidr {
                Some(c) => {
                    cidr_value(c, 128).ok_or_else(|| ParseError::BadCidr(Quoted::new(term)))?
                }
                None => 128,
            };
            Ok(Mechanism::Ip6 { network, prefix })
        }
        _ => Err(ParseError::UnknownMechanism(Quoted::new(name))),
    }
}

/// Split `domain-spec [ "/" ip4-cidr ] [ "//" ip6-cidr ]` from the right: a
/// trailing `//digits` is the IPv6 length and a trailing `/digits` the IPv4
/// length; everything else is the domain-spec, which may itself hold `/`
/// (`a:foo:bar/baz.example.com`, suite `a-colon-domain`).
fn split_dual_cidr(s: &str) -> (&str, Option<&str>, Option<&str>) {
    let mut rest = s;
    let mut c6 = None;
    let mut c4 = None;
    if let Some(pos) = rest.rfind("//") {
        let tail = &rest[pos + 2..];
        if !tail.is_empty() && tail.bytes().all(|b| b.is_ascii_digit()) {
            c6 = Some(tail);
            rest = &rest[..pos];
        }
    }
    if let Some(pos) = rest.rfind('/') {
        let tail = &rest[pos + 1..];
        if !tail.is_empty() && tail.bytes().all(|b| b.is_ascii_digit()) {
            c4 = Some(tail);
            rest = &rest[..pos];
        }
    }
    (rest, c4, c6)
}

/// Parse exactly `[ "/" digits ] [ "//" digits ]` (the whole argument of `a`/`mx` without a domain).
fn exact_dual_cidr(s: &str) -> Option<(Option<&str>, Option<&str>)> {
    if s.is_empty() {
        return Some((None, None));
    }
    if let Some(c6) = s.strip_prefix("//") {
        return Some((None, Some(c6)));
    }
    let after = s.strip_prefix('/')?;
    match after.find('/') {
        None => Some((Some(after), None)),
        Some(pos) => {
            let c6 = after[pos..].strip_prefix("//")?;
            Some((Some(&after[..pos]), Some(c6)))
        }
    }
}

fn cidr_lengths(term: &str, c4: Option<&str>, c6: Option<&str>) -> Result<(u8, u8), ParseError> {
    let bad = || ParseError::BadCidr(Quoted::new(term));
    let cidr4 = match c4 {
        Some(c) => cidr_value(c, 32).ok_or_else(bad)?,
        None => 32,
    };
    let cidr6 = match c6 {
        Some(c) => cidr_value(c, 128).ok_or_else(bad)?,
        None => 128,
    };
    Ok((cidr4, cidr6))
}

/// RFC 7208 §5.6: `ip4-cidr-length = "/" ("0" / %x31-39 0*1DIGIT)` (at most 32) and
/// `ip6-cidr-length = "/" ("0" / %x31-39 0*2DIGIT)` (at most 128): no leading zeros.
fn cidr_value(s: &str, max: u8) -> Option<u8> {
    if s.is_empty() || s.len() > 3 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if s.len() > 1 && s.starts_with('0') {
        return None;
    }
    let v: u8 = s.parse().ok()?;
    (v <= max).then_some(v)
}

/// RFC 7208 §5.6: `ip4-network = qnum "." qnum "." qnum "." qnum`, each 0-255 without leading zeros.
fn parse_ip4(s: &str) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut parts = s.split('.');
    for octet in &mut octets {
        let p = parts.next()?;
        if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        if p.len() > 1 && p.starts_with('0') {
            return None;
        }
        *octet = p.parse().ok()?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(Ipv4Addr::from(octets))
}

/// Parse a `domain-spec` (RFC 7208 §7.1): `macro-string domain-end` with
/// `domain-end = ( "." toplabel [ "." ] ) / macro-expand`. Syntax is checked
/// before expansion, never after (suite `invalid-hello-macro`).
fn domain_spec(term: &str, spec: &str) -> Result<MacroString, ParseError> {
    if spec.is_empty() {
        return Err(ParseError::BadDomainSpec(Quoted::new(term)));
    }
    let macros =
        MacroString::parse(spec, Context::DomainSpec).map_err(|source| ParseError::Macro {
            term: Quoted::new(term),
            source,
        })?;
    if macros.ends_with_macro() {
        return Ok(macros);
    }
    let body = spec.strip_suffix('.').unwrap_or(spec);
    let valid = body
        .rsplit_once('.')
        .is_some_and(|(_, top)| is_toplabel(top));
    if valid {
        Ok(macros)
    } else {
        Err(ParseError::BadDomainSpec(Quoted::new(term)))
    }
}

/// RFC 7208 §7.1: `toplabel = ( *alphanum ALPHA *alphanum ) /
/// ( 1*alphanum "-" *( alphanum / "-" ) alphanum )`: letters, digits and
/// inner hyphens, not all-numeric unless it holds a hyphen.
fn is_toplabel(s: &str) -> bool {
    let b = s.as_bytes();
    let (Some(first), Some(last)) = (b.first(), b.last()) else {
        return false;
    };
    if !b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-') {
        return false;
    }
    if !first.is_ascii_alphanumeric() || !last.is_ascii_alphanumeric() {
        return false;
    }
    b.iter().any(|c| c.is_ascii_alphabetic() || *c == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> Record {
        match parse(s.as_bytes()) {
            Ok(r) => r,
            Err(e) => panic!("{s:?} did not parse: {e}"),
        }
    }

    fn err(s: &[u8]) -> ParseError {
        match parse(s) {
            Ok(r) => panic!("{:?} parsed: {r:?}", String::from_utf8_lossy(s)),
            Err(e) => e,
        }
    }

    #[test]
    fn selection() {
        assert!(is_spf_record(b"v=spf1"));
        assert!(is_spf_record(b"V=SpF1 -all"));
        assert!(!is_spf_record(b"v=spf10"));
        assert!(!is_spf_record(b"v=spf1\t-all"));
        assert!(!is_spf_record(b"v=spf"));
        assert!(!is_spf_record(b""));
        assert!(!is_spf_record(b" v=spf1"));
    }

    #[test]
    fn valid_records() {
        let r = ok(
            "v=spf1 a mx/24//64 ip4:192.0.2.0/24 ip6:2001:db8::/32 ?ptr ~exists:%{ir}.bl.example.org -all",
        );
        assert_eq!(r.directives.len(), 7);
        let r = ok("v=spf1 a:foo:bar/baz.example.com");
        assert!(matches!(
            &r.directives[0].mechanism,
            Mechanism::A {
                cidr4: 32,
                cidr6: 128,
                ..
            }
        ));
        let r = ok("v=spf1 a:foo.example.com/24");
        assert!(matches!(
            &r.directives[0].mechanism,
            Mechanism::A {
                cidr4: 24,
                cidr6: 128,
                ..
            }
        ));
        let r = ok("v=spf1 a//0 a/0 a/24//64");
        assert!(matches!(
            &r.directives[0].mechanism,
            Mechanism::A {
                domain: None,
                cidr4: 32,
                cidr6: 0
            }
        ));
        assert!(matches!(
            &r.directives[2].mechanism,
            Mechanism::A {
                domain: None,
                cidr4: 24,
                cidr6: 64
            }
        ));
        ok("v=spf1 moo.cow-far_out=man:dog/cat ip4:1.2.3.4 -all");
        ok("v=spf1 default=+ foo=%{c}");
        ok("v=spf1 a:foo.example.xn--zckzah -all");
        ok("v=spf1 include:o.spf.example.com. ~all");
        ok("v=spf1 redirect=%{d}.d.spf.example.com.");
        ok("v=spf1 -include:_spfh.%{d2} ip4:1.2.3.0/24 -all");
        ok("v=spf1 exists:%{l2r+-}.user.%{d2}");
        ok("v=spf1 ");
        ok("v=spf1  a  -all ");
        ok("V=SPF1 A MX -ALL");
        ok("v=spf1 ip6:::FFFF:1.2.3.4 ip6:::1.1.1.1/0");
    }

    #[test]
    fn suite_syntax_errors() {
        for bad in [
            &b"v=spf1 ip4:1.2.3.4/33 -all"[..],
            b"v=spf1 ip4:1.2.3.4/032 -all",
            b"v=spf1 a/33 -all",
            b"v=spf1 a//129 -all",
            b"v=spf1 a/24/64 -all",
            b"v=spf1 ip6:::1.1.1.1/129",
            b"v=spf1 ip6:::1.1.1.1//33",
            b"v=spf1 ip6::CAFE::BABE",
            b"v=spf1 a:ctrl.example.com\x0dptr -all",
            b"v=spf1 ip4:192.0.2.5\x0a include:x.example.com ~all",
            b"v=spf1 a:foo.example.com\0",
            b"v=spf1 a:foo-bar -all",
            b"v=spf1 a:111.222.33.44",
            b"v=spf1 a:abc.123",
            b"v=spf1 a:museum",
            b"v=spf1 a:museum.",
            b"v=spf1 a:example.-com",
            b"v=spf1 mx:example.com:8080",
            b"v=spf1 exp=-all",
            b"v=spf1 exp= -all",
            b"v=spf1 redirect=-all ?all",
            b"v=spf1 ?all redirect=",
            b"v=spf1 1up=foo",
            b"v=spf1 =all",
            b"v=spf1 moo.cow/far_out=man:dog/cat ip4:1.2.3.4 -all",
            b"v=spf1 moo.cow:far_out=man:dog/cat ip4:1.2.3.4 -all",
            b"v=spf1 -all.",
            b"v=spf1 -all:foobar",
            b"v=spf1 -all/8",
            b"v=spf1 ip4:1.2.3.400 -all",
            b"v=spf1 ip4:1.2.3",
            b"v=spf1 ip4:1.2.3.4:8080",
            b"v=spf1 ip4:1.2.3.4//32",
            b"v=spf1 ip4",
            b"v=spf1 -all ip6",
            b"v=spf1 \x80a:example.net -all",
            b"v=spf1 a:example.net \x96all",
            b"v=spf1 -all exp=%{r}.example.com",
            b"v=spf1 -exists:%(ir).sbl.example.com ?all",
            b"v=spf1 exists:foo%.sbl.example.com ?all",
            b"v=spf1 a:%{a}.example.com -all",
            b"v=spf1 -all foo=%abc",
            b"v=spf1 ptr/0 -all",
            b"v=spf1 ptr:",
            b"v=spf1 a:",
            b"v=spf1 mx: -all",
            b"v=spf1 include: -all",
            b"v=spf1 include -all",
            b"v=spf1 include:ip5.example.com/24 -all",
            b"v=spf1 exists",
            b"v=spf1 exists:",
            b"v=spf1 exists:mail.example.com/24",
            b"v=spf1 ip4:1.2.3.4 redirect:t2.example.com",
            b"v=spf1 exp=a.example.com -all exp=b.example.com",
            b"v=spf1 redirect=a.example.com -all redirect=a.example.com",
            b"v=spf1 ip4:1.2.3.4 -all moo",
            b"v=spf1 +redirect=a.example.com",
        ] {
            err(bad);
        }
    }

    #[test]
    fn cidr_values() {
        assert_eq!(cidr_value("0", 32), Some(0));
        assert_eq!(cidr_value("32", 32), Some(32));
        assert_eq!(cidr_value("33", 32), None);
        assert_eq!(cidr_value("128", 128), Some(128));
        assert_eq!(cidr_value("129", 128), None);
        assert_eq!(cidr_value("00", 32), None);
        assert_eq!(cidr_value("999", 128), None);
        assert_eq!(cidr_value("", 32), None);
    }
}
