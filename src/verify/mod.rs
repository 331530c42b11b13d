//! Inbound verification: SPF (HELO and MAIL FROM), DKIM, ARC and DMARC
//! (RFC 9989) in one pass, then the policy decision and the
//! Authentication-Results field.
//!
//! mail-auth verifies DKIM and ARC; rmilter evaluates SPF itself
//! (void-lookup limit, temperror on the time limit) and DMARC itself (its
//! own record parser and one tree walk, see [`dmarc`]), decides which DKIM
//! signatures are eligible at all (see [`dkim`]), and feeds only those to
//! DMARC. The author domain comes from the From gate alone: DMARC is
//! evaluated for exactly that domain.
//! Nothing here reads a verdict from a header rmilter did not write.

pub mod arc;
pub mod authres;
pub mod cache;
pub mod decision;
pub mod dkim;
pub mod dmarc;
pub mod spf;

use crate::config::{DnsSettings, VerifySettings};
use crate::identity::Author;
use dkim::{DkimStatus, DkimVerdict};
use mail_auth::dmarc::Policy;
use mail_auth::dns::Parameters;
use mail_auth::{AuthenticatedMessage, MessageAuthenticator};
use spf::{SpfLimits, SpfOutcome, SpfResult};
use std::net::IpAddr;
use std::sync::Arc;

/// The resolver-backed verifiers, built once per configuration.
pub struct Verifier {
    authenticator: MessageAuthenticator,
    /// Parsed DKIM keys and DMARC records, for this configuration's life.
    caches: cache::Caches,
    /// Parsed DMARC answers, for this configuration's life.
    dmarc_cache: dmarc::DmarcCache,
    spf_dns: spf::HickoryDns,
    health: Arc<crate::dns::ResolverHealth>,
    dns_timeout: std::time::Duration,
}

impl Verifier {
    pub fn new(dns: &DnsSettings) -> anyhow::Result<Verifier> {
        let authenticator = crate::dns::authenticator(dns)?;
        let spf_dns = spf::HickoryDns::new(authenticator.resolver().clone());
        Ok(Verifier {
            authenticator,
            caches: cache::Caches::new(dns.cache_size),
            dmarc_cache: dmarc::DmarcCache::new(dns.cache_size),
            spf_dns,
            health: Arc::default(),
            dns_timeout: dns.timeout,
        })
    }

    /// True while the resolver does not answer at all.
    pub fn resolver_down(&self) -> bool {
        self.health.is_down()
    }

    pub fn authenticator(&self) -> &MessageAuthenticator {
        &self.authenticator
    }
}

/// What verification needs to know about one message.
pub struct Input<'a> {
    pub client_ip: Option<IpAddr>,
    pub helo: &'a str,
    /// The MAIL FROM address without angle brackets; empty for `<>`.
    pub mail_from: &'a str,
    /// The whole message, CRLF line ends.
    pub message: &'a [u8],
    /// Set when the message was too large to verify: DKIM is a temperror.
    pub truncated: bool,
    pub author: &'a Author,
    /// This host's name, for SPF's `%{r}` macro.
    pub receiver: &'a str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DmarcStatus {
    Pass,
    Fail,
    TempError,
    PermError,
    None,
}

impl DmarcStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DmarcStatus::Pass => "pass",
            DmarcStatus::Fail => "fail",
            DmarcStatus::TempError => "temperror",
            DmarcStatus::PermError => "permerror",
            DmarcStatus::None => "none",
        }
    }
}

#[derive(Debug, Clone)]
pub struct DmarcVerdict {
    pub status: DmarcStatus,
    /// The author domain evaluated.
    pub domain: String,
    /// The policy that applies to the author domain (`p`, `sp` or `np`,
    /// lowered one level by `t=y`).
    pub policy: Policy,
    pub record: Option<Arc<dmarc::Record>>,
    pub dkim_aligned: bool,
    pub spf_aligned: bool,
    pub reason: String,
    /// Where the applied record was found, and its legacy `pct=`.
    pub policy_record: Option<PolicyRecord>,
    /// The tree walk that found the record (for `rmilter explain`).
    pub discovery: Option<dmarc::Discovery>,
}

