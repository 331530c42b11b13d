//! Independent verification: every signature rmilter makes is checked by
//! dkimpy (Debian's python3-dkim) with the DNS records given to it
//! offline. Covers RSA-2048 and Ed25519 on one message, every
//! canonicalization, and the body shapes verifiers have disagreed on.
//! Oversigning is proven by adding a field after signing.

mod common;

use common::dkimpy;
use common::drive::{self, Envelope};
use common::keys::TestKeys;
use common::milter::TestMilter;

async fn sign(milter: &TestMilter, raw: &[u8]) -> Vec<u8> {
    let out = drive::drive(milter.inet_addr(), &Envelope::authenticated("alice"), raw).await;
    assert_eq!(out.stage, "eom", "{:?}", out.status);
    assert!(!out.inserted("DKIM-Signature").is_empty(), "not signed");
    out.message
}

fn assert_all_pass(keys: &TestKeys, label: &str, message: &[u8], expected: usize) {
    let results = dkimpy::verify(message, &keys.dns());
    assert_eq!(results.len(), expected, "{label}: {results:?}");
    for r in &results {
        assert!(
            r.pass,
            "{label}: dkimpy rejects s={} a={}: {}\n{}",
            r.s,
            r.a,
            r.detail,
            String::from_utf8_lossy(message)
        );
    }
}

