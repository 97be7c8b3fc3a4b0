//! `sluice check` as pure logic: the model of a pre-flight check's result (check, target,
//! pass/warn/fail, detail, fix), the read-only catalog statements the source checks ask
//! (quoted identifiers, no config text spliced in except the validated `where`), how each
//! answer is judged, and the report rendered as a table or JSON. The engine runs the
//! statements and the AWS and Snowflake calls; nothing here does I/O.
//!
//! A warning never fails the report (a cursor without an index costs time, not data); a
//! failure does. Every failure names its fix: the grant, the config field or the setting.

pub mod snowflake;

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::config::{Engine, LoadMode, SslMode, TableConfig};
use crate::ident::{Dialect, TableName};

/// Which part of a deployment a check is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Source,
    Aws,
    Snowflake,
}

/// A check's verdict. Only `Fail` fails the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Warn,
    Fail,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Warn => "warn",
            Status::Fail => "fail",
        }
    }
}

/// One row of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckResult {
    pub family: Family,
    /// What is checked, e.g. `reachable`, `primary key`, `bucket writable`.
    pub check: String,
    /// What it is checked on: a source, `source/table`, a bucket, a function.
    pub target: String,
    #[serde(rename = "result")]
    pub status: Status,
    /// What was found (never a secret: callers pass messages that never carry one).
    pub detail: String,
    /// How to mend a failure or a warning: the grant, the config field, the setting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl CheckResult {
    pub fn new(
        family: Family,
        check: &str,
        target: &str,
        status: Status,
        detail: impl Into<String>,
    ) -> CheckResult {
        CheckResult {
            family,
            check: check.to_owned(),
            target: target.to_owned(),
            status,
            detail: detail.into(),
            fix: None,
        }
    }

    pub fn pass(family: Family, check: &str, target: &str, detail: impl Into<String>) -> Self {
        CheckResult::new(family, check, target, Status::Pass, detail)
    }

    pub fn warn(family: Family, check: &str, target: &str, detail: impl Into<String>) -> Self {
        CheckResult::new(family, check, target, Status::Warn, detail)
    }

    pub fn fail(family: Family, check: &str, target: &str, detail: impl Into<String>) -> Self {
        CheckResult::new(family, check, target, Status::Fail, detail)
    }

    pub fn with_fix(mut self, fix: impl Into<String>) -> CheckResult {
        self.fix = Some(fix.into());
        self
    }
}

/// Every check's result, in a stable order (family, target, then as the checks ran).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub checks: Vec<CheckResult>,
}

/// The counts `--json` carries beside the rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub passed: usize,
    pub warnings: usize,
    pub failed: usize,
}

impl Report {
    pub fn new(mut checks: Vec<CheckResult>) -> Report {
        // Stable: checks of one target keep the order they were judged in.
        checks.sort_by(|a, b| (a.family, &a.target).cmp(&(b.family, &b.target)));
        Report { checks }
    }

    pub fn counts(&self) -> Counts {
        let count = |s: Status| self.checks.iter().filter(|c| c.status == s).count();
        Counts {
            passed: count(Status::Pass),
            warnings: count(Status::Warn),
            failed: count(Status::Fail),
        }
    }

    /// Exit code 0 only when nothing failed; warnings pass.
    pub fn ok(&self) -> bool {
        self.counts().failed == 0
    }

    /// One JSON object: `{"ok", "passed", "warnings", "failed", "checks": [...]}`.
    pub fn to_json(&self) -> serde_json::Value {
        let counts = self.counts();
        serde_json::json!({
            "ok": self.ok(),
            "passed": counts.passed,
            "warnings": counts.warnings,
            "failed": counts.failed,
            "checks": self.checks,
        })
    }

    /// A boxed table (check, target, result, fix), the detail under the result, wrapped to
    /// `width` columns per cell, and a closing line with the counts.
    pub fn render_table(&self) -> String {
        let header = ["check", "target", "result", "fix"];
        let rows: Vec<[String; 4]> = self
            .checks
            .iter()
            .map(|c| {
                let result = if c.detail.is_empty() {
                    c.status.as_str().to_uppercase()
                } else {
                    format!("{}: {}", c.status.as_str().to_uppercase(), c.detail)
                };
                [
                    c.check.clone(),
                    c.target.clone(),
                    result,
                    c.fix.clone().unwrap_or_default(),
                ]
            })
            .collect();
        let limits = [28, 36, 60, 60];
        let wrapped: Vec<[Vec<String>; 4]> = rows
            .iter()
            .map(|row| std::array::from_fn(|i| wrap(&row[i], limits[i])))
            .collect();
        let widths: [usize; 4] = std::array::from_fn(|i| {
            wrapped
                .iter()
                .flat_map(|row| row[i].iter().map(|l| l.chars().count()))
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        });
        let mut out = String::new();
        let line = |cells: [&str; 4], out: &mut String| {
            out.push('│');
            for (cell, width) in cells.iter().zip(widths) {
                let pad = width - cell.chars().count();
                let _ = write!(out, " {cell}{} │", " ".repeat(pad));
            }
            out.push('\n');
        };
        let rule = |left: char, mid: char, right: char, out: &mut String| {
            out.push(left);
            for (i, width) in widths.iter().enumerate() {
                out.push_str(&"─".repeat(width + 2));
                out.push(if i + 1 == widths.len() { right } else { mid });
            }
            out.push('\n');
        };
        rule('┌', '┬', '┐', &mut out);
        line(header, &mut out);
        rule('├', '┼', '┤', &mut out);
        for row in &wrapped {
            let height = row.iter().map(Vec::len).max().unwrap_or(1).max(1);
            for n in 0..height {
                let cells: [&str; 4] =
                    std::array::from_fn(|i| row[i].get(n).map(String::as_str).unwrap_or(""));
                line(cells, &mut out);
            }
        }
        rule('└', '┴', '┘', &mut out);
        let counts = self.counts();
        let _ = writeln!(
            out,
            "{} passed, {} warning(s), {} failed{}",
            counts.passed,
            counts.warnings,
            counts.failed,
            if counts.failed > 0 {
                ": apply each fix, then run sluice check again"
            } else {
                ""
            }
        );
        out
    }
}

