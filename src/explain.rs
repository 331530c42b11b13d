//! `rmilter explain MESSAGE.eml`: what the milter would do with one message,
//! and why, step by step: the direction and the rule that decided it, the
//! From gate, forged Authentication-Results that would be removed, then
//! for inbound mail each DKIM signature, SPF for HELO and MAIL FROM, ARC,
//! DMARC (alignment, record, policy branch), the Authentication-Results
//! field and the answer; for outbound mail the keys that sign, the signed
//! header fields and the signatures themselves.
//!
//! It runs the daemon's own code: [`Direction::decide`], the From gate,
//! [`inbound::evaluate`] (verification, the policy decision and the
//! Authentication-Results text) and the signer. `--dns ZONEFILE` answers
//! every lookup from a zone file served on loopback ([`crate::dns::zone`]);
//! without it the resolvers of `[dns]` are asked.

use crate::cli::{ConfigArg, DEFAULT_CONFIG};
use crate::config::{self, Action, Overrides};
use crate::dns::zone::{Zone, ZoneServer};
use crate::identity::{self, Author};
use crate::milter::inbound::{self, Evaluated};
use crate::milter::{ClientFacts, Direction, Reply, login_reply, refusal_reply};
use crate::runtime::Runtime;
use crate::sign::logins::LoginVerdict;
use crate::sign::{self, MessageSigner};
use crate::verify::authres;
use crate::verify::decision::policy_str;
use crate::verify::{Input, Verdict};
use clap::Args;
use serde_json::{Value, json};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// The message (RFC 5322, LF or CRLF line ends)
    #[arg(value_name = "MESSAGE.eml")]
    pub message: PathBuf,
    /// The SMTP client's address (SPF, outbound.networks)
    #[arg(long, value_name = "IP")]
    pub client_ip: Option<IpAddr>,
    /// The HELO/EHLO name
    #[arg(long, value_name = "NAME")]
    pub helo: Option<String>,
    /// The MAIL FROM address [default: the message's Return-Path, else <>]
    #[arg(long, value_name = "ADDR")]
    pub mail_from: Option<String>,
    /// The SASL login name ({auth_authen}): the client authenticated
    #[arg(long, value_name = "USER")]
    pub auth: Option<String>,
    /// Postfix's {daemon_name} (milter_macro_daemon_name of the service)
    #[arg(long, value_name = "NAME")]
    pub daemon_name: Option<String>,
    /// Local submission through sendmail(1) (non_smtpd_milters)
    #[arg(long)]
    pub local: bool,
    /// Answer DNS from this zone file (name [TTL] [IN] TYPE data lines, as
    /// `rmilter keys dns` prints them) instead of the configured resolvers
    #[arg(long, value_name = "ZONEFILE")]
    pub dns: Option<PathBuf>,
    #[command(flatten)]
    pub config: ConfigArg,
    /// Print one JSON document
    #[arg(long)]
    pub json: bool,
}

const EX_CONFIG: u8 = 78;

/// Run `rmilter explain`.
pub fn main(args: ExplainArgs) -> ExitCode {
    let tokio = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&format!("cannot start the runtime: {e}"), 1),
    };
    tokio.block_on(run(args))
}

fn fail(message: &str, code: u8) -> ExitCode {
    eprintln!("rmilter: {message}");
    ExitCode::from(code)
}

