//! Evaluator tests against an in-memory zone: processing limits (RELIABILITY
//! P2–P5), the query budget (§8 case 17), macro edge cases (P1, §8 case 18),
//! identities (F9, F10), IPv6 (P8), DNS failure mapping (§3) and a
//! deterministic no-panic property test over random records and answers.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::identity::{normalise_domain, parse_mail_from};
use super::macros::{Context, MacroString, Vars};
use super::{Lookup, MAX_REASON, SpfDns, SpfLimits, SpfOutcome, SpfResult, check_host, verify};

/// An in-memory zone that counts and records its queries.
#[derive(Default)]
struct Zone {
    txt: HashMap<String, Vec<Vec<u8>>>,
    a: HashMap<String, Vec<Ipv4Addr>>,
    aaaa: HashMap<String, Vec<Ipv6Addr>>,
    mx: HashMap<String, Vec<(u16, String)>>,
    ptr: HashMap<IpAddr, Vec<String>>,
    /// Names whose every query is a temporary error.
    broken: HashSet<String>,
    /// Delay before each answer.
    delay: Option<Duration>,
    queries: AtomicU64,
    asked: Mutex<Vec<String>>,
}

impl Zone {
    fn txt(mut self, name: &str, text: &str) -> Self {
        self.txt
            .entry(name.to_owned())
            .or_default()
            .push(text.as_bytes().to_vec());
        self
    }

    fn a(mut self, name: &str, ip: [u8; 4]) -> Self {
        self.a
            .entry(name.to_owned())
            .or_default()
            .push(Ipv4Addr::from(ip));
        self
    }

    fn aaaa(mut self, name: &str, ip: &str) -> Self {
        let ip: Ipv6Addr = ip.parse().unwrap_or(Ipv6Addr::UNSPECIFIED);
        self.aaaa.entry(name.to_owned()).or_default().push(ip);
        self
    }

    fn mx(mut self, name: &str, host: &str) -> Self {
        let list = self.mx.entry(name.to_owned()).or_default();
        let pref = u16::try_from(list.len()).unwrap_or(u16::MAX);
        list.push((pref, host.to_owned()));
        self
    }

    fn ptr(mut self, ip: IpAddr, name: &str) -> Self {
        self.ptr.entry(ip).or_default().push(name.to_owned());
        self
    }

    fn broken(mut self, name: &str) -> Self {
        self.broken.insert(name.to_owned());
        self
    }

    fn exists(&self, name: &str) -> bool {
        self.txt.contains_key(name)
            || self.a.contains_key(name)
            || self.aaaa.contains_key(name)
            || self.mx.contains_key(name)
    }

    async fn answer<T: Clone>(&self, name: &str, map: &HashMap<String, Vec<T>>) -> Lookup<Vec<T>> {
        self.queries.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut asked) = self.asked.lock() {
            asked.push(name.to_owned());
        }
        if let Some(d) = self.delay {
            tokio::time::sleep(d).await;
        }
        if self.broken.contains(name) {
            return Lookup::TempError("servfail".to_owned());
        }
        match map.get(name) {
            Some(v) => Lookup::Found(v.clone()),
            None if self.exists(name) => Lookup::NoData,
            None => Lookup::NxDomain,
        }
    }

    fn asked(&self) -> Vec<String> {
        self.asked.lock().map(|a| a.clone()).unwrap_or_default()
    }
}

impl SpfDns for Zone {
    async fn txt(&self, name: &str) -> Lookup<Vec<Vec<u8>>> {
        self.answer(name, &self.txt).await
    }
    async fn a(&self, name: &str) -> Lookup<Vec<Ipv4Addr>> {
        self.answer(name, &self.a).await
    }
    async fn aaaa(&self, name: &str) -> Lookup<Vec<Ipv6Addr>> {
        self.answer(name, &self.aaaa).await
    }
    async fn mx(&self, name: &str) -> Lookup<Vec<(u16, String)>> {
        self.answer(name, &self.mx).await
    }
    async fn ptr(&self, ip: IpAddr) -> Lookup<Vec<String>> {
        self.queries.fetch_add(1, Ordering::Relaxed);
        match self.ptr.get(&ip) {
            Some(v) => Lookup::Found(v.clone()),
            None => Lookup::NxDomain,
        }
    }
}

fn ip4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

