//! `rmilter doctor`: the corpus of Postfix configurations in tests/doctor
//! (one good configuration and one per finding), each with the findings it
//! must give; the DNS checks against zones with each problem; and a run
//! against the real-Postfix test harness's own configuration, which must
//! come out clean for the milter wiring (read from the directory and
//! through `postconf`).
//!
//! A case directory holds main.cf, master.cf, expected.txt and optionally
//! rmilter.toml (else tests/doctor/rmilter.toml applies), table files, and
//! `no-listener` (rmilter is not running). In every file @TMP@ is the
//! case's private directory, @DIR@ the directory the files are copied to and
//! @PORT@ a port on 127.0.0.1. Unless `no-listener` is there, the test
//! listens where rmilter's configuration says, the way rmilter binds (a
//! unix socket gets the configured mode and group).
//!
//! expected.txt: one finding per line, `severity id`, optionally followed
//! by an indented `fix: ...` line the finding's fix must equal.

mod common;

use common::dns::{TestDns, Zone};
use common::keys::TestKeys;
use common::milter::TestMilter;
use common::postfix::{Postfix, PostfixConfig};
use rmilter::config::{KeyAlgorithm, ListenAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/doctor")
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Expected {
    severity: String,
    id: String,
    fix: Option<String>,
}

fn parse_expected(text: &str) -> Vec<Expected> {
    let mut out: Vec<Expected> = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(fix) = line.trim_start().strip_prefix("fix: ")
            && line.starts_with(' ')
        {
            out.last_mut().expect("fix: line without a finding").fix = Some(fix.to_string());
            continue;
        }
        let (severity, id) = line.split_once(' ').expect("severity id");
        out.push(Expected {
            severity: severity.to_string(),
            id: id.trim().to_string(),
            fix: None,
        });
    }
    out
}

/// Run `rmilter doctor` and return its exit code and findings.
fn doctor(args: &[&str], env: &[(&str, &Path)]) -> (i32, serde_json::Value) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rmilter"));
    cmd.arg("doctor").args(args).arg("--json");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "doctor printed no JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), json)
}

fn findings(json: &serde_json::Value) -> Vec<Expected> {
    json["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| Expected {
            severity: f["severity"].as_str().unwrap().to_string(),
            id: f["id"].as_str().unwrap().to_string(),
            fix: f["fix"].as_str().map(str::to_string),
        })
        .collect()
}

/// Expected findings match when the same (severity, id) pairs occur as
/// often, and every fix given is the fix of one of them.
fn matches(expected: &[Expected], got: &[Expected]) -> bool {
    let key = |e: &Expected| (e.severity.clone(), e.id.clone());
    let mut a: Vec<_> = expected.iter().map(key).collect();
    let mut b: Vec<_> = got.iter().map(key).collect();
    a.sort();
    b.sort();
    if a != b {
        return false;
    }
    expected
        .iter()
        .filter(|e| e.fix.is_some())
        .all(|e| got.iter().any(|g| key(g) == key(e) && g.fix == e.fix))
}

