//! The events the functions receive, typed: what API Gateway, EventBridge, Lambda's on-failure
//! destinations and operators send, told apart by their documented shapes and parsed into
//! `aws_lambda_events`/`lambda_http` types or sluice's own, so a handler never reads fields
//! out of untyped JSON.

use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use chrono::{DateTime, Utc};
use lambda_http::request::LambdaRequest;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use sluice_core::run::RunKind;

use crate::invoke::{ExtractFunctionEvent, FinalizeEvent, GoldEvent};

/// Direct invocation of the trigger by an operator (`sluice trigger`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerTables {
    /// Table selectors: `source/schema.table`, or a name unique across sources.
    pub tables: Vec<String>,
    #[serde(default)]
    pub full_reload: bool,
    /// Key-set runs (`deletes.keyset`) instead of loads.
    #[serde(default)]
    pub keyset: bool,
}

impl TriggerTables {
    /// The kind of run asked for; both flags at once is refused.
    pub fn kind(&self) -> Result<RunKind, String> {
        match (self.full_reload, self.keyset) {
            (true, true) => Err("full_reload and keyset: ask for one kind of run".into()),
            (true, false) => Ok(RunKind::FullReload),
            (false, true) => Ok(RunKind::Keyset),
            (false, false) => Ok(RunKind::Load),
        }
    }
}

/// What reaches the trigger.
#[derive(Debug)]
pub enum TriggerEvent {
    /// Snowflake's external function through API Gateway (REST or HTTP API), or a function
    /// URL: an HTTP request.
    Http(Box<LambdaRequest>),
    /// The EventBridge schedule rule's tick
    /// (<https://docs.aws.amazon.com/lambda/latest/dg/with-scheduled-events.html>).
    Schedule(Box<EventBridgeEvent>),
    /// An operator's direct invocation.
    Tables(TriggerTables),
}

/// The `detail-type` of an EventBridge schedule rule's event.
const SCHEDULED_EVENT: &str = "Scheduled Event";

impl TriggerEvent {
    /// Parses an event by its shape: an HTTP request has `httpMethod` (REST API, payload 1.0)
    /// or a `requestContext` with `rawPath`/`routeKey` (HTTP API and function URLs, 2.0); an
    /// EventBridge event has `detail-type`; anything else must be an operator's request.
    pub fn parse(payload: Value) -> Result<TriggerEvent, String> {
        let is_http = payload.get("httpMethod").is_some()
            || (payload.get("requestContext").is_some()
                && (payload.get("rawPath").is_some() || payload.get("routeKey").is_some()));
        if is_http {
            return serde_json::from_value(payload)
                .map(|r| TriggerEvent::Http(Box::new(r)))
                .map_err(|e| format!("not an API Gateway or function URL request: {e}"));
        }
        if payload.get("detail-type").is_some() {
            let event: EventBridgeEvent = serde_json::from_value(payload)
                .map_err(|e| format!("not an EventBridge event: {e}"))?;
            if event.detail_type != SCHEDULED_EVENT {
                return Err(format!(
                    "an EventBridge event of type '{}' from '{}': the trigger takes only its schedule rule's '{SCHEDULED_EVENT}'",
                    event.detail_type, event.source
                ));
            }
            return Ok(TriggerEvent::Schedule(Box::new(event)));
        }
        let tables: TriggerTables = serde_json::from_value(payload).map_err(|e| {
            format!(
                "expected an API Gateway request, a scheduled event, or {{\"tables\": [\"source/schema.table\", …], \"full_reload\": false, \"keyset\": false}}: {e}"
            )
        })?;
        if tables.tables.is_empty() {
            return Err("tables: name at least one table".into());
        }
        Ok(TriggerEvent::Tables(tables))
    }
}

/// The part of Lambda's invocation record that says what failed and how often
/// (<https://docs.aws.amazon.com/lambda/latest/dg/invocation-async-retain-records.html>).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DestinationContext {
    pub request_id: String,
    pub function_arn: String,
    /// `RetriesExhausted`, `EventAgeExceeded` (or `Success` for an on-success destination).
    pub condition: String,
    pub approximate_invoke_count: u32,
}

/// The last attempt's error, as the failing handler reported it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FunctionError {
    #[serde(default)]
    pub error_type: Option<String>,
    #[serde(default)]
    pub error_message: Option<String>,
}

/// A record Lambda sends to an on-failure destination when an asynchronous invocation has
/// failed every attempt (or grew too old). `request_payload` is the original event: sluice's
/// own, or, if someone pointed another function's destination here, anything.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DestinationRecord {
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub timestamp: Option<DateTime<Utc>>,
    pub request_context: DestinationContext,
    pub request_payload: Value,
    /// Absent when the attempt produced no answer (an event that grew too old never ran).
    #[serde(default, deserialize_with = "function_error")]
    pub response_payload: FunctionError,
}

/// A response payload that is not an error object (a handler's plain answer) reads as no error.
fn function_error<'de, D: serde::Deserializer<'de>>(d: D) -> Result<FunctionError, D::Error> {
    let value = Value::deserialize(d)?;
    Ok(serde_json::from_value(value).unwrap_or_default())
}

/// Which of sluice's events an on-failure record is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExhaustedEvent {
    Extract(ExtractFunctionEvent),
    Finalize(FinalizeEvent),
}

impl DestinationRecord {
    /// The sluice event that failed, or `None` for an event sluice never sends.
    pub fn exhausted_event(&self) -> Option<ExhaustedEvent> {
        if let Ok(event) = serde_json::from_value(self.request_payload.clone()) {
            return Some(ExhaustedEvent::Extract(event));
        }
        serde_json::from_value(self.request_payload.clone())
            .ok()
            .map(ExhaustedEvent::Finalize)
    }
}

