//! Logs as Lambda's JSON log format reads them (see [`init_logging`]).

use serde_json::Value;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{EnvFilter, FilterExt, LevelFilter, filter_fn};
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, JsonFields, Writer};
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::fmt::{FmtContext, FormattedFields, MakeWriter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

/// Logs as JSON lines in the shape Lambda's JSON log format reads, on stdout, filtered by
/// Lambda's application log level (`AWS_LAMBDA_LOG_LEVEL`, set from the template's
/// `ApplicationLogLevel`) when it is set, else by `RUST_LOG` (default `info`).
///
/// `lambda_runtime::tracing::init_default_subscriber` honours the same variables, but its lines
/// carry no timestamp (it calls `without_time()`) and nest span fields under `span`/`spans`, so
/// it is not used: see [`LambdaJson`].
pub fn init_logging() {
    let filter = log_filter(
        std::env::var("AWS_LAMBDA_LOG_LEVEL").ok().as_deref(),
        std::env::var("RUST_LOG").ok().as_deref(),
    );
    tracing_subscriber::registry()
        .with(logging_layer(filter, std::io::stdout))
        .init();
}

/// The log filter: Lambda's application log level when it is set, else `RUST_LOG`'s
/// directives, else `info`.
///
/// Lambda passes `ApplicationLogLevel` to a custom runtime as `AWS_LAMBDA_LOG_LEVEL`, one of
/// TRACE, DEBUG, INFO, WARN, ERROR, FATAL
/// (<https://aws.amazon.com/blogs/compute/introducing-advanced-logging-controls-for-aws-lambda-functions/>:
/// "behind the scenes Lambda sets the application log level in the runtime using the
/// AWS_LAMBDA_LOG_LEVEL environment variable"; the levels:
/// <https://docs.aws.amazon.com/lambda/latest/dg/monitoring-cloudwatchlogs-log-level.html>).
/// Lambda drops lines below that level itself (reading their `level`); filtering here too
/// saves writing them and makes the local stack behave the same. `tracing` has no FATAL: it
/// keeps ERROR lines (the most severe there are); a value Lambda never sends means INFO.
pub fn log_filter(lambda_log_level: Option<&str>, rust_log: Option<&str>) -> EnvFilter {
    if let Some(level) = lambda_log_level {
        let level = match level.trim().to_ascii_uppercase().as_str() {
            "TRACE" => LevelFilter::TRACE,
            "DEBUG" => LevelFilter::DEBUG,
            "WARN" => LevelFilter::WARN,
            "ERROR" | "FATAL" => LevelFilter::ERROR,
            _ => LevelFilter::INFO,
        };
        return EnvFilter::new(level.to_string());
    }
    rust_log
        .and_then(|directives| EnvFilter::try_new(directives).ok())
        .unwrap_or_else(|| EnvFilter::new("info"))
}

/// The logging layer [`init_logging`] installs, writing to `writer` (tests capture it).
///
/// `filter` decides which events are written. Spans of level INFO and above are always
/// recorded, whatever the filter, so a WARN line under `ApplicationLogLevel=WARN` still
/// carries its run's fields.
pub fn logging_layer<S, W>(filter: EnvFilter, writer: W) -> impl Layer<S> + Send + Sync
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let context_spans = filter_fn(|meta| meta.is_span() && *meta.level() <= tracing::Level::INFO)
        .with_max_level_hint(LevelFilter::INFO);
    tracing_subscriber::fmt::layer()
        .fmt_fields(JsonFields::new())
        .event_format(LambdaJson)
        .with_writer(writer)
        .with_filter(filter.or(context_spans))
}

/// One JSON object per line, as Lambda's JSON log format reads it
/// (<https://docs.aws.amazon.com/lambda/latest/dg/monitoring-cloudwatchlogs-log-level.html>:
/// "your function code must output log events to stdout or stderr as JSON formatted objects
/// that contain a key value pair with the key "level"" … "If you don't supply a valid
/// timestamp, Lambda will assign the log the level INFO", the timestamp "in valid RFC 3339
/// timestamp format", as in its example `"timestamp": "2024-11-02T16:51:31.587199Z"`):
///
/// `{"timestamp":"2025-01-02T03:04:05.678901Z","level":"WARN","message":"run failed",
///   "run_id":"01J…","table":"public.orders","requestId":"…",…}`
///
/// `level` is `tracing`'s TRACE, DEBUG, INFO, WARN or ERROR, all levels Lambda knows. After
/// the three come the fields of every span the event is in, outermost first and inner spans
/// winning (the runtime's `requestId`, then `run_id`, `table`, `chunk`, …), then the event's
/// own fields; none of them can replace the first three.
pub struct LambdaJson;

