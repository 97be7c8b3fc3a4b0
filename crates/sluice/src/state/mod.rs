//! The `StateStore` port: watermarks, leases and run records.
//!
//! Every store gives the same guarantees: a lease is held by one run at a time; a run record
//! changes only through [`StateStore::update_run`], whose update may refuse (e.g. a status
//! transition that is not allowed) and then changes nothing; the watermark is committed only
//! by the run holding the lease.

pub mod local;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sluice_core::{RunId, RunRecord, ScalarValue};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum StateError {
    #[error("table {table_key} is already running: {run_id}")]
    AlreadyRunning { table_key: String, run_id: RunId },
    #[error("run {run_id} does not hold the lease of {table_key}{}", holder.map(|h| format!(" (held by {h})")).unwrap_or_default())]
    LeaseLost {
        table_key: String,
        run_id: RunId,
        holder: Option<RunId>,
    },
    #[error("run {0} not found")]
    RunNotFound(RunId),
    #[error("run {0} already exists")]
    RunExists(RunId),
    #[error("run {run_id}: {message}")]
    Refused { run_id: RunId, message: String },
    #[error("state store at {location}: {message}")]
    Storage { location: String, message: String },
}

pub type Result<T, E = StateError> = std::result::Result<T, E>;

/// A change to a run record, applied atomically; returning `Err` leaves the record as it was.
pub type RunUpdate = Box<dyn FnOnce(&mut RunRecord) -> Result<(), String> + Send>;

/// Who holds a table's lease, and until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub run_id: RunId,
    pub expires_at: DateTime<Utc>,
}

/// What a store keeps per table.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct TableState {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watermark: Option<ScalarValue>,
    /// The run that committed the watermark.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watermark_run_id: Option<RunId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<Lease>,
}

#[async_trait]
pub trait StateStore: Send + Sync {
    async fn table_state(&self, table_key: &str) -> Result<TableState>;

    /// Takes the table's lease for `run_id` until `expires_at`. A live lease of another run
    /// fails with [`StateError::AlreadyRunning`]; an expired one is taken over and its run
    /// marked FAILED ("lease expired").
    async fn acquire_lease(
        &self,
        table_key: &str,
        run_id: RunId,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<()>;

    /// Gives the lease up if `run_id` holds it; otherwise does nothing.
    async fn release_lease(&self, table_key: &str, run_id: RunId) -> Result<()>;

    async fn create_run(&self, record: &RunRecord) -> Result<()>;

    async fn get_run(&self, run_id: RunId) -> Result<Option<RunRecord>>;

    /// Applies `update` to the stored record atomically and returns the new record.
    async fn update_run(&self, run_id: RunId, update: RunUpdate) -> Result<RunRecord>;

    /// Sets the table's watermark, only if `run_id` still holds the lease.
    async fn commit_watermark(
        &self,
        table_key: &str,
        run_id: RunId,
        watermark: &ScalarValue,
    ) -> Result<()>;

    /// The newest runs first, optionally of one table.
    async fn list_runs(&self, table_key: Option<&str>, limit: usize) -> Result<Vec<RunRecord>>;
}
