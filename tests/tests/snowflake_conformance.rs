//! Snowflake's documented contracts, one test per rule, each against the stand-in (which
//! enforces the rule, see `scripts/snowflake_standin/README.md`) or against answers of the
//! documented shape (`tests/fixtures/`). Each test names its documentation page; what only a
//! real account can show is for `sluice snowflake doctor`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use reqwest::Method;
use serde_json::{Value as Json, json};
use sluice::warehouse::snowflake::{SnowflakeClient, SnowflakeConfig, SnowflakeError, Tuning};
use sluice::warehouse::{Statement, Value};
use sluice_core::external_function::{batch_storage_key, check_headers, parse_ingest_batch};
use sluice_tests::snowflake::{ACCOUNT, KeyPair, Options, StandIn, split_script, workspace};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn fixture(path: &str) -> String {
    std::fs::read_to_string(workspace().join("tests/fixtures").join(path)).unwrap()
}

async fn scalar_text(client: &SnowflakeClient, sql: &str) -> String {
    let result = client.execute(&Statement::new(sql)).await.unwrap();
    match result.scalar() {
        Some(Value::Text(text)) => text.clone(),
        other => panic!("{sql}: {other:?}"),
    }
}

/// <https://docs.snowflake.com/en/sql-reference/snowflake-scripting/begin>: "The keyword END
/// must be followed immediately by a semicolon". The stand-in refuses a block without it as
/// Snowflake's compiler does; every block sluice ships or generates ends `END;` and is taken.
#[tokio::test]
async fn a_procedure_block_must_end_with_end_and_a_semicolon() {
    let client = StandIn::shared().client("endsemi");
    let err = client
        .execute(&Statement::new(
            "CREATE OR REPLACE PROCEDURE P(RUN_ID VARCHAR) RETURNS VARCHAR LANGUAGE SQL AS $$\nBEGIN\nRETURN :RUN_ID;\nEND\n$$",
        ))
        .await
        .unwrap_err();
    match &err {
        SnowflakeError::Statement {
            code,
            sql_state,
            message,
            ..
        } => {
            assert_eq!((code.as_str(), sql_state.as_str()), ("001003", "42000"));
            assert!(message.contains("unexpected '<EOF>'"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    // The committed scripts: the gold example whole, and every procedure of the set-up.
    let read = |path: &str| std::fs::read_to_string(workspace().join(path)).unwrap();
    let gold = read("infra/snowflake/gold/daily_order_revenue.sql");
    let setup = read("infra/snowflake/setup.sql");
    let procedures: Vec<String> = split_script(&gold)
        .into_iter()
        .chain(
            split_script(&setup)
                .into_iter()
                .filter(|s| s.starts_with("CREATE OR REPLACE PROCEDURE")),
        )
        .collect();
    assert!(procedures.len() >= 9, "{}", procedures.len());
    for statement in procedures {
        client
            .execute(&Statement::new(statement.as_str()))
            .await
            .unwrap_or_else(|e| panic!("{e}\n{statement}"));
    }
}

/// The SQL API ignores the account's and user's TIMEZONE; a request without one runs in the
/// default `America/Los_Angeles`
/// (<https://docs.snowflake.com/en/developer-guide/sql-api/handling-responses>,
/// <https://docs.snowflake.com/en/sql-reference/parameters#timezone>). sluice sends
/// `TIMEZONE = UTC` with every request, so a day is a UTC day.
#[tokio::test]
async fn every_request_runs_in_utc_whatever_the_default_zone() {
    let standin = StandIn::shared();
    let client = standin.client("timezone");
    // 03:00 UTC on New Year's Day is still New Year's Eve in Los Angeles.
    let day = "SELECT TO_VARCHAR(CAST(TO_TIMESTAMP_LTZ('2024-01-01 03:00:00 +00:00') AS DATE))";
    assert_eq!(scalar_text(&client, day).await, "2024-01-01");
    let sent = standin.stats()["lastContext"]["sentParameters"].clone();
    assert_eq!(sent, json!({"TIMEZONE": "UTC"}), "what sluice sent");
    let bare = standin
        .raw(
            Method::POST,
            "/api/v2/statements",
            Some(json!({"statement": day})),
        )
        .await;
    assert_eq!(bare.status, 200, "{:?}", bare.json());
    assert_eq!(
        bare.json()["data"][0][0],
        "2023-12-31",
        "a request without TIMEZONE runs in the documented default zone"
    );
}

/// "In the response for a GET /api/v2/statements/<handle>?partition=partition_number
/// request, the body contains JSON data in compressed form (using gzip). The response
/// includes the HTTP header Content-Encoding: gzip"
/// (<https://docs.snowflake.com/en/developer-guide/sql-api/handling-responses>).
#[tokio::test]
async fn partitions_after_the_first_come_gzipped_and_are_read_whole() {
    let standin = StandIn::start(&Options {
        partition_rows: 2,
        ..Options::default()
    });
    let client = standin.client("gzip");
    let sql = "SELECT n FROM (VALUES (1), (2), (3), (4), (5)) AS t(n) ORDER BY n";
    let result = client.execute(&Statement::new(sql)).await.unwrap();
    let values: Vec<i64> = result.rows.iter().map(|r| r[0].as_i64().unwrap()).collect();
    assert_eq!(values, [1, 2, 3, 4, 5]);

    let first = standin
        .raw(
            Method::POST,
            "/api/v2/statements",
            Some(json!({"statement": sql, "parameters": {"TIMEZONE": "UTC"}})),
        )
        .await;
    let first = first.json();
    assert_eq!(
        first["resultSetMetaData"]["partitionInfo"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    let handle = first["statementHandle"].as_str().unwrap();
    let second = standin
        .raw(
            Method::GET,
            &format!("/api/v2/statements/{handle}?partition=1"),
            None,
        )
        .await;
    assert_eq!(second.status, 200);
    assert_eq!(second.content_encoding.as_deref(), Some("gzip"));
    assert_eq!(&second.body[..2], &[0x1f, 0x8b], "a gzip stream");
}

/// "Snowflake does not currently support variable binding in multi-statement SQL requests"
/// (<https://docs.snowflake.com/en/developer-guide/sql-api/submitting-multiple-statements>).
/// sluice's `execute_all` takes plain SQL text, so it cannot build one; the stand-in refuses
/// one from any client.
#[tokio::test]
async fn multi_statement_requests_take_no_bindings() {
    let standin = StandIn::shared();
    let request = |bindings: Option<Json>| {
        let mut body = json!({
            "statement": "SELECT ?; SELECT 2",
            "parameters": {"MULTI_STATEMENT_COUNT": "2"},
        });
        if let Some(bindings) = bindings {
            body["bindings"] = bindings;
        }
        body
    };
    let refused = standin
        .raw(
            Method::POST,
            "/api/v2/statements",
            Some(request(Some(json!({"1": {"type": "FIXED", "value": "1"}})))),
        )
        .await;
    assert_eq!(refused.status, 422, "{:?}", refused.json());
    assert_eq!(refused.json()["sqlState"], "0A000");
    let client = standin.client("multi");
    let results = client
        .execute_all(&["SELECT 1".to_owned(), "SELECT 2".to_owned()])
        .await
        .unwrap();
    assert_eq!(results.len(), 2);
}

fn text_parquet(rows: &[(i64, Option<&str>)]) -> (Vec<u8>, arrow::datatypes::Schema) {
    use arrow::array::{Int64Array, RecordBatch, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    let schema = Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("s", DataType::Utf8, true),
    ]);
    let batch = RecordBatch::try_new(
        Arc::new(schema.clone()),
        vec![
            Arc::new(Int64Array::from(
                rows.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
            )),
            Arc::new(StringArray::from(
                rows.iter().map(|(_, s)| *s).collect::<Vec<_>>(),
            )),
        ],
    )
    .unwrap();
    (sluice_tests::parquet_bytes(&batch), schema)
}

/// The Parquet format's `NULL_IF` defaults to `\N` and applies to loads with
/// MATCH_BY_COLUMN_NAME (<https://docs.snowflake.com/en/sql-reference/sql/create-file-format>,
/// TYPE = PARQUET): sluice's COPY says `NULL_IF = ()`, so text lands exactly as it left the
/// source; the same file loaded with the default options loses its `\N`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_loads_exactly_and_the_default_null_if_would_not() {
    let rows = [
        (1, Some("\\N")),
        (2, Some("")),
        (3, None),
        (4, Some("   ")),
        (5, Some("NULL")),
        (6, Some(" \\N ")),
    ];
    let (file, schema) = text_parquet(&rows);
    let load = sluice_tests::snowflake::load_raw_through_standin(
        "nullif",
        vec![("p/a.parquet".to_owned(), file.clone())],
        &schema,
    )
    .await;
    let expected: BTreeMap<i64, Option<String>> = rows
        .iter()
        .map(|(id, s)| (*id, s.map(str::to_owned)))
        .collect();
    assert_eq!(load.text_by_id("s"), expected);

    // The contrast: Snowflake's default NULL_IF, through the same stand-in rule.
    let moto = sluice_tests::moto::MotoServer::shared();
    let bucket = moto
        .bucket_with("nullifdefault", vec![("p/a.parquet", file)])
        .await;
    let standin = StandIn::start(&Options {
        s3_endpoint: Some(moto.endpoint()),
        ..Options::default()
    });
    let client = standin.client("nullifdefault");
    for sql in [
        "CREATE TABLE T (\"id\" NUMBER(19,0), \"s\" VARCHAR)".to_owned(),
        format!("CREATE STAGE ST URL = 's3://{bucket}/'"),
        "COPY INTO T FROM @ST FILES = ('p/a.parquet') FILE_FORMAT = (TYPE = PARQUET USE_LOGICAL_TYPE = TRUE) \
         MATCH_BY_COLUMN_NAME = CASE_INSENSITIVE"
            .to_owned(),
    ] {
        client.execute(&Statement::new(sql)).await.unwrap();
    }
    let nulls = client
        .execute(&Statement::new(
            "SELECT \"id\" FROM T WHERE \"s\" IS NULL ORDER BY 1",
        ))
        .await
        .unwrap();
    let ids: Vec<i64> = nulls.rows.iter().map(|r| r[0].as_i64().unwrap()).collect();
    assert_eq!(ids, [1, 3], "the default NULL_IF turns '\\N' into NULL");
}

/// <https://docs.snowflake.com/en/user-guide/admin-account-identifier> (URL host: the
/// organization and account name joined by `-`, underscores accepted as hyphens; a locator
/// keeps its region and cloud) and
/// <https://docs.snowflake.com/en/developer-guide/sql-api/authenticating> (JWT: upper case,
/// periods replaced with hyphens, a locator without its region).
#[tokio::test]
async fn every_account_identifier_form_reaches_its_host_and_signs_as_its_account() {
    for (account, url) in [
        (
            "myorg.my_account",
            "https://myorg-my-account.snowflakecomputing.com",
        ),
        (
            "myorg-my_account",
            "https://myorg-my-account.snowflakecomputing.com",
        ),
        (
            "xy12345.us-east-2.aws",
            "https://xy12345.us-east-2.aws.snowflakecomputing.com",
        ),
        ("XY12345", "https://xy12345.snowflakecomputing.com"),
    ] {
        assert_eq!(
            SnowflakeConfig::new(account, "u").validate().unwrap(),
            url,
            "{account}"
        );
    }
    // The stand-in knows the account as ORG-ACCOUNT; the dotted form must sign as the same.
    let standin = StandIn::shared();
    let dotted = ACCOUNT.replacen('-', ".", 1).to_ascii_lowercase();
    for (account, accepted) in [(dotted.as_str(), true), ("sluiceorg", false)] {
        let mut config = standin.config("accounts");
        config.account = account.to_owned();
        let client = SnowflakeClient::new(config, KeyPair::shared().private_key()).unwrap();
        let outcome = client.execute(&Statement::new("SELECT 1")).await;
        assert_eq!(outcome.is_ok(), accepted, "{account}: {outcome:?}");
    }
}

/// The batch id is "an opaque value generated by Snowflake … remote services should not rely
/// on a specific format" (<https://docs.snowflake.com/en/sql-reference/external-functions-data-format>);
/// `MAX_BATCH_ROWS` is "the maximum number of rows in each batch"
/// (<https://docs.snowflake.com/en/sql-reference/sql/create-external-function>).
#[test]
fn the_recorded_batch_is_accepted_up_to_the_functions_batch_limit() {
    let post: Json = serde_json::from_str(&fixture("external_function/ingest_post.json")).unwrap();
    let get: Json =
        serde_json::from_str(&fixture("external_function/ingest_poll_get.json")).unwrap();
    for request in [&post, &get] {
        let headers = request["headers"].as_object().unwrap();
        let checked = check_headers(|name| headers.get(name).and_then(Json::as_str)).unwrap();
        let id = checked.batch_id.unwrap();
        assert_eq!(id, headers["sf-external-function-query-batch-id"]);
        assert_eq!(batch_storage_key(&id).len(), 64);
    }

    // The trigger's side of MAX_BATCH_ROWS (the functions' side and the template's are in
    // setup.rs and template.rs): a batch of exactly the limit is read, one more row is not.
    let limit = sluice_core::deploy::DEFAULT_MAX_BATCH_ROWS;
    let batch = |rows: usize| {
        json!({"data": (0..rows).map(|i| json!([i, "shop", "public.orders"])).collect::<Vec<_>>()})
            .to_string()
    };
    assert_eq!(
        parse_ingest_batch(batch(limit).as_bytes(), limit)
            .unwrap()
            .len(),
        limit
    );
    assert!(parse_ingest_batch(batch(limit + 1).as_bytes(), limit).is_err());
}

/// A local server answering from a script of (status, body) per request, recording each
/// request's method and path: Snowflake's documented answers, played to the real client.
struct Replay {
    port: u16,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Replay {
    async fn start(script: Vec<(u16, String)>) -> Replay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            for (status, body) in script {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let mut request = Vec::new();
                let mut buffer = [0u8; 8192];
                // Headers, then as much body as Content-Length says.
                loop {
                    let n = socket.read(&mut buffer).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    request.extend_from_slice(&buffer[..n]);
                    let text = String::from_utf8_lossy(&request).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length = text[..end]
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if request.len() >= end + 4 + length {
                            break;
                        }
                    }
                }
                let line = String::from_utf8_lossy(&request)
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                log.lock().unwrap().push(line);
                let answer = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(answer.as_bytes()).await;
                let _ = socket.shutdown().await;
            }
        });
        Replay { port, seen }
    }

    fn client(&self) -> SnowflakeClient {
        let mut config = SnowflakeConfig::new(ACCOUNT, "SLUICE");
        config.base_url = Some(format!("http://127.0.0.1:{}", self.port));
        config.tuning = Tuning {
            initial_backoff: std::time::Duration::from_millis(10),
            initial_poll_interval: std::time::Duration::from_millis(10),
            ..Tuning::default()
        };
        SnowflakeClient::new(config, KeyPair::shared().private_key()).unwrap()
    }
}

/// The SQL API's documented answers (<https://docs.snowflake.com/en/developer-guide/sql-api/reference>,
/// `tests/fixtures/sql_api/`): a 429 is retried under the same request id with `retry=true`,
/// a 202 is polled by its handle, a 200 is read by its row type; a 422 becomes a statement
/// error with Snowflake's code, SQLSTATE and handle.
#[tokio::test]
async fn the_documented_answers_are_understood() {
    let replay = Replay::start(vec![
        (429, fixture("sql_api/429_too_many_requests.json")),
        (202, fixture("sql_api/202_async.json")),
        (200, fixture("sql_api/200_result.json")),
    ])
    .await;
    let result = replay
        .client()
        .execute(&Statement::new("SELECT COUNT(*) FROM T"))
        .await
        .unwrap();
    assert_eq!(result.scalar().and_then(|v| v.as_i64()), Some(42));
    let seen = replay.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3, "{seen:?}");
    let request_id = |line: &str| {
        line.split("requestId=")
            .nth(1)
            .map(|rest| rest.split(['&', ' ']).next().unwrap_or_default().to_owned())
    };
    assert!(
        seen[0].starts_with("POST /api/v2/statements?requestId="),
        "{seen:?}"
    );
    assert!(!seen[0].contains("retry=true"), "{seen:?}");
    assert!(
        seen[1].starts_with("POST ") && seen[1].contains("&retry=true"),
        "{seen:?}"
    );
    assert_eq!(
        request_id(&seen[0]),
        request_id(&seen[1]),
        "one request id: {seen:?}"
    );
    assert!(
        seen[2].starts_with("GET /api/v2/statements/01be1c77-0000-a1b2-0000-00010002c3d4 "),
        "{seen:?}"
    );

    let replay = Replay::start(vec![(422, fixture("sql_api/422_statement_error.json"))]).await;
    let err = replay
        .client()
        .execute(&Statement::new("SELECT AFAF"))
        .await
        .unwrap_err();
    match err {
        SnowflakeError::Statement {
            code,
            sql_state,
            message,
            statement_handle,
        } => {
            assert_eq!((code.as_str(), sql_state.as_str()), ("000904", "42000"));
            assert!(message.contains("invalid identifier 'AFAF'"), "{message}");
            assert_eq!(
                statement_handle.as_deref(),
                Some("019c0728-0000-df4f-0000-00100006606e")
            );
        }
        other => panic!("{other:?}"),
    }
}

