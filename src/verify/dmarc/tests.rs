//! Tests of the DMARC record parser (the record corpus), the tree walk and
//! the evaluation, over an in-memory zone.

use super::record::{self, AtName};
use super::walk::{self, DmarcDns, Found};
use super::{DkimInput, evaluate};
use crate::verify::DmarcStatus;
use crate::verify::spf::SpfResult;
use mail_auth::dmarc::Policy;
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

#[test]
fn record_corpus() {
    let corpus = include_str!("../../../tests/corpus/dmarc/records.txt");
    let mut failures = Vec::new();
    let mut cases = 0;
    for line in corpus.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (txt, want) = line
            .split_once(" ==> ")
            .unwrap_or_else(|| panic!("corpus line without ' ==> ': {line:?}"));
        cases += 1;
        let got = match record::parse(txt.as_bytes()) {
            None => "not a record".to_string(),
            Some(r) => r.summary(),
        };
        if got != want {
            failures.push(format!("{txt:?}\n    want {want}\n    got  {got}"));
        }
    }
    assert!(cases >= 40, "{cases} cases");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn defaulted_values_are_noted() {
    let r = record::parse(b"v=DMARC1; p=reject; adkim=relaxed; foo=1").unwrap();
    assert!(r.usable);
    assert!(
        r.notes.iter().any(|n| n.contains("adkim")) && r.notes.iter().any(|n| n.contains("foo")),
        "{:?}",
        r.notes
    );
    let r = record::parse(b"v=DMARC1; p=reject; pct=0").unwrap();
    assert_eq!(r.pct, Some(0));
    let r = record::parse(b"v=DMARC1; p=reject; pct=101").unwrap();
    assert_eq!(r.pct, None);
    let r = record::parse(b"v=DMARC1; p=none; rua=mailto:a@x.example!2k").unwrap();
    assert_eq!(
        r.rua_addresses().collect::<Vec<_>>(),
        [("a@x.example", 2048)]
    );
}

#[test]
fn several_records_at_one_name_are_none() {
    assert!(matches!(
        record::at_name(&["v=DMARC1; p=reject", "v=DMARC1; p=none"]),
        AtName::Several(2)
    ));
    // Non-DMARC TXT records beside one DMARC record do not count.
    assert!(matches!(
        record::at_name(&["v=spf1 -all", "v=DMARC1; p=none", "hello"]),
        AtName::One(_)
    ));
    assert!(matches!(
        record::at_name(&["v=DMARC2; p=none"]),
        AtName::Nothing
    ));
}

#[test]
fn at_most_eight_names() {
    assert_eq!(
        walk::walk_names("a.b.c.d.e.f.g.h.i.j.mail.example.com"),
        [
            "a.b.c.d.e.f.g.h.i.j.mail.example.com",
            "g.h.i.j.mail.example.com",
            "h.i.j.mail.example.com",
            "i.j.mail.example.com",
            "j.mail.example.com",
            "mail.example.com",
            "example.com",
            "com"
        ]
    );
    assert_eq!(walk::walk_names("example.com"), ["example.com", "com"]);
}

/// An in-memory zone: `_dmarc` TXT records by name, names whose lookups
/// fail, names that do not exist, and a log of the lookups.
#[derive(Default)]
struct MapDns {
    txt: HashMap<String, Vec<String>>,
    failing: HashSet<String>,
    nonexistent: HashSet<String>,
    log: Mutex<Vec<String>>,
}

