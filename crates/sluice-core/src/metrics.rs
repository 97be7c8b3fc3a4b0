//! The metrics of a run that ended, as one CloudWatch Embedded Metric Format (EMF) document:
//! a JSON object whose `_aws.CloudWatchMetrics` tells CloudWatch Logs which of its members to
//! turn into metrics, so the functions publish metrics by writing a log line, with no
//! CloudWatch API call and no extra permission
//! (<https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html>;
//! in Lambda, "CloudWatch Logs extracts metrics from any log events that follow the embedded
//! metric format specification":
//! <https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Lambda.html>).
//!
//! This module decides what is measured and builds the document from a [`RunRecord`], the
//! time and the table's `max_lag`; writing it is the functions' (`functions/src/metrics.rs`).
//! The names here are the ones the template's alarms and dashboard read: the template test
//! takes them from these constants. Nothing here reads a clock or writes anywhere.
//!
//! What one document holds (the README's "Metrics, alarms and the dashboard" lists it too):
//! - per table (`Table`, the table key `source/schema.table`) and per source (`Source`):
//!   every metric below;
//! - for the whole stack (no dimension): every metric but [`RUNS_FAILED`], whose
//!   dimensionless count the template's log metric filters already make from the `run failed`
//!   line every failure path logs once (including failures the engine records on its own,
//!   such as a dead run taken over), so it is not counted twice.

use std::time::Duration;

use chrono::{DateTime, NaiveTime, SecondsFormat, Utc};
use serde_json::{Map, Value, json};
use thiserror::Error;

use crate::plan::ScalarValue;
use crate::run::{RunKind, RunRecord, RunStatus};

/// The environment variable that names the functions' metric namespace (the template sets it
/// to `sluice/${AWS::StackName}`, the namespace its alarms read). Unset: no metrics.
pub const NAMESPACE_ENV: &str = "SLUICE_METRICS_NAMESPACE";

/// The dimension of one table: its key, `source/schema.table`.
pub const TABLE: &str = "Table";
/// The dimension of one source: the `name` of its `sources` entry.
pub const SOURCE: &str = "Source";

/// 1 for every run that ended (COMPLETED or FAILED), `Count`.
pub const RUNS: &str = "Runs";
/// 1 for a run that FAILED, 0 for one that completed, `Count`. Per table and source only (see
/// the module's note).
pub const RUNS_FAILED: &str = "RunsFailed";
/// Rows extracted (the chunks recorded done, also for a run that failed after some), `Count`.
pub const ROWS: &str = "Rows";
/// Bytes of Parquet written, `Bytes`.
pub const BYTES: &str = "Bytes";
/// Parquet files written, `Count`.
pub const FILES: &str = "Files";
/// From the run's creation to its end, `Seconds`.
pub const RUN_SECONDS: &str = "RunSeconds";
/// The phases' durations, `Seconds`, each present when the run went through the phase.
pub const PLAN_SECONDS: &str = "PlanSeconds";
pub const EXTRACT_SECONDS: &str = "ExtractSeconds";
pub const LOAD_SECONDS: &str = "LoadSeconds";
pub const MERGE_SECONDS: &str = "MergeSeconds";
/// How far behind the source the table is when the run ends, `Seconds` (see [`lag`]).
pub const LAG_SECONDS: &str = "LagSeconds";
/// A CDC table's replication slot (or binary log) lag when the run was planned: the WAL the
/// slot held, or the log after the table's position, `Bytes`.
pub const SLOT_LAG_BYTES: &str = "SlotLagBytes";
/// 1 when the table is behind more than it allows (`max_lag`, or for a CDC table also
/// `load.max_slot_lag_mb`), 0 when not, `Count`; absent when the table sets no threshold. The
/// template's single lag alarm watches its stack-wide maximum.
pub const LAG_OVER_THRESHOLD: &str = "LagOverThreshold";
/// Times the run was carried on after the invocation driving it died (its resumptions),
/// `Count`. Lambda's own retries of a failed invocation are the functions' `AWS/Lambda`
/// `Errors`; the attempts of one chunk are not in the run record.
pub const RETRIES: &str = "Retries";

/// Every metric name a document may hold, in the order it lists them.
pub const METRICS: [&str; 14] = [
    RUNS,
    RUNS_FAILED,
    ROWS,
    BYTES,
    FILES,
    RUN_SECONDS,
    PLAN_SECONDS,
    EXTRACT_SECONDS,
    LOAD_SECONDS,
    MERGE_SECONDS,
    LAG_SECONDS,
    SLOT_LAG_BYTES,
    LAG_OVER_THRESHOLD,
    RETRIES,
];

/// The message of the log line a document is, for a reader of the logs.
pub const MESSAGE: &str = "run metrics";

