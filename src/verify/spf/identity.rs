//! The identities SPF checks (RFC 7208 §2.3, §2.4, §4.3): the MAIL FROM
//! reverse-path and the HELO name, turned into a `<sender>` and a `<domain>`.
//!
//! The MAIL FROM domain is the text after the last `@` outside double quotes,
//! with any source route removed (RELIABILITY F9); a null reverse-path means
//! `postmaster@HELO`. A MAIL FROM whose domain is invalid gives SPF `none`
//! for that domain-less identity and never falls back to the HELO name.
//! Domains are lower-cased A-labels (U-labels converted) without a trailing
//! dot, so the domain SPF reports is the one DMARC can compare.

use thiserror::Error;

use super::macros::{MAX_LABEL, MAX_NAME};

/// Longest domain text handed to IDNA processing: every non-ASCII character
/// becomes at least one A-label octet, so anything longer cannot give a valid name.
const MAX_RAW_DOMAIN: usize = 4 * MAX_NAME;

/// Why a domain is not a valid SPF `<domain>` (RFC 7208 §4.3). Each gives result `none`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub(crate) enum DomainError {
    #[error("empty domain")]
    Empty,
    #[error("domain is an address literal")]
    Literal,
    #[error("domain too long")]
    TooLong,
    #[error("empty domain label")]
    EmptyLabel,
    #[error("domain label too long")]
    LabelTooLong,
    #[error("invalid character in domain")]
    BadCharacter,
    #[error("invalid international domain")]
    Idna,
    #[error("domain not in normalised form")]
    NotNormalised,
    #[error("domain is not fully qualified")]
    SingleLabel,
    #[error("numeric top-level label")]
    NumericTopLabel,
}

/// The reverse-path of MAIL FROM as SPF sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MailFrom {
    /// `<>`: the identity is `postmaster@HELO` (RFC 7208 §2.4).
    Null,
    /// `local@domain` as written, source route removed; `domain` not yet validated.
    Address { local: String, domain: String },
    /// Not null, but no `@` outside quotes: there is no domain to check.
    NoDomain,
}

/// Split a MAIL FROM argument (with or without angle brackets) into local part
/// and domain (RFC 5321 §4.1.2 `Reverse-path`, RELIABILITY F9).
pub(crate) fn parse_mail_from(raw: &str) -> MailFrom {
    let mut path = raw.trim_matches(|c: char| c.is_ascii_whitespace());
    if let Some(inner) = path.strip_prefix('<') {
        path = match inner.rfind('>') {
            Some(end) => &inner[..end],
            None => inner,
        };
    }
    let path = path.trim_matches(|c: char| c.is_ascii_whitespace());
    if path.is_empty() {
        return MailFrom::Null;
    }
    // RFC 5321 §4.1.2: A-d-l ":" Mailbox; a source route starts with '@' and
    // ends at the first ':' (route domains hold no quotes). `@domain` alone is
    // an address without a local part (suite `nolocalpart`), not a route.
    let mailbox = match path.strip_prefix('@').and_then(|r| r.split_once(':')) {
        Some((_route, mailbox)) => mailbox,
        None => path,
    };
    match last_at_outside_quotes(mailbox) {
        Some(at) => MailFrom::Address {
            local: mailbox[..at].to_owned(),
            domain: mailbox[at + 1..].to_owned(),
        },
        None => MailFrom::NoDomain,
    }
}

/// Byte index of the last '@' that is not inside a quoted string.
fn last_at_outside_quotes(s: &str) -> Option<usize> {
    let mut in_quotes = false;
    let mut escaped = false;
    let mut last = None;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if in_quotes => escaped = true,
            '"' => in_quotes = !in_quotes,
            '@' if !in_quotes => last = Some(i),
            _ => {}
        }
    }
    last
}

