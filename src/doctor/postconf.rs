//! Postfix's configuration as `rmilter doctor` reads it: main.cf (or the
//! output of `postconf -n`, which has the same syntax) with continuation
//! lines and `$name` expansion, the defaults of the parameters the doctor
//! looks at (the installed Postfix's, from `postconf`; a built-in table of
//! Postfix 3.7's, as Debian 12 ships it, when Postfix is not installed), and
//! master.cf (or `postconf -M`) services with their `-o` overrides.

use std::collections::BTreeMap;

/// main.cf: `name = value` lines; a line starting with whitespace continues
/// the previous one; `#` starts a comment line.
#[derive(Debug, Clone, Default)]
pub struct MainCf {
    params: BTreeMap<String, String>,
    /// The installed Postfix's effective values (`postconf` and `postconf
    /// -x`), which replace the built-in table of defaults when present.
    effective: Option<Effective>,
}

/// Every parameter's value as the installed Postfix reports it.
#[derive(Debug, Clone, Default)]
pub struct Effective {
    /// `postconf`: unexpanded, so that `$name` follows a service's `-o`.
    pub raw: BTreeMap<String, String>,
    /// `postconf -x`: expanded, for values that compare
    /// `compatibility_level` (`${{$compatibility_level} <level {2} ? …}`),
    /// which only Postfix evaluates.
    pub expanded: BTreeMap<String, String>,
}

/// The Postfix version whose defaults the built-in table holds.
pub const TABLE_VERSION: &str = "3.7";

impl MainCf {
    pub fn parse(text: &str) -> MainCf {
        let mut params = BTreeMap::new();
        let mut current: Option<(String, String)> = None;
        for line in text.lines() {
            let trimmed = line.trim_start();
            if trimmed.starts_with('#') {
                continue;
            }
            if trimmed.is_empty() {
                continue;
            }
            if line.starts_with([' ', '\t']) {
                if let Some((_, value)) = current.as_mut() {
                    if !value.is_empty() {
                        value.push(' ');
                    }
                    value.push_str(trimmed.trim_end());
                }
                continue;
            }
            if let Some((name, value)) = current.take() {
                params.insert(name, value);
            }
            if let Some((name, value)) = line.split_once('=') {
                current = Some((name.trim().to_string(), value.trim().to_string()));
            }
        }
        if let Some((name, value)) = current {
            params.insert(name, value);
        }
        MainCf {
            params,
            effective: None,
        }
    }

    /// Take defaults from the installed Postfix instead of the table.
    pub fn with_effective(mut self, raw: &str, expanded: &str) -> MainCf {
        self.effective = Some(Effective {
            raw: MainCf::parse(raw).params,
            expanded: MainCf::parse(expanded).params,
        });
        self
    }

    /// Whether defaults come from the installed Postfix (else the table).
    pub fn has_effective(&self) -> bool {
        self.effective.is_some()
    }

    /// The value written in main.cf, unexpanded.
    pub fn explicit(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }

    /// `compatibility_level` as a number (3.6 → 3.6; unset → 0).
    pub fn compatibility_level(&self) -> f64 {
        self.explicit("compatibility_level")
            .and_then(|v| {
                let mut parts = v.trim().split('.');
                let major: f64 = parts.next()?.parse().ok()?;
                let minor: f64 = parts.next().map_or(Some(0.0), |m| m.parse().ok())?;
                Some(major + minor / 100.0)
            })
            .unwrap_or(0.0)
    }

