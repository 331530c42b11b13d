//! Validation of the key lifecycle settings: managed key directories
//! (`[[key]]` rows with `dir`), the `[keys]` section used by `rmilter keys
//! rotate`/`retire`, and the daemon's `pid_file` through which those
//! commands ask a running rmilter to reload.

use super::super::raw::{RawKey, RawKeyLifecycle};
use super::super::{ConfigError, KeyLifecycle, ManagedDomain, Overrides};
use super::{Ctx, count, normalize_domain, parse_duration};
use std::path::PathBuf;
use std::time::Duration;

/// The placeholders of `keys.selector`.
const PLACEHOLDERS: &[&str] = &["algorithm", "date", "year", "month", "day"];

/// Render a selector template; `date` is YYYYMMDD. The result is checked
/// as a selector.
pub fn render_selector(template: &str, algorithm: &str, date: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| format!("unclosed {{ in {template:?}"))?;
        let name = &after[..close];
        let value = match name {
            "algorithm" => algorithm,
            "date" => date,
            "year" => date.get(..4).unwrap_or(date),
            "month" => date.get(4..6).unwrap_or(""),
            "day" => date.get(6..8).unwrap_or(""),
            other => {
                return Err(format!(
                    "unknown placeholder {{{other}}}; use {}",
                    PLACEHOLDERS
                        .iter()
                        .map(|p| format!("{{{p}}}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        };
        out.push_str(value);
        rest = &after[close + 1..];
    }
    if rest.contains('}') {
        return Err(format!("unmatched }} in {template:?}"));
    }
    out.push_str(rest);
    super::check_selector(&out).map_err(|m| format!("{template:?} gives {m}"))?;
    Ok(out)
}

/// The managed key directories of the key table: rows with `dir` (and
/// `domain`, and nothing else). `--key` on the command line replaces the
/// whole key table, managed rows included.
pub(super) fn managed(
    ctx: &Ctx,
    raw: &[RawKey],
    overrides: &Overrides,
) -> Result<Vec<ManagedDomain>, ConfigError> {
    if !overrides.keys.is_empty() {
        return Ok(Vec::new());
    }
    let mut out: Vec<ManagedDomain> = Vec::new();
    for (i, key) in raw.iter().enumerate() {
        let Some(dir) = &key.dir else { continue };
        let origin = format!("key[{i}]");
        for (name, value) in [
            ("selector", &key.selector),
            ("file", &key.file),
            ("algorithm", &key.algorithm),
        ] {
            if value.is_some() {
                return Err(ctx.err(
                    format!("{origin}.{name}"),
                    "not allowed with dir: the state file of a managed key directory \
                     names its selectors, files and algorithms",
                ));
            }
        }
        if dir.is_empty() {
            return Err(ctx.err(format!("{origin}.dir"), "empty"));
        }
        let domain = key
            .domain
            .as_deref()
            .filter(|d| !d.is_empty())
            .ok_or_else(|| ctx.err(format!("{origin}.domain"), "missing"))?;
        let domain =
            normalize_domain(domain).map_err(|m| ctx.err(format!("{origin}.domain"), m))?;
        if let Some(other) = out.iter().find(|m| m.domain == domain) {
            return Err(ctx.err(
                format!("{origin}.dir"),
                format!(
                    "{domain} already has a managed key directory ({})",
                    other.origin
                ),
            ));
        }
        let path = PathBuf::from(dir);
        let path = match &ctx.base_dir {
            Some(base) if path.is_relative() => base.join(path),
            _ => path,
        };
        out.push(ManagedDomain {
            name: key.name.clone(),
            domain,
            dir: path,
            origin,
        });
    }
    Ok(out)
}

pub(super) fn settings(ctx: &Ctx, l: &RawKeyLifecycle) -> Result<KeyLifecycle, ConfigError> {
    let template = l
        .selector
        .clone()
        .unwrap_or_else(|| "{algorithm}-{date}".to_string());
    for algorithm in ["rsa", "ed25519"] {
        render_selector(&template, algorithm, "20260522")
            .map_err(|m| ctx.err("keys.selector", m))?;
    }
    let rsa_bits = count(ctx, "keys.rsa_bits", l.rsa_bits, 2048, 0, 1 << 20)? as u32;
    if ![2048, 3072, 4096].contains(&rsa_bits) {
        return Err(ctx.err(
            "keys.rsa_bits",
            format!("must be 2048, 3072 or 4096, got {rsa_bits}"),
        ));
    }
    let owner = match l.owner.as_deref().unwrap_or("") {
        "" => None,
        name => {
            let found = match name.parse::<u32>() {
                Ok(uid) => nix::unistd::User::from_uid(uid.into()),
                Err(_) => nix::unistd::User::from_name(name),
            };
            match found {
                Ok(Some(user)) => Some((user.name, user.uid.as_raw(), user.gid.as_raw())),
                Ok(None) => return Err(ctx.err("keys.owner", format!("no such user {name:?}"))),
                Err(e) => {
                    return Err(ctx.err("keys.owner", format!("cannot look up user {name:?}: {e}")));
                }
            }
        }
    };
    let retiring_period = parse_duration(l.retiring_period.as_deref().unwrap_or("7d"))
        .map_err(|m| ctx.err("keys.retiring_period", m))?;
    if retiring_period < Duration::from_secs(3600) {
        // Mail sits in queues for hours and is verified on arrival; a
        // record removed sooner fails it.
        return Err(ctx.err("keys.retiring_period", "must be at least 1h"));
    }
    Ok(KeyLifecycle {
        selector_template: template,
        rsa_bits,
        owner,
        retiring_period,
    })
}

pub(super) fn pid_file(ctx: &Ctx, raw: Option<&str>) -> Result<Option<PathBuf>, ConfigError> {
    match raw.unwrap_or("") {
        "" => Ok(None),
        path if path.starts_with('/') => Ok(Some(PathBuf::from(path))),
        path => Err(ctx.err(
            "pid_file",
            format!("must be an absolute path, got {path:?}"),
        )),
    }
}