#[derive(Debug, Clone)]
pub struct ArcVerdict {
    /// "none", "pass" or "fail".
    pub status: &'static str,
    /// `d=` of the newest ARC-Seal.
    pub sealer: Option<String>,
    /// The newest instance and its ARC-Authentication-Results value: what
    /// that sealer recorded (read only for a trusted sealer's override).
    pub sealer_results: Option<(u32, Vec<u8>)>,
}

/// All results for one message.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub dkim: Vec<DkimVerdict>,
    /// DKIM signatures not verified because of `verify.max_signatures`.
    pub dkim_skipped: usize,
    pub spf_helo: SpfOutcome,
    pub spf_mail_from: SpfOutcome,
    pub arc: ArcVerdict,
    pub dmarc: DmarcVerdict,
}

impl Verifier {
    /// Verify one message within `settings.time_budget`; when the budget
    /// runs out, everything still open is a temperror.
    pub async fn verify(&self, settings: &VerifySettings, input: &Input<'_>) -> Verdict {
        if self.health.is_down() {
            return temperror_verdict(input, "DNS resolver unreachable");
        }
        let verdict = match tokio::time::timeout(
            settings.time_budget,
            self.verify_all(settings, input),
        )
        .await
        {
            Ok(verdict) => verdict,
            Err(_) => temperror_verdict(input, "verification time budget exceeded"),
        };
        if timed_out(&verdict) {
            self.health
                .check(self.authenticator.resolver().clone(), self.dns_timeout);
        }
        verdict
    }
}

/// Whether any lookup of a verdict ran into a timeout.
pub fn timed_out(verdict: &Verdict) -> bool {
    let t = |reason: &str| reason.contains("timed out") || reason.contains("time budget");
    t(&verdict.spf_mail_from.reason)
        || t(&verdict.spf_helo.reason)
        || t(&verdict.dmarc.reason)
        || verdict.dkim.iter().any(|d| t(&d.reason))
}

/// Every mechanism temperror: nothing could be evaluated.
fn temperror_verdict(input: &Input<'_>, reason: &str) -> Verdict {
    Verdict {
        dkim: Vec::new(),
        dkim_skipped: 0,
        spf_helo: SpfOutcome::temperror(input.helo, reason),
        spf_mail_from: SpfOutcome::temperror(&mail_from_domain(input), reason),
        arc: ArcVerdict {
            status: "none",
            sealer: None,
            sealer_results: None,
        },
        dmarc: DmarcVerdict {
            status: DmarcStatus::TempError,
            domain: input.author.domain.clone(),
            policy: Policy::None,
            record: None,
            dkim_aligned: false,
            spf_aligned: false,
            reason: reason.to_string(),
            policy_record: None,
            discovery: None,
        },
    }
}

