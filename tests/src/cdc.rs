//! What the CDC end-to-end tests of both engines ask of a run and of STAGING, whatever the
//! source: a run that must complete or fail, a new snapshot, the committed log position, and
//! STAGING's rows as the text a test compares with the source's.

use sluice::Quiet;
use sluice::warehouse::Statement;
use sluice::warehouse::snowflake::SnowflakeClient;
use sluice_core::{RunRecord, RunStatus, ScalarValue, TableConfig};

use crate::s3::S3Harness;

/// A run of `table` that must complete.
pub async fn completed(h: &S3Harness, table: &TableConfig) -> RunRecord {
    let record = h.pipeline.run_table(table, &Quiet).await.unwrap();
    assert_eq!(record.status, RunStatus::Completed, "{:?}", record.error);
    record
}

/// A run of `table` that must fail, and its message.
pub async fn refused(h: &S3Harness, table: &TableConfig) -> String {
    let record = h.pipeline.run_table(table, &Quiet).await.unwrap();
    assert_eq!(record.status, RunStatus::Failed, "{:?}", record.merge);
    record.error.unwrap().message
}

/// A run with `full_reload`, which must complete as a new snapshot.
pub async fn full_reload(h: &S3Harness, table: &TableConfig) -> RunRecord {
    let record = h
        .pipeline
        .run_table_with(
            table,
            &Quiet,
            sluice::pipeline::RunStart {
                full_reload: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(record.status, RunStatus::Completed, "{:?}", record.error);
    assert!(
        record.plan.as_ref().unwrap().cdc.as_ref().unwrap().snapshot,
        "a full reload is a new snapshot"
    );
    record
}

/// A cdc watermark: a log position.
pub fn position(watermark: Option<&ScalarValue>) -> u64 {
    match watermark {
        Some(ScalarValue::Int(at)) => u64::try_from(*at).unwrap(),
        other => panic!("a cdc watermark is a log position, found {other:?}"),
    }
}

/// The table's committed watermark.
pub async fn watermark(h: &S3Harness, table: &TableConfig) -> u64 {
    position(h.watermark(&table.key()).await.as_ref())
}

/// The first column of `sql`'s rows, as text, sorted.
pub async fn text_rows(client: &SnowflakeClient, sql: &str) -> Vec<String> {
    let result = client.execute(&Statement::new(sql)).await.unwrap();
    let mut rows: Vec<String> = result
        .rows
        .iter()
        .map(|r| r[0].as_str().unwrap().to_owned())
        .collect();
    rows.sort();
    rows
}

/// The keys of `staging` rows marked deleted, ascending.
pub async fn marked(client: &SnowflakeClient, staging: &str) -> Vec<i64> {
    let result = client
        .execute(&Statement::new(format!(
            "SELECT \"id\" FROM {staging} WHERE \"_sluice_deleted\" = TRUE ORDER BY 1"
        )))
        .await
        .unwrap();
    result.rows.iter().map(|r| r[0].as_i64().unwrap()).collect()
}

/// The rows `staging_rows` (a `SELECT … FROM` STAGING without a `WHERE`) gives for rows not
/// marked deleted, sorted.
pub async fn live_rows(client: &SnowflakeClient, staging_rows: &str) -> Vec<String> {
    text_rows(
        client,
        &format!("{staging_rows} WHERE COALESCE(\"_sluice_deleted\", FALSE) = FALSE"),
    )
    .await
}
