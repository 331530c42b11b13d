//! The real rmilter server, started in-process, driven over the milter
//! protocol by an MTA-side client: which messages are signed, what is
//! refused, and that message state never leaks between messages.

mod common;

use common::drive::{self, Envelope};
use common::keys::TestKeys;
use common::milter::TestMilter;
use common::{dkim_tag, message};
use indymilter::{Actions, MacroStage, ProtoOpts};
use indymilter_test::{EomAction, Status};

fn signing_milter(keys: &TestKeys, extra: &str) -> TestMilter {
    TestMilter::start_toml(&format!("{extra}\n{}", keys.toml()))
}

fn reply_text(status: &Status) -> String {
    match status {
        Status::Reject { message: Some(m) } | Status::Tempfail { message: Some(m) } => {
            m.to_string_lossy().into_owned()
        }
        other => format!("{other:?}"),
    }
}

#[tokio::test]
async fn negotiation_requests_only_what_is_used() {
    let milter = TestMilter::start_toml("");
    let conn = drive::open(milter.inet_addr()).await;
    assert_eq!(
        conn.negotiated_actions(),
        Actions::ADD_HEADER | Actions::CHANGE_HEADER | Actions::QUARANTINE
    );
    let opts = conn.negotiated_opts();
    assert!(opts.contains(ProtoOpts::LEADING_SPACE));
    // Answers only at end of message: no round trip for connect, HELO,
    // MAIL, each field, end of headers or each body chunk.
    for stage in [
        ProtoOpts::NOREPLY_CONNECT,
        ProtoOpts::NOREPLY_HELO,
        ProtoOpts::NOREPLY_MAIL,
        ProtoOpts::NOREPLY_HEADER,
        ProtoOpts::NOREPLY_EOH,
        ProtoOpts::NOREPLY_BODY,
    ] {
        assert!(opts.contains(stage), "{stage:?} not negotiated");
    }
    assert!(opts.contains(ProtoOpts::NO_RCPT) && opts.contains(ProtoOpts::NO_DATA));
    assert!(!opts.contains(ProtoOpts::NO_HEADER) && !opts.contains(ProtoOpts::NO_BODY));
    let macros = conn.requested_macros();
    assert!(
        macros[&MacroStage::Mail]
            .to_str()
            .unwrap()
            .contains("{auth_authen}")
    );
    assert!(
        macros[&MacroStage::Connect]
            .to_str()
            .unwrap()
            .contains("{daemon_name}")
    );
    assert_eq!(macros[&MacroStage::Eom].to_str().unwrap(), "i");
    conn.close().await.unwrap();
}

#[tokio::test]
async fn authenticated_mail_gets_rsa_and_ed25519_signatures() {
    let keys = TestKeys::example_com();
    let milter = signing_milter(&keys, "");
    let out = drive::drive(
        milter.inet_addr(),
        &Envelope::authenticated("alice"),
        &message("Alice <alice@example.com>", "hello", "Hi Bob.\r\n"),
    )
    .await;
    assert_eq!(out.stage, "eom");
    assert_eq!(out.status, Status::Continue);
    let sigs = out.inserted("DKIM-Signature");
    assert_eq!(sigs.len(), 2, "{:?}", out.actions);
    let mut algorithms: Vec<String> = sigs.iter().map(|s| dkim_tag(s, "a").unwrap()).collect();
    algorithms.sort();
    assert_eq!(algorithms, ["ed25519-sha256", "rsa-sha256"]);
    for sig in &sigs {
        assert!(
            sig.starts_with(" v=1;"),
            "value keeps the leading space: {sig:?}"
        );
        assert_eq!(dkim_tag(sig, "d").as_deref(), Some("example.com"));
        assert_eq!(dkim_tag(sig, "c").as_deref(), Some("relaxed/relaxed"));
        assert!(dkim_tag(sig, "l").is_none(), "never l=");
        assert!(dkim_tag(sig, "x").is_none(), "no x= unless configured");
        let h = dkim_tag(sig, "h").unwrap().to_ascii_lowercase();
        let names: Vec<&str> = h.split(':').collect();
        // Present and oversigned: listed once more than present.
        for field in [
            "from",
            "to",
            "subject",
            "date",
            "message-id",
            "mime-version",
            "content-type",
        ] {
            assert_eq!(
                names.iter().filter(|n| **n == field).count(),
                2,
                "{field} in h={h}"
            );
        }
        // Absent but oversigned: listed once, so it cannot be added later.
        for field in ["cc", "reply-to", "sender", "content-transfer-encoding"] {
            assert_eq!(
                names.iter().filter(|n| **n == field).count(),
                1,
                "{field} in h={h}"
            );
        }
        // Absent and not oversigned: not listed.
        assert!(!names.contains(&"resent-date"), "h={h}");
    }
    for action in &out.actions {
        assert!(
            matches!(action, EomAction::InsertHeader { index: 0, .. }),
            "signatures go on top: {action:?}"
        );
    }
}

