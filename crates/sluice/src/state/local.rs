//! The local state store: JSON files under a directory, for laptops, the demo and tests.
//!
//! `tables.json` holds per-table state; `runs/<run_id>.json` one run's header each (its record
//! without chunk outcomes: records written before chunks moved out may still hold them, and
//! are read as they are); `chunks/<run_id>/<chunk:010>.json` one recorded chunk outcome each,
//! so recording a chunk or updating a run reads one small file, not the whole run;
//! `starts/<run_id>.json` a run's chunk-start claims; `slots.json` the held connection slots
//! of every source (`connection.max_connections`). Every operation
//! holds an exclusive lock on `.lock`, so two `sluice` processes on one machine see each
//! other's leases; files are replaced by rename so a crash never leaves half a file.
//!
//! It keeps every run: nothing here expires (unlike the DynamoDB store's runs, see
//! [`super::dynamo`]). Local state belongs to one person's laptop, demo or test, where runs
//! are few and deleting history behind their back would only surprise; delete
//! `runs/<run_id>.json` files by hand to prune.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sluice_core::external_function::batch::BatchRecord;
use sluice_core::gold::GoldRecord;
use sluice_core::run::ChunkOutcome;
use sluice_core::{RunId, RunRecord, RunStatus, ScalarValue};

use super::{
    BatchStore, ChunkDone, ChunkStart, ChunkStore, GoldClaim, HeldSlot, Lease, LeaseStore,
    RECLAIM_AFTER, Result, RunStore, RunUpdate, SlotAcquire, SlotHolder, SlotStore, StateError,
    TableState, check_chunks_unchanged, check_new_run, gold_claimable,
};

pub struct LocalStateStore {
    dir: PathBuf,
    /// Documents read so far (see [`LocalStateStore::items_read`]).
    reads: Arc<AtomicU64>,
}

impl LocalStateStore {
    /// Opens (creating if needed) the state directory.
    pub fn open(dir: impl AsRef<Path>) -> Result<LocalStateStore> {
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(dir.join("runs")).map_err(|e| StateError::Storage {
            location: dir.display().to_string(),
            message: format!("cannot create the state directory: {e}"),
        })?;
        Ok(LocalStateStore {
            dir,
            reads: Arc::new(AtomicU64::new(0)),
        })
    }

    /// State documents this store has read: each file counts one, and each chunk outcome a
    /// run file still holds inside it one more. What a run costs in reads, for the test that
    /// holds it linear in the run's chunks.
    pub fn items_read(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Sets or clears the watermark, only if `run_id` holds the lease.
    async fn set_watermark(
        &self,
        table_key: &str,
        run_id: RunId,
        watermark: Option<ScalarValue>,
    ) -> Result<()> {
        self.update_leased_table(table_key, run_id, move |state| {
            state.watermark_run_id = watermark.as_ref().map(|_| run_id);
            state.watermark = watermark;
        })
        .await
    }

    /// Changes a table's state with `change`, only if `run_id` holds the lease.
    async fn update_leased_table(
        &self,
        table_key: &str,
        run_id: RunId,
        change: impl FnOnce(&mut TableState) + Send + 'static,
    ) -> Result<()> {
        let key = table_key.to_owned();
        self.locked(move |f| {
            let mut tables = f.tables()?;
            let state = tables.entry(key.clone()).or_default();
            let holder = state.lease.as_ref().map(|l| l.run_id);
            if holder != Some(run_id) {
                return Err(StateError::LeaseLost {
                    table_key: key,
                    run_id,
                    holder,
                });
            }
            change(state);
            f.save_tables(&tables)
        })
        .await
    }

    /// Runs `op` on a blocking thread while holding the directory's lock.
    async fn locked<T: Send + 'static>(
        &self,
        op: impl FnOnce(&Files) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let files = Files {
            dir: self.dir.clone(),
            reads: self.reads.clone(),
        };
        let location = self.dir.display().to_string();
        tokio::task::spawn_blocking(move || {
            let lock = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(files.dir.join(".lock"))
                .map_err(|e| files.error(format!("cannot open .lock: {e}")))?;
            lock.lock()
                .map_err(|e| files.error(format!("cannot lock .lock: {e}")))?;
            let result = op(&files);
            let _ = lock.unlock();
            result
        })
        .await
        .map_err(|e| StateError::Storage {
            location,
            message: format!("state operation panicked or was cancelled: {e}"),
        })?
    }
}

