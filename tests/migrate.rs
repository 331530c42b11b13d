//! `rmilter migrate` on the corpus in tests/migrate/: real OpenDKIM and
//! OpenDMARC configurations from Debian, the upstream samples, mail-stack
//! installers and configuration-management roles. For each: the migrated
//! file passes `rmilter check-config`; and OpenDKIM running the original
//! files and rmilter running the migrated file sign the same messages, from
//! the same senders and clients, with the same (d=, s=) pairs, each
//! signature verifying with dkimpy. Secrets in the input never reach the
//! output.

mod common;

use common::drive::{self, Envelope};
use common::milter::TestMilter;
use common::opendkim::OpenDkim;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

const RMILTER: &str = env!("CARGO_BIN_EXE_rmilter");

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/migrate")
}

/// A corpus directory copied into a temporary root, its absolute paths pointed into it.
struct Rendered {
    root: tempfile::TempDir,
}

impl Rendered {
    fn new(name: &str) -> Rendered {
        let root = tempfile::Builder::new()
            .prefix("rmilter-migrate-")
            .tempdir()
            .unwrap();
        let re = regex::Regex::new(r#"(^|[\s:=,"'])/(etc|var|run|home)/"#).unwrap();
        let prefix = root.path().display().to_string();
        copy_tree(&corpus_dir().join(name), root.path(), &|text| {
            re.replace_all(text, |c: &regex::Captures| {
                format!("{}{prefix}/{}/", &c[1], &c[2])
            })
            .into_owned()
        });
        // An empty Postfix unless the corpus has one: the test never reads this host's.
        let pf = root.path().join("postfix");
        if !pf.exists() {
            std::fs::create_dir_all(&pf).unwrap();
            std::fs::write(pf.join("main.cf"), "").unwrap();
            std::fs::write(pf.join("master.cf"), "").unwrap();
        }
        Rendered { root }
    }

    /// A set-up written by the test itself: (path under the root, text) with `@ROOT@` standing
    /// for the root.
    fn from_files(files: &[(&str, &str)]) -> Rendered {
        let root = tempfile::Builder::new()
            .prefix("rmilter-migrate-")
            .tempdir()
            .unwrap();
        let prefix = root.path().display().to_string();
        for (path, text) in files {
            let p = root.path().join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text.replace("@ROOT@", &prefix)).unwrap();
        }
        Rendered { root }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.path().join(rel)
    }

    fn opendkim_conf(&self) -> Option<PathBuf> {
        ["etc/opendkim.conf", "etc/opendkim/opendkim.conf"]
            .iter()
            .map(|p| self.path(p))
            .find(|p| p.exists())
    }

    fn opendmarc_conf(&self) -> Option<PathBuf> {
        Some(self.path("etc/opendmarc.conf")).filter(|p| p.exists())
    }

    /// `rmilter migrate --json` on this set-up: (exit code, JSON, stdout+stderr).
    fn migrate(&self) -> (i32, serde_json::Value, String) {
        let mut cmd = Command::new(RMILTER);
        cmd.arg("migrate").arg("--json");
        if let Some(p) = self.opendkim_conf() {
            cmd.arg("--opendkim").arg(p);
        }
        if let Some(p) = self.opendmarc_conf() {
            cmd.arg("--opendmarc").arg(p);
        }
        cmd.arg("--postfix-dir").arg(self.path("postfix"));
        let out = cmd.output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let all = format!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
        let json = serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("migrate printed non-JSON ({e}): {all}"));
        (out.status.code().unwrap_or(-1), json, all)
    }

    /// The text report (no --json), for the secrets check.
    fn migrate_text(&self) -> String {
        let mut cmd = Command::new(RMILTER);
        cmd.arg("migrate");
        if let Some(p) = self.opendkim_conf() {
            cmd.arg("--opendkim").arg(p);
        }
        if let Some(p) = self.opendmarc_conf() {
            cmd.arg("--opendmarc").arg(p);
        }
        cmd.arg("--postfix-dir").arg(self.path("postfix"));
        let out = cmd.output().unwrap();
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }
}

