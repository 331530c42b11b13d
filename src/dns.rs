//! The DNS resolver: hickory (through mail-auth's re-export, so one version
//! is built), configured from `[dns]`: the listed nameservers or the
//! system's /etc/resolv.conf, a per-query timeout, attempts and a cache.
//! [`zone`] serves a zone file on loopback for `rmilter explain --dns`.

pub mod zone;

use crate::config::DnsSettings;
use mail_auth::MessageAuthenticator;
use mail_auth::hickory_resolver::TokioResolver;
use mail_auth::hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts,
};
use mail_auth::hickory_resolver::net::NetError;
use mail_auth::hickory_resolver::proto::rr::{Name, RecordType};
use mail_auth::hickory_resolver::system_conf::read_system_conf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Build the authenticator (resolver plus cache) the verifiers use.
pub fn authenticator(settings: &DnsSettings) -> anyhow::Result<MessageAuthenticator> {
    let (config, mut opts) = if settings.nameservers.is_empty() {
        read_system_conf().map_err(|e| {
            anyhow::anyhow!("cannot read the system resolver configuration (/etc/resolv.conf): {e}")
        })?
    } else {
        let servers = settings
            .nameservers
            .iter()
            .map(|addr| {
                let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
                let mut udp = ConnectionConfig::udp();
                udp.port = addr.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = addr.port();
                ns.connections = vec![udp, tcp];
                ns
            })
            .collect();
        (
            ResolverConfig::from_name_servers(servers),
            ResolverOpts::default(),
        )
    };
    // `dns.timeout` bounds one query with all its tries, so that no message
    // waits longer than that for a resolver that stopped answering: each
    // try gets its share (hickory's timeout is per try).
    let tries = settings.attempts.max(1);
    opts.timeout = settings.timeout / tries as u32;
    // hickory counts retries after the first try; `dns.attempts` counts tries.
    opts.attempts = tries - 1;
    // Mail authentication asks the DNS, never /etc/hosts.
    opts.use_hosts_file = mail_auth::hickory_resolver::config::ResolveHosts::Never;
    opts.cache_size = settings.cache_size as u64;
    // Names are absolute: never try search domains.
    opts.ndots = 0;
    MessageAuthenticator::new(config, opts)
        .map_err(|e| anyhow::anyhow!("cannot build the DNS resolver: {e}"))
}

/// Whether the resolver itself answers. When a message's lookups time out,
/// one background probe asks the resolver for a fresh name under the root
/// (which any resolver answers at once with NXDOMAIN, whatever the queried
/// domains do, and no cache can answer for it); while it gets no answer,
/// verification answers temperror without waiting for lookups, and the
/// probe repeats every second until the resolver is back (RELIABILITY N7).
/// A domain with dead name servers cannot trip this: only the resolver's
/// own silence does.
#[derive(Default)]
pub struct ResolverHealth {
    down: AtomicBool,
    probing: AtomicBool,
}

impl ResolverHealth {
    /// Whether the resolver gives no answer at all within `within` to a
    /// query for a name nobody has asked before (a random label under the
    /// root, so neither rmilter's cache nor the resolver's can answer it).
    /// Any DNS answer, NXDOMAIN included, means the resolver works.
    pub async fn silent(resolver: &TokioResolver, within: Duration) -> bool {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos(),
        );
        let Ok(name) = Name::from_ascii(format!("rmilter-probe-{:016x}.", h.finish())) else {
            return false;
        };
        match tokio::time::timeout(within, resolver.lookup(name, RecordType::SOA)).await {
            Err(_) => true,
            Ok(Ok(_)) => false,
            // NXDOMAIN, NODATA, SERVFAIL, REFUSED: the resolver answered.
            Ok(Err(NetError::Dns(_))) => false,
            Ok(Err(_)) => true,
        }
    }

    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::SeqCst)
    }

    /// Start a probe unless one is running.
    pub fn check(self: &Arc<Self>, resolver: TokioResolver, timeout: Duration) {
        if self.probing.swap(true, Ordering::SeqCst) {
            return;
        }
        let health = self.clone();
        tokio::spawn(async move {
            loop {
                if !ResolverHealth::silent(&resolver, timeout).await {
                    if health.down.swap(false, Ordering::SeqCst) {
                        tracing::info!("DNS resolver answers again; verification resumes");
                    }
                    break;
                }
                if !health.down.swap(true, Ordering::SeqCst) {
                    tracing::warn!(
                        "DNS resolver unreachable: inbound mail gets temperror without lookups until it answers"
                    );
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            health.probing.store(false, Ordering::SeqCst);
        });
    }
}
