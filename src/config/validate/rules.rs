//! Validation of the signing rules (`[[signing.rule]]`, `signing.rule_match`),
//! the key names and `%` keys of `[[key]]` rows that rules refer to, and
//! the login authorisation of `[signing.logins]`.
//!
//! Rules are checked against the key table here (every reference names a
//! key or a signing domain); which keys a reference reaches at run time
//! (managed directories sign with their active keys) is resolved when the
//! keys are loaded (`crate::sign::KeyTable`).

use super::super::raw::{RawKey, RawLogins, RawSigningRule};
use super::super::{
    Action, ConfigError, DomainPattern, LoginPolicy, RuleMatch, SENDER_DOMAIN, SenderPattern,
    SigningRule,
};
use super::{Ctx, action, normalize_domain};
use std::path::PathBuf;

/// `signing.rule_match`.
pub(super) fn rule_match(ctx: &Ctx, raw: Option<&str>) -> Result<RuleMatch, ConfigError> {
    match raw.unwrap_or("first") {
        "first" => Ok(RuleMatch::First),
        "all" => Ok(RuleMatch::All),
        other => Err(ctx.err(
            "signing.rule_match",
            format!("expected \"first\" or \"all\", got {other:?}"),
        )),
    }
}

/// A key name: what rules write in `keys`. Printable ASCII without spaces,
/// quotes or commas, so that it reads the same in logs and tables.
fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && name != SENDER_DOMAIN
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"\"',".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid key name {name:?} (printable ASCII without spaces, quotes or commas)"
        ))
    }
}

/// The names of the `[[key]]` rows (static and managed): unique, and `%`
/// keys must have one. Returns (name, row index) pairs.
pub(super) fn key_names(ctx: &Ctx, raw: &[RawKey]) -> Result<Vec<(String, usize)>, ConfigError> {
    let mut names: Vec<(String, usize)> = Vec::new();
    for (i, key) in raw.iter().enumerate() {
        let origin = format!("key[{i}]");
        let sender_domain = key.domain.as_deref() == Some(SENDER_DOMAIN);
        if sender_domain && key.dir.is_some() {
            return Err(ctx.err(
                format!("{origin}.dir"),
                "a managed key directory needs a concrete domain, not \"%\"",
            ));
        }
        if key.domains.is_some() && !sender_domain {
            return Err(ctx.err(
                format!("{origin}.domains"),
                "only for a key with domain = \"%\" (the domains it signs for)",
            ));
        }
        let Some(name) = &key.name else {
            if sender_domain {
                return Err(ctx.err(
                    format!("{origin}.name"),
                    "missing: a key with domain = \"%\" signs only through a [[signing.rule]], \
                     which names it",
                ));
            }
            continue;
        };
        check_name(name).map_err(|m| ctx.err(format!("{origin}.name"), m))?;
        if let Some((_, j)) = names.iter().find(|(n, _)| n == name) {
            return Err(ctx.err(
                format!("{origin}.name"),
                format!("{name:?} is already the name of key[{j}]"),
            ));
        }
        names.push((name.clone(), i));
    }
    Ok(names)
}

/// The `domains` of a `%` key.
pub(super) fn key_domains(
    ctx: &Ctx,
    origin: &str,
    raw: &RawKey,
) -> Result<Vec<String>, ConfigError> {
    let mut out: Vec<String> = Vec::new();
    for d in raw.domains.iter().flatten() {
        let d = normalize_domain(d).map_err(|m| ctx.err(format!("{origin}.domains"), m))?;
        if !out.contains(&d) {
            out.push(d);
        }
    }
    Ok(out)
}

