//! Snowflake's external-function protocol, as the trigger function speaks it: the batch
//! Snowflake POSTs (`{"data": [[row, arg, …], …]}` with `sf-external-function-*` headers), the
//! per-row requests of `sluice.ingest(source, table [, options])`,
//! `sluice.run_status(run_id)` and `sluice.check_source(source [, table])` ([`check`]), and the answer (`{"data": [[row, result], …]}`, the same rows).
//!
//! A malformed batch is refused as a whole (HTTP 400 with a message); a bad row only gets an
//! error result of its own, so one wrong table name never fails the other rows of a query.
//!
//! [`answer`] types what each row gets back; [`batch`] is what the trigger remembers of a
//! batch under Snowflake's asynchronous protocol and how it answers the polls.

pub mod answer;
pub mod batch;
pub mod check;

use serde_json::Value;
use thiserror::Error;

use crate::run::RunId;

/// The format Snowflake sends, and the only one sluice accepts.
pub const FORMAT_HEADER: &str = "sf-external-function-format";
pub const FORMAT_VERSION_HEADER: &str = "sf-external-function-format-version";
/// The same on the first POST and on every polling GET of an asynchronous call.
pub const BATCH_ID_HEADER: &str = "sf-external-function-query-batch-id";

/// Why a whole batch is refused (answered with HTTP 400).
#[derive(Debug, Error, PartialEq, Eq)]
pub enum BatchError {
    #[error("header {0}: missing")]
    MissingHeader(&'static str),
    #[error("header {header}: expected {expected}, got '{got}'")]
    BadHeader {
        header: &'static str,
        expected: &'static str,
        got: String,
    },
    #[error("body: {0}")]
    Body(String),
    #[error(
        "body: {rows} rows in one batch, at most {max} are accepted (set MAX_BATCH_ROWS in the function's config)"
    )]
    TooManyRows { rows: usize, max: usize },
}

/// The headers that matter to sluice, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchHeaders {
    /// Present on calls made through an API integration; identifies the batch across polls.
    pub batch_id: Option<String>,
}

/// Checks the protocol headers; `header` looks one up by lowercase name.
pub fn check_headers<'a>(
    header: impl Fn(&str) -> Option<&'a str>,
) -> Result<BatchHeaders, BatchError> {
    let format = header(FORMAT_HEADER).ok_or(BatchError::MissingHeader(FORMAT_HEADER))?;
    if !format.eq_ignore_ascii_case("json") {
        return Err(BatchError::BadHeader {
            header: FORMAT_HEADER,
            expected: "json",
            got: format.to_owned(),
        });
    }
    let version =
        header(FORMAT_VERSION_HEADER).ok_or(BatchError::MissingHeader(FORMAT_VERSION_HEADER))?;
    if version.trim() != "1.0" {
        return Err(BatchError::BadHeader {
            header: FORMAT_VERSION_HEADER,
            expected: "1.0",
            got: version.to_owned(),
        });
    }
    Ok(BatchHeaders {
        batch_id: batch_id_header(header(BATCH_ID_HEADER))?,
    })
}

/// The batch id a request's `sf-external-function-query-batch-id` header carries: `None` when
/// it is absent or blank, an error when it is not an id sluice accepts.
pub fn batch_id_header(value: Option<&str>) -> Result<Option<String>, BatchError> {
    let Some(id) = value.map(str::trim).filter(|id| !id.is_empty()) else {
        return Ok(None);
    };
    check_batch_id(id).map_err(|expected| BatchError::BadHeader {
        header: BATCH_ID_HEADER,
        expected,
        got: id.chars().take(64).collect(),
    })?;
    Ok(Some(id.to_owned()))
}

/// The longest batch id sluice accepts. Snowflake's ids are far shorter (a query id and a
/// few counters); the bound only keeps a hostile header from becoming a huge stored key.
pub const MAX_BATCH_ID_BYTES: usize = 1024;

