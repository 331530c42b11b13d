//! `rmilter explain` against the daemon: for the third-party vectors in
//! tests/data/third-party and the regression corpora in tests/corpus, the same
//! message goes once through the milter (in-process, the test DNS server
//! serving the zone) and once through `rmilter explain --dns ZONEFILE
//! --json` (the binary, its own zone server answering from the same zone
//! file); the Authentication-Results field, the action and the SMTP reply
//! must be identical. Also: outbound explanations sign like the daemon, and
//! the text trace names every step.

mod common;

use common::dns::{TestDns, Zone};
use common::drive::{self, Envelope, Outcome};
use common::keys::TestKeys;
use common::milter::TestMilter;
use common::sign::{SignOptions, sign};
use indymilter_test::{EomAction, Status};
use rmilter::config::KeyAlgorithm;
use std::path::{Path, PathBuf};
use std::process::Command;

fn testdata(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/third-party")
        .join(path)
}

fn crlf(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 64);
    let mut prev = 0u8;
    for &b in data {
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        prev = b;
    }
    out
}

/// A zone-file TXT line with the value quoted in strings of at most 250 bytes.
fn txt_line(owner: &str, value: &str) -> String {
    let strings: Vec<String> = value
        .as_bytes()
        .chunks(250)
        .map(|c| {
            format!(
                "\"{}\"",
                String::from_utf8_lossy(c)
                    .replace('\\', "\\\\")
                    .replace('"', "\\\"")
            )
        })
        .collect();
    format!("{owner} TXT {}\n", strings.join(" "))
}

/// "name value" lines (the testdata format) as zone-file TXT lines.
fn zone_from_name_value(text: &str) -> String {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (name, value) = l.trim().split_once(' ').unwrap();
            txt_line(name, value.trim())
        })
        .collect()
}

/// What one side decided.
#[derive(Debug, PartialEq, Eq)]
struct Decided {
    action: String,
    reply: Option<String>,
    results: Option<String>,
}

fn daemon_decided(out: &Outcome) -> Decided {
    let reply = match &out.status {
        Status::Reject { message: Some(m) } | Status::Tempfail { message: Some(m) } => {
            Some(m.to_string_lossy().into_owned())
        }
        _ => None,
    };
    let action = match &out.status {
        Status::Reject { .. } => "reject",
        Status::Tempfail { .. } => "tempfail",
        _ if out
            .actions
            .iter()
            .any(|a| matches!(a, EomAction::Quarantine { .. })) =>
        {
            "quarantine"
        }
        _ => "accept",
    };
    Decided {
        action: action.to_string(),
        reply,
        results: out.inserted("Authentication-Results").first().cloned(),
    }
}

struct Case<'a> {
    name: String,
    zone: String,
    message: Vec<u8>,
    env: Envelope,
    config: &'a str,
}

