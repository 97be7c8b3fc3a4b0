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
    let line = out
        .lines()
        .find(|l| l.contains("shop/public.docs") && l.contains("COMPLETED"))
        .unwrap_or_else(|| panic!("no completed run in:\n{out}"));
    line.split(['│', '┆'])
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .nth(2)
        .unwrap()
        .parse()
        .unwrap()
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
