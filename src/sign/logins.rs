//! Which SASL logins may have which senders signed (`[signing.logins]`).
//!
//! A login may send as an address when the `allow` table grants it, when
//! the address is at the login's own domain (`own_domain`), or when
//! Postfix's `smtpd_sender_login_maps` source file lists the login as an
//! owner of the address (or of `@domain`). The table is read once per
//! configuration load; nothing here runs a lookup per message beyond
//! hash-map reads.

use crate::config::LoginPolicy;
use std::collections::HashMap;
use std::path::Path;

/// Sender key (lower case `user@domain`, `@domain`, or a bare `user`) →
/// owner logins (lower case).
type SenderMap = HashMap<String, Vec<String>>;

/// The login policy with the sender-login map loaded.
#[derive(Debug, Clone, Default)]
pub struct LoginTable {
    policy: LoginPolicy,
    /// Postfix's `smtpd_sender_login_maps`.
    map: SenderMap,
    warnings: Vec<String>,
}

/// Whether a login may send as an address, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginVerdict {
    Allowed(String),
    Refused(String),
}

impl LoginTable {
    /// Load the policy's map file (when named and the policy is enabled).
    /// Errors name the file and line.
    pub fn load(policy: &LoginPolicy) -> Result<LoginTable, String> {
        let mut table = LoginTable {
            policy: policy.clone(),
            ..LoginTable::default()
        };
        // Read only when it is used: a disabled policy never fails a load.
        if let Some(path) = policy.sender_login_maps.as_ref().filter(|_| policy.enabled) {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
            let (map, warnings) = parse_map(path, &text)?;
            table.map = map;
            table.warnings = warnings;
        }
        Ok(table)
    }

    pub fn enabled(&self) -> bool {
        self.policy.enabled
    }

    /// Lines of the map file that can never match (bare `user` keys).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// May `login` send as `address` (the From gate's, domain a
    /// lower-case A-label)?
    pub fn check(&self, login: &str, address: &str) -> LoginVerdict {
        let login = login.trim().to_lowercase();
        let address = address.to_lowercase();
        let domain = address.rsplit_once('@').map_or("", |(_, d)| d);
        if let Some((_, senders)) = self.policy.allow.iter().find(|(l, _)| *l == login)
            && let Some(s) = senders
                .iter()
                .find(|s| *s == "*" || **s == address || **s == domain)
        {
            return LoginVerdict::Allowed(format!("signing.logins.allow grants {login} {s}"));
        }
        if self.policy.own_domain
            && let Some((_, own)) = login.rsplit_once('@')
            && crate::config::normalize_domain(own).is_ok_and(|own| own == domain)
        {
            return LoginVerdict::Allowed(format!("{domain} is the login's own domain"));
        }
        if let Some(path) = &self.policy.sender_login_maps {
            // Postfix takes the first key found: the address, then @domain.
            let key = [address.clone(), format!("@{domain}")]
                .into_iter()
                .find(|k| self.map.contains_key(k));
            if let Some(key) = key {
                let owners = &self.map[&key];
                if owners.contains(&login) {
                    return LoginVerdict::Allowed(format!(
                        "{} lists {login} for {key}",
                        path.display()
                    ));
                }
                return LoginVerdict::Refused(format!(
                    "login {login} may not send as {address}: {} lists only {} for {key}",
                    path.display(),
                    owners.join(", ")
                ));
            }
        }
        LoginVerdict::Refused(format!(
            "login {login} may not send as {address}: {}",
            self.sources()
        ))
    }

    /// What was consulted, for a refusal.
    fn sources(&self) -> String {
        let mut s = vec!["no grant in signing.logins.allow".to_string()];
        if self.policy.own_domain {
            s.push("not the login's own domain".to_string());
        }
        if let Some(path) = &self.policy.sender_login_maps {
            s.push(format!("no entry in {}", path.display()));
        }
        s.join(", ")
    }
}