/// Splits `text` into lines of at most `width` characters, at spaces where it can.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    for paragraph in text.split('\n') {
        let mut line = String::new();
        for word in paragraph.split(' ') {
            let mut word = word.to_owned();
            while word.chars().count() > width {
                if !line.is_empty() {
                    lines.push(std::mem::take(&mut line));
                }
                let head: String = word.chars().take(width).collect();
                word = word.chars().skip(width).collect();
                lines.push(head);
            }
            let needed =
                line.chars().count() + usize::from(!line.is_empty()) + word.chars().count();
            if needed > width && !line.is_empty() {
                lines.push(std::mem::take(&mut line));
            }
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(&word);
        }
        lines.push(line);
    }
    lines
}

fn dialect(engine: Engine) -> Dialect {
    match engine {
        Engine::Postgres => Dialect::Postgres,
        Engine::Mysql => Dialect::Mysql,
    }
}

/// A SQL string literal. Identifiers reaching here passed `check_identifier`, so they hold no
/// quote or backslash; both are escaped anyway (MySQL also treats `\` as an escape).
fn literal(engine: Engine, text: &str) -> String {
    let escaped = text.replace('\'', "''");
    match engine {
        Engine::Postgres => format!("'{escaped}'"),
        Engine::Mysql => format!("'{}'", escaped.replace('\\', "\\\\")),
    }
}

/// The statements of the session check, in the order [`judge_session`] reads them: who the
/// session is, whether it is encrypted, and the statement timeout in force. Each answers
/// text only (the engines' `query_text` reads every value as text).
pub fn session_sql(engine: Engine) -> Vec<String> {
    match engine {
        Engine::Postgres => vec![
            "SELECT CAST(current_user AS text), CAST(version() AS text)".into(),
            // Every session's row is visible to itself.
            "SELECT CAST(ssl AS text) FROM pg_catalog.pg_stat_ssl WHERE pid = pg_catalog.pg_backend_pid()"
                .into(),
            // `setting` is in milliseconds for statement_timeout.
            "SELECT setting FROM pg_catalog.pg_settings WHERE name = 'statement_timeout'".into(),
        ],
        Engine::Mysql => vec![
            "SELECT CURRENT_USER(), VERSION()".into(),
            // Empty when the session is not encrypted.
            "SHOW SESSION STATUS LIKE 'Ssl_cipher'".into(),
            // MariaDB's max_statement_time (seconds), MySQL's max_execution_time (ms).
            "SHOW SESSION VARIABLES WHERE Variable_name IN ('max_statement_time', 'max_execution_time')"
                .into(),
        ],
    }
}

/// What the session check learned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// As the server names it (`app`, or `'app'@'%'` in MySQL): what grants go to.
    pub user: String,
    pub version: String,
    pub encrypted: bool,
    /// The statement timeout in force, in milliseconds; 0 is none.
    pub timeout_ms: u64,
}

type Rows = Vec<Vec<Option<String>>>;

fn cell(rows: &Rows, row: usize, column: usize) -> Option<&str> {
    rows.get(row)?.get(column)?.as_deref()
}

/// Reads the answers to [`session_sql`]; `Err` names what was not understood.
pub fn parse_session(engine: Engine, answers: &[Rows]) -> Result<Session, String> {
    let [who, tls, timeout] = answers else {
        return Err(format!("expected 3 answers, got {}", answers.len()));
    };
    let user = cell(who, 0, 0).unwrap_or_default().to_owned();
    let version = cell(who, 0, 1).unwrap_or_default().to_owned();
    let (user, encrypted, timeout_ms) = match engine {
        Engine::Postgres => {
            let encrypted = cell(tls, 0, 0) == Some("true");
            let ms = cell(timeout, 0, 0)
                .and_then(|t| t.parse::<u64>().ok())
                .ok_or("statement_timeout: no setting")?;
            (user, encrypted, ms)
        }
        Engine::Mysql => {
            let encrypted = cell(tls, 0, 1).is_some_and(|c| !c.is_empty());
            let mut ms = 0u64;
            for row in timeout {
                let (Some(Some(name)), Some(Some(value))) = (row.first(), row.get(1)) else {
                    continue;
                };
                let value: f64 = value.parse().map_err(|_| format!("{name}: '{value}'"))?;
                let this = if name.eq_ignore_ascii_case("max_statement_time") {
                    value * 1000.0
                } else {
                    value
                };
                if this > 0.0 {
                    ms = this.round() as u64;
                }
            }
            // CURRENT_USER() answers user@host; grants name both quoted.
            let user = match user.split_once('@') {
                Some((name, host)) => format!("'{name}'@'{host}'"),
                None => user,
            };
            (user, encrypted, ms)
        }
    };
    Ok(Session {
        user,
        version,
        encrypted,
        timeout_ms,
    })
}

