//! End to end through a real Postfix: a private instance in a temporary
//! directory with rmilter in `smtpd_milters` and `non_smtpd_milters`,
//! mail submitted the ways clients really submit it, and every delivered
//! signature checked by dkimpy. Needs root (Postfix) — `make test` runs
//! as root in CI.

mod common;

use common::dkimpy;
use common::dns::{TestDns, Zone};
use common::keys::TestKeys;
use common::milter::TestMilter;
use common::postfix::{Postfix, PostfixConfig};
use common::smtp::{Client, Submission};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

/// rmilter with example.com's RSA and Ed25519 keys. Loopback is not an
/// internal network here, so each outbound rule is tested on its own.
/// Inbound mail is verified against `dns`.
fn milter_config(keys: &TestKeys, dns: &TestDns) -> String {
    format!(
        "authserv_id = \"mx.example.org\"\n[outbound]\nnetworks = [\"10.0.0.0/8\"]\ndaemon_names = [\"ORIGINATING\"]\n[dns]\nnameservers = [\"{}\"]\ntimeout = \"1s\"\nattempts = 1\n{}",
        dns.addr(),
        keys.toml()
    )
}

fn empty_dns() -> TestDns {
    TestDns::start(Zone::new())
}

fn postfix_for(milter: &TestMilter) -> Postfix {
    Postfix::start(PostfixConfig {
        sasl_users: vec![("alice".into(), "wonderland".into())],
        submission: Some(vec![(
            "milter_macro_daemon_name".into(),
            "ORIGINATING".into(),
        )]),
        extra_main_cf: vec![("relay_domains".into(), "example.org".into())],
        ..PostfixConfig::with_milters(&milter.postfix_spec())
    })
}

fn mail(tag: &str) -> Vec<u8> {
    common::message(
        "Alice <alice@example.com>",
        tag,
        &format!("Message {tag}.\r\n\r\nRegards,\r\nAlice\r\n"),
    )
}

fn subject(data: &[u8]) -> String {
    let text = String::from_utf8_lossy(data);
    text.lines()
        .find_map(|l| l.strip_prefix("Subject: "))
        .unwrap_or_default()
        .to_string()
}

#[test]
fn outbound_mail_is_signed_and_inbound_passes_through() {
    let keys = TestKeys::example_com();
    let dns = empty_dns();
    let milter = TestMilter::start_toml(&milter_config(&keys, &dns));
    let pf = postfix_for(&milter);
    let to = ["bob@example.org"];
    let cases = [
        (
            "authenticated",
            Client::authenticated("alice", "wonderland"),
            false,
        ),
        (
            "roaming",
            Client::authenticated_external(
                "198.51.100.20",
                "hotel.example.net",
                "alice",
                "wonderland",
            ),
            false,
        ),
        (
            "internal",
            Client::external("10.1.2.3", "desk.corp.example"),
            false,
        ),
        (
            "submission",
            Client::external("198.51.100.21", "home.example.net"),
            true,
        ),
    ];
    for (tag, client, via_submission) in &cases {
        let s = Submission::new(client.clone(), "alice@example.com", &to, &mail(tag));
        let out = if *via_submission {
            pf.submit_submission(&s)
        } else {
            pf.submit(&s)
        };
        assert!(out.accepted(), "{tag}: {out:?}\n{}", pf.diag());
    }
    let local = pf.sendmail("alice@example.com", &to, &mail("local"));
    assert!(local.status.success(), "sendmail: {local:?}");
    pf.kick_pickup();
    // Inbound: an outside client, no login, mail claiming to be from us.
    let inbound = Submission::new(
        Client::external("203.0.113.66", "mx.elsewhere.example"),
        "news@elsewhere.example",
        &to,
        &mail("inbound"),
    );
    assert!(pf.submit(&inbound).accepted(), "{}", pf.diag());

    let delivered = pf.sink().wait_for(6, WAIT);
    assert_eq!(delivered.len(), 6, "{}", pf.diag());
    for m in &delivered {
        let tag = subject(&m.data);
        let results = dkimpy::verify(&m.data, &keys.dns());
        if tag == "inbound" {
            assert!(
                results.is_empty(),
                "inbound mail was signed: {}",
                m.header_text()
            );
            continue;
        }
        assert_eq!(results.len(), 2, "{tag}: {}", m.header_text());
        for r in &results {
            assert!(
                r.pass,
                "{tag}: dkimpy rejects {} {}: {}\n{}",
                r.s,
                r.a,
                r.detail,
                m.header_text()
            );
        }
        // The signatures sit above Postfix's own Received field.
        let first = m
            .header_text()
            .lines()
            .next()
            .unwrap_or_default()
            .to_string();
        assert!(
            first.starts_with("DKIM-Signature:"),
            "{tag}: first field {first:?}"
        );
    }
    let tags: std::collections::BTreeSet<String> =
        delivered.iter().map(|m| subject(&m.data)).collect();
    assert_eq!(
        tags.into_iter().collect::<Vec<_>>(),
        [
            "authenticated",
            "inbound",
            "internal",
            "local",
            "roaming",
            "submission"
        ]
    );
}

