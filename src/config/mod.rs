//! Configuration: the one loader used by `run`, `check-config` and reload.
//!
//! `rmilter.toml` is parsed into the raw serde structs of [`raw`], then
//! validated into the typed [`Config`] by [`validate`]. Downstream code never
//! sees raw strings. Errors name the file, the key and what is wrong.

pub mod raw;
mod validate;

use ipnet::IpNet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use validate::{
    DEFAULT_HEADERS, DEFAULT_OVERSIGN_HEADERS, check_selector, normalize_domain, parse_algorithm,
    parse_listen, parse_sender_pattern, render_selector,
};

/// Default location of the configuration file.
pub const DEFAULT_CONFIG: &str = "/etc/rmilter/rmilter.toml";

/// Default directory for `keys generate`.
pub const DEFAULT_KEY_DIR: &str = "/etc/rmilter/keys";

/// `-c FILE` of every subcommand that reads the configuration.
#[derive(Debug, clap::Args)]
pub struct ConfigArg {
    /// Configuration file [default: /etc/rmilter/rmilter.toml, or the
    /// embedded defaults when that file does not exist]
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// Where a configuration came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A configuration file.
    File(PathBuf),
    /// No file: the defaults compiled into rmilter.
    Embedded,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::File(path) => write!(f, "{}", path.display()),
            Source::Embedded => f.write_str("embedded defaults"),
        }
    }
}

/// Settings given on the command line that replace the file's.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--listen ADDR`
    pub listen: Option<String>,
    /// `--key DOMAIN:SELECTOR:KEYFILE`, repeated; replaces the key table.
    pub keys: Vec<String>,
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub source: Source,
    pub listen: ListenAddr,
    pub socket: SocketOptions,
    pub authserv_id: String,
    pub log_level: LogLevel,
    pub limits: Limits,
    pub actions: ActionTable,
    pub outbound: OutboundRules,
    pub signing: Signing,
    pub keys: Vec<KeySpec>,
    pub dns: DnsSettings,
    pub verify: VerifySettings,
    pub policy: PolicyTable,
    pub report: ReportSettings,
    /// Where `rmilter run` writes its pid, so that `rmilter keys` can ask
    /// it to reload; `None`: no pid file.
    pub pid_file: Option<PathBuf>,
    /// Signing domains whose keys `rmilter keys` manages (`[[key]]` rows
    /// with `dir`); their state files decide which selectors sign.
    pub managed: Vec<ManagedDomain>,
    /// Settings of `rmilter keys rotate`, `retire` (`[keys]`).
    pub lifecycle: KeyLifecycle,
    /// The unprivileged user and group `rmilter run` switches to after
    /// binding its sockets when started as root; `None`: stay as started.
    pub run_as: Option<RunAs>,
    /// The Prometheus endpoint and the periodic health log line.
    pub metrics: MetricsSettings,
}

impl Config {
    /// For a `%` key (its `name` and `domains`): the domains it signs for,
    /// as far as the configuration says (its `domains`, then the exact
    /// domains of the rules naming it), and the rules naming it whose
    /// domains cannot be listed (`*@*.example.com`, `*`).
    pub fn sender_domain_key_domains(
        &self,
        name: Option<&str>,
        listed: &[String],
    ) -> (Vec<String>, Vec<String>) {
        let mut domains = listed.to_vec();
        let mut open = Vec::new();
        let Some(name) = name else {
            return (domains, open);
        };
        for rule in self
            .signing
            .rules
            .iter()
            .filter(|r| r.keys.iter().any(|k| k == name))
        {
            match &rule.sender.domain {
                DomainPattern::Exact(d) => {
                    if !domains.contains(d) {
                        domains.push(d.clone());
                    }
                }
                _ => open.push(format!("{} {:?}", rule.origin, rule.sender.text)),
            }
        }
        (domains, open)
    }

