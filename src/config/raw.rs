//! Raw configuration: serde structs that mirror `rmilter.toml` one to one.
//!
//! Every field is optional so that an empty file (or no file at all) means
//! "all defaults"; unknown keys are refused. Nothing outside `config/` sees
//! these types: `super::validate` turns them into the typed [`super::Config`].

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub listen: Option<String>,
    pub authserv_id: Option<String>,
    pub log_level: Option<String>,
    #[serde(default)]
    pub socket: RawSocket,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub actions: RawActions,
    #[serde(default)]
    pub outbound: RawOutbound,
    #[serde(default)]
    pub signing: RawSigning,
    #[serde(default, rename = "key")]
    pub keys: Vec<RawKey>,
    #[serde(default)]
    pub dns: RawDns,
    #[serde(default)]
    pub verify: RawVerify,
    #[serde(default)]
    pub policy: RawPolicy,
    #[serde(default)]
    pub report: RawReport,
    pub pid_file: Option<String>,
    #[serde(default, rename = "keys")]
    pub lifecycle: RawKeyLifecycle,
    pub user: Option<String>,
    pub group: Option<String>,
    #[serde(default)]
    pub metrics: RawMetrics,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    pub listen: Option<String>,
    pub health_log_interval: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSocket {
    pub mode: Option<String>,
    pub owner: Option<String>,
    pub group: Option<String>,
    pub allow_remote: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub max_connections: Option<i64>,
    pub idle_timeout: Option<String>,
    pub shutdown_timeout: Option<String>,
    pub max_header_bytes: Option<i64>,
    pub max_headers: Option<i64>,
    pub max_message_bytes: Option<i64>,
    pub memory_bytes: Option<i64>,
    pub spool_dir: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawActions {
    pub on_error: Option<String>,
    pub bad_from: Option<String>,
    pub oversized_headers: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOutbound {
    pub authenticated: Option<bool>,
    pub networks: Option<Vec<String>>,
    pub daemon_names: Option<Vec<String>>,
    pub local_submission: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSigning {
    pub canonicalization: Option<String>,
    pub headers: Option<Vec<String>>,
    pub oversign_headers: Option<Vec<String>>,
    pub expire: Option<String>,
    pub subdomains: Option<bool>,
    pub rule_match: Option<String>,
    #[serde(default, rename = "rule")]
    pub rules: Vec<RawSigningRule>,
    #[serde(default)]
    pub logins: RawLogins,
}

/// `[[signing.rule]]`: a sender pattern and the keys that sign its mail.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSigningRule {
    pub sender: Option<String>,
    pub keys: Option<Vec<String>>,
}

/// `[signing.logins]`: which SASL logins may have which senders signed.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLogins {
    pub enabled: Option<bool>,
    pub own_domain: Option<bool>,
    pub sender_login_maps: Option<String>,
    pub action: Option<String>,
    /// login → senders it may send as (domains, addresses, `*`).
    pub allow: Option<std::collections::BTreeMap<String, Vec<String>>>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKey {
    pub name: Option<String>,
    pub domain: Option<String>,
    pub domains: Option<Vec<String>>,
    pub selector: Option<String>,
    pub file: Option<String>,
    pub algorithm: Option<String>,
    pub dir: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDns {
    pub nameservers: Option<Vec<String>>,
    pub timeout: Option<String>,
    pub attempts: Option<i64>,
    pub cache_size: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVerify {
    pub max_signatures: Option<i64>,
    pub min_rsa_bits: Option<i64>,
    pub time_budget: Option<String>,
    pub spf_time_limit: Option<String>,
    pub spf_void_lookups: Option<i64>,
    pub arc: Option<bool>,
    pub trusted_arc_sealers: Option<Vec<String>>,
    pub dmarc_pct: Option<String>,
    pub display_name_mismatch: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    pub reject: Option<String>,
    pub quarantine: Option<String>,
    pub none: Option<String>,
    pub temperror: Option<String>,
    pub permerror: Option<String>,
    pub monitor: Option<bool>,
    #[serde(default)]
    pub domain: Vec<RawDomainPolicy>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDomainPolicy {
    pub domain: Option<String>,
    pub reject: Option<String>,
    pub quarantine: Option<String>,
    pub none: Option<String>,
    pub temperror: Option<String>,
    pub permerror: Option<String>,
    pub monitor: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReport {
    pub enabled: Option<bool>,
    pub store: Option<String>,
    pub org_name: Option<String>,
    pub email: Option<String>,
    pub extra_contact_info: Option<String>,
    pub reporting_domain: Option<String>,
    pub period: Option<String>,
    pub retention: Option<String>,
    pub queue_size: Option<i64>,
    pub format: Option<String>,
    pub sendmail: Option<Vec<String>>,
    pub destination_interval: Option<String>,
    pub lease: Option<String>,
    pub retry_for: Option<String>,
    pub schedule: Option<String>,
    pub max_rua_addresses: Option<i64>,
    #[serde(default)]
    pub failure: RawFailureReports,
}

/// `[report.failure]`: DMARC failure reports (RFC 9991).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFailureReports {
    pub enabled: Option<bool>,
    pub queue_size: Option<i64>,
    pub policy_none: Option<bool>,
    pub redact: Option<bool>,
    pub drop_headers: Option<Vec<String>>,
    pub include_body: Option<bool>,
    pub max_body_bytes: Option<i64>,
    pub max_ruf_addresses: Option<i64>,
    pub include_rcpt_to: Option<bool>,
    pub per_source: Option<i64>,
    pub per_source_period: Option<String>,
    pub per_destination_per_day: Option<i64>,
    pub max_per_day: Option<i64>,
    pub bcc: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKeyLifecycle {
    pub selector: Option<String>,
    pub rsa_bits: Option<i64>,
    pub owner: Option<String>,
    pub retiring_period: Option<String>,
}
