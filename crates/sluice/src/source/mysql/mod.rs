//! MySQL/MariaDB source: catalog lookups in `information_schema`, data through prepared
//! statements (the binary protocol, typed values), streamed row by row into Arrow builders.
//!
//! Consistency: planning runs in `START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY` at
//! `REPEATABLE READ`. MySQL cannot hand that snapshot to another connection, so while the
//! planning transaction is held (a local run) every chunk of the run is read on the planning
//! connection itself, one after another: one consistent image. Once it is gone (in Lambda
//! the plan and the chunks run in different invocations) each chunk opens its own snapshot,
//! and the cursor window's upper bound fixed at plan time keeps incremental runs
//! consistent: a row changed after planning moves past the bound and is read by the next run.

mod cdc;
pub mod decode;
pub mod types;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use chrono::{NaiveDate, NaiveDateTime};
use futures::StreamExt;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder, SslOpts, Value};
use sluice_core::ColumnTypeOverride;
use sluice_core::config::parse_duration;
use sluice_core::late_writers::{OpenWriter, WriterCheck, wants_check};
use sluice_core::plan::{CatalogFacts, ReadCast};
use sluice_core::{
    Dialect, Engine, RunPlan, ScalarKind, ScalarValue, SourceConfig, SslMode, TableConfig,
    TableName,
};
use tokio::sync::OwnedMutexGuard;
use tracing::{debug, warn};

use self::decode::{DecodeColumn, RowDecoder};
use self::types::{ColumnRead, MyColumn, column_read};
use super::{
    CatalogTable, ChunkStream, ColumnRole, Credentials, GatheredFacts, PlanQueries, Result,
    SnapshotHold, Source, SourceCount, SourceError, Warnings, chunk_queries, gather_key_facts,
};
use super::{estimated_row_bytes, file_nullable};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Batches a chunk's reader may run ahead of the Parquet writer.
const CHANNEL_DEPTH: usize = 1;

/// Planning connections still inside their snapshot transaction, by the token the plan
/// records in `RunPlan::snapshot`.
type HeldPlans = Arc<Mutex<HashMap<String, Weak<tokio::sync::Mutex<Conn>>>>>;

/// Reads tables from one MySQL or MariaDB database.
pub struct MysqlSource {
    name: String,
    opts: Opts,
    /// `Some` when TLS is tried; `prefer` falls back to plain text when the server has none.
    tls: Option<SslOpts>,
    prefer: bool,
    statement_timeout: Option<Duration>,
    held: HeldPlans,
}

/// Tokens are unique within the process; they mean nothing to another one, which is what
/// makes a chunk in another process open its own snapshot.
static NEXT_TOKEN: AtomicU64 = AtomicU64::new(1);

impl MysqlSource {
    /// Builds the connection settings from a source's config. `credentials` are what the
    /// caller resolved (a Secrets Manager secret in AWS, `password_env` locally); they are
    /// never read from the config itself.
    pub fn from_config(
        source: &SourceConfig,
        credentials: Option<&Credentials>,
    ) -> Result<MysqlSource> {
        let config_error = |message: String| SourceError::Config {
            source_name: source.name.clone(),
            message,
        };
        super::require_resolved_credentials(source, credentials)?;
        let c = &source.connection;
        let mut builder = match &c.url {
            Some(url) => {
                let url = match url.strip_prefix("mariadb://") {
                    Some(rest) => format!("mysql://{rest}"),
                    None => url.clone(),
                };
                // The URL is not echoed in the error: it may hold credentials.
                let opts = Opts::from_url(&url).map_err(|e| {
                    config_error(format!("connection.url is not a valid MySQL URL: {e}"))
                })?;
                OptsBuilder::from_opts(opts)
            }
            None => {
                let mut b = OptsBuilder::default();
                if let Some(host) = &c.host {
                    b = b.ip_or_hostname(host.clone());
                }
                if let Some(port) = c.port {
                    b = b.tcp_port(port);
                }
                b.user(c.user.clone()).db_name(c.database.clone())
            }
        };
        if let Some(credentials) = credentials {
            if let Some(user) = &credentials.user {
                builder = builder.user(Some(user.clone()));
            }
            if let Some(password) = &credentials.password {
                builder = builder.pass(Some(password.clone()));
            }
        }
        let has_user = Opts::from(builder.clone()).user().is_some();
        if !has_user {
            builder = builder.user(Some("root"));
        }
        // A loopback host would otherwise be swapped for the server's Unix socket, which
        // sidesteps TLS and the port the user chose.
        builder = builder.prefer_socket(false).stmt_cache_size(8);
        let mode = c.sslmode.unwrap_or(SslMode::Prefer);
        if let Some(path) = &c.ssl_root_cert {
            super::read_root_certs(path).map_err(config_error)?;
        }
        let tls = ssl_opts(mode, c.ssl_root_cert.as_deref());
        Ok(MysqlSource {
            name: source.name.clone(),
            opts: Opts::from(builder),
            tls,
            prefer: mode == SslMode::Prefer,
            statement_timeout: c.statement_timeout.as_deref().and_then(parse_duration),
            held: Arc::default(),
        })
    }

