//! Self-test of the test DNS server in `tests/common/dns.rs`, asked through mail-auth's own
//! resolver (hickory-resolver 0.26) and, for the wire details, through raw UDP and TCP queries.
//!
//! Before rmilter's DNS-failure tests can be trusted, the server itself must be shown to work:
//! TXT strings come back joined, NXDOMAIN and NODATA (also for empty non-terminals) are told
//! apart, CNAMEs are followed, every injected fault gives the client the outcome the later tests
//! rely on, within bounded time, the query log holds every query with its transport, a new zone
//! applies at once, and a stopped server can be brought back on the same address. It also prints
//! the DMARC tree walk (RFC 9989) that mail-auth makes for a long From domain.

mod common;

use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use common::dns::{Fault, OVERSIZED_TXT_LEN, RType, TestDns, Transport, Zone};
use mail_auth::dmarc::Policy;
use mail_auth::dmarc::verify::DmarcParameters;
use mail_auth::hickory_resolver::net::{DnsError as HickoryDnsError, NetError};
use mail_auth::hickory_resolver::proto::op::{Edns, Message, Query, ResponseCode};
use mail_auth::hickory_resolver::proto::rr::{Name, RData};
use mail_auth::spf::SpfOutput;
use mail_auth::{
    AuthenticatedMessage, DkimResult, DmarcResult, DnsError, Error, MessageAuthenticator, SpfResult,
};

/// The resolver timeout of most tests: long enough for a loaded CI machine, short enough that
/// the timeout tests stay quick.
const TIMEOUT: Duration = Duration::from_millis(800);

/// RFC 8463's Ed25519 example key (selector `brisbane`), split inside `p=` on purpose.
const BRISBANE_KEY: [&str; 2] = [
    "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7Ty",
    "WQHOg7hcvPapiMlrwIaaPcHURo=",
];

/// RFC 8463's example message, signed by `brisbane` (Ed25519) and `test` (RSA).
const RFC8463_MESSAGE: &str = "DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed;\r
 d=football.example.com; i=@football.example.com;\r
 q=dns/txt; s=brisbane; t=1528637909; h=from : to :\r
 subject : date : message-id : from : subject : date;\r
 bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;\r
 b=/gCrinpcQOoIfuHNQIbq4pgh9kyIK3AQUdt9OdqQehSwhEIug4D11Bus\r
 Fa3bT3FY5OsU7ZbnKELq+eXdp1Q1Dw==\r
DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed;\r
 d=football.example.com; i=@football.example.com;\r
 q=dns/txt; s=test; t=1528637909; h=from : to : subject :\r
 date : message-id : from : subject : date;\r
 bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;\r
 b=F45dVWDfMbQDGHJFlXUNB2HKfbCeLRyhDXgFpEL8GwpsRe0IeIixNTe3\r
 DhCVlUrSjV4BwcVcOF6+FF3Zo9Rpo1tFOeS9mPYQTnGdaSGsgeefOsk2Jz\r
 dA+L10TeYt9BgDfQNZtKdN1WO//KgIqXP7OdEFE4LjFYNcUxZQ4FADY+8=\r
From: Joe SixPack <joe@football.example.com>\r
To: Suzie Q <suzie@shopping.example.net>\r
Subject: Is dinner ready?\r
Date: Fri, 11 Jul 2003 21:00:37 -0700 (PDT)\r
Message-ID: <20030712040037.46341.5F8J@football.example.com>\r
\r
Hi.\r
\r
We lost the game.  Are you hungry yet?\r
\r
Joe.\r
";

/// RFC 8463's RSA key (selector `test`), as a zone-file line.
const TEST_KEY_LINE: &str = "test._domainkey.football.example.com TXT \"v=DKIM1; k=rsa; \" \"p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDkHlOQoBTzWRiGs5V6NpP3idY6Wk08a5qhdR6wy5bdOKb2jLQiY/J16JYi0Qvx/byYzCNb3W91y3FutACDfzwQ/BC/e/8uBsCR+yz1Lxj+PL6lHvqMKrM3rG4hstT5QjvHO9PzoxZyVYLzBfO2EeC3Ip3G+2kryOTIKT+l/K4w3QIDAQAB\"";

