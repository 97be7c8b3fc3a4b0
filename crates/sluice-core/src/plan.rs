//! Run planning: watermark arithmetic, chunk ranges and the extraction query of each chunk.
//!
//! Sources gather facts from the catalog (column types, min/max of the partition column, the
//! cursor's upper bound inside a snapshot); everything decided from those facts lives here so
//! it can be tested without a database.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::config::{Engine, LoadMode, Lookback, PartitionConfig, TableConfig};
use crate::ident::{Dialect, TableName};
use crate::late_writers::{UpperBoundHold, WriterCheck, incremental_upper};
use crate::run::RunId;

/// Chunks extracted at once locally when the config does not say.
pub const DEFAULT_MAX_CONCURRENCY: u32 = 2;

/// The kinds of column that can be a cursor or a partition column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScalarKind {
    Int,
    Date,
    Timestamp,
    TimestampTz,
}

/// A value of a cursor or partition column, kept at the source's full precision.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "snake_case")]
pub enum ScalarValue {
    Int(i64),
    Date(NaiveDate),
    Timestamp(NaiveDateTime),
    TimestampTz(DateTime<Utc>),
}

impl ScalarValue {
    pub fn kind(&self) -> ScalarKind {
        match self {
            ScalarValue::Int(_) => ScalarKind::Int,
            ScalarValue::Date(_) => ScalarKind::Date,
            ScalarValue::Timestamp(_) => ScalarKind::Timestamp,
            ScalarValue::TimestampTz(_) => ScalarKind::TimestampTz,
        }
    }

    /// A position on an integer line, for splitting ranges (days for dates, µs for timestamps).
    fn to_ordinal(&self) -> i64 {
        match self {
            ScalarValue::Int(v) => *v,
            ScalarValue::Date(d) => i64::from(d.num_days_from_ce()),
            ScalarValue::Timestamp(t) => t.and_utc().timestamp_micros(),
            ScalarValue::TimestampTz(t) => t.timestamp_micros(),
        }
    }

    fn from_ordinal(kind: ScalarKind, ordinal: i64) -> Option<ScalarValue> {
        Some(match kind {
            ScalarKind::Int => ScalarValue::Int(ordinal),
            ScalarKind::Date => ScalarValue::Date(NaiveDate::from_num_days_from_ce_opt(
                i32::try_from(ordinal).ok()?,
            )?),
            ScalarKind::Timestamp => {
                ScalarValue::Timestamp(DateTime::from_timestamp_micros(ordinal)?.naive_utc())
            }
            ScalarKind::TimestampTz => {
                ScalarValue::TimestampTz(DateTime::from_timestamp_micros(ordinal)?)
            }
        })
    }

    /// A typed SQL literal. Safe to splice: it is rendered from a typed value, never from text
    /// a user wrote.
    pub fn sql_literal(&self, dialect: Dialect) -> String {
        match (self, dialect) {
            (ScalarValue::Int(v), _) => v.to_string(),
            (ScalarValue::Date(d), _) => {
                let (date, era) = sql_date(*d);
                format!("DATE '{date}{era}'")
            }
            (ScalarValue::Timestamp(t), _) => {
                let (date, era) = sql_date(t.date());
                format!("TIMESTAMP '{date} {}{era}'", t.format("%H:%M:%S%.6f"))
            }
            (ScalarValue::TimestampTz(t), Dialect::Postgres) => {
                let (date, era) = sql_date(t.date_naive());
                format!("TIMESTAMPTZ '{date} {}+00{era}'", t.format("%H:%M:%S%.6f"))
            }
            // MySQL TIMESTAMP columns are compared in the session time zone, which sluice sets
            // to +00:00.
            (ScalarValue::TimestampTz(t), Dialect::Mysql) => {
                let (date, era) = sql_date(t.date_naive());
                format!("TIMESTAMP '{date} {}{era}'", t.format("%H:%M:%S%.6f"))
            }
        }
    }
}

/// A date as SQL writes it: at least four year digits, never a sign; years before 1 AD as
/// `YYYY-MM-DD` plus a ` BC` suffix (year 0 is 1 BC).
fn sql_date(d: NaiveDate) -> (String, &'static str) {
    let year = d.year();
    let (year, era) = if year <= 0 {
        (1 - year, " BC")
    } else {
        (year, "")
    };
    (format!("{year:04}-{:02}-{:02}", d.month(), d.day()), era)
}

impl std::fmt::Display for ScalarValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ScalarValue::Int(v) => write!(f, "{v}"),
            ScalarValue::Date(d) => write!(f, "{d}"),
            ScalarValue::Timestamp(t) => write!(f, "{}", t.format("%Y-%m-%d %H:%M:%S%.6f")),
            ScalarValue::TimestampTz(t) => write!(f, "{}", t.format("%Y-%m-%d %H:%M:%S%.6fZ")),
        }
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum PlanError {
    #[error(
        "table {table}: load.lookback {lookback} does not fit cursor '{cursor}' of kind {kind:?}: {hint}"
    )]
    LookbackMismatch {
        table: String,
        cursor: String,
        kind: ScalarKind,
        lookback: String,
        hint: &'static str,
    },
    #[error(
        "table {table}: the stored watermark is a {stored:?} but cursor '{cursor}' is now a {kind:?}; reset the watermark (sluice watermark reset) after changing the cursor column"
    )]
    WatermarkKindChanged {
        table: String,
        cursor: String,
        stored: ScalarKind,
        kind: ScalarKind,
    },
    #[error("table {table}: {message}")]
    Invalid { table: String, message: String },
}

/// The cursor window of one incremental run: `cursor > lower AND cursor <= upper`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CursorWindow {
    pub column: String,
    /// Exclusive; `None` on the first run (everything up to `upper`).
    pub lower: Option<ScalarValue>,
    /// Inclusive, fixed at plan time. `None` when no row has a cursor value yet.
    pub upper: Option<ScalarValue>,
    /// Rows whose cursor is NULL are read too (`load.include_null_cursor`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub include_nulls: bool,
    /// Why `upper` is below `max(cursor)`: a transaction still writing when the run was
    /// planned (see [`crate::late_writers`]). Absent in runs stored before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold: Option<UpperBoundHold>,
}

/// How a column is selected when its values are read in the source's text form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadCast {
    /// `CAST(col AS text)`.
    Text,
    /// `CAST(col AS text[])`: an array whose elements are read in text form.
    TextArray,
}

/// One chunk of a run: a half-open range of the partition column, or its NULLs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ChunkRange {
    /// The whole table (no partition column).
    All,
    /// `column >= lower AND column < upper`, either end open when `None`.
    Range {
        lower: Option<ScalarValue>,
        upper: Option<ScalarValue>,
    },
    /// `column IS NULL`.
    Null,
    /// The rows stored in heap blocks `lower` up to `upper` (open when `None`), by their
    /// `ctid`: PostgreSQL reads such a range with a TID range scan (14 and later: "Allow
    /// efficient heap scanning of a range of TIDs",
    /// https://www.postgresql.org/docs/14/release-14.html; the executor node is
    /// `nodeTidrangescan.c`, and `EXPLAIN` shows `Tid Range Scan`), which costs
    /// the server no more than its share of one sequential scan, where a key range costs an
    /// index scan (or a whole scan) of its own. A row that is updated moves to another
    /// block, so block ranges are planned only when every chunk reads the plan's one
    /// exported snapshot (see [`CatalogFacts::blocks`]).
    Blocks { lower: u64, upper: Option<u64> },
}