    fn endpoint(&self) -> String {
        format!("{}:{}", self.opts.ip_or_hostname(), self.opts.tcp_port())
    }

    fn user(&self) -> String {
        self.opts.user().unwrap_or_default().to_owned()
    }

    async fn open(&self, tls: Option<&SslOpts>) -> Result<Conn> {
        let opts = OptsBuilder::from_opts(self.opts.clone()).ssl_opts(tls.cloned());
        match tokio::time::timeout(CONNECT_TIMEOUT, Conn::new(opts)).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => Err(self.connect_error(&e)),
            Err(_) => Err(SourceError::Unreachable {
                source_name: self.name.clone(),
                endpoint: self.endpoint(),
                message: format!("no answer within {}s", CONNECT_TIMEOUT.as_secs()),
            }),
        }
    }

    /// A new connection with sluice's session settings: utf8mb4 results (the server converts
    /// every column from its own character set), time zone +00:00 (TIMESTAMP values and
    /// literals are UTC), and the statement timeout.
    async fn connect(&self) -> Result<Conn> {
        let mut conn = match (&self.tls, self.prefer) {
            (None, _) => self.open(None).await?,
            (Some(tls), false) => self.open(Some(tls)).await?,
            (Some(tls), true) => match self.open(Some(tls)).await {
                Ok(conn) => conn,
                Err(SourceError::Tls { message, .. }) => {
                    debug!(source = %self.name, %message, "sslmode prefer: the server has no TLS; connecting without");
                    self.open(None).await?
                }
                Err(e) => return Err(e),
            },
        };
        let setup_error = |e: mysql_async::Error| SourceError::Connect {
            source_name: self.name.clone(),
            message: format!("setting up the session: {e}"),
        };
        conn.query_drop("SET NAMES utf8mb4, time_zone = '+00:00'")
            .await
            .map_err(setup_error)?;
        if let Some(timeout) = self.statement_timeout {
            // MariaDB's max_statement_time (seconds) applies to every statement; MySQL only
            // has max_execution_time (milliseconds, SELECTs), which is all sluice runs.
            let mariadb = format!("SET SESSION max_statement_time = {}", timeout.as_secs_f64());
            if let Err(e) = conn.query_drop(mariadb).await {
                match e {
                    mysql_async::Error::Server(ref s) if s.code == 1193 => {
                        conn.query_drop(format!(
                            "SET SESSION max_execution_time = {}",
                            timeout.as_millis()
                        ))
                        .await
                        .map_err(setup_error)?;
                    }
                    other => return Err(setup_error(other)),
                }
            }
        }
        Ok(conn)
    }

    /// A new connection inside a `REPEATABLE READ` consistent-snapshot read-only transaction.
    async fn begin_snapshot(&self, table: &TableName) -> Result<Conn> {
        let mut conn = self.connect().await?;
        begin_snapshot_on(&mut conn, table).await?;
        Ok(conn)
    }

    /// Tells apart the failures a user fixes differently: credentials, network, TLS.
    fn connect_error(&self, e: &mysql_async::Error) -> SourceError {
        let source_name = self.name.clone();
        let message = my_message(e);
        match e {
            mysql_async::Error::Server(s) if matches!(s.code, 1045 | 1044 | 1698) => {
                SourceError::Auth {
                    source_name,
                    user: self.user(),
                    message,
                }
            }
            mysql_async::Error::Io(mysql_async::IoError::Tls(_))
            | mysql_async::Error::Driver(mysql_async::DriverError::NoClientSslFlagFromServer) => {
                SourceError::Tls {
                    source_name,
                    endpoint: self.endpoint(),
                    message,
                }
            }
            mysql_async::Error::Io(_) => SourceError::Unreachable {
                source_name,
                endpoint: self.endpoint(),
                message,
            },
            _ => SourceError::Connect {
                source_name,
                message,
            },
        }
    }

    fn held_plan(&self, token: Option<&str>) -> Option<Arc<tokio::sync::Mutex<Conn>>> {
        let token = token?;
        self.held.lock().ok()?.get(token)?.upgrade()
    }
}

