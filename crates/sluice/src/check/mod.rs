//! `sluice check`'s I/O: what a run needs, asked of the real services before a run, read-only.
//! The statements, the judging and the report are pure (`sluice_core::check`); here they are
//! run through the engine's own adapters, so a check passes exactly when a run's own
//! connection, catalog reads and snapshot would: the [`Source`] port (`query_text` in a
//! read-only snapshot, `gather_facts` as planning does it, `check_cdc` as `sluice cdc check`
//! does it), the AWS SDK clients for the lake, the state, the catalog and the functions, and
//! the [`crate::warehouse::Warehouse`] port for Snowflake ([`snowflake`]).
//!
//! Nothing here writes, except the AWS check's zero-byte probe object under `_sluice_check/`,
//! which it removes. A check never fails the process: its failure is a row of the report.

pub mod aws;
pub mod snowflake;

use std::sync::Arc;

use futures::StreamExt;
use sluice_core::check::{
    CheckResult, Family, KeyVerdict, Session, duplicate_keys_sql, indexes_sql, judge_cursor_index,
    judge_key_sample, judge_primary_key, judge_sessions_visible, judge_timeout, judge_tls,
    parse_indexes, parse_session, select_grant, select_probe_sql, session_sql,
};
use sluice_core::config::parse_duration;
use sluice_core::{LoadMode, SourceConfig, TableConfig};
use tracing::{debug, instrument};

use crate::source::{ColumnRole, Source, SourceError};

/// Most checks of one source run at once (each opens a connection), below the source's own
/// `connection.max_connections` when it sets one.
pub const SOURCE_CONCURRENCY: usize = 4;

/// The result of a failed connection step, named for what the user mends.
fn connection_failure(source: &str, error: &SourceError) -> CheckResult {
    let detail = error.to_string();
    match error {
        SourceError::Unreachable { .. } => {
            CheckResult::fail(Family::Source, "reachable", source, detail).with_fix(
                "connection.url or connection.host/port; the network path and security groups",
            )
        }
        SourceError::Tls { .. } => CheckResult::fail(Family::Source, "tls", source, detail)
            .with_fix("connection.sslmode and connection.ssl_root_cert (or enable TLS on the server)"),
        SourceError::Auth { .. } => CheckResult::fail(Family::Source, "authenticates", source, detail)
            .with_fix("the password: connection.password_env locally, the secret (connection.secret_arn) deployed"),
        SourceError::Config { .. } => {
            CheckResult::fail(Family::Source, "connection config", source, detail)
                .with_fix("the connection fields the message names")
        }
        _ => CheckResult::fail(Family::Source, "reachable", source, detail)
            .with_fix("the connection settings and the server's log"),
    }
}

/// Every check of one source: the session (reachable, authenticates, TLS, statement
/// timeout), then each of `tables` (those of this source to check), at most
/// [`SOURCE_CONCURRENCY`] at once.
#[instrument(skip_all, fields(source = %source.name))]
pub async fn check_source(
    source: &SourceConfig,
    tables: &[&TableConfig],
    adapter: Arc<dyn Source>,
) -> Vec<CheckResult> {
    let name = source.name.as_str();
    let Some(first) = tables.first() else {
        return vec![CheckResult::warn(
            Family::Source,
            "used",
            name,
            "no table reads this source: not connected",
        )];
    };
    let engine = source.engine;
    let answers = match adapter.query_text(first, &session_sql(engine)).await {
        Ok(answers) => answers,
        Err(e) => return vec![connection_failure(name, &e)],
    };
    let session = match parse_session(engine, &answers) {
        Ok(session) => session,
        Err(why) => {
            return vec![CheckResult::fail(
                Family::Source,
                "session",
                name,
                format!("the session's settings could not be read: {why}"),
            )];
        }
    };
    debug!(user = %session.user, encrypted = session.encrypted, timeout_ms = session.timeout_ms, "source session");
    let mut results = vec![
        CheckResult::pass(
            Family::Source,
            "reachable",
            name,
            first_line(&session.version),
        ),
        CheckResult::pass(
            Family::Source,
            "authenticates",
            name,
            format!("as {}", session.user),
        ),
        judge_tls(name, source.connection.sslmode, &session),
        judge_timeout(
            name,
            source
                .connection
                .statement_timeout
                .as_deref()
                .and_then(parse_duration),
            &session,
        ),
    ];
    let limit = source
        .connection
        .max_connections
        .map_or(SOURCE_CONCURRENCY, |m| {
            (m as usize).clamp(1, SOURCE_CONCURRENCY)
        });
    // The futures are made up front, not in a closure inside the stream: a stream over a
    // closure that returns an async block is too general for the compiler to prove `Send`
    // where a Lambda handler awaits it (`sluice.check_source` in the trigger).
    let checks: Vec<_> = tables
        .iter()
        .map(|table| {
            let adapter = adapter.clone();
            let session = &session;
            async move { check_table(source, table, adapter.as_ref(), session).await }
        })
        .collect();
    let per_table: Vec<(Vec<CheckResult>, Option<CheckResult>)> = futures::stream::iter(checks)
        .buffered(limit)
        .collect()
        .await;
    let mut visibility = None;
    for (rows, seen) in per_table {
        results.extend(rows);
        // One verdict per source: the privilege is the user's, not the table's.
        if visibility.is_none() {
            visibility = seen;
        }
    }
    results.extend(visibility);
    results
}

