//! SPF macro strings (RFC 7208 §7): parsing `%{...}` expressions into tokens
//! and expanding them against the values of one check.
//!
//! Parsing happens once, when a record is parsed, so that every macro error
//! in a record is a syntax error (`permerror`) before evaluation starts.
//! Expansion is bounded: digit counts saturate instead of overflowing
//! (`%{d2147483648}` means "all parts"), and the text an expansion builds is
//! capped, keeping the right-hand end for domain names (which §7.3 shortens
//! from the left anyway). Explanation text (`exp=`) is never fetched, so
//! never parsed or expanded.

use std::fmt::Write as _;
use std::net::IpAddr;

use thiserror::Error;

/// The longest domain name in text form, without the root dot (RFC 1035 §2.3.4, RFC 7208 §7.3).
pub(crate) const MAX_NAME: usize = 253;
/// Longest label (RFC 1035 §2.3.4).
pub(crate) const MAX_LABEL: usize = 63;
/// How much of the right-hand end of a domain-name expansion is kept while
/// building it. Anything further left is removed by §7.3 truncation anyway,
/// as long as this exceeds [`MAX_NAME`] plus one label.
const DOMAIN_TAIL_KEEP: usize = 1024;

/// Where a macro string occurs; the letters `c`, `r` and `t` are allowed only
/// in explanation text (RFC 7208 §7.2), which rmilter never reads, and in the
/// values of unknown modifiers (Appendix A), which it ignores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Context {
    /// A `domain-spec` of a mechanism, `redirect=` or `exp=`.
    DomainSpec,
    /// The value of an unknown modifier: `macro-string` with every macro letter.
    ModifierValue,
}

/// Why a macro string does not parse.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub(crate) enum MacroError {
    /// RFC 7208 §7.1: `%` must be followed by `{`, `%`, `_` or `-`.
    #[error("'%' not followed by '{{', '%', '_' or '-'")]
    BadPercent,
    /// `%{` without its closing `}`.
    #[error("unterminated macro")]
    Unterminated,
    /// A macro letter outside `slodipvhcrt`.
    #[error("invalid macro letter {0:?}")]
    BadLetter(char),
    /// `c`, `r` or `t` outside explanation text (RFC 7208 §7.2).
    #[error("macro letter {0:?} is allowed only in explanation text")]
    ExplanationOnly(char),
    /// RFC 7208 §7.1: a digit transformer must be nonzero.
    #[error("macro digit transformer is zero")]
    ZeroDigits,
    /// Something other than a delimiter or `}` after the transformers.
    #[error("invalid character {0:?} in macro")]
    BadMacroChar(char),
    /// A character outside the visible ASCII range (or a space outside explanation text).
    #[error("character {0:?} not allowed in macro string")]
    BadChar(char),
}

/// The macro letters of RFC 7208 §7.2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Letter {
    /// `s`: `<sender>`.
    Sender,
    /// `l`: local-part of `<sender>`.
    Local,
    /// `o`: domain of `<sender>`.
    SenderDomain,
    /// `d`: `<domain>`.
    Domain,
    /// `i`: `<ip>`, dotted decimal or dotted nibbles.
    Ip,
    /// `p`: the validated domain name of `<ip>`.
    Validated,
    /// `v`: `in-addr` or `ip6`.
    IpVersion,
    /// `h`: the HELO/EHLO domain.
    Helo,
    /// `c`: the client IP in readable form (explanation only).
    ClientIp,
    /// `r`: the receiving host's domain (explanation only).
    Receiver,
    /// `t`: current timestamp (explanation only).
    Timestamp,
}

impl Letter {
    fn from_char(c: char) -> Option<Letter> {
        Some(match c.to_ascii_lowercase() {
            's' => Letter::Sender,
            'l' => Letter::Local,
            'o' => Letter::SenderDomain,
            'd' => Letter::Domain,
            'i' => Letter::Ip,
            'p' => Letter::Validated,
            'v' => Letter::IpVersion,
            'h' => Letter::Helo,
            'c' => Letter::ClientIp,
            'r' => Letter::Receiver,
            't' => Letter::Timestamp,
            _ => return None,
        })
    }

