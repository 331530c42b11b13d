//! The usual Postfix hardening items, and the settings that look right but
//! do nothing: SASL only after TLS and never anonymous, SMTP smuggling
//! (bare newlines), VRFY, relay restrictions, `mynetworks` width, TLS levels
//! and protocols, HELO/sender/recipient restrictions, client rate limits,
//! and listening on every interface when nothing is received.

use super::postconf::{Params, Service, list};
use super::{Context, Finding, Severity};
use ipnet::IpNet;
use std::collections::BTreeMap;

const CAT: &str = "hardening";

pub fn check(cx: &Context<'_>) -> Vec<Finding> {
    let main = &cx.postfix.main;
    let global = Params::global(main);
    let smtpd: Vec<&Service> = cx
        .postfix
        .services
        .iter()
        .filter(|s| s.command == "smtpd")
        .collect();
    let mut findings = Vec::new();
    sasl(cx, &smtpd, &mut findings);
    relay(cx, &smtpd, &mut findings);

    if !matches!(
        global.get("smtpd_forbid_bare_newline").trim(),
        "yes" | "normalize" | "reject"
    ) {
        findings.push(Finding::new(
            "bare-newline",
            Severity::Medium,
            CAT,
            format!(
                "smtpd_forbid_bare_newline = {}",
                non_empty(&global.get("smtpd_forbid_bare_newline"))
            ),
            "SMTP smuggling (CVE-2023-51764): a bare LF lets a sender end DATA where another server does not, and smuggle a second message that passes SPF and DMARC as a domain you serve; it also changes what rmilter sees",
            "postconf -e 'smtpd_forbid_bare_newline = yes' (Postfix 3.7.10, 3.8.5 and later; \"normalize\" on 3.9)",
        ));
    }
    if !global.yes("disable_vrfy_command") {
        findings.push(Finding::new(
            "vrfy",
            Severity::Low,
            CAT,
            "disable_vrfy_command = no",
            "VRFY lets anyone probe which addresses exist",
            "postconf -e 'disable_vrfy_command = yes'",
        ));
    }
    if !global.yes("smtpd_helo_required") {
        findings.push(Finding::new(
            "helo-required",
            Severity::Low,
            CAT,
            "smtpd_helo_required = no",
            "clients may skip HELO/EHLO, so HELO restrictions and SPF's HELO check have nothing to look at",
            "postconf -e 'smtpd_helo_required = yes'",
        ));
    }
    restrictions(&global, &mut findings);
    mynetworks(&global, &mut findings);
    tls(cx, &smtpd, &mut findings);

    let zero = |name: &str| global.get(name).trim().parse::<u64>().is_ok_and(|v| v == 0);
    if zero("smtpd_client_connection_rate_limit") && zero("smtpd_client_message_rate_limit") {
        findings.push(Finding::new(
            "rate-limits",
            Severity::Low,
            CAT,
            "smtpd_client_connection_rate_limit and smtpd_client_message_rate_limit are 0 (no limit)",
            "one client can open connections and send messages as fast as it likes (password guessing, floods); mynetworks stay exempt",
            "postconf -e 'smtpd_client_connection_rate_limit = 60' 'smtpd_client_message_rate_limit = 100'",
        ));
    }

    let receives = [
        "mydestination",
        "relay_domains",
        "virtual_alias_domains",
        "virtual_mailbox_domains",
    ]
    .iter()
    .any(|p| !global.get(p).trim().is_empty());
    let submission = smtpd.iter().any(|s| s.is_submission())
        || smtpd
            .iter()
            .any(|s| s.params(main).yes("smtpd_sasl_auth_enable"));
    let interfaces = global.get("inet_interfaces");
    let loopback = list(&interfaces).iter().all(|i| {
        matches!(
            i.as_str(),
            "loopback-only" | "localhost" | "127.0.0.1" | "[::1]" | "::1"
        )
    });
    if !receives && !submission && !loopback {
        findings.push(Finding::new(
            "inet-interfaces",
            Severity::Low,
            CAT,
            format!("inet_interfaces = {interfaces}, but this host receives no mail (mydestination, relay_domains and virtual domains are empty) and offers no submission"),
            "smtpd listens on every interface for nothing: only local programs submit mail here",
            "postconf -e 'inet_interfaces = loopback-only'",
        ));
    }
    findings
}

