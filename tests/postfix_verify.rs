//! Inbound verification through a real Postfix: forged
//! Authentication-Results removal with 1, 2, 3 and 5 forged fields
//! interleaved with foreign ones (the CVE-2022-48521 regression), a DMARC
//! p=reject forgery refused with 550 at the SMTP client, a p=quarantine
//! failure held in Postfix's hold queue, and a DNS timeout answered 451.

mod common;

use common::dns::{Fault, RType, TestDns, Zone};
use common::keys::TestKeys;
use common::milter::TestMilter;
use common::postfix::{Postfix, PostfixConfig};
use common::sign::{SignOptions, sign};
use common::smtp::{Client, Submission};
use rmilter::config::KeyAlgorithm;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);
const OUTSIDE: &str = "198.51.100.7";

struct Setup {
    keys: TestKeys,
    dns: TestDns,
    _milter: TestMilter,
    pf: Postfix,
}

fn setup() -> Setup {
    setup_with("mx.example.org")
}

fn setup_with(authserv_id: &str) -> Setup {
    let keys = TestKeys::new(&[("sender.example", "ed", KeyAlgorithm::Ed25519)]);
    let mut zone = Zone::new()
        .a("sender.example", OUTSIDE.parse().unwrap())
        .txt("sender.example", "v=spf1 ip4:198.51.100.7 -all")
        .txt("_dmarc.sender.example", "v=DMARC1; p=reject")
        .txt("quarantine.example", "v=spf1 -all")
        .txt("_dmarc.quarantine.example", "v=DMARC1; p=quarantine");
    for (name, value) in keys.dns() {
        zone = zone.txt(&name, &value);
    }
    let dns = TestDns::start(zone);
    let milter = TestMilter::start_toml(&format!(
        "authserv_id = \"{authserv_id}\"\n[outbound]\nnetworks = []\n[dns]\nnameservers = [\"{}\"]\ntimeout = \"1s\"\nattempts = 1\n",
        dns.addr()
    ));
    let pf = Postfix::start(PostfixConfig {
        extra_main_cf: vec![("relay_domains".into(), "example.org".into())],
        ..PostfixConfig::with_milters(&milter.postfix_spec())
    });
    Setup {
        keys,
        dns,
        _milter: milter,
        pf,
    }
}

fn from_outside(addr: &str, mail_from: &str, data: &[u8]) -> Submission {
    Submission::new(
        Client::external(addr, "mail.sender.example"),
        mail_from,
        &["bob@example.org"],
        data,
    )
}

#[test]
fn forged_results_never_survive_postfix() {
    let s = setup();
    let body = common::message("Alice <alice@sender.example>", "ar", "Hello.\r\n");
    let ours = [
        "Authentication-Results: mx.example.org; dkim=pass header.d=sender.example\r\n",
        "Authentication-Results: MX.Example.Org 1; dmarc=pass\r\n",
        "Authentication-Results: mx.example.org (forged); spf=pass\r\n",
        "Authentication-Results:\r\n\tmx.example.org;\r\n\tdmarc=pass header.from=sender.example\r\n",
        "Authentication-Results: (c) mx.example.org; arc=pass\r\n",
    ];
    let foreign =
        "Authentication-Results: upstream.example; spf=pass smtp.mailfrom=sender.example\r\n";
    for n in [1usize, 2, 3, 5] {
        // forged, foreign, forged, foreign, ...
        let mut head = String::new();
        for forged in &ours[..n] {
            head.push_str(forged);
            head.push_str(foreign);
        }
        let raw = sign(
            &s.keys.keys[0],
            &[head.as_bytes(), &body[..]].concat(),
            &SignOptions::default(),
        );
        let out =
            s.pf.submit(&from_outside(OUTSIDE, "alice@sender.example", &raw));
        assert!(out.accepted(), "{n} forged: {out:?}\n{}", s.pf.diag());
        let delivered = s.pf.sink().wait_for(1, WAIT);
        assert_eq!(delivered.len(), 1, "{}", s.pf.diag());
        let fields = delivered[0].header_values("Authentication-Results");
        let ours_now: Vec<&String> = fields
            .iter()
            .filter(|f| {
                f.trim_start()
                    .to_ascii_lowercase()
                    .starts_with("mx.example.org")
                    || f.contains("mx.example.org;")
            })
            .collect();
        assert_eq!(ours_now.len(), 1, "{n} forged: {fields:#?}");
        assert!(ours_now[0].contains("dmarc=pass"), "{ours_now:?}");
        assert_eq!(
            fields
                .iter()
                .filter(|f| f.contains("upstream.example"))
                .count(),
            n,
            "foreign fields kept"
        );
        // Ours is the first field of the message, above Postfix's Received.
        let first = delivered[0]
            .header_text()
            .lines()
            .next()
            .unwrap_or_default()
            .to_string();
        assert!(
            first.starts_with("Authentication-Results: mx.example.org;"),
            "{first}"
        );
        s.pf.sink().clear();
    }
}

