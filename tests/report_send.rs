//! DMARC aggregate reports end to end (RELIABILITY §8 G cases 31, 32; X2–X5,
//! X8, X9): mail verified by rmilter inside a real Postfix is counted in the
//! store, `rmilter report send` hands the report to Postfix's sendmail, the
//! report arrives at the sink schema-valid with the right counts and
//! DKIM-signed by rmilter (dkimpy checks); a send killed after generation,
//! after the claim and after the MTA accepted is re-run to the same bytes;
//! concurrent runs and two hosts on one PostgreSQL store send one report per
//! destination; unauthorised destinations never get mail, a DNS temperror
//! postpones, `!size` and our own address are honoured.

mod common;

use common::dkimpy;
use common::dns::{Fault, RType, TestDns, Zone};
use common::drive::{self, Envelope};
use common::keys::TestKeys;
use common::milter::{TestMilter, runtime_from_toml};
use common::pg::TestPg;
use common::postfix::{Postfix, PostfixConfig};
use common::report::*;
use common::sign::{SignOptions, sign};
use common::smtp::{Client, Submission};
use rmilter::config::{KeyAlgorithm, Overrides, Source};
use rmilter::report::sink::{StoreSink, aggregate};
use rmilter::report::store::Store;
use rmilter::report::{period_of, unix_time, xml};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant, SystemTime};

const WAIT: Duration = Duration::from_secs(30);
const OUTSIDE: &str = "198.51.100.7";

/// rmilter's configuration as TOML: DNS, our signing keys, the report section.
fn config_text(
    dns: &TestDns,
    ours: &TestKeys,
    store: &str,
    sendmail: &[String],
    extra: &str,
) -> String {
    let sendmail = sendmail
        .iter()
        .map(|a| format!("\"{a}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "authserv_id = \"mx.example.org\"\n[outbound]\nnetworks = []\n[dns]\nnameservers = [\"{}\"]\ntimeout = \"1s\"\nattempts = 1\n[report]\nenabled = true\nstore = \"{store}\"\norg_name = \"Example Org\"\nemail = \"dmarc-reports@example.org\"\nreporting_domain = \"example.org\"\nsendmail = [{sendmail}]\ndestination_interval = \"0s\"\nlease = \"60s\"\n{extra}\n{}",
        dns.addr(),
        ours.toml()
    )
}

fn write_config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("rmilter.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn report_send(config: &Path, now: i64, kill_at: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rmilter"));
    cmd.args(["report", "send", "-c"])
        .arg(config)
        .args(["--now", &now.to_string()]);
    if let Some(step) = kill_at {
        cmd.env("RMILTER_CRASH_AT", format!("report:{step}"));
    }
    cmd.output().unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn killed(out: &Output) -> bool {
    use std::os::unix::process::ExitStatusExt;
    out.status.signal() == Some(9)
}

fn reports_in(pf: &Postfix) -> Vec<common::sink::Delivered> {
    pf.sink()
        .messages()
        .into_iter()
        .filter(|m| {
            m.header_values("Subject")
                .iter()
                .any(|s| s.starts_with("Report Domain:"))
        })
        .collect()
}

