//! The milter's side of the store: [`StoreSink`] folds each evaluation
//! record into the report row it counts for (one per policy domain, period
//! and row, whatever the number of messages), and one writer thread writes
//! the gathered rows into the store. A full queue (more distinct rows
//! waiting than `queue_size`) or a failing store (full disk, read-only,
//! locked, unreachable) drops the records, counts them and logs at most
//! once a minute; mail is never blocked or failed, and writing resumes by
//! itself when the store works again.

use super::store::{Addition, Policy, Row, Store};
use super::{Evaluation, EvaluationSink, period_of, unix_time};
use crate::config::ReportSettings;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// How long the writer gathers records after the first one before it
/// writes them in one transaction. Without it, a steady flow of mail (a
/// record every few milliseconds) meant one transaction and one writer
/// wake-up per record; with it, one per 100 ms whatever the rate, and
/// records wait no longer.
const GATHER: Duration = Duration::from_millis(100);
/// Least time between two "records dropped" log lines.
const LOG_EVERY: Duration = Duration::from_secs(60);
/// How long the writer waits for a locked SQLite database.
const WRITER_BUSY_TIMEOUT: Duration = Duration::from_secs(2);

/// Counters of the daemon's scheduled `report send` runs
/// (`report.schedule = "daemon"`), for the metrics endpoint.
#[derive(Debug, Default)]
pub struct ScheduledSends {
    /// Report mails handed to the MTA.
    pub sent: AtomicU64,
    /// Hand-overs to the MTA that failed (retried by a later run).
    pub failed: AtomicU64,
    pub runs_ok: AtomicU64,
    pub runs_failed: AtomicU64,
}

/// The daemon's scheduled sends (one scheduler per process).
pub static SCHEDULED: ScheduledSends = ScheduledSends {
    sent: AtomicU64::new(0),
    failed: AtomicU64::new(0),
    runs_ok: AtomicU64::new(0),
    runs_failed: AtomicU64::new(0),
};

/// Counters of the report writer.
#[derive(Debug, Default)]
pub struct Stats {
    /// Records handed to the sink.
    pub received: AtomicU64,
    /// Records stored.
    pub written: AtomicU64,
    /// Records dropped: queue full or store failure.
    pub dropped: AtomicU64,
    log: Mutex<LogState>,
}

#[derive(Debug, Default)]
struct LogState {
    last: Option<Instant>,
    unlogged: u64,
}

impl Stats {
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn drop_records(&self, n: u64, reason: &str) {
        let total = self.dropped.fetch_add(n, Ordering::Relaxed) + n;
        let mut log = match self.log.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        log.unlogged += n;
        if log.last.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
            warn!(
                dropped = log.unlogged,
                dropped_total = total,
                reason,
                "report store: evaluation records dropped (mail is not affected)"
            );
            log.last = Some(Instant::now());
            log.unlogged = 0;
        }
    }
}

/// Evaluations folded into store rows: one [`Addition`] per (policy
/// domain, period, row), in the order they first appeared, with the number
/// of evaluations it counts.
#[derive(Debug, Default)]
pub struct Gathered {
    additions: Vec<Addition>,
    index: HashMap<(String, i64, Row), usize>,
    /// Evaluations folded in.
    records: u64,
}

impl Gathered {
    /// Fold one evaluation's addition in. A new row is refused (`false`)
    /// when `limit` rows are already waiting; a known row always counts.
    pub fn add(&mut self, a: Addition, limit: usize) -> bool {
        let key = (a.policy_domain, a.period_begin, a.row);
        if let Some(&i) = self.index.get(&key) {
            let existing = &mut self.additions[i];
            existing.count += a.count;
            // The newest policy seen is the one reported.
            if a.time >= existing.time {
                existing.time = a.time;
                existing.policy = a.policy;
            }
        } else {
            if self.additions.len() >= limit {
                return false;
            }
            let (policy_domain, period_begin, row) = key;
            self.index.insert(
                (policy_domain.clone(), period_begin, row.clone()),
                self.additions.len(),
            );
            self.additions.push(Addition {
                policy_domain,
                period_begin,
                row,
                ..a
            });
        }
        self.records += a.count as u64;
        true
    }

