//! A private, throw-away PostgreSQL server for the shared report store
//! tests: Debian's PostgreSQL 15 binaries run as user `postgres` on a data
//! directory and a unix socket directory inside a fresh temporary directory,
//! on a private port, with no TCP listener ([`TestPg::start_tcp`] adds one on
//! 127.0.0.1, with or without TLS). Dropping the value stops it.
//! Needs root (to run as `postgres`) and Debian's `postgresql` package.
#![allow(dead_code)]

use super::postfix::{free_port, run_bounded, show};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const BIN: &str = "/usr/lib/postgresql/15/bin";

pub struct TestPg {
    dir: tempfile::TempDir,
    data: PathBuf,
    socket_dir: PathBuf,
    port: u16,
    tcp: bool,
}

fn as_postgres(program: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new("runuser");
    cmd.args(["-u", "postgres", "--"])
        .arg(Path::new(BIN).join(program))
        .args(args);
    cmd
}

impl TestPg {
    pub fn start() -> TestPg {
        TestPg::start_with(None)
    }

    /// A server that also listens on 127.0.0.1; with `tls` (certificate
    /// chain and key PEM files) it offers TLS (`ssl = on`).
    pub fn start_tcp(tls: Option<(&Path, &Path)>) -> TestPg {
        TestPg::start_with(Some(tls))
    }

    fn start_with(tcp: Option<Option<(&Path, &Path)>>) -> TestPg {
        assert!(
            Path::new(BIN).join("postgres").exists(),
            "PostgreSQL 15 is not installed ({BIN}); install Debian's `postgresql` package"
        );
        let dir = tempfile::Builder::new()
            .prefix("rmilter-pg-")
            .tempdir()
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let data = dir.path().join("data");
        let socket_dir = dir.path().join("sock");
        for d in [&data, &socket_dir] {
            std::fs::create_dir(d).unwrap();
            let st = Command::new("chown")
                .arg("postgres:postgres")
                .arg(d)
                .status()
                .unwrap();
            assert!(st.success());
        }
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
        let mut listen = "''".to_string();
        let mut ssl = String::new();
        if let Some(tls) = tcp {
            listen = "127.0.0.1".into();
            if let Some((cert, key)) = tls {
                let (c, k) = (dir.path().join("server.crt"), dir.path().join("server.key"));
                std::fs::copy(cert, &c).unwrap();
                std::fs::copy(key, &k).unwrap();
                for f in [&c, &k] {
                    Command::new("chown")
                        .arg("postgres:postgres")
                        .arg(f)
                        .status()
                        .unwrap();
                    std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o600)).unwrap();
                }
                ssl = format!(
                    " -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
                    c.display(),
                    k.display()
                );
            }
        }
        let data_s = data.display().to_string();
        let out = run_bounded(
            as_postgres(
                "initdb",
                &[
                    "-D",
                    &data_s,
                    "-A",
                    "trust",
                    "-U",
                    "postgres",
                    "--no-sync",
                    "-E",
                    "UTF8",
                ],
            ),
            None,
            Duration::from_secs(120),
        );
        assert!(out.status.success(), "initdb: {}", show(&out));
        let log = dir.path().join("postgres.log");
        std::fs::write(&log, b"").unwrap();
        Command::new("chown")
            .arg("postgres:postgres")
            .arg(&log)
            .status()
            .unwrap();
        let mut last = String::new();
        for _ in 0..3 {
            let port = free_port();
            let options = format!(
                "-p {port} -k {} -c listen_addresses={listen} -c fsync=off -c max_connections=50{ssl}",
                socket_dir.display()
            );
            let out = run_bounded(
                as_postgres(
                    "pg_ctl",
                    &[
                        "-D",
                        &data_s,
                        "-l",
                        &log.display().to_string(),
                        "-o",
                        &options,
                        "-w",
                        "-t",
                        "60",
                        "start",
                    ],
                ),
                None,
                Duration::from_secs(90),
            );
            if out.status.success() {
                return TestPg {
                    dir,
                    data,
                    socket_dir,
                    port,
                    tcp: tcp.is_some(),
                };
            }
            last = format!(
                "{}\n{}",
                show(&out),
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        panic!("could not start PostgreSQL: {last}");
    }

    /// The connection string rmilter's `report.store` takes.
    pub fn url(&self) -> String {
        format!(
            "postgres://postgres@localhost/postgres?host={}&port={}",
            self.socket_dir.display(),
            self.port
        )
    }

    /// A connection string over TCP to 127.0.0.1 naming the server `host`
    /// (what TLS checks the certificate against), for database `db`, with
    /// `extra` query parameters (`sslmode=…&sslrootcert=…`).
    pub fn tcp_url(&self, host: &str, db: &str, extra: &str) -> String {
        assert!(self.tcp, "start the server with TestPg::start_tcp");
        let sep = if extra.is_empty() { "" } else { "&" };
        format!(
            "postgres://postgres@{host}:{}/{db}?hostaddr=127.0.0.1{sep}{extra}",
            self.port
        )
    }

    /// Create an empty database; returns its connection string (unix socket).
    pub fn create_db(&self, name: &str) -> String {
        let port = self.port.to_string();
        let sock = self.socket_dir.display().to_string();
        let out = run_bounded(
            as_postgres(
                "createdb",
                &["-h", &sock, "-p", &port, "-U", "postgres", name],
            ),
            None,
            Duration::from_secs(60),
        );
        assert!(out.status.success(), "createdb {name}: {}", show(&out));
        format!("postgres://postgres@localhost/{name}?host={sock}&port={port}",)
    }

    /// Run one SQL statement with psql (as `postgres`, over the socket) and
    /// return its unaligned, tuples-only output.
    pub fn psql(&self, sql: &str) -> String {
        let port = self.port.to_string();
        let sock = self.socket_dir.display().to_string();
        let out = run_bounded(
            as_postgres(
                "psql",
                &["-h", &sock, "-p", &port, "-U", "postgres", "-XAtc", sql],
            ),
            None,
            Duration::from_secs(60),
        );
        assert!(out.status.success(), "psql {sql}: {}", show(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Put `line` first in pg_hba.conf and reload.
    pub fn hba_first(&self, line: &str) {
        let hba = self.data.join("pg_hba.conf");
        let old = std::fs::read_to_string(&hba).unwrap();
        std::fs::write(&hba, format!("{line}\n{old}")).unwrap();
        assert_eq!(self.psql("SELECT pg_reload_conf()"), "t");
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for TestPg {
    fn drop(&mut self) {
        let _ = run_bounded(
            as_postgres(
                "pg_ctl",
                &[
                    "-D",
                    &self.data.display().to_string(),
                    "-m",
                    "immediate",
                    "-w",
                    "stop",
                ],
            ),
            None,
            Duration::from_secs(60),
        );
    }
}
