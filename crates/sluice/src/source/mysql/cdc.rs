//! MariaDB binlog CDC: a `load.mode: cdc` table's changes read from the server's binary log
//! through the replication protocol (`COM_BINLOG_DUMP`, as a replica would), turned into the
//! same change rows a PostgreSQL CDC run writes ([`sluice_core::cdc::changes`]), with the
//! snapshot's exact Arrow types: binlog values are first put in the form the binary protocol
//! gives a snapshot (`TIMESTAMP` as a date-time in UTC, `ENUM` and `SET` as their labels,
//! `YEAR` as a number, `BINARY(n)` padded), then decoded by the snapshot's own [`RowDecoder`].
//!
//! Positions are (file, offset) pairs packed into one integer
//! ([`sluice_core::cdc::binlog::BinlogPosition`]). Nothing is kept on the server for the
//! reader: the table's watermark alone says where the next run starts, and the server may purge
//! files a slow table has not read (a clear failure naming the positions and the way out).
//!
//! The snapshot's start is the binlog position of a consistent snapshot: MariaDB's
//! `START TRANSACTION WITH CONSISTENT SNAPSHOT` sets the `binlog_snapshot_file` and
//! `binlog_snapshot_position` status variables to the position matching that snapshot exactly
//! (<https://mariadb.com/kb/en/enhancements-for-start-transaction-with-consistent-snapshot/>):
//! every transaction before it is visible in the snapshot, none after. A chunk's own snapshot,
//! taken later, sees at least as much, and the changes from the position on are applied over
//! it by key (the last change wins), so the overlap converges on the source.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use chrono::{Datelike, Timelike};
use futures::StreamExt;
use mysql_async::binlog::events::{
    Event, EventData, OptionalMetadataField, RowsEventData, TableMapEvent,
};
use mysql_async::binlog::row::BinlogRow;
use mysql_async::binlog::value::BinlogValue;
use mysql_async::consts::ColumnType;
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStream, BinlogStreamRequest, Conn, Value};
use sluice_core::cdc::binlog::{BinlogPosition, file_number};
use sluice_core::cdc::changes::{
    CHANGE_COLUMN_KINDS, CHANGE_COLUMNS, ChangeColumnKind, unchanged_marker,
};
use sluice_core::plan::{CdcFacts, CdcWindow, MAX_RUN_WAL};
use sluice_core::{RunPlan, TableConfig, TableName};
use tracing::{debug, info};

use super::decode::{DecodeColumn, RowDecoder};
use super::types::MyType;
use super::{MysqlSource, my_message, resolve_table, table_name};
use crate::source::{
    CatalogTable, CdcReached, ChunkStream, Result, SourceError, Warnings, estimated_row_bytes,
};

/// MariaDB's `@mariadb_slave_capability` for a reader that tolerates holes in the event stream
/// (`MARIA_SLAVE_CAPABILITY_TOLERATE_HOLES`): the server then leaves out the events the reader
/// does not know (the statements' text in `Annotate_rows`) instead of padding each with a dummy
/// event as long as the statement, and still sends `BEGIN` (not MariaDB's GTID event).
const SLAVE_CAPABILITY: u8 = 2;

/// MySQL's error for a dump the server cannot serve (`ER_MASTER_FATAL_ERROR_READING_BINLOG`):
/// a purged file, or a position that is not at an event.
const ER_MASTER_FATAL_ERROR_READING_BINLOG: u16 = 1236;
/// `ER_SPECIFIC_ACCESS_DENIED_ERROR`: a statement needing a privilege the user lacks.
const ER_SPECIFIC_ACCESS_DENIED: u16 = 1227;

/// The server settings a binlog reader needs, and the value each must have. A setting the
/// server does not know counts as missing, except `log_bin_compress` (MariaDB's alone).
const REQUIRED_SETTINGS: [(&str, &str, &str); 5] = [
    (
        "log_bin_compress",
        "OFF",
        "compressed rows events cannot be decoded: SET GLOBAL log_bin_compress = OFF (and in the server's configuration)",
    ),
    (
        "log_bin",
        "ON",
        "the binary log is off: start the server with log_bin (and a server_id)",
    ),
    (
        "binlog_format",
        "ROW",
        "rows must be logged as rows: SET GLOBAL binlog_format = 'ROW' (and in the server's configuration)",
    ),
    (
        "binlog_row_image",
        "FULL",
        "every column of a changed row must be logged: SET GLOBAL binlog_row_image = 'FULL' (and in the server's configuration)",
    ),
    (
        "binlog_row_metadata",
        "FULL",
        "the log must name each row's columns (and say which are unsigned): SET GLOBAL binlog_row_metadata = 'FULL' (MariaDB 10.5 and later; and in the server's configuration)",
    ),
];

fn query_error(name: &TableName) -> impl Fn(mysql_async::Error) -> SourceError + '_ {
    move |e| SourceError::Query {
        table: name.to_string(),
        message: my_message(&e),
    }
}

fn refused(name: &TableName, message: String) -> SourceError {
    SourceError::Query {
        table: name.to_string(),
        message,
    }
}

/// The settings among [`REQUIRED_SETTINGS`] the server does not have, one line each.
async fn missing_settings(conn: &mut Conn, name: &TableName) -> Result<Vec<String>> {
    let mut missing = Vec::new();
    for (setting, wanted, fix) in REQUIRED_SETTINGS {
        let value: Option<Option<String>> = match conn
            .query_first(format!("SELECT CAST(@@GLOBAL.{setting} AS CHAR)"))
            .await
        {
            Ok(value) => value,
            // Unknown system variable: a server too old to have it.
            Err(mysql_async::Error::Server(e)) if e.code == 1193 => Some(None),
            Err(e) => return Err(query_error(name)(e)),
        };
        let Some(value) = value
            .flatten()
            .or_else(|| (setting != "log_bin_compress").then(|| "(not available)".to_owned()))
        else {
            continue;
        };
        // Booleans read as text are ON or 1, depending on the server.
        let value = if value == "1" && wanted == "ON" {
            "ON".to_owned()
        } else {
            value
        };
        if !value.eq_ignore_ascii_case(wanted) {
            missing.push(format!("{setting} is {value}, must be {wanted}: {fix}"));
        }
    }
    Ok(missing)
}

/// `SHOW MASTER STATUS`: where the log ends now, as (file, offset).
async fn log_end(conn: &mut Conn, name: &TableName) -> Result<(String, u64)> {
    let row: Option<(String, u64)> = match conn.query_first("SHOW MASTER STATUS").await {
        Ok(row) => row.map(|r: mysql_async::Row| {
            let file: Option<String> = r.get(0);
            let offset: Option<u64> = r.get(1);
            (file.unwrap_or_default(), offset.unwrap_or(0))
        }),
        Err(mysql_async::Error::Server(e)) if e.code == ER_SPECIFIC_ACCESS_DENIED => {
            return Err(refused(
                name,
                format!(
                    "reading the binary log's position needs BINLOG MONITOR (REPLICATION CLIENT): GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO the reading user ({})",
                    e.message
                ),
            ));
        }
        Err(e) => return Err(query_error(name)(e)),
    };
    row.filter(|(file, _)| !file.is_empty()).ok_or_else(|| {
        refused(
            name,
            "SHOW MASTER STATUS is empty: the binary log is off (start the server with log_bin)"
                .into(),
        )
    })
}

/// `SHOW BINARY LOGS`: the files the server still has, with their sizes.
async fn binary_logs(conn: &mut Conn, name: &TableName) -> Result<Vec<(String, u64)>> {
    let rows: Vec<mysql_async::Row> = conn
        .query("SHOW BINARY LOGS")
        .await
        .map_err(query_error(name))?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let file: Option<String> = r.get(0);
            let size: Option<u64> = r.get(1);
            (file.unwrap_or_default(), size.unwrap_or(0))
        })
        .collect())
}

/// The message of a position whose file the server no longer has.
fn purged_message(table: &TableConfig, at: BinlogPosition, file: &str, oldest: &str) -> String {
    format!(
        "the binary log at sluice's position ({file}, {at}) was purged (the oldest file the server has is {oldest}): the changes between are lost to sluice. Take a new snapshot: sluice watermark reset --table {key} --yes, then run the table (or trigger it with full_reload); to keep it from recurring, run the table more often or keep the binary log longer (binlog_expire_logs_seconds)",
        key = table.key(),
    )
}

