//! The crash matrix, serverless path: the three functions as their real binaries (the local
//! stack: the Lambda runtime emulator, the async-invoke shim with Lambda's retries and
//! on-failure destination, moto, the Snowflake stand-in) crash once at every boundary of a
//! run in turn, while Snowflake's external function drives the run; Lambda's retry carries it
//! on. After each round the state is exactly right: STAGING equals the source, the table's
//! directory holds exactly the completed manifests' files, the watermark is the source's
//! newest cursor, no lease is left, and no event was given up on.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use serde_json::json;
use sluice::state::dynamo::DynamoStateStore;
use sluice::state::prelude::*;
use sluice_core::{Config, RunStatus};
use sluice_tests::crash::{ORDERS, POINTS, Recovery, change_orders, print_matrix};
use sluice_tests::stack::{LocalStack, StackOptions};

/// A stack for the crash tests: every function re-arms its failpoints from the returned
/// file at each invocation; `env` adds settings.
async fn crash_stack(
    label: &str,
    db: &sluice_tests::TestDb,
    env: &[(&str, &str)],
) -> (LocalStack, PathBuf) {
    let config = Config::from_yaml(&sluice_tests::shop_config(db, ORDERS), "test").unwrap();
    let failpoints =
        std::env::temp_dir().join(format!("sluice-{label}-failpoints-{}", std::process::id()));
    std::fs::write(&failpoints, "").unwrap();
    let bin_dir = PathBuf::from(env!("CARGO_BIN_EXE_trigger"))
        .parent()
        .unwrap()
        .to_path_buf();
    let mut settings = vec![(
        "SLUICE_FAILPOINTS_FILE".to_owned(),
        failpoints.display().to_string(),
    )];
    settings.extend(env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    let stack = LocalStack::start(
        label,
        &config,
        &StackOptions {
            bin_dir,
            extract_failpoints: None,
            log_dir: std::env::temp_dir()
                .join(format!("sluice-stack-{label}-{}", std::process::id())),
            env: settings,
            extract_instances: 1,
            duplicate_extract: false,
        },
    )
    .await;
    (stack, failpoints)
}

fn recovery<'a>(
    s: &'a LocalStack,
    pg: &'a sluice_tests::Client,
    s3: &'a aws_sdk_s3::Client,
    state: &'a DynamoStateStore,
) -> Recovery<'a> {
    Recovery {
        pg,
        s3,
        bucket: &s.bucket,
        table_dir: format!("{}/postgres/shop/public.orders", s.prefix),
        keysets: false,
        warehouse: &s.snowflake,
        staging: format!("\"{}\".STAGING.SHOP_PUBLIC_ORDERS", s.database),
        state,
    }
}

#[tokio::test]
#[cfg_attr(
    not(feature = "failpoints"),
    ignore = "needs the failpoints feature: cargo test --features sluice-functions/failpoints"
)]
async fn the_functions_recover_exactly_from_a_crash_at_every_boundary() {
    let db = sluice_tests::shop_db("fn_matrix").await;
    let pg = db.client().await;
    let (s, failpoints) = crash_stack("fnmatrix", &db, &[]).await;
    let s3 = sluice_tests::s3::s3_client(&s.moto.sdk_config().await);
    let state = s.state().await;
    let recovery = recovery(&s, &pg, &s3, &state);
    let failed_attempts = || {
        s.log_lines("lambda-shim")
            .iter()
            .filter(|l| l.contains("outcome=failed"))
            .count()
    };

    let first = s.ingest(&[("shop", "public.orders")]).await;
    assert_eq!(first[0]["status"], "COMPLETED", "{}", first[0]);
    recovery.assert_exact().await;

    let mut matrix = Vec::new();
    for (round, (point, action)) in POINTS.iter().enumerate() {
        change_orders(&pg, round as i64 + 1).await;
        // Once per process: the attempt Lambda retries goes through.
        let once = if *action == "panic" {
            "1*panic".to_owned()
        } else {
            action.replace("->panic", "->1*panic")
        };
        std::fs::write(&failpoints, format!("{point}={once}\n")).unwrap();
        let failed_before = failed_attempts();
        let result = s.ingest(&[("shop", "public.orders")]).await;
        let stats = s.settle().await;
        std::fs::write(&failpoints, "").unwrap();
        assert_eq!(
            result[0]["status"],
            "COMPLETED",
            "{point}: {}; logs in {}",
            result[0],
            s.log_dir.display()
        );
        let crashes = failed_attempts() - failed_before;
        assert!(crashes >= 1, "{point}: the failpoint never fired");
        assert_eq!(stats["destinations_sent"], 0, "{point}: {stats}");
        let completed = recovery.assert_exact().await;
        matrix.push((
            point.to_string(),
            format!(
                "crashed ({crashes} failed attempt(s)); Lambda's retry carried the run on → COMPLETED; exact ({completed} completed runs)"
            ),
        ));
    }
    print_matrix("serverless", &matrix);
}