impl Verifier {
    async fn verify_all(&self, settings: &VerifySettings, input: &Input<'_>) -> Verdict {
        let limits = SpfLimits {
            dns_mechanisms: 10,
            void_lookups: settings.spf_void_lookups,
            time: settings.spf_time_limit,
        };
        // SPF and DKIM do not depend on each other: their lookups run side
        // by side, so a silent resolver costs one query timeout, not two.
        let spf = async {
            match input.client_ip {
                Some(ip) => {
                    spf::verify(
                        &self.spf_dns,
                        &limits,
                        ip,
                        input.helo,
                        input.mail_from,
                        input.receiver,
                    )
                    .await
                }
                None => (
                    SpfOutcome::none(input.helo, "no client address"),
                    SpfOutcome::none(&mail_from_domain(input), "no client address"),
                ),
            }
        };
        let author = &input.author.domain;
        let mut dmarc = DmarcVerdict {
            status: DmarcStatus::PermError,
            domain: author.clone(),
            policy: Policy::None,
            record: None,
            dkim_aligned: false,
            spf_aligned: false,
            reason: String::new(),
            policy_record: None,
            discovery: None,
        };
        let Some(mut message) = AuthenticatedMessage::parse(input.message) else {
            let (spf_helo, spf_mail_from) = spf.await;
            dmarc.reason = "message could not be parsed".to_string();
            return Verdict {
                dkim: Vec::new(),
                dkim_skipped: 0,
                spf_helo,
                spf_mail_from,
                arc: ArcVerdict {
                    status: "none",
                    sealer: None,
                    sealer_results: None,
                },
                dmarc,
            };
        };

        let pre = dkim::prefilter(
            &mut message,
            author,
            settings.max_signatures,
            input.truncated,
        );
        let dkim = async {
            if input.truncated {
                Vec::new()
            } else {
                self.authenticator
                    .verify_dkim(Parameters::new(&message).with_cache(&self.caches))
                    .await
            }
        };
        let ((spf_helo, spf_mail_from), outputs) = tokio::join!(spf, dkim);
        let mut verdicts = pre.verdicts;
        let verified = if input.truncated {
            message
                .dkim_signatures()
                .iter()
                .map(|h| DkimVerdict {
                    domain: h.header.d.to_ascii_lowercase(),
                    selector: h.header.s.clone(),
                    algorithm: String::new(),
                    b: String::new(),
                    status: DkimStatus::TempError,
                    reason: "message too large to verify".to_string(),
                })
                .collect()
        } else {
            dkim::collect(
                &self.authenticator,
                &message,
                &outputs,
                settings.min_rsa_bits,
            )
            .await
        };
        // Only signatures whose verdict allows it take part in DMARC.
        let eligible: Vec<_> = message
            .dkim_signatures()
            .iter()
            .zip(&verified)
            .filter(|(_, v)| v.status.dmarc_eligible())
            .filter_map(|(h, _)| {
                outputs
                    .iter()
                    .find(|o| o.signature().is_some_and(|s| std::ptr::eq(s, &h.header)))
                    .cloned()
            })
            .collect();
        verdicts.extend(verified);
        // Every lookup of this message timed out (SPF for both identities and
        // every DKIM key) and the resolver itself does not answer: the DMARC
        // lookups would only wait one more timeout for the same silence. No
        // mechanism can pass, so no verdict (RFC 9989 §5.3.6: temperror)
        // without waiting. The sender chooses the HELO and MAIL FROM names
        // (and may send no signature), so timeouts alone prove nothing: a
        // domain with slow name servers must not stand in for the author
        // domain's DMARC record; only a resolver that answers nothing does.
        let silent = |reason: &str| reason.contains("timed out");
        if input.client_ip.is_some()
            && silent(&spf_helo.reason)
            && silent(&spf_mail_from.reason)
            && verdicts.iter().all(|v| silent(&v.reason))
            && crate::dns::ResolverHealth::silent(
                self.authenticator.resolver(),
                self.dns_timeout.min(std::time::Duration::from_millis(500)),
            )
            .await
        {
            dmarc.status = DmarcStatus::TempError;
            dmarc.reason = "every DNS lookup timed out".to_string();
            return Verdict {
                dkim: verdicts,
                dkim_skipped: pre.skipped,
                spf_helo,
                spf_mail_from,
                arc: ArcVerdict {
                    status: "none",
                    sealer: None,
                    sealer_results: None,
                },
                dmarc,
            };
        }

        let arc = if settings.arc && !message.arc_seals().is_empty() {
            let out = self
                .authenticator
                .verify_arc(Parameters::new(&message).with_cache(&self.caches))
                .await;
            let newest = out.chain().iter().max_by_key(|link| link.seal.header.i);
            ArcVerdict {
                status: match out.result() {
                    mail_auth::DkimResult::Pass => "pass",
                    mail_auth::DkimResult::None => "none",
                    _ => "fail",
                },
                sealer: newest.map(|link| link.seal.header.d.to_ascii_lowercase()),
                sealer_results: newest
                    .map(|link| (link.seal.header.i, link.results.value.to_vec())),
            }
        } else {
            ArcVerdict {
                status: "none",
                sealer: None,
                sealer_results: None,
            }
        };

        let mut dmarc = self.dmarc(author, &eligible, &spf_mail_from, dmarc).await;
        let status = dmarc.status;
        // A message too large to verify whose author-aligned signature
        // could have passed: no verdict either way (never a size bypass,
        // never a reject of mail that might be genuine).
        if input.truncated
            && status == DmarcStatus::Fail
            && verdicts
                .iter()
                .any(|v| v.status == DkimStatus::TempError && dkim::aligned_hint(&v.domain, author))
        {
            dmarc.status = DmarcStatus::TempError;
            dmarc.reason = "message too large to verify the aligned DKIM signature".to_string();
        }
        Verdict {
            dkim: verdicts,
            dkim_skipped: pre.skipped,
            spf_helo,
            spf_mail_from,
            arc,
            dmarc,
        }
    }
}

