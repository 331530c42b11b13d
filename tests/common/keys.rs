//! Signing keys for tests, generated into a private temporary directory by
//! rmilter's own key generator, with their DNS records.

#![allow(dead_code)]

use rmilter::config::KeyAlgorithm;
use rmilter::keys::{self, LoadedKey};
use std::path::PathBuf;

pub struct TestKey {
    pub domain: String,
    pub selector: String,
    pub path: PathBuf,
    pub algorithm: KeyAlgorithm,
    pub txt: String,
}

pub struct TestKeys {
    pub dir: tempfile::TempDir,
    pub keys: Vec<TestKey>,
}

impl TestKeys {
    /// One key per (domain, selector, algorithm).
    pub fn new(specs: &[(&str, &str, KeyAlgorithm)]) -> TestKeys {
        let dir = tempfile::tempdir().expect("tempdir");
        let keys = specs
            .iter()
            .map(|(domain, selector, algorithm)| {
                let generated = keys::generate(dir.path(), domain, selector, *algorithm, 2048)
                    .unwrap_or_else(|e| panic!("generate {domain}/{selector}: {e}"));
                let key: &LoadedKey = &generated.key;
                TestKey {
                    domain: domain.to_string(),
                    selector: selector.to_string(),
                    path: generated.path.clone(),
                    algorithm: *algorithm,
                    txt: key.txt_value(),
                }
            })
            .collect();
        TestKeys { dir, keys }
    }

    /// example.com with an RSA-2048 key (selector "rsa") and an Ed25519 key
    /// (selector "ed").
    pub fn example_com() -> TestKeys {
        TestKeys::new(&[
            ("example.com", "rsa", KeyAlgorithm::Rsa),
            ("example.com", "ed", KeyAlgorithm::Ed25519),
        ])
    }

    /// `[[key]]` tables for rmilter.toml.
    pub fn toml(&self) -> String {
        self.keys
            .iter()
            .map(|k| {
                format!(
                    "[[key]]\ndomain = \"{}\"\nselector = \"{}\"\nfile = \"{}\"\n\n",
                    k.domain,
                    k.selector,
                    k.path.display()
                )
            })
            .collect()
    }

    /// (name, TXT value) pairs for the verifiers.
    pub fn dns(&self) -> Vec<(String, String)> {
        self.keys
            .iter()
            .map(|k| {
                (
                    format!("{}._domainkey.{}", k.selector, k.domain),
                    k.txt.clone(),
                )
            })
            .collect()
    }
}
