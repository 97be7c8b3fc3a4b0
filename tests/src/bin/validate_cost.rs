//! `scripts/bench --validate`: what `sluice validate` costs on a table of about a million rows.
//! Generates the shop sample in PostgreSQL (orders: 5,000 rows per unit of scale), loads
//! `public.orders` through S3 (moto) into the Snowflake stand-in, then validates it at each
//! level and prints the time, the source queries and the rows compared.
//!
//! Usage: validate_cost [SCALE]   (default 200: 1,000,000 orders)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use sluice::Quiet;
use sluice::sample::create_shop_postgres;
use sluice::sink::parquet::ParquetSettings;
use sluice::validate::{ValidateOptions, validate_table};
use sluice_core::validate::Level;
use sluice_tests::s3::S3Harness;
use sluice_tests::{TestDb, shop_config};

const ORDERS: &str = "  - source: shop
    table: public.orders
    primary_key: [order_id]
    partition: {column: order_id, chunks: 4}
";

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let scale: u32 = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("SCALE is a whole number"))
        .unwrap_or(200);
    let started = Instant::now();
    let db = TestDb::create("vcost").await;
    let pg = db.client().await;
    create_shop_postgres(&pg, "public", scale).await.unwrap();
    let rows: i64 = pg
        .query_one("SELECT count(*) FROM orders", &[])
        .await
        .unwrap()
        .get(0);
    println!(
        "source: public.orders, {rows} rows (generated in {:.1}s)",
        started.elapsed().as_secs_f64()
    );

    let h = S3Harness::new(&shop_config(&db, ORDERS), ParquetSettings::default()).await;
    let sluice_tests::snowflake::Warehoused {
        h,
        client,
        loader,
        standin: _standin,
    } = sluice_tests::snowflake::warehoused("vcost", h).await;
    let database = loader.warehouse().1.to_owned();
    let table = h.table("public.orders").clone();
    let loading = Instant::now();
    let record = h.pipeline.run_table(&table, &Quiet).await.unwrap();
    assert!(
        record.error.is_none(),
        "the load failed: {:?}",
        record.error
    );
    println!(
        "loaded into STAGING through the stand-in in {:.1}s",
        loading.elapsed().as_secs_f64()
    );

    let source = h.pipeline.source(&table).unwrap().clone();
    println!(
        "\n{:<8} {:>9} {:>8} {:>15} {:>14}  verdict",
        "level", "seconds", "ranges", "source queries", "rows compared"
    );
    for level in [Level::Schema, Level::Metrics, Level::Rows] {
        let timer = Instant::now();
        let v = validate_table(
            source.as_ref(),
            client.as_ref(),
            &database,
            h.pipeline.state().as_ref(),
            &table,
            ValidateOptions {
                level,
                ..ValidateOptions::default()
            },
        )
        .await
        .unwrap();
        let seconds = timer.elapsed().as_secs_f64();
        // The row level counts its own source queries (its extremes, one per range, and
        // one per range re-read to name columns); the levels before it issue the catalog
        // probe and (metrics) one aggregate query.
        let (ranges, queries, compared) = match &v.rows {
            Some(r) => (
                r.ranges.to_string(),
                r.source_queries.to_string(),
                r.rows_compared.to_string(),
            ),
            None => ("-".into(), "-".into(), "-".into()),
        };
        println!(
            "{:<8} {seconds:>9.1} {ranges:>8} {queries:>15} {compared:>14}  {:?}",
            format!("{level:?}").to_lowercase(),
            v.verdict()
        );
    }
}
