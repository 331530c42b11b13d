//! opendkim.conf and its datasets → the signing half of rmilter.toml: keys
//! (KeyTable, or the single-key form Domain/Selector/KeyFile), signing rules
//! (SigningTable, in OpenDKIM's lookup order), outbound networks
//! (InternalHosts) and the signing options; and the key-file check that
//! prints the commands making each key acceptable to rmilter.

use super::conf::{self, ConfFile, DatasetKind, Row, Setting};
use super::options::{Daemon, Disposition};
use super::{Ctx, KeyOut, MigrateError, RuleOut, Status};
use crate::config::{DEFAULT_HEADERS, DEFAULT_OVERSIGN_HEADERS};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

const D: Option<Daemon> = Some(Daemon::Opendkim);

/// Options whose handling is below; every other option is reported with
/// its table disposition.
const HANDLED: &[&str] = &[
    "authservid",
    "canonicalization",
    "domain",
    "keyfile",
    "selector",
    "keytable",
    "signingtable",
    "multiplesignatures",
    "subdomains",
    "internalhosts",
    "macrolist",
    "oversignheaders",
    "signheaders",
    "omitheaders",
    "signaturettl",
    "minimumkeybits",
    "dnstimeout",
    "nameservers",
    "on-internalerror",
    "maximumsignaturestoverify",
    "temporarydirectory",
    "mode",
    "signaturealgorithm",
];

pub fn translate(c: &ConfFile, cx: &mut Ctx) -> Result<(), MigrateError> {
    let base = c.path.parent().unwrap_or(Path::new("/")).to_path_buf();
    for (name, s) in &c.settings {
        if HANDLED.contains(&name.as_str()) {
            continue;
        }
        report_by_table(s, cx);
    }
    let mode = c.get("Mode").map(|s| s.value.to_ascii_lowercase());
    let signs = mode.as_deref().is_none_or(|m| m.contains('s'));
    if let Some(s) = c.get("Mode") {
        let text = if signs {
            "signing: outbound mail (SASL, outbound.networks, local submission) is signed; inbound mail is verified"
        } else {
            "Mode without s: nothing was signed, so no [[key]] is written"
        };
        cx.add(D, s.info.name, s.at(), Status::Translated, text);
    }

    if let Some(s) = c.get("SignatureAlgorithm") {
        let v = s.value.to_ascii_lowercase();
        let (status, text) = match v.as_str() {
            "rsa-sha256" | "ed25519-sha256" => (
                Status::NotNeeded,
                "the algorithm follows each key file (RSA: rsa-sha256, Ed25519: ed25519-sha256)",
            ),
            _ => (
                Status::NotSupported,
                "rsa-sha1 signatures are never made: rmilter signs with rsa-sha256 (RFC 8301)",
            ),
        };
        cx.add(D, s.info.name, s.at(), status, text);
    }

    // Canonicalization: OpenDKIM's default is simple/simple, rmilter's relaxed/relaxed.
    let canon = match c.get("Canonicalization") {
        Some(s) => {
            let v = s.value.to_ascii_lowercase();
            let (h, b) = v.split_once('/').unwrap_or((v.as_str(), "simple"));
            for part in [h, b] {
                if part != "simple" && part != "relaxed" {
                    return Err(MigrateError::Invalid {
                        path: s.file.clone(),
                        line: s.line,
                        reason: format!("Canonicalization {v:?}: expected simple or relaxed"),
                    });
                }
            }
            cx.add(
                D,
                s.info.name,
                s.at(),
                Status::Translated,
                "signing.canonicalization",
            );
            (format!("{h}/{b}"), format!("{} Canonicalization", s.at()))
        }
        None => (
            "simple/simple".to_string(),
            "OpenDKIM's default (Canonicalization unset)".to_string(),
        ),
    };
    cx.plan.canonicalization = Some(canon);

    if let Some(s) = c.get("AuthservID") {
        let v = s.value.trim();
        let v = if v.eq_ignore_ascii_case("HOSTNAME") {
            ""
        } else {
            v
        };
        cx.plan.authserv_id = Some((v.to_string(), format!("{} AuthservID", s.at())));
        cx.add(D, s.info.name, s.at(), Status::Translated, "authserv_id");
    }

    headers(c, &base, cx)?;
    simple_options(c, cx)?;
    networks(c, &base, cx)?;
    macros(c, cx);

    // Keys and rules.
    let keytable = c.get("KeyTable");
    for name in ["Domain", "Selector", "KeyFile"] {
        if let (Some(s), Some(_)) = (c.get(name), keytable) {
            cx.add(
                D,
                s.info.name,
                s.at(),
                Status::NotNeeded,
                "KeyTable is set, which OpenDKIM uses instead",
            );
        }
    }
    if !signs {
        for name in [
            "KeyTable",
            "SigningTable",
            "Domain",
            "Selector",
            "KeyFile",
            "MultipleSignatures",
            "SubDomains",
        ] {
            if let Some(s) = c.get(name) {
                cx.add(
                    D,
                    s.info.name,
                    s.at(),
                    Status::NotNeeded,
                    "Mode has no s: nothing was signed",
                );
            }
        }
        return Ok(());
    }
    if let Some(kt) = keytable {
        key_table(c, kt, &base, cx)?;
    } else {
        single_key(c, &base, cx)?;
    }
    Ok(())
}

