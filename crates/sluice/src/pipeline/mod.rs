//! The pipeline: drives one run of one table through its phases, talking only to ports.
//!
//! The phases are separate calls (`plan_run`, `extract_chunk`, `finalize_run`) so the same
//! code runs as three Lambda functions or, through [`Pipeline::run_table`], in one process.
//! Every call re-reads the run record, so a repeated call (a retried event) is harmless.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use futures::stream::BoxStream;
use sluice_core::catalog::{catalog_table_name, partition_values};
use sluice_core::layout::TableLayout;
use sluice_core::manifest::{Manifest, ManifestColumn};
use sluice_core::plan::{
    PlanError, build_cdc_plan, build_keyset_plan, build_plan, window_lower_bound,
};
use sluice_core::run::{ChunkOutcome, RunKind};
use sluice_core::{RunId, RunRecord, RunStatus, TableConfig};
use thiserror::Error;
use tracing::{Instrument, info, info_span, warn};

use crate::catalog::{Catalog, CatalogError, NoCatalog, TableRegistration};
use crate::sink::parquet::{ChunkFileWriter, MIN_ROW_GROUP_BYTES, ParquetSettings, file_schema};
use crate::sink::{ObjectSink, SinkError, delete_key, list_keys, put_bytes};
use crate::source::{SnapshotHold, Source, SourceError};
use crate::state::slots::{self, SlotError, SlotGuard, SlotTiming};
use crate::state::{SlotHolder, StateError, StateStore};
use crate::warehouse::load::{LoadError, Loader};

mod cleanup;
mod extract;
mod finalize;
mod gold;
mod plan;
mod start;

use extract::AbortOnDrop;
pub use gold::GOLD_CLAIM;
pub use plan::file_schema_of;
pub use start::{LeaseKeeper, RunStart, Started};

#[derive(Debug, Error)]
pub enum PipelineError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Warehouse(#[from] LoadError),
    #[error(transparent)]
    Slot(#[from] SlotError),
    #[error("table {table_key}: no source named '{source_name}' is configured")]
    UnknownSource {
        table_key: String,
        source_name: String,
    },
    #[error("run {run_id}: {message}")]
    Run { run_id: RunId, message: String },
    #[error(
        "table {table_key} takes no key-set runs: key sets find deletes for incremental tables with deletes.mode hard or soft and deletes.keyset (a full load finds them in every run)"
    )]
    NoKeysets { table_key: String },
}

pub type Result<T, E = PipelineError> = std::result::Result<T, E>;

/// How long a lease outlives its last renewal by default: long enough that a renewal every
/// 30 s misses three in a row (a slow state store, a paused laptop) before the table frees,
/// short enough that a dead run blocks its table two minutes, not hours.
pub const DEFAULT_LEASE_TTL: chrono::Duration = chrono::Duration::minutes(2);

/// Tunables of the pipeline, with defaults that suit a laptop and a Lambda alike.
#[derive(Debug, Clone)]
pub struct PipelineOptions {
    /// Leading path of every key in the sink.
    pub prefix: Option<String>,
    pub parquet: ParquetSettings,
    /// How long a table's lease outlives its last renewal. A run in this process renews it
    /// every quarter of this while it works (see [`Pipeline::run_table_with`]), so this is how
    /// soon a run whose process died frees its table, not a bound on a run's length.
    pub lease_ttl: chrono::Duration,
    /// Record this process (host, pid, start) as the holder of the runs it starts, so that
    /// a later `sluice run` on this host sees at once when it is gone. For local runs; off in
    /// Lambda, whose sandboxes serve one invocation after another in the same process.
    pub record_holder: bool,
    /// Batches decoded ahead of the Parquet encoder, so the two overlap on separate cores. One
    /// is enough to keep both busy; each more costs a batch of memory.
    pub prefetch_batches: usize,
    /// How long a source connection slot (`connection.max_connections`) stays held without
    /// renewal. Its holder renews it every third of this while connected, so this is not a
    /// bound on a chunk's length (a local chunk has none) but on how long a holder that died
    /// without releasing blocks its slot; short enough that a crash costs a source one of its
    /// connections for minutes, long enough that two missed renewals still do not lose it.
    pub source_slot_ttl: std::time::Duration,
    /// Longest a plan or chunk waits for a slot of its capped source before it fails, saying
    /// the source stayed busy. Ten minutes outlasts a typical chunk of the runs ahead of it
    /// (so a queue of runs drains instead of failing), yet ends a wait behind runs that are
    /// stuck well within Lambda's 15 minutes.
    pub source_wait: std::time::Duration,
    /// The batch every run this pipeline opens belongs to (one `sluice run`): its gold runs
    /// once they all ended (see [`Pipeline::run_batch_gold`]).
    pub batch_id: Option<String>,
    /// Chunks of a run may be ranges of heap blocks (PostgreSQL 14+, see
    /// [`sluice_core::plan::ChunkRange::Blocks`]), which cost the server one sequential scan
    /// in all where key ranges cost a scan each. Only for a caller that extracts every chunk
    /// while it holds the plan's snapshot ([`Pipeline::run_table_with`] in one process, as the
    /// CLI does); never in Lambda, where each chunk reads a snapshot of its own and a row
    /// updated in between could move from one block range to another.
    pub block_chunks: bool,
}

