//! `sluice check`'s AWS checks: the lake bucket (reachable, writable by a zero-byte probe
//! under `_sluice_check/` that is removed at once, its lifecycle rule), the DynamoDB state and
//! config tables (keys and indexes as `sluice dev create-tables` and the template make them),
//! the Glue database, and the extract and finalize functions (a `DryRun` invoke). Every call
//! is read-only but the probe; each answer is judged in `sluice_core::check`.

use aws_config::SdkConfig;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::KeyType;
use sluice_core::check::{
    CheckResult, Family, KeyLayout, LifecycleRule, judge_key_layout, judge_lifecycle,
};
use tracing::instrument;

use crate::ddb::{PK, RUNS_BY_TABLE, RUNS_BY_TIME, SK};

/// What the AWS checks look at; each is checked only when named.
#[derive(Debug, Clone, Default)]
pub struct AwsTargets {
    /// The output bucket and key prefix (`s3://bucket/prefix`).
    pub output: Option<(String, String)>,
    pub state_table: Option<String>,
    pub config_table: Option<String>,
    pub glue_database: Option<String>,
    /// The functions a run invokes: extract and finalize, by name or ARN.
    pub functions: Vec<String>,
}

/// Every AWS check of `targets`, concurrently.
#[instrument(skip_all)]
pub async fn check_aws(sdk: &SdkConfig, targets: &AwsTargets) -> Vec<CheckResult> {
    let bucket = async {
        match &targets.output {
            Some((bucket, prefix)) => check_bucket(sdk, bucket, prefix).await,
            None => Vec::new(),
        }
    };
    let dynamo = async {
        let client = aws_sdk_dynamodb::Client::new(sdk);
        let mut results = Vec::new();
        if let Some(table) = &targets.state_table {
            results.push(check_dynamo_table(&client, table, true).await);
        }
        if let Some(table) = &targets.config_table {
            results.push(check_dynamo_table(&client, table, false).await);
        }
        results
    };
    let glue = async {
        match &targets.glue_database {
            Some(database) => vec![check_glue_database(sdk, database).await],
            None => Vec::new(),
        }
    };
    let functions = futures::future::join_all(
        targets
            .functions
            .iter()
            .map(|function| check_function(sdk, function)),
    );
    let (bucket, dynamo, glue, functions) = tokio::join!(bucket, dynamo, glue, functions);
    bucket
        .into_iter()
        .chain(dynamo)
        .chain(glue)
        .chain(functions)
        .collect()
}

/// The AWS error's code and message, without the request (which carries no secret, but is
/// noise).
fn aws_message<E, R>(e: &SdkError<E, R>) -> String
where
    E: std::error::Error + ProvideErrorMetadata + 'static,
    R: std::fmt::Debug,
{
    match (e.code(), e.message()) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code.to_owned(),
        _ => crate::error_chain(e),
    }
}

fn s3_client(sdk: &SdkConfig) -> aws_sdk_s3::Client {
    // Path-style addressing: a loopback endpoint (moto) has no bucket subdomains; real S3
    // answers path-style requests too.
    let mut config = aws_sdk_s3::config::Builder::from(sdk);
    if sdk.endpoint_url().is_some() {
        config = config.force_path_style(true);
    }
    aws_sdk_s3::Client::from_conf(config.build())
}

/// The bucket exists and this identity may use it, may write and delete under the prefix,
/// and has a lifecycle rule that aborts incomplete multipart uploads there.
async fn check_bucket(sdk: &SdkConfig, bucket: &str, prefix: &str) -> Vec<CheckResult> {
    let s3 = s3_client(sdk);
    let target = format!("s3://{bucket}/{prefix}");
    // HeadBucket answers 200 when the bucket exists and the caller may access it, else a
    // bare 404 or 403 with no body
    // (<https://hackage.haskell.org/package/amazonka-s3-2.0/docs/Amazonka-S3-HeadBucket.html>, from
    // the service's own description).
    if let Err(e) = s3.head_bucket().bucket(bucket).send().await {
        let status = e.raw_response().map(|r| r.status().as_u16());
        let (detail, fix) = match status {
            Some(404) => (
                "the bucket does not exist".to_owned(),
                "create it (the template's lake bucket) or fix --output / SLUICE_OUTPUT",
            ),
            Some(403) => (
                "access denied".to_owned(),
                "grant s3:ListBucket on the bucket to this role",
            ),
            _ => (
                aws_message(&e),
                "check the region and endpoint (AWS_REGION, SLUICE_AWS_ENDPOINT)",
            ),
        };
        return vec![
            CheckResult::fail(Family::Aws, "bucket reachable", &target, detail).with_fix(fix),
        ];
    }
    let mut results = vec![CheckResult::pass(
        Family::Aws,
        "bucket reachable",
        &target,
        "exists and is accessible",
    )];
    results.push(probe_write(&s3, bucket, prefix, &target).await);
    results.push(lifecycle(&s3, bucket, prefix).await);
    results
}