    fn explanation_only(self) -> bool {
        matches!(
            self,
            Letter::ClientIp | Letter::Receiver | Letter::Timestamp
        )
    }
}

/// One `%{...}` expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Expand {
    letter: Letter,
    /// Upper-case letter: URL-escape the result (RFC 7208 §7.3).
    escape: bool,
    /// Digit transformer: keep this many right-hand parts (saturated, never zero).
    keep: Option<u32>,
    /// `r` transformer: reverse the parts.
    reverse: bool,
    /// Delimiters as a bit set over [`DELIMITERS`]; zero means the default `.`.
    delimiters: u8,
}

/// RFC 7208 §7.1: `delimiter = "." / "-" / "+" / "," / "/" / "_" / "="`.
const DELIMITERS: &[u8; 7] = b".-+,/_=";

impl Expand {
    fn transformed(&self) -> bool {
        self.keep.is_some() || self.reverse || self.delimiters != 0
    }

    fn is_delimiter(&self, b: u8) -> bool {
        if self.delimiters == 0 {
            return b == b'.';
        }
        DELIMITERS
            .iter()
            .position(|d| *d == b)
            .is_some_and(|i| self.delimiters & (1 << i) != 0)
    }
}

/// A piece of a macro string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Token {
    /// Literal text, with `%%`, `%_` and `%-` already replaced.
    Literal(String),
    /// A macro expression.
    Expand(Expand),
}

/// A parsed macro string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MacroString {
    tokens: Vec<Token>,
}

/// The values macro letters expand to for one evaluation step.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Vars<'a> {
    pub sender: &'a str,
    pub local: &'a str,
    pub sender_domain: &'a str,
    pub domain: &'a str,
    pub ip: IpAddr,
    pub helo: &'a str,
    pub receiver: &'a str,
    /// The `p` value, resolved beforehand when [`MacroString::uses_validated`] says so.
    pub validated: Option<&'a str>,
    pub timestamp: u64,
}

impl MacroString {
    /// Parse `input` (RFC 7208 §7.1 `macro-string`).
    pub(crate) fn parse(input: &str, context: Context) -> Result<MacroString, MacroError> {
        let mut tokens = Vec::new();
        let mut literal = String::new();
        let mut chars = input.chars();
        while let Some(c) = chars.next() {
            match c {
                '%' => match chars.next() {
                    // RFC 7208 §7.1: "%%" is a percent, "%_" a space, "%-" a URL-encoded space.
                    Some('%') => literal.push('%'),
                    Some('_') => literal.push(' '),
                    Some('-') => literal.push_str("%20"),
                    Some('{') => {
                        let expand = parse_expand(&mut chars, context)?;
                        if !literal.is_empty() {
                            tokens.push(Token::Literal(std::mem::take(&mut literal)));
                        }
                        tokens.push(Token::Expand(expand));
                    }
                    // RFC 7208 §7.1: any other character after '%' is a syntax error.
                    _ => return Err(MacroError::BadPercent),
                },
                // RFC 7208 §7.1: macro-literal = %x21-24 / %x26-7E.
                '\x21'..='\x7e' => literal.push(c),
                _ => return Err(MacroError::BadChar(c)),
            }
        }
        if !literal.is_empty() {
            tokens.push(Token::Literal(literal));
        }
        Ok(MacroString { tokens })
    }

    /// Whether the string ends with a macro expression (RFC 7208 §7.1 `domain-end`).
    pub(crate) fn ends_with_macro(&self) -> bool {
        matches!(self.tokens.last(), Some(Token::Expand(_)))
    }

    /// Whether expanding needs the validated domain name (`%{p}`), which costs DNS queries.
    pub(crate) fn uses_validated(&self) -> bool {
        self.tokens
            .iter()
            .any(|t| matches!(t, Token::Expand(e) if e.letter == Letter::Validated))
    }