fn wait_reports(pf: &Postfix, n: usize) -> Vec<common::sink::Delivered> {
    let deadline = Instant::now() + WAIT;
    loop {
        let got = reports_in(pf);
        if got.len() >= n || Instant::now() >= deadline {
            return got;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn zone(senders: &TestKeys, ours: &TestKeys) -> Zone {
    let mut zone = Zone::new()
        .a("sender.example", OUTSIDE.parse().unwrap())
        .txt("sender.example", "v=spf1 ip4:198.51.100.7 -all")
        .txt(
            "_dmarc.sender.example",
            "v=DMARC1; p=reject; rua=mailto:dmarc@sender.example",
        );
    for (name, value) in senders.dns().into_iter().chain(ours.dns()) {
        zone = zone.txt(&name, &value);
    }
    zone
}

fn postfix_with(milter: &TestMilter) -> Postfix {
    Postfix::start(PostfixConfig {
        extra_main_cf: vec![("relay_domains".into(), "example.org".into())],
        ..PostfixConfig::with_milters(&milter.postfix_spec())
    })
}

fn sendmail_for(pf: &Postfix) -> Vec<String> {
    vec![
        "/usr/sbin/sendmail".to_string(),
        "-C".to_string(),
        pf.config_dir().display().to_string(),
    ]
}

/// The report mails' (filename, gzip, Subject, Message-ID).
fn report_parts(m: &common::sink::Delivered) -> (String, Vec<u8>, String, String) {
    let (name, gz) = attachment(&m.data);
    (
        name,
        gz,
        m.header_values("Subject").join(" "),
        m.header_values("Message-ID").join(" "),
    )
}

#[test]
fn mail_through_postfix_is_reported_and_the_report_is_dkim_signed() {
    let dir = tempfile::tempdir().unwrap();
    let senders = TestKeys::new(&[("sender.example", "ed", KeyAlgorithm::Ed25519)]);
    let ours = TestKeys::new(&[("example.org", "rep", KeyAlgorithm::Rsa)]);
    let dns = TestDns::start(zone(&senders, &ours));
    let store = dir.path().join("reports.db").display().to_string();
    // The milter runs in this process with the store writer attached.
    let toml = config_text(&dns, &ours, &store, &["/bin/false".to_string()], "");
    let config = rmilter::config::from_text(
        Source::Embedded,
        &toml,
        &Overrides {
            listen: Some("inet:127.0.0.1:0".into()),
            keys: Vec::new(),
        },
    )
    .unwrap();
    let sink = StoreSink::start(&config.report);
    let runtime = rmilter::runtime::Runtime::from_config(config).unwrap();
    let milter = TestMilter::start_with(runtime, sink.clone());
    let pf = postfix_with(&milter);

    const N: usize = 3;
    for i in 0..N {
        let raw = sign(
            &senders.keys[0],
            &common::message(
                "Alice <alice@sender.example>",
                &format!("m{i}"),
                "Hello.\r\n",
            ),
            &SignOptions::default(),
        );
        let out = pf.submit(&Submission::new(
            Client::external(OUTSIDE, "mail.sender.example"),
            "alice@sender.example",
            &["bob@example.org"],
            &raw,
        ));
        assert!(out.accepted(), "{out:?}\n{}", pf.diag());
    }
    assert_eq!(pf.sink().wait_for(N, WAIT).len(), N, "{}", pf.diag());
    let deadline = Instant::now() + WAIT;
    while sink.stats().written() < N as u64 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(sink.stats().written(), N as u64);
    assert_eq!(sink.stats().dropped(), 0);
    pf.sink().clear();

    // report send, a day later, through this Postfix's sendmail.
    let cfg = write_config(
        dir.path(),
        &config_text(&dns, &ours, &store, &sendmail_for(&pf), ""),
    );
    let tomorrow = unix_time(SystemTime::now()) + 86_400;
    let dry = Command::new(env!("CARGO_BIN_EXE_rmilter"))
        .args(["report", "send", "--dry-run", "-c"])
        .arg(&cfg)
        .args(["--now", &tomorrow.to_string()])
        .output()
        .unwrap();
    assert!(dry.status.success(), "{}", text(&dry));
    assert!(
        String::from_utf8_lossy(&dry.stdout).contains("would send 1"),
        "{}",
        text(&dry)
    );
    let out = report_send(&cfg, tomorrow, None);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("-> dmarc@sender.example: sent"), "{stdout}");
    assert!(stdout.contains("sent 1,"), "{stdout}");

    let got = wait_reports(&pf, 1);
    assert_eq!(got.len(), 1, "{}", pf.diag());
    let report = &got[0];
    assert_eq!(report.rcpt_to, ["dmarc@sender.example"]);
    assert_eq!(report.mail_from, "dmarc-reports@example.org");
    let (name, gz, subject, _) = report_parts(report);
    assert!(name.starts_with("example.org!sender.example!"), "{name}");
    assert!(name.ends_with(".xml.gz"), "{name}");
    assert!(
        subject.starts_with("Report Domain: sender.example Submitter: example.org Report-ID: <"),
        "{subject}"
    );
    let xml_bytes = xml::gunzip(&gz, 1 << 20).unwrap();
    let valid = xmllint_validate(&rfc9990_xsd(), &xml_bytes);
    assert!(
        valid.is_ok(),
        "{valid:?}\n{}",
        String::from_utf8_lossy(&xml_bytes)
    );
    assert_eq!(total_count(&xml_bytes), N as i64);
    assert_eq!(xpath_values(&xml_bytes, "source_ip"), [OUTSIDE]);
    assert_eq!(xpath_values(&xml_bytes, "disposition"), ["pass"]);
    // Signed by rmilter for the reporting domain (local submission), and
    // dkimpy agrees (RFC 9990: report mail must pass DMARC aligned).
    let dns_records: Vec<(String, String)> = ours.dns();
    let sigs = dkimpy::verify(&report.data, &dns_records);
    assert!(
        sigs.iter().any(|s| s.d == "example.org" && s.pass),
        "{sigs:?}\n{}",
        String::from_utf8_lossy(&report.data)
    );
    // The period is done: a second run sends nothing.
    let again = report_send(&cfg, tomorrow + 60, None);
    assert!(again.status.success(), "{}", text(&again));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(reports_in(&pf).len(), 1);
}

/// A store filled directly (the milter part is covered above), a
/// configuration for `report send` against `pf`.
struct SendWorld {
    dir: tempfile::TempDir,
    _dns: TestDns,
    _milter: TestMilter,
    pf: Postfix,
    cfg: PathBuf,
    ours: TestKeys,
}

fn send_world(zone_extra: &[(&str, &str)], store: Option<String>, extra: &str) -> SendWorld {
    let dir = tempfile::tempdir().unwrap();
    let senders = TestKeys::new(&[("sender.example", "ed", KeyAlgorithm::Ed25519)]);
    let ours = TestKeys::new(&[("example.org", "rep", KeyAlgorithm::Ed25519)]);
    let mut z = zone(&senders, &ours);
    for (name, value) in zone_extra {
        z = z.txt(name, value);
    }
    let dns = TestDns::start(z);
    let milter = TestMilter::start(runtime_from_toml(&format!(
        "authserv_id = \"mx.example.org\"\n[outbound]\nnetworks = []\n[dns]\nnameservers = [\"{}\"]\ntimeout = \"1s\"\nattempts = 1\n{}",
        dns.addr(),
        ours.toml()
    )));
    let pf = postfix_with(&milter);
    let store = store.unwrap_or_else(|| dir.path().join("reports.db").display().to_string());
    let cfg = write_config(
        dir.path(),
        &config_text(&dns, &ours, &store, &sendmail_for(&pf), extra),
    );
    SendWorld {
        dir,
        _dns: dns,
        _milter: milter,
        pf,
        cfg,
        ours,
    }
}

fn fill(cfg: &Path, domains: &[&str], per_domain: usize) -> (i64, i64) {
    let config = rmilter::config::load(Some(cfg), cfg, &Overrides::default()).unwrap();
    let mut store = Store::open(&config.report.store, Duration::from_secs(5)).unwrap();
    let t = yesterday();
    let evals: Vec<_> = domains
        .iter()
        .flat_map(|d| (0..per_domain).map(move |_| evaluation(d, OUTSIDE, t)))
        .collect();
    store.add(&aggregate(&evals, 86_400)).unwrap();
    period_of(unix_time(t), 86_400)
}

#[test]
fn a_send_killed_at_each_step_resends_the_same_report() {
    for step in ["generated", "claimed", "accepted"] {
        let w = send_world(&[], None, "");
        fill(&w.cfg, &["sender.example"], 4);
        let now = unix_time(SystemTime::now());
        let first = report_send(&w.cfg, now, Some(step));
        assert!(killed(&first), "{step}: {}", text(&first));
        let expected = if step == "accepted" { 1 } else { 0 };
        w.pf.kick_pickup();
        let got = wait_reports(&w.pf, expected.max(1));
        assert_eq!(got.len(), expected, "{step}: {}", w.pf.diag());
        // Within the lease a claimed delivery is left alone ...
        if step != "generated" {
            let out = report_send(&w.cfg, now + 30, None);
            assert!(out.status.success(), "{step}: {}", text(&out));
            assert!(
                String::from_utf8_lossy(&out.stdout).contains("being sent by"),
                "{step}: {}",
                text(&out)
            );
        }
        // ... and taken over after it.
        let out = report_send(&w.cfg, now + 120, None);
        assert!(out.status.success(), "{step}: {}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("sent 1,"),
            "{step}: {}",
            text(&out)
        );
        let got = wait_reports(&w.pf, expected + 1);
        assert_eq!(got.len(), expected + 1, "{step}: {}", w.pf.diag());
        // Every copy is the same report: file name, bytes, Subject, Message-ID.
        let parts: Vec<_> = got.iter().map(report_parts).collect();
        assert!(
            parts.windows(2).all(|p| p[0] == p[1]),
            "{step}: copies differ"
        );
        // And it is the report the store keeps (what `generate` writes).
        let out_dir = w.dir.path().join("out");
        let generated = Command::new(env!("CARGO_BIN_EXE_rmilter"))
            .args(["report", "generate", "-c"])
            .arg(&w.cfg)
            .args(["--period", &yesterday_text(), "--out"])
            .arg(&out_dir)
            .output()
            .unwrap();
        assert!(generated.status.success(), "{}", text(&generated));
        let file = std::fs::read(out_dir.join(&parts[0].0)).unwrap();
        assert_eq!(file, parts[0].1, "{step}: generate and send differ");
        let xml_bytes = xml::gunzip(&file, 1 << 20).unwrap();
        assert_eq!(total_count(&xml_bytes), 4);
        // Nothing further to send.
        let out = report_send(&w.cfg, now + 600, None);
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("sent 0,"),
            "{}",
            text(&out)
        );
        let _ = &w.ours;
    }
}

fn yesterday_text() -> String {
    unix_time(yesterday()).to_string()
}

#[test]
fn concurrent_sends_mail_one_report_per_destination() {
    let domains = [
        "a.example",
        "b.example",
        "c.example",
        "d.example",
        "e.example",
        "f.example",
    ];
    let records: Vec<(String, String)> = domains
        .iter()
        .map(|d| {
            (
                format!("_dmarc.{d}"),
                format!("v=DMARC1; p=none; rua=mailto:rua@{d}"),
            )
        })
        .collect();
    let refs: Vec<(&str, &str)> = records
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let w = send_world(&refs, None, "");
    fill(&w.cfg, &domains, 2);
    let now = unix_time(SystemTime::now());
    let runs: Vec<_> = (0..3)
        .map(|_| {
            let cfg = w.cfg.clone();
            std::thread::spawn(move || report_send(&cfg, now, None))
        })
        .collect();
    let outs: Vec<Output> = runs.into_iter().map(|r| r.join().unwrap()).collect();
    for o in &outs {
        assert!(o.status.success(), "{}", text(o));
    }
    let got = wait_reports(&w.pf, domains.len());
    std::thread::sleep(Duration::from_secs(2));
    let got_all = reports_in(&w.pf);
    assert_eq!(got.len(), domains.len(), "{}", w.pf.diag());
    assert_eq!(
        got_all.len(),
        domains.len(),
        "duplicates: {:?}",
        outs.iter().map(text).collect::<Vec<_>>()
    );
    let mut rcpts: Vec<String> = got_all.iter().flat_map(|m| m.rcpt_to.clone()).collect();
    rcpts.sort();
    let mut want: Vec<String> = domains.iter().map(|d| format!("rua@{d}")).collect();
    want.sort();
    assert_eq!(rcpts, want);
}

/// Issue 15 item 15: one record cannot fan a report out to many mailboxes;
/// only the first `report.max_rua_addresses` (default 2) get it.
#[test]
fn rua_addresses_are_capped_per_record() {
    let w = send_world(
        &[(
            "_dmarc.many.example",
            "v=DMARC1; p=none; rua=mailto:r1@many.example,mailto:r2@many.example,mailto:r3@many.example,mailto:r4@many.example",
        )],
        None,
        "",
    );
    fill(&w.cfg, &["many.example"], 1);
    let now = unix_time(SystemTime::now());
    let out = report_send(&w.cfg, now, None);
    assert!(out.status.success(), "{}", text(&out));
    let got = wait_reports(&w.pf, 2);
    std::thread::sleep(Duration::from_secs(2));
    let mut rcpts: Vec<String> = reports_in(&w.pf)
        .iter()
        .flat_map(|m| m.rcpt_to.clone())
        .collect();
    rcpts.sort();
    assert_eq!(got.len(), 2, "{}", text(&out));
    assert_eq!(
        rcpts,
        ["r1@many.example", "r2@many.example"],
        "{}",
        text(&out)
    );
}

#[test]
fn destinations_are_checked_before_anything_is_sent() {
    let w = send_world(
        &[
            (
                "_dmarc.ext.example",
                "v=DMARC1; p=reject; rua=mailto:ok@reports.example,mailto:victim@victim.example,mailto:flaky@flaky.example",
            ),
            ("ext.example._report._dmarc.reports.example", "v=DMARC1"),
            ("ext.example._report._dmarc.flaky.example", "v=DMARC1"),
            (
                "_dmarc.size.example",
                "v=DMARC1; p=reject; rua=mailto:small@size.example!1k,mailto:big@size.example!10m",
            ),
            (
                "_dmarc.example.org",
                "v=DMARC1; p=reject; rua=mailto:dmarc-reports@example.org,mailto:rua@example.org",
            ),
        ],
        None,
        "max_rua_addresses = 3",
    );
    // The authorisation lookup for flaky.example fails for now.
    w._dns.set_fault(
        "ext.example._report._dmarc.flaky.example",
        Some(RType::TXT),
        Fault::ServFail,
    );
    fill(&w.cfg, &["ext.example", "size.example", "example.org"], 1);
    let now = unix_time(SystemTime::now());
    let out = report_send(&w.cfg, now, None);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        stdout.contains("victim@victim.example: not sent: victim.example has not authorised"),
        "{stdout}"
    );
    assert!(
        stdout.contains("flaky@flaky.example: authorisation lookup failed"),
        "{stdout}"
    );
    assert!(
        stdout.contains("small@size.example: not sent: the report"),
        "{stdout}"
    );
    assert!(
        stdout
            .contains("dmarc-reports@example.org: not sent: this is rmilter's own report address"),
        "{stdout}"
    );
    assert!(
        stdout.contains("rua@example.org: not sent: a report about our own domain"),
        "{stdout}"
    );
    let got = wait_reports(&w.pf, 2);
    std::thread::sleep(Duration::from_secs(1));
    let mut rcpts: Vec<String> = reports_in(&w.pf)
        .iter()
        .flat_map(|m| m.rcpt_to.clone())
        .collect();
    rcpts.sort();
    assert_eq!(got.len(), 2, "{stdout}\n{}", w.pf.diag());
    assert_eq!(rcpts, ["big@size.example", "ok@reports.example"]);
    // DNS recovers: the postponed destination gets the report, the
    // unauthorised one still never does.
    w._dns.clear_faults();
    let out = report_send(&w.cfg, now + 60, None);
    assert!(out.status.success(), "{}", text(&out));
    let got = wait_reports(&w.pf, 3);
    std::thread::sleep(Duration::from_secs(1));
    let mut rcpts: Vec<String> = reports_in(&w.pf)
        .iter()
        .flat_map(|m| m.rcpt_to.clone())
        .collect();
    rcpts.sort();
    assert_eq!(got.len(), 3, "{}", text(&out));
    assert_eq!(
        rcpts,
        [
            "big@size.example",
            "flaky@flaky.example",
            "ok@reports.example"
        ]
    );
}

