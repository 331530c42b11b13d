//! The report store: aggregated evaluation rows per (policy domain,
//! period), the generated reports, and one delivery row per (policy domain,
//! period, destination) that `report send` claims with a lease.
//!
//! The same schema and queries run on SQLite (embedded, the default) and
//! PostgreSQL (shared by several MX hosts). The queries are written once
//! against the small [`Db`] interface, which each backend implements; only
//! the placeholders (`?1` here, `$1` in PostgreSQL) and a few type names
//! differ. Rows are aggregated as they are stored: a row is the report
//! record without its count, keyed by a hash of its canonical JSON, and a
//! repeated row only increments the count.

mod postgres;
mod sqlite;
pub mod tls;

use crate::config::ReportStore;
use serde::{Deserialize, Serialize};
use std::fmt;

/// A value passed to or read from the database.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Int(i64),
    Text(String),
    Blob(Vec<u8>),
    Null,
}

impl Value {
    fn int(&self) -> i64 {
        match self {
            Value::Int(i) => *i,
            _ => 0,
        }
    }
    fn text(&self) -> String {
        match self {
            Value::Text(s) => s.clone(),
            Value::Int(i) => i.to_string(),
            _ => String::new(),
        }
    }
    fn blob(&self) -> Vec<u8> {
        match self {
            Value::Blob(b) => b.clone(),
            Value::Text(s) => s.clone().into_bytes(),
            _ => Vec::new(),
        }
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Value {
        Value::Int(v)
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Value {
        Value::Text(v.to_string())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Value {
        Value::Text(v)
    }
}
impl From<&String> for Value {
    fn from(v: &String) -> Value {
        Value::Text(v.clone())
    }
}
impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Value {
        Value::Blob(v)
    }
}

/// Which SQL dialect a [`Db`] speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// A store operation that failed: the database could not be opened,
/// written (full disk, read-only, locked) or read.
#[derive(Debug, thiserror::Error)]
#[error("report store {store}: {message}")]
pub struct StoreError {
    pub store: String,
    pub message: String,
}

/// The minimal database interface the store logic runs on. Statements use
/// `?1`, `?2`, … placeholders.
pub trait Db: Send {
    fn dialect(&self) -> Dialect;
    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, String>;
    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Vec<Value>>, String>;
    fn batch(&mut self, sql: &str) -> Result<(), String>;
}

/// Schema migrations, applied in order; the store records the last one.
/// Written for PostgreSQL; for SQLite, `BYTEA` becomes `BLOB`.
const MIGRATIONS: &[&str] = &[
    // 1: the initial schema.
    "CREATE TABLE report_policies (
        policy_domain TEXT NOT NULL,
        period_begin BIGINT NOT NULL,
        period_end BIGINT NOT NULL,
        policy TEXT NOT NULL,
        updated BIGINT NOT NULL,
        PRIMARY KEY (policy_domain, period_begin)
    );
    CREATE TABLE report_rows (
        policy_domain TEXT NOT NULL,
        period_begin BIGINT NOT NULL,
        row_key TEXT NOT NULL,
        detail TEXT NOT NULL,
        count BIGINT NOT NULL,
        PRIMARY KEY (policy_domain, period_begin, row_key)
    );
    CREATE TABLE reports (
        policy_domain TEXT NOT NULL,
        period_begin BIGINT NOT NULL,
        period_end BIGINT NOT NULL,
        report_id TEXT NOT NULL,
        filename TEXT NOT NULL,
        generated BIGINT NOT NULL,
        messages BIGINT NOT NULL,
        gz BYTEA NOT NULL,
        PRIMARY KEY (policy_domain, period_begin)
    );
    CREATE TABLE report_deliveries (
        policy_domain TEXT NOT NULL,
        period_begin BIGINT NOT NULL,
        destination TEXT NOT NULL,
        state TEXT NOT NULL,
        owner TEXT NOT NULL,
        lease_until BIGINT NOT NULL,
        attempts BIGINT NOT NULL,
        next_attempt BIGINT NOT NULL,
        last_error TEXT NOT NULL,
        updated BIGINT NOT NULL,
        PRIMARY KEY (policy_domain, period_begin, destination)
    );",
    // 2: DMARC failure reports (RFC 9991): the queue, and the rate-limit
    // counters shared by every host and run using the store.
    "CREATE TABLE failure_reports (
        id TEXT PRIMARY KEY,
        reported_domain TEXT NOT NULL,
        policy_domain TEXT NOT NULL,
        source_ip TEXT NOT NULL,
        destinations TEXT NOT NULL,
        sample TEXT NOT NULL,
        done TEXT NOT NULL,
        state TEXT NOT NULL,
        owner TEXT NOT NULL,
        lease_until BIGINT NOT NULL,
        attempts BIGINT NOT NULL,
        next_attempt BIGINT NOT NULL,
        last_error TEXT NOT NULL,
        created BIGINT NOT NULL,
        updated BIGINT NOT NULL
    );
    CREATE INDEX failure_reports_state ON failure_reports (state, next_attempt);
    CREATE TABLE failure_limits (
        kind TEXT NOT NULL,
        key TEXT NOT NULL,
        window_begin BIGINT NOT NULL,
        count BIGINT NOT NULL,
        PRIMARY KEY (kind, key, window_begin)
    );",
];