/// The server's version without its build details (`PostgreSQL 16.2 (Debian …)` before ` on
/// x86_64…`), kept short for the table.
fn first_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or_default();
    let short = line.split(" on ").next().unwrap_or(line);
    short.chars().take(80).collect()
}

/// One table's checks, and the late-writer guard's verdict when planning asked for it.
async fn check_table(
    source: &SourceConfig,
    table: &TableConfig,
    adapter: &dyn Source,
    session: &Session,
) -> (Vec<CheckResult>, Option<CheckResult>) {
    let engine = source.engine;
    let target = table.key();
    let mut results = Vec::new();
    // Planning as a run plans: the table, its columns and their types, the key columns, the
    // cursor's type, all in one consistent snapshot. The snapshot is released at once.
    let mut visibility = None;
    match adapter.gather_facts(table, None).await {
        Ok(gathered) => {
            let facts = gathered.facts;
            drop(gathered.hold);
            results.push(CheckResult::pass(
                Family::Source,
                "table and columns",
                &target,
                format!(
                    "{} column(s) readable{}; planned in a consistent snapshot",
                    facts.columns.len(),
                    facts
                        .cursor_kind
                        .map(|k| format!(", cursor {k:?}").to_lowercase())
                        .unwrap_or_default()
                ),
            ));
            if let Some(check) = &facts.late_writers {
                visibility = Some(judge_sessions_visible(
                    engine,
                    &source.name,
                    check.unseen.as_deref(),
                    &session.user,
                ));
            }
        }
        Err(e) => {
            let missing = matches!(e, SourceError::UnknownTable { .. });
            results.push(catalog_failure(engine, table, session, &e));
            if missing {
                return (results, None);
            }
        }
    }
    // SELECT on the columns a run reads, and the `where` as the source parses it.
    let probe = select_probe_sql(engine, table).map(|sql| vec![sql]);
    match probe {
        Ok(sql) => match adapter.query_text(table, &sql).await {
            Ok(_) => results.push(CheckResult::pass(
                Family::Source,
                "select",
                &target,
                format!(
                    "{} may read the columns{}",
                    session.user,
                    if table.filter.is_some() {
                        " with the where clause"
                    } else {
                        ""
                    }
                ),
            )),
            Err(e) => results.push(
                CheckResult::fail(Family::Source, "select", &target, e.to_string()).with_fix(
                    format!(
                        "{}{}",
                        select_grant(engine, table, &session.user),
                        if table.filter.is_some() {
                            " (or mend `where`)"
                        } else {
                            ""
                        }
                    ),
                ),
            ),
        },
        Err(why) => results.push(CheckResult::fail(Family::Source, "select", &target, why)),
    }
    results.extend(check_keys(table, adapter, engine).await);
    if table.load.mode == LoadMode::Cdc {
        results.extend(check_cdc(table, adapter).await);
    }
    (results, visibility)
}

