//! `rmilter report …`: the clap definitions of the report subcommands and
//! their dispatch (`generate` writes report files, `send` mails them).

use super::store::Store;
use super::{generate, period_of, send, unix_time, xml};
use crate::config::{self, Config, Overrides};
use crate::config::{ConfigArg, DEFAULT_CONFIG};
use clap::{Args, Subcommand};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

#[derive(Debug, Subcommand)]
pub enum ReportCommand {
    /// Write the RFC 9990 aggregate reports of one period as files.
    ///
    /// One gzip file per policy domain, named as RFC 9990 requires
    /// (reporter!domain!begin!end!id.xml.gz). A period that has ended is
    /// kept in the store as generated, so `report send` later mails exactly
    /// these bytes; the period in progress is only previewed.
    Generate(GenerateArgs),
    /// Mail every finished report to its domain's rua= addresses.
    ///
    /// Through the local MTA (report.sendmail), after the RFC 9990 external
    /// destination check, honouring !size limits, once per destination
    /// even when runs overlap or crash; a re-send is byte-identical.
    /// Prints one line per delivery and a summary; exits 1 when a store
    /// error or a failed hand-over to the MTA occurred.
    Send(SendArgs),
    /// Send the queued DMARC failure reports (RFC 9991) now.
    ///
    /// `report send` sends them too; this sends only them. With --dry-run,
    /// show each queued report's destinations and what would happen
    /// (authorisation, !size, rate limits) without sending or changing
    /// anything; add --print to see the report mails themselves.
    Failures(FailuresArgs),
}

#[derive(Debug, Args)]
pub struct FailuresArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Show what would be sent; change nothing, mail nothing
    #[arg(long)]
    pub dry_run: bool,
    /// With --dry-run: print each report mail that would be sent
    #[arg(long, requires = "dry_run")]
    pub print: bool,
    /// Take TIME (RFC 3339 or Unix seconds) as the current time
    #[arg(long, value_name = "TIME")]
    pub now: Option<String>,
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// The period: "last" (the most recent that has ended), "current", a
    /// UTC date (2026-11-21), an RFC 3339 time or Unix seconds inside it
    #[arg(long, value_name = "WHEN", default_value = "last")]
    pub period: String,
    /// Only this policy domain
    #[arg(long, value_name = "DOMAIN")]
    pub domain: Option<String>,
    /// Directory for the report files
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub out: PathBuf,
    /// Also write the uncompressed XML next to each .xml.gz
    #[arg(long)]
    pub xml: bool,
    /// Take TIME (RFC 3339 or Unix seconds) as the current time
    #[arg(long, value_name = "TIME")]
    pub now: Option<String>,
}

#[derive(Debug, Args)]
pub struct SendArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Show what would be sent; change nothing, mail nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Take TIME (RFC 3339 or Unix seconds) as the current time
    #[arg(long, value_name = "TIME")]
    pub now: Option<String>,
}

const EX_CONFIG: u8 = 78;

/// Run a report subcommand; returns the process exit code.
pub fn main(command: ReportCommand) -> ExitCode {
    match command {
        ReportCommand::Generate(args) => run_generate(&args),
        ReportCommand::Send(args) => run_send(&args),
        ReportCommand::Failures(args) => run_failures(&args),
    }
}

fn load(args: &ConfigArg) -> Result<Config, ExitCode> {
    config::load(
        args.config.as_deref(),
        Path::new(DEFAULT_CONFIG),
        &Overrides::default(),
    )
    .map_err(|e| {
        eprintln!("rmilter: {e}");
        ExitCode::from(EX_CONFIG)
    })
}

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("rmilter: {message}");
    ExitCode::from(1)
}

/// Unix seconds, an RFC 3339 time or a UTC date.
pub fn parse_time(text: &str) -> Result<i64, String> {
    if let Ok(n) = text.parse::<i64>() {
        return Ok(n);
    }
    let full = if text.len() == 10 {
        format!("{text}T00:00:00Z")
    } else {
        text.to_string()
    };
    humantime::parse_rfc3339_weak(&full)
        .map(unix_time)
        .map_err(|_| {
            format!(
                "expected Unix seconds, an RFC 3339 time or a date such as 2026-11-21, got {text:?}"
            )
        })
}