/// The published policy of a report (RFC 9990 `policy_published`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub domain: String,
    pub p: String,
    pub sp: String,
    pub np: String,
    pub adkim: String,
    pub aspf: String,
    pub testing: bool,
    pub psd: String,
}

/// One report record without its count (RFC 9990 `record`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Row {
    pub source_ip: String,
    pub header_from: String,
    pub envelope_from: String,
    /// none, pass, quarantine or reject.
    pub disposition: String,
    /// DMARC-aligned DKIM and SPF: pass or fail.
    pub dkim: String,
    pub spf: String,
    /// (type, comment)
    pub reasons: Vec<(String, String)>,
    /// (domain, selector, result)
    pub dkim_results: Vec<(String, String, String)>,
    /// (domain, scope, result)
    pub spf_results: Vec<(String, String, String)>,
}

impl Row {
    /// The canonical JSON of the row (its identity in the store).
    pub fn json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// The published policy and the rows with their counts of one report.
pub type Contents = (Policy, Vec<(Row, i64)>);

/// Rows of one (policy domain, period) to be added with their counts.
#[derive(Debug, Clone)]
pub struct Addition {
    pub policy_domain: String,
    pub period_begin: i64,
    pub period_end: i64,
    pub policy: Policy,
    pub row: Row,
    pub count: i64,
    /// When the newest of these evaluations was made.
    pub time: i64,
}

/// A generated report as stored: the bytes every (re-)send uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredReport {
    pub policy_domain: String,
    pub period_begin: i64,
    pub period_end: i64,
    pub report_id: String,
    pub filename: String,
    pub generated: i64,
    pub messages: i64,
    pub gz: Vec<u8>,
}

/// Delivery states.
pub const PENDING: &str = "pending";
pub const SENDING: &str = "sending";
pub const SENT: &str = "sent";
/// Not sent, and never will be (size limit, unauthorised, given up).
pub const SKIPPED: &str = "skipped";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub destination: String,
    pub state: String,
    pub owner: String,
    pub lease_until: i64,
    pub attempts: i64,
    pub next_attempt: i64,
    pub last_error: String,
}

/// An open report store.
pub struct Store {
    db: Box<dyn Db>,
    name: String,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store").field("name", &self.name).finish()
    }
}

impl Store {
    /// Open (and create or migrate) the store. `busy_timeout` is how long
    /// SQLite waits for a lock held by another process.
    pub fn open(
        location: &ReportStore,
        busy_timeout: std::time::Duration,
    ) -> Result<Store, StoreError> {
        let name = location.to_string();
        let err = |message: String| StoreError {
            store: name.clone(),
            message,
        };
        let db: Box<dyn Db> = match location {
            ReportStore::Sqlite(path) => Box::new(sqlite::open(path, busy_timeout).map_err(err)?),
            ReportStore::Postgres(url) => Box::new(postgres::open(url).map_err(err)?),
        };
        let mut store = Store { db, name };
        store.migrate()?;
        Ok(store)
    }

    fn err(&self, message: String) -> StoreError {
        StoreError {
            store: self.name.clone(),
            message,
        }
    }

    fn exec(&mut self, sql: &str, params: &[Value]) -> Result<u64, StoreError> {
        self.db.execute(sql, params).map_err(|m| self.err(m))
    }

    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Vec<Value>>, StoreError> {
        self.db.query(sql, params).map_err(|m| self.err(m))
    }

