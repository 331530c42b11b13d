//! What a trusted ARC sealer recorded: the reader of the newest
//! ARC-Authentication-Results (RFC 8617 §4.1.1) and the rule that lets a
//! trusted sealer's chain override a DMARC failure only when that sealer saw
//! the author domain authenticated (RFC 8617 §7.2).
//!
//! mail-auth parses only the `i=` tag of an ARC-Authentication-Results field
//! and keeps the recorded results verbatim, and no crate in the tree reads
//! Authentication-Results; so this is a small bounded reader of RFC 8601
//! `resinfo` statements: comments dropped, quoted values unquoted, one
//! statement per `;`. Anything it cannot read vouches for nothing.

use super::dmarc::Record as DmarcRecord;
use super::dmarc::within;
use mail_auth::dmarc::Alignment;

/// The longest ARC-Authentication-Results value read (a few results with
/// comments; anything longer vouches for nothing).
const MAX_AAR: usize = 16 * 1024;
/// Deepest comment nesting read.
const MAX_COMMENT_DEPTH: usize = 16;

/// One `method=result` statement with its properties, lower-cased.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Statement {
    pub method: String,
    pub result: String,
    /// (ptype.property, value).
    pub props: Vec<(String, String)>,
}

impl Statement {
    fn prop(&self, name: &str) -> Option<&str> {
        self.props
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The instance, authserv-id and statements of an ARC-Authentication-Results
/// value (`i=N; authserv-id [version]; resinfo; resinfo ...`), or `None`
/// when it cannot be read.
pub fn parse_aar(value: &[u8]) -> Option<(u32, String, Vec<Statement>)> {
    if value.len() > MAX_AAR {
        return None;
    }
    let text = std::str::from_utf8(value).ok()?;
    let parts = split_statements(&strip_comments(text)?)?;
    let mut parts = parts.into_iter();
    let instance = parts
        .next()?
        .trim()
        .strip_prefix("i=")?
        .trim()
        .parse::<u32>()
        .ok()?;
    let authserv = parts.next()?.split_whitespace().next()?.to_string();
    let statements = parts
        .filter_map(|part| {
            let mut words = words(&part).into_iter();
            let (method, result) = words.next()?.split_once('=').map(|(m, r)| {
                // RFC 8601 §2.2: method [ "/" version ].
                let m = m.split('/').next().unwrap_or(m);
                (m.to_string(), r.to_string())
            })?;
            let props = words
                .filter_map(|w| {
                    let (name, value) = w.split_once('=')?;
                    name.contains('.')
                        .then(|| (name.to_string(), value.to_string()))
                })
                .collect();
            Some(Statement {
                method,
                result,
                props,
            })
        })
        .collect();
    Some((instance, authserv.to_ascii_lowercase(), statements))
}

/// `text` without its comments, lower-cased; `None` when a comment is
/// unbalanced or nested too deeply.
fn strip_comments(text: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    let mut depth = 0usize;
    let mut quoted = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' if depth > 0 || quoted => {
                let next = chars.next()?;
                if depth == 0 {
                    out.push('\\');
                    out.push(next);
                }
            }
            '"' if depth == 0 => {
                quoted = !quoted;
                out.push(c);
            }
            '(' if !quoted => {
                depth += 1;
                if depth > MAX_COMMENT_DEPTH {
                    return None;
                }
                out.push(' ');
            }
            ')' if !quoted => depth = depth.checked_sub(1)?,
            _ if depth > 0 => {}
            _ => out.push(c.to_ascii_lowercase()),
        }
    }
    (depth == 0 && !quoted).then_some(out)
}

/// Split on `;` outside quoted strings.
fn split_statements(text: &str) -> Option<Vec<String>> {
    let mut parts = vec![String::new()];
    let mut quoted = false;
    let mut escaped = false;
    for c in text.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ';' if !quoted => {
                parts.push(String::new());
                continue;
            }
            _ => {}
        }
        parts.last_mut()?.push(c);
    }
    Some(parts)
}

