//! The serverless flow, behind the three Lambda handlers: the trigger records runs (from
//! Snowflake's external function, a schedule or an operator) without touching a source and
//! hands each to `extract` to plan; the planner starts a run's first
//! `partition.max_concurrency` chunks; `extract` runs one chunk, starts the next chunk of its
//! chain (so no more than that many chunks of a run extract at once) and hands the run to
//! `finalize` when it was the last; `finalize` loads and merges the run, or records why it
//! failed. The handlers only turn events into these calls and results into answers.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;
use sluice_core::external_function::answer::{
    AlreadyRunning, ResponseBody, RowError, RowResult, RunSummary,
};
use sluice_core::external_function::batch::{
    ANSWER_WITHIN, BatchAnswer, BatchRecord, BatchRow, batch_answer,
};
use sluice_core::external_function::{IngestRequest, Row, StatusRequest};
use sluice_core::gold::GoldRecord;
use sluice_core::plan::ChunkChains;
use sluice_core::run::RunKind;
use sluice_core::schedule::{Schedule, keyset_due};
use sluice_core::{Config, RunId, RunRecord, RunStatus};
use thiserror::Error;
use tracing::{Instrument, info, info_span, warn};

use sluice::state::{ChunkStart, StateError, latest_keyset_attempt};
use sluice::{PipelineError, Quiet, RunStart, Started as RunStarted};

use crate::deployment::{Deployment, DeploymentError};
use crate::events::{DestinationRecord, ExhaustedEvent, TriggerTables};
use crate::invoke::{
    ExtractEvent, ExtractFunctionEvent, FinalizeEvent, GoldEvent, InvokeError, PlanEvent,
    ResumeEvent, event_bytes,
};

/// Rows of one batch started at once: each is a few state writes and one invoke.
const PLAN_CONCURRENCY: usize = 8;
/// How many of a table's newest runs the schedule tick looks through for its last load (key
/// sets and validations in between are no load). Past that many, the table counts as never
/// loaded: its load starts at its next fire time within the lookback, at most once too many.
const LOADS_SEARCHED: usize = 10;
/// Asynchronous invocations sent at once when a run starts its first chunks.
const FAN_OUT_CONCURRENCY: usize = 16;
/// Who claims the start of a run's first chunks (see [`sluice::state::StateStore::claim_chunk_start`]): not a
/// chunk, so never the claimer of a successor.
const PLANNER_CLAIMER: u32 = u32::MAX;
/// Time kept back from the Lambda deadline to stop a chunk cleanly and record why.
const DEADLINE_MARGIN: Duration = Duration::from_secs(20);

#[derive(Debug, Error)]
pub enum ServerlessError {
    #[error(transparent)]
    Deployment(#[from] DeploymentError),
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Invoke(#[from] InvokeError),
    #[error("{0} is not set: this function cannot fan out")]
    NoFunction(&'static str),
}

pub type Result<T, E = ServerlessError> = std::result::Result<T, E>;

impl ServerlessError {
    /// Whether the same event could succeed if tried again: a store, a source, S3 or Lambda
    /// that failed for now, yes; a missing run, a bad config or a refused state change, no.
    /// Only retryable errors are returned to Lambda, which retries the event (twice, by
    /// default, then its on-failure destination); the others settle the run at once (see
    /// [`Functions::settle`]).
    pub fn is_retryable(&self) -> bool {
        use sluice::config_store::ConfigStoreError;
        use sluice::secrets::SecretError;
        use sluice::source::SourceError;
        use sluice::source::connect::ConnectError;
        fn state(e: &StateError) -> bool {
            matches!(e, StateError::Storage { .. })
        }
        match self {
            ServerlessError::Deployment(e) => match e {
                DeploymentError::Settings(_) | DeploymentError::Setting { .. } => false,
                DeploymentError::Config(ConfigStoreError::Storage { .. }) => true,
                DeploymentError::Config(_) => false,
                DeploymentError::Source(SourceError::Config { .. })
                | DeploymentError::Connect(ConnectError::Source(SourceError::Config { .. })) => {
                    false
                }
                DeploymentError::Secret(e) | DeploymentError::Connect(ConnectError::Secret(e)) => {
                    matches!(e, SecretError::Service { .. })
                }
                _ => true,
            },
            ServerlessError::Pipeline(e) => match e {
                PipelineError::State(e) => state(e),
                PipelineError::Source(SourceError::Config { .. }) => false,
                PipelineError::Plan(_)
                | PipelineError::UnknownSource { .. }
                | PipelineError::Run { .. } => false,
                PipelineError::Warehouse(e) if e.is_final() => false,
                _ => true,
            },
            ServerlessError::State(e) => state(e),
            ServerlessError::Invoke(InvokeError::TooLarge { .. }) => false,
            ServerlessError::Invoke(_) => true,
            ServerlessError::NoFunction(_) => false,
        }
    }
}

/// What a call of Snowflake's external functions comes to; the HTTP layer (`crate::http`)
/// turns it into a status code and a body.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// `200`: every row's result.
    Rows(ResponseBody),
    /// `202`: Snowflake asks again with the same batch id.
    Pending,
    /// `400`: the request itself is wrong; nothing was started.
    BadRequest(String),
    /// `500`: sluice could not do its part (state unreachable, a batch abandoned).
    Failed(String),
}

/// How a row's request turned out at once.
enum Started {
    /// A run was recorded and handed to its planner (or failed on the way).
    Run(Box<RunRecord>),
    /// No run to follow: the row's answer.
    Answer(RowResult),
}

impl Started {
    /// The row's result as Snowflake gets it.
    fn result(&self) -> RowResult {
        match self {
            Started::Run(record) => RowResult::Run(RunSummary::of(record)),
            Started::Answer(answer) => answer.clone(),
        }
    }
}

/// What a step of a run (plan, extract, finalize, an exhausted event) did: the function's
/// answer, which Lambda keeps for an asynchronous invocation only in its logs and records.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum StepOutcome {
    /// The run as it stands after the step.
    Run(RunSummary),
    /// One chunk extracted (`last`: it completed the run's extraction).
    Chunk {
        run_id: RunId,
        chunk: u32,
        rows: u64,
        files: usize,
        last: bool,
    },
    /// Nothing to do: the run had moved on (a duplicate or late event).
    Skipped {
        run_id: RunId,
        #[serde(skip_serializing_if = "Option::is_none")]
        chunk: Option<u32>,
        skipped: RunStatus,
    },
    /// An on-failure record that names no run sluice knows.
    Ignored {
        ignored: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        run_id: Option<RunId>,
    },
}

impl StepOutcome {
    fn run(record: &RunRecord) -> StepOutcome {
        StepOutcome::Run(RunSummary::of(record))
    }
}

/// The answer to an operator's direct invocation or a schedule tick: each table's result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TablesAnswer {
    pub runs: Vec<SelectedRun>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SelectedRun {
    /// The table as the request named it.
    pub selector: String,
    #[serde(flatten)]
    pub result: RowResult,
}

pub struct Functions {
    pub deployment: Deployment,
}

/// How long after a batch's last run ended its answer waits for the gold record before
/// handing the gold on again itself.
const GOLD_HAND_ON_GRACE: chrono::Duration = chrono::Duration::seconds(30);

/// What a batch's answer says of its gold.
enum BatchGold {
    /// No gold reads its tables (or Snowflake's patience ran out): answer now.
    None,
    /// Gold is due and has not finished: ask again.
    Pending,
    /// It ran: each row says what of it read its table.
    Ran(GoldRecord),
}

/// `body` with each run's gold said (see [`RunSummary::gold`]).
fn with_gold(mut body: ResponseBody, gold: &GoldRecord) -> ResponseBody {
    for (_, result) in &mut body.data {
        if let RowResult::Run(summary) = result {
            summary.gold = gold.summary_for(&summary.table);
        }
    }
    body
}

/// Snowflake's rows as `(source/table, kind)` selections.
fn ingest_rows(rows: Vec<Row<IngestRequest>>) -> Vec<Row<(String, RunKind)>> {
    rows.into_iter()
        .map(|Row { row, request }| Row {
            row,
            request: request.map(|r| (format!("{}/{}", r.source, r.table), r.kind)),
        })
        .collect()
}

/// Names the event's run in its span, and answers for an event whose run already ended
/// (a late or duplicated delivery): nothing is done for it.
fn skipped_if_ended(record: &RunRecord, chunk: Option<u32>) -> Option<StepOutcome> {
    tracing::Span::current().record("table", record.table_key.as_str());
    if !record.status.is_terminal() {
        return None;
    }
    info!(status = %record.status, chunk, "run already ended; nothing to do");
    Some(StepOutcome::Skipped {
        run_id: record.run_id,
        chunk,
        skipped: record.status,
    })
}

/// The step whose event Lambda gave up on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Planning,
    Resuming,
    Extracting,
    Finalizing,
}

