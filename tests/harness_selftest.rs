//! Self-test of the real-Postfix harness in `tests/common/`, run with real milters (OpenDKIM).
//!
//! Before rmilter's end-to-end tests can be trusted, the harness itself must be shown to work:
//! mail passes through an unfiltered Postfix unchanged, an unreachable milter makes Postfix
//! tempfail, OpenDKIM's signatures on mail submitted from the internal network, by an
//! authenticated user and by local sendmail are accepted by dkimpy, SMTP AUTH really checks
//! passwords, OpenDKIM in verify mode accepts OpenDKIM's signatures, and the queue listing sees
//! deferred and held mail. Needs root and the Debian packages listed in `tests/common/postfix.rs`.

mod common;

use std::time::Duration;

use common::dkimpy;
use common::opendkim::{self, DkimKey, OpenDkim};
use common::postfix::{Postfix, PostfixConfig, WAIT, free_port};
use common::smtp::{Client, Submission};

/// A complete message (Date and Message-ID present, so Postfix adds nothing but Received).
fn message(from: &str, to: &str, subject: &str) -> Vec<u8> {
    format!(
        "From: <{from}>\r\n\
         To: <{to}>\r\n\
         Subject: {subject}\r\n\
         Date: Mon, 02 Mar 2026 10:00:00 +0000\r\n\
         Message-ID: <{}@client.example.net>\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=us-ascii\r\n\
         \r\n\
         Hello,\r\n\
         .a line that starts with a dot, to exercise dot-stuffing\r\n\
         \r\n\
         -- \r\n\
         rmilter harness self-test\r\n",
        subject.replace(' ', "-")
    )
    .into_bytes()
}

#[test]
fn without_milter_external_mail_arrives_unchanged() {
    // The instance is the MX for example.test, so an outside client may send to it.
    let pf = Postfix::start(PostfixConfig {
        extra_main_cf: vec![("relay_domains".into(), "example.test".into())],
        ..PostfixConfig::default()
    });
    let data = message("alice@sender.test", "bob@example.test", "plain relay");
    let s = Submission::new(
        Client::external("192.0.2.10", "mail.sender.test"),
        "alice@sender.test",
        &["bob@example.test"],
        &data,
    );
    let outcome = pf.submit(&s);
    assert!(outcome.accepted(), "{outcome:?}\n{}", pf.diag());
    let queue_id = outcome.queue_id.clone().expect("queue id in the 250 reply");

    let got = pf.sink().wait_for(1, WAIT);
    assert_eq!(got.len(), 1, "nothing delivered\n{}", pf.diag());
    let m = &got[0];
    assert_eq!(m.mail_from, "alice@sender.test");
    assert_eq!(m.rcpt_to, vec!["bob@example.test".to_string()]);
    // Exactly one header was added on top: Postfix's Received, naming the XCLIENT identity.
    assert!(
        m.data.ends_with(&data),
        "body or headers changed:\n{}",
        String::from_utf8_lossy(&m.data)
    );
    let added = String::from_utf8_lossy(&m.data[..m.data.len() - data.len()]).into_owned();
    assert!(
        added.starts_with("Received: from client.example.net (mail.sender.test [192.0.2.10])"),
        "{added}"
    );
    assert!(added.contains(&format!("id {queue_id}")), "{added}");
    assert_eq!(
        added.matches("\r\n").count(),
        added.matches("\r\n\t").count() + 1,
        "one header field: {added}"
    );
    assert!(
        pf.wait_log(&format!("{queue_id}: removed"), WAIT),
        "{}",
        pf.diag()
    );
}

