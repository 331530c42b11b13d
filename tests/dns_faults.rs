//! The DNS fault matrix (RELIABILITY §8 E cases 20–22): for each lookup a
//! verdict depends on, every fault the test DNS server can inject, with
//! the documented result. A DNS failure is never `dmarc=none` for a domain
//! with a record, and never a 5xx. Then the resolver going away entirely
//! and coming back.

mod common;

use common::dns::{Fault, RType, TestDns, Zone};
use common::drive::{self, Envelope};
use common::keys::TestKeys;
use common::milter::TestMilter;
use common::sign::{SignOptions, sign};
use indymilter_test::Status;
use rmilter::config::KeyAlgorithm;
use std::time::{Duration, Instant};

const CLIENT: &str = "198.51.100.7";

fn zone(keys: &TestKeys) -> Zone {
    // SPF passes only through the a: mechanism, so its A lookup matters.
    let mut zone = Zone::new()
        .a("sender.example", "192.0.2.1".parse().unwrap())
        .txt("sender.example", "v=spf1 a:spfhost.sender.example -all")
        .a("spfhost.sender.example", CLIENT.parse().unwrap())
        .txt("_dmarc.sender.example", "v=DMARC1; p=reject")
        .a("sub.sender.example", "192.0.2.1".parse().unwrap());
    for (name, value) in keys.dns() {
        zone = zone.txt(&name, &value);
    }
    zone
}

fn milter(dns: &TestDns, extra: &str) -> TestMilter {
    TestMilter::start_toml(&format!(
        "authserv_id = \"mx.example.org\"\n{extra}\n[dns]\nnameservers = [\"{}\"]\ntimeout = \"500ms\"\nattempts = 1\ncache_size = 0\n",
        dns.addr()
    ))
}

struct Outcome {
    reply: String,
    results: String,
}

async fn run(
    milter: &TestMilter,
    keys: &TestKeys,
    signed: bool,
    from: &str,
    mail_from: &str,
) -> Outcome {
    let raw = common::message(from, "faults", "body\r\n");
    let raw = if signed {
        sign(&keys.keys[0], &raw, &SignOptions::default())
    } else {
        raw
    };
    let env = Envelope {
        client_addr: format!("{CLIENT}:40000").parse().unwrap(),
        mail_from: format!("<{mail_from}>"),
        ..Envelope::inbound()
    };
    let out = drive::drive(milter.inet_addr(), &env, &raw).await;
    let reply = match &out.status {
        Status::Reject { message: Some(m) } | Status::Tempfail { message: Some(m) } => {
            m.to_string_lossy().into_owned()
        }
        Status::Continue => "accept".to_string(),
        other => format!("{other:?}"),
    };
    let results = out
        .inserted("Authentication-Results")
        .first()
        .map(|f| f.replace("\n\t", " "))
        .unwrap_or_default();
    Outcome { reply, results }
}

#[derive(Clone, Copy, Debug)]
enum Lookup {
    /// SPF record of the MAIL FROM domain (message unsigned: SPF decides).
    SpfTxt,
    /// The A lookup of SPF's a: mechanism.
    SpfA,
    /// The DKIM key (MAIL FROM elsewhere: DKIM decides).
    DkimKey,
    /// The author domain's _dmarc record.
    Dmarc,
    /// A tree-walk parent: author sub.sender.example, record at the parent.
    TreeWalkParent,
}

impl Lookup {
    fn fault_name(self) -> (&'static str, RType) {
        match self {
            Lookup::SpfTxt => ("sender.example", RType::TXT),
            Lookup::SpfA => ("spfhost.sender.example", RType::A),
            Lookup::DkimKey => ("ed._domainkey.sender.example", RType::TXT),
            Lookup::Dmarc => ("_dmarc.sender.example", RType::TXT),
            Lookup::TreeWalkParent => ("_dmarc.sender.example", RType::TXT),
        }
    }