impl Functions {
    pub fn new(deployment: Deployment) -> Functions {
        Functions { deployment }
    }

    fn extract_function(&self) -> Result<&str> {
        self.deployment
            .settings
            .extract_function
            .as_deref()
            .ok_or(ServerlessError::NoFunction("SLUICE_EXTRACT_FUNCTION"))
    }

    fn finalize_function(&self) -> Result<&str> {
        self.deployment
            .settings
            .finalize_function
            .as_deref()
            .ok_or(ServerlessError::NoFunction("SLUICE_FINALIZE_FUNCTION"))
    }

    // ---- trigger -------------------------------------------------------------------------

    /// `POST /ingest`: starts a run per row. With a batch id (Snowflake's asynchronous
    /// protocol) the answer is `202` and the runs are followed by [`Functions::poll_batch`];
    /// a repeated POST of the same batch starts nothing twice. Without one, each row's run id
    /// comes back at once.
    pub async fn ingest(&self, batch_id: Option<&str>, rows: Vec<Row<IngestRequest>>) -> Reply {
        let Some(batch_id) = batch_id else {
            return self.ingest_now(rows).await;
        };
        let state = &self.deployment.state;
        let claim = BatchRecord::claim(batch_id, Utc::now());
        match state.create_batch(&claim).await {
            Ok(true) => {}
            Ok(false) => {
                info!(batch_id, "batch already started; answering as a poll");
                return self.poll_batch(batch_id).await;
            }
            Err(e) => return Reply::Failed(format!("recording the batch: {e}")),
        }
        // Snowflake's 10 minutes run from its POST: the claim's time stays.
        if let (_, Err(e)) = self.start_in_batch(claim, ingest_rows(rows)).await {
            return Reply::Failed(e);
        }
        self.poll_batch(batch_id).await
    }

    /// `POST /ingest_async` (and `/ingest` without a batch id): starts the runs and answers
    /// each row with its run id at once.
    pub async fn ingest_now(&self, rows: Vec<Row<IngestRequest>>) -> Reply {
        let started = self.start_new_batch("ingest", ingest_rows(rows)).await;
        Reply::Rows(ResponseBody::new(
            started.into_iter().map(|(row, s)| (row, s.result())),
        ))
    }

    /// Snowflake's polling `GET /ingest`: `202` while any run of the batch goes on, then `200`
    /// with every row's final result.
    pub async fn poll_batch(&self, batch_id: &str) -> Reply {
        let state = &self.deployment.state;
        let batch = match state.get_batch(batch_id).await {
            Ok(Some(batch)) => batch,
            Ok(None) => {
                return Reply::BadRequest(format!(
                    "batch '{batch_id}' is unknown: POST the rows first"
                ));
            }
            Err(e) => return Reply::Failed(format!("reading the batch: {e}")),
        };
        let mut runs = BTreeMap::new();
        for run_id in batch.run_ids() {
            match state.get_run(run_id).await {
                Ok(Some(record)) => {
                    let record = match self.fail_if_planning_abandoned(record).await {
                        Ok(record) => record,
                        Err(e) => {
                            return Reply::Failed(format!("reading run {run_id}: {e}"));
                        }
                    };
                    runs.insert(run_id, record);
                }
                Ok(None) => {}
                Err(e) => {
                    return Reply::Failed(format!("reading run {run_id}: {e}"));
                }
            }
        }
        match batch_answer(&batch, &runs, Utc::now()) {
            BatchAnswer::Pending => Reply::Pending,
            BatchAnswer::Done(body) => match self.batch_gold(&batch, &runs).await {
                Ok(BatchGold::Pending) => Reply::Pending,
                Ok(BatchGold::Ran(gold)) => Reply::Rows(with_gold(body, &gold)),
                Ok(BatchGold::None) => Reply::Rows(body),
                Err(e) => Reply::Failed(format!("reading the batch's gold: {e}")),
            },
            BatchAnswer::Abandoned => Reply::Failed(format!(
                "batch '{batch_id}' was never started: the request that began it failed; run the query again"
            )),
        }
    }

    /// Whether the answer to a batch whose runs all ended waits for its gold: while gold that
    /// reads its tables has not finished, and Snowflake's patience lasts.
    async fn batch_gold(
        &self,
        batch: &BatchRecord,
        runs: &BTreeMap<RunId, RunRecord>,
    ) -> Result<BatchGold> {
        if let Some(gold) = self.deployment.state.get_gold(&batch.batch_id).await? {
            return Ok(match gold.finished {
                true => BatchGold::Ran(gold),
                false if Utc::now() - batch.created_at < ANSWER_WITHIN => BatchGold::Pending,
                false => BatchGold::None,
            });
        }
        let config = self.deployment.config().await?;
        if config.gold.is_empty() || Utc::now() - batch.created_at >= ANSWER_WITHIN {
            return Ok(BatchGold::None);
        }
        let steps = config
            .gold_graph()
            .batch_steps(&sluice_core::gold::table_outcomes(runs.values()));
        if steps.is_empty() {
            return Ok(BatchGold::None);
        }
        // Every run ended a while ago and still no gold record: the hand-on was lost (its
        // invoke failed, say). Asking again is safe: the gold record admits one runner.
        let last_end = runs.values().map(|r| r.updated_at).max();
        if last_end.is_some_and(|t| Utc::now() - t > GOLD_HAND_ON_GRACE)
            && let Err(e) = self.hand_on_gold(&batch.batch_id, "poll").await
        {
            warn!(batch_id = %batch.batch_id, error = %e, "handing the batch's gold on again failed");
        }
        Ok(BatchGold::Pending)
    }

