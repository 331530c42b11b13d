//! Third-party signed messages verified by rmilter, with their DNS served
//! by the test DNS server: RFC 8463 Appendix A (Ed25519 and RSA on one
//! message), dkimpy's RFC 6376 example, mail-auth's real-world message, an
//! ARC-sealed message, and mail signed by OpenDKIM (Debian's package)
//! both for RSA and Ed25519.

mod common;

use common::dns::{TestDns, Zone};
use common::drive::{self, Envelope, Outcome};
use common::milter::TestMilter;
use common::opendkim::{DkimKey, OpenDkim};
use indymilter_test::Status;
use std::path::PathBuf;

fn testdata(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/third-party")
        .join(path)
}

/// LF to CRLF, leaving existing CRLF alone.
fn crlf(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 64);
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

/// "name value" lines, a blank line, then the message (the testdata format).
fn split_dns_and_message(text: &[u8]) -> (Zone, Vec<u8>) {
    let text = crlf(text);
    let split = text.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let (head, message) = (&text[..split], &text[split + 4..]);
    (
        zone_from_lines(&String::from_utf8_lossy(head)),
        message.to_vec(),
    )
}

fn zone_from_lines(text: &str) -> Zone {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .fold(Zone::new(), |zone, line| {
            let (name, value) = line.trim().split_once(' ').unwrap();
            zone.txt(name, value.trim())
        })
}

fn verifier(dns: &TestDns) -> TestMilter {
    TestMilter::start_toml(&format!(
        "authserv_id = \"mx.example.org\"\n[policy]\nreject = \"accept\"\nquarantine = \"accept\"\n[dns]\nnameservers = [\"{}\"]\ntimeout = \"1s\"\nattempts = 1\n",
        dns.addr()
    ))
}

async fn verify(dns: &TestDns, message: &[u8]) -> String {
    let milter = verifier(dns);
    let out: Outcome = drive::drive(milter.inet_addr(), &Envelope::inbound(), message).await;
    assert_eq!(out.status, Status::Continue, "{:?}", out.status);
    let fields = out.inserted("Authentication-Results");
    assert_eq!(fields.len(), 1);
    fields[0].replace("\n\t", " ")
}

#[tokio::test(flavor = "multi_thread")]
async fn rfc8463_appendix_a_both_signatures_pass() {
    let zone = zone_from_lines(
        &std::fs::read_to_string(testdata("dkim/rfc8463/rfc8463-appendix-a.dns.txt")).unwrap(),
    );
    let dns = TestDns::start(zone);
    let message = std::fs::read(testdata("dkim/rfc8463/rfc8463-appendix-a.eml")).unwrap();
    let ar = verify(&dns, &message).await;
    assert!(
        ar.contains(
            "dkim=pass header.d=football.example.com header.s=brisbane header.a=ed25519-sha256"
        ),
        "{ar}"
    );
    assert!(
        ar.contains("dkim=pass header.d=football.example.com header.s=test header.a=rsa-sha256"),
        "{ar}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn dkimpy_rfc6376_example_passes() {
    // dkimpy signs this example with the RFC 8032 §7.1 / RFC 8463 keys.
    let rsa = std::fs::read_to_string(testdata("dkim/dkimpy/test.txt")).unwrap();
    let dns = TestDns::start(
        Zone::new()
            .txt("test._domainkey.football.example.com", rsa.trim())
            .txt(
                "brisbane._domainkey.football.example.com",
                "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=",
            ),
    );
    let message = crlf(&std::fs::read(testdata("dkim/dkimpy/rfc6376.signed.msg")).unwrap());
    let ar = verify(&dns, &message).await;
    assert!(
        ar.contains("dkim=pass header.d=football.example.com header.s=brisbane"),
        "{ar}"
    );
    assert!(
        ar.contains("dkim=pass header.d=football.example.com header.s=test"),
        "{ar}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn mail_auth_real_world_message() {
    let (zone, message) = split_dns_and_message(
        &std::fs::read(testdata("real-world/mail-auth-dkim-002.txt")).unwrap(),
    );
    let dns = TestDns::start(zone);
    let ar = verify(&dns, &message).await;
    // A valid signature by example.com on mail from football.example.com:
    // DKIM passes, DMARC has no aligned identifier and no record.
    assert!(
        ar.contains("dkim=pass header.d=example.com header.s=newengland"),
        "{ar}"
    );
    assert!(
        ar.contains("dmarc=none (no DMARC record) header.from=football.example.com"),
        "{ar}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn arc_sealed_message_reports_the_chain() {
    let (zone, message) =
        split_dns_and_message(&std::fs::read(testdata("arc/mail-auth-arc-002.txt")).unwrap());
    let dns = TestDns::start(zone);
    let ar = verify(&dns, &message).await;
    assert!(ar.contains("arc=pass (sealer manchego.org)"), "{ar}");
    // The message's own ARC-Authentication-Results claim nothing for us.
    let tampered = String::from_utf8_lossy(&message).replacen("Subject:", "Subject: [changed]", 1);
    let ar = verify(&dns, tampered.as_bytes()).await;
    assert!(ar.contains("arc=fail"), "{ar}");
}

#[tokio::test(flavor = "multi_thread")]
async fn mail_signed_by_opendkim_verifies() {
    let dir = tempfile::tempdir().unwrap();
    for key in [
        DkimKey::rsa(dir.path(), "sender.example", "odrsa", 2048),
        DkimKey::ed25519(dir.path(), "sender.example", "oded"),
    ] {
        let opendkim = OpenDkim::sign(&key);
        let port = opendkim.port();
        let mut env = Envelope::inbound();
        env.client_addr = "127.0.0.1:40000".parse().unwrap();
        let raw = common::message(
            "Alice <alice@sender.example>",
            "from opendkim",
            "Signed by OpenDKIM.\r\n",
        );
        let signed = drive::drive(([127, 0, 0, 1], port).into(), &env, &raw).await;
        assert_eq!(
            signed.inserted("DKIM-Signature").len(),
            1,
            "opendkim did not sign: {}",
            opendkim.output()
        );
        let (name, value) = key.dns();
        let dns = TestDns::start(
            Zone::new()
                .txt(name.trim_end_matches('.'), &value)
                .txt("_dmarc.sender.example", "v=DMARC1; p=reject"),
        );
        let ar = verify(&dns, &signed.message).await;
        assert!(
            ar.contains("dkim=pass header.d=sender.example"),
            "{}: {ar}",
            key.algorithm
        );
        assert!(ar.contains("dmarc=pass"), "{ar}");
    }
}