fn authenticator(dns: &TestDns) -> MessageAuthenticator {
    dns.authenticator(TIMEOUT)
}

/// The resolver's message for a lookup that got no usable answer (what rmilter maps to
/// `temperror`).
fn resolver_error(result: mail_auth::Result<Vec<u8>>) -> String {
    match result {
        Err(Error::Dns(DnsError::Resolver(message))) => message,
        other => panic!("expected a resolver error, got {other:?}"),
    }
}

fn not_found(code: ResponseCode) -> mail_auth::Result<Vec<u8>> {
    Err(Error::Dns(DnsError::RecordNotFound(code)))
}

fn entry(name: &str, rtype: RType, transport: Transport) -> (String, RType, Transport) {
    (name.to_string(), rtype, transport)
}

/// Asserts that `started` is at most `limit` ago.
fn assert_within(started: Instant, limit: Duration, what: &str) {
    let elapsed = started.elapsed();
    assert!(elapsed <= limit, "{what} took {elapsed:?}, limit {limit:?}");
}

#[tokio::test]
async fn txt_strings_come_back_joined() {
    let long = "v=spf1 ".to_string() + &"ip4:192.0.2.1 ".repeat(40) + "-all";
    assert!(long.len() > 510, "the value needs three strings");
    let zone = Zone::from_zone_file_lines(TEST_KEY_LINE)
        .txt("long.example.com", &long)
        .txt_strings("split.example.com", &["abc", "", "def"])
        .txt_strings("brisbane._domainkey.football.example.com", &BRISBANE_KEY);
    let dns = TestDns::start(zone);
    let auth = authenticator(&dns);

    assert_eq!(
        auth.txt_raw_lookup("long.example.com").await.unwrap(),
        long.as_bytes()
    );
    assert_eq!(
        auth.txt_raw_lookup("split.example.com").await.unwrap(),
        b"abcdef"
    );

    // DKIM keys split into strings (one inside p=) verify RFC 8463's message.
    let message = AuthenticatedMessage::parse(RFC8463_MESSAGE.as_bytes()).expect("parse");
    let outcomes: Vec<(String, DkimResult)> = auth
        .verify_dkim(&message)
        .await
        .iter()
        .map(|output| {
            let selector = output.signature().map(|s| s.s.clone()).unwrap_or_default();
            (selector, output.result().clone())
        })
        .collect();
    assert_eq!(
        outcomes,
        vec![
            ("brisbane".to_string(), DkimResult::Pass),
            ("test".to_string(), DkimResult::Pass)
        ]
    );
}