    /// Expand for use as a domain name. Only the right-hand end is kept once the
    /// text grows past what §7.3 truncation could keep.
    pub(crate) fn expand_domain(&self, vars: &Vars<'_>) -> String {
        let mut out = String::new();
        for token in &self.tokens {
            match token {
                Token::Literal(s) => out.push_str(s),
                Token::Expand(e) => expand_one(e, vars, &mut out),
            }
            if out.len() > 2 * DOMAIN_TAIL_KEEP {
                let cut = out.len() - DOMAIN_TAIL_KEEP;
                // The text is ASCII or the cut lands on a char boundary found below.
                let cut = (cut..out.len())
                    .find(|i| out.is_char_boundary(*i))
                    .unwrap_or(out.len());
                out.drain(..cut);
            }
        }
        out
    }
}

/// Parse what follows `%{` up to and including `}`.
fn parse_expand(chars: &mut std::str::Chars<'_>, context: Context) -> Result<Expand, MacroError> {
    let c = chars.next().ok_or(MacroError::Unterminated)?;
    let letter = Letter::from_char(c).ok_or(MacroError::BadLetter(c))?;
    // RFC 7208 §7.2: c, r and t are allowed only in "exp" text.
    if context == Context::DomainSpec && letter.explanation_only() {
        return Err(MacroError::ExplanationOnly(c));
    }
    let escape = c.is_ascii_uppercase();
    let mut keep: Option<u32> = None;
    let mut reverse = false;
    let mut delimiters = 0u8;
    let mut next = chars.next();
    // RFC 7208 §7.1: transformers = *DIGIT [ "r" ]. The count saturates, so
    // `%{d2147483648}` cannot overflow; any count at or above the number of
    // parts keeps them all (RELIABILITY P1).
    while let Some(d) = next.and_then(|c| c.to_digit(10)) {
        keep = Some(keep.unwrap_or(0).saturating_mul(10).saturating_add(d));
        next = chars.next();
    }
    if keep == Some(0) {
        // RFC 7208 §7.1: "If a DIGIT is specified, the value MUST be nonzero."
        return Err(MacroError::ZeroDigits);
    }
    if matches!(next, Some('r' | 'R')) {
        reverse = true;
        next = chars.next();
    }
    loop {
        match next {
            None => return Err(MacroError::Unterminated),
            Some('}') => break,
            Some(c) => {
                let bit = DELIMITERS
                    .iter()
                    .position(|d| char::from(*d) == c)
                    .ok_or(MacroError::BadMacroChar(c))?;
                delimiters |= 1 << bit;
            }
        }
        next = chars.next();
    }
    Ok(Expand {
        letter,
        escape,
        keep,
        reverse,
        delimiters,
    })
}

/// The raw value of a macro letter (RFC 7208 §7.2, §7.3).
fn letter_value(letter: Letter, vars: &Vars<'_>, out: &mut String) {
    match letter {
        Letter::Sender => out.push_str(vars.sender),
        Letter::Local => out.push_str(vars.local),
        Letter::SenderDomain => out.push_str(vars.sender_domain),
        Letter::Domain => out.push_str(vars.domain),
        Letter::Ip => dotted_ip(vars.ip, out),
        // RFC 7208 §7.3: "unknown" when no validated name exists.
        Letter::Validated => out.push_str(vars.validated.unwrap_or("unknown")),
        Letter::IpVersion => out.push_str(match vars.ip {
            IpAddr::V4(_) => "in-addr",
            IpAddr::V6(_) => "ip6",
        }),
        Letter::Helo => out.push_str(vars.helo),
        Letter::ClientIp => {
            let _ = write!(out, "{}", vars.ip);
        }
        Letter::Receiver => out.push_str(if vars.receiver.is_empty() {
            "unknown"
        } else {
            vars.receiver
        }),
        Letter::Timestamp => {
            let _ = write!(out, "{}", vars.timestamp);
        }
    }
}

