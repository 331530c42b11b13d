//! The failure report mail: RFC 9991 §4 in the RFC 6591 Abuse Reporting
//! Format (RFC 5965), a `multipart/report; report-type=feedback-report`
//! with a human-readable part, the `message/feedback-report` part and the
//! original header section (`text/rfc822-headers`) or, when configured,
//! the whole message (`message/rfc822`). Built by hand: the parts are a
//! dozen fixed lines, and no crate in the tree writes ARF (mail-builder
//! would add a dependency for the MIME frame alone).

use super::redact::{self, Masker};
use super::{FailureSample, RenderOptions};
use crate::report::send::rfc5322_date;

/// The whole report for `sample` (see [`super::render`]). With `max_bytes`
/// the body is left out and then the returned header section cut at a
/// field boundary until the mail fits; if even the report without any
/// original header is larger, that smallest report is returned and the
/// caller (which knows the `!size`) refuses it.
pub fn render(sample: &FailureSample, opts: &RenderOptions<'_>) -> Vec<u8> {
    let mut masker = Masker::new();
    let masker_opt = if opts.redact { Some(&mut masker) } else { None };
    let returned = lf(&redact::header_section(
        &sample.headers,
        opts.drop_headers,
        masker_opt,
    ));
    let body = if opts.include_body {
        sample.body.as_deref().map(lf)
    } else {
        None
    };
    let full = assemble(sample, opts, &mut masker, &returned, body.as_deref());
    let Some(max) = opts.max_bytes else {
        return full;
    };
    let max = usize::try_from(max).unwrap_or(usize::MAX);
    if full.len() <= max {
        return full;
    }
    // RFC 9990 `!size` (also for ruf): leave the body out first…
    let no_body = assemble(sample, opts, &mut masker, &returned, None);
    if no_body.len() <= max || returned.is_empty() {
        return no_body;
    }
    // …then keep only as many whole header fields as fit.
    let overhead = no_body.len() - returned.len();
    let budget = max.saturating_sub(overhead);
    let mut kept = 0;
    for field in redact::fields(&returned) {
        if kept + field.len() > budget {
            break;
        }
        kept += field.len();
    }
    assemble(sample, opts, &mut masker, &returned[..kept], None)
}

