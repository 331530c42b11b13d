//! `rmilter keys check` verdicts, each from a zone with that problem,
//! served by the loopback DNS server and looked up through rmilter's own
//! resolver (built from `[dns]`, as the command does).

mod common;

use common::dns::{Fault, RType, TestDns, Zone};
use common::keys::TestKeys;
use rmilter::config::{DnsSettings, KeyAlgorithm};
use rmilter::keys::check::{Checker, Verdict};
use std::process::Command;
use std::time::Duration;

const NAME: &str = "sel._domainkey.example.com";

/// The verdict for `key` (selector "sel") with `zone` published.
async fn verdict(dns: &TestDns, zone: Zone, algorithm: KeyAlgorithm, public_key: &[u8]) -> Verdict {
    dns.set_zone(zone);
    let checker = Checker::new(&DnsSettings {
        nameservers: vec![dns.addr()],
        timeout: Duration::from_millis(500),
        attempts: 1,
        cache_size: 0,
    })
    .unwrap();
    checker
        .check("example.com", "sel", algorithm, public_key)
        .await
}

#[tokio::test]
async fn each_verdict_from_a_zone_with_that_problem() {
    let keys = TestKeys::new(&[
        ("example.com", "sel", KeyAlgorithm::Ed25519),
        ("example.com", "rsa", KeyAlgorithm::Rsa),
        ("example.com", "other", KeyAlgorithm::Ed25519),
    ]);
    let load = |i: usize| {
        let k = &keys.keys[i];
        rmilter::keys::LoadedKey::load(&rmilter::config::KeySpec {
            domain: k.domain.clone(),
            selector: k.selector.clone(),
            path: k.path.clone(),
            algorithm: None,
            origin: "test".into(),
            ..Default::default()
        })
        .unwrap()
    };
    let (ed, rsa, other) = (load(0), load(1), load(2));
    let dns = TestDns::start(Zone::new());
    let ed_check = |zone: Zone| verdict(&dns, zone, KeyAlgorithm::Ed25519, &ed.public_key);

    assert_eq!(
        ed_check(Zone::new().txt(NAME, &ed.txt_value())).await,
        Verdict::Ok
    );
    // NXDOMAIN, and NODATA (the name exists with another type).
    assert_eq!(ed_check(Zone::new()).await, Verdict::Missing);
    assert_eq!(
        ed_check(Zone::new().a(NAME, "192.0.2.1".parse().unwrap())).await,
        Verdict::Missing
    );
    assert_eq!(
        ed_check(Zone::new().txt(NAME, &other.txt_value())).await,
        Verdict::Mismatch("the record publishes a different key".into())
    );
    // An Ed25519 key published under an RSA record (RELIABILITY O4).
    let p = ed.txt_value().split("p=").nth(1).unwrap().to_string();
    assert_eq!(
        ed_check(Zone::new().txt(NAME, &format!("v=DKIM1; k=rsa; p={p}"))).await,
        Verdict::Mismatch("the record is for k=rsa but this key is ed25519".into())
    );
    assert_eq!(
        ed_check(Zone::new().txt(NAME, &format!("{}; t=y", ed.txt_value()))).await,
        Verdict::Testing
    );
    assert_eq!(
        ed_check(
            Zone::new()
                .txt(NAME, &ed.txt_value())
                .txt(NAME, &other.txt_value())
        )
        .await,
        Verdict::Several(2, "record 1 of 2 publishes this key".into())
    );
    assert_eq!(
        ed_check(Zone::new().txt(NAME, "v=DKIM1; k=ed25519")).await,
        Verdict::Syntax("no p= tag (the public key)".into())
    );
    assert_eq!(
        ed_check(Zone::new().txt(NAME, "v=spf1 -all")).await,
        Verdict::Syntax("v=spf1 -all is not DKIM1".into())
    );
    assert_eq!(
        ed_check(Zone::new().txt(NAME, "google-site-verification")).await,
        Verdict::Syntax("\"google-site-verification\" is not a tag=value pair".into())
    );
    assert_eq!(
        ed_check(Zone::new().txt(NAME, "v=DKIM1; k=ed25519; p=")).await,
        Verdict::Revoked
    );
    // A CNAME to the record (a delegated selector) is followed.
    assert_eq!(
        ed_check(
            Zone::new()
                .cname(NAME, "sel.keys.example.net")
                .txt("sel.keys.example.net", &ed.txt_value())
        )
        .await,
        Verdict::Ok
    );
    dns.set_fault(NAME, Some(RType::TXT), Fault::ServFail);
    assert!(matches!(
        ed_check(Zone::new().txt(NAME, &ed.txt_value())).await,
        Verdict::DnsError(_)
    ));
    dns.clear_faults();
    dns.set_fault(NAME, Some(RType::TXT), Fault::Timeout);
    assert!(matches!(
        ed_check(Zone::new().txt(NAME, &ed.txt_value())).await,
        Verdict::DnsError(_)
    ));
    dns.clear_faults();

    // RSA: a record split into 255-byte strings is joined; a 1024-bit key
    // is too short; a record cut at its first string is a syntax error.
    let rsa_check = |zone: Zone| verdict(&dns, zone, KeyAlgorithm::Rsa, &rsa.public_key);
    let value = rsa.txt_value();
    assert!(value.len() > 255);
    assert_eq!(rsa_check(Zone::new().txt(NAME, &value)).await, Verdict::Ok);
    assert!(matches!(
        rsa_check(Zone::new().txt(NAME, &value[..255])).await,
        Verdict::Syntax(_)
    ));
    let short = "v=DKIM1; k=rsa; p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDkHlOQoBTzWRiGs5V6NpP3idY6Wk08a5qhdR6wy5bdOKb2jLQiY/J16JYi0Qvx/byYzCNb3W91y3FutACDfzwQ/BC/e/8uBsCR+yz1Lxj+PL6lHvqMKrM3rG4hstT5QjvHO9PzoxZyVYLzBfO2EeC3Ip3G+2kryOTIKT+l/K4w3QIDAQAB";
    assert_eq!(
        rsa_check(Zone::new().txt(NAME, short)).await,
        Verdict::TooShort(1024)
    );
}

