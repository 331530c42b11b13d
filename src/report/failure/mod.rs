//! DMARC failure reports (RFC 9991): the shared types. Placeholder on the
//! pipeline branch until the report-content branch lands; replaced by it.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureSample {
    pub reported_domain: String,
    pub source_ip: std::net::IpAddr,
    pub arrival: i64,
    pub helo: String,
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    pub authentication_results: String,
    pub dkim: Vec<DkimFacts>,
    pub spf: Option<SpfFacts>,
    pub dkim_aligned_pass: bool,
    pub spf_aligned_pass: bool,
    pub delivery_result: DeliveryResult,
    pub headers: Vec<u8>,
    pub body: Option<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DkimFacts {
    pub domain: String,
    pub selector: String,
    pub identity: String,
    pub result: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpfFacts {
    pub domain: String,
    pub scope: String,
    pub result: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeliveryResult {
    Delivered,
    Spam,
    Policy,
    Reject,
    Other,
}

pub fn wanted(fo: &str, sample: &FailureSample) -> bool {
    let _ = (fo, sample);
    !sample.dkim_aligned_pass && !sample.spf_aligned_pass
}

pub struct RenderOptions<'a> {
    pub from: &'a str,
    pub to: &'a str,
    pub reporting_domain: &'a str,
    pub redact: bool,
    pub drop_headers: &'a [String],
    pub include_body: bool,
    pub max_bytes: Option<u64>,
    pub message_id: &'a str,
    pub date: i64,
}

pub fn render(sample: &FailureSample, opts: &RenderOptions<'_>) -> Vec<u8> {
    format!(
        "From: {}\r\nTo: {}\r\nSubject: placeholder\r\nMessage-ID: <{}>\r\n\r\nReported-Domain: {}\r\n",
        opts.from, opts.to, opts.message_id, sample.reported_domain
    )
    .into_bytes()
}