#[test]
fn two_hosts_on_one_postgres_store_send_one_report() {
    let pg = TestPg::start();
    let w = send_world(
        &[
            (
                "_dmarc.a.example",
                "v=DMARC1; p=none; rua=mailto:rua@a.example",
            ),
            (
                "_dmarc.b.example",
                "v=DMARC1; p=none; rua=mailto:rua@b.example",
            ),
        ],
        Some(pg.url()),
        "",
    );
    // Two "hosts": two milters, each with its own store writer on the
    // shared store, each receiving mail.
    let senders = TestKeys::new(&[("a.example", "k", KeyAlgorithm::Ed25519)]);
    let mut z = Zone::new()
        .a("a.example", OUTSIDE.parse().unwrap())
        .txt("a.example", "v=spf1 ip4:198.51.100.7 -all")
        .txt(
            "_dmarc.a.example",
            "v=DMARC1; p=none; rua=mailto:rua@a.example",
        );
    for (name, value) in senders.dns() {
        z = z.txt(&name, &value);
    }
    let dns = TestDns::start(z);
    let host_toml = format!(
        "authserv_id = \"mx.example.org\"\n[outbound]\nnetworks = []\n[dns]\nnameservers = [\"{}\"]\ntimeout = \"1s\"\nattempts = 1\n[report]\nenabled = true\nstore = \"{}\"\n",
        dns.addr(),
        pg.url()
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut sinks = Vec::new();
    let mut milters = Vec::new();
    for _ in 0..2 {
        let config = rmilter::config::from_text(
            Source::Embedded,
            &host_toml,
            &Overrides {
                listen: Some("inet:127.0.0.1:0".into()),
                keys: Vec::new(),
            },
        )
        .unwrap();
        let sink = StoreSink::start(&config.report);
        milters.push(TestMilter::start_with(
            rmilter::runtime::Runtime::from_config(config).unwrap(),
            sink.clone(),
        ));
        sinks.push(sink);
    }
    let per_host = [3usize, 2];
    for (milter, n) in milters.iter().zip(per_host) {
        for i in 0..n {
            let raw = sign(
                &senders.keys[0],
                &common::message("news@a.example", &format!("h{i}"), "x\r\n"),
                &SignOptions::default(),
            );
            let env = Envelope {
                mail_from: "<news@a.example>".into(),
                client_addr: (OUTSIDE.parse::<std::net::Ipv4Addr>().unwrap(), 40000).into(),
                ..Envelope::inbound()
            };
            let out = rt.block_on(drive::drive(milter.inet_addr(), &env, &raw));
            assert_eq!(out.status, indymilter_test::Status::Continue);
        }
    }
    let deadline = Instant::now() + WAIT;
    while sinks.iter().map(|s| s.stats().written()).sum::<u64>() < 5 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(sinks.iter().map(|s| s.stats().written()).sum::<u64>(), 5);
    // b.example's rows come from elsewhere (yesterday).
    fill(&w.cfg, &["b.example"], 1);
    // Both hosts run report send at the same time, a day later.
    let tomorrow = unix_time(SystemTime::now()) + 86_400;
    let runs: Vec<_> = (0..2)
        .map(|_| {
            let cfg = w.cfg.clone();
            std::thread::spawn(move || report_send(&cfg, tomorrow, None))
        })
        .collect();
    let outs: Vec<Output> = runs.into_iter().map(|r| r.join().unwrap()).collect();
    for o in &outs {
        assert!(o.status.success(), "{}", text(o));
    }
    let got = wait_reports(&w.pf, 3);
    std::thread::sleep(Duration::from_secs(2));
    let all = reports_in(&w.pf);
    // Yesterday's b.example and today's a.example: one report each.
    assert_eq!(
        got.len(),
        2,
        "{:?}",
        outs.iter().map(text).collect::<Vec<_>>()
    );
    assert_eq!(all.len(), 2, "duplicates");
    let a = all
        .iter()
        .find(|m| m.rcpt_to == ["rua@a.example"])
        .expect("a.example report");
    let (_, gz, _, _) = report_parts(a);
    let xml_bytes = xml::gunzip(&gz, 1 << 20).unwrap();
    assert!(xmllint_validate(&rfc9990_xsd(), &xml_bytes).is_ok());
    assert_eq!(
        total_count(&xml_bytes),
        5,
        "both hosts' messages in one report"
    );
    drop(milters);
}
