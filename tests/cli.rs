//! The `rmilter` command line: help texts, exit codes, key generation and
//! DNS records, check-config.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};

fn rmilter(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rmilter"))
        .args(args)
        .output()
        .expect("run rmilter")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn help_lists_every_command_and_option() {
    let out = rmilter(&["--help"]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    for word in ["run", "check-config", "keys"] {
        assert!(help.contains(word), "{help}");
    }
    let run = text(&rmilter(&["run", "--help"]).stdout);
    for word in [
        "--config",
        "--listen",
        "--key",
        "DOMAIN:SELECTOR:KEYFILE",
        "/etc/rmilter/rmilter.toml",
        "embedded defaults",
        "SIGHUP",
    ] {
        assert!(run.contains(word), "run --help lacks {word}: {run}");
    }
    let generate = text(&rmilter(&["keys", "generate", "--help"]).stdout);
    for word in [
        "--domain",
        "--selector",
        "--algorithm",
        "ed25519",
        "--bits",
        "--dir",
        "0600",
    ] {
        assert!(
            generate.contains(word),
            "keys generate --help lacks {word}: {generate}"
        );
    }
    let dns = text(&rmilter(&["keys", "dns", "--help"]).stdout);
    assert!(dns.contains("zone-file"), "{dns}");
    let usage = rmilter(&["keys", "generate", "--domain", "example.com"]);
    assert_eq!(
        usage.status.code(),
        Some(2),
        "missing --selector is a usage error"
    );
}

#[test]
fn keys_generate_then_dns_then_check_config() {
    let dir = tempfile::tempdir().unwrap();
    let keydir = dir.path().join("keys");
    let keydir_s = keydir.to_str().unwrap();
    let rsa = rmilter(&[
        "keys",
        "generate",
        "--domain",
        "Example.COM",
        "--selector",
        "rsa2026",
        "--dir",
        keydir_s,
    ]);
    assert!(rsa.status.success(), "{}", text(&rsa.stderr));
    let ed = rmilter(&[
        "keys",
        "generate",
        "--domain",
        "example.com",
        "--selector",
        "ed2026",
        "--algorithm",
        "ed25519",
        "--dir",
        keydir_s,
    ]);
    assert!(ed.status.success(), "{}", text(&ed.stderr));
    let rsa_path = keydir.join("example.com/rsa2026.pem");
    let ed_path = keydir.join("example.com/ed2026.pem");
    for path in [&rsa_path, &ed_path] {
        let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", path.display());
        assert!(
            std::fs::read_to_string(path)
                .unwrap()
                .starts_with("-----BEGIN PRIVATE KEY-----\n")
        );
    }
    let out = text(&ed.stdout);
    assert!(
        out.contains("ed2026._domainkey.example.com.\tIN\tTXT\t\"v=DKIM1; k=ed25519; p="),
        "{out}"
    );
    assert!(out.contains("[[key]]"), "{out}");

    // Refuses to overwrite, exit status non-zero, key unchanged.
    let before = std::fs::read(&ed_path).unwrap();
    let again = rmilter(&[
        "keys",
        "generate",
        "--domain",
        "example.com",
        "--selector",
        "ed2026",
        "--algorithm",
        "ed25519",
        "--dir",
        keydir_s,
    ]);
    assert_eq!(again.status.code(), Some(1));
    assert!(text(&again.stderr).contains("already exists; refusing to overwrite it"));
    assert_eq!(std::fs::read(&ed_path).unwrap(), before);

    let config = dir.path().join("rmilter.toml");
    std::fs::write(
        &config,
        "listen = \"inet:127.0.0.1:8891\"\n\
         [[key]]\ndomain = \"example.com\"\nselector = \"rsa2026\"\nfile = \"keys/example.com/rsa2026.pem\"\nalgorithm = \"rsa\"\n\
         [[key]]\ndomain = \"example.com\"\nselector = \"ed2026\"\nfile = \"keys/example.com/ed2026.pem\"\n",
    )
    .unwrap();
    let cfg = config.to_str().unwrap();
    let dns = rmilter(&["keys", "dns", "-c", cfg]);
    assert!(dns.status.success(), "{}", text(&dns.stderr));
    let records = text(&dns.stdout);
    assert!(
        records
            .contains("rsa2026._domainkey.example.com.\tIN\tTXT\t( \"v=DKIM1; k=rsa; p=MIIBIjAN"),
        "{records}"
    );
    assert!(
        records.contains("ed2026._domainkey.example.com.\tIN\tTXT\t\"v=DKIM1; k=ed25519; p="),
        "{records}"
    );
    for string in records.split('"').skip(1).step_by(2) {
        assert!(string.len() <= 255, "TXT string of {} bytes", string.len());
    }
    // The record printed at generation equals the one `keys dns` prints.
    let generated_rsa = text(&rsa.stdout);
    let zone_rsa: String = records
        .lines()
        .skip_while(|l| !l.starts_with("rsa2026"))
        .take(2)
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        generated_rsa.contains(&zone_rsa),
        "{generated_rsa}\n---\n{zone_rsa}"
    );

    let check = rmilter(&["check-config", "-c", cfg]);
    assert!(check.status.success(), "{}", text(&check.stderr));
    let summary = text(&check.stdout);
    assert!(summary.contains("configuration OK"), "{summary}");
    assert!(
        summary.contains("d=example.com s=rsa2026 a=rsa-sha256 bits=2048"),
        "{summary}"
    );
    assert!(
        summary.contains("d=example.com s=ed2026 a=ed25519-sha256 bits=256"),
        "{summary}"
    );

    // A key that becomes world-readable makes check-config fail with EX_CONFIG.
    std::fs::set_permissions(&ed_path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let bad = rmilter(&["check-config", "-c", cfg]);
    assert_eq!(bad.status.code(), Some(78));
    let err = text(&bad.stderr);
    assert!(
        err.contains("key[1]") && err.contains("readable by every user (mode 0644)"),
        "{err}"
    );
}

#[test]
fn generate_validates_its_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let bad_domain = rmilter(&[
        "keys",
        "generate",
        "--domain=-bad-.example",
        "--selector",
        "s",
        "--dir",
        d,
    ]);
    assert_eq!(bad_domain.status.code(), Some(1));
    assert!(
        text(&bad_domain.stderr).contains("--domain: invalid domain"),
        "{}",
        text(&bad_domain.stderr)
    );
    let bad_selector = rmilter(&[
        "keys",
        "generate",
        "--domain",
        "example.com",
        "--selector",
        "../x",
        "--dir",
        d,
    ]);
    assert!(text(&bad_selector.stderr).contains("--selector: invalid selector"));
    let bad_bits = rmilter(&[
        "keys",
        "generate",
        "--domain",
        "example.com",
        "--selector",
        "s",
        "--bits",
        "1024",
        "--dir",
        d,
    ]);
    assert!(
        text(&bad_bits.stderr).contains("2048, 3072 or 4096"),
        "{}",
        text(&bad_bits.stderr)
    );
    assert!(
        std::fs::read_dir(dir.path())
            .unwrap()
            .all(|e| !e.unwrap().path().join("s.pem").exists())
    );
}

#[test]
fn check_config_reports_errors_with_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "[dns]\ntimeout = \"1h\"\n").unwrap();
    let out = rmilter(&["check-config", "-c", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(78));
    assert_eq!(
        text(&out.stderr).trim_end(),
        format!(
            "rmilter: {}: dns.timeout: must be between 100ms and 25s (Postfix gives a milter 30s per SMTP command)",
            config.display()
        )
    );
}
