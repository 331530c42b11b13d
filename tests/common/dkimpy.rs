//! Checks DKIM signatures with an independent implementation, dkimpy, for rmilter's tests.
//!
//! A signature rmilter made is only trustworthy if someone else's verifier accepts it, so the
//! end-to-end tests hand every delivered message to `tests/tools/dkimverify.py` (dkimpy from
//! Debian's `python3-dkim`, Ed25519 through `python3-nacl`), run by `/usr/bin/python3`: the
//! `python3` first on PATH may be another interpreter without dkimpy. DNS answers come from the
//! records the test passes in, never from live DNS.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use super::postfix::{run_bounded, show};

pub const PYTHON: &str = "/usr/bin/python3";

/// dkimpy's verdict on one DKIM-Signature header field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DkimpySig {
    pub d: String,
    pub s: String,
    pub a: String,
    pub pass: bool,
    /// dkimpy's last log lines: the reason a signature failed.
    pub detail: String,
    /// DNS names dkimpy asked for.
    pub queried: Vec<String>,
}

/// Path of the verifier script in this source tree.
pub fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/tools/dkimverify.py")
}

/// Verifies every DKIM-Signature of `message` (one result each, in header order), answering
/// DNS from `dns` (owner name such as "sel._domainkey.example.test" -> TXT value).
pub fn verify(message: &[u8], dns: &[(String, String)]) -> Vec<DkimpySig> {
    let dir = tempfile::tempdir().expect("temporary directory for dkimpy");
    let msg_path = dir.path().join("message.eml");
    let dns_path = dir.path().join("dns.json");
    std::fs::write(&msg_path, message).unwrap();
    let dns_map: serde_json::Map<String, serde_json::Value> = dns
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    std::fs::write(&dns_path, serde_json::Value::Object(dns_map).to_string()).unwrap();

    let mut cmd = Command::new(PYTHON);
    cmd.arg(script()).arg(&msg_path).arg(&dns_path);
    let out = run_bounded(cmd, None, Duration::from_secs(60));
    assert!(
        out.status.success(),
        "dkimverify.py failed (is Debian's python3-dkim installed for {PYTHON}?): {}",
        show(&out)
    );
    let parsed: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("dkimverify.py printed non-JSON ({e}): {}", show(&out)));
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
    parsed
        .as_array()
        .expect("dkimverify.py prints a JSON list")
        .iter()
        .map(|r| DkimpySig {
            d: text(&r["d"]),
            s: text(&r["s"]),
            a: text(&r["a"]),
            pass: r["pass"].as_bool().unwrap_or(false),
            detail: text(&r["detail"]),
            queried: r["queried"]
                .as_array()
                .map(|q| q.iter().map(text).collect())
                .unwrap_or_default(),
        })
        .collect()
}

/// The TXT value of a zone-file record such as opendkim-genkey's `.txt` output:
/// `sel._domainkey IN TXT ( "v=DKIM1; k=rsa; " "p=MIIB..." ) ; comment` -> the quoted
/// strings concatenated (RFC 6376 §3.6.2.2: a key record split into strings is joined).
pub fn txt_record_value(zone_text: &str) -> String {
    let mut value = String::new();
    let mut chars = zone_text.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => value.extend(chars.next()),
                        _ => value.push(c),
                    }
                }
            }
            // A comment outside quotes runs to the end of its line.
            ';' => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            _ => {}
        }
    }
    value
}

/// (owner name, TXT value) of a zone-file record whose owner is relative to `origin`, as in
/// opendkim-genkey's `sel._domainkey IN TXT (...)` for domain `origin`.
pub fn zone_txt_record(zone_text: &str, origin: &str) -> (String, String) {
    let owner = zone_text.split_whitespace().next().unwrap_or_default();
    let name = if owner.ends_with('.') {
        owner.trim_end_matches('.').to_string()
    } else {
        format!("{owner}.{}", origin.trim_end_matches('.'))
    };
    (name, txt_record_value(zone_text))
}
