//! DMARC failure reports (RFC 9991), the pipeline around the report
//! content ([`super::failure`]): the milter hands a [`Capture`] of each
//! failing message to [`FailureQueue`], a bounded queue drained by one
//! writer thread into the report store (a full queue or a dead store drops
//! and counts, mail never waits); the writer applies the per (reported
//! domain, source IP) limit, counted in the store so it holds across
//! restarts and the MX hosts sharing it. `rmilter report send` (timer or
//! daemon schedule) then sends each queued report to its `ruf=` addresses
//! ([`send_due`]): foreign destinations only after the RFC 9990 §4
//! external-destination check, `!size` honoured, at most
//! `per_destination_per_day` reports per address and `max_per_day` in
//! total, through the local MTA's sendmail (which DKIM-signs through
//! rmilter). `rmilter report failures --dry-run` shows what would be sent.

use super::failure::{self, FailureSample, RenderOptions};
use super::send::{Authorised, authorised, sendmail, valid_address, within};
use super::store::{self, QueuedFailure, Store};
use super::{period_of, unix_time};
use crate::config::{FailureSettings, ReportSettings};
use crate::verify::spf::HickoryDns;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::mpsc::{Receiver, Sender, channel, error::TrySendError};
use tracing::{info, warn};

/// Seconds in a UTC day: the window of the per-destination and global caps.
const DAY: i64 = 86_400;
/// How long the writer waits for a locked SQLite database.
const WRITER_BUSY_TIMEOUT: Duration = Duration::from_secs(2);
/// Least time between two "samples dropped" log lines.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// Rate-limit counter kinds in the store.
const LIMIT_SOURCE: &str = "source";
const LIMIT_DESTINATION: &str = "destination";
const LIMIT_GLOBAL: &str = "global";

/// What the milter captures for one DMARC-failing message with `ruf=`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capture {
    /// The domain whose record applied (authorisation is checked for it).
    pub policy_domain: String,
    /// The record's `ruf=` mailto: addresses with their `!size` (0: none),
    /// at most `max_ruf_addresses`, in the record's order.
    pub destinations: Vec<(String, usize)>,
    pub sample: FailureSample,
}

/// Failure-report counters for the metrics endpoint (one set per process).
#[derive(Debug, Default)]
pub struct Counters {
    /// Samples the milter captured (DMARC failed, `ruf=`, `fo=` wanted it).
    pub captured: AtomicU64,
    /// Reports queued in the store.
    pub generated: AtomicU64,
    /// Samples dropped: queue full or store failure.
    pub dropped: AtomicU64,
    /// Reports (or deliveries) not sent because a rate limit was reached.
    pub rate_limited: AtomicU64,
    /// Report mails handed to the MTA.
    pub sent: AtomicU64,
    /// Deliveries refused: destination not authorised, too large, own address.
    pub refused: AtomicU64,
    /// Hand-overs to the MTA that failed (retried later).
    pub failed: AtomicU64,
}

pub static COUNTERS: Counters = Counters {
    captured: AtomicU64::new(0),
    generated: AtomicU64::new(0),
    dropped: AtomicU64::new(0),
    rate_limited: AtomicU64::new(0),
    sent: AtomicU64::new(0),
    refused: AtomicU64::new(0),
    failed: AtomicU64::new(0),
};

