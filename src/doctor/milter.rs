//! Milter wiring: does every smtpd service (`smtpd_milters`) and cleanup
//! (`non_smtpd_milters`) reach rmilter's socket, chroot included; can the
//! postfix user connect; what happens when rmilter does not answer
//! (`milter_default_action`, timeouts); the protocol version; which mail
//! counts as outbound (`milter_macro_daemon_name`, `milter_macro_defaults`);
//! other DKIM/DMARC milters still in the chain; header_checks that change
//! fields rmilter signs.

use super::postconf::{Params, Service, list};
use super::{Context, Finding, Severity};
use crate::config::ListenAddr;
use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

const CAT: &str = "milter";

/// One entry of a milter list: the address and its per-milter settings
/// (`{ inet:host:port, default_action=accept }`).
#[derive(Debug, Clone)]
struct Entry {
    spec: String,
    settings: Vec<(String, String)>,
}

fn entries(value: &str) -> Vec<Entry> {
    list(value)
        .into_iter()
        .map(|item| {
            let inner = item
                .strip_prefix('{')
                .and_then(|i| i.strip_suffix('}'))
                .unwrap_or(&item);
            let mut parts = inner.split(',').map(str::trim).filter(|p| !p.is_empty());
            let spec = parts.next().unwrap_or_default().to_string();
            let settings = parts
                .filter_map(|p| p.split_once('='))
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .collect();
            Entry { spec, settings }
        })
        .filter(|e| !e.spec.is_empty())
        .collect()
}

/// Where a milter address leads, as seen from the host.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Unix(PathBuf),
    Inet(Vec<SocketAddr>),
    Unknown,
}

/// Resolve a Postfix milter address for a service that is (or is not)
/// chrooted in `queue_dir`.
fn target(spec: &str, chrooted: bool, queue_dir: &Path) -> Target {
    if let Some(path) = spec
        .strip_prefix("unix:")
        .or_else(|| spec.strip_prefix("local:"))
    {
        let path = Path::new(path);
        return Target::Unix(if path.is_relative() {
            queue_dir.join(path)
        } else if chrooted {
            queue_dir.join(path.strip_prefix("/").unwrap_or(path))
        } else {
            path.to_path_buf()
        });
    }
    let Some(rest) = spec
        .strip_prefix("inet:")
        .or_else(|| spec.strip_prefix("inet6:"))
    else {
        return Target::Unknown;
    };
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => (h.trim_start_matches('[').trim_end_matches(']'), p),
        None => return Target::Unknown,
    };
    let Ok(port) = port.parse::<u16>() else {
        return Target::Unknown;
    };
    let addrs: Vec<SocketAddr> = if host == "localhost" {
        vec![
            SocketAddr::from(([127, 0, 0, 1], port)),
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port)),
        ]
    } else if let Ok(ip) = host.parse::<IpAddr>() {
        vec![SocketAddr::new(ip, port)]
    } else {
        (host, port)
            .to_socket_addrs()
            .map(Iterator::collect)
            .unwrap_or_default()
    };
    Target::Inet(addrs)
}

/// A path with its existing directories resolved (so /var/run and /run
/// compare equal), otherwise lexically normalised.
fn canonical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    match (out.parent(), out.file_name()) {
        (Some(parent), Some(name)) => std::fs::canonicalize(parent)
            .map(|p| p.join(name))
            .unwrap_or(out),
        _ => out,
    }
}

fn reaches(target: &Target, listen: &ListenAddr) -> bool {
    match (target, listen) {
        (Target::Unix(path), ListenAddr::Unix(ours)) => canonical(path) == canonical(ours),
        (Target::Inet(addrs), ListenAddr::Inet(ours)) => addrs.iter().any(|a| {
            a.port() == ours.port() && (a.ip() == ours.ip() || ours.ip().is_unspecified())
        }),
        _ => false,
    }
}

/// rmilter's socket as an address Postfix can use from a service that is
/// (or is not) chrooted; `None` when such a service cannot reach it.
pub fn postfix_spec(listen: &ListenAddr, chrooted: bool, queue_dir: &Path) -> Option<String> {
    match listen {
        ListenAddr::Inet(sa) if sa.ip().is_unspecified() => Some(format!(
            "inet:{}:{}",
            if sa.is_ipv4() { "127.0.0.1" } else { "[::1]" },
            sa.port()
        )),
        ListenAddr::Inet(SocketAddr::V4(a)) => Some(format!("inet:{}:{}", a.ip(), a.port())),
        ListenAddr::Inet(SocketAddr::V6(a)) => Some(format!("inet:[{}]:{}", a.ip(), a.port())),
        ListenAddr::Unix(path) if chrooted => {
            let inside = canonical(path);
            let root = canonical(&queue_dir.join("x"));
            let root = root.parent().unwrap_or(queue_dir);
            inside
                .strip_prefix(root)
                .ok()
                .map(|rel| format!("unix:/{}", rel.display()))
        }
        ListenAddr::Unix(path) => Some(format!("unix:{}", path.display())),
    }
}

