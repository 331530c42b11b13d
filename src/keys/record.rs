//! DKIM key records (RFC 6376 §3.6.1, RFC 8463 §4) as TXT values and as
//! zone-file entries.

use crate::config::KeyAlgorithm;
use base64::Engine;

/// The TXT value for a public key: `v=DKIM1; k=rsa; p=...`.
pub fn txt_value(algorithm: KeyAlgorithm, public_key: &[u8]) -> String {
    format!(
        "v=DKIM1; k={}; p={}",
        algorithm.key_type(),
        base64::engine::general_purpose::STANDARD.encode(public_key)
    )
}

/// The revocation record of a retired key (RFC 6376 §3.6.1: an empty
/// `p=` means the key has been revoked).
pub fn revocation_value(algorithm: KeyAlgorithm) -> String {
    format!("v=DKIM1; k={}; p=", algorithm.key_type())
}

/// A zone-file entry for `selector._domainkey.domain.`: the value is split
/// into character-strings of at most 255 bytes (RFC 1035 §3.3), which
/// resolvers join again (RFC 6376 §3.6.2.2).
pub fn zone_entry(domain: &str, selector: &str, value: &str) -> String {
    const CHUNK: usize = 250;
    let strings: Vec<String> = value
        .as_bytes()
        .chunks(CHUNK)
        .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
        .collect();
    let name = format!("{selector}._domainkey.{domain}.");
    if strings.len() == 1 {
        format!("{name}\tIN\tTXT\t{}", strings[0])
    } else {
        format!("{name}\tIN\tTXT\t( {} )", strings.join("\n\t\t\t\t"))
    }
}