/// A planning failure as the check that names it.
fn catalog_failure(
    engine: sluice_core::Engine,
    table: &TableConfig,
    session: &Session,
    error: &SourceError,
) -> CheckResult {
    let target = table.key();
    let detail = error.to_string();
    match error {
        SourceError::UnknownTable { .. } => {
            CheckResult::fail(Family::Source, "table exists", &target, detail).with_fix(format!(
                "tables[].table (schema.table as the source names it), or {}",
                select_grant(engine, table, &session.user)
            ))
        }
        SourceError::UnknownColumn { role, known, .. } => {
            let (check, field) = match role {
                ColumnRole::Columns => ("columns", "columns"),
                ColumnRole::PrimaryKey => ("primary key columns", "primary_key"),
                ColumnRole::Cursor => ("cursor column", "load.cursor"),
                ColumnRole::PartitionColumn => ("partition column", "partition.column"),
            };
            CheckResult::fail(Family::Source, check, &target, detail)
                .with_fix(format!("{field}: columns of the table ({known})"))
        }
        SourceError::UnsupportedType { column, .. } => {
            CheckResult::fail(Family::Source, "column types", &target, detail).with_fix(format!(
                "column_types: {{{column}: string}}, or leave {column} out of columns"
            ))
        }
        SourceError::UnsupportedKeyType { role, .. } => {
            let check = match role {
                ColumnRole::Cursor => "cursor type",
                _ => "partition type",
            };
            CheckResult::fail(Family::Source, check, &target, detail).with_fix(format!(
                "{}: an integer, date, timestamp or timestamptz column",
                role.field()
            ))
        }
        _ => CheckResult::fail(Family::Source, "plan", &target, detail)
            .with_fix("the source's message above; a run would fail the same way"),
    }
}

/// The declared primary key against the source's, and the cursor's index.
async fn check_keys(
    table: &TableConfig,
    adapter: &dyn Source,
    engine: sluice_core::Engine,
) -> Vec<CheckResult> {
    let target = table.key();
    let sql = match indexes_sql(engine, table) {
        Ok(sql) => sql,
        Err(why) => return vec![CheckResult::fail(Family::Source, "indexes", &target, why)],
    };
    let rows = match adapter.query_text(table, &[sql]).await {
        Ok(mut answers) => answers.pop().unwrap_or_default(),
        Err(e) => {
            return vec![CheckResult::warn(
                Family::Source,
                "indexes",
                &target,
                format!("the table's indexes could not be read: {e}"),
            )];
        }
    };
    let indexes = parse_indexes(&rows);
    let mut results = Vec::new();
    match judge_primary_key(table, &indexes) {
        KeyVerdict::Judged(result) => results.push(result),
        KeyVerdict::Sample => {
            let sampled = match duplicate_keys_sql(engine, table) {
                Ok(sql) => adapter
                    .query_text(table, &[sql])
                    .await
                    .map_err(|e| e.to_string()),
                Err(why) => Err(why),
            };
            results.push(match sampled {
                Ok(mut answers) => judge_key_sample(table, &answers.pop().unwrap_or_default()),
                Err(why) => CheckResult::fail(
                    Family::Source,
                    "primary key",
                    &target,
                    format!("sampling the key failed: {why}"),
                ),
            });
        }
    }
    results.extend(judge_cursor_index(engine, table, &indexes));
    results
}

/// `sluice cdc check`'s findings, one row each.
async fn check_cdc(table: &TableConfig, adapter: &dyn Source) -> Vec<CheckResult> {
    let target = table.key();
    let fix = format!("sluice cdc setup --table {target} (sluice cdc setup --print shows the SQL)");
    match adapter.check_cdc(table).await {
        Ok(problems) if problems.is_empty() => vec![CheckResult::pass(
            Family::Source,
            "cdc",
            &target,
            "the change log is readable (sluice cdc check)",
        )],
        Ok(problems) => problems
            .into_iter()
            .map(|p| CheckResult::fail(Family::Source, "cdc", &target, p).with_fix(fix.clone()))
            .collect(),
        Err(e) => {
            vec![CheckResult::fail(Family::Source, "cdc", &target, e.to_string()).with_fix(fix)]
        }
    }
}