    /// The additions in the order their rows first appeared.
    pub fn into_additions(self) -> Vec<Addition> {
        self.additions
    }
}

/// What the milter threads hand the writer.
#[derive(Default)]
struct Queue {
    waiting: Mutex<Waiting>,
    /// Signalled when the first record of a batch arrives, and at close.
    ready: Condvar,
}

#[derive(Default)]
struct Waiting {
    gathered: Gathered,
    /// No more records: the sink is gone or the writer never started.
    closed: bool,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, Waiting> {
        match self.waiting.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }
}

/// An [`EvaluationSink`] writing into the report store.
pub struct StoreSink {
    queue: Arc<Queue>,
    /// `report.period` in seconds.
    period: i64,
    /// Rows waiting at most (`report.queue_size`).
    limit: usize,
    stats: Arc<Stats>,
    /// The failure-report queue (RFC 9991), when `[report.failure]` is on.
    failures: Option<super::failures::FailureQueue>,
}

impl Drop for StoreSink {
    /// The writer writes what is left, then ends.
    fn drop(&mut self) {
        self.queue.lock().closed = true;
        self.queue.ready.notify_one();
    }
}

impl StoreSink {
    /// Start the writer thread. The store is opened by the writer on first
    /// use (and re-opened after a failure), never here: a store that is
    /// down at start does not stop the milter.
    pub fn start(settings: &ReportSettings) -> Arc<StoreSink> {
        // The records are folded into rows as they arrive: memory grows
        // with the distinct rows waiting, not with the rate of mail (a
        // queue of records held 500 of them, 0.8 MiB, at 5,000 messages a
        // second).
        let queue = Arc::new(Queue::default());
        let stats = Arc::new(Stats::default());
        let writer = Writer {
            settings: settings.clone(),
            stats: stats.clone(),
            store: None,
            last_purge: None,
        };
        let spawned = std::thread::Builder::new()
            .name("rmilter-report-writer".to_string())
            .spawn({
                let queue = queue.clone();
                move || writer.run(&queue)
            });
        if let Err(e) = spawned {
            warn!(error = %e, "report store: cannot start the writer thread; evaluations are dropped");
            queue.lock().closed = true;
        }
        let failures = settings
            .failure
            .enabled
            .then(|| super::failures::FailureQueue::start(settings));
        Arc::new(StoreSink {
            queue,
            period: settings.period.as_secs() as i64,
            limit: settings.queue_size.max(1),
            stats,
            failures,
        })
    }

    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }
}

impl EvaluationSink for StoreSink {
    fn record(&self, evaluation: Evaluation) {
        let Some(addition) = addition(&evaluation, self.period) else {
            return;
        };
        self.stats.received.fetch_add(1, Ordering::Relaxed);
        let first = {
            let mut queue = self.queue.lock();
            if queue.closed {
                drop(queue);
                self.stats.drop_records(1, "writer not running");
                return;
            }
            let first = queue.gathered.records == 0;
            if !queue.gathered.add(addition, self.limit) {
                drop(queue);
                self.stats.drop_records(1, "queue full");
                return;
            }
            first
        };
        // Only the first record of a batch wakes the writer; it sleeps out
        // the gathering window and takes the rest with it.
        if first {
            self.queue.ready.notify_one();
        }
    }

    fn stats(&self) -> Option<Arc<Stats>> {
        Some(self.stats.clone())
    }

    fn failure(&self, capture: super::failures::Capture) {
        if let Some(queue) = &self.failures {
            queue.offer(capture);
        }
    }