/// A run whose every invocation died, the on-failure destination too, is left unfinished
/// with its lease: once the lease lapses (`SLUICE_LEASE_TTL`, here a minute), the next call
/// for the table takes the run over and resumes it under its id, keeping its done chunk.
#[tokio::test]
#[cfg_attr(
    not(feature = "failpoints"),
    ignore = "needs the failpoints feature: cargo test --features sluice-functions/failpoints"
)]
async fn a_run_nothing_carries_on_is_resumed_by_the_next_call_once_its_lease_lapses() {
    let db = sluice_tests::shop_db("fn_resume").await;
    let pg = db.client().await;
    let (s, failpoints) = crash_stack(
        "fnresume",
        &db,
        &[("SLUICE_LEASE_TTL", "1m"), ("SLUICE_PLAN_TIMEOUT", "30s")],
    )
    .await;
    let s3 = sluice_tests::s3::s3_client(&s.moto.sdk_config().await);
    let state = s.state().await;
    let recovery = recovery(&s, &pg, &s3, &state);
    // Chunk 1 crashes at every attempt, and so does the destination that would fail the run.
    std::fs::write(
        &failpoints,
        "extract-after-batch=1*off->panic\ndestination-before-record=panic\n",
    )
    .unwrap();
    let batch_id = sluice_tests::stack::real_shape_batch_id();
    let (code, body) = s
        .call(
            reqwest::Method::POST,
            "ingest",
            Some(&batch_id),
            Some(json!([[0, "shop", "public.orders"]])),
        )
        .await;
    assert_eq!(code, 202, "{body}");
    let stats = s.settle().await;
    std::fs::write(&failpoints, "").unwrap();
    let runs = state
        .list_runs(Some("shop/public.orders"), 10)
        .await
        .unwrap();
    assert_eq!(runs.len(), 1, "{runs:?}");
    let dead = runs[0].clone();
    assert_eq!(dead.status, RunStatus::Extracting, "{stats}; {dead:?}");
    assert_eq!(dead.chunks.keys().copied().collect::<Vec<_>>(), vec![0]);
    // Until the lease lapses, the table is held.
    let held = s.ingest(&[("shop", "public.orders")]).await;
    assert_eq!(held[0]["status"], "ALREADY_RUNNING", "{}", held[0]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
    while let Some(lease) = state.table_state("shop/public.orders").await.unwrap().lease {
        if lease.expires_at <= chrono::Utc::now() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the lease never lapsed: {lease:?}"
        );
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    }

    let resumed = s.ingest(&[("shop", "public.orders")]).await;
    assert_eq!(resumed[0]["status"], "COMPLETED", "{}", resumed[0]);
    assert_eq!(
        resumed[0]["run_id"],
        dead.run_id.to_string(),
        "the same run, resumed"
    );
    let run = state.get_run(dead.run_id).await.unwrap().unwrap();
    assert_eq!(run.resumptions.len(), 1, "{run:?}");
    assert_eq!(run.resumptions[0].chunks_done, 1);
    assert_eq!(run.chunks[&0], dead.chunks[&0], "the done chunk was kept");
    assert_eq!(
        s.settle().await["destinations_sent"],
        stats["destinations_sent"]
    );
    recovery.assert_exact().await;
}
