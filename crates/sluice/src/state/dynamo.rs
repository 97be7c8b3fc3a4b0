//! The DynamoDB state store: watermarks, leases and run records in one table, as production
//! keeps them. Every change is a conditional write, so concurrent Lambda invocations (and
//! duplicated events) cannot take a lease twice, count a chunk twice or move a run backwards.
//!
//! Items (partition `pk`, sort `sk`, both strings):
//!
//! | pk | sk | what |
//! |---|---|---|
//! | `TABLE#<source>/<table>` | `STATE` | `watermark` (JSON of the typed value, full precision), `watermark_run_id`, `lease_run_id`, `lease_expires` (ns since the epoch), `keyset_run_id` (the latest completed key-set run) |
//! | `RUN#<run_id>` | `RUN` | `record` (the run record as JSON, without chunks), `status`, `version`, `table_key`, `run_id`, `run_kind` = `RUN`, `chunk_total`, `chunks_done`, `done_chunks` (number set), `chunk_attempts` (map: chunk → the attempt that counted), `chunks_updated_at`, `chunk_starts` (map: chunk → the chunk that claimed its start), `chunk_claimed_at` (map: chunk → when, ns), `started_chunks` (number set: chunks whose start was recorded), `expires_at` (epoch seconds, DynamoDB TTL), and while an update runs `lock_token`, `lock_expires` |
//! | `RUN#<run_id>` | `CHUNK#<n:010>#<attempt>` | `outcome`: one chunk's rows, bytes, files, schema and warnings as JSON; `expires_at`, the run item's |
//! | `BATCH#<sha256 of batch_id>` | `BATCH` | `record`: an external-function batch (rows → runs) as JSON, `expires_at` (epoch seconds, DynamoDB TTL) |
//! | `BATCH#<sha256 of batch_id>` | `GOLD` | `record`: the batch's gold steps as JSON, `holder` (who runs them: every write is conditional on it), `finished`, `expires_at` |
//! | `SOURCE#<source>` | `SLOT#<n:010>` | one held connection slot of a source (`connection.max_connections`): `slot_run_id`, `slot_chunk` (absent while planning), `slot_token` (one acquisition), `slot_expires` (ns since the epoch), `expires_at` (epoch seconds, DynamoDB TTL: a day after `slot_expires`); deleted when released |
//!
//! Chunk outcomes live in items of their own because a run of 1,024 chunks with their file
//! lists would not fit DynamoDB's 400 KB item limit; one chunk's outcome stays far below it
//! (each file entry is ~150 bytes; [`MAX_OUTCOME_BYTES`] is checked). Each attempt at a
//! chunk writes its own item and the counting write names the attempt that counted, so a
//! duplicated or retried event never replaces the outcome that was counted. The two indexes
//! (`runs_by_table`, `runs_by_time`, keys only) list runs newest first.
//!
//! **Retention.** Run and chunk items carry `expires_at` = the run's start (`created_at`) +
//! the store's run retention, in epoch seconds: the state table's TTL attribute, so DynamoDB
//! deletes them on its own. One value per run, fixed when it starts: every chunk item of a run
//! carries exactly its run item's value without ever being rewritten (a "last update" rule
//! would move the run item's expiry past its chunks' on every update, or rewrite up to
//! thousands of chunk items each time), and history ends at one clear point, "runs started
//! before <now − retention> are gone". Every write to a run's items sets it again (so a
//! changed retention reaches the runs still being written, and [`RunStore::get_run`], the one
//! read of every chunk item, which finalize makes once, brings chunk items that disagree back
//! in line). A run is not meant to expire while it runs: the deployment refuses a retention
//! less than a day longer than the lease TTL (`sluice_core::deploy::RUN_RETENTION_OVER_LEASE`),
//! and while live work renews a lease it never holds the table for days (a Lambda run's chunks
//! each end within 15 minutes). The
//! `TABLE#` item, holding the watermark and the lease, never carries `expires_at`, so the
//! table's state never expires.
//!
//! DynamoDB compares `expires_at` (a Number of epoch seconds) with the current time and
//! deletes expired items in the background, typically within a few days, so an expired item
//! can still be read until then
//! (<https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/time-to-live-ttl-before-you-start.html>,
//! <https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/API_UpdateTimeToLive.html>).
//! Its items are deleted one by one in no particular order, so a run read in between could
//! miss some chunks; reads therefore treat a run whose run item has expired (`expires_at` ≤
//! now) as gone, as AWS suggests
//! (<https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/ttl-expired-items.html>):
//! a run is either whole or absent.
//!
//! A source slot item exists only while a holder has it (or until DynamoDB's TTL removes the
//! item of a holder that died without releasing it): a missing item is a free slot. Whether a
//! slot is live is `slot_expires`, compared in the conditional write that takes it; its
//! `expires_at` only cleans up, a day later, so a slot is never deleted under a holder that
//! still renews it.
//!
//! A run update is a read-modify-write of a closure that may run only once, so it is
//! serialized by a short lock on the run item (a conditional write with an expiry) rather
//! than retried optimistically; the final write is still conditional on the lock and on the
//! status the closure saw.

use std::collections::BTreeSet;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure};
use chrono::{DateTime, Utc};
use sluice_core::external_function::batch::BatchRecord;
use sluice_core::gold::GoldRecord;
use sluice_core::run::ChunkOutcome;
use sluice_core::{RunId, RunRecord, RunStatus, ScalarValue};
use tracing::warn;

use super::{
    BatchStore, ChunkDone, ChunkStart, ChunkStore, GoldClaim, HeldSlot, Lease, LeaseStore,
    RECLAIM_AFTER, Result, RunStore, RunUpdate, SlotAcquire, SlotHolder, SlotStore, StateError,
    TableState, check_chunks_unchanged, check_new_run, gold_claimable,
};
use crate::ddb::{
    self, Item, PK, RUNS_BY_TABLE, RUNS_BY_TIME, SK, get_n, get_s, is_condition_failed, n, s,
    sdk_message,
};

/// Largest chunk outcome stored, leaving room under the 400 KB item limit for the keys.
pub const MAX_OUTCOME_BYTES: usize = 380 * 1024;
/// Largest run record stored in the run item, leaving room for its counters and the
/// chunk-attempt map (~40 bytes per chunk).
const MAX_RECORD_BYTES: usize = 300 * 1024;
/// How long a run update may hold the run's lock; a crashed updater blocks others this long.
const LOCK_TTL: chrono::Duration = chrono::Duration::seconds(10);
/// Attempts to take a run's lock, backing off from 10 ms to 500 ms: about 15 s in all, longer
/// than `LOCK_TTL`, so a lock left by a crashed updater is always outlived.
const LOCK_ATTEMPTS: u32 = 36;