async fn run(args: ExplainArgs) -> ExitCode {
    let raw = match std::fs::read(&args.message) {
        Ok(raw) => raw,
        Err(e) => return fail(&format!("{}: {e}", args.message.display()), 1),
    };
    let mut config = match config::load(
        args.config.config.as_deref(),
        Path::new(DEFAULT_CONFIG),
        &Overrides::default(),
    ) {
        Ok(config) => config,
        Err(e) => return fail(&e.to_string(), EX_CONFIG),
    };
    // Offline DNS: the zone file served on loopback, asked instead of [dns].
    let mut _server = None;
    if let Some(path) = &args.dns {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) => return fail(&format!("{}: {e}", path.display()), 1),
        };
        let zone = match Zone::parse(&text) {
            Ok(zone) => zone,
            Err(e) => return fail(&format!("{}: {e}", path.display()), 1),
        };
        let server = match ZoneServer::start(zone).await {
            Ok(server) => server,
            Err(e) => return fail(&format!("cannot serve {}: {e}", path.display()), 1),
        };
        config.dns.nameservers = vec![server.addr()];
        config.dns.attempts = 1;
        _server = Some(server);
    }
    let runtime = match Runtime::from_config(config) {
        Ok(runtime) => runtime,
        Err(e) => return fail(&e.to_string(), EX_CONFIG),
    };
    let trace = explain(&runtime, &args, &crlf(&raw)).await;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&trace.json).unwrap_or_default()
        );
    } else {
        print!("{}", trace.text);
    }
    ExitCode::SUCCESS
}

/// The trace of one message, as text and as JSON.
pub struct Trace {
    pub text: String,
    pub json: Value,
}

/// Header fields: (name, value) byte strings.
type Fields = Vec<(Vec<u8>, Vec<u8>)>;

/// Header fields as the milter receives them from Postfix: name without
/// the colon, value with its leading space and "\n" (not CRLF) folding.
fn fields(message: &[u8]) -> (Fields, usize) {
    let end = message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(message.len(), |i| i + 2);
    let mut out: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for line in message[..end].split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        if matches!(line[0], b' ' | b'\t')
            && let Some(last) = out.last_mut()
        {
            last.1.push(b'\n');
            last.1.extend_from_slice(line);
            continue;
        }
        match line.iter().position(|&b| b == b':') {
            Some(colon) => out.push((line[..colon].to_vec(), line[colon + 1..].to_vec())),
            None => out.push((line.to_vec(), Vec::new())),
        }
    }
    (out, end)
}

/// LF line ends to CRLF, leaving CRLF alone.
fn crlf(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 32);
    let mut prev = 0u8;
    for &b in data {
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        prev = b;
    }
    out
}

fn line(text: &mut String, label: &str, value: impl std::fmt::Display) {
    let _ = writeln!(text, "{label:<13}{value}");
}

