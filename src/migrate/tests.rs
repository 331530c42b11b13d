//! Unit tests of the migrate translator: the configuration-file rules both
//! daemons share, datasets, SigningTable order, secrets, exit codes, and the
//! README's option table against [`options::OPTIONS`].

use super::conf::{ConfFile, shell_vars};
use super::options::{self, Daemon};
use super::*;
use std::path::Path;

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, text).unwrap();
    p
}

fn run(dkim: Option<PathBuf>, dmarc: Option<PathBuf>) -> Result<Migration, MigrateError> {
    migrate(&Inputs {
        opendkim: dkim,
        opendmarc: dmarc,
        postfix_dir: None,
        run_postconf: false,
        etc: None,
    })
}

#[test]
fn names_are_case_insensitive_and_the_last_value_wins() {
    let c = ConfFile::parse(
        Daemon::Opendkim,
        Path::new("/etc/opendkim.conf"),
        "canonicalization simple\nCANONICALIZATION relaxed/relaxed # comment\n",
    )
    .unwrap();
    let s = c.get("Canonicalization").unwrap();
    assert_eq!(s.value, "relaxed/relaxed");
    assert_eq!(s.line, 2);
    assert_eq!(s.info.name, "Canonicalization");
}

#[test]
fn unknown_option_names_file_and_line() {
    let e = ConfFile::parse(
        Daemon::Opendkim,
        Path::new("/etc/opendkim.conf"),
        "Syslog yes\n\nSoftewareHeader yes\n",
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "/etc/opendkim.conf:3: unknown OpenDKIM option \"SoftewareHeader\""
    );
    // OpenDMARC's options are not OpenDKIM's.
    let e = ConfFile::parse(
        Daemon::Opendkim,
        Path::new("/x.conf"),
        "RejectFailures true\n",
    )
    .unwrap_err();
    assert!(e.to_string().starts_with("/x.conf:1:"), "{e}");
}

#[test]
fn shell_default_files_expand_variables() {
    let v = shell_vars(
        "RUNDIR=/run/opendkim\nSOCKET=\"local:$RUNDIR/opendkim.sock\"\n#SOCKET=inet:1\n",
    );
    assert_eq!(v["SOCKET"], "local:/run/opendkim/opendkim.sock");
}

#[test]
fn host_entries() {
    use super::opendkim::host_entry;
    assert_eq!(host_entry("127.0.0.1").unwrap(), ["127.0.0.1/32"]);
    assert_eq!(host_entry("10.1.2.3/8").unwrap(), ["10.0.0.0/8"]);
    assert_eq!(
        host_entry("192.168.1.0/255.255.255.0").unwrap(),
        ["192.168.1.0/24"]
    );
    assert_eq!(host_entry("[::1]").unwrap(), ["::1/128"]);
    assert_eq!(
        host_entry("localhost").unwrap(),
        ["127.0.0.1/32", "::1/128"]
    );
    assert!(
        host_entry("mail.example.com")
            .unwrap_err()
            .contains("host name")
    );
}