pub struct DynamoStateStore {
    client: Client,
    table: String,
    /// How long after its start a run's items expire.
    run_retention: chrono::Duration,
    /// Items read so far (see [`DynamoStateStore::items_read`]).
    items_read: std::sync::atomic::AtomicU64,
}

fn table_pk(table_key: &str) -> AttributeValue {
    s(format!("TABLE#{table_key}"))
}

fn run_pk(run_id: RunId) -> AttributeValue {
    s(format!("RUN#{run_id}"))
}

/// Keyed by a hash of the id: Snowflake's batch ids are opaque text of any shape.
fn batch_pk(batch_id: &str) -> AttributeValue {
    s(format!(
        "BATCH#{}",
        sluice_core::external_function::batch_storage_key(batch_id)
    ))
}

fn source_pk(source: &str) -> AttributeValue {
    s(format!("SOURCE#{source}"))
}

fn slot_sk(slot: u32) -> AttributeValue {
    s(format!("SLOT#{slot:010}"))
}

/// How long after its expiry a slot item left by a holder that died is kept, for whoever looks
/// into why a source was busy; DynamoDB's TTL then deletes it.
const SLOT_ITEM_KEPT: chrono::Duration = chrono::Duration::days(1);

/// Rounds of "read the slots, try the free ones" before an acquire answers busy: each round
/// that takes nothing means every slot it tried was taken by a racer in between.
const SLOT_ROUNDS: u32 = 4;

/// One slot item as read: its number, token and expiry (ns), and its holder when well formed.
struct SlotItem {
    slot: u32,
    token: Option<String>,
    expires: i64,
    held: Option<HeldSlot>,
}

fn slot_item(item: &Item) -> Option<SlotItem> {
    let slot = get_s(item, SK)?.strip_prefix("SLOT#")?.parse().ok()?;
    let token = get_s(item, "slot_token").map(str::to_owned);
    let expires = get_n(item, "slot_expires").unwrap_or(0);
    let held = match (
        &token,
        get_s(item, "slot_run_id").and_then(|r| r.parse().ok()),
    ) {
        (Some(token), Some(run_id)) => Some(HeldSlot {
            slot,
            holder: SlotHolder {
                run_id,
                chunk: get_n(item, "slot_chunk").and_then(|c| u32::try_from(c).ok()),
                token: token.clone(),
            },
            expires_at: DateTime::from_timestamp_nanos(expires),
        }),
        _ => None,
    };
    Some(SlotItem {
        slot,
        token,
        expires,
        held,
    })
}

fn chunk_sk(chunk: u32, attempt: &str) -> String {
    format!("CHUNK#{chunk:010}#{attempt}")
}

fn nanos(t: DateTime<Utc>) -> i64 {
    t.timestamp_nanos_opt().unwrap_or(i64::MAX)
}

