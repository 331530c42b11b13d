//! The DNS Tree Walk (RFC 9989 §4.10), DMARC Policy Discovery (§4.10.1) and
//! the Organizational Domain (§4.10.2), over the [`DmarcDns`] trait: the
//! production resolver ([`ResolverDns`], with the parsed-record cache) or an
//! in-memory zone in tests.
//!
//! A DNS failure is never read as "no record": the walk stops at the first
//! failed lookup and keeps it as a step, and whatever depended on that
//! lookup (the record applied, the Organizational Domain) is a temperror.

use super::record::{self, AtName, Record};
use crate::verify::spf::{HickoryDns, Lookup, SpfDns};
use mail_auth::dmarc::{Policy, Psd};
use mail_auth::hickory_resolver::TokioResolver;
use mail_auth::hickory_resolver::net::{DnsError, NetError};
use mail_auth::hickory_resolver::proto::rr::{Name, RData};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// DNS as DMARC needs it.
pub trait DmarcDns: Send + Sync {
    /// What `_dmarc.<name>` holds; `Err` is a temporary failure (SERVFAIL,
    /// REFUSED, timeout), with its reason.
    fn dmarc(&self, name: &str) -> impl Future<Output = Result<AtName, String>> + Send;
    /// Whether `domain` exists (RFC 9989 §3.2.13: NXDOMAIN means not).
    fn exists(&self, domain: &str) -> impl Future<Output = Result<bool, String>> + Send;
}

/// One lookup of a tree walk.
#[derive(Debug, Clone)]
pub struct Step {
    /// The name queried, without `_dmarc.`.
    pub name: String,
    pub found: Found,
}

#[derive(Debug, Clone)]
pub enum Found {
    Record(Arc<Record>),
    Nothing,
    /// Several DMARC records: none is used (§4.10 step 2).
    Several(usize),
    /// The lookup failed; the walk stopped here.
    TempError(String),
}

impl Step {
    /// One line for `rmilter explain`.
    pub fn describe(&self) -> String {
        let what = match &self.found {
            Found::Record(r) if r.usable => format!("record ({})", r.summary()),
            Found::Record(_) => "record without a usable policy".to_string(),
            Found::Nothing => "no record".to_string(),
            Found::Several(n) => format!("{n} DMARC records: none used (RFC 9989 §4.10)"),
            Found::TempError(e) => format!("lookup failed: {e}"),
        };
        format!("_dmarc.{}: {what}", self.name)
    }
}

/// The names a walk from `start` queries (RFC 9989 §4.10 steps 3-7): the
/// start, then at most 7 labels, then one label less each time. At most 8.
pub fn walk_names(start: &str) -> Vec<String> {
    let labels: Vec<&str> = start.split('.').filter(|l| !l.is_empty()).collect();
    let mut names = Vec::new();
    if labels.is_empty() {
        return names;
    }
    let mut count = labels.len();
    loop {
        names.push(labels[labels.len() - count..].join("."));
        if count == 1 {
            break;
        }
        // RFC 9989 §4.10 step 4: from 8 or more labels, go to 7 at once.
        count = if count >= 8 { 7 } else { count - 1 };
    }
    names
}

/// Walk up from `start` until a single record with `psd=y` or `psd=n`, the
/// last label, or the first failed lookup.
pub async fn tree_walk(dns: &impl DmarcDns, start: &str) -> Vec<Step> {
    let mut steps = Vec::new();
    for name in walk_names(start) {
        let found = match dns.dmarc(&name).await {
            Ok(AtName::One(r)) => Found::Record(r),
            Ok(AtName::Nothing) => Found::Nothing,
            Ok(AtName::Several(n)) => Found::Several(n),
            Err(e) => Found::TempError(e),
        };
        // RFC 9989 §4.10 steps 2 and 6: a single record with psd=y or psd=n
        // stops the walk.
        let stop = match &found {
            Found::Record(r) => matches!(r.psd, Psd::Yes | Psd::No),
            Found::TempError(_) => true,
            _ => false,
        };
        steps.push(Step { name, found });
        if stop {
            break;
        }
    }
    steps
}

