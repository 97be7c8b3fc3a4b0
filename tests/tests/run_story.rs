//! The run story in S3 (issue 19): when a run ends, COMPLETED or FAILED, its whole record is
//! written as one line of JSON to `_runs/<run_id>.json` beside the table's manifests, so the
//! lake keeps its own history after the state store's. Against moto and the shop database:
//! the story of a completed run says what the state store's record says (status, rows, files,
//! chunks, phases, watermark), the story of a run failed at planning carries its error, and a
//! failed extract's story is there too, with the watermark untouched.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use sluice::Quiet;
use sluice::sink::parquet::ParquetSettings;
use sluice_core::{RunRecord, RunStatus};
use sluice_tests::s3::S3Harness;
use sluice_tests::{shop_config, shop_db};

const TABLES: &str = "  - source: shop
    table: public.orders
    primary_key: [order_id]
    load: { mode: incremental, cursor: updated_at }
  - source: shop
    table: public.customers
    primary_key: [customer_id]
    columns: [customer_id, no_such_column]
";

async fn story(h: &S3Harness, table_dir: &str, record: &RunRecord) -> serde_json::Value {
    let key = format!("{}/{table_dir}/_runs/{}.json", h.prefix, record.run_id);
    let body = h.object(&key).await;
    assert_eq!(
        body.iter().filter(|b| **b == b'\n').count(),
        1,
        "{key}: one line of JSON"
    );
    serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{key}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ended_run_tells_its_story_beside_the_manifests() {
    let db = shop_db("story").await;
    let h = S3Harness::new(&shop_config(&db, TABLES), ParquetSettings::default()).await;

    let completed = h.run_completed("public.orders").await;
    let told = story(&h, "postgres/shop/public.orders", &completed).await;
    // What the state store holds, whole, and the summary drawn from it.
    let stored = h
        .pipeline
        .state()
        .get_run(completed.run_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(told["run_id"], completed.run_id.to_string());
    assert_eq!(told["table_key"], "shop/public.orders");
    assert_eq!(told["status"], "COMPLETED");
    let source_rows: i64 = db
        .client()
        .await
        .query_one("SELECT count(*) FROM public.orders", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(told["rows"], source_rows, "the rows the run read");
    assert_eq!(told["rows"], stored.rows());
    assert_eq!(told["files"], stored.files());
    assert_eq!(told["bytes"], stored.bytes());
    assert_eq!(
        told["watermark_committed"],
        stored.watermark_committed.as_ref().unwrap().to_string()
    );
    assert!(told["error"].is_null());
    for phase in ["PLANNED", "EXTRACTING", "LOADING"] {
        assert!(
            told["phase_seconds"][phase].as_f64().is_some(),
            "{phase} in {}",
            told["phase_seconds"]
        );
    }
    let record: RunRecord = serde_json::from_value(told["record"].clone()).unwrap();
    assert_eq!(record.chunks, stored.chunks, "the chunks, files included");
    assert_eq!(record.plan, stored.plan);
    assert_eq!(record.manifest_key, stored.manifest_key);

    // A run that fails at planning has no plan; its story still goes under its table.
    let failed = h
        .pipeline
        .run_table(h.table("public.customers"), &Quiet)
        .await
        .unwrap();
    assert_eq!(failed.status, RunStatus::Failed);
    let told = story(&h, "postgres/shop/public.customers", &failed).await;
    assert_eq!(told["status"], "FAILED");
    let error = told["error"].as_str().unwrap();
    assert!(error.contains("no_such_column"), "{error}");
    assert_eq!(error, failed.error.as_ref().unwrap().message);
    assert!(told["record"]["plan"].is_null());

    // The stories are all the `_runs/` files there are: one per ended run.
    let stories: Vec<String> = h
        .keys()
        .await
        .into_iter()
        .filter(|k| k.contains("/_runs/"))
        .collect();
    assert_eq!(stories.len(), 2, "{stories:?}");
}