fn non_empty(v: &str) -> &str {
    if v.trim().is_empty() {
        "(empty)"
    } else {
        v.trim()
    }
}

/// SASL: only after TLS, never anonymous, on submission rather than port 25.
fn sasl(cx: &Context<'_>, smtpd: &[&Service], findings: &mut Vec<Finding>) {
    let main = &cx.postfix.main;
    // Findings whose fix is the same main.cf change are reported once.
    let mut auth_only: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut anonymous: BTreeMap<String, (Vec<String>, String)> = BTreeMap::new();
    for svc in smtpd {
        let p = svc.params(main);
        if !p.yes("smtpd_sasl_auth_enable") {
            continue;
        }
        let tls_first = p.yes("smtpd_tls_auth_only")
            || p.get("smtpd_tls_security_level").trim() == "encrypt"
            || p.yes("smtpd_enforce_tls")
            || p.yes("smtpd_tls_wrappermode");
        if !tls_first {
            let fix = if svc
                .overrides
                .iter()
                .any(|(n, _)| n == "smtpd_sasl_auth_enable")
            {
                format!(
                    "master.cf, service {} (line {}): add -o smtpd_tls_auth_only=yes (or -o smtpd_tls_security_level=encrypt)",
                    svc.name, svc.line
                )
            } else {
                "postconf -e 'smtpd_tls_auth_only = yes'".to_string()
            };
            auth_only.entry(fix).or_default().push(svc.label());
        }
        for param in [
            "smtpd_sasl_security_options",
            "smtpd_sasl_tls_security_options",
        ] {
            let value = p.get(param);
            if !list(&value).iter().any(|o| o == "noanonymous") {
                let fixed = {
                    let mut opts = list(&value);
                    opts.insert(0, "noanonymous".to_string());
                    opts.join(", ")
                };
                let fix = if svc.overrides.iter().any(|(n, _)| n == param) {
                    format!(
                        "master.cf, service {} (line {}): -o {param}={fixed}",
                        svc.name, svc.line
                    )
                } else {
                    format!("postconf -e '{param} = {fixed}'")
                };
                let entry = anonymous
                    .entry(fix)
                    .or_insert_with(|| (Vec::new(), format!("{param} = {}", non_empty(&value))));
                entry.0.push(svc.label());
            }
        }
        if !svc.is_submission() && svc.port() == Some(25) {
            findings.push(Finding::new(
                "sasl-port-25",
                Severity::Low,
                CAT,
                format!("SASL authentication is offered on {}", svc.label()),
                "port 25 is where other servers deliver; offering logins there invites password guessing: offer SASL on submission (587/465) only",
                if svc.overrides.iter().any(|(n, _)| n == "smtpd_sasl_auth_enable") {
                    format!("master.cf, service {} (line {}): remove -o smtpd_sasl_auth_enable=yes", svc.name, svc.line)
                } else {
                    "postconf -e 'smtpd_sasl_auth_enable = no', and -o smtpd_sasl_auth_enable=yes on the submission service in master.cf".to_string()
                },
            ));
        }
    }
    for (fix, services) in auth_only {
        findings.push(Finding::new(
            "tls-auth-only",
            Severity::Medium,
            CAT,
            format!("SASL without TLS first on {}", services.join(", ")),
            "clients may send their password before STARTTLS, readable by anyone on the path",
            fix,
        ));
    }
    for (fix, (services, setting)) in anonymous {
        findings.push(Finding::new(
            "sasl-anonymous",
            Severity::High,
            CAT,
            format!("{setting} on {}: noanonymous is missing", services.join(", ")),
            "without noanonymous the ANONYMOUS mechanism logs anyone in (noplaintext alone allows it): anonymous clients relay, and rmilter signs their mail as authenticated",
            fix,
        ));
    }
}

/// Whether a restriction list decides relaying: `Some(true)` when it
/// rejects unauthorised destinations before any unconditional permit,
/// `Some(false)` when an unconditional permit comes first.
fn protects(restrictions: &[String]) -> Option<bool> {
    for r in restrictions {
        match r.as_str() {
            "reject_unauth_destination"
            | "defer_unauth_destination"
            | "reject"
            | "defer"
            | "defer_all" => return Some(true),
            "permit" => return Some(false),
            _ => {}
        }
    }
    None
}

