//! [`SpfDns`] for production: the hickory resolver that mail-auth re-exports
//! (a clone of `MessageAuthenticator::resolver()`, so rmilter builds one
//! resolver, with its cache and timeouts from `[dns]`).
//!
//! Mapping (RELIABILITY §1.8, §3): NXDOMAIN is [`Lookup::NxDomain`]; NOERROR
//! without records of the asked type is [`Lookup::NoData`]; SERVFAIL,
//! REFUSED and other error codes, timeouts, I/O errors, truncated answers
//! that TCP could not complete and DNSSEC failures are [`Lookup::TempError`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use mail_auth::MessageAuthenticator;
use mail_auth::hickory_resolver::TokioResolver;
use mail_auth::hickory_resolver::net::{DnsError, NetError};
use mail_auth::hickory_resolver::proto::op::ResponseCode;
use mail_auth::hickory_resolver::proto::rr::{Name, RData};
use tracing::debug;

use super::{Lookup, SpfDns};

/// The production resolver adapter.
#[derive(Clone)]
pub struct HickoryDns {
    resolver: TokioResolver,
}

impl std::fmt::Debug for HickoryDns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HickoryDns").finish_non_exhaustive()
    }
}

impl HickoryDns {
    /// Wrap a resolver.
    pub fn new(resolver: TokioResolver) -> HickoryDns {
        HickoryDns { resolver }
    }

    /// Share the resolver (and its cache) of the authenticator that verifies DKIM, DMARC and ARC.
    pub fn from_authenticator(authenticator: &MessageAuthenticator) -> HickoryDns {
        HickoryDns::new(authenticator.resolver().clone())
    }
}

/// The wire name for `name`: labels taken as they are (no escape processing,
/// so a `\` from a macro expansion stays a byte), absolute so that no search
/// domain is tried. `None` for a name that cannot be encoded (empty, a label
/// over 63 octets, over 255 octets in all).
fn wire_name(name: &str) -> Option<Name> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() {
        return None;
    }
    let mut wire = Name::from_labels(name.split('.').map(str::as_bytes)).ok()?;
    wire.set_fqdn(true);
    Some(wire)
}

/// A name as its lower-cased labels joined with dots, without escapes.
fn raw_name(name: &Name) -> String {
    name.iter()
        .map(|label| String::from_utf8_lossy(label).to_ascii_lowercase())
        .collect::<Vec<_>>()
        .join(".")
}

/// Map a resolver error to the SPF view of it.
fn failure<T>(rtype: &'static str, name: &str, err: &NetError) -> Lookup<T> {
    match err {
        NetError::Dns(DnsError::NoRecordsFound(no))
            if no.response_code == ResponseCode::NXDomain =>
        {
            Lookup::NxDomain
        }
        NetError::Dns(DnsError::NoRecordsFound(_)) => Lookup::NoData,
        other => {
            debug!(rtype, name, error = %other, "spf dns lookup failed");
            Lookup::TempError(other.to_string().to_ascii_lowercase())
        }
    }
}

/// `Found` when there is at least one record, `NoData` otherwise (an answer
/// holding only a CNAME chain to nothing).
fn found<T>(items: Vec<T>) -> Lookup<Vec<T>> {
    if items.is_empty() {
        Lookup::NoData
    } else {
        Lookup::Found(items)
    }
}