struct Files {
    dir: PathBuf,
    reads: Arc<AtomicU64>,
}

impl Files {
    fn error(&self, message: String) -> StateError {
        StateError::Storage {
            location: self.dir.display().to_string(),
            message,
        }
    }

    fn read_json<T: serde::de::DeserializeOwned>(&self, path: &Path) -> Result<Option<T>> {
        match fs::read(path) {
            Ok(bytes) => {
                self.reads.fetch_add(1, Ordering::Relaxed);
                serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                    self.error(format!("{} is not valid state JSON: {e}", path.display()))
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.error(format!("cannot read {}: {e}", path.display()))),
        }
    }

    fn write_json<T: serde::Serialize>(&self, path: &Path, value: &T) -> Result<()> {
        let tmp = path.with_extension("json.tmp");
        let bytes = serde_json::to_vec_pretty(value).map_err(|e| self.error(e.to_string()))?;
        let write = || -> std::io::Result<()> {
            let mut file = File::create(&tmp)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            fs::rename(&tmp, path)
        };
        write().map_err(|e| self.error(format!("cannot write {}: {e}", path.display())))
    }

    /// `batches/<sha256 of the id>.json`: a batch id is opaque text (`:` and `/` included),
    /// so it never names a file itself.
    fn batch_path(&self, batch_id: &str) -> Result<PathBuf> {
        let dir = self.dir.join("batches");
        fs::create_dir_all(&dir)
            .map_err(|e| self.error(format!("cannot create {}: {e}", dir.display())))?;
        Ok(dir.join(format!(
            "{}.json",
            sluice_core::external_function::batch_storage_key(batch_id)
        )))
    }

    /// `batches/<sha256 of the id>.gold.json`, beside the batch.
    fn gold_path(&self, batch_id: &str) -> Result<PathBuf> {
        Ok(self.batch_path(batch_id)?.with_extension("gold.json"))
    }

    fn tables(&self) -> Result<BTreeMap<String, TableState>> {
        Ok(self
            .read_json(&self.dir.join("tables.json"))?
            .unwrap_or_default())
    }

    fn save_tables(&self, tables: &BTreeMap<String, TableState>) -> Result<()> {
        self.write_json(&self.dir.join("tables.json"), tables)
    }

    fn run_path(&self, run_id: RunId) -> PathBuf {
        self.dir.join("runs").join(format!("{run_id}.json"))
    }

    /// A run's header as stored (an older file may still hold chunk outcomes).
    fn run_header(&self, run_id: RunId) -> Result<Option<RunRecord>> {
        let header: Option<RunRecord> = self.read_json(&self.run_path(run_id))?;
        if let Some(h) = &header {
            self.reads
                .fetch_add(h.chunks.len() as u64, Ordering::Relaxed);
        }
        Ok(header)
    }

    fn chunks_dir(&self, run_id: RunId) -> PathBuf {
        self.dir.join("chunks").join(run_id.to_string())
    }

    fn chunk_path(&self, run_id: RunId, chunk: u32) -> PathBuf {
        self.chunks_dir(run_id).join(format!("{chunk:010}.json"))
    }