#[test]
fn several_from_addresses_get_550_at_the_smtp_client() {
    let keys = TestKeys::example_com();
    let dns = empty_dns();
    let milter = TestMilter::start_toml(&milter_config(&keys, &dns));
    let pf = postfix_for(&milter);
    for data in [
        b"From: alice@example.com\r\nFrom: ceo@example.com\r\nTo: bob@example.org\r\nSubject: two\r\n\r\nx\r\n".to_vec(),
        b"From: alice@example.com, ceo@other.example\r\nTo: bob@example.org\r\nSubject: list\r\n\r\nx\r\n".to_vec(),
    ] {
        let s = Submission::new(Client::authenticated("alice", "wonderland"), "alice@example.com", &["bob@example.org"], &data);
        let out = pf.submit(&s);
        assert_eq!((out.stage, out.code), ("eom", 550), "{out:?}\n{}", pf.diag());
        assert!(out.text.starts_with("5.7.1 "), "{out:?}");
    }
    std::thread::sleep(Duration::from_millis(500));
    pf.flush();
    assert!(
        pf.sink().messages().is_empty(),
        "refused mail was delivered"
    );
}

#[test]
fn unix_socket_owned_by_the_postfix_group() {
    // The socket as the README recommends: mode 0660, group postfix; smtpd
    // and cleanup run as user postfix.
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let sock = dir.path().join("rmilter/rmilter.sock");
    let keys = TestKeys::example_com();
    let dns = empty_dns();
    let milter = TestMilter::start_toml(&format!(
        "listen = \"unix:{}\"\n{}\n[socket]\nmode = \"0660\"\ngroup = \"postfix\"\n",
        sock.display(),
        milter_config(&keys, &dns)
    ));
    let pf = postfix_for(&milter);
    let s = Submission::new(
        Client::authenticated("alice", "wonderland"),
        "alice@example.com",
        &["bob@example.org"],
        &mail("unix"),
    );
    let out = pf.submit(&s);
    assert!(out.accepted(), "{out:?}\n{}", pf.diag());
    let delivered = pf.sink().wait_for(1, WAIT);
    assert_eq!(delivered.len(), 1, "{}", pf.diag());
    let results = dkimpy::verify(&delivered[0].data, &keys.dns());
    assert!(
        results.len() == 2 && results.iter().all(|r| r.pass),
        "{results:?}"
    );
}

#[test]
fn with_rmilter_down_postfix_tempfails_and_nothing_leaves_unsigned() {
    let keys = TestKeys::example_com();
    let dns = empty_dns();
    let port = common::postfix::free_port();
    let config = format!(
        "listen = \"inet:127.0.0.1:{port}\"\n{}",
        milter_config(&keys, &dns)
    );
    let milter = TestMilter::start_toml(&config);
    let pf = postfix_for(&milter);
    let to = ["bob@example.org"];
    let submit = |tag: &str| {
        pf.submit(&Submission::new(
            Client::authenticated("alice", "wonderland"),
            "alice@example.com",
            &to,
            &mail(tag),
        ))
    };
    assert!(submit("before").accepted());
    assert_eq!(pf.sink().wait_for(1, WAIT).len(), 1);

    milter.stop().unwrap();
    let out = submit("while down");
    assert_eq!(
        out.code / 100,
        4,
        "milter down must tempfail: {out:?}\n{}",
        pf.diag()
    );
    let local = pf.sendmail("alice@example.com", &to, &mail("local while down"));
    assert!(local.status.success(), "sendmail: {local:?}");
    pf.kick_pickup();
    std::thread::sleep(Duration::from_secs(3));
    pf.flush();
    std::thread::sleep(Duration::from_secs(1));
    let delivered = pf.sink().messages();
    assert_eq!(
        delivered.len(),
        1,
        "mail left while rmilter was down:\n{}",
        pf.diag()
    );
    // The local submission waits in Postfix's queue instead.
    let queued = pf.queue();
    assert_eq!(queued.len(), 1, "{queued:?}");

    // Back up on the same socket: the waiting mail goes out, signed.
    let milter = TestMilter::start_toml(&config);
    pf.kick_pickup();
    let delivered = pf.sink().wait_for(2, Duration::from_secs(90));
    assert_eq!(
        delivered.len(),
        2,
        "queued mail not delivered after restart:\n{}",
        pf.diag()
    );
    let late = &delivered[1];
    assert_eq!(subject(&late.data), "local while down");
    let results = dkimpy::verify(&late.data, &keys.dns());
    assert!(
        results.len() == 2 && results.iter().all(|r| r.pass),
        "{results:?}"
    );
    drop(milter);
}