fn assemble(
    sample: &FailureSample,
    opts: &RenderOptions<'_>,
    masker: &mut Masker,
    returned: &[u8],
    body: Option<&[u8]>,
) -> Vec<u8> {
    let mut addr = |s: &str| -> String {
        if opts.redact {
            masker.text(s)
        } else {
            s.to_string()
        }
    };
    let mail_from = addr(&sample.mail_from);
    let rcpts: Vec<String> = sample.rcpt_to.iter().map(|r| addr(r)).collect();
    let auth_results = addr(&sample.authentication_results);
    let dkim =
        relevant_dkim(sample).map(|d| (d.domain.clone(), d.selector.clone(), addr(&d.identity)));

    let boundary = boundary(opts.message_id, returned, body);
    let arrival = rfc5322_date(sample.arrival);
    let mut m = String::new();
    field(&mut m, "From", opts.from);
    field(&mut m, "To", opts.to);
    // The subject names the reported domain and source; it does not repeat
    // the original subject (message content).
    field(
        &mut m,
        "Subject",
        &format!(
            "DMARC failure report for {} from {}",
            sample.reported_domain, sample.source_ip
        ),
    );
    field(&mut m, "Date", &rfc5322_date(opts.date));
    field(&mut m, "Message-ID", &format!("<{}>", opts.message_id));
    m.push_str("MIME-Version: 1.0\n");
    // RFC 3834: automatic replies must not answer this.
    m.push_str("Auto-Submitted: auto-generated\n");
    // RFC 6591 §2 / RFC 5965 §2: multipart/report, report-type=feedback-report.
    m.push_str(&format!(
        "Content-Type: multipart/report; report-type=feedback-report;\n boundary=\"{boundary}\"\n\n"
    ));
    m.push_str("This is a multi-part message in MIME format.\n\n");

    // RFC 5965 §2 (a): the human-readable part.
    m.push_str(&format!("--{boundary}\n"));
    let human = format!(
        "This is a DMARC failure report (RFC 9991) from {}.\n\
         A message claiming to be from {} failed DMARC authentication.\n\
         It came from {} on {}.\n",
        one_line(opts.reporting_domain),
        one_line(&sample.reported_domain),
        sample.source_ip,
        arrival
    );
    m.push_str(&format!(
        "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: {}\n\n",
        cte(human.as_bytes())
    ));
    m.push_str(&human);
    if opts.redact {
        m.push_str("Local parts of addresses have been redacted (RFC 6590).\n");
    }
    m.push('\n');

    // RFC 5965 §2 (b): the machine-readable part.
    m.push_str(&format!("--{boundary}\n"));
    m.push_str("Content-Type: message/feedback-report\n\n");
    // RFC 6591 §3.1: Feedback-Type auth-failure.
    field(&mut m, "Feedback-Type", "auth-failure");
    field(
        &mut m,
        "User-Agent",
        concat!("rmilter/", env!("CARGO_PKG_VERSION")),
    );
    field(&mut m, "Version", "1");
    field(&mut m, "Original-Mail-From", &format!("<{mail_from}>"));
    // RFC 9991 §4: Original-Rcpt-To only when the receiver chose to include it.
    for r in &rcpts {
        field(&mut m, "Original-Rcpt-To", &format!("<{r}>"));
    }
    field(&mut m, "Arrival-Date", &arrival);
    field(&mut m, "Source-IP", &sample.source_ip.to_string());
    field(&mut m, "Reported-Domain", &sample.reported_domain);
    field(
        &mut m,
        "Reporting-MTA",
        &format!("dns; {}", opts.reporting_domain),
    );
    // RFC 9991 §4: Auth-Failure dmarc.
    field(&mut m, "Auth-Failure", "dmarc");
    field(&mut m, "Authentication-Results", &auth_results);
    // RFC 9991 §4: Identity-Alignment lists the mechanisms that passed aligned.
    field(&mut m, "Identity-Alignment", identity_alignment(sample));
    // RFC 6591 §3.1: DKIM-Domain, DKIM-Identity, DKIM-Selector where relevant.
    if let Some((domain, selector, identity)) = dkim {
        field(&mut m, "DKIM-Domain", &domain);
        if !identity.is_empty() {
            field(&mut m, "DKIM-Identity", &identity);
        }
        field(&mut m, "DKIM-Selector", &selector);
    }
    // RFC 6591 §3.1: SPF-DNS, the record evaluated, where relevant.
    if let Some(spf) = &sample.spf
        && let Some(record) = &spf.record
        && spf.result != "pass"
    {
        field(
            &mut m,
            "SPF-DNS",
            &format!(
                "txt : {} : \"{}\"",
                spf.domain,
                record.replace(['"', '\\'], "")
            ),
        );
    }
    field(&mut m, "Delivery-Result", sample.delivery_result.as_str());
    m.push('\n');

    // RFC 5965 §2 (c) / RFC 9991 §4: the original header section by
    // default, the whole message only when configured.
    m.push_str(&format!("--{boundary}\n"));
    let mut out = m.into_bytes();
    match body {
        Some(body) => {
            out.extend_from_slice(
                format!(
                    "Content-Type: message/rfc822\nContent-Disposition: inline\nContent-Transfer-Encoding: {}\n\n",
                    if returned.is_ascii() && body.is_ascii() { "7bit" } else { "8bit" }
                )
                .as_bytes(),
            );
            out.extend_from_slice(returned);
            out.extend_from_slice(b"\n");
            out.extend_from_slice(body);
        }
        None => {
            out.extend_from_slice(
                format!(
                    "Content-Type: text/rfc822-headers\nContent-Disposition: inline\nContent-Transfer-Encoding: {}\n\n",
                    cte(returned)
                )
                .as_bytes(),
            );
            out.extend_from_slice(returned);
        }
    }
    if !out.ends_with(b"\n") {
        out.push(b'\n');
    }
    out.extend_from_slice(format!("\n--{boundary}--\n").as_bytes());
    // RFC 2045 §6.4: a multipart holding 8-bit parts is labelled 8bit.
    if !out.is_ascii()
        && let Some(at) = find(&out, b"MIME-Version: 1.0\n")
    {
        let at = at + b"MIME-Version: 1.0\n".len();
        out.splice(at..at, b"Content-Transfer-Encoding: 8bit\n".iter().copied());
    }
    out
}