fn report_by_table(s: &Setting, cx: &mut Ctx) {
    let (mut status, text) = match s.info.disposition {
        Disposition::Translated(t) => (Status::Translated, t.to_string()),
        Disposition::NotNeeded(t) => (Status::NotNeeded, t.to_string()),
        Disposition::NotSupported(t) => (Status::NotSupported, t.to_string()),
    };
    // An unsupported feature that is switched off changes nothing.
    if status == Status::NotSupported
        && matches!(
            s.value.to_ascii_lowercase().as_str(),
            "no" | "false" | "0" | "off"
        )
    {
        status = Status::NotNeeded;
        return cx.add(
            Some(s.info.daemon),
            s.info.name,
            s.at(),
            status,
            "switched off: nothing to translate",
        );
    }
    cx.add(Some(s.info.daemon), s.info.name, s.at(), status, text);
}

fn parse_seconds(s: &Setting) -> Result<u64, MigrateError> {
    s.value.trim().parse().map_err(|_| MigrateError::Invalid {
        path: s.file.clone(),
        line: s.line,
        reason: format!("{} must be a number of seconds", s.info.name),
    })
}

fn parse_number(s: &Setting) -> Result<u64, MigrateError> {
    s.value.trim().parse().map_err(|_| MigrateError::Invalid {
        path: s.file.clone(),
        line: s.line,
        reason: format!("{} must be a number", s.info.name),
    })
}

fn simple_options(c: &ConfFile, cx: &mut Ctx) -> Result<(), MigrateError> {
    if let Some(s) = c.get("SignatureTTL") {
        let n = parse_seconds(s)?;
        let v = if n == 0 {
            "off".to_string()
        } else {
            format!("{n}s")
        };
        cx.plan.expire = Some((v, format!("{} SignatureTTL", s.at())));
        cx.add(D, s.info.name, s.at(), Status::Translated, "signing.expire");
    }
    if let Some(s) = c.get("MinimumKeyBits") {
        let n = parse_number(s)?;
        let (v, status, text) = if n < 1024 {
            (
                1024,
                Status::Differs,
                "verify.min_rsa_bits = 1024: keys under 1024 bits never pass in rmilter (RFC 8301)",
            )
        } else {
            (
                n.min(8192) as u32,
                Status::Translated,
                "verify.min_rsa_bits",
            )
        };
        cx.plan.min_rsa_bits = Some((v, format!("{} MinimumKeyBits", s.at())));
        cx.add(D, s.info.name, s.at(), status, text);
    }
    if let Some(s) = c.get("MaximumSignaturesToVerify") {
        let n = parse_number(s)?.clamp(1, 100) as u32;
        cx.plan.max_signatures = Some((n, format!("{} MaximumSignaturesToVerify", s.at())));
        cx.add(
            D,
            s.info.name,
            s.at(),
            Status::Translated,
            "verify.max_signatures",
        );
    }
    if let Some(s) = c.get("DNSTimeout") {
        dns_timeout(s, cx)?;
    }
    if let Some(s) = c.get("Nameservers") {
        let list: Vec<String> = s
            .value
            .split(',')
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .collect();
        cx.plan.nameservers = Some((list, format!("{} Nameservers", s.at())));
        cx.add(
            D,
            s.info.name,
            s.at(),
            Status::Translated,
            "dns.nameservers",
        );
    }
    if let Some(s) = c.get("On-InternalError") {
        let v = s.value.to_ascii_lowercase();
        let action = match v.chars().next() {
            Some('a') => Some("accept"),
            Some('r') => Some("reject"),
            Some('t') => Some("tempfail"),
            Some('q') => Some("quarantine"),
            _ => None,
        };
        match action {
            Some(a) => {
                cx.plan.on_error = Some((a.to_string(), format!("{} On-InternalError", s.at())));
                cx.add(
                    D,
                    s.info.name,
                    s.at(),
                    Status::Translated,
                    "actions.on_error",
                );
            }
            None => cx.add(
                D,
                s.info.name,
                s.at(),
                Status::NotSupported,
                "discard is not an rmilter action: internal errors tempfail (actions.on_error)",
            ),
        }
    }
    if let Some(s) = c.get("TemporaryDirectory") {
        cx.plan.spool_dir = Some((s.value.clone(), format!("{} TemporaryDirectory", s.at())));
        cx.add(
            D,
            s.info.name,
            s.at(),
            Status::Translated,
            "limits.spool_dir",
        );
    }
    Ok(())
}