/// Inbound mail is verified, never signed. The test resolver is
/// unreachable, so DMARC is a temperror and the default action tempfails
/// (nothing is accepted unverified).
fn assert_verified_not_signed(out: &drive::Outcome, label: &str) {
    assert_eq!(out.stage, "eom", "{label}: {:?}", out.status);
    assert!(out.inserted("DKIM-Signature").is_empty(), "{label}: signed");
    assert!(
        reply_text(&out.status).starts_with("451 4.4.3 "),
        "{label}: {:?}",
        out.status
    );
}

#[tokio::test]
async fn inbound_mail_is_not_signed() {
    let keys = TestKeys::example_com();
    let milter = signing_milter(&keys, "");
    let out = drive::drive(
        milter.inet_addr(),
        &Envelope::inbound(),
        &message("Alice <alice@example.com>", "spoof", "body\r\n"),
    )
    .await;
    assert_verified_not_signed(&out, "inbound");
}

#[tokio::test]
async fn each_outbound_rule_signs() {
    let keys = TestKeys::new(&[("example.com", "ed", rmilter::config::KeyAlgorithm::Ed25519)]);
    let milter = signing_milter(
        &keys,
        "[outbound]\nauthenticated = true\nnetworks = [\"10.0.0.0/8\", \"2001:db8::/32\"]\ndaemon_names = [\"ORIGINATING\"]\nlocal_submission = true\n",
    );
    let msg = message("alice@example.com", "rules", "x\r\n");
    let mut internal_v4 = Envelope::inbound();
    internal_v4.client_addr = "10.1.2.3:40000".parse().unwrap();
    let mut internal_v6 = Envelope::inbound();
    internal_v6.client_addr = "[2001:db8::25]:40000".parse().unwrap();
    let mut submission = Envelope::inbound();
    submission.daemon_name = "ORIGINATING".into();
    let mut local = Envelope::inbound();
    local.client_name = "localhost".into();
    local.client_addr = "127.0.0.1:0".parse().unwrap();
    for (label, env) in [
        ("authenticated", Envelope::authenticated("alice")),
        ("internal ipv4", internal_v4),
        ("internal ipv6", internal_v6),
        ("daemon name", submission),
        ("local submission", local),
    ] {
        let out = drive::drive(milter.inet_addr(), &env, &msg).await;
        assert_eq!(out.status, Status::Continue, "{label}");
        assert_eq!(out.inserted("DKIM-Signature").len(), 1, "{label}");
    }
    // A client on loopback with a real port is not a local submission, and
    // loopback is not in this configuration's networks.
    let mut loopback_smtp = Envelope::inbound();
    loopback_smtp.client_name = "localhost".into();
    loopback_smtp.client_addr = "127.0.0.1:51234".parse().unwrap();
    let out = drive::drive(milter.inet_addr(), &loopback_smtp, &msg).await;
    assert_verified_not_signed(&out, "loopback smtp");
}

#[tokio::test]
async fn outbound_rules_can_be_switched_off() {
    let keys = TestKeys::new(&[("example.com", "ed", rmilter::config::KeyAlgorithm::Ed25519)]);
    let milter = signing_milter(
        &keys,
        "[outbound]\nauthenticated = false\nnetworks = []\ndaemon_names = []\nlocal_submission = false\n",
    );
    let mut local = Envelope::inbound();
    local.client_name = "localhost".into();
    local.client_addr = "127.0.0.1:0".parse().unwrap();
    for env in [Envelope::authenticated("alice"), local] {
        let out = drive::drive(
            milter.inet_addr(),
            &env,
            &message("a@example.com", "s", "b\r\n"),
        )
        .await;
        assert_verified_not_signed(&out, "rules off");
    }
}

