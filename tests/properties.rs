//! Property tests (proptest) for rmilter's parsers and writers: the same
//! properties the cargo-fuzz targets under `fuzz/` check, through the same
//! code (`tests/properties/checks.rs`), on generated inputs and on every
//! file of the fuzz seed and regression corpus (`fuzz/corpus/`). Bounded to
//! a few seconds in all; the RNG seed is fixed so a run reproduces
//! (`PROPTEST_RNG_SEED=N` explores another one).

#[path = "properties/checks.rs"]
mod checks;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};
use rmilter::verify::DmarcStatus;
use rmilter::verify::authres::ResInfo;
use std::path::Path;

fn config(cases: u32) -> Config {
    let seed = std::env::var("PROPTEST_RNG_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_2026);
    Config {
        cases,
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(seed),
        ..Config::default()
    }
}

/// Bytes as they occur in header fields, with the characters parsers trip
/// on (angle brackets, quotes, comments, quoted-pairs, folding, encoded
/// words, non-ASCII) over-represented, and now and then any byte.
fn mailish(max: usize) -> impl Strategy<Value = Vec<u8>> {
    const ALPHABET: &[u8] = b"aAzZ09.-_@<>\"()[],;:\\ \t\r\n=?%{}/+!~'";
    const WORDS: &[&[u8]] = &[
        b"example.com",
        b"victim.example",
        b"attack.example",
        b"a@example.com",
        b"<b@victim.example>",
        b"=?utf-8?B?YkB2aWN0aW0uZXhhbXBsZQ==?=",
        b"=?iso-8859-1?Q?a=40b?=",
        b"\xef\xbc\xa0",
        b"\xc3\xa9",
        b"\n ",
        b"\r\n\t",
        b"\"q\\\"x\"",
        b"(c (n) @x.example)",
        b"undisclosed:;",
    ];
    proptest::collection::vec(
        prop_oneof![
            6 => proptest::sample::select(ALPHABET).prop_map(|b| vec![b]),
            3 => proptest::sample::select(WORDS).prop_map(<[u8]>::to_vec),
            1 => any::<u8>().prop_map(|b| vec![b]),
        ],
        0..max,
    )
    .prop_map(|parts| parts.concat())
}

fn field_name() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => proptest::sample::select(&[
            "From", "from", "FROM", "From ", "From\t", "Fr om", "Sender", "To", "Subject",
            "Reply-To", "DKIM-Signature", "Authentication-Results", "X-From",
        ][..])
        .prop_map(|s| s.as_bytes().to_vec()),
        1 => mailish(12),
    ]
}

fn fields(max: usize) -> impl Strategy<Value = Vec<(Vec<u8>, Vec<u8>)>> {
    proptest::collection::vec((field_name(), mailish(60)), 0..max)
}

fn as_refs(fields: &[(Vec<u8>, Vec<u8>)]) -> Vec<(&[u8], &[u8])> {
    fields.iter().map(|(n, v)| (&n[..], &v[..])).collect()
}

/// The repository's own test messages (the From-gate and
/// Authentication-Results corpora), as mutation seeds.
fn corpus_messages() -> Vec<Vec<u8>> {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut out = Vec::new();
    for dir in ["from-gate", "results"] {
        let mut files: Vec<_> = std::fs::read_dir(base.join(dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "eml"))
            .collect();
        files.sort();
        out.extend(files.iter().map(|p| std::fs::read(p).unwrap()));
    }
    out
}

/// A corpus message with a few bytes replaced, inserted or removed.
fn mutated_message() -> impl Strategy<Value = Vec<u8>> {
    let seeds = corpus_messages();
    let n = seeds.len();
    (
        0..n,
        proptest::collection::vec((any::<prop::sample::Index>(), 0u8..3, mailish(3)), 0..6),
    )
        .prop_map(move |(i, edits)| {
            let mut m = seeds[i].clone();
            for (at, kind, bytes) in edits {
                let pos = at.index(m.len() + 1);
                match kind {
                    0 => {
                        m.splice(pos..pos, bytes);
                    }
                    1 if pos < m.len() => {
                        m.remove(pos);
                    }
                    _ if pos < m.len() => m[pos] = bytes.first().copied().unwrap_or(b' '),
                    _ => {}
                }
            }
            m
        })
}

