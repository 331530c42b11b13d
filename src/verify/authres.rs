//! Authentication-Results (RFC 8601): the one header field rmilter writes,
//! and the bounded reader that finds the authserv-id of fields already in a
//! message, so that forged ones carrying rmilter's id, or a look-alike of it
//! that another reader would take for it, can be removed ([`forged`]).
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

/// Why an Authentication-Results field is removed before rmilter adds its
/// own (RFC 8601 §5: a field claiming to come from us is forged).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forged {
    /// No authserv-id can be read (none, an unbalanced or too deeply
    /// nested comment, an unterminated quoted-string): another reader might
    /// still find ours in it.
    Unreadable,
    /// The id is ours, or starts with ours (one trailing dot ignored)
    /// followed by a character no host name holds: `mx.example.org.;`,
    /// `mx.example.org,x;`, `mx.example.org/x`, ... read as ours elsewhere.
    Ours,
    /// The id holds a control or non-ASCII character (VT, NBSP, `ſ`, the
    /// Kelvin sign, ...): parsers that trim or case-fold Unicode read such
    /// an id as a look-alike of ours.
    Unsafe,
}

impl Forged {
    /// Why the field is removed, for logs and `rmilter explain`.
    pub fn as_str(self) -> &'static str {
        match self {
            Forged::Unreadable => "no readable authserv-id",
            Forged::Ours => "authserv-id is ours or a look-alike of it",
            Forged::Unsafe => "authserv-id holds control or non-ASCII characters",
        }
    }
}