/// Parse a sender pattern (see [`SenderPattern`]).
pub fn parse_sender_pattern(text: &str) -> Result<SenderPattern, String> {
    let bad = |why: &str| {
        format!(
            "{text:?}: {why}; expected \"alice@example.com\", \"*@example.com\", \
             \"*@*.example.com\" or \"*\""
        )
    };
    if text == "*" {
        return Ok(SenderPattern {
            text: text.to_string(),
            local: None,
            domain: DomainPattern::Any,
        });
    }
    let (local, domain) = text
        .rsplit_once('@')
        .ok_or_else(|| bad("no @ in the pattern"))?;
    let local = match local {
        "*" => None,
        "" => return Err(bad("empty local part")),
        l if l.contains('*') => return Err(bad("* must stand alone as the local part")),
        l if l.chars().any(|c| c.is_whitespace() || c.is_control()) => {
            return Err(bad("white space in the local part"));
        }
        l => Some(l.to_lowercase()),
    };
    let domain = match domain {
        "*" => DomainPattern::Any,
        d => {
            let (sub, rest) = match d.strip_prefix("*.") {
                Some(rest) => (true, rest),
                None => (false, d),
            };
            if rest.contains('*') {
                return Err(bad(
                    "* in the domain only as \"*\" or at the start of \"*.domain\"",
                ));
            }
            let rest = normalize_domain(rest).map_err(|m| bad(&m))?;
            if sub {
                DomainPattern::Subdomains(rest)
            } else {
                DomainPattern::Exact(rest)
            }
        }
    };
    Ok(SenderPattern {
        text: text.to_string(),
        local,
        domain,
    })
}

/// `[[signing.rule]]`, each key reference checked against the key table:
/// a `[[key]]` name, else a domain some `[[key]]` row signs for.
pub(super) fn rules(
    ctx: &Ctx,
    raw: &[RawSigningRule],
    names: &[(String, usize)],
    keys: &[RawKey],
) -> Result<Vec<SigningRule>, ConfigError> {
    let domains: Vec<String> = keys
        .iter()
        .filter_map(|k| k.domain.as_deref())
        .filter(|d| *d != SENDER_DOMAIN)
        .filter_map(|d| normalize_domain(d).ok())
        .collect();
    let mut out = Vec::with_capacity(raw.len());
    for (i, rule) in raw.iter().enumerate() {
        let origin = format!("signing.rule[{i}]");
        let sender = rule
            .sender
            .as_deref()
            .ok_or_else(|| ctx.err(format!("{origin}.sender"), "missing"))?;
        let sender = parse_sender_pattern(sender.trim())
            .map_err(|m| ctx.err(format!("{origin}.sender"), m))?;
        let refs = rule.keys.clone().ok_or_else(|| {
            ctx.err(
                format!("{origin}.keys"),
                "missing (an empty list signs nothing)",
            )
        })?;
        let mut keys_out: Vec<String> = Vec::new();
        for r in refs {
            let known = names.iter().any(|(n, _)| *n == r)
                || normalize_domain(&r).is_ok_and(|d| domains.contains(&d));
            if !known {
                return Err(ctx.err(
                    format!("{origin}.keys"),
                    format!(
                        "{r:?} is neither the name of a [[key]] nor a domain a [[key]] signs for"
                    ),
                ));
            }
            let r = if names.iter().any(|(n, _)| *n == r) {
                r
            } else {
                normalize_domain(&r).unwrap_or(r)
            };
            if !keys_out.contains(&r) {
                keys_out.push(r);
            }
        }
        out.push(SigningRule {
            sender,
            keys: keys_out,
            origin,
        });
    }
    Ok(out)
}

/// `[signing.logins]`.
pub(super) fn logins(ctx: &Ctx, raw: &RawLogins) -> Result<LoginPolicy, ConfigError> {
    let sender_login_maps = match raw.sender_login_maps.as_deref().unwrap_or("") {
        "" => None,
        text => {
            Some(login_map_path(text).map_err(|m| ctx.err("signing.logins.sender_login_maps", m))?)
        }
    };
    let mut allow: Vec<(String, Vec<String>)> = Vec::new();
    for (login, senders) in raw.allow.iter().flatten() {
        let key = format!("signing.logins.allow.{login:?}");
        if login.trim().is_empty() || login.chars().any(char::is_whitespace) {
            return Err(ctx.err(key, "a login name without white space"));
        }
        let mut list = Vec::new();
        for s in senders {
            list.push(allowed_sender(s).map_err(|m| ctx.err(key.clone(), m))?);
        }
        allow.push((login.to_lowercase(), list));
    }
    Ok(LoginPolicy {
        enabled: raw.enabled.unwrap_or(false),
        own_domain: raw.own_domain.unwrap_or(true),
        sender_login_maps,
        action: action(
            ctx,
            "signing.logins.action",
            raw.action.as_deref(),
            Action::Accept,
        )?,
        allow,
    })
}

