//! The configuration model: sources and tables, as authored in YAML and stored in DynamoDB.
//!
//! One serde model serves both. Parsing reports the path of the field that failed to
//! deserialize; [`Config::validate`] then reports every semantic problem at once, each with
//! its path (`tables[2].primary_key: required when load.mode = incremental`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::ident::{TableName, check_identifier};

/// Largest batch a source may build before handing it to the sink.
pub const MAX_BATCH_ROWS: usize = 1_000_000;
/// What a batch should weigh when `batch_rows` is not set. Measured with `scripts/bench`:
/// wide rows (~250 bytes) want ~16K-row batches to keep peak memory down, narrow rows want
/// 64K-row batches (smaller ones made the Parquet files half as big again).
pub const DEFAULT_BATCH_BYTES: usize = 4 * 1024 * 1024;
/// Bounds of the batch size derived from `DEFAULT_BATCH_BYTES`.
pub const MIN_DEFAULT_BATCH_ROWS: usize = 4_096;
pub const MAX_DEFAULT_BATCH_ROWS: usize = 65_536;
/// Most chunks one run may be split into.
pub const MAX_CHUNKS: u32 = 1024;
/// Most chunks extracted at once by one process.
pub const MAX_CONCURRENCY: u32 = 64;
/// Longest `where` clause accepted.
pub const MAX_WHERE_LEN: usize = 4096;
/// Largest `connection.max_connections`: a source slot is one state item, and a cap this high
/// is already no cap for any database sluice reads from.
pub const MAX_SOURCE_CONNECTIONS: u32 = 1000;

/// A whole configuration file: the sources to read and the tables to ingest from them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub sources: Vec<SourceConfig>,
    #[serde(default)]
    pub tables: Vec<TableConfig>,
    /// Gold procedures, each run once per batch after every input of the batch merged (see
    /// [`crate::gold`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gold: Vec<crate::gold::GoldConfig>,
}

/// A database sluice reads from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Short name, used in S3 keys (`<engine>/<name>/…`) and in `sluice.ingest('<name>', …)`.
    pub name: String,
    pub engine: Engine,
    pub connection: ConnectionConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    Postgres,
    Mysql,
}

impl Engine {
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Postgres => "postgres",
            Engine::Mysql => "mysql",
        }
    }
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How to reach a source. Credentials never live here: a URL must not carry a password;
/// `secret_arn` names the Secrets Manager secret that holds them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ConnectionConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_arn: Option<String>,
    /// For local runs only: the name of an environment variable holding the password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    /// TLS: `disable`, `prefer` (default), `require`, `verify-ca` or `verify-full`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sslmode: Option<SslMode>,
    /// PEM bundle of CAs to trust (e.g. the RDS bundle); the system roots when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssl_root_cert: Option<String>,
    /// Longest a single statement may run on the source (`"2h"`); unlimited when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statement_timeout: Option<String>,
    /// Most connections sluice has open to this source at once, for planning or chunk
    /// extraction, across every run and table, in Lambda and locally alike (a slot in the
    /// state store per connection); unlimited when absent. 1 to [`MAX_SOURCE_CONNECTIONS`].
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "max_connections"
    )]
    pub max_connections: Option<u32>,
}

/// What `connection.max_connections` must be, in every message about it.
const MAX_CONNECTIONS_RULE: &str = "must be a whole number from 1 to 1000";

/// `connection.max_connections` as written: any whole number that fits is kept, so 0 and
/// numbers above the bound are reported by [`Config::validate`] with every other problem;
/// negative numbers, fractions and text fail here, with the same words.
fn max_connections<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    struct Visitor;
    fn refused<E: serde::de::Error>(value: impl fmt::Display) -> E {
        E::custom(format!("{MAX_CONNECTIONS_RULE}, not {value}"))
    }
    impl<'de> serde::de::Visitor<'de> for Visitor {
        type Value = Option<u32>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a whole number from 1 to 1000")
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
            u32::try_from(v).map(Some).map_err(|_| refused(v))
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
            u32::try_from(v).map(Some).map_err(|_| refused(v))
        }
        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Self::Value, E> {
            Err(refused(v))
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Err(refused(format!("'{v}'")))
        }
        fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Self::Value, E> {
            Err(refused(v))
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D2: serde::Deserializer<'de>>(self, d: D2) -> Result<Self::Value, D2::Error> {
            d.deserialize_any(Visitor)
        }
    }
    d.deserialize_any(Visitor)
}

/// TLS modes, with libpq's meanings: `prefer` and `require` encrypt without verifying the
/// server; `verify-ca` checks its certificate chain; `verify-full` also checks its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// Parses a duration written as a whole number and a unit (`ms`, `s`, `m`, `h`, `d`).
pub fn parse_duration(text: &str) -> Option<std::time::Duration> {
    parse_duration_micros(text)
        .and_then(|micros| u64::try_from(micros).ok())
        .map(std::time::Duration::from_micros)
}

/// One table to ingest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableConfig {
    /// Name of an entry in `sources`.
    pub source: String,
    /// `schema.table` (PostgreSQL) or `table` / `database.table` (MySQL).
    pub table: String,
    /// Columns to extract, in this order; all columns when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub columns: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub primary_key: Vec<String>,
    #[serde(default)]
    pub load: LoadConfig,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<PartitionConfig>,
    /// A SQL boolean expression ANDed into every extraction query. It is SQL by design, so it
    /// is checked for statement separators and comments and run inside a read-only transaction.
    #[serde(rename = "where", default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    #[serde(default, skip_serializing_if = "TargetConfig::is_empty")]
    pub target: TargetConfig,
    /// Rows per Arrow batch (default: about 4 MiB of rows, between 4,096 and 65,536).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_rows: Option<usize>,
    /// Per-column overrides of the type a column lands as: `string`, `decimal(p,s)`, or
    /// (MySQL `tinyint(1)`/`bit(1)`) `boolean`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub column_types: BTreeMap<String, ColumnTypeOverride>,
    /// What to do with dates and timestamps the warehouse cannot hold (PostgreSQL's
    /// `±infinity`, MySQL's zero dates): `null` (default; counted as a warning) or `fail`.
    #[serde(default, skip_serializing_if = "InvalidDates::is_default")]
    pub invalid_dates: InvalidDates,
    /// When the deployed trigger starts this table on its own: a five-field cron expression
    /// in UTC (e.g. `0 2 * * *`). Absent: only when asked (`sluice.ingest`, `sluice trigger`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// What happens in STAGING to rows gone from the source (default: nothing).
    #[serde(default, skip_serializing_if = "DeletesConfig::is_default")]
    pub deletes: DeletesConfig,
    /// How stale the table may get before the deployed lag alarm fires: a duration such as
    /// `6h` (see [`crate::metrics`] for how the lag is measured). Absent: no time threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_lag: Option<String>,
}

/// Rows deleted at the source, in STAGING. A full load reads the whole table, so a key
/// STAGING holds and the run does not is a row deleted since: the merge removes it
/// (`hard`) or marks it (`soft`), unless that would remove more than `max_fraction` of
/// STAGING (a source that lost its data, a `where` changed by mistake). An incremental
/// table never reads a deleted row, so it finds deletes by key sets (`keyset`): a run that
/// reads only the primary key of every row and takes the keys STAGING holds and it does not.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeletesConfig {
    #[serde(default)]
    pub mode: DeleteMode,
    /// The largest share of STAGING's live rows one run may delete or mark, in (0, 1];
    /// a run that would take more fails before it touches STAGING. `1` allows anything,
    /// including a run that read no rows at all.
    #[serde(default = "default_max_fraction")]
    pub max_fraction: f64,
    /// Key-set runs of an incremental table (required there with `hard` or `soft`; refused
    /// for full loads, whose every run reads every key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keyset: Option<KeysetConfig>,
}

/// When an incremental table's key set is read (see [`DeletesConfig`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysetConfig {
    /// How often the deployed schedule tick (and `sluice run`, after a load) starts a key-set
    /// run: a duration such as `24h` or `7d`, at least a minute. Absent: only when asked
    /// (`sluice run --keyset`, `options: {"mode": "keyset"}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every: Option<String>,
}

/// The shortest `deletes.keyset.every`: a key set reads every key of the table, and the
/// schedule tick that starts them runs once a minute.
pub const MIN_KEYSET_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// The shortest `max_lag` (see [`TableConfig::max_lag`]).
pub const MIN_MAX_LAG: std::time::Duration = std::time::Duration::from_secs(60);

impl KeysetConfig {
    /// `every` as a duration; `None` when absent or not a duration (which validation refuses).
    pub fn every(&self) -> Option<std::time::Duration> {
        self.every.as_deref().and_then(parse_duration)
    }
}

/// Half: a run that deletes more than half of a table is far likelier a broken source or a
/// mistaken `where` than a real purge, and a purge can say so with `max_fraction: 1`.
pub const DEFAULT_MAX_DELETE_FRACTION: f64 = 0.5;

