//! DMARC failure reports (RFC 9991): what the milter captures for one
//! DMARC-failing inbound message ([`FailureSample`]), whether the policy's
//! `fo=` tag asks for a report about it ([`wanted`], in [`fo`]), and the
//! report mail itself ([`render`]): an RFC 6591 Abuse Reporting Format
//! `multipart/report` with a human-readable part, a `message/feedback-report`
//! part and the original header section, redacted per RFC 6590 ([`redact`])
//! unless told otherwise. Nothing here touches the network or the store:
//! the pipeline queues samples and sends the rendered bytes.

pub mod fo;
pub mod redact;
pub mod render;
#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// What the milter captures for one DMARC-failing inbound message, stored
/// as JSON in the failure-report queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureSample {
    /// The author (RFC5322.From) domain the DMARC record belongs to.
    pub reported_domain: String,
    pub source_ip: IpAddr,
    /// Arrival time, Unix seconds.
    pub arrival: i64,
    pub helo: String,
    /// The envelope sender; "" for the null reverse-path `<>`.
    pub mail_from: String,
    /// Envelope recipients; kept only if `[report.failure] include_rcpt_to`.
    #[serde(default)]
    pub rcpt_to: Vec<String>,
    /// The value of rmilter's own Authentication-Results field.
    pub authentication_results: String,
    /// Every DKIM result rmilter reported.
    #[serde(default)]
    pub dkim: Vec<DkimFacts>,
    pub spf: Option<SpfFacts>,
    pub dkim_aligned_pass: bool,
    pub spf_aligned_pass: bool,
    pub delivery_result: DeliveryResult,
    /// The original header section, CRLF line endings.
    pub headers: Vec<u8>,
    /// The original body (bounded), only when `include_body`.
    #[serde(default)]
    pub body: Option<Vec<u8>>,
}

/// One DKIM signature's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DkimFacts {
    /// `d=`.
    pub domain: String,
    /// `s=`.
    pub selector: String,
    /// `i=` (or "@" + `d=` when absent).
    pub identity: String,
    /// The RFC 8601 result: pass, fail, neutral, policy, temperror, permerror.
    pub result: String,
}

/// The SPF check's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpfFacts {
    /// The domain checked.
    pub domain: String,
    /// "mfrom" or "helo".
    pub scope: String,
    /// The RFC 7208 result: pass, fail, softfail, neutral, none, temperror, permerror.
    pub result: String,
    /// The SPF record text that was evaluated, when known (for `SPF-DNS`).
    #[serde(default)]
    pub record: Option<String>,
}

/// RFC 6591 §3.2 `Delivery-Result` (with RFC 9991's use of it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeliveryResult {
    /// Delivered to the recipient's mailbox.
    Delivered,
    /// Delivered to a spam folder (DMARC quarantine).
    Spam,
    /// Not delivered because of a local policy (DMARC reject).
    Policy,
    /// Rejected outright.
    Reject,
    Other,
}

impl DeliveryResult {
    /// The `Delivery-Result` field value.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryResult::Delivered => "delivered",
            DeliveryResult::Spam => "spam",
            DeliveryResult::Policy => "policy",
            DeliveryResult::Reject => "reject",
            DeliveryResult::Other => "other",
        }
    }
}

/// The RFC 9991 `fo=` tag: whether this sample warrants a report under the
/// record's `fo` value (a colon-separated list; "" means the default `0`).
pub fn wanted(fo: &str, sample: &FailureSample) -> bool {
    fo::wanted(fo, sample)
}

/// How to render one report.
#[derive(Debug, Clone)]
pub struct RenderOptions<'a> {
    /// The report's From address (`[report] email` or its default).
    pub from: &'a str,
    /// The `ruf=` destination address.
    pub to: &'a str,
    pub reporting_domain: &'a str,
    /// RFC 6590 redaction of local parts in the returned headers (default true).
    pub redact: bool,
    /// Header field names removed from the returned header section.
    pub drop_headers: &'a [String],
    /// Return the body too (default false); only if the sample has it. The
    /// body is returned as received: redaction covers the header section
    /// and the report's own fields only.
    pub include_body: bool,
    /// The destination's `!size`: the body is left out, then the returned
    /// headers truncated, so that the report fits.
    pub max_bytes: Option<u64>,
    /// The Message-ID without angle brackets.
    pub message_id: &'a str,
    /// The report's Date, Unix seconds.
    pub date: i64,
}

/// The complete report mail (RFC 5322 message, `multipart/report;
/// report-type=feedback-report`), LF line endings as `sendmail` takes them.
pub fn render(sample: &FailureSample, opts: &RenderOptions<'_>) -> Vec<u8> {
    render::render(sample, opts)
}