/// A relay: every sender gets the ESP's own d=, example.com also its own key,
/// in refile order, all matches; "%" keys; the signer field.
#[test]
fn signing_table_becomes_rules() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let kt = write(
        d,
        "KeyTable",
        "esp esp.example:s1:/k/esp.pem\nown example.com:s2:/k/own.pem\nany %:shared:/k/shared.pem\nunused example.org:x:/k/x.pem\n",
    );
    let st = write(
        d,
        "SigningTable",
        "*@example.com own\n*@*.example.net any\nboss@example.org any signer@example.org\n* esp\n",
    );
    let conf = write(
        d,
        "opendkim.conf",
        &format!(
            "KeyTable file:{}\nSigningTable refile:{}\nMultipleSignatures yes\nInternalHosts 10.0.0.0/8, -10.9.9.9, relay.example\n",
            kt.display(),
            st.display()
        ),
    );
    let m = run(Some(conf), None).unwrap();
    let table: toml::Table = m.config.parse().unwrap();
    assert_eq!(table["signing"]["rule_match"].as_str(), Some("all"));
    let rules = table["signing"]["rule"].as_array().unwrap();
    let got: Vec<(String, Vec<String>)> = rules
        .iter()
        .map(|r| {
            (
                r["sender"].as_str().unwrap().to_string(),
                r["keys"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|k| k.as_str().unwrap().to_string())
                    .collect(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("*@example.com".to_string(), vec!["own".to_string()]),
            ("*@*.example.net".into(), vec!["any".into()]),
            ("boss@example.org".into(), vec!["any".into()]),
            ("*".into(), vec!["esp".into()]),
        ]
    );
    let keys = table["key"].as_array().unwrap();
    assert_eq!(
        keys.len(),
        3,
        "the unused KeyTable row is left out: {keys:?}"
    );
    assert!(
        keys.iter()
            .any(|k| k["name"].as_str() == Some("any") && k["domain"].as_str() == Some("%"))
    );
    assert_eq!(
        table["outbound"]["networks"].as_array().unwrap().len(),
        1,
        "{}",
        m.config
    );
    // The rules and named keys pass rmilter's own validation.
    let written = write(d, "rmilter.toml", &m.config);
    crate::config::load(
        Some(&written),
        Path::new("/nonexistent"),
        &Default::default(),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", m.config));
    let differs: Vec<&Finding> = m
        .findings
        .iter()
        .filter(|f| f.status == Status::Differs)
        .collect();
    assert!(
        differs
            .iter()
            .any(|f| f.text.contains("exclusion -10.9.9.9")),
        "{differs:?}"
    );
    assert!(
        differs.iter().any(|f| f.text.contains("relay.example")),
        "{differs:?}"
    );
    assert!(differs.iter().any(|f| f.text.contains("i=")), "{differs:?}");
    assert_eq!(m.exit_code(), 1);
}

/// An exact-lookup (file:) SigningTable is tried user@host, host, .parent, * — whatever the
/// file order — and "*@" rows never match in it.
#[test]
fn file_signing_table_follows_opendkim_lookup_order() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let kt = write(
        d,
        "KeyTable",
        "a example.com:a:/k/a.pem\nb example.com:b:/k/b.pem\nc example.com:c:/k/c.pem\n",
    );
    let st = write(
        d,
        "SigningTable",
        "* c\npostmaster@* a\n.example.com b\nalice@example.com a\n*@example.com b\n",
    );
    let conf = write(
        d,
        "opendkim.conf",
        &format!("KeyTable {}\nSigningTable {}\n", kt.display(), st.display()),
    );
    let m = run(Some(conf), None).unwrap();
    let table: toml::Table = m.config.parse().unwrap();
    let senders: Vec<&str> = table["signing"]["rule"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["sender"].as_str().unwrap())
        .collect();
    assert_eq!(
        senders,
        ["alice@example.com", "*@*.example.com", "postmaster@*", "*"]
    );
    assert_eq!(table["signing"]["rule_match"].as_str(), Some("first"));
    assert!(
        m.findings.iter().any(|f| f.text.contains("never matches")),
        "{:?}",
        m.findings
    );
}

/// One key per domain, "*@domain" rules: rmilter's keys-by-From-domain does the same, so no
/// rules are written.
#[test]
fn per_domain_tables_need_no_rules() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let kt = write(
        d,
        "KeyTable",
        "mail._domainkey.example.com example.com:mail:/k/com.pem\nmail._domainkey.example.net example.net:mail:/k/net.pem\n",
    );
    let st = write(
        d,
        "SigningTable",
        "*@example.com mail._domainkey.example.com\n*@example.net mail._domainkey.example.net\n",
    );
    let conf = write(
        d,
        "opendkim.conf",
        &format!(
            "KeyTable refile:{}\nSigningTable refile:{}\n",
            kt.display(),
            st.display()
        ),
    );
    let m = run(Some(conf), None).unwrap();
    let table: toml::Table = m.config.parse().unwrap();
    assert!(table["signing"].get("rule").is_none(), "{}", m.config);
    assert!(table["signing"].get("rule_match").is_none(), "{}", m.config);
    let keys = table["key"].as_array().unwrap();
    assert_eq!(keys.len(), 2);
    assert!(keys.iter().all(|k| k.get("name").is_none()));
    // OpenDKIM's default canonicalization is simple/simple, not rmilter's relaxed/relaxed.
    assert_eq!(
        table["signing"]["canonicalization"].as_str(),
        Some("simple/simple")
    );
}

