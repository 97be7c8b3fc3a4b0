//! The crash matrix's shared parts: the boundaries a run is crashed at, the source changes
//! between rounds, and the exact state a recovered run must leave, checked against
//! PostgreSQL, S3, the warehouse and the state store, never against what sluice reported.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;

use sluice::state::StateStore;
use sluice::warehouse::snowflake::SnowflakeClient;
use sluice_core::RunStatus;
use sluice_core::manifest::Manifest;

use crate::Client;

/// Every boundary of a run, in order, with the `fail` action that crashes there: the
/// extract boundaries crash on their second pass, in the middle of a run's chunks.
pub const POINTS: &[(&str, &str)] = &[
    ("plan-after-record", "panic"),
    ("extract-after-batch", "1*off->panic"),
    ("extract-after-file", "1*off->panic"),
    ("extract-after-record", "1*off->panic"),
    ("finalize-before-manifest", "panic"),
    ("finalize-after-manifest", "panic"),
    ("finalize-before-catalog", "panic"),
    ("finalize-after-catalog", "panic"),
    ("finalize-before-copy", "panic"),
    ("finalize-after-copy", "panic"),
    ("finalize-before-merge", "panic"),
    ("finalize-after-merge", "panic"),
    ("finalize-before-watermark", "panic"),
    ("finalize-after-watermark", "panic"),
    ("finalize-before-lease-release", "panic"),
];

/// Deletes a few orders before round `round` of the key-set matrix, never the one with the
/// newest cursor (the watermark stays the source's newest).
pub async fn delete_orders(pg: &Client, round: i64) -> u64 {
    pg.execute(
        "DELETE FROM public.orders WHERE order_id % 53 = $1::bigint AND updated_at < (SELECT max(updated_at) FROM public.orders)",
        &[&round],
    )
    .await
    .unwrap()
}

/// The orders table of the matrix: incremental on `updated_at`, three chunks one at a time.
pub const ORDERS: &str = "  - source: shop\n    table: public.orders\n    primary_key: [order_id]\n    load: {mode: incremental, cursor: updated_at}\n    partition: {column: order_id, chunks: 3, max_concurrency: 1}\n";

/// Changes the source before round `round`: some orders change (a new total and a newer
/// cursor), a few new ones arrive, so every round's run has rows to move.
pub async fn change_orders(pg: &Client, round: i64) {
    pg.execute(
        "UPDATE public.orders SET total = total + 1, updated_at = (SELECT max(updated_at) FROM public.orders) + interval '1 second' WHERE order_id % 40 = $1::bigint",
        &[&round],
    )
    .await
    .unwrap();
    pg.execute(
        "INSERT INTO public.orders (order_id, customer_id, status, currency, total, discount_rate, ordered_at, shipped_on, item_count, updated_at) \
         SELECT order_id + 1000000 * $1::bigint, customer_id, status, currency, total, discount_rate, ordered_at, shipped_on, item_count, \
                (SELECT max(updated_at) FROM public.orders) + interval '2 seconds' \
         FROM public.orders WHERE order_id <= 3",
        &[&round],
    )
    .await
    .unwrap();
}

/// Where a recovered run is checked.
pub struct Recovery<'a> {
    pub pg: &'a Client,
    pub s3: &'a aws_sdk_s3::Client,
    pub bucket: &'a str,
    /// The table's directory under the bucket (`<prefix>/postgres/shop/public.orders`), or
    /// its key sets' (`<prefix>/_keysets/postgres/shop/public.orders`).
    pub table_dir: String,
    /// Whether `table_dir` holds key sets: the completed key-set runs' files are checked
    /// there, the loads' elsewhere.
    pub keysets: bool,
    pub warehouse: &'a SnowflakeClient,
    /// The quoted, qualified STAGING table.
    pub staging: String,
    pub state: &'a dyn StateStore,
}

