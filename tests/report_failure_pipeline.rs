//! DMARC failure reports (RFC 9991), the pipeline (issue 17): the milter
//! captures a failing message whose record has `ruf=` (and nothing else),
//! the store writer queues it under the per (domain, source IP) limit, and
//! `rmilter report failures` / `report send` mail it: never to an
//! unauthorised external `ruf`, within the per-destination and global daily
//! caps, which like the per-source limit hold across restarts because they
//! live in the store; a dead store or a full queue never delays mail; and
//! through a real Postfix the report reaches the sink DKIM-signed.

mod common;

use common::dkimpy;
use common::dns::{TestDns, Zone};
use common::drive::{self, Envelope};
use common::keys::TestKeys;
use common::milter::TestMilter;
use common::postfix::{Postfix, PostfixConfig};
use common::smtp::{Client, Submission};
use indymilter_test::Status;
use rmilter::config::{KeyAlgorithm, Overrides, Source};
use rmilter::report::failure::{DeliveryResult, FailureSample};
use rmilter::report::failures::{COUNTERS, Capture};
use rmilter::report::sink::StoreSink;
use rmilter::report::store::Store;
use rmilter::report::{EvaluationSink, unix_time};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

const WAIT: Duration = Duration::from_secs(30);
const OUTSIDE: &str = "198.51.100.7";

/// Records: spoofed.example fails DMARC for any unsigned mail (SPF -all)
/// and asks for failure reports at its own address, an unauthorised
/// foreign one and an authorised foreign one.
fn zone() -> Zone {
    Zone::new()
        .txt("spoofed.example", "v=spf1 -all")
        .txt(
            "_dmarc.spoofed.example",
            "v=DMARC1; p=none; fo=1; ruf=mailto:ruf@spoofed.example,mailto:victim@victim.example,mailto:ok@reports.example",
        )
        .txt("spoofed.example._report._dmarc.reports.example", "v=DMARC1")
        .txt("quiet.example", "v=spf1 -all")
        .txt("_dmarc.quiet.example", "v=DMARC1; p=none; rua=mailto:agg@quiet.example")
}

fn config_text(dns: &TestDns, store: &str, sendmail: &[String], extra: &str, keys: &str) -> String {
    let sendmail = sendmail
        .iter()
        .map(|a| format!("\"{a}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "authserv_id = \"mx.example.org\"\n{keys}\n[outbound]\nnetworks = []\n[dns]\nnameservers = [\"{}\"]\ntimeout = \"1s\"\nattempts = 1\n[report]\nenabled = true\nstore = \"{store}\"\nemail = \"dmarc-reports@example.org\"\nreporting_domain = \"example.org\"\nsendmail = [{sendmail}]\nlease = \"60s\"\n[report.failure]\nenabled = true\nmax_ruf_addresses = 3\n{extra}\n",
        dns.addr()
    )
}

fn config(text: &str) -> rmilter::config::Config {
    rmilter::config::from_text(
        Source::Embedded,
        text,
        &Overrides {
            listen: Some("inet:127.0.0.1:0".into()),
            keys: Vec::new(),
        },
    )
    .unwrap()
}

fn out_text(out: &Output) -> String {
    format!(
        "{}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn failures_cmd(cfg: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rmilter"))
        .args(["report", "failures", "-c"])
        .arg(cfg)
        .args(args)
        .output()
        .unwrap()
}

fn sample(domain: &str, ip: &str) -> FailureSample {
    FailureSample {
        reported_domain: domain.to_string(),
        source_ip: ip.parse().unwrap(),
        arrival: unix_time(SystemTime::now()),
        helo: "mail.spoofer.example".to_string(),
        mail_from: "alice@spoofed.example".to_string(),
        rcpt_to: Vec::new(),
        authentication_results: "mx.example.org; dmarc=fail header.from=spoofed.example"
            .to_string(),
        dkim: Vec::new(),
        spf: None,
        dkim_aligned_pass: false,
        spf_aligned_pass: false,
        delivery_result: DeliveryResult::Delivered,
        headers: b"From: Alice <alice@spoofed.example>\r\nTo: bob@example.org\r\nSubject: hi\r\n"
            .to_vec(),
        body: None,
    }
}

