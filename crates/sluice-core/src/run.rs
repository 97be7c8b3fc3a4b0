//! Runs: ids, the status machine, and the record that tells a run's whole story.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use ulid::Ulid;

use crate::plan::{RunPlan, ScalarValue};

/// A run's id: a ULID, so ids sort by start time and are unique without coordination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RunId(Ulid);

impl RunId {
    pub fn new() -> RunId {
        RunId(Ulid::new())
    }

    /// A run id whose time component is `at`; used when the start time is fixed by the caller.
    pub fn at(at: DateTime<Utc>) -> RunId {
        let millis = u64::try_from(at.timestamp_millis()).unwrap_or(0);
        RunId(Ulid::from_parts(millis, rand_bits()))
    }

    /// A new run id at `now`, or just after the latest of `earlier` when that is not before
    /// `now`: run ids order runs (the merge keeps the later run's rows, and merges nothing for
    /// a run older than one it has seen), so a host whose clock is behind the one that opened
    /// a table's last run must still open a later one.
    pub fn after(now: DateTime<Utc>, earlier: impl IntoIterator<Item = RunId>) -> RunId {
        let floor = earlier
            .into_iter()
            .max()
            .map(|latest| latest.opened_at() + chrono::Duration::milliseconds(1));
        RunId::at(floor.map_or(now, |floor| floor.max(now)))
    }

    /// When the run was opened: the time component of its id (to the millisecond).
    pub fn opened_at(&self) -> DateTime<Utc> {
        let millis = i64::try_from(self.0.timestamp_ms()).unwrap_or(i64::MAX);
        DateTime::from_timestamp_millis(millis).unwrap_or(DateTime::<Utc>::MIN_UTC)
    }
}

fn rand_bits() -> u128 {
    Ulid::new().random()
}

impl Default for RunId {
    fn default() -> Self {
        RunId::new()
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for RunId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ulid::from_string(s)
            .map(RunId)
            .map_err(|e| format!("'{s}' is not a run id (a 26-character ULID): {e}"))
    }
}

/// `PLANNED → EXTRACTING → LOADING → MERGING → COMPLETED`, or `FAILED` from any phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RunStatus {
    Planned,
    Extracting,
    Loading,
    Merging,
    Completed,
    Failed,
}

impl RunStatus {
    pub fn is_terminal(self) -> bool {
        matches!(self, RunStatus::Completed | RunStatus::Failed)
    }

    /// Whether a run may move from `self` to `next`. Moving to the same status is not a
    /// transition, so a duplicated event cannot replay a phase.
    pub fn can_move_to(self, next: RunStatus) -> bool {
        use RunStatus::*;
        match (self, next) {
            (from, Failed) => !from.is_terminal(),
            (Planned, Extracting)
            | (Extracting, Loading)
            | (Loading, Merging)
            | (Merging, Completed) => true,
            _ => false,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Planned => "PLANNED",
            RunStatus::Extracting => "EXTRACTING",
            RunStatus::Loading => "LOADING",
            RunStatus::Merging => "MERGING",
            RunStatus::Completed => "COMPLETED",
            RunStatus::Failed => "FAILED",
        }
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// When a phase started and ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseTiming {
    pub started_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
}

impl PhaseTiming {
    pub fn seconds(&self) -> Option<f64> {
        self.finished_at
            .map(|end| (end - self.started_at).num_microseconds().unwrap_or(0) as f64 / 1e6)
    }
}

/// One Parquet file written by a chunk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Key relative to the sink's root.
    pub key: String,
    pub chunk: u32,
    pub part: u32,
    pub rows: u64,
    pub bytes: u64,
}

