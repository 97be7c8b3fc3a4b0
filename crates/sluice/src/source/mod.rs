//! The `Source` port: what the pipeline needs from a database, whatever its engine.

pub mod mysql;
pub mod postgres;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use futures::stream::BoxStream;
use sluice_core::plan::CatalogFacts;
use sluice_core::{Engine, RunPlan, ScalarValue, TableConfig};
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
}

pub type Result<T, E = SourceError> = std::result::Result<T, E>;

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

    /// Streams one chunk of a planned run. Batches follow the plan's column order.
    async fn extract_chunk(&self, plan: &RunPlan, chunk: u32) -> Result<ChunkStream>;
}