/// TLS as configured: `disable` passes unencrypted, `prefer` warns when the server offered
/// none, a stricter mode passes only encrypted (the client refuses otherwise, so an
/// unencrypted session there is a failure worth naming).
pub fn judge_tls(source: &str, mode: Option<SslMode>, session: &Session) -> CheckResult {
    let mode = mode.unwrap_or(SslMode::Prefer);
    let named = format!("{mode:?}").to_lowercase();
    match (mode, session.encrypted) {
        (SslMode::Disable, _) => CheckResult::pass(
            Family::Source,
            "tls",
            source,
            "sslmode: disable (not encrypted, as configured)",
        ),
        (_, true) => CheckResult::pass(
            Family::Source,
            "tls",
            source,
            format!("encrypted (sslmode: {named})"),
        ),
        (SslMode::Prefer, false) => CheckResult::warn(
            Family::Source,
            "tls",
            source,
            "not encrypted: sslmode prefer fell back, the server offers no TLS",
        )
        .with_fix("enable TLS on the server, then set connection.sslmode: verify-full"),
        (_, false) => CheckResult::fail(
            Family::Source,
            "tls",
            source,
            format!("sslmode: {named} but the session is not encrypted"),
        )
        .with_fix("enable TLS on the server (connection.sslmode requires it)"),
    }
}

/// The statement timeout: the configured one must be in force; without one, the server's
/// default (none, usually) is a warning: a stuck query would hold its connection and lease.
pub fn judge_timeout(
    source: &str,
    configured: Option<std::time::Duration>,
    session: &Session,
) -> CheckResult {
    let check = "statement timeout";
    match configured {
        Some(want) => {
            let want_ms = want.as_millis();
            if u128::from(session.timeout_ms) == want_ms {
                CheckResult::pass(
                    Family::Source,
                    check,
                    source,
                    format!("{want_ms} ms, as configured"),
                )
            } else {
                CheckResult::fail(
                    Family::Source,
                    check,
                    source,
                    format!(
                        "connection.statement_timeout is {want_ms} ms but the session has {} ms",
                        session.timeout_ms
                    ),
                )
                .with_fix("a server that accepts the session setting (PostgreSQL statement_timeout, MariaDB max_statement_time, MySQL max_execution_time)")
            }
        }
        None if session.timeout_ms == 0 => CheckResult::warn(
            Family::Source,
            check,
            source,
            "none: a stuck query runs until the function's time limit",
        )
        .with_fix("set connection.statement_timeout (e.g. 30m)"),
        None => CheckResult::pass(
            Family::Source,
            check,
            source,
            format!("{} ms (the server's default)", session.timeout_ms),
        ),
    }
}

/// The table's name, parsed (config validation already checked it).
fn table_name(table: &TableConfig) -> Result<TableName, String> {
    TableName::parse(&table.table)
}

/// Every index of the table: `(primary, unique, columns comma-joined in index order)`.
/// Expression columns are left out (they cannot be a key or a cursor's index).
pub fn indexes_sql(engine: Engine, table: &TableConfig) -> Result<String, String> {
    let name = table_name(table)?;
    Ok(match engine {
        Engine::Postgres => format!(
            "SELECT CAST(i.indisprimary AS text), CAST(i.indisunique AS text), \
             string_agg(CAST(a.attname AS text), ',' ORDER BY k.ord) \
             FROM pg_catalog.pg_index i \
             CROSS JOIN LATERAL unnest(CAST(i.indkey AS int2[])) WITH ORDINALITY AS k(attnum, ord) \
             JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
             WHERE i.indrelid = CAST({} AS regclass) AND i.indpred IS NULL \
             GROUP BY i.indexrelid, i.indisprimary, i.indisunique",
            literal(engine, &name.quoted(Dialect::Postgres))
        ),
        Engine::Mysql => format!(
            "SELECT IF(INDEX_NAME = 'PRIMARY', 'true', 'false'), IF(NON_UNIQUE = 0, 'true', 'false'), \
             GROUP_CONCAT(COLUMN_NAME ORDER BY SEQ_IN_INDEX SEPARATOR ',') \
             FROM information_schema.STATISTICS \
             WHERE TABLE_SCHEMA = {} AND TABLE_NAME = {} AND COLUMN_NAME IS NOT NULL \
             GROUP BY INDEX_NAME, NON_UNIQUE",
            name.schema
                .as_deref()
                .map_or_else(|| "DATABASE()".to_owned(), |s| literal(engine, s)),
            literal(engine, &name.name)
        ),
    })
}

/// An index as [`indexes_sql`] answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Index {
    pub primary: bool,
    pub unique: bool,
    pub columns: Vec<String>,
}

pub fn parse_indexes(rows: &Rows) -> Vec<Index> {
    rows.iter()
        .filter_map(|row| {
            let columns = row.get(2)?.as_deref()?;
            Some(Index {
                primary: row.first()?.as_deref() == Some("true"),
                unique: row.get(1)?.as_deref() == Some("true"),
                columns: columns.split(',').map(str::to_owned).collect(),
            })
        })
        .collect()
}

