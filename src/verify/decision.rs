//! The policy table: what rmilter does with an inbound message, from its
//! DMARC outcome, the configured actions (global and per domain), monitor
//! mode, `pct`, trusted ARC sealers and the display-name check.
//!
//! | DMARC outcome | action key | default |
//! |---|---|---|
//! | pass, none (no record) | — | accept |
//! | fail, policy reject | `policy.reject` | reject 550 5.7.1 |
//! | fail, policy quarantine | `policy.quarantine` | quarantine (hold queue) |
//! | fail, policy none | `policy.none` | accept |
//! | temperror | `policy.temperror` | tempfail 451 4.4.3 (never 5xx, never "none") |
//! | permerror | `policy.permerror` | accept |

use super::{DmarcStatus, Verdict};
use crate::config::{Action, PolicyTable, VerifySettings};
use crate::report::{Disposition, Override};
use mail_auth::dmarc::Policy;

/// What to do with the message, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub action: Action,
    /// The DMARC disposition applied, for reports.
    pub disposition: Disposition,
    pub overrides: Vec<Override>,
    /// SMTP reply for reject and tempfail: (code, enhanced code, text).
    pub reply: (&'static str, &'static str, String),
    /// One line for the decision log: which branch was taken.
    pub branch: String,
    /// Why a trusted ARC sealer's chain did or did not override a DMARC
    /// failure; `None` when no trusted sealer's passing chain was there.
    pub arc_override: Option<String>,
}

