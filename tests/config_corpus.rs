//! Configuration validation: a corpus of bad configuration files, each with
//! the exact error it must give (tests/config/bad/NAME.toml and NAME.err),
//! plus the shipped config/rmilter.toml, which must equal the embedded
//! defaults.

use rmilter::config::{self, Overrides, Source};
use rmilter::runtime::Runtime;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn load_error(path: &Path, overrides: &Overrides) -> String {
    match Runtime::load(
        Some(path),
        Path::new("/nonexistent/rmilter.toml"),
        overrides,
    ) {
        Ok(_) => panic!("{} loaded without error", path.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn every_bad_configuration_gives_its_error() {
    let dir = root().join("tests/config/bad");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    cases.sort();
    assert!(cases.len() >= 30, "corpus has {} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let expected = std::fs::read_to_string(case.with_extension("err"))
            .unwrap_or_else(|_| panic!("{} has no .err file", case.display()))
            .trim_end()
            .replace("{file}", &case.display().to_string())
            .replace("{dir}", &dir.display().to_string());
        let got = load_error(case, &Overrides::default());
        if got != expected {
            failures.push(format!(
                "{}\n  expected: {expected}\n  got:      {got}",
                case.display()
            ));
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

#[test]
fn shipped_configuration_documents_the_embedded_defaults() {
    let shipped = root().join("config/rmilter.toml");
    let text = std::fs::read_to_string(&shipped).unwrap();
    let file =
        config::from_text(Source::File(shipped.clone()), &text, &Overrides::default()).unwrap();
    let embedded = config::from_text(Source::Embedded, "", &Overrides::default()).unwrap();
    assert_eq!(
        config::Config {
            source: Source::Embedded,
            ..file
        },
        embedded
    );
    // Every key of the raw structs appears in the shipped file, uncommented
    // (the key table is an example and stays commented).
    for key in [
        "listen",
        "authserv_id",
        "log_level",
        "mode",
        "owner",
        "group",
        "allow_remote",
        "max_connections",
        "idle_timeout",
        "shutdown_timeout",
        "max_header_bytes",
        "max_headers",
        "on_error",
        "bad_from",
        "oversized_headers",
        "authenticated",
        "networks",
        "daemon_names",
        "local_submission",
        "canonicalization",
        "headers",
        "oversign_headers",
        "expire",
        "subdomains",
        "rule_match",
        "own_domain",
        "sender_login_maps",
        "action",
        "nameservers",
        "timeout",
        "attempts",
        "cache_size",
        "enabled",
        "store",
        "org_name",
        "email",
        "extra_contact_info",
        "reporting_domain",
        "period",
        "retention",
        "queue_size",
        "format",
        "sendmail",
        "destination_interval",
        "lease",
        "retry_for",
        "schedule",
        "pid_file",
        "selector",
        "rsa_bits",
        "owner",
        "retiring_period",
        "user",
        "group",
        "health_log_interval",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(&format!("{key} = "))),
            "config/rmilter.toml does not document {key}"
        );
    }
    for key in [
        "domain",
        "selector",
        "file",
        "algorithm",
        "dir",
        "name",
        "domains",
        "sender",
        "keys",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(&format!("# {key} = "))),
            "{key}"
        );
    }
}

#[test]
fn embedded_defaults_are_verify_only_on_a_unix_socket() {
    let missing = Path::new("/nonexistent/rmilter.toml");
    let rt = Runtime::load(None, missing, &Overrides::default()).unwrap();
    assert_eq!(rt.config.source, Source::Embedded);
    assert!(rt.keys.is_empty());
    assert_eq!(
        rt.config.listen.to_string(),
        "unix:/run/rmilter/rmilter.sock"
    );
    assert_eq!(rt.config.actions.on_error, config::Action::Tempfail);
    assert_eq!(rt.config.actions.bad_from, config::Action::Reject);
    // An explicit -c that does not exist is an error, not the defaults.
    let err = Runtime::load(Some(missing), missing, &Overrides::default())
        .err()
        .unwrap();
    assert_eq!(
        err.to_string(),
        "/nonexistent/rmilter.toml: cannot read: No such file or directory (os error 2)"
    );
}

#[test]
fn command_line_overrides_are_validated_too() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rmilter.toml");
    std::fs::write(&file, "").unwrap();
    let over = |listen: Option<&str>, keys: &[&str]| Overrides {
        listen: listen.map(str::to_string),
        keys: keys.iter().map(|s| s.to_string()).collect(),
    };
    assert_eq!(
        load_error(&file, &over(Some("inet:192.0.2.1:8891"), &[])),
        format!(
            "{}: --listen: 192.0.2.1 is not a loopback address: whoever can connect can have mail signed; set socket.allow_remote = true to allow it",
            file.display()
        )
    );
    assert_eq!(
        load_error(&file, &over(Some("inet:localhost"), &[])),
        "command line: --listen: expected unix:/path, inet:HOST:PORT or inet6:[ADDR]:PORT, got \"inet:localhost\""
    );
    assert_eq!(
        load_error(&file, &over(None, &["example.com:s1"])),
        "command line: --key example.com:s1: expected DOMAIN:SELECTOR:KEYFILE"
    );
    assert_eq!(
        load_error(&file, &over(None, &["example.com:s1:/nonexistent/k.pem"])),
        "command line: --key example.com:s1:/nonexistent/k.pem: /nonexistent/k.pem: key file does not exist"
    );
    // --listen replaces the file's address, --key the file's key table.
    std::fs::write(&file, "listen = \"unix:/run/x.sock\"\n[[key]]\ndomain = \"a.example\"\nselector = \"s\"\nfile = \"/nonexistent.pem\"\n").unwrap();
    let cfg = config::load(Some(&file), &file, &over(Some("inet6:[::1]:8891"), &[])).unwrap();
    assert_eq!(cfg.listen.to_string(), "inet6:[::1]:8891");
    let keys = rmilter::keys::generate(
        dir.path(),
        "b.example",
        "s2",
        rmilter::config::KeyAlgorithm::Ed25519,
        0,
    )
    .unwrap();
    let arg = format!("b.example:s2:{}", keys.path.display());
    let rt = Runtime::load(Some(&file), &file, &over(None, &[&arg])).unwrap();
    let loaded: Vec<String> = rt
        .keys
        .iter()
        .map(|k| format!("{}/{}", k.domain, k.selector))
        .collect();
    assert_eq!(loaded, ["b.example/s2"]);
}

#[test]
fn unsafe_key_files_refuse_the_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let key = rmilter::keys::generate(
        dir.path(),
        "example.com",
        "s1",
        rmilter::config::KeyAlgorithm::Ed25519,
        0,
    )
    .unwrap();
    let file = dir.path().join("rmilter.toml");
    std::fs::write(
        &file,
        "[[key]]\ndomain = \"example.com\"\nselector = \"s1\"\nfile = \"example.com/s1.pem\"\n",
    )
    .unwrap();
    Runtime::load(Some(&file), &file, &Overrides::default()).unwrap();
    std::fs::set_permissions(&key.path, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert_eq!(
        load_error(&file, &Overrides::default()),
        format!(
            "{}: key[0]: {}: unsafe key file: readable by every user (mode 0644); run: chmod 600 {}",
            file.display(),
            key.path.display(),
            key.path.display()
        )
    );
}

/// The signing-rules schema `rmilter migrate` emits: named and `%` keys,
/// rules in order, rule_match, and the login table, validated into the
/// typed configuration; `check-config` lists the rules and warns about a
/// key no rule names.
#[test]
fn signing_rules_and_logins_validate() {
    let dir = tempfile::tempdir().unwrap();
    let keys: Vec<PathBuf> = ["mail", "esp", "old"]
        .iter()
        .map(|s| {
            rmilter::keys::generate(
                dir.path(),
                "example.com",
                s,
                rmilter::config::KeyAlgorithm::Ed25519,
                0,
            )
            .unwrap()
            .path
        })
        .collect();
    let text = format!(
        r#"
[signing]
rule_match = "all"

[signing.logins]
enabled = true
own_domain = false
action = "reject"

[signing.logins.allow]
"Alice@Example.com" = ["@Example.org", "Info@example.net", "*"]

[[key]]
name = "shared"
domain = "%"
domains = ["Example.NET", "example.net"]
selector = "mail"
file = "{}"

[[key]]
name = "relay"
domain = "relay.example"
selector = "esp"
file = "{}"

[[key]]
domain = "example.com"
selector = "old"
file = "{}"

[[key]]
domain = "unused.example"
selector = "old"
file = "{}"

[[signing.rule]]
sender = "Alice@Example.COM"
keys = ["relay", "Example.com"]

[[signing.rule]]
sender = "*@*.example.com"
keys = ["shared"]
"#,
        keys[0].display(),
        keys[1].display(),
        keys[2].display(),
        keys[2].display()
    );
    let file = dir.path().join("rmilter.toml");
    std::fs::write(&file, &text).unwrap();
    let c = config::load(Some(&file), &file, &Overrides::default()).unwrap();
    assert_eq!(c.signing.rule_match, config::RuleMatch::All);
    assert_eq!(c.signing.rules.len(), 2);
    assert_eq!(c.signing.rules[0].sender.local.as_deref(), Some("alice"));
    assert_eq!(
        c.signing.rules[0].sender.domain,
        config::DomainPattern::Exact("example.com".into())
    );
    assert_eq!(c.signing.rules[0].keys, ["relay", "example.com"]);
    assert_eq!(
        c.signing.rules[1].sender.domain,
        config::DomainPattern::Subdomains("example.com".into())
    );
    assert_eq!(c.keys[0].name.as_deref(), Some("shared"));
    assert_eq!(c.keys[0].domain, "%");
    assert_eq!(c.keys[0].domains, ["example.net"]);
    let logins = &c.signing.logins;
    assert!(logins.enabled && !logins.own_domain);
    assert_eq!(logins.action, config::Action::Reject);
    assert_eq!(
        logins.allow,
        [(
            "alice@example.com".to_string(),
            vec![
                "example.org".to_string(),
                "info@example.net".to_string(),
                "*".to_string()
            ]
        )]
    );
    // --key replaces the key table and the rules with it.
    let over = Overrides {
        keys: vec![format!("example.com:mail:{}", keys[0].display())],
        ..Default::default()
    };
    assert!(
        config::load(Some(&file), &file, &over)
            .unwrap()
            .signing
            .rules
            .is_empty()
    );

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rmilter"))
        .args(["check-config", "-c"])
        .arg(&file)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    for line in [
        "  signing rules 2 (rule_match = all)",
        "  rule          signing.rule[0] sender=Alice@Example.COM keys=[relay, example.com]",
        "  rule          signing.rule[1] sender=*@*.example.com keys=[shared]",
        "  logins        own_domain=false sender_login_maps=none allow=1 action=reject",
        "  key           d=% s=mail a=ed25519-sha256 bits=256 file=",
        "  warning       key unused.example (s=old) never signs: no [[signing.rule]] names it",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in\n{stdout}");
    }
}
