//! The From gate: field and value forms, refusals, the display-name check
//! and the RFC 2047 decoder.

use super::*;

fn gate(value: &str) -> Result<Author, Refusal> {
    author([(b"From".as_slice(), value.as_bytes())])
}

fn fields(list: &[(&str, &str)]) -> Result<Author, Refusal> {
    author(list.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())))
}

fn ok(address: &str, domain: &str) -> Result<Author, Refusal> {
    Ok(Author {
        address: address.to_owned(),
        domain: domain.to_owned(),
        display_domain: None,
    })
}

fn shown(address: &str, domain: &str, display: &str) -> Result<Author, Refusal> {
    Ok(Author {
        address: address.to_owned(),
        domain: domain.to_owned(),
        display_domain: Some(display.to_owned()),
    })
}

fn several(count: usize, domains: &[&str]) -> Result<Author, Refusal> {
    Err(Refusal::SeveralAddresses {
        count,
        domains: domains.iter().map(|d| (*d).to_owned()).collect(),
    })
}

fn malformed(reason: &'static str) -> Result<Author, Refusal> {
    Err(Refusal::Malformed(reason))
}

fn ambiguous(reason: &'static str) -> Result<Author, Refusal> {
    Err(Refusal::Ambiguous(reason))
}

/// Single From field values: (case, value, expected).
fn value_cases() -> Vec<(&'static str, &'static str, Result<Author, Refusal>)> {
    vec![
        // Plain and valid forms.
        ("plain", "a@b.c", ok("a@b.c", "b.c")),
        ("leading space", " a@b.c", ok("a@b.c", "b.c")),
        ("angle only", " <a@b.c>", ok("a@b.c", "b.c")),
        (
            "atom display name",
            " Jane Doe <jane@x.org>",
            ok("jane@x.org", "x.org"),
        ),
        (
            "quoted comma and escaped quotes",
            r#" "Doe, John \"JD\"" <j@x.org>"#,
            ok("j@x.org", "x.org"),
        ),
        (
            "opendmarc #104",
            r#" "'X, Y' via Z" <z@list.example>"#,
            ok("z@list.example", "list.example"),
        ),
        (
            "obs-phrase with dot",
            " J. Doe <j@x.org>",
            ok("j@x.org", "x.org"),
        ),
        ("trailing comma (obs)", " a@b.c,", ok("a@b.c", "b.c")),
        ("leading comma (obs)", " , <a@b.c>", ok("a@b.c", "b.c")),
        ("comment after address", " a@b.c (Jane)", ok("a@b.c", "b.c")),
        (
            "cfws before >",
            " <test@facebook.com >",
            ok("test@facebook.com", "facebook.com"),
        ),
        (
            "cfws after <",
            " < test@facebook.com>",
            ok("test@facebook.com", "facebook.com"),
        ),
        (
            "obs cfws in local part",
            " john . doe @x.org",
            ok("john.doe@x.org", "x.org"),
        ),
        (
            "quoted local part",
            r#" "john doe"@x.org"#,
            ok(r#""john doe"@x.org"#, "x.org"),
        ),
        (
            "quoted local part with @ shows an address",
            r#" "a@b"@c.example"#,
            shown(r#""a@b"@c.example"#, "c.example", "b"),
        ),
        (
            "doubled dot in local part",
            " foo..bar@docomo.ne.jp",
            ok("foo..bar@docomo.ne.jp", "docomo.ne.jp"),
        ),
        (
            "trailing dot in local part",
            " foo.@docomo.ne.jp",
            ok("foo.@docomo.ne.jp", "docomo.ne.jp"),
        ),
        (
            "upper case and trailing dot",
            " User@Example.COM.",
            ok("User@example.com", "example.com"),
        ),
        (
            "trailing dot in angle",
            " <u@example.com.>",
            ok("u@example.com", "example.com"),
        ),
        (
            "u-label",
            " user@bücher.example",
            ok("user@xn--bcher-kva.example", "xn--bcher-kva.example"),
        ),
        (
            "upper-case u-label",
            " user@BÜCHER.example",
            ok("user@xn--bcher-kva.example", "xn--bcher-kva.example"),
        ),
        (
            "a-label",
            " user@XN--BCHER-KVA.example",
            ok("user@xn--bcher-kva.example", "xn--bcher-kva.example"),
        ),
        (
            "smtputf8",
            " δοκιμή <χρήστης@παράδειγμα.δοκιμή>",
            ok(
                "χρήστης@xn--hxajbheg2az3al.xn--jxalpdlp",
                "xn--hxajbheg2az3al.xn--jxalpdlp",
            ),
        ),
        (
            "route (server_a16)",
            " <@attack.com,@any.com:admin@legitimate.com>",
            ok("admin@legitimate.com", "legitimate.com"),
        ),
        (
            "route with cfws",
            " < @a.example , @b.example : x@c.example >",
            ok("x@c.example", "c.example"),
        ),
        (
            "route with literal",
            " <@[192.0.2.1]:x@c.example>",
            ok("x@c.example", "c.example"),
        ),
        (
            "group with one member",
            " team: a@x.example;",
            ok("a@x.example", "x.example"),
        ),
        (
            "comment inside domain tail",
            " x@attack.com(.legitimate.com)",
            ok("x@attack.com", "attack.com"),
        ),
        (
            "encoded-word local part shows an address",
            " =?utf-8?q?admin=40victim.example?=@attack.example",
            shown(
                "=?utf-8?q?admin=40victim.example?=@attack.example",
                "attack.example",
                "victim.example",
            ),
        ),
        (
            "comment with fqdn",
            " Foo (ceo@victim.example) <x@attack.example>",
            shown("x@attack.example", "attack.example", "victim.example"),
        ),
        (
            "encoded-word display name",
            " =?utf-8?b?PGFkbWluQHZpY3RpbS5leGFtcGxlPg==?= <x@attack.example>",
            shown("x@attack.example", "attack.example", "victim.example"),
        ),
        (
            "quoted display address",
            r#" "admin@victim.example" <x@attack.example>"#,
            shown("x@attack.example", "attack.example", "victim.example"),
        ),
        (
            "quoted display same domain",
            r#" "CEO@Attack.Example" <x@attack.example>"#,
            ok("x@attack.example", "attack.example"),
        ),
        (
            "display u-label same domain",
            r#" "a@BÜCHER.example" <x@xn--bcher-kva.example>"#,
            ok("x@xn--bcher-kva.example", "xn--bcher-kva.example"),
        ),
        (
            "q-encoded latin1 display",
            " =?iso-8859-1?q?admin=40victim.example?= <x@attack.example>",
            shown("x@attack.example", "attack.example", "victim.example"),
        ),
        (
            "adjacent encoded-words",
            " =?utf-8?q?admin?= =?utf-8?q?=40victim.example?= <x@attack.example>",
            shown("x@attack.example", "attack.example", "victim.example"),
        ),
        (
            "encoded-word in comment",
            " (=?us-ascii?q?ceo=40victim.example?=) x@attack.example",
            shown("x@attack.example", "attack.example", "victim.example"),
        ),
        (
            "koi8-r display name decoded",
            " =?koi8-r?b?PGFkbWluQHZpY3RpbS5leGFtcGxlPg==?= <x@attack.example>",
            shown("x@attack.example", "attack.example", "victim.example"),
        ),
        (
            "windows-1252 display name decoded",
            " =?windows-1252?q?ceo=40bank=2Eexample_=96_CEO?= <x@attack.example>",
            shown("x@attack.example", "attack.example", "bank.example"),
        ),
        (
            "koi8-r display name in cyrillic",
            " =?koi8-r?q?=E1=C4=CD=C9=CE?= <x@attack.example>",
            ok("x@attack.example", "attack.example"),
        ),
        (
            "quoted local part holding an address",
            r#" "ceo@bank.example"@evil.example"#,
            shown(
                r#""ceo@bank.example"@evil.example"#,
                "evil.example",
                "bank.example",
            ),
        ),
        (
            "quoted local part in angle brackets",
            r#" CEO <"ceo@bank.example"@evil.example>"#,
            shown(
                r#""ceo@bank.example"@evil.example"#,
                "evil.example",
                "bank.example",
            ),
        ),
        (
            "quoted-pair @ in local part",
            r#" "ceo\@bank.example"@evil.example"#,
            shown(
                r#""ceo\@bank.example"@evil.example"#,
                "evil.example",
                "bank.example",
            ),
        ),
        (
            "same-domain address in local part",
            r#" "ceo@evil.example"@evil.example"#,
            ok(r#""ceo@evil.example"@evil.example"#, "evil.example"),
        ),
        (
            "full-width display domain",
            r#" "admin@ｖictim.example" <x@victim.example>"#,
            shown("x@victim.example", "victim.example", "ｖictim.example"),
        ),
        (
            "group name with address",
            r#" "admin@victim.example": x@attack.example;"#,
            shown("x@attack.example", "attack.example", "victim.example"),
        ),
        (
            "handle is not an address",
            " Jane (@jane) <jane@x.example>",
            ok("jane@x.example", "x.example"),
        ),
        // Several mailboxes.
        (
            "server_a14",
            " <first@attack.com>, <admin@legitimate.com>",
            several(2, &["attack.com", "legitimate.com"]),
        ),
        (
            "server_a18",
            " admin@legitimate.com,<second@attack.com>",
            several(2, &["legitimate.com", "attack.com"]),
        ),
        (
            "client_a2",
            " <attacker@example.com>, <admin@example.com>",
            several(2, &["example.com"]),
        ),
        (
            "same domain twice",
            " a@x.example, b@X.example.",
            several(2, &["x.example"]),
        ),
        (
            "group with two members",
            " team: a@attack.example, b@victim.example;",
            several(2, &["attack.example", "victim.example"]),
        ),
        (
            "group then mailbox",
            " g: a@x.example;, b@y.example",
            several(2, &["x.example", "y.example"]),
        ),
        // No mailbox.
        ("empty value", "", Err(Refusal::NoAddress)),
        ("blank value", "   ", Err(Refusal::NoAddress)),
        ("comment only", " (nobody)", Err(Refusal::NoAddress)),
        ("only commas", " , ,", Err(Refusal::NoAddress)),
        (
            "empty group",
            " undisclosed-recipients:;",
            Err(Refusal::NoAddress),
        ),
        // Ambiguous.
        (
            "server_a15",
            "=?utf-8?B?PGFkbWluQGxlZ2l0aW1hdGUuY29tPg==?=,<second@attack.com>",
            ambiguous("encoded-word hides an address"),
        ),
        (
            "server_a17",
            " <admin@legitimate.com>\\,<second@attack.com>",
            ambiguous("quoted-pair outside quoted string or comment"),
        ),
        (
            "server_a19",
            " <any@attack.com>admin@legitimate.com",
            ambiguous("text after angle address"),
        ),
        (
            "two angle addrs",
            " <x@attack.example> <y@victim.example>",
            ambiguous("text after angle address"),
        ),
        (
            "unbalanced > (f7)",
            " user@example.net>",
            ambiguous("unbalanced angle bracket"),
        ),
        (
            "unbalanced <",
            " Foo <x@y.example",
            ambiguous("unbalanced angle bracket"),
        ),
        (
            "< in display name",
            " Foo < Bar <x@y.example>",
            ambiguous("unbalanced angle bracket"),
        ),
        (
            "> in display name",
            " Foo > <x@y.example>",
            ambiguous("unbalanced angle bracket"),
        ),
        (
            "unbalanced quote",
            " \"Foo <x@y.example>",
            ambiguous("unbalanced quote"),
        ),
        (
            "unbalanced (",
            " Foo (bar <x@y.example>",
            ambiguous("unbalanced parenthesis"),
        ),
        (
            "unbalanced )",
            " Foo) <x@y.example>",
            ambiguous("unbalanced parenthesis"),
        ),
        (
            "unbalanced ]",
            " x@y.example]",
            ambiguous("unbalanced square bracket"),
        ),
        (
            "unquoted @ in display name",
            " admin@victim.example <x@attack.example>",
            ambiguous("unquoted @ in display name"),
        ),
        (
            "bare addr then text",
            " a@b.example c@d.example",
            ambiguous("address followed by text without comma"),
        ),
        (
            "bare addr then quoted",
            " a@b.example \"x\"",
            ambiguous("address followed by text without comma"),
        ),
        (
            "semicolon list",
            " a@b.example; c@d.example",
            ambiguous("semicolon outside group"),
        ),
        ("missing @", " admin", ambiguous("missing @ in address")),
        (
            "missing @ in angle",
            " <admin>",
            ambiguous("missing @ in address"),
        ),
        (
            "phrase without address",
            " Foo Bar, x@y.example",
            ambiguous("missing @ in address"),
        ),
        (
            "two @ bare",
            " a@b@c.example",
            ambiguous("more than one @ in address"),
        ),
        (
            "two @ angle",
            " <a@b@c.example>",
            ambiguous("more than one @ in address"),
        ),
        (
            "comma inside angle",
            " <a@b.example, c@d.example>",
            ambiguous("unexpected text in angle address"),
        ),
        (
            "space inside domain",
            " x@legitimate .com",
            ambiguous("whitespace inside domain"),
        ),
        (
            "comment inside domain",
            " x@legitimate.com(c).attack.com",
            ambiguous("whitespace inside domain"),
        ),
        (
            "text after group",
            " g: a@x.example; b@y.example",
            ambiguous("text after group"),
        ),
        // Malformed.
        (
            "address literal",
            " user@[192.0.2.1]",
            malformed("address literal in From"),
        ),
        (
            "full-width domain",
            " user@ｅxample.com",
            malformed("domain not in normalised form"),
        ),
        (
            "ideographic dot",
            " user@example。com",
            malformed("domain not in normalised form"),
        ),
        (
            "zero-width joiner",
            " user@exa\u{200d}mple.com",
            malformed("invalid international domain"),
        ),
        (
            "kelvin sign",
            " user@\u{212a}ey.example",
            malformed("domain not in normalised form"),
        ),
        (
            "soft hyphen",
            " user@exa\u{ad}mple.com",
            malformed("domain not in normalised form"),
        ),
        (
            "bogus a-label",
            " user@xn--zz.example",
            malformed("invalid international domain"),
        ),
        (
            "quote in domain (a4 style)",
            " x@legitimate.com'a.attack.com",
            malformed("invalid domain"),
        ),
        (
            "underscore in domain",
            " x@under_score.example",
            malformed("invalid domain"),
        ),
        (
            "leading hyphen",
            " x@-bad.example",
            malformed("invalid domain"),
        ),
        (
            "numeric tld",
            " x@192.0.2.1",
            malformed("numeric top-level label"),
        ),
        (
            "double dot in domain",
            " x@a..example",
            malformed("empty domain label"),
        ),
        (
            "two trailing dots",
            " x@example.com..",
            malformed("empty domain label"),
        ),
        ("empty domain", " x@", malformed("empty domain")),
        ("empty domain in angle", " <x@>", malformed("empty domain")),
        (
            "empty local part",
            " @example.com",
            malformed("empty local part"),
        ),
        (
            "empty quoted local part",
            " \"\"@example.com",
            malformed("empty local part"),
        ),
        (
            "route without local part",
            " <@example.com>",
            malformed("empty local part"),
        ),
        ("empty angle", " <>", malformed("empty angle address")),
        (
            "two words in local part",
            " Foo Bar@x.example",
            malformed("invalid local part"),
        ),
        (
            "nested group",
            " a: b: c@d.example;;",
            malformed("nested group"),
        ),
        (
            "group not terminated",
            " a: b@c.example",
            malformed("group not terminated"),
        ),
        (
            "group without name",
            " : b@c.example;",
            malformed("group without display name"),
        ),
        (
            "domain literal in phrase",
            " [x] <a@b.example>",
            malformed("misplaced domain literal"),
        ),
        (
            "control character",
            " a@b.c\u{1}",
            malformed("control character in From"),
        ),
        (
            "del in quoted string",
            " \"a\u{7f}\" <a@b.c>",
            malformed("control character in From"),
        ),
        (
            "nested [ in literal",
            " x@[1[2]",
            malformed("invalid domain literal"),
        ),
        ("bad route", " <,x@y.example>", malformed("invalid route")),
    ]
}

#[test]
fn value_table() {
    let mut failures = Vec::new();
    for (case, value, expected) in value_cases() {
        let got = gate(value);
        println!("{case:40} | {value:?} | {got:?}");
        if got != expected {
            failures.push(format!(
                "{case}: {value:?}\n  got      {got:?}\n  expected {expected:?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

type FieldCase = (
    &'static str,
    Vec<(&'static str, &'static str)>,
    Result<Author, Refusal>,
);

#[test]
fn espoofer_header_lists() {
    let cases: Vec<FieldCase> = vec![
        (
            "server_a8",
            vec![
                ("From", " <first@attack.com>"),
                ("From", " <admin@legitimate.com>"),
            ],
            Err(Refusal::SeveralFromFields(2)),
        ),
        (
            "server_a9 (leading space)",
            vec![
                (" From", " <first@attack.com>"),
                ("From", " <admin@legitimate.com>"),
            ],
            malformed("malformed From field name"),
        ),
        (
            "server_a10 (From :)",
            vec![
                ("From", " <first@attack.com>"),
                ("From ", " <admin@legitimate.com>"),
            ],
            Err(Refusal::SeveralFromFields(2)),
        ),
        (
            "server_a11 (folded name, crlf)",
            vec![
                ("From\r\n ", " <first@attack.com>"),
                ("From", " <admin@legitimate.com>"),
            ],
            malformed("malformed From field name"),
        ),
        (
            "server_a11 (folded name, lf)",
            vec![
                ("From\n ", " <first@attack.com>"),
                ("From", " <admin@legitimate.com>"),
            ],
            malformed("malformed From field name"),
        ),
        (
            "server_a12 (folded name + Sender)",
            vec![
                ("From\r\n ", " <first@attack.com>"),
                ("Sender", " <admin@legitimate.com>"),
            ],
            malformed("malformed From field name"),
        ),
        (
            "server_a12 (From lost, Sender only)",
            vec![("Sender", " <admin@legitimate.com>")],
            Err(Refusal::NoFrom),
        ),
        (
            "server_a13 (folded name + Resent-From)",
            vec![
                ("From\r\n ", " <first@attack.com>"),
                ("Resent-From", " <admin@legitimate.com>"),
            ],
            malformed("malformed From field name"),
        ),
        (
            "server_a13 (From lost, Resent-From only)",
            vec![("Resent-From", " <admin@legitimate.com>")],
            Err(Refusal::NoFrom),
        ),
        (
            "client_a1",
            vec![
                ("From", " <attacker@example.com>"),
                ("From", " <admin@example.com>"),
            ],
            Err(Refusal::SeveralFromFields(2)),
        ),
        (
            "two identical From",
            vec![("From", " a@b.c"), ("From", " a@b.c")],
            Err(Refusal::SeveralFromFields(2)),
        ),
        (
            "three From among others",
            vec![
                ("To", " x@y.z"),
                ("from", " a@b.c"),
                ("FROM", " a@b.c"),
                ("Subject", " hi"),
                ("fRoM", " a@b.c"),
            ],
            Err(Refusal::SeveralFromFields(3)),
        ),
        (
            "no From",
            vec![("To", " x@y.z"), ("Subject", " hi")],
            Err(Refusal::NoFrom),
        ),
        ("no fields", vec![], Err(Refusal::NoFrom)),
        ("FROM", vec![("FROM", " a@b.c")], ok("a@b.c", "b.c")),
        ("fRoM", vec![("fRoM", " a@b.c")], ok("a@b.c", "b.c")),
        (
            "From with trailing space (obs)",
            vec![("From ", " a@b.c")],
            ok("a@b.c", "b.c"),
        ),
        (
            "From with trailing tab (obs)",
            vec![("From\t", " a@b.c")],
            ok("a@b.c", "b.c"),
        ),
        (
            "leading tab",
            vec![("\tFrom", " a@b.c")],
            malformed("malformed From field name"),
        ),
        (
            "embedded space",
            vec![("Fr om", " a@b.c")],
            malformed("malformed From field name"),
        ),
        (
            "nul in name",
            vec![("From\0", " a@b.c")],
            malformed("malformed From field name"),
        ),
        (
            "ctl in name",
            vec![("Fr\u{1}om", " a@b.c")],
            malformed("malformed From field name"),
        ),
        (
            "other names ignored",
            vec![
                ("X-From", " x@y.z"),
                ("Froms", " x@y.z"),
                ("From", " a@b.c"),
            ],
            ok("a@b.c", "b.c"),
        ),
    ];
    let mut failures = Vec::new();
    for (case, list, expected) in cases {
        let got = fields(&list);
        println!("{case:40} | {list:?} | {got:?}");
        if got != expected {
            failures.push(format!(
                "{case}\n  got      {got:?}\n  expected {expected:?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn raw_value_checks() {
    let from = |v: &[u8]| author([(b"From".as_slice(), v)]);
    assert_eq!(from(b" a@b.c\0"), malformed("nul in From"));
    assert_eq!(from(b" a\0@b.c"), malformed("nul in From"));
    assert_eq!(from(b" a@b.c\rx"), malformed("bare cr in From"));
    assert_eq!(from(b" a@b.c\r"), malformed("bare cr in From"));
    assert_eq!(from(b" a@b.c\nx"), malformed("bare lf in From"));
    assert_eq!(from(b" Foo\r\nx <a@b.c>"), malformed("bare lf in From"));
    assert_eq!(from(b" a@b.c\n"), malformed("bare lf in From"));
    assert_eq!(from(b" a@b.\xffc"), malformed("From is not valid utf-8"));
    assert_eq!(from(b" Foo\r\n <a@b.c>"), ok("a@b.c", "b.c"));
    assert_eq!(from(b" Foo\n\t<a@b.c>"), ok("a@b.c", "b.c"));
    assert_eq!(from(b" \"Doe,\n John\"\r\n\t<a@b.c>"), ok("a@b.c", "b.c"));
    // Folding inside a domain is whitespace inside the domain.
    assert_eq!(from(b" a@b.\n c"), ambiguous("whitespace inside domain"));
}

#[test]
fn deep_and_large_values() {
    let deep = "(".repeat(10_000);
    assert_eq!(gate(&deep), malformed("comments nested too deeply"));
    let deep_closed = format!("{}{} a@b.c", "(".repeat(10_000), ")".repeat(10_000));
    assert_eq!(gate(&deep_closed), malformed("comments nested too deeply"));
    let depth_64 = format!("{} x {} a@b.c", "(".repeat(64), ")".repeat(64));
    assert_eq!(gate(&depth_64), ok("a@b.c", "b.c"));
    let depth_65 = format!("{}{} a@b.c", "(".repeat(65), ")".repeat(65));
    assert_eq!(gate(&depth_65), malformed("comments nested too deeply"));
    let many_comments = format!("{}a@b.c", "(x) ".repeat(25_000));
    assert_eq!(gate(&many_comments), ok("a@b.c", "b.c"));
    let closers = ")".repeat(10_000);
    assert_eq!(gate(&closers), ambiguous("unbalanced parenthesis"));

    let atoms = "a".repeat(100_000);
    assert_eq!(gate(&atoms), ambiguous("missing @ in address"));
    let long_name = format!("\"{}\" <x@y.example>", "n".repeat(100_000));
    assert_eq!(gate(&long_name), ok("x@y.example", "y.example"));
    let long_words = format!("{}<x@y.example>", "=?utf-8?q?a?= ".repeat(7_000));
    assert_eq!(gate(&long_words), ok("x@y.example", "y.example"));
    let long_domain = format!("x@{}.example", "a".repeat(100_000));
    assert_eq!(gate(&long_domain), malformed("domain too long"));
    let long_local = format!("{}@y.example", "a.".repeat(50_000));
    assert!(gate(&long_local).is_ok());
    let at_signs = "@".repeat(100_000);
    assert_eq!(gate(&at_signs), malformed("empty local part"));
    let list = "a@x.example, ".repeat(8_000);
    assert_eq!(gate(&list), several(8_000, &["x.example"]));
    let lt = "<".repeat(100_000);
    assert_eq!(gate(&lt), ambiguous("unbalanced angle bracket"));
    let display_at = format!("\"{}\" <x@y.example>", "a@b".repeat(30_000));
    assert_eq!(gate(&display_at), shown("x@y.example", "y.example", "ba"));
}

#[test]
fn fifty_and_more_domains() {
    let fifty: Vec<String> = (0..50).map(|i| format!("u{i}@d{i}.example")).collect();
    let expected: Vec<String> = (0..50).map(|i| format!("d{i}.example")).collect();
    assert_eq!(
        gate(&fifty.join(", ")),
        Err(Refusal::SeveralAddresses {
            count: 50,
            domains: expected.clone(),
        })
    );
    let sixty: Vec<String> = (0..60).map(|i| format!("u{i}@d{i}.example")).collect();
    assert_eq!(
        gate(&sixty.join(", ")),
        Err(Refusal::SeveralAddresses {
            count: 60,
            domains: expected,
        })
    );
}

#[test]
fn domain_limits() {
    let label63 = "a".repeat(63);
    let label64 = "a".repeat(64);
    assert_eq!(
        gate(&format!("x@{label63}.example")),
        ok(
            &format!("x@{label63}.example"),
            &format!("{label63}.example")
        )
    );
    assert_eq!(
        gate(&format!("x@{label64}.example")),
        malformed("domain label too long")
    );
    // 4 * 63 + 3 dots = 255 > 253.
    let long = [label63.as_str(); 4].join(".");
    assert_eq!(gate(&format!("x@{long}")), malformed("domain too long"));
    // 253 octets exactly.
    let max = format!("{}.{}.{}.{}", label63, label63, label63, "a".repeat(61));
    assert_eq!(max.len(), 253);
    assert_eq!(gate(&format!("x@{max}")), ok(&format!("x@{max}"), &max));
}

#[test]
fn display_texts() {
    assert_eq!(
        Refusal::SeveralFromFields(2).to_string(),
        "message has 2 From fields"
    );
    assert_eq!(Refusal::NoFrom.to_string(), "message has no From field");
    assert_eq!(Refusal::NoAddress.to_string(), "From field has no address");
    assert_eq!(
        Refusal::SeveralAddresses {
            count: 2,
            domains: vec!["attack.com".into(), "legitimate.com".into()]
        }
        .to_string(),
        "From field has 2 addresses (attack.com, legitimate.com)"
    );
    assert_eq!(
        Refusal::SeveralAddresses {
            count: 9,
            domains: vec!["a.x".into(), "b.x".into(), "c.x".into(), "d.x".into()]
        }
        .to_string(),
        "From field has 9 addresses (a.x, b.x, c.x and 1 more domains)"
    );
    assert_eq!(
        Refusal::Malformed("nul in From").to_string(),
        "malformed From field: nul in From"
    );
    assert_eq!(
        Refusal::Ambiguous("text after angle address").to_string(),
        "ambiguous From field: text after angle address"
    );
    let e: Box<dyn std::error::Error> = Box::new(Refusal::NoFrom);
    assert_eq!(e.to_string(), "message has no From field");
}

#[test]
fn encoded_word_decoder() {
    assert_eq!(decode_encoded_words("=?utf-8?b?w6k=?="), "é");
    assert_eq!(
        decode_encoded_words("=?UTF-8?Q?caf=C3=A9_au_lait?="),
        "café au lait"
    );
    assert_eq!(decode_encoded_words("=?iso-8859-1?q?caf=E9?="), "café");
    assert_eq!(decode_encoded_words("=?utf-8*en?q?hi?="), "hi");
    // us-ascii is read as windows-1252 (as the WHATWG labels say).
    assert_eq!(decode_encoded_words("=?us-ascii?q?=E9?="), "é");
    assert_eq!(
        decode_encoded_words("=?koi8-r?q?=E1=C4=CD=C9=CE?="),
        "Админ"
    );
    assert_eq!(
        decode_encoded_words("=?windows-1252?q?=93hi=94?="),
        "\u{201c}hi\u{201d}"
    );
    assert_eq!(decode_encoded_words("=?utf-8?b?!!?="), "=?utf-8?b?!!?=");
    assert_eq!(decode_encoded_words("=?utf-8?x?abc?="), "=?utf-8?x?abc?=");
    assert_eq!(decode_encoded_words("=?utf-8?q?a?= =?utf-8?q?b?="), "ab");
    assert_eq!(decode_encoded_words("x =?utf-8?q?a?= y"), "x a y");
    assert_eq!(decode_encoded_words("=?=?=?"), "=?=?=?");
    // Invalid UTF-8 is replaced, not left encoded.
    assert_eq!(decode_encoded_words("=?utf-8?q?=FF?="), "\u{fffd}");
}

/// xorshift64*: a deterministic generator, so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).unwrap_or(0)
    }
}

const PIECES: &[&[u8]] = &[
    b"a",
    b"Z",
    b"9",
    b"-",
    b"_",
    b".",
    b"@",
    b"<",
    b">",
    b",",
    b";",
    b":",
    b"\"",
    b"(",
    b")",
    b"[",
    b"]",
    b"\\",
    b" ",
    b"\t",
    b"\r",
    b"\n",
    b"\r\n ",
    b"\n\t",
    b"\0",
    b"\x7f",
    b"\x01",
    b"\xc3\xa9",
    b"\xff",
    b"\xe3\x80\x82",
    b"\xef\xbd\x85",
    b"=?utf-8?b?",
    b"=?utf-8?q?",
    b"?=",
    b"PGFAYi5jPg==",
    b"=40",
    b"example.com",
    b"x@y.example",
    b"<a@b.example>",
    b"xn--",
    b"b\xc3\xbccher",
    b"@a.example:",
    b"\"q\\\"\"",
    b"g:",
    b"'",
    b"=",
    b"?",
];

const NAMES: &[&[u8]] = &[
    b"From",
    b"from ",
    b"FROM",
    b" From",
    b"From\r\n ",
    b"Sender",
    b"To",
    b"Fr om",
    b"",
];

#[test]
fn never_panics_on_mutated_input() {
    let seeds: Vec<&str> = value_cases().into_iter().map(|(_, v, _)| v).collect();
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let mut oks = 0usize;
    for _ in 0..100_000 {
        let seed = seeds
            .get(rng.below(seeds.len()))
            .copied()
            .unwrap_or_default();
        let mut value = seed.as_bytes().to_vec();
        for _ in 0..=rng.below(3) {
            let at = rng.below(value.len() + 1);
            let piece = PIECES
                .get(rng.below(PIECES.len()))
                .copied()
                .unwrap_or_default();
            match rng.below(3) {
                0 => {
                    value.splice(at..at, piece.iter().copied());
                }
                1 if at < value.len() => {
                    value.remove(at);
                }
                _ if at < value.len() => {
                    if let Some(b) = value.get_mut(at) {
                        *b = piece.first().copied().unwrap_or(b'x');
                    }
                }
                _ => value.extend_from_slice(piece),
            }
        }
        if let Ok(a) = author([(b"From".as_slice(), value.as_slice())]) {
            oks += 1;
            assert!(a.address.ends_with(&format!("@{}", a.domain)), "{a:?}");
            assert_eq!(
                gate(&a.address).map(|b| b.domain),
                Ok(a.domain.clone()),
                "{value:?}"
            );
        }
    }
    println!("mutated inputs accepted: {oks}");
    assert!(oks > 0);
}

#[test]
fn never_panics_on_random_input() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut oks = 0usize;
    for _ in 0..100_000 {
        let mut value = Vec::new();
        for _ in 0..rng.below(24) {
            let piece = PIECES
                .get(rng.below(PIECES.len()))
                .copied()
                .unwrap_or_default();
            value.extend_from_slice(piece);
        }
        if rng.below(8) == 0 {
            // Raw bytes as well as pieces.
            for _ in 0..rng.below(16) {
                value.push(u8::try_from(rng.below(256)).unwrap_or(0));
            }
        }
        let mut list: Vec<(&[u8], &[u8])> = vec![(b"From", value.as_slice())];
        if rng.below(4) == 0 {
            let name = NAMES
                .get(rng.below(NAMES.len()))
                .copied()
                .unwrap_or_default();
            list.push((name, value.as_slice()));
        }
        if let Ok(a) = author(list.iter().copied()) {
            oks += 1;
            // The author domain is what DMARC looks up: LDH, lower case,
            // no trailing dot, and the address ends in it.
            assert!(!a.domain.is_empty() && a.domain.len() <= 253, "{a:?}");
            assert!(
                a.domain.bytes().all(|c| c.is_ascii_lowercase()
                    || c.is_ascii_digit()
                    || c == b'-'
                    || c == b'.'),
                "{a:?}"
            );
            assert!(!a.domain.ends_with('.'), "{a:?}");
            assert!(a.address.ends_with(&format!("@{}", a.domain)), "{a:?}");
            // The address as returned passes the gate again, to the same domain.
            let again = gate(&a.address).map(|b| b.domain);
            assert_eq!(again, Ok(a.domain.clone()), "{a:?} from {value:?}");
        }
    }
    println!("random inputs accepted: {oks}");
    assert!(oks > 0);
}

#[test]
fn raw_8bit_display_names() {
    let from = |v: &[u8]| author([(b"From".as_slice(), v)]);
    // Latin-1 display names, unquoted, quoted and in a comment: the ASCII
    // addr-spec decides.
    assert_eq!(
        from(b" J\xf6rg M\xfcller <joerg@example.de>"),
        ok("joerg@example.de", "example.de")
    );
    assert_eq!(
        from(b" \"M\xfcller, J\xf6rg\" <joerg@example.de>"),
        ok("joerg@example.de", "example.de")
    );
    assert_eq!(
        from(b" joerg@example.de (J\xf6rg)"),
        ok("joerg@example.de", "example.de")
    );
    // The display-name check still reads what it can.
    assert_eq!(
        from(b" \"ceo@bank.example \xa0\" <x@attack.example>"),
        shown("x@attack.example", "attack.example", "bank.example")
    );
    // 8-bit bytes in the addr-spec: refused as before.
    assert_eq!(
        from(b" J\xf6rg <j\xf6rg@example.de>"),
        malformed("From is not valid utf-8")
    );
    assert_eq!(
        from(b" <joerg@ex\xe4mple.de>"),
        malformed("From is not valid utf-8")
    );
    assert_eq!(
        from(b" \"j\xf6rg\"@example.de"),
        malformed("From is not valid utf-8")
    );
    // Still one address: the bytes never hide a delimiter.
    assert!(matches!(
        from(b" J\xf6rg <a@x.example>, b@y.example"),
        Err(Refusal::SeveralAddresses { .. })
    ));
}
