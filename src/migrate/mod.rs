//! `rmilter migrate`: translate a running OpenDKIM + OpenDMARC set-up
//! (opendkim.conf and every dataset it names, opendmarc.conf, the
//! /etc/default files and Postfix's milter lines) into one commented
//! rmilter.toml, with a report of what became of every option found, the
//! commands that make the key files acceptable to rmilter, and the
//! `postconf` lines that switch Postfix over.
//!
//! Exit codes: 0 translated with no behaviour change; 1 translated, the
//! differences listed; 78 unreadable or invalid input (file and line named).
//! Secrets (LDAP passwords, SQL DSNs, keys written into a KeyTable) are never
//! echoed: the report names options and rows, never their values.

pub mod conf;
pub mod emit;
pub mod opendkim;
pub mod opendmarc;
pub mod options;
pub mod postfix;
#[cfg(test)]
mod tests;

use clap::Args;
use options::Daemon;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

pub const EX_CONFIG: u8 = 78;

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// OpenDKIM's configuration [default: /etc/opendkim.conf when it exists]
    #[arg(long, value_name = "FILE")]
    pub opendkim: Option<PathBuf>,
    /// OpenDMARC's configuration [default: /etc/opendmarc.conf when it exists]
    #[arg(long, value_name = "FILE")]
    pub opendmarc: Option<PathBuf>,
    /// Read main.cf and master.cf from DIR instead of running postconf
    #[arg(long, value_name = "DIR")]
    pub postfix_dir: Option<PathBuf>,
    /// Write the rmilter.toml to FILE (mode 0640) instead of standard output
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Print the configuration and the report as one JSON object
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("{}: cannot read: {error}", path.display())]
    Unreadable {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{}:{line}: {reason}", path.display())]
    Invalid {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error(
        "nothing to migrate: no --opendkim or --opendmarc file given and neither /etc/opendkim.conf nor /etc/opendmarc.conf exists"
    )]
    Nothing,
    #[error("{0}")]
    Other(String),
}

/// What became of one option (or one dataset row).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Translated,
    NotNeeded,
    NotSupported,
    /// Translated, but rmilter behaves differently (said how).
    Differs,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Translated => "translated",
            Status::NotNeeded => "not needed",
            Status::NotSupported => "not supported",
            Status::Differs => "differs",
        }
    }

    /// Whether rmilter behaves differently than the old daemons.
    pub fn changes_behaviour(self) -> bool {
        matches!(self, Status::NotSupported | Status::Differs)
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Finding {
    pub daemon: Option<Daemon>,
    /// The option (or "Postfix", "key file").
    pub option: String,
    /// file:line where it was found, or "".
    pub at: String,
    pub status: Status,
    pub text: String,
}

/// One signing key of the new configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyOut {
    pub name: Option<String>,
    /// A domain, or "%" (the From domain).
    pub domain: String,
    pub selector: String,
    pub file: PathBuf,
    /// Where it came from, for the comment.
    pub origin: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleOut {
    pub sender: String,
    pub keys: Vec<String>,
    pub origin: String,
}

/// Everything the new rmilter.toml says; `None` keeps rmilter's default.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub authserv_id: Option<(String, String)>,
    pub listen: String,
    pub postfix_milter: String,
    pub user: Option<String>,
    pub socket_group: Option<String>,
    pub canonicalization: Option<(String, String)>,
    pub headers: Option<(Vec<String>, String)>,
    pub oversign_headers: Option<(Vec<String>, String)>,
    pub expire: Option<(String, String)>,
    pub subdomains: Option<(bool, String)>,
    pub networks: Option<(Vec<String>, String)>,
    pub daemon_names: Option<(Vec<String>, String)>,
    pub authenticated: Option<(bool, String)>,
    pub keys: Vec<KeyOut>,
    pub rule_match_all: Option<String>,
    pub rules: Vec<RuleOut>,
    pub min_rsa_bits: Option<(u32, String)>,
    pub max_signatures: Option<(u32, String)>,
    pub dns_timeout: Option<(String, String)>,
    pub nameservers: Option<(Vec<String>, String)>,
    pub on_error: Option<(String, String)>,
    pub spool_dir: Option<(String, String)>,
    pub monitor: Option<(bool, String)>,
    pub quarantine: Option<(String, String)>,
    pub report_enabled: Option<String>,
    pub report_sendmail: Option<(Vec<String>, String)>,
    /// `[report] email` (OpenDMARC FailureReportsSentBy).
    pub report_email: Option<(String, String)>,
    /// `[report.failure]` (OpenDMARC FailureReports*).
    pub failure_enabled: Option<String>,
    pub failure_policy_none: Option<(bool, String)>,
    pub failure_bcc: Option<(Vec<String>, String)>,
    pub monitor_domains: Vec<(String, String)>,
}

