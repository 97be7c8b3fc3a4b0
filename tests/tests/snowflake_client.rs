//! The Snowflake SQL API client against the local stand-in (real HTTP, real JWT verification,
//! SQL on fakesnow): auth, typed errors, 202 polling, retries that never run a statement
//! twice, multi-statement requests, bindings, encrypted keys, result types.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chrono::NaiveDate;
use serde_json::json;
use sluice::warehouse::snowflake::{PrivateKey, SnowflakeClient, SnowflakeError};
use sluice::warehouse::{Binding, QueryResult, Statement, Value};
use sluice_tests::snowflake::{ACCOUNT, KeyPair, LOSE_ANSWER, Options, StandIn, USER};

fn count(result: &QueryResult) -> i64 {
    result
        .scalar()
        .and_then(Value::as_i64)
        .unwrap_or_else(|| panic!("not a count: {result:?}"))
}

async fn run(client: &SnowflakeClient, sql: &str) -> QueryResult {
    client.execute(&Statement::new(sql)).await.unwrap()
}

#[tokio::test]
async fn rows_come_back_typed_by_row_type() {
    let client = StandIn::shared().client("types");
    run(
        &client,
        "CREATE TABLE t (n NUMBER(10,2), i INTEGER, f FLOAT, s VARCHAR, b BOOLEAN, d DATE, \
         ts TIMESTAMP_NTZ, v VARIANT, bin BINARY)",
    )
    .await;
    let insert = Statement::new(
        "INSERT INTO t SELECT CAST(? AS NUMBER(10,2)), ?, ?, ?, ?, CAST(? AS DATE), CAST(? AS TIMESTAMP_NTZ), \
         PARSE_JSON(?), TO_BINARY(?, 'HEX')",
    )
    .bind(Binding::Decimal("-12.34".into()))
    .bind(42i64)
    .bind(2.5f64)
    .bind("it's \"quoted\"; -- not a comment")
    .bind(true)
    .bind("2024-02-29")
    .bind("2024-02-29 23:59:58.123456")
    .bind(r#"{"k": [1, 2]}"#)
    .bind("CAFE");
    let inserted = client.execute(&insert).await.unwrap();
    assert_eq!(count(&inserted), 1);
    run(&client, "INSERT INTO t (i) VALUES (7)").await;

    let result = run(
        &client,
        "SELECT n, i, f, s, b, d, ts, v, bin FROM t ORDER BY i DESC",
    )
    .await;
    let types: Vec<&str> = result
        .columns
        .iter()
        .map(|c| c.type_name.as_str())
        .collect();
    assert_eq!(
        types,
        [
            "fixed",
            "fixed",
            "real",
            "text",
            "boolean",
            "date",
            "timestamp_ntz",
            "variant",
            "binary"
        ]
    );
    assert_eq!(result.columns[0].scale, Some(2));
    assert_eq!(
        result.rows[0],
        vec![
            Value::Number {
                unscaled: -1234,
                scale: 2
            },
            Value::Number {
                unscaled: 42,
                scale: 0
            },
            Value::Real(2.5),
            Value::Text("it's \"quoted\"; -- not a comment".into()),
            Value::Boolean(true),
            Value::Date(NaiveDate::from_ymd_opt(2024, 2, 29).unwrap()),
            Value::TimestampNtz(
                NaiveDate::from_ymd_opt(2024, 2, 29)
                    .unwrap()
                    .and_hms_micro_opt(23, 59, 58, 123_456)
                    .unwrap()
            ),
            Value::Variant(serde_json::json!({"k": [1, 2]})),
            Value::Binary(vec![0xCA, 0xFE]),
        ]
    );
    // A row of NULLs but the integer.
    assert_eq!(result.rows[1][1].as_i64(), Some(7));
    assert!(
        result.rows[1]
            .iter()
            .enumerate()
            .all(|(i, v)| i == 1 || *v == Value::Null)
    );
}

#[tokio::test]
async fn a_wrong_key_is_a_clear_auth_error() {
    let stranger = KeyPair::generate();
    let client =
        SnowflakeClient::new(StandIn::shared().config("wrongkey"), stranger.private_key()).unwrap();
    let err = client
        .execute(&Statement::new("SELECT 1"))
        .await
        .unwrap_err();
    assert!(matches!(err, SnowflakeError::Auth { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains("SLUICEORG-TEST.SLUICE_LOADER"),
        "{message}"
    );
    assert!(message.contains("RSA_PUBLIC_KEY"), "{message}");
    assert!(
        message.contains("Signature verification failed"),
        "{message}"
    );
    // Neither the token (a JWT starts with eyJ) nor the key leaks into the error.
    for shown in [
        message.as_str(),
        &format!("{err:?}"),
        &format!("{client:?}"),
    ] {
        assert!(!shown.contains("eyJ"), "{shown}");
        assert!(!shown.contains("PRIVATE KEY"), "{shown}");
    }
}

#[tokio::test]
async fn a_statement_error_is_typed_with_snowflake_codes() {
    let client = StandIn::shared().client("errors");
    let err = client
        .execute(&Statement::new("SELECT * FROM no_such_table"))
        .await
        .unwrap_err();
    match &err {
        SnowflakeError::Statement {
            code,
            sql_state,
            message,
            statement_handle,
        } => {
            assert_eq!(code, "002003");
            assert_eq!(sql_state, "42S02");
            assert!(message.contains("NO_SUCH_TABLE"), "{message}");
            assert!(statement_handle.is_some());
        }
        other => panic!("not a statement error: {other:?}"),
    }
    assert_eq!(err.sql_state(), Some("42S02"));
}

#[tokio::test]
async fn a_202_is_polled_to_completion() {
    // This stand-in answers every submission 202, however quick the statement.
    let standin = StandIn::start(&Options {
        always_202: true,
        ..Options::default()
    });
    let client = standin.client("polled");
    run(&client, "CREATE TABLE t (id INTEGER)").await;
    let inserted = client
        .execute(
            &Statement::new("INSERT INTO t VALUES (?), (?), (?)")
                .bind(1i64)
                .bind(2i64)
                .bind(3i64),
        )
        .await
        .unwrap();
    assert_eq!(count(&inserted), 3);
    assert_eq!(count(&run(&client, "SELECT MAX(id) FROM t").await), 3);
}

#[tokio::test]
async fn async_submission_is_polled_to_completion() {
    let standin = StandIn::shared();
    let mut config = standin.config("async");
    config.submit_async = true;
    let client = SnowflakeClient::new(config, KeyPair::shared().private_key()).unwrap();
    let result = run(&client, "SELECT SYSTEM$WAIT(1)").await;
    assert_eq!(
        result.scalar(),
        Some(&Value::Text("waited 1 seconds".into()))
    );
}

#[tokio::test]
async fn a_lost_answer_is_retried_without_running_the_statement_twice() {
    let client = StandIn::shared().client("retry");
    run(&client, "CREATE TABLE t (note VARCHAR)").await;
    // The stand-in runs this INSERT, then answers 503; the client resubmits the same requestId
    // with retry=true and must get the first execution's answer.
    let inserted = client
        .execute(&Statement::new(format!(
            "INSERT INTO t SELECT '{LOSE_ANSWER}'"
        )))
        .await
        .unwrap();
    assert_eq!(count(&inserted), 1);
    assert_eq!(count(&run(&client, "SELECT COUNT(*) FROM t").await), 1);
}

#[tokio::test]
async fn the_same_request_id_runs_once() {
    let client = StandIn::shared().client("once");
    run(&client, "CREATE TABLE t (id INTEGER)").await;
    // Each test binary starts its own stand-in, so a fixed id is this test's alone.
    let request_id = "0b6e2a3c-51f4-4c7e-9d1a-5b7f3e2d1c0a";
    let insert = Statement::new("INSERT INTO t VALUES (1)");
    let first = client.execute_once(request_id, &insert).await.unwrap();
    let second = client.execute_once(request_id, &insert).await.unwrap();
    assert_eq!(first.statement_id, second.statement_id);
    assert_eq!(count(&run(&client, "SELECT COUNT(*) FROM t").await), 1);
    let err = client
        .execute_once("run-1/copy", &insert)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("request_id"), "{err}");
}

#[tokio::test]
async fn multi_statement_requests_return_one_result_per_statement() {
    let client = StandIn::shared().client("multi");
    let results = client
        .execute_all(&[
            "CREATE TABLE t (id INTEGER, name VARCHAR);".to_owned(),
            "INSERT INTO t VALUES (1, 'one'), (2, 'two')".to_owned(),
            "SELECT name FROM t WHERE id = 2".to_owned(),
        ])
        .await
        .unwrap();
    assert_eq!(results.len(), 3);
    assert_eq!(count(&results[1]), 2);
    assert_eq!(results[2].rows, vec![vec![Value::Text("two".into())]]);
    assert_ne!(results[1].statement_id, results[2].statement_id);

    // A failing statement stops the request with its own error.
    let err = client
        .execute_all(&[
            "INSERT INTO t VALUES (3, 'three')".to_owned(),
            "SELECT nope FROM t".to_owned(),
        ])
        .await
        .unwrap_err();
    assert!(matches!(err, SnowflakeError::Statement { .. }), "{err:?}");
}

#[tokio::test]
async fn an_encrypted_pkcs8_key_works_with_its_passphrase() {
    let keys = KeyPair::shared();
    let key = PrivateKey::from_pkcs8_pem(&keys.encrypted_pem, Some(&keys.passphrase)).unwrap();
    assert_eq!(key.fingerprint(), keys.private_key().fingerprint());
    let client = SnowflakeClient::new(StandIn::shared().config("encrypted"), key).unwrap();
    assert_eq!(count(&run(&client, "SELECT 41 + 1").await), 42);

    let err = PrivateKey::from_pkcs8_pem(&keys.encrypted_pem, Some("wrong")).unwrap_err();
    assert!(err.to_string().contains("wrong passphrase"), "{err}");
    let err = PrivateKey::from_pkcs8_pem(&keys.encrypted_pem, None).unwrap_err();
    assert!(err.to_string().contains("no passphrase"), "{err}");
    assert!(!format!("{key:?}", key = keys.private_key()).contains("PRIVATE"));
}

#[tokio::test]
async fn the_token_is_signed_once_and_reused() {
    let standin = StandIn::start(&Options::default());
    let client = standin.client("tokens");
    run(&client, "SELECT 1").await;
    // Long enough that a token signed again would carry another iat, and so differ.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    run(&client, "SELECT 2").await;
    assert_eq!(standin.stats()["distinctTokens"], 1);
}

#[tokio::test]
async fn a_statement_past_its_timeout_is_cancelled() {
    let standin = StandIn::start(&Options::default());
    let mut config = standin.config("timeout");
    config.submit_async = true;
    config.tuning.statement_timeout = Duration::from_secs(1);
    config.tuning.timeout_grace = Duration::ZERO;
    let client = SnowflakeClient::new(config, KeyPair::shared().private_key()).unwrap();
    let err = client
        .execute(&Statement::new("SELECT SYSTEM$WAIT(60)"))
        .await
        .unwrap_err();
    assert!(matches!(err, SnowflakeError::Timeout { .. }), "{err:?}");
    assert_eq!(standin.stats()["canceled"], 1);
}

#[tokio::test]
async fn results_spanning_partitions_are_fetched_whole() {
    let standin = StandIn::start(&Options {
        partition_rows: 2,
        ..Options::default()
    });
    let client = standin.client("partitions");
    run(&client, "CREATE TABLE t (id INTEGER)").await;
    run(&client, "INSERT INTO t VALUES (3), (0), (4), (1), (2)").await;
    let result = run(&client, "SELECT id FROM t ORDER BY id").await;
    let values: Vec<i64> = result.rows.iter().map(|r| r[0].as_i64().unwrap()).collect();
    assert_eq!(values, [0, 1, 2, 3, 4]);
}

#[tokio::test]
async fn bad_config_names_the_field() {
    let mut config = StandIn::shared().config("config");
    config.base_url = Some("http://snowflake.example.com".into());
    let err = SnowflakeClient::new(config, KeyPair::shared().private_key()).unwrap_err();
    assert!(err.to_string().contains("base_url"), "{err}");
    let mut config = StandIn::shared().config("config");
    config.user = " ".into();
    let err = SnowflakeClient::new(config, KeyPair::shared().private_key()).unwrap_err();
    assert!(err.to_string().contains("user"), "{err}");
}

/// A Parquet file of (id BIGINT, name VARCHAR).
fn parquet_file(ids: &[i64], names: &[&str]) -> Vec<u8> {
    use std::sync::Arc;

    use arrow::array::{Int64Array, RecordBatch, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(ids.to_vec())),
            Arc::new(StringArray::from(names.to_vec())),
        ],
    )
    .unwrap();
    sluice_tests::parquet_bytes(&batch)
}