/// Parse the plain-text source of a Postfix lookup table (postmap(1)
/// format): `key value` lines, `#` comments, blank lines, and lines that
/// start with white space continuing the previous one. Values are logins
/// separated by commas and/or white space.
fn parse_map(path: &Path, text: &str) -> Result<(SenderMap, Vec<String>), String> {
    let mut logical: Vec<(usize, String)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            match logical.last_mut() {
                Some((_, prev)) => {
                    prev.push(' ');
                    prev.push_str(trimmed);
                }
                None => {
                    return Err(format!(
                        "{}:{}: continuation line without a line before it",
                        path.display(),
                        i + 1
                    ));
                }
            }
        } else {
            logical.push((i + 1, trimmed.to_string()));
        }
    }
    let mut map: HashMap<String, Vec<String>> = HashMap::new();
    let mut warnings = Vec::new();
    for (line, entry) in logical {
        let (key, value) = entry
            .split_once([' ', '\t'])
            .map(|(k, v)| (k, v.trim()))
            .unwrap_or((&entry, ""));
        let logins: Vec<String> = value
            .split([',', ' ', '\t'])
            .filter(|l| !l.is_empty())
            .map(str::to_lowercase)
            .collect();
        if logins.is_empty() {
            return Err(format!(
                "{}:{line}: {key:?} has no login (expected \"sender  login1, login2\")",
                path.display()
            ));
        }
        let key = key.to_lowercase();
        let key = match key.rsplit_once('@') {
            Some((local, domain)) => {
                let domain = crate::config::normalize_domain(domain)
                    .map_err(|m| format!("{}:{line}: {m}", path.display()))?;
                format!("{local}@{domain}")
            }
            None => {
                warnings.push(format!(
                    "{}:{line}: {key:?} has no @: Postfix matches such keys only for its \
                     local domains, rmilter never",
                    path.display()
                ));
                key
            }
        };
        // postmap keeps the first of duplicate keys (and warns).
        map.entry(key).or_insert(logins);
    }
    Ok((map, warnings))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Action;

    fn table(own_domain: bool, allow: &[(&str, &[&str])], map: Option<&str>) -> LoginTable {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sender_login");
        if let Some(text) = map {
            std::fs::write(&path, text).unwrap();
        }
        let policy = LoginPolicy {
            enabled: true,
            own_domain,
            sender_login_maps: map.map(|_| path.clone()),
            action: Action::Accept,
            allow: allow
                .iter()
                .map(|(l, s)| (l.to_string(), s.iter().map(|s| s.to_string()).collect()))
                .collect(),
        };
        LoginTable::load(&policy).unwrap()
    }

    fn allowed(t: &LoginTable, login: &str, address: &str) -> bool {
        matches!(t.check(login, address), LoginVerdict::Allowed(_))
    }

    #[test]
    fn own_domain_and_allow_table() {
        let t = table(
            true,
            &[
                ("relay", &["*"]),
                ("bob", &["example.org", "info@example.net"]),
            ],
            None,
        );
        assert!(allowed(
            &t,
            "alice@customer-a.example",
            "alice@customer-a.example"
        ));
        assert!(allowed(
            &t,
            "Alice@Customer-A.example",
            "sales@customer-a.example"
        ));
        assert!(!allowed(
            &t,
            "alice@customer-a.example",
            "ceo@customer-b.example"
        ));
        assert!(!allowed(
            &t,
            "alice@customer-a.example",
            "x@sub.customer-a.example"
        ));
        assert!(allowed(&t, "relay", "anyone@anywhere.example"));
        assert!(allowed(&t, "BOB", "x@example.org"));
        assert!(allowed(&t, "bob", "info@example.net"));
        assert!(!allowed(&t, "bob", "sales@example.net"));
        let off = table(false, &[], None);
        assert!(!allowed(
            &off,
            "alice@customer-a.example",
            "alice@customer-a.example"
        ));
    }

    #[test]
    fn postfix_sender_login_maps() {
        let text = "# owners\n\
                    alice@example.com   alice\n\
                    @example.com        bob, carol\n\
                    \tdave\n\
                    @example.net\tbob\n\
                    localonly           eve\n";
        let t = table(false, &[], Some(text));
        assert!(allowed(&t, "alice", "alice@example.com"));
        // The address key is found first: @example.com is not consulted.
        assert!(!allowed(&t, "bob", "alice@example.com"));
        assert!(allowed(&t, "bob", "sales@example.com"));
        assert!(allowed(&t, "dave", "sales@example.com"));
        assert!(allowed(&t, "bob", "x@example.net"));
        assert!(!allowed(&t, "carol", "x@example.net"));
        assert!(!allowed(&t, "eve", "localonly@example.com"));
        assert_eq!(t.warnings().len(), 1);
        match t.check("carol", "x@example.net") {
            LoginVerdict::Refused(why) => {
                assert!(why.contains("lists only bob for @example.net"), "{why}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn map_errors_name_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m");
        let err = parse_map(&path, "a@example.com x\n@example.org\n").unwrap_err();
        assert_eq!(
            err,
            format!(
                "{}:2: \"@example.org\" has no login (expected \"sender  login1, login2\")",
                path.display()
            )
        );
        assert!(
            parse_map(&path, " x\n")
                .unwrap_err()
                .ends_with(":1: continuation line without a line before it")
        );
    }
}