fn relay(cx: &Context<'_>, smtpd: &[&Service], findings: &mut Vec<Finding>) {
    let main = &cx.postfix.main;
    let mut seen = std::collections::BTreeSet::new();
    let services: Vec<Option<&Service>> = if smtpd.is_empty() {
        vec![None]
    } else {
        smtpd.iter().map(|s| Some(*s)).collect()
    };
    for svc in services {
        let p = match svc {
            Some(s) => s.params(main),
            None => Params::global(main),
        };
        let relay = list(&p.get("smtpd_relay_restrictions"));
        let rcpt = list(&p.get("smtpd_recipient_restrictions"));
        let safe = protects(&relay) == Some(true) || protects(&rcpt) == Some(true);
        if safe || !seen.insert((relay.clone(), rcpt.clone())) {
            continue;
        }
        let own = svc.is_some_and(|s| {
            s.overrides.iter().any(|(n, _)| {
                n == "smtpd_relay_restrictions" || n == "smtpd_recipient_restrictions"
            })
        });
        let fix = match svc {
            Some(s) if own => format!(
                "master.cf, service {} (line {}): -o smtpd_relay_restrictions=permit_mynetworks,permit_sasl_authenticated,reject_unauth_destination",
                s.name, s.line
            ),
            _ => "postconf -e 'smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination'".to_string(),
        };
        findings.push(Finding::new(
            "open-relay",
            Severity::High,
            CAT,
            format!(
                "{}: neither smtpd_relay_restrictions ({}) nor smtpd_recipient_restrictions ({}) rejects unauthorised destinations before permitting",
                svc.map_or("main.cf".to_string(), |s| format!("service {}", s.label())),
                non_empty(&relay.join(", ")),
                non_empty(&rcpt.join(", "))
            ),
            "anyone can relay mail through this server to any destination (and, when the client counts as outbound, have it signed)",
            fix,
        ));
    }
}

fn restrictions(global: &Params<'_>, findings: &mut Vec<Finding>) {
    let all: Vec<String> = [
        "smtpd_client_restrictions",
        "smtpd_helo_restrictions",
        "smtpd_sender_restrictions",
        "smtpd_relay_restrictions",
        "smtpd_recipient_restrictions",
    ]
    .iter()
    .flat_map(|p| list(&global.get(p)))
    .collect();
    let has = |names: &[&str]| all.iter().any(|r| names.contains(&r.as_str()));
    for (id, names, what, fix) in [
        (
            "helo-restrictions",
            &[
                "reject_invalid_helo_hostname",
                "reject_non_fqdn_helo_hostname",
                "reject_unknown_helo_hostname",
            ][..],
            "no HELO restrictions (reject_invalid_helo_hostname, reject_non_fqdn_helo_hostname)",
            "postconf -e 'smtpd_helo_restrictions = permit_mynetworks, permit_sasl_authenticated, reject_invalid_helo_hostname, reject_non_fqdn_helo_hostname'",
        ),
        (
            "sender-restrictions",
            &["reject_non_fqdn_sender", "reject_unknown_sender_domain"][..],
            "no sender restrictions (reject_non_fqdn_sender, reject_unknown_sender_domain)",
            "postconf -e 'smtpd_sender_restrictions = permit_mynetworks, permit_sasl_authenticated, reject_non_fqdn_sender, reject_unknown_sender_domain'",
        ),
        (
            "recipient-restrictions",
            &[
                "reject_non_fqdn_recipient",
                "reject_unknown_recipient_domain",
            ][..],
            "no recipient restrictions (reject_non_fqdn_recipient, reject_unknown_recipient_domain)",
            "postconf -e 'smtpd_recipient_restrictions = permit_mynetworks, permit_sasl_authenticated, reject_non_fqdn_recipient, reject_unknown_recipient_domain, reject_unauth_destination'",
        ),
    ] {
        if !has(names) {
            findings.push(Finding::new(
                id,
                Severity::Low,
                CAT,
                what,
                "malformed and unresolvable envelope names are accepted and reach the queue (and rmilter)",
                fix,
            ));
        }
    }
}