/// Explain one CRLF message.
pub async fn explain(runtime: &Runtime, args: &ExplainArgs, message: &[u8]) -> Trace {
    let config = &runtime.config;
    let (headers, header_end) = fields(message);
    let mut text = String::new();
    let mut json = serde_json::Map::new();

    let return_path = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(b"return-path"))
        .map(|(_, v)| String::from_utf8_lossy(v).trim().to_string());
    let (mail_from, mail_from_source) = match (&args.mail_from, &return_path) {
        (Some(m), _) => (m.clone(), "--mail-from"),
        (None, Some(rp)) => (rp.clone(), "Return-Path"),
        (None, None) => (String::new(), "not given"),
    };
    let mail_from = mail_from
        .trim_start_matches('<')
        .trim_end_matches('>')
        .to_string();
    let helo = args.helo.clone().unwrap_or_default();
    line(
        &mut text,
        "message",
        format!(
            "{} ({} bytes, {} header fields)",
            args.message.display(),
            message.len(),
            headers.len()
        ),
    );
    line(
        &mut text,
        "envelope",
        format!(
            "client {} helo {} mail from <{mail_from}> ({mail_from_source}){}",
            args.client_ip
                .map_or_else(|| "(none)".to_string(), |ip| ip.to_string()),
            if helo.is_empty() { "(none)" } else { &helo },
            args.auth
                .as_deref()
                .map_or(String::new(), |u| format!(" auth {u}"))
        ),
    );
    json.insert(
        "envelope".into(),
        json!({
            "client_ip": args.client_ip.map(|ip| ip.to_string()),
            "helo": helo,
            "mail_from": mail_from,
            "auth": args.auth,
            "daemon_name": args.daemon_name,
            "local_submission": args.local,
        }),
    );

    // Direction: the session's rule, with the facts given on the command line.
    let facts = ClientFacts {
        auth_user: args.auth.as_deref().filter(|a| !a.is_empty()),
        local_submission: args.local,
        ip: args.client_ip,
        daemon_name: args.daemon_name.as_deref(),
    };
    let direction = Direction::decide(&config.outbound, &facts);
    let why = direction.describe(&config.outbound, &facts);
    line(&mut text, "direction", &why);
    json.insert(
        "direction".into(),
        json!({
            "outbound": direction.is_outbound(),
            "rule": direction.as_str(),
            "why": why,
        }),
    );

    // Forged Authentication-Results: every field claiming our authserv-id
    // (or whose id cannot be read) is deleted.
    let forged = headers
        .iter()
        .filter(|(n, _)| {
            n.trim_ascii_end()
                .eq_ignore_ascii_case(b"authentication-results")
        })
        .filter(|(_, v)| {
            authres::authserv_id(v).is_none_or(|id| id.eq_ignore_ascii_case(&config.authserv_id))
        })
        .count();
    if forged > 0 {
        line(
            &mut text,
            "removed",
            format!(
                "{forged} Authentication-Results field(s) claiming authserv-id {} (forged)",
                config.authserv_id
            ),
        );
    }
    json.insert("forged_results_removed".into(), json!(forged));

    let gate = identity::author(headers.iter().map(|(n, v)| (&n[..], &v[..])));
    match &gate {
        Ok(author) => {
            let mut shown = format!("author {} (domain {})", author.address, author.domain);
            if let Some(other) = &author.display_domain {
                shown.push_str(&format!("; the display name shows an address at {other}"));
            }
            line(&mut text, "from gate", shown);
            json.insert(
                "from_gate".into(),
                json!({
                    "ok": true,
                    "address": author.address,
                    "domain": author.domain,
                    "display_domain": author.display_domain,
                }),
            );
        }
        Err(refusal) => {
            line(
                &mut text,
                "from gate",
                format!(
                    "refused: {refusal} (actions.bad_from = {})",
                    config.actions.bad_from.as_str()
                ),
            );
            json.insert(
                "from_gate".into(),
                json!({"ok": false, "refusal": refusal.to_string()}),
            );
        }
    }

    let (action, reply, quarantine, results) = if direction.is_outbound() {
        outbound(
            runtime,
            args.auth.as_deref().filter(|a| !a.is_empty()),
            &headers,
            message,
            header_end,
            &gate,
            &mut text,
            &mut json,
        )
    } else {
        match &gate {
            Ok(author) => {
                let input = Input {
                    client_ip: inbound::client_ip(args.client_ip),
                    helo: &helo,
                    mail_from: &mail_from,
                    message,
                    truncated: message.len() > config.limits.max_message_bytes,
                    author,
                    receiver: config.authserv_id.as_str(),
                };
                let evaluated = inbound::evaluate(runtime, &input).await;
                trace_inbound(&evaluated, author, &mut text, &mut json);
                (
                    evaluated.decision.action,
                    evaluated.reply,
                    evaluated.quarantine,
                    Some(evaluated.results),
                )
            }
            Err(refusal) => {
                let action = config.actions.bad_from;
                match action {
                    Action::Reject | Action::Tempfail => {
                        (action, refusal_reply(action, refusal.clone()), None, None)
                    }
                    Action::Accept | Action::Quarantine => {
                        let (field, hold) = inbound::refused(config, refusal);
                        (action, Reply::Continue, hold, Some(field))
                    }
                }
            }
        }
    };

    if let Some(results) = &results {
        let _ = writeln!(text, "Authentication-Results:{}", results_display(results));
    }
    json.insert("authentication_results".into(), json!(results));
    let reply_text = match &reply {
        Reply::Reject { code, xcode, text } | Reply::Tempfail { code, xcode, text } => {
            Some(format!("{code} {xcode} {text}"))
        }
        _ => None,
    };
    let shown_action = match (&reply, &quarantine) {
        (Reply::Reject { .. }, _) => "reject",
        (Reply::Tempfail { .. }, _) => "tempfail",
        (_, Some(_)) => "quarantine",
        _ => "accept",
    };
    let mut action_line = shown_action.to_string();
    if let Some(r) = &reply_text {
        action_line.push_str(&format!(": {r}"));
    }
    if let Some(q) = &quarantine {
        action_line.push_str(&format!(" (hold queue: {q})"));
    }
    if action.as_str() != shown_action {
        action_line.push_str(&format!(" (configured action {})", action.as_str()));
    }
    line(&mut text, "action", action_line);
    json.insert("action".into(), json!(shown_action));
    json.insert("reply".into(), json!(reply_text));
    json.insert("quarantine".into(), json!(quarantine));
    Trace {
        text,
        json: Value::Object(json),
    }
}

