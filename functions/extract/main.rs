//! The extract function, the one that talks to sources: plans a run the trigger recorded and
//! starts its first chunks, or extracts one chunk of one run to S3 as Parquet. The call that
//! records a run's last chunk invokes `finalize`. An error asks Lambda to retry the event; a
//! chunk or a plan that would outrun its time fails its run cleanly instead.

use lambda_runtime::{LambdaEvent, run, service_fn};
use serde_json::Value;
use sluice::invoke::ExtractFunctionEvent;
use sluice::serverless::Functions;
use sluice_functions::{HandlerError, cold_start, init_logging, time_left};

async fn handle(functions: &Functions, event: LambdaEvent<Value>) -> Result<Value, HandlerError> {
    let request: ExtractFunctionEvent = serde_json::from_value(event.payload).map_err(|e| {
        HandlerError::InvalidEvent(format!(
            "expected {{\"run_id\": \"…\", \"chunk\": n}} or {{\"plan_run\": \"…\"}}: {e}"
        ))
    })?;
    let time_left = time_left(&event.context);
    match request {
        ExtractFunctionEvent::Chunk(chunk) => functions.extract(chunk, time_left).await,
        ExtractFunctionEvent::Plan(plan) => functions.plan(plan, time_left).await,
    }
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