/// What reaches finalize: a run to finalize, or an on-failure record.
#[derive(Debug)]
pub enum FinalizeFunctionEvent {
    Finalize(FinalizeEvent),
    /// Every run of a batch ended: run its gold.
    Gold(GoldEvent),
    Exhausted(Box<DestinationRecord>),
}

impl FinalizeFunctionEvent {
    pub fn parse(payload: Value) -> Result<FinalizeFunctionEvent, String> {
        if payload.get("requestContext").is_some() && payload.get("requestPayload").is_some() {
            return serde_json::from_value(payload)
                .map(|r| FinalizeFunctionEvent::Exhausted(Box::new(r)))
                .map_err(|e| format!("not a Lambda destination record: {e}"));
        }
        if payload.get("gold_batch").is_some() {
            return serde_json::from_value(payload)
                .map(FinalizeFunctionEvent::Gold)
                .map_err(|e| {
                    format!("expected {{\"gold_batch\": \"…\", \"holder\": \"…\"}}: {e}")
                });
        }
        serde_json::from_value(payload)
            .map(FinalizeFunctionEvent::Finalize)
            .map_err(|e| {
                format!(
                    "expected {{\"run_id\": \"…\"}}, {{\"gold_batch\": \"…\", \"holder\": \"…\"}} or a destination record: {e}"
                )
            })
    }
}

/// What reaches extract: a run to plan, or a chunk to extract.
pub fn parse_extract_event(payload: Value) -> Result<ExtractFunctionEvent, String> {
    serde_json::from_value(payload).map_err(|e| {
        format!(
            "expected {{\"run_id\": \"…\", \"chunk\": n}}, {{\"plan_run\": \"…\"}} or {{\"resume_run\": \"…\"}}: {e}"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::invoke::ExtractEvent;
    use serde_json::json;

    fn fixture(name: &str) -> Value {
        let path = format!(
            "{}/../tests/fixtures/lambda/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
    }

    #[test]
    fn a_documented_schedule_tick_is_a_schedule_event() {
        let event = TriggerEvent::parse(fixture("eventbridge_scheduled_event.json")).unwrap();
        let TriggerEvent::Schedule(tick) = event else {
            panic!("{event:?}");
        };
        assert_eq!(tick.source, "aws.events");
    }

    #[test]
    fn trigger_events_are_told_apart_and_the_rest_refused_with_the_expected_shapes() {
        let rest = json!({"httpMethod": "POST", "path": "/ingest", "headers": {}, "requestContext": {"httpMethod": "POST", "path": "/ingest"}});
        assert!(matches!(
            TriggerEvent::parse(rest),
            Ok(TriggerEvent::Http(_))
        ));
        let direct = json!({"tables": ["shop/public.orders"], "full_reload": true});
        let Ok(TriggerEvent::Tables(tables)) = TriggerEvent::parse(direct) else {
            panic!("a direct invocation");
        };
        assert!(tables.full_reload);
        let other = json!({"source": "aws.s3", "detail-type": "Object Created", "detail": {}});
        let err = TriggerEvent::parse(other).unwrap_err();
        assert!(
            err.contains("'Object Created'") && err.contains("Scheduled Event"),
            "{err}"
        );
        let err = TriggerEvent::parse(json!({"tables": []})).unwrap_err();
        assert_eq!(err, "tables: name at least one table");
        let err = TriggerEvent::parse(json!({"table": "x"})).unwrap_err();
        assert!(err.contains("expected an API Gateway request"), "{err}");
    }

    #[test]
    fn a_documented_destination_record_names_the_chunk_attempts_and_error() {
        let event =
            FinalizeFunctionEvent::parse(fixture("destination_record_extract_exhausted.json"))
                .unwrap();
        let FinalizeFunctionEvent::Exhausted(record) = event else {
            panic!("{event:?}");
        };
        assert_eq!(record.request_context.condition, "RetriesExhausted");
        assert_eq!(record.request_context.approximate_invoke_count, 3);
        assert_eq!(
            record.response_payload.error_message.as_deref(),
            Some("source shop: connection refused")
        );
        let Some(ExhaustedEvent::Extract(ExtractFunctionEvent::Chunk(ExtractEvent {
            chunk, ..
        }))) = record.exhausted_event()
        else {
            panic!("{:?}", record.exhausted_event());
        };
        assert_eq!(chunk, 4);
        // A plan event and a finalize event are told apart too; a stranger's is nobody's.
        let mut other = (*record).clone();
        other.request_payload = json!({"plan_run": "01KC0Q5Z4W8J6T2N9R3M7B1XYD"});
        assert!(matches!(
            other.exhausted_event(),
            Some(ExhaustedEvent::Extract(ExtractFunctionEvent::Plan(_)))
        ));
        other.request_payload = json!({"run_id": "01KC0Q5Z4W8J6T2N9R3M7B1XYD"});
        assert!(matches!(
            other.exhausted_event(),
            Some(ExhaustedEvent::Finalize(_))
        ));
        other.request_payload = json!({"orderId": 7});
        assert_eq!(other.exhausted_event(), None);
    }

    #[test]
    fn bad_extract_and_finalize_events_are_refused_with_the_expected_shape() {
        let err = parse_extract_event(json!({"run_id": "x"})).unwrap_err();
        assert!(err.contains("{\"plan_run\": \"…\"}"), "{err}");
        let err = FinalizeFunctionEvent::parse(json!({"chunk": 1})).unwrap_err();
        assert!(err.contains("destination record"), "{err}");
    }
}
