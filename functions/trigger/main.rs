//! The trigger function: Snowflake's external function (through API Gateway), the EventBridge
//! schedule tick, and operators' direct invocations all arrive here; it plans runs and fans
//! their chunks out to `extract`, and never extracts itself.

use lambda_http::request::LambdaRequest;
use lambda_http::{Adapter, Request, Service, service_fn};
use lambda_runtime::{LambdaEvent, run};
use serde_json::Value;
use sluice::serverless::{Functions, TriggerTables};
use sluice_functions::{
    HandlerError, cold_start, init_logging, is_http_event, is_schedule_event, route,
};

async fn handle(functions: &Functions, event: LambdaEvent<Value>) -> Result<Value, HandlerError> {
    let LambdaEvent { payload, context } = event;
    if is_http_event(&payload) {
        let request: LambdaRequest = serde_json::from_value(payload)
            .map_err(|e| HandlerError::InvalidEvent(format!("not an HTTP event: {e}")))?;
        let mut adapter = Adapter::from(service_fn(|request: Request| async move {
            Ok::<_, std::convert::Infallible>(route(functions, request).await)
        }));
        let response = match adapter.call(LambdaEvent::new(request, context)).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
        return serde_json::to_value(response)
            .map_err(|e| HandlerError::Retryable(format!("encoding the answer: {e}")));
    }
    if is_schedule_event(&payload) {
        return functions
            .run_schedules()
            .await
            .map_err(|e| HandlerError::Retryable(e.to_string()));
    }
    let request: TriggerTables = serde_json::from_value(payload).map_err(|e| {
        HandlerError::InvalidEvent(format!(
            "expected an API Gateway request, a scheduled event, or {{\"tables\": [\"source/schema.table\", …], \"full_reload\": false}}: {e}"
        ))
    })?;
    if request.tables.is_empty() {
        return Err(HandlerError::InvalidEvent(
            "tables: name at least one table".into(),
        ));
    }
    Ok(functions.trigger_tables(request).await)
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
