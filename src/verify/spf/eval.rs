//! The `check_host()` evaluator (RFC 7208 §4–§6): record lookup and
//! selection, mechanism matching, `include`/`redirect` recursion, the
//! processing limits of §4.6.4 and the overall time limit. `exp=` is
//! checked for syntax but never fetched or expanded: rmilter never shows an
//! explanation, and fetching one would only make attacker-chosen lookups.
//!
//! DNS failures follow RFC 7208 §5 and the OpenSPF suite: a temporary error
//! on a lookup the result depends on ends the check with `temperror`; a
//! temporary error while validating `ptr` names or on the PTR query itself
//! is skipped as §5.5 says.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::pin::Pin;
use std::time::{SystemTime, UNIX_EPOCH};

use thiserror::Error;
use tracing::debug;

use super::macros::{MAX_LABEL, MAX_NAME, MacroString, Vars};
use super::record::{self, Mechanism, ParseError, Qualifier, Record};
use super::{Lookup, MAX_REASON, SpfDns, SpfLimits, SpfOutcome, SpfResult};

/// RFC 7208 §4.6.4: more MX names than this is a permerror, more PTR names are ignored.
const MAX_NAMES_PER_LOOKUP: usize = 10;

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a check ended early with `permerror` or `temperror`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub(crate) enum Abort {
    #[error("syntax error in record of {domain}: {source}")]
    Syntax {
        domain: String,
        #[source]
        source: ParseError,
    },
    #[error("multiple spf records at {0}")]
    MultipleRecords(String),
    #[error("dns lookup limit of {0} exceeded")]
    DnsLimit(u32),
    #[error("void lookup limit of {0} exceeded")]
    VoidLimit(u32),
    #[error("mx of {0} has more than 10 names")]
    MxLimit(String),
    #[error("include of {0} found no spf record")]
    IncludeNone(String),
    #[error("redirect to {0} found no spf record")]
    RedirectNone(String),
    #[error("invalid include or redirect target")]
    BadTarget,
    #[error("dns error on {rtype} {name}: {detail}")]
    Dns {
        rtype: &'static str,
        name: String,
        detail: String,
    },
    #[error("time limit of {0} ms exceeded")]
    TimeLimit(u128),
}

impl Abort {
    fn result(&self) -> SpfResult {
        match self {
            // RFC 7208 §4.4, §5: DNS errors are temperror; §4.6.4: so is the time limit.
            Abort::Dns { .. } | Abort::TimeLimit(_) => SpfResult::TempError,
            _ => SpfResult::PermError,
        }
    }
}

/// The verdict of one (possibly nested) record evaluation.
#[derive(Debug)]
struct Verdict {
    result: SpfResult,
    reason: String,
}

/// The values of one identity that macros read (RFC 7208 §7.2).
#[derive(Debug, Clone)]
pub(crate) struct Identity {
    sender: String,
    local: String,
    sender_domain: String,
    helo: String,
    receiver: String,
}

impl Identity {
    /// `local` may be empty: RFC 7208 §4.3 substitutes "postmaster".
    pub(crate) fn new(local: &str, sender_domain: &str, helo: &str, receiver: &str) -> Identity {
        let local = if local.is_empty() {
            "postmaster"
        } else {
            local
        };
        Identity {
            sender: format!("{local}@{sender_domain}"),
            local: local.to_owned(),
            sender_domain: sender_domain.to_owned(),
            helo: helo.to_owned(),
            receiver: receiver.to_owned(),
        }
    }
}

/// The outcome for an identity without a valid domain (RFC 7208 §4.3: none).
pub(crate) fn invalid_identity(reason: &str) -> SpfOutcome {
    SpfOutcome {
        result: SpfResult::None,
        domain: String::new(),
        reason: clean_reason(reason),
        dns_queries: 0,
        void_lookups: 0,
    }
}