/// The failure of a walk, if one of its lookups failed.
pub fn walk_error(steps: &[Step]) -> Option<String> {
    steps.iter().find_map(|s| match &s.found {
        Found::TempError(e) => Some(format!("DMARC lookup of _dmarc.{} failed: {e}", s.name)),
        _ => None,
    })
}

/// RFC 9989 §4.10.2: the Organizational Domain of the walk's start; `Err`
/// when a lookup of the walk failed.
pub fn organizational(start: &str, steps: &[Step]) -> Result<String, String> {
    if let Some(e) = walk_error(steps) {
        return Err(e);
    }
    for step in steps {
        if let Found::Record(r) = &step.found {
            match r.psd {
                // Step 1: psd=n names the Organizational Domain.
                Psd::No => return Ok(step.name.clone()),
                // Step 2: psd=y above the start: one label below it.
                Psd::Yes if step.name != start => return Ok(one_label_below(&step.name, start)),
                _ => {}
            }
        }
    }
    // Step 3: the record at the fewest labels; without one, the start.
    Ok(steps
        .iter()
        .rev()
        .find(|s| matches!(s.found, Found::Record(_)))
        .map_or_else(|| start.to_string(), |s| s.name.clone()))
}

/// The name one label below `parent` on the way to `start`.
fn one_label_below(parent: &str, start: &str) -> String {
    let keep = parent.split('.').count() + 1;
    let labels: Vec<&str> = start.split('.').collect();
    labels[labels.len().saturating_sub(keep)..].join(".")
}

/// The record applied to a message and where it was found.
#[derive(Debug, Clone)]
pub struct Applied {
    /// The name (without `_dmarc.`) holding the record.
    pub domain: String,
    pub record: Arc<Record>,
    /// Which tag gave the policy: "p", "sp" or "np".
    pub tag: &'static str,
    /// The policy of that tag (before `t=y`).
    pub policy: Policy,
}

/// DMARC Policy Discovery for one author domain.
#[derive(Debug, Clone)]
pub struct Discovery {
    pub author: String,
    /// The tree walk's lookups, author domain first.
    pub steps: Vec<Step>,
    /// The record applied; `None` with no error: DMARC does not apply.
    pub applied: Option<Applied>,
    /// The author domain's Organizational Domain (`Err`: a lookup failed).
    pub organizational: Result<String, String>,
    /// A failed lookup the applied record depends on: temperror.
    pub error: Option<String>,
}

/// RFC 9989 §4.10.1: the record applied to mail from `author` — the author
/// domain's own, else its Organizational Domain's, else its Public Suffix
/// Domain's — and the policy tag that applies.
pub async fn discover(dns: &impl DmarcDns, author: &str) -> Discovery {
    let author = author.trim_end_matches('.').to_ascii_lowercase();
    let steps = tree_walk(dns, &author).await;
    let organizational = organizational(&author, &steps);
    let mut discovery = Discovery {
        author: author.clone(),
        steps,
        applied: None,
        organizational,
        error: None,
    };
    let first = discovery.steps.first().map(|s| s.found.clone());
    let (domain, record) = match first {
        // The author domain's own record applies; the rest of the walk
        // only matters for relaxed alignment.
        Some(Found::Record(r)) => (author.clone(), r),
        Some(Found::TempError(e)) => {
            discovery.error = Some(format!("DMARC lookup of _dmarc.{author} failed: {e}"));
            return discovery;
        }
        _ => {
            let org = match &discovery.organizational {
                Ok(org) => org.clone(),
                // Any failed lookup above could hold the record that applies.
                Err(e) => {
                    discovery.error = Some(e.clone());
                    return discovery;
                }
            };
            let record_at = |name: &str| {
                discovery.steps.iter().find_map(|s| match &s.found {
                    Found::Record(r) if s.name == name => Some(r.clone()),
                    _ => None,
                })
            };
            // The Organizational Domain's record, else the PSD's (psd=y).
            let found = record_at(&org).map(|r| (org.clone(), r)).or_else(|| {
                discovery.steps.iter().find_map(|s| match &s.found {
                    Found::Record(r) if r.psd == Psd::Yes => Some((s.name.clone(), r.clone())),
                    _ => None,
                })
            });
            match found {
                Some(found) => found,
                None => return discovery,
            }
        }
    };
    let (tag, policy) = if domain == author {
        ("p", record.p)
    } else if record.np == record.sp {
        ("sp", record.sp)
    } else {
        // §4.10.1: sp for an existing author domain, np for one that does
        // not exist.
        match dns.exists(&author).await {
            Ok(true) => ("sp", record.sp),
            Ok(false) => ("np", record.np),
            Err(e) => {
                discovery.error = Some(format!("existence check of {author} failed: {e}"));
                return discovery;
            }
        }
    };
    discovery.applied = Some(Applied {
        domain,
        record,
        tag,
        policy,
    });
    discovery
}

