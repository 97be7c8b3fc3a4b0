//! The `Source` port: what the pipeline needs from a database, whatever its engine.

pub mod connect;
pub mod mysql;
pub mod postgres;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use futures::stream::BoxStream;
use sluice_core::late_writers::{WriterCheck, incremental_upper};
use sluice_core::plan::{
    CatalogFacts, CursorWindow, PartitionFacts, ReadCast, key_extremes_sql, null_cursor_count_sql,
};
use sluice_core::{
    ColumnTypeOverride, Dialect, Engine, LoadMode, RunPlan, ScalarKind, ScalarValue, TableConfig,
    TableName,
};
use thiserror::Error;

/// Which config field named a column, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnRole {
    Columns,
    PrimaryKey,
    Cursor,
    PartitionColumn,
}

impl ColumnRole {
    pub fn field(self) -> &'static str {
        match self {
            ColumnRole::Columns => "columns",
            ColumnRole::PrimaryKey => "primary_key",
            ColumnRole::Cursor => "load.cursor",
            ColumnRole::PartitionColumn => "partition.column",
        }
    }
}

#[derive(Debug, Error)]
pub enum SourceError {
    #[error("source '{source_name}': cannot connect: {message}")]
    Connect {
        source_name: String,
        message: String,
    },
    #[error("source '{source_name}': {message}")]
    Config {
        source_name: String,
        message: String,
    },
    #[error(
        "source '{source_name}': authentication failed for user '{user}': {message} (check the password or secret)"
    )]
    Auth {
        source_name: String,
        user: String,
        message: String,
    },
    #[error(
        "source '{source_name}': cannot reach {endpoint}: {message} (check host, port, network and security groups)"
    )]
    Unreachable {
        source_name: String,
        endpoint: String,
        message: String,
    },
    #[error(
        "source '{source_name}': TLS with {endpoint} failed: {message} (check sslmode and ssl_root_cert)"
    )]
    Tls {
        source_name: String,
        endpoint: String,
        message: String,
    },
    #[error("table {table} does not exist (or is not visible to the connecting user)")]
    UnknownTable { table: String },
    #[error("table {table}: {} '{column}' is not a column of the table (columns: {known})", role.field())]
    UnknownColumn {
        table: String,
        column: String,
        role: ColumnRole,
        known: String,
    },
    #[error("table {table}: column '{column}' has type {type_text}: {reason}")]
    UnsupportedType {
        table: String,
        column: String,
        type_text: String,
        reason: String,
    },
    #[error("table {table}: {} '{column}' has type {type_text}; it must be an integer, date, timestamp or timestamptz column", role.field())]
    UnsupportedKeyType {
        table: String,
        column: String,
        role: ColumnRole,
        type_text: String,
    },
    #[error(
        "table {table}: column '{column}' changed type since the run was planned ({message}); run again"
    )]
    ChangedSincePlan {
        table: String,
        column: String,
        message: String,
    },
    #[error("table {table}: query failed: {message}")]
    Query { table: String, message: String },
    #[error("table {table}, chunk {chunk}: {message}")]
    Stream {
        table: String,
        chunk: u32,
        message: String,
    },
    /// A chunk that may only be read in the plan's snapshot found it ended.
    #[error("table {table}: the plan's snapshot has ended")]
    SnapshotGone { table: String },
}

pub type Result<T, E = SourceError> = std::result::Result<T, E>;

impl SourceError {
    /// The database refused the credentials (PostgreSQL SQLSTATE 28P01/28000, MySQL 1045,
    /// 1044, 1698): what a rotated password looks like to a connection made with the old one,
    /// and the one failure that reading the secret again can cure.
    pub fn is_auth(&self) -> bool {
        matches!(self, SourceError::Auth { .. })
    }
}

/// A source table as its catalog describes it. Each engine says how to read one column; the
/// lookups and checks every engine shares (unknown columns, overrides, usable key types) are
/// written once here.
pub(crate) trait CatalogTable {
    type Column: Clone;
    type Read;

    fn columns(&self) -> &[Self::Column];
    fn column_name(column: &Self::Column) -> &str;
    /// The type as the catalog prints it, for messages.
    fn column_type_text(column: &Self::Column) -> &str;
    /// How a column is read, honouring a `column_types` override; `Err` is the reason it
    /// cannot be.
    fn read_column(
        &self,
        column: &Self::Column,
        override_type: Option<ColumnTypeOverride>,
    ) -> std::result::Result<Self::Read, String>;
    /// The kind a column read this way has as a cursor or partition column, if any.
    fn read_kind(read: &Self::Read) -> Option<ScalarKind>;
    /// The cast the column is read through, if any (a plan records each).
    fn read_cast(read: &Self::Read) -> Option<ReadCast>;
    fn column_not_null(column: &Self::Column) -> bool;