#[test]
fn check_reports_static_keys_with_a_nonzero_exit_and_json() {
    let keys = TestKeys::example_com();
    let dns = TestDns::start(Zone::new());
    let config = keys.dir.path().join("rmilter.toml");
    std::fs::write(
        &config,
        format!(
            "{}[dns]\nnameservers = [\"{}\"]\ntimeout = \"1s\"\nattempts = 1\n",
            keys.toml(),
            dns.addr()
        ),
    )
    .unwrap();
    let check = |json: bool| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rmilter"));
        cmd.args(["keys", "check", "-c"]).arg(&config);
        if json {
            cmd.arg("--json");
        }
        cmd.output().unwrap()
    };
    // Only the RSA record is published, with t=y.
    let (rsa_name, rsa_value) = keys.dns()[0].clone();
    dns.set_zone(Zone::new().txt(&rsa_name, &format!("{rsa_value}; t=y")));
    let out = check(false);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("FAIL example.com rsa (static, rsa): testing: rsa._domainkey.example.com publishes this key with t=y"),
        "{text}"
    );
    assert!(
        text.contains("FAIL example.com ed (static, ed25519): missing"),
        "{text}"
    );
    let json: serde_json::Value = serde_json::from_slice(&check(true).stdout).unwrap();
    assert_eq!(json["ok"], false);
    assert_eq!(json["problems"], 2);
    assert_eq!(json["keys"][0]["selector"], "ed");
    assert_eq!(json["keys"][0]["dns"]["verdict"], "missing");
    assert_eq!(json["keys"][1]["dns"]["verdict"], "testing");
    // Both published correctly: exit 0.
    let mut zone = Zone::new();
    for (name, value) in keys.dns() {
        zone = zone.txt(&name, &value);
    }
    dns.set_zone(zone);
    let out = check(false);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// A `%` key: `keys dns`, `check` and `status` give it a row per domain it
/// is known to sign for (its `domains`, and the exact domains of the rules
/// naming it) and a note for the rules whose domains cannot be listed.
#[test]
fn sender_domain_keys_are_checked_at_each_known_domain() {
    let keys = TestKeys::new(&[("any.example", "mail", KeyAlgorithm::Ed25519)]);
    let dns = TestDns::start(Zone::new());
    let config = keys.dir.path().join("rmilter.toml");
    std::fs::write(
        &config,
        format!(
            "[[key]]\nname = \"shared\"\ndomain = \"%\"\nselector = \"mail\"\nfile = \"{}\"\n\
             domains = [\"a.example\"]\n\n\
             [[signing.rule]]\nsender = \"*@b.example\"\nkeys = [\"shared\"]\n\n\
             [[signing.rule]]\nsender = \"*\"\nkeys = [\"shared\"]\n\n\
             [[key]]\ndomain = \"idle.example\"\nselector = \"mail\"\nfile = \"{}\"\n\n\
             [dns]\nnameservers = [\"{}\"]\ntimeout = \"1s\"\nattempts = 1\n",
            keys.keys[0].path.display(),
            keys.keys[0].path.display(),
            dns.addr()
        ),
    )
    .unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_rmilter"))
            .args(args)
            .arg("-c")
            .arg(&config)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let txt = keys.keys[0].txt.clone();
    let note = "key shared (domain \"%\", selector mail) signs for the senders of signing.rule[1] \"*\": each such domain must publish mail._domainkey.DOMAIN; list them in its domains = [...] to have them checked (known: a.example, b.example)";

    let (code, text) = run(&["keys", "dns"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("mail._domainkey.a.example"), "{text}");
    assert!(text.contains("mail._domainkey.b.example"), "{text}");
    assert!(text.contains(&format!("; {note}")), "{text}");

    // b.example has not published the record yet.
    dns.set_zone(Zone::new().txt("mail._domainkey.a.example", &txt));
    let (code, text) = run(&["keys", "check"]);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("ok   a.example mail (static, ed25519): ok"),
        "{text}"
    );
    assert!(
        text.contains("FAIL b.example mail (static, ed25519): missing"),
        "{text}"
    );
    assert!(text.contains(&format!("note {note}")), "{text}");

    dns.set_zone(
        Zone::new()
            .txt("mail._domainkey.a.example", &txt)
            .txt("mail._domainkey.b.example", &txt),
    );
    let (code, text) = run(&["keys", "check", "--domain", "b.example"]);
    assert_eq!(code, Some(0), "{text}");
    let (code, text) = run(&["keys", "status"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("a.example") && l.ends_with("ok")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("b.example") && l.ends_with("ok")),
        "{text}"
    );
    assert!(text.contains(&format!("! {note}")), "{text}");
    assert!(
        text.contains("! key[1] (idle.example s=mail) never signs: no [[signing.rule]] names it"),
        "{text}"
    );
}
