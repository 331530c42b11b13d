//! Crash and restart under load (RELIABILITY §8 case 33): `kill -9` of the
//! rmilter process while 50 SMTP sessions submit mail through Postfix.
//! With `milter_default_action = tempfail` nothing leaves unsigned, the
//! queue drains after the restart, and every message Postfix accepted is
//! delivered exactly once, signed.

mod common;

use common::daemon::{Daemon, free_port};
use common::dkimpy;
use common::dns::{TestDns, Zone};
use common::keys::TestKeys;
use common::postfix::{Postfix, PostfixConfig, signal_kill};
use common::smtp::{Client, Submission};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

#[test]
fn kill_during_fifty_sessions_loses_nothing_and_leaks_nothing_unsigned() {
    let keys = TestKeys::example_com();
    let dns = TestDns::start(Zone::new());
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("rmilter.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"inet:127.0.0.1:{port}\"\n[outbound]\nnetworks = []\n[dns]\nnameservers = [\"{}\"]\n{}",
            dns.addr(),
            keys.toml()
        ),
    )
    .unwrap();
    let args = ["-c", config.to_str().unwrap()];
    let daemon = Daemon::start(&args);
    daemon.wait_log("rmilter started", 1);
    let pf = Arc::new(Postfix::start(PostfixConfig {
        sasl_users: vec![("alice".into(), "wonderland".into())],
        extra_main_cf: vec![("relay_domains".into(), "example.org".into())],
        ..PostfixConfig::with_milters(&format!("inet:127.0.0.1:{port}"))
    }));

    // 50 concurrent sessions, started over about 2.5 s, each submitting
    // one numbered message; rmilter is killed once 15 were accepted, with
    // others in flight.
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let sessions: Vec<_> = (0..50u64)
        .map(|i| {
            let pf = pf.clone();
            let done = done.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50 * i));
                let raw = common::message(
                    "alice@example.com",
                    &format!("load {i:02}"),
                    "under load\r\n",
                );
                let s = Submission::new(
                    Client::authenticated("alice", "wonderland"),
                    "alice@example.com",
                    &["bob@example.org"],
                    &raw,
                );
                let outcome = pf.submit(&s);
                if outcome.accepted() {
                    done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
                (i, outcome)
            })
        })
        .collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while done.load(std::sync::atomic::Ordering::SeqCst) < 15 {
        assert!(
            std::time::Instant::now() < deadline,
            "no progress:\n{}",
            pf.diag()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    signal_kill(daemon.pid());
    let outcomes: Vec<_> = sessions.into_iter().map(|t| t.join().unwrap()).collect();
    let accepted: BTreeSet<String> = outcomes
        .iter()
        .filter(|(_, o)| o.accepted())
        .map(|(i, _)| format!("load {i:02}"))
        .collect();
    eprintln!(
        "{} of 50 sessions accepted, the rest refused with 4xx",
        accepted.len()
    );
    assert!(accepted.len() < 50, "the kill came after every session");
    for (i, o) in &outcomes {
        assert!(
            o.accepted() || o.code / 100 == 4,
            "session {i}: {o:?} (never a 5xx)"
        );
    }
    // Local submissions while rmilter is down wait in the queue.
    for i in 0..5 {
        let raw = common::message("alice@example.com", &format!("local {i}"), "queued\r\n");
        assert!(
            pf.sendmail("alice@example.com", &["bob@example.org"], &raw)
                .status
                .success()
        );
    }
    pf.kick_pickup();
    std::thread::sleep(Duration::from_secs(2));
    let before_restart = pf.sink().messages();
    // Restart on the same socket; the queue drains.
    drop(daemon);
    let daemon = Daemon::start(&args);
    daemon.wait_log("rmilter started", 1);
    pf.kick_pickup();
    pf.flush();
    let expected = accepted.len() + 5;
    let delivered = pf.sink().wait_for(expected, Duration::from_secs(120));
    std::thread::sleep(Duration::from_secs(2));
    let delivered_now = pf.sink().messages();
    assert_eq!(
        delivered_now.len(),
        expected,
        "count in {expected}, count out {}:\n{}",
        delivered_now.len(),
        pf.diag()
    );
    let subjects: BTreeSet<String> = delivered
        .iter()
        .map(|m| {
            m.header_values("Subject")
                .first()
                .cloned()
                .unwrap_or_default()
        })
        .collect();
    assert_eq!(subjects.len(), expected, "duplicates delivered");
    for tag in &accepted {
        assert!(subjects.contains(tag), "{tag} accepted but not delivered");
    }
    for m in &delivered_now {
        let results = dkimpy::verify(&m.data, &keys.dns());
        assert!(
            results.len() == 2 && results.iter().all(|r| r.pass),
            "delivered unsigned or badly signed: {}",
            m.header_text()
        );
    }
    // Nothing that arrived while rmilter was down was delivered before the restart unsigned.
    for m in &before_restart {
        assert_eq!(
            dkimpy::verify(&m.data, &keys.dns()).len(),
            2,
            "{}",
            m.header_text()
        );
    }
    drop(daemon);
}
