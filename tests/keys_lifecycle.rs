//! Key rotation as an administrator does it, with the real `rmilter`
//! binary, a real DNS server on loopback and dkimpy as the independent
//! verifier: rotate → check fails until the record is published → activate
//! (the running daemon reloads through its pid file) → mail signed with the
//! new selector verifies → retire → the old selector is no longer used,
//! while a stream of messages keeps flowing and every one of them carries
//! only valid signatures. Plus the reload plumbing (pid file) and key
//! directory safety.

mod common;

use common::daemon::{Daemon, free_port};
use common::dkimpy;
use common::dns::{TestDns, Zone};
use common::drive::{self, Envelope};
use common::{dkim_tag, message};
use serde_json::Value;
use std::net::SocketAddr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A mail domain: a config with one managed domain, its DNS zone on a
/// loopback server, and the rmilter commands run against them.
struct Site {
    dir: tempfile::TempDir,
    config: PathBuf,
    dns: TestDns,
    published: Mutex<Vec<(String, String)>>,
    port: u16,
}

impl Site {
    fn new(extra: &str) -> Site {
        let dir = tempfile::tempdir().unwrap();
        let dns = TestDns::start(Zone::new());
        let port = free_port();
        let config = dir.path().join("rmilter.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"inet:127.0.0.1:{port}\"\n\
                 pid_file = \"{}\"\n\
                 {extra}\n\
                 [[key]]\ndomain = \"example.com\"\ndir = \"keys/example.com\"\n\
                 [dns]\nnameservers = [\"{}\"]\ntimeout = \"1s\"\nattempts = 1\ncache_size = 0\n",
                dir.path().join("rmilter.pid").display(),
                dns.addr()
            ),
        )
        .unwrap();
        Site {
            dir,
            config,
            dns,
            published: Mutex::new(Vec::new()),
            port,
        }
    }

    fn keydir(&self) -> PathBuf {
        self.dir.path().join("keys/example.com")
    }

    fn addr(&self) -> SocketAddr {
        format!("127.0.0.1:{}", self.port).parse().unwrap()
    }

    /// `rmilter keys ARGS -c CONFIG`.
    fn keys(&self, args: &[&str]) -> Output {
        self.keys_env(args, &[])
    }

    fn keys_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_rmilter"))
            .arg("keys")
            .args(args)
            .arg("-c")
            .arg(&self.config)
            .envs(env.iter().copied())
            .output()
            .expect("run rmilter keys")
    }

    /// `rmilter keys ARGS --json`, which must succeed.
    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        let out = self.keys(&all);
        assert!(
            out.status.success(),
            "rmilter keys {args:?} failed: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Publish a TXT record (in addition to those published before).
    fn publish(&self, name: &str, value: &str) {
        let mut published = self.published.lock().unwrap();
        published.retain(|(n, _)| n != name);
        published.push((name.to_string(), value.to_string()));
        let mut zone = Zone::new();
        for (n, v) in published.iter() {
            zone = zone.txt(n, v);
        }
        self.dns.set_zone(zone);
    }

    fn records(&self) -> Vec<(String, String)> {
        self.published.lock().unwrap().clone()
    }

    /// Publish the records of the keys of a `rotate --json` answer.
    fn publish_rotated(&self, rotated: &Value) {
        for key in rotated["keys"].as_array().unwrap() {
            self.publish(
                key["record_name"].as_str().unwrap(),
                key["record_value"].as_str().unwrap(),
            );
        }
    }

    /// selector -> state, from `keys status --json`.
    fn states(&self) -> Vec<(String, String)> {
        let status = self.json(&["status", "--no-dns"]);
        status["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| {
                (
                    k["selector"].as_str().unwrap().to_string(),
                    k["state"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn selectors_of(rotated: &Value) -> Vec<String> {
    rotated["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["selector"].as_str().unwrap().to_string())
        .collect()
}

/// Send one outbound message; the signatures' selectors (sorted) and the
/// message as delivered.
async fn send(addr: SocketAddr, subject: &str) -> (Vec<String>, Vec<u8>) {
    let out = drive::drive(
        addr,
        &Envelope::authenticated("alice"),
        &message("alice@example.com", subject, "Hello.\r\n"),
    )
    .await;
    assert_eq!(out.stage, "eom", "{out:?}");
    let mut selectors: Vec<String> = out
        .inserted("DKIM-Signature")
        .iter()
        .map(|v| dkim_tag(v, "s").unwrap())
        .collect();
    selectors.sort();
    (selectors, out.message)
}

/// Every signature of `message` passes dkimpy, with these DNS records.
fn assert_verifies(message: &[u8], dns: &[(String, String)]) -> Vec<String> {
    let results = dkimpy::verify(message, dns);
    assert!(!results.is_empty(), "no signature");
    for r in &results {
        assert!(
            r.pass,
            "dkimpy fails s={} a={}: {}\n{}",
            r.s,
            r.a,
            r.detail,
            String::from_utf8_lossy(message)
        );
    }
    results.iter().map(|r| r.s.clone()).collect()
}

/// Messages sent continuously on their own thread until stopped.
struct Stream {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<(Vec<String>, Vec<u8>)>>,
}

impl Stream {
    fn start(addr: SocketAddr) -> Stream {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            let mut sent = Vec::new();
            let mut n = 0;
            while !flag.load(Ordering::SeqCst) {
                n += 1;
                sent.push(rt.block_on(send(addr, &format!("stream message {n}"))));
                std::thread::sleep(Duration::from_millis(40));
            }
            sent
        });
        Stream { stop, thread }
    }

    fn finish(self) -> Vec<(Vec<String>, Vec<u8>)> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().unwrap()
    }
}

#[test]
fn full_rotation_while_the_daemon_serves_mail() {
    let site = Site::new("");
    let rt = tokio::runtime::Runtime::new().unwrap();

    // Day one: a new managed domain gets the recommended RSA + Ed25519 pair.
    let first = site.json(&["rotate", "--domain", "example.com"]);
    let first_selectors = selectors_of(&first);
    assert_eq!(first["keys"].as_array().unwrap().len(), 2, "{first}");
    let (rsa, ed_old) = (&first_selectors[0], &first_selectors[1]);
    assert!(
        rsa.starts_with("rsa-") && ed_old.starts_with("ed25519-"),
        "{first}"
    );
    for key in first["keys"].as_array().unwrap() {
        let path = Path::new(key["file"].as_str().unwrap());
        assert_eq!(
            std::fs::metadata(path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    site.publish_rotated(&first);
    let activated = site.keys(&["activate", "--domain", "example.com"]);
    assert!(activated.status.success(), "{}", text(&activated.stderr));
    assert!(
        text(&activated.stdout).contains("rmilter is not running"),
        "{}",
        text(&activated.stdout)
    );

    let daemon = Daemon::start(&["-c", site.config.to_str().unwrap()]);
    daemon.wait_log("rmilter started", 1);
    let (selectors, signed) = rt.block_on(send(site.addr(), "before"));
    let mut both = vec![rsa.clone(), ed_old.clone()];
    both.sort();
    assert_eq!(selectors, both);
    assert_verifies(&signed, &site.records());

    // Mail keeps flowing through everything that follows.
    let stream = Stream::start(site.addr());

    // Rotate the Ed25519 key.
    let rotated = site.json(&[
        "rotate",
        "--domain",
        "example.com",
        "--algorithm",
        "ed25519",
    ]);
    let ed_new = selectors_of(&rotated)[0].clone();
    assert_ne!(&ed_new, ed_old);
    assert_eq!(rotated["keys"][0]["state"], "pending");
    assert_eq!(rotated["keys"][0]["new"], true);
    // A second rotate while the key is pending prints the same key again.
    let again = site.json(&[
        "rotate",
        "--domain",
        "example.com",
        "--algorithm",
        "ed25519",
    ]);
    assert_eq!(selectors_of(&again), std::slice::from_ref(&ed_new));
    assert_eq!(again["keys"][0]["new"], false);
    assert_eq!(
        again["keys"][0]["record_value"],
        rotated["keys"][0]["record_value"]
    );

    // Not published yet: check fails, naming the key and the reason.
    let check = site.keys(&["check", "--domain", "example.com"]);
    assert_eq!(check.status.code(), Some(1), "{}", text(&check.stdout));
    let out = text(&check.stdout);
    assert!(
        out.contains(&format!(
            "FAIL example.com {ed_new} (pending, ed25519): missing: no TXT record at {ed_new}._domainkey.example.com"
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!("ok   example.com {rsa} (active, rsa): ok")),
        "{out}"
    );
    assert!(out.contains("3 keys checked: 1 problem"), "{out}");
    // …and activate refuses, changing nothing.
    let refused = site.keys(&["activate", "--domain", "example.com"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(text(&refused.stderr).contains("activation refused; nothing changed"));
    assert!(
        site.states()
            .contains(&(ed_new.clone(), "pending".to_string()))
    );
    assert_eq!(daemon.count("configuration reloaded"), 0);

    // Publish, check, activate: the daemon reloads through its pid file.
    site.publish_rotated(&rotated);
    let check = site.keys(&["check", "--domain", "example.com"]);
    assert!(check.status.success(), "{}", text(&check.stdout));
    assert!(text(&check.stdout).contains("3 keys checked: no problems"));
    let activated = site.keys(&["activate", "--domain", "example.com"]);
    assert!(activated.status.success(), "{}", text(&activated.stderr));
    let out = text(&activated.stdout);
    assert!(
        out.contains(&format!("signalled rmilter (pid {})", daemon.pid())),
        "{out}"
    );
    assert!(
        out.contains(&format!("overlap: {ed_old} still signs")),
        "{out}"
    );
    daemon.wait_log("configuration reloaded", 1);

    // During the overlap the old and the new Ed25519 key both sign.
    let (selectors, signed) = rt.block_on(send(site.addr(), "overlap"));
    let mut three = vec![rsa.clone(), ed_old.clone(), ed_new.clone()];
    three.sort();
    assert_eq!(selectors, three);
    let verified = assert_verifies(&signed, &site.records());
    assert!(verified.contains(&ed_new), "{verified:?}");

    // Retire ends the overlap: the old selector is no longer used.
    let retired = site.keys(&["retire", "--domain", "example.com"]);
    assert!(retired.status.success(), "{}", text(&retired.stderr));
    let out = text(&retired.stdout);
    assert!(
        out.contains(&format!("{ed_old}: active -> retiring: it no longer signs")),
        "{out}"
    );
    daemon.wait_log("configuration reloaded", 2);
    let (selectors, signed) = rt.block_on(send(site.addr(), "after"));
    let mut now = vec![rsa.clone(), ed_new.clone()];
    now.sort();
    assert_eq!(selectors, now);
    assert_verifies(&signed, &site.records());

    let sent = stream.finish();
    // Every message sent during the rotation and both reloads carries only
    // valid signatures, and the stream saw each set of keys.
    assert!(sent.len() >= 5, "only {} messages", sent.len());
    for (selectors, message) in &sent {
        assert!(selectors.contains(rsa), "{selectors:?}");
        assert_verifies(message, &site.records());
    }
    assert!(
        sent.iter()
            .any(|(s, _)| s.contains(ed_old) && !s.contains(&ed_new)),
        "no message before the activation"
    );
    assert!(
        sent.iter()
            .any(|(s, _)| s.contains(&ed_new) && !s.contains(ed_old)),
        "no message after the retirement"
    );

    // The retiring key's record must stay; it is checked like any other.
    assert_eq!(
        site.states(),
        [
            (ed_old.clone(), "retiring".to_string()),
            (ed_new.clone(), "active".to_string()),
            (rsa.clone(), "active".to_string()),
        ]
    );
    // Retiring → retired waits for keys.retiring_period (7 days)…
    let early = site.keys(&["retire", "--domain", "example.com", "--selector", ed_old]);
    assert_eq!(early.status.code(), Some(1));
    assert!(text(&early.stderr).contains("its record must stay published until"));
    // …unless forced; then the revocation record is offered.
    let done = site.keys(&[
        "retire",
        "--domain",
        "example.com",
        "--selector",
        ed_old,
        "--force",
    ]);
    assert!(done.status.success(), "{}", text(&done.stderr));
    let out = text(&done.stdout);
    assert!(
        out.contains(&format!(
            "{ed_old}._domainkey.example.com.\tIN\tTXT\t\"v=DKIM1; k=ed25519; p=\""
        )),
        "{out}"
    );
    site.publish(
        &format!("{ed_old}._domainkey.example.com"),
        "v=DKIM1; k=ed25519; p=",
    );
    let status = site.keys(&["status"]);
    let table = text(&status.stdout);
    assert!(table.starts_with("DOMAIN       SELECTOR"), "{table}");
    assert!(
        table.lines().any(|l| l.contains(ed_old.as_str())
            && l.contains("retired")
            && l.ends_with("revoked")),
        "{table}"
    );
    let check = site.json(&["check"]);
    assert_eq!(check["ok"], true, "{check}");

    // The pid file is locked: a second daemon with it refuses to start.
    let mut second = Daemon::start(&["-c", site.config.to_str().unwrap()]);
    let status = second.wait_exit();
    assert!(!status.success());
    assert!(
        second.lines().iter().any(|l| l.contains(&format!(
            "another rmilter is running (pid {})",
            daemon.pid()
        ))),
        "{:?}",
        second.lines()
    );
}

#[test]
fn reload_requests_signal_only_a_live_rmilter() {
    use rmilter::daemon::{PidFile, ReloadRequest, request_reload};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rmilter.pid");
    assert_eq!(request_reload(None).unwrap(), ReloadRequest::NoPidFile);
    assert_eq!(
        request_reload(Some(&path)).unwrap(),
        ReloadRequest::NotRunning(path.clone())
    );
    // A stale file (no process holds its lock) is never signalled.
    std::fs::write(&path, format!("{}\n", std::process::id())).unwrap();
    assert_eq!(
        request_reload(Some(&path)).unwrap(),
        ReloadRequest::NotRunning(path.clone())
    );
    // A locked file of another program is refused.
    let held = PidFile::create(&path).unwrap();
    let err = request_reload(Some(&path)).unwrap_err().to_string();
    assert!(err.contains("not rmilter; not signalling it"), "{err}");
    assert!(PidFile::create(&path).is_err(), "second pid file lock");
    drop(held);
    assert!(!path.exists(), "pid file removed when dropped");
}

#[test]
fn keys_made_as_root_belong_to_the_service_user() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    let site = Site::new("[keys]\nowner = \"nobody\"\nselector = \"k{year}{month}\"");
    let rotated = site.json(&[
        "rotate",
        "--domain",
        "example.com",
        "--algorithm",
        "ed25519",
    ]);
    let selector = selectors_of(&rotated)[0].clone();
    assert!(
        selector.starts_with('k') && selector.len() == 7,
        "template: {selector}"
    );
    for (path, mode) in [
        (site.dir.path().join("keys"), 0o700),
        (site.keydir(), 0o700),
        (site.keydir().join(format!("{selector}.pem")), 0o600),
        (site.keydir().join("state.toml"), 0o600),
    ] {
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.uid(), nobody.uid.as_raw(), "{}", path.display());
        assert_eq!(
            meta.permissions().mode() & 0o777,
            mode,
            "{}",
            path.display()
        );
    }
    // rmilter keys accepts the keys it gave to keys.owner.
    assert_eq!(site.states(), [(selector, "pending".to_string())]);
}

#[test]
fn symlinks_out_of_the_key_directory_are_refused() {
    let site = Site::new("");
    let rotated = site.json(&[
        "rotate",
        "--domain",
        "example.com",
        "--algorithm",
        "ed25519",
    ]);
    let selector = selectors_of(&rotated)[0].clone();
    site.publish_rotated(&rotated);
    let key = site.keydir().join(format!("{selector}.pem"));
    // Move the key out and point a symlink at it.
    let outside = tempfile::tempdir().unwrap();
    let moved = outside.path().join("key.pem");
    std::fs::rename(&key, &moved).unwrap();
    std::os::unix::fs::symlink(&moved, &key).unwrap();
    let refused = site.keys(&["activate", "--domain", "example.com"]);
    assert_eq!(refused.status.code(), Some(1));
    let err = text(&refused.stderr);
    assert!(
        err.contains("is a symlink out of the key directory"),
        "{err}"
    );
    // A symlink inside the directory is fine.
    std::fs::remove_file(&key).unwrap();
    let inside = site.keydir().join("real.pem");
    std::fs::rename(&moved, &inside).unwrap();
    std::os::unix::fs::symlink("real.pem", &key).unwrap();
    let ok = site.keys(&["activate", "--domain", "example.com"]);
    assert!(ok.status.success(), "{}", text(&ok.stderr));

    // `keys generate` refuses a domain directory linked out of --dir.
    let keys = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path(), keys.path().join("example.org")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_rmilter"))
        .args([
            "keys",
            "generate",
            "--domain",
            "example.org",
            "--selector",
            "s",
        ])
        .arg("--dir")
        .arg(keys.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("is a symlink out of the key directory"),
        "{}",
        text(&out.stderr)
    );
    assert!(!outside.path().join("s.pem").exists());
}

#[test]
fn a_waiting_command_runs_once_the_lock_is_free() {
    let site = Site::new("");
    std::fs::create_dir_all(site.keydir()).unwrap();
    let lock =
        rmilter::keys::state::lock(&site.keydir(), Duration::ZERO, None).expect("take the lock");
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(500));
        drop(lock);
    });
    let start = std::time::Instant::now();
    let out = site.keys(&[
        "rotate",
        "--domain",
        "example.com",
        "--algorithm",
        "ed25519",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        start.elapsed() >= Duration::from_millis(450),
        "did not wait"
    );
    release.join().unwrap();
}

#[test]
fn keys_help_lists_the_lifecycle_commands() {
    let help = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_rmilter"))
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}");
        text(&out.stdout)
    };
    let keys = help(&["keys", "--help"]);
    for word in [
        "generate", "dns", "rotate", "check", "activate", "retire", "status",
    ] {
        assert!(keys.contains(word), "keys --help lacks {word}: {keys}");
    }
    for (command, words) in [
        (
            "rotate",
            &[
                "--domain",
                "--algorithm",
                "--bits",
                "--json",
                "keys.selector",
            ][..],
        ),
        ("check", &["--domain", "--json", "testing", "several"][..]),
        (
            "activate",
            &["--selector", "--force", "--no-reload", "pid_file"][..],
        ),
        (
            "retire",
            &["--selector", "--force", "--no-reload", "retiring_period"][..],
        ),
        ("status", &["--no-dns", "--json"][..]),
    ] {
        let text = help(&["keys", command, "--help"]);
        for word in words {
            assert!(
                text.contains(word),
                "keys {command} --help lacks {word}: {text}"
            );
        }
    }
    // A domain that is not managed is named, with the fix.
    let site = Site::new("");
    let out = site.keys(&["rotate", "--domain", "example.org"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("example.org is not a managed domain in")
            && text(&out.stderr)
                .contains("add a [[key]] table with domain = \"example.org\" and dir = \"DIR\""),
        "{}",
        text(&out.stderr)
    );
}
