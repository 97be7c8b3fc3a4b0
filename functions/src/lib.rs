//! The serverless layer: the three Lambda functions (trigger, extract, finalize) over the
//! engine. [`deployment`] builds every client once per cold start from the function's
//! environment, [`flow`] is what each function does with an event (start runs, plan, extract
//! a chunk, finalize, record an exhausted event), [`invoke`] hands work from one function to
//! another, and this module the start-up they share (JSON logs, failpoints in test builds),
//! the trigger's HTTP routes and errors as Lambda diagnostics. The engine (`sluice`) knows
//! nothing of HTTP or Lambda.

pub mod check;
pub mod deployment;
pub mod events;
pub mod flow;
pub mod http;
pub mod invoke;
pub mod logging;
pub mod metrics;

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use lambda_runtime::{Diagnostic, LambdaEvent, service_fn};
use serde::Serialize;
use serde_json::Value;

use crate::deployment::Deployment;
use crate::flow::{Functions, ServerlessError};

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

/// Test builds only: arms the failpoints written in the file `SLUICE_FAILPOINTS_FILE` names
/// (`name=action` per line), whenever its text changed since the last invocation: the crash
/// matrix moves one crash from boundary to boundary across a running stack. A `1*panic` fires
/// once per process, so the invocation Lambda retries goes through.
#[cfg(feature = "failpoints")]
fn rearm_failpoints() {
    use std::sync::Mutex;
    static ARMED: Mutex<Option<String>> = Mutex::new(None);
    let Ok(path) = std::env::var("SLUICE_FAILPOINTS_FILE") else {
        return;
    };
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let Ok(mut armed) = ARMED.lock() else {
        return;
    };
    if armed.as_deref() == Some(text.as_str()) {
        return;
    }
    let lines = |text: &str| -> Vec<(String, String)> {
        text.lines()
            .filter_map(|l| l.trim().split_once('='))
            .map(|(name, action)| (name.trim().to_owned(), action.trim().to_owned()))
            .collect()
    };
    for (name, _) in lines(armed.as_deref().unwrap_or_default()) {
        fail::remove(name);
    }
    for (name, action) in lines(&text) {
        if let Err(e) = fail::cfg(&name, &action) {
            tracing::warn!(%name, %action, error = %e, "a failpoint could not be armed");
        }
    }
    *armed = Some(text);
}

/// Keeps failpoints armed (test builds only).
pub struct FailpointGuard(#[allow(dead_code)] Option<FailpointScenario>);

#[cfg(feature = "failpoints")]
type FailpointScenario = fail::FailScenario<'static>;
#[cfg(not(feature = "failpoints"))]
type FailpointScenario = ();

/// An error a handler returns, with a stable `errorType` for alarms and the destination
/// record: `InvalidEvent` (an event no attempt can parse; Lambda still retries an
/// asynchronous one twice, and the destination then ignores it, as it is not sluice's) or
/// `Retryable`.
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

/// A handler's work on one event, borrowing the clients built at cold start.
pub type Handling<'a> = Pin<Box<dyn Future<Output = Result<Value, HandlerError>> + Send + 'a>>;

/// Runs a function: allocator tuning before any thread starts, JSON logs, the deployment
/// built once per cold start (a bad setting stops the function here, naming it), then every
/// event through `handle`.
pub fn serve(
    handle: for<'a> fn(&'a Functions, LambdaEvent<Value>) -> Handling<'a>,
) -> Result<(), lambda_runtime::Error> {
    // Before the runtime starts any thread: allocator tuning is set-up, not run-time, work.
    sluice::memory::keep_large_buffers_out_of_the_heap();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async {
            logging::init_logging();
            let (functions, _failpoints) = cold_start().await?;
            let functions = &functions;
            lambda_runtime::run(service_fn(move |event| {
                #[cfg(feature = "failpoints")]
                rearm_failpoints();
                handle(functions, event)
            }))
            .await
        })
}

/// A handler's typed answer as the JSON Lambda returns.
pub fn answer<T: Serialize>(outcome: T) -> Result<Value, HandlerError> {
    serde_json::to_value(outcome)
        .map_err(|e| HandlerError::Retryable(format!("encoding the answer: {e}")))
}

/// An engine error as the handler's error: one that trying the same event again may cure is
/// `Retryable` (Lambda retries it); any other was already settled by the flow (see
/// [`Functions::settle`]) and never reaches here.
impl From<ServerlessError> for HandlerError {
    fn from(error: ServerlessError) -> HandlerError {
        HandlerError::Retryable(error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