/// Whether the Authentication-Results `value` must be removed because it
/// claims (or may be read as claiming) authserv-id `ours`, and why. Same
/// bounds as [`authserv_id`]: linear in at most [`SCAN_LIMIT`] bytes.
pub fn forged(value: &[u8], ours: &str) -> Option<Forged> {
    let value = &value[..value.len().min(SCAN_LIMIT)];
    let Some(start) = skip_cfws(value, 0) else {
        return Some(Forged::Unreadable);
    };
    let id: std::borrow::Cow<'_, [u8]> = if value.get(start) == Some(&b'"') {
        // RFC 8601 §2.2: authserv-id = value = token / quoted-string.
        let mut out = Vec::new();
        let mut i = start + 1;
        loop {
            match value.get(i) {
                None => return Some(Forged::Unreadable),
                Some(b'"') => break,
                Some(b'\\') => {
                    i += 1;
                    match value.get(i) {
                        Some(&b) => out.push(b),
                        None => return Some(Forged::Unreadable),
                    }
                }
                Some(&b) => out.push(b),
            }
            i += 1;
        }
        // Whitespace inside the quotes (`" mx.example.org"`) is no part of
        // a host name, and a reader that trims it would see ours.
        let trimmed = out.trim_ascii();
        trimmed.to_vec().into()
    } else {
        // The rest of the value: what follows the id decides as well.
        value[start..].into()
    };
    // RFC 8601 §5: ours, ASCII case-insensitive, one trailing dot ignored,
    // followed by the end or by anything a host name cannot hold.
    let ours = ours.as_bytes();
    if id.len() >= ours.len() && id[..ours.len()].eq_ignore_ascii_case(ours) {
        let mut rest = &id[ours.len()..];
        if let Some(after_dot) = rest.strip_prefix(b".") {
            rest = after_dot;
        }
        if rest
            .first()
            .is_none_or(|&b| !(b.is_ascii_alphanumeric() || b == b'.' || b == b'-'))
        {
            return Some(Forged::Ours);
        }
    }
    let token = if value.get(start) == Some(&b'"') {
        &id[..]
    } else {
        let end = id
            .iter()
            .position(|&b| matches!(b, b' ' | b'\t' | b'\r' | b'\n' | b'\x0c' | b';' | b'('))
            .unwrap_or(id.len());
        &id[..end]
    };
    if token.is_empty() {
        return Some(Forged::Unreadable);
    }
    if token.iter().any(|&b| !(0x20..0x7f).contains(&b)) {
        return Some(Forged::Unsafe);
    }
    None
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
    fn forged_and_look_alike_ids_are_removed() {
        use Forged::*;
        let ours = "mx.desk.example";
        for (value, verdict) in [
            // Ours, as every reader sees it.
            (&b" mx.desk.example; dkim=pass"[..], Some(Ours)),
            (b" MX.Desk.EXAMPLE 1; none", Some(Ours)),
            (b" (c) mx.desk.example(c); none", Some(Ours)),
            (b" \"mx.desk.example\"; none", Some(Ours)),
            (b" \"mx.desk.exampl\\e\"; none", Some(Ours)),
            (b" mx.desk.example", Some(Ours)),
            // Look-alikes that other parsers read as ours.
            (b" mx.desk.example\x0b; dmarc=pass", Some(Ours)),
            (b" mx.desk.example\xc2\xa0; dmarc=pass", Some(Ours)),
            (b" mx.desk.example.; dmarc=pass", Some(Ours)),
            (b" mx.desk.example.", Some(Ours)),
            (b" mx.desk.example,x; dmarc=pass", Some(Ours)),
            (b" mx.desk.example/x; dmarc=pass", Some(Ours)),
            (b" mx.desk.example:25; dmarc=pass", Some(Ours)),
            (b" mx.desk.example=; dmarc=pass", Some(Ours)),
            (b" mx.desk.example_x; dmarc=pass", Some(Ours)),
            (b" mx.desk.example\"; dmarc=pass", Some(Ours)),
            (b" \"mx.desk.example.\"; dmarc=pass", Some(Ours)),
            // Unicode case variants: long s (U+017F), Kelvin sign (U+212A).
            ("mx.de\u{17f}k.example; dmarc=pass".as_bytes(), Some(Unsafe)),
            (
                "mx.des\u{212a}.example; dmarc=pass".as_bytes(),
                Some(Unsafe),
            ),
            (b" \x0bmx.desk.example; dmarc=pass", Some(Unsafe)),
            ("\u{a0}mx.desk.example; dmarc=pass".as_bytes(), Some(Unsafe)),
            (b" other.example\x7f; none", Some(Unsafe)),
            (b" \"other\texample\"; none", Some(Unsafe)),
            // Whitespace inside a quoted id: a reader that trims would see ours.
            (b" \" mx.desk.example\"; dmarc=pass", Some(Ours)),
            (b" \"mx.desk.example \"; dmarc=pass", Some(Ours)),
            (b" \xff; none", Some(Unsafe)),
            // No id at all.
            (b" ; dkim=pass", Some(Unreadable)),
            (b"", Some(Unreadable)),
            (b" \x0cmx.desk.example; none", Some(Unreadable)),
            (b" \"\"; none", Some(Unreadable)),
            (b" \"mx.desk.example; none", Some(Unreadable)),
            (b" (mx.desk.example; none", Some(Unreadable)),
            // Other hosts, ours included as a label or prefix of a name.
            (b" other.example; dkim=pass", None),
            (b" mx.desk.example.org; dkim=pass", None),
            (b" mx.desk.example-2; dkim=pass", None),
            (b" mx.desk.example2; dkim=pass", None),
            (b" mx.desk.example..; dkim=pass", None),
            (b" mx.desk.exampl; dkim=pass", None),
            (b" a.mx.desk.example; dkim=pass", None),
            (b" \"other example\"; none", None),
        ] {
            assert_eq!(
                forged(value, ours),
                verdict,
                "{}",
                String::from_utf8_lossy(value)
            );
        }
        // Nothing the old reader removed is kept.
        for value in [&b" mx.example.org; none"[..], b" (x) MX.EXAMPLE.ORG"] {
            assert_eq!(forged(value, "mx.example.org"), Some(Ours));
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
