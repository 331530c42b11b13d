//! Inbound verification through the milter protocol, with a real DNS
//! server on loopback: DKIM, SPF, DMARC (RFC 9989) outcomes and the policy
//! actions, the one Authentication-Results field, forged-field removal,
//! the temperror table, and the evaluation record.

mod common;

use common::dns::{Fault, RType, TestDns, Zone};
use common::drive::{self, Envelope, Outcome};
use common::keys::{TestKey, TestKeys};
use common::milter::TestMilter;
use common::sign::{SignOptions, sign};
use indymilter_test::{EomAction, Status};
use rmilter::config::KeyAlgorithm;
use std::net::Ipv4Addr;

const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
const AUTHSERV: &str = "mx.example.org";

struct World {
    dns: TestDns,
    keys: TestKeys,
}

impl World {
    fn new() -> World {
        let keys = TestKeys::new(&[
            ("sender.example", "rsa", KeyAlgorithm::Rsa),
            ("sender.example", "ed", KeyAlgorithm::Ed25519),
            ("quarantine.example", "q", KeyAlgorithm::Ed25519),
            ("strict.example", "s", KeyAlgorithm::Ed25519),
            ("third.example", "t", KeyAlgorithm::Ed25519),
        ]);
        let mut zone = Zone::new()
            .a("sender.example", CLIENT)
            .txt("sender.example", "v=spf1 ip4:198.51.100.7 -all")
            .txt(
                "_dmarc.sender.example",
                "v=DMARC1; p=reject; rua=mailto:dmarc@sender.example",
            )
            .txt("quarantine.example", "v=spf1 -all")
            .txt("_dmarc.quarantine.example", "v=DMARC1; p=quarantine")
            .txt("_dmarc.nopolicy.example", "v=DMARC1; p=none")
            .txt(
                "_dmarc.strict.example",
                "v=DMARC1; p=reject; adkim=s; aspf=s",
            )
            .txt(
                "_dmarc.org.example",
                "v=DMARC1; p=none; sp=reject; np=quarantine",
            )
            .a("sub.org.example", CLIENT)
            .txt("_dmarc.testing.example", "v=DMARC1; p=reject; t=y")
            .txt("_dmarc.walk.example", "v=DMARC1; p=reject")
            .txt("_dmarc.pct.example", "v=DMARC1; p=reject; pct=0");
        for (name, value) in keys.dns() {
            zone = zone.txt(&name, &value);
        }
        World {
            dns: TestDns::start(zone),
            keys,
        }
    }

    fn key(&self, domain: &str) -> &TestKey {
        self.keys.keys.iter().find(|k| k.domain == domain).unwrap()
    }

    fn toml(&self, extra: &str) -> String {
        format!(
            "authserv_id = \"{AUTHSERV}\"\n{extra}\n[dns]\nnameservers = [\"{}\"]\ntimeout = \"1s\"\nattempts = 1\n",
            self.dns.addr()
        )
    }

    fn milter(&self, extra: &str) -> TestMilter {
        TestMilter::start_toml(&self.toml(extra))
    }
}

fn envelope(mail_from: &str) -> Envelope {
    Envelope {
        mail_from: format!("<{mail_from}>"),
        client_addr: (CLIENT, 40123).into(),
        ..Envelope::inbound()
    }
}

fn results(out: &Outcome) -> String {
    let fields = out.inserted("Authentication-Results");
    assert_eq!(
        fields.len(),
        1,
        "exactly one Authentication-Results: {:?}",
        out.actions
    );
    fields[0].replace("\n\t", " ")
}

fn reply(out: &Outcome) -> String {
    match &out.status {
        Status::Reject { message: Some(m) } | Status::Tempfail { message: Some(m) } => {
            m.to_string_lossy().into_owned()
        }
        other => format!("{other:?}"),
    }
}

fn quarantined(out: &Outcome) -> bool {
    out.actions
        .iter()
        .any(|a| matches!(a, EomAction::Quarantine { .. }))
}