/// What one chunk produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ChunkOutcome {
    pub rows: u64,
    pub bytes: u64,
    pub files: Vec<FileEntry>,
    /// The schema the chunk's files were written with.
    #[serde(default)]
    pub schema: Vec<crate::manifest::ManifestColumn>,
    /// Counted oddities, e.g. `timestamp_infinity_as_null`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub warnings: BTreeMap<String, u64>,
    pub seconds: f64,
    /// The rows the source held in the chunk's range and the run's window, counted in the
    /// snapshot the chunk read, before the table's `where`: the chunk read exactly these
    /// without a `where`, at most these with one. `None` in records from before the count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_rows: Option<u64>,
    /// A CDC chunk's end in the log: the plan's `upto`, or where the read stopped at
    /// `max_changes` (the end of the last whole transaction it read). The run's watermark.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cdc_reached: Option<u64>,
}

/// What a run reads: what [`RunRecord::full_reload`] and [`RunRecord::keyset`] record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RunKind {
    /// The table's configured load: an incremental window, or the whole table.
    #[default]
    Load,
    /// An incremental table read whole, as if it had no watermark.
    FullReload,
    /// The primary keys of the whole table, to find rows deleted at the source.
    Keyset,
    /// `sluice validate` of the table, recorded: it read and wrote nothing of the table's.
    Validation,
}

impl RunKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RunKind::Load => "load",
            RunKind::FullReload => "full reload",
            RunKind::Keyset => "key set",
            RunKind::Validation => "validation",
        }
    }

    /// Whether runs of this kind load the table's rows (and so have its files' schema).
    pub fn loads_rows(self) -> bool {
        matches!(self, RunKind::Load | RunKind::FullReload)
    }
}

/// The whole story of one run, as `sluice status` prints it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub run_id: RunId,
    /// `source/schema.table`.
    pub table_key: String,
    pub status: RunStatus,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Timings by phase name (`PLANNED`, `EXTRACTING`, …).
    #[serde(default)]
    pub phases: BTreeMap<RunStatus, PhaseTiming>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<RunPlan>,
    /// Read the table whole even if it has a watermark (an operator's full reload); the plan
    /// is made after the run is recorded, so the request is kept here for it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub full_reload: bool,
    /// A key-set run: reads only the primary keys of the whole table and deletes (or marks)
    /// the STAGING rows whose key it did not read (`deletes.keyset`); it moves no watermark.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keyset: bool,
    /// Finished chunks by index.
    #[serde(default)]
    pub chunks: BTreeMap<u32, ChunkOutcome>,
    /// The watermark before the run; a failed run leaves it as it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watermark_before: Option<ScalarValue>,
    /// The watermark the run committed, once COMPLETED.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watermark_committed: Option<ScalarValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_key: Option<String>,
    /// The rows COPY loaded into RAW (checked file by file against the manifest), once
    /// LOADING is done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loaded_rows: Option<u64>,
    /// The distinct keys the generated merge procedure merged from those rows (its merge
    /// log's `keys`), once MERGING is done; fewer than `loaded_rows` means keys repeated in
    /// the run (see [`RunRecord::duplicate_key_rows`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merged_keys: Option<u64>,
    /// What the warehouse merge reported (the merge procedure's VARIANT, e.g.
    /// `{"inserted": 3, "updated": 1}`), once MERGING is done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merge: Option<serde_json::Value>,
    /// The first error, with the phase it happened in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<RunError>,
    /// The local process driving the run (`sluice run`), so that a later `sluice run` on the
    /// same host can tell it is gone and take over at once; `None` in Lambda.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder: Option<RunHolder>,
    /// Each time the run was taken over from a holder that died and carried on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resumptions: Vec<Resumption>,
    /// What `sluice validate` found, for a validation's record (see
    /// [`RunRecord::validation_run`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<Box<crate::validate::TableValidation>>,
    /// Files of the run removed from the table's partition directory because no completed
    /// manifest lists them (a failed run's, a crashed chunk's, surplus parts of a retry).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed_files: Vec<String>,
    /// The batch that started the run (an external-function call, a schedule tick, one
    /// `sluice run`): its gold runs once all of the batch's runs ended (see [`crate::gold`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_id: Option<String>,
    /// Batches that started the run before it was resumed for `batch_id`: its end ends them too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub earlier_batch_ids: Vec<String>,
}

