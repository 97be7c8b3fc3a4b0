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

use super::answer::{ResponseBody, RowError, RowResult, RunSummary, UnknownRun};
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
    pub answer: Option<RowResult>,
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
    Done(ResponseBody),
    /// The request that claimed the batch died before starting its runs (API Gateway gives
    /// a request 29 s): answering 202 would keep Snowflake waiting for nothing.
    Abandoned,
}

/// How long a claimed batch may stay unstarted before it counts as abandoned.
pub const START_WITHIN: Duration = Duration::seconds(60);

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
                Some(record) if record.status.is_terminal() => {
                    RowResult::Run(RunSummary::of(record))
                }
                Some(record) if out_of_time => RowResult::Run(RunSummary {
                    message: Some(still_running(run_id)),
                    ..RunSummary::of(record)
                }),
                None if out_of_time => RowResult::Unknown(UnknownRun {
                    run_id,
                    status: RunStatus::Planned,
                    message: still_running(run_id),
                }),
                _ => return BatchAnswer::Pending,
            },
            (None, Some(answer)) => answer.clone(),
            (None, None) => RowError::new("no run was started for this row").into(),
        };
        results.push((row.row, result));
    }
    BatchAnswer::Done(ResponseBody::new(results))
}

fn still_running(run_id: RunId) -> String {
    format!(
        "still running after {} minutes; it goes on: follow it with SELECT sluice.run_status('{run_id}')",
        ANSWER_WITHIN.num_minutes()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::external_function::answer::RunStory;
    use crate::run::ChunkOutcome;
    use serde_json::Value;

    fn body_value(body: &ResponseBody) -> Value {
        serde_json::to_value(body).unwrap()
    }

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
        let answer = serde_json::to_value(RunStory::of(&big)).unwrap();
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
        let body = ResponseBody::new(
            (0..max_rows).map(|row| (row, RowResult::Story(Box::new(RunStory::of(&big))))),
        );
        let proxied = serde_json::to_string(&serde_json::to_string(&body).unwrap()).unwrap();
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
                    answer: Some(RowError::new("no table 'x'").into()),
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
        let body = body_value(&body);
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
        let body = body_value(&body);
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
