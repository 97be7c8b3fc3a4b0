//! `sluice check`: everything a run needs, checked before a run, read-only and in parallel
//! (each source, the AWS resources named, Snowflake when its options are given), printed as
//! one table (check, target, result, fix) or one JSON object with `--json`. The Snowflake
//! family runs with `--snowflake-account` (and the rest of `sluice run`'s options). Exits 0 when
//! nothing failed (warnings pass), 1 when a check failed, 2 when the command itself was wrong.
//! The checks are `sluice::check`'s and `sluice_core::check`'s; this is only the wiring.

use std::sync::Arc;

use anyhow::{Result, bail};
use clap::Args;
use sluice::check::aws::AwsTargets;
use sluice::secrets::SecretResolver;
use sluice::source::{Credentials, Source};
use sluice_core::check::{CheckResult, Family, Report};
use sluice_core::output::OutputLocation;
use sluice_core::{SourceConfig, TableConfig};

use crate::aws_args::AwsArgs;
use crate::backend::ConfigArgs;

#[derive(Args)]
pub struct CheckArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Check only these tables (and their sources): `source/schema.table`, `schema.table` or
    /// `table`. Repeatable; default every table.
    #[arg(long, short)]
    table: Vec<String>,
    /// The output the runs write to: with `s3://bucket/prefix`, the bucket is checked
    /// (reachable, writable by a zero-byte probe under `_sluice_check/` that is removed, a
    /// lifecycle rule aborting incomplete uploads). A local directory is not checked.
    #[arg(long, env = "SLUICE_OUTPUT")]
    output: Option<String>,
    /// The DynamoDB state table: its keys and indexes are checked.
    #[arg(long, env = "SLUICE_STATE_TABLE")]
    state_table: Option<String>,
    /// The Glue database the runs register partitions in.
    #[arg(long, env = "SLUICE_GLUE_DATABASE")]
    glue_database: Option<String>,
    /// The deployed extract function (name or ARN): invoked as a DryRun.
    #[arg(long, env = "SLUICE_EXTRACT_FUNCTION")]
    extract_function: Option<String>,
    /// The deployed finalize function (name or ARN): invoked as a DryRun.
    #[arg(long, env = "SLUICE_FINALIZE_FUNCTION")]
    finalize_function: Option<String>,
    /// Skip the source checks (only AWS and Snowflake; the Snowflake tables' column types are
    /// then not compared with the sources').
    #[arg(long)]
    no_sources: bool,
    /// Snowflake, as `sluice run` loads into it (`--snowflake-account` and the rest): the
    /// account's set-up as `sluice snowflake doctor` checks it, and each table's RAW and
    /// STAGING (exist or can be created, column types fit the source's current schema).
    #[command(flatten)]
    snowflake: crate::snowflake::WarehouseArgs,
    /// The IAM role Snowflake's storage integration assumes (the stack's
    /// SnowflakeStorageRoleArn); with the next two, the integrations and the external functions
    /// are checked too.
    #[arg(long, env = "SLUICE_SNOWFLAKE_STORAGE_ROLE_ARN")]
    snowflake_storage_role_arn: Option<String>,
    /// The IAM role Snowflake's API integration assumes (SnowflakeApiRoleArn).
    #[arg(long, env = "SLUICE_SNOWFLAKE_API_ROLE_ARN")]
    snowflake_api_role_arn: Option<String>,
    /// The API Gateway stage URL the external functions call (ApiUrl).
    #[arg(long, env = "SLUICE_SNOWFLAKE_API_URL")]
    snowflake_api_url: Option<String>,
    /// The deployed trigger's batch limit: the external functions' MAX_BATCH_ROWS.
    #[arg(long, env = "SLUICE_MAX_BATCH_ROWS", default_value_t = sluice_core::deploy::DEFAULT_MAX_BATCH_ROWS)]
    max_batch_rows: usize,
    /// One JSON object (`ok`, the counts, and `checks`: family, check, target, result,
    /// detail, fix) instead of the table.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: CheckArgs, aws: &AwsArgs) -> Result<bool> {
    let (config, origin) = args.config.load(aws).await?;
    let tables: Vec<&TableConfig> = if args.table.is_empty() {
        config.tables.iter().collect()
    } else {
        args.table
            .iter()
            .map(|selector| {
                config
                    .find_table(selector)
                    .map_err(|e| anyhow::anyhow!("--table {selector} ({origin}): {e}"))
            })
            .collect::<Result<_>>()?
    };
    let output = match &args.output {
        Some(text) => match OutputLocation::parse("--output", text)? {
            OutputLocation::S3 { bucket, prefix } => Some((bucket, prefix)),
            OutputLocation::LocalDir(_) => None,
        },
        None => None,
    };
    let targets = AwsTargets {
        output,
        state_table: args.state_table.clone(),
        config_table: args.config.config_table.clone(),
        glue_database: args.glue_database.clone(),
        functions: [&args.extract_function, &args.finalize_function]
            .into_iter()
            .flatten()
            .cloned()
            .collect(),
    };
    let needs_aws = targets.output.is_some()
        || targets.state_table.is_some()
        || targets.config_table.is_some()
        || targets.glue_database.is_some()
        || !targets.functions.is_empty()
        || config
            .sources
            .iter()
            .any(|s| s.connection.secret_arn.is_some());
    let sdk = if needs_aws {
        Some(aws.sdk_config().await)
    } else {
        None
    };
    let sources = async {
        if args.no_sources {
            return (Vec::new(), Vec::new());
        }
        let checks = config
            .sources
            .iter()
            .filter(|s| tables.iter().any(|t| t.source == s.name))
            .map(|source| {
                let own: Vec<&TableConfig> = tables
                    .iter()
                    .copied()
                    .filter(|t| t.source == source.name)
                    .collect();
                let sdk = sdk.as_ref();
                async move { check_source(source, &own, sdk).await }
            });
        // Sources in parallel; each bounds its own tables' concurrency.
        let (results, adapters): (Vec<_>, Vec<_>) =
            futures::future::join_all(checks).await.into_iter().unzip();
        (
            results.into_iter().flatten().collect::<Vec<_>>(),
            adapters.into_iter().flatten().collect::<Vec<_>>(),
        )
    };
    let aws_checks = async {
        match &sdk {
            Some(sdk) => sluice::check::aws::check_aws(sdk, &targets).await,
            None => Vec::new(),
        }
    };
    let ((sources, adapters), aws_checks) = tokio::join!(sources, aws_checks);
    let mut results: Vec<CheckResult> = sources.into_iter().chain(aws_checks).collect();
    if args.snowflake.given() {
        results.extend(check_snowflake(&args, aws, &config, &tables, &adapters, &targets).await?);
    }
    if results.is_empty() {
        bail!(
            "nothing to check: {origin} selects no table, and no --output s3://…, --state-table, --config-table, --glue-database, function or --snowflake-account was given"
        );
    }
    let report = Report::new(results);
    let text = if args.json {
        format!("{}\n", report.to_json())
    } else {
        report.render_table()
    };
    // Like `run`, this command talks to sources, so SIGPIPE keeps Rust's default (ignored):
    // a reader that went away ends the output, not the verdict.
    let _ = std::io::Write::write_all(&mut std::io::stdout(), text.as_bytes());
    Ok(report.ok())
}