/// A process that drives a run: which host, which process, since when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunHolder {
    pub host: String,
    pub pid: u32,
    /// When the process started, in the kernel's clock ticks since boot (Linux
    /// `/proc/<pid>/stat`, field 22): a pid reused by another process has another start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process_start: Option<u64>,
    /// The PID namespace the pid is in (Linux, the inode of `/proc/self/ns/pid`): containers
    /// sharing a host name number their processes apart, so a pid from another namespace
    /// says nothing here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_namespace: Option<u64>,
    /// The boot the process ran in (Linux `/proc/sys/kernel/random/boot_id`): a holder from an
    /// earlier boot of this host is gone, whatever now runs under its pid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
    /// When it took the run.
    pub since: DateTime<Utc>,
}

impl fmt::Display for RunHolder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "pid {} on {} since {}",
            self.pid,
            self.host,
            self.since.format("%Y-%m-%d %H:%M:%S UTC")
        )
    }
}

/// One takeover of a run whose holder died: the run went on under the same id and plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resumption {
    pub at: DateTime<Utc>,
    /// Why the previous holder was judged gone.
    pub reason: String,
    /// Chunks already done, kept; the rest were extracted again.
    pub chunks_done: u32,
    pub chunks_total: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<RunHolder>,
    /// Set by the one serverless resume that carries the takeover out: Lambda may deliver
    /// its event twice, and a second clean-up would delete what the first restarted.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub carried_out: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunError {
    pub phase: RunStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk: Option<u32>,
    pub message: String,
}

impl RunRecord {
    /// What the run reads.
    pub fn kind(&self) -> RunKind {
        if self.validation.is_some() {
            RunKind::Validation
        } else if self.keyset {
            RunKind::Keyset
        } else if self.full_reload {
            RunKind::FullReload
        } else {
            RunKind::Load
        }
    }

    /// Records `kind` (a new run's, before it is planned).
    pub fn set_kind(&mut self, kind: RunKind) {
        self.full_reload = kind == RunKind::FullReload;
        self.keyset = kind == RunKind::Keyset;
    }

    pub fn new(run_id: RunId, table_key: String, now: DateTime<Utc>) -> RunRecord {
        let mut phases = BTreeMap::new();
        phases.insert(
            RunStatus::Planned,
            PhaseTiming {
                started_at: now,
                finished_at: None,
            },
        );
        RunRecord {
            run_id,
            table_key,
            status: RunStatus::Planned,
            created_at: now,
            updated_at: now,
            phases,
            plan: None,
            full_reload: false,
            keyset: false,
            chunks: BTreeMap::new(),
            watermark_before: None,
            watermark_committed: None,
            manifest_key: None,
            loaded_rows: None,
            merged_keys: None,
            merge: None,
            error: None,
            holder: None,
            resumptions: Vec::new(),
            removed_files: Vec::new(),
            batch_id: None,
            earlier_batch_ids: Vec::new(),
            validation: None,
        }
    }

    /// The record of a `sluice validate` of `table_key` that ran from `started` to
    /// `finished`: COMPLETED when nothing differs (rows not yet loaded are no difference),
    /// FAILED with a summary when something does or an asked level could not run.
    pub fn validation_run(
        run_id: RunId,
        table_key: String,
        started: DateTime<Utc>,
        finished: DateTime<Utc>,
        validation: crate::validate::TableValidation,
    ) -> RunRecord {
        let mut record = RunRecord::new(run_id, table_key, started);
        record.phases.insert(
            RunStatus::Planned,
            PhaseTiming {
                started_at: started,
                finished_at: Some(finished),
            },
        );
        record.updated_at = finished;
        match validation.failure() {
            None => record.status = RunStatus::Completed,
            Some(message) => {
                record.status = RunStatus::Failed;
                record.error = Some(RunError {
                    phase: RunStatus::Planned,
                    chunk: None,
                    message,
                });
            }
        }
        record.validation = Some(Box::new(validation));
        record
    }

