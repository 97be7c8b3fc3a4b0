//! `sluice cdc setup` and a cdc table run locally by the binary: the SQL it prints, the
//! objects it creates (and finds in place the second time), the mistakes it refuses, and
//! `sluice run` taking the snapshot and then only the changes, with `sluice watermark reset`
//! as the way to a new snapshot. Against a private PostgreSQL with `wal_level = logical`.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::path::Path;

use common::{assert_contains, both, ok, sluice, text};
use sluice_tests::private_pg::PrivatePg;

fn write_config(dir: &Path, url: &str) -> String {
    let path = dir.join("cdc.yaml");
    let other = "  - source: shop\n    table: public.other\n    load: { mode: full }\n";
    std::fs::write(
        &path,
        common::cdc_docs_config(url, ", max_slot_lag_mb: 1", other),
    )
    .unwrap();
    path.to_str().unwrap().to_owned()
}

/// The rows column of the run table `sluice run` prints for `public.docs`.
fn rows_run(out: &str) -> u64 {
    rows_of(out, "shop/public.docs")
}

#[test]
fn setup_prints_or_creates_what_a_cdc_table_reads_and_refuses_other_tables() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "postgres://sluice_cdc@127.0.0.1:1/postgres");
    let out = ok(&sluice(
        &["cdc", "setup", "--config", &config, "--print"],
        dir.path(),
    ));
    assert_contains(
        &out,
        "CREATE PUBLICATION \"sluice_shop_public_docs\" FOR TABLE \"public\".\"docs\";",
    );
    assert_contains(
        &out,
        "SELECT pg_create_logical_replication_slot('sluice_shop_public_docs', 'pgoutput');",
    );
    assert!(!out.contains("other"), "only cdc tables: {out}");
    let refused = sluice(
        &[
            "cdc",
            "setup",
            "--config",
            &config,
            "--table",
            "public.other",
            "--print",
        ],
        dir.path(),
    );
    assert_ne!(refused.status.code(), Some(0));
    assert_contains(
        &text(&refused.stderr),
        "--table shop/public.other: load.mode is not cdc",
    );
}

#[test]
fn a_cdc_table_runs_its_snapshot_then_its_changes_and_resets_to_a_new_snapshot() {
    let pg = PrivatePg::start_with(
        "host all all 127.0.0.1/32 trust",
        "wal_level = logical\nmax_replication_slots = 4\nmax_wal_senders = 4",
    );
    pg.psql(
        "CREATE TABLE public.docs (id bigint PRIMARY KEY, note text);
         CREATE TABLE public.other (id int);
         INSERT INTO public.docs SELECT g, 'n' FROM generate_series(1, 10) g;
         CREATE ROLE sluice_cdc LOGIN REPLICATION;
         GRANT SELECT ON public.docs, public.other TO sluice_cdc;",
    );
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &pg.url("sluice_cdc"));
    let run = || {
        sluice(
            &["run", "--config", &config, "--table", "public.docs"],
            dir.path(),
        )
    };
    // Not set up: the run says what is missing and how to make it.
    let out = run();
    assert_ne!(out.status.code(), Some(0));
    assert_contains(
        &both(&out),
        "replication slot 'sluice_shop_public_docs' does not exist",
    );
    // `cdc check` names what is missing, as the reading role sees it, and changes nothing.
    let check = sluice(&["cdc", "check", "--config", &config], dir.path());
    assert_eq!(check.status.code(), Some(1), "{}", both(&check));
    assert_contains(
        &text(&check.stdout),
        "shop/public.docs: replication slot 'sluice_shop_public_docs' does not exist",
    );
    let plain = write_config(dir.path(), &pg.url("plain"));
    pg.psql("CREATE ROLE plain LOGIN;");
    let check = text(&sluice(&["cdc", "check", "--config", &plain], dir.path()).stdout);
    assert_contains(&check, "role plain lacks REPLICATION");
    assert_contains(
        &check,
        "role plain may not SELECT public.docs: GRANT SELECT ON \"public\".\"docs\" TO \"plain\"",
    );
    let config = write_config(dir.path(), &pg.url("sluice_cdc"));
    // The reading role may not create a publication on a table it does not own.
    let out = sluice(&["cdc", "setup", "--config", &config], dir.path());
    assert_ne!(out.status.code(), Some(0), "{}", both(&out));
    assert_contains(
        &both(&out),
        "CREATE PUBLICATION \"sluice_shop_public_docs\" FOR TABLE \"public\".\"docs\": permission denied",
    );
    let owner = pg.url("postgres");
    let out = ok(&sluice(
        &["cdc", "setup", "--config", &config, "--url", &owner],
        dir.path(),
    ));
    assert_contains(&out, "shop/public.docs: CREATE PUBLICATION");
    assert_contains(
        &out,
        "pg_create_logical_replication_slot('sluice_shop_public_docs'",
    );
    let again = ok(&sluice(
        &["cdc", "setup", "--config", &config, "--url", &owner],
        dir.path(),
    ));
    assert_contains(&again, "are in place");
    assert_contains(
        &ok(&sluice(&["cdc", "check", "--config", &config], dir.path())),
        "shop/public.docs: ready",
    );

    assert_eq!(rows_run(&ok(&run())), 10, "the snapshot reads every row");
    pg.psql(
        "UPDATE public.docs SET note = 'changed' WHERE id = 1;
         DELETE FROM public.docs WHERE id = 2;
         INSERT INTO public.docs VALUES (11, 'new');",
    );
    // Only the three changes are read.
    assert_eq!(rows_run(&ok(&run())), 3);
    let status = ok(&sluice(&["status"], dir.path()));
    assert!(!status.contains("warning:"), "{status}");
    // Writes elsewhere fill the log the slot holds: status warns once it holds more than
    // load.max_slot_lag_mb, and the next run moves the slot on.
    pg.psql("INSERT INTO public.other SELECT g FROM generate_series(1, 100000) g;");
    assert_eq!(rows_run(&ok(&run())), 0);
    let status = ok(&sluice(&["status"], dir.path()));
    assert_contains(&status, "warning: shop/public.docs (run ");
    assert_contains(&status, "replication slot 'sluice_shop_public_docs' held ");

    let set = sluice(
        &[
            "watermark",
            "set",
            "--config",
            &config,
            "--table",
            "public.docs",
            "--value",
            "5",
            "--yes",
        ],
        dir.path(),
    );
    assert_ne!(set.status.code(), Some(0));
    assert_contains(&text(&set.stderr), "is a cdc table");
    ok(&sluice(
        &[
            "watermark",
            "reset",
            "--config",
            &config,
            "--table",
            "public.docs",
            "--yes",
        ],
        dir.path(),
    ));
    // A new snapshot: the table as it is now.
    assert_eq!(rows_run(&ok(&run())), 10);
}

