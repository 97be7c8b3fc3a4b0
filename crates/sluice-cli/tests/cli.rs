//! The `sluice` binary as a user runs it: exit codes, messages, and a real run against the
//! local PostgreSQL.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output};

use sluice_tests::{TestDb, shop_config};

fn sluice(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .current_dir(cwd)
        .env_remove("SLUICE_OUTPUT")
        .env_remove("SLUICE_STATE_DIR")
        .output()
        .expect("the sluice binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn config_check_lists_every_problem_with_its_field_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "sources:\n  - name: shop\n    engine: postgres\n    connection:\n      url: postgres://app:s3cret-pw@db/shop\n\
         tables:\n  - source: shop\n    table: public.orders\n    load: { mode: incremental }\n\
         \x20 - source: shop\n    table: public.items\n    where: \"1=1; drop table x\"\n",
    )
    .unwrap();
    let out = sluice(&["config", "check", bad.to_str().unwrap()], dir.path());
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("3 problem(s)"), "{err}");
    assert!(
        err.contains("sources[0].connection.url: must not contain a password"),
        "{err}"
    );
    assert!(
        err.contains("tables[0].load.cursor: required when load.mode = incremental"),
        "{err}"
    );
    assert!(
        err.contains("tables[1].where: must not contain ';'"),
        "{err}"
    );
    assert!(!err.contains("s3cret-pw"), "the password leaked: {err}");
}

#[test]
fn missing_files_and_unknown_tables_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = sluice(&["config", "check", "nope.yaml"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("cannot read nope.yaml"),
        "{}",
        text(&out.stderr)
    );

    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../infra/config/shop.yaml");
    let out = sluice(
        &[
            "run",
            "--config",
            config.to_str().unwrap(),
            "--table",
            "public.nope",
        ],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--table public.nope: no such table"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        !dir.path().join(".sluice").exists(),
        "a refused command changes nothing"
    );

    let out = sluice(&["status", "not-a-ulid"], dir.path());
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn config_check_warns_about_incremental_tables_without_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("nokey.yaml");
    std::fs::write(
        &file,
        "sources:\n  - name: shop\n    engine: postgres\n    connection:\n      url: postgres://app@db/shop\n\
         tables:\n  - source: shop\n    table: events\n    load: { mode: incremental, cursor: id, lookback: 100 }\n",
    )
    .unwrap();
    let out = sluice(&["config", "check", file.to_str().unwrap()], dir.path());
    assert_eq!(out.status.code(), Some(0));
    let err = text(&out.stderr);
    assert!(
        err.contains("warning: tables[0].primary_key: none given for an incremental load"),
        "{err}"
    );
}

#[test]
fn the_sample_config_is_valid() {
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../infra/config/shop.yaml");
    let out = sluice(
        &["config", "check", config.to_str().unwrap()],
        Path::new("."),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("ok (2 source(s), 8 table(s))"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_prints_a_summary_exits_one_when_a_table_fails_and_status_tells_the_story() {
    let db = TestDb::create("cli").await;
    let client = db.client().await;
    sluice::sample::create_shop_postgres(&client, "public", 1)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("shop.yaml");
    std::fs::write(
        &config,
        shop_config(
            &db,
            "  - source: shop\n    table: public.products\n  - source: shop\n    table: public.gone\n",
        ),
    )
    .unwrap();
    let out = sluice(&["run", "--config", config.to_str().unwrap()], dir.path());
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    assert!(stdout.contains("shop/public.products"), "{stdout}");
    assert!(stdout.contains("COMPLETED"), "{stdout}");
    assert!(
        stdout.contains("FAILED: table public.gone does not exist"),
        "{stdout}"
    );
    let count: i64 = client
        .query_one("SELECT count(*) FROM products", &[])
        .await
        .unwrap()
        .get(0);
    assert!(
        stdout.contains(&format!(" {count} ")),
        "row count {count} in {stdout}"
    );

    let out = sluice(&["status", "--json"], dir.path());
    assert_eq!(out.status.code(), Some(0));
    let runs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let runs = runs.as_array().unwrap();
    assert_eq!(runs.len(), 2);
    let completed = runs.iter().find(|r| r["status"] == "COMPLETED").unwrap();
    let run_id = completed["run_id"].as_str().unwrap();
    let out = sluice(&["status", run_id], dir.path());
    let story = text(&out.stdout);
    assert!(story.contains(&format!("run       {run_id}")), "{story}");
    assert!(
        story.contains(&format!("total     {count} rows, 1 files")),
        "{story}"
    );
    assert!(
        story.contains("manifest  postgres/shop/public.products/_manifests/"),
        "{story}"
    );
}
