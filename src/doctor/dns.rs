//! DNS for the signing domains, through the resolvers of `[dns]`: each
//! signing key's record (the `rmilter keys check` verdicts), and for each
//! signing domain an SPF record that exists and parses, a DMARC record
//! (the RFC 9989 tree walk, as verification finds it) that exists, is alone
//! and parses, and `rua=` destinations that are the domain's own or have
//! authorised its reports (RFC 9990 §4).

use super::{Finding, Severity};
use crate::keys::check::{Checker, Verdict, record_name};
use crate::report::send::{Authorised, authorised};
use crate::runtime::Runtime;
use crate::verify::spf::{HickoryDns, Lookup, SpfDns, record_syntax};
use mail_auth::dns::TxtRecordParser;
use std::collections::BTreeSet;

const CAT: &str = "dns";

pub async fn check(runtime: &Runtime) -> Vec<Finding> {
    let mut findings = Vec::new();
    let checker = match Checker::new(&runtime.config.dns) {
        Ok(c) => c,
        Err(e) => {
            findings.push(Finding::new(
                "dns-unavailable",
                Severity::Medium,
                CAT,
                format!("cannot build the resolver of [dns]: {e:#}"),
                "the signing domains' DNS records could not be checked",
                "fix [dns] in rmilter.toml (or run with --no-dns)",
            ));
            return findings;
        }
    };
    // A `%` key is checked at each domain it is known to sign for.
    let config = &runtime.config;
    let keys: Vec<(String, &std::sync::Arc<crate::keys::LoadedKey>)> = runtime
        .keys
        .iter()
        .flat_map(|key| {
            let domains = if key.domain == crate::config::SENDER_DOMAIN {
                config
                    .sender_domain_key_domains(key.name.as_deref(), &key.domains)
                    .0
            } else {
                vec![key.domain.clone()]
            };
            domains.into_iter().map(move |d| (d, key))
        })
        .collect();
    for (domain, key) in &keys {
        let name = record_name(domain, &key.selector);
        let verdict = checker
            .check(domain, &key.selector, key.algorithm, &key.public_key)
            .await;
        let severity = match verdict {
            Verdict::Ok => continue,
            Verdict::Testing | Verdict::DnsError(_) => Severity::Medium,
            _ => Severity::High,
        };
        findings.push(Finding::new(
            "dkim-record",
            severity,
            CAT,
            format!(
                "{name} ({} key): {}",
                key.algorithm.key_type(),
                verdict.name()
            ),
            match verdict {
                Verdict::DnsError(_) => format!(
                    "{}; rmilter keys check repeats the lookup",
                    verdict.detail(&name)
                ),
                Verdict::Testing => verdict.detail(&name),
                _ => format!(
                    "{}; receivers answer dkim=fail for every message signed with this key",
                    verdict.detail(&name)
                ),
            },
            format!(
                "publish {}",
                crate::keys::zone_entry(domain, &key.selector, &key.txt_value()).replace('\n', " ")
            ),
        ));
    }
    let dns = HickoryDns::new(runtime.verifier.authenticator().resolver().clone());
    let domains: BTreeSet<String> = keys.iter().map(|(d, _)| d.clone()).collect();
    for domain in &domains {
        spf(&dns, domain, &mut findings).await;
        dmarc(runtime, &dns, domain, &mut findings).await;
    }
    findings
}

