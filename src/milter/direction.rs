//! Which way a message goes: outbound (signed) when any enabled rule of
//! `[outbound]` matches, else inbound (verified). One function decides, for
//! the milter session and for `rmilter explain`; [`Direction::describe`]
//! says in words which rule matched or why none did.

use crate::config::OutboundRules;
use std::net::IpAddr;

/// Which way a message goes, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Outbound: SASL-authenticated client.
    Authenticated,
    /// Outbound: client address in `outbound.networks`.
    InternalNetwork,
    /// Outbound: `{daemon_name}` listed in `outbound.daemon_names`.
    DaemonName,
    /// Outbound: local submission (sendmail(1) through non_smtpd_milters).
    LocalSubmission,
    /// Everything else.
    Inbound,
}

/// What the direction rules look at, as the MTA described the client.
#[derive(Debug, Clone, Default)]
pub struct ClientFacts<'a> {
    /// The SASL login name (`{auth_authen}`), when the client logged in.
    pub auth_user: Option<&'a str>,
    /// Postfix's simulated connection for non-SMTP mail (sendmail, pickup).
    pub local_submission: bool,
    /// The client address (IPv4-mapped IPv6 addresses are taken as IPv4).
    pub ip: Option<IpAddr>,
    /// `{daemon_name}`.
    pub daemon_name: Option<&'a str>,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Authenticated => "authenticated",
            Direction::InternalNetwork => "internal-network",
            Direction::DaemonName => "daemon-name",
            Direction::LocalSubmission => "local-submission",
            Direction::Inbound => "inbound",
        }
    }

    pub fn is_outbound(self) -> bool {
        self != Direction::Inbound
    }

    /// The direction of a message from the client `facts` describes: the
    /// first enabled rule that matches, in the order authenticated, local
    /// submission, networks, daemon name.
    pub fn decide(rules: &OutboundRules, facts: &ClientFacts<'_>) -> Direction {
        if rules.authenticated && facts.auth_user.is_some() {
            return Direction::Authenticated;
        }
        if rules.local_submission && facts.local_submission {
            return Direction::LocalSubmission;
        }
        if matching_network(rules, facts.ip).is_some() {
            return Direction::InternalNetwork;
        }
        if facts
            .daemon_name
            .is_some_and(|name| rules.daemon_names.iter().any(|n| n == name))
        {
            return Direction::DaemonName;
        }
        Direction::Inbound
    }

    /// Why [`Direction::decide`] gave `self`, in words.
    pub fn describe(self, rules: &OutboundRules, facts: &ClientFacts<'_>) -> String {
        match self {
            Direction::Authenticated => format!(
                "outbound: SASL login {:?} (outbound.authenticated)",
                facts.auth_user.unwrap_or_default()
            ),
            Direction::LocalSubmission => {
                "outbound: local submission through sendmail(1) (outbound.local_submission)"
                    .to_string()
            }
            Direction::InternalNetwork => format!(
                "outbound: client {} is in {} (outbound.networks)",
                facts.ip.map(|ip| ip.to_string()).unwrap_or_default(),
                matching_network(rules, facts.ip)
                    .map(|n| n.to_string())
                    .unwrap_or_default()
            ),
            Direction::DaemonName => format!(
                "outbound: {{daemon_name}} {} is listed in outbound.daemon_names",
                facts.daemon_name.unwrap_or_default()
            ),
            Direction::Inbound => {
                let mut why = Vec::new();
                why.push(match (rules.authenticated, facts.auth_user) {
                    (false, Some(_)) => "SASL login ignored (outbound.authenticated = false)",
                    _ => "no SASL login",
                });
                if facts.local_submission {
                    why.push("local submission ignored (outbound.local_submission = false)");
                } else {
                    why.push("not local submission");
                }
                let networks = rules
                    .networks
                    .iter()
                    .map(|n| n.to_string())
                    .collect::<Vec<_>>()
                    .join(", ");
                let client = match facts.ip {
                    Some(ip) => format!("client {ip} not in outbound.networks [{networks}]"),
                    None => "no client address".to_string(),
                };
                let daemon = match facts.daemon_name {
                    Some(name) => format!(
                        "{{daemon_name}} {name} not in outbound.daemon_names [{}]",
                        rules.daemon_names.join(", ")
                    ),
                    None => "no {daemon_name}".to_string(),
                };
                format!(
                    "inbound: no outbound rule matched ({}; {client}; {daemon})",
                    why.join("; ")
                )
            }
        }
    }
}

fn matching_network(rules: &OutboundRules, ip: Option<IpAddr>) -> Option<&ipnet::IpNet> {
    let ip = match ip? {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    rules.networks.iter().find(|net| net.contains(&ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> OutboundRules {
        OutboundRules {
            authenticated: true,
            networks: vec![
                "127.0.0.0/8".parse().unwrap(),
                "10.1.0.0/16".parse().unwrap(),
            ],
            daemon_names: vec!["ORIGINATING".to_string()],
            local_submission: true,
        }
    }

    #[test]
    fn first_matching_rule_wins() {
        let r = rules();
        let facts = |auth, local, ip: Option<&str>, daemon| ClientFacts {
            auth_user: auth,
            local_submission: local,
            ip: ip.map(|i| i.parse().unwrap()),
            daemon_name: daemon,
        };
        let d = |f: &ClientFacts| Direction::decide(&r, f);
        assert_eq!(
            d(&facts(Some("alice"), false, Some("10.1.2.3"), None)),
            Direction::Authenticated
        );
        assert_eq!(
            d(&facts(None, true, Some("127.0.0.1"), None)),
            Direction::LocalSubmission
        );
        assert_eq!(
            d(&facts(None, false, Some("::ffff:10.1.2.3"), None)),
            Direction::InternalNetwork
        );
        assert_eq!(
            d(&facts(None, false, Some("192.0.2.1"), Some("ORIGINATING"))),
            Direction::DaemonName
        );
        let inbound = facts(None, false, Some("192.0.2.1"), Some("smtpd"));
        assert_eq!(d(&inbound), Direction::Inbound);
        assert_eq!(
            Direction::Inbound.describe(&r, &inbound),
            "inbound: no outbound rule matched (no SASL login; not local submission; client 192.0.2.1 not in outbound.networks [127.0.0.0/8, 10.1.0.0/16]; {daemon_name} smtpd not in outbound.daemon_names [ORIGINATING])"
        );
        let internal = facts(None, false, Some("10.1.9.9"), None);
        assert_eq!(
            d(&internal).describe(&r, &internal),
            "outbound: client 10.1.9.9 is in 10.1.0.0/16 (outbound.networks)"
        );
        let mut off = r.clone();
        off.authenticated = false;
        let auth = facts(Some("alice"), false, None, None);
        assert_eq!(Direction::decide(&off, &auth), Direction::Inbound);
        assert!(
            Direction::Inbound
                .describe(&off, &auth)
                .contains("SASL login ignored")
        );
    }
}