    /// What `rmilter keys dns/check/status` and doctor say about a `%` key
    /// whose rules reach domains that cannot be listed; `None` when every
    /// domain it signs for is known.
    pub fn sender_domain_key_note(&self, key: &KeySpec) -> Option<String> {
        if key.domain != SENDER_DOMAIN {
            return None;
        }
        let (domains, open) = self.sender_domain_key_domains(key.name.as_deref(), &key.domains);
        if open.is_empty() && !domains.is_empty() {
            return None;
        }
        Some(format!(
            "key {} (domain \"%\", selector {}) signs for {}: each such domain must publish \
             {}._domainkey.DOMAIN; list them in its domains = [...] to have them checked{}",
            key.name.as_deref().unwrap_or("?"),
            key.selector,
            if open.is_empty() {
                "no domain named anywhere".to_string()
            } else {
                format!("the senders of {}", open.join(", "))
            },
            key.selector,
            if domains.is_empty() {
                String::new()
            } else {
                format!(" (known: {})", domains.join(", "))
            }
        ))
    }

    /// With `[[signing.rule]]` rows: the `[[key]]` rows (static and
    /// managed) no rule reaches, which never sign, as messages.
    pub fn keys_no_rule_reaches(&self) -> Vec<String> {
        if self.signing.rules.is_empty() {
            return Vec::new();
        }
        let names: Vec<&str> = self
            .keys
            .iter()
            .filter_map(|k| k.name.as_deref())
            .chain(self.managed.iter().filter_map(|m| m.name.as_deref()))
            .collect();
        let reached = |name: Option<&str>, domain: &str| {
            self.signing.rules.iter().any(|r| {
                r.keys.iter().any(|k| {
                    Some(k.as_str()) == name || (k == domain && !names.contains(&k.as_str()))
                })
            })
        };
        let mut out = Vec::new();
        for k in &self.keys {
            if !reached(k.name.as_deref(), &k.domain) {
                out.push(format!(
                    "{} ({} s={}) never signs: no [[signing.rule]] names it",
                    k.origin, k.domain, k.selector
                ));
            }
        }
        for m in &self.managed {
            if !reached(m.name.as_deref(), &m.domain) {
                out.push(format!(
                    "{} (managed {}) never signs: no [[signing.rule]] names it",
                    m.origin, m.domain
                ));
            }
        }
        out
    }

    /// The static key rows with each `%` key replaced by one row per
    /// domain it is known to sign for.
    pub fn keys_by_domain(&self) -> Vec<KeySpec> {
        let mut out = Vec::new();
        for key in &self.keys {
            if key.domain != SENDER_DOMAIN {
                out.push(key.clone());
                continue;
            }
            let (domains, _) = self.sender_domain_key_domains(key.name.as_deref(), &key.domains);
            for d in domains {
                out.push(KeySpec {
                    domain: d,
                    ..key.clone()
                });
            }
        }
        out
    }
}

/// Who the daemon runs as after binding (`user`, `group`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    pub user: String,
    pub uid: u32,
    /// The configured group, else the user's primary group.
    pub group: String,
    pub gid: u32,
}

/// `[metrics]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsSettings {
    /// Where the Prometheus text endpoint listens; `None`: off.
    pub listen: Option<SocketAddr>,
    /// How often the daemon logs a health line; `None`: never.
    pub health_log_interval: Option<Duration>,
}

/// The milter socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    Unix(PathBuf),
    Inet(SocketAddr),
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Unix(path) => write!(f, "unix:{}", path.display()),
            ListenAddr::Inet(SocketAddr::V4(a)) => write!(f, "inet:{}:{}", a.ip(), a.port()),
            ListenAddr::Inet(SocketAddr::V6(a)) => write!(f, "inet6:[{}]:{}", a.ip(), a.port()),
        }
    }
}

/// Permissions of a unix listening socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketOptions {
    pub mode: u32,
    /// Owner to set on the socket (name, uid); `None` keeps the process user.
    pub owner: Option<(String, u32)>,
    /// Group to set on the socket (name, gid); `None` keeps the process group.
    pub group: Option<(String, u32)>,
    /// Whether a non-loopback inet listener is allowed.
    pub allow_remote: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

/// Resource limits of the milter server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub max_connections: usize,
    /// A connection that sends nothing for this long is closed.
    pub idle_timeout: Duration,
    /// How long a stopping daemon waits for messages in progress.
    pub shutdown_timeout: Duration,
    /// Total size of all header fields of one message.
    pub max_header_bytes: usize,
    /// Number of header fields of one message.
    pub max_headers: usize,
    /// Largest message (headers and body) verified; beyond it the DKIM
    /// result is a temperror, so DMARC is never skipped for size.
    pub max_message_bytes: usize,
    /// The part of an inbound message kept in memory; the rest is spooled
    /// to a private temporary file.
    pub memory_bytes: usize,
    /// Where spool files go; `None`: the system's temporary directory.
    pub spool_dir: Option<PathBuf>,
}