    /// The default of a parameter, unexpanded: the installed Postfix's
    /// value when known, else the built-in table (Postfix 3.7).
    pub fn default(&self, name: &str) -> Option<String> {
        if let Some(eff) = &self.effective {
            let raw = eff.raw.get(name)?;
            if raw.contains("${{") {
                return eff.expanded.get(name).cloned();
            }
            return Some(raw.clone());
        }
        let level = self.compatibility_level();
        let value = match name {
            "smtpd_relay_restrictions" if level < 1.0 => "",
            "smtpd_relay_restrictions" => {
                "permit_mynetworks, permit_sasl_authenticated, defer_unauth_destination"
            }
            "mynetworks_style" if level < 2.0 => "subnet",
            "mynetworks_style" => "host",
            "relay_domains" if level < 2.0 => "$mydestination",
            "myhostname" => return Some(host_name()),
            _ => DEFAULTS.iter().find(|(n, _)| *n == name)?.1,
        };
        Some(value.to_string())
    }
}

/// Defaults (Postfix 3.7) of the parameters the doctor reads.
const DEFAULTS: &[(&str, &str)] = &[
    ("milter_default_action", "tempfail"),
    ("milter_protocol", "6"),
    ("milter_command_timeout", "30s"),
    ("milter_content_timeout", "300s"),
    ("milter_connect_timeout", "30s"),
    ("milter_macro_daemon_name", "$myhostname"),
    ("milter_macro_defaults", ""),
    ("smtpd_milters", ""),
    ("non_smtpd_milters", ""),
    ("receive_override_options", ""),
    ("queue_directory", "/var/spool/postfix"),
    ("mail_owner", "postfix"),
    ("smtpd_tls_auth_only", "no"),
    ("smtpd_sasl_auth_enable", "no"),
    ("smtpd_sasl_security_options", "noanonymous"),
    (
        "smtpd_sasl_tls_security_options",
        "$smtpd_sasl_security_options",
    ),
    ("smtpd_forbid_bare_newline", "no"),
    ("disable_vrfy_command", "no"),
    ("smtpd_helo_required", "no"),
    ("smtpd_recipient_restrictions", ""),
    ("smtpd_tls_security_level", ""),
    ("smtp_tls_security_level", ""),
    ("smtpd_use_tls", "no"),
    ("smtpd_enforce_tls", "no"),
    ("smtpd_tls_wrappermode", "no"),
    ("smtp_tls_mandatory_protocols", ">=TLSv1"),
    ("smtp_tls_protocols", ">=TLSv1"),
    ("smtpd_tls_mandatory_protocols", ">=TLSv1"),
    ("smtpd_tls_protocols", ">=TLSv1"),
    ("smtp_tls_mandatory_ciphers", "medium"),
    ("smtpd_tls_mandatory_ciphers", "medium"),
    ("smtpd_client_connection_rate_limit", "0"),
    ("smtpd_client_message_rate_limit", "0"),
    ("header_checks", ""),
    ("nested_header_checks", "$header_checks"),
    ("mime_header_checks", "$header_checks"),
    ("smtp_header_checks", ""),
    ("inet_interfaces", "all"),
    (
        "mydestination",
        "$myhostname, localhost.$mydomain, localhost",
    ),
    ("relay_domains", ""),
    ("virtual_alias_domains", "$virtual_alias_maps"),
    ("virtual_mailbox_domains", "$virtual_mailbox_maps"),
    ("virtual_alias_maps", "$virtual_maps"),
    ("virtual_mailbox_maps", ""),
    ("virtual_maps", ""),
    ("mynetworks", ""),
    ("mydomain", "localdomain"),
    ("syslog_name", "postfix"),
];

fn host_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".to_string())
}

/// Parameter values as one service sees them: its `-o` overrides over
/// main.cf over the defaults, with `$name` expanded.
#[derive(Clone, Copy)]
pub struct Params<'a> {
    pub main: &'a MainCf,
    pub overrides: &'a [(String, String)],
}

