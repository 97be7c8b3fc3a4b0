//! The serverless flow end to end on this machine: the three functions as their real
//! binaries under the Lambda runtime emulator, invoked exactly as Snowflake's external
//! function and Lambda's async invocations would, against PostgreSQL, moto and the
//! Snowflake stand-in. Every check compares with PostgreSQL, never with what sluice wrote.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use serde_json::{Value, json};
use sluice::state::prelude::*;
use sluice_core::{Config, RunStatus};
use sluice_tests::stack::{LocalStack, StackOptions};
use sluice_tests::{TestDb, shop_db};

use sluice_tests::snowflake::SHOP_WAREHOUSE_TABLES as TABLES;

fn bin_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_trigger"))
        .parent()
        .unwrap()
        .to_path_buf()
}

async fn stack(label: &str, db: &TestDb, failpoints: Option<&str>) -> LocalStack {
    stack_with(label, db, failpoints, TABLES, Vec::new()).await
}

async fn stack_with(
    label: &str,
    db: &TestDb,
    failpoints: Option<&str>,
    tables: &str,
    env: Vec<(String, String)>,
) -> LocalStack {
    let config = Config::from_yaml(&sluice_tests::shop_config(db, tables), "test").unwrap();
    let log_dir = std::env::temp_dir().join(format!("sluice-stack-{label}-{}", std::process::id()));
    LocalStack::start(
        label,
        &config,
        &StackOptions {
            bin_dir: bin_dir(),
            extract_failpoints: failpoints.map(str::to_owned),
            log_dir,
            env,
            extract_instances: 1,
            duplicate_extract: false,
        },
    )
    .await
}

/// A stack for `config` with six extract instances, as many chunks at once as Lambda would
/// run, so only sluice's own caps can hold them back; every extract event delivered twice
/// with `duplicate_extract`.
async fn wide_stack(label: &str, config: &Config, duplicate_extract: bool) -> LocalStack {
    let log_dir = std::env::temp_dir().join(format!("sluice-stack-{label}-{}", std::process::id()));
    LocalStack::start(
        label,
        config,
        &StackOptions {
            bin_dir: bin_dir(),
            extract_failpoints: None,
            log_dir,
            env: Vec::new(),
            extract_instances: 6,
            duplicate_extract,
        },
    )
    .await
}

/// STAGING (`SCHEMA.NAME` in the stack's database) holds exactly the source table.
async fn assert_staging_equals_source(
    s: &LocalStack,
    pg: &tokio_postgres::Client,
    staging: &str,
    source: &str,
) {
    let staging = format!("\"{}\".{staging}", s.database);
    sluice_tests::snowflake::assert_staging_equals_source(&s.snowflake, pg, &staging, source).await;
}

async fn pg_count(pg: &tokio_postgres::Client, table: &str) -> i64 {
    pg.query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .unwrap()
        .get(0)
}

fn status(result: &Value) -> &str {
    result["status"].as_str().unwrap_or_default()
}

#[tokio::test]
#[cfg_attr(
    not(feature = "failpoints"),
    ignore = "needs the failpoints feature: cargo test --features sluice-functions/failpoints"
)]
async fn snowflake_calls_run_the_whole_flow_exactly_once() {
    let db = shop_db("lstack").await;
    let pg = db.client().await;
    // The extract function crashes once, mid-upload of its first chunk.
    let s = stack("lstack", &db, Some("extract-after-batch=1*panic")).await;

    // One external-function batch for two tables, followed through the async protocol.
    let results = s
        .ingest(&[("shop", "public.orders"), ("shop", "public.products")])
        .await;
    for result in &results {
        assert_eq!(status(result), "COMPLETED", "{result}");
    }
    let orders = pg_count(&pg, "public.orders").await;
    assert_eq!(
        results[0]["merge"],
        json!({"inserted": orders, "updated": 0})
    );
    assert_staging_equals_source(&s, &pg, "STAGING.SHOP_ORDERS", "public.orders").await;
    let products = s
        .query(&format!(
            "SELECT COUNT(*) FROM \"{}\".STAGING.SHOP_PUBLIC_PRODUCTS",
            s.database
        ))
        .await;
    assert_eq!(
        products.rows[0][0].as_i64(),
        Some(pg_count(&pg, "public.products").await)
    );
    // The crash happened and was retried by the (emulated) Lambda async retry.
    let shim = s.log_lines("lambda-shim");
    assert!(
        shim.iter()
            .any(|l| l.contains("function=extract") && l.contains("outcome=failed")),
        "the failpoint never fired: {shim:?}"
    );
    let stats = s.settle().await;
    assert_eq!(stats["destinations_sent"], 0, "{stats}");

    // The same call again adds nothing: the incremental window re-reads only its lookback,
    // and the merge changes no row.
    let again = s.ingest(&[("shop", "public.orders")]).await;
    assert_eq!(status(&again[0]), "COMPLETED", "{}", again[0]);
    assert_eq!(again[0]["merge"], json!({"inserted": 0, "updated": 0}));
    assert_staging_equals_source(&s, &pg, "STAGING.SHOP_ORDERS", "public.orders").await;

    // A call while the table runs: "already running" with the running run's id. The run is
    // held by its lease (what a running run holds), so the check does not race a real run;
    // that exactly one of two racing runs gets the lease is the state contract's test.
    let state = s.state().await;
    let holder = sluice_core::RunId::new();
    let now = chrono::Utc::now();
    state
        .acquire_lease(
            "shop/public.orders",
            holder,
            now,
            now + chrono::Duration::hours(1),
        )
        .await
        .unwrap();
    let (code, second) = s
        .call(
            reqwest::Method::POST,
            "ingest_async",
            None,
            Some(json!([[0, "shop", "public.orders"]])),
        )
        .await;
    assert_eq!(code, 200, "{second}");
    assert_eq!(
        second["data"][0][1]["status"], "ALREADY_RUNNING",
        "{second}"
    );
    assert_eq!(second["data"][0][1]["run_id"], holder.to_string());
    state
        .release_lease("shop/public.orders", holder)
        .await
        .unwrap();

    // An operator's `sluice trigger` reaches the same function (a direct, synchronous invoke).
    let sluice = bin_dir().join("sluice");
    assert!(
        sluice.exists(),
        "{} is missing: build the CLI too (cargo test --workspace does)",
        sluice.display()
    );
    let output = std::process::Command::new(&sluice)
        .args([
            "--aws-endpoint",
            &format!("http://127.0.0.1:{}", s.shim_port),
        ])
        .args([
            "--aws-region",
            "us-east-1",
            "trigger",
            "--function",
            "trigger",
        ])
        .args(["--table", "shop/public.products", "--table", "public.nope"])
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(1),
        "{printed} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let started = printed
        .lines()
        .find_map(|l| l.strip_prefix("shop/public.products: PLANNED "))
        .unwrap_or_else(|| panic!("{printed}"));
    assert!(
        printed.contains("public.nope: error: no table 'public.nope'"),
        "{printed}"
    );
    s.settle().await;
    assert_eq!(s.run(started.trim()).await.status, RunStatus::Completed);

    // Orders change at the source, and the merge procedure is broken: the run fails, the
    // watermark stays, and the next run (procedure fixed) brings every change.
    let changed = pg
        .execute(
            "UPDATE public.orders SET total = total + 1, updated_at = timestamp '2031-01-01' + order_id * interval '1 second' WHERE order_id % 250 = 3",
            &[],
        )
        .await
        .unwrap();
    assert!(changed > 0);
    let state = s.state().await;
    let before = state
        .table_state("shop/public.orders")
        .await
        .unwrap()
        .watermark;
    let config = Config::from_yaml(&sluice_tests::shop_config(&db, TABLES), "test").unwrap();
    let mut broken = config.tables.clone();
    broken[0].target.merge_procedure = Some("STAGING.NO_SUCH_MERGE".into());
    s.push_tables(broken).await;
    let failed = s.ingest(&[("shop", "public.orders")]).await;
    assert_eq!(status(&failed[0]), "FAILED", "{}", failed[0]);
    assert!(
        failed[0]["error"]
            .as_str()
            .unwrap()
            .contains("NO_SUCH_MERGE"),
        "{}",
        failed[0]
    );
    assert_eq!(
        state
            .table_state("shop/public.orders")
            .await
            .unwrap()
            .watermark,
        before,
        "a failed merge moved the watermark"
    );
    s.push_tables(config.tables.clone()).await;
    let recovered = s.ingest(&[("shop", "public.orders")]).await;
    assert_eq!(status(&recovered[0]), "COMPLETED", "{}", recovered[0]);
    assert_eq!(
        recovered[0]["merge"]["updated"], changed,
        "{}",
        recovered[0]
    );
    assert_staging_equals_source(&s, &pg, "STAGING.SHOP_ORDERS", "public.orders").await;
}