/// The words of one statement, `a = b` joined as `a=b`, quoted values
/// unquoted.
fn words(part: &str) -> Vec<String> {
    let mut words: Vec<String> = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut escaped = false;
    let mut join_next = false;
    let flush = |current: &mut String, words: &mut Vec<String>, join: &mut bool| {
        if current.is_empty() {
            return;
        }
        match words.last_mut() {
            Some(last) if *join || last.ends_with('=') || current.starts_with('=') => {
                last.push_str(current);
            }
            _ => words.push(current.clone()),
        }
        *join = false;
        current.clear();
    };
    for c in part.chars() {
        if escaped {
            current.push(c);
            escaped = false;
            continue;
        }
        match c {
            '\\' if quoted => escaped = true,
            '"' => {
                quoted = !quoted;
                if !quoted && current.is_empty() {
                    // An empty quoted value.
                    join_next = false;
                }
            }
            c if c.is_whitespace() && !quoted => {
                let ends_eq = current.ends_with('=');
                flush(&mut current, &mut words, &mut join_next);
                if ends_eq {
                    join_next = true;
                }
            }
            _ => current.push(c),
        }
    }
    flush(&mut current, &mut words, &mut join_next);
    words
}

/// Whether `id` (a DKIM `d=`, an SPF domain) is aligned with `author` as
/// `mode` asks, read conservatively: strict is the same name; relaxed also
/// allows a parent of the author domain, but never above `floor` (the name
/// that holds the DMARC record applied), so no public suffix ever aligns.
/// Names are compared as lower-case A-labels, as DMARC alignment compares
/// them.
fn aligned(id: &str, author: &str, mode: Alignment, floor: &str) -> bool {
    let id = id.trim_end_matches('.');
    let id = idna::domain_to_ascii(id).unwrap_or_else(|_| id.to_ascii_lowercase());
    let (author, floor) = (author.to_ascii_lowercase(), floor.to_ascii_lowercase());
    id == author || (mode == Alignment::Relaxed && within(&author, &id) && within(&id, &floor))
}

/// The domain of an SPF identity: `local@domain`, `@domain` or `domain`.
fn spf_domain(value: &str) -> &str {
    value.rsplit_once('@').map_or(value, |(_, d)| d)
}