/// What rmilter does with a message: the reply it gives Postfix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Let the message through (unsigned or unverified, with a log line).
    Accept,
    /// Refuse it temporarily (4xx): the client retries, nothing is lost.
    Tempfail,
    /// Refuse it permanently (5xx).
    Reject,
    /// Accept it into Postfix's hold queue for an administrator to review.
    Quarantine,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Accept => "accept",
            Action::Tempfail => "tempfail",
            Action::Reject => "reject",
            Action::Quarantine => "quarantine",
        }
    }
}

/// The configured action for each failure class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionTable {
    /// rmilter could not evaluate the message (internal error, signing failure).
    pub on_error: Action,
    /// The From gate refused the message (not exactly one author address).
    pub bad_from: Action,
    /// The header section exceeds `limits.max_header_bytes` or `limits.max_headers`.
    pub oversized_headers: Action,
}

/// Which messages are outbound (signed) rather than inbound (verified).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundRules {
    /// SASL-authenticated clients (`{auth_authen}` set).
    pub authenticated: bool,
    /// Clients whose IP address is in one of these networks.
    pub networks: Vec<IpNet>,
    /// Postfix `{daemon_name}` values (`milter_macro_daemon_name`).
    pub daemon_names: Vec<String>,
    /// Local submission through `non_smtpd_milters` (sendmail, pickup).
    pub local_submission: bool,
}

/// DKIM canonicalization algorithm (RFC 6376 §3.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Canon {
    Simple,
    Relaxed,
}

impl Canon {
    pub fn as_str(self) -> &'static str {
        match self {
            Canon::Simple => "simple",
            Canon::Relaxed => "relaxed",
        }
    }
}

/// Signing settings shared by all keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signing {
    pub header_canon: Canon,
    pub body_canon: Canon,
    /// Header fields signed when present.
    pub headers: Vec<String>,
    /// Header fields signed once more than present (RFC 6376 §8.15), so that
    /// no instance can be added after signing.
    pub oversign: Vec<String>,
    /// Signature lifetime (`x=`); `None` omits the tag.
    pub expire: Option<Duration>,
    /// Sign mail from a subdomain with its parent domain's keys.
    pub subdomains: bool,
    /// How `rules` choose keys: the first matching rule, or every one.
    pub rule_match: RuleMatch,
    /// `[[signing.rule]]` in file order. When not empty, the rules alone
    /// choose the keys (keys by From domain are off).
    pub rules: Vec<SigningRule>,
    /// Which SASL logins may have which senders signed.
    pub logins: LoginPolicy,
}

/// `signing.rule_match`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleMatch {
    /// The first rule (in file order) whose sender pattern matches signs
    /// (OpenDKIM's default).
    First,
    /// Every matching rule signs (OpenDKIM's `MultipleSignatures yes`).
    All,
}

impl RuleMatch {
    pub fn as_str(self) -> &'static str {
        match self {
            RuleMatch::First => "first",
            RuleMatch::All => "all",
        }
    }
}

/// One `[[signing.rule]]` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningRule {
    pub sender: SenderPattern,
    /// Key references: a `[[key]]` name, else a signing domain (every key
    /// of that domain). Checked against the key table when loading.
    pub keys: Vec<String>,
    /// `signing.rule[N]`, for messages.
    pub origin: String,
}

/// A sender address pattern: `local@domain` where the local part is exact
/// or `*`, and the domain is exact, `*.suffix` (any subdomain, not the
/// suffix itself) or `*`; `*` alone matches every sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SenderPattern {
    /// As written in the file.
    pub text: String,
    /// The local part, lower case; `None`: any.
    pub local: Option<String>,
    pub domain: DomainPattern,
}

/// The domain half of a [`SenderPattern`] (lower-case A-labels).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainPattern {
    Any,
    Exact(String),
    /// Any subdomain of this domain, not the domain itself.
    Subdomains(String),
}

