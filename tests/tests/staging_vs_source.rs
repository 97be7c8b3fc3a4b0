//! Does STAGING equal the source? Rows deleted at the source reach STAGING (`deletes:` on full
//! loads), and `sluice validate` proves the rest or finds where it does not hold: through S3
//! (moto), the Snowflake stand-in and the generated merge procedure, from PostgreSQL and
//! MariaDB. Every check compares STAGING with the source database itself (counts, key sets,
//! per-column checksums), never with what sluice wrote.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::sync::Arc;

use mysql_async::prelude::Queryable;
use sluice::Quiet;
use sluice::sample::create_shop_postgres;
use sluice::sample_mysql::create_shop_mysql;
use sluice::sink::parquet::ParquetSettings;
use sluice::source::mysql::MysqlSource;
use sluice::warehouse::load::Loader;
use sluice::warehouse::snowflake::SnowflakeClient;
use sluice::warehouse::{Statement, Value};
use sluice_core::validate::{Level, MetricKind, RowProblem, TableValidation, Verdict};
use sluice_core::{DeleteMode, RunRecord, RunStatus, TableConfig};
use sluice_tests::mysql::{MyTestDb, mysql_config};
use sluice_tests::s3::S3Harness;
use sluice_tests::snowflake::StandIn;
use sluice_tests::{TestDb, shop_config};

const PRODUCTS: &str = "  - source: shop
    table: public.products
    primary_key: [product_id]
    load: {mode: full}
    deletes: {mode: hard}
    target: {staging_table: STAGING.PRODUCTS}
";

struct World {
    h: S3Harness,
    client: Arc<SnowflakeClient>,
    loader: Arc<Loader>,
    _standin: StandIn,
}

async fn world(label: &str, config: &str, mysql: bool) -> World {
    let h = if mysql {
        S3Harness::with_sources(config, ParquetSettings::default(), |source| {
            Arc::new(MysqlSource::from_config(source, None).unwrap())
        })
        .await
    } else {
        S3Harness::new(config, ParquetSettings::default()).await
    };
    let sluice_tests::snowflake::Warehoused {
        h,
        client,
        loader,
        standin,
    } = sluice_tests::snowflake::warehoused(label, h).await;
    World {
        h,
        client,
        loader,
        _standin: standin,
    }
}

impl World {
    async fn run(&self, table: &TableConfig) -> RunRecord {
        let record = self.h.pipeline.run_table(table, &Quiet).await.unwrap();
        assert_eq!(record.status, RunStatus::Completed, "{:?}", record.error);
        record
    }

    async fn run_refused(&self, table: &TableConfig) -> String {
        let record = self.h.pipeline.run_table(table, &Quiet).await.unwrap();
        assert_eq!(record.status, RunStatus::Failed, "{:?}", record.merge);
        let error = record.error.unwrap();
        assert_eq!(error.phase, RunStatus::Merging);
        error.message
    }

    /// Loads and merges a run again from its manifest, as a retried finalize would.
    async fn replay(&self, table: &TableConfig, record: &RunRecord) -> serde_json::Value {
        let manifest = self.h.manifest(record).await;
        self.loader
            .load(table, &manifest, Some(&self.h.prefix))
            .await
            .unwrap();
        self.loader.merge(table, record.run_id).await.unwrap()
    }

    async fn ints(&self, sql: &str) -> BTreeSet<i64> {
        let result = self.client.execute(&Statement::new(sql)).await.unwrap();
        result.rows.iter().map(|r| r[0].as_i64().unwrap()).collect()
    }

    /// Every level; ranges of 100 rows, so even the sample's tables span several.
    async fn validate(&self, table: &TableConfig) -> TableValidation {
        let source = self.h.pipeline.source(table).unwrap();
        let (warehouse, database) = self.loader.warehouse();
        sluice::validate::validate_table(
            source.as_ref(),
            warehouse.as_ref(),
            database,
            self.h.pipeline.state().as_ref(),
            table,
            sluice::validate::ValidateOptions {
                level: Level::Rows,
                max_rows: 5,
                rows_per_range: 100,
            },
        )
        .await
        .unwrap()
    }

    async fn execute(&self, sql: &str) {
        self.client.execute(&Statement::new(sql)).await.unwrap();
    }

    async fn texts(&self, sql: &str) -> Vec<String> {
        let result = self.client.execute(&Statement::new(sql)).await.unwrap();
        let mut texts: Vec<String> = result
            .rows
            .iter()
            .map(|r| r[0].as_str().unwrap().to_owned())
            .collect();
        texts.sort();
        texts
    }

    async fn staging_keys(&self, key: &str, staging: &str, filter: &str) -> BTreeSet<i64> {
        self.ints(&format!("SELECT \"{key}\" FROM {staging}{filter}"))
            .await
    }
}

fn merged(inserted: u64, updated: u64, deleted: u64) -> serde_json::Value {
    serde_json::json!({"inserted": inserted, "updated": updated, "deleted": deleted})
}

async fn pg_keys(pg: &tokio_postgres::Client, sql: &str) -> BTreeSet<i64> {
    pg.query(sql, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| i64::from(r.get::<_, i32>(0)))
        .collect()
}