/// Facts the source gathered at plan time, inside one snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct CatalogFacts {
    /// The columns to extract, resolved against the catalog, in order.
    pub columns: Vec<String>,
    /// Kind of the cursor column, when there is one.
    pub cursor_kind: Option<ScalarKind>,
    /// `max(cursor)` over the rows the run may read.
    pub cursor_max: Option<ScalarValue>,
    pub partition: Option<PartitionFacts>,
    /// An exported snapshot chunks can attach to while the planning transaction lives.
    pub snapshot: Option<String>,
    /// The table's size in heap blocks, read in the plan's snapshot, when its chunks may be
    /// block ranges ([`ChunkRange::Blocks`]): a PostgreSQL 14+ ordinary table with an exported
    /// snapshot, and a caller that keeps that snapshot open for every chunk (local runs). The
    /// pipeline clears it otherwise.
    pub blocks: Option<u64>,
    /// Columns read through a text cast.
    pub casts: BTreeMap<String, ReadCast>,
    /// Counted conditions found at plan time, e.g. rows an incremental run skips because
    /// their cursor is NULL.
    pub warnings: BTreeMap<String, u64>,
    /// The oldest open writing transaction, read before the snapshot; `None` when the source
    /// did not look (full loads, no cursor).
    pub late_writers: Option<WriterCheck>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PartitionFacts {
    pub kind: ScalarKind,
    pub min: Option<ScalarValue>,
    pub max: Option<ScalarValue>,
    pub nullable: bool,
    /// Rows the run will read: an exact count of an incremental window, or the table
    /// statistics' estimate for full loads. Drives `chunk_rows`.
    pub estimated_rows: u64,
}

/// Everything an extraction of one run needs, decided once at plan time and stored with the
/// run so every chunk (and every retry of a chunk) reads exactly the same thing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunPlan {
    pub run_id: RunId,
    pub engine: Engine,
    pub started_at: DateTime<Utc>,
    /// The table's configuration as it was when the run was planned.
    pub table: TableConfig,
    pub columns: Vec<String>,
    pub cursor: Option<CursorWindow>,
    pub partition_column: Option<String>,
    pub chunks: Vec<ChunkRange>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub casts: BTreeMap<String, ReadCast>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub warnings: BTreeMap<String, u64>,
    /// A key-set run's plan (see [`build_keyset_plan`]): `columns` are the primary key, read
    /// from every row, and the files go under `_keysets/`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keyset: bool,
    /// A CDC table's run: where in the log it starts and ends (see [`CdcWindow`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cdc: Option<CdcWindow>,
}

/// The log positions of one CDC run, fixed at plan time so every retry of it reads the same
/// changes. Positions are PostgreSQL LSNs, or MariaDB binlog positions
/// ([`crate::cdc::binlog::BinlogPosition`]), as integers; the table's watermark is one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CdcWindow {
    /// The replication slot (PostgreSQL); empty for a binlog reader, which has none.
    pub slot: String,
    pub publication: String,
    /// Where the slot stands (its `confirmed_flush_lsn`, which the plan moved up to the
    /// table's watermark): transactions committing at or after it are not yet in STAGING.
    pub from: u64,
    /// The log flushed at plan time: the run reads transactions whose commit record starts
    /// before it, and no others.
    pub upto: u64,
    /// The most messages the run reads; reaching it ends the run at the last whole
    /// transaction, and the next run goes on from there.
    pub max_changes: u32,
    /// The table's first run (or a re-snapshot): the plan moved the slot to the flushed log
    /// (`from`), waited for the transactions running then, and only then took the snapshot
    /// its chunks read; every change the snapshot does not hold commits at or after `from`,
    /// which is its watermark.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub snapshot: bool,
    /// The WAL the slot held when the run was planned (bytes from its `restart_lsn` to the
    /// log's end): the server keeps it until the slot moves.
    #[serde(default)]
    pub retained_wal: u64,
}

impl CdcWindow {
    /// The warning a slot holding more WAL than `max_mb` MiB deserves, if it does.
    pub fn lag_warning(&self, max_mb: u32) -> Option<String> {
        let mib = self.retained_wal / (1024 * 1024);
        if self.slot.is_empty() {
            // A binlog reader holds nothing on the server: the danger is the other way round,
            // the server purging what the table has not read yet.
            return (mib > u64::from(max_mb)).then(|| {
                format!(
                    "the binary log held {mib} MiB after the table's position when the run was planned (load.max_slot_lag_mb is {max_mb}): the server purges old files (binlog_expire_logs_seconds) whether or not they were read, and a purged position needs a new snapshot; run the table more often or with a higher load.max_changes"
                )
            });
        }
        (mib > u64::from(max_mb)).then(|| {
            format!(
                "replication slot '{}' held {mib} MiB of WAL when the run was planned (load.max_slot_lag_mb is {max_mb}): the server keeps it until runs move the slot; run the table more often or with a higher load.max_changes",
                self.slot
            )
        })
    }
}

/// The most WAL one CDC run decodes: the rest is the next run's.
pub const MAX_RUN_WAL: u64 = 1 << 30;

/// Facts a CDC plan is built on, read from the source's slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CdcFacts {
    /// The slot's `confirmed_flush_lsn` after the plan moved it: up to the watermark, or, for a
    /// snapshot, to the flushed log.
    pub confirmed: u64,
    /// `pg_current_wal_flush_lsn()`.
    pub flushed: u64,
    /// Bytes of WAL the slot holds (`restart_lsn` to the log's end).
    pub retained: u64,
}

impl RunPlan {
    /// Whether the run reads the table's change log (rather than its rows).
    pub fn reads_changes(&self) -> bool {
        self.cdc.as_ref().is_some_and(|c| !c.snapshot)
    }

    /// Chunks of this run that may extract at once: the table's `partition.max_concurrency`
    /// as it was when the run was planned (the default when it was not set), never more than
    /// the run has chunks and never less than one. The same number bounds a local run and a
    /// run fanned out in Lambda, where it is the number of chains (see [`ChunkChains`]).
    pub fn extract_concurrency(&self) -> u32 {
        let configured = self
            .table
            .partition
            .as_ref()
            .and_then(|p| p.max_concurrency)
            .unwrap_or(DEFAULT_MAX_CONCURRENCY);
        let chunks = u32::try_from(self.chunks.len()).unwrap_or(u32::MAX);
        configured.min(chunks).max(1)
    }
}

/// How a serverless run keeps at most `width` chunks extracting: the trigger starts chunks
/// `0..width`, and each chunk, once recorded done, starts `chunk + width` if the run has it.
/// That makes `width` chains of chunks each running one after the other, so never more than
/// `width` chunks of the run are extracting, and every chunk is started by exactly one
/// predecessor (or the trigger).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkChains {
    pub chunks: u32,
    pub width: u32,
}

impl ChunkChains {
    pub fn new(chunks: u32, max_concurrency: u32) -> ChunkChains {
        ChunkChains {
            chunks,
            width: max_concurrency.min(chunks).max(1),
        }
    }

    /// The chunks the trigger starts.
    pub fn first(&self) -> std::ops::Range<u32> {
        0..self.width.min(self.chunks)
    }

    /// The chunk that `chunk` starts once it is done, if any.
    pub fn successor(&self, chunk: u32) -> Option<u32> {
        chunk
            .checked_add(self.width)
            .filter(|next| *next < self.chunks)
    }

    /// The chunk that starts `chunk`; `None` for the chunks the trigger starts.
    pub fn predecessor(&self, chunk: u32) -> Option<u32> {
        chunk
            .checked_sub(self.width)
            .filter(|_| chunk < self.chunks)
    }

    /// Where a resumed run starts again: in each chain, its first chunk not `done` (a chain
    /// runs in order, so the chunks after it are not done either and it starts them as
    /// usual). Chains whose chunks are all done start nothing.
    pub fn resume_points(&self, done: impl Fn(u32) -> bool) -> Vec<u32> {
        self.first()
            .filter_map(|head| {
                let mut chunk = head;
                while done(chunk) {
                    chunk = self.successor(chunk)?;
                }
                Some(chunk)
            })
            .collect()
    }
}

