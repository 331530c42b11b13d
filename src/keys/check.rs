//! `rmilter keys check`: compare the DKIM key record published at
//! `selector._domainkey.domain` with the key rmilter holds, through the
//! configured resolver, and give one verdict per key.
//!
//! A mis-rotated key gives `dkim=fail` at every receiver with no local
//! signal (RELIABILITY.md O4), so this is what `rmilter keys activate`
//! requires before a key may sign.

use super::{MIN_RSA_BITS, der_rsa_public_bits, tlv};
use crate::config::{DnsSettings, KeyAlgorithm};
use base64::Engine;
use mail_auth::hickory_resolver::proto::rr::{Name, RData};
use serde::Serialize;

/// What the DNS says about one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Exactly one record, and it publishes this key.
    Ok,
    /// No TXT record at the name (NXDOMAIN or no data).
    Missing,
    /// The record publishes another key, another key type, or excludes
    /// rmilter's signatures (`h=`, `s=`).
    Mismatch(String),
    /// The record publishes this key with `t=y`: receivers may treat the
    /// signatures as unsigned mail (RFC 6376 §3.6.1).
    Testing,
    /// The record publishes an RSA key below rmilter's minimum.
    TooShort(usize),
    /// More than one TXT record at the name: verifiers pick one at random
    /// (RFC 6376 §3.6.2.2). The detail says which one holds this key.
    Several(usize, String),
    /// The record cannot be read as a DKIM key record.
    Syntax(String),
    /// The record is the revocation record (`p=` empty, RFC 6376 §3.6.1).
    Revoked,
    /// The DNS did not answer (SERVFAIL, time out, refused).
    DnsError(String),
    /// rmilter's own key file cannot be used.
    KeyFile(String),
}

impl Verdict {
    /// Short name, for tables and JSON.
    pub fn name(&self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Missing => "missing",
            Verdict::Mismatch(_) => "mismatch",
            Verdict::Testing => "testing",
            Verdict::TooShort(_) => "too-short",
            Verdict::Several(..) => "several",
            Verdict::Syntax(_) => "syntax",
            Verdict::Revoked => "revoked",
            Verdict::DnsError(_) => "dns-error",
            Verdict::KeyFile(_) => "key-file",
        }
    }

    /// One sentence: what is wrong and what to do.
    pub fn detail(&self, name: &str) -> String {
        match self {
            Verdict::Ok => format!("{name} publishes this key"),
            Verdict::Missing => format!("no TXT record at {name}; publish the key record"),
            Verdict::Mismatch(why) => format!("{name}: {why}"),
            Verdict::Testing => format!(
                "{name} publishes this key with t=y (testing): receivers may treat signed mail as unsigned; remove t=y"
            ),
            Verdict::TooShort(bits) => format!(
                "{name} publishes a {bits}-bit RSA key; rmilter signs with {MIN_RSA_BITS} bits or more, so this is not its key (RFC 8301: verifiers fail keys under 1024 bits)"
            ),
            Verdict::Several(n, which) => format!(
                "{n} TXT records at {name}; verifiers may use any of them (RFC 6376 §3.6.2.2): keep exactly one ({which})"
            ),
            Verdict::Syntax(why) => format!("{name}: {why}"),
            Verdict::Revoked => format!("{name} is the revocation record (p= empty)"),
            Verdict::DnsError(why) => format!("{name}: DNS lookup failed: {why}"),
            Verdict::KeyFile(why) => why.clone(),
        }
    }

    pub fn is_ok(&self) -> bool {
        *self == Verdict::Ok
    }
}

/// A verdict as JSON.
#[derive(Debug, Clone, Serialize)]
pub struct VerdictJson {
    pub verdict: &'static str,
    pub detail: String,
}

impl VerdictJson {
    pub fn new(verdict: &Verdict, name: &str) -> VerdictJson {
        VerdictJson {
            verdict: verdict.name(),
            detail: verdict.detail(name),
        }
    }
}

/// The DNS name of a key record.
pub fn record_name(domain: &str, selector: &str) -> String {
    format!("{selector}._domainkey.{domain}")
}