#[tokio::test]
async fn hard_deletes_follow_the_source_replay_safely_and_stop_at_the_guard() {
    let db = TestDb::create("sfdel").await;
    let pg = db.client().await;
    create_shop_postgres(&pg, "public", 1).await.unwrap();
    let w = world("sfdel", &shop_config(&db, PRODUCTS), false).await;
    let products = w.h.table("public.products").clone();
    assert_eq!(products.deletes.mode, DeleteMode::Hard);
    let staging = "STAGING.PRODUCTS";
    let check = async |w: &World| {
        sluice_tests::snowflake::assert_staging_equals_source(
            &w.client,
            &pg,
            staging,
            "public.products",
        )
        .await;
    };

    // A merge log from before deletes existed: the run evolves it.
    for sql in [
        "CREATE SCHEMA IF NOT EXISTS STAGING",
        "CREATE TABLE STAGING.PRODUCTS_MERGES (\"run_id\" VARCHAR, \"inserted\" NUMBER(19,0), \"updated\" NUMBER(19,0))",
    ] {
        w.client.execute(&Statement::new(sql)).await.unwrap();
    }
    let first = w.run(&products).await;
    assert_eq!(first.merge, Some(merged(200, 0, 0)));
    check(&w).await;
    // The run's own reconciliation: the source's count, the files, what COPY loaded.
    let count: i64 = pg
        .query_one("SELECT count(*) FROM products", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(first.source_rows(), Some(count as u64));
    assert_eq!(first.loaded_rows, Some(count as u64));
    assert_eq!(first.rows(), count as u64);
    assert_eq!(first.merged_keys, Some(count as u64));
    assert_eq!(first.duplicate_key_rows(), Some(0));

    // Five products vanish; the next run deletes exactly those from STAGING.
    let gone = pg_keys(
        &pg,
        "DELETE FROM products WHERE product_id % 40 = 3 RETURNING product_id",
    )
    .await;
    assert_eq!(gone.len(), 5);
    let second = w.run(&products).await;
    assert_eq!(second.merge, Some(merged(0, 195, 5)));
    check(&w).await;
    assert!(
        w.staging_keys("product_id", staging, "")
            .await
            .is_disjoint(&gone)
    );

    // The latest run replayed: nothing left to do.
    assert_eq!(w.replay(&products, &second).await, merged(0, 0, 0));
    check(&w).await;

    // Deleted and inserted again at the source: the row comes back.
    let back = *gone.first().unwrap();
    pg.batch_execute(&format!(
        "INSERT INTO products (product_id, sku, name, category, price, attributes, in_stock, updated_at) \
         VALUES ({back}, 'SKU-BACK', 'back again', 'misc', 12.34, '{{}}', true, now())"
    ))
    .await
    .unwrap();
    let third = w.run(&products).await;
    assert_eq!(third.merge, Some(merged(1, 195, 0)));
    check(&w).await;

    // The first run replayed after later ones: it neither resurrects the deleted rows nor
    // deletes the one that came back.
    assert_eq!(w.replay(&products, &first).await, merged(0, 0, 0));
    check(&w).await;

    // A source that lost most of its rows: the guard fails the run before STAGING changes.
    let before = w.staging_keys("product_id", staging, "").await;
    pg.batch_execute("DELETE FROM products WHERE product_id % 10 <> 0")
        .await
        .unwrap();
    let message = w.run_refused(&products).await;
    let live = before.len();
    let vanished = before.iter().filter(|k| *k % 10 != 0).count();
    assert!(
        message.contains(&format!("would delete {vanished} of the {live} live rows"))
            && message.contains("deletes.max_fraction (now 0.5; 1 allows any share)")
            && message.contains("nothing in STAGING was changed"),
        "{message}"
    );
    assert_eq!(w.staging_keys("product_id", staging, "").await, before);

    // An emptied source: refused as well, even though the share is not computed from rows read.
    pg.batch_execute("DELETE FROM products").await.unwrap();
    let message = w.run_refused(&products).await;
    assert!(
        message.contains(&format!("read no rows, yet STAGING holds {live} live rows")),
        "{message}"
    );
    assert_eq!(w.staging_keys("product_id", staging, "").await, before);

    // The operator says the purge is real.
    let mut purge = products.clone();
    purge.deletes.max_fraction = 1.0;
    let purged = w.run(&purge).await;
    assert_eq!(purged.merge, Some(merged(0, 0, live as u64)));
    check(&w).await;
}

#[tokio::test]
async fn soft_deletes_mark_vanished_rows_and_clear_the_mark_when_they_return() {
    let db = TestDb::create("sfsoft").await;
    let pg = db.client().await;
    create_shop_postgres(&pg, "public", 1).await.unwrap();
    let config = PRODUCTS.replace("mode: hard", "mode: soft");
    let w = world("sfsoft", &shop_config(&db, &config), false).await;
    let products = w.h.table("public.products").clone();
    let staging = "STAGING.PRODUCTS";
    let live = " WHERE NOT \"_sluice_deleted\"";
    let marked = " WHERE \"_sluice_deleted\" AND \"_sluice_deleted_at\" IS NOT NULL";

    let first = w.run(&products).await;
    assert_eq!(first.merge, Some(merged(200, 0, 0)));
    let all = pg_keys(&pg, "SELECT product_id FROM products").await;
    assert_eq!(w.staging_keys("product_id", staging, live).await, all);

    let gone = pg_keys(
        &pg,
        "DELETE FROM products WHERE product_id % 50 = 7 RETURNING product_id",
    )
    .await;
    let second = w.run(&products).await;
    assert_eq!(second.merge, Some(merged(0, 196, 4)));
    let source = pg_keys(&pg, "SELECT product_id FROM products").await;
    assert_eq!(w.staging_keys("product_id", staging, live).await, source);
    assert_eq!(w.staging_keys("product_id", staging, marked).await, gone);
    // Marked rows keep their last values: the whole table minus the marks is the source.
    let stamps =
        "SELECT TO_VARCHAR(\"_sluice_deleted_at\") FROM STAGING.PRODUCTS WHERE \"_sluice_deleted\"";
    let marked_at = w.texts(stamps).await;
    assert_eq!(marked_at.len(), gone.len());

    // A replay marks nothing again and keeps the time each row was first seen gone.
    assert_eq!(w.replay(&products, &second).await, merged(0, 0, 0));
    assert_eq!(w.staging_keys("product_id", staging, marked).await, gone);
    assert_eq!(w.texts(stamps).await, marked_at);

    // One comes back: live again, its mark cleared.
    let back = *gone.first().unwrap();
    pg.batch_execute(&format!(
        "INSERT INTO products (product_id, sku, name, category, price, attributes, in_stock, updated_at) \
         VALUES ({back}, 'SKU-BACK', 'back again', 'misc', 12.34, '{{}}', true, now())"
    ))
    .await
    .unwrap();
    let third = w.run(&products).await;
    assert_eq!(third.merge, Some(merged(0, 197, 0)));
    let source = pg_keys(&pg, "SELECT product_id FROM products").await;
    assert_eq!(w.staging_keys("product_id", staging, live).await, source);
    let still_gone: BTreeSet<i64> = gone.iter().copied().filter(|k| *k != back).collect();
    assert_eq!(
        w.staging_keys("product_id", staging, marked).await,
        still_gone
    );
    let cleared = w
        .client
        .execute(&Statement::new(format!(
            "SELECT \"_sluice_deleted_at\", \"name\" FROM {staging} WHERE \"product_id\" = {back}"
        )))
        .await
        .unwrap();
    assert_eq!(cleared.rows[0][0], Value::Null);
    assert_eq!(cleared.rows[0][1].as_str(), Some("back again"));
}

/// A row deleted while a run extracts is still in that run's snapshot, so it stays; the
/// next run, whose snapshot lacks it, deletes it.
#[tokio::test]
async fn a_row_deleted_during_a_run_goes_with_the_next_run() {
    let db = TestDb::create("sfdur").await;
    let pg = db.client().await;
    create_shop_postgres(&pg, "public", 1).await.unwrap();
    let w = world("sfdur", &shop_config(&db, PRODUCTS), false).await;
    let products = w.h.table("public.products").clone();
    w.run(&products).await;

    let planned = w.h.pipeline.plan_run(&products).await.unwrap();
    let gone = pg_keys(
        &pg,
        "DELETE FROM products WHERE product_id % 25 = 1 RETURNING product_id",
    )
    .await;
    assert!(!gone.is_empty());
    let during =
        w.h.pipeline
            .execute_run(planned.record.run_id, &Quiet)
            .await
            .unwrap();
    drop(planned.snapshot);
    assert_eq!(during.status, RunStatus::Completed, "{:?}", during.error);
    assert_eq!(during.merge, Some(merged(0, 200, 0)));
    assert!(
        w.staging_keys("product_id", "STAGING.PRODUCTS", "")
            .await
            .is_superset(&gone)
    );

    let after = w.run(&products).await;
    assert_eq!(
        after.merge,
        Some(merged(0, 200 - gone.len() as u64, gone.len() as u64))
    );
    sluice_tests::snowflake::assert_staging_equals_source(
        &w.client,
        &pg,
        "STAGING.PRODUCTS",
        "public.products",
    )
    .await;
}

#[tokio::test]
async fn mariadb_deletes_reach_staging_and_the_guard_holds() {
    let db = MyTestDb::create("sfdel").await;
    let mut conn = db.conn().await;
    create_shop_mysql(&mut conn, 1).await.unwrap();
    let tables = "  - source: shop
    table: orders
    primary_key: [order_id]
    partition: { column: order_id, chunks: 2 }
    deletes: { mode: hard, max_fraction: 0.3 }
    target: {staging_table: STAGING.ORDERS}
";
    let w = world("mydel", &mysql_config(&db, tables), true).await;
    let orders = w.h.table("orders").clone();
    let source_keys = async |conn: &mut mysql_async::Conn| -> BTreeSet<i64> {
        let keys: Vec<i64> = conn.query("SELECT order_id FROM orders").await.unwrap();
        keys.into_iter().collect()
    };

    let first = w.run(&orders).await;
    let all = source_keys(&mut conn).await;
    assert_eq!(first.merge, Some(merged(all.len() as u64, 0, 0)));
    assert_eq!(w.staging_keys("order_id", "STAGING.ORDERS", "").await, all);

    // Deletes in both chunks' ranges.
    conn.query_drop("DELETE FROM orders WHERE order_id % 100 = 42")
        .await
        .unwrap();
    let left = source_keys(&mut conn).await;
    let deleted = (all.len() - left.len()) as u64;
    assert!(deleted > 10, "{deleted}");
    let second = w.run(&orders).await;
    assert_eq!(second.merge, Some(merged(0, left.len() as u64, deleted)));
    assert_eq!(w.staging_keys("order_id", "STAGING.ORDERS", "").await, left);
    assert_eq!(w.replay(&orders, &second).await, merged(0, 0, 0));
    assert_eq!(w.staging_keys("order_id", "STAGING.ORDERS", "").await, left);

    // Over max_fraction (0.3): refused, STAGING unchanged.
    conn.query_drop("DELETE FROM orders WHERE order_id % 2 = 0")
        .await
        .unwrap();
    let message = w.run_refused(&orders).await;
    assert!(
        message.contains("more than deletes.max_fraction allows"),
        "{message}"
    );
    assert!(message.contains("(now 0.3;"), "{message}");
    assert_eq!(w.staging_keys("order_id", "STAGING.ORDERS", "").await, left);
}

const CUSTOMERS_KEYSET: &str = "  - source: shop
    table: public.customers
    primary_key: [customer_id]
    load: {mode: incremental, cursor: updated_at}
    deletes: {mode: hard, keyset: {}}
    target: {staging_table: STAGING.CUSTOMERS}
";

impl World {
    async fn run_keyset(&self, table: &TableConfig) -> RunRecord {
        let start = sluice::RunStart {
            keyset: true,
            ..sluice::RunStart::default()
        };
        self.h
            .pipeline
            .run_table_with(table, &Quiet, start)
            .await
            .unwrap()
    }

    /// A key-set run's keys loaded and reconciled again, as a retried finalize would.
    async fn replay_keyset(&self, table: &TableConfig, record: &RunRecord) -> serde_json::Value {
        let manifest = self.h.manifest(record).await;
        self.loader
            .load_keys(table, &manifest, Some(&self.h.prefix))
            .await
            .unwrap();
        self.loader.reconcile(table, record.run_id).await.unwrap()
    }
}

/// An incremental table never reads a deleted row; its key-set runs find them: only the keys
/// are read (under `_keysets/`, no watermark moves), STAGING loses exactly the rows the source
/// lost, a replay changes nothing, an older key set replayed after a later load deletes
/// nothing that load brought, a row deleted and inserted again comes back, and the guard
/// holds.
#[tokio::test]
async fn key_sets_bring_an_incremental_tables_deletes_to_staging() {
    let db = TestDb::create("sfkeys").await;
    let pg = db.client().await;
    create_shop_postgres(&pg, "public", 1).await.unwrap();
    let w = world("sfkeys", &shop_config(&db, CUSTOMERS_KEYSET), false).await;
    let customers = w.h.table("public.customers").clone();
    let staging = "STAGING.CUSTOMERS";
    let check = async |w: &World| {
        sluice_tests::snowflake::assert_staging_equals_source(
            &w.client,
            &pg,
            staging,
            "public.customers",
        )
        .await;
    };
    let source_keys = async || {
        pg.query("SELECT customer_id FROM customers", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<_, i64>(0))
            .collect::<BTreeSet<i64>>()
    };
    let delete = async |sql: &str| -> BTreeSet<i64> {
        pg.query(sql, &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<_, i64>(0))
            .collect()
    };

    let first = w.run(&customers).await;
    let all = source_keys().await;
    assert_eq!(first.merge, Some(json_counts(all.len() as u64, 0)));
    check(&w).await;

    // Deletes the incremental load cannot see.
    let gone =
        delete("DELETE FROM customers WHERE customer_id % 30 = 4 RETURNING customer_id").await;
    assert!(gone.len() >= 3, "{gone:?}");
    w.run(&customers).await;
    assert!(
        w.staging_keys("customer_id", staging, "")
            .await
            .is_superset(&gone)
    );

    let watermark =
        w.h.pipeline
            .state()
            .table_state(&customers.key())
            .await
            .unwrap();
    let keys = w.run_keyset(&customers).await;
    assert_eq!(keys.status, RunStatus::Completed, "{:?}", keys.error);
    assert!(keys.keyset && keys.plan.as_ref().unwrap().keyset);
    assert_eq!(keys.merge, Some(merged(0, 0, gone.len() as u64)));
    check(&w).await;
    // It read every key and only keys, into the key-set directory, and moved no watermark.
    let manifest = w.h.manifest(&keys).await;
    assert!(
        keys.manifest_key
            .as_ref()
            .unwrap()
            .contains("/_keysets/postgres/shop/public.customers/_manifests/")
    );
    assert!(manifest.files.iter().all(|f| f.key.contains("/_keysets/")));
    let columns: Vec<&str> = manifest.schema.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        columns,
        ["customer_id", "_sluice_run_id", "_sluice_extracted_at"]
    );
    assert_eq!(manifest.rows, (all.len() - gone.len()) as u64);
    assert_eq!(keys.source_rows(), Some(manifest.rows));
    assert_eq!(keys.loaded_rows, Some(manifest.rows));
    assert_eq!(keys.watermark_committed, None);
    let after =
        w.h.pipeline
            .state()
            .table_state(&customers.key())
            .await
            .unwrap();
    assert_eq!(after.watermark, watermark.watermark);
    assert_eq!(after.keyset_run_id, Some(keys.run_id));

    // Replayed at once: nothing left to do.
    assert_eq!(w.replay_keyset(&customers, &keys).await, merged(0, 0, 0));
    check(&w).await;
    // A row a later run wrote is never taken by an older key set, even while that later run
    // is in no merge log yet (here: written straight into STAGING under a later run id).
    let later = sluice_core::RunId::at(chrono::Utc::now() + chrono::Duration::hours(1));
    w.execute(&format!(
        "INSERT INTO {staging} (\"customer_id\", \"_sluice_run_id\") VALUES (777777, '{later}')"
    ))
    .await;
    assert_eq!(w.replay_keyset(&customers, &keys).await, merged(0, 0, 0));
    assert!(
        w.staging_keys("customer_id", staging, "")
            .await
            .contains(&777777)
    );
    w.execute(&format!(
        "DELETE FROM {staging} WHERE \"customer_id\" = 777777"
    ))
    .await;

    // A load whose id sorts before a run already in the merge log (a host with a slow clock)
    // merges nothing: it fails and keeps the watermark rather than skip its rows for good.
    let log = "STAGING.CUSTOMERS_MERGES";
    w.execute(&format!(
        "INSERT INTO {log} (\"run_id\", \"inserted\", \"updated\") VALUES ('{later}', 0, 0)"
    ))
    .await;
    pg.batch_execute(
        "UPDATE customers SET notes = 'changed', updated_at = now() WHERE customer_id = 5",
    )
    .await
    .unwrap();
    let before =
        w.h.pipeline
            .state()
            .table_state(&customers.key())
            .await
            .unwrap();
    let skipped = w.h.pipeline.run_table(&customers, &Quiet).await.unwrap();
    assert_eq!(skipped.status, RunStatus::Failed);
    let message = skipped.error.unwrap().message;
    assert!(
        message.contains("the merge merged none of the 1 rows"),
        "{message}"
    );
    let after =
        w.h.pipeline
            .state()
            .table_state(&customers.key())
            .await
            .unwrap();
    assert_eq!(after.watermark, before.watermark);
    w.execute(&format!("DELETE FROM {log} WHERE \"run_id\" = '{later}'"))
        .await;
    w.run(&customers).await;
    check(&w).await;

    // A customer deleted and inserted again comes back with the next load; a new one arrives.
    let back = *gone.first().unwrap();
    pg.batch_execute(&format!(
        "INSERT INTO customers SELECT {back}, email, full_name, country, segment, loyalty_points, \
         is_active, profile, external_id, created_at, now()::timestamp, notes FROM customers WHERE customer_id = 1; \
         INSERT INTO customers SELECT 900001, email, full_name, country, segment, loyalty_points, \
         is_active, profile, external_id, created_at, now()::timestamp, notes FROM customers WHERE customer_id = 2"
    ))
    .await
    .unwrap();
    let load = w.run(&customers).await;
    assert_eq!(load.merge, Some(json_counts(2, 0)));
    check(&w).await;
    // The older key set replayed after that load: it lacks both keys, and deletes neither.
    assert_eq!(w.replay_keyset(&customers, &keys).await, merged(0, 0, 0));
    check(&w).await;
    // Deleted while a key set reads: still in its snapshot, so it stays; the next key set,
    // whose snapshot lacks it, takes it.
    let start = sluice::RunStart {
        keyset: true,
        ..sluice::RunStart::default()
    };
    let opened = w.h.pipeline.start_run(&customers, start).await.unwrap();
    let planned =
        w.h.pipeline
            .plan_opened_run(&customers, opened.record().run_id)
            .await
            .unwrap();
    let during =
        delete("DELETE FROM customers WHERE customer_id % 45 = 11 RETURNING customer_id").await;
    assert!(!during.is_empty());
    let read =
        w.h.pipeline
            .execute_run(planned.record.run_id, &Quiet)
            .await
            .unwrap();
    drop(planned.snapshot);
    assert_eq!(read.status, RunStatus::Completed, "{:?}", read.error);
    assert_eq!(read.merge, Some(merged(0, 0, 0)));
    assert!(
        w.staging_keys("customer_id", staging, "")
            .await
            .is_superset(&during)
    );
    let again = w.run_keyset(&customers).await;
    assert_eq!(again.merge, Some(merged(0, 0, during.len() as u64)));
    check(&w).await;
    // And validate agrees, to the row: `character(n)` columns (country, segment) keep their
    // padding on both sides.
    let validated = w.validate(&customers).await;
    assert_eq!(validated.verdict(), Verdict::Ok, "{validated:#?}");
    assert_eq!(
        metric(&validated, MetricKind::Chars, Some("segment")).source,
        Some((8 * source_keys().await.len()).to_string())
    );

    // A source that lost most of its rows: the guard fails the key set before STAGING changes.
    let before = w.staging_keys("customer_id", staging, "").await;
    pg.batch_execute("DELETE FROM customers WHERE customer_id % 4 <> 0")
        .await
        .unwrap();
    let refused = w.run_keyset(&customers).await;
    assert_eq!(refused.status, RunStatus::Failed);
    let message = refused.error.unwrap().message;
    assert!(
        message.contains("more than deletes.max_fraction allows")
            && message.contains("nothing in STAGING was changed"),
        "{message}"
    );
    assert_eq!(w.staging_keys("customer_id", staging, "").await, before);
    let state =
        w.h.pipeline
            .state()
            .table_state(&customers.key())
            .await
            .unwrap();
    assert_eq!(state.keyset_run_id, Some(again.run_id));
    assert_eq!(state.lease, None);

    // A table without key sets takes no key-set run, and nothing is recorded.
    let mut plain = customers.clone();
    plain.deletes = Default::default();
    let runs =
        w.h.pipeline
            .state()
            .list_runs(None, 100)
            .await
            .unwrap()
            .len();
    let start = sluice::RunStart {
        keyset: true,
        ..Default::default()
    };
    let error =
        w.h.pipeline
            .run_table_with(&plain, &Quiet, start)
            .await
            .unwrap_err();
    assert!(
        error.to_string().contains("takes no key-set runs"),
        "{error}"
    );
    assert_eq!(
        w.h.pipeline
            .state()
            .list_runs(None, 100)
            .await
            .unwrap()
            .len(),
        runs
    );
}