    /// Run `f` in one transaction.
    fn transaction<T>(
        &mut self,
        f: impl FnOnce(&mut Store) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        // SQLite: take the write lock at once, so a busy database waits
        // (busy_timeout) instead of failing on the upgrade from read to write.
        let begin = match self.db.dialect() {
            Dialect::Sqlite => "BEGIN IMMEDIATE",
            Dialect::Postgres => "BEGIN",
        };
        self.db.batch(begin).map_err(|m| self.err(m))?;
        match f(self) {
            Ok(v) => {
                if let Err(m) = self.db.batch("COMMIT") {
                    let _ = self.db.batch("ROLLBACK");
                    return Err(self.err(m));
                }
                Ok(v)
            }
            Err(e) => {
                let _ = self.db.batch("ROLLBACK");
                Err(e)
            }
        }
    }

    /// The schema version this build writes.
    pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

    fn migrate(&mut self) -> Result<(), StoreError> {
        let dialect = self.db.dialect();
        self.transaction(|s| {
            if dialect == Dialect::Postgres {
                // Several hosts may start at once: one migrates, the others
                // wait. The lock comes before anything is created: two
                // concurrent `CREATE TABLE IF NOT EXISTS` of a new table both
                // insert its row type and one fails with 23505
                // (pg_type_typname_nsp_index). SQLite's BEGIN IMMEDIATE
                // already holds the write lock here.
                s.query("SELECT pg_advisory_xact_lock(72657074)", &[])?;
            }
            s.db.batch(
                "CREATE TABLE IF NOT EXISTS report_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
            )
            .map_err(|m| s.err(m))?;
            let rows = s.query(
                "SELECT value FROM report_meta WHERE key = 'schema_version'",
                &[],
            )?;
            let version: i64 = rows
                .first()
                .and_then(|r| r.first())
                .map(|v| v.text().parse().unwrap_or(0))
                .unwrap_or(0);
            if version > Store::SCHEMA_VERSION {
                return Err(s.err(format!(
                    "schema version {version} is newer than this rmilter understands ({})",
                    Store::SCHEMA_VERSION
                )));
            }
            for (i, migration) in MIGRATIONS.iter().enumerate().skip(version as usize) {
                let sql = match dialect {
                    Dialect::Postgres => migration.to_string(),
                    Dialect::Sqlite => migration.replace("BYTEA", "BLOB"),
                };
                s.db.batch(&sql)
                    .map_err(|m| s.err(format!("migration {}: {m}", i + 1)))?;
            }
            s.exec(
                "INSERT INTO report_meta (key, value) VALUES ('schema_version', ?1)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                &[Value::Text(Store::SCHEMA_VERSION.to_string())],
            )?;
            s.exec(
                "INSERT INTO report_meta (key, value) VALUES ('store_id', ?1)
                 ON CONFLICT (key) DO NOTHING",
                &[Value::Text(random_id())],
            )?;
            Ok(())
        })
    }

    /// The store's random identity, made when it was created. It is part
    /// of every Report-ID, so separate stores never send colliding ids,
    /// while the hosts sharing one store send one report.
    pub fn store_id(&mut self) -> Result<String, StoreError> {
        let rows = self.query("SELECT value FROM report_meta WHERE key = 'store_id'", &[])?;
        Ok(rows
            .first()
            .and_then(|r| r.first())
            .map(Value::text)
            .unwrap_or_default())
    }

    /// Add aggregated rows in one transaction.
    pub fn add(&mut self, additions: &[Addition]) -> Result<(), StoreError> {
        self.transaction(|s| {
            for a in additions {
                let policy = serde_json::to_string(&a.policy).unwrap_or_default();
                // The newest policy seen in a period is the one reported
                // (RFC 9990 §2.1: "the final configuration observed").
                s.exec(
                    "INSERT INTO report_policies (policy_domain, period_begin, period_end, policy, updated)
                     VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (policy_domain, period_begin) DO UPDATE
                     SET policy = excluded.policy, updated = excluded.updated
                     WHERE report_policies.updated <= excluded.updated",
                    &[
                        (&a.policy_domain).into(),
                        a.period_begin.into(),
                        a.period_end.into(),
                        policy.into(),
                        a.time.into(),
                    ],
                )?;
                let detail = a.row.json();
                s.exec(
                    "INSERT INTO report_rows (policy_domain, period_begin, row_key, detail, count)
                     VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (policy_domain, period_begin, row_key) DO UPDATE
                     SET count = report_rows.count + excluded.count",
                    &[
                        (&a.policy_domain).into(),
                        a.period_begin.into(),
                        sha256_hex(detail.as_bytes()).into(),
                        detail.into(),
                        a.count.into(),
                    ],
                )?;
            }
            Ok(())
        })
    }

