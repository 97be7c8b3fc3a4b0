//! The extract function, the one that talks to sources: plans a run the trigger recorded and
//! starts its first chunks, resumes a run the trigger took over from a dead holder, or
//! extracts one chunk of one run to S3 as Parquet. The call that
//! records a run's last chunk invokes `finalize`. A retryable error asks Lambda to retry the
//! event; any other fails the run at once; a chunk or a plan that would outrun its time fails
//! its run cleanly instead.

use lambda_runtime::LambdaEvent;
use serde_json::Value;
use sluice_functions::events::parse_extract_event;
use sluice_functions::flow::Functions;
use sluice_functions::invoke::ExtractFunctionEvent;
use sluice_functions::{HandlerError, answer, serve, time_left};

async fn handle(functions: &Functions, event: LambdaEvent<Value>) -> Result<Value, HandlerError> {
    let request = parse_extract_event(event.payload).map_err(HandlerError::InvalidEvent)?;
    let time_left = time_left(&event.context);
    let outcome = match request {
        ExtractFunctionEvent::Chunk(chunk) => {
            let done = functions.extract(chunk, time_left).await;
            functions
                .settle(chunk.run_id, Some(chunk.chunk), done)
                .await?
        }
        ExtractFunctionEvent::Plan(plan) => {
            let done = functions.plan(plan, time_left).await;
            functions.settle(plan.plan_run, None, done).await?
        }
        ExtractFunctionEvent::Resume(resume) => {
            let done = functions.resume(resume).await;
            functions.settle(resume.resume_run, None, done).await?
        }
    };
    answer(outcome)
}

fn main() -> Result<(), lambda_runtime::Error> {
    serve(|functions, event| Box::pin(handle(functions, event)))
}