fn chrono_duration(d: std::time::Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// Whether an item's TTL has passed: DynamoDB may not have deleted it yet.
fn expired(item: &Item, now: DateTime<Utc>) -> bool {
    get_n(item, EXPIRES_AT).is_some_and(|at| at <= now.timestamp())
}

/// The state table's TTL attribute (template.yaml `TimeToLiveSpecification`).
const EXPIRES_AT: &str = "expires_at";

fn done_chunks(item: &Item) -> BTreeSet<u32> {
    item.get("done_chunks")
        .and_then(|v| v.as_ns().ok())
        .map(|set| set.iter().filter_map(|x| x.parse().ok()).collect())
        .unwrap_or_default()
}

/// A run as stored: the record with its chunks, the item's version, and the sort keys of the
/// chunk items whose `expires_at` is not the run's expiry.
struct StoredRun {
    record: RunRecord,
    stale_chunk_expiry: Vec<String>,
}

/// The one field of a stored record a chunk write needs.
#[derive(serde::Deserialize)]
struct StartedAt {
    created_at: DateTime<Utc>,
}

impl DynamoStateStore {
    /// A store on table `table`, with a client built from `sdk` (see [`crate::aws::sdk_config`]).
    pub fn new(sdk: &aws_config::SdkConfig, table: impl Into<String>) -> DynamoStateStore {
        DynamoStateStore::with_client(Client::new(sdk), table)
    }

    pub fn with_client(client: Client, table: impl Into<String>) -> DynamoStateStore {
        DynamoStateStore {
            client,
            table: table.into(),
            run_retention: chrono_duration(sluice_core::deploy::DEFAULT_RUN_RETENTION),
            items_read: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Items this store has read from DynamoDB (a `GetItem` counts one, a query each item it
    /// returned, at least one): what a run costs in reads, for the test that holds it linear
    /// in the run's chunks.
    pub fn items_read(&self) -> u64 {
        self.items_read.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn count_read(&self, items: usize) {
        self.items_read.fetch_add(
            u64::try_from(items.max(1)).unwrap_or(u64::MAX),
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// Runs expire `retention` after they started (default
    /// [`sluice_core::deploy::DEFAULT_RUN_RETENTION`]).
    pub fn with_run_retention(mut self, retention: std::time::Duration) -> DynamoStateStore {
        self.run_retention = chrono_duration(retention);
        self
    }

    /// `expires_at` of every item of a run that started at `created_at`, in epoch seconds.
    pub fn run_expires_at(&self, created_at: DateTime<Utc>) -> i64 {
        created_at
            .checked_add_signed(self.run_retention)
            .map_or(i64::MAX, |t| t.timestamp())
    }

    /// The put of a batch record, expiring (DynamoDB TTL on `expires_at`) after a day.
    fn batch_put(
        &self,
        batch: &BatchRecord,
    ) -> Result<aws_sdk_dynamodb::operation::put_item::builders::PutItemFluentBuilder> {
        let record = serde_json::to_string(batch)
            .map_err(|e| self.error(format!("batch {}: {e}", batch.batch_id)))?;
        Ok(self
            .client
            .put_item()
            .table_name(&self.table)
            .item(PK, batch_pk(&batch.batch_id))
            .item(SK, s("BATCH"))
            .item("record", s(record))
            .item(
                "expires_at",
                n((batch.created_at + super::BATCH_TTL).timestamp()),
            ))
    }

    /// The put of a batch's gold record, beside its batch and expiring with it.
    fn gold_put(
        &self,
        gold: &GoldRecord,
    ) -> Result<aws_sdk_dynamodb::operation::put_item::builders::PutItemFluentBuilder> {
        let record = serde_json::to_string(gold)
            .map_err(|e| self.error(format!("gold of batch {}: {e}", gold.batch_id)))?;
        Ok(self
            .client
            .put_item()
            .table_name(&self.table)
            .item(PK, batch_pk(&gold.batch_id))
            .item(SK, s("GOLD"))
            .item("record", s(record))
            .item("holder", s(&gold.holder))
            .item("finished", AttributeValue::Bool(gold.finished))
            .item(
                "expires_at",
                n((gold.updated_at + super::BATCH_TTL).timestamp()),
            ))
    }

    pub fn table_name(&self) -> &str {
        &self.table
    }

    /// Creates the state table with production's layout unless it exists (local stacks,
    /// tests); returns whether it was created.
    pub async fn create_table(&self) -> Result<bool> {
        ddb::create_table(&self.client, &self.table, ddb::TableKind::State)
            .await
            .map_err(|message| self.error(message))
    }

    fn error(&self, message: impl Into<String>) -> StateError {
        StateError::Storage {
            location: format!("DynamoDB table {}", self.table),
            message: message.into(),
        }
    }

    fn decode<T: serde::de::DeserializeOwned>(
        &self,
        item: &Item,
        attr: &str,
        what: &str,
    ) -> Result<T> {
        let text = get_s(item, attr)
            .ok_or_else(|| self.error(format!("{what}: attribute {attr} is missing")))?;
        serde_json::from_str(text)
            .map_err(|e| self.error(format!("{what}: attribute {attr} is not valid JSON: {e}")))
    }

    /// The run item and its chunk items, in one strongly consistent query; `None` for a run
    /// that is not there or has expired (see the module's notes on retention).
    async fn load_run(&self, run_id: RunId) -> Result<Option<StoredRun>> {
        let items = ddb::query_partition(&self.client, &self.table, run_pk(run_id))
            .await
            .map_err(|message| self.error(message))?;
        self.count_read(items.len());
        let mut run = None;
        let mut chunks = Vec::new();
        for item in items {
            match get_s(&item, SK) {
                Some("RUN") => run = Some(item),
                Some(sk) if sk.starts_with("CHUNK#") => chunks.push(item),
                _ => {}
            }
        }
        let Some(item) = run.filter(|item| !expired(item, Utc::now())) else {
            return Ok(None);
        };
        let what = format!("run {run_id}");
        let mut record: RunRecord = self.decode(&item, "record", &what)?;
        let expires_at = self.run_expires_at(record.created_at);
        let stale_chunk_expiry = chunks
            .iter()
            .filter(|c| get_n(c, EXPIRES_AT) != Some(expires_at))
            .filter_map(|c| get_s(c, SK).map(str::to_owned))
            .collect();
        let counted = item.get("chunk_attempts").and_then(|v| v.as_m().ok());
        for chunk_item in chunks {
            let Some((chunk, attempt)) = get_s(&chunk_item, SK)
                .and_then(|sk| sk.strip_prefix("CHUNK#"))
                .and_then(|rest| rest.split_once('#'))
            else {
                continue;
            };
            let Ok(chunk) = chunk.parse::<u32>() else {
                continue;
            };
            // Only the attempt that was counted is the chunk's outcome; others (a writer that
            // crashed before counting, a duplicate that lost) are ignored.
            let counted_attempt = counted
                .and_then(|m| m.get(&chunk.to_string()))
                .and_then(|v| v.as_s().ok());
            if counted_attempt.is_some_and(|a| a == attempt) {
                let outcome: ChunkOutcome =
                    self.decode(&chunk_item, "outcome", &format!("{what} chunk {chunk}"))?;
                record.chunks.insert(chunk, outcome);
            }
        }
        if let Some(at) =
            get_s(&item, "chunks_updated_at").and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        {
            record.updated_at = record.updated_at.max(at.with_timezone(&Utc));
        }
        Ok(Some(StoredRun {
            record,
            stale_chunk_expiry,
        }))
    }

    /// The attributes that mirror the record, written with every change of it.
    fn record_values(&self, record: &RunRecord) -> Result<Vec<(&'static str, AttributeValue)>> {
        let mut stored = record.clone();
        stored.chunks.clear();
        let json = serde_json::to_string(&stored).map_err(|e| self.error(e.to_string()))?;
        // The plan dominates: ~150 bytes per chunk range, so 1,024 chunks take ~150 KB.
        if json.len() > MAX_RECORD_BYTES {
            return Err(self.error(format!(
                "run {}: its record ({} bytes as JSON) does not fit one DynamoDB item",
                record.run_id,
                json.len()
            )));
        }
        let mut values = vec![
            (":record", s(json)),
            (":status", s(record.status.as_str())),
            (":expires", n(self.run_expires_at(record.created_at))),
        ];
        if let Some(plan) = &record.plan {
            values.push((":total", n(plan.chunks.len())));
        }
        Ok(values)
    }

    /// Takes the run's update lock, waiting (bounded) while another update holds it.
    async fn lock_run(&self, run_id: RunId, token: &str) -> Result<()> {
        let mut delay = std::time::Duration::from_millis(10);
        for _ in 0..LOCK_ATTEMPTS {
            let now = Utc::now();
            let result = self
                .client
                .update_item()
                .table_name(&self.table)
                .key(PK, run_pk(run_id))
                .key(SK, s("RUN"))
                .update_expression("SET lock_token = :t, lock_expires = :exp")
                .condition_expression(
                    "attribute_exists(#pk) AND (attribute_not_exists(lock_token) OR lock_expires < :now)",
                )
                .expression_attribute_names("#pk", PK)
                .expression_attribute_values(":t", s(token))
                .expression_attribute_values(":exp", n(nanos(now + LOCK_TTL)))
                .expression_attribute_values(":now", n(nanos(now)))
                .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
                .send()
                .await;
            match result {
                Ok(_) => return Ok(()),
                Err(e) if is_condition_failed(&e) => {
                    let exists = old_item(&e).is_some_and(|item| !item.is_empty());
                    if !exists && self.load_header(run_id).await?.is_none() {
                        return Err(StateError::RunNotFound(run_id));
                    }
                }
                Err(e) => return Err(self.error(sdk_message(&e))),
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(std::time::Duration::from_millis(500));
        }
        Err(self.error(format!(
            "run {run_id} stayed locked by another update; try again"
        )))
    }

    /// Gives the chunk items `stale` (sort keys) the run's `expires_at`, so they expire with
    /// it. Only chunk items written under another retention setting (or before retention
    /// existed) need it; each write is conditional on the item existing, so none is recreated.
    async fn align_chunk_expiry(&self, record: &RunRecord, stale: Vec<String>) {
        let expires_at = self.run_expires_at(record.created_at);
        for sk in stale {
            let result = self
                .client
                .update_item()
                .table_name(&self.table)
                .key(PK, run_pk(record.run_id))
                .key(SK, s(sk))
                .update_expression("SET #expires = :expires")
                .condition_expression("attribute_exists(#pk)")
                .expression_attribute_names("#pk", PK)
                .expression_attribute_names("#expires", EXPIRES_AT)
                .expression_attribute_values(":expires", n(expires_at))
                .send()
                .await;
            match result {
                Ok(_) => {}
                Err(e) if is_condition_failed(&e) => {}
                // The run's own update is already written: a chunk item left with its old
                // expiry is realigned by the run's next update, and failing here would report
                // a saved update as failed (and make Lambda retry it).
                Err(e) => tracing::warn!(
                    run_id = %record.run_id,
                    error = %sdk_message(&e),
                    "could not align a chunk item's expiry with its run; the next update retries"
                ),
            }
        }
    }

    async fn unlock_run(&self, run_id: RunId, token: &str) {
        let result = self
            .update_run_item(run_id)
            .update_expression("REMOVE lock_token, lock_expires")
            .condition_expression("lock_token = :t")
            .expression_attribute_values(":t", s(token))
            .send()
            .await;
        if let Err(e) = result
            && !is_condition_failed(&e)
        {
            // The lock expires on its own; this only delays the next update.
            warn!(%run_id, error = %sdk_message(&e), "releasing a run's update lock failed");
        }
    }

    fn update_table_item(&self, table_key: &str) -> UpdateItemFluentBuilder {
        self.client
            .update_item()
            .table_name(&self.table)
            .key(PK, table_pk(table_key))
            .key(SK, s("STATE"))
    }

    fn update_run_item(&self, run_id: RunId) -> UpdateItemFluentBuilder {
        self.client
            .update_item()
            .table_name(&self.table)
            .key(PK, run_pk(run_id))
            .key(SK, s("RUN"))
    }

    /// One item, read strongly consistently.
    async fn get_item(&self, pk: AttributeValue, sk: &str) -> Result<Option<Item>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(PK, pk)
            .key(SK, s(sk))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| self.error(sdk_message(&e)))?;
        self.count_read(1);
        Ok(out.item)
    }

    /// The run item alone, decoded: the run's header (no chunk outcomes) and its version;
    /// `None` for a run that is not there or has expired.
    async fn load_header(&self, run_id: RunId) -> Result<Option<(RunRecord, i64)>> {
        let Some(item) = self
            .get_item(run_pk(run_id), "RUN")
            .await?
            .filter(|item| !expired(item, Utc::now()))
        else {
            return Ok(None);
        };
        let mut record: RunRecord = self.decode(&item, "record", &format!("run {run_id}"))?;
        if let Some(at) =
            get_s(&item, "chunks_updated_at").and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        {
            record.updated_at = record.updated_at.max(at.with_timezone(&Utc));
        }
        Ok(Some((record, get_n(&item, "version").unwrap_or(0))))
    }

    async fn table_item(&self, table_key: &str) -> Result<Option<Item>> {
        self.get_item(table_pk(table_key), "STATE").await
    }

    /// The outcome of a write conditional on `run_id` holding the table's lease.
    async fn lease_checked<
        T,
        E: ConditionFailure + ProvideErrorMetadata + std::error::Error + 'static,
    >(
        &self,
        table_key: &str,
        run_id: RunId,
        result: std::result::Result<T, SdkError<E, HttpResponse>>,
    ) -> Result<()> {
        match result {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failed(&e) => {
                let item = match old_item(&e) {
                    Some(item) => Some(item),
                    None => self.table_item(table_key).await?,
                };
                Err(StateError::LeaseLost {
                    table_key: table_key.to_owned(),
                    run_id,
                    holder: DynamoStateStore::lease_holder(item.as_ref()),
                })
            }
            Err(e) => Err(self.error(sdk_message(&e))),
        }
    }

    fn lease_holder(item: Option<&Item>) -> Option<RunId> {
        item.and_then(|i| get_s(i, "lease_run_id"))
            .and_then(|id| id.parse().ok())
    }
}

/// The item a refused conditional write found, when the service returned it.
fn old_item<E>(e: &SdkError<E, HttpResponse>) -> Option<Item>
where
    E: ConditionFailure,
{
    e.as_service_error().and_then(ConditionFailure::old_item)
}

/// The operations whose refused condition may carry the old item.
trait ConditionFailure {
    fn old_item(&self) -> Option<Item>;
}

impl ConditionFailure for aws_sdk_dynamodb::operation::update_item::UpdateItemError {
    fn old_item(&self) -> Option<Item> {
        match self {
            aws_sdk_dynamodb::operation::update_item::UpdateItemError::ConditionalCheckFailedException(c) => c.item().cloned(),
            _ => None,
        }
    }
}

#[async_trait]
impl LeaseStore for DynamoStateStore {
    async fn table_state(&self, table_key: &str) -> Result<TableState> {
        let Some(item) = self.table_item(table_key).await? else {
            return Ok(TableState::default());
        };
        let what = format!("table {table_key}");
        let watermark = match get_s(&item, "watermark") {
            Some(_) => Some(self.decode::<ScalarValue>(&item, "watermark", &what)?),
            None => None,
        };
        let lease = match (
            DynamoStateStore::lease_holder(Some(&item)),
            get_n(&item, "lease_expires"),
        ) {
            (Some(run_id), Some(expires)) => Some(Lease {
                run_id,
                expires_at: DateTime::from_timestamp_nanos(expires),
            }),
            _ => None,
        };
        Ok(TableState {
            watermark,
            watermark_run_id: get_s(&item, "watermark_run_id").and_then(|id| id.parse().ok()),
            lease,
            keyset_run_id: get_s(&item, "keyset_run_id").and_then(|id| id.parse().ok()),
        })
    }

    async fn acquire_lease(
        &self,
        table_key: &str,
        run_id: RunId,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<Option<RunId>> {
        let result = self
            .update_table_item(table_key)
            .update_expression("SET lease_run_id = :me, lease_expires = :exp")
            .condition_expression(
                "attribute_not_exists(lease_run_id) OR lease_run_id = :me OR lease_expires <= :now",
            )
            .expression_attribute_values(":me", s(run_id.to_string()))
            .expression_attribute_values(":exp", n(nanos(expires_at)))
            .expression_attribute_values(":now", n(nanos(now)))
            .return_values(ReturnValue::UpdatedOld)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        let old = match result {
            Ok(out) => out.attributes,
            Err(e) if is_condition_failed(&e) => {
                let item = match old_item(&e) {
                    Some(item) => Some(item),
                    None => self.table_item(table_key).await?,
                };
                return match DynamoStateStore::lease_holder(item.as_ref()) {
                    Some(holder) => Err(StateError::AlreadyRunning {
                        table_key: table_key.to_owned(),
                        run_id: holder,
                    }),
                    None => Err(self.error(format!(
                        "the lease of {table_key} changed while it was taken; try again"
                    ))),
                };
            }
            Err(e) => return Err(self.error(sdk_message(&e))),
        };
        // A lease left by another run had expired: that run crashed; say so in its record.
        let mut taken_over = None;
        if let Some(crashed) = DynamoStateStore::lease_holder(old.as_ref())
            && crashed != run_id
        {
            taken_over = Some(crashed);
            let expired = old
                .as_ref()
                .and_then(|o| get_n(o, "lease_expires"))
                .map(DateTime::from_timestamp_nanos)
                .unwrap_or(now);
            let message = format!("lease expired at {expired}; taken over by run {run_id}");
            let marked = self
                .update_run(
                    crashed,
                    Box::new(move |r| {
                        r.fail(message, None, now);
                        Ok(())
                    }),
                )
                .await;
            match marked {
                Ok(_) | Err(StateError::RunNotFound(_)) => {}
                Err(e) => {
                    warn!(%crashed, table = table_key, error = %e, "marking the run whose lease expired as FAILED failed")
                }
            }
        }
        Ok(taken_over)
    }

    async fn renew_lease(
        &self,
        table_key: &str,
        run_id: RunId,
        expires_at: DateTime<Utc>,
    ) -> Result<bool> {
        let result = self
            .update_table_item(table_key)
            .update_expression("SET lease_expires = :exp")
            .condition_expression(
                "lease_run_id = :me AND (attribute_not_exists(lease_expires) OR lease_expires < :exp)",
            )
            .expression_attribute_values(":me", s(run_id.to_string()))
            .expression_attribute_values(":exp", n(nanos(expires_at)))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            // Refused: someone else's lease, none, or ours already reaching further.
            Err(e) if is_condition_failed(&e) => {
                let item = match old_item(&e) {
                    Some(item) => Some(item),
                    None => self.table_item(table_key).await?,
                };
                Ok(DynamoStateStore::lease_holder(item.as_ref()) == Some(run_id))
            }
            Err(e) => Err(self.error(sdk_message(&e))),
        }
    }

    async fn take_over_lease(
        &self,
        table_key: &str,
        seen: &Lease,
        to: RunId,
        expires_at: DateTime<Utc>,
    ) -> Result<bool> {
        let result = self
            .update_table_item(table_key)
            .update_expression("SET lease_run_id = :to, lease_expires = :exp")
            .condition_expression("lease_run_id = :from AND lease_expires = :seen")
            .expression_attribute_values(":from", s(seen.run_id.to_string()))
            .expression_attribute_values(":seen", n(nanos(seen.expires_at)))
            .expression_attribute_values(":to", s(to.to_string()))
            .expression_attribute_values(":exp", n(nanos(expires_at)))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) if is_condition_failed(&e) => Ok(false),
            Err(e) => Err(self.error(sdk_message(&e))),
        }
    }

    async fn release_lease(&self, table_key: &str, run_id: RunId) -> Result<()> {
        let result = self
            .update_table_item(table_key)
            .update_expression("REMOVE lease_run_id, lease_expires")
            .condition_expression("lease_run_id = :me")
            .expression_attribute_values(":me", s(run_id.to_string()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failed(&e) => Ok(()),
            Err(e) => Err(self.error(sdk_message(&e))),
        }
    }

    async fn commit_watermark(
        &self,
        table_key: &str,
        run_id: RunId,
        watermark: &ScalarValue,
    ) -> Result<()> {
        let json = serde_json::to_string(watermark).map_err(|e| self.error(e.to_string()))?;
        self.update_while_leased(
            table_key,
            run_id,
            "SET watermark = :w, watermark_run_id = :me",
            Some((":w", s(json))),
        )
        .await
    }

    async fn commit_keyset(&self, table_key: &str, run_id: RunId) -> Result<()> {
        self.update_while_leased(table_key, run_id, "SET keyset_run_id = :me", None)
            .await
    }

    async fn clear_watermark(&self, table_key: &str, run_id: RunId) -> Result<()> {
        self.update_while_leased(
            table_key,
            run_id,
            "REMOVE watermark, watermark_run_id",
            None,
        )
        .await
    }
}

impl DynamoStateStore {
    /// Applies `update` (which may name `:me`, the run id, and `value`) to the table's item,
    /// only while `run_id` holds its lease.
    async fn update_while_leased(
        &self,
        table_key: &str,
        run_id: RunId,
        update: &str,
        value: Option<(&str, AttributeValue)>,
    ) -> Result<()> {
        let mut request = self
            .update_table_item(table_key)
            .update_expression(update)
            .condition_expression("lease_run_id = :me")
            .expression_attribute_values(":me", s(run_id.to_string()))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        if let Some((name, value)) = value {
            request = request.expression_attribute_values(name, value);
        }
        let result = request.send().await;
        self.lease_checked(table_key, run_id, result).await
    }
}

#[async_trait]
impl RunStore for DynamoStateStore {
    async fn create_run(&self, record: &RunRecord) -> Result<()> {
        check_new_run(record)?;
        let mut request = self
            .client
            .put_item()
            .table_name(&self.table)
            .item(PK, run_pk(record.run_id))
            .item(SK, s("RUN"))
            .item("run_id", s(record.run_id.to_string()))
            .item("table_key", s(&record.table_key))
            .item("run_kind", s("RUN"))
            .item("version", n(0))
            .item("chunks_done", n(0))
            .item("chunk_attempts", AttributeValue::M(Default::default()))
            .item("chunk_starts", AttributeValue::M(Default::default()))
            .item("chunk_claimed_at", AttributeValue::M(Default::default()))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", PK);
        for (name, value) in self.record_values(record)? {
            let attr = match name {
                ":record" => "record",
                ":status" => "status",
                ":expires" => EXPIRES_AT,
                _ => "chunk_total",
            };
            request = request.item(attr, value);
        }
        match request.send().await {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failed(&e) => Err(StateError::RunExists(record.run_id)),
            Err(e) => Err(self.error(sdk_message(&e))),
        }
    }

    async fn get_run(&self, run_id: RunId) -> Result<Option<RunRecord>> {
        let Some(mut stored) = self.load_run(run_id).await? else {
            return Ok(None);
        };
        // The one place that reads every chunk item brings those that disagree with the
        // run's expiry back in line (a changed retention).
        let stale = std::mem::take(&mut stored.stale_chunk_expiry);
        if !stale.is_empty() {
            self.align_chunk_expiry(&stored.record, stale).await;
        }
        Ok(Some(stored.record))
    }

    async fn get_run_header(&self, run_id: RunId) -> Result<Option<RunRecord>> {
        Ok(self.load_header(run_id).await?.map(|(record, _)| record))
    }

    async fn chunk_outcome(&self, run_id: RunId, chunk: u32) -> Result<Option<ChunkOutcome>> {
        let Some(run) = self
            .get_item(run_pk(run_id), "RUN")
            .await?
            .filter(|item| !expired(item, Utc::now()))
        else {
            return Err(StateError::RunNotFound(run_id));
        };
        // Only the attempt that was counted is the chunk's outcome.
        let Some(attempt) = run
            .get("chunk_attempts")
            .and_then(|v| v.as_m().ok())
            .and_then(|m| m.get(&chunk.to_string()))
            .and_then(|v| v.as_s().ok())
        else {
            return Ok(None);
        };
        let Some(item) = self
            .get_item(run_pk(run_id), &chunk_sk(chunk, attempt))
            .await?
        else {
            return Ok(None);
        };
        Ok(Some(self.decode(
            &item,
            "outcome",
            &format!("run {run_id} chunk {chunk}"),
        )?))
    }

    async fn update_run(&self, run_id: RunId, update: RunUpdate) -> Result<RunRecord> {
        let token = RunId::new().to_string();
        self.lock_run(run_id, &token).await?;
        let applied = async {
            let (before, version) = self
                .load_header(run_id)
                .await?
                .ok_or(StateError::RunNotFound(run_id))?;
            let mut record = before.clone();
            update(&mut record).map_err(|message| StateError::Refused { run_id, message })?;
            check_chunks_unchanged(run_id, &before, &record)?;
            let values = self.record_values(&record)?;
            Ok::<_, StateError>((before.status, version, record, values))
        }
        .await;
        let (old_status, version, record, values) = match applied {
            Ok(applied) => applied,
            Err(e) => {
                self.unlock_run(run_id, &token).await;
                return Err(e);
            }
        };
        let total = if values.iter().any(|(k, _)| *k == ":total") {
            ", chunk_total = :total"
        } else {
            ""
        };
        let mut request = self
            .update_run_item(run_id)
            .update_expression(format!(
                "SET #record = :record, #status = :status, #expires = :expires, version = version + :one{total} REMOVE lock_token, lock_expires"
            ))
            .condition_expression("lock_token = :t AND #status = :old_status AND version = :version")
            .expression_attribute_names("#record", "record")
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#expires", EXPIRES_AT)
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":t", s(&token))
            .expression_attribute_values(":old_status", s(old_status.as_str()))
            .expression_attribute_values(":version", n(version));
        for (name, value) in values {
            request = request.expression_attribute_values(name, value);
        }
        match request.send().await {
            Ok(_) => Ok(record),
            Err(e) if is_condition_failed(&e) => Err(self.error(format!(
                "run {run_id}: the update held the run's lock longer than {}s and lost it; nothing was written",
                LOCK_TTL.num_seconds()
            ))),
            Err(e) => {
                self.unlock_run(run_id, &token).await;
                Err(self.error(sdk_message(&e)))
            }
        }
    }

    async fn list_runs(&self, table_key: Option<&str>, limit: usize) -> Result<Vec<RunRecord>> {
        let (index, hash, value) = match table_key {
            Some(key) => (RUNS_BY_TABLE, "table_key", key),
            None => (RUNS_BY_TIME, "run_kind", "RUN"),
        };
        let mut runs = Vec::new();
        let mut start = None;
        while runs.len() < limit {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(index)
                .key_condition_expression("#h = :h")
                .expression_attribute_names("#h", hash)
                .expression_attribute_values(":h", s(value))
                .scan_index_forward(false)
                .limit(i32::try_from(limit - runs.len()).unwrap_or(i32::MAX))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| self.error(sdk_message(&e)))?;
            let ids = page
                .items()
                .iter()
                .filter_map(|item| get_s(item, "run_id")?.parse::<RunId>().ok());
            for id in ids {
                // The index is eventually consistent, and keys-only (it cannot filter on
                // `expires_at`): a run it lists that the table no longer has, or that has
                // expired, is skipped, and the next page fills its place.
                if let Some(run) = self.get_run(id).await? {
                    runs.push(run);
                }
            }
            start = page.last_evaluated_key().cloned();
            if start.is_none() {
                break;
            }
        }
        runs.truncate(limit);
        Ok(runs)
    }
}

#[async_trait]
impl ChunkStore for DynamoStateStore {
    async fn record_chunk_done(
        &self,
        run_id: RunId,
        chunk: u32,
        outcome: &ChunkOutcome,
    ) -> Result<ChunkDone> {
        let run = self
            .get_item(run_pk(run_id), "RUN")
            .await?
            .filter(|item| !expired(item, Utc::now()))
            .ok_or(StateError::RunNotFound(run_id))?;
        let count = |item: &Item, attr: &str| {
            get_n(item, attr)
                .and_then(|v| u32::try_from(v).ok())
                .unwrap_or(0)
        };
        let total = match get_n(&run, "chunk_total") {
            Some(_) => count(&run, "chunk_total"),
            None => return Err(super::no_plan(run_id)),
        };
        let duplicate = |item: &Item| ChunkDone {
            newly_recorded: false,
            done: count(item, "chunks_done"),
            total,
            is_last: false,
        };
        if done_chunks(&run).contains(&chunk) {
            return Ok(duplicate(&run));
        }
        let status = get_s(&run, "status").unwrap_or_default();
        if status != RunStatus::Extracting.as_str() {
            return Err(super::chunk_refused(run_id, chunk, status));
        }
        let started: StartedAt = self.decode(&run, "record", &format!("run {run_id}"))?;
        let expires_at = n(self.run_expires_at(started.created_at));
        let json = serde_json::to_string(outcome).map_err(|e| self.error(e.to_string()))?;
        if json.len() > MAX_OUTCOME_BYTES {
            return Err(self.error(format!(
                "run {run_id} chunk {chunk}: its outcome ({} files, {} bytes as JSON) does not fit one DynamoDB item; use more chunks or larger files",
                outcome.files.len(),
                json.len()
            )));
        }
        // The outcome first, the count second: a crash in between leaves an uncounted attempt
        // that readers ignore.
        let attempt = RunId::new().to_string();
        self.client
            .put_item()
            .table_name(&self.table)
            .item(PK, run_pk(run_id))
            .item(SK, s(chunk_sk(chunk, &attempt)))
            .item("outcome", s(json))
            .item(EXPIRES_AT, expires_at.clone())
            .send()
            .await
            .map_err(|e| self.error(sdk_message(&e)))?;
        let result = self
            .update_run_item(run_id)
            .update_expression(
                "ADD chunks_done :one, done_chunks :chunks SET chunks_updated_at = :now, chunk_attempts.#c = :attempt, #expires = :expires",
            )
            .condition_expression("#status = :extracting AND NOT contains(done_chunks, :chunk)")
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#c", chunk.to_string())
            .expression_attribute_names("#expires", EXPIRES_AT)
            .expression_attribute_values(":expires", expires_at)
            .expression_attribute_values(":attempt", s(&attempt))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":chunks", AttributeValue::Ns(vec![chunk.to_string()]))
            .expression_attribute_values(":chunk", n(chunk))
            .expression_attribute_values(":extracting", s(RunStatus::Extracting.as_str()))
            .expression_attribute_values(":now", s(Utc::now().to_rfc3339()))
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(out) => {
                let item = out.attributes.unwrap_or_default();
                let done = count(&item, "chunks_done");
                Ok(ChunkDone {
                    newly_recorded: true,
                    done,
                    total,
                    is_last: done == total,
                })
            }
            Err(e) if is_condition_failed(&e) => {
                let item = match old_item(&e) {
                    Some(item) => item,
                    None => self
                        .get_item(run_pk(run_id), "RUN")
                        .await?
                        .unwrap_or_default(),
                };
                if done_chunks(&item).contains(&chunk) {
                    Ok(duplicate(&item))
                } else {
                    let status = get_s(&item, "status").unwrap_or("gone");
                    Err(super::chunk_refused(run_id, chunk, status))
                }
            }
            Err(e) => Err(self.error(sdk_message(&e))),
        }
    }

    async fn claim_chunk_start(
        &self,
        run_id: RunId,
        chunk: u32,
        claimer: u32,
        now: DateTime<Utc>,
    ) -> Result<ChunkStart> {
        // One conditional write on the run item: set the claim if nobody holds it, or if its
        // own claimer holds it since RECLAIM_AFTER (a retry), and the start is not recorded
        // yet. The maps and the set stay small (a few bytes per chunk), inside the room
        // MAX_RECORD_BYTES leaves. A claim written before claim times were kept has none, and
        // counts as old.
        for _ in 0..2 {
            let result = self
                .update_run_item(run_id)
                .update_expression("SET chunk_starts.#c = :claimer, chunk_claimed_at.#c = :now")
                .condition_expression(
                    "attribute_exists(#pk) AND NOT contains(started_chunks, :chunk) AND (attribute_not_exists(chunk_starts.#c) OR (chunk_starts.#c = :claimer AND (attribute_not_exists(chunk_claimed_at.#c) OR chunk_claimed_at.#c <= :stale)))",
                )
                .expression_attribute_names("#pk", PK)
                .expression_attribute_names("#c", chunk.to_string())
                .expression_attribute_values(":claimer", n(claimer))
                .expression_attribute_values(":chunk", n(chunk))
                .expression_attribute_values(":now", n(nanos(now)))
                .expression_attribute_values(":stale", n(nanos(now - RECLAIM_AFTER)))
                .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
                .send()
                .await;
            match result {
                Ok(_) => return Ok(ChunkStart::Claimed),
                Err(e) if is_condition_failed(&e) => {
                    let item = match old_item(&e) {
                        Some(item) => Some(item),
                        None => self.get_item(run_pk(run_id), "RUN").await?,
                    };
                    let Some(item) = item.filter(|i| !expired(i, Utc::now())) else {
                        return Err(StateError::RunNotFound(run_id));
                    };
                    let started = item
                        .get("started_chunks")
                        .and_then(|v| v.as_ns().ok())
                        .is_some_and(|set| set.iter().any(|x| x.parse() == Ok(chunk)));
                    if started {
                        return Ok(ChunkStart::Started);
                    }
                    let holder = item
                        .get("chunk_starts")
                        .and_then(|v| v.as_m().ok())
                        .and_then(|m| m.get(&chunk.to_string()))
                        .and_then(|v| v.as_n().ok())
                        .and_then(|v| v.parse().ok());
                    return match holder {
                        Some(holder) => Ok(ChunkStart::ClaimedBy(holder)),
                        None => Err(self.error(format!(
                            "run {run_id}: claiming the start of chunk {chunk} was refused, but no claim or start was found"
                        ))),
                    };
                }
                // A run item written before chunk claims existed has no `chunk_starts` map,
                // and DynamoDB cannot set a key of a missing map: add the map, then claim.
                Err(e) if e.code() == Some("ValidationException") => {
                    self.update_run_item(run_id)
                        .update_expression("SET chunk_starts = if_not_exists(chunk_starts, :empty), chunk_claimed_at = if_not_exists(chunk_claimed_at, :empty)")
                        .condition_expression("attribute_exists(#pk)")
                        .expression_attribute_names("#pk", PK)
                        .expression_attribute_values(
                            ":empty",
                            AttributeValue::M(Default::default()),
                        )
                        .send()
                        .await
                        .map_err(|e| match is_condition_failed(&e) {
                            true => StateError::RunNotFound(run_id),
                            false => self.error(sdk_message(&e)),
                        })?;
                }
                Err(e) => return Err(self.error(sdk_message(&e))),
            }
        }
        Err(self.error(format!(
            "run {run_id}: chunk {chunk}'s start could not be claimed"
        )))
    }

    async fn chunk_started(&self, run_id: RunId, chunk: u32) -> Result<()> {
        match self
            .update_run_item(run_id)
            .update_expression("ADD started_chunks :chunks")
            .condition_expression("attribute_exists(#pk)")
            .expression_attribute_names("#pk", PK)
            .expression_attribute_values(":chunks", AttributeValue::Ns(vec![chunk.to_string()]))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failed(&e) => Err(StateError::RunNotFound(run_id)),
            Err(e) => Err(self.error(sdk_message(&e))),
        }
    }
}

