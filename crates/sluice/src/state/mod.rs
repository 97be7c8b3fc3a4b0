//! The `StateStore` port: watermarks, leases and run records.
//!
//! Every store gives the same guarantees: a lease is held by one run at a time; a run record
//! changes only through [`RunStore::update_run`], whose update may refuse (e.g. a status
//! transition that is not allowed) and then changes nothing; a chunk's outcome is recorded
//! once, through [`ChunkStore::record_chunk_done`], which also tells exactly one caller that
//! the last chunk is done; a chunk's start is claimed once, through
//! [`ChunkStore::claim_chunk_start`], so a serverless run keeps its concurrency bound even when
//! an event is delivered twice; the watermark is committed only by the run holding the lease;
//! a source's connection slot (`connection.max_connections`) has at most one live holder, so
//! no more holders than slots are ever live at once, whichever process they run in.
//! `tests/tests/state_contract.rs` runs one suite of these promises against every store.
//!
//! Run records may be kept for a limited time: the DynamoDB store's runs expire a retention
//! after they started (`SLUICE_RUN_RETENTION`, see [`dynamo`]), and an expired run reads as
//! absent (not found, not listed), never in part. A table's watermark and lease never expire.
//! The local store keeps every run.

pub mod dynamo;
pub mod local;
pub mod slots;

/// The store traits, to call a concrete store's methods: `use sluice::state::prelude::*;`.
pub mod prelude {
    pub use super::{BatchStore, ChunkStore, LeaseStore, RunStore, SlotStore, StateStore};
}

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sluice_core::external_function::batch::BatchRecord;
use sluice_core::gold::GoldRecord;
use sluice_core::run::ChunkOutcome;
use sluice_core::{RunId, RunRecord, ScalarValue};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum StateError {
    #[error("table {table_key} is already running: {run_id}")]
    AlreadyRunning { table_key: String, run_id: RunId },
    #[error("run {run_id} does not hold the lease of {table_key}{}", holder.map(|h| format!(" (held by {h})")).unwrap_or_default())]
    LeaseLost {
        table_key: String,
        run_id: RunId,
        holder: Option<RunId>,
    },
    #[error("run {0} not found")]
    RunNotFound(RunId),
    #[error("run {0} already exists")]
    RunExists(RunId),
    #[error("run {run_id}: {message}")]
    Refused { run_id: RunId, message: String },
    #[error("state store at {location}: {message}")]
    Storage { location: String, message: String },
    #[error("the gold of batch {batch_id} was taken over by {holder}")]
    GoldTakenOver { batch_id: String, holder: String },
}

pub type Result<T, E = StateError> = std::result::Result<T, E>;

/// A change to a run record, applied atomically; returning `Err` leaves the record as it was.
/// It runs exactly once, on the current record, while no other update of that run can
/// interleave. Chunks are not changed this way (see [`ChunkStore::record_chunk_done`]): an
/// update that changes `chunks` is refused.
pub type RunUpdate = Box<dyn FnOnce(&mut RunRecord) -> Result<(), String> + Send>;

/// What recording a chunk as done found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkDone {
    /// False when the chunk had been recorded before (a duplicated event): nothing changed.
    pub newly_recorded: bool,
    /// Chunks of the run recorded so far.
    pub done: u32,
    /// Chunks in the run's plan.
    pub total: u32,
    /// True for exactly one call per run: the one that recorded the last chunk.
    pub is_last: bool,
}

/// What claiming the start of a chunk found (see [`ChunkStore::claim_chunk_start`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkStart {
    /// The caller holds the claim and should start the chunk, then record it with
    /// [`ChunkStore::chunk_started`]: the first claim, or the same claimer again after an
    /// attempt that claimed but never recorded the start (it may have died before invoking).
    Claimed,
    /// The chunk's start was recorded: it is running or ran. Start nothing.
    Started,
    /// Another claimer holds the claim. Start nothing.
    ClaimedBy(u32),
}

/// Refuses an update that touched `chunks`, which only [`ChunkStore::record_chunk_done`] may
/// change (a DynamoDB run keeps them beside its record, not in it).
pub(crate) fn check_chunks_unchanged(
    run_id: RunId,
    before: &RunRecord,
    after: &RunRecord,
) -> Result<()> {
    if before.chunks != after.chunks {
        return Err(StateError::Refused {
            run_id,
            message: "chunks are recorded with record_chunk_done, not update_run".into(),
        });
    }
    Ok(())
}

/// Refuses to create a run that already has chunks: they are recorded one by one.
pub(crate) fn check_new_run(record: &RunRecord) -> Result<()> {
    if !record.chunks.is_empty() {
        return Err(StateError::Refused {
            run_id: record.run_id,
            message: "a new run has no chunks yet; record them with record_chunk_done".into(),
        });
    }
    Ok(())
}