    /// (policy domain, period begin, period end) of every period that has
    /// data, ended at or before `now`, and began at or after `since`.
    pub fn periods(&mut self, now: i64, since: i64) -> Result<Vec<(String, i64, i64)>, StoreError> {
        let rows = self.query(
            "SELECT policy_domain, period_begin, period_end FROM report_policies
             WHERE period_end < ?1 AND period_begin >= ?2
             ORDER BY period_begin, policy_domain",
            &[now.into(), since.into()],
        )?;
        Ok(rows
            .iter()
            .map(|r| (r[0].text(), r[1].int(), r[2].int()))
            .collect())
    }

    /// The period covering `time` for `domain`, if the store has one; with
    /// `domain` `None`, every domain's.
    pub fn periods_at(
        &mut self,
        time: i64,
        domain: Option<&str>,
    ) -> Result<Vec<(String, i64, i64)>, StoreError> {
        let rows = self.query(
            "SELECT policy_domain, period_begin, period_end FROM report_policies
             WHERE period_begin <= ?1 AND period_end >= ?1
             ORDER BY policy_domain",
            &[time.into()],
        )?;
        Ok(rows
            .iter()
            .map(|r| (r[0].text(), r[1].int(), r[2].int()))
            .filter(|(d, _, _)| domain.is_none_or(|want| want == d))
            .collect())
    }