fn bump(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// The milter's end of the failure pipeline.
pub struct FailureQueue {
    tx: Sender<Capture>,
    /// Handed over, not yet written or dropped (for [`FailureQueue::finish`]).
    pending: Arc<AtomicU64>,
    log: Mutex<Option<Instant>>,
}

impl FailureQueue {
    /// Start the writer thread; the store is opened on first use.
    pub fn start(settings: &ReportSettings) -> FailureQueue {
        // Memory as captures wait, not queue_size slots up front (see StoreSink).
        let (tx, rx) = channel(settings.failure.queue_size.max(1));
        let pending = Arc::new(AtomicU64::new(0));
        let settings = settings.clone();
        let left = pending.clone();
        let spawned = std::thread::Builder::new()
            .name("rmilter-failure-writer".to_string())
            .spawn(move || writer(&settings, rx, &left));
        if let Err(e) = spawned {
            warn!(error = %e, "report store: cannot start the failure-report writer; failure samples are dropped");
        }
        FailureQueue {
            tx,
            pending,
            log: Mutex::new(None),
        }
    }

    /// Hand a capture over; returns at once. A full queue drops it.
    pub fn offer(&self, capture: Capture) {
        bump(&COUNTERS.captured, 1);
        self.pending.fetch_add(1, Ordering::Relaxed);
        let reason = match self.tx.try_send(capture) {
            Ok(()) => return,
            Err(TrySendError::Full(_)) => "queue full (report.failure.queue_size)",
            Err(TrySendError::Closed(_)) => "writer not running",
        };
        self.pending.fetch_sub(1, Ordering::Relaxed);
        bump(&COUNTERS.dropped, 1);
        let mut last = match self.log.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if last.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
            *last = Some(Instant::now());
            warn!(
                reason,
                dropped_total = COUNTERS.dropped.load(Ordering::Relaxed),
                "failure report sample dropped (mail is not affected)"
            );
        }
    }

    /// Wait (at most `timeout`) until every capture handed over was written or dropped.
    pub fn finish(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.pending.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn writer(settings: &ReportSettings, mut rx: Receiver<Capture>, pending: &AtomicU64) {
    let mut store: Option<Store> = None;
    let mut last_error: Option<Instant> = None;
    while let Some(capture) = rx.blocking_recv() {
        if store.is_none() {
            match Store::open(&settings.store, WRITER_BUSY_TIMEOUT) {
                Ok(s) => store = Some(s),
                Err(e) => {
                    bump(&COUNTERS.dropped, 1);
                    pending.fetch_sub(1, Ordering::Relaxed);
                    if last_error.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
                        last_error = Some(Instant::now());
                        warn!(error = %e, "failure report sample dropped: the report store cannot be opened (mail is not affected)");
                    }
                    std::thread::sleep(Duration::from_millis(500));
                    continue;
                }
            }
        }
        let Some(s) = store.as_mut() else { continue };
        let now = unix_time(SystemTime::now());
        match admit(s, &settings.failure, &capture, now) {
            Ok(true) => bump(&COUNTERS.generated, 1),
            Ok(false) => bump(&COUNTERS.rate_limited, 1),
            Err(e) => {
                bump(&COUNTERS.dropped, 1);
                if last_error.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
                    last_error = Some(Instant::now());
                    warn!(error = %e, "failure report sample dropped (mail is not affected)");
                }
                store = None;
            }
        }
        pending.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Queue `capture` unless its (reported domain, source IP) has reached
/// `per_source` reports in the current `per_source_period`; false when
/// rate-limited.
pub fn admit(
    store: &mut Store,
    settings: &FailureSettings,
    capture: &Capture,
    now: i64,
) -> Result<bool, store::StoreError> {
    let sample = &capture.sample;
    let (window, _) = period_of(now, settings.per_source_period.as_secs() as i64);
    let key = format!(
        "{}|{}",
        sample.reported_domain.to_ascii_lowercase(),
        sample.source_ip
    );
    if !store.take_limit(LIMIT_SOURCE, &key, window, settings.per_source)? {
        tracing::debug!(domain = %sample.reported_domain, source_ip = %sample.source_ip, "failure report rate-limited (report.failure.per_source)");
        return Ok(false);
    }
    let sample_json = serde_json::to_string(sample).unwrap_or_default();
    let destinations = serde_json::to_string(&capture.destinations).unwrap_or_default();
    let id = store::random_id();
    store.queue_failure(
        &QueuedFailure {
            id,
            reported_domain: sample.reported_domain.to_ascii_lowercase(),
            policy_domain: capture.policy_domain.to_ascii_lowercase(),
            source_ip: sample.source_ip.to_string(),
            destinations,
            sample: sample_json,
            done: "[]".to_string(),
            state: store::PENDING.to_string(),
            attempts: 0,
            next_attempt: 0,
            last_error: String::new(),
            created: now,
        },
        now,
    )?;
    Ok(true)
}

/// What one sending run did with failure reports.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Queued reports looked at.
    pub reports: usize,
    pub sent: usize,
    /// Deliveries refused for good (not authorised, too large, own address).
    pub refused: usize,
    /// Deliveries not sent: per-destination or global daily cap reached.
    pub rate_limited: usize,
    /// Put off: temporary DNS error.
    pub postponed: usize,
    /// Hand-overs to the MTA that failed (retried later).
    pub failed: usize,
    /// Claimed by another run right now.
    pub busy: usize,
    /// Dry run: deliveries that would be sent.
    pub would_send: usize,
}

impl Summary {
    pub fn line(&self, dry_run: bool) -> String {
        if dry_run {
            format!(
                "failure reports (dry run): {} queued, would send {}, refused {}, over a rate limit {}, postponed {}",
                self.reports, self.would_send, self.refused, self.rate_limited, self.postponed
            )
        } else {
            format!(
                "failure reports: {} queued, sent {}, refused {}, rate-limited {}, postponed {}, failed {}, being sent elsewhere {}",
                self.reports,
                self.sent,
                self.refused,
                self.rate_limited,
                self.postponed,
                self.failed,
                self.busy
            )
        }
    }
}

/// Where a sending run's context comes from.
pub struct Run<'a> {
    pub settings: &'a ReportSettings,
    pub rt: &'a tokio::runtime::Runtime,
    pub resolver: &'a HickoryDns,
    pub owner: &'a str,
    pub now: i64,
    pub dry_run: bool,
    /// Dry run: also print each report mail.
    pub print: bool,
}