impl DomainPattern {
    pub fn matches(&self, domain: &str) -> bool {
        match self {
            DomainPattern::Any => true,
            DomainPattern::Exact(d) => domain == d,
            DomainPattern::Subdomains(d) => domain
                .strip_suffix(d.as_str())
                .is_some_and(|p| p.len() > 1 && p.ends_with('.')),
        }
    }
}

impl SenderPattern {
    /// Whether the From gate's `address` (local part as written, domain a
    /// lower-case A-label) matches; local parts compare case-insensitively.
    pub fn matches(&self, address: &str) -> bool {
        let Some((local, domain)) = address.rsplit_once('@') else {
            return false;
        };
        let domain = domain.to_ascii_lowercase();
        self.domain.matches(&domain)
            && self
                .local
                .as_ref()
                .is_none_or(|l| *l == local.to_lowercase())
    }
}

/// `[signing.logins]`: sign mail of a SASL-authenticated client only when
/// its login may send as the From address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginPolicy {
    pub enabled: bool,
    /// A login `user@example.com` may send as any address at example.com.
    pub own_domain: bool,
    /// Postfix `smtpd_sender_login_maps` source file (plain text), read
    /// with the keys at start and reload.
    pub sender_login_maps: Option<PathBuf>,
    /// What happens to a message the login may not send: `Accept` passes
    /// it unsigned (logged).
    pub action: Action,
    /// (login lower case, senders it may send as: lower-case domains,
    /// addresses, or `*`).
    pub allow: Vec<(String, Vec<String>)>,
}

impl Default for LoginPolicy {
    fn default() -> Self {
        LoginPolicy {
            enabled: false,
            own_domain: true,
            sender_login_maps: None,
            action: Action::Accept,
            allow: Vec::new(),
        }
    }
}

/// Key algorithms rmilter signs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAlgorithm {
    Rsa,
    Ed25519,
}

impl KeyAlgorithm {
    /// The DKIM `a=` name.
    pub fn dkim_name(self) -> &'static str {
        match self {
            KeyAlgorithm::Rsa => "rsa-sha256",
            KeyAlgorithm::Ed25519 => "ed25519-sha256",
        }
    }

    /// The key record `k=` value.
    pub fn key_type(self) -> &'static str {
        match self {
            KeyAlgorithm::Rsa => "rsa",
            KeyAlgorithm::Ed25519 => "ed25519",
        }
    }
}

/// The `[[key]]` domain of a key that signs with the sender's domain
/// (OpenDKIM's KeyTable `%`).
pub const SENDER_DOMAIN: &str = "%";

/// One row of the signing key table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeySpec {
    /// The `[[key]]` name rules refer to; `None`: unnamed (rules reach it
    /// through its domain).
    pub name: Option<String>,
    /// Signing domain, lower-case A-label, or [`SENDER_DOMAIN`] (`%`): the
    /// From domain of each message it signs.
    pub domain: String,
    /// For a `%` key: the domains it is known to sign for (`domains`), for
    /// `rmilter keys dns/check/status` and doctor.
    pub domains: Vec<String>,
    pub selector: String,
    pub path: PathBuf,
    /// When given, the key file must hold a key of this algorithm.
    pub algorithm: Option<KeyAlgorithm>,
    /// Where the row came from, for error messages (`key[0]`, `--key`).
    pub origin: String,
}

/// A signing domain whose keys live in a managed key directory: the
/// directory's `state.toml` says which keys are pending, active (signing),
/// retiring or retired, and `rmilter keys` maintains it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedDomain {
    /// The `[[key]]` name rules refer to (all active keys of the
    /// directory); `None`: reached through its domain.
    pub name: Option<String>,
    /// Signing domain, lower-case A-label.
    pub domain: String,
    /// The domain's key directory (key files and `state.toml`).
    pub dir: PathBuf,
    /// Where the row came from, for error messages (`key[2]`).
    pub origin: String,
}

/// Settings of the key lifecycle commands (`[keys]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyLifecycle {
    /// Selector template of `rmilter keys rotate`, see [`KeyLifecycle::selector`].
    pub selector_template: String,
    /// RSA modulus size of rotated keys.
    pub rsa_bits: u32,
    /// Owner (name, uid, gid) given to the key files and directories that
    /// `rmilter keys` creates when it runs as root; `None` keeps the
    /// invoking user.
    pub owner: Option<(String, u32, u32)>,
    /// How long a retiring key's record stays published before the key may
    /// be marked retired.
    pub retiring_period: Duration,
}