/// Starts a `REPEATABLE READ` consistent-snapshot read-only transaction on `conn`; the
/// snapshot is taken now.
async fn begin_snapshot_on(conn: &mut Conn, table: &TableName) -> Result<()> {
    for sql in [
        "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ",
        "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY",
    ] {
        conn.query_drop(sql).await.map_err(|e| SourceError::Query {
            table: table.to_string(),
            message: my_message(&e),
        })?;
    }
    Ok(())
}

/// The oldest open InnoDB transaction, other than this session's, that modified rows or holds
/// row locks (it is writing, perhaps before its first row). Server-wide: a session connected to
/// one database can write to a table of another. `trx_started` is written in the server
/// process's own time zone (InnoDB formats it with `localtime_r`, not in the session's zone),
/// so `CONVERT_TZ(…, 'SYSTEM', '+00:00')` turns it into UTC, the zone of sluice's sessions:
/// both the instant and the wall time a `datetime`/`date` cursor's cap follows. It has whole
/// seconds, rounded down, so the cap one microsecond below it is still below the real start.
///
/// InnoDB does not say which tables a transaction wrote, so writers are narrowed to sessions
/// whose current database is the table's (or that have none): a busy application on another
/// database of the same server does not hold this table back. A session that writes this
/// table by a qualified name from another database is not seen; the lookback covers it as
/// before.
const OLDEST_WRITER: &str = "SELECT t.trx_mysql_thread_id, \
     CONVERT_TZ(t.trx_started, 'SYSTEM', '+00:00') \
     FROM information_schema.innodb_trx t \
     LEFT JOIN information_schema.PROCESSLIST p ON p.ID = t.trx_mysql_thread_id \
     WHERE t.trx_mysql_thread_id <> CONNECTION_ID() \
       AND (t.trx_rows_modified > 0 OR t.trx_tables_locked > 0) \
       AND (p.DB IS NULL OR p.DB = COALESCE(?, DATABASE())) \
     ORDER BY t.trx_started LIMIT 1";

/// MySQL and MariaDB refuse `information_schema.innodb_trx` without `PROCESS`.
const ER_SPECIFIC_ACCESS_DENIED: u16 = 1227;

/// Reads the oldest open writer, before the planning snapshot exists (the reasoning is the
/// PostgreSQL source's: a transaction open at the snapshot was seen here or started after
/// this query). InnoDB answers from a buffer refreshed only when more than 0.1 s passed since
/// it was last read
/// (<https://dev.mysql.com/doc/refman/5.7/en/innodb-information-schema-internal-data.html>),
/// so a writer that began in the last tenth of a second may be missing: its stamps are that
/// recent, and the lookback covers them as it covers the gap to the snapshot. Without
/// `PROCESS` the query is refused: the run warns and plans as without the check, as it does
/// for any other failure of it.
async fn check_open_writers(conn: &mut Conn, database: Option<&str>) -> WriterCheck {
    // Both cells as raw values: a typed row would panic on a value it cannot convert.
    let row: std::result::Result<Option<(Value, Value)>, _> =
        conn.exec_first(OLDEST_WRITER, (database,)).await;
    match row {
        Ok(None) => WriterCheck::seen(None),
        Ok(Some((pid, started))) => match (
            scalar(ScalarKind::Int, pid),
            scalar(ScalarKind::Timestamp, started),
        ) {
            (Ok(Some(ScalarValue::Int(pid))), Ok(Some(ScalarValue::Timestamp(utc)))) => {
                WriterCheck::seen(Some(OpenWriter {
                    pid,
                    since: utc.and_utc(),
                    since_local: utc,
                }))
            }
            (Err(message), _) | (_, Err(message)) => {
                WriterCheck::failed(&format!("reading information_schema.innodb_trx: {message}"))
            }
            _ => WriterCheck::failed(
                "information_schema.innodb_trx gave a writer without a connection id or start time",
            ),
        },
        Err(mysql_async::Error::Server(e)) if e.code == ER_SPECIFIC_ACCESS_DENIED => {
            WriterCheck::missing_privilege(Engine::Mysql, None)
        }
        Err(e) => WriterCheck::failed(&format!(
            "reading information_schema.innodb_trx: {}",
            my_message(&e)
        )),
    }
}