impl Default for PipelineOptions {
    fn default() -> Self {
        PipelineOptions {
            prefix: None,
            parquet: ParquetSettings::default(),
            lease_ttl: DEFAULT_LEASE_TTL,
            record_holder: false,
            prefetch_batches: 1,
            source_slot_ttl: std::time::Duration::from_secs(120),
            source_wait: std::time::Duration::from_secs(600),
            batch_id: None,
            block_chunks: false,
        }
    }
}

/// A run that has been planned, with the source snapshot the plan was made in. Holding
/// `snapshot` keeps it alive so chunks extracted meanwhile read exactly that state; drop it
/// as soon as extraction is over (it holds a transaction open on the source).
pub struct PlannedRun {
    pub record: RunRecord,
    pub snapshot: Option<SnapshotHold>,
}

/// Planning failed. `run_id` is set when the failure was recorded as a FAILED run.
#[derive(Debug, Error)]
#[error("{error}")]
pub struct PlanFailure {
    pub run_id: Option<RunId>,
    #[source]
    pub error: PipelineError,
}

/// What extracting a chunk did.
#[derive(Debug, Clone)]
pub struct ChunkReport {
    pub outcome: ChunkOutcome,
    /// False when the chunk had been recorded already (a retried or duplicated event).
    pub newly_recorded: bool,
    /// True for exactly one call per run: the one that recorded its last chunk.
    pub is_last: bool,
}

/// Hears about progress, for progress bars and logs. Every method has a no-op default.
pub trait RunObserver: Send + Sync {
    fn planned(&self, _record: &RunRecord) {}
    /// A run whose holder died is carried on (see [`Pipeline::start_run`]).
    fn resumed(&self, _record: &RunRecord) {}
    fn rows_written(&self, _table_key: &str, _rows: u64) {}
    fn chunk_done(&self, _table_key: &str, _chunk: u32, _outcome: &ChunkOutcome) {}
}

/// An observer that ignores everything.
pub struct Quiet;
impl RunObserver for Quiet {}

pub struct Pipeline {
    sources: BTreeMap<String, Arc<dyn Source>>,
    sink: Arc<dyn ObjectSink>,
    state: Arc<dyn StateStore>,
    catalog: Arc<dyn Catalog>,
    warehouse: Option<Arc<Loader>>,
    options: PipelineOptions,
    /// `connection.max_connections` of the sources that have one.
    connection_limits: BTreeMap<String, u32>,
}

impl Pipeline {
    pub fn new(
        sources: BTreeMap<String, Arc<dyn Source>>,
        sink: Arc<dyn ObjectSink>,
        state: Arc<dyn StateStore>,
        options: PipelineOptions,
    ) -> Pipeline {
        Pipeline {
            sources,
            sink,
            state,
            catalog: Arc::new(NoCatalog),
            warehouse: None,
            options,
            connection_limits: BTreeMap::new(),
        }
    }

