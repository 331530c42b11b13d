//! The daemon as administrators run it: the `rmilter run` process, its
//! first log line, SIGHUP reload (good and bad), SIGTERM with a message
//! in progress, and the report store flushed before exit.

mod common;

use common::daemon::{Daemon, free_port};
use common::drive::{self, Envelope};
use common::keys::TestKeys;
use common::{dkim_tag, message};
use rmilter::config::KeyAlgorithm;

#[test]
fn embedded_defaults_are_announced_and_sigterm_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("rmilter.sock");
    let listen = format!("unix:{}", sock.display());
    let mut daemon = Daemon::start(&["--listen", &listen]);
    daemon.wait_log("rmilter started", 1);
    let first = daemon.lines()[0].clone();
    if std::path::Path::new(rmilter::cli::DEFAULT_CONFIG).exists() {
        assert!(first.contains("configuration loaded"), "{first}");
    } else {
        assert!(
            first.contains(
                "no configuration file: running on embedded defaults (verify only, no signing keys)"
            ),
            "first log line: {first}"
        );
    }
    assert!(sock.exists());
    daemon.signal("TERM");
    let status = daemon.wait_exit();
    assert!(status.success(), "exit status {status}");
    assert!(!sock.exists(), "socket removed at exit");
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_reloads_and_a_bad_reload_keeps_the_old_configuration() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let k1 = rmilter::keys::generate(
        dir.path(),
        "example.com",
        "one",
        rmilter::config::KeyAlgorithm::Ed25519,
        0,
    )
    .unwrap();
    let k2 = rmilter::keys::generate(
        dir.path(),
        "example.com",
        "two",
        rmilter::config::KeyAlgorithm::Ed25519,
        0,
    )
    .unwrap();
    let port = free_port();
    let config = dir.path().join("rmilter.toml");
    let key = |p: &std::path::Path, s: &str| {
        format!(
            "[[key]]\ndomain = \"example.com\"\nselector = \"{s}\"\nfile = \"{}\"\n",
            p.display()
        )
    };
    let base = format!(
        "listen = \"inet:127.0.0.1:{port}\"\n{}",
        key(&k1.path, "one")
    );
    std::fs::write(&config, &base).unwrap();
    let daemon = Daemon::start(&["-c", config.to_str().unwrap()]);
    daemon.wait_log("rmilter started", 1);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let selectors = || async {
        let out = drive::drive(
            addr,
            &Envelope::authenticated("alice"),
            &message("alice@example.com", "r", "b\r\n"),
        )
        .await;
        let mut s: Vec<String> = out
            .inserted("DKIM-Signature")
            .iter()
            .map(|v| dkim_tag(v, "s").unwrap())
            .collect();
        s.sort();
        s
    };
    assert_eq!(selectors().await, ["one"]);

    // A good reload adds the second key.
    std::fs::write(&config, format!("{base}{}", key(&k2.path, "two"))).unwrap();
    daemon.signal("HUP");
    daemon.wait_log("configuration reloaded", 1);
    assert_eq!(selectors().await, ["one", "two"]);

    // Bad reloads are refused with the reason; the old keys keep signing.
    std::fs::write(
        &config,
        format!("{base}{}\nbogus = 1\n", key(&k2.path, "two")),
    )
    .unwrap();
    daemon.signal("HUP");
    daemon.wait_log("reload refused", 1);
    assert!(
        daemon
            .lines()
            .iter()
            .any(|l| l.contains("unknown field `bogus`")),
        "{:?}",
        daemon.lines()
    );
    assert_eq!(selectors().await, ["one", "two"]);

    std::fs::write(&config, format!("{base}{}", key(&k2.path, "two"))).unwrap();
    std::fs::set_permissions(&k2.path, std::fs::Permissions::from_mode(0o644)).unwrap();
    daemon.signal("HUP");
    daemon.wait_log("reload refused", 2);
    assert!(
        daemon
            .lines()
            .iter()
            .any(|l| l.contains("readable by every user"))
    );
    assert_eq!(selectors().await, ["one", "two"]);

    // Deleting a key file after it was loaded does not stop signing.
    std::fs::remove_file(&k1.path).unwrap();
    assert_eq!(selectors().await, ["one", "two"]);
}