/// One destination's outcome.
enum Outcome {
    Sent,
    Refused(String),
    Limited(String),
    Postponed(String),
    Failed(String),
    WouldSend(usize),
}

/// The report mail for one destination: Message-ID and Date derived from
/// the stored report only, so a re-send is the same message.
pub fn message(
    settings: &ReportSettings,
    queued: &QueuedFailure,
    sample: &FailureSample,
    to: &str,
    max_size: usize,
) -> Vec<u8> {
    let f = &settings.failure;
    let message_id = format!(
        "failure.{}.{}@{}",
        queued.id,
        &store::sha256_hex(to.as_bytes())[..8],
        settings.reporting_domain
    );
    let opts = RenderOptions {
        from: &settings.email,
        to,
        reporting_domain: &settings.reporting_domain,
        redact: f.redact,
        drop_headers: &f.drop_headers,
        include_body: f.include_body,
        max_bytes: (max_size > 0).then_some(max_size as u64),
        message_id: &message_id,
        date: queued.created,
    };
    failure::render(sample, &opts)
}

/// Send (or, dry run, show) every queued failure report that is due.
pub fn send_due(
    store: &mut Store,
    run: &Run<'_>,
    progress: &mut dyn Write,
) -> Result<Summary, store::StoreError> {
    let settings = run.settings;
    let f = &settings.failure;
    let now = run.now;
    let mut summary = Summary::default();
    if !run.dry_run {
        store.purge_failures(now - settings.retention.as_secs() as i64)?;
    }
    let (day, _) = period_of(now, DAY);
    for queued in store.failures_open()? {
        summary.reports += 1;
        let label = format!(
            "failure report {} ({} from {})",
            &queued.id[..queued.id.len().min(12)],
            queued.reported_domain,
            queued.source_ip
        );
        let sample: FailureSample = match serde_json::from_str(&queued.sample) {
            Ok(s) => s,
            Err(e) => {
                let _ = writeln!(progress, "{label}: unreadable in the store ({e}); dropped");
                if !run.dry_run && store.claim_failure(&queued.id, run.owner, now, now + 60)? {
                    store.finish_failure(
                        &queued.id,
                        run.owner,
                        store::SKIPPED,
                        &e.to_string(),
                        0,
                        now,
                    )?;
                }
                continue;
            }
        };
        let destinations: Vec<(String, usize)> =
            serde_json::from_str(&queued.destinations).unwrap_or_default();
        let mut done: Vec<String> = serde_json::from_str(&queued.done).unwrap_or_default();
        if queued.state == store::PENDING && queued.next_attempt > now {
            summary.postponed += 1;
            let _ = writeln!(
                progress,
                "{label}: retry due at {} (last error: {})",
                queued.next_attempt, queued.last_error
            );
            continue;
        }
        if !run.dry_run {
            let lease_until = now + settings.lease.as_secs() as i64;
            if !store.claim_failure(&queued.id, run.owner, now, lease_until)? {
                summary.busy += 1;
                continue;
            }
            // Give up on a report that could not be sent for report.retry_for.
            if queued.created + (settings.retry_for.as_secs() as i64) < now {
                store.finish_failure(
                    &queued.id,
                    run.owner,
                    store::SKIPPED,
                    "gave up (report.retry_for)",
                    0,
                    now,
                )?;
                let _ = writeln!(progress, "{label}: gave up after report.retry_for");
                continue;
            }
        }
        let mut retry: Option<String> = None;
        let mut any_sent = done.iter().any(|d| d.starts_with("sent:"));
        let is_done = |done: &[String], address: &str| {
            done.iter()
                .any(|d| d.split_once(':').is_some_and(|(_, a)| a == address))
        };
        // The ruf= destinations first, then the configured copies (bcc),
        // which go only where a report went.
        let mut list: Vec<(String, usize, bool)> = destinations
            .iter()
            .map(|(a, s)| (a.clone(), *s, false))
            .collect();
        list.extend(f.bcc.iter().map(|a| (a.clone(), 0, true)));
        for (address, max_size, copy) in list {
            if is_done(&done, &address) || (copy && !any_sent) {
                continue;
            }
            let outcome = deliver(
                store, run, &queued, &sample, &address, max_size, copy, day, progress,
            )?;
            let entry = match outcome {
                Outcome::Sent => {
                    summary.sent += 1;
                    bump(&COUNTERS.sent, 1);
                    any_sent = true;
                    let _ = writeln!(progress, "{label} -> {address}: sent");
                    Some(format!("sent:{address}"))
                }
                Outcome::WouldSend(bytes) => {
                    summary.would_send += 1;
                    any_sent = true;
                    let _ = writeln!(progress, "{label} -> {address}: would send ({bytes} bytes)");
                    None
                }
                Outcome::Refused(why) => {
                    summary.refused += 1;
                    if !run.dry_run {
                        bump(&COUNTERS.refused, 1);
                    }
                    let _ = writeln!(progress, "{label} -> {address}: not sent: {why}");
                    Some(format!("refused:{address}"))
                }
                Outcome::Limited(why) => {
                    summary.rate_limited += 1;
                    if !run.dry_run {
                        bump(&COUNTERS.rate_limited, 1);
                    }
                    let _ = writeln!(progress, "{label} -> {address}: not sent: {why}");
                    Some(format!("limited:{address}"))
                }
                Outcome::Postponed(why) => {
                    summary.postponed += 1;
                    let _ = writeln!(progress, "{label} -> {address}: postponed: {why}");
                    retry = Some(why);
                    None
                }
                Outcome::Failed(why) => {
                    summary.failed += 1;
                    bump(&COUNTERS.failed, 1);
                    let _ = writeln!(progress, "{label} -> {address}: sendmail failed: {why}");
                    tracing::warn!(domain = %queued.reported_domain, destination = %address, error = %why, "DMARC failure report not handed to the MTA");
                    retry = Some(why);
                    None
                }
            };
            if let Some(entry) = entry
                && !run.dry_run
            {
                done.push(entry);
                let text = serde_json::to_string(&done).unwrap_or_default();
                store.failure_done(&queued.id, run.owner, &text)?;
            }
        }
        if run.dry_run {
            continue;
        }
        match retry {
            Some(why) => {
                let next = now + super::send::backoff(queued.attempts + 1);
                store.finish_failure(&queued.id, run.owner, store::PENDING, &why, next, now)?;
            }
            None => {
                let state = if any_sent {
                    store::SENT
                } else {
                    store::SKIPPED
                };
                store.finish_failure(&queued.id, run.owner, state, "", 0, now)?;
            }
        }
    }
    Ok(summary)
}