fn same_set(a: &[String], b: &[String]) -> bool {
    let mut a: Vec<&str> = a.iter().map(String::as_str).collect();
    let mut b: Vec<&str> = b.iter().map(String::as_str).collect();
    a.sort_unstable();
    b.sort_unstable();
    a == b
}

fn yaml_list(columns: &[String]) -> String {
    format!("[{}]", columns.join(", "))
}

/// Rows the uniqueness sample reads when the source declares no key.
pub const KEY_SAMPLE_ROWS: u64 = 100_000;

/// What the primary-key check concluded from the catalog alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyVerdict {
    Judged(CheckResult),
    /// The source declares no key matching the config's: sample the table with
    /// [`duplicate_keys_sql`] and judge with [`judge_key_sample`].
    Sample,
}

/// The declared primary key against the source's: the same columns (in any order) pass; the
/// source's other key fails; no declared key with a source key warns; a unique index on
/// exactly the declared columns passes; else the table is sampled.
pub fn judge_primary_key(table: &TableConfig, indexes: &[Index]) -> KeyVerdict {
    let target = table.key();
    let check = "primary key";
    let source_key = indexes.iter().find(|i| i.primary).map(|i| &i.columns);
    let declared = &table.primary_key;
    let result = match (declared.is_empty(), source_key) {
        (true, Some(key)) => CheckResult::warn(
            Family::Source,
            check,
            &target,
            format!("none declared; the source's is {}", yaml_list(key)),
        )
        .with_fix(format!(
            "primary_key: {} (the warehouse step merges on it)",
            yaml_list(key)
        )),
        (true, None) => CheckResult::warn(
            Family::Source,
            check,
            &target,
            "none declared and the source declares none",
        )
        .with_fix("primary_key: [unique columns] (the warehouse step merges on it)"),
        (false, Some(key)) if same_set(key, declared) => CheckResult::pass(
            Family::Source,
            check,
            &target,
            format!("{} is the source's primary key", yaml_list(declared)),
        ),
        (false, Some(key)) => CheckResult::fail(
            Family::Source,
            check,
            &target,
            format!(
                "declared {} but the source's primary key is {}",
                yaml_list(declared),
                yaml_list(key)
            ),
        )
        .with_fix(format!("primary_key: {}", yaml_list(key))),
        (false, None) => {
            match indexes
                .iter()
                .find(|i| i.unique && same_set(&i.columns, declared))
            {
                Some(_) => CheckResult::pass(
                    Family::Source,
                    check,
                    &target,
                    format!(
                        "{} has a unique index (the source declares no primary key)",
                        yaml_list(declared)
                    ),
                ),
                None => return KeyVerdict::Sample,
            }
        }
    };
    KeyVerdict::Judged(result)
}

/// Counts the declared key values that repeat among the first [`KEY_SAMPLE_ROWS`] rows the
/// table yields (rows with a NULL key column are left out: the merge cannot match them).
pub fn duplicate_keys_sql(engine: Engine, table: &TableConfig) -> Result<String, String> {
    let name = table_name(table)?;
    let d = dialect(engine);
    let keys: Vec<String> = table.primary_key.iter().map(|k| d.quote(k)).collect();
    let not_null: Vec<String> = keys.iter().map(|k| format!("{k} IS NOT NULL")).collect();
    let text = match engine {
        Engine::Postgres => "text",
        Engine::Mysql => "CHAR",
    };
    Ok(format!(
        "SELECT CAST(COUNT(*) AS {text}) FROM (SELECT 1 AS one FROM (SELECT {keys} FROM {table} WHERE {not_null} LIMIT {KEY_SAMPLE_ROWS}) s GROUP BY {keys} HAVING COUNT(*) > 1) d",
        keys = keys.join(", "),
        table = name.quoted(d),
        not_null = not_null.join(" AND "),
    ))
}

pub fn judge_key_sample(table: &TableConfig, rows: &Rows) -> CheckResult {
    let target = table.key();
    let check = "primary key";
    let declared = yaml_list(&table.primary_key);
    match cell(rows, 0, 0).and_then(|c| c.parse::<u64>().ok()) {
        Some(0) => CheckResult::warn(
            Family::Source,
            check,
            &target,
            format!(
                "the source declares no primary key or unique index on {declared}; no value repeats in a sample of up to {KEY_SAMPLE_ROWS} rows"
            ),
        )
        .with_fix(format!("declare it at the source: a primary key or unique index on {declared}")),
        Some(n) => CheckResult::fail(
            Family::Source,
            check,
            &target,
            format!(
                "{n} value(s) of {declared} repeat in a sample of up to {KEY_SAMPLE_ROWS} rows: the merge would keep one row of each"
            ),
        )
        .with_fix("primary_key: columns that are unique at the source"),
        None => CheckResult::fail(
            Family::Source,
            check,
            &target,
            "the sample's count could not be read",
        ),
    }
}

