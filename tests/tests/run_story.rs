//! The run story in S3 (issue 19): when a run ends, COMPLETED or FAILED, its whole record is
//! written as one line of JSON to `_runs/<run_id>.json` beside the table's manifests, so the
//! lake keeps its own history after the state store's. Against moto and the shop database:
//! the story of a completed run says what the state store's record says (status, rows, files,
//! chunks, phases, watermark), the story of a run failed at planning carries its error, and a
//! failed extract's story is there too, with the watermark untouched. The stories are the
//! `sluice_runs` Glue table (JSON SerDe, a column per story field), with a partition per table
//! at its `_runs/` directory.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use aws_sdk_glue::types::{Column, SerDeInfo, StorageDescriptor, TableInput};
use sluice::Quiet;
use sluice::catalog::glue::GlueCatalog;
use sluice::catalog::{Catalog, CatalogOutcome, StoryRegistration};
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

/// The partitions of the `sluice_runs` Glue table: values → location.
async fn runs_partitions(h: &S3Harness) -> BTreeMap<Vec<String>, String> {
    let out = h
        .glue
        .get_partitions()
        .database_name(&h.database)
        .table_name("sluice_runs")
        .send()
        .await
        .unwrap();
    out.partitions()
        .iter()
        .map(|p| {
            let storage = p.storage_descriptor().unwrap();
            // Each partition is read the way the table is: JSON lines.
            assert_eq!(
                storage.serde_info().unwrap().serialization_library(),
                Some("org.openx.data.jsonserde.JsonSerDe"),
                "{:?}",
                p.values()
            );
            (p.values().to_vec(), storage.location().unwrap().to_owned())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stories_are_a_glue_table_with_a_partition_per_table_at_its_runs_directory() {
    let db = shop_db("story_glue").await;
    let h = S3Harness::new(&shop_config(&db, TABLES), ParquetSettings::default()).await;
    // An older definition of the table (fewer columns, another SerDe), as an earlier build
    // would have left it: the first story brings it up to date.
    h.glue
        .create_table()
        .database_name(&h.database)
        .table_input(
            TableInput::builder()
                .name("sluice_runs")
                .table_type("EXTERNAL_TABLE")
                .storage_descriptor(
                    StorageDescriptor::builder()
                        .columns(
                            Column::builder()
                                .name("run_id")
                                .r#type("string")
                                .build()
                                .unwrap(),
                        )
                        .location(format!("s3://{}/{}/", h.bucket, h.prefix))
                        .serde_info(
                            SerDeInfo::builder()
                                .serialization_library("org.apache.hive.hcatalog.data.JsonSerDe")
                                .build(),
                        )
                        .build(),
                )
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();

    let first = h.run_completed("public.orders").await;
    let second = h.run_completed("public.orders").await;
    let failed = h
        .pipeline
        .run_table(h.table("public.customers"), &Quiet)
        .await
        .unwrap();
    assert_eq!(failed.status, RunStatus::Failed);

    let table = h
        .glue
        .get_table()
        .database_name(&h.database)
        .name("sluice_runs")
        .send()
        .await
        .unwrap()
        .table
        .unwrap();
    assert_eq!(table.table_type(), Some("EXTERNAL_TABLE"));
    let storage = table.storage_descriptor().unwrap();
    assert_eq!(
        storage.serde_info().unwrap().serialization_library(),
        Some("org.openx.data.jsonserde.JsonSerDe")
    );
    assert_eq!(
        storage.input_format(),
        Some("org.apache.hadoop.mapred.TextInputFormat")
    );
    let keys: Vec<&str> = table.partition_keys().iter().map(|c| c.name()).collect();
    assert_eq!(keys, ["engine", "source_db", "table_name", "kind"]);
    // One column per field of the story as written, whatever the code's list says.
    let columns: BTreeMap<String, String> = storage
        .columns()
        .iter()
        .map(|c| (c.name().to_owned(), c.r#type().unwrap().to_owned()))
        .collect();
    let told = story(&h, "postgres/shop/public.orders", &first).await;
    let fields: Vec<&String> = told.as_object().unwrap().keys().collect();
    assert_eq!(
        columns.keys().collect::<Vec<_>>(),
        fields,
        "columns vs the story's fields"
    );
    assert_eq!(columns["rows"], "bigint");
    assert_eq!(columns["seconds"], "double");
    assert_eq!(columns["record"], "string");
    assert!(columns["phase_seconds"].starts_with("struct<planned:double"));

    // A partition per table, registered once however many stories it has, located at the
    // table's `_runs/` directory: exactly where its runs' stories are.
    let partitions = runs_partitions(&h).await;
    let runs_of = [
        ("public.orders", vec![first.run_id, second.run_id]),
        ("public.customers", vec![failed.run_id]),
    ];
    let expected: BTreeMap<Vec<String>, String> = runs_of
        .iter()
        .map(|(table, _)| {
            (
                ["postgres", "shop", table, "load"]
                    .map(str::to_owned)
                    .to_vec(),
                format!(
                    "s3://{}/{}/postgres/shop/{table}/_runs/",
                    h.bucket, h.prefix
                ),
            )
        })
        .collect();
    assert_eq!(partitions, expected);
    let keys = h.keys().await;
    for (table, runs) in runs_of {
        let dir = format!("{}/postgres/shop/{table}/_runs/", h.prefix);
        let under: Vec<&String> = keys.iter().filter(|k| k.starts_with(&dir)).collect();
        let stories: Vec<String> = runs.iter().map(|id| format!("{dir}{id}.json")).collect();
        assert_eq!(
            under,
            stories.iter().collect::<Vec<_>>(),
            "{table}: the partition holds its stories and nothing else"
        );
    }

    // Another process (a fresh catalog adapter) registering the same table's stories finds
    // the table current and the partition there: nothing changes, nothing fails.
    let again = GlueCatalog::new(h.glue.clone(), &h.database)
        .register_story(&StoryRegistration {
            location: format!("s3://{}/{}/", h.bucket, h.prefix),
            partition_values: ["postgres", "shop", "public.orders", "load"].map(str::to_owned),
            partition_location: expected[&["postgres", "shop", "public.orders", "load"]
                .map(str::to_owned)
                .to_vec()]
                .clone(),
        })
        .await
        .unwrap();
    assert_eq!(again, CatalogOutcome::default(), "{again:?}");
    assert_eq!(runs_partitions(&h).await, expected);
}