pub(super) fn dns_timeout(s: &Setting, cx: &mut Ctx) -> Result<(), MigrateError> {
    let n = parse_seconds(s)?;
    let (v, status, text) = if n > 25 {
        (
            25,
            Status::Differs,
            "dns.timeout = 25s, rmilter's most (Postfix gives a milter 30 s per command)",
        )
    } else if n == 0 {
        (
            5,
            Status::Differs,
            "0 (no limit) is not allowed: dns.timeout = 5s",
        )
    } else {
        (n, Status::Translated, "dns.timeout")
    };
    cx.plan.dns_timeout = Some((format!("{v}s"), format!("{} {}", s.at(), s.info.name)));
    cx.add(Some(s.info.daemon), s.info.name, s.at(), status, text);
    Ok(())
}

fn header_list(
    s: &Setting,
    base: &Path,
    cx: &mut Ctx,
) -> Result<Option<Vec<String>>, MigrateError> {
    match conf::dataset(s, base)? {
        Ok(ds) => Ok(Some(
            ds.rows
                .iter()
                .flat_map(|r| r.fields.iter())
                .flat_map(|f| f.split(','))
                .map(str::trim)
                .filter(|f| !f.is_empty())
                .map(str::to_string)
                .collect(),
        )),
        Err(u) => {
            cx.add(
                D,
                s.info.name,
                s.at(),
                Status::NotSupported,
                format!(
                    "a {}: dataset is not read; rmilter's default header list applies",
                    u.backend
                ),
            );
            Ok(None)
        }
    }
}

fn headers(c: &ConfFile, base: &Path, cx: &mut Ctx) -> Result<(), MigrateError> {
    if let Some(s) = c.get("SignHeaders") {
        if let Some(list) = header_list(s, base, cx)? {
            cx.plan.headers = Some((list, format!("{} SignHeaders", s.at())));
            cx.add(
                D,
                s.info.name,
                s.at(),
                Status::Translated,
                "signing.headers",
            );
        }
    } else if let Some(s) = c.get("OmitHeaders")
        && let Some(list) = header_list(s, base, cx)?
    {
        let keep: Vec<String> = DEFAULT_HEADERS
            .iter()
            .filter(|h| !list.iter().any(|o| o.eq_ignore_ascii_case(h)))
            .map(|h| h.to_string())
            .collect();
        cx.plan.headers = Some((
            keep,
            format!("{} OmitHeaders (rmilter's list without them)", s.at()),
        ));
        cx.add(
            D,
            s.info.name,
            s.at(),
            Status::Translated,
            "signing.headers (rmilter's default list without the omitted fields)",
        );
    }
    if let Some(s) = c.get("OversignHeaders")
        && let Some(list) = header_list(s, base, cx)?
    {
        let mut all: Vec<String> = DEFAULT_OVERSIGN_HEADERS
            .iter()
            .map(|h| h.to_string())
            .collect();
        let extra: Vec<String> = list
            .into_iter()
            .filter(|h| !all.iter().any(|a| a.eq_ignore_ascii_case(h)))
            .collect();
        let text = if extra.is_empty() {
            "rmilter oversigns them (and more) by default".to_string()
        } else {
            format!(
                "signing.oversign_headers: rmilter's default list plus {}",
                extra.join(", ")
            )
        };
        if extra.is_empty() {
            cx.add(D, s.info.name, s.at(), Status::NotNeeded, text);
        } else {
            all.extend(extra);
            cx.plan.oversign_headers = Some((all, format!("{} OversignHeaders", s.at())));
            cx.add(D, s.info.name, s.at(), Status::Translated, text);
        }
    }
    Ok(())
}

