//! The SQL API v2 client: submit, poll, fetch partitions, cancel; retries and auth.
//!
//! One `reqwest` client over rustls with the ring provider (the only one sluice compiles in),
//! built once and shared by every request. Submissions are retried on transport errors, 5xx and
//! 429 with the same `requestId` and `retry=true`; status polls are plain GETs and are retried
//! the same way. A 401 on a cached token retries once with a freshly signed one.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use tokio::time::Instant;
use tracing::{Span, debug, instrument, warn};

use super::decode::{self, RowType};
use super::jwt::{PrivateKey, TokenSource};
use super::{SnowflakeConfig, SnowflakeError, Tuning};
use crate::warehouse::{Binding, Column, QueryResult, Statement, Value, Warehouse, WarehouseError};

type Result<T, E = SnowflakeError> = std::result::Result<T, E>;

/// Snowflake's SQL API v2 as a [`Warehouse`].
pub struct SnowflakeClient {
    http: reqwest::Client,
    base_url: String,
    config: SnowflakeConfig,
    tuning: Tuning,
    tokens: TokenSource,
}

impl std::fmt::Debug for SnowflakeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnowflakeClient")
            .field("base_url", &self.base_url)
            .field("config", &self.config)
            .field("tokens", &self.tokens)
            .finish_non_exhaustive()
    }
}

/// A 200 (or the first part of one): rows of partition 0, or the handles of a multi-statement
/// request.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ResultSetBody {
    result_set_meta_data: Option<Metadata>,
    #[serde(default)]
    data: Vec<Vec<Option<String>>>,
    statement_handle: Option<String>,
    #[serde(default)]
    statement_handles: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Metadata {
    row_type: Vec<RowType>,
    #[serde(default)]
    partition_info: Vec<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
struct PartitionBody {
    #[serde(default)]
    data: Vec<Vec<Option<String>>>,
}

/// A 202, 4xx or 5xx body: status or failure.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StatusBody {
    code: Option<String>,
    message: Option<String>,
    sql_state: Option<String>,
    statement_handle: Option<String>,
}

/// What a submission or a poll came back with.
enum Answer {
    Done(ResultSetBody),
    Running(String),
}