    fn column(&self, table: &TableName, name: &str, role: ColumnRole) -> Result<&Self::Column> {
        self.columns()
            .iter()
            .find(|c| Self::column_name(c) == name)
            .ok_or_else(|| SourceError::UnknownColumn {
                table: table.to_string(),
                column: name.to_owned(),
                role,
                known: self
                    .columns()
                    .iter()
                    .map(|c| Self::column_name(c))
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    fn read(
        &self,
        table: &TableName,
        column: &Self::Column,
        config: &TableConfig,
    ) -> Result<Self::Read> {
        let name = Self::column_name(column);
        self.read_column(column, config.column_types.get(name).copied())
            .map_err(|reason| SourceError::UnsupportedType {
                table: table.to_string(),
                column: name.to_owned(),
                type_text: Self::column_type_text(column).to_owned(),
                reason,
            })
    }

    /// How each selected column is read, in the requested order.
    fn reads(
        &self,
        table: &TableName,
        names: &[String],
        config: &TableConfig,
    ) -> Result<Vec<(Self::Column, Self::Read)>> {
        names
            .iter()
            .map(|name| {
                let column = self.column(table, name, ColumnRole::Columns)?;
                Ok((column.clone(), self.read(table, column, config)?))
            })
            .collect()
    }

    /// How each of a plan's columns is read now, refused when a column's read changed since
    /// the plan (its type did, and with it the cast the files were planned with).
    fn plan_reads(
        &self,
        table: &TableName,
        plan: &RunPlan,
    ) -> Result<Vec<(Self::Column, Self::Read)>> {
        let reads = self.reads(table, &plan.columns, &plan.table)?;
        for (column, read) in &reads {
            let name = Self::column_name(column);
            if Self::read_cast(read) != plan.casts.get(name).copied() {
                return Err(SourceError::ChangedSincePlan {
                    table: table.to_string(),
                    column: name.to_owned(),
                    message: format!("now {}", Self::column_type_text(column)),
                });
            }
        }
        Ok(reads)
    }

    /// A cursor or partition column and its kind; a column of any other type is an error
    /// naming the field that chose it.
    fn key_kind(
        &self,
        table: &TableName,
        name: &str,
        role: ColumnRole,
        config: &TableConfig,
    ) -> Result<(ScalarKind, &Self::Column)> {
        let column = self.column(table, name, role)?;
        let kind = self
            .read(table, column, config)
            .ok()
            .and_then(|r| Self::read_kind(&r));
        kind.map(|k| (k, column))
            .ok_or_else(|| SourceError::UnsupportedKeyType {
                table: table.to_string(),
                column: name.to_owned(),
                role,
                type_text: Self::column_type_text(column).to_owned(),
            })
    }
}

/// The planning queries, run on an engine's connection inside the plan's snapshot.
#[async_trait]
pub(crate) trait PlanQueries: Send {
    /// Runs a `key_extremes_sql` query: min and max read as `kind`, and the count if asked.
    /// `Err` is the engine's message.
    async fn key_extremes(
        &mut self,
        sql: &str,
        kind: ScalarKind,
    ) -> std::result::Result<(Option<ScalarValue>, Option<ScalarValue>, Option<u64>), String>;

    async fn count(&mut self, sql: &str) -> std::result::Result<u64, String>;
}

/// What planning learns about the cursor and partition columns.
pub(crate) struct KeyFacts {
    pub cursor_kind: Option<ScalarKind>,
    pub cursor_max: Option<ScalarValue>,
    pub partition: Option<PartitionFacts>,
    pub warnings: BTreeMap<String, u64>,
}

/// The cursor's upper bound, the partition column's range and row count (within the
/// incremental window, so chunking follows the rows the run reads), and the count of rows an
/// incremental run skips for a NULL cursor. The same decisions for every engine.
/// `late_writers` is what the source saw of open writers: the window the partition facts
/// cover is held below the oldest, as the plan's will be.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn gather_key_facts<T: CatalogTable + Sync>(
    queries: &mut dyn PlanQueries,
    dialect: Dialect,
    resolved: &T,
    name: &TableName,
    table: &TableConfig,
    window_lower: Option<&ScalarValue>,
    estimated_rows: u64,
    late_writers: Option<&WriterCheck>,
) -> Result<KeyFacts> {
    let filter = table.filter.as_deref();
    let query_error = |column: &str| {
        let table = name.to_string();
        let column = column.to_owned();
        move |message: String| SourceError::Query {
            table,
            message: format!("reading min/max of '{column}': {message}"),
        }
    };
    let (cursor_kind, cursor_max) = match &table.load.cursor {
        Some(cursor) => {
            let (kind, _) = resolved.key_kind(name, cursor, ColumnRole::Cursor, table)?;
            let sql = key_extremes_sql(dialect, name, cursor, kind, false, filter, None);
            let (_, max, _) = queries
                .key_extremes(&sql, kind)
                .await
                .map_err(query_error(cursor))?;
            (Some(kind), max)
        }
        None => (None, None),
    };
    let incremental = table.load.mode == LoadMode::Incremental;
    let window = match (incremental, &table.load.cursor, cursor_kind, &cursor_max) {
        (true, Some(cursor), Some(kind), Some(max)) => Some(CursorWindow {
            column: cursor.clone(),
            // A watermark of another kind (the cursor column changed) is reported by the
            // planner; here it just does not narrow the window.
            lower: window_lower.filter(|l| l.kind() == kind).cloned(),
            // The planner also keeps the bound from falling below the stored watermark, which
            // this code does not know; chunk ranges stay complete either way (the first and
            // last are open), only the row estimate may then be low.
            upper: incremental_upper(
                kind,
                Some(max),
                None,
                late_writers.and_then(|c| c.oldest.as_ref()),
            )
            .upper,
            include_nulls: false,
            hold: None,
        }),
        _ => None,
    };
    let partition = match &table.partition {
        Some(p) => {
            let (kind, column) =
                resolved.key_kind(name, &p.column, ColumnRole::PartitionColumn, table)?;
            let windowed = window.is_some();
            let sql = key_extremes_sql(
                dialect,
                name,
                &p.column,
                kind,
                windowed,
                filter,
                window.as_ref(),
            );
            let (min, max, rows) = queries
                .key_extremes(&sql, kind)
                .await
                .map_err(query_error(&p.column))?;
            Some(PartitionFacts {
                kind,
                min,
                max,
                nullable: !T::column_not_null(column),
                estimated_rows: rows.unwrap_or(estimated_rows),
            })
        }
        None => None,
    };
    let mut warnings = BTreeMap::new();
    if let (true, false, Some(cursor)) = (
        incremental,
        table.load.include_null_cursor,
        &table.load.cursor,
    ) && !T::column_not_null(resolved.column(name, cursor, ColumnRole::Cursor)?)
    {
        let sql = null_cursor_count_sql(dialect, name, cursor, filter);
        let skipped = queries
            .count(&sql)
            .await
            .map_err(|message| SourceError::Query {
                table: name.to_string(),
                message,
            })?;
        if skipped > 0 {
            warnings.insert(
                format!("{cursor}: rows with a NULL cursor not read (set load.include_null_cursor to read them)"),
                skipped,
            );
        }
    }
    Ok(KeyFacts {
        cursor_kind,
        cursor_max,
        partition,
        warnings,
    })
}

/// Whether a column's values may be NULL in the files: a nullable column, or one of dates
/// or timestamps while `invalid_dates: null` writes the values the warehouse cannot hold
/// (PostgreSQL's infinities, MySQL's zero dates) as NULL, whatever the catalog declares.
pub(crate) fn file_nullable(
    not_null: bool,
    arrow_type: &arrow::datatypes::DataType,
    invalid_dates: sluice_core::InvalidDates,
) -> bool {
    use arrow::datatypes::DataType as D;
    !not_null
        || (invalid_dates == sluice_core::InvalidDates::Null
            && matches!(arrow_type, D::Date32 | D::Timestamp(_, _)))
}

/// A rough in-memory width of a row of these Arrow types, to size batches by bytes.
pub fn estimated_row_bytes(types: impl IntoIterator<Item = arrow::datatypes::DataType>) -> usize {
    use arrow::datatypes::DataType as D;
    types
        .into_iter()
        .map(|t| match t {
            D::Boolean | D::Int8 | D::UInt8 => 1,
            D::Int16 | D::UInt16 => 2,
            D::Int32 | D::UInt32 | D::Float32 | D::Date32 | D::Time32(_) => 4,
            D::Int64 | D::UInt64 | D::Float64 | D::Date64 | D::Time64(_) | D::Timestamp(_, _) => 8,
            D::Decimal128(_, _) => 16,
            // Offsets plus a guess at typical text.
            D::Utf8 | D::Binary => 36,
            D::List(_) => 64,
            _ => 16,
        })
        .sum::<usize>()
        .max(1)
}

/// Refuses a source whose credentials live in Secrets Manager when nobody resolved them
/// (a local run), before any connection is tried.
pub(crate) fn require_resolved_credentials(
    source: &sluice_core::SourceConfig,
    credentials: Option<&Credentials>,
) -> Result<()> {
    if source.connection.secret_arn.is_some() && credentials.is_none() {
        return Err(SourceError::Config {
            source_name: source.name.clone(),
            message: "connection.secret_arn is resolved only when running on AWS; for a local run give url or host/database (and password_env)".into(),
        });
    }
    Ok(())
}

/// Reads `connection.ssl_root_cert`: at least one PEM certificate, or an error naming the
/// field and the file, so a wrong path fails at configuration, not at the first connection.
pub(crate) fn read_root_certs(
    path: &str,
) -> std::result::Result<Vec<rustls::pki_types::CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject;
    let certs: Vec<_> = rustls::pki_types::CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("connection.ssl_root_cert {path}: {e}"))?
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| format!("connection.ssl_root_cert {path}: {e}"))?;
    if certs.is_empty() {
        return Err(format!(
            "connection.ssl_root_cert {path}: no PEM certificates in it"
        ));
    }
    Ok(certs)
}