/// The most metric definitions one directive may hold: the Metrics array "MUST NOT contain
/// more than 100 MetricDefinition objects" (EMF specification, MetricDirective object).
pub const MAX_METRICS_PER_DIRECTIVE: usize = 100;

/// The units sluice's metrics use; CloudWatch's `MetricDatum` lists the valid ones, which
/// the EMF specification's schema repeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Count,
    Bytes,
    Seconds,
}

impl Unit {
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Count => "Count",
            Unit::Bytes => "Bytes",
            Unit::Seconds => "Seconds",
        }
    }

    /// The unit each metric is published in.
    pub fn of(metric: &str) -> Unit {
        match metric {
            BYTES | SLOT_LAG_BYTES => Unit::Bytes,
            RUN_SECONDS | PLAN_SECONDS | EXTRACT_SECONDS | LOAD_SECONDS | MERGE_SECONDS
            | LAG_SECONDS => Unit::Seconds,
            _ => Unit::Count,
        }
    }
}

/// The metric of a phase's duration.
pub fn phase_metric(phase: RunStatus) -> Option<&'static str> {
    match phase {
        RunStatus::Planned => Some(PLAN_SECONDS),
        RunStatus::Extracting => Some(EXTRACT_SECONDS),
        RunStatus::Loading => Some(LOAD_SECONDS),
        RunStatus::Merging => Some(MERGE_SECONDS),
        RunStatus::Completed | RunStatus::Failed => None,
    }
}

/// Whether a metric is also published for the whole stack, without dimensions.
pub fn stack_wide(metric: &str) -> bool {
    metric != RUNS_FAILED
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum MetricsError {
    /// CloudWatch namespaces are 1 to 255 printable ASCII characters, at least one not a space,
    /// not starting with `:` (<https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/API_Metric.html>,
    /// "Length Constraints: Minimum length of 1. Maximum length of 255. Pattern: [^:].*";
    /// <https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/API_MetricStreamFilter.html>,
    /// "only ASCII printable characters (ASCII range 32 through 126)"), and `AWS/` is AWS's.
    #[error(
        "{env} '{namespace}' is not a CloudWatch namespace: 1 to 255 printable ASCII characters, not starting with ':' or 'AWS/' (the template sets sluice/<stack name>)",
        env = NAMESPACE_ENV
    )]
    Namespace { namespace: String },
}

/// Checks a namespace against CloudWatch's rules (see [`MetricsError::Namespace`]).
pub fn check_namespace(namespace: &str) -> Result<(), MetricsError> {
    let printable = namespace.bytes().all(|b| (32..=126).contains(&b));
    let ok = printable
        && (1..=255).contains(&namespace.len())
        && !namespace.trim().is_empty()
        && !namespace.starts_with(':')
        && !namespace.starts_with("AWS/");
    if ok {
        Ok(())
    } else {
        Err(MetricsError::Namespace {
            namespace: namespace.to_owned(),
        })
    }
}

/// How far behind its source a table is when a run of it ends (see [`lag`]).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Lag {
    pub seconds: Option<f64>,
    pub slot_bytes: Option<u64>,
    /// Whether either is over the table's threshold; `None` when it has none to compare.
    pub over: Option<bool>,
}