/// sslmode → rustls settings, with libpq's meanings: `prefer` and `require` encrypt without
/// checking who answers (`require` with `ssl_root_cert` checks the chain), `verify-ca` checks
/// the chain, `verify-full` also the host name. Without `ssl_root_cert` the chain is checked
/// against the Mozilla roots built into the client (webpki-roots).
fn ssl_opts(mode: SslMode, root_cert: Option<&str>) -> Option<SslOpts> {
    let with_roots = |opts: SslOpts| match root_cert {
        Some(path) => opts
            .with_root_certs(vec![std::path::PathBuf::from(path).into()])
            .with_disable_built_in_roots(true),
        None => opts,
    };
    match mode {
        SslMode::Disable => None,
        SslMode::Prefer => Some(
            SslOpts::default()
                .with_danger_accept_invalid_certs(true)
                .with_danger_skip_domain_validation(true),
        ),
        SslMode::Require => Some(match root_cert {
            Some(_) => with_roots(SslOpts::default()).with_danger_skip_domain_validation(true),
            None => SslOpts::default()
                .with_danger_accept_invalid_certs(true)
                .with_danger_skip_domain_validation(true),
        }),
        SslMode::VerifyCa => {
            Some(with_roots(SslOpts::default()).with_danger_skip_domain_validation(true))
        }
        SslMode::VerifyFull => Some(with_roots(SslOpts::default())),
    }
}

/// The server's message, without anything that could hold a secret (the driver never puts
/// the password in its errors).
pub fn my_message(e: &mysql_async::Error) -> String {
    match e {
        mysql_async::Error::Server(s) => format!("{} (MySQL error {})", s.message, s.code),
        other => other.to_string(),
    }
}

fn table_name(table: &TableConfig) -> Result<TableName> {
    table.table_name().map_err(|message| SourceError::Query {
        table: table.table.clone(),
        message,
    })
}

/// What the catalog says about one table.
struct ResolvedTable {
    columns: Vec<MyColumn>,
    estimated_rows: u64,
}

type ColumnRow = (
    String,
    String,
    String,
    String,
    Option<u64>,
    Option<u64>,
    Option<u64>,
);

async fn resolve_table(conn: &mut Conn, table: &TableName) -> Result<ResolvedTable> {
    let query_error = |e: mysql_async::Error| SourceError::Query {
        table: table.to_string(),
        message: my_message(&e),
    };
    let database: String = match &table.schema {
        Some(schema) => schema.clone(),
        None => {
            let current: Option<Option<String>> = conn
                .query_first("SELECT DATABASE()")
                .await
                .map_err(query_error)?;
            current.flatten().ok_or_else(|| SourceError::Query {
                table: table.to_string(),
                message: "the connection has no database: write the table as database.table or set connection.database".into(),
            })?
        }
    };
    let found: Vec<(String, Option<u64>)> = conn
        .exec(
            "SELECT TABLE_NAME, TABLE_ROWS FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
            (&database, &table.name),
        )
        .await
        .map_err(query_error)?;
    // information_schema compares names case-insensitively; the table is the exact spelling,
    // or the only one (servers with lower_case_table_names store names in lowercase).
    let (stored_name, estimated) = match found.iter().find(|(n, _)| *n == table.name) {
        Some(hit) => hit.clone(),
        None if found.len() == 1 => found[0].clone(),
        None => {
            return Err(SourceError::UnknownTable {
                table: format!("{database}.{}", table.name),
            });
        }
    };
    let rows: Vec<ColumnRow> = conn
        .exec(
            "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, IS_NULLABLE, NUMERIC_PRECISION, NUMERIC_SCALE, DATETIME_PRECISION \
             FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
            (&database, &stored_name),
        )
        .await
        .map_err(query_error)?;
    let columns = rows
        .into_iter()
        .map(
            |(name, data_type, column_type, nullable, precision, scale, datetime_precision)| {
                MyColumn {
                    name,
                    data_type: data_type.to_ascii_lowercase(),
                    column_type,
                    not_null: nullable == "NO",
                    precision,
                    scale,
                    datetime_precision,
                }
            },
        )
        .collect();
    Ok(ResolvedTable {
        columns,
        estimated_rows: estimated.unwrap_or(0),
    })
}