#[allow(clippy::too_many_arguments)]
fn deliver(
    store: &mut Store,
    run: &Run<'_>,
    queued: &QueuedFailure,
    sample: &FailureSample,
    address: &str,
    max_size: usize,
    copy: bool,
    day: i64,
    progress: &mut dyn Write,
) -> Result<Outcome, store::StoreError> {
    let settings = run.settings;
    let f = &settings.failure;
    if !valid_address(address) {
        return Ok(Outcome::Refused("not a usable address".to_string()));
    }
    let domain = &queued.policy_domain;
    if let Some(why) = super::send::refused_locally(settings, domain, address, copy) {
        return Ok(Outcome::Refused(why.to_string()));
    }
    let dest_domain = address.rsplit_once('@').map_or("", |(_, d)| d);
    // RFC 9991 §2 / RFC 9990 §4: a destination outside the domain must
    // have authorised reports for it (the copies are the operator's own).
    if !copy && !within(dest_domain, domain) {
        match run
            .rt
            .block_on(authorised(run.resolver, domain, dest_domain))
        {
            Authorised::Yes => {}
            Authorised::No(why) => return Ok(Outcome::Refused(why)),
            Authorised::TempError(e) => {
                return Ok(Outcome::Postponed(format!(
                    "authorisation lookup failed ({e})"
                )));
            }
        }
    }
    let mail = message(settings, queued, sample, address, max_size);
    // RFC 9990 §2.5 (RFC 9991 §2): a URI whose size limit the report exceeds MUST NOT be used.
    if max_size > 0 && mail.len() > max_size {
        return Ok(Outcome::Refused(format!(
            "the report ({} bytes) exceeds the destination's limit of {max_size} bytes",
            mail.len()
        )));
    }
    if run.dry_run {
        let dest_count = store.limit_count(LIMIT_DESTINATION, address, day)?;
        if dest_count as u64 >= f.per_destination_per_day {
            return Ok(Outcome::Limited(format!(
                "report.failure.per_destination_per_day ({}) reached today",
                f.per_destination_per_day
            )));
        }
        let global = store.limit_count(LIMIT_GLOBAL, "", day)?;
        if global as u64 >= f.max_per_day {
            return Ok(Outcome::Limited(format!(
                "report.failure.max_per_day ({}) reached today",
                f.max_per_day
            )));
        }
        if run.print {
            let _ = writeln!(progress, "---- to {address}");
            let _ = progress.write_all(&mail);
            let _ = writeln!(progress, "----");
        }
        return Ok(Outcome::WouldSend(mail.len()));
    }
    if !store.take_limit(LIMIT_DESTINATION, address, day, f.per_destination_per_day)? {
        return Ok(Outcome::Limited(format!(
            "report.failure.per_destination_per_day ({}) reached today",
            f.per_destination_per_day
        )));
    }
    if !store.take_limit(LIMIT_GLOBAL, "", day, f.max_per_day)? {
        store.release_limit(LIMIT_DESTINATION, address, day)?;
        return Ok(Outcome::Limited(format!(
            "report.failure.max_per_day ({}) reached today",
            f.max_per_day
        )));
    }
    match sendmail(&settings.sendmail, &settings.email, address, &mail) {
        Ok(()) => {
            info!(domain = %queued.reported_domain, source_ip = %queued.source_ip, destination = %address, "DMARC failure report handed to the MTA");
            Ok(Outcome::Sent)
        }
        Err(e) => {
            // Not sent: the report is retried, and the day's counts are
            // for reports that left.
            store.release_limit(LIMIT_DESTINATION, address, day)?;
            store.release_limit(LIMIT_GLOBAL, "", day)?;
            Ok(Outcome::Failed(e))
        }
    }
}