    /// Moves to `next`, closing the current phase's timing and opening the next one.
    pub fn transition(&mut self, next: RunStatus, now: DateTime<Utc>) -> Result<(), String> {
        if !self.status.can_move_to(next) {
            return Err(format!(
                "run {} cannot move from {} to {}",
                self.run_id, self.status, next
            ));
        }
        if let Some(current) = self.phases.get_mut(&self.status)
            && current.finished_at.is_none()
        {
            current.finished_at = Some(now);
        }
        if !next.is_terminal() {
            self.phases.insert(
                next,
                PhaseTiming {
                    started_at: now,
                    finished_at: None,
                },
            );
        }
        self.status = next;
        self.updated_at = now;
        Ok(())
    }

    /// Marks the run FAILED, keeping the first error only.
    pub fn fail(&mut self, message: String, chunk: Option<u32>, now: DateTime<Utc>) {
        let phase = self.status;
        if self.transition(RunStatus::Failed, now).is_ok() && self.error.is_none() {
            self.error = Some(RunError {
                phase,
                chunk,
                message,
            });
        }
    }

    pub fn rows(&self) -> u64 {
        self.chunks.values().map(|c| c.rows).sum()
    }

    /// Rows the run loaded beyond one per key: rows whose key another row of the same run
    /// had (a source without a unique key, a row moved between chunks), of which the merge
    /// kept the latest. `None` until merged, or when the merge merged nothing (which finalize
    /// refuses for rows loaded, see [`RunRecord::merged_nothing`]).
    pub fn duplicate_key_rows(&self) -> Option<u64> {
        let keys = self.merged_keys.filter(|k| *k > 0)?;
        Some(self.loaded_rows?.saturating_sub(keys))
    }

    /// The watermark the run commits once complete: the plan's upper bound; for a CDC
    /// table's snapshot the slot position it started from, for a CDC run where its read
    /// ended. `None` when there is none to commit.
    pub fn next_watermark(&self) -> Option<ScalarValue> {
        let plan = self.plan.as_ref()?;
        let position = match &plan.cdc {
            None => return plan.next_watermark().cloned(),
            Some(cdc) if cdc.snapshot => cdc.from,
            Some(_) => self.chunks.get(&0)?.cdc_reached?,
        };
        i64::try_from(position).ok().map(ScalarValue::Int)
    }

    /// Whether the merge merged no key of the rows the run loaded: what a merge guarded by a
    /// later run in the merge log does (a run id from a clock behind another host's). Such a
    /// run must not complete, or its watermark would move past rows STAGING never got.
    pub fn merged_nothing(&self) -> bool {
        self.merged_keys == Some(0) && self.loaded_rows.is_some_and(|rows| rows > 0)
    }

    /// The rows the source held for the whole run (each chunk counted in its own snapshot,
    /// before `where`), when every chunk of the plan is done and counted.
    pub fn source_rows(&self) -> Option<u64> {
        let planned = self.plan.as_ref()?.chunks.len();
        if self.chunks.len() != planned {
            return None;
        }
        self.chunks.values().map(|c| c.source_rows).sum()
    }

    pub fn bytes(&self) -> u64 {
        self.chunks.values().map(|c| c.bytes).sum()
    }

    pub fn files(&self) -> usize {
        self.chunks.values().map(|c| c.files.len()).sum()
    }

    pub fn warnings(&self) -> BTreeMap<String, u64> {
        let mut total = self
            .plan
            .as_ref()
            .map(|p| p.warnings.clone())
            .unwrap_or_default();
        for chunk in self.chunks.values() {
            for (k, v) in &chunk.warnings {
                *total.entry(k.clone()).or_insert(0) += v;
            }
        }
        total
    }

    /// Seconds from creation to the last update.
    pub fn seconds(&self) -> f64 {
        (self.updated_at - self.created_at)
            .num_microseconds()
            .unwrap_or(0) as f64
            / 1e6
    }
}

