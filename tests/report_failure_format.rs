//! DMARC failure reports (issue 17) read by an independent parser: every
//! report rmilter renders is handed to parsedmarc (pinned in
//! tests/deps.sh, in the venv /opt/rmilter-test-venv or
//! `$RMILTER_TEST_VENV`), which must take it as a failure (forensic)
//! report and read back the fields rmilter meant: reported domain, source
//! IP, arrival date, Auth-Failure, Identity-Alignment, delivery result,
//! envelope addresses, DKIM domain and the returned sample. Redaction must
//! leave no original local part anywhere in what parsedmarc sees.

use rmilter::report::failure::{
    DeliveryResult, DkimFacts, FailureSample, RenderOptions, SpfFacts, render,
};
use serde_json::Value;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// The Python driver: one report on stdin, parsedmarc's result as JSON on
/// stdout, offline (no DNS, no downloads).
const DRIVER: &str = r#"
import json, sys
import parsedmarc
data = sys.stdin.buffer.read()
r = parsedmarc.parse_report_email(data, offline=True, always_use_local_files=True)
print(json.dumps(r, default=str))
"#;

fn python() -> PathBuf {
    let venv = std::env::var_os("RMILTER_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/rmilter-test-venv"));
    let py = venv.join("bin/python");
    let ok = Command::new(&py)
        .args(["-c", "import parsedmarc"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "parsedmarc is missing: {} cannot import it (run tests/deps.sh as root, or set RMILTER_TEST_VENV)",
        py.display()
    );
    py
}

fn parsedmarc(report: &[u8]) -> Value {
    let mut child = Command::new(python())
        .args(["-c", DRIVER])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run parsedmarc");
    child.stdin.take().unwrap().write_all(report).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "parsedmarc rejected the report:\n{}\n--- report ---\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(report)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("parsedmarc json");
    assert_eq!(v["report_type"], "failure", "{v:#}");
    v["report"].clone()
}

const HEADERS: &str = "Received: from relay.internal.example.net (10.1.2.3)\r\n\tby mx.example.org with ESMTP; Mon, 7 Dec 2026 10:00:00 +0000\r\n\
Return-Path: <alice.smith@example.com>\r\n\
From: \"Alice Smith\" <alice.smith@example.com>\r\n\
To: bob.jones@example.org, \"Carol\" <carol+news@example.org>\r\n\
Subject: invoice 42\r\n\
Message-ID: <42.invoice@sender.example.com>\r\n\
Date: Mon, 7 Dec 2026 09:59:58 +0000\r\n\
MIME-Version: 1.0\r\n\
Content-Type: text/plain; charset=utf-8\r\n";

fn sample() -> FailureSample {
    FailureSample {
        reported_domain: "example.com".into(),
        source_ip: "203.0.113.9".parse().unwrap(),
        arrival: 1_796_637_600, // 2026-12-07 10:00:00 UTC
        helo: "relay.example.net".into(),
        mail_from: "alice.smith@example.com".into(),
        rcpt_to: vec!["bob.jones@example.org".into()],
        authentication_results: "mx.example.org; dkim=fail (signature did not verify) header.d=example.com header.s=s2026 header.i=alice.smith@example.com; spf=fail smtp.mailfrom=alice.smith@example.com; dmarc=fail header.from=example.com".into(),
        dkim: vec![DkimFacts {
            domain: "example.com".into(),
            selector: "s2026".into(),
            identity: "alice.smith@example.com".into(),
            result: "fail".into(),
        }],
        spf: Some(SpfFacts {
            domain: "example.com".into(),
            scope: "mfrom".into(),
            result: "fail".into(),
            record: Some("v=spf1 ip4:198.51.100.0/24 -all".into()),
        }),
        dkim_aligned_pass: false,
        spf_aligned_pass: false,
        delivery_result: DeliveryResult::Reject,
        headers: HEADERS.as_bytes().to_vec(),
        body: Some(b"Dear Bob,\r\nplease pay invoice 42.\r\nAlice\r\n".to_vec()),
    }
}