impl MysqlSource {
    /// Where a binlog CDC run starts and where the log ends. For a snapshot (no watermark),
    /// both are the position of a consistent snapshot taken now (see the module's note); for
    /// a change run, the watermark (checked against the files the server still has) and the
    /// log's end.
    pub(super) async fn read_cdc_facts(
        &self,
        table: &TableConfig,
        watermark: Option<u64>,
    ) -> Result<CdcFacts> {
        let name = table_name(table)?;
        let mut conn = self.connect().await?;
        let missing = missing_settings(&mut conn, &name).await?;
        if !missing.is_empty() {
            return Err(refused(
                &name,
                format!("the server cannot serve binlog cdc: {}", missing.join("; ")),
            ));
        }
        check_readable(&mut conn, table, &name).await?;
        let (end_file, end_offset) = log_end(&mut conn, &name).await?;
        let end = BinlogPosition::from_file(&end_file, end_offset)
            .map_err(|message| refused(&name, message))?;
        let Some(watermark) = watermark else {
            let start = snapshot_position(&mut conn, &name).await?;
            info!(table = %name, start = %start, "a new snapshot: the binlog is read from the snapshot's position");
            return Ok(CdcFacts {
                confirmed: start.encode(),
                flushed: start.encode(),
                retained: 0,
            });
        };
        let at = BinlogPosition::decode(watermark);
        if at > end {
            return Err(refused(
                &name,
                format!(
                    "the stored position ({at}) is past this server's binary log ({end_file} offset {end_offset}): it is not a position of this server's log (a watermark left from another load mode, or a restore or failover?). Take a new snapshot: sluice watermark reset --table {} --yes",
                    table.key()
                ),
            ));
        }
        let files = binary_logs(&mut conn, &name).await?;
        let file = at.file_name(&end_file);
        if !files.iter().any(|(f, _)| *f == file) {
            let oldest = files.first().map(|(f, _)| f.as_str()).unwrap_or("none");
            return Err(refused(&name, purged_message(table, at, &file, oldest)));
        }
        // What the log holds past the position: the rest of its file and every later file.
        let retained = files
            .iter()
            .filter_map(|(f, size)| Some((file_number(f).ok()?, *size)))
            .filter(|(n, _)| *n >= at.file)
            .map(|(n, size)| {
                if n == at.file {
                    size.saturating_sub(u64::from(at.offset))
                } else {
                    size
                }
            })
            .sum();
        debug!(table = %name, from = %at, end = %end, retained, "binlog positions");
        Ok(CdcFacts {
            confirmed: watermark,
            flushed: end.encode().max(watermark),
            retained,
        })
    }

    /// `sluice cdc setup` for a binlog table: nothing to create (a binlog reader keeps no
    /// state on the server), so it says what the server still lacks.
    pub(super) async fn binlog_setup(&self, table: &TableConfig) -> Result<Vec<String>> {
        let problems = self.check_binlog_prerequisites(table).await?;
        if problems.is_empty() {
            return Ok(vec![
                "nothing to create: a binlog reader keeps no state on the server, and every prerequisite is in place".into(),
            ]);
        }
        let name = table_name(table)?;
        Err(refused(
            &name,
            format!(
                "binlog cdc keeps nothing on the server to create, but the server is not ready: {} (sluice cdc setup --print shows the settings)",
                problems.join("; ")
            ),
        ))
    }

    /// What keeps a binlog table from running, one line each (`sluice cdc check`).
    pub(super) async fn check_binlog_prerequisites(
        &self,
        table: &TableConfig,
    ) -> Result<Vec<String>> {
        let name = table_name(table)?;
        let mut conn = self.connect().await?;
        let mut problems = missing_settings(&mut conn, &name).await?;
        let snapshot_vars: Vec<mysql_async::Row> = conn
            .query("SHOW STATUS LIKE 'binlog_snapshot_position'")
            .await
            .map_err(query_error(&name))?;
        if snapshot_vars.is_empty() {
            problems.push(
                "the server has no binlog_snapshot_position status variable (MariaDB and Percona Server have it; MySQL does not): a snapshot's binlog position cannot be read consistently, so binlog cdc needs MariaDB"
                    .into(),
            );
        }
        if let Err(e) = log_end(&mut conn, &name).await {
            problems.push(match e {
                SourceError::Query { message, .. } => message,
                other => other.to_string(),
            });
        }
        // The dump itself needs REPLICATION SLAVE, which no query short of a dump shows but
        // the grants.
        let grants: Vec<String> = conn
            .query("SHOW GRANTS")
            .await
            .map_err(query_error(&name))?;
        let all = grants.join("\n").to_ascii_uppercase();
        if !all.contains("REPLICATION SLAVE") && !all.contains("ALL PRIVILEGES ON *.*") {
            problems.push(
                "the reading user lacks REPLICATION SLAVE (reading the binary log): GRANT REPLICATION SLAVE ON *.* TO it".into(),
            );
        }
        if let Err(e) = check_readable(&mut conn, table, &name).await {
            problems.push(match e {
                SourceError::Query { message, .. } => message,
                other => other.to_string(),
            });
        }
        match resolve_table(&mut conn, &name).await {
            Ok(resolved) => {
                for key in &table.primary_key {
                    if !resolved.columns.iter().any(|c| c.name == *key) {
                        problems.push(format!(
                            "primary_key column '{key}' is not a column of the table"
                        ));
                    }
                }
                let select = format!(
                    "SELECT 1 FROM {} LIMIT 0",
                    name.quoted(sluice_core::Dialect::Mysql)
                );
                if let Err(e) = conn.query_drop(select).await {
                    problems.push(format!(
                        "the reading user cannot read the table (GRANT SELECT on it): {}",
                        my_message(&e)
                    ));
                }
            }
            Err(e) => problems.push(e.to_string()),
        }
        Ok(problems)
    }

    /// Streams a binlog CDC run's changes as batches of the table's columns and the change
    /// metadata ([`CHANGE_COLUMNS`]).
    pub(super) async fn extract_binlog_changes(&self, plan: &RunPlan) -> Result<ChunkStream> {
        let name = table_name(&plan.table)?;
        let Some(window) = plan.cdc.clone() else {
            return Err(refused(&name, "the plan reads no change log".into()));
        };
        let mut conn = self.connect().await?;
        let resolved = resolve_table(&mut conn, &name).await?;
        let reads = resolved.plan_reads(&name, plan)?;
        let database = database_of(&mut conn, &name).await?;
        let planned = planned_columns(&mut conn, &name, &database, &reads).await?;
        // Every column may be NULL in a change row: a truncate carries no values.
        let mut columns: Vec<DecodeColumn> = planned
            .iter()
            .map(|c| DecodeColumn {
                name: c.name.clone(),
                my_type: c.my_type.clone(),
                nullable: true,
            })
            .collect();
        for (column, kind) in CHANGE_COLUMNS.iter().zip(CHANGE_COLUMN_KINDS) {
            columns.push(DecodeColumn {
                name: (*column).to_owned(),
                my_type: match kind {
                    ChangeColumnKind::Text => MyType::Text,
                    ChangeColumnKind::Int8 => MyType::Int64,
                    ChangeColumnKind::TimestampTz => MyType::Timestamp,
                },
                nullable: true,
            });
        }
        let row_bytes = estimated_row_bytes(columns.iter().map(|c| c.my_type.arrow_type()));
        let decoder = RowDecoder::new(
            &columns,
            plan.table.batch_rows(row_bytes),
            plan.table.invalid_dates,
        );
        let schema = decoder.schema();
        let from = BinlogPosition::decode(window.from);
        let (end_file, _) = log_end(&mut conn, &name).await?;
        let file = from.file_name(&end_file);
        conn.query_drop(format!(
            "SET @mariadb_slave_capability = {SLAVE_CAPABILITY}"
        ))
        .await
        .map_err(query_error(&name))?;
        let reader_id = reader_server_id(plan);
        debug!(table = %name, from = %from, upto = %BinlogPosition::decode(window.upto), %file, reader_id, "reading the binary log");
        let request = BinlogStreamRequest::new(reader_id)
            .with_filename(file.as_bytes())
            .with_pos(u64::from(from.offset))
            // The server ends the stream at the log's end instead of waiting for more.
            .with_non_blocking();
        let stream = conn
            .get_binlog_stream(request)
            .await
            .map_err(|e| read_error(&plan.table, &name, from, &file, &e))?;
        let reached: CdcReached = Arc::new(std::sync::Mutex::new(None));
        let state = BinlogRead {
            stream,
            changes: BinlogChanges::new(
                &database,
                &name.name,
                planned,
                plan.table.primary_key.clone(),
                plan.table.columns.is_none(),
                from,
                &window,
            ),
            decoder,
            ready: std::collections::VecDeque::new(),
            finished: false,
            name: name.clone(),
            table: plan.table.clone(),
            file,
            reached: reached.clone(),
        };
        let batches = futures::stream::try_unfold(state, |mut st| async move {
            loop {
                if let Some(batch) = st.ready.pop_front() {
                    return Ok(Some((batch, st)));
                }
                if st.finished {
                    return Ok(None);
                }
                st.read_next().await?;
            }
        })
        .boxed();
        Ok(ChunkStream {
            schema,
            batches,
            warnings: Warnings::default(),
            bound_rows: u64::MAX,
            closed: None,
            cdc_reached: Some(reached),
            source_count: None,
        })
    }
}

/// The database a table is in: its qualifier, or the connection's.
async fn database_of(conn: &mut Conn, name: &TableName) -> Result<String> {
    Ok(match &name.schema {
        Some(schema) => schema.clone(),
        None => conn
            .query_first::<Option<String>, _>("SELECT DATABASE()")
            .await
            .map_err(query_error(name))?
            .flatten()
            .unwrap_or_default(),
    })
}

