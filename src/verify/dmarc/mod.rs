//! DMARC (RFC 9989) owned by rmilter: the record parser ([`record`]), the
//! one DNS Tree Walk per message that yields the record applied, its
//! policy and the Organizational Domain ([`walk`]), and the evaluation of
//! the aligned DKIM and SPF results against it ([`evaluate`]). The
//! policy decision, the Authentication-Results field, `rmilter explain`
//! and the aggregate report all read this one result.
//!
//! mail-auth's DMARC verifier is not used: its parser fails a whole record
//! on one bad value, it applies the first of several records at one name,
//! and its alignment code is private. DKIM and SPF results still come from
//! mail-auth's DKIM verifier and rmilter's SPF evaluator.

pub mod record;
#[cfg(test)]
mod tests;
pub mod walk;

pub use record::{AtName, Record, ReportUri};
pub use walk::{Applied, Discovery, DmarcCache, DmarcDns, Found, ResolverDns, Step};

use crate::verify::DmarcStatus;
use crate::verify::spf::SpfResult;
use mail_auth::dmarc::{Alignment, Policy};
use std::collections::HashMap;

/// A DKIM signature that takes part in DMARC: its `d=` and whether its
/// result was a temperror (otherwise a pass).
#[derive(Debug, Clone)]
pub struct DkimInput {
    pub domain: String,
    pub temperror: bool,
}

/// The result of one mechanism against the applied record.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Mechanism {
    /// Not applicable (no pass or temperror to align).
    None,
    Pass,
    Fail,
    TempError(String),
}

/// DMARC's outcome for one message.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub status: DmarcStatus,
    /// Why, for a result other than pass.
    pub reason: String,
    /// The policy that applies (`p`, `sp` or `np`, lowered by `t=y`).
    pub policy: Policy,
    pub dkim_aligned: bool,
    pub spf_aligned: bool,
    pub discovery: Discovery,
}

/// Evaluate DMARC for `author` with the eligible DKIM results and the SPF
/// result for `spf_domain` (the MAIL FROM domain, HELO for `<>`).
pub async fn evaluate(
    dns: &impl DmarcDns,
    author: &str,
    dkim: &[DkimInput],
    spf_domain: &str,
    spf: SpfResult,
) -> Outcome {
    let discovery = walk::discover(dns, author).await;
    let mut outcome = Outcome {
        status: DmarcStatus::None,
        reason: "no DMARC record".to_string(),
        policy: Policy::None,
        dkim_aligned: false,
        spf_aligned: false,
        discovery,
    };
    if let Some(e) = &outcome.discovery.error {
        outcome.status = DmarcStatus::TempError;
        outcome.reason = e.clone();
        return outcome;
    }
    let Some(applied) = outcome.discovery.applied.clone() else {
        // RFC 9989 §4.10 step 2: say so when only several records were found.
        let several: Vec<String> = outcome
            .discovery
            .steps
            .iter()
            .filter_map(|s| match s.found {
                Found::Several(n) => Some(format!("{n} DMARC records at _dmarc.{}", s.name)),
                _ => None,
            })
            .collect();
        if !several.is_empty() {
            outcome.reason = format!("{}: none used", several.join(", "));
        }
        return outcome;
    };
    let record = &applied.record;
    if !record.usable {
        outcome.reason = format!(
            "the DMARC record at _dmarc.{} has no valid p and no valid rua (RFC 9989 §4.10.1)",
            applied.domain
        );
        return outcome;
    }
    // RFC 9989 §4.7 "t": t=y applies the policy one level less strictly.
    outcome.policy = match (record.t, applied.policy) {
        (true, Policy::Reject) => Policy::Quarantine,
        (true, Policy::Quarantine) => Policy::None,
        (_, p) => p,
    };
    let author = outcome.discovery.author.clone();
    let mut align = Aligner {
        dns,
        author: &author,
        author_org: outcome.discovery.organizational.clone(),
        memo: HashMap::new(),
    };

    // RFC 9989 §4.4.2: SPF's identifier is the domain SPF evaluated.
    let spf_result = match spf {
        SpfResult::Pass | SpfResult::TempError => {
            match align
                .aligned(&spf_domain.to_ascii_lowercase(), record.aspf)
                .await
            {
                Ok(true) if spf == SpfResult::Pass => Mechanism::Pass,
                Ok(true) => Mechanism::TempError(format!("SPF temperror for {spf_domain}")),
                Ok(false) if spf == SpfResult::Pass => Mechanism::Fail,
                Ok(false) => Mechanism::None,
                Err(e) => Mechanism::TempError(e),
            }
        }
        _ => Mechanism::None,
    };
    outcome.spf_aligned = spf_result == Mechanism::Pass;

    // RFC 9989 §4.4.1: any passing DKIM signature whose d= aligns.
    let mut dkim_result = Mechanism::None;
    for sig in dkim {
        let aligned = align
            .aligned(&sig.domain.to_ascii_lowercase(), record.adkim)
            .await;
        let this = match aligned {
            Ok(true) if !sig.temperror => Mechanism::Pass,
            Ok(true) => Mechanism::TempError(format!("DKIM temperror for {}", sig.domain)),
            Ok(false) if !sig.temperror => Mechanism::Fail,
            Ok(false) => Mechanism::None,
            Err(e) => Mechanism::TempError(e),
        };
        dkim_result = best(dkim_result, this);
        if dkim_result == Mechanism::Pass {
            break;
        }
    }
    outcome.dkim_aligned = dkim_result == Mechanism::Pass;

    // RFC 9989 §5.3.6: an aligned pass passes; else a temporary failure of
    // an aligned mechanism leaves the result open; else fail.
    (outcome.status, outcome.reason) = match best(spf_result, dkim_result) {
        Mechanism::Pass => (DmarcStatus::Pass, String::new()),
        Mechanism::TempError(e) => (DmarcStatus::TempError, e),
        Mechanism::Fail | Mechanism::None => (DmarcStatus::Fail, "no aligned pass".to_string()),
    };
    outcome
}

