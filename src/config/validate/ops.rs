//! Validation of the operations settings: the unprivileged user `rmilter
//! run` switches to after binding its sockets (`user`, `group`), and the
//! Prometheus endpoint with its periodic health log line (`[metrics]`).

use super::super::raw::RawMetrics;
use super::super::{ConfigError, MetricsSettings, RunAs};
use super::{Ctx, parse_duration};
use std::net::SocketAddr;
use std::time::Duration;

/// `user` and `group`: who the daemon runs as after binding, when it was
/// started as root.
pub(super) fn run_as(
    ctx: &Ctx,
    user: Option<&str>,
    group: Option<&str>,
) -> Result<Option<RunAs>, ConfigError> {
    let user = user.unwrap_or("");
    let group = group.unwrap_or("");
    if user.is_empty() {
        if !group.is_empty() {
            return Err(ctx.err(
                "group",
                "needs user: rmilter changes its group only together with its user",
            ));
        }
        return Ok(None);
    }
    let found = match user.parse::<u32>() {
        Ok(uid) => nix::unistd::User::from_uid(uid.into()),
        Err(_) => nix::unistd::User::from_name(user),
    };
    let found = match found {
        Ok(Some(found)) => found,
        Ok(None) => return Err(ctx.err("user", format!("no such user {user:?}"))),
        Err(e) => return Err(ctx.err("user", format!("cannot look up user {user:?}: {e}"))),
    };
    if found.uid.is_root() {
        return Err(ctx.err(
            "user",
            format!("{user:?} is root; name the unprivileged user rmilter should run as"),
        ));
    }
    let (group_name, gid) = if group.is_empty() {
        let name = nix::unistd::Group::from_gid(found.gid)
            .ok()
            .flatten()
            .map_or_else(|| found.gid.to_string(), |g| g.name);
        (name, found.gid.as_raw())
    } else {
        let looked_up = match group.parse::<u32>() {
            Ok(gid) => nix::unistd::Group::from_gid(gid.into()),
            Err(_) => nix::unistd::Group::from_name(group),
        };
        match looked_up {
            Ok(Some(g)) if g.gid.as_raw() == 0 => {
                return Err(ctx.err(
                    "group",
                    format!("{group:?} is root's group; name an unprivileged group"),
                ));
            }
            Ok(Some(g)) => (g.name, g.gid.as_raw()),
            Ok(None) => return Err(ctx.err("group", format!("no such group {group:?}"))),
            Err(e) => {
                return Err(ctx.err("group", format!("cannot look up group {group:?}: {e}")));
            }
        }
    };
    Ok(Some(RunAs {
        user: found.name,
        uid: found.uid.as_raw(),
        group: group_name,
        gid,
    }))
}

/// `[metrics]`: the Prometheus endpoint (off by default) and the health line.
pub(super) fn metrics(ctx: &Ctx, raw: &RawMetrics) -> Result<MetricsSettings, ConfigError> {
    let listen = match raw.listen.as_deref().unwrap_or("") {
        "" => None,
        text => Some(parse_http_listen(text).map_err(|m| ctx.err("metrics.listen", m))?),
    };
    let health_log_interval = match raw.health_log_interval.as_deref().unwrap_or("1h") {
        "off" => None,
        text => {
            let d = parse_duration(text).map_err(|m| ctx.err("metrics.health_log_interval", m))?;
            if d < Duration::from_secs(60) {
                return Err(ctx.err(
                    "metrics.health_log_interval",
                    "must be at least 1m, or \"off\"",
                ));
            }
            Some(d)
        }
    };
    Ok(MetricsSettings {
        listen,
        health_log_interval,
    })
}

/// `HOST:PORT` or `[ADDR]:PORT` with a literal address.
fn parse_http_listen(text: &str) -> Result<SocketAddr, String> {
    if let Some(port) = text.strip_prefix("localhost:") {
        let port: u16 = port
            .parse()
            .map_err(|_| format!("invalid port {port:?} in {text:?}"))?;
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    text.parse().map_err(|_| {
        format!("expected ADDRESS:PORT such as \"127.0.0.1:9700\" or \"[::1]:9700\", got {text:?}")
    })
}