/// Run `check_host()` for a validated `domain` under `limits`.
pub(crate) async fn run(
    dns: &impl SpfDns,
    limits: &SpfLimits,
    ip: IpAddr,
    domain: String,
    identity: &Identity,
) -> SpfOutcome {
    let started = tokio::time::Instant::now();
    let deadline = started.checked_add(limits.time);
    let mut ev = Evaluator {
        dns,
        limits,
        ip: canonical_ip(ip),
        identity,
        timestamp: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        dns_queries: 0,
        void_lookups: 0,
    };
    let verdict = match deadline {
        Some(d) => match tokio::time::timeout_at(d, ev.check(domain.clone(), false)).await {
            Ok(v) => v,
            // RFC 7208 §4.6.4: exceeding the time limit SHOULD give temperror (RELIABILITY P5).
            Err(_) => Err(Abort::TimeLimit(limits.time.as_millis())),
        },
        None => ev.check(domain.clone(), false).await,
    };
    // RFC 7208 §6.2: the explanation only serves a rejection text; rmilter
    // writes none, so exp= is never fetched (no attacker-chosen lookups).
    let (result, reason) = match verdict {
        Ok(v) => (v.result, v.reason),
        Err(abort) => (abort.result(), abort.to_string()),
    };
    let outcome = SpfOutcome {
        result,
        domain,
        reason: clean_reason(&reason),
        dns_queries: ev.dns_queries,
        void_lookups: ev.void_lookups,
    };
    debug!(
        domain = %outcome.domain,
        ip = %ip,
        result = %outcome.result,
        reason = %outcome.reason,
        dns_queries = outcome.dns_queries,
        void_lookups = outcome.void_lookups,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "spf check_host done"
    );
    outcome
}

/// RFC 7208 §5 (and suite `ip4-mapped-ip6`, `cidr6-ip4`): an IPv4-mapped IPv6
/// address is an IPv4 client.
fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        v4 => v4,
    }
}

struct Evaluator<'a, D> {
    dns: &'a D,
    limits: &'a SpfLimits,
    ip: IpAddr,
    identity: &'a Identity,
    timestamp: u64,
    dns_queries: u32,
    void_lookups: u32,
}

/// Addresses of one name, of the client's family.
enum Addresses {
    V4(Vec<Ipv4Addr>),
    V6(Vec<Ipv6Addr>),
}