impl CatalogTable for ResolvedTable {
    type Column = MyColumn;
    type Read = ColumnRead;

    fn columns(&self) -> &[MyColumn] {
        &self.columns
    }

    fn column_name(column: &MyColumn) -> &str {
        &column.name
    }

    fn column_type_text(column: &MyColumn) -> &str {
        &column.column_type
    }

    fn read_column(
        &self,
        column: &MyColumn,
        override_type: Option<ColumnTypeOverride>,
    ) -> std::result::Result<ColumnRead, String> {
        column_read(column, override_type)
    }

    fn column_not_null(column: &MyColumn) -> bool {
        column.not_null
    }

    fn read_kind(read: &ColumnRead) -> Option<ScalarKind> {
        read.cast
            .is_none()
            .then(|| read.my_type.scalar_kind())
            .flatten()
    }

    fn read_cast(read: &ColumnRead) -> Option<ReadCast> {
        read.cast
    }
}

/// A typed key value from a binary-protocol result cell.
fn scalar(kind: ScalarKind, value: Value) -> std::result::Result<Option<ScalarValue>, String> {
    let datetime = |y: u16, mo: u8, d: u8, h: u8, mi: u8, s: u8, us: u32| {
        NaiveDate::from_ymd_opt(i32::from(y), u32::from(mo), u32::from(d))
            .and_then(|date| date.and_hms_micro_opt(u32::from(h), u32::from(mi), u32::from(s), us))
            .ok_or_else(|| {
                format!(
                    "{y:04}-{mo:02}-{d:02} is a zero or invalid date, which cannot be a cursor or partition bound; exclude such rows with where"
                )
            })
    };
    Ok(Some(match (kind, value) {
        (_, Value::NULL) => return Ok(None),
        (ScalarKind::Int, Value::Int(n)) => ScalarValue::Int(n),
        (ScalarKind::Int, Value::UInt(n)) => ScalarValue::Int(
            i64::try_from(n).map_err(|_| format!("{n} exceeds a signed 64-bit integer"))?,
        ),
        (ScalarKind::Int, Value::Bytes(text)) => {
            let text = String::from_utf8_lossy(&text);
            ScalarValue::Int(
                text.trim()
                    .parse::<i64>()
                    .map_err(|e| format!("'{text}' is not a 64-bit integer: {e}"))?,
            )
        }
        (ScalarKind::Date, Value::Date(y, mo, d, ..)) => {
            ScalarValue::Date(datetime(y, mo, d, 0, 0, 0, 0)?.date())
        }
        (ScalarKind::Timestamp, Value::Date(y, mo, d, h, mi, s, us)) => {
            ScalarValue::Timestamp(datetime(y, mo, d, h, mi, s, us)?)
        }
        (ScalarKind::TimestampTz, Value::Date(y, mo, d, h, mi, s, us)) => {
            ScalarValue::TimestampTz(NaiveDateTime::and_utc(&datetime(y, mo, d, h, mi, s, us)?))
        }
        (kind, other) => return Err(format!("unexpected {other:?} for a {kind:?} key")),
    }))
}

/// Planning queries on the planning transaction's connection.
struct MyPlanQueries<'a> {
    conn: &'a mut Conn,
}

#[async_trait]
impl PlanQueries for MyPlanQueries<'_> {
    async fn key_extremes(
        &mut self,
        sql: &str,
        kind: ScalarKind,
    ) -> std::result::Result<(Option<ScalarValue>, Option<ScalarValue>, Option<u64>), String> {
        let row: Option<(Value, Value, Option<u64>)> = self
            .conn
            .exec_first(sql, ())
            .await
            .map_err(|e| my_message(&e))?;
        let Some((min, max, rows)) = row else {
            return Ok((None, None, Some(0)));
        };
        Ok((scalar(kind, min)?, scalar(kind, max)?, rows))
    }

    async fn count(&mut self, sql: &str) -> std::result::Result<u64, String> {
        let n: Option<u64> = self
            .conn
            .exec_first(sql, ())
            .await
            .map_err(|e| my_message(&e))?;
        Ok(n.unwrap_or(0))
    }
}

/// The planning connection while the plan holds it; chunks of the same process read on it.
struct HeldPlan {
    conn: Arc<tokio::sync::Mutex<Conn>>,
    token: String,
    registry: HeldPlans,
}