/// The result of a migration.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Migration {
    /// The new rmilter.toml.
    pub config: String,
    pub findings: Vec<Finding>,
    /// Commands that make the key files acceptable to rmilter.
    pub key_fixes: Vec<String>,
    /// The Postfix change: `postconf` command lines.
    pub postfix: Vec<String>,
    /// Files read.
    pub sources: Vec<String>,
}

impl Migration {
    pub fn exit_code(&self) -> u8 {
        if self.findings.iter().any(|f| f.status.changes_behaviour()) || !self.key_fixes.is_empty()
        {
            1
        } else {
            0
        }
    }
}

/// Inputs of a migration, resolved.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    pub opendkim: Option<PathBuf>,
    pub opendmarc: Option<PathBuf>,
    pub postfix_dir: Option<PathBuf>,
    /// Ask `postconf` when no postfix_dir is given.
    pub run_postconf: bool,
    /// Where the output will be written (relative key paths are kept absolute).
    pub etc: Option<PathBuf>,
}

pub struct Ctx {
    pub plan: Plan,
    pub findings: Vec<Finding>,
    pub key_fixes: Vec<String>,
    pub postfix: Vec<String>,
    pub sources: Vec<String>,
}

impl Ctx {
    pub fn add(
        &mut self,
        daemon: Option<Daemon>,
        option: &str,
        at: String,
        status: Status,
        text: impl Into<String>,
    ) {
        self.findings.push(Finding {
            daemon,
            option: option.to_string(),
            at,
            status,
            text: text.into(),
        });
    }
}

/// The sibling /etc/default/<name> of a configuration file in /etc (or in a
/// corpus directory laid out like /etc).
pub fn default_file(conf: &Path, name: &str) -> PathBuf {
    conf.parent()
        .unwrap_or(Path::new("/etc"))
        .join("default")
        .join(name)
}

pub fn migrate(inputs: &Inputs) -> Result<Migration, MigrateError> {
    if inputs.opendkim.is_none() && inputs.opendmarc.is_none() {
        return Err(MigrateError::Nothing);
    }
    let mut cx = Ctx {
        plan: Plan::default(),
        findings: Vec::new(),
        key_fixes: Vec::new(),
        postfix: Vec::new(),
        sources: Vec::new(),
    };
    let dkim = match &inputs.opendkim {
        Some(p) => Some(conf::ConfFile::load(Daemon::Opendkim, p)?),
        None => None,
    };
    let dmarc = match &inputs.opendmarc {
        Some(p) => Some(conf::ConfFile::load(Daemon::Opendmarc, p)?),
        None => None,
    };
    let postfix = postfix::load(inputs, &mut cx)?;
    if let Some(d) = &dkim {
        cx.sources.push(d.path.display().to_string());
        opendkim::translate(d, &mut cx)?;
    } else {
        cx.add(
            None,
            "OpenDKIM",
            String::new(),
            Status::NotNeeded,
            "no opendkim.conf given: nothing is signed (add [[key]] tables to sign)",
        );
    }
    match &dmarc {
        Some(m) => {
            cx.sources.push(m.path.display().to_string());
            opendmarc::translate(m, dkim.as_ref(), &mut cx)?;
        }
        None => {
            // Without OpenDMARC nothing acted on DMARC results: keep it so.
            cx.plan.monitor = Some((
                true,
                "no OpenDMARC configuration: DMARC was not enforced, so rmilter only evaluates and reports".into(),
            ));
            cx.add(
                None,
                "OpenDMARC",
                String::new(),
                Status::Translated,
                "no opendmarc.conf: policy.monitor = true (DMARC evaluated, Authentication-Results added, never acted on)",
            );
        }
    }
    postfix::plan(dkim.as_ref(), dmarc.as_ref(), postfix.as_ref(), &mut cx);
    opendkim::check_key_files(&mut cx);
    let config = emit::render(&cx.plan, &cx.sources);
    // What migrate writes must load: a value carried over from the old
    // files that rmilter's own checks refuse is named now, not at rmilter's
    // first start (only the first such error is known).
    let translated = crate::config::Source::File(PathBuf::from("translated rmilter.toml"));
    if let Err(e) =
        crate::config::from_text(translated, &config, &crate::config::Overrides::default())
    {
        cx.add(
            None,
            "rmilter.toml",
            String::new(),
            Status::Differs,
            format!("does not load yet ({e}): rmilter refuses to start until the option it came from is fixed"),
        );
    }
    Ok(Migration {
        config,
        findings: cx.findings,
        key_fixes: cx.key_fixes,
        postfix: cx.postfix,
        sources: cx.sources,
    })
}