/// The Snowflake family: the session's role and warehouse (the options', else the
/// session's own), then `sluice::check::snowflake`'s checks, each table compared with the file
/// schema its source gives now (read through the adapter the source checks used).
async fn check_snowflake(
    args: &CheckArgs,
    aws: &AwsArgs,
    config: &sluice_core::Config,
    tables: &[&TableConfig],
    adapters: &[(String, Arc<dyn Source>)],
    targets: &AwsTargets,
) -> Result<Vec<CheckResult>> {
    use sluice::check::snowflake::{TableSchema, session_role};
    use sluice_core::check::snowflake::{Integrations, SnowflakeScope};

    let Some((warehouse, database)) = args.snowflake.client(aws).await? else {
        return Ok(Vec::new());
    };
    let (user, role, warehouse_name) = args.snowflake.session_names();
    let (role, warehouse_name) = match (role, warehouse_name) {
        (Some(role), Some(name)) => (role.to_owned(), name.to_owned()),
        _ => match session_role(warehouse.as_ref()).await {
            Ok((session_role, session_warehouse)) => (
                role.map_or(session_role, str::to_owned),
                warehouse_name
                    .map(str::to_owned)
                    .or(session_warehouse)
                    .unwrap_or_else(|| "SLUICE_WH".to_owned()),
            ),
            Err(why) => {
                return Ok(vec![
                    CheckResult::fail(Family::Snowflake, "session", &database, why)
                        .with_fix("--snowflake-role, or a DEFAULT_ROLE for the user"),
                ]);
            }
        },
    };
    let integrations = match (
        &args.snowflake_storage_role_arn,
        &args.snowflake_api_role_arn,
        &args.snowflake_api_url,
    ) {
        (Some(storage), Some(api), Some(url)) => Some(Integrations {
            storage_role_arn: storage.clone(),
            api_role_arn: api.clone(),
            api_url: url.clone(),
        }),
        (None, None, None) => None,
        _ => bail!(
            "give all of --snowflake-storage-role-arn, --snowflake-api-role-arn and --snowflake-api-url, or none"
        ),
    };
    let scope = SnowflakeScope {
        database,
        user: user.unwrap_or_default().to_owned(),
        role,
        warehouse: warehouse_name,
        max_batch_rows: args.max_batch_rows,
        location: targets.output.as_ref().map(|(bucket, prefix)| {
            (
                bucket.clone(),
                Some(prefix.clone()).filter(|p| !p.is_empty()),
            )
        }),
        integrations,
    };
    let mut schemas = Vec::with_capacity(tables.len());
    for table in tables {
        let schema = match adapters.iter().find(|(name, _)| *name == table.source) {
            Some((_, adapter)) => sluice::pipeline::file_schema_of(adapter.as_ref(), table)
                .await
                .map_err(|e| format!("the source's schema could not be read: {e}")),
            None if args.no_sources => Err("--no-sources: the source was not read".to_owned()),
            None => Err(format!(
                "source {} could not be connected (see its checks)",
                table.source
            )),
        };
        schemas.push(TableSchema { table, schema });
    }
    Ok(sluice::check::snowflake::check_snowflake(
        warehouse.as_ref(),
        config,
        &schemas,
        &scope,
        Some(
            "give --snowflake-storage-role-arn, --snowflake-api-role-arn and --snowflake-api-url (the stack's outputs), and an s3:// --output",
        ),
    )
    .await)
}

