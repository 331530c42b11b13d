//! The table of every OpenDKIM (2.11) and OpenDMARC (1.4) configuration
//! option and what `rmilter migrate` makes of it. It is written once, here:
//! the translator looks options up in it (an option not in it is a
//! configuration error in both daemons, so it is one here too), and the
//! README's option table is generated from it ([`markdown_table`]) and tested
//! to match, so the two cannot drift.

/// Which daemon's configuration file an option belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Daemon {
    Opendkim,
    Opendmarc,
}

impl Daemon {
    pub fn as_str(self) -> &'static str {
        match self {
            Daemon::Opendkim => "opendkim",
            Daemon::Opendmarc => "opendmarc",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Daemon::Opendkim => "OpenDKIM",
            Daemon::Opendmarc => "OpenDMARC",
        }
    }
}

/// What an option becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Translated to the rmilter.toml key(s) named.
    Translated(&'static str),
    /// rmilter needs no setting for it; why.
    NotNeeded(&'static str),
    /// rmilter cannot do it; what behaviour changes.
    NotSupported(&'static str),
}

impl Disposition {
    pub fn status(&self) -> &'static str {
        match self {
            Disposition::Translated(_) => "translated",
            Disposition::NotNeeded(_) => "not needed",
            Disposition::NotSupported(_) => "not supported",
        }
    }

    pub fn text(&self) -> &'static str {
        match self {
            Disposition::Translated(t)
            | Disposition::NotNeeded(t)
            | Disposition::NotSupported(t) => t,
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct OptionInfo {
    pub daemon: Daemon,
    pub name: &'static str,
    pub disposition: Disposition,
}

use Daemon::{Opendkim as K, Opendmarc as M};
use Disposition::{NotNeeded as N, NotSupported as U, Translated as T};

const fn o(daemon: Daemon, name: &'static str, disposition: Disposition) -> OptionInfo {
    OptionInfo {
        daemon,
        name,
        disposition,
    }
}

const LOG: Disposition = N("rmilter logs every decision to stderr (the journal under systemd)");
const DAEMON: Disposition = N("systemd runs and restarts rmilter (rmilter.service)");
const OWN_SOCKET: Disposition = N(
    "rmilter listens on its own socket (`listen`), so it can start before Postfix is switched; the printed postconf lines point Postfix at it",
);
const LDAP: Disposition = U(
    "rmilter reads no LDAP; export the KeyTable/SigningTable rows into [[key]] and [[signing.rule]]",
);
const VBR: Disposition = U("no VBR-Info header is added or checked (RFC 5518 is rarely used)");
const LUA: Disposition =
    U("no Lua policy scripts; express the policy in [[signing.rule]] and [policy]");
const STATS: Disposition =
    U("OpenDKIM's statistics are not kept; rmilter exports Prometheus metrics ([metrics])");
const ONACT: Disposition = U(
    "a DKIM result alone never rejects or tempfails in rmilter; DMARC ([policy]) decides what happens to failing mail",
);
const TESTING: Disposition = N("a testing aid of OpenDKIM; use `rmilter explain`");
const FAILREP: Disposition = U(
    "no DKIM failure reports (RFC 6651, r=y) are sent; DMARC failure reports (ruf=) are, with [report.failure]",
);

/// Every option of opendkim.conf(5) and opendmarc.conf(5).
pub static OPTIONS: &[OptionInfo] = &[
    // OpenDKIM 2.11, opendkim.conf(5).
    o(
        K,
        "AllowSHA1Only",
        N(
            "rmilter never signs with rsa-sha1, and rsa-sha1 signatures never count for DMARC (RFC 8301)",
        ),
    ),
    o(
        K,
        "AlwaysAddARHeader",
        N("rmilter always adds Authentication-Results to verified mail"),
    ),
    o(K, "AuthservID", T("authserv_id")),
    o(
        K,
        "AuthservIDWithJobID",
        U("the authserv-id never carries the queue id"),
    ),
    o(K, "AutoRestart", DAEMON),
    o(K, "AutoRestartCount", DAEMON),
    o(K, "AutoRestartRate", DAEMON),
    o(
        K,
        "Background",
        N("rmilter runs in the foreground under systemd"),
    ),
    o(
        K,
        "BaseDirectory",
        N("rmilter uses absolute paths; relative key paths are relative to rmilter.toml"),
    ),
    o(
        K,
        "BodyLengthDB",
        U("rmilter never signs with l= (a body length limit lets anyone append content)"),
    ),
    o(K, "BogusKey", ONACT),
    o(K, "CaptureUnknownErrors", LOG),
    o(K, "Canonicalization", T("signing.canonicalization")),
    o(
        K,
        "ChangeRootDirectory",
        N("the systemd unit confines rmilter (ProtectSystem=strict and more)"),
    ),
    o(K, "ClockDrift", N("rmilter allows for clock drift itself")),
    o(K, "Diagnostics", U("no z= copied-header tag is added")),
    o(K, "DiagnosticDirectory", TESTING),
    o(
        K,
        "DisableCryptoInit",
        N("no crypto library set-up to turn off"),
    ),
    o(
        K,
        "DNSConnect",
        N("rmilter's resolver retries over TCP when an answer is truncated"),
    ),
    o(K, "DNSTimeout", T("dns.timeout")),
    o(K, "Domain", T("[[key]] domain")),
    o(
        K,
        "DomainKeysCompat",
        N("DomainKeys (RFC 4870) is obsolete and never verified"),
    ),
    o(
        K,
        "DontSignMailTo",
        U("mail is signed whatever its recipients"),
    ),
    o(
        K,
        "EnableCoredumps",
        N("systemd's core dump settings apply"),
    ),
    o(
        K,
        "ExemptDomains",
        U("mail from these domains is verified like any other"),
    ),
    o(
        K,
        "ExternalIgnoreList",
        N(
            "only the log lines about unauthorised senders differ; outbound.networks decides what is signed",
        ),
    ),
    o(K, "FinalPolicyScript", LUA),
    o(K, "FixCRLF", N("Postfix hands the milter CRLF line ends")),
    o(K, "IdentityHeader", U("no i= from a header field")),
    o(K, "IdentityHeaderRemove", U("no i= from a header field")),
    o(
        K,
        "IgnoreMalformedMail",
        N("malformed mail gets the configured actions (actions.bad_from, actions.on_error)"),
    ),
    o(
        K,
        "Include",
        N("rmilter migrate reads the included file in its place"),
    ),
    o(K, "InternalHosts", T("outbound.networks")),
    o(
        K,
        "KeepAuthResults",
        N("rmilter removes only Authentication-Results fields carrying its own authserv-id"),
    ),
    o(K, "KeepTemporaryFiles", TESTING),
    o(K, "KeyFile", T("[[key]] file")),
    o(K, "KeyTable", T("[[key]] (name, domain, selector, file)")),
    o(K, "LDAPAuthMechanism", LDAP),
    o(K, "LDAPAuthName", LDAP),
    o(K, "LDAPAuthRealm", LDAP),
    o(K, "LDAPAuthUser", LDAP),
    o(K, "LDAPBindPassword", LDAP),
    o(K, "LDAPBindUser", LDAP),
    o(K, "LDAPDisableCache", LDAP),
    o(K, "LDAPKeepaliveIdle", LDAP),
    o(K, "LDAPKeepaliveInterval", LDAP),
    o(K, "LDAPKeepaliveProbes", LDAP),
    o(K, "LDAPTimeout", LDAP),
    o(K, "LDAPUseTLS", LDAP),
    o(K, "LogResults", LOG),
    o(K, "LogWhy", LOG),
    o(
        K,
        "MacroList",
        T("outbound.daemon_names ({daemon_name} only)"),
    ),
    o(
        K,
        "MaximumHeaders",
        N("limits.max_header_bytes (1 MiB) applies"),
    ),
    o(K, "MaximumSignaturesToVerify", T("verify.max_signatures")),
    o(
        K,
        "MaximumSignedBytes",
        U("rmilter never signs with l= (a body length limit lets anyone append content)"),
    ),
    o(K, "MilterDebug", LOG),
    o(
        K,
        "Minimum",
        U("signatures covering part of the body (l=) are never accepted"),
    ),
    o(
        K,
        "MinimumKeyBits",
        T("verify.min_rsa_bits (at least 1024)"),
    ),
    o(
        K,
        "Mode",
        T("outbound (s) and verification (v); rmilter always does both"),
    ),
    o(
        K,
        "MTA",
        U("outbound.daemon_names matches {daemon_name} only"),
    ),
    o(
        K,
        "MTACommand",
        N("no mail is sent by the milter; reports go through report.sendmail"),
    ),
    o(K, "MultipleSignatures", T("signing.rule_match")),
    o(
        K,
        "MustBeSigned",
        U("no header field is required to be signed; DMARC decides"),
    ),
    o(K, "Nameservers", T("dns.nameservers")),
    o(K, "NoHeaderB", N("header.b= is always added")),
    o(K, "OmitHeaders", T("signing.headers")),
    o(K, "On-BadSignature", ONACT),
    o(K, "On-Default", ONACT),
    o(K, "On-DNSError", ONACT),
    o(K, "On-InternalError", T("actions.on_error")),
    o(K, "On-KeyNotFound", ONACT),
    o(K, "On-NoSignature", ONACT),
    o(K, "On-Security", ONACT),
    o(K, "On-SignatureError", ONACT),
    o(K, "OversignHeaders", T("signing.oversign_headers")),
    o(
        K,
        "PeerList",
        U("peers are not exempt from signing and verification"),
    ),
    o(
        K,
        "PidFile",
        N("pid_file is written by rmilter itself (set in the generated file)"),
    ),
    o(
        K,
        "POPDBFile",
        U("POP-before-SMTP is not an outbound rule; use SASL or outbound.networks"),
    ),
    o(K, "Quarantine", ONACT),
    o(
        K,
        "QueryCache",
        N("rmilter always caches DNS answers (dns.cache_size)"),
    ),
    o(K, "RedirectFailuresTo", U("failing mail is not redirected")),
    o(
        K,
        "RemoveARAll",
        N("rmilter removes forged fields with its authserv-id; others are kept"),
    ),
    o(
        K,
        "RemoveARFrom",
        N("rmilter removes forged fields with its authserv-id; others are kept"),
    ),
    o(K, "RemoveOldSignatures", U("existing signatures are kept")),
    o(
        K,
        "ReplaceHeaders",
        U("header fields are never rewritten before signing"),
    ),
    o(
        K,
        "ReplaceRules",
        U("header fields are never rewritten before signing"),
    ),
    o(K, "ReportAddress", FAILREP),
    o(K, "ReportBccAddress", FAILREP),
    o(K, "RequestReports", U("no r=y tag is added to signatures")),
    o(
        K,
        "RequiredHeaders",
        N("the From gate (exactly one From with one address) always applies"),
    ),
    o(
        K,
        "RequireSafeKeys",
        N("rmilter always refuses unsafe key files (the report prints the fix)"),
    ),
    o(
        K,
        "ResignAll",
        U("mail that arrives signed from outside is not re-signed"),
    ),
    o(
        K,
        "ResignMailTo",
        U("mail that arrives signed from outside is not re-signed"),
    ),
    o(
        K,
        "ResolverConfiguration",
        N("rmilter uses dns.nameservers or /etc/resolv.conf"),
    ),
    o(K, "ResolverTracing", LOG),
    o(K, "ScreenPolicyScript", LUA),
    o(
        K,
        "SelectCanonicalizationHeader",
        U("canonicalization is not chosen per message"),
    ),
    o(K, "Selector", T("[[key]] selector")),
    o(
        K,
        "SenderHeaders",
        U("the signer is always chosen from the From field (the From gate)"),
    ),
    o(
        K,
        "SenderMacro",
        U("the signer is always chosen from the From field (the From gate)"),
    ),
    o(K, "SendReports", FAILREP),
    o(K, "SetupPolicyScript", LUA),
    o(
        K,
        "SignatureAlgorithm",
        N("the algorithm follows the key file (RSA: rsa-sha256, Ed25519: ed25519-sha256)"),
    ),
    o(K, "SignatureTTL", T("signing.expire")),
    o(K, "SignHeaders", T("signing.headers")),
    o(K, "SigningTable", T("[[signing.rule]]")),
    o(K, "SMTPURI", N("no mail is sent by the milter")),
    o(K, "Socket", OWN_SOCKET),
    o(
        K,
        "SoftStart",
        N("rmilter refuses to start with a bad configuration and says why"),
    ),
    o(
        K,
        "SoftwareHeader",
        U("no DKIM-Filter header field is added"),
    ),
    o(K, "Statistics", STATS),
    o(K, "StatisticsName", STATS),
    o(K, "StatisticsPolicyScript", STATS),
    o(K, "StatisticsPrefix", STATS),
    o(
        K,
        "StrictHeaders",
        N("the From gate and limits apply to every message"),
    ),
    o(K, "StrictTestMode", TESTING),
    o(K, "SubDomains", T("signing.subdomains")),
    o(K, "Syslog", LOG),
    o(K, "SyslogFacility", LOG),
    o(K, "SyslogName", LOG),
    o(K, "SyslogSuccess", LOG),
    o(K, "TemporaryDirectory", T("limits.spool_dir")),
    o(K, "TestDNSData", TESTING),
    o(K, "TestPublicKeys", TESTING),
    o(
        K,
        "TrustAnchorFile",
        N(
            "rmilter does no DNSSEC validation of its own; a validating resolver in dns.nameservers does",
        ),
    ),
    o(
        K,
        "TrustSignaturesFrom",
        U("no signer is trusted more than another; DMARC alignment decides"),
    ),
    o(
        K,
        "UMask",
        N("the socket mode is socket.mode; key files keep their modes"),
    ),
    o(
        K,
        "UnprotectedKey",
        N("unsigned (non-DNSSEC) key records are the norm and accepted"),
    ),
    o(
        K,
        "UserID",
        N(
            "rmilter runs as its own user (`user`); the report says which key files it must be able to read",
        ),
    ),
    o(K, "VBR-Certifiers", VBR),
    o(K, "VBR-PurgeFields", VBR),
    o(K, "VBR-TrustedCertifiers", VBR),
    o(K, "VBR-TrustedCertifiersOnly", VBR),
    o(K, "VBR-Type", VBR),
    o(
        K,
        "WeakSyntaxChecks",
        N("broken signatures are permerror and never count"),
    ),
    // OpenDMARC 1.4, opendmarc.conf(5).
    o(M, "AuthservID", T("authserv_id")),
    o(
        M,
        "AuthservIDWithJobID",
        U("the authserv-id never carries the queue id"),
    ),
    o(M, "AutoRestart", DAEMON),
    o(M, "AutoRestartCount", DAEMON),
    o(M, "AutoRestartRate", DAEMON),
    o(
        M,
        "Background",
        N("rmilter runs in the foreground under systemd"),
    ),
    o(M, "BaseDirectory", N("rmilter uses absolute paths")),
    o(
        M,
        "ChangeRootDirectory",
        N("the systemd unit confines rmilter (ProtectSystem=strict and more)"),
    ),
    o(
        M,
        "CopyFailuresTo",
        U("failing mail is not copied to another address"),
    ),
    o(M, "DNSTimeout", T("dns.timeout")),
    o(M, "DomainWhitelist", T("[[policy.domain]] monitor = true")),
    o(
        M,
        "DomainWhitelistFile",
        T("[[policy.domain]] monitor = true"),
    ),
    o(
        M,
        "DomainWhitelistSize",
        N("rmilter's lists have no size limit"),
    ),
    o(
        M,
        "EnableCoredumps",
        N("systemd's core dump settings apply"),
    ),
    o(
        M,
        "FailureReports",
        T("report.failure.enabled (and report.enabled: the reports are queued in report.store)"),
    ),
    o(M, "FailureReportsBcc", T("report.failure.bcc")),
    o(M, "FailureReportsOnNone", T("report.failure.policy_none")),
    o(M, "FailureReportsSentBy", T("report.email")),
    o(
        M,
        "HistoryFile",
        T(
            "report.enabled (rmilter keeps the history in report.store and sends the reports itself)",
        ),
    ),
    o(
        M,
        "HoldQuarantinedMessages",
        T("policy.quarantine (rmilter's quarantine is Postfix's hold queue)"),
    ),
    o(
        M,
        "IgnoreAuthenticatedClients",
        N("authenticated mail is outbound: signed, never verified"),
    ),
    o(
        M,
        "IgnoreHosts",
        T("outbound.networks (their mail is signed, not verified)"),
    ),
    o(
        M,
        "IgnoreMailFrom",
        T("[[policy.domain]] monitor = true (by author domain, not envelope domain)"),
    ),
    o(
        M,
        "IgnoreMailTo",
        U("mail to these recipients is verified like any other"),
    ),
    o(M, "MilterDebug", LOG),
    o(
        M,
        "PidFile",
        N("pid_file is written by rmilter itself (set in the generated file)"),
    ),
    o(
        M,
        "PublicSuffixList",
        N("RFC 9989 finds the organizational domain by the DNS tree walk, not a suffix list"),
    ),
    o(
        M,
        "RecordAllMessages",
        N("rmilter records every verified message whose domain publishes DMARC"),
    ),
    o(
        M,
        "RejectFailures",
        T("policy.monitor (off: evaluate and add the header, never act)"),
    ),
    o(
        M,
        "RejectMultiValueFrom",
        N("the From gate rejects more than one From address (actions.bad_from)"),
    ),
    o(
        M,
        "RejectString",
        U("the reject text is rmilter's own (550 5.7.1 naming the domain)"),
    ),
    o(M, "ReportCommand", T("report.sendmail")),
    o(
        M,
        "RequiredHeaders",
        N("the From gate and RFC 5322 checks always apply"),
    ),
    o(M, "Socket", OWN_SOCKET),
    o(
        M,
        "SoftwareHeader",
        U("no DMARC-Filter header field is added"),
    ),
    o(
        M,
        "SPFIgnoreResults",
        N("rmilter always evaluates SPF itself and never reads upstream results"),
    ),
    o(
        M,
        "SPFSelfValidate",
        N("rmilter always evaluates SPF itself"),
    ),
    o(M, "Syslog", LOG),
    o(M, "SyslogFacility", LOG),
    o(
        M,
        "TrustedAuthservIDs",
        U(
            "rmilter never trusts upstream Authentication-Results (by design): it verifies DKIM and SPF itself",
        ),
    ),
    o(M, "UMask", N("the socket mode is socket.mode")),
    o(M, "UserID", N("rmilter runs as its own user (`user`)")),
];

/// The table entry of an option, by case-insensitive name.
pub fn lookup(daemon: Daemon, name: &str) -> Option<&'static OptionInfo> {
    OPTIONS
        .iter()
        .find(|o| o.daemon == daemon && o.name.eq_ignore_ascii_case(name))
}

/// The README's option table, one Markdown table per daemon.
pub fn markdown_table() -> String {
    let mut out = String::new();
    for daemon in [K, M] {
        out.push_str(&format!(
            "| {} option | status | becomes |\n|---|---|---|\n",
            daemon.title()
        ));
        for opt in OPTIONS.iter().filter(|o| o.daemon == daemon) {
            let what = match opt.disposition {
                Disposition::Translated(text) => match text.split_once(" (") {
                    Some((key, rest)) => format!("`{key}` ({rest}"),
                    None => format!("`{text}`"),
                },
                other => other.text().to_string(),
            };
            out.push_str(&format!(
                "| `{}` | {} | {} |\n",
                opt.name,
                opt.disposition.status(),
                what.replace('|', "\\|")
            ));
        }
        out.push('\n');
    }
    out
}
