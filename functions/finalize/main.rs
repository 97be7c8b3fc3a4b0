//! The finalize function: loads a run whose chunks are all done (manifest, Glue, COPY, merge,
//! watermark) and completes it, or marks it FAILED; once every run of a batch has ended, it
//! runs the batch's gold. It is also the on-failure destination of `extract` and of itself:
//! an event that failed every attempt fails its run (or its batch's gold).

use lambda_runtime::LambdaEvent;
use serde_json::Value;
use sluice_core::external_function::answer::RunSummary;
use sluice_functions::events::FinalizeFunctionEvent;
use sluice_functions::flow::Functions;
use sluice_functions::{HandlerError, answer, serve};

async fn handle(functions: &Functions, event: LambdaEvent<Value>) -> Result<Value, HandlerError> {
    match FinalizeFunctionEvent::parse(event.payload).map_err(HandlerError::InvalidEvent)? {
        // Never an error: a failing destination would be retried and sent to itself.
        FinalizeFunctionEvent::Exhausted(record) => {
            match functions.record_exhausted(&record).await {
                Ok(outcome) => answer(outcome),
                Err(e) => {
                    tracing::error!(error = %e, "recording an exhausted event failed");
                    answer(serde_json::json!({"error": e.to_string()}))
                }
            }
        }
        FinalizeFunctionEvent::Gold(request) => match functions.run_gold(&request).await {
            Ok(gold) => answer(serde_json::json!({"gold_batch": request.gold_batch, "gold": gold})),
            // Lambda retries the event: the retry holds the same claim and carries on.
            Err(e) if e.is_retryable() => Err(e.into()),
            Err(e) => {
                tracing::error!(error = %e, "the batch's gold cannot run");
                answer(
                    serde_json::json!({"gold_batch": request.gold_batch, "error": e.to_string()}),
                )
            }
        },
        FinalizeFunctionEvent::Finalize(request) => {
            let done = functions
                .finalize(request)
                .await
                .map(|record| sluice_functions::flow::StepOutcome::Run(RunSummary::of(&record)));
            answer(functions.settle(request.run_id, None, done).await?)
        }
    }
}

fn main() -> Result<(), lambda_runtime::Error> {
    serve(|functions, event| Box::pin(handle(functions, event)))
}