#[test]
fn unreachable_milter_tempfails_and_nothing_is_delivered() {
    let closed = free_port();
    let pf = Postfix::start(PostfixConfig::with_milters(&format!(
        "inet:127.0.0.1:{closed}"
    )));
    let data = message("carol@example.test", "dave@remote.test", "milter down");

    let outcome = pf.submit(&Submission::new(
        Client::Internal,
        "carol@example.test",
        &["dave@remote.test"],
        &data,
    ));
    // milter_default_action = tempfail: smtpd answers 451 from MAIL FROM on.
    assert_eq!(
        (outcome.stage, outcome.code),
        ("mail", 451),
        "expected a tempfail, got {outcome:?}\n{}",
        pf.diag()
    );
    assert!(outcome.text.starts_with("4.7.1"), "{outcome:?}");
    let refused = format!("connect to Milter service inet:127.0.0.1:{closed}: Connection refused");
    // Postfix's log writer may lag behind smtpd's answer.
    assert!(pf.wait_log(&refused, WAIT), "{}", pf.diag());

    // Local submission through non_smtpd_milters is not lost either: it stays queued.
    let out = pf.sendmail("carol@example.test", &["dave@remote.test"], &data);
    assert!(out.status.success(), "sendmail: {out:?}");
    assert!(
        pf.wait_log("milter-reject: CONNECT from localhost[127.0.0.1]", WAIT),
        "{}",
        pf.diag()
    );
    pf.flush();
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        pf.sink().messages().is_empty(),
        "delivered although the milter is down\n{}",
        pf.diag()
    );
    let queue = pf.queue();
    assert!(
        queue.iter().all(|e| e.queue_name == "maildrop"
            || e.queue_name == "incoming"
            || e.queue_name == "deferred"),
        "{queue:?}"
    );
    assert_eq!(
        queue.len(),
        1,
        "the sendmail message must wait in the queue: {queue:?}\n{}",
        pf.diag()
    );
}

#[test]
fn opendkim_signatures_on_internal_authenticated_and_local_mail_pass_dkimpy() {
    let keys = tempfile::tempdir().unwrap();
    let rsa = DkimKey::rsa(keys.path(), "example.test", "rsa2048", 2048);
    let ed = DkimKey::ed25519(keys.path(), "example.test", "ed");
    let (signer_rsa, signer_ed) = (OpenDkim::sign(&rsa), OpenDkim::sign(&ed));
    let milters = format!("{}, {}", signer_rsa.milter(), signer_ed.milter());
    let pf = Postfix::start(PostfixConfig {
        sasl_users: vec![("roamer".into(), "correct horse".into())],
        // example.test is also "ours" inbound, so the external client below is accepted.
        extra_main_cf: vec![("relay_domains".into(), "example.test".into())],
        ..PostfixConfig::with_milters(&milters)
    });
    let dns = vec![rsa.dns(), ed.dns()];

    let from = "sender@example.test";
    let rcpt = "someone@remote.test";
    let cases = [
        ("internal", Client::Internal),
        (
            "authenticated",
            Client::authenticated("roamer", "correct horse"),
        ),
        // Outside mynetworks and not in OpenDKIM's InternalHosts: only the login makes it outbound.
        (
            "roaming",
            Client::authenticated_external(
                "198.51.100.7",
                "dsl.isp.test",
                "roamer",
                "correct horse",
            ),
        ),
        (
            "external",
            Client::external("203.0.113.5", "mx.elsewhere.test"),
        ),
    ];
    for (tag, client) in &cases {
        let s = Submission::new(client.clone(), from, &[rcpt], &message(from, rcpt, tag));
        let o = pf.submit(&s);
        if *tag == "external" {
            // Relaying for an outside client is refused: XCLIENT really changed the client.
            assert_eq!((o.stage, o.code), ("rcpt", 554), "{o:?}\n{}", pf.diag());
            // Inbound mail for example.test itself is accepted.
            let inbound = Submission {
                rcpt_to: vec!["postmaster@example.test".into()],
                ..s
            };
            let o = pf.submit(&inbound);
            assert!(o.accepted(), "{tag}: {o:?}\n{}", pf.diag());
        } else {
            assert!(o.accepted(), "{tag}: {o:?}\n{}", pf.diag());
        }
    }
    let out = pf.sendmail(from, &[rcpt], &lf(&message(from, rcpt, "local")));
    assert!(
        out.status.success(),
        "sendmail failed: {out:?}\n{}",
        pf.diag()
    );

    let got = pf.sink().wait_for(5, WAIT);
    assert_eq!(
        got.len(),
        5,
        "expected internal, authenticated, roaming, external and local mail\n{}",
        pf.diag()
    );
    for m in &got {
        let subject = m.header_values("Subject").join(",");
        let sigs = dkimpy::verify(&m.data, &dns);
        if subject == "external" {
            // OpenDKIM signs only for internal hosts and authenticated users.
            assert!(sigs.is_empty(), "external mail was signed: {sigs:?}");
            assert!(m.header_values("DKIM-Signature").is_empty());
            continue;
        }
        assert_eq!(
            sigs.len(),
            2,
            "{subject}: expected an RSA and an Ed25519 signature:\n{}",
            m.header_text()
        );
        let mut algs: Vec<&str> = sigs.iter().map(|s| s.a.as_str()).collect();
        algs.sort();
        assert_eq!(algs, ["ed25519-sha256", "rsa-sha256"], "{subject}");
        for sig in &sigs {
            assert!(
                sig.pass,
                "{subject}: dkimpy rejects {sig:?}\n{}",
                m.header_text()
            );
            assert_eq!(sig.d, "example.test");
        }
        // The verifier can fail: with the keys swapped every signature must fail.
        let wrong = vec![
            (rsa.dns_name.clone(), ed.dns_value.clone()),
            (ed.dns_name.clone(), rsa.dns_value.clone()),
        ];
        assert!(
            dkimpy::verify(&m.data, &wrong).iter().all(|s| !s.pass),
            "{subject}: passes with wrong keys"
        );
        // And a changed body breaks both signatures.
        let mut tampered = m.data.clone();
        tampered.extend_from_slice(b"appended line\r\n");
        assert!(
            dkimpy::verify(&tampered, &dns).iter().all(|s| !s.pass),
            "{subject}: passes when tampered"
        );
    }
    let mut subjects: Vec<String> = got
        .iter()
        .map(|m| m.header_values("Subject").join(","))
        .collect();
    subjects.sort();
    assert_eq!(
        subjects,
        ["authenticated", "external", "internal", "local", "roaming"]
    );
}

