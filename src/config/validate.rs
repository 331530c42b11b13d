//! Validation of the raw configuration into the typed [`Config`].
//!
//! Each default lives here, next to the check of its key; the documented
//! defaults in `config/rmilter.toml` are tested against this file.

mod report;

use super::raw::{RawConfig, RawKey};
use super::{
    Action, ActionTable, Canon, Config, ConfigError, DnsSettings, KeyAlgorithm, KeySpec, Limits,
    ListenAddr, LogLevel, OutboundRules, Overrides, PolicyActions, PolicyTable, Signing,
    SocketOptions, Source, VerifySettings,
};
use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

mod lifecycle;
mod ops;
mod rules;
pub use lifecycle::render_selector;
pub use rules::parse_sender_pattern;

/// Header fields signed when present (RFC 6376 §5.4.1, plus list and MIME fields).
pub const DEFAULT_HEADERS: &[&str] = &[
    "From",
    "Sender",
    "Reply-To",
    "Subject",
    "Date",
    "Message-ID",
    "To",
    "Cc",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "Content-ID",
    "Content-Description",
    "Resent-Date",
    "Resent-From",
    "Resent-Sender",
    "Resent-To",
    "Resent-Cc",
    "Resent-Message-ID",
    "In-Reply-To",
    "References",
    "List-Id",
    "List-Help",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "List-Subscribe",
    "List-Post",
    "List-Owner",
    "List-Archive",
];

/// Header fields signed once more than present (RFC 6376 §8.15), so that no
/// further instance can be added after signing.
pub const DEFAULT_OVERSIGN_HEADERS: &[&str] = &[
    "From",
    "Sender",
    "Reply-To",
    "Subject",
    "Date",
    "Message-ID",
    "To",
    "Cc",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "In-Reply-To",
    "References",
    "List-Id",
    "List-Help",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "List-Subscribe",
    "List-Post",
    "List-Owner",
    "List-Archive",
];

const DEFAULT_LISTEN: &str = "unix:/run/rmilter/rmilter.sock";

struct Ctx {
    file: String,
    base_dir: Option<PathBuf>,
}

impl Ctx {
    fn err(&self, key: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            file: self.file.clone(),
            key: key.into(),
            message: message.into(),
        }
    }
}