struct Opts {
    redact: bool,
    drop: Vec<String>,
    include_body: bool,
    max_bytes: Option<u64>,
}

impl Default for Opts {
    fn default() -> Opts {
        Opts {
            redact: true,
            drop: Vec::new(),
            include_body: false,
            max_bytes: None,
        }
    }
}

fn rendered(s: &FailureSample, o: &Opts) -> Vec<u8> {
    render(
        s,
        &RenderOptions {
            from: "dmarc-noreply@mx.example.org",
            to: "ruf@example.com",
            reporting_domain: "mx.example.org",
            redact: o.redact,
            drop_headers: &o.drop,
            include_body: o.include_body,
            max_bytes: o.max_bytes,
            message_id: "failure.1796637600.abc@mx.example.org",
            date: 1_796_641_200,
        },
    )
}

const LOCAL_PARTS: &[&str] = &["alice.smith", "bob.jones", "carol+news"];

#[test]
fn default_report_parses_as_a_failure_report_with_its_fields() {
    let s = sample();
    let report = rendered(&s, &Opts::default());
    let r = parsedmarc(&report);
    assert_eq!(r["feedback_type"], "auth-failure", "{r:#}");
    assert_eq!(r["version"], "1");
    assert_eq!(r["auth_failure"], serde_json::json!(["dmarc"]));
    assert_eq!(r["reported_domain"], "example.com");
    assert_eq!(r["source"]["ip_address"], "203.0.113.9");
    assert_eq!(r["arrival_date_utc"], "2026-12-07 10:00:00");
    assert_eq!(r["delivery_result"], "reject");
    assert_eq!(r["authentication_mechanisms"], serde_json::json!([]));
    assert_eq!(r["dkim_domain"], "example.com");
    assert!(
        r["authentication_results"]
            .as_str()
            .unwrap()
            .contains("dmarc=fail header.from=example.com"),
        "{r:#}"
    );
    // Redacted: the envelope addresses keep their domains only.
    let mail_from = r["original_mail_from"].as_str().unwrap();
    assert!(mail_from.ends_with("@example.com>"), "{mail_from}");
    assert!(
        r["original_rcpt_to"]
            .as_str()
            .unwrap()
            .ends_with("@example.org>")
    );
    // The sample is the header section alone, and parsedmarc reads it.
    assert_eq!(r["sample_headers_only"], true, "{r:#}");
    let ps = &r["parsed_sample"];
    assert_eq!(ps["subject"], "invoice 42", "{ps:#}");
    assert_eq!(ps["from"]["domain"], "example.com", "{ps:#}");
    assert_eq!(ps["from"]["display_name"], "Alice Smith", "{ps:#}");
    // No original local part anywhere parsedmarc saw.
    let all = r.to_string();
    for local in LOCAL_PARTS {
        assert!(!all.contains(local), "{local} in parsedmarc's view: {r:#}");
        assert!(
            !String::from_utf8_lossy(&report).contains(local),
            "{local} in the report"
        );
    }
}

#[test]
fn unredacted_report_carries_the_original_addresses() {
    let s = sample();
    let r = parsedmarc(&rendered(
        &s,
        &Opts {
            redact: false,
            ..Opts::default()
        },
    ));
    assert_eq!(
        r["original_mail_from"], "<alice.smith@example.com>",
        "{r:#}"
    );
    assert_eq!(r["original_rcpt_to"], "<bob.jones@example.org>");
    let to = r["parsed_sample"]["to"].to_string();
    assert!(to.contains("bob.jones@example.org"), "{to}");
}