/// The planned columns as the binlog reader needs them, refused when a text column's bytes
/// are not UTF-8 (the log holds text in the column's own character set).
async fn planned_columns(
    conn: &mut Conn,
    name: &TableName,
    database: &str,
    reads: &[(super::types::MyColumn, super::types::ColumnRead)],
) -> Result<Vec<PlannedColumn>> {
    let charsets: Vec<(String, Option<String>)> = conn
        .exec(
            "SELECT COLUMN_NAME, CHARACTER_SET_NAME FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
            (database, &name.name),
        )
        .await
        .map_err(query_error(name))?;
    let charsets: HashMap<String, Option<String>> = charsets.into_iter().collect();
    let mut planned = Vec::with_capacity(reads.len());
    for (column, read) in reads {
        let charset = charsets.get(&column.name).cloned().flatten();
        if let Some(charset) = &charset
            && !UTF8_CHARSETS.contains(&charset.to_ascii_lowercase().as_str())
        {
            return Err(refused(
                name,
                format!(
                    "column '{}' has character set {charset}: the binary log holds text in the column's own character set, and binlog cdc reads utf8mb4, utf8mb3 and ascii only; convert the column (ALTER TABLE … CONVERT TO CHARACTER SET utf8mb4) or leave it out of columns",
                    column.name
                ),
            ));
        }
        let lowered = column.column_type.to_ascii_lowercase();
        // A negative TIME with one or two fractional digits underflows in mysql_common's
        // decoding (0.37: `frac -= 0x100` on an unsigned value), and would be written wrong.
        if column.data_type == "time" && matches!(column.datetime_precision, Some(1 | 2)) {
            return Err(refused(
                name,
                format!(
                    "column '{}' is {}: the binlog reader cannot decode negative values of time(1) or time(2) exactly; make it time, time(3) or time(6), or leave it out of columns",
                    column.name, column.column_type
                ),
            ));
        }
        planned.push(PlannedColumn {
            name: column.name.clone(),
            my_type: read.my_type.clone(),
            column_type: column.column_type.clone(),
            signed_mediumint: column.data_type == "mediumint" && !lowered.contains("unsigned"),
        });
    }
    Ok(planned)
}

/// Refuses a table the binlog reader cannot read (see [`planned_columns`]), for the plan and
/// `sluice cdc check`, before a snapshot is taken for nothing.
async fn check_readable(conn: &mut Conn, table: &TableConfig, name: &TableName) -> Result<()> {
    let resolved = resolve_table(conn, name).await?;
    let database = database_of(conn, name).await?;
    let kind: Option<String> = conn
        .exec_first(
            "SELECT TABLE_TYPE FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
            (&database, &name.name),
        )
        .await
        .map_err(query_error(name))?;
    if kind.is_some_and(|k| k.eq_ignore_ascii_case("SYSTEM VERSIONED")) {
        // Its log holds history rows as inserts and a delete as an update of row_end.
        return Err(refused(
            name,
            "the table is system-versioned: its binary log records history rows as inserts and deletes as updates, which binlog cdc would apply as changes; use incremental or full".into(),
        ));
    }
    let columns: Vec<String> = match &table.columns {
        Some(columns) => columns.clone(),
        None => resolved.columns.iter().map(|c| c.name.clone()).collect(),
    };
    let reads = resolved.reads(name, &columns, table)?;
    planned_columns(conn, name, &database, &reads).await?;
    Ok(())
}

/// `INCIDENT_EVENT`: the server could not log some events (the log has a gap).
const INCIDENT_EVENT: u8 = 26;

/// Event types whose meaning the reader knows (mysql_common's `EventType` numbering): what a
/// row-based log of a MariaDB server holds for a reader with [`SLAVE_CAPABILITY`], and the
/// statement-based companions of a query (whose query the reader judges). MariaDB's own
/// bookkeeping (binlog checkpoint 161, GTID list 163) and the statements' text (annotations
/// 160, MySQL's rows query 29) say nothing about rows.
const KNOWN_EVENTS: [u8; 20] = [
    2,   // QUERY_EVENT
    3,   // STOP_EVENT
    4,   // ROTATE_EVENT
    5,   // INTVAR_EVENT
    13,  // RAND_EVENT
    14,  // USER_VAR_EVENT
    15,  // FORMAT_DESCRIPTION_EVENT
    16,  // XID_EVENT
    19,  // TABLE_MAP_EVENT
    23,  // WRITE_ROWS_EVENTv1
    24,  // UPDATE_ROWS_EVENTv1
    25,  // DELETE_ROWS_EVENTv1
    27,  // HEARTBEAT_EVENT
    29,  // ROWS_QUERY_EVENT
    30,  // WRITE_ROWS_EVENT
    31,  // UPDATE_ROWS_EVENT
    32,  // DELETE_ROWS_EVENT
    160, // ANNOTATE_ROWS_EVENT
    161, // BINLOG_CHECKPOINT_EVENT
    163, // GTID_LIST_EVENT
];

/// A statement's words, lower-cased: identifiers (backquotes removed), keywords, and `.` as a
/// word of its own; string literals and comments are left out.
fn sql_words(sql: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut chars = sql.chars().peekable();
    let skip_line = |chars: &mut std::iter::Peekable<std::str::Chars<'_>>| {
        for c in chars.by_ref() {
            if c == '\n' {
                break;
            }
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '`' => {
                let mut word = String::new();
                while let Some(c) = chars.next() {
                    if c != '`' {
                        word.push(c);
                    } else if chars.peek() == Some(&'`') {
                        chars.next();
                        word.push('`');
                    } else {
                        break;
                    }
                }
                words.push(word.to_lowercase());
            }
            '\'' | '"' => {
                let quote = c;
                while let Some(c) = chars.next() {
                    if c == '\\' {
                        chars.next();
                    } else if c == quote {
                        if chars.peek() == Some(&quote) {
                            chars.next();
                        } else {
                            break;
                        }
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut last = ' ';
                for c in chars.by_ref() {
                    if last == '*' && c == '/' {
                        break;
                    }
                    last = c;
                }
            }
            '#' => skip_line(&mut chars),
            '-' if chars.peek() == Some(&'-') => skip_line(&mut chars),
            '.' => words.push(".".into()),
            c if c.is_alphanumeric() || c == '_' || c == '$' => {
                let mut word = String::from(c);
                while let Some(&n) = chars.peek() {
                    if n.is_alphanumeric() || n == '_' || n == '$' {
                        word.push(n);
                        chars.next();
                    } else {
                        break;
                    }
                }
                words.push(word.to_lowercase());
            }
            _ => {}
        }
    }
    words
}

/// Character sets whose bytes are UTF-8 (the decoder's text), and `binary` (bytes as such).
const UTF8_CHARSETS: [&str; 5] = ["utf8mb4", "utf8mb3", "utf8", "ascii", "binary"];

/// A `server_id` for this read, unlike any other reader's: the server ends an older dump
/// that registered the same id, so two runs (or a run and a real replica) must not share one.
/// Drawn from the upper half of the range, which replicas' configured ids rarely use.
fn reader_server_id(plan: &RunPlan) -> u32 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    plan.run_id.to_string().hash(&mut hasher);
    std::process::id().hash(&mut hasher);
    std::time::SystemTime::now().hash(&mut hasher);
    0x8000_0000 | (hasher.finish() as u32 & 0x7fff_ffff)
}

/// Takes the consistent snapshot's binlog position (see the module's note) and ends the
/// snapshot.
async fn snapshot_position(conn: &mut Conn, name: &TableName) -> Result<BinlogPosition> {
    for sql in [
        "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ",
        "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY",
    ] {
        conn.query_drop(sql).await.map_err(query_error(name))?;
    }
    let rows: Vec<(String, String)> = conn
        .query("SHOW STATUS LIKE 'binlog_snapshot_%'")
        .await
        .map_err(query_error(name))?;
    conn.query_drop("COMMIT").await.map_err(query_error(name))?;
    let value = |wanted: &str| {
        rows.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(wanted))
            .map(|(_, v)| v.clone())
    };
    match (
        value("binlog_snapshot_file"),
        value("binlog_snapshot_position"),
    ) {
        (Some(file), Some(offset)) => {
            let offset: u64 = offset.parse().map_err(|e| {
                refused(name, format!("binlog_snapshot_position '{offset}': {e}"))
            })?;
            BinlogPosition::from_file(&file, offset).map_err(|m| refused(name, m))
        }
        _ => Err(refused(
            name,
            "the server has no binlog_snapshot_file/binlog_snapshot_position status variables (MariaDB and Percona Server have them; MySQL does not), so a snapshot's binlog position cannot be read consistently: binlog cdc needs MariaDB".into(),
        )),
    }
}