#[tokio::test]
async fn bad_requests_get_a_400_with_a_message_and_start_nothing() {
    let db = shop_db("lstackbad").await;
    let s = stack("lstackbad", &db, None).await;
    let url = s.trigger_url("ingest");
    let http = sluice_tests::stack::http_client();
    let send = |request: reqwest::RequestBuilder| async move {
        let response = request.send().await.unwrap();
        let code = response.status().as_u16();
        let body: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
        (code, body)
    };
    let headers = |r: reqwest::RequestBuilder| {
        r.header("sf-external-function-format", "json")
            .header("sf-external-function-format-version", "1.0")
    };
    // The stack's trigger runs with the deployed default, the MAX_BATCH_ROWS the external
    // functions are created with (`sluice snowflake sql`; the template's MaxBatchRows).
    let limit = sluice_core::deploy::DEFAULT_MAX_BATCH_ROWS;
    let over = format!("{} rows in one batch, at most {limit}", limit + 1);
    for (request, expected) in [
        (
            http.post(&url).header("content-type", "application/json").body("{\"data\": [[0, \"shop\", \"public.orders\"]]}"),
            "header sf-external-function-format: missing",
        ),
        (
            headers(http.post(&url)).header("content-type", "text/plain").body("{}"),
            "content-type: expected application/json",
        ),
        (
            headers(http.post(&url)).header("content-type", "application/json").body("not json"),
            "body: not JSON",
        ),
        (
            headers(http.post(&url)).header("content-type", "application/json").body("{\"rows\": []}"),
            "missing \\\"data\\\"",
        ),
        (
            headers(http.post(&url)).header("content-type", "application/json").body(
                json!({"data": (0..=limit).map(|i| json!([i, "shop", "public.orders"])).collect::<Vec<_>>()}).to_string(),
            ),
            over.as_str(),
        ),
        (
            headers(http.get(&url)),
            "required to poll a batch",
        ),
        (
            http.get(&url).header("sf-external-function-query-batch-id", "never-posted"),
            "batch 'never-posted' is unknown",
        ),
        (
            // Ids are opaque, but not unbounded.
            headers(http.get(&url)).header("sf-external-function-query-batch-id", "x".repeat(1025)),
            "sf-external-function-query-batch-id: expected 1 to 1024 printable ASCII characters",
        ),
    ] {
        let (code, body) = send(request).await;
        assert_eq!(code, 400, "{expected}: {body}");
        assert!(body.to_string().contains(expected), "{expected}: {body}");
    }
    // A batch of exactly MAX_BATCH_ROWS rows is taken: each row gets its own answer.
    let full: Vec<Value> = (0..limit)
        .map(|i| json!([i, "shop", format!("public.absent_{i}")]))
        .collect();
    let (code, body) = s
        .call(
            reqwest::Method::POST,
            "ingest_async",
            None,
            Some(Value::Array(full)),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let answers = body["data"].as_array().unwrap();
    assert_eq!(answers.len(), limit, "{body}");
    assert!(
        answers.iter().enumerate().all(|(i, row)| row[0] == i
            && row[1]["error"]
                .as_str()
                .is_some_and(|e| e.contains(&format!("public.absent_{i}")))),
        "{body}"
    );
    // One bad row never fails the others: a wrong table and a wrong argument each get their
    // own error, the good row starts.
    let (code, body) = s
        .call(
            reqwest::Method::POST,
            "ingest_async",
            None,
            Some(json!([
                [0, "shop", "public.nope"],
                [1, "shop", 7],
                [2, "shop", "public.products"]
            ])),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let rows = body["data"].as_array().unwrap();
    assert!(
        rows[0][1]["error"]
            .as_str()
            .unwrap()
            .contains("no table 'shop/public.nope'"),
        "{body}"
    );
    assert!(
        rows[1][1]["error"]
            .as_str()
            .unwrap()
            .contains("table must be a string"),
        "{body}"
    );
    assert!(rows[2][1]["run_id"].is_string(), "{body}");
    s.settle().await;
    let state = s.state().await;
    let runs = state.list_runs(None, 10).await.unwrap();
    assert_eq!(runs.len(), 1, "only the good row started a run: {runs:?}");
    // The status endpoint tells its story.
    let run_id = rows[2][1]["run_id"].as_str().unwrap();
    let (code, status_body) = s
        .call(
            reqwest::Method::POST,
            "status",
            None,
            Some(json!([[0, run_id], [1, "nope"]])),
        )
        .await;
    assert_eq!(code, 200, "{status_body}");
    assert_eq!(status_body["data"][0][1]["run_id"], run_id);
    assert_eq!(
        status_body["data"][0][1]["status"], "COMPLETED",
        "{status_body}"
    );
    // A summary whose size does not grow with the run: counts and phases, not the plan or
    // the per-chunk files (those stay for `sluice status`).
    let summary = &status_body["data"][0][1];
    assert_eq!(
        summary["chunks"]["done"], summary["chunks"]["planned"],
        "{summary}"
    );
    assert!(
        summary["phases"]["EXTRACTING"]["seconds"].is_number(),
        "{summary}"
    );
    assert!(
        summary.get("plan").is_none() && summary["story"].is_string(),
        "{summary}"
    );
    assert!(
        status_body["data"][1][1]["error"]
            .as_str()
            .unwrap()
            .contains("not a run id")
    );

    // The EventBridge tick starts a table whose schedule is due, once per fire time. Orders
    // fire hourly a minute ago (the next fire is ~59 minutes away); products fire monthly on
    // a day at least five days from today, far beyond the default one-hour lookback, so they
    // do not start.
    let config = Config::from_yaml(&sluice_tests::shop_config(&db, TABLES), "test").unwrap();
    let minute = (chrono::Timelike::minute(&chrono::Utc::now()) + 59) % 60;
    let mut scheduled = config.tables.clone();
    scheduled[0].schedule = Some(format!("{minute} * * * *"));
    let far_day = if chrono::Datelike::day(&chrono::Utc::now()) <= 14 {
        25
    } else {
        5
    };
    scheduled[1].schedule = Some(format!("0 0 {far_day} * *"));
    s.push_tables(scheduled.clone()).await;
    let tick = json!({"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}});
    let invoke = || async {
        let response = http
            .post(format!(
                "http://127.0.0.1:{}/2015-03-31/functions/trigger/invocations",
                s.shim_port
            ))
            .body(tick.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        response.json::<Value>().await.unwrap()
    };
    let first_tick = invoke().await;
    let runs = first_tick["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1, "{first_tick}");
    assert_eq!(runs[0]["table"], "shop/public.orders", "{first_tick}");
    assert!(runs[0]["run_id"].is_string(), "{first_tick}");
    s.settle().await;
    // The same fire time starts nothing again.
    let second_tick = invoke().await;
    assert_eq!(second_tick["runs"], json!([]), "{second_tick}");

    // Orders given key sets every hour, never run: the next tick starts one (its load is not
    // due), and the orders the source deleted leave STAGING. Then nothing is due.
    let pg = db.client().await;
    let deleted = pg
        .execute("DELETE FROM public.orders WHERE order_id % 17 = 5", &[])
        .await
        .unwrap();
    assert!(deleted > 0);
    scheduled[0].deletes.mode = sluice_core::DeleteMode::Hard;
    scheduled[0].deletes.keyset = Some(sluice_core::config::KeysetConfig {
        every: Some("1h".into()),
    });
    s.push_tables(scheduled).await;
    let keyset_tick = invoke().await;
    let runs = keyset_tick["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1, "{keyset_tick}");
    assert_eq!(runs[0]["table"], "shop/public.orders", "{keyset_tick}");
    assert_eq!(runs[0]["kind"], "key set", "{keyset_tick}");
    s.settle().await;
    assert_staging_equals_source(&s, &pg, "STAGING.SHOP_ORDERS", "public.orders").await;
    let quiet_tick = invoke().await;
    assert_eq!(quiet_tick["runs"], json!([]), "{quiet_tick}");

    // An event for a run that does not exist is answered, not failed: a retry could not
    // find the run either, so Lambda is not asked for one. A malformed event is refused with
    // its own error type.
    let call = |function: &'static str, event: Value| {
        let http = http.clone();
        let port = s.shim_port;
        async move {
            let response = http
                .post(format!(
                    "http://127.0.0.1:{port}/2015-03-31/functions/{function}/invocations"
                ))
                .body(event.to_string())
                .send()
                .await
                .unwrap();
            let code = response.status().as_u16();
            (code, response.json::<Value>().await.unwrap())
        }
    };
    let nobody = sluice_core::RunId::new().to_string();
    for (function, event) in [
        ("extract", json!({"run_id": nobody, "chunk": 0})),
        ("extract", json!({"plan_run": nobody})),
        ("finalize", json!({"run_id": nobody})),
    ] {
        let (code, answer) = call(function, event.clone()).await;
        assert_eq!(code, 200, "{function} {event}: {answer}");
        assert_eq!(
            answer,
            json!({"ignored": true, "run_id": nobody}),
            "{function} {event}"
        );
    }
    let (code, answer) = call("extract", json!({"run": nobody})).await;
    assert_ne!(code, 200, "{answer}");
    assert_eq!(answer["errorType"], "InvalidEvent", "{answer}");
}

#[tokio::test]
#[cfg_attr(
    not(feature = "failpoints"),
    ignore = "needs the failpoints feature: cargo test --features sluice-functions/failpoints"
)]
async fn a_chunk_that_fails_every_attempt_fails_its_run_through_the_destination() {
    let db = shop_db("lstackdest").await;
    // Every attempt of every chunk crashes mid-upload.
    let s = stack("lstackdest", &db, Some("extract-after-batch=panic")).await;
    let results = s.ingest(&[("shop", "public.orders")]).await;
    let result = &results[0];
    assert_eq!(status(result), "FAILED", "{result}");
    let error = result["error"].as_str().unwrap();
    assert!(
        error.contains("extracting chunk") && error.contains("failed after 3 attempts"),
        "{error}"
    );
    assert!(
        error.contains("failpoint extract-after-batch panic"),
        "{error}"
    );
    let stats = s.settle().await;
    assert!(stats["destinations_sent"].as_u64().unwrap() >= 1, "{stats}");
    // Nothing moved and nothing is left behind: no watermark, the lease is free, and no
    // completed file of the run is in the bucket (the crashed processes' uploads stay open,
    // invisible, until the bucket's lifecycle rule aborts them).
    let state = s.state().await;
    let table = state.table_state("shop/public.orders").await.unwrap();
    assert_eq!(table.watermark, None);
    assert_eq!(table.lease, None, "the lease was not released");
    let run_id = result["run_id"].as_str().unwrap();
    let s3 = sluice_tests::s3::s3_client(&s.moto.sdk_config().await);
    let keys = sluice_tests::s3::list_keys(&s3, &s.bucket).await;
    assert!(
        keys.iter()
            .all(|k| !k.contains(run_id) || k.contains("/_runs/")),
        "files of the failed run remain: {keys:?}"
    );
    // Only its story, which says how it ended.
    let story = keys
        .iter()
        .find(|k| k.contains(&format!("/_runs/{run_id}.json")))
        .unwrap_or_else(|| panic!("no story of the failed run: {keys:?}"));
    let body = sluice_tests::s3::get_object(&s3, &s.bucket, story).await;
    let told: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(told["status"], "FAILED");
    assert!(
        told["error"]
            .as_str()
            .is_some_and(|e| e.contains("failpoint extract-after-batch panic")),
        "{told}"
    );
}

#[tokio::test]
async fn a_chunk_that_outruns_its_time_limit_fails_its_run_with_advice() {
    let db = shop_db("lstackslow").await;
    // A slow source: the filter's subquery sleeps 3 s before the first row (once in the
    // plan's catalog query, once per chunk), and a chunk may take 1 s.
    let slow = "  - source: shop
    table: public.products
    primary_key: [product_id]
    load: {mode: full}
    where: \"(SELECT true FROM pg_sleep(3))\"
";
    let s = stack_with(
        "lstackslow",
        &db,
        None,
        slow,
        vec![("SLUICE_CHUNK_TIMEOUT".into(), "1s".into())],
    )
    .await;
    let results = s.ingest(&[("shop", "public.products")]).await;
    let result = &results[0];
    assert_eq!(status(result), "FAILED", "{result}");
    let error = result["error"].as_str().unwrap();
    assert!(
        error.contains("chunk 0 did not finish within SLUICE_CHUNK_TIMEOUT (1s)")
            && error.contains("make chunks smaller"),
        "{error}"
    );
    let state = s.state().await;
    let table = state.table_state("shop/public.products").await.unwrap();
    assert_eq!(table.lease, None, "the lease was not released");
    s.settle().await;
}

/// Issue 15 item 2: a run of many chunks never has more than `partition.max_concurrency`
/// chunks extracting at once, seen from PostgreSQL's own view of its connections, even when
/// Lambda could run many more extracts (here 6 instances and enough shim workers for them).
/// Each chunk's query sleeps 0.3 s, so chunks that run at once overlap in `pg_stat_activity`.
/// Every extract event is delivered twice (the shim's `--duplicate extract`), as Lambda's
/// at-least-once delivery may: each chunk still starts its successor exactly once.
#[tokio::test]
async fn a_run_of_many_chunks_never_has_more_than_max_concurrency_extracting() {
    const MAX_CONCURRENCY: i64 = 2;
    let db = shop_db("lstackcap").await;
    let pg = db.client().await;
    let tables = "  - source: shop
    table: public.orders
    primary_key: [order_id]
    load: {mode: incremental, cursor: updated_at, lookback: 15m}
    where: \"(SELECT true FROM pg_sleep(0.3))\"
    partition: {column: order_id, chunks: 12, max_concurrency: 2}
    target:
      raw_table: RAW.SHOP_ORDERS
      staging_table: STAGING.SHOP_ORDERS
gold:
  - {procedure: GOLD.REFRESH_DAILY_REVENUE, inputs: [shop/public.orders]}
";
    let config = Config::from_yaml(&sluice_tests::shop_config(&db, tables), "test").unwrap();
    let s = wide_stack("lstackcap", &config, true).await;

    let sampler = sluice_tests::ConnectionSampler::start(&db).await;
    let results = s.ingest(&[("shop", "public.orders")]).await;
    let samples = sampler.stop().await;
    let max = samples.iter().copied().max().unwrap_or(0);
    eprintln!(
        "max sluice connections active at once: {max} ({} samples)",
        samples.len()
    );
    let result = &results[0];
    assert_eq!(status(result), "COMPLETED", "{result}");
    assert_eq!(result["files"], 12, "one file per chunk: {result}");
    assert!(
        max > 0,
        "no extracting connection was ever seen: {samples:?}"
    );
    assert!(
        max <= MAX_CONCURRENCY,
        "{max} chunks extracted at once, more than max_concurrency {MAX_CONCURRENCY}: {samples:?}"
    );
    assert_staging_equals_source(&s, &pg, "STAGING.SHOP_ORDERS", "public.orders").await;
    let stats = s.settle().await;
    assert_eq!(stats["destinations_sent"], 0, "{stats}");
    assert!(stats["duplicates_sent"].as_u64() >= Some(12), "{stats}");
    // The 10 chunks after the first 2 were each started once, duplicates notwithstanding.
    let extract_logs: Vec<String> = std::iter::once("extract".to_owned())
        .chain((1..6).map(|i| format!("extract-{i}")))
        .flat_map(|name| s.log_lines(&name))
        .collect();
    let started = extract_logs
        .iter()
        .filter(|l| l.contains("next chunk of the chain started"))
        .count();
    let skipped = extract_logs
        .iter()
        .filter(|l| l.contains("next chunk already started"))
        .count();
    assert_eq!(started, 10, "{extract_logs:#?}");
    assert!(skipped >= 10, "duplicates started nothing: {skipped}");
}

/// POSTs `sluice.ingest('shop', table)` as one batch, which must be answered `202`; returns the
/// batch id and the run the row started, from the batch record.
async fn post_one(s: &LocalStack, table: &str) -> (String, sluice_core::RunId) {
    let batch = sluice_tests::stack::real_shape_batch_id();
    let (code, body) = s
        .call(
            reqwest::Method::POST,
            "ingest",
            Some(&batch),
            Some(json!([[0, "shop", table]])),
        )
        .await;
    assert_eq!(code, 202, "{body}");
    let state = s.state().await;
    let recorded = state.get_batch(&batch).await.unwrap().expect("batch");
    let run_id = recorded.rows[0].run_id.expect("the row's run");
    (batch, run_id)
}

/// Issue 15 item 1: the trigger answers Snowflake's POST before any source work, so a slow
/// source cannot push it past API Gateway's 29 s; and a planner that hangs (here: blocked far
/// past its plan timeout, as good as dead) leaves its table locked no longer than
/// `SLUICE_PLAN_TIMEOUT`. The planner runs in the extract function, whose failpoint makes the
/// first planning slow (5 s, within the 8 s plan timeout) and the second one hang for 30 s.
#[tokio::test]
#[cfg_attr(
    not(feature = "failpoints"),
    ignore = "needs the failpoints feature: cargo test --features sluice-functions/failpoints"
)]
async fn slow_planning_happens_behind_the_answer_and_a_dead_planner_frees_its_table() {
    let db = shop_db("lstackplan").await;
    let pg = db.client().await;
    let s = stack_with(
        "lstackplan",
        &db,
        Some("plan-before-source=1*sleep(5000)->1*sleep(30000)"),
        TABLES,
        vec![("SLUICE_PLAN_TIMEOUT".into(), "8s".into())],
    )
    .await;
    let state = s.state().await;

    // A slow planning: the POST is answered 202 while the run is still unplanned, i.e. the
    // answer did not wait for the source; the polls then follow the run to its end.
    let (batch, run_id) = post_one(&s, "public.orders").await;
    let run = state.get_run(run_id).await.unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Planned);
    assert!(
        run.plan.is_none(),
        "the trigger answered after planning: {run:?}"
    );
    let answer = s.poll(&batch).await;
    let result = &answer["data"][0][1];
    assert_eq!(status(result), "COMPLETED", "{result}");
    assert_eq!(result["run_id"], run_id.to_string());
    assert_staging_equals_source(&s, &pg, "STAGING.SHOP_ORDERS", "public.orders").await;

    // A planner that hangs: the table's planning lease lapses after the plan timeout, the
    // poll then answers the run FAILED (instead of waiting out Snowflake's 10 minutes), and
    // the table takes a new run at once, while the old planner is still stuck.
    let (batch, dead) = post_one(&s, "public.products").await;
    let answer = s.poll(&batch).await;
    let result = &answer["data"][0][1];
    assert_eq!(status(result), "FAILED", "{result}");
    assert_eq!(result["run_id"], dead.to_string());
    let error = result["error"].as_str().unwrap();
    assert!(
        error.contains("its planner did not finish within SLUICE_PLAN_TIMEOUT (8s)"),
        "{error}"
    );
    let (code, body) = s
        .call(
            reqwest::Method::POST,
            "ingest_async",
            None,
            Some(json!([[0, "shop", "public.products"]])),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let next = &body["data"][0][1];
    assert_eq!(status(next), "PLANNED", "the table is still locked: {next}");
    let next_id = next["run_id"].as_str().unwrap().to_owned();
    assert_ne!(next_id, dead.to_string());
    // The stuck planner is still stuck: the table was freed without its help.
    let stuck = state.get_run(dead).await.unwrap().unwrap();
    assert!(stuck.plan.is_none(), "{stuck:?}");

    // Once it wakes, it finds its run failed and starts nothing; the new run completes.
    s.settle().await;
    let dead_run = state.get_run(dead).await.unwrap().unwrap();
    assert_eq!(dead_run.status, RunStatus::Failed);
    assert!(
        dead_run.plan.is_none() && dead_run.chunks.is_empty(),
        "{dead_run:?}"
    );
    assert_eq!(s.run(&next_id).await.status, RunStatus::Completed);
    let products = s
        .query(&format!(
            "SELECT COUNT(*) FROM \"{}\".STAGING.SHOP_PUBLIC_PRODUCTS",
            s.database
        ))
        .await;
    assert_eq!(
        products.rows[0][0].as_i64(),
        Some(pg_count(&pg, "public.products").await)
    );
    let table = state.table_state("shop/public.products").await.unwrap();
    assert_eq!(table.lease, None, "a lease was left behind");
    // It woke past its plan timeout and recorded nothing: its run was failed once, by the
    // poll, so the failed-runs alarm counts it once.
    let logs = s.log_lines("extract");
    let dead_id = dead.to_string();
    assert!(
        logs.iter()
            .any(|l| l.contains("run already ended; failure not recorded")
                && l.contains("planning did not finish within 8s")
                && l.contains(&dead_id)),
        "the stuck planner never woke: {logs:?}"
    );
    assert!(
        !logs
            .iter()
            .any(|l| l.contains("\"run failed\"") && l.contains(&dead_id)),
        "{logs:?}"
    );
}

/// Issue 15 item 2, per source: `connection.max_connections` holds every run and table of a
/// source together, in Lambda too. Two tables of one source start in one Snowflake batch, each
/// allowed two chunks at once, with six extract instances free: PostgreSQL's own view never
/// shows more than the source's cap of two sluice connections at work, planning included.
#[tokio::test]
async fn runs_of_one_source_never_open_more_than_its_max_connections() {
    const MAX_CONNECTIONS: i64 = 2;
    let db = shop_db("lstacksrc").await;
    let pg = db.client().await;
    let tables = "  - source: shop
    table: public.orders
    primary_key: [order_id]
    load: {mode: full}
    where: \"(SELECT true FROM pg_sleep(0.3))\"
    partition: {column: order_id, chunks: 4, max_concurrency: 2}
  - source: shop
    table: public.products
    primary_key: [product_id]
    load: {mode: full}
    where: \"(SELECT true FROM pg_sleep(0.3))\"
    partition: {column: product_id, chunks: 4, max_concurrency: 2}
";
    let mut config = Config::from_yaml(&sluice_tests::shop_config(&db, tables), "test").unwrap();
    config.sources[0].connection.max_connections = Some(MAX_CONNECTIONS as u32);
    let s = wide_stack("lstacksrc", &config, false).await;
    let sampler = sluice_tests::ConnectionSampler::start(&db).await;
    let results = s
        .ingest(&[("shop", "public.orders"), ("shop", "public.products")])
        .await;
    let samples = sampler.stop().await;
    let max = samples.iter().copied().max().unwrap_or(0);
    eprintln!(
        "max sluice connections to the source at once: {max} ({} samples)",
        samples.len()
    );
    for (result, table) in results.iter().zip(["public.orders", "public.products"]) {
        assert_eq!(status(result), "COMPLETED", "{result}");
        assert_eq!(
            result["rows"].as_i64(),
            Some(pg_count(&pg, table).await),
            "{result}"
        );
    }
    assert!(max > 0, "no connection was ever seen: {samples:?}");
    assert!(
        max <= MAX_CONNECTIONS,
        "{max} connections at once, more than max_connections {MAX_CONNECTIONS}: {samples:?}"
    );
    // Every slot was given back: new holders take them all at once.
    s.settle().await;
    let state = s.state().await;
    let now = chrono::Utc::now();
    for _ in 0..MAX_CONNECTIONS {
        let holder = sluice::state::SlotHolder::plan(sluice_core::RunId::new());
        let answer = state
            .acquire_source_slot(
                "shop",
                MAX_CONNECTIONS as u32,
                &holder,
                now,
                now + chrono::Duration::minutes(1),
            )
            .await
            .unwrap();
        assert!(
            matches!(answer, sluice::state::SlotAcquire::Taken(_)),
            "{answer:?}"
        );
    }
}

/// The EMF documents the functions wrote to their stdout (the stack's log files), by run id.
fn emf_documents(s: &LocalStack) -> Vec<Value> {
    ["trigger", "extract", "finalize"]
        .into_iter()
        .flat_map(|name| s.log_lines(name))
        .filter_map(|line| serde_json::from_str::<Value>(&line).ok())
        .filter(|doc| doc.get("_aws").is_some())
        .collect()
}

/// The one document of `run_id`: a run is counted once, whichever function ended it.
fn emf_of<'a>(docs: &'a [Value], run_id: &str) -> &'a Value {
    let mine: Vec<&Value> = docs.iter().filter(|d| d["run_id"] == run_id).collect();
    assert_eq!(mine.len(), 1, "run {run_id}: {mine:?}");
    mine[0]
}