    /// The policy and the rows with their counts of one report.
    pub fn contents(&mut self, domain: &str, begin: i64) -> Result<Option<Contents>, StoreError> {
        let policy = self.query(
            "SELECT policy FROM report_policies WHERE policy_domain = ?1 AND period_begin = ?2",
            &[domain.into(), begin.into()],
        )?;
        let Some(policy) = policy.first().and_then(|r| r.first()) else {
            return Ok(None);
        };
        let policy: Policy = serde_json::from_str(&policy.text())
            .map_err(|e| self.err(format!("stored policy of {domain}: {e}")))?;
        let rows = self.query(
            "SELECT detail, count FROM report_rows WHERE policy_domain = ?1 AND period_begin = ?2",
            &[domain.into(), begin.into()],
        )?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            match serde_json::from_str::<Row>(&r[0].text()) {
                Ok(row) => out.push((row, r[1].int())),
                Err(e) => return Err(self.err(format!("stored row of {domain}: {e}"))),
            }
        }
        out.sort();
        Ok(Some((policy, out)))
    }

    /// Keep `report` unless a report for its (domain, period) is already
    /// stored; return the stored one. Every send uses the stored bytes, so a
    /// re-send is byte-identical whoever generated it.
    pub fn keep_report(&mut self, report: &StoredReport) -> Result<StoredReport, StoreError> {
        self.exec(
            "INSERT INTO reports (policy_domain, period_begin, period_end, report_id, filename, generated, messages, gz)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT (policy_domain, period_begin) DO NOTHING",
            &[
                (&report.policy_domain).into(),
                report.period_begin.into(),
                report.period_end.into(),
                (&report.report_id).into(),
                (&report.filename).into(),
                report.generated.into(),
                report.messages.into(),
                report.gz.clone().into(),
            ],
        )?;
        self.report(&report.policy_domain, report.period_begin)?
            .ok_or_else(|| self.err("the report just stored is missing".to_string()))
    }

    pub fn report(&mut self, domain: &str, begin: i64) -> Result<Option<StoredReport>, StoreError> {
        let rows = self.query(
            "SELECT policy_domain, period_begin, period_end, report_id, filename, generated, messages, gz
             FROM reports WHERE policy_domain = ?1 AND period_begin = ?2",
            &[domain.into(), begin.into()],
        )?;
        Ok(rows.first().map(|r| StoredReport {
            policy_domain: r[0].text(),
            period_begin: r[1].int(),
            period_end: r[2].int(),
            report_id: r[3].text(),
            filename: r[4].text(),
            generated: r[5].int(),
            messages: r[6].int(),
            gz: r[7].blob(),
        }))
    }

    /// Make sure a delivery row exists for this destination (pending).
    pub fn add_delivery(
        &mut self,
        domain: &str,
        begin: i64,
        destination: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        self.exec(
            "INSERT INTO report_deliveries (policy_domain, period_begin, destination, state, owner,
                 lease_until, attempts, next_attempt, last_error, updated)
             VALUES (?1, ?2, ?3, 'pending', '', 0, 0, 0, '', ?4)
             ON CONFLICT (policy_domain, period_begin, destination) DO NOTHING",
            &[domain.into(), begin.into(), destination.into(), now.into()],
        )?;
        Ok(())
    }

    pub fn deliveries(&mut self, domain: &str, begin: i64) -> Result<Vec<Delivery>, StoreError> {
        let rows = self.query(
            "SELECT destination, state, owner, lease_until, attempts, next_attempt, last_error
             FROM report_deliveries WHERE policy_domain = ?1 AND period_begin = ?2
             ORDER BY destination",
            &[domain.into(), begin.into()],
        )?;
        Ok(rows
            .iter()
            .map(|r| Delivery {
                destination: r[0].text(),
                state: r[1].text(),
                owner: r[2].text(),
                lease_until: r[3].int(),
                attempts: r[4].int(),
                next_attempt: r[5].int(),
                last_error: r[6].text(),
            })
            .collect())
    }

    /// Claim a delivery for `owner` until `lease_until`: it must be pending
    /// and due, or claimed by someone whose lease has run out. One
    /// conditional UPDATE, so of several concurrent claimers (processes or
    /// hosts) exactly one wins.
    pub fn claim(
        &mut self,
        domain: &str,
        begin: i64,
        destination: &str,
        owner: &str,
        now: i64,
        lease_until: i64,
    ) -> Result<bool, StoreError> {
        let n = self.exec(
            "UPDATE report_deliveries
             SET state = 'sending', owner = ?4, lease_until = ?6, attempts = attempts + 1, updated = ?5
             WHERE policy_domain = ?1 AND period_begin = ?2 AND destination = ?3
               AND ((state = 'pending' AND next_attempt <= ?5)
                    OR (state = 'sending' AND lease_until < ?5))",
            &[
                domain.into(),
                begin.into(),
                destination.into(),
                owner.into(),
                now.into(),
                lease_until.into(),
            ],
        )?;
        Ok(n == 1)
    }

    /// Record the outcome of a claimed delivery: `state` is sent, pending
    /// (retry at `next_attempt`) or skipped. Only the claim's owner can.
    #[allow(clippy::too_many_arguments)]
    pub fn finish(
        &mut self,
        domain: &str,
        begin: i64,
        destination: &str,
        owner: &str,
        state: &str,
        error: &str,
        next_attempt: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        let n = self.exec(
            "UPDATE report_deliveries
             SET state = ?5, owner = '', lease_until = 0, last_error = ?6, next_attempt = ?7, updated = ?8
             WHERE policy_domain = ?1 AND period_begin = ?2 AND destination = ?3
               AND state = 'sending' AND owner = ?4",
            &[
                domain.into(),
                begin.into(),
                destination.into(),
                owner.into(),
                state.into(),
                error.into(),
                next_attempt.into(),
                now.into(),
            ],
        )?;
        Ok(n == 1)
    }

    /// Mark an unclaimed delivery skipped (or pending again) without a claim.
    #[allow(clippy::too_many_arguments)]
    pub fn set_state(
        &mut self,
        domain: &str,
        begin: i64,
        destination: &str,
        state: &str,
        error: &str,
        next_attempt: i64,
        now: i64,
    ) -> Result<(), StoreError> {
        self.exec(
            "UPDATE report_deliveries
             SET state = ?4, last_error = ?5, next_attempt = ?6, updated = ?7
             WHERE policy_domain = ?1 AND period_begin = ?2 AND destination = ?3
               AND state = 'pending'",
            &[
                domain.into(),
                begin.into(),
                destination.into(),
                state.into(),
                error.into(),
                next_attempt.into(),
                now.into(),
            ],
        )?;
        Ok(())
    }

    /// Delete everything about periods that began before `before`.
    pub fn purge(&mut self, before: i64) -> Result<u64, StoreError> {
        self.transaction(|s| {
            let mut n = 0;
            for table in [
                "report_rows",
                "report_policies",
                "reports",
                "report_deliveries",
            ] {
                n += s.exec(
                    &format!("DELETE FROM {table} WHERE period_begin < ?1"),
                    &[before.into()],
                )?;
            }
            Ok(n)
        })
    }

    /// Messages counted for (domain, period), for tests and status.
    pub fn message_count(&mut self, domain: &str, begin: i64) -> Result<i64, StoreError> {
        let rows = self.query(
            "SELECT CAST(COALESCE(SUM(count), 0) AS BIGINT) FROM report_rows WHERE policy_domain = ?1 AND period_begin = ?2",
            &[domain.into(), begin.into()],
        )?;
        Ok(rows.first().and_then(|r| r.first()).map_or(0, |v| match v {
            Value::Text(t) => t.parse().unwrap_or(0),
            v => v.int(),
        }))
    }
}

