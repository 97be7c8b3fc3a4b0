//! Chunked extraction covers every row exactly once, whatever the partition column holds.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use sluice::Quiet;
use sluice_core::RunStatus;
use sluice_tests::*;

/// Each case: a table name and the rows it gets (`id`, then `k`, `k_ts` and `k_d` derived from
/// the same integer key expression, which may be NULL).
const CASES: &[(&str, &str)] = &[
    ("empty", "SELECT i, i FROM generate_series(1, 0) i"),
    ("one_row", "SELECT 1, 42"),
    (
        "all_null",
        "SELECT i, NULL::bigint FROM generate_series(1, 50) i",
    ),
    (
        "skewed",
        "SELECT i, CASE WHEN i = 1000 THEN 1000000000000 ELSE 1 END FROM generate_series(1, 1000) i",
    ),
    ("negative", "SELECT i, -i FROM generate_series(1, 500) i"),
    ("one_value", "SELECT i, 7 FROM generate_series(1, 300) i"),
    (
        "some_nulls",
        "SELECT i, CASE WHEN i % 3 = 0 THEN NULL ELSE i * 1000 - 500000 END FROM generate_series(1, 999) i",
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_cover_every_row_exactly_once() {
    let db = TestDb::create("chunking").await;
    let client = db.client().await;
    let mut tables = String::new();
    for (name, rows) in CASES {
        client
            .batch_execute(&format!(
                "CREATE TABLE {name} (id bigint PRIMARY KEY, k bigint, k_ts timestamp, k_d date);
                 INSERT INTO {name} (id, k) {rows};
                 UPDATE {name} SET k_ts = timestamp '2024-01-01' + k * interval '1 second',
                                   k_d = date '2024-01-01' + (k % 100000)::int;
                 ANALYZE {name};"
            ))
            .await
            .unwrap();
        for column in ["k", "k_ts", "k_d"] {
            tables.push_str(&format!(
                "  - source: shop\n    table: {name}_{column}\n    partition: {{ column: {column}, chunks: 4, max_concurrency: 3 }}\n"
            ));
            client
                .batch_execute(&format!(
                    "CREATE VIEW {name}_{column} AS SELECT * FROM {name}"
                ))
                .await
                .unwrap();
        }
    }
    let h = Harness::new(&shop_config(&db, &tables));
    for (name, _) in CASES {
        let expected: BTreeSet<i64> = client
            .query(&format!("SELECT id FROM {name}"), &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        for column in ["k", "k_ts", "k_d"] {
            let view = format!("{name}_{column}");
            let record = h.pipeline.run_table(h.table(&view), &Quiet).await.unwrap();
            assert_eq!(
                record.status,
                RunStatus::Completed,
                "{view}: {:?}",
                record.error
            );
            let ids = int64_values(&h.read_run(&record), "id");
            let got: BTreeSet<i64> = ids.iter().copied().collect();
            assert_eq!(ids.len(), got.len(), "{view}: a row was read twice");
            assert_eq!(got, expected, "{view}: rows missing or extra");
            let chunks = record.plan.as_ref().unwrap().chunks.len();
            assert!((1..=5).contains(&chunks), "{view}: {chunks} chunks");
        }
    }
}
