//! The key lifecycle subcommands of `rmilter keys` (rotate, check,
//! activate, retire, status): their clap definitions, flattened into
//! [`crate::cli::KeysCommand`], and the code that runs them and prints the
//! result as text or, with `--json`, as one JSON document on stdout.
//!
//! Exit codes: 0 success, 1 a problem (a failed check, a refused change),
//! 78 a configuration error, 2 usage.

use super::check::Checker;
use super::lifecycle::{self, LifecycleError, StatusRow};
use crate::cli::{ConfigArg, DEFAULT_CONFIG, KeyAlgorithm as CliAlgorithm};
use crate::config::{self, Config, KeyAlgorithm, Overrides};
use crate::daemon::{ReloadRequest, request_reload};
use clap::{Args, Subcommand};
use serde_json::json;
use std::path::Path;
use std::process::ExitCode;
use std::time::SystemTime;

const EX_CONFIG: u8 = 78;

#[derive(Debug, Subcommand)]
pub enum LifecycleCommand {
    /// Start a key rotation: make a pending key and print its DNS record.
    ///
    /// The domain must be managed (a [[key]] table with domain and dir).
    /// Without --algorithm, one key per algorithm the domain signs with
    /// (RSA and Ed25519 for a new domain). The selector comes from
    /// keys.selector (default {algorithm}-{date}). A pending key never
    /// signs; publish its record, then `rmilter keys activate`. Running
    /// rotate again while a key is pending prints that key again.
    Rotate(RotateArgs),
    /// Compare each key's DNS record with the key, through the configured
    /// resolver.
    ///
    /// Verdicts: ok, missing, mismatch, testing (t=y), too-short, several
    /// (more than one record), syntax, revoked, dns-error, key-file. Exits 1
    /// when a pending, active, retiring or static key has a problem.
    Check(CheckArgs),
    /// Make pending keys sign, after their records pass `keys check`.
    ///
    /// Refuses, changing nothing, when a record is not right (unless
    /// --force). The keys that were active stay active (an overlap: both
    /// sign) until `rmilter keys retire`. Then asks the running rmilter to
    /// reload (pid_file), unless --no-reload.
    Activate(ActivateArgs),
    /// Retire a key one step: active -> retiring (stops signing; keep its
    /// record published), retiring -> retired (after keys.retiring_period;
    /// prints the revocation record), pending -> retired.
    ///
    /// Without --selector: every active key overlapped by a newer active
    /// key of its algorithm, and every retiring key whose period is over.
    /// Refuses to retire a domain's last active key unless --force.
    Retire(RetireArgs),
    /// Show every key: domain, selector, algorithm, bits, state, since and
    /// DNS status.
    Status(StatusArgs),
}

#[derive(Debug, Args)]
pub struct RotateArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Managed signing domain
    #[arg(long, value_name = "DOMAIN")]
    pub domain: String,
    /// Make a key of this algorithm only
    #[arg(long, value_enum)]
    pub algorithm: Option<CliAlgorithm>,
    /// RSA modulus size (2048, 3072 or 4096) [default: keys.rsa_bits]
    #[arg(long, value_name = "N")]
    pub bits: Option<u32>,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Check only this domain's keys
    #[arg(long, value_name = "DOMAIN")]
    pub domain: Option<String>,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ActivateArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Managed signing domain
    #[arg(long, value_name = "DOMAIN")]
    pub domain: String,
    /// Activate only this key (a pending key, or a retiring one to roll back)
    #[arg(long, value_name = "SELECTOR")]
    pub selector: Option<String>,
    /// Activate even when the DNS check fails
    #[arg(long)]
    pub force: bool,
    /// Do not signal the running rmilter to reload
    #[arg(long)]
    pub no_reload: bool,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RetireArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Managed signing domain
    #[arg(long, value_name = "DOMAIN")]
    pub domain: String,
    /// Retire only this key
    #[arg(long, value_name = "SELECTOR")]
    pub selector: Option<String>,
    /// Retire the last active key, or a retiring key before its period is over
    #[arg(long)]
    pub force: bool,
    /// Do not signal the running rmilter to reload
    #[arg(long)]
    pub no_reload: bool,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Show only this domain's keys
    #[arg(long, value_name = "DOMAIN")]
    pub domain: Option<String>,
    /// Do not ask the DNS (the DNS column stays empty)
    #[arg(long)]
    pub no_dns: bool,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

