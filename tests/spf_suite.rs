//! The OpenSPF RFC 7208 test suite (`rfc7208-tests.yml`, release 2014.04)
//! against rmilter's SPF evaluator (RELIABILITY §8 D case 16).
//!
//! Every scenario of every section runs: its `zonedata` becomes an in-memory
//! [`SpfDns`] zone, and `host`/`helo`/`mailfrom` go through
//! [`verify`], whose MAIL FROM outcome (`postmaster@HELO` when `mailfrom` is
//! empty) is compared with `result` (a list means any of them). The suite's
//! `explanation` is not compared: rmilter never fetches `exp=` (its results
//! must not change for it, which the exp scenarios check).
//! The zone follows the suite's own driver conventions: a domain without TXT
//! entries gets its `SPF` entries as TXT records (`TXT: NONE` stops that); the
//! SPF RR type itself is never served, since RFC 7208 §3.1 no longer uses it;
//! a `TIMEOUT` entry makes a query that found no record of its type before it
//! a temporary error; CNAMEs are followed, and a CNAME loop is a temporary error.
//! The test prints `N passed, N failed` and fails on any failure not listed in
//! [`KNOWN_FAILURES`] with its reason, or on a listed one that now passes.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

mod common;

use rmilter::verify::spf::{Lookup, SpfDns, SpfLimits, verify};
use yaml_rust2::{Yaml, YamlLoader};

const SUITE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/third-party/spf/rfc7208-tests.yml"
);

/// Scenarios allowed to fail, as (scenario name, reason). Target: empty.
const KNOWN_FAILURES: &[(&str, &str)] = &[];

/// Longest CNAME chain the zone follows.
const MAX_CNAME_CHAIN: usize = 8;

#[derive(Debug, Clone)]
enum Entry {
    Timeout,
    Txt(Vec<u8>),
    /// Kept so the zone mirrors the suite; never served (RFC 7208 §3.1).
    Spf,
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Mx(u16, String),
    Ptr(String),
    Cname(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Txt,
    A,
    Aaaa,
    Mx,
    Ptr,
}

#[derive(Debug, Default, Clone)]
struct Zone {
    names: HashMap<String, Vec<Entry>>,
}

fn key(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

impl Zone {
    fn from_yaml(zonedata: &Yaml) -> Result<Zone, String> {
        let mut zone = Zone::default();
        let Some(hash) = zonedata.as_hash() else {
            return Ok(zone);
        };
        for (name, entries) in hash {
            let name = name.as_str().ok_or("zone name is not a string")?;
            let mut out = Vec::new();
            let mut has_txt = false;
            let mut generated = Vec::new();
            for entry in entries.as_vec().ok_or("zone entries are not a list")? {
                if entry.as_str() == Some("TIMEOUT") {
                    out.push(Entry::Timeout);
                    continue;
                }
                let map = entry.as_hash().ok_or(format!("bad entry at {name}"))?;
                for (rtype, value) in map {
                    let rtype = rtype.as_str().ok_or("record type is not a string")?;
                    match rtype {
                        "TXT" | "SPF" => {
                            if rtype == "TXT" {
                                has_txt = true;
                            }
                            if value.as_str() == Some("NONE") {
                                continue;
                            }
                            let text = txt_value(value)?;
                            if rtype == "TXT" {
                                out.push(Entry::Txt(text));
                            } else {
                                out.push(Entry::Spf);
                                generated.push(Entry::Txt(text));
                            }
                        }
                        "A" => out.push(Entry::A(parse_str(value)?)),
                        "AAAA" => out.push(Entry::Aaaa(parse_str(value)?)),
                        "PTR" => out.push(Entry::Ptr(str_value(value)?.to_owned())),
                        "CNAME" => out.push(Entry::Cname(str_value(value)?.to_owned())),
                        "MX" => {
                            let pair = value.as_vec().ok_or("mx is not a pair")?;
                            let pref = pair
                                .first()
                                .and_then(Yaml::as_i64)
                                .and_then(|p| u16::try_from(p).ok())
                                .ok_or("bad mx preference")?;
                            let host = pair.get(1).and_then(Yaml::as_str).ok_or("bad mx host")?;
                            out.push(Entry::Mx(pref, host.to_owned()));
                        }
                        other => return Err(format!("unknown record type {other}")),
                    }
                }
            }
            // The suite's driver: SPF entries double as TXT when the name has no TXT entry.
            if !has_txt {
                out.extend(generated);
            }
            zone.names.insert(key(name), out);
        }
        Ok(zone)
    }

    fn query(&self, name: &str, kind: Kind) -> Lookup<Vec<Entry>> {
        let mut name = key(name);
        let mut seen = vec![name.clone()];
        loop {
            let Some(entries) = self.names.get(&name) else {
                return Lookup::NxDomain;
            };
            let mut found = Vec::new();
            let mut cname = None;
            for entry in entries {
                let matches = matches!(
                    (kind, entry),
                    (Kind::Txt, Entry::Txt(_))
                        | (Kind::A, Entry::A(_))
                        | (Kind::Aaaa, Entry::Aaaa(_))
                        | (Kind::Mx, Entry::Mx(..))
                        | (Kind::Ptr, Entry::Ptr(_))
                );
                match entry {
                    Entry::Timeout if found.is_empty() => {
                        return Lookup::TempError("timeout".to_owned());
                    }
                    Entry::Timeout => break,
                    Entry::Cname(target) => cname = Some(key(target)),
                    _ if matches => found.push(entry.clone()),
                    _ => {}
                }
            }
            if !found.is_empty() {
                return Lookup::Found(found);
            }
            match cname {
                Some(target) if seen.contains(&target) || seen.len() > MAX_CNAME_CHAIN => {
                    return Lookup::TempError("cname loop".to_owned());
                }
                Some(target) => {
                    seen.push(target.clone());
                    name = target;
                }
                None => return Lookup::NoData,
            }
        }
    }
}

fn str_value(v: &Yaml) -> Result<&str, String> {
    v.as_str().ok_or_else(|| format!("not a string: {v:?}"))
}

fn parse_str<T: std::str::FromStr>(v: &Yaml) -> Result<T, String> {
    str_value(v)?
        .parse()
        .map_err(|_| format!("cannot parse {v:?}"))
}

/// A TXT value: one string, or a list of strings that form one RR.
fn txt_value(v: &Yaml) -> Result<Vec<u8>, String> {
    match v {
        Yaml::String(s) => Ok(s.as_bytes().to_vec()),
        Yaml::Array(parts) => {
            let mut out = Vec::new();
            for p in parts {
                out.extend_from_slice(str_value(p)?.as_bytes());
            }
            Ok(out)
        }
        other => Err(format!("bad txt value {other:?}")),
    }
}

fn map<T>(lookup: Lookup<Vec<Entry>>, f: impl Fn(Entry) -> Option<T>) -> Lookup<Vec<T>> {
    match lookup {
        Lookup::Found(entries) => Lookup::Found(entries.into_iter().filter_map(f).collect()),
        Lookup::NxDomain => Lookup::NxDomain,
        Lookup::NoData => Lookup::NoData,
        Lookup::TempError(e) => Lookup::TempError(e),
    }
}

fn reverse_name(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            format!("{d}.{c}.{b}.{a}.in-addr.arpa")
        }
        IpAddr::V6(v6) => {
            let mut s = String::new();
            for byte in v6.octets().iter().rev() {
                let _ = write!(s, "{:x}.{:x}.", byte & 0xf, byte >> 4);
            }
            s.push_str("ip6.arpa");
            s
        }
    }
}

