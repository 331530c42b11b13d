//! Shared test harness: the in-process milter, a milter-protocol client
//! that drives messages like Postfix, test keys, and (for end-to-end
//! tests) a private Postfix instance, an SMTP sink and independent DKIM
//! verifiers.

#![allow(dead_code)]

pub mod daemon;
pub mod dkimpy;
pub mod dns;
pub mod drive;
pub mod keys;
pub mod milter;
pub mod opendkim;
pub mod postfix;
pub mod sign;
pub mod sink;
pub mod smtp;

/// A small CRLF message from `from` with `body`.
pub fn message(from: &str, subject: &str, body: &str) -> Vec<u8> {
    format!(
        "From: {from}\r\nTo: Bob <bob@example.org>\r\nSubject: {subject}\r\nDate: Sun, 22 Nov 2026 10:00:00 +0000\r\nMessage-ID: <{}@example.com>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}",
        subject.len() * 7919 + body.len()
    )
    .into_bytes()
}

/// The tag=value pairs of a DKIM-Signature value (whitespace removed).
pub fn dkim_tags(value: &str) -> Vec<(String, String)> {
    let compact: String = value.chars().filter(|c| !c.is_whitespace()).collect();
    compact
        .split(';')
        .filter(|t| !t.is_empty())
        .filter_map(|t| {
            t.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect()
}

pub fn dkim_tag(value: &str, tag: &str) -> Option<String> {
    dkim_tags(value)
        .into_iter()
        .find(|(k, _)| k == tag)
        .map(|(_, v)| v)
}