/// `rmilter report failures`: send (or, dry run, show) the queued failure
/// reports only.
pub fn run(
    settings: &ReportSettings,
    dns: &crate::config::DnsSettings,
    options: &super::send::Options,
    print: bool,
    progress: &mut dyn Write,
) -> anyhow::Result<Summary> {
    let mut store = Store::open(&settings.store, super::send::BUSY_TIMEOUT)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let auth = rt.block_on(async { crate::dns::authenticator(dns) })?;
    let resolver = HickoryDns::new(auth.resolver().clone());
    let owner = super::send::lease_owner();
    let run = Run {
        settings,
        rt: &rt,
        resolver: &resolver,
        owner: &owner,
        now: options.now,
        dry_run: options.dry_run,
        print,
    };
    Ok(send_due(&mut store, &run, progress)?)
}

/// How often the daemon sends queued failure reports with
/// `report.schedule = "daemon"` (aggregate reports go once a period).
pub const DAEMON_SEND_EVERY: Duration = Duration::from_secs(300);

/// `report.schedule = "daemon"`: send the queued failure reports every
/// [`DAEMON_SEND_EVERY`], so they do not wait for the end of the aggregate
/// period.
pub fn schedule(settings: &ReportSettings, dns: &crate::config::DnsSettings) {
    loop {
        std::thread::sleep(DAEMON_SEND_EVERY);
        let options = super::send::Options::default();
        match run(settings, dns, &options, false, &mut std::io::sink()) {
            Ok(summary) if summary.reports > 0 => {
                info!(summary = %summary.line(false), "scheduled failure report send done")
            }
            Ok(_) => {}
            Err(e) => warn!(
                error = format!("{e:#}"),
                "scheduled failure report send failed"
            ),
        }
    }
}