/// Every file of the fuzz corpus (seeds and crash regressions) through its
/// target's check, so CI replays what the fuzzers found without nightly;
/// and the seeds are not vacuous: enough of them reach the code under test.
#[test]
fn fuzz_corpus_replays() {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    for (target, run) in checks::TARGETS {
        let dir = base.join(target);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        let mut reached = 0;
        for file in &files {
            let data = std::fs::read(file).unwrap();
            match std::panic::catch_unwind(|| run(&data)) {
                Ok(deep) => reached += usize::from(deep),
                Err(_) => panic!("{target}: {} fails", file.display()),
            }
        }
        assert!(
            reached * 5 >= files.len() && reached > 0,
            "{target}: only {reached} of {} seeds reach the code under test",
            files.len()
        );
    }
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn from_gate_on_generated_fields(fields in fields(5)) {
        checks::from_gate(&as_refs(&fields));
    }

    #[test]
    fn from_gate_on_mutated_corpus(message in mutated_message()) {
        let (fields, _) = checks::milter_message(&message);
        checks::from_gate(&as_refs(&fields));
    }

    #[test]
    fn header_section_round_trips(fields in fields(6), leading in any::<bool>(), body in mailish(20)) {
        checks::header_assembly(&as_refs(&fields), leading, &body);
    }

    #[test]
    fn authserv_id_reader_is_bounded(value in mailish(80)) {
        checks::authserv_id_reader(&value);
    }

    #[test]
    fn authserv_id_reads_back(id in authserv_id(), rest in mailish(40), cfws in prop_oneof![Just(""), Just(" "), Just("\n\t(x (y)) ")]) {
        prop_assert!(checks::config_accepts_id(&id), "config refuses {id:?}");
        let value = format!(" {cfws}{id};{}", String::from_utf8_lossy(&rest));
        prop_assert_eq!(
            rmilter::verify::authres::authserv_id(value.as_bytes()),
            Some(id.to_ascii_lowercase())
        );
    }

    #[test]
    fn dkim_signature_prefilter(message in dkim_message(), max in 0usize..4) {
        checks::dkim_message(&message, max);
    }

    #[test]
    fn dkim_signature_prefilter_on_mutated_corpus(message in mutated_message(), max in 0usize..4) {
        checks::dkim_message(&message, max);
    }

    #[test]
    fn dkim_key_records(record in key_record()) {
        checks::dkim_key_record(&record);
    }

    #[test]
    fn dmarc_records(record in dmarc_record()) {
        checks::dmarc_record(&record);
    }
}

proptest! {
    #![proptest_config(config(128))]

    #[test]
    fn authres_writer_round_trips(id in authserv_id(), results in results()) {
        checks::authres_render(&id, &results);
    }

    #[test]
    fn results_field_is_one_field(texts in proptest::collection::vec(text(), 13), status in 0usize..5) {
        let status = [
            DmarcStatus::Pass,
            DmarcStatus::Fail,
            DmarcStatus::TempError,
            DmarcStatus::PermError,
            DmarcStatus::None,
        ][status];
        let (verdict, author) = checks::verdict_from(&texts, None, status);
        checks::results_field(&verdict, &author);
    }

    #[test]
    fn spf_over_generated_zones(zone in spf_zone()) {
        checks::spf_zone(zone.as_bytes());
    }

    #[test]
    fn config_text_loads_or_errs(text in config_text()) {
        checks::config_text(&text);
    }
}