/// The table's lag when `record` ended at `now`, against `max_lag`:
/// - `seconds`: `now` minus the table's watermark when the watermark is a time (a `date`,
///   `timestamp` or `timestamptz` cursor; a `timestamp` without time zone is read as UTC, the
///   zone sluice's sessions use, and a date as its midnight): the one the run committed, or
///   for a failed run the one it left in place, so a table whose runs keep failing shows its
///   lag growing. Otherwise (a full load, an integer cursor, CDC) a completed run is as fresh
///   as its plan: `now` minus the plan's time, when the source's rows, bounds or log end were
///   read; a CDC run that stopped at `load.max_changes` before the log end it planned has no
///   such time, nor has a failed run. Never negative (a cursor set in the future reads 0).
/// - `slot_bytes`: a CDC run's slot lag as planned (see [`SLOT_LAG_BYTES`]).
/// - `over`: `seconds` over `max_lag`, or for CDC the slot over `load.max_slot_lag_mb`.
///
/// Key sets and validations read nothing new, so they have no lag.
pub fn lag(record: &RunRecord, now: DateTime<Utc>, max_lag: Option<Duration>) -> Lag {
    if !record.kind().loads_rows() {
        return Lag::default();
    }
    let completed = record.status == RunStatus::Completed;
    let watermark = if completed {
        record.watermark_committed.as_ref()
    } else {
        record.watermark_before.as_ref()
    };
    let fresh_to = match watermark.and_then(watermark_time) {
        Some(at) => Some(at),
        None if completed => record.plan.as_ref().and_then(|plan| {
            let stopped_early = plan.cdc.as_ref().is_some_and(|cdc| {
                !cdc.snapshot
                    && record
                        .chunks
                        .get(&0)
                        .and_then(|c| c.cdc_reached)
                        .is_some_and(|reached| reached < cdc.upto)
            });
            (!stopped_early).then_some(plan.started_at)
        }),
        None => None,
    };
    let seconds = fresh_to.map(|at| seconds_between(at, now).max(0.0));
    let cdc = record.plan.as_ref().and_then(|plan| {
        let cdc = plan.cdc.as_ref()?;
        let limit = plan
            .table
            .load
            .max_slot_lag_mb
            .unwrap_or(crate::config::DEFAULT_MAX_SLOT_LAG_MB);
        Some((cdc.retained_wal, cdc.lag_warning(limit).is_some()))
    });
    let time_over = match (seconds, max_lag) {
        (Some(seconds), Some(max)) => Some(seconds > max.as_secs_f64()),
        _ => None,
    };
    let over = match (time_over, cdc.map(|(_, over)| over)) {
        (None, None) => None,
        (a, b) => Some(a.unwrap_or(false) || b.unwrap_or(false)),
    };
    Lag {
        seconds,
        slot_bytes: cdc.map(|(bytes, _)| bytes),
        over,
    }
}

/// The instant a time watermark stands for.
fn watermark_time(value: &ScalarValue) -> Option<DateTime<Utc>> {
    match value {
        ScalarValue::Int(_) => None,
        ScalarValue::Date(d) => Some(d.and_time(NaiveTime::MIN).and_utc()),
        ScalarValue::Timestamp(t) => Some(t.and_utc()),
        ScalarValue::TimestampTz(t) => Some(*t),
    }
}

fn seconds_between(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    (to - from)
        .num_microseconds()
        .map_or((to - from).num_seconds() as f64, |us| us as f64 / 1e6)
}