impl SnowflakeClient {
    /// Checks the config and builds the HTTP client; no request is made yet.
    pub fn new(config: SnowflakeConfig, key: PrivateKey) -> Result<SnowflakeClient> {
        let base_url = config.validate()?;
        let tuning = config.tuning.clamped();
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls_config()?)
            // Result partitions after the first come gzip-compressed, with
            // `Content-Encoding: gzip`, whatever the request asked for
            // (<https://docs.snowflake.com/en/developer-guide/sql-api/handling-responses>).
            .gzip(true)
            .timeout(tuning.request_timeout)
            .user_agent(concat!("sluice/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| SnowflakeError::Config {
                field: "base_url",
                message: format!("cannot build the HTTP client: {}", crate::error_chain(&e)),
            })?;
        let tokens = TokenSource::new(key, &config.account, &config.user);
        Ok(SnowflakeClient {
            http,
            base_url,
            config,
            tuning,
            tokens,
        })
    }

    /// Runs one statement under a fresh request id.
    pub async fn execute(&self, statement: &Statement) -> Result<QueryResult> {
        let results = self
            .run(&new_request_id()?, false, Request::one(statement))
            .await?;
        only(results)
    }

    /// Runs one statement under a request id the caller chose (e.g. derived from the run and the
    /// step), always as a resubmission: if Snowflake has seen the id, it answers with the first
    /// execution's outcome instead of running the statement again.
    pub async fn execute_once(
        &self,
        request_id: &str,
        statement: &Statement,
    ) -> Result<QueryResult> {
        check_request_id(request_id)?;
        let results = self.run(request_id, true, Request::one(statement)).await?;
        only(results)
    }

    /// Runs statements in order as one multi-statement request; one result per statement.
    /// They are plain SQL text: the SQL API does not support bind variables in a
    /// multi-statement request
    /// (<https://docs.snowflake.com/en/developer-guide/sql-api/submitting-multiple-statements>),
    /// so the type leaves no way to send one.
    pub async fn execute_all(&self, statements: &[String]) -> Result<Vec<QueryResult>> {
        if statements.is_empty() {
            return Ok(Vec::new());
        }
        let request = Request {
            sql: statements
                .iter()
                .map(|s| s.trim().trim_end_matches(';'))
                .collect::<Vec<_>>()
                .join(";\n"),
            bindings: &[],
            statements: statements.len(),
        };
        self.run(&new_request_id()?, false, request).await
    }

    /// Asks Snowflake to cancel a running statement.
    pub async fn cancel(&self, statement_handle: &str) -> Result<()> {
        let path = format!("/api/v2/statements/{statement_handle}/cancel");
        let (status, body) = self.send(Method::POST, &path, None, false).await?;
        if status.is_success() {
            return Ok(());
        }
        Err(self.failure(&path, status, &body))
    }

    #[instrument(skip_all, fields(request_id = %request_id, statements = request.statements, statement_handle))]
    async fn run(
        &self,
        request_id: &str,
        resubmission: bool,
        request: Request<'_>,
    ) -> Result<Vec<QueryResult>> {
        let Request {
            sql,
            bindings,
            statements,
        } = request;
        let mut body = serde_json::json!({
            "statement": sql,
            "timeout": self.tuning.statement_timeout.as_secs(),
            "parameters": session_parameters(statements),
        });
        for (field, value) in [
            ("database", &self.config.database),
            ("schema", &self.config.schema),
            ("warehouse", &self.config.warehouse),
            ("role", &self.config.role),
        ] {
            if let Some(value) = value {
                body[field] = value.clone().into();
            }
        }
        if !bindings.is_empty() {
            body["bindings"] = bindings
                .iter()
                .enumerate()
                .map(|(i, b)| ((i + 1).to_string(), decode::binding(b)))
                .collect::<serde_json::Map<_, _>>()
                .into();
        }
        debug!(sql = %abbreviate(&sql), bindings = bindings.len(), "submitting");
        let mut path = format!("/api/v2/statements?requestId={request_id}");
        if self.config.submit_async {
            path.push_str("&async=true");
        }
        let started = Instant::now();
        let answer = {
            let (status, bytes) = self
                .send(Method::POST, &path, Some(&body), resubmission)
                .await?;
            self.answer(&path, status, &bytes)?
        };
        let done = self.finish(answer, started).await?;
        if let Some(handle) = &done.statement_handle {
            Span::current().record("statement_handle", handle.as_str());
        }
        if statements == 1 {
            return Ok(vec![self.result(done).await?]);
        }
        if done.statement_handles.len() != statements {
            return Err(SnowflakeError::Protocol(format!(
                "{statements} statements submitted, {} statement handles returned",
                done.statement_handles.len()
            )));
        }
        let mut results = Vec::with_capacity(statements);
        for handle in &done.statement_handles {
            let answer = self.poll_once(handle).await?;
            let child = self.finish(answer, started).await?;
            results.push(self.result(child).await?);
        }
        Ok(results)
    }

    /// Polls a running statement until it is done, the statement timeout passes (then it is
    /// cancelled), or it fails.
    async fn finish(&self, mut answer: Answer, started: Instant) -> Result<ResultSetBody> {
        let mut interval = self.tuning.initial_poll_interval;
        // Snowflake enforces the timeout itself; the grace lets its own 422/408 arrive first.
        let deadline = started + self.tuning.statement_timeout + self.tuning.timeout_grace;
        loop {
            match answer {
                Answer::Done(body) => return Ok(body),
                Answer::Running(handle) => {
                    if Instant::now() + interval > deadline {
                        if let Err(e) = self.cancel(&handle).await {
                            warn!(statement_handle = %handle, error = %e, "cancel after timeout failed");
                        }
                        return Err(SnowflakeError::Timeout {
                            statement_handle: handle,
                            timeout: self.tuning.statement_timeout,
                        });
                    }
                    debug!(statement_handle = %handle, wait_ms = interval.as_millis() as u64, "statement running");
                    tokio::time::sleep(interval).await;
                    interval = (interval * 2).min(self.tuning.max_poll_interval);
                    answer = self.poll_once(&handle).await?;
                }
            }
        }
    }

    async fn poll_once(&self, handle: &str) -> Result<Answer> {
        let path = format!("/api/v2/statements/{handle}");
        let (status, bytes) = self.send(Method::GET, &path, None, false).await?;
        self.answer(&path, status, &bytes)
    }

    /// Reads a submission's or a poll's answer: done, running, or the statement's failure.
    fn answer(&self, path: &str, status: StatusCode, bytes: &[u8]) -> Result<Answer> {
        read_answer(status, bytes).unwrap_or_else(|| Err(self.failure(path, status, bytes)))
    }

    /// The typed error of a non-success answer.
    fn failure(&self, path: &str, status: StatusCode, bytes: &[u8]) -> SnowflakeError {
        failure(
            path,
            status,
            bytes,
            (self.tokens.subject(), self.tokens.fingerprint()),
            self.tuning.statement_timeout,
        )
    }

    /// Decodes a finished statement's rows, fetching partitions after the first.
    async fn result(&self, body: ResultSetBody) -> Result<QueryResult> {
        let (handle, columns, partitions, mut raw) = result_parts(body)?;
        for partition in 1..partitions {
            let path = format!("/api/v2/statements/{handle}?partition={partition}");
            let (status, bytes) = self.send(Method::GET, &path, None, false).await?;
            if status != StatusCode::OK {
                return Err(self.failure(&path, status, &bytes));
            }
            raw.extend(parse::<PartitionBody>(&bytes)?.data);
        }
        let rows = decode_rows(&handle, &columns, &raw)?;
        Ok(QueryResult {
            statement_id: handle,
            columns,
            rows,
        })
    }

    /// One HTTP request with auth, retried on transport errors, 5xx and 429. Every attempt
    /// after the first of a submission carries `retry=true`, and so does the first when
    /// `resubmission` is set (a caller-chosen request id that may have been used before).
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
        resubmission: bool,
    ) -> Result<(StatusCode, Vec<u8>)> {
        let mut attempt = 0;
        let mut backoff = self.tuning.initial_backoff;
        let mut refreshed_token = false;
        loop {
            attempt += 1;
            let retry = resubmission || (attempt > 1 && method == Method::POST && body.is_some());
            let url = if retry {
                format!("{}{path}&retry=true", self.base_url)
            } else {
                format!("{}{path}", self.base_url)
            };
            let (token, fresh) = self.tokens.token()?;
            let mut request = self
                .http
                .request(method.clone(), &url)
                .bearer_auth(&token.value)
                .header("X-Snowflake-Authorization-Token-Type", "KEYPAIR_JWT")
                .header(reqwest::header::ACCEPT, "application/json");
            if let Some(body) = body {
                request = request.json(body);
            }
            let outcome = match request.send().await {
                Ok(response) => {
                    let status = response.status();
                    response.bytes().await.map(|bytes| (status, bytes.to_vec()))
                }
                Err(e) => Err(e),
            };
            let reason = match outcome {
                Ok((StatusCode::UNAUTHORIZED, _)) if !fresh && !refreshed_token => {
                    // The cached token may have been refused for its age; one fresh try.
                    self.tokens.invalidate();
                    refreshed_token = true;
                    attempt -= 1;
                    continue;
                }
                Ok((status, bytes))
                    if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS =>
                {
                    if attempt >= self.tuning.max_attempts {
                        return Ok((status, bytes));
                    }
                    format!("HTTP {status}")
                }
                Ok(answer) => return Ok(answer),
                Err(e) => {
                    if attempt >= self.tuning.max_attempts {
                        return Err(SnowflakeError::Transport {
                            url: format!("{}{path}", self.base_url),
                            message: crate::error_chain(&e),
                            attempts: attempt,
                        });
                    }
                    crate::error_chain(&e)
                }
            };
            warn!(%path, attempt, reason = %reason, wait_ms = backoff.as_millis() as u64, "retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(self.tuning.max_backoff);
        }
    }
}

