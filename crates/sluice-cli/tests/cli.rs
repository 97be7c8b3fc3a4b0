//! The `sluice` binary as a user runs it: exit codes, messages, a real run against the local
//! PostgreSQL, and configuration and state in DynamoDB (a moto server).
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Output;

use common::{assert_contains, both, ok, sluice, sluice_command, text};

use sluice::state::dynamo::DynamoStateStore;
use sluice::state::prelude::*;
use sluice_core::ScalarValue;
use sluice_tests::moto::{MotoServer, unique_name};
use sluice_tests::{shop_config, shop_db};

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
    assert_contains(&text(&out.stderr), "cannot read nope.yaml");

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
    assert_contains(&text(&out.stderr), "--table public.nope (");
    assert_contains(
        &text(&out.stderr),
        "no table 'public.nope' is configured (tables: ",
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
    let db = shop_db("cli").await;
    let client = db.client().await;
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

/// The binary against a moto server: its endpoint, region and dummy credentials come from the
/// environment, as on a developer's machine pointed at a local stack.
fn sluice_aws(args: &[&str], cwd: &Path) -> Output {
    // Serial: a run's chunks write to one run item concurrently (see the fixture).
    common::sluice_on(MotoServer::shared_serial(), args, cwd, &[])
}

#[test]
fn config_push_dry_run_pull_and_check_against_dynamodb() {
    let dir = tempfile::tempdir().unwrap();
    let table = unique_name("config");
    let shop = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../infra/config/shop.yaml");
    let shop = shop.to_str().unwrap();
    let created = ok(&sluice_aws(
        &["dev", "create-tables", "--config-table", &table],
        dir.path(),
    ));
    assert!(created.contains(&format!("{table}: created")), "{created}");
    let again = ok(&sluice_aws(
        &["dev", "create-tables", "--config-table", &table],
        dir.path(),
    ));
    assert!(again.contains("exists already"), "{again}");

    let dry = ok(&sluice_aws(
        &[
            "config",
            "push",
            shop,
            "--config-table",
            &table,
            "--dry-run",
        ],
        dir.path(),
    ));
    assert!(dry.contains("+ add source shop"), "{dry}");
    assert!(dry.contains("+ add table shop/public.orders"), "{dry}");
    assert!(dry.contains("dry run"), "{dry}");
    let out = sluice_aws(&["config", "pull", "--config-table", &table], dir.path());
    assert_eq!(out.status.code(), Some(2), "a dry run writes nothing");
    assert!(text(&out.stderr).contains("holds no sources or tables"));

    ok(&sluice_aws(
        &["config", "push", shop, "--config-table", &table],
        dir.path(),
    ));
    let pulled = ok(&sluice_aws(
        &["config", "pull", "--config-table", &table],
        dir.path(),
    ));
    let expected = sluice_core::Config::from_yaml(&std::fs::read_to_string(shop).unwrap(), "shop")
        .unwrap()
        .to_yaml()
        .unwrap();
    assert_eq!(pulled, expected, "YAML → DynamoDB → YAML is identical");
    let checked = ok(&sluice_aws(
        &["config", "check", "--config-table", &table],
        dir.path(),
    ));
    assert!(
        checked.contains(&format!(
            "config table {table}: ok (2 source(s), 8 table(s))"
        )),
        "{checked}"
    );

    // A change shows as a diff; the dry run leaves the table as it was.
    let changed = dir.path().join("changed.yaml");
    std::fs::write(
        &changed,
        pulled.replacen("lookback: 15m", "lookback: 30m", 1),
    )
    .unwrap();
    let dry = ok(&sluice_aws(
        &[
            "config",
            "push",
            changed.to_str().unwrap(),
            "--config-table",
            &table,
            "--dry-run",
        ],
        dir.path(),
    ));
    assert!(dry.contains("~ change table shop/public.orders"), "{dry}");
    assert!(
        dry.contains("-   lookback: 15m") && dry.contains("+   lookback: 30m"),
        "{dry}"
    );
    assert!(!dry.contains("add table"), "{dry}");
    let unchanged = ok(&sluice_aws(
        &["config", "pull", "--config-table", &table],
        dir.path(),
    ));
    assert_eq!(unchanged, expected);

    // An invalid file is refused with its field, and nothing is written.
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        pulled.replacen("cursor: updated_at", "cursor: \"no such\"", 1),
    )
    .unwrap();
    let out = sluice_aws(
        &[
            "config",
            "push",
            bad.to_str().unwrap(),
            "--config-table",
            &table,
        ],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(2));
    assert_contains(
        &text(&out.stderr),
        "tables[0].load.cursor: 'no such' is not a valid identifier",
    );
    let unchanged = ok(&sluice_aws(
        &["config", "pull", "--config-table", &table],
        dir.path(),
    ));
    assert_eq!(unchanged, expected);

    // A table that does not exist is named as such, with the fix.
    let missing = unique_name("missing");
    let out = sluice_aws(&["status", "--state-table", &missing], dir.path());
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains(&format!("DynamoDB table {missing}")), "{err}");
    assert!(err.contains("the table does not exist"), "{err}");
    assert!(err.contains("sluice dev create-tables"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_status_and_watermark_with_config_and_state_in_dynamodb() {
    let db = shop_db("clidyn").await;
    let client = db.client().await;
    let dir = tempfile::tempdir().unwrap();
    let (state_table, config_table) = (unique_name("state"), unique_name("config"));
    let config = dir.path().join("shop.yaml");
    std::fs::write(
        &config,
        shop_config(
            &db,
            "  - source: shop\n    table: public.products\n\
             \x20 - source: shop\n    table: public.orders\n    primary_key: [order_id]\n    load: { mode: incremental, cursor: updated_at }\n    partition: { column: order_id, chunks: 3 }\n",
        ),
    )
    .unwrap();
    let cwd = dir.path();
    let tables = [
        "--state-table",
        state_table.as_str(),
        "--config-table",
        config_table.as_str(),
    ];
    ok(&sluice_aws(
        &[&["dev", "create-tables"][..], &tables].concat(),
        cwd,
    ));
    ok(&sluice_aws(
        &[
            "config",
            "push",
            config.to_str().unwrap(),
            "--config-table",
            &config_table,
        ],
        cwd,
    ));

    let out = ok(&sluice_aws(&[&["run"][..], &tables].concat(), cwd));
    assert!(out.contains("shop/public.orders"), "{out}");
    assert!(
        out.contains(&format!("sluice status --state-table {state_table}")),
        "{out}"
    );
    assert!(!cwd.join(".sluice").exists(), "no local state was written");
    let runs: serde_json::Value = serde_json::from_str(&ok(&sluice_aws(
        &["status", "--json", "--state-table", &state_table],
        cwd,
    )))
    .unwrap();
    let runs = runs.as_array().unwrap();
    assert_eq!(runs.len(), 2);
    assert!(runs.iter().all(|r| r["status"] == "COMPLETED"), "{runs:?}");
    let orders: i64 = client
        .query_one("SELECT count(*) FROM orders", &[])
        .await
        .unwrap()
        .get(0);
    let listed = ok(&sluice_aws(
        &[
            "status",
            "--table",
            "shop/public.orders",
            "--state-table",
            &state_table,
        ],
        cwd,
    ));
    let run_id = runs
        .iter()
        .find(|r| r["table_key"] == "shop/public.orders")
        .unwrap()["run_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        listed.contains(&run_id) && !listed.contains("public.products"),
        "{listed}"
    );
    let story = ok(&sluice_aws(
        &["status", &run_id, "--state-table", &state_table],
        cwd,
    ));
    assert!(story.contains("chunks    3 planned on order_id"), "{story}");
    assert!(
        story.contains(&format!("total     {orders} rows")),
        "{story}"
    );
    let max: chrono::NaiveDateTime = client
        .query_one("SELECT max(updated_at) FROM orders", &[])
        .await
        .unwrap()
        .get(0);
    let committed = ScalarValue::Timestamp(max).to_string();
    assert!(story.contains(&format!("table now {committed}")), "{story}");

    // The watermark guard: shown, refused without --yes, checked against the cursor's type.
    let set = |value: &str, yes: bool| {
        let mut args = vec![
            "watermark",
            "set",
            "--table",
            "public.orders",
            "--value",
            value,
        ];
        args.extend(tables);
        if yes {
            args.push("--yes");
        }
        sluice_aws(&args, cwd)
    };
    let out = set("2000-01-01 00:00:00", false);
    assert_eq!(out.status.code(), Some(2));
    assert_contains(
        &text(&out.stdout),
        &format!("{committed} → 2000-01-01 00:00:00.000000"),
    );
    assert_contains(&text(&out.stderr), "add --yes");
    let out = set("2000-01-01T00:00:00Z", true);
    assert_eq!(out.status.code(), Some(2));
    assert_contains(&text(&out.stderr), "is not a timestamp value");
    let state = DynamoStateStore::new(
        &MotoServer::shared_serial().sdk_config().await,
        &state_table,
    );
    let watermark = || async {
        state
            .table_state("shop/public.orders")
            .await
            .unwrap()
            .watermark
    };
    assert_eq!(
        watermark().await,
        Some(ScalarValue::Timestamp(max)),
        "refusals change nothing"
    );
    ok(&set("2000-01-01 00:00:00.5", true));
    assert_eq!(
        watermark().await.unwrap().to_string(),
        "2000-01-01 00:00:00.500000"
    );
    let mut reset = vec!["watermark", "reset", "--table", "public.orders", "--yes"];
    reset.extend(tables);
    ok(&sluice_aws(&reset, cwd));
    assert_eq!(watermark().await, None);
    let mut full = vec!["watermark", "reset", "--table", "public.products", "--yes"];
    full.extend(tables);
    let out = sluice_aws(&full, cwd);
    assert_eq!(out.status.code(), Some(2));
    assert_contains(&text(&out.stderr), "is not an incremental load");

    // A hand-edited item that breaks a rule stops the next run before anything starts.
    let sdk = MotoServer::shared_serial().sdk_config().await;
    let s = |v: &str| aws_sdk_dynamodb::types::AttributeValue::S(v.into());
    aws_sdk_dynamodb::Client::new(&sdk)
        .put_item()
        .table_name(&config_table)
        .item("pk", s("TABLE"))
        .item("sk", s("shop/public.orders"))
        .item("source", s("shop"))
        .item("table", s("public.orders"))
        .item(
            "load",
            aws_sdk_dynamodb::types::AttributeValue::M(
                [("mode".to_owned(), s("incremental"))].into(),
            ),
        )
        .send()
        .await
        .unwrap();
    let out = sluice_aws(&[&["run"][..], &tables].concat(), cwd);
    assert_eq!(out.status.code(), Some(2));
    assert_contains(
        &text(&out.stderr),
        &format!(
            "config table {config_table}: 1 problem(s) in the configuration:\n  - tables[shop/public.orders].load.cursor: required when load.mode = incremental"
        ),
    );
    assert_eq!(
        state.list_runs(None, 10).await.unwrap().len(),
        2,
        "no run was recorded"
    );
}

/// A `where` that is not one whole expression (here one that would close sluice's own
/// parenthesis and read the table once per chunk) fails `config check` naming the field, and
/// `sluice run` refuses it before anything is recorded.
#[test]
fn a_where_that_escapes_its_parentheses_is_refused_before_any_run() {
    let dir = tempfile::tempdir().unwrap();
    for (filter, reason) in [
        (
            "1=1) or (1=1",
            "must be exactly one boolean expression, but ')' follows",
        ),
        (
            "id > 0 ORDER BY id",
            "must be exactly one boolean expression, but 'ORDER' follows",
        ),
        ("(id > 0", "is not one SQL expression"),
    ] {
        let config = dir.path().join("bad.yaml");
        std::fs::write(
            &config,
            format!(
                "sources:\n  - name: shop\n    engine: postgres\n    connection:\n      url: postgres://postgres@127.0.0.1:5432/nowhere\ntables:\n  - source: shop\n    table: public.orders\n    where: \"{filter}\"\n    partition: {{column: order_id, chunks: 3}}\n"
            ),
        )
        .unwrap();
        let checked = sluice(&["config", "check", config.to_str().unwrap()], dir.path());
        assert_ne!(checked.status.code(), Some(0), "{filter}");
        assert_contains(&both(&checked), &format!("tables[0].where: {reason}"));
        let run = sluice(
            &[
                "run",
                "--config",
                config.to_str().unwrap(),
                "--output",
                "out",
                "--state-dir",
                "state",
            ],
            dir.path(),
        );
        assert_eq!(run.status.code(), Some(2), "{filter}: {}", both(&run));
        assert_contains(&both(&run), "tables[0].where");
        assert!(
            !dir.path().join("state/runs").exists()
                || std::fs::read_dir(dir.path().join("state/runs"))
                    .unwrap()
                    .count()
                    == 0,
            "{filter}: a run was recorded"
        );
    }
}

/// `sluice … | head`: a reader that went away ends the command quietly, by SIGPIPE as `ls`
/// and `git` end, not with a panic. The pipe's read end is closed before the command starts,
/// so its first line meets it.
#[test]
fn a_closed_pipe_ends_the_command_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ok.yaml");
    std::fs::write(
        &config,
        "sources:\n  - name: shop\n    engine: postgres\n    connection:\n      url: postgres://u@h/db\ntables:\n  - source: shop\n    table: public.orders\n",
    )
    .unwrap();
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = sluice_command(&["config", "check", config.to_str().unwrap()], dir.path())
        .stdin(std::process::Stdio::null())
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let said = text(&out.stderr);
    assert!(!said.contains("panicked"), "{said}");
    assert!(!said.contains("Broken pipe"), "{said}");
    // 13 is SIGPIPE (a shell reports 128 + 13 = 141).
    assert_eq!(
        out.status.signal(),
        Some(13),
        "ends by SIGPIPE: {:?} {said}",
        out.status
    );
}

/// `config check` shows gold in the levels a batch runs it in, and refuses gold procedures
/// that read each other in a cycle (naming it) or a table the configuration lacks, and gold
/// still listed under a table, with what to write instead.
#[test]
fn config_check_shows_gold_levels_and_refuses_cycles() {
    let dir = tempfile::tempdir().unwrap();
    let base = "sources:\n  - name: shop\n    engine: postgres\n    connection:\n      url: postgres://app@db/shop\n\
                tables:\n  - {source: shop, table: public.orders, primary_key: [id]}\n  \
                - {source: shop, table: public.customers, primary_key: [id]}\n";
    let write = |name: &str, text: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let good = write(
        "good.yaml",
        format!(
            "{base}gold:\n  - {{procedure: MART.TOP, inputs: [REVENUE]}}\n  \
             - {{procedure: REVENUE, inputs: [shop/public.orders, shop/public.customers]}}\n"
        ),
    );
    let out = ok(&sluice(
        &["config", "check", good.to_str().unwrap()],
        dir.path(),
    ));
    let revenue = out
        .find("│     1 ┆ REVENUE")
        .unwrap_or_else(|| panic!("{out}"));
    let top = out
        .find("│     2 ┆ MART.TOP")
        .unwrap_or_else(|| panic!("{out}"));
    assert!(revenue < top, "level 1 first: {out}");

    let cycle = write(
        "cycle.yaml",
        format!(
            "{base}gold:\n  - {{procedure: A, inputs: [shop/public.orders, B]}}\n  \
             - {{procedure: B, inputs: [A]}}\n  - {{procedure: C, inputs: [shop/public.nope]}}\n"
        ),
    );
    let out = sluice(&["config", "check", cycle.to_str().unwrap()], dir.path());
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert_contains(
        &err,
        "gold[2].inputs[0]: 'shop/public.nope' is neither a configured table",
    );
    let cycle_only = write(
        "cycle_only.yaml",
        format!(
            "{base}gold:\n  - {{procedure: A, inputs: [shop/public.orders, B]}}\n  \
             - {{procedure: B, inputs: [A]}}\n"
        ),
    );
    let out = sluice(
        &["config", "check", cycle_only.to_str().unwrap()],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(2));
    assert_contains(
        &text(&out.stderr),
        "gold[0].inputs: gold procedures read each other in a cycle (each reads the next): A -> B -> A",
    );

    let old = write(
        "old.yaml",
        base.replace(
            "primary_key: [id]}\n  -",
            "primary_key: [id], target: {gold_procedures: [GOLD.X]}}\n  -",
        ),
    );
    let out = sluice(&["config", "check", old.to_str().unwrap()], dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert_contains(
        &text(&out.stderr),
        "tables[0].target.gold_procedures: gold is no longer part of a table: declare it at the top level, run once per batch after all its inputs merged: gold: [{procedure: GOLD.X, inputs: [shop/public.orders]}]",
    );
}