impl Drop for HeldPlan {
    fn drop(&mut self) {
        if let Ok(mut map) = self.registry.lock() {
            map.remove(&self.token);
        }
        // The connection itself closes (rolling the read-only transaction back) once the
        // last chunk still reading on it lets go.
        let _ = &self.conn;
    }
}

#[async_trait]
impl Source for MysqlSource {
    fn engine(&self) -> Engine {
        Engine::Mysql
    }

    async fn gather_facts(
        &self,
        table: &TableConfig,
        window_lower: Option<&ScalarValue>,
    ) -> Result<GatheredFacts> {
        let name = table_name(table)?;
        let mut conn = self.connect().await?;
        // Open writers are read before the snapshot is taken (see check_open_writers).
        let late_writers = if wants_check(table) {
            let check = check_open_writers(&mut conn, name.schema.as_deref()).await;
            // The plan decides whether this matters (not for an integer cursor) and records
            // it among the run's warnings.
            if let Some(unseen) = &check.unseen {
                debug!(table = %name, "{unseen}");
            }
            Some(check)
        } else {
            None
        };
        // One read-only snapshot for every fact the plan is built on.
        begin_snapshot_on(&mut conn, &name).await?;
        let resolved = resolve_table(&mut conn, &name).await?;
        let columns: Vec<String> = match &table.columns {
            Some(columns) => columns.clone(),
            None => resolved.columns.iter().map(|c| c.name.clone()).collect(),
        };
        let reads = resolved.reads(&name, &columns, table)?;
        let casts: BTreeMap<String, ReadCast> = reads
            .iter()
            .filter_map(|(c, r)| r.cast.map(|cast| (c.name.clone(), cast)))
            .collect();
        for key in &table.primary_key {
            resolved.column(&name, key, ColumnRole::PrimaryKey)?;
        }
        let key = gather_key_facts(
            &mut MyPlanQueries { conn: &mut conn },
            Dialect::Mysql,
            &resolved,
            &name,
            table,
            window_lower,
            resolved.estimated_rows,
            late_writers.as_ref(),
        )
        .await?;
        let token = format!(
            "mysql-plan-{}-{}",
            std::process::id(),
            NEXT_TOKEN.fetch_add(1, Ordering::Relaxed)
        );
        let conn = Arc::new(tokio::sync::Mutex::new(conn));
        if let Ok(mut map) = self.held.lock() {
            map.insert(token.clone(), Arc::downgrade(&conn));
        }
        debug!(table = %name, %token, "gathered plan facts");
        Ok(GatheredFacts {
            facts: CatalogFacts {
                columns,
                cursor_kind: key.cursor_kind,
                cursor_max: key.cursor_max,
                partition: key.partition,
                snapshot: Some(token.clone()),
                blocks: None,
                casts,
                warnings: key.warnings,
                late_writers,
            },
            hold: Some(SnapshotHold::new(HeldPlan {
                conn,
                token,
                registry: self.held.clone(),
            })),
        })
    }

    async fn query_text(
        &self,
        table: &TableConfig,
        queries: &[String],
    ) -> Result<Vec<Vec<Vec<Option<String>>>>> {
        let name = table_name(table)?;
        let mut conn = self.begin_snapshot(&name).await?;
        let query_error = |message: String| SourceError::Query {
            table: name.to_string(),
            message,
        };
        let mut answers = Vec::with_capacity(queries.len());
        for sql in queries {
            let rows: Vec<mysql_async::Row> = conn
                .query(sql.as_str())
                .await
                .map_err(|e| query_error(my_message(&e)))?;
            let rows = rows
                .into_iter()
                .map(|mut row| {
                    (0..row.len())
                        .map(|i| match row.take_opt::<Option<String>, usize>(i) {
                            Some(Ok(value)) => Ok(value),
                            Some(Err(e)) => Err(query_error(format!("value {i}: {e}"))),
                            None => Ok(None),
                        })
                        .collect::<Result<Vec<_>>>()
                })
                .collect::<Result<Vec<_>>>()?;
            answers.push(rows);
        }
        Ok(answers)
    }

    async fn chunk_schema(&self, plan: &RunPlan) -> Result<SchemaRef> {
        let name = table_name(&plan.table)?;
        let mut conn = match self.held_plan(plan.snapshot.as_deref()) {
            Some(shared) => ChunkConn::Shared(shared.lock_owned().await),
            None => ChunkConn::Own(self.begin_snapshot(&name).await?),
        };
        let decoder = chunk_decoder(conn.get(), &name, plan).await?;
        Ok(decoder.schema())
    }

