//! SPF verification (RFC 7208): rmilter's own `check_host()` and the HELO and
//! MAIL FROM checks of one SMTP transaction.
//!
//! rmilter evaluates SPF itself instead of calling mail-auth's verifier, which
//! has no void-lookup limit, turns its time limit into `permerror` and was
//! tested against a reduced copy of the OpenSPF suite (RELIABILITY §1.5
//! P1–P8, §7 item 2). The record parser (`record.rs`) is rmilter's too, since
//! mail-auth's accepts records the suite requires to be errors. DNS comes
//! through the [`SpfDns`] trait: [`HickoryDns`] in production, an in-memory
//! zone in tests.
//!
//! Limits (RFC 7208 §4.6.4), all per top-level check: at most
//! [`SpfLimits::dns_mechanisms`] terms that query DNS (`include`, `a`, `mx`,
//! `ptr`, `exists`, `redirect`, and each `%{p}` expansion), else `permerror`;
//! at most [`SpfLimits::void_lookups`] terms whose lookup is NXDOMAIN or
//! empty, else `permerror`; an `mx` answer with more than 10 names is a
//! `permerror`; only the first 10 `PTR` names are used; and the whole
//! evaluation must finish within [`SpfLimits::time`], else `temperror`.
//! Together these bound the DNS queries of one check to
//! [`SpfLimits::max_dns_queries`].

mod eval;
mod hickory;
mod identity;
mod macros;
mod record;
#[cfg(test)]
mod tests;

use std::fmt;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

pub use hickory::HickoryDns;

/// For `rmilter doctor`: `None` when a TXT record is not an SPF record
/// (RFC 7208 §4.5), else whether it parses, with the reason it does not.
pub fn record_syntax(txt: &[u8]) -> Option<Result<(), String>> {
    if !record::is_spf_record(txt) {
        return None;
    }
    Some(record::parse(txt).map(|_| ()).map_err(|e| e.to_string()))
}

/// The result of one DNS query as SPF needs it (RFC 7208 §4.4, §5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup<T> {
    /// At least one record of the asked type.
    Found(T),
    /// RCODE 3, the name does not exist (a void lookup, RFC 7208 §4.6.4).
    NxDomain,
    /// RCODE 0 without records of the asked type (a void lookup).
    NoData,
    /// SERVFAIL, REFUSED, timeout, truncation without TCP, bogus DNSSEC: try again later.
    TempError(String),
}

/// DNS as SPF needs it. Implemented for the production resolver
/// ([`HickoryDns`]) and by an in-memory map in tests. Names are given
/// without a trailing dot and may hold any printable ASCII (macro expansions
/// and the suite use `:`, `/`, `%` and spaces); a name the implementation
/// cannot put on the wire does not exist.
pub trait SpfDns: Send + Sync {
    /// TXT records of `name`, each RR as its character-strings joined without separator.
    fn txt(&self, name: &str) -> impl Future<Output = Lookup<Vec<Vec<u8>>>> + Send;
    /// A records of `name`.
    fn a(&self, name: &str) -> impl Future<Output = Lookup<Vec<Ipv4Addr>>> + Send;
    /// AAAA records of `name`.
    fn aaaa(&self, name: &str) -> impl Future<Output = Lookup<Vec<Ipv6Addr>>> + Send;
    /// MX records of `name` as (preference, exchange).
    fn mx(&self, name: &str) -> impl Future<Output = Lookup<Vec<(u16, String)>>> + Send;
    /// PTR records of the reverse name of `ip`.
    fn ptr(&self, ip: IpAddr) -> impl Future<Output = Lookup<Vec<String>>> + Send;
}

/// An SPF result (RFC 7208 §2.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SpfResult {
    None,
    Neutral,
    Pass,
    Fail,
    SoftFail,
    TempError,
    PermError,
}

impl SpfResult {
    /// The result keyword for Authentication-Results (RFC 8601 §2.7.2) and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            SpfResult::None => "none",
            SpfResult::Neutral => "neutral",
            SpfResult::Pass => "pass",
            SpfResult::Fail => "fail",
            SpfResult::SoftFail => "softfail",
            SpfResult::TempError => "temperror",
            SpfResult::PermError => "permerror",
        }
    }
}

impl fmt::Display for SpfResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one `check_host()` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpfOutcome {
    pub result: SpfResult,
    /// The domain checked: lower-case A-labels, no trailing dot (for A-R
    /// `smtp.mailfrom`/`smtp.helo` and DMARC alignment). Empty when the
    /// identity held no valid domain, in which case `result` is `none`.
    pub domain: String,
    /// Short lower-case printable-ASCII text for logs and A-R comments
    /// (`matched ip4:192.0.2.0/24`, `void lookup limit of 2 exceeded`), at most
    /// [`MAX_REASON`] bytes, without parentheses or backslashes.
    pub reason: String,
    /// Terms that caused DNS queries (RFC 7208 §4.6.4 counting).
    pub dns_queries: u32,
    /// Terms whose lookup returned NXDOMAIN or no records.
    pub void_lookups: u32,
}

