//! Signing rules (`[[signing.rule]]`, `%` keys, third-party keys) and login
//! authorisation (`[signing.logins]`) through the milter protocol: the
//! in-process server signs each sender with the expected set of (d=, s=),
//! and dkimpy verifies every signature against the records the keys
//! publish.

mod common;

use common::dkimpy;
use common::drive::{self, Envelope};
use common::keys::TestKeys;
use common::milter::TestMilter;
use common::{dkim_tag, message};
use indymilter_test::Status;
use rmilter::config::KeyAlgorithm;
use std::sync::atomic::Ordering;

/// Keys: example.com (rsa, ed), a shared key `%`/mail (its file generated
/// for any.example), a relay's own key relay.example/esp.
fn keys() -> TestKeys {
    TestKeys::new(&[
        ("example.com", "rsa", KeyAlgorithm::Rsa),
        ("example.com", "ed", KeyAlgorithm::Ed25519),
        ("any.example", "mail", KeyAlgorithm::Rsa),
        ("relay.example", "esp", KeyAlgorithm::Ed25519),
    ])
}

/// The `[[key]]` tables: example.com's keys unnamed, the shared key as
/// `%` named "shared", the relay key named "relay".
fn key_toml(keys: &TestKeys) -> String {
    let k = |i: usize| keys.keys[i].path.display().to_string();
    format!(
        "[[key]]\ndomain = \"example.com\"\nselector = \"rsa\"\nfile = \"{}\"\n\n\
         [[key]]\ndomain = \"example.com\"\nselector = \"ed\"\nfile = \"{}\"\n\n\
         [[key]]\nname = \"shared\"\ndomain = \"%\"\nselector = \"mail\"\nfile = \"{}\"\n\n\
         [[key]]\nname = \"relay\"\ndomain = \"relay.example\"\nselector = \"esp\"\nfile = \"{}\"\n",
        k(0),
        k(1),
        k(2),
        k(3)
    )
}

/// The records every domain a test sends from publishes: the shared key
/// at mail._domainkey of each, the others at their own names.
fn dns(keys: &TestKeys, shared_domains: &[&str]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = keys
        .dns()
        .into_iter()
        .filter(|(n, _)| !n.ends_with("any.example"))
        .collect();
    for d in shared_domains {
        out.push((format!("mail._domainkey.{d}"), keys.keys[2].txt.clone()));
    }
    out
}

/// Sign `from` as the SASL login `login` (or from an internal network
/// without login) and return the sorted "d/s" of its signatures, each
/// checked by dkimpy.
async fn signed_set(
    milter: &TestMilter,
    keys: &TestKeys,
    login: Option<&str>,
    from: &str,
) -> Vec<String> {
    let env = match login {
        Some(l) => Envelope::authenticated(l),
        None => Envelope {
            client_addr: "127.0.0.1:40000".parse().unwrap(),
            auth: None,
            ..Envelope::authenticated("x")
        },
    };
    let out = drive::drive(
        milter.inet_addr(),
        &env,
        &message(from, "rules", "Signed by the rules.\r\n"),
    )
    .await;
    let sigs = out.inserted("DKIM-Signature");
    let mut set: Vec<String> = sigs
        .iter()
        .map(|s| {
            format!(
                "{}/{}",
                dkim_tag(s, "d").unwrap(),
                dkim_tag(s, "s").unwrap()
            )
        })
        .collect();
    set.sort();
    if !sigs.is_empty() {
        assert_eq!(out.status, Status::Continue, "{from}");
        let domain = from.rsplit_once('@').unwrap().1.trim_end_matches('>');
        let results = dkimpy::verify(&out.message, &dns(keys, &[domain]));
        assert_eq!(results.len(), sigs.len(), "{from}");
        for r in &results {
            assert!(r.pass, "{from}: d={} s={}: {}", r.d, r.s, r.detail);
        }
    }
    set
}

const RULES: &str = r#"
[[signing.rule]]
sender = "noreply@example.com"
keys = []

[[signing.rule]]
sender = "*@example.com"
keys = ["example.com"]

[[signing.rule]]
sender = "ceo@example.com"
keys = ["relay"]

[[signing.rule]]
sender = "*@*.example.com"
keys = ["shared"]

[[signing.rule]]
sender = "*"
keys = ["shared", "relay"]
"#;