pub(super) fn validate(
    source: Source,
    raw: RawConfig,
    overrides: &Overrides,
) -> Result<Config, ConfigError> {
    let ctx = Ctx {
        file: source.to_string(),
        base_dir: match &source {
            Source::File(path) => path.parent().map(Path::to_path_buf),
            Source::Embedded => None,
        },
    };

    let socket = SocketOptions {
        mode: parse_mode(&ctx, raw.socket.mode.as_deref().unwrap_or("0660"))?,
        owner: match raw.socket.owner.as_deref().unwrap_or("") {
            "" => None,
            name => Some(lookup_user(&ctx, name)?),
        },
        group: match raw.socket.group.as_deref().unwrap_or("") {
            "" => None,
            name => Some(lookup_group(&ctx, name)?),
        },
        allow_remote: raw.socket.allow_remote.unwrap_or(false),
    };

    let listen = match &overrides.listen {
        Some(text) => parse_listen(text).map_err(|m| command_line("--listen", m))?,
        None => parse_listen(raw.listen.as_deref().unwrap_or(DEFAULT_LISTEN))
            .map_err(|m| ctx.err("listen", m))?,
    };
    if let ListenAddr::Inet(addr) = listen
        && !addr.ip().is_loopback()
        && !socket.allow_remote
    {
        let key = if overrides.listen.is_some() {
            "--listen"
        } else {
            "listen"
        };
        return Err(ctx.err(
            key,
            format!(
                "{} is not a loopback address: whoever can connect can have mail signed; \
                     set socket.allow_remote = true to allow it",
                addr.ip()
            ),
        ));
    }

    let authserv_id = match raw.authserv_id.as_deref().unwrap_or("") {
        "" => host_name(),
        id => id.to_string(),
    };
    check_authserv_id(&authserv_id).map_err(|m| ctx.err("authserv_id", m))?;

    let log_level = match raw.log_level.as_deref().unwrap_or("info") {
        "error" => LogLevel::Error,
        "warn" => LogLevel::Warn,
        "info" => LogLevel::Info,
        "debug" => LogLevel::Debug,
        "trace" => LogLevel::Trace,
        other => {
            return Err(ctx.err(
                "log_level",
                format!("expected error, warn, info, debug or trace, got {other:?}"),
            ));
        }
    };

    let limits = Limits {
        max_connections: count(
            &ctx,
            "limits.max_connections",
            raw.limits.max_connections,
            256,
            1,
            100_000,
        )?,
        idle_timeout: duration(
            &ctx,
            "limits.idle_timeout",
            raw.limits.idle_timeout.as_deref(),
            "330s",
        )?,
        shutdown_timeout: duration(
            &ctx,
            "limits.shutdown_timeout",
            raw.limits.shutdown_timeout.as_deref(),
            "60s",
        )?,
        max_header_bytes: count(
            &ctx,
            "limits.max_header_bytes",
            raw.limits.max_header_bytes,
            1 << 20,
            1024,
            1 << 30,
        )?,
        max_headers: count(
            &ctx,
            "limits.max_headers",
            raw.limits.max_headers,
            2000,
            10,
            1_000_000,
        )?,
        max_message_bytes: count(
            &ctx,
            "limits.max_message_bytes",
            raw.limits.max_message_bytes,
            256 << 20,
            1 << 16,
            1 << 40,
        )?,
        memory_bytes: count(
            &ctx,
            "limits.memory_bytes",
            raw.limits.memory_bytes,
            2 << 20,
            1 << 12,
            1 << 30,
        )?,
        spool_dir: match raw.limits.spool_dir.as_deref().unwrap_or("") {
            "" => None,
            dir if dir.starts_with('/') => Some(PathBuf::from(dir)),
            dir => {
                return Err(ctx.err(
                    "limits.spool_dir",
                    format!("must be an absolute path, got {dir:?}"),
                ));
            }
        },
    };
    if limits.idle_timeout < Duration::from_secs(1) {
        return Err(ctx.err("limits.idle_timeout", "must be at least 1s"));
    }

    let actions = ActionTable {
        on_error: action(
            &ctx,
            "actions.on_error",
            raw.actions.on_error.as_deref(),
            Action::Tempfail,
        )?,
        bad_from: action(
            &ctx,
            "actions.bad_from",
            raw.actions.bad_from.as_deref(),
            Action::Reject,
        )?,
        oversized_headers: action(
            &ctx,
            "actions.oversized_headers",
            raw.actions.oversized_headers.as_deref(),
            Action::Reject,
        )?,
    };

    let outbound = OutboundRules {
        authenticated: raw.outbound.authenticated.unwrap_or(true),
        networks: match raw.outbound.networks {
            None => vec![
                "127.0.0.0/8".parse().expect("literal"),
                "::1/128".parse().expect("literal"),
            ],
            Some(list) => list
                .iter()
                .map(|net| parse_network(net).map_err(|m| ctx.err("outbound.networks", m)))
                .collect::<Result<_, _>>()?,
        },
        daemon_names: raw
            .outbound
            .daemon_names
            .unwrap_or_else(|| vec!["ORIGINATING".to_string()]),
        local_submission: raw.outbound.local_submission.unwrap_or(true),
    };
    if outbound.daemon_names.iter().any(|n| n.is_empty()) {
        return Err(ctx.err("outbound.daemon_names", "empty name"));
    }

    let (header_canon, body_canon) = parse_canonicalization(
        raw.signing
            .canonicalization
            .as_deref()
            .unwrap_or("relaxed/relaxed"),
    )
    .map_err(|m| ctx.err("signing.canonicalization", m))?;
    let headers = header_list(
        &ctx,
        "signing.headers",
        raw.signing.headers,
        DEFAULT_HEADERS,
    )?;
    let oversign = header_list(
        &ctx,
        "signing.oversign_headers",
        raw.signing.oversign_headers,
        DEFAULT_OVERSIGN_HEADERS,
    )?;
    // RFC 6376 §5.4: the From header field MUST be signed.
    if !headers
        .iter()
        .chain(&oversign)
        .any(|h| h.eq_ignore_ascii_case("from"))
    {
        return Err(ctx.err(
            "signing.headers",
            "From must be signed (RFC 6376 §5.4): add it to signing.headers or signing.oversign_headers",
        ));
    }
    let expire = match raw.signing.expire.as_deref().unwrap_or("off") {
        "off" => None,
        text => {
            let d = parse_duration(text).map_err(|m| ctx.err("signing.expire", m))?;
            if d < Duration::from_secs(60) {
                return Err(ctx.err("signing.expire", "must be at least 1m, or \"off\""));
            }
            Some(d)
        }
    };
    let subdomains = raw.signing.subdomains.unwrap_or(false);
    let rule_match = rules::rule_match(&ctx, raw.signing.rule_match.as_deref())?;
    let logins = rules::logins(&ctx, &raw.signing.logins)?;
    let key_names = rules::key_names(&ctx, &raw.keys)?;
    // `--key` replaces the key table, and with it the rules that name its keys.
    let signing_rules = if overrides.keys.is_empty() {
        rules::rules(&ctx, &raw.signing.rules, &key_names, &raw.keys)?
    } else {
        Vec::new()
    };
    if subdomains && !signing_rules.is_empty() {
        return Err(ctx.err(
            "signing.subdomains",
            "has no effect with [[signing.rule]] rows (the rules alone choose the keys); \
             remove it and add a rule with sender = \"*@*.example.com\"",
        ));
    }
    let signing = Signing {
        header_canon,
        body_canon,
        headers,
        oversign,
        expire,
        subdomains,
        rule_match,
        rules: signing_rules,
        logins,
    };

    let keys = if overrides.keys.is_empty() {
        raw.keys
            .iter()
            .enumerate()
            .filter(|(_, key)| key.dir.is_none())
            .map(|(i, key)| key_spec(&ctx, i, key))
            .collect::<Result<Vec<_>, _>>()?
    } else {
        overrides
            .keys
            .iter()
            .map(|arg| cli_key_spec(arg))
            .collect::<Result<Vec<_>, _>>()?
    };
    // A map, not a scan of the rows before: 10,000 keys are 50 million
    // string comparisons the other way.
    let mut seen = std::collections::HashMap::with_capacity(keys.len());
    for a in &keys {
        if let Some(b) = seen.insert((a.domain.as_str(), a.selector.as_str()), a) {
            return Err(ctx.err(
                a.origin.clone(),
                format!(
                    "selector {} of {} is already used by {}",
                    a.selector, a.domain, b.origin
                ),
            ));
        }
    }

    let dns = DnsSettings {
        nameservers: raw
            .dns
            .nameservers
            .unwrap_or_default()
            .iter()
            .map(|ns| parse_nameserver(ns).map_err(|m| ctx.err("dns.nameservers", m)))
            .collect::<Result<_, _>>()?,
        timeout: duration(&ctx, "dns.timeout", raw.dns.timeout.as_deref(), "5s")?,
        attempts: count(&ctx, "dns.attempts", raw.dns.attempts, 2, 1, 10)?,
        cache_size: count(
            &ctx,
            "dns.cache_size",
            raw.dns.cache_size,
            4096,
            0,
            10_000_000,
        )?,
    };
    if dns.timeout < Duration::from_millis(100) || dns.timeout > Duration::from_secs(25) {
        return Err(ctx.err(
            "dns.timeout",
            "must be between 100ms and 25s (Postfix gives a milter 30s per SMTP command)",
        ));
    }

    let verify = VerifySettings {
        max_signatures: count(
            &ctx,
            "verify.max_signatures",
            raw.verify.max_signatures,
            5,
            1,
            50,
        )?,
        min_rsa_bits: count(
            &ctx,
            "verify.min_rsa_bits",
            raw.verify.min_rsa_bits,
            1024,
            1024,
            8192,
        )?,
        time_budget: duration(
            &ctx,
            "verify.time_budget",
            raw.verify.time_budget.as_deref(),
            "60s",
        )?,
        spf_time_limit: duration(
            &ctx,
            "verify.spf_time_limit",
            raw.verify.spf_time_limit.as_deref(),
            "20s",
        )?,
        spf_void_lookups: count(
            &ctx,
            "verify.spf_void_lookups",
            raw.verify.spf_void_lookups,
            2,
            0,
            100,
        )? as u32,
        arc: raw.verify.arc.unwrap_or(true),
        trusted_arc_sealers: raw
            .verify
            .trusted_arc_sealers
            .unwrap_or_default()
            .iter()
            .map(|d| normalize_domain(d).map_err(|m| ctx.err("verify.trusted_arc_sealers", m)))
            .collect::<Result<_, _>>()?,
        honor_pct: match raw.verify.dmarc_pct.as_deref().unwrap_or("ignore") {
            "ignore" => false,
            "honor" => true,
            other => {
                return Err(ctx.err(
                    "verify.dmarc_pct",
                    format!("expected \"ignore\" or \"honor\", got {other:?}"),
                ));
            }
        },
        quarantine_display_mismatch: match raw
            .verify
            .display_name_mismatch
            .as_deref()
            .unwrap_or("flag")
        {
            "flag" => false,
            "quarantine" => true,
            other => {
                return Err(ctx.err(
                    "verify.display_name_mismatch",
                    format!("expected \"flag\" or \"quarantine\", got {other:?}"),
                ));
            }
        },
    };
    if verify.time_budget < Duration::from_secs(1) || verify.time_budget > Duration::from_secs(280)
    {
        return Err(ctx.err(
            "verify.time_budget",
            "must be between 1s and 280s (Postfix gives a milter 300s per content event)",
        ));
    }
    if verify.spf_time_limit > verify.time_budget {
        return Err(ctx.err(
            "verify.spf_time_limit",
            "must not exceed verify.time_budget",
        ));
    }

    let global = PolicyActions {
        reject: action(
            &ctx,
            "policy.reject",
            raw.policy.reject.as_deref(),
            Action::Reject,
        )?,
        quarantine: action(
            &ctx,
            "policy.quarantine",
            raw.policy.quarantine.as_deref(),
            Action::Quarantine,
        )?,
        none: action(
            &ctx,
            "policy.none",
            raw.policy.none.as_deref(),
            Action::Accept,
        )?,
        temperror: action(
            &ctx,
            "policy.temperror",
            raw.policy.temperror.as_deref(),
            Action::Tempfail,
        )?,
        permerror: action(
            &ctx,
            "policy.permerror",
            raw.policy.permerror.as_deref(),
            Action::Accept,
        )?,
        monitor: raw.policy.monitor.unwrap_or(false),
    };
    let mut domains: Vec<(String, PolicyActions)> = Vec::new();
    let mut listed = std::collections::HashSet::with_capacity(raw.policy.domain.len());
    for (i, d) in raw.policy.domain.iter().enumerate() {
        let key = |k: &str| format!("policy.domain[{i}].{k}");
        let name = d
            .domain
            .as_deref()
            .filter(|v| !v.is_empty())
            .ok_or_else(|| ctx.err(key("domain"), "missing"))?;
        let name = normalize_domain(name).map_err(|m| ctx.err(key("domain"), m))?;
        if !listed.insert(name.clone()) {
            return Err(ctx.err(key("domain"), format!("{name} is listed twice")));
        }
        let actions = PolicyActions {
            reject: action(&ctx, &key("reject"), d.reject.as_deref(), global.reject)?,
            quarantine: action(
                &ctx,
                &key("quarantine"),
                d.quarantine.as_deref(),
                global.quarantine,
            )?,
            none: action(&ctx, &key("none"), d.none.as_deref(), global.none)?,
            temperror: action(
                &ctx,
                &key("temperror"),
                d.temperror.as_deref(),
                global.temperror,
            )?,
            permerror: action(
                &ctx,
                &key("permerror"),
                d.permerror.as_deref(),
                global.permerror,
            )?,
            monitor: d.monitor.unwrap_or(global.monitor),
        };
        domains.push((name, actions));
    }
    let policy = PolicyTable { global, domains };
    let report = report::report(&ctx, raw.report)?;

    let managed = lifecycle::managed(&ctx, &raw.keys, overrides)?;
    let lifecycle = lifecycle::settings(&ctx, &raw.lifecycle)?;
    let pid_file = lifecycle::pid_file(&ctx, raw.pid_file.as_deref())?;
    let run_as = ops::run_as(&ctx, raw.user.as_deref(), raw.group.as_deref())?;
    let metrics = ops::metrics(&ctx, &raw.metrics)?;

    Ok(Config {
        source,
        listen,
        socket,
        authserv_id,
        log_level,
        limits,
        actions,
        outbound,
        signing,
        keys,
        dns,
        verify,
        policy,
        report,
        pid_file,
        managed,
        lifecycle,
        run_as,
        metrics,
    })
}