    async fn cdc_facts(
        &self,
        table: &TableConfig,
        watermark: Option<u64>,
    ) -> Result<sluice_core::plan::CdcFacts> {
        self.read_cdc_facts(table, watermark).await
    }

    async fn setup_cdc(&self, table: &TableConfig) -> Result<Vec<String>> {
        self.binlog_setup(table).await
    }

    async fn check_cdc(&self, table: &TableConfig) -> Result<Vec<String>> {
        self.check_binlog_prerequisites(table).await
    }

    async fn extract_chunk(&self, plan: &RunPlan, chunk: u32) -> Result<ChunkStream> {
        if plan.reads_changes() {
            return self.extract_binlog_changes(plan).await;
        }
        let name = table_name(&plan.table)?;
        let (select, bound_count) = chunk_queries(plan, &name, chunk)?;
        let mut conn = match self.held_plan(plan.snapshot.as_deref()) {
            Some(shared) => {
                debug!(table = %name, chunk, "chunk reads on the plan's connection and snapshot");
                ChunkConn::Shared(shared.lock_owned().await)
            }
            None => ChunkConn::Own(self.begin_snapshot(&name).await?),
        };
        let decoder = chunk_decoder(conn.get(), &name, plan).await?;
        // With a `where`, the range is counted first without it, in the transaction the rows
        // are read in, so both see the same rows: a read beyond the count escaped its range.
        // Without one the read is exactly the range, and the rows the server sends are
        // counted as they arrive, before decoding (MariaDB's result ends with no count of its
        // own): counting first cost InnoDB a scan of the chunk's index range.
        let (bound_rows, source_count) = if plan.table.filter.is_some() {
            let counted: Option<u64> = conn
                .get()
                .exec_first(bound_count.as_str(), ())
                .await
                .map_err(|e| SourceError::Query {
                    table: name.to_string(),
                    message: format!("counting chunk {chunk}'s rows: {}", my_message(&e)),
                })?;
            (counted.unwrap_or(0), None)
        } else {
            (u64::MAX, Some(SourceCount::default()))
        };
        let schema = decoder.schema();
        let warnings = Warnings::default();
        let (tx, rx) = tokio::sync::mpsc::channel(CHANNEL_DEPTH);
        let reader = ChunkReader {
            table: name.to_string(),
            chunk,
            sql: select,
            decoder,
            warnings: warnings.clone(),
            counted: source_count.clone(),
            tx,
        };
        let abort_opts = self.clone_for_abort();
        tokio::spawn(reader.run(conn, abort_opts));
        let batches = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        })
        .boxed();
        Ok(ChunkStream {
            schema,
            batches,
            warnings,
            bound_rows,
            closed: None,
            cdc_reached: None,
            source_count,
        })
    }
}

/// The decoder of a plan's chunks, from the table's columns as they are now (in `conn`'s
/// snapshot), checked against the plan.
async fn chunk_decoder(conn: &mut Conn, name: &TableName, plan: &RunPlan) -> Result<RowDecoder> {
    let resolved = resolve_table(conn, name).await?;
    let reads = resolved.plan_reads(name, plan)?;
    let columns: Vec<DecodeColumn> = reads
        .into_iter()
        .map(|(c, r)| DecodeColumn {
            nullable: file_nullable(
                c.not_null,
                &r.my_type.arrow_type(),
                plan.table.invalid_dates,
            ),
            name: c.name,
            my_type: r.my_type,
        })
        .collect();
    let row_bytes = estimated_row_bytes(columns.iter().map(|c| c.my_type.arrow_type()));
    Ok(RowDecoder::new(
        &columns,
        plan.table.batch_rows(row_bytes),
        plan.table.invalid_dates,
    ))
}

impl MysqlSource {
    /// What a chunk reader needs to cancel its query from a second connection.
    fn clone_for_abort(&self) -> AbortOpts {
        AbortOpts {
            opts: self.opts.clone(),
            tls: self.tls.clone(),
            prefer: self.prefer,
        }
    }
}

struct AbortOpts {
    opts: Opts,
    tls: Option<SslOpts>,
    prefer: bool,
}