    /// The chunks of a run recorded in files of their own, by number, without reading them.
    fn recorded_chunk_files(&self, run_id: RunId) -> Result<Vec<u32>> {
        let dir = self.chunks_dir(run_id);
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.error(format!("cannot list {}: {e}", dir.display()))),
        };
        Ok(entries
            .filter_map(|entry| {
                let name = entry.ok()?.file_name().into_string().ok()?;
                name.strip_suffix(".json")?.parse().ok()
            })
            .collect())
    }

    /// A whole run: its header and every recorded chunk outcome.
    fn run(&self, run_id: RunId) -> Result<Option<RunRecord>> {
        let Some(mut record) = self.run_header(run_id)? else {
            return Ok(None);
        };
        for chunk in self.recorded_chunk_files(run_id)? {
            if let Some(outcome) = self.read_json(&self.chunk_path(run_id, chunk))? {
                record.chunks.insert(chunk, outcome);
            }
        }
        Ok(Some(record))
    }

    /// `slots.json`: each source's held slots, by slot number. A released slot is removed.
    fn slots(&self) -> Result<BTreeMap<String, BTreeMap<u32, HeldSlot>>> {
        Ok(self
            .read_json(&self.dir.join("slots.json"))?
            .unwrap_or_default())
    }

    fn save_slots(&self, slots: &BTreeMap<String, BTreeMap<u32, HeldSlot>>) -> Result<()> {
        self.write_json(&self.dir.join("slots.json"), slots)
    }

    /// `starts/<run_id>.json`: who claimed each chunk's start, and which were started.
    fn starts_path(&self, run_id: RunId) -> Result<PathBuf> {
        let dir = self.dir.join("starts");
        fs::create_dir_all(&dir)
            .map_err(|e| self.error(format!("cannot create {}: {e}", dir.display())))?;
        Ok(dir.join(format!("{run_id}.json")))
    }
}

/// One chunk's start claim in `starts/<run_id>.json`.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
struct StartClaim {
    claimer: u32,
    started: bool,
    /// When the claim was taken; absent in claims written before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    claimed_at: Option<DateTime<Utc>>,
}

#[async_trait]
impl LeaseStore for LocalStateStore {
    async fn table_state(&self, table_key: &str) -> Result<TableState> {
        let key = table_key.to_owned();
        self.locked(move |f| Ok(f.tables()?.remove(&key).unwrap_or_default()))
            .await
    }

