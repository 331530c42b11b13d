//! Report store failure (RELIABILITY §8 G case 30, X6): the store on a small
//! tmpfs that is locked by another process, remounted read-only and filled
//! up. Mail through the real milter keeps flowing at full speed, the
//! dropped-record counter increases, nothing is corrupted, and writing
//! resumes when the fault is gone. Needs root (mount).

mod common;

use common::dns::{TestDns, Zone};
use common::drive::{self, Envelope};
use common::keys::TestKeys;
use common::milter::TestMilter;
use common::sign::{SignOptions, sign};
use indymilter_test::Status;
use rmilter::config::{KeyAlgorithm, Overrides, Source};
use rmilter::report::EvaluationSink;
use rmilter::report::sink::StoreSink;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

const OUTSIDE: &str = "198.51.100.7";

struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let st = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .status()
            .unwrap();
        assert!(
            st.success(),
            "mount tmpfs (the store fault test needs root)"
        );
        Tmpfs(dir.to_path_buf())
    }

    fn remount(&self, mode: &str) {
        // A file still open for writing makes a read-only remount busy.
        for _ in 0..50 {
            let st = Command::new("mount")
                .args(["-o", &format!("remount,{mode}")])
                .arg(&self.0)
                .status()
                .unwrap();
            if st.success() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("cannot remount {} {mode}", self.0.display());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

struct World {
    _dns: TestDns,
    keys: TestKeys,
    milter: TestMilter,
    sink: Arc<StoreSink>,
    rt: tokio::runtime::Runtime,
    sent: usize,
}

impl World {
    /// Send `n` messages; each must be accepted promptly whatever the store does.
    fn send(&mut self, n: usize) {
        for _ in 0..n {
            self.sent += 1;
            let raw = sign(
                &self.keys.keys[0],
                &common::message(
                    "Alice <alice@sender.example>",
                    &format!("m{}", self.sent),
                    "x\r\n",
                ),
                &SignOptions::default(),
            );
            let env = Envelope {
                mail_from: "<alice@sender.example>".into(),
                client_addr: (OUTSIDE.parse::<std::net::Ipv4Addr>().unwrap(), 40000).into(),
                ..Envelope::inbound()
            };
            let start = Instant::now();
            let out = self
                .rt
                .block_on(drive::drive(self.milter.inet_addr(), &env, &raw));
            assert_eq!(out.status, Status::Continue);
            assert!(
                start.elapsed() < Duration::from_secs(3),
                "mail held up: {:?}",
                start.elapsed()
            );
        }
    }

    fn wait(&self, what: &str, done: impl Fn(&StoreSink) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !done(&self.sink) {
            assert!(
                Instant::now() < deadline,
                "{what}: received {} written {} dropped {}",
                self.sink.stats().received(),
                self.sink.stats().written(),
                self.sink.stats().dropped()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn store_faults_never_hold_up_mail_and_writing_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = Tmpfs::mount(&dir.path().join("store"), "512k");
    let db = mnt.0.join("reports.db");
    let keys = TestKeys::new(&[("sender.example", "ed", KeyAlgorithm::Ed25519)]);
    let mut zone = Zone::new()
        .a("sender.example", OUTSIDE.parse().unwrap())
        .txt("sender.example", "v=spf1 ip4:198.51.100.7 -all")
        .txt(
            "_dmarc.sender.example",
            "v=DMARC1; p=reject; rua=mailto:d@sender.example",
        );
    for (name, value) in keys.dns() {
        zone = zone.txt(&name, &value);
    }
    let dns = TestDns::start(zone);
    let toml = format!(
        "authserv_id = \"mx.example.org\"\n[outbound]\nnetworks = []\n[dns]\nnameservers = [\"{}\"]\ntimeout = \"1s\"\nattempts = 1\n[report]\nenabled = true\nstore = \"{}\"\n",
        dns.addr(),
        db.display()
    );
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
    let milter = TestMilter::start_with(
        rmilter::runtime::Runtime::from_config(config).unwrap(),
        sink.clone(),
    );
    let mut w = World {
        _dns: dns,
        keys,
        milter,
        sink,
        rt: tokio::runtime::Runtime::new().unwrap(),
        sent: 0,
    };

    // Normal operation: the store is created on first use.
    w.send(2);
    w.wait("first writes", |s| s.stats().written() == 2);
    assert!(db.exists());

    // Locked: another process holds an exclusive transaction.
    let locker = rusqlite::Connection::open(&db).unwrap();
    locker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    w.send(3);
    w.wait("dropped while locked", |s| s.stats().dropped() >= 1);
    locker.execute_batch("COMMIT").unwrap();
    drop(locker);

    w.wait("writer idle", |s| {
        s.stats().written() + s.stats().dropped() == 5
    });
    let dropped_locked = w.sink.stats().dropped();

    // Read-only: a short lock makes the writer let go of its connection
    // (an open file keeps a read-only remount busy); the file system then
    // goes read-only before the next record arrives.
    let locker = rusqlite::Connection::open(&db).unwrap();
    locker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    w.send(1);
    w.wait("dropped while locked again", |s| {
        s.stats().dropped() > dropped_locked
    });
    locker.execute_batch("COMMIT").unwrap();
    drop(locker);
    let dropped_locked = w.sink.stats().dropped();
    mnt.remount("ro");
    w.send(2);
    w.wait("dropped while read-only", |s| {
        s.stats().dropped() > dropped_locked
    });
    mnt.remount("rw");
    let written = w.sink.stats().written();
    let sent = w.sent as u64;
    w.wait("writer idle", |s| {
        s.stats().written() + s.stats().dropped() == sent
    });
    std::thread::sleep(Duration::from_millis(700));
    w.send(2);
    w.wait("resumed after read-only", |s| {
        s.stats().written() >= written + 2
    });

    // Full disk (SQLITE_FULL): fill the tmpfs.
    let filler = mnt.0.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 4096];
        while f.write_all(&block).is_ok() {}
        let _ = f.sync_all();
    }
    let dropped_before = w.sink.stats().dropped();
    let mut rounds = 0;
    while w.sink.stats().dropped() == dropped_before {
        // Each round adds new rows (new source addresses would do too;
        // new subjects are enough as every message is one row update that
        // grows the WAL).
        w.send(2);
        std::thread::sleep(Duration::from_millis(600));
        rounds += 1;
        assert!(rounds < 30, "no write failed on a full disk");
    }
    std::fs::remove_file(&filler).unwrap();
    let written = w.sink.stats().written();
    w.wait("writer idle", |s| {
        s.stats().written() + s.stats().dropped() == w.sent as u64
    });
    std::thread::sleep(Duration::from_millis(700));
    w.send(3);
    w.wait("resumed after full disk", |s| {
        s.stats().written() >= written + 3
    });

    // Every record was either written or dropped and counted; the store is
    // intact and holds exactly the written ones.
    let stats = w.sink.stats();
    assert_eq!(stats.written() + stats.dropped(), w.sent as u64);
    assert!(stats.dropped() >= 3);
    let check = rusqlite::Connection::open(&db).unwrap();
    let ok: String = check
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
    let stored: i64 = check
        .query_row("SELECT SUM(count) FROM report_rows", [], |r| r.get(0))
        .unwrap();
    assert_eq!(stored as u64, stats.written());
    drop(check);
    drop(w);
}

/// The queue holds report rows, not messages: with room for one row,
/// a thousand evaluations of that row are all written and none dropped
/// (a queue of evaluations would have dropped all but the first of each
/// 100 ms window).
#[test]
fn evaluations_of_a_waiting_row_are_never_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "authserv_id = \"mx.example.org\"\n[report]\nenabled = true\nstore = \"{}\"\nqueue_size = 1\n",
        dir.path().join("reports.db").display()
    );
    let config =
        rmilter::config::from_text(Source::Embedded, &toml, &Overrides::default()).unwrap();
    let sink = StoreSink::start(&config.report);
    let t = common::report::yesterday();
    for _ in 0..1000 {
        sink.record(common::report::evaluation("sender.example", "192.0.2.1", t));
    }
    sink.finish(Duration::from_secs(10));
    let stats = sink.stats();
    assert_eq!(
        (stats.received(), stats.written(), stats.dropped()),
        (1000, 1000, 0)
    );
    let db = rusqlite::Connection::open(dir.path().join("reports.db")).unwrap();
    let (rows, count): (i64, i64) = db
        .query_row("SELECT COUNT(*), SUM(count) FROM report_rows", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!((rows, count), (1, 1000));
}

/// Folding evaluations into rows: a known row always counts, a new row
/// beyond the limit is refused, and the newest policy is the one kept.
#[test]
fn gathered_rows_count_evaluations_and_respect_the_limit() {
    use rmilter::report::sink::{Gathered, addition};
    let t = common::report::yesterday();
    let a = common::report::evaluation("sender.example", "192.0.2.1", t);
    let mut newer = a.clone();
    newer.time = t + Duration::from_secs(60);
    newer.policy.as_mut().unwrap().p = "quarantine";
    let b = common::report::evaluation("sender.example", "192.0.2.2", t);
    let mut g = Gathered::default();
    assert!(g.add(addition(&a, 86_400).unwrap(), 1));
    assert!(
        !g.add(addition(&b, 86_400).unwrap(), 1),
        "a second row beyond the limit"
    );
    assert!(
        g.add(addition(&newer, 86_400).unwrap(), 1),
        "the same row counts"
    );
    let out = g.into_additions();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].count, 2);
    assert_eq!(out[0].policy.p, "quarantine");
    assert_eq!(out[0].row.source_ip, "192.0.2.1");
}