/// The number of chunks a run's plan has; a run without a plan has no chunks to record.
pub(crate) fn planned_chunks(record: &RunRecord) -> Result<u32> {
    record
        .plan
        .as_ref()
        .map(|p| u32::try_from(p.chunks.len()).unwrap_or(u32::MAX))
        .ok_or_else(|| no_plan(record.run_id))
}

pub(crate) fn no_plan(run_id: RunId) -> StateError {
    StateError::Refused {
        run_id,
        message: "has no plan; no chunk can be recorded".into(),
    }
}

pub(crate) fn chunk_refused(
    run_id: RunId,
    chunk: u32,
    status: impl std::fmt::Display,
) -> StateError {
    StateError::Refused {
        run_id,
        message: format!("is {status}; chunk {chunk} is not recorded"),
    }
}

/// Who holds a table's lease, and until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub run_id: RunId,
    pub expires_at: DateTime<Utc>,
}

/// Who holds one of a source's connection slots (see [`SlotStore::acquire_source_slot`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotHolder {
    pub run_id: RunId,
    /// The chunk it extracts; `None` while it plans the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk: Option<u32>,
    /// New for every acquisition: Lambda may deliver one chunk's event twice, and the two
    /// attempts then open two connections, so they must hold two slots, each released only
    /// by itself.
    pub token: String,
}

impl SlotHolder {
    /// The planner of `run_id`.
    pub fn plan(run_id: RunId) -> SlotHolder {
        SlotHolder {
            run_id,
            chunk: None,
            token: RunId::new().to_string(),
        }
    }

    /// One attempt at chunk `chunk` of `run_id`.
    pub fn chunk(run_id: RunId, chunk: u32) -> SlotHolder {
        SlotHolder {
            run_id,
            chunk: Some(chunk),
            token: RunId::new().to_string(),
        }
    }
}

impl std::fmt::Display for SlotHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.chunk {
            Some(chunk) => write!(f, "run {} chunk {chunk}", self.run_id),
            None => write!(f, "run {} (planning)", self.run_id),
        }
    }
}

/// A source slot as a store keeps it: its holder, until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldSlot {
    pub slot: u32,
    pub holder: SlotHolder,
    pub expires_at: DateTime<Utc>,
}

/// What asking for a source slot found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotAcquire {
    /// The caller holds slot `n` now.
    Taken(u32),
    /// Every slot has a live holder: these.
    Busy(Vec<HeldSlot>),
}

/// What a store keeps per table.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct TableState {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watermark: Option<ScalarValue>,
    /// The run that committed the watermark.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watermark_run_id: Option<RunId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<Lease>,
    /// The latest key-set run that completed (`deletes.keyset`); its id says when it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keyset_run_id: Option<RunId>,
}

/// A table's lease and watermark: who may run it, and where its next incremental read starts.
#[async_trait]
pub trait LeaseStore: Send + Sync {
    async fn table_state(&self, table_key: &str) -> Result<TableState>;

    /// Takes the table's lease for `run_id` until `expires_at`. A live lease of another run
    /// fails with [`StateError::AlreadyRunning`]; an expired one is taken over and its run
    /// marked FAILED ("lease expired"), and its id is returned, so the taker can clean up
    /// after it.
    async fn acquire_lease(
        &self,
        table_key: &str,
        run_id: RunId,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<Option<RunId>>;

    /// Moves the expiry of `run_id`'s lease on the table out to `expires_at`, only while
    /// `run_id` still holds it (even past its expiry, as long as nobody took it over): `false`
    /// when another run holds it or nobody does. It never brings an expiry closer: a late,
    /// short renewal (a duplicate planner's) must not cut the lease a planned run already
    /// lengthened. Live work calls it so a short lease does not lapse under it; unlike
    /// [`LeaseStore::acquire_lease`] it never takes a free table.
    async fn renew_lease(
        &self,
        table_key: &str,
        run_id: RunId,
        expires_at: DateTime<Utc>,
    ) -> Result<bool>;

    /// Moves the lease `seen` (as [`LeaseStore::table_state`] read it) to run `to` (which may
    /// be `seen`'s own run: a run resumed by a new process) until `expires_at`, but only while
    /// the lease is still exactly `seen`, holder and expiry: `false` when it changed (its
    /// holder renewed it, another taker moved it, it was released), and then nothing changes.
    /// So of several takers that saw one dead holder's lease exactly one wins, even when all
    /// resume the same run, and a holder that renewed in between keeps its lease. The caller
    /// has decided `seen`'s run is dead (its lease lapsed, its local process is gone) or an
    /// operator said so (`sluice run --takeover`); unlike [`LeaseStore::acquire_lease`] it
    /// leaves that run's record alone, so the caller can resume the run or fail it with its
    /// own reason.
    async fn take_over_lease(
        &self,
        table_key: &str,
        seen: &Lease,
        to: RunId,
        expires_at: DateTime<Utc>,
    ) -> Result<bool>;

    /// Gives the lease up if `run_id` holds it; otherwise does nothing.
    async fn release_lease(&self, table_key: &str, run_id: RunId) -> Result<()>;

    /// Sets the table's watermark, only if `run_id` still holds the lease.
    async fn commit_watermark(
        &self,
        table_key: &str,
        run_id: RunId,
        watermark: &ScalarValue,
    ) -> Result<()>;

    /// Records `run_id` as the table's latest completed key-set run, only if it holds the
    /// lease; the watermark is left alone.
    async fn commit_keyset(&self, table_key: &str, run_id: RunId) -> Result<()>;

    /// Removes the table's watermark (the next incremental run reads everything), only if
    /// `run_id` holds the lease. For operators' resets and backfills.
    async fn clear_watermark(&self, table_key: &str, run_id: RunId) -> Result<()>;
}

/// Run records. A run's *header* is its record without its chunk outcomes: reading or updating
/// it costs the same however many chunks the run has. Only [`RunStore::get_run`] and
/// [`RunStore::list_runs`] read the chunks (the manifest and the status story need them), so a
/// run of `n` chunks costs state reads linear in `n`.
#[async_trait]
pub trait RunStore: Send + Sync {
    async fn create_run(&self, record: &RunRecord) -> Result<()>;

