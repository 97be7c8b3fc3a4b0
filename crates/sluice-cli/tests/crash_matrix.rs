//! The crash matrix, local path: `sluice run` (S3 output on moto, Glue, the Snowflake
//! stand-in) is killed at every boundary of a run in turn (a failpoint that aborts the
//! process, as `kill -9` would), then run again as an operator would. After each recovery the
//! state is exactly right: STAGING equals the source, the table's directory holds exactly
//! the completed manifests' files, the watermark is the source's newest cursor, no lease is
//! left. The source changes before every round, so every round has rows to move.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use common::{apply_args, both, output_of, setup_args, sluice_command, text};
use sluice::state::local::LocalStateStore;
use sluice::state::prelude::*;
use sluice_tests::crash::{ORDERS, POINTS, Recovery, change_orders, print_matrix};
use sluice_tests::snowflake::{ACCOUNT, KeyPair, StandIn, USER};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(feature = "failpoints"),
    ignore = "needs the failpoints feature: cargo test --features sluice-cli/failpoints"
)]
async fn sluice_run_recovers_exactly_from_a_crash_at_every_boundary() {
    let moto = sluice_tests::moto::MotoServer::shared();
    let lake = sluice_tests::s3::Lake::create(moto).await;
    let standin = StandIn::start(&sluice_tests::snowflake::Options {
        s3_endpoint: Some(moto.endpoint()),
        ..Default::default()
    });
    let db = sluice_tests::shop_db("cli_matrix").await;
    let pg = db.client().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("shop.yaml");
    std::fs::write(&config, sluice_tests::shop_config(&db, ORDERS)).unwrap();
    let key = dir.path().join("rsa_key.p8");
    std::fs::write(&key, &KeyPair::shared().private_pem).unwrap();
    let database = standin.config("climatrix").database.unwrap();
    let base_url = standin.base_url();
    let sluice = |args: &[&str], failpoints: Option<&str>| {
        let mut command = sluice_command(args, dir.path());
        moto.local_env(&mut command);
        if let Some(failpoints) = failpoints {
            command.env("FAILPOINTS", failpoints);
        }
        output_of(&mut command)
    };
    let apply = apply_args(
        key.to_str().unwrap(),
        &base_url,
        setup_args(
            config.to_str().unwrap(),
            &database,
            &lake.bucket,
            "lake/raw",
            "https://abc.execute-api.eu-west-1.amazonaws.com/prod/",
        ),
    );
    let applied = sluice(&apply, None);
    assert!(applied.status.success(), "{}", both(&applied));

    let output = format!("s3://{}/lake/raw", lake.bucket);
    let run: Vec<&str> = vec![
        "run",
        "--config",
        config.to_str().unwrap(),
        "--output",
        &output,
        "--glue-database",
        &lake.database,
        "--state-dir",
        "state",
        "--snowflake-account",
        ACCOUNT,
        "--snowflake-user",
        USER,
        "--snowflake-private-key-file",
        key.to_str().unwrap(),
        "--snowflake-url",
        &base_url,
        "--snowflake-database",
        &database,
    ];
    let state = LocalStateStore::open(dir.path().join("state")).unwrap();
    let warehouse = {
        let mut c = standin.config("climatrix_check");
        c.database = Some(database.clone());
        sluice::warehouse::snowflake::SnowflakeClient::new(c, KeyPair::shared().private_key())
            .unwrap()
    };
    let recovery = Recovery {
        pg: &pg,
        s3: &lake.s3,
        bucket: &lake.bucket,
        table_dir: "lake/raw/postgres/shop/public.orders".into(),
        warehouse: &warehouse,
        staging: format!("\"{database}\".STAGING.SHOP_PUBLIC_ORDERS"),
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