/// A dump that failed, as the user should read it: a purged file names the way out.
fn read_error(
    table: &TableConfig,
    name: &TableName,
    at: BinlogPosition,
    file: &str,
    e: &mysql_async::Error,
) -> SourceError {
    match e {
        mysql_async::Error::Server(s)
            if s.code == ER_MASTER_FATAL_ERROR_READING_BINLOG
                && s.message.contains("Could not find first log file") =>
        {
            refused(
                name,
                purged_message(table, at, file, "(see SHOW BINARY LOGS)"),
            )
        }
        // MariaDB cannot hand an XA transaction's GTID event to a reader that does not take
        // GTID events (the capability sluice announces), wherever in the log it is.
        mysql_async::Error::Server(s)
            if s.code == ER_MASTER_FATAL_ERROR_READING_BINLOG
                && s.message.contains("backwards-compatible event") =>
        {
            refused(
                name,
                format!(
                    "the binary log after sluice's position ({file}, {at}) holds an XA transaction (XA PREPARE), which the binlog reader cannot read ({}): binlog cdc does not support XA transactions on the server. Take a new snapshot once the XA transactions are behind the log's end: sluice watermark reset --table {} --yes, then run the table",
                    s.message,
                    table.key()
                ),
            )
        }
        mysql_async::Error::Server(s) if s.code == ER_MASTER_FATAL_ERROR_READING_BINLOG => refused(
            name,
            format!(
                "the server cannot read its binary log at sluice's position ({file}, {at}): {}. If the position is not one of this server's (a restore or failover), take a new snapshot: sluice watermark reset --table {} --yes",
                s.message,
                table.key()
            ),
        ),
        mysql_async::Error::Server(s) if s.code == ER_SPECIFIC_ACCESS_DENIED || s.code == 1045 => {
            refused(
                name,
                format!(
                    "reading the binary log needs REPLICATION SLAVE: GRANT REPLICATION SLAVE ON *.* TO the reading user ({})",
                    s.message
                ),
            )
        }
        other => SourceError::Stream {
            table: name.to_string(),
            chunk: 0,
            message: format!("reading the binary log: {}", my_message(other)),
        },
    }
}

/// One planned column, as a binlog value of it is put in the snapshot's form.
#[derive(Debug, Clone)]
struct PlannedColumn {
    name: String,
    my_type: MyType,
    /// `information_schema.COLUMNS.COLUMN_TYPE` (`decimal(12,2)`, `mediumint(9) unsigned`),
    /// for messages.
    column_type: String,
    /// A signed `MEDIUMINT`: mysql_common (0.37) reads its 3 bytes without extending the sign,
    /// so -1 arrives as 16777215.
    signed_mediumint: bool,
}

/// How one table-map event lays out the table's columns.
#[derive(Debug, Clone)]
struct TableShape {
    /// For each planned column, its index in the logged row, when the row has it.
    positions: Vec<Option<usize>>,
    /// The logged row's indexes of the primary key columns.
    keys: Vec<usize>,
    /// Labels of `ENUM` and `SET` columns, by index in the logged row.
    labels: HashMap<usize, Vec<Vec<u8>>>,
    /// Each logged column's type and table-map metadata, by index in the logged row: a value
    /// is converted as it was logged, whatever the column is now.
    logged: Vec<(ColumnType, Vec<u8>)>,
    columns: usize,
}

/// The transaction being read.
#[derive(Debug, Clone, Copy)]
struct Transaction {
    start: BinlogPosition,
    time: u32,
}

/// Why a binlog read ended where it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// The plan's end of the log, or a transaction starting at or after it.
    Upto,
    /// `max_changes` or [`MAX_RUN_WAL`] reached at a transaction boundary.
    Capped,
}

/// Turns binlog events into change rows of one table, and keeps the read's position.
struct BinlogChanges {
    database: String,
    table: String,
    planned: Vec<PlannedColumn>,
    primary_key: Vec<String>,
    all_columns: bool,
    /// Shapes of this table by table id (a table's id changes when the server reopens it).
    shapes: HashMap<u64, TableShape>,
    /// Table ids of other tables, whose rows are skipped.
    others: std::collections::HashSet<u64>,
    transaction: Option<Transaction>,
    /// Whether the dump's format description has arrived (see the rotate handling in
    /// [`BinlogChanges::push`]).
    seen_format: bool,
    /// The end of the last event read: a position the log can be read from once no
    /// transaction is open.
    at: BinlogPosition,
    upto: BinlogPosition,
    max_changes: u64,
    changes: u64,
    bytes: u64,
    rows: u64,
    seq: i64,
    stop: Option<Stop>,
}

type ChangeRow = Vec<Option<Value>>;

impl BinlogChanges {
    fn new(
        database: &str,
        table: &str,
        planned: Vec<PlannedColumn>,
        primary_key: Vec<String>,
        all_columns: bool,
        from: BinlogPosition,
        window: &CdcWindow,
    ) -> BinlogChanges {
        BinlogChanges {
            database: database.to_owned(),
            table: table.to_owned(),
            planned,
            primary_key,
            all_columns,
            shapes: HashMap::new(),
            others: std::collections::HashSet::new(),
            transaction: None,
            seen_format: false,
            at: from,
            upto: BinlogPosition::decode(window.upto),
            max_changes: u64::from(window.max_changes),
            changes: 0,
            bytes: 0,
            rows: 0,
            seq: 0,
            stop: None,
        }
    }

    fn qualified(&self) -> String {
        format!("{}.{}", self.database, self.table)
    }

    fn error(&self, what: String) -> String {
        format!("{}: {what}", self.qualified())
    }