/// One place that runs milters: an smtpd service or cleanup.
struct Site<'a> {
    service: &'a Service,
    /// `smtpd_milters` or `non_smtpd_milters`.
    parameter: &'static str,
}

pub fn check(cx: &Context<'_>) -> Vec<Finding> {
    let main = &cx.postfix.main;
    let config = &cx.runtime.config;
    let global = Params::global(main);
    let queue_dir = PathBuf::from(global.get("queue_directory"));
    let listen = &config.listen;
    let mut findings = Vec::new();
    let mut probed: BTreeSet<String> = BTreeSet::new();

    let mut sites: Vec<Site<'_>> = Vec::new();
    for svc in &cx.postfix.services {
        if svc.command == "smtpd" {
            sites.push(Site {
                service: svc,
                parameter: "smtpd_milters",
            });
        } else if svc.command == "cleanup" && svc.name == "cleanup" {
            sites.push(Site {
                service: svc,
                parameter: "non_smtpd_milters",
            });
        }
    }

    let mut uses_rmilter = false;
    for site in &sites {
        let svc = site.service;
        let p = svc.params(main);
        let value = p.get(site.parameter);
        let no_milters = p
            .get("receive_override_options")
            .split([',', ' '])
            .any(|o| o.trim() == "no_milters");
        // A service whose milters are switched off on purpose (re-injection
        // after a content filter) is not a finding.
        let overridden_empty = svc
            .overrides
            .iter()
            .any(|(n, v)| n == site.parameter && p.expand(v).trim().is_empty());
        if overridden_empty
            || (no_milters
                && svc
                    .overrides
                    .iter()
                    .any(|(n, _)| n == "receive_override_options"))
        {
            continue;
        }
        let chrooted = svc.chrooted(main);
        let list = entries(&value);
        let hit = if no_milters {
            None
        } else {
            list.iter()
                .find(|e| reaches(&target(&e.spec, chrooted, &queue_dir), listen))
        };
        let Some(entry) = hit else {
            findings.push(missing(cx, site, &list, chrooted, &queue_dir, no_milters));
            continue;
        };
        uses_rmilter = true;
        // What happens when rmilter does not answer.
        if let Some((_, action)) = entry.settings.iter().find(|(k, _)| k == "default_action") {
            if let Some(f) = default_action(
                action,
                &format!("{} entry {}", site.parameter, entry.spec),
                &format!(
                    "postconf -e '{} = {}' (drop default_action={action} from the entry)",
                    site.parameter,
                    without_setting(&value, &entry.spec)
                ),
            ) {
                findings.push(f);
            }
        } else if svc
            .overrides
            .iter()
            .any(|(n, _)| n == "milter_default_action")
        {
            let action = p.get("milter_default_action");
            if let Some(f) = default_action(
                &action,
                &format!("master.cf service {}", svc.label()),
                &format!(
                    "master.cf, service {} (line {}): remove -o milter_default_action={action} (or set it to tempfail)",
                    svc.name, svc.line
                ),
            ) {
                findings.push(f);
            }
        }
        let budget = config.verify.time_budget;
        let timeout = entry
            .settings
            .iter()
            .find(|(k, _)| k == "content_timeout")
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| p.get("milter_content_timeout"));
        if let Some(t) = parse_time(&timeout)
            && t <= budget
        {
            findings.push(Finding::new(
                "milter-timeout",
                Severity::Medium,
                CAT,
                format!(
                    "{}: milter_content_timeout {timeout} is not longer than rmilter's verify.time_budget ({})",
                    svc.label(),
                    humantime::format_duration(budget)
                ),
                "Postfix gives up on a slow verification before rmilter's own temperror answer, and applies milter_default_action instead",
                format!(
                    "postconf -e 'milter_content_timeout = {}s' (or lower verify.time_budget in rmilter.toml)",
                    budget.as_secs() + 60
                ),
            ));
        }
        let t = target(&entry.spec, chrooted, &queue_dir);
        let key = format!("{t:?}");
        if cx.probe && probed.insert(key) {
            findings.extend(probe(&t, &global, &entry.spec, config));
        }
    }

    if uses_rmilter {
        let action = global.get("milter_default_action");
        if let Some(f) = default_action(
            &action,
            "main.cf",
            "postconf -e 'milter_default_action = tempfail'",
        ) {
            findings.push(f);
        }
    }
    let protocol = global.get("milter_protocol");
    if uses_rmilter && protocol.trim().parse::<u32>().is_ok_and(|v| v < 6) {
        findings.push(Finding::new(
            "milter-protocol",
            Severity::High,
            CAT,
            format!("milter_protocol = {protocol}"),
            "rmilter speaks milter protocol version 6 and asks Postfix for the macros it needs (SASL login, daemon name, queue id) during negotiation; older versions cannot carry that request",
            "postconf -e 'milter_protocol = 6'",
        ));
    }
    findings.extend(outbound_rules(cx, &sites));
    findings.extend(chained(cx, &sites, &queue_dir));
    findings.extend(order(cx, &sites, &queue_dir));
    findings.extend(header_checks(cx));
    findings
}

