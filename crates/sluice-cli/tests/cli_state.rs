//! The `sluice` binary with its configuration, state and secrets in AWS (a moto server) and
//! real PostgreSQL servers: secrets never printed even with debug logs, the whole run story
//! as the state holds it, the watermark guards, bad source items, and `config pull` output
//! that pushes back as a no-op.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
mod common;

use std::path::Path;
use std::process::Output;

use common::{assert_contains, both, ok, text};

use aws_sdk_dynamodb::types::AttributeValue;
use parquet::file::reader::{FileReader, SerializedFileReader};
use sluice::state::dynamo::DynamoStateStore;
use sluice::state::prelude::*;
use sluice_core::{Config, RunId, RunRecord, RunStatus, ScalarValue};
use sluice_tests::moto::{MotoServer, unique_name};
use sluice_tests::private_pg::PrivatePg;
use sluice_tests::{TestDb, files_under, shop_config};

/// The moto every test here uses. Serial, because a run's chunks write to one run item
/// concurrently and moto's threaded server does not apply conditional writes atomically.
fn moto() -> &'static MotoServer {
    MotoServer::shared_serial()
}

/// The binary pointed at moto, plus `env`.
fn sluice_with(args: &[&str], cwd: &Path, env: &[(&str, &str)]) -> Output {
    common::sluice_on(moto(), args, cwd, env)
}

fn sluice(args: &[&str], cwd: &Path) -> Output {
    sluice_with(args, cwd, &[])
}

async fn create_secret(body: &str) -> String {
    let sdk = moto().sdk_config().await;
    aws_sdk_secretsmanager::Client::new(&sdk)
        .create_secret()
        .name(unique_name("db"))
        .secret_string(body)
        .send()
        .await
        .unwrap()
        .arn
        .unwrap()
}

fn secret_config(arn: &str) -> String {
    format!(
        "sources:\n  - name: shop\n    engine: postgres\n    connection:\n      secret_arn: {arn}\n\
         tables:\n  - source: shop\n    table: public.t\n"
    )
}

/// The password in the secrets below: distinctive, so any leak of it is found verbatim.
const SECRET_PASSWORD: &str = "Sup3r-S3cret-Value";