/// The metrics of one ended run, before they are written as a document.
#[derive(Debug, Clone, PartialEq)]
pub struct RunMetrics {
    /// The table key, as a dimension value.
    pub table: String,
    /// The source's name, as a dimension value.
    pub source: String,
    pub run_id: String,
    pub status: RunStatus,
    pub kind: RunKind,
    /// `(name, value)` in [`METRICS`]' order; only the metrics the run has.
    pub values: Vec<(&'static str, f64)>,
}

/// The metrics of `record`, a run that ended, at `now`; `max_lag` is the table's threshold
/// (see [`lag_threshold`]).
pub fn run_metrics(
    record: &RunRecord,
    now: DateTime<Utc>,
    max_lag: Option<Duration>,
) -> RunMetrics {
    let mut values: Vec<(&'static str, f64)> = vec![
        (RUNS, 1.0),
        (
            RUNS_FAILED,
            if record.status == RunStatus::Failed {
                1.0
            } else {
                0.0
            },
        ),
        (ROWS, record.rows() as f64),
        (BYTES, record.bytes() as f64),
        (FILES, record.files() as f64),
        (RUN_SECONDS, record.seconds().max(0.0)),
    ];
    for (phase, timing) in &record.phases {
        if let (Some(metric), Some(seconds)) = (phase_metric(*phase), timing.seconds()) {
            values.push((metric, seconds.max(0.0)));
        }
    }
    let lag = lag(record, now, max_lag);
    if let Some(seconds) = lag.seconds {
        values.push((LAG_SECONDS, seconds));
    }
    if let Some(bytes) = lag.slot_bytes {
        values.push((SLOT_LAG_BYTES, bytes as f64));
    }
    if let Some(over) = lag.over {
        values.push((LAG_OVER_THRESHOLD, if over { 1.0 } else { 0.0 }));
    }
    values.push((RETRIES, record.resumptions.len() as f64));
    values.sort_by_key(|(name, _)| METRICS.iter().position(|m| m == name));
    let source = record
        .table_key
        .split_once('/')
        .map_or(record.table_key.as_str(), |(source, _)| source);
    RunMetrics {
        table: dimension_value(&record.table_key),
        source: dimension_value(source),
        run_id: record.run_id.to_string(),
        status: record.status,
        kind: record.kind(),
        values,
    }
}

/// The table's lag threshold as the run was planned (its `max_lag`); `None` for a run that
/// ended before it had a plan, or a table without one.
pub fn lag_threshold(record: &RunRecord) -> Option<Duration> {
    record.plan.as_ref().and_then(|plan| plan.table.max_lag())
}

/// A dimension value CloudWatch takes: "must contain only ASCII characters and must include at
/// least one non-whitespace character. ASCII control characters are not supported", at most
/// 1,024 characters (<https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/API_Dimension.html>).
/// A table named outside ASCII gets `?` for each other character.
pub fn dimension_value(text: &str) -> String {
    let mut value: String = text
        .chars()
        .map(|c| {
            if c.is_ascii() && !c.is_ascii_control() {
                c
            } else {
                '?'
            }
        })
        .take(1024)
        .collect();
    if value.trim().is_empty() {
        value = "-".to_owned();
    }
    value
}

impl RunMetrics {
    /// The EMF document, at `now`, in `namespace`, as the log line Lambda's JSON log format
    /// reads at `level`.
    ///
    /// Its members: `_aws` (`Timestamp`, `now` in milliseconds since the epoch, and two
    /// directives: one with the dimension sets `[Table]` and `[Source]` over every metric, one
    /// with the empty set over the [`stack_wide`] ones), the dimension values `Table` and
    /// `Source`, one number per metric, and for the logs `run_id`, `status`, `kind`, and
    /// `timestamp` (RFC 3339), `level` and `message`. Lambda's JSON log format reads the last
    /// three: "If the "level" value field is invalid or missing, Lambda will assign the log
    /// output the level INFO" and filters by it, and without a valid RFC 3339 `timestamp` it
    /// also "will assign the log the level INFO"
    /// (<https://docs.aws.amazon.com/lambda/latest/dg/monitoring-cloudwatchlogs-log-level.html>),
    /// so a document with neither would be dropped under `ApplicationLogLevel: WARN`. The
    /// specification lets the root hold such members: "The root node MAY contain any other
    /// members".
    pub fn document(
        &self,
        namespace: &str,
        now: DateTime<Utc>,
        level: &str,
    ) -> Result<Value, MetricsError> {
        check_namespace(namespace)?;
        let definitions = |keep: &dyn Fn(&str) -> bool| -> Vec<Value> {
            self.values
                .iter()
                .filter(|(name, _)| keep(name))
                .map(|(name, _)| json!({"Name": name, "Unit": Unit::of(name).as_str()}))
                .collect()
        };
        let mut root = Map::new();
        root.insert(
            "_aws".into(),
            json!({
                "Timestamp": now.timestamp_millis(),
                "CloudWatchMetrics": [
                    {
                        "Namespace": namespace,
                        "Dimensions": [[TABLE], [SOURCE]],
                        "Metrics": definitions(&|_| true),
                    },
                    {
                        "Namespace": namespace,
                        "Dimensions": [[]],
                        "Metrics": definitions(&stack_wide),
                    },
                ],
            }),
        );
        root.insert(
            "timestamp".into(),
            Value::from(now.to_rfc3339_opts(SecondsFormat::Micros, true)),
        );
        root.insert("level".into(), Value::from(level));
        root.insert("message".into(), Value::from(MESSAGE));
        root.insert(TABLE.into(), Value::from(self.table.as_str()));
        root.insert(SOURCE.into(), Value::from(self.source.as_str()));
        root.insert("run_id".into(), Value::from(self.run_id.as_str()));
        root.insert("status".into(), Value::from(self.status.as_str()));
        root.insert("kind".into(), Value::from(self.kind.as_str()));
        for (name, value) in &self.values {
            // Whole counts are written as integers; JSON numbers either way.
            let number = if value.fract() == 0.0 && value.abs() < 9.0e15 {
                Value::from(*value as i64)
            } else {
                Value::from(*value)
            };
            root.insert((*name).into(), number);
        }
        Ok(Value::Object(root))
    }

