//! RFC 6590 redaction of the header section a failure report returns:
//! header fields named in `drop_headers` are removed whole, and the local
//! part of every address left is replaced by a mask that is consistent
//! within one report (the same mailbox gets the same mask, so the domain
//! owner can still see that two fields name one mailbox) and says nothing
//! across reports (masks are numbered in order of appearance, not derived
//! from the local part, so no dictionary can undo them).

use base64::Engine as _;
use std::collections::HashMap;

/// Header fields whose addr-spec-like tokens are message identifiers, not
/// mailboxes: left as they are so the domain owner can find the message.
const IDENTIFIER_FIELDS: &[&str] = &["message-id", "in-reply-to", "references"];

/// One report's local-part masks.
#[derive(Debug, Default)]
pub struct Masker {
    masks: HashMap<Vec<u8>, String>,
}

impl Masker {
    pub fn new() -> Masker {
        Masker::default()
    }

    /// The mask for one local part: `redacted` and a number, the same for
    /// the same local part (compared case-insensitively) within a report.
    pub fn mask(&mut self, local: &[u8]) -> String {
        let key = local.to_ascii_lowercase();
        let next = self.masks.len() + 1;
        self.masks
            .entry(key)
            .or_insert_with(|| format!("redacted{next}"))
            .clone()
    }

    /// Every local part in `text` masked (see [`redact_addresses`]).
    pub fn text(&mut self, text: &str) -> String {
        String::from_utf8_lossy(&redact_addresses(text.as_bytes(), self)).into_owned()
    }
}

/// The header fields of a header section, each with its folded
/// continuation lines, in order.
pub fn fields(headers: &[u8]) -> Vec<&[u8]> {
    let mut out: Vec<&[u8]> = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < headers.len() {
        let end = match headers[i..].iter().position(|&b| b == b'\n') {
            Some(p) => i + p + 1,
            None => headers.len(),
        };
        let line = &headers[i..end];
        if line == b"\r\n" || line == b"\n" {
            // The blank line ending the header section: nothing after it.
            break;
        }
        let continuation = matches!(line.first(), Some(b' ' | b'\t'));
        if !continuation && i > start {
            out.push(&headers[start..i]);
            start = i;
        }
        i = end;
    }
    if i > start {
        out.push(&headers[start..i]);
    }
    out
}

/// The field name of one header field (without the colon).
pub fn field_name(field: &[u8]) -> &[u8] {
    let end = field.iter().position(|&b| b == b':').unwrap_or(field.len());
    field[..end].trim_ascii()
}

/// The header section without the fields named in `drop` (case-insensitive)
/// and, if `masker` is given, with every local part masked.
pub fn header_section(headers: &[u8], drop: &[String], mut masker: Option<&mut Masker>) -> Vec<u8> {
    let mut out = Vec::with_capacity(headers.len());
    for field in fields(headers) {
        let name = field_name(field);
        if drop.iter().any(|d| d.as_bytes().eq_ignore_ascii_case(name)) {
            continue;
        }
        match masker.as_deref_mut() {
            Some(m)
                if !IDENTIFIER_FIELDS
                    .iter()
                    .any(|f| f.as_bytes().eq_ignore_ascii_case(name)) =>
            {
                out.extend_from_slice(&redact_addresses(&redact_encoded_words(field, m), m));
            }
            _ => out.extend_from_slice(field),
        }
    }
    out
}

/// RFC 2047 encoded-words whose decoded text holds an address (a display
/// name such as `=?utf-8?q?alice=40example.com?=`) re-encoded with the
/// local part masked; other encoded-words stay as written.
pub fn redact_encoded_words(field: &[u8], masker: &mut Masker) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if field[i..].starts_with(b"=?")
            && let Some((decoded, used)) = decode_word(&field[i..])
        {
            let redacted = redact_addresses(decoded.as_bytes(), masker);
            if redacted != decoded.as_bytes() {
                let b64 = base64::engine::general_purpose::STANDARD.encode(&redacted);
                out.extend_from_slice(format!("=?utf-8?b?{b64}?=").as_bytes());
            } else {
                out.extend_from_slice(&field[i..i + used]);
            }
            i += used;
            continue;
        }
        out.push(field[i]);
        i += 1;
    }
    out
}

/// RFC 2047 §2: the encoded-word at the start of `s`, decoded (encodify)
/// and converted from its charset (mail-parser), and its length.
fn decode_word(s: &[u8]) -> Option<(String, usize)> {
    let (word, used) = encodify::rfc2047::EncodedWord::parse(s)?;
    let bytes = word.decode().ok()?;
    let mut decoded = String::new();
    mail_parser::decoders::charsets::decode_append(word.charset, &bytes, &mut decoded);
    Some((decoded, used))
}

/// RFC 5322 §3.2.3 atext, plus "." for dot-atoms and 8-bit bytes for
/// RFC 6532 internationalised local parts.
fn local_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b".!#$%&'*+-/=?^_`{|}~".contains(&b) || b >= 0x80
}

/// Every `local@domain` in `text` with its local part masked. The local
/// part is the dot-atom (or quoted-string) right before an `@` that is
/// followed by a domain; a leading `tag=` made of lowercase letters, dots
/// and hyphens (Authentication-Results `smtp.mailfrom=`, DKIM `i=`,
/// Received-SPF `envelope-from=`) is kept, so SRS addresses (`SRS0=…`)
/// are masked whole.
pub fn redact_addresses(text: &[u8], masker: &mut Masker) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut copied = 0;
    let mut i = 0;
    while i < text.len() {
        if text[i] != b'@'
            || !text
                .get(i + 1)
                .is_some_and(|&b| b.is_ascii_alphanumeric() || b == b'[' || b >= 0x80)
        {
            i += 1;
            continue;
        }
        let mut start = i;
        if i > 0 && text[i - 1] == b'"' {
            // A quoted-string local part: back to its opening quote.
            if let Some(open) = text[..i - 1].iter().rposition(|&b| b == b'"') {
                start = open;
            }
        } else {
            while start > 0 && local_byte(text[start - 1]) {
                start -= 1;
            }
            while start < i && text[start] == b'.' {
                start += 1;
            }
            if let Some(eq) = text[start..i].iter().position(|&b| b == b'=') {
                let tag = &text[start..start + eq];
                if !tag.is_empty()
                    && tag[0].is_ascii_lowercase()
                    && tag
                        .iter()
                        .all(|&b| b.is_ascii_lowercase() || b == b'.' || b == b'-')
                {
                    start += eq + 1;
                }
            }
        }
        // Never back into text already copied (a quoted local part that
        // holds an `@` of its own: `"ceo@bank.example"@evil.example`): mask
        // from there instead, so nothing of it is left and no slice runs
        // backwards.
        let start = start.max(copied);
        if start < i {
            out.extend_from_slice(&text[copied..start]);
            out.extend_from_slice(masker.mask(&text[start..i]).as_bytes());
            copied = i;
        }
        i += 1;
    }
    out.extend_from_slice(&text[copied..]);
    out
}