#[tokio::test]
async fn several_from_fields_are_refused_and_not_signed() {
    let keys = TestKeys::example_com();
    let milter = signing_milter(&keys, "");
    let raw = b"From: alice@example.com\r\nFrom: ceo@example.com\r\nSubject: x\r\n\r\nbody\r\n";
    let out = drive::drive(milter.inet_addr(), &Envelope::authenticated("alice"), raw).await;
    // Decided at end of headers, answered at end of message (no reply
    // at end of headers), with no edit.
    assert_eq!((out.stage, out.actions.len()), ("eom", 0));
    let text = reply_text(&out.status);
    assert!(
        matches!(out.status, Status::Reject { .. }),
        "{:?}",
        out.status
    );
    assert!(text.starts_with("550 5.7.1 "), "{text}");
    assert!(text.contains("From"), "{text}");
    assert!(out.actions.is_empty());
}

/// A decision at end of headers reaches the MTA at end of headers when it
/// waits for an answer there, and at end of message when rmilter could
/// negotiate no reply (SMFIP_NR_EOH, as Postfix offers): the body in between
/// is ignored, and the next message on the connection starts clean.
#[tokio::test]
async fn end_of_headers_decision_with_and_without_a_reply_there() {
    let keys = TestKeys::example_com();
    let milter = signing_milter(&keys, "");
    let refused = b"From: alice@example.com\r\nFrom: ceo@example.com\r\nSubject: x\r\n\r\nbody\r\n";
    let env = Envelope::authenticated("alice");
    let all = indymilter_test::TestConnection::configure()
        .exact_leading_space(true)
        .open_tcp(milter.inet_addr())
        .await
        .unwrap();
    let old_mta = indymilter_test::TestConnection::configure()
        .exact_leading_space(true)
        .available_opts(ProtoOpts::all() - ProtoOpts::NOREPLY_EOH)
        .open_tcp(milter.inet_addr())
        .await
        .unwrap();
    for (mut conn, stage) in [(all, "eom"), (old_mta, "eoh")] {
        assert_eq!(
            conn.negotiated_opts().contains(ProtoOpts::NOREPLY_EOH),
            stage == "eom"
        );
        drive::connect(&mut conn, &env).await;
        let out = drive::send_message(&mut conn, &env, refused).await;
        assert_eq!(out.stage, stage);
        assert!(
            reply_text(&out.status).starts_with("550 5.7.1 message refused: "),
            "{stage}: {:?}",
            out.status
        );
        assert!(out.actions.is_empty(), "{stage}: {:?}", out.actions);
        // An outbound message no key signs: accepted, never signed.
        let out = drive::send_message(
            &mut conn,
            &env,
            &message("carol@other.example", "unsigned", "two\r\n"),
        )
        .await;
        assert_eq!((out.stage, &out.status), (stage, &Status::Accept));
        // Then a message that is signed: nothing of the two before leaks.
        let out = drive::send_message(
            &mut conn,
            &env,
            &message("alice@example.com", "signed", "three\r\n"),
        )
        .await;
        assert_eq!((out.stage, &out.status), ("eom", &Status::Continue));
        assert!(!out.inserted("DKIM-Signature").is_empty(), "{stage}");
        conn.close().await.unwrap();
    }
}

#[tokio::test]
async fn several_addresses_in_from_are_refused() {
    let keys = TestKeys::example_com();
    let milter = signing_milter(&keys, "");
    let raw = b"From: alice@example.com, mallory@attacker.example\r\nSubject: x\r\n\r\nbody\r\n";
    let out = drive::drive(milter.inet_addr(), &Envelope::authenticated("alice"), raw).await;
    // Decided at end of headers, answered at end of message (no reply
    // at end of headers), with no edit.
    assert_eq!((out.stage, out.actions.len()), ("eom", 0));
    assert!(
        reply_text(&out.status).starts_with("550 5.7.1 "),
        "{:?}",
        out.status
    );
}