/// The Authentication-Results value as it would appear after the colon.
fn results_display(value: &str) -> String {
    if value.starts_with(' ') {
        value.to_string()
    } else {
        format!(" {value}")
    }
}

#[allow(clippy::type_complexity, clippy::too_many_arguments)]
fn outbound(
    runtime: &Runtime,
    login: Option<&str>,
    headers: &[(Vec<u8>, Vec<u8>)],
    message: &[u8],
    header_end: usize,
    gate: &Result<Author, identity::Refusal>,
    text: &mut String,
    json: &mut serde_json::Map<String, Value>,
) -> (Action, Reply, Option<String>, Option<String>) {
    let config = &runtime.config;
    let author = match gate {
        Ok(author) => author,
        Err(refusal) => {
            let action = config.actions.bad_from;
            line(
                text,
                "signing",
                "not signed: the From gate refused the message",
            );
            json.insert(
                "signing".into(),
                json!({"signed": false, "why": "from gate"}),
            );
            return match action {
                Action::Quarantine => (
                    action,
                    Reply::Continue,
                    Some(format!("rmilter: {refusal}")),
                    None,
                ),
                Action::Accept => (action, Reply::Accept, None, None),
                _ => (action, refusal_reply(action, refusal.clone()), None, None),
            };
        }
    };
    let choice = runtime
        .keys
        .choose(&author.address, &author.domain, config.signing.subdomains);
    let rules_json = json!({
        "rule_match": config.signing.rule_match.as_str(),
        "matched": choice.matched,
    });
    if choice.by_rules {
        if choice.matched.is_empty() {
            line(
                text,
                "rules",
                format!(
                    "no [[signing.rule]] matches {} ({} rules)",
                    author.address,
                    config.signing.rules.len()
                ),
            );
        } else {
            line(
                text,
                "rules",
                format!(
                    "{} matches {} (rule_match = {})",
                    choice.matched.join(", "),
                    author.address,
                    config.signing.rule_match.as_str()
                ),
            );
        }
    } else {
        line(text, "rules", "none: keys of the From domain sign");
    }
    if choice.keys.is_empty() {
        let why = if choice.by_rules {
            format!("no signing rule gives a key for {}", author.address)
        } else {
            format!("no signing key for {}", author.domain)
        };
        line(text, "signing", format!("not signed: {why}"));
        json.insert(
            "signing".into(),
            json!({"signed": false, "why": why, "rules": rules_json}),
        );
        return (Action::Accept, Reply::Accept, None, None);
    }
    let mut login_json = Value::Null;
    if let Some(login) = login
        && runtime.logins.enabled()
    {
        match runtime.logins.check(login, &author.address) {
            LoginVerdict::Allowed(why) => {
                line(
                    text,
                    "login",
                    format!("{login} may send as {}: {why}", author.address),
                );
                login_json = json!({"login": login, "allowed": true, "why": why});
            }
            LoginVerdict::Refused(why) => {
                let action = config.signing.logins.action;
                line(text, "login", format!("refused: {why}"));
                line(
                    text,
                    "signing",
                    format!("not signed; signing.logins.action = {}", action.as_str()),
                );
                json.insert(
                    "signing".into(),
                    json!({"signed": false, "why": why, "rules": rules_json, "login": login}),
                );
                return match action {
                    Action::Quarantine => (
                        action,
                        Reply::Continue,
                        Some(format!("rmilter: {why}")),
                        None,
                    ),
                    Action::Accept => (action, Reply::Accept, None, None),
                    _ => (
                        action,
                        login_reply(action, login, &author.address),
                        None,
                        None,
                    ),
                };
            }
        }
    }
    let keys = &choice.keys;
    let names = sign::header_list(&config.signing, headers.iter().map(|(n, _)| &n[..]));
    let mut signer = MessageSigner::start(keys, &names, &config.signing, &message[..header_end]);
    let body = message.get(header_end + 2..).unwrap_or_default();
    signer.body(body);
    let key_list: Vec<Value> = keys
        .iter()
        .map(|k| json!({"domain": k.domain, "selector": k.key.selector, "algorithm": k.key.algorithm.dkim_name(), "bits": k.key.bits, "name": k.key.name}))
        .collect();
    for k in keys {
        line(
            text,
            "signing",
            format!(
                "key d={} s={} a={} ({} bits, {}{}{})",
                k.domain,
                k.key.selector,
                k.key.algorithm.dkim_name(),
                k.key.bits,
                k.key.path.display(),
                k.key
                    .name
                    .as_deref()
                    .map(|n| format!(", key {n}"))
                    .unwrap_or_default(),
                if k.key.domain == crate::config::SENDER_DOMAIN {
                    ", domain \"%\": the From domain"
                } else if k.domain != author.domain {
                    ", third-party signature"
                } else {
                    ""
                }
            ),
        );
    }
    line(text, "signed h=", names.join(":"));
    match signer.finish() {
        Ok(signatures) => {
            for sig in &signatures {
                let _ = writeln!(text, "DKIM-Signature:{}", sig.value);
            }
            json.insert(
                "signing".into(),
                json!({
                    "signed": true,
                    "keys": key_list,
                    "rules": rules_json,
                    "login": login_json,
                    "headers": names,
                    "signatures": signatures.iter().map(|s| s.value.clone()).collect::<Vec<_>>(),
                }),
            );
            (Action::Accept, Reply::Continue, None, None)
        }
        Err(e) => {
            line(text, "signing", format!("failed: {}", e.reason));
            json.insert("signing".into(), json!({"signed": false, "why": e.reason}));
            let action = config.actions.on_error;
            let reply = match action {
                Action::Reject => Reply::Reject {
                    code: "554",
                    xcode: "5.3.0",
                    text: "message could not be processed".to_string(),
                },
                Action::Tempfail => Reply::Tempfail {
                    code: "451",
                    xcode: "4.3.0",
                    text: "temporary local problem, try again later".to_string(),
                },
                _ => Reply::Continue,
            };
            (action, reply, None, None)
        }
    }
}

