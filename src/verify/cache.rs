//! A cache of parsed TXT records (DKIM keys and ARC-signer records) shared
//! by every message a configuration verifies. DMARC records, which rmilter
//! parses itself, have their own cache (`dmarc::DmarcCache`).
//!
//! The resolver already caches answers, but mail-auth parses a record each
//! time it is handed one: without this cache every inbound message
//! re-decodes the same base64 public key and re-parses the same DMARC
//! record. mail-auth defines the cache interface ([`ResolverCache`],
//! [`DnsCache`]) and computes each entry's expiry from the answer's TTL
//! (negative answers from the SOA, capped; resolver failures are never
//! stored). The store behind it is moka, the bounded concurrent cache the
//! resolver already uses, with a per-entry expiry.

use mail_auth::dns::{DnsCache, NoCache, ResolverCache, TxtRecord};
use moka::Expiry;
use std::borrow::Borrow;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// Bounded map from a fully qualified name to a parsed TXT record.
pub struct TxtCache {
    entries: moka::sync::Cache<Box<str>, (TxtRecord, Instant)>,
    enabled: bool,
}

/// Each entry lives until the instant mail-auth derived from its TTL.
struct UntilValid;

impl Expiry<Box<str>, (TxtRecord, Instant)> for UntilValid {
    fn expire_after_create(
        &self,
        _: &Box<str>,
        value: &(TxtRecord, Instant),
        now: Instant,
    ) -> Option<Duration> {
        Some(value.1.saturating_duration_since(now))
    }
}

impl TxtCache {
    /// A cache of at most `capacity` names; 0 disables it.
    pub fn new(capacity: usize) -> Self {
        TxtCache {
            entries: moka::sync::Cache::builder()
                .max_capacity(capacity as u64)
                .expire_after(UntilValid)
                .build(),
            enabled: capacity > 0,
        }
    }

    /// Names currently held.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.run_pending_tasks();
        self.entries.entry_count() as usize
    }
}

impl ResolverCache<Box<str>, TxtRecord> for TxtCache {
    fn get<Q>(&self, name: &Q) -> Option<TxtRecord>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        // moka never returns an entry past its expiry (UntilValid).
        self.entries.get(name).map(|(record, _)| record)
    }

    fn remove<Q>(&self, name: &Q) -> Option<TxtRecord>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.entries.remove(name).map(|(record, _)| record)
    }

    fn insert(&self, name: Box<str>, record: TxtRecord, valid_until: Instant) {
        if self.enabled && valid_until > Instant::now() {
            self.entries.insert(name, (record, valid_until));
        }
    }
}

/// The caches handed to mail-auth's verifiers: parsed TXT records only.
/// A, AAAA, MX and PTR answers need no parsing and are left to the
/// resolver's own cache (SPF, which rmilter evaluates itself, uses it).
pub struct Caches {
    pub txt: TxtCache,
}

impl Caches {
    pub fn new(capacity: usize) -> Self {
        Caches {
            txt: TxtCache::new(capacity),
        }
    }
}

impl DnsCache for Caches {
    type Txt = TxtCache;
    type Mx = NoCache;
    type Ipv4 = NoCache;
    type Ipv6 = NoCache;
    type Ptr = NoCache;

    fn txt(&self) -> Option<&TxtCache> {
        Some(&self.txt)
    }
    fn mx(&self) -> Option<&NoCache> {
        None
    }
    fn ipv4(&self) -> Option<&NoCache> {
        None
    }
    fn ipv6(&self) -> Option<&NoCache> {
        None
    }
    fn ptr(&self) -> Option<&NoCache> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mail_auth::dmarc::DmarcRecord;
    use mail_auth::dns::TxtRecordParser;
    use std::sync::Arc;
    use std::time::Duration;

    fn record(policy: &str) -> TxtRecord {
        let text = format!("v=DMARC1; p={policy}");
        TxtRecord::Dmarc(Arc::new(DmarcRecord::parse(text.as_bytes()).unwrap()))
    }

    fn policy(r: &TxtRecord) -> String {
        match r {
            TxtRecord::Dmarc(d) => format!("{d:?}"),
            _ => "not a DMARC record".to_string(),
        }
    }

    #[test]
    fn hit_until_expiry_then_miss() {
        let cache = TxtCache::new(10);
        let soon = Instant::now() + Duration::from_millis(50);
        cache.insert("_dmarc.a.test.".into(), record("reject"), soon);
        let hit = cache.get("_dmarc.a.test.").expect("cached");
        assert_eq!(policy(&hit), policy(&record("reject")));
        assert_ne!(policy(&hit), policy(&record("none")));
        assert!(cache.get("_dmarc.b.test.").is_none());
        std::thread::sleep(Duration::from_millis(80));
        assert!(
            cache.get("_dmarc.a.test.").is_none(),
            "expired entry served"
        );
    }

    #[test]
    fn bounded_by_capacity() {
        let cache = TxtCache::new(3);
        let base = Instant::now() + Duration::from_secs(60);
        for i in 0..50u64 {
            cache.insert(
                format!("n{i}.test.").into(),
                record("none"),
                base + Duration::from_secs(i),
            );
        }
        assert!(cache.len() <= 3, "{} entries held", cache.len());
    }

    #[test]
    fn zero_capacity_stores_nothing() {
        let cache = TxtCache::new(0);
        cache.insert(
            "x.test.".into(),
            record("none"),
            Instant::now() + Duration::from_secs(60),
        );
        assert!(cache.get("x.test.").is_none());
    }
}