fn command_line(key: &str, message: String) -> ConfigError {
    ConfigError::Invalid {
        file: "command line".to_string(),
        key: key.to_string(),
        message,
    }
}

fn parse_mode(ctx: &Ctx, text: &str) -> Result<u32, ConfigError> {
    let digits = text.strip_prefix("0o").unwrap_or(text);
    match u32::from_str_radix(digits, 8) {
        Ok(mode) if mode <= 0o777 && !digits.is_empty() => {
            if mode & 0o002 != 0 {
                return Err(ctx.err(
                    "socket.mode",
                    format!("{text} lets every local user connect and have mail signed; use 0660 with socket.group"),
                ));
            }
            Ok(mode)
        }
        _ => Err(ctx.err(
            "socket.mode",
            format!("expected an octal permission mode such as \"0660\", got {text:?}"),
        )),
    }
}

fn lookup_user(ctx: &Ctx, name: &str) -> Result<(String, u32), ConfigError> {
    let found = match name.parse::<u32>() {
        Ok(uid) => nix::unistd::User::from_uid(uid.into()),
        Err(_) => nix::unistd::User::from_name(name),
    };
    match found {
        Ok(Some(user)) => Ok((user.name, user.uid.as_raw())),
        Ok(None) => Err(ctx.err("socket.owner", format!("no such user {name:?}"))),
        Err(e) => Err(ctx.err("socket.owner", format!("cannot look up user {name:?}: {e}"))),
    }
}

