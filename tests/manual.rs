//! The manual cannot drift from the configuration: every key the raw serde
//! structs of `src/config/raw.rs` accept is listed in `config/rmilter.toml`
//! (with its default, or in an example table) and in the generated
//! rmilter.toml(5); every subcommand is in rmilter(8). The list of keys is
//! read from serde itself (the "expected one of" of an unknown field), so a
//! key added to a raw struct is checked without touching this test.

use rmilter::config::raw::RawConfig;
use std::collections::BTreeSet;

/// The field names serde lists for an unknown field at `prefix` (a TOML
/// snippet that opens the table), or None when `prefix` is not a table.
fn fields_of(prefix: &str) -> Option<Vec<String>> {
    let probe = format!("{prefix}zz_no_such_key_zz = 1\n");
    let err = toml::from_str::<RawConfig>(&probe)
        .expect_err("an unknown key must be refused")
        .to_string();
    if !err.contains("unknown field `zz_no_such_key_zz`") {
        return None;
    }
    let expected = err.split_once("expected").map(|(_, e)| e)?;
    Some(
        expected
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect(),
    )
}

/// Every key path serde accepts: `listen`, `limits.max_connections`,
/// `key.domain` (array of tables), `policy.domain.monitor`.
fn raw_keys() -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    // (dotted table path, header that opens it)
    let mut tables = vec![(String::new(), String::new())];
    while let Some((path, header)) = tables.pop() {
        let fields = fields_of(&header).unwrap_or_else(|| panic!("{path:?} is not a table"));
        for field in fields {
            let dotted = if path.is_empty() {
                field.clone()
            } else {
                format!("{path}.{field}")
            };
            if fields_of(&format!("[{dotted}]\n")).is_some() {
                tables.push((dotted.clone(), format!("[{dotted}]\n")));
            } else if fields_of(&format!("[[{dotted}]]\n")).is_some() {
                tables.push((dotted.clone(), format!("[[{dotted}]]\n")));
            } else {
                keys.insert(dotted);
            }
        }
    }
    keys
}

#[test]
fn serde_probe_finds_nested_keys() {
    let keys = raw_keys();
    for key in [
        "listen",
        "socket.group",
        "limits.max_connections",
        "key.selector",
        "keys.owner",
        "policy.domain.monitor",
        "report.store",
        "metrics.listen",
    ] {
        assert!(keys.contains(key), "{key} not found in {keys:?}");
    }
    assert!(!keys.contains("policy.domain"), "{keys:?}");
}

#[test]
fn every_config_key_is_in_the_reference_and_the_manual() {
    let documented: BTreeSet<String> = rmilter::manual::reference_keys()
        .into_iter()
        .map(|k| k.path)
        .collect();
    let page = rmilter::manual::config_page();
    let mut missing = Vec::new();
    for key in raw_keys() {
        if !documented.contains(&key) {
            missing.push(format!("{key}: not in config/rmilter.toml"));
        }
        // Each key is a bold item of the page: \fBkey\fR.
        if !page.contains(&format!("\\fB{key}\\fR")) {
            missing.push(format!("{key}: not in rmilter.toml(5)"));
        }
    }
    assert!(
        missing.is_empty(),
        "undocumented keys:\n{}",
        missing.join("\n")
    );
    // And nothing documented that serde would refuse.
    let accepted = raw_keys();
    let stale: Vec<_> = documented.difference(&accepted).collect();
    assert!(
        stale.is_empty(),
        "config/rmilter.toml documents unknown keys: {stale:?}"
    );
}

#[test]
fn every_subcommand_and_exit_code_is_in_rmilter_8() {
    use clap::CommandFactory;
    let page = rmilter::manual::command_page();
    let cli = rmilter::cli::Cli::command();
    let mut names = Vec::new();
    for sub in cli.get_subcommands().filter(|s| !s.is_hide_set()) {
        if sub.has_subcommands() {
            for leaf in sub.get_subcommands() {
                names.push(format!("rmilter {} {}", sub.get_name(), leaf.get_name()));
            }
        } else {
            names.push(format!("rmilter {}", sub.get_name()));
        }
    }
    assert!(names.len() >= 13, "{names:?}");
    for name in names {
        assert!(
            page.contains(&format!(".SS \"{name}\"")),
            "{name} missing from rmilter(8)"
        );
    }
    for code in ["0", "1", "2", "78"] {
        assert!(
            page.contains(&format!(".TP\n\\fB{code}\\fR")),
            "exit code {code}"
        );
    }
}

#[test]
fn completions_know_the_subcommands() {
    let bash = rmilter::manual::completion(clap_complete::Shell::Bash);
    let zsh = rmilter::manual::completion(clap_complete::Shell::Zsh);
    for word in [
        "check-config",
        "doctor",
        "explain",
        "rotate",
        "--postfix-dir",
    ] {
        assert!(bash.contains(word), "bash completion lacks {word}");
        assert!(zsh.contains(word), "zsh completion lacks {word}");
    }
}