fn copy_tree(from: &Path, to: &Path, render: &dyn Fn(&str) -> String) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_tree(&entry.path(), &target, render);
        } else if entry.file_name() != "ORIGIN" {
            let text = std::fs::read_to_string(entry.path()).unwrap();
            std::fs::write(&target, render(&text)).unwrap();
        }
    }
}

/// (domain or "%", selector, file) of every [[key]] in a migrated configuration.
fn keys_of(config: &str) -> Vec<(String, String, PathBuf)> {
    let table: toml::Table = config.parse().expect("migrated config is TOML");
    table
        .get("key")
        .and_then(|k| k.as_array())
        .map(|keys| {
            keys.iter()
                .map(|k| {
                    let s = |n: &str| {
                        k.get(n)
                            .and_then(|v| v.as_str())
                            .unwrap_or_default()
                            .to_string()
                    };
                    (s("domain"), s("selector"), PathBuf::from(s("file")))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Makes an RSA key (PKCS#1 PEM, as opendkim-genkey writes) at `path`, mode 0600.
fn make_key(path: &Path) {
    if path.exists() {
        return;
    }
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let out = Command::new("openssl")
        .args(["genrsa", "-traditional", "-out"])
        .arg(path)
        .arg("2048")
        .output()
        .unwrap();
    assert!(out.status.success(), "openssl genrsa: {out:?}");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// The DKIM TXT value publishing the public half of a key file.
fn dns_value(key: &Path) -> String {
    let out = Command::new("openssl")
        .args(["pkey", "-pubout", "-outform", "DER", "-in"])
        .arg(key)
        .output()
        .unwrap();
    assert!(out.status.success());
    format!("v=DKIM1; k=rsa; p={}", common::smtp::base64(&out.stdout))
}

fn check_config(file: &Path) -> (bool, String) {
    let out = Command::new(RMILTER)
        .arg("check-config")
        .arg("-c")
        .arg(file)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The migrated configuration, made to listen where the test can reach it.
fn for_test_milter(config: &str) -> String {
    let mut table: toml::Table = config.parse().unwrap();
    table.insert("listen".into(), "inet:127.0.0.1:0".into());
    table.remove("pid_file");
    table.remove("user");
    table.remove("socket");
    toml::to_string(&table).unwrap()
}

/// (d=, s=) of the DKIM-Signature fields of a message.
fn signatures(message: &[u8]) -> BTreeSet<(String, String)> {
    let (fields, _) = drive::split_message(message);
    fields
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(b"DKIM-Signature"))
        .map(|(_, v)| {
            let v = String::from_utf8_lossy(v).replace(['\r', '\n'], "");
            (
                common::dkim_tag(&v, "d")
                    .unwrap_or_default()
                    .to_ascii_lowercase(),
                common::dkim_tag(&v, "s").unwrap_or_default(),
            )
        })
        .collect()
}

/// The senders and clients every signing comparison uses.
fn cases(domains: &BTreeSet<String>) -> Vec<(Envelope, Vec<u8>, String)> {
    let mut froms: Vec<String> = Vec::new();
    for d in domains {
        froms.push(format!("alice@{d}"));
        froms.push(format!("news@lists.{d}"));
    }
    froms.push("carol@example.org".into());
    let mut local = Envelope::inbound();
    local.client_addr = "127.0.0.1:40000".parse().unwrap();
    local.client_name = "localhost".into();
    let clients = [
        ("sasl", Envelope::authenticated("alice")),
        ("127.0.0.1", local),
        ("external", Envelope::inbound()),
    ];
    let mut out = Vec::new();
    for from in &froms {
        for (label, env) in &clients {
            let mut env = env.clone();
            env.mail_from = format!("<{from}>");
            let msg = common::message(
                &format!("Alice <{from}>"),
                &format!("migrate {label}"),
                "Hello.\r\n",
            );
            out.push((env, msg, format!("From {from} via {label}")));
        }
    }
    out
}

/// One corpus entry: migrate, check-config, and (when it signs) the differential signing test.
fn run_corpus(name: &str, expected_exit: i32) {
    assert_eq!(
        run_set_up(name, Rendered::new(name)),
        expected_exit,
        "{name}: exit code"
    );
}

/// Returns migrate's exit code (with the key files in place).
fn run_set_up(name: &str, r: Rendered) -> i32 {
    let (code, json, all) = r.migrate();
    assert!(code == 0 || code == 1, "{name}: migrate exit {code}: {all}");
    // Make the key files the configuration names, then migrate again with them in place.
    let keys = keys_of(json["config"].as_str().unwrap());
    for (_, _, file) in &keys {
        make_key(file);
    }
    let (code, json, all) = r.migrate();
    assert!(code == 0 || code == 1, "{name}: migrate exit {code}: {all}");
    let config = json["config"].as_str().unwrap().to_string();
    let file = r.path("rmilter.toml");
    std::fs::write(&file, &config).unwrap();
    let (ok, out) = check_config(&file);
    assert!(
        ok,
        "{name}: check-config refused the migrated file:\n{out}\n--- file:\n{config}"
    );

    if keys.is_empty() {
        return code;
    }
    // Differential signing: OpenDKIM on the original files, rmilter on the migrated one.
    let conf = std::fs::read_to_string(r.opendkim_conf().unwrap()).unwrap();
    let opendkim = OpenDkim::from_conf(&conf);
    let milter = TestMilter::start_toml(&for_test_milter(&config));
    let mut domains: BTreeSet<String> = keys
        .iter()
        .map(|(d, _, _)| d.clone())
        .filter(|d| d != "%")
        .collect();
    domains.extend(["example.com".to_string(), "example.net".to_string()]);
    let dkim_addr: std::net::SocketAddr = format!("127.0.0.1:{}", opendkim.port()).parse().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut signed = 0;
    for (env, msg, label) in cases(&domains) {
        let (theirs, ours) = rt.block_on(async {
            (
                drive::drive(dkim_addr, &env, &msg).await,
                drive::drive(milter.inet_addr(), &env, &msg).await,
            )
        });
        let (a, b) = (signatures(&theirs.message), signatures(&ours.message));
        assert_eq!(
            a,
            b,
            "{name}: {label}: OpenDKIM signed {a:?}, rmilter {b:?}\nOpenDKIM output: {}\nmigrated:\n{config}",
            opendkim.output()
        );
        // Each signature verifies with dkimpy against the key's published record.
        for message in [&theirs.message, &ours.message] {
            let dns: Vec<(String, String)> = signatures(message)
                .iter()
                .map(|(d, s)| {
                    let file = keys
                        .iter()
                        .find(|(kd, ks, _)| ks == s && (kd == d || kd == "%"))
                        .map(|(_, _, f)| f.clone())
                        .unwrap_or_else(|| panic!("{name}: no key for d={d} s={s}"));
                    (format!("{s}._domainkey.{d}"), dns_value(&file))
                })
                .collect();
            for sig in common::dkimpy::verify(message, &dns) {
                assert!(
                    sig.pass,
                    "{name}: {label}: dkimpy: d={} s={} failed: {}",
                    sig.d, sig.s, sig.detail
                );
            }
        }
        signed += b.len();
    }
    assert!(
        signed > 0,
        "{name}: the migrated configuration signed nothing"
    );
    milter.stop().unwrap();
    code
}

/// `test => directory, exit code`: 0 when nothing behaves differently; 1 when the report lists
/// differences, or key files rmilter refuses until the printed commands run (every set-up
/// with keys here: the test's key files belong to root, not to an rmilter user).
macro_rules! corpus {
    ($($test:ident => $dir:literal, $exit:literal),* $(,)?) => {
        $(
            #[test]
            fn $test() {
                run_corpus($dir, $exit);
            }
        )*
    };
}

corpus! {
    debian_stock => "debian-stock", 0,
    debian_simple => "debian-simple", 1,
    debian_simple_verify => "debian-simple-verify", 1,
    upstream_samples => "upstream-samples", 1,
    docker_mailserver => "docker-mailserver", 1,
    mail_in_a_box => "mail-in-a-box", 1,
    modoboa_installer => "modoboa-installer", 1,
    mailserver_ansible_role => "mailserver-ansible-role", 1,
    galaxyproject_ansible => "galaxyproject-ansible", 1,
    oefenweb_ansible => "oefenweb-ansible", 1,
    instrumentisto_docker => "instrumentisto-docker", 0,
    canonical_operator => "canonical-operator", 1,
}

/// The corpus has at least 12 working set-ups, each with an ORIGIN.
#[test]
fn corpus_is_complete() {
    let mut n = 0;
    for entry in std::fs::read_dir(corpus_dir()).unwrap() {
        let entry = entry.unwrap();
        if !entry.file_type().unwrap().is_dir() {
            continue;
        }
        assert!(
            entry.path().join("ORIGIN").exists(),
            "{:?} has no ORIGIN",
            entry.file_name()
        );
        if !entry.file_name().to_string_lossy().ends_with("-invalid") {
            n += 1;
        }
    }
    assert!(n >= 12, "only {n} corpus entries");
}

/// The saltstack formula's pillar example misspells an option: OpenDKIM refuses it, and so
/// does migrate, naming the file and line, and writing no configuration.
#[test]
fn invalid_option_names_file_and_line() {
    let r = Rendered::new("saltstack-formula-invalid");
    let (code, json, all) = r.migrate();
    assert_eq!(code, 78, "{all}");
    let err = json["error"].as_str().unwrap();
    assert!(err.contains("opendkim.conf:14"), "{err}");
    assert!(err.contains("SoftewareHeader"), "{err}");
    assert!(json.get("config").is_none(), "{json}");
    // OpenDKIM agrees the file is invalid.
    let conf = r.opendkim_conf().unwrap();
    let out = Command::new("/usr/sbin/opendkim")
        .arg("-n")
        .arg("-x")
        .arg(&conf)
        .output()
        .unwrap();
    assert!(!out.status.success(), "opendkim -n accepted {conf:?}");
}

/// SQL datasets are reported, never read, and their passwords never printed.
#[test]
fn secrets_never_printed() {
    for (name, secret) in [
        ("modoboa-installer", "Sup3rS3cretDbPass"),
        ("mailserver-ansible-role", "MySq1Pa55word"),
    ] {
        let r = Rendered::new(name);
        let (code, json, all) = r.migrate();
        assert_eq!(code, 1, "{name}: {all}");
        assert!(
            !all.contains(secret),
            "{name}: JSON output shows the password:\n{all}"
        );
        let text = r.migrate_text();
        assert!(
            !text.contains(secret),
            "{name}: text output shows the password:\n{text}"
        );
        let findings = json["findings"].as_array().unwrap();
        assert!(
            findings
                .iter()
                .any(|f| f["option"] == "KeyTable" && f["status"] == "not_supported"),
            "{name}: {json:#}"
        );
    }
}

/// Mail-in-a-Box's Postfix lines: the OpenDKIM milter is replaced by rmilter in main.cf, on
/// the chrooted socket path; non_smtpd_milters follows $smtpd_milters.
#[test]
fn postfix_lines_replace_the_old_milters() {
    let r = Rendered::new("mail-in-a-box");
    let (_, json, all) = r.migrate();
    let lines: Vec<String> = json["postfix"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap().to_string())
        .collect();
    let joined = lines.join("\n");
    assert!(
        lines.contains(&"postconf -e 'smtpd_milters = unix:/rmilter/rmilter.sock'".to_string()),
        "{joined}\n{all}"
    );
    // non_smtpd_milters = $smtpd_milters follows it and is left alone.
    assert!(!joined.contains("non_smtpd_milters"), "{joined}");
    assert!(!joined.contains("8891"), "{joined}");
    let config = json["config"].as_str().unwrap();
    assert!(
        config.contains("listen = \"unix:/var/spool/postfix/rmilter/rmilter.sock\""),
        "{config}"
    );
}

/// A relay as OpenDKIM users write one (no project ships this, so the test writes it): the
/// relay's own d= on every message (a third-party signature), a shared "%" key for
/// example.net and its subdomains, example.com's own key, all matches (MultipleSignatures).
/// The SigningTable needs rmilter's [[signing.rule]]; OpenDKIM and rmilter must sign alike.
#[test]
fn relay_rules_sign_like_opendkim() {
    let r = Rendered::from_files(&[
        (
            "etc/opendkim.conf",
            "Syslog yes\nCanonicalization relaxed/relaxed\nMode sv\nMultipleSignatures yes\n\
             KeyTable refile:@ROOT@/etc/opendkim/KeyTable\n\
             SigningTable refile:@ROOT@/etc/opendkim/SigningTable\n\
             InternalHosts 127.0.0.1\nSocket inet:8891@localhost\n",
        ),
        (
            "etc/opendkim/KeyTable",
            "esp relay.example:esp:@ROOT@/etc/opendkim/keys/esp.private\n\
             shared %:mail:@ROOT@/etc/opendkim/keys/shared.private\n\
             own example.com:s2024:@ROOT@/etc/opendkim/keys/own.private\n",
        ),
        (
            "etc/opendkim/SigningTable",
            "*@example.com own\n*@*.example.net shared\n*@example.net shared\n* esp\n",
        ),
        ("postfix/main.cf", ""),
        ("postfix/master.cf", ""),
    ]);
    let (_, json, all) = r.migrate();
    let config = json["config"].as_str().unwrap_or_default();
    assert!(config.contains("[[signing.rule]]"), "{config}\n{all}");
    assert!(config.contains("rule_match = \"all\""), "{config}");
    assert_eq!(run_set_up("relay", r), 1);
}

/// The switch itself, with mail flowing: a private Postfix signs through OpenDKIM (the
/// docker-mailserver files) while a client keeps submitting; rmilter starts on the migrated
/// file, the printed kind of `postconf -e` change points Postfix at it, `postfix reload`.
/// Every submitted message is delivered, each with exactly the signature it had before.
#[test]
fn live_switch_from_opendkim_loses_and_leaves_unsigned_nothing() {
    use common::postfix::{Postfix, PostfixConfig, WAIT};
    use common::smtp::{Client, Submission};
    use std::sync::atomic::{AtomicBool, Ordering};

    let r = Rendered::new("docker-mailserver");
    let (_, json, _) = r.migrate();
    let keys = keys_of(json["config"].as_str().unwrap());
    for (_, _, file) in &keys {
        make_key(file);
    }
    let (_, json, _) = r.migrate();
    let config = json["config"].as_str().unwrap().to_string();
    let opendkim =
        OpenDkim::from_conf(&std::fs::read_to_string(r.opendkim_conf().unwrap()).unwrap());
    let milter = TestMilter::start_toml(&for_test_milter(&config));
    let pf = Postfix::start(PostfixConfig::with_milters(&opendkim.milter()));

    let stop = AtomicBool::new(false);
    let submitted = std::thread::scope(|scope| {
        let client = scope.spawn(|| {
            let mut n = 0usize;
            while !stop.load(Ordering::SeqCst) || n < 20 {
                let domain = if n.is_multiple_of(2) {
                    "example.com"
                } else {
                    "example.net"
                };
                let from = format!("alice@{domain}");
                let msg = common::message(
                    &format!("Alice <{from}>"),
                    &format!("switch {n}"),
                    "Hello.\r\n",
                );
                let o = pf.submit(&Submission::new(
                    Client::Internal,
                    &from,
                    &["bob@remote.test"],
                    &msg,
                ));
                assert!(
                    o.accepted(),
                    "message {n} refused during the switch: {o:?}\n{}",
                    pf.diag()
                );
                n += 1;
            }
            n
        });
        // Let mail flow through OpenDKIM first, then switch as the report says.
        std::thread::sleep(std::time::Duration::from_secs(2));
        let rmilter = format!("inet:{}", milter.inet_addr());
        let out = Command::new("postconf")
            .arg("-c")
            .arg(pf.config_dir())
            .arg("-e")
            .arg(format!("smtpd_milters = {rmilter}"))
            .arg(format!("non_smtpd_milters = {rmilter}"))
            .output()
            .unwrap();
        assert!(out.status.success(), "postconf: {out:?}");
        let out = Command::new("/usr/sbin/postfix")
            .arg("-c")
            .arg(pf.config_dir())
            .arg("reload")
            .output()
            .unwrap();
        assert!(out.status.success(), "postfix reload: {out:?}");
        std::thread::sleep(std::time::Duration::from_secs(2));
        stop.store(true, Ordering::SeqCst);
        client.join().unwrap()
    });
    let delivered = pf.sink().wait_for(submitted, WAIT);
    assert_eq!(delivered.len(), submitted, "lost mail:\n{}", pf.diag());
    let mut by_rmilter = 0;
    for d in &delivered {
        let sigs = signatures(&d.data);
        let domain = if d.mail_from.ends_with("example.com") {
            "example.com"
        } else {
            "example.net"
        };
        assert_eq!(
            sigs,
            BTreeSet::from([(domain.to_string(), "mail".to_string())]),
            "{}",
            d.header_text()
        );
        let file = &keys.iter().find(|(kd, _, _)| kd == domain).unwrap().2;
        for sig in common::dkimpy::verify(
            &d.data,
            &[(format!("mail._domainkey.{domain}"), dns_value(file))],
        ) {
            assert!(sig.pass, "dkimpy: {}", sig.detail);
        }
        // Who signed: rmilter oversigns From (h= names it twice); this OpenDKIM does not.
        let (fields, _) = drive::split_message(&d.data);
        let h = fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(b"DKIM-Signature"))
            .map(|(_, v)| String::from_utf8_lossy(v).replace(['\r', '\n', ' ', '\t'], ""))
            .and_then(|v| common::dkim_tag(&v, "h"))
            .unwrap_or_default()
            .to_ascii_lowercase();
        if h.split(':').filter(|f| *f == "from").count() > 1 {
            by_rmilter += 1;
        }
    }
    assert!(submitted >= 20, "{submitted}");
    assert!(
        by_rmilter > 0 && by_rmilter < submitted,
        "{by_rmilter} of {submitted} signed by rmilter: the switch did not happen with mail flowing"
    );
    milter.stop().unwrap();
}

/// OpenDMARC (Debian's package, on docker-mailserver's opendmarc.conf: RejectFailures true)
/// and rmilter on the migrated file decide alike on an inbound set: SPF-aligned and
/// unaligned mail from p=reject, p=quarantine, p=none and no-DMARC domains. Both resolve
/// through the same loopback DNS server (OpenDMARC through a private /etc/resolv.conf in its
/// own mount namespace).
#[test]
fn opendmarc_and_rmilter_decide_alike() {
    use common::dns::{TestDns, Zone};
    use indymilter_test::Status;

    let r = Rendered::new("docker-mailserver");
    std::fs::create_dir_all(r.path("var/run/opendmarc")).unwrap();
    let (_, json, _) = r.migrate();
    for (_, _, file) in keys_of(json["config"].as_str().unwrap()) {
        make_key(&file);
    }
    let (_, json, all) = r.migrate();
    let config = json["config"].as_str().unwrap_or_else(|| panic!("{all}"));

    let mut zone = Zone::new();
    for (d, p) in [
        ("reject.example", Some("reject")),
        ("quarantine.example", Some("quarantine")),
        ("none.example", Some("none")),
        ("nodmarc.example", None),
    ] {
        zone = zone.txt(d, "v=spf1 ip4:198.51.100.7 -all");
        if let Some(p) = p {
            zone = zone.txt(&format!("_dmarc.{d}"), &format!("v=DMARC1; p={p}"));
        }
    }
    let dns = TestDns::start_on("127.53.0.1:53".parse().unwrap(), zone);

    // rmilter on the migrated file, resolving through the test server.
    let mut table: toml::Table = for_test_milter(config).parse().unwrap();
    table.remove("report");
    let mut dns_table = toml::Table::new();
    dns_table.insert(
        "nameservers".into(),
        toml::Value::Array(vec![dns.addr().ip().to_string().into()]),
    );
    dns_table.insert("timeout".into(), "2s".into());
    table.insert("dns".into(), toml::Value::Table(dns_table));
    let milter = TestMilter::start_toml(&toml::to_string(&table).unwrap());

    // OpenDMARC on the original file with the test's socket, in its own mount namespace.
    let port = common::postfix::free_port();
    let conf = format!(
        "{}\nSocket inet:{port}@127.0.0.1\nPidFile {}\nBackground false\nUserID root\nSPFSelfValidate true\n",
        std::fs::read_to_string(r.opendmarc_conf().unwrap()).unwrap(),
        r.path("opendmarc.pid").display()
    );
    let conf_path = r.path("opendmarc-test.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let resolv = r.path("resolv.conf");
    std::fs::write(
        &resolv,
        "nameserver 127.53.0.1\noptions timeout:2 attempts:1\n",
    )
    .unwrap();
    let log = std::fs::File::create(r.path("opendmarc.out")).unwrap();
    let mut child = Command::new("unshare")
        .arg("-m")
        .arg("sh")
        .arg("-c")
        .arg(format!(
            "mount --bind {} /etc/resolv.conf && exec /usr/sbin/opendmarc -f -c {}",
            resolv.display(),
            conf_path.display()
        ))
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "opendmarc did not start: {}",
            std::fs::read_to_string(r.path("opendmarc.out")).unwrap_or_default()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }

    let verdict = |s: &Status| match s {
        Status::Reject { .. } => "reject",
        Status::Tempfail { .. } => "tempfail",
        Status::Discard => "discard",
        _ => "accept",
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut rejected = 0;
    for d in [
        "reject.example",
        "quarantine.example",
        "none.example",
        "nodmarc.example",
    ] {
        for ip in ["198.51.100.7", "203.0.113.9"] {
            let mut env = Envelope::inbound();
            env.client_addr = format!("{ip}:41000").parse().unwrap();
            env.helo = format!("mail.{d}");
            env.client_name = format!("mail.{d}");
            env.mail_from = format!("<alice@{d}>");
            let msg = common::message(&format!("Alice <alice@{d}>"), "dmarc", "Hello.\r\n");
            let (theirs, ours) = rt.block_on(async {
                (
                    drive::drive(addr, &env, &msg).await,
                    drive::drive(milter.inet_addr(), &env, &msg).await,
                )
            });
            let (a, b) = (verdict(&theirs.status), verdict(&ours.status));
            assert_eq!(
                a,
                b,
                "From {d} via {ip}: OpenDMARC {:?}, rmilter {:?}\n{}",
                theirs.status,
                ours.status,
                std::fs::read_to_string(r.path("opendmarc.out")).unwrap_or_default()
            );
            if a == "reject" {
                rejected += 1;
            }
        }
    }
    assert_eq!(
        rejected, 1,
        "only the unaligned p=reject message is rejected"
    );
    let _ = child.kill();
    let _ = child.wait();
    milter.stop().unwrap();
}