/// One host list entry as CIDRs, or why it cannot be one.
pub(super) fn host_entry(entry: &str) -> Result<Vec<String>, String> {
    let e = entry.trim();
    if e.eq_ignore_ascii_case("localhost") {
        return Ok(vec!["127.0.0.1/32".into(), "::1/128".into()]);
    }
    let e = e.trim_start_matches('[').trim_end_matches(']');
    if let Ok(net) = e.parse::<ipnet::IpNet>() {
        return Ok(vec![net.trunc().to_string()]);
    }
    if let Ok(ip) = e.parse::<std::net::IpAddr>() {
        return Ok(vec![ipnet::IpNet::from(ip).to_string()]);
    }
    // a.b.c.d/255.255.255.0
    if let Some((addr, mask)) = e.split_once('/')
        && let (Ok(addr), Ok(mask)) = (
            addr.parse::<std::net::Ipv4Addr>(),
            mask.parse::<std::net::Ipv4Addr>(),
        )
        && let Ok(net) = ipnet::Ipv4Net::with_netmask(addr, mask)
    {
        return Ok(vec![net.trunc().to_string()]);
    }
    Err(format!(
        "host name {e:?}: rmilter matches client addresses only; list its addresses in outbound.networks"
    ))
}

/// A host list (InternalHosts, IgnoreHosts) as CIDRs, reporting what is lost.
pub(super) fn host_list(
    s: &Setting,
    base: &Path,
    cx: &mut Ctx,
) -> Result<Option<Vec<String>>, MigrateError> {
    let ds = match conf::dataset(s, base)? {
        Ok(ds) => ds,
        Err(u) => {
            cx.add(
                Some(s.info.daemon),
                s.info.name,
                s.at(),
                Status::NotSupported,
                format!(
                    "a {}: dataset is not read; export its hosts into outbound.networks",
                    u.backend
                ),
            );
            return Ok(None);
        }
    };
    let mut nets = Vec::new();
    for row in &ds.rows {
        for entry in row.fields.iter().take(1) {
            if let Some(neg) = entry.strip_prefix('-').or_else(|| entry.strip_prefix('!')) {
                cx.add(
                    Some(s.info.daemon),
                    s.info.name,
                    row.at(),
                    Status::Differs,
                    format!("exclusion -{neg}: rmilter has no exclusions; it counts as outbound when a listed network contains it"),
                );
                continue;
            }
            match host_entry(entry) {
                Ok(n) => {
                    for n in n {
                        if !nets.contains(&n) {
                            nets.push(n);
                        }
                    }
                }
                Err(why) => cx.add(
                    Some(s.info.daemon),
                    s.info.name,
                    row.at(),
                    Status::Differs,
                    why,
                ),
            }
        }
    }
    Ok(Some(nets))
}

fn networks(c: &ConfFile, base: &Path, cx: &mut Ctx) -> Result<(), MigrateError> {
    cx.plan.authenticated = Some((
        true,
        "OpenDKIM signs mail of SASL-authenticated clients".into(),
    ));
    match c.get("InternalHosts") {
        Some(s) => {
            if let Some(nets) = host_list(s, base, cx)? {
                cx.add(
                    D,
                    s.info.name,
                    s.at(),
                    Status::Translated,
                    "outbound.networks",
                );
                cx.plan.networks = Some((nets, format!("{} InternalHosts", s.at())));
            }
        }
        None => {
            cx.plan.networks = Some((
                vec!["127.0.0.1/32".into(), "::1/128".into()],
                "OpenDKIM's default InternalHosts (127.0.0.1), and ::1".into(),
            ));
        }
    }
    Ok(())
}

fn macros(c: &ConfFile, cx: &mut Ctx) {
    let Some(s) = c.get("MacroList") else {
        cx.plan.daemon_names = Some((Vec::new(), "OpenDKIM had no MacroList".into()));
        return;
    };
    let mut names = Vec::new();
    let mut ok = true;
    for item in s.value.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let mut parts = item.split('|');
        let macro_ = parts
            .next()
            .unwrap_or_default()
            .trim_matches(|c| c == '{' || c == '}');
        let values: Vec<String> = parts.map(str::to_string).collect();
        if macro_ == "daemon_name" && !values.is_empty() {
            names.extend(values);
        } else {
            ok = false;
            cx.add(
                D,
                s.info.name,
                s.at(),
                Status::NotSupported,
                format!("macro {macro_}: only {{daemon_name}} with listed values makes mail outbound in rmilter"),
            );
        }
    }
    if ok || !names.is_empty() {
        cx.add(
            D,
            s.info.name,
            s.at(),
            Status::Translated,
            "outbound.daemon_names",
        );
    }
    cx.plan.daemon_names = Some((names, format!("{} MacroList", s.at())));
}

