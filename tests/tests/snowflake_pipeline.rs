//! The warehouse step end to end against the stand-in: the shop sample in PostgreSQL is
//! extracted to S3 (moto), COPYed into RAW, merged into STAGING by the generated procedure and
//! rolled up by the gold example in `infra/snowflake/`. Every check compares with what
//! PostgreSQL itself computes, never with what sluice wrote.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;

use sluice::Quiet;
use sluice::sample::create_shop_postgres;
use sluice::sink::parquet::ParquetSettings;
use sluice::warehouse::load::{Loader, WarehouseTarget};
use sluice::warehouse::snowflake::SnowflakeClient;
use sluice::warehouse::{Statement, Value};
use sluice_core::snowflake::ObjectName;
use sluice_core::{RunRecord, RunStatus, TableConfig};
use sluice_tests::moto::MotoServer;
use sluice_tests::s3::S3Harness;
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
    let h = S3Harness::new(&shop_config(&db, TABLES), ParquetSettings::default()).await;
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
        client.clone(),
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

    async fn run(&self, table: &TableConfig) -> RunRecord {
        let record = self.h.pipeline.run_table(table, &Quiet).await.unwrap();
        assert_eq!(record.status, RunStatus::Completed, "{:?}", record.error);
        record
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
    let committed =
        w.h.pipeline
            .state()
            .table_state(&key)
            .await
            .unwrap()
            .watermark;
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
    assert_eq!(
        w.h.pipeline
            .state()
            .table_state(&key)
            .await
            .unwrap()
            .watermark,
        committed
    );
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