async fn check(zone: &Zone, client: IpAddr, domain: &str) -> SpfOutcome {
    check_with(zone, &SpfLimits::default(), client, domain).await
}

async fn check_with(zone: &Zone, limits: &SpfLimits, client: IpAddr, domain: &str) -> SpfOutcome {
    check_host(
        zone,
        limits,
        client,
        domain,
        &format!("user@{domain}"),
        "mail.example.org",
        "mx.rmilter.test",
    )
    .await
}

#[tokio::test]
async fn basic_results() {
    let zone = Zone::default()
        .txt(
            "example.com",
            "v=spf1 ip4:192.0.2.0/24 ~ip4:198.51.100.0/24 ?ip4:203.0.113.1 -all",
        )
        .txt("neutral.example.com", "v=spf1 ip4:192.0.2.1")
        .txt("other.example.com", "some other text");
    let r = check(&zone, ip4(192, 0, 2, 9), "example.com").await;
    assert_eq!(r.result, SpfResult::Pass);
    assert_eq!(r.domain, "example.com");
    assert_eq!(r.reason, "example.com matched ip4:192.0.2.0/24");
    assert_eq!(
        check(&zone, ip4(198, 51, 100, 1), "example.com")
            .await
            .result,
        SpfResult::SoftFail
    );
    assert_eq!(
        check(&zone, ip4(203, 0, 113, 1), "example.com")
            .await
            .result,
        SpfResult::Neutral
    );
    assert_eq!(
        check(&zone, ip4(10, 0, 0, 1), "example.com").await.result,
        SpfResult::Fail
    );
    assert_eq!(
        check(&zone, ip4(10, 0, 0, 1), "neutral.example.com")
            .await
            .result,
        SpfResult::Neutral
    );
    assert_eq!(
        check(&zone, ip4(10, 0, 0, 1), "other.example.com")
            .await
            .result,
        SpfResult::None
    );
    assert_eq!(
        check(&zone, ip4(10, 0, 0, 1), "nx.example.com")
            .await
            .result,
        SpfResult::None
    );
    // RFC 7208 §4.3: an invalid domain is none without any query.
    let r = check(&zone, ip4(10, 0, 0, 1), "[192.0.2.1]").await;
    assert_eq!((r.result, r.domain.as_str()), (SpfResult::None, ""));
}

/// RELIABILITY P2: the 11th DNS-querying term is a permerror; loops end there.
#[tokio::test]
async fn dns_term_limit_and_loops() {
    let ten = (0..10)
        .map(|i| format!("a:h{i}.example.com"))
        .collect::<Vec<_>>()
        .join(" ");
    let mut zone = Zone::default()
        .txt("ten.example.com", &format!("v=spf1 {ten} -all"))
        .txt(
            "eleven.example.com",
            &format!("v=spf1 {ten} a:h10.example.com -all"),
        )
        .txt("loop1.example.com", "v=spf1 include:loop2.example.com -all")
        .txt("loop2.example.com", "v=spf1 include:loop1.example.com -all")
        .txt("self.example.com", "v=spf1 redirect=self.example.com");
    for i in 0..=10 {
        zone = zone.a(&format!("h{i}.example.com"), [10, 0, 0, 1]);
    }
    let r = check(&zone, ip4(192, 0, 2, 1), "ten.example.com").await;
    assert_eq!((r.result, r.dns_queries), (SpfResult::Fail, 10));
    let r = check(&zone, ip4(192, 0, 2, 1), "eleven.example.com").await;
    assert_eq!(r.result, SpfResult::PermError);
    assert_eq!(r.reason, "dns lookup limit of 10 exceeded");
    for d in ["loop1.example.com", "self.example.com"] {
        let r = check(&zone, ip4(192, 0, 2, 1), d).await;
        assert_eq!((r.result, r.dns_queries), (SpfResult::PermError, 11), "{d}");
    }
    // The limit is a field; a lower one applies as given.
    let limits = SpfLimits {
        dns_mechanisms: 3,
        ..SpfLimits::default()
    };
    let r = check_with(&zone, &limits, ip4(192, 0, 2, 1), "ten.example.com").await;
    assert_eq!((r.result, r.dns_queries), (SpfResult::PermError, 4));
}

