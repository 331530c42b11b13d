//! Key selection and the per-message `h=` list.

use super::*;
use crate::config::{Canon, DEFAULT_HEADERS, DEFAULT_OVERSIGN_HEADERS, KeyAlgorithm, KeySpec};

fn signing() -> Signing {
    Signing {
        header_canon: Canon::Relaxed,
        body_canon: Canon::Relaxed,
        headers: DEFAULT_HEADERS.iter().map(|s| s.to_string()).collect(),
        oversign: DEFAULT_OVERSIGN_HEADERS
            .iter()
            .map(|s| s.to_string())
            .collect(),
        expire: None,
        subdomains: false,
        rule_match: crate::config::RuleMatch::First,
        rules: Vec::new(),
        logins: Default::default(),
    }
}

fn table(dir: &std::path::Path, rows: &[(&str, &str)]) -> KeyTable {
    let keys = rows
        .iter()
        .map(|(domain, selector)| {
            let g = crate::keys::generate(dir, domain, selector, KeyAlgorithm::Ed25519, 0).unwrap();
            Arc::new(
                LoadedKey::load(&KeySpec {
                    domain: domain.to_string(),
                    selector: selector.to_string(),
                    path: g.path,
                    algorithm: None,
                    origin: "test".into(),
                    ..Default::default()
                })
                .unwrap(),
            )
        })
        .collect();
    KeyTable::new(keys)
}

fn selectors(keys: &[Arc<LoadedKey>]) -> Vec<String> {
    let mut s: Vec<String> = keys
        .iter()
        .map(|k| format!("{}/{}", k.domain, k.selector))
        .collect();
    s.sort();
    s
}

#[test]
fn keys_are_chosen_by_author_domain() {
    let dir = tempfile::tempdir().unwrap();
    let t = table(
        dir.path(),
        &[
            ("example.com", "a"),
            ("example.com", "b"),
            ("sub.example.com", "c"),
            ("example.org", "d"),
        ],
    );
    assert_eq!(
        selectors(t.select("example.com", false)),
        ["example.com/a", "example.com/b"]
    );
    assert_eq!(
        selectors(t.select("sub.example.com", false)),
        ["sub.example.com/c"]
    );
    assert!(t.select("deep.sub.example.com", false).is_empty());
    assert!(t.select("example.net", true).is_empty());
    // With subdomains: the nearest parent that has keys.
    assert_eq!(
        selectors(t.select("deep.sub.example.com", true)),
        ["sub.example.com/c"]
    );
    assert_eq!(
        selectors(t.select("x.example.org", true)),
        ["example.org/d"]
    );
    // A look-alike is not a subdomain.
    assert!(t.select("badexample.com", true).is_empty());
    assert_eq!(t.len(), 4);
}

#[test]
fn never_signs_with_a_key_for_a_top_level_label() {
    let dir = tempfile::tempdir().unwrap();
    let t = table(dir.path(), &[("com", "a")]);
    assert!(t.select("example.com", true).is_empty());
    assert_eq!(t.select("com", false).len(), 1);
}

fn names(list: &[String]) -> Vec<String> {
    list.iter().map(|s| s.to_ascii_lowercase()).collect()
}

#[test]
fn header_list_oversigns_present_and_absent_fields() {
    let present: Vec<&[u8]> = vec![b"Received", b"From", b"To", b"Subject", b"X-Mailer", b"To"];
    let list = names(&header_list(&signing(), present.iter().copied()));
    let count = |n: &str| list.iter().filter(|h| *h == n).count();
    // Present, signed and oversigned: the name twice in the template (the
    // signer covers every instance and adds one null instance).
    assert_eq!(count("from"), 2);
    assert_eq!(count("to"), 2);
    assert_eq!(count("subject"), 2);
    // Absent but oversigned: once, as a null instance.
    assert_eq!(count("reply-to"), 1);
    assert_eq!(count("cc"), 1);
    assert_eq!(count("list-unsubscribe"), 1);
    // Absent and only signed when present: not listed.
    assert_eq!(count("resent-from"), 0);
    assert_eq!(count("content-id"), 0);
    // Never signed.
    assert_eq!(count("received"), 0);
    assert_eq!(count("x-mailer"), 0);
}

