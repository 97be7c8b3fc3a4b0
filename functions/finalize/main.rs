//! The finalize function: loads a run whose chunks are all done (manifest, Glue, COPY, merge,
//! gold, watermark) and completes it, or marks it FAILED. It is also the on-failure
//! destination of `extract` and of itself: an event that failed every attempt fails its run.

use lambda_runtime::{LambdaEvent, run, service_fn};
use serde_json::Value;
use sluice::invoke::FinalizeEvent;
use sluice::serverless::{DestinationRecord, Functions};
use sluice_core::batch::run_result;
use sluice_functions::{HandlerError, cold_start, init_logging};

async fn handle(functions: &Functions, event: LambdaEvent<Value>) -> Result<Value, HandlerError> {
    let payload = event.payload;
    if payload.get("requestPayload").is_some() {
        let record: DestinationRecord = serde_json::from_value(payload)
            .map_err(|e| HandlerError::InvalidEvent(format!("not a destination record: {e}")))?;
        // Never an error: a failing destination would be retried and sent to itself.
        return Ok(match functions.record_exhausted(record).await {
            Ok(result) => result,
            Err(e) => {
                tracing::error!(error = %e, "recording an exhausted event failed");
                serde_json::json!({"error": e.to_string()})
            }
        });
    }
    let request: FinalizeEvent = serde_json::from_value(payload)
        .map_err(|e| HandlerError::InvalidEvent(format!("expected {{\"run_id\": \"…\"}}: {e}")))?;
    functions
        .finalize(request)
        .await
        .map(|record| run_result(&record))
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