#[tokio::test]
async fn copy_loads_the_listed_files_of_an_s3_stage() {
    let moto = sluice_tests::moto::MotoServer::shared();
    let bucket = moto
        .bucket_with(
            "stage",
            vec![
                (
                    "raw/run1/part-0.parquet",
                    parquet_file(&[1, 2], &["one", "two"]),
                ),
                ("raw/run1/part-1.parquet", parquet_file(&[3], &["three"])),
                // Under the prefix but not listed: must not be loaded.
                ("raw/run1/stray.parquet", parquet_file(&[99], &["stray"])),
            ],
        )
        .await;

    let standin = StandIn::start(&Options {
        s3_endpoint: Some(moto.endpoint()),
        ..Options::default()
    });
    let client = standin.client("copy");
    run(&client, "CREATE TABLE raw_t (id BIGINT, name VARCHAR)").await;
    run(
        &client,
        &format!("CREATE STAGE raw_stage URL = 's3://{bucket}/raw/'"),
    )
    .await;
    let copy = "COPY INTO raw_t FROM @raw_stage/run1/ \
                FILES = ('part-0.parquet', 'part-1.parquet') \
                FILE_FORMAT = (TYPE = PARQUET) MATCH_BY_COLUMN_NAME = CASE_INSENSITIVE \
                ON_ERROR = ABORT_STATEMENT";
    let result = run(&client, copy).await;
    let file = result.column_index("file").unwrap();
    let loaded = result.column_index("rows_loaded").unwrap();
    let mut per_file: Vec<(String, i64)> = result
        .rows
        .iter()
        .map(|r| {
            (
                r[file].as_str().unwrap().to_owned(),
                r[loaded].as_i64().unwrap(),
            )
        })
        .collect();
    per_file.sort();
    assert_eq!(
        per_file,
        [
            (format!("s3://{bucket}/raw/run1/part-0.parquet"), 2),
            (format!("s3://{bucket}/raw/run1/part-1.parquet"), 1),
        ]
    );
    let names = run(&client, "SELECT name FROM raw_t ORDER BY id").await;
    let names: Vec<&str> = names.rows.iter().map(|r| r[0].as_str().unwrap()).collect();
    assert_eq!(names, ["one", "two", "three"]);
}