fn single_key(c: &ConfFile, base: &Path, cx: &mut Ctx) -> Result<(), MigrateError> {
    let (domain, selector, keyfile) = (c.get("Domain"), c.get("Selector"), c.get("KeyFile"));
    if domain.is_none() && selector.is_none() && keyfile.is_none() {
        if let Some(s) = c.get("SigningTable") {
            cx.add(
                D,
                s.info.name,
                s.at(),
                Status::NotNeeded,
                "no KeyTable: OpenDKIM ignores a SigningTable without one",
            );
        }
        return Ok(());
    }
    let (Some(domain), Some(selector), Some(keyfile)) = (domain, selector, keyfile) else {
        let s = domain.or(selector).or(keyfile).expect("one is set");
        cx.add(
            D,
            s.info.name,
            s.at(),
            Status::NotNeeded,
            "Domain, Selector and KeyFile sign only together; OpenDKIM signed nothing with this",
        );
        return Ok(());
    };
    let domains = match conf::dataset(domain, base)? {
        Ok(ds) => ds
            .rows
            .iter()
            .filter_map(|r| r.fields.first().cloned())
            .collect::<Vec<_>>(),
        Err(u) => {
            cx.add(
                D,
                "Domain",
                domain.at(),
                Status::NotSupported,
                format!(
                    "a {}: dataset is not read; list the domains as [[key]] tables",
                    u.backend
                ),
            );
            Vec::new()
        }
    };
    let file = conf::resolve(base, &keyfile.value);
    for d in &domains {
        if d.contains('*') {
            cx.add(
                D,
                "Domain",
                domain.at(),
                Status::NotSupported,
                format!("wildcard domain {d:?}: add a [[key]] per domain"),
            );
            continue;
        }
        cx.plan.keys.push(KeyOut {
            name: None,
            domain: d.to_ascii_lowercase(),
            selector: selector.value.clone(),
            file: file.clone(),
            origin: format!(
                "{} Domain, {} Selector, {} KeyFile",
                domain.at(),
                selector.at(),
                keyfile.at()
            ),
        });
    }
    cx.add(
        D,
        "Domain",
        domain.at(),
        Status::Translated,
        "[[key]] domain (one [[key]] per domain)",
    );
    cx.add(
        D,
        "Selector",
        selector.at(),
        Status::Translated,
        "[[key]] selector",
    );
    cx.add(
        D,
        "KeyFile",
        keyfile.at(),
        Status::Translated,
        "[[key]] file (the file stays where it is)",
    );
    if let Some(s) = c.get("SubDomains") {
        let on = c.flag("SubDomains")?.unwrap_or(false);
        cx.plan.subdomains = Some((on, format!("{} SubDomains", s.at())));
        cx.add(
            D,
            s.info.name,
            s.at(),
            Status::Translated,
            "signing.subdomains",
        );
    }
    if let Some(s) = c.get("MultipleSignatures") {
        cx.add(
            D,
            s.info.name,
            s.at(),
            Status::NotNeeded,
            "one key per domain: nothing to choose between",
        );
    }
    if let Some(s) = c.get("SigningTable") {
        cx.add(
            D,
            s.info.name,
            s.at(),
            Status::NotNeeded,
            "no KeyTable: OpenDKIM ignores a SigningTable without one",
        );
    }
    Ok(())
}

struct TableKey {
    name: String,
    domain: String,
    selector: String,
    file: PathBuf,
    row: Row,
}

