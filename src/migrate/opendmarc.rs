//! opendmarc.conf → the DMARC half of rmilter.toml: whether failures are
//! acted on (RejectFailures → [policy]), the hold queue, domains never acted
//! on, the history (→ rmilter's report store) and the authserv-id.

use super::conf::{self, ConfFile};
use super::opendkim::{dns_timeout, host_list};
use super::options::{Daemon, Disposition};
use super::{Ctx, MigrateError, Status};
use std::path::Path;

const D: Option<Daemon> = Some(Daemon::Opendmarc);

const HANDLED: &[&str] = &[
    "authservid",
    "rejectfailures",
    "holdquarantinedmessages",
    "historyfile",
    "ignorehosts",
    "ignoremailfrom",
    "domainwhitelist",
    "domainwhitelistfile",
    "dnstimeout",
    "trustedauthservids",
    "reportcommand",
    "failurereports",
];

pub fn translate(c: &ConfFile, dkim: Option<&ConfFile>, cx: &mut Ctx) -> Result<(), MigrateError> {
    let base = c.path.parent().unwrap_or(Path::new("/")).to_path_buf();
    for (name, s) in &c.settings {
        if HANDLED.contains(&name.as_str()) {
            continue;
        }
        let (status, text) = match s.info.disposition {
            Disposition::Translated(t) => (Status::Translated, t.to_string()),
            Disposition::NotNeeded(t) => (Status::NotNeeded, t.to_string()),
            Disposition::NotSupported(t) => (Status::NotSupported, t.to_string()),
        };
        let off = matches!(
            s.value.to_ascii_lowercase().as_str(),
            "no" | "false" | "0" | "off"
        );
        if status == Status::NotSupported && off {
            cx.add(
                D,
                s.info.name,
                s.at(),
                Status::NotNeeded,
                "switched off: nothing to translate",
            );
        } else {
            cx.add(D, s.info.name, s.at(), status, text);
        }
    }

    // RFC 7489 §6.6.4 / RFC 9989: without RejectFailures OpenDMARC only adds its header.
    let reject = c.flag("RejectFailures")?.unwrap_or(false);
    let at = c.get("RejectFailures").map(|s| s.at()).unwrap_or_default();
    if reject {
        cx.plan.monitor = Some((false, format!("{at} RejectFailures true")));
        cx.add(D, "RejectFailures", at.clone(), Status::Translated,
            "policy.monitor = false: p=reject failures get 550 5.7.1, DNS trouble 451 ([policy] defaults)");
        // RFC 9989 drops pct=; OpenDMARC still applies it.
        cx.add(D, "RejectFailures", at, Status::Differs,
            "rmilter ignores a record's legacy pct= (RFC 9989), so a failing message of a p=reject; pct=50 domain is always rejected; set verify.dmarc_pct = \"honor\" for OpenDMARC's behaviour");
        let hold = c.flag("HoldQuarantinedMessages")?.unwrap_or(false);
        let hat = c
            .get("HoldQuarantinedMessages")
            .map(|s| s.at())
            .unwrap_or_default();
        let (action, text) = if hold {
            (
                "quarantine",
                "policy.quarantine = \"quarantine\" (Postfix's hold queue)",
            )
        } else {
            (
                "accept",
                "policy.quarantine = \"accept\": OpenDMARC delivered p=quarantine failures unless HoldQuarantinedMessages was set",
            )
        };
        cx.plan.quarantine = Some((
            action.into(),
            format!("{hat} HoldQuarantinedMessages {hold}"),
        ));
        if c.get("HoldQuarantinedMessages").is_some() {
            cx.add(D, "HoldQuarantinedMessages", hat, Status::Translated, text);
        }
    } else {
        cx.plan.monitor = Some((
            true,
            if at.is_empty() {
                "OpenDMARC's default RejectFailures false: evaluate, add the header, never act"
                    .into()
            } else {
                format!("{at} RejectFailures false")
            },
        ));
        cx.add(D, "RejectFailures", at, Status::Translated,
            "policy.monitor = true: DMARC is evaluated and reported in Authentication-Results, never acted on");
        if let Some(s) = c.get("HoldQuarantinedMessages") {
            cx.add(
                D,
                s.info.name,
                s.at(),
                Status::NotNeeded,
                "RejectFailures is off: nothing is held",
            );
        }
    }

    if let Some(s) = c.get("AuthservID") {
        let v = s.value.trim();
        let v = if v.eq_ignore_ascii_case("HOSTNAME") {
            ""
        } else {
            v
        };
        let text = match &cx.plan.authserv_id {
            Some((old, _)) if old != v => {
                "authserv_id (OpenDMARC's, which labels the DMARC result; OpenDKIM's differed)"
            }
            _ => "authserv_id",
        };
        cx.plan.authserv_id = Some((v.to_string(), format!("{} AuthservID", s.at())));
        cx.add(D, s.info.name, s.at(), Status::Translated, text);
    }

    if let Some(s) = c.get("TrustedAuthservIDs") {
        // Trusting only this host's own OpenDKIM is what rmilter's own verification replaces.
        let own: Vec<String> = ["hostname".to_string()]
            .into_iter()
            .chain(
                dkim.and_then(|d| d.get("AuthservID"))
                    .map(|a| a.value.to_ascii_lowercase()),
            )
            .chain(c.get("AuthservID").map(|a| a.value.to_ascii_lowercase()))
            .collect();
        let all_own = s
            .value
            .split(',')
            .map(|v| v.trim().to_ascii_lowercase())
            .filter(|v| !v.is_empty())
            .all(|v| own.contains(&v));
        if all_own {
            cx.add(
                D,
                s.info.name,
                s.at(),
                Status::NotNeeded,
                "it trusted this host's own OpenDKIM; rmilter verifies DKIM in the same pass",
            );
        } else {
            cx.add(D, s.info.name, s.at(), Status::NotSupported,
                "rmilter never trusts upstream Authentication-Results (by design): it verifies DKIM and SPF itself, so an upstream host's results no longer count");
        }
    }

    if let Some(s) = c.get("HistoryFile") {
        cx.plan.report_enabled = Some(format!("{} HistoryFile", s.at()));
        cx.add(D, s.info.name, s.at(), Status::Translated,
            "report.enabled = true: rmilter records the evaluations in report.store and `rmilter report send` (rmilter-report.timer) mails the aggregate reports; stop the opendmarc-import/opendmarc-reports cron jobs");
    }
    if let Some(s) = c.get("ReportCommand") {
        let argv: Vec<String> = s.value.split_whitespace().map(str::to_string).collect();
        // rmilter adds -i -f <email> -- <destination> itself.
        let argv: Vec<String> = argv.into_iter().take_while(|a| a != "-t").collect();
        cx.plan.report_sendmail = Some((argv, format!("{} ReportCommand", s.at())));
        cx.add(
            D,
            s.info.name,
            s.at(),
            Status::Translated,
            "report.sendmail",
        );
    }
    if let Some(s) = c.get("FailureReports") {
        if c.flag("FailureReports")?.unwrap_or(false) {
            cx.plan.failure_enabled = Some(format!("{} FailureReports", s.at()));
            if cx.plan.report_enabled.is_none() {
                cx.plan.report_enabled = Some(format!("{} FailureReports", s.at()));
            }
            // OpenDMARC reports p=none domains only with FailureReportsOnNone;
            // rmilter's default is to report them: keep OpenDMARC's behaviour.
            if c.get("FailureReportsOnNone").is_none() {
                cx.plan.failure_policy_none = Some((
                    false,
                    format!("{} FailureReports (FailureReportsOnNone unset)", s.at()),
                ));
            }
            cx.add(D, s.info.name, s.at(), Status::Translated,
                "report.failure.enabled = true (and report.enabled = true): failure reports are queued in report.store, redacted and rate-limited, and sent by `rmilter report send`");
        } else {
            cx.add(
                D,
                s.info.name,
                s.at(),
                Status::NotNeeded,
                "switched off: nothing to translate",
            );
        }
    }

    if let Some(s) = c.get("FailureReportsOnNone") {
        let on = c.flag("FailureReportsOnNone")?.unwrap_or(false);
        cx.plan.failure_policy_none = Some((on, format!("{} FailureReportsOnNone", s.at())));
        cx.add(
            D,
            s.info.name,
            s.at(),
            Status::Translated,
            "report.failure.policy_none",
        );
    }
    if let Some(s) = c.get("FailureReportsBcc") {
        let list: Vec<String> = s
            .value
            .split([',', ' '])
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(str::to_string)
            .collect();
        cx.plan.failure_bcc = Some((list, format!("{} FailureReportsBcc", s.at())));
        cx.add(
            D,
            s.info.name,
            s.at(),
            Status::Translated,
            "report.failure.bcc",
        );
    }
    if let Some(s) = c.get("FailureReportsSentBy") {
        // "Name <address>" or a bare address: rmilter takes the address.
        let value = s.value.trim();
        let address = match (value.rfind('<'), value.rfind('>')) {
            (Some(a), Some(b)) if a < b => &value[a + 1..b],
            _ => value,
        };
        cx.plan.report_email = Some((
            address.to_string(),
            format!("{} FailureReportsSentBy", s.at()),
        ));
        cx.add(
            D,
            s.info.name,
            s.at(),
            Status::Translated,
            "report.email (the From of aggregate and failure reports)",
        );
    }

    if let Some(s) = c.get("DNSTimeout") {
        dns_timeout(s, cx)?;
    }

    if let Some(s) = c.get("IgnoreHosts")
        && let Some(hosts) = host_list(s, &base, cx)?
    {
        let signed = cx
            .plan
            .networks
            .as_ref()
            .map(|(n, _)| n.clone())
            .unwrap_or_default();
        let extra: Vec<String> = hosts.into_iter().filter(|h| !signed.contains(h)).collect();
        if extra.is_empty() {
            cx.add(
                D,
                s.info.name,
                s.at(),
                Status::Translated,
                "outbound.networks (already listed there)",
            );
        } else {
            cx.add(D, s.info.name, s.at(), Status::Differs, format!(
                    "{} not in OpenDKIM's InternalHosts: rmilter verifies their mail (add them to outbound.networks to sign it instead)",
                    extra.join(", ")));
        }
    }

    for name in ["IgnoreMailFrom", "DomainWhitelist", "DomainWhitelistFile"] {
        let Some(s) = c.get(name) else { continue };
        let domains: Vec<String> = if name == "DomainWhitelistFile" {
            match conf::dataset(
                &conf::Setting {
                    value: format!("file:{}", s.value),
                    ..s.clone()
                },
                &base,
            )? {
                Ok(ds) => ds
                    .rows
                    .iter()
                    .filter_map(|r| r.fields.first().cloned())
                    .collect(),
                Err(_) => Vec::new(),
            }
        } else {
            s.value
                .split(',')
                .map(|d| d.trim().to_ascii_lowercase())
                .filter(|d| !d.is_empty())
                .collect()
        };
        for d in domains {
            if !cx.plan.monitor_domains.iter().any(|(x, _)| *x == d) {
                cx.plan
                    .monitor_domains
                    .push((d, format!("{} {name}", s.at())));
            }
        }
        let status = if name == "IgnoreMailFrom" {
            Status::Differs
        } else {
            Status::Translated
        };
        let text = if name == "IgnoreMailFrom" {
            "[[policy.domain]] monitor = true: rmilter matches the author (From) domain, OpenDMARC matched the envelope sender's"
        } else {
            "[[policy.domain]] monitor = true"
        };
        cx.add(D, s.info.name, s.at(), status, text);
    }
    Ok(())
}