impl KeyLifecycle {
    /// The selector for a new key: the template with `{algorithm}` (`rsa`,
    /// `ed25519`), `{date}` (YYYYMMDD, UTC), `{year}`, `{month}`, `{day}`
    /// replaced. `date` is YYYYMMDD.
    pub fn selector(&self, algorithm: KeyAlgorithm, date: &str) -> String {
        validate::render_selector(&self.selector_template, algorithm.key_type(), date)
            .unwrap_or_else(|_| format!("{}{date}", algorithm.key_type()))
    }
}

/// Resolver settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsSettings {
    /// Empty: the system resolvers from /etc/resolv.conf.
    pub nameservers: Vec<SocketAddr>,
    pub timeout: Duration,
    pub attempts: usize,
    pub cache_size: usize,
}

/// Inbound verification settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifySettings {
    /// DKIM signatures verified per message; the rest are skipped.
    pub max_signatures: usize,
    /// Smallest RSA key a DKIM pass may use (RFC 8301 §3.2: 1024).
    pub min_rsa_bits: usize,
    /// Time for all DNS work of one message.
    pub time_budget: Duration,
    /// SPF evaluation time limit (RFC 7208 §4.6.4); beyond it, temperror.
    pub spf_time_limit: Duration,
    /// SPF void-lookup limit (RFC 7208 §4.6.4).
    pub spf_void_lookups: u32,
    /// Verify ARC chains.
    pub arc: bool,
    /// Sealers (ARC-Seal d=) whose passing chain overrides a DMARC failure.
    pub trusted_arc_sealers: Vec<String>,
    /// Honour RFC 7489's `pct=` (RFC 9989 removed it).
    pub honor_pct: bool,
    /// Quarantine (instead of only flagging) a message whose display name
    /// shows an address of another domain.
    pub quarantine_display_mismatch: bool,
}

/// What happens to inbound mail, per DMARC outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyActions {
    /// DMARC fail, published policy reject.
    pub reject: Action,
    /// DMARC fail, published policy quarantine.
    pub quarantine: Action,
    /// DMARC fail, published policy none.
    pub none: Action,
    /// DMARC could not be evaluated (DNS temporary failure).
    pub temperror: Action,
    /// The DMARC record or the inputs are permanently broken.
    pub permerror: Action,
    /// Evaluate and log, never act.
    pub monitor: bool,
}

/// The global policy actions and per-domain overrides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyTable {
    pub global: PolicyActions,
    /// (author domain, actions) pairs; the longest matching suffix wins.
    pub domains: Vec<(String, PolicyActions)>,
}

impl PolicyTable {
    /// The actions for mail whose author domain is `domain`.
    pub fn for_domain(&self, domain: &str) -> &PolicyActions {
        self.domains
            .iter()
            .filter(|(d, _)| {
                domain == d
                    || domain
                        .strip_suffix(d.as_str())
                        .is_some_and(|p| p.ends_with('.'))
            })
            .max_by_key(|(d, _)| d.len())
            .map_or(&self.global, |(_, actions)| actions)
    }
}

/// Where DMARC aggregate report data is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportStore {
    /// An SQLite database file, created on first use.
    Sqlite(PathBuf),
    /// A PostgreSQL connection string (`postgres://…`), shared by several hosts.
    Postgres(String),
}

impl fmt::Display for ReportStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReportStore::Sqlite(path) => write!(f, "{}", path.display()),
            // Never print a password.
            ReportStore::Postgres(url) => f.write_str(&redact_url(url)),
        }
    }
}

/// A connection string with any password replaced by `***`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (auth, host) = match rest.rsplit_once('@') {
        Some((auth, host)) => (auth, host),
        None => return url.to_string(),
    };
    match auth.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}

/// The XML schema of generated aggregate reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportFormat {
    /// RFC 9990 (`urn:ietf:params:xml:ns:dmarc-2.0`).
    Rfc9990,
    /// RFC 7489 Appendix C (no namespace, `pct`), for receivers that need it.
    Rfc7489,
}

