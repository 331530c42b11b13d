//! rmilter's parser of DMARC Policy Records (RFC 9989 §4.7, §4.8): lenient
//! the way the RFC asks. Only a TXT record whose first tag is `v=DMARC1` is a
//! DMARC record at all; after that, unknown tags are ignored, an invalid
//! value of an optional tag takes the tag's default, and an invalid or
//! missing `p` with a valid `rua` reads as
//! `p=none` (§4.10.1). Every value that was ignored or defaulted is kept in
//! [`Record::notes`] for `rmilter explain` and `rmilter doctor`.
//!
//! mail-auth's parser is not used: it rejects the whole record on one bad
//! value (`adkim=relaxed`, `fo=2`, `p=rejects`), which disabled a domain's
//! policy.

use mail_auth::dmarc::{Alignment, Policy, Psd};
use std::sync::Arc;

/// One reporting URI of `rua=` or `ruf=` (RFC 9989 §4.6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportUri {
    /// The URI as published, without an obsolete `!size` suffix.
    pub uri: String,
    /// For a `mailto:` URI, the address (percent-decoded, lower-cased).
    pub address: Option<String>,
    /// The obsolete `!size` limit in bytes; 0 when none was given.
    pub max_size: usize,
}

/// A parsed DMARC Policy Record, its defaults applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// `p=`; `none` when the record has no valid policy but a valid `rua`.
    pub p: Policy,
    /// `sp=`, defaulting to `p`.
    pub sp: Policy,
    /// `np=`, defaulting to `sp`.
    pub np: Policy,
    pub adkim: Alignment,
    pub aspf: Alignment,
    pub psd: Psd,
    /// `t=y`: the policy is applied one level less strictly.
    pub t: bool,
    /// `fo=` as published when valid, else "0".
    pub fo: String,
    pub rua: Vec<ReportUri>,
    pub ruf: Vec<ReportUri>,
    /// Legacy `pct=` (RFC 7489 §6.3), when a whole number 0..=100.
    pub pct: Option<u8>,
    /// False when the record has no valid `p` and
    /// no valid `rua`: applied, it means no DMARC processing (§4.10.1).
    pub usable: bool,
    /// Tags ignored and values replaced by their defaults, one line each.
    pub notes: Vec<String>,
}

impl Default for Record {
    /// The record `v=DMARC1; p=none`.
    fn default() -> Record {
        Record {
            p: Policy::None,
            sp: Policy::None,
            np: Policy::None,
            adkim: Alignment::Relaxed,
            aspf: Alignment::Relaxed,
            psd: Psd::Default,
            t: false,
            fo: "0".to_string(),
            rua: Vec::new(),
            ruf: Vec::new(),
            pct: None,
            usable: true,
            notes: Vec::new(),
        }
    }
}

/// What one `_dmarc` name holds (RFC 9989 §4.10 steps 2 and 6).
#[derive(Debug, Clone)]
pub enum AtName {
    /// No TXT record starting with `v=DMARC1` (or no TXT record at all).
    Nothing,
    /// Exactly one DMARC record.
    One(Arc<Record>),
    /// This many DMARC records: all are discarded.
    Several(usize),
}

/// RFC 9989 §4.10 step 2: discard what does not start with `v=DMARC1`; more
/// than one remaining record means none.
pub fn at_name<T: AsRef<[u8]>>(txts: &[T]) -> AtName {
    let mut records: Vec<Record> = txts.iter().filter_map(|t| parse(t.as_ref())).collect();
    match records.len() {
        0 => AtName::Nothing,
        1 => AtName::One(Arc::new(records.remove(0))),
        n => AtName::Several(n),
    }
}

