//! Fan-out: how one function hands work to another. The trigger invokes `extract` to plan
//! each run it recorded, the planner invokes `extract` for the run's first chunks, each chunk
//! the next of its chain, and the last chunk invokes `finalize`, both asynchronously (Lambda's `Event`
//! invocation: queued, retried twice on error, then sent to the on-failure destination), so no
//! function waits for another and no extra service has to run.

use async_trait::async_trait;
use aws_sdk_lambda::Client;
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::InvocationType;
use serde::{Deserialize, Serialize};
use sluice_core::RunId;
use thiserror::Error;

/// Lambda's limit for an asynchronous event is 1 MB; sluice's events are a few dozen bytes.
const MAX_EVENT_BYTES: usize = 256 * 1024;

#[derive(Debug, Error)]
pub enum InvokeError {
    #[error("invoking {function}: {message}")]
    Failed { function: String, message: String },
    #[error("invoking {function}: the event is {bytes} bytes, more than {MAX_EVENT_BYTES}")]
    TooLarge { function: String, bytes: usize },
}

/// The event `extract` receives: one chunk of one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtractEvent {
    pub run_id: RunId,
    pub chunk: u32,
}

/// The event `extract` receives to plan a run the trigger recorded: the source's part of
/// planning (catalog, bounds, chunks) and the fan-out, behind the trigger's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanEvent {
    pub plan_run: RunId,
}

/// The event `extract` receives to carry on a run the trigger took over from a holder that
/// died: its leftovers removed, its unfinished chunks started again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResumeEvent {
    pub resume_run: RunId,
}

/// What the extract function receives: a chunk to extract, a run to plan, or one to resume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ExtractFunctionEvent {
    Chunk(ExtractEvent),
    Plan(PlanEvent),
    Resume(ResumeEvent),
}

/// The event `finalize` receives when a run's last chunk is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FinalizeEvent {
    pub run_id: RunId,
}

/// The event `finalize` receives when every run of a batch has ended: run the batch's gold.
/// `holder` names who asked (the run whose end it was), so that Lambda's retries of this
/// event carry on under the same claim (see [`sluice_core::gold::GoldRecord::holder`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoldEvent {
    pub gold_batch: String,
    pub holder: String,
}

/// Starts another function without waiting for it.
#[async_trait]
pub trait Invoker: Send + Sync {
    async fn invoke_async(&self, function: &str, payload: Vec<u8>) -> Result<(), InvokeError>;
}

/// The real one: Lambda's `Invoke` with `InvocationType::Event`.
pub struct LambdaInvoker {
    client: Client,
}

impl LambdaInvoker {
    pub fn new(sdk: &aws_config::SdkConfig) -> LambdaInvoker {
        LambdaInvoker {
            client: Client::new(sdk),
        }
    }
}

#[async_trait]
impl Invoker for LambdaInvoker {
    async fn invoke_async(&self, function: &str, payload: Vec<u8>) -> Result<(), InvokeError> {
        if payload.len() > MAX_EVENT_BYTES {
            return Err(InvokeError::TooLarge {
                function: function.to_owned(),
                bytes: payload.len(),
            });
        }
        let answer = self
            .client
            .invoke()
            .function_name(function)
            .invocation_type(InvocationType::Event)
            .payload(Blob::new(payload))
            .send()
            .await
            .map_err(|e| InvokeError::Failed {
                function: function.to_owned(),
                message: sluice::error_chain(&e),
            })?;
        // Lambda answers 202 when it has queued the event.
        if answer.status_code() != 202 {
            return Err(InvokeError::Failed {
                function: function.to_owned(),
                message: format!("expected 202 (queued), got {}", answer.status_code()),
            });
        }
        Ok(())
    }
}

/// Serialises an event for [`Invoker::invoke_async`].
pub fn event_bytes<T: Serialize>(event: &T) -> Vec<u8> {
    // Plain structs of ids and numbers always serialise.
    serde_json::to_vec(event).unwrap_or_default()
}