#[tokio::test]
async fn procedures_run_their_statements_with_arguments_bound() {
    let client = StandIn::shared().client("procs");
    run(&client, "CREATE TABLE events (run_id VARCHAR, n INTEGER)").await;
    run(
        &client,
        "CREATE OR REPLACE PROCEDURE record_run(run_id VARCHAR, n INTEGER)
         RETURNS VARIANT LANGUAGE SQL AS
         $$
         BEGIN
           INSERT INTO events VALUES (:run_id, :n);
           INSERT INTO events VALUES (:run_id, :n + 1);
           RETURN OBJECT_CONSTRUCT('run_id', :run_id,
             'rows', (SELECT COUNT(*) FROM events WHERE run_id = :run_id));
         END;
         $$",
    )
    .await;
    let called = client
        .execute(&Statement::new("CALL record_run(?, 10)").bind("run-'1'"))
        .await
        .unwrap();
    assert_eq!(called.columns[0].name, "RECORD_RUN");
    assert_eq!(
        called.scalar(),
        Some(&Value::Variant(
            serde_json::json!({"run_id": "run-'1'", "rows": 2})
        ))
    );
    let sum = run(
        &client,
        "SELECT MAX(n) FROM events WHERE run_id = 'run-''1'''",
    )
    .await;
    assert_eq!(count(&sum), 11);

    let err = client
        .execute(&Statement::new(
            "CREATE PROCEDURE p() RETURNS INTEGER LANGUAGE SQL AS $$ BEGIN LET x := 1; RETURN x; END; $$",
        ))
        .await
        .unwrap_err();
    assert_eq!(err.sql_state(), Some("0A000"), "{err}");
}