    async fn acquire_lease(
        &self,
        table_key: &str,
        run_id: RunId,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<Option<RunId>> {
        let key = table_key.to_owned();
        self.locked(move |f| {
            let mut tables = f.tables()?;
            let state = tables.entry(key.clone()).or_default();
            let mut taken_over = None;
            if let Some(lease) = &state.lease
                && lease.run_id != run_id
            {
                taken_over = Some(lease.run_id);
                if lease.expires_at > now {
                    return Err(StateError::AlreadyRunning {
                        table_key: key,
                        run_id: lease.run_id,
                    });
                }
                // A crashed run's lease: take it over and say so in that run's record.
                if let Some(mut crashed) = f.run_header(lease.run_id)? {
                    crashed.fail(
                        format!(
                            "lease expired at {}; taken over by run {run_id}",
                            lease.expires_at
                        ),
                        None,
                        now,
                    );
                    f.write_json(&f.run_path(lease.run_id), &crashed)?;
                }
            }
            state.lease = Some(Lease { run_id, expires_at });
            f.save_tables(&tables)?;
            Ok(taken_over)
        })
        .await
    }

    async fn renew_lease(
        &self,
        table_key: &str,
        run_id: RunId,
        expires_at: DateTime<Utc>,
    ) -> Result<bool> {
        let key = table_key.to_owned();
        self.locked(move |f| {
            let mut tables = f.tables()?;
            match tables.get_mut(&key).and_then(|t| t.lease.as_mut()) {
                Some(lease) if lease.run_id == run_id => {
                    if lease.expires_at < expires_at {
                        lease.expires_at = expires_at;
                        f.save_tables(&tables)?;
                    }
                    Ok(true)
                }
                _ => Ok(false),
            }
        })
        .await
    }

    async fn take_over_lease(
        &self,
        table_key: &str,
        seen: &Lease,
        to: RunId,
        expires_at: DateTime<Utc>,
    ) -> Result<bool> {
        let key = table_key.to_owned();
        let seen = seen.clone();
        self.locked(move |f| {
            let mut tables = f.tables()?;
            match tables.get_mut(&key).and_then(|t| t.lease.as_mut()) {
                Some(lease) if *lease == seen => {
                    *lease = Lease {
                        run_id: to,
                        expires_at,
                    };
                    f.save_tables(&tables)?;
                    Ok(true)
                }
                _ => Ok(false),
            }
        })
        .await
    }

    async fn release_lease(&self, table_key: &str, run_id: RunId) -> Result<()> {
        let key = table_key.to_owned();
        self.locked(move |f| {
            let mut tables = f.tables()?;
            if let Some(state) = tables.get_mut(&key)
                && state.lease.as_ref().is_some_and(|l| l.run_id == run_id)
            {
                state.lease = None;
                f.save_tables(&tables)?;
            }
            Ok(())
        })
        .await
    }

    async fn commit_watermark(
        &self,
        table_key: &str,
        run_id: RunId,
        watermark: &ScalarValue,
    ) -> Result<()> {
        self.set_watermark(table_key, run_id, Some(watermark.clone()))
            .await
    }

    async fn clear_watermark(&self, table_key: &str, run_id: RunId) -> Result<()> {
        self.set_watermark(table_key, run_id, None).await
    }

    async fn commit_keyset(&self, table_key: &str, run_id: RunId) -> Result<()> {
        self.update_leased_table(table_key, run_id, move |state| {
            state.keyset_run_id = Some(run_id);
        })
        .await
    }
}

#[async_trait]
impl RunStore for LocalStateStore {
    async fn create_run(&self, record: &RunRecord) -> Result<()> {
        check_new_run(record)?;
        let record = record.clone();
        self.locked(move |f| {
            let path = f.run_path(record.run_id);
            if path.exists() {
                return Err(StateError::RunExists(record.run_id));
            }
            f.write_json(&path, &record)
        })
        .await
    }

    async fn get_run(&self, run_id: RunId) -> Result<Option<RunRecord>> {
        self.locked(move |f| f.run(run_id)).await
    }

    async fn get_run_header(&self, run_id: RunId) -> Result<Option<RunRecord>> {
        self.locked(move |f| {
            Ok(f.run_header(run_id)?.map(|mut header| {
                header.chunks.clear();
                header
            }))
        })
        .await
    }

    async fn chunk_outcome(&self, run_id: RunId, chunk: u32) -> Result<Option<ChunkOutcome>> {
        self.locked(move |f| {
            let path = f.chunk_path(run_id, chunk);
            if path.exists() {
                return f.read_json(&path);
            }
            // A run recorded before chunks had files of their own.
            let header = f
                .run_header(run_id)?
                .ok_or(StateError::RunNotFound(run_id))?;
            Ok(header.chunks.get(&chunk).cloned())
        })
        .await
    }

    async fn update_run(&self, run_id: RunId, update: RunUpdate) -> Result<RunRecord> {
        self.locked(move |f| {
            let before = f
                .run_header(run_id)?
                .ok_or(StateError::RunNotFound(run_id))?;
            let mut record = before.clone();
            update(&mut record).map_err(|message| StateError::Refused { run_id, message })?;
            check_chunks_unchanged(run_id, &before, &record)?;
            f.write_json(&f.run_path(run_id), &record)?;
            Ok(record)
        })
        .await
    }