/// `WSP` of RFC 5234.
fn wsp(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// A policy value (`dmarc-request`; ABNF literals are case-insensitive).
fn policy(value: &str) -> Option<Policy> {
    match value.to_ascii_lowercase().as_str() {
        "none" => Some(Policy::None),
        "quarantine" => Some(Policy::Quarantine),
        "reject" => Some(Policy::Reject),
        _ => None,
    }
}

/// `dmarc-fo`: colon-separated `0`, `1`, `d`, `s`, each at most once, `0`
/// and `1` not together.
fn valid_fo(value: &str) -> bool {
    let mut seen = Vec::new();
    for item in value.split(':') {
        let item = item.trim_matches(wsp).to_ascii_lowercase();
        if !matches!(item.as_str(), "0" | "1" | "d" | "s") || seen.contains(&item) {
            return false;
        }
        seen.push(item);
    }
    !(seen.iter().any(|s| s == "0") && seen.iter().any(|s| s == "1"))
}

/// `%XX` escapes decoded; `None` for a malformed escape or a result that is
/// not UTF-8. Also decodes the report store's connection URL options.
pub(crate) fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// One `dmarc-uri` (optionally with the obsolete `!size`): a URI with a
/// scheme (RFC 3986 §3.1) and no whitespace, controls or unescaped `!`/`,`.
fn report_uri(text: &str) -> Option<ReportUri> {
    let (uri, max_size) = match text.split_once('!') {
        None => (text, 0),
        Some((uri, size)) => {
            // RFC 9989 §4.8 obs-dmarc-report-size = "!" 1*DIGIT [k/m/g/t].
            let size = size.to_ascii_lowercase();
            let (digits, shift) = match size.char_indices().last()? {
                (i, 'k') => (&size[..i], 10),
                (i, 'm') => (&size[..i], 20),
                (i, 'g') => (&size[..i], 30),
                (i, 't') => (&size[..i], 40),
                _ => (size.as_str(), 0),
            };
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let n: usize = digits.parse().unwrap_or(usize::MAX);
            (
                uri,
                n.checked_shl(shift)
                    .filter(|v| v >> shift == n)
                    .unwrap_or(usize::MAX),
            )
        }
    };
    let (scheme, rest) = uri.split_once(':')?;
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !scheme_ok
        || rest.is_empty()
        || !rest
            .chars()
            .all(|c| c.is_ascii_graphic() && c != ',' && c != '!')
    {
        return None;
    }
    let address = if scheme.eq_ignore_ascii_case("mailto") {
        // RFC 6068: the address ends at '?' (header fields follow).
        let to = rest.split('?').next().unwrap_or_default();
        let decoded = percent_decode(to)?;
        let (local, domain) = decoded.rsplit_once('@')?;
        if local.is_empty() || domain.is_empty() || decoded.contains(',') {
            return None;
        }
        Some(decoded.to_ascii_lowercase())
    } else {
        None
    };
    Some(ReportUri {
        uri: uri.to_string(),
        address,
        max_size,
    })
}

/// `dmarc-urilist`: the valid URIs, and a note per invalid one.
fn uri_list(tag: &str, value: &str, notes: &mut Vec<String>) -> Vec<ReportUri> {
    let mut list = Vec::new();
    for item in value.split(',') {
        let item = item.trim_matches(wsp);
        match report_uri(item) {
            Some(uri) => list.push(uri),
            None => notes.push(format!("{tag}: {item:?} is not a valid URI, ignored")),
        }
    }
    list
}

/// Parse one TXT record (its strings joined). `None` when it is not a DMARC
/// record: its first tag is not exactly `v=DMARC1` (RFC 9989 §4.7 "v").
pub fn parse(txt: &[u8]) -> Option<Record> {
    let text = std::str::from_utf8(txt).ok()?;
    let mut tags = text.split(';');
    let (name, value) = tags.next()?.split_once('=')?;
    // RFC 9989 §4.8: dmarc-version = "v" equals %s"DMARC1" (the value is
    // case-sensitive, the tag name is not).
    if !name.trim_matches(wsp).eq_ignore_ascii_case("v") || value.trim_matches(wsp) != "DMARC1" {
        return None;
    }
    let mut record = Record::default();
    let notes = &mut record.notes;
    let mut seen: Vec<String> = Vec::new();
    // Each policy tag: absent, valid, or present with an invalid value.
    let (mut p, mut sp, mut np): (Option<Result<Policy, String>>, _, _) = (None, None, None);
    for tag in tags {
        if tag.trim_matches(wsp).is_empty() {
            continue; // a trailing ";" or ";;"
        }
        let Some((name, value)) = tag.split_once('=') else {
            notes.push(format!(
                "{:?} is not a tag=value pair, ignored",
                tag.trim_matches(wsp)
            ));
            continue;
        };
        let name = name.trim_matches(wsp).to_ascii_lowercase();
        let value = value.trim_matches(wsp);
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphabetic()) {
            notes.push(format!("{name:?} is not a tag name, ignored"));
            continue;
        }
        if seen.contains(&name) {
            notes.push(format!("{name}: repeated, only the first is used"));
            continue;
        }
        seen.push(name.clone());
        // RFC 9989 §4.8: a value is printable ASCII other than ';'.
        let printable = !value.is_empty() && value.bytes().all(|b| (0x20..0x7f).contains(&b));
        let invalid = |notes: &mut Vec<String>, default: &str| {
            notes.push(format!(
                "{name}={value:?} is not valid, {name}={default} applies"
            ));
        };
        match name.as_str() {
            "p" | "sp" | "np" => {
                let parsed = policy(value).ok_or_else(|| value.to_string());
                match name.as_str() {
                    "p" => p = Some(parsed),
                    "sp" => sp = Some(parsed),
                    _ => np = Some(parsed),
                }
            }
            "adkim" | "aspf" => {
                let a = match value.to_ascii_lowercase().as_str() {
                    "r" => Alignment::Relaxed,
                    "s" => Alignment::Strict,
                    _ => {
                        invalid(notes, "r");
                        Alignment::Relaxed
                    }
                };
                if name == "adkim" {
                    record.adkim = a;
                } else {
                    record.aspf = a;
                }
            }
            "psd" => {
                record.psd = match value.to_ascii_lowercase().as_str() {
                    "y" => Psd::Yes,
                    "n" => Psd::No,
                    "u" => Psd::Default,
                    _ => {
                        invalid(notes, "u");
                        Psd::Default
                    }
                }
            }
            "t" => {
                record.t = match value.to_ascii_lowercase().as_str() {
                    "y" => true,
                    "n" => false,
                    _ => {
                        invalid(notes, "n");
                        false
                    }
                }
            }
            "fo" => {
                if printable && valid_fo(value) {
                    record.fo = value.to_ascii_lowercase();
                } else {
                    invalid(notes, "0");
                }
            }
            "rua" => record.rua = uri_list("rua", value, notes),
            "ruf" => record.ruf = uri_list("ruf", value, notes),
            // RFC 7489 §6.3 pct (removed by RFC 9989): read for
            // verify.dmarc_pct = "honor" only.
            "pct" => match value.parse::<u8>() {
                Ok(n) if n <= 100 && value.bytes().all(|b| b.is_ascii_digit()) => {
                    record.pct = Some(n)
                }
                _ => notes.push(format!("pct={value:?} is not valid, ignored")),
            },
            // RFC 7489 tags RFC 9989 removed; harmless.
            "rf" | "ri" => {}
            // RFC 9989 §4.7: unknown tags MUST be ignored.
            _ => notes.push(format!("unknown tag {name}, ignored")),
        }
    }
    // An invalid "sp" or "np" takes its default ("sp" = "p", "np" = "sp"),
    // like every other tag but "v" and "p": a typo in a subdomain policy must
    // not switch off the domain's own p=reject.
    let valid = |v: Option<Result<Policy, String>>, tag: &str, notes: &mut Vec<String>| match v {
        Some(Ok(policy)) => Some(policy),
        Some(Err(value)) => {
            notes.push(format!("{tag}={value:?} is not valid, its default applies"));
            None
        }
        None => None,
    };
    let sp = valid(sp, "sp", &mut record.notes);
    let np = valid(np, "np", &mut record.notes);
    match p {
        Some(Ok(policy)) => record.p = policy,
        // RFC 9989 §4.10.1: no valid "p": with a valid rua the record reads
        // as "p=none", else no DMARC processing.
        broken => {
            let why = match broken {
                Some(Err(value)) => format!("p={value:?} is not valid"),
                _ => "no p tag".to_string(),
            };
            if record.rua.is_empty() {
                record.usable = false;
                record.notes.push(format!(
                    "{why} and no valid rua: no DMARC processing (RFC 9989 §4.10.1)"
                ));
            } else {
                record.notes.push(format!(
                    "{why}: with a valid rua the record reads as p=none (RFC 9989 §4.10.1)"
                ));
            }
            record.p = Policy::None;
            record.sp = Policy::None;
            record.np = Policy::None;
            return Some(record);
        }
    }
    record.sp = sp.unwrap_or(record.p);
    record.np = np.unwrap_or(record.sp);
    Some(record)
}

impl Record {
    /// A one-line summary of the effective values, as the record corpus
    /// states them.
    pub fn summary(&self) -> String {
        if !self.usable {
            return "no policy".to_string();
        }
        let psd = match self.psd {
            Psd::Yes => "y",
            Psd::No => "n",
            Psd::Default => "u",
        };
        format!(
            "p={} sp={} np={} adkim={} aspf={} psd={psd} t={} fo={} rua={}",
            self.p,
            self.sp,
            self.np,
            self.adkim,
            self.aspf,
            if self.t { "y" } else { "n" },
            self.fo,
            self.rua
                .iter()
                .map(|u| u.address.as_deref().unwrap_or(&u.uri).to_string())
                .collect::<Vec<_>>()
                .join(","),
        )
    }

    /// The `mailto:` addresses of `rua=` with their size limits, in order.
    pub fn rua_addresses(&self) -> impl Iterator<Item = (&str, usize)> {
        self.rua
            .iter()
            .filter_map(|u| u.address.as_deref().map(|a| (a, u.max_size)))
    }
}
