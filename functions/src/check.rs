//! `sluice.check_source(source [, table])` in the trigger: `sluice check`'s source checks and
//! Snowflake checks of one source's tables, answered per row as a
//! [`CheckAnswer`] (counts per table, every failure and warning with its fix).
//!
//! This is the one route on which the trigger connects to a source: the checks read its
//! catalog (never a row) through the same adapter, secret and connection cap extract uses.
//! API Gateway gives the integration at most 29 s
//! (<https://docs.aws.amazon.com/apigateway/latest/developerguide/api-gateway-execution-service-limits-table.html>,
//! "Maximum integration timeout", 50 ms to 29 s), so the work is bounded by a deadline
//! ([`CHECK_BUDGET`], or less when the invocation has less left): checks still running then
//! are abandoned, and the answer says so (`cut_short`, and a failed `finished in time` row
//! whose fix is `sluice check`, which has no such limit).

use std::time::Duration;

use sluice::check::snowflake::{TableSchema, check_snowflake, session_role};
use sluice::source::connect::ConnectError;
use sluice_core::check::snowflake::SnowflakeScope;
use sluice_core::check::{CheckResult, Family, Report};
use sluice_core::external_function::Row;
use sluice_core::external_function::answer::{ResponseBody, RowError, RowResult};
use sluice_core::external_function::check::{CheckAnswer, CheckRequest};
use sluice_core::output::OutputLocation;
use sluice_core::{Config, TableConfig};
use tokio::time::{Instant, timeout_at};
use tracing::{info, instrument};

use crate::deployment::{Deployment, DeploymentError};
use crate::flow::Reply;

/// The longest a check call works before it answers: well inside API Gateway's 29 s and the
/// trigger's own timeout (at most 28 s), leaving time to answer.
pub const CHECK_BUDGET: Duration = Duration::from_secs(20);

/// What the call leaves to the checks: [`CHECK_BUDGET`], or the invocation's time left less
/// a margin to answer, whichever is shorter.
pub fn budget(time_left: Option<Duration>) -> Duration {
    let margin = Duration::from_secs(3);
    match time_left {
        Some(left) => CHECK_BUDGET.min(left.saturating_sub(margin)),
        None => CHECK_BUDGET,
    }
}

/// Every row's checks, the rows one after another under one deadline.
#[instrument(skip_all, fields(rows = rows.len(), budget_ms = budget.as_millis() as u64))]
pub async fn check(
    deployment: &Deployment,
    rows: Vec<Row<CheckRequest>>,
    budget: Duration,
) -> Reply {
    let deadline = Instant::now() + budget;
    let config = match deployment.config().await {
        Ok(config) => config,
        Err(e) => return Reply::Failed(format!("reading the configuration: {e}")),
    };
    let mut results = Vec::with_capacity(rows.len());
    for Row { row, request } in rows {
        let result = match request {
            Err(message) => RowError::new(message).into(),
            Ok(request) => match check_row(deployment, &config, &request, deadline, budget).await {
                Ok(answer) => RowResult::Check(Box::new(answer)),
                Err(message) => RowError::new(message).into(),
            },
        };
        results.push((row, result));
    }
    Reply::Rows(ResponseBody::new(results))
}