#[async_trait]
impl BatchStore for DynamoStateStore {
    async fn create_batch(&self, batch: &BatchRecord) -> Result<bool> {
        let put = self
            .batch_put(batch)?
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", PK);
        match put.send().await {
            Ok(_) => Ok(true),
            Err(e) if is_condition_failed(&e) => Ok(false),
            Err(e) => Err(self.error(sdk_message(&e))),
        }
    }

    async fn save_batch(&self, batch: &BatchRecord) -> Result<()> {
        self.batch_put(batch)?
            .send()
            .await
            .map_err(|e| self.error(sdk_message(&e)))?;
        Ok(())
    }

    async fn get_batch(&self, batch_id: &str) -> Result<Option<BatchRecord>> {
        self.get_item(batch_pk(batch_id), "BATCH")
            .await?
            .map(|item| self.decode(&item, "record", &format!("batch {batch_id}")))
            .transpose()
    }

    /// The gold item's `holder` attribute is the claim: every write is conditional on it
    /// (absent for a new record, the holder read for a takeover or a save), so two holders
    /// never both write.
    async fn claim_gold(&self, claim: &GoldRecord, now: DateTime<Utc>) -> Result<GoldClaim> {
        let existing = self.get_gold(&claim.batch_id).await?;
        let found = match &existing {
            None => GoldClaim::Claimed(claim.clone()),
            Some(existing) => gold_claimable(existing, claim, now),
        };
        let GoldClaim::Claimed(record) = &found else {
            return Ok(found);
        };
        let put = self.gold_put(record)?;
        let put = match existing {
            None => put
                .condition_expression("attribute_not_exists(#pk)")
                .expression_attribute_names("#pk", PK),
            Some(existing) => put
                .condition_expression("holder = :holder AND finished = :false")
                .expression_attribute_values(":holder", s(&existing.holder))
                .expression_attribute_values(":false", AttributeValue::Bool(false)),
        };
        match put.send().await {
            Ok(_) => Ok(found),
            // Another claim won between the read and the write: what it wrote decides.
            Err(e) if is_condition_failed(&e) => match self.get_gold(&claim.batch_id).await? {
                Some(existing) if existing.finished => Ok(GoldClaim::Finished(existing)),
                Some(existing) => Ok(GoldClaim::Held(existing)),
                None => Err(self.error(format!(
                    "the gold record of batch {} vanished while it was claimed",
                    claim.batch_id
                ))),
            },
            Err(e) => Err(self.error(sdk_message(&e))),
        }
    }