#[async_trait]
impl Warehouse for SnowflakeClient {
    async fn execute(&self, statement: &Statement) -> Result<QueryResult, WarehouseError> {
        Ok(SnowflakeClient::execute(self, statement).await?)
    }

    async fn execute_all(&self, statements: &[String]) -> Result<Vec<QueryResult>, WarehouseError> {
        Ok(SnowflakeClient::execute_all(self, statements).await?)
    }

    async fn execute_once(
        &self,
        request_id: &str,
        statement: &Statement,
    ) -> Result<QueryResult, WarehouseError> {
        Ok(SnowflakeClient::execute_once(self, request_id, statement).await?)
    }
}

/// What one submission carries: a single statement with its bindings, or several statements
/// without any.
struct Request<'a> {
    sql: String,
    bindings: &'a [Binding],
    statements: usize,
}

impl<'a> Request<'a> {
    fn one(statement: &'a Statement) -> Request<'a> {
        Request {
            sql: statement.sql.clone(),
            bindings: &statement.bindings,
            statements: 1,
        }
    }
}

/// The session parameters of every request: sluice's SQL must mean the same whatever the
/// account's or user's defaults are, and the SQL API applies the request's `parameters` to
/// the statement's session
/// (<https://docs.snowflake.com/en/developer-guide/sql-api/reference#body-of-the-post-request-to-api-v2-statements>).
/// A multi-statement request also says how many statements it holds, as the API requires.
fn session_parameters(statements: usize) -> serde_json::Value {
    let mut parameters: serde_json::Map<String, serde_json::Value> =
        sluice_core::snowflake::SESSION_PARAMETERS
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).into()))
            .collect();
    if statements > 1 {
        parameters.insert(
            "MULTI_STATEMENT_COUNT".into(),
            statements.to_string().into(),
        );
    }
    parameters.into()
}