/// `sluice run` with debug logs of every crate (the SDKs' included): the setting under which
/// a leak through a log line would show.
fn run_with_debug_logs(dir: &Path, config: &Path) -> Output {
    let config = config.to_str().unwrap();
    let out_dir = dir.join("out");
    let state_dir = dir.join("state");
    sluice_with(
        &[
            "-v",
            "run",
            "--config",
            config,
            "--output",
            out_dir.to_str().unwrap(),
            "--state-dir",
            state_dir.to_str().unwrap(),
        ],
        dir,
        &[("SLUICE_LOG", "debug")],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_secret_stops_the_run_naming_the_field_never_the_password() {
    let dir = tempfile::tempdir().unwrap();
    // Valid JSON holding a password, but no host: only the field may be named.
    let arn = create_secret(&format!(
        r#"{{"port":5432,"username":"postgres","password":"{SECRET_PASSWORD}","dbname":"postgres"}}"#
    ))
    .await;
    let config = dir.path().join("secret.yaml");
    std::fs::write(&config, secret_config(&arn)).unwrap();

    let out = run_with_debug_logs(dir.path(), &config);
    let err = text(&out.stderr);
    // README: exit 2 when the command itself cannot start (bad config, unusable secret).
    assert_eq!(out.status.code(), Some(2), "{}", both(&out));
    assert!(
        err.contains(&format!(
            "error: source 'shop': secret {arn} has no 'host' field"
        )),
        "{err}"
    );
    // The premise: debug logging really was on, so a logged secret would be in stderr.
    assert!(err.contains("DEBUG"), "debug logs were not on: {err}");
    assert!(
        !both(&out).contains(SECRET_PASSWORD),
        "the password leaked: {}",
        both(&out)
    );
    assert!(
        !dir.path().join("state").exists(),
        "nothing ran, so no state was written"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_with_the_wrong_password_fails_the_table_without_printing_it() {
    // The shared PostgreSQL trusts loopback (any password works): this one checks passwords.
    let pg = PrivatePg::start("host all all 127.0.0.1/32 scram-sha-256");
    pg.psql("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1), (2);");
    let secret = |password: &str| {
        format!(
            r#"{{"host":"127.0.0.1","port":{},"username":"postgres","password":"{password}","dbname":"postgres","sslmode":"disable"}}"#,
            pg.port
        )
    };

    // Control: the same secret with the right password runs, so the failure below is the
    // password's and nothing else's.
    let good = tempfile::tempdir().unwrap();
    let config = good.path().join("secret.yaml");
    std::fs::write(
        &config,
        secret_config(&create_secret(&secret(sluice_tests::private_pg::PASSWORD)).await),
    )
    .unwrap();
    let out = run_with_debug_logs(good.path(), &config);
    assert_eq!(out.status.code(), Some(0), "{}", both(&out));

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("secret.yaml");
    std::fs::write(
        &config,
        secret_config(&create_secret(&secret(SECRET_PASSWORD)).await),
    )
    .unwrap();
    let out = run_with_debug_logs(dir.path(), &config);
    let stdout = text(&out.stdout);
    // README: exit 1 when a table failed.
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    assert!(
        stdout.contains("FAILED: source 'shop': authentication failed for user 'postgres'")
            && stdout.contains("(check the password or secret)"),
        "{stdout}"
    );
    assert!(
        text(&out.stderr).contains("DEBUG"),
        "debug logs were not on"
    );
    assert!(
        !both(&out).contains(SECRET_PASSWORD),
        "the password leaked: {}",
        both(&out)
    );
    // The run record keeps the error, and the state on disk never holds the password either.
    let state_files = files_under(&dir.path().join("state"));
    assert!(!state_files.is_empty(), "the failed run was recorded");
    for file in state_files {
        let content = std::fs::read_to_string(&file).unwrap();
        assert!(!content.contains(SECRET_PASSWORD), "{file}: {content}");
    }
}

/// `sluice`'s size format, written out here so the test states what the user should see.
fn human_bytes(bytes: u64) -> String {
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < 4 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", ["B", "KiB", "MiB", "GiB", "TiB"][unit])
}

/// The cells of each body row of the first table in `text` (comfy-table's UTF-8 borders).
fn table_rows(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .filter(|l| l.starts_with('│'))
        .skip(1) // the header
        .map(|l| {
            let cells: Vec<String> = l.split(['│', '┆']).map(|c| c.trim().to_owned()).collect();
            cells[1..cells.len() - 1].to_vec()
        })
        .collect()
}

/// What the Parquet files of `run_id` under `dir` hold, per chunk: (rows, files, bytes), read
/// from the files themselves (`part-<run>-<chunk>-<part>.parquet`).
fn files_per_chunk(dir: &Path, run_id: RunId) -> BTreeMap<u32, (u64, usize, u64)> {
    let prefix = format!("part-{run_id}-");
    let mut chunks = BTreeMap::new();
    for file in files_under(dir) {
        let path = Path::new(&file);
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        let Some(rest) = name.strip_prefix(&prefix) else {
            continue;
        };
        let chunk: u32 = rest[..4].parse().unwrap();
        let reader = SerializedFileReader::new(std::fs::File::open(path).unwrap()).unwrap();
        let rows = u64::try_from(reader.metadata().file_metadata().num_rows()).unwrap();
        let bytes = std::fs::metadata(path).unwrap().len();
        let entry = chunks.entry(chunk).or_insert((0, 0, 0));
        entry.0 += rows;
        entry.1 += 1;
        entry.2 += bytes;
    }
    chunks
}

async fn count(db: &TestDb, sql: &str) -> u64 {
    let n: i64 = db.client().await.query_one(sql, &[]).await.unwrap().get(0);
    u64::try_from(n).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_tells_the_story_the_source_and_the_state_agree_on() {
    let db = TestDb::create("status").await;
    // `events`: an incremental table where every 7th row has a NULL cursor (skipped, counted
    // as a warning). `broken`: a view whose planning succeeds (it reads only `id`) but whose
    // extraction fails in PostgreSQL (division by zero at id 80): a run FAILED mid-extraction,
    // as when a table is dropped between planning and extraction, without needing a hook
    // between the two inside the binary.
    db.client()
        .await
        .batch_execute(
            "CREATE TABLE events (id bigint PRIMARY KEY, updated_at timestamp, payload text);
             INSERT INTO events SELECT g,
                 CASE WHEN g % 7 = 0 THEN NULL ELSE timestamp '2024-01-01' + g * interval '1 minute' END,
                 repeat('x', g % 50)
               FROM generate_series(1, 3000) g;
             CREATE TABLE base (id bigint PRIMARY KEY, d int NOT NULL);
             INSERT INTO base SELECT g, g - 80 FROM generate_series(1, 100) g;
             CREATE VIEW broken AS SELECT id, 100 / d AS q FROM base;",
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    let config = cwd.join("status.yaml");
    std::fs::write(
        &config,
        shop_config(
            &db,
            "  - source: shop\n    table: public.events\n    primary_key: [id]\n\
             \x20   load: { mode: incremental, cursor: updated_at }\n    partition: { column: id, chunks: 3 }\n\
             \x20 - source: shop\n    table: public.broken\n    partition: { column: id, chunks: 2 }\n",
        ),
    )
    .unwrap();
    let state_table = unique_name("state");
    ok(&sluice(
        &["dev", "create-tables", "--state-table", &state_table],
        cwd,
    ));
    let out_dir = cwd.join("out");
    let out = sluice(
        &[
            "run",
            "--config",
            config.to_str().unwrap(),
            "--output",
            out_dir.to_str().unwrap(),
            "--state-table",
            &state_table,
        ],
        cwd,
    );
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));

    let state = DynamoStateStore::new(&moto().sdk_config().await, &state_table);
    let only_run = |key: &'static str| {
        let state = &state;
        async move {
            let runs = state.list_runs(Some(key), 10).await.unwrap();
            assert_eq!(runs.len(), 1, "{key}: {runs:?}");
            runs.into_iter().next().unwrap()
        }
    };
    let status = |run_id: RunId, json: bool| {
        let run_id = run_id.to_string();
        let mut args = vec!["status", run_id.as_str(), "--state-table", &state_table];
        if json {
            args.push("--json");
        }
        ok(&sluice(&args, cwd))
    };

    // The completed run.
    let events: RunRecord = only_run("shop/public.events").await;
    assert_eq!(events.status, RunStatus::Completed, "{:?}", events.error);
    let story = status(events.run_id, false);

    // Phases with their timings, as recorded.
    assert!(
        events.phases.contains_key(&RunStatus::Planned)
            && events.phases.contains_key(&RunStatus::Extracting),
        "{:?}",
        events.phases
    );
    let phases: Vec<String> = events
        .phases
        .iter()
        .map(|(phase, timing)| {
            let seconds = timing
                .seconds()
                .expect("a completed run's phases all ended");
            format!("{phase} {seconds:.3}s")
        })
        .collect();
    assert!(
        story.contains(&format!("\nphases    {}\n", phases.join(" → "))),
        "{story}"
    );

    // One table row per chunk: rows, files and bytes as the Parquet files on disk have them.
    let on_disk = files_per_chunk(&out_dir, events.run_id);
    let planned = events.plan.as_ref().unwrap().chunks.len();
    assert_eq!(planned, 3, "the configured chunks");
    let rows = table_rows(&story);
    assert_eq!(rows.len(), planned, "{story}");
    for row in &rows {
        let chunk: u32 = row[0].parse().unwrap();
        let (disk_rows, disk_files, disk_bytes) = on_disk.get(&chunk).copied().unwrap_or_default();
        assert_eq!(
            row[1..4],
            [
                disk_rows.to_string(),
                disk_files.to_string(),
                human_bytes(disk_bytes)
            ],
            "chunk {chunk} in {story}"
        );
        let recorded = &events.chunks[&chunk];
        assert_eq!(
            (recorded.rows, recorded.files.len(), recorded.bytes),
            (disk_rows, disk_files, disk_bytes),
            "chunk {chunk} in the state"
        );
    }
    let read = count(
        &db,
        "SELECT count(*) FROM events WHERE updated_at IS NOT NULL",
    )
    .await;
    let disk_total: u64 = on_disk.values().map(|c| c.0).sum();
    assert_eq!(disk_total, read, "every row with a cursor was written");
    let (files, bytes) = on_disk
        .values()
        .fold((0, 0), |(f, b), c| (f + c.1, b + c.2));
    assert!(
        story.contains(&format!(
            "\ntotal     {read} rows, {files} files, {}\n",
            human_bytes(bytes)
        )),
        "{story}"
    );

    // The NULL cursors skipped, counted by PostgreSQL.
    let nulls = count(&db, "SELECT count(*) FROM events WHERE updated_at IS NULL").await;
    assert!(nulls > 0);
    let warning = story
        .lines()
        .find(|l| l.starts_with("warning   updated_at: rows with a NULL cursor not read"))
        .unwrap_or_else(|| panic!("no NULL-cursor warning in {story}"));
    assert!(warning.ends_with(&format!(": {nulls}")), "{warning}");
    assert!(!story.contains("\nerror "), "{story}");

    // --json: the state's record, whose rows PostgreSQL counted.
    let json: serde_json::Value = serde_json::from_str(&status(events.run_id, true)).unwrap();
    assert_eq!(json, serde_json::to_value(&events).unwrap());
    assert_eq!(json["status"], "COMPLETED");
    let chunks = json["chunks"].as_object().unwrap();
    assert_eq!(chunks.len(), planned);
    let json_rows: u64 = chunks.values().map(|c| c["rows"].as_u64().unwrap()).sum();
    assert_eq!(json_rows, read);
    for (chunk, c) in chunks {
        assert_eq!(
            c["rows"].as_u64().unwrap(),
            on_disk[&chunk.parse::<u32>().unwrap()].0
        );
    }

    // The failed run: its error line, as recorded, in PostgreSQL's words.
    let broken = only_run("shop/public.broken").await;
    assert_eq!(broken.status, RunStatus::Failed);
    let error = broken.error.clone().expect("a failed run keeps its error");
    assert_eq!(error.phase, RunStatus::Extracting, "{error:?}");
    assert!(error.message.contains("division by zero"), "{error:?}");
    let chunk = error.chunk.expect("the chunk that failed");
    let story = status(broken.run_id, false);
    assert!(story.contains("\nstatus    FAILED\n"), "{story}");
    assert!(
        story.contains(&format!(
            "\nerror     in EXTRACTING, chunk {chunk}: {}\n",
            error.message
        )),
        "{story}"
    );
    // The chunks that finished before the failure are still told, as the state holds them.
    let rows = table_rows(&story);
    assert_eq!(rows.len(), broken.chunks.len(), "{story}");
    for row in &rows {
        let recorded = &broken.chunks[&row[0].parse::<u32>().unwrap()];
        assert_eq!(
            row[1..4],
            [
                recorded.rows.to_string(),
                recorded.files.len().to_string(),
                human_bytes(recorded.bytes)
            ],
            "{story}"
        );
    }
    let json: serde_json::Value = serde_json::from_str(&status(broken.run_id, true)).unwrap();
    assert_eq!(json, serde_json::to_value(&broken).unwrap());
    assert_eq!(json["status"], "FAILED");
    assert_eq!(json["error"]["chunk"], chunk);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watermark_changes_need_yes_and_wait_for_a_running_table() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    let config = cwd.join("wm.yaml");
    // The watermark commands read the config and the state only; the source is never reached.
    std::fs::write(
        &config,
        "sources:\n  - name: shop\n    engine: postgres\n    connection:\n      url: postgres://app@127.0.0.1:1/shop\n\
         tables:\n  - source: shop\n    table: public.events\n    primary_key: [id]\n    load: { mode: incremental, cursor: id }\n",
    )
    .unwrap();
    let state_table = unique_name("state");
    ok(&sluice(
        &["dev", "create-tables", "--state-table", &state_table],
        cwd,
    ));
    let command = |args: &[&str]| {
        let mut all = vec!["watermark"];
        all.extend_from_slice(args);
        all.extend([
            "--table",
            "public.events",
            "--config",
            config.to_str().unwrap(),
            "--state-table",
            &state_table,
        ]);
        sluice(&all, cwd)
    };
    let state = DynamoStateStore::new(&moto().sdk_config().await, &state_table);
    let key = "shop/public.events";
    let watermark = || async { state.table_state(key).await.unwrap().watermark };

    ok(&command(&[
        "set", "--value", "42", "--kind", "int", "--yes",
    ]));
    assert_eq!(watermark().await, Some(ScalarValue::Int(42)));

    // reset without --yes shows the change, refuses (exit 2) and changes nothing.
    let out = command(&["reset"]);
    assert_eq!(out.status.code(), Some(2), "{}", both(&out));
    assert_contains(
        &text(&out.stdout),
        &format!("watermark of {key} in DynamoDB table {state_table}: 42 → (none)"),
    );
    assert_contains(
        &text(&out.stderr),
        "not changed: add --yes to change the watermark",
    );
    assert_eq!(watermark().await, Some(ScalarValue::Int(42)));

    // A run holds the lease: set and reset are refused naming the run, and change nothing.
    let running = RunId::new();
    let now = chrono::Utc::now();
    state
        .acquire_lease(key, running, now, now + chrono::Duration::hours(1))
        .await
        .unwrap();
    for args in [
        &["set", "--value", "7", "--yes"][..],
        &["reset", "--yes"][..],
    ] {
        let out = command(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", both(&out));
        assert!(
            text(&out.stderr).contains(&format!(
                "table {key} is running (run {running}); change its watermark once that run has finished"
            )),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert_eq!(watermark().await, Some(ScalarValue::Int(42)), "{args:?}");
        let lease = state.table_state(key).await.unwrap().lease.unwrap();
        assert_eq!(lease.run_id, running, "the run keeps its lease");
    }

    // Once the run let go, the same reset goes through: the lease was the only obstacle.
    state.release_lease(key, running).await.unwrap();
    ok(&command(&["reset", "--yes"]));
    assert_eq!(watermark().await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_written_bad_source_item_stops_the_run_naming_the_item_and_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    let (state_table, config_table) = (unique_name("state"), unique_name("config"));
    let tables = [
        "--state-table",
        state_table.as_str(),
        "--config-table",
        config_table.as_str(),
    ];
    ok(&sluice(
        &[&["dev", "create-tables"][..], &tables].concat(),
        cwd,
    ));
    let config = cwd.join("good.yaml");
    std::fs::write(
        &config,
        "sources:\n  - name: shop\n    engine: postgres\n    connection:\n      url: postgres://app@127.0.0.1:1/shop\n\
         tables:\n  - source: shop\n    table: public.events\n",
    )
    .unwrap();
    ok(&sluice(
        &[
            "config",
            "push",
            config.to_str().unwrap(),
            "--config-table",
            &config_table,
        ],
        cwd,
    ));
    let client = aws_sdk_dynamodb::Client::new(&moto().sdk_config().await);
    let s = |v: &str| AttributeValue::S(v.into());
    let connection = |url: &str| AttributeValue::M([("url".to_owned(), s(url))].into());
    let state = DynamoStateStore::new(&moto().sdk_config().await, &state_table);
    let item_password = "Hunter2-Item-Pw";

    let cases: [(Vec<(&str, AttributeValue)>, String); 4] = [
        // A value of the wrong kind: a parse error at the field.
        (
            vec![
                ("name", s("shop")),
                ("engine", s("oracle")),
                ("connection", connection("postgres://app@127.0.0.1:1/shop")),
            ],
            "item source shop: sources[shop].engine: unknown variant `oracle`".to_owned(),
        ),
        // A required field missing: the item itself is named.
        (
            vec![("name", s("shop")), ("engine", s("postgres"))],
            "item source shop: sources[shop]: missing field `connection`".to_owned(),
        ),
        // Valid shape, broken rule (a password in the URL): validation names the item by key,
        // and does not repeat the password.
        (
            vec![
                ("name", s("shop")),
                ("engine", s("postgres")),
                (
                    "connection",
                    connection(&format!("postgres://app:{item_password}@127.0.0.1:1/shop")),
                ),
            ],
            format!(
                "config table {config_table}: 1 problem(s) in the configuration:\n  - sources[shop].connection.url: must not contain a password"
            ),
        ),
        // The key and the fields disagree.
        (
            vec![
                ("name", s("elsewhere")),
                ("engine", s("postgres")),
                ("connection", connection("postgres://app@127.0.0.1:1/shop")),
            ],
            "sources[shop].name: the item's key (sk) is 'shop' but its fields name 'elsewhere'"
                .to_owned(),
        ),
    ];
    for (fields, expected) in cases {
        let mut put = client
            .put_item()
            .table_name(&config_table)
            .item("pk", s("SOURCE"))
            .item("sk", s("shop"))
            .item("ordinal", AttributeValue::N("0".into()));
        for (name, value) in fields {
            put = put.item(name, value);
        }
        put.send().await.unwrap();
        let out = sluice(&[&["run"][..], &tables].concat(), cwd);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{expected}: {}", both(&out));
        assert!(
            err.contains(&format!("config table {config_table}")),
            "{err}"
        );
        assert!(err.contains(&expected), "expected {expected:?} in {err}");
        assert!(!both(&out).contains(item_password), "{}", both(&out));
        assert!(
            state.list_runs(None, 10).await.unwrap().is_empty(),
            "no run was recorded"
        );
    }
}

#[test]
fn config_pull_prints_canonical_yaml_that_pushes_back_as_a_no_op() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    let table = unique_name("config");
    ok(&sluice(
        &["dev", "create-tables", "--config-table", &table],
        cwd,
    ));
    // Written the way people write YAML: comments, blank lines, flow style, quoting.
    let authored = "# the shop database\n\
        sources:\n\n\
        \x20 - name: shop   # main\n\
        \x20   engine: postgres\n\
        \x20   connection: { url: \"postgres://app@127.0.0.1:1/shop\", sslmode: require }\n\n\
        tables:\n\
        \x20 - { source: shop, table: public.products }\n\n\
        \x20 - source: shop\n\
        \x20   table: public.orders\n\
        \x20   primary_key: [order_id]\n\
        \x20   load: { mode: incremental, cursor: updated_at, lookback: 15m }\n\
        \x20   partition: { column: order_id, chunks: 4 }\n";
    let file = cwd.join("authored.yaml");
    std::fs::write(&file, authored).unwrap();
    let file = file.to_str().unwrap();
    ok(&sluice(
        &["config", "push", file, "--config-table", &table],
        cwd,
    ));

    let pulled = ok(&sluice(&["config", "pull", "--config-table", &table], cwd));
    // Equal as a configuration (same sources and tables, in the same order)…
    assert_eq!(
        Config::from_yaml(&pulled, "pulled").unwrap(),
        Config::from_yaml(authored, "authored").unwrap()
    );
    // …but not the same text: the layout is sluice's own (what README says).
    assert!(
        !pulled.contains('#') && !pulled.contains("\n\n"),
        "{pulled}"
    );

    // Pushing the pulled file back changes nothing: the dry run says so, and so does a push.
    let pulled_file = cwd.join("pulled.yaml");
    let out = sluice(
        &[
            "config",
            "pull",
            "--config-table",
            &table,
            "--output",
            pulled_file.to_str().unwrap(),
        ],
        cwd,
    );
    ok(&out);
    assert_eq!(std::fs::read_to_string(&pulled_file).unwrap(), pulled);
    let pulled_file = pulled_file.to_str().unwrap();
    let dry = ok(&sluice(
        &[
            "config",
            "push",
            pulled_file,
            "--config-table",
            &table,
            "--dry-run",
        ],
        cwd,
    ));
    assert_eq!(
        dry,
        format!("no changes\ndry run: config table {table} was not changed\n")
    );
    let pushed = ok(&sluice(
        &["config", "push", pulled_file, "--config-table", &table],
        cwd,
    ));
    assert!(pushed.starts_with("no changes\n"), "{pushed}");
    assert_eq!(
        ok(&sluice(&["config", "pull", "--config-table", &table], cwd)),
        pulled
    );
}

/// `sluice status` on a DynamoDB state table ends with where its history ends (runs expire a
/// retention after they started: the deployment's RunRetention, here `--run-retention` /
/// `SLUICE_RUN_RETENTION`), and a run past its expiry that DynamoDB has not deleted yet is not
/// shown. JSON output stays one document; local state keeps everything and says nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_says_where_dynamodb_history_ends_and_hides_runs_past_their_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    let state_table = unique_name("state");
    ok(&sluice(
        &["dev", "create-tables", "--state-table", &state_table],
        cwd,
    ));
    let state = DynamoStateStore::new(&moto().sdk_config().await, &state_table);
    let table_key = "shop/public.kept";
    let now = chrono::Utc::now();
    let kept = RunId::at(now - chrono::Duration::seconds(5));
    let gone = RunId::new();
    for id in [kept, gone] {
        state
            .create_run(&RunRecord::new(id, table_key.into(), now))
            .await
            .unwrap();
    }
    // Expired a minute ago; moto, like DynamoDB for a while, still holds the item.
    aws_sdk_dynamodb::Client::new(&moto().sdk_config().await)
        .update_item()
        .table_name(&state_table)
        .key("pk", AttributeValue::S(format!("RUN#{gone}")))
        .key("sk", AttributeValue::S("RUN".into()))
        .update_expression("SET expires_at = :e")
        .expression_attribute_values(
            ":e",
            AttributeValue::N((now - chrono::Duration::minutes(1)).timestamp().to_string()),
        )
        .send()
        .await
        .unwrap();

    // The footer's cut-off is the command's "now" minus the retention, to the minute.
    let history_line = |out: &str, days: i64, before: chrono::DateTime<chrono::Utc>| {
        let prefix = format!("history kept {days} days: runs started before ");
        let line = out
            .lines()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no line starting {prefix:?} in:\n{out}"));
        let cutoff = line
            .strip_prefix(&prefix)
            .and_then(|rest| rest.strip_suffix(" UTC are gone"))
            .unwrap_or_else(|| panic!("{line}"));
        let cutoff = chrono::NaiveDateTime::parse_from_str(cutoff, "%Y-%m-%d %H:%M")
            .unwrap_or_else(|e| panic!("{line}: {e}"))
            .and_utc();
        let retention = chrono::Duration::days(days);
        let earliest = before - retention - chrono::Duration::minutes(1);
        let latest = chrono::Utc::now() - retention;
        assert!(
            earliest <= cutoff && cutoff <= latest,
            "{line}: expected a cut-off between {earliest} and {latest}"
        );
        assert_eq!(out.lines().last(), Some(line), "the footer is last:\n{out}");
    };

    let before = chrono::Utc::now();
    let list = ok(&sluice(&["status", "--state-table", &state_table], cwd));
    assert_contains(&list, &kept.to_string());
    assert!(!list.contains(&gone.to_string()), "{list}");
    history_line(&list, 90, before);

    let before = chrono::Utc::now();
    let story = ok(&sluice(
        &["status", &kept.to_string(), "--state-table", &state_table],
        cwd,
    ));
    assert_contains(&story, &format!("run       {kept}"));
    history_line(&story, 90, before);

    // The deployment's retention, by flag or environment.
    let before = chrono::Utc::now();
    let list = ok(&sluice(
        &[
            "status",
            "--state-table",
            &state_table,
            "--run-retention",
            "30d",
        ],
        cwd,
    ));
    history_line(&list, 30, before);
    let before = chrono::Utc::now();
    let list = ok(&sluice_with(
        &["status", "--state-table", &state_table],
        cwd,
        &[("SLUICE_RUN_RETENTION", "400d")],
    ));
    history_line(&list, 400, before);
    let bad = sluice_with(
        &["status", "--state-table", &state_table],
        cwd,
        &[("SLUICE_RUN_RETENTION", "1d")],
    );
    assert_eq!(bad.status.code(), Some(2), "{}", both(&bad));
    assert_contains(
        &text(&bad.stderr),
        "'1d' must be a duration from 2d to 3650d (e.g. 90d)",
    );

    // The expired run is not found, and the message says why it may be gone.
    let out = sluice(
        &["status", &gone.to_string(), "--state-table", &state_table],
        cwd,
    );
    assert_eq!(out.status.code(), Some(2), "{}", both(&out));
    assert_contains(
        &text(&out.stderr),
        &format!(
            "run {gone} not found in DynamoDB table {state_table} (history kept 90 days: runs started before "
        ),
    );

    // JSON: the runs only, without the footer.
    let json = ok(&sluice(
        &["status", "--state-table", &state_table, "--json"],
        cwd,
    ));
    let runs: Vec<RunRecord> =
        serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"));
    assert_eq!(
        runs.iter().map(|r| r.run_id).collect::<Vec<_>>(),
        vec![kept]
    );

    // Local state keeps every run: no footer.
    let state_dir = cwd.join("local-state");
    sluice::state::local::LocalStateStore::open(&state_dir)
        .unwrap()
        .create_run(&RunRecord::new(RunId::new(), table_key.into(), now))
        .await
        .unwrap();
    let local = ok(&sluice(
        &["status", "--state-dir", state_dir.to_str().unwrap()],
        cwd,
    ));
    assert!(!local.contains("history kept"), "{local}");
}

/// Runs of three tables through the binary, then `sluice status --tables` against the state
/// they were recorded in (`state_args`): `items` (a full load of 100 rows, then 150), `events`
/// (an incremental timestamptz cursor whose newest value is known) and `broken` (a view whose
/// extraction fails). The figures must be the source's row counts and the recorded runs'.
async fn status_tables_against(
    db: &TestDb,
    cwd: &Path,
    state_args: &[&str],
    store: &dyn sluice::state::StateStore,
) {
    let config = cwd.join("trend.yaml");
    std::fs::write(
        &config,
        shop_config(
            db,
            "  - source: shop\n    table: public.items\n    primary_key: [id]\n\
             \x20 - source: shop\n    table: public.events\n    primary_key: [id]\n\
             \x20   load: { mode: incremental, cursor: updated_at }\n\
             \x20 - source: shop\n    table: public.broken\n    partition: { column: id, chunks: 2 }\n",
        ),
    )
    .unwrap();
    let run = || {
        let mut args = vec![
            "run",
            "--config",
            config.to_str().unwrap(),
            "--output",
            "out",
        ];
        args.extend_from_slice(state_args);
        let out = sluice(&args, cwd);
        // `broken` fails: exit 1, the others completed.
        assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    };
    let status = |extra: &[&str]| {
        let mut args = vec!["status", "--tables"];
        args.extend_from_slice(extra);
        args.extend_from_slice(state_args);
        sluice(&args, cwd)
    };
    let json = |extra: &[&str]| -> BTreeMap<String, serde_json::Value> {
        let mut with_json = extra.to_vec();
        with_json.push("--json");
        let out = ok(&status(&with_json));
        let trends: Vec<serde_json::Value> =
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
        trends
            .into_iter()
            .map(|t| (t.get("table_key").unwrap().as_str().unwrap().to_owned(), t))
            .collect()
    };

    let first_rows = count(db, "SELECT count(*) FROM public.items").await;
    run();
    db.client()
        .await
        .batch_execute("INSERT INTO items SELECT g, g FROM generate_series(101, 150) g")
        .await
        .unwrap();
    let second_rows = count(db, "SELECT count(*) FROM public.items").await;
    assert_eq!((first_rows, second_rows), (100, 150));
    run();

    let newest = |key: &'static str| async move {
        let runs = store.list_runs(Some(key), 10).await.unwrap();
        assert_eq!(runs.len(), 2, "{key}: {runs:?}");
        runs.into_iter().next().unwrap()
    };
    let before = chrono::Utc::now();
    let trends = json(&[]);
    assert_eq!(
        trends.keys().collect::<Vec<_>>(),
        [
            "shop/public.broken",
            "shop/public.events",
            "shop/public.items"
        ]
    );

    // items: two completed loads, rows as the source counted them each time.
    let items = &trends["shop/public.items"];
    let last = newest("shop/public.items").await;
    assert_eq!(items["last_run"]["run_id"], last.run_id.to_string());
    assert_eq!(items["last_run"]["status"], "COMPLETED");
    assert_eq!(
        (&items["runs"], &items["completed"], &items["failed"]),
        (
            &serde_json::json!(2),
            &serde_json::json!(2),
            &serde_json::json!(0)
        )
    );
    assert_eq!(
        items["rows"],
        serde_json::json!({"min": first_rows, "median": (first_rows + second_rows) / 2, "max": second_rows, "last": second_rows})
    );
    assert_eq!(items["bytes"]["last"], last.bytes());
    assert_eq!(items["files"]["last"], last.files());
    assert_eq!(items["retries"], 0);
    let history: Vec<u64> = items["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["rows"].as_u64().unwrap())
        .collect();
    assert_eq!(history, [first_rows, second_rows], "oldest first");
    // A full load is as fresh as its plan: seconds since the newest one started.
    let planned = last.plan.as_ref().unwrap().started_at;
    let seconds = items["lag"]["seconds"].as_f64().unwrap();
    let expected = (before - planned).num_milliseconds() as f64 / 1000.0;
    assert!(
        (expected - 1.0..expected + 30.0).contains(&seconds),
        "items lag {seconds}, expected about {expected}"
    );

    // events: now minus its watermark, the newest cursor value in the source.
    let events = &trends["shop/public.events"];
    let newest_event: chrono::DateTime<chrono::Utc> = db
        .client()
        .await
        .query_one("SELECT max(updated_at) FROM public.events", &[])
        .await
        .unwrap()
        .get(0);
    let expected = (before - newest_event).num_milliseconds() as f64 / 1000.0;
    let seconds = events["lag"]["seconds"].as_f64().unwrap();
    assert!(
        (expected - 1.0..expected + 30.0).contains(&seconds),
        "events lag {seconds}, expected about {expected}"
    );
    assert!(
        events["lag"]["watermark"]
            .as_str()
            .unwrap()
            .starts_with(&newest_event.format("%Y-%m-%d %H:%M:%S").to_string()),
        "{}",
        events["lag"]
    );

    // broken: two failures, no figures, the first error of the last one.
    let broken = &trends["shop/public.broken"];
    assert_eq!(
        (&broken["runs"], &broken["completed"], &broken["failed"]),
        (
            &serde_json::json!(2),
            &serde_json::json!(0),
            &serde_json::json!(2)
        )
    );
    assert!(broken["rows"].is_null(), "{}", broken["rows"]);
    assert_eq!(broken["last_run"]["status"], "FAILED");
    assert_eq!(
        broken["last_run"]["run_id"],
        newest("shop/public.broken").await.run_id.to_string()
    );
    let error = broken["last_run"]["error"].as_str().unwrap();
    assert!(error.contains("division by zero"), "{error}");

    // --last 1: only the newest load of each.
    let one = json(&["--last", "1"]);
    assert_eq!(one["shop/public.items"]["runs"], 1);
    assert_eq!(one["shop/public.items"]["rows"]["min"], second_rows);
    assert_eq!(one["shop/public.broken"]["failed"], 1);

    // --table: that table only.
    let only = json(&["--table", "shop/public.items"]);
    assert_eq!(only.keys().collect::<Vec<_>>(), ["shop/public.items"]);

    // A configuration lists its tables, a table never run too.
    let other = cwd.join("other.yaml");
    std::fs::write(
        &other,
        shop_config(
            db,
            "  - source: shop\n    table: public.items\n    primary_key: [id]\n\
             \x20 - source: shop\n    table: public.never\n    primary_key: [id]\n",
        ),
    )
    .unwrap();
    let configured = json(&["--config", other.to_str().unwrap()]);
    assert_eq!(
        configured.keys().collect::<Vec<_>>(),
        ["shop/public.items", "shop/public.never"]
    );
    assert_eq!(configured["shop/public.never"]["runs"], 0);
    assert!(configured["shop/public.never"]["last_run"].is_null());

    // For people: the same figures, a row per table.
    let text_out = ok(&status(&[]));
    let rows = table_rows(&text_out);
    let row = |key: &str| {
        rows.iter()
            .find(|r| r.first().map(String::as_str) == Some(key))
            .unwrap_or_else(|| panic!("no row for {key} in:\n{text_out}"))
            .clone()
    };
    let items_row = row("shop/public.items");
    assert_eq!(items_row[1], last.run_id.to_string(), "{text_out}");
    assert_eq!(items_row[2], "COMPLETED");
    assert_eq!(items_row[5], "2/0");
    assert_eq!(
        items_row[7],
        format!(
            "{first_rows} / {} / {second_rows}",
            (first_rows + second_rows) / 2
        )
    );
    assert_eq!(items_row[9], "▁█", "rows grew: {text_out}");
    let broken_row = row("shop/public.broken");
    assert!(broken_row[2].starts_with("FAILED: "), "{text_out}");
    assert_eq!(
        (broken_row[5].as_str(), broken_row[9].as_str()),
        ("0/2", "✗✗")
    );

    // Bad arguments name themselves.
    let out = status(&["--last", "0"]);
    assert_eq!(out.status.code(), Some(2), "{}", both(&out));
    let err = text(&out.stderr);
    assert!(
        err.contains("--last") && err.contains("at least 1"),
        "{err}"
    );
    let mut args = vec!["status", "--last", "3"];
    args.extend_from_slice(state_args);
    let out = sluice(&args, cwd);
    assert_eq!(out.status.code(), Some(2), "{}", both(&out));
    assert!(text(&out.stderr).contains("--tables"), "{}", both(&out));
}

async fn trend_db() -> TestDb {
    let db = TestDb::create("trend").await;
    db.client()
        .await
        .batch_execute(
            "CREATE TABLE items (id bigint PRIMARY KEY, v int);
             INSERT INTO items SELECT g, g FROM generate_series(1, 100) g;
             CREATE TABLE events (id bigint PRIMARY KEY, updated_at timestamptz NOT NULL);
             INSERT INTO events SELECT g, now() - interval '2 hours' + g * interval '1 minute'
               FROM generate_series(1, 30) g;
             CREATE TABLE base (id bigint PRIMARY KEY, d int NOT NULL);
             INSERT INTO base SELECT g, g - 80 FROM generate_series(1, 100) g;
             CREATE VIEW broken AS SELECT id, 100 / d AS q FROM base;",
        )
        .await
        .unwrap();
    db
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_tables_shows_each_tables_last_run_lag_and_trend_from_dynamodb() {
    let db = trend_db().await;
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    let state_table = unique_name("state");
    ok(&sluice(
        &["dev", "create-tables", "--state-table", &state_table],
        cwd,
    ));
    let store = DynamoStateStore::new(&moto().sdk_config().await, &state_table);
    status_tables_against(&db, cwd, &["--state-table", &state_table], &store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_tables_shows_each_tables_last_run_lag_and_trend_from_a_local_state_dir() {
    let db = trend_db().await;
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    let state_dir = cwd.join("state");
    let state_dir_arg = state_dir.to_str().unwrap().to_owned();
    // The directory the first run creates; opened after it.
    std::fs::create_dir_all(&state_dir).unwrap();
    let store = sluice::state::local::LocalStateStore::open(&state_dir).unwrap();
    status_tables_against(&db, cwd, &["--state-dir", &state_dir_arg], &store).await;
}