// ---- The stand-in's JWT checks, with tokens sluice did not make ----------------------------
//
// The client tests above pass only if the stand-in really verifies what Snowflake verifies.
// Here each check is probed with a token built and signed by the openssl command line tool,
// so a stand-in that waved a claim through would be caught whatever sluice's signer does.

/// Runs openssl with `stdin`, returning its stdout.
fn openssl_out(args: &[&str], stdin: &[u8]) -> Vec<u8> {
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Dropping stdin after the write closes it, so openssl sees the end of its input.
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// `SHA256:<base64 of the SHA-256 of the public key's DER>`, as `DESCRIBE USER` shows it,
/// computed by openssl from the public key file.
fn openssl_fingerprint(keys: &KeyPair) -> String {
    let public = keys.public_pem.to_str().unwrap();
    let der = openssl_out(&["pkey", "-pubin", "-in", public, "-outform", "DER"], &[]);
    let digest = openssl_out(&["dgst", "-sha256", "-binary"], &der);
    format!("SHA256:{}", STANDARD.encode(digest))
}

/// An RS256 JWT with these claims, signed by openssl with the key the shared stand-in trusts.
fn openssl_jwt(claims: &serde_json::Value) -> String {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("rsa_key.p8");
    std::fs::write(&key, &KeyPair::shared().private_pem).unwrap();
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = openssl_out(
        &["dgst", "-sha256", "-sign", key.to_str().unwrap()],
        input.as_bytes(),
    );
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

/// Submits `SELECT 1` to the shared stand-in over plain HTTP with `token` as the bearer (none:
/// no Authorization header); the status and the JSON body.
async fn submit_with(token: Option<&str>) -> (u16, serde_json::Value) {
    let standin = StandIn::shared();
    let database = standin.config("auth").database.unwrap();
    let mut request = sluice_tests::stack::http_client()
        .post(format!("{}/api/v2/statements", standin.base_url()))
        .header("X-Snowflake-Authorization-Token-Type", "KEYPAIR_JWT")
        .json(&json!({"statement": "SELECT 1", "database": database}));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn the_standin_refuses_missing_misaddressed_and_expired_tokens() {
    let subject = format!("{ACCOUNT}.{USER}");
    let issuer = format!("{subject}.{}", openssl_fingerprint(KeyPair::shared()));
    let now = chrono::Utc::now().timestamp();
    let claims = |iss: &str, sub: &str, iat: i64, exp: i64| json!({"iss": iss, "sub": sub, "iat": iat, "exp": exp});
    // The control: a token made this way is accepted, so each refusal below is for its one
    // difference from it and not for how the tokens are made.
    let (status, body) = submit_with(Some(&openssl_jwt(&claims(
        &issuer,
        &subject,
        now,
        now + 59 * 60,
    ))))
    .await;
    assert_eq!(status, 200, "{body}");

    // A key the user had before (the signature is still the trusted key's).
    let old_key = format!("{subject}.{}", openssl_fingerprint(&KeyPair::generate()));
    let stranger = format!("{ACCOUNT}.SOMEONE_ELSE");
    // Snowflake wants ACCOUNT.USER upper case; the stand-in must not fold case for a client.
    let lower_issuer = issuer.replacen(&subject, &subject.to_lowercase(), 1);
    let cases: Vec<(&str, Option<String>, &str)> = vec![
        ("no Authorization header", None, "missing Bearer token"),
        (
            "iss with another key's fingerprint",
            Some(openssl_jwt(&claims(&old_key, &subject, now, now + 600))),
            // The stand-in's wording, so a refusal for another reason does not pass.
            "iss '",
        ),
        (
            "iss in lower case",
            Some(openssl_jwt(&claims(
                &lower_issuer,
                &subject,
                now,
                now + 600,
            ))),
            // The stand-in's wording, so a refusal for another reason does not pass.
            "iss '",
        ),
        (
            "sub of another user",
            Some(openssl_jwt(&claims(&issuer, &stranger, now, now + 600))),
            "sub '",
        ),
        (
            "sub in lower case",
            Some(openssl_jwt(&claims(
                &issuer,
                &subject.to_lowercase(),
                now,
                now + 600,
            ))),
            "sub '",
        ),
        (
            "exp an hour ago",
            Some(openssl_jwt(&claims(
                &issuer,
                &subject,
                now - 2 * 3600,
                now - 3600,
            ))),
            "ExpiredSignatureError",
        ),
    ];
    for (what, token, reason) in cases {
        let (status, body) = submit_with(token.as_deref()).await;
        assert_eq!(status, 401, "{what}: {body}");
        assert_eq!(body["code"], "390144", "{what}: {body}");
        let message = body["message"].as_str().unwrap_or_default();
        assert!(message.contains(reason), "{what}: {message}");
    }
}

#[tokio::test]
async fn a_lower_case_account_and_user_are_upper_cased_in_the_token() {
    // The shared stand-in expects ACCOUNT and USER as configured, upper case, and compares
    // them case-sensitively (the lower-case cases above), so this passes only if the client
    // upper-cases both for iss and sub.
    let standin = StandIn::shared();
    let mut config = standin.config("lowercase");
    config.account = ACCOUNT.to_lowercase();
    config.user = USER.to_lowercase();
    assert_ne!(config.account, ACCOUNT);
    assert_ne!(config.user, USER);
    let client = SnowflakeClient::new(config, KeyPair::shared().private_key()).unwrap();
    assert_eq!(count(&run(&client, "SELECT 41 + 1").await), 42);
}

/// The claims of a token, decoded without checking it (the stand-in checks signatures).
fn claims_of(token: &str) -> serde_json::Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

#[test]
fn a_token_is_reused_until_five_minutes_before_it_expires_then_signed_again() {
    use sluice::warehouse::snowflake::jwt::TokenSource;
    use std::time::UNIX_EPOCH;
    let tokens = TokenSource::new(KeyPair::shared().private_key(), ACCOUNT, USER);
    let start = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let (first, fresh) = tokens.token_at(start).unwrap();
    assert!(fresh);
    let claims = claims_of(&first.value);
    let (iat, exp) = (
        claims["iat"].as_u64().unwrap(),
        claims["exp"].as_u64().unwrap(),
    );
    assert_eq!(iat, 1_800_000_000);
    assert!(
        exp - iat <= 3600,
        "Snowflake takes at most an hour: {claims}"
    );

    // Reused while more than five minutes of it are left.
    let renew_at = UNIX_EPOCH + Duration::from_secs(exp) - Duration::from_secs(5 * 60);
    let (again, fresh) = tokens.token_at(renew_at - Duration::from_secs(1)).unwrap();
    assert!(!fresh);
    assert_eq!(again.value, first.value);

    // From then on a new one, which is then reused in its turn.
    let (renewed, fresh) = tokens.token_at(renew_at).unwrap();
    assert!(fresh);
    assert_ne!(renewed.value, first.value);
    assert_eq!(
        claims_of(&renewed.value)["iat"].as_u64().unwrap(),
        renew_at.duration_since(UNIX_EPOCH).unwrap().as_secs()
    );
    let (reused, fresh) = tokens.token_at(renew_at + Duration::from_secs(60)).unwrap();
    assert!(!fresh);
    assert_eq!(reused.value, renewed.value);

    // Forgetting it (the server refused it) signs a new one at once.
    tokens.invalidate();
    assert!(
        tokens
            .token_at(renew_at + Duration::from_secs(61))
            .unwrap()
            .1
    );
}

#[tokio::test]
async fn every_statement_carries_the_configured_session_context() {
    let standin = StandIn::start(&Options::default());
    let mut config = standin.config("context");
    config.warehouse = Some("REPORTING_WH".into());
    config.role = Some("ANALYST".into());
    let database = config.database.clone().unwrap();
    let schema = config.schema.clone().unwrap();
    let client = SnowflakeClient::new(config, KeyPair::shared().private_key()).unwrap();
    run(&client, "SELECT 1").await;
    let context = &standin.stats()["lastContext"];
    assert_eq!(context["warehouse"], "REPORTING_WH");
    assert_eq!(context["role"], "ANALYST");
    assert_eq!(context["database"], database.as_str());
    assert_eq!(context["schema"], schema.as_str());
}