/// The stand-in answers in the documented shapes: its 200, 202 and 422 bodies carry every
/// field of the reference's examples (`tests/fixtures/sql_api/`).
#[tokio::test]
async fn the_stand_in_answers_in_the_documented_shapes() {
    let keys = |body: &Json| -> Vec<String> {
        let mut keys: Vec<String> = body.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        keys
    };
    let documented = |name: &str| -> Json { serde_json::from_str(&fixture(name)).unwrap() };
    let standin = StandIn::shared();
    let post = |statement: &'static str, query: &'static str| async move {
        let path = format!("/api/v2/statements{query}");
        standin
            .raw(
                Method::POST,
                &path,
                Some(json!({"statement": statement, "parameters": {"TIMEZONE": "UTC"}})),
            )
            .await
    };
    for (answer, name, status) in [
        (
            post("SELECT COUNT(*) FROM (SELECT 1)", "").await,
            "sql_api/200_result.json",
            200,
        ),
        (
            post("SELECT 1", "?async=true").await,
            "sql_api/202_async.json",
            202,
        ),
        (
            post("SELECT AFAF", "").await,
            "sql_api/422_statement_error.json",
            422,
        ),
    ] {
        assert_eq!(answer.status, status, "{name}");
        let got = keys(&answer.json());
        let missing: Vec<String> = keys(&documented(name))
            .into_iter()
            .filter(|k| !got.contains(k))
            .collect();
        assert!(missing.is_empty(), "{name}: the stand-in lacks {missing:?}");
    }
}

/// <https://docs.snowflake.com/en/sql-reference/functions/sum>: "Numeric values are summed into
/// an equivalent or larger data type" (only VARCHAR is cast to float). A sum of NUMBER is an
/// exact NUMBER, as `sluice validate` compares it with the source's exact sum.
#[tokio::test]
async fn a_sum_of_numbers_is_an_exact_number() {
    let client = StandIn::shared().client("sumexact");
    for sql in [
        "CREATE OR REPLACE TABLE SUMS (X NUMBER(14,2))",
        "INSERT INTO SUMS VALUES (0.10), (0.20), (12345678901.01)",
    ] {
        client.execute(&Statement::new(sql)).await.unwrap();
    }
    let result = client
        .execute(&Statement::new("SELECT SUM(X) FROM SUMS"))
        .await
        .unwrap();
    assert_eq!(
        result.scalar(),
        Some(&Value::Number {
            unscaled: 1_234_567_890_131,
            scale: 2
        })
    );
}
