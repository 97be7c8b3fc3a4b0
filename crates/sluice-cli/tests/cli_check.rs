//! `sluice check` as a user meets it: the binary against the real PostgreSQL and MariaDB on
//! loopback (tables, keys, cursor indexes, privileges of a limited user, timeouts, an
//! unreachable source) and against moto (bucket, probe, lifecycle rule, DynamoDB keys, Glue,
//! functions), its `--json` parsed and specific rows asserted, and its exit code: 0 when
//! nothing failed (warnings pass), 1 when a check failed.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Output;

use common::{both, sluice, text};
use mysql_async::prelude::Queryable;
use serde_json::Value;
use sluice_tests::moto::{MotoServer, unique_name};
use sluice_tests::mysql::{MyTestDb, MyUser};
use sluice_tests::{TestDb, pg_server_url};

/// The JSON report of a `sluice check --json` run.
fn report(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("--json is one JSON object ({e}):\n{}", both(out)))
}

/// The one row of `check` on `target`; fails listing every row if there is not exactly one.
fn row<'a>(report: &'a Value, check: &str, target: &str) -> &'a Value {
    let rows: Vec<&Value> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["check"] == check && r["target"] == target)
        .collect();
    assert_eq!(
        rows.len(),
        1,
        "one '{check}' row for {target} in:\n{:#}",
        report["checks"]
    );
    rows[0]
}

fn result<'a>(report: &'a Value, check: &str, target: &str) -> &'a str {
    row(report, check, target)["result"].as_str().unwrap()
}

fn write(dir: &Path, yaml: &str) -> String {
    let path = dir.join("check.yaml");
    std::fs::write(&path, yaml).unwrap();
    path.to_str().unwrap().to_owned()
}