proptest! {
    #![proptest_config(config(32))]

    #[test]
    fn signer_whole_equals_chunked(
        extra in proptest::collection::vec((field_name(), mailish(30)), 0..4),
        body in body(),
        splits in proptest::collection::vec(0usize..80, 0..8),
        flags in any::<u8>(),
        from in proptest::sample::select(&["From", "from", "FROM", "From ", "From\t"][..]),
    ) {
        let mut fields = vec![(from.as_bytes().to_vec(), b" a@example.com".to_vec())];
        fields.extend(extra.into_iter().filter(|(n, _)| {
            !n.iter().filter(|b| !b.is_ascii_whitespace()).eq(b"from".iter()) && !n.eq_ignore_ascii_case(b"from")
        }));
        checks::signer_whole_vs_chunked(&as_refs(&fields), &body, &splits, flags);
    }
}

fn authserv_id() -> impl Strategy<Value = String> {
    // RFC 8601 token characters the configuration accepts.
    const OK: &[u8] = b"abcxyzABCXYZ0189.-_!#$%&'*+^`{|}~";
    proptest::collection::vec(proptest::sample::select(OK), 1..40)
        .prop_map(|v| String::from_utf8(v).unwrap())
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        mailish(40).prop_map(|v| String::from_utf8_lossy(&v).into_owned()),
        any::<String>(),
        Just("example.com".to_string()),
    ]
}

fn results() -> impl Strategy<Value = Vec<ResInfo>> {
    let one = (
        proptest::sample::select(checks::METHODS),
        proptest::sample::select(checks::RESULTS),
        proptest::option::of(text()),
        proptest::collection::vec((proptest::sample::select(checks::PROPS), text()), 0..4),
    )
        .prop_map(|(method, result, comment, props)| {
            let mut info = ResInfo::new(method, result);
            if let Some(c) = comment {
                info = info.comment(c);
            }
            for (name, value) in props {
                info = info.prop(name, value);
            }
            info
        });
    proptest::collection::vec(one, 0..6)
}

/// Tag lists: each element one of `good` or `bad`, or mailish noise.
fn tags(good: &'static [&'static str], max: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            6 => proptest::sample::select(good).prop_map(str::to_string),
            1 => mailish(12).prop_map(|v| String::from_utf8_lossy(&v).into_owned()),
        ],
        0..max,
    )
    .prop_map(|t| t.join("; "))
}

fn dkim_message() -> impl Strategy<Value = Vec<u8>> {
    const SIG_TAGS: &[&str] = &[
        "v=1",
        "v=2",
        "a=rsa-sha256",
        "a=rsa-sha1",
        "a=ed25519-sha256",
        "a=x",
        "d=example.com",
        "d=sub.example.com",
        "d=other.example",
        "d=ex ample.com",
        "d=exa\"mple.com",
        "d=",
        "s=sel",
        "s=a.b_c",
        "s=../x",
        "h=from:to",
        "h=to:subject",
        "h=From",
        "l=10",
        "l=0",
        "c=relaxed/simple",
        "c=simple",
        "t=1",
        "x=2",
        "bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=",
        "b=dGVzdA==",
        "i=@example.com",
        "z=From:a|To:b",
    ];
    (
        proptest::sample::select(
            &[
                " a@example.com",
                " b@sub.example.com",
                " <c@other.example>",
                " x, y",
            ][..],
        ),
        proptest::collection::vec(tags(SIG_TAGS, 12), 0..6),
        mailish(30),
    )
        .prop_map(|(from, sigs, body)| {
            let mut m = format!("From:{from}\r\n");
            for s in sigs {
                m.push_str(&format!("DKIM-Signature: {s}\r\n"));
            }
            m.push_str("Subject: test\r\n\r\n");
            let mut m = m.into_bytes();
            m.extend_from_slice(&body);
            m
        })
}

fn key_record() -> impl Strategy<Value = Vec<u8>> {
    const KEY_TAGS: &[&str] = &[
        "v=DKIM1",
        "v=DKIM2",
        "k=rsa",
        "k=ed25519",
        "k=x",
        "h=sha256",
        "t=y",
        "t=s",
        "s=email",
        "n=note",
        "p=",
        "p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=",
        "p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDwIRP/UC3SBsEmGqZ9ZJW3/DkMoGeLnQg1fWn7/zYtIxN2SnFCjxOCKG9v3b4jYfcTNh5ijSsq631uBItLa7od+v/RtdC2UzJ1lWT947qR+Rcac2gbto/NMqJ0fzfVjH4OuKhitdY9tf6mcwGjaNBcWToIMmPSPDdQPNUYckcQ2QIDAQAB",
        "p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA",
        "p=AAAA",
    ];
    prop_oneof![
        tags(KEY_TAGS, 6).prop_map(String::into_bytes),
        mailish(60),
        proptest::collection::vec(any::<u8>(), 0..300),
    ]
}