/// A SigningTable row as an rmilter sender pattern, with its sort rank in
/// OpenDKIM's lookup order for exact-lookup tables.
fn sender_pattern(kind: DatasetKind, key: &str) -> Result<(String, usize), String> {
    let key = key.to_ascii_lowercase();
    match kind {
        DatasetKind::Refile => {
            if key == "*" {
                return Ok(("*".into(), 0));
            }
            if let Some((local, dom)) = key.split_once('@') {
                let dom_ok = |d: &str| !d.is_empty() && !d.contains('*') && !d.contains('@');
                if local == "*" && dom_ok(dom) {
                    return Ok((format!("*@{dom}"), 0));
                }
                if local == "*" && dom.strip_prefix("*.").is_some_and(dom_ok) {
                    return Ok((format!("*@{dom}"), 0));
                }
                if !local.contains('*') && (dom_ok(dom) || dom == "*") {
                    return Ok((format!("{local}@{dom}"), 0));
                }
            }
            Err(format!(
                "pattern {key:?}: rmilter's sender patterns are user@domain, *@domain, *@*.domain, user@* and *"
            ))
        }
        _ => {
            // opendkim.conf(5), SigningTable: user@host, host, user@.domain, .domain (deepest first), user@*, *.
            if key == "*" {
                return Ok(("*".into(), 1_000_000));
            }
            if let Some((local, dom)) = key.split_once('@') {
                if local.contains('*') {
                    return Err(format!(
                        "{key:?} never matches in an exact-lookup (file:) table; OpenDKIM needs refile: for wildcards"
                    ));
                }
                if dom == "*" && !local.is_empty() {
                    return Ok((format!("{local}@*"), 10_000));
                }
                if dom.starts_with('.') || dom == "*" {
                    return Err(format!(
                        "{key:?}: a user at any (sub)domain is not an rmilter sender pattern"
                    ));
                }
                return Ok((format!("{local}@{dom}"), 0));
            }
            if let Some(parent) = key.strip_prefix('.') {
                // Deeper parents are tried first.
                return Ok((
                    format!("*@*.{parent}"),
                    2000 - parent.matches('.').count().min(999),
                ));
            }
            Ok((format!("*@{key}"), 1))
        }
    }
}

