//! Writes the migrated rmilter.toml: every translated setting with a comment
//! naming where it came from (file:line and option), every other key left to
//! rmilter's default (config/rmilter.toml lists them all).

use super::Plan;
use std::fmt::Write;

/// A TOML string literal.
fn q(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        return "[]".into();
    }
    let one_line = format!(
        "[{}]",
        items.iter().map(|i| q(i)).collect::<Vec<_>>().join(", ")
    );
    if one_line.len() <= 80 {
        return one_line;
    }
    let mut out = String::from("[\n");
    for i in items {
        let _ = writeln!(out, "  {},", q(i));
    }
    out.push(']');
    out
}

fn comment(out: &mut String, text: &str) {
    for line in text.lines() {
        let _ = writeln!(out, "# {line}");
    }
}

pub fn render(p: &Plan, sources: &[String]) -> String {
    let mut o = String::new();
    comment(
        &mut o,
        &format!(
            "rmilter configuration written by `rmilter migrate` from\n  {}\n\
             Every key not set here keeps its default (config/rmilter.toml lists them all).\n\
             Check with `rmilter check-config -c FILE`; the migrate report lists what changed.",
            sources.join("\n  ")
        ),
    );
    o.push('\n');
    comment(
        &mut o,
        "rmilter's own socket (restart); Postfix is pointed at it by the printed postconf lines.",
    );
    let _ = writeln!(o, "listen = {}", q(&p.listen));
    if let Some((v, from)) = &p.authserv_id {
        comment(&mut o, &format!("from {from}"));
        let _ = writeln!(o, "authserv_id = {}", q(v));
    }
    comment(
        &mut o,
        "Written by rmilter run; lets `rmilter keys` reload it (restart).",
    );
    let _ = writeln!(o, "pid_file = \"/run/rmilter/rmilter.pid\"");
    match &p.user {
        Some(u) => {
            comment(
                &mut o,
                "The user rmilter switches to after binding (restart).",
            );
            let _ = writeln!(o, "user = {}", q(u));
        }
        None => comment(
            &mut o,
            "The user rmilter switches to after binding (restart); create it first (see the report):\nuser = \"rmilter\"",
        ),
    }
    o.push('\n');

    if let Some(g) = &p.socket_group {
        let _ = writeln!(o, "[socket]");
        comment(&mut o, "Postfix connects as postfix (restart).");
        let _ = writeln!(o, "group = {}\n", q(g));
    }

    if let Some((v, from)) = &p.spool_dir {
        let _ = writeln!(o, "[limits]");
        comment(&mut o, &format!("from {from}"));
        let _ = writeln!(o, "spool_dir = {}\n", q(v));
    }

    if let Some((v, from)) = &p.on_error {
        let _ = writeln!(o, "[actions]");
        comment(&mut o, &format!("from {from}"));
        let _ = writeln!(o, "on_error = {}\n", q(v));
    }

    let _ = writeln!(o, "[outbound]");
    comment(&mut o, "Outbound (signed) mail: any enabled rule below.");
    if let Some((v, from)) = &p.authenticated {
        comment(&mut o, from);
        let _ = writeln!(o, "authenticated = {v}");
    }
    if let Some((v, from)) = &p.networks {
        comment(&mut o, &format!("from {from}"));
        let _ = writeln!(o, "networks = {}", list(v));
    }
    if let Some((v, from)) = &p.daemon_names {
        comment(&mut o, from);
        let _ = writeln!(o, "daemon_names = {}", list(v));
    }
    comment(
        &mut o,
        "sendmail(1) submissions come from 127.0.0.1, an OpenDKIM internal host.",
    );
    let _ = writeln!(o, "local_submission = true\n");

    let _ = writeln!(o, "[signing]");
    if let Some((v, from)) = &p.canonicalization {
        comment(&mut o, &format!("from {from}"));
        let _ = writeln!(o, "canonicalization = {}", q(v));
    }
    if let Some((v, from)) = &p.headers {
        comment(&mut o, &format!("from {from}"));
        let _ = writeln!(o, "headers = {}", list(v));
    }
    if let Some((v, from)) = &p.oversign_headers {
        comment(&mut o, &format!("rmilter's default list plus {from}"));
        let _ = writeln!(o, "oversign_headers = {}", list(v));
    }
    if let Some((v, from)) = &p.expire {
        comment(&mut o, &format!("from {from}"));
        let _ = writeln!(o, "expire = {}", q(v));
    }
    if let Some((v, from)) = &p.subdomains {
        comment(&mut o, &format!("from {from}"));
        let _ = writeln!(o, "subdomains = {v}");
    }
    if let Some(m) = &p.rule_match_all {
        comment(
            &mut o,
            "How rules choose keys: \"first\" (OpenDKIM's default) or \"all\" (MultipleSignatures yes).",
        );
        let _ = writeln!(o, "rule_match = {}", q(m));
    }
    o.push('\n');
    if !p.rules.is_empty() {
        comment(
            &mut o,
            "Signing rules from the SigningTable, in the order OpenDKIM tried them.",
        );
    }
    for r in &p.rules {
        let _ = writeln!(o, "[[signing.rule]]");
        comment(&mut o, &format!("from {}", r.origin));
        let _ = writeln!(o, "sender = {}", q(&r.sender));
        let _ = writeln!(o, "keys = {}\n", list(&r.keys));
    }

    if p.keys.is_empty() {
        comment(
            &mut o,
            "No signing keys were configured: rmilter verifies only.\n",
        );
    }
    for k in &p.keys {
        let _ = writeln!(o, "[[key]]");
        comment(&mut o, &format!("from {}", k.origin));
        if let Some(n) = &k.name {
            let _ = writeln!(o, "name = {}", q(n));
        }
        let _ = writeln!(o, "domain = {}", q(&k.domain));
        let _ = writeln!(o, "selector = {}", q(&k.selector));
        let _ = writeln!(o, "file = {}\n", q(&k.file.display().to_string()));
    }

    if p.dns_timeout.is_some() || p.nameservers.is_some() {
        let _ = writeln!(o, "[dns]");
        if let Some((v, from)) = &p.dns_timeout {
            comment(&mut o, &format!("from {from}"));
            let _ = writeln!(o, "timeout = {}", q(v));
        }
        if let Some((v, from)) = &p.nameservers {
            comment(&mut o, &format!("from {from}"));
            let _ = writeln!(o, "nameservers = {}", list(v));
        }
        o.push('\n');
    }

    if p.min_rsa_bits.is_some() || p.max_signatures.is_some() {
        let _ = writeln!(o, "[verify]");
        if let Some((v, from)) = &p.min_rsa_bits {
            comment(&mut o, &format!("from {from}"));
            let _ = writeln!(o, "min_rsa_bits = {v}");
        }
        if let Some((v, from)) = &p.max_signatures {
            comment(&mut o, &format!("from {from}"));
            let _ = writeln!(o, "max_signatures = {v}");
        }
        o.push('\n');
    }

    let _ = writeln!(o, "[policy]");
    if let Some((v, from)) = &p.monitor {
        comment(&mut o, from);
        let _ = writeln!(o, "monitor = {v}");
    }
    if let Some((v, from)) = &p.quarantine {
        comment(&mut o, from);
        let _ = writeln!(o, "quarantine = {}", q(v));
    }
    o.push('\n');
    for (d, from) in &p.monitor_domains {
        let _ = writeln!(o, "[[policy.domain]]");
        comment(&mut o, &format!("from {from}"));
        let _ = writeln!(o, "domain = {}", q(d));
        let _ = writeln!(o, "monitor = true\n");
    }

    if p.report_enabled.is_some() || p.report_sendmail.is_some() || p.report_email.is_some() {
        let _ = writeln!(o, "[report]");
        if let Some(from) = &p.report_enabled {
            comment(
                &mut o,
                &format!("from {from}: evaluations are stored and reported by rmilter (restart)"),
            );
            let _ = writeln!(o, "enabled = true");
        }
        if let Some((v, from)) = &p.report_sendmail {
            comment(&mut o, &format!("from {from}"));
            let _ = writeln!(o, "sendmail = {}", list(v));
        }
        if let Some((v, from)) = &p.report_email {
            comment(&mut o, &format!("from {from}"));
            let _ = writeln!(o, "email = {}", q(v));
        }
        o.push('\n');
    }
    if p.failure_enabled.is_some() || p.failure_policy_none.is_some() || p.failure_bcc.is_some() {
        let _ = writeln!(o, "[report.failure]");
        if let Some(from) = &p.failure_enabled {
            comment(
                &mut o,
                &format!("from {from}: DMARC failure reports, redacted and rate-limited (restart)"),
            );
            let _ = writeln!(o, "enabled = true");
        }
        if let Some((v, from)) = &p.failure_policy_none {
            comment(&mut o, &format!("from {from}"));
            let _ = writeln!(o, "policy_none = {v}");
        }
        if let Some((v, from)) = &p.failure_bcc {
            comment(&mut o, &format!("from {from}"));
            let _ = writeln!(o, "bcc = {}", list(v));
        }
        o.push('\n');
    }
    o
}