#[tokio::test(flavor = "multi_thread")]
async fn aligned_dkim_passes_dmarc_with_one_results_field_on_top() {
    let w = World::new();
    let milter = w.milter("");
    let raw = sign(
        w.key("sender.example"),
        &common::message("Alice <alice@sender.example>", "hi", "Hello.\r\n"),
        &SignOptions::default(),
    );
    let out = drive::drive(
        milter.inet_addr(),
        &envelope("bounce@elsewhere.example"),
        &raw,
    )
    .await;
    assert_eq!(out.status, Status::Continue, "{}", reply(&out));
    let ar = results(&out);
    assert!(ar.starts_with(&format!(" {AUTHSERV};")), "{ar}");
    assert!(
        ar.contains("dkim=pass header.d=sender.example header.s=rsa header.a=rsa-sha256 header.b="),
        "{ar}"
    );
    assert!(
        ar.contains(
            "dmarc=pass (p=reject sp=reject) header.from=sender.example policy.dmarc=reject"
        ),
        "{ar}"
    );
    assert!(ar.contains("smtp.mailfrom=elsewhere.example"), "{ar}");
    assert!(ar.contains("smtp.helo=mail.example.net"), "{ar}");
    assert!(ar.contains("arc=none"), "{ar}");
    assert!(
        matches!(&out.actions[..], [EomAction::InsertHeader { index: 0, .. }]),
        "{:?}",
        out.actions
    );
    // The delivered message carries exactly that one field.
    let text = String::from_utf8_lossy(&out.message);
    assert_eq!(text.matches("Authentication-Results:").count(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_from_of_a_reject_domain_gets_550() {
    let w = World::new();
    let milter = w.milter("");
    let raw = common::message("CEO <ceo@sender.example>", "wire money", "Now.\r\n");
    let mut env = envelope("ceo@sender.example");
    env.client_addr = "203.0.113.66:5555".parse().unwrap();
    let out = drive::drive(milter.inet_addr(), &env, &raw).await;
    let text = reply(&out);
    assert!(matches!(out.status, Status::Reject { .. }), "{text}");
    assert!(
        text.starts_with("550 5.7.1 ") && text.contains("sender.example"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn quarantine_policy_holds_the_message() {
    let w = World::new();
    let milter = w.milter("");
    let raw = common::message("news@quarantine.example", "offer", "x\r\n");
    let out = drive::drive(
        milter.inet_addr(),
        &envelope("news@quarantine.example"),
        &raw,
    )
    .await;
    assert_eq!(out.status, Status::Continue);
    assert!(quarantined(&out), "{:?}", out.actions);
    assert!(results(&out).contains("dmarc=fail"), "{}", results(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn policy_none_and_no_record_are_accepted() {
    let w = World::new();
    let milter = w.milter("");
    for (from, dmarc) in [
        ("a@nopolicy.example", "dmarc=fail"),
        ("a@norecord.example", "dmarc=none"),
    ] {
        let out = drive::drive(
            milter.inet_addr(),
            &envelope(from),
            &common::message(from, "s", "b\r\n"),
        )
        .await;
        assert_eq!(out.status, Status::Continue, "{from}: {}", reply(&out));
        assert!(!quarantined(&out));
        assert!(results(&out).contains(dmarc), "{from}: {}", results(&out));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn relaxed_and_strict_alignment() {
    let w = World::new();
    let milter = w.milter("");
    // sender.example signs for news.sender.example: relaxed alignment passes
    // (the subdomain inherits p=reject via sp).
    let raw = sign(
        w.key("sender.example"),
        &common::message("news@news.sender.example", "s", "b\r\n"),
        &SignOptions::default(),
    );
    let out = drive::drive(milter.inet_addr(), &envelope("x@elsewhere.example"), &raw).await;
    assert_eq!(out.status, Status::Continue, "{}", reply(&out));
    assert!(results(&out).contains("dmarc=pass"), "{}", results(&out));
    // strict.example requires an exact d=: a parent signature fails under adkim=s.
    let raw = sign(
        w.key("strict.example"),
        &common::message("x@mail.strict.example", "s", "b\r\n"),
        &SignOptions::default(),
    );
    let out = drive::drive(milter.inet_addr(), &envelope("x@elsewhere.example"), &raw).await;
    assert!(
        matches!(out.status, Status::Reject { .. }),
        "{}",
        reply(&out)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn subdomain_and_nonexistent_subdomain_policies() {
    let w = World::new();
    let milter = w.milter("");
    // sp=reject applies to an existing subdomain.
    let out = drive::drive(
        milter.inet_addr(),
        &envelope("x@elsewhere.example"),
        &common::message("a@sub.org.example", "s", "b\r\n"),
    )
    .await;
    assert!(
        matches!(out.status, Status::Reject { .. }),
        "sp: {}",
        reply(&out)
    );
    // np=quarantine applies to a name that does not exist (RFC 9989 §4.7).
    let out = drive::drive(
        milter.inet_addr(),
        &envelope("x@elsewhere.example"),
        &common::message("a@nx.org.example", "s", "b\r\n"),
    )
    .await;
    assert_eq!(out.status, Status::Continue, "np: {}", reply(&out));
    assert!(quarantined(&out), "np: {:?}", out.actions);
    // p=none for the organizational domain itself.
    let out = drive::drive(
        milter.inet_addr(),
        &envelope("x@elsewhere.example"),
        &common::message("a@org.example", "s", "b\r\n"),
    )
    .await;
    assert_eq!(out.status, Status::Continue);
    assert!(!quarantined(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn testing_mode_lowers_the_policy_one_level() {
    let w = World::new();
    let milter = w.milter("");
    let out = drive::drive(
        milter.inet_addr(),
        &envelope("x@elsewhere.example"),
        &common::message("a@testing.example", "s", "b\r\n"),
    )
    .await;
    assert_eq!(out.status, Status::Continue, "{}", reply(&out));
    assert!(quarantined(&out), "t=y: reject becomes quarantine");
}

#[tokio::test(flavor = "multi_thread")]
async fn tree_walk_for_a_deep_name_makes_the_rfc_queries() {
    let w = World::new();
    let milter = w.milter("");
    w.dns.clear_log();
    let from = "a@a.b.c.d.e.f.g.h.mail.walk.example";
    let out = drive::drive(
        milter.inet_addr(),
        &envelope("x@elsewhere.example"),
        &common::message(from, "s", "b\r\n"),
    )
    .await;
    assert!(
        matches!(out.status, Status::Reject { .. }),
        "{}",
        reply(&out)
    );
    let mut dmarc: Vec<String> = w
        .dns
        .query_log()
        .into_iter()
        .filter(|(name, t, _)| *t == RType::TXT && name.starts_with("_dmarc."))
        .map(|(name, _, _)| name)
        .collect();
    dmarc.dedup();
    // RFC 9989 §4.10: the author domain, then its last 7 labels, then one
    // label less each step down to the top-level domain: 8 queries at most.
    assert_eq!(
        dmarc,
        [
            "_dmarc.a.b.c.d.e.f.g.h.mail.walk.example",
            "_dmarc.e.f.g.h.mail.walk.example",
            "_dmarc.f.g.h.mail.walk.example",
            "_dmarc.g.h.mail.walk.example",
            "_dmarc.h.mail.walk.example",
            "_dmarc.mail.walk.example",
            "_dmarc.walk.example",
            "_dmarc.example",
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn dns_temperror_is_a_451_never_none_never_5xx() {
    let w = World::new();
    let milter = w.milter("");
    // The _dmarc lookup times out: no verdict, tempfail.
    w.dns
        .set_fault("_dmarc.sender.example", Some(RType::TXT), Fault::Timeout);
    let raw = common::message("ceo@sender.example", "s", "b\r\n");
    let mut env = envelope("ceo@sender.example");
    env.client_addr = "203.0.113.66:5555".parse().unwrap();
    let out = drive::drive(milter.inet_addr(), &env, &raw).await;
    assert!(reply(&out).starts_with("451 4.4.3 "), "{}", reply(&out));
    w.dns.clear_faults();

    // The aligned DKIM key lookup fails temporarily and SPF fails, under
    // p=reject: temperror and tempfail, not a reject (RFC 9989 §5.3.6;
    // OpenDMARC rejected here).
    w.dns
        .set_fault("rsa._domainkey.sender.example", None, Fault::ServFail);
    let raw = sign(
        w.key("sender.example"),
        &common::message("ceo@sender.example", "s", "b\r\n"),
        &SignOptions::default(),
    );
    let out = drive::drive(milter.inet_addr(), &env, &raw).await;
    assert!(reply(&out).starts_with("451 4.4.3 "), "{}", reply(&out));

    // An unaligned signature's temperror does not matter when an aligned
    // one passes.
    let third = sign(
        w.key("third.example"),
        &common::message("ceo@sender.example", "s", "b\r\n"),
        &SignOptions::default(),
    );
    w.dns
        .set_fault("t._domainkey.third.example", None, Fault::ServFail);
    w.dns.clear_faults();
    w.dns
        .set_fault("t._domainkey.third.example", None, Fault::ServFail);
    let both = sign(w.key("sender.example"), &third, &SignOptions::default());
    let out = drive::drive(milter.inet_addr(), &env, &both).await;
    assert_eq!(out.status, Status::Continue, "{}", reply(&out));
    let ar = results(&out);
    assert!(
        ar.contains("dkim=temperror") && ar.contains("dmarc=pass"),
        "{ar}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn temperror_action_is_configurable() {
    let w = World::new();
    let milter = w.milter("[policy]\ntemperror = \"accept\"\n");
    w.dns
        .set_fault("_dmarc.sender.example", Some(RType::TXT), Fault::ServFail);
    let out = drive::drive(
        milter.inet_addr(),
        &envelope("x@elsewhere.example"),
        &common::message("a@sender.example", "s", "b\r\n"),
    )
    .await;
    assert_eq!(out.status, Status::Continue, "{}", reply(&out));
    assert!(
        results(&out).contains("dmarc=temperror"),
        "{}",
        results(&out)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn monitor_mode_never_acts() {
    let w = World::new();
    let milter = w.milter("[policy]\nmonitor = true\n");
    let out = drive::drive(
        milter.inet_addr(),
        &envelope("ceo@elsewhere.example"),
        &common::message("ceo@sender.example", "s", "b\r\n"),
    )
    .await;
    assert_eq!(out.status, Status::Continue, "{}", reply(&out));
    assert!(!quarantined(&out));
    assert!(results(&out).contains("dmarc=fail"), "{}", results(&out));
    // Per domain: only sender.example is monitored.
    let per_domain = w.milter("[[policy.domain]]\ndomain = \"sender.example\"\nmonitor = true\n");
    let out = drive::drive(
        per_domain.inet_addr(),
        &envelope("x@elsewhere.example"),
        &common::message("ceo@sender.example", "s", "b\r\n"),
    )
    .await;
    assert_eq!(out.status, Status::Continue);
    let out = drive::drive(
        per_domain.inet_addr(),
        &envelope("x@elsewhere.example"),
        &common::message("a@sub.org.example", "s", "b\r\n"),
    )
    .await;
    assert!(matches!(out.status, Status::Reject { .. }));
}

#[tokio::test(flavor = "multi_thread")]
async fn legacy_pct_zero_never_rejects_when_honoured() {
    let w = World::new();
    let ignore = w.milter("");
    let out = drive::drive(
        ignore.inet_addr(),
        &envelope("x@elsewhere.example"),
        &common::message("a@pct.example", "s", "b\r\n"),
    )
    .await;
    assert!(
        matches!(out.status, Status::Reject { .. }),
        "pct ignored by default"
    );
    let honor = w.milter("[verify]\ndmarc_pct = \"honor\"\n");
    let out = drive::drive(
        honor.inet_addr(),
        &envelope("x@elsewhere.example"),
        &common::message("a@pct.example", "s", "b\r\n"),
    )
    .await;
    assert_eq!(out.status, Status::Continue, "{}", reply(&out));
    assert!(quarantined(&out), "pct=0: reject becomes quarantine");
}

#[tokio::test(flavor = "multi_thread")]
async fn signatures_that_never_count() {
    let w = World::new();
    let milter = w.milter("");
    let key = w.key("sender.example");
    let body = common::message("ceo@sender.example", "s", "b\r\n");
    let mut env = envelope("x@elsewhere.example");
    env.client_addr = "203.0.113.66:5555".parse().unwrap();
    // l=: policy, and with no other aligned pass DMARC fails (p=reject).
    let with_l = sign(
        key,
        &body,
        &SignOptions {
            body_length: true,
            ..Default::default()
        },
    );
    let out = drive::drive(milter.inet_addr(), &env, &with_l).await;
    assert!(
        matches!(out.status, Status::Reject { .. }),
        "l= must not pass DMARC: {}",
        reply(&out)
    );
    // h= without From: permerror.
    let no_from = sign(
        key,
        &body,
        &SignOptions {
            headers: &["Subject", "Date"],
            ..Default::default()
        },
    );
    let out = drive::drive(milter.inet_addr(), &env, &no_from).await;
    assert!(
        matches!(out.status, Status::Reject { .. }),
        "{}",
        reply(&out)
    );
    // Appending a MIME part after an l= signature (RELIABILITY K1).
    let mut appended = with_l.clone();
    appended.extend_from_slice(b"\r\n--x\r\nContent-Type: text/html\r\n\r\n<b>pay now</b>\r\n");
    let out = drive::drive(milter.inet_addr(), &env, &appended).await;
    assert!(matches!(out.status, Status::Reject { .. }));
}

#[tokio::test(flavor = "multi_thread")]
async fn policy_and_permerror_signatures_are_reported_without_lookups() {
    let w = World::new();
    let (milter, _) = TestMilter::start_toml_recording(&w.toml("[policy]\nreject = \"accept\"\n"));
    let key = w.key("sender.example");
    let body = common::message("ceo@sender.example", "s", "b\r\n");
    let cases: [(&[u8], &str); 4] = [
        (b"DKIM-Signature: v=1; a=rsa-sha1; d=sender.example; s=rsa; h=from; bh=AAAA; b=AAAA\r\n", "dkim=policy (rsa-sha1 is not accepted)"),
        (b"DKIM-Signature: v=1; a=rsa-sha256; d=sender.example'a.attack.example; s=rsa; h=from; bh=AAAA; b=AAAA\r\n", "dkim=permerror (invalid d= or s= syntax)"),
        (b"DKIM-Signature: v=1; a=rsa-sha256; d=sender.example; s=x(.attack.example; h=from; bh=AAAA; b=AAAA\r\n", "dkim=permerror (invalid d= or s= syntax)"),
        (b"DKIM-Signature: v=1; a=rsa-sha256; d=sender.example; s=rsa; h=subject; bh=AAAA; b=AAAA\r\n", "dkim=permerror (From is not signed)"),
    ];
    let _ = key;
    for (sig, expected) in cases {
        w.dns.clear_log();
        let raw = [sig, &body[..]].concat();
        let out = drive::drive(milter.inet_addr(), &envelope("x@elsewhere.example"), &raw).await;
        let ar = results(&out);
        assert!(ar.contains(expected), "{expected}: {ar}");
        assert!(ar.contains("dmarc=fail"), "{ar}");
        let key_queries: Vec<_> = w
            .dns
            .query_log()
            .into_iter()
            .filter(|(n, _, _)| n.contains("_domainkey"))
            .collect();
        assert!(
            key_queries.is_empty(),
            "{expected}: looked up {key_queries:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn signature_flood_is_capped() {
    let w = World::new();
    let milter = w.milter("[verify]\nmax_signatures = 3\n");
    let body = common::message("ceo@sender.example", "s", "b\r\n");
    let mut raw = sign(w.key("sender.example"), &body, &SignOptions::default());
    // The floods carry the body's real hash (a wrong one costs nothing).
    let signed = String::from_utf8_lossy(&raw)
        .replace("\r\n\t", " ")
        .replace("\r\n ", " ");
    let bh = common::dkim_tags(signed.lines().next().unwrap())
        .into_iter()
        .find(|(k, _)| k == "bh")
        .unwrap()
        .1;
    for i in 0..8 {
        let fake = format!(
            "DKIM-Signature: v=1; a=rsa-sha256; d=flood{i}.example; s=s; h=from; bh={bh}; b=AAAA\r\n"
        );
        raw = [fake.as_bytes(), &raw[..]].concat();
    }
    w.dns.clear_log();
    let out = drive::drive(milter.inet_addr(), &envelope("x@elsewhere.example"), &raw).await;
    let ar = results(&out);
    // The aligned signature is verified first and passes.
    assert!(ar.contains("dmarc=pass"), "{ar}");
    assert!(
        ar.contains("dkim=policy (6 more signatures not verified"),
        "{ar}"
    );
    let floods = w
        .dns
        .query_log()
        .iter()
        .filter(|(n, _, _)| n.contains("flood"))
        .count();
    assert!(floods <= 2 * 2, "{floods} flood lookups");
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_results_are_removed_highest_index_first() {
    let w = World::new();
    let milter = w.milter("");
    let body = common::message("Alice <alice@sender.example>", "hi", "Hello.\r\n");
    let forged = [
        "Authentication-Results: mx.example.org; dkim=pass header.d=sender.example\r\n",
        "Authentication-Results: other.example; spf=pass smtp.mailfrom=x\r\n",
        "Authentication-Results: MX.EXAMPLE.ORG 1; dmarc=pass header.from=sender.example\r\n",
        "Authentication-Results: (comment) mx.example.org; spf=pass\r\n",
        "Authentication-Results: other.example; dkim=pass\r\n",
        "Authentication-Results:\r\n mx.example.org\r\n\t; dmarc=pass\r\n",
    ]
    .concat();
    let raw = sign(
        w.key("sender.example"),
        &[forged.as_bytes(), &body[..]].concat(),
        &SignOptions::default(),
    );
    let out = drive::drive(milter.inet_addr(), &envelope("x@elsewhere.example"), &raw).await;
    let deletes: Vec<i32> = out
        .actions
        .iter()
        .filter_map(|a| match a {
            EomAction::DeleteHeader { name, index }
                if name
                    .to_bytes()
                    .eq_ignore_ascii_case(b"authentication-results") =>
            {
                Some(*index)
            }
            _ => None,
        })
        .collect();
    assert_eq!(deletes, [6, 4, 3, 1]);
    let text = String::from_utf8_lossy(&out.message).to_string();
    let fields: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("Authentication-Results:"))
        .collect();
    assert_eq!(fields.len(), 3, "{text}");
    assert!(
        fields[0].starts_with("Authentication-Results: mx.example.org;"),
        "ours on top: {text}"
    );
    assert!(
        fields[1..].iter().all(|f| f.contains("other.example")),
        "{fields:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_claims_do_not_change_the_verdict() {
    let w = World::new();
    let milter = w.milter("");
    let claims = "Received-SPF: pass (sender.example: 203.0.113.66 is allowed)\r\nAuthentication-Results: upstream.example; dkim=pass header.d=sender.example; spf=pass smtp.mailfrom=sender.example; dmarc=pass header.from=sender.example\r\nARC-Authentication-Results: i=1; upstream.example; dmarc=pass\r\n";
    let raw = [
        claims.as_bytes(),
        &common::message("ceo@sender.example", "s", "b\r\n")[..],
    ]
    .concat();
    let mut env = envelope("ceo@sender.example");
    env.client_addr = "203.0.113.66:5555".parse().unwrap();
    let out = drive::drive(milter.inet_addr(), &env, &raw).await;
    assert!(
        matches!(out.status, Status::Reject { .. }),
        "{}",
        reply(&out)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn from_gate_runs_first_for_inbound() {
    let w = World::new();
    let milter = w.milter("");
    let raw = sign(
        w.key("sender.example"),
        b"From: attacker@elsewhere.example\r\nFrom: ceo@sender.example\r\nSubject: x\r\n\r\nb\r\n",
        &SignOptions::default(),
    );
    let out = drive::drive(milter.inet_addr(), &envelope("x@elsewhere.example"), &raw).await;
    // Decided at end of headers, answered at end of message (no reply
    // at end of headers), with no edit.
    assert_eq!((out.stage, out.actions.len()), ("eom", 0));
    assert!(reply(&out).starts_with("550 5.7.1 "), "{}", reply(&out));
    // Accepted by configuration: dmarc=permerror, never pass or none.
    let accept = w.milter("[actions]\nbad_from = \"accept\"\n");
    let out = drive::drive(accept.inet_addr(), &envelope("x@elsewhere.example"), &raw).await;
    assert_eq!(out.status, Status::Continue);
    let ar = results(&out);
    assert!(
        ar.contains("dmarc=permerror (message has 2 From fields)"),
        "{ar}"
    );
    assert!(!ar.contains("dmarc=pass") && !ar.contains("dmarc=none"));
}

#[tokio::test(flavor = "multi_thread")]
async fn evaluation_record_for_reports() {
    let w = World::new();
    let (milter, sink) = TestMilter::start_toml_recording(&w.toml(""));
    let raw = sign(
        w.key("sender.example"),
        &common::message("alice@sender.example", "s", "b\r\n"),
        &SignOptions::default(),
    );
    let out = drive::drive(
        milter.inet_addr(),
        &envelope("bounce@elsewhere.example"),
        &raw,
    )
    .await;
    assert_eq!(out.status, Status::Continue);
    let _ = drive::drive(
        milter.inet_addr(),
        &envelope("x@elsewhere.example"),
        &common::message("a@norecord.example", "s", "b\r\n"),
    )
    .await;
    let records = sink.take();
    assert_eq!(
        records.len(),
        1,
        "only domains with a DMARC record are recorded: {records:?}"
    );
    let r = &records[0];
    assert_eq!(r.header_from, "sender.example");
    assert_eq!(r.envelope_from, "elsewhere.example");
    assert_eq!(r.source_ip, Some(CLIENT.into()));
    let policy = r.policy.as_ref().unwrap();
    assert_eq!(
        (policy.domain.as_str(), policy.p, policy.adkim),
        ("sender.example", "reject", "r")
    );
    assert_eq!(r.disposition.as_str(), "none");
    assert_eq!((r.dkim_aligned, r.spf_aligned), ("pass", "fail"));
    assert_eq!(r.dkim.len(), 1);
    assert_eq!(
        (
            r.dkim[0].domain.as_str(),
            r.dkim[0].selector.as_str(),
            r.dkim[0].result
        ),
        ("sender.example", "rsa", "pass")
    );
    assert_eq!(r.spf[0].scope, "mfrom");
}

#[tokio::test(flavor = "multi_thread")]
async fn aligned_spf_alone_passes_dmarc_and_helo_never_counts() {
    let w = World::new();
    let milter = w.milter("");
    // Unsigned, MAIL FROM in the From domain, client allowed by SPF.
    let out = drive::drive(
        milter.inet_addr(),
        &envelope("alice@sender.example"),
        &common::message("alice@sender.example", "s", "b\r\n"),
    )
    .await;
    assert_eq!(out.status, Status::Continue, "{}", reply(&out));
    let ar = results(&out);
    assert!(ar.contains("dkim=none"), "{ar}");
    assert!(
        ar.contains("spf=pass") && ar.contains("smtp.mailfrom=sender.example"),
        "{ar}"
    );
    assert!(ar.contains("dmarc=pass"), "{ar}");
    // HELO passes SPF, MAIL FROM is the quarantine domain and fails: the
    // HELO result is reported but never used for DMARC (CVE-2019-20790).
    let mut env = envelope("news@quarantine.example");
    env.helo = "sender.example".into();
    let out = drive::drive(
        milter.inet_addr(),
        &env,
        &common::message("news@quarantine.example", "s", "b\r\n"),
    )
    .await;
    let ar = results(&out);
    assert!(
        ar.contains("spf=fail") && ar.contains("smtp.mailfrom=quarantine.example"),
        "{ar}"
    );
    assert!(ar.contains("smtp.helo=sender.example"), "{ar}");
    assert!(ar.contains("dmarc=fail"), "{ar}");
    assert!(quarantined(&out));
    // The null sender: SPF checks postmaster@HELO, which is the identity
    // DMARC aligns against (RFC 9989 §4.4.2).
    let mut bounce = envelope("");
    bounce.mail_from = "<>".into();
    bounce.helo = "sender.example".into();
    let out = drive::drive(
        milter.inet_addr(),
        &bounce,
        &common::message("mailer-daemon@sender.example", "bounce", "b\r\n"),
    )
    .await;
    assert_eq!(out.status, Status::Continue, "{}", reply(&out));
    assert!(results(&out).contains("dmarc=pass"), "{}", results(&out));
}

/// RELIABILITY §8 case 19: DMARC record variants, each for an unsigned
/// forgery from an unauthorized client (so no aligned pass), with the
/// RFC 9989 outcome.
#[tokio::test(flavor = "multi_thread")]
async fn dmarc_record_corpus() {
    // (record strings, expected dmarc= result, expected action)
    let cases: Vec<(Vec<&str>, &str, &str)> = vec![
        (vec!["v=DMARC1; p=reject"], "fail", "reject"),
        (vec!["v=DMARC1;p=reject;"], "fail", "reject"),
        (
            vec!["v=DMARC1; p=reject; unknown=tag; rua=mailto:a@x.example"],
            "fail",
            "reject",
        ),
        // §4.10 step 2: two records at one name: none applies.
        (
            vec!["v=DMARC1; p=reject", "v=DMARC1; p=none"],
            "none",
            "accept",
        ),
        // v= must come first.
        (vec!["p=reject; v=DMARC1"], "none", "accept"),
        // §4.10.1: no valid p, a valid rua: p=none.
        (
            vec!["v=DMARC1; rua=mailto:dmarc@pol.example"],
            "fail",
            "accept",
        ),
        // No p and no rua: no DMARC.
        (vec!["v=DMARC1; sp=reject"], "none", "accept"),
        (vec!["v=DMARC1; p=quarantine; pct=0"], "fail", "quarantine"),
        (vec!["v=DMARC1; p=reject; pct=150"], "fail", "reject"),
        (vec!["v=DMARC1; p=reject; t=y"], "fail", "quarantine"),
        // Split into strings: joined.
        (vec!["v=DMARC1; p=re\" \"ject"], "fail", "reject"),
        (vec!["v=spf1 -all"], "none", "accept"),
    ];
    let mut failures = Vec::new();
    for (records, result, action) in cases {
        let mut zone = Zone::new().txt("pol.example", "v=spf1 -all");
        for r in &records {
            zone = if r.contains("\" \"") {
                let parts: Vec<&str> = r.split("\" \"").collect();
                zone.txt_strings("_dmarc.pol.example", &parts)
            } else {
                zone.txt("_dmarc.pol.example", r)
            };
        }
        let dns = TestDns::start(zone);
        let milter = TestMilter::start_toml(&format!(
            "authserv_id = \"{AUTHSERV}\"\n[dns]\nnameservers = [\"{}\"]\ntimeout = \"1s\"\nattempts = 1\n",
            dns.addr()
        ));
        let out = drive::drive(
            milter.inet_addr(),
            &envelope("x@elsewhere.example"),
            &common::message("a@pol.example", "s", "b\r\n"),
        )
        .await;
        let got_action = match &out.status {
            Status::Reject { .. } => "reject",
            Status::Tempfail { .. } => "tempfail",
            Status::Continue if quarantined(&out) => "quarantine",
            Status::Continue => "accept",
            _ => "other",
        };
        let ar = out
            .inserted("Authentication-Results")
            .first()
            .map(|f| f.replace("\n\t", " "))
            .unwrap_or_default();
        let got_result = ar
            .split(" dmarc=")
            .nth(1)
            .and_then(|r| r.split([' ', ';']).next())
            .unwrap_or("")
            .to_string();
        if got_action != action || (!ar.is_empty() && got_result != result) {
            failures.push(format!(
                "{records:?}: got {got_result}/{got_action}, expected {result}/{action}: {ar}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// RELIABILITY §8 case 6: an internationalized author domain is looked up
/// as its A-label; case and a trailing dot do not change alignment.
#[tokio::test(flavor = "multi_thread")]
async fn idn_and_normalisation() {
    let dns = TestDns::start(
        Zone::new()
            .txt("xn--bcher-kva.example", "v=spf1 ip4:198.51.100.7 -all")
            .txt("_dmarc.xn--bcher-kva.example", "v=DMARC1; p=reject"),
    );
    let milter = TestMilter::start_toml(&format!(
        "authserv_id = \"{AUTHSERV}\"\n[dns]\nnameservers = [\"{}\"]\ntimeout = \"1s\"\nattempts = 1\ncache_size = 0\n",
        dns.addr()
    ));
    for from in [
        "info@bücher.example",
        "info@BÜCHER.example",
        "INFO@XN--BCHER-KVA.EXAMPLE.",
    ] {
        dns.clear_log();
        let raw = common::message(from, "idn", "b\r\n");
        let out = drive::drive(
            milter.inet_addr(),
            &envelope("info@xn--bcher-kva.example"),
            &raw,
        )
        .await;
        assert_eq!(out.status, Status::Continue, "{from}: {}", reply(&out));
        let ar = results(&out);
        assert!(
            ar.contains("dmarc=pass") && ar.contains("header.from=xn--bcher-kva.example"),
            "{from}: {ar}"
        );
        let queried: Vec<String> = dns.query_log().into_iter().map(|(n, _, _)| n).collect();
        assert!(
            queried.contains(&"_dmarc.xn--bcher-kva.example".to_string()),
            "{queried:?}"
        );
        assert!(queried.iter().all(|n| n.is_ascii()), "{queried:?}");
    }
}

/// RFC 8617 §7.2: a trusted list's passing chain overrides a DMARC failure
/// only when the list recorded the author authenticated. The spoof of a
/// p=reject domain that the list recorded as dmarc=fail and sealed is
/// refused; the genuine message the list saw pass (and then broke by
/// tagging the subject) is accepted.
#[tokio::test(flavor = "multi_thread")]
async fn trusted_arc_sealer_override_reads_what_the_sealer_saw() {
    let keys = TestKeys::new(&[
        ("sender.example", "s", KeyAlgorithm::Ed25519),
        ("lists.example", "arc", KeyAlgorithm::Rsa),
    ]);
    let mut zone = Zone::new()
        .txt("sender.example", "v=spf1 -all")
        .txt("_dmarc.sender.example", "v=DMARC1; p=reject");
    for (name, value) in keys.dns() {
        zone = zone.txt(&name, &value);
    }
    let dns = TestDns::start(zone);
    let auth = dns.authenticator(std::time::Duration::from_secs(2));
    let milter = TestMilter::start_toml(&format!(
        "authserv_id = \"{AUTHSERV}\"\n[verify]\ntrusted_arc_sealers = [\"lists.example\"]\n[dns]\nnameservers = [\"{}\"]\ntimeout = \"1s\"\nattempts = 1\n",
        dns.addr()
    ));
    let list = &keys.keys[1];
    let tag = |raw: &[u8]| {
        String::from_utf8_lossy(raw)
            .replacen("Subject: ", "Subject: [list] ", 1)
            .into_bytes()
    };
    let from_list = || {
        let mut env = envelope("bounce@lists.example");
        env.client_addr = "203.0.113.50:40000".parse().unwrap();
        env
    };

    // The spoof: unsigned, the list recorded dmarc=fail, sealed anyway.
    let spoof = common::message("CEO <ceo@sender.example>", "pay now", "Wire it.\r\n");
    let sealed = common::sign::arc_seal(list, &auth, &spoof, "sender.example", &tag(&spoof)).await;
    assert!(
        String::from_utf8_lossy(&sealed).contains("dmarc=fail"),
        "the list's AAR: {}",
        String::from_utf8_lossy(&sealed)
    );
    let out = drive::drive(milter.inet_addr(), &from_list(), &sealed).await;
    assert!(
        matches!(out.status, Status::Reject { .. }),
        "spoof accepted: {:?}",
        out.status
    );

    // The genuine message: signed, the list saw dmarc=pass, then tagged it.
    let genuine = sign(
        &keys.keys[0],
        &common::message("Alice <alice@sender.example>", "minutes", "Attached.\r\n"),
        &SignOptions::default(),
    );
    let sealed =
        common::sign::arc_seal(list, &auth, &genuine, "sender.example", &tag(&genuine)).await;
    let out = drive::drive(milter.inet_addr(), &from_list(), &sealed).await;
    assert_eq!(out.status, Status::Continue, "{}", reply(&out));
    let ar = results(&out);
    assert!(
        ar.contains("dmarc=fail"),
        "the chain overrides, DMARC still fails: {ar}"
    );
    assert!(ar.contains("arc=pass (sealer lists.example)"), "{ar}");
}

/// Junk DKIM-Signature fields of every kind rmilter never verifies:
/// unparseable, bad `d=`/`s=`, `l=`, rsa-sha1, From not signed.
fn junk_signature(i: usize) -> String {
    match i % 6 {
        0 => format!("DKIM-Signature: v=1; garbage {i}\r\n"),
        1 => format!(
            "DKIM-Signature: v=1; a=rsa-sha256; d=sender.example'{i}.attack.example; s=s; h=from; bh=AAAA; b=AAAA\r\n"
        ),
        2 => format!(
            "DKIM-Signature: v=1; a=rsa-sha256; d=sender.example; s=s{i}; h=from; l=1; bh=AAAA; b=AAAA\r\n"
        ),
        3 => format!(
            "DKIM-Signature: v=1; a=rsa-sha1; d=sender.example; s=s{i}; h=from; bh=AAAA; b=AAAA\r\n"
        ),
        4 => format!(
            "DKIM-Signature: v=1; a=rsa-sha256; d=sender.example; s=s{i}; h=subject; bh=AAAA; b=AAAA\r\n"
        ),
        _ => format!("DKIM-Signature: v=1; a=rsa-sha256; d=sender.example; s=s{i}\r\n"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn junk_signatures_cost_nothing_and_the_aligned_one_is_verified() {
    let w = World::new();
    let milter = w.milter("[verify]\nmax_signatures = 5\n");
    let body = common::message("ceo@sender.example", "s", "b\r\n");
    let signed = sign(w.key("sender.example"), &body, &SignOptions::default());
    let junk: String = (0..300).map(junk_signature).collect();
    let raw = [junk.as_bytes(), &signed[..]].concat();
    w.dns.clear_log();
    // Forwarded from elsewhere: only the DKIM signature can align.
    let mut env = envelope("x@elsewhere.example");
    env.client_addr = "203.0.113.66:5555".parse().unwrap();
    let out = drive::drive(milter.inet_addr(), &env, &raw).await;
    let ar = results(&out);
    assert!(
        matches!(out.status, Status::Accept | Status::Continue),
        "{}",
        reply(&out)
    );
    assert!(ar.contains("dkim=pass"), "{ar}");
    assert!(ar.contains("dmarc=pass"), "{ar}");
    assert!(ar.len() < 4096, "A-R of {} bytes", ar.len());
    let key_queries: Vec<_> = w
        .dns
        .query_log()
        .into_iter()
        .filter(|(n, _, _)| n.contains("_domainkey") && !n.starts_with("rsa."))
        .collect();
    assert!(key_queries.is_empty(), "looked up {key_queries:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_thousand_junk_signatures_keep_the_results_field_small() {
    let w = World::new();
    let milter = w.milter("[limits]\nmax_headers = 3000\n");
    let body = common::message("ceo@sender.example", "s", "b\r\n");
    let mut junk = String::new();
    for i in 0..2000 {
        if i % 2 == 0 {
            junk.push_str(&junk_signature(i));
        } else {
            // Well-formed, verifiable signatures of unrelated domains.
            junk.push_str(&format!(
                "DKIM-Signature: v=1; a=rsa-sha256; d=flood{i}.example; s=s; h=from; bh=AAAA; b=AAAA\r\n"
            ));
        }
    }
    let raw = [junk.as_bytes(), &body[..]].concat();
    let out = drive::drive(milter.inet_addr(), &envelope("x@elsewhere.example"), &raw).await;
    let ar = results(&out);
    assert!(ar.contains("dmarc=fail"), "{ar}");
    assert!(ar.len() < 4096, "A-R of {} bytes", ar.len());
}

#[tokio::test(flavor = "multi_thread")]
async fn body_hash_mismatch_is_a_fail_in_results_and_reports() {
    let w = World::new();
    let (milter, sink) =
        TestMilter::start_toml_recording(&w.toml("[policy]\nreject = \"accept\"\n"));
    let mut raw = sign(
        w.key("sender.example"),
        &common::message("alice@sender.example", "s", "b\r\n"),
        &SignOptions::default(),
    );
    // Altered in transit: the body no longer matches bh=.
    raw.extend_from_slice(b"appended\r\n");
    let out = drive::drive(milter.inet_addr(), &envelope("x@elsewhere.example"), &raw).await;
    let ar = results(&out);
    // RFC 6376 §6.1.3, RFC 8601 §2.7.1: fail, not neutral.
    assert!(ar.contains("dkim=fail"), "{ar}");
    assert!(!ar.contains("dkim=neutral"), "{ar}");
    let records = sink.take();
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].dkim.len(), 1, "{:?}", records[0].dkim);
    assert_eq!(records[0].dkim[0].result, "fail");
}

#[tokio::test(flavor = "multi_thread")]
async fn min_rsa_bits_reads_the_key_record_as_dkim_does() {
    let keys = TestKeys::new(&[("sender.example", "rsa", KeyAlgorithm::Rsa)]);
    let (name, value) = keys.dns().remove(0);
    let p = value.split("p=").nth(1).unwrap().to_string();
    // The same 2048-bit key, written three ways DKIM accepts: spaces around
    // "=", the base64 folded, and beside a second record that is not a key.
    let spaced = format!("v=DKIM1; k=rsa; p = {p}");
    let folded = format!("v=DKIM1; k=rsa; p={} {}", &p[..100], &p[100..]);
    for (label, zone) in [
        ("spaced", Zone::new().txt(&name, &spaced)),
        ("folded", Zone::new().txt(&name, &folded)),
        (
            "two records",
            Zone::new().txt(&name, &value).txt(&name, "not a key"),
        ),
    ] {
        let zone = zone.txt("_dmarc.sender.example", "v=DMARC1; p=reject");
        let dns = TestDns::start(zone);
        let toml = format!(
            "authserv_id = \"{AUTHSERV}\"\n[verify]\nmin_rsa_bits = 2049\n[policy]\nreject = \"accept\"\n[dns]\nnameservers = [\"{}\"]\ntimeout = \"1s\"\nattempts = 1\n",
            dns.addr()
        );
        let milter = TestMilter::start_toml(&toml);
        let raw = sign(
            &keys.keys[0],
            &common::message("alice@sender.example", "s", "b\r\n"),
            &SignOptions::default(),
        );
        let out = drive::drive(milter.inet_addr(), &envelope("x@elsewhere.example"), &raw).await;
        let ar = results(&out);
        assert!(
            ar.contains("dkim=policy (RSA key of 2048 bits is below the configured minimum)"),
            "{label}: {ar}"
        );
        assert!(ar.contains("dmarc=fail"), "{label}: {ar}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn spf_exp_is_never_fetched() {
    let dns = TestDns::start(
        Zone::new()
            .txt(
                "expfail.example",
                "v=spf1 -all exp=%{l}.%{i}.explain.expfail.example",
            )
            .txt("x.198.51.100.7.explain.expfail.example", "you are %{i}"),
    );
    let toml = format!(
        "authserv_id = \"{AUTHSERV}\"\n[dns]\nnameservers = [\"{}\"]\ntimeout = \"1s\"\nattempts = 1\n",
        dns.addr()
    );
    let milter = TestMilter::start_toml(&toml);
    let out = drive::drive(
        milter.inet_addr(),
        &envelope("x@expfail.example"),
        &common::message("a@elsewhere.example", "s", "b\r\n"),
    )
    .await;
    let ar = results(&out);
    assert!(ar.contains("spf=fail"), "{ar}");
    let asked: Vec<_> = dns
        .query_log()
        .into_iter()
        .filter(|(n, _, _)| n.contains("explain"))
        .collect();
    assert!(asked.is_empty(), "exp= fetched: {asked:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn raw_latin1_display_name_is_accepted_and_verified() {
    let w = World::new();
    let milter = w.milter("");
    let body = common::message("alice@sender.example", "s", "b\r\n");
    // The same message with a raw ISO-8859-1 display name ("Jörg").
    let mut latin1 = b"From: J\xf6rg <alice@sender.example>".to_vec();
    latin1.extend_from_slice(&body["From: alice@sender.example".len()..]);
    let raw = sign(w.key("sender.example"), &latin1, &SignOptions::default());
    let out = drive::drive(milter.inet_addr(), &envelope("x@elsewhere.example"), &raw).await;
    assert_eq!(out.status, Status::Continue, "{}", reply(&out));
    let ar = results(&out);
    assert!(ar.contains("dkim=pass"), "{ar}");
    assert!(ar.contains("dmarc=pass"), "{ar}");
    // 8-bit bytes in the address itself are still refused.
    let mut bad = b"From: J\xf6rg <j\xf6rg@sender.example>".to_vec();
    bad.extend_from_slice(&body["From: alice@sender.example".len()..]);
    let out = drive::drive(milter.inet_addr(), &envelope("x@elsewhere.example"), &bad).await;
    assert!(
        matches!(out.status, Status::Reject { .. }),
        "{}",
        reply(&out)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn aligned_junk_cannot_push_the_genuine_signature_out() {
    let w = World::new();
    let milter = w.milter("[verify]\nmax_signatures = 2\n");
    let body = common::message("ceo@sender.example", "s", "b\r\n");
    let signed = sign(w.key("sender.example"), &body, &SignOptions::default());
    let text = String::from_utf8_lossy(&signed)
        .replace("\r\n\t", " ")
        .replace("\r\n ", " ");
    let bh = common::dkim_tag(text.lines().next().unwrap(), "bh").unwrap();
    // Author-aligned signatures placed first: some with a wrong body hash,
    // some expired (with the right one); none needs a key to be decided.
    let mut junk = String::new();
    for i in 0..4 {
        junk.push_str(&format!(
            "DKIM-Signature: v=1; a=rsa-sha256; d=sender.example; s=rsa; h=from; bh=AAAA{i}; b=AAAA\r\n"
        ));
        junk.push_str(&format!(
            "DKIM-Signature: v=1; a=rsa-sha256; d=sender.example; s=rsa; h=from; t=1; x=100{i}; bh={bh}; b=AAAA\r\n"
        ));
    }
    let raw = [junk.as_bytes(), &signed[..]].concat();
    let mut env = envelope("x@elsewhere.example");
    env.client_addr = "203.0.113.66:5555".parse().unwrap();
    let out = drive::drive(milter.inet_addr(), &env, &raw).await;
    let ar = results(&out);
    assert_eq!(out.status, Status::Continue, "{}", reply(&out));
    assert!(ar.contains("dkim=pass"), "{ar}");
    assert!(ar.contains("dmarc=pass"), "{ar}");
    assert!(ar.contains("dkim=fail (body hash mismatch)"), "{ar}");
}
