//! The warehouse step end to end against the stand-in: the shop sample in PostgreSQL is
//! extracted to S3 (moto), COPYed into RAW, merged into STAGING by the generated procedure and
//! rolled up by the gold example in `infra/snowflake/`. Every check compares with what
//! PostgreSQL itself computes, never with what sluice wrote.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use sluice::Quiet;
use sluice::sample::create_shop_postgres;
use sluice::sink::parquet::ParquetSettings;
use sluice::warehouse::load::{Loader, WarehouseTarget};
use sluice::warehouse::snowflake::SnowflakeClient;
use sluice::warehouse::{QueryResult, Statement, Value, Warehouse, WarehouseError};
use sluice_core::snowflake::ObjectName;
use sluice_core::{RunId, RunRecord, RunStatus, TableConfig};
use sluice_tests::moto::MotoServer;
use sluice_tests::parquet_bytes;
use sluice_tests::s3::{S3Harness, parquet_batches};
use sluice_tests::snowflake::{KeyPair, Options, StandIn, split_script};
use sluice_tests::{TestDb, shop_config};

use sluice_tests::snowflake::SHOP_WAREHOUSE_TABLES as TABLES;

struct World {
    db: TestDb,
    pg: tokio_postgres::Client,
    h: S3Harness,
    client: Arc<SnowflakeClient>,
    loader: Arc<Loader>,
    database: String,
    _standin: StandIn,
}

async fn world(label: &str) -> World {
    world_with(label, TABLES, |client| client).await
}

/// A world for `tables`, whose loader talks to the warehouse through what `warehouse` makes of
/// the stand-in's client (the client itself, or [`BeforeCall`] around it).
async fn world_with(
    label: &str,
    tables: &str,
    warehouse: impl FnOnce(Arc<SnowflakeClient>) -> Arc<dyn Warehouse>,
) -> World {
    let db = TestDb::create(label).await;
    let pg = db.client().await;
    create_shop_postgres(&pg, "public", 1).await.unwrap();
    let moto = MotoServer::shared();
    let standin = StandIn::start(&Options {
        s3_endpoint: Some(moto.endpoint()),
        ..Options::default()
    });
    let config = standin.config(label);
    let database = config.database.clone().unwrap();
    let client = Arc::new(SnowflakeClient::new(config, KeyPair::shared().private_key()).unwrap());
    let h = S3Harness::new(&shop_config(&db, tables), ParquetSettings::default()).await;
    // The admin's one-time set-up: the stage over the sink's prefix and the gold example.
    let stage = ObjectName::new(&database, "RAW", "SLUICE_STAGE");
    let mut setup = vec![
        "CREATE SCHEMA IF NOT EXISTS RAW".to_owned(),
        format!(
            "CREATE STAGE IF NOT EXISTS {} URL = 's3://{}/{}/'",
            stage.quoted(),
            h.bucket,
            h.prefix
        ),
    ];
    let gold = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../infra/snowflake/gold/daily_order_revenue.sql"),
    )
    .unwrap();
    setup.extend(split_script(&gold));
    for sql in setup {
        client.execute(&Statement::new(sql)).await.unwrap();
    }
    let loader = Arc::new(Loader::new(
        warehouse(client.clone()),
        WarehouseTarget {
            database: database.clone(),
            stage,
        },
    ));
    let h = h.with_warehouse(loader.clone());
    World {
        db,
        pg,
        h,
        client,
        loader,
        database,
        _standin: standin,
    }
}

impl World {
    async fn query(&self, sql: &str) -> sluice::warehouse::QueryResult {
        self.client.execute(&Statement::new(sql)).await.unwrap()
    }

    /// Runs `table` as a batch of its own, then the batch's gold.
    async fn run(&self, table: &TableConfig) -> RunRecord {
        let record = self.h.pipeline.run_table(table, &Quiet).await.unwrap();
        assert_eq!(record.status, RunStatus::Completed, "{:?}", record.error);
        self.batch_gold(std::slice::from_ref(&record)).await;
        record
    }

