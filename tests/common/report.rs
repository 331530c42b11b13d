//! Helpers for the DMARC aggregate report tests: synthetic evaluation
//! records, schema validation with xmllint, and reading a report mail's
//! gzip attachment back.
#![allow(dead_code)]

use rmilter::report::{Disposition, DkimRecord, Evaluation, Override, PublishedPolicy, SpfRecord};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The RFC 9990 schema, from the third-party test data in tests/data.
pub fn rfc9990_xsd() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/third-party/dmarc/dmarcbis-aggregate-0.2.xsd")
}

pub fn rfc7489_xsd() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/third-party/dmarc/rfc7489-appendix-c.xsd")
}

/// `xmllint --noout --schema XSD FILE`: Ok(stderr) when it validates.
pub fn xmllint_validate(xsd: &Path, xml: &[u8]) -> Result<String, String> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("report.xml");
    std::fs::write(&file, xml).unwrap();
    let out = Command::new("xmllint")
        .arg("--noout")
        .arg("--schema")
        .arg(xsd)
        .arg(&file)
        .output()
        .expect("xmllint (Debian's libxml2-utils) must be installed");
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    if out.status.success() && text.contains("validates") {
        Ok(text)
    } else {
        Err(format!("{}: {text}", out.status))
    }
}

/// The string values of every element named `name` (any namespace), read
/// back by xmllint's parser.
pub fn xpath_values(xml: &[u8], name: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("report.xml");
    std::fs::write(&file, xml).unwrap();
    let count = Command::new("xmllint")
        .args(["--xpath", &format!("count(//*[local-name()='{name}'])")])
        .arg(&file)
        .output()
        .unwrap();
    let n: usize = String::from_utf8_lossy(&count.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    (1..=n)
        .map(|i| {
            let out = Command::new("xmllint")
                .args([
                    "--xpath",
                    &format!("string((//*[local-name()='{name}'])[{i}])"),
                ])
                .arg(&file)
                .output()
                .unwrap();
            let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
            // xmllint ends its output with a newline.
            if s.ends_with('\n') {
                s.pop();
            }
            s
        })
        .collect()
}

/// Sum of the `count` elements of a report.
pub fn total_count(xml: &[u8]) -> i64 {
    xpath_values(xml, "count")
        .iter()
        .map(|c| c.parse::<i64>().unwrap())
        .sum()
}

pub fn policy(domain: &str) -> PublishedPolicy {
    PublishedPolicy {
        domain: domain.to_string(),
        p: "reject",
        sp: "reject",
        np: "reject",
        adkim: "r",
        aspf: "r",
        testing: false,
        psd: "u",
    }
}

/// A passing evaluation for `domain` from `ip` at `time`.
pub fn evaluation(domain: &str, ip: &str, time: SystemTime) -> Evaluation {
    Evaluation {
        time,
        source_ip: Some(ip.parse().unwrap()),
        header_from: domain.to_string(),
        envelope_from: domain.to_string(),
        policy: Some(policy(domain)),
        disposition: Disposition::None,
        dkim_aligned: "pass",
        spf_aligned: "pass",
        dkim: vec![DkimRecord {
            domain: domain.to_string(),
            selector: "s1".to_string(),
            result: "pass",
        }],
        spf: vec![SpfRecord {
            domain: domain.to_string(),
            scope: "mfrom",
            result: "pass",
        }],
        overrides: Vec::new(),
    }
}

/// An evaluation whose every free-text value is hostile.
pub fn hostile_evaluation(time: SystemTime) -> Evaluation {
    let invalid_utf8 = String::from_utf8_lossy(b"bad\xff\xfeutf8").into_owned();
    Evaluation {
        time,
        source_ip: Some("2001:db8::7".parse().unwrap()),
        header_from: "evil.example".to_string(),
        envelope_from: format!("a<b>&\"c'\u{0}d]]>e{invalid_utf8}"),
        policy: Some(policy("evil.example")),
        disposition: Disposition::Reject,
        dkim_aligned: "fail",
        spf_aligned: "fail",
        dkim: vec![
            DkimRecord {
                domain: "x]]>y&z<w>.example".to_string(),
                selector: "sel\u{1}\u{7}\u{1b}[0m\u{fffe}\u{ffff}\u{85}ector".to_string(),
                result: "fail",
            },
            DkimRecord {
                domain: "bücher.example".to_string(),
                selector: "tab\there\r\nnewline".to_string(),
                result: "permerror",
            },
        ],
        spf: vec![SpfRecord {
            domain: "<![CDATA[x]]>".to_string(),
            scope: "helo",
            result: "softfail",
        }],
        overrides: vec![Override {
            kind: "local_policy",
            comment: "comment with </comment><injected/> & ]]> \u{2028} \u{0}".to_string(),
        }],
    }
}

/// A time in the middle of the day before `now`.
pub fn yesterday() -> SystemTime {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let day = now - now % 86_400;
    UNIX_EPOCH + Duration::from_secs(day - 43_200)
}

/// The gzip attachment of a report mail (base64 part), decoded.
pub fn attachment(message: &[u8]) -> (String, Vec<u8>) {
    use base64::Engine as _;
    let text = String::from_utf8_lossy(message).replace("\r\n", "\n");
    let start = text
        .find("Content-Type: application/gzip")
        .expect("no application/gzip part");
    let part = &text[start..];
    let name_at = part.find("filename=\"").unwrap() + "filename=\"".len();
    let name = part[name_at..].split('"').next().unwrap().to_string();
    let body_at = part.find("\n\n").unwrap() + 2;
    let b64: String = part[body_at..]
        .lines()
        .take_while(|l| !l.starts_with("--"))
        .collect();
    let gz = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .unwrap();
    (name, gz)
}