fn check_json(config: &str, dir: &Path, extra: &[&str]) -> (Output, Value) {
    let mut args = vec!["check", "--config", config, "--json"];
    args.extend(extra);
    let out = sluice(&args, dir);
    let json = report(&out);
    (out, json)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_tables_keys_indexes_and_privileges_are_checked_with_their_fixes() {
    let db = TestDb::create("check_pg").await;
    let client = db.client().await;
    let role = format!("sluice_chk_{}", &db.name[db.name.len() - 8..]);
    client
        .batch_execute(&format!(
            "CREATE TABLE public.orders (order_id bigint PRIMARY KEY, updated_at timestamptz NOT NULL, note text);
             CREATE INDEX orders_updated ON public.orders (updated_at);
             CREATE TABLE public.events (id bigint PRIMARY KEY, seen_at timestamptz);
             CREATE TABLE public.lines (order_id bigint, line int, PRIMARY KEY (order_id, line));
             CREATE TABLE public.nokey (a int, b int);
             INSERT INTO public.nokey VALUES (1, 1), (1, 2), (2, 1);
             CREATE TABLE public.uniq (code text NOT NULL UNIQUE);
             CREATE VIEW public.events_view AS SELECT * FROM public.events;
             DROP ROLE IF EXISTS {role};
             CREATE ROLE {role} LOGIN;
             GRANT SELECT ON public.orders TO {role};"
        ))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = db.url.clone();
    let limited = format!(
        "{}/{}",
        pg_server_url().replace("postgres@", &format!("{role}@")),
        db.name
    );
    let config = write(
        dir.path(),
        &format!(
            "sources:
  - name: shop
    engine: postgres
    connection: {{ url: '{url}', statement_timeout: 5m }}
  - name: limited
    engine: postgres
    connection: {{ url: '{limited}' }}
  - name: gone
    engine: postgres
    connection: {{ url: 'postgres://app@127.0.0.1:1/shop' }}
tables:
  - source: shop
    table: public.orders
    primary_key: [order_id]
    load: {{ mode: incremental, cursor: updated_at }}
  - source: shop
    table: public.events
    primary_key: [id]
    load: {{ mode: incremental, cursor: seen_at }}
  - source: shop
    table: public.lines
    primary_key: [order_id]
  - source: shop
    table: public.nokey
    primary_key: [a]
  - source: shop
    table: public.uniq
    primary_key: [code]
  - source: shop
    table: public.missing
    primary_key: [id]
  - source: shop
    table: public.events_view
    columns: [id, nope]
    primary_key: [id]
  - source: limited
    table: public.orders
    primary_key: [order_id]
    load: {{ mode: incremental, cursor: updated_at }}
  - source: limited
    table: public.events
    primary_key: [id]
  - source: gone
    table: public.orders
    primary_key: [order_id]
"
        ),
    );
    let (out, json) = check_json(&config, dir.path(), &[]);
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    assert_eq!(json["ok"], false);

    // The session.
    assert_eq!(result(&json, "reachable", "shop"), "pass");
    assert_eq!(result(&json, "authenticates", "shop"), "pass");
    let timeout = row(&json, "statement timeout", "shop");
    assert_eq!(timeout["result"], "pass", "{timeout}");
    assert_eq!(timeout["detail"], "300000 ms, as configured");
    let unset = row(&json, "statement timeout", "limited");
    assert_eq!(unset["result"], "warn", "{unset}");
    assert_eq!(unset["fix"], "set connection.statement_timeout (e.g. 30m)");
    let gone = row(&json, "reachable", "gone");
    assert_eq!(gone["result"], "fail", "{gone}");
    assert!(
        gone["detail"]
            .as_str()
            .unwrap()
            .contains("cannot reach 127.0.0.1:1"),
        "{gone}"
    );

    // Tables and keys.
    assert_eq!(
        result(&json, "table and columns", "shop/public.orders"),
        "pass"
    );
    assert_eq!(result(&json, "primary key", "shop/public.orders"), "pass");
    assert_eq!(result(&json, "cursor index", "shop/public.orders"), "pass");
    let no_index = row(&json, "cursor index", "shop/public.events");
    assert_eq!(no_index["result"], "warn", "{no_index}");
    assert_eq!(
        no_index["fix"],
        "CREATE INDEX \"events_seen_at_idx\" ON \"public\".\"events\" (\"seen_at\")"
    );
    let other_key = row(&json, "primary key", "shop/public.lines");
    assert_eq!(other_key["result"], "fail", "{other_key}");
    assert_eq!(other_key["fix"], "primary_key: [order_id, line]");
    let repeats = row(&json, "primary key", "shop/public.nokey");
    assert_eq!(repeats["result"], "fail", "{repeats}");
    assert!(
        repeats["detail"]
            .as_str()
            .unwrap()
            .starts_with("1 value(s) of [a] repeat"),
        "{repeats}"
    );
    assert_eq!(result(&json, "primary key", "shop/public.uniq"), "pass");
    let missing = row(&json, "table exists", "shop/public.missing");
    assert_eq!(missing["result"], "fail", "{missing}");
    let column = row(&json, "columns", "shop/public.events_view");
    assert_eq!(column["result"], "fail", "{column}");
    assert!(
        column["detail"].as_str().unwrap().contains("'nope'"),
        "{column}"
    );
    assert!(
        column["fix"]
            .as_str()
            .unwrap()
            .starts_with("columns: columns of the table (id, seen_at)"),
        "{column}"
    );

    // The limited role: it reads orders but not events, and cannot see other sessions.
    assert_eq!(result(&json, "select", "limited/public.orders"), "pass");
    let denied = row(&json, "select", "limited/public.events");
    assert_eq!(denied["result"], "fail", "{denied}");
    assert_eq!(
        denied["fix"],
        format!("GRANT SELECT ON \"public\".\"events\" TO \"{role}\"")
    );
    let sessions = row(&json, "sees other sessions", "limited");
    assert_eq!(sessions["result"], "warn", "{sessions}");
    assert_eq!(
        sessions["fix"],
        format!("GRANT pg_read_all_stats TO \"{role}\"")
    );
    assert_eq!(result(&json, "sees other sessions", "shop"), "pass");

    // The table: every row, the fixes, the counts; and no password ever (there is none
    // here, but the URLs must not be echoed either way).
    let table = sluice(&["check", "--config", &config], dir.path());
    assert_eq!(table.status.code(), Some(1));
    let printed = text(&table.stdout);
    assert!(printed.contains("│ check "), "{printed}");
    assert!(printed.contains("GRANT pg_read_all_stats"), "{printed}");
    assert!(printed.contains("failed: apply each fix"), "{printed}");
    assert!(!both(&table).contains(&url), "{printed}");

    // Only warnings: exit 0.
    let (ok, json) = check_json(&config, dir.path(), &["--table", "shop/public.events"]);
    assert_eq!(ok.status.code(), Some(0), "{}", both(&ok));
    assert_eq!(json["failed"], 0);
    assert!(json["warnings"].as_u64().unwrap() >= 1, "{json:#}");

    client
        .batch_execute(&format!(
            "REVOKE ALL ON public.orders FROM {role}; DROP OWNED BY {role};"
        ))
        .await
        .unwrap();
    drop(client);
    let admin = sluice_tests::connect(&format!("{}/postgres", pg_server_url())).await;
    drop(db);
    let _ = admin
        .batch_execute(&format!("DROP ROLE IF EXISTS {role}"))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_keys_indexes_timeouts_and_a_user_without_process_are_checked() {
    let db = MyTestDb::create("check_my").await;
    let mut conn = db.conn().await;
    conn.query_drop(
        "CREATE TABLE orders (order_id BIGINT PRIMARY KEY, updated_at DATETIME(6) NOT NULL, KEY orders_updated (updated_at));
         CREATE TABLE events (id BIGINT PRIMARY KEY, seen_at DATETIME(6));
         CREATE TABLE nokey (a INT, b INT);
         INSERT INTO nokey VALUES (1, 1), (1, 2), (2, 1);",
    )
    .await
    .unwrap();
    let user = MyUser::create(&db, "chk", None).await;
    let dir = tempfile::tempdir().unwrap();
    let limited = db.url.replace("root@", &format!("{}@", user.name));
    let config = write(
        dir.path(),
        &format!(
            "sources:
  - name: shop
    engine: mysql
    connection: {{ url: '{}', sslmode: disable, statement_timeout: 90s }}
  - name: limited
    engine: mysql
    connection: {{ url: '{limited}', sslmode: disable }}
tables:
  - source: shop
    table: orders
    primary_key: [order_id]
    load: {{ mode: incremental, cursor: updated_at }}
  - source: shop
    table: events
    primary_key: [seen_at]
    load: {{ mode: incremental, cursor: seen_at }}
  - source: shop
    table: nokey
    primary_key: [b]
  - source: limited
    table: orders
    primary_key: [order_id]
    load: {{ mode: incremental, cursor: updated_at }}
",
            db.url
        ),
    );
    let (out, json) = check_json(&config, dir.path(), &[]);
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    assert_eq!(result(&json, "reachable", "shop"), "pass");
    assert_eq!(result(&json, "tls", "shop"), "pass");
    let timeout = row(&json, "statement timeout", "shop");
    assert_eq!(timeout["detail"], "90000 ms, as configured", "{timeout}");
    assert_eq!(result(&json, "primary key", "shop/orders"), "pass");
    assert_eq!(result(&json, "cursor index", "shop/orders"), "pass");
    let other_key = row(&json, "primary key", "shop/events");
    assert_eq!(other_key["result"], "fail", "{other_key}");
    assert_eq!(other_key["fix"], "primary_key: [id]");
    let no_index = row(&json, "cursor index", "shop/events");
    assert_eq!(no_index["result"], "warn", "{no_index}");
    assert_eq!(
        no_index["fix"],
        "CREATE INDEX `events_seen_at_idx` ON `events` (`seen_at`)"
    );
    // [b] repeats (1 twice) in the sample.
    let repeats = row(&json, "primary key", "shop/nokey");
    assert_eq!(repeats["result"], "fail", "{repeats}");
    // The test user has SELECT on the database but not PROCESS.
    assert_eq!(result(&json, "select", "limited/orders"), "pass");
    let sessions = row(&json, "sees other sessions", "limited");
    assert_eq!(sessions["result"], "warn", "{sessions}");
    assert!(
        sessions["fix"]
            .as_str()
            .unwrap()
            .starts_with(&format!("GRANT PROCESS ON *.* TO '{}'@", user.name)),
        "{sessions}"
    );
    assert_eq!(result(&json, "sees other sessions", "shop"), "pass");
    drop(conn);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_bucket_probe_lifecycle_tables_glue_and_functions_are_checked_on_moto() {
    let moto = MotoServer::shared();
    let sdk = moto.sdk_config().await;
    let s3 = sluice_tests::s3::s3_client(&sdk);
    let dir = tempfile::tempdir().unwrap();
    // The sources are not checked here (--no-sources).
    let config = write(
        dir.path(),
        "sources:\n  - name: shop\n    engine: postgres\n    connection: { url: 'postgres://app@127.0.0.1:1/shop' }\ntables:\n  - source: shop\n    table: public.orders\n",
    );
    let bucket = moto.bucket_with("check", Vec::new()).await;
    let state = unique_name("state");
    let config_table = unique_name("config");
    let created = common::sluice_on(
        moto,
        &[
            "dev",
            "create-tables",
            "--state-table",
            &state,
            "--config-table",
            &config_table,
        ],
        dir.path(),
        &[],
    );
    assert_eq!(created.status.code(), Some(0), "{}", both(&created));
    // A state table with other keys, as an old or hand-made deployment might have.
    let wrong = unique_name("wrong");
    let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
    {
        use aws_sdk_dynamodb::types::*;
        dynamo
            .create_table()
            .table_name(&wrong)
            .billing_mode(BillingMode::PayPerRequest)
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name("id")
                    .key_type(KeyType::Hash)
                    .build()
                    .unwrap(),
            )
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name("id")
                    .attribute_type(ScalarAttributeType::S)
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .unwrap();
    }
    let output = format!("s3://{bucket}/lake/raw");
    let glue_missing = unique_name("nodb").replace('-', "_");
    let run = |state: &str, output: &str| {
        let out = common::sluice_on(
            moto,
            &[
                "check",
                "--config",
                &config,
                "--json",
                "--no-sources",
                "--output",
                output,
                "--state-table",
                state,
                "--config-table",
                &config_table,
                "--glue-database",
                &glue_missing,
                "--extract-function",
                "sluice-extract-missing",
            ],
            dir.path(),
            &[],
        );
        let json = report(&out);
        (out, json)
    };

    let (out, json) = run(&state, &output);
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    assert_eq!(result(&json, "bucket reachable", &output), "pass");
    assert_eq!(result(&json, "bucket writable", &output), "pass");
    let lifecycle = row(&json, "lifecycle rule", &bucket);
    assert_eq!(lifecycle["result"], "fail", "{lifecycle}");
    assert_eq!(
        lifecycle["detail"],
        "the bucket has no lifecycle configuration"
    );
    assert_eq!(result(&json, "state table", &state), "pass");
    assert_eq!(result(&json, "config table", &config_table), "pass");
    let glue = row(&json, "glue database", &glue_missing);
    assert_eq!(glue["result"], "fail", "{glue}");
    let function = row(&json, "function invokable", "sluice-extract-missing");
    assert_eq!(function["result"], "fail", "{function}");
    // The probe is gone: nothing under _sluice_check/ stays behind.
    let keys = sluice_tests::s3::list_keys(&s3, &bucket).await;
    assert!(keys.is_empty(), "{keys:?}");

    // The template's rule, a wrong state table, a missing bucket.
    {
        use aws_sdk_s3::types::*;
        s3.put_bucket_lifecycle_configuration()
            .bucket(&bucket)
            .lifecycle_configuration(
                BucketLifecycleConfiguration::builder()
                    .rules(
                        LifecycleRule::builder()
                            .id("abort-incomplete-multipart-uploads")
                            .status(ExpirationStatus::Enabled)
                            .filter(LifecycleRuleFilter::builder().prefix("").build())
                            .abort_incomplete_multipart_upload(
                                AbortIncompleteMultipartUpload::builder()
                                    .days_after_initiation(2)
                                    .build(),
                            )
                            .build()
                            .unwrap(),
                    )
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .unwrap();
    }
    let (_, json) = run(&wrong, &output);
    assert_eq!(result(&json, "lifecycle rule", &bucket), "pass");
    let keys = row(&json, "state table", &wrong);
    assert_eq!(keys["result"], "fail", "{keys}");
    assert!(
        keys["detail"]
            .as_str()
            .unwrap()
            .contains("keys are id / - (hash / range), sluice needs pk / sk"),
        "{keys}"
    );
    let missing_bucket = format!("s3://{}/raw", unique_name("nobucket"));
    let (_, json) = run(&state, &missing_bucket);
    let reach = row(&json, "bucket reachable", &missing_bucket);
    assert_eq!(reach["result"], "fail", "{reach}");
    assert_eq!(reach["detail"], "the bucket does not exist");
}

/// The template's lifecycle rule on `bucket`, so the AWS checks of `--output` pass.
async fn with_lifecycle_rule(s3: &aws_sdk_s3::Client, bucket: &str) {
    use aws_sdk_s3::types::*;
    s3.put_bucket_lifecycle_configuration()
        .bucket(bucket)
        .lifecycle_configuration(
            BucketLifecycleConfiguration::builder()
                .rules(
                    LifecycleRule::builder()
                        .id("abort-incomplete-multipart-uploads")
                        .status(ExpirationStatus::Enabled)
                        .filter(LifecycleRuleFilter::builder().prefix("").build())
                        .abort_incomplete_multipart_upload(
                            AbortIncompleteMultipartUpload::builder()
                                .days_after_initiation(2)
                                .build(),
                        )
                        .build()
                        .unwrap(),
                )
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
}

/// Every row of `family`.
fn family<'a>(report: &'a Value, family: &str) -> Vec<&'a Value> {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["family"] == family)
        .collect()
}

/// A Snowflake account set up by `sluice snowflake sql`, one part at a time, and `sluice
/// check` of one source's table against it.
struct SnowflakeCheck {
    standin: sluice_tests::snowflake::StandIn,
    database: String,
    dir: tempfile::TempDir,
    config: String,
    key: String,
    bucket: String,
    /// The script's statements by part: account, objects, tables, functions.
    script: String,
}

const API_URL: &str = "https://abc.execute-api.eu-west-1.amazonaws.com/prod/";

impl SnowflakeCheck {
    async fn new(label: &str, config_yaml: &str) -> SnowflakeCheck {
        let moto = MotoServer::shared();
        let s3 = sluice_tests::s3::s3_client(&moto.sdk_config().await);
        let bucket = moto.bucket_with(&label.replace('_', "-"), Vec::new()).await;
        with_lifecycle_rule(&s3, &bucket).await;
        let standin = sluice_tests::snowflake::StandIn::start(&sluice_tests::snowflake::Options {
            s3_endpoint: Some(moto.endpoint()),
            ..Default::default()
        });
        let database = standin.config(label).database.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let config = write(dir.path(), config_yaml);
        let key = dir.path().join("rsa_key.p8");
        std::fs::write(
            &key,
            &sluice_tests::snowflake::KeyPair::shared().private_pem,
        )
        .unwrap();
        let key = key.to_str().unwrap().to_owned();
        let mut check = SnowflakeCheck {
            standin,
            database,
            dir,
            config,
            key,
            bucket,
            script: String::new(),
        };
        // The whole set-up script, tables included (from the source's catalog).
        let out = check.sluice(&[
            "snowflake",
            "sql",
            "--no-write",
            "--with-tables",
            "--config",
            &check.config.clone(),
            "--database",
            &check.database.clone(),
            "--role",
            "SLUICE_LOADER",
            "--user",
            sluice_tests::snowflake::USER,
            "--bucket",
            &check.bucket.clone(),
            "--prefix",
            "raw",
            "--storage-role-arn",
            "arn:aws:iam::123456789012:role/snowflake-s3",
            "--api-role-arn",
            "arn:aws:iam::123456789012:role/snowflake-api",
            "--api-url",
            API_URL,
        ]);
        assert_eq!(out.status.code(), Some(0), "{}", both(&out));
        check.script = text(&out.stdout);
        check
    }

    fn sluice(&self, args: &[&str]) -> Output {
        common::sluice_on(MotoServer::shared(), args, self.dir.path(), &[])
    }

    /// The statements of the script's parts whose heading starts with one of `parts`
    /// (`-- 1. account`, `-- 2. objects`, `-- 3. tables`, `-- 4. functions`).
    fn part(&self, parts: &[&str]) -> Vec<String> {
        let mut chosen = String::new();
        let mut keep = false;
        for line in self.script.lines() {
            if let Some(heading) = line.strip_prefix("-- ")
                && heading.chars().next().is_some_and(|c| c.is_ascii_digit())
            {
                keep = parts.iter().any(|p| heading.starts_with(p));
            }
            if keep {
                chosen.push_str(line);
                chosen.push('\n');
            }
        }
        sluice_tests::snowflake::split_script(&chosen)
    }

    /// Runs `statements` as sluice's role (the set-up's objects are the role's own).
    async fn run(&self, statements: &[String]) {
        let mut config = self.standin.config("check_admin");
        config.database = Some(self.database.clone());
        config.role = Some("SLUICE_LOADER".into());
        let client = sluice::warehouse::snowflake::SnowflakeClient::new(
            config,
            sluice_tests::snowflake::KeyPair::shared().private_key(),
        )
        .unwrap();
        for statement in statements {
            client
                .execute(&sluice::warehouse::Statement::new(statement.as_str()))
                .await
                .unwrap_or_else(|e| panic!("{e}\n{statement}"));
        }
    }

    fn check(&self) -> (Output, Value) {
        let output = format!("s3://{}/raw", self.bucket);
        let base_url = self.standin.base_url();
        let config = self.config.clone();
        let mut args = vec!["check", "--config", config.as_str(), "--json"];
        args.extend([
            "--output",
            &output,
            "--snowflake-account",
            sluice_tests::snowflake::ACCOUNT,
            "--snowflake-user",
            sluice_tests::snowflake::USER,
            "--snowflake-private-key-file",
            &self.key,
            "--snowflake-url",
            &base_url,
            "--snowflake-database",
            &self.database,
            "--snowflake-role",
            "SLUICE_LOADER",
            "--snowflake-warehouse",
            "SLUICE_WH",
            "--snowflake-storage-role-arn",
            "arn:aws:iam::123456789012:role/snowflake-s3",
            "--snowflake-api-role-arn",
            "arn:aws:iam::123456789012:role/snowflake-api",
            "--snowflake-api-url",
            API_URL,
        ]);
        // Pointed at moto, as the bucket checks of --output need.
        let out = self.sluice(&args);
        let json = report(&out);
        (out, json)
    }
}

/// The Snowflake family against the stand-in, on PostgreSQL: an account with only the
/// account part of the set-up fails the doctor's file format and stage with the set-up's
/// statements as the fix (RAW and STAGING do not exist yet, and the role may create them);
/// once the printed fixes and the rest of the script ran, every Snowflake check passes and
/// the command exits 0; a STAGING column retyped incompatibly fails naming the column, both
/// types and the fix, and the printed fix mends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snowflake_setup_tables_and_column_types_are_checked_against_the_standin() {
    let db = TestDb::create("check_sf").await;
    db.client()
        .await
        .batch_execute(
            "CREATE TABLE public.items (id bigint PRIMARY KEY, in_stock boolean, note text, updated_at timestamptz);
             CREATE INDEX items_updated ON public.items (updated_at);",
        )
        .await
        .unwrap();
    let sf = SnowflakeCheck::new(
        "check_sf",
        &format!(
            "sources:\n  - name: shop\n    engine: postgres\n    connection: {{ url: '{}', statement_timeout: 5m }}\n\
             tables:\n  - source: shop\n    table: public.items\n    primary_key: [id]\n    load: {{ mode: incremental, cursor: updated_at }}\n",
            db.url
        ),
    )
    .await;
    let database = sf.database.clone();
    let staging = format!("\"{database}\".\"STAGING\".\"SHOP_PUBLIC_ITEMS\"");

    // Only the account part: the objects part (file format, stage, schemas) is missing.
    sf.run(&sf.part(&["1."])).await;
    let (out, json) = sf.check();
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    let format = row(
        &json,
        "file format",
        &format!("\"{database}\".\"RAW\".\"SLUICE_PARQUET\""),
    );
    assert_eq!(format["result"], "fail", "{format}");
    let format_fix = format["fix"].as_str().unwrap().to_owned();
    assert!(
        format_fix.starts_with("CREATE FILE FORMAT IF NOT EXISTS"),
        "{format_fix}"
    );
    let stage = row(
        &json,
        "stage",
        &format!("\"{database}\".\"RAW\".\"SLUICE_STAGE\""),
    );
    assert_eq!(stage["result"], "fail", "{stage}");
    let stage_fix = stage["fix"].as_str().unwrap().to_owned();
    assert!(
        stage_fix.starts_with("CREATE STAGE IF NOT EXISTS"),
        "{stage_fix}"
    );
    let raw = row(&json, "raw table", "shop/public.items");
    assert_eq!(raw["result"], "pass", "{raw}");
    assert!(
        raw["detail"]
            .as_str()
            .unwrap()
            .contains("does not exist yet: the first run creates it")
            && raw["detail"]
                .as_str()
                .unwrap()
                .contains("may create schemas"),
        "{raw}"
    );
    // The source side ran too, and nothing there failed.
    assert!(
        family(&json, "source")
            .iter()
            .all(|r| r["result"] != "fail"),
        "{json:#}"
    );

    // The printed fixes (schemas first, as the script orders them), then the rest.
    let mut objects = sf.part(&["2."]);
    objects.retain(|s| s.starts_with("CREATE SCHEMA"));
    sf.run(&objects).await;
    sf.run(&[format_fix, stage_fix]).await;
    sf.run(&sf.part(&["2.", "3.", "4."])).await;
    let (out, json) = sf.check();
    let not_passed: Vec<&Value> = family(&json, "snowflake")
        .into_iter()
        .filter(|r| r["result"] != "pass")
        .collect();
    assert!(not_passed.is_empty(), "{not_passed:#?}");
    assert_eq!(out.status.code(), Some(0), "{json:#}");
    for check in [
        "session",
        "storage integration",
        "API integration",
        "stage lists the bucket",
        "external function",
    ] {
        assert!(
            family(&json, "snowflake")
                .iter()
                .any(|r| r["check"] == check),
            "no {check} row: {json:#}"
        );
    }
    let staging_row = row(&json, "staging table", "shop/public.items");
    assert!(
        staging_row["detail"]
            .as_str()
            .unwrap()
            .contains("exists and its column types fit"),
        "{staging_row}"
    );

    // STAGING's in_stock retyped to text: the next run would fail; the check says so first.
    let ddl = sf
        .part(&["3."])
        .into_iter()
        .find(|s| s.starts_with(&format!("CREATE TABLE IF NOT EXISTS {staging}")))
        .unwrap();
    assert!(ddl.contains("\"in_stock\" BOOLEAN"), "{ddl}");
    sf.run(&[
        format!("DROP TABLE {staging}"),
        ddl.replace("\"in_stock\" BOOLEAN", "\"in_stock\" VARCHAR"),
    ])
    .await;
    let (out, json) = sf.check();
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    let retyped = row(&json, "staging column type", "shop/public.items");
    assert_eq!(retyped["result"], "fail", "{retyped}");
    assert!(
        retyped["detail"].as_str().unwrap().starts_with(&format!(
            "column in_stock is TEXT in {staging} but the source now gives BOOLEAN"
        )),
        "{retyped}"
    );
    let fix = retyped["fix"].as_str().unwrap();
    let rename = fix.split(" (").next().unwrap().to_owned();
    assert_eq!(
        rename,
        format!("ALTER TABLE {staging} RENAME COLUMN \"in_stock\" TO \"in_stock_old\"")
    );
    // RAW is untouched and still fits.
    assert_eq!(result(&json, "raw table", "shop/public.items"), "pass");
    sf.run(&[rename]).await;
    let (out, json) = sf.check();
    assert_eq!(out.status.code(), Some(0), "{json:#}");
    assert!(
        row(&json, "staging table", "shop/public.items")["detail"]
            .as_str()
            .unwrap()
            .contains("the next run adds in_stock"),
        "{json:#}"
    );
}

/// The same comparison on MariaDB: a STAGING column another type than the source's fails,
/// naming it and both types.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snowflake_column_types_are_compared_with_a_mariadb_source() {
    let db = MyTestDb::create("check_sfmy").await;
    db.conn()
        .await
        .query_drop(
            "CREATE TABLE items (id BIGINT PRIMARY KEY, price DECIMAL(12,2), note VARCHAR(40));",
        )
        .await
        .unwrap();
    let sf = SnowflakeCheck::new(
        "check_sfmy",
        &format!(
            "sources:\n  - name: shop\n    engine: mysql\n    connection: {{ url: '{}', sslmode: disable }}\n\
             tables:\n  - source: shop\n    table: {}.items\n    primary_key: [id]\n",
            db.url, db.name
        ),
    )
    .await;
    sf.run(&sf.part(&["1.", "2.", "3.", "4."])).await;
    let database = sf.database.clone();
    let key = format!("shop/{}.items", db.name);
    let staging_name = format!("SHOP_{}_ITEMS", db.name.to_uppercase());
    let staging = format!("\"{database}\".\"STAGING\".\"{staging_name}\"");
    let ddl = sf
        .part(&["3."])
        .into_iter()
        .find(|s| s.starts_with(&format!("CREATE TABLE IF NOT EXISTS {staging}")))
        .unwrap_or_else(|| panic!("no STAGING DDL for {staging} in {}", sf.script));
    assert!(ddl.contains("\"price\" NUMBER(12,2)"), "{ddl}");
    sf.run(&[
        format!("DROP TABLE {staging}"),
        ddl.replace("\"price\" NUMBER(12,2)", "\"price\" FLOAT"),
    ])
    .await;
    let (out, json) = sf.check();
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    let retyped = row(&json, "staging column type", &key);
    assert!(
        retyped["detail"].as_str().unwrap().starts_with(&format!(
            "column price is FLOAT in {staging} but the source now gives NUMBER(12,2)"
        )),
        "{retyped}"
    );
    assert_eq!(result(&json, "raw table", &key), "pass");
}