#[test]
fn bad_keytable_row_names_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let kt = write(
        d,
        "KeyTable",
        "# keys\nok example.com:s:/k/a.pem\nbroken example.com-s-/k/b.pem\n",
    );
    let conf = write(
        d,
        "opendkim.conf",
        &format!("KeyTable {}\nSigningTable csl:*\n", kt.display()),
    );
    let e = run(Some(conf), None).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "{}:3: KeyTable row \"broken\": expected domain:selector:keyfile",
            kt.display()
        )
    );
}

#[test]
fn unreadable_dataset_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let conf = write(
        dir.path(),
        "opendkim.conf",
        "InternalHosts refile:/nonexistent/TrustedHosts\n",
    );
    let e = run(Some(conf), None).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("/nonexistent/TrustedHosts: cannot read"),
        "{e}"
    );
}

/// Private keys written into a KeyTable, SQL passwords and LDAP bind passwords never appear.
#[test]
fn secrets_stay_out_of_config_and_report() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let kt = write(
        d,
        "KeyTable",
        "inline example.com:s:MIIEvQIBADANBgkqhkiG9w0BAQSECRETKEY\n",
    );
    let st = write(d, "SigningTable", "*@example.com inline\n");
    let conf = write(
        d,
        "opendkim.conf",
        &format!(
            "KeyTable {}\nSigningTable refile:{}\nLDAPBindPassword hunter2LDAP\nInternalHosts dsn:pgsql://u:pw0rdSQL@db/x/table=h\n",
            kt.display(),
            st.display()
        ),
    );
    let m = run(Some(conf), None).unwrap();
    let everything = format!(
        "{}\n{}\n{}",
        m.config,
        render_report(&m, None),
        serde_json::to_string(&m).unwrap()
    );
    for secret in ["SECRETKEY", "hunter2LDAP", "pw0rdSQL"] {
        assert!(
            !everything.contains(secret),
            "{secret} printed:\n{everything}"
        );
    }
    assert_eq!(m.exit_code(), 1);
}

#[test]
fn opendmarc_reject_failures_and_history() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let conf = write(
        d,
        "opendmarc.conf",
        "RejectFailures true\nHistoryFile /run/opendmarc/opendmarc.dat\nTrustedAuthservIDs HOSTNAME\nFailureReports true\nIgnoreMailFrom partner.example\n",
    );
    let m = run(None, Some(conf)).unwrap();
    let table: toml::Table = m.config.parse().unwrap();
    assert_eq!(table["policy"]["monitor"].as_bool(), Some(false));
    assert_eq!(table["policy"]["quarantine"].as_str(), Some("accept"));
    assert_eq!(table["report"]["enabled"].as_bool(), Some(true));
    assert_eq!(
        table["policy"]["domain"][0]["domain"].as_str(),
        Some("partner.example")
    );
    let status = |opt: &str| {
        m.findings
            .iter()
            .filter(|f| f.option == opt)
            .map(|f| f.status)
            .collect::<Vec<_>>()
    };
    assert_eq!(status("TrustedAuthservIDs"), [Status::NotNeeded]);
    assert_eq!(status("FailureReports"), [Status::Translated]);
    assert_eq!(table["report"]["failure"]["enabled"].as_bool(), Some(true));
    // OpenDMARC did not report p=none domains without FailureReportsOnNone.
    assert_eq!(
        table["report"]["failure"]["policy_none"].as_bool(),
        Some(false)
    );

    // Without RejectFailures OpenDMARC never acted: monitor mode, no behaviour change.
    let conf = write(
        d,
        "quiet.conf",
        "Socket local:/run/opendmarc/opendmarc.sock\nUMask 0002\n",
    );
    let m = run(None, Some(conf)).unwrap();
    let table: toml::Table = m.config.parse().unwrap();
    assert_eq!(table["policy"]["monitor"].as_bool(), Some(true));
    assert_eq!(m.exit_code(), 0, "{}", render_report(&m, None));
}