fn shapes() -> Vec<(&'static str, Vec<u8>)> {
    let head = "From: Alice <alice@example.com>\r\nTo: bob@example.org\r\nSubject: shapes\r\nDate: Sun, 22 Nov 2026 10:00:00 +0000\r\nMessage-ID: <shape@example.com>\r\n";
    let long_line = "x".repeat(2000);
    let big: String = (0..4000)
        .map(|i| format!("line {i:05} of a body spread over many milter chunks\r\n"))
        .collect();
    vec![
        ("plain", format!("{head}\r\nHello Bob.\r\n").into_bytes()),
        ("empty body", format!("{head}\r\n").into_bytes()),
        ("no final CRLF", format!("{head}\r\nno newline at end").into_bytes()),
        ("trailing blank lines", format!("{head}\r\nbody\r\n\r\n\r\n\r\n").into_bytes()),
        ("whitespace-only trailing lines", format!("{head}\r\nbody\r\n \r\n\t\r\n  \t \r\n").into_bytes()),
        ("whitespace inside lines", format!("{head}\r\n a  b \t c  \r\n\t\tindented\r\n").into_bytes()),
        ("long line", format!("{head}\r\n{long_line}\r\n").into_bytes()),
        ("200 KB over several chunks", format!("{head}\r\n{big}").into_bytes()),
        (
            "8-bit body",
            [
                format!("{head}MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nGr\u{fc}\u{df}e, \u{65e5}\u{672c}\r\n").into_bytes(),
                b"latin-1 bytes: \xe9\xe8\xff\r\n".to_vec(),
            ]
            .concat(),
        ),
        (
            "folded and repeated headers",
            b"From: \"Doe, Alice\"\r\n <alice@example.com>\r\nTo: a@example.org,\r\n\tb@example.org\r\nTo: c@example.org\r\nCc:\r\nSubject:  spaced   subject \r\nX-Empty:\r\n\r\nbody\r\n".to_vec(),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn dkimpy_verifies_every_shape_in_every_canonicalization() {
    let keys = TestKeys::example_com();
    for canon in [
        "relaxed/relaxed",
        "relaxed/simple",
        "simple/relaxed",
        "simple/simple",
    ] {
        let milter = TestMilter::start_toml(&format!(
            "[signing]\ncanonicalization = \"{canon}\"\n{}",
            keys.toml()
        ));
        for (label, raw) in shapes() {
            let signed = sign(&milter, &raw).await;
            // RSA-2048 and Ed25519, both on the one message.
            assert_all_pass(&keys, &format!("{canon}, {label}"), &signed, 2);
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn rsa_only_and_ed25519_only_keys() {
    for (alg, a) in [
        (rmilter::config::KeyAlgorithm::Rsa, "rsa-sha256"),
        (rmilter::config::KeyAlgorithm::Ed25519, "ed25519-sha256"),
    ] {
        let keys = TestKeys::new(&[("example.com", "only", alg)]);
        let milter = TestMilter::start_toml(&keys.toml());
        let signed = sign(
            &milter,
            &common::message("alice@example.com", "one key", "body\r\n"),
        )
        .await;
        let results = dkimpy::verify(&signed, &keys.dns());
        assert_eq!(results.len(), 1);
        assert!(results[0].pass, "{a}: {}", results[0].detail);
        assert_eq!(results[0].a, a);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn oversigned_fields_cannot_be_added_after_signing() {
    let keys = TestKeys::example_com();
    let milter = TestMilter::start_toml(&keys.toml());
    let opendkim = common::opendkim::OpenDkim::verify(&keys.dns());
    let opendkim_addr: std::net::SocketAddr = ([127, 0, 0, 1], opendkim.port()).into();
    let signed = sign(
        &milter,
        &common::message(
            "Alice <alice@example.com>",
            "original",
            "Pay invoice 1.\r\n",
        ),
    )
    .await;
    assert_all_pass(&keys, "as signed", &signed, 2);

    // An unsigned field added anywhere keeps the signatures valid: the
    // failures below come from oversigning, not from any change.
    let with_unsigned = [b"X-Scanner: clean\r\n".to_vec(), signed.clone()].concat();
    assert_all_pass(&keys, "unsigned field added", &with_unsigned, 2);

    for added in [
        "From: Mallory <ceo@example.com>\r\n",
        "Subject: urgent: pay invoice 2 instead\r\n",
        "Reply-To: mallory@attacker.example\r\n",
        "To: victim@example.org\r\n",
        "Cc: someone@example.org\r\n",
        "Content-Type: text/html\r\n",
    ] {
        // Added above the existing fields, where mail readers look first.
        let tampered = [added.as_bytes().to_vec(), signed.clone()].concat();
        let results = dkimpy::verify(&tampered, &keys.dns());
        // OpenDKIM agrees.
        let out = drive::drive(opendkim_addr, &Envelope::inbound(), &tampered).await;
        let verdicts =
            common::opendkim::dkim_results(&header_values(&out.message, "Authentication-Results"));
        assert_eq!(verdicts.len(), 2, "{added:?}");
        assert!(
            verdicts.iter().all(|v| v != "pass"),
            "OpenDKIM passes after adding {added:?}: {verdicts:?}"
        );
        assert_eq!(results.len(), 2);
        for r in &results {
            assert!(
                !r.pass,
                "signature {} still verifies after adding {added:?}",
                r.a
            );
        }
    }
}

/// The values of every `name` field of a CRLF message, unfolded.
fn header_values(message: &[u8], name: &str) -> Vec<String> {
    let (fields, _) = drive::split_message(message);
    fields
        .into_iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
        .map(|(_, v)| {
            String::from_utf8_lossy(&v)
                .replace(['\n', '\t'], " ")
                .trim()
                .to_string()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn opendkim_verifies_every_shape_in_every_canonicalization() {
    use common::opendkim::{OpenDkim, dkim_results};
    let keys = TestKeys::example_com();
    let opendkim = OpenDkim::verify(&keys.dns());
    let verifier: std::net::SocketAddr = ([127, 0, 0, 1], opendkim.port()).into();
    for canon in [
        "relaxed/relaxed",
        "relaxed/simple",
        "simple/relaxed",
        "simple/simple",
    ] {
        let milter = TestMilter::start_toml(&format!(
            "[signing]\ncanonicalization = \"{canon}\"\n{}",
            keys.toml()
        ));
        // SMTP ends every body with CRLF, so OpenDKIM (which gives no result
        // for a body without one) never sees that shape behind Postfix.
        for (label, raw) in shapes().into_iter().filter(|(l, _)| *l != "no final CRLF") {
            let signed = sign(&milter, &raw).await;
            let out = drive::drive(verifier, &Envelope::inbound(), &signed).await;
            let results = dkim_results(&header_values(&out.message, "Authentication-Results"));
            assert_eq!(
                results,
                ["pass", "pass"],
                "OpenDKIM on {canon}, {label}: {:?}\n{}",
                header_values(&out.message, "Authentication-Results"),
                opendkim.output()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn mail_signed_by_dkimpy_verifies_in_rmilter() {
    use common::dns::{TestDns, Zone};
    let data = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/keys");
    let rsa_record = std::fs::read_to_string(data.join("2048_testkey_wo_markers.pub.txt")).unwrap();
    let ed_record = std::fs::read_to_string(data.join("ed25519test.dns")).unwrap();
    let dns = TestDns::start(
        Zone::new()
            .txt("py._domainkey.sender.example", rsa_record.trim())
            .txt(
                "pyed._domainkey.sender.example",
                &format!("v=DKIM1; {}", ed_record.trim()),
            )
            .txt("_dmarc.sender.example", "v=DMARC1; p=reject"),
    );
    let milter = TestMilter::start_toml(&format!(
        "authserv_id = \"mx.example.org\"\n[dns]\nnameservers = [\"{}\"]\ntimeout = \"1s\"\nattempts = 1\n",
        dns.addr()
    ));
    let dir = tempfile::tempdir().unwrap();
    for (selector, key, algorithm) in [
        ("py", "2048_testkey.key", "rsa-sha256"),
        ("pyed", "ed25519test.key", "ed25519-sha256"),
    ] {
        for canon in ["relaxed/relaxed", "simple/simple"] {
            for (label, raw) in shapes() {
                let raw = String::from_utf8_lossy(&raw)
                    .replace("alice@example.com", "alice@sender.example");
                let path = dir.path().join("message.eml");
                std::fs::write(&path, raw.as_bytes()).unwrap();
                let out = std::process::Command::new(dkimpy::PYTHON)
                    .arg(
                        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                            .join("tests/tools/dkimsign.py"),
                    )
                    .args([
                        path.to_str().unwrap(),
                        selector,
                        "sender.example",
                        data.join(key).to_str().unwrap(),
                        algorithm,
                        canon,
                    ])
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "dkimpy: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                let verdict =
                    drive::drive(milter.inet_addr(), &Envelope::inbound(), &out.stdout).await;
                let ar = verdict.inserted("Authentication-Results")[0].replace("\n\t", " ");
                assert!(
                    ar.contains(&format!(
                        "dkim=pass header.d=sender.example header.s={selector}"
                    )) && ar.contains("dmarc=pass"),
                    "{algorithm} {canon} {label}: {ar}"
                );
            }
        }
    }
}