fn dmarc_record() -> impl Strategy<Value = Vec<u8>> {
    const DMARC_TAGS: &[&str] = &[
        "v=DMARC1",
        "v=DMARC2",
        "p=reject",
        "p=quarantine",
        "p=none",
        "p=REJECT",
        "p=x",
        "sp=reject",
        "sp=none",
        "np=quarantine",
        "adkim=s",
        "adkim=r",
        "aspf=s",
        "aspf=x",
        "pct=0",
        "pct=50",
        "pct=100",
        "pct=101",
        "pct=-1",
        "t=y",
        "t=n",
        "psd=y",
        "psd=u",
        "fo=1",
        "fo=d:s",
        "rua=mailto:dmarc@example.com",
        "rua=mailto:a@example.com!10m,mailto:b@example.org",
        "ruf=mailto:f@example.com",
        "ri=86400",
        "rf=afrf",
    ];
    tags(DMARC_TAGS, 8).prop_map(String::into_bytes)
}

fn spf_zone() -> impl Strategy<Value = String> {
    const TERMS: &[&str] = &[
        "v=spf1",
        "v=spf1",
        "-all",
        "~all",
        "?all",
        "+all",
        "a",
        "mx",
        "ptr",
        "a/24",
        "a//64",
        "mx:b.example.com",
        "ip4:192.0.2.0/24",
        "ip4:192.0.2.1",
        "ip4:192.0.2.0/33",
        "ip6:2001:db8::/32",
        "ip6:::1",
        "include:a.example.com",
        "include:b.example.com",
        "include:loop.example.com",
        "include:none.example.com",
        "redirect=b.example.com",
        "redirect=%{d}",
        "exp=explain.example.com",
        "exists:%{i}.example.com",
        "exists:%{ir}.%{v}._spf.%{d2}",
        "exists:%{l1r-}.%{o}",
        "a:%{d}",
        "mx:%{o}/24",
        "ptr:%{h}",
        "include:%{s}",
        "exists:%{p}.example.com",
        "a:%{x}",
        "a:%",
        "a:%{",
        "a:.%{d}.",
        "unknown=value",
        "-ip4:0.0.0.0/0",
    ];
    const NAMES: &[&str] = &[
        "example.com",
        "a.example.com",
        "b.example.com",
        "loop.example.com",
        "mx.example.com",
    ];
    let record =
        proptest::collection::vec(proptest::sample::select(TERMS), 0..10).prop_map(|t| t.join(" "));
    let line = prop_oneof![
        4 => (proptest::sample::select(NAMES), record).prop_map(|(n, r)| format!("{n} TXT {r}")),
        2 => (proptest::sample::select(NAMES), any::<[u8; 4]>())
            .prop_map(|(n, ip)| format!("{n} A {}.{}.{}.{}", ip[0], ip[1], ip[2], ip[3])),
        1 => proptest::sample::select(NAMES).prop_map(|n| format!("{n} A 192.0.2.1")),
        1 => proptest::sample::select(NAMES).prop_map(|n| format!("{n} MX 10 mx.example.com")),
        1 => proptest::sample::select(NAMES).prop_map(|n| format!("{n} AAAA 2001:db8::1")),
        1 => Just("1.2.0.192.in-addr.arpa PTR mx.example.com".to_string()),
        1 => Just("loop.example.com TXT v=spf1 include:loop.example.com -all".to_string()),
        1 => Just("explain.example.com TXT %{i} is not one of %{d}'s servers %{p} %{r} %{t}".to_string()),
        1 => proptest::sample::select(NAMES).prop_map(|n| format!("{n} TIMEOUT")),
        1 => proptest::sample::select(NAMES).prop_map(|n| format!("x.{n} CNAME {n}")),
    ];
    (
        proptest::collection::vec(line, 0..12),
        proptest::sample::select(
            &["192.0.2.1", "192.0.2.9", "2001:db8::1", "::ffff:192.0.2.1"][..],
        ),
        proptest::sample::select(&["example.com", "mx.example.com", "nohelo", "[192.0.2.1]"][..]),
        proptest::sample::select(
            &[
                "user@example.com",
                "",
                "a@b.example.com",
                "user@",
                "@example.com",
                "x@exa mple.com",
            ][..],
        ),
    )
        .prop_map(|(lines, ip, helo, from)| {
            format!(
                "client {ip}\nhelo {helo}\nmailfrom {from}\n{}\n",
                lines.join("\n")
            )
        })
}