/// A MariaDB binlog table: `cdc check` names each missing setting and grant as the reading
/// user sees them (exit 1), and says ready once they are given; `setup --print` prints the
/// settings and grants; `setup` creates nothing and says so; then `sluice run` takes the
/// snapshot and then only the changes.
#[test]
fn a_binlog_table_is_checked_printed_and_run() {
    use sluice_tests::private_mariadb::PrivateMariadb;
    let my = PrivateMariadb::start();
    my.sql(
        "CREATE DATABASE shop CHARACTER SET utf8mb4;
         CREATE TABLE shop.docs (id bigint PRIMARY KEY, note text, legacy varchar(10) CHARACTER SET latin1);
         INSERT INTO shop.docs VALUES (1, 'a', NULL), (2, 'b', NULL);
         CREATE USER 'sluice_cdc'@'127.0.0.1';
         GRANT SELECT ON shop.* TO 'sluice_cdc'@'127.0.0.1';",
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cdc.yaml");
    let yaml = common::cdc_docs_config(&format!("{}/shop", my.url("sluice_cdc")), "", "")
        .replace("engine: postgres", "engine: mysql")
        .replace("table: public.docs", "table: shop.docs");
    std::fs::write(&path, yaml).unwrap();
    let config = path.to_str().unwrap();

    let printed = ok(&sluice(
        &["cdc", "setup", "--config", config, "--print"],
        dir.path(),
    ));
    assert_contains(&printed, "SET GLOBAL binlog_row_metadata = 'FULL';");
    assert_contains(
        &printed,
        "GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO <user>;",
    );
    assert_contains(&printed, "GRANT SELECT ON `shop`.`docs` TO <user>;");

    let check = sluice(&["cdc", "check", "--config", config], dir.path());
    assert_eq!(check.status.code(), Some(1), "{}", both(&check));
    let said = text(&check.stdout);
    assert_contains(&said, "binlog_row_metadata is NO_LOG, must be FULL");
    assert_contains(&said, "needs BINLOG MONITOR (REPLICATION CLIENT)");
    assert_contains(&said, "lacks REPLICATION SLAVE");
    assert_contains(&said, "column 'legacy' has character set latin1");
    let setup = sluice(&["cdc", "setup", "--config", config], dir.path());
    assert_ne!(setup.status.code(), Some(0));
    assert_contains(&text(&setup.stderr), "the server is not ready");
    // A run refuses before it reads anything.
    let refused = sluice(&["run", "--config", config], dir.path());
    assert_ne!(refused.status.code(), Some(0));
    assert_contains(
        &both(&refused),
        "binlog_row_metadata is NO_LOG, must be FULL",
    );

    my.sql(
        "SET GLOBAL binlog_row_metadata = 'FULL';
         GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO 'sluice_cdc'@'127.0.0.1';
         ALTER TABLE shop.docs DROP COLUMN legacy;",
    );
    let ready = ok(&sluice(&["cdc", "check", "--config", config], dir.path()));
    assert_contains(&ready, "shop/shop.docs: ready");
    let setup = ok(&sluice(&["cdc", "setup", "--config", config], dir.path()));
    assert_contains(&setup, "nothing to create");

    let run = ["run", "--config", config];
    assert_eq!(rows_of(&ok(&sluice(&run, dir.path())), "shop/shop.docs"), 2);
    my.sql("INSERT INTO shop.docs VALUES (3, 'c'); UPDATE shop.docs SET note = 'z' WHERE id = 1;");
    assert_eq!(
        rows_of(&ok(&sluice(&run, dir.path())), "shop/shop.docs"),
        2,
        "the second run reads only the two changes"
    );
}

/// The rows column of the run table `sluice run` prints for `key`.
fn rows_of(out: &str, key: &str) -> u64 {
    let line = out
        .lines()
        .find(|l| l.contains(key) && l.contains("COMPLETED"))
        .unwrap_or_else(|| panic!("no completed run in:\n{out}"));
    line.split(['│', '┆'])
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .nth(2)
        .unwrap()
        .parse()
        .unwrap()
}