/// Subtracts the lookback from a stored watermark.
pub fn apply_lookback(
    table: &str,
    cursor: &str,
    watermark: &ScalarValue,
    lookback: Option<&Lookback>,
) -> Result<ScalarValue, PlanError> {
    let Some(lookback) = lookback else {
        return Ok(watermark.clone());
    };
    let mismatch = |hint| PlanError::LookbackMismatch {
        table: table.to_owned(),
        cursor: cursor.to_owned(),
        kind: watermark.kind(),
        lookback: match lookback {
            Lookback::Duration { spelled, .. } => format!("'{spelled}'"),
            Lookback::Units(n) => n.to_string(),
        },
        hint,
    };
    let overflow = || PlanError::Invalid {
        table: table.to_owned(),
        message: format!("load.lookback reaches before the earliest representable {cursor} value"),
    };
    match (watermark, lookback) {
        (ScalarValue::Int(v), Lookback::Units(n)) => Ok(ScalarValue::Int(v.saturating_sub(*n))),
        (ScalarValue::Int(_), Lookback::Duration { .. }) => Err(mismatch(
            "an integer cursor takes a plain number as lookback",
        )),
        (_, Lookback::Units(_)) => Err(mismatch(
            "a date or timestamp cursor takes a duration such as \"15m\" as lookback",
        )),
        (ScalarValue::Date(d), Lookback::Duration { micros, .. }) => {
            // Whole days, rounded up, so the window never shrinks.
            let days = (micros.max(&0) + 86_399_999_999) / 86_400_000_000;
            d.checked_sub_signed(Duration::days(days))
                .map(ScalarValue::Date)
                .ok_or_else(overflow)
        }
        (ScalarValue::Timestamp(t), Lookback::Duration { micros, .. }) => t
            .checked_sub_signed(Duration::microseconds(*micros))
            .map(ScalarValue::Timestamp)
            .ok_or_else(overflow),
        (ScalarValue::TimestampTz(t), Lookback::Duration { micros, .. }) => t
            .checked_sub_signed(Duration::microseconds(*micros))
            .map(ScalarValue::TimestampTz)
            .ok_or_else(overflow),
    }
}

/// The exclusive lower bound of an incremental run's cursor window: the stored watermark
/// minus the lookback. `None` for full loads and first runs.
pub fn window_lower_bound(
    table: &TableConfig,
    watermark: Option<&ScalarValue>,
) -> Result<Option<ScalarValue>, PlanError> {
    match (&table.load.mode, &table.load.cursor, watermark) {
        (LoadMode::Incremental, Some(cursor), Some(w)) => {
            apply_lookback(&table.table, cursor, w, table.load.lookback.as_ref()).map(Some)
        }
        _ => Ok(None),
    }
}

/// How many chunks to cut, from the partition settings and the estimated row count.
pub fn chunk_count(partition: &PartitionConfig, estimated_rows: u64) -> u32 {
    let n = match (partition.chunks, partition.chunk_rows) {
        (Some(n), _) => n,
        (None, Some(rows)) if rows > 0 => {
            u32::try_from(estimated_rows.div_ceil(rows)).unwrap_or(crate::config::MAX_CHUNKS)
        }
        _ => 1,
    };
    n.clamp(1, crate::config::MAX_CHUNKS)
}

/// Interior boundaries that split `[min, max]` into at most `n` ranges of near-equal width.
///
/// The result is strictly increasing and every boundary lies in `(min, max]`; with the first
/// range open below and the last open above, the ranges cover the whole integer line exactly
/// once.
pub fn split_boundaries(min: i64, max: i64, n: u32) -> Vec<i64> {
    if max <= min || n <= 1 {
        return Vec::new();
    }
    let width = i128::from(max) - i128::from(min) + 1;
    let n = i128::from(n).min(width);
    (1..n)
        .map(|k| {
            // ceil(k * width / n) keeps boundaries strictly increasing because width >= n.
            let offset = (k * width + n - 1) / n;
            // In range: min < min + offset <= max since offset < width.
            i64::try_from(i128::from(min) + offset).unwrap_or(max)
        })
        .collect()
}

/// Cuts the partition column's range into chunks; NULLs get a chunk of their own.
pub fn plan_chunks(facts: &PartitionFacts, n: u32) -> Vec<ChunkRange> {
    let boundaries: Vec<ScalarValue> = match (&facts.min, &facts.max) {
        (Some(min), Some(max)) => split_boundaries(min.to_ordinal(), max.to_ordinal(), n)
            .into_iter()
            .filter_map(|b| ScalarValue::from_ordinal(facts.kind, b))
            .collect(),
        _ => Vec::new(),
    };
    let mut chunks = Vec::with_capacity(boundaries.len() + 2);
    let mut lower = None;
    for boundary in boundaries {
        chunks.push(ChunkRange::Range {
            lower: lower.take(),
            upper: Some(boundary.clone()),
        });
        lower = Some(boundary);
    }
    chunks.push(ChunkRange::Range { lower, upper: None });
    if facts.nullable {
        chunks.push(ChunkRange::Null);
    }
    chunks
}

/// Cuts heap blocks `[0, blocks)` into at most `n` near-equal ranges, the last open above (a
/// row can sit past the size read at plan time only if written after the snapshot, and such
/// rows are invisible to it, but an open end costs nothing and leaves no doubt).
pub fn plan_block_chunks(blocks: u64, n: u32) -> Vec<ChunkRange> {
    let n = u64::from(n).clamp(1, blocks.max(1));
    if n <= 1 {
        return vec![ChunkRange::All];
    }
    (0..n)
        .map(|k| ChunkRange::Blocks {
            lower: k * blocks / n,
            upper: (k + 1 < n).then(|| (k + 1) * blocks / n),
        })
        .collect()
}

/// Builds the plan of a run from the table config, the stored watermark and catalog facts.
pub fn build_plan(
    run_id: RunId,
    engine: Engine,
    started_at: DateTime<Utc>,
    table: &TableConfig,
    watermark: Option<&ScalarValue>,
    facts: CatalogFacts,
) -> Result<RunPlan, PlanError> {
    let mut late_writer_warning = None;
    let cursor = match (&table.load.mode, &table.load.cursor) {
        (LoadMode::Incremental, Some(column)) => {
            let kind = facts.cursor_kind.ok_or_else(|| PlanError::Invalid {
                table: table.table.clone(),
                message: format!("cursor '{column}' has no usable type"),
            })?;
            let lower = match watermark {
                Some(w) if w.kind() != kind => {
                    return Err(PlanError::WatermarkKindChanged {
                        table: table.table.clone(),
                        cursor: column.clone(),
                        stored: w.kind(),
                        kind,
                    });
                }
                _ => window_lower_bound(table, watermark)?,
            };
            // Held below the oldest open writer, and never moving backwards: if nothing newer
            // may be read, the upper bound stays at the watermark and the run reads only the
            // lookback overlap.
            let check = facts.late_writers.as_ref();
            let held = incremental_upper(
                kind,
                facts.cursor_max.as_ref(),
                watermark,
                check.and_then(|c| c.oldest.as_ref()),
            );
            // Integer cursors are never held, so not seeing other sessions changes nothing
            // for them.
            if let (Some(unseen), false) = (
                check.and_then(|c| c.unseen.as_ref()),
                kind == ScalarKind::Int,
            ) {
                late_writer_warning = Some(unseen.clone());
            }
            Some(CursorWindow {
                column: column.clone(),
                lower,
                upper: held.upper,
                include_nulls: table.load.include_null_cursor,
                hold: held.hold,
            })
        }
        (LoadMode::Full, Some(column)) => Some(CursorWindow {
            column: column.clone(),
            lower: None,
            upper: facts.cursor_max.clone(),
            include_nulls: true,
            hold: None,
        }),
        _ => None,
    };
    let (partition_column, chunks) = match (&table.partition, &facts.partition) {
        (Some(config), Some(pf)) => (
            Some(config.column.clone()),
            match facts.blocks {
                Some(blocks) => plan_block_chunks(blocks, chunk_count(config, pf.estimated_rows)),
                None => plan_chunks(pf, chunk_count(config, pf.estimated_rows)),
            },
        ),
        _ => (None, vec![ChunkRange::All]),
    };
    let mut warnings = facts.warnings;
    if let Some(warning) = late_writer_warning {
        warnings.insert(warning, 1);
    }
    if table.load.mode == LoadMode::Incremental && table.primary_key.is_empty() {
        warnings.insert(
            "incremental load without primary_key: the staging MERGE cannot deduplicate re-read rows".into(),
            1,
        );
    }
    Ok(RunPlan {
        run_id,
        engine,
        started_at,
        table: table.clone(),
        columns: facts.columns,
        cursor,
        partition_column,
        chunks,
        snapshot: facts.snapshot,
        casts: facts.casts,
        warnings,
        keyset: false,
        cdc: None,
    })
}