/// rmilter with one Ed25519 key on an inet port, for the reload tests.
struct OneKeySite {
    keys: TestKeys,
    port: u16,
    config: std::path::PathBuf,
    base: String,
    daemon: Daemon,
}

impl OneKeySite {
    fn start() -> OneKeySite {
        let keys = TestKeys::new(&[("example.com", "one", KeyAlgorithm::Ed25519)]);
        let port = free_port();
        let config = keys.dir.path().join("rmilter.toml");
        let base = format!("listen = \"inet:127.0.0.1:{port}\"\n{}", keys.toml());
        std::fs::write(&config, &base).unwrap();
        let daemon = Daemon::start(&["-c", config.to_str().unwrap()]);
        daemon.wait_log("rmilter ready", 1);
        OneKeySite {
            keys,
            port,
            config,
            base,
            daemon,
        }
    }

    /// Point `sender_login_maps` at a FIFO nobody writes to yet and send
    /// SIGHUP: the reload then waits in open(2) for a writer.
    fn reload_onto_fifo(&self) -> std::path::PathBuf {
        let fifo = self.keys.dir.path().join("sender_login");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        std::fs::write(
            &self.config,
            format!(
                "{}[signing.logins]\nenabled = true\nsender_login_maps = \"{}\"\n",
                self.base,
                fifo.display()
            ),
        )
        .unwrap();
        self.daemon.signal("HUP");
        fifo
    }
}

