//! The glue the three Lambda binaries share: start-up (JSON logs, clients built once per cold
//! start, failpoints in test builds), the trigger's HTTP routes, and errors as Lambda
//! diagnostics. No business rule lives here: every decision is in `sluice::serverless`.

use std::time::{Duration, SystemTime};

use lambda_http::{Body, Request, RequestExt, Response};
use lambda_runtime::Diagnostic;
use serde_json::{Value, json};
use sluice::deployment::Deployment;
use sluice::serverless::{Answer, Functions};
use sluice_core::external_function::{
    BATCH_ID_HEADER, batch_id_header, check_headers, parse_ingest_batch, parse_status_batch,
};

/// Logs as JSON lines (what CloudWatch Logs Insights reads), with the fields of the current
/// span (`run_id`, `table`, `chunk`) on every line. `RUST_LOG` filters; default `info`.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(true)
        .with_span_list(true)
        .flatten_event(true)
        .with_target(false)
        .without_time()
        .init();
}

/// Builds the deployment from the environment, once per cold start. Also arms failpoints in
/// test builds (`FAILPOINTS`); the returned guard must live as long as the process.
pub async fn cold_start() -> Result<(Functions, FailpointGuard), lambda_runtime::Error> {
    #[cfg(feature = "failpoints")]
    let guard = FailpointGuard(Some(fail::FailScenario::setup()));
    #[cfg(not(feature = "failpoints"))]
    let guard = FailpointGuard(None);
    let deployment = Deployment::from_env().await.map_err(|e| {
        tracing::error!(error = %e, "the function's settings are wrong; it cannot start");
        e
    })?;
    Ok((Functions::new(deployment), guard))
}

