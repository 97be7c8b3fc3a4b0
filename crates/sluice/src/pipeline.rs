//! The pipeline: drives one run of one table through its phases, talking only to ports.
//!
//! The phases are separate calls (`plan_run`, `extract_chunk`, `finalize_run`) so the same
//! code runs as three Lambda functions or, through [`Pipeline::run_table`], in one process.
//! Every call re-reads the run record, so a repeated call (a retried event) is harmless.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use chrono::Utc;
use futures::StreamExt;
use futures::stream::BoxStream;
use sluice_core::layout::TableLayout;
use sluice_core::manifest::{MANIFEST_VERSION, Manifest, ManifestColumn};
use sluice_core::plan::{PlanError, build_plan, window_lower_bound};
use sluice_core::run::ChunkOutcome;
use sluice_core::{RunId, RunRecord, RunStatus, TableConfig};
use thiserror::Error;
use tracing::{Instrument, info, info_span, warn};

use crate::sink::parquet::{ChunkFileWriter, MIN_ROW_GROUP_BYTES, ParquetSettings, file_schema};
use crate::sink::{ObjectSink, SinkError, put_bytes};
use crate::source::{SnapshotHold, Source, SourceError};
use crate::state::{StateError, StateStore};

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
}

impl Default for PipelineOptions {
    fn default() -> Self {
        PipelineOptions {
            prefix: None,
            parquet: ParquetSettings::default(),
            lease_ttl: chrono::Duration::hours(2),
            prefetch_batches: 1,
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
    options: PipelineOptions,
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
            options,
        }
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
        let record = self.execute_run(planned.record.run_id, observer).await;
        // The plan's snapshot was needed only while the chunks were read.
        drop(planned.snapshot);
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
        let results: Vec<(u32, Result<ChunkOutcome>)> = futures::stream::iter(0..chunks)
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
        let unrecorded = |error: PipelineError| PlanFailure {
            run_id: None,
            error,
        };
        let source = self.source(table).map_err(unrecorded)?;
        let key = table.key();
        let now = Utc::now();
        let run_id = RunId::at(now);
        let span = info_span!("plan", %run_id, table = %key);
        async {
            self.state
                .acquire_lease(&key, run_id, now, now + self.options.lease_ttl)
                .await
                .map_err(|e| unrecorded(e.into()))?;
            let table_state = match self.state.table_state(&key).await {
                Ok(s) => s,
                Err(e) => {
                    let _ = self.state.release_lease(&key, run_id).await;
                    return Err(unrecorded(e.into()));
                }
            };
            let mut record = RunRecord::new(run_id, key.clone(), now);
            record.watermark_before = table_state.watermark.clone();
            if let Err(e) = self.state.create_run(&record).await {
                let _ = self.state.release_lease(&key, run_id).await;
                return Err(unrecorded(e.into()));
            }
            let planned = async {
                let lower = window_lower_bound(table, table_state.watermark.as_ref())?;
                let gathered = source.gather_facts(table, lower.as_ref()).await?;
                let (facts, snapshot) = (gathered.facts, gathered.hold);
                let plan = build_plan(
                    run_id,
                    source.engine(),
                    now,
                    table,
                    table_state.watermark.as_ref(),
                    facts,
                )?;
                info!(chunks = plan.chunks.len(), "planned");
                let record = self
                    .state
                    .update_run(
                        run_id,
                        Box::new(move |r| {
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
                    if let Err(fail_error) = self.fail_run(run_id, error.to_string(), None).await {
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
    pub async fn extract_chunk(
        &self,
        run_id: RunId,
        chunk: u32,
        observer: &dyn RunObserver,
    ) -> Result<ChunkOutcome> {
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
    ) -> Result<ChunkOutcome> {
        let record = self
            .state
            .get_run(run_id)
            .await?
            .ok_or(StateError::RunNotFound(run_id))?;
        if let Some(done) = record.chunks.get(&chunk) {
            return Ok(done.clone());
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
            let stream = source.extract_chunk(&plan, chunk).await?;
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
            let written = async {
                while let Some(batch) = batches.next().await {
                    let batch: RecordBatch = batch?;
                    writer.write(&batch).await?;
                    observer.rows_written(&key, batch.num_rows() as u64);
                }
                Ok::<_, PipelineError>(())
            }
            .await;
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
            let recorded = outcome.clone();
            self.state
                .update_run(
                    run_id,
                    Box::new(move |r| {
                        if r.status != RunStatus::Extracting {
                            return Err(format!("is {}; chunk {chunk} is not recorded", r.status));
                        }
                        r.chunks.entry(chunk).or_insert(recorded);
                        r.updated_at = Utc::now();
                        Ok(())
                    }),
                )
                .await?;
            observer.chunk_done(&key, chunk, &outcome);
            Ok(outcome)
        }
        .instrument(span)
        .await
    }

    /// Once every chunk is done: writes the manifest, commits the watermark and completes the
    /// run. The warehouse load and merge slot in between (LOADING, MERGING) once a warehouse
    /// is configured.
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
            self.transition(run_id, RunStatus::Extracting, RunStatus::Loading).await?;
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
            let mk = manifest_key.clone();
            self.state
                .update_run(
                    run_id,
                    Box::new(move |r| {
                        r.manifest_key = Some(mk);
                        r.transition(RunStatus::Merging, Utc::now())
                    }),
                )
                .await?;
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
        warn!(%run_id, chunk, error = %message, "run failed");
        let record = self
            .state
            .update_run(
                run_id,
                Box::new(move |r| {
                    r.fail(message, chunk, Utc::now());
                    Ok(())
                }),
            )
            .await?;
        self.state.release_lease(&record.table_key, run_id).await?;
        Ok(record)
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

fn manifest_columns(schema: &SchemaRef) -> Vec<ManifestColumn> {
    schema
        .fields()
        .iter()
        .map(|f| ManifestColumn {
            name: f.name().clone(),
            data_type: f.data_type().to_string(),
            nullable: f.is_nullable(),
        })
        .collect()
}

/// Drives a source stream on its own task, `depth` batches ahead of the consumer, so decoding
/// and Parquet encoding run on different cores while memory stays bounded by `depth`.
fn prefetch(
    mut stream: BoxStream<'static, Result<RecordBatch, SourceError>>,
    depth: usize,
) -> BoxStream<'static, Result<RecordBatch, PipelineError>> {
    let (tx, rx) = tokio::sync::mpsc::channel(depth.max(1));
    tokio::spawn(
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
    futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|item| (item.map_err(PipelineError::from), rx))
    })
    .boxed()
}
