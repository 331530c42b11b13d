//! Crash safety of `rmilter keys rotate` and `activate`: the process is
//! killed (SIGKILL, through the debug-build hook `RMILTER_CRASH_AT`, or from
//! outside at arbitrary moments) between the steps of a change. The state
//! file is never half-written, no half-written key ever appears under its
//! final name, a key never signs before its record is checked, and running
//! the same command again completes the change or says what is wrong.

mod common;

use common::daemon::{Daemon, free_port};
use common::dns::{TestDns, Zone};
use common::drive::{self, Envelope};
use common::{dkim_tag, message};
use rmilter::config::{KeyAlgorithm, KeySpec};
use rmilter::keys::LoadedKey;
use rmilter::keys::state::{self, KeyState};
use serde_json::Value;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

struct Site {
    dir: tempfile::TempDir,
    config: PathBuf,
    dns: TestDns,
    port: u16,
}

impl Site {
    fn new() -> Site {
        let dir = tempfile::tempdir().unwrap();
        let dns = TestDns::start(Zone::new());
        let port = free_port();
        let config = dir.path().join("rmilter.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"inet:127.0.0.1:{port}\"\npid_file = \"{}\"\n\
                 [[key]]\ndomain = \"example.com\"\ndir = \"keys\"\n\
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
            port,
        }
    }

    fn keydir(&self) -> PathBuf {
        self.dir.path().join("keys")
    }

    fn state_path(&self) -> PathBuf {
        self.keydir().join("state.toml")
    }