/// RFC 7208 §7.3: `i` is dotted decimal for IPv4 and dot-separated nibbles for IPv6.
pub(crate) fn dotted_ip(ip: IpAddr, out: &mut String) {
    match ip {
        IpAddr::V4(v4) => {
            let _ = write!(out, "{v4}");
        }
        IpAddr::V6(v6) => {
            for (n, byte) in v6.octets().iter().enumerate() {
                if n > 0 {
                    out.push('.');
                }
                let _ = write!(out, "{:x}.{:x}", byte >> 4, byte & 0xf);
            }
        }
    }
}

/// Expand one macro expression into `out` (RFC 7208 §7.3).
fn expand_one(e: &Expand, vars: &Vars<'_>, out: &mut String) {
    let mut value = String::new();
    letter_value(e.letter, vars, &mut value);
    if e.transformed() {
        // RFC 7208 §7.3: split on the delimiters, optionally reverse, keep the
        // right-hand parts, rejoin with ".".
        let mut parts: Vec<&str> = value
            .split(|c: char| c.is_ascii() && e.is_delimiter(c as u8))
            .collect();
        if e.reverse {
            parts.reverse();
        }
        let keep = e.keep.map_or(parts.len(), |k| {
            usize::try_from(k).unwrap_or(usize::MAX).min(parts.len())
        });
        let skip = parts.len() - keep;
        value = parts[skip..].join(".");
    }
    if e.escape {
        // RFC 7208 §7.3: upper-case macros are URL-escaped; every character
        // outside the unreserved set (RFC 3986) becomes %XX.
        for b in value.bytes() {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                out.push(char::from(b));
            } else {
                let _ = write!(out, "%{b:02X}");
            }
        }
    } else {
        out.push_str(&value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn vars(ip: IpAddr) -> Vars<'static> {
        // RFC 7208 §7.4 example values.
        Vars {
            sender: "strong-bad@email.example.com",
            local: "strong-bad",
            sender_domain: "email.example.com",
            domain: "email.example.com",
            ip,
            helo: "mx.example.org",
            receiver: "mx.example.net",
            validated: None,
            timestamp: 1_700_000_000,
        }
    }

    fn v4() -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, 3))
    }

    fn exp(s: &str, ip: IpAddr) -> String {
        MacroString::parse(s, Context::DomainSpec)
            .map(|m| m.expand_domain(&vars(ip)))
            .unwrap_or_else(|e| format!("error: {e}"))
    }

    #[test]
    fn rfc7208_section_7_4_examples() {
        let ip = v4();
        assert_eq!(exp("%{s}", ip), "strong-bad@email.example.com");
        assert_eq!(exp("%{o}", ip), "email.example.com");
        assert_eq!(exp("%{d}", ip), "email.example.com");
        assert_eq!(exp("%{d4}", ip), "email.example.com");
        assert_eq!(exp("%{d3}", ip), "email.example.com");
        assert_eq!(exp("%{d2}", ip), "example.com");
        assert_eq!(exp("%{d1}", ip), "com");
        assert_eq!(exp("%{dr}", ip), "com.example.email");
        assert_eq!(exp("%{d2r}", ip), "example.email");
        assert_eq!(exp("%{l}", ip), "strong-bad");
        assert_eq!(exp("%{l-}", ip), "strong.bad");
        assert_eq!(exp("%{lr}", ip), "strong-bad");
        assert_eq!(exp("%{lr-}", ip), "bad.strong");
        assert_eq!(exp("%{l1r-}", ip), "strong");
        assert_eq!(
            exp("%{ir}.%{v}._spf.%{d2}", ip),
            "3.2.0.192.in-addr._spf.example.com"
        );
        assert_eq!(
            exp("%{lr-}.lp._spf.%{d2}", ip),
            "bad.strong.lp._spf.example.com"
        );
        assert_eq!(
            exp("%{lr-}.lp.%{ir}.%{v}._spf.%{d2}", ip),
            "bad.strong.lp.3.2.0.192.in-addr._spf.example.com"
        );
        assert_eq!(
            exp("%{ir}.%{v}.%{l1r-}.lp._spf.%{d2}", ip),
            "3.2.0.192.in-addr.strong.lp._spf.example.com"
        );
        assert_eq!(
            exp("%{d2}.trusted-domains.example.net", ip),
            "example.com.trusted-domains.example.net"
        );
        let ip6 = IpAddr::V6(
            "2001:db8::cb01"
                .parse::<Ipv6Addr>()
                .unwrap_or(Ipv6Addr::LOCALHOST),
        );
        assert_eq!(
            exp("%{ir}.%{v}._spf.%{d2}", ip6),
            "1.0.b.c.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6._spf.example.com"
        );
    }

    #[test]
    fn escapes_and_url_encoding() {
        let ip = v4();
        assert_eq!(exp("a%%b%_c%-d", ip), "a%b c%20d");
        assert_eq!(exp("%{L}", ip), "strong-bad");
        assert_eq!(exp("%{S}", ip), "strong-bad%40email.example.com");
        let mut v = vars(ip);
        v.local = "~jack&jill=up-a_b3.c";
        let m = MacroString::parse("%{L}", Context::DomainSpec).ok();
        assert_eq!(
            m.map(|m| m.expand_domain(&v)).as_deref(),
            Some("~jack%26jill%3Dup-a_b3.c")
        );
        // Reverse plus URL-encode plus delimiters (RELIABILITY P1, §8 case 18).
        v.local = "a+b-c d";
        let m = MacroString::parse("%{L1r+-}", Context::DomainSpec).ok();
        assert_eq!(m.map(|m| m.expand_domain(&v)).as_deref(), Some("a"));
        let m = MacroString::parse("%{Lr+-}", Context::DomainSpec).ok();
        assert_eq!(m.map(|m| m.expand_domain(&v)).as_deref(), Some("c%20d.b.a"));
    }

    #[test]
    fn huge_digit_counts_saturate() {
        let ip = v4();
        assert_eq!(exp("%{d2147483648}", ip), "email.example.com");
        assert_eq!(
            exp("%{d99999999999999999999999999999r}", ip),
            "com.example.email"
        );
        assert_eq!(exp("%{d0}", ip), "error: macro digit transformer is zero");
        assert_eq!(exp("%{d00}", ip), "error: macro digit transformer is zero");
        assert_eq!(exp("%{d01}", ip), "com");
    }

    #[test]
    fn invalid_macros_are_errors() {
        for bad in [
            "%", "%a", "%(ir)", "%{", "%{d", "%{x}", "%{d2rr}", "%{d2x}", "%{ }", "a%", "%{d r}",
            "%{c}", "%{r}", "%{t}", "%{C}",
        ] {
            assert!(
                MacroString::parse(bad, Context::DomainSpec).is_err(),
                "{bad:?} parsed"
            );
        }
        for good in ["%{c}", "%{r}", "%{t}", "%{C}"] {
            assert!(
                MacroString::parse(good, Context::ModifierValue).is_ok(),
                "{good:?} rejected"
            );
        }
        assert!(MacroString::parse("a b", Context::DomainSpec).is_err());
        assert!(MacroString::parse("a b", Context::ModifierValue).is_err());
        assert!(MacroString::parse("caf\u{e9}", Context::ModifierValue).is_err());
        assert!(MacroString::parse("%{c}", Context::ModifierValue).is_ok());
    }

    #[test]
    fn explanation_letters() {
        let ip6 = IpAddr::V6(
            "cafe:babe::1"
                .parse::<Ipv6Addr>()
                .unwrap_or(Ipv6Addr::LOCALHOST),
        );
        let m = MacroString::parse("%{c}.%{r}.%{t}.%{v}", Context::ModifierValue).ok();
        assert_eq!(
            m.map(|m| m.expand_domain(&vars(ip6))).as_deref(),
            Some("cafe:babe::1.mx.example.net.1700000000.ip6")
        );
    }

    #[test]
    fn long_expansions_are_bounded() {
        let mut v = vars(v4());
        let long = "a.".repeat(5000);
        v.local = &long;
        let m = MacroString::parse(&"%{l}".repeat(50), Context::DomainSpec).ok();
        let out = m.map(|m| m.expand_domain(&v)).unwrap_or_default();
        assert!(out.len() <= 2 * DOMAIN_TAIL_KEEP + long.len());
    }
}