fn lookup_group(ctx: &Ctx, name: &str) -> Result<(String, u32), ConfigError> {
    let found = match name.parse::<u32>() {
        Ok(gid) => nix::unistd::Group::from_gid(gid.into()),
        Err(_) => nix::unistd::Group::from_name(name),
    };
    match found {
        Ok(Some(group)) => Ok((group.name, group.gid.as_raw())),
        Ok(None) => Err(ctx.err("socket.group", format!("no such group {name:?}"))),
        Err(e) => Err(ctx.err(
            "socket.group",
            format!("cannot look up group {name:?}: {e}"),
        )),
    }
}

/// Parse a milter socket address: `unix:/path` (or `local:/path`),
/// `inet:HOST:PORT`, `inet6:[ADDR]:PORT`, and the libmilter spelling
/// `inet:PORT@HOST` / `inet6:PORT@ADDR`.
pub fn parse_listen(text: &str) -> Result<ListenAddr, String> {
    let bad = || format!("expected unix:/path, inet:HOST:PORT or inet6:[ADDR]:PORT, got {text:?}");
    if let Some(path) = text
        .strip_prefix("unix:")
        .or_else(|| text.strip_prefix("local:"))
    {
        if !path.starts_with('/') {
            return Err(format!("unix socket path must be absolute, got {path:?}"));
        }
        if path.len() > 100 {
            return Err(format!(
                "unix socket path is longer than 100 bytes: {path:?}"
            ));
        }
        return Ok(ListenAddr::Unix(PathBuf::from(path)));
    }
    let (rest, v6) = if let Some(rest) = text.strip_prefix("inet6:") {
        (rest, true)
    } else if let Some(rest) = text.strip_prefix("inet:") {
        (rest, false)
    } else {
        return Err(bad());
    };
    let (host, port) = if let Some((port, host)) = rest.split_once('@') {
        (host, port)
    } else if let Some(stripped) = rest.strip_prefix('[') {
        let (host, port) = stripped.split_once("]:").ok_or_else(bad)?;
        (host, port)
    } else {
        rest.rsplit_once(':').ok_or_else(bad)?
    };
    let port: u16 = port
        .parse()
        .map_err(|_| format!("invalid port {port:?} in {text:?}"))?;
    let ip: IpAddr = match host {
        "localhost" if v6 => Ipv6Addr::LOCALHOST.into(),
        "localhost" => Ipv4Addr::LOCALHOST.into(),
        _ => host.parse().map_err(|_| {
            format!("invalid IP address {host:?} in {text:?} (host names are not resolved)")
        })?,
    };
    if v6 != ip.is_ipv6() {
        return Err(format!(
            "{text:?}: use inet: with an IPv4 address and inet6: with an IPv6 address"
        ));
    }
    Ok(ListenAddr::Inet(SocketAddr::new(ip, port)))
}