/// What a merge without deletes returns.
fn json_counts(inserted: u64, updated: u64) -> serde_json::Value {
    serde_json::json!({"inserted": inserted, "updated": updated})
}

/// MariaDB, soft: a key set read in chunks of the key marks the rows gone, a load clears the
/// mark of one that comes back, and a replay marks nothing again.
#[tokio::test]
async fn mariadb_key_sets_mark_deleted_rows_in_chunks() {
    let db = MyTestDb::create("sfkeys").await;
    let mut conn = db.conn().await;
    create_shop_mysql(&mut conn, 1).await.unwrap();
    let tables = "  - source: shop
    table: orders
    primary_key: [order_id]
    load: {mode: incremental, cursor: updated_at}
    partition: { column: order_id, chunks: 3 }
    deletes: { mode: soft, keyset: { every: 1h } }
    target: {staging_table: STAGING.ORDERS}
";
    let w = world("mykeys", &mysql_config(&db, tables), true).await;
    let orders = w.h.table("orders").clone();
    let staging = "STAGING.ORDERS";
    let live = " WHERE NOT \"_sluice_deleted\"";
    let marked = " WHERE \"_sluice_deleted\" AND \"_sluice_deleted_at\" IS NOT NULL";
    let source_keys = async |conn: &mut mysql_async::Conn| -> BTreeSet<i64> {
        let keys: Vec<i64> = conn.query("SELECT order_id FROM orders").await.unwrap();
        keys.into_iter().collect()
    };

    w.run(&orders).await;
    let all = source_keys(&mut conn).await;
    conn.query_drop("DELETE FROM orders WHERE order_id % 50 = 9")
        .await
        .unwrap();
    let left = source_keys(&mut conn).await;
    let gone: BTreeSet<i64> = all.difference(&left).copied().collect();
    assert!(gone.len() > 3, "{gone:?}");

    let keys = w.run_keyset(&orders).await;
    assert_eq!(keys.status, RunStatus::Completed, "{:?}", keys.error);
    assert!(
        keys.chunks.len() >= 3,
        "the key set is read in chunks of the key"
    );
    assert_eq!(keys.merge, Some(merged(0, 0, gone.len() as u64)));
    assert_eq!(w.staging_keys("order_id", staging, live).await, left);
    assert_eq!(w.staging_keys("order_id", staging, marked).await, gone);
    assert_eq!(w.replay_keyset(&orders, &keys).await, merged(0, 0, 0));
    assert_eq!(w.staging_keys("order_id", staging, marked).await, gone);

    // One comes back, newer: the load clears its mark.
    let back = *gone.first().unwrap();
    conn.query_drop(format!(
        "INSERT INTO orders (order_id, customer_id, status, currency, total, discount_rate, ordered_at, shipped_on, item_count, updated_at) \
         SELECT {back}, customer_id, status, currency, total, discount_rate, ordered_at, shipped_on, item_count, NOW(6) FROM orders WHERE order_id = 1"
    ))
    .await
    .unwrap();
    w.run(&orders).await;
    let left = source_keys(&mut conn).await;
    assert_eq!(w.staging_keys("order_id", staging, live).await, left);
    let still_gone: BTreeSet<i64> = gone.iter().copied().filter(|k| *k != back).collect();
    assert_eq!(
        w.staging_keys("order_id", staging, marked).await,
        still_gone
    );
}

