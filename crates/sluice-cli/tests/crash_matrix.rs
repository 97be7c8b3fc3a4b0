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

/// `args` run with a failpoint armed at `point` (`action`, e.g. `panic`): the process must
/// die there.
fn crash_at(scene: &SnowflakeScene, args: &[&str], point: &str, action: &str) {
    let crashed = crashing(scene, args, Some(&format!("{point}={action}")));
    let said = text(&crashed.stderr);
    assert!(
        !crashed.status.success() && said.contains("crashed:") && said.contains(point),
        "{point}: the run did not crash there:\n{}",
        both(&crashed)
    );
}

/// `args` run again after a crash at `point`, as an operator would: it must succeed.
fn rerun(scene: &SnowflakeScene, args: &[&str], point: &str) {
    let rerun = crashing(scene, args, None);
    assert!(
        rerun.status.success(),
        "{point}: the rerun failed:\n{}",
        both(&rerun)
    );
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
        crash_at(&scene, &run, point, action);
        let crashed_run = state.list_runs(None, 1).await.unwrap().remove(0);
        rerun(&scene, &run, point);
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
        crash_at(&scene, &keyset, point, action);
        let crashed_run = state.list_runs(None, 1).await.unwrap().remove(0);
        assert!(crashed_run.keyset);
        rerun(&scene, &keyset, point);
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

/// The same matrix for a cdc table (`load.mode: cdc`, issue 18): the binary crashes at every
/// boundary of a run reading the change log, then runs again. After each recovery STAGING
/// equals the source, no lease is left, and the replication slot is never ahead of the
/// table's watermark (what a later run still needs is never gone). Every round changes the
/// table (inserts, updates including a TOASTed column left alone, deletes) first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(feature = "failpoints"),
    ignore = "needs the failpoints feature: cargo test --features sluice-cli/failpoints"
)]
async fn a_cdc_table_recovers_exactly_from_a_crash_at_every_boundary() {
    use sluice_tests::private_pg::PrivatePg;
    let pg = PrivatePg::start_with(
        "host all all 127.0.0.1/32 trust",
        "wal_level = logical\nmax_replication_slots = 4\nmax_wal_senders = 4",
    );
    pg.psql(
        "CREATE TABLE public.docs (id bigint PRIMARY KEY, note text, amount numeric(12,2), body text);
         ALTER TABLE public.docs ALTER COLUMN body SET STORAGE EXTERNAL;
         INSERT INTO public.docs SELECT g, 'n', g, repeat('a', 3000) FROM generate_series(1, 40) g;
         CREATE ROLE sluice_cdc LOGIN REPLICATION;
         GRANT SELECT ON public.docs TO sluice_cdc;",
    );
    let url = pg.url("sluice_cdc");
    let scene =
        SnowflakeScene::applied_with("cli_cdc", |_| common::cdc_docs_config(&url, "", "")).await;
    let (client, connection) = tokio_postgres::connect(&pg.url("postgres"), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let config = scene.config.to_str().unwrap().to_owned();
    let setup = scene.sluice(
        &[
            "cdc",
            "setup",
            "--config",
            &config,
            "--url",
            &pg.url("postgres"),
        ],
        &[],
    );
    assert!(setup.status.success(), "{}", both(&setup));
    let run = matrix_run_args(&scene);
    let run: Vec<&str> = run.iter().map(String::as_str).collect();
    let sluice = |args: &[&str], failpoints: Option<&str>| crashing(&scene, args, failpoints);
    let state = LocalStateStore::open(scene.dir.path().join("state")).unwrap();
    let warehouse = scene.warehouse();
    let staging = format!("\"{}\".STAGING.SHOP_PUBLIC_DOCS", scene.database);
    let exact = || async {
        sluice_tests::snowflake::assert_staging_equals_source(
            &warehouse,
            &client,
            &staging,
            "public.docs",
        )
        .await;
        let table = state.table_state("shop/public.docs").await.unwrap();
        assert!(table.lease.is_none(), "a lease was left: {table:?}");
        let Some(sluice_core::ScalarValue::Int(watermark)) = table.watermark else {
            panic!("no cdc position: {table:?}");
        };
        let slot: String = client
            .query_one(
                "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = 'sluice_shop_public_docs'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        let slot = slot.parse::<sluice_core::cdc::pgoutput::Lsn>().unwrap().0;
        assert!(
            slot <= watermark as u64,
            "the slot ({slot}) is ahead of the watermark ({watermark})"
        );
    };

    let first = sluice(&run, None);
    assert!(first.status.success(), "{}", both(&first));
    exact().await;

    let mut matrix = Vec::new();
    for (round, (point, _)) in POINTS.iter().enumerate() {
        let round = round as i64 + 1;
        client
            .batch_execute(&format!(
                "INSERT INTO public.docs VALUES ({id}, 'new', {round}, repeat('b', 3000));
                 UPDATE public.docs SET note = 'round {round}' WHERE id % 7 = {r7};
                 UPDATE public.docs SET body = repeat('c', 3100) WHERE id % 11 = {r11};
                 DELETE FROM public.docs WHERE id = (SELECT min(id) FROM public.docs WHERE id % 5 = {r5});",
                id = 1000 + round,
                r7 = round % 7,
                r11 = round % 11,
                r5 = round % 5,
            ))
            .await
            .unwrap();
        // A change run writes one batch and one file: its first hit of each point crashes.
        crash_at(&scene, &run, point, "panic");
        let crashed_run = state.list_runs(None, 1).await.unwrap().remove(0);
        rerun(&scene, &run, point);
        exact().await;
        let latest = state.list_runs(None, 1).await.unwrap().remove(0);
        matrix.push((
            point.to_string(),
            format!(
                "crashed in {}; rerun {} → {}; exact",
                crashed_run.status,
                if latest.run_id == crashed_run.run_id {
                    "resumed it"
                } else {
                    "started a new run"
                },
                latest.status
            ),
        ));
    }
    print_matrix("cdc", &matrix);
}

/// The cdc matrix for a MariaDB table read from the binary log: the binary crashes at every
/// boundary of a run reading the log, then runs again. After each recovery STAGING equals the
/// source (every column's checksum), no lease is left, and the watermark never goes back.
/// Every round changes the table first (inserts, updates, deletes, a key update).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(feature = "failpoints"),
    ignore = "needs the failpoints feature: cargo test --features sluice-cli/failpoints"
)]
async fn a_binlog_cdc_table_recovers_exactly_from_a_crash_at_every_boundary() {
    use mysql_async::prelude::Queryable;
    use sluice_tests::private_mariadb::PrivateMariadb;
    let my = PrivateMariadb::start_with(&["--binlog-row-metadata=FULL"]);
    my.sql(
        "CREATE DATABASE shop CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;
         CREATE TABLE shop.docs (id bigint PRIMARY KEY, note varchar(100), amount decimal(12,2),
             body longtext, at datetime(6), flag enum('on','off'));
         INSERT INTO shop.docs SELECT seq, 'n', seq, REPEAT('a', 3000), '2024-02-29 01:02:03.456789', 'on'
             FROM shop.seq_1_to_40;
         CREATE USER 'sluice_cdc'@'127.0.0.1';
         GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO 'sluice_cdc'@'127.0.0.1';
         GRANT SELECT ON shop.* TO 'sluice_cdc'@'127.0.0.1';",
    );
    // No password: a config never holds one, and this server is the test's own.
    let url = format!("{}/shop", my.url("sluice_cdc"));
    let scene = SnowflakeScene::applied_with("cli_binlog", |_| {
        common::cdc_docs_config(&url, "", "")
            .replace("engine: postgres", "engine: mysql")
            .replace("table: public.docs", "table: shop.docs")
    })
    .await;
    let mut conn = mysql_async::Conn::from_url(format!("{}/shop", my.url("root")))
        .await
        .unwrap();
    let run = matrix_run_args(&scene);
    let run: Vec<&str> = run.iter().map(String::as_str).collect();
    let sluice = |args: &[&str], failpoints: Option<&str>| crashing(&scene, args, failpoints);
    let state = LocalStateStore::open(scene.dir.path().join("state")).unwrap();
    let warehouse = scene.warehouse();
    let staging = format!("\"{}\".STAGING.SHOP_SHOP_DOCS", scene.database);
    let mut last = 0;
    let mut exact = async |conn: &mut mysql_async::Conn| {
        sluice_tests::snowflake::assert_staging_equals_mysql(&warehouse, conn, &staging, "docs")
            .await;
        let table = state.table_state("shop/shop.docs").await.unwrap();
        assert!(table.lease.is_none(), "a lease was left: {table:?}");
        let Some(sluice_core::ScalarValue::Int(watermark)) = table.watermark else {
            panic!("no cdc position: {table:?}");
        };
        assert!(watermark >= last, "the watermark went back");
        last = watermark;
    };

    let first = sluice(&run, None);
    assert!(first.status.success(), "{}", both(&first));
    exact(&mut conn).await;

    let mut matrix = Vec::new();
    for (round, (point, _)) in POINTS.iter().enumerate() {
        let round = round as i64 + 1;
        conn.query_drop(format!(
            "INSERT INTO docs VALUES ({id}, 'new', {round}, REPEAT('b', 3000), NULL, 'off');
             UPDATE docs SET note = 'round {round}', flag = 'off' WHERE id % 7 = {r7};
             UPDATE docs SET body = REPEAT('c', 3100) WHERE id % 11 = {r11};
             DELETE FROM docs WHERE id = (SELECT min(id) FROM (SELECT id FROM docs WHERE id % 5 = {r5}) k);
             UPDATE docs SET id = id + 5000 WHERE id = (SELECT max(id) FROM (SELECT id FROM docs WHERE id < 1000) k);",
            id = 1000 + round,
            r7 = round % 7,
            r11 = round % 11,
            r5 = round % 5,
        ))
        .await
        .unwrap();
        crash_at(&scene, &run, point, "panic");
        rerun(&scene, &run, point);
        exact(&mut conn).await;
        let latest = state.list_runs(None, 1).await.unwrap().remove(0);
        assert!(
            latest.plan.as_ref().is_some_and(|p| p.reads_changes()),
            "{point}: the rerun did not read the binary log: {:?}",
            latest.plan
        );
        matrix.push((
            point.to_string(),
            format!("crashed; rerun {} from the log; exact", latest.status),
        ));
    }
    print_matrix("binlog cdc", &matrix);
}
