//! DKIM checks rmilter adds around mail-auth's verifier.
//!
//! Before verification: signatures with a `d=` or `s=` that is not a plain
//! domain / selector are permerrors and never looked up (RELIABILITY K4);
//! `h=` without From is a permerror (RFC 6376 §6.1.1); rsa-sha1 never passes
//! (RFC 8301 §3.1) and `l=` signatures never count (RELIABILITY K1), both
//! reported as `policy`; beyond `verify.max_signatures`, signatures are
//! skipped, author-aligned ones kept first (RELIABILITY K9). After
//! verification: RSA keys under 1024 bits are permerrors and under the
//! configured minimum `policy` (RFC 8301 §3.2).

use mail_auth::crypto::Algorithm;
use mail_auth::dkim::{DkimError, Signature};
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
    pub verdicts: Vec<DkimVerdict>,
    pub skipped: usize,
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
pub fn prefilter(message: &mut AuthenticatedMessage<'_>, author: &str, max: usize) -> Prefiltered {
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
    Prefiltered {
        verdicts,
        skipped: skipped_count,
    }
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
            DkimResult::Neutral(e) => (DkimStatus::Neutral, e.to_string()),
            DkimResult::PermError(e) => (DkimStatus::PermError, e.to_string()),
            DkimResult::TempError(e) => (DkimStatus::TempError, e.to_string()),
            DkimResult::None => (DkimStatus::PermError, "no result".to_string()),
        };
        if sig.a == Algorithm::RsaSha256
            && matches!(status, DkimStatus::Pass | DkimStatus::Fail)
            && let Some(bits) = rsa_key_bits(authenticator, &sig.s, &sig.d).await
        {
            if bits < 1024 {
                // RFC 8301 §3.2: keys under 1024 bits MUST NOT be valid.
                status = DkimStatus::PermError;
                reason = format!("RSA key of {bits} bits is too short");
            } else if bits < min_rsa_bits && status == DkimStatus::Pass {
                status = DkimStatus::Policy;
                reason = format!("RSA key of {bits} bits is below the configured minimum");
            }
        }
        verdicts.push(verdict(sig, status, &reason));
    }
    verdicts
}

/// The modulus size of the RSA key published for `selector._domainkey.domain`
/// (served from the resolver's cache after verification looked it up).
async fn rsa_key_bits(
    authenticator: &MessageAuthenticator,
    selector: &str,
    domain: &str,
) -> Option<usize> {
    let raw = authenticator
        .txt_raw_lookup(format!("{selector}._domainkey.{domain}."))
        .await
        .ok()?;
    let text = String::from_utf8_lossy(&raw);
    let p = text
        .split(';')
        .find_map(|tag| tag.trim().strip_prefix("p=").map(str::to_string))?;
    let p: String = p.chars().filter(|c| !c.is_whitespace()).collect();
    use base64::Engine;
    let der = base64::engine::general_purpose::STANDARD.decode(p).ok()?;
    crate::keys::der_rsa_public_bits(&der)
}