    /// A run still waiting for its plan after its planning lease lapsed lost its planner (it
    /// died, or never started): nothing of it was extracted and the table is free again. It
    /// is failed so that the poll answers instead of waiting for Snowflake's 10 minutes, and a
    /// planner that wakes late finds it failed and records nothing.
    async fn fail_if_planning_abandoned(&self, record: RunRecord) -> Result<RunRecord> {
        if record.status != RunStatus::Planned || record.plan.is_some() {
            return Ok(record);
        }
        let table = self.deployment.state.table_state(&record.table_key).await?;
        let held = table
            .lease
            .is_some_and(|lease| lease.run_id == record.run_id && lease.expires_at > Utc::now());
        if held {
            return Ok(record);
        }
        let pipeline = self.deployment.pipeline(&Config::default(), &[]).await?;
        let failed = crate::metrics::counted(pipeline.fail_run(
            record.run_id,
            format!(
                "its planner did not finish within SLUICE_PLAN_TIMEOUT ({}s): it stopped or never started; nothing was extracted and the table is free again",
                self.deployment.settings.plan_timeout.as_secs()
            ),
            None,
        ))
        .await?;
        // No step of the run will end it now: this may have been its batch's last run.
        if let Err(e) = self.after_run_ended(failed.run_id).await {
            warn!(run_id = %failed.run_id, error = %e, "handing the batch's gold on failed");
        }
        Ok(failed)
    }

    /// `POST /status`: each row's run story.
    pub async fn status(&self, rows: Vec<Row<StatusRequest>>) -> Reply {
        let mut results = Vec::with_capacity(rows.len());
        for Row { row, request } in rows {
            let found = match request {
                Err(message) => Err(message),
                Ok(StatusRequest { run_id }) => match self.deployment.state.get_run(run_id).await {
                    Ok(Some(record)) => Ok(record),
                    Ok(None) => Err(format!("no run {run_id}")),
                    Err(e) => Err(e.to_string()),
                },
            };
            results.push((
                row,
                RowResult::story_or_error(found.as_ref().map_err(Clone::clone)),
            ));
        }
        Reply::Rows(ResponseBody::new(results))
    }

    /// An operator's direct invocation: starts the named tables, as one batch.
    pub async fn trigger_tables(&self, request: TriggerTables) -> TablesAnswer {
        self.start_tables(request, "operator").await
    }

    /// Starts the tables of `request` as one batch whose id begins with `origin`.
    async fn start_tables(&self, request: TriggerTables, origin: &str) -> TablesAnswer {
        let kind = request.kind();
        let rows = request
            .tables
            .iter()
            .enumerate()
            .map(|(i, selector)| Row {
                row: i as u64,
                request: kind.clone().map(|kind| (selector.clone(), kind)),
            })
            .collect();
        let started = self.start_new_batch(origin, rows).await;
        TablesAnswer {
            runs: started
                .into_iter()
                .zip(&request.tables)
                .map(|((_, s), selector)| SelectedRun {
                    selector: selector.clone(),
                    result: s.result(),
                })
                .collect(),
        }
    }

    /// The schedule tick: starts every table whose `schedule` has come due and that is not
    /// already running, and the key set of every table whose `deletes.keyset.every` has passed
    /// since its last one, unless its load starts on this tick (the key set then waits for a
    /// later tick: one run per table at a time). Returns what it started, per table key.
    pub async fn run_schedules(&self) -> Result<TablesAnswer> {
        let config = self.deployment.config().await?;
        let now = Utc::now();
        let lookback = chrono::Duration::from_std(self.deployment.settings.schedule_lookback)
            .unwrap_or(chrono::Duration::hours(1));
        let mut due = Vec::new();
        let mut keysets_due = Vec::new();
        for table in &config.tables {
            let load_due = match &table.schedule {
                None => false,
                Some(text) => match Schedule::parse(text) {
                    Ok(schedule) => {
                        // The last load: key sets and validations are no load.
                        let last = self
                            .deployment
                            .state
                            .list_runs(Some(&table.key()), LOADS_SEARCHED)
                            .await?
                            .into_iter()
                            .find(|r| r.kind().loads_rows())
                            .map(|r| r.created_at);
                        schedule.is_due(last, now, lookback)
                    }
                    Err(e) => {
                        warn!(table = %table.key(), error = %e, "bad schedule; skipped");
                        false
                    }
                },
            };
            if load_due {
                due.push(table.key());
            } else if table.deletes_by_keyset() {
                let state = self.deployment.state.as_ref();
                // A table with a lease, even a lapsed one, is left to its run (or to whoever
                // resumes it): a key-set request would fail a dead load it could resume.
                let leased = state.table_state(&table.key()).await?.lease.is_some();
                let last = latest_keyset_attempt(state, &table.key(), LOADS_SEARCHED).await?;
                if !leased && keyset_due(table, last, now) {
                    keysets_due.push(table.key());
                }
            }
        }
        info!(
            due = due.len(),
            keysets_due = keysets_due.len(),
            "schedule tick"
        );
        // One tick is one batch: its gold runs once, after every run it started.
        let selected: Vec<(String, RunKind)> = due
            .into_iter()
            .map(|key| (key, RunKind::Load))
            .chain(keysets_due.into_iter().map(|key| (key, RunKind::Keyset)))
            .collect();
        if selected.is_empty() {
            return Ok(TablesAnswer { runs: Vec::new() });
        }
        let rows = selected
            .iter()
            .enumerate()
            .map(|(i, selection)| Row {
                row: i as u64,
                request: Ok(selection.clone()),
            })
            .collect();
        let started = self.start_new_batch("schedule", rows).await;
        Ok(TablesAnswer {
            runs: started
                .into_iter()
                .zip(selected)
                .map(|((_, s), (selector, _))| SelectedRun {
                    selector,
                    result: s.result(),
                })
                .collect(),
        })
    }

    /// Starts the rows of a new batch (an operator's or a schedule's tables, rows without
    /// Snowflake's batch id) under an id of its own, `<origin>-<ULID>`. The runs start even if
    /// the batch cannot be recorded; its gold then does not run (said in the log).
    async fn start_new_batch(
        &self,
        origin: &str,
        rows: Vec<Row<(String, RunKind)>>,
    ) -> Vec<(u64, Started)> {
        let claim = BatchRecord::claim(&format!("{origin}-{}", RunId::new()), Utc::now());
        if let Err(e) = self.deployment.state.create_batch(&claim).await {
            warn!(batch_id = %claim.batch_id, error = %e, "recording the batch failed; its runs start without gold");
            return self.start_selected(rows, None).await;
        }
        let (started, recorded) = self.start_in_batch(claim, rows).await;
        if let Err(e) = recorded {
            warn!(error = %e, "its runs started, but their batch's gold will not run");
        }
        started
    }