/// Parsed `_dmarc` answers for a configuration's life, each until its TTL
/// ends (negative answers until their SOA's negative TTL, at most an hour;
/// failures are never stored). The resolver caches the raw answers; this
/// saves parsing the same record for every message.
pub struct DmarcCache {
    entries: moka::sync::Cache<Box<str>, (AtName, Instant)>,
    enabled: bool,
}

struct UntilValid;

impl moka::Expiry<Box<str>, (AtName, Instant)> for UntilValid {
    fn expire_after_create(
        &self,
        _: &Box<str>,
        value: &(AtName, Instant),
        now: Instant,
    ) -> Option<Duration> {
        Some(value.1.saturating_duration_since(now))
    }
}

impl DmarcCache {
    /// At most `capacity` names; 0 disables the cache.
    pub fn new(capacity: usize) -> DmarcCache {
        DmarcCache {
            entries: moka::sync::Cache::builder()
                .max_capacity(capacity as u64)
                .expire_after(UntilValid)
                .build(),
            enabled: capacity > 0,
        }
    }

    pub(crate) fn get(&self, name: &str) -> Option<AtName> {
        self.entries.get(name).map(|(v, _)| v)
    }

    pub(crate) fn insert(&self, name: &str, value: AtName, until: Instant) {
        if self.enabled && until > Instant::now() {
            self.entries.insert(name.into(), (value, until));
        }
    }
}

/// [`DmarcDns`] over the production resolver, through the cache.
pub struct ResolverDns<'a> {
    pub resolver: &'a TokioResolver,
    pub addresses: &'a HickoryDns,
    pub cache: &'a DmarcCache,
}

impl DmarcDns for ResolverDns<'_> {
    async fn dmarc(&self, name: &str) -> Result<AtName, String> {
        let owner = format!("_dmarc.{name}");
        if let Some(hit) = self.cache.get(&owner) {
            return Ok(hit);
        }
        let Ok(mut wire) = Name::from_labels(owner.split('.').map(str::as_bytes)) else {
            return Ok(AtName::Nothing);
        };
        wire.set_fqdn(true);
        match self.resolver.txt_lookup(wire).await {
            Ok(lookup) => {
                let txts: Vec<Vec<u8>> = lookup
                    .answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        // RFC 9989 §4.5: the strings of one TXT RR are joined.
                        RData::TXT(txt) => Some(txt.txt_data.concat()),
                        _ => None,
                    })
                    .collect();
                let found = record::at_name(&txts);
                self.cache
                    .insert(&owner, found.clone(), lookup.valid_until());
                Ok(found)
            }
            Err(NetError::Dns(DnsError::NoRecordsFound(no))) => {
                let ttl = u64::from(no.negative_ttl.unwrap_or(0)).min(3600);
                self.cache.insert(
                    &owner,
                    AtName::Nothing,
                    Instant::now() + Duration::from_secs(ttl),
                );
                Ok(AtName::Nothing)
            }
            Err(e) => Err(e.to_string().to_ascii_lowercase()),
        }
    }

    async fn exists(&self, domain: &str) -> Result<bool, String> {
        match self.addresses.a(domain).await {
            Lookup::Found(_) | Lookup::NoData => Ok(true),
            Lookup::NxDomain => Ok(false),
            Lookup::TempError(e) => Err(e),
        }
    }
}