fn host_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// RFC 8601 §2.2: the authserv-id is a `value` (token or quoted-string); we
/// accept the token form, which is what every MTA host name is.
fn check_authserv_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 255
        && id
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?=".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{id:?} is not a valid authserv-id (a host name such as mx.example.com)"
        ))
    }
}

fn count(
    ctx: &Ctx,
    key: &str,
    value: Option<i64>,
    default: usize,
    min: usize,
    max: usize,
) -> Result<usize, ConfigError> {
    match value {
        None => Ok(default),
        Some(v) if v >= min as i64 && v <= max as i64 => Ok(v as usize),
        Some(v) => Err(ctx.err(key, format!("must be between {min} and {max}, got {v}"))),
    }
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|_| format!("expected a duration such as \"30s\", \"5m\" or \"7d\", got {text:?}"))
}

fn duration(
    ctx: &Ctx,
    key: &str,
    value: Option<&str>,
    default: &str,
) -> Result<Duration, ConfigError> {
    parse_duration(value.unwrap_or(default)).map_err(|m| ctx.err(key, m))
}

fn action(
    ctx: &Ctx,
    key: &str,
    value: Option<&str>,
    default: Action,
) -> Result<Action, ConfigError> {
    match value {
        None => Ok(default),
        Some("accept") => Ok(Action::Accept),
        Some("tempfail") => Ok(Action::Tempfail),
        Some("reject") => Ok(Action::Reject),
        Some("quarantine") => Ok(Action::Quarantine),
        Some(other) => Err(ctx.err(
            key,
            format!(
                "expected \"accept\", \"tempfail\", \"reject\" or \"quarantine\", got {other:?}"
            ),
        )),
    }
}

