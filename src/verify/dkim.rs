//! DKIM checks rmilter adds around mail-auth's verifier.
//!
//! Before verification: signatures with a `d=` or `s=` that is not a plain
//! domain / selector are permerrors and never looked up (RELIABILITY K4);
//! `h=` without From is a permerror (RFC 6376 §6.1.1); rsa-sha1 never passes
//! (RFC 8301 §3.1) and `l=` signatures never count (RELIABILITY K1), both
//! reported as `policy`. None of these costs a lookup or a place under
//! `verify.max_signatures`, and at most that many of them are listed one by
//! one; the rest are summarised in one result, so junk signatures cannot
//! grow the Authentication-Results field or push a genuine signature out.
//! When more signatures remain than the cap allows, those whose body hash
//! does not match are failed (RFC 6376 §6.1.3) and expired ones made neutral
//! without a lookup, and the cap applies to the rest, author-aligned ones first (RELIABILITY K9). After
//! verification: RSA keys under 1024 bits are permerrors and under the
//! configured minimum `policy` (RFC 8301 §3.2), the size read from the key
//! record mail-auth selected, to the bit.

use mail_auth::crypto::{Algorithm, Sha256, SigningKey};
use mail_auth::dkim::{Canonicalization, DkimError, DkimSigner, DomainKey, Signature};
use mail_auth::dns::TxtRecordParser;
use mail_auth::headers::Writable;
use mail_auth::{AuthenticatedMessage, DkimOutput, DkimResult, MessageAuthenticator};

/// The verdict on one DKIM-Signature field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DkimStatus {
    Pass,
    Fail,
    Neutral,
    Policy,
    TempError,
    PermError,
}