    /// Takes the next event; the change rows it makes are appended to `out`. Once it returns
    /// with [`BinlogChanges::stop`] set, the event was not consumed and the read is over.
    fn push(
        &mut self,
        event: &Event,
        tme: &dyn Fn(u64) -> Option<TableMapEvent<'static>>,
        out: &mut Vec<ChangeRow>,
    ) -> std::result::Result<(), String> {
        let header = event.header();
        let end = header.log_pos();
        let data = event
            .read_data()
            .map_err(|e| self.error(format!("decoding a binlog event: {e}")))?;
        let kind = header.event_type_raw();
        if let Some(EventData::RotateEvent(rotate)) = &data {
            // A dump starts with an artificial rotate naming the file asked for, sent before
            // the format description says whether events carry checksums (its name can end in
            // one): it says nothing new. Any later rotate, real (a file's end) or artificial
            // (the file after a server restart, which ends the old file with a STOP event and
            // no rotate), moves the read to the file it names.
            if !self.seen_format {
                return Ok(());
            }
            let named = String::from_utf8_lossy(rotate.name_raw()).into_owned();
            let file =
                file_number(&named).map_err(|e| self.error(format!("a rotate event: {e}")))?;
            if file < self.at.file {
                return Err(self.error(format!(
                    "the binary log rotated back from file {:06} to '{named}'",
                    self.at.file
                )));
            }
            if file > self.at.file {
                self.at = BinlogPosition {
                    file,
                    offset: u32::try_from(rotate.position()).unwrap_or(4),
                };
            }
            return Ok(());
        }
        if matches!(data, Some(EventData::FormatDescriptionEvent(_))) {
            self.seen_format = true;
        }
        // Only events whose meaning is known pass: one the reader does not know (a compressed
        // rows event, an incident) could be a change, and skipping it would lose it.
        if !KNOWN_EVENTS.contains(&kind) {
            return Err(self.error(match kind {
                INCIDENT_EVENT => "the server logged an incident (events it could not log are missing from the binary log): take a new snapshot (sluice watermark reset, then run the table)".into(),
                166..=171 => "a compressed rows event (log_bin_compress = ON): the reader cannot decode it; SET GLOBAL log_bin_compress = OFF, then take a new snapshot".into(),
                other => format!("an event of type {other} that the binlog reader does not know; it could hold changes, so the read stops here"),
            }));
        }
        // Events before the read's position (the format description a dump resends) say
        // nothing about where the read is.
        if end == 0 || end <= self.at.offset {
            return Ok(());
        }
        let start = BinlogPosition {
            file: self.at.file,
            offset: end.saturating_sub(header.event_size()),
        };
        if self.transaction.is_none() {
            if start >= self.upto {
                self.stop = Some(Stop::Upto);
                return Ok(());
            }
            if self.changes >= self.max_changes || self.bytes >= MAX_RUN_WAL {
                self.stop = Some(Stop::Capped);
                return Ok(());
            }
        }
        self.bytes += u64::from(header.event_size());
        self.at = BinlogPosition {
            file: self.at.file,
            offset: end,
        };
        match data {
            Some(EventData::QueryEvent(query)) => {
                let sql = query.query();
                let text = sql.trim();
                let truncate = truncated_table(text, &query.schema());
                if truncate.is_none()
                    && let Some(problem) = self.statement_problem(text, &query.schema())
                {
                    return Err(self.error(problem));
                }
                if text.eq_ignore_ascii_case("BEGIN") {
                    self.transaction = Some(Transaction {
                        start,
                        time: header.timestamp(),
                    });
                } else if text.eq_ignore_ascii_case("COMMIT") {
                    self.commit();
                } else if self.transaction.is_none() {
                    // A statement of its own (DDL): a truncate of this table empties it.
                    if let Some((db, table)) = truncate
                        && db == self.database
                        && table == self.table
                    {
                        self.transaction = Some(Transaction {
                            start,
                            time: header.timestamp(),
                        });
                        let nulls = vec![None; self.planned.len()];
                        out.push(self.change_row("T", nulls, &[]));
                        self.commit();
                    } else {
                        self.changes += 1;
                    }
                }
            }
            Some(EventData::XidEvent(_)) => self.commit(),
            Some(EventData::TableMapEvent(map)) => {
                let ours = map.database_name() == self.database && map.table_name() == self.table;
                if ours {
                    let shape = self.shape(&map)?;
                    self.shapes.insert(map.table_id(), shape);
                } else {
                    self.others.insert(map.table_id());
                }
            }
            Some(EventData::RowsEvent(rows)) => {
                let id = rows.table_id();
                let Some(shape) = self.shapes.get(&id).cloned() else {
                    if self.others.contains(&id) {
                        // Not decoded: each event of another table counts as one change.
                        self.changes += 1;
                        return Ok(());
                    }
                    return Err(self.error(format!(
                        "rows of table id {id} arrived before their table map event (the log is read from a transaction boundary, so this is a server or decoding fault)"
                    )));
                };
                let Some(map) = tme(id) else {
                    return Err(self.error(format!("no table map event for table id {id}")));
                };
                if self.transaction.is_none() {
                    return Err(self.error("row changes outside a transaction".into()));
                }
                let op = match rows {
                    RowsEventData::WriteRowsEventV1(_) | RowsEventData::WriteRowsEvent(_) => 'I',
                    RowsEventData::UpdateRowsEventV1(_) | RowsEventData::UpdateRowsEvent(_) => 'U',
                    RowsEventData::PartialUpdateRowsEvent(_) => {
                        return Err(self.error(
                            "a partial JSON update (binlog_row_value_options = PARTIAL_JSON) logs only what changed; turn it off"
                                .into(),
                        ));
                    }
                    RowsEventData::DeleteRowsEventV1(_) | RowsEventData::DeleteRowsEvent(_) => 'D',
                };
                for row in rows.rows(&map) {
                    let (before, after) =
                        row.map_err(|e| self.error(format!("decoding a row: {e}")))?;
                    self.changes += 1;
                    self.row_change(op, &shape, before, after, out)?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Why a statement logged as text cannot be read past, if it changes this table: a
    /// statement-logged DML (a session with `binlog_format` STATEMENT or MIXED), or DDL that
    /// replaces or renames the table's rows (`DROP`, `RENAME`, `CREATE … SELECT`, partition
    /// maintenance), none of which the log carries as rows. Other DDL is read past: a column
    /// added, dropped or retyped shows in the next table map event, where it is checked.
    fn statement_problem(&self, sql: &str, default_db: &str) -> Option<String> {
        let words = sql_words(sql);
        let first = words.first().map(String::as_str).unwrap_or("");
        if matches!(
            first,
            "begin" | "commit" | "rollback" | "xa" | "savepoint" | "release"
        ) {
            return None;
        }
        if !self.names_table(&words, default_db) {
            return None;
        }
        let harmless = match first {
            "grant" | "revoke" | "analyze" | "optimize" | "repair" | "check" | "flush" => true,
            // `CREATE TABLE other LIKE t` or `… SELECT … FROM t` reads this table; only a
            // table created under this one's name replaces it.
            "create" => match words.iter().position(|w| w == "table") {
                Some(at) => {
                    let mut rest = &words[at + 1..];
                    while rest
                        .first()
                        .is_some_and(|w| matches!(w.as_str(), "if" | "not" | "exists"))
                    {
                        rest = &rest[1..];
                    }
                    let target = match rest {
                        [db, dot, name, ..] if dot == "." => (db.as_str(), name.as_str()),
                        [name, ..] => (default_db, name.as_str()),
                        [] => ("", ""),
                    };
                    !(target.0.eq_ignore_ascii_case(&self.database)
                        && target.1 == self.table.to_lowercase())
                }
                None => true,
            },
            "drop" => words.get(1).is_some_and(|w| {
                matches!(w.as_str(), "index" | "user" | "role" | "view" | "trigger")
            }),
            "alter" => !words.iter().any(|w| {
                matches!(
                    w.as_str(),
                    "rename" | "partition" | "exchange" | "truncate" | "remove"
                )
            }),
            _ => false,
        };
        (!harmless).then(|| {
            format!(
                "a statement logged as text changes the table, which the binary log does not carry as rows: {:?}. Only rows events can be applied (was it a session with binlog_format STATEMENT or MIXED, a DROP, RENAME or CREATE of the table, or partition maintenance?). Take a new snapshot (sluice watermark reset, then run the table)",
                sql.chars().take(200).collect::<String>()
            )
        })
    }

    /// Whether `words` (lower-cased identifiers and keywords) name this table: `db`.`table`,
    /// or the bare table name in a statement whose default database is this table's.
    fn names_table(&self, words: &[String], default_db: &str) -> bool {
        let table = self.table.to_lowercase();
        let database = self.database.to_lowercase();
        words.iter().enumerate().any(|(i, w)| {
            *w == table
                && if i >= 2 && words[i - 1] == "." {
                    words[i - 2] == database
                } else {
                    default_db.eq_ignore_ascii_case(&self.database)
                }
        })
    }

    fn commit(&mut self) {
        self.transaction = None;
        self.changes += 1;
    }

    /// The column layout of a table map event of this table, checked against the plan.
    fn shape(&self, map: &TableMapEvent<'_>) -> std::result::Result<TableShape, String> {
        let count = usize::try_from(map.columns_count()).unwrap_or(usize::MAX);
        let mut names: Vec<String> = Vec::new();
        let mut enum_labels: Vec<Vec<Vec<u8>>> = Vec::new();
        let mut set_labels: Vec<Vec<Vec<u8>>> = Vec::new();
        for field in map.iter_optional_meta() {
            let field = field.map_err(|e| self.error(format!("reading the table map: {e}")))?;
            match field {
                OptionalMetadataField::ColumnName(columns) => {
                    for column in columns.iter_names() {
                        let column =
                            column.map_err(|e| self.error(format!("reading column names: {e}")))?;
                        names.push(column.name().into_owned());
                    }
                }
                OptionalMetadataField::EnumStrValue(values) => {
                    for labels in values.iter_values() {
                        let labels =
                            labels.map_err(|e| self.error(format!("reading enum labels: {e}")))?;
                        enum_labels.push(
                            labels
                                .values()
                                .iter()
                                .map(|v| v.value_raw().to_vec())
                                .collect(),
                        );
                    }
                }
                OptionalMetadataField::SetStrValue(values) => {
                    for labels in values.iter_values() {
                        let labels =
                            labels.map_err(|e| self.error(format!("reading set labels: {e}")))?;
                        set_labels.push(
                            labels
                                .values()
                                .iter()
                                .map(|v| v.value_raw().to_vec())
                                .collect(),
                        );
                    }
                }
                _ => {}
            }
        }
        if names.len() != count {
            return Err(self.error(
                "the binary log does not name the table's columns: set binlog_row_metadata = FULL (SET GLOBAL binlog_row_metadata = 'FULL', and in the server's configuration); changes logged before that cannot be read, so take a new snapshot afterwards (sluice watermark reset)".into(),
            ));
        }
        let mut types = Vec::with_capacity(count);
        let mut labels = HashMap::new();
        let (mut enums, mut sets) = (enum_labels.into_iter(), set_labels.into_iter());
        for i in 0..count {
            let column_type = map
                .get_column_type(i)
                .map_err(|e| self.error(format!("column {i}'s type: {e}")))?
                .ok_or_else(|| self.error(format!("column {i} has no type")))?;
            match column_type {
                ColumnType::MYSQL_TYPE_ENUM => {
                    labels.insert(i, enums.next().unwrap_or_default());
                }
                ColumnType::MYSQL_TYPE_SET => {
                    labels.insert(i, sets.next().unwrap_or_default());
                }
                _ => {}
            }
            types.push((
                column_type,
                map.get_column_metadata(i).unwrap_or(&[]).to_vec(),
            ));
        }
        if self.all_columns
            && let Some(dropped) = names
                .iter()
                .find(|n| !self.planned.iter().any(|p| p.name == **n))
        {
            return Err(format!(
                "the change log has column '{dropped}' of {}, which the table no longer has: it was dropped or renamed. Take a new snapshot of the table (sluice watermark reset, then run it)",
                self.qualified()
            ));
        }
        let mut positions = Vec::with_capacity(self.planned.len());
        for column in &self.planned {
            let position = names.iter().position(|n| *n == column.name);
            if let Some(i) = position {
                let (found, meta) = &types[i];
                if !logged_type_fits(&column.my_type, *found, meta) {
                    return Err(format!(
                        "column '{}' of {} is {} in the change log, which does not fit the column as the run planned it ({}): the column was retyped. Take a new snapshot of the table (sluice watermark reset, then run it)",
                        column.name,
                        self.qualified(),
                        logged_type_text(*found, meta),
                        column.column_type
                    ));
                }
            }
            positions.push(position);
        }
        let keys = self
            .primary_key
            .iter()
            .map(|k| {
                names.iter().position(|n| n == k).ok_or_else(|| {
                    format!(
                        "the change log of {} has no primary_key column '{k}': it was dropped or renamed. Take a new snapshot of the table (sluice watermark reset, then run it)",
                        self.qualified()
                    )
                })
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(TableShape {
            positions,
            keys,
            labels,
            logged: types,
            columns: count,
        })
    }

    fn row_change(
        &mut self,
        op: char,
        shape: &TableShape,
        before: Option<BinlogRow>,
        after: Option<BinlogRow>,
        out: &mut Vec<ChangeRow>,
    ) -> std::result::Result<(), String> {
        let before = before.map(|r| self.logged_values(shape, r)).transpose()?;
        let after = after.map(|r| self.logged_values(shape, r)).transpose()?;
        match (op, before, after) {
            ('I', _, Some(after)) => self.write(shape, "I", after, out),
            ('D', Some(before), _) => self.write(shape, "D", before, out),
            ('U', Some(before), Some(after)) => {
                if shape.keys.iter().any(|&k| before.get(k) != after.get(k)) {
                    self.write(shape, "D", before, out)?;
                }
                self.write(shape, "U", after, out)
            }
            (op, _, _) => Err(self.error(format!(
                "a logged {op} row without the image it needs (binlog_row_image must be FULL)"
            ))),
        }
    }

    /// A logged row's values, in the table map's column order; every column must be there.
    fn logged_values(
        &self,
        shape: &TableShape,
        row: BinlogRow,
    ) -> std::result::Result<Vec<Value>, String> {
        if row.len() != shape.columns {
            return Err(self.error(format!(
                "a logged row has {} of the table's {} columns: set binlog_row_image = FULL",
                row.len(),
                shape.columns
            )));
        }
        row.unwrap()
            .into_iter()
            .map(|v| match v {
                BinlogValue::Value(v) => Ok(v),
                other => Value::try_from(other)
                    .map_err(|e| self.error(format!("a logged JSON value: {e}"))),
            })
            .collect()
    }

    fn write(
        &mut self,
        shape: &TableShape,
        op: &str,
        values: Vec<Value>,
        out: &mut Vec<ChangeRow>,
    ) -> std::result::Result<(), String> {
        let mut row = Vec::with_capacity(self.planned.len() + CHANGE_COLUMNS.len());
        let mut unchanged = Vec::new();
        for (column, position) in self.planned.iter().zip(&shape.positions) {
            match position {
                Some(i) => {
                    let value = values.get(*i).cloned().unwrap_or(Value::NULL);
                    let logged = Logged {
                        column_type: shape.logged[*i].0,
                        meta: &shape.logged[*i].1,
                        labels: shape.labels.get(i).map(Vec::as_slice),
                    };
                    row.push(Some(snapshot_form(column, &logged, value).map_err(
                        |message| self.error(format!("column '{}': {message}", column.name)),
                    )?));
                }
                // Not in the logged row: the column was added after this change.
                None => {
                    row.push(None);
                    unchanged.push(column.name.clone());
                }
            }
        }
        let unchanged: Vec<String> = if op == "I" || op == "U" {
            unchanged
        } else {
            Vec::new()
        };
        out.push(self.change_row(op, row, &unchanged));
        Ok(())
    }

    /// The row of the planned values, then the change's metadata.
    fn change_row(&mut self, op: &str, mut row: ChangeRow, unchanged: &[String]) -> ChangeRow {
        let transaction = self.transaction.unwrap_or(Transaction {
            start: self.at,
            time: 0,
        });
        row.push(Some(Value::Bytes(op.as_bytes().to_vec())));
        row.push(Some(Value::Int(
            i64::try_from(transaction.start.encode()).unwrap_or(i64::MAX),
        )));
        row.push(Some(
            epoch_value(i64::from(transaction.time), 0).unwrap_or(Value::NULL),
        ));
        row.push(Some(Value::Int(self.seq)));
        row.push(if unchanged.is_empty() {
            None
        } else {
            let mut markers = String::new();
            for column in unchanged {
                // `,"a","b",`: each marker's trailing comma is the next one's leading comma.
                let marker = unchanged_marker(column);
                markers.push_str(marker.strip_suffix(',').unwrap_or(&marker));
            }
            markers.push(',');
            Some(Value::Bytes(markers.into_bytes()))
        });
        self.seq += 1;
        self.rows += 1;
        row
    }

    /// Where the read ended: the position of the first event it did not read, once no
    /// transaction is open.
    fn finish(&self) -> std::result::Result<BinlogPosition, String> {
        if self.transaction.is_some() {
            return Err(self.error(
                "the binary log ended inside a transaction (a BEGIN without its commit)".into(),
            ));
        }
        Ok(self.at)
    }
}

/// Whether a column logged as `found` (with its table-map metadata) can still be read as the
/// run planned it (`planned`): the same kind of value, and one that always fits (an integer no
/// wider, a decimal of the same scale: a value too long for its precision fails the decoder
/// naming the column, as in a snapshot, which is also what a `column_types` override of a
/// wider decimal does).
fn logged_type_fits(planned: &MyType, found: ColumnType, meta: &[u8]) -> bool {
    use ColumnType as C;
    let stringy = matches!(
        found,
        C::MYSQL_TYPE_VARCHAR
            | C::MYSQL_TYPE_VAR_STRING
            | C::MYSQL_TYPE_STRING
            | C::MYSQL_TYPE_BLOB
            | C::MYSQL_TYPE_TINY_BLOB
            | C::MYSQL_TYPE_MEDIUM_BLOB
            | C::MYSQL_TYPE_LONG_BLOB
            | C::MYSQL_TYPE_ENUM
            | C::MYSQL_TYPE_SET
    );
    // Integer widths in bytes; a planned type holds any logged integer no wider than its own.
    let width = |t: ColumnType| match t {
        C::MYSQL_TYPE_TINY => Some(1),
        C::MYSQL_TYPE_SHORT => Some(2),
        C::MYSQL_TYPE_INT24 => Some(3),
        C::MYSQL_TYPE_LONG => Some(4),
        C::MYSQL_TYPE_LONGLONG => Some(8),
        _ => None,
    };
    let integer_within = |max: u8| width(found).is_some_and(|w| w <= max);
    match planned {
        MyType::Bool => matches!(found, C::MYSQL_TYPE_TINY | C::MYSQL_TYPE_BIT),
        // Int16 is smallint (or tinyint unsigned), Int32 up to int (or smallint and mediumint
        // unsigned), Int64 up to bigint (or int unsigned); the decoder refuses a value that
        // does not fit, naming the column.
        MyType::Int8 => integer_within(1),
        MyType::Int16 => integer_within(2),
        MyType::Int32 => integer_within(4),
        MyType::Int64 | MyType::UnsignedBigint => integer_within(8),
        MyType::Float32 => found == C::MYSQL_TYPE_FLOAT,
        MyType::Float64 => matches!(found, C::MYSQL_TYPE_DOUBLE | C::MYSQL_TYPE_FLOAT),
        MyType::Decimal { scale, .. } => {
            found == C::MYSQL_TYPE_NEWDECIMAL
                && meta
                    .get(1)
                    .is_some_and(|s| i16::from(*s) == i16::from(*scale))
        }
        MyType::Bit => found == C::MYSQL_TYPE_BIT,
        MyType::Year => found == C::MYSQL_TYPE_YEAR,
        MyType::Text | MyType::Binary => stringy || found == C::MYSQL_TYPE_JSON,
        MyType::Geometry => found == C::MYSQL_TYPE_GEOMETRY,
        MyType::Date => matches!(found, C::MYSQL_TYPE_DATE | C::MYSQL_TYPE_NEWDATE),
        MyType::DateTime => matches!(found, C::MYSQL_TYPE_DATETIME | C::MYSQL_TYPE_DATETIME2),
        MyType::Timestamp => matches!(found, C::MYSQL_TYPE_TIMESTAMP | C::MYSQL_TYPE_TIMESTAMP2),
        MyType::Time { fsp } => match found {
            C::MYSQL_TYPE_TIME2 => meta.first() == Some(fsp),
            C::MYSQL_TYPE_TIME => *fsp == 0,
            _ => false,
        },
    }
}

/// A logged column type as a reader would name it: decimals with their precision and scale.
fn logged_type_text(found: ColumnType, meta: &[u8]) -> String {
    match (found, meta) {
        (ColumnType::MYSQL_TYPE_NEWDECIMAL, [precision, scale, ..]) => {
            format!("decimal({precision},{scale})")
        }
        (ColumnType::MYSQL_TYPE_TIME2, [fsp, ..]) => format!("time({fsp})"),
        (other, _) => format!("{other:?}")
            .trim_start_matches("MYSQL_TYPE_")
            .to_ascii_lowercase(),
    }
}

/// How a value was logged: its column's type in the table map event, that type's metadata,
/// and the labels of an `ENUM` or `SET`.
struct Logged<'a> {
    column_type: ColumnType,
    meta: &'a [u8],
    labels: Option<&'a [Vec<u8>]>,
}

/// A binlog value in the form the binary protocol gives a snapshot of the column, so the
/// snapshot's decoder reads both alike. Converted by the type the value was logged with, so a
/// change logged before a column was retyped still reads as what it was.
fn snapshot_form(
    column: &PlannedColumn,
    logged: &Logged<'_>,
    value: Value,
) -> std::result::Result<Value, String> {
    use ColumnType as C;
    if value == Value::NULL {
        return Ok(value);
    }
    match (logged.column_type, value) {
        // Seconds since the epoch as text, with six digits of fraction if any
        // (`TIMESTAMP(n)`), or a number (the old `TIMESTAMP`); 0 is the zero timestamp.
        (C::MYSQL_TYPE_TIMESTAMP2, Value::Bytes(text)) => {
            let text = String::from_utf8_lossy(&text);
            let (seconds, fraction) = text.split_once('.').unwrap_or((&text, "0"));
            let seconds: i64 = seconds
                .parse()
                .map_err(|e| format!("timestamp '{text}': {e}"))?;
            let micros: u32 = format!("{fraction:0<6}")[..6]
                .parse()
                .map_err(|e| format!("timestamp '{text}': {e}"))?;
            epoch_or_zero(seconds, micros)
        }
        (C::MYSQL_TYPE_TIMESTAMP, Value::Int(seconds)) => epoch_or_zero(seconds, 0),
        // mysql_common writes the stored byte as 1900 + n, so the zero year (byte 0) arrives
        // as 1900, which is not a year MySQL can store.
        (C::MYSQL_TYPE_YEAR, Value::Bytes(text)) => {
            let year: i64 = String::from_utf8_lossy(&text)
                .parse()
                .map_err(|e| format!("year: {e}"))?;
            Ok(Value::Int(if year == 1900 { 0 } else { year }))
        }
        (C::MYSQL_TYPE_INT24, Value::Int(n)) if column.signed_mediumint && n >= 1 << 23 => {
            Ok(Value::Int(n - (1 << 24)))
        }
        // The label's 1-based index; 0 is the empty string MySQL stores for an invalid value.
        (C::MYSQL_TYPE_ENUM, Value::Int(index)) => {
            let labels = logged.labels.unwrap_or_default();
            match usize::try_from(index) {
                Ok(0) => Ok(Value::Bytes(Vec::new())),
                Ok(i) if i <= labels.len() => Ok(Value::Bytes(labels[i - 1].clone())),
                _ => Err(format!(
                    "enum index {index} is outside the logged labels ({})",
                    labels.len()
                )),
            }
        }
        // A little-endian bit mask of the labels, joined with commas in declaration order.
        (C::MYSQL_TYPE_SET, Value::Bytes(mask)) => {
            let labels = logged.labels.unwrap_or_default();
            let mut text = Vec::new();
            for (i, label) in labels.iter().enumerate() {
                if mask
                    .get(i / 8)
                    .is_some_and(|byte| byte & (1 << (i % 8)) != 0)
                {
                    if !text.is_empty() {
                        text.push(b',');
                    }
                    text.extend_from_slice(label);
                }
            }
            Ok(Value::Bytes(text))
        }
        // `BINARY(n)`: the log drops trailing zero bytes, a snapshot has all n.
        (C::MYSQL_TYPE_STRING, Value::Bytes(mut bytes)) if column.my_type == MyType::Binary => {
            let length = string_length(logged.meta);
            if bytes.len() < length {
                bytes.resize(length, 0);
            }
            Ok(Value::Bytes(bytes))
        }
        (_, value) => Ok(value),
    }
}

/// A `CHAR`/`BINARY` column's length in bytes from its table-map metadata (two bytes: the
/// real type, with the length's high bits folded in for lengths over 255, and the length's
/// low byte), as MySQL's `Field_string` writes it.
fn string_length(meta: &[u8]) -> usize {
    match meta {
        [byte0, byte1, ..] => {
            let (byte0, byte1) = (usize::from(*byte0), usize::from(*byte1));
            if byte0 & 0x30 != 0x30 {
                byte1 | (((byte0 & 0x30) ^ 0x30) << 4)
            } else {
                byte1
            }
        }
        _ => 0,
    }
}

/// A `Value::Date` of an instant in UTC, or the zero date-time for second 0.
fn epoch_or_zero(seconds: i64, micros: u32) -> std::result::Result<Value, String> {
    if seconds == 0 && micros == 0 {
        return Ok(Value::Date(0, 0, 0, 0, 0, 0, 0));
    }
    epoch_value(seconds, micros)
}

fn epoch_value(seconds: i64, micros: u32) -> std::result::Result<Value, String> {
    let t = chrono::DateTime::from_timestamp(seconds, micros * 1000)
        .filter(|t| (0..=9999).contains(&t.year()))
        .ok_or_else(|| format!("{seconds}.{micros:06} seconds since the epoch is not a date"))?;
    Ok(Value::Date(
        t.year() as u16,
        t.month() as u8,
        t.day() as u8,
        t.hour() as u8,
        t.minute() as u8,
        t.second() as u8,
        micros,
    ))
}

/// The table a `TRUNCATE [TABLE] [db.]name` statement empties, with `default_db` where it
/// names none; `None` for any other statement.
fn truncated_table(sql: &str, default_db: &str) -> Option<(String, String)> {
    let mut rest = strip_word(sql.trim_start(), "truncate")?;
    if let Some(after) = strip_word(rest, "table") {
        rest = after;
    }
    let (first, rest) = identifier(rest.trim_start())?;
    let rest = rest.trim_start();
    let (db, table) = match rest.strip_prefix('.') {
        Some(after) => {
            let (second, _) = identifier(after.trim_start())?;
            (first, second)
        }
        None => (default_db.to_owned(), first),
    };
    Some((db, table))
}

fn strip_word<'a>(text: &'a str, word: &str) -> Option<&'a str> {
    let head = text.get(..word.len())?;
    let rest = &text[word.len()..];
    (head.eq_ignore_ascii_case(word) && rest.starts_with(char::is_whitespace))
        .then(|| rest.trim_start())
}

/// A backquoted (`` ` `` doubled inside) or bare identifier at the start of `text`.
fn identifier(text: &str) -> Option<(String, &str)> {
    if let Some(quoted) = text.strip_prefix('`') {
        let mut name = String::new();
        let mut chars = quoted.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            if c == '`' {
                if chars.peek().map(|(_, n)| *n) == Some('`') {
                    chars.next();
                    name.push('`');
                } else {
                    return Some((name, &quoted[i + 1..]));
                }
            } else {
                name.push(c);
            }
        }
        return None;
    }
    let end = text
        .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '$'))
        .unwrap_or(text.len());
    (end > 0).then(|| (text[..end].to_owned(), &text[end..]))
}

