//! The trigger's HTTP side: Snowflake's external functions call it through API Gateway. Each
//! route's request is parsed and checked here, the flow does the work, and its [`Reply`]
//! becomes a status code and a JSON body. Every refusal is a JSON message, never a stack
//! trace.

use lambda_http::{Body, Request, RequestExt, Response};
use serde::Serialize;
use sluice_core::external_function::answer::ResponseBody;
use sluice_core::external_function::{
    BATCH_ID_HEADER, batch_id_header, check_headers, parse_ingest_batch, parse_status_batch,
};

use crate::flow::{Functions, Reply};

/// An HTTP answer: status and JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub status: u16,
    pub body: AnswerBody,
}

/// What an answer's body says.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum AnswerBody {
    /// Every row's result.
    Rows(ResponseBody),
    /// Snowflake polls again: `{"status": "running"}`.
    Running { status: &'static str },
    /// `{"error": message}`.
    Error { error: String },
}

impl Answer {
    fn error(status: u16, message: impl Into<String>) -> Answer {
        Answer {
            status,
            body: AnswerBody::Error {
                error: message.into(),
            },
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Answer {
        Answer::error(400, message)
    }
}

impl From<Reply> for Answer {
    fn from(reply: Reply) -> Answer {
        match reply {
            Reply::Rows(body) => Answer {
                status: 200,
                body: AnswerBody::Rows(body),
            },
            // Snowflake's asynchronous protocol: 202 means "ask again with the same batch id"
            // (<https://docs.snowflake.com/en/sql-reference/external-functions-implementation>).
            Reply::Pending => Answer {
                status: 202,
                body: AnswerBody::Running { status: "running" },
            },
            Reply::BadRequest(message) => Answer::error(400, message),
            Reply::Failed(message) => Answer::error(500, message),
        }
    }
}

/// The trigger's HTTP routes, as Snowflake's external functions call them through API
/// Gateway. Every refusal is a 400 (or 404/405) with a JSON message, never a stack trace.
pub async fn route(functions: &Functions, request: Request) -> Response<Body> {
    let answer = route_answer(functions, request).await;
    let body = serde_json::to_string(&answer.body).unwrap_or_else(|_| "{}".into());
    Response::builder()
        .status(answer.status)
        .header("content-type", "application/json")
        .body(Body::Text(body))
        .unwrap_or_else(|_| Response::new(Body::Text("{}".into())))
}

async fn route_answer(functions: &Functions, request: Request) -> Answer {
    // API Gateway may put the stage in front (`/prod/ingest`): the last segment decides.
    let path = request.raw_http_path().to_owned();
    let endpoint = path
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    let method = request.method().as_str().to_owned();
    let headers = request.headers().clone();
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let max_rows = functions.deployment.settings.max_batch_rows;
    if method == "GET" && endpoint == "ingest" {
        // A poll carries no rows: only its batch id matters, so the format headers are not
        // required of it.
        return match batch_id_header(header(BATCH_ID_HEADER)) {
            Ok(Some(id)) => functions.poll_batch(&id).await.into(),
            Ok(None) => Answer::bad_request(format!(
                "header {BATCH_ID_HEADER}: required to poll a batch"
            )),
            Err(e) => Answer::bad_request(e.to_string()),
        };
    }
    let batch = match check_headers(header) {
        Ok(batch) => batch,
        Err(e) => return Answer::bad_request(e.to_string()),
    };
    if method == "POST" {
        let content_type = header("content-type").unwrap_or_default();
        if !content_type
            .to_ascii_lowercase()
            .starts_with("application/json")
        {
            return Answer::bad_request(format!(
                "header content-type: expected application/json, got '{content_type}'"
            ));
        }
    }
    let body: &[u8] = request.body().as_ref();
    match (method.as_str(), endpoint.as_str()) {
        ("POST", "ingest") => match parse_ingest_batch(body, max_rows) {
            Ok(rows) => functions
                .ingest(batch.batch_id.as_deref(), rows)
                .await
                .into(),
            Err(e) => Answer::bad_request(e.to_string()),
        },
        ("POST", "ingest_async") => match parse_ingest_batch(body, max_rows) {
            Ok(rows) => functions.ingest_now(rows).await.into(),
            Err(e) => Answer::bad_request(e.to_string()),
        },
        ("POST", "status") => match parse_status_batch(body, max_rows) {
            Ok(rows) => functions.status(rows).await.into(),
            Err(e) => Answer::bad_request(e.to_string()),
        },
        (_, "ingest" | "ingest_async" | "status") => {
            Answer::error(405, format!("{method} is not allowed on /{endpoint}"))
        }
        _ => Answer::error(
            404,
            format!("no route {path}: use /ingest, /ingest_async or /status"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The batch Snowflake sends, as API Gateway hands it to the trigger
    /// (`tests/fixtures/external_function/`, sources in its README): the event parses, the
    /// headers pass, the opaque batch id comes through whole and the rows are read.
    #[test]
    fn a_real_shaped_api_gateway_event_is_understood() {
        let event =
            include_str!("../../tests/fixtures/external_function/apigw_rest_event_post.json");
        let request = lambda_http::request::from_str(event).unwrap();
        assert_eq!(request.raw_http_path(), "/ingest");
        let headers = request.headers();
        let batch = check_headers(|name| headers.get(name).and_then(|v| v.to_str().ok())).unwrap();
        assert_eq!(
            batch.batch_id.as_deref(),
            Some("01b02bdf-0001-7b58-0003-27d60056b5a6:1:1:0:0")
        );
        let rows = parse_ingest_batch(request.body().as_ref(), 100).unwrap();
        let tables: Vec<String> = rows
            .iter()
            .map(|r| r.request.clone().unwrap().table)
            .collect();
        assert_eq!(tables, ["public.orders", "public.customers"]);
    }
}