    /// The document as one line of compact JSON ending in a newline, as it must be written:
    /// the specification wants "a valid JSON object with no additional data at the beginning
    /// or end of the LogEvent message string", and Lambda makes one log event of each line.
    pub fn line(
        &self,
        namespace: &str,
        now: DateTime<Utc>,
        level: &str,
    ) -> Result<String, MetricsError> {
        let mut line = self.document(namespace, now, level)?.to_string();
        line.push('\n');
        Ok(line)
    }
}

/// The level a metrics line is written at so that Lambda keeps it: INFO, or the function's
/// application log level (`AWS_LAMBDA_LOG_LEVEL`) when that is higher, as Lambda drops every
/// line below it (see [`RunMetrics::document`]).
pub fn line_level(lambda_log_level: Option<&str>) -> &'static str {
    match lambda_log_level
        .map(|l| l.trim().to_ascii_uppercase())
        .as_deref()
    {
        Some("WARN") => "WARN",
        Some("ERROR") => "ERROR",
        Some("FATAL") => "FATAL",
        _ => "INFO",
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use chrono::{NaiveDate, TimeZone};

    use super::*;
    use crate::plan::{CdcWindow, CursorWindow, RunPlan};
    use crate::run::{ChunkOutcome, FileEntry, Resumption, RunId};
    use crate::{Config, Engine};

    /// Every unit CloudWatch takes, as the EMF specification's JSON schema lists them.
    const CLOUDWATCH_UNITS: &[&str] = &[
        "Seconds",
        "Microseconds",
        "Milliseconds",
        "Bytes",
        "Kilobytes",
        "Megabytes",
        "Gigabytes",
        "Terabytes",
        "Bits",
        "Kilobits",
        "Megabits",
        "Gigabits",
        "Terabits",
        "Percent",
        "Count",
        "Bytes/Second",
        "Kilobytes/Second",
        "Megabytes/Second",
        "Gigabytes/Second",
        "Terabytes/Second",
        "Bits/Second",
        "Kilobits/Second",
        "Megabits/Second",
        "Gigabits/Second",
        "Terabits/Second",
        "Count/Second",
        "None",
    ];

    fn at(h: u32, m: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 3, 4, h, m, s).unwrap()
    }

    fn table(extra: &str) -> crate::TableConfig {
        let yaml = format!(
            "sources:\n  - name: shop\n    engine: postgres\n    connection:\n      url: postgres://u@h/db\ntables:\n  - source: shop\n    table: public.orders\n    primary_key: [id]\n{extra}"
        );
        Config::from_yaml(&yaml, "t").unwrap().tables.remove(0)
    }

    fn plan(table: crate::TableConfig, started_at: DateTime<Utc>) -> RunPlan {
        RunPlan {
            run_id: RunId::at(started_at),
            engine: Engine::Postgres,
            started_at,
            table,
            columns: vec!["id".into()],
            cursor: None,
            partition_column: None,
            chunks: vec![crate::plan::ChunkRange::All, crate::plan::ChunkRange::All],
            snapshot: None,
            casts: BTreeMap::new(),
            warnings: BTreeMap::new(),
            keyset: false,
            cdc: None,
        }
    }

    fn chunk(rows: u64, bytes: u64, files: u32) -> ChunkOutcome {
        ChunkOutcome {
            rows,
            bytes,
            files: (0..files)
                .map(|part| FileEntry {
                    key: format!("k{part}"),
                    chunk: 0,
                    part,
                    rows: 1,
                    bytes: 1,
                })
                .collect(),
            seconds: 1.0,
            ..ChunkOutcome::default()
        }
    }

    /// A run of `shop/public.orders` planned at 10:00:00 that went through every phase:
    /// planned 2 s, extracted 30 s, loaded 5 s, merged 3.5 s; two chunks of 700 + 300 rows.
    fn completed(table: crate::TableConfig) -> RunRecord {
        let t0 = at(10, 0, 0);
        let mut r = RunRecord::new(RunId::at(t0), "shop/public.orders".into(), t0);
        r.plan = Some(plan(table, t0));
        let ms = chrono::Duration::milliseconds;
        r.transition(RunStatus::Extracting, t0 + ms(2_000)).unwrap();
        r.chunks.insert(0, chunk(700, 7_000, 2));
        r.chunks.insert(1, chunk(300, 3_000, 1));
        r.transition(RunStatus::Loading, t0 + ms(32_000)).unwrap();
        r.transition(RunStatus::Merging, t0 + ms(37_000)).unwrap();
        r.transition(RunStatus::Completed, t0 + ms(40_500)).unwrap();
        r
    }

    fn value(m: &RunMetrics, name: &str) -> Option<f64> {
        m.values.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
    }

    /// A completed full load: counts from the chunks, seconds from the phases, lag from the
    /// plan's time (a full load is as fresh as its snapshot), under and then over `max_lag`.
    #[test]
    fn a_completed_run_counts_its_chunks_phases_and_lag() {
        let record = completed(table("    max_lag: 1h\n"));
        let now = at(10, 1, 0);
        let threshold = lag_threshold(&record);
        assert_eq!(threshold, Some(Duration::from_secs(3600)));
        let m = run_metrics(&record, now, threshold);
        assert_eq!(
            m.values,
            vec![
                (RUNS, 1.0),
                (RUNS_FAILED, 0.0),
                (ROWS, 1000.0),
                (BYTES, 10_000.0),
                (FILES, 3.0),
                (RUN_SECONDS, 40.5),
                (PLAN_SECONDS, 2.0),
                (EXTRACT_SECONDS, 30.0),
                (LOAD_SECONDS, 5.0),
                (MERGE_SECONDS, 3.5),
                (LAG_SECONDS, 60.0),
                (LAG_OVER_THRESHOLD, 0.0),
                (RETRIES, 0.0),
            ]
        );
        assert_eq!(
            (m.table.as_str(), m.source.as_str()),
            ("shop/public.orders", "shop")
        );
        // An hour and a second after the plan: over.
        let late = run_metrics(&record, at(11, 0, 1), threshold);
        assert_eq!(value(&late, LAG_SECONDS), Some(3601.0));
        assert_eq!(value(&late, LAG_OVER_THRESHOLD), Some(1.0));
        // No max_lag: the lag is measured, nothing is compared.
        let free = run_metrics(&completed(table("")), now, None);
        assert_eq!(value(&free, LAG_SECONDS), Some(60.0));
        assert_eq!(value(&free, LAG_OVER_THRESHOLD), None);
    }