#[test]
fn sasl_auth_checks_the_password() {
    let pf = Postfix::start(PostfixConfig {
        sasl_users: vec![("alice".into(), "right-password".into())],
        ..PostfixConfig::default()
    });
    let data = message("alice@example.test", "bob@remote.test", "auth");
    let roaming = |password: &str| {
        Submission::new(
            Client::authenticated_external("198.51.100.9", "cafe.isp.test", "alice", password),
            "alice@example.test",
            &["bob@remote.test"],
            &data,
        )
    };
    let wrong = pf.submit(&roaming("wrong-password"));
    assert_eq!(
        (wrong.stage, wrong.code),
        ("auth", 535),
        "{wrong:?}\n{}",
        pf.diag()
    );
    let unknown = pf.submit(&Submission::new(
        Client::authenticated("mallory", "right-password"),
        "alice@example.test",
        &["bob@remote.test"],
        &data,
    ));
    assert_eq!((unknown.stage, unknown.code), ("auth", 535), "{unknown:?}");

    let right = pf.submit(&roaming("right-password"));
    assert!(right.accepted(), "{right:?}\n{}", pf.diag());
    // A user added while Postfix runs can log in at once.
    pf.add_sasl_user("bob", "bobs-password");
    let bob = pf.submit(&Submission::new(
        Client::authenticated_external("198.51.100.10", "home.isp.test", "bob", "bobs-password"),
        "bob@example.test",
        &["carol@remote.test"],
        &data,
    ));
    assert!(bob.accepted(), "{bob:?}\n{}", pf.diag());
    assert_eq!(pf.sink().wait_for(2, WAIT).len(), 2, "{}", pf.diag());
    assert!(
        pf.wait_log("sasl_method=PLAIN, sasl_username=alice", WAIT),
        "{}",
        pf.diag()
    );
}