    async fn list_runs(&self, table_key: Option<&str>, limit: usize) -> Result<Vec<RunRecord>> {
        let key = table_key.map(str::to_owned);
        self.locked(move |f| {
            let dir = f.dir.join("runs");
            let mut ids: Vec<RunId> = fs::read_dir(&dir)
                .map_err(|e| f.error(format!("cannot list {}: {e}", dir.display())))?
                .filter_map(|entry| {
                    let name = entry.ok()?.file_name().into_string().ok()?;
                    name.strip_suffix(".json")?.parse().ok()
                })
                .collect();
            ids.sort_unstable_by(|a, b| b.cmp(a));
            let mut runs = Vec::new();
            for id in ids {
                if runs.len() >= limit {
                    break;
                }
                if let Some(run) = f.run(id)?
                    && key.as_ref().is_none_or(|k| &run.table_key == k)
                {
                    runs.push(run);
                }
            }
            Ok(runs)
        })
        .await
    }
}

#[async_trait]
impl ChunkStore for LocalStateStore {
    async fn record_chunk_done(
        &self,
        run_id: RunId,
        chunk: u32,
        outcome: &ChunkOutcome,
    ) -> Result<ChunkDone> {
        let outcome = outcome.clone();
        self.locked(move |f| {
            let mut header = f
                .run_header(run_id)?
                .ok_or(StateError::RunNotFound(run_id))?;
            let total = super::planned_chunks(&header)?;
            let path = f.chunk_path(run_id, chunk);
            let newly_recorded = !path.exists() && !header.chunks.contains_key(&chunk);
            if newly_recorded {
                if header.status != RunStatus::Extracting {
                    return Err(super::chunk_refused(run_id, chunk, header.status));
                }
                let dir = f.chunks_dir(run_id);
                fs::create_dir_all(&dir)
                    .map_err(|e| f.error(format!("cannot create {}: {e}", dir.display())))?;
                f.write_json(&path, &outcome)?;
                header.updated_at = Utc::now();
                f.write_json(&f.run_path(run_id), &header)?;
            }
            let mut recorded = f.recorded_chunk_files(run_id)?;
            recorded.extend(header.chunks.keys());
            recorded.sort_unstable();
            recorded.dedup();
            let done = u32::try_from(recorded.len()).unwrap_or(u32::MAX);
            Ok(ChunkDone {
                newly_recorded,
                done,
                total,
                is_last: newly_recorded && done == total,
            })
        })
        .await
    }

    async fn claim_chunk_start(
        &self,
        run_id: RunId,
        chunk: u32,
        claimer: u32,
        now: DateTime<Utc>,
    ) -> Result<ChunkStart> {
        self.locked(move |f| {
            if !f.run_path(run_id).exists() {
                return Err(StateError::RunNotFound(run_id));
            }
            let path = f.starts_path(run_id)?;
            let mut starts: BTreeMap<u32, StartClaim> = f.read_json(&path)?.unwrap_or_default();
            match starts.get(&chunk) {
                Some(c) if c.started => return Ok(ChunkStart::Started),
                Some(c) if c.claimer != claimer => return Ok(ChunkStart::ClaimedBy(c.claimer)),
                Some(c) if c.claimed_at.is_some_and(|at| at > now - RECLAIM_AFTER) => {
                    return Ok(ChunkStart::ClaimedBy(c.claimer));
                }
                _ => {}
            }
            starts.insert(
                chunk,
                StartClaim {
                    claimer,
                    started: false,
                    claimed_at: Some(now),
                },
            );
            f.write_json(&path, &starts)?;
            Ok(ChunkStart::Claimed)
        })
        .await
    }