impl SpfDns for HickoryDns {
    async fn txt(&self, name: &str) -> Lookup<Vec<Vec<u8>>> {
        let Some(wire) = wire_name(name) else {
            return Lookup::NxDomain;
        };
        match self.resolver.txt_lookup(wire).await {
            Ok(lookup) => found(
                lookup
                    .answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        // RFC 7208 §3.3: the strings of one TXT RR are joined without separator.
                        RData::TXT(txt) => Some(txt.txt_data.concat()),
                        _ => None,
                    })
                    .collect(),
            ),
            Err(e) => failure("txt", name, &e),
        }
    }

    async fn a(&self, name: &str) -> Lookup<Vec<Ipv4Addr>> {
        let Some(wire) = wire_name(name) else {
            return Lookup::NxDomain;
        };
        match self.resolver.ipv4_lookup(wire).await {
            Ok(lookup) => found(
                lookup
                    .answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::A(a) => Some(a.0),
                        _ => None,
                    })
                    .collect(),
            ),
            Err(e) => failure("a", name, &e),
        }
    }

    async fn aaaa(&self, name: &str) -> Lookup<Vec<Ipv6Addr>> {
        let Some(wire) = wire_name(name) else {
            return Lookup::NxDomain;
        };
        match self.resolver.ipv6_lookup(wire).await {
            Ok(lookup) => found(
                lookup
                    .answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::AAAA(aaaa) => Some(aaaa.0),
                        _ => None,
                    })
                    .collect(),
            ),
            Err(e) => failure("aaaa", name, &e),
        }
    }

    async fn mx(&self, name: &str) -> Lookup<Vec<(u16, String)>> {
        let Some(wire) = wire_name(name) else {
            return Lookup::NxDomain;
        };
        match self.resolver.mx_lookup(wire).await {
            Ok(lookup) => found(
                lookup
                    .answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        // The exchange's raw labels: `to_ascii` would escape
                        // octets such as ':' and the A lookup would miss.
                        RData::MX(mx) => Some((mx.preference, raw_name(&mx.exchange))),
                        _ => None,
                    })
                    .collect(),
            ),
            Err(e) => failure("mx", name, &e),
        }
    }

    async fn ptr(&self, ip: IpAddr) -> Lookup<Vec<String>> {
        match self.resolver.reverse_lookup(ip).await {
            Ok(lookup) => found(
                lookup
                    .answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        // to_ascii escapes odd bytes, so such a name never validates.
                        RData::PTR(ptr) => Some(ptr.to_lowercase().to_ascii()),
                        _ => None,
                    })
                    .collect(),
            ),
            Err(e) => failure("ptr", &ip.to_string(), &e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mail_auth::hickory_resolver::config::{
        ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts,
    };
    use mail_auth::hickory_resolver::net::runtime::TokioRuntimeProvider;
    use std::time::Duration;

    #[test]
    fn wire_names() {
        assert!(wire_name("").is_none());
        assert!(wire_name(".").is_none());
        assert!(wire_name(&format!("{}.example.com", "a".repeat(64))).is_none());
        let n = wire_name("foo:bar/baz.example.com");
        assert_eq!(n.map(|n| n.num_labels()), Some(3));
        let n = wire_name("macro%percent  space.example.com.");
        assert_eq!(n.map(|n| n.is_fqdn()), Some(true));
    }

    /// A resolver whose only server is a closed loopback port: every lookup is a
    /// temporary error, never "no record" (RELIABILITY N1, N7).
    #[tokio::test]
    async fn unreachable_server_is_temperror() {
        let mut ns = NameServerConfig::udp_and_tcp(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let mut udp = ConnectionConfig::udp();
        udp.port = 9;
        let mut tcp = ConnectionConfig::tcp();
        tcp.port = 9;
        ns.connections = vec![udp, tcp];
        let mut opts = ResolverOpts::default();
        opts.timeout = Duration::from_millis(300);
        opts.attempts = 1;
        opts.cache_size = 0;
        let resolver = TokioResolver::builder_with_config(
            ResolverConfig::from_name_servers(vec![ns]),
            TokioRuntimeProvider::default(),
        )
        .with_options(opts)
        .build();
        let Ok(resolver) = resolver else {
            panic!("resolver did not build");
        };
        let dns = HickoryDns::new(resolver);
        assert!(matches!(dns.txt("example.com").await, Lookup::TempError(_)));
        assert!(matches!(dns.a("example.com").await, Lookup::TempError(_)));
        assert!(matches!(
            dns.ptr(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))).await,
            Lookup::TempError(_)
        ));
    }
}
