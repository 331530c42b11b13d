//! End of message for inbound mail: verify, decide, write the one
//! Authentication-Results field, hand the evaluation to the report store,
//! and log the decision in one line.
//!
//! [`evaluate`] (verdict, decision, Authentication-Results text, answer) is
//! the one evaluation: `rmilter explain` calls it too.

use super::MilterState;
use super::message::{Client, Message, client_text};
use super::reply::{EomPlan, Reply};
use crate::config::{Action, Config};
use crate::identity::{Author, Refusal};
use crate::report::failure::{self, DeliveryResult, DkimFacts, FailureSample, SpfFacts};
use crate::report::failures::Capture;
use crate::report::{DkimRecord, Evaluation, PublishedPolicy, SpfRecord};
use crate::runtime::Runtime;
use crate::verify::authres::{self, ResInfo};
use crate::verify::decision::{self, Decision, policy_str};
use crate::verify::spf::SpfOutcome;
use crate::verify::{DmarcStatus, Input, Verdict};
use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::info;

/// Everything the inbound evaluation decides about one message.
#[derive(Debug, Clone)]
pub struct Evaluated {
    pub verdict: Verdict,
    pub decision: Decision,
    /// The Authentication-Results value rmilter inserts (without the
    /// leading space; folded with "\n\t").
    pub results: String,
    /// What Postfix is told at end of message.
    pub reply: Reply,
    /// The hold-queue reason when the action is quarantine.
    pub quarantine: Option<String>,
    /// How long verification took, DNS included.
    pub took: Duration,
    /// The resolver was known to be down: nothing was looked up.
    pub resolver_was_down: bool,
}

/// Verify one inbound message and decide: the verdict, the policy
/// decision, the Authentication-Results text and the answer. The daemon's
/// end of message and `rmilter explain` both call this.
pub async fn evaluate(runtime: &Runtime, input: &Input<'_>) -> Evaluated {
    let config = &runtime.config;
    let started = Instant::now();
    let resolver_was_down = runtime.verifier.resolver_down();
    let verdict = runtime.verifier.verify(&config.verify, input).await;
    let took = started.elapsed();
    let pct = verdict.dmarc.policy_record.as_ref().and_then(|r| r.pct);
    let decision = decision::decide(
        &verdict,
        &config.policy,
        &config.verify,
        input.author.display_domain.as_deref(),
        pct,
        sample,
    );
    let results = results_field(config.authserv_id.as_str(), &verdict, input.author);
    let (code, xcode, text) = decision.reply.clone();
    let mut quarantine = None;
    let reply = match decision.action {
        Action::Accept => Reply::Continue,
        Action::Quarantine => {
            quarantine = Some(format!(
                "rmilter: dmarc={} for {}",
                verdict.dmarc.status.as_str(),
                verdict.dmarc.domain
            ));
            Reply::Continue
        }
        Action::Reject => Reply::Reject { code, xcode, text },
        Action::Tempfail => Reply::Tempfail { code, xcode, text },
    };
    Evaluated {
        verdict,
        decision,
        results,
        reply,
        quarantine,
        took,
        resolver_was_down,
    }
}

/// The From gate refused and the configured action (`actions.bad_from`,
/// accept or quarantine) lets the message in: the Authentication-Results
/// value saying so (never dmarc=pass or dmarc=none, RELIABILITY F1-F4) and
/// the hold-queue reason when the action is quarantine.
pub fn refused(config: &Config, refusal: &Refusal) -> (String, Option<String>) {
    let field = authres::render(
        config.authserv_id.as_str(),
        &[ResInfo::new("dmarc", "permerror").comment(refusal.to_string())],
    );
    let hold =
        (config.actions.bad_from == Action::Quarantine).then(|| format!("rmilter: {refusal}"));
    (field, hold)
}

/// The Authentication-Results value for an inbound message let in without
/// verification (`why`): dmarc=permerror, never pass or none.
pub fn not_verified(config: &Config, why: &str) -> String {
    authres::render(
        config.authserv_id.as_str(),
        &[ResInfo::new("dmarc", "permerror").comment(format!("{why}; not verified"))],
    )
}

/// The client address verification uses: IPv4-mapped IPv6 as IPv4.
pub fn client_ip(addr: Option<IpAddr>) -> Option<IpAddr> {
    addr.map(|ip| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    })
}