fn now_from(arg: &Option<String>) -> Result<i64, String> {
    match arg {
        Some(text) => parse_time(text).map_err(|m| format!("--now: {m}")),
        None => Ok(unix_time(SystemTime::now())),
    }
}

fn run_generate(args: &GenerateArgs) -> ExitCode {
    let config = match load(&args.config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let settings = &config.report;
    let now = match now_from(&args.now) {
        Ok(n) => n,
        Err(m) => return fail(m),
    };
    let length = settings.period.as_secs() as i64;
    let at = match args.period.as_str() {
        "last" => now - length,
        "current" => now,
        text => match parse_time(text) {
            Ok(t) => t,
            Err(m) => return fail(format!("--period: {m}")),
        },
    };
    let (begin, end) = period_of(at, length);
    let mut store = match Store::open(&settings.store, Duration::from_secs(30)) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let periods = match store.periods_at(begin, args.domain.as_deref()) {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    if let Err(e) = std::fs::create_dir_all(&args.out) {
        return fail(format!("{}: {e}", args.out.display()));
    }
    let ended = end < now;
    let mut written = 0;
    for (domain, begin, end) in periods {
        if config::normalize_domain(&domain).ok().as_deref() != Some(domain.as_str()) {
            continue;
        }
        let report = match generate::ensure(&mut store, settings, &domain, begin, end, now, ended) {
            Ok(Some(r)) => r,
            Ok(None) => continue,
            Err(e) => return fail(e),
        };
        let path = args.out.join(&report.filename);
        if let Err(e) = std::fs::write(&path, &report.gz) {
            return fail(format!("{}: {e}", path.display()));
        }
        if args.xml {
            let text = match xml::gunzip(&report.gz, 1 << 30) {
                Ok(t) => t,
                Err(e) => return fail(format!("{}: {e}", report.filename)),
            };
            let xml_path = args.out.join(report.filename.trim_end_matches(".gz"));
            if let Err(e) = std::fs::write(&xml_path, text) {
                return fail(format!("{}: {e}", xml_path.display()));
            }
        }
        written += 1;
        println!(
            "wrote {} ({} messages, Report-ID {}{})",
            path.display(),
            report.messages,
            report.report_id,
            if ended {
                ""
            } else {
                ", period in progress: preview"
            }
        );
    }
    if written == 0 {
        println!("no report data for the period beginning {begin}");
    }
    ExitCode::SUCCESS
}

fn run_send(args: &SendArgs) -> ExitCode {
    let (config, options) = match send_setup(&args.config, &args.now, args.dry_run) {
        Ok(setup) => setup,
        Err(code) => return code,
    };
    let mut out = std::io::stdout();
    let result = send::run(&config.report, &config.dns, &options, &mut out)
        .map(|s| (s.line(args.dry_run), s.failed));
    sent(result, &mut out)
}

fn run_failures(args: &FailuresArgs) -> ExitCode {
    let (config, options) = match send_setup(&args.config, &args.now, args.dry_run) {
        Ok(setup) => setup,
        Err(code) => return code,
    };
    let mut out = std::io::stdout();
    let result = super::failures::run(&config.report, &config.dns, &options, args.print, &mut out)
        .map(|s| (s.line(args.dry_run), s.failed));
    sent(result, &mut out)
}

/// The configuration and send options of `report send` and `report failures`.
fn send_setup(
    config: &ConfigArg,
    now: &Option<String>,
    dry_run: bool,
) -> Result<(Config, send::Options), ExitCode> {
    let config = load(config)?;
    let now = now_from(now).map_err(fail)?;
    Ok((config, send::Options { dry_run, now }))
}

/// The summary line and exit code of a sending run: 1 when any delivery failed.
fn sent(result: anyhow::Result<(String, usize)>, out: &mut std::io::Stdout) -> ExitCode {
    match result {
        Ok((line, failed)) => {
            println!("{line}");
            let _ = out.flush();
            if failed > 0 {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => fail(format!("{e:#}")),
    }
}