/// The state of a binlog read between batches.
struct BinlogRead {
    stream: BinlogStream,
    changes: BinlogChanges,
    decoder: RowDecoder,
    ready: std::collections::VecDeque<arrow::record_batch::RecordBatch>,
    finished: bool,
    name: TableName,
    table: TableConfig,
    file: String,
    reached: CdcReached,
}

impl BinlogRead {
    fn stream_error(&self, message: String) -> SourceError {
        SourceError::Stream {
            table: self.name.to_string(),
            chunk: 0,
            message,
        }
    }

    /// Reads one event and decodes what it makes; at the read's end, records where it ended.
    async fn read_next(&mut self) -> Result<()> {
        let event = match self.changes.stop {
            Some(_) => None,
            None => self.stream.next().await,
        };
        match event {
            Some(Ok(event)) => {
                let mut rows = Vec::new();
                let stream = &self.stream;
                let tme = |id: u64| stream.get_tme(id).cloned();
                self.changes
                    .push(&event, &tme, &mut rows)
                    .map_err(|m| self.stream_error(m))?;
                for row in rows {
                    if let Some(batch) = self
                        .decoder
                        .push_row(row)
                        .map_err(|e| self.stream_error(e.to_string()))?
                    {
                        self.ready.push_back(batch);
                    }
                }
                Ok(())
            }
            Some(Err(e)) => Err(read_error(
                &self.table,
                &self.name,
                self.changes.at,
                &self.file,
                &e,
            )),
            None => {
                self.finished = true;
                let reached = self.changes.finish().map_err(|m| self.stream_error(m))?;
                if let Some(last) = self
                    .decoder
                    .finish()
                    .map_err(|e| self.stream_error(e.to_string()))?
                {
                    self.ready.push_back(last);
                }
                info!(table = %self.name, rows = self.changes.rows, events_bytes = self.changes.bytes, reached = %reached, stop = ?self.changes.stop, "read the binary log");
                *self.reached.lock().unwrap_or_else(|e| e.into_inner()) = Some(reached.encode());
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn column(my_type: MyType, signed_mediumint: bool) -> PlannedColumn {
        PlannedColumn {
            name: "c".into(),
            my_type,
            column_type: "t".into(),
            signed_mediumint,
        }
    }

    fn form(
        column: &PlannedColumn,
        logged: ColumnType,
        meta: &[u8],
        labels: Option<&[Vec<u8>]>,
        value: Value,
    ) -> std::result::Result<Value, String> {
        let logged = Logged {
            column_type: logged,
            meta,
            labels,
        };
        snapshot_form(column, &logged, value)
    }

    #[test]
    fn binlog_values_take_the_snapshot_form() {
        use ColumnType as C;
        let bytes = |b: &[u8]| Value::Bytes(b.to_vec());
        let ts = column(MyType::Timestamp, false);
        let t2 = C::MYSQL_TYPE_TIMESTAMP2;
        assert_eq!(
            form(&ts, t2, &[3], None, bytes(b"1704164645.678")).unwrap(),
            Value::Date(2024, 1, 2, 3, 4, 5, 678_000)
        );
        assert_eq!(
            form(&ts, t2, &[0], None, bytes(b"0")).unwrap(),
            Value::Date(0, 0, 0, 0, 0, 0, 0),
            "the zero timestamp stays a zero date, for invalid_dates to judge"
        );
        let year = column(MyType::Year, false);
        let y = C::MYSQL_TYPE_YEAR;
        assert_eq!(
            form(&year, y, &[], None, bytes(b"2024")).unwrap(),
            Value::Int(2024)
        );
        assert_eq!(
            form(&year, y, &[], None, bytes(b"1900")).unwrap(),
            Value::Int(0)
        );
        // mysql_common reads a signed mediumint's 3 bytes without the sign.
        let medium = column(MyType::Int32, true);
        let m = C::MYSQL_TYPE_INT24;
        assert_eq!(
            form(&medium, m, &[], None, Value::Int(16_777_215)).unwrap(),
            Value::Int(-1)
        );
        assert_eq!(
            form(&medium, m, &[], None, Value::Int(8_388_608)).unwrap(),
            Value::Int(-8_388_608)
        );
        assert_eq!(
            form(&medium, m, &[], None, Value::Int(8_388_607)).unwrap(),
            Value::Int(8_388_607)
        );
        let unsigned = column(MyType::Int32, false);
        assert_eq!(
            form(&unsigned, m, &[], None, Value::Int(16_777_215)).unwrap(),
            Value::Int(16_777_215)
        );
        // Enum and set values convert by how they were logged, whatever the column is now.
        let labels = vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()];
        let text = column(MyType::Text, false);
        let e = C::MYSQL_TYPE_ENUM;
        assert_eq!(
            form(&text, e, &[], Some(&labels), Value::Int(2)).unwrap(),
            bytes(b"b")
        );
        assert_eq!(
            form(&text, e, &[], Some(&labels), Value::Int(0)).unwrap(),
            bytes(b"")
        );
        assert!(form(&text, e, &[], Some(&labels), Value::Int(4)).is_err());
        let set = C::MYSQL_TYPE_SET;
        assert_eq!(
            form(&text, set, &[], Some(&labels), Value::Bytes(vec![0b101])).unwrap(),
            bytes(b"a,c")
        );
        assert_eq!(
            form(&text, set, &[], Some(&labels), Value::Bytes(vec![0])).unwrap(),
            bytes(b"")
        );
        // binary(4): real type 0xfe, length 4; and binary(300), whose length's high bits are
        // folded into the first byte.
        let binary = column(MyType::Binary, false);
        let string = C::MYSQL_TYPE_STRING;
        assert_eq!(
            form(&binary, string, &[0xfe, 4], None, Value::Bytes(vec![1])).unwrap(),
            Value::Bytes(vec![1, 0, 0, 0])
        );
        assert_eq!(string_length(&[0xfe ^ 0x10, 0x2c]), 300);
        assert_eq!(
            form(
                &binary,
                C::MYSQL_TYPE_VARCHAR,
                &[4, 0],
                None,
                Value::Bytes(vec![1])
            )
            .unwrap(),
            Value::Bytes(vec![1])
        );
        assert_eq!(form(&ts, t2, &[0], None, Value::NULL).unwrap(), Value::NULL);
        assert!(
            epoch_value(i64::MAX, 0).is_err(),
            "not a date: an error, not NULL"
        );
    }

    fn changes() -> BinlogChanges {
        let window = CdcWindow {
            slot: String::new(),
            publication: String::new(),
            from: 0,
            upto: 0,
            max_changes: 1,
            snapshot: false,
            retained_wal: 0,
        };
        BinlogChanges::new(
            "shop",
            "docs",
            Vec::new(),
            vec!["id".into()],
            true,
            BinlogPosition { file: 1, offset: 4 },
            &window,
        )
    }

    #[test]
    fn statements_that_change_the_table_without_rows_are_refused() {
        let c = changes();
        for sql in [
            "DROP TABLE docs",
            "DROP TABLE IF EXISTS `shop`.`docs`, other",
            "RENAME TABLE docs TO docs_old, docs_new TO docs",
            "CREATE OR REPLACE TABLE docs (id int)",
            "CREATE TABLE IF NOT EXISTS shop.docs (id int)",
            "ALTER TABLE docs TRUNCATE PARTITION p1",
            "ALTER TABLE docs EXCHANGE PARTITION p1 WITH TABLE other",
            "UPDATE docs SET note = 'x'",
            "insert into `Docs` values (1)",
            "DELETE FROM shop.docs WHERE id = 1",
        ] {
            assert!(c.statement_problem(sql, "shop").is_some(), "{sql}");
        }
        for sql in [
            "BEGIN",
            "COMMIT",
            "XA COMMIT 'x'",
            "ALTER TABLE docs ADD COLUMN extra int",
            "ALTER TABLE docs MODIFY amount decimal(10,2)",
            "CREATE INDEX i ON docs (note)",
            "CREATE TABLE docs_copy LIKE docs",
            "CREATE TABLE other.docs (id int)",
            "GRANT SELECT ON shop.docs TO u",
            "UPDATE other.docs SET x = 1",
            "UPDATE docs_old SET note = 'docs'",
            "INSERT INTO audit VALUES ('docs') /* docs */ -- docs",
            "ANALYZE TABLE docs",
        ] {
            assert_eq!(c.statement_problem(sql, "shop"), None, "{sql}");
        }
        // Another database's statement names this table only when qualified.
        assert!(c.statement_problem("DELETE FROM docs", "other").is_none());
        assert!(
            c.statement_problem("DELETE FROM shop.docs", "other")
                .is_some()
        );
    }

    #[test]
    fn truncates_are_recognised_in_their_spellings() {
        for (sql, expected) in [
            ("TRUNCATE TABLE docs", Some(("shop", "docs"))),
            ("truncate docs", Some(("shop", "docs"))),
            ("TRUNCATE TABLE `shop`.`docs`", Some(("shop", "docs"))),
            ("TRUNCATE other.docs", Some(("other", "docs"))),
            ("TRUNCATE TABLE `we``ird`", Some(("shop", "we`ird"))),
            ("ALTER TABLE docs ADD COLUMN x int", None),
            ("TRUNCATEdocs", None),
        ] {
            let got = truncated_table(sql, "shop");
            assert_eq!(
                got,
                expected.map(|(d, t)| (d.to_owned(), t.to_owned())),
                "{sql}"
            );
        }
    }

    #[test]
    fn retyped_columns_are_told_apart_from_the_planned_type() {
        use ColumnType as C;
        let decimal = MyType::Decimal {
            precision: 12,
            scale: 2,
        };
        assert!(logged_type_fits(
            &decimal,
            C::MYSQL_TYPE_NEWDECIMAL,
            &[12, 2]
        ));
        assert!(!logged_type_fits(
            &decimal,
            C::MYSQL_TYPE_NEWDECIMAL,
            &[14, 4]
        ));
        // A wider precision of the same scale: a column_types override of decimal(65,2), or
        // a narrowed column with old changes unread; values too long fail the decoder.
        assert!(logged_type_fits(
            &decimal,
            C::MYSQL_TYPE_NEWDECIMAL,
            &[65, 2]
        ));
        assert!(logged_type_fits(&MyType::Int32, C::MYSQL_TYPE_LONG, &[]));
        assert!(
            logged_type_fits(&MyType::Int32, C::MYSQL_TYPE_SHORT, &[]),
            "widened since"
        );
        assert!(!logged_type_fits(
            &MyType::Int32,
            C::MYSQL_TYPE_LONGLONG,
            &[]
        ));
        assert!(!logged_type_fits(&MyType::Int16, C::MYSQL_TYPE_LONG, &[]));
        assert!(logged_type_fits(&MyType::Text, C::MYSQL_TYPE_VARCHAR, &[]));
        assert!(!logged_type_fits(&MyType::Text, C::MYSQL_TYPE_LONG, &[]));
        assert!(logged_type_fits(
            &MyType::Time { fsp: 3 },
            C::MYSQL_TYPE_TIME2,
            &[3]
        ));
        assert!(!logged_type_fits(
            &MyType::Time { fsp: 3 },
            C::MYSQL_TYPE_TIME2,
            &[6]
        ));
        assert_eq!(
            logged_type_text(C::MYSQL_TYPE_NEWDECIMAL, &[10, 2]),
            "decimal(10,2)"
        );
        assert_eq!(logged_type_text(C::MYSQL_TYPE_LONGLONG, &[]), "longlong");
    }
}