/// The finding for a site whose milter list does not reach rmilter.
fn missing(
    cx: &Context<'_>,
    site: &Site<'_>,
    list: &[Entry],
    chrooted: bool,
    queue_dir: &Path,
    no_milters: bool,
) -> Finding {
    let svc = site.service;
    let listen = &cx.runtime.config.listen;
    let smtpd = site.parameter == "smtpd_milters";
    let what = if smtpd {
        format!("service {}", svc.label())
    } else {
        "cleanup (mail from sendmail(1) and pickup)".to_string()
    };
    // An entry that names rmilter's unix socket but resolves elsewhere
    // because of the chroot (or the other way round).
    if let Some(entry) = list.iter().find(|e| {
        !no_milters
            && matches!(target(&e.spec, chrooted, queue_dir), Target::Unix(_))
            && reaches(&target(&e.spec, !chrooted, queue_dir), listen)
    }) {
        let spec = postfix_spec(listen, chrooted, queue_dir);
        let (why, fix) = match (chrooted, spec) {
            (true, None) => (
                format!(
                    "{} runs chrooted in {} (master.cf chroot column), so {} means {} there, where rmilter does not listen",
                    svc.name,
                    queue_dir.display(),
                    entry.spec,
                    match target(&entry.spec, true, queue_dir) {
                        Target::Unix(p) => p.display().to_string(),
                        _ => entry.spec.clone(),
                    }
                ),
                format!(
                    "in rmilter.toml set listen = \"unix:{}/rmilter/rmilter.sock\" and run postconf -e '{} = unix:/rmilter/rmilter.sock'; or listen = \"inet:127.0.0.1:8891\" with postconf -e '{} = inet:127.0.0.1:8891'",
                    queue_dir.display(),
                    site.parameter,
                    site.parameter
                ),
            ),
            (true, Some(spec)) | (false, Some(spec)) => (
                format!(
                    "{} {} chrooted, so {} does not lead to rmilter's socket {listen}",
                    svc.name,
                    if chrooted { "runs" } else { "does not run" },
                    entry.spec
                ),
                fix_list(
                    site,
                    &replace_entry(
                        &svc.params(&cx.postfix.main).get(site.parameter),
                        &entry.spec,
                        &spec,
                    ),
                ),
            ),
            (false, None) => (String::new(), String::new()),
        };
        return Finding::new(
            "milter-chroot",
            Severity::High,
            CAT,
            format!(
                "{what}: {} {} reaches rmilter only from {}",
                site.parameter,
                entry.spec,
                if chrooted {
                    "outside the chroot"
                } else {
                    "inside the chroot"
                }
            ),
            why,
            fix,
        );
    }
    let spec = postfix_spec(listen, chrooted, queue_dir);
    let current = svc.params(&cx.postfix.main).get(site.parameter);
    let listed = list
        .iter()
        .any(|e| reaches(&target(&e.spec, chrooted, queue_dir), listen));
    let fix = match &spec {
        Some(spec) if no_milters => {
            let p = svc.params(&cx.postfix.main);
            let rest: Vec<String> = super::postconf::list(&p.get("receive_override_options"))
                .into_iter()
                .filter(|o| o != "no_milters")
                .collect();
            let first = if svc
                .overrides
                .iter()
                .any(|(n, _)| n == "receive_override_options")
            {
                format!(
                    "master.cf, service {} (line {}): -o receive_override_options={}",
                    svc.name,
                    svc.line,
                    rest.join(",")
                )
            } else if rest.is_empty() {
                "postconf -X receive_override_options".to_string()
            } else {
                format!(
                    "postconf -e 'receive_override_options = {}'",
                    rest.join(", ")
                )
            };
            if listed {
                first
            } else {
                format!("{first}; then {}", fix_list(site, &append(&current, spec)))
            }
        }
        Some(spec) => fix_list(site, &append(&current, spec)),
        None => format!(
            "{} runs chrooted in {}: in rmilter.toml set listen = \"unix:{}/rmilter/rmilter.sock\" and add unix:/rmilter/rmilter.sock to {}",
            svc.name,
            queue_dir.display(),
            queue_dir.display(),
            site.parameter
        ),
    };
    let why = if smtpd {
        "mail received by this service is neither verified nor signed"
    } else {
        "mail submitted on this host (cron, sendmail(1), rmilter's own DMARC reports) leaves unsigned"
    };
    Finding::new(
        "milter-missing",
        if smtpd {
            Severity::High
        } else {
            Severity::Medium
        },
        CAT,
        format!(
            "{what}: {} {} rmilter ({listen})",
            site.parameter,
            if no_milters {
                "is switched off by receive_override_options=no_milters, so it does not reach"
            } else {
                "does not reach"
            }
        ),
        why,
        fix,
    )
}

