//! Counters of what the milter does, exposed in the Prometheus text format
//! (version 0.0.4) by a small HTTP/1.1 endpoint (`[metrics] listen`, off by
//! default), and summarised in a periodic health log line.
//!
//! Every counter on the mail path is a relaxed atomic add: no lock, no
//! allocation. Counters with a fixed set of label values are arrays indexed
//! by those values; the per-key signature counters are handed to each
//! loaded runtime's [`KeyCounters`] when it is swapped in (the registry's
//! lock is taken then and at scrape time, never per message), so a reload
//! keeps counting where it was.

pub mod http;

use crate::verify::Verdict;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// A counter per label value, for a label with a fixed set of values.
pub struct Family<const N: usize> {
    labels: [&'static str; N],
    values: [AtomicU64; N],
}

impl<const N: usize> Family<N> {
    const fn new(labels: [&'static str; N]) -> Self {
        Family {
            labels,
            values: [const { AtomicU64::new(0) }; N],
        }
    }

    /// Count one for `label`; an unknown label is counted under the last
    /// value (which is always a catch-all such as "other").
    pub fn inc(&self, label: &str) {
        self.add(label, 1);
    }

    pub fn add(&self, label: &str, n: u64) {
        let i = self
            .labels
            .iter()
            .position(|l| *l == label)
            .unwrap_or(N - 1);
        self.values[i].fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self, label: &str) -> u64 {
        self.labels
            .iter()
            .position(|l| *l == label)
            .map_or(0, |i| self.values[i].load(Ordering::Relaxed))
    }

    fn total(&self) -> u64 {
        self.values.iter().map(|v| v.load(Ordering::Relaxed)).sum()
    }

    fn render(&self, out: &mut String, name: &str, label: &str, extra: &str) {
        for (l, v) in self.labels.iter().zip(&self.values) {
            let _ = writeln!(
                out,
                "{name}{{{extra}{label}=\"{l}\"}} {}",
                v.load(Ordering::Relaxed)
            );
        }
    }
}

/// Upper bounds (seconds) of the verification time histogram.
const BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0,
];

/// A histogram of durations with fixed buckets.
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    const fn new() -> Self {
        Histogram {
            buckets: [const { AtomicU64::new(0) }; BUCKETS.len()],
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(
            d.as_micros().min(u128::from(u64::MAX)) as u64,
            Ordering::Relaxed,
        );
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn render(&self, out: &mut String, name: &str) {
        let mut cumulative = 0;
        for (bound, n) in BUCKETS.iter().zip(&self.buckets) {
            cumulative += n.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", self.count());
        let _ = writeln!(
            out,
            "{name}_sum {}",
            self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count {}", self.count());
    }
}

/// Message outcomes: what Postfix was told at the end of a message.
const OUTCOMES: [&str; 4] = ["accept", "quarantine", "reject", "tempfail"];

/// Why an action other than accept was taken.
const REASONS: [&str; 6] = [
    "dmarc",
    "bad_from",
    "oversized_headers",
    "error",
    "login",
    "other",
];

/// The one signature counter of a signing key.
#[derive(Debug, Clone)]
pub struct KeyCounter {
    pub domain: String,
    pub selector: String,
    pub algorithm: &'static str,
    pub count: Arc<AtomicU64>,
}

/// The signature counters of a runtime's keys, sorted by domain and
/// selector: a signature finds its counter by binary search (a linear scan
/// cost 10 % more CPU per message with 10,000 keys).
#[derive(Debug, Clone, Default)]
pub struct KeyCounters(Vec<KeyCounter>);

impl KeyCounters {
    /// A new counter per key.
    pub fn fresh(keys: &crate::sign::KeyTable) -> KeyCounters {
        let mut counters: Vec<KeyCounter> = keys
            .iter()
            .map(|k| KeyCounter {
                domain: k.domain.clone(),
                selector: k.selector.clone(),
                algorithm: k.algorithm.dkim_name(),
                count: Arc::default(),
            })
            .collect();
        counters.sort_by(|a, b| (&a.domain, &a.selector).cmp(&(&b.domain, &b.selector)));
        KeyCounters(counters)
    }

    /// Count one signature made with the key `domain`/`selector`.
    pub fn signed(&self, domain: &str, selector: &str) {
        if let Ok(i) = self
            .0
            .binary_search_by(|c| (c.domain.as_str(), c.selector.as_str()).cmp(&(domain, selector)))
        {
            self.0[i].count.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Every counter of one milter server.
pub struct Metrics {
    started: Instant,
    /// Messages that ended, by direction (inbound, outbound) and outcome.
    messages_in: Family<4>,
    messages_out: Family<4>,
    /// Outbound messages that got at least one signature.
    pub signed_messages: AtomicU64,
    /// Outbound messages not signed because the SASL login may not send
    /// as their From address (`[signing.logins]`).
    pub signing_refused: AtomicU64,
    /// Non-accept actions by action and reason.
    actions_reject: Family<6>,
    actions_quarantine: Family<6>,
    actions_tempfail: Family<6>,
    dkim: Family<7>,
    spf_helo: Family<8>,
    spf_mailfrom: Family<8>,
    dmarc: Family<6>,
    arc: Family<4>,
    verify_time: Histogram,
    /// DNS-querying SPF terms evaluated (RFC 7208 §4.6.4 counting).
    spf_dns_lookups: AtomicU64,
    /// Messages whose verification ran into a DNS timeout or the time budget.
    dns_timeouts: AtomicU64,
    /// Messages answered temperror at once because the resolver was down.
    resolver_down_messages: AtomicU64,
    reloads: Family<2>,
    /// (domain, selector, algorithm) → signatures made, across reloads.
    keys: Mutex<BTreeMap<(String, String), KeyCounter>>,
    report_stats: OnceLock<Arc<crate::report::sink::Stats>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics {
            started: Instant::now(),
            messages_in: Family::new(OUTCOMES),
            messages_out: Family::new(OUTCOMES),
            signed_messages: AtomicU64::new(0),
            signing_refused: AtomicU64::new(0),
            actions_reject: Family::new(REASONS),
            actions_quarantine: Family::new(REASONS),
            actions_tempfail: Family::new(REASONS),
            dkim: Family::new([
                "none",
                "pass",
                "fail",
                "neutral",
                "policy",
                "temperror",
                "permerror",
            ]),
            spf_helo: Family::new(SPF_RESULTS),
            spf_mailfrom: Family::new(SPF_RESULTS),
            dmarc: Family::new(["pass", "fail", "none", "temperror", "permerror", "other"]),
            arc: Family::new(["none", "pass", "fail", "other"]),
            verify_time: Histogram::new(),
            spf_dns_lookups: AtomicU64::new(0),
            dns_timeouts: AtomicU64::new(0),
            resolver_down_messages: AtomicU64::new(0),
            reloads: Family::new(["ok", "failed"]),
            keys: Mutex::new(BTreeMap::new()),
            report_stats: OnceLock::new(),
        }
    }

    /// Give a runtime's key counters the registry's counter for each of
    /// its keys, so that counting continues across reloads.
    pub fn adopt(&self, counters: &mut KeyCounters) {
        let mut keys = match self.keys.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        for counter in &mut counters.0 {
            let entry = keys
                .entry((counter.domain.clone(), counter.selector.clone()))
                .or_insert_with(|| counter.clone());
            entry.algorithm = counter.algorithm;
            counter.count = entry.count.clone();
        }
    }

    /// The report store's counters, when the daemon keeps a store.
    pub fn set_report_stats(&self, stats: Arc<crate::report::sink::Stats>) {
        let _ = self.report_stats.set(stats);
    }

    /// A message ended with `outcome` (accept, quarantine, reject, tempfail).
    pub fn message(&self, outbound: bool, outcome: &str) {
        if outbound {
            self.messages_out.inc(outcome);
        } else {
            self.messages_in.inc(outcome);
        }
    }

    /// An action other than accept, and why.
    pub fn action(&self, action: crate::config::Action, reason: &str) {
        match action {
            crate::config::Action::Reject => self.actions_reject.inc(reason),
            crate::config::Action::Quarantine => self.actions_quarantine.inc(reason),
            crate::config::Action::Tempfail => self.actions_tempfail.inc(reason),
            crate::config::Action::Accept => {}
        }
    }

    /// The results of one verification and how long it took.
    pub fn verified(&self, verdict: &Verdict, took: Duration, resolver_was_down: bool) {
        if verdict.dkim.is_empty() {
            self.dkim.inc("none");
        }
        for d in &verdict.dkim {
            self.dkim.inc(d.status.as_str());
        }
        self.spf_helo.inc(verdict.spf_helo.result.as_str());
        self.spf_mailfrom.inc(verdict.spf_mail_from.result.as_str());
        self.dmarc.inc(verdict.dmarc.status.as_str());
        self.arc.inc(verdict.arc.status);
        self.verify_time.observe(took);
        self.spf_dns_lookups.fetch_add(
            u64::from(verdict.spf_helo.dns_queries) + u64::from(verdict.spf_mail_from.dns_queries),
            Ordering::Relaxed,
        );
        if resolver_was_down {
            self.resolver_down_messages.fetch_add(1, Ordering::Relaxed);
        } else if crate::verify::timed_out(verdict) {
            self.dns_timeouts.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A reload finished.
    pub fn reload(&self, ok: bool) {
        self.reloads.inc(if ok { "ok" } else { "failed" });
    }

    /// Messages that ended, (inbound, outbound).
    pub fn message_totals(&self) -> (u64, u64) {
        (self.messages_in.total(), self.messages_out.total())
    }

    /// One line's worth of the counters, for the health log line.
    pub fn summary(&self) -> String {
        let (inbound, outbound) = self.message_totals();
        format!(
            "inbound={inbound} outbound={outbound} signed={} rejected={} quarantined={} tempfailed={} reloads_failed={}",
            self.signed_messages.load(Ordering::Relaxed),
            self.actions_reject.total(),
            self.actions_quarantine.total(),
            self.actions_tempfail.total(),
            self.reloads.get("failed"),
        )
    }

    /// The Prometheus text exposition (format 0.0.4). `resolver_up`,
    /// `in_flight`: gauges the caller reads from the server state.
    pub fn render(&self, resolver_up: bool, in_flight: usize) -> String {
        let mut out = String::with_capacity(8192);
        let help = |out: &mut String, name: &str, kind: &str, text: &str| {
            let _ = writeln!(out, "# HELP {name} {text}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
        };
        help(&mut out, "rmilter_up", "gauge", "1 while the milter runs.");
        out.push_str("rmilter_up 1\n");
        help(
            &mut out,
            "rmilter_uptime_seconds",
            "gauge",
            "Seconds since the milter started.",
        );
        let _ = writeln!(
            out,
            "rmilter_uptime_seconds {}",
            self.started.elapsed().as_secs()
        );
        help(
            &mut out,
            "rmilter_messages_in_flight",
            "gauge",
            "Messages between MAIL and end of message.",
        );
        let _ = writeln!(out, "rmilter_messages_in_flight {in_flight}");

        help(
            &mut out,
            "rmilter_messages_total",
            "counter",
            "Messages that ended, by direction and the answer Postfix got.",
        );
        self.messages_in.render(
            &mut out,
            "rmilter_messages_total",
            "outcome",
            "direction=\"inbound\",",
        );
        self.messages_out.render(
            &mut out,
            "rmilter_messages_total",
            "outcome",
            "direction=\"outbound\",",
        );
        help(
            &mut out,
            "rmilter_signed_messages_total",
            "counter",
            "Outbound messages that got at least one DKIM signature.",
        );
        let _ = writeln!(
            out,
            "rmilter_signed_messages_total {}",
            self.signed_messages.load(Ordering::Relaxed)
        );
        help(
            &mut out,
            "rmilter_signing_refused_total",
            "counter",
            "Outbound messages not signed because the SASL login may not send as the From address.",
        );
        let _ = writeln!(
            out,
            "rmilter_signing_refused_total{{reason=\"login\"}} {}",
            self.signing_refused.load(Ordering::Relaxed)
        );
        help(
            &mut out,
            "rmilter_signatures_total",
            "counter",
            "DKIM signatures made, per signing key.",
        );
        {
            let keys = match self.keys.lock() {
                Ok(guard) => guard,
                Err(poisoned) => poisoned.into_inner(),
            };
            for ((domain, selector), counter) in keys.iter() {
                let _ = writeln!(
                    out,
                    "rmilter_signatures_total{{domain=\"{}\",selector=\"{}\",algorithm=\"{}\"}} {}",
                    escape(domain),
                    escape(selector),
                    counter.algorithm,
                    counter.count.load(Ordering::Relaxed)
                );
            }
        }
        help(
            &mut out,
            "rmilter_actions_total",
            "counter",
            "Actions other than accept, by action and reason.",
        );
        for (action, family) in [
            ("reject", &self.actions_reject),
            ("quarantine", &self.actions_quarantine),
            ("tempfail", &self.actions_tempfail),
        ] {
            family.render(
                &mut out,
                "rmilter_actions_total",
                "reason",
                &format!("action=\"{action}\","),
            );
        }
        help(
            &mut out,
            "rmilter_dkim_results_total",
            "counter",
            "DKIM results of inbound messages, one per signature (none: no signature).",
        );
        self.dkim
            .render(&mut out, "rmilter_dkim_results_total", "result", "");
        help(
            &mut out,
            "rmilter_spf_results_total",
            "counter",
            "SPF results of inbound messages, by identity.",
        );
        self.spf_helo.render(
            &mut out,
            "rmilter_spf_results_total",
            "result",
            "identity=\"helo\",",
        );
        self.spf_mailfrom.render(
            &mut out,
            "rmilter_spf_results_total",
            "result",
            "identity=\"mailfrom\",",
        );
        help(
            &mut out,
            "rmilter_dmarc_results_total",
            "counter",
            "DMARC results of inbound messages.",
        );
        self.dmarc
            .render(&mut out, "rmilter_dmarc_results_total", "result", "");
        help(
            &mut out,
            "rmilter_arc_results_total",
            "counter",
            "ARC results of inbound messages.",
        );
        self.arc
            .render(&mut out, "rmilter_arc_results_total", "result", "");
        help(
            &mut out,
            "rmilter_verification_seconds",
            "histogram",
            "Time to verify one inbound message, DNS included.",
        );
        self.verify_time
            .render(&mut out, "rmilter_verification_seconds");
        help(
            &mut out,
            "rmilter_dns_resolver_up",
            "gauge",
            "0 while the DNS resolver does not answer at all (verification answers temperror without lookups).",
        );
        let _ = writeln!(out, "rmilter_dns_resolver_up {}", u8::from(resolver_up));
        help(
            &mut out,
            "rmilter_spf_dns_lookups_total",
            "counter",
            "DNS-querying SPF terms evaluated (RFC 7208 4.6.4 counting).",
        );
        let _ = writeln!(
            out,
            "rmilter_spf_dns_lookups_total {}",
            self.spf_dns_lookups.load(Ordering::Relaxed)
        );
        help(
            &mut out,
            "rmilter_dns_timeouts_total",
            "counter",
            "Inbound messages whose verification ran into a DNS timeout or the time budget.",
        );
        let _ = writeln!(
            out,
            "rmilter_dns_timeouts_total {}",
            self.dns_timeouts.load(Ordering::Relaxed)
        );
        help(
            &mut out,
            "rmilter_dns_resolver_down_messages_total",
            "counter",
            "Inbound messages answered temperror without lookups while the resolver was down.",
        );
        let _ = writeln!(
            out,
            "rmilter_dns_resolver_down_messages_total {}",
            self.resolver_down_messages.load(Ordering::Relaxed)
        );
        help(
            &mut out,
            "rmilter_config_reloads_total",
            "counter",
            "Configuration reloads, by result (a failed reload keeps the running configuration).",
        );
        self.reloads
            .render(&mut out, "rmilter_config_reloads_total", "result", "");
        help(
            &mut out,
            "rmilter_report_records_total",
            "counter",
            "DMARC evaluation records handed to the report store, written, and dropped (queue full or store failure).",
        );
        let (received, written, dropped) = self
            .report_stats
            .get()
            .map_or((0, 0, 0), |s| (s.received(), s.written(), s.dropped()));
        let _ = writeln!(
            out,
            "rmilter_report_records_total{{state=\"received\"}} {received}"
        );
        let _ = writeln!(
            out,
            "rmilter_report_records_total{{state=\"written\"}} {written}"
        );
        let _ = writeln!(
            out,
            "rmilter_report_records_total{{state=\"dropped\"}} {dropped}"
        );
        let sched = &crate::report::sink::SCHEDULED;
        help(
            &mut out,
            "rmilter_reports_total",
            "counter",
            "Aggregate report mails of the daemon's own schedule (report.schedule = \"daemon\"), by result.",
        );
        let _ = writeln!(
            out,
            "rmilter_reports_total{{result=\"sent\"}} {}",
            sched.sent.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "rmilter_reports_total{{result=\"failed\"}} {}",
            sched.failed.load(Ordering::Relaxed)
        );
        help(
            &mut out,
            "rmilter_report_runs_total",
            "counter",
            "Scheduled report send runs in the daemon, by result.",
        );
        let _ = writeln!(
            out,
            "rmilter_report_runs_total{{result=\"ok\"}} {}",
            sched.runs_ok.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "rmilter_report_runs_total{{result=\"error\"}} {}",
            sched.runs_failed.load(Ordering::Relaxed)
        );
        let failures = &crate::report::failures::COUNTERS;
        help(
            &mut out,
            "rmilter_failure_reports_total",
            "counter",
            "DMARC failure reports (RFC 9991): samples captured, reports generated (queued in the store), dropped (queue full or store failure), rate-limited, sent, refused destinations and failed hand-overs to the MTA (sent, refused and failed count the daemon's own schedule).",
        );
        for (state, counter) in [
            ("captured", &failures.captured),
            ("generated", &failures.generated),
            ("dropped", &failures.dropped),
            ("rate_limited", &failures.rate_limited),
            ("sent", &failures.sent),
            ("refused", &failures.refused),
            ("failed", &failures.failed),
        ] {
            let _ = writeln!(
                out,
                "rmilter_failure_reports_total{{state=\"{state}\"}} {}",
                counter.load(Ordering::Relaxed)
            );
        }
        out
    }
}

const SPF_RESULTS: [&str; 8] = [
    "none",
    "neutral",
    "pass",
    "fail",
    "softfail",
    "temperror",
    "permerror",
    "other",
];

/// A label value in the exposition format: backslash, quote and newline escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_count_and_render() {
        let m = Metrics::new();
        m.message(false, "reject");
        m.message(false, "reject");
        m.message(true, "accept");
        m.action(crate::config::Action::Reject, "dmarc");
        m.action(crate::config::Action::Tempfail, "weird");
        m.reload(true);
        m.reload(false);
        let text = m.render(true, 3);
        for line in [
            "rmilter_messages_total{direction=\"inbound\",outcome=\"reject\"} 2",
            "rmilter_messages_total{direction=\"outbound\",outcome=\"accept\"} 1",
            "rmilter_actions_total{action=\"reject\",reason=\"dmarc\"} 1",
            "rmilter_actions_total{action=\"tempfail\",reason=\"other\"} 1",
            "rmilter_config_reloads_total{result=\"ok\"} 1",
            "rmilter_config_reloads_total{result=\"failed\"} 1",
            "rmilter_messages_in_flight 3",
            "rmilter_dns_resolver_up 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
        // Every sample line belongs to a family announced by # TYPE.
        let types: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next())
            .collect();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            let base = name
                .strip_suffix("_bucket")
                .or_else(|| name.strip_suffix("_sum"))
                .or_else(|| name.strip_suffix("_count"))
                .unwrap_or(name);
            assert!(
                types.contains(&name) || types.contains(&base),
                "{line}: no # TYPE"
            );
        }
        assert_eq!(
            m.summary(),
            "inbound=2 outbound=1 signed=0 rejected=1 quarantined=0 tempfailed=1 reloads_failed=1"
        );
    }

    #[test]
    fn histogram_is_cumulative() {
        let h = Histogram::new();
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_millis(700));
        h.observe(Duration::from_secs(100));
        let mut out = String::new();
        h.render(&mut out, "x");
        assert!(out.contains("x_bucket{le=\"0.005\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"1\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"60\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("x_count 3\n"), "{out}");
        assert!(out.contains("x_sum 100.703\n"), "{out}");
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
