//! Resource bounds and hostile peers (RELIABILITY §8 F): garbage on the
//! wire, header bombs, a message larger than 100 MB with bounded memory and
//! no DMARC size bypass, idle connections and slow writers. Every case also
//! checks that another session is served normally meanwhile.

mod common;

use common::dns::{TestDns, Zone};
use common::drive::{self, Envelope};
use common::keys::TestKeys;
use common::milter::TestMilter;
use common::sign::{SignOptions, sign};
use indymilter_test::Status;
use rmilter::config::KeyAlgorithm;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

fn world() -> (TestDns, TestKeys) {
    let keys = TestKeys::new(&[("sender.example", "ed", KeyAlgorithm::Ed25519)]);
    let mut zone = Zone::new()
        .txt("sender.example", "v=spf1 ip4:192.0.2.2 -all")
        .txt("_dmarc.sender.example", "v=DMARC1; p=reject");
    for (name, value) in keys.dns() {
        zone = zone.txt(&name, &value);
    }
    (TestDns::start(zone), keys)
}

fn config(dns: &TestDns, extra: &str) -> String {
    format!(
        "authserv_id = \"mx.example.org\"\n{extra}\n[dns]\nnameservers = [\"{}\"]\ntimeout = \"1s\"\nattempts = 1\n",
        dns.addr()
    )
}

fn outside() -> Envelope {
    Envelope {
        client_addr: "203.0.113.66:40000".parse().unwrap(),
        mail_from: "<x@sender.example>".into(),
        ..Envelope::inbound()
    }
}

/// A normal inbound message on its own connection is decided as usual.
async fn still_serving(addr: SocketAddr) {
    let out = drive::drive(
        addr,
        &outside(),
        &common::message("ceo@sender.example", "probe", "x\r\n"),
    )
    .await;
    assert!(
        matches!(out.status, Status::Reject { .. }),
        "other session: {:?}",
        out.status
    );
}

/// Send raw bytes on a fresh connection; true when the server closes it
/// (EOF or reset) within `within`, whatever it answered first.
fn closed_after(addr: SocketAddr, bytes: &[u8], within: Duration) -> bool {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(within)).unwrap();
    let _ = s.write_all(bytes);
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false;
            }
            Err(_) => return true,
        }
    }
}

fn packet(cmd: u8, data: &[u8]) -> Vec<u8> {
    let mut p = ((data.len() + 1) as u32).to_be_bytes().to_vec();
    p.push(cmd);
    p.extend_from_slice(data);
    p
}

/// Negotiation, connect, HELO and MAIL: a transaction in progress.
fn opened() -> Vec<u8> {
    let mut connect = b"client.example\x004".to_vec();
    connect.extend_from_slice(&4000u16.to_be_bytes());
    connect.extend_from_slice(b"192.0.2.9\0");
    [
        optneg(),
        packet(b'C', &connect),
        packet(b'H', b"client.example\0"),
        packet(b'M', b"<a@sender.example>\0"),
    ]
    .concat()
}

/// The option negotiation Postfix sends (protocol 6, all actions and options).
fn optneg() -> Vec<u8> {
    let mut data = Vec::new();
    data.extend_from_slice(&6u32.to_be_bytes());
    data.extend_from_slice(&0x1ffu32.to_be_bytes());
    data.extend_from_slice(&0x1fffffu32.to_be_bytes());
    packet(b'O', &data)
}