/// DMARC aggregate reporting (RFC 9990).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportSettings {
    /// Record evaluations of inbound mail in the store.
    pub enabled: bool,
    pub store: ReportStore,
    pub org_name: String,
    /// Contact address in the report and the From of report mail.
    pub email: String,
    pub extra_contact_info: String,
    /// The reporting domain: file names, Subject "Submitter:", Message-ID.
    pub reporting_domain: String,
    /// Length of a reporting period; divides a day, aligned to UTC midnight.
    pub period: Duration,
    /// Store data older than this is deleted.
    pub retention: Duration,
    /// Report rows waiting for the store writer (each counts any number of
    /// evaluations); the evaluations of further rows are dropped.
    pub queue_size: usize,
    pub format: ReportFormat,
    /// The local MTA's sendmail command (program and leading arguments).
    pub sendmail: Vec<String>,
    /// Least time between two reports mailed to the same destination.
    pub destination_interval: Duration,
    /// How long a claim on a delivery lasts before another run may take it over.
    pub lease: Duration,
    /// How long after the end of its period a report is still tried.
    pub retry_for: Duration,
    /// Run `report send` inside the daemon after each period.
    pub schedule_in_daemon: bool,
    /// At most this many `rua=` addresses of one DMARC record get a report.
    pub max_rua_addresses: usize,
    /// `[report.failure]`: DMARC failure reports (RFC 9991).
    pub failure: FailureSettings,
}

/// `[report.failure]`: which failure reports are made and how many are sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureSettings {
    /// Capture DMARC failures of inbound mail whose record has `ruf=`.
    pub enabled: bool,
    /// Samples waiting for the store writer; more are dropped and counted.
    pub queue_size: usize,
    /// Also report failures of domains whose applied policy is none.
    pub policy_none: bool,
    /// RFC 6590 redaction of local parts in the returned header section.
    pub redact: bool,
    /// Header fields (lower-case names) left out of the returned header section.
    pub drop_headers: Vec<String>,
    /// Return the body too (at most `max_body_bytes`).
    pub include_body: bool,
    pub max_body_bytes: usize,
    /// At most this many `ruf=` addresses of one record get a report.
    pub max_ruf_addresses: usize,
    /// Report the envelope recipients (`Original-Rcpt-To`); the milter then
    /// asks Postfix for RCPT events.
    pub include_rcpt_to: bool,
    /// At most this many reports per (reported domain, source IP) per `per_source_period`.
    pub per_source: u64,
    pub per_source_period: Duration,
    /// At most this many reports to one destination address per UTC day.
    pub per_destination_per_day: u64,
    /// At most this many failure report mails in total per UTC day.
    pub max_per_day: u64,
    /// Addresses that get a copy of every failure report sent.
    pub bcc: Vec<String>,
}

/// A configuration that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {error}")]
    Read { file: String, error: std::io::Error },
    #[error("{file}:{line}:{column}: {message}")]
    Syntax {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{file}: {key}: {message}")]
    Invalid {
        file: String,
        key: String,
        message: String,
    },
}

/// Load the configuration.
///
/// With `path` given, that file must exist. Without it, `default_path` is
/// read when it exists, else the embedded defaults apply. `overrides` from
/// the command line replace the file's values before validation.
pub fn load(
    path: Option<&Path>,
    default_path: &Path,
    overrides: &Overrides,
) -> Result<Config, ConfigError> {
    let (source, text) = match path {
        Some(path) => (Source::File(path.to_path_buf()), Some(read(path)?)),
        None if default_path.exists() => (
            Source::File(default_path.to_path_buf()),
            Some(read(default_path)?),
        ),
        None => (Source::Embedded, None),
    };
    from_text(source, text.as_deref().unwrap_or(""), overrides)
}

/// Parse and validate configuration text (the file's content).
pub fn from_text(source: Source, text: &str, overrides: &Overrides) -> Result<Config, ConfigError> {
    let raw: raw::RawConfig = toml::from_str(text).map_err(|e| syntax_error(&source, text, &e))?;
    validate::validate(source, raw, overrides)
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
        file: path.display().to_string(),
        error,
    })
}

fn syntax_error(source: &Source, text: &str, e: &toml::de::Error) -> ConfigError {
    let (line, column) = match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            (line, column)
        }
        None => (1, 1),
    };
    ConfigError::Syntax {
        file: source.to_string(),
        line,
        column,
        message: e.message().trim().replace('\n', " "),
    }
}
