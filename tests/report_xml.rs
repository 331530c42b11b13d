//! Report content (RELIABILITY §8 G case 32, X1, X3): evaluations with XML
//! metacharacters, `]]>`, control characters, non-ASCII and invalid UTF-8
//! go through the store into RFC 9990 XML that xmllint validates against
//! the RFC 9990 schema and reads back to the intended values; counts
//! aggregate; regeneration is byte-identical and ids are stable.

mod common;

use common::report::*;
use rmilter::config::{self, Overrides, ReportFormat, ReportStore, Source};
use rmilter::report::generate;
use rmilter::report::sink::aggregate;
use rmilter::report::store::Store;
use rmilter::report::{period_of, unix_time, xml};
use std::time::Duration;

fn settings(dir: &std::path::Path) -> rmilter::config::ReportSettings {
    let text = format!(
        "[report]\nenabled = true\nstore = \"{}\"\norg_name = \"Example & <Co> ]]>\"\nemail = \"dmarc@example.org\"\nreporting_domain = \"example.org\"\nextra_contact_info = \"https://example.org/dmarc?a=1&b=2\"\n",
        dir.join("reports.db").display()
    );
    config::from_text(Source::Embedded, &text, &Overrides::default())
        .unwrap()
        .report
}

fn open(s: &rmilter::config::ReportSettings) -> Store {
    Store::open(&s.store, Duration::from_secs(5)).unwrap()
}

#[test]
fn hostile_values_give_schema_valid_xml_that_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path());
    let mut store = open(&s);
    let t = yesterday();
    let evals = vec![
        hostile_evaluation(t),
        hostile_evaluation(t),
        evaluation("evil.example", "192.0.2.1", t),
    ];
    store.add(&aggregate(&evals, 86_400)).unwrap();
    let (begin, end) = period_of(unix_time(t), 86_400);
    let (report, text) =
        generate::build(&mut store, &s, "evil.example", begin, end, begin + 90_000)
            .unwrap()
            .unwrap();
    let ok = xmllint_validate(&rfc9990_xsd(), text.as_bytes());
    assert!(ok.is_ok(), "{ok:?}\n{text}");
    // The stored gzip holds the same XML.
    assert_eq!(xml::gunzip(&report.gz, 1 << 20).unwrap(), text.as_bytes());
    assert!(text.contains("xmlns=\"urn:ietf:params:xml:ns:dmarc-2.0\""));
    assert!(!text.contains("]]>"), "{text}");
    // Values read back by an XML parser are the originals, with the
    // characters XML cannot carry replaced by U+FFFD.
    let selectors = xpath_values(text.as_bytes(), "selector");
    assert!(
        selectors
            .contains(&"sel\u{fffd}\u{fffd}\u{fffd}[0m\u{fffd}\u{fffd}\u{85}ector".to_string()),
        "{selectors:?}"
    );
    assert!(
        selectors.contains(&"tab\there\r\nnewline".to_string()),
        "{selectors:?}"
    );
    let envelope = xpath_values(text.as_bytes(), "envelope_from");
    assert!(
        envelope.contains(&"a<b>&\"c'\u{fffd}d]]>ebad\u{fffd}\u{fffd}utf8".to_string()),
        "{envelope:?}"
    );
    let domains = xpath_values(text.as_bytes(), "domain");
    assert!(
        domains.contains(&"x]]>y&z<w>.example".to_string()),
        "{domains:?}"
    );
    assert!(
        domains.contains(&"bücher.example".to_string()),
        "{domains:?}"
    );
    assert!(
        domains.contains(&"<![cdata[x]]>".to_string()),
        "{domains:?}"
    );
    assert_eq!(
        xpath_values(text.as_bytes(), "org_name"),
        ["Example & <Co> ]]>"]
    );
    let comments = xpath_values(text.as_bytes(), "comment");
    assert_eq!(
        comments,
        ["comment with </comment><injected/> & ]]> \u{2028} \u{fffd}"]
    );
    // Two identical hostile evaluations aggregate into one record.
    assert_eq!(total_count(text.as_bytes()), 3);
    assert_eq!(xpath_values(text.as_bytes(), "record").len(), 2);
    assert_eq!(report.messages, 3);
    // A HELO result has no RFC 9990 scope; an mfrom result has one.
    assert_eq!(xpath_values(text.as_bytes(), "scope"), ["mfrom"]);
    assert!(xpath_values(text.as_bytes(), "disposition").contains(&"reject".to_string()));
    assert!(xpath_values(text.as_bytes(), "disposition").contains(&"pass".to_string()));
}

#[test]
fn unescaped_output_would_fail_the_schema() {
    // The check above can fail: a document with a raw control character or
    // a stray `<` does not validate.
    let bad = "<?xml version=\"1.0\"?>\n<feedback xmlns=\"urn:ietf:params:xml:ns:dmarc-2.0\"><version>1.0</version>\u{1}</feedback>";
    assert!(xmllint_validate(&rfc9990_xsd(), bad.as_bytes()).is_err());
}