fn trace_inbound(
    evaluated: &Evaluated,
    author: &Author,
    text: &mut String,
    json: &mut serde_json::Map<String, Value>,
) {
    let v: &Verdict = &evaluated.verdict;
    if v.dkim.is_empty() {
        line(text, "dkim", "none (no DKIM-Signature)");
    }
    for (i, d) in v.dkim.iter().enumerate() {
        let mut shown = format!(
            "signature {}: d={} s={}{}: {}",
            i + 1,
            if d.domain.is_empty() { "?" } else { &d.domain },
            if d.selector.is_empty() {
                "?"
            } else {
                &d.selector
            },
            if d.algorithm.is_empty() {
                String::new()
            } else {
                format!(" a={}", d.algorithm)
            },
            d.status.as_str()
        );
        if !d.reason.is_empty() {
            shown.push_str(&format!(" ({})", d.reason));
        }
        line(text, if i == 0 { "dkim" } else { "" }, shown);
    }
    if v.dkim_skipped > 0 {
        line(
            text,
            "",
            format!(
                "{} more signatures not verified (verify.max_signatures)",
                v.dkim_skipped
            ),
        );
    }
    let spf = |o: &crate::verify::spf::SpfOutcome| {
        let mut s = format!(
            "{}: {}",
            if o.domain.is_empty() {
                "(no domain)"
            } else {
                &o.domain
            },
            o.result.as_str()
        );
        if !o.reason.is_empty() {
            s.push_str(&format!(" ({})", o.reason));
        }
        s
    };
    line(text, "spf helo", spf(&v.spf_helo));
    line(text, "spf mailfrom", spf(&v.spf_mail_from));
    line(
        text,
        "arc",
        match &v.arc.sealer {
            Some(s) => format!("{} (sealer {s})", v.arc.status),
            None => v.arc.status.to_string(),
        },
    );
    let d = &v.dmarc;
    let mut dmarc = format!("{}: {}", d.domain, d.status.as_str());
    if !d.reason.is_empty() && d.status.as_str() != "pass" {
        dmarc.push_str(&format!(" ({})", d.reason));
    }
    line(text, "dmarc", dmarc);
    let record = d.record.as_ref().map(|r| {
        format!(
            "p={} sp={} np={}{}",
            policy_str(r.p),
            policy_str(r.sp),
            policy_str(r.np),
            if r.t { " t=y" } else { "" }
        )
    });
    if let Some(r) = &record {
        let at = d
            .policy_record
            .as_ref()
            .map_or(d.domain.clone(), |p| p.domain.clone());
        line(
            text,
            "",
            format!(
                "record at _dmarc.{at}: {r}; applies {}",
                policy_str(d.policy)
            ),
        );
    }
    line(
        text,
        "",
        format!(
            "aligned: dkim {}, spf {}",
            if d.dkim_aligned { "yes" } else { "no" },
            if d.spf_aligned { "yes" } else { "no" }
        ),
    );
    if let Some(other) = &author.display_domain {
        line(
            text,
            "",
            format!("display name shows an address at {other}"),
        );
    }
    let decision = &evaluated.decision;
    line(text, "policy", &decision.branch);
    for o in &decision.overrides {
        line(text, "", format!("override {}: {}", o.kind, o.comment));
    }
    json.insert(
        "dkim".into(),
        json!(
            v.dkim
                .iter()
                .map(|d| json!({
                    "domain": d.domain, "selector": d.selector, "algorithm": d.algorithm,
                    "result": d.status.as_str(), "reason": d.reason,
                }))
                .collect::<Vec<_>>()
        ),
    );
    json.insert("dkim_skipped".into(), json!(v.dkim_skipped));
    let spf_json = |o: &crate::verify::spf::SpfOutcome| json!({"domain": o.domain, "result": o.result.as_str(), "reason": o.reason});
    json.insert(
        "spf".into(),
        json!({"helo": spf_json(&v.spf_helo), "mailfrom": spf_json(&v.spf_mail_from)}),
    );
    json.insert(
        "arc".into(),
        json!({"result": v.arc.status, "sealer": v.arc.sealer}),
    );
    json.insert(
        "dmarc".into(),
        json!({
            "domain": d.domain,
            "result": d.status.as_str(),
            "reason": d.reason,
            "record": record,
            "record_domain": d.policy_record.as_ref().map(|p| p.domain.clone()),
            "policy": policy_str(d.policy),
            "dkim_aligned": d.dkim_aligned,
            "spf_aligned": d.spf_aligned,
        }),
    );
    json.insert(
        "decision".into(),
        json!({
            "branch": decision.branch,
            "action": decision.action.as_str(),
            "disposition": decision.disposition.as_str(),
            "overrides": decision.overrides.iter().map(|o| json!({"kind": o.kind, "comment": o.comment})).collect::<Vec<_>>(),
        }),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_fields_as_the_milter_gets_them() {
        let (f, end) = fields(b"From: a@b.example\r\nSubject: x\r\n y\r\n\r\nbody\r\n");
        assert_eq!(
            f,
            vec![
                (b"From".to_vec(), b" a@b.example".to_vec()),
                (b"Subject".to_vec(), b" x\n y".to_vec())
            ]
        );
        assert_eq!(end, 35);
        assert_eq!(crlf(b"a\nb\r\nc"), b"a\r\nb\r\nc");
    }
}