pub(super) async fn finish(
    state: &Arc<MilterState>,
    client: &Client,
    mut msg: Message,
    mut plan: EomPlan,
) -> EomPlan {
    let config = &msg.runtime.config;
    if let Some(refusal) = &msg.refusal {
        let (field, hold) = refused(config, refusal);
        plan.insert.push(("Authentication-Results", field));
        if hold.is_some() {
            plan.quarantine = hold;
        }
        info!(
            queue_id = %msg.queue_id,
            client = %client_text(client),
            reason = %refusal,
            dmarc = "permerror",
            action = config.actions.bad_from.as_str(),
            "inbound message decided"
        );
        return plan;
    }
    let Some(author) = msg.author.as_ref() else {
        return plan;
    };
    let ip = client_ip(client.addr.map(|a| a.ip()));
    if let Some(error) = &msg.spool_error {
        plan.internal_error(
            state.metrics(),
            config.actions.on_error,
            &msg.queue_id,
            &format!("spool: {error}"),
            "rmilter: message could not be verified",
        );
        return plan;
    }
    let mut spool = msg.spool.take();
    // A spooled message waits for its turn (bounded memory), but never
    // longer than the verification time budget: after that it goes ahead
    // rather than run into the MTA's timeout.
    let _turn = match spool.as_ref() {
        Some(s) if s.is_spooled() => {
            tokio::time::timeout(config.verify.time_budget, state.spooled_turn())
                .await
                .ok()
                .flatten()
        }
        _ => None,
    };
    let contents = match spool.as_mut().map(|s| s.contents()).transpose() {
        Ok(contents) => contents,
        Err(e) => {
            plan.internal_error(
                state.metrics(),
                config.actions.on_error,
                &msg.queue_id,
                &format!("spool: {e}"),
                "rmilter: message could not be verified",
            );
            return plan;
        }
    };
    let input = Input {
        client_ip: ip,
        helo: &client.helo,
        mail_from: &msg.sender,
        message: contents.as_deref().unwrap_or_default(),
        truncated: msg.truncated,
        author,
        receiver: config.authserv_id.as_str(),
    };
    let evaluated = evaluate(&msg.runtime, &input).await;
    let capture = failure_capture(
        config,
        client,
        &msg,
        ip,
        contents.as_deref().unwrap_or_default(),
        &evaluated,
    );
    drop(contents);
    let Evaluated {
        verdict,
        decision,
        results,
        reply,
        quarantine,
        took,
        resolver_was_down,
    } = evaluated;
    let metrics = state.metrics();
    metrics.verified(&verdict, took, resolver_was_down);
    metrics.action(decision.action, "dmarc");
    plan.insert.push(("Authentication-Results", results));
    plan.reply = reply;
    if quarantine.is_some() {
        plan.quarantine = quarantine;
    }
    if decision.action != Action::Tempfail
        && let Some(found) = &verdict.dmarc.policy_record
    {
        state
            .sink()
            .record(evaluation(&msg, ip, &verdict, &decision, &found.domain));
    }
    if let Some(capture) = capture {
        state.sink().failure(capture);
    }
    log_decision(&msg, client, &verdict, &decision);
    plan
}