/// A 200 (done) or 202 (running) answer read; `None` for any other status, a failure.
fn read_answer(status: StatusCode, bytes: &[u8]) -> Option<Result<Answer>> {
    match status {
        StatusCode::OK => Some(parse(bytes).map(Answer::Done)),
        StatusCode::ACCEPTED => Some(parse::<StatusBody>(bytes).and_then(|body| {
            body.statement_handle
                .map(Answer::Running)
                .ok_or_else(|| SnowflakeError::Protocol("202 without a statementHandle".into()))
        })),
        _ => None,
    }
}

/// The typed error of a non-success answer; `caller` is the JWT's subject and key
/// fingerprint, named by a 401.
fn failure(
    path: &str,
    status: StatusCode,
    bytes: &[u8],
    caller: (String, &str),
    statement_timeout: Duration,
) -> SnowflakeError {
    let body: StatusBody = serde_json::from_slice(bytes).unwrap_or_default();
    let message = body
        .message
        .clone()
        .unwrap_or_else(|| String::from_utf8_lossy(bytes).chars().take(300).collect());
    match status {
        StatusCode::UNAUTHORIZED => SnowflakeError::Auth {
            subject: caller.0,
            fingerprint: caller.1.to_owned(),
            code: body.code,
            message,
        },
        StatusCode::UNPROCESSABLE_ENTITY => SnowflakeError::Statement {
            code: body.code.unwrap_or_default(),
            sql_state: body.sql_state.unwrap_or_default(),
            message,
            statement_handle: body.statement_handle,
        },
        StatusCode::REQUEST_TIMEOUT if body.statement_handle.is_some() => SnowflakeError::Timeout {
            statement_handle: body.statement_handle.unwrap_or_default(),
            timeout: statement_timeout,
        },
        _ => SnowflakeError::Http {
            url: path.to_owned(),
            status: status.as_u16(),
            code: body.code,
            message,
        },
    }
}

/// A finished statement's handle, columns, partition count and the rows of partition 0.
type ResultParts = (String, Vec<Column>, usize, Vec<Vec<Option<String>>>);

fn result_parts(body: ResultSetBody) -> Result<ResultParts> {
    let handle = body
        .statement_handle
        .ok_or_else(|| SnowflakeError::Protocol("result without a statementHandle".into()))?;
    let meta = body.result_set_meta_data.ok_or_else(|| {
        SnowflakeError::Protocol(format!("statement {handle}: no resultSetMetaData"))
    })?;
    let columns: Vec<_> = meta.row_type.iter().map(RowType::column).collect();
    Ok((handle, columns, meta.partition_info.len(), body.data))
}

/// Every raw row's cells decoded by its column's type.
fn decode_rows(
    handle: &str,
    columns: &[Column],
    raw: &[Vec<Option<String>>],
) -> Result<Vec<Vec<Value>>> {
    raw.iter()
        .map(|row| {
            if row.len() != columns.len() {
                return Err(SnowflakeError::Protocol(format!(
                    "statement {handle}: a row of {} values for {} columns",
                    row.len(),
                    columns.len()
                )));
            }
            columns
                .iter()
                .zip(row)
                .map(|(column, cell)| decode::cell(column, cell.as_deref()))
                .collect()
        })
        .collect()
}