fn capture(ip: &str) -> Capture {
    Capture {
        policy_domain: "spoofed.example".to_string(),
        destinations: vec![
            ("ruf@spoofed.example".to_string(), 0),
            ("victim@victim.example".to_string(), 0),
            ("ok@reports.example".to_string(), 0),
        ],
        sample: sample("spoofed.example", ip),
    }
}

/// A sendmail that keeps each message as a file (and its arguments).
fn fake_sendmail(dir: &Path) -> (Vec<String>, PathBuf) {
    let out = dir.join("mail");
    std::fs::create_dir_all(&out).unwrap();
    let script = dir.join("sendmail.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nf=$(mktemp {}/m.XXXXXX)\necho \"$@\" > \"$f.args\"\ncat > \"$f\"\n",
            out.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    (vec![script.display().to_string()], out)
}

/// Recipients of the mails the fake sendmail got, sorted.
fn recipients(out: &Path) -> Vec<String> {
    let mut r: Vec<String> = std::fs::read_dir(out)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "args"))
        .map(|e| {
            let args = std::fs::read_to_string(e.path()).unwrap();
            args.split_whitespace()
                .last()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    r.sort();
    r
}

/// Hand captures to a store writer (a milter process) and wait until written.
fn queue_with_writer(config: &rmilter::config::Config, captures: Vec<Capture>) {
    let sink = StoreSink::start(&config.report);
    for c in captures {
        sink.failure(c);
    }
    sink.finish(Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread")]
async fn failing_mail_with_ruf_is_captured_and_nothing_else() {
    let dns = TestDns::start(zone());
    let toml = format!(
        "authserv_id = \"mx.example.org\"\n[dns]\nnameservers = [\"{}\"]\ntimeout = \"1s\"\nattempts = 1\n[report]\nenabled = true\nstore = \"/nonexistent/reports.db\"\n[report.failure]\nenabled = true\n",
        dns.addr()
    );
    let (milter, sink) = TestMilter::start_toml_recording(&toml);
    let env = |from: &str| Envelope {
        client_addr: format!("{OUTSIDE}:40000").parse().unwrap(),
        mail_from: format!("<{from}>"),
        ..Envelope::inbound()
    };
    // DMARC fails, the record has ruf=: one capture.
    let out = drive::drive(
        milter.inet_addr(),
        &env("alice@spoofed.example"),
        &common::message("Alice <alice@spoofed.example>", "spoof", "Hello.\r\n"),
    )
    .await;
    assert!(matches!(out.status, Status::Continue), "{out:?}");
    // DMARC fails, but the record has no ruf=: nothing.
    drive::drive(
        milter.inet_addr(),
        &env("carol@quiet.example"),
        &common::message("Carol <carol@quiet.example>", "quiet", "Hello.\r\n"),
    )
    .await;
    let got = sink.take_failures();
    assert_eq!(got.len(), 1, "{got:#?}");
    let c = &got[0];
    assert_eq!(c.policy_domain, "spoofed.example");
    // report.failure.max_ruf_addresses (default 2): the first two listed.
    assert_eq!(
        c.destinations,
        [
            ("ruf@spoofed.example".to_string(), 0),
            ("victim@victim.example".to_string(), 0)
        ]
    );
    let s = &c.sample;
    assert_eq!(s.reported_domain, "spoofed.example");
    assert_eq!(s.source_ip.to_string(), OUTSIDE);
    assert_eq!(s.mail_from, "alice@spoofed.example");
    assert_eq!(s.delivery_result, DeliveryResult::Delivered);
    assert!(!s.spf_aligned_pass && !s.dkim_aligned_pass);
    assert!(
        s.authentication_results.contains("dmarc=fail"),
        "{}",
        s.authentication_results
    );
    let headers = String::from_utf8_lossy(&s.headers);
    assert!(headers.contains("Subject: spoof\r\n"), "{headers}");
    assert!(!headers.contains("Hello."), "{headers}");
    assert!(s.body.is_none());
    assert_eq!(s.spf.as_ref().map(|f| f.result.as_str()), Some("fail"));
}

#[tokio::test(flavor = "multi_thread")]
async fn failure_reports_off_captures_nothing() {
    let dns = TestDns::start(zone());
    let toml = format!(
        "authserv_id = \"mx.example.org\"\n[dns]\nnameservers = [\"{}\"]\ntimeout = \"1s\"\nattempts = 1\n",
        dns.addr()
    );
    let (milter, sink) = TestMilter::start_toml_recording(&toml);
    let env = Envelope {
        client_addr: format!("{OUTSIDE}:40000").parse().unwrap(),
        mail_from: "<alice@spoofed.example>".into(),
        ..Envelope::inbound()
    };
    drive::drive(
        milter.inet_addr(),
        &env,
        &common::message("Alice <alice@spoofed.example>", "spoof", "Hello.\r\n"),
    )
    .await;
    assert_eq!(sink.take().len(), 1);
    assert!(sink.take_failures().is_empty());
}

#[test]
fn unauthorised_ruf_is_never_sent_and_limits_hold_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let dns = TestDns::start(zone());
    let store = dir.path().join("reports.db").display().to_string();
    let (sendmail, mail) = fake_sendmail(dir.path());
    let text = config_text(
        &dns,
        &store,
        &sendmail,
        "per_source = 1\nper_source_period = \"1h\"\nper_destination_per_day = 1\nmax_per_day = 100",
        "",
    );
    let cfg_path = dir.path().join("rmilter.toml");
    std::fs::write(&cfg_path, &text).unwrap();
    let cfg = config(&text);

    // One milter process: the same (domain, IP) twice, one queued.
    let limited_before = COUNTERS.rate_limited.load(Ordering::Relaxed);
    queue_with_writer(&cfg, vec![capture("192.0.2.1"), capture("192.0.2.1")]);
    // Restarted: the per-source count is in the store.
    queue_with_writer(&cfg, vec![capture("192.0.2.1"), capture("192.0.2.2")]);
    assert!(COUNTERS.rate_limited.load(Ordering::Relaxed) >= limited_before + 2);
    let mut s = Store::open(&cfg.report.store, Duration::from_secs(5)).unwrap();
    let queued = s.failures_all().unwrap();
    let mut ips: Vec<&str> = queued.iter().map(|q| q.source_ip.as_str()).collect();
    ips.sort();
    assert_eq!(ips, ["192.0.2.1", "192.0.2.2"]);
    drop(s);

    // The dry run shows, and mails nothing.
    let dry = failures_cmd(&cfg_path, &["--dry-run", "--print"]);
    assert!(dry.status.success(), "{}", out_text(&dry));
    let stdout = String::from_utf8_lossy(&dry.stdout).into_owned();
    assert!(
        stdout.contains("ok@reports.example: would send"),
        "{stdout}"
    );
    assert!(
        stdout.contains("victim@victim.example: not sent: victim.example has not authorised"),
        "{stdout}"
    );
    assert!(stdout.contains("Feedback-Type: auth-failure"), "{stdout}");
    assert!(recipients(&mail).is_empty());

    let out = failures_cmd(&cfg_path, &[]);
    assert!(out.status.success(), "{}", out_text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    // The first report to its own domain and the authorised foreign one;
    // the second is over per_destination_per_day at both.
    assert_eq!(
        recipients(&mail),
        ["ok@reports.example", "ruf@spoofed.example"],
        "{stdout}"
    );
    assert!(
        stdout.contains("victim@victim.example: not sent: victim.example has not authorised"),
        "{stdout}"
    );
    assert!(
        stdout.contains("not sent: report.failure.per_destination_per_day (1) reached today"),
        "{stdout}"
    );
    // Restart (a new process) with a new report: the daily counts hold.
    queue_with_writer(&cfg, vec![capture("192.0.2.3")]);
    let out = failures_cmd(&cfg_path, &[]);
    assert!(out.status.success(), "{}", out_text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(stdout.contains("sent 0,"), "{stdout}");
    assert_eq!(recipients(&mail).len(), 2, "{stdout}");
    // Nothing is left to send; the unauthorised address never got mail.
    let out = failures_cmd(&cfg_path, &[]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("0 queued"),
        "{}",
        out_text(&out)
    );
    assert!(!recipients(&mail).iter().any(|r| r.contains("victim")));
}

#[test]
fn the_global_cap_holds() {
    let dir = tempfile::tempdir().unwrap();
    let dns = TestDns::start(zone());
    let store = dir.path().join("reports.db").display().to_string();
    let (sendmail, mail) = fake_sendmail(dir.path());
    let text = config_text(
        &dns,
        &store,
        &sendmail,
        "per_source = 10\nper_destination_per_day = 2\nmax_per_day = 3",
        "",
    );
    let cfg_path = dir.path().join("rmilter.toml");
    std::fs::write(&cfg_path, &text).unwrap();
    let cfg = config(&text);
    queue_with_writer(
        &cfg,
        vec![
            capture("192.0.2.1"),
            capture("192.0.2.2"),
            capture("192.0.2.3"),
        ],
    );
    let out = failures_cmd(&cfg_path, &[]);
    assert!(out.status.success(), "{}", out_text(&out));
    // Two destinations each (the third is unauthorised), three in all.
    assert_eq!(recipients(&mail).len(), 3, "{}", out_text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("report.failure.max_per_day (3) reached"),
        "{}",
        out_text(&out)
    );
    // A report the global cap stopped does not count against its
    // destination: one destination got one report of its two, and gets
    // the next once the cap is raised.
    let text = text.replace("max_per_day = 3", "max_per_day = 10");
    std::fs::write(&cfg_path, &text).unwrap();
    queue_with_writer(&config(&text), vec![capture("192.0.2.4")]);
    let out = failures_cmd(&cfg_path, &[]);
    assert!(out.status.success(), "{}", out_text(&out));
    let got = recipients(&mail);
    assert_eq!(got.len(), 4, "{}", out_text(&out));
    for address in ["ok@reports.example", "ruf@spoofed.example"] {
        assert_eq!(got.iter().filter(|r| *r == address).count(), 2, "{got:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_store_or_full_queue_never_delays_mail() {
    let dns = TestDns::start(zone());
    // The store cannot be opened (its directory is a file) and the queue
    // holds one sample.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, "").unwrap();
    let text = format!(
        "authserv_id = \"mx.example.org\"\n[dns]\nnameservers = [\"{}\"]\ntimeout = \"1s\"\nattempts = 1\n[report]\nenabled = true\nstore = \"{}/reports.db\"\n[report.failure]\nenabled = true\nqueue_size = 1\n",
        dns.addr(),
        file.display()
    );
    let cfg = config(&text);
    let sink = StoreSink::start(&cfg.report);
    let runtime = rmilter::runtime::Runtime::from_config(cfg).unwrap();
    let milter = TestMilter::start_with(runtime, sink.clone());
    let dropped_before = COUNTERS.dropped.load(Ordering::Relaxed);
    let env = Envelope {
        client_addr: format!("{OUTSIDE}:40000").parse().unwrap(),
        mail_from: "<alice@spoofed.example>".into(),
        ..Envelope::inbound()
    };
    let mut slowest = Duration::ZERO;
    for i in 0..10 {
        let started = Instant::now();
        let out = drive::drive(
            milter.inet_addr(),
            &env,
            &common::message("Alice <alice@spoofed.example>", &format!("m{i}"), "Hi.\r\n"),
        )
        .await;
        slowest = slowest.max(started.elapsed());
        assert!(matches!(out.status, Status::Continue), "{out:?}");
    }
    // Each message took what verification takes (local DNS): no waiting
    // on the store (whose writer sleeps 500 ms after each failure).
    assert!(slowest < Duration::from_millis(400), "{slowest:?}");
    sink.finish(Duration::from_secs(10));
    assert!(
        COUNTERS.dropped.load(Ordering::Relaxed) >= dropped_before + 9,
        "dropped {} -> {}",
        dropped_before,
        COUNTERS.dropped.load(Ordering::Relaxed)
    );
}

#[test]
fn a_failure_report_goes_through_postfix_to_the_sink_dkim_signed() {
    let dir = tempfile::tempdir().unwrap();
    let ours = TestKeys::new(&[("example.org", "rep", KeyAlgorithm::Rsa)]);
    let mut z = zone();
    for (name, value) in ours.dns() {
        z = z.txt(&name, &value);
    }
    let dns = TestDns::start(z);
    let store = dir.path().join("reports.db").display().to_string();
    let toml = config_text(
        &dns,
        &store,
        &["/bin/false".to_string()],
        "include_rcpt_to = true",
        &ours.toml(),
    );
    let cfg = config(&toml);
    let sink = StoreSink::start(&cfg.report);
    let runtime = rmilter::runtime::Runtime::from_config(cfg).unwrap();
    let milter = TestMilter::start_with(runtime, sink.clone());
    let pf = Postfix::start(PostfixConfig {
        extra_main_cf: vec![("relay_domains".into(), "example.org".into())],
        ..PostfixConfig::with_milters(&milter.postfix_spec())
    });
    let raw = common::message("Alice <alice@spoofed.example>", "spoof", "Hello.\r\n");
    let out = pf.submit(&Submission::new(
        Client::external(OUTSIDE, "mail.spoofer.example"),
        "alice@spoofed.example",
        &["bob@example.org"],
        &raw,
    ));
    assert!(out.accepted(), "{out:?}\n{}", pf.diag());
    assert_eq!(pf.sink().wait_for(1, WAIT).len(), 1, "{}", pf.diag());
    sink.finish(Duration::from_secs(10));
    let deadline = Instant::now() + WAIT;
    loop {
        let mut s = Store::open(&store_location(&store), Duration::from_secs(5)).unwrap();
        if !s.failures_all().unwrap().is_empty() || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    pf.sink().clear();

    let sendmail = [
        "/usr/sbin/sendmail".to_string(),
        "-C".to_string(),
        pf.config_dir().display().to_string(),
    ];
    let cfg_path = dir.path().join("rmilter.toml");
    std::fs::write(
        &cfg_path,
        config_text(&dns, &store, &sendmail, "", &ours.toml()),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_rmilter"))
        .args(["report", "send", "-c"])
        .arg(&cfg_path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", out_text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        stdout.contains("failure reports: 1 queued, sent 2,"),
        "{stdout}"
    );

    let got = pf.sink().wait_for(2, WAIT);
    assert_eq!(got.len(), 2, "{stdout}\n{}", pf.diag());
    let mut rcpts: Vec<String> = got.iter().flat_map(|m| m.rcpt_to.clone()).collect();
    rcpts.sort();
    assert_eq!(rcpts, ["ok@reports.example", "ruf@spoofed.example"]);
    for m in &got {
        assert_eq!(m.mail_from, "dmarc-reports@example.org");
        let data = String::from_utf8_lossy(&m.data);
        assert!(data.contains("report-type=feedback-report"), "{data}");
        assert!(data.contains("Feedback-Type: auth-failure"), "{data}");
        assert!(data.contains("Reported-Domain: spoofed.example"), "{data}");
        // include_rcpt_to: Postfix sent RCPT events; the recipient is redacted.
        assert!(data.contains("Original-Rcpt-To: <"), "{data}");
        assert!(!data.contains("bob@example.org"), "{data}");
        // Redacted by default: the original local part is not returned.
        assert!(!data.contains("alice@spoofed.example"), "{data}");
        let sigs = dkimpy::verify(&m.data, &ours.dns());
        assert!(
            sigs.iter().any(|s| s.d == "example.org" && s.pass),
            "{sigs:?}\n{data}"
        );
    }
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(pf.sink().messages().len(), 2);
}

fn store_location(path: &str) -> rmilter::config::ReportStore {
    rmilter::config::ReportStore::Sqlite(PathBuf::from(path))
}

/// Several hosts sharing a PostgreSQL store: the counters are shared (no
/// more than the limit in total however the takes interleave), and of two
/// hosts claiming one queued report, one wins.
#[test]
fn limits_and_claims_are_shared_by_hosts_on_postgres() {
    let pg = common::pg::TestPg::start();
    let url = pg.create_db("failures");
    let location = rmilter::config::ReportStore::Postgres(url);
    Store::open(&location, Duration::from_secs(5)).unwrap();
    const HOSTS: usize = 4;
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(HOSTS));
    let handles: Vec<_> = (0..HOSTS)
        .map(|_| {
            let (location, barrier) = (location.clone(), barrier.clone());
            std::thread::spawn(move || {
                let mut s = Store::open(&location, Duration::from_secs(5)).unwrap();
                barrier.wait();
                (0..10)
                    .filter(|_| s.take_limit("global", "", 86_400, 7).unwrap())
                    .count()
            })
        })
        .collect();
    let taken: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(taken, 7);

    let mut a = Store::open(&location, Duration::from_secs(5)).unwrap();
    let mut b = Store::open(&location, Duration::from_secs(5)).unwrap();
    let cfg_text = "[report]\nenabled = true\n[report.failure]\nenabled = true\n";
    let cfg = config(cfg_text);
    assert!(
        rmilter::report::failures::admit(&mut a, &cfg.report.failure, &capture("192.0.2.9"), 1000)
            .unwrap()
    );
    let id = b.failures_open().unwrap()[0].id.clone();
    let first = a.claim_failure(&id, "host-a", 1000, 1060).unwrap();
    let second = b.claim_failure(&id, "host-b", 1000, 1060).unwrap();
    assert!(first && !second);
    // The per-source limit (1 per hour by default) holds on the other host.
    assert!(
        !rmilter::report::failures::admit(&mut b, &cfg.report.failure, &capture("192.0.2.9"), 1001)
            .unwrap()
    );
}

/// A failing MTA: the report stays queued, is retried after the backoff,
/// and the run exits 1. The failed attempts use up none of the day's
/// limits (one report per destination here).
#[test]
fn a_failing_mta_is_retried_after_the_backoff() {
    let dir = tempfile::tempdir().unwrap();
    let dns = TestDns::start(zone());
    let store = dir.path().join("reports.db").display().to_string();
    let limits = "per_destination_per_day = 1\nmax_per_day = 2";
    let broken = config_text(&dns, &store, &["/bin/false".to_string()], limits, "");
    let cfg_path = dir.path().join("rmilter.toml");
    std::fs::write(&cfg_path, &broken).unwrap();
    queue_with_writer(&config(&broken), vec![capture("192.0.2.1")]);
    let now = unix_time(SystemTime::now());
    let out = failures_cmd(&cfg_path, &["--now", &now.to_string()]);
    assert_eq!(out.status.code(), Some(1), "{}", out_text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("ruf@spoofed.example: sendmail failed"),
        "{}",
        out_text(&out)
    );
    // Not due yet.
    let out = failures_cmd(&cfg_path, &["--now", &(now + 10).to_string()]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("retry due at"),
        "{}",
        out_text(&out)
    );
    // The MTA works again: sent after the backoff, to both usable addresses.
    let (sendmail, mail) = fake_sendmail(dir.path());
    std::fs::write(&cfg_path, config_text(&dns, &store, &sendmail, limits, "")).unwrap();
    let out = failures_cmd(&cfg_path, &["--now", &(now + 301).to_string()]);
    assert!(out.status.success(), "{}", out_text(&out));
    assert_eq!(
        recipients(&mail),
        ["ok@reports.example", "ruf@spoofed.example"],
        "{}",
        out_text(&out)
    );
}

/// Envelope recipients are captured only with include_rcpt_to (and only
/// then does the milter ask for RCPT events).
#[tokio::test(flavor = "multi_thread")]
async fn recipients_only_with_include_rcpt_to() {
    let dns = TestDns::start(zone());
    for (include, want) in [
        (false, vec![]),
        (true, vec!["user@example.org".to_string()]),
    ] {
        let toml = format!(
            "authserv_id = \"mx.example.org\"\n[dns]\nnameservers = [\"{}\"]\ntimeout = \"1s\"\nattempts = 1\n[report]\nenabled = true\nstore = \"/nonexistent/reports.db\"\n[report.failure]\nenabled = true\ninclude_rcpt_to = {include}\n",
            dns.addr()
        );
        let (milter, sink) = TestMilter::start_toml_recording(&toml);
        let env = Envelope {
            client_addr: format!("{OUTSIDE}:40000").parse().unwrap(),
            mail_from: "<alice@spoofed.example>".into(),
            ..Envelope::inbound()
        };
        drive::drive(
            milter.inet_addr(),
            &env,
            &common::message("Alice <alice@spoofed.example>", "spoof", "Hello.\r\n"),
        )
        .await;
        let got = sink.take_failures();
        assert_eq!(got.len(), 1, "include_rcpt_to = {include}");
        assert_eq!(got[0].sample.rcpt_to, want, "include_rcpt_to = {include}");
    }
}
