//! `sluice check`: everything a run needs, checked before a run, read-only and in parallel
//! (each source, the AWS resources named, Snowflake when its options are given), printed as
//! one table (check, target, result, fix) or one JSON object with `--json`. Exits 0 when
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
    /// Skip the source checks (only AWS and Snowflake).
    #[arg(long)]
    no_sources: bool,
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
            return Vec::new();
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
        futures::future::join_all(checks)
            .await
            .into_iter()
            .flatten()
            .collect()
    };
    let aws_checks = async {
        match &sdk {
            Some(sdk) => sluice::check::aws::check_aws(sdk, &targets).await,
            None => Vec::new(),
        }
    };
    let (sources, aws_checks) = tokio::join!(sources, aws_checks);
    let results: Vec<CheckResult> = sources.into_iter().chain(aws_checks).collect();
    if results.is_empty() {
        bail!(
            "nothing to check: {origin} selects no table, and no --output s3://…, --state-table, --config-table, --glue-database or function was given"
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

/// One source's checks: its credentials resolved as a run resolves them (the secret, or
/// `password_env` locally), then the engine's checks through its adapter.
async fn check_source(
    source: &SourceConfig,
    tables: &[&TableConfig],
    sdk: Option<&aws_config::SdkConfig>,
) -> Vec<CheckResult> {
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
        Ok(adapter) => results.extend(sluice::check::check_source(source, tables, adapter).await),
        Err(failed) => results.push(failed),
    }
    results
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