/// One queued failure report (RFC 9991) as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedFailure {
    pub id: String,
    pub reported_domain: String,
    /// The domain whose DMARC record applied (the authorisation check is
    /// made for it, RFC 9990 §4).
    pub policy_domain: String,
    pub source_ip: String,
    /// `ruf=` destinations as JSON `[[address, max_size], …]`.
    pub destinations: String,
    /// The failure sample as JSON.
    pub sample: String,
    /// Destinations finished with (sent or refused), as JSON `[address, …]`.
    pub done: String,
    pub state: String,
    pub attempts: i64,
    pub next_attempt: i64,
    pub last_error: String,
    pub created: i64,
}

const FAILURE_COLUMNS: &str = "id, reported_domain, policy_domain, source_ip, destinations, sample, done, state, attempts, next_attempt, last_error, created";

fn queued_failure(r: &[Value]) -> QueuedFailure {
    QueuedFailure {
        id: r[0].text(),
        reported_domain: r[1].text(),
        policy_domain: r[2].text(),
        source_ip: r[3].text(),
        destinations: r[4].text(),
        sample: r[5].text(),
        done: r[6].text(),
        state: r[7].text(),
        attempts: r[8].int(),
        next_attempt: r[9].int(),
        last_error: r[10].text(),
        created: r[11].int(),
    }
}

/// Failure-report queue and rate limits.
impl Store {
    /// Count one against the limit `limit` of (`kind`, `key`) in the window
    /// beginning at `window`: true when still under it (and counted). One
    /// conditional upsert, so hosts sharing the store cannot both take the
    /// last one, and the count survives restarts.
    pub fn take_limit(
        &mut self,
        kind: &str,
        key: &str,
        window: i64,
        limit: u64,
    ) -> Result<bool, StoreError> {
        if limit == 0 {
            return Ok(false);
        }
        let n = self.exec(
            "INSERT INTO failure_limits (kind, key, window_begin, count) VALUES (?1, ?2, ?3, 1)
             ON CONFLICT (kind, key, window_begin) DO UPDATE
             SET count = failure_limits.count + 1
             WHERE failure_limits.count < ?4",
            &[
                kind.into(),
                key.into(),
                window.into(),
                (limit as i64).into(),
            ],
        )?;
        Ok(n == 1)
    }

    /// Give back one use taken with [`Store::take_limit`] for a report that
    /// did not leave (the MTA refused it, or another limit stopped it), so
    /// an MTA outage does not use up the day's limits.
    pub fn release_limit(&mut self, kind: &str, key: &str, window: i64) -> Result<(), StoreError> {
        self.exec(
            "UPDATE failure_limits SET count = count - 1
             WHERE kind = ?1 AND key = ?2 AND window_begin = ?3 AND count > 0",
            &[kind.into(), key.into(), window.into()],
        )?;
        Ok(())
    }

    /// The count of (`kind`, `key`) in the window beginning at `window`.
    pub fn limit_count(&mut self, kind: &str, key: &str, window: i64) -> Result<i64, StoreError> {
        let rows = self.query(
            "SELECT count FROM failure_limits WHERE kind = ?1 AND key = ?2 AND window_begin = ?3",
            &[kind.into(), key.into(), window.into()],
        )?;
        Ok(rows.first().and_then(|r| r.first()).map_or(0, Value::int))
    }