    async fn get_run(&self, run_id: RunId) -> Result<Option<RunRecord>>;

    /// Applies `update` to the stored header atomically and returns the new header: the
    /// closure sees the record without its chunk outcomes, and what it returns has none.
    async fn update_run(&self, run_id: RunId, update: RunUpdate) -> Result<RunRecord>;

    /// The newest runs first, optionally of one table.
    async fn list_runs(&self, table_key: Option<&str>, limit: usize) -> Result<Vec<RunRecord>>;

    /// The run's header: its record without chunk outcomes (`chunks` empty), whatever its
    /// size. `None` as [`RunStore::get_run`].
    async fn get_run_header(&self, run_id: RunId) -> Result<Option<RunRecord>>;

    /// The recorded outcome of one chunk of a run, if it was recorded (the one that counted).
    async fn chunk_outcome(&self, run_id: RunId, chunk: u32) -> Result<Option<ChunkOutcome>>;
}

/// A run's chunks as they end and start: each recorded once, each started once.
#[async_trait]
pub trait ChunkStore: Send + Sync {
    /// Records chunk `chunk` of a run in EXTRACTING as done with `outcome`, once: a repeated
    /// call for the same chunk changes nothing and answers `newly_recorded: false`. Of all
    /// calls for a run, exactly one answers `is_last: true`. A run in any other status is
    /// refused.
    async fn record_chunk_done(
        &self,
        run_id: RunId,
        chunk: u32,
        outcome: &ChunkOutcome,
    ) -> Result<ChunkDone>;

    /// Claims the right to start chunk `chunk` of a run for `claimer` (the chunk whose end
    /// starts it) at `now`. Lambda may deliver an async event more than once, so the extract
    /// of one chunk can run twice, even at the same time; the claim makes its successor start
    /// once: the first claimer gets [`ChunkStart::Claimed`]. Until the start is recorded with
    /// [`ChunkStore::chunk_started`], the same claimer gets it again only once the claim is
    /// [`RECLAIM_AFTER`] old (a retry of an attempt that died between claim and invoke, which
    /// Lambda sends a minute later at the earliest); a claim younger than that, or another
    /// claimer's, answers [`ChunkStart::ClaimedBy`]. After the start is recorded every claim
    /// answers [`ChunkStart::Started`]. Kept on the run, whatever its status; a missing run is
    /// [`StateError::RunNotFound`].
    async fn claim_chunk_start(
        &self,
        run_id: RunId,
        chunk: u32,
        claimer: u32,
        now: DateTime<Utc>,
    ) -> Result<ChunkStart>;

    /// Records that chunk `chunk` of a run was started (its invoke accepted), so later claims
    /// answer [`ChunkStart::Started`]. Repeating it changes nothing.
    async fn chunk_started(&self, run_id: RunId, chunk: u32) -> Result<()>;
}

/// External-function batches (a Snowflake query's rows and the runs they started).
#[async_trait]
pub trait BatchStore: Send + Sync {
    /// Records a new external-function batch, only if its id is new: `false` when a batch
    /// with that id exists (a retried request), which then starts nothing.
    async fn create_batch(&self, batch: &BatchRecord) -> Result<bool>;

    /// Replaces a batch's record (once its runs have started).
    async fn save_batch(&self, batch: &BatchRecord) -> Result<()>;

    async fn get_batch(&self, batch_id: &str) -> Result<Option<BatchRecord>>;