fn default_max_fraction() -> f64 {
    DEFAULT_MAX_DELETE_FRACTION
}

impl Default for DeletesConfig {
    fn default() -> Self {
        DeletesConfig {
            mode: DeleteMode::Off,
            max_fraction: DEFAULT_MAX_DELETE_FRACTION,
            keyset: None,
        }
    }
}

impl DeletesConfig {
    fn is_default(&self) -> bool {
        *self == DeletesConfig::default()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DeleteMode {
    /// Rows gone from the source stay in STAGING.
    #[default]
    Off,
    /// Rows gone from the source are deleted from STAGING.
    Hard,
    /// Rows gone from the source stay, with `_sluice_deleted = TRUE` and the time in
    /// `_sluice_deleted_at`; a row that comes back is live again.
    Soft,
}

/// The type a column is forced to land as, overriding the engine's mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum ColumnTypeOverride {
    /// The source's own text form of the value.
    String,
    /// An exact decimal; values that do not fit fail the run (never rounded).
    Decimal { precision: u8, scale: i8 },
    /// A boolean, for MySQL's `tinyint(1)` / `bit(1)`: MySQL cannot tell a flag from a small
    /// number, so this is opt-in; a value other than 0 or 1 fails the run.
    Boolean,
}

impl TryFrom<String> for ColumnTypeOverride {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        let t = text.trim().to_ascii_lowercase();
        if t == "string" {
            return Ok(ColumnTypeOverride::String);
        }
        if t == "boolean" {
            return Ok(ColumnTypeOverride::Boolean);
        }
        let parsed = t
            .strip_prefix("decimal(")
            .and_then(|rest| rest.strip_suffix(')'))
            .and_then(|args| args.split_once(','))
            .and_then(|(p, s)| Some((p.trim().parse::<u8>().ok()?, s.trim().parse::<i8>().ok()?)));
        match parsed {
            Some((precision, scale))
                if (1..=38).contains(&precision) && scale >= 0 && scale as u8 <= precision =>
            {
                Ok(ColumnTypeOverride::Decimal { precision, scale })
            }
            _ => Err(format!(
                "'{text}' is not a column type override: use string, boolean, or decimal(p,s) with 1 <= p <= 38 and 0 <= s <= p"
            )),
        }
    }
}