impl MapDns {
    fn record(mut self, name: &str, txt: &str) -> MapDns {
        self.txt
            .entry(name.to_string())
            .or_default()
            .push(txt.to_string());
        self
    }
    fn failing(mut self, name: &str) -> MapDns {
        self.failing.insert(name.to_string());
        self
    }
    fn nonexistent(mut self, name: &str) -> MapDns {
        self.nonexistent.insert(name.to_string());
        self
    }
    fn queried(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

impl DmarcDns for MapDns {
    async fn dmarc(&self, name: &str) -> Result<AtName, String> {
        self.log.lock().unwrap().push(name.to_string());
        if self.failing.contains(name) {
            return Err("servfail".to_string());
        }
        Ok(record::at_name(
            self.txt.get(name).map(Vec::as_slice).unwrap_or_default(),
        ))
    }
    async fn exists(&self, domain: &str) -> Result<bool, String> {
        if self.failing.contains(domain) {
            return Err("servfail".to_string());
        }
        Ok(!self.nonexistent.contains(domain))
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

fn dkim(domain: &str) -> Vec<DkimInput> {
    vec![DkimInput {
        domain: domain.to_string(),
        temperror: false,
    }]
}

/// (status, policy, record domain, tag) for a message from `author`.
fn outcome(
    dns: &MapDns,
    author: &str,
    dkim: &[DkimInput],
    spf: (&str, SpfResult),
) -> (DmarcStatus, Policy, Option<String>, Option<&'static str>) {
    let out = block_on(evaluate(dns, author, dkim, spf.0, spf.1));
    let applied = out.discovery.applied.as_ref();
    (
        out.status,
        out.policy,
        applied.map(|a| a.domain.clone()),
        applied.map(|a| a.tag),
    )
}

const NO_SPF: (&str, SpfResult) = ("", SpfResult::None);

#[test]
fn an_invalid_optional_value_keeps_the_policy() {
    for record in [
        "v=DMARC1; p=reject; adkim=relaxed",
        "v=DMARC1; p=reject; fo=2",
        "v=DMARC1; p=reject; psd=maybe",
        "v=DMARC1; p=reject; unknown=tag",
    ] {
        let dns = MapDns::default().record("bank.example", record);
        let (status, policy, at, _) = outcome(&dns, "bank.example", &[], NO_SPF);
        assert_eq!(
            (status, policy, at.as_deref()),
            (DmarcStatus::Fail, Policy::Reject, Some("bank.example")),
            "{record}"
        );
    }
    // An invalid p with a valid rua: p=none, DMARC still evaluated.
    let dns = MapDns::default().record(
        "bank.example",
        "v=DMARC1; p=rejects; rua=mailto:d@bank.example",
    );
    let (status, policy, _, _) = outcome(&dns, "bank.example", &[], NO_SPF);
    assert_eq!((status, policy), (DmarcStatus::Fail, Policy::None));
    // Without one: no DMARC processing.
    let dns = MapDns::default().record("bank.example", "v=DMARC1; p=rejects");
    let (status, ..) = outcome(&dns, "bank.example", &[], NO_SPF);
    assert_eq!(status, DmarcStatus::None);
}

#[test]
fn several_records_at_the_author_domain_let_the_parent_apply() {
    let dns = MapDns::default()
        .record("sub.bank.example", "v=DMARC1; p=none")
        .record(
            "sub.bank.example",
            "v=DMARC1; p=none; rua=mailto:x@bank.example",
        )
        .record("bank.example", "v=DMARC1; p=none; sp=reject");
    let (status, policy, at, tag) = outcome(&dns, "sub.bank.example", &[], NO_SPF);
    assert_eq!(
        (status, policy, at.as_deref(), tag),
        (
            DmarcStatus::Fail,
            Policy::Reject,
            Some("bank.example"),
            Some("sp")
        )
    );
    // Several at the parent too: no usable record anywhere.
    let dns = MapDns::default()
        .record("bank.example", "v=DMARC1; p=reject")
        .record("bank.example", "v=DMARC1; p=reject");
    let (status, ..) = outcome(&dns, "bank.example", &[], NO_SPF);
    assert_eq!(status, DmarcStatus::None);
    let out = block_on(evaluate(&dns, "bank.example", &[], "", SpfResult::None));
    assert_eq!(
        out.reason,
        "2 DMARC records at _dmarc.bank.example: none used"
    );
}

#[test]
fn a_failed_lookup_is_never_skipped() {
    // No author record, the parent's lookup fails: the record that
    // applies is unknown.
    let dns = MapDns::default()
        .record("bank.example", "v=DMARC1; p=reject")
        .failing("bank.example");
    let (status, ..) = outcome(&dns, "sub.bank.example", &dkim("sub.bank.example"), NO_SPF);
    assert_eq!(status, DmarcStatus::TempError);
    assert_eq!(dns.queried(), ["sub.bank.example", "bank.example"]);
    // The author's own lookup fails.
    let dns = MapDns::default().failing("bank.example");
    let (status, ..) = outcome(&dns, "bank.example", &[], NO_SPF);
    assert_eq!(status, DmarcStatus::TempError);
    // The author's record is found, a lookup above it fails: an identical
    // identifier still passes, one that needs the Organizational Domain
    // (relaxed alignment) is a temperror, an unrelated one fails.
    let dns = MapDns::default()
        .record("mail.bank.example", "v=DMARC1; p=reject")
        .failing("bank.example");
    let (status, ..) = outcome(
        &dns,
        "mail.bank.example",
        &dkim("mail.bank.example"),
        NO_SPF,
    );
    assert_eq!(status, DmarcStatus::Pass);
    let (status, ..) = outcome(&dns, "mail.bank.example", &dkim("bank.example"), NO_SPF);
    assert_eq!(status, DmarcStatus::TempError);
    // A failure in the identifier's own walk is a temperror too.
    let dns = MapDns::default()
        .record("bank.example", "v=DMARC1; p=reject")
        .failing("out.bank.example");
    let (status, ..) = outcome(&dns, "bank.example", &dkim("out.bank.example"), NO_SPF);
    assert_eq!(status, DmarcStatus::TempError);
    // ... but never for an identifier outside the author's domain.
    let (status, ..) = outcome(&dns, "bank.example", &dkim("evil.example"), NO_SPF);
    assert_eq!(status, DmarcStatus::Fail);
}

#[test]
fn the_organizational_domain_record_applies() {
    // RFC 9989 §4.10.2 examples: records at mail.example.com and
    // example.com: the Organizational Domain is example.com, its record
    // (sp) applies to a.mail.example.com, and its legacy pct with it.
    let dns = MapDns::default()
        .record("mail.example.com", "v=DMARC1; p=none; pct=0")
        .record("example.com", "v=DMARC1; p=none; sp=reject");
    let out = block_on(evaluate(
        &dns,
        "a.mail.example.com",
        &[],
        "",
        SpfResult::None,
    ));
    let applied = out.discovery.applied.clone().unwrap();
    assert_eq!(applied.domain, "example.com");
    assert_eq!(applied.record.pct, None);
    assert_eq!(out.policy, Policy::Reject);
    assert_eq!(out.discovery.organizational.as_deref(), Ok("example.com"));
    // psd=n at mail.example.com stops the walk there.
    let dns = MapDns::default()
        .record("mail.example.com", "v=DMARC1; p=quarantine; psd=n")
        .record("example.com", "v=DMARC1; p=reject");
    let out = block_on(evaluate(
        &dns,
        "a.mail.example.com",
        &[],
        "",
        SpfResult::None,
    ));
    assert_eq!(
        out.discovery.organizational.as_deref(),
        Ok("mail.example.com")
    );
    assert_eq!(out.policy, Policy::Quarantine);
    assert_eq!(dns.queried(), ["a.mail.example.com", "mail.example.com"]);
    // Only a PSD record (psd=y) at com: the Organizational Domain is
    // example.com, the PSD's np applies to a name that does not exist.
    let dns = MapDns::default()
        .record("com", "v=DMARC1; p=none; sp=none; np=reject; psd=y")
        .nonexistent("a.mail.example.com");
    let (status, policy, at, tag) = outcome(&dns, "a.mail.example.com", &[], NO_SPF);
    assert_eq!(
        (status, policy, at.as_deref(), tag),
        (DmarcStatus::Fail, Policy::Reject, Some("com"), Some("np"))
    );
    let steps = block_on(walk::tree_walk(&dns, "a.mail.example.com"));
    assert_eq!(
        walk::organizational("a.mail.example.com", &steps).as_deref(),
        Ok("example.com")
    );
    // The existence check failing leaves sp versus np open.
    let dns = MapDns::default()
        .record("com", "v=DMARC1; p=none; np=reject; psd=y")
        .failing("a.example.com");
    let (status, ..) = outcome(&dns, "a.example.com", &[], NO_SPF);
    assert_eq!(status, DmarcStatus::TempError);
}

#[test]
fn relaxed_and_strict_alignment() {
    let dns = MapDns::default().record("bank.example", "v=DMARC1; p=reject");
    // Relaxed: a subdomain signature aligns with the author domain.
    let (status, ..) = outcome(&dns, "bank.example", &dkim("mail.bank.example"), NO_SPF);
    assert_eq!(status, DmarcStatus::Pass);
    let (status, ..) = outcome(
        &dns,
        "bank.example",
        &[],
        ("bounce.bank.example", SpfResult::Pass),
    );
    assert_eq!(status, DmarcStatus::Pass);
    // A look-alike is not a subdomain.
    let (status, ..) = outcome(&dns, "bank.example", &dkim("evilbank.example"), NO_SPF);
    assert_eq!(status, DmarcStatus::Fail);
    // A subdomain with its own psd=n record is its own organization.
    let dns = MapDns::default()
        .record("bank.example", "v=DMARC1; p=reject")
        .record("shop.bank.example", "v=DMARC1; p=none; psd=n");
    let (status, ..) = outcome(&dns, "bank.example", &dkim("shop.bank.example"), NO_SPF);
    assert_eq!(status, DmarcStatus::Fail);
    // Strict: only the same name.
    let dns = MapDns::default().record("bank.example", "v=DMARC1; p=reject; adkim=s; aspf=s");
    let (status, ..) = outcome(&dns, "bank.example", &dkim("mail.bank.example"), NO_SPF);
    assert_eq!(status, DmarcStatus::Fail);
    let (status, ..) = outcome(&dns, "bank.example", &dkim("bank.example"), NO_SPF);
    assert_eq!(status, DmarcStatus::Pass);
    // An aligned DKIM temperror with no aligned pass: no verdict.
    let temp = [DkimInput {
        domain: "bank.example".into(),
        temperror: true,
    }];
    let (status, ..) = outcome(&dns, "bank.example", &temp, NO_SPF);
    assert_eq!(status, DmarcStatus::TempError);
    let (status, ..) = outcome(
        &dns,
        "bank.example",
        &temp,
        ("bank.example", SpfResult::Pass),
    );
    assert_eq!(status, DmarcStatus::Pass);
}

#[test]
fn test_mode_lowers_the_policy() {
    let dns = MapDns::default().record("bank.example", "v=DMARC1; p=reject; t=y");
    let (_, policy, ..) = outcome(&dns, "bank.example", &[], NO_SPF);
    assert_eq!(policy, Policy::Quarantine);
}

#[test]
fn walk_steps_say_what_each_name_held() {
    let dns = MapDns::default()
        .record("a.bank.example", "v=DMARC1; p=none")
        .record("a.bank.example", "v=DMARC1; p=none")
        .record("bank.example", "v=DMARC1; p=reject");
    let steps = block_on(walk::tree_walk(&dns, "x.a.bank.example"));
    let lines: Vec<String> = steps.iter().map(|s| s.describe()).collect();
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert_eq!(lines[0], "_dmarc.x.a.bank.example: no record");
    assert!(lines[1].contains("2 DMARC records: none used"), "{lines:?}");
    assert!(
        lines[2].starts_with("_dmarc.bank.example: record (p=reject"),
        "{lines:?}"
    );
    assert!(matches!(steps[3].found, Found::Nothing));
}

#[test]
fn parsed_answers_are_cached_until_their_ttl() {
    use std::time::{Duration, Instant};
    let cache = walk::DmarcCache::new(10);
    let soon = Instant::now() + Duration::from_millis(50);
    cache.insert(
        "_dmarc.a.test",
        record::at_name(&["v=DMARC1; p=reject"]),
        soon,
    );
    assert!(matches!(cache.get("_dmarc.a.test"), Some(AtName::One(r)) if r.p == Policy::Reject));
    assert!(cache.get("_dmarc.b.test").is_none());
    std::thread::sleep(Duration::from_millis(80));
    assert!(cache.get("_dmarc.a.test").is_none(), "expired entry served");
    let off = walk::DmarcCache::new(0);
    off.insert(
        "_dmarc.a.test",
        AtName::Nothing,
        Instant::now() + Duration::from_secs(60),
    );
    assert!(off.get("_dmarc.a.test").is_none());
}