    /// Holds every source of `sources` that sets `connection.max_connections` to that many
    /// connections at once, counted in the state store across every process that shares it
    /// (each plan and each chunk takes a slot before it connects, and waits while all are
    /// taken). Sources without it are not counted. Without this call no source is.
    pub fn with_connection_limits<'a>(
        mut self,
        sources: impl IntoIterator<Item = &'a sluice_core::SourceConfig>,
    ) -> Pipeline {
        self.connection_limits = sources
            .into_iter()
            .filter_map(|s| Some((s.name.clone(), s.connection.max_connections?)))
            .collect();
        self
    }

    /// A slot of `source` for `holder` when the source is capped (see
    /// [`Pipeline::with_connection_limits`]); `None` when it is not.
    async fn source_slot(&self, source: &str, holder: SlotHolder) -> Result<Option<SlotGuard>> {
        let Some(&slots) = self.connection_limits.get(source) else {
            return Ok(None);
        };
        let timing = SlotTiming {
            ttl: self.options.source_slot_ttl,
            wait: self.options.source_wait,
        };
        Ok(Some(
            slots::acquire(self.state.clone(), source, slots, holder, timing).await?,
        ))
    }

    /// Registers every completed run's files in `catalog` (Glue in AWS). Without it, no
    /// catalog is kept.
    pub fn with_catalog(mut self, catalog: Arc<dyn Catalog>) -> Pipeline {
        self.catalog = catalog;
        self
    }

    /// Loads every run into the warehouse before its watermark moves: COPY into RAW, the
    /// merge into STAGING, the gold procedures. The loader's stage must point at the sink's
    /// `prefix` (files are named relative to it). Without it, runs stop at the catalog.
    pub fn with_warehouse(mut self, loader: Arc<Loader>) -> Pipeline {
        self.warehouse = Some(loader);
        self
    }

    pub fn sink(&self) -> &Arc<dyn ObjectSink> {
        &self.sink
    }

    pub fn state(&self) -> &Arc<dyn StateStore> {
        &self.state
    }

    /// The source `table` reads from.
    pub fn source(&self, table: &TableConfig) -> Result<&Arc<dyn Source>> {
        self.sources
            .get(&table.source)
            .ok_or_else(|| PipelineError::UnknownSource {
                table_key: table.key(),
                source_name: table.source.clone(),
            })
    }

    /// Runs one table start to finish in this process. `Err` means no run was recorded
    /// (e.g. the table is already running); a run that started and failed comes back as a
    /// record with status FAILED and its error.
    pub async fn run_table(
        &self,
        table: &TableConfig,
        observer: &dyn RunObserver,
    ) -> Result<RunRecord> {
        self.run_table_with(table, observer, RunStart::default())
            .await
    }

    /// [`Pipeline::run_table`], started as `start` says: a run whose holder died is resumed
    /// (see [`Pipeline::start_run`]). The table's lease is renewed all along, so it lapses
    /// soon after this process dies.
    pub async fn run_table_with(
        &self,
        table: &TableConfig,
        observer: &dyn RunObserver,
        start: RunStart,
    ) -> Result<RunRecord> {
        // An unknown source is refused before anything is recorded.
        self.source(table)?;
        let started = self.start_run(table, start).await?;
        let run_id = started.record().run_id;
        let _lease = self.keep_lease(table.key(), run_id);
        if let Started::Resumed(record) = &started {
            self.remove_leftovers(record).await;
            observer.resumed(record);
            return self.execute_run(run_id, observer).await;
        }
        let planned = match self.plan_opened_run(table, run_id).await {
            Ok(planned) => planned,
            Err(PlanFailure { error, .. }) => {
                warn!(%run_id, table = %table.key(), %error, "planning failed");
                return self.state.get_run(run_id).await?.ok_or(error);
            }
        };
        observer.planned(&planned.record);
        // A capped source counts the plan's held snapshot as one of its connections, so
        // keeping it while the chunks wait for slots could leave every slot held by a
        // snapshot whose chunks can never start. Its chunks read their own snapshots then,
        // within the plan's cursor window, as they do in Lambda.
        let PlannedRun { record, snapshot } = planned;
        let snapshot = snapshot.filter(|_| !self.connection_limits.contains_key(&table.source));
        let record = self.execute_run(record.run_id, observer).await;
        // The plan's snapshot was needed only while the chunks were read.
        drop(snapshot);
        record
    }

    /// Extracts every chunk of a planned run (up to the configured concurrency), then
    /// finalizes it. Returns the final record, COMPLETED or FAILED.
    pub async fn execute_run(
        &self,
        run_id: RunId,
        observer: &dyn RunObserver,
    ) -> Result<RunRecord> {
        let record = self
            .state
            .get_run_header(run_id)
            .await?
            .ok_or(StateError::RunNotFound(run_id))?;
        let plan = record.plan.as_ref().ok_or_else(|| PipelineError::Run {
            run_id,
            message: "has no plan".into(),
        })?;
        let concurrency =
            plan.table
                .partition
                .as_ref()
                .and_then(|p| p.max_concurrency)
                .unwrap_or(sluice_core::plan::DEFAULT_MAX_CONCURRENCY) as usize;
        let chunks = u32::try_from(plan.chunks.len()).unwrap_or(u32::MAX);
        let results: Vec<(u32, Result<ChunkReport>)> = futures::stream::iter(0..chunks)
            .map(|chunk| async move {
                let sharing = concurrency.min(chunks as usize).max(1);
                (
                    chunk,
                    self.extract_chunk_sharing(run_id, chunk, observer, sharing)
                        .await,
                )
            })
            .buffer_unordered(concurrency.max(1))
            .collect()
            .await;
        let first_error = results
            .into_iter()
            .filter_map(|(chunk, r)| r.err().map(|e| (chunk, e)))
            .min_by_key(|(chunk, _)| *chunk);
        if let Some((chunk, e)) = first_error {
            return self.fail_run(run_id, e.to_string(), Some(chunk)).await;
        }
        match self.finalize_run(run_id).await {
            Ok(record) => Ok(record),
            Err(e) => self.fail_run(run_id, e.to_string(), None).await,
        }
    }

    async fn transition(&self, run_id: RunId, from: RunStatus, to: RunStatus) -> Result<RunRecord> {
        Ok(self
            .state
            .update_run(
                run_id,
                Box::new(move |r| {
                    if r.status != from {
                        return Err(format!("is {}, expected {from}", r.status));
                    }
                    r.transition(to, Utc::now())
                }),
            )
            .await?)
    }
}

/// A plan's snapshot with the source slot of the connection it keeps open.
struct SlotHeldSnapshot {
    _hold: SnapshotHold,
    _slot: SlotGuard,
}

/// Runs `work` while `slot` (if any) is held, failing if the slot is lost first.
async fn held<T>(
    slot: Option<&SlotGuard>,
    work: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    match slot {
        Some(slot) => slot.hold(work).await,
        None => work.await,
    }
}

async fn release(slot: Option<SlotGuard>) {
    if let Some(slot) = slot {
        slot.release().await;
    }
}