/// The stronger of two mechanism results: pass, then temperror, then fail.
fn best(a: Mechanism, b: Mechanism) -> Mechanism {
    let rank = |m: &Mechanism| match m {
        Mechanism::Pass => 0,
        Mechanism::TempError(_) => 1,
        Mechanism::Fail => 2,
        Mechanism::None => 3,
    };
    if rank(&b) < rank(&a) { b } else { a }
}

/// Identifier alignment (RFC 9989 §4.10.2) with the Organizational Domains
/// already found, so each identifier is walked at most once per message.
struct Aligner<'a, D> {
    dns: &'a D,
    author: &'a str,
    author_org: Result<String, String>,
    memo: HashMap<String, Result<String, String>>,
}

impl<D: DmarcDns> Aligner<'_, D> {
    async fn aligned(&mut self, id: &str, mode: Alignment) -> Result<bool, String> {
        // Compared as A-labels, as the author domain is (the From gate).
        let id = id.trim_end_matches('.');
        let id = idna::domain_to_ascii(id).unwrap_or_else(|_| id.to_ascii_lowercase());
        let id = id.as_str();
        // Strict, and relaxed for the same name: a string comparison.
        if id == self.author {
            return Ok(true);
        }
        if mode == Alignment::Strict || id.is_empty() {
            return Ok(false);
        }
        let author_org = self.author_org.clone()?;
        // An Organizational Domain is the name itself or a parent of it:
        // outside the author's, never aligned (no lookups).
        if !within(id, &author_org) {
            return Ok(false);
        }
        let org = match self.memo.get(id) {
            Some(org) => org.clone(),
            None => {
                let steps = walk::tree_walk(self.dns, id).await;
                let org = walk::organizational(id, &steps);
                self.memo.insert(id.to_string(), org.clone());
                org
            }
        };
        Ok(org? == author_org)
    }
}

/// `name` is `parent` or a name below it.
pub(super) fn within(name: &str, parent: &str) -> bool {
    name == parent
        || name
            .strip_suffix(parent)
            .is_some_and(|head| head.ends_with('.'))
}