#[tokio::test]
async fn bad_from_action_is_configurable() {
    let keys = TestKeys::example_com();
    let raw = b"From: a@example.com\r\nFrom: b@example.com\r\n\r\nbody\r\n";
    let tempfail = signing_milter(&keys, "[actions]\nbad_from = \"tempfail\"\n");
    let out = drive::drive(tempfail.inet_addr(), &Envelope::authenticated("a"), raw).await;
    assert!(
        reply_text(&out.status).starts_with("451 4.7.1 "),
        "{:?}",
        out.status
    );
    let accept = signing_milter(&keys, "[actions]\nbad_from = \"accept\"\n");
    let out = drive::drive(accept.inet_addr(), &Envelope::authenticated("a"), raw).await;
    assert_eq!((out.stage, &out.status), ("eom", &Status::Accept));
    assert!(out.actions.is_empty(), "accepted but never signed");
}

#[tokio::test]
async fn no_key_for_the_author_domain_means_unsigned() {
    let keys = TestKeys::example_com();
    let milter = signing_milter(&keys, "");
    for from in ["someone@other.example", "someone@sub.example.com"] {
        let out = drive::drive(
            milter.inet_addr(),
            &Envelope::authenticated("u"),
            &message(from, "s", "b\r\n"),
        )
        .await;
        assert_eq!((out.stage, &out.status), ("eom", &Status::Accept), "{from}");
    }
}

#[tokio::test]
async fn subdomains_sign_with_the_parent_key_when_enabled() {
    let keys = TestKeys::example_com();
    let milter = signing_milter(&keys, "[signing]\nsubdomains = true\n");
    let out = drive::drive(
        milter.inet_addr(),
        &Envelope::authenticated("u"),
        &message("news@lists.sub.example.com", "s", "b\r\n"),
    )
    .await;
    let sigs = out.inserted("DKIM-Signature");
    assert_eq!(sigs.len(), 2);
    assert!(
        sigs.iter()
            .all(|s| dkim_tag(s, "d").as_deref() == Some("example.com"))
    );
}

#[tokio::test]
async fn expiry_and_canonicalization_come_from_the_configuration() {
    let keys = TestKeys::new(&[("example.com", "ed", rmilter::config::KeyAlgorithm::Ed25519)]);
    let milter = signing_milter(
        &keys,
        "[signing]\nexpire = \"7d\"\ncanonicalization = \"simple/simple\"\n",
    );
    let out = drive::drive(
        milter.inet_addr(),
        &Envelope::authenticated("u"),
        &message("a@example.com", "s", "b\r\n"),
    )
    .await;
    let sig = &out.inserted("DKIM-Signature")[0];
    let t: u64 = dkim_tag(sig, "t").unwrap().parse().unwrap();
    let x: u64 = dkim_tag(sig, "x").unwrap().parse().unwrap();
    assert_eq!(x - t, 7 * 86400);
    assert_eq!(dkim_tag(sig, "c").as_deref(), Some("simple/simple"));
}

#[tokio::test]
async fn abort_mid_message_then_next_message_starts_clean() {
    let keys = TestKeys::example_com();
    let milter = signing_milter(&keys, "");
    let env = Envelope::authenticated("alice");
    let mut conn = drive::open(milter.inet_addr()).await;
    drive::connect(&mut conn, &env).await;
    // Message 1: headers and part of the body, then ABORT.
    conn.macros(MacroStage::Mail, [("{auth_authen}", "alice")])
        .await
        .unwrap();
    conn.mail(["<alice@example.com>"]).await.unwrap();
    conn.header("From", " alice@example.com").await.unwrap();
    conn.header("Subject", " first").await.unwrap();
    assert_eq!(conn.eoh().await.unwrap(), Status::Noreply);
    assert!(matches!(
        conn.body("part of message one\r\n").await.unwrap(),
        Status::Continue | Status::Noreply
    ));
    conn.abort().await.unwrap();
    // Message 2 on the same connection: a From without a key. Had message
    // 1's From or signer survived, this would be signed.
    let out = drive::send_message(
        &mut conn,
        &env,
        &message("carol@other.example", "second", "two\r\n"),
    )
    .await;
    assert_eq!((out.stage, &out.status), ("eom", &Status::Accept));
    // Message 3: signed normally.
    let out = drive::send_message(
        &mut conn,
        &env,
        &message("alice@example.com", "third", "three\r\n"),
    )
    .await;
    assert_eq!(out.inserted("DKIM-Signature").len(), 2);
    conn.close().await.unwrap();
    assert_eq!(
        milter.state.in_flight(),
        0,
        "aborted message no longer counted"
    );
}

