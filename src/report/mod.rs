//! DMARC aggregate reporting: the evaluation record each verified message
//! yields (what RFC 9990 reports need), and the store interface it is
//! handed to. Storing never blocks or fails mail: a store that cannot keep
//! up drops records and counts them.

use std::net::IpAddr;
use std::sync::Mutex;
use std::time::SystemTime;

/// RFC 9990 `DispositionType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    None,
    Quarantine,
    Reject,
}

impl Disposition {
    pub fn as_str(self) -> &'static str {
        match self {
            Disposition::None => "none",
            Disposition::Quarantine => "quarantine",
            Disposition::Reject => "reject",
        }
    }
}

/// The policy record as published (RFC 9990 `PolicyPublishedType`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedPolicy {
    pub domain: String,
    /// `p=`, `sp=`, `np=` as "none", "quarantine" or "reject".
    pub p: &'static str,
    pub sp: &'static str,
    pub np: &'static str,
    /// "r" or "s".
    pub adkim: &'static str,
    pub aspf: &'static str,
    /// `t=y`.
    pub testing: bool,
    /// "y", "n" or "u".
    pub psd: &'static str,
}

/// One DKIM signature's outcome (RFC 9990 `DKIMAuthResultType`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DkimRecord {
    pub domain: String,
    pub selector: String,
    /// none, pass, fail, policy, neutral, temperror, permerror.
    pub result: &'static str,
}

/// One SPF evaluation (RFC 9990 `SPFAuthResultType`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpfRecord {
    pub domain: String,
    /// "mfrom" or "helo".
    pub scope: &'static str,
    pub result: &'static str,
}

/// Why the applied disposition differs from the published policy
/// (RFC 9990 `PolicyOverrideReason`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    /// local_policy, mailing_list, trusted_forwarder, policy_test_mode, ...
    pub kind: &'static str,
    pub comment: String,
}

/// Everything an aggregate report row needs about one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evaluation {
    pub time: SystemTime,
    pub source_ip: Option<IpAddr>,
    pub header_from: String,
    pub envelope_from: String,
    /// The policy that applied; `None` when the author domain publishes no
    /// DMARC record (such messages are not reported).
    pub policy: Option<PublishedPolicy>,
    pub disposition: Disposition,
    /// DMARC-aligned DKIM and SPF outcomes: "pass" or "fail".
    pub dkim_aligned: &'static str,
    pub spf_aligned: &'static str,
    pub dkim: Vec<DkimRecord>,
    pub spf: Vec<SpfRecord>,
    pub overrides: Vec<Override>,
}

/// Where evaluation records go. Implementations must return at once.
pub trait EvaluationSink: Send + Sync {
    fn record(&self, evaluation: Evaluation);
}

/// Keeps no records.
pub struct Discard;

impl EvaluationSink for Discard {
    fn record(&self, _: Evaluation) {}
}

/// Keeps every record in memory (tests and `rmilter explain`).
#[derive(Default)]
pub struct MemorySink(Mutex<Vec<Evaluation>>);

impl MemorySink {
    pub fn take(&self) -> Vec<Evaluation> {
        match self.0.lock() {
            Ok(mut v) => std::mem::take(&mut *v),
            Err(p) => std::mem::take(&mut *p.into_inner()),
        }
    }
}

impl EvaluationSink for MemorySink {
    fn record(&self, evaluation: Evaluation) {
        match self.0.lock() {
            Ok(mut v) => v.push(evaluation),
            Err(p) => p.into_inner().push(evaluation),
        }
    }
}