fn parse_network(text: &str) -> Result<IpNet, String> {
    if let Ok(net) = text.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    text.parse::<IpAddr>().map(IpNet::from).map_err(|_| {
        format!("expected an address or network such as \"192.0.2.0/24\", got {text:?}")
    })
}

fn parse_canonicalization(text: &str) -> Result<(Canon, Canon), String> {
    let one = |s: &str| match s {
        "relaxed" => Some(Canon::Relaxed),
        "simple" => Some(Canon::Simple),
        _ => None,
    };
    text.split_once('/')
        .and_then(|(h, b)| Some((one(h)?, one(b)?)))
        .ok_or_else(|| {
            format!("expected HEADER/BODY with relaxed or simple, such as \"relaxed/relaxed\", got {text:?}")
        })
}

fn header_list(
    ctx: &Ctx,
    key: &str,
    value: Option<Vec<String>>,
    default: &[&str],
) -> Result<Vec<String>, ConfigError> {
    let list = value.unwrap_or_else(|| default.iter().map(|s| s.to_string()).collect());
    let mut out: Vec<String> = Vec::with_capacity(list.len());
    for name in list {
        // RFC 5322 §3.6.8: field-name = 1*ftext (printable US-ASCII except ":").
        if name.is_empty() || !name.bytes().all(|b| (33..=126).contains(&b) && b != b':') {
            return Err(ctx.err(key, format!("{name:?} is not a header field name")));
        }
        if name.eq_ignore_ascii_case("dkim-signature") {
            return Err(ctx.err(key, "DKIM-Signature cannot be signed"));
        }
        if !out.iter().any(|h| h.eq_ignore_ascii_case(&name)) {
            out.push(name);
        }
    }
    Ok(out)
}

