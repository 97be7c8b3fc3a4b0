//! `sluice.check_source(source [, table])`: `sluice check`'s source and Snowflake checks of one
//! source's tables, asked from Snowflake. The request is one row per call (`[row, source]` or
//! `[row, source, table]`); the answer is one JSON object per row, summarising the checks
//! table by table ([`CheckAnswer`]): counts, then every failure and warning with its fix, of
//! a bounded size.
//!
//! The function is not called `CHECK`: that word is reserved in Snowflake SQL ("Reserved by
//! ANSI", <https://docs.snowflake.com/en/sql-reference/reserved-keywords>), so an analyst
//! would have to quote it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::answer::answer_error;
use super::{BatchError, Row, kind, parse_batch};
use crate::check::{CheckResult, Report, Status};

/// `sluice.check_source(source [, table])`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckRequest {
    pub source: String,
    /// One table of the source (`schema.table` as configured); every table when absent.
    pub table: Option<String>,
}

pub fn parse_check_batch(
    body: &[u8],
    max_rows: usize,
) -> Result<Vec<Row<CheckRequest>>, BatchError> {
    parse_batch(body, max_rows, parse_check_args)
}

fn parse_check_args(args: &[Value]) -> Result<CheckRequest, String> {
    let text = |name: &str, v: &Value| match v {
        Value::String(s) if !s.trim().is_empty() => Ok(s.trim().to_owned()),
        Value::String(_) => Err(format!("{name} must not be empty")),
        other => Err(format!("{name} must be a string, got {}", kind(other))),
    };
    match args {
        [source] => Ok(CheckRequest {
            source: text("source", source)?,
            table: None,
        }),
        // SQL NULL for the table: every table, as without it.
        [source, Value::Null] => Ok(CheckRequest {
            source: text("source", source)?,
            table: None,
        }),
        [source, table] => Ok(CheckRequest {
            source: text("source", source)?,
            table: Some(text("table", table)?),
        }),
        _ => Err(format!(
            "sluice.check_source takes 1 or 2 arguments (source [, table]), got {}",
            args.len()
        )),
    }
}

/// The most problems one answer lists; the rest are counted in `more_problems`
/// (`sluice check` prints them all).
pub const MAX_PROBLEMS: usize = 40;

/// One table's counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableCounts {
    pub ok: bool,
    pub passed: usize,
    pub warnings: usize,
    pub failed: usize,
}

/// What `sluice.check_source` answers for one row:
///
/// ```json
/// {"source": "shop", "ok": false, "passed": 21, "warnings": 1, "failed": 1,
///  "tables": {"public.orders": {"ok": true, "passed": 9, "warnings": 1, "failed": 0}, …},
///  "problems": [{"family": "source", "check": "cursor index", "target": "shop/public.orders",
///                "result": "warn", "detail": "…", "fix": "CREATE INDEX …"}, …]}
/// ```
///
/// `tables` counts the checks of each table (those whose target is `source/table`); the
/// totals also count the source's own (reachable, TLS, its secret) and the account's
/// (Snowflake's file format, stage, session). `problems` lists failures first, then
/// warnings, at most [`MAX_PROBLEMS`] (`more_problems` counts the rest), each detail cut to
/// 500 bytes. `cut_short` says which checks did not finish in the time the call has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckAnswer {
    pub source: String,
    pub ok: bool,
    pub passed: usize,
    pub warnings: usize,
    pub failed: usize,
    pub tables: BTreeMap<String, TableCounts>,
    pub problems: Vec<CheckResult>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub more_problems: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cut_short: Option<String>,
}

