//! The Debian package on this machine, as an administrator meets it (root
//! only; skipped with a message otherwise): built by
//! `packaging/build-deb.sh` from the debug binary `cargo test` already built
//! (`make deb` packages the release binary the same way), checked with
//! lintian, installed with `dpkg -i`; the installed files pass `rmilter
//! check-config` and `rmilter doctor --no-probe`; a key made by `rmilter keys
//! generate` signs a message (`rmilter explain --local`) that dkimpy
//! verifies; `dpkg --remove` keeps the conffile and the keys, and `dpkg
//! --purge` leaves no file, directory, user or group behind.
//!
//! It installs into the real system: it refuses to run (skips, saying why)
//! when rmilter is already installed or its user or /etc/rmilter exists,
//! and purges whatever it installed even when it fails. While it runs,
//! /etc/rmilter/rmilter.toml exists, which `rmilter` commands started
//! without -c by other processes would read; cargo runs one test binary at
//! a time, and this binary has this one test.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Output};

const CONFIG: &str = "/etc/rmilter/rmilter.toml";
const BIN: &str = "/usr/sbin/rmilter";

fn run(cmd: &str, args: &[&str]) -> Output {
    Command::new(cmd)
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"))
}

fn ok(cmd: &str, args: &[&str]) -> String {
    let out = run(cmd, args);
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn exists(name: &str, db: &str) -> bool {
    run("getent", &[db, name]).status.success()
}

fn package_installed() -> bool {
    let out = run("dpkg-query", &["-W", "-f=${Status}", "rmilter"]);
    // Any state but not-installed counts: half-installed, config-files...
    out.status.success() && !String::from_utf8_lossy(&out.stdout).contains("not-installed")
}

/// Everything the package or its scripts may leave on the system.
const LEFTOVERS: &[&str] = &[
    "/etc/rmilter",
    "/var/lib/rmilter",
    "/var/spool/postfix/rmilter",
    "/run/rmilter",
    "/usr/sbin/rmilter",
    "/usr/share/doc/rmilter",
    "/usr/share/man/man8/rmilter.8.gz",
    "/usr/share/man/man5/rmilter.toml.5.gz",
    "/usr/share/bash-completion/completions/rmilter",
    "/usr/share/zsh/vendor-completions/_rmilter",
    "/lib/systemd/system/rmilter.service",
    "/lib/systemd/system/rmilter-report.service",
    "/lib/systemd/system/rmilter-report.timer",
    "/etc/systemd/system/multi-user.target.wants/rmilter.service",
    "/etc/systemd/system/timers.target.wants/rmilter-report.timer",
    "/var/lib/systemd/deb-systemd-helper-enabled/rmilter.service.dsh-also",
    "/var/lib/systemd/deb-systemd-helper-enabled/multi-user.target.wants/rmilter.service",
];

/// Purges the package when the test ends, however it ends.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let out = run("dpkg", &["--purge", "rmilter"]);
        if !out.status.success() {
            eprintln!(
                "cleanup: dpkg --purge rmilter: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        // Should the maintainer scripts have failed half-way.
        for path in LEFTOVERS {
            let _ = std::fs::remove_dir_all(path).or_else(|_| std::fs::remove_file(path));
        }
        if exists("rmilter", "passwd") {
            let _ = run("userdel", &["rmilter"]);
        }
        if exists("rmilter", "group") {
            let _ = run("groupdel", &["rmilter"]);
        }
    }
}

fn owner(path: &str) -> (String, String, u32) {
    let meta = std::fs::metadata(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let user = nix::unistd::User::from_uid(meta.uid().into())
        .unwrap()
        .map_or(meta.uid().to_string(), |u| u.name);
    let group = nix::unistd::Group::from_gid(meta.gid().into())
        .unwrap()
        .map_or(meta.gid().to_string(), |g| g.name);
    (user, group, meta.mode() & 0o7777)
}

#[test]
fn package_installs_works_removes_and_purges() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: building and installing the Debian package needs root");
        return;
    }
    if package_installed()
        || exists("rmilter", "passwd")
        || exists("rmilter", "group")
        || Path::new("/etc/rmilter").exists()
    {
        eprintln!(
            "skipped: rmilter is installed on this machine (package, user, group or /etc/rmilter); \
             this test would purge it"
        );
        return;
    }
    let top = env!("CARGO_MANIFEST_DIR");
    let work = tempfile::tempdir().unwrap();
    let out_dir = work.path().join("deb");
    let deb = ok(
        "bash",
        &[
            &format!("{top}/packaging/build-deb.sh"),
            env!("CARGO_BIN_EXE_rmilter"),
            out_dir.to_str().unwrap(),
        ],
    );
    let deb = deb.trim().to_string();
    let arch = ok("dpkg", &["--print-architecture"]);
    let name = format!("rmilter_{}_{}.deb", env!("CARGO_PKG_VERSION"), arch.trim());
    assert!(deb.ends_with(&name), "{deb} is not {name}");

    // lintian clean (overrides, if any, are justified in packaging/debian).
    ok("lintian", &["--fail-on", "error,warning", &deb]);

    let _installed = Installed;
    ok("dpkg", &["-i", &deb]);

    // What the package put where.
    assert!(exists("rmilter", "passwd") && exists("rmilter", "group"));
    assert_eq!(
        owner(CONFIG),
        ("root".into(), "rmilter".into(), 0o640),
        "{CONFIG}"
    );
    let conffiles = ok("dpkg-query", &["-W", "-f=${Conffiles}", "rmilter"]);
    assert!(conffiles.contains(CONFIG), "conffiles: {conffiles}");
    assert_eq!(
        owner("/etc/rmilter"),
        ("root".into(), "rmilter".into(), 0o750)
    );
    assert_eq!(
        owner("/etc/rmilter/keys"),
        ("root".into(), "rmilter".into(), 0o750)
    );
    assert_eq!(
        owner("/var/lib/rmilter"),
        ("rmilter".into(), "rmilter".into(), 0o750)
    );
    assert_eq!(owner(BIN).2, 0o755);
    if Path::new("/var/spool/postfix").is_dir() {
        assert!(Path::new("/var/spool/postfix/rmilter").is_dir());
    }
    for path in [
        "/usr/share/man/man8/rmilter.8.gz",
        "/usr/share/man/man5/rmilter.toml.5.gz",
        "/usr/share/bash-completion/completions/rmilter",
        "/usr/share/zsh/vendor-completions/_rmilter",
        "/usr/share/doc/rmilter/copyright",
        "/lib/systemd/system/rmilter.service",
        "/lib/systemd/system/rmilter-report.service",
        "/lib/systemd/system/rmilter-report.timer",
    ] {
        assert!(Path::new(path).exists(), "{path} not installed");
    }
    let copyright = std::fs::read_to_string("/usr/share/doc/rmilter/copyright").unwrap();
    assert!(copyright.contains("License: GPL-3.0-or-later"));
    assert!(
        copyright.contains("Files: rust-crates/indymilter-"),
        "crates listed"
    );
    // The milter is enabled, the report timer only installed.
    assert!(
        Path::new("/etc/systemd/system/multi-user.target.wants/rmilter.service").exists(),
        "rmilter.service enabled"
    );
    assert!(
        !Path::new("/etc/systemd/system/timers.target.wants/rmilter-report.timer").exists(),
        "the report timer must not be enabled"
    );

    // The installed configuration: found without -c, valid, the socket in
    // Postfix's chroot.
    let summary = ok(BIN, &["check-config"]);
    assert!(
        summary.contains(&format!("configuration OK: {CONFIG}")),
        "{summary}"
    );
    assert!(
        summary.contains("unix:/var/spool/postfix/rmilter/rmilter.sock"),
        "{summary}"
    );

    // doctor against the installed configuration and a Postfix wired as
    // Debian's (chrooted smtpd) to that socket.
    let postfix = work.path().join("postfix");
    std::fs::create_dir(&postfix).unwrap();
    let fixture = Path::new(top).join("tests/doctor/good-unix-chroot");
    let tmp = work.path().to_str().unwrap();
    for file in ["main.cf", "master.cf"] {
        let text = std::fs::read_to_string(fixture.join(file)).unwrap();
        let text = text
            .replace("@TMP@/spool", "/var/spool/postfix")
            .replace("@TMP@", tmp);
        std::fs::write(postfix.join(file), text).unwrap();
    }
    let doctor = run(
        BIN,
        &[
            "doctor",
            "--no-probe",
            "--no-dns",
            "--postfix-dir",
            postfix.to_str().unwrap(),
        ],
    );
    let report = String::from_utf8_lossy(&doctor.stdout);
    assert!(
        doctor.status.success(),
        "doctor: {}\n{report}\n{}",
        doctor.status,
        String::from_utf8_lossy(&doctor.stderr)
    );
    assert!(report.contains(CONFIG), "{report}");

    // A key made by `rmilter keys generate` (default directory), named in
    // the installed configuration, signs local submissions.
    let generated = ok(
        BIN,
        &[
            "keys",
            "generate",
            "--domain",
            "example.com",
            "--selector",
            "pkg",
            "--algorithm",
            "ed25519",
        ],
    );
    let key = "/etc/rmilter/keys/example.com/pkg.pem";
    assert!(Path::new(key).exists(), "{generated}");
    let record = generated
        .lines()
        .find(|l| l.contains("pkg._domainkey.example.com."))
        .unwrap_or_else(|| panic!("no record in {generated}"));
    let txt = &record[record.find('"').unwrap() + 1..record.rfind('"').unwrap()];
    ok(
        "chown",
        &["-R", "rmilter:rmilter", "/etc/rmilter/keys/example.com"],
    );
    let mut config = std::fs::read_to_string(CONFIG).unwrap();
    config.push_str(&format!(
        "\n[[key]]\ndomain = \"example.com\"\nselector = \"pkg\"\nfile = \"{key}\"\n"
    ));
    std::fs::write(CONFIG, &config).unwrap();
    let summary = ok(BIN, &["check-config"]);
    assert!(
        summary.contains("d=example.com s=pkg a=ed25519-sha256"),
        "{summary}"
    );
    let message = "From: Alice <alice@example.com>\r\nTo: bob@example.org\r\n\
                   Subject: packaged\r\nDate: Mon, 07 Dec 2026 12:00:00 +0000\r\n\
                   Message-ID: <pkg@example.com>\r\n\r\nSigned by the packaged rmilter.\r\n";
    let eml = work.path().join("m.eml");
    std::fs::write(&eml, message).unwrap();
    let explained = ok(
        BIN,
        &["explain", eml.to_str().unwrap(), "--local", "--json"],
    );
    let doc: serde_json::Value = serde_json::from_str(&explained).unwrap();
    let signature = doc["signing"]["signatures"][0]
        .as_str()
        .unwrap_or_else(|| panic!("not signed: {explained}"));
    let signed = format!("DKIM-Signature:{signature}\r\n{message}");
    let verdicts = common::dkimpy::verify(
        signed.as_bytes(),
        &[("pkg._domainkey.example.com".to_string(), txt.to_string())],
    );
    assert_eq!(verdicts.len(), 1);
    assert!(verdicts[0].pass, "dkimpy: {:?}", verdicts[0]);

    // remove: the program goes, the edited conffile and the key stay.
    ok("dpkg", &["--remove", "rmilter"]);
    assert!(!Path::new(BIN).exists());
    assert_eq!(std::fs::read_to_string(CONFIG).unwrap(), config);
    assert!(Path::new(key).exists());

    // purge: nothing left.
    ok("dpkg", &["--purge", "rmilter"]);
    assert!(!package_installed());
    let left: Vec<_> = LEFTOVERS
        .iter()
        .filter(|p| Path::new(p).symlink_metadata().is_ok())
        .collect();
    assert!(left.is_empty(), "left after purge: {left:?}");
    assert!(
        !exists("rmilter", "passwd"),
        "user rmilter left after purge"
    );
    assert!(
        !exists("rmilter", "group"),
        "group rmilter left after purge"
    );
}