/// One row: its source's checks and, when the deployment loads into Snowflake, the Snowflake
/// checks, at once. `Err` is a row error (an unknown source or table).
async fn check_row(
    deployment: &Deployment,
    config: &Config,
    request: &CheckRequest,
    deadline: Instant,
    budget: Duration,
) -> Result<CheckAnswer, String> {
    let source = config
        .sources
        .iter()
        .find(|s| s.name == request.source)
        .ok_or_else(|| {
            format!(
                "source: no source '{}' is configured (known: {})",
                request.source,
                config
                    .sources
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?;
    let tables: Vec<&TableConfig> = match &request.table {
        None => config
            .tables
            .iter()
            .filter(|t| t.source == source.name)
            .collect(),
        Some(name) => {
            let known = || {
                config
                    .tables
                    .iter()
                    .filter(|t| t.source == source.name)
                    .map(|t| t.table.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let table = config
                .tables
                .iter()
                .find(|t| t.source == source.name && t.table == *name)
                .ok_or_else(|| {
                    format!(
                        "table: source {} has no table '{name}' (configured: {})",
                        source.name,
                        known()
                    )
                })?;
            vec![table]
        }
    };
    let mut results = Vec::new();
    let adapter = match deployment.source_adapter(source).await {
        Ok(adapter) => {
            if let Some(arn) = &source.connection.secret_arn {
                results.push(CheckResult::pass(
                    Family::Aws,
                    "secret readable",
                    arn,
                    format!("source {}'s credentials", source.name),
                ));
            }
            Some(adapter)
        }
        Err(DeploymentError::Connect(ConnectError::Secret(e))) => {
            results.push(
                CheckResult::fail(
                    Family::Aws,
                    "secret readable",
                    source.connection.secret_arn.as_deref().unwrap_or(&source.name),
                    e.to_string(),
                )
                .with_fix(
                    "grant the trigger's role secretsmanager:GetSecretValue on the secret (the template's SourceSecretArns); check connection.secret_arn",
                ),
            );
            None
        }
        Err(e) => {
            results.push(
                CheckResult::fail(
                    Family::Source,
                    "connection config",
                    &source.name,
                    e.to_string(),
                )
                .with_fix("the connection fields the message names"),
            );
            None
        }
    };
    let sources = async {
        match &adapter {
            Some(adapter) => timeout_at(
                deadline,
                sluice::check::check_source(source, &tables, adapter.clone()),
            )
            .await
            .ok(),
            None => Some(Vec::new()),
        }
    };
    let snowflake = timeout_at(
        deadline,
        snowflake_checks(deployment, config, &tables, adapter.as_deref()),
    );
    let (sources, snowflake) = tokio::join!(sources, snowflake);
    let mut cut = Vec::new();
    match sources {
        Some(rows) => results.extend(rows),
        None => cut.push("the source checks"),
    }
    match snowflake {
        Ok(rows) => results.extend(rows),
        Err(_) => cut.push("the Snowflake checks"),
    }
    let cut_short = (!cut.is_empty()).then(|| {
        format!(
            "{} did not finish within {} s (an external function's call must answer within API Gateway's 29 s); run sluice check for the rest",
            cut.join(" and "),
            budget.as_secs()
        )
    });
    if let Some(message) = &cut_short {
        results.push(
            CheckResult::fail(Family::Source, "finished in time", &source.name, message.clone())
                .with_fix(format!(
                    "sluice check --config-table <the stack's config table> --table {}/… (no time limit), or check fewer tables per call: sluice.check_source('{}', '<table>')",
                    source.name, source.name
                )),
        );
    }
    let report = Report::new(results);
    let names: Vec<&str> = tables.iter().map(|t| t.table.as_str()).collect();
    let answer = CheckAnswer::of(&source.name, &names, &report, cut_short);
    info!(
        source = %source.name,
        passed = answer.passed,
        warnings = answer.warnings,
        failed = answer.failed,
        cut_short = answer.cut_short.is_some(),
        "checked"
    );
    Ok(answer)
}

/// The Snowflake family, as `sluice check` runs it, with what the deployment knows: its
/// Snowflake settings and output. Not the integrations or the external functions: this call
/// came through them, and the trigger is not told their IAM roles.
async fn snowflake_checks(
    deployment: &Deployment,
    config: &Config,
    tables: &[&TableConfig],
    adapter: Option<&dyn sluice::source::Source>,
) -> Vec<CheckResult> {
    let (warehouse, settings) = match deployment.warehouse().await {
        Ok(Some(found)) => found,
        Ok(None) => return Vec::new(),
        Err(e) => {
            return vec![
                CheckResult::fail(
                    Family::Snowflake,
                    "session",
                    "SLUICE_SNOWFLAKE_ACCOUNT",
                    e.to_string(),
                )
                .with_fix("the SLUICE_SNOWFLAKE_* settings of the stack and the key secret"),
            ];
        }
    };
    let (role, warehouse_name) = match (&settings.role, &settings.warehouse) {
        (Some(role), Some(name)) => (role.clone(), name.clone()),
        _ => match session_role(warehouse.as_ref()).await {
            Ok((role, name)) => (
                settings.role.clone().unwrap_or(role),
                settings
                    .warehouse
                    .clone()
                    .or(name)
                    .unwrap_or_else(|| "SLUICE_WH".to_owned()),
            ),
            Err(why) => {
                return vec![
                    CheckResult::fail(Family::Snowflake, "session", &settings.database, why)
                        .with_fix("SnowflakeRole in the stack, or a DEFAULT_ROLE for the user"),
                ];
            }
        },
    };
    let location = match &deployment.settings.output {
        OutputLocation::S3 { bucket, prefix } => Some((
            bucket.clone(),
            Some(prefix.clone()).filter(|p| !p.is_empty()),
        )),
        OutputLocation::LocalDir(_) => None,
    };
    let scope = SnowflakeScope {
        database: settings.database.clone(),
        user: settings.user.clone(),
        role,
        warehouse: warehouse_name,
        max_batch_rows: deployment.settings.max_batch_rows,
        location,
        integrations: None,
    };
    let mut schemas = Vec::with_capacity(tables.len());
    for table in tables {
        let schema = match adapter {
            Some(adapter) => sluice::pipeline::file_schema_of(adapter, table)
                .await
                .map_err(|e| format!("the source's schema could not be read: {e}")),
            None => Err(format!(
                "source {} could not be connected (see its checks)",
                table.source
            )),
        };
        schemas.push(TableSchema { table, schema });
    }
    check_snowflake(warehouse.as_ref(), config, &schemas, &scope, None).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_stays_inside_the_invocation_and_api_gateway() {
        assert_eq!(budget(None), CHECK_BUDGET);
        assert_eq!(budget(Some(Duration::from_secs(60))), CHECK_BUDGET);
        assert_eq!(
            budget(Some(Duration::from_secs(10))),
            Duration::from_secs(7)
        );
        assert_eq!(budget(Some(Duration::from_secs(1))), Duration::ZERO);
    }
}