fn key_table(c: &ConfFile, kt: &Setting, base: &Path, cx: &mut Ctx) -> Result<(), MigrateError> {
    let ds = match conf::dataset(kt, base)? {
        Ok(ds) => ds,
        Err(u) => {
            cx.add(D, kt.info.name, kt.at(), Status::NotSupported, format!(
                "a {}: KeyTable is not read: export its rows (name domain:selector:/path/to/key) into [[key]] tables; nothing is signed until then", u.backend));
            if let Some(st) = c.get("SigningTable") {
                cx.add(
                    D,
                    st.info.name,
                    st.at(),
                    Status::NotSupported,
                    "without the KeyTable the SigningTable cannot be translated",
                );
            }
            return Ok(());
        }
    };
    let mut keys: Vec<TableKey> = Vec::new();
    for row in &ds.rows {
        let invalid = |reason: String| MigrateError::Invalid {
            path: row.file.clone(),
            line: row.line,
            reason,
        };
        let (name, spec) = match ds.kind {
            DatasetKind::List => {
                // csl: "name=domain:selector:file"? OpenDKIM's csl rows have no value.
                return Err(invalid(
                    "a KeyTable must be a file (name domain:selector:keyfile per line)".into(),
                ));
            }
            _ => match (row.fields.first(), row.fields.get(1)) {
                (Some(n), Some(v)) => (n.clone(), v.clone()),
                _ => {
                    return Err(invalid(
                        "KeyTable row needs a name and domain:selector:keyfile".into(),
                    ));
                }
            },
        };
        let mut parts = spec.splitn(3, ':');
        let (Some(domain), Some(selector), Some(file)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid(format!(
                "KeyTable row {name:?}: expected domain:selector:keyfile"
            )));
        };
        if !file.starts_with('/') && !file.starts_with('.') {
            // The private key itself, in the table. Never echoed.
            cx.add(D, "KeyTable", row.at(), Status::NotSupported, format!(
                "row {name:?} holds the private key itself: write it to a file (mode 0600) and name that file in a [[key]] table"));
            continue;
        }
        keys.push(TableKey {
            name,
            domain: domain.to_ascii_lowercase(),
            selector: selector.to_string(),
            file: conf::resolve(base, file),
            row: row.clone(),
        });
    }
    cx.add(
        D,
        kt.info.name,
        kt.at(),
        Status::Translated,
        "[[key]] tables (key files stay where they are)",
    );

    let multiple = c.flag("MultipleSignatures")?.unwrap_or(false);
    if let Some(s) = c.get("MultipleSignatures") {
        cx.add(
            D,
            s.info.name,
            s.at(),
            Status::Translated,
            if multiple {
                "signing.rule_match = \"all\""
            } else {
                "signing.rule_match = \"first\""
            },
        );
    }
    if let Some(s) = c.get("SubDomains") {
        cx.add(
            D,
            s.info.name,
            s.at(),
            Status::NotNeeded,
            "SubDomains applies to the Domain list only; the SigningTable decides",
        );
    }

    let Some(st) = c.get("SigningTable") else {
        // Without a SigningTable OpenDKIM looks the From domain up as a KeyTable name.
        for k in keys {
            if k.domain == "%" || k.name.to_ascii_lowercase() != k.domain {
                cx.add(
                    D,
                    "KeyTable",
                    k.row.at(),
                    Status::NotNeeded,
                    format!(
                        "row {:?} is used only through a SigningTable, and there is none",
                        k.name
                    ),
                );
                continue;
            }
            cx.plan.keys.push(KeyOut {
                name: None,
                domain: k.domain.clone(),
                selector: k.selector.clone(),
                file: k.file.clone(),
                origin: k.row.at(),
            });
        }
        return Ok(());
    };
    let sds = match conf::dataset(st, base)? {
        Ok(ds) => ds,
        Err(u) => {
            cx.add(D, st.info.name, st.at(), Status::NotSupported, format!(
                "a {}: SigningTable is not read: export its rows (pattern keyname) into [[signing.rule]] tables; nothing is signed until then", u.backend));
            return Ok(());
        }
    };
    let mut rules: Vec<(usize, usize, RuleOut)> = Vec::new();
    let mut used: BTreeSet<String> = BTreeSet::new();
    for (i, row) in sds.rows.iter().enumerate() {
        let (Some(pattern), Some(keyname)) = (row.fields.first(), row.fields.get(1)) else {
            return Err(MigrateError::Invalid {
                path: row.file.clone(),
                line: row.line,
                reason: "SigningTable row needs a pattern and a KeyTable name".into(),
            });
        };
        if row.fields.len() > 2 {
            cx.add(
                D,
                "SigningTable",
                row.at(),
                Status::Differs,
                "the signer (i=) field is not used: rmilter's signatures carry no i=",
            );
        }
        let (sender, rank) = match sender_pattern(sds.kind, pattern) {
            Ok(p) => p,
            Err(why) => {
                let status = if why.contains("never matches") {
                    Status::NotNeeded
                } else {
                    Status::NotSupported
                };
                cx.add(
                    D,
                    "SigningTable",
                    row.at(),
                    status,
                    format!("{why}; row left out"),
                );
                continue;
            }
        };
        // "%" names the key after the From domain: only a concrete pattern domain has one.
        let key_names: Vec<String> = if keyname == "%" {
            let dom = sender.rsplit_once('@').map(|(_, d)| d.to_string());
            match dom.filter(|d| !d.contains('*')) {
                Some(d) => keys
                    .iter()
                    .filter(|k| k.name.eq_ignore_ascii_case(&d))
                    .map(|k| k.name.clone())
                    .collect(),
                None => {
                    cx.add(
                        D,
                        "SigningTable",
                        row.at(),
                        Status::NotSupported,
                        "key name % with a wildcard pattern: list a rule per domain",
                    );
                    continue;
                }
            }
        } else {
            keys.iter()
                .filter(|k| &k.name == keyname)
                .map(|k| k.name.clone())
                .collect()
        };
        if key_names.is_empty() {
            cx.add(D, "SigningTable", row.at(), Status::NotNeeded, format!(
                "names key {keyname:?}, which the KeyTable does not have (OpenDKIM could not sign with it); row left out"));
            continue;
        }
        used.extend(key_names.iter().cloned());
        rules.push((
            rank,
            i,
            RuleOut {
                sender,
                keys: key_names,
                origin: row.at(),
            },
        ));
    }
    rules.sort_by_key(|(rank, i, _)| (*rank, *i));
    let rules: Vec<RuleOut> = rules.into_iter().map(|(_, _, r)| r).collect();

    for k in &keys {
        if !used.contains(&k.name) {
            cx.add(
                D,
                "KeyTable",
                k.row.at(),
                Status::NotNeeded,
                format!("row {:?} is named by no SigningTable row: left out", k.name),
            );
        }
    }
    let keys: Vec<&TableKey> = keys.iter().filter(|k| used.contains(&k.name)).collect();

    // When every rule is "*@D" signing with D's own keys, and each key and
    // domain appears once, rmilter's default (keys by From domain) does the same.
    let by_domain = rules.iter().all(|r| {
        r.sender.starts_with("*@")
            && !r.sender[2..].contains('*')
            && r.keys.iter().all(|n| {
                keys.iter()
                    .any(|k| &k.name == n && k.domain == r.sender[2..])
            })
    }) && {
        let mut seen_d = BTreeSet::new();
        let mut seen_k = BTreeSet::new();
        rules.iter().all(|r| {
            seen_d.insert(r.sender.clone()) && r.keys.iter().all(|k| seen_k.insert(k.clone()))
        })
    } && (multiple || rules.iter().all(|r| r.keys.len() == 1));
    if by_domain {
        cx.add(
            D,
            st.info.name,
            st.at(),
            Status::Translated,
            "[[key]] tables: every row signs *@domain with that domain's own key, which is rmilter's default (keys by From domain); no rules needed",
        );
        for r in &rules {
            for n in &r.keys {
                let k = keys.iter().find(|k| &k.name == n).expect("used key");
                cx.plan.keys.push(KeyOut {
                    name: None,
                    domain: k.domain.clone(),
                    selector: k.selector.clone(),
                    file: k.file.clone(),
                    origin: format!(
                        "{} KeyTable {:?}, {} SigningTable",
                        k.row.at(),
                        k.name,
                        r.origin
                    ),
                });
            }
        }
        return Ok(());
    }
    for k in keys {
        cx.plan.keys.push(KeyOut {
            name: Some(k.name.clone()),
            domain: k.domain.clone(),
            selector: k.selector.clone(),
            file: k.file.clone(),
            origin: format!("{} KeyTable", k.row.at()),
        });
    }
    cx.add(
        D,
        st.info.name,
        st.at(),
        Status::Translated,
        "[[signing.rule]] tables, in OpenDKIM's lookup order",
    );
    cx.plan.rule_match_all = Some(if multiple { "all" } else { "first" }.into());
    cx.plan.rules = rules;
    Ok(())
}