/// One source's checks: its credentials resolved as a run resolves them (the secret, or
/// `password_env` locally), then the engine's checks through its adapter, which is handed back
/// for the Snowflake checks (the source's current schema).
async fn check_source(
    source: &SourceConfig,
    tables: &[&TableConfig],
    sdk: Option<&aws_config::SdkConfig>,
) -> (Vec<CheckResult>, Option<(String, Arc<dyn Source>)>) {
    let mut results = Vec::new();
    let adapter: std::result::Result<Arc<dyn Source>, CheckResult> = match (
        &source.connection.secret_arn,
        sdk,
    ) {
        (Some(arn), Some(sdk)) => {
            let resolver = SecretResolver::new(sdk);
            match sluice::source::connect::connect_source(source, &resolver).await {
                Ok(adapter) => {
                    results.push(CheckResult::pass(
                        Family::Aws,
                        "secret readable",
                        arn,
                        format!("source {}'s credentials", source.name),
                    ));
                    Ok(adapter)
                }
                Err(sluice::source::connect::ConnectError::Secret(e)) => Err(CheckResult::fail(
                    Family::Aws,
                    "secret readable",
                    arn,
                    e.to_string(),
                )
                .with_fix(
                    "grant secretsmanager:GetSecretValue on the secret (and kms:Decrypt on its key); check connection.secret_arn",
                )),
                Err(sluice::source::connect::ConnectError::Source(e)) => Err(CheckResult::fail(
                    Family::Source,
                    "connection config",
                    &source.name,
                    e.to_string(),
                )
                .with_fix("the connection fields the message names")),
            }
        }
        _ => local_adapter(source),
    };
    match adapter {
        Ok(adapter) => {
            results.extend(sluice::check::check_source(source, tables, adapter.clone()).await);
            (results, Some((source.name.clone(), adapter)))
        }
        Err(failed) => {
            results.push(failed);
            (results, None)
        }
    }
}

/// A source without a secret: a password comes only from the variable `password_env` names.
fn local_adapter(source: &SourceConfig) -> std::result::Result<Arc<dyn Source>, CheckResult> {
    let credentials = match &source.connection.password_env {
        Some(var) => match std::env::var(var) {
            Ok(password) => Some(Credentials {
                user: None,
                password: Some(password),
            }),
            Err(_) => {
                return Err(CheckResult::fail(
                    Family::Source,
                    "credentials",
                    &source.name,
                    format!("connection.password_env names {var}, which is not set"),
                )
                .with_fix(format!("export {var}")));
            }
        },
        None => None,
    };
    sluice::source::connect::source_adapter(source, credentials.as_ref()).map_err(|e| {
        CheckResult::fail(
            Family::Source,
            "connection config",
            &source.name,
            e.to_string(),
        )
        .with_fix("the connection fields the message names")
    })
}