    /// An incremental table's lag is now minus its watermark: the committed one when it
    /// completed, the one left in place when it failed (whose rows, files and phases so far
    /// are still counted, and whose failure is 1).
    #[test]
    fn lag_is_measured_from_the_watermark_and_a_failed_run_keeps_the_old_one() {
        let t = table("    load: { mode: incremental, cursor: updated_at }\n    max_lag: 30m\n");
        let mut record = completed(t.clone());
        record.plan.as_mut().unwrap().cursor = Some(CursorWindow {
            column: "updated_at".into(),
            lower: None,
            upper: None,
            include_nulls: false,
            hold: None,
        });
        record.watermark_before = Some(ScalarValue::TimestampTz(at(8, 0, 0)));
        record.watermark_committed = Some(ScalarValue::Timestamp(at(9, 45, 0).naive_utc()));
        let now = at(10, 1, 0);
        let m = run_metrics(&record, now, lag_threshold(&record));
        assert_eq!(value(&m, LAG_SECONDS), Some(16.0 * 60.0));
        assert_eq!(value(&m, LAG_OVER_THRESHOLD), Some(0.0));

        let t0 = at(10, 0, 0);
        let mut failed = RunRecord::new(RunId::at(t0), "shop/public.orders".into(), t0);
        failed.plan = Some(plan(t, t0));
        failed.watermark_before = Some(ScalarValue::TimestampTz(at(8, 0, 0)));
        failed
            .transition(RunStatus::Extracting, t0 + chrono::Duration::seconds(1))
            .unwrap();
        failed.chunks.insert(0, chunk(700, 7_000, 2));
        failed.fail("boom".into(), Some(1), t0 + chrono::Duration::seconds(11));
        let m = run_metrics(&failed, now, lag_threshold(&failed));
        assert_eq!(
            m.values,
            vec![
                (RUNS, 1.0),
                (RUNS_FAILED, 1.0),
                (ROWS, 700.0),
                (BYTES, 7_000.0),
                (FILES, 2.0),
                (RUN_SECONDS, 11.0),
                (PLAN_SECONDS, 1.0),
                (EXTRACT_SECONDS, 10.0),
                (LAG_SECONDS, 2.0 * 3600.0 + 60.0),
                (LAG_OVER_THRESHOLD, 1.0),
                (RETRIES, 0.0),
            ]
        );
        assert_eq!(m.status, RunStatus::Failed);

        // A date watermark stands for its midnight; one in the future is no lag.
        record.watermark_committed = Some(ScalarValue::Date(
            NaiveDate::from_ymd_opt(2025, 3, 4).unwrap(),
        ));
        assert_eq!(
            value(&run_metrics(&record, now, None), LAG_SECONDS),
            Some(36_060.0)
        );
        record.watermark_committed = Some(ScalarValue::TimestampTz(at(23, 0, 0)));
        assert_eq!(
            value(&run_metrics(&record, now, None), LAG_SECONDS),
            Some(0.0)
        );
    }

    /// A failed run without a plan (it failed planning) or with an integer watermark has no
    /// lag to tell: neither the lag nor the threshold is written.
    #[test]
    fn a_run_that_cannot_tell_its_lag_writes_none() {
        let t0 = at(10, 0, 0);
        let mut r = RunRecord::new(RunId::at(t0), "shop/public.orders".into(), t0);
        r.fail(
            "cannot connect".into(),
            None,
            t0 + chrono::Duration::seconds(3),
        );
        let m = run_metrics(&r, at(10, 1, 0), lag_threshold(&r));
        assert_eq!(lag_threshold(&r), None);
        assert_eq!(
            m.values,
            vec![
                (RUNS, 1.0),
                (RUNS_FAILED, 1.0),
                (ROWS, 0.0),
                (BYTES, 0.0),
                (FILES, 0.0),
                (RUN_SECONDS, 3.0),
                (PLAN_SECONDS, 3.0),
                (RETRIES, 0.0),
            ]
        );
        let mut failed = completed(table("    max_lag: 1h\n"));
        failed.status = RunStatus::Failed;
        failed.watermark_before = Some(ScalarValue::Int(41));
        let measured = lag(&failed, at(12, 0, 0), Some(Duration::from_secs(60)));
        assert_eq!(measured, Lag::default());
        // Key sets read no new rows: no lag either, whatever their plan.
        let mut keyset = completed(table("    max_lag: 1h\n"));
        keyset.keyset = true;
        assert_eq!(
            lag(&keyset, at(12, 0, 0), Some(Duration::from_secs(60))),
            Lag::default()
        );
    }