#[test]
fn header_list_matches_names_case_insensitively_and_with_trailing_space() {
    let present: Vec<&[u8]> = vec![b"FROM", b"subject ", b"content-ID"];
    let list = names(&header_list(&signing(), present.iter().copied()));
    assert_eq!(list.iter().filter(|h| *h == "from").count(), 2);
    assert_eq!(list.iter().filter(|h| *h == "subject").count(), 2);
    assert_eq!(list.iter().filter(|h| *h == "content-id").count(), 1);
}

#[test]
fn custom_lists() {
    let mut s = signing();
    s.headers = vec!["From".into(), "X-Custom".into()];
    s.oversign = vec!["From".into()];
    let present: Vec<&[u8]> = vec![b"From", b"X-Custom", b"Subject"];
    assert_eq!(
        header_list(&s, present.iter().copied()),
        ["From", "X-Custom", "From"]
    );
}

#[test]
fn milter_value_form() {
    let header = "DKIM-Signature: v=1; a=ed25519-sha256; d=example.com;\r\n\th=from:to; b=abc;\r\n";
    assert_eq!(
        milter_value(header),
        " v=1; a=ed25519-sha256; d=example.com;\n\th=from:to; b=abc;"
    );
}

#[test]
fn signable_section_closes_the_gap_before_the_colon() {
    let block = b"From : a@example.com\r\nSubject\t:\tx\r\n  folded : not a name\r\nTo: b\r\n";
    assert_eq!(
        &signable_section(block)[..],
        &b"From: a@example.com\r\nSubject:\tx\r\n  folded : not a name\r\nTo: b\r\n"[..]
    );
    let plain = b"From: a@example.com\r\nX: a : b\r\nbare\rcr: x\r\n";
    assert!(matches!(signable_section(plain), Cow::Borrowed(_)));
    assert!(matches!(signable_section(b""), Cow::Borrowed(_)));
}

