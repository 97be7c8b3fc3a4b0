//! The trigger's HTTP side: Snowflake's external functions call it through API Gateway. Each
//! route's request is parsed and checked here, the flow does the work, and its [`Reply`]
//! becomes a status code and a JSON body. Every refusal is a JSON message, never a stack
//! trace.

use lambda_http::{Body, Request, RequestExt, Response};
use serde::Serialize;
use sluice_core::external_function::answer::ResponseBody;
use sluice_core::external_function::check::{CheckRequest, parse_check_batch};
use sluice_core::external_function::{
    BATCH_ID_HEADER, BatchError, IngestRequest, Row, StatusRequest, batch_id_header, check_headers,
    parse_ingest_batch, parse_status_batch,
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
    let max_rows = functions.deployment.settings.max_batch_rows;
    let time_left = request.lambda_context_ref().and_then(crate::time_left);
    match parse_request(&request, max_rows) {
        Err(refusal) => refusal,
        Ok(Routed::Poll { batch_id }) => functions.poll_batch(&batch_id).await.into(),
        Ok(Routed::Ingest { batch_id, rows }) => {
            functions.ingest(batch_id.as_deref(), rows).await.into()
        }
        Ok(Routed::IngestNow { rows }) => functions.ingest_now(rows).await.into(),
        Ok(Routed::Status { rows }) => functions.status(rows).await.into(),
        Ok(Routed::Check { rows }) => {
            crate::check::check(&functions.deployment, rows, crate::check::budget(time_left))
                .await
                .into()
        }
    }
}

/// A request to one of the trigger's routes, parsed and checked: what the flow is asked to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Routed {
    /// `GET /ingest`: Snowflake polls the batch with this id.
    Poll { batch_id: String },
    /// `POST /ingest`: start the rows' runs, remembered under the batch id when there is one.
    Ingest {
        batch_id: Option<String>,
        rows: Vec<Row<IngestRequest>>,
    },
    /// `POST /ingest_async`: start the rows' runs and answer at once.
    IngestNow { rows: Vec<Row<IngestRequest>> },
    /// `POST /status`: the runs' stories.
    Status { rows: Vec<Row<StatusRequest>> },
    /// `POST /check`: `sluice.check_source`, each row's source checked.
    Check { rows: Vec<Row<CheckRequest>> },
}