    /// A CDC run: the slot's WAL as planned, compared with `load.max_slot_lag_mb`; its time lag
    /// is the plan's when it read to the planned log end, and unknown when `max_changes`
    /// stopped it before. Resumptions are its retries.
    #[test]
    fn a_cdc_run_reports_its_slot_lag_against_max_slot_lag_mb() {
        let mut record = completed(table("    load: { mode: cdc, max_slot_lag_mb: 1 }\n"));
        let cdc = CdcWindow {
            slot: "sluice_shop_public_orders".into(),
            publication: "p".into(),
            from: 100,
            upto: 900,
            max_changes: 10,
            snapshot: false,
            retained_wal: 3 * 1024 * 1024,
        };
        record.plan.as_mut().unwrap().cdc = Some(cdc.clone());
        record.chunks.get_mut(&0).unwrap().cdc_reached = Some(900);
        record.resumptions.push(Resumption {
            at: at(10, 0, 10),
            reason: "its lease lapsed".into(),
            chunks_done: 1,
            chunks_total: 2,
            by: None,
            carried_out: true,
        });
        let now = at(10, 0, 30);
        let m = run_metrics(&record, now, None);
        assert_eq!(value(&m, LAG_SECONDS), Some(30.0));
        assert_eq!(value(&m, SLOT_LAG_BYTES), Some(3.0 * 1024.0 * 1024.0));
        assert_eq!(value(&m, LAG_OVER_THRESHOLD), Some(1.0));
        assert_eq!(value(&m, RETRIES), Some(1.0));
        // Within the slot's limit; stopped early: no time lag, the slot still compared.
        record.plan.as_mut().unwrap().cdc = Some(CdcWindow {
            retained_wal: 512 * 1024,
            ..cdc
        });
        record.chunks.get_mut(&0).unwrap().cdc_reached = Some(500);
        let m = run_metrics(&record, now, Some(Duration::from_secs(60)));
        assert_eq!(value(&m, LAG_SECONDS), None);
        assert_eq!(value(&m, SLOT_LAG_BYTES), Some(512.0 * 1024.0));
        assert_eq!(value(&m, LAG_OVER_THRESHOLD), Some(0.0));
    }

