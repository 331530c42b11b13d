//! Authentication-Results (RFC 8601): the one header field rmilter writes,
//! and the bounded reader that finds the authserv-id of fields already in a
//! message, so that forged ones carrying rmilter's id can be removed.
//!
//! Nothing from the message reaches the output unchecked: identifiers are
//! written only when they are plain domain/selector tokens, free text goes
//! into comments stripped to printable ASCII with the comment delimiters
//! escaped, and the field is folded by rmilter itself. No CR or LF from
//! input can end the field (the header-injection bug of mail-auth < 0.9.1).

use std::fmt::Write;

/// The longest prefix of a field value inspected for its authserv-id. An
/// id is a host name (at most 255 octets); comments before it are rare.
const SCAN_LIMIT: usize = 4096;
/// Deepest comment nesting accepted before giving up on a value.
const MAX_COMMENT_DEPTH: usize = 16;

/// The authserv-id of an Authentication-Results value (RFC 8601 §2.2:
/// `[CFWS] authserv-id [ CFWS authres-version ] ( no-result / 1*resinfo )`),
/// lower-cased, or `None` when the value does not start with one. Reads at
/// most [`SCAN_LIMIT`] bytes and never recurses, so a hostile value of any
/// size costs linear time.
pub fn authserv_id(value: &[u8]) -> Option<String> {
    let value = &value[..value.len().min(SCAN_LIMIT)];
    let mut i = skip_cfws(value, 0)?;
    let start = i;
    if value.get(i) == Some(&b'"') {
        // RFC 8601 §2.2: authserv-id = value = token / quoted-string.
        let mut out = String::new();
        i += 1;
        loop {
            match value.get(i)? {
                b'"' => break,
                b'\\' => {
                    i += 1;
                    out.push(char::from(*value.get(i)?));
                }
                &b => out.push(char::from(b)),
            }
            i += 1;
        }
        return (!out.is_empty()).then(|| out.to_ascii_lowercase());
    }
    while let Some(&b) = value.get(i) {
        if b.is_ascii_whitespace() || b == b';' || b == b'(' {
            break;
        }
        i += 1;
    }
    let id = std::str::from_utf8(&value[start..i]).ok()?;
    (!id.is_empty()).then(|| id.to_ascii_lowercase())
}

/// Skip folding whitespace and (nested) comments from `i`; `None` when a
/// comment is unbalanced, nested too deeply or runs past the scan limit.
fn skip_cfws(value: &[u8], mut i: usize) -> Option<usize> {
    loop {
        match value.get(i) {
            Some(b' ' | b'\t' | b'\r' | b'\n') => i += 1,
            Some(b'(') => {
                let mut depth = 0usize;
                loop {
                    match value.get(i)? {
                        b'(' => {
                            depth += 1;
                            if depth > MAX_COMMENT_DEPTH {
                                return None;
                            }
                        }
                        b')' => {
                            depth -= 1;
                            if depth == 0 {
                                i += 1;
                                break;
                            }
                        }
                        b'\\' => i += 1,
                        _ => {}
                    }
                    i += 1;
                }
            }
            _ => return Some(i),
        }
    }
}

/// Whether `text` can be written as an RFC 8601 `value` token: a domain,
/// selector, algorithm name or similar (letters, digits, `.-_@+:/`).
/// Anything else is never written as a property value.
pub fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 255
        && text.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'@' | b'+' | b'/' | b'=')
        })
}

/// Text safe inside an RFC 5322 comment: printable ASCII only, with `(`,
/// `)` and `\` escaped as quoted-pairs, at most `max` characters.
pub fn comment_text(text: &str, max: usize) -> String {
    let mut out = String::new();
    for c in text.chars().take(max) {
        match c {
            '(' | ')' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            '\t' | '\r' | '\n' => out.push(' '),
            _ => out.push('?'),
        }
    }
    out
}

/// One `method=result` statement with its reason and properties.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResInfo {
    pub method: &'static str,
    pub result: &'static str,
    /// Free text, written as a comment after the result.
    pub comment: Option<String>,
    /// (ptype.property, value); values that are not tokens are left out.
    pub props: Vec<(&'static str, String)>,
}

impl ResInfo {
    pub fn new(method: &'static str, result: &'static str) -> Self {
        ResInfo {
            method,
            result,
            ..Default::default()
        }
    }

    pub fn comment(mut self, text: impl Into<String>) -> Self {
        self.comment = Some(text.into());
        self
    }

    pub fn prop(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.props.push((name, value.into()));
        self
    }
}

