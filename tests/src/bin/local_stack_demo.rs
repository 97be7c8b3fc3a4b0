//! `scripts/demo`'s serverless part: provisions the local stack (bucket, DynamoDB tables, Glue
//! database, secrets, config items, Snowflake objects), starts the three functions under the
//! Lambda emulator, calls `sluice.ingest` for every configured table exactly as Snowflake's
//! external function does (POST, then polls with the batch id until 200), and prints what
//! happened, with a look into STAGING and GOLD.
//!
//! Usage: local_stack_demo CONFIG.yaml BIN_DIR LOG_DIR
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use sluice::warehouse::Value;
use sluice_core::staging::TableTargets;
use sluice_tests::stack::start_and_print;

fn text(value: &Value) -> String {
    match value {
        Value::Null => "NULL".into(),
        Value::Text(t) => t.clone(),
        Value::Number { unscaled, scale } => sluice_tests::decimal_text(*unscaled, *scale as i8),
        other => format!("{other:?}"),
    }
}

/// The demo's cdc tables: `shop_cdc/public.events` on a private PostgreSQL with
/// `wal_level = logical`, read by a role with `REPLICATION` and `SELECT` only, and
/// `shop_binlog/shop.events` on a private MariaDB with the binary log on, read by a user with
/// `REPLICATION SLAVE`, `REPLICATION CLIENT` and `SELECT` only.
struct CdcDemo {
    pg: sluice_tests::private_pg::PrivatePg,
    admin: tokio_postgres::Client,
    my: sluice_tests::private_mariadb::PrivateMariadb,
}

const CDC_TABLES: &str = "  - source: shop_cdc
    table: public.events
    primary_key: [id]
    load: {mode: cdc}
    deletes: {mode: hard}
  - source: shop_binlog
    table: shop.events
    primary_key: [id]
    load: {mode: cdc}
    deletes: {mode: hard}
";

impl CdcDemo {
    async fn start() -> CdcDemo {
        let pg = sluice_tests::private_pg::PrivatePg::start_with(
            "host all all 127.0.0.1/32 trust",
            "wal_level = logical\nmax_replication_slots = 4\nmax_wal_senders = 4",
        );
        let (admin, connection) =
            tokio_postgres::connect(&pg.url("postgres"), tokio_postgres::NoTls)
                .await
                .unwrap();
        tokio::spawn(connection);
        admin
            .batch_execute(
                "CREATE TABLE public.events (id bigint PRIMARY KEY, kind text NOT NULL, amount numeric(10,2), noted_at timestamptz);
                 INSERT INTO public.events SELECT g, 'signup', g * 10.5, timestamptz '2026-01-01 09:00:00+01' + g * interval '1 hour' FROM generate_series(1, 5) g;
                 CREATE ROLE sluice_cdc LOGIN REPLICATION;
                 GRANT SELECT ON public.events TO sluice_cdc;",
            )
            .await
            .unwrap();
        let my = sluice_tests::private_mariadb::PrivateMariadb::start_with(&[
            "--binlog-row-metadata=FULL",
        ]);
        my.sql(
            "CREATE DATABASE shop CHARACTER SET utf8mb4;
             CREATE TABLE shop.events (id bigint PRIMARY KEY, kind varchar(20) NOT NULL, amount decimal(10,2), noted_at timestamp(6) NULL);
             SET time_zone = '+00:00';
             INSERT INTO shop.events SELECT seq, 'signup', seq * 10.5, TIMESTAMP '2026-01-01 08:00:00' + INTERVAL seq HOUR FROM shop.seq_1_to_5;
             CREATE USER 'sluice_cdc'@'127.0.0.1';
             GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO 'sluice_cdc'@'127.0.0.1';
             GRANT SELECT ON shop.* TO 'sluice_cdc'@'127.0.0.1';",
        );
        let demo = CdcDemo { pg, admin, my };
        // `sluice cdc setup --print`'s SQL, run as the table's owner (MariaDB keeps nothing
        // for a binlog reader: the server above has the settings it prints already).
        let table = &demo.cdc_config().tables[0];
        for statement in sluice_core::cdc::setup_sql(table).unwrap() {
            demo.admin.batch_execute(&statement).await.unwrap();
        }
        demo
    }

