//! `rmilter doctor`: audit Postfix's configuration against what rmilter
//! needs, plus the usual hardening items, plus the DNS records of the
//! signing domains. Each finding has a severity, a one-line reason and the
//! exact fix (a `postconf -e` command, a master.cf change, an rmilter.toml
//! setting or a DNS record).
//!
//! Postfix's configuration comes from `postconf -n` and `postconf -M` (the
//! running system; `MAIL_CONFIG` or `--postfix-dir DIR`, as `postconf -c
//! DIR`, select another configuration directory), with every parameter's
//! effective value from `postconf` itself, so the defaults are the
//! installed version's. Only when Postfix is not installed does
//! `--postfix-dir` read main.cf and master.cf directly, with a built-in
//! table of Postfix 3.7's defaults ([`postconf`]), and says so. The checks are in [`milter`] (wiring: the sockets
//! Postfix connects to, actions, protocol, macros, other mail
//! authentication milters, header_checks), [`hardening`] and [`dns`].

pub mod dns;
pub mod hardening;
pub mod milter;
pub mod postconf;
pub mod signing;

use crate::config::Overrides;
use crate::config::{ConfigArg, DEFAULT_CONFIG};
use crate::runtime::Runtime;
use clap::Args;
use postconf::{MainCf, Service};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Check the Postfix configuration in DIR (as `postconf -c DIR`; read
    /// main.cf and master.cf directly, with Postfix 3.7's defaults, when
    /// Postfix is not installed)
    #[arg(long, value_name = "DIR")]
    pub postfix_dir: Option<PathBuf>,
    /// Skip the DNS checks of the signing domains
    #[arg(long)]
    pub no_dns: bool,
    /// Check the configuration only: do not look at the milter socket
    /// (whether it exists, its permissions, whether rmilter answers)
    #[arg(long)]
    pub no_probe: bool,
    #[command(flatten)]
    pub config: ConfigArg,
    /// Print one JSON document
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    High,
    Medium,
    Low,
    Info,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::High => "high",
            Severity::Medium => "medium",
            Severity::Low => "low",
            Severity::Info => "info",
        }
    }
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Stable identifier, e.g. `milter-missing`.
    pub id: &'static str,
    pub severity: Severity,
    /// `milter`, `hardening` or `dns`.
    pub category: &'static str,
    /// What was found, naming the service, parameter or domain.
    pub summary: String,
    /// Why it matters, in one line.
    pub why: String,
    /// The exact fix.
    pub fix: String,
}

impl Finding {
    pub fn new(
        id: &'static str,
        severity: Severity,
        category: &'static str,
        summary: impl Into<String>,
        why: impl Into<String>,
        fix: impl Into<String>,
    ) -> Finding {
        Finding {
            id,
            severity,
            category,
            summary: summary.into(),
            why: why.into(),
            fix: fix.into(),
        }
    }
}

/// Postfix's configuration, wherever it came from.
pub struct Postfix {
    pub main: MainCf,
    pub services: Vec<Service>,
    /// Where it came from, for the report.
    pub source: String,
    /// Where the defaults came from: the installed Postfix (naming its
    /// version) or the built-in table (naming the version it assumes).
    pub defaults: String,
    /// The configuration directory, for relative table paths.
    pub config_dir: Option<PathBuf>,
}