/// The DMARC record applied to a message, as the tree walk found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyRecord {
    /// The name (without `_dmarc.`) holding the record.
    pub domain: String,
    /// Legacy `pct=` (RFC 7489), 0..=100.
    pub pct: Option<u8>,
    /// The tag whose policy applies: "p", "sp" or "np".
    pub tag: &'static str,
}

impl Verifier {
    /// DNS for the DMARC walk: the shared resolver and the parsed-record cache.
    fn dmarc_dns(&self) -> dmarc::ResolverDns<'_> {
        dmarc::ResolverDns {
            resolver: self.authenticator.resolver(),
            addresses: &self.spf_dns,
            cache: &self.dmarc_cache,
        }
    }

    /// DMARC for exactly `author`, with the eligible DKIM outputs and the
    /// MAIL FROM SPF outcome: one tree walk (RFC 9989 §4.10) whose result
    /// feeds the policy, Authentication-Results and the report.
    async fn dmarc(
        &self,
        author: &str,
        eligible: &[mail_auth::DkimOutput<'_>],
        spf: &SpfOutcome,
        mut dmarc: DmarcVerdict,
    ) -> DmarcVerdict {
        let dkim: Vec<dmarc::DkimInput> = eligible
            .iter()
            .filter_map(|o| {
                let temperror = match o.result() {
                    mail_auth::DkimResult::Pass => false,
                    mail_auth::DkimResult::TempError(_) => true,
                    _ => return None,
                };
                o.signature().map(|s| dmarc::DkimInput {
                    domain: s.d.to_ascii_lowercase(),
                    temperror,
                })
            })
            .collect();
        // RFC 9989 §4.4.2: the SPF identity aligned against From is the
        // MAIL FROM domain (HELO for the null sender), exactly the domain
        // SPF evaluated; the HELO result is never a DMARC input (F10).
        let out = dmarc::evaluate(&self.dmarc_dns(), author, &dkim, &spf.domain, spf.result).await;
        dmarc.status = out.status;
        dmarc.reason = out.reason;
        dmarc.dkim_aligned = out.dkim_aligned;
        dmarc.spf_aligned = out.spf_aligned;
        dmarc.policy = out.policy;
        if out.discovery.error.is_none()
            && let Some(applied) = &out.discovery.applied
            && applied.record.usable
        {
            dmarc.record = Some(applied.record.clone());
            dmarc.policy_record = Some(PolicyRecord {
                domain: applied.domain.clone(),
                pct: applied.record.pct,
                tag: applied.tag,
            });
        }
        dmarc.discovery = Some(out.discovery);
        dmarc
    }

    /// RFC 9989 §4.10.1 policy discovery for `domain` alone (for `rmilter doctor`).
    pub async fn discover(&self, domain: &str) -> dmarc::Discovery {
        dmarc::walk::discover(&self.dmarc_dns(), domain).await
    }
}

/// The domain SPF checks for MAIL FROM: HELO only for the null sender
/// (RFC 7208 §2.4); a non-null sender without a domain has none (F9).
fn mail_from_domain(input: &Input<'_>) -> String {
    if input.mail_from.is_empty() {
        return input.helo.to_ascii_lowercase();
    }
    match input.mail_from.rsplit_once('@') {
        Some((_, domain)) => domain.to_ascii_lowercase(),
        None => String::new(),
    }
}

impl SpfOutcome {
    /// An outcome for a check that could not finish in time.
    pub fn temperror(domain: &str, reason: &str) -> SpfOutcome {
        SpfOutcome {
            result: SpfResult::TempError,
            domain: domain.to_ascii_lowercase(),
            reason: reason.to_string(),
            dns_queries: 0,
            void_lookups: 0,
        }
    }

    /// An outcome for a check that was not made.
    pub fn none(domain: &str, reason: &str) -> SpfOutcome {
        SpfOutcome {
            result: SpfResult::None,
            domain: domain.to_ascii_lowercase(),
            reason: reason.to_string(),
            dns_queries: 0,
            void_lookups: 0,
        }
    }
}