impl<S> FormatEvent<S, JsonFields> for LambdaJson
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonFields>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let mut timestamp = String::new();
        // RFC 3339 in UTC with microseconds, `Z` for the offset.
        tracing_subscriber::fmt::time::SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
        let mut fields = serde_json::Map::new();
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let extensions = span.extensions();
                if let Some(recorded) = extensions.get::<FormattedFields<JsonFields>>()
                    && let Ok(Value::Object(span_fields)) = serde_json::from_str(recorded)
                {
                    fields.extend(span_fields);
                }
            }
        }
        let mut own = String::new();
        ctx.format_fields(Writer::new(&mut own), event)?;
        if let Ok(Value::Object(event_fields)) = serde_json::from_str(&own) {
            fields.extend(event_fields);
        }
        let message = fields.remove("message").unwrap_or_else(|| Value::from(""));
        let level = event.metadata().level().as_str();
        // A `Value` displays as compact JSON, quotes and escapes included.
        write!(
            writer,
            "{{\"timestamp\":{},\"level\":{},\"message\":{message}",
            Value::from(timestamp),
            Value::from(level),
        )?;
        for (key, value) in &fields {
            if !matches!(key.as_str(), "timestamp" | "level") {
                write!(writer, ",{}:{value}", Value::from(key.as_str()))?;
            }
        }
        writeln!(writer, "}}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `emit` under the logging set-up with `filter`, and returns the lines it wrote.
    fn logged(filter: EnvFilter, emit: impl FnOnce()) -> Vec<Value> {
        let out = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
        let writer = {
            let out = out.clone();
            move || Captured(out.clone())
        };
        let subscriber = tracing_subscriber::registry().with(logging_layer(filter, writer));
        tracing::subscriber::with_default(subscriber, emit);
        let text = String::from_utf8(out.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}")))
            .collect()
    }

    struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// What Lambda's JSON log format reads from a line: an RFC 3339 `timestamp` (without it
    /// Lambda ignores `level` and files the line as INFO), a `level` it knows, the message;
    /// and what sluice adds: the span fields (the run, table, chunk, Lambda's request id) at
    /// the top level of every line.
    #[test]
    fn log_lines_carry_what_lambda_reads() {
        let before = chrono::Utc::now();
        let lines = logged(log_filter(None, None), || {
            let invoke = tracing::info_span!("Lambda runtime invoke", requestId = "c6af9ac6-7b61");
            let _invoke = invoke.enter();
            let run = tracing::info_span!("extract", run_id = "01J0RUN", table = "public.orders");
            let _run = run.enter();
            let chunk = tracing::info_span!("chunk", chunk = 3_u64);
            let _chunk = chunk.enter();
            tracing::info!(rows = 10_u64, "chunk extracted");
        });
        assert_eq!(lines.len(), 1, "{lines:?}");
        let line = &lines[0];
        let timestamp = line["timestamp"]
            .as_str()
            .unwrap_or_else(|| panic!("{line}"));
        let parsed = chrono::DateTime::parse_from_rfc3339(timestamp).unwrap();
        assert_eq!(
            parsed.offset().local_minus_utc(),
            0,
            "{timestamp} is not UTC"
        );
        assert!(timestamp.ends_with('Z'), "{timestamp}");
        let age = chrono::Utc::now() - parsed.with_timezone(&chrono::Utc);
        assert!(
            parsed >= before - chrono::Duration::seconds(1) && age < chrono::Duration::minutes(1),
            "{timestamp}"
        );
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["message"], "chunk extracted");
        assert_eq!(line["rows"], 10);
        assert_eq!(line["run_id"], "01J0RUN", "{line}");
        assert_eq!(line["table"], "public.orders");
        assert_eq!(line["chunk"], 3);
        assert_eq!(line["requestId"], "c6af9ac6-7b61");
    }

    /// `ApplicationLogLevel=WARN` (Lambda sets `AWS_LAMBDA_LOG_LEVEL`): INFO lines are dropped
    /// at the source, the `run failed` line the alarm counts and ERROR lines are kept, with
    /// their span's fields, and the Lambda level wins over `RUST_LOG`.
    #[test]
    fn the_lambda_log_level_filters_and_keeps_failures() {
        let lines = logged(log_filter(Some("WARN"), Some("debug")), || {
            let run = tracing::info_span!("finalize", run_id = "01J0RUN", table = "public.orders");
            let _run = run.enter();
            tracing::debug!("dropped");
            tracing::info!("dropped too");
            tracing::warn!(error = "COPY failed", "run failed");
            tracing::error!("kept");
        });
        let shape: Vec<(&str, &str)> = lines
            .iter()
            .map(|l| (l["level"].as_str().unwrap(), l["message"].as_str().unwrap()))
            .collect();
        assert_eq!(shape, [("WARN", "run failed"), ("ERROR", "kept")]);
        assert_eq!(lines[0]["run_id"], "01J0RUN", "{}", lines[0]);
        assert_eq!(lines[0]["table"], "public.orders");
    }

    /// Without Lambda's level, `RUST_LOG` filters (default `info`); Lambda's FATAL, which
    /// `tracing` has not, keeps only errors; a level Lambda never sends falls back to INFO.
    #[test]
    fn the_log_filter_falls_back_to_rust_log_then_info() {
        let emit = || {
            tracing::debug!("debug");
            tracing::info!("info");
            tracing::warn!("warn");
            tracing::error!("error");
        };
        let messages = |filter| -> Vec<String> {
            logged(filter, emit)
                .iter()
                .map(|l| l["message"].as_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(messages(log_filter(None, None)), ["info", "warn", "error"]);
        assert_eq!(messages(log_filter(None, Some("warn"))), ["warn", "error"]);
        assert_eq!(messages(log_filter(Some("FATAL"), None)), ["error"]);
        assert_eq!(
            messages(log_filter(Some("debug"), Some("error"))),
            ["debug", "info", "warn", "error"]
        );
        assert_eq!(
            messages(log_filter(Some("LOUD"), None)),
            ["info", "warn", "error"]
        );
    }
}