/// Run a lifecycle subcommand.
pub fn run(command: LifecycleCommand) -> ExitCode {
    let result = match command {
        LifecycleCommand::Rotate(args) => rotate(&args),
        LifecycleCommand::Check(args) => check(&args),
        LifecycleCommand::Activate(args) => activate(&args),
        LifecycleCommand::Retire(args) => retire(&args),
        LifecycleCommand::Status(args) => status(&args),
    };
    match result {
        Ok(code) => code,
        Err(Failure::Config(e)) => {
            print_chain(&e);
            ExitCode::from(EX_CONFIG)
        }
        Err(Failure::Other(e)) => {
            print_chain(e.as_ref());
            ExitCode::from(1)
        }
    }
}

enum Failure {
    Config(config::ConfigError),
    Other(anyhow::Error),
}

impl From<LifecycleError> for Failure {
    fn from(e: LifecycleError) -> Self {
        Failure::Other(e.into())
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Other(e)
    }
}

fn print_chain(e: &(dyn std::error::Error + 'static)) {
    eprintln!("rmilter: {e}");
    let mut source = e.source();
    while let Some(cause) = source {
        eprintln!("  caused by: {cause}");
        source = cause.source();
    }
}

fn load(args: &ConfigArg) -> Result<Config, Failure> {
    config::load(
        args.config.as_deref(),
        Path::new(DEFAULT_CONFIG),
        &Overrides::default(),
    )
    .map_err(Failure::Config)
}

fn domain_arg(text: &str) -> Result<String, Failure> {
    config::normalize_domain(text).map_err(|m| Failure::Other(anyhow::anyhow!("--domain: {m}")))
}

fn block_on<F: std::future::Future>(future: F) -> Result<F::Output, Failure> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Other(anyhow::Error::new(e).context("cannot start the runtime")))?;
    Ok(rt.block_on(future))
}

fn checker(config: &Config) -> Result<Checker, Failure> {
    Checker::new(&config.dns).map_err(|e| Failure::Other(e.context("[dns]")))
}

fn print_json(value: &serde_json::Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("JSON serializes")
    );
}

fn rotate(args: &RotateArgs) -> Result<ExitCode, Failure> {
    let config = load(&args.config)?;
    let domain = domain_arg(&args.domain)?;
    let algorithm = args.algorithm.map(|a| match a {
        CliAlgorithm::Rsa => KeyAlgorithm::Rsa,
        CliAlgorithm::Ed25519 => KeyAlgorithm::Ed25519,
    });
    let keys = lifecycle::rotate(&config, &domain, algorithm, args.bits, SystemTime::now())?;
    if args.json {
        print_json(&json!({ "domain": domain, "keys": keys }));
        return Ok(ExitCode::SUCCESS);
    }
    for key in &keys {
        let what = if key.new {
            "new pending key"
        } else {
            "pending key (made earlier, not active yet)"
        };
        println!(
            "; {domain}: {what} {} ({} {} bits): {}",
            key.selector,
            key.algorithm,
            key.bits,
            key.file.display()
        );
        println!("; publish this record in the {domain} zone:");
        println!("{}", key.zone_entry);
    }
    println!(";");
    println!("; when it is published, check it and start signing with it:");
    println!(";   rmilter keys check --domain {domain}");
    println!(";   rmilter keys activate --domain {domain}");
    Ok(ExitCode::SUCCESS)
}

/// The DNS column of a row: the verdict, read for retired keys as what
/// happened to the record.
/// What the table cannot show: `%` keys whose domains are not all known,
/// and keys no signing rule reaches (they never sign).
fn notes(config: &Config) -> Vec<String> {
    config
        .keys
        .iter()
        .filter_map(|k| config.sender_domain_key_note(k))
        .chain(config.keys_no_rule_reaches())
        .collect()
}

fn dns_column(row: &StatusRow) -> String {
    match (&row.verdict, row.state) {
        (None, _) => "-".to_string(),
        (Some(v), "retired") if v.is_ok() => "still published".to_string(),
        (Some(v), _) => v.name().to_string(),
    }
}

