//! The milter transport through a real Postfix: messages sent one at a
//! time, one SMTP session each, to two Postfix instances that differ only
//! in how they reach rmilter (an inet socket, a unix socket). Postfix never
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
    Postfix::start(PostfixConfig {
        sasl_users: vec![("alice".into(), "wonderland".into())],
        extra_main_cf: vec![("relay_domains".into(), "example.org".into())],
        ..PostfixConfig::with_milters(&milter.postfix_spec())
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
    let pf_unix = postfix_for(&unix);
    let pf_inet = postfix_for(&inet);

    send(&pf_unix, 0);
    send(&pf_inet, 0);
    let (mut t_unix, mut t_inet) = (Vec::new(), Vec::new());
    // Interleaved, so that load from elsewhere on the machine falls on both.
    for round in 1..=ROUNDS {
        t_unix.push(send(&pf_unix, round));
        t_inet.push(send(&pf_inet, round));
    }
    assert_eq!(pf_unix.sink().wait_for(ROUNDS + 1, WAIT).len(), ROUNDS + 1);
    assert_eq!(pf_inet.sink().wait_for(ROUNDS + 1, WAIT).len(), ROUNDS + 1);
    for m in pf_inet.sink().messages() {
        let text = m.header_text();
        assert!(
            text.contains("DKIM-Signature:") || text.contains("Authentication-Results:"),
            "the milter did not see this message:\n{text}"
        );
    }

    let (m_unix, m_inet) = (quickest(&t_unix), quickest(&t_inet));
    eprintln!("per message, quickest: unix {m_unix:?}, inet {m_inet:?}");
    eprintln!("unix: {t_unix:?}\ninet: {t_inet:?}");
    // A delayed-ACK stall adds 40 ms or more to every message over TCP,
    // several times what a whole session takes over the unix socket.
    assert!(
        m_inet.as_secs_f64() <= 2.0 * m_unix.as_secs_f64(),
        "one message at a time takes {m_inet:?} over inet against {m_unix:?} over unix \
         (quickest of {ROUNDS}): a transport stall on the TCP milter socket"
    );
}
