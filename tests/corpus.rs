//! Regression corpora as files, run through the milter with a DNS server
//! on loopback: the From-gate corpus (tests/corpus/from-gate, RELIABILITY
//! §8 A) and the Authentication-Results corpus (tests/corpus/results,
//! §8 B). Each directory's expected.txt gives every case's outcome.

mod common;

use common::dns::{TestDns, Zone};
use common::drive::{self, Envelope, Outcome};
use common::milter::TestMilter;
use indymilter_test::{EomAction, Status};
use std::path::PathBuf;

fn corpus(dir: &str) -> Vec<(String, Vec<String>, Vec<u8>)> {
    let base = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(dir);
    let expected = std::fs::read_to_string(base.join("expected.txt")).unwrap();
    let cases: Vec<(String, Vec<String>, Vec<u8>)> = expected
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let mut words = l.split_whitespace().map(str::to_string);
            let name = words.next().unwrap();
            let message = std::fs::read(base.join(format!("{name}.eml")))
                .unwrap_or_else(|e| panic!("{dir}/{name}.eml: {e}"));
            (name, words.collect(), message)
        })
        .collect();
    // Every file is listed, every listed case has a file.
    let files = std::fs::read_dir(&base)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "eml")
        })
        .count();
    assert_eq!(files, cases.len(), "{dir}: files and expected.txt disagree");
    cases
}

fn dns() -> TestDns {
    TestDns::start(
        Zone::new()
            .a("legitimate.com", "192.0.2.1".parse().unwrap())
            .txt("legitimate.com", "v=spf1 ip4:192.0.2.1 -all")
            .txt("_dmarc.legitimate.com", "v=DMARC1; p=reject")
            .a("attack.com", "198.51.100.9".parse().unwrap())
            .txt("attack.com", "v=spf1 ip4:198.51.100.9 -all")
            .txt("_dmarc.attack.com", "v=DMARC1; p=none")
            .txt("sender.example", "v=spf1 ip4:192.0.2.2 -all")
            .txt("_dmarc.sender.example", "v=DMARC1; p=reject"),
    )
}

fn milter(dns: &TestDns) -> TestMilter {
    TestMilter::start_toml(&format!(
        "authserv_id = \"mx.example.org\"\n[policy]\nreject = \"reject\"\n[dns]\nnameservers = [\"{}\"]\ntimeout = \"1s\"\nattempts = 1\n",
        dns.addr()
    ))
}

fn text(status: &Status) -> String {
    match status {
        Status::Reject { message: Some(m) } | Status::Tempfail { message: Some(m) } => {
            m.to_string_lossy().into_owned()
        }
        other => format!("{other:?}"),
    }
}

fn our_results(out: &Outcome) -> String {
    let fields = out.inserted("Authentication-Results");
    assert_eq!(fields.len(), 1, "{:?}", out.actions);
    fields[0].replace("\n\t", " ")
}

#[tokio::test(flavor = "multi_thread")]
async fn from_gate_corpus() {
    let dns = dns();
    let milter = milter(&dns);
    let env = Envelope {
        client_addr: "198.51.100.9:40000".parse().unwrap(),
        mail_from: "<x@attack.com>".into(),
        ..Envelope::inbound()
    };
    let mut failures = Vec::new();
    for (name, expected, message) in corpus("from-gate") {
        let out = drive::drive(milter.inet_addr(), &env, &message).await;
        let got = match (&out.status, out.stage) {
            // The From gate's refusal (decided at end of headers, answered
            // at end of message: rmilter negotiates no reply there).
            (Status::Reject { .. }, "eom")
                if text(&out.status).starts_with("550 5.7.1 message refused: ")
                    && out.actions.is_empty() =>
            {
                "refused".to_string()
            }
            (Status::Reject { .. }, "eom") if text(&out.status).contains("legitimate.com") => {
                "rejected".to_string()
            }
            (Status::Continue, "eom") => {
                let ar = our_results(&out);
                assert!(!ar.contains(" dmarc=none"), "{name}: dmarc=none: {ar}");
                assert!(
                    !(ar.contains("dmarc=pass") && ar.contains("header.from=legitimate.com")),
                    "{name}: unflagged pass for the victim: {ar}"
                );
                if ar.contains("display name shows an address at legitimate.com") {
                    "flagged".to_string()
                } else if let Some(rest) = ar.split(" dmarc=pass").nth(1) {
                    let domain = rest
                        .split("header.from=")
                        .nth(1)
                        .and_then(|d| d.split([' ', ';']).next())
                        .unwrap_or("");
                    format!("pass:{domain}")
                } else {
                    format!("accepted: {ar}")
                }
            }
            (status, stage) => format!("{stage} {status:?}"),
        };
        if expected.first() != Some(&got) {
            failures.push(format!("{name}: expected {expected:?}, got {got}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test(flavor = "multi_thread")]
async fn authentication_results_corpus() {
    let dns = dns();
    let milter = milter(&dns);
    let env = Envelope {
        client_addr: "203.0.113.66:40000".parse().unwrap(),
        mail_from: "<alice@sender.example>".into(),
        ..Envelope::inbound()
    };
    let mut failures = Vec::new();
    for (name, expected, message) in corpus("results") {
        let removed: usize = expected[0].parse().unwrap();
        let kept: usize = expected[1].parse().unwrap();
        let started = std::time::Instant::now();
        let out = drive::drive(milter.inet_addr(), &env, &message).await;
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "{name} took {:?}",
            started.elapsed()
        );
        // Verdict from rmilter's own checks only: dmarc=fail, p=reject.
        if !matches!(out.status, Status::Reject { .. }) {
            failures.push(format!("{name}: not rejected: {:?}", out.status));
            continue;
        }
        let deletes: Vec<i32> = out
            .actions
            .iter()
            .filter_map(|a| match a {
                EomAction::DeleteHeader { index, .. } => Some(*index),
                _ => None,
            })
            .collect();
        if deletes.len() != removed || deletes.windows(2).any(|w| w[0] < w[1]) {
            failures.push(format!(
                "{name}: deleted {deletes:?}, expected {removed} highest first"
            ));
        }
        let delivered = String::from_utf8_lossy(&out.message).to_string();
        let fields: Vec<&str> = delivered
            .lines()
            .filter(|l| l.starts_with("Authentication-Results:"))
            .collect();
        if fields.len() != kept + 1
            || !fields[0].starts_with("Authentication-Results: mx.example.org;")
        {
            failures.push(format!(
                "{name}: {} fields after editing, first {:?}",
                fields.len(),
                fields.first()
            ));
        }
        let ours = our_results(&out);
        for claim in [
            "dkim=pass",
            "spf=pass",
            "dmarc=pass",
            "header.d=example.net",
            "(null)",
        ] {
            if ours.contains(claim) {
                failures.push(format!(
                    "{name}: our field repeats a claim {claim:?}: {ours}"
                ));
            }
        }
        if ours.contains('\r') || ours.split('\n').skip(1).any(|l| !l.starts_with('\t')) {
            failures.push(format!(
                "{name}: our field is not one folded field: {ours:?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