fn mynetworks(global: &Params<'_>, findings: &mut Vec<Finding>) {
    let value = global.get("mynetworks");
    // Unset, Postfix derives mynetworks from this host's interfaces by
    // mynetworks_style (postconf shows the result for the host it runs on,
    // which is what the style means there): judge the style.
    if value.trim().is_empty() || !global.is_set("mynetworks") {
        let style = global.get("mynetworks_style");
        let (severity, why) = match style.trim() {
            "class" => (
                Severity::Medium,
                "every host in the whole class A/B/C network of each interface may relay without logging in",
            ),
            "subnet" => (
                Severity::Low,
                "every host on the subnets of this host's interfaces may relay without logging in",
            ),
            _ => return,
        };
        findings.push(Finding::new(
            "mynetworks-wide",
            severity,
            CAT,
            format!("mynetworks is not set and mynetworks_style = {}", style.trim()),
            why,
            "postconf -e 'mynetworks = 127.0.0.0/8 [::1]/128' (and the networks of your own clients)",
        ));
        return;
    }
    let mut worst: Option<(Severity, String)> = None;
    for item in list(&value) {
        let net = item.replace(['[', ']'], "");
        let Ok(net) = net
            .parse::<IpNet>()
            .or_else(|_| net.parse::<std::net::IpAddr>().map(IpNet::from))
        else {
            continue;
        };
        let (internet_wide, public_wide) = match net {
            IpNet::V4(n) => {
                let a = n.network();
                let private = a.is_private()
                    || a.is_loopback()
                    || a.is_link_local()
                    || (a.octets()[0] == 100 && (a.octets()[1] & 0xc0) == 64);
                (n.prefix_len() < 8, !private && n.prefix_len() < 24)
            }
            IpNet::V6(n) => {
                let a = n.network();
                let private = a.is_loopback()
                    || (a.segments()[0] & 0xfe00) == 0xfc00
                    || (a.segments()[0] & 0xffc0) == 0xfe80;
                (n.prefix_len() < 16, !private && n.prefix_len() < 48)
            }
        };
        let severity = if internet_wide {
            Severity::High
        } else if public_wide {
            Severity::Medium
        } else {
            continue;
        };
        if worst.as_ref().is_none_or(|(s, _)| severity < *s) {
            worst = Some((severity, item.clone()));
        }
    }
    if let Some((severity, item)) = worst {
        findings.push(Finding::new(
            "mynetworks-wide",
            severity,
            CAT,
            format!("mynetworks includes {item}"),
            if severity == Severity::High {
                "a large part of the internet may relay through this server without logging in (and rmilter signs what its outbound.networks cover)"
            } else {
                "a wide public network may relay without logging in; list only your own hosts"
            },
            "postconf -e 'mynetworks = 127.0.0.0/8 [::1]/128' (and the networks of your own clients)",
        ));
    }
}

/// Whether a TLS protocol setting still allows TLSv1 or TLSv1.1.
fn allows_old_tls(value: &str) -> bool {
    let items = list(value);
    if items.iter().any(|i| i == ">=TLSv1.2" || i == ">=TLSv1.3") {
        return false;
    }
    let excluded = |p: &str| items.iter().any(|i| i == &format!("!{p}"));
    !(excluded("TLSv1") && excluded("TLSv1.1"))
}