    /// Starts `rows` as the batch `claim` claimed, records which run each row started, and
    /// hands the batch's gold on at once if every run already ended (they all failed to start,
    /// say). What each row started, and `Err` when the batch could not be recorded.
    async fn start_in_batch(
        &self,
        claim: BatchRecord,
        rows: Vec<Row<(String, RunKind)>>,
    ) -> (Vec<(u64, Started)>, Result<(), String>) {
        let started = self.start_selected(rows, Some(&claim.batch_id)).await;
        let record = BatchRecord {
            started: true,
            rows: started
                .iter()
                .map(|(row, started)| match started {
                    Started::Run(record) => BatchRow {
                        row: *row,
                        run_id: Some(record.run_id),
                        answer: None,
                    },
                    Started::Answer(answer) => BatchRow {
                        row: *row,
                        run_id: None,
                        answer: Some(answer.clone()),
                    },
                })
                .collect(),
            ..claim
        };
        if let Err(e) = self.deployment.state.save_batch(&record).await {
            return (started, Err(format!("recording the batch: {e}")));
        }
        if let Err(e) = self.hand_on_gold(&record.batch_id, "trigger").await {
            warn!(batch_id = %record.batch_id, error = %e, "handing the batch's gold on failed; the end of its last run does it");
        }
        (started, Ok(()))
    }

    /// Starts a run of each `(selector, kind)` row, a few at once, answering in the rows'
    /// order, each run recorded as part of `batch_id`. The config is read once for the whole
    /// batch.
    async fn start_selected(
        &self,
        rows: Vec<Row<(String, RunKind)>>,
        batch_id: Option<&str>,
    ) -> Vec<(u64, Started)> {
        let config = match self.deployment.config().await {
            Ok(config) => config,
            Err(e) => {
                let message = format!("cannot read the configuration: {e}");
                return rows
                    .into_iter()
                    .map(|r| {
                        (
                            r.row,
                            Started::Answer(RowError::new(message.clone()).into()),
                        )
                    })
                    .collect();
            }
        };
        let config = &config;
        futures::stream::iter(rows)
            .map(|Row { row, request }| async move {
                let started = match request {
                    Err(message) => Started::Answer(RowError::new(message).into()),
                    Ok((selector, kind)) => self.start_run(config, &selector, kind, batch_id).await,
                };
                (row, started)
            })
            .buffered(PLAN_CONCURRENCY)
            .collect()
            .await
    }

    /// Starts a run of the table `selector` names, without touching the source: takes the
    /// table's lease for `SLUICE_PLAN_TIMEOUT`, records the run (PLANNED, no plan yet) and
    /// hands it to `extract` to plan ([`Functions::plan`]). A few state writes and one
    /// asynchronous invoke per row, so the trigger answers API Gateway within its 29 s
    /// (<https://docs.aws.amazon.com/apigateway/latest/developerguide/limits.html>, "Maximum
    /// integration timeout") however slow the source: connecting, reading the catalog and the
    /// bounds happen behind the answer. A planner that never runs or dies leaves the table
    /// leased no longer than the plan timeout.
    async fn start_run(
        &self,
        config: &Config,
        selector: &str,
        kind: RunKind,
        batch_id: Option<&str>,
    ) -> Started {
        let table = match config.find_table(selector) {
            Ok(table) => table,
            Err(message) => return Started::Answer(RowError::new(message).into()),
        };
        let key = table.key();
        // No sources: the trigger never connects to one.
        let pipeline = match self.deployment.pipeline(config, &[]).await {
            Ok(p) => p,
            Err(e) => return Started::Answer(RowError::for_table(&key, e.to_string()).into()),
        };
        let now = Utc::now();
        let lease_until = now + self.plan_timeout();
        let start = RunStart {
            full_reload: kind == RunKind::FullReload,
            keyset: kind == RunKind::Keyset,
            take_over: false,
        };
        // The run holding the table, if any: starting may fail it (a dead holder whose run
        // cannot be resumed), and then no step of it will hand its batch's gold on.
        let holder = match self.deployment.state.table_state(&key).await {
            Ok(state) => state.lease.map(|l| l.run_id),
            Err(_) => None,
        };
        let started = match pipeline
            .start_run_until(table, start, now, lease_until)
            .await
        {
            Ok(started) => started,
            Err(PipelineError::State(StateError::AlreadyRunning { run_id, .. })) => {
                return Started::Answer(AlreadyRunning::new(&key, run_id).into());
            }
            Err(e) => return Started::Answer(RowError::for_table(&key, e.to_string()).into()),
        };
        // A new run goes to extract to be planned; a dead holder's run, taken over, to be
        // resumed.
        let (record, event, what) = match started {
            RunStarted::New(record) => {
                let event = event_bytes(&PlanEvent {
                    plan_run: record.run_id,
                });
                (record, event, "run recorded; extract plans it")
            }
            RunStarted::Resumed(record) => {
                let event = event_bytes(&ResumeEvent {
                    resume_run: record.run_id,
                });
                (record, event, "run taken over; extract resumes it")
            }
        };
        let run_id = record.run_id;
        if let Some(previous) = holder.filter(|&h| h != run_id)
            && let Err(e) = self.after_run_ended(previous).await
        {
            warn!(run_id = %previous, error = %e, "handing the batch's gold on failed");
        }
        let handed = async {
            // Before anyone else works on the run, so its end finds its batch.
            if let Some(batch_id) = batch_id {
                let batch_id = batch_id.to_owned();
                self.deployment
                    .state
                    .update_run(
                        run_id,
                        Box::new(move |r| {
                            // A run resumed for a new batch still ends its first one.
                            if let Some(earlier) = r.batch_id.replace(batch_id.clone())
                                && earlier != batch_id
                            {
                                r.earlier_batch_ids.push(earlier);
                            }
                            Ok(())
                        }),
                    )
                    .await?;
            }
            let function = self.extract_function()?;
            self.deployment
                .invoker
                .invoke_async(function, event)
                .await?;
            Ok::<_, ServerlessError>(())
        }
        .await;
        match handed {
            Ok(()) => {
                info!(%run_id, table = %key, "{what}");
                Started::Run(Box::new(record))
            }
            Err(e) => match crate::metrics::counted(pipeline.fail_run(
                run_id,
                format!("handing the run to its planner failed: {e}"),
                None,
            ))
            .await
            {
                Ok(record) => Started::Run(Box::new(record)),
                Err(fail) => Started::Answer(
                    RowError {
                        run_id: Some(run_id),
                        ..RowError::for_table(
                            &key,
                            format!("{e}; recording the failure also failed: {fail}"),
                        )
                    }
                    .into(),
                ),
            },
        }
    }

