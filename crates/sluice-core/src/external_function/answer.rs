//! What each row of an external-function call gets back, as typed results serialised the way
//! Snowflake reads them: the response body is `{"data": [[row, result], …]}`, one entry per
//! row it sent, and each result becomes the row's VARIANT.
//!
//! A result never grows with the run it describes: a synchronous Lambda answer is at most
//! 6 MB (<https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html>,
//! "Invocation payload") and one batch holds up to `MAX_BATCH_ROWS` runs, so per-chunk rows,
//! files and the plan stay in the run record (`sluice status <run_id>`), and errors are cut.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::plan::ScalarValue;
use crate::run::{RunId, RunRecord, RunStatus};

/// The most bytes of an error message an answer carries; the whole one stays in the run
/// record (`sluice status <run_id>`). Bytes, not characters: the answer travels as JSON inside
/// API Gateway's proxy response, itself a JSON string, where a `"` becomes four bytes.
pub const MAX_ANSWER_ERROR_BYTES: usize = 500;

/// An error message for an answer: control characters as spaces (each would become a
/// six-byte escape, twice over), cut at a character boundary to [`MAX_ANSWER_ERROR_BYTES`],
/// saying so.
pub fn answer_error(message: &str) -> String {
    let clean: String = message
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if clean.len() <= MAX_ANSWER_ERROR_BYTES {
        return clean;
    }
    let mut end = MAX_ANSWER_ERROR_BYTES;
    while !clean.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… (cut; the whole error: sluice status)", &clean[..end])
}

/// A run as a row's result: enough to see what happened without another query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSummary {
    pub run_id: RunId,
    pub table: String,
    pub status: RunStatus,
    pub rows: u64,
    pub files: u64,
    pub bytes: u64,
    /// `full reload` or `key set`; absent for the table's load.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// What the merge procedure reported, once MERGING is done (a key set's reconcile
    /// procedure: `deleted`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merge: Option<Value>,
    /// The run's first error, cut (see [`answer_error`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The batch's gold that read this table, once it ran: `GOLD.A done, GOLD.B skipped
    /// (input … failed …)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gold: Option<String>,
    /// A note for a run that goes on after the batch had to answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl RunSummary {
    pub fn of(record: &RunRecord) -> RunSummary {
        RunSummary {
            run_id: record.run_id,
            table: record.table_key.clone(),
            status: record.status,
            rows: record.rows(),
            files: record.files() as u64,
            bytes: record.bytes(),
            kind: match record.kind() {
                crate::run::RunKind::Load => None,
                kind => Some(kind.as_str().to_owned()),
            },
            merge: record.merge.clone(),
            error: record.error.as_ref().map(|e| answer_error(&e.message)),
            gold: None,
            message: None,
        }
    }
}

/// When a phase of a run started and ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseSummary {
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub seconds: Option<f64>,
}

/// How many of a run's planned chunks are done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkCounts {
    pub planned: Option<usize>,
    pub done: usize,
}

/// `sluice.run_status(run_id)`'s answer for one run: [`RunSummary`] plus each phase's timing,
/// how many of the planned chunks are done, the watermarks and where the error happened. Its
/// size does not grow with the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunStory {
    #[serde(flatten)]
    pub summary: RunSummary,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub phases: BTreeMap<RunStatus, PhaseSummary>,
    pub chunks: ChunkCounts,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_phase: Option<RunStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_chunk: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watermark_before: Option<ScalarValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watermark_committed: Option<ScalarValue>,
    /// The rows the source held for the run, counted in each chunk's snapshot before the
    /// table's `where` (see `ChunkOutcome::source_rows`), once every chunk is done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_rows: Option<u64>,
    /// The rows COPY loaded into RAW, once LOADING is done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loaded_rows: Option<u64>,
    /// Distinct keys the merge merged from the loaded rows (see `RunRecord::merged_keys`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merged_keys: Option<u64>,
    /// Loaded rows beyond one per key (see `RunRecord::duplicate_key_rows`): a warning, not a
    /// failure, since the merge keeps the latest of each key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duplicate_key_rows: Option<u64>,
    /// The command that tells the rest (per-chunk rows and files, the plan, the whole error).
    pub story: String,
}

impl RunStory {
    pub fn of(record: &RunRecord) -> RunStory {
        RunStory {
            summary: RunSummary::of(record),
            created_at: record.created_at,
            updated_at: record.updated_at,
            phases: record
                .phases
                .iter()
                .map(|(phase, timing)| {
                    (
                        *phase,
                        PhaseSummary {
                            started_at: timing.started_at,
                            finished_at: timing.finished_at,
                            seconds: timing.seconds(),
                        },
                    )
                })
                .collect(),
            chunks: ChunkCounts {
                planned: record.plan.as_ref().map(|p| p.chunks.len()),
                done: record.chunks.len(),
            },
            error_phase: record.error.as_ref().map(|e| e.phase),
            error_chunk: record.error.as_ref().and_then(|e| e.chunk),
            watermark_before: record.watermark_before.clone(),
            watermark_committed: record.watermark_committed.clone(),
            source_rows: record.source_rows(),
            loaded_rows: record.loaded_rows,
            merged_keys: record.merged_keys,
            duplicate_key_rows: record.duplicate_key_rows().filter(|n| *n > 0),
            story: format!("sluice status {}", record.run_id),
        }
    }
}