/// A source whose "primary key" is not unique: the run completes (the merge keeps the latest
/// of each key) and says how many loaded rows repeated a key, counted against the source.
#[tokio::test]
async fn a_run_with_repeated_keys_says_how_many_rows_the_merge_folded() {
    let db = TestDb::create("sfdups").await;
    let pg = db.client().await;
    pg.batch_execute(
        "CREATE TABLE public.events (id integer, note text, updated_at timestamp NOT NULL);
         INSERT INTO public.events SELECT g, 'event ' || g, TIMESTAMP '2026-01-01' + g * INTERVAL '1 minute' FROM generate_series(1, 40) g;
         INSERT INTO public.events SELECT g, 'again ' || g, TIMESTAMP '2026-02-01' + g * INTERVAL '1 minute' FROM generate_series(1, 40, 7) g;",
    )
    .await
    .unwrap();
    let tables = "  - source: shop
    table: public.events
    primary_key: [id]
    load: {mode: full, cursor: updated_at}
    target: {staging_table: STAGING.EVENTS}
";
    let w = world("sfdups", &shop_config(&db, tables), false).await;
    let events = w.h.table("public.events").clone();
    let record = w.run(&events).await;
    let row = pg
        .query_one(
            "SELECT count(*), count(DISTINCT id) FROM public.events",
            &[],
        )
        .await
        .unwrap();
    let (rows, keys): (i64, i64) = (row.get(0), row.get(1));
    assert!(rows > keys);
    assert_eq!(record.loaded_rows, Some(rows as u64));
    assert_eq!(record.merged_keys, Some(keys as u64));
    assert_eq!(record.duplicate_key_rows(), Some((rows - keys) as u64));
    let answer = sluice_core::external_function::answer::RunStory::of(&record);
    let answer = serde_json::to_value(answer).unwrap();
    assert_eq!(answer["duplicate_key_rows"], serde_json::json!(rows - keys));
    // The latest of each key won.
    let again = w
        .ints("SELECT COUNT(*) FROM STAGING.EVENTS WHERE \"note\" LIKE 'again %'")
        .await;
    let repeated: i64 = pg
        .query_one("SELECT count(*) FROM generate_series(1, 40, 7)", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(again.into_iter().next(), Some(repeated));
}

/// The metric named `kind(column)` (`rows` for the row count).
fn metric<'a>(
    v: &'a TableValidation,
    kind: MetricKind,
    column: Option<&str>,
) -> &'a sluice_core::validate::MetricResult {
    v.metrics
        .iter()
        .find(|m| m.metric.kind == kind && m.metric.column.as_deref() == column)
        .unwrap_or_else(|| panic!("no {kind:?} of {column:?} in {v:#?}"))
}

