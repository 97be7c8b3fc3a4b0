//! Snowflake's external-function calls as the trigger receives them. Every input is tried two
//! ways: as an API Gateway event (what Lambda hands over: `lambda_http::request::from_str`),
//! and as a request built with `arbitrary` (method, path, headers with any bytes, body). Both go
//! through `parse_request`: routing, the protocol headers, the batch id and the JSON batch.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use lambda_http::http::{HeaderName, HeaderValue, Method};
use lambda_http::{Body, Request, RequestExt};
use libfuzzer_sys::fuzz_target;
use sluice_functions::http::{Routed, parse_request};

const METHODS: [&str; 4] = ["POST", "GET", "PUT", "DELETE"];
const PATHS: [&str; 6] = [
    "/ingest",
    "/prod/ingest",
    "/ingest_async",
    "/status/",
    "/",
    "/other",
];
const HEADERS: [&str; 5] = [
    "sf-external-function-format",
    "sf-external-function-format-version",
    "sf-external-function-query-batch-id",
    "content-type",
    "sf-external-function-name",
];

#[derive(Arbitrary, Debug)]
struct RawRequest {
    method: u8,
    path: Result<u8, String>,
    headers: Vec<(Result<u8, String>, Vec<u8>)>,
    body: Vec<u8>,
    max_rows: u8,
}

fn check(request: &Request, max_rows: usize) {
    match parse_request(request, max_rows) {
        Ok(Routed::Ingest { rows, .. } | Routed::IngestNow { rows }) => {
            assert!(rows.len() <= max_rows)
        }
        Ok(Routed::Status { rows }) => assert!(rows.len() <= max_rows),
        Ok(Routed::Check { rows }) => assert!(rows.len() <= max_rows),
        Ok(Routed::Poll { batch_id }) => assert!(!batch_id.is_empty()),
        Err(answer) => assert!(matches!(answer.status, 400 | 404 | 405)),
    }
}

fn build(raw: RawRequest) -> Option<Request> {
    let path = match raw.path {
        Ok(i) => PATHS[usize::from(i) % PATHS.len()].to_owned(),
        Err(text) => format!("/{text}"),
    };
    let method =
        Method::from_bytes(METHODS[usize::from(raw.method) % METHODS.len()].as_bytes()).ok()?;
    let mut builder = lambda_http::http::Request::builder()
        .method(method)
        .uri(path.parse::<lambda_http::http::Uri>().ok()?);
    for (name, value) in raw.headers {
        let name = match name {
            Ok(i) => HeaderName::from_static(HEADERS[usize::from(i) % HEADERS.len()]),
            Err(text) => HeaderName::from_bytes(text.as_bytes()).ok()?,
        };
        builder = builder.header(name, HeaderValue::from_bytes(&value).ok()?);
    }
    // The route is read from the path API Gateway saw, as an event carries it.
    Some(
        builder
            .body(Body::Binary(raw.body))
            .ok()?
            .with_raw_http_path(path),
    )
}

/// The event as Lambda hands it over. lambda_http 1.3.2 panics on some events before sluice
/// sees them (`build_request_uri` unwraps the URL made of `X-Forwarded-Proto`, `Host` and the
/// path: request.rs:553); that panic is outside sluice's code (reported in the README), so it
/// is caught here and the input skipped.
fn event(text: &str) -> Option<Request> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let request = std::panic::catch_unwind(|| lambda_http::request::from_str(text));
    std::panic::set_hook(hook);
    request.ok()?.ok()
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Some(request) = event(text)
    {
        check(&request, 100);
    }
    let mut u = Unstructured::new(data);
    if let Ok(raw) = RawRequest::arbitrary(&mut u) {
        let max_rows = usize::from(raw.max_rows);
        if let Some(request) = build(raw) {
            check(&request, max_rows);
        }
    }
});