    fn keys(&self, args: &[&str], crash_at: Option<&str>) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rmilter"));
        cmd.arg("keys").args(args).arg("-c").arg(&self.config);
        match crash_at {
            Some(point) => cmd.env("RMILTER_CRASH_AT", point),
            None => cmd.env_remove("RMILTER_CRASH_AT"),
        };
        cmd.output().expect("run rmilter keys")
    }

    /// Run a command that must be killed at `point`.
    fn crash(&self, args: &[&str], point: &str) {
        let out = self.keys(args, Some(point));
        assert_eq!(
            out.status.signal(),
            Some(9),
            "{args:?} was not killed at {point}: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.keys(args, None);
        assert!(
            out.status.success(),
            "{args:?}: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    fn state(&self) -> state::DomainState {
        state::read(&self.keydir(), "example.com", None).expect("the state file reads")
    }

    fn state_text(&self) -> Option<String> {
        std::fs::read_to_string(self.state_path()).ok()
    }

    fn files(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.keydir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn temps(&self) -> Vec<String> {
        self.files()
            .into_iter()
            .filter(|n| n.starts_with(".rmilter-") && n.ends_with(".tmp"))
            .collect()
    }

    /// Every `*.pem` in the key directory is a complete, loadable key.
    fn assert_keys_whole(&self) {
        for name in self.files().iter().filter(|n| n.ends_with(".pem")) {
            let spec = KeySpec {
                domain: "example.com".into(),
                selector: name.trim_end_matches(".pem").into(),
                path: self.keydir().join(name),
                algorithm: None,
                origin: "test".into(),
                ..Default::default()
            };
            LoadedKey::load(&spec).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }

    fn publish_pending(&self) {
        let mut zone = Zone::new();
        for key in &self.state().keys {
            let spec = KeySpec {
                domain: "example.com".into(),
                selector: key.selector.clone(),
                path: self.keydir().join(&key.file),
                algorithm: Some(key.algorithm),
                origin: "test".into(),
                ..Default::default()
            };
            let loaded = LoadedKey::load(&spec).unwrap();
            zone = zone.txt(
                &format!("{}._domainkey.example.com", key.selector),
                &loaded.txt_value(),
            );
        }
        self.dns.set_zone(zone);
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn json(out: &str) -> Value {
    serde_json::from_str(out).unwrap()
}

const ROTATE_ED: &[&str] = &[
    "rotate",
    "--domain",
    "example.com",
    "--algorithm",
    "ed25519",
];

#[test]
fn rotate_killed_after_the_state_write_is_completed_by_a_rerun() {
    let site = Site::new();
    site.crash(ROTATE_ED, "rotate:state-written");
    // The state names a pending key whose file was never written.
    let st = site.state();
    assert_eq!(st.keys.len(), 1);
    let key = st.keys[0].clone();
    assert_eq!(key.state, KeyState::Pending);
    assert!(!site.keydir().join(&key.file).exists());
    // status says what is wrong and what to do.
    let status = json(&site.ok(&["status", "--no-dns", "--json"]));
    let row = &status["keys"][0];
    assert_eq!(row["problem"], true);
    assert_eq!(row["dns"]["verdict"], "key-file");
    let detail = row["dns"]["detail"].as_str().unwrap();
    assert!(
        detail.contains("key file does not exist (an interrupted rotate? run `rmilter keys rotate --domain example.com --algorithm ed25519` again)"),
        "{detail}"
    );
    // The daemon starts fine meanwhile: pending keys never sign.
    let out = Command::new(env!("CARGO_BIN_EXE_rmilter"))
        .args(["check-config", "-c"])
        .arg(&site.config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));

    // The re-run writes the key for the same selector; no second key.
    let out = json(&site.ok(&[ROTATE_ED, &["--json"][..]].concat()));
    assert_eq!(out["keys"][0]["selector"], key.selector.as_str());
    assert_eq!(out["keys"][0]["new"], true);
    assert_eq!(site.state().keys.len(), 1);
    site.assert_keys_whole();
    assert!(site.temps().is_empty());
}

#[test]
fn rotate_killed_while_writing_the_key_leaves_no_partial_key() {
    let site = Site::new();
    site.crash(ROTATE_ED, "key:temp-half-written");
    assert_eq!(site.state().keys.len(), 1);
    // Half a key sits in a temporary file, never under the key's name.
    assert_eq!(site.temps().len(), 1, "{:?}", site.files());
    assert!(!site.files().iter().any(|n| n.ends_with(".pem")));
    site.crash(ROTATE_ED, "key:temp-written");
    assert!(!site.files().iter().any(|n| n.ends_with(".pem")));
    // The re-run removes the stray temporary files and completes.
    site.ok(ROTATE_ED);
    assert!(site.temps().is_empty(), "{:?}", site.files());
    assert_eq!(
        site.files().iter().filter(|n| n.ends_with(".pem")).count(),
        1
    );
    site.assert_keys_whole();
}

#[test]
fn a_state_write_killed_half_way_leaves_the_old_state() {
    let site = Site::new();
    site.ok(ROTATE_ED);
    let before = site.state_text().unwrap();
    // A second algorithm's rotate dies in the middle of writing the state.
    let rotate_rsa = ["rotate", "--domain", "example.com", "--algorithm", "rsa"];
    site.crash(&rotate_rsa, "state:temp-half-written");
    assert_eq!(site.state_text().unwrap(), before, "state changed");
    assert_eq!(site.temps().len(), 1);
    site.crash(&rotate_rsa, "state:temp-written");
    assert_eq!(site.state_text().unwrap(), before, "state changed");
    site.ok(&rotate_rsa);
    assert!(site.temps().is_empty());
    let st = site.state();
    assert_eq!(st.keys.len(), 2);
    assert!(st.keys.iter().any(|k| k.algorithm == KeyAlgorithm::Rsa));
    site.assert_keys_whole();
}

#[tokio::test(flavor = "multi_thread")]
async fn activate_killed_before_or_after_its_state_write_is_completed_by_a_rerun() {
    let site = Site::new();
    site.ok(ROTATE_ED);
    site.publish_pending();
    let activate = ["activate", "--domain", "example.com"];
    let selector = site.state().keys[0].selector.clone();

    // Killed before the new state is in place: still pending.
    let before = site.state_text().unwrap();
    site.crash(&activate, "state:temp-written");
    assert_eq!(site.state_text().unwrap(), before);
    assert_eq!(site.state().keys[0].state, KeyState::Pending);
    let out = site.ok(&activate);
    assert!(
        out.contains(&format!("{selector} (ed25519): activated")),
        "{out}"
    );

    // A second key, activated while the daemon runs: killed after the state
    // write but before the reload request.
    let daemon = Daemon::start(&["-c", site.config.to_str().unwrap()]);
    daemon.wait_log("rmilter started", 1);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", site.port).parse().unwrap();
    let selectors = || async {
        let out = drive::drive(
            addr,
            &Envelope::authenticated("alice"),
            &message("alice@example.com", "s", "b\r\n"),
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
    assert_eq!(selectors().await, std::slice::from_ref(&selector));
    site.ok(&["rotate", "--domain", "example.com", "--algorithm", "rsa"]);
    site.publish_pending();
    site.crash(&activate, "activate:state-written");
    let rsa = site
        .state()
        .keys
        .iter()
        .find(|k| k.algorithm == KeyAlgorithm::Rsa)
        .unwrap()
        .clone();
    assert_eq!(rsa.state, KeyState::Active);
    // The daemon was never asked to reload: it still signs with one key.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(daemon.count("configuration reloaded"), 0);
    assert_eq!(selectors().await, std::slice::from_ref(&selector));
    // The re-run finds nothing pending and completes the reload.
    let out = site.ok(&activate);
    assert!(out.contains("no pending key to activate"), "{out}");
    assert!(
        out.contains(&format!("signalled rmilter (pid {})", daemon.pid())),
        "{out}"
    );
    daemon.wait_log("configuration reloaded", 1);
    let mut both = vec![selector, rsa.selector];
    both.sort();
    assert_eq!(selectors().await, both);
}

#[test]
fn rotate_killed_at_arbitrary_moments_never_leaves_a_broken_state() {
    let site = Site::new();
    let args = [
        "keys",
        "rotate",
        "--domain",
        "example.com",
        "--algorithm",
        "rsa",
        "--bits",
        "4096",
        "-c",
    ];
    for delay in [0u64, 2, 5, 10, 20, 40, 80, 160, 320] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_rmilter"))
            .args(args)
            .arg(&site.config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay));
        let _ = child.kill();
        let _ = child.wait();
        if site.keydir().exists() {
            // Parses (or is absent); every key under its name is whole.
            let st = site.state();
            assert!(st.keys.len() <= 1, "{st:?}");
            site.assert_keys_whole();
        }
    }
    let out = json(&site.ok(&[
        "rotate",
        "--domain",
        "example.com",
        "--algorithm",
        "rsa",
        "--bits",
        "4096",
        "--json",
    ]));
    assert_eq!(out["keys"][0]["bits"], 4096);
    let st = site.state();
    assert_eq!(st.keys.len(), 1, "{st:?}");
    assert_eq!(st.keys[0].state, KeyState::Pending);
    site.assert_keys_whole();
    assert!(site.temps().is_empty());
    assert!(Path::new(&site.keydir().join(&st.keys[0].file)).exists());
}
