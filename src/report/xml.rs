//! RFC 9990 aggregate report XML (namespace `urn:ietf:params:xml:ns:dmarc-2.0`),
//! or RFC 7489 Appendix C XML for receivers that need the old schema, and
//! its gzip.
//!
//! Every value is escaped: the five XML metacharacters become entity
//! references (so `]]>` is written `]]&gt;`), tab, LF and CR become
//! character references (so they survive attribute-value and line-end
//! normalisation), and characters XML 1.0 cannot carry at all (the C0
//! controls other than tab, LF and CR, and U+FFFE, U+FFFF) are replaced by
//! U+FFFD REPLACEMENT CHARACTER. Bytes that were not UTF-8 were already
//! replaced by U+FFFD when the message was read, so the output is always
//! well-formed UTF-8. C1 controls (U+0080–U+009F) are allowed by XML 1.0 and
//! written as character references.

use super::store::{Policy, Row};
use crate::config::ReportFormat;
use std::fmt::Write as _;
use std::io::Write as _;

pub const NAMESPACE: &str = "urn:ietf:params:xml:ns:dmarc-2.0";

/// The report metadata (RFC 9990 `report_metadata`).
#[derive(Debug, Clone)]
pub struct Metadata {
    pub org_name: String,
    pub email: String,
    pub extra_contact_info: String,
    pub report_id: String,
    pub begin: i64,
    pub end: i64,
}

/// Escape text for element content (and attribute values).
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' => out.push_str("&#9;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            // XML 1.0 §2.2 Char excludes these: they cannot be carried.
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c if ('\u{7F}'..='\u{9F}').contains(&c) => {
                let _ = write!(out, "&#x{:X};", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

struct Doc {
    out: String,
    depth: usize,
}

impl Doc {
    fn open(&mut self, name: &str) {
        self.indent();
        let _ = writeln!(self.out, "<{name}>");
        self.depth += 1;
    }
    fn close(&mut self, name: &str) {
        self.depth -= 1;
        self.indent();
        let _ = writeln!(self.out, "</{name}>");
    }
    fn leaf(&mut self, name: &str, value: &str) {
        self.indent();
        let _ = writeln!(self.out, "<{name}>{}</{name}>", escape(value));
    }
    fn indent(&mut self) {
        for _ in 0..self.depth {
            self.out.push_str("  ");
        }
    }
}

/// The report XML for one policy domain and period. `rows` come sorted, so
/// the same data always gives the same bytes.
pub fn render(
    meta: &Metadata,
    policy: &Policy,
    rows: &[(Row, i64)],
    format: ReportFormat,
) -> String {
    let v7489 = format == ReportFormat::Rfc7489;
    let mut d = Doc {
        out: String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"),
        depth: 0,
    };
    if v7489 {
        d.out.push_str("<feedback>\n");
    } else {
        let _ = writeln!(d.out, "<feedback xmlns=\"{NAMESPACE}\">");
    }
    d.depth = 1;
    d.leaf("version", "1.0");

    // RFC 7489's metadata is a sequence: keep its order for both.
    d.open("report_metadata");
    d.leaf("org_name", &meta.org_name);
    d.leaf("email", &meta.email);
    if !meta.extra_contact_info.is_empty() {
        d.leaf("extra_contact_info", &meta.extra_contact_info);
    }
    d.leaf("report_id", &meta.report_id);
    d.open("date_range");
    d.leaf("begin", &meta.begin.to_string());
    d.leaf("end", &meta.end.to_string());
    d.close("date_range");
    if !v7489 {
        d.leaf(
            "generator",
            &format!("rmilter {}", env!("CARGO_PKG_VERSION")),
        );
    }
    d.close("report_metadata");

    d.open("policy_published");
    d.leaf("domain", &policy.domain);
    if !v7489 {
        // RFC 9989 §4.10: rmilter finds the policy by the DNS tree walk.
        d.leaf("discovery_method", "treewalk");
    }
    d.leaf("adkim", &policy.adkim);
    d.leaf("aspf", &policy.aspf);
    d.leaf("p", &policy.p);
    d.leaf("sp", &policy.sp);
    if v7489 {
        // RFC 9989 removed pct=; rmilter applies the policy to every message.
        d.leaf("pct", "100");
        d.leaf("fo", "0");
    } else {
        d.leaf("np", &policy.np);
        d.leaf("testing", if policy.testing { "y" } else { "n" });
    }
    d.close("policy_published");

    for (row, count) in rows {
        d.open("record");
        d.open("row");
        d.leaf("source_ip", &source_ip(&row.source_ip, v7489));
        d.leaf("count", &count.to_string());
        d.open("policy_evaluated");
        let disposition = if v7489 && row.disposition == "pass" {
            "none"
        } else {
            row.disposition.as_str()
        };
        d.leaf("disposition", disposition);
        d.leaf("dkim", &row.dkim);
        d.leaf("spf", &row.spf);
        for (kind, comment) in &row.reasons {
            d.open("reason");
            let kind = if v7489 && kind == "policy_test_mode" {
                "other"
            } else {
                kind.as_str()
            };
            d.leaf("type", kind);
            if !comment.is_empty() {
                d.leaf("comment", comment);
            }
            d.close("reason");
        }
        d.close("policy_evaluated");
        d.close("row");
        d.open("identifiers");
        d.leaf("header_from", &row.header_from);
        // RFC 9990: envelope_from may be present and empty (null sender).
        d.leaf("envelope_from", &row.envelope_from);
        d.close("identifiers");
        d.open("auth_results");
        for (domain, selector, result) in &row.dkim_results {
            d.open("dkim");
            d.leaf("domain", domain);
            d.leaf("selector", selector);
            d.leaf("result", result);
            d.close("dkim");
        }
        let spf = row.spf_results.first();
        match spf {
            Some((domain, scope, result)) => {
                d.open("spf");
                d.leaf("domain", domain);
                // RFC 9990 knows only the "mfrom" scope; a HELO result
                // (null sender) is reported without a scope.
                if scope == "mfrom" || v7489 {
                    d.leaf("scope", scope);
                }
                let result = if v7489 && result == "policy" {
                    "none"
                } else {
                    result.as_str()
                };
                d.leaf("result", result);
                d.close("spf");
            }
            None if v7489 => {
                // RFC 7489 requires an spf element.
                d.open("spf");
                d.leaf("domain", &row.envelope_from);
                d.leaf("scope", "mfrom");
                d.leaf("result", "none");
                d.close("spf");
            }
            None => {}
        }
        d.close("auth_results");
        d.close("record");
    }
    d.out.push_str("</feedback>\n");
    d.out
}

/// RFC 7489's schema only matches IPv6 written out in full.
fn source_ip(text: &str, full_v6: bool) -> String {
    match text.parse::<std::net::Ipv6Addr>() {
        Ok(v6) if full_v6 => v6
            .segments()
            .iter()
            .map(|s| format!("{s:x}"))
            .collect::<Vec<_>>()
            .join(":"),
        _ => text.to_string(),
    }
}

/// Gzip with a fixed header (no name, mtime 0), so equal XML gives equal bytes.
pub fn gzip(xml: &[u8]) -> Vec<u8> {
    let mut enc = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::best());
    let _ = enc.write_all(xml);
    enc.finish().unwrap_or_default()
}

/// Un-gzip, reading at most `limit` bytes (for tests and `report show`).
pub fn gunzip(gz: &[u8], limit: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(gz)
        .take(limit)
        .read_to_end(&mut out)?;
    Ok(out)
}