/// The fix that sets a site's milter list to `value`.
fn fix_list(site: &Site<'_>, value: &str) -> String {
    let svc = site.service;
    if svc.overrides.iter().any(|(n, _)| n == site.parameter) {
        format!(
            "master.cf, service {} (line {}): -o {}={}",
            svc.name, svc.line, site.parameter, value
        )
    } else {
        format!("postconf -e '{} = {value}'", site.parameter)
    }
}

fn append(current: &str, spec: &str) -> String {
    if current.trim().is_empty() {
        spec.to_string()
    } else {
        format!("{}, {spec}", current.trim())
    }
}

fn replace_entry(current: &str, old: &str, new: &str) -> String {
    list(current)
        .into_iter()
        .map(|item| {
            if item.contains(old) {
                item.replace(old, new)
            } else {
                item
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn without_setting(current: &str, spec: &str) -> String {
    list(current)
        .into_iter()
        .map(|item| {
            if item.contains(spec) {
                spec.to_string()
            } else {
                item
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn default_action(action: &str, place: &str, fix: &str) -> Option<Finding> {
    let (severity, cost) = match action.trim() {
        "tempfail" => return None,
        "accept" => (
            Severity::Medium,
            "fail open: while rmilter is down or too slow, outbound mail leaves unsigned (and fails DMARC where your domain publishes p=reject) and inbound mail is delivered unverified",
        ),
        "reject" => (
            Severity::High,
            "while rmilter is down or restarting, every message is refused with a permanent 5xx error and bounces",
        ),
        "quarantine" => (
            Severity::Low,
            "while rmilter is down, every message goes to the hold queue unverified and unsigned until an administrator releases it",
        ),
        _ => (
            Severity::Medium,
            "an unknown milter_default_action; Postfix treats it as a configuration error",
        ),
    };
    Some(Finding::new(
        "milter-default-action",
        severity,
        CAT,
        format!("{place}: milter_default_action = {action} (tempfail recommended)"),
        cost,
        fix.to_string(),
    ))
}

/// "30s", "5m", "300": a Postfix time value (seconds by default).
fn parse_time(text: &str) -> Option<Duration> {
    let t = text.trim();
    let (digits, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: u64 = digits.parse().ok()?;
    let factor = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        "w" => 604_800,
        _ => return None,
    };
    Some(Duration::from_secs(n * factor))
}

/// Look at the socket itself: it exists, the postfix user may connect,
/// something answers.
fn probe(
    target: &Target,
    global: &Params<'_>,
    spec: &str,
    config: &crate::config::Config,
) -> Vec<Finding> {
    let mut findings = Vec::new();
    match target {
        Target::Unix(path) => {
            let meta = match std::fs::metadata(path) {
                Ok(meta) => meta,
                Err(e) => {
                    findings.push(Finding::new(
                        "milter-socket-missing",
                        Severity::High,
                        CAT,
                        format!("{spec}: {} does not exist ({e})", path.display()),
                        "Postfix cannot connect to rmilter there and applies milter_default_action to every message",
                        "start rmilter (systemctl start rmilter) and check that its listen path is this one",
                    ));
                    return findings;
                }
            };
            if !meta.file_type().is_socket() {
                findings.push(Finding::new(
                    "milter-socket-missing",
                    Severity::High,
                    CAT,
                    format!("{spec}: {} is not a socket", path.display()),
                    "Postfix cannot connect to rmilter there and applies milter_default_action to every message",
                    format!("remove {} and restart rmilter", path.display()),
                ));
                return findings;
            }
            let user = global.get("mail_owner");
            if let Some(f) = permissions(path, &user, config) {
                findings.push(f);
            }
            if let Err(e) = std::os::unix::net::UnixStream::connect(path) {
                findings.push(not_listening(spec, &e.to_string()));
            }
        }
        Target::Inet(addrs) => {
            let answered = addrs
                .iter()
                .any(|a| std::net::TcpStream::connect_timeout(a, Duration::from_secs(2)).is_ok());
            if !answered {
                findings.push(not_listening(spec, "connection refused or timed out"));
            }
        }
        Target::Unknown => {}
    }
    findings
}

fn not_listening(spec: &str, why: &str) -> Finding {
    Finding::new(
        "milter-not-listening",
        Severity::High,
        CAT,
        format!("{spec}: nothing answers ({why})"),
        "Postfix cannot reach rmilter and applies milter_default_action to every message",
        "start rmilter (systemctl start rmilter; journalctl -u rmilter says why it stopped)",
    )
}

/// Whether the Postfix user (`mail_owner`) may connect to the socket: search
/// permission on every directory above it and write permission on it.
fn permissions(path: &Path, user: &str, config: &crate::config::Config) -> Option<Finding> {
    let found = nix::unistd::User::from_name(user).ok().flatten()?;
    let uid = found.uid.as_raw();
    let name = std::ffi::CString::new(user).ok()?;
    let gids: Vec<u32> = nix::unistd::getgrouplist(&name, found.gid)
        .map(|g| g.into_iter().map(|g| g.as_raw()).collect())
        .unwrap_or_else(|_| vec![found.gid.as_raw()]);
    let allowed = |meta: &std::fs::Metadata, bit: u32| -> bool {
        let mode = meta.mode();
        if uid == 0 {
            return true;
        }
        if meta.uid() == uid {
            mode & (bit << 6) != 0
        } else if gids.contains(&meta.gid()) {
            mode & (bit << 3) != 0
        } else {
            mode & bit != 0
        }
    };
    let ancestors: Vec<&Path> = path.ancestors().skip(1).collect();
    for dir in ancestors.into_iter().rev() {
        let Ok(meta) = std::fs::metadata(dir) else {
            continue;
        };
        if !allowed(&meta, 0o1) {
            return Some(Finding::new(
                "milter-socket-permissions",
                Severity::High,
                CAT,
                format!(
                    "{}: user {user} cannot enter {} (mode {:04o}, owner {} group {})",
                    path.display(),
                    dir.display(),
                    meta.mode() & 0o7777,
                    meta.uid(),
                    meta.gid()
                ),
                "smtpd and cleanup run as the postfix user and cannot connect to rmilter: Postfix applies milter_default_action to every message",
                format!(
                    "chmod o+x {} (or chgrp {user} {} && chmod g+x {})",
                    dir.display(),
                    dir.display(),
                    dir.display()
                ),
            ));
        }
    }
    let meta = std::fs::metadata(path).ok()?;
    if !allowed(&meta, 0o2) {
        let fix = match &config.socket.group {
            Some((group, _)) if gids.contains(&meta.gid()) => format!(
                "the socket's group {group} lacks write permission: set socket.mode = \"0660\" in rmilter.toml and restart rmilter"
            ),
            _ => format!(
                "set socket.group = \"{user}\" and socket.mode = \"0660\" in rmilter.toml and restart rmilter (or add {user} to rmilter's group)"
            ),
        };
        return Some(Finding::new(
            "milter-socket-permissions",
            Severity::High,
            CAT,
            format!(
                "{}: user {user} may not connect (mode {:04o}, owner {} group {})",
                path.display(),
                meta.mode() & 0o7777,
                meta.uid(),
                meta.gid()
            ),
            "smtpd and cleanup run as the postfix user and cannot connect to rmilter: Postfix applies milter_default_action to every message",
            fix,
        ));
    }
    None
}

/// Which mail is outbound: the daemon name of each service and
/// `milter_macro_defaults`.
fn outbound_rules(cx: &Context<'_>, sites: &[Site<'_>]) -> Vec<Finding> {
    let main = &cx.postfix.main;
    let rules = &cx.runtime.config.outbound;
    let global = Params::global(main);
    let mut findings = Vec::new();
    let names = &rules.daemon_names;
    let listed = |name: &str| names.iter().any(|n| n == name.trim());
    let global_name = global.get("milter_macro_daemon_name");
    if listed(&global_name) {
        findings.push(Finding::new(
            "milter-daemon-name",
            Severity::High,
            CAT,
            format!(
                "main.cf: milter_macro_daemon_name = {} is listed in rmilter's outbound.daemon_names",
                global_name.trim()
            ),
            "every smtpd, port 25 included, reports this name: all inbound mail counts as outbound, is signed and never verified",
            "postconf -X milter_macro_daemon_name (back to $myhostname) and set it only on the submission service: master.cf -o milter_macro_daemon_name=ORIGINATING",
        ));
    }
    for site in sites.iter().filter(|s| s.service.command == "smtpd") {
        let svc = site.service;
        let p = svc.params(main);
        let name = p.get("milter_macro_daemon_name");
        let own = svc
            .overrides
            .iter()
            .any(|(n, _)| n == "milter_macro_daemon_name");
        if svc.is_submission() {
            if !listed(&name) {
                let (severity, why) = if rules.authenticated {
                    (
                        Severity::Low,
                        "mail from clients that logged in is outbound anyway (outbound.authenticated); anything else submitted here is verified as inbound and not signed",
                    )
                } else {
                    (
                        Severity::Medium,
                        "outbound.authenticated is off, so mail submitted here is verified as inbound and never signed",
                    )
                };
                let fix = match names.first() {
                    Some(first) => format!(
                        "master.cf, service {} (line {}): add -o milter_macro_daemon_name={first}",
                        svc.name, svc.line
                    ),
                    None => format!(
                        "add daemon_names = [\"ORIGINATING\"] under [outbound] in rmilter.toml, and -o milter_macro_daemon_name=ORIGINATING to master.cf service {}",
                        svc.name
                    ),
                };
                findings.push(Finding::new(
                    "milter-daemon-name",
                    severity,
                    CAT,
                    format!(
                        "submission service {}: {{daemon_name}} is {} , not one of outbound.daemon_names [{}]",
                        svc.label(),
                        name.trim(),
                        names.join(", ")
                    ),
                    why,
                    fix,
                ));
            }
        } else if own && listed(&name) {
            findings.push(Finding::new(
                "milter-daemon-name",
                Severity::High,
                CAT,
                format!(
                    "service {} sets milter_macro_daemon_name={}, which rmilter treats as outbound",
                    svc.label(),
                    name.trim()
                ),
                "mail from the internet arriving on this service is signed with your keys and never verified",
                format!(
                    "master.cf, service {} (line {}): remove -o milter_macro_daemon_name={}",
                    svc.name,
                    svc.line,
                    name.trim()
                ),
            ));
        }
    }
    // milter_macro_defaults supplies values for macros Postfix does not have.
    let defaults = global.get("milter_macro_defaults");
    for item in list(&defaults) {
        let item = item
            .trim_start_matches('{')
            .trim_end_matches('}')
            .trim()
            .to_string();
        let Some((name, value)) = item.split_once('=') else {
            continue;
        };
        let name = name.trim().trim_start_matches('{').trim_end_matches('}');
        let value = value.trim();
        let bad = match name {
            "auth_authen" if rules.authenticated && !value.is_empty() => Some(
                "every message without a login gets this SASL name: all mail counts as outbound, is signed and never verified",
            ),
            "daemon_name" if listed(value) => Some(
                "mail whose service has no daemon name gets this one: it counts as outbound, is signed and never verified",
            ),
            _ => None,
        };
        if let Some(why) = bad {
            findings.push(Finding::new(
                "milter-macro-defaults",
                Severity::High,
                CAT,
                format!("main.cf: milter_macro_defaults gives {{{name}}} the value {value}"),
                why,
                format!(
                    "postconf -e 'milter_macro_defaults = {}'",
                    list(&defaults)
                        .into_iter()
                        .filter(|i| !i.contains(name))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
    }
    findings
}

/// Another mail authentication milter in the same list as rmilter.
fn chained(cx: &Context<'_>, sites: &[Site<'_>], queue_dir: &Path) -> Vec<Finding> {
    let main = &cx.postfix.main;
    let listen = &cx.runtime.config.listen;
    let mut seen = BTreeSet::new();
    let mut findings = Vec::new();
    for site in sites {
        let svc = site.service;
        let chrooted = svc.chrooted(main);
        let value = svc.params(main).get(site.parameter);
        let milters = entries(&value);
        if !milters
            .iter()
            .any(|e| reaches(&target(&e.spec, chrooted, queue_dir), listen))
        {
            continue;
        }
        for entry in &milters {
            if reaches(&target(&entry.spec, chrooted, queue_dir), listen) {
                continue;
            }
            let s = entry.spec.to_ascii_lowercase();
            let port = s.rsplit(':').next().unwrap_or_default();
            let kind = if s.contains("opendkim") || port == "8891" {
                Some((
                    "OpenDKIM",
                    "it signs outbound mail a second time and writes its own Authentication-Results for inbound mail",
                ))
            } else if s.contains("opendmarc") || port == "8893" || port == "54321" {
                Some((
                    "OpenDMARC",
                    "it makes its own DMARC decision and may reject what rmilter accepts (or trust Authentication-Results rmilter removes); two verdicts for one message",
                ))
            } else if s.contains("rspamd") || port == "11332" {
                Some((
                    "the rspamd milter",
                    "rspamd may sign and verify DKIM/DMARC too: double signatures and two Authentication-Results",
                ))
            } else if s.contains("dkim") || s.contains("dmarc") {
                Some((
                    "a DKIM/DMARC milter",
                    "two milters signing or judging the same mail disagree; rmilter does DKIM, SPF, DMARC and ARC in one pass",
                ))
            } else {
                None
            };
            let Some((name, why)) = kind else { continue };
            if !seen.insert((site.parameter, entry.spec.clone())) {
                continue;
            }
            let rest: Vec<String> = list(&value)
                .into_iter()
                .filter(|i| !i.contains(&entry.spec))
                .collect();
            findings.push(Finding::new(
                "milter-chained",
                Severity::Medium,
                CAT,
                format!(
                    "{}: {} ({name}) runs next to rmilter",
                    site.parameter, entry.spec
                ),
                why,
                fix_list(site, &rest.join(", ")),
            ));
        }
    }
    findings
}

/// rmilter after another milter in a list. Postfix numbers the header
/// fields of a milter's change/delete requests (SMFIR_CHGHEADER) counting
/// the fields an earlier milter inserted, while rmilter counted the
/// fields it was sent: each inserted field of the same name shifts the
/// index, and the deletion of a forged Authentication-Results (RFC 8601
/// §5) hits another field or none.
fn order(cx: &Context<'_>, sites: &[Site<'_>], queue_dir: &Path) -> Vec<Finding> {
    let main = &cx.postfix.main;
    let listen = &cx.runtime.config.listen;
    let mut seen = BTreeSet::new();
    let mut findings = Vec::new();
    for site in sites {
        let svc = site.service;
        let chrooted = svc.chrooted(main);
        let value = svc.params(main).get(site.parameter);
        let milters = entries(&value);
        let Some(at) = milters
            .iter()
            .position(|e| reaches(&target(&e.spec, chrooted, queue_dir), listen))
        else {
            continue;
        };
        if at == 0 || !seen.insert((site.parameter, value.clone())) {
            continue;
        }
        let mut items = list(&value);
        let ours = items.remove(at);
        let before: Vec<&str> = milters[..at].iter().map(|e| e.spec.as_str()).collect();
        items.insert(0, ours);
        findings.push(Finding::new(
            "milter-order",
            Severity::Medium,
            CAT,
            format!(
                "{}: rmilter ({}) comes after {}",
                site.parameter,
                milters[at].spec,
                before.join(", ")
            ),
            "Postfix counts header fields an earlier milter inserted when it applies rmilter's header changes, so rmilter's deletion of a forged Authentication-Results by index can hit another field and leave the forgery; rmilter must see the message first",
            fix_list(site, &items.join(", ")),
        ));
    }
    findings
}

/// header_checks that drop or rewrite header fields rmilter signs.
fn header_checks(cx: &Context<'_>) -> Vec<Finding> {
    let main = &cx.postfix.main;
    let global = Params::global(main);
    let signing = &cx.runtime.config.signing;
    let mut signed: Vec<String> = signing.headers.clone();
    for h in &signing.oversign {
        if !signed.iter().any(|s| s.eq_ignore_ascii_case(h)) {
            signed.push(h.clone());
        }
    }
    let mut findings = Vec::new();
    let mut seen_tables = BTreeSet::new();
    for param in [
        "header_checks",
        "mime_header_checks",
        "nested_header_checks",
        "smtp_header_checks",
    ] {
        for table in list(&global.get(param)) {
            if !seen_tables.insert((param == "smtp_header_checks", table.clone())) {
                continue;
            }
            let Some((kind, path)) = table.split_once(':') else {
                continue;
            };
            if !matches!(kind, "regexp" | "pcre") {
                continue;
            }
            let path = match (&cx.postfix.config_dir, Path::new(path).is_relative()) {
                (Some(dir), true) => dir.join(path),
                _ => PathBuf::from(path),
            };
            let Ok(text) = std::fs::read_to_string(&path) else {
                findings.push(Finding::new(
                    "header-checks-unreadable",
                    Severity::Info,
                    CAT,
                    format!("{param}: cannot read {}", path.display()),
                    "rmilter doctor could not check which header fields it changes",
                    format!(
                        "make {} readable and run rmilter doctor again",
                        path.display()
                    ),
                ));
                continue;
            };
            for (i, rule) in text.lines().enumerate() {
                let Some((pattern, negated, action)) = regexp_rule(rule) else {
                    continue;
                };
                let verb = action
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_ascii_uppercase();
                if !matches!(verb.as_str(), "IGNORE" | "REPLACE" | "STRIP" | "PREPEND") || negated {
                    continue;
                }
                let matched: Vec<&str> = signed
                    .iter()
                    .map(String::as_str)
                    .chain(["Received"])
                    .filter(|h| names_field(&pattern, h))
                    .collect();
                let Some(first) = matched.first() else {
                    continue;
                };
                if verb == "PREPEND" && param != "smtp_header_checks" {
                    continue;
                }
                let at_delivery = param == "smtp_header_checks";
                let received_only = matched == ["Received"];
                let (severity, why) = if received_only && verb == "IGNORE" && !at_delivery {
                    (
                        Severity::Medium,
                        "Postfix's MILTER_README: removing Postfix's own Received field with IGNORE causes problems with mail signing filters (header positions shift)".to_string(),
                    )
                } else if received_only {
                    continue;
                } else if at_delivery {
                    (
                        Severity::High,
                        format!(
                            "smtp_header_checks run when mail leaves, after rmilter signed it: changing {first} breaks every signature that covers it (dkim=fail at receivers)"
                        ),
                    )
                } else {
                    (
                        Severity::Medium,
                        format!(
                            "cleanup applies this after rmilter signed the fields it saw: changing {first} breaks signatures covering it"
                        ),
                    )
                };
                findings.push(Finding::new(
                    "header-checks-signed-field",
                    severity,
                    CAT,
                    format!(
                        "{param} {}:{} line {}: {verb} matches {}",
                        kind,
                        path.display(),
                        i + 1,
                        matched.join(", ")
                    ),
                    why,
                    format!(
                        "remove or narrow line {} of {} so it leaves {} alone",
                        i + 1,
                        path.display(),
                        matched.join(", ")
                    ),
                ));
            }
        }
    }
    findings
}

/// Whether a header_checks pattern can apply to the field `name`: it
/// matches a bare `Name: x` line, or it is anchored on `Name:` and goes on
/// to look at the value.
fn names_field(pattern: &regex::Regex, name: &str) -> bool {
    if pattern.is_match(&format!("{name}: x")) {
        return true;
    }
    let text = pattern.as_str();
    let text = text.strip_prefix("(?i)").unwrap_or(text);
    let Some(rest) = text.strip_prefix('^') else {
        return false;
    };
    let lower = rest.to_ascii_lowercase();
    let name = name.to_ascii_lowercase();
    lower.strip_prefix(&name).is_some_and(|after| {
        after.starts_with(':') || after.starts_with("\\s*:") || after.starts_with(" *:")
    })
}

/// A `/pattern/flags ACTION` line of a regexp or pcre table.
fn regexp_rule(line: &str) -> Option<(regex::Regex, bool, String)> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let (negated, rest) = match line.strip_prefix('!') {
        Some(rest) => (true, rest),
        None => (false, line),
    };
    let delim = rest.chars().next()?;
    if delim.is_alphanumeric() || delim.is_whitespace() {
        return None;
    }
    let body = &rest[delim.len_utf8()..];
    let mut end = None;
    let mut escaped = false;
    for (i, c) in body.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == delim {
            end = Some(i);
            break;
        }
    }
    let end = end?;
    let pattern = &body[..end];
    let after = &body[end + delim.len_utf8()..];
    let flags: String = after
        .chars()
        .take_while(|c| c.is_ascii_alphabetic())
        .collect();
    let action = after[flags.len()..].trim().to_string();
    // Postfix regexp tables match case-insensitively unless `i` toggles it.
    let insensitive = flags.matches('i').count().is_multiple_of(2);
    let regex = regex::RegexBuilder::new(pattern)
        .case_insensitive(insensitive)
        .multi_line(flags.contains('m'))
        .ignore_whitespace(flags.contains('x'))
        .build()
        .ok()?;
    Some((regex, negated, action))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milter_addresses_and_chroot() {
        let q = Path::new("/var/spool/postfix");
        assert_eq!(
            target("unix:/rmilter/r.sock", true, q),
            Target::Unix(PathBuf::from("/var/spool/postfix/rmilter/r.sock"))
        );
        assert_eq!(
            target("unix:/run/r.sock", false, q),
            Target::Unix(PathBuf::from("/run/r.sock"))
        );
        assert_eq!(
            target("unix:private/r", false, q),
            Target::Unix(PathBuf::from("/var/spool/postfix/private/r"))
        );
        let listen = ListenAddr::Inet("127.0.0.1:8891".parse().unwrap());
        assert!(reaches(&target("inet:localhost:8891", true, q), &listen));
        assert!(reaches(&target("inet:127.0.0.1:8891", false, q), &listen));
        assert!(!reaches(&target("inet:127.0.0.1:8892", false, q), &listen));
        assert_eq!(
            postfix_spec(
                &ListenAddr::Unix("/var/spool/postfix/rmilter/r.sock".into()),
                true,
                q
            ),
            Some("unix:/rmilter/r.sock".to_string())
        );
        assert_eq!(
            postfix_spec(&ListenAddr::Unix("/run/rmilter/r.sock".into()), true, q),
            None
        );
        assert_eq!(
            postfix_spec(&listen, true, q),
            Some("inet:127.0.0.1:8891".to_string())
        );
        let e =
            entries("{ inet:localhost:1, default_action=accept , content_timeout = 10s }, unix:/x");
        assert_eq!(e[0].spec, "inet:localhost:1");
        assert_eq!(
            e[0].settings,
            vec![
                ("default_action".to_string(), "accept".to_string()),
                ("content_timeout".to_string(), "10s".to_string())
            ]
        );
        assert_eq!(e[1].spec, "unix:/x");
        assert_eq!(parse_time("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_time("300"), Some(Duration::from_secs(300)));
    }

    #[test]
    fn regexp_table_rules() {
        let (re, neg, action) = regexp_rule("/^Subject:/ IGNORE").unwrap();
        assert!(re.is_match("subject: x") && !neg && action == "IGNORE");
        let (re, _, _) = regexp_rule("/^Subject:/i REPLACE Subject: x").unwrap();
        assert!(!re.is_match("subject: x") && re.is_match("Subject: x"));
        let (_, neg, _) = regexp_rule("!/^X-/ IGNORE").unwrap();
        assert!(neg);
        assert!(regexp_rule("# comment").is_none());
        assert!(regexp_rule("if /^X/").is_none());
        let (re, _, _) = regexp_rule("%^(From|To):%  IGNORE").unwrap();
        assert!(re.is_match("To: x"));
        let (re, _, _) = regexp_rule("/^Received: from localhost/ IGNORE").unwrap();
        assert!(names_field(&re, "Received") && !names_field(&re, "From"));
        let (re, _, _) = regexp_rule("/^subject\\s*:.*viagra/ REJECT").unwrap();
        assert!(names_field(&re, "Subject"));
    }
}