/// Tags of a signature value, folding removed.
fn tags(value: &str) -> Vec<(String, String)> {
    let flat: String = value.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    flat.split(';')
        .filter(|t| !t.is_empty())
        .map(|t| {
            let (k, v) = t.split_once('=').unwrap_or((t, ""));
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// A lone `From :` (obsolete syntax, which the From gate accepts) failed
/// to sign with "no headers found"; found by the `signer` fuzz target
/// (fuzz/corpus/signer/regress-lone-obsolete-from). With relaxed header
/// canonicalization it signs exactly as `From:` does.
#[test]
fn obsolete_from_with_space_before_colon_is_signed() {
    let dir = tempfile::tempdir().unwrap();
    let t = table(dir.path(), &[("example.com", "a")]);
    let keys = t.choose("admin@example.com", "example.com", false).keys;
    let sign = |name: &[u8]| {
        let block = [name, b": <admin@example.com>\r\n"].concat();
        let list = header_list(&signing(), [name].into_iter());
        let mut signer = MessageSigner::start(&keys, &list, &signing(), &block);
        signer.body(b"Please pay.\r\n");
        signer.finish().expect("signs").remove(0).value
    };
    for _ in 0..3 {
        let (obsolete, modern) = (tags(&sign(b"From ")), tags(&sign(b"From")));
        let get = |t: &[(String, String)], k: &str| {
            t.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
        };
        assert!(
            get(&obsolete, "h").is_some_and(|h| h.starts_with("From:From:")),
            "{obsolete:?}"
        );
        assert_eq!(get(&obsolete, "bh"), get(&modern, "bh"));
        if get(&obsolete, "t") == get(&modern, "t") {
            // Ed25519 is deterministic: the same header hash, the same b=.
            assert_eq!(obsolete, modern);
            return;
        }
    }
    panic!("three signatures across a second boundary");
}

/// A key table from (name, domain, selector) rows and `[[signing.rule]]`
/// rows (sender, key references).
fn ruled(
    dir: &std::path::Path,
    keys: &[(Option<&str>, &str, &str)],
    rules: &[(&str, &[&str])],
    mode: crate::config::RuleMatch,
) -> KeyTable {
    let loaded = keys
        .iter()
        .map(|(name, domain, selector)| {
            let gen_domain = if *domain == "%" {
                "any.example"
            } else {
                domain
            };
            let g =
                crate::keys::generate(dir, gen_domain, selector, KeyAlgorithm::Ed25519, 0).unwrap();
            Arc::new(
                LoadedKey::load(&KeySpec {
                    name: name.map(str::to_string),
                    domain: domain.to_string(),
                    selector: selector.to_string(),
                    path: g.path,
                    origin: "test".into(),
                    ..Default::default()
                })
                .unwrap(),
            )
        })
        .collect();
    let mut s = signing();
    s.rule_match = mode;
    s.rules = rules
        .iter()
        .enumerate()
        .map(|(i, (sender, refs))| crate::config::SigningRule {
            sender: crate::config::parse_sender_pattern(sender).unwrap(),
            keys: refs.iter().map(|r| r.to_string()).collect(),
            origin: format!("signing.rule[{i}]"),
        })
        .collect();
    KeyTable::with_rules(loaded, &s)
}

fn ds(choice: &Choice) -> Vec<String> {
    choice
        .keys
        .iter()
        .map(|k| format!("{}/{}", k.domain, k.key.selector))
        .collect()
}

#[test]
fn rules_choose_keys_first_match() {
    use crate::config::RuleMatch;
    let dir = tempfile::tempdir().unwrap();
    let t = ruled(
        dir.path(),
        &[
            (None, "example.com", "a"),
            (None, "example.com", "b"),
            (Some("shared"), "%", "mail"),
            (Some("relay"), "relay.example", "esp"),
        ],
        &[
            ("noreply@example.com", &[]),
            ("*@example.com", &["example.com", "relay"]),
            ("*@*.example.com", &["shared"]),
            ("*", &["shared", "relay"]),
        ],
        RuleMatch::First,
    );
    assert!(t.has_rules());
    let c = t.choose("Alice@example.com", "example.com", false);
    assert_eq!(
        ds(&c),
        ["example.com/a", "example.com/b", "relay.example/esp"]
    );
    assert_eq!(c.matched, [r#"signing.rule[1] "*@example.com""#]);
    // An exception before the broad rule: matched, signs nothing.
    let c = t.choose("noreply@example.com", "example.com", false);
    assert!(c.keys.is_empty());
    assert_eq!(c.matched.len(), 1);
    // `%` takes the sender's domain, subdomains included.
    let c = t.choose("x@news.example.com", "news.example.com", false);
    assert_eq!(ds(&c), ["news.example.com/mail"]);
    let c = t.choose("x@customer.example", "customer.example", false);
    assert_eq!(ds(&c), ["customer.example/mail", "relay.example/esp"]);
    // subdomains never applies with rules; keys of a From domain no rule
    // names do not sign.
    let no_match = ruled(
        dir.path(),
        &[(None, "example.org", "a")],
        &[("*@example.net", &["example.org"])],
        RuleMatch::First,
    );
    assert!(
        no_match
            .choose("x@example.org", "example.org", true)
            .keys
            .is_empty()
    );
    assert_eq!(no_match.warnings(), Vec::<String>::new());
}

#[test]
fn rules_choose_keys_all_matches_once_each() {
    use crate::config::RuleMatch;
    let dir = tempfile::tempdir().unwrap();
    let t = ruled(
        dir.path(),
        &[
            (None, "example.com", "a"),
            (Some("shared"), "%", "mail"),
            (Some("relay"), "relay.example", "esp"),
            (Some("unused"), "example.net", "u"),
        ],
        &[
            ("*@example.com", &["example.com", "shared"]),
            ("alice@example.com", &["shared", "relay"]),
            ("*", &["relay"]),
        ],
        RuleMatch::All,
    );
    let c = t.choose("alice@example.com", "example.com", false);
    assert_eq!(
        ds(&c),
        ["example.com/a", "example.com/mail", "relay.example/esp"]
    );
    assert_eq!(c.matched.len(), 3);
    let c = t.choose("bob@example.org", "example.org", false);
    assert_eq!(ds(&c), ["relay.example/esp"]);
    assert_eq!(
        t.warnings(),
        ["key example.net named unused (s=u) never signs: no [[signing.rule]] names it"]
    );
}

#[test]
fn without_rules_keys_follow_the_from_domain() {
    let dir = tempfile::tempdir().unwrap();
    let t = ruled(
        dir.path(),
        &[(None, "example.com", "a"), (Some("shared"), "%", "mail")],
        &[],
        crate::config::RuleMatch::First,
    );
    assert!(!t.has_rules());
    let c = t.choose("x@example.com", "example.com", false);
    assert_eq!(ds(&c), ["example.com/a"]);
    assert!(!c.by_rules);
    // A `%` key never signs by domain.
    assert!(
        t.choose("x@other.example", "other.example", true)
            .keys
            .is_empty()
    );
    assert_eq!(t.warnings().len(), 1);
}