    /// Claims the running of a batch's gold for `claim.holder` until `claim.claimed_until`:
    /// records `claim` when the batch has no gold record yet; takes an unfinished record over
    /// when it is the same holder's (a retry of the same event) or its claim lapsed before
    /// `now`, keeping its steps. Never two holders at once.
    async fn claim_gold(&self, claim: &GoldRecord, now: DateTime<Utc>) -> Result<GoldClaim>;

    /// Saves the steps of a gold record its holder still holds; `GoldTakenOver` otherwise.
    async fn save_gold(&self, record: &GoldRecord) -> Result<()>;

    async fn get_gold(&self, batch_id: &str) -> Result<Option<GoldRecord>>;
}

/// What [`BatchStore::claim_gold`] found.
#[derive(Debug, Clone, PartialEq)]
pub enum GoldClaim {
    /// The caller holds it now: these are the steps to carry on with.
    Claimed(GoldRecord),
    /// Another holder has it until its claim lapses.
    Held(GoldRecord),
    /// Every step was decided already.
    Finished(GoldRecord),
}

/// Whether `existing` may be claimed by `claim.holder` at `now`.
pub fn gold_claimable(existing: &GoldRecord, claim: &GoldRecord, now: DateTime<Utc>) -> GoldClaim {
    if existing.finished {
        GoldClaim::Finished(existing.clone())
    } else if existing.holder == claim.holder || existing.claimed_until <= now {
        GoldClaim::Claimed(GoldRecord {
            holder: claim.holder.clone(),
            claimed_until: claim.claimed_until,
            ..existing.clone()
        })
    } else {
        GoldClaim::Held(existing.clone())
    }
}

/// The connection slots of sources with `connection.max_connections`.
#[async_trait]
pub trait SlotStore: Send + Sync {
    /// Takes one of the connection slots `0..slots` of source `source` for `holder` until
    /// `expires_at`: a slot nobody holds, or one whose holder's expiry had passed at `now` (it
    /// died without releasing), or the one `holder` (its token) holds already, so a retried
    /// call never takes a second slot. [`SlotAcquire::Busy`] with the live holders when
    /// every slot is held; it never waits. However many callers race, no slot ever has two
    /// live holders. Slots numbered `slots` or above (a cap since lowered) are not taken.
    async fn acquire_source_slot(
        &self,
        source: &str,
        slots: u32,
        holder: &SlotHolder,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<SlotAcquire>;

    /// Moves the expiry of `holder`'s slot `slot` to `expires_at`, only while `holder` still
    /// holds it (even past its expiry, as long as nobody took it over): `false` when another
    /// holder has it or nobody does. A holder working longer than its expiry calls it so its
    /// slot does not lapse under it.
    async fn renew_source_slot(
        &self,
        source: &str,
        slot: u32,
        holder: &SlotHolder,
        expires_at: DateTime<Utc>,
    ) -> Result<bool>;

    /// Frees slot `slot` if `holder` holds it; otherwise does nothing.
    async fn release_source_slot(&self, source: &str, slot: u32, holder: &SlotHolder)
    -> Result<()>;
}

/// Everything a run keeps in a store, by concern: a store implements each part, and the
/// pipeline holds one `Arc<dyn StateStore>`.
pub trait StateStore: LeaseStore + RunStore + ChunkStore + BatchStore + SlotStore {}

impl<T: LeaseStore + RunStore + ChunkStore + BatchStore + SlotStore> StateStore for T {}

/// The table's latest key-set run, completed or not: the later of the one its state records
/// as completed and the newest key-set run among its latest `searched` runs. A key set comes
/// due `every` after this, so one that failed (a delete guard's refusal) waits as long as one
/// that completed, rather than reading every key again at every tick.
pub async fn latest_keyset_attempt(
    state: &dyn StateStore,
    table_key: &str,
    searched: usize,
) -> Result<Option<RunId>> {
    let completed = state.table_state(table_key).await?.keyset_run_id;
    let attempted = state
        .list_runs(Some(table_key), searched)
        .await?
        .into_iter()
        .find(|r| r.keyset)
        .map(|r| r.run_id);
    Ok(completed.max(attempted))
}

/// How old a chunk-start claim must be before its own claimer may take it again (see
/// [`ChunkStore::claim_chunk_start`]). Lambda retries a failed asynchronous event after about
/// a minute, then two (<https://docs.aws.amazon.com/lambda/latest/dg/invocation-async-error-handling.html>),
/// while a claim, its invoke and the recorded start take a second or two: a younger claim is a
/// duplicate delivery running alongside, which must not start the chunk a second time.
pub const RECLAIM_AFTER: chrono::Duration = chrono::Duration::seconds(30);

/// How long a batch record is kept: Snowflake polls for at most 10 minutes.
pub const BATCH_TTL: chrono::Duration = chrono::Duration::days(1);