    /// Queue a failure report (pending).
    pub fn queue_failure(&mut self, f: &QueuedFailure, now: i64) -> Result<(), StoreError> {
        self.exec(
            "INSERT INTO failure_reports (id, reported_domain, policy_domain, source_ip,
                 destinations, sample, done, state, owner, lease_until, attempts, next_attempt,
                 last_error, created, updated)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, '[]', 'pending', '', 0, 0, 0, '', ?7, ?7)
             ON CONFLICT (id) DO NOTHING",
            &[
                (&f.id).into(),
                (&f.reported_domain).into(),
                (&f.policy_domain).into(),
                (&f.source_ip).into(),
                (&f.destinations).into(),
                (&f.sample).into(),
                now.into(),
            ],
        )?;
        Ok(())
    }

    /// Failure reports not yet finished (pending or being sent), oldest first.
    pub fn failures_open(&mut self) -> Result<Vec<QueuedFailure>, StoreError> {
        let rows = self.query(
            &format!(
                "SELECT {FAILURE_COLUMNS} FROM failure_reports
                 WHERE state IN ('pending', 'sending') ORDER BY created, id"
            ),
            &[],
        )?;
        Ok(rows.iter().map(|r| queued_failure(r)).collect())
    }

    /// Every failure report in the store, oldest first (tests, status).
    pub fn failures_all(&mut self) -> Result<Vec<QueuedFailure>, StoreError> {
        let rows = self.query(
            &format!("SELECT {FAILURE_COLUMNS} FROM failure_reports ORDER BY created, id"),
            &[],
        )?;
        Ok(rows.iter().map(|r| queued_failure(r)).collect())
    }

    /// Claim a failure report for `owner` (as [`Store::claim`]).
    pub fn claim_failure(
        &mut self,
        id: &str,
        owner: &str,
        now: i64,
        lease_until: i64,
    ) -> Result<bool, StoreError> {
        let n = self.exec(
            "UPDATE failure_reports
             SET state = 'sending', owner = ?2, lease_until = ?4, attempts = attempts + 1, updated = ?3
             WHERE id = ?1
               AND ((state = 'pending' AND next_attempt <= ?3)
                    OR (state = 'sending' AND lease_until < ?3))",
            &[id.into(), owner.into(), now.into(), lease_until.into()],
        )?;
        Ok(n == 1)
    }

    /// Record the destinations finished with so far (only the claim's owner).
    pub fn failure_done(&mut self, id: &str, owner: &str, done: &str) -> Result<(), StoreError> {
        self.exec(
            "UPDATE failure_reports SET done = ?3
             WHERE id = ?1 AND state = 'sending' AND owner = ?2",
            &[id.into(), owner.into(), done.into()],
        )?;
        Ok(())
    }

    /// End a claim: `state` sent, skipped or pending (retry at `next_attempt`).
    pub fn finish_failure(
        &mut self,
        id: &str,
        owner: &str,
        state: &str,
        error: &str,
        next_attempt: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        let n = self.exec(
            "UPDATE failure_reports
             SET state = ?3, owner = '', lease_until = 0, last_error = ?4, next_attempt = ?5, updated = ?6
             WHERE id = ?1 AND state = 'sending' AND owner = ?2",
            &[
                id.into(),
                owner.into(),
                state.into(),
                error.into(),
                next_attempt.into(),
                now.into(),
            ],
        )?;
        Ok(n == 1)
    }

    /// Delete failure reports queued before `before`, and rate-limit
    /// windows that began before it.
    pub fn purge_failures(&mut self, before: i64) -> Result<u64, StoreError> {
        let mut n = self.exec(
            "DELETE FROM failure_reports WHERE created < ?1",
            &[before.into()],
        )?;
        n += self.exec(
            "DELETE FROM failure_limits WHERE window_begin < ?1",
            &[before.into()],
        )?;
        Ok(n)
    }
}

/// Lower-case hex SHA-256.
pub fn sha256_hex(data: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// 128 random bits as hex.
pub fn random_id() -> String {
    let mut bytes = [0u8; 16];
    if aws_lc_rs::rand::fill(&mut bytes).is_err() {
        // Not reached with AWS-LC; fall back to time and process id.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        return sha256_hex(format!("{t}-{}", std::process::id()).as_bytes())[..32].to_string();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