/// An incremental table's cursor should lead an index, or each run scans the whole table to
/// find its window (a warning: correct, only slow).
pub fn judge_cursor_index(
    engine: Engine,
    table: &TableConfig,
    indexes: &[Index],
) -> Option<CheckResult> {
    let cursor = table.load.cursor.as_ref()?;
    if table.load.mode != LoadMode::Incremental {
        return None;
    }
    let target = table.key();
    let check = "cursor index";
    if indexes
        .iter()
        .any(|i| i.columns.first().is_some_and(|c| c == cursor))
    {
        return Some(CheckResult::pass(
            Family::Source,
            check,
            &target,
            format!("an index leads with {cursor}"),
        ));
    }
    let d = dialect(engine);
    let name = table_name(table).ok()?;
    Some(
        CheckResult::warn(
            Family::Source,
            check,
            &target,
            format!("no index leads with {cursor}: every incremental run scans the whole table"),
        )
        .with_fix(format!(
            "CREATE INDEX {} ON {} ({})",
            d.quote(&format!("{}_{cursor}_idx", name.name)),
            name.quoted(d),
            d.quote(cursor)
        )),
    )
}

/// Reads nothing, but needs `SELECT` on every column a run reads and the `where` to be valid
/// at the source: `SELECT <columns> FROM <table> WHERE (<where>) AND 1 = 0`.
pub fn select_probe_sql(engine: Engine, table: &TableConfig) -> Result<String, String> {
    let name = table_name(table)?;
    let d = dialect(engine);
    let columns = match &table.columns {
        Some(columns) => columns
            .iter()
            .map(|c| d.quote(c))
            .collect::<Vec<_>>()
            .join(", "),
        None => "*".into(),
    };
    let filter = match &table.filter {
        // Validated as exactly one expression when the config was loaded.
        Some(filter) => format!("({filter}) AND "),
        None => String::new(),
    };
    Ok(format!(
        "SELECT {columns} FROM {} WHERE {filter}1 = 0",
        name.quoted(d)
    ))
}

/// The grant that lets `user` read `table`.
pub fn select_grant(engine: Engine, table: &TableConfig, user: &str) -> String {
    let d = dialect(engine);
    let name = table_name(table)
        .map(|n| n.quoted(d))
        .unwrap_or_else(|_| table.table.clone());
    let user = if user.is_empty() { "<user>" } else { user };
    match engine {
        Engine::Postgres => format!("GRANT SELECT ON {name} TO {}", d.quote(user)),
        Engine::Mysql => format!("GRANT SELECT ON {name} TO {user}"),
    }
}

/// The late-writer guard's privilege, from what planning saw (`unseen` is why it could not
/// see every session). Only incremental tables with a cursor ask.
pub fn judge_sessions_visible(
    engine: Engine,
    source: &str,
    unseen: Option<&str>,
    user: &str,
) -> CheckResult {
    let check = "sees other sessions";
    match unseen {
        None => CheckResult::pass(
            Family::Source,
            check,
            source,
            "the late-writer guard sees every open transaction",
        ),
        Some(why) => {
            let user = if user.is_empty() { "<user>" } else { user };
            let grant = crate::late_writers::grant_hint(engine).replace(
                "<user>",
                &match engine {
                    Engine::Postgres => Dialect::Postgres.quote(user),
                    Engine::Mysql => user.to_owned(),
                },
            );
            CheckResult::warn(Family::Source, check, source, why.to_owned()).with_fix(grant)
        }
    }
}

/// A DynamoDB table's keys as DescribeTable answers them: the hash and range attribute of the
/// table, and of each global secondary index by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyLayout {
    pub hash: Option<String>,
    pub range: Option<String>,
    pub indexes: Vec<(String, Option<String>, Option<String>)>,
}

impl KeyLayout {
    fn keys(hash: &Option<String>, range: &Option<String>) -> String {
        format!(
            "{} / {}",
            hash.as_deref().unwrap_or("-"),
            range.as_deref().unwrap_or("-")
        )
    }
}

/// The table's keys and every expected index with its keys; extra indexes are fine.
pub fn judge_key_layout(
    check: &str,
    target: &str,
    expected: &KeyLayout,
    found: &KeyLayout,
    fix: &str,
) -> CheckResult {
    let mut problems = Vec::new();
    if (&found.hash, &found.range) != (&expected.hash, &expected.range) {
        problems.push(format!(
            "keys are {} (hash / range), sluice needs {}",
            KeyLayout::keys(&found.hash, &found.range),
            KeyLayout::keys(&expected.hash, &expected.range)
        ));
    }
    for (name, hash, range) in &expected.indexes {
        match found.indexes.iter().find(|(n, _, _)| n == name) {
            None => problems.push(format!("index {name} is missing")),
            Some((_, h, r)) if (h, r) != (hash, range) => problems.push(format!(
                "index {name} has keys {}, sluice needs {}",
                KeyLayout::keys(h, r),
                KeyLayout::keys(hash, range)
            )),
            Some(_) => {}
        }
    }
    if problems.is_empty() {
        CheckResult::pass(
            Family::Aws,
            check,
            target,
            format!(
                "keys {}{}",
                KeyLayout::keys(&expected.hash, &expected.range),
                if expected.indexes.is_empty() {
                    String::new()
                } else {
                    format!(", {} index(es)", expected.indexes.len())
                }
            ),
        )
    } else {
        CheckResult::fail(Family::Aws, check, target, problems.join("; ")).with_fix(fix)
    }
}