fn config_text() -> impl Strategy<Value = String> {
    const LINES: &[&str] = &[
        "listen = \"unix:/run/rmilter/rmilter.sock\"",
        "listen = \"inet:127.0.0.1:8891\"",
        "listen = \"inet:[::1]:0\"",
        "listen = \"tcp:x\"",
        "authserv_id = \"mx.example.org\"",
        "authserv_id = \"bad id\"",
        "authserv_id = \"\"",
        "log_level = \"debug\"",
        "log_level = 3",
        "[socket]",
        "mode = \"0660\"",
        "mode = \"0777\"",
        "[limits]",
        "max_connections = 0",
        "max_connections = 18446744073709551615",
        "idle_timeout = \"330s\"",
        "idle_timeout = \"-1s\"",
        "max_header_bytes = 1",
        "[actions]",
        "bad_from = \"quarantine\"",
        "bad_from = \"explode\"",
        "[signing]",
        "canonicalization = \"simple/relaxed\"",
        "canonicalization = \"relaxed\"",
        "canonicalization = \"x/y/z\"",
        "[outbound]",
        "networks = [\"10.0.0.0/8\", \"::1\"]",
        "networks = [\"10.0.0.0/33\"]",
        "daemon_names = [\"submission\"]",
        "headers = [\"To\"]",
        "oversign_headers = []",
        "expire = \"7d\"",
        "[[keys]]",
        "domain = \"example.com\"",
        "domain = \"exa mple.com\"",
        "selector = \"sel\"",
        "file = \"/nonexistent\"",
        "algorithm = \"ed25519\"",
        "algorithm = \"dsa\"",
        "[dns]",
        "nameservers = [\"127.0.0.1\"]",
        "nameservers = [\"x\"]",
        "timeout = \"0s\"",
        "[verify]",
        "max_signatures = 0",
        "trusted_arc_sealers = [\"example.com\"]",
        "[policy]",
        "reject = \"accept\"",
        "[[policy.domain]]",
        "domain = \"sub.example.com\"",
        "min_rsa_bits = 512",
        "dmarc_pct = \"honor\"",
        "display_name_mismatch = \"quarantine\"",
        "attempts = 0",
        "cache_size = -1",
        "monitor = true",
        "[unknown]",
        "x = [",
        "\"",
    ];
    proptest::collection::vec(
        prop_oneof![
            8 => proptest::sample::select(LINES).prop_map(str::to_string),
            1 => mailish(20).prop_map(|v| String::from_utf8_lossy(&v).into_owned()),
        ],
        0..12,
    )
    .prop_map(|l| l.join("\n"))
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    const PIECES: &[&[u8]] = &[
        b"line",
        b" ",
        b"\t",
        b"\r\n",
        b"\r\n\r\n",
        b"  \r\n",
        b"\n",
        b"\r",
        b".",
        b"\xe9",
        b"x",
    ];
    proptest::collection::vec(
        prop_oneof![
            4 => proptest::sample::select(PIECES)
                .prop_map(<[u8]>::to_vec),
            1 => any::<u8>().prop_map(|b| vec![b]),
        ],
        0..60,
    )
    .prop_map(|p| p.concat())
}