    async fn chunk_started(&self, run_id: RunId, chunk: u32) -> Result<()> {
        self.locked(move |f| {
            if !f.run_path(run_id).exists() {
                return Err(StateError::RunNotFound(run_id));
            }
            let path = f.starts_path(run_id)?;
            let mut starts: BTreeMap<u32, StartClaim> = f.read_json(&path)?.unwrap_or_default();
            // A start recorded without a claim (not what sluice does) keeps no claimer.
            let entry = starts.entry(chunk).or_insert(StartClaim {
                claimer: u32::MAX,
                started: false,
                claimed_at: None,
            });
            if !entry.started {
                entry.started = true;
                f.write_json(&path, &starts)?;
            }
            Ok(())
        })
        .await
    }
}

#[async_trait]
impl BatchStore for LocalStateStore {
    async fn create_batch(&self, batch: &BatchRecord) -> Result<bool> {
        let batch = batch.clone();
        self.locked(move |f| {
            let path = f.batch_path(&batch.batch_id)?;
            if path.exists() {
                return Ok(false);
            }
            f.write_json(&path, &batch)?;
            Ok(true)
        })
        .await
    }

    async fn save_batch(&self, batch: &BatchRecord) -> Result<()> {
        let batch = batch.clone();
        self.locked(move |f| {
            let path = f.batch_path(&batch.batch_id)?;
            f.write_json(&path, &batch)
        })
        .await
    }

    async fn get_batch(&self, batch_id: &str) -> Result<Option<BatchRecord>> {
        let id = batch_id.to_owned();
        self.locked(move |f| {
            let path = f.batch_path(&id)?;
            f.read_json(&path)
        })
        .await
    }

    async fn claim_gold(&self, claim: &GoldRecord, now: DateTime<Utc>) -> Result<GoldClaim> {
        let claim = claim.clone();
        self.locked(move |f| {
            let path = f.gold_path(&claim.batch_id)?;
            let existing: Option<GoldRecord> = f.read_json(&path)?;
            let found = match existing {
                None => GoldClaim::Claimed(claim),
                Some(existing) => gold_claimable(&existing, &claim, now),
            };
            if let GoldClaim::Claimed(record) = &found {
                f.write_json(&path, record)?;
            }
            Ok(found)
        })
        .await
    }

    async fn save_gold(&self, record: &GoldRecord) -> Result<()> {
        let record = record.clone();
        self.locked(move |f| {
            let path = f.gold_path(&record.batch_id)?;
            let existing: Option<GoldRecord> = f.read_json(&path)?;
            match existing {
                Some(e) if e.holder != record.holder => Err(StateError::GoldTakenOver {
                    batch_id: record.batch_id.clone(),
                    holder: e.holder,
                }),
                _ => f.write_json(&path, &record),
            }
        })
        .await
    }