/// The plan of a run of a CDC table. Without a watermark (the first run, or a reload) it is a
/// snapshot of the whole table, like a full load, whose watermark is the slot's position
/// read before the snapshot; with one, a single chunk reading the log from the slot's
/// position to the position flushed at plan time.
pub fn build_cdc_plan(
    run_id: RunId,
    engine: Engine,
    started_at: DateTime<Utc>,
    table: &TableConfig,
    watermark: Option<&ScalarValue>,
    cdc: CdcFacts,
    facts: CatalogFacts,
) -> Result<RunPlan, PlanError> {
    let invalid = |message: String| PlanError::Invalid {
        table: table.table.clone(),
        message,
    };
    if let Some((column, _)) = facts.casts.iter().next() {
        return Err(invalid(format!(
            "column '{column}' is read through a text cast (its type has no exact binary reading), which the change log cannot give; leave it out of columns to use cdc"
        )));
    }
    let snapshot = match watermark {
        None => true,
        Some(ScalarValue::Int(position)) => {
            let position = u64::try_from(*position)
                .map_err(|_| invalid(format!("the stored cdc position {position} is negative")))?;
            if cdc.confirmed > position {
                return Err(invalid(format!(
                    "slot '{slot}' stands at {at}, past sluice's position {ours}: something else consumed or advanced the slot (or a new snapshot moved it and then failed), so the changes between are lost to sluice. Take a new snapshot: sluice watermark reset --table {key} --yes, then run the table (or trigger it with full_reload)",
                    slot = table.cdc_slot(),
                    at = crate::cdc::pgoutput::Lsn(cdc.confirmed),
                    ours = crate::cdc::pgoutput::Lsn(position),
                    key = table.key(),
                )));
            }
            false
        }
        Some(other) => {
            return Err(PlanError::WatermarkKindChanged {
                table: table.table.clone(),
                cursor: "(cdc position)".into(),
                stored: other.kind(),
                kind: ScalarKind::Int,
            });
        }
    };
    let mut read = table.clone();
    read.load.mode = LoadMode::Full;
    let mut plan = build_plan(run_id, engine, started_at, &read, None, facts)?;
    plan.table = table.clone();
    if !snapshot {
        plan.partition_column = None;
        plan.chunks = vec![ChunkRange::All];
    }
    // Decoding costs the server its whole log, not only the table's changes: a window of at
    // most MAX_RUN_WAL bytes keeps a run inside Lambda's time however quiet the table is
    // (any position is a safe bound: the read and the next slot move agree on it).
    let (upto, slot, publication) = match engine {
        // MariaDB's positions are (file, offset) pairs, and only a position where an event
        // starts can be read from: the binlog read caps its own bytes at MAX_RUN_WAL and
        // ends at a transaction boundary, which it reports as the run's end.
        Engine::Mysql => (cdc.flushed.max(cdc.confirmed), String::new(), String::new()),
        Engine::Postgres => (
            cdc.flushed
                .min(cdc.confirmed.saturating_add(MAX_RUN_WAL))
                .max(cdc.confirmed),
            table.cdc_slot(),
            table.cdc_publication(),
        ),
    };
    plan.cdc = Some(CdcWindow {
        slot,
        publication,
        from: cdc.confirmed,
        upto,
        max_changes: table.cdc_max_changes(),
        snapshot,
        retained_wal: cdc.retained,
    });
    let limit = table
        .load
        .max_slot_lag_mb
        .unwrap_or(crate::config::DEFAULT_MAX_SLOT_LAG_MB);
    if let Some(warning) = plan.cdc.as_ref().and_then(|c| c.lag_warning(limit)) {
        plan.warnings.insert(warning, 1);
    }
    Ok(plan)
}

/// The plan of a key-set run of `table`, from facts gathered for
/// [`TableConfig::keyset_read`]: the primary key of every row the `where` keeps, with no
/// cursor window. It keeps `table` as configured (so a resumed run still matches it), while
/// its columns, chunks and casts are the key read's.
pub fn build_keyset_plan(
    run_id: RunId,
    engine: Engine,
    started_at: DateTime<Utc>,
    table: &TableConfig,
    facts: CatalogFacts,
) -> Result<RunPlan, PlanError> {
    let read = table.keyset_read();
    let mut plan = build_plan(run_id, engine, started_at, &read, None, facts)?;
    plan.table = table.clone();
    plan.keyset = true;
    Ok(plan)
}

impl RunPlan {
    pub fn dialect(&self) -> Dialect {
        match self.engine {
            Engine::Postgres => Dialect::Postgres,
            Engine::Mysql => Dialect::Mysql,
        }
    }

    /// The window's new watermark once the run completes: the upper bound fixed at plan time.
    /// A CDC run's is where its read ended, known only once it has read
    /// ([`crate::run::RunRecord::next_watermark`]).
    pub fn next_watermark(&self) -> Option<&ScalarValue> {
        self.cursor.as_ref().and_then(|c| c.upper.as_ref())
    }

    /// Why the upper bound is below `max(cursor)`, when an open writer held it back.
    pub fn upper_hold(&self) -> Option<&UpperBoundHold> {
        self.cursor.as_ref().and_then(|c| c.hold.as_ref())
    }

    /// The `SELECT` that reads chunk `index`, or `None` when there is no such chunk.
    pub fn chunk_select(&self, index: usize) -> Option<String> {
        let chunk = self.chunks.get(index)?;
        let table = TableName::parse(&self.table.table).ok()?;
        Some(select_sql(
            self.dialect(),
            &table,
            &self.columns,
            &self.casts,
            self.table.filter.as_deref(),
            self.read_window(),
            self.partition_column.as_deref().map(|c| (c, chunk)),
        ))
    }

    /// The count of rows chunk `index` may read at most (see [`chunk_bound_count_sql`]), or
    /// `None` when there is no such chunk.
    pub fn chunk_bound_count(&self, index: usize) -> Option<String> {
        let chunk = self.chunks.get(index)?;
        let table = TableName::parse(&self.table.table).ok()?;
        Some(chunk_bound_count_sql(
            self.dialect(),
            &table,
            self.read_window(),
            self.partition_column.as_deref().map(|c| (c, chunk)),
        ))
    }

    /// The cursor window the run's reads are bounded by: only an incremental run has one.
    fn read_window(&self) -> Option<&CursorWindow> {
        if self.table.load.mode == LoadMode::Incremental {
            self.cursor.as_ref()
        } else {
            None
        }
    }
}

/// The conditions every query of a run shares: the user's `where` and the cursor window
/// (`cursor > lower AND cursor <= upper`; nothing at all when the window is empty).
pub fn scope_conditions(
    dialect: Dialect,
    filter: Option<&str>,
    window: Option<&CursorWindow>,
) -> Vec<String> {
    let mut conditions = Vec::new();
    if let Some(filter) = filter {
        conditions.push(format!("({filter})"));
    }
    if let Some(window) = window {
        let column = dialect.quote(&window.column);
        let range = match &window.upper {
            None => "1 = 0".to_owned(),
            Some(upper) => {
                let upper = format!("{column} <= {}", upper.sql_literal(dialect));
                match &window.lower {
                    Some(lower) => format!("{column} > {} AND {upper}", lower.sql_literal(dialect)),
                    None => upper,
                }
            }
        };
        conditions.push(if window.include_nulls {
            format!("({range} OR {column} IS NULL)")
        } else {
            range
        });
    }
    conditions
}

/// The planning query over a key column: `min`, `max` and, when asked, the row count, within
/// the user's `where` and the cursor window. Integer keys are widened to 64 bits so every
/// integer type reads back the same way.
pub fn key_extremes_sql(
    dialect: Dialect,
    table: &TableName,
    column: &str,
    kind: ScalarKind,
    with_count: bool,
    filter: Option<&str>,
    window: Option<&CursorWindow>,
) -> String {
    let q = dialect.quote(column);
    let (min, max, count) = match dialect {
        Dialect::Postgres => {
            let cast = if kind == ScalarKind::Int {
                "::int8"
            } else {
                ""
            };
            let count = if with_count { "count(*)" } else { "NULL::int8" };
            (format!("min({q}){cast}"), format!("max({q}){cast}"), count)
        }
        Dialect::Mysql => {
            let count = if with_count { "COUNT(*)" } else { "NULL" };
            (format!("MIN({q})"), format!("MAX({q})"), count)
        }
    };
    let mut sql = format!(
        "SELECT {min}, {max}, {count} FROM {}",
        table.quoted(dialect)
    );
    let conditions = scope_conditions(dialect, filter, window);
    if !conditions.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conditions.join(" AND "));
    }
    sql
}

