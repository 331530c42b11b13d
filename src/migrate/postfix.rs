//! Postfix's side of the switch: where OpenDKIM and OpenDMARC listen
//! (their `Socket` option, or `SOCKET=` in /etc/default/opendkim and
//! /etc/default/opendmarc), which entries of `smtpd_milters` and
//! `non_smtpd_milters` (in main.cf and in master.cf `-o` overrides) are
//! theirs, and the `postconf` lines that put rmilter in their place. Postfix
//! is read with `rmilter doctor`'s reader (`postconf`, or main.cf and
//! master.cf in a directory).

use super::conf::{self, ConfFile};
use super::{Ctx, Inputs, MigrateError, Status};
use crate::doctor::Postfix;
use crate::doctor::postconf::{Params, list};

const CHROOT: &str = "/var/spool/postfix";

pub fn load(inputs: &Inputs, cx: &mut Ctx) -> Result<Option<Postfix>, MigrateError> {
    if let Some(dir) = &inputs.postfix_dir {
        let p = Postfix::from_dir(dir).map_err(|e| MigrateError::Other(format!("{e:#}")))?;
        cx.sources.push(p.source.clone());
        return Ok(Some(p));
    }
    if !inputs.run_postconf {
        return Ok(None);
    }
    match Postfix::from_postconf(None) {
        Ok(p) => {
            cx.sources.push(p.source.clone());
            Ok(Some(p))
        }
        Err(e) => {
            cx.add(None, "Postfix", String::new(), Status::NotNeeded, format!(
                "not read ({e:#}): the postconf lines below assume the milters are set only in main.cf"));
            Ok(None)
        }
    }
}

/// Where a daemon listens, as written (e.g. `local:/run/opendkim/opendkim.sock`), and where that was found.
fn daemon_socket(c: &ConfFile, cx: &mut Ctx) -> Option<(String, String)> {
    if let Some(s) = c.get("Socket") {
        return Some((s.value.clone(), s.at()));
    }
    let name = c.daemon.as_str();
    let default = super::default_file(&c.path, name);
    if let Ok(text) = std::fs::read_to_string(&default) {
        cx.sources.push(default.display().to_string());
        if let Some(sock) = conf::shell_vars(&text)
            .get("SOCKET")
            .filter(|s| !s.is_empty())
        {
            cx.add(
                Some(c.daemon),
                "Socket",
                default.display().to_string(),
                Status::NotNeeded,
                format!(
                    "{name}.conf has no Socket; {} sets SOCKET (rmilter listens on its own socket)",
                    default.display()
                ),
            );
            return Some((sock.clone(), default.display().to_string()));
        }
    }
    cx.add(Some(c.daemon), "Socket", String::new(), Status::NotNeeded, format!(
        "neither {name}.conf nor {} sets the socket: it may be in a systemd drop-in (systemctl cat {name}); check that the Postfix lines below replace the right milter",
        default.display()));
    None
}

/// (port, path) of an OpenDKIM/OpenDMARC socket specification.
fn socket_parts(spec: &str) -> (Option<u16>, Option<String>) {
    let spec = spec.trim();
    if let Some(rest) = spec
        .strip_prefix("inet:")
        .or_else(|| spec.strip_prefix("inet6:"))
    {
        let port = rest.split('@').next().unwrap_or_default();
        return (port.parse().ok(), None);
    }
    let path = spec
        .strip_prefix("local:")
        .or_else(|| spec.strip_prefix("unix:"))
        .unwrap_or(spec);
    (None, Some(path.to_string()))
}

/// Whether a Postfix milter entry points at one of the old daemons.
fn is_old(entry: &str, sockets: &[(Option<u16>, Option<String>)]) -> bool {
    let e = entry.trim_matches(|c| c == '{' || c == '}' || c == ' ');
    let addr = e.split(',').next().unwrap_or_default().trim();
    let lower = addr.to_ascii_lowercase();
    if lower.contains("opendkim") || lower.contains("opendmarc") {
        return true;
    }
    for (port, path) in sockets {
        if let Some(port) = port
            && let Some(p) = addr.rsplit(':').next().and_then(|p| p.parse::<u16>().ok())
            && lower.starts_with("inet")
            && p == *port
        {
            return true;
        }
        if let Some(path) = path {
            let entry_path = addr
                .strip_prefix("unix:")
                .or_else(|| addr.strip_prefix("local:"))
                .unwrap_or(addr)
                .trim_start_matches('/');
            if !entry_path.is_empty() && path.trim_end_matches('/').ends_with(entry_path) {
                return true;
            }
        }
    }
    false
}