impl<'a> Params<'a> {
    pub fn global(main: &'a MainCf) -> Params<'a> {
        Params {
            main,
            overrides: &[],
        }
    }

    /// The raw value: override, main.cf, default; `None` when unknown.
    pub fn raw(&self, name: &str) -> Option<String> {
        self.overrides
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .or_else(|| self.main.explicit(name).map(str::to_string))
            .or_else(|| self.main.default(name))
    }

    /// Whether the service or main.cf sets `name` (not the default).
    pub fn is_set(&self, name: &str) -> bool {
        self.overrides.iter().any(|(n, _)| n == name) || self.main.explicit(name).is_some()
    }

    /// The expanded value ("" when unknown).
    pub fn get(&self, name: &str) -> String {
        let raw = self.raw(name).unwrap_or_default();
        self.expand(&raw)
    }

    /// A yes/no parameter.
    pub fn yes(&self, name: &str) -> bool {
        self.get(name).trim().eq_ignore_ascii_case("yes")
    }

    /// Expand `$name`, `${name}`, `$(name)`, `${name?value}`,
    /// `${name:value}` (also with `{value}` in braces) and `$$`.
    pub fn expand(&self, value: &str) -> String {
        self.expand_depth(value, 0)
    }

    fn expand_depth(&self, value: &str, depth: usize) -> String {
        if depth > 20 || !value.contains('$') {
            return value.to_string();
        }
        let mut out = String::new();
        let chars: Vec<char> = value.chars().collect();
        let mut i = 0;
        while i < chars.len() {
            if chars[i] != '$' {
                out.push(chars[i]);
                i += 1;
                continue;
            }
            match chars.get(i + 1) {
                Some('$') => {
                    out.push('$');
                    i += 2;
                }
                Some(&open @ ('{' | '(')) => {
                    let close = if open == '{' { '}' } else { ')' };
                    // The matching close, counting nested pairs.
                    let mut level = 0;
                    let mut end = None;
                    for (j, &c) in chars.iter().enumerate().skip(i + 1) {
                        if c == open {
                            level += 1;
                        } else if c == close {
                            level -= 1;
                            if level == 0 {
                                end = Some(j);
                                break;
                            }
                        }
                    }
                    let Some(end) = end else {
                        out.extend(&chars[i..]);
                        break;
                    };
                    let inner: String = chars[i + 2..end].iter().collect();
                    out.push_str(&self.expand_braced(&inner, depth));
                    i = end + 1;
                }
                Some(c) if c.is_ascii_alphanumeric() || *c == '_' => {
                    let start = i + 1;
                    let mut j = start;
                    while j < chars.len() && (chars[j].is_ascii_alphanumeric() || chars[j] == '_') {
                        j += 1;
                    }
                    let name: String = chars[start..j].iter().collect();
                    out.push_str(&self.lookup(&name, depth));
                    i = j;
                }
                _ => {
                    out.push('$');
                    i += 1;
                }
            }
        }
        out
    }

    fn lookup(&self, name: &str, depth: usize) -> String {
        let raw = self.raw(name).unwrap_or_default();
        self.expand_depth(&raw, depth + 1)
    }

    fn expand_braced(&self, inner: &str, depth: usize) -> String {
        let split = inner.find(['?', ':']);
        let Some(at) = split else {
            return self.lookup(inner.trim(), depth);
        };
        let name = inner[..at].trim();
        let mut alt = inner[at + 1..].trim();
        if let Some(stripped) = alt.strip_prefix('{').and_then(|a| a.strip_suffix('}')) {
            alt = stripped;
        }
        let value = self.lookup(name, depth);
        let set = !value.trim().is_empty();
        let take = if inner.as_bytes()[at] == b'?' {
            set
        } else {
            !set
        };
        if take {
            self.expand_depth(alt, depth + 1)
        } else {
            String::new()
        }
    }
}

/// Split a Postfix list (comma and/or whitespace separated), keeping
/// `{ ... }` groups whole.
pub fn list(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut depth = 0usize;
    for c in value.chars() {
        match c {
            '{' => {
                depth += 1;
                current.push(c);
            }
            '}' => {
                depth = depth.saturating_sub(1);
                current.push(c);
            }
            ',' | ' ' | '\t' | '\n' | '\r' if depth == 0 => {
                if !current.trim().is_empty() {
                    out.push(current.trim().to_string());
                }
                current.clear();
            }
            _ => current.push(c),
        }
    }
    if !current.trim().is_empty() {
        out.push(current.trim().to_string());
    }
    out
}

/// One master.cf service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// The service name (`smtp`, `submission`, `127.0.0.1:2525`).
    pub name: String,
    /// `inet`, `unix`, `unix-dgram`, `fifo` or `pass`.
    pub kind: String,
    /// The chroot column (`y`, `n` or `-`).
    pub chroot: String,
    /// The command name (`smtpd`, `cleanup`, ...).
    pub command: String,
    /// `-o name=value` overrides, in order.
    pub overrides: Vec<(String, String)>,
    /// The line the entry starts on.
    pub line: usize,
}