/// Render the field value (with its leading space, folded with "\n\t",
/// lines kept under 78 characters where the parts allow it).
pub fn render(authserv_id: &str, results: &[ResInfo]) -> String {
    let mut parts: Vec<String> = Vec::with_capacity(results.len() + 1);
    if results.is_empty() {
        parts.push(format!("{authserv_id}; none"));
    } else {
        parts.push(format!("{authserv_id};"));
    }
    for (n, r) in results.iter().enumerate() {
        let mut words = vec![format!("{}={}", r.method, r.result)];
        if let Some(c) = &r.comment {
            words.push(format!("({})", comment_text(c, 200)));
        }
        for (name, value) in &r.props {
            if is_token(value) {
                words.push(format!("{name}={value}"));
            }
        }
        if n + 1 < results.len()
            && let Some(last) = words.last_mut()
        {
            last.push(';');
        }
        parts.push(words.join(" "));
    }
    let mut out = String::new();
    let mut line = "Authentication-Results:".len();
    for (i, part) in parts.iter().enumerate() {
        for (j, word) in part.split(' ').enumerate() {
            let sep_fold = i > 0 && j == 0;
            if out.is_empty() {
                out.push(' ');
                line += 1;
            } else if sep_fold || line + 1 + word.len() > 78 {
                out.push_str("\n\t");
                line = 8;
            } else {
                out.push(' ');
                line += 1;
            }
            let _ = write!(out, "{word}");
            line += word.len();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authserv_id_forms() {
        for (value, id) in [
            (&b" mx.example.org; dkim=pass"[..], Some("mx.example.org")),
            (b" MX.Example.ORG; spf=pass", Some("mx.example.org")),
            (b" mx.example.org 1; dkim=pass", Some("mx.example.org")),
            (b"mx.example.org(comment); none", Some("mx.example.org")),
            (b" (a comment) mx.example.org; none", Some("mx.example.org")),
            (
                b"\n\t(nested (comment))\n mx.example.org\n\t; none",
                Some("mx.example.org"),
            ),
            (b" \"mx.example.org\"; none", Some("mx.example.org")),
            (b" ;", None),
            (b"", None),
            (b" (unterminated comment mx.example.org; none", None),
        ] {
            assert_eq!(
                authserv_id(value).as_deref(),
                id,
                "{}",
                String::from_utf8_lossy(value)
            );
        }
    }

    #[test]
    fn hostile_values_stay_bounded() {
        let deep = format!("{}mx.example.org; none", "(".repeat(10_000));
        assert_eq!(authserv_id(deep.as_bytes()), None);
        let huge = format!(" mx.example.org; {}", "dkim=pass ".repeat(10_000));
        assert_eq!(
            authserv_id(huge.as_bytes()).as_deref(),
            Some("mx.example.org")
        );
        let long_id = "a".repeat(100_000);
        assert!(authserv_id(long_id.as_bytes()).is_some_and(|id| id.len() == SCAN_LIMIT));
    }

    #[test]
    fn render_is_one_field_whatever_the_input() {
        let hostile = "evil.example\r\nReply-To: attacker@evil.example";
        let field = render(
            "mx.example.org",
            &[
                ResInfo::new("dkim", "fail")
                    .comment(format!("bad (sig) \\ {hostile}"))
                    .prop("header.d", hostile)
                    .prop("header.s", "sel"),
                ResInfo::new("spf", "pass").prop("smtp.mailfrom", "example.net"),
            ],
        );
        assert!(!field.contains('\r'));
        for line in field.split('\n').skip(1) {
            assert!(line.starts_with('\t'), "continuation line {line:?}");
        }
        let unfolded = field.replace("\n\t", " ");
        assert!(!unfolded.contains("header.d=evil"), "{field}");
        assert!(
            unfolded.contains("(bad \\(sig\\) \\\\ evil.example  Reply-To: attacker@evil.example)"),
            "{field}"
        );
        assert!(unfolded.contains("header.s=sel;"), "{field}");
        assert_eq!(
            authserv_id(field.as_bytes()).as_deref(),
            Some("mx.example.org")
        );
    }

    #[test]
    fn render_shapes() {
        assert_eq!(render("mx.example.org", &[]), " mx.example.org; none");
        let one = render(
            "mx.example.org",
            &[ResInfo::new("dmarc", "pass").prop("header.from", "example.com")],
        );
        assert_eq!(
            one,
            " mx.example.org;\n\tdmarc=pass header.from=example.com"
        );
    }
}