/// A zero-byte object under `<prefix>/_sluice_check/`, deleted at once: where no reader of
/// the lake looks (the manifests and Glue partitions never list it).
async fn probe_write(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
    target: &str,
) -> CheckResult {
    let key = format!(
        "{}_sluice_check/{}",
        if prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", prefix.trim_end_matches('/'))
        },
        sluice_core::RunId::new()
    );
    let check = "bucket writable";
    let fix = format!(
        "grant s3:PutObject and s3:DeleteObject on arn:aws:s3:::{bucket}/{prefix}* to this role"
    );
    if let Err(e) = s3
        .put_object()
        .bucket(bucket)
        .key(&key)
        .body(Vec::new().into())
        .send()
        .await
    {
        return CheckResult::fail(
            Family::Aws,
            check,
            target,
            format!("PutObject: {}", aws_message(&e)),
        )
        .with_fix(fix);
    }
    match s3.delete_object().bucket(bucket).key(&key).send().await {
        Ok(_) => CheckResult::pass(
            Family::Aws,
            check,
            target,
            "a zero-byte probe was written and removed",
        ),
        Err(e) => CheckResult::fail(
            Family::Aws,
            check,
            target,
            format!(
                "the probe {key} was written but not removed: {}",
                aws_message(&e)
            ),
        )
        .with_fix(fix),
    }
}

async fn lifecycle(s3: &aws_sdk_s3::Client, bucket: &str, prefix: &str) -> CheckResult {
    // A bucket without a lifecycle configuration answers the error code
    // NoSuchLifecycleConfiguration
    // (<https://docs.aws.amazon.com/goto/WebAPI/s3/GetBucketLifecycle>: "Error code:
    // NoSuchLifecycleConfiguration … 404");
    // the rule's shape is
    // <https://docs.aws.amazon.com/AmazonS3/latest/userguide/mpu-abort-incomplete-mpu-lifecycle-config.html>.
    match s3
        .get_bucket_lifecycle_configuration()
        .bucket(bucket)
        .send()
        .await
    {
        Ok(answer) => {
            let rules: Vec<LifecycleRule> = answer
                .rules()
                .iter()
                .map(|rule| LifecycleRule {
                    enabled: rule.status() == &aws_sdk_s3::types::ExpirationStatus::Enabled,
                    abort_incomplete_days: rule
                        .abort_incomplete_multipart_upload()
                        .map(|a| a.days_after_initiation().unwrap_or_default()),
                    #[allow(deprecated)]
                    prefix: rule
                        .filter()
                        .and_then(|f| f.prefix().map(str::to_owned))
                        .or_else(|| rule.prefix().map(str::to_owned))
                        .unwrap_or_default(),
                })
                .collect();
            judge_lifecycle(bucket, prefix, Some(&rules))
        }
        Err(e) if e.code() == Some("NoSuchLifecycleConfiguration") => {
            judge_lifecycle(bucket, prefix, None)
        }
        Err(e) => CheckResult::fail(
            Family::Aws,
            "lifecycle rule",
            bucket,
            format!("GetBucketLifecycleConfiguration: {}", aws_message(&e)),
        )
        .with_fix("grant s3:GetLifecycleConfiguration on the bucket to this role"),
    }
}

/// What `sluice dev create-tables` and the template create: `pk`/`sk` on both tables, and on
/// the state table the two run indexes.
fn expected_layout(state: bool) -> KeyLayout {
    let s = |t: &str| Some(t.to_owned());
    KeyLayout {
        hash: s(PK),
        range: s(SK),
        indexes: if state {
            vec![
                (RUNS_BY_TABLE.to_owned(), s("table_key"), s("run_id")),
                (RUNS_BY_TIME.to_owned(), s("run_kind"), s("run_id")),
            ]
        } else {
            Vec::new()
        },
    }
}

