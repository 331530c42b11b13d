//! The regression corpus as files (RELIABILITY §8 A4 and C 11–14): each
//! directory under tests/corpus/cases holds a message, the DNS zone it
//! needs and its expected outcome (case.toml), and is run through the
//! milter with the expected action and Authentication-Results asserted.
//! Cases that sign (`[sign]`) are signed at run time with keys generated
//! for sender.example, whose records are added to the zone.

mod common;

use common::dns::{Fault, RType, TestDns, Zone};
use common::drive::{self, Envelope};
use common::keys::TestKeys;
use common::milter::TestMilter;
use common::sign::{SignOptions, sign};
use indymilter_test::Status;
use rmilter::config::KeyAlgorithm;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    description: String,
    reliability: String,
    envelope: EnvelopeSpec,
    sign: Option<SignSpec>,
    faults: Option<Faults>,
    expect: Expect,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnvelopeSpec {
    client: String,
    helo: String,
    mail_from: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct SignSpec {
    #[serde(default)]
    body_length: bool,
    #[serde(default)]
    append: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Faults {
    #[serde(default)]
    timeout: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    /// accept, reject, tempfail, quarantine, refused (550 at end of headers)
    action: String,
    #[serde(default)]
    results: Vec<String>,
    #[serde(default)]
    absent: Vec<String>,
    #[serde(default)]
    never_queried: Vec<String>,
    #[serde(default)]
    max_seconds: Option<u64>,
}

#[tokio::test(flavor = "multi_thread")]
async fn regression_cases() {
    let keys = TestKeys::new(&[("sender.example", "rsa", KeyAlgorithm::Rsa)]);
    let base = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/cases");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&base)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 25, "{} cases", dirs.len());
    let mut failures = Vec::new();
    for dir in &dirs {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let case: Case = toml::from_str(&std::fs::read_to_string(dir.join("case.toml")).unwrap())
            .unwrap_or_else(|e| panic!("{name}/case.toml: {e}"));
        assert!(
            !case.description.is_empty() && case.reliability.starts_with('§'),
            "{name}"
        );
        let mut zone_text = std::fs::read_to_string(dir.join("zone.txt")).unwrap();
        for (owner, value) in keys.dns() {
            zone_text.push_str(&format!("{owner} TXT {value}\n"));
        }
        let dns = TestDns::start(Zone::from_zone_file_lines(&zone_text));
        for name in case.faults.iter().flat_map(|f| &f.timeout) {
            dns.set_fault(name, None, Fault::Timeout);
        }
        let milter = TestMilter::start_toml(&format!(
            "authserv_id = \"mx.example.org\"\n[dns]\nnameservers = [\"{}\"]\ntimeout = \"500ms\"\nattempts = 1\n",
            dns.addr()
        ));
        let mut message = std::fs::read(dir.join("message.eml")).unwrap();
        if let Some(spec) = &case.sign {
            message = sign(
                &keys.keys[0],
                &message,
                &SignOptions {
                    body_length: spec.body_length,
                    ..Default::default()
                },
            );
            message.extend_from_slice(spec.append.as_bytes());
        }
        let env = Envelope {
            client_addr: format!("{}:40000", case.envelope.client).parse().unwrap(),
            helo: case.envelope.helo.clone(),
            mail_from: format!("<{}>", case.envelope.mail_from),
            ..Envelope::inbound()
        };
        let started = Instant::now();
        let out = drive::drive(milter.inet_addr(), &env, &message).await;
        let took = started.elapsed();
        let action = match (&out.status, out.stage) {
            // The From gate's refusal: decided at end of headers, answered
            // at end of message (rmilter negotiates no reply there).
            (Status::Reject { message: Some(m) }, _)
                if m.to_string_lossy()
                    .starts_with("550 5.7.1 message refused: ") =>
            {
                "refused"
            }
            (Status::Reject { .. }, _) => "reject",
            (Status::Tempfail { .. }, _) => "tempfail",
            (Status::Continue, _)
                if out
                    .actions
                    .iter()
                    .any(|a| matches!(a, indymilter_test::EomAction::Quarantine { .. })) =>
            {
                "quarantine"
            }
            (Status::Continue, _) => "accept",
            _ => "other",
        };
        let results = out
            .inserted("Authentication-Results")
            .first()
            .map(|f| f.replace("\n\t", " "))
            .unwrap_or_default();
        let mut problems = Vec::new();
        if action != case.expect.action {
            problems.push(format!("action {action} ({:?})", out.status));
        }
        for want in &case.expect.results {
            if !results.contains(want.as_str()) {
                problems.push(format!("missing {want:?}"));
            }
        }
        for bad in &case.expect.absent {
            if results.contains(bad.as_str()) {
                problems.push(format!("has {bad:?}"));
            }
        }
        for never in &case.expect.never_queried {
            if let Some((q, _, _)) = dns
                .query_log()
                .into_iter()
                .find(|(q, t, _)| q.contains(never.as_str()) && *t != RType::SOA)
            {
                problems.push(format!("queried {q}"));
            }
        }
        if took > Duration::from_secs(case.expect.max_seconds.unwrap_or(30)) {
            problems.push(format!("took {took:?}"));
        }
        if !problems.is_empty() {
            failures.push(format!(
                "{name}: {}\n    results: {results}",
                problems.join("; ")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases:\n{}",
        failures.len(),
        dirs.len(),
        failures.join("\n")
    );
}
