//! Command-line interface: the clap definitions of every subcommand.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

// The subcommand modules take these from `config` and `keys::cli`, which
// own them; this module only imports (no module imports it back but
// main.rs), and re-exports them for callers of the command line.
pub use crate::config::{ConfigArg, DEFAULT_CONFIG, DEFAULT_KEY_DIR};
pub use crate::keys::cli::AlgorithmArg as KeyAlgorithm;

#[derive(Debug, Parser)]
#[command(
    name = "rmilter",
    version,
    about = "Postfix milter for DKIM signing and DKIM/SPF/DMARC/ARC verification",
    long_about = "rmilter is one milter for Postfix: it DKIM-signs outbound mail with RSA and \
                  Ed25519 keys and verifies inbound mail. Point smtpd_milters and \
                  non_smtpd_milters at its socket."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the milter daemon in the foreground.
    ///
    /// Without -c, /etc/rmilter/rmilter.toml is read when it exists; otherwise
    /// rmilter runs on its embedded defaults (verify only, no signing keys).
    /// SIGHUP reloads the configuration and keys; SIGTERM/SIGINT stop accepting
    /// connections, let messages in progress finish and exit 0.
    Run(RunArgs),
    /// Load and validate the configuration and key files, print a summary.
    ///
    /// Exits non-zero with the file, key and reason when something is wrong.
    CheckConfig(ConfigArg),
    /// DKIM key management.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// DMARC aggregate reports (RFC 9990): generate and send.
    #[command(subcommand)]
    Report(crate::report::cli::ReportCommand),
    /// Audit Postfix's milter wiring and hardening, and the DNS records of
    /// the signing domains, against what rmilter needs.
    ///
    /// Reads `postconf -n` and `postconf -M` (or main.cf and master.cf from
    /// --postfix-dir) and prints each finding with its severity, why it
    /// matters and the exact fix. Exits 1 when a finding is high.
    Doctor(crate::doctor::DoctorArgs),
    /// Show how rmilter decides about one message, step by step: direction,
    /// From gate, DKIM, SPF, ARC, DMARC, policy, Authentication-Results and
    /// the answer (outbound: the keys and signatures).
    ///
    /// The daemon's own evaluation, run once; --dns answers lookups from a
    /// zone file instead of the configured resolvers.
    Explain(crate::explain::ExplainArgs),
    /// Translate OpenDKIM's and OpenDMARC's configuration (and Postfix's
    /// milter lines) into an rmilter.toml, with a report of every option.
    ///
    /// Prints the key-file fixes rmilter needs and the postconf lines that
    /// switch Postfix. Exits 0 when nothing behaves differently, 1 when
    /// differences are listed, 78 when input is unreadable or invalid.
    Migrate(crate::migrate::MigrateArgs),
    /// Write the manual pages (rmilter.8, rmilter.toml.5) and the bash and
    /// zsh completions into DIR; used to build the package.
    #[command(hide = true)]
    Manual(ManualArgs),
}

#[derive(Debug, Args)]
pub struct ManualArgs {
    /// Directory to write into (created when missing)
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Listen on ADDR instead of the configured address:
    /// unix:/path, inet:HOST:PORT or inet6:[ADDR]:PORT
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Sign mail from DOMAIN with the key in KEYFILE under SELECTOR; repeat
    /// for several keys. Replaces the key table of the configuration file.
    #[arg(long = "key", value_name = "DOMAIN:SELECTOR:KEYFILE")]
    pub keys: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Generate a private key (PKCS#8 PEM, mode 0600) and print its DNS record.
    ///
    /// The key is written to DIR/DOMAIN/SELECTOR.pem; an existing file is
    /// never overwritten.
    Generate(GenerateArgs),
    /// Print the DNS TXT record of every configured signing key, in zone-file
    /// syntax.
    Dns(ConfigArg),
    #[command(flatten)]
    Lifecycle(crate::keys::cli::LifecycleCommand),
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Signing domain (the d= tag)
    #[arg(long, value_name = "DOMAIN")]
    pub domain: String,
    /// Selector (the s= tag)
    #[arg(long, value_name = "SELECTOR")]
    pub selector: String,
    /// Key algorithm
    #[arg(long, value_enum, default_value_t = KeyAlgorithm::Rsa)]
    pub algorithm: KeyAlgorithm,
    /// RSA modulus size in bits (2048, 3072 or 4096); not used for ed25519
    #[arg(long, value_name = "N", default_value_t = 2048)]
    pub bits: u32,
    /// Key directory
    #[arg(long, value_name = "DIR", default_value = DEFAULT_KEY_DIR)]
    pub dir: PathBuf,
}