#[tokio::test]
async fn two_messages_on_one_connection_get_their_own_signatures() {
    let keys = TestKeys::new(&[("example.com", "ed", rmilter::config::KeyAlgorithm::Ed25519)]);
    let milter = signing_milter(&keys, "");
    let env = Envelope::authenticated("alice");
    let mut conn = drive::open(milter.inet_addr()).await;
    drive::connect(&mut conn, &env).await;
    let one = drive::send_message(
        &mut conn,
        &env,
        &message("alice@example.com", "one", "first body\r\n"),
    )
    .await;
    let two = drive::send_message(
        &mut conn,
        &env,
        &message("alice@example.com", "two", "second body\r\n"),
    )
    .await;
    conn.close().await.unwrap();
    let bh = |o: &drive::Outcome| dkim_tag(&o.inserted("DKIM-Signature")[0], "bh").unwrap();
    assert_ne!(bh(&one), bh(&two));
}

#[tokio::test]
async fn header_section_over_the_limit_is_refused() {
    let keys = TestKeys::example_com();
    let milter = signing_milter(&keys, "[limits]\nmax_headers = 50\n");
    let mut raw = String::from("From: alice@example.com\r\n");
    for i in 0..60 {
        raw.push_str(&format!("X-Filler-{i}: {i}\r\n"));
    }
    raw.push_str("\r\nbody\r\n");
    let out = drive::drive(
        milter.inet_addr(),
        &Envelope::authenticated("a"),
        raw.as_bytes(),
    )
    .await;
    // Decided at end of headers, answered at end of message (no reply
    // at end of headers), with no edit.
    assert_eq!((out.stage, out.actions.len()), ("eom", 0));
    assert!(
        reply_text(&out.status).starts_with("552 5.3.4 "),
        "{:?}",
        out.status
    );
}

#[tokio::test]
async fn unix_socket_with_mode_and_removal() {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run/rmilter.sock");
    let milter = TestMilter::start_toml(&format!(
        "listen = \"unix:{}\"\n[socket]\nmode = \"0660\"\n",
        path.display()
    ));
    let meta = std::fs::metadata(&path).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    let mut conn = indymilter_test::TestConnection::configure()
        .exact_leading_space(true)
        .open_unix(&path)
        .await
        .unwrap();
    drive::connect(&mut conn, &Envelope::inbound()).await;
    conn.close().await.unwrap();
    milter.stop().unwrap();
    assert!(!path.exists(), "socket file removed at exit");
}