/// An ended run's story, as sluice writes it to `_runs/<run_id>.json` beside the table's
/// manifests: one line of JSON (JSON Lines, which Athena's and Glue's JSON readers take),
/// a flat summary a query can filter on without knowing the record's shape, then the whole
/// record (plan, chunks, files, phase timings, warnings, merge counts, the first error) under
/// `record`. The README documents the fields.
pub fn run_story(record: &RunRecord) -> Result<Vec<u8>, serde_json::Error> {
    let phase_seconds: BTreeMap<String, f64> = record
        .phases
        .iter()
        .filter_map(|(status, timing)| Some((status.to_string(), timing.seconds()?)))
        .collect();
    let story = serde_json::json!({
        "run_id": record.run_id.to_string(),
        "table_key": record.table_key,
        "status": record.status.to_string(),
        "created_at": record.created_at,
        "ended_at": record.updated_at,
        "seconds": (record.updated_at - record.created_at).num_milliseconds() as f64 / 1000.0,
        "rows": record.rows(),
        "bytes": record.bytes(),
        "files": record.files(),
        "loaded_rows": record.loaded_rows,
        "merge": record.merge,
        "watermark_before": record.watermark_before.as_ref().map(ToString::to_string),
        "watermark_committed": record.watermark_committed.as_ref().map(ToString::to_string),
        "error": record.error.as_ref().map(|e| e.message.clone()),
        "phase_seconds": phase_seconds,
        "record": record,
    });
    let mut line = serde_json::to_vec(&story)?;
    line.push(b'\n');
    Ok(line)
}

/// The Glue table over every table's run stories, in the deployment's Glue database.
pub const RUNS_TABLE: &str = "sluice_runs";

/// The columns of [`RUNS_TABLE`]: one per field of [`run_story`], with the Hive type Athena
/// reads it as through the OpenX JSON SerDe (a test checks that every field of a story is a
/// column, of a type its JSON value can be read as). Times stay strings: Athena's timestamp
/// type wants `YYYY-MM-DD HH:MM:SS.fff`, and RFC 3339 is read with `from_iso8601_timestamp`
/// (<https://aws.amazon.com/premiumsupport/knowledge-center/query-table-athena-timestamp-empty/>).
/// `merge` and `record` are objects of open shape kept as their JSON text (the SerDe's string
/// inspector reads any value as its text,
/// <https://github.com/rcongiu/Hive-JSON-Serde/blob/develop/json-serde/src/main/java/org/openx/data/jsonserde/objectinspector/primitive/JsonStringJavaObjectInspector.java>),
/// for `json_extract`. `phase_seconds` is a struct of the phases a run goes through: the
/// SerDe matches keys case-insensitively by default, so `PLANNED` is `planned`
/// (<https://docs.aws.amazon.com/athena/latest/ug/openx-json-serde.html>, `case.insensitive`).
pub const RUN_STORY_COLUMNS: [(&str, &str); 16] = [
    ("run_id", "string"),
    ("table_key", "string"),
    ("status", "string"),
    ("created_at", "string"),
    ("ended_at", "string"),
    ("seconds", "double"),
    ("rows", "bigint"),
    ("bytes", "bigint"),
    ("files", "bigint"),
    ("loaded_rows", "bigint"),
    ("merge", "string"),
    ("watermark_before", "string"),
    ("watermark_committed", "string"),
    ("error", "string"),
    (
        "phase_seconds",
        "struct<planned:double,extracting:double,loading:double,merging:double>",
    ),
    ("record", "string"),
];

/// The partition keys of [`RUNS_TABLE`], in order: one partition per table and tree, located
/// at that table's `_runs/` directory (see [`run_story_partition_values`]).
pub const RUN_STORY_PARTITION_KEYS: [&str; 4] = ["engine", "source_db", "table_name", "kind"];