    /// The document keeps the specification's rules: `_aws.Timestamp` an integer of
    /// milliseconds, every directive with a namespace, dimension sets of at most 30 (the
    /// older text says 9) keys naming string members, at most 100 metric definitions naming
    /// numeric members in a CloudWatch unit; one line of JSON under 256 KB; and what Lambda's
    /// JSON log format reads (timestamp, level).
    #[test]
    fn the_document_follows_the_emf_specification() {
        let record = completed(table("    max_lag: 1h\n"));
        let now = Utc.with_ymd_and_hms(2025, 3, 4, 10, 1, 0).unwrap()
            + chrono::Duration::milliseconds(234);
        let m = run_metrics(&record, now, lag_threshold(&record));
        let line = m.line("sluice/prod", now, "WARN").unwrap();
        assert!(
            line.ends_with('\n') && !line.trim_end().contains('\n'),
            "{line}"
        );
        assert!(line.len() < 256 * 1024);
        let doc: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(doc["_aws"]["Timestamp"], json!(1_741_082_460_234_i64));
        assert_eq!(doc["timestamp"], "2025-03-04T10:01:00.234000Z");
        assert_eq!(doc["level"], "WARN");
        assert_eq!(doc["message"], MESSAGE);
        assert_eq!(doc["run_id"], record.run_id.to_string());
        assert_eq!(doc["status"], "COMPLETED");
        let directives = doc["_aws"]["CloudWatchMetrics"].as_array().unwrap();
        assert_eq!(directives.len(), 2);
        let mut named = Vec::new();
        for directive in directives {
            assert_eq!(directive["Namespace"], "sluice/prod");
            for set in directive["Dimensions"].as_array().unwrap() {
                let set = set.as_array().unwrap();
                assert!(set.len() <= 9);
                for key in set {
                    let key = key.as_str().unwrap();
                    assert!(
                        doc[key].is_string(),
                        "dimension {key} is not a string member"
                    );
                }
            }
            let metrics = directive["Metrics"].as_array().unwrap();
            assert!(!metrics.is_empty() && metrics.len() <= MAX_METRICS_PER_DIRECTIVE);
            for metric in metrics {
                let name = metric["Name"].as_str().unwrap();
                assert!(!name.is_empty() && name.len() <= 255);
                assert!(doc[name].is_number(), "{name} is not a numeric member");
                let unit = metric["Unit"].as_str().unwrap();
                assert!(CLOUDWATCH_UNITS.contains(&unit), "{unit}");
                named.push((
                    directive["Dimensions"].clone(),
                    name.to_owned(),
                    unit.to_owned(),
                ));
            }
        }
        // Per table and source: everything, in its unit; for the stack: all but RunsFailed.
        assert_eq!(directives[0]["Dimensions"], json!([["Table"], ["Source"]]));
        assert_eq!(directives[1]["Dimensions"], json!([[]]));
        let of = |set: Value| -> Vec<(String, String)> {
            named
                .iter()
                .filter(|(d, _, _)| *d == set)
                .map(|(_, n, u)| (n.clone(), u.clone()))
                .collect()
        };
        let per_table = of(json!([["Table"], ["Source"]]));
        assert_eq!(per_table.len(), m.values.len());
        assert!(per_table.contains(&(BYTES.into(), "Bytes".into())));
        assert!(per_table.contains(&(LAG_SECONDS.into(), "Seconds".into())));
        assert!(per_table.contains(&(ROWS.into(), "Count".into())));
        assert!(per_table.contains(&(RUNS_FAILED.into(), "Count".into())));
        let stack = of(json!([[]]));
        assert_eq!(stack.len(), m.values.len() - 1);
        assert!(stack.iter().all(|(n, _)| n != RUNS_FAILED));
        assert!(stack.contains(&(LAG_OVER_THRESHOLD.into(), "Count".into())));
        // Values exactly as measured, counts as integers.
        assert_eq!(doc[ROWS], json!(1000));
        assert_eq!(doc[MERGE_SECONDS], json!(3.5));
        assert_eq!(doc[LAG_SECONDS], json!(60.234));
        assert_eq!(doc[TABLE], "shop/public.orders");
        assert_eq!(doc[SOURCE], "shop");
        // Every metric name is one this module declares, so the template can name them all.
        for (name, _) in &m.values {
            assert!(METRICS.contains(name));
        }
    }

    #[test]
    fn namespaces_and_dimension_values_are_what_cloudwatch_takes() {
        check_namespace("sluice/prod-eu").unwrap();
        for bad in ["", " ", ":x", "AWS/Lambda", "sluice/é", "sluice/\u{7}"] {
            assert_eq!(
                check_namespace(bad),
                Err(MetricsError::Namespace {
                    namespace: bad.into()
                }),
                "{bad}"
            );
        }
        check_namespace(&"n".repeat(255)).unwrap();
        assert!(check_namespace(&"n".repeat(256)).is_err());
        let record = completed(table(""));
        let m = run_metrics(&record, at(10, 1, 0), None);
        assert!(m.document("", at(10, 1, 0), "INFO").is_err());
        assert_eq!(
            dimension_value("shop/public.\"Ordres_été\""),
            "shop/public.\"Ordres_?t?\""
        );
        assert_eq!(dimension_value("a\tb"), "a?b");
        assert_eq!(dimension_value("   "), "-");
        assert_eq!(dimension_value(&"x".repeat(2000)).len(), 1024);
    }

    /// The line is written at INFO, or at the function's application log level when Lambda
    /// would drop INFO lines.
    #[test]
    fn the_line_level_survives_lambdas_log_level() {
        assert_eq!(line_level(None), "INFO");
        assert_eq!(line_level(Some("DEBUG")), "INFO");
        assert_eq!(line_level(Some("INFO")), "INFO");
        assert_eq!(line_level(Some("warn")), "WARN");
        assert_eq!(line_level(Some("ERROR")), "ERROR");
        assert_eq!(line_level(Some("FATAL")), "FATAL");
    }

    #[test]
    fn units_are_cloudwatch_units() {
        for metric in METRICS {
            assert!(CLOUDWATCH_UNITS.contains(&Unit::of(metric).as_str()));
        }
        assert_eq!(Unit::of(SLOT_LAG_BYTES), Unit::Bytes);
        assert_eq!(Unit::of(EXTRACT_SECONDS), Unit::Seconds);
        assert_eq!(Unit::of(LAG_OVER_THRESHOLD), Unit::Count);
    }
}