/// Judge the TXT records found at a key's name (each record's strings
/// already joined) against the key: `public_key` as rmilter publishes it
/// (SubjectPublicKeyInfo DER for RSA, the raw 32 bytes for Ed25519).
pub fn evaluate(records: &[Vec<u8>], algorithm: KeyAlgorithm, public_key: &[u8]) -> Verdict {
    match records {
        [] => Verdict::Missing,
        [one] => evaluate_one(one, algorithm, public_key),
        many => {
            let matching: Vec<String> = many
                .iter()
                .enumerate()
                .filter(|(_, r)| {
                    matches!(
                        evaluate_one(r, algorithm, public_key),
                        Verdict::Ok | Verdict::Testing
                    )
                })
                .map(|(i, _)| (i + 1).to_string())
                .collect();
            let which = match matching.as_slice() {
                [] => "none of them publishes this key".to_string(),
                [one] => format!("record {one} of {} publishes this key", many.len()),
                several => format!("records {} publish this key", several.join(", ")),
            };
            Verdict::Several(many.len(), which)
        }
    }
}

/// A DKIM key record's tags (RFC 6376 §3.2 tag-list), in order.
fn tag_list(text: &str) -> Result<Vec<(&str, &str)>, String> {
    let mut tags: Vec<(&str, &str)> = Vec::new();
    for spec in text.split(';') {
        if spec.trim().is_empty() {
            continue;
        }
        let (name, value) = spec
            .split_once('=')
            .ok_or_else(|| format!("{:?} is not a tag=value pair", spec.trim()))?;
        let name = name.trim();
        let value = value.trim();
        // tag-name = ALPHA *ALNUMPUNC
        let name_ok = name.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !name_ok {
            return Err(format!("{name:?} is not a tag name"));
        }
        // tag-value: VALCHAR (%x21-3A / %x3C-7E) separated by whitespace.
        if let Some(bad) = value.chars().find(|&c| {
            !(c == ' ' || c == '\t' || c == '\r' || c == '\n' || ('!'..='~').contains(&c))
        }) {
            return Err(format!("{name}= holds the character {bad:?}"));
        }
        // RFC 6376 §3.2: a tag name occurring twice invalidates the list.
        if tags.iter().any(|(n, _)| *n == name) {
            return Err(format!("the tag {name}= occurs twice"));
        }
        tags.push((name, value));
    }
    Ok(tags)
}

fn evaluate_one(record: &[u8], algorithm: KeyAlgorithm, public_key: &[u8]) -> Verdict {
    let Ok(text) = std::str::from_utf8(record) else {
        return Verdict::Syntax("the record is not text".to_string());
    };
    let tags = match tag_list(text) {
        Ok(tags) => tags,
        Err(why) => return Verdict::Syntax(why),
    };
    let tag = |name: &str| tags.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
    // RFC 6376 §3.6.1: v= is optional, but when present it is first and DKIM1.
    if let Some(pos) = tags.iter().position(|(n, _)| *n == "v") {
        if pos != 0 {
            return Verdict::Syntax("v= must be the first tag".to_string());
        }
        if tags[0].1 != "DKIM1" {
            return Verdict::Syntax(format!("v={} is not DKIM1", tags[0].1));
        }
    }
    let Some(p) = tag("p") else {
        return Verdict::Syntax("no p= tag (the public key)".to_string());
    };
    let p: String = p.chars().filter(|c| !c.is_whitespace()).collect();
    if p.is_empty() {
        return Verdict::Revoked;
    }
    // RFC 6376 §3.6.1: k= defaults to rsa.
    let published = match tag("k").unwrap_or("rsa") {
        "rsa" => KeyAlgorithm::Rsa,
        "ed25519" => KeyAlgorithm::Ed25519,
        other => return Verdict::Syntax(format!("unknown key type k={other}")),
    };
    if published != algorithm {
        return Verdict::Mismatch(format!(
            "the record is for k={} but this key is {}",
            published.key_type(),
            algorithm.key_type()
        ));
    }
    let Ok(der) = base64::engine::general_purpose::STANDARD.decode(&p) else {
        return Verdict::Syntax("p= is not valid base64".to_string());
    };
    let same = match algorithm {
        KeyAlgorithm::Rsa => {
            let Some(bits) = der_rsa_public_bits(&der) else {
                return Verdict::Syntax(
                    "p= is not an RSA public key (a record cut short when it was split into strings?)"
                        .to_string(),
                );
            };
            if bits < MIN_RSA_BITS {
                return Verdict::TooShort(bits);
            }
            rsa_public_key(&der).is_some() && rsa_public_key(&der) == rsa_public_key(public_key)
        }
        // RFC 8463 §4: the raw 32-byte key.
        KeyAlgorithm::Ed25519 => {
            if der.len() != 32 {
                return Verdict::Syntax(format!(
                    "p= holds {} bytes; an Ed25519 key is 32 bytes (RFC 8463 §4)",
                    der.len()
                ));
            }
            der == public_key
        }
    };
    if !same {
        return Verdict::Mismatch("the record publishes a different key".to_string());
    }
    // RFC 6376 §3.6.1: h= lists the acceptable hash algorithms.
    if let Some(h) = tag("h")
        && !h.split(':').any(|a| a.trim() == "sha256")
    {
        return Verdict::Mismatch(format!("h={h} excludes sha256, which rmilter signs with"));
    }
    // s= lists service types; email or * must be among them.
    if let Some(s) = tag("s")
        && !s.split(':').any(|t| matches!(t.trim(), "email" | "*"))
    {
        return Verdict::Mismatch(format!("s={s} excludes email"));
    }
    if let Some(t) = tag("t")
        && t.split(':').any(|f| f.trim() == "y")
    {
        return Verdict::Testing;
    }
    Verdict::Ok
}