/// The failure-report sample of a message (RFC 9991), when
/// `[report.failure]` is on, DMARC failed, the applied record has `ruf=`
/// mailto: addresses, and its `fo=` asks for this failure. Only copies:
/// the queue and the store are the writer's business.
fn failure_capture(
    config: &Config,
    client: &Client,
    msg: &Message,
    ip: Option<IpAddr>,
    message: &[u8],
    evaluated: &Evaluated,
) -> Option<Capture> {
    let settings = &config.report.failure;
    let verdict = &evaluated.verdict;
    if !settings.enabled
        || verdict.dmarc.status != DmarcStatus::Fail
        // A tempfailed message comes back; it is reported then.
        || evaluated.decision.action == Action::Tempfail
    {
        return None;
    }
    if !settings.policy_none && policy_str(verdict.dmarc.policy) == "none" {
        return None;
    }
    let record = verdict.dmarc.record.as_ref()?;
    let policy_domain = verdict.dmarc.policy_record.as_ref()?.domain.clone();
    // RFC 9989 §4.7 / RFC 7489 §6.2: a receiver may cap the number of
    // reporting URIs it uses.
    let destinations: Vec<(String, usize)> = record
        .ruf
        .iter()
        .filter_map(|u| u.address.as_ref().map(|a| (a.clone(), u.max_size)))
        .take(settings.max_ruf_addresses)
        .collect();
    if destinations.is_empty() {
        return None;
    }
    let mut sample = FailureSample {
        reported_domain: verdict.dmarc.domain.clone(),
        source_ip: ip?,
        arrival: crate::report::unix_time(std::time::SystemTime::now()),
        helo: client.helo.clone(),
        mail_from: msg.sender.clone(),
        // RFC 9991 §3: Original-Rcpt-To only if the receiver chose to.
        rcpt_to: if settings.include_rcpt_to {
            msg.rcpt_to.clone()
        } else {
            Vec::new()
        },
        authentication_results: evaluated.results.clone(),
        dkim: verdict
            .dkim
            .iter()
            .filter(|d| !d.domain.is_empty())
            .map(|d| DkimFacts {
                domain: d.domain.clone(),
                selector: d.selector.clone(),
                identity: format!("@{}", d.domain),
                result: d.status.as_str().to_string(),
            })
            .collect(),
        spf: Some(SpfFacts {
            domain: verdict.spf_mail_from.domain.clone(),
            scope: if msg.sender.is_empty() {
                "helo"
            } else {
                "mfrom"
            }
            .to_string(),
            result: verdict.spf_mail_from.result.as_str().to_string(),
            record: None,
        }),
        dkim_aligned_pass: verdict.dmarc.dkim_aligned,
        spf_aligned_pass: verdict.dmarc.spf_aligned,
        delivery_result: match evaluated.decision.action {
            Action::Accept => DeliveryResult::Delivered,
            Action::Quarantine => DeliveryResult::Spam,
            Action::Reject => DeliveryResult::Policy,
            Action::Tempfail => DeliveryResult::Other,
        },
        headers: Vec::new(),
        body: None,
    };
    // RFC 9991 §3: fo= decides which failures are reported. The copy of the
    // message is made only for those.
    if !failure::wanted(&record.fo, &sample) {
        return None;
    }
    let (headers, body) = split_message(message);
    sample.headers = headers.to_vec();
    sample.body = settings
        .include_body
        .then(|| body[..body.len().min(settings.max_body_bytes)].to_vec());
    Some(Capture {
        policy_domain,
        destinations,
        sample,
    })
}

/// The header section (each line CRLF-terminated, without the empty line)
/// and the body of a spooled message.
fn split_message(message: &[u8]) -> (&[u8], &[u8]) {
    match message.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(i) => (&message[..i + 2], &message[i + 4..]),
        None => (message, &[]),
    }
}

/// Whether a message falls inside a `pct=` sample.
fn sample(pct: u8) -> bool {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.finish() % 100 < u64::from(pct)
}

fn spf_info(outcome: &SpfOutcome, property: &'static str, value: &str) -> ResInfo {
    let mut info = ResInfo::new("spf", outcome.result.as_str());
    if !outcome.reason.is_empty() {
        info = info.comment(outcome.reason.clone());
    }
    info.prop(property, value.to_string())
}

/// The Authentication-Results value: DKIM per signature, SPF for MAIL FROM
/// and HELO, DMARC with the policy, ARC.
pub fn results_field(authserv: &str, verdict: &Verdict, author: &Author) -> String {
    let mut results = Vec::new();
    if verdict.dkim.is_empty() {
        results.push(ResInfo::new("dkim", "none"));
    }
    for dkim in &verdict.dkim {
        let mut info = ResInfo::new("dkim", dkim.status.as_str());
        if !dkim.reason.is_empty() {
            info = info.comment(dkim.reason.clone());
        }
        results.push(
            info.prop("header.d", dkim.domain.clone())
                .prop("header.s", dkim.selector.clone())
                .prop("header.a", dkim.algorithm.clone())
                .prop("header.b", dkim.b.clone()),
        );
    }
    if verdict.dkim_skipped > 0 {
        results.push(ResInfo::new("dkim", "policy").comment(format!(
            "{} more signatures not verified (verify.max_signatures)",
            verdict.dkim_skipped
        )));
    }
    results.push(spf_info(
        &verdict.spf_mail_from,
        "smtp.mailfrom",
        &verdict.spf_mail_from.domain,
    ));
    results.push(spf_info(
        &verdict.spf_helo,
        "smtp.helo",
        &verdict.spf_helo.domain,
    ));
    let dmarc = &verdict.dmarc;
    let mut comment = Vec::new();
    if let Some(record) = &dmarc.record {
        comment.push(format!(
            "p={} sp={}",
            policy_str(record.p),
            policy_str(record.sp)
        ));
        if record.t {
            comment.push("t=y".to_string());
        }
    }
    if !dmarc.reason.is_empty() && dmarc.status != DmarcStatus::Pass {
        comment.push(dmarc.reason.clone());
    }
    if let Some(other) = &author.display_domain {
        comment.push(format!("display name shows an address at {other}"));
    }
    let mut info = ResInfo::new("dmarc", dmarc.status.as_str());
    if !comment.is_empty() {
        info = info.comment(comment.join("; "));
    }
    info = info.prop("header.from", dmarc.domain.clone());
    if dmarc.record.is_some() {
        info = info.prop("policy.dmarc", policy_str(dmarc.policy));
    }
    results.push(info);
    let mut arc = ResInfo::new("arc", verdict.arc.status);
    if let Some(sealer) = &verdict.arc.sealer {
        arc = arc.comment(format!("sealer {sealer}"));
    }
    results.push(arc);
    authres::render(authserv, &results)
}