    /// The gold of a batch whose runs were `runs`, under a new batch id.
    async fn batch_gold(&self, runs: &[RunRecord]) -> Option<sluice_core::gold::GoldRecord> {
        let batch_id = format!("test-{}", RunId::new());
        self.h
            .pipeline
            .run_batch_gold(&self.h.config, &batch_id, "test", runs)
            .await
            .unwrap()
    }

    /// Loads and merges an earlier run again from its manifest, as a retried finalize would.
    async fn replay(&self, table: &TableConfig, record: &RunRecord) -> serde_json::Value {
        let manifest = self.h.manifest(record).await;
        self.loader
            .load(table, &manifest, Some(&self.h.prefix))
            .await
            .unwrap();
        self.loader.merge(table, record.run_id).await.unwrap()
    }

    async fn pg_count(&self, table: &str) -> i64 {
        self.pg
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .unwrap()
            .get(0)
    }

    async fn assert_staging_equals_source(&self, staging: &str, source: &str) {
        sluice_tests::snowflake::assert_staging_equals_source(
            &self.client,
            &self.pg,
            staging,
            source,
        )
        .await;
    }

    /// `(date, currency) → (orders, revenue)` of the gold fact.
    async fn gold(&self) -> BTreeMap<(String, String), (i64, String)> {
        let result = self
            .query(
                "SELECT TO_VARCHAR(ORDER_DATE), CURRENCY, ORDERS, REVENUE FROM GOLD.DAILY_ORDER_REVENUE",
            )
            .await;
        result
            .rows
            .iter()
            .map(|r| {
                let Value::Number { unscaled, scale } = r[3] else {
                    panic!("revenue {:?}", r[3])
                };
                (
                    (
                        r[0].as_str().unwrap().to_owned(),
                        r[1].as_str().unwrap().to_owned(),
                    ),
                    (
                        r[2].as_i64().unwrap(),
                        sluice_tests::normalize_decimal(&sluice_tests::decimal_text(
                            unscaled,
                            scale as i8,
                        )),
                    ),
                )
            })
            .collect()
    }

    /// The same aggregate, computed by PostgreSQL from the source table.
    async fn pg_gold(&self) -> BTreeMap<(String, String), (i64, String)> {
        self.pg
            .query(
                "SELECT ((ordered_at AT TIME ZONE 'UTC')::date)::text, currency::text, count(*), sum(total)::text \
                 FROM public.orders WHERE status <> 'cancelled' GROUP BY 1, 2",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| {
                (
                    (r.get(0), r.get(1)),
                    (r.get(2), sluice_tests::normalize_decimal(&r.get::<_, String>(3))),
                )
            })
            .collect()
    }
}

fn merged(inserted: i64, updated: i64) -> serde_json::Value {
    serde_json::json!({"inserted": inserted, "updated": updated})
}