/// RELIABILITY P4: more than two void lookups is a permerror; the limit is configurable.
#[tokio::test]
async fn void_lookup_limit() {
    let zone = Zone::default()
        .txt(
            "two.example.com",
            "v=spf1 a:nx1.example.com mx:nx2.example.com ?all",
        )
        .txt(
            "three.example.com",
            "v=spf1 a:nx1.example.com exists:nx2.example.com ptr:nx3.example.com ?all",
        )
        .txt(
            "exp.example.com",
            "v=spf1 a:nx1.example.com a:nx2.example.com -all exp=nx3.example.com",
        );
    let r = check(&zone, ip4(192, 0, 2, 1), "two.example.com").await;
    assert_eq!((r.result, r.void_lookups), (SpfResult::Neutral, 2));
    let r = check(&zone, ip4(192, 0, 2, 1), "three.example.com").await;
    assert_eq!((r.result, r.void_lookups), (SpfResult::PermError, 3));
    assert_eq!(r.reason, "void lookup limit of 2 exceeded");
    // The exp= lookup is not a term (suite exp-void).
    let r = check(&zone, ip4(192, 0, 2, 1), "exp.example.com").await;
    assert_eq!((r.result, r.void_lookups), (SpfResult::Fail, 2));
    let strict = SpfLimits {
        void_lookups: 0,
        ..SpfLimits::default()
    };
    let r = check_with(&zone, &strict, ip4(192, 0, 2, 1), "two.example.com").await;
    assert_eq!(r.result, SpfResult::PermError);
    let lax = SpfLimits {
        void_lookups: 5,
        ..SpfLimits::default()
    };
    let r = check_with(&zone, &lax, ip4(192, 0, 2, 1), "three.example.com").await;
    assert_eq!(r.result, SpfResult::Neutral);
}

/// RELIABILITY P3: MX with more than 10 names is a permerror; PTR names past 10 are ignored.
#[tokio::test]
async fn mx_and_ptr_name_limits() {
    let client = ip4(192, 0, 2, 99);
    let mut zone = Zone::default()
        .txt("mx10.example.com", "v=spf1 mx -all")
        .txt("mx11.example.com", "v=spf1 mx -all")
        .txt("ptr.example.com", "v=spf1 ptr -all");
    for i in 0..10 {
        let host = format!("m{i}.example.com");
        zone = zone
            .mx("mx10.example.com", &host)
            .mx("mx11.example.com", &host)
            .a(&host, [10, 0, 0, 1]);
        zone = zone.ptr(client, &format!("p{i}.other.example"));
    }
    zone = zone
        .mx("mx10.example.com", "")
        .mx("mx11.example.com", "last.example.com")
        .a("last.example.com", [192, 0, 2, 99]);
    // The 11th PTR name would match and validate, but is ignored.
    zone = zone
        .ptr(client, "host.ptr.example.com.")
        .a("host.ptr.example.com", [192, 0, 2, 99]);
    // Ten names plus a null MX ("") stay within the limit and do not match.
    let mut zone10 = zone;
    if let Some(list) = zone10.mx.get_mut("mx10.example.com") {
        list.pop();
    }
    let r = check(&zone10, client, "mx10.example.com").await;
    assert_eq!(r.result, SpfResult::Fail);
    let r = check(&zone10, client, "mx11.example.com").await;
    assert_eq!(r.result, SpfResult::PermError);
    assert_eq!(r.reason, "mx of mx11.example.com has more than 10 names");
    let r = check(&zone10, client, "ptr.example.com").await;
    assert_eq!(r.result, SpfResult::Fail);
}

