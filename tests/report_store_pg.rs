//! The shared PostgreSQL report store against a private PostgreSQL server:
//! several hosts (connections, and `rmilter report generate` processes)
//! opening a new, empty store at the same moment all succeed (the migration
//! is serialised before anything is created), and TLS to the
//! server honours `sslmode` and `sslrootcert` in the store URL with a test CA
//! made here by the openssl CLI.

mod common;

use common::pg::TestPg;
use rmilter::config::ReportStore;
use rmilter::report::store::Store;
use std::sync::{Arc, Barrier};
use std::time::Duration;

const BUSY: Duration = Duration::from_secs(5);

fn open(url: &str) -> Result<Store, String> {
    Store::open(&ReportStore::Postgres(url.to_string()), BUSY).map_err(|e| e.to_string())
}

#[test]
fn hosts_opening_a_new_store_at_once_all_succeed() {
    let pg = TestPg::start();
    const HOSTS: usize = 6;
    let mut failures = Vec::new();
    for round in 0..8 {
        let url = pg.create_db(&format!("race{round}"));
        let barrier = Arc::new(Barrier::new(HOSTS));
        let handles: Vec<_> = (0..HOSTS)
            .map(|_| {
                let (url, barrier) = (url.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    open(&url).map(|mut s| s.store_id().unwrap())
                })
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let ids: std::collections::BTreeSet<_> = results.iter().flatten().cloned().collect();
        failures.extend(results.into_iter().filter_map(Result::err));
        assert!(ids.len() <= 1, "round {round}: several store ids {ids:?}");
    }
    assert!(
        failures.is_empty(),
        "{} opens failed: {failures:?}",
        failures.len()
    );
}

/// The same from processes: `rmilter report generate` run by several
/// "hosts" at once on a new store all exit 0.
#[test]
fn concurrent_report_generate_on_a_new_store_succeeds() {
    let pg = TestPg::start();
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for round in 0..4 {
        let url = pg.create_db(&format!("gen{round}"));
        let cfg = dir.path().join(format!("rmilter{round}.toml"));
        std::fs::write(
            &cfg,
            format!(
                "authserv_id = \"mx.example.org\"\n[report]\nenabled = true\nstore = \"{url}\"\nreporting_domain = \"mx.example.org\"\n"
            ),
        )
        .unwrap();
        let children: Vec<_> = (0..5)
            .map(|i| {
                std::process::Command::new(env!("CARGO_BIN_EXE_rmilter"))
                    .args(["report", "generate", "-c"])
                    .arg(&cfg)
                    .arg("--out")
                    .arg(dir.path().join(format!("out{round}-{i}")))
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for child in children {
            let out = child.wait_with_output().unwrap();
            if !out.status.success() {
                failures.push(String::from_utf8_lossy(&out.stderr).into_owned());
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of 20 failed: {failures:?}",
        failures.len()
    );
}

/// A test CA and a server certificate it signed for `name`, made with the
/// openssl CLI: (CA certificate, server certificate, server key).
struct TestCa {
    dir: tempfile::TempDir,
}

impl TestCa {
    fn new(server_name: &str) -> TestCa {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let run = |args: &[&str]| {
            let out = std::process::Command::new("openssl")
                .args(args)
                .current_dir(d)
                .output()
                .expect("openssl is installed");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ];
        let mut ca = vec![
            "req", "-x509", "-days", "2", "-keyout", "ca.key", "-out", "ca.crt",
        ];
        ca.extend(ec);
        // A CA name of its own, so that another TestCa is another issuer.
        let ca_subject = format!(
            "/CN=rmilter test CA {}",
            d.file_name().unwrap().to_string_lossy()
        );
        ca.extend([
            "-subj",
            &ca_subject,
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        run(&ca);
        let subj = format!("/CN={server_name}");
        let mut csr = vec!["req", "-new", "-keyout", "server.key", "-out", "server.csr"];
        csr.extend(ec);
        csr.extend(["-subj", &subj]);
        run(&csr);
        std::fs::write(
            d.join("ext.cnf"),
            format!(
                "subjectAltName=DNS:{server_name}\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
            ),
        )
        .unwrap();
        run(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
            "-out",
            "server.crt",
        ]);
        TestCa { dir }
    }

    fn ca(&self) -> String {
        self.dir.path().join("ca.crt").display().to_string()
    }
    fn cert(&self) -> std::path::PathBuf {
        self.dir.path().join("server.crt")
    }
    fn key(&self) -> std::path::PathBuf {
        self.dir.path().join("server.key")
    }
}

/// How many client connections of the server use TLS.
fn tls_connections(pg: &TestPg) -> i64 {
    pg.psql("SELECT count(*) FROM pg_stat_ssl WHERE ssl")
        .parse()
        .unwrap()
}

#[test]
fn tls_to_the_store_honours_sslmode_and_sslrootcert() {
    let ca = TestCa::new("pg.test");
    let other_ca = TestCa::new("pg.test");
    let pg = TestPg::start_tcp(Some((&ca.cert(), &ca.key())));
    let root = format!("sslrootcert={}", ca.ca());

    // verify-full with the CA: a TLS connection that works.
    let url = pg.tcp_url(
        "pg.test",
        "postgres",
        &format!("sslmode=verify-full&{root}"),
    );
    let mut store = open(&url).expect("verify-full with the CA");
    assert!(!store.store_id().unwrap().is_empty());
    assert_eq!(tls_connections(&pg), 1);
    drop(store);

    // verify-full without the CA: refused before connecting.
    let e = open(&pg.tcp_url("pg.test", "postgres", "sslmode=verify-full")).unwrap_err();
    assert!(e.contains("sslmode=verify-full needs sslrootcert"), "{e}");
    // ... with another CA: the chain is refused.
    let e = open(&pg.tcp_url(
        "pg.test",
        "postgres",
        &format!("sslmode=verify-full&sslrootcert={}", other_ca.ca()),
    ))
    .unwrap_err();
    assert!(e.contains("TLS") && e.contains("UnknownIssuer"), "{e}");
    // ... on a name mismatch: refused, naming the name.
    let e = open(&pg.tcp_url(
        "db.other.test",
        "postgres",
        &format!("sslmode=verify-full&{root}"),
    ))
    .unwrap_err();
    assert!(
        e.contains("not valid for name") && e.contains("db.other.test"),
        "{e}"
    );
    // verify-ca checks the chain only; require without a CA encrypts only.
    for mode in [
        format!("sslmode=verify-ca&{root}"),
        "sslmode=require".into(),
    ] {
        let store = open(&pg.tcp_url("db.other.test", "postgres", &mode))
            .unwrap_or_else(|e| panic!("{mode}: {e}"));
        assert_eq!(tls_connections(&pg), 1, "{mode}");
        drop(store);
    }
    let e = open(&pg.tcp_url(
        "db.other.test",
        "postgres",
        &format!("sslmode=verify-ca&sslrootcert={}", other_ca.ca()),
    ))
    .unwrap_err();
    assert!(e.contains("UnknownIssuer"), "{e}");
    // prefer (the default) uses TLS when offered; disable does not.
    let _prefer = open(&pg.tcp_url("pg.test", "postgres", "")).expect("prefer");
    assert_eq!(tls_connections(&pg), 1);
    let _plain = open(&pg.tcp_url("pg.test", "postgres", "sslmode=disable")).expect("disable");
    assert_eq!(tls_connections(&pg), 1);
    assert_eq!(
        pg.psql(
            "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE NOT s.ssl AND a.client_addr IS NOT NULL"
        ),
        "1"
    );
}

#[test]
fn require_refuses_a_server_without_tls() {
    let pg = TestPg::start_tcp(None);
    let e = open(&pg.tcp_url("localhost", "postgres", "sslmode=require")).unwrap_err();
    assert!(e.contains("server does not support TLS"), "{e}");
    let ca = TestCa::new("localhost");
    let e = open(&pg.tcp_url(
        "localhost",
        "postgres",
        &format!("sslmode=verify-full&sslrootcert={}", ca.ca()),
    ))
    .unwrap_err();
    assert!(e.contains("server does not support TLS"), "{e}");
    // prefer falls back to a plain connection.
    let _store = open(&pg.tcp_url("localhost", "postgres", "sslmode=prefer")).expect("prefer");
}

/// A password (SCRAM-SHA-256) login over TLS, bound to the TLS channel
/// (SCRAM-SHA-256-PLUS, `channel_binding=require`); a wrong password is
/// refused by PostgreSQL's message, without showing it.
#[test]
fn scram_login_over_tls() {
    let ca = TestCa::new("pg.test");
    let pg = TestPg::start_tcp(Some((&ca.cert(), &ca.key())));
    pg.psql(
        "SET password_encryption = 'scram-sha-256'; CREATE ROLE rmilter LOGIN PASSWORD 'pw s3cret'",
    );
    pg.hba_first("hostssl all rmilter 127.0.0.1/32 scram-sha-256");
    let url = |password: &str| {
        format!(
            "postgres://rmilter:{password}@pg.test:{}/postgres?hostaddr=127.0.0.1&sslmode=verify-full&sslrootcert={}",
            pg.port(),
            ca.ca()
        )
    };
    pg.psql("GRANT CREATE ON SCHEMA public TO rmilter");
    let _store = open(&url("pw%20s3cret")).expect("SCRAM over TLS");
    assert_eq!(tls_connections(&pg), 1);
    // SCRAM-SHA-256-PLUS: bound to the server's certificate (ECDSA P-256,
    // SHA-256); a wrong binding would fail the login.
    let _bound = open(&format!("{}&channel_binding=require", url("pw%20s3cret")))
        .expect("SCRAM-SHA-256-PLUS over TLS");
    let e = open(&url("wrong")).unwrap_err();
    assert!(e.contains("password authentication failed"), "{e}");
    assert!(!e.contains("wrong"), "the password is not shown: {e}");
}