/// What a login may send as: `*`, a domain (`example.com` or Postfix's
/// `@example.com`: any address there) or one address; lower case.
fn allowed_sender(text: &str) -> Result<String, String> {
    if text == "*" {
        return Ok(text.to_string());
    }
    let (local, domain) = match text.rsplit_once('@') {
        Some((local, domain)) => (local, domain),
        None => ("", text),
    };
    let domain = normalize_domain(domain).map_err(|_| {
        format!("{text:?}: expected a domain (\"example.com\"), an address or \"*\"")
    })?;
    if local.is_empty() {
        Ok(domain)
    } else {
        Ok(format!("{}@{domain}", local.to_lowercase()))
    }
}

/// The source file of a Postfix lookup table: a path, or `hash:PATH`,
/// `texthash:PATH`, `lmdb:PATH`, `btree:PATH`, `cdb:PATH`, `dbm:PATH`
/// (whose source text is PATH). Other table types cannot be read.
fn login_map_path(text: &str) -> Result<PathBuf, String> {
    let path = match text.split_once(':') {
        Some((kind, path)) if !kind.contains('/') => {
            if !["hash", "texthash", "lmdb", "btree", "cdb", "dbm"].contains(&kind) {
                return Err(format!(
                    "{kind}: tables cannot be read; name the plain-text source file of a \
                     hash:, texthash:, lmdb:, btree:, cdb: or dbm: table"
                ));
            }
            path
        }
        _ => text,
    };
    if !path.starts_with('/') {
        return Err(format!("must be an absolute path, got {path:?}"));
    }
    Ok(PathBuf::from(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> SenderPattern {
        parse_sender_pattern(text).unwrap()
    }

    #[test]
    fn sender_patterns_match_as_documented() {
        let exact = p("Alice@Example.COM");
        assert!(exact.matches("alice@example.com"));
        assert!(exact.matches("ALICE@example.com"));
        assert!(!exact.matches("bob@example.com"));
        assert!(!exact.matches("alice@sub.example.com"));

        let domain = p("*@example.com");
        assert!(domain.matches("anyone@example.com"));
        assert!(!domain.matches("anyone@sub.example.com"));
        assert!(!domain.matches("anyone@badexample.com"));

        let sub = p("*@*.example.com");
        assert!(sub.matches("a@news.example.com"));
        assert!(sub.matches("a@deep.news.example.com"));
        assert!(!sub.matches("a@example.com"));
        assert!(!sub.matches("a@badexample.com"));
        assert!(!sub.matches("a@xexample.com"));

        let all = p("*");
        assert!(all.matches("x@anything.example"));

        let user_any = p("postmaster@*");
        assert!(user_any.matches("postmaster@example.org"));
        assert!(!user_any.matches("root@example.org"));

        // IDN domains compare as A-labels, as the From gate gives them.
        assert!(p("*@bücher.example").matches("x@xn--bcher-kva.example"));
    }

    #[test]
    fn bad_sender_patterns_are_refused() {
        for bad in [
            "",
            "example.com",
            "a*@example.com",
            "*@exa*mple.com",
            "*@",
            "@example.com",
            "*@example..com",
            "*@*.",
            "a b@example.com",
        ] {
            assert!(parse_sender_pattern(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn allowed_senders_and_map_paths() {
        assert_eq!(allowed_sender("@Example.com").unwrap(), "example.com");
        assert_eq!(allowed_sender("example.com").unwrap(), "example.com");
        assert_eq!(
            allowed_sender("Info@Example.com").unwrap(),
            "info@example.com"
        );
        assert_eq!(allowed_sender("*").unwrap(), "*");
        assert!(allowed_sender("not a domain").is_err());
        assert_eq!(
            login_map_path("hash:/etc/postfix/sender_login").unwrap(),
            PathBuf::from("/etc/postfix/sender_login")
        );
        assert!(login_map_path("pcre:/etc/postfix/x").is_err());
        assert!(login_map_path("relative").is_err());
    }
}