/// RELIABILITY P5: the time limit gives temperror, not permerror, and ends the check on time.
#[tokio::test]
async fn time_limit_is_temperror() {
    let mut zone = Zone::default().txt("slow.example.com", "v=spf1 a -all");
    zone.delay = Some(Duration::from_secs(30));
    let limits = SpfLimits {
        time: Duration::from_millis(100),
        ..SpfLimits::default()
    };
    let started = std::time::Instant::now();
    let r = check_with(&zone, &limits, ip4(192, 0, 2, 1), "slow.example.com").await;
    assert_eq!(r.result, SpfResult::TempError);
    assert_eq!(r.reason, "time limit of 100 ms exceeded");
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// RELIABILITY §3: DNS failures that decide the result give temperror; those RFC 7208 skips do not.
#[tokio::test]
async fn dns_failures() {
    let client = ip4(192, 0, 2, 1);
    let zone = Zone::default()
        .txt("a.example.com", "v=spf1 a:broken.example.com -all")
        .txt("mx.example.com", "v=spf1 mx -all")
        .mx("mx.example.com", "broken.example.com")
        .mx("mx.example.com", "good.example.com")
        .a("good.example.com", [192, 0, 2, 1])
        .txt("mxbad.example.com", "v=spf1 mx -all")
        .mx("mxbad.example.com", "broken.example.com")
        .txt("ptr.example.com", "v=spf1 ptr:broken.example.com -all")
        .ptr(client, "broken.example.com")
        .txt("exp.example.com", "v=spf1 -all exp=broken.example.com")
        .txt("inc.example.com", "v=spf1 include:broken.example.com -all")
        .broken("broken.example.com")
        .broken("down.example.com");
    let temp = |r: &SpfOutcome| r.result == SpfResult::TempError;
    let r = check(&zone, client, "a.example.com").await;
    assert!(temp(&r), "{r:?}");
    assert_eq!(r.reason, "dns error on a broken.example.com: servfail");
    assert!(temp(&check(&zone, client, "down.example.com").await));
    assert!(temp(&check(&zone, client, "inc.example.com").await));
    assert!(temp(&check(&zone, client, "mxbad.example.com").await));
    // Another MX host matches: the failed one does not matter.
    assert_eq!(
        check(&zone, client, "mx.example.com").await.result,
        SpfResult::Pass
    );
    // RFC 7208 §5.5: a failed validation lookup skips the name.
    assert_eq!(
        check(&zone, client, "ptr.example.com").await.result,
        SpfResult::Fail
    );
    // exp= is never fetched, so its failure cannot matter.
    let r = check(&zone, client, "exp.example.com").await;
    assert_eq!(r.result, SpfResult::Fail);
}

/// RELIABILITY §8 case 17 (P5, P6): a tree built for the most queries ends in
/// permerror, and the queries stay within the documented bound.
#[tokio::test]
async fn query_budget() {
    let client = ip4(192, 0, 2, 250);
    let mut zone = Zone::default();
    let includes = (0..10)
        .map(|i| format!("include:i{i}.example.com"))
        .collect::<Vec<_>>()
        .join(" ");
    zone = zone.txt(
        "victim.example.com",
        &format!("v=spf1 {includes} exists:%{{l}}.%{{i}}.example.net -all"),
    );
    for i in 0..10 {
        let inc = format!("i{i}.example.com");
        zone = zone.txt(&inc, "v=spf1 mx exists:%{l}.%{i}._spf.example.net -all");
        for j in 0..10 {
            let host = format!("mx{j}.{inc}");
            zone = zone.mx(&inc, &host).a(&host, [10, 0, 0, 1]);
        }
    }
    let limits = SpfLimits::default();
    let r = check_with(&zone, &limits, client, "victim.example.com").await;
    assert_eq!(r.result, SpfResult::PermError);
    let asked = zone.queries.load(Ordering::Relaxed);
    assert!(asked <= limits.max_dns_queries(), "{asked} queries");

    // The widest tree: ten mx terms of ten names each, then an eleventh term.
    let mut zone = Zone::default();
    let mxs = (0..10)
        .map(|i| format!("mx:d{i}.example.com"))
        .collect::<Vec<_>>()
        .join(" ");
    zone = zone.txt("wide.example.com", &format!("v=spf1 {mxs} a -all"));
    for i in 0..10 {
        for j in 0..10 {
            let host = format!("h{j}.d{i}.example.com");
            zone = zone
                .mx(&format!("d{i}.example.com"), &host)
                .a(&host, [10, 0, 0, 1]);
        }
    }
    let r = check_with(&zone, &limits, client, "wide.example.com").await;
    assert_eq!(r.result, SpfResult::PermError);
    assert_eq!(zone.queries.load(Ordering::Relaxed), 111);
    assert!(111 <= limits.max_dns_queries());
}

/// RELIABILITY §8 case 18 (P1): macro edge cases give RFC results without panics.
#[tokio::test]
async fn macro_edge_cases() {
    let client = ip4(192, 0, 2, 7);
    let long_local = "x".repeat(60);
    let zone = Zone::default()
        .txt(
            "m.example.com",
            "v=spf1 exists:%{d2147483648}.%{ir}.%{l1r+-}.bl.example.net -all",
        )
        .a("m.example.com.7.2.0.192.a.bl.example.net", [127, 0, 0, 2])
        .txt("u.example.com", "v=spf1 a:%{L}.%{O}.example.net -all")
        .a("a%20b%2bc.u.example.com.example.net", [192, 0, 2, 7])
        .txt(
            "long.example.com",
            "v=spf1 exists:%{l}.%{l}.%{l}.%{l}.%{l}.%{l}.%{l}.%{l}.long.example.net -all",
        )
        .txt("bad.example.com", "v=spf1 a:%{z}.example.net -all")
        .txt("zero.example.com", "v=spf1 a:%{d0}.example.net -all")
        .txt("exp.example.com", "v=spf1 -all exp=why.%{d}")
        .txt("why.exp.example.com", "%{L} from %{c} at %{r} %{t} %{s}");
    let run = |domain: &'static str, local: String| {
        let zone = &zone;
        async move {
            check_host(
                zone,
                &SpfLimits::default(),
                client,
                domain,
                &format!("{local}@{domain}"),
                "mail.example.org",
                "mx.rmilter.test",
            )
            .await
        }
    };
    assert_eq!(
        run("m.example.com", "a-b+c".into()).await.result,
        SpfResult::Pass
    );
    // Upper-case macros are URL-escaped ("a b+c" becomes "a%20b%2Bc"; names are queried in lower case).
    assert_eq!(
        run("u.example.com", "a b+c".into()).await.result,
        SpfResult::Pass
    );
    // Over 253 octets: shortened from the left before the query (RFC 7208 §7.3).
    let r = run("long.example.com", long_local.clone()).await;
    assert_eq!(r.result, SpfResult::Fail);
    let queried = zone
        .asked()
        .into_iter()
        .find(|n| n.ends_with("long.example.net"));
    let queried = queried.unwrap_or_default();
    assert!(queried.len() <= 253 && queried.len() > 190, "{queried}");
    assert!(queried.starts_with(&long_local));
    assert_eq!(
        run("bad.example.com", "a".into()).await.result,
        SpfResult::PermError
    );
    assert_eq!(
        run("zero.example.com", "a".into()).await.result,
        SpfResult::PermError
    );
    // exp= with macros: neither expanded nor fetched (attacker-chosen names).
    let r = run("exp.example.com", "x".into()).await;
    assert_eq!(r.result, SpfResult::Fail);
    let asked = zone.asked();
    assert!(!asked.iter().any(|n| n.contains("why")), "{asked:?}");
}