fn layout_of(
    keys: &[aws_sdk_dynamodb::types::KeySchemaElement],
) -> (Option<String>, Option<String>) {
    let find = |kind: KeyType| {
        keys.iter()
            .find(|k| k.key_type() == &kind)
            .map(|k| k.attribute_name().to_owned())
    };
    (find(KeyType::Hash), find(KeyType::Range))
}

async fn check_dynamo_table(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    state: bool,
) -> CheckResult {
    let check = if state { "state table" } else { "config table" };
    let fix = "deploy the template's table (sluice dev create-tables on a local stack); a table with other keys must be recreated";
    // DescribeTable answers the key schema and every index, or ResourceNotFoundException
    // (<https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/API_DescribeTable.html>).
    let described = match client.describe_table().table_name(table).send().await {
        Ok(answer) => answer,
        Err(e) if e.code() == Some("ResourceNotFoundException") => {
            return CheckResult::fail(Family::Aws, check, table, "the table does not exist")
                .with_fix(format!(
                    "{fix}; or set {}",
                    if state {
                        "--state-table / SLUICE_STATE_TABLE"
                    } else {
                        "--config-table / SLUICE_CONFIG_TABLE"
                    }
                ));
        }
        Err(e) => {
            return CheckResult::fail(Family::Aws, check, table, aws_message(&e))
                .with_fix("grant dynamodb:DescribeTable on the table to this role");
        }
    };
    let Some(description) = described.table() else {
        return CheckResult::fail(Family::Aws, check, table, "DescribeTable answered no table");
    };
    let (hash, range) = layout_of(description.key_schema());
    let found = KeyLayout {
        hash,
        range,
        indexes: description
            .global_secondary_indexes()
            .iter()
            .map(|index| {
                let (h, r) = layout_of(index.key_schema());
                (index.index_name().unwrap_or_default().to_owned(), h, r)
            })
            .collect(),
    };
    judge_key_layout(check, table, &expected_layout(state), &found, fix)
}

async fn check_glue_database(sdk: &SdkConfig, database: &str) -> CheckResult {
    let client = aws_sdk_glue::Client::new(sdk);
    // GetDatabase fails with EntityNotFoundException for a missing database
    // (<https://docs.aws.amazon.com/goto/SdkForKotlin/glue-2017-03-31/GetDatabase>), as the
    // catalog adapter relies on too.
    match client.get_database().name(database).send().await {
        Ok(_) => CheckResult::pass(Family::Aws, "glue database", database, "exists"),
        Err(e) if e.code() == Some("EntityNotFoundException") => CheckResult::fail(
            Family::Aws,
            "glue database",
            database,
            "the database does not exist",
        )
        .with_fix(
            "deploy the template's Glue database, or set --glue-database / SLUICE_GLUE_DATABASE",
        ),
        Err(e) => CheckResult::fail(Family::Aws, "glue database", database, aws_message(&e))
            .with_fix("grant glue:GetDatabase to this role"),
    }
}

/// A `DryRun` invoke validates the parameters and that the caller may invoke the function,
/// without running it
/// (<https://docs.aws.amazon.com/sdk-for-kotlin/api/latest/lambda/aws.sdk.kotlin.services.lambda.model/-invoke-request/invocation-type.html>).
async fn check_function(sdk: &SdkConfig, function: &str) -> CheckResult {
    let client = aws_sdk_lambda::Client::new(sdk);
    let check = "function invokable";
    match client
        .invoke()
        .function_name(function)
        .invocation_type(aws_sdk_lambda::types::InvocationType::DryRun)
        .send()
        .await
    {
        Ok(_) => CheckResult::pass(Family::Aws, check, function, "DryRun accepted"),
        Err(e) if e.code() == Some("ResourceNotFoundException") => CheckResult::fail(
            Family::Aws,
            check,
            function,
            "the function does not exist",
        )
        .with_fix("deploy the stack, or set --extract-function / --finalize-function (SLUICE_EXTRACT_FUNCTION, SLUICE_FINALIZE_FUNCTION)"),
        Err(e) => CheckResult::fail(Family::Aws, check, function, aws_message(&e))
            .with_fix("grant lambda:InvokeFunction on the function to this role"),
    }
}
