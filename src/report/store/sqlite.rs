//! The embedded store: one SQLite file (rusqlite, bundled SQLite), in WAL
//! mode so a crash never leaves it half-written and readers (`report send`)
//! do not block the milter's writer.

use super::{Db, Dialect, Value};
use rusqlite::{Connection, OpenFlags, params_from_iter};
use std::path::Path;
use std::time::Duration;

pub struct Sqlite(Connection);

pub fn open(path: &Path, busy_timeout: Duration) -> Result<Sqlite, String> {
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
        && !dir.exists()
    {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create directory {}: {e}", dir.display()))?;
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| e.to_string())?;
    conn.busy_timeout(busy_timeout).map_err(|e| e.to_string())?;
    // WAL: readers and the writer do not block each other; a crash or a
    // full disk rolls back to the last commit instead of corrupting.
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(|e| e.to_string())?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::debug!(mode, "report store: WAL not available");
    }
    conn.execute_batch("PRAGMA synchronous = NORMAL")
        .map_err(|e| e.to_string())?;
    Ok(Sqlite(conn))
}

fn to_sql(v: &Value) -> rusqlite::types::Value {
    match v {
        Value::Int(i) => rusqlite::types::Value::Integer(*i),
        Value::Text(s) => rusqlite::types::Value::Text(s.clone()),
        Value::Blob(b) => rusqlite::types::Value::Blob(b.clone()),
        Value::Null => rusqlite::types::Value::Null,
    }
}

impl Db for Sqlite {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, String> {
        let mut stmt = self.0.prepare_cached(sql).map_err(|e| e.to_string())?;
        stmt.execute(params_from_iter(params.iter().map(to_sql)))
            .map(|n| n as u64)
            .map_err(|e| e.to_string())
    }

    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Vec<Value>>, String> {
        let mut stmt = self.0.prepare_cached(sql).map_err(|e| e.to_string())?;
        let columns = stmt.column_count();
        let mut rows = stmt
            .query(params_from_iter(params.iter().map(to_sql)))
            .map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(|e| e.to_string())? {
            let mut values = Vec::with_capacity(columns);
            for i in 0..columns {
                let v: rusqlite::types::Value = row.get(i).map_err(|e| e.to_string())?;
                values.push(match v {
                    rusqlite::types::Value::Integer(i) => Value::Int(i),
                    rusqlite::types::Value::Text(s) => Value::Text(s),
                    rusqlite::types::Value::Blob(b) => Value::Blob(b),
                    rusqlite::types::Value::Real(f) => Value::Int(f as i64),
                    rusqlite::types::Value::Null => Value::Null,
                });
            }
            out.push(values);
        }
        Ok(out)
    }

    fn batch(&mut self, sql: &str) -> Result<(), String> {
        self.0.execute_batch(sql).map_err(|e| e.to_string())
    }
}
