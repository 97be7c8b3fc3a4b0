//! `sluice run` writing to S3 and registering in Glue (moto), and its output settings'
//! errors, as a user meets them.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Output;

use common::text;

use parquet::basic::Compression;
use parquet::file::reader::{FileReader, SerializedFileReader};
use sluice_tests::moto::MotoServer;
use sluice_tests::s3::{Lake, get_object, list_keys};
use sluice_tests::{shop_config, shop_db};

fn sluice_on(moto: &MotoServer, args: &[&str], cwd: &Path) -> Output {
    common::sluice_on(moto, args, cwd, &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_writes_to_s3_and_registers_the_partition_in_glue() {
    let moto = MotoServer::shared();
    let lake = Lake::create(moto).await;
    let (s3, glue, bucket, database) = (&lake.s3, &lake.glue, &lake.bucket, &lake.database);
    let db = shop_db("cli_s3").await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("shop.yaml");
    std::fs::write(
        &config,
        shop_config(&db, "  - source: shop\n    table: public.customers\n"),
    )
    .unwrap();

    let out = sluice_on(
        moto,
        &[
            "run",
            "--config",
            config.to_str().unwrap(),
            "--output",
            &format!("s3://{bucket}/lake/raw"),
            "--glue-database",
            database,
            "--compression",
            "snappy",
        ],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(&format!("s3://{bucket}/lake/raw")),
        "{stdout}"
    );

    let keys = list_keys(s3, bucket).await;
    let data: Vec<&String> = keys.iter().filter(|k| k.ends_with(".parquet")).collect();
    assert!(!data.is_empty(), "{keys:?}");
    assert!(
        keys.iter()
            .all(|k| k.starts_with("lake/raw/postgres/shop/public.customers/")),
        "{keys:?}"
    );
    // Every column chunk is snappy-compressed, and the rows are the source's count.
    let mut rows = 0;
    for key in data {
        let reader = SerializedFileReader::new(get_object(s3, bucket, key).await).unwrap();
        for group in reader.metadata().row_groups() {
            rows += group.num_rows();
            for column in group.columns() {
                assert_eq!(column.compression(), Compression::SNAPPY, "{key}");
            }
        }
    }
    let source_rows: i64 = db
        .client()
        .await
        .query_one("SELECT count(*) FROM public.customers", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, source_rows);

    let partitions = glue
        .get_partitions()
        .database_name(database)
        .table_name("shop_public_customers")
        .send()
        .await
        .unwrap();
    assert_eq!(partitions.partitions().len(), 1);
    let location = partitions.partitions()[0]
        .storage_descriptor()
        .unwrap()
        .location()
        .unwrap();
    assert!(
        location.starts_with(&format!(
            "s3://{bucket}/lake/raw/postgres/shop/public.customers/"
        )),
        "{location}"
    );
}

#[test]
fn bad_output_settings_are_named_and_nothing_is_written() {
    let moto = MotoServer::shared();
    let dir = tempfile::tempdir().unwrap();
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../infra/config/shop.yaml");
    let config = config.to_str().unwrap();
    let cases: [(&[&str], &str); 7] = [
        (
            &["--output", "s3://Bad_Bucket/raw"],
            "--output: bucket 'Bad_Bucket' may contain only lowercase letters",
        ),
        (
            &["--output", "s3://bucket/raw data"],
            "--output: prefix 'raw data' contains ' '",
        ),
        (
            &["--output", "gs://bucket/raw"],
            "--output: unsupported scheme 'gs://'",
        ),
        (
            &["--output", "out", "--glue-database", "raw"],
            "--glue-database needs an s3:// --output",
        ),
        (
            &["--output", "s3://bucket/raw", "--glue-database", "Raw-DB"],
            "--glue-database 'Raw-DB': contains 'R'",
        ),
        (&["--part-mb", "4"], "--part-mb"),
        (
            &["--aws-endpoint", "http://10.1.2.3:5000"],
            "plain http is allowed only on loopback",
        ),
    ];
    for (extra, expected) in cases {
        let mut args = vec!["run", "--config", config];
        args.extend_from_slice(extra);
        let out = sluice_on(moto, &args, dir.path());
        assert_eq!(
            out.status.code(),
            Some(2),
            "{extra:?}: {}",
            text(&out.stderr)
        );
        let err = text(&out.stderr);
        assert!(err.contains(expected), "{extra:?}: {err}");
        assert!(
            std::fs::read_dir(dir.path()).unwrap().next().is_none(),
            "{extra:?} wrote something"
        );
    }
}
