//! DMARC through the milter with the test DNS server (issue 15 items 1-3):
//! rmilter's lenient record parser keeps a domain's policy despite one bad
//! value, several records at one name let the walk go on to the parent,
//! and one tree walk feeds the policy, `pct`, Authentication-Results and
//! `rmilter explain`; a failed lookup the verdict depends on is temperror.

mod common;

use common::dns::{Fault, RType, TestDns, Zone};
use common::drive::{self, Envelope};
use common::milter::TestMilter;
use indymilter_test::{EomAction, Status};

const CLIENT: &str = "198.51.100.7";

fn zone() -> Zone {
    Zone::new()
        // SPF passes for the client at bank.example and bounce.bank.example.
        .txt("bank.example", "v=spf1 ip4:198.51.100.7 -all")
        .txt("bounce.bank.example", "v=spf1 ip4:198.51.100.7 -all")
        .a("bank.example", CLIENT.parse().unwrap())
        .a("sub.bank.example", CLIENT.parse().unwrap())
        .a("x.a.bank.example", CLIENT.parse().unwrap())
        .txt("attack.example", "v=spf1 ip4:198.51.100.7 -all")
}

fn milter(dns: &TestDns, verify: &str) -> TestMilter {
    TestMilter::start_toml(&format!(
        "authserv_id = \"mx.example.org\"\n[verify]\n{verify}\n[dns]\nnameservers = [\"{}\"]\ntimeout = \"500ms\"\nattempts = 1\ncache_size = 0\n",
        dns.addr()
    ))
}

/// (action, Authentication-Results) for an unsigned message.
async fn run(milter: &TestMilter, from: &str, mail_from: &str) -> (String, String) {
    let env = Envelope {
        client_addr: format!("{CLIENT}:40000").parse().unwrap(),
        mail_from: format!("<{mail_from}>"),
        ..Envelope::inbound()
    };
    let out = drive::drive(
        milter.inet_addr(),
        &env,
        &common::message(from, "walk", "body\r\n"),
    )
    .await;
    let action = match &out.status {
        Status::Reject { .. } => "reject",
        Status::Tempfail { .. } => "tempfail",
        Status::Continue
            if out
                .actions
                .iter()
                .any(|a| matches!(a, EomAction::Quarantine { .. })) =>
        {
            "quarantine"
        }
        Status::Continue => "accept",
        _ => "other",
    };
    let results = out
        .inserted("Authentication-Results")
        .first()
        .map(|f| f.replace("\n\t", " "))
        .unwrap_or_default();
    (action.to_string(), results)
}