/// The DER `RSAPublicKey` of an RSA key published either as
/// SubjectPublicKeyInfo (RFC 6376 §3.6.1) or as a bare `RSAPublicKey`.
fn rsa_public_key(der: &[u8]) -> Option<&[u8]> {
    let (tag, body, _) = tlv(der)?;
    if tag != 0x30 {
        return None;
    }
    let (tag, _, rest) = tlv(body)?;
    match tag {
        0x02 => Some(der),
        0x30 => {
            let (tag, bits, _) = tlv(rest)?;
            (tag == 0x03).then_some(())?;
            bits.split_first().map(|(_, key)| key)
        }
        _ => None,
    }
}

/// Looks key records up through the resolver configured in `[dns]`.
pub struct Checker {
    authenticator: mail_auth::MessageAuthenticator,
}

impl Checker {
    pub fn new(settings: &DnsSettings) -> anyhow::Result<Checker> {
        Ok(Checker {
            authenticator: crate::dns::authenticator(settings)?,
        })
    }

    /// The TXT records at `selector._domainkey.domain`, each one's strings
    /// joined (RFC 6376 §3.6.2.2); empty when the name has none.
    pub async fn records(&self, domain: &str, selector: &str) -> Result<Vec<Vec<u8>>, String> {
        let fqdn = format!("{}.", record_name(domain, selector));
        let name = Name::from_ascii(&fqdn).map_err(|e| e.to_string())?;
        match self.authenticator.resolver().txt_lookup(name).await {
            Ok(lookup) => Ok(lookup
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::TXT(txt) => Some(txt.txt_data.iter().flatten().copied().collect()),
                    _ => None,
                })
                .collect()),
            Err(e) if e.is_no_records_found() => Ok(Vec::new()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// The verdict for one key.
    pub async fn check(
        &self,
        domain: &str,
        selector: &str,
        algorithm: KeyAlgorithm,
        public_key: &[u8],
    ) -> Verdict {
        match self.records(domain, selector).await {
            Ok(records) => evaluate(&records, algorithm, public_key),
            Err(why) => Verdict::DnsError(why),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ed_key() -> Vec<u8> {
        (1..=32).collect()
    }

    fn ed_record(extra: &str, key: &[u8]) -> Vec<u8> {
        format!(
            "v=DKIM1; k=ed25519;{extra} p={}",
            base64::engine::general_purpose::STANDARD.encode(key)
        )
        .into_bytes()
    }

    fn verdict(records: &[Vec<u8>]) -> Verdict {
        evaluate(records, KeyAlgorithm::Ed25519, &ed_key())
    }

    #[test]
    fn verdicts_from_record_text() {
        let key = ed_key();
        assert_eq!(verdict(&[ed_record("", &key)]), Verdict::Ok);
        assert_eq!(verdict(&[]), Verdict::Missing);
        assert_eq!(verdict(&[ed_record(" t=y;", &key)]), Verdict::Testing);
        assert_eq!(verdict(&[ed_record(" t=s:y;", &key)]), Verdict::Testing);
        assert_eq!(verdict(&[ed_record(" t=s;", &key)]), Verdict::Ok);
        assert_eq!(
            verdict(&[ed_record("", &[7; 32])]),
            Verdict::Mismatch("the record publishes a different key".into())
        );
        assert_eq!(
            verdict(&[b"v=DKIM1; k=rsa; p=AAAA".to_vec()]),
            Verdict::Mismatch("the record is for k=rsa but this key is ed25519".into())
        );
        // No k= means RSA (RFC 6376 §3.6.1).
        assert!(matches!(
            verdict(&[format!(
                "p={}",
                base64::engine::general_purpose::STANDARD.encode(&key)
            )
            .into_bytes()]),
            Verdict::Mismatch(_)
        ));
        assert_eq!(
            verdict(&[b"v=DKIM1; k=ed25519; p=".to_vec()]),
            Verdict::Revoked
        );
        assert_eq!(
            verdict(&[ed_record(" h=sha1;", &key)]),
            Verdict::Mismatch("h=sha1 excludes sha256, which rmilter signs with".into())
        );
        assert_eq!(verdict(&[ed_record(" h=sha1:sha256;", &key)]), Verdict::Ok);
        assert!(matches!(
            verdict(&[ed_record(" s=tlsrpt;", &key)]),
            Verdict::Mismatch(_)
        ));
        assert_eq!(
            verdict(&[ed_record("", &key), ed_record("", &[7; 32])]),
            Verdict::Several(2, "record 1 of 2 publishes this key".into())
        );
        for (text, why) in [
            ("v=DKIM1; k=ed25519", "no p= tag (the public key)"),
            ("k=ed25519; v=DKIM1; p=AAAA", "v= must be the first tag"),
            ("v=DKIM2; p=AAAA", "v=DKIM2 is not DKIM1"),
            ("v=DKIM1; k=dsa; p=AAAA", "unknown key type k=dsa"),
            ("v=DKIM1; k=ed25519; p=!!!", "p= is not valid base64"),
            (
                "v=DKIM1; k=ed25519; p=AAAA",
                "p= holds 3 bytes; an Ed25519 key is 32 bytes (RFC 8463 §4)",
            ),
            (
                "v=DKIM1; k=ed25519; p=AAAA; p=AAAA",
                "the tag p= occurs twice",
            ),
            (
                "v=DKIM1; garbage; p=AAAA",
                "\"garbage\" is not a tag=value pair",
            ),
            ("v=DKIM1; 1k=ed25519; p=AAAA", "\"1k\" is not a tag name"),
        ] {
            assert_eq!(
                verdict(&[text.as_bytes().to_vec()]),
                Verdict::Syntax(why.to_string()),
                "{text}"
            );
        }
        assert_eq!(
            verdict(&[vec![0xff, 0xfe]]),
            Verdict::Syntax("the record is not text".into())
        );
    }

    #[test]
    fn rsa_records_compare_the_key_not_the_encoding() {
        let dir = tempfile::tempdir().unwrap();
        let generated =
            super::super::generate(dir.path(), "example.com", "s", KeyAlgorithm::Rsa, 2048)
                .unwrap();
        let spki = generated.key.public_key.clone();
        let record = generated.key.txt_value().into_bytes();
        assert_eq!(evaluate(&[record], KeyAlgorithm::Rsa, &spki), Verdict::Ok);
        // The bare RSAPublicKey (as some tools publish it) is the same key.
        let bare = rsa_public_key(&spki).unwrap().to_vec();
        let bare_record = format!(
            "v=DKIM1; p={}",
            base64::engine::general_purpose::STANDARD.encode(&bare)
        );
        assert_eq!(
            evaluate(&[bare_record.into_bytes()], KeyAlgorithm::Rsa, &spki),
            Verdict::Ok
        );
        // A record cut at the first 255-byte string.
        let cut = generated.key.txt_value()[..255].to_string();
        assert!(matches!(
            evaluate(&[cut.into_bytes()], KeyAlgorithm::Rsa, &spki),
            Verdict::Syntax(_)
        ));
        // dkimpy's 1024-bit test record is too short.
        let short = "v=DKIM1; k=rsa; p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDkHlOQoBTzWRiGs5V6NpP3idY6Wk08a5qhdR6wy5bdOKb2jLQiY/J16JYi0Qvx/byYzCNb3W91y3FutACDfzwQ/BC/e/8uBsCR+yz1Lxj+PL6lHvqMKrM3rG4hstT5QjvHO9PzoxZyVYLzBfO2EeC3Ip3G+2kryOTIKT+l/K4w3QIDAQAB";
        assert_eq!(
            evaluate(&[short.as_bytes().to_vec()], KeyAlgorithm::Rsa, &spki),
            Verdict::TooShort(1024)
        );
        // Another 2048-bit key is a mismatch.
        let other = super::super::generate(dir.path(), "example.com", "t", KeyAlgorithm::Rsa, 2048)
            .unwrap();
        assert_eq!(
            evaluate(
                &[other.key.txt_value().into_bytes()],
                KeyAlgorithm::Rsa,
                &spki
            ),
            Verdict::Mismatch("the record publishes a different key".into())
        );
    }
}
