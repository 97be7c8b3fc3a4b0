//! `sluice run` killed in the middle of a run, as an operator meets it: run again at once and
//! the run is taken over and resumed under its own id, keeping the chunks it had done, and
//! what the dead process left half-written is gone; a live holder is refused with the way
//! out, and `--takeover` is that way out. Every check compares with PostgreSQL.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{assert_contains, both, ok, sluice, sluice_command, text};
use sluice::state::local::LocalStateStore;
use sluice::state::prelude::*;
use sluice_core::manifest::Manifest;
use sluice_core::{RunRecord, RunStatus};

/// Six chunks of `public.orders`, one at a time, so a crash lands between known chunks.
const ORDERS: &str = "  - source: shop\n    table: public.orders\n    primary_key: [order_id]\n    load: {mode: incremental, cursor: updated_at}\n    partition: {column: order_id, chunks: 6, max_concurrency: 1}\n";

struct Scene {
    _dir: tempfile::TempDir,
    root: PathBuf,
    config: PathBuf,
}

impl Scene {
    fn new(db: &sluice_tests::TestDb) -> Scene {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let config = root.join("shop.yaml");
        std::fs::write(&config, sluice_tests::shop_config(db, ORDERS)).unwrap();
        Scene {
            _dir: dir,
            root,
            config,
        }
    }