/// Decide. `pct_selected` says whether a failing message falls inside a
/// legacy `pct=` sample (only asked when `verify.dmarc_pct = "honor"` and
/// the record has `pct` below 100).
pub fn decide(
    verdict: &Verdict,
    table: &PolicyTable,
    settings: &VerifySettings,
    display_domain: Option<&str>,
    pct: Option<u8>,
    pct_selected: impl FnOnce(u8) -> bool,
) -> Decision {
    let dmarc = &verdict.dmarc;
    let domain = dmarc.domain.as_str();
    let actions = table.for_domain(domain);
    let mut overrides = Vec::new();
    let mut policy = dmarc.policy;
    let mut branch = format!(
        "dmarc={} policy={}",
        dmarc.status.as_str(),
        policy_str(policy)
    );

    if dmarc.status == DmarcStatus::Fail {
        if dmarc.record.as_ref().is_some_and(|r| r.t) {
            overrides.push(Override {
                kind: "policy_test_mode",
                comment: "t=y: policy applied one level less strictly".to_string(),
            });
        }
        // RFC 7489 §6.6.4 (legacy pct): outside the sample, apply the next
        // less strict policy.
        if settings.honor_pct
            && matches!(policy, Policy::Reject | Policy::Quarantine)
            && let Some(pct) = pct.filter(|p| *p < 100)
            && !pct_selected(pct)
        {
            policy = if policy == Policy::Reject {
                Policy::Quarantine
            } else {
                Policy::None
            };
            overrides.push(Override {
                kind: "sampled_out",
                comment: format!("pct={pct}"),
            });
            branch.push_str(&format!(" pct={pct} sampled-out"));
        }
    }

    let (mut action, mut disposition) = match dmarc.status {
        DmarcStatus::Pass | DmarcStatus::None => (Action::Accept, Disposition::None),
        DmarcStatus::TempError => (actions.temperror, Disposition::None),
        DmarcStatus::PermError => (actions.permerror, Disposition::None),
        DmarcStatus::Fail => match policy {
            Policy::Reject => (actions.reject, Disposition::Reject),
            Policy::Quarantine => (actions.quarantine, Disposition::Quarantine),
            Policy::None | Policy::Unspecified => (actions.none, Disposition::None),
        },
    };

    // RFC 8617 §7.2: a passing chain from a sealer the receiver trusts may
    // override a DMARC failure (local policy; off unless sealers are listed),
    // but only when that sealer's ARC-Authentication-Results of the same
    // instance shows the author domain authenticated (dmarc=pass, or an
    // aligned DKIM/SPF pass, for this header.from).
    let mut arc_override = None;
    if dmarc.status == DmarcStatus::Fail
        && verdict.arc.status == "pass"
        && action != Action::Accept
        && let Some(sealer) = verdict
            .arc
            .sealer
            .as_ref()
            .filter(|s| settings.trusted_arc_sealers.iter().any(|t| t == *s))
    {
        let floor = dmarc
            .policy_record
            .as_ref()
            .map_or(domain, |r| r.domain.as_str());
        let vouched = match &verdict.arc.sealer_results {
            Some((instance, aar)) => {
                super::arc::sealer_vouches(aar, *instance, domain, dmarc.record.as_deref(), floor)
            }
            None => Err("no ARC-Authentication-Results of its instance".to_string()),
        };
        match vouched {
            Ok(why) => {
                overrides.push(Override {
                    kind: "trusted_forwarder",
                    comment: format!("arc=pass from trusted sealer {sealer}: {why}"),
                });
                branch.push_str(&format!(" arc-override={sealer}"));
                arc_override = Some(format!("applied: trusted sealer {sealer}, {why}"));
                action = Action::Accept;
                disposition = Disposition::None;
            }
            Err(why) => {
                branch.push_str(&format!(" arc-override-refused={sealer}"));
                arc_override = Some(format!("not applied: trusted sealer {sealer}, {why}"));
            }
        }
    }

    if let Some(other) = display_domain {
        branch.push_str(&format!(" display-domain={other}"));
        if settings.quarantine_display_mismatch && action == Action::Accept {
            action = Action::Quarantine;
        }
    }

    if actions.monitor && action != Action::Accept {
        overrides.push(Override {
            kind: "local_policy",
            comment: format!("monitor mode: would {}", action.as_str()),
        });
        branch.push_str(&format!(" monitor(would {})", action.as_str()));
        action = Action::Accept;
        disposition = Disposition::None;
    }
    // What was applied, for reports: the disposition only when acted upon.
    if action == Action::Accept && disposition != Disposition::None {
        disposition = Disposition::None;
        if !overrides
            .iter()
            .any(|o| o.kind == "local_policy" || o.kind == "trusted_forwarder")
        {
            overrides.push(Override {
                kind: "local_policy",
                comment: "configured action accept".to_string(),
            });
        }
    }
    if action == Action::Quarantine {
        disposition = Disposition::Quarantine;
    }

    let reply = match (dmarc.status, action) {
        (DmarcStatus::TempError, _) => (
            "451",
            "4.4.3",
            format!(
                "DMARC policy of {domain} could not be evaluated (temporary DNS failure); try again later"
            ),
        ),
        (DmarcStatus::PermError, Action::Reject) => (
            "550",
            "5.7.1",
            format!("DMARC evaluation of {domain} failed permanently"),
        ),
        (_, Action::Tempfail) => (
            "451",
            "4.7.1",
            format!("message from {domain} deferred by DMARC policy"),
        ),
        _ => (
            "550",
            "5.7.1",
            format!("rejected by the DMARC policy of {domain}: no aligned DKIM or SPF pass"),
        ),
    };
    branch.push_str(&format!(" -> {}", action.as_str()));
    Decision {
        action,
        disposition,
        overrides,
        reply,
        branch,
        arc_override,
    }
}