impl CheckAnswer {
    /// The answer for `source`'s `tables` (their `schema.table` names) from its report;
    /// `cut_short` when the checks ran out of time (the report then holds a failure saying
    /// so).
    pub fn of(source: &str, tables: &[&str], report: &Report, cut_short: Option<String>) -> Self {
        let counts = report.counts();
        let mut per_table: BTreeMap<String, TableCounts> = tables
            .iter()
            .map(|t| {
                (
                    (*t).to_owned(),
                    TableCounts {
                        ok: true,
                        passed: 0,
                        warnings: 0,
                        failed: 0,
                    },
                )
            })
            .collect();
        for check in &report.checks {
            let Some(table) = check
                .target
                .strip_prefix(source)
                .and_then(|t| t.strip_prefix('/'))
            else {
                continue;
            };
            if let Some(counts) = per_table.get_mut(table) {
                match check.status {
                    Status::Pass => counts.passed += 1,
                    Status::Warn => counts.warnings += 1,
                    Status::Fail => {
                        counts.failed += 1;
                        counts.ok = false;
                    }
                }
            }
        }
        let mut problems: Vec<CheckResult> = report
            .checks
            .iter()
            .filter(|c| c.status != Status::Pass)
            .cloned()
            .collect();
        // Failures first; the sort is stable, so each keeps the report's order.
        problems.sort_by_key(|c| std::cmp::Reverse(c.status));
        let more = problems.len().saturating_sub(MAX_PROBLEMS);
        problems.truncate(MAX_PROBLEMS);
        for problem in &mut problems {
            problem.detail = answer_error(&problem.detail);
            problem.fix = problem.fix.as_deref().map(answer_error);
        }
        CheckAnswer {
            source: source.to_owned(),
            ok: report.ok(),
            passed: counts.passed,
            warnings: counts.warnings,
            failed: counts.failed,
            tables: per_table,
            problems,
            more_problems: (more > 0).then_some(more),
            cut_short,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::Family;

    #[test]
    fn rows_take_a_source_and_maybe_a_table() {
        let body = br#"{"data": [
            [0, "shop"],
            [1, "shop", "public.orders"],
            [2, "shop", null],
            [3, 7],
            [4],
            [5, "shop", "t", "x"],
            [6, " "]
        ]}"#;
        let rows = parse_check_batch(body, 10).unwrap();
        assert_eq!(
            rows[0].request,
            Ok(CheckRequest {
                source: "shop".into(),
                table: None
            })
        );
        assert_eq!(
            rows[1].request.as_ref().unwrap().table.as_deref(),
            Some("public.orders")
        );
        assert_eq!(rows[2].request.as_ref().unwrap().table, None);
        assert_eq!(
            rows[3].request.clone().unwrap_err(),
            "source must be a string, got a number"
        );
        assert!(
            rows[4]
                .request
                .clone()
                .unwrap_err()
                .contains("takes 1 or 2 arguments (source [, table]), got 0")
        );
        assert!(rows[5].request.clone().unwrap_err().contains("got 3"));
        assert_eq!(
            rows[6].request.clone().unwrap_err(),
            "source must not be empty"
        );
        assert!(matches!(
            parse_check_batch(br#"{"data": [["x", "shop"]]}"#, 10),
            Err(BatchError::Body(m)) if m.contains("data[0][0] must be the row number")
        ));
    }

    #[test]
    fn the_answer_counts_per_table_and_lists_failures_first() {
        let report = Report::new(vec![
            CheckResult::pass(Family::Source, "reachable", "shop", "PostgreSQL 16"),
            CheckResult::warn(Family::Source, "cursor index", "shop/public.orders", "scan")
                .with_fix("CREATE INDEX"),
            CheckResult::fail(Family::Source, "columns", "shop/public.items", "no nope")
                .with_fix("columns: [a]"),
            CheckResult::pass(Family::Snowflake, "raw table", "shop/public.items", ""),
            CheckResult::fail(
                Family::Snowflake,
                "file format",
                "\"DB\".\"RAW\".\"F\"",
                "x".repeat(900),
            ),
        ]);
        let answer = CheckAnswer::of("shop", &["public.orders", "public.items"], &report, None);
        assert!(!answer.ok);
        assert_eq!((answer.passed, answer.warnings, answer.failed), (2, 1, 2));
        assert_eq!(
            answer.tables["public.items"],
            TableCounts {
                ok: false,
                passed: 1,
                warnings: 0,
                failed: 1
            }
        );
        assert!(answer.tables["public.orders"].ok);
        let order: Vec<&str> = answer.problems.iter().map(|p| p.check.as_str()).collect();
        assert_eq!(order, ["columns", "file format", "cursor index"]);
        assert!(answer.problems[1].detail.len() < 600);
        let json = serde_json::to_value(&answer).unwrap();
        assert_eq!(json["problems"][0]["fix"], "columns: [a]");
        assert_eq!(json["problems"][2]["result"], "warn");
        assert!(json.get("cut_short").is_none());
        let back: CheckAnswer = serde_json::from_value(json).unwrap();
        assert_eq!(back, answer);
    }
}