/// RELIABILITY P8: IPv6 clients and ip6 mechanisms, including an IPv4-mapped client.
#[tokio::test]
async fn ipv6() {
    let zone = Zone::default()
        .txt("six.example.com", "v=spf1 ip6:2001:db8::/32 a -all")
        .aaaa("six.example.com", "2001:db8:ffff::1")
        .txt("four.example.com", "v=spf1 ip4:192.0.2.0/24 -all");
    assert_eq!(
        check(&zone, ip("::1"), "six.example.com").await.result,
        SpfResult::Fail
    );
    assert_eq!(
        check(&zone, ip("2001:db8::5"), "six.example.com")
            .await
            .result,
        SpfResult::Pass
    );
    assert_eq!(
        check(&zone, ip("2001:db9::5"), "six.example.com")
            .await
            .result,
        SpfResult::Fail
    );
    assert_eq!(
        check(&zone, ip("::ffff:192.0.2.1"), "four.example.com")
            .await
            .result,
        SpfResult::Pass
    );
    assert_eq!(
        check(&zone, ip("::ffff:192.0.2.1"), "six.example.com")
            .await
            .result,
        SpfResult::Fail
    );
}

/// RELIABILITY F9, F10: identities of one transaction.
#[tokio::test]
async fn transaction_identities() {
    let client = ip4(192, 0, 2, 1);
    let zone = Zone::default()
        .txt("helo.example.org", "v=spf1 ip4:192.0.2.1 -all")
        .txt("victim.example", "v=spf1 -all")
        .txt("xn--bcher-kva.example", "v=spf1 ip4:192.0.2.1 -all");
    let limits = SpfLimits::default();
    let v = |mail_from: &'static str, helo: &'static str| {
        verify(&zone, &limits, client, helo, mail_from, "mx.rmilter.test")
    };
    // Null sender: the MAIL FROM identity is postmaster@HELO.
    let (helo, mail) = v("<>", "helo.example.org").await;
    assert_eq!(helo.result, SpfResult::Pass);
    assert_eq!(mail, helo);
    assert_eq!(mail.domain, "helo.example.org");
    // An invalid MAIL FROM domain never falls back to the HELO identity.
    for bad in [
        "<any@victim.example(a.attack.example>",
        "<(any@victim>",
        "<postmaster>",
        "<a@[192.0.2.1]>",
    ] {
        let (helo, mail) = v(bad, "helo.example.org").await;
        assert_eq!(helo.result, SpfResult::Pass);
        assert_eq!(
            (mail.result, mail.domain.as_str()),
            (SpfResult::None, ""),
            "{bad}"
        );
    }
    // The domain after the last '@' outside quotes, route removed.
    let (_, mail) = v(
        "<@relay.example,@x.example:\"a@helo.example.org\"@victim.example>",
        "helo.example.org",
    )
    .await;
    assert_eq!(
        (mail.result, mail.domain.as_str()),
        (SpfResult::Fail, "victim.example")
    );
    // U-labels become A-labels before the query; the A-label is reported.
    let (_, mail) = v("<user@BÜCHER.example>", "helo.example.org").await;
    assert_eq!(
        (mail.result, mail.domain.as_str()),
        (SpfResult::Pass, "xn--bcher-kva.example")
    );
    // An invalid HELO gives none for the HELO identity and, with a null sender, for MAIL FROM.
    let (helo, mail) = v("<>", "[192.0.2.1]").await;
    assert_eq!(
        (helo.result, mail.result),
        (SpfResult::None, SpfResult::None)
    );
}