/// SIGTERM while a reload is stuck reading a file (a FIFO nobody writes to,
/// as a key or map file on a hung network mount would be): rmilter stops
/// anyway, and does not leave the MTA waiting for systemd's kill timeout.
#[test]
fn sigterm_does_not_wait_for_a_stuck_reload() {
    let mut site = OneKeySite::start();
    site.reload_onto_fifo();
    let daemon = &mut site.daemon;
    // Wait until a thread of rmilter is blocked opening the FIFO.
    let tasks = format!("/proc/{}/task", daemon.pid());
    let opening = || {
        std::fs::read_dir(&tasks)
            .into_iter()
            .flatten()
            .flatten()
            .any(|t| {
                std::fs::read_to_string(t.path().join("wchan"))
                    .is_ok_and(|w| w == "wait_for_partner")
            })
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !opening() {
        assert!(
            std::time::Instant::now() < deadline,
            "the reload never opened the FIFO"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    daemon.signal("TERM");
    let status = daemon.wait_exit();
    assert!(status.success(), "exit {status}");
    daemon.wait_log("the reload still in progress is abandoned", 1);
    assert_eq!(daemon.count("configuration reloaded"), 0);
}

/// A reload runs beside the milter sessions, not in their way: while one
/// is held reading a file (here a FIFO nobody writes to yet), messages are
/// still signed with the running configuration.
#[tokio::test(flavor = "multi_thread")]
async fn mail_is_signed_while_a_reload_is_reading() {
    let site = OneKeySite::start();
    let daemon = &site.daemon;
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", site.port).parse().unwrap();
    let signed = || async {
        let out = drive::drive(
            addr,
            &Envelope::authenticated("alice"),
            &message("alice@example.com", "r", "b\r\n"),
        )
        .await;
        out.inserted("DKIM-Signature").len()
    };
    assert_eq!(signed().await, 1);

    let fifo = site.reload_onto_fifo();
    // The reload now waits for a writer on the FIFO; mail goes on.
    for _ in 0..3 {
        let sent = tokio::time::timeout(std::time::Duration::from_secs(10), signed()).await;
        assert_eq!(sent.ok(), Some(1), "a message waited for the reload");
    }
    assert!(
        !daemon
            .lines()
            .iter()
            .any(|l| l.contains("configuration reloaded")),
        "the reload did not wait for the FIFO"
    );
    let writer = std::thread::spawn(move || {
        std::fs::write(&fifo, "alice@example.com alice\n").unwrap();
    });
    daemon.wait_log("configuration reloaded", 1);
    writer.join().unwrap();
    assert_eq!(signed().await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_finishes_the_message_in_progress() {
    use indymilter::{MacroStage, ProtoOpts};
    use indymilter_test::Status;
    let dir = tempfile::tempdir().unwrap();
    let key = rmilter::keys::generate(
        dir.path(),
        "example.com",
        "ed",
        rmilter::config::KeyAlgorithm::Ed25519,
        0,
    )
    .unwrap();
    let port = free_port();
    let mut daemon = Daemon::start(&[
        "--listen",
        &format!("inet:127.0.0.1:{port}"),
        "--key",
        &format!("example.com:ed:{}", key.path.display()),
    ]);
    daemon.wait_log("rmilter started", 1);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let env = Envelope::authenticated("alice");
    // The MTA side offers every option but "no reply at MAIL": the answer
    // to MAIL then shows that rmilter has begun the message before the
    // signal is sent (with no replies at all, nothing orders the two).
    let mut conn = indymilter_test::TestConnection::configure()
        .exact_leading_space(true)
        .read_timeout(std::time::Duration::from_secs(20))
        .available_opts(ProtoOpts::all() - ProtoOpts::NOREPLY_MAIL)
        .open_tcp(addr)
        .await
        .expect("connect to milter");
    drive::connect(&mut conn, &env).await;
    conn.macros(MacroStage::Mail, [("{auth_authen}", "alice")])
        .await
        .unwrap();
    assert_eq!(
        conn.mail(["<alice@example.com>"]).await.unwrap(),
        Status::Continue
    );
    conn.header("From", " alice@example.com").await.unwrap();
    conn.header("Subject", " in flight").await.unwrap();
    assert_eq!(conn.eoh().await.unwrap(), Status::Noreply);
    conn.body("first half\r\n").await.unwrap();

    daemon.signal("TERM");
    daemon.wait_log("waiting for messages in progress", 1);
    // No new connections once stopping.
    let refused = tokio::net::TcpStream::connect(addr).await;
    assert!(refused.is_err(), "new connection accepted while stopping");
    // The message in progress completes and is signed.
    conn.body("second half\r\n").await.unwrap();
    let (actions, status) = conn.eom().await.unwrap();
    assert_eq!(status, Status::Continue);
    assert!(actions.has_insert_header(0, "DKIM-Signature", indymilter_test::any()));
    let status = daemon.wait_exit();
    assert!(status.success(), "exit {status}");
}

/// RELIABILITY §8 case 28 (O2): many good reloads while mail flows. Every
/// message finishes with a valid signature, no reload is refused, the
/// daemon keeps running.
#[tokio::test(flavor = "multi_thread")]
async fn a_hundred_reloads_under_load() {
    let dir = tempfile::tempdir().unwrap();
    let key = rmilter::keys::generate(
        dir.path(),
        "example.com",
        "ed",
        rmilter::config::KeyAlgorithm::Ed25519,
        0,
    )
    .unwrap();
    let port = free_port();
    let config = dir.path().join("rmilter.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"inet:127.0.0.1:{port}\"\n[[key]]\ndomain = \"example.com\"\nselector = \"ed\"\nfile = \"{}\"\n",
            key.path.display()
        ),
    )
    .unwrap();
    let mut daemon = Daemon::start(&["-c", config.to_str().unwrap()]);
    daemon.wait_log("rmilter started", 1);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let senders: Vec<_> = (0..4)
        .map(|n| {
            tokio::spawn(async move {
                let env = Envelope::authenticated("alice");
                let mut conn = drive::open(addr).await;
                drive::connect(&mut conn, &env).await;
                let mut signed = 0;
                for i in 0..50 {
                    let raw = message("alice@example.com", &format!("reload {n}-{i}"), "x\r\n");
                    let out = drive::send_message(&mut conn, &env, &raw).await;
                    if out.status == indymilter_test::Status::Continue
                        && out.inserted("DKIM-Signature").len() == 1
                    {
                        signed += 1;
                    }
                }
                conn.close().await.unwrap();
                signed
            })
        })
        .collect();
    let pid = daemon.pid();
    let hup = std::thread::spawn(move || {
        for _ in 0..100 {
            let _ = std::process::Command::new("kill")
                .args(["-HUP", &pid.to_string()])
                .status();
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    });
    let mut total = 0;
    for s in senders {
        total += s.await.unwrap();
    }
    hup.join().unwrap();
    assert_eq!(total, 200, "every message signed across the reloads");
    // Signals that arrive together are one reload; many happened, none failed.
    daemon.wait_log("configuration reloaded", 20);
    assert!(
        !daemon.lines().iter().any(|l| l.contains("reload refused")),
        "{:?}",
        daemon.lines()
    );
    daemon.signal("TERM");
    assert!(daemon.wait_exit().success());
}

/// The report store writer gathers records before each transaction; a
/// SIGTERM right after a message must still leave its record in the store.
#[tokio::test(flavor = "multi_thread")]
async fn evaluation_records_reach_the_store_before_exit() {
    let dns = common::dns::TestDns::start(
        common::dns::Zone::new()
            .txt("sender.example", "v=spf1 ip4:192.0.2.2 -all")
            .txt("_dmarc.sender.example", "v=DMARC1; p=none"),
    );
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let store = dir.path().join("reports.db");
    let config = dir.path().join("rmilter.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"inet:127.0.0.1:{port}\"\nauthserv_id = \"mx.example.org\"\n\
             [dns]\nnameservers = [\"{}\"]\ntimeout = \"1s\"\nattempts = 1\n\
             [report]\nenabled = true\nstore = \"{}\"\nreporting_domain = \"example.org\"\n",
            dns.addr(),
            store.display()
        ),
    )
    .unwrap();
    let mut daemon = Daemon::start(&["-c", config.to_str().unwrap()]);
    daemon.wait_log("rmilter ready", 1);
    let mut env = Envelope::inbound();
    env.client_addr = "192.0.2.2:40000".parse().unwrap();
    env.mail_from = "<sam@sender.example>".into();
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    for i in 0..3 {
        let raw = message("sam@sender.example", &format!("last words {i}"), "x\r\n");
        let out = drive::drive(addr, &env, &raw).await;
        assert_eq!(out.status, indymilter_test::Status::Continue);
    }
    daemon.signal("TERM");
    assert!(daemon.wait_exit().success());
    let db = rusqlite::Connection::open(&store).unwrap();
    let count: i64 = db
        .query_row(
            "SELECT COALESCE(SUM(count), 0) FROM report_rows WHERE policy_domain = 'sender.example'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(count, 3, "records lost at shutdown");
}

/// Running out of file descriptors does not stop the milter: the failed
/// accept is logged, accepting pauses, and mail is signed again once
/// descriptors are free.
#[tokio::test(flavor = "multi_thread")]
async fn no_file_descriptors_left_pauses_accepting_and_mail_goes_on() {
    let keys = TestKeys::new(&[("example.com", "one", KeyAlgorithm::Ed25519)]);
    let port = free_port();
    let config = keys.dir.path().join("rmilter.toml");
    std::fs::write(
        &config,
        format!("listen = \"inet:127.0.0.1:{port}\"\n{}", keys.toml()),
    )
    .unwrap();
    let daemon = Daemon::start(&["-c", config.to_str().unwrap()]);
    daemon.wait_log("rmilter started", 1);
    let pid = daemon.pid();
    let open = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    let limit = |n: usize| {
        let status = std::process::Command::new("prlimit")
            .args(["--pid", &pid.to_string(), &format!("--nofile={n}:")])
            .status()
            .unwrap();
        assert!(status.success(), "prlimit failed");
    };
    // Room for two connections, then ten clients.
    limit(open + 2);
    let clients: Vec<_> = (0..10)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    daemon.wait_log("cannot accept a milter connection", 1);
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    assert!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_ok(),
        "rmilter stopped: {:?}",
        daemon.lines()
    );
    drop(clients);
    limit(1024);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        drive::drive(
            addr,
            &Envelope::authenticated("alice"),
            &message("alice@example.com", "r", "b\r\n"),
        ),
    )
    .await
    .expect("no answer after the descriptors were freed");
    assert_eq!(out.inserted("DKIM-Signature").len(), 1);
}