    fn plan_timeout(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.deployment.settings.plan_timeout)
            .unwrap_or(chrono::Duration::minutes(5))
    }

    // ---- plan (in extract) -----------------------------------------------------------------

    /// Plans a run the trigger recorded and starts its first chunks: the source's part of
    /// planning, in the function that talks to sources. The lease is renewed for the plan
    /// timeout as planning starts (so it lapses that soon if this invocation dies), lengthened
    /// to the lease TTL once the run is planned, and only then are chunks invoked: chunks never
    /// run under a planning lease another run could take. An event delivered twice, or
    /// retried after the plan was recorded, plans nothing twice: it finds the plan and
    /// repeats the fan-out, whose chunks are idempotent. An `Err` asks Lambda to retry.
    pub async fn plan(&self, event: PlanEvent, time_left: Option<Duration>) -> Result<StepOutcome> {
        let run_id = event.plan_run;
        let span = info_span!("plan", %run_id, table = tracing::field::Empty);
        async {
            let state = &self.deployment.state;
            let Some(record) = state.get_run_header(run_id).await? else {
                return Err(StateError::RunNotFound(run_id).into());
            };
            let key = record.table_key.clone();
            tracing::Span::current().record("table", key.as_str());
            if record.status != RunStatus::Planned {
                info!(status = %record.status, "run already planned or ended; nothing to plan");
                return Ok(StepOutcome::Skipped {
                    run_id,
                    chunk: None,
                    skipped: record.status,
                });
            }
            let config = self.deployment.config().await?;
            let record = match record.plan {
                Some(_) => record,
                None => {
                    let budget = time_left
                        .map(|t| t.saturating_sub(DEADLINE_MARGIN))
                        .map_or(self.deployment.settings.plan_timeout, |t| {
                            t.min(self.deployment.settings.plan_timeout)
                        });
                    let until = Utc::now()
                        + chrono::Duration::from_std(budget).unwrap_or(chrono::Duration::zero());
                    let sourceless = self.deployment.pipeline(&config, &[]).await?;
                    if !state.renew_lease(&key, run_id, until).await? {
                        let record = crate::metrics::counted(sourceless.fail_run(
                            run_id,
                            format!(
                                "planning did not start before the table's planning lease lapsed (SLUICE_PLAN_TIMEOUT, {}s)",
                                self.deployment.settings.plan_timeout.as_secs()
                            ),
                            None,
                        ))
                        .await?;
                        return Ok(StepOutcome::run(&record));
                    }
                    let table = match config.find_table(&key) {
                        Ok(table) => table,
                        Err(message) => {
                            let record = crate::metrics::counted(sourceless.fail_run(
                                run_id,
                                format!("cannot plan: {message}"),
                                None,
                            ))
                            .await?;
                            return Ok(StepOutcome::run(&record));
                        }
                    };
                    let pipeline = self.deployment.pipeline(&config, &[&table.source]).await?;
                    let since = Utc::now();
                    match tokio::time::timeout(budget, pipeline.plan_opened_run(table, run_id))
                        .await
                    {
                        // The chunks read within the plan's bounds, not in its snapshot.
                        Ok(Ok(planned)) => planned.record,
                        // The run is FAILED with the reason already (or planned by another
                        // delivery of this event, which goes on with it).
                        Ok(Err(failure)) => {
                            warn!(error = %failure.error, "planning failed");
                            let record = state
                                .get_run_header(run_id)
                                .await?
                                .ok_or(StateError::RunNotFound(run_id))?;
                            crate::metrics::run_ended(&record, since);
                            return Ok(StepOutcome::run(&record));
                        }
                        Err(_) => {
                            // A duplicate delivery may have planned the run meanwhile: its
                            // run goes on.
                            if let Some(current) = state.get_run_header(run_id).await?
                                && current.plan.is_some()
                                && !current.status.is_terminal()
                            {
                                info!("planned by another delivery of this event; nothing to do");
                                return Ok(StepOutcome::Skipped {
                                    run_id,
                                    chunk: None,
                                    skipped: current.status,
                                });
                            }
                            let record = crate::metrics::counted(pipeline.fail_run(
                                run_id,
                                format!(
                                    "planning did not finish within {}s (SLUICE_PLAN_TIMEOUT, or the function's time left): is the source reachable and answering?",
                                    budget.as_secs()
                                ),
                                None,
                            ))
                            .await?;
                            return Ok(StepOutcome::run(&record));
                        }
                    }
                }
            };
            let lease_until = Utc::now()
                + chrono::Duration::from_std(self.deployment.settings.lease_ttl)
                    .unwrap_or(chrono::Duration::hours(2));
            if !state.renew_lease(&key, run_id, lease_until).await? {
                let pipeline = self.deployment.pipeline(&config, &[]).await?;
                let record = crate::metrics::counted(pipeline.fail_run(
                    run_id,
                    "the table's lease lapsed while the run was planned (SLUICE_PLAN_TIMEOUT); no chunk was started".into(),
                    None,
                ))
                .await?;
                return Ok(StepOutcome::run(&record));
            }
            self.fan_out(&config, &record).await
        }
        .instrument(span)
        .await
    }

    /// Starts a planned run's first chunks (or finalize, for a run of no chunks).
    async fn fan_out(&self, config: &Config, record: &RunRecord) -> Result<StepOutcome> {
        let run_id = record.run_id;
        let chunks = record.plan.as_ref().map_or(0, |p| p.chunks.len()) as u32;
        let fanned = async {
            if chunks == 0 {
                return self.invoke_finalize(run_id).await;
            }
            // Refused before any claim when the deployment names no extract function.
            self.extract_function()?;
            // At most `partition.max_concurrency` chunks of a run extract at once, as in a
            // local run: the planner starts the first chains and each finished chunk starts
            // the next of its chain (see `extract`), so the source never sees more
            // connections from this run than that.
            // The first refused invoke stops the fan-out: the run fails rather than sending
            // the rest of its chunks.
            let chains = match record.plan.as_ref() {
                Some(plan) => ChunkChains::new(chunks, plan.extract_concurrency()),
                None => ChunkChains::new(chunks, 1),
            };
            // Each first chunk's start is claimed as the successors' are: a plan event
            // delivered again after this fan-out starts nothing twice, and a retry of one that
            // died half-way starts the rest.
            let state = &self.deployment.state;
            futures::stream::iter(chains.first())
                .map(Ok)
                .try_for_each_concurrent(FAN_OUT_CONCURRENCY, |chunk| async move {
                    match state
                        .claim_chunk_start(run_id, chunk, PLANNER_CLAIMER, Utc::now())
                        .await?
                    {
                        ChunkStart::Claimed => self.start_chunk(run_id, chunk).await?,
                        ChunkStart::Started | ChunkStart::ClaimedBy(_) => {
                            info!(chunk, "chunk already started; nothing to do");
                        }
                    }
                    Ok::<_, ServerlessError>(())
                })
                .await
        }
        .await;
        match fanned {
            Ok(()) => {
                info!(chunks, "run planned; first chunks started");
                Ok(StepOutcome::run(record))
            }
            // A failure that may pass (a throttled store or Lambda) is Lambda's to retry: the
            // claims make the retry start only the chunks not started yet.
            Err(e) if e.is_retryable() => Err(e),
            Err(e) => {
                // Chunks already sent find the run FAILED and stop.
                let pipeline = self.deployment.pipeline(config, &[]).await?;
                let record = crate::metrics::counted(pipeline.fail_run(
                    run_id,
                    format!("fanning out the chunks failed: {e}"),
                    None,
                ))
                .await?;
                Ok(StepOutcome::run(&record))
            }
        }
    }

    /// Sends extract one chunk of a run and records that it was started.
    async fn start_chunk(&self, run_id: RunId, chunk: u32) -> Result<()> {
        let function = self.extract_function()?;
        self.deployment
            .invoker
            .invoke_async(function, event_bytes(&ExtractEvent { run_id, chunk }))
            .await?;
        self.deployment.state.chunk_started(run_id, chunk).await?;
        Ok(())
    }

    /// Hands a run whose chunks are all done to finalize.
    async fn invoke_finalize(&self, run_id: RunId) -> Result<()> {
        let function = self.finalize_function()?;
        self.deployment
            .invoker
            .invoke_async(function, event_bytes(&FinalizeEvent { run_id }))
            .await?;
        Ok(())
    }

    /// Carries on a run the trigger took over from a holder that died (its lease lapsed with
    /// the run unfinished): lengthens the lease, removes what the dead invocations left of the
    /// chunks not recorded done, and starts again, in each chain of chunks, the first chunk
    /// not done (or finalize, when every chunk is done); the chains go on from there as
    /// usual. The chunks done are kept. An `Err` asks Lambda to retry.
    pub async fn resume(&self, event: ResumeEvent) -> Result<StepOutcome> {
        let run_id = event.resume_run;
        async {
            let state = &self.deployment.state;
            // The whole run, once: which chunks are done, and their files.
            let Some(record) = state.get_run(run_id).await? else {
                return Err(StateError::RunNotFound(run_id).into());
            };
            if let Some(skipped) = skipped_if_ended(&record, None) {
                return Ok(skipped);
            }
            let lease_until = Utc::now()
                + chrono::Duration::from_std(self.deployment.settings.lease_ttl)
                    .unwrap_or(chrono::Duration::minutes(15));
            if !state
                .renew_lease(&record.table_key, run_id, lease_until)
                .await?
            {
                info!("the run no longer holds its table's lease; not resumed");
                return Ok(StepOutcome::run(&record));
            }
            let Some(plan) = record.plan.as_ref() else {
                let pipeline = self.deployment.pipeline(&Config::default(), &[]).await?;
                let record = crate::metrics::counted(pipeline.fail_run(
                    run_id,
                    "cannot resume a run without a plan".into(),
                    None,
                ))
                .await?;
                return Ok(StepOutcome::run(&record));
            };
            // One delivery carries the takeover out; a duplicate would remove the files the
            // first one's restarted chunks are writing.
            let claimed = state
                .update_run(
                    run_id,
                    Box::new(|r| match r.resumptions.last_mut() {
                        Some(last) if !last.carried_out => {
                            last.carried_out = true;
                            Ok(())
                        }
                        Some(_) => Err("its takeover was carried out already".into()),
                        None => Err("it was not taken over".into()),
                    }),
                )
                .await;
            match claimed {
                Ok(_) => {}
                Err(StateError::Refused { message, .. }) => {
                    info!(%message, "nothing to resume");
                    return Ok(StepOutcome::run(&record));
                }
                Err(e) => return Err(e.into()),
            }
            let pipeline = self.deployment.pipeline(&Config::default(), &[]).await?;
            pipeline.remove_leftovers(&record).await;
            let total = u32::try_from(plan.chunks.len()).unwrap_or(u32::MAX);
            let chains = ChunkChains::new(total, plan.extract_concurrency());
            let restart = chains.resume_points(|c| record.chunks.contains_key(&c));
            if restart.is_empty() {
                self.invoke_finalize(run_id).await?;
                info!("every chunk was done; finalize invoked");
                return Ok(StepOutcome::run(&record));
            }
            for chunk in &restart {
                self.start_chunk(run_id, *chunk).await?;
            }
            info!(done = record.chunks.len(), total, restarted = ?restart, "run resumed");
            Ok(StepOutcome::run(&record))
        }
        .instrument(info_span!("resume", %run_id, table = tracing::field::Empty))
        .await
    }

    // ---- extract ---------------------------------------------------------------------------

    /// Extracts one chunk. `time_left` is what remains of the invocation: a chunk that cannot
    /// finish in time fails the run with a message saying what to change, rather than being
    /// killed mid-upload. An `Err` asks Lambda to retry the event.
    pub async fn extract(
        &self,
        event: ExtractEvent,
        time_left: Option<Duration>,
    ) -> Result<StepOutcome> {
        let ExtractEvent { run_id, chunk } = event;
        let span = info_span!("extract", %run_id, chunk, table = tracing::field::Empty);
        async {
            let state = &self.deployment.state;
            let Some(record) = state.get_run_header(run_id).await? else {
                return Err(StateError::RunNotFound(run_id).into());
            };
            if let Some(skipped) = skipped_if_ended(&record, Some(chunk)) {
                return Ok(skipped);
            }
            info!(time_left_s = time_left.map(|t| t.as_secs()), "extracting");
            let source = record
                .plan
                .as_ref()
                .map(|p| p.table.source.clone())
                .unwrap_or_default();
            let config = self.deployment.config().await?;
            let pipeline = self.deployment.pipeline(&config, &[&source]).await?;
            // Live work keeps the table's lease from lapsing (SLUICE_LEASE_TTL).
            let _lease = pipeline.keep_lease(record.table_key.clone(), run_id);
            let work = pipeline.extract_chunk(run_id, chunk, &Quiet);
            let deadline = time_left.map(|t| t.saturating_sub(DEADLINE_MARGIN));
            let limit = self.deployment.settings.chunk_timeout;
            let budget = deadline.into_iter().chain(limit).min();
            let report = match budget {
                None => work.await?,
                Some(budget) => match tokio::time::timeout(budget, work).await {
                    Ok(report) => report?,
                    Err(_) => {
                        let why = if Some(budget) == limit {
                            format!("SLUICE_CHUNK_TIMEOUT ({}s)", budget.as_secs())
                        } else {
                            format!(
                                "the function's time limit ({}s left when it started)",
                                time_left.unwrap_or_default().as_secs()
                            )
                        };
                        let message = format!(
                            "chunk {chunk} did not finish within {why}: make chunks smaller (partition.chunk_rows, or more partition.chunks) or raise the limit"
                        );
                        let record =
                            crate::metrics::counted(pipeline.fail_run(run_id, message, Some(chunk))).await?;
                        return Ok(StepOutcome::run(&record));
                    }
                },
            };
            // The chunk is recorded done: start the next chunk of its chain, once.
            if let Some(plan) = record.plan.as_ref() {
                let chains = ChunkChains::new(
                    u32::try_from(plan.chunks.len()).unwrap_or(u32::MAX),
                    plan.extract_concurrency(),
                );
                if let Some(next) = chains.successor(chunk) {
                    self.start_next_chunk(run_id, chunk, next).await?;
                }
            }
            let hand_on = if report.is_last {
                true
            } else if !report.newly_recorded {
                // A retried event whose first attempt recorded the chunk but could not invoke
                // finalize: hand on if every chunk is done and nobody finalized yet.
                matches!(state.get_run(run_id).await?, Some(r) if r.status == RunStatus::Extracting
                    && r.plan.as_ref().is_some_and(|p| r.chunks.len() == p.chunks.len()))
            } else {
                false
            };
            if hand_on {
                self.invoke_finalize(run_id).await?;
                info!("last chunk: finalize invoked");
            }
            Ok(StepOutcome::Chunk {
                run_id,
                chunk,
                rows: report.outcome.rows,
                files: report.outcome.files.len(),
                last: report.is_last,
            })
        }
        .instrument(span)
        .await
    }

    /// Starts chunk `next` of a run after chunk `chunk` (its predecessor in the chain) is
    /// done, exactly once. Lambda delivers an async event at least once: "even if your function
    /// doesn't return an error, it's possible for it to receive the same event from Lambda
    /// multiple times because the queue itself is eventually consistent"
    /// (<https://docs.aws.amazon.com/lambda/latest/dg/invocation-async-error-handling.html>),
    /// and a failed attempt is retried. So the start is claimed first (a conditional write):
    /// a duplicate delivery after the start was recorded starts nothing, and a retry of an
    /// attempt that died between the claim and the invoke invokes again. An `Err` asks Lambda
    /// to retry this chunk's event, which then finds the chunk done and comes back here.
    async fn start_next_chunk(&self, run_id: RunId, chunk: u32, next: u32) -> Result<()> {
        let state = &self.deployment.state;
        match state
            .claim_chunk_start(run_id, next, chunk, Utc::now())
            .await?
        {
            ChunkStart::Claimed => {
                self.start_chunk(run_id, next).await?;
                info!(next, "next chunk of the chain started");
            }
            ChunkStart::Started => info!(next, "next chunk already started; nothing to do"),
            ChunkStart::ClaimedBy(other) if other == chunk => {
                info!(
                    next,
                    "next chunk claimed a moment ago by another delivery of this event; nothing to do"
                );
            }
            ChunkStart::ClaimedBy(other) => {
                warn!(
                    next,
                    other, "next chunk claimed by another chunk; nothing to do"
                );
            }
        }
        Ok(())
    }

    // ---- finalize --------------------------------------------------------------------------

    /// Finalizes a run whose chunks are all done. Any failure marks the run FAILED (watermark
    /// unmoved, lease released) and is not retried: the next run picks up from the watermark.
    pub async fn finalize(&self, event: FinalizeEvent) -> Result<RunRecord> {
        let run_id = event.run_id;
        async {
            let pipeline = self.deployment.finalizing_pipeline().await?;
            // Live work keeps the table's lease from lapsing (SLUICE_LEASE_TTL).
            let _lease = match self.deployment.state.get_run_header(run_id).await? {
                Some(header) => Some(pipeline.keep_lease(header.table_key, run_id)),
                None => None,
            };
            crate::metrics::counted(async {
                match pipeline.finalize_run(run_id).await {
                    Ok(record) => Ok(record),
                    Err(e) => pipeline.fail_run(run_id, e.to_string(), None).await,
                }
            })
            .await
            .map_err(Into::into)
        }
        .instrument(info_span!("finalize", %run_id))
        .await
    }

    /// The end of an asynchronous step whose error trying again cannot cure: the run, if it
    /// is still going, fails with the error (its lease released, the watermark unmoved), and
    /// the handler answers instead of asking Lambda to retry. Retryable errors are passed on.
    ///
    /// A step after which the run has ended (or finds it ended: a late duplicate, a retry
    /// after a crash) hands its batch's gold on when it was the batch's last run.
    pub async fn settle(
        &self,
        run_id: RunId,
        chunk: Option<u32>,
        result: Result<StepOutcome>,
    ) -> Result<StepOutcome> {
        let outcome = self.settle_step(run_id, chunk, result).await?;
        let ended = match &outcome {
            StepOutcome::Run(summary) => summary.status.is_terminal(),
            StepOutcome::Skipped { .. } => true,
            StepOutcome::Chunk { .. } | StepOutcome::Ignored { .. } => false,
        };
        if ended && let Err(e) = self.after_run_ended(run_id).await {
            // Retried, the event finds its run ended and hands the gold on again.
            if e.is_retryable() {
                return Err(e);
            }
            warn!(%run_id, error = %e, "handing the batch's gold on failed");
        }
        Ok(outcome)
    }

    async fn settle_step(
        &self,
        run_id: RunId,
        chunk: Option<u32>,
        result: Result<StepOutcome>,
    ) -> Result<StepOutcome> {
        let error = match result {
            Ok(outcome) => return Ok(outcome),
            Err(e) if e.is_retryable() => return Err(e),
            Err(e) => e,
        };
        let missing = matches!(
            error,
            ServerlessError::State(StateError::RunNotFound(_))
                | ServerlessError::Pipeline(PipelineError::State(StateError::RunNotFound(_)))
        );
        if missing {
            warn!(%run_id, error = %error, "an event for a run that does not exist; not retried");
            return Ok(StepOutcome::Ignored {
                ignored: true,
                run_id: Some(run_id),
            });
        }
        warn!(%run_id, chunk, error = %error, "a step failed for good; its run fails, the event is not retried");
        let pipeline = self.deployment.pipeline(&Config::default(), &[]).await?;
        let record =
            crate::metrics::counted(pipeline.fail_run(run_id, error.to_string(), chunk)).await?;
        Ok(StepOutcome::run(&record))
    }

    /// An event that failed every attempt (Lambda's on-failure destination): its run is
    /// marked FAILED with the last error. A run that already ended is left as it is.
    pub async fn record_exhausted(&self, record: &DestinationRecord) -> Result<StepOutcome> {
        // The crash matrix kills the destination here, to leave a run no invocation carries on.
        fail::fail_point!("destination-before-record");
        let (run_id, chunk, step) = match record.exhausted_event() {
            Some(ExhaustedEvent::Extract(ExtractFunctionEvent::Chunk(e))) => {
                (e.run_id, Some(e.chunk), Step::Extracting)
            }
            Some(ExhaustedEvent::Extract(ExtractFunctionEvent::Plan(p))) => {
                (p.plan_run, None, Step::Planning)
            }
            Some(ExhaustedEvent::Extract(ExtractFunctionEvent::Resume(r))) => {
                (r.resume_run, None, Step::Resuming)
            }
            Some(ExhaustedEvent::Finalize(f)) => (f.run_id, None, Step::Finalizing),
            None if record.request_payload.get("gold_batch").is_some() => {
                return self.record_gold_exhausted(record).await;
            }
            None => {
                warn!(payload = %record.request_payload, "on-failure record for an event that is not sluice's; ignored");
                return Ok(StepOutcome::Ignored {
                    ignored: true,
                    run_id: None,
                });
            }
        };
        let Some(current) = self.deployment.state.get_run(run_id).await? else {
            return Ok(StepOutcome::Ignored {
                ignored: true,
                run_id: Some(run_id),
            });
        };
        if current.status.is_terminal() {
            // Its end may have been recorded by the attempt whose hand-on then failed.
            if let Err(e) = self.after_run_ended(run_id).await {
                warn!(%run_id, error = %e, "handing the batch's gold on failed");
            }
            return Ok(StepOutcome::run(&current));
        }
        let attempts = record.request_context.approximate_invoke_count;
        let error = record
            .response_payload
            .error_message
            .as_deref()
            .unwrap_or("no error message");
        let what = match (step, chunk) {
            (Step::Extracting, Some(c)) => format!("extracting chunk {c}"),
            (Step::Extracting, None) => "extracting".to_owned(),
            (Step::Planning, _) => "planning".to_owned(),
            (Step::Resuming, _) => "resuming".to_owned(),
            (Step::Finalizing, _) => "finalizing".to_owned(),
        };
        let message = format!("{what} failed after {attempts} attempts: {error}");
        let pipeline = self.deployment.pipeline(&Config::default(), &[]).await?;
        let failed = crate::metrics::counted(pipeline.fail_run(run_id, message, chunk)).await?;
        if let Err(e) = self.after_run_ended(run_id).await {
            warn!(%run_id, error = %e, "handing the batch's gold on failed");
        }
        Ok(StepOutcome::run(&failed))
    }

    // ---- gold (in finalize) ----------------------------------------------------------------

    /// A gold event that failed every attempt: the steps it left undecided are recorded
    /// FAILED with the last error, so the batch's record says what never ran.
    async fn record_gold_exhausted(&self, record: &DestinationRecord) -> Result<StepOutcome> {
        let Ok(event) = serde_json::from_value::<GoldEvent>(record.request_payload.clone()) else {
            warn!(payload = %record.request_payload, "on-failure record of a malformed gold event; ignored");
            return Ok(StepOutcome::Ignored {
                ignored: true,
                run_id: None,
            });
        };
        let state = &self.deployment.state;
        let now = Utc::now();
        let error = record
            .response_payload
            .error_message
            .as_deref()
            .unwrap_or("no error message");
        if let Some(existing) = state.get_gold(&event.gold_batch).await? {
            let claim = GoldRecord {
                holder: event.holder.clone(),
                claimed_until: now + sluice::pipeline::GOLD_CLAIM,
                ..existing
            };
            if let sluice::state::GoldClaim::Claimed(mut gold) =
                state.claim_gold(&claim, now).await?
            {
                for step in gold
                    .steps
                    .iter_mut()
                    .filter(|s| s.status == sluice_core::gold::GoldStatus::Pending)
                {
                    step.status = sluice_core::gold::GoldStatus::Failed;
                    step.detail = Some(format!(
                        "the gold event failed after {} attempts: {error}",
                        record.request_context.approximate_invoke_count
                    ));
                    step.ended_at = Some(now);
                }
                gold.finished = true;
                gold.updated_at = now;
                state.save_gold(&gold).await?;
            }
        }
        warn!(batch_id = %event.gold_batch, error, "the batch's gold failed every attempt");
        Ok(StepOutcome::Ignored {
            ignored: true,
            run_id: None,
        })
    }

    /// After run `run_id` ended: hands its batch's gold on if it was the batch's last run.
    async fn after_run_ended(&self, run_id: RunId) -> Result<()> {
        let Some(header) = self.deployment.state.get_run_header(run_id).await? else {
            return Ok(());
        };
        if !header.status.is_terminal() {
            return Ok(());
        }
        for batch_id in header.batch_id.iter().chain(&header.earlier_batch_ids) {
            self.hand_on_gold(batch_id, &run_id.to_string()).await?;
        }
        Ok(())
    }

    /// Once every run of batch `batch_id` has ended, asks finalize (the function that talks
    /// to the warehouse) to run the batch's gold, as `holder`. Whoever sees the batch end
    /// asks: each run writes its end before it looks, so the last to end sees them all, and
    /// the gold record in the state store lets only one of several askers run the steps.
    async fn hand_on_gold(&self, batch_id: &str, holder: &str) -> Result<()> {
        let config = self.deployment.config().await?;
        if config.gold.is_empty() {
            return Ok(());
        }
        let state = &self.deployment.state;
        let Some(batch) = state.get_batch(batch_id).await? else {
            return Ok(());
        };
        let Some(runs) = self.ended_runs(&batch).await? else {
            return Ok(());
        };
        let steps = config
            .gold_graph()
            .batch_steps(&sluice_core::gold::table_outcomes(&runs));
        if steps.is_empty() || state.get_gold(batch_id).await?.is_some_and(|g| g.finished) {
            return Ok(());
        }
        let event = event_bytes(&GoldEvent {
            gold_batch: batch_id.to_owned(),
            holder: holder.to_owned(),
        });
        self.deployment
            .invoker
            .invoke_async(self.finalize_function()?, event)
            .await?;
        info!(
            batch_id,
            holder, "every run of the batch ended; finalize runs its gold"
        );
        Ok(())
    }

    /// The runs of a started batch when every one has ended; `None` while one goes on.
    async fn ended_runs(&self, batch: &BatchRecord) -> Result<Option<Vec<RunRecord>>> {
        if !batch.started {
            return Ok(None);
        }
        let mut runs = Vec::new();
        for run_id in batch.run_ids() {
            match self.deployment.state.get_run_header(run_id).await? {
                Some(run) if run.status.is_terminal() => runs.push(run),
                Some(_) => return Ok(None),
                // Expired with the run history: long over.
                None => {}
            }
        }
        Ok(Some(runs))
    }

    /// Finalize's part: runs the gold of a batch whose runs have all ended (see
    /// [`sluice::Pipeline::run_batch_gold`]). An `Err` (the state store failed) asks Lambda
    /// to retry: the retry holds the same claim and carries on.
    pub async fn run_gold(&self, event: &GoldEvent) -> Result<Option<GoldRecord>> {
        let batch_id = event.gold_batch.as_str();
        async {
            let config = self.deployment.config().await?;
            let Some(batch) = self.deployment.state.get_batch(batch_id).await? else {
                warn!("no such batch (expired?); no gold to run");
                return Ok(None);
            };
            let Some(runs) = self.ended_runs(&batch).await? else {
                warn!("a run of the batch goes on; its end hands the gold on");
                return Ok(None);
            };
            let pipeline = self.deployment.finalizing_pipeline().await?;
            Ok(pipeline
                .run_batch_gold(&config, batch_id, &event.holder, &runs)
                .await?)
        }
        .instrument(info_span!("gold", batch_id))
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice::config_store::ConfigStoreError;

    /// Lambda retries an event whose handler failed; only failures that may pass are worth it.
    #[test]
    fn only_errors_that_may_pass_are_retried() {
        let run_id = RunId::new();
        let retried = |e: ServerlessError| e.is_retryable();
        assert!(!retried(StateError::RunNotFound(run_id).into()));
        assert!(!retried(
            PipelineError::State(StateError::RunNotFound(run_id)).into()
        ));
        assert!(!retried(
            PipelineError::Run {
                run_id,
                message: "has no plan".into()
            }
            .into()
        ));
        assert!(!retried(
            DeploymentError::Config(ConfigStoreError::Empty {
                table: "sluice-config".into()
            })
            .into()
        ));
        assert!(!retried(ServerlessError::NoFunction(
            "SLUICE_EXTRACT_FUNCTION"
        )));
        // A source the config describes wrongly, or a secret that is not there or not ours to
        // read, fails the same way on every attempt; Secrets Manager failing for now does not.
        let bad_source = sluice::source::SourceError::Config {
            source_name: "shop".into(),
            message: "sslmode: 'sometimes' is not one of …".into(),
        };
        assert!(!retried(DeploymentError::Connect(bad_source.into()).into()));
        let secret = |e: sluice::secrets::SecretError| -> ServerlessError {
            DeploymentError::Connect(e.into()).into()
        };
        let arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:sluice/shop-AbCdEf";
        assert!(!retried(secret(sluice::secrets::SecretError::NotFound {
            owner: "source shop".into(),
            setting: "connection.secret_arn",
            arn: arn.into(),
        })));
        assert!(retried(secret(sluice::secrets::SecretError::Service {
            owner: "source shop".into(),
            arn: arn.into(),
            message: "throttled".into(),
        })));
        assert!(retried(
            StateError::Storage {
                location: "sluice-state".into(),
                message: "throttled".into()
            }
            .into()
        ));
        assert!(retried(
            DeploymentError::Config(ConfigStoreError::Storage {
                table: "sluice-config".into(),
                message: "unreachable".into()
            })
            .into()
        ));
        assert!(retried(
            InvokeError::Failed {
                function: "extract".into(),
                message: "rate exceeded".into()
            }
            .into()
        ));
    }
}
