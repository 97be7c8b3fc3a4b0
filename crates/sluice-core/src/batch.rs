//! What the trigger remembers of one Snowflake external-function batch, and what it answers.
//!
//! Snowflake calls `sluice.ingest` with a batch of rows and, when the first answer is `202`,
//! polls with the same `sf-external-function-query-batch-id` until it gets `200`. The batch
//! record maps each row to the run it started (or to the answer it got at once, such as an
//! error), so any trigger instance can answer a poll; the answer is computed here from the
//! record and the runs' current state.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::run::{RunId, RunRecord, RunStatus};

/// Snowflake stops polling after 10 minutes; sluice answers just before, so the query gets
/// each row's run id rather than a timeout.
pub const ANSWER_WITHIN: Duration = Duration::seconds(9 * 60 + 30);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchRecord {
    pub batch_id: String,
    pub created_at: DateTime<Utc>,
    /// False while the first request is still starting the runs: a concurrent retry of that
    /// request, or a poll, waits instead of starting them again.
    pub started: bool,
    pub rows: Vec<BatchRow>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchRow {
    pub row: u64,
    /// The run this row started, followed until it ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<RunId>,
    /// The row's answer when it has no run to follow (a bad request, already running).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<Value>,
}

impl BatchRecord {
    /// A claim on `batch_id`, written before any run starts.
    pub fn claim(batch_id: &str, now: DateTime<Utc>) -> BatchRecord {
        BatchRecord {
            batch_id: batch_id.to_owned(),
            created_at: now,
            started: false,
            rows: Vec::new(),
        }
    }

    pub fn run_ids(&self) -> Vec<RunId> {
        self.rows.iter().filter_map(|r| r.run_id).collect()
    }
}

/// What to answer a poll.
#[derive(Debug, Clone, PartialEq)]
pub enum BatchAnswer {
    /// `202`: ask again.
    Pending,
    /// `200` with this body.
    Done(Value),
    /// The request that claimed the batch died before starting its runs (API Gateway gives
    /// a request 29 s): answering 202 would keep Snowflake waiting for nothing.
    Abandoned,
}

/// How long a claimed batch may stay unstarted before it counts as abandoned.
pub const START_WITHIN: Duration = Duration::seconds(60);

/// The most bytes of an error message an answer carries; the whole one stays in the run
/// record (`sluice status <run_id>`). Bytes, not characters: the answer travels as JSON inside
/// API Gateway's proxy response, itself a JSON string, where a `"` becomes four bytes.
pub const MAX_ANSWER_ERROR_BYTES: usize = 500;

/// An error message for an answer: control characters as spaces (each would become a
/// six-byte escape, twice over), cut at a character boundary to [`MAX_ANSWER_ERROR_BYTES`],
/// saying so.
fn answer_error(message: &str) -> String {
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
pub fn run_result(record: &RunRecord) -> Value {
    let mut result = json!({
        "run_id": record.run_id.to_string(),
        "table": record.table_key,
        "status": record.status.as_str(),
        "rows": record.rows(),
        "files": record.files(),
        "bytes": record.bytes(),
    });
    if let Some(merge) = &record.merge {
        result["merge"] = merge.clone();
    }
    if let Some(error) = &record.error {
        result["error"] = Value::String(answer_error(&error.message));
    }
    result
}

/// `sluice.run_status(run_id)`'s answer for one run: [`run_result`] plus each phase's timing,
/// how many of the planned chunks are done, the watermarks and where the error happened.
/// Its size does not grow with the run: per-chunk rows, files and the plan stay in the record
/// (`sluice status <run_id>` tells them), because a synchronous Lambda answer is at most 6 MB
/// (<https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html>, "Invocation
/// payload") and one batch holds up to `MAX_BATCH_ROWS` runs.
pub fn run_status_result(record: &RunRecord) -> Value {
    let mut result = run_result(record);
    result["created_at"] = json!(record.created_at);
    result["updated_at"] = json!(record.updated_at);
    result["phases"] = record
        .phases
        .iter()
        .map(|(phase, timing)| {
            (
                phase.as_str().to_owned(),
                json!({
                    "started_at": timing.started_at,
                    "finished_at": timing.finished_at,
                    "seconds": timing.seconds(),
                }),
            )
        })
        .collect::<serde_json::Map<_, _>>()
        .into();
    result["chunks"] = json!({
        "planned": record.plan.as_ref().map(|p| p.chunks.len()),
        "done": record.chunks.len(),
    });
    if let Some(error) = &record.error {
        result["error_phase"] = Value::String(error.phase.as_str().to_owned());
        if let Some(chunk) = error.chunk {
            result["error_chunk"] = json!(chunk);
        }
    }
    for (field, value) in [
        ("watermark_before", &record.watermark_before),
        ("watermark_committed", &record.watermark_committed),
    ] {
        if let Some(value) = value {
            result[field] = json!(value);
        }
    }
    result["story"] = Value::String(format!("sluice status {}", record.run_id));
    result
}

/// The answer to a poll of `batch`, given the runs it follows (`runs`, by id) at `now`:
/// pending while any run goes on, unless the batch is about to outlive Snowflake's patience,
/// in which case unfinished rows say so with their run id.
pub fn batch_answer(
    batch: &BatchRecord,
    runs: &BTreeMap<RunId, RunRecord>,
    now: DateTime<Utc>,
) -> BatchAnswer {
    if !batch.started {
        if now - batch.created_at > START_WITHIN {
            return BatchAnswer::Abandoned;
        }
        return BatchAnswer::Pending;
    }
    let out_of_time = now - batch.created_at >= ANSWER_WITHIN;
    let mut results = Vec::with_capacity(batch.rows.len());
    for row in &batch.rows {
        let result = match (row.run_id, &row.answer) {
            (Some(run_id), _) => match runs.get(&run_id) {
                Some(record) if record.status.is_terminal() => run_result(record),
                Some(record) if out_of_time => still_running(run_result(record), run_id),
                None if out_of_time => still_running(
                    json!({"run_id": run_id.to_string(), "status": RunStatus::Planned.as_str()}),
                    run_id,
                ),
                _ => return BatchAnswer::Pending,
            },
            (None, Some(answer)) => answer.clone(),
            (None, None) => json!({"error": "no run was started for this row"}),
        };
        results.push((row.row, result));
    }
    BatchAnswer::Done(crate::external_function::response_body(results))
}

fn still_running(mut result: Value, run_id: RunId) -> Value {
    result["message"] = Value::String(format!(
        "still running after {} minutes; it goes on: follow it with SELECT sluice.run_status('{run_id}')",
        ANSWER_WITHIN.num_minutes()
    ));
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::ChunkOutcome;

    fn record(status: RunStatus, rows: u64) -> RunRecord {
        let now = Utc::now();
        let mut r = RunRecord::new(RunId::new(), "shop/public.orders".into(), now);
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

    fn batch(rows: Vec<BatchRow>, created_at: DateTime<Utc>) -> BatchRecord {
        BatchRecord {
            batch_id: "b".into(),
            created_at,
            started: true,
            rows,
        }
    }

    /// A run of 1,024 chunks, each with many files, and a huge error: the status answer stays
    /// small, so a whole batch of such runs fits Lambda's 6 MB synchronous answer.
    #[test]
    fn a_status_answer_does_not_grow_with_the_run() {
        let mut big = record(RunStatus::Failed, 0);
        for chunk in 0..1024u32 {
            let files = (0..8)
                .map(|part| crate::run::FileEntry {
                    key: format!(
                        "raw/postgres/shop/public.orders/2026-12-06/20/{}-c{chunk:05}-p{part:05}.parquet",
                        big.run_id
                    ),
                    chunk,
                    part,
                    rows: 1_000,
                    bytes: 1 << 20,
                })
                .collect();
            big.chunks.insert(
                chunk,
                ChunkOutcome {
                    rows: 8_000,
                    bytes: 8 << 20,
                    files,
                    ..Default::default()
                },
            );
        }
        // The worst text for an answer's size: quotes and backslashes (escaped twice over),
        // control characters, four-byte characters.
        big.error = Some(crate::run::RunError {
            phase: RunStatus::Loading,
            chunk: Some(17),
            message: "\"\\\u{7}\n😀".repeat(20_000),
        });
        let whole = serde_json::to_string(&big).unwrap().len();
        let answer = run_status_result(&big);
        let size = answer.to_string().len();
        assert!(whole > 1_000_000, "the record itself is large: {whole}");
        assert!(size < 4_096, "{size} bytes: {answer}");
        // Still the story's essentials, counted from the record.
        assert_eq!(answer["rows"], 1024 * 8_000);
        assert_eq!(answer["files"], 1024 * 8);
        assert_eq!(answer["chunks"]["done"], 1024);
        assert_eq!(
            (
                answer["error_phase"].as_str(),
                answer["error_chunk"].as_u64()
            ),
            (Some("LOADING"), Some(17))
        );
        assert!(
            answer["error"]
                .as_str()
                .unwrap()
                .ends_with("(cut; the whole error: sluice status)")
        );
        assert_eq!(answer["story"], format!("sluice status {}", big.run_id));
        // A whole batch of the largest runs, as the trigger answers it: the body is a JSON
        // string inside API Gateway's proxy response, so it is encoded twice.
        let max_rows = crate::deploy::MAX_BATCH_ROWS_RANGE.1 as u64;
        let body = crate::external_function::response_body(
            (0..max_rows).map(|row| (row, run_status_result(&big))),
        );
        let proxied = serde_json::to_string(&body.to_string()).unwrap();
        assert!(
            proxied.len() < 6 * 1024 * 1024 - 4096,
            "{} bytes",
            proxied.len()
        );
    }

    #[test]
    fn pending_until_every_run_ends_then_each_row_gets_its_own_result() {
        let done = record(RunStatus::Completed, 7);
        let mut running = record(RunStatus::Extracting, 0);
        let b = batch(
            vec![
                BatchRow {
                    row: 2,
                    run_id: Some(running.run_id),
                    answer: None,
                },
                BatchRow {
                    row: 0,
                    run_id: None,
                    answer: Some(json!({"error": "no table 'x'"})),
                },
                BatchRow {
                    row: 1,
                    run_id: Some(done.run_id),
                    answer: None,
                },
            ],
            Utc::now(),
        );
        let mut runs = BTreeMap::from([
            (done.run_id, done.clone()),
            (running.run_id, running.clone()),
        ]);
        assert_eq!(batch_answer(&b, &runs, Utc::now()), BatchAnswer::Pending);
        running.status = RunStatus::Failed;
        running.error = Some(crate::run::RunError {
            phase: RunStatus::Extracting,
            chunk: Some(0),
            message: "boom".into(),
        });
        runs.insert(running.run_id, running.clone());
        let BatchAnswer::Done(body) = batch_answer(&b, &runs, Utc::now()) else {
            panic!("expected an answer");
        };
        let data = body["data"].as_array().unwrap();
        // Same rows, in the order they came.
        assert_eq!(
            data.iter()
                .map(|r| r[0].as_u64().unwrap())
                .collect::<Vec<_>>(),
            [2, 0, 1]
        );
        assert_eq!(data[0][1]["status"], "FAILED");
        assert_eq!(data[0][1]["error"], "boom");
        assert_eq!(data[1][1]["error"], "no table 'x'");
        assert_eq!(data[2][1]["status"], "COMPLETED");
        assert_eq!(data[2][1]["rows"], 7);
        assert_eq!(data[2][1]["run_id"], done.run_id.to_string());
    }

    #[test]
    fn an_unstarted_batch_is_pending_until_its_start_is_overdue() {
        let claimed = Utc::now();
        let b = BatchRecord::claim("b", claimed);
        let none = BTreeMap::new();
        assert_eq!(batch_answer(&b, &none, claimed), BatchAnswer::Pending);
        assert_eq!(
            batch_answer(&b, &none, claimed + START_WITHIN),
            BatchAnswer::Pending
        );
        assert_eq!(
            batch_answer(&b, &none, claimed + START_WITHIN + Duration::seconds(1)),
            BatchAnswer::Abandoned
        );
    }

    #[test]
    fn a_batch_about_to_outlive_snowflake_answers_with_run_ids() {
        let running = record(RunStatus::Merging, 3);
        let created = Utc::now() - ANSWER_WITHIN - Duration::seconds(1);
        let b = batch(
            vec![BatchRow {
                row: 0,
                run_id: Some(running.run_id),
                answer: None,
            }],
            created,
        );
        let runs = BTreeMap::from([(running.run_id, running.clone())]);
        let BatchAnswer::Done(body) = batch_answer(&b, &runs, Utc::now()) else {
            panic!("expected an answer");
        };
        let result = &body["data"][0][1];
        assert_eq!(result["status"], "MERGING");
        assert_eq!(result["run_id"], running.run_id.to_string());
        assert!(
            result["message"]
                .as_str()
                .unwrap()
                .contains("sluice.run_status")
        );
        // One second before the limit it still waits; at the limit it answers.
        let created = Utc::now();
        let b = batch(b.rows.clone(), created);
        let just_before = created + ANSWER_WITHIN - Duration::seconds(1);
        assert_eq!(batch_answer(&b, &runs, just_before), BatchAnswer::Pending);
        assert!(matches!(
            batch_answer(&b, &runs, created + ANSWER_WITHIN),
            BatchAnswer::Done(_)
        ));
    }
}