#[tokio::test]
async fn runs_land_in_staging_and_gold_exactly_once_and_never_go_back() {
    let w = world("sfpipe").await;
    let orders = w.h.table("public.orders").clone();
    let staging = format!("\"{}\".STAGING.SHOP_ORDERS", w.database);

    // First run: every order arrives, STAGING is the source table, gold is PostgreSQL's sum.
    let first = w.run(&orders).await;
    let orders_rows = w.pg_count("public.orders").await;
    assert_eq!(first.merge, Some(merged(orders_rows, 0)));
    w.assert_staging_equals_source(&staging, "public.orders")
        .await;
    let gold = w.gold().await;
    assert!(gold.len() > 10, "{gold:?}");
    assert_eq!(gold, w.pg_gold().await);

    // The same run again (a retried finalize): nothing changes.
    assert_eq!(w.replay(&orders, &first).await, merged(0, 0));
    w.assert_staging_equals_source(&staging, "public.orders")
        .await;

    // Ten orders change at the source; the next run updates exactly those ten.
    let changed: Vec<i64> =
        w.pg.query(
            "UPDATE public.orders SET status = 'cancelled', total = total + 0.01, \
             updated_at = timestamp '2030-01-01' + order_id * interval '1 second' \
             WHERE order_id % 500 = 7 RETURNING order_id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(!changed.is_empty());
    let second = w.run(&orders).await;
    assert_eq!(second.merge, Some(merged(0, changed.len() as i64)));
    w.assert_staging_equals_source(&staging, "public.orders")
        .await;
    let touched = w
        .query(&format!(
            "SELECT \"order_id\" FROM {staging} WHERE \"_sluice_run_id\" = '{}' ORDER BY 1",
            second.run_id
        ))
        .await;
    let touched: Vec<i64> = touched
        .rows
        .iter()
        .map(|r| r[0].as_i64().unwrap())
        .collect();
    let mut expected = changed.clone();
    expected.sort_unstable();
    assert_eq!(touched, expected);
    assert_eq!(w.gold().await, w.pg_gold().await);

    // The first run replayed after the second: its older rows never overwrite newer ones.
    assert_eq!(w.replay(&orders, &first).await, merged(0, 0));
    w.assert_staging_equals_source(&staging, "public.orders")
        .await;
}

#[tokio::test]
async fn full_loads_turn_json_into_variant() {
    let w = world("sfjson").await;
    let products = w.h.table("public.products").clone();
    let first = w.run(&products).await;
    let product_rows = w.pg_count("public.products").await;
    assert_eq!(first.merge, Some(merged(product_rows, 0)));
    let staging = format!("\"{}\".STAGING.SHOP_PUBLIC_PRODUCTS", w.database);
    w.assert_staging_equals_source(&staging, "public.products")
        .await;

    // The JSON column is a VARIANT holding the same documents PostgreSQL has.
    let result = w
        .query(&format!(
            "SELECT \"product_id\", \"attributes\" FROM {staging}"
        ))
        .await;
    assert_eq!(result.columns[1].type_name, "variant");
    let ours: BTreeMap<i64, Option<serde_json::Value>> = result
        .rows
        .iter()
        .map(|r| {
            let doc = match &r[1] {
                Value::Variant(v) => Some(v.clone()),
                Value::Null => None,
                other => panic!("{other:?}"),
            };
            (r[0].as_i64().unwrap(), doc)
        })
        .collect();
    let theirs: BTreeMap<i64, Option<serde_json::Value>> =
        w.pg.query(
            "SELECT product_id::bigint, attributes::text FROM public.products",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| {
            let doc: Option<String> = r.get(1);
            (r.get(0), doc.map(|d| serde_json::from_str(&d).unwrap()))
        })
        .collect();
    assert_eq!(ours, theirs);

    // A second full run of an unchanged table rewrites every row with the later run (the later
    // run wins without a cursor) and the content stays the source's.
    let second = w.run(&products).await;
    assert_eq!(second.merge, Some(merged(0, product_rows)));
    w.assert_staging_equals_source(&staging, "public.products")
        .await;
    // The first run replayed afterwards is older: it changes nothing.
    assert_eq!(w.replay(&products, &first).await, merged(0, 0));

    // A new source column is added to RAW and STAGING before the COPY.
    w.pg.batch_execute(
        "ALTER TABLE public.products ADD COLUMN barcode text; \
             UPDATE public.products SET barcode = 'EAN-' || product_id WHERE product_id % 3 = 0;",
    )
    .await
    .unwrap();
    w.run(&products).await;
    w.assert_staging_equals_source(&staging, "public.products")
        .await;
    let raw = w
        .query(&format!(
            "SELECT COUNT(\"barcode\") FROM \"{}\".RAW.SHOP_PUBLIC_PRODUCTS",
            w.database
        ))
        .await;
    let barcodes: i64 =
        w.pg.query_one("SELECT count(barcode) FROM public.products", &[])
            .await
            .unwrap()
            .get(0);
    assert!(barcodes > 0);
    assert_eq!(raw.scalar().and_then(Value::as_i64), Some(barcodes));

    // A column whose type no longer matches fails the run, naming it and both types. (The
    // warehouse side is changed here: a source-side change is refused by the Glue catalog
    // first.)
    for sql in [
        format!(
            "ALTER TABLE \"{}\".STAGING.SHOP_PUBLIC_PRODUCTS DROP COLUMN \"in_stock\"",
            w.database
        ),
        format!(
            "ALTER TABLE \"{}\".STAGING.SHOP_PUBLIC_PRODUCTS ADD COLUMN \"in_stock\" VARCHAR",
            w.database
        ),
    ] {
        w.query(&sql).await;
    }
    let failed = w.h.pipeline.run_table(&products, &Quiet).await.unwrap();
    assert_eq!(failed.status, RunStatus::Failed);
    let message = failed.error.unwrap().message;
    assert!(
        message
            .contains("column in_stock is TEXT in the warehouse but the source now gives BOOLEAN"),
        "{message}"
    );
}

#[tokio::test]
async fn a_failing_merge_fails_the_run_and_leaves_the_watermark() {
    let w = world("sffail").await;
    let orders = w.h.table("public.orders").clone();
    let first = w.run(&orders).await;
    let key = orders.key();
    let committed = w.h.watermark(&key).await;
    assert_eq!(committed, first.watermark_committed);
    assert!(committed.is_some());

    w.pg.batch_execute(
        "UPDATE public.orders SET updated_at = timestamp '2031-01-01' WHERE order_id = 42",
    )
    .await
    .unwrap();
    let mut broken = orders.clone();
    broken.target.merge_procedure = Some("STAGING.NO_SUCH_MERGE".into());
    let record = w.h.pipeline.run_table(&broken, &Quiet).await.unwrap();
    assert_eq!(record.status, RunStatus::Failed);
    let error = record.error.unwrap();
    assert_eq!(error.phase, RunStatus::Merging);
    assert!(error.message.contains("NO_SUCH_MERGE"), "{}", error.message);
    assert_eq!(w.h.watermark(&key).await, committed);
    assert!(record.watermark_committed.is_none());

    // The next good run picks the change up: nothing was lost.
    let again = w.run(&orders).await;
    assert_eq!(again.merge, Some(merged(0, 1)));
    w.assert_staging_equals_source(
        &format!("\"{}\".STAGING.SHOP_ORDERS", w.database),
        "public.orders",
    )
    .await;
    drop(w.db);
}

#[tokio::test]
async fn copy_rows_that_disagree_with_the_manifest_fail_the_run() {
    let w = world("sfrows").await;
    let orders = w.h.table("public.orders").clone();
    let key = orders.key();
    let first = w.run(&orders).await;
    let committed = first.watermark_committed.clone();
    assert!(committed.is_some());

    // Orders change across the key range, so the next run writes files in both chunks.
    w.pg.batch_execute(
        "UPDATE public.orders SET total = total + 1, \
         updated_at = timestamp '2030-01-01' + order_id * interval '1 second' \
         WHERE order_id % 50 = 3",
    )
    .await
    .unwrap();

    // The next run is extracted, then one of its files is replaced in S3 by a valid Parquet
    // file of the same schema holding one row less (what a second writer racing the run
    // could leave): the manifest, written from the run record at finalize, no longer matches.
    let planned = w.h.pipeline.plan_run(&orders).await.unwrap();
    let run_id = planned.record.run_id;
    let chunks = planned.record.plan.as_ref().unwrap().chunks.len() as u32;
    for chunk in 0..chunks {
        w.h.pipeline
            .extract_chunk(run_id, chunk, &Quiet)
            .await
            .unwrap();
    }
    drop(planned);
    let extracted = w.h.pipeline.state().get_run(run_id).await.unwrap().unwrap();
    let file = extracted
        .chunks
        .values()
        .flat_map(|c| &c.files)
        .find(|f| f.rows >= 2)
        .expect("a file of at least two rows")
        .key
        .clone();
    // What the file held, read from the file itself.
    let batches = parquet_batches(w.h.object(&file).await);
    let written: usize = batches.iter().map(|b| b.num_rows()).sum();
    let whole = arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
    let fewer = whole.slice(0, written - 1);
    w.h.s3
        .put_object()
        .bucket(&w.h.bucket)
        .key(&file)
        .body(parquet_bytes(&fewer).into())
        .send()
        .await
        .unwrap();

    // The run goes on as a driver continues it: its chunks are recorded, so only the
    // finalize runs, and its failure marks the run FAILED.
    let failed = w.h.pipeline.execute_run(run_id, &Quiet).await.unwrap();
    assert_eq!(failed.status, RunStatus::Failed);
    let error = failed.error.unwrap();
    assert_eq!(error.phase, RunStatus::Loading);
    // COPY names files relative to the stage, which points at the sink's prefix.
    let relative = file.strip_prefix(&format!("{}/", w.h.prefix)).unwrap();
    let expected = format!(
        "file {relative} loaded {} rows, the manifest lists {written}",
        written - 1
    );
    assert!(error.message.contains(&expected), "{}", error.message);

    // The watermark stays where the first run left it, and nothing reached STAGING.
    assert!(failed.watermark_committed.is_none());
    assert_eq!(w.h.watermark(&key).await, committed);
    let staging = format!("\"{}\".STAGING.SHOP_ORDERS", w.database);
    let merged_rows = w
        .client
        .execute(
            &Statement::new(format!(
                "SELECT COUNT(*) FROM {staging} WHERE \"_sluice_run_id\" = ?"
            ))
            .bind(run_id.to_string()),
        )
        .await
        .unwrap();
    assert_eq!(merged_rows.scalar().and_then(Value::as_i64), Some(0));

    // The next run extracts again and brings STAGING to the source: nothing was lost.
    w.run(&orders).await;
    w.assert_staging_equals_source(&staging, "public.orders")
        .await;
}

/// The stand-in's client with one statement run just before the next `CALL` (a run's first
/// CALL is its merge): how a test puts a second version of a row into a run's RAW rows between
/// its COPY and its merge. Every statement, the extra one included, goes to the stand-in.
struct BeforeCall {
    client: Arc<SnowflakeClient>,
    pending: Arc<Mutex<Option<Statement>>>,
}

#[async_trait]
impl Warehouse for BeforeCall {
    async fn execute(&self, statement: &Statement) -> Result<QueryResult, WarehouseError> {
        if statement.sql.starts_with("CALL ") {
            let pending = self.pending.lock().unwrap().take();
            if let Some(pending) = pending {
                self.client.execute(&pending).await?;
            }
        }
        Ok(self.client.execute(statement).await?)
    }

    async fn execute_all(&self, statements: &[String]) -> Result<Vec<QueryResult>, WarehouseError> {
        Ok(self.client.execute_all(statements).await?)
    }
}

#[tokio::test]
async fn of_two_versions_of_a_key_in_one_run_the_latest_cursor_is_merged() {
    let pending = Arc::new(Mutex::new(None));
    let slot = pending.clone();
    let w = world_with("sfdedupe", TABLES, move |client| {
        Arc::new(BeforeCall {
            client,
            pending: slot,
        })
    })
    .await;
    let orders = w.h.table("public.orders").clone();
    let order: i64 = 42;

    // The order as it was, then changed a day later: two real versions from the source.
    let older =
        w.pg.query_one(
            "SELECT status::text, total::text, updated_at::text FROM public.orders WHERE order_id = $1",
            &[&order],
        )
        .await
        .unwrap();
    let (old_status, old_total, old_updated): (String, String, String) =
        (older.get(0), older.get(1), older.get(2));
    w.pg.execute(
        "UPDATE public.orders SET \
         status = CASE WHEN status = 'cancelled' THEN 'paid' ELSE 'cancelled' END, \
         total = total + 100, updated_at = updated_at + interval '1 day' WHERE order_id = $1",
        &[&order],
    )
    .await
    .unwrap();

    // The run extracts the newer version; the older one joins it in the run's RAW rows before
    // the merge, under a file name and row number that sort after the real ones, so only the
    // cursor can make the newer version win.
    let raw = ObjectName::new(&w.database, "RAW", "SHOP_ORDERS").quoted();
    *pending.lock().unwrap() = Some(
        Statement::new(format!(
            "INSERT INTO {raw} (\"order_id\", \"customer_id\", \"status\", \"currency\", \"total\", \
             \"discount_rate\", \"ordered_at\", \"shipped_on\", \"item_count\", \"updated_at\", \
             \"_sluice_run_id\", \"_sluice_extracted_at\", \"_sluice_file\", \"_sluice_row\") \
             SELECT \"order_id\", \"customer_id\", ?, \"currency\", CAST(? AS NUMBER(14,2)), \
             \"discount_rate\", \"ordered_at\", \"shipped_on\", \"item_count\", \
             CAST(? AS TIMESTAMP_NTZ), \"_sluice_run_id\", \"_sluice_extracted_at\", ?, ? \
             FROM {raw} WHERE \"order_id\" = ?"
        ))
        .bind(old_status.as_str())
        .bind(old_total.as_str())
        .bind(old_updated.as_str())
        .bind("zzzz/older-version.parquet")
        .bind(1_000_000i64)
        .bind(order),
    );
    let record = w.run(&orders).await;
    assert!(
        pending.lock().unwrap().is_none(),
        "the older version was inserted before the merge"
    );
    let versions = w
        .client
        .execute(
            &Statement::new(format!(
                "SELECT COUNT(*) FROM {raw} WHERE \"order_id\" = ? AND \"_sluice_run_id\" = ?"
            ))
            .bind(order)
            .bind(record.run_id.to_string()),
        )
        .await
        .unwrap();
    assert_eq!(versions.scalar().and_then(Value::as_i64), Some(2));

    // One row per key (every order inserted once) holding what PostgreSQL holds now.
    let orders_rows = w.pg_count("public.orders").await;
    assert_eq!(record.merge, Some(merged(orders_rows, 0)));
    let staging = format!("\"{}\".STAGING.SHOP_ORDERS", w.database);
    w.assert_staging_equals_source(&staging, "public.orders")
        .await;
    let ours = w
        .client
        .execute(
            &Statement::new(format!(
                "SELECT \"status\", \"total\" FROM {staging} WHERE \"order_id\" = ?"
            ))
            .bind(order),
        )
        .await
        .unwrap();
    let Value::Number { unscaled, scale } = ours.rows[0][1] else {
        panic!("total {:?}", ours.rows[0][1])
    };
    let theirs =
        w.pg.query_one(
            "SELECT status::text, total::text FROM public.orders WHERE order_id = $1",
            &[&order],
        )
        .await
        .unwrap();
    assert_eq!(ours.rows[0][0].as_str(), Some(theirs.get::<_, &str>(0)));
    assert_ne!(theirs.get::<_, String>(0), old_status);
    assert_eq!(
        sluice_tests::normalize_decimal(&sluice_tests::decimal_text(unscaled, scale as i8)),
        sluice_tests::normalize_decimal(theirs.get(1))
    );
}

/// Gold is its own object: each procedure runs once per batch, after every input of the batch
/// merged, in dependency order (gold reading gold after it), with the batch id; not at all
/// when an input failed, and what reads a skipped gold is skipped too.
#[tokio::test]
async fn gold_runs_once_per_batch_after_all_its_inputs_in_dependency_order() {
    // LOG_B reads orders and products; the shipped REFRESH reads orders; LOG_A reads both
    // gold procedures (level 2), and is configured first, so config order is not run order.
    let listed =
        "gold:\n  - {procedure: GOLD.REFRESH_DAILY_REVENUE, inputs: [shop/public.orders]}\n";
    assert!(TABLES.contains(listed));
    let tables = TABLES.replace(
        listed,
        "gold:\n  - {procedure: GOLD.LOG_A, inputs: [GOLD.REFRESH_DAILY_REVENUE, LOG_B]}\n  \
         - {procedure: GOLD.LOG_B, inputs: [shop/public.orders, shop/public.products]}\n  \
         - {procedure: GOLD.REFRESH_DAILY_REVENUE, inputs: [shop/public.orders]}\n",
    );
    let w = world_with("sfgold", &tables, |client| client).await;
    // Each call logs its name, the id it got, its place in the sequence of calls, the fact
    // rows the refresh had written under that id by then, and STAGING's rows of both tables.
    w.query(
        "CREATE TABLE GOLD.CALL_LOG (NAME VARCHAR, BATCH_ID VARCHAR, SEQ NUMBER(19,0), FACT_ROWS NUMBER(19,0), ORDERS NUMBER(19,0), PRODUCTS NUMBER(19,0))",
    )
    .await;
    for name in ["LOG_A", "LOG_B"] {
        w.query(&format!(
            "CREATE OR REPLACE PROCEDURE GOLD.{name}(RUN_ID VARCHAR)
             RETURNS VARCHAR
             LANGUAGE SQL
             AS $$
             BEGIN
             INSERT INTO GOLD.CALL_LOG (NAME, BATCH_ID, SEQ, FACT_ROWS, ORDERS, PRODUCTS)
                 SELECT '{name}', :RUN_ID, (SELECT COUNT(*) FROM GOLD.CALL_LOG) + 1,
                        (SELECT COUNT(*) FROM GOLD.DAILY_ORDER_REVENUE WHERE REFRESHED_BY_RUN = :RUN_ID),
                        (SELECT COUNT(*) FROM STAGING.SHOP_ORDERS),
                        (SELECT COUNT(*) FROM STAGING.SHOP_PUBLIC_PRODUCTS);
             RETURN 'logged';
             END;
             $$"
        ))
        .await;
    }
    let orders = w.h.table("public.orders").clone();
    let products = w.h.table("public.products").clone();
    let log = || async {
        w.query("SELECT NAME, BATCH_ID, SEQ, FACT_ROWS, ORDERS, PRODUCTS FROM GOLD.CALL_LOG ORDER BY SEQ")
            .await
            .rows
            .iter()
            .map(|r| {
                (
                    r[0].as_str().unwrap().to_owned(),
                    r[1].as_str().unwrap().to_owned(),
                    r[2].as_i64().unwrap(),
                    r[3].as_i64().unwrap(),
                    r[4].as_i64().unwrap(),
                    r[5].as_i64().unwrap(),
                )
            })
            .collect::<Vec<_>>()
    };
    let statuses = |gold: &sluice_core::gold::GoldRecord| {
        gold.steps
            .iter()
            .map(|s| (s.procedure.clone(), s.level, s.status.as_str()))
            .collect::<Vec<_>>()
    };
    let run = |table: TableConfig| {
        let w = &w;
        async move { w.h.pipeline.run_table(&table, &Quiet).await.unwrap() }
    };

    // Batch 1: both tables. Level 1 (LOG_B, REFRESH, in config order) after both merged,
    // then LOG_A; each once, with the batch's id.
    let batch = [run(orders.clone()).await, run(products.clone()).await];
    assert!(batch.iter().all(|r| r.status == RunStatus::Completed));
    let gold = w.batch_gold(&batch).await.unwrap();
    assert_eq!(
        statuses(&gold),
        [
            ("GOLD.LOG_B".to_owned(), 1, "DONE"),
            ("GOLD.REFRESH_DAILY_REVENUE".to_owned(), 1, "DONE"),
            ("GOLD.LOG_A".to_owned(), 2, "DONE"),
        ]
    );
    assert!(gold.finished);
    let facts = w.pg_gold().await.len() as i64;
    assert_eq!(w.gold().await, w.pg_gold().await);
    let (orders_n, products_n) = (
        w.pg_count("public.orders").await,
        w.pg_count("public.products").await,
    );
    let id = gold.batch_id.clone();
    let mut expected = vec![
        ("LOG_B".to_owned(), id.clone(), 1, 0, orders_n, products_n),
        (
            "LOG_A".to_owned(),
            id.clone(),
            2,
            facts,
            orders_n,
            products_n,
        ),
    ];
    assert_eq!(log().await, expected);
    let refreshed = w
        .query("SELECT DISTINCT REFRESHED_BY_RUN FROM GOLD.DAILY_ORDER_REVENUE")
        .await;
    assert_eq!(refreshed.rows, vec![vec![Value::Text(id.clone())]]);

    // The same batch's gold asked again (a duplicated event): it already ran; nothing is called.
    let again =
        w.h.pipeline
            .run_batch_gold(&w.h.config, &id, "another", &batch)
            .await
            .unwrap()
            .unwrap();
    assert_eq!(again, gold);
    assert_eq!(log().await, expected);

    // Batch 2: products fails (its table is gone from the source), orders merges. REFRESH
    // (orders only) runs; LOG_B (reads products) is skipped with the reason, LOG_A (reads
    // LOG_B) too.
    w.pg.batch_execute("ALTER TABLE public.products RENAME TO products_away")
        .await
        .unwrap();
    let batch = [run(orders.clone()).await, run(products.clone()).await];
    w.pg.batch_execute("ALTER TABLE public.products_away RENAME TO products")
        .await
        .unwrap();
    assert_eq!(batch[0].status, RunStatus::Completed);
    assert_eq!(batch[1].status, RunStatus::Failed);
    let gold = w.batch_gold(&batch).await.unwrap();
    assert_eq!(
        statuses(&gold),
        [
            ("GOLD.LOG_B".to_owned(), 1, "SKIPPED"),
            ("GOLD.REFRESH_DAILY_REVENUE".to_owned(), 1, "DONE"),
            ("GOLD.LOG_A".to_owned(), 2, "SKIPPED"),
        ]
    );
    let reason = gold.steps[0].detail.as_deref().unwrap();
    assert!(
        reason.starts_with(&format!(
            "input shop/public.products failed in this batch (run {}",
            batch[1].run_id
        )),
        "{reason}"
    );
    assert_eq!(
        gold.steps[2].detail.as_deref(),
        Some("input GOLD.LOG_B was skipped")
    );
    assert_eq!(log().await, expected, "no logging procedure was called");
    let refreshed = w
        .query("SELECT DISTINCT REFRESHED_BY_RUN FROM GOLD.DAILY_ORDER_REVENUE")
        .await;
    assert_eq!(
        refreshed.rows,
        vec![vec![Value::Text(gold.batch_id.clone())]]
    );

    // Batch 3: products alone. LOG_B runs, REFRESH (orders not in the batch) does not, and
    // LOG_A runs after LOG_B: its other input is not part of this batch.
    let batch = [run(products.clone()).await];
    let gold = w.batch_gold(&batch).await.unwrap();
    assert_eq!(
        statuses(&gold),
        [
            ("GOLD.LOG_B".to_owned(), 1, "DONE"),
            ("GOLD.LOG_A".to_owned(), 2, "DONE"),
        ]
    );
    let id = gold.batch_id.clone();
    expected.push(("LOG_B".to_owned(), id.clone(), 3, 0, orders_n, products_n));
    expected.push(("LOG_A".to_owned(), id, 4, 0, orders_n, products_n));
    assert_eq!(log().await, expected);

    // The same batch's gold run twice at once by one holder (a gold event delivered twice, or
    // retried while its first CALL still runs): each procedure is executed once, the second
    // CALL answered with the first's outcome (same request id).
    let batch = [run(orders.clone()).await, run(products.clone()).await];
    let id = format!("test-{}", RunId::new());
    let (first, second) = tokio::join!(
        w.h.pipeline
            .run_batch_gold(&w.h.config, &id, "same", &batch),
        w.h.pipeline
            .run_batch_gold(&w.h.config, &id, "same", &batch),
    );
    for gold in [first.unwrap().unwrap(), second.unwrap().unwrap()] {
        assert!(
            gold.steps.iter().all(|s| s.status.as_str() == "DONE"),
            "{gold:?}"
        );
    }
    let logged: Vec<String> = log()
        .await
        .into_iter()
        .filter(|row| row.1 == id)
        .map(|row| row.0)
        .collect();
    assert_eq!(logged, ["LOG_B", "LOG_A"], "each called once");
    expected = log().await;

    // A gold procedure that fails: what reads it is skipped, the rest runs.
    w.query("DROP PROCEDURE GOLD.LOG_B(VARCHAR)").await;
    let batch = [run(orders.clone()).await, run(products.clone()).await];
    let gold = w.batch_gold(&batch).await.unwrap();
    assert_eq!(
        statuses(&gold),
        [
            ("GOLD.LOG_B".to_owned(), 1, "FAILED"),
            ("GOLD.REFRESH_DAILY_REVENUE".to_owned(), 1, "DONE"),
            ("GOLD.LOG_A".to_owned(), 2, "SKIPPED"),
        ]
    );
    assert_eq!(
        gold.steps[2].detail.as_deref(),
        Some("input GOLD.LOG_B failed")
    );
    assert_eq!(log().await, expected);
}