/// Credentials resolved outside the config (Secrets Manager, or `password_env` locally).
#[derive(Clone, Default)]
pub struct Credentials {
    pub user: Option<String>,
    pub password: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Counted values that were written differently from the source (e.g. infinity as NULL), by
/// `column: reason`. Shared between a chunk's stream and whoever reports on the chunk.
#[derive(Debug, Clone, Default)]
pub struct Warnings(Arc<Mutex<BTreeMap<String, u64>>>);

impl Warnings {
    pub fn add_all(&self, more: BTreeMap<String, u64>) {
        if more.is_empty() {
            return;
        }
        if let Ok(mut map) = self.0.lock() {
            for (k, v) in more {
                *map.entry(k).or_insert(0) += v;
            }
        }
    }

    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.0.lock().map(|m| m.clone()).unwrap_or_default()
    }
}

/// Keeps a source-side snapshot alive while held (for PostgreSQL, the planning transaction
/// that exported it stays open), so chunks read exactly what the plan saw. Dropping it ends
/// the snapshot; chunks then read their own snapshots, bounded by the plan's cursor window.
pub struct SnapshotHold {
    _held: Box<dyn std::any::Any + Send + Sync>,
}

impl SnapshotHold {
    pub fn new(inner: impl std::any::Any + Send + Sync) -> SnapshotHold {
        SnapshotHold {
            _held: Box::new(inner),
        }
    }
}