#[test]
fn include_is_read_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, "extra.conf", "Canonicalization relaxed/relaxed\n");
    let conf = write(
        d,
        "opendkim.conf",
        "Canonicalization simple\nInclude extra.conf\n",
    );
    let c = ConfFile::load(Daemon::Opendkim, &conf).unwrap();
    assert_eq!(c.get("canonicalization").unwrap().value, "relaxed/relaxed");
}

/// The README's table is generated from OPTIONS; regenerate it with
/// `RMILTER_WRITE_README=1 cargo test --lib migrate::tests::readme`.
#[test]
fn readme_option_table_matches_the_code() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
    let readme = std::fs::read_to_string(&path).unwrap();
    let (start, end) = (
        "<!-- migrate-options:start -->\n",
        "<!-- migrate-options:end -->",
    );
    let a = readme
        .find(start)
        .expect("README has the migrate option table markers")
        + start.len();
    let b = readme.find(end).unwrap();
    let table = options::markdown_table();
    if std::env::var_os("RMILTER_WRITE_README").is_some() {
        std::fs::write(&path, format!("{}{}{}", &readme[..a], table, &readme[b..])).unwrap();
        return;
    }
    assert!(
        readme[a..b] == table,
        "README's option table is out of date; run with RMILTER_WRITE_README=1"
    );
}

#[test]
fn opendmarc_failure_report_options() {
    let dir = tempfile::tempdir().unwrap();
    let conf = write(
        dir.path(),
        "opendmarc.conf",
        "FailureReports true\nFailureReportsOnNone true\nFailureReportsBcc dmarc-copies@example.org\nFailureReportsSentBy OpenDMARC <dmarc-noreply@example.org>\n",
    );
    let m = run(None, Some(conf)).unwrap();
    let table: toml::Table = m.config.parse().unwrap();
    assert_eq!(table["report"]["enabled"].as_bool(), Some(true));
    assert_eq!(
        table["report"]["email"].as_str(),
        Some("dmarc-noreply@example.org")
    );
    let failure = &table["report"]["failure"];
    assert_eq!(failure["enabled"].as_bool(), Some(true));
    assert_eq!(failure["policy_none"].as_bool(), Some(true));
    assert_eq!(
        failure["bcc"].as_array().unwrap()[0].as_str(),
        Some("dmarc-copies@example.org")
    );
    // The migrated file loads.
    crate::config::from_text(
        crate::config::Source::Embedded,
        &m.config,
        &crate::config::Overrides::default(),
    )
    .unwrap();
}

#[test]
fn every_option_is_listed_once() {
    let mut seen = std::collections::BTreeSet::new();
    for o in options::OPTIONS {
        assert!(
            seen.insert((o.daemon.as_str(), o.name.to_ascii_lowercase())),
            "{} twice",
            o.name
        );
    }
    assert!(options::lookup(Daemon::Opendkim, "signingtable").is_some());
    assert!(options::lookup(Daemon::Opendmarc, "signingtable").is_none());
}