impl From<ColumnTypeOverride> for String {
    fn from(o: ColumnTypeOverride) -> String {
        match o {
            ColumnTypeOverride::String => "string".into(),
            ColumnTypeOverride::Boolean => "boolean".into(),
            ColumnTypeOverride::Decimal { precision, scale } => {
                format!("decimal({precision},{scale})")
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum InvalidDates {
    #[default]
    Null,
    Fail,
}

impl InvalidDates {
    fn is_default(&self) -> bool {
        *self == InvalidDates::Null
    }
}

impl TableConfig {
    /// Whether deletes reach STAGING through key-set runs (incremental tables with deletes),
    /// rather than through every run's own rows (full loads).
    pub fn deletes_by_keyset(&self) -> bool {
        self.deletes.mode != DeleteMode::Off && self.load.mode == LoadMode::Incremental
    }

    /// The table as a key-set run reads it: only the primary key, every row the `where`
    /// keeps (no cursor window), in chunks of the partition column only when it is a key
    /// column (a row cannot move between such chunks while they are read).
    pub fn keyset_read(&self) -> TableConfig {
        let mut read = self.clone();
        read.columns = Some(self.primary_key.clone());
        read.load.mode = LoadMode::Full;
        read.load.cursor = None;
        read.load.lookback = None;
        read.load.include_null_cursor = false;
        read.partition = self
            .partition
            .clone()
            .filter(|p| self.primary_key.contains(&p.column));
        read.column_types
            .retain(|column, _| self.primary_key.contains(column));
        read.target.json_columns.clear();
        read
    }

    /// `max_lag` as a duration; `None` when absent or not a duration (which validation
    /// refuses).
    pub fn max_lag(&self) -> Option<std::time::Duration> {
        self.max_lag.as_deref().and_then(parse_duration)
    }

    /// The parsed table name; only valid after [`Config::validate`] succeeded.
    pub fn table_name(&self) -> Result<TableName, String> {
        TableName::parse(&self.table)
    }

    /// The replication slot of a CDC table: `load.slot`, or `sluice_<source>_<schema>_<table>`
    /// lower-cased with every other character made `_` (PostgreSQL allows only lower-case
    /// letters, digits and `_` in a slot name), shortened with a hash of the full name when it
    /// would pass 63 characters so two long names stay apart.
    pub fn cdc_slot(&self) -> String {
        if let Some(slot) = &self.load.slot {
            return slot.clone();
        }
        let raw = format!("sluice_{}_{}", self.source, self.table);
        let name: String = raw
            .chars()
            .map(|c| {
                let c = c.to_ascii_lowercase();
                if c.is_ascii_lowercase() || c.is_ascii_digit() {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        if name.len() <= MAX_SLOT_NAME_LEN {
            return name;
        }
        // FNV-1a: stable across builds and platforms, unlike std's hasher.
        let hash = raw.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        format!("{}_{:08x}", &name[..MAX_SLOT_NAME_LEN - 9], hash as u32)
    }

    /// The publication of a CDC table: `load.publication`, or the slot's name.
    pub fn cdc_publication(&self) -> String {
        self.load
            .publication
            .clone()
            .unwrap_or_else(|| self.cdc_slot())
    }

    /// The most messages one CDC run reads.
    pub fn cdc_max_changes(&self) -> u32 {
        self.load.max_changes.unwrap_or(DEFAULT_MAX_CHANGES)
    }

    /// `source/schema.table`: the key a table's state (watermark, lease, runs) lives under.
    pub fn key(&self) -> String {
        format!("{}/{}", self.source, self.table)
    }

    /// Rows per batch: `batch_rows` when set, else about `DEFAULT_BATCH_BYTES` of rows of the
    /// estimated width.
    pub fn batch_rows(&self, estimated_row_bytes: usize) -> usize {
        self.batch_rows.unwrap_or_else(|| {
            (DEFAULT_BATCH_BYTES / estimated_row_bytes.max(1))
                .clamp(MIN_DEFAULT_BATCH_ROWS, MAX_DEFAULT_BATCH_ROWS)
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct LoadConfig {
    #[serde(default)]
    pub mode: LoadMode,
    /// Column whose value only grows when a row changes (`updated_at`, an id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    /// How far behind the watermark to re-read, to catch rows committed late.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lookback: Option<Lookback>,
    /// Whether incremental runs also read rows whose cursor is NULL (every run re-reads them,
    /// since they never pass the watermark). Full loads always read them. Default false: they
    /// are counted as a warning instead.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub include_null_cursor: bool,
    /// `mode: cdc`: the logical replication slot the table's changes are read from (default
    /// [`TableConfig::cdc_slot`]); created by `sluice cdc setup`, never by a run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<String>,
    /// `mode: cdc`: the publication naming the table (default: the slot's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publication: Option<String>,
    /// `mode: cdc`: at most this many decoded messages per run, the rest is the next run's
    /// (whole transactions: the server checks the count only at a commit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_changes: Option<u32>,
    /// `mode: cdc`: warn (in the run and `sluice status`) when the slot holds more WAL than
    /// this many MiB when a run is planned (default [`DEFAULT_MAX_SLOT_LAG_MB`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_slot_lag_mb: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LoadMode {
    #[default]
    Full,
    Incremental,
    /// Log-based change data capture: the first run snapshots the table, later runs read the
    /// changes committed since (PostgreSQL logical replication, `pgoutput`).
    Cdc,
}

/// Messages a CDC run reads at most, by default: well inside Lambda's 15 minutes at the
/// decoding rates `scripts/bench` measures.
pub const DEFAULT_MAX_CHANGES: u32 = 200_000;
/// WAL a CDC table's slot may hold before its runs warn, in MiB.
pub const DEFAULT_MAX_SLOT_LAG_MB: u32 = 1024;
/// PostgreSQL's limit on slot and publication names (`NAMEDATALEN - 1`).
pub const MAX_SLOT_NAME_LEN: usize = 63;

/// Chunking of one run into independently extracted ranges of `column`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartitionConfig {
    pub column: String,
    /// Exact number of chunks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunks: Option<u32>,
    /// Target rows per chunk, estimated from table statistics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk_rows: Option<u64>,
    /// Chunks extracted at once by one local process (default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<u32>,
}

/// Where the table lands in the warehouse. Empty means the defaults derived from the name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_table: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staging_table: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merge_procedure: Option<String>,
    /// Refused (kept so that an old file or item parses and is told what to write instead):
    /// gold is declared at the top level (`gold:`, see [`crate::gold`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gold_procedures: Vec<String>,
    /// Source columns holding JSON text (PostgreSQL `json`/`jsonb`, MySQL `json`): RAW keeps
    /// the text, STAGING holds them as VARIANT (`PARSE_JSON` in the merge). Named in config
    /// because the files carry JSON as plain UTF-8, indistinguishable from other text.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub json_columns: Vec<String>,
}

impl TargetConfig {
    fn is_empty(&self) -> bool {
        *self == TargetConfig::default()
    }
}

/// How far to look back behind the watermark: a duration (`"90s"`, `"15m"`, `"2h"`, `"1d"`)
/// for date and timestamp cursors, or a plain number for integer cursors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "LookbackRepr", into = "LookbackRepr")]
pub enum Lookback {
    /// A duration in microseconds, with the spelling it was written in (kept for round trips).
    Duration { micros: i64, spelled: String },
    /// A distance in the cursor's own units.
    Units(i64),
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum LookbackRepr {
    Units(i64),
    Text(String),
}

impl TryFrom<LookbackRepr> for Lookback {
    type Error = String;
    fn try_from(repr: LookbackRepr) -> Result<Self, String> {
        match repr {
            LookbackRepr::Units(n) if n < 0 => Err(format!("lookback {n} must not be negative")),
            LookbackRepr::Units(n) => Ok(Lookback::Units(n)),
            LookbackRepr::Text(text) => parse_duration_micros(&text)
                .map(|micros| Lookback::Duration {
                    micros,
                    spelled: text.clone(),
                })
                .ok_or_else(|| {
                    format!(
                        "lookback '{text}' is not a duration: write a whole number followed by ms, s, m, h or d (e.g. \"15m\"), or a plain number for integer cursors"
                    )
                }),
        }
    }
}

impl From<Lookback> for LookbackRepr {
    fn from(l: Lookback) -> Self {
        match l {
            Lookback::Duration { spelled, .. } => LookbackRepr::Text(spelled),
            Lookback::Units(n) => LookbackRepr::Units(n),
        }
    }
}

fn parse_duration_micros(text: &str) -> Option<i64> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(split);
    let n: i64 = number.parse().ok()?;
    let scale: i64 = match unit {
        "ms" => 1_000,
        "s" => 1_000_000,
        "m" => 60_000_000,
        "h" => 3_600_000_000,
        "d" => 86_400_000_000,
        _ => return None,
    };
    n.checked_mul(scale)
}

/// One problem found in a configuration, with the path of the field it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

#[derive(Debug, Error)]
pub enum ConfigError {
    /// The text is not well-formed YAML/JSON, or a field has the wrong shape.
    #[error("{origin}: {path}: {message}")]
    Parse {
        origin: String,
        path: String,
        message: String,
    },
    /// The configuration parsed but breaks one or more rules; every problem is listed.
    #[error("{origin}: {} problem(s) in the configuration:\n{}", issues.len(), issues.iter().map(|i| format!("  - {i}")).collect::<Vec<_>>().join("\n"))]
    Invalid {
        origin: String,
        issues: Vec<ConfigIssue>,
    },
}

impl Config {
    /// Parses YAML (JSON is valid YAML) and validates it. `origin` names the text in errors,
    /// usually the file path.
    pub fn from_yaml(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let deserializer = serde_yaml_ng::Deserializer::from_str(text);
        let config: Config = serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            ConfigError::Parse {
                origin: origin.to_owned(),
                path: if path == "." {
                    "(top level)".into()
                } else {
                    path
                },
                message: inner.to_string(),
            }
        })?;
        config.validate().map_err(|issues| ConfigError::Invalid {
            origin: origin.to_owned(),
            issues,
        })?;
        Ok(config)
    }

    /// Things that are allowed but probably not what the user wants, with their paths.
    pub fn warnings(&self) -> Vec<ConfigIssue> {
        let mut warnings = Vec::new();
        for (i, table) in self.tables.iter().enumerate() {
            if table.load.mode == LoadMode::Incremental && table.primary_key.is_empty() {
                warnings.push(ConfigIssue {
                    path: format!("tables[{i}].primary_key"),
                    message: "none given for an incremental load: the staging MERGE needs a key to deduplicate the lookback overlap and replays; without one they load duplicates".into(),
                });
            }
        }
        warnings
    }

    pub fn to_yaml(&self) -> Result<String, serde_yaml_ng::Error> {
        serde_yaml_ng::to_string(self)
    }

    pub fn source(&self, name: &str) -> Option<&SourceConfig> {
        self.sources.iter().find(|s| s.name == name)
    }

    /// Finds a table by `source/table`, `table`, or unqualified name when unambiguous.
    pub fn find_tables(&self, selector: &str) -> Vec<&TableConfig> {
        self.tables
            .iter()
            .filter(|t| {
                t.key() == selector
                    || t.table == selector
                    || t.table_name().is_ok_and(|n| n.name == selector)
            })
            .collect()
    }

    /// The one table `selector` names (`source/schema.table`, or a name unique across
    /// sources), or why there is none.
    pub fn find_table(&self, selector: &str) -> Result<&TableConfig, String> {
        let found = self.find_tables(selector);
        match found.as_slice() {
            [table] => Ok(table),
            [] => Err(format!(
                "no table '{selector}' is configured (tables: {})",
                self.tables
                    .iter()
                    .map(|t| t.key())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            _ => Err(format!(
                "'{selector}' is ambiguous; use source/schema.table (one of {})",
                found.iter().map(|t| t.key()).collect::<Vec<_>>().join(", ")
            )),
        }
    }

    /// Checks every rule and returns every problem, not just the first.
    pub fn validate(&self) -> Result<(), Vec<ConfigIssue>> {
        let mut issues = Issues::default();
        if self.sources.is_empty() {
            issues.push("sources", "at least one source is required");
        }
        if self.tables.is_empty() {
            issues.push("tables", "at least one table is required");
        }
        let mut names = BTreeSet::new();
        for (i, source) in self.sources.iter().enumerate() {
            let path = format!("sources[{i}]");
            validate_source(source, &path, &mut issues);
            if !names.insert(source.name.as_str()) {
                issues.push(
                    format!("{path}.name"),
                    format!("'{}' is used by more than one source", source.name),
                );
            }
        }
        let mut keys = BTreeSet::new();
        // A slot's position is one table's watermark: two tables reading one slot would each
        // move it past changes the other has not merged.
        let mut slots: BTreeMap<(String, String), String> = BTreeMap::new();
        for (i, table) in self.tables.iter().enumerate() {
            let path = format!("tables[{i}]");
            if table.load.mode == LoadMode::Cdc
                && self.source(&table.source).map(|s| s.engine) != Some(Engine::Mysql)
            {
                let slot = table.cdc_slot();
                if let Some(first) = slots.insert((table.source.clone(), slot.clone()), table.key())
                {
                    issues.push(
                        format!("{path}.load.slot"),
                        format!(
                            "'{slot}' is also the slot of {first}; every cdc table needs a slot of its own (set load.slot)"
                        ),
                    );
                }
            }
            if self.source(&table.source).is_none() {
                issues.push(
                    format!("{path}.source"),
                    format!(
                        "'{}' is not a source defined under sources (known: {})",
                        table.source,
                        known(self.sources.iter().map(|s| s.name.as_str()))
                    ),
                );
            }
            let engine = self.source(&table.source).map(|s| s.engine);
            validate_table(table, engine, &path, &mut issues);
            if !keys.insert(table.key()) {
                issues.push(
                    format!("{path}.table"),
                    format!(
                        "'{}' of source '{}' is configured more than once",
                        table.table, table.source
                    ),
                );
            }
        }
        for (i, gold) in self.gold.iter().enumerate() {
            check_qualified(
                &format!("gold[{i}].procedure"),
                &gold.procedure,
                &mut issues,
            );
        }
        if let Err(gold_issues) = crate::gold::GoldGraph::of(self) {
            for issue in gold_issues {
                issues.push(issue.path, issue.message);
            }
        }
        issues.finish()
    }

    /// The gold graph; only valid after [`Config::validate`] succeeded (empty otherwise).
    pub fn gold_graph(&self) -> crate::gold::GoldGraph {
        crate::gold::GoldGraph::of(self).unwrap_or_default()
    }
}

fn known<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let names: Vec<&str> = names.collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

#[derive(Default)]
struct Issues(Vec<ConfigIssue>);

impl Issues {
    fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigIssue {
            path: path.into(),
            message: message.into(),
        });
    }

    fn ident(&mut self, path: impl Into<String>, ident: &str) {
        if let Err(message) = check_identifier(ident) {
            self.push(path, message);
        }
    }

    fn finish(self) -> Result<(), Vec<ConfigIssue>> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(self.0)
        }
    }
}

fn validate_source(source: &SourceConfig, path: &str, issues: &mut Issues) {
    let name_ok = !source.name.is_empty()
        && source.name.len() <= 64
        && source.name.starts_with(|c: char| c.is_ascii_lowercase())
        && source
            .name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if !name_ok {
        issues.push(
            format!("{path}.name"),
            format!(
                "'{}' must be 1-64 characters of lowercase letters, digits, '_' or '-', starting with a letter (it becomes part of S3 keys)",
                source.name
            ),
        );
    }
    let c = &source.connection;
    let cpath = format!("{path}.connection");
    let has_parts =
        c.host.is_some() || c.port.is_some() || c.user.is_some() || c.database.is_some();
    match (&c.url, has_parts) {
        (Some(_), true) => issues.push(
            &cpath,
            "give either url or host/port/user/database, not both",
        ),
        (None, false) if c.secret_arn.is_none() => issues.push(
            &cpath,
            "give url, host and database, or secret_arn (a Secrets Manager secret with host, port, username, password, dbname)",
        ),
        _ => {}
    }
    if let Some(url) = &c.url {
        validate_url(url, source.engine, &format!("{cpath}.url"), issues);
    }
    if let Some(host) = &c.host {
        if host.is_empty() || host.contains(|ch: char| ch.is_whitespace() || ch == '/' || ch == '@')
        {
            issues.push(
                format!("{cpath}.host"),
                format!("'{host}' is not a host name or address"),
            );
        }
        if c.database.is_none() && c.secret_arn.is_none() {
            issues.push(
                format!("{cpath}.database"),
                "required with host (or provide it in the secret)",
            );
        }
    }
    if c.port == Some(0) {
        issues.push(format!("{cpath}.port"), "must be between 1 and 65535");
    }
    if let Some(user) = &c.user
        && user.is_empty()
    {
        issues.push(format!("{cpath}.user"), "must not be empty");
    }
    if let Some(database) = &c.database
        && let Err(message) = check_identifier(database)
    {
        issues.push(format!("{cpath}.database"), message);
    }
    if let Some(var) = &c.password_env {
        let ok = var.starts_with(|ch: char| ch.is_ascii_uppercase() || ch == '_')
            && var
                .chars()
                .all(|ch| ch.is_ascii_uppercase() || ch.is_ascii_digit() || ch == '_');
        if !ok {
            issues.push(
                format!("{cpath}.password_env"),
                "must name an environment variable (A-Z, 0-9, '_'), not hold the password itself",
            );
        }
    }
    if let Some(timeout) = &c.statement_timeout
        && parse_duration(timeout).is_none_or(|d| d.is_zero())
    {
        issues.push(
            format!("{cpath}.statement_timeout"),
            format!("'{timeout}' is not a duration such as \"30m\" or \"2h\""),
        );
    }
    if c.ssl_root_cert.is_some()
        && matches!(
            c.sslmode,
            None | Some(SslMode::Disable) | Some(SslMode::Prefer)
        )
    {
        issues.push(
            format!("{cpath}.ssl_root_cert"),
            "only used with sslmode verify-ca or verify-full (or require); set sslmode",
        );
    }
    if let Some(n) = c.max_connections
        && !(1..=MAX_SOURCE_CONNECTIONS).contains(&n)
    {
        issues.push(
            format!("{cpath}.max_connections"),
            format!("{MAX_CONNECTIONS_RULE}, not {n}"),
        );
    }
    if let Some(arn) = &c.secret_arn
        && !is_secret_arn(arn)
    {
        issues.push(
            format!("{cpath}.secret_arn"),
            "must be a Secrets Manager ARN like arn:aws:secretsmanager:eu-west-1:123456789012:secret:sluice/shop-AbCdEf",
        );
    }
}

fn validate_url(url: &str, engine: Engine, path: &str, issues: &mut Issues) {
    let schemes: &[&str] = match engine {
        Engine::Postgres => &["postgres://", "postgresql://"],
        Engine::Mysql => &["mysql://", "mariadb://"],
    };
    let Some(rest) = schemes.iter().find_map(|s| url.strip_prefix(s)) else {
        issues.push(
            path,
            format!(
                "must start with {} for engine {engine}",
                schemes.join(" or ")
            ),
        );
        return;
    };
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    if let Some((userinfo, _)) = authority.rsplit_once('@')
        && userinfo.contains(':')
    {
        // The URL itself is not echoed: it holds a password.
        issues.push(
            path,
            "must not contain a password; put credentials in Secrets Manager and set secret_arn",
        );
    }
    if url.contains("password=") {
        issues.push(
            path,
            "must not contain a password parameter; put credentials in Secrets Manager and set secret_arn",
        );
    }
    if authority.rsplit('@').next().is_none_or(str::is_empty) {
        issues.push(path, "has no host");
    }
}

fn is_secret_arn(arn: &str) -> bool {
    let parts: Vec<&str> = arn.splitn(7, ':').collect();
    matches!(parts.as_slice(),
        ["arn", partition, "secretsmanager", region, account, "secret", name]
            if partition.starts_with("aws")
                && !region.is_empty()
                && region.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && account.len() == 12
                && account.chars().all(|c| c.is_ascii_digit())
                && !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || "/_+=.@-".contains(c)))
}

/// The rules of `load.mode: cdc`: a primary key to apply changes by, a slot and publication
/// PostgreSQL accepts, and nothing a change stream cannot honour.
fn validate_cdc(table: &TableConfig, engine: Option<Engine>, path: &str, issues: &mut Issues) {
    if engine == Some(Engine::Mysql) {
        // A binlog reader has no slot or publication: it reads the server's whole log.
        for (field, given) in [
            ("slot", table.load.slot.is_some()),
            ("publication", table.load.publication.is_some()),
        ] {
            if given {
                issues.push(
                    format!("{path}.load.{field}"),
                    "applies to postgres sources only (a MySQL/MariaDB cdc table reads the binary log, which has no slots or publications)",
                );
            }
        }
    }
    if table.primary_key.is_empty() {
        issues.push(
            format!("{path}.primary_key"),
            "required when load.mode = cdc: changes are applied to STAGING by key",
        );
    }
    for (field, given) in [
        ("cursor", table.load.cursor.is_some()),
        ("lookback", table.load.lookback.is_some()),
        ("include_null_cursor", table.load.include_null_cursor),
    ] {
        if given {
            issues.push(
                format!("{path}.load.{field}"),
                "only applies when load.mode = incremental (a cdc table reads the log, not a cursor)",
            );
        }
    }
    if table.filter.is_some() {
        issues.push(
            format!("{path}.where"),
            "a cdc table applies every change of the table; a row leaving the where would never be deleted (remove where, or use incremental)",
        );
    }
    if table.deletes.keyset.is_some() {
        issues.push(
            format!("{path}.deletes.keyset"),
            "a cdc table reads its deletes from the log; key sets are for incremental tables",
        );
    }
    if table.target.merge_procedure.is_some() {
        issues.push(
            format!("{path}.target.merge_procedure"),
            "a cdc table is merged by sluice's generated procedure, which applies inserts, updates and deletes in log order",
        );
    }
    if let Some(slot) = &table.load.slot
        && (slot.is_empty()
            || slot.len() > MAX_SLOT_NAME_LEN
            || !slot
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
    {
        issues.push(
            format!("{path}.load.slot"),
            format!("'{slot}' is not a slot name: 1 to {MAX_SLOT_NAME_LEN} lower-case letters, digits or '_'"),
        );
    }
    if let Some(publication) = &table.load.publication {
        issues.ident(format!("{path}.load.publication"), publication);
        if publication.len() > MAX_SLOT_NAME_LEN {
            issues.push(
                format!("{path}.load.publication"),
                format!("is longer than {MAX_SLOT_NAME_LEN} characters, PostgreSQL's limit"),
            );
        }
    }
    if table.load.max_slot_lag_mb == Some(0) {
        issues.push(format!("{path}.load.max_slot_lag_mb"), "must be at least 1");
    }
    if let Some(n) = table.load.max_changes
        && !(1..=i32::MAX as u32).contains(&n)
    {
        issues.push(
            format!("{path}.load.max_changes"),
            format!("{n} is out of range: must be between 1 and {}", i32::MAX),
        );
    }
}

/// `engine` is the table's source's, when that source is defined: its dialect parses `where`.
fn validate_table(table: &TableConfig, engine: Option<Engine>, path: &str, issues: &mut Issues) {
    if let Err(message) = TableName::parse(&table.table) {
        issues.push(format!("{path}.table"), message);
    }
    let mut selected = BTreeSet::new();
    if let Some(columns) = &table.columns {
        if columns.is_empty() {
            issues.push(
                format!("{path}.columns"),
                "must list at least one column, or be left out to extract all columns",
            );
        }
        for (j, column) in columns.iter().enumerate() {
            issues.ident(format!("{path}.columns[{j}]"), column);
            if !selected.insert(column.as_str()) {
                issues.push(
                    format!("{path}.columns[{j}]"),
                    format!("'{column}' is listed twice"),
                );
            }
        }
    }
    let in_columns = |column: &str| table.columns.is_none() || selected.contains(column);
    let mut key_seen = BTreeSet::new();
    for (j, column) in table.primary_key.iter().enumerate() {
        let kpath = format!("{path}.primary_key[{j}]");
        issues.ident(&kpath, column);
        if !key_seen.insert(column.as_str()) {
            issues.push(&kpath, format!("'{column}' is listed twice"));
        }
        if !in_columns(column) {
            issues.push(&kpath, format!("'{column}' is not in columns"));
        }
    }
    match table.load.mode {
        LoadMode::Incremental => {
            if table.load.cursor.is_none() {
                issues.push(
                    format!("{path}.load.cursor"),
                    "required when load.mode = incremental",
                );
            }
        }
        LoadMode::Full => {
            if table.load.lookback.is_some() {
                issues.push(
                    format!("{path}.load.lookback"),
                    "only applies when load.mode = incremental",
                );
            }
        }
        LoadMode::Cdc => validate_cdc(table, engine, path, issues),
    }
    if table.load.mode != LoadMode::Cdc {
        for (field, given) in [
            ("slot", table.load.slot.is_some()),
            ("publication", table.load.publication.is_some()),
            ("max_changes", table.load.max_changes.is_some()),
            ("max_slot_lag_mb", table.load.max_slot_lag_mb.is_some()),
        ] {
            if given {
                issues.push(
                    format!("{path}.load.{field}"),
                    "only applies when load.mode = cdc",
                );
            }
        }
    }
    if let Some(cursor) = &table.load.cursor {
        issues.ident(format!("{path}.load.cursor"), cursor);
        if !in_columns(cursor) {
            issues.push(
                format!("{path}.load.cursor"),
                format!("'{cursor}' is not in columns"),
            );
        }
    }
    if let Some(partition) = &table.partition {
        let ppath = format!("{path}.partition");
        issues.ident(format!("{ppath}.column"), &partition.column);
        match (partition.chunks, partition.chunk_rows) {
            (Some(_), Some(_)) => issues.push(&ppath, "give chunks or chunk_rows, not both"),
            (Some(n), None) if n == 0 || n > MAX_CHUNKS => issues.push(
                format!("{ppath}.chunks"),
                format!("{n} is out of range: must be between 1 and {MAX_CHUNKS}"),
            ),
            (None, Some(0)) => issues.push(format!("{ppath}.chunk_rows"), "must be at least 1"),
            (None, None) => issues.push(
                &ppath,
                "give chunks (a fixed number) or chunk_rows (target rows per chunk)",
            ),
            _ => {}
        }
        if let Some(n) = partition.max_concurrency
            && (n == 0 || n > MAX_CONCURRENCY)
        {
            issues.push(
                format!("{ppath}.max_concurrency"),
                format!("{n} is out of range: must be between 1 and {MAX_CONCURRENCY}"),
            );
        }
    }
    if let Some(filter) = &table.filter {
        let wpath = format!("{path}.where");
        if filter.trim().is_empty() {
            issues.push(&wpath, "must not be empty; leave it out to read every row");
        } else if filter.len() > MAX_WHERE_LEN {
            issues.push(&wpath, format!("is longer than {MAX_WHERE_LEN} characters"));
        } else if filter.contains('\0') {
            issues.push(&wpath, "must not contain NUL characters");
        } else if let Err(message) = crate::filter::check_filter(filter, engine) {
            issues.push(&wpath, message);
        }
    }
    for column in table.column_types.keys() {
        let cpath = format!("{path}.column_types.{column}");
        issues.ident(&cpath, column);
        if !in_columns(column) {
            issues.push(&cpath, format!("'{column}' is not in columns"));
        }
    }
    if let Some(rows) = table.batch_rows
        && (rows == 0 || rows > MAX_BATCH_ROWS)
    {
        issues.push(
            format!("{path}.batch_rows"),
            format!("{rows} is out of range: must be between 1 and {MAX_BATCH_ROWS}"),
        );
    }
    if let Some(schedule) = &table.schedule
        && let Err(message) = crate::schedule::Schedule::parse(schedule)
    {
        issues.push(format!("{path}.schedule"), message);
    }
    validate_deletes(table, path, issues);
    validate_max_lag(table, path, issues);
    let t = &table.target;
    for (field, value) in [
        ("raw_table", &t.raw_table),
        ("staging_table", &t.staging_table),
        ("merge_procedure", &t.merge_procedure),
    ] {
        if let Some(value) = value {
            check_qualified(&format!("{path}.target.{field}"), value, issues);
        }
    }
    // Called after this table's own merge, a gold reading two tables ran between their two
    // merges on half-new data; gold is now its own object, run after all its inputs.
    if !t.gold_procedures.is_empty() {
        issues.push(
            format!("{path}.target.gold_procedures"),
            format!(
                "gold is no longer part of a table: declare it at the top level, run once per batch after all its inputs merged: gold: [{}]",
                t.gold_procedures
                    .iter()
                    .map(|p| format!("{{procedure: {p}, inputs: [{}]}}", table.key()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
    }
    for (j, column) in t.json_columns.iter().enumerate() {
        let jpath = format!("{path}.target.json_columns[{j}]");
        issues.ident(&jpath, column);
        if !in_columns(column) {
            issues.push(&jpath, format!("'{column}' is not in columns"));
        }
        if table.primary_key.contains(column) {
            issues.push(
                &jpath,
                format!("'{column}' is part of the primary key, which cannot be VARIANT"),
            );
        }
    }
}

/// `max_lag` is a duration of at least a minute: the lag is measured when a run ends and
/// CloudWatch's alarms evaluate periods of a minute or more, so a shorter one cannot be kept.
fn validate_max_lag(table: &TableConfig, path: &str, issues: &mut Issues) {
    let Some(text) = &table.max_lag else {
        return;
    };
    match parse_duration(text) {
        None => issues.push(
            format!("{path}.max_lag"),
            format!("'{text}' is not a duration (a whole number and a unit: s, m, h, d; e.g. 6h)"),
        ),
        Some(d) if d < MIN_MAX_LAG => issues.push(
            format!("{path}.max_lag"),
            format!("'{text}' is shorter than a minute, the shortest lag an alarm can watch"),
        ),
        Some(_) => {}
    }
}

fn validate_deletes(table: &TableConfig, path: &str, issues: &mut Issues) {
    let deletes = &table.deletes;
    let dpath = format!("{path}.deletes");
    let fraction = deletes.max_fraction;
    if !(fraction > 0.0 && fraction <= 1.0) {
        issues.push(
            format!("{dpath}.max_fraction"),
            format!("{fraction} is out of range: must be more than 0 and at most 1"),
        );
    }
    if deletes.mode == DeleteMode::Off {
        if deletes.keyset.is_some() {
            issues.push(
                format!("{dpath}.keyset"),
                "key sets find deleted rows, and deletes.mode is off (set mode: hard or soft, or remove keyset)",
            );
        }
        return;
    }
    // A cdc table's deletes come from the log; its own rules are in validate_cdc.
    if table.load.mode == LoadMode::Cdc {
        return;
    }
    let mode = format!("{dpath}.mode");
    let incremental = table.load.mode == LoadMode::Incremental;
    match (&deletes.keyset, incremental) {
        (None, true) => issues.push(
            format!("{dpath}.keyset"),
            "an incremental run never reads a deleted row, so an incremental table finds deletes by key sets: set deletes.keyset (e.g. keyset: {every: 24h}), or use mode: off",
        ),
        (Some(_), false) => issues.push(
            format!("{dpath}.keyset"),
            "a full load reads every key each run and deletes what it did not read; key sets are for incremental tables (remove keyset)",
        ),
        (Some(keyset), true) => {
            if let Some(every) = &keyset.every {
                match parse_duration(every) {
                    None => issues.push(
                        format!("{dpath}.keyset.every"),
                        format!("'{every}' is not a duration (a whole number and a unit: s, m, h, d; e.g. 24h)"),
                    ),
                    Some(d) if d < MIN_KEYSET_EVERY => issues.push(
                        format!("{dpath}.keyset.every"),
                        format!("'{every}' is shorter than a minute; a key set reads every key of the table"),
                    ),
                    Some(_) => {}
                }
            }
        }
        (None, false) => {}
    }
    if table.primary_key.is_empty() {
        issues.push(
            &mode,
            "deletes find vanished rows by primary_key, and none is given",
        );
    }
    if table.target.merge_procedure.is_some() {
        issues.push(
            &mode,
            "deletes are made by sluice's generated merge procedure; with target.merge_procedure your procedure handles them (use mode: off)",
        );
    }
    // Chunks may read different snapshots (in Lambda each reads its own): a row whose
    // partition value changed between two chunk reads is read by neither, and would be
    // deleted. A key column never moves a row between chunks. (A key-set run of an
    // incremental table reads in one chunk unless its partition column is a key column.)
    if let Some(partition) = &table.partition
        && !incremental
        && !table.primary_key.is_empty()
        && !table.primary_key.contains(&partition.column)
    {
        issues.push(
            &mode,
            format!(
                "deletes need chunks that a row cannot move between: partition.column '{}' must be a primary_key column (a row updated while the chunks are read could be missed by all of them, and deleted)",
                partition.column
            ),
        );
    }
}

/// Warehouse object names: `NAME`, `SCHEMA.NAME` or `DATABASE.SCHEMA.NAME`.
fn check_qualified(path: &str, name: &str, issues: &mut Issues) {
    let parts: Vec<&str> = name.split('.').collect();
    if parts.len() > 3 {
        issues.push(
            path,
            format!("'{name}' has more than three parts (database.schema.name)"),
        );
        return;
    }
    for part in parts {
        if let Err(message) = check_identifier(part) {
            issues.push(path, message);
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
sources:
  - name: shop
    engine: postgres
    connection:
      url: postgres://postgres@127.0.0.1:5432/shop
tables:
  - source: shop
    table: public.orders
    primary_key: [order_id]
    load:
      mode: incremental
      cursor: updated_at
      lookback: 15m
    partition:
      column: order_id
      chunks: 4
  - source: shop
    table: public.customers
"#;

    fn issues_of(yaml: &str) -> Vec<String> {
        match Config::from_yaml(yaml, "test.yaml") {
            Ok(_) => vec![],
            Err(ConfigError::Invalid { issues, .. }) => {
                issues.iter().map(ToString::to_string).collect()
            }
            Err(e @ ConfigError::Parse { .. }) => vec![e.to_string()],
        }
    }

    fn with_table(extra: &str) -> String {
        format!(
            "sources:\n  - name: shop\n    engine: postgres\n    connection:\n      url: postgres://u@h/db\ntables:\n  - source: shop\n    table: public.orders\n{extra}"
        )
    }

    #[test]
    fn cdc_tables_take_a_key_and_default_their_slot_and_publication() {
        let config = Config::from_yaml(
            &with_table("    primary_key: [id]\n    load: { mode: cdc }\n"),
            "t",
        )
        .unwrap();
        let table = &config.tables[0];
        assert_eq!(table.load.mode, LoadMode::Cdc);
        assert_eq!(table.cdc_slot(), "sluice_shop_public_orders");
        assert_eq!(table.cdc_publication(), "sluice_shop_public_orders");
        assert_eq!(table.cdc_max_changes(), DEFAULT_MAX_CHANGES);
        let mut long = table.clone();
        long.table = format!("public.{}", "Orders_".repeat(12));
        let slot = long.cdc_slot();
        assert_eq!(slot.len(), MAX_SLOT_NAME_LEN);
        assert!(
            slot.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        );
        long.table.push('x');
        assert_ne!(
            long.cdc_slot(),
            slot,
            "two long names must not share a slot"
        );
    }

    #[test]
    fn two_cdc_tables_may_not_share_a_slot() {
        let yaml = format!(
            "{}  - source: shop\n    table: public.Orders\n    primary_key: [id]\n    load: {{ mode: cdc }}\n",
            with_table("    primary_key: [id]\n    load: { mode: cdc }\n")
        );
        let issues = issues_of(&yaml);
        assert!(
            issues.iter().any(|i| i.starts_with(
                "tables[1].load.slot: 'sluice_shop_public_orders' is also the slot of shop/public.orders"
            )),
            "{issues:?}"
        );
    }

    #[test]
    fn cdc_config_mistakes_name_their_field() {
        for (extra, expected) in [
            (
                "    load: { mode: cdc }\n",
                "tables[0].primary_key: required when load.mode = cdc",
            ),
            (
                "    primary_key: [id]\n    load: { mode: cdc, cursor: updated_at }\n",
                "tables[0].load.cursor: only applies when load.mode = incremental",
            ),
            (
                "    primary_key: [id]\n    load: { mode: cdc, slot: My-Slot }\n",
                "tables[0].load.slot: 'My-Slot' is not a slot name",
            ),
            (
                "    primary_key: [id]\n    load: { mode: cdc, max_changes: 0 }\n",
                "tables[0].load.max_changes: 0 is out of range",
            ),
            (
                "    primary_key: [id]\n    load: { mode: cdc }\n    where: \"id > 3\"\n",
                "tables[0].where: a cdc table applies every change",
            ),
            (
                "    primary_key: [id]\n    load: { mode: cdc }\n    deletes: { mode: hard, keyset: { every: 24h } }\n",
                "tables[0].deletes.keyset: a cdc table reads its deletes from the log",
            ),
            (
                "    primary_key: [id]\n    load: { mode: full, slot: s }\n",
                "tables[0].load.slot: only applies when load.mode = cdc",
            ),
        ] {
            let issues = issues_of(&with_table(extra));
            assert!(
                issues.iter().any(|i| i.starts_with(expected)),
                "{extra}: expected '{expected}' in {issues:?}"
            );
        }
        let mysql = with_table("    primary_key: [id]\n    load: { mode: cdc }\n")
            .replace("engine: postgres", "engine: mysql")
            .replace("postgres://", "mysql://");
        assert_eq!(issues_of(&mysql), Vec::<String>::new(), "binlog cdc");
        let slotted = mysql.replace("mode: cdc }", "mode: cdc, slot: s, publication: p }");
        let issues = issues_of(&slotted);
        for field in ["slot", "publication"] {
            assert!(
                issues.iter().any(|i| i.starts_with(&format!(
                    "tables[0].load.{field}: applies to postgres sources only"
                ))),
                "{issues:?}"
            );
        }
        // Deletes of a cdc table come from the log: no key set, no partition rule.
        assert_eq!(
            issues_of(&with_table(
                "    primary_key: [id]\n    load: { mode: cdc, max_changes: 1000 }\n    deletes: { mode: soft }\n    partition: { column: created_at, chunks: 4 }\n"
            )),
            Vec::<String>::new()
        );
    }

    #[test]
    fn good_config_parses_and_round_trips() {
        let config = Config::from_yaml(GOOD, "good.yaml").unwrap();
        assert_eq!(config.tables.len(), 2);
        assert_eq!(
            config.tables[0].load.lookback,
            Some(Lookback::Duration {
                micros: 15 * 60 * 1_000_000,
                spelled: "15m".into()
            })
        );
        let again = Config::from_yaml(&config.to_yaml().unwrap(), "again").unwrap();
        assert_eq!(config, again);
    }

    #[test]
    fn deletes_parse_default_to_off_and_refuse_what_cannot_work() {
        let config = Config::from_yaml(&with_table("    primary_key: [id]\n"), "t").unwrap();
        assert_eq!(config.tables[0].deletes, DeletesConfig::default());
        assert_eq!(config.tables[0].deletes.mode, DeleteMode::Off);
        // Left at its default, it stays out of a round-tripped config.
        assert!(!config.to_yaml().unwrap().contains("deletes"));
        let config = Config::from_yaml(
            &with_table("    primary_key: [id]\n    deletes: { mode: soft, max_fraction: 0.2 }\n"),
            "t",
        )
        .unwrap();
        assert_eq!(
            config.tables[0].deletes,
            DeletesConfig {
                mode: DeleteMode::Soft,
                max_fraction: 0.2,
                keyset: None,
            }
        );
        let config = Config::from_yaml(
            &with_table("    primary_key: [id]\n    load: { mode: incremental, cursor: updated_at }\n    deletes: { mode: hard, keyset: { every: 24h } }\n"),
            "t",
        )
        .unwrap();
        let keyset = config.tables[0].deletes.keyset.clone().unwrap();
        assert_eq!(
            keyset.every(),
            Some(std::time::Duration::from_secs(24 * 3600))
        );
        assert!(config.tables[0].deletes_by_keyset());
        let again = Config::from_yaml(&config.to_yaml().unwrap(), "again").unwrap();
        assert_eq!(config, again);

        for (extra, expected) in [
            (
                "    primary_key: [id]\n    deletes: { mode: hard, max_fraction: 0 }\n",
                "tables[0].deletes.max_fraction: 0 is out of range: must be more than 0 and at most 1",
            ),
            (
                "    primary_key: [id]\n    deletes: { mode: hard, max_fraction: 1.5 }\n",
                "tables[0].deletes.max_fraction: 1.5 is out of range",
            ),
            (
                "    deletes: { mode: hard }\n",
                "tables[0].deletes.mode: deletes find vanished rows by primary_key, and none is given",
            ),
            (
                "    primary_key: [id]\n    load: { mode: incremental, cursor: updated_at }\n    deletes: { mode: soft }\n",
                "tables[0].deletes.keyset: an incremental run never reads a deleted row, so an incremental table finds deletes by key sets",
            ),
            (
                "    primary_key: [id]\n    deletes: { mode: soft, keyset: {} }\n",
                "tables[0].deletes.keyset: a full load reads every key each run",
            ),
            (
                "    primary_key: [id]\n    load: { mode: incremental, cursor: updated_at }\n    deletes: { keyset: {} }\n",
                "tables[0].deletes.keyset: key sets find deleted rows, and deletes.mode is off",
            ),
            (
                "    primary_key: [id]\n    load: { mode: incremental, cursor: updated_at }\n    deletes: { mode: hard, keyset: { every: daily } }\n",
                "tables[0].deletes.keyset.every: 'daily' is not a duration",
            ),
            (
                "    primary_key: [id]\n    load: { mode: incremental, cursor: updated_at }\n    deletes: { mode: hard, keyset: { every: 10s } }\n",
                "tables[0].deletes.keyset.every: '10s' is shorter than a minute",
            ),
            (
                "    primary_key: [id]\n    target: { merge_procedure: MY_MERGE }\n    deletes: { mode: hard }\n",
                "tables[0].deletes.mode: deletes are made by sluice's generated merge procedure",
            ),
            (
                "    primary_key: [id]\n    partition: { column: updated_at, chunks: 4 }\n    deletes: { mode: hard }\n",
                "tables[0].deletes.mode: deletes need chunks that a row cannot move between: partition.column 'updated_at' must be a primary_key column",
            ),
        ] {
            let issues = issues_of(&with_table(extra));
            assert!(
                issues.iter().any(|i| i.starts_with(expected)),
                "{extra}: {issues:?}"
            );
        }
        let issues = issues_of(&with_table(
            "    primary_key: [id]\n    load: { mode: incremental, cursor: updated_at }\n    deletes: { mode: hard, keyset: { often: 1h } }\n",
        ));
        assert!(
            issues.len() == 1 && issues[0].contains("unknown field `often`, expected `every`"),
            "{issues:?}"
        );
        let issues = issues_of(&with_table("    deletes: { mode: sometimes }\n"));
        assert!(
            issues.len() == 1
                && issues[0].contains("tables[0].deletes.mode")
                && issues[0].contains("unknown variant `sometimes`"),
            "{issues:?}"
        );
    }

    /// `max_lag` is the per-table threshold of the lag alarm: a duration the table keeps as
    /// written (a round trip does not respell it), refused by name when it is not one.
    #[test]
    fn max_lag_is_a_duration_of_at_least_a_minute() {
        let config = Config::from_yaml(&with_table("    max_lag: 6h\n"), "t").unwrap();
        let table = &config.tables[0];
        assert_eq!(table.max_lag.as_deref(), Some("6h"));
        assert_eq!(
            table.max_lag(),
            Some(std::time::Duration::from_secs(6 * 3600))
        );
        let again = Config::from_yaml(&config.to_yaml().unwrap(), "again").unwrap();
        assert_eq!(config, again);
        // Absent: no threshold, and nothing written back.
        let config = Config::from_yaml(&with_table(""), "t").unwrap();
        assert_eq!(config.tables[0].max_lag(), None);
        assert!(!config.to_yaml().unwrap().contains("max_lag"));
        assert_eq!(
            issues_of(&with_table("    max_lag: 1m\n")),
            Vec::<String>::new()
        );
        for (extra, expected) in [
            (
                "    max_lag: daily\n",
                "tables[0].max_lag: 'daily' is not a duration",
            ),
            (
                "    max_lag: 6 hours\n",
                "tables[0].max_lag: '6 hours' is not a duration",
            ),
            (
                "    max_lag: 30s\n",
                "tables[0].max_lag: '30s' is shorter than a minute",
            ),
        ] {
            let issues = issues_of(&with_table(extra));
            assert!(
                issues.len() == 1 && issues[0].starts_with(expected),
                "{extra}: {issues:?}"
            );
        }
    }

    #[test]
    fn incremental_without_key_is_a_warning_naming_the_field() {
        let yaml = with_table("    load:\n      mode: incremental\n      cursor: updated_at\n");
        let config = Config::from_yaml(&yaml, "t.yaml").unwrap();
        let warnings: Vec<String> = config.warnings().iter().map(ToString::to_string).collect();
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].starts_with("tables[0].primary_key: none given for an incremental load"),
            "{warnings:?}"
        );
    }

    #[test]
    fn column_type_overrides_parse_and_are_checked() {
        let config = Config::from_yaml(
            &with_table("    column_types: { amount: \"decimal(20,4)\", doc: string }\n"),
            "t",
        )
        .unwrap();
        assert_eq!(
            config.tables[0].column_types["amount"],
            ColumnTypeOverride::Decimal {
                precision: 20,
                scale: 4
            }
        );
        assert_eq!(
            config.tables[0].column_types["doc"],
            ColumnTypeOverride::String
        );
        for bad in ["decimal(39,2)", "decimal(5,6)", "float", "decimal(5)"] {
            let err = Config::from_yaml(
                &with_table(&format!("    column_types: {{ amount: \"{bad}\" }}\n")),
                "t",
            )
            .unwrap_err();
            assert!(
                err.to_string().contains("tables[0].column_types.amount"),
                "{err}"
            );
        }
        let got = issues_of(&with_table(
            "    columns: [id]\n    column_types: { amount: string }\n",
        ));
        assert_eq!(
            got,
            vec!["tables[0].column_types.amount: 'amount' is not in columns"]
        );
        let config =
            Config::from_yaml(&with_table("    column_types: { amount: Boolean }\n"), "t").unwrap();
        assert_eq!(
            config.tables[0].column_types["amount"],
            ColumnTypeOverride::Boolean
        );
        let yaml = config.to_yaml().unwrap();
        assert!(yaml.contains("amount: boolean"), "{yaml}");
        assert_eq!(Config::from_yaml(&yaml, "round trip").unwrap(), config);
        let err = Config::from_yaml(&with_table("    invalid_dates: maybe\n"), "t").unwrap_err();
        assert!(err.to_string().contains("tables[0].invalid_dates"), "{err}");
    }

    #[test]
    fn every_bad_field_is_reported_with_its_path() {
        let cases: &[(&str, &str)] = &[
            (
                "    primary_key: [id]\n    load:\n      mode: incremental\n",
                "tables[0].load.cursor: required",
            ),
            (
                "    where: \"id > 1; drop table x\"\n",
                "tables[0].where: must not contain ';'",
            ),
            (
                "    where: \"id > 1 -- hi\"\n",
                "tables[0].where: must not contain SQL comments",
            ),
            (
                "    where: \"id > 1 /* x */\"\n",
                "tables[0].where: must not contain SQL comments",
            ),
            ("    where: \"  \"\n", "tables[0].where: must not be empty"),
            (
                "    columns: [id, \"na me\"]\n",
                "tables[0].columns[1]: 'na me' is not a valid identifier",
            ),
            (
                "    columns: [id, id]\n",
                "tables[0].columns[1]: 'id' is listed twice",
            ),
            (
                "    columns: []\n",
                "tables[0].columns: must list at least one column",
            ),
            (
                "    columns: [id]\n    primary_key: [other]\n",
                "tables[0].primary_key[0]: 'other' is not in columns",
            ),
            (
                "    partition:\n      column: id\n",
                "tables[0].partition: give chunks",
            ),
            (
                "    partition:\n      column: id\n      chunks: 0\n",
                "tables[0].partition.chunks: 0 is out of range",
            ),
            (
                "    partition:\n      column: id\n      chunks: 2\n      chunk_rows: 10\n",
                "tables[0].partition: give chunks or chunk_rows, not both",
            ),
            (
                "    partition:\n      column: id\n      chunks: 2\n      max_concurrency: 1000\n",
                "tables[0].partition.max_concurrency: 1000 is out of range",
            ),
            (
                "    batch_rows: 0\n",
                "tables[0].batch_rows: 0 is out of range",
            ),
            (
                "    schedule: '0 2 * *'\n",
                "tables[0].schedule: '0 2 * *' is not a five-field cron expression",
            ),
            (
                "    schedule: '0 25 * * *'\n",
                "tables[0].schedule: '0 25 * * *' is not a valid cron expression",
            ),
            (
                "    load:\n      lookback: 1h\n",
                "tables[0].load.lookback: only applies when load.mode = incremental",
            ),
            (
                "    target:\n      raw_table: RAW.ORDERS;x\n",
                "tables[0].target.raw_table: 'ORDERS;x' is not a valid identifier",
            ),
            (
                "    columns: [id]\n    target:\n      json_columns: [doc]\n",
                "tables[0].target.json_columns[0]: 'doc' is not in columns",
            ),
            (
                "    target:\n      gold_procedures: [GOLD.A, B]\n",
                "tables[0].target.gold_procedures: gold is no longer part of a table: declare it at the top level, run once per batch after all its inputs merged: gold: [{procedure: GOLD.A, inputs: [shop/public.orders]}, {procedure: B, inputs: [shop/public.orders]}]",
            ),
        ];
        for (extra, expected) in cases {
            let got = issues_of(&with_table(extra));
            assert!(
                got.iter().any(|g| g.starts_with(expected)),
                "for {extra:?} expected an issue starting with {expected:?}, got {got:?}"
            );
        }
    }

    #[test]
    fn shape_errors_name_the_field_path() {
        let cases: &[(&str, &str)] = &[
            ("    load:\n      mode: sometimes\n", "tables[0].load.mode"),
            (
                "    load:\n      mode: incremental\n      lookback: soon\n",
                "tables[0].load.lookback",
            ),
            ("    batch_rows: many\n", "tables[0].batch_rows"),
            ("    colums: [a]\n", "tables[0].colums"),
        ];
        for (extra, expected_path) in cases {
            let err = Config::from_yaml(&with_table(extra), "t.yaml").unwrap_err();
            match &err {
                ConfigError::Parse { path, .. } => {
                    assert_eq!(path, expected_path, "{err}")
                }
                other => panic!("expected a parse error for {extra:?}, got {other}"),
            }
        }
        let err = Config::from_yaml(&with_table("    colums: [a]\n"), "t.yaml").unwrap_err();
        assert!(err.to_string().contains("unknown field `colums`"), "{err}");
    }

    #[test]
    fn source_problems_name_the_field() {
        let cases: &[(&str, &str)] = &[
            (
                "name: Shop\n    engine: postgres\n    connection:\n      url: postgres://u@h/db",
                "sources[0].name: 'Shop' must be",
            ),
            (
                "name: shop\n    engine: postgres\n    connection:\n      url: mysql://u@h/db",
                "sources[0].connection.url: must start with postgres://",
            ),
            (
                "name: shop\n    engine: postgres\n    connection:\n      url: postgres://u:hunter2@h/db",
                "sources[0].connection.url: must not contain a password",
            ),
            (
                "name: shop\n    engine: postgres\n    connection: {}",
                "sources[0].connection: give url",
            ),
            (
                "name: shop\n    engine: postgres\n    connection:\n      url: postgres://u@h/db\n      host: h",
                "sources[0].connection: give either url",
            ),
            (
                "name: shop\n    engine: postgres\n    connection:\n      host: h",
                "sources[0].connection.database: required with host",
            ),
            (
                "name: shop\n    engine: postgres\n    connection:\n      secret_arn: arn:aws:s3:::bucket",
                "sources[0].connection.secret_arn: must be a Secrets Manager ARN",
            ),
            (
                "name: shop\n    engine: postgres\n    connection:\n      host: h\n      database: db\n      port: 0",
                "sources[0].connection.port: must be between 1 and 65535",
            ),
            (
                "name: shop\n    engine: postgres\n    connection:\n      url: postgres://u@h/db\n      password_env: hunter2!",
                "sources[0].connection.password_env: must name an environment variable",
            ),
            (
                "name: shop\n    engine: postgres\n    connection:\n      url: postgres://u@h/db\n      statement_timeout: forever",
                "sources[0].connection.statement_timeout: 'forever' is not a duration",
            ),
            (
                "name: shop\n    engine: postgres\n    connection:\n      url: postgres://u@h/db\n      ssl_root_cert: /etc/ca.pem",
                "sources[0].connection.ssl_root_cert: only used with sslmode",
            ),
        ];
        for (source, expected) in cases {
            let yaml = format!(
                "sources:\n  - {source}\ntables:\n  - source: shop\n    table: public.orders\n"
            );
            let got = issues_of(&yaml);
            assert!(
                got.iter().any(|g| g.starts_with(expected)),
                "expected {expected:?}, got {got:?}"
            );
        }
    }

    #[test]
    fn max_connections_is_a_whole_number_from_1_to_1000() {
        let yaml = |value: &str| {
            format!(
                "sources:\n  - name: shop\n    engine: postgres\n    connection:\n      url: postgres://u@h/db\n      max_connections: {value}\ntables:\n  - source: shop\n    table: public.orders\n"
            )
        };
        for (value, expected) in [
            ("1", Some(1)),
            ("8", Some(8)),
            ("1000", Some(1000)),
            ("null", None),
        ] {
            let config = Config::from_yaml(&yaml(value), "t.yaml")
                .unwrap_or_else(|e| panic!("max_connections: {value} must be accepted: {e}"));
            assert_eq!(
                config.sources[0].connection.max_connections, expected,
                "{value}"
            );
            let again = Config::from_yaml(&config.to_yaml().unwrap(), "again").unwrap();
            assert_eq!(again, config, "{value} round-trips");
        }
        let absent = Config::from_yaml(GOOD, "good.yaml").unwrap();
        assert_eq!(absent.sources[0].connection.max_connections, None);
        assert!(!absent.to_yaml().unwrap().contains("max_connections"));
        // Out of range: reported by validation, with every other problem.
        for value in ["0", "1001", "4294967295"] {
            assert_eq!(
                issues_of(&yaml(value)),
                vec![format!(
                    "sources[0].connection.max_connections: must be a whole number from 1 to 1000, not {value}"
                )],
                "{value}"
            );
        }
        // Not a whole number that fits: refused as it is read, naming the field, in the same words.
        for (value, shown) in [
            ("-1", "-1"),
            ("2.5", "2.5"),
            ("'2'", "'2'"),
            ("two", "'two'"),
            ("true", "true"),
            ("99999999999", "99999999999"),
            ("[2]", ""),
        ] {
            match Config::from_yaml(&yaml(value), "t.yaml") {
                Err(ConfigError::Parse { path, message, .. }) => {
                    assert_eq!(path, "sources[0].connection.max_connections", "{value}");
                    assert!(
                        message.contains("a whole number from 1 to 1000"),
                        "{value}: {message}"
                    );
                    assert!(message.contains(shown), "{value}: {message}");
                }
                other => panic!("max_connections: {value} must be refused: {other:?}"),
            }
        }
        // A config built in code is held to the same rule.
        let mut config = Config::from_yaml(&yaml("2"), "t.yaml").unwrap();
        config.sources[0].connection.max_connections = Some(0);
        let issues = config.validate().unwrap_err();
        assert_eq!(
            issues.iter().map(ToString::to_string).collect::<Vec<_>>(),
            vec![
                "sources[0].connection.max_connections: must be a whole number from 1 to 1000, not 0"
            ]
        );
    }

    #[test]
    fn passwords_are_never_echoed_in_errors() {
        let yaml = "sources:\n  - name: shop\n    engine: postgres\n    connection:\n      url: postgres://u:hunter2@h/db\ntables:\n  - source: shop\n    table: t\n";
        let err = Config::from_yaml(yaml, "t.yaml").unwrap_err().to_string();
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn unknown_source_and_duplicates_are_reported() {
        let yaml = "sources:\n  - name: shop\n    engine: postgres\n    connection:\n      url: postgres://u@h/db\n  - name: shop\n    engine: mysql\n    connection:\n      url: mysql://u@h/db\ntables:\n  - source: crm\n    table: t\n  - source: shop\n    table: t\n  - source: shop\n    table: t\n";
        let got = issues_of(yaml);
        assert!(
            got.contains(&"sources[1].name: 'shop' is used by more than one source".to_string()),
            "{got:?}"
        );
        assert!(
            got.iter()
                .any(|g| g.starts_with("tables[0].source: 'crm' is not a source")),
            "{got:?}"
        );
        assert!(
            got.contains(
                &"tables[2].table: 't' of source 'shop' is configured more than once".to_string()
            ),
            "{got:?}"
        );
    }

    #[test]
    fn empty_config_needs_sources_and_tables() {
        let got = issues_of("{}");
        assert_eq!(
            got,
            vec![
                "sources: at least one source is required",
                "tables: at least one table is required"
            ]
        );
    }

    #[test]
    fn batches_are_sized_by_row_width_unless_set() {
        let mut config = Config::from_yaml(&with_table(""), "t").unwrap();
        let t = &mut config.tables[0];
        assert_eq!(t.batch_rows(20), MAX_DEFAULT_BATCH_ROWS);
        assert_eq!(t.batch_rows(256), 16_384);
        assert_eq!(t.batch_rows(1_000_000), MIN_DEFAULT_BATCH_ROWS);
        t.batch_rows = Some(1_000);
        assert_eq!(t.batch_rows(20), 1_000);
    }

    #[test]
    fn secret_arns_are_recognised() {
        assert!(is_secret_arn(
            "arn:aws:secretsmanager:eu-west-1:123456789012:secret:sluice/shop-AbCdEf"
        ));
        assert!(!is_secret_arn(
            "arn:aws:secretsmanager:eu-west-1:1234:secret:x"
        ));
        assert!(!is_secret_arn(
            "arn:aws:secretsmanager:eu-west-1:123456789012:secret:"
        ));
    }

    #[test]
    fn table_selectors_match_key_name_and_short_name() {
        let config = Config::from_yaml(GOOD, "good.yaml").unwrap();
        assert_eq!(config.find_tables("shop/public.orders").len(), 1);
        assert_eq!(config.find_tables("public.orders").len(), 1);
        assert_eq!(config.find_tables("customers").len(), 1);
        assert!(config.find_tables("nope").is_empty());
        assert_eq!(
            config.find_table("public.orders").unwrap().key(),
            "shop/public.orders"
        );
        let missing = config.find_table("nope").unwrap_err();
        assert!(
            missing.starts_with("no table 'nope' is configured (tables: shop/"),
            "{missing}"
        );
    }
}