/// A document CloudWatch would extract: in `namespace`, per Table and Source and for the
/// stack, each metric a number at the root, with `_aws.Timestamp` in milliseconds.
fn assert_emf_shape(doc: &Value, namespace: &str, table: &str) {
    use sluice_core::metrics;
    let directives = doc["_aws"]["CloudWatchMetrics"].as_array().unwrap();
    assert_eq!(directives.len(), 2, "{doc}");
    assert_eq!(directives[0]["Dimensions"], json!([["Table"], ["Source"]]));
    assert_eq!(directives[1]["Dimensions"], json!([[]]));
    for directive in directives {
        assert_eq!(directive["Namespace"], namespace);
        for metric in directive["Metrics"].as_array().unwrap() {
            let name = metric["Name"].as_str().unwrap();
            assert!(doc[name].is_number(), "{name}: {doc}");
            assert_eq!(metric["Unit"], metrics::Unit::of(name).as_str(), "{name}");
        }
    }
    assert_eq!(doc[metrics::TABLE], table);
    assert_eq!(doc[metrics::SOURCE], "shop");
    assert!(doc["_aws"]["Timestamp"].is_i64(), "{doc}");
    assert_eq!(doc["level"], "INFO");
}

fn close(a: &Value, b: f64, what: &str) {
    let a = a.as_f64().unwrap_or_else(|| panic!("{what}: {a}"));
    assert!((a - b).abs() < 0.01, "{what}: {a} is not {b}");
}