#[test]
fn opendkim_verify_mode_accepts_opendkim_signatures() {
    let keys = tempfile::tempdir().unwrap();
    let key = DkimKey::rsa(keys.path(), "sender.test", "s1", 2048);
    let signer = OpenDkim::sign(&key);
    let outbound = Postfix::start(PostfixConfig::with_milters(&signer.milter()));
    let data = message(
        "alice@sender.test",
        "bob@example.test",
        "signed by opendkim",
    );
    let o = outbound.submit(&Submission::new(
        Client::Internal,
        "alice@sender.test",
        &["bob@example.test"],
        &data,
    ));
    assert!(o.accepted(), "{o:?}\n{}", outbound.diag());
    let sent = outbound.sink().wait_for(1, WAIT);
    assert_eq!(sent.len(), 1, "{}", outbound.diag());

    // The second instance plays the receiving MX: OpenDKIM verifies with keys from a file.
    let verifier = OpenDkim::verify(&[key.dns()]);
    let inbound = Postfix::start(PostfixConfig {
        extra_main_cf: vec![("relay_domains".into(), "example.test".into())],
        ..PostfixConfig::with_milters(&verifier.milter())
    });
    let mut results = Vec::new();
    for (tag, body) in [
        ("intact", sent[0].data.clone()),
        ("tampered", [sent[0].data.as_slice(), b"x\r\n"].concat()),
    ] {
        let o = inbound.submit(&Submission::new(
            Client::external("192.0.2.44", "mx.sender.test"),
            "alice@sender.test",
            &["bob@example.test"],
            &body,
        ));
        assert!(o.accepted(), "{tag}: {o:?}\n{}", inbound.diag());
        let got = inbound.sink().wait_for(results.len() + 1, WAIT);
        let m = got.last().expect("delivered");
        results.push(opendkim::dkim_results(
            &m.header_values("Authentication-Results"),
        ));
    }
    assert_eq!(
        results,
        [vec!["pass".to_string()], vec!["fail".to_string()]],
        "{}",
        inbound.diag()
    );
}

#[test]
fn queue_shows_deferred_and_held_mail() {
    let pf = Postfix::start(PostfixConfig {
        extra_main_cf: vec![(
            "header_checks".into(),
            "regexp:{{/^Subject: please hold/ HOLD quarantined by test}}".into(),
        )],
        ..PostfixConfig::default()
    });
    pf.sink().set_data_reply(451, "4.3.0 sink says later");
    let data = message("erin@example.test", "frank@remote.test", "deferred once");
    let o = pf.submit(&Submission::new(
        Client::Internal,
        "erin@example.test",
        &["frank@remote.test"],
        &data,
    ));
    assert!(o.accepted(), "{o:?}\n{}", pf.diag());
    let queue = pf.wait_queue(WAIT, |q| q.iter().any(|e| e.queue_name == "deferred"));
    let deferred = queue
        .iter()
        .find(|e| e.queue_name == "deferred")
        .unwrap_or_else(|| panic!("{queue:?}\n{}", pf.diag()));
    assert_eq!(deferred.sender, "erin@example.test");
    assert_eq!(deferred.recipients, ["frank@remote.test"]);
    assert!(
        deferred
            .reason
            .as_deref()
            .unwrap_or_default()
            .contains("sink says later"),
        "{deferred:?}"
    );
    assert!(!pf.sink().refused().is_empty());

    pf.sink().accept_all();
    pf.flush();
    assert_eq!(pf.sink().wait_for(1, WAIT).len(), 1, "{}", pf.diag());
    assert!(
        pf.wait_queue(WAIT, |q| q.is_empty()).is_empty(),
        "{}",
        pf.diag()
    );

    let held = message("erin@example.test", "frank@remote.test", "please hold");
    let o = pf.submit(&Submission::new(
        Client::Internal,
        "erin@example.test",
        &["frank@remote.test"],
        &held,
    ));
    assert!(o.accepted(), "{o:?}");
    let queue = pf.wait_queue(WAIT, |q| q.iter().any(|e| e.queue_name == "hold"));
    assert_eq!(queue.len(), 1, "{queue:?}\n{}", pf.diag());
    assert_eq!(
        (queue[0].queue_name.as_str(), Some(&queue[0].queue_id)),
        ("hold", o.queue_id.as_ref())
    );
}

/// The same message with LF line ends, as a local program hands it to sendmail(1).
fn lf(data: &[u8]) -> Vec<u8> {
    String::from_utf8_lossy(data)
        .replace("\r\n", "\n")
        .into_bytes()
}
