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

/// `modified` (what a mailing list sends on) sealed by `key` as an ARC
/// sealer (RFC 8617) whose ARC-Authentication-Results records what it
/// verified of `received`: DKIM, and DMARC for `author` with no SPF pass,
/// looked up through `auth`.
pub async fn arc_seal(
    key: &TestKey,
    auth: &mail_auth::MessageAuthenticator,
    received: &[u8],
    author: &str,
    modified: &[u8],
) -> Vec<u8> {
    use mail_auth::arc::ArcSealer;
    use mail_auth::dmarc::verify::DmarcParameters;
    use mail_auth::spf::SpfOutput;
    use mail_auth::{AuthenticatedMessage, AuthenticationResults};

    let loaded = LoadedKey::load(&KeySpec {
        domain: key.domain.clone(),
        selector: key.selector.clone(),
        path: key.path.clone(),
        algorithm: None,
        origin: "test".into(),
        ..Default::default()
    })
    .expect("load test key");
    let seen = AuthenticatedMessage::parse(received).expect("parse the received message");
    let dkim = auth.verify_dkim(&seen).await;
    let spf = SpfOutput::new(key.domain.clone()).with_result(mail_auth::SpfResult::None);
    let dmarc = auth
        .verify_dmarc(DmarcParameters::new(&seen, &dkim, &key.domain, &spf))
        .await;
    let results = AuthenticationResults::new(&key.domain)
        .with_dkim_results(&dkim, author)
        .with_dmarc_result(&dmarc);
    let sent = AuthenticatedMessage::parse(modified).expect("parse the modified message");
    let chain = auth.verify_arc(&sent).await;
    let set = ArcSealer::from_key(loaded.key.clone())
        .domain(&key.domain)
        .selector(&key.selector)
        .headers(["From", "To", "Subject", "Date", "Message-ID"])
        .seal(&sent, &results, &chain)
        .expect("seal");
    [set.to_header().into_bytes(), modified.to_vec()].concat()
}