/// Issue 19: every run that ends writes its metrics as one CloudWatch embedded metric format
/// line on the function's stdout, read back here from the functions' logs and checked against
/// PostgreSQL (rows, the cursor's lag) and the run records: a completed incremental load and a
/// full load, then a failed run (a broken merge procedure), which counts as failed, keeps the
/// watermark's lag and counts the rows it extracted.
#[tokio::test]
async fn each_run_that_ends_writes_its_metrics_as_an_emf_line() {
    use sluice_core::metrics;
    let db = shop_db("lstackemf").await;
    let pg = db.client().await;
    let tables = "  - source: shop
    table: public.orders
    primary_key: [order_id]
    load: {mode: incremental, cursor: updated_at, lookback: 15m}
    max_lag: 1h
    target:
      raw_table: RAW.SHOP_ORDERS
      staging_table: STAGING.SHOP_ORDERS
  - source: shop
    table: public.products
    primary_key: [product_id]
    load: {mode: full}
    max_lag: 30d
    target: {json_columns: [attributes]}
";
    let namespace = "sluice/lstackemf";
    let s = stack_with(
        "lstackemf",
        &db,
        None,
        tables,
        vec![(metrics::NAMESPACE_ENV.into(), namespace.into())],
    )
    .await;
    let results = s
        .ingest(&[("shop", "public.orders"), ("shop", "public.products")])
        .await;
    for result in &results {
        assert_eq!(status(result), "COMPLETED", "{result}");
    }
    let newest: f64 = pg
        .query_one(
            "SELECT EXTRACT(EPOCH FROM max(updated_at))::float8 FROM public.orders",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    // The poll answers once the runs are recorded ended; their lines follow at once, in the
    // invocations the shim waits for.
    s.settle().await;
    let docs = emf_documents(&s);
    for (result, table) in results.iter().zip(["public.orders", "public.products"]) {
        let run_id = result["run_id"].as_str().unwrap();
        let doc = emf_of(&docs, run_id);
        assert_emf_shape(doc, namespace, &format!("shop/{table}"));
        let record = s.run(run_id).await;
        // The first run reads the whole table.
        assert_eq!(doc[metrics::ROWS], pg_count(&pg, table).await, "{table}");
        assert_eq!(doc[metrics::ROWS], record.rows(), "{table}");
        assert_eq!(doc[metrics::BYTES], record.bytes(), "{table}");
        assert_eq!(doc[metrics::FILES], record.files() as u64, "{table}");
        assert_eq!(doc[metrics::RUNS], 1);
        assert_eq!(doc[metrics::RUNS_FAILED], 0);
        assert_eq!(doc[metrics::RETRIES], 0);
        assert_eq!(doc["status"], "COMPLETED");
        close(&doc[metrics::RUN_SECONDS], record.seconds(), "run seconds");
        for (phase, metric) in [
            (RunStatus::Planned, metrics::PLAN_SECONDS),
            (RunStatus::Extracting, metrics::EXTRACT_SECONDS),
            (RunStatus::Loading, metrics::LOAD_SECONDS),
            (RunStatus::Merging, metrics::MERGE_SECONDS),
        ] {
            let seconds = record.phases[&phase].seconds().unwrap();
            close(&doc[metric], seconds, metric);
        }
        let at = doc["_aws"]["Timestamp"].as_i64().unwrap() as f64 / 1000.0;
        let (lag, max_lag) = if table == "public.orders" {
            // Now minus the watermark, which is the source's newest updated_at.
            (at - newest, 3600.0)
        } else {
            // A full load is as fresh as its plan.
            let planned = record.plan.as_ref().unwrap().started_at;
            (at - planned.timestamp_micros() as f64 / 1e6, 30.0 * 86400.0)
        };
        close(&doc[metrics::LAG_SECONDS], lag.max(0.0), "lag");
        assert_eq!(
            doc[metrics::LAG_OVER_THRESHOLD],
            u64::from(lag > max_lag),
            "{table}: lag {lag}"
        );
    }

    // The merge procedure is broken: finalize fails the run, whose metrics say so.
    let config = Config::from_yaml(&sluice_tests::shop_config(&db, tables), "test").unwrap();
    let mut broken = config.tables.clone();
    broken[0].target.merge_procedure = Some("STAGING.NO_SUCH_MERGE".into());
    s.push_tables(broken).await;
    let failed = s.ingest(&[("shop", "public.orders")]).await;
    assert_eq!(status(&failed[0]), "FAILED", "{}", failed[0]);
    let run_id = failed[0]["run_id"].as_str().unwrap();
    s.settle().await;
    let docs = emf_documents(&s);
    let doc = emf_of(&docs, run_id);
    assert_emf_shape(doc, namespace, "shop/public.orders");
    let record = s.run(run_id).await;
    assert_eq!(doc[metrics::RUNS_FAILED], 1);
    assert_eq!(doc["status"], "FAILED");
    // The rows it extracted: the source's rows in its window (the lookback before the
    // watermark), as PostgreSQL counts them.
    let window = record.plan.as_ref().unwrap().cursor.clone().unwrap();
    let literal = |v: &Option<sluice_core::ScalarValue>| {
        v.as_ref()
            .unwrap()
            .sql_literal(sluice_core::Dialect::Postgres)
    };
    let in_window: i64 = pg
        .query_one(
            &format!(
                "SELECT count(*) FROM public.orders WHERE updated_at > {} AND updated_at <= {}",
                literal(&window.lower),
                literal(&window.upper)
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(in_window > 0);
    assert_eq!(doc[metrics::ROWS], in_window);
    assert_eq!(doc[metrics::ROWS], record.rows());
    // A failed run leaves the watermark: the lag still runs from the source's newest row.
    let at = doc["_aws"]["Timestamp"].as_i64().unwrap() as f64 / 1000.0;
    close(&doc[metrics::LAG_SECONDS], (at - newest).max(0.0), "lag");
    assert!(
        doc.get(metrics::MERGE_SECONDS).is_some(),
        "it failed merging: {doc}"
    );
    assert!(doc.get(metrics::LOAD_SECONDS).is_some());
}

/// Gold through the serverless flow: one external-function call of two tables is one batch;
/// its gold runs once, in finalize, after both merged (the procedure sees both tables' rows
/// in STAGING), in dependency order; the answer waits for it and tells each row what gold
/// read its table. In a batch where one input fails, the gold reading it is skipped with the
/// reason, and the gold reading only the other input still runs.
#[tokio::test]
async fn a_batch_runs_its_gold_once_after_every_input_and_skips_what_a_failed_input_feeds() {
    let db = shop_db("lstackgold").await;
    let pg = db.client().await;
    let listed =
        "gold:\n  - {procedure: GOLD.REFRESH_DAILY_REVENUE, inputs: [shop/public.orders]}\n";
    assert!(TABLES.contains(listed));
    let tables = TABLES.replace(
        listed,
        "gold:\n  - {procedure: GOLD.LOG_BATCH, inputs: [GOLD.REFRESH_DAILY_REVENUE, shop/public.products]}\n  \
         - {procedure: GOLD.REFRESH_DAILY_REVENUE, inputs: [shop/public.orders]}\n",
    );
    let s = stack_with("lstackgold", &db, None, &tables, Vec::new()).await;
    s.query(
        "CREATE TABLE GOLD.CALL_LOG (BATCH_ID VARCHAR, FACT_ROWS NUMBER(19,0), ORDERS NUMBER(19,0), PRODUCTS NUMBER(19,0))",
    )
    .await;
    s.query(
        "CREATE OR REPLACE PROCEDURE GOLD.LOG_BATCH(RUN_ID VARCHAR)
         RETURNS VARCHAR
         LANGUAGE SQL
         AS $$
         BEGIN
         INSERT INTO GOLD.CALL_LOG (BATCH_ID, FACT_ROWS, ORDERS, PRODUCTS)
             SELECT :RUN_ID,
                    (SELECT COUNT(*) FROM GOLD.DAILY_ORDER_REVENUE WHERE REFRESHED_BY_RUN = :RUN_ID),
                    (SELECT COUNT(*) FROM STAGING.SHOP_ORDERS),
                    (SELECT COUNT(*) FROM STAGING.SHOP_PUBLIC_PRODUCTS);
         RETURN 'logged';
         END;
         $$",
    )
    .await;
    let state = s.state().await;
    let ingest = |batch: String| {
        let s = &s;
        async move {
            let (code, body) = s
                .call(
                    reqwest::Method::POST,
                    "ingest",
                    Some(&batch),
                    Some(json!([
                        [0, "shop", "public.orders"],
                        [1, "shop", "public.products"]
                    ])),
                )
                .await;
            let body = match code {
                200 => body,
                202 => s.poll(&batch).await,
                other => panic!("POST /ingest answered {other}: {body}"),
            };
            let mut rows: Vec<Value> = body["data"].as_array().unwrap().clone();
            rows.sort_by_key(|r| r[0].as_u64());
            rows.into_iter()
                .map(|r| r[1].clone())
                .collect::<Vec<Value>>()
        }
    };
    let call_log = || async {
        s.query("SELECT BATCH_ID, FACT_ROWS, ORDERS, PRODUCTS FROM GOLD.CALL_LOG ORDER BY BATCH_ID")
            .await
            .rows
            .iter()
            .map(|r| {
                (
                    r[0].as_str().unwrap().to_owned(),
                    r[1].as_i64().unwrap(),
                    r[2].as_i64().unwrap(),
                    r[3].as_i64().unwrap(),
                )
            })
            .collect::<Vec<_>>()
    };

    // Both inputs merge: REFRESH, then LOG_BATCH, each once, after both merges.
    let batch = sluice_tests::stack::real_shape_batch_id();
    let results = ingest(batch.clone()).await;
    for result in &results {
        assert_eq!(status(result), "COMPLETED", "{result}");
    }
    assert_eq!(
        results[0]["gold"],
        "GOLD.REFRESH_DAILY_REVENUE done, GOLD.LOG_BATCH done"
    );
    assert_eq!(results[1]["gold"], "GOLD.LOG_BATCH done");
    let facts = s
        .query("SELECT COUNT(*) FROM GOLD.DAILY_ORDER_REVENUE")
        .await
        .rows[0][0]
        .as_i64()
        .unwrap();
    assert!(facts > 10);
    let orders = pg_count(&pg, "public.orders").await;
    let products = pg_count(&pg, "public.products").await;
    assert_eq!(call_log().await, [(batch.clone(), facts, orders, products)]);
    let gold = state.get_gold(&batch).await.unwrap().expect("gold record");
    assert!(gold.finished);
    let levels: Vec<(&str, u32)> = gold
        .steps
        .iter()
        .map(|s| (s.procedure.as_str(), s.level))
        .collect();
    assert_eq!(
        levels,
        [("GOLD.REFRESH_DAILY_REVENUE", 1), ("GOLD.LOG_BATCH", 2)]
    );
    let stats = s.settle().await;
    assert_eq!(stats["destinations_sent"], 0, "{stats}");

    // products fails at its plan (the table is gone from the source): REFRESH still runs for
    // orders, LOG_BATCH is skipped with the reason; nothing is logged.
    pg.batch_execute("ALTER TABLE public.products RENAME TO products_away")
        .await
        .unwrap();
    let failed_batch = sluice_tests::stack::real_shape_batch_id();
    let results = ingest(failed_batch.clone()).await;
    pg.batch_execute("ALTER TABLE public.products_away RENAME TO products")
        .await
        .unwrap();
    assert_eq!(status(&results[0]), "COMPLETED", "{}", results[0]);
    assert_eq!(status(&results[1]), "FAILED", "{}", results[1]);
    let products_run = results[1]["run_id"].as_str().unwrap();
    let expected = format!(
        "GOLD.REFRESH_DAILY_REVENUE done, GOLD.LOG_BATCH skipped (input shop/public.products failed in this batch (run {products_run}: "
    );
    let told = results[0]["gold"].as_str().unwrap();
    assert!(told.starts_with(&expected), "{told}");
    assert_eq!(call_log().await, [(batch, facts, orders, products)]);
    let refreshed = s
        .query("SELECT DISTINCT REFRESHED_BY_RUN FROM GOLD.DAILY_ORDER_REVENUE")
        .await;
    assert_eq!(refreshed.rows[0][0].as_str(), Some(failed_batch.as_str()));
    // Finalize ran the gold once for each batch.
    let finalize = s.log_lines("finalize");
    let done = finalize
        .iter()
        .filter(|l| l.contains("gold of the batch done"))
        .count();
    assert_eq!(done, 2, "{finalize:?}");
}

/// `SELECT sluice.check_source('shop')` and `sluice.check_source('shop', table)` as Snowflake
/// sends them: each row gets its source's checks, table by table, run by the trigger against
/// the real PostgreSQL (through the source's secret) and the Snowflake stand-in. A column the
/// source lacks fails with the config fix, a cursor without an index warns with the CREATE
/// INDEX, the stack's missing file format fails with the set-up's statement; an unknown
/// table or source is that row's error; a malformed call is a 400.
#[tokio::test]
async fn check_source_answers_each_rows_checks_with_their_fixes() {
    let db = shop_db("lstackchk").await;
    let tables = "  - source: shop
    table: public.customers
    primary_key: [customer_id]
    load: {mode: incremental, cursor: updated_at}
  - source: shop
    table: public.products
    primary_key: [product_id]
    columns: [product_id, nope]
";
    let s = stack_with("lstackchk", &db, None, tables, Vec::new()).await;
    let problem = |answer: &Value, check: &str, target: &str| -> Value {
        answer["problems"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["check"] == check && p["target"] == target)
            .cloned()
            .unwrap_or_else(|| panic!("no '{check}' problem for {target} in {answer:#}"))
    };

    // The whole source.
    let (code, body) = s
        .call(
            reqwest::Method::POST,
            "check",
            Some(&sluice_tests::stack::real_shape_batch_id()),
            Some(json!([[0, "shop"]])),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["data"][0][0], 0, "{body}");
    let answer = &body["data"][0][1];
    assert_eq!(answer["source"], "shop", "{answer:#}");
    assert_eq!(answer["ok"], false, "{answer:#}");
    assert!(answer.get("cut_short").is_none(), "{answer:#}");
    let tables = answer["tables"].as_object().unwrap();
    assert_eq!(
        tables.keys().collect::<Vec<_>>(),
        ["public.customers", "public.products"],
        "{answer:#}"
    );
    assert_eq!(tables["public.products"]["ok"], false, "{answer:#}");
    assert!(
        tables["public.customers"]["passed"].as_u64().unwrap() >= 3,
        "{answer:#}"
    );
    let columns = problem(answer, "columns", "shop/public.products");
    assert_eq!(columns["result"], "fail");
    assert_eq!(columns["family"], "source");
    assert!(
        columns["detail"].as_str().unwrap().contains("nope"),
        "{columns}"
    );
    let fix = columns["fix"].as_str().unwrap();
    assert!(
        fix.starts_with("columns: columns of the table (") && fix.contains("product_id"),
        "{columns}"
    );
    let index = problem(answer, "cursor index", "shop/public.customers");
    assert_eq!(index["result"], "warn");
    assert_eq!(
        index["fix"],
        "CREATE INDEX \"customers_updated_at_idx\" ON \"public\".\"customers\" (\"updated_at\")"
    );
    // The Snowflake side: the stack's account has a stage but no file format.
    let format = problem(
        answer,
        "file format",
        &format!("\"{}\".\"RAW\".\"SLUICE_PARQUET\"", s.database),
    );
    assert_eq!(format["family"], "snowflake");
    assert!(
        format["fix"]
            .as_str()
            .unwrap()
            .starts_with("CREATE FILE FORMAT IF NOT EXISTS"),
        "{format}"
    );
    // Failures come before warnings, and no connection string leaks.
    let results: Vec<&str> = answer["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["result"].as_str().unwrap())
        .collect();
    let first_warn = results.iter().position(|r| *r == "warn").unwrap();
    assert!(
        results[first_warn..].iter().all(|r| *r == "warn"),
        "{results:?}"
    );
    assert!(!body.to_string().contains("postgres://"), "{body}");

    // One table per row; a table or source that is not configured is its row's error.
    let (code, body) = s
        .call(
            reqwest::Method::POST,
            "check",
            Some(&sluice_tests::stack::real_shape_batch_id()),
            Some(json!([
                [0, "shop", "public.customers"],
                [1, "shop", "public.nope"],
                [2, "nosuch", "public.customers"]
            ])),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let rows = body["data"].as_array().unwrap();
    let only: Vec<&String> = rows[0][1]["tables"].as_object().unwrap().keys().collect();
    assert_eq!(only, ["public.customers"], "{body:#}");
    // The stack's database grants sluice's role nothing, so STAGING (whose schema no run
    // has made yet) cannot be created: the fix is the set-up's grant.
    let staging = problem(&rows[0][1], "staging table", "shop/public.customers");
    assert_eq!(staging["result"], "fail", "{staging}");
    assert_eq!(
        staging["fix"],
        format!(
            "GRANT USAGE, CREATE SCHEMA ON DATABASE \"{}\" TO ROLE \"SLUICE\"",
            s.database
        ),
        "{staging}"
    );
    assert_eq!(
        rows[0][1]["tables"]["public.customers"]["failed"], 1,
        "{body:#}"
    );
    assert!(
        rows[1][1]["error"]
            .as_str()
            .unwrap()
            .starts_with("table: source shop has no table 'public.nope' (configured: public.customers, public.products)"),
        "{body:#}"
    );
    assert!(
        rows[2][1]["error"]
            .as_str()
            .unwrap()
            .starts_with("source: no source 'nosuch' is configured (known: shop)"),
        "{body:#}"
    );

    // A malformed call: refused whole, naming what is wrong.
    let (code, body) = s
        .call(
            reqwest::Method::POST,
            "check",
            None,
            Some(json!([["zero", "shop"]])),
        )
        .await;
    assert_eq!(code, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("data[0][0] must be the row number"),
        "{body}"
    );
}