    async fn save_gold(&self, record: &GoldRecord) -> Result<()> {
        let put = self
            .gold_put(record)?
            .condition_expression("holder = :holder")
            .expression_attribute_values(":holder", s(&record.holder));
        match put.send().await {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failed(&e) => Err(StateError::GoldTakenOver {
                batch_id: record.batch_id.clone(),
                holder: self
                    .get_gold(&record.batch_id)
                    .await?
                    .map_or_else(|| "nobody".to_owned(), |g| g.holder),
            }),
            Err(e) => Err(self.error(sdk_message(&e))),
        }
    }

    async fn get_gold(&self, batch_id: &str) -> Result<Option<GoldRecord>> {
        self.get_item(batch_pk(batch_id), "GOLD")
            .await?
            .map(|item| self.decode(&item, "record", &format!("gold of batch {batch_id}")))
            .transpose()
    }
}

#[async_trait]
impl SlotStore for DynamoStateStore {
    async fn acquire_source_slot(
        &self,
        source: &str,
        slots: u32,
        holder: &SlotHolder,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<SlotAcquire> {
        let now_ns = nanos(now);
        let mut live = Vec::new();
        for _ in 0..SLOT_ROUNDS {
            // One strongly consistent read of the source's slots, then conditional writes on
            // the free ones only: a busy source costs a query, not a write per slot.
            let items = ddb::query_partition(&self.client, &self.table, source_pk(source))
                .await
                .map_err(|message| self.error(message))?;
            let items: Vec<SlotItem> = items
                .iter()
                .filter_map(slot_item)
                .filter(|i| i.slot < slots)
                .collect();
            let mine = items
                .iter()
                .find(|i| i.token.as_deref() == Some(holder.token.as_str()))
                .map(|i| i.slot);
            let by_slot: std::collections::HashMap<u32, &SlotItem> =
                items.iter().map(|i| (i.slot, i)).collect();
            let mut candidates: Vec<u32> = match mine {
                Some(slot) => vec![slot],
                None => (0..slots)
                    .filter(|n| {
                        by_slot
                            .get(n)
                            .is_none_or(|i| i.token.is_none() || i.expires <= now_ns)
                    })
                    .collect(),
            };
            live = items
                .iter()
                .filter(|i| i.expires > now_ns)
                .filter_map(|i| i.held.clone())
                .collect();
            if candidates.is_empty() {
                return Ok(SlotAcquire::Busy(live));
            }
            // Racers start at different free slots, so most take one on their first write.
            let start = super::slots::random_below(candidates.len());
            candidates.rotate_left(start);
            for slot in candidates {
                let chunk = match holder.chunk {
                    Some(_) => ", slot_chunk = :chunk",
                    None => " REMOVE slot_chunk",
                };
                let mut request = self
                    .client
                    .update_item()
                    .table_name(&self.table)
                    .key(PK, source_pk(source))
                    .key(SK, slot_sk(slot))
                    .update_expression(format!(
                        "SET slot_run_id = :run, slot_token = :token, slot_expires = :exp, #expires = :kept{chunk}"
                    ))
                    .condition_expression(
                        "attribute_not_exists(slot_token) OR slot_expires <= :now OR slot_token = :token",
                    )
                    .expression_attribute_names("#expires", EXPIRES_AT)
                    .expression_attribute_values(":run", s(holder.run_id.to_string()))
                    .expression_attribute_values(":token", s(&holder.token))
                    .expression_attribute_values(":exp", n(nanos(expires_at)))
                    .expression_attribute_values(":now", n(now_ns))
                    .expression_attribute_values(
                        ":kept",
                        n(expires_at
                            .checked_add_signed(SLOT_ITEM_KEPT)
                            .map_or(i64::MAX, |t| t.timestamp())),
                    );
                if let Some(c) = holder.chunk {
                    request = request.expression_attribute_values(":chunk", n(c));
                }
                match request.send().await {
                    Ok(_) => return Ok(SlotAcquire::Taken(slot)),
                    Err(e) if is_condition_failed(&e) => continue,
                    Err(e) => return Err(self.error(sdk_message(&e))),
                }
            }
        }
        Ok(SlotAcquire::Busy(live))
    }

    async fn renew_source_slot(
        &self,
        source: &str,
        slot: u32,
        holder: &SlotHolder,
        expires_at: DateTime<Utc>,
    ) -> Result<bool> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(PK, source_pk(source))
            .key(SK, slot_sk(slot))
            .update_expression("SET slot_expires = :exp, #expires = :kept")
            .condition_expression("slot_token = :token")
            .expression_attribute_names("#expires", EXPIRES_AT)
            .expression_attribute_values(":token", s(&holder.token))
            .expression_attribute_values(":exp", n(nanos(expires_at)))
            .expression_attribute_values(
                ":kept",
                n(expires_at
                    .checked_add_signed(SLOT_ITEM_KEPT)
                    .map_or(i64::MAX, |t| t.timestamp())),
            )
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) if is_condition_failed(&e) => Ok(false),
            Err(e) => Err(self.error(sdk_message(&e))),
        }
    }

    async fn release_source_slot(
        &self,
        source: &str,
        slot: u32,
        holder: &SlotHolder,
    ) -> Result<()> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key(PK, source_pk(source))
            .key(SK, slot_sk(slot))
            .condition_expression("slot_token = :token")
            .expression_attribute_values(":token", s(&holder.token))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failed(&e) => Ok(()),
            Err(e) => Err(self.error(sdk_message(&e))),
        }
    }
}