#[tokio::test(flavor = "multi_thread")]
async fn first_matching_rule_signs() {
    let keys = keys();
    let milter = TestMilter::start_toml(&format!("{RULES}\n{}", key_toml(&keys)));
    let cases: &[(&str, &[&str])] = &[
        (
            "Alice <alice@example.com>",
            &["example.com/ed", "example.com/rsa"],
        ),
        // The first match wins: the ceo rule after *@example.com never applies.
        ("ceo@example.com", &["example.com/ed", "example.com/rsa"]),
        ("noreply@example.com", &[]),
        ("x@news.example.com", &["news.example.com/mail"]),
        (
            "Customer <info@customer.example>",
            &["customer.example/mail", "relay.example/esp"],
        ),
    ];
    for (from, expected) in cases {
        assert_eq!(
            signed_set(&milter, &keys, Some("alice"), from).await,
            *expected,
            "{from}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_matching_rule_signs_with_rule_match_all() {
    let keys = keys();
    let milter = TestMilter::start_toml(&format!(
        "[signing]\nrule_match = \"all\"\n{RULES}\n{}",
        key_toml(&keys)
    ));
    let cases: &[(&str, &[&str])] = &[
        (
            "alice@example.com",
            &[
                "example.com/ed",
                "example.com/mail",
                "example.com/rsa",
                "relay.example/esp",
            ],
        ),
        (
            "ceo@example.com",
            &[
                "example.com/ed",
                "example.com/mail",
                "example.com/rsa",
                "relay.example/esp",
            ],
        ),
        // The empty rule adds nothing; later rules still sign.
        (
            "noreply@example.com",
            &[
                "example.com/ed",
                "example.com/mail",
                "example.com/rsa",
                "relay.example/esp",
            ],
        ),
        (
            "x@news.example.com",
            &["news.example.com/mail", "relay.example/esp"],
        ),
    ];
    for (from, expected) in cases {
        assert_eq!(
            signed_set(&milter, &keys, None, from).await,
            *expected,
            "{from}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn without_rules_the_percent_key_never_signs() {
    let keys = keys();
    let milter = TestMilter::start_toml(&key_toml(&keys));
    assert_eq!(
        signed_set(&milter, &keys, Some("alice"), "alice@example.com").await,
        ["example.com/ed", "example.com/rsa"]
    );
    assert!(
        signed_set(&milter, &keys, Some("alice"), "x@customer.example")
            .await
            .is_empty()
    );
    assert!(
        signed_set(&milter, &keys, Some("alice"), "x@relay.example")
            .await
            .len()
            == 1
    );
}

const LOGIN_KEYS: &str = r#"
[[signing.rule]]
sender = "*"
keys = ["shared"]
"#;

#[tokio::test(flavor = "multi_thread")]
async fn logins_sign_only_for_their_senders() {
    let keys = keys();
    let map_dir = tempfile::tempdir().unwrap();
    let map = map_dir.path().join("sender_login");
    std::fs::write(
        &map,
        "# Postfix smtpd_sender_login_maps source\n\
         boss@customer-b.example   carol\n\
         @customer-b.example       bob@customer-b.example, dave\n",
    )
    .unwrap();
    let milter = TestMilter::start_toml(&format!(
        "[signing.logins]\nenabled = true\nsender_login_maps = \"hash:{}\"\n\
         [signing.logins.allow]\n\"relay-user\" = [\"*\"]\n\"ann\" = [\"customer-c.example\"]\n\
         {LOGIN_KEYS}\n{}",
        map.display(),
        key_toml(&keys)
    ));
    let metrics = milter.state.metrics().clone();
    // The login's own domain.
    assert_eq!(
        signed_set(
            &milter,
            &keys,
            Some("alice@customer-a.example"),
            "alice@customer-a.example"
        )
        .await,
        ["customer-a.example/mail"]
    );
    assert_eq!(metrics.signing_refused.load(Ordering::Relaxed), 0);
    // Customer A's login sending as customer B: passed on unsigned.
    let out = drive::drive(
        milter.inet_addr(),
        &Envelope::authenticated("alice@customer-a.example"),
        &message("ceo@customer-b.example", "spoof", "Pay now.\r\n"),
    )
    .await;
    assert_eq!((out.stage, &out.status), ("eom", &Status::Accept));
    assert!(out.inserted("DKIM-Signature").is_empty());
    assert_eq!(metrics.signing_refused.load(Ordering::Relaxed), 1);
    // The map: the address key first, then @domain.
    for (login, from, signs) in [
        ("bob@customer-b.example", "ceo@customer-b.example", true),
        ("dave", "ceo@customer-b.example", true),
        ("carol", "boss@customer-b.example", true),
        // Found first, the address key lists only carol...
        ("dave", "boss@customer-b.example", false),
        // ...but own_domain (on by default) lets bob use all of his domain.
        ("bob@customer-b.example", "boss@customer-b.example", true),
        ("carol", "ceo@customer-b.example", false),
        ("ann", "x@customer-c.example", true),
        ("ann", "x@customer-b.example", false),
        ("relay-user", "anyone@elsewhere.example", true),
    ] {
        let set = signed_set(&milter, &keys, Some(login), from).await;
        assert_eq!(!set.is_empty(), signs, "{login} as {from}: {set:?}");
    }
    assert_eq!(metrics.signing_refused.load(Ordering::Relaxed), 4);
    // Outbound by network, no login: unaffected.
    assert_eq!(
        signed_set(&milter, &keys, None, "ceo@customer-b.example").await,
        ["customer-b.example/mail"]
    );
    assert_eq!(metrics.signing_refused.load(Ordering::Relaxed), 4);
    let text = metrics.render(true, 0);
    assert!(
        text.contains("rmilter_signing_refused_total{reason=\"login\"} 4"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn login_refusal_can_reject_and_is_off_by_default() {
    let keys = keys();
    let milter = TestMilter::start_toml(&format!(
        "[signing.logins]\nenabled = true\naction = \"reject\"\n{LOGIN_KEYS}\n{}",
        key_toml(&keys)
    ));
    let out = drive::drive(
        milter.inet_addr(),
        &Envelope::authenticated("alice@customer-a.example"),
        &message("ceo@customer-b.example", "spoof", "Pay now.\r\n"),
    )
    .await;
    // Decided at end of headers, answered at end of message (no reply
    // at end of headers), with no edit.
    assert_eq!((out.stage, out.actions.len()), ("eom", 0));
    match &out.status {
        Status::Reject { message: Some(m) } => assert_eq!(
            m.to_string_lossy(),
            "550 5.7.1 login alice@customer-a.example may not send as ceo@customer-b.example"
        ),
        other => panic!("{other:?}"),
    }
    // Off (the default): any login signs for any sender a rule covers.
    let open = TestMilter::start_toml(&format!("{LOGIN_KEYS}\n{}", key_toml(&keys)));
    assert_eq!(
        signed_set(
            &open,
            &keys,
            Some("alice@customer-a.example"),
            "ceo@customer-b.example"
        )
        .await,
        ["customer-b.example/mail"]
    );
}

/// Through a real Postfix with SMTP AUTH (Cyrus sasldb): a login signs for
/// the domain Postfix's sender-login map gives it, is refused (550 after
/// DATA) for another customer's domain, and mail from the internal network
/// (no login) is signed for any sender.
#[test]
fn real_postfix_logins_sign_only_their_domains() {
    use common::postfix::{Postfix, PostfixConfig};
    use common::smtp::{Client, Submission};
    let keys = keys();
    let map_dir = tempfile::tempdir().unwrap();
    let map = map_dir.path().join("sender_login");
    std::fs::write(&map, "@customer-a.example alice\n@customer-b.example bob\n").unwrap();
    let milter = TestMilter::start_toml(&format!(
        "[outbound]\nnetworks = [\"10.0.0.0/8\"]\n\
         [signing.logins]\nenabled = true\naction = \"reject\"\nsender_login_maps = \"{}\"\n\
         {LOGIN_KEYS}\n{}",
        map.display(),
        key_toml(&keys)
    ));
    let pf = Postfix::start(PostfixConfig {
        sasl_users: vec![("alice".into(), "wonderland".into())],
        extra_main_cf: vec![("relay_domains".into(), "example.org".into())],
        ..PostfixConfig::with_milters(&milter.postfix_spec())
    });
    let to = ["bob@example.org"];
    let send = |client: Client, from: &str, tag: &str| {
        pf.submit(&Submission::new(
            client,
            from,
            &to,
            &message(from, tag, "Through Postfix.\r\n"),
        ))
    };
    let alice = || Client::authenticated("alice", "wonderland");
    let own = send(alice(), "alice@customer-a.example", "own");
    assert!(own.accepted(), "{own:?}\n{}", pf.diag());
    let other = send(alice(), "ceo@customer-b.example", "other");
    assert_eq!((other.stage, other.code), ("eom", 550), "{other:?}");
    assert!(
        other
            .text
            .contains("login alice may not send as ceo@customer-b.example"),
        "{other:?}"
    );
    let internal = send(
        Client::external("10.1.2.3", "desk.corp.example"),
        "ceo@customer-b.example",
        "internal",
    );
    assert!(internal.accepted(), "{internal:?}\n{}", pf.diag());

    let delivered = pf.sink().wait_for(2, std::time::Duration::from_secs(30));
    assert_eq!(delivered.len(), 2, "{}", pf.diag());
    for m in &delivered {
        let text = String::from_utf8_lossy(&m.data).to_string();
        let domain = if text.contains("Subject: own") {
            "customer-a.example"
        } else {
            "customer-b.example"
        };
        let results = dkimpy::verify(&m.data, &dns(&keys, &[domain]));
        assert_eq!(results.len(), 1, "{}", m.header_text());
        assert!(results[0].pass, "{}", results[0].detail);
        assert_eq!(
            (results[0].d.as_str(), results[0].s.as_str()),
            (domain, "mail")
        );
    }
    assert_eq!(
        milter
            .state
            .metrics()
            .signing_refused
            .load(Ordering::Relaxed),
        1
    );
}