/// Longest [`SpfOutcome::reason`].
pub const MAX_REASON: usize = 200;

/// RFC 7208 §4.6.4 processing limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpfLimits {
    /// Terms that query DNS; RFC 7208 §4.6.4 fixes this at 10.
    pub dns_mechanisms: u32,
    /// Void lookups; RFC 7208 §4.6.4 recommends 2.
    pub void_lookups: u32,
    /// Wall-clock limit of one check; RFC 7208 §4.6.4 says at least 20 s,
    /// and it must fit Postfix's 30 s command timeout (RELIABILITY §4).
    pub time: Duration,
}

impl Default for SpfLimits {
    fn default() -> Self {
        SpfLimits {
            dns_mechanisms: 10,
            void_lookups: 2,
            time: Duration::from_secs(20),
        }
    }
}

impl SpfLimits {
    /// The most DNS queries one `check_host()` can make under these limits:
    /// the first TXT lookup, then at most `dns_mechanisms` counted terms of at
    /// most 11 queries each (`mx`: MX plus 10 address lookups; `ptr` and `%{p}`:
    /// PTR plus 10). `exp=` is never fetched.
    pub fn max_dns_queries(&self) -> u64 {
        1 + 11 * u64::from(self.dns_mechanisms)
    }
}

/// RFC 7208 §4 `check_host()`: `ip` is the client address (an IPv4-mapped
/// IPv6 address counts as IPv4, §5), `domain` the domain to check, `sender`
/// the MAIL FROM or HELO identity (`postmaster` is used when it has no local
/// part, §4.3), `helo` the HELO/EHLO argument as given (for `%{h}`) and
/// `receiver` this host's name (for `%{r}`).
pub async fn check_host(
    dns: &impl SpfDns,
    limits: &SpfLimits,
    ip: IpAddr,
    domain: &str,
    sender: &str,
    helo: &str,
    receiver: &str,
) -> SpfOutcome {
    let domain = match identity::normalise_domain(domain) {
        Ok(d) => d,
        // RFC 7208 §4.3: a malformed or single-label domain gives none.
        Err(e) => return eval::invalid_identity(&format!("invalid domain: {e}")),
    };
    let (local, sender_domain) = match sender.rfind('@') {
        Some(at) => (
            &sender[..at],
            identity::normalise_domain(&sender[at + 1..]).unwrap_or_else(|_| domain.clone()),
        ),
        None => ("", domain.clone()),
    };
    let identity = eval::Identity::new(local, &sender_domain, helo, receiver);
    eval::run(dns, limits, ip, domain, &identity).await
}

/// The HELO and MAIL FROM checks of one SMTP transaction (RFC 7208 §2.3,
/// §2.4). `mail_from` is the reverse-path with or without angle brackets;
/// the MAIL FROM identity of a null reverse-path is `postmaster@HELO`. A MAIL
/// FROM without a valid domain gives `none` and is never replaced by the
/// HELO identity (RELIABILITY F9). Returns `(helo_outcome, mail_from_outcome)`;
/// both checks run concurrently.
pub async fn verify(
    dns: &impl SpfDns,
    limits: &SpfLimits,
    ip: IpAddr,
    helo: &str,
    mail_from: &str,
    receiver: &str,
) -> (SpfOutcome, SpfOutcome) {
    let helo_check = async {
        match identity::normalise_domain(helo) {
            // RFC 7208 §2.3: the HELO identity is checked with <sender> postmaster@HELO.
            Ok(d) => {
                let identity = eval::Identity::new("", &d, helo, receiver);
                eval::run(dns, limits, ip, d.clone(), &identity).await
            }
            Err(e) => eval::invalid_identity(&format!("invalid helo domain: {e}")),
        }
    };
    match identity::parse_mail_from(mail_from) {
        identity::MailFrom::Null => {
            // RFC 7208 §2.4: the MAIL FROM identity of a null reverse-path is
            // postmaster@HELO, the very check the HELO identity gets.
            let outcome = helo_check.await;
            (outcome.clone(), outcome)
        }
        identity::MailFrom::NoDomain => (
            helo_check.await,
            eval::invalid_identity("mail from has no domain"),
        ),
        identity::MailFrom::Address { local, domain } => {
            match identity::normalise_domain(&domain) {
                Err(e) => (
                    helo_check.await,
                    eval::invalid_identity(&format!("invalid mail from domain: {e}")),
                ),
                Ok(d) => {
                    let identity = eval::Identity::new(&local, &d, helo, receiver);
                    tokio::join!(helo_check, eval::run(dns, limits, ip, d.clone(), &identity))
                }
            }
        }
    }
}
