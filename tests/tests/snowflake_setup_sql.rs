//! The committed `infra/snowflake/setup.sql` is what `sluice snowflake sql --with-tables`
//! generates today for the committed `infra/config/shop.yaml`, so the reviewed script an admin
//! runs never drifts from what sluice itself creates and calls. The test renders the script
//! in-process, the way the CLI's `--with-tables` does, rather than running the binary (which
//! would need the sample databases under their committed names): a change to the CLI's own
//! option handling is not caught here, but `cli_snowflake.rs` covers that.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use sluice_core::Config;
use sluice_core::setup::{SetupOptions, setup_sql};
use sluice_tests::mysql::MyTestDb;
use sluice_tests::snowflake::workspace;

/// The example values the committed script was generated with (README, "One-time set-up");
/// they show in its account part (part 1), so a change to them shows as a difference.
fn example_options() -> SetupOptions {
    SetupOptions {
        database: "SLUICE".into(),
        role: "SLUICE_LOADER".into(),
        user: "SLUICE".into(),
        warehouse: "SLUICE_WH".into(),
        max_batch_rows: sluice_core::deploy::DEFAULT_MAX_BATCH_ROWS,
        bucket: "acme-lake".into(),
        prefix: Some("raw/v1".into()),
        storage_role_arn: "arn:aws:iam::123456789012:role/snowflake-s3".into(),
        api_role_arn: "arn:aws:iam::123456789012:role/snowflake-api".into(),
        api_url: "https://abc123.execute-api.eu-west-1.amazonaws.com/prod/".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_committed_setup_sql_is_what_sluice_generates() {
    let config_text = std::fs::read_to_string(workspace().join("infra/config/shop.yaml")).unwrap();
    let committed = std::fs::read_to_string(workspace().join("infra/snowflake/setup.sql")).unwrap();
    let config = Config::from_yaml(&config_text, "infra/config/shop.yaml").unwrap();

    // Part 3 comes from the sources' catalogs. The shop sample is created in databases of the
    // test's own (the same sample code `sluice sample shop` runs), and each table's schema is
    // read from there the way the CLI reads it (`file_schema_of`); the script is still
    // rendered for the committed config's table names.
    let pg = sluice_tests::shop_db("setupsql").await;
    let my = MyTestDb::create("setupsql").await;
    sluice::sample_mysql::create_shop_mysql(&mut my.conn().await, 1)
        .await
        .unwrap();
    let pg_url = "postgres://postgres@127.0.0.1:5432/sluice_shop";
    let my_url = "mysql://root@127.0.0.1:3306/sluice_shop";
    assert!(config_text.contains(pg_url) && config_text.contains(my_url));
    let probe_text = config_text
        .replace(pg_url, &pg.url)
        .replace(my_url, &my.url)
        .replace("table: sluice_shop.", &format!("table: {}.", my.name));
    let probe = Config::from_yaml(&probe_text, "probe config").unwrap();
    assert_eq!(probe.tables.len(), config.tables.len());

    let options = example_options();
    let mut sql = setup_sql(&config, &options).unwrap();
    for (table, probe_table) in config.tables.iter().zip(&probe.tables) {
        let source = probe
            .sources
            .iter()
            .find(|s| s.name == probe_table.source)
            .unwrap();
        let source = sluice::source::connect::source_adapter(source, None).unwrap();
        let schema = sluice::pipeline::file_schema_of(source.as_ref(), probe_table)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", probe_table.key()));
        sql.add_table(table, &options.database, &schema).unwrap();
    }
    let generated = sql.render();
    if std::env::var_os("SLUICE_BLESS").is_some() {
        // A deliberate change: write the new script, for review in the diff.
        std::fs::write(workspace().join("infra/snowflake/setup.sql"), &generated).unwrap();
        return;
    }
    if generated != committed {
        let first = generated
            .lines()
            .zip(committed.lines())
            .position(|(g, c)| g != c)
            .unwrap_or_else(|| generated.lines().count().min(committed.lines().count()));
        panic!(
            "infra/snowflake/setup.sql differs from what sluice generates, first at line {}:\n\
             generated: {:?}\ncommitted: {:?}\n(regenerate it: SLUICE_BLESS=1 cargo test -p sluice-tests \
             --test snowflake_setup_sql, then review the diff)",
            first + 1,
            generated.lines().nth(first),
            committed.lines().nth(first)
        );
    }
}