#[test]
fn rfc7489_format_validates_against_appendix_c() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path());
    s.format = ReportFormat::Rfc7489;
    let mut store = open(&s);
    let t = yesterday();
    store
        .add(&aggregate(
            &[
                hostile_evaluation(t),
                evaluation("evil.example", "192.0.2.1", t),
            ],
            86_400,
        ))
        .unwrap();
    let (begin, end) = period_of(unix_time(t), 86_400);
    let (_, text) = generate::build(&mut store, &s, "evil.example", begin, end, begin + 90_000)
        .unwrap()
        .unwrap();
    assert!(text.contains("<feedback>\n"), "no namespace: {text}");
    assert!(text.contains("<pct>100</pct>"));
    // Appendix C declares a target namespace although RFC 7489 reports
    // carry none, and its IPv6 pattern has line breaks in it: validate
    // against the schema with those two fixed.
    let xsd = std::fs::read_to_string(rfc7489_xsd())
        .unwrap()
        .replace("targetNamespace=\"http://dmarc.org/dmarc-xml/0.1\"", "")
        .replace("type=\"IPAddress\"", "type=\"xs:string\"");
    let xsd_path = dir.path().join("rfc7489.xsd");
    std::fs::write(&xsd_path, xsd).unwrap();
    let ok = xmllint_validate(&xsd_path, text.as_bytes());
    assert!(ok.is_ok(), "{ok:?}\n{text}");
    assert!(
        text.contains("<source_ip>2001:db8:0:0:0:0:0:7</source_ip>"),
        "{text}"
    );
}

#[test]
fn regeneration_is_byte_identical_and_ids_are_stable() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path());
    let mut store = open(&s);
    let t = yesterday();
    store
        .add(&aggregate(
            &[evaluation("a.example", "192.0.2.1", t)],
            86_400,
        ))
        .unwrap();
    let (begin, end) = period_of(unix_time(t), 86_400);
    let (one, _) = generate::build(&mut store, &s, "a.example", begin, end, end + 10)
        .unwrap()
        .unwrap();
    let (two, _) = generate::build(&mut store, &s, "a.example", begin, end, end + 10)
        .unwrap()
        .unwrap();
    assert_eq!(one, two);
    assert_eq!(
        one.filename,
        format!(
            "example.org!a.example!{begin}!{end}!{}.xml.gz",
            one.report_id
        )
    );
    assert_eq!(one.report_id.len(), 32);
    assert!(one.report_id.bytes().all(|b| b.is_ascii_alphanumeric()));
    // Kept once: later rows do not change what is sent for the period.
    let kept = generate::ensure(&mut store, &s, "a.example", begin, end, end + 10, true)
        .unwrap()
        .unwrap();
    store
        .add(&aggregate(
            &[evaluation("a.example", "192.0.2.9", t)],
            86_400,
        ))
        .unwrap();
    let again = generate::ensure(&mut store, &s, "a.example", begin, end, end + 99, true)
        .unwrap()
        .unwrap();
    assert_eq!(kept, again);
    // Another store (another host without a shared store) gets other ids.
    let other_dir = tempfile::tempdir().unwrap();
    let other = settings(other_dir.path());
    let mut other_store = open(&other);
    other_store
        .add(&aggregate(
            &[evaluation("a.example", "192.0.2.1", t)],
            86_400,
        ))
        .unwrap();
    let (three, _) = generate::build(&mut other_store, &other, "a.example", begin, end, end + 10)
        .unwrap()
        .unwrap();
    assert_ne!(three.report_id, one.report_id);
    // Re-opening keeps the schema version and the store id.
    let id = store.store_id().unwrap();
    drop(store);
    let mut reopened = open(&s);
    assert_eq!(reopened.store_id().unwrap(), id);
    assert!(matches!(s.store, ReportStore::Sqlite(_)));
}

#[test]
fn report_mail_has_the_rfc9990_subject_and_attachment() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path());
    let mut store = open(&s);
    let t = yesterday();
    store
        .add(&aggregate(
            &[evaluation("a.example", "192.0.2.1", t)],
            86_400,
        ))
        .unwrap();
    let (begin, end) = period_of(unix_time(t), 86_400);
    let (report, _) = generate::build(&mut store, &s, "a.example", begin, end, end + 10)
        .unwrap()
        .unwrap();
    let mail = rmilter::report::send::message(&s, &report, "rua@a.example");
    let text = String::from_utf8_lossy(&mail);
    assert!(
        text.contains(&format!(
            "Subject: Report Domain: a.example\n Submitter: example.org\n Report-ID: <{}>\n",
            report.report_id
        )),
        "{text}"
    );
    assert!(text.contains("From: dmarc@example.org\n"));
    let (name, gz) = attachment(&mail);
    assert_eq!(name, report.filename);
    assert_eq!(gz, report.gz);
    assert_eq!(
        rmilter::report::send::rfc5322_date(0),
        "Thu, 01 Jan 1970 00:00:00 +0000"
    );
    assert_eq!(
        rmilter::report::send::rfc5322_date(1_795_694_400),
        "Thu, 26 Nov 2026 12:00:00 +0000"
    );
}