impl SpfDns for Zone {
    async fn txt(&self, name: &str) -> Lookup<Vec<Vec<u8>>> {
        map(self.query(name, Kind::Txt), |e| match e {
            Entry::Txt(t) => Some(t),
            _ => None,
        })
    }

    async fn a(&self, name: &str) -> Lookup<Vec<Ipv4Addr>> {
        map(self.query(name, Kind::A), |e| match e {
            Entry::A(a) => Some(a),
            _ => None,
        })
    }

    async fn aaaa(&self, name: &str) -> Lookup<Vec<Ipv6Addr>> {
        map(self.query(name, Kind::Aaaa), |e| match e {
            Entry::Aaaa(a) => Some(a),
            _ => None,
        })
    }

    async fn mx(&self, name: &str) -> Lookup<Vec<(u16, String)>> {
        map(self.query(name, Kind::Mx), |e| match e {
            Entry::Mx(p, h) => Some((p, h)),
            _ => None,
        })
    }

    async fn ptr(&self, ip: IpAddr) -> Lookup<Vec<String>> {
        map(self.query(&reverse_name(ip), Kind::Ptr), |e| match e {
            Entry::Ptr(p) => Some(p),
            _ => None,
        })
    }
}

fn expected_results(v: &Yaml) -> Vec<String> {
    match v {
        Yaml::String(s) => vec![s.clone()],
        Yaml::Array(list) => list
            .iter()
            .filter_map(|r| r.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

/// Run one scenario; `Err` describes the mismatch.
async fn run_scenario(zone: &impl SpfDns, name: &str, test: &Yaml) -> Result<(), String> {
    let host = str_value(&test["host"])?;
    let ip: IpAddr = host.parse().map_err(|_| format!("bad host {host}"))?;
    let helo = str_value(&test["helo"])?;
    let mail_from = str_value(&test["mailfrom"])?;
    let expected = expected_results(&test["result"]);
    if expected.is_empty() {
        return Err(format!("{name}: no expected result"));
    }
    let limits = SpfLimits::default();
    let (_helo, outcome) = verify(zone, &limits, ip, helo, mail_from, "rmilter.test").await;
    let got = outcome.result.as_str();
    if !expected.iter().any(|e| e == got) {
        return Err(format!(
            "{name}: got {got} ({}), expected {expected:?}",
            outcome.reason
        ));
    }
    Ok(())
}

/// Run every scenario with the DNS each section's zone data gives
/// (`dns_for`); returns (sections, passed, failures).
async fn run_suite<D: SpfDns>(
    mut dns_for: impl FnMut(&Zone) -> D,
) -> (usize, usize, Vec<(String, String)>) {
    let text = match std::fs::read_to_string(SUITE) {
        Ok(t) => t,
        Err(e) => panic!("cannot read {SUITE}: {e}"),
    };
    let docs = match YamlLoader::load_from_str(&text) {
        Ok(d) => d,
        Err(e) => panic!("cannot parse {SUITE}: {e}"),
    };
    let mut passed = 0usize;
    let mut failures: Vec<(String, String)> = Vec::new();
    let mut sections = 0usize;
    for doc in &docs {
        let Some(tests) = doc["tests"].as_hash() else {
            continue;
        };
        sections += 1;
        let section = doc["description"].as_str().unwrap_or("?");
        let zone = match Zone::from_yaml(&doc["zonedata"]) {
            Ok(z) => z,
            Err(e) => panic!("section {section:?}: bad zonedata: {e}"),
        };
        let dns = dns_for(&zone);
        for (name, test) in tests {
            let name = name.as_str().unwrap_or("?").to_owned();
            match run_scenario(&dns, &name, test).await {
                Ok(()) => passed += 1,
                Err(why) => failures.push((name, why)),
            }
        }
    }
    (sections, passed, failures)
}

fn report(sections: usize, passed: usize, failures: &[(String, String)], known: &[(&str, &str)]) {
    for (name, why) in failures {
        match known.iter().find(|(n, _)| n == name) {
            Some((_, reason)) => println!("known failure {why} [{reason}]"),
            None => println!("FAILED {why}"),
        }
    }
    println!("{sections} sections");
    println!("{} passed, {} failed", passed, failures.len());
    assert!(sections >= 14, "only {sections} suite sections found");
    assert!(
        passed + failures.len() >= 200,
        "suite has too few scenarios"
    );
    let unlisted: Vec<&str> = failures
        .iter()
        .filter(|(n, _)| !known.iter().any(|(k, _)| k == n))
        .map(|(n, _)| n.as_str())
        .collect();
    assert!(unlisted.is_empty(), "unlisted failures: {unlisted:?}");
    let stale: Vec<&str> = known
        .iter()
        .filter(|(k, _)| !failures.iter().any(|(n, _)| n == k))
        .map(|(k, _)| *k)
        .collect();
    assert!(stale.is_empty(), "listed failures that now pass: {stale:?}");
}

#[tokio::test]
async fn openspf_rfc7208_suite() {
    let (sections, passed, failures) = run_suite(|zone| zone.clone()).await;
    report(sections, passed, &failures, KNOWN_FAILURES);
}

/// Scenarios that differ when served by a real DNS server, with the reason.
const KNOWN_FAILURES_DNS: &[(&str, &str)] = &[];

/// The same suite with the zone data served by the test DNS server on
/// loopback and queried through the production resolver adapter.
#[tokio::test(flavor = "multi_thread")]
async fn openspf_rfc7208_suite_through_a_dns_server() {
    use common::dns::{Fault, RType, TestDns};
    use rmilter::verify::spf::HickoryDns;
    let server = TestDns::start(common::dns::Zone::new());
    let authenticator = server.authenticator(std::time::Duration::from_millis(300));
    let (sections, passed, failures) = run_suite(|zone| {
        server.clear_faults();
        let mut served = common::dns::Zone::new();
        for (name, entries) in &zone.names {
            let mut present: Vec<RType> = Vec::new();
            for entry in entries {
                served = match entry {
                    Entry::Txt(text) => {
                        present.push(RType::TXT);
                        served.txt_strings(name, std::slice::from_ref(text))
                    }
                    Entry::A(ip) => {
                        present.push(RType::A);
                        served.a(name, *ip)
                    }
                    Entry::Aaaa(ip) => {
                        present.push(RType::AAAA);
                        served.aaaa(name, *ip)
                    }
                    Entry::Mx(pref, host) => {
                        present.push(RType::MX);
                        served.mx(name, *pref, host)
                    }
                    Entry::Ptr(target) => {
                        present.push(RType::PTR);
                        served.ptr(name, target)
                    }
                    Entry::Cname(target) => served.cname(name, target),
                    Entry::Spf => served,
                    Entry::Timeout => {
                        // Types with no record before TIMEOUT time out.
                        for t in [RType::TXT, RType::A, RType::AAAA, RType::MX, RType::PTR] {
                            if !present.contains(&t) {
                                server.set_fault_exact(name, Some(t), Fault::Timeout);
                            }
                        }
                        served
                    }
                };
            }
        }
        server.set_zone(served);
        HickoryDns::new(authenticator.resolver().clone())
    })
    .await;
    report(sections, passed, &failures, KNOWN_FAILURES_DNS);
}
