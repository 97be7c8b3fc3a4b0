//! Consistency while data changes under a running MariaDB extraction: while the plan's
//! transaction is held (a local run) every chunk reads on the planning connection, in its
//! snapshot; without it (Lambda) chunks read fresh snapshots bounded by the plan's cursor
//! window, and whatever changes meanwhile is picked up by the next run, never lost and never
//! doubled.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use mysql_async::prelude::Queryable;
use sluice::Quiet;
use sluice::sample_mysql::create_shop_mysql;
use sluice::source::mysql::MysqlSource;
use sluice_core::RunStatus;
use sluice_tests::mysql::*;
use sluice_tests::*;

fn meddling_harness(db: &MyTestDb, tables: &str, before_chunk: u32, sql: &str) -> Harness {
    let url = db.url.clone();
    let sql = sql.to_owned();
    Harness::with_sources(&mysql_config(db, tables), move |source| {
        let (url, sql) = (url.clone(), sql.clone());
        Arc::new(Meddler::new(
            Arc::new(MysqlSource::from_config(source, None).unwrap()),
            before_chunk,
            move || {
                let (url, sql) = (url.clone(), sql.clone());
                Box::pin(async move {
                    let mut conn = my_connect(&url).await;
                    conn.query_drop(&sql).await.unwrap();
                    let _ = conn.disconnect().await;
                })
            },
        ))
    })
}

const CHANGES: &str = "
    DELETE FROM orders WHERE order_id > 4900;
    UPDATE orders SET total = total + 1000, updated_at = updated_at + INTERVAL 400 DAY
     WHERE order_id BETWEEN 4000 AND 4100;
    INSERT INTO orders SELECT order_id + 10000, customer_id, 'new', currency, total, discount_rate,
                              ordered_at, shipped_on, item_count, updated_at + INTERVAL 500 DAY
      FROM orders WHERE order_id <= 10;
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_chunk_of_a_local_run_reads_the_plans_snapshot() {
    let db = MyTestDb::create("snap").await;
    let mut conn = db.conn().await;
    create_shop_mysql(&mut conn, 1).await.unwrap();
    let before = my_fingerprints(&mut conn, "orders", None).await;
    // The changes land between chunk 1 and chunk 2, in the key ranges chunks 2 and 3 are
    // about to read; max_concurrency 2 also checks that chunks waiting for the shared
    // connection do not deadlock.
    let h = meddling_harness(
        &db,
        "  - source: shop\n    table: orders\n    partition: { column: order_id, chunks: 4, max_concurrency: 2 }\n",
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
    let after = my_fingerprints(&mut conn, "orders", None).await;
    assert_ne!(before, after, "the changes did happen");
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
/// fresh snapshots on their own connections, bounded by the plan's cursor window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_shared_snapshot_changes_are_still_never_lost_or_doubled() {
    changes_are_never_lost_or_doubled(false).await;
}

async fn changes_are_never_lost_or_doubled(keep_snapshot: bool) {
    let db = MyTestDb::create("snapincr").await;
    let mut conn = db.conn().await;
    create_shop_mysql(&mut conn, 1).await.unwrap();
    let h = meddling_harness(
        &db,
        "  - source: shop\n    table: orders\n    primary_key: [order_id]\n    load: { mode: incremental, cursor: updated_at, lookback: 1m }\n    partition: { column: order_id, chunks: 4, max_concurrency: 1 }\n",
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
        assert_eq!(first_versions.len(), 5_000);
    } else {
        // Chunks 2 and 3 ran after the changes, in fresh snapshots: the deleted orders are
        // gone from them, and the updated ones are past the plan's bound.
        assert!(first_versions.len() < 5_000);
    }
    assert!(first_versions.iter().all(|(id, _)| *id <= 5_000));
    let mut merged: BTreeMap<i64, i64> = BTreeMap::new();
    for (id, stamp) in first_versions.into_iter().chain(second_versions) {
        let entry = merged.entry(id).or_insert(stamp);
        *entry = (*entry).max(stamp);
    }
    let now: Vec<(i64, i64)> = conn
        .query("SELECT order_id, TIMESTAMPDIFF(MICROSECOND, '1970-01-01', updated_at) FROM orders")
        .await
        .unwrap();
    let now: BTreeMap<i64, i64> = now.into_iter().collect();
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