#[tokio::test]
async fn nxdomain_and_nodata_are_told_apart() {
    let zone = Zone::new()
        .txt("s._domainkey.example.com", "v=DKIM1; p=")
        .a("host.example.com", "192.0.2.1".parse().unwrap());
    let dns = TestDns::start(zone);
    let auth = authenticator(&dns);

    // As mail-auth reports them.
    assert_eq!(
        auth.txt_raw_lookup("missing.example.com").await,
        not_found(ResponseCode::NXDomain)
    );
    assert_eq!(
        auth.txt_raw_lookup("nothing.invalid").await,
        not_found(ResponseCode::NXDomain)
    );
    assert_eq!(
        auth.txt_raw_lookup("host.example.com").await,
        not_found(ResponseCode::NoError),
        "a name with other types is NODATA"
    );
    assert_eq!(
        auth.txt_raw_lookup("_domainkey.example.com").await,
        not_found(ResponseCode::NoError),
        "an empty non-terminal is NODATA"
    );
    assert_eq!(
        auth.txt_raw_lookup("example.com").await,
        not_found(ResponseCode::NoError)
    );
    assert_eq!(
        auth.txt_raw_lookup("com").await,
        not_found(ResponseCode::NoError)
    );
    assert_eq!(
        auth.txt_raw_lookup("S._DomainKey.EXAMPLE.com")
            .await
            .unwrap(),
        b"v=DKIM1; p=",
        "names are case-insensitive"
    );

    // As hickory reports them: the root SOA comes with both, its minimum is the negative TTL.
    for (name, code) in [
        ("missing.example.com.", ResponseCode::NXDomain),
        ("_domainkey.example.com.", ResponseCode::NoError),
    ] {
        match auth.resolver().lookup(name, RType::TXT).await {
            Err(NetError::Dns(HickoryDnsError::NoRecordsFound(no_records))) => {
                assert_eq!(no_records.response_code, code, "{name}");
                let soa = no_records.soa.expect("SOA in the authority section");
                assert_eq!(soa.name, Name::root());
                assert_eq!(no_records.negative_ttl, Some(common::dns::NEGATIVE_TTL));
            }
            other => panic!("{name}: expected no records, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn cnames_are_followed_and_loops_end() {
    let zone = Zone::new()
        .cname("alias.example.com", "middle.example.org")
        .cname("middle.example.org", "target.example.net")
        .txt("target.example.net", "v=spf1 -all")
        .cname("dangling.example.com", "gone.example.com")
        .cname("ping.example.com", "pong.example.com")
        .cname("pong.example.com", "ping.example.com");
    let dns = TestDns::start(zone);
    let auth = authenticator(&dns);

    assert_eq!(
        auth.txt_raw_lookup("alias.example.com").await.unwrap(),
        b"v=spf1 -all"
    );
    assert_eq!(
        auth.txt_raw_lookup("dangling.example.com").await,
        not_found(ResponseCode::NXDomain),
        "the code is the chain's last name's (RFC 6604)"
    );
    // A loop inside the zone and an injected one both end quickly as "no record".
    let started = Instant::now();
    assert_eq!(
        auth.txt_raw_lookup("ping.example.com").await,
        not_found(ResponseCode::NoError)
    );
    dns.set_fault("loop.example.com", None, Fault::CnameLoop);
    assert_eq!(
        auth.txt_raw_lookup("loop.example.com").await,
        not_found(ResponseCode::NoError)
    );
    assert_within(started, TIMEOUT, "two CNAME loops");
    println!("CNAME loop queries: {:?}", dns.query_log());
}

#[tokio::test]
async fn timeout_fails_within_the_resolver_timeout() {
    let dns = TestDns::start(Zone::new().txt("ok.example.com", "fine"));
    dns.set_fault("slow.example.com", None, Fault::Timeout);
    let auth = authenticator(&dns);

    let started = Instant::now();
    let message = resolver_error(auth.txt_raw_lookup("slow.example.com").await);
    let elapsed = started.elapsed();
    assert!(message.contains("timed out"), "{message}");
    assert!(
        elapsed >= TIMEOUT - Duration::from_millis(50),
        "{elapsed:?}"
    );
    assert!(
        elapsed <= TIMEOUT + Duration::from_millis(500),
        "{elapsed:?}"
    );
    // Only the faulty name is affected, and the server still answers.
    assert_eq!(
        auth.txt_raw_lookup("ok.example.com").await.unwrap(),
        b"fine"
    );
}

#[tokio::test]
async fn delay_answers_late() {
    let dns = TestDns::start(Zone::new().txt("late.example.com", "eventually"));
    let auth = authenticator(&dns);

    dns.set_fault(
        "late.example.com",
        None,
        Fault::Delay(Duration::from_millis(300)),
    );
    let started = Instant::now();
    assert_eq!(
        auth.txt_raw_lookup("late.example.com").await.unwrap(),
        b"eventually"
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_within(started, TIMEOUT, "a 300 ms delay");

    // A delay past the timeout is a timeout; the late answer does not confuse the next query.
    dns.set_fault("late.example.com", None, Fault::Delay(TIMEOUT * 2));
    let started = Instant::now();
    let message = resolver_error(auth.txt_raw_lookup("late.example.com").await);
    assert!(message.contains("timed out"), "{message}");
    assert_within(
        started,
        TIMEOUT + Duration::from_millis(500),
        "a delay past the timeout",
    );
    dns.clear_faults();
    assert_eq!(
        auth.txt_raw_lookup("late.example.com").await.unwrap(),
        b"eventually"
    );
}

#[tokio::test]
async fn servfail_and_refused_are_errors() {
    let dns = TestDns::start(
        Zone::new()
            .txt("a.example.com", "x")
            .txt("b.example.com", "y"),
    );
    dns.set_fault("a.example.com", None, Fault::ServFail);
    dns.set_fault("b.example.com", Some(RType::TXT), Fault::Refused);
    let auth = authenticator(&dns);

    let started = Instant::now();
    let message = resolver_error(auth.txt_raw_lookup("a.example.com").await);
    assert!(message.contains("Server Failure"), "{message}");
    let message = resolver_error(auth.txt_raw_lookup("b.example.com").await);
    assert!(message.contains("Refused"), "{message}");
    assert_within(started, TIMEOUT, "two error answers");
    // One query each: the test resolver does not retry.
    assert_eq!(
        dns.query_log(),
        vec![
            entry("a.example.com", RType::TXT, Transport::Udp),
            entry("b.example.com", RType::TXT, Transport::Udp),
        ]
    );
    // The REFUSED fault is for TXT only: an A query gets the zone's NODATA.
    assert!(matches!(
        auth.ipv4_lookup("b.example.com", None::<&mail_auth::NoCache>)
            .await,
        Err(Error::Dns(DnsError::RecordNotFound(ResponseCode::NoError)))
    ));
}

#[tokio::test]
async fn oversized_answer_arrives_over_tcp() {
    let dns = TestDns::start(Zone::new().txt("big.example.com", "v=spf1 -all"));
    dns.set_fault("big.example.com", Some(RType::TXT), Fault::Oversized);
    let auth = authenticator(&dns);

    let answer = auth.txt_raw_lookup("big.example.com").await.unwrap();
    assert_eq!(answer.len(), "v=spf1 -all".len() + OVERSIZED_TXT_LEN);
    assert!(answer.starts_with(b"v=spf1 -all"));
    assert_eq!(
        dns.query_log(),
        vec![
            entry("big.example.com", RType::TXT, Transport::Udp),
            entry("big.example.com", RType::TXT, Transport::Tcp),
        ]
    );
}

#[tokio::test]
async fn truncation_without_tcp_is_an_error() {
    let dns = TestDns::start(Zone::new().txt("tc.example.com", "v=spf1 -all"));
    dns.set_fault("tc.example.com", None, Fault::Truncated);
    let auth = authenticator(&dns);

    let started = Instant::now();
    let message = resolver_error(auth.txt_raw_lookup("tc.example.com").await);
    assert!(message.contains("truncated"), "{message}");
    assert_within(started, TIMEOUT, "TC=1 and a closed TCP connection");
    assert_eq!(
        dns.query_log(),
        vec![
            entry("tc.example.com", RType::TXT, Transport::Udp),
            entry("tc.example.com", RType::TXT, Transport::Tcp),
        ]
    );
}

#[tokio::test]
async fn faults_match_a_name_and_the_names_below_it() {
    let zone = Zone::new()
        .txt("example.net", "apex")
        .txt("a.b.example.net", "deep")
        .txt("example.network", "other")
        .txt("notexample.net", "other");
    let dns = TestDns::start(zone);
    let auth = authenticator(&dns);

    dns.set_fault("Example.NET.", None, Fault::ServFail);
    for name in ["example.net", "a.b.example.net", "missing.example.net"] {
        resolver_error(auth.txt_raw_lookup(name).await);
    }
    for name in ["example.network", "notexample.net"] {
        assert_eq!(auth.txt_raw_lookup(name).await.unwrap(), b"other", "{name}");
    }
    // The fault set last wins; "" covers every name.
    dns.set_fault("", None, Fault::Refused);
    assert!(resolver_error(auth.txt_raw_lookup("example.network").await).contains("Refused"));
    dns.set_fault("a.b.example.net", None, Fault::Delay(Duration::ZERO));
    assert_eq!(
        auth.txt_raw_lookup("a.b.example.net").await.unwrap(),
        b"deep"
    );
    dns.clear_faults();
    assert_eq!(auth.txt_raw_lookup("example.net").await.unwrap(), b"apex");
}

#[tokio::test]
async fn query_log_records_names_types_and_transports() {
    let zone = Zone::new()
        .a("mx.example.com", "192.0.2.25".parse().unwrap())
        .mx("example.com", 10, "mx.example.com")
        .txt("big.example.com", &"x".repeat(1000));
    let dns = TestDns::start(zone);
    let auth = authenticator(&dns);

    let mx = auth
        .mx_lookup("Example.COM", None::<&mail_auth::NoCache>)
        .await
        .unwrap();
    assert_eq!(mx.records[0].exchanges.as_ref(), ["mx.example.com.".into()]);
    let ips = auth
        .ipv4_lookup("MX.example.com.", None::<&mail_auth::NoCache>)
        .await
        .unwrap();
    assert_eq!(
        ips.records.as_ref(),
        [std::net::Ipv4Addr::new(192, 0, 2, 25)]
    );
    // 1000 bytes fit the resolver's EDNS size (1232): no TCP needed.
    assert_eq!(
        auth.txt_raw_lookup("big.example.com").await.unwrap().len(),
        1000
    );
    assert_eq!(
        dns.query_log(),
        vec![
            entry("example.com", RType::MX, Transport::Udp),
            entry("mx.example.com", RType::A, Transport::Udp),
            entry("big.example.com", RType::TXT, Transport::Udp),
        ]
    );
    dns.clear_log();
    assert!(dns.query_log().is_empty());
}

#[tokio::test]
async fn set_zone_takes_effect_at_once() {
    let dns = TestDns::start(Zone::new());
    let auth = authenticator(&dns);
    let name = "new._domainkey.example.com";

    assert_eq!(
        auth.txt_raw_lookup(name).await,
        not_found(ResponseCode::NXDomain)
    );
    dns.set_zone(Zone::new().txt(name, "v=DKIM1; k=ed25519; p=new"));
    assert_eq!(
        auth.txt_raw_lookup(name).await.unwrap(),
        b"v=DKIM1; k=ed25519; p=new"
    );
    dns.set_zone(Zone::new());
    assert_eq!(
        auth.txt_raw_lookup(name).await,
        not_found(ResponseCode::NXDomain)
    );
}

#[tokio::test]
async fn a_stopped_server_can_come_back_on_the_same_address() {
    let dns = TestDns::start(Zone::new().txt("up.example.com", "yes"));
    let auth = authenticator(&dns);
    assert_eq!(auth.txt_raw_lookup("up.example.com").await.unwrap(), b"yes");
    let addr = dns.addr();
    dns.stop();

    let started = Instant::now();
    resolver_error(auth.txt_raw_lookup("up.example.com").await);
    assert_within(
        started,
        TIMEOUT + Duration::from_millis(500),
        "a lookup at a stopped server",
    );

    let dns = TestDns::start_on(addr, Zone::new().txt("up.example.com", "again"));
    assert_eq!(dns.addr(), addr);
    assert_eq!(
        auth.txt_raw_lookup("up.example.com").await.unwrap(),
        b"again"
    );
}

#[test]
fn zone_file_lines_are_read() {
    let zone = Zone::from_zone_file_lines(
        "; SPF test data
         example.com TXT v=spf1 mx -all
         quoted.example.com txt \"v=spf1 \" \"-all\" \"\\\"\\065\"
         example.com MX 10 mx.example.com
         mx.example.com A 192.0.2.1
         mx.example.com AAAA 2001:db8::1
         1.2.0.192.in-addr.arpa PTR mx.example.com
         www.example.com CNAME example.com
         # comment",
    );
    let dns = TestDns::start(zone);
    let strings = |message: &Message| -> Vec<Vec<u8>> {
        message
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::TXT(txt) => Some(txt.txt_data.iter().map(|s| s.to_vec()).collect()),
                _ => None,
            })
            .flat_map(|v: Vec<Vec<u8>>| v)
            .collect()
    };
    let answer = udp_query(dns.addr(), "quoted.example.com", RType::TXT, None);
    assert_eq!(
        strings(&answer),
        vec![b"v=spf1 ".to_vec(), b"-all".to_vec(), b"\"A".to_vec()]
    );
    let answer = udp_query(dns.addr(), "example.com", RType::TXT, None);
    assert_eq!(strings(&answer), vec![b"v=spf1 mx -all".to_vec()]);
    for (name, rtype) in [
        ("example.com", RType::MX),
        ("mx.example.com", RType::A),
        ("mx.example.com", RType::AAAA),
        ("1.2.0.192.in-addr.arpa", RType::PTR),
    ] {
        let answer = udp_query(dns.addr(), name, rtype, None);
        assert_eq!(answer.answers.len(), 1, "{name} {rtype}");
        assert_eq!(answer.answers[0].record_type(), rtype);
    }
    // A CNAME is followed inside the zone: the answer holds the CNAME and the target's TXT.
    let answer = udp_query(dns.addr(), "www.example.com", RType::TXT, None);
    let types: Vec<RType> = answer.answers.iter().map(|r| r.record_type()).collect();
    assert_eq!(types, [RType::CNAME, RType::TXT]);
}

/// Wire details the resolver hides: AA, EDNS, the question echoed, TC at the client's size.
#[test]
fn wire_answers_are_authoritative_and_honour_the_udp_size() {
    let dns = TestDns::start(
        Zone::new()
            .txt("s._domainkey.example.com", &"k".repeat(1000))
            .a("host.example.com", "192.0.2.1".parse().unwrap()),
    );
    let addr = dns.addr();

    let answer = udp_query(addr, "Host.Example.COM", RType::A, Some((1232, 0)));
    assert!(answer.authoritative);
    assert!(!answer.truncation);
    assert_eq!(answer.response_code, ResponseCode::NoError);
    assert_eq!(answer.queries[0].name().to_ascii(), "Host.Example.COM.");
    assert_eq!(answer.answers.len(), 1);
    let edns = answer.edns.as_ref().expect("EDNS answered with EDNS");
    assert_eq!(edns.version(), 0);
    assert!(edns.max_payload() >= 1232);

    // Without EDNS nothing is added; NODATA for the empty non-terminal carries the root SOA.
    let answer = udp_query(addr, "_domainkey.example.com", RType::TXT, None);
    assert!(answer.edns.is_none());
    assert!(answer.authoritative);
    assert_eq!(answer.response_code, ResponseCode::NoError);
    assert!(answer.answers.is_empty());
    assert_eq!(answer.authorities[0].record_type(), RType::SOA);
    let answer = udp_query(addr, "nothing.example.com", RType::TXT, None);
    assert_eq!(answer.response_code, ResponseCode::NXDomain);
    assert_eq!(answer.authorities[0].record_type(), RType::SOA);

    // 1000 bytes of TXT: over 512 without EDNS, so TC=1 and no records; fine with EDNS 4096
    // and over TCP.
    let answer = udp_query(addr, "s._domainkey.example.com", RType::TXT, None);
    assert!(answer.truncation);
    assert!(answer.answers.is_empty());
    let answer = udp_query(
        addr,
        "s._domainkey.example.com",
        RType::TXT,
        Some((4096, 0)),
    );
    assert!(!answer.truncation);
    assert_eq!(answer.answers.len(), 1);
    let RData::TXT(txt) = &answer.answers[0].data else {
        panic!("not TXT: {answer:?}");
    };
    let lengths: Vec<usize> = txt.txt_data.iter().map(|s| s.len()).collect();
    assert_eq!(
        lengths,
        [255, 255, 255, 235],
        "Zone::txt splits at 255 bytes"
    );
    let answer = tcp_query(addr, "s._domainkey.example.com", RType::TXT);
    assert!(!answer.truncation);
    assert_eq!(answer.answers.len(), 1);

    // An unknown EDNS version gets BADVERS (16; hickory decodes 16 as its twin BADSIG).
    let answer = udp_query(addr, "host.example.com", RType::A, Some((1232, 1)));
    assert_eq!(u16::from(answer.response_code), 16);

    let log = dns.query_log();
    assert_eq!(log.len(), 7);
    assert_eq!(log[0], entry("host.example.com", RType::A, Transport::Udp));
    assert_eq!(
        log[5],
        entry("s._domainkey.example.com", RType::TXT, Transport::Tcp)
    );
    assert_eq!(log[6], entry("host.example.com", RType::A, Transport::Udp));
}

/// mail-auth's DMARC discovery for a long From domain without any record: the RFC 9989 tree
/// walk, printed for later tests, and answered fast.
#[tokio::test]
async fn dmarc_tree_walk_for_a_long_name() {
    let domain = "a.b.c.d.e.f.g.h.mail.example.com";
    let dns = TestDns::start(Zone::new());
    let auth = authenticator(&dns);
    let raw = format!(
        "From: <user@{domain}>\r\nTo: <bob@example.org>\r\nSubject: walk\r\n\
         Message-ID: <walk@{domain}>\r\n\r\nHello\r\n"
    );
    let message = AuthenticatedMessage::parse(raw.as_bytes()).expect("parse");
    let spf = SpfOutput::new(domain.to_string()).with_result(SpfResult::None);

    let started = Instant::now();
    let output = auth
        .verify_dmarc(DmarcParameters::new(&message, &[], domain, &spf))
        .await;
    assert_within(started, TIMEOUT, "the tree walk");
    assert_eq!(output.result(), DmarcResult::None);
    let walk = dns.query_log();
    println!("DMARC tree walk for {domain}:");
    for (name, rtype, transport) in &walk {
        println!("  {name} {rtype} {transport:?}");
    }
    assert_eq!(
        walk[0],
        entry(&format!("_dmarc.{domain}"), RType::TXT, Transport::Udp)
    );
    assert!(walk.len() <= 8, "at most 8 queries");
    assert!(walk.iter().all(|(name, _, _)| name.starts_with("_dmarc.")));

    // With a record at the organisational domain the walk finds it.
    dns.set_zone(Zone::new().txt("_dmarc.example.com", "v=DMARC1; p=reject"));
    let output = auth
        .verify_dmarc(DmarcParameters::new(&message, &[], domain, &spf))
        .await;
    assert!(matches!(output.result(), DmarcResult::Fail(_)));
    assert_eq!(output.policy(), Policy::Reject);
}

/// One query over UDP; `edns` is (payload size, version).
fn udp_query(addr: SocketAddr, name: &str, rtype: RType, edns: Option<(u16, u8)>) -> Message {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    socket
        .send_to(&query_bytes(name, rtype, edns), addr)
        .expect("send");
    let mut buf = vec![0u8; 65535];
    let (len, _) = socket.recv_from(&mut buf).expect("an answer within 2 s");
    Message::from_vec(&buf[..len]).expect("decode")
}

/// One query over TCP.
fn tcp_query(addr: SocketAddr, name: &str, rtype: RType) -> Message {
    use std::io::{Read, Write};
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let query = query_bytes(name, rtype, None);
    let mut frame = (query.len() as u16).to_be_bytes().to_vec();
    frame.extend_from_slice(&query);
    stream.write_all(&frame).expect("send");
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).expect("an answer within 2 s");
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut buf).expect("the whole answer");
    Message::from_vec(&buf).expect("decode")
}

fn query_bytes(name: &str, rtype: RType, edns: Option<(u16, u8)>) -> Vec<u8> {
    let mut query = Message::query();
    query.add_query(Query::query(
        Name::from_ascii(format!("{name}.")).unwrap(),
        rtype,
    ));
    if let Some((payload, version)) = edns {
        let mut opt = Edns::new();
        opt.set_max_payload(payload);
        opt.set_version(version);
        query.set_edns(opt);
    }
    query.to_vec().expect("encode")
}