/// Run the case both ways; `Err` describes a difference.
async fn compare(case: &Case<'_>, work: &Path) -> Result<(), String> {
    let dns = TestDns::start(Zone::from_zone_file_lines(&case.zone));
    let milter = TestMilter::start_toml(&format!(
        "{}\n[dns]\nnameservers = [\"{}\"]\ntimeout = \"500ms\"\nattempts = 1\n",
        case.config,
        dns.addr()
    ));
    let out = drive::drive(milter.inet_addr(), &case.env, &case.message).await;
    let daemon = daemon_decided(&out);
    drop(milter);
    drop(dns);

    let dir = work.join(&case.name);
    std::fs::create_dir_all(&dir).unwrap();
    let (msg, zone, cfg) = (
        dir.join("message.eml"),
        dir.join("zone.txt"),
        dir.join("rmilter.toml"),
    );
    std::fs::write(&msg, &case.message).unwrap();
    std::fs::write(&zone, &case.zone).unwrap();
    std::fs::write(
        &cfg,
        format!(
            "{}\n[dns]\nnameservers = [\"127.0.0.1:9\"]\ntimeout = \"500ms\"\nattempts = 1\n",
            case.config
        ),
    )
    .unwrap();
    let helo = case.env.helo.clone();
    let mail_from = case.env.mail_from.trim_matches(['<', '>']).to_string();
    let output = Command::new(env!("CARGO_BIN_EXE_rmilter"))
        .arg("explain")
        .arg(&msg)
        .args(["--client-ip", &case.env.client_addr.ip().to_string()])
        .args(["--helo", &helo, "--mail-from", &mail_from])
        .args(["--daemon-name", &case.env.daemon_name])
        .arg("--dns")
        .arg(&zone)
        .arg("-c")
        .arg(&cfg)
        .arg("--json")
        .output()
        .unwrap();
    if !output.status.success() {
        return Err(format!(
            "explain failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let json: serde_json::Value = serde_json::from_slice(&output.stdout)
        .map_err(|e| format!("explain printed no JSON: {e}"))?;
    let explained = Decided {
        action: json["action"].as_str().unwrap_or_default().to_string(),
        reply: json["reply"].as_str().map(str::to_string),
        results: json["authentication_results"].as_str().map(str::to_string),
    };
    if explained != daemon {
        return Err(format!("daemon:  {daemon:?}\n    explain: {explained:?}"));
    }
    Ok(())
}

async fn run_all(cases: Vec<Case<'_>>, min: usize) {
    assert!(cases.len() >= min, "{} cases", cases.len());
    let work = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for case in &cases {
        if let Err(e) = compare(case, work.path()).await {
            failures.push(format!("{}:\n    {e}", case.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

const VERIFY: &str = "authserv_id = \"mx.example.org\"\n";

#[tokio::test(flavor = "multi_thread")]
async fn explain_matches_the_daemon_on_the_testdata_vectors() {
    let mut cases = Vec::new();
    let rfc8463 = zone_from_name_value(
        &std::fs::read_to_string(testdata("dkim/rfc8463/rfc8463-appendix-a.dns.txt")).unwrap(),
    );
    cases.push(Case {
        name: "rfc8463-appendix-a".into(),
        zone: rfc8463,
        message: std::fs::read(testdata("dkim/rfc8463/rfc8463-appendix-a.eml")).unwrap(),
        env: Envelope::inbound(),
        config: VERIFY,
    });
    let football = txt_line(
        "test._domainkey.football.example.com",
        std::fs::read_to_string(testdata("dkim/dkimpy/test.txt"))
            .unwrap()
            .trim(),
    ) + &txt_line(
        "brisbane._domainkey.football.example.com",
        "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=",
    ) + &txt_line("_dmarc.football.example.com", "v=DMARC1; p=reject");
    for file in [
        "rfc6376.signed.msg",
        "rfc6376.signed.rsa.msg",
        "rfc6376.signed.no_t.msg",
        "rfc6376.msg",
    ] {
        cases.push(Case {
            name: format!("dkimpy-{file}"),
            zone: football.clone(),
            message: crlf(&std::fs::read(testdata(&format!("dkim/dkimpy/{file}"))).unwrap()),
            env: Envelope::inbound(),
            config: VERIFY,
        });
    }
    for file in [
        "real-world/mail-auth-dkim-002.txt",
        "arc/mail-auth-arc-002.txt",
    ] {
        let text = crlf(&std::fs::read(testdata(file)).unwrap());
        let split = text.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        cases.push(Case {
            name: file.replace('/', "-"),
            zone: zone_from_name_value(&String::from_utf8_lossy(&text[..split])),
            message: text[split + 4..].to_vec(),
            env: Envelope::inbound(),
            config: VERIFY,
        });
    }
    // A forged display of the vector's identity from an address SPF fails for.
    let mut spf_fail = Envelope::inbound();
    spf_fail.mail_from = "<jdoe@football.example.com>".into();
    cases.push(Case {
        name: "rfc8463-spf-fail".into(),
        zone: football.clone() + &txt_line("football.example.com", "v=spf1 ip4:192.0.2.1 -all"),
        message: b"From: Joe <joe@football.example.com>\r\nSubject: forged\r\n\r\nbody\r\n"
            .to_vec(),
        env: spf_fail,
        config: VERIFY,
    });
    run_all(cases, 8).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn explain_matches_the_daemon_on_the_regression_cases() {
    let keys = TestKeys::new(&[("sender.example", "rsa", KeyAlgorithm::Rsa)]);
    let base = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/cases");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&base)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    dirs.sort();
    let mut cases = Vec::new();
    for dir in &dirs {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let case: toml::Value =
            toml::from_str(&std::fs::read_to_string(dir.join("case.toml")).unwrap()).unwrap();
        // A zone file cannot say "this name never answers": the cases that
        // inject DNS timeouts are left to tests/corpus_cases.rs.
        if case.get("faults").is_some() {
            continue;
        }
        let mut zone = std::fs::read_to_string(dir.join("zone.txt")).unwrap();
        for (owner, value) in keys.dns() {
            zone.push_str(&txt_line(&owner, &value));
        }
        let mut message = std::fs::read(dir.join("message.eml")).unwrap();
        if let Some(spec) = case.get("sign") {
            message = sign(
                &keys.keys[0],
                &message,
                &SignOptions {
                    body_length: spec
                        .get("body_length")
                        .and_then(|v| v.as_bool())
                        .unwrap_or(false),
                    ..Default::default()
                },
            );
            if let Some(append) = spec.get("append").and_then(|v| v.as_str()) {
                message.extend_from_slice(append.as_bytes());
            }
        }
        let envelope = &case["envelope"];
        let env = Envelope {
            client_addr: format!("{}:40000", envelope["client"].as_str().unwrap())
                .parse()
                .unwrap(),
            helo: envelope["helo"].as_str().unwrap().to_string(),
            mail_from: format!("<{}>", envelope["mail_from"].as_str().unwrap()),
            ..Envelope::inbound()
        };
        cases.push(Case {
            name,
            zone,
            message,
            env,
            config: VERIFY,
        });
    }
    run_all(cases, 25).await;
}

const CORPUS_ZONE: &str = "\
legitimate.com A 192.0.2.1
legitimate.com TXT \"v=spf1 ip4:192.0.2.1 -all\"
_dmarc.legitimate.com TXT \"v=DMARC1; p=reject\"
attack.com A 198.51.100.9
attack.com TXT \"v=spf1 ip4:198.51.100.9 -all\"
_dmarc.attack.com TXT \"v=DMARC1; p=none\"
sender.example TXT \"v=spf1 ip4:192.0.2.2 -all\"
_dmarc.sender.example TXT \"v=DMARC1; p=reject\"
";

fn eml_corpus(dir: &str) -> Vec<(String, Vec<u8>)> {
    let base = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&base)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "eml"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            (
                format!("{dir}-{}", p.file_stem().unwrap().to_string_lossy()),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn explain_matches_the_daemon_on_the_from_gate_and_results_corpora() {
    let config = "authserv_id = \"mx.example.org\"\n[policy]\nreject = \"reject\"\n";
    let mut cases = Vec::new();
    for (name, message) in eml_corpus("from-gate") {
        cases.push(Case {
            name,
            zone: CORPUS_ZONE.to_string(),
            message,
            env: Envelope {
                client_addr: "198.51.100.9:40000".parse().unwrap(),
                mail_from: "<x@attack.com>".into(),
                ..Envelope::inbound()
            },
            config,
        });
    }
    for (name, message) in eml_corpus("results") {
        cases.push(Case {
            name,
            zone: CORPUS_ZONE.to_string(),
            message,
            env: Envelope {
                client_addr: "203.0.113.66:40000".parse().unwrap(),
                mail_from: "<alice@sender.example>".into(),
                ..Envelope::inbound()
            },
            config,
        });
    }
    run_all(cases, 30).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn explain_traces_inbound_and_outbound_messages() {
    let keys = TestKeys::new(&[("sender.example", "rsa", KeyAlgorithm::Rsa)]);
    let work = tempfile::tempdir().unwrap();
    let mut zone = CORPUS_ZONE.to_string();
    for (owner, value) in keys.dns() {
        zone.push_str(&txt_line(&owner, &value));
    }
    let zone_path = work.path().join("zone.txt");
    std::fs::write(&zone_path, &zone).unwrap();
    let cfg = work.path().join("rmilter.toml");
    std::fs::write(
        &cfg,
        format!(
            "authserv_id = \"mx.example.org\"\n{}[dns]\nnameservers = [\"127.0.0.1:9\"]\ntimeout = \"500ms\"\n",
            keys.toml()
        ),
    )
    .unwrap();
    let raw = common::message("Alice <alice@sender.example>", "explain me", "Hello.\r\n");
    let msg = work.path().join("message.eml");
    std::fs::write(&msg, &raw).unwrap();
    let explain = |extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_rmilter"))
            .arg("explain")
            .arg(&msg)
            .arg("--dns")
            .arg(&zone_path)
            .arg("-c")
            .arg(&cfg)
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };

    // Inbound from an address SPF fails for: every step is named.
    let text = explain(&[
        "--client-ip",
        "198.51.100.9",
        "--helo",
        "mail.attack.com",
        "--mail-from",
        "alice@sender.example",
    ]);
    for step in [
        "direction    inbound: no outbound rule matched (no SASL login; not local submission; client 198.51.100.9 not in outbound.networks [127.0.0.0/8, ::1/128]; no {daemon_name})",
        "from gate    author alice@sender.example (domain sender.example)",
        "dkim         none (no DKIM-Signature)",
        "spf helo     mail.attack.com: none",
        "spf mailfrom sender.example: fail",
        "arc          none",
        "dmarc        sender.example: fail (no aligned pass)",
        "record at _dmarc.sender.example: p=reject sp=reject np=reject; applies reject",
        "aligned: dkim no, spf no",
        "policy       dmarc=fail policy=reject -> reject",
        "Authentication-Results: mx.example.org;",
        "action       reject: 550 5.7.1 rejected by the DMARC policy of sender.example: no aligned DKIM or SPF pass",
    ] {
        assert!(text.contains(step), "missing {step:?} in\n{text}");
    }

    // Outbound (SASL login): the keys and the signature the daemon would add.
    let text = explain(&["--auth", "alice", "--client-ip", "203.0.113.9"]);
    assert!(
        text.contains("direction    outbound: SASL login \"alice\" (outbound.authenticated)"),
        "{text}"
    );
    assert!(
        text.contains("signing      key d=sender.example s=rsa a=rsa-sha256 (2048 bits"),
        "{text}"
    );
    assert!(
        text.contains(
            "signed h=    From:Subject:Date:Message-ID:To:MIME-Version:Content-Type:From:Sender:"
        ),
        "{text}"
    );
    assert!(
        text.contains("DKIM-Signature: v=1; a=rsa-sha256;"),
        "{text}"
    );
    assert!(text.contains("action       accept"), "{text}");
    // The signature it prints verifies against the published key.
    let json: serde_json::Value =
        serde_json::from_str(&explain(&["--auth", "alice", "--json"])).unwrap();
    let sig = json["signing"]["signatures"][0].as_str().unwrap();
    let signed = [
        format!("DKIM-Signature:{}\r\n", sig.replace('\n', "\r\n")).into_bytes(),
        raw.clone(),
    ]
    .concat();
    let dns = TestDns::start(Zone::from_zone_file_lines(&zone));
    let milter = TestMilter::start_toml(&format!(
        "authserv_id = \"mx.example.org\"\n[dns]\nnameservers = [\"{}\"]\ntimeout = \"500ms\"\nattempts = 1\n",
        dns.addr()
    ));
    let mut env = Envelope::inbound();
    env.client_addr = "192.0.2.99:40000".parse().unwrap();
    let out = drive::drive(milter.inet_addr(), &env, &signed).await;
    let ar = out.inserted("Authentication-Results")[0].replace("\n\t", " ");
    assert!(
        ar.contains("dkim=pass header.d=sender.example header.s=rsa"),
        "{ar}"
    );
    assert!(ar.contains("dmarc=pass"), "{ar}");

    // A message the From gate refuses.
    std::fs::write(
        &msg,
        b"From: a@sender.example, b@attack.com\r\nSubject: two\r\n\r\nx\r\n",
    )
    .unwrap();
    let text = explain(&["--client-ip", "198.51.100.9"]);
    assert!(text.contains("from gate    refused:"), "{text}");
    assert!(
        text.contains("action       reject: 550 5.7.1 message refused:"),
        "{text}"
    );

    // A bad zone file is named with its line.
    std::fs::write(&zone_path, "ok.example A 192.0.2.1\nbad.example A nope\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_rmilter"))
        .arg("explain")
        .arg(&msg)
        .arg("--dns")
        .arg(&zone_path)
        .arg("-c")
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        format!("rmilter: {}: line 2: bad IPv4 address", zone_path.display())
    );
}

/// Signing rules and logins in explain: which rule matched and why, the `%`
/// key signing with the From domain, a third-party key, and a login that
/// may not send as the From address (the daemon's reply).
#[test]
fn explain_shows_the_matching_rule_and_the_login_verdict() {
    let keys = TestKeys::new(&[
        ("any.example", "mail", KeyAlgorithm::Ed25519),
        ("relay.example", "esp", KeyAlgorithm::Ed25519),
    ]);
    let work = tempfile::tempdir().unwrap();
    let cfg = work.path().join("rmilter.toml");
    std::fs::write(
        &cfg,
        format!(
            "authserv_id = \"mx.example.org\"\n\
             [signing.logins]\nenabled = true\naction = \"reject\"\n\n\
             [[key]]\nname = \"shared\"\ndomain = \"%\"\nselector = \"mail\"\nfile = \"{}\"\n\n\
             [[key]]\nname = \"relay\"\ndomain = \"relay.example\"\nselector = \"esp\"\nfile = \"{}\"\n\n\
             [[signing.rule]]\nsender = \"noreply@sender.example\"\nkeys = []\n\n\
             [[signing.rule]]\nsender = \"*@sender.example\"\nkeys = [\"shared\", \"relay\"]\n\n\
             [dns]\nnameservers = [\"127.0.0.1:9\"]\ntimeout = \"500ms\"\n",
            keys.keys[0].path.display(),
            keys.keys[1].path.display()
        ),
    )
    .unwrap();
    let explain = |from: &str, auth: &str| {
        let msg = work.path().join("message.eml");
        std::fs::write(&msg, common::message(from, "rules", "Hello.\r\n")).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_rmilter"))
            .arg("explain")
            .arg(&msg)
            .args(["--auth", auth, "--client-ip", "203.0.113.9", "-c"])
            .arg(&cfg)
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    let text = explain("Alice <alice@sender.example>", "alice@sender.example");
    for step in [
        "rules        signing.rule[1] \"*@sender.example\" matches alice@sender.example (rule_match = first)",
        "login        alice@sender.example may send as alice@sender.example: sender.example is the login's own domain",
        "signing      key d=sender.example s=mail a=ed25519-sha256 (256 bits",
        ", key shared, domain \"%\": the From domain)",
        "signing      key d=relay.example s=esp a=ed25519-sha256 (256 bits",
        ", key relay, third-party signature)",
    ] {
        assert!(text.contains(step), "missing {step:?} in\n{text}");
    }
    let text = explain("noreply@sender.example", "alice@sender.example");
    assert!(
        text.contains(
            "signing      not signed: no signing rule gives a key for noreply@sender.example"
        ),
        "{text}"
    );
    let text = explain("ceo@sender.example", "mallory@customer.example");
    for step in [
        "login        refused: login mallory@customer.example may not send as ceo@sender.example: no grant in signing.logins.allow, not the login's own domain",
        "action       reject: 550 5.7.1 login mallory@customer.example may not send as ceo@sender.example",
    ] {
        assert!(text.contains(step), "missing {step:?} in\n{text}");
    }
}