/// Reads a request as API Gateway hands it over (method, path, headers, body) into what it
/// asks for, or the refusal to answer with (400, 404 or 405 and a message). Pure: the flow
/// does the work; the fuzz target `external_function_request` feeds it hostile requests.
pub fn parse_request(request: &Request, max_rows: usize) -> Result<Routed, Answer> {
    // API Gateway may put the stage in front (`/prod/ingest`): the last segment decides.
    let path = request.raw_http_path();
    let endpoint = path
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or_default();
    let method = request.method().as_str();
    let headers = request.headers();
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if method == "GET" && endpoint == "ingest" {
        // A poll carries no rows: only its batch id matters, so the format headers are not
        // required of it.
        return match batch_id_header(header(BATCH_ID_HEADER)) {
            Ok(Some(batch_id)) => Ok(Routed::Poll { batch_id }),
            Ok(None) => Err(Answer::bad_request(format!(
                "header {BATCH_ID_HEADER}: required to poll a batch"
            ))),
            Err(e) => Err(Answer::bad_request(e.to_string())),
        };
    }
    let batch = check_headers(header).map_err(|e| Answer::bad_request(e.to_string()))?;
    if method == "POST" {
        let content_type = header("content-type").unwrap_or_default();
        if !content_type
            .to_ascii_lowercase()
            .starts_with("application/json")
        {
            return Err(Answer::bad_request(format!(
                "header content-type: expected application/json, got '{content_type}'"
            )));
        }
    }
    let body: &[u8] = request.body().as_ref();
    let refused = |e: BatchError| Answer::bad_request(e.to_string());
    match (method, endpoint) {
        ("POST", "ingest") => Ok(Routed::Ingest {
            batch_id: batch.batch_id,
            rows: parse_ingest_batch(body, max_rows).map_err(refused)?,
        }),
        ("POST", "ingest_async") => Ok(Routed::IngestNow {
            rows: parse_ingest_batch(body, max_rows).map_err(refused)?,
        }),
        ("POST", "status") => Ok(Routed::Status {
            rows: parse_status_batch(body, max_rows).map_err(refused)?,
        }),
        ("POST", "check") => Ok(Routed::Check {
            rows: parse_check_batch(body, max_rows).map_err(refused)?,
        }),
        (_, "ingest" | "ingest_async" | "status" | "check") => Err(Answer::error(
            405,
            format!("{method} is not allowed on /{endpoint}"),
        )),
        _ => Err(Answer::error(
            404,
            format!("no route {path}: use /ingest, /ingest_async, /status or /check"),
        )),
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
        match parse_request(&request, 100) {
            Ok(Routed::Ingest { batch_id, rows }) => {
                assert_eq!(
                    batch_id.as_deref(),
                    Some("01b02bdf-0001-7b58-0003-27d60056b5a6:1:1:0:0")
                );
                assert_eq!(rows.len(), 2);
            }
            other => panic!("{other:?}"),
        }
        let refused = parse_request(&request, 1).unwrap_err();
        assert_eq!(refused.status, 400);
    }

    /// Routing refusals: a poll needs its batch id, other methods and paths are refused.
    #[test]
    fn requests_outside_the_routes_are_refused_with_a_status() {
        let request = |method: &str, path: &str| {
            lambda_http::http::Request::builder()
                .method(method)
                .uri(path)
                .header("sf-external-function-format", "json")
                .header("sf-external-function-format-version", "1.0")
                .body(Body::Empty)
                .unwrap()
                .with_raw_http_path(path)
        };
        let status = |r: &Request| parse_request(r, 10).unwrap_err().status;
        assert_eq!(status(&request("GET", "/prod/ingest")), 400);
        assert_eq!(status(&request("PUT", "/status")), 405);
        assert_eq!(status(&request("GET", "/other")), 404);
        assert_eq!(status(&request("GET", "/check")), 405);
    }

    /// `sluice.check_source('shop', t)` over two rows as Snowflake sends it through API
    /// Gateway (`tests/fixtures/external_function/check_post.json`): routed to the checks
    /// with its rows; a row of the wrong shape is that row's error, a malformed body a 400.
    #[test]
    fn a_check_call_is_routed_with_its_rows() {
        let event = include_str!("../../tests/fixtures/external_function/check_post.json");
        let request = lambda_http::request::from_str(event).unwrap();
        match parse_request(&request, 100) {
            Ok(Routed::Check { rows }) => {
                assert_eq!(rows.len(), 2);
                assert_eq!(
                    rows[0].request,
                    Ok(CheckRequest {
                        source: "shop".into(),
                        table: Some("public.orders".into())
                    })
                );
                assert_eq!(
                    rows[1].request.as_ref().unwrap().table.as_deref(),
                    Some("public.customers")
                );
            }
            other => panic!("{other:?}"),
        }
        let bad = lambda_http::http::Request::builder()
            .method("POST")
            .uri("/prod/check")
            .header("sf-external-function-format", "json")
            .header("sf-external-function-format-version", "1.0")
            .header("content-type", "application/json")
            .body(Body::Text("{\"data\": [[\"zero\", \"shop\"]]}".into()))
            .unwrap()
            .with_raw_http_path("/prod/check");
        let refused = parse_request(&bad, 100).unwrap_err();
        assert_eq!(refused.status, 400);
        assert!(
            matches!(&refused.body, AnswerBody::Error { error } if error.contains("data[0][0] must be the row number")),
            "{refused:?}"
        );
    }
}