impl Postfix {
    /// main.cf and master.cf read from a directory, with the built-in
    /// defaults: for a configuration copied off a host without Postfix here.
    pub fn from_dir(dir: &Path) -> anyhow::Result<Postfix> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
        };
        Ok(Postfix {
            main: MainCf::parse(&read("main.cf")?),
            services: postconf::parse_master(&read("master.cf")?),
            source: format!(
                "{}/main.cf and master.cf",
                dir.display().to_string().trim_end_matches('/')
            ),
            defaults: format!(
                "a built-in table of Postfix {}'s defaults (postconf is not installed)",
                postconf::TABLE_VERSION
            ),
            config_dir: Some(dir.to_path_buf()),
        })
    }

    /// The installed Postfix's view, through `postconf` (`-c DIR` for
    /// another configuration directory): `-n` for what main.cf sets, `-M`
    /// for master.cf, and every parameter's effective value (`postconf`,
    /// `postconf -x`), so that the defaults are those of the installed
    /// version.
    pub fn from_postconf(dir: Option<&Path>) -> anyhow::Result<Postfix> {
        let run = |args: &[&str]| -> anyhow::Result<String> {
            let mut cmd = Command::new("postconf");
            if let Some(dir) = dir {
                cmd.arg("-c").arg(dir);
            }
            let out = cmd.args(args).output().map_err(|e| {
                anyhow::anyhow!(
                    "cannot run postconf: {e} (is Postfix installed? use --postfix-dir DIR to read a configuration directory)"
                )
            })?;
            if !out.status.success() {
                anyhow::bail!(
                    "postconf {}{} failed: {}",
                    dir.map(|d| format!("-c {} ", d.display()))
                        .unwrap_or_default(),
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        };
        let main = MainCf::parse(&run(&["-n"])?).with_effective(&run(&[])?, &run(&["-x"])?);
        // master.cf read from the directory keeps its line numbers for
        // the fixes (`postconf -M` prints one line per service).
        let services = match dir {
            Some(d) => {
                let path = d.join("master.cf");
                postconf::parse_master(
                    &std::fs::read_to_string(&path)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
                )
            }
            None => postconf::parse_master(&run(&["-M"])?),
        };
        let config_dir = match dir {
            Some(d) => Some(d.to_path_buf()),
            None => run(&["-h", "config_directory"])
                .ok()
                .map(|d| PathBuf::from(d.trim())),
        };
        let version = main.default("mail_version").unwrap_or_default();
        let c = dir
            .map(|d| format!("postconf -c {} ", d.display()))
            .unwrap_or_else(|| "postconf ".into());
        Ok(Postfix {
            main,
            services,
            source: match dir {
                Some(d) => format!("{c}-n and {}/master.cf", d.display()),
                None => format!("{c}-n and {c}-M"),
            },
            defaults: format!("postconf (Postfix {})", version.trim()),
            config_dir,
        })
    }
}

/// Whether `postconf` can be run (Postfix is installed).
pub fn postconf_installed() -> bool {
    Command::new("postconf")
        .args(["-d", "-h", "mail_version"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Everything the checks look at.
pub struct Context<'a> {
    pub postfix: &'a Postfix,
    pub runtime: &'a Runtime,
    /// Look at the milter socket itself.
    pub probe: bool,
}

/// Run every check except DNS.
pub fn check_config(cx: &Context<'_>) -> Vec<Finding> {
    let mut findings = milter::check(cx);
    findings.extend(hardening::check(cx));
    findings.extend(signing::check(cx));
    merge(findings)
}

/// One finding per problem: findings with the same id, severity and fix
/// (the same main.cf setting seen from several services) become one,
/// naming the other places.
fn merge(findings: Vec<Finding>) -> Vec<Finding> {
    let subject = |f: &Finding| {
        f.summary
            .split_once(": ")
            .map_or(f.summary.clone(), |(s, _)| s.to_string())
    };
    let mut out: Vec<(Finding, Vec<String>)> = Vec::new();
    for f in findings {
        match out
            .iter_mut()
            .find(|(o, _)| o.id == f.id && o.severity == f.severity && o.fix == f.fix)
        {
            Some((first, also)) => {
                let s = subject(&f);
                if s != subject(first) && !also.contains(&s) {
                    also.push(s);
                }
            }
            None => out.push((f, Vec::new())),
        }
    }
    out.into_iter()
        .map(|(mut f, also)| {
            if !also.is_empty() {
                f.summary
                    .push_str(&format!(" (likewise {})", also.join("; ")));
            }
            f
        })
        .collect()
}

/// Run `rmilter doctor`.
pub fn main(args: DoctorArgs) -> ExitCode {
    let runtime = match Runtime::load(
        args.config.config.as_deref(),
        Path::new(DEFAULT_CONFIG),
        &Overrides::default(),
    ) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("rmilter: {e}");
            return ExitCode::from(78);
        }
    };
    // With Postfix installed its own defaults apply (they differ between
    // versions); the built-in table only when it is not.
    let postfix = match &args.postfix_dir {
        Some(dir) if postconf_installed() => Postfix::from_postconf(Some(dir)),
        Some(dir) => Postfix::from_dir(dir),
        None => Postfix::from_postconf(None),
    };
    let postfix = match postfix {
        Ok(p) => p,
        Err(e) => {
            eprintln!("rmilter: {e:#}");
            return ExitCode::from(1);
        }
    };
    let cx = Context {
        postfix: &postfix,
        runtime: &runtime,
        probe: !args.no_probe,
    };
    let mut findings = check_config(&cx);
    if !args.no_dns {
        match tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
        {
            Ok(tokio) => findings.extend(tokio.block_on(dns::check(&runtime))),
            Err(e) => {
                eprintln!("rmilter: cannot start the runtime: {e}");
                return ExitCode::from(1);
            }
        }
    }
    findings.sort_by_key(|f| f.severity);
    let high = findings.iter().any(|f| f.severity == Severity::High);
    if args.json {
        let doc = serde_json::json!({
            "postfix": postfix.source,
            "postfix_defaults": postfix.defaults,
            "rmilter": runtime.config.source.to_string(),
            "dns_checked": !args.no_dns,
            "socket_probed": !args.no_probe,
            "findings": findings,
        });
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
    } else {
        print!("{}", render(&findings, &postfix, &runtime, &args));
    }
    if high {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// The text report.
pub fn render(
    findings: &[Finding],
    postfix: &Postfix,
    runtime: &Runtime,
    args: &DoctorArgs,
) -> String {
    let mut out = format!(
        "rmilter doctor: Postfix configuration from {}, defaults from {}; rmilter configuration {} (listen {})\n\n",
        postfix.source, postfix.defaults, runtime.config.source, runtime.config.listen
    );
    for f in findings {
        out.push_str(&format!(
            "[{}] {}: {}\n  why: {}\n  fix: {}\n\n",
            f.severity.as_str(),
            f.id,
            f.summary,
            f.why,
            f.fix
        ));
    }
    let count = |s: Severity| findings.iter().filter(|f| f.severity == s).count();
    let mut skipped = Vec::new();
    if args.no_dns {
        skipped.push("DNS checks skipped (--no-dns)");
    }
    if args.no_probe {
        skipped.push("milter socket not probed (--no-probe)");
    }
    out.push_str(&format!(
        "{} finding{}: {} high, {} medium, {} low, {} info{}{}\n",
        findings.len(),
        if findings.len() == 1 { "" } else { "s" },
        count(Severity::High),
        count(Severity::Medium),
        count(Severity::Low),
        count(Severity::Info),
        if skipped.is_empty() { "" } else { "; " },
        skipped.join("; ")
    ));
    out
}