/// The answer for a table that already runs: no second run, the running one's id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlreadyRunning {
    pub run_id: RunId,
    pub table: String,
    /// Always `ALREADY_RUNNING`.
    pub status: String,
    pub message: String,
}

impl AlreadyRunning {
    pub fn new(table: &str, run_id: RunId) -> AlreadyRunning {
        AlreadyRunning {
            run_id,
            table: table.to_owned(),
            status: "ALREADY_RUNNING".to_owned(),
            message: format!(
                "{table} is already running as run {run_id}; follow it with sluice.run_status('{run_id}')"
            ),
        }
    }
}

/// A row that got no run to follow, or lost track of it: why, with what is known.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RowError {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<RunId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<RunStatus>,
    pub error: String,
}

impl RowError {
    /// An error about the row's request itself (bad arguments, an unknown table).
    pub fn new(error: impl Into<String>) -> RowError {
        RowError {
            run_id: None,
            table: None,
            status: None,
            error: answer_error(&error.into()),
        }
    }

    pub fn for_table(table: &str, error: impl Into<String>) -> RowError {
        RowError {
            table: Some(table.to_owned()),
            ..RowError::new(error)
        }
    }
}

/// A run the batch follows but whose record is gone (it expired), when the batch must answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnknownRun {
    pub run_id: RunId,
    pub status: RunStatus,
    pub message: String,
}

/// One row's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RowResult {
    AlreadyRunning(AlreadyRunning),
    Error(RowError),
    Run(RunSummary),
    Story(Box<RunStory>),
    Unknown(UnknownRun),
    /// `sluice.check_source`'s answer (see [`super::check::CheckAnswer`]).
    Check(Box<super::check::CheckAnswer>),
}

impl From<RowError> for RowResult {
    fn from(error: RowError) -> RowResult {
        RowResult::Error(error)
    }
}

impl From<AlreadyRunning> for RowResult {
    fn from(already: AlreadyRunning) -> RowResult {
        RowResult::AlreadyRunning(already)
    }
}

impl RowResult {
    /// A row's result from either its outcome or why there is none.
    pub fn story_or_error(found: Result<&RunRecord, String>) -> RowResult {
        match found {
            Ok(record) => RowResult::Story(Box::new(RunStory::of(record))),
            Err(message) => RowError::new(message).into(),
        }
    }
}

/// The response body: one `[row, result]` per row, in the order given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponseBody {
    pub data: Vec<(u64, RowResult)>,
}

impl ResponseBody {
    pub fn new(results: impl IntoIterator<Item = (u64, RowResult)>) -> ResponseBody {
        ResponseBody {
            data: results.into_iter().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::ChunkOutcome;
    use serde_json::json;

    fn record(status: RunStatus, rows: u64) -> RunRecord {
        let mut r = RunRecord::new(RunId::new(), "shop/public.orders".into(), Utc::now());
        r.status = status;
        r.chunks.insert(
            0,
            ChunkOutcome {
                rows,
                ..Default::default()
            },
        );
        r
    }

    /// The JSON Snowflake receives is the documented shape, field for field: the README's
    /// table of answers and the SQL examples read these names.
    #[test]
    fn results_serialise_as_snowflake_reads_them() {
        let mut run = record(RunStatus::Completed, 7);
        run.merge = Some(json!({"inserted": 7, "updated": 0}));
        let id = run.run_id.to_string();
        let body = ResponseBody::new([
            (0, RowResult::Run(RunSummary::of(&run))),
            (
                1,
                AlreadyRunning::new("shop/public.orders", run.run_id).into(),
            ),
            (2, RowError::new("no table 'x'").into()),
            (3, RowError::for_table("shop/public.orders", "boom").into()),
        ]);
        assert_eq!(
            serde_json::to_value(&body).unwrap(),
            json!({"data": [
                [0, {"run_id": id, "table": "shop/public.orders", "status": "COMPLETED",
                     "rows": 7, "files": 0, "bytes": 0, "merge": {"inserted": 7, "updated": 0}}],
                [1, {"run_id": id, "table": "shop/public.orders", "status": "ALREADY_RUNNING",
                     "message": format!("shop/public.orders is already running as run {id}; follow it with sluice.run_status('{id}')")}],
                [2, {"error": "no table 'x'"}],
                [3, {"table": "shop/public.orders", "error": "boom"}],
            ]})
        );
        // Stored answers (a batch's rows without a run) read back as what they were.
        let back: ResponseBody =
            serde_json::from_value(serde_json::to_value(&body).unwrap()).unwrap();
        assert_eq!(back, body);
    }
}
