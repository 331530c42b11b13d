//! The milter transport through a real Postfix: messages sent one at a
//! time, one SMTP session each, to three Postfix instances that differ only
//! in how they reach rmilter (a unix, an inet and an inet6 socket). Postfix never
//! sets `TCP_NODELAY` on its milter connections, so without care on
//! rmilter's side every batch of "no reply" milter packets waits for a
//! delayed ACK (40 ms on Linux) on TCP and not on a unix socket. Speed is
//! compared as a ratio within one run, never as an absolute time.

mod common;

use common::dns::{TestDns, Zone};
use common::keys::TestKeys;
use common::milter::TestMilter;
use common::postfix::{Postfix, PostfixConfig};
use common::smtp::{Client, Submission};
use rmilter::config::KeyAlgorithm;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(30);
/// Messages per transport (after one warm-up message each).
const ROUNDS: usize = 16;

fn milter_config(keys: &TestKeys, dns: &TestDns) -> String {
    format!(
        "authserv_id = \"mx.example.org\"\n[outbound]\nnetworks = []\n[dns]\nnameservers = [\"{}\"]\ntimeout = \"1s\"\nattempts = 1\n{}",
        dns.addr(),
        keys.toml()
    )
}

fn postfix_for(milter: &TestMilter) -> Postfix {
    let spec = match &milter.listen {
        // Postfix's spelling of an IPv6 milter address.
        rmilter::config::ListenAddr::Inet(std::net::SocketAddr::V6(a)) => {
            format!("inet:[{}]:{}", a.ip(), a.port())
        }
        _ => milter.postfix_spec(),
    };
    Postfix::start(PostfixConfig {
        sasl_users: vec![("alice".into(), "wonderland".into())],
        extra_main_cf: vec![
            ("relay_domains".into(), "example.org".into()),
            // smtpd still listens on 127.0.0.1 only; this lets it reach ::1.
            ("inet_protocols".into(), "all".into()),
        ],
        ..PostfixConfig::with_milters(&spec)
    })
}

/// A 2 KB message, like the benchmark's.
fn mail(tag: &str) -> Vec<u8> {
    let line = "The quick brown fox jumps over the lazy dog, once more.\r\n";
    common::message("Alice <alice@example.com>", tag, &line.repeat(36))
}

/// One message in its own SMTP session; how long the session took.
/// Even rounds are signed (an authenticated client), odd ones verified
/// (an outside client), so both directions' milter stages are crossed.
fn send(pf: &Postfix, round: usize) -> Duration {
    let client = if round.is_multiple_of(2) {
        Client::authenticated("alice", "wonderland")
    } else {
        Client::external("198.51.100.7", "mail.elsewhere.example")
    };
    let s = Submission::new(
        client,
        "alice@example.com",
        &["bob@example.org"],
        &mail(&format!("round {round}")),
    );
    let start = Instant::now();
    let out = pf.submit(&s);
    let took = start.elapsed();
    assert!(out.accepted(), "round {round}: {out:?}\n{}", pf.diag());
    took
}

/// The quickest of the rounds: what a message costs when nothing else on
/// the machine gets in the way. Load from elsewhere only adds time, while
/// a transport stall adds its 40 ms to every message, the quickest too.
fn quickest(v: &[Duration]) -> Duration {
    v.iter().copied().min().unwrap_or_default()
}

#[test]
fn one_message_at_a_time_is_as_quick_over_inet_as_over_unix() {
    let keys = TestKeys::new(&[("example.com", "ed", KeyAlgorithm::Ed25519)]);
    let dns = TestDns::start(Zone::new());
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let sock = dir.path().join("rmilter.sock");
    let unix = TestMilter::start_toml(&format!(
        "listen = \"unix:{}\"\n{}\n[socket]\nmode = \"0660\"\ngroup = \"postfix\"\n",
        sock.display(),
        milter_config(&keys, &dns)
    ));
    let inet = TestMilter::start_toml(&milter_config(&keys, &dns));
    assert!(inet.postfix_spec().starts_with("inet:"));
    let inet6 = TestMilter::start_toml(&format!(
        "listen = \"inet6:[::1]:0\"\n{}",
        milter_config(&keys, &dns)
    ));
    let pf_unix = postfix_for(&unix);
    let pf_inet = postfix_for(&inet);
    let pf_inet6 = postfix_for(&inet6);

    let all = [("unix", &pf_unix), ("inet", &pf_inet), ("inet6", &pf_inet6)];
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); all.len()];
    for (_, pf) in &all {
        send(pf, 0);
    }
    // Interleaved, so that load from elsewhere on the machine falls on all.
    for round in 1..=ROUNDS {
        for (i, (_, pf)) in all.iter().enumerate() {
            times[i].push(send(pf, round));
        }
    }
    for (name, pf) in &all {
        let delivered = pf.sink().wait_for(ROUNDS + 1, WAIT);
        assert_eq!(delivered.len(), ROUNDS + 1, "{name}: {}", pf.diag());
        for m in delivered {
            let text = m.header_text();
            assert!(
                text.contains("DKIM-Signature:") || text.contains("Authentication-Results:"),
                "{name}: the milter did not see this message:\n{text}"
            );
        }
    }

    let unix_best = quickest(&times[0]);
    let mut stalled = Vec::new();
    for (i, (name, _)) in all.iter().enumerate().skip(1) {
        let best = quickest(&times[i]);
        eprintln!("per message, quickest: unix {unix_best:?}, {name} {best:?}");
        eprintln!("unix: {:?}\n{name}: {:?}", times[0], times[i]);
        // A delayed-ACK stall adds 40 ms or more to every message over TCP,
        // several times what a whole session takes over the unix socket.
        if best.as_secs_f64() > 2.0 * unix_best.as_secs_f64() {
            stalled.push(format!("{best:?} over {name}"));
        }
    }
    assert!(
        stalled.is_empty(),
        "one message at a time takes {} against {unix_best:?} over unix (quickest of {ROUNDS}): \
         a transport stall on the TCP milter socket",
        stalled.join(" and ")
    );
}