/// Snowflake documents the batch id as an opaque value to echo back, not to parse
/// (<https://docs.snowflake.com/en/sql-reference/external-functions-data-format#headers>);
/// real ids look like `01b02bdf-0001-7b58-0003-27d60056b5a6:1:1:0:0`. So any printable
/// ASCII text of 1 to [`MAX_BATCH_ID_BYTES`] bytes is accepted, and storage is keyed by
/// [`batch_storage_key`], never by the raw text.
pub fn check_batch_id(id: &str) -> Result<(), &'static str> {
    if (1..=MAX_BATCH_ID_BYTES).contains(&id.len()) && id.bytes().all(|b| (0x20..0x7f).contains(&b))
    {
        Ok(())
    } else {
        Err("1 to 1024 printable ASCII characters")
    }
}

/// The key a batch is stored under: the hex SHA-256 of its id, so whatever characters
/// Snowflake puts in an id (`:`, `/`, `#`), it is a safe file name and DynamoDB key of fixed
/// length.
pub fn batch_storage_key(id: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(id.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// One row of a batch: its number and its arguments, or why they are wrong.
#[derive(Debug, Clone, PartialEq)]
pub struct Row<T> {
    pub row: u64,
    pub request: Result<T, String>,
}

/// `sluice.ingest(source, table [, options])`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestRequest {
    pub source: String,
    pub table: String,
    /// `{"mode": "full"}` asks for a full reload of an incremental table, `{"mode":
    /// "keyset"}` for a key-set run (`deletes.keyset`); `incremental` or nothing, for the
    /// table's load.
    pub kind: crate::run::RunKind,
}

/// `sluice.run_status(run_id)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusRequest {
    pub run_id: RunId,
}

/// Splits a batch into rows, checking the envelope; each row's arguments are parsed by `parse`.
fn parse_batch<T>(
    body: &[u8],
    max_rows: usize,
    parse: impl Fn(&[Value]) -> Result<T, String>,
) -> Result<Vec<Row<T>>, BatchError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| BatchError::Body(format!("not JSON: {e}")))?;
    let data = value
        .as_object()
        .ok_or_else(|| BatchError::Body("expected an object with a \"data\" array".into()))?
        .get("data")
        .ok_or_else(|| BatchError::Body("missing \"data\"".into()))?
        .as_array()
        .ok_or_else(|| BatchError::Body("\"data\" must be an array of rows".into()))?;
    if data.len() > max_rows {
        return Err(BatchError::TooManyRows {
            rows: data.len(),
            max: max_rows,
        });
    }
    let mut rows = Vec::with_capacity(data.len());
    let mut seen = std::collections::BTreeSet::new();
    for (i, row) in data.iter().enumerate() {
        let cells = row
            .as_array()
            .ok_or_else(|| BatchError::Body(format!("data[{i}] must be an array")))?;
        let number = cells.first().and_then(Value::as_u64).ok_or_else(|| {
            BatchError::Body(format!(
                "data[{i}][0] must be the row number (a non-negative integer)"
            ))
        })?;
        if !seen.insert(number) {
            return Err(BatchError::Body(format!(
                "data[{i}]: row number {number} appears twice"
            )));
        }
        rows.push(Row {
            row: number,
            request: parse(&cells[1..]),
        });
    }
    Ok(rows)
}

pub fn parse_ingest_batch(
    body: &[u8],
    max_rows: usize,
) -> Result<Vec<Row<IngestRequest>>, BatchError> {
    parse_batch(body, max_rows, parse_ingest_args)
}

pub fn parse_status_batch(
    body: &[u8],
    max_rows: usize,
) -> Result<Vec<Row<StatusRequest>>, BatchError> {
    parse_batch(body, max_rows, |args| match args {
        [Value::String(id)] => id
            .trim()
            .parse::<RunId>()
            .map(|run_id| StatusRequest { run_id })
            .map_err(|_| format!("run_id '{id}' is not a run id (a 26-character ULID)")),
        [other] => Err(format!("run_id must be a string, got {}", kind(other))),
        _ => Err(format!(
            "sluice.run_status takes 1 argument (run_id), got {}",
            args.len()
        )),
    })
}

