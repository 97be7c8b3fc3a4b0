//! The trigger function: Snowflake's external function (through API Gateway), the EventBridge
//! schedule tick, and operators' direct invocations all arrive here; it records runs and hands
//! each to `extract` to plan, and never connects to a source itself.

use lambda_http::{Adapter, Request, Service, service_fn};
use lambda_runtime::LambdaEvent;
use serde_json::Value;
use sluice_functions::events::TriggerEvent;
use sluice_functions::flow::Functions;
use sluice_functions::{HandlerError, answer, http, serve};

async fn handle(functions: &Functions, event: LambdaEvent<Value>) -> Result<Value, HandlerError> {
    let LambdaEvent { payload, context } = event;
    match TriggerEvent::parse(payload).map_err(HandlerError::InvalidEvent)? {
        TriggerEvent::Http(request) => {
            let mut adapter = Adapter::from(service_fn(|request: Request| async move {
                Ok::<_, std::convert::Infallible>(http::route(functions, request).await)
            }));
            let response = match adapter.call(LambdaEvent::new(*request, context)).await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            answer(response)
        }
        TriggerEvent::Schedule(_) => answer(functions.run_schedules().await?),
        TriggerEvent::Tables(request) => answer(functions.trigger_tables(request).await),
    }
}

fn main() -> Result<(), lambda_runtime::Error> {
    serve(|functions, event| Box::pin(handle(functions, event)))
}
