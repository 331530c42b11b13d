//! Signing rules and login authorisation as Postfix sees the host: keys no
//! `[[signing.rule]]` reaches, `%` keys whose domains are unknown (their
//! records cannot be checked), and SASL submission for several signing
//! domains without `[signing.logins]` (any login could have any of those
//! domains signed).

use super::postconf::{Params, Service};
use super::{Context, Finding, Severity};
use std::collections::BTreeSet;

const CAT: &str = "signing";

pub fn check(cx: &Context<'_>) -> Vec<Finding> {
    let mut findings = Vec::new();
    let config = &cx.runtime.config;
    for warning in &cx.runtime.warnings {
        findings.push(Finding::new(
            "signing-rules",
            Severity::Low,
            CAT,
            warning.clone(),
            "a key no rule reaches never signs, and a rule that reaches no key leaves its mail unsigned",
            "name the key in a [[signing.rule]] keys list, or remove it from rmilter.toml",
        ));
    }
    for key in &config.keys {
        if let Some(note) = config.sender_domain_key_note(key) {
            findings.push(Finding::new(
                "signing-percent-domains",
                Severity::Info,
                CAT,
                note,
                "rmilter keys check and doctor can check a % key's record only at the domains they know",
                format!(
                    "add domains = [...] to the [[key]] named {}",
                    key.name.as_deref().unwrap_or("?")
                ),
            ));
        }
    }
    let main = &cx.postfix.main;
    let sasl = cx
        .postfix
        .services
        .iter()
        .filter(|s: &&Service| s.command == "smtpd")
        .any(|s| s.params(main).yes("smtpd_sasl_auth_enable"));
    let mut domains: BTreeSet<String> = BTreeSet::new();
    for key in cx.runtime.keys.iter() {
        if key.domain == crate::config::SENDER_DOMAIN {
            let (known, open) = config.sender_domain_key_domains(key.name.as_deref(), &key.domains);
            domains.extend(known);
            if !open.is_empty() {
                // Any sender domain: as many as there are customers.
                domains.insert(format!("any ({})", open.join(", ")));
            }
        } else {
            domains.insert(key.domain.clone());
        }
    }
    if sasl && config.outbound.authenticated && domains.len() > 1 && !config.signing.logins.enabled
    {
        findings.push(Finding::new(
            "signing-logins",
            Severity::Low,
            CAT,
            format!(
                "SASL logins have mail signed for {} signing domains ({}) and [signing.logins] is off",
                domains.len(),
                domains.iter().cloned().collect::<Vec<_>>().join(", ")
            ),
            "any login can send as any of these domains and have it signed with that domain's key; on a host with several customers one customer can sign as another",
            "in rmilter.toml set [signing.logins] enabled = true (logins named user@domain may send as their domain; grant more in [signing.logins.allow] or with sender_login_maps)",
        ));
    }
    let postfix_maps = Params::global(main).get("smtpd_sender_login_maps");
    let postfix_maps = postfix_maps.trim();
    if config.signing.logins.enabled
        && config.signing.logins.sender_login_maps.is_none()
        && !postfix_maps.is_empty()
    {
        findings.push(Finding::new(
            "signing-login-maps",
            Severity::Info,
            CAT,
            format!("Postfix has smtpd_sender_login_maps = {postfix_maps}; [signing.logins] does not read it"),
            "the logins Postfix lets use an address may differ from those rmilter lets have it signed",
            format!("set signing.logins.sender_login_maps = \"{postfix_maps}\" when it is a hash:, texthash:, lmdb:, btree:, cdb: or dbm: table"),
        ));
    }
    findings
}
