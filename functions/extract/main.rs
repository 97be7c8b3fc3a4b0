//! The extract function: one chunk of one run per event, written to S3 as Parquet. The call
//! that records a run's last chunk invokes `finalize`. An error asks Lambda to retry the
//! event; a chunk that would outrun the deadline fails its run cleanly instead.

use lambda_runtime::{LambdaEvent, run, service_fn};
use serde_json::Value;
use sluice::invoke::ExtractEvent;
use sluice::serverless::Functions;
use sluice_functions::{HandlerError, cold_start, init_logging, time_left};

async fn handle(functions: &Functions, event: LambdaEvent<Value>) -> Result<Value, HandlerError> {
    let request: ExtractEvent = serde_json::from_value(event.payload).map_err(|e| {
        HandlerError::InvalidEvent(format!("expected {{\"run_id\": \"…\", \"chunk\": n}}: {e}"))
    })?;
    functions
        .extract(request, time_left(&event.context))
        .await
        .map_err(|e| HandlerError::Retryable(e.to_string()))
}

fn main() -> Result<(), lambda_runtime::Error> {
    // Before the runtime starts any thread: allocator tuning is set-up, not run-time, work.
    sluice::memory::keep_large_buffers_out_of_the_heap();
    serve()
}

#[tokio::main]
async fn serve() -> Result<(), lambda_runtime::Error> {
    init_logging();
    let (functions, _failpoints) = cold_start().await?;
    let functions = &functions;
    run(service_fn(move |event| handle(functions, event))).await
}