/// What one SQL API answer (`status`, `body`) to a one-statement request decodes to, without
/// any further request: `Ok(None)` for a 202 (still running), the result with the rows of
/// partition 0 for a 200, the typed error of anything else. The client's own reading, pure:
/// what the fuzz target `sql_api_response` exercises.
pub fn decode_response(status: u16, body: &[u8]) -> Result<Option<QueryResult>> {
    let status = StatusCode::from_u16(status)
        .map_err(|_| SnowflakeError::Protocol(format!("HTTP status {status} is not one")))?;
    let path = "/api/v2/statements";
    match read_answer(status, body) {
        None => Err(failure(
            path,
            status,
            body,
            (String::new(), ""),
            Duration::ZERO,
        )),
        Some(answer) => match answer? {
            Answer::Running(_) => Ok(None),
            Answer::Done(done) => {
                let (handle, columns, _, raw) = result_parts(done)?;
                let rows = decode_rows(&handle, &columns, &raw)?;
                Ok(Some(QueryResult {
                    statement_id: handle,
                    columns,
                    rows,
                }))
            }
        },
    }
}

/// The one result of a one-statement request.
fn only(results: Vec<QueryResult>) -> Result<QueryResult> {
    results
        .into_iter()
        .next()
        .ok_or_else(|| SnowflakeError::Protocol("no result for the statement".into()))
}

fn parse<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| {
        SnowflakeError::Protocol(format!(
            "{e} in {}",
            String::from_utf8_lossy(bytes)
                .chars()
                .take(200)
                .collect::<String>()
        ))
    })
}

/// rustls with the ring provider, the system's roots, HTTP/2 offered.
fn tls_config() -> Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = crate::tls::native_roots().map_err(|message| SnowflakeError::Config {
        field: "base_url",
        message,
    })?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| SnowflakeError::Config {
            field: "base_url",
            message: format!("TLS set-up: {e}"),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// A request id: a random UUID (version 4), as the SQL API requires.
fn new_request_id() -> Result<String> {
    let mut bytes = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| SnowflakeError::Protocol("no randomness for a request id".into()))?;
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    ))
}

fn check_request_id(request_id: &str) -> Result<()> {
    let groups: Vec<&str> = request_id.split('-').collect();
    let shape_ok = groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups
            .iter()
            .all(|g| g.bytes().all(|b| b.is_ascii_hexdigit()));
    if shape_ok {
        Ok(())
    } else {
        Err(SnowflakeError::Config {
            field: "request_id",
            message: format!("{request_id:?} is not a UUID"),
        })
    }
}

fn abbreviate(sql: &str) -> String {
    let flat = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() > 200 {
        format!("{}…", flat.chars().take(200).collect::<String>())
    } else {
        flat
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_version_4_uuids() {
        let id = new_request_id().unwrap();
        check_request_id(&id).unwrap();
        assert_eq!(&id[14..15], "4");
        assert_ne!(id, new_request_id().unwrap());
        assert!(check_request_id("run-1").is_err());
    }

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!(
            "{}/../../tests/fixtures/sql_api/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    /// The documented answers decode as the client reads them: rows, running, the typed error.
    #[test]
    fn decode_response_reads_the_documented_answers() {
        let result = decode_response(200, &fixture("200_result.json"))
            .unwrap()
            .unwrap();
        assert_eq!(result.columns[0].name, "COUNT(*)");
        assert_eq!(
            result.rows,
            vec![vec![Value::Number {
                unscaled: 42,
                scale: 0
            }]]
        );
        assert!(
            decode_response(202, &fixture("202_async.json"))
                .unwrap()
                .is_none()
        );
        let e = decode_response(422, &fixture("422_statement_error.json")).unwrap_err();
        assert!(matches!(e, SnowflakeError::Statement { .. }), "{e}");
        let e = decode_response(429, &fixture("429_too_many_requests.json")).unwrap_err();
        assert!(matches!(e, SnowflakeError::Http { status: 429, .. }), "{e}");
        assert!(matches!(
            decode_response(7, b"{}"),
            Err(SnowflakeError::Protocol(_))
        ));
    }
}
