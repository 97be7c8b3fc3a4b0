//! The crash matrix, local path: `sluice run` (S3 output on moto, Glue, the Snowflake
//! stand-in) is killed at every boundary of a run in turn (a failpoint that aborts the
//! process, as `kill -9` would), then run again as an operator would. After each recovery the
//! state is exactly right: STAGING equals the source, the table's directory holds exactly
//! the completed manifests' files, the watermark is the source's newest cursor, no lease is
//! left. The source changes before every round, so every round has rows to move.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use common::{SnowflakeScene, both, text};
use sluice::state::local::LocalStateStore;
use sluice::state::prelude::*;
use sluice_tests::crash::{ORDERS, POINTS, Recovery, change_orders, delete_orders, print_matrix};

/// `sluice run` of the matrix: the scene's run into Glue, with a local state directory.
fn matrix_run_args(scene: &SnowflakeScene) -> Vec<String> {
    let mut run = scene.run_args();
    run.extend(
        [
            "--glue-database",
            &scene.lake.database,
            "--state-dir",
            "state",
        ]
        .map(str::to_owned),
    );
    run
}

/// `sluice` with `failpoints` armed, if any.
fn crashing(
    scene: &SnowflakeScene,
    args: &[&str],
    failpoints: Option<&str>,
) -> std::process::Output {
    match failpoints {
        Some(failpoints) => scene.sluice(args, &[("FAILPOINTS", failpoints)]),
        None => scene.sluice(args, &[]),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(feature = "failpoints"),
    ignore = "needs the failpoints feature: cargo test --features sluice-cli/failpoints"
)]
async fn sluice_run_recovers_exactly_from_a_crash_at_every_boundary() {
    let scene = SnowflakeScene::applied("cli_matrix", ORDERS).await;
    let pg = scene.db.client().await;
    let run = matrix_run_args(&scene);
    let run: Vec<&str> = run.iter().map(String::as_str).collect();
    let sluice = |args: &[&str], failpoints: Option<&str>| crashing(&scene, args, failpoints);
    let state = LocalStateStore::open(scene.dir.path().join("state")).unwrap();
    let warehouse = scene.warehouse();
    let recovery = Recovery {
        pg: &pg,
        s3: &scene.lake.s3,
        bucket: &scene.lake.bucket,
        table_dir: "lake/raw/postgres/shop/public.orders".into(),
        keysets: false,
        warehouse: &warehouse,
        staging: format!("\"{}\".STAGING.SHOP_PUBLIC_ORDERS", scene.database),
        state: &state,
    };

    // The first load, whole.
    let first = sluice(&run, None);
    assert!(first.status.success(), "{}", both(&first));
    recovery.assert_exact().await;

    let mut matrix = Vec::new();
    for (round, (point, action)) in POINTS.iter().enumerate() {
        change_orders(&pg, round as i64 + 1).await;
        let crashed = sluice(&run, Some(&format!("{point}={action}")));
        let said = text(&crashed.stderr);
        assert!(
            !crashed.status.success() && said.contains("crashed:") && said.contains(point),
            "{point}: the run did not crash there:\n{}",
            both(&crashed)
        );
        let crashed_run = state.list_runs(None, 1).await.unwrap().remove(0);
        let rerun = sluice(&run, None);
        assert!(
            rerun.status.success(),
            "{point}: the rerun failed:\n{}",
            both(&rerun)
        );
        let completed = recovery.assert_exact().await;
        let latest = state.list_runs(None, 1).await.unwrap().remove(0);
        let outcome = if latest.run_id == crashed_run.run_id {
            let resumed = latest.resumptions.last().expect("a resumed run says so");
            format!(
                "crashed in {}; rerun resumed it ({} of {} chunks done) → {}; exact ({completed} completed runs)",
                crashed_run.status, resumed.chunks_done, resumed.chunks_total, latest.status
            )
        } else {
            format!(
                "crashed in {}; rerun started a new run → {}; exact ({completed} completed runs)",
                crashed_run.status, latest.status
            )
        };
        matrix.push((point.to_string(), outcome));
    }
    print_matrix("cli", &matrix);
}

/// The same matrix for key-set runs (`sluice run --keyset`): crashed at every boundary and run
/// again, STAGING loses exactly the rows the source lost since, the key-set directory holds
/// exactly the completed key sets' files, and the watermark and lease are as a load left them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(feature = "failpoints"),
    ignore = "needs the failpoints feature: cargo test --features sluice-cli/failpoints"
)]
async fn a_key_set_recovers_exactly_from_a_crash_at_every_boundary() {
    let orders = format!("{ORDERS}    deletes: {{mode: hard, max_fraction: 1, keyset: {{}}}}\n");
    let scene = SnowflakeScene::applied("cli_keys", &orders).await;
    let pg = scene.db.client().await;
    let run = matrix_run_args(&scene);
    let run: Vec<&str> = run.iter().map(String::as_str).collect();
    let mut keyset = run.clone();
    keyset.push("--keyset");
    let sluice = |args: &[&str], failpoints: Option<&str>| crashing(&scene, args, failpoints);
    let state = LocalStateStore::open(scene.dir.path().join("state")).unwrap();
    let warehouse = scene.warehouse();
    let recovery = Recovery {
        pg: &pg,
        s3: &scene.lake.s3,
        bucket: &scene.lake.bucket,
        table_dir: "lake/raw/_keysets/postgres/shop/public.orders".into(),
        keysets: true,
        warehouse: &warehouse,
        staging: format!("\"{}\".STAGING.SHOP_PUBLIC_ORDERS", scene.database),
        state: &state,
    };

    let first = sluice(&run, None);
    assert!(first.status.success(), "{}", both(&first));

    let mut matrix = Vec::new();
    for (round, (point, action)) in POINTS.iter().enumerate() {
        let deleted = delete_orders(&pg, round as i64 + 1).await;
        assert!(deleted > 0, "round {round} deletes orders");
        let crashed = sluice(&keyset, Some(&format!("{point}={action}")));
        let said = text(&crashed.stderr);
        assert!(
            !crashed.status.success() && said.contains("crashed:") && said.contains(point),
            "{point}: the key set did not crash there:\n{}",
            both(&crashed)
        );
        let crashed_run = state.list_runs(None, 1).await.unwrap().remove(0);
        assert!(crashed_run.keyset);
        let rerun = sluice(&keyset, None);
        assert!(
            rerun.status.success(),
            "{point}: the rerun failed:\n{}",
            both(&rerun)
        );
        let completed = recovery.assert_exact().await;
        let latest = state.list_runs(None, 1).await.unwrap().remove(0);
        assert!(latest.keyset && latest.status == sluice_core::RunStatus::Completed);
        let how = if latest.run_id == crashed_run.run_id {
            "rerun resumed it"
        } else {
            "rerun started a new key set"
        };
        matrix.push((
            point.to_string(),
            format!(
                "crashed in {}; {how} → {} ({deleted} deleted at the source); exact ({completed} completed key sets)",
                crashed_run.status, latest.status
            ),
        ));
    }
    print_matrix("cli key set", &matrix);
}
