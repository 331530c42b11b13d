//! The shared store: PostgreSQL through tokio-postgres, driven by a private
//! current-thread runtime so that the store stays a plain blocking
//! interface (the milter's writer thread and `report send` call it).
//! `postgres://user:password@host:port/db`, or `?host=/run/postgresql` for a
//! unix socket directory. `sslmode` and `sslrootcert` in the URL select TLS
//! ([`super::tls`]).

use super::{Db, Dialect, Value, tls};
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, NoTls, Socket};

/// How long opening the connection (and TLS) may take.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

pub struct Postgres {
    rt: tokio::runtime::Runtime,
    client: Client,
}

pub fn open(url: &str) -> Result<Postgres, String> {
    let (url, options) = tls::split_url(url)?;
    let tls = tls::client_config(&options)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    // The connection task runs whenever the runtime is driven (in block_on).
    let client = rt.block_on(async {
        match tls {
            None => connect(&url, NoTls).await,
            Some(config) => connect(&url, tls::MakeRustls::new(config)).await,
        }
    })?;
    Ok(Postgres { rt, client })
}

/// Connect within [`CONNECT_TIMEOUT`] and spawn the connection's task.
async fn connect<T>(url: &str, tls: T) -> Result<Client, String>
where
    T: MakeTlsConnect<Socket>,
    T::Stream: Send + 'static,
{
    let (client, connection) =
        tokio::time::timeout(CONNECT_TIMEOUT, tokio_postgres::connect(url, tls))
            .await
            .map_err(|_| format!("connection timed out after {}s", CONNECT_TIMEOUT.as_secs()))?
            .map_err(|e| error_text(&e))?;
    tokio::spawn(drive(connection));
    Ok(client)
}

async fn drive<S, T>(connection: tokio_postgres::Connection<S, T>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    if let Err(e) = connection.await {
        tracing::debug!(error = %e, "report store: PostgreSQL connection ended");
    }
}

fn error_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                text.push_str(&format!(": {s}"));
                source = s.source();
            }
            text
        }
    }
}

/// `?1` → `$1`.
fn placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '?' && chars.peek().is_some_and(|n| n.is_ascii_digit()) {
            out.push('$');
        } else {
            out.push(c);
        }
    }
    out
}

fn params(values: &[Value]) -> Vec<Box<dyn ToSql + Sync + Send>> {
    values
        .iter()
        .map(|v| -> Box<dyn ToSql + Sync + Send> {
            match v {
                Value::Int(i) => Box::new(*i),
                Value::Text(s) => Box::new(s.clone()),
                Value::Blob(b) => Box::new(b.clone()),
                Value::Null => Box::new(None::<String>),
            }
        })
        .collect()
}

impl Db for Postgres {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn execute(&mut self, sql: &str, values: &[Value]) -> Result<u64, String> {
        let sql = placeholders(sql);
        let owned = params(values);
        let refs: Vec<&(dyn ToSql + Sync)> = owned
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect();
        self.rt
            .block_on(self.client.execute(sql.as_str(), &refs))
            .map_err(|e| error_text(&e))
    }

    fn query(&mut self, sql: &str, values: &[Value]) -> Result<Vec<Vec<Value>>, String> {
        let sql = placeholders(sql);
        let owned = params(values);
        let refs: Vec<&(dyn ToSql + Sync)> = owned
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect();
        let rows = self
            .rt
            .block_on(self.client.query(sql.as_str(), &refs))
            .map_err(|e| error_text(&e))?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let mut values = Vec::with_capacity(row.len());
            for (i, column) in row.columns().iter().enumerate() {
                let ty = column.type_();
                let v = if *ty == Type::INT8 {
                    row.try_get::<_, Option<i64>>(i).map(|v| v.map(Value::Int))
                } else if *ty == Type::INT4 {
                    row.try_get::<_, Option<i32>>(i)
                        .map(|v| v.map(|v| Value::Int(v.into())))
                } else if *ty == Type::BYTEA {
                    row.try_get::<_, Option<Vec<u8>>>(i)
                        .map(|v| v.map(Value::Blob))
                } else if *ty == Type::VOID {
                    Ok(None)
                } else {
                    row.try_get::<_, Option<String>>(i)
                        .map(|v| v.map(Value::Text))
                }
                .map_err(|e| error_text(&e))?;
                values.push(v.unwrap_or(Value::Null));
            }
            out.push(values);
        }
        Ok(out)
    }

    fn batch(&mut self, sql: &str) -> Result<(), String> {
        self.rt
            .block_on(self.client.batch_execute(sql))
            .map_err(|e| error_text(&e))
    }
}