/// RFC 2045 §6.2: 7bit for pure ASCII, else 8bit (lines stay short enough).
fn cte(content: &[u8]) -> &'static str {
    if content.is_ascii() { "7bit" } else { "8bit" }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// RFC 7489 §7.3.1 / RFC 9991 §4 `Identity-Alignment`: the mechanisms that
/// passed aligned, or "none".
fn identity_alignment(sample: &FailureSample) -> &'static str {
    match (sample.dkim_aligned_pass, sample.spf_aligned_pass) {
        (true, true) => "dkim, spf",
        (true, false) => "dkim",
        (false, true) => "spf",
        (false, false) => "none",
    }
}

/// The signature the DKIM-* fields describe: the first failing signature
/// aligned with the reported domain, else the first failing one, else the
/// first aligned one, else none.
fn relevant_dkim(sample: &FailureSample) -> Option<&super::DkimFacts> {
    let aligned = |d: &&super::DkimFacts| {
        let dom = d.domain.to_ascii_lowercase();
        let rep = sample.reported_domain.to_ascii_lowercase();
        dom == rep || rep.ends_with(&format!(".{dom}")) || dom.ends_with(&format!(".{rep}"))
    };
    let failed = |d: &&super::DkimFacts| !d.result.eq_ignore_ascii_case("pass");
    let all = &sample.dkim;
    all.iter()
        .find(|d| failed(d) && aligned(d))
        .or_else(|| all.iter().find(failed))
        .or_else(|| all.iter().find(aligned))
}

/// A field value on one line: folding whitespace and any line break
/// collapsed to single spaces, other control characters dropped (no value
/// taken from a message or from DNS can start a field of its own).
fn one_line(s: &str) -> String {
    s.split_whitespace()
        .map(|w| w.chars().filter(|c| !c.is_control()).collect::<String>())
        .collect::<Vec<_>>()
        .join(" ")
}

/// RFC 5322 §2.1.1: lines stay within 998 characters.
const MAX_LINE: usize = 998;

/// Append `Name: value` as one line (parsers of feedback reports, such as
/// parsedmarc, read only the first line of a field), folded at whitespace
/// only where the line would pass the RFC 5322 limit.
fn field(m: &mut String, name: &str, value: &str) {
    let value = one_line(value);
    let mut line_len = name.len() + 2;
    m.push_str(name);
    m.push_str(": ");
    for (i, word) in value.split(' ').enumerate() {
        if i > 0 {
            if line_len + 1 + word.len() > MAX_LINE {
                m.push_str("\n ");
                line_len = 1;
            } else {
                m.push(' ');
                line_len += 1;
            }
        }
        m.push_str(word);
        line_len += word.len();
    }
    m.push('\n');
}

/// CRLF (and lone CR) line endings turned into LF, as sendmail takes them.
fn lf(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\r' if bytes.get(i + 1) == Some(&b'\n') => {}
            b'\r' => out.push(b'\n'),
            b => out.push(b),
        }
        i += 1;
    }
    out
}

/// A MIME boundary that occurs in none of the returned content.
fn boundary(message_id: &str, returned: &[u8], body: Option<&[u8]>) -> String {
    let base: String = message_id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        .take(50)
        .collect();
    let contains =
        |hay: &[u8], needle: &str| hay.windows(needle.len()).any(|w| w == needle.as_bytes());
    let mut n = 0u32;
    loop {
        let b = if n == 0 {
            format!("=_rmilter_fr_{base}")
        } else {
            format!("=_rmilter_fr_{base}_{n}")
        };
        if !contains(returned, &b) && !body.is_some_and(|body| contains(body, &b)) {
            return b;
        }
        n += 1;
    }
}