    fn finish(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        if let Some(queue) = &self.failures {
            queue.finish(timeout);
        }
        let s = &self.stats;
        while s.written() + s.dropped() < s.received() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

struct Writer {
    settings: ReportSettings,
    stats: Arc<Stats>,
    store: Option<Store>,
    last_purge: Option<Instant>,
}

impl Writer {
    fn run(mut self, queue: &Queue) {
        loop {
            let mut guard = queue.lock();
            while guard.gathered.records == 0 && !guard.closed {
                guard = match queue.ready.wait(guard) {
                    Ok(g) => g,
                    Err(p) => p.into_inner(),
                };
            }
            let closed = guard.closed;
            if guard.gathered.records == 0 {
                return;
            }
            drop(guard);
            // Sleep out the window rather than wait on the queue: the
            // records that arrive meanwhile are folded in without waking
            // this thread.
            if !closed {
                std::thread::sleep(GATHER);
            }
            let batch = std::mem::take(&mut queue.lock().gathered);
            self.write(batch);
        }
    }

    fn write(&mut self, batch: Gathered) {
        let n = batch.records;
        let additions = batch.into_additions();
        if self.store.is_none() {
            match Store::open(&self.settings.store, WRITER_BUSY_TIMEOUT) {
                Ok(store) => {
                    info!(store = %self.settings.store, "report store opened");
                    self.store = Some(store);
                }
                Err(e) => {
                    self.stats.drop_records(n, &e.to_string());
                    // Do not retry in a tight loop: records queue meanwhile.
                    std::thread::sleep(Duration::from_millis(500));
                    return;
                }
            }
        }
        let Some(store) = self.store.as_mut() else {
            return;
        };
        match store.add(&additions) {
            Ok(()) => {
                self.stats.written.fetch_add(n, Ordering::Relaxed);
            }
            Err(e) => {
                self.stats.drop_records(n, &e.to_string());
                // Re-open on the next batch: the file may have been
                // replaced, the disk remounted, the server restarted.
                self.store = None;
                std::thread::sleep(Duration::from_millis(500));
                return;
            }
        }
        if self
            .last_purge
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(3600))
        {
            self.last_purge = Some(Instant::now());
            let cutoff =
                unix_time(std::time::SystemTime::now()) - self.settings.retention.as_secs() as i64;
            if let Err(e) = store.purge(cutoff) {
                warn!(error = %e, "report store: cannot delete old data");
            }
        }
    }
}

/// Aggregate evaluations into store additions: one per (policy domain,
/// period, row), with the number of evaluations.
pub fn aggregate(batch: &[Evaluation], period: i64) -> Vec<Addition> {
    let mut gathered = Gathered::default();
    for a in batch.iter().filter_map(|e| addition(e, period)) {
        gathered.add(a, usize::MAX);
    }
    gathered.into_additions()
}

/// RFC 9990 §2.1.3.2 ("DKIM Signatures in Aggregate Reports"): at most 100
/// signatures per row, passing and aligned ones first.
const MAX_DKIM_PER_ROW: usize = 100;

/// The store row for one evaluation.
pub fn addition(e: &Evaluation, period: i64) -> Option<Addition> {
    let p = e.policy.as_ref()?;
    let time = unix_time(e.time);
    let (begin, end) = period_of(time, period);
    let header_from = e.header_from.to_ascii_lowercase();
    let policy = Policy {
        domain: p.domain.to_ascii_lowercase(),
        p: p.p.to_string(),
        sp: p.sp.to_string(),
        np: p.np.to_string(),
        adkim: p.adkim.to_string(),
        aspf: p.aspf.to_string(),
        testing: p.testing,
        psd: p.psd.to_string(),
    };
    let passed = e.dkim_aligned == "pass" || e.spf_aligned == "pass";
    let applied = if header_from == policy.domain {
        policy.p.as_str()
    } else {
        policy.sp.as_str()
    };
    // RFC 9990 ActionDispositionType: "pass" is no action, DMARC passed
    // under an enforcing policy.
    let disposition = match e.disposition {
        super::Disposition::None if passed && applied != "none" => "pass",
        d => d.as_str(),
    };
    let rank = |d: &super::DkimRecord| {
        let aligned_strict = d.domain.eq_ignore_ascii_case(&header_from);
        let aligned_relaxed = aligned_strict
            || header_from.ends_with(&format!(".{}", d.domain.to_ascii_lowercase()))
            || d.domain
                .to_ascii_lowercase()
                .ends_with(&format!(".{header_from}"));
        match (d.result == "pass", aligned_strict, aligned_relaxed) {
            (true, true, _) => 0,
            (true, false, true) => 1,
            (true, false, false) => 2,
            _ => 3,
        }
    };
    let mut dkim: Vec<&super::DkimRecord> = e.dkim.iter().collect();
    dkim.sort_by_key(|d| rank(d));
    let row = Row {
        source_ip: e.source_ip.map(|ip| ip.to_string()).unwrap_or_default(),
        header_from,
        envelope_from: e.envelope_from.to_ascii_lowercase(),
        disposition: disposition.to_string(),
        dkim: e.dkim_aligned.to_string(),
        spf: e.spf_aligned.to_string(),
        reasons: e
            .overrides
            .iter()
            .map(|o| (o.kind.to_string(), o.comment.clone()))
            .collect(),
        dkim_results: dkim
            .into_iter()
            .take(MAX_DKIM_PER_ROW)
            .map(|d| {
                (
                    d.domain.to_ascii_lowercase(),
                    d.selector.clone(),
                    d.result.to_string(),
                )
            })
            .collect(),
        spf_results: e
            .spf
            .iter()
            .map(|s| {
                (
                    s.domain.to_ascii_lowercase(),
                    s.scope.to_string(),
                    s.result.to_string(),
                )
            })
            .collect(),
    };
    Some(Addition {
        policy_domain: policy.domain.clone(),
        period_begin: begin,
        period_end: end,
        policy,
        row,
        count: 1,
        time,
    })
}

/// The daemon's evaluation sink: the store writer when `report.enabled`,
/// and, with `report.schedule = "daemon"`, a thread that runs `report send`
/// five minutes after each period ends. `None` when reporting is off.
pub fn for_daemon(config: &crate::config::Config) -> Option<Arc<dyn EvaluationSink>> {
    let settings = &config.report;
    if !settings.enabled {
        return None;
    }
    info!(store = %settings.store, period = %humantime::format_duration(settings.period), "DMARC aggregate reporting on");
    let sink = StoreSink::start(settings);
    if settings.schedule_in_daemon {
        let settings = settings.clone();
        let dns = config.dns.clone();
        let spawned = std::thread::Builder::new()
            .name("rmilter-report-send".to_string())
            .spawn(move || schedule(&settings, &dns));
        if let Err(e) = spawned {
            warn!(error = %e, "cannot start the report scheduler");
        }
        if config.report.failure.enabled {
            let settings = config.report.clone();
            let dns = config.dns.clone();
            let spawned = std::thread::Builder::new()
                .name("rmilter-failure-send".to_string())
                .spawn(move || super::failures::schedule(&settings, &dns));
            if let Err(e) = spawned {
                warn!(error = %e, "cannot start the failure report scheduler");
            }
        }
    }
    Some(sink)
}

fn schedule(settings: &ReportSettings, dns: &crate::config::DnsSettings) {
    let length = settings.period.as_secs() as i64;
    loop {
        let now = unix_time(std::time::SystemTime::now());
        let (_, end) = period_of(now, length);
        let wake = end + 1 + 300;
        std::thread::sleep(Duration::from_secs((wake - now).max(1) as u64));
        let options = super::send::Options::default();
        match super::send::run(settings, dns, &options, &mut std::io::sink()) {
            Ok(summary) => {
                SCHEDULED.runs_ok.fetch_add(1, Ordering::Relaxed);
                SCHEDULED
                    .sent
                    .fetch_add(summary.sent as u64, Ordering::Relaxed);
                SCHEDULED
                    .failed
                    .fetch_add(summary.failed as u64, Ordering::Relaxed);
                info!(summary = %summary.line(false), "scheduled report send done")
            }
            Err(e) => {
                SCHEDULED.runs_failed.fetch_add(1, Ordering::Relaxed);
                warn!(error = format!("{e:#}"), "scheduled report send failed")
            }
        }
    }
}