    /// (signed, From, MAIL FROM) so that this lookup decides the verdict.
    fn message(self) -> (bool, &'static str, &'static str) {
        match self {
            Lookup::SpfTxt | Lookup::SpfA => (false, "a@sender.example", "a@sender.example"),
            Lookup::DkimKey => (true, "a@sender.example", "x@elsewhere.example"),
            Lookup::Dmarc => (true, "a@sender.example", "a@sender.example"),
            Lookup::TreeWalkParent => (true, "a@sub.sender.example", "a@sender.example"),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn fault_matrix() {
    let keys = TestKeys::new(&[("sender.example", "ed", KeyAlgorithm::Ed25519)]);
    let dns = TestDns::start(zone(&keys));
    let milter = milter(&dns, "");
    // Without faults every case passes DMARC.
    for lookup in [
        Lookup::SpfTxt,
        Lookup::DkimKey,
        Lookup::Dmarc,
        Lookup::TreeWalkParent,
    ] {
        let (signed, from, mail_from) = lookup.message();
        let o = run(&milter, &keys, signed, from, mail_from).await;
        assert_eq!(
            o.reply, "accept",
            "{lookup:?} without faults: {}",
            o.results
        );
        assert!(
            o.results.contains("dmarc=pass"),
            "{lookup:?}: {}",
            o.results
        );
    }
    let temp = "451 4.4.3 ";
    // (lookup, fault, expected reply prefix, token expected in the results field)
    let table: Vec<(Lookup, Fault, &str, &str)> = vec![
        (Lookup::SpfTxt, Fault::Timeout, temp, ""),
        (Lookup::SpfTxt, Fault::ServFail, temp, ""),
        (Lookup::SpfTxt, Fault::Refused, temp, ""),
        (Lookup::SpfTxt, Fault::Truncated, temp, ""),
        // An oversized RRset arrives over TCP: the record is found.
        (Lookup::SpfTxt, Fault::Oversized, "accept", "spf=pass"),
        // A CNAME loop is "no record" (N6): SPF none, no aligned pass.
        (Lookup::SpfTxt, Fault::CnameLoop, "550 5.7.1 ", "spf=none"),
        (Lookup::SpfA, Fault::Timeout, temp, ""),
        (Lookup::SpfA, Fault::ServFail, temp, ""),
        (Lookup::SpfA, Fault::Refused, temp, ""),
        (Lookup::SpfA, Fault::Truncated, temp, ""),
        (Lookup::DkimKey, Fault::Timeout, temp, ""),
        (Lookup::DkimKey, Fault::ServFail, temp, ""),
        (Lookup::DkimKey, Fault::Refused, temp, ""),
        (Lookup::DkimKey, Fault::Truncated, temp, ""),
        (Lookup::DkimKey, Fault::Oversized, "accept", "dkim=pass"),
        (Lookup::Dmarc, Fault::Timeout, temp, ""),
        (Lookup::Dmarc, Fault::ServFail, temp, ""),
        (Lookup::Dmarc, Fault::Refused, temp, ""),
        (Lookup::Dmarc, Fault::Truncated, temp, ""),
        (Lookup::Dmarc, Fault::Oversized, "accept", "dmarc=pass"),
        (Lookup::TreeWalkParent, Fault::Timeout, temp, ""),
        (Lookup::TreeWalkParent, Fault::ServFail, temp, ""),
        (Lookup::TreeWalkParent, Fault::Refused, temp, ""),
    ];
    let mut failures = Vec::new();
    for (lookup, fault, reply, token) in &table {
        dns.clear_faults();
        let (name, rtype) = lookup.fault_name();
        dns.set_fault_exact(name, Some(rtype), fault.clone());
        let (signed, from, mail_from) = lookup.message();
        let started = Instant::now();
        let o = run(&milter, &keys, signed, from, mail_from).await;
        let took = started.elapsed();
        let ok = o.reply.starts_with(reply) && o.results.contains(token);
        // Never a 5xx on a DNS failure that leaves the verdict open.
        let wrong_reject = *reply == temp && o.reply.starts_with('5');
        if !ok || wrong_reject {
            failures.push(format!(
                "{lookup:?} {fault:?}: got {:?} after {took:?}; results {}",
                o.reply, o.results
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test(flavor = "multi_thread")]
async fn resolver_down_then_back() {
    let keys = TestKeys::new(&[("sender.example", "ed", KeyAlgorithm::Ed25519)]);
    let dns = TestDns::start(zone(&keys));
    let addr = dns.addr();
    // Outbound signing and inbound verification in one milter.
    let timeout = Duration::from_secs(1);
    let milter = TestMilter::start_toml(&format!(
        "authserv_id = \"mx.example.org\"\n[verify]\ntime_budget = \"10s\"\nspf_time_limit = \"5s\"\n[dns]\nnameservers = [\"{addr}\"]\ntimeout = \"1s\"\nattempts = 2\ncache_size = 0\n{}",
        keys.toml()
    ));
    drop(dns);
    // dns.timeout bounds one query with all its tries (two here, the
    // default), so no lookup waits longer than it.
    // The first messages (two at once, signed: SPF, DKIM and DMARC would
    // each wait) get their 451 within one query timeout plus a second:
    // independent lookups wait side by side, and once all of a message's
    // lookups have timed out the DMARC ones are not asked.
    let started = Instant::now();
    let (a, b) = tokio::join!(
        run(&milter, &keys, true, "a@sender.example", "a@sender.example"),
        run(&milter, &keys, true, "b@sender.example", "b@sender.example")
    );
    let first = started.elapsed();
    for o in [&a, &b] {
        assert!(o.reply.starts_with("451 4.4.3 "), "{}", o.reply);
    }
    assert!(
        first < timeout + Duration::from_secs(1),
        "the first messages waited {first:?} for their 451 (dns.timeout {timeout:?})"
    );
    // The probe finds the resolver silent: later messages are answered at
    // once, each with the configured temperror action.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !milter.state.runtime().verifier.resolver_down() {
        assert!(Instant::now() < deadline, "resolver never marked down");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for _ in 0..5 {
        let started = Instant::now();
        let o = run(&milter, &keys, true, "a@sender.example", "a@sender.example").await;
        assert!(o.reply.starts_with("451 4.4.3 "), "{}", o.reply);
        assert!(
            o.results.is_empty() || o.results.contains("resolver unreachable"),
            "{}",
            o.results
        );
        assert!(
            started.elapsed() < Duration::from_millis(400),
            "waited {:?} with the resolver down",
            started.elapsed()
        );
    }
    // The metrics and the log say why.
    let metrics = milter.state.metrics().render(false, 0);
    let fast: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("rmilter_dns_resolver_down_messages_total "))
        .and_then(|n| n.parse().ok())
        .unwrap_or_default();
    assert_eq!(fast, 5, "{metrics}");
    // Signing needs no DNS.
    let out = drive::drive(
        milter.inet_addr(),
        &Envelope::authenticated("alice"),
        &common::message("alice@sender.example", "outbound", "x\r\n"),
    )
    .await;
    assert_eq!(out.inserted("DKIM-Signature").len(), 1);
    // The resolver comes back: verification resumes by itself.
    let _dns = TestDns::start_on(addr, zone(&keys));
    let deadline = Instant::now() + Duration::from_secs(10);
    while milter.state.runtime().verifier.resolver_down() {
        assert!(Instant::now() < deadline, "resolver never marked back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let o = run(&milter, &keys, true, "a@sender.example", "a@sender.example").await;
    assert_eq!(o.reply, "accept", "{}", o.results);
}

/// RELIABILITY §8 case 17: an SPF tree built for the most lookups (10
/// includes, each an MX with 10 names and an exists: macro) ends in
/// permerror, and the queries one message causes stay under the bound
/// the evaluator documents; a tree that answers slowly ends in temperror
/// inside the SPF time limit.
#[tokio::test(flavor = "multi_thread")]
async fn spf_query_budget() {
    let mut zone = Zone::new().txt("_dmarc.amplify.example", "v=DMARC1; p=reject");
    let includes: String = (0..11)
        .map(|i| format!(" include:i{i}.amplify.example"))
        .collect();
    zone = zone.txt("amplify.example", &format!("v=spf1{includes} -all"));
    for i in 0..11 {
        zone = zone.txt(
            &format!("i{i}.amplify.example"),
            &format!(
                "v=spf1 mx:m{i}.amplify.example exists:%{{l}}.%{{i}}.x{i}.amplify.example -all"
            ),
        );
        for j in 0..10 {
            zone = zone.mx(
                &format!("m{i}.amplify.example"),
                10,
                &format!("h{j}.m{i}.amplify.example"),
            );
        }
    }
    let dns = TestDns::start(zone);
    let milter = milter(&dns, "");
    dns.clear_log();
    let env = Envelope {
        client_addr: "203.0.113.5:40000".parse().unwrap(),
        mail_from: "<victim@amplify.example>".into(),
        ..Envelope::inbound()
    };
    let out = drive::drive(
        milter.inet_addr(),
        &env,
        &common::message("a@amplify.example", "amp", "x\r\n"),
    )
    .await;
    let ar = out.inserted("Authentication-Results")[0].replace("\n\t", " ");
    assert!(
        ar.contains("spf=permerror") && ar.contains("smtp.mailfrom=amplify.example"),
        "{ar}"
    );
    let bound = rmilter::verify::spf::SpfLimits::default().max_dns_queries();
    let mut names: Vec<(String, RType)> = dns
        .query_log()
        .into_iter()
        .filter(|(n, _, _)| n.ends_with("amplify.example") && !n.starts_with("_dmarc"))
        .map(|(n, t, _)| (n, t))
        .collect();
    names.sort_by(|a, b| {
        a.0.cmp(&b.0)
            .then(format!("{:?}", a.1).cmp(&format!("{:?}", b.1)))
    });
    names.dedup();
    assert!(
        names.len() as u64 <= bound,
        "{} distinct SPF queries, bound {bound}",
        names.len()
    );
    assert!(names.len() > 20, "the tree was not walked: {names:?}");

    // Every answer 2 s late, SPF time limit 3 s: temperror in time.
    dns.set_fault(
        "amplify.example",
        None,
        Fault::Delay(Duration::from_secs(2)),
    );
    let slow = TestMilter::start_toml(&format!(
        "[verify]\nspf_time_limit = \"3s\"\n[dns]\nnameservers = [\"{}\"]\ntimeout = \"5s\"\nattempts = 1\ncache_size = 0\n",
        dns.addr()
    ));
    let started = Instant::now();
    let out = drive::drive(
        slow.inet_addr(),
        &env,
        &common::message("a@amplify.example", "amp", "x\r\n"),
    )
    .await;
    let ar = out
        .inserted("Authentication-Results")
        .first()
        .map(|f| f.replace("\n\t", " "))
        .unwrap_or_default();
    assert!(ar.contains("spf=temperror"), "{ar} {:?}", out.status);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
}

/// The sender chooses the HELO and MAIL FROM names and may send no DKIM
/// signature: when only its own domain's name servers are silent, every
/// lookup of the message times out, yet the resolver works. The author
/// domain's DMARC record must still be read and applied (p=reject: 550),
/// not skipped for a temperror that `policy.temperror` could accept.
#[tokio::test(flavor = "multi_thread")]
async fn slow_sender_domains_do_not_skip_the_author_dmarc_record() {
    let keys = TestKeys::new(&[("sender.example", "ed", KeyAlgorithm::Ed25519)]);
    let dns = TestDns::start(zone(&keys));
    dns.set_fault("slow.example", None, Fault::Timeout);
    let milter = milter(&dns, "[policy]\ntemperror = \"accept\"\n");
    let raw = common::message("ceo@sender.example", "spoof", "body\r\n");
    let env = Envelope {
        client_addr: format!("{CLIENT}:40000").parse().unwrap(),
        helo: "mx.slow.example".into(),
        mail_from: "<bounce@slow.example>".into(),
        ..Envelope::inbound()
    };
    let out = drive::drive(milter.inet_addr(), &env, &raw).await;
    let results = out
        .inserted("Authentication-Results")
        .first()
        .map(|f| f.replace("\n\t", " "))
        .unwrap_or_default();
    assert!(
        matches!(out.status, Status::Reject { .. }),
        "spoof of a p=reject domain not rejected: {:?}; {results}",
        out.status
    );
    assert!(results.contains("dmarc=fail"), "{results}");
    assert!(
        dns.query_log()
            .iter()
            .any(|(name, _, _)| name == "_dmarc.sender.example"),
        "the author's DMARC record was never asked for"
    );
}