fn differing(v: &TableValidation) -> Vec<String> {
    v.metrics
        .iter()
        .filter(|m| m.verdict != Verdict::Ok)
        .map(|m| m.metric.to_string())
        .collect()
}

const VALIDATED: &str = "  - source: shop
    table: public.products
    primary_key: [product_id]
    load: {mode: full}
    target: {staging_table: STAGING.PRODUCTS}
  - source: shop
    table: public.orders
    primary_key: [order_id]
    load: {mode: incremental, cursor: updated_at}
    partition: {column: order_id, chunks: 2}
    target: {staging_table: STAGING.ORDERS}
";

#[tokio::test]
async fn validate_passes_a_clean_table_and_locates_each_injected_fault() {
    let db = TestDb::create("sfval").await;
    let pg = db.client().await;
    create_shop_postgres(&pg, "public", 1).await.unwrap();
    let w = world("sfval", &shop_config(&db, VALIDATED), false).await;
    let products = w.h.table("public.products").clone();
    let orders = w.h.table("public.orders").clone();

    // Before any run: STAGING does not exist, which is pending, not a pass.
    let before = w.validate(&products).await;
    assert_eq!(before.verdict(), Verdict::Pending, "{before:#?}");
    assert!(before.metrics.is_empty());

    w.run(&products).await;
    w.run(&orders).await;
    for table in [&products, &orders] {
        let clean = w.validate(table).await;
        assert_eq!(clean.verdict(), Verdict::Ok, "{clean:#?}");
        assert!(clean.schema.is_empty(), "{:?}", clean.schema);
        // Every row hashed on both sides, in ranges of about 100 rows.
        let rows = clean.rows.as_ref().unwrap();
        let count: i64 = pg
            .query_one(&format!("SELECT count(*) FROM {}", table.table), &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(rows.rows_compared, count as u64);
        assert!(rows.ranges >= count as u64 / 100, "{rows:?}");
        assert_eq!(rows.source_queries, rows.ranges + 1);
    }
    // The values compared are the databases' own, not sluice's.
    let clean = w.validate(&products).await;
    let (count, total): (i64, String) = pg
        .query_one("SELECT count(*), sum(price)::text FROM products", &[])
        .await
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert_eq!(
        metric(&clean, MetricKind::Rows, None).source,
        Some(count.to_string())
    );
    assert_eq!(
        metric(&clean, MetricKind::Sum, Some("price")).source,
        Some(total)
    );
    assert_eq!(
        metric(&clean, MetricKind::Trues, Some("in_stock")).verdict,
        Verdict::Ok
    );

    // A value changed in STAGING: its column's sum (and nothing else) differs.
    w.execute("UPDATE STAGING.PRODUCTS SET \"price\" = \"price\" + 1 WHERE \"product_id\" = 5")
        .await;
    let changed = w.validate(&products).await;
    assert_eq!(changed.verdict(), Verdict::Mismatch);
    assert_eq!(differing(&changed), ["sum(price)"]);
    // The row level finds the row and names the column.
    let rows = changed.rows.as_ref().unwrap();
    assert_eq!((rows.missing, rows.extra, rows.different), (0, 0, 1));
    assert_eq!(rows.examples[0].key, ["5"]);
    assert_eq!(rows.examples[0].problem, RowProblem::Different);
    assert_eq!(rows.examples[0].columns, ["price"]);
    // The float column is not hashed (its text differs between engines), and says so.
    assert_eq!(rows.skipped, ["rating"]);
    w.execute("UPDATE STAGING.PRODUCTS SET \"price\" = \"price\" - 1 WHERE \"product_id\" = 5")
        .await;

    // A float changed in STAGING: caught by its sum (floats are compared to their digits,
    // never as text), though the row level cannot hash it.
    w.execute(
        "UPDATE STAGING.PRODUCTS SET \"rating\" = \"rating\" + 0.25 WHERE \"product_id\" = 7",
    )
    .await;
    let float = w.validate(&products).await;
    assert_eq!(float.verdict(), Verdict::Mismatch);
    let found = differing(&float);
    assert!(found.contains(&"sum(rating)".to_owned()), "{found:?}");
    assert!(found.iter().all(|m| m.ends_with("(rating)")), "{found:?}");
    w.execute(
        "UPDATE STAGING.PRODUCTS SET \"rating\" = \"rating\" - 0.25 WHERE \"product_id\" = 7",
    )
    .await;
    // Text changed in STAGING: its length in characters differs, and the row level names it.
    w.execute("UPDATE STAGING.PRODUCTS SET \"name\" = \"name\" || '!' WHERE \"product_id\" = 8")
        .await;
    let text = w.validate(&products).await;
    assert_eq!(differing(&text), ["chars(name)"]);
    assert_eq!(text.rows.as_ref().unwrap().examples[0].columns, ["name"]);
    w.execute("UPDATE STAGING.PRODUCTS SET \"name\" = LEFT(\"name\", LENGTH(\"name\") - 1) WHERE \"product_id\" = 8")
        .await;
    // A timestamp moved in STAGING past every other: the max differs.
    w.execute("UPDATE STAGING.PRODUCTS SET \"updated_at\" = '2099-01-01 00:00:00'::TIMESTAMP_NTZ WHERE \"product_id\" = 9")
        .await;
    let moved = w.validate(&products).await;
    assert_eq!(differing(&moved), ["max(updated_at)"]);
    w.run(&products).await;
    assert_eq!(w.validate(&products).await.verdict(), Verdict::Ok);
    let clean = w.validate(&products).await;
    let (newest, chars): (i64, i64) = pg
        .query_one(
            "SELECT CAST(EXTRACT(EPOCH FROM max(updated_at)) * 1000000 AS bigint), sum(char_length(name))::bigint FROM products",
            &[],
        )
        .await
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert_eq!(
        metric(&clean, MetricKind::Max, Some("updated_at")).staging,
        Some(newest.to_string())
    );
    assert_eq!(
        metric(&clean, MetricKind::Chars, Some("name")).staging,
        Some(chars.to_string())
    );

    // A row deleted in STAGING, then an extra one.
    w.execute("DELETE FROM STAGING.PRODUCTS WHERE \"product_id\" = 200")
        .await;
    let missing = w.validate(&products).await;
    assert_eq!(missing.verdict(), Verdict::Mismatch);
    let rows = metric(&missing, MetricKind::Rows, None);
    assert_eq!(
        (rows.source.as_deref(), rows.staging.as_deref()),
        (Some("200"), Some("199"))
    );
    assert!(differing(&missing).contains(&"max(product_id)".to_owned()));
    let rows = missing.rows.as_ref().unwrap();
    assert_eq!((rows.missing, rows.extra, rows.different), (1, 0, 0));
    assert_eq!(rows.examples[0].key, ["200"]);
    w.run(&products).await;
    assert_eq!(w.validate(&products).await.verdict(), Verdict::Ok);
    w.execute(
        "INSERT INTO STAGING.PRODUCTS (\"product_id\", \"sku\", \"name\", \"category\", \"price\", \"in_stock\", \"updated_at\") \
         VALUES (9999, 'X', 'extra', 'misc', 1.00, TRUE, '2024-01-01 00:00:00'::TIMESTAMP_NTZ)",
    )
    .await;
    let extra = w.validate(&products).await;
    assert_eq!(extra.verdict(), Verdict::Mismatch);
    assert!(differing(&extra).contains(&"rows".to_owned()), "{extra:#?}");
    let rows = extra.rows.as_ref().unwrap();
    assert_eq!((rows.missing, rows.extra, rows.different), (0, 1, 0));
    assert_eq!(rows.examples[0].key, ["9999"]);
    w.execute("DELETE FROM STAGING.PRODUCTS WHERE \"product_id\" = 9999")
        .await;

    // Type drift: STAGING's column retyped by hand, and one it should not have.
    w.execute("ALTER TABLE STAGING.PRODUCTS ADD COLUMN \"legacy\" VARCHAR")
        .await;
    let drift = w.validate(&products).await;
    assert_eq!(drift.verdict(), Verdict::Mismatch);
    assert_eq!(drift.schema.len(), 1, "{:?}", drift.schema);
    assert_eq!(drift.schema[0].column, "legacy");
    assert_eq!(differing(&drift), Vec::<String>::new());

    // Incremental: an order changes at the source. Until the next run its new version is
    // past the watermark: not yet loaded, and the difference is pending, not a mismatch.
    pg.batch_execute(
        "UPDATE orders SET total = total + 1, updated_at = now() + interval '1 day' WHERE order_id = 17",
    )
    .await
    .unwrap();
    let pending = w.validate(&orders).await;
    assert_eq!(pending.not_yet_loaded, Some(1));
    assert_eq!(pending.verdict(), Verdict::Pending, "{pending:#?}");
    // Up to the watermark the source no longer has the old version: one row, pending.
    let rows = pending.rows.as_ref().unwrap();
    assert_eq!(
        (rows.missing + rows.extra + rows.different, rows.verdict),
        (1, Verdict::Pending)
    );
    w.run(&orders).await;
    let caught_up = w.validate(&orders).await;
    assert_eq!(caught_up.not_yet_loaded, Some(0));
    assert_eq!(caught_up.verdict(), Verdict::Ok, "{caught_up:#?}");
}

#[tokio::test]
async fn validate_compares_a_mariadb_table_with_staging() {
    let db = MyTestDb::create("sfval").await;
    let mut conn = db.conn().await;
    create_shop_mysql(&mut conn, 1).await.unwrap();
    let tables = "  - source: shop
    table: orders
    primary_key: [order_id]
    partition: { column: order_id, chunks: 2 }
    target: {staging_table: STAGING.ORDERS}
";
    let w = world("myval", &mysql_config(&db, tables), true).await;
    let orders = w.h.table("orders").clone();
    w.run(&orders).await;
    let clean = w.validate(&orders).await;
    assert_eq!(clean.verdict(), Verdict::Ok, "{clean:#?}");
    let total: Option<String> = conn
        .query_first("SELECT CAST(SUM(total) AS CHAR) FROM orders")
        .await
        .unwrap();
    assert_eq!(metric(&clean, MetricKind::Sum, Some("total")).source, total);

    w.execute(
        "UPDATE STAGING.ORDERS SET \"item_count\" = \"item_count\" + 1 WHERE \"order_id\" = 3",
    )
    .await;
    let changed = w.validate(&orders).await;
    let found = differing(&changed);
    assert!(found.contains(&"sum(item_count)".to_owned()), "{found:?}");
    assert!(
        found.iter().all(|m| m.ends_with("(item_count)")),
        "{found:?}"
    );
    let rows = changed.rows.as_ref().unwrap();
    assert_eq!((rows.missing, rows.extra, rows.different), (0, 0, 1));
    assert_eq!(
        (
            rows.examples[0].key.clone(),
            rows.examples[0].columns.clone()
        ),
        (vec!["3".to_owned()], vec!["item_count".to_owned()])
    );
}