#[test]
fn aligned_pass_and_delivery_results_read_back() {
    for (dkim, spf, want, delivery, word) in [
        (
            true,
            false,
            serde_json::json!(["dkim"]),
            DeliveryResult::Delivered,
            "delivered",
        ),
        (
            false,
            true,
            serde_json::json!(["spf"]),
            DeliveryResult::Spam,
            "spam",
        ),
        (
            true,
            true,
            serde_json::json!(["dkim", "spf"]),
            DeliveryResult::Policy,
            "policy",
        ),
        (
            false,
            false,
            serde_json::json!([]),
            DeliveryResult::Other,
            "other",
        ),
    ] {
        let mut s = sample();
        s.dkim_aligned_pass = dkim;
        s.spf_aligned_pass = spf;
        s.delivery_result = delivery;
        let r = parsedmarc(&rendered(&s, &Opts::default()));
        assert_eq!(r["authentication_mechanisms"], want, "{r:#}");
        assert_eq!(r["delivery_result"], word, "{r:#}");
    }
}

#[test]
fn without_rcpt_to_and_dkim_those_fields_are_absent() {
    let mut s = sample();
    s.rcpt_to.clear();
    s.dkim.clear();
    s.mail_from = String::new();
    s.source_ip = "2001:db8::25".parse().unwrap();
    let r = parsedmarc(&rendered(&s, &Opts::default()));
    assert_eq!(r["original_rcpt_to"], Value::Null, "{r:#}");
    assert_eq!(r["dkim_domain"], Value::Null, "{r:#}");
    assert_eq!(r["original_mail_from"], "<>");
    assert_eq!(r["source"]["ip_address"], "2001:db8::25");
}

#[test]
fn body_when_configured_is_a_full_sample() {
    let s = sample();
    let report = rendered(
        &s,
        &Opts {
            include_body: true,
            ..Opts::default()
        },
    );
    let r = parsedmarc(&report);
    assert_eq!(r["sample_headers_only"], false, "{r:#}");
    let body = r["parsed_sample"]["body"].as_str().unwrap_or_default();
    assert!(body.contains("please pay invoice 42"), "{r:#}");
}

#[test]
fn dropped_fields_are_not_returned() {
    let s = sample();
    let report = rendered(
        &s,
        &Opts {
            drop: vec!["Received".into(), "return-path".into()],
            ..Opts::default()
        },
    );
    let r = parsedmarc(&report);
    let text = String::from_utf8_lossy(&report);
    assert!(!text.contains("relay.internal.example.net"), "{text}");
    assert!(!text.contains("Return-Path"), "{text}");
    assert_eq!(r["parsed_sample"]["subject"], "invoice 42", "{r:#}");
}

#[test]
fn size_limited_report_still_parses() {
    let s = sample();
    let full = rendered(
        &s,
        &Opts {
            include_body: true,
            ..Opts::default()
        },
    );
    let limit = full.len() as u64 - 200;
    let report = rendered(
        &s,
        &Opts {
            include_body: true,
            max_bytes: Some(limit),
            ..Opts::default()
        },
    );
    assert!(report.len() as u64 <= limit, "{} > {limit}", report.len());
    let r = parsedmarc(&report);
    assert_eq!(r["reported_domain"], "example.com", "{r:#}");
    assert_eq!(r["sample_headers_only"], true, "{r:#}");
}

#[test]
fn eight_bit_headers_and_encoded_words_parse() {
    let mut s = sample();
    s.headers = "From: =?utf-8?q?J=C3=B6rg?= <jörg.müller@example.com>\r\nTo: \"Zoë\" <zoe.k@example.org>\r\nSubject: Grüße\r\nMessage-ID: <8bit@example.com>\r\nDate: Mon, 7 Dec 2026 09:59:58 +0000\r\n"
        .as_bytes()
        .to_vec();
    let report = rendered(&s, &Opts::default());
    let r = parsedmarc(&report);
    assert_eq!(r["reported_domain"], "example.com", "{r:#}");
    assert_eq!(r["parsed_sample"]["subject"], "Grüße", "{r:#}");
    let all = r.to_string();
    for local in ["jörg.müller", "zoe.k"] {
        assert!(!all.contains(local), "{local} in parsedmarc's view: {r:#}");
    }
}