    async fn get_gold(&self, batch_id: &str) -> Result<Option<GoldRecord>> {
        let id = batch_id.to_owned();
        self.locked(move |f| {
            let path = f.gold_path(&id)?;
            f.read_json(&path)
        })
        .await
    }
}

#[async_trait]
impl SlotStore for LocalStateStore {
    async fn acquire_source_slot(
        &self,
        source: &str,
        slots: u32,
        holder: &SlotHolder,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<SlotAcquire> {
        let (source, holder) = (source.to_owned(), holder.clone());
        self.locked(move |f| {
            let mut all = f.slots()?;
            let held = all.entry(source).or_default();
            let mine = held
                .values()
                .find(|h| h.slot < slots && h.holder.token == holder.token)
                .map(|h| h.slot);
            let free = || (0..slots).find(|i| held.get(i).is_none_or(|h| h.expires_at <= now));
            let Some(slot) = mine.or_else(free) else {
                let live = held
                    .values()
                    .filter(|h| h.slot < slots && h.expires_at > now)
                    .cloned()
                    .collect();
                return Ok(SlotAcquire::Busy(live));
            };
            held.insert(
                slot,
                HeldSlot {
                    slot,
                    holder,
                    expires_at,
                },
            );
            f.save_slots(&all)?;
            Ok(SlotAcquire::Taken(slot))
        })
        .await
    }

    async fn renew_source_slot(
        &self,
        source: &str,
        slot: u32,
        holder: &SlotHolder,
        expires_at: DateTime<Utc>,
    ) -> Result<bool> {
        let (source, token) = (source.to_owned(), holder.token.clone());
        self.locked(move |f| {
            let mut all = f.slots()?;
            match all.get_mut(&source).and_then(|held| held.get_mut(&slot)) {
                Some(held) if held.holder.token == token => {
                    held.expires_at = expires_at;
                    f.save_slots(&all)?;
                    Ok(true)
                }
                _ => Ok(false),
            }
        })
        .await
    }

    async fn release_source_slot(
        &self,
        source: &str,
        slot: u32,
        holder: &SlotHolder,
    ) -> Result<()> {
        let (source, token) = (source.to_owned(), holder.token.clone());
        self.locked(move |f| {
            let mut all = f.slots()?;
            let Some(held) = all.get_mut(&source) else {
                return Ok(());
            };
            if held.get(&slot).is_some_and(|h| h.holder.token == token) {
                held.remove(&slot);
                if held.is_empty() {
                    all.remove(&source);
                }
                f.save_slots(&all)?;
            }
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;
    use sluice_core::RunStatus;

    #[tokio::test]
    async fn one_lease_holder_at_a_time_and_expired_leases_are_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStateStore::open(dir.path()).unwrap();
        let now = Utc::now();
        let (a, b) = (RunId::new(), RunId::new());
        store
            .create_run(&RunRecord::new(a, "s/t".into(), now))
            .await
            .unwrap();
        store
            .acquire_lease("s/t", a, now, now + Duration::minutes(5))
            .await
            .unwrap();
        match store
            .acquire_lease("s/t", b, now, now + Duration::minutes(5))
            .await
        {
            Err(StateError::AlreadyRunning { run_id, .. }) => assert_eq!(run_id, a),
            other => panic!("expected AlreadyRunning, got {other:?}"),
        }
        // After expiry b takes over and a is marked FAILED.
        let later = now + Duration::minutes(6);
        store
            .acquire_lease("s/t", b, later, later + Duration::minutes(5))
            .await
            .unwrap();
        let crashed = store.get_run(a).await.unwrap().unwrap();
        assert_eq!(crashed.status, RunStatus::Failed);
        assert!(crashed.error.unwrap().message.contains("lease expired"));
        // a can no longer commit; b can.
        assert!(matches!(
            store.commit_watermark("s/t", a, &ScalarValue::Int(5)).await,
            Err(StateError::LeaseLost { .. })
        ));
        store
            .commit_watermark("s/t", b, &ScalarValue::Int(7))
            .await
            .unwrap();
        store.release_lease("s/t", b).await.unwrap();
        let state = store.table_state("s/t").await.unwrap();
        assert_eq!(state.watermark, Some(ScalarValue::Int(7)));
        assert_eq!(state.lease, None);
    }

    #[tokio::test]
    async fn refused_updates_change_nothing_and_runs_list_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStateStore::open(dir.path()).unwrap();
        let now = Utc::now();
        let first = RunId::at(now);
        let second = RunId::at(now + Duration::seconds(1));
        for id in [first, second] {
            store
                .create_run(&RunRecord::new(id, "s/t".into(), now))
                .await
                .unwrap();
        }
        assert!(matches!(
            store
                .create_run(&RunRecord::new(first, "s/t".into(), now))
                .await,
            Err(StateError::RunExists(_))
        ));
        let err = store
            .update_run(
                first,
                Box::new(move |r| r.transition(RunStatus::Completed, now)),
            )
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("cannot move from PLANNED to COMPLETED"),
            "{err}"
        );
        assert_eq!(
            store.get_run(first).await.unwrap().unwrap().status,
            RunStatus::Planned
        );
        let runs = store.list_runs(Some("s/t"), 10).await.unwrap();
        assert_eq!(
            runs.iter().map(|r| r.run_id).collect::<Vec<_>>(),
            vec![second, first]
        );
        assert!(store.list_runs(Some("other"), 10).await.unwrap().is_empty());
    }
}