impl AbortOpts {
    /// Best effort: stops the server sending rows nobody will read (otherwise the driver
    /// drains the rest of the result before it lets the connection go).
    async fn kill_query(self, id: u32) {
        let attempt = |tls: Option<SslOpts>| {
            let opts = OptsBuilder::from_opts(self.opts.clone()).ssl_opts(tls);
            tokio::time::timeout(CONNECT_TIMEOUT, Conn::new(opts))
        };
        let mut conn = match attempt(self.tls.clone()).await {
            Ok(Ok(conn)) => conn,
            _ if self.prefer => match attempt(None).await {
                Ok(Ok(conn)) => conn,
                _ => return,
            },
            _ => return,
        };
        if let Err(e) = conn.query_drop(format!("KILL QUERY {id}")).await {
            debug!(error = %e, "cancelling an abandoned chunk query failed");
        }
        let _ = conn.disconnect().await;
    }
}

/// A chunk's connection: its own, or the plan's while the plan holds it.
enum ChunkConn {
    Own(Conn),
    Shared(OwnedMutexGuard<Conn>),
}

impl ChunkConn {
    fn get(&mut self) -> &mut Conn {
        match self {
            ChunkConn::Own(conn) => conn,
            ChunkConn::Shared(guard) => guard,
        }
    }
}

/// Reads one chunk's rows on its own task and hands batches over a bounded channel, so the
/// connection (borrowed by the result while rows stream) never has to live inside the stream.
struct ChunkReader {
    table: String,
    chunk: u32,
    sql: String,
    decoder: RowDecoder,
    warnings: Warnings,
    /// Where the rows received go once the result has ended (no up-front count was made).
    counted: Option<SourceCount>,
    tx: tokio::sync::mpsc::Sender<Result<arrow::record_batch::RecordBatch>>,
}

enum ReadEnd {
    Complete,
    /// The consumer went away (the run failed elsewhere); the query is still running.
    Abandoned,
}

impl ChunkReader {
    async fn run(mut self, mut conn: ChunkConn, abort: AbortOpts) {
        let connection_id = conn.get().id();
        debug!(table = %self.table, chunk = self.chunk, sql = %self.sql, "reading chunk");
        match self.read(conn.get()).await {
            Ok(ReadEnd::Complete) => {
                if let ChunkConn::Own(mut own) = conn {
                    // Ending the read-only transaction politely, then the connection.
                    if let Err(e) = own.query_drop("COMMIT").await {
                        warn!(error = %my_message(&e), "commit after reading a chunk failed");
                    }
                    let _ = own.disconnect().await;
                }
            }
            Ok(ReadEnd::Abandoned) => {
                abort.kill_query(connection_id).await;
            }
            Err(e) => {
                let _ = self.tx.send(Err(e)).await;
            }
        }
    }

    async fn read(&mut self, conn: &mut Conn) -> Result<ReadEnd> {
        let table = self.table.clone();
        let chunk = self.chunk;
        let stream_error = |message: String| SourceError::Stream {
            table: table.clone(),
            chunk,
            message,
        };
        let mut result =
            conn.exec_iter(self.sql.as_str(), ())
                .await
                .map_err(|e| SourceError::Query {
                    table: self.table.clone(),
                    message: my_message(&e),
                })?;
        let mut received = 0u64;
        loop {
            let row = result
                .next()
                .await
                .map_err(|e| stream_error(format!("reading rows: {}", my_message(&e))))?;
            let Some(row) = row else { break };
            received += 1;
            let batch = self
                .decoder
                .push_row(row.unwrap_raw())
                .map_err(|e| stream_error(e.to_string()))?;
            if let Some(batch) = batch {
                self.warnings.add_all(self.decoder.take_warnings());
                if self.tx.send(Ok(batch)).await.is_err() {
                    return Ok(ReadEnd::Abandoned);
                }
            }
        }
        drop(result);
        if let Some(counted) = &self.counted {
            *counted.lock().unwrap_or_else(|e| e.into_inner()) = Some(received);
        }
        let last = self
            .decoder
            .finish()
            .map_err(|e| stream_error(e.to_string()))?;
        // Warnings are complete before the last batch (and the end of the stream) is seen.
        self.warnings.add_all(self.decoder.take_warnings());
        if let Some(batch) = last
            && self.tx.send(Ok(batch)).await.is_err()
        {
            return Ok(ReadEnd::Abandoned);
        }
        Ok(ReadEnd::Complete)
    }
}