fn tls(cx: &Context<'_>, smtpd: &[&Service], findings: &mut Vec<Finding>) {
    let main = &cx.postfix.main;
    let global = Params::global(main);
    let inbound_level = global.get("smtpd_tls_security_level");
    if matches!(inbound_level.trim(), "" | "none")
        && !global.yes("smtpd_use_tls")
        && !global.yes("smtpd_enforce_tls")
    {
        findings.push(Finding::new(
            "tls-inbound-off",
            Severity::Medium,
            CAT,
            format!("smtpd_tls_security_level = {}", non_empty(&inbound_level)),
            "smtpd offers no STARTTLS: mail from other servers and your users arrives in clear text",
            "postconf -e 'smtpd_tls_security_level = may' 'smtpd_tls_chain_files = /etc/ssl/private/mail.pem' (your key and certificate chain)",
        ));
    }
    let outbound_level = global.get("smtp_tls_security_level");
    let outbound_off = matches!(outbound_level.trim(), "" | "none") && !global.yes("smtp_use_tls");
    if outbound_off {
        findings.push(Finding::new(
            "tls-outbound-off",
            Severity::Medium,
            CAT,
            format!("smtp_tls_security_level = {}", non_empty(&outbound_level)),
            "outgoing mail is sent in clear text even to servers that offer STARTTLS",
            "postconf -e 'smtp_tls_security_level = may'",
        ));
    }
    // Mandatory settings apply only where TLS is mandatory.
    let smtp_mandatory = matches!(
        outbound_level.trim(),
        "encrypt" | "dane" | "dane-only" | "fingerprint" | "verify" | "secure"
    );
    for param in ["smtp_tls_mandatory_protocols", "smtp_tls_mandatory_ciphers"] {
        if main.explicit(param).is_some() && !smtp_mandatory {
            let opportunistic = param.replace("_mandatory", "");
            findings.push(Finding::new(
                "tls-mandatory-ineffective",
                Severity::Low,
                CAT,
                format!(
                    "{param} = {} has no effect at smtp_tls_security_level = {}",
                    global.get(param).trim(),
                    non_empty(&outbound_level)
                ),
                "the mandatory settings apply only at level encrypt or stricter; at may the opportunistic ones are used",
                format!(
                    "postconf -e '{opportunistic} = {}' (the setting for opportunistic TLS)",
                    global.get(param).trim()
                ),
            ));
        }
    }
    let smtpd_mandatory: Vec<&&Service> = smtpd
        .iter()
        .filter(|s| {
            let p = s.params(main);
            p.get("smtpd_tls_security_level").trim() == "encrypt"
                || p.yes("smtpd_tls_wrappermode")
                || p.yes("smtpd_enforce_tls")
        })
        .collect();
    for param in [
        "smtpd_tls_mandatory_protocols",
        "smtpd_tls_mandatory_ciphers",
    ] {
        if main.explicit(param).is_some() && smtpd_mandatory.is_empty() {
            let opportunistic = param.replace("_mandatory", "");
            findings.push(Finding::new(
                "tls-mandatory-ineffective",
                Severity::Low,
                CAT,
                format!(
                    "{param} = {} has no effect: no smtpd service makes TLS mandatory",
                    global.get(param).trim()
                ),
                "the mandatory settings apply only where smtpd_tls_security_level = encrypt (or wrapper mode); elsewhere the opportunistic ones are used",
                format!(
                    "postconf -e '{opportunistic} = {}' (the setting for opportunistic TLS)",
                    global.get(param).trim()
                ),
            ));
        }
    }
    if let Some(svc) = smtpd_mandatory.first() {
        let value = svc.params(main).get("smtpd_tls_mandatory_protocols");
        if allows_old_tls(&value) {
            findings.push(Finding::new(
                "tls-old-protocols",
                Severity::Low,
                CAT,
                format!(
                    "smtpd_tls_mandatory_protocols = {} allows TLSv1 and TLSv1.1 where TLS is mandatory ({})",
                    value.trim(),
                    svc.label()
                ),
                "submission clients that still need TLS 1.0/1.1 are long gone; the old protocols only weaken the login's protection",
                "postconf -e 'smtpd_tls_mandatory_protocols = >=TLSv1.2'",
            ));
        }
    }
    if smtp_mandatory && allows_old_tls(&global.get("smtp_tls_mandatory_protocols")) {
        findings.push(Finding::new(
            "tls-old-protocols",
            Severity::Low,
            CAT,
            format!(
                "smtp_tls_mandatory_protocols = {} allows TLSv1 and TLSv1.1",
                global.get("smtp_tls_mandatory_protocols").trim()
            ),
            "with mandatory TLS outbound, the old protocols only weaken it",
            "postconf -e 'smtp_tls_mandatory_protocols = >=TLSv1.2'",
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(s: &str) -> Vec<String> {
        list(s)
    }

    #[test]
    fn relay_decisions() {
        assert_eq!(
            protects(&l("permit_mynetworks, reject_unauth_destination")),
            Some(true)
        );
        assert_eq!(
            protects(&l("permit_mynetworks, permit, reject_unauth_destination")),
            Some(false)
        );
        assert_eq!(protects(&l("permit_sasl_authenticated")), None);
        assert_eq!(protects(&l("")), None);
    }

    #[test]
    fn old_tls() {
        assert!(allows_old_tls(">=TLSv1"));
        assert!(allows_old_tls("!SSLv2, !SSLv3"));
        assert!(!allows_old_tls("!SSLv2, !SSLv3, !TLSv1, !TLSv1.1"));
        assert!(!allows_old_tls(">=TLSv1.2"));
    }
}
