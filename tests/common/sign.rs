//! Signing test messages as a foreign sender would: mail-auth's signer with
//! rmilter's test keys, including the shapes rmilter itself never makes
//! (`l=`, `h=` without From).

#![allow(dead_code)]

use super::keys::TestKey;
use mail_auth::dkim::DkimSigner;
use mail_auth::headers::HeaderWriter;
use rmilter::config::KeySpec;
use rmilter::keys::LoadedKey;

pub struct SignOptions<'a> {
    pub headers: &'a [&'a str],
    pub body_length: bool,
    /// Sign as this domain instead of the key's (the record stays at the key's name).
    pub domain: Option<&'a str>,
}

impl Default for SignOptions<'_> {
    fn default() -> Self {
        SignOptions {
            headers: &["From", "To", "Subject", "Date", "Message-ID"],
            body_length: false,
            domain: None,
        }
    }
}

/// `raw` with a DKIM-Signature by `key` prepended.
pub fn sign(key: &TestKey, raw: &[u8], opts: &SignOptions<'_>) -> Vec<u8> {
    let loaded = LoadedKey::load(&KeySpec {
        domain: key.domain.clone(),
        selector: key.selector.clone(),
        path: key.path.clone(),
        algorithm: None,
        origin: "test".into(),
        ..Default::default()
    })
    .expect("load test key");
    let signature = DkimSigner::from_key(loaded.key.clone())
        .domain(opts.domain.unwrap_or(&key.domain))
        .selector(key.selector.clone())
        .headers(opts.headers.iter().copied())
        .body_length(opts.body_length)
        .sign(raw)
        .expect("sign");
    [signature.to_header().into_bytes(), raw.to_vec()].concat()
}