fn show(findings: &[Expected]) -> String {
    findings
        .iter()
        .map(|f| {
            format!(
                "{} {}\n  fix: {}",
                f.severity,
                f.id,
                f.fix.as_deref().unwrap_or_default()
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread")]
async fn every_case_gives_its_findings() {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(root())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    assert!(cases.len() >= 40, "{} cases", cases.len());
    let default_toml = std::fs::read_to_string(root().join("rmilter.toml")).unwrap();
    let mut failures = Vec::new();
    for case in &cases {
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        let tmp = tempfile::tempdir().unwrap();
        // The postfix user must be able to reach a socket below it.
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let dir = tmp.path().join("etc");
        std::fs::create_dir(&dir).unwrap();
        let port_holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = port_holder.local_addr().unwrap().port().to_string();
        let fill = |text: &str| {
            text.replace("@TMP@", &tmp.path().display().to_string())
                .replace("@DIR@", &dir.display().to_string())
                .replace("@PORT@", &port)
        };
        let mut expected_text = String::new();
        for entry in std::fs::read_dir(case).unwrap() {
            let path = entry.unwrap().path();
            let file = path.file_name().unwrap().to_string_lossy().to_string();
            let text = fill(&std::fs::read_to_string(&path).unwrap());
            if file == "expected.txt" {
                expected_text = text;
            } else {
                std::fs::write(dir.join(&file), text).unwrap();
            }
        }
        let toml = dir.join("rmilter.toml");
        if !toml.exists() {
            std::fs::write(&toml, fill(&default_toml)).unwrap();
        }
        let listening = !case.join("no-listener").exists();
        let config = rmilter::config::load(Some(&toml), &toml, &Default::default())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        // Listen where rmilter would, as rmilter binds.
        let mut bound = None;
        match &config.listen {
            ListenAddr::Inet(_) if !listening => drop(port_holder),
            ListenAddr::Inet(_) => bound = Some(Err(port_holder)),
            ListenAddr::Unix(_) if listening => {
                bound = Some(Ok(rmilter::daemon::bind(&config.listen, &config.socket)
                    .unwrap_or_else(|e| panic!("{name}: {e:#}"))));
            }
            ListenAddr::Unix(path) => {
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            }
        }
        let (code, json) = doctor(
            &[
                "--postfix-dir",
                dir.to_str().unwrap(),
                "-c",
                toml.to_str().unwrap(),
                "--no-dns",
            ],
            &[],
        );
        drop(bound);
        let expected = parse_expected(&expected_text);
        let got = findings(&json);
        if !matches(&expected, &got) {
            failures.push(format!(
                "{name}:\n--- expected\n{}\n--- got\n{}",
                show(&expected),
                show(&got)
            ));
            continue;
        }
        let high = got.iter().any(|f| f.severity == "high");
        if code != i32::from(high) {
            failures.push(format!("{name}: exit code {code} with high={high}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}

/// Each DNS problem of a signing domain, from its own zone.
#[test]
fn dns_findings_for_the_signing_domains() {
    let keys = TestKeys::new(&[
        ("example.com", "rsa", KeyAlgorithm::Rsa),
        ("example.com", "ed", KeyAlgorithm::Ed25519),
    ]);
    let (rsa, ed) = (&keys.keys[0].txt, &keys.keys[1].txt);
    let good = || {
        Zone::new()
            .txt("rsa._domainkey.example.com", rsa)
            .txt("ed._domainkey.example.com", ed)
            .txt("example.com", "v=spf1 mx -all")
            .txt(
                "_dmarc.example.com",
                "v=DMARC1; p=reject; rua=mailto:dmarc@example.com",
            )
    };
    let tmp = tempfile::tempdir().unwrap();
    let postfix = tmp.path().join("postfix");
    std::fs::create_dir(&postfix).unwrap();
    for file in ["main.cf", "master.cf"] {
        std::fs::write(
            postfix.join(file),
            std::fs::read_to_string(root().join("good").join(file))
                .unwrap()
                .replace("@TMP@", &tmp.path().display().to_string())
                .replace("@PORT@", "8891"),
        )
        .unwrap();
    }
    let run = |zone: Zone| -> Vec<(String, String)> {
        let dns = TestDns::start(zone);
        let toml = tmp.path().join("rmilter.toml");
        std::fs::write(
            &toml,
            format!(
                "listen = \"inet:127.0.0.1:8891\"\n{}[dns]\nnameservers = [\"{}\"]\ntimeout = \"1s\"\nattempts = 1\n",
                keys.toml(),
                dns.addr()
            ),
        )
        .unwrap();
        let (_, json) = doctor(
            &[
                "--postfix-dir",
                postfix.to_str().unwrap(),
                "-c",
                toml.to_str().unwrap(),
                "--no-probe",
            ],
            &[],
        );
        json["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["category"] == "dns")
            .map(|f| {
                (
                    format!(
                        "{} {}",
                        f["severity"].as_str().unwrap(),
                        f["id"].as_str().unwrap()
                    ),
                    f["summary"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let ids = |found: &[(String, String)]| found.iter().map(|f| f.0.clone()).collect::<Vec<_>>();

    assert_eq!(run(good()), vec![], "a correct zone");

    let found = run(Zone::new()
        .txt("ed._domainkey.example.com", ed)
        .txt("_dmarc.example.com", "v=DMARC1; p=none"));
    assert_eq!(
        ids(&found),
        ["high dkim-record", "medium spf-missing"],
        "{found:?}"
    );
    assert_eq!(found[0].1, "rsa._domainkey.example.com (rsa key): missing");

    let found = run(Zone::new()
        .txt("rsa._domainkey.example.com", ed)
        .txt("ed._domainkey.example.com", &format!("{ed}; t=y"))
        .txt("example.com", "v=spf1 mx -all")
        .txt("example.com", "v=spf1 a -all"));
    assert_eq!(
        ids(&found),
        [
            "high dkim-record",
            "high spf-several",
            "medium dkim-record",
            "medium dmarc-missing"
        ],
        "{found:?}"
    );

    let found = run(good()
        .txt("example.com", "not spf")
        .txt("_dmarc.example.com", "v=DMARC1; p=quarantine"));
    assert_eq!(ids(&found), ["high dmarc-several"], "{found:?}");

    let found = run(Zone::new()
        .txt("rsa._domainkey.example.com", rsa)
        .txt("ed._domainkey.example.com", ed)
        .txt("example.com", "v=spf1 ip4:192.0.2.300 -all")
        .txt(
            "_dmarc.example.com",
            "v=DMARC1; p=reject; rua=mailto:reports@elsewhere.example,mailto:d@example.com",
        ));
    assert_eq!(
        ids(&found),
        ["high spf-syntax", "medium dmarc-rua-unauthorised"],
        "{found:?}"
    );
    // Authorised by the destination: fine.
    let found = run(good()
        .txt("_dmarc.sub.example.com", "v=DMARC1; p=reject")
        .txt("example.com._report._dmarc.elsewhere.example", "v=DMARC1"));
    assert_eq!(found, vec![]);
    let found = run(Zone::new()
        .txt("rsa._domainkey.example.com", rsa)
        .txt("ed._domainkey.example.com", ed)
        .txt("example.com", "v=spf1 -all")
        .txt("_dmarc.example.com", "v=DMARC1; p=bogus"));
    assert_eq!(ids(&found), ["high dmarc-syntax"], "{found:?}");
}

/// Start rmilter in-process where `listen` says, then a private Postfix
/// wired to it with the harness's own configuration, and check that the
/// doctor finds nothing wrong with the wiring: reading the directory, and
/// through `postconf` (MAIL_CONFIG selecting that directory).
fn harness_is_clean(listen: &str, socket: &str) {
    let milter = TestMilter::start_toml(&format!(
        "listen = \"{listen}\"\nauthserv_id = \"mx.example.org\"\n{socket}"
    ));
    let spec = milter.postfix_spec();
    let mut cfg = PostfixConfig::with_milters(&spec);
    cfg.submission = Some(vec![
        ("smtpd_sasl_auth_enable".to_string(), "yes".to_string()),
        (
            "milter_macro_daemon_name".to_string(),
            "ORIGINATING".to_string(),
        ),
    ]);
    let postfix = Postfix::start(cfg);
    // rmilter's configuration as the doctor reads it: the address bound.
    let toml = postfix.dir().join("rmilter.toml");
    std::fs::write(
        &toml,
        format!(
            "listen = \"{}\"\nauthserv_id = \"mx.example.org\"\n{socket}\n[dns]\nnameservers = [\"127.0.0.1:9\"]\n",
            milter.listen
        ),
    )
    .unwrap();
    let wiring = |json: &serde_json::Value| -> Vec<String> {
        json["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["category"] == "milter")
            .map(|f| format!("{} {}: {}", f["severity"], f["id"], f["summary"]))
            .collect()
    };
    let dir = postfix.config_dir().to_str().unwrap().to_string();
    let (_, json) = doctor(
        &[
            "--postfix-dir",
            &dir,
            "-c",
            toml.to_str().unwrap(),
            "--no-dns",
        ],
        &[],
    );
    assert_eq!(wiring(&json), Vec::<String>::new(), "{json:#}");
    // The harness's hardening gaps are reported (SASL without TLS).
    assert!(
        json["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["id"] == "tls-auth-only"),
        "{json:#}"
    );
    let (_, live) = doctor(
        &["-c", toml.to_str().unwrap(), "--no-dns"],
        &[("MAIL_CONFIG", postfix.config_dir())],
    );
    assert_eq!(live["postfix"], "postconf -n and postconf -M", "{live:#}");
    assert_eq!(wiring(&live), Vec::<String>::new(), "{live:#}");
    assert_eq!(live["findings"], json["findings"]);
    drop(postfix);
    drop(milter);
}

#[test]
fn the_postfix_test_harness_is_wired_correctly_over_inet() {
    harness_is_clean("inet:127.0.0.1:0", "");
}

#[test]
fn the_postfix_test_harness_is_wired_correctly_over_a_unix_socket() {
    let dir = tempfile::Builder::new()
        .prefix("rmilter-doctor-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = dir.path().join("run/rmilter.sock");
    harness_is_clean(
        &format!("unix:{}", path.display()),
        "[socket]\ngroup = \"postfix\"\n",
    );
}

/// Signing rules and logins in doctor: a key no rule reaches, a `%` key
/// whose domains are unknown, and SASL submission signing for several
/// domains with `[signing.logins]` off; enabling it clears that finding.
#[test]
fn signing_rules_and_logins_findings() {
    let keys = TestKeys::new(&[
        ("example.com", "s1", KeyAlgorithm::Ed25519),
        ("any.example", "mail", KeyAlgorithm::Ed25519),
        ("unused.example", "u", KeyAlgorithm::Ed25519),
    ]);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("etc");
    std::fs::create_dir(&dir).unwrap();
    for file in ["main.cf", "master.cf"] {
        let text = std::fs::read_to_string(root().join("good").join(file))
            .unwrap()
            .replace("@TMP@", &tmp.path().display().to_string())
            .replace("@PORT@", "8891");
        std::fs::write(dir.join(file), text).unwrap();
    }
    let toml = dir.join("rmilter.toml");
    let write = |logins: bool| {
        std::fs::write(
            &toml,
            format!(
                "listen = \"inet:127.0.0.1:8891\"\n\
                 [signing.logins]\nenabled = {logins}\n\n\
                 [[key]]\ndomain = \"example.com\"\nselector = \"s1\"\nfile = \"{}\"\n\n\
                 [[key]]\nname = \"shared\"\ndomain = \"%\"\nselector = \"mail\"\nfile = \"{}\"\n\n\
                 [[key]]\ndomain = \"unused.example\"\nselector = \"u\"\nfile = \"{}\"\n\n\
                 [[signing.rule]]\nsender = \"*@example.com\"\nkeys = [\"example.com\"]\n\n\
                 [[signing.rule]]\nsender = \"*\"\nkeys = [\"shared\"]\n",
                keys.keys[0].path.display(),
                keys.keys[1].path.display(),
                keys.keys[2].path.display()
            ),
        )
        .unwrap();
    };
    let run = || {
        let (_, json) = doctor(
            &[
                "--postfix-dir",
                dir.to_str().unwrap(),
                "-c",
                toml.to_str().unwrap(),
                "--no-dns",
                "--no-probe",
            ],
            &[],
        );
        json["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["category"] == "signing")
            .map(|f| {
                format!(
                    "{} {}: {}",
                    f["severity"].as_str().unwrap(),
                    f["id"].as_str().unwrap(),
                    f["summary"].as_str().unwrap()
                )
            })
            .collect::<Vec<_>>()
    };
    write(false);
    let got = run();
    let expected = [
        "low signing-rules: key unused.example (s=u) never signs: no [[signing.rule]] names it",
        "info signing-percent-domains: key shared (domain \"%\", selector mail) signs for the senders of signing.rule[1] \"*\": each such domain must publish mail._domainkey.DOMAIN; list them in its domains = [...] to have them checked",
        "low signing-logins: SASL logins have mail signed for 3 signing domains (any (signing.rule[1] \"*\"), example.com, unused.example) and [signing.logins] is off",
    ];
    for e in expected {
        assert!(got.iter().any(|g| g == e), "missing {e:?} in {got:#?}");
    }
    assert_eq!(got.len(), 3, "{got:#?}");
    write(true);
    let got = run();
    assert!(
        !got.iter().any(|g| g.contains("signing-logins")),
        "{got:#?}"
    );
}