/// Turn a domain as written into the `<domain>` SPF checks: lower-case A-labels,
/// no trailing dot, at least two labels within the DNS limits (RFC 7208 §4.3).
pub(crate) fn normalise_domain(raw: &str) -> Result<String, DomainError> {
    // RFC 1034 §3.1: one trailing dot (the root) names the same domain.
    let d = raw.strip_suffix('.').unwrap_or(raw);
    if d.is_empty() {
        return Err(DomainError::Empty);
    }
    // RFC 7208 §4.3: a domain literal is not a domain (suite helo-domain-literal, domain-literal).
    if d.starts_with('[') {
        return Err(DomainError::Literal);
    }
    if d.len() > MAX_RAW_DOMAIN {
        return Err(DomainError::TooLong);
    }
    if d.split('.').any(str::is_empty) {
        return Err(DomainError::EmptyLabel);
    }
    let ascii = if d.is_ascii() {
        d.to_ascii_lowercase()
    } else {
        to_a_labels(d)?
    };
    // RFC 7208 §4.3 and RFC 1035 §2.3.4: name and label lengths.
    if ascii.len() > MAX_NAME {
        return Err(DomainError::TooLong);
    }
    let mut labels = 0usize;
    let mut last = "";
    for label in ascii.split('.') {
        if label.is_empty() {
            return Err(DomainError::EmptyLabel);
        }
        if label.len() > MAX_LABEL {
            return Err(DomainError::LabelTooLong);
        }
        // RFC 1123 §2.1 LDH labels without a hyphen at either end; underscore
        // is accepted as DNS allows it in names that send mail in practice.
        let ok = label
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'_');
        if !ok || label.starts_with('-') || label.ends_with('-') {
            return Err(DomainError::BadCharacter);
        }
        labels += 1;
        last = label;
    }
    // RFC 7208 §4.3: "is not a multi-label domain name" gives none.
    if labels < 2 {
        return Err(DomainError::SingleLabel);
    }
    // RFC 3696 §2: a top-level label is never all-numeric (an address literal without brackets).
    if last.bytes().all(|c| c.is_ascii_digit()) {
        return Err(DomainError::NumericTopLabel);
    }
    Ok(ascii)
}