impl Service {
    /// Whether the service runs chrooted in the queue directory. `-` is
    /// the default: `y` before compatibility level 1, `n` since.
    pub fn chrooted(&self, main: &MainCf) -> bool {
        match self.chroot.as_str() {
            "y" => true,
            "n" => false,
            _ => main.compatibility_level() < 1.0,
        }
    }

    /// The TCP port of an inet service, when it can be told.
    pub fn port(&self) -> Option<u16> {
        if self.kind != "inet" {
            return None;
        }
        let port = self.name.rsplit(':').next().unwrap_or(&self.name);
        match port {
            "smtp" => Some(25),
            "submission" => Some(587),
            "submissions" | "smtps" => Some(465),
            p => p.parse().ok(),
        }
    }

    /// A message submission service (port 587 or 465, or so named).
    pub fn is_submission(&self) -> bool {
        let syslog = self
            .overrides
            .iter()
            .rev()
            .find(|(n, _)| n == "syslog_name")
            .map(|(_, v)| v.as_str())
            .unwrap_or_default();
        matches!(self.port(), Some(587 | 465)) || syslog.contains("submission")
    }

    /// How the service is named in findings: `smtp/inet` (port 25).
    pub fn label(&self) -> String {
        match self.port() {
            Some(port) => format!("{}/{} (port {port})", self.name, self.kind),
            None => format!("{}/{}", self.name, self.kind),
        }
    }

    pub fn params<'a>(&'a self, main: &'a MainCf) -> Params<'a> {
        Params {
            main,
            overrides: &self.overrides,
        }
    }
}

/// master.cf (or `postconf -M` output): one service per entry; a line
/// starting with whitespace continues the entry; `#` starts a comment line.
pub fn parse_master(text: &str) -> Vec<Service> {
    let mut entries: Vec<(usize, String)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.starts_with('#') || trimmed.is_empty() {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if let Some((_, entry)) = entries.last_mut() {
                entry.push(' ');
                entry.push_str(trimmed);
            }
            continue;
        }
        entries.push((i + 1, line.to_string()));
    }
    entries
        .into_iter()
        .filter_map(|(line, entry)| {
            let tokens = tokens(&entry);
            if tokens.len() < 8 {
                return None;
            }
            let mut overrides = Vec::new();
            let mut args = tokens[8..].iter();
            while let Some(arg) = args.next() {
                let setting = if arg == "-o" {
                    args.next().map(String::as_str)
                } else {
                    arg.strip_prefix("-o").filter(|s| !s.is_empty())
                };
                if let Some(setting) = setting {
                    let setting = setting
                        .strip_prefix('{')
                        .and_then(|s| s.strip_suffix('}'))
                        .unwrap_or(setting);
                    if let Some((name, value)) = setting.split_once('=') {
                        overrides.push((name.trim().to_string(), value.trim().to_string()));
                    }
                }
            }
            Some(Service {
                name: tokens[0].clone(),
                kind: tokens[1].clone(),
                chroot: tokens[4].clone(),
                command: tokens[7].clone(),
                overrides,
                line,
            })
        })
        .collect()
}