/// A bucket lifecycle rule as GetBucketLifecycleConfiguration answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LifecycleRule {
    pub enabled: bool,
    /// Days after which incomplete multipart uploads are aborted, if the rule does that.
    pub abort_incomplete_days: Option<i32>,
    /// The rule's prefix (or filter prefix); empty for the whole bucket.
    pub prefix: String,
}

/// Sluice's uploads are multipart; one cut off (a chunk over its time limit) leaves parts
/// that cost storage until an `AbortIncompleteMultipartUpload` rule removes them. The rule
/// must cover the output prefix.
pub fn judge_lifecycle(bucket: &str, prefix: &str, rules: Option<&[LifecycleRule]>) -> CheckResult {
    let check = "lifecycle rule";
    let fix = "a lifecycle rule with AbortIncompleteMultipartUpload over the output prefix (the template's abort-incomplete-multipart-uploads)";
    let Some(rules) = rules else {
        return CheckResult::fail(
            Family::Aws,
            check,
            bucket,
            "the bucket has no lifecycle configuration",
        )
        .with_fix(fix);
    };
    let covering = rules.iter().find(|r| {
        r.enabled && r.abort_incomplete_days.is_some() && prefix.starts_with(r.prefix.as_str())
    });
    match covering {
        Some(rule) => CheckResult::pass(
            Family::Aws,
            check,
            bucket,
            format!(
                "incomplete multipart uploads aborted after {} day(s)",
                rule.abort_incomplete_days.unwrap_or_default()
            ),
        ),
        None => CheckResult::fail(
            Family::Aws,
            check,
            bucket,
            format!(
                "no enabled rule aborts incomplete multipart uploads under '{prefix}' ({} rule(s))",
                rules.len()
            ),
        )
        .with_fix(fix),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Config;

    fn config(tables: &str) -> Config {
        Config::from_yaml(
            &format!(
                "sources:\n  - name: shop\n    engine: postgres\n    connection: {{ url: 'postgres://app@db/shop' }}\ntables:\n{tables}"
            ),
            "test.yaml",
        )
        .unwrap()
    }

    fn orders() -> TableConfig {
        config(
            "  - source: shop\n    table: public.orders\n    primary_key: [order_id]\n    load: { mode: incremental, cursor: updated_at }\n",
        )
        .tables
        .remove(0)
    }

    fn index(primary: bool, unique: bool, columns: &[&str]) -> Index {
        Index {
            primary,
            unique,
            columns: columns.iter().map(|c| (*c).to_owned()).collect(),
        }
    }

    fn session(encrypted: bool, timeout_ms: u64) -> Session {
        Session {
            user: "app".into(),
            version: "16".into(),
            encrypted,
            timeout_ms,
        }
    }

    fn rows(cells: &[&[Option<&str>]]) -> Rows {
        cells
            .iter()
            .map(|r| r.iter().map(|c| c.map(str::to_owned)).collect())
            .collect()
    }

    #[test]
    fn only_failures_fail_the_report() {
        let warn = CheckResult::warn(Family::Source, "tls", "shop", "plain");
        let pass = CheckResult::pass(Family::Aws, "bucket", "b", "");
        assert!(Report::new(vec![warn.clone(), pass.clone()]).ok());
        let fail = CheckResult::fail(Family::Source, "reachable", "shop", "refused");
        let report = Report::new(vec![warn, pass, fail]);
        assert!(!report.ok());
        assert_eq!(
            report.counts(),
            Counts {
                passed: 1,
                warnings: 1,
                failed: 1
            }
        );
    }

    #[test]
    fn json_has_the_counts_and_every_row_with_its_fix() {
        let report = Report::new(vec![
            CheckResult::fail(
                Family::Source,
                "primary key",
                "shop/public.orders",
                "declared [a]",
            )
            .with_fix("primary_key: [b]"),
        ]);
        let json = report.to_json();
        assert_eq!(json["ok"], false);
        assert_eq!(json["failed"], 1);
        let row = &json["checks"][0];
        assert_eq!(row["family"], "source");
        assert_eq!(row["check"], "primary key");
        assert_eq!(row["result"], "fail");
        assert_eq!(row["fix"], "primary_key: [b]");
    }

    #[test]
    fn the_table_has_a_header_every_row_and_the_counts() {
        let report = Report::new(vec![
            CheckResult::pass(Family::Source, "reachable", "shop", "PostgreSQL 16"),
            CheckResult::warn(
                Family::Source,
                "cursor index",
                "shop/public.orders",
                "x".repeat(130),
            )
            .with_fix("CREATE INDEX"),
        ]);
        let text = report.render_table();
        assert!(text.contains("│ check "), "{text}");
        assert!(text.contains("PASS: PostgreSQL 16"), "{text}");
        assert!(text.contains("CREATE INDEX"), "{text}");
        assert!(
            text.ends_with("1 passed, 1 warning(s), 0 failed\n"),
            "{text}"
        );
        // Long details wrap instead of stretching the table.
        assert!(text.lines().all(|l| l.chars().count() < 200), "{text}");
    }

    #[test]
    fn rows_sort_by_family_then_target_keeping_check_order() {
        let report = Report::new(vec![
            CheckResult::pass(Family::Snowflake, "raw table", "t", ""),
            CheckResult::pass(Family::Source, "b", "shop", ""),
            CheckResult::pass(Family::Source, "a", "shop", ""),
        ]);
        let order: Vec<&str> = report.checks.iter().map(|c| c.check.as_str()).collect();
        assert_eq!(order, ["b", "a", "raw table"]);
    }

    #[test]
    fn wrap_breaks_at_spaces_and_splits_long_words() {
        assert_eq!(wrap("aa bb cc", 5), ["aa bb", "cc"]);
        assert_eq!(wrap("abcdefgh", 3), ["abc", "def", "gh"]);
        assert_eq!(wrap("", 3), [""]);
    }

    #[test]
    fn postgres_session_is_read_from_its_three_answers() {
        let answers = vec![
            rows(&[&[Some("app"), Some("PostgreSQL 16")]]),
            rows(&[&[Some("true")]]),
            rows(&[&[Some("300000")]]),
        ];
        let s = parse_session(Engine::Postgres, &answers).unwrap();
        assert_eq!(s.user, "app");
        assert!(s.encrypted);
        assert_eq!(s.timeout_ms, 300_000);
        assert!(parse_session(Engine::Postgres, &answers[..2]).is_err());
    }

    #[test]
    fn mysql_session_reads_mariadb_seconds_and_quotes_the_user() {
        let answers = vec![
            rows(&[&[Some("app@%"), Some("11.4.2-MariaDB")]]),
            rows(&[&[Some("Ssl_cipher"), Some("")]]),
            rows(&[&[Some("max_statement_time"), Some("1.500000")]]),
        ];
        let s = parse_session(Engine::Mysql, &answers).unwrap();
        assert_eq!(s.user, "'app'@'%'");
        assert!(!s.encrypted);
        assert_eq!(s.timeout_ms, 1500);
        let mysql = vec![
            answers[0].clone(),
            rows(&[&[Some("Ssl_cipher"), Some("TLS_AES_256_GCM_SHA384")]]),
            rows(&[&[Some("max_execution_time"), Some("2000")]]),
        ];
        let s = parse_session(Engine::Mysql, &mysql).unwrap();
        assert!(s.encrypted);
        assert_eq!(s.timeout_ms, 2000);
    }

    #[test]
    fn tls_is_judged_against_the_configured_mode() {
        assert_eq!(
            judge_tls("s", Some(SslMode::Disable), &session(false, 0)).status,
            Status::Pass
        );
        assert_eq!(judge_tls("s", None, &session(true, 0)).status, Status::Pass);
        let fallback = judge_tls("s", None, &session(false, 0));
        assert_eq!(fallback.status, Status::Warn);
        assert!(fallback.fix.unwrap().contains("sslmode"));
        assert_eq!(
            judge_tls("s", Some(SslMode::Require), &session(false, 0)).status,
            Status::Fail
        );
    }

    #[test]
    fn timeout_must_be_in_force_when_configured_and_warns_when_absent() {
        let five = Some(std::time::Duration::from_secs(300));
        assert_eq!(
            judge_timeout("s", five, &session(false, 300_000)).status,
            Status::Pass
        );
        assert_eq!(
            judge_timeout("s", five, &session(false, 0)).status,
            Status::Fail
        );
        let none = judge_timeout("s", None, &session(false, 0));
        assert_eq!(none.status, Status::Warn);
        assert!(none.fix.unwrap().contains("connection.statement_timeout"));
        assert_eq!(
            judge_timeout("s", None, &session(false, 10)).status,
            Status::Pass
        );
    }

    #[test]
    fn index_queries_quote_names_and_bind_nothing_raw() {
        let t = orders();
        let pg = indexes_sql(Engine::Postgres, &t).unwrap();
        assert!(
            pg.contains("CAST('\"public\".\"orders\"' AS regclass)"),
            "{pg}"
        );
        let mut my = t.clone();
        my.table = "shop.orders".into();
        let my = indexes_sql(Engine::Mysql, &my).unwrap();
        assert!(
            my.contains("TABLE_SCHEMA = 'shop' AND TABLE_NAME = 'orders'"),
            "{my}"
        );
        assert!(literal(Engine::Mysql, "a'b\\").ends_with("'a''b\\\\'"));
    }

    #[test]
    fn parse_indexes_reads_flags_and_column_order() {
        let parsed = parse_indexes(&rows(&[
            &[Some("true"), Some("true"), Some("a,b")],
            &[Some("false"), Some("false"), None],
        ]));
        assert_eq!(parsed, [index(true, true, &["a", "b"])]);
    }

    #[test]
    fn primary_key_matches_differs_or_needs_a_sample() {
        let t = orders();
        let judged = |indexes: &[Index]| match judge_primary_key(&t, indexes) {
            KeyVerdict::Judged(r) => Some(r),
            KeyVerdict::Sample => None,
        };
        assert_eq!(
            judged(&[index(true, true, &["order_id"])]).unwrap().status,
            Status::Pass
        );
        let other = judged(&[index(true, true, &["order_id", "line"])]).unwrap();
        assert_eq!(other.status, Status::Fail);
        assert_eq!(other.fix.as_deref(), Some("primary_key: [order_id, line]"));
        assert_eq!(
            judged(&[index(false, true, &["order_id"])]).unwrap().status,
            Status::Pass
        );
        assert!(judged(&[index(false, false, &["order_id"])]).is_none());
        let mut none = t.clone();
        none.primary_key.clear();
        match judge_primary_key(&none, &[index(true, true, &["id"])]) {
            KeyVerdict::Judged(r) => assert_eq!(r.status, Status::Warn),
            KeyVerdict::Sample => panic!("no key declared: nothing to sample"),
        }
    }

    #[test]
    fn key_sample_fails_on_repeats_and_warns_when_unique() {
        let t = orders();
        let sql = duplicate_keys_sql(Engine::Mysql, &t).unwrap();
        assert!(
            sql.contains(
                "SELECT `order_id` FROM `public`.`orders` WHERE `order_id` IS NOT NULL LIMIT 100000"
            ),
            "{sql}"
        );
        assert_eq!(
            judge_key_sample(&t, &rows(&[&[Some("0")]])).status,
            Status::Warn
        );
        let dup = judge_key_sample(&t, &rows(&[&[Some("3")]]));
        assert_eq!(dup.status, Status::Fail);
        assert!(dup.detail.starts_with("3 value(s)"), "{}", dup.detail);
    }

    #[test]
    fn cursor_without_a_leading_index_warns_with_the_create_index() {
        let t = orders();
        let found = judge_cursor_index(
            Engine::Postgres,
            &t,
            &[index(false, false, &["updated_at", "x"])],
        );
        assert_eq!(found.unwrap().status, Status::Pass);
        let second = judge_cursor_index(
            Engine::Postgres,
            &t,
            &[index(false, false, &["x", "updated_at"])],
        )
        .unwrap();
        assert_eq!(second.status, Status::Warn);
        assert_eq!(
            second.fix.as_deref(),
            Some(
                "CREATE INDEX \"orders_updated_at_idx\" ON \"public\".\"orders\" (\"updated_at\")"
            )
        );
        let mut full = t.clone();
        full.load.mode = LoadMode::Full;
        assert!(judge_cursor_index(Engine::Postgres, &full, &[]).is_none());
    }

    #[test]
    fn select_probe_reads_no_row_with_the_columns_and_where() {
        let mut t = orders();
        t.columns = Some(vec!["order_id".into(), "Status".into()]);
        t.filter = Some("status <> 'test'".into());
        assert_eq!(
            select_probe_sql(Engine::Postgres, &t).unwrap(),
            "SELECT \"order_id\", \"Status\" FROM \"public\".\"orders\" WHERE (status <> 'test') AND 1 = 0"
        );
        assert_eq!(
            select_grant(Engine::Postgres, &t, "app"),
            "GRANT SELECT ON \"public\".\"orders\" TO \"app\""
        );
        assert_eq!(
            select_grant(Engine::Mysql, &t, "'app'@'%'"),
            "GRANT SELECT ON `public`.`orders` TO 'app'@'%'"
        );
    }

    #[test]
    fn sessions_visibility_names_the_grant_for_the_user() {
        let seen = judge_sessions_visible(Engine::Postgres, "shop", None, "app");
        assert_eq!(seen.status, Status::Pass);
        let unseen = judge_sessions_visible(Engine::Mysql, "shop", Some("cannot"), "'app'@'%'");
        assert_eq!(unseen.status, Status::Warn);
        assert_eq!(
            unseen.fix.as_deref(),
            Some("GRANT PROCESS ON *.* TO 'app'@'%'")
        );
    }

    #[test]
    fn dynamo_keys_and_indexes_are_compared_by_name() {
        let s = |t: &str| Some(t.to_owned());
        let expected = KeyLayout {
            hash: s("pk"),
            range: s("sk"),
            indexes: vec![("runs_by_table".into(), s("table_key"), s("run_id"))],
        };
        let mut found = expected.clone();
        found.indexes.push(("extra".into(), s("x"), None));
        assert_eq!(
            judge_key_layout("state table", "t", &expected, &found, "fix").status,
            Status::Pass
        );
        let wrong = KeyLayout {
            hash: s("id"),
            range: None,
            indexes: vec![],
        };
        let judged = judge_key_layout("state table", "t", &expected, &wrong, "recreate it");
        assert_eq!(judged.status, Status::Fail);
        assert!(
            judged
                .detail
                .contains("keys are id / - (hash / range), sluice needs pk / sk"),
            "{}",
            judged.detail
        );
        assert!(
            judged.detail.contains("index runs_by_table is missing"),
            "{}",
            judged.detail
        );
        assert_eq!(judged.fix.as_deref(), Some("recreate it"));
    }

    #[test]
    fn lifecycle_needs_an_enabled_abort_rule_over_the_prefix() {
        let rule = |enabled, days, prefix: &str| LifecycleRule {
            enabled,
            abort_incomplete_days: days,
            prefix: prefix.into(),
        };
        assert_eq!(judge_lifecycle("b", "raw/", None).status, Status::Fail);
        assert_eq!(
            judge_lifecycle("b", "raw/", Some(&[rule(true, Some(2), "")])).status,
            Status::Pass
        );
        assert_eq!(
            judge_lifecycle("b", "raw/", Some(&[rule(false, Some(2), "")])).status,
            Status::Fail
        );
        assert_eq!(
            judge_lifecycle("b", "raw/", Some(&[rule(true, Some(2), "other/")])).status,
            Status::Fail
        );
        assert_eq!(
            judge_lifecycle("b", "raw/", Some(&[rule(true, None, "")])).status,
            Status::Fail
        );
    }
}
