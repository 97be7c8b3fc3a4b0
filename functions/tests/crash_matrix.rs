//! The crash matrix, serverless path: the three functions as their real binaries (the local
//! stack: the Lambda runtime emulator, the async-invoke shim with Lambda's retries and
//! on-failure destination, moto, the Snowflake stand-in) crash once at every boundary of a
//! run in turn, while Snowflake's external function drives the run; Lambda's retry carries it
//! on. After each round the state is exactly right: STAGING equals the source, the table's
//! directory holds exactly the completed manifests' files, the watermark is the source's
//! newest cursor, no lease is left, and no event was given up on.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use sluice_core::Config;
use sluice_tests::crash::{ORDERS, POINTS, Recovery, change_orders, print_matrix};
use sluice_tests::stack::{LocalStack, StackOptions};

#[tokio::test]
#[cfg_attr(
    not(feature = "failpoints"),
    ignore = "needs the failpoints feature: cargo test --features sluice-functions/failpoints"
)]
async fn the_functions_recover_exactly_from_a_crash_at_every_boundary() {
    let db = sluice_tests::shop_db("fn_matrix").await;
    let pg = db.client().await;
    let config = Config::from_yaml(&sluice_tests::shop_config(&db, ORDERS), "test").unwrap();
    let failpoints =
        std::env::temp_dir().join(format!("sluice-fnmatrix-failpoints-{}", std::process::id()));
    std::fs::write(&failpoints, "").unwrap();
    let bin_dir = PathBuf::from(env!("CARGO_BIN_EXE_trigger"))
        .parent()
        .unwrap()
        .to_path_buf();
    let s = LocalStack::start(
        "fnmatrix",
        &config,
        &StackOptions {
            bin_dir,
            extract_failpoints: None,
            log_dir: std::env::temp_dir()
                .join(format!("sluice-stack-fnmatrix-{}", std::process::id())),
            env: vec![(
                "SLUICE_FAILPOINTS_FILE".into(),
                failpoints.display().to_string(),
            )],
            extract_instances: 1,
            duplicate_extract: false,
        },
    )
    .await;
    let s3 = sluice_tests::s3::s3_client(&s.moto.sdk_config().await);
    let state = s.state().await;
    let recovery = Recovery {
        pg: &pg,
        s3: &s3,
        bucket: &s.bucket,
        table_dir: format!("{}/postgres/shop/public.orders", s.prefix),
        warehouse: &s.snowflake,
        staging: format!("\"{}\".STAGING.SHOP_PUBLIC_ORDERS", s.database),
        state: &state,
    };
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