/// Item 1: one invalid tag value no longer turns a p=reject domain into
/// permerror (which accepted the forgery).
#[tokio::test(flavor = "multi_thread")]
async fn one_bad_value_keeps_the_policy() {
    let mut failures = Vec::new();
    for (record, action, token) in [
        (
            "v=DMARC1; p=reject; adkim=relaxed",
            "reject",
            "policy.dmarc=reject",
        ),
        ("v=DMARC1; p=reject; fo=2", "reject", "policy.dmarc=reject"),
        (
            "v=DMARC1; p=reject; psd=maybe",
            "reject",
            "policy.dmarc=reject",
        ),
        (
            "v=DMARC1; p=reject; aspf=x; t=maybe; future=1",
            "reject",
            "policy.dmarc=reject",
        ),
        // An invalid p with a valid rua: p=none, a failure all the same.
        (
            "v=DMARC1; p=rejects; rua=mailto:d@bank.example",
            "accept",
            "dmarc=fail",
        ),
    ] {
        let dns = TestDns::start(zone().txt("_dmarc.bank.example", record));
        let milter = milter(&dns, "");
        let (got, results) = run(&milter, "ceo@bank.example", "x@attack.example").await;
        if got != action || !results.contains(token) || results.contains("permerror") {
            failures.push(format!("{record}: {got}; {results}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Item 2: several records at the author's name are no record there; the
/// parent's sp applies.
#[tokio::test(flavor = "multi_thread")]
async fn several_records_at_one_name_let_the_parent_apply() {
    let dns = TestDns::start(
        zone()
            .txt("_dmarc.sub.bank.example", "v=DMARC1; p=none")
            .txt("_dmarc.sub.bank.example", "v=DMARC1; p=none; adkim=s")
            .txt("_dmarc.bank.example", "v=DMARC1; p=none; sp=reject"),
    );
    let milter = milter(&dns, "");
    let (action, results) = run(&milter, "ceo@sub.bank.example", "x@attack.example").await;
    assert_eq!(action, "reject", "{results}");
    assert!(
        results.contains("dmarc=fail") && results.contains("policy.dmarc=reject"),
        "{results}"
    );
}

/// Item 3: one walk. The record applied to x.a.bank.example is the
/// Organizational Domain's (bank.example, sp=reject); the legacy pct of
/// the record at a.bank.example, which does not apply, must not sample the
/// message out. `rmilter explain` shows the walk and the record applied.
#[tokio::test(flavor = "multi_thread")]
async fn the_record_applied_feeds_pct_and_explain() {
    let dns = TestDns::start(
        zone()
            .txt("_dmarc.a.bank.example", "v=DMARC1; p=reject; pct=0")
            .txt("_dmarc.bank.example", "v=DMARC1; p=reject"),
    );
    let milter = milter(&dns, "dmarc_pct = \"honor\"");
    let (action, results) = run(&milter, "ceo@x.a.bank.example", "x@attack.example").await;
    assert_eq!(action, "reject", "{results}");
    assert!(results.contains("policy.dmarc=reject"), "{results}");

    let runtime = milter.state.runtime();
    let args = rmilter::explain::ExplainArgs {
        message: "-".into(),
        client_ip: Some(CLIENT.parse().unwrap()),
        helo: Some("mail.attack.example".into()),
        mail_from: Some("x@attack.example".into()),
        auth: None,
        daemon_name: None,
        local: false,
        dns: None,
        config: rmilter::cli::ConfigArg { config: None },
        json: false,
    };
    let trace = rmilter::explain::explain(
        &runtime,
        &args,
        &common::message("ceo@x.a.bank.example", "walk", "body\r\n"),
    )
    .await;
    for want in [
        "walk _dmarc.x.a.bank.example: no record",
        "walk _dmarc.a.bank.example: record (p=reject",
        "walk _dmarc.bank.example: record (p=reject",
        "organizational domain bank.example",
        "record at _dmarc.bank.example: p=reject sp=reject np=reject; applies reject (from sp)",
        "dmarc=fail policy=reject -> reject",
    ] {
        assert!(
            trace.text.contains(want),
            "missing {want:?} in\n{}",
            trace.text
        );
    }
    assert_eq!(trace.json["dmarc"]["record_domain"], "bank.example");
}

/// Item 3: a failed lookup is never skipped. Above the author's own record
/// it only matters where the Organizational Domain does (relaxed
/// alignment of another name); without an author record it always does.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_lookup_that_matters_is_temperror() {
    let dns = TestDns::start(zone().txt("_dmarc.bank.example", "v=DMARC1; p=reject"));
    dns.set_fault_exact("_dmarc.example", Some(RType::TXT), Fault::ServFail);
    let milter = milter(&dns, "");
    // SPF passes for bank.example itself: aligned without the walk above.
    let (action, results) = run(&milter, "ceo@bank.example", "x@bank.example").await;
    assert_eq!(action, "accept", "{results}");
    assert!(results.contains("dmarc=pass"), "{results}");
    // SPF passes for bounce.bank.example: relaxed alignment needs the
    // Organizational Domain, which the failed lookup leaves open.
    let (action, results) = run(&milter, "ceo@bank.example", "x@bounce.bank.example").await;
    assert_eq!(action, "tempfail", "{results}");
    // No record at the author's name, the parent's lookup fails.
    dns.clear_faults();
    dns.set_fault_exact("_dmarc.bank.example", Some(RType::TXT), Fault::ServFail);
    let (action, results) = run(&milter, "ceo@sub.bank.example", "x@attack.example").await;
    assert_eq!(action, "tempfail", "{results}");
}

/// Item 3: the aggregate report's policy_published is the record applied
/// and the name that holds it, from the same walk (not the first record
/// up the tree beside another walk's record).
#[tokio::test(flavor = "multi_thread")]
async fn the_report_gets_the_record_applied() {
    let dns = TestDns::start(
        zone()
            .txt("_dmarc.a.bank.example", "v=DMARC1; p=none; adkim=s")
            .txt("_dmarc.bank.example", "v=DMARC1; p=reject; sp=quarantine"),
    );
    let (milter, sink) = TestMilter::start_toml_recording(&format!(
        "authserv_id = \"mx.example.org\"\n[dns]\nnameservers = [\"{}\"]\ntimeout = \"500ms\"\nattempts = 1\ncache_size = 0\n",
        dns.addr()
    ));
    let (action, results) = run(&milter, "ceo@x.a.bank.example", "x@attack.example").await;
    assert_eq!(action, "quarantine", "{results}");
    let records = sink.take();
    assert_eq!(records.len(), 1, "{records:?}");
    let policy = records[0].policy.as_ref().unwrap();
    assert_eq!(
        (policy.domain.as_str(), policy.p, policy.sp, policy.adkim),
        ("bank.example", "reject", "quarantine", "r")
    );
    assert_eq!(records[0].disposition.as_str(), "quarantine");
}