/// RFC 5891 §5: U-labels become A-labels before any DNS query. UTS-46
/// mappings other than case folding (full-width letters, ideographic dots)
/// are refused: the label must round-trip to what was written.
fn to_a_labels(d: &str) -> Result<String, DomainError> {
    // A non-ASCII character that lower-cases into ASCII (KELVIN SIGN to `k`) is a confusable.
    if d.chars()
        .any(|c| !c.is_ascii() && c.to_lowercase().any(|l| l.is_ascii()))
    {
        return Err(DomainError::NotNormalised);
    }
    let ascii = idna::domain_to_ascii(d).map_err(|_| DomainError::Idna)?;
    let lower = d.to_lowercase();
    let mut written = lower.split('.');
    let mut converted = ascii.split('.');
    loop {
        match (written.next(), converted.next()) {
            (None, None) => return Ok(ascii),
            (Some(w), Some(a)) => {
                let same = if w.is_ascii() {
                    w == a
                } else {
                    let (u, r) = idna::domain_to_unicode(a);
                    r.is_ok() && u == w
                };
                if !same {
                    return Err(DomainError::NotNormalised);
                }
            }
            _ => return Err(DomainError::NotNormalised),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(local: &str, domain: &str) -> MailFrom {
        MailFrom::Address {
            local: local.to_owned(),
            domain: domain.to_owned(),
        }
    }

    #[test]
    fn mail_from_forms() {
        assert_eq!(parse_mail_from("<>"), MailFrom::Null);
        assert_eq!(parse_mail_from(""), MailFrom::Null);
        assert_eq!(parse_mail_from(" < > "), MailFrom::Null);
        assert_eq!(parse_mail_from("<a@example.com>"), addr("a", "example.com"));
        assert_eq!(parse_mail_from("a@example.com"), addr("a", "example.com"));
        assert_eq!(parse_mail_from("@example.net"), addr("", "example.net"));
        assert_eq!(parse_mail_from("<postmaster>"), MailFrom::NoDomain);
        assert_eq!(
            parse_mail_from("<\"a@b\"@example.com>"),
            addr("\"a@b\"", "example.com")
        );
        assert_eq!(
            parse_mail_from("<\"a\\\"@b\"@example.com>"),
            addr("\"a\\\"@b\"", "example.com")
        );
        assert_eq!(parse_mail_from("<\"a@example.com>"), MailFrom::NoDomain);
    }

    /// RELIABILITY F9: the espoofer envelope payloads.
    #[test]
    fn composition_kills_envelopes() {
        // A1: a non-existent subdomain is still the identity (DNS gives none).
        assert_eq!(
            parse_mail_from("<any@nx.victim.example>"),
            addr("any", "nx.victim.example")
        );
        // A2: looks empty, is not: the domain is "victim", single label, so none.
        let MailFrom::Address { domain, .. } = parse_mail_from("<(any@victim>") else {
            panic!("a2 not an address");
        };
        assert_eq!(normalise_domain(&domain), Err(DomainError::SingleLabel));
        // A5: a comment-like tail is part of an invalid domain.
        let MailFrom::Address { domain, .. } =
            parse_mail_from("<any@victim.example(a.attack.example>")
        else {
            panic!("a5 not an address");
        };
        assert_eq!(normalise_domain(&domain), Err(DomainError::BadCharacter));
        // A6: the last '@' wins; a single quote is no quote in SMTP.
        assert_eq!(
            parse_mail_from("<any@victim.example'@any.attack.example>"),
            addr("any@victim.example'", "any.attack.example")
        );
        // A7: the source route is removed.
        assert_eq!(
            parse_mail_from("<@victim.example,@any.example:'any@attack.example>"),
            addr("'any", "attack.example")
        );
    }

    #[test]
    fn domains() {
        assert_eq!(
            normalise_domain("Example.COM.").as_deref(),
            Ok("example.com")
        );
        assert_eq!(normalise_domain("[1.2.3.5]"), Err(DomainError::Literal));
        assert_eq!(normalise_domain("A2345678"), Err(DomainError::SingleLabel));
        assert_eq!(
            normalise_domain("a...example.com"),
            Err(DomainError::EmptyLabel)
        );
        assert_eq!(
            normalise_domain("1.2.3.4"),
            Err(DomainError::NumericTopLabel)
        );
        assert_eq!(normalise_domain(""), Err(DomainError::Empty));
        assert_eq!(normalise_domain("."), Err(DomainError::Empty));
        assert_eq!(
            normalise_domain("a b.example"),
            Err(DomainError::BadCharacter)
        );
        assert_eq!(
            normalise_domain("-a.example"),
            Err(DomainError::BadCharacter)
        );
        assert_eq!(
            normalise_domain("_spf.example.com").as_deref(),
            Ok("_spf.example.com")
        );
        let label63 = "a".repeat(63);
        let label64 = "a".repeat(64);
        assert!(normalise_domain(&format!("{label63}.example.com")).is_ok());
        assert_eq!(
            normalise_domain(&format!("{label64}.example.com")),
            Err(DomainError::LabelTooLong)
        );
        let long = format!("{}example.com", "abcdefghi.".repeat(25));
        assert_eq!(normalise_domain(&long), Err(DomainError::TooLong));
    }

    #[test]
    fn international_domains() {
        assert_eq!(
            normalise_domain("bücher.example").as_deref(),
            Ok("xn--bcher-kva.example")
        );
        assert_eq!(
            normalise_domain("BÜCHER.example").as_deref(),
            Ok("xn--bcher-kva.example")
        );
        // Full-width letters are a UTS-46 mapping, not the written form.
        assert_eq!(
            normalise_domain("\u{ff45}xample.com"),
            Err(DomainError::NotNormalised)
        );
        // KELVIN SIGN folds to ASCII 'k'.
        assert_eq!(
            normalise_domain("\u{212a}.example.com"),
            Err(DomainError::NotNormalised)
        );
    }
}
