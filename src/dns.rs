//! The DNS resolver: hickory (through mail-auth's re-export, so one version
//! is built), configured from `[dns]`: the listed nameservers or the
//! system's /etc/resolv.conf, a per-query timeout, attempts and a cache.

use crate::config::DnsSettings;
use mail_auth::MessageAuthenticator;
use mail_auth::hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts,
};
use mail_auth::hickory_resolver::system_conf::read_system_conf;

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
    opts.timeout = settings.timeout;
    // hickory counts retries after the first try; `dns.attempts` counts tries.
    opts.attempts = settings.attempts.saturating_sub(1);
    // Mail authentication asks the DNS, never /etc/hosts.
    opts.use_hosts_file = mail_auth::hickory_resolver::config::ResolveHosts::Never;
    opts.cache_size = settings.cache_size as u64;
    // Names are absolute: never try search domains.
    opts.ndots = 0;
    MessageAuthenticator::new(config, opts)
        .map_err(|e| anyhow::anyhow!("cannot build the DNS resolver: {e}"))
}