/// Whitespace-separated tokens, `{ ... }` kept whole.
fn tokens(entry: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut depth = 0usize;
    for c in entry.chars() {
        match c {
            '{' => {
                depth += 1;
                current.push(c);
            }
            '}' => {
                depth = depth.saturating_sub(1);
                current.push(c);
            }
            c if c.is_whitespace() && depth == 0 => {
                if !current.is_empty() {
                    out.push(std::mem::take(&mut current));
                }
            }
            c => current.push(c),
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn main_cf_continuations_comments_and_expansion() {
        let main = MainCf::parse(
            "# comment\nmyhostname = mx.example.org\nsmtpd_milters = unix:/a,\n    inet:127.0.0.1:1\n\
             non_smtpd_milters = $smtpd_milters\nx = ${myhostname}/$(myhostname)\n\
             y = ${unset?{yes}}${myhostname?{set}} ${unset:{fallback}}\nprice = $$5\n\
             compatibility_level = 3.6\n",
        );
        let p = Params::global(&main);
        assert_eq!(p.get("smtpd_milters"), "unix:/a, inet:127.0.0.1:1");
        assert_eq!(p.get("non_smtpd_milters"), "unix:/a, inet:127.0.0.1:1");
        assert_eq!(p.get("x"), "mx.example.org/mx.example.org");
        assert_eq!(p.get("y"), "set fallback");
        assert_eq!(p.get("price"), "$5");
        assert_eq!(p.get("milter_default_action"), "tempfail");
        assert_eq!(p.get("milter_macro_daemon_name"), "mx.example.org");
        assert_eq!(p.get("mynetworks_style"), "host");
        assert_eq!(
            list(&p.get("smtpd_milters")),
            ["unix:/a", "inet:127.0.0.1:1"]
        );
        assert_eq!(
            list("{ inet:localhost:1, default_action=accept }, unix:/b"),
            ["{ inet:localhost:1, default_action=accept }", "unix:/b"]
        );
        // A self-reference ends.
        let main = MainCf::parse("a = $a x\n");
        assert!(Params::global(&main).get("a").ends_with('x'));
    }

    #[test]
    fn master_cf_services_and_overrides() {
        let services = parse_master(
            "# comment\nsmtp      inet  n       -       y       -       -       smtpd\n\
             submission inet n       -       y       -       -       smtpd\n  -o syslog_name=postfix/submission\n\
             \t-o { smtpd_milters = unix:/x, unix:/y }\n  -o milter_macro_daemon_name=ORIGINATING\n\
             cleanup   unix  n       -       -       -       0       cleanup\n\
             127.0.0.1:2525 inet n - n - - smtpd -o {milter_macro_daemon_name=ORIGINATING}\n\
             short line\n",
        );
        assert_eq!(services.len(), 4);
        assert_eq!(services[0].port(), Some(25));
        assert!(!services[0].is_submission());
        assert_eq!(services[1].port(), Some(587));
        assert!(services[1].is_submission());
        assert_eq!(
            services[1].overrides,
            vec![
                ("syslog_name".to_string(), "postfix/submission".to_string()),
                ("smtpd_milters".to_string(), "unix:/x, unix:/y".to_string()),
                (
                    "milter_macro_daemon_name".to_string(),
                    "ORIGINATING".to_string()
                ),
            ]
        );
        assert_eq!(services[1].line, 3);
        let main = MainCf::parse("compatibility_level = 3.6\n");
        assert!(services[0].chrooted(&main));
        assert!(!services[2].chrooted(&main));
        assert!(services[2].chrooted(&MainCf::parse("")));
        assert_eq!(services[3].port(), Some(2525));
        assert_eq!(
            services[3].params(&main).get("milter_macro_daemon_name"),
            "ORIGINATING"
        );
    }
}