fn evaluation(
    msg: &Message,
    ip: Option<IpAddr>,
    verdict: &Verdict,
    decision: &Decision,
    policy_domain: &str,
) -> Evaluation {
    let record = verdict.dmarc.record.as_ref();
    let alignment = |a: mail_auth::dmarc::Alignment| match a {
        mail_auth::dmarc::Alignment::Relaxed => "r",
        mail_auth::dmarc::Alignment::Strict => "s",
    };
    Evaluation {
        time: std::time::SystemTime::now(),
        source_ip: ip,
        header_from: verdict.dmarc.domain.clone(),
        envelope_from: verdict.spf_mail_from.domain.clone(),
        policy: record.map(|r| PublishedPolicy {
            domain: policy_domain.to_string(),
            p: policy_str(r.p),
            sp: policy_str(r.sp),
            np: policy_str(r.np),
            adkim: alignment(r.adkim),
            aspf: alignment(r.aspf),
            testing: r.t,
            psd: match r.psd {
                mail_auth::dmarc::Psd::Yes => "y",
                mail_auth::dmarc::Psd::No => "n",
                mail_auth::dmarc::Psd::Default => "u",
            },
        }),
        disposition: decision.disposition,
        dkim_aligned: if verdict.dmarc.dkim_aligned {
            "pass"
        } else {
            "fail"
        },
        spf_aligned: if verdict.dmarc.spf_aligned {
            "pass"
        } else {
            "fail"
        },
        dkim: verdict
            .dkim
            .iter()
            .filter(|d| !d.domain.is_empty())
            .map(|d| DkimRecord {
                domain: d.domain.clone(),
                selector: d.selector.clone(),
                result: d.status.as_str(),
            })
            .collect(),
        spf: vec![SpfRecord {
            domain: verdict.spf_mail_from.domain.clone(),
            scope: if msg.sender.is_empty() {
                "helo"
            } else {
                "mfrom"
            },
            result: verdict.spf_mail_from.result.as_str(),
        }],
        overrides: decision.overrides.clone(),
    }
}

fn log_decision(msg: &Message, client: &Client, verdict: &Verdict, decision: &Decision) {
    let dkim = verdict
        .dkim
        .iter()
        .map(|d| format!("{}:{}={}", d.domain, d.selector, d.status.as_str()))
        .collect::<Vec<_>>()
        .join(",");
    let aligned = match (verdict.dmarc.dkim_aligned, verdict.dmarc.spf_aligned) {
        (true, true) => "dkim+spf",
        (true, false) => "dkim",
        (false, true) => "spf",
        (false, false) => "none",
    };
    // One line per message at info: the action field says what happened.
    info!(
        queue_id = %msg.queue_id,
        client = %client_text(client),
        from_domain = %verdict.dmarc.domain,
        spf_mailfrom = %format!("{}={}", verdict.spf_mail_from.domain, verdict.spf_mail_from.result.as_str()),
        spf_helo = %verdict.spf_helo.result.as_str(),
        dkim = %dkim,
        arc = verdict.arc.status,
        aligned,
        branch = %decision.branch,
        arc_override = decision.arc_override.as_deref().unwrap_or(""),
        action = decision.action.as_str(),
        "inbound message decided"
    );
}