#[test]
fn futures_are_send() {
    fn send<T: Send>(_: &T) {}
    let zone = Zone::default();
    let limits = SpfLimits::default();
    let f = check_host(
        &zone,
        &limits,
        ip4(192, 0, 2, 1),
        "example.com",
        "a@example.com",
        "h",
        "r",
    );
    send(&f);
    let g = verify(&zone, &limits, ip4(192, 0, 2, 1), "h.example", "<>", "r");
    send(&g);
}

// ---------------------------------------------------------------------------
// Property test
// ---------------------------------------------------------------------------

/// SplitMix64: a small deterministic generator, so every run checks the same cases.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n.max(1) as u64).unwrap_or(0)
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items.get(self.below(items.len())).copied().unwrap_or("")
    }
}

fn hash(s: &str) -> u64 {
    // FNV-1a: answers depend only on the name.
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

const PIECES: &[&str] = &[
    "%{d}",
    "%{i}",
    "%{ir}",
    "%{l1r+-}",
    "%{d2147483648}",
    "%{p}",
    "%{h}",
    "%{S}",
    "%{o}",
    "%{v}",
    "%{L}",
    "%{d2}",
    "%{lr-}",
    "%%",
    "%_",
    "%-",
    "a",
    "b",
    "fuzz",
    ".",
    "-",
    "example",
    "com",
    "0",
    "xn--zckzah",
    "_spf",
];

/// Pieces that make a domain-spec invalid (or odd), used now and then.
const BAD_PIECES: &[&str] = &[
    "%{d0}", "%{x}", "%{c}", "%", "%{", "}", "..", "/", "//", ":", "=", "24", "129", "\u{e9}",
    "\t", "\0",
];

const TERMS: &[&str] = &[
    "all",
    "a",
    "mx",
    "ptr",
    "include:",
    "exists:",
    "redirect=",
    "exp=",
    "ip4:",
    "ip6:",
    "foo=",
    "a:",
    "mx:",
    "ptr:",
    "a/24",
    "mx//64",
    "include:",
    "a:",
    "exists:",
    "ip4:",
];

/// Terms that are syntax errors, used now and then.
const BAD_TERMS: &[&str] = &["a/33", "1up=", "=", "v=spf1", "", "all.", "A//129"];

/// Mostly `good`, now and then `bad`.
fn pick_mostly<'a>(rng: &mut Rng, good: &[&'a str], bad: &[&'a str]) -> &'a str {
    if rng.below(25) == 0 {
        rng.pick(bad)
    } else {
        rng.pick(good)
    }
}

fn random_spec(rng: &mut Rng) -> String {
    let mut s = String::new();
    for _ in 0..rng.below(6) {
        s.push_str(pick_mostly(rng, PIECES, BAD_PIECES));
    }
    let end = pick_mostly(
        rng,
        &[".example.com", ".fuzz.test", "%{d}", ".com.", "%{o}"],
        &[".", ".123", "", ".-x"],
    );
    s.push_str(end);
    if rng.below(60) == 0 {
        s.push_str(&"q".repeat(rng.below(300)));
    }
    s
}

fn random_record(rng: &mut Rng) -> Vec<u8> {
    if rng.below(20) == 0 {
        // Raw bytes after the version.
        let mut r = b"v=spf1 ".to_vec();
        for _ in 0..rng.below(80) {
            r.push(u8::try_from(rng.below(256)).unwrap_or(b'x'));
        }
        return r;
    }
    let mut r = String::from(pick_mostly(
        rng,
        &["v=spf1", "V=SPF1"],
        &["v=spf10", "v=spf"],
    ));
    for _ in 0..rng.below(14) {
        r.push_str(rng.pick(&[" ", " ", " ", "  "]));
        let term = pick_mostly(rng, TERMS, BAD_TERMS);
        if !term.ends_with('=') || rng.below(25) == 0 {
            r.push_str(rng.pick(&["", "", "+", "-", "~", "?"]));
        }
        r.push_str(term);
        match term {
            "ip4:" => {
                r.push_str(pick_mostly(
                    rng,
                    &["192.0.2.0", "10.0.0.1", "192.0.2.3"],
                    &["1.2.3", "256.1.1.1", "01.2.3.4"],
                ));
                r.push_str(pick_mostly(
                    rng,
                    &["", "/24", "/0", "/32"],
                    &["/33", "//32", "/032"],
                ));
            }
            "ip6:" => {
                r.push_str(pick_mostly(
                    rng,
                    &["2001:db8::", "::1", "::ffff:192.0.2.3", "::"],
                    &[":bad::", "2001:db8::/"],
                ));
                r.push_str(pick_mostly(
                    rng,
                    &["", "/32", "/0", "/128"],
                    &["/129", "//64"],
                ));
            }
            t if t.ends_with(':') || t.ends_with('=') => r.push_str(&random_spec(rng)),
            _ => {}
        }
    }
    r.into_bytes()
}

/// DNS whose answers are derived from the name, so includes and redirects chain.
struct FuzzDns {
    queries: AtomicU64,
}

impl FuzzDns {
    fn rng(&self, name: &str, salt: u64) -> Rng {
        self.queries.fetch_add(1, Ordering::Relaxed);
        Rng(hash(name) ^ salt)
    }
}

/// One answer in `1 / odds` is NXDOMAIN, NODATA or a temporary error each.
fn void_or<T>(rng: &mut Rng, odds: usize, found: impl FnOnce(&mut Rng) -> T) -> Lookup<T> {
    match rng.below(odds) {
        0 => Lookup::NxDomain,
        1 => Lookup::NoData,
        2 => Lookup::TempError("fuzz".to_owned()),
        _ => Lookup::Found(found(rng)),
    }
}

impl SpfDns for FuzzDns {
    async fn txt(&self, name: &str) -> Lookup<Vec<Vec<u8>>> {
        let mut rng = self.rng(name, 1);
        void_or(&mut rng, 30, |rng| {
            let count = match rng.below(12) {
                0 => 0,
                1 => 2,
                _ => 1,
            };
            (0..count).map(|_| random_record(rng)).collect()
        })
    }
    async fn a(&self, name: &str) -> Lookup<Vec<Ipv4Addr>> {
        let mut rng = self.rng(name, 2);
        void_or(&mut rng, 8, |rng| {
            (0..rng.below(4))
                .map(|_| Ipv4Addr::new(192, 0, 2, u8::try_from(rng.below(8)).unwrap_or(0)))
                .collect()
        })
    }
    async fn aaaa(&self, name: &str) -> Lookup<Vec<Ipv6Addr>> {
        let mut rng = self.rng(name, 3);
        void_or(&mut rng, 8, |rng| {
            (0..rng.below(4))
                .map(|_| {
                    Ipv6Addr::new(
                        0x2001,
                        0xdb8,
                        0,
                        0,
                        0,
                        0,
                        0,
                        u16::try_from(rng.below(8)).unwrap_or(0),
                    )
                })
                .collect()
        })
    }
    async fn mx(&self, name: &str) -> Lookup<Vec<(u16, String)>> {
        let mut rng = self.rng(name, 4);
        void_or(&mut rng, 8, |rng| {
            (0..rng.below(13))
                .map(|i| {
                    (
                        u16::try_from(i).unwrap_or(0),
                        rng.pick(&["mx.fuzz.test", ".", "", "a.example.com."])
                            .to_owned(),
                    )
                })
                .collect()
        })
    }
    async fn ptr(&self, ip: IpAddr) -> Lookup<Vec<String>> {
        let mut rng = self.rng(&ip.to_string(), 5);
        void_or(&mut rng, 8, |rng| {
            (0..rng.below(13))
                .map(|_| {
                    rng.pick(&[
                        "fuzz.example.com.",
                        "mx.fuzz.test",
                        "x.example.com",
                        "\u{e9}.com",
                    ])
                    .to_owned()
                })
                .collect()
        })
    }
}

/// ~20 000 random records, answers and identities: no panic, and every
/// outcome within its documented bounds.
#[tokio::test]
async fn no_panic_on_random_records() {
    let mut rng = Rng(0x0005_eed0_f5bf_2026);
    let limits = SpfLimits::default();
    let clients = [
        ip4(192, 0, 2, 3),
        ip("2001:db8::3"),
        ip("::ffff:192.0.2.3"),
        ip("::"),
        ip4(0, 0, 0, 0),
    ];
    let locals = [
        "user",
        "",
        "\"a b\"",
        "a-b+c.d",
        "\u{e9}t\u{e9}",
        "x\r\ny",
        "%{d}",
        "@@",
    ];
    let helos = [
        "mail.example.org",
        "[192.0.2.1]",
        "JUMPIN' JUPITER",
        "",
        "%%%",
        "h\u{e9}lo.test",
    ];
    for case in 0..20_000u32 {
        let dns = FuzzDns {
            queries: AtomicU64::new(0),
        };
        let domain = format!(
            "d{}.{}",
            rng.below(50_000),
            rng.pick(&["example.com", "fuzz.test", "com"])
        );
        let client = clients[rng.below(clients.len())];
        let local = rng.pick(&locals);
        let helo = rng.pick(&helos);
        let outcome = if case % 2 == 0 {
            check_host(
                &dns,
                &limits,
                client,
                &domain,
                &format!("{local}@{domain}"),
                helo,
                "mx.rmilter.test",
            )
            .await
        } else {
            verify(
                &dns,
                &limits,
                client,
                helo,
                &format!("<{local}@{domain}>"),
                "r",
            )
            .await
            .1
        };
        assert!(outcome.reason.len() <= MAX_REASON, "case {case}");
        assert!(
            outcome
                .reason
                .bytes()
                .all(|b| (0x20..=0x7e).contains(&b) && !b"()\\".contains(&b))
        );
        assert!(
            outcome.dns_queries <= limits.dns_mechanisms + 1,
            "case {case}: {outcome:?}"
        );
        assert!(
            outcome.void_lookups <= limits.void_lookups + 1,
            "case {case}: {outcome:?}"
        );
        // verify() makes two checks (HELO and MAIL FROM), check_host() one.
        let checks = if case % 2 == 0 { 1 } else { 2 };
        assert!(
            dns.queries.load(Ordering::Relaxed) <= checks * limits.max_dns_queries(),
            "case {case}"
        );
    }
}

/// The parsers alone, on random text and bytes.
#[test]
fn no_panic_in_parsers() {
    let mut rng = Rng(42);
    let vars = Vars {
        sender: "a@b.example",
        local: "a",
        sender_domain: "b.example",
        domain: "b.example",
        ip: ip("2001:db8::1"),
        helo: "h",
        receiver: "",
        validated: None,
        timestamp: 0,
    };
    for _ in 0..20_000 {
        let record = random_record(&mut rng);
        let _ = super::record::parse(&record);
        let spec = random_spec(&mut rng);
        for ctx in [Context::DomainSpec, Context::ModifierValue] {
            if let Ok(m) = MacroString::parse(&spec, ctx) {
                let _ = super::eval::query_name(&m.expand_domain(&vars));
            }
        }
        let _ = parse_mail_from(&spec);
        let _ = normalise_domain(&spec);
    }
}