pub fn policy_str(policy: Policy) -> &'static str {
    match policy {
        Policy::None | Policy::Unspecified => "none",
        Policy::Quarantine => "quarantine",
        Policy::Reject => "reject",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{PolicyActions, PolicyTable};
    use crate::verify::dmarc::Record;
    use crate::verify::spf::SpfOutcome;
    use crate::verify::{ArcVerdict, DmarcVerdict};
    use std::sync::Arc;
    use std::time::Duration;

    fn actions() -> PolicyActions {
        PolicyActions {
            reject: Action::Reject,
            quarantine: Action::Quarantine,
            none: Action::Accept,
            temperror: Action::Tempfail,
            permerror: Action::Accept,
            monitor: false,
        }
    }

    fn table() -> PolicyTable {
        PolicyTable {
            global: actions(),
            domains: vec![(
                "monitored.example".to_string(),
                PolicyActions {
                    monitor: true,
                    ..actions()
                },
            )],
        }
    }

    fn settings() -> VerifySettings {
        VerifySettings {
            max_signatures: 5,
            min_rsa_bits: 1024,
            time_budget: Duration::from_secs(60),
            spf_time_limit: Duration::from_secs(20),
            spf_void_lookups: 2,
            arc: true,
            trusted_arc_sealers: vec!["lists.example".to_string()],
            honor_pct: false,
            quarantine_display_mismatch: false,
        }
    }

    fn record(p: Policy, t: bool) -> Arc<Record> {
        Arc::new(Record {
            p,
            sp: p,
            np: p,
            t,
            ..Record::default()
        })
    }

    fn verdict(domain: &str, status: DmarcStatus, policy: Policy) -> Verdict {
        Verdict {
            dkim: Vec::new(),
            dkim_skipped: 0,
            spf_helo: SpfOutcome::none("helo.example", ""),
            spf_mail_from: SpfOutcome::none(domain, ""),
            arc: ArcVerdict {
                status: "none",
                sealer: None,
                sealer_results: None,
            },
            dmarc: DmarcVerdict {
                status,
                domain: domain.to_string(),
                policy,
                record: Some(record(policy, false)),
                dkim_aligned: false,
                spf_aligned: false,
                reason: String::new(),
                policy_record: None,
                discovery: None,
            },
        }
    }

    fn decide_plain(v: &Verdict) -> Decision {
        decide(v, &table(), &settings(), None, None, |_| true)
    }

    #[test]
    fn the_table() {
        for (status, policy, action, disposition) in [
            (
                DmarcStatus::Pass,
                Policy::Reject,
                Action::Accept,
                Disposition::None,
            ),
            (
                DmarcStatus::None,
                Policy::None,
                Action::Accept,
                Disposition::None,
            ),
            (
                DmarcStatus::Fail,
                Policy::Reject,
                Action::Reject,
                Disposition::Reject,
            ),
            (
                DmarcStatus::Fail,
                Policy::Quarantine,
                Action::Quarantine,
                Disposition::Quarantine,
            ),
            (
                DmarcStatus::Fail,
                Policy::None,
                Action::Accept,
                Disposition::None,
            ),
            (
                DmarcStatus::TempError,
                Policy::Reject,
                Action::Tempfail,
                Disposition::None,
            ),
            (
                DmarcStatus::PermError,
                Policy::Reject,
                Action::Accept,
                Disposition::None,
            ),
        ] {
            let d = decide_plain(&verdict("victim.example", status, policy));
            assert_eq!(
                (d.action, d.disposition),
                (action, disposition),
                "{status:?} {policy:?}"
            );
        }
    }

    #[test]
    fn temperror_is_never_a_5xx() {
        let d = decide_plain(&verdict(
            "victim.example",
            DmarcStatus::TempError,
            Policy::Reject,
        ));
        assert_eq!(d.action, Action::Tempfail);
        assert_eq!((d.reply.0, d.reply.1), ("451", "4.4.3"));
    }

    #[test]
    fn reject_reply_names_the_policy_domain() {
        let d = decide_plain(&verdict(
            "victim.example",
            DmarcStatus::Fail,
            Policy::Reject,
        ));
        assert_eq!((d.reply.0, d.reply.1), ("550", "5.7.1"));
        assert!(d.reply.2.contains("victim.example"), "{}", d.reply.2);
    }

    #[test]
    fn monitor_mode_per_domain_never_acts() {
        let d = decide_plain(&verdict(
            "a.monitored.example",
            DmarcStatus::Fail,
            Policy::Reject,
        ));
        assert_eq!(d.action, Action::Accept);
        assert_eq!(d.disposition, Disposition::None);
        assert_eq!(d.overrides[0].kind, "local_policy");
        assert!(d.branch.contains("monitor(would reject)"), "{}", d.branch);
        // A look-alike domain is not covered by the override.
        let d = decide_plain(&verdict(
            "notmonitored.example",
            DmarcStatus::Fail,
            Policy::Reject,
        ));
        assert_eq!(d.action, Action::Reject);
    }

    #[test]
    fn trusted_arc_sealer_overrides_a_failure() {
        let mut v = verdict("victim.example", DmarcStatus::Fail, Policy::Reject);
        let aar = |text: &str| Some((1, text.as_bytes().to_vec()));
        v.arc = ArcVerdict {
            status: "pass",
            sealer: Some("lists.example".to_string()),
            sealer_results: aar("i=1; lists.example; dmarc=pass header.from=victim.example"),
        };
        let d = decide_plain(&v);
        assert_eq!(d.action, Action::Accept);
        assert_eq!(d.overrides[0].kind, "trusted_forwarder");
        assert!(d.arc_override.as_deref().unwrap().starts_with("applied"));
        v.arc.sealer = Some("untrusted.example".to_string());
        assert_eq!(decide_plain(&v).action, Action::Reject);
        v.arc.status = "fail";
        v.arc.sealer = Some("lists.example".to_string());
        assert_eq!(decide_plain(&v).action, Action::Reject);
    }

    #[test]
    fn trusted_sealer_must_have_seen_the_author_authenticated() {
        let mut v = verdict("victim.example", DmarcStatus::Fail, Policy::Reject);
        for (aar, action) in [
            // The mailing-list spoof: the list recorded the failure.
            (
                Some("i=1; lists.example; dmarc=fail header.from=victim.example"),
                Action::Reject,
            ),
            (
                Some("i=1; lists.example; dkim=pass header.d=lists.example"),
                Action::Reject,
            ),
            (None, Action::Reject),
            (
                Some("i=1; lists.example; dkim=pass header.d=victim.example"),
                Action::Accept,
            ),
        ] {
            v.arc = ArcVerdict {
                status: "pass",
                sealer: Some("lists.example".to_string()),
                sealer_results: aar.map(|a| (1, a.as_bytes().to_vec())),
            };
            let d = decide_plain(&v);
            assert_eq!(d.action, action, "{aar:?}");
            let shown = d.arc_override.unwrap_or_default();
            if action == Action::Reject {
                assert!(shown.starts_with("not applied"), "{shown}");
                assert!(
                    d.branch.contains("arc-override-refused=lists.example"),
                    "{}",
                    d.branch
                );
            }
        }
    }

    #[test]
    fn legacy_pct_when_honoured() {
        let v = verdict("victim.example", DmarcStatus::Fail, Policy::Reject);
        let honour = VerifySettings {
            honor_pct: true,
            ..settings()
        };
        // pct=0 never rejects: the sample is empty.
        let d = decide(&v, &table(), &honour, None, Some(0), |p| p > 0);
        assert_eq!(d.action, Action::Quarantine);
        assert_eq!(d.overrides[0].kind, "sampled_out");
        // Inside the sample, the policy applies.
        let d = decide(&v, &table(), &honour, None, Some(50), |_| true);
        assert_eq!(d.action, Action::Reject);
        // Ignored by default.
        let d = decide(&v, &table(), &settings(), None, Some(0), |_| false);
        assert_eq!(d.action, Action::Reject);
    }

    #[test]
    fn test_mode_is_recorded() {
        let mut v = verdict("victim.example", DmarcStatus::Fail, Policy::Quarantine);
        v.dmarc.record = Some(record(Policy::Reject, true));
        let d = decide_plain(&v);
        assert_eq!(d.action, Action::Quarantine);
        assert_eq!(d.overrides[0].kind, "policy_test_mode");
    }

    #[test]
    fn display_name_mismatch_flags_or_quarantines() {
        let v = verdict("attack.example", DmarcStatus::Pass, Policy::Reject);
        let d = decide(
            &v,
            &table(),
            &settings(),
            Some("victim.example"),
            None,
            |_| true,
        );
        assert_eq!(d.action, Action::Accept);
        assert!(d.branch.contains("display-domain=victim.example"));
        let strict = VerifySettings {
            quarantine_display_mismatch: true,
            ..settings()
        };
        let d = decide(&v, &table(), &strict, Some("victim.example"), None, |_| {
            true
        });
        assert_eq!(d.action, Action::Quarantine);
    }
}