fn check(args: &CheckArgs) -> Result<ExitCode, Failure> {
    let config = load(&args.config)?;
    let domain = args.domain.as_deref().map(domain_arg).transpose()?;
    let checker = checker(&config)?;
    let rows = block_on(lifecycle::status(
        &config,
        Some(&checker),
        domain.as_deref(),
    ))??;
    let problems = rows.iter().filter(|r| r.problem).count();
    let notes = notes(&config);
    if args.json {
        print_json(
            &json!({ "ok": problems == 0, "problems": problems, "keys": rows, "notes": notes }),
        );
    } else {
        for note in &notes {
            println!("note {note}");
        }
        for row in &rows {
            let verdict = row.verdict.as_ref().expect("check asks the DNS");
            println!(
                "{:<4} {} {} ({}, {}): {}: {}",
                if row.problem { "FAIL" } else { "ok" },
                row.domain,
                row.selector,
                row.state,
                row.algorithm,
                dns_column(row),
                verdict.detail(&row.record_name)
            );
        }
        if rows.is_empty() {
            println!("no keys to check in {}", config.source);
        } else {
            println!(
                "{} key{} checked: {}",
                rows.len(),
                if rows.len() == 1 { "" } else { "s" },
                match problems {
                    0 => "no problems".to_string(),
                    1 => "1 problem".to_string(),
                    n => format!("{n} problems"),
                }
            );
        }
    }
    Ok(if problems == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn status(args: &StatusArgs) -> Result<ExitCode, Failure> {
    let config = load(&args.config)?;
    let domain = args.domain.as_deref().map(domain_arg).transpose()?;
    let checker = if args.no_dns {
        None
    } else {
        Some(checker(&config)?)
    };
    let rows = block_on(lifecycle::status(
        &config,
        checker.as_ref(),
        domain.as_deref(),
    ))??;
    let unsigned: Vec<&str> = config
        .managed
        .iter()
        .map(|m| m.domain.as_str())
        .filter(|d| domain.as_deref().is_none_or(|w| w == *d))
        .filter(|d| !rows.iter().any(|r| r.domain == *d && r.signs))
        .collect();
    let notes = notes(&config);
    if args.json {
        print_json(&json!({ "keys": rows, "unsigned_domains": unsigned, "notes": notes }));
        return Ok(ExitCode::SUCCESS);
    }
    let header = [
        "DOMAIN",
        "SELECTOR",
        "ALGORITHM",
        "BITS",
        "STATE",
        "SINCE",
        "DNS",
    ];
    let table: Vec<[String; 7]> = rows
        .iter()
        .map(|r| {
            [
                r.domain.clone(),
                r.selector.clone(),
                r.algorithm.to_string(),
                r.bits.map_or("?".to_string(), |b| b.to_string()),
                r.state.to_string(),
                r.since.clone().unwrap_or_else(|| "-".to_string()),
                dns_column(r),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &table {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: &[&str]| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        println!("{}", out.trim_end());
    };
    line(&header);
    for row in &table {
        line(&row.iter().map(String::as_str).collect::<Vec<_>>());
    }
    for row in rows.iter().filter(|r| r.problem) {
        if let Some(v) = &row.verdict {
            println!(
                "! {} {}: {}",
                row.domain,
                row.selector,
                v.detail(&row.record_name)
            );
        }
    }
    for d in unsigned {
        println!("! {d}: no active key: its mail leaves unsigned");
    }
    for note in &notes {
        println!("! {note}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Ask the running daemon to reload; print what happened (text mode) and
/// return it as JSON.
fn reload(config: &Config, skip: bool, json_mode: bool) -> (serde_json::Value, bool) {
    let say = |text: String| {
        if !json_mode {
            println!("{text}");
        }
    };
    if skip {
        say("not reloading (--no-reload): reload rmilter to apply the change".to_string());
        return (json!({ "reload": "skipped" }), true);
    }
    match request_reload(config.pid_file.as_deref()) {
        Ok(ReloadRequest::Signalled(pid)) => {
            say(format!(
                "reload: signalled rmilter (pid {pid}); it logs \"configuration reloaded\", or why it refused"
            ));
            (json!({ "reload": "signalled", "pid": pid }), true)
        }
        Ok(ReloadRequest::NotRunning(path)) => {
            say(format!(
                "reload: rmilter is not running (no live pid in {}); the change applies when it starts",
                path.display()
            ));
            (
                json!({ "reload": "not-running", "pid_file": path.display().to_string() }),
                true,
            )
        }
        Ok(ReloadRequest::NoPidFile) => {
            say(
                "reload rmilter to apply the change: systemctl reload rmilter (SIGHUP); \
                 set pid_file in rmilter.toml to let rmilter keys do it"
                    .to_string(),
            );
            (json!({ "reload": "manual" }), true)
        }
        Err(e) => {
            eprintln!("rmilter: the state changed, but the reload failed: {e:#}");
            (
                json!({ "reload": "failed", "error": format!("{e:#}") }),
                false,
            )
        }
    }
}

fn activate(args: &ActivateArgs) -> Result<ExitCode, Failure> {
    let config = load(&args.config)?;
    let domain = domain_arg(&args.domain)?;
    let checker = checker(&config)?;
    let outcome = block_on(lifecycle::activate(
        &config,
        &checker,
        &domain,
        args.selector.as_deref(),
        args.force,
        SystemTime::now(),
    ))??;
    if outcome.refused {
        if args.json {
            print_json(&json!({ "activate": outcome }));
        } else {
            eprintln!("rmilter: {domain}: activation refused; nothing changed:");
            for k in &outcome.keys {
                eprintln!(
                    "  {} ({}): {}: {}",
                    k.selector, k.algorithm, k.dns.verdict, k.dns.detail
                );
            }
            eprintln!(
                "  publish the records, check with `rmilter keys check --domain {domain}`, then run activate again (--force skips the DNS check)"
            );
        }
        return Ok(ExitCode::from(1));
    }
    if !args.json {
        if outcome.keys.is_empty() {
            println!("{domain}: no pending key to activate");
        }
        for k in &outcome.keys {
            let forced = if k.verdict.is_ok() {
                String::new()
            } else {
                format!(" (forced; DNS: {})", k.dns.detail)
            };
            println!(
                "{domain}: {} ({}): {}{forced}",
                k.selector, k.algorithm, k.outcome
            );
        }
        println!("{domain}: active keys: {}", outcome.active.join(", "));
        if !outcome.overlap.is_empty() {
            println!(
                "{domain}: overlap: {} still sign{} next to the newer key; once mail signed with the new key verifies, run: rmilter keys retire --domain {domain}",
                outcome.overlap.join(", "),
                if outcome.overlap.len() == 1 { "s" } else { "" }
            );
        }
    }
    // Re-signal also when nothing changed: a re-run after a crash between
    // the state change and the reload completes the activation.
    let (reload_json, ok) = reload(&config, args.no_reload, args.json);
    if args.json {
        print_json(&json!({ "activate": outcome, "reload": reload_json }));
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn retire(args: &RetireArgs) -> Result<ExitCode, Failure> {
    let config = load(&args.config)?;
    let domain = domain_arg(&args.domain)?;
    let outcome = lifecycle::retire(
        &config,
        &domain,
        args.selector.as_deref(),
        args.force,
        SystemTime::now(),
    )?;
    if !args.json {
        for k in &outcome.keys {
            match (k.changed, k.to) {
                (false, to) => println!("{domain}: {} is already {to}", k.selector),
                (true, "retiring") => println!(
                    "{domain}: {}: {} -> retiring: it no longer signs; keep {} published until {} (mail signed with it may still be verified), then run: rmilter keys retire --domain {domain} --selector {}",
                    k.selector,
                    k.from,
                    k.record_name,
                    k.keep_record_until.as_deref().unwrap_or("?"),
                    k.selector
                ),
                (true, to) => println!("{domain}: {}: {} -> {to}", k.selector, k.from),
            }
            if let Some(revocation) = &k.revocation_value {
                println!(
                    "; {} may now be removed from the {domain} zone, or replaced with the revocation record:",
                    k.record_name
                );
                println!("{}", super::zone_entry(&domain, &k.selector, revocation));
            }
        }
        println!(
            "{domain}: active keys: {}",
            if outcome.active.is_empty() {
                "none (mail leaves unsigned)".to_string()
            } else {
                outcome.active.join(", ")
            }
        );
    }
    // Also when nothing changed: a re-run after a crash between the state
    // change and the reload completes the retirement.
    let (reload_json, ok) = reload(&config, args.no_reload, args.json);
    if args.json {
        print_json(&json!({ "retire": outcome, "reload": reload_json }));
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
