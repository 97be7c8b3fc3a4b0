//! Consistency while data changes under a running extraction: the chunks of a run read the
//! snapshot its plan was made in, and whatever changes meanwhile is picked up by the next run,
//! never lost and never doubled.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use sluice::Quiet;
use sluice::sample::create_shop_postgres;
use sluice::source::postgres::PostgresSource;
use sluice_core::RunStatus;
use sluice_tests::*;

fn meddling_harness(db: &TestDb, tables: &str, before_chunk: u32, sql: &str) -> Harness {
    let url = db.url.clone();
    let sql = sql.to_owned();
    Harness::with_sources(&shop_config(db, tables), move |source| {
        let (url, sql) = (url.clone(), sql.clone());
        Arc::new(Meddler::new(
            Arc::new(PostgresSource::from_config(source, None).unwrap()),
            before_chunk,
            move || {
                let (url, sql) = (url.clone(), sql.clone());
                Box::pin(async move {
                    connect(&url).await.batch_execute(&sql).await.unwrap();
                })
            },
        ))
    })
}

const CHANGES: &str = "
    DELETE FROM orders WHERE order_id > 4900;
    UPDATE orders SET total = total + 1000, updated_at = updated_at + interval '400 days'
     WHERE order_id BETWEEN 4000 AND 4100;
    INSERT INTO orders SELECT order_id + 10000, customer_id, 'new', currency, total, discount_rate,
                              ordered_at, shipped_on, item_count, updated_at + interval '500 days'
      FROM orders WHERE order_id <= 10;
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_chunk_of_a_run_reads_the_plans_snapshot() {
    let db = TestDb::create("snap").await;
    let client = db.client().await;
    create_shop_postgres(&client, "public", 1).await.unwrap();
    let before = pg_fingerprints(&client, "public.orders", None).await;
    // Chunks one at a time, and the changes land between chunk 0 and chunk 3, in the key
    // ranges chunks 2 and 3 are about to read.
    let h = meddling_harness(
        &db,
        "  - source: shop\n    table: public.orders\n    partition: { column: order_id, chunks: 4, max_concurrency: 1 }\n",
        2,
        CHANGES,
    );
    let record = h
        .pipeline
        .run_table(h.table("orders"), &Quiet)
        .await
        .unwrap();
    assert_eq!(record.status, RunStatus::Completed, "{:?}", record.error);
    assert_eq!(record.chunks.len(), 4);
    let after = pg_fingerprints(&client, "public.orders", None).await;
    assert_ne!(before, after, "the changes did happen");
    // The run saw the table exactly as it was when planned.
    let (rows, fingerprints) = arrow_fingerprints(&h.read_run(&record));
    assert_eq!(rows, before.0);
    for (column, expected) in &before.1 {
        fingerprints[column].assert_matches(expected, &format!("orders.{column}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_during_an_incremental_run_are_in_the_next_run_never_lost_or_doubled() {
    changes_are_never_lost_or_doubled(true).await;
}

/// As in Lambda, where the planning transaction ends before the chunks run: chunks read
/// fresh snapshots bounded by the plan's cursor window, and the guarantee still holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_shared_snapshot_changes_are_still_never_lost_or_doubled() {
    changes_are_never_lost_or_doubled(false).await;
}

async fn changes_are_never_lost_or_doubled(keep_snapshot: bool) {
    let db = TestDb::create("snapincr").await;
    let client = db.client().await;
    create_shop_postgres(&client, "public", 1).await.unwrap();
    let h = meddling_harness(
        &db,
        "  - source: shop\n    table: public.orders\n    primary_key: [order_id]\n    load: { mode: incremental, cursor: updated_at, lookback: 1m }\n    partition: { column: order_id, chunks: 4, max_concurrency: 1 }\n",
        2,
        CHANGES,
    );
    let orders = h.table("orders");
    let first = if keep_snapshot {
        h.pipeline.run_table(orders, &Quiet).await.unwrap()
    } else {
        let planned = h.pipeline.plan_run(orders).await.unwrap();
        drop(planned.snapshot);
        h.pipeline
            .execute_run(planned.record.run_id, &Quiet)
            .await
            .unwrap()
    };
    assert_eq!(first.status, RunStatus::Completed, "{:?}", first.error);
    let second = h.pipeline.run_table(orders, &Quiet).await.unwrap();
    assert_eq!(second.status, RunStatus::Completed, "{:?}", second.error);

    let first_versions = order_versions(&h, &first);
    let second_versions = order_versions(&h, &second);
    for (name, run) in [("first", &first_versions), ("second", &second_versions)] {
        let ids: BTreeSet<i64> = run.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids.len(), run.len(), "{name} run read a row twice");
    }
    if keep_snapshot {
        // The first run saw the plan-time table: 5,000 orders, none of the changes.
        assert_eq!(first_versions.len(), 5_000);
    }
    // New rows are past the plan's upper bound: never in the first run.
    assert!(first_versions.iter().all(|(id, _)| *id <= 5_000));
    // Merging both runs by key, keeping the latest cursor, gives exactly today's table.
    let mut merged: BTreeMap<i64, i64> = BTreeMap::new();
    for (id, stamp) in first_versions.into_iter().chain(second_versions) {
        let entry = merged.entry(id).or_insert(stamp);
        *entry = (*entry).max(stamp);
    }
    let now: BTreeMap<i64, i64> = client
        .query(
            "SELECT order_id, (extract(epoch from updated_at) * 1000000)::int8 FROM orders",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    // Deleted rows stay in the raw history (a delete is not a change a cursor can see); every
    // row that exists now is there in its current version.
    for (id, stamp) in &now {
        assert_eq!(merged.get(id), Some(stamp), "order {id} lost or stale");
    }
    let extra: Vec<i64> = merged
        .keys()
        .filter(|id| !now.contains_key(id))
        .copied()
        .collect();
    assert!(
        extra.iter().all(|id| (4901..=5000).contains(id)),
        "only deleted orders are extra: {extra:?}"
    );
    if keep_snapshot {
        assert_eq!(
            extra.len(),
            100,
            "the snapshot still had every deleted order"
        );
    }
}