/// Whether the sealer's ARC-Authentication-Results `aar` (the newest
/// instance) vouches for `author` (RFC 8617 §7.2): `dmarc=pass` for
/// `header.from=author`, or, when it recorded no DMARC result for that
/// domain, a DKIM or SPF pass aligned with it. `record` gives the alignment
/// modes (relaxed when none), `floor` the name holding the DMARC record.
/// `Ok` and `Err` both say why, for the decision log and `rmilter explain`.
pub fn sealer_vouches(
    aar: &[u8],
    instance: u32,
    author: &str,
    record: Option<&DmarcRecord>,
    floor: &str,
) -> Result<String, String> {
    let Some((i, _, statements)) = parse_aar(aar) else {
        return Err("its ARC-Authentication-Results cannot be read".to_string());
    };
    if i != instance {
        return Err(format!(
            "its ARC-Authentication-Results is instance {i}, not {instance}"
        ));
    }
    let author = author.to_ascii_lowercase();
    // RFC 8617 §7.2: what the sealer recorded for this header.from.
    if let Some(dmarc) = statements
        .iter()
        .find(|s| s.method == "dmarc" && s.prop("header.from") == Some(author.as_str()))
    {
        return if dmarc.result == "pass" {
            Ok(format!("sealer recorded dmarc=pass for {author}"))
        } else {
            Err(format!(
                "sealer recorded dmarc={} for {author}",
                dmarc.result
            ))
        };
    }
    let (adkim, aspf) = record.map_or((Alignment::Relaxed, Alignment::Relaxed), |r| {
        (r.adkim, r.aspf)
    });
    for s in statements.iter().filter(|s| s.result == "pass") {
        let (id, mode) = match s.method.as_str() {
            "dkim" => match s
                .prop("header.d")
                .or_else(|| s.prop("header.i").map(spf_domain))
            {
                Some(d) => (d, adkim),
                None => continue,
            },
            "spf" => match s.prop("smtp.mailfrom") {
                Some(m) => (spf_domain(m), aspf),
                None => continue,
            },
            _ => continue,
        };
        if aligned(id, &author, mode, floor) {
            return Ok(format!(
                "sealer recorded {}=pass for {id}, aligned with {author}",
                s.method
            ));
        }
    }
    Err(format!(
        "sealer recorded neither dmarc=pass nor an aligned pass for {author}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_aar_statements() {
        let (i, id, s) = parse_aar(
            b" i=2; lists.example (c; d);\r\n\tdkim=pass (good \\) sig) header.d=Bank.Example header.s=s1;\r\n\tspf = fail smtp.mailfrom=\"a;b\"@x.example;\r\n\tdmarc/1=pass header.from=bank.example\r\n",
        )
        .unwrap();
        assert_eq!((i, id.as_str()), (2, "lists.example"));
        assert_eq!(s.len(), 3, "{s:?}");
        assert_eq!(
            (s[0].method.as_str(), s[0].result.as_str()),
            ("dkim", "pass")
        );
        assert_eq!(s[0].prop("header.d"), Some("bank.example"));
        assert_eq!(
            (s[1].method.as_str(), s[1].result.as_str()),
            ("spf", "fail")
        );
        assert_eq!(s[1].prop("smtp.mailfrom"), Some("a;b@x.example"));
        assert_eq!(s[2].prop("header.from"), Some("bank.example"));
        assert!(parse_aar(b" i=1; lists.example; dkim=pass (unbalanced").is_none());
        assert!(parse_aar(b" lists.example; dkim=pass").is_none());
        assert!(parse_aar(&[b'('; 100]).is_none());
    }

    #[test]
    fn vouches_only_for_what_the_sealer_saw() {
        let ok =
            |aar: &str| sealer_vouches(aar.as_bytes(), 1, "bank.example", None, "bank.example");
        // The mailing-list spoof: the list saw the DMARC failure.
        assert!(ok("i=1; lists.example; dmarc=fail header.from=bank.example").is_err());
        assert!(ok("i=1; lists.example; dmarc=fail header.from=bank.example; dkim=pass header.d=bank.example").is_err());
        assert!(ok("i=1; lists.example; dkim=pass header.d=evil.example; spf=pass smtp.mailfrom=x@evil.example").is_err());
        assert!(ok("i=1; lists.example; none").is_err());
        // dmarc=pass for another domain says nothing about this one.
        assert!(ok("i=1; lists.example; dmarc=pass header.from=evil.example").is_err());
        // A comment is not a result.
        assert!(ok("i=1; lists.example; dmarc=fail (dmarc=pass header.from=bank.example) header.from=bank.example").is_err());
        // Another instance's results do not count.
        assert!(
            sealer_vouches(
                b"i=2; lists.example; dmarc=pass header.from=bank.example",
                1,
                "bank.example",
                None,
                "bank.example"
            )
            .is_err()
        );
        // What the genuine list saw.
        assert!(ok("i=1; lists.example; dmarc=pass header.from=bank.example").is_ok());
        assert!(ok("i=1; lists.example;\r\n\tdmarc=pass (p=reject) header.from=Bank.Example policy.dmarc=reject").is_ok());
        assert!(ok("i=1; lists.example; dkim=pass header.d=bank.example header.s=s").is_ok());
        assert!(ok("i=1; lists.example; spf=pass smtp.mailfrom=bounce@bank.example").is_ok());
        // Relaxed: a parent of the author domain, never above the record.
        let sub = |aar: &str, floor: &str| {
            sealer_vouches(aar.as_bytes(), 1, "mail.bank.example", None, floor)
        };
        assert!(sub("i=1; l; dkim=pass header.d=bank.example", "bank.example").is_ok());
        assert!(sub("i=1; l; dkim=pass header.d=example", "bank.example").is_err());
        assert!(
            sub(
                "i=1; l; dkim=pass header.d=other.bank.example",
                "bank.example"
            )
            .is_err()
        );
        assert!(
            sub(
                "i=1; l; dkim=pass header.d=bank.example",
                "mail.bank.example"
            )
            .is_err()
        );
    }

    /// Alignment as DMARC reads it: relaxed allows a parent of the author
    /// down to the record's name, never above; U-labels compare as A-labels.
    #[test]
    fn alignment_of_an_identity_with_the_author() {
        use mail_auth::dmarc::Alignment::{Relaxed, Strict};
        let floor = "example.com";
        assert!(aligned("Example.COM.", "example.com", Strict, floor));
        assert!(!aligned("example.com", "mail.example.com", Strict, floor));
        assert!(aligned("example.com", "mail.example.com", Relaxed, floor));
        assert!(!aligned("com", "mail.example.com", Relaxed, floor));
        assert!(!aligned(
            "other.example.com",
            "mail.example.com",
            Relaxed,
            floor
        ));
        assert!(aligned(
            "bücher.example",
            "xn--bcher-kva.example",
            Strict,
            "xn--bcher-kva.example"
        ));
    }
}
