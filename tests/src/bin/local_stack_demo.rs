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

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, config_path, bin_dir, log_dir] = args.as_slice() else {
        eprintln!("usage: local_stack_demo CONFIG.yaml BIN_DIR LOG_DIR");
        std::process::exit(2);
    };
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