/// The socket from /etc/default/opendkim finds OpenDKIM's entry among other milters (the
/// line easymail's installer writes); the others stay, in order.
#[test]
fn postfix_milter_found_by_default_file_socket() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let conf = write(d, "etc/opendkim.conf", "Mode sv\n");
    write(
        d,
        "etc/default/opendkim",
        "SOCKET=\"inet:12301@localhost\"\n",
    );
    write(
        d,
        "postfix/main.cf",
        "milter_default_action = accept\nsmtpd_milters = unix:/spamass/spamass.sock, inet:localhost:12301\nnon_smtpd_milters = unix:/spamass/spamass.sock, inet:localhost:12301\n",
    );
    write(d, "postfix/master.cf", "");
    let m = migrate(&Inputs {
        opendkim: Some(conf),
        postfix_dir: Some(d.join("postfix")),
        ..Inputs::default()
    })
    .unwrap();
    assert_eq!(
        m.postfix,
        [
            "postconf -e 'smtpd_milters = unix:/spamass/spamass.sock, unix:/run/rmilter/rmilter.sock' 'non_smtpd_milters = unix:/spamass/spamass.sock, unix:/run/rmilter/rmilter.sock'"
        ]
    );
    assert!(
        m.findings
            .iter()
            .any(|f| f.option == "Socket" && f.text.contains("sets SOCKET")),
        "{:?}",
        m.findings
    );
}

/// An opendkim.conf in `dir` that signs example.com with the one key `key`.
fn single_key_conf(dir: &Path, key: &Path) -> PathBuf {
    write(
        dir,
        "opendkim.conf",
        &format!(
            "Domain example.com\nSelector mail\nKeyFile {}\n",
            key.display()
        ),
    )
}

/// A world-readable key owned by someone else gets the exact commands that make rmilter's
/// key-file checks accept it.
#[test]
fn unsafe_key_file_gets_fix_commands() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let key = write(d, "keys/mail.private", "not read");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let m = run(Some(single_key_conf(d, &key)), None).unwrap();
    let k = key.display();
    assert!(
        m.key_fixes.contains(&format!("chown root:rmilter {k}")),
        "{:?}",
        m.key_fixes
    );
    assert!(
        m.key_fixes.contains(&format!("chmod 0640 {k}")),
        "{:?}",
        m.key_fixes
    );
    assert_eq!(m.exit_code(), 1);
    assert!(render_report(&m, None).contains(&format!("  chmod 0640 {k}\n")));
}

/// A key in a directory everyone may write (root's, not sticky) gets the
/// fix: rmilter's key-file check refuses such a directory whoever owns it.
#[test]
fn world_writable_key_directory_gets_a_fix() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let key = write(d, "keys/mail.private", "not read");
    let keys = key.parent().unwrap();
    std::fs::set_permissions(keys, std::fs::Permissions::from_mode(0o777)).unwrap();
    let m = run(Some(single_key_conf(d, &key)), None).unwrap();
    assert!(
        m.key_fixes
            .contains(&format!("chmod go-w {}", keys.display())),
        "{:?}",
        m.key_fixes
    );
}

/// A value carried over that rmilter's configuration refuses is reported
/// (and makes the migration exit 1), not left for rmilter's first start.
#[test]
fn a_translation_that_does_not_load_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let conf = write(
        dir.path(),
        "opendkim.conf",
        "Mode sv\nDomain example.com\nSelector \"sel 1\"\nKeyFile /nonexistent/k.private\n",
    );
    let m = run(Some(conf), None).unwrap();
    let finding = m
        .findings
        .iter()
        .find(|f| f.option == "rmilter.toml")
        .expect("the load failure is a finding");
    assert_eq!(finding.status, Status::Differs);
    assert!(finding.text.contains("selector"), "{}", finding.text);
    assert_eq!(m.exit_code(), 1);
    // A selector rmilter accepts: no such finding.
    let conf = write(
        dir.path(),
        "opendkim.conf",
        "Mode sv\nDomain example.com\nSelector sel1\nKeyFile /nonexistent/k.private\n",
    );
    let m = run(Some(conf), None).unwrap();
    assert!(
        !m.findings.iter().any(|f| f.option == "rmilter.toml"),
        "{:?}",
        m.findings
    );
}
