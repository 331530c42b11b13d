//! DMARC aggregate reporting: the evaluation record each verified message
//! yields (what RFC 9990 reports need), and the store interface it is
//! handed to. Storing never blocks or fails mail: a store that cannot keep
//! up drops records and counts them.
//!
//! [`sink::StoreSink`] writes the records into the [`store`] (SQLite or
//! PostgreSQL) off the milter's hot path; `rmilter report generate` and
//! `rmilter report send` ([`cli`]) turn the stored rows into RFC 9990
//! reports ([`generate`], [`xml`]) and mail them through the local MTA
//! exactly as often as needed and never with a new identity ([`send`]).

pub mod cli;
pub mod failure;
pub mod failures;
pub mod generate;
pub mod send;
pub mod sink;
pub mod store;
pub mod xml;

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

    /// A DMARC failure of a message whose record has `ruf=` (RFC 9991),
    /// for the failure-report queue. Must return at once.
    fn failure(&self, _capture: failures::Capture) {}

    /// The store writer's counters, for the metrics endpoint; `None` for
    /// sinks that keep no store.
    fn stats(&self) -> Option<std::sync::Arc<sink::Stats>> {
        None
    }

    /// At shutdown: wait (at most `timeout`) until every record handed
    /// over has been written or dropped.
    fn finish(&self, _timeout: std::time::Duration) {}
}

/// Keeps no records.
pub struct Discard;

impl EvaluationSink for Discard {
    fn record(&self, _: Evaluation) {}
}

/// Keeps every record in memory (tests and `rmilter explain`).
#[derive(Default)]
pub struct MemorySink(Mutex<Vec<Evaluation>>, Mutex<Vec<failures::Capture>>);

impl MemorySink {
    /// The failure captures handed over so far.
    pub fn take_failures(&self) -> Vec<failures::Capture> {
        match self.1.lock() {
            Ok(mut v) => std::mem::take(&mut *v),
            Err(p) => std::mem::take(&mut *p.into_inner()),
        }
    }

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

    fn failure(&self, capture: failures::Capture) {
        match self.1.lock() {
            Ok(mut v) => v.push(capture),
            Err(p) => p.into_inner().push(capture),
        }
    }
}

/// Seconds since the Unix epoch (negative before 1970).
pub fn unix_time(t: SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

/// The reporting period of `length` seconds that contains `time`: periods
/// are aligned to the Unix epoch, so a period dividing a day starts at UTC
/// midnight. Returns (begin, end) with `end` the period's last second, as
/// RFC 9990's `date_range` example counts it.
pub fn period_of(time: i64, length: i64) -> (i64, i64) {
    let length = length.max(1);
    let begin = time - time.rem_euclid(length);
    (begin, begin + length - 1)
}

#[cfg(test)]
mod period_tests {
    use super::period_of;

    #[test]
    fn periods_align_to_utc_midnight() {
        // 1970-01-04 00:00:00 UTC is 259200.
        assert_eq!(period_of(259_200, 86_400), (259_200, 345_599));
        assert_eq!(period_of(345_599, 86_400), (259_200, 345_599));
        assert_eq!(period_of(345_600, 86_400), (345_600, 431_999));
        assert_eq!(period_of(262_000, 3600), (259_200, 262_799));
        assert_eq!(period_of(263_000, 3600), (262_800, 266_399));
        assert_eq!(period_of(-1, 86_400), (-86_400, -1));
    }
}