fn key_spec(ctx: &Ctx, index: usize, raw: &RawKey) -> Result<KeySpec, ConfigError> {
    let origin = format!("key[{index}]");
    let field = |name: &str, value: &Option<String>| {
        value
            .clone()
            .filter(|v| !v.is_empty())
            .ok_or_else(|| ctx.err(format!("{origin}.{name}"), "missing"))
    };
    let domain = field("domain", &raw.domain)?;
    let selector = field("selector", &raw.selector)?;
    let file = field("file", &raw.file)?;
    let domain = if domain == super::SENDER_DOMAIN {
        domain
    } else {
        normalize_domain(&domain).map_err(|m| ctx.err(format!("{origin}.domain"), m))?
    };
    let domains = rules::key_domains(ctx, &origin, raw)?;
    check_selector(&selector).map_err(|m| ctx.err(format!("{origin}.selector"), m))?;
    let algorithm = match raw.algorithm.as_deref() {
        None => None,
        Some(text) => {
            Some(parse_algorithm(text).map_err(|m| ctx.err(format!("{origin}.algorithm"), m))?)
        }
    };
    let path = PathBuf::from(&file);
    let path = match &ctx.base_dir {
        Some(base) if path.is_relative() => base.join(path),
        _ => path,
    };
    Ok(KeySpec {
        name: raw.name.clone(),
        domain,
        domains,
        selector,
        path,
        algorithm,
        origin,
    })
}

fn cli_key_spec(arg: &str) -> Result<KeySpec, ConfigError> {
    let err = |m: String| command_line(&format!("--key {arg}"), m);
    let mut parts = arg.splitn(3, ':');
    let (Some(domain), Some(selector), Some(file)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(err("expected DOMAIN:SELECTOR:KEYFILE".to_string()));
    };
    if file.is_empty() {
        return Err(err("expected DOMAIN:SELECTOR:KEYFILE".to_string()));
    }
    let domain = normalize_domain(domain).map_err(err)?;
    check_selector(selector).map_err(err)?;
    Ok(KeySpec {
        name: None,
        domain,
        domains: Vec::new(),
        selector: selector.to_string(),
        path: PathBuf::from(file),
        algorithm: None,
        origin: format!("--key {arg}"),
    })
}

pub fn parse_algorithm(text: &str) -> Result<KeyAlgorithm, String> {
    match text {
        "rsa" | "rsa-sha256" => Ok(KeyAlgorithm::Rsa),
        "ed25519" | "ed25519-sha256" => Ok(KeyAlgorithm::Ed25519),
        other => Err(format!("expected \"rsa\" or \"ed25519\", got {other:?}")),
    }
}

/// A signing domain: lower case, A-label, no trailing dot, LDH labels.
pub fn normalize_domain(text: &str) -> Result<String, String> {
    let trimmed = text.strip_suffix('.').unwrap_or(text);
    let ascii = idna::domain_to_ascii(trimmed).map_err(|_| format!("invalid domain {text:?}"))?;
    let ok = !ascii.is_empty()
        && ascii.len() <= 253
        && ascii.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if ok {
        Ok(ascii)
    } else {
        Err(format!("invalid domain {text:?}"))
    }
}

/// RFC 6376 §3.1: selector = sub-domain *( "." sub-domain ).
pub fn check_selector(text: &str) -> Result<(), String> {
    let ok = !text.is_empty()
        && text.len() <= 63 * 4
        && text.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid selector {text:?} (letters, digits, hyphens and dots)"
        ))
    }
}

fn parse_nameserver(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    text.parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, 53))
        .map_err(|_| {
            format!("expected an IP address with optional port, such as \"127.0.0.1\" or \"[::1]:53\", got {text:?}")
        })
}