    fn cdc_config(&self) -> sluice_core::Config {
        sluice_core::Config::from_yaml(
            &format!(
                "sources:\n  - name: shop_cdc\n    engine: postgres\n    connection: {{url: \"{}\", sslmode: disable}}\n  - name: shop_binlog\n    engine: mysql\n    connection: {{url: \"{}/shop\", sslmode: disable}}\ntables:\n{CDC_TABLES}",
                self.pg.url("sluice_cdc"),
                self.my.url("sluice_cdc"),
            ),
            "the demo's cdc tables",
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    /// The config at `path` with the cdc sources and tables added.
    fn config_with(&self, path: &str) -> String {
        let yaml = std::fs::read_to_string(path).expect("cannot read the config");
        let mut config =
            sluice_core::Config::from_yaml(&yaml, path).unwrap_or_else(|e| panic!("{e}"));
        let extra = self.cdc_config();
        config.sources.extend(extra.sources);
        config.tables.extend(extra.tables);
        config.to_yaml().unwrap()
    }

    async fn staging(&self, stack: &sluice_tests::stack::LocalStack, table: &str) -> Vec<String> {
        let rows = stack
            .query(&format!(
                "SELECT TO_VARCHAR(\"id\"), \"kind\", TO_VARCHAR(\"amount\"), TO_VARCHAR(\"noted_at\") FROM \"{}\".STAGING.{table} ORDER BY \"id\"",
                stack.database
            ))
            .await;
        rows.rows
            .iter()
            .map(|r| r.iter().map(text).collect::<Vec<_>>().join("  "))
            .collect()
    }

    /// For each cdc table: inserts, updates and a delete at the source, one more
    /// `sluice.ingest`, and STAGING before and after.
    async fn show_changes_arriving(&self, stack: &sluice_tests::stack::LocalStack) {
        let mut completed = true;
        for (source, table, staging, log) in [
            (
                "shop_cdc",
                "public.events",
                "SHOP_CDC_PUBLIC_EVENTS",
                "PostgreSQL logical replication",
            ),
            (
                "shop_binlog",
                "shop.events",
                "SHOP_BINLOG_SHOP_EVENTS",
                "the MariaDB binary log",
            ),
        ] {
            println!(
                "\nLog-based CDC from {log} ({source}/{table}, load.mode: cdc): STAGING after its snapshot:"
            );
            for row in self.staging(stack, staging).await {
                println!("  {row}");
            }
            let changes = format!(
                "INSERT INTO {table} VALUES (6, 'signup', 99.99, {now}), (7, 'signup', 0.01, {now});
                 UPDATE {table} SET kind = 'upgrade', amount = 1234.56 WHERE id = 2;
                 DELETE FROM {table} WHERE id = 4;",
                now = if source == "shop_cdc" { "now()" } else { "NOW(6)" }
            );
            println!(
                "\nat the source: {}",
                changes.split_whitespace().collect::<Vec<_>>().join(" ")
            );
            if source == "shop_cdc" {
                self.admin.batch_execute(&changes).await.unwrap();
            } else {
                self.my.sql(&changes);
            }
            let results = stack.ingest(&[(source, table)]).await;
            let result = &results[0];
            println!(
                "SELECT sluice.ingest('{source}', '{table}'): {} {} change rows, merge {}",
                result["status"].as_str().unwrap_or("-"),
                result["rows"],
                result
                    .get("merge")
                    .or_else(|| result.get("error"))
                    .cloned()
                    .unwrap_or_default()
            );
            println!("STAGING now (rows 6 and 7 in, 2 updated, 4 gone):");
            for row in self.staging(stack, staging).await {
                println!("  {row}");
            }
            completed &= result["status"].as_str() == Some("COMPLETED");
        }
        if !completed {
            eprintln!("a cdc run did not complete");
            std::process::exit(1);
        }
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, config_path, bin_dir, log_dir] = args.as_slice() else {
        eprintln!("usage: local_stack_demo CONFIG.yaml BIN_DIR LOG_DIR");
        std::process::exit(2);
    };
    // Cdc tables beside the shop: their sources are servers with logical decoding and a
    // binary log, which the shared ones have not, so the demo starts its own.
    let cdc = CdcDemo::start().await;
    let with_cdc = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(with_cdc.path(), cdc.config_with(config_path)).unwrap();
    let config_path = with_cdc.path().to_str().unwrap();
    let (config, stack) = start_and_print("demo", config_path, bin_dir, log_dir).await;

    let tables: Vec<(String, String)> = config
        .tables
        .iter()
        .map(|t| (t.source.clone(), t.table.clone()))
        .collect();
    let pairs: Vec<(&str, &str)> = tables
        .iter()
        .map(|(s, t)| (s.as_str(), t.as_str()))
        .collect();
    println!(
        "\nSELECT sluice.ingest(source, table) for {} tables: one batch, POST then polls until every run ends…",
        pairs.len()
    );
    let called = Instant::now();
    let results = stack.ingest(&pairs).await;
    println!(
        "answered 200 after {:.1}s\n",
        called.elapsed().as_secs_f64()
    );
    println!(
        "{:<36} {:<10} {:>9} {:>6} {:>12}  merge / error",
        "table", "status", "rows", "files", "bytes"
    );
    let mut all_completed = true;
    for ((source, table), result) in tables.iter().zip(&results) {
        let status = result["status"].as_str().unwrap_or("-");
        all_completed &= status == "COMPLETED";
        let detail = result
            .get("error")
            .or_else(|| result.get("merge"))
            .map(|v| v.to_string())
            .unwrap_or_default();
        println!(
            "{:<36} {:<10} {:>9} {:>6} {:>12}  {}",
            format!("{source}/{table}"),
            status,
            // A JSON value's Display ignores width, so each cell is formatted as text first.
            result["rows"].to_string(),
            result["files"].to_string(),
            result["bytes"].to_string(),
            detail
        );
    }

    println!("\nSTAGING, as Snowflake sees it:");
    for table in &config.tables {
        let staging = TableTargets::resolve(table, &stack.database).staging;
        let count = stack
            .query(&format!("SELECT COUNT(*) FROM {}", staging.quoted()))
            .await;
        println!(
            "  {:<36} {:<44} {} rows",
            table.key(),
            format!("{}.{}", staging.schema, staging.name),
            text(&count.rows[0][0])
        );
    }
    println!("\nGOLD.DAILY_ORDER_REVENUE, the first days:");
    let gold = stack
        .query(&format!(
            "SELECT TO_VARCHAR(ORDER_DATE), CURRENCY, ORDERS, REVENUE FROM \"{}\".GOLD.DAILY_ORDER_REVENUE ORDER BY 1, 2 LIMIT 6",
            stack.database
        ))
        .await;
    for row in &gold.rows {
        println!(
            "  {}  {}  {:>5} orders  {:>12}",
            text(&row[0]),
            text(&row[1]),
            text(&row[2]),
            text(&row[3])
        );
    }
    cdc.show_changes_arriving(&stack).await;
    println!(
        "\nEach run's story: SELECT sluice.run_status('<run_id>'), here POST {}",
        stack.trigger_url("status")
    );
    if !all_completed {
        eprintln!("\nsome runs did not complete; the functions' logs are in {log_dir}");
        std::process::exit(1);
    }

    // The proof: `sluice validate` of every table, as an engineer would run it against the
    // deployed stack (config and state in DynamoDB, sources through Secrets Manager).
    let key = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        key.path(),
        &sluice_tests::snowflake::KeyPair::shared().private_pem,
    )
    .unwrap();
    let validate = [
        "validate",
        "--level",
        "rows",
        "--config-table",
        &stack.config_table,
        "--state-table",
        &stack.state_table,
        "--snowflake-account",
        sluice_tests::snowflake::ACCOUNT,
        "--snowflake-user",
        sluice_tests::snowflake::USER,
        "--snowflake-private-key-file",
        key.path().to_str().unwrap(),
        "--snowflake-url",
        &stack.standin.base_url(),
        "--snowflake-database",
        &stack.database,
    ];
    println!("\nsluice {}:", validate.join(" "));
    let mut command = std::process::Command::new(std::path::Path::new(bin_dir).join("sluice"));
    command.args(validate);
    let status = stack.moto.local_env(&mut command).status().unwrap();
    if !status.success() {
        eprintln!("\nsluice validate found differences (above)");
        std::process::exit(1);
    }
}