impl<D: SpfDns> Evaluator<'_, D> {
    fn vars<'v>(&'v self, domain: &'v str, validated: Option<&'v str>) -> Vars<'v> {
        Vars {
            sender: &self.identity.sender,
            local: &self.identity.local,
            sender_domain: &self.identity.sender_domain,
            domain,
            ip: self.ip,
            helo: &self.identity.helo,
            receiver: &self.identity.receiver,
            validated,
            timestamp: self.timestamp,
        }
    }

    /// RFC 7208 §4.6.4: count one DNS-querying term; the 11th is a permerror.
    fn count_term(&mut self) -> Result<(), Abort> {
        self.dns_queries = self.dns_queries.saturating_add(1);
        if self.dns_queries > self.limits.dns_mechanisms {
            return Err(Abort::DnsLimit(self.limits.dns_mechanisms));
        }
        Ok(())
    }

    /// RFC 7208 §4.6.4: count one void lookup; exceeding the limit is a permerror.
    fn count_void(&mut self) -> Result<(), Abort> {
        self.void_lookups = self.void_lookups.saturating_add(1);
        if self.void_lookups > self.limits.void_lookups {
            return Err(Abort::VoidLimit(self.limits.void_lookups));
        }
        Ok(())
    }

    /// Evaluate the record of `domain`; `as_term` is set for include/redirect targets.
    fn check(&mut self, domain: String, as_term: bool) -> BoxFuture<'_, Result<Verdict, Abort>> {
        Box::pin(self.check_record(domain, as_term))
    }

    async fn check_record(&mut self, domain: String, as_term: bool) -> Result<Verdict, Abort> {
        let Some(record) = self.lookup_record(&domain, as_term).await? else {
            return Ok(Verdict {
                result: SpfResult::None,
                reason: format!("no spf record at {domain}"),
            });
        };
        // RFC 7208 §4.6.2: mechanisms are evaluated in order; the first match decides.
        for directive in &record.directives {
            if directive.mechanism.queries_dns() {
                // RFC 7208 §4.6.4: include, a, mx, ptr and exists count toward the limit.
                self.count_term()?;
            }
            if self.matches(&directive.mechanism, &domain).await? {
                let result = match directive.qualifier {
                    Qualifier::Pass => SpfResult::Pass,
                    Qualifier::Fail => SpfResult::Fail,
                    Qualifier::SoftFail => SpfResult::SoftFail,
                    Qualifier::Neutral => SpfResult::Neutral,
                };
                return Ok(Verdict {
                    result,
                    reason: format!("{domain} matched {}", directive.text),
                });
            }
        }
        // RFC 7208 §6.1: redirect applies only when no mechanism matched
        // (it is ignored when the record has "all").
        if let Some(spec) = &record.redirect {
            // RFC 7208 §4.6.4: redirect counts toward the limit.
            self.count_term()?;
            // RFC 7208 §6.1: a malformed target is a permerror.
            let target = self
                .expand_target(spec, &domain)
                .await?
                .ok_or(Abort::BadTarget)?;
            let verdict = self.check(target.clone(), true).await?;
            if verdict.result == SpfResult::None {
                // RFC 7208 §6.1: no record at the redirect target is a permerror.
                return Err(Abort::RedirectNone(target));
            }
            return Ok(verdict);
        }
        // RFC 7208 §4.7: no match and no redirect gives neutral.
        Ok(Verdict {
            result: SpfResult::Neutral,
            reason: format!("{domain} no mechanism matched"),
        })
    }

    /// RFC 7208 §4.4, §4.5: fetch TXT and select the one v=spf1 record.
    async fn lookup_record(
        &mut self,
        domain: &str,
        as_term: bool,
    ) -> Result<Option<Record>, Abort> {
        let rrs = match self.dns.txt(domain).await {
            Lookup::Found(rrs) => rrs,
            // RFC 7208 §4.4: a temporary DNS error gives temperror.
            Lookup::TempError(detail) => {
                return Err(Abort::Dns {
                    rtype: "txt",
                    name: domain.to_owned(),
                    detail,
                });
            }
            // RFC 7208 §4.3, §4.5: NXDOMAIN or no records gives none.
            Lookup::NxDomain | Lookup::NoData => {
                if as_term {
                    // RFC 7208 §4.6.4: the include/redirect term's lookup was void.
                    self.count_void()?;
                }
                return Ok(None);
            }
        };
        // RFC 7208 §4.5: records not starting with "v=spf1" are discarded; the
        // SPF RR type is never consulted (§3.1). One record left is used,
        // several are a permerror, none gives none.
        let mut spf = rrs.iter().filter(|t| record::is_spf_record(t));
        let first = spf.next();
        if spf.next().is_some() {
            return Err(Abort::MultipleRecords(domain.to_owned()));
        }
        match first {
            None => {
                if as_term {
                    self.count_void()?;
                }
                Ok(None)
            }
            // RFC 7208 §4.6: a syntax error anywhere in the record is a permerror.
            Some(txt) => record::parse(txt)
                .map(Some)
                .map_err(|source| Abort::Syntax {
                    domain: domain.to_owned(),
                    source,
                }),
        }
    }

    async fn matches(&mut self, mechanism: &Mechanism, domain: &str) -> Result<bool, Abort> {
        match mechanism {
            // RFC 7208 §5.1.
            Mechanism::All => Ok(true),
            // RFC 7208 §5.2: include matches on pass, not on fail/softfail/neutral;
            // temperror and permerror propagate; none becomes permerror.
            Mechanism::Include(spec) => {
                let target = self
                    .expand_target(spec, domain)
                    .await?
                    .ok_or(Abort::BadTarget)?;
                let verdict = self.check(target.clone(), true).await?;
                match verdict.result {
                    SpfResult::Pass => Ok(true),
                    SpfResult::None => Err(Abort::IncludeNone(target)),
                    _ => Ok(false),
                }
            }
            // RFC 7208 §5.3.
            Mechanism::A {
                domain: spec,
                cidr4,
                cidr6,
            } => {
                let Some(target) = self.target(spec.as_ref(), domain).await? else {
                    return Ok(false);
                };
                match self.addresses(&target).await {
                    Lookup::Found(addrs) => Ok(self.in_addresses(&addrs, *cidr4, *cidr6)),
                    Lookup::NxDomain | Lookup::NoData => {
                        self.count_void()?;
                        Ok(false)
                    }
                    Lookup::TempError(detail) => Err(Abort::Dns {
                        rtype: self.address_rtype(),
                        name: target,
                        detail,
                    }),
                }
            }
            // RFC 7208 §5.4.
            Mechanism::Mx {
                domain: spec,
                cidr4,
                cidr6,
            } => {
                let Some(target) = self.target(spec.as_ref(), domain).await? else {
                    return Ok(false);
                };
                self.mx_matches(target, *cidr4, *cidr6).await
            }
            // RFC 7208 §5.5.
            Mechanism::Ptr(spec) => {
                let Some(target) = self.target(spec.as_ref(), domain).await? else {
                    return Ok(false);
                };
                self.ptr_matches(&target).await
            }
            // RFC 7208 §5.6.
            Mechanism::Ip4 { network, prefix } => Ok(match self.ip {
                IpAddr::V4(ip) => in_prefix4(ip, *network, *prefix),
                IpAddr::V6(_) => false,
            }),
            // RFC 7208 §5.6; §5: an IPv4 client (mapped or not) never matches ip6.
            Mechanism::Ip6 { network, prefix } => Ok(match self.ip {
                IpAddr::V6(ip) => in_prefix6(ip, *network, *prefix),
                IpAddr::V4(_) => false,
            }),
            // RFC 7208 §5.7: an A query whatever the client's family.
            Mechanism::Exists(spec) => {
                let Some(target) = self.expand_target(spec, domain).await? else {
                    return Ok(false);
                };
                match self.dns.a(&target).await {
                    Lookup::Found(addrs) if !addrs.is_empty() => Ok(true),
                    Lookup::Found(_) | Lookup::NxDomain | Lookup::NoData => {
                        self.count_void()?;
                        Ok(false)
                    }
                    Lookup::TempError(detail) => Err(Abort::Dns {
                        rtype: "a",
                        name: target,
                        detail,
                    }),
                }
            }
        }
    }

    async fn mx_matches(&mut self, target: String, cidr4: u8, cidr6: u8) -> Result<bool, Abort> {
        let names = match self.dns.mx(&target).await {
            Lookup::Found(names) if !names.is_empty() => names,
            Lookup::Found(_) | Lookup::NxDomain | Lookup::NoData => {
                // RFC 7208 §5.4: no MX records means no match (never an implicit A).
                self.count_void()?;
                return Ok(false);
            }
            Lookup::TempError(detail) => {
                return Err(Abort::Dns {
                    rtype: "mx",
                    name: target,
                    detail,
                });
            }
        };
        // RFC 7208 §4.6.4: more than 10 MX names is a permerror (suite mx-limit).
        if names.len() > MAX_NAMES_PER_LOOKUP {
            return Err(Abort::MxLimit(target));
        }
        let mut deferred = None;
        for (_, host) in &names {
            let host = host_name(host);
            // RFC 7505: a null MX (".") has no addresses to match.
            if host.is_empty() {
                continue;
            }
            match self.addresses(&host).await {
                Lookup::Found(addrs) => {
                    if self.in_addresses(&addrs, cidr4, cidr6) {
                        return Ok(true);
                    }
                }
                Lookup::NxDomain | Lookup::NoData => {}
                Lookup::TempError(detail) => {
                    // Another MX host may still match; otherwise this is a temperror (RFC 7208 §5).
                    deferred.get_or_insert(Abort::Dns {
                        rtype: self.address_rtype(),
                        name: host,
                        detail,
                    });
                }
            }
        }
        match deferred {
            Some(abort) => Err(abort),
            None => Ok(false),
        }
    }

    async fn ptr_matches(&mut self, target: &str) -> Result<bool, Abort> {
        let names = match self.dns.ptr(self.ip).await {
            Lookup::Found(names) if !names.is_empty() => names,
            Lookup::Found(_) | Lookup::NxDomain | Lookup::NoData => {
                self.count_void()?;
                return Ok(false);
            }
            // RFC 7208 §5.5: a DNS error on the PTR query means no match.
            Lookup::TempError(detail) => {
                debug!(ip = %self.ip, error = %detail, "spf ptr lookup failed, no match");
                return Ok(false);
            }
        };
        // RFC 7208 §4.6.4: only the first 10 PTR names are used (suite ptr-limit).
        for name in names.iter().take(MAX_NAMES_PER_LOOKUP) {
            let name = host_name(name);
            // RFC 7208 §5.5: a validated name matches when it is the target or ends in
            // ".target"; checking the suffix first saves the forward lookups of names
            // that could not match anyway.
            if !is_same_or_subdomain(&name, target) {
                continue;
            }
            if self.validates(&name).await {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// RFC 7208 §5.5: a PTR name is validated when its forward lookup holds the
    /// client address; DNS errors skip the name.
    async fn validates(&self, name: &str) -> bool {
        match self.addresses(name).await {
            Lookup::Found(Addresses::V4(addrs)) => {
                matches!(self.ip, IpAddr::V4(ip) if addrs.contains(&ip))
            }
            Lookup::Found(Addresses::V6(addrs)) => {
                matches!(self.ip, IpAddr::V6(ip) if addrs.contains(&ip))
            }
            _ => false,
        }
    }

    /// RFC 7208 §7.3 `%{p}`: the validated name of the client, preferring
    /// `domain` itself, then a subdomain of it, then any. `None` means "unknown".
    async fn validated_name(&self, domain: &str) -> Option<String> {
        let Lookup::Found(names) = self.dns.ptr(self.ip).await else {
            return None;
        };
        let mut names: Vec<String> = names
            .iter()
            .take(MAX_NAMES_PER_LOOKUP)
            .map(|n| host_name(n))
            .filter(|n| !n.is_empty())
            .collect();
        names.sort_by_key(|n| {
            if n == domain {
                0
            } else if is_same_or_subdomain(n, domain) {
                1
            } else {
                2
            }
        });
        for name in names {
            if self.validates(&name).await {
                return Some(name);
            }
        }
        None
    }

    /// The target name of a mechanism: the expanded domain-spec or the current domain.
    async fn target(
        &mut self,
        spec: Option<&MacroString>,
        domain: &str,
    ) -> Result<Option<String>, Abort> {
        match spec {
            Some(spec) => self.expand_target(spec, domain).await,
            None => Ok(Some(domain.to_owned())),
        }
    }

    /// Expand a domain-spec into a name to query; `None` when the result is not a
    /// usable name (then a/mx/ptr/exists do not match, as for a name that does not
    /// exist: suite invalid-domain-empty-label, invalid-domain-long).
    async fn expand_target(
        &mut self,
        spec: &MacroString,
        domain: &str,
    ) -> Result<Option<String>, Abort> {
        let validated = if spec.uses_validated() {
            // RFC 7208 §4.6.4: a %{p} expansion's PTR query counts toward the limit.
            self.count_term()?;
            self.validated_name(domain).await
        } else {
            None
        };
        let expanded = spec.expand_domain(&self.vars(domain, validated.as_deref()));
        Ok(query_name(&expanded))
    }

    fn address_rtype(&self) -> &'static str {
        match self.ip {
            IpAddr::V4(_) => "a",
            IpAddr::V6(_) => "aaaa",
        }
    }

    /// RFC 7208 §5.3: A for an IPv4 client, AAAA for an IPv6 one.
    async fn addresses(&self, name: &str) -> Lookup<Addresses> {
        match self.ip {
            IpAddr::V4(_) => match self.dns.a(name).await {
                Lookup::Found(v) if v.is_empty() => Lookup::NoData,
                Lookup::Found(v) => Lookup::Found(Addresses::V4(v)),
                Lookup::NxDomain => Lookup::NxDomain,
                Lookup::NoData => Lookup::NoData,
                Lookup::TempError(e) => Lookup::TempError(e),
            },
            IpAddr::V6(_) => match self.dns.aaaa(name).await {
                Lookup::Found(v) if v.is_empty() => Lookup::NoData,
                Lookup::Found(v) => Lookup::Found(Addresses::V6(v)),
                Lookup::NxDomain => Lookup::NxDomain,
                Lookup::NoData => Lookup::NoData,
                Lookup::TempError(e) => Lookup::TempError(e),
            },
        }
    }

    fn in_addresses(&self, addrs: &Addresses, cidr4: u8, cidr6: u8) -> bool {
        match (self.ip, addrs) {
            (IpAddr::V4(ip), Addresses::V4(list)) => list.iter().any(|a| in_prefix4(ip, *a, cidr4)),
            (IpAddr::V6(ip), Addresses::V6(list)) => list.iter().any(|a| in_prefix6(ip, *a, cidr6)),
            _ => false,
        }
    }
}

/// A host name from DNS (MX exchange, PTR target) without its root dot, lower case.
fn host_name(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

/// Whether `name` is `domain` or ends in `.domain` (ASCII case-insensitive;
/// compared as bytes, so a non-ASCII name from DNS cannot split a character).
fn is_same_or_subdomain(name: &str, domain: &str) -> bool {
    let (name, domain) = (name.as_bytes(), domain.as_bytes());
    let Some(start) = name.len().checked_sub(domain.len()) else {
        return false;
    };
    name.get(start..)
        .is_some_and(|tail| tail.eq_ignore_ascii_case(domain))
        && (start == 0 || name.get(start - 1) == Some(&b'.'))
}

/// Turn an expansion into a name to query: trailing dot removed (suite
/// trailing-dot-domain), shortened from the left to 253 octets (RFC 7208
/// §7.3), and checked for empty or over-long labels (RFC 1035 §2.3.4).
pub(crate) fn query_name(expanded: &str) -> Option<String> {
    let mut name = expanded.strip_suffix('.').unwrap_or(expanded);
    // RFC 7208 §7.3: remove whole labels from the left until at most 253 octets remain.
    while name.len() > MAX_NAME {
        let (_, rest) = name.split_once('.')?;
        name = rest;
    }
    if name.is_empty() {
        return None;
    }
    let printable = name.bytes().all(|b| (0x20..=0x7e).contains(&b));
    let labels_ok = name
        .split('.')
        .all(|l| !l.is_empty() && l.len() <= MAX_LABEL);
    (printable && labels_ok).then(|| name.to_ascii_lowercase())
}

fn in_prefix4(ip: Ipv4Addr, network: Ipv4Addr, prefix: u8) -> bool {
    let mask = u32::MAX
        .checked_shl(32 - u32::from(prefix.min(32)))
        .unwrap_or(0);
    u32::from(ip) & mask == u32::from(network) & mask
}

fn in_prefix6(ip: Ipv6Addr, network: Ipv6Addr, prefix: u8) -> bool {
    let mask = u128::MAX
        .checked_shl(128 - u32::from(prefix.min(128)))
        .unwrap_or(0);
    u128::from(ip) & mask == u128::from(network) & mask
}

/// Reasons are printable ASCII, lower case, bounded, without the characters
/// that would end or escape an A-R comment.
fn clean_reason(reason: &str) -> String {
    reason
        .chars()
        .map(|c| match c {
            '(' | ')' | '\\' => '?',
            ' '..='~' => c.to_ascii_lowercase(),
            _ => '?',
        })
        .take(MAX_REASON)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        let ip = Ipv4Addr::new(192, 0, 2, 77);
        assert!(in_prefix4(ip, Ipv4Addr::new(192, 0, 2, 0), 24));
        assert!(!in_prefix4(ip, Ipv4Addr::new(192, 0, 3, 0), 24));
        assert!(in_prefix4(ip, Ipv4Addr::new(1, 1, 1, 1), 0));
        assert!(in_prefix4(ip, ip, 32));
        assert!(!in_prefix4(ip, Ipv4Addr::new(192, 0, 2, 76), 32));
        let ip6: Ipv6Addr = "2001:db8::1".parse().unwrap_or(Ipv6Addr::UNSPECIFIED);
        assert!(in_prefix6(
            ip6,
            "2001:db8::".parse().unwrap_or(Ipv6Addr::LOCALHOST),
            32
        ));
        assert!(in_prefix6(ip6, Ipv6Addr::LOCALHOST, 0));
        assert!(!in_prefix6(ip6, Ipv6Addr::LOCALHOST, 128));
    }

    #[test]
    fn mapped_addresses_are_ipv4() {
        let mapped: IpAddr = "::ffff:1.2.3.4"
            .parse()
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        assert_eq!(canonical_ip(mapped), IpAddr::V4(Ipv4Addr::new(1, 2, 3, 4)));
        let v6: IpAddr = "2001:db8::1"
            .parse()
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        assert_eq!(canonical_ip(v6), v6);
    }

    #[test]
    fn query_names() {
        assert_eq!(query_name("Example.COM.").as_deref(), Some("example.com"));
        assert_eq!(query_name("mail.example...com"), None);
        assert_eq!(query_name(""), None);
        assert_eq!(query_name("."), None);
        assert_eq!(query_name(&format!("{}.bar", "%25".repeat(22))), None);
        // RFC 7208 §7.3: 258 octets lose their first label.
        let o = "somewhat.long.exp.example.com";
        let long = format!("foobar.{}example.com", format!("{o}.").repeat(8));
        assert_eq!(long.len(), 258);
        let expected = format!("{}example.com", format!("{o}.").repeat(8));
        assert_eq!(query_name(&long).as_deref(), Some(expected.as_str()));
        // One huge label cannot be shortened.
        assert_eq!(query_name(&"a".repeat(300)), None);
        assert_eq!(
            query_name("macro%percent  space%20url-space.example.com").as_deref(),
            Some("macro%percent  space%20url-space.example.com")
        );
        assert_eq!(query_name("a\u{e9}.example.com"), None);
    }

    #[test]
    fn subdomains() {
        assert!(is_same_or_subdomain("example.com", "example.com"));
        assert!(is_same_or_subdomain("mail.Example.com", "example.COM"));
        assert!(!is_same_or_subdomain("badexample.com", "example.com"));
        assert!(!is_same_or_subdomain("com", "example.com"));
        assert!(!is_same_or_subdomain("\u{e9}.com", "m"));
        assert!(is_same_or_subdomain("\u{e9}.com", "com"));
    }

    #[test]
    fn reasons_are_safe() {
        let r = clean_reason("Matched A:(evil)\\\r\n\u{e9}");
        assert_eq!(r, "matched a:?evil?????");
        assert!(clean_reason(&"x".repeat(1000)).len() <= MAX_REASON);
    }
}
