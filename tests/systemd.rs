//! Service integration: the shipped systemd units pass `systemd-analyze
//! verify`; `rmilter run` tells $NOTIFY_SOCKET READY=1, RELOADING=1 and
//! READY=1 around a reload, and STOPPING=1; started as root with `user`
//! set it binds its socket (group postfix), writes its pid file and then
//! runs as that user, still reloading its keys; started as another user
//! it refuses to switch.

mod common;

use common::daemon::Daemon;
use common::drive::{self, Envelope};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn config_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config")
}

#[test]
fn shipped_units_pass_systemd_analyze_verify() {
    let dir = tempfile::tempdir().unwrap();
    let mut units = Vec::new();
    for name in [
        "rmilter.service",
        "rmilter-report.service",
        "rmilter-report.timer",
    ] {
        let text = std::fs::read_to_string(config_dir().join(name)).unwrap();
        // The units name the installed binary; verify checks that it exists.
        let text = text.replace("/usr/sbin/rmilter", env!("CARGO_BIN_EXE_rmilter"));
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        units.push(path);
    }
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args(&units)
        .output()
        .expect("systemd-analyze (Debian package systemd)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify: {}\n{stderr}",
        out.status
    );
    let unit = std::fs::read_to_string(config_dir().join("rmilter.service")).unwrap();
    for line in [
        "Type=notify",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "RuntimeDirectory=rmilter",
        "ReadWritePaths=-/var/lib/rmilter",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ] {
        assert!(
            unit.lines().any(|l| l == line),
            "rmilter.service lacks {line}"
        );
    }
}

fn recv(socket: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut buf).expect("a notification within 20s");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn notify_socket_gets_ready_reloading_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let notify = dir.path().join("notify");
    let socket = UnixDatagram::bind(&notify).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let listen = format!("unix:{}", dir.path().join("rmilter.sock").display());
    let mut daemon = Daemon::start_with_env(
        &["--listen", &listen],
        &[("NOTIFY_SOCKET", notify.to_str().unwrap())],
    );
    let ready = recv(&socket);
    assert!(
        ready.starts_with("READY=1\nSTATUS=ready: listening on unix:"),
        "{ready}"
    );
    // Ready means the socket answers.
    std::os::unix::net::UnixStream::connect(dir.path().join("rmilter.sock")).unwrap();
    daemon.signal("HUP");
    let reloading = recv(&socket);
    assert!(
        reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="),
        "{reloading}"
    );
    let again = recv(&socket);
    assert!(again.starts_with("READY=1\n"), "{again}");
    daemon.signal("TERM");
    let stopping = recv(&socket);
    assert!(stopping.starts_with("STOPPING=1\n"), "{stopping}");
    assert!(daemon.wait_exit().success());
}

fn status_ids(pid: u32, field: &str) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap()
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect()
}

fn chown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn started_as_root_it_binds_then_runs_as_the_configured_user() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test starts rmilter as root"
    );
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    let (uid, gid) = (nobody.uid.as_raw(), nobody.gid.as_raw());
    let postfix_gid = nix::unistd::Group::from_name("postfix")
        .unwrap()
        .expect("group postfix (Debian's postfix package)")
        .gid
        .as_raw();
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // A key the unprivileged user owns, as `rmilter keys` with keys.owner
    // leaves it: readable after the switch, for reloads.
    let keys = dir.path().join("keys");
    let generated = rmilter::keys::generate(
        &keys,
        "example.com",
        "s1",
        rmilter::config::KeyAlgorithm::Ed25519,
        0,
    )
    .unwrap();
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o755)).unwrap();
    chown(&keys.join("example.com"), uid, gid);
    chown(&generated.path, uid, gid);
    let run = dir.path().join("run");
    std::fs::create_dir(&run).unwrap();
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o755)).unwrap();
    let sock = run.join("rmilter.sock");
    let pid_file = run.join("rmilter.pid");
    let config = dir.path().join("rmilter.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"unix:{}\"\npid_file = \"{}\"\nuser = \"nobody\"\n\
             [socket]\ngroup = \"postfix\"\n\
             [[key]]\ndomain = \"example.com\"\nselector = \"s1\"\nfile = \"{}\"\n",
            sock.display(),
            pid_file.display(),
            generated.path.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut daemon = Daemon::start(&["-c", config.to_str().unwrap()]);
    daemon.wait_log("rmilter ready", 1);
    assert_eq!(daemon.count("switched to the unprivileged user"), 1);
    let pid = daemon.pid();
    assert_eq!(status_ids(pid, "Uid"), vec![uid; 4]);
    assert_eq!(status_ids(pid, "Gid"), vec![gid; 4]);
    let caps = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(
        caps.lines().any(|l| l == "CapEff:\t0000000000000000"),
        "{caps}"
    );
    // Bound as root, for the postfix group.
    let meta = std::fs::metadata(&sock).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o777),
        (0, postfix_gid, 0o660)
    );
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap().trim(),
        pid.to_string()
    );
    // It signs, and a reload (as the unprivileged user) reads config and key again.
    daemon.signal("HUP");
    daemon.wait_log("configuration reloaded", 1);
    let mut conn = indymilter_test::TestConnection::configure()
        .exact_leading_space(true)
        .open_unix(&sock)
        .await
        .unwrap();
    let env = Envelope::authenticated("alice");
    drive::connect(&mut conn, &env).await;
    let out = drive::send_message(
        &mut conn,
        &env,
        &common::message("Alice <alice@example.com>", "hi", "Hi.\r\n"),
    )
    .await;
    conn.close().await.unwrap();
    assert_eq!(out.inserted("DKIM-Signature").len(), 1);
    daemon.signal("TERM");
    assert!(daemon.wait_exit().success());
}

#[test]
fn started_as_another_user_it_refuses_to_switch() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let config = dir.path().join("rmilter.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"unix:{}/rmilter.sock\"\nuser = \"postfix\"\n",
            dir.path().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    let out = Command::new("setpriv")
        .arg(format!("--reuid={}", nobody.uid))
        .arg(format!("--regid={}", nobody.gid))
        .arg("--clear-groups")
        .arg(env!("CARGO_BIN_EXE_rmilter"))
        .args(["run", "-c", config.to_str().unwrap()])
        .env_remove("RUST_LOG")
        .output()
        .expect("setpriv (util-linux)");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "rmilter: cannot run as user postfix (uid {}): rmilter was started as uid {}, not as root",
            nix::unistd::User::from_name("postfix").unwrap().unwrap().uid,
            nobody.uid
        )),
        "{stderr}"
    );
}