/// Keeps failpoints armed (test builds only).
pub struct FailpointGuard(#[allow(dead_code)] Option<FailpointScenario>);

#[cfg(feature = "failpoints")]
type FailpointScenario = fail::FailScenario<'static>;
#[cfg(not(feature = "failpoints"))]
type FailpointScenario = ();

/// An error a handler returns, with a stable `errorType` for alarms and the destination
/// record: `InvalidEvent` (will never succeed; not worth a retry) or `Retryable`.
#[derive(Debug)]
pub enum HandlerError {
    InvalidEvent(String),
    Retryable(String),
}

impl std::fmt::Display for HandlerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandlerError::InvalidEvent(m) | HandlerError::Retryable(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for HandlerError {}

impl From<HandlerError> for Diagnostic {
    fn from(error: HandlerError) -> Diagnostic {
        let error_type = match error {
            HandlerError::InvalidEvent(_) => "InvalidEvent",
            HandlerError::Retryable(_) => "Retryable",
        };
        Diagnostic {
            error_type: error_type.into(),
            error_message: error.to_string(),
        }
    }
}

/// What remains of an invocation, from the runtime's deadline.
pub fn time_left(context: &lambda_runtime::Context) -> Option<Duration> {
    context.deadline().duration_since(SystemTime::now()).ok()
}

/// Whether a trigger event is an HTTP request (API Gateway REST or HTTP API, a function URL)
/// rather than a schedule tick or an operator's direct invocation.
pub fn is_http_event(event: &Value) -> bool {
    event.get("httpMethod").is_some()
        || (event.get("requestContext").is_some()
            && (event.get("rawPath").is_some() || event.get("routeKey").is_some()))
}

/// Whether a trigger event is EventBridge's schedule tick.
pub fn is_schedule_event(event: &Value) -> bool {
    event.get("detail-type").and_then(Value::as_str) == Some("Scheduled Event")
}

/// The trigger's HTTP routes, as Snowflake's external functions call them through API
/// Gateway. Every refusal is a 400 (or 404/405) with a JSON message, never a stack trace.
pub async fn route(functions: &Functions, request: Request) -> Response<Body> {
    let answer = route_answer(functions, request).await;
    let body = serde_json::to_string(&answer.body).unwrap_or_else(|_| "{}".into());
    Response::builder()
        .status(answer.status)
        .header("content-type", "application/json")
        .body(Body::Text(body))
        .unwrap_or_else(|_| Response::new(Body::Text("{}".into())))
}

async fn route_answer(functions: &Functions, request: Request) -> Answer {
    // API Gateway may put the stage in front (`/prod/ingest`): the last segment decides.
    let path = request.raw_http_path().to_owned();
    let endpoint = path
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    let method = request.method().as_str().to_owned();
    let headers = request.headers().clone();
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let max_rows = functions.deployment.settings.max_batch_rows;
    if method == "GET" && endpoint == "ingest" {
        // A poll carries no rows: only its batch id matters, so the format headers are not
        // required of it.
        return match batch_id_header(header(BATCH_ID_HEADER)) {
            Ok(Some(id)) => functions.poll_batch(&id).await,
            Ok(None) => Answer::bad_request(format!(
                "header {BATCH_ID_HEADER}: required to poll a batch"
            )),
            Err(e) => Answer::bad_request(e.to_string()),
        };
    }
    let batch = match check_headers(header) {
        Ok(batch) => batch,
        Err(e) => return Answer::bad_request(e.to_string()),
    };
    if method == "POST" {
        let content_type = header("content-type").unwrap_or_default();
        if !content_type
            .to_ascii_lowercase()
            .starts_with("application/json")
        {
            return Answer::bad_request(format!(
                "header content-type: expected application/json, got '{content_type}'"
            ));
        }
    }
    let body: &[u8] = request.body().as_ref();
    match (method.as_str(), endpoint.as_str()) {
        ("POST", "ingest") => match parse_ingest_batch(body, max_rows) {
            Ok(rows) => functions.ingest(batch.batch_id.as_deref(), rows).await,
            Err(e) => Answer::bad_request(e.to_string()),
        },
        ("POST", "ingest_async") => match parse_ingest_batch(body, max_rows) {
            Ok(rows) => functions.ingest_now(rows).await,
            Err(e) => Answer::bad_request(e.to_string()),
        },
        ("POST", "status") => match parse_status_batch(body, max_rows) {
            Ok(rows) => functions.status(rows).await,
            Err(e) => Answer::bad_request(e.to_string()),
        },
        (_, "ingest" | "ingest_async" | "status") => Answer {
            status: 405,
            body: json!({"error": format!("{method} is not allowed on /{endpoint}")}),
        },
        _ => Answer {
            status: 404,
            body: json!({"error": format!("no route {path}: use /ingest, /ingest_async or /status")}),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_told_apart_by_shape() {
        let rest = json!({"httpMethod": "POST", "path": "/ingest", "requestContext": {}});
        let http_api =
            json!({"version": "2.0", "rawPath": "/ingest", "requestContext": {"http": {}}});
        let tick = json!({"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}});
        let direct = json!({"tables": ["shop/public.orders"]});
        assert!(is_http_event(&rest) && is_http_event(&http_api));
        assert!(!is_http_event(&tick) && !is_http_event(&direct));
        assert!(is_schedule_event(&tick));
        assert!(!is_schedule_event(&rest) && !is_schedule_event(&direct));
        // Another EventBridge event is not a tick.
        assert!(!is_schedule_event(
            &json!({"detail-type": "Object Created"})
        ));
    }

    /// The batch Snowflake sends, as API Gateway hands it to the trigger
    /// (`tests/fixtures/external_function/`, sources in its README): the event parses, the
    /// headers pass, the opaque batch id comes through whole and the rows are read.
    #[test]
    fn a_real_shaped_api_gateway_event_is_understood() {
        let event =
            include_str!("../../tests/fixtures/external_function/apigw_rest_event_post.json");
        let request = lambda_http::request::from_str(event).unwrap();
        assert_eq!(request.raw_http_path(), "/ingest");
        let headers = request.headers();
        let batch = check_headers(|name| headers.get(name).and_then(|v| v.to_str().ok())).unwrap();
        assert_eq!(
            batch.batch_id.as_deref(),
            Some("01b02bdf-0001-7b58-0003-27d60056b5a6:1:1:0:0")
        );
        let rows = parse_ingest_batch(request.body().as_ref(), 100).unwrap();
        let tables: Vec<String> = rows
            .iter()
            .map(|r| r.request.clone().unwrap().table)
            .collect();
        assert_eq!(tables, ["public.orders", "public.customers"]);
    }

    #[test]
    fn handler_errors_have_stable_types() {
        let d: Diagnostic = HandlerError::InvalidEvent("bad".into()).into();
        assert_eq!(
            (d.error_type.as_str(), d.error_message.as_str()),
            ("InvalidEvent", "bad")
        );
        let d: Diagnostic = HandlerError::Retryable("later".into()).into();
        assert_eq!(d.error_type, "Retryable");
    }
}
