//! Writes the metrics of a run that ended as one CloudWatch Embedded Metric Format line on
//! stdout (the document is [`sluice_core::metrics`]'s). CloudWatch Logs extracts the metrics
//! from the function's log group: no CloudWatch API call, no permission beyond the logs
//! (<https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Lambda.html>:
//! "To publish metrics from a function, write embedded metric format logs to STDOUT").
//!
//! The line is written here, whole, and not as a `tracing` event: the document must be the
//! log event itself, "a valid JSON object with no additional data at the beginning or end of
//! the LogEvent message string"
//! (<https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html>),
//! with `_aws` a JSON object at its top level, where a `tracing` event would carry it as a
//! field's string (see `crate::logging`). Under Lambda's JSON log format the functions' JSON
//! lines reach the log group as they are written ("Lambda doesn't double-encode any logs that
//! are already JSON encoded":
//! <https://docs.aws.amazon.com/lambda/latest/dg/monitoring-cloudwatchlogs-logformat.html>);
//! what breaks EMF there is a runtime wrapping the document into its own JSON line, which is
//! why AWS's Node.js EMF library had to stop writing through `console.log` ("versions 4.1.1+
//! … are required for use with the Lambda JSON log format. Using previous versions in such
//! Lambda environments will lead to metric loss":
//! <https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Libraries.html>).
//! The line also carries `timestamp` and `level`, so Lambda's log-level filter keeps it (see
//! [`sluice_core::metrics::RunMetrics::document`]).
//!
//! Metrics never fail a run: a line that cannot be built or written is a warning in the logs.
//! Without `SLUICE_METRICS_NAMESPACE` (a local run, a test) nothing is written.

use std::io::Write;
use std::sync::OnceLock;

use chrono::{DateTime, Utc};
use sluice_core::RunRecord;
use sluice_core::metrics::{self, NAMESPACE_ENV};
use tracing::{info, warn};

/// The namespace metrics go to, read once per cold start; `None` when unset, empty, or not
/// a namespace CloudWatch takes (said once, in the logs).
fn namespace() -> Option<&'static str> {
    static NAMESPACE: OnceLock<Option<String>> = OnceLock::new();
    NAMESPACE
        .get_or_init(|| {
            let namespace = std::env::var(NAMESPACE_ENV).ok()?;
            if namespace.is_empty() {
                return None;
            }
            match metrics::check_namespace(&namespace) {
                Ok(()) => Some(namespace),
                Err(e) => {
                    warn!(error = %e, "run metrics are off");
                    None
                }
            }
        })
        .as_deref()
}

/// Writes the metrics of `record` when this step ended it: the run is COMPLETED or FAILED
/// and its last change (`updated_at`, set by the transition that ended it) is not older than
/// `since`, when the step began. A late or duplicated event for a run that had ended before
/// (a finalize delivered again, a failure reported for a completed run) writes nothing, so a
/// run is counted once; two deliveries racing may both count it, as EMF itself may ("duplicate
/// metric values may occasionally occur", the specification's note), which the alarms bear:
/// the lag alarm reads a maximum and the failures alarm the log metric filters.
pub fn run_ended(record: &RunRecord, since: DateTime<Utc>) {
    if !record.status.is_terminal() || record.updated_at < since {
        return;
    }
    let Some(namespace) = namespace() else {
        return;
    };
    let level = metrics::line_level(std::env::var("AWS_LAMBDA_LOG_LEVEL").ok().as_deref());
    let now = Utc::now();
    let measured = metrics::run_metrics(record, now, metrics::lag_threshold(record));
    match measured.line(namespace, now, level) {
        Ok(line) => match write_line(&mut std::io::stdout().lock(), &line) {
            Ok(()) => {
                info!(run_id = %record.run_id, table = %record.table_key, "run metrics written")
            }
            Err(e) => {
                warn!(run_id = %record.run_id, error = %e, "writing the run's metrics failed")
            }
        },
        Err(e) => warn!(run_id = %record.run_id, error = %e, "the run's metrics were not written"),
    }
}

/// Runs `step`, which may end a run (`Pipeline::fail_run`, a finalize), and writes the
/// metrics of the run it returns if the step ended it (see [`run_ended`]): the flow wraps each
/// such call in this, so the run's end is measured where it happens.
pub async fn counted<E>(
    step: impl std::future::Future<Output = Result<RunRecord, E>>,
) -> Result<RunRecord, E> {
    let since = Utc::now();
    let record = step.await?;
    run_ended(&record, since);
    Ok(record)
}

/// One `write_all` of the whole line under the lock, then a flush: the logging layer writes
/// its lines to the same stdout, and Lambda makes one log event of each line, so the document
/// must not be split or interleaved.
fn write_line(out: &mut impl Write, line: &str) -> std::io::Result<()> {
    out.write_all(line.as_bytes())?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_core::{RunId, RunStatus};

    #[test]
    fn a_line_is_written_whole() {
        let t0 = Utc::now();
        let mut record = RunRecord::new(RunId::at(t0), "shop/public.orders".into(), t0);
        record.fail("boom".into(), None, t0);
        let line = metrics::run_metrics(&record, t0, None)
            .line("sluice/test", t0, "INFO")
            .unwrap();
        let mut out = Vec::new();
        write_line(&mut out, &line).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().count(), 1);
        let doc: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
        assert_eq!(doc[metrics::RUNS_FAILED], 1);
        assert_eq!(record.status, RunStatus::Failed);
    }
}