#[tokio::test]
async fn a_live_socket_is_never_taken_over_but_a_stale_one_is() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rmilter.sock");
    let toml = format!("listen = \"unix:{}\"\n", path.display());
    let first = TestMilter::start_toml(&toml);
    let second = std::panic::catch_unwind(|| TestMilter::start_toml(&toml));
    let err = second
        .err()
        .and_then(|e| e.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    assert!(err.contains("another process is listening"), "{err}");
    drop(first);
    // A socket file nobody listens on is stale and gets replaced.
    let stale = std::os::unix::net::UnixListener::bind(&path).unwrap();
    drop(stale);
    assert!(path.exists());
    let third = TestMilter::start_toml(&toml);
    third.stop().unwrap();
    // A regular file is never removed.
    std::fs::write(&path, "not a socket").unwrap();
    let fourth = std::panic::catch_unwind(|| TestMilter::start_toml(&toml));
    let err = fourth
        .err()
        .and_then(|e| e.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    assert!(err.contains("is not a socket"), "{err}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "not a socket");
}

/// The header-field deletions of an outcome: (name, index).
fn deleted(actions: &[EomAction]) -> Vec<(String, i32)> {
    actions
        .iter()
        .filter_map(|a| match a {
            EomAction::DeleteHeader { name, index } => {
                Some((name.to_string_lossy().into_owned(), *index))
            }
            _ => None,
        })
        .collect()
}

/// A message from `from` with one forged and one foreign
/// Authentication-Results field, then `fillers` more fields.
fn with_forged_results(from: &str, fillers: usize) -> Vec<u8> {
    let mut raw = String::from(
        "Authentication-Results: mx.example.org; dmarc=pass header.from=example.com\r\n\
         Authentication-Results: upstream.example; spf=pass\r\n",
    );
    raw.push_str(&format!("From: {from}\r\nSubject: s\r\n"));
    for i in 0..fillers {
        raw.push_str(&format!("X-Filler-{i}: {i}\r\n"));
    }
    raw.push_str("\r\nbody\r\n");
    raw.into_bytes()
}

const OVERSIZED_ACCEPT: &str = "authserv_id = \"mx.example.org\"\n[limits]\nmax_headers = 50\n[actions]\noversized_headers = \"accept\"\n";

#[tokio::test]
async fn oversized_header_section_accepted_still_loses_forged_results() {
    let keys = TestKeys::example_com();
    let milter = signing_milter(&keys, OVERSIZED_ACCEPT);
    // Inbound: on to end of message, forged field deleted, and our field
    // says nothing was verified.
    let raw = with_forged_results("ceo@example.com", 60);
    let out = drive::drive(milter.inet_addr(), &Envelope::inbound(), &raw).await;
    assert_eq!((out.stage, &out.status), ("eom", &Status::Continue));
    assert_eq!(
        deleted(&out.actions),
        [("Authentication-Results".to_string(), 1)]
    );
    let ar = out.inserted("Authentication-Results");
    assert_eq!(ar.len(), 1, "{ar:?}");
    assert!(ar[0].contains("dmarc=permerror"), "{ar:?}");
    let text = String::from_utf8_lossy(&out.message);
    assert!(!text.contains("dmarc=pass"), "{text}");
    // Outbound with a forged field: deleted, not signed.
    let out = drive::drive(
        milter.inet_addr(),
        &Envelope::authenticated("alice"),
        &with_forged_results("alice@example.com", 60),
    )
    .await;
    assert_eq!((out.stage, &out.status), ("eom", &Status::Continue));
    assert_eq!(
        deleted(&out.actions),
        [("Authentication-Results".to_string(), 1)]
    );
    assert!(out.inserted("DKIM-Signature").is_empty());
    // Outbound without one: accepted at end of headers as before.
    let mut clean = String::from("From: alice@example.com\r\n");
    for i in 0..60 {
        clean.push_str(&format!("X-Filler-{i}: {i}\r\n"));
    }
    clean.push_str("\r\nbody\r\n");
    let out = drive::drive(
        milter.inet_addr(),
        &Envelope::authenticated("alice"),
        clean.as_bytes(),
    )
    .await;
    assert_eq!((out.stage, &out.status), ("eom", &Status::Accept));
}

#[tokio::test]
async fn look_alike_results_are_deleted() {
    let keys = TestKeys::example_com();
    let milter = signing_milter(&keys, "authserv_id = \"mx.desk.example\"\n");
    let forms: [&[u8]; 12] = [
        b" mx.desk.example\x0b; dmarc=pass",
        b" mx.desk.example\xc2\xa0; dmarc=pass",
        b" mx.desk.example.; dmarc=pass",
        b" mx.desk.example,x; dmarc=pass",
        b" mx.desk.example/x; dmarc=pass",
        b" mx.desk.example:x; dmarc=pass",
        b" mx.desk.example=x; dmarc=pass",
        " mx.de\u{17f}k.example; dmarc=pass".as_bytes(),
        " mx.des\u{212a}.example; dmarc=pass".as_bytes(),
        b" MX.DESK.EXAMPLE; dmarc=pass",
        b" mx.desk.example.org; dmarc=pass",
        b" upstream.example; dmarc=pass",
    ];
    let mut raw = Vec::new();
    for form in forms {
        raw.extend_from_slice(b"Authentication-Results:");
        raw.extend_from_slice(form);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"From: carol@other.example\r\nSubject: s\r\n\r\nbody\r\n");
    let out = drive::drive(milter.inet_addr(), &Envelope::authenticated("a"), &raw).await;
    assert_eq!((out.stage, &out.status), ("eom", &Status::Continue));
    let indices: Vec<i32> = deleted(&out.actions).into_iter().map(|(_, i)| i).collect();
    // Highest first; the last two (another host, a foreign one) are kept.
    assert_eq!(indices, (1..=10).rev().collect::<Vec<i32>>());
}
