//! The RFC 9991 `fo=` failure-reporting options (the DMARC record tag): which failing messages a
//! domain owner wants failure reports about.

use super::FailureSample;

/// Whether `sample` warrants a report under `fo` (colon-separated options,
/// any of which may ask for it; case-insensitive; unknown options are
/// ignored, and with no known option the default `0` applies). This is the
/// tag alone: under `1`, `d` or `s` a message that passed DMARC can warrant
/// a report too; whether such messages are captured at all is the
/// pipeline's choice.
pub fn wanted(fo: &str, sample: &FailureSample) -> bool {
    let mut known = false;
    let mut want = false;
    for opt in fo.split(':').map(|o| o.trim().to_ascii_lowercase()) {
        let this = match opt.as_str() {
            // RFC 9991 fo tag: "0" — all underlying mechanisms failed to produce
            // an aligned "pass" result.
            "0" => !sample.dkim_aligned_pass && !sample.spf_aligned_pass,
            // RFC 9991 fo tag: "1" — any underlying mechanism produced something
            // other than an aligned "pass" result.
            "1" => !sample.dkim_aligned_pass || !sample.spf_aligned_pass,
            // RFC 9991 fo tag: "d" — a DKIM signature failed evaluation,
            // regardless of its alignment.
            "d" => sample.dkim.iter().any(|d| dkim_failed(&d.result)),
            // RFC 9991 fo tag: "s" — SPF evaluation failed, regardless of
            // alignment.
            "s" => sample.spf.as_ref().is_some_and(|s| spf_failed(&s.result)),
            _ => continue,
        };
        known = true;
        want |= this;
    }
    if !known {
        // RFC 9991 fo tag: the default is "0".
        return !sample.dkim_aligned_pass && !sample.spf_aligned_pass;
    }
    want
}

/// A signature that was evaluated and failed (RFC 8601 §2.7.1): it did not
/// verify (fail), could not be verified for good (permerror: no or broken
/// key), or was not a usable signature (neutral: syntax). A temporary
/// error is no verdict, and `policy` is a signature that verified.
fn dkim_failed(result: &str) -> bool {
    matches!(
        result.to_ascii_lowercase().as_str(),
        "fail" | "permerror" | "neutral"
    )
}

/// SPF evaluation failed (RFC 7208 §2.6): the domain said the host is not
/// authorised, or its record is broken. softfail and neutral are not
/// failures.
fn spf_failed(result: &str) -> bool {
    matches!(result.to_ascii_lowercase().as_str(), "fail" | "permerror")
}
