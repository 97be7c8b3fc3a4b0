//! `sluice check`'s Snowflake checks, through the [`Warehouse`] port as sluice's user and
//! role: `sluice snowflake doctor`'s probes (the ones the scope lets it judge), then per table
//! whether RAW and STAGING exist or the role may create them (`SHOW GRANTS`), and for those
//! that exist whether their columns fit the source's current schema as the loader would map
//! it. The statements and the judging are `sluice_core::check::snowflake`'s and
//! `sluice_core::doctor`'s. Every statement is read-only.

use std::collections::BTreeSet;

use arrow::datatypes::SchemaRef;
use sluice_core::check::snowflake::{
    SESSION_SQL, SchemaVerdict, SnowflakeScope, doctor_plan, doctor_result, granted_roles,
    grants_on_database_sql, grants_on_schema_sql, grants_to_role_sql, is_missing, judge_layer,
    judge_schema, schema_needs, wanted_columns,
};
use sluice_core::check::{CheckResult, Family};
use sluice_core::doctor::{Answer, judge};
use sluice_core::staging::TableTargets;
use sluice_core::{Config, TableConfig};
use tracing::{debug, instrument};

use crate::warehouse::load::existing_columns;
use crate::warehouse::{QueryResult, Statement, Value, Warehouse};

/// The most roles followed through `SHOW GRANTS TO ROLE` (a role hierarchy is rarely deeper
/// than a few; the bound keeps a cycle or a huge tree from costing the check its time).
const MAX_ROLES: usize = 32;

/// A table to check and the file schema its next run would write (`Err`: why it is unknown,
/// e.g. the source could not be read).
pub struct TableSchema<'a> {
    pub table: &'a TableConfig,
    pub schema: Result<SchemaRef, String>,
}

/// A result as text, the way `doctor` judges it (also `sluice snowflake doctor`'s).
pub fn answer_of(result: &QueryResult) -> Answer {
    let text = |value: &Value| match value {
        Value::Null => None,
        Value::Text(t) => Some(t.clone()),
        Value::Boolean(b) => Some(b.to_string()),
        Value::Number { .. } => Some(
            value
                .as_i64()
                .map_or_else(|| format!("{value:?}"), |n| n.to_string()),
        ),
        Value::Variant(v) => Some(v.to_string()),
        other => Some(format!("{other:?}")),
    };
    Answer {
        columns: result
            .columns
            .iter()
            .map(|c| c.name.to_ascii_lowercase())
            .collect(),
        rows: result
            .rows
            .iter()
            .map(|r| r.iter().map(text).collect())
            .collect(),
    }
}

async fn ask(warehouse: &dyn Warehouse, sql: &str) -> Result<Answer, String> {
    warehouse
        .execute(&Statement::new(sql))
        .await
        .map(|r| answer_of(&r))
        .map_err(|e| e.to_string())
}

/// The session's role and warehouse, for a scope that was not told them.
pub async fn session_role(warehouse: &dyn Warehouse) -> Result<(String, Option<String>), String> {
    let answer = ask(warehouse, SESSION_SQL).await?;
    let cell = |i: usize| {
        answer
            .rows
            .first()
            .and_then(|r| r.get(i))
            .cloned()
            .flatten()
    };
    match cell(0) {
        Some(role) => Ok((role, cell(1))),
        None => Err("the session has no role".into()),
    }
}

/// Every Snowflake check of `tables` (of `config`), in the order a person reads them: the
/// account's set-up (doctor), then each table's RAW and STAGING.
#[instrument(skip_all, fields(database = %scope.database, tables = tables.len()))]
pub async fn check_snowflake(
    warehouse: &dyn Warehouse,
    config: &Config,
    tables: &[TableSchema<'_>],
    scope: &SnowflakeScope,
    explain_left_out: Option<&str>,
) -> Vec<CheckResult> {
    let mut results = Vec::new();
    // The doctor over the checked tables only (its merge-procedure probes follow them).
    let mut checked = config.clone();
    checked.tables = tables.iter().map(|t| t.table.clone()).collect();
    match doctor_plan(&checked, scope) {
        Ok(plan) => {
            for probe in &plan.probes {
                let answer = ask(warehouse, &probe.sql).await;
                let outcome = judge(
                    probe,
                    answer.as_ref().map_err(String::as_str),
                    &plan.options,
                    &plan.setup,
                );
                results.push(doctor_result(&outcome));
            }
            if let (false, Some(how)) = (plan.left_out.is_empty(), explain_left_out) {
                results.push(
                    CheckResult::warn(
                        Family::Snowflake,
                        "not checked",
                        &scope.database,
                        format!("{}: not told their settings", plan.left_out.join("; ")),
                    )
                    .with_fix(how.to_owned()),
                );
            }
        }
        Err(why) => results.push(
            CheckResult::fail(Family::Snowflake, "options", &scope.database, why)
                .with_fix("the --snowflake-* options the message names"),
        ),
    }

    // The role and the roles it inherits, whose grants count as its own.
    let mut roles: BTreeSet<String> = BTreeSet::new();
    let mut queue = vec![scope.role.clone()];
    while let Some(role) = queue.pop() {
        if roles.len() >= MAX_ROLES || !roles.insert(role.to_ascii_uppercase()) {
            continue;
        }
        match ask(warehouse, &grants_to_role_sql(&role)).await {
            Ok(answer) => queue.extend(granted_roles(&answer)),
            Err(e) => debug!(role = %role, error = %e, "the role's grants could not be read"),
        }
    }

    let configs: Vec<&TableConfig> = tables.iter().map(|t| t.table).collect();
    let mut verdicts: Vec<(String, String, SchemaVerdict)> = Vec::new();
    let mut on_database: Option<Result<Answer, String>> = None;
    for need in schema_needs(&configs, &scope.database) {
        let on_schema = ask(
            warehouse,
            &grants_on_schema_sql(&need.database, &need.schema),
        )
        .await;
        let database = match &on_schema {
            Err(e) if is_missing(e) => {
                if on_database.is_none() {
                    on_database =
                        Some(ask(warehouse, &grants_on_database_sql(&need.database)).await);
                }
                on_database
                    .as_ref()
                    .map(|a| a.as_ref().map_err(String::as_str))
            }
            _ => None,
        };
        let verdict = judge_schema(
            &need,
            &scope.role,
            &roles,
            on_schema.as_ref().map_err(String::as_str),
            database,
        );
        verdicts.push((need.database.clone(), need.schema.clone(), verdict));
    }
    let verdict_of = |object: &sluice_core::snowflake::ObjectName| {
        verdicts
            .iter()
            .find(|(d, s, _)| *d == object.database && *s == object.schema)
            .map(|(_, _, v)| v.clone())
            .unwrap_or_else(|| Err(("no verdict".into(), String::new())))
    };

    for TableSchema { table, schema } in tables {
        let targets = TableTargets::resolve(table, &scope.database);
        let wanted = schema
            .as_ref()
            .map_err(Clone::clone)
            .and_then(|s| wanted_columns(table, &scope.database, s));
        for (layer, object, wanted) in [
            ("raw", &targets.raw, wanted.as_ref().map(|(raw, _)| raw)),
            (
                "staging",
                &targets.staging,
                wanted.as_ref().map(|(_, staging)| staging),
            ),
        ] {
            let existing = existing_columns(warehouse, object)
                .await
                .map_err(|e| e.to_string());
            results.extend(judge_layer(
                table,
                layer,
                object,
                &verdict_of(object),
                existing.as_deref().map_err(String::as_str),
                wanted.map(Vec::as_slice).map_err(String::as_str),
            ));
        }
    }
    results
}