    fn args<'a>(&'a self, extra: &[&'a str]) -> Vec<&'a str> {
        let mut args = vec![
            "run",
            "--config",
            self.config.to_str().unwrap(),
            "--output",
            "out",
            "--state-dir",
            "state",
        ];
        args.extend_from_slice(extra);
        args
    }

    /// `sluice run` in the background with `failpoints` armed.
    fn spawn(&self, failpoints: &str) -> Child {
        self.spawn_with(failpoints, &[])
    }

    fn spawn_with(&self, failpoints: &str, extra: &[&str]) -> Child {
        sluice_command(&self.args(extra), &self.root)
            .env("FAILPOINTS", failpoints)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    }

    fn store(&self) -> LocalStateStore {
        LocalStateStore::open(self.root.join("state")).unwrap()
    }

    async fn runs(&self) -> Vec<RunRecord> {
        self.store().list_runs(None, 100).await.unwrap()
    }

    /// Waits (at most a minute) until the only run has `chunks` chunks done.
    async fn wait_for_chunks(&self, chunks: usize) -> RunRecord {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let [run] = self.runs().await.as_slice()
                && run.chunks.len() >= chunks
            {
                return run.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no run reached {chunks} chunks: {:?}",
                self.runs().await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn out(&self) -> PathBuf {
        self.root.join("out")
    }
}

/// Every file in the table's date/hour partition directories, relative to the output root.
fn partition_files(out: &Path) -> Vec<String> {
    sluice_tests::data_files_under(out)
}

fn manifest_of(out: &Path, record: &RunRecord) -> Manifest {
    let key = record.manifest_key.as_ref().expect("a completed run");
    serde_json::from_slice(&std::fs::read(out.join(key)).unwrap()).unwrap()
}

/// The partition directories hold exactly the manifest's files, which hold exactly the
/// source's rows; the watermark is the source's newest cursor; no lease is left.
async fn assert_run_matches_source(scene: &Scene, pg: &sluice_tests::Client, run: &RunRecord) {
    let manifest = manifest_of(&scene.out(), run);
    let mut listed: Vec<String> = manifest.files.iter().map(|f| f.key.clone()).collect();
    listed.sort();
    assert_eq!(
        partition_files(&scene.out()),
        listed,
        "files where readers look"
    );
    let batches: Vec<_> = manifest
        .files
        .iter()
        .flat_map(|f| sluice_tests::read_parquet(&scene.out().join(&f.key)))
        .collect();
    sluice_tests::assert_same_as_source(pg, "public.orders", None, &batches).await;
    let state = scene
        .store()
        .table_state("shop/public.orders")
        .await
        .unwrap();
    let newest: String = pg
        .query_one(
            "SELECT to_char(max(updated_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') FROM public.orders",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let watermark = state.watermark.expect("a watermark").to_string();
    assert!(
        watermark.starts_with(&newest),
        "watermark {watermark} is not the source's newest cursor {newest}"
    );
    assert_eq!(state.lease, None, "no lease is left");
}

/// `kill -9` after three of six chunks, the fourth's file written but not recorded; then `sluice
/// run` again at once. Before, the rerun was refused for the lease's two hours and, once
/// past them, started a new run beside the dead one's files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(feature = "failpoints"),
    ignore = "needs the failpoints feature: cargo test --features sluice-cli/failpoints"
)]
async fn a_run_killed_mid_extraction_is_resumed_at_once_under_its_id() {
    let db = sluice_tests::shop_db("cli_kill9").await;
    let pg = db.client().await;
    let scene = Scene::new(&db);
    // Each chunk writes one file: the fourth is chunk 3's, complete but its chunk unrecorded.
    let mut child = scene.spawn("extract-after-file=3*off->sleep(600000)");
    let before = scene.wait_for_chunks(3).await;
    let run_id = before.run_id;
    let orphan_deadline = Instant::now() + Duration::from_secs(30);
    let orphans = loop {
        let orphans: Vec<String> = partition_files(&scene.out())
            .into_iter()
            .filter(|k| k.contains(&format!("part-{run_id}-0003-")))
            .collect();
        if !orphans.is_empty() {
            break orphans;
        }
        assert!(
            Instant::now() < orphan_deadline,
            "chunk 3 never wrote its file: {:?}",
            partition_files(&scene.out())
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    child.kill().unwrap();
    child.wait().unwrap();

    let rerun = sluice(&scene.args(&[]), &scene.root);
    let printed = both(&rerun);
    ok(&rerun);
    assert_contains(
        &printed,
        &format!("resuming run {run_id}: 3 of 6 chunks done"),
    );
    let runs = scene.runs().await;
    assert_eq!(runs.len(), 1, "no second run: {runs:?}");
    let run = &runs[0];
    assert_eq!((run.run_id, run.status), (run_id, RunStatus::Completed));
    assert_eq!(run.resumptions.len(), 1);
    assert_contains(&run.resumptions[0].reason, "is gone");
    // The chunks done before the crash were kept, not extracted again.
    for chunk in 0..3 {
        assert_eq!(run.chunks[&chunk], before.chunks[&chunk], "chunk {chunk}");
    }
    // What the dead process wrote of the chunk it never recorded was removed before the
    // chunk was extracted again.
    for key in &orphans {
        assert!(
            run.removed_files.contains(key),
            "{key} in {:?}",
            run.removed_files
        );
    }
    assert_run_matches_source(&scene, &pg, run).await;
    let story = ok(&sluice(
        &["status", &run_id.to_string(), "--state-dir", "state"],
        &scene.root,
    ));
    assert_contains(&story, "resumed");
    assert_contains(&story, &orphans[0]);
}

/// A live holder is refused, with what to do; `--takeover` without `--yes` off a terminal
/// changes nothing; with it, the run is taken and resumed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(feature = "failpoints"),
    ignore = "needs the failpoints feature: cargo test --features sluice-cli/failpoints"
)]
async fn a_live_holder_is_refused_and_takeover_takes_it() {
    let db = sluice_tests::shop_db("cli_takeover").await;
    let pg = db.client().await;
    let scene = Scene::new(&db);
    let mut child = scene.spawn("extract-after-record=1*off->sleep(600000)");
    let before = scene.wait_for_chunks(2).await;
    let run_id = before.run_id;

    let refused = sluice(&scene.args(&[]), &scene.root);
    assert_eq!(refused.status.code(), Some(1), "{}", both(&refused));
    let said = both(&refused);
    assert_contains(&said, &format!("is already running: {run_id}"));
    assert_contains(&said, &format!("pid {}", child.id()));
    assert_contains(&said, "--takeover");

    let unconfirmed = sluice(&scene.args(&["--takeover"]), &scene.root);
    assert_eq!(unconfirmed.status.code(), Some(2), "{}", both(&unconfirmed));
    assert_contains(&text(&unconfirmed.stderr), "add --yes to confirm");
    assert_eq!(
        scene.runs().await[0].resumptions.len(),
        0,
        "nothing changed"
    );

    let taken = sluice(&scene.args(&["--takeover", "--yes"]), &scene.root);
    ok(&taken);
    assert_contains(
        &both(&taken),
        &format!("resuming run {run_id}: 2 of 6 chunks done"),
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let runs = scene.runs().await;
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0].status, RunStatus::Completed);
    assert_contains(&runs[0].resumptions[0].reason, "--takeover");
    assert_run_matches_source(&scene, &pg, &runs[0]).await;
}

/// `--block-chunks` trades resumption for a cheaper read: killed after three of six block-range
/// chunks, the run cannot go on without its plan's snapshot, so the rerun fails it, saying
/// why, and the run after that extracts the table anew, exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(feature = "failpoints"),
    ignore = "needs the failpoints feature: cargo test --features sluice-cli/failpoints"
)]
async fn a_killed_block_chunk_run_fails_on_rerun_and_the_next_run_starts_anew() {
    let db = sluice_tests::shop_db("cli_kill9_blocks").await;
    let pg = db.client().await;
    let scene = Scene::new(&db);
    let mut child = scene.spawn_with(
        "extract-after-file=3*off->sleep(600000)",
        &["--block-chunks"],
    );
    let before = scene.wait_for_chunks(3).await;
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        before
            .plan
            .as_ref()
            .unwrap()
            .chunks
            .iter()
            .all(|c| matches!(c, sluice_core::plan::ChunkRange::Blocks { .. })),
        "{:?}",
        before.plan
    );

    let rerun = sluice(&scene.args(&["--block-chunks"]), &scene.root);
    let printed = both(&rerun);
    assert_eq!(rerun.status.code(), Some(1), "{printed}");
    assert_contains(&printed, "that snapshot has ended");
    assert_contains(&printed, "the run must be planned again");

    let again = sluice(&scene.args(&["--block-chunks"]), &scene.root);
    ok(&again);
    let runs = scene.runs().await;
    let done: Vec<_> = runs
        .iter()
        .filter(|r| r.status == RunStatus::Completed)
        .collect();
    assert_eq!(done.len(), 1, "{runs:?}");
    assert_ne!(done[0].run_id, before.run_id);
    assert_run_matches_source(&scene, &pg, done[0]).await;
}