impl Recovery<'_> {
    /// After recovery: STAGING equals the source (row count, per-column checksums, so no key
    /// twice); the data files under the table's directory are exactly those of the completed
    /// runs' manifests, and its manifests exactly theirs; the watermark is the source's newest
    /// cursor; no lease is left. Returns the number of completed runs.
    pub async fn assert_exact(&self) -> usize {
        crate::snowflake::assert_staging_equals_source(
            self.warehouse,
            self.pg,
            &self.staging,
            "public.orders",
        )
        .await;
        let runs = self
            .state
            .list_runs(Some("shop/public.orders"), 1000)
            .await
            .unwrap();
        let mut manifests = BTreeSet::new();
        let mut data = BTreeSet::new();
        for run in runs
            .iter()
            .filter(|r| r.status == RunStatus::Completed && r.keyset == self.keysets)
        {
            let key = run
                .manifest_key
                .clone()
                .expect("a completed run has a manifest");
            let body = self
                .s3
                .get_object()
                .bucket(self.bucket)
                .key(&key)
                .send()
                .await
                .unwrap_or_else(|e| panic!("manifest {key} of a completed run: {e}"))
                .body
                .collect()
                .await
                .unwrap()
                .into_bytes();
            let manifest: Manifest = serde_json::from_slice(&body).unwrap();
            data.extend(manifest.files.into_iter().map(|f| f.key));
            manifests.insert(key);
        }
        let mut found_manifests = BTreeSet::new();
        let mut found_data = BTreeSet::new();
        let mut found_stories = BTreeSet::new();
        for key in self.keys().await {
            if key.contains("/_manifests/") {
                found_manifests.insert(key);
            } else if key.contains("/_runs/") {
                found_stories.insert(key);
            } else {
                found_data.insert(key);
            }
        }
        // Every completed run told its story, and every story is an ended run's, saying how
        // it ended.
        let ended: BTreeMap<String, RunStatus> = runs
            .iter()
            .filter(|r| r.status.is_terminal() && r.keyset == self.keysets)
            .map(|r| {
                (
                    format!("{}/_runs/{}.json", self.table_dir, r.run_id),
                    r.status,
                )
            })
            .collect();
        for run in runs
            .iter()
            .filter(|r| r.status == RunStatus::Completed && r.keyset == self.keysets)
        {
            let key = format!("{}/_runs/{}.json", self.table_dir, run.run_id);
            assert!(
                found_stories.contains(&key),
                "no story of run {}",
                run.run_id
            );
        }
        for key in &found_stories {
            let status = ended
                .get(key)
                .unwrap_or_else(|| panic!("{key}: a story of no ended run"));
            let body = self
                .s3
                .get_object()
                .bucket(self.bucket)
                .key(key)
                .send()
                .await
                .unwrap()
                .body
                .collect()
                .await
                .unwrap()
                .into_bytes();
            let story: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(story["status"], status.to_string(), "{key}");
        }
        assert_eq!(found_data, data, "data files under {}", self.table_dir);
        assert_eq!(
            found_manifests, manifests,
            "manifests under {}",
            self.table_dir
        );
        let uploads = self
            .s3
            .list_multipart_uploads()
            .bucket(self.bucket)
            .prefix(format!("{}/", self.table_dir))
            .send()
            .await
            .unwrap();
        assert!(
            uploads.uploads().is_empty(),
            "unfinished uploads: {uploads:?}"
        );
        let table = self.state.table_state("shop/public.orders").await.unwrap();
        let newest: String = self
            .pg
            .query_one(
                "SELECT to_char(max(updated_at), 'YYYY-MM-DD HH24:MI:SS.US') FROM public.orders",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(
            table.watermark.map(|w| w.to_string()),
            Some(newest),
            "the watermark is the source's newest cursor"
        );
        assert_eq!(table.lease, None, "no lease is left");
        manifests.len()
    }

    async fn keys(&self) -> Vec<String> {
        let mut keys = Vec::new();
        let mut pages = self
            .s3
            .list_objects_v2()
            .bucket(self.bucket)
            .prefix(format!("{}/", self.table_dir))
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.unwrap();
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_owned)),
            );
        }
        keys
    }
}

/// Prints the matrix (point × path → outcome) where `cargo test` shows it: on the test
/// process's standard error, which the test harness does not capture.
pub fn print_matrix(path: &str, rows: &[(String, String)]) {
    let mut out = format!("\ncrash matrix, {path} path:\n");
    for (point, outcome) in rows {
        out.push_str(&format!("  {point:<32} {path:<10} {outcome}\n"));
    }
    let _ = std::io::stderr().write_all(out.as_bytes());
}