/// Counts the rows an incremental run skips because their cursor is NULL.
pub fn null_cursor_count_sql(
    dialect: Dialect,
    table: &TableName,
    cursor: &str,
    filter: Option<&str>,
) -> String {
    let mut conditions = scope_conditions(dialect, filter, None);
    conditions.push(format!("{} IS NULL", dialect.quote(cursor)));
    format!(
        "SELECT COUNT(*) FROM {} WHERE {}",
        table.quoted(dialect),
        conditions.join(" AND ")
    )
}

/// The extraction query: selected columns, the user's `where`, the cursor window and the
/// chunk's range, every identifier quoted and every value a typed literal.
pub fn select_sql(
    dialect: Dialect,
    table: &TableName,
    columns: &[String],
    casts: &BTreeMap<String, ReadCast>,
    filter: Option<&str>,
    cursor: Option<&CursorWindow>,
    chunk: Option<(&str, &ChunkRange)>,
) -> String {
    let select_list = columns
        .iter()
        .map(|c| {
            let q = dialect.quote(c);
            match (casts.get(c), dialect) {
                (None, _) => q,
                (Some(ReadCast::Text), Dialect::Postgres) => format!("CAST({q} AS text) AS {q}"),
                (Some(ReadCast::TextArray), Dialect::Postgres) => {
                    format!("CAST({q} AS text[]) AS {q}")
                }
                (Some(_), Dialect::Mysql) => format!("CAST({q} AS CHAR) AS {q}"),
            }
        })
        .collect::<Vec<_>>()
        .join(", ");
    let mut conditions = scope_conditions(dialect, filter, cursor);
    conditions.extend(chunk_conditions(dialect, chunk));
    with_where(
        format!("SELECT {select_list} FROM {}", table.quoted(dialect)),
        &conditions,
    )
}

/// The rows a chunk may read at most: its range within the cursor window, counted without the
/// user's `where`. The user's clause can only narrow a read, so a chunk whose rows outnumber
/// this count read rows outside its range (a `where` that escaped its parentheses, a planner
/// bug) and must not complete.
pub fn chunk_bound_count_sql(
    dialect: Dialect,
    table: &TableName,
    cursor: Option<&CursorWindow>,
    chunk: Option<(&str, &ChunkRange)>,
) -> String {
    let mut conditions = scope_conditions(dialect, None, cursor);
    conditions.extend(chunk_conditions(dialect, chunk));
    with_where(
        format!("SELECT count(*) FROM {}", table.quoted(dialect)),
        &conditions,
    )
}

fn with_where(mut sql: String, conditions: &[String]) -> String {
    if !conditions.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conditions.join(" AND "));
    }
    sql
}

/// The conditions that keep a read inside one chunk's range of the partition column.
fn chunk_conditions(dialect: Dialect, chunk: Option<(&str, &ChunkRange)>) -> Vec<String> {
    let mut conditions = Vec::new();
    let Some((column, range)) = chunk else {
        return conditions;
    };
    let column = dialect.quote(column);
    match range {
        ChunkRange::All => {}
        // PostgreSQL's tuple ids, `(block, offset)`: offset 0 sorts before every row of the
        // block. Typed literals of integers, nothing from the user.
        ChunkRange::Blocks { lower, upper } => {
            conditions.push(format!("ctid >= '({lower},0)'::tid"));
            if let Some(upper) = upper {
                conditions.push(format!("ctid < '({upper},0)'::tid"));
            }
        }
        ChunkRange::Null => conditions.push(format!("{column} IS NULL")),
        ChunkRange::Range { lower, upper } => {
            if let Some(lower) = lower {
                conditions.push(format!("{column} >= {}", lower.sql_literal(dialect)));
            }
            if let Some(upper) = upper {
                conditions.push(format!("{column} < {}", upper.sql_literal(dialect)));
            }
            if lower.is_none() && upper.is_none() {
                conditions.push(format!("{column} IS NOT NULL"));
            }
        }
    }
    conditions
}

#[cfg(test)]
mod tests {
    #[test]
    fn chunk_chains_start_every_chunk_once_and_at_most_width_at_a_time() {
        for chunks in 0..20u32 {
            for max in 1..8u32 {
                let chains = ChunkChains::new(chunks, max);
                let mut started: Vec<u32> = chains.first().collect();
                assert!(started.len() as u32 <= max);
                let mut i = 0;
                while i < started.len() {
                    let c = started[i];
                    if let Some(next) = chains.successor(c) {
                        assert_eq!(chains.predecessor(next), Some(c));
                        started.push(next);
                    }
                    i += 1;
                }
                started.sort_unstable();
                assert_eq!(started, (0..chunks).collect::<Vec<_>>(), "{chunks} {max}");
                for c in chains.first() {
                    assert_eq!(chains.predecessor(c), None);
                }
            }
        }
        let chains = ChunkChains::new(12, 2);
        assert_eq!(chains.first(), 0..2);
        assert_eq!(chains.successor(0), Some(2));
        assert_eq!(chains.successor(9), Some(11));
        assert_eq!(chains.successor(10), None);
        assert_eq!(ChunkChains::new(3, 64).first(), 0..3);
        // Chains 0→2→4 and 1→3: 0, 2 and 1 done; 4 and 3 start again.
        let chains = ChunkChains::new(5, 2);
        assert_eq!(chains.resume_points(|c| [0, 1, 2].contains(&c)), vec![4, 3]);
        assert_eq!(chains.resume_points(|_| true), Vec::<u32>::new());
        assert_eq!(chains.resume_points(|_| false), vec![0, 1]);
        assert_eq!(ChunkChains::new(3, 64).successor(0), None);
        assert_eq!(ChunkChains::new(u32::MAX, 64).successor(u32::MAX - 1), None);
    }

    use super::*;
    use crate::config::{LoadConfig, TargetConfig};
    use proptest::prelude::*;