/// Look-alikes of the authserv-id that other readers (Sieve, MDAs,
/// Python/Perl/JS parsers) take for ours never reach the mailbox.
#[test]
fn look_alike_results_never_survive_postfix() {
    let s = setup_with("mx.desk.example");
    let body = common::message("Alice <alice@sender.example>", "ar", "Hello.\r\n");
    let forms: [&[u8]; 11] = [
        b"mx.desk.example\x0b; dmarc=pass",
        b"mx.desk.example\xc2\xa0; dmarc=pass",
        b"mx.desk.example.; dmarc=pass",
        b"mx.desk.example,x; dmarc=pass",
        b"mx.desk.example/x; dmarc=pass",
        b"mx.desk.example:x; dmarc=pass",
        b"mx.desk.example=x; dmarc=pass",
        "mx.de\u{17f}k.example; dmarc=pass".as_bytes(),
        "mx.des\u{212a}.example; dmarc=pass".as_bytes(),
        b"\"mx.desk.example\"; dmarc=pass",
        b"Mx.Desk.Example; dmarc=pass",
    ];
    let mut head = Vec::new();
    for form in forms {
        head.extend_from_slice(b"Authentication-Results: ");
        head.extend_from_slice(form);
        head.extend_from_slice(b"\r\nAuthentication-Results: upstream.example; spf=pass\r\n");
    }
    let raw = sign(
        &s.keys.keys[0],
        &[&head[..], &body[..]].concat(),
        &SignOptions::default(),
    );
    let out =
        s.pf.submit(&from_outside(OUTSIDE, "alice@sender.example", &raw));
    assert!(out.accepted(), "{out:?}\n{}", s.pf.diag());
    let delivered = s.pf.sink().wait_for(1, WAIT);
    assert_eq!(delivered.len(), 1, "{}", s.pf.diag());
    let fields = delivered[0].header_values("Authentication-Results");
    // Ours (DMARC passes: the signature covers no A-R) and the foreign ones.
    assert_eq!(fields.len(), 1 + forms.len(), "{fields:#?}");
    assert!(
        fields[0].starts_with("mx.desk.example;") && fields[0].contains("dmarc=pass"),
        "{fields:#?}"
    );
    assert!(
        fields[1..]
            .iter()
            .all(|f| f == "upstream.example; spf=pass"),
        "{fields:#?}"
    );
}

#[test]
fn dmarc_reject_forgery_gets_550_at_the_client() {
    let s = setup();
    let raw = common::message("CEO <ceo@sender.example>", "urgent", "Pay now.\r\n");
    let out =
        s.pf.submit(&from_outside("203.0.113.66", "ceo@sender.example", &raw));
    assert_eq!(
        (out.stage, out.code),
        ("eom", 550),
        "{out:?}\n{}",
        s.pf.diag()
    );
    assert!(
        out.text.starts_with("5.7.1 ") && out.text.contains("sender.example"),
        "{out:?}"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(s.pf.sink().messages().is_empty());
}

#[test]
fn dmarc_quarantine_goes_to_the_hold_queue() {
    let s = setup();
    let raw = common::message("news@quarantine.example", "offer", "Cheap.\r\n");
    let out = s.pf.submit(&from_outside(
        "203.0.113.66",
        "news@quarantine.example",
        &raw,
    ));
    assert!(out.accepted(), "{out:?}\n{}", s.pf.diag());
    let queue =
        s.pf.wait_queue(WAIT, |q| q.iter().any(|e| e.queue_name == "hold"));
    assert!(
        queue.iter().any(|e| e.queue_name == "hold"),
        "{queue:?}\n{}",
        s.pf.diag()
    );
    s.pf.flush();
    std::thread::sleep(Duration::from_secs(1));
    assert!(s.pf.sink().messages().is_empty(), "held mail was delivered");
}

#[test]
fn dns_timeout_gives_451() {
    let s = setup();
    s.dns
        .set_fault("_dmarc.sender.example", Some(RType::TXT), Fault::Timeout);
    let raw = common::message("ceo@sender.example", "dns down", "x\r\n");
    let out =
        s.pf.submit(&from_outside("203.0.113.66", "ceo@sender.example", &raw));
    assert_eq!(
        (out.stage, out.code),
        ("eom", 451),
        "{out:?}\n{}",
        s.pf.diag()
    );
    assert!(out.text.starts_with("4.4.3 "), "{out:?}");
}

#[test]
fn slow_dns_is_answered_before_postfix_gives_up() {
    // Every DNS answer comes 25 s late (RELIABILITY §8 case 23); rmilter's
    // time budget answers the SMTP client itself, well inside Postfix's
    // milter timeout, which therefore never fires.
    let dns = TestDns::start(Zone::new().txt("_dmarc.sender.example", "v=DMARC1; p=reject"));
    dns.set_fault("", None, Fault::Delay(Duration::from_secs(25)));
    let milter = TestMilter::start_toml(&format!(
        "authserv_id = \"mx.example.org\"\n[verify]\ntime_budget = \"3s\"\nspf_time_limit = \"3s\"\n[dns]\nnameservers = [\"{}\"]\ntimeout = \"5s\"\n",
        dns.addr()
    ));
    let pf = Postfix::start(PostfixConfig {
        extra_main_cf: vec![
            ("relay_domains".into(), "example.org".into()),
            ("milter_content_timeout".into(), "20s".into()),
            ("milter_command_timeout".into(), "20s".into()),
        ],
        ..PostfixConfig::with_milters(&milter.postfix_spec())
    });
    let started = std::time::Instant::now();
    let raw = common::message("ceo@sender.example", "slow dns", "x\r\n");
    let out = pf.submit(&from_outside("203.0.113.66", "ceo@sender.example", &raw));
    let took = started.elapsed();
    assert_eq!(
        (out.stage, out.code),
        ("eom", 451),
        "{out:?}\n{}",
        pf.diag()
    );
    assert!(out.text.starts_with("4.4.3 "), "{out:?}");
    assert!(took < Duration::from_secs(15), "answered after {took:?}");
    let log = pf.log();
    assert!(log.contains("milter-reject"), "{log}");
    assert!(
        !log.contains("timed out") && !log.contains("timeout"),
        "Postfix saw a milter timeout:\n{log}"
    );
}