impl std::fmt::Debug for SnapshotHold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SnapshotHold")
    }
}

/// What planning learned, and the snapshot it learned it in.
pub struct GatheredFacts {
    pub facts: CatalogFacts,
    pub hold: Option<SnapshotHold>,
}

/// The batches of one chunk, with their schema known before the first batch arrives.
pub struct ChunkStream {
    pub schema: SchemaRef,
    pub batches: BoxStream<'static, Result<RecordBatch>>,
    pub warnings: Warnings,
    /// The rows of the chunk's range within the run's window, counted in the snapshot the
    /// batches are read from, without the user's `where` (see
    /// [`sluice_core::plan::chunk_bound_count_sql`]): the chunk can never rightly read more.
    pub bound_rows: u64,
    /// The rows the source says the chunk's read sent, filled in when `batches` ends, for a
    /// source that counts its own read (PostgreSQL's `COPY <rows>` tag) instead of counting
    /// the range up front: the count then costs the source nothing. `None` when the source
    /// does not; `bound_rows` is then the count.
    pub source_count: Option<SourceCount>,
    /// Resolves once the chunk's connection to the source is closed, after `batches` is
    /// dropped: whoever counts the source's connections (`connection.max_connections`) frees
    /// the chunk's slot only then, so the next reader never overlaps the closing one. `None`
    /// when the source cannot tell.
    pub closed: Option<futures::future::BoxFuture<'static, ()>>,
    /// A CDC chunk's end in the log, set once `batches` has ended (see
    /// [`sluice_core::run::ChunkOutcome::cdc_reached`]); `None` for reads of rows.
    pub cdc_reached: Option<CdcReached>,
}