/// Checks every key file as rmilter will (src/keys/safety.rs): owned by root
/// or by the user rmilter runs as, not readable by others, not writable by
/// group or others, in directories nobody else can write; and readable by
/// that user. Prints the commands that fix what is not.
pub fn check_key_files(cx: &mut Ctx) {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let user = nix::unistd::User::from_name("rmilter").ok().flatten();
    let group = nix::unistd::Group::from_name("rmilter").ok().flatten();
    if user.is_none() && !cx.plan.keys.is_empty() {
        cx.key_fixes
            .push("adduser --system --group --no-create-home --home /nonexistent rmilter".into());
    }
    let uid = user.as_ref().map(|u| u.uid.as_raw());
    let gid = group.as_ref().map(|g| g.gid.as_raw());
    let mut done: BTreeSet<PathBuf> = BTreeSet::new();
    let files: Vec<PathBuf> = cx.plan.keys.iter().map(|k| k.file.clone()).collect();
    for file in files {
        if !done.insert(file.clone()) {
            continue;
        }
        let f = file.display().to_string();
        let meta = match std::fs::metadata(&file) {
            Ok(m) => m,
            Err(e) => {
                cx.add(
                    None,
                    "key file",
                    f.clone(),
                    Status::Differs,
                    format!("cannot be read ({e}): rmilter refuses to start until it can"),
                );
                continue;
            }
        };
        let mode = meta.permissions().mode() & 0o7777;
        let owner_ok = meta.uid() == 0 || Some(meta.uid()) == uid;
        let readable = Some(meta.uid()) == uid && mode & 0o400 != 0
            || meta.uid() == 0 && Some(meta.gid()) == gid && mode & 0o040 != 0;
        let safe = mode & 0o037 == 0;
        if !(owner_ok && readable && safe) {
            cx.key_fixes.push(format!("chown root:rmilter {f}"));
            cx.key_fixes.push(format!("chmod 0640 {f}"));
        }
        for dir in file.ancestors().skip(1) {
            if dir.as_os_str().is_empty() || !done.insert(dir.to_path_buf()) {
                continue;
            }
            let Ok(m) = std::fs::metadata(dir) else {
                continue;
            };
            let mode = m.permissions().mode() & 0o7777;
            let d = dir.display();
            let sticky = mode & 0o1000 != 0;
            // As keys::safety::check_dirs: writable by everyone (not
            // sticky), or by a group other than root's.
            if (m.uid() != 0 && Some(m.uid()) != uid)
                || (mode & 0o002 != 0 && !sticky)
                || (mode & 0o020 != 0 && !sticky && m.gid() != 0)
            {
                cx.key_fixes.push(format!("chown root {d}"));
                cx.key_fixes.push(format!("chmod go-w {d}"));
            }
            let searchable = mode & 0o001 != 0
                || (Some(m.gid()) == gid && mode & 0o010 != 0)
                || (Some(m.uid()) == uid && mode & 0o100 != 0);
            if !searchable {
                cx.key_fixes.push(format!("chmod o+x {d}"));
            }
        }
    }
}