async fn spf(dns: &HickoryDns, domain: &str, findings: &mut Vec<Finding>) {
    let records = match dns.txt(domain).await {
        Lookup::Found(records) => records,
        Lookup::NxDomain | Lookup::NoData => Vec::new(),
        Lookup::TempError(e) => {
            findings.push(Finding::new(
                "spf-record",
                Severity::Medium,
                CAT,
                format!("{domain}: SPF lookup failed ({e})"),
                "the SPF record could not be checked",
                format!("dig TXT {domain} and check the name servers"),
            ));
            return;
        }
    };
    let spf: Vec<(Vec<u8>, Result<(), String>)> = records
        .into_iter()
        .filter_map(|r| record_syntax(&r).map(|ok| (r, ok)))
        .collect();
    match spf.as_slice() {
        [] => findings.push(Finding::new(
            "spf-missing",
            Severity::Medium,
            CAT,
            format!("{domain} publishes no SPF record"),
            "receivers cannot check MAIL FROM; mail from the domain passes DMARC only through DKIM",
            format!(
                "publish {domain}. IN TXT \"v=spf1 mx -all\" (listing the hosts that send its mail)"
            ),
        )),
        [(_, Err(why))] => findings.push(Finding::new(
            "spf-syntax",
            Severity::High,
            CAT,
            format!("{domain}: the SPF record does not parse: {why}"),
            "receivers treat it as permerror: SPF never passes for the domain (RFC 7208 §4.6)",
            format!("fix the TXT record at {domain} (RFC 7208 §4.6)"),
        )),
        [_] => {}
        several => findings.push(Finding::new(
            "spf-several",
            Severity::High,
            CAT,
            format!("{domain} publishes {} SPF records", several.len()),
            "more than one v=spf1 record is a permerror at every receiver (RFC 7208 §4.5)",
            format!("merge them into one TXT record at {domain}"),
        )),
    }
}

async fn dmarc(runtime: &Runtime, dns: &HickoryDns, domain: &str, findings: &mut Vec<Finding>) {
    let Some(found) = runtime.verifier.policy_record(domain).await else {
        findings.push(Finding::new(
            "dmarc-missing",
            Severity::Medium,
            CAT,
            format!("no DMARC record for {domain} (nor a parent domain)"),
            "receivers apply no policy to forgeries of the domain and send no reports",
            format!("publish _dmarc.{domain}. IN TXT \"v=DMARC1; p=none; rua=mailto:dmarc-reports@{domain}\" (then quarantine or reject)"),
        ));
        return;
    };
    let name = format!("_dmarc.{}", found.domain);
    if found.count > 1 {
        findings.push(Finding::new(
            "dmarc-several",
            Severity::High,
            CAT,
            format!("{name} holds {} DMARC records", found.count),
            "several records at one name count as none (RFC 9989 §4.10): no policy applies",
            format!("keep exactly one v=DMARC1 TXT record at {name}"),
        ));
        return;
    }
    let text = match dns.txt(&name).await {
        Lookup::Found(records) => records.into_iter().find(|r| {
            String::from_utf8_lossy(r)
                .split(';')
                .next()
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("v=DMARC1"))
        }),
        _ => None,
    };
    let Some(text) = text else { return };
    let record = match mail_auth::dmarc::DmarcRecord::parse(&text) {
        Ok(record) => record,
        Err(e) => {
            findings.push(Finding::new(
                "dmarc-syntax",
                Severity::High,
                CAT,
                format!("{name}: the DMARC record does not parse ({e})"),
                "receivers ignore it: no policy applies to the domain",
                format!("fix the TXT record at {name} (RFC 9989 §4.7)"),
            ));
            return;
        }
    };
    let policy_domain = found.domain.clone();
    for uri in &record.rua {
        let address = uri.uri().to_ascii_lowercase();
        let Some((_, dest)) = address.rsplit_once('@') else {
            continue;
        };
        let within = |a: &str, b: &str| a == b || a.ends_with(&format!(".{b}"));
        if within(dest, &policy_domain) || within(&policy_domain, dest) {
            continue;
        }
        match authorised(dns, &policy_domain, dest).await {
            Authorised::Yes => {}
            Authorised::No(why) => findings.push(Finding::new(
                "dmarc-rua-unauthorised",
                Severity::Medium,
                CAT,
                format!("{name}: rua={address} is not authorised: {why}"),
                "receivers drop aggregate reports for a foreign destination that has not authorised them (RFC 9990 §4)",
                format!("publish {policy_domain}._report._dmarc.{dest}. IN TXT \"v=DMARC1\" in the {dest} zone"),
            )),
            Authorised::TempError(e) => findings.push(Finding::new(
                "dmarc-rua-unauthorised",
                Severity::Low,
                CAT,
                format!("{name}: rua={address}: authorisation lookup failed ({e})"),
                "could not check whether the destination accepts the domain's reports",
                format!("dig TXT {policy_domain}._report._dmarc.{dest}"),
            )),
        }
    }
}