/// Replaces the old milters in a list by rmilter (once, where the first one was).
fn replace(value: &str, milter: &str, sockets: &[(Option<u16>, Option<String>)]) -> Option<String> {
    let entries = list(value);
    if !entries.iter().any(|e| is_old(e, sockets)) {
        return None;
    }
    let mut out: Vec<String> = Vec::new();
    let mut placed = false;
    for e in entries {
        if is_old(&e, sockets) {
            if !placed {
                out.push(milter.to_string());
                placed = true;
            }
        } else {
            out.push(e);
        }
    }
    Some(out.join(", "))
}

pub fn plan(
    dkim: Option<&ConfFile>,
    dmarc: Option<&ConfFile>,
    postfix: Option<&Postfix>,
    cx: &mut Ctx,
) {
    let mut sockets = Vec::new();
    let mut chrooted_socket = false;
    for c in [dkim, dmarc].into_iter().flatten() {
        if let Some((spec, _)) = daemon_socket(c, cx) {
            let parts = socket_parts(&spec);
            if parts.1.as_deref().is_some_and(|p| p.starts_with(CHROOT)) {
                chrooted_socket = true;
            }
            sockets.push(parts);
        }
    }
    let chrooted = match postfix {
        Some(p) => p
            .services
            .iter()
            .filter(|s| s.command == "smtpd" || s.command == "cleanup")
            .any(|s| s.chrooted(&p.main)),
        None => chrooted_socket,
    };
    if chrooted {
        cx.plan.listen = format!("unix:{CHROOT}/rmilter/rmilter.sock");
        cx.plan.postfix_milter = "unix:/rmilter/rmilter.sock".into();
        cx.postfix
            .push(format!("install -d -m 0755 {CHROOT}/rmilter"));
    } else {
        cx.plan.listen = "unix:/run/rmilter/rmilter.sock".into();
        cx.plan.postfix_milter = cx.plan.listen.clone();
    }
    cx.plan.socket_group = nix::unistd::Group::from_name("postfix")
        .ok()
        .flatten()
        .map(|_| "postfix".to_string());
    cx.plan.user = nix::unistd::User::from_name("rmilter")
        .ok()
        .flatten()
        .map(|_| "rmilter".to_string());
    let milter = cx.plan.postfix_milter.clone();

    let Some(p) = postfix else {
        cx.postfix.push(format!(
            "postconf -e 'smtpd_milters = {milter}' 'non_smtpd_milters = {milter}'"
        ));
        return;
    };
    let global = Params::global(&p.main);
    let mut main_lines = Vec::new();
    for name in ["smtpd_milters", "non_smtpd_milters"] {
        let raw = global.raw(name).unwrap_or_default();
        let value = global.expand(&raw);
        // "non_smtpd_milters = $smtpd_milters" follows the other line: keep it.
        if raw.trim().starts_with('$')
            && replace(&raw, &milter, &sockets).is_none()
            && !value.trim().is_empty()
        {
            continue;
        }
        match replace(&value, &milter, &sockets) {
            Some(new) => main_lines.push(format!("'{name} = {new}'")),
            None if value.trim().is_empty() => main_lines.push(format!("'{name} = {milter}'")),
            None => cx.add(None, "Postfix", format!("{} {name}", p.source), Status::NotNeeded, format!(
                "{name} names no OpenDKIM/OpenDMARC milter: left as it is; add {milter} yourself if it should")),
        }
    }
    if !main_lines.is_empty() {
        cx.postfix
            .push(format!("postconf -e {}", main_lines.join(" ")));
    }
    for s in &p.services {
        for (name, value) in &s.overrides {
            if name != "smtpd_milters" && name != "non_smtpd_milters" {
                continue;
            }
            let value = s.params(&p.main).expand(value);
            if let Some(new) = replace(&value, &milter, &sockets) {
                cx.postfix
                    .push(format!("postconf -P '{}/{}/{name}={new}'", s.name, s.kind));
            }
        }
    }
}