    fn ts(s: &str) -> ScalarValue {
        ScalarValue::Timestamp(NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f").unwrap())
    }

    fn table(mode: LoadMode, lookback: Option<Lookback>) -> TableConfig {
        TableConfig {
            source: "shop".into(),
            table: "public.orders".into(),
            columns: None,
            primary_key: vec!["id".into()],
            load: LoadConfig {
                mode,
                cursor: Some("updated_at".into()),
                lookback,
                include_null_cursor: false,
                ..LoadConfig::default()
            },
            partition: None,
            filter: Some("status <> 'x'".into()),
            target: TargetConfig::default(),
            batch_rows: None,
            column_types: Default::default(),
            invalid_dates: Default::default(),
            schedule: None,
            deletes: Default::default(),
            max_lag: None,
        }
    }

    #[test]
    fn block_chunks_cover_every_block_once_and_read_by_ctid() {
        for blocks in [0u64, 1, 2, 3, 7, 100, 127_389] {
            for n in 1..=9u32 {
                let chunks = plan_block_chunks(blocks, n);
                assert!(!chunks.is_empty() && chunks.len() <= n as usize);
                if chunks.len() == 1 {
                    assert_eq!(chunks, vec![ChunkRange::All]);
                    continue;
                }
                // Contiguous from block 0, each non-empty, the last open above.
                let mut next = 0;
                for (k, c) in chunks.iter().enumerate() {
                    let ChunkRange::Blocks { lower, upper } = c else {
                        panic!("{c:?}");
                    };
                    assert_eq!(*lower, next, "{blocks} blocks in {n}: {chunks:?}");
                    match upper {
                        Some(upper) => {
                            assert!(upper > lower && k + 1 < chunks.len());
                            next = *upper;
                        }
                        None => assert_eq!(k + 1, chunks.len()),
                    }
                }
            }
        }

        let mut t = table(LoadMode::Full, None);
        t.filter = None;
        t.partition = Some(PartitionConfig {
            column: "id".into(),
            chunks: Some(3),
            chunk_rows: None,
            max_concurrency: None,
        });
        let mut f = facts(None);
        f.partition = Some(PartitionFacts {
            kind: ScalarKind::Int,
            min: Some(ScalarValue::Int(1)),
            max: Some(ScalarValue::Int(9000)),
            nullable: false,
            estimated_rows: 9000,
        });
        // Without block counts (Lambda, MySQL, a view): key ranges.
        let plan = build_plan(
            RunId::new(),
            Engine::Postgres,
            Utc::now(),
            &t,
            None,
            f.clone(),
        )
        .unwrap();
        assert!(
            matches!(plan.chunks[0], ChunkRange::Range { .. }),
            "{:?}",
            plan.chunks
        );
        f.blocks = Some(300);
        let plan = build_plan(RunId::new(), Engine::Postgres, Utc::now(), &t, None, f).unwrap();
        assert_eq!(
            plan.chunks,
            vec![
                ChunkRange::Blocks {
                    lower: 0,
                    upper: Some(100)
                },
                ChunkRange::Blocks {
                    lower: 100,
                    upper: Some(200)
                },
                ChunkRange::Blocks {
                    lower: 200,
                    upper: None
                },
            ]
        );
        assert_eq!(
            plan.chunk_select(1).unwrap(),
            "SELECT \"id\", \"updated_at\" FROM \"public\".\"orders\" WHERE ctid >= '(100,0)'::tid AND ctid < '(200,0)'::tid"
        );
        assert!(
            plan.chunk_bound_count(2)
                .unwrap()
                .ends_with("WHERE ctid >= '(200,0)'::tid")
        );
        // Stored with the run and read back as it was.
        let json = serde_json::to_string(&plan.chunks[2]).unwrap();
        assert_eq!(json, r#"{"kind":"blocks","lower":200,"upper":null}"#);
        assert_eq!(
            serde_json::from_str::<ChunkRange>(&json).unwrap(),
            plan.chunks[2]
        );
    }

    fn facts(max: Option<ScalarValue>) -> CatalogFacts {
        CatalogFacts {
            columns: vec!["id".into(), "updated_at".into()],
            cursor_kind: Some(ScalarKind::Timestamp),
            cursor_max: max,
            partition: None,
            snapshot: None,
            blocks: None,
            casts: BTreeMap::new(),
            warnings: BTreeMap::new(),
            late_writers: None,
        }
    }

    #[test]
    fn lookback_is_subtracted_at_full_precision() {
        let lb = Lookback::Duration {
            micros: 90_000_000,
            spelled: "90s".into(),
        };
        let got = apply_lookback("t", "c", &ts("2024-03-01 00:00:00.123456"), Some(&lb)).unwrap();
        assert_eq!(got, ts("2024-02-29 23:58:30.123456"));
        let got =
            apply_lookback("t", "c", &ScalarValue::Int(100), Some(&Lookback::Units(7))).unwrap();
        assert_eq!(got, ScalarValue::Int(93));
        let d = ScalarValue::Date(NaiveDate::from_ymd_opt(2024, 1, 10).unwrap());
        let lb = Lookback::Duration {
            micros: 3_600_000_000,
            spelled: "1h".into(),
        };
        assert_eq!(
            apply_lookback("t", "c", &d, Some(&lb)).unwrap(),
            ScalarValue::Date(NaiveDate::from_ymd_opt(2024, 1, 9).unwrap())
        );
    }

    #[test]
    fn lookback_of_the_wrong_kind_is_rejected() {
        let err = apply_lookback(
            "t",
            "id",
            &ScalarValue::Int(1),
            Some(&Lookback::Duration {
                micros: 1,
                spelled: "1s".into(),
            }),
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("integer cursor takes a plain number"),
            "{err}"
        );
        let err = apply_lookback(
            "t",
            "c",
            &ts("2024-01-01 00:00:00"),
            Some(&Lookback::Units(5)),
        )
        .unwrap_err();
        assert!(err.to_string().contains("takes a duration"), "{err}");
    }

    #[test]
    fn incremental_window_reads_past_the_watermark_minus_lookback() {
        let lb = Lookback::Duration {
            micros: 3_600_000_000,
            spelled: "1h".into(),
        };
        let t = table(LoadMode::Incremental, Some(lb));
        let plan = build_plan(
            RunId::new(),
            Engine::Postgres,
            Utc::now(),
            &t,
            Some(&ts("2024-01-01 12:00:00")),
            facts(Some(ts("2024-01-02 00:00:00.5"))),
        )
        .unwrap();
        assert_eq!(
            plan.chunk_select(0).unwrap(),
            "SELECT \"id\", \"updated_at\" FROM \"public\".\"orders\" WHERE (status <> 'x') AND \"updated_at\" > TIMESTAMP '2024-01-01 11:00:00.000000' AND \"updated_at\" <= TIMESTAMP '2024-01-02 00:00:00.500000'"
        );
        assert_eq!(plan.next_watermark(), Some(&ts("2024-01-02 00:00:00.5")));
        // The bound a chunk is checked against keeps the window and drops the user's clause,
        // which could otherwise defeat the bound the way it defeated the read.
        assert_eq!(
            plan.chunk_bound_count(0).unwrap(),
            "SELECT count(*) FROM \"public\".\"orders\" WHERE \"updated_at\" > TIMESTAMP '2024-01-01 11:00:00.000000' AND \"updated_at\" <= TIMESTAMP '2024-01-02 00:00:00.500000'"
        );
        assert_eq!(plan.chunk_bound_count(1), None);
    }

    #[test]
    fn a_chunks_bound_count_covers_its_range_and_nothing_of_the_where() {
        let range = ChunkRange::Range {
            lower: Some(ScalarValue::Int(10)),
            upper: Some(ScalarValue::Int(20)),
        };
        let name = TableName::parse("public.orders").unwrap();
        for (dialect, q) in [(Dialect::Postgres, '"'), (Dialect::Mysql, '`')] {
            assert_eq!(
                chunk_bound_count_sql(dialect, &name, None, Some(("id", &range))),
                format!(
                    "SELECT count(*) FROM {q}public{q}.{q}orders{q} WHERE {q}id{q} >= 10 AND {q}id{q} < 20"
                )
            );
            assert_eq!(
                chunk_bound_count_sql(dialect, &name, None, Some(("id", &ChunkRange::Null))),
                format!("SELECT count(*) FROM {q}public{q}.{q}orders{q} WHERE {q}id{q} IS NULL")
            );
            assert_eq!(
                chunk_bound_count_sql(dialect, &name, None, None),
                format!("SELECT count(*) FROM {q}public{q}.{q}orders{q}")
            );
        }
    }

    #[test]
    fn watermark_never_moves_backwards() {
        let t = table(LoadMode::Incremental, None);
        let wm = ts("2024-01-05 00:00:00");
        let plan = build_plan(
            RunId::new(),
            Engine::Postgres,
            Utc::now(),
            &t,
            Some(&wm),
            facts(Some(ts("2024-01-01 00:00:00"))),
        )
        .unwrap();
        assert_eq!(plan.next_watermark(), Some(&wm));
        let plan = build_plan(
            RunId::new(),
            Engine::Postgres,
            Utc::now(),
            &t,
            Some(&wm),
            facts(None),
        )
        .unwrap();
        assert_eq!(plan.next_watermark(), Some(&wm));
    }

    #[test]
    fn an_open_writer_holds_the_window_and_the_plan_records_why() {
        use crate::late_writers::{OpenWriter, WriterCheck};
        let lb = Lookback::Duration {
            micros: 1_000_000,
            spelled: "1s".into(),
        };
        let t = table(LoadMode::Incremental, Some(lb));
        let writer = OpenWriter {
            pid: 77,
            since: chrono::TimeZone::with_ymd_and_hms(&Utc, 2024, 1, 1, 18, 0, 0).unwrap(),
            since_local: NaiveDate::from_ymd_opt(2024, 1, 1)
                .unwrap()
                .and_hms_opt(18, 0, 0)
                .unwrap(),
        };
        let mut f = facts(Some(ts("2024-01-02 00:00:00")));
        f.late_writers = Some(WriterCheck::seen(Some(writer.clone())));
        let plan = build_plan(
            RunId::new(),
            Engine::Postgres,
            Utc::now(),
            &t,
            Some(&ts("2024-01-01 12:00:00")),
            f,
        )
        .unwrap();
        assert_eq!(
            plan.next_watermark(),
            Some(&ts("2024-01-01 17:59:59.999999"))
        );
        assert!(
            plan.chunk_select(0)
                .unwrap()
                .ends_with("\"updated_at\" <= TIMESTAMP '2024-01-01 17:59:59.999999'")
        );
        assert_eq!(plan.upper_hold().unwrap().writer, writer);
        assert!(plan.warnings.is_empty(), "{:?}", plan.warnings);

        // Not seeing other sessions: one warning, and max(cursor) as before.
        let mut f = facts(Some(ts("2024-01-02 00:00:00")));
        f.late_writers = Some(WriterCheck::missing_privilege(Engine::Postgres, None));
        let plan = build_plan(RunId::new(), Engine::Postgres, Utc::now(), &t, None, f).unwrap();
        assert_eq!(plan.next_watermark(), Some(&ts("2024-01-02 00:00:00")));
        assert_eq!(plan.upper_hold(), None);
        assert_eq!(plan.warnings.len(), 1);
        assert!(
            plan.warnings
                .keys()
                .all(|k| k.contains("pg_read_all_stats"))
        );

        // A plan stored before holds existed still reads.
        let mut stored = serde_json::to_value(&plan).unwrap();
        assert!(stored["cursor"].get("hold").is_none());
        stored["cursor"]
            .as_object_mut()
            .unwrap()
            .remove("include_nulls");
        let back: RunPlan = serde_json::from_value(stored).unwrap();
        assert_eq!(back.upper_hold(), None);
    }

    #[test]
    fn integer_cursors_are_not_held_and_not_warned_about() {
        use crate::late_writers::{OpenWriter, WriterCheck};
        let t = table(LoadMode::Incremental, None);
        let mut f = facts(Some(ScalarValue::Int(500)));
        f.cursor_kind = Some(ScalarKind::Int);
        let since = Utc::now();
        f.late_writers = Some(WriterCheck {
            oldest: Some(OpenWriter {
                pid: 1,
                since,
                since_local: since.naive_utc(),
            }),
            unseen: Some("late writers not checked: test".into()),
        });
        let plan = build_plan(
            RunId::new(),
            Engine::Mysql,
            Utc::now(),
            &t,
            Some(&ScalarValue::Int(100)),
            f,
        )
        .unwrap();
        assert_eq!(plan.next_watermark(), Some(&ScalarValue::Int(500)));
        assert_eq!(plan.upper_hold(), None);
        assert!(plan.warnings.is_empty(), "{:?}", plan.warnings);
    }

    #[test]
    fn first_incremental_run_on_an_empty_table_reads_nothing() {
        let t = table(LoadMode::Incremental, None);
        let plan = build_plan(
            RunId::new(),
            Engine::Postgres,
            Utc::now(),
            &t,
            None,
            facts(None),
        )
        .unwrap();
        assert!(plan.chunk_select(0).unwrap().ends_with("AND 1 = 0"));
        assert_eq!(plan.next_watermark(), None);
    }

    #[test]
    fn full_mode_reads_everything_but_records_the_upper_bound() {
        let t = table(LoadMode::Full, None);
        let plan = build_plan(
            RunId::new(),
            Engine::Mysql,
            Utc::now(),
            &t,
            Some(&ts("2024-01-01 00:00:00")),
            facts(Some(ts("2024-02-01 00:00:00"))),
        )
        .unwrap();
        assert_eq!(
            plan.chunk_select(0).unwrap(),
            "SELECT `id`, `updated_at` FROM `public`.`orders` WHERE (status <> 'x')"
        );
        assert_eq!(plan.next_watermark(), Some(&ts("2024-02-01 00:00:00")));
    }

    #[test]
    fn casts_and_null_cursors_render_into_the_query() {
        let mut t = table(LoadMode::Incremental, None);
        t.load.include_null_cursor = true;
        let mut f = facts(Some(ts("2024-01-02 00:00:00")));
        f.casts.insert("id".into(), ReadCast::Text);
        let plan = build_plan(
            RunId::new(),
            Engine::Postgres,
            Utc::now(),
            &t,
            Some(&ts("2024-01-01 00:00:00")),
            f,
        )
        .unwrap();
        assert_eq!(
            plan.chunk_select(0).unwrap(),
            "SELECT CAST(\"id\" AS text) AS \"id\", \"updated_at\" FROM \"public\".\"orders\" WHERE (status <> 'x') AND (\"updated_at\" > TIMESTAMP '2024-01-01 00:00:00.000000' AND \"updated_at\" <= TIMESTAMP '2024-01-02 00:00:00.000000' OR \"updated_at\" IS NULL)"
        );
    }

    fn cdc_table() -> TableConfig {
        let mut t = table(LoadMode::Full, None);
        t.load = LoadConfig {
            mode: LoadMode::Cdc,
            max_slot_lag_mb: Some(1),
            ..LoadConfig::default()
        };
        t.filter = None;
        t
    }

    fn cdc_facts() -> CatalogFacts {
        CatalogFacts {
            columns: vec!["id".into()],
            cursor_kind: None,
            cursor_max: None,
            partition: None,
            snapshot: None,
            blocks: None,
            casts: BTreeMap::new(),
            warnings: BTreeMap::new(),
            late_writers: None,
        }
    }

    #[test]
    fn cdc_plans_snapshot_without_a_position_read_the_log_with_one_and_refuse_a_gap() {
        let t = cdc_table();
        let at = Utc::now();
        let facts = CdcFacts {
            confirmed: 100,
            flushed: 500,
            retained: 3 * 1024 * 1024,
        };
        let first = build_cdc_plan(
            RunId::new(),
            Engine::Postgres,
            at,
            &t,
            None,
            facts,
            cdc_facts(),
        )
        .unwrap();
        let window = first.cdc.clone().unwrap();
        assert!(window.snapshot && !first.reads_changes());
        assert_eq!((window.from, window.upto), (100, 500));
        assert!(
            first
                .warnings
                .keys()
                .any(|w| w.contains("held 3 MiB of WAL")),
            "{:?}",
            first.warnings
        );
        let next = build_cdc_plan(
            RunId::new(),
            Engine::Postgres,
            at,
            &t,
            Some(&ScalarValue::Int(100)),
            facts,
            cdc_facts(),
        )
        .unwrap();
        assert!(next.reads_changes());
        assert_eq!(next.chunks, vec![ChunkRange::All]);
        // A backlog past MAX_RUN_WAL is read over several runs.
        let far = CdcFacts {
            flushed: 100 + 3 * MAX_RUN_WAL,
            ..facts
        };
        let capped = build_cdc_plan(
            RunId::new(),
            Engine::Postgres,
            at,
            &t,
            Some(&ScalarValue::Int(100)),
            far,
            cdc_facts(),
        )
        .unwrap();
        assert_eq!(capped.cdc.unwrap().upto, 100 + MAX_RUN_WAL);
        // The slot moved past what STAGING has: changes are lost to sluice, say so.
        let gap = build_cdc_plan(
            RunId::new(),
            Engine::Postgres,
            at,
            &t,
            Some(&ScalarValue::Int(99)),
            facts,
            cdc_facts(),
        )
        .unwrap_err()
        .to_string();
        assert!(gap.contains("past sluice's position"), "{gap}");
        // A cursor's watermark left from another mode is not a position.
        let stale = build_cdc_plan(
            RunId::new(),
            Engine::Postgres,
            at,
            &t,
            Some(&ScalarValue::Date(
                NaiveDate::from_ymd_opt(2024, 1, 1).unwrap(),
            )),
            facts,
            cdc_facts(),
        );
        assert!(matches!(stale, Err(PlanError::WatermarkKindChanged { .. })));
        // A text-cast column has no binary form in the log.
        let mut cast = cdc_facts();
        cast.casts.insert("id".into(), ReadCast::Text);
        let err = build_cdc_plan(RunId::new(), Engine::Postgres, at, &t, None, facts, cast)
            .unwrap_err()
            .to_string();
        assert!(err.contains("read through a text cast"), "{err}");
    }

    #[test]
    fn literals_handle_years_beyond_four_digits_and_before_christ() {
        let far = NaiveDate::from_ymd_opt(17868, 5, 15)
            .unwrap()
            .and_hms_micro_opt(0, 53, 20, 500_001)
            .unwrap();
        assert_eq!(
            ScalarValue::Timestamp(far).sql_literal(Dialect::Postgres),
            "TIMESTAMP '17868-05-15 00:53:20.500001'"
        );
        let bc = NaiveDate::from_ymd_opt(-43, 3, 15).unwrap();
        assert_eq!(
            ScalarValue::Date(bc).sql_literal(Dialect::Postgres),
            "DATE '0044-03-15 BC'"
        );
        assert_eq!(
            ScalarValue::TimestampTz(bc.and_hms_opt(10, 0, 0).unwrap().and_utc())
                .sql_literal(Dialect::Postgres),
            "TIMESTAMPTZ '0044-03-15 10:00:00.000000+00 BC'"
        );
        let early = NaiveDate::from_ymd_opt(33, 1, 2).unwrap();
        assert_eq!(
            ScalarValue::Date(early).sql_literal(Dialect::Mysql),
            "DATE '0033-01-02'"
        );
    }

    #[test]
    fn planning_queries_render_per_dialect() {
        let t = TableName::parse("shop.orders").unwrap();
        let window = CursorWindow {
            column: "updated_at".into(),
            lower: Some(ts("2024-01-01 00:00:00")),
            upper: Some(ts("2024-01-02 00:00:00")),
            include_nulls: false,
            hold: None,
        };
        assert_eq!(
            key_extremes_sql(
                Dialect::Postgres,
                &t,
                "id",
                ScalarKind::Int,
                true,
                Some("a > 1"),
                Some(&window)
            ),
            "SELECT min(\"id\")::int8, max(\"id\")::int8, count(*) FROM \"shop\".\"orders\" WHERE (a > 1) AND \"updated_at\" > TIMESTAMP '2024-01-01 00:00:00.000000' AND \"updated_at\" <= TIMESTAMP '2024-01-02 00:00:00.000000'"
        );
        assert_eq!(
            key_extremes_sql(Dialect::Mysql, &t, "d", ScalarKind::Date, false, None, None),
            "SELECT MIN(`d`), MAX(`d`), NULL FROM `shop`.`orders`"
        );
        assert_eq!(
            null_cursor_count_sql(Dialect::Postgres, &t, "updated_at", Some("a > 1")),
            "SELECT COUNT(*) FROM \"shop\".\"orders\" WHERE (a > 1) AND \"updated_at\" IS NULL"
        );
    }

    #[test]
    fn a_changed_cursor_kind_is_reported() {
        let t = table(LoadMode::Incremental, None);
        let err = build_plan(
            RunId::new(),
            Engine::Postgres,
            Utc::now(),
            &t,
            Some(&ScalarValue::Int(5)),
            facts(None),
        )
        .unwrap_err();
        assert!(
            matches!(err, PlanError::WatermarkKindChanged { .. }),
            "{err}"
        );
    }

    #[test]
    fn chunk_predicates_are_half_open_with_a_null_chunk() {
        let pf = PartitionFacts {
            kind: ScalarKind::Int,
            min: Some(ScalarValue::Int(1)),
            max: Some(ScalarValue::Int(100)),
            nullable: true,
            estimated_rows: 100,
        };
        let chunks = plan_chunks(&pf, 4);
        assert_eq!(chunks.len(), 5);
        let sql: Vec<String> = chunks
            .iter()
            .map(|c| {
                select_sql(
                    Dialect::Postgres,
                    &TableName::parse("t").unwrap(),
                    &["id".into()],
                    &BTreeMap::new(),
                    None,
                    None,
                    Some(("id", c)),
                )
            })
            .collect();
        assert_eq!(sql[0], "SELECT \"id\" FROM \"t\" WHERE \"id\" < 26");
        assert_eq!(
            sql[1],
            "SELECT \"id\" FROM \"t\" WHERE \"id\" >= 26 AND \"id\" < 51"
        );
        assert_eq!(sql[3], "SELECT \"id\" FROM \"t\" WHERE \"id\" >= 76");
        assert_eq!(sql[4], "SELECT \"id\" FROM \"t\" WHERE \"id\" IS NULL");
    }

    #[test]
    fn timestamp_and_date_ranges_split_on_their_own_units() {
        let pf = PartitionFacts {
            kind: ScalarKind::Timestamp,
            min: Some(ts("2024-01-01 00:00:00")),
            max: Some(ts("2024-01-01 00:00:01")),
            nullable: false,
            estimated_rows: 0,
        };
        assert_eq!(
            plan_chunks(&pf, 2)[0],
            ChunkRange::Range {
                lower: None,
                upper: Some(ts("2024-01-01 00:00:00.500001"))
            }
        );
        let day = |d| ScalarValue::Date(NaiveDate::from_ymd_opt(2024, 1, d).unwrap());
        let pf = PartitionFacts {
            kind: ScalarKind::Date,
            min: Some(day(1)),
            max: Some(day(4)),
            nullable: false,
            estimated_rows: 0,
        };
        assert_eq!(
            plan_chunks(&pf, 2),
            vec![
                ChunkRange::Range {
                    lower: None,
                    upper: Some(day(3))
                },
                ChunkRange::Range {
                    lower: Some(day(3)),
                    upper: None
                }
            ]
        );
    }

    #[test]
    fn chunk_count_follows_rows_and_clamps() {
        let p = |chunks, chunk_rows| PartitionConfig {
            column: "id".into(),
            chunks,
            chunk_rows,
            max_concurrency: None,
        };
        assert_eq!(chunk_count(&p(Some(3), None), 0), 3);
        assert_eq!(chunk_count(&p(None, Some(1000)), 2500), 3);
        assert_eq!(chunk_count(&p(None, Some(1000)), 0), 1);
        assert_eq!(
            chunk_count(&p(None, Some(1)), u64::MAX),
            crate::config::MAX_CHUNKS
        );
    }

    #[test]
    fn empty_or_single_value_ranges_make_one_chunk() {
        assert!(split_boundaries(5, 5, 8).is_empty());
        assert!(split_boundaries(0, 100, 1).is_empty());
        assert_eq!(split_boundaries(0, 2, 8), vec![1, 2]);
        assert_eq!(split_boundaries(i64::MIN, i64::MAX, 2), vec![0]);
    }

    fn chunk_of(boundaries: &[i64], v: i64) -> usize {
        boundaries.iter().take_while(|b| v >= **b).count()
    }

    proptest! {
        #[test]
        fn boundaries_are_strictly_increasing_inside_the_range(min in any::<i64>(), span in 0u64..u64::MAX, n in 1u32..2000) {
            let max = min.saturating_add_unsigned(span);
            let b = split_boundaries(min, max, n);
            prop_assert!(b.len() < n as usize);
            prop_assert!(b.windows(2).all(|w| w[0] < w[1]));
            prop_assert!(b.iter().all(|x| *x > min && *x <= max));
        }

        #[test]
        fn every_value_falls_in_exactly_one_chunk(min in -1_000_000i64..1_000_000, span in 0i64..10_000, n in 1u32..64, probe in -2_000_000i64..2_000_000) {
            let max = min + span;
            let pf = PartitionFacts { kind: ScalarKind::Int, min: Some(ScalarValue::Int(min)), max: Some(ScalarValue::Int(max)), nullable: false, estimated_rows: 0 };
            let chunks = plan_chunks(&pf, n);
            let matching = chunks.iter().filter(|c| match c {
                ChunkRange::Range { lower, upper } => {
                    lower.as_ref().is_none_or(|l| ScalarValue::Int(probe) >= *l)
                        && upper.as_ref().is_none_or(|u| ScalarValue::Int(probe) < *u)
                }
                _ => false,
            }).count();
            prop_assert_eq!(matching, 1);
            let b = split_boundaries(min, max, n);
            // Chunks are near-equal: no chunk inside [min, max] is more than one wider than another.
            let mut sizes = vec![0i64; b.len() + 1];
            for v in min..=max { sizes[chunk_of(&b, v)] += 1; }
            let (lo, hi) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
            prop_assert!(hi - lo <= 1, "{:?}", sizes);
        }
    }
}