impl DkimStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DkimStatus::Pass => "pass",
            DkimStatus::Fail => "fail",
            DkimStatus::Neutral => "neutral",
            DkimStatus::Policy => "policy",
            DkimStatus::TempError => "temperror",
            DkimStatus::PermError => "permerror",
        }
    }

    /// Whether DMARC may use the signature: a pass, or a temperror that
    /// might have been a pass (RFC 9989 §5.3.6).
    pub fn dmarc_eligible(self) -> bool {
        matches!(self, DkimStatus::Pass | DkimStatus::TempError)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DkimVerdict {
    /// `d=`, `s=`, `a=` as written when they are plain tokens, else empty.
    pub domain: String,
    pub selector: String,
    pub algorithm: String,
    /// The first 8 characters of `b=` (RFC 6008 `header.b`).
    pub b: String,
    pub status: DkimStatus,
    pub reason: String,
}

/// What `prefilter` decided for the signatures it removed.
pub struct Prefiltered {
    /// At most `max` refused signatures one by one (author-aligned ones
    /// first), then one summary of the rest.
    pub verdicts: Vec<DkimVerdict>,
    /// How many signatures the summary at the end of `verdicts` stands for
    /// (0: no summary).
    pub summarised: usize,
    /// The `d=` of each signature decided before the cap, without a lookup:
    /// a body hash mismatch, or expired (`x=`).
    pub decided_before_cap: Vec<String>,
    pub skipped: usize,
}

/// A key that signs nothing: it lets mail-auth's own signer compute a body
/// hash (its body canonicalizer is not public), without any cryptography.
struct BodyHashOnly;

impl SigningKey for BodyHashOnly {
    type Hasher = Sha256;

    fn sign(&self, _input: impl Writable) -> mail_auth::Result<Vec<u8>> {
        Ok(Vec::new())
    }

    fn algorithm(&self) -> Algorithm {
        Algorithm::Ed25519Sha256
    }
}

/// The SHA-256 body hash of `body` under `canonicalization` (no `l=`),
/// exactly as mail-auth's verifier computes it.
fn sha256_body_hash(body: &[u8], canonicalization: Canonicalization) -> Option<Vec<u8>> {
    let signer = DkimSigner::from_key(BodyHashOnly)
        .domain("invalid")
        .selector("x")
        .headers(["From"])
        .body_canonicalization(canonicalization);
    let mut stream = signer.sign_streaming();
    stream.write(b"From: x\r\n\r\n");
    stream.write(body);
    stream.finish().ok().map(|s| s.bh)
}

fn verdict(sig: &Signature, status: DkimStatus, reason: &str) -> DkimVerdict {
    let token = |t: &str| {
        if is_dns_token(t) {
            t.to_string()
        } else {
            String::new()
        }
    };
    DkimVerdict {
        domain: token(&sig.d).to_ascii_lowercase(),
        selector: token(&sig.s),
        algorithm: match sig.a {
            Algorithm::RsaSha256 => "rsa-sha256",
            Algorithm::RsaSha1 => "rsa-sha1",
            Algorithm::Ed25519Sha256 => "ed25519-sha256",
            _ => "unknown",
        }
        .to_string(),
        b: b_prefix(&sig.b),
        status,
        reason: reason.to_string(),
    }
}

fn b_prefix(b: &[u8]) -> String {
    use base64::Engine;
    let mut s = base64::engine::general_purpose::STANDARD.encode(&b[..b.len().min(6)]);
    s.truncate(8);
    s
}

/// The value of tag `name` in a raw tag-list (RFC 6376 §3.2), for
/// reporting which domain a malformed signature named.
fn raw_tag(value: &[u8], name: &str) -> Option<String> {
    String::from_utf8_lossy(value).split(';').find_map(|t| {
        let (k, v) = t.split_once('=')?;
        (k.trim() == name).then(|| v.split_whitespace().collect::<String>())
    })
}

/// A `d=` domain or `s=` selector: LDH labels (plus `_` as selectors in
/// the wild use it), no NUL, quote, parenthesis or other character a later
/// reader could split on (RFC 6376 §3.5).
pub fn is_dns_token(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 253
        && text.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// Whether `d` may align with the author domain (same domain, parent or
/// child): used to order signatures and for decisions on the safe side.
pub fn aligned_hint(d: &str, author: &str) -> bool {
    let d = d.to_ascii_lowercase();
    d == author || author.ends_with(&format!(".{d}")) || d.ends_with(&format!(".{author}"))
}

/// Remove the signatures rmilter does not verify from `message` and say
/// why. Parse errors of DKIM-Signature fields become permerrors as well.
/// `truncated`: the message was too large to verify and its body is cut
/// short, so no body hash can be judged from it.
pub fn prefilter(
    message: &mut AuthenticatedMessage<'_>,
    author: &str,
    max: usize,
    truncated: bool,
) -> Prefiltered {
    let mut verdicts: Vec<DkimVerdict> = message
        .errors()
        .iter()
        .filter(|e| e.name.eq_ignore_ascii_case(b"dkim-signature"))
        .map(|e| {
            let tag = |name: &str| {
                raw_tag(e.value, name)
                    .filter(|v| is_dns_token(v))
                    .unwrap_or_default()
            };
            let (status, reason) = match &e.header {
                // K1: mail-auth's strict parser refuses l= outright.
                mail_auth::Error::Dkim(DkimError::BodyLengthTag) => (
                    DkimStatus::Policy,
                    "l= body length limit is not accepted".to_string(),
                ),
                other => (
                    DkimStatus::PermError,
                    format!("malformed signature: {other}"),
                ),
            };
            DkimVerdict {
                domain: tag("d").to_ascii_lowercase(),
                selector: tag("s"),
                algorithm: String::new(),
                b: String::new(),
                status,
                reason,
            }
        })
        .collect();

    // Decide per signature, in field order.
    let sigs: Vec<&Signature> = message
        .dkim_signatures()
        .iter()
        .map(|h| &h.header)
        .collect();
    let mut decisions: Vec<Option<(DkimStatus, &'static str)>> = sigs
        .iter()
        .map(|sig| {
            if !is_dns_token(&sig.d) || !is_dns_token(&sig.s) {
                // K4: never look up a name built from an invalid d= or s=.
                Some((DkimStatus::PermError, "invalid d= or s= syntax"))
            } else if !sig.h.iter().any(|h| h.eq_ignore_ascii_case("from")) {
                // RFC 6376 §6.1.1: h= must include From.
                Some((DkimStatus::PermError, "From is not signed"))
            } else if sig.a == Algorithm::RsaSha1 {
                // RFC 8301 §3.1: rsa-sha1 MUST NOT be considered valid.
                Some((DkimStatus::Policy, "rsa-sha1 is not accepted"))
            } else if sig.l > 0 {
                // K1: content can be appended after l=; never an aligned pass.
                Some((DkimStatus::Policy, "l= body length limit is not accepted"))
            } else {
                None
            }
        })
        .collect();
    // More candidates than the cap: a signature whose body hash does not
    // match needs no key and takes no place (RFC 6376 §6.1.3: PERMFAIL).
    let candidates = decisions.iter().filter(|d| d.is_none()).count();
    let mut decided_before_cap = Vec::new();
    if candidates > max {
        let body = message.raw_body();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut hashes: Vec<(Canonicalization, Option<Vec<u8>>)> = Vec::new();
        for (i, sig) in sigs.iter().enumerate() {
            if decisions[i].is_some()
                || !matches!(sig.a, Algorithm::RsaSha256 | Algorithm::Ed25519Sha256)
            {
                continue;
            }
            let bh = match hashes.iter().find(|(c, _)| *c == sig.cb) {
                Some((_, bh)) => bh.clone(),
                None => {
                    let bh = sha256_body_hash(body, sig.cb);
                    hashes.push((sig.cb, bh.clone()));
                    bh
                }
            };
            // A truncated body proves nothing about the body hash: such a
            // signature stays a candidate and becomes a temperror, so a
            // genuine large message is never failed for its size.
            if !truncated && bh.is_some_and(|bh| bh != sig.bh) {
                decisions[i] = Some((DkimStatus::Fail, "body hash mismatch"));
            } else if sig.x != 0 && (sig.x <= sig.t || sig.x <= now) {
                // RFC 6376 §3.5 x=: an expired signature may be ignored;
                // neutral, as mail-auth reports it.
                decisions[i] = Some((DkimStatus::Neutral, "signature expired"));
            } else {
                continue;
            }
            decided_before_cap.push(sig.d.to_ascii_lowercase());
        }
    }
    // K9: verify at most `max`, author-aligned signatures first.
    let mut budget = max;
    let mut skipped = vec![false; sigs.len()];
    for pass in [true, false] {
        for (i, sig) in sigs.iter().enumerate() {
            if decisions[i].is_none() && !skipped[i] && aligned_hint(&sig.d, author) == pass {
                if budget > 0 {
                    budget -= 1;
                } else {
                    skipped[i] = true;
                }
            }
        }
    }
    let mut skipped_count = 0;
    for (i, sig) in sigs.iter().enumerate() {
        if let Some((status, reason)) = decisions[i] {
            verdicts.push(verdict(sig, status, reason));
        } else if skipped[i] {
            skipped_count += 1;
            decisions[i] = Some((DkimStatus::Neutral, "skipped"));
        }
    }
    let mut index = 0;
    message.retain_dkim_signatures(|_| {
        let keep = decisions.get(index).is_some_and(Option::is_none);
        index += 1;
        if keep {
            Ok(())
        } else {
            Err(DkimError::UnsupportedAlgorithm)
        }
    });
    let (verdicts, summarised) = bounded(verdicts, author, max);
    Prefiltered {
        verdicts,
        summarised,
        decided_before_cap,
        skipped: skipped_count,
    }
}

/// At most `max` refused signatures listed one by one, author-aligned ones
/// first (they matter to the sender's reports), in field order otherwise;
/// the rest become one summary without identifiers, whose size is returned.
fn bounded(verdicts: Vec<DkimVerdict>, author: &str, max: usize) -> (Vec<DkimVerdict>, usize) {
    if verdicts.len() <= max {
        return (verdicts, 0);
    }
    let (aligned, other): (Vec<_>, Vec<_>) = verdicts
        .into_iter()
        .partition(|v| !v.domain.is_empty() && aligned_hint(&v.domain, author));
    let mut listed: Vec<DkimVerdict> = aligned.into_iter().chain(other).collect();
    let rest = listed.len() - max;
    listed.truncate(max);
    listed.push(DkimVerdict {
        domain: String::new(),
        selector: String::new(),
        algorithm: String::new(),
        b: String::new(),
        status: DkimStatus::PermError,
        reason: format!("{rest} more signatures refused without verification"),
    });
    (listed, rest)
}

/// Turn mail-auth's outputs for the retained signatures into verdicts and
/// apply the key-size rules.
pub async fn collect(
    authenticator: &MessageAuthenticator,
    message: &AuthenticatedMessage<'_>,
    outputs: &[DkimOutput<'_>],
    min_rsa_bits: usize,
) -> Vec<DkimVerdict> {
    let mut verdicts = Vec::new();
    for header in message.dkim_signatures() {
        let sig = &header.header;
        let Some(output) = outputs
            .iter()
            .find(|o| o.signature().is_some_and(|s| std::ptr::eq(s, sig)))
        else {
            verdicts.push(verdict(sig, DkimStatus::PermError, "not evaluated"));
            continue;
        };
        let (mut status, mut reason) = match output.result() {
            DkimResult::Pass => (DkimStatus::Pass, String::new()),
            DkimResult::Fail(e) => (DkimStatus::Fail, e.to_string()),
            // RFC 6376 §6.1.3 (PERMFAIL) and RFC 8601 §2.7.1: a body hash
            // that does not match is a fail (mail-auth says neutral).
            DkimResult::Neutral(e @ mail_auth::Error::Dkim(DkimError::BodyHashMismatch)) => {
                (DkimStatus::Fail, e.to_string())
            }
            DkimResult::Neutral(e) => (DkimStatus::Neutral, e.to_string()),
            DkimResult::PermError(e) => (DkimStatus::PermError, e.to_string()),
            DkimResult::TempError(e) => (DkimStatus::TempError, e.to_string()),
            DkimResult::None => (DkimStatus::PermError, "no result".to_string()),
        };
        // The key was fetched for a pass or a cryptographic fail, never for
        // a body hash mismatch (no lookup for that one).
        if sig.a == Algorithm::RsaSha256
            && matches!(output.result(), DkimResult::Pass | DkimResult::Fail(_))
        {
            match rsa_key_bits(authenticator, &sig.s, &sig.d).await {
                Ok(bits) if bits < 1024 => {
                    // RFC 8301 §3.2: keys under 1024 bits MUST NOT be valid.
                    status = DkimStatus::PermError;
                    reason = format!("RSA key of {bits} bits is too short");
                }
                Ok(bits) if bits < min_rsa_bits && status == DkimStatus::Pass => {
                    status = DkimStatus::Policy;
                    reason = format!("RSA key of {bits} bits is below the configured minimum");
                }
                Ok(_) => {}
                // A pass whose key size is unknown is not a pass: the key
                // record could not be read again (a temporary failure) ...
                Err(KeyBits::Lookup(e)) if status == DkimStatus::Pass => {
                    status = DkimStatus::TempError;
                    reason = format!("RSA key size could not be checked: {e}");
                }
                // ... or holds no RSA key rmilter can measure.
                Err(KeyBits::Unreadable) if status == DkimStatus::Pass => {
                    status = DkimStatus::PermError;
                    reason = "RSA key size could not be read".to_string();
                }
                Err(_) => {}
            }
        }
        verdicts.push(verdict(sig, status, &reason));
    }
    verdicts
}

/// Why [`rsa_key_bits`] has no answer.
#[derive(Debug)]
enum KeyBits {
    Lookup(String),
    Unreadable,
}

/// The modulus size, to the bit, of the RSA key mail-auth verified with:
/// the first TXT record at `selector._domainkey.domain` that parses as a
/// DKIM key (mail-auth's choice), its character strings joined (RFC 6376
/// §3.6.2.2), `p=` read as a tag-list (RFC 6376 §3.2: whitespace around
/// `=` and folding inside the value). The answer comes from the resolver's
/// cache: verification has just looked the name up.
async fn rsa_key_bits(
    authenticator: &MessageAuthenticator,
    selector: &str,
    domain: &str,
) -> Result<usize, KeyBits> {
    let lookup = authenticator
        .resolver()
        .txt_lookup(format!("{selector}._domainkey.{domain}."))
        .await
        .map_err(|e| KeyBits::Lookup(e.to_string()))?;
    let record = lookup
        .answers()
        .iter()
        .filter_map(|r| match &r.data {
            mail_auth::hickory_resolver::proto::rr::RData::TXT(txt) => Some(txt.txt_data.concat()),
            _ => None,
        })
        .find(|text| DomainKey::parse(text).is_ok())
        .ok_or(KeyBits::Unreadable)?;
    rsa_bits_of_record(&record).ok_or(KeyBits::Unreadable)
}

/// The RSA modulus bits of a DKIM key record's `p=` tag.
fn rsa_bits_of_record(record: &[u8]) -> Option<usize> {
    let text = std::str::from_utf8(record).ok()?;
    let p = text.split(';').find_map(|tag| {
        let (name, value) = tag.split_once('=')?;
        (name.trim() == "p").then_some(value)
    })?;
    let p: String = p.chars().filter(|c| !c.is_whitespace()).collect();
    use base64::Engine;
    let der = base64::engine::general_purpose::STANDARD.decode(p).ok()?;
    crate::keys::der_rsa_public_bits(&der)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_record_forms() {
        // A 1024-bit SubjectPublicKeyInfo key (dkimpy's test record).
        let p = "MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDkHlOQoBTzWRiGs5V6NpP3idY6Wk08a5qhdR6wy5bdOKb2jLQiY/J16JYi0Qvx/byYzCNb3W91y3FutACDfzwQ/BC/e/8uBsCR+yz1Lxj+PL6lHvqMKrM3rG4hstT5QjvHO9PzoxZyVYLzBfO2EeC3Ip3G+2kryOTIKT+l/K4w3QIDAQAB";
        for record in [
            format!("v=DKIM1; k=rsa; p={p}"),
            format!("v=DKIM1; k=rsa; p = {p}"),
            format!("v=DKIM1;k=rsa;\tp=\t{} \r\n {};", &p[..40], &p[40..]),
            format!("p={p}; v=DKIM1"),
        ] {
            assert_eq!(
                rsa_bits_of_record(record.as_bytes()),
                Some(1024),
                "{record}"
            );
        }
        assert_eq!(rsa_bits_of_record(b"v=DKIM1; k=rsa; p="), None);
        assert_eq!(rsa_bits_of_record(b"v=DKIM1; k=rsa"), None);
    }

    #[test]
    fn refused_signatures_are_bounded_aligned_first() {
        let v = |domain: &str| DkimVerdict {
            domain: domain.to_string(),
            selector: "s".to_string(),
            algorithm: String::new(),
            b: String::new(),
            status: DkimStatus::PermError,
            reason: "malformed".to_string(),
        };
        let mut many: Vec<DkimVerdict> = (0..100).map(|i| v(&format!("junk{i}.example"))).collect();
        many.push(v("author.example"));
        let (out, rest) = bounded(many, "author.example", 3);
        assert_eq!((out.len(), rest), (4, 98));
        assert_eq!(out[0].domain, "author.example");
        assert_eq!(out[3].domain, "");
        assert_eq!(
            out[3].reason,
            "98 more signatures refused without verification"
        );
        let (few, rest) = bounded(vec![v("a.example")], "author.example", 3);
        assert_eq!((few.len(), rest), (1, 0));
    }
}