fn parse_ingest_args(args: &[Value]) -> Result<IngestRequest, String> {
    let (source, table, options) = match args {
        [source, table] => (source, table, None),
        [source, table, options] => (source, table, Some(options)),
        _ => {
            return Err(format!(
                "sluice.ingest takes 2 or 3 arguments (source, table [, options]), got {}",
                args.len()
            ));
        }
    };
    let text = |name: &str, v: &Value| match v {
        Value::String(s) if !s.trim().is_empty() => Ok(s.trim().to_owned()),
        Value::String(_) => Err(format!("{name} must not be empty")),
        other => Err(format!("{name} must be a string, got {}", kind(other))),
    };
    let source = text("source", source)?;
    let table = text("table", table)?;
    let mut run_kind = crate::run::RunKind::Load;
    match options {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("mode", Value::String(m)) if m.eq_ignore_ascii_case("full") => {
                        run_kind = crate::run::RunKind::FullReload
                    }
                    ("mode", Value::String(m)) if m.eq_ignore_ascii_case("keyset") => {
                        run_kind = crate::run::RunKind::Keyset
                    }
                    ("mode", Value::String(m)) if m.eq_ignore_ascii_case("incremental") => {}
                    ("mode", other) => {
                        return Err(format!(
                            "options.mode must be 'full', 'incremental' or 'keyset', got {other}"
                        ));
                    }
                    (other, _) => {
                        return Err(format!("options.{other}: unknown option (known: mode)"));
                    }
                }
            }
        }
        Some(other) => return Err(format!("options must be an object, got {}", kind(other))),
    }
    Ok(IngestRequest {
        source,
        table,
        kind: run_kind,
    })
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> impl Fn(&str) -> Option<&'static str> {
        let pairs = pairs.to_vec();
        move |name| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| *v)
    }

    /// A batch id as real Snowflake traffic carries it: a query id and counters, with `:`.
    const REAL_SHAPE_BATCH_ID: &str = "01b02bdf-0001-7b58-0003-27d60056b5a6:1:1:0:0";

    #[test]
    fn a_batch_id_header_is_absent_valid_or_refused_with_what_it_got() {
        assert_eq!(batch_id_header(None).unwrap(), None);
        assert_eq!(batch_id_header(Some("   ")).unwrap(), None);
        for id in [
            REAL_SHAPE_BATCH_ID,
            "9f2a7c1e-0b3d-4e5f-8a6b-7c8d9e0f1a2b",
            "a/b#c d=e?f'g\"h",
        ] {
            assert_eq!(
                batch_id_header(Some(&format!(" {id} ")))
                    .unwrap()
                    .as_deref(),
                Some(id),
                "{id}"
            );
        }
        let longest = "x".repeat(MAX_BATCH_ID_BYTES);
        assert!(batch_id_header(Some(&longest)).is_ok());
        for bad in ["a\u{7}b", "caf\u{e9}", &"x".repeat(MAX_BATCH_ID_BYTES + 1)] {
            let err = batch_id_header(Some(bad)).unwrap_err().to_string();
            assert!(
                err.starts_with(&format!(
                    "header {BATCH_ID_HEADER}: expected 1 to 1024 printable ASCII characters, got '"
                )),
                "{err}"
            );
        }
    }

    #[test]
    fn a_batch_is_stored_under_a_fixed_length_hash_of_its_id() {
        let key = batch_storage_key(REAL_SHAPE_BATCH_ID);
        assert_eq!(key.len(), 64);
        assert!(
            key.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        // SHA-256 of "abc", FIPS 180-2 appendix B.1.
        assert_eq!(
            batch_storage_key("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_ne!(
            key,
            batch_storage_key("01b02bdf-0001-7b58-0003-27d60056b5a6:1:1:0:1")
        );
    }

    #[test]
    fn headers_must_say_json_version_one() {
        let ok = check_headers(headers(&[
            (FORMAT_HEADER, "json"),
            (FORMAT_VERSION_HEADER, "1.0"),
            (BATCH_ID_HEADER, REAL_SHAPE_BATCH_ID),
        ]))
        .unwrap();
        assert_eq!(ok.batch_id.as_deref(), Some(REAL_SHAPE_BATCH_ID));
        assert_eq!(
            check_headers(headers(&[(FORMAT_VERSION_HEADER, "1.0")])),
            Err(BatchError::MissingHeader(FORMAT_HEADER))
        );
        let err = check_headers(headers(&[
            (FORMAT_HEADER, "xml"),
            (FORMAT_VERSION_HEADER, "1.0"),
        ]))
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "header sf-external-function-format: expected json, got 'xml'"
        );
        assert!(
            check_headers(headers(&[
                (FORMAT_HEADER, "json"),
                (FORMAT_VERSION_HEADER, "2.0")
            ]))
            .is_err()
        );
    }

    #[test]
    fn each_row_is_parsed_on_its_own() {
        let body = br#"{"data": [
            [2, "shop", "public.orders"],
            [0, "shop", "public.customers", {"mode": "full"}],
            [7, "shop", "public.customers", {"mode": "KeySet"}],
            [1, "shop", 42],
            [3, "shop"],
            [4, "shop", "public.items", {"mode": "sideways"}],
            [5, "shop", "public.items", {"colour": "red"}],
            [6, " ", "public.items"]
        ]}"#;
        let rows = parse_ingest_batch(body, 100).unwrap();
        let numbers: Vec<u64> = rows.iter().map(|r| r.row).collect();
        assert_eq!(
            numbers,
            [2, 0, 7, 1, 3, 4, 5, 6],
            "rows keep their order and numbers"
        );
        assert_eq!(
            rows[0].request,
            Ok(IngestRequest {
                source: "shop".into(),
                table: "public.orders".into(),
                kind: crate::run::RunKind::Load
            })
        );
        assert_eq!(
            rows[1].request.as_ref().unwrap().kind,
            crate::run::RunKind::FullReload
        );
        assert_eq!(
            rows[2].request.as_ref().unwrap().kind,
            crate::run::RunKind::Keyset
        );
        let errors: Vec<String> = rows[3..]
            .iter()
            .map(|r| r.request.clone().unwrap_err())
            .collect();
        assert_eq!(errors[0], "table must be a string, got a number");
        assert!(
            errors[1].contains("takes 2 or 3 arguments"),
            "{}",
            errors[1]
        );
        assert!(
            errors[2].contains("options.mode must be 'full', 'incremental' or 'keyset'"),
            "{}",
            errors[2]
        );
        assert_eq!(errors[3], "options.colour: unknown option (known: mode)");
        assert_eq!(errors[4], "source must not be empty");
    }

    #[test]
    fn a_malformed_batch_is_refused_whole() {
        let cases: [(&[u8], &str); 7] = [
            (b"not json", "not JSON"),
            (b"[]", "expected an object"),
            (br#"{"rows": []}"#, "missing \"data\""),
            (br#"{"data": {}}"#, "must be an array of rows"),
            (br#"{"data": ["x"]}"#, "data[0] must be an array"),
            (
                br#"{"data": [["a", "shop", "t"]]}"#,
                "data[0][0] must be the row number",
            ),
            (
                br#"{"data": [[0, "s", "t"], [0, "s", "u"]]}"#,
                "row number 0 appears twice",
            ),
        ];
        for (body, expected) in cases {
            let err = parse_ingest_batch(body, 10).unwrap_err().to_string();
            assert!(
                err.contains(expected),
                "{}: {err}",
                String::from_utf8_lossy(body)
            );
        }
        let big = format!(
            "{{\"data\": [{}]}}",
            (0..11)
                .map(|i| format!("[{i}, \"s\", \"t\"]"))
                .collect::<Vec<_>>()
                .join(",")
        );
        assert_eq!(
            parse_ingest_batch(big.as_bytes(), 10),
            Err(BatchError::TooManyRows { rows: 11, max: 10 })
        );
    }

    #[test]
    fn status_rows_take_a_run_id() {
        let id = RunId::new().to_string();
        let body = format!(r#"{{"data": [[0, "{id}"], [1, "nope"], [2, 7], [3]]}}"#);
        let rows = parse_status_batch(body.as_bytes(), 10).unwrap();
        assert_eq!(rows[0].request.as_ref().unwrap().run_id.to_string(), id);
        assert!(
            rows[1]
                .request
                .clone()
                .unwrap_err()
                .contains("'nope' is not a run id")
        );
        assert_eq!(
            rows[2].request.clone().unwrap_err(),
            "run_id must be a string, got a number"
        );
        assert!(
            rows[3]
                .request
                .clone()
                .unwrap_err()
                .contains("takes 1 argument")
        );
    }
}
