//! Micro-benchmarks of the per-message hot paths, so that a regression
//! shows before the end-to-end run (benches/run.sh). Run with `make bench`
//! (or `cargo bench --ignore-rust-version --bench hot_paths`); compare
//! against a saved baseline with `-- --save-baseline NAME` and
//! `-- --baseline NAME`. Nothing here asserts a time.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rmilter::config::{Canon, KeySpec, Signing};
use rmilter::keys::LoadedKey;
use rmilter::milter::wire::header_section;
use rmilter::sign::{MessageSigner, header_list};
use rmilter::verify::authres::{ResInfo, render};
use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;

/// The header section of a typical 2 KB message as the milter protocol
/// delivers it: name, value with its leading space, "\n"-folded.
fn fields() -> Vec<(Vec<u8>, Vec<u8>)> {
    let f = |n: &str, v: &str| (n.as_bytes().to_vec(), v.as_bytes().to_vec());
    vec![
        f(
            "Received",
            " from client.example.test (client.example.test [192.0.2.10])\n\tby mx.example.test (Postfix) with ESMTPS id 4XyZ1a2b3c\n\tfor <user@example.test>; Wed, 02 Dec 2026 19:00:00 +0000 (UTC)",
        ),
        f(
            "DKIM-Signature",
            " v=1; a=rsa-sha256; c=relaxed/relaxed; d=sender.test; s=s2026;\n\tt=1796238000; h=from:to:subject:date:message-id:mime-version:content-type;\n\tbh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=;\n\tb=dzdVyOfAKCdLXdJOc9G2q8LoXSlEniSbav+yuU4zGeeruD00lszZVoG4ZHRNiYzR",
        ),
        f("From", " \"Alice Sender\" <alice@sender.test>"),
        f("To", " Bob <bob@example.test>, carol@example.test"),
        f("Subject", " =?UTF-8?Q?Quarterly_report_=E2=80=93_draft?="),
        f("Date", " Wed, 02 Dec 2026 18:59:58 +0000"),
        f("Message-ID", " <20261202185958.12345@client.example.test>"),
        f("MIME-Version", " 1.0"),
        f("Content-Type", " text/plain; charset=utf-8"),
        f("Content-Transfer-Encoding", " 8bit"),
        f(
            "List-Unsubscribe",
            " <mailto:unsubscribe@sender.test?subject=unsubscribe>",
        ),
        f("X-Mailer", " rmilter-bench"),
    ]
}

fn assembly(c: &mut Criterion) {
    let fields = fields();
    let view: Vec<(&[u8], &[u8])> = fields.iter().map(|(n, v)| (&n[..], &v[..])).collect();
    let bytes: usize = view.iter().map(|(n, v)| n.len() + v.len()).sum();
    let mut g = c.benchmark_group("message_assembly");
    g.throughput(Throughput::Bytes(bytes as u64));
    g.bench_function("header_section", |b| {
        b.iter(|| header_section(black_box(view.iter().copied()), true))
    });
    g.finish();
}

fn from_gate(c: &mut Criterion) {
    let fields = fields();
    let view: Vec<(&[u8], &[u8])> = fields.iter().map(|(n, v)| (&n[..], &v[..])).collect();
    c.bench_function("from_gate/typical", |b| {
        b.iter(|| rmilter::identity::author(black_box(view.iter().copied())))
    });
    // A hostile From: comments, quoted-pairs and an encoded word.
    let hostile = [(
        &b"From"[..],
        &b" (comment (nested)) \"=?UTF-8?B?QWxpY2U=?= \\\"x\\\"\" <alice@sender.test> (trailing)"[..],
    )];
    c.bench_function("from_gate/comments", |b| {
        b.iter(|| rmilter::identity::author(black_box(hostile.iter().copied())))
    });
}

fn results_writer(c: &mut Criterion) {
    let results = vec![
        ResInfo::new("dkim", "pass")
            .comment("2048-bit key")
            .prop("header.d", "sender.test")
            .prop("header.s", "s2026")
            .prop("header.a", "rsa-sha256")
            .prop("header.b", "dzdVyOfA"),
        ResInfo::new("spf", "pass")
            .prop("smtp.mailfrom", "alice@sender.test")
            .prop("smtp.helo", "client.example.test"),
        ResInfo::new("dmarc", "pass")
            .prop("header.from", "sender.test")
            .prop("policy.dmarc", "reject"),
        ResInfo::new("arc", "none"),
    ];
    c.bench_function("authentication_results/render", |b| {
        b.iter(|| render(black_box("mx.example.test"), black_box(&results)))
    });
}

fn signer(c: &mut Criterion) {
    // A checkout leaves the example keys 0644, which rmilter refuses to
    // load: sign with private copies.
    let examples = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("keys.example/example.com");
    let private = tempfile::tempdir().expect("temporary directory");
    let dir = private.path();
    for file in ["ed2026.pem", "rsa2026.pem"] {
        let copy = dir.join(file);
        std::fs::copy(examples.join(file), &copy).expect("copy example key");
        std::fs::set_permissions(&copy, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .expect("chmod 600");
    }
    let key = |file: &str, selector: &str| {
        Arc::new(
            LoadedKey::load(&KeySpec {
                domain: "example.com".into(),
                selector: selector.into(),
                path: dir.join(file),
                algorithm: None,
                origin: "bench".into(),
                ..Default::default()
            })
            .expect("keys.example key"),
        )
    };
    let signing = Signing {
        header_canon: Canon::Relaxed,
        body_canon: Canon::Relaxed,
        headers: [
            "from",
            "to",
            "subject",
            "date",
            "message-id",
            "mime-version",
            "content-type",
        ]
        .map(String::from)
        .to_vec(),
        oversign: ["from", "to", "subject"].map(String::from).to_vec(),
        expire: None,
        subdomains: false,
        rule_match: rmilter::config::RuleMatch::First,
        rules: Vec::new(),
        logins: Default::default(),
    };
    let fields = fields();
    let block = header_section(fields.iter().map(|(n, v)| (&n[..], &v[..])), true);
    let names = header_list(&signing, fields.iter().map(|(n, _)| &n[..]));
    let body = "Quarterly figures attached below.\r\n".repeat(56); // ~2 KB
    for (name, file, selector) in [
        ("ed25519", "ed2026.pem", "ed2026"),
        ("rsa2048", "rsa2026.pem", "rsa2026"),
    ] {
        let keys = rmilter::sign::Selected::own(&[key(file, selector)]);
        c.bench_function(&format!("sign_2k/{name}"), |b| {
            b.iter(|| {
                let mut s = MessageSigner::start(&keys, &names, &signing, &block);
                s.body(body.as_bytes());
                s.finish().expect("signature")
            })
        });
    }
}

criterion_group!(benches, assembly, from_gate, results_writer, signer);
criterion_main!(benches);
