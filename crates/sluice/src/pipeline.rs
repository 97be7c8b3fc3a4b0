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
use sluice_core::manifest::{MANIFEST_VERSION, Manifest, ManifestColumn};
use sluice_core::plan::{PlanError, build_plan, window_lower_bound};
use sluice_core::run::ChunkOutcome;
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
}

pub type Result<T, E = PipelineError> = std::result::Result<T, E>;

/// Tunables of the pipeline, with defaults that suit a laptop and a Lambda alike.
#[derive(Debug, Clone)]
pub struct PipelineOptions {
    /// Leading path of every key in the sink.
    pub prefix: Option<String>,
    pub parquet: ParquetSettings,
    /// How long a run may hold its table's lease before another run may take it over.
    pub lease_ttl: chrono::Duration,
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
}

impl Default for PipelineOptions {
    fn default() -> Self {
        PipelineOptions {
            prefix: None,
            parquet: ParquetSettings::default(),
            lease_ttl: chrono::Duration::hours(2),
            prefetch_batches: 1,
            source_slot_ttl: std::time::Duration::from_secs(120),
            source_wait: std::time::Duration::from_secs(600),
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

    fn source(&self, table: &TableConfig) -> Result<&Arc<dyn Source>> {
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
        let planned = match self.plan_run(table).await {
            Ok(planned) => planned,
            Err(PlanFailure {
                run_id: Some(run_id),
                error,
            }) => {
                warn!(%run_id, table = %table.key(), %error, "planning failed");
                return self.state.get_run(run_id).await?.ok_or(error);
            }
            Err(PlanFailure {
                run_id: None,
                error,
            }) => return Err(error),
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
            .get_run(run_id)
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

    /// Takes the table's lease, gathers catalog facts in one snapshot and records the plan.
    /// On failure after the run was recorded, the run is FAILED and the error carries its id.
    pub async fn plan_run(&self, table: &TableConfig) -> Result<PlannedRun, PlanFailure> {
        self.plan_run_with(table, false).await
    }

    /// [`Pipeline::plan_run`]; with `full_reload` an incremental table is read whole, as if
    /// it had no watermark, and the run still commits the new watermark when it completes.
    pub async fn plan_run_with(
        &self,
        table: &TableConfig,
        full_reload: bool,
    ) -> Result<PlannedRun, PlanFailure> {
        let unrecorded = |error: PipelineError| PlanFailure {
            run_id: None,
            error,
        };
        // An unknown source is refused before anything is recorded.
        self.source(table).map_err(unrecorded)?;
        let now = Utc::now();
        let record = self
            .open_run(&table.key(), full_reload, now, now + self.options.lease_ttl)
            .await
            .map_err(unrecorded)?;
        self.plan_opened_run(table, record.run_id).await
    }

    /// Takes the table's lease until `lease_until` and records a new run in PLANNED, without
    /// touching the source: the first half of planning, cheap and bounded (a few state
    /// writes), so an HTTP trigger can do it inside its answer and leave the source's part to
    /// [`Pipeline::plan_opened_run`] elsewhere. A lease shorter than the lease TTL marks the
    /// run `planning_until` then: if nobody plans it by that time, the table is free again.
    /// `Err` means nothing was recorded.
    pub async fn open_run(
        &self,
        table_key: &str,
        full_reload: bool,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<RunRecord> {
        let run_id = RunId::at(now);
        let taken_over = self
            .state
            .acquire_lease(table_key, run_id, now, lease_until)
            .await?;
        if let Some(crashed) = taken_over {
            self.clean_up_taken_over(crashed, run_id).await;
        }
        let opened = async {
            let table_state = self.state.table_state(table_key).await?;
            let mut record = RunRecord::new(run_id, table_key.to_owned(), now);
            record.watermark_before = table_state.watermark;
            record.full_reload = full_reload;
            self.state.create_run(&record).await?;
            Ok::<_, PipelineError>(record)
        }
        .await;
        if opened.is_err() {
            let _ = self.state.release_lease(table_key, run_id).await;
        }
        opened
    }

    /// After taking over the lease of `crashed` (its holder died; the store marked it FAILED):
    /// counts its failure as `fail_run` would (the `run failed` line the alarm counts) and
    /// removes what it wrote from the table's partition directory, where Glue, Athena and
    /// Spectrum readers would otherwise see its rows. Best effort: the new run goes on.
    async fn clean_up_taken_over(&self, crashed: RunId, by: RunId) {
        let record = match self.state.get_run(crashed).await {
            Ok(Some(record)) => record,
            Ok(None) => return,
            Err(e) => {
                warn!(%crashed, error = %e, "reading the run whose lease expired failed; its files stay");
                return;
            }
        };
        if record.status != RunStatus::Failed {
            return;
        }
        let message = record
            .error
            .as_ref()
            .map_or("lease expired", |e| e.message.as_str());
        warn!(run_id = %crashed, table = %record.table_key, taken_over_by = %by, error = %message, "run failed");
        if let Some(plan) = &record.plan {
            self.remove_run_files(crashed, plan, &BTreeSet::new(), true)
                .await;
        }
    }

    /// Plans a run [`Pipeline::open_run`] recorded: gathers catalog facts in one snapshot and
    /// records the plan, unless the run is no longer PLANNED without a plan (it was taken
    /// over, failed, or planned by a duplicate). Any failure marks the run FAILED and the
    /// error carries its id.
    pub async fn plan_opened_run(
        &self,
        table: &TableConfig,
        run_id: RunId,
    ) -> Result<PlannedRun, PlanFailure> {
        let key = table.key();
        let span = info_span!("plan", %run_id, table = %key);
        async {
            let planned = async {
                let record = self
                    .state
                    .get_run(run_id)
                    .await?
                    .ok_or(StateError::RunNotFound(run_id))?;
                if record.status != RunStatus::Planned || record.plan.is_some() {
                    return Err(PipelineError::Run {
                        run_id,
                        message: format!(
                            "is {}{}; it is not planned again",
                            record.status,
                            if record.plan.is_some() {
                                " with a plan"
                            } else {
                                ""
                            }
                        ),
                    });
                }
                let source = self.source(table)?;
                // The CLI and the functions check their settings before anything runs; this
                // catches a pipeline built with a bad prefix by any other caller, as a FAILED
                // run rather than keys nobody can load.
                if let Some(prefix) = &self.options.prefix {
                    sluice_core::output::check_prefix(prefix).map_err(|e| PipelineError::Run {
                        run_id,
                        message: format!("output prefix '{prefix}' {e}"),
                    })?;
                }
                let watermark = if record.full_reload {
                    None
                } else {
                    record.watermark_before.as_ref()
                };
                let lower = window_lower_bound(table, watermark)?;
                // Tests make planning slow or hang here (FAILPOINTS=plan-before-source=1*sleep(…)).
                fail::fail_point!("plan-before-source");
                let slot = self
                    .source_slot(&table.source, SlotHolder::plan(run_id))
                    .await?;
                let gathered = held(slot.as_ref(), async {
                    Ok(source.gather_facts(table, lower.as_ref()).await?)
                })
                .await;
                let gathered = match gathered {
                    Ok(gathered) => gathered,
                    Err(e) => {
                        release(slot).await;
                        return Err(e);
                    }
                };
                let facts = gathered.facts;
                // The plan's snapshot keeps its connection open: it keeps the slot too, and
                // whoever drops the snapshot gives both back.
                let snapshot = match (gathered.hold, slot) {
                    (Some(hold), Some(slot)) => Some(SnapshotHold::new(SlotHeldSnapshot {
                        _hold: hold,
                        _slot: slot,
                    })),
                    (hold, slot) => {
                        release(slot).await;
                        hold
                    }
                };
                // The run's start time places its files, whenever it is planned.
                let plan = build_plan(
                    run_id,
                    source.engine(),
                    record.created_at,
                    table,
                    watermark,
                    facts,
                )?;
                info!(chunks = plan.chunks.len(), "planned");
                let record = self
                    .state
                    .update_run(
                        run_id,
                        Box::new(move |r| {
                            // A planner that outlived its lease finds its run failed (taken
                            // over, or abandoned): its plan must not revive it.
                            if r.status != RunStatus::Planned || r.plan.is_some() {
                                return Err(format!(
                                    "is {}{}; this plan is not recorded",
                                    r.status,
                                    if r.plan.is_some() {
                                        " and planned already"
                                    } else {
                                        ""
                                    }
                                ));
                            }
                            r.plan = Some(plan);
                            Ok(())
                        }),
                    )
                    .await?;
                Ok::<_, PipelineError>(PlannedRun { record, snapshot })
            }
            .await;
            match planned {
                Ok(planned) => Ok(planned),
                Err(error) => {
                    // A duplicate planner that lost the race to record the plan leaves the
                    // run to the one that won.
                    let planned_elsewhere = matches!(
                        self.state.get_run(run_id).await,
                        Ok(Some(r)) if r.plan.is_some() && !r.status.is_terminal()
                    );
                    if !planned_elsewhere
                        && let Err(fail_error) =
                            self.fail_run(run_id, error.to_string(), None).await
                    {
                        warn!(error = %fail_error, "recording the failed plan failed");
                    }
                    Err(PlanFailure {
                        run_id: Some(run_id),
                        error,
                    })
                }
            }
        }
        .instrument(span)
        .await
    }

    /// Extracts one chunk into Parquet files and records its outcome. A chunk already
    /// recorded is not extracted again: its recorded outcome is returned.
    ///
    /// `is_last` in the report is true for exactly one call per run, the one whose chunk
    /// completed the run, however often chunks are retried or delivered twice: that caller
    /// hands the run on to finalize (the Lambda extract function invokes finalize).
    pub async fn extract_chunk(
        &self,
        run_id: RunId,
        chunk: u32,
        observer: &dyn RunObserver,
    ) -> Result<ChunkReport> {
        self.extract_chunk_sharing(run_id, chunk, observer, 1).await
    }

    /// Extracts a chunk while `sharing` chunks run at once in this process: the row-group
    /// buffer, the writer's largest allocation, is divided among them so memory stays within
    /// one chunk's budget however many run.
    async fn extract_chunk_sharing(
        &self,
        run_id: RunId,
        chunk: u32,
        observer: &dyn RunObserver,
        sharing: usize,
    ) -> Result<ChunkReport> {
        let record = self
            .state
            .get_run(run_id)
            .await?
            .ok_or(StateError::RunNotFound(run_id))?;
        if let Some(done) = record.chunks.get(&chunk) {
            return Ok(ChunkReport {
                outcome: done.clone(),
                newly_recorded: false,
                is_last: false,
            });
        }
        let plan = record.plan.clone().ok_or_else(|| PipelineError::Run {
            run_id,
            message: "has no plan".into(),
        })?;
        if !matches!(record.status, RunStatus::Planned | RunStatus::Extracting) {
            return Err(PipelineError::Run {
                run_id,
                message: format!("is {}; chunk {chunk} is not extracted", record.status),
            });
        }
        let key = record.table_key.clone();
        let span = info_span!("extract", %run_id, table = %key, chunk, rows = tracing::field::Empty, bytes = tracing::field::Empty);
        let started = Instant::now();
        async {
            // Only the first chunks find the run PLANNED: the others skip the update, which
            // the DynamoDB store serializes per run (a fan-out of many chunks would queue).
            if record.status == RunStatus::Planned {
                self.state
                    .update_run(
                        run_id,
                        Box::new(|r| match r.status {
                            RunStatus::Planned => r.transition(RunStatus::Extracting, Utc::now()),
                            RunStatus::Extracting => Ok(()),
                            other => Err(format!("is {other}; no more chunks are extracted")),
                        }),
                    )
                    .await?;
            }
            let source = self.source(&plan.table)?;
            let table_name = plan
                .table
                .table_name()
                .map_err(|message| PipelineError::Run { run_id, message })?;
            let layout = TableLayout::new(
                self.options.prefix.as_deref(),
                plan.engine,
                &plan.table.source,
                &table_name.to_string(),
            );
            let slot = self
                .source_slot(&plan.table.source, SlotHolder::chunk(run_id, chunk))
                .await?;
            let opened = held(slot.as_ref(), async {
                Ok(source.extract_chunk(&plan, chunk).await?)
            })
            .await;
            let stream = match opened {
                Ok(stream) => stream,
                Err(e) => {
                    release(slot).await;
                    return Err(e);
                }
            };
            let schema = stream.schema.clone();
            let warnings = stream.warnings.clone();
            let mut batches = prefetch(stream.batches, self.options.prefetch_batches);
            let started_at = plan.started_at;
            let mut writer = ChunkFileWriter::new(
                self.sink.clone(),
                &schema,
                run_id,
                chunk,
                Utc::now(),
                ParquetSettings {
                    row_group_bytes: (self.options.parquet.row_group_bytes / sharing.max(1))
                        .max(MIN_ROW_GROUP_BYTES),
                    ..self.options.parquet
                },
                move |part| layout.data_file(started_at, run_id, chunk, part),
            );
            let written = held(slot.as_ref(), async {
                while let Some(batch) = batches.next().await {
                    let batch: RecordBatch = batch?;
                    writer.write(&batch).await?;
                    observer.rows_written(&key, batch.num_rows() as u64);
                    // Tests crash a chunk here, mid-upload (FAILPOINTS=extract-after-batch=1*panic).
                    fail::fail_point!("extract-after-batch");
                }
                Ok::<_, PipelineError>(())
            })
            .await;
            // The source is read: its connection closes with the stream, and its slot is
            // free for the next reader while the last part uploads.
            drop(batches);
            release(slot).await;
            if let Err(e) = written {
                writer.abort().await;
                return Err(e);
            }
            let files = writer.finish().await?;
            let outcome = ChunkOutcome {
                rows: files.iter().map(|f| f.rows).sum(),
                bytes: files.iter().map(|f| f.bytes).sum(),
                files,
                schema: manifest_columns(&file_schema(&schema)),
                warnings: warnings.snapshot(),
                seconds: started.elapsed().as_secs_f64(),
            };
            tracing::Span::current()
                .record("rows", outcome.rows)
                .record("bytes", outcome.bytes);
            info!(files = outcome.files.len(), "chunk extracted");
            let done = self
                .state
                .record_chunk_done(run_id, chunk, &outcome)
                .await?;
            info!(
                newly_recorded = done.newly_recorded,
                done = done.done,
                total = done.total,
                is_last = done.is_last,
                "chunk recorded"
            );
            observer.chunk_done(&key, chunk, &outcome);
            Ok(ChunkReport {
                outcome,
                newly_recorded: done.newly_recorded,
                is_last: done.is_last,
            })
        }
        .instrument(span)
        .await
    }

    /// Once every chunk is done: writes the manifest, registers the files in the catalog, loads
    /// RAW (LOADING), merges into STAGING and runs the gold procedures (MERGING) when a
    /// warehouse is attached, then commits the watermark and completes the run. Any failure
    /// leaves the watermark where it was.
    pub async fn finalize_run(&self, run_id: RunId) -> Result<RunRecord> {
        let record = self
            .state
            .get_run(run_id)
            .await?
            .ok_or(StateError::RunNotFound(run_id))?;
        if record.status == RunStatus::Completed {
            return Ok(record);
        }
        let plan = record.plan.clone().ok_or_else(|| PipelineError::Run {
            run_id,
            message: "has no plan".into(),
        })?;
        let missing: Vec<u32> = (0..plan.chunks.len() as u32)
            .filter(|c| !record.chunks.contains_key(c))
            .collect();
        if !missing.is_empty() {
            return Err(PipelineError::Run {
                run_id,
                message: format!("cannot finalize: chunks {missing:?} are not done"),
            });
        }
        let key = record.table_key.clone();
        let span = info_span!("finalize", %run_id, table = %key);
        async {
            // A finalize retried after a crash (a re-delivered event) finds the run LOADING or
            // MERGING and resumes: every step below is safe to repeat (same manifest, catalog
            // registration tolerates what exists, RAW loads replace the run's rows, the merge
            // never moves data backwards), and the watermark still moves only at the end.
            match record.status {
                RunStatus::Loading | RunStatus::Merging => {
                    info!(status = %record.status, "resuming an interrupted finalize");
                }
                _ => {
                    self.transition(run_id, RunStatus::Extracting, RunStatus::Loading)
                        .await?;
                }
            }
            let table_name = plan.table.table_name().map_err(|message| PipelineError::Run {
                run_id,
                message,
            })?;
            let layout = TableLayout::new(
                self.options.prefix.as_deref(),
                plan.engine,
                &plan.table.source,
                &table_name.to_string(),
            );
            let schema = record
                .chunks
                .values()
                .find(|c| !c.files.is_empty())
                .or_else(|| record.chunks.values().next())
                .map(|c| c.schema.clone())
                .unwrap_or_default();
            if let Some((chunk, _)) = record
                .chunks
                .iter()
                .find(|(_, c)| !c.files.is_empty() && c.schema != schema)
            {
                return Err(PipelineError::Run {
                    run_id,
                    message: format!("chunk {chunk} wrote a different schema than the other chunks (the table changed during the run)"),
                });
            }
            let files: Vec<_> = record.chunks.values().flat_map(|c| c.files.clone()).collect();
            let manifest = Manifest {
                version: MANIFEST_VERSION,
                run_id,
                engine: plan.engine,
                source: plan.table.source.clone(),
                table: plan.table.table.clone(),
                started_at: plan.started_at,
                rows: files.iter().map(|f| f.rows).sum(),
                bytes: files.iter().map(|f| f.bytes).sum(),
                files,
                schema,
                watermark_lower: plan.cursor.as_ref().and_then(|c| c.lower.clone()),
                watermark_upper: plan.cursor.as_ref().and_then(|c| c.upper.clone()),
            };
            let manifest_key = layout.manifest(run_id);
            let body = serde_json::to_vec_pretty(&manifest).map_err(|e| PipelineError::Run {
                run_id,
                message: format!("serialising the manifest: {e}"),
            })?;
            put_bytes(self.sink.as_ref(), &manifest_key, Bytes::from(body)).await?;
            info!(key = %manifest_key, rows = manifest.rows, files = manifest.files.len(), "manifest written");
            let keep: BTreeSet<String> = manifest.files.iter().map(|f| f.key.clone()).collect();
            self.remove_run_files(run_id, &plan, &keep, false).await;
            let columns = sluice_core::catalog::hive_columns(&manifest.schema).map_err(|source| {
                CatalogError::Schema {
                    table: key.clone(),
                    source,
                }
            })?;
            let registration = TableRegistration {
                table: catalog_table_name(&plan.table.source, &plan.table.table),
                description: format!("sluice: {} {key}", plan.engine.as_str()),
                columns,
                location: self.sink.url_for(&format!("{}/", layout.table_dir())),
                partition_values: partition_values(plan.started_at),
                partition_location: self
                    .sink
                    .url_for(&format!("{}/", layout.partition_dir(plan.started_at))),
            };
            self.catalog.register_run(&registration).await?;
            if let Some(loader) = &self.warehouse {
                let loaded = loader
                    .load(&plan.table, &manifest, self.options.prefix.as_deref())
                    .await?;
                info!(files = loaded.files, rows = loaded.rows, "loaded into the warehouse");
            }
            let mk = manifest_key.clone();
            self.state
                .update_run(
                    run_id,
                    Box::new(move |r| {
                        r.manifest_key = Some(mk);
                        if r.status == RunStatus::Merging {
                            return Ok(());
                        }
                        r.transition(RunStatus::Merging, Utc::now())
                    }),
                )
                .await?;
            if let Some(loader) = &self.warehouse {
                let merged = loader.merge(&plan.table, run_id).await?;
                self.state
                    .update_run(
                        run_id,
                        Box::new(move |r| {
                            r.merge = Some(merged);
                            Ok(())
                        }),
                    )
                    .await?;
            }
            let next = plan.next_watermark().cloned();
            if let Some(watermark) = &next {
                self.state.commit_watermark(&key, run_id, watermark).await?;
            }
            let record = self
                .state
                .update_run(
                    run_id,
                    Box::new(move |r| {
                        r.watermark_committed = next;
                        r.transition(RunStatus::Completed, Utc::now())
                    }),
                )
                .await?;
            self.state.release_lease(&key, run_id).await?;
            info!(rows = record.rows(), bytes = record.bytes(), "run completed");
            Ok(record)
        }
        .instrument(span)
        .await
    }

    /// Marks a run FAILED with its first error and releases the table's lease. The watermark
    /// is untouched.
    pub async fn fail_run(
        &self,
        run_id: RunId,
        message: String,
        chunk: Option<u32>,
    ) -> Result<RunRecord> {
        let newly_failed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let record = {
            let message = message.clone();
            let newly_failed = newly_failed.clone();
            self.state
                .update_run(
                    run_id,
                    Box::new(move |r| {
                        newly_failed.store(
                            !r.status.is_terminal(),
                            std::sync::atomic::Ordering::Relaxed,
                        );
                        r.fail(message, chunk, Utc::now());
                        Ok(())
                    }),
                )
                .await?
        };
        if newly_failed.load(std::sync::atomic::Ordering::Relaxed) {
            warn!(%run_id, chunk, error = %message, "run failed");
        } else {
            // The run had already ended: the failure is not recorded again, nor logged as one
            // (the failed-runs alarm counts each run's failure once).
            info!(%run_id, chunk, status = %record.status, error = %message, "run already ended; failure not recorded");
        }
        if record.status != RunStatus::Failed {
            // It had completed: a late failure report changes nothing.
            return Ok(record);
        }
        // Also for a run failed before: the call that failed it may have died (or its store
        // call failed) before giving the lease back or removing the files, and a retry comes
        // here. Both are idempotent.
        self.state.release_lease(&record.table_key, run_id).await?;
        if let Some(plan) = &record.plan {
            self.remove_run_files(run_id, plan, &BTreeSet::new(), true)
                .await;
        }
        Ok(record)
    }

    /// Deletes what no loader should see of a run: its data files in its date/hour partition
    /// other than `keep` (the manifest's), and with `manifest_too` its manifest. COPY loads the
    /// manifest's list only, but Athena and Spectrum read the Glue partition's whole
    /// directory, where a failed run's files, or the surplus parts of a chunk whose retry
    /// wrote fewer parts, would count as data. Best effort: a failure is logged, and the run's
    /// outcome stands.
    async fn remove_run_files(
        &self,
        run_id: RunId,
        plan: &sluice_core::RunPlan,
        keep: &BTreeSet<String>,
        manifest_too: bool,
    ) {
        let Ok(table_name) = plan.table.table_name() else {
            return;
        };
        let layout = TableLayout::new(
            self.options.prefix.as_deref(),
            plan.engine,
            &plan.table.source,
            &table_name.to_string(),
        );
        let dir = layout.partition_dir(plan.started_at);
        let ours = format!("{dir}/part-{run_id}-");
        let mut doomed: Vec<String> = match list_keys(self.sink.as_ref(), &dir).await {
            Ok(keys) => keys
                .into_iter()
                .filter(|k| k.starts_with(&ours) && !keep.contains(k))
                .collect(),
            Err(e) => {
                warn!(%run_id, error = %e, "listing the run's files for clean-up failed");
                return;
            }
        };
        if manifest_too {
            doomed.push(layout.manifest(run_id));
        }
        for key in doomed {
            match delete_key(self.sink.as_ref(), &key).await {
                Ok(()) => info!(%run_id, %key, "removed a file no load will use"),
                Err(e) => warn!(%run_id, %key, error = %e, "removing a file of the run failed"),
            }
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

/// The schema a run of `table` writes (the source's columns as mapped, then sluice's metadata
/// columns), read from the source's catalog without reading a row: the table is planned as a
/// full load filtered to nothing and only its chunk stream's schema is kept. For set-up SQL
/// that must exist before the first run.
pub async fn file_schema_of(source: &dyn Source, table: &TableConfig) -> Result<SchemaRef> {
    let mut probe = table.clone();
    probe.filter = Some("1 = 0".into());
    probe.partition = None;
    probe.load.mode = sluice_core::LoadMode::Full;
    let gathered = source.gather_facts(&probe, None).await?;
    let plan = build_plan(
        RunId::new(),
        source.engine(),
        Utc::now(),
        &probe,
        None,
        gathered.facts,
    )?;
    let stream = source.extract_chunk(&plan, 0).await?;
    let schema = file_schema(&stream.schema);
    // The stream reads nothing; dropping it ends the (empty) read before the plan's hold.
    drop(stream);
    drop(gathered.hold);
    Ok(schema)
}

fn manifest_columns(schema: &SchemaRef) -> Vec<ManifestColumn> {
    let parquet = parquet_types(schema);
    schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| ManifestColumn {
            name: f.name().clone(),
            data_type: f.data_type().to_string(),
            nullable: f.is_nullable(),
            parquet_type: parquet.get(i).cloned().unwrap_or_default(),
        })
        .collect()
}

/// The Parquet type of each top-level column, as the writer will store it (the same
/// conversion the Arrow writer makes); nested columns list their leaves.
fn parquet_types(schema: &SchemaRef) -> Vec<String> {
    use parquet::basic::{LogicalType, Type as PhysicalType};
    let Ok(descriptor) = parquet::arrow::ArrowSchemaConverter::new().convert(schema) else {
        return Vec::new();
    };
    let mut out = vec![String::new(); schema.fields().len()];
    for (leaf, column) in descriptor.columns().iter().enumerate() {
        let physical = match column.physical_type() {
            PhysicalType::FIXED_LEN_BYTE_ARRAY => {
                format!("FIXED_LEN_BYTE_ARRAY({})", column.type_length())
            }
            other => other.to_string(),
        };
        let logical = match column.logical_type_ref() {
            None => String::new(),
            Some(LogicalType::Decimal(d)) => format!(" DECIMAL({},{})", d.precision, d.scale),
            Some(LogicalType::Timestamp(t)) => {
                format!(" TIMESTAMP({:?}, utc={})", t.unit, t.is_adjusted_to_u_t_c)
            }
            Some(LogicalType::Time(t)) => {
                format!(" TIME({:?}, utc={})", t.unit, t.is_adjusted_to_u_t_c)
            }
            Some(LogicalType::Integer(i)) => format!(
                " INT({}, {})",
                i.bit_width,
                if i.is_signed { "signed" } else { "unsigned" }
            ),
            Some(LogicalType::String) => " STRING".into(),
            Some(LogicalType::Date) => " DATE".into(),
            Some(other) => format!(" {other:?}").to_uppercase(),
        };
        let path = column.path().parts();
        let text = if path.len() > 1 {
            format!("{}: {physical}{logical}", path[1..].join("."))
        } else {
            format!("{physical}{logical}")
        };
        if let Some(slot) = out.get_mut(descriptor.get_column_root_idx(leaf)) {
            if !slot.is_empty() {
                slot.push_str("; ");
            }
            slot.push_str(&text);
        }
    }
    out
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

/// Drives a source stream on its own task, `depth` batches ahead of the consumer, so decoding
/// and Parquet encoding run on different cores while memory stays bounded by `depth`. Dropping
/// the returned stream stops the task (and drops the source stream, closing its connection)
/// at once, not after the batch it is reading.
fn prefetch(
    mut stream: BoxStream<'static, Result<RecordBatch, SourceError>>,
    depth: usize,
) -> BoxStream<'static, Result<RecordBatch, PipelineError>> {
    let (tx, rx) = tokio::sync::mpsc::channel(depth.max(1));
    let task = tokio::spawn(
        async move {
            while let Some(item) = stream.next().await {
                let stop = item.is_err();
                if tx.send(item).await.is_err() || stop {
                    break;
                }
            }
        }
        .in_current_span(),
    );
    futures::stream::unfold((rx, AbortOnDrop(task)), |(mut rx, task)| async move {
        rx.recv()
            .await
            .map(|item| (item.map_err(PipelineError::from), (rx, task)))
    })
    .boxed()
}

/// Aborts its task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