/// Where a CDC read ended, filled in by the stream when it ends.
pub type CdcReached = std::sync::Arc<std::sync::Mutex<Option<u64>>>;

/// How many rows a read sent by the source's own count, filled in by the stream when it ends.
pub type SourceCount = std::sync::Arc<std::sync::Mutex<Option<u64>>>;

/// The `SELECT` that reads chunk `chunk` of `plan` and the query counting its bound (see
/// [`ChunkStream::bound_rows`]), or the error saying the plan has no such chunk.
pub(crate) fn chunk_queries(
    plan: &RunPlan,
    table: &TableName,
    chunk: u32,
) -> Result<(String, String)> {
    let index = chunk as usize;
    plan.chunk_select(index)
        .zip(plan.chunk_bound_count(index))
        .ok_or_else(|| SourceError::Stream {
            table: table.to_string(),
            chunk,
            message: format!(
                "the plan has {} chunks; there is no chunk {chunk}",
                plan.chunks.len()
            ),
        })
}

/// A database the pipeline can plan against and extract from.
#[async_trait]
pub trait Source: Send + Sync {
    fn engine(&self) -> Engine;

    /// Reads what planning needs from the catalog and the data, inside one consistent
    /// snapshot: the columns (checked against the config), the cursor's upper bound, the
    /// partition column's range. Fails with a clear error for unknown tables and columns and
    /// for types sluice cannot read exactly. `window_lower` is the exclusive lower bound of an
    /// incremental run's cursor window: partition ranges and row counts then cover only the
    /// rows the run will read.
    async fn gather_facts(
        &self,
        table: &TableConfig,
        window_lower: Option<&ScalarValue>,
    ) -> Result<GatheredFacts>;

    /// A CDC table's log positions (see [`sluice_core::plan::CdcFacts`]), after moving its
    /// slot up to `watermark`; read before the snapshot of the table's first run is taken.
    /// The default refuses: only engines that read a change log have them.
    async fn cdc_facts(
        &self,
        table: &TableConfig,
        watermark: Option<u64>,
    ) -> Result<sluice_core::plan::CdcFacts> {
        let _ = watermark;
        Err(SourceError::Query {
            table: table.table.clone(),
            message: "this source cannot read a change log (load.mode: cdc)".into(),
        })
    }

    /// Creates what a CDC table reads its changes through, where missing (`sluice cdc
    /// setup`); returns what it did. The default refuses.
    async fn setup_cdc(&self, table: &TableConfig) -> Result<Vec<String>> {
        Err(SourceError::Query {
            table: table.table.clone(),
            message: "this source cannot read a change log (load.mode: cdc)".into(),
        })
    }

    /// What keeps a CDC table from running, one line each; empty when it is ready (`sluice
    /// cdc check`). Changes nothing. The default refuses.
    async fn check_cdc(&self, table: &TableConfig) -> Result<Vec<String>> {
        Err(SourceError::Query {
            table: table.table.clone(),
            message: "this source cannot read a change log (load.mode: cdc)".into(),
        })
    }

    /// Streams one chunk of a planned run. Batches follow the plan's column order.
    async fn extract_chunk(&self, plan: &RunPlan, chunk: u32) -> Result<ChunkStream>;

    /// The schema chunk 0 of `plan` is read with, without reading or counting a row. The
    /// default opens the chunk; engines override it to skip the count.
    async fn chunk_schema(&self, plan: &RunPlan) -> Result<SchemaRef> {
        Ok(self.extract_chunk(plan, 0).await?.schema)
    }

    /// Runs `queries` over `table`, all in one read-only snapshot, each answering rows of
    /// text values (`sluice validate`'s metrics and row hashes). The default refuses: only
    /// the engines' adapters can run SQL.
    async fn query_text(
        &self,
        table: &TableConfig,
        queries: &[String],
    ) -> Result<Vec<Vec<Vec<Option<String>>>>> {
        let _ = queries;
        Err(SourceError::Query {
            table: table.table.clone(),
            message: "this source cannot run aggregate queries".into(),
        })
    }
}
