//! The Prometheus endpoint of the `rmilter run` process: mail of each kind
//! through the milter (DMARC pass, reject, quarantine, a refused From,
//! signed outbound mail), a good and a bad SIGHUP reload, then a scrape
//! whose counters must say exactly that; signature counters keep counting
//! across the reload, the report store's written records are counted, and
//! /health answers.

mod common;

use common::daemon::{Daemon, free_port};
use common::dns::{TestDns, Zone};
use common::drive::{self, Envelope};
use common::keys::TestKeys;
use common::sign::{SignOptions, sign};
use rmilter::config::KeyAlgorithm;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

fn get(port: u16, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out[9..12].parse().unwrap();
    let body = out.split_once("\r\n\r\n").unwrap().1.to_string();
    (status, body)
}

/// The value of the sample `name{labels}` (exact match of the part
/// before the value).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.rsplit_once(' ').filter(|(s, _)| *s == series))
        .and_then(|(_, v)| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread")]
async fn counters_after_mail_and_reloads() {
    let ours = TestKeys::new(&[
        ("example.com", "rsa", KeyAlgorithm::Rsa),
        ("example.com", "ed", KeyAlgorithm::Ed25519),
    ]);
    let theirs = TestKeys::new(&[("sender.example", "s1", KeyAlgorithm::Rsa)]);
    let mut zone = Zone::new()
        .txt("sender.example", "v=spf1 ip4:192.0.2.2 -all")
        .txt("_dmarc.sender.example", "v=DMARC1; p=reject")
        .txt("quarantine.example", "v=spf1 a -all")
        .txt("_dmarc.quarantine.example", "v=DMARC1; p=quarantine");
    for (name, value) in theirs.dns().into_iter().chain(ours.dns()) {
        zone = zone.txt(&name, &value);
    }
    let dns = TestDns::start(zone);
    let dir = tempfile::tempdir().unwrap();
    let (milter_port, metrics_port) = (free_port(), free_port());
    let config = dir.path().join("rmilter.toml");
    let text = format!(
        "listen = \"inet:127.0.0.1:{milter_port}\"\nauthserv_id = \"mx.example.org\"\n{}\
         [dns]\nnameservers = [\"{}\"]\ntimeout = \"1s\"\nattempts = 1\n\
         [report]\nenabled = true\nstore = \"{}\"\nreporting_domain = \"example.com\"\n\
         [metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n",
        ours.toml(),
        dns.addr(),
        dir.path().join("reports.db").display()
    );
    std::fs::write(&config, &text).unwrap();
    let mut daemon = Daemon::start(&["-c", config.to_str().unwrap()]);
    daemon.wait_log("rmilter ready", 1);
    let ready = daemon
        .lines()
        .into_iter()
        .find(|l| l.contains("rmilter ready"))
        .unwrap();
    assert!(
        ready.contains(&format!("metrics=127.0.0.1:{metrics_port}"))
            && ready.contains("resolver=\"up\""),
        "{ready}"
    );
    let addr = ([127, 0, 0, 1], milter_port).into();

    // Inbound: DMARC pass (aligned DKIM and SPF).
    let raw = common::message("Sam <sam@sender.example>", "hello", "Hi.\r\n");
    let signed = sign(&theirs.keys[0], &raw, &SignOptions::default());
    let mut env = Envelope::inbound();
    env.client_addr = "192.0.2.2:40000".parse().unwrap();
    env.mail_from = "<sam@sender.example>".into();
    let out = drive::drive(addr, &env, &signed).await;
    assert_eq!(out.status, indymilter_test::Status::Continue);
    // Inbound: DMARC fail under p=reject.
    let mut env = Envelope::inbound();
    env.client_addr = "198.51.100.9:40000".parse().unwrap();
    env.mail_from = "<ceo@sender.example>".into();
    let out = drive::drive(
        addr,
        &env,
        &common::message("CEO <ceo@sender.example>", "pay", "Now.\r\n"),
    )
    .await;
    assert!(matches!(out.status, indymilter_test::Status::Reject { .. }));
    // Inbound: two From fields, refused at end of headers.
    let two = b"From: a@sender.example\r\nFrom: b@attack.example\r\nSubject: x\r\n\r\nx\r\n";
    let out = drive::drive(addr, &env, two).await;
    // Decided at end of headers, answered at end of message (no reply
    // at end of headers), with no edit.
    assert_eq!((out.stage, out.actions.len()), ("eom", 0));
    // Inbound: DMARC fail under p=quarantine.
    env.mail_from = "<q@quarantine.example>".into();
    let out = drive::drive(
        addr,
        &env,
        &common::message("Q <q@quarantine.example>", "q", "Q.\r\n"),
    )
    .await;
    assert!(
        out.actions
            .iter()
            .any(|a| matches!(a, indymilter_test::EomAction::Quarantine { .. }))
    );
    // Outbound: signed with both keys.
    let outbound = common::message("Alice <alice@example.com>", "out", "Bye.\r\n");
    let out = drive::drive(addr, &Envelope::authenticated("alice"), &outbound).await;
    assert_eq!(out.inserted("DKIM-Signature").len(), 2);

    // A good reload, one more signed message, then a bad reload.
    daemon.signal("HUP");
    daemon.wait_log("configuration reloaded", 1);
    let out = drive::drive(addr, &Envelope::authenticated("alice"), &outbound).await;
    assert_eq!(out.inserted("DKIM-Signature").len(), 2);
    std::fs::write(&config, "listen = [").unwrap();
    daemon.signal("HUP");
    daemon.wait_log("reload refused", 1);

    // The report writer stores asynchronously: wait for it.
    let deadline = Instant::now() + Duration::from_secs(20);
    let metrics = loop {
        let (status, body) = get(metrics_port, "/metrics");
        assert_eq!(status, 200);
        if sample(&body, "rmilter_report_records_total{state=\"written\"}") == Some(3.0)
            || Instant::now() > deadline
        {
            break body;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    for (series, want) in [
        (
            "rmilter_messages_total{direction=\"inbound\",outcome=\"accept\"}",
            1.0,
        ),
        (
            "rmilter_messages_total{direction=\"inbound\",outcome=\"reject\"}",
            2.0,
        ),
        (
            "rmilter_messages_total{direction=\"inbound\",outcome=\"quarantine\"}",
            1.0,
        ),
        (
            "rmilter_messages_total{direction=\"inbound\",outcome=\"tempfail\"}",
            0.0,
        ),
        (
            "rmilter_messages_total{direction=\"outbound\",outcome=\"accept\"}",
            2.0,
        ),
        ("rmilter_signed_messages_total", 2.0),
        (
            "rmilter_signatures_total{domain=\"example.com\",selector=\"rsa\",algorithm=\"rsa-sha256\"}",
            2.0,
        ),
        (
            "rmilter_signatures_total{domain=\"example.com\",selector=\"ed\",algorithm=\"ed25519-sha256\"}",
            2.0,
        ),
        (
            "rmilter_actions_total{action=\"reject\",reason=\"dmarc\"}",
            1.0,
        ),
        (
            "rmilter_actions_total{action=\"reject\",reason=\"bad_from\"}",
            1.0,
        ),
        (
            "rmilter_actions_total{action=\"quarantine\",reason=\"dmarc\"}",
            1.0,
        ),
        (
            "rmilter_actions_total{action=\"tempfail\",reason=\"dmarc\"}",
            0.0,
        ),
        ("rmilter_dkim_results_total{result=\"pass\"}", 1.0),
        ("rmilter_dkim_results_total{result=\"none\"}", 2.0),
        (
            "rmilter_spf_results_total{identity=\"mailfrom\",result=\"pass\"}",
            1.0,
        ),
        (
            "rmilter_spf_results_total{identity=\"mailfrom\",result=\"fail\"}",
            2.0,
        ),
        ("rmilter_dmarc_results_total{result=\"pass\"}", 1.0),
        ("rmilter_dmarc_results_total{result=\"fail\"}", 2.0),
        ("rmilter_arc_results_total{result=\"none\"}", 3.0),
        ("rmilter_verification_seconds_count", 3.0),
        ("rmilter_dns_resolver_up", 1.0),
        ("rmilter_dns_timeouts_total", 0.0),
        ("rmilter_config_reloads_total{result=\"ok\"}", 1.0),
        ("rmilter_config_reloads_total{result=\"failed\"}", 1.0),
        ("rmilter_report_records_total{state=\"received\"}", 3.0),
        ("rmilter_report_records_total{state=\"written\"}", 3.0),
        ("rmilter_report_records_total{state=\"dropped\"}", 0.0),
        ("rmilter_messages_in_flight", 0.0),
        // quarantine.example's `a` term; ip4 terms need no lookup.
        ("rmilter_spf_dns_lookups_total", 1.0),
    ] {
        assert_eq!(sample(&metrics, series), Some(want), "{series}\n{metrics}");
    }
    let (status, body) = get(metrics_port, "/health");
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    assert_eq!(get(metrics_port, "/nope").0, 404);

    daemon.signal("TERM");
    assert!(daemon.wait_exit().success());
}