/// The `rmilter migrate` command.
pub fn main(args: MigrateArgs) -> ExitCode {
    let existing = |p: &str| Some(PathBuf::from(p)).filter(|p| p.exists());
    let explicit = args.opendkim.is_some() || args.opendmarc.is_some();
    let inputs = Inputs {
        opendkim: args.opendkim.clone().or_else(|| {
            (!explicit)
                .then(|| existing("/etc/opendkim.conf"))
                .flatten()
        }),
        opendmarc: args.opendmarc.clone().or_else(|| {
            (!explicit)
                .then(|| existing("/etc/opendmarc.conf"))
                .flatten()
        }),
        postfix_dir: args.postfix_dir.clone(),
        run_postconf: args.postfix_dir.is_none(),
        etc: args.output.clone(),
    };
    let migration = match migrate(&inputs) {
        Ok(m) => m,
        Err(e) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({ "exit": EX_CONFIG, "error": e.to_string() })
                );
            } else {
                eprintln!("rmilter: migrate: {e}");
            }
            return ExitCode::from(EX_CONFIG);
        }
    };
    let code = migration.exit_code();
    if let Some(out) = &args.output
        && let Err(e) = write_config(out, &migration.config)
    {
        eprintln!("rmilter: migrate: {}: cannot write: {e}", out.display());
        return ExitCode::from(1);
    }
    if args.json {
        let mut v = serde_json::to_value(&migration).unwrap_or_default();
        v["exit"] = code.into();
        if let Some(out) = &args.output {
            v["written"] = out.display().to_string().into();
        }
        println!("{v:#}");
    } else {
        if args.output.is_none() {
            print!("{}", migration.config);
        }
        let report = render_report(&migration, args.output.as_deref());
        if args.output.is_some() {
            print!("{report}");
        } else {
            eprint!("{report}");
        }
    }
    ExitCode::from(code)
}

fn write_config(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o640)
        .open(path)?;
    f.write_all(text.as_bytes())
}

/// The human-readable report.
pub fn render_report(m: &Migration, written: Option<&Path>) -> String {
    let mut out = String::new();
    if let Some(w) = written {
        out.push_str(&format!("wrote {}\n", w.display()));
    }
    out.push_str(&format!("read: {}\n\n", m.sources.join(", ")));
    for status in [
        Status::Translated,
        Status::NotNeeded,
        Status::Differs,
        Status::NotSupported,
    ] {
        let rows: Vec<&Finding> = m.findings.iter().filter(|f| f.status == status).collect();
        if rows.is_empty() {
            continue;
        }
        out.push_str(&format!("{}:\n", status.as_str()));
        for f in rows {
            let who = match f.daemon {
                Some(d) => format!("{} {}", d.as_str(), f.option),
                None => f.option.clone(),
            };
            let at = if f.at.is_empty() {
                String::new()
            } else {
                format!(" ({})", f.at)
            };
            out.push_str(&format!("  {who}{at}: {}\n", f.text));
        }
        out.push('\n');
    }
    if !m.key_fixes.is_empty() {
        out.push_str("key files rmilter would refuse; fix them with:\n");
        for c in &m.key_fixes {
            out.push_str(&format!("  {c}\n"));
        }
        out.push('\n');
    }
    if !m.postfix.is_empty() {
        out.push_str(
            "switch Postfix to rmilter (after `rmilter check-config` passes and rmilter runs):\n",
        );
        for c in &m.postfix {
            out.push_str(&format!("  {c}\n"));
        }
        out.push_str("  postfix reload\n  rmilter doctor\n\n");
    }
    let differs = m.findings.iter().any(|f| f.status.changes_behaviour());
    out.push_str(match (differs, m.key_fixes.is_empty()) {
        (false, true) => "result: translated with no behaviour change\n",
        (false, false) => {
            "result: translated; rmilter refuses the key files until the commands above are run (exit 1)\n"
        }
        (true, _) => "result: translated; the differences above change behaviour (exit 1)\n",
    });
    out
}