/// The [`RUNS_TABLE`] partition of a table's stories: its engine, source, configured table
/// name, and `keyset` for key-set runs (their stories sit under `_keysets/`, another
/// directory) or `load` for every other run, full reloads included.
pub fn run_story_partition_values(
    engine: crate::config::Engine,
    source: &str,
    table: &str,
    keyset: bool,
) -> [String; 4] {
    [
        engine.as_str().to_owned(),
        source.to_owned(),
        table.to_owned(),
        if keyset { "keyset" } else { "load" }.to_owned(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_id_is_later_than_the_ones_given_whatever_the_clock_says() {
        let now = Utc::now();
        let ahead = RunId::at(now + chrono::Duration::minutes(5));
        let next = RunId::after(now, [ahead]);
        assert!(next > ahead);
        assert_eq!(
            next.opened_at(),
            ahead.opened_at() + chrono::Duration::milliseconds(1)
        );
        let behind = RunId::at(now - chrono::Duration::minutes(5));
        let at_now = RunId::after(now, [behind]);
        assert_eq!(
            at_now.opened_at().timestamp_millis(),
            now.timestamp_millis()
        );
        assert!(RunId::after(now, []) > behind);
    }

    #[test]
    fn status_moves_forward_only() {
        use RunStatus::*;
        assert!(Planned.can_move_to(Extracting));
        assert!(Merging.can_move_to(Completed));
        assert!(Extracting.can_move_to(Failed));
        assert!(!Extracting.can_move_to(Extracting));
        assert!(!Loading.can_move_to(Extracting));
        assert!(!Completed.can_move_to(Failed));
        assert!(!Failed.can_move_to(Failed));
        assert!(!Planned.can_move_to(Completed));
    }

    #[test]
    fn record_keeps_timings_and_the_first_error() {
        let t0 = Utc::now();
        let mut r = RunRecord::new(RunId::new(), "shop/public.orders".into(), t0);
        r.transition(RunStatus::Extracting, t0 + chrono::Duration::seconds(1))
            .unwrap();
        r.fail("boom".into(), Some(3), t0 + chrono::Duration::seconds(2));
        r.fail("second".into(), None, t0 + chrono::Duration::seconds(3));
        assert_eq!(r.status, RunStatus::Failed);
        let err = r.error.clone().unwrap();
        assert_eq!(
            (err.phase, err.chunk, err.message.as_str()),
            (RunStatus::Extracting, Some(3), "boom")
        );
        assert_eq!(r.phases[&RunStatus::Planned].seconds(), Some(1.0));
        assert_eq!(r.phases[&RunStatus::Extracting].seconds(), Some(1.0));
        assert!(r.transition(RunStatus::Completed, t0).is_err());
    }

    #[test]
    fn run_ids_parse_and_sort_by_time() {
        let a = RunId::at(DateTime::from_timestamp(1_700_000_000, 0).unwrap());
        let b = RunId::at(DateTime::from_timestamp(1_700_000_001, 0).unwrap());
        assert!(a < b);
        assert_eq!(a.to_string().parse::<RunId>().unwrap(), a);
        assert!(
            "nope"
                .parse::<RunId>()
                .unwrap_err()
                .contains("not a run id")
        );
    }

    /// Whether a story's JSON value can be read as `hive_type` by the OpenX JSON SerDe.
    fn readable_as(value: &serde_json::Value, hive_type: &str) -> bool {
        use serde_json::Value;
        if value.is_null() {
            return true;
        }
        match hive_type {
            "bigint" => value.is_u64() || value.is_i64(),
            "double" => value.is_number(),
            // Any value's text, objects included (see RUN_STORY_COLUMNS).
            "string" => !value.is_array(),
            _ => {
                let Some(fields) = hive_type
                    .strip_prefix("struct<")
                    .and_then(|t| t.strip_suffix('>'))
                else {
                    return false;
                };
                let fields: Vec<(&str, &str)> = fields
                    .split(',')
                    .filter_map(|f| f.split_once(':'))
                    .collect();
                let Value::Object(map) = value else {
                    return false;
                };
                map.iter().all(|(key, v)| {
                    fields
                        .iter()
                        .any(|(name, ty)| *name == key.to_ascii_lowercase() && readable_as(v, ty))
                })
            }
        }
    }

    /// A record with every optional part of a story set, as a completed and merged run has.
    fn storied_record() -> RunRecord {
        let t0 = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let mut r = RunRecord::new(RunId::at(t0), "shop/public.orders".into(), t0);
        let mut at = t0;
        for next in [
            RunStatus::Extracting,
            RunStatus::Loading,
            RunStatus::Merging,
            RunStatus::Completed,
        ] {
            at += chrono::Duration::seconds(2);
            r.transition(next, at).unwrap();
        }
        r.chunks.insert(
            0,
            ChunkOutcome {
                rows: 5,
                bytes: 900,
                files: vec![FileEntry {
                    key: "k".into(),
                    chunk: 0,
                    part: 0,
                    rows: 5,
                    bytes: 900,
                }],
                ..ChunkOutcome::default()
            },
        );
        r.loaded_rows = Some(5);
        r.merge = Some(serde_json::json!({"inserted": 4, "updated": 1}));
        r.watermark_before = Some(ScalarValue::Int(1));
        r.watermark_committed = Some(ScalarValue::Int(9));
        r.error = Some(RunError {
            phase: RunStatus::Loading,
            chunk: None,
            message: "an error, to have one".into(),
        });
        r
    }

    #[test]
    fn every_field_of_a_story_is_a_column_of_the_runs_table_and_back() {
        let record = storied_record();
        let story: serde_json::Value =
            serde_json::from_slice(&run_story(&record).unwrap()).unwrap();
        let serde_json::Value::Object(fields) = &story else {
            panic!("a story is a JSON object: {story}");
        };
        let columns: BTreeMap<&str, &str> = RUN_STORY_COLUMNS.into_iter().collect();
        assert_eq!(columns.len(), RUN_STORY_COLUMNS.len(), "no column twice");
        let story_keys: std::collections::BTreeSet<&str> =
            fields.keys().map(String::as_str).collect();
        let column_names: std::collections::BTreeSet<&str> = columns.keys().copied().collect();
        assert_eq!(story_keys, column_names, "story fields vs columns");
        for (name, value) in fields {
            assert!(!value.is_null(), "{name} is set in this story");
            let hive_type = columns[name.as_str()];
            assert!(
                readable_as(value, hive_type),
                "{name}: {value} cannot be read as {hive_type}"
            );
        }
        // Every phase a run can be timed in has its field, not only this run's.
        let phase_type = columns["phase_seconds"];
        for phase in [
            RunStatus::Planned,
            RunStatus::Extracting,
            RunStatus::Loading,
            RunStatus::Merging,
            RunStatus::Completed,
            RunStatus::Failed,
        ]
        .into_iter()
        .filter(|p| !p.is_terminal())
        {
            let probe = serde_json::json!({ phase.to_string(): 1.5 });
            assert!(readable_as(&probe, phase_type), "{phase} in {phase_type}");
        }
        // Partition keys name the directory, never a field of the file (Athena refuses a
        // partition column named as a column of the data:
        // <https://docs.aws.amazon.com/athena/latest/ug/alter-table-add-partition.html>).
        for key in RUN_STORY_PARTITION_KEYS {
            assert!(!columns.contains_key(key), "{key} is a partition key");
        }
        // A failed run's story (nulls where it got no further) reads the same way.
        let mut failed = RunRecord::new(RunId::new(), "shop/public.c".into(), Utc::now());
        failed.fail("boom".into(), None, Utc::now());
        let story: serde_json::Value =
            serde_json::from_slice(&run_story(&failed).unwrap()).unwrap();
        for (name, hive_type) in RUN_STORY_COLUMNS {
            assert!(
                readable_as(&story[name], hive_type),
                "{name}: {}",
                story[name]
            );
        }
    }

    #[test]
    fn a_story_partition_names_its_table_and_tree() {
        use crate::config::Engine;
        assert_eq!(
            run_story_partition_values(Engine::Postgres, "shop", "public.orders", false),
            ["postgres", "shop", "public.orders", "load"]
        );
        assert_eq!(
            run_story_partition_values(Engine::Mysql, "crm", "contacts", true)[3],
            "keyset"
        );
    }
}