#[tokio::test(flavor = "multi_thread")]
async fn garbage_on_the_wire_closes_only_that_connection() {
    let (dns, _) = world();
    let milter = TestMilter::start_toml(&config(&dns, ""));
    let addr = milter.inet_addr();
    let limit = Duration::from_secs(5);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "length prefix 0xFFFFFFFF",
            vec![0xff, 0xff, 0xff, 0xff, b'O'],
        ),
        (
            "length prefix 1 MiB + 1",
            [((1u32 << 20) + 1).to_be_bytes().to_vec(), vec![b'O']].concat(),
        ),
        (
            "unknown command",
            [optneg(), packet(b'Z', b"junk")].concat(),
        ),
        (
            "header without NULs",
            [opened(), packet(b'L', b"From no nul at all")].concat(),
        ),
        (
            "truncated packet then close",
            [optneg(), 100u32.to_be_bytes().to_vec(), b"Mshort".to_vec()].concat(),
        ),
    ];
    for (label, bytes) in cases {
        let started = Instant::now();
        let handle = tokio::task::spawn_blocking(move || closed_after(addr, &bytes, limit));
        still_serving(addr).await;
        let closed = handle.await.unwrap();
        // The truncated packet waits for its missing bytes until the idle
        // timeout; everything else is closed at once.
        if label != "truncated packet then close" {
            assert!(closed, "{label}: connection not closed");
            assert!(started.elapsed() < limit, "{label}");
        }
    }
    assert_eq!(milter.state.in_flight(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn end_of_message_without_headers_is_still_decided() {
    // The protocol lets a peer go from MAIL straight to end of message;
    // such a message still meets the From gate (no From: 550).
    let (dns, _) = world();
    let milter = TestMilter::start_toml(&config(&dns, ""));
    let env = outside();
    let mut conn = drive::open(milter.inet_addr()).await;
    drive::connect(&mut conn, &env).await;
    conn.mail(["<x@sender.example>"]).await.unwrap();
    let (actions, status) = conn.eom().await.unwrap();
    let text = match &status {
        Status::Reject { message: Some(m) } => m.to_string_lossy().into_owned(),
        other => format!("{other:?}"),
    };
    assert!(
        text.starts_with("550 5.7.1 ") && text.contains("no From"),
        "{text}"
    );
    assert!(actions.actions.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn header_bombs_are_refused_with_552() {
    let (dns, _) = world();
    let milter = TestMilter::start_toml(&config(&dns, ""));
    // 100 000 header fields.
    let mut many = String::from("From: ceo@sender.example\r\n");
    for i in 0..100_000 {
        many.push_str(&format!("X-F{i}: v\r\n"));
    }
    many.push_str("\r\nbody\r\n");
    // 10 MB of headers in fields of 100 KB.
    let mut big = String::from("From: ceo@sender.example\r\n");
    let value = "x".repeat(100_000);
    for i in 0..100 {
        big.push_str(&format!("X-Big{i}: {value}\r\n"));
    }
    big.push_str("\r\nbody\r\n");
    for (label, raw) in [("100 000 fields", many), ("10 MB of headers", big)] {
        let out = drive::drive(milter.inet_addr(), &outside(), raw.as_bytes()).await;
        let text = match &out.status {
            Status::Reject { message: Some(m) } => m.to_string_lossy().into_owned(),
            other => format!("{other:?}"),
        };
        assert!(text.starts_with("552 5.3.4 "), "{label}: {text}");
        still_serving(milter.inet_addr()).await;
    }
}

/// A milter that spools every message over 64 KiB into its own directory.
fn spooling_milter(dns: &TestDns) -> (TestMilter, tempfile::TempDir) {
    let spool = tempfile::tempdir().unwrap();
    let milter = TestMilter::start_toml(&config(
        dns,
        &format!(
            "[limits]\nmemory_bytes = 65536\nspool_dir = \"{}\"\n",
            spool.path().display()
        ),
    ));
    (milter, spool)
}

/// Files of this process under `dir` that are open but deleted: the spool.
fn open_deleted_files_in(dir: &std::path::Path) -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| {
            let t = target.to_string_lossy();
            t.starts_with(&*dir.to_string_lossy()) && t.ends_with("(deleted)")
        })
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_120_mb_message_is_spooled_verified_and_never_escapes_dmarc() {
    let (dns, keys) = world();
    let (milter, spool) = spooling_milter(&dns);
    let line =
        "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefghij\r\n";
    let body = line.repeat(120 * 1024 * 1024 / line.len());
    let signed = sign(
        &keys.keys[0],
        &common::message("alice@sender.example", "big", &body),
        &SignOptions::default(),
    );
    let forged = common::message("ceo@sender.example", "big forgery", &body);
    drop(body);
    let addr = milter.inet_addr();
    let env = outside();
    // While the first message streams in, the spool file exists (open,
    // already unlinked, in the configured directory).
    let watcher = {
        let dir = spool.path().to_path_buf();
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline {
                if open_deleted_files_in(&dir) > 0 {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            false
        })
    };
    let out = drive::drive(addr, &env, &signed).await;
    assert_eq!(out.status, Status::Continue, "{:?}", out.status);
    let ar = out.inserted("Authentication-Results")[0].replace("\n\t", " ");
    assert!(
        ar.contains("dkim=pass") && ar.contains("dmarc=pass"),
        "{ar}"
    );
    assert!(
        watcher.join().unwrap(),
        "the message was never spooled to a file"
    );
    assert_eq!(
        open_deleted_files_in(spool.path()),
        0,
        "spool file left open"
    );
    // The forged From of a p=reject domain is rejected whatever its size.
    let out = drive::drive(addr, &env, &forged).await;
    assert!(
        matches!(out.status, Status::Reject { .. }),
        "{:?}",
        out.status
    );
}

/// Spool files of this process under `dir` currently mapped into memory.
fn mapped_spool_files_in(dir: &std::path::Path) -> usize {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let dir = dir.to_string_lossy();
    let mut files: Vec<&str> = maps
        .lines()
        .filter_map(|l| l.find('/').map(|i| &l[i..]))
        .filter(|path| path.starts_with(&*dir) && path.ends_with("(deleted)"))
        .collect();
    files.sort_unstable();
    files.dedup();
    files.len()
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_spooled_messages_are_verified_two_at_a_time() {
    let (dns, keys) = world();
    let (milter, spool) = spooling_milter(&dns);
    let line = "spooled message body line, long enough to add up quickly...........\r\n";
    let body = line.repeat(3 * 1024 * 1024 / line.len());
    let signed = sign(
        &keys.keys[0],
        &common::message("alice@sender.example", "spooled", &body),
        &SignOptions::default(),
    );
    drop(body);
    // Count the mapped spool files while six large messages end at once.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (dir, stop) = (spool.path().to_path_buf(), stop.clone());
        std::thread::spawn(move || {
            let mut most = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                most = most.max(mapped_spool_files_in(&dir));
                std::thread::sleep(Duration::from_millis(1));
            }
            most
        })
    };
    let addr = milter.inet_addr();
    let sends: Vec<_> = (0..6)
        .map(|_| {
            let signed = signed.clone();
            tokio::spawn(async move { drive::drive(addr, &outside(), &signed).await })
        })
        .collect();
    // A small message is not held up by the large ones' turns.
    still_serving(addr).await;
    for send in sends {
        let out = send.await.unwrap();
        assert_eq!(out.status, Status::Continue, "{:?}", out.status);
        let ar = out.inserted("Authentication-Results")[0].replace("\n\t", " ");
        assert!(
            ar.contains("dkim=pass") && ar.contains("dmarc=pass"),
            "{ar}"
        );
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let most = watcher.join().unwrap();
    assert!(most <= 2, "{most} spooled messages were mapped at once");
    assert!(most >= 1, "no spooled message was ever seen mapped");
    assert_eq!(
        open_deleted_files_in(spool.path()),
        0,
        "spool file left open"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn over_the_size_cap_dkim_is_a_temperror_and_forgeries_still_fail() {
    let (dns, keys) = world();
    let milter = TestMilter::start_toml(&config(&dns, "[limits]\nmax_message_bytes = 1048576\n"));
    let body = "y".repeat(78).repeat(20_000).chars().collect::<String>();
    let body: String = body
        .as_bytes()
        .chunks(78)
        .map(|c| format!("{}\r\n", String::from_utf8_lossy(c)))
        .collect();
    let signed = sign(
        &keys.keys[0],
        &common::message("alice@sender.example", "cap", &body),
        &SignOptions::default(),
    );
    let out = drive::drive(milter.inet_addr(), &outside(), &signed).await;
    let text = match &out.status {
        Status::Tempfail { message: Some(m) } => m.to_string_lossy().into_owned(),
        other => format!("{other:?}"),
    };
    assert!(
        text.starts_with("451 4.4.3 "),
        "aligned DKIM unknown: temperror, not a pass: {text}"
    );
    let out = drive::drive(
        milter.inet_addr(),
        &outside(),
        &common::message("ceo@sender.example", "cap", &body),
    )
    .await;
    assert!(
        matches!(out.status, Status::Reject { .. }),
        "unsigned forgery over the cap: {:?}",
        out.status
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_and_slow_connections_are_closed_at_the_timeout() {
    let (dns, _) = world();
    let milter = TestMilter::start_toml(&config(
        &dns,
        "[limits]\nmax_connections = 3\nidle_timeout = \"2s\"\n",
    ));
    let addr = milter.inet_addr();
    // Fill every connection slot with idle peers.
    let idle: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(addr).unwrap()).collect();
    // A slow writer: one byte of a packet every 500 ms.
    let slow = std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        for b in optneg() {
            if s.write_all(&[b]).is_err() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        false
    });
    // A real session waits for a slot and is served once the idle peers
    // are closed (after about 2 s, not libmilter's 2 hours).
    let started = Instant::now();
    still_serving(addr).await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1500),
        "served before the idle peers timed out: {waited:?}"
    );
    for mut s in idle {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 1];
        assert!(
            matches!(s.read(&mut buf), Ok(0) | Err(_)),
            "idle peer still open"
        );
    }
    assert!(slow.join().unwrap(), "slow writer never cut off");
}

/// More signatures than `verify.max_signatures` on a message over the size
/// cap: the body hashes cannot be judged from the truncated body, so the
/// genuine aligned signatures are a temperror (451), never a failure that
/// rejects genuine mail for its size.
#[tokio::test(flavor = "multi_thread")]
async fn over_the_size_cap_many_signatures_are_not_failed_on_the_cut_body() {
    let (dns, keys) = world();
    let milter = TestMilter::start_toml(&config(&dns, "[limits]\nmax_message_bytes = 1048576\n"));
    let body: String = "y"
        .repeat(78 * 20_000)
        .as_bytes()
        .chunks(78)
        .map(|c| format!("{}\r\n", String::from_utf8_lossy(c)))
        .collect();
    let mut signed = common::message("alice@sender.example", "cap", &body);
    for _ in 0..6 {
        signed = sign(&keys.keys[0], &signed, &SignOptions::default());
    }
    let out = drive::drive(milter.inet_addr(), &outside(), &signed).await;
    let text = match &out.status {
        Status::Tempfail { message: Some(m) } => m.to_string_lossy().into_owned(),
        other => format!("{other:?}"),
    };
    assert!(
        text.starts_with("451 4.4.3 "),
        "six genuine signatures over the size cap: {text}"
    );
}
