//! Starting a run in this process: a new run, or the run of a holder that died, taken over
//! and resumed under its own id and plan; and the heartbeat that keeps a live run's lease.
//!
//! A lease lapses `lease_ttl` after its last renewal, and a live run renews it every quarter of
//! that, so a run whose process died frees its table within the TTL (two minutes by default),
//! not hours. A `sluice run` on the host of a holder that is gone (its pid no longer runs, or
//! runs another program) takes over at once. Either way the run is resumed when it can be:
//! chunks recorded done are kept, what the dead process left of the others is removed, and
//! only those are extracted again.

use sluice_core::run::{Resumption, RunHolder};

use super::*;
use crate::holder::{self, Liveness};
use crate::state::Lease;

/// How [`Pipeline::run_table_with`] starts a run.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunStart {
    /// Read an incremental table whole, as if it had no watermark (see
    /// [`Pipeline::plan_run_with`]). A run to resume is then failed instead: it reads a window.
    pub full_reload: bool,
    /// A key-set run (see [`RunKind::Keyset`]) instead of the table's load. A dead run is
    /// resumed only by a request of its own kind: a key-set request fails a dead load (and a
    /// load request a dead key set) and starts its own.
    pub keyset: bool,
    /// Take the table over from the run holding it, even one that looks alive: the operator's
    /// `sluice run --takeover`, for a holder this host cannot see (another machine) and knows
    /// is dead. The run taken over is resumed as after a crash.
    pub take_over: bool,
}

/// What [`Pipeline::start_run`] began.
#[derive(Debug)]
pub enum Started {
    /// A new run, PLANNED without a plan yet.
    New(RunRecord),
    /// A run whose holder died, to carry on from its chunks done.
    Resumed(RunRecord),
}

impl RunStart {
    /// The kind of run asked for: a key set wins over a full reload (the CLI and the external
    /// function refuse asking for both).
    pub fn kind(&self) -> RunKind {
        if self.keyset {
            RunKind::Keyset
        } else if self.full_reload {
            RunKind::FullReload
        } else {
            RunKind::Load
        }
    }
}

impl Started {
    pub fn record(&self) -> &RunRecord {
        match self {
            Started::New(r) | Started::Resumed(r) => r,
        }
    }
}

impl Pipeline {
    /// Takes `table`'s lease for a run: a new one when the table is free; the holder's run,
    /// resumed, when its holder is dead (its lease lapsed, its process on this host is gone,
    /// or `start.take_over`) and its plan still holds; otherwise that run is failed, its files
    /// removed, and a new run begins. A live holder is refused with
    /// [`StateError::AlreadyRunning`]. `Err` means nothing was started.
    pub async fn start_run(&self, table: &TableConfig, start: RunStart) -> Result<Started> {
        let now = Utc::now();
        self.start_run_until(table, start, now, now + self.options.lease_ttl)
            .await
    }

    /// [`Pipeline::start_run`] with the lease taken until `until` (the serverless trigger
    /// takes a short one: whoever works on the run next lengthens it). It touches only the
    /// state store: a resumed run's leftovers are removed by [`Pipeline::remove_leftovers`],
    /// where the run goes on.
    pub async fn start_run_until(
        &self,
        table: &TableConfig,
        start: RunStart,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Started> {
        let key = table.key();
        if start.keyset && !table.deletes_by_keyset() {
            return Err(PipelineError::NoKeysets { table_key: key });
        }
        if let Some(lease) = self.state.table_state(&key).await?.lease {
            let reason = if start.take_over {
                Some("an operator took the table over (sluice run --takeover)".to_owned())
            } else if lease.expires_at <= now {
                Some(format!(
                    "its lease lapsed at {} without a heartbeat",
                    lease.expires_at.format("%Y-%m-%d %H:%M:%S UTC")
                ))
            } else {
                let holder = self
                    .state
                    .get_run_header(lease.run_id)
                    .await?
                    .and_then(|r| r.holder);
                match holder {
                    Some(h) if holder::liveness(&h) == Liveness::Gone => {
                        Some(format!("its process ({h}) is gone"))
                    }
                    _ => None,
                }
            };
            if let Some(reason) = reason {
                return self
                    .take_over(table, &lease, reason, start, now, until)
                    .await;
            }
        }
        Ok(Started::New(
            self.open_run(&key, start.kind(), now, until).await?,
        ))
    }

    /// The holder of a run started here, when this pipeline records one (a local `sluice
    /// run`; see [`PipelineOptions::record_holder`]).
    pub(super) fn local_holder(&self, now: DateTime<Utc>) -> Option<RunHolder> {
        self.options
            .record_holder
            .then(|| holder::this_process(now))
    }

    async fn take_over(
        &self,
        table: &TableConfig,
        seen: &Lease,
        reason: String,
        start: RunStart,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Started> {
        let key = table.key();
        let from = seen.run_id;
        let record = self.state.get_run(from).await?;
        // Why the run cannot be carried on; `None` when it can.
        let not_resumable = match &record {
            None => Some("its record is gone".to_owned()),
            Some(r) if r.status.is_terminal() => Some(format!("it had ended {}", r.status)),
            Some(_) if start.full_reload => Some("a full reload was asked for".to_owned()),
            // A run is carried on only for a request of its own kind (a load for a load, a
            // key set for a key set): the other kind's request would be lost in it.
            Some(r) if r.keyset != start.keyset => Some(format!(
                "it is a {}, and a {} was asked for",
                r.kind().as_str(),
                start.kind().as_str()
            )),
            Some(r) => match &r.plan {
                None => Some("it died before recording its plan".to_owned()),
                Some(plan) if plan.table != *table => {
                    Some("the table's configuration changed since it was planned".to_owned())
                }
                Some(_) => None,
            },
        };
        match (record, not_resumable) {
            (Some(record), None) => {
                if !self.state.take_over_lease(&key, seen, from, until).await? {
                    return Err(self.lost_race(&key, from).await);
                }
                Ok(Started::Resumed(self.resume(record, reason, now).await?))
            }
            (record, why_not) => {
                let why_not = why_not.unwrap_or_default();
                let run_id = RunId::after(now, [from]);
                if !self
                    .state
                    .take_over_lease(&key, seen, run_id, until)
                    .await?
                {
                    return Err(self.lost_race(&key, from).await);
                }
                if let Some(old) = record
                    && old.status != RunStatus::Completed
                {
                    // A FAILED run comes here too: whoever failed it may have died before
                    // removing its files.
                    let message = format!("{reason}; not resumed: {why_not}");
                    if let Err(e) = self.fail_run(from, message, None).await {
                        warn!(run_id = %from, error = %e, "failing the run taken over failed");
                    }
                }
                info!(table = %key, taken_over = %from, %run_id, %reason, "table taken over; a new run starts");
                Ok(Started::New(
                    self.create_opened_run(&key, run_id, start.kind(), now)
                        .await?,
                ))
            }
        }
    }

    /// Another process took the table between our read and our takeover.
    async fn lost_race(&self, key: &str, from: RunId) -> PipelineError {
        let holder = match self.state.table_state(key).await {
            Ok(state) => state.lease.map_or(from, |l| l.run_id),
            Err(e) => return e.into(),
        };
        StateError::AlreadyRunning {
            table_key: key.to_owned(),
            run_id: holder,
        }
        .into()
    }

    /// Records the takeover of `record`, whose lease this process now holds, in the run's
    /// story.
    async fn resume(
        &self,
        record: RunRecord,
        reason: String,
        now: DateTime<Utc>,
    ) -> Result<RunRecord> {
        let run_id = record.run_id;
        let total = record.plan.as_ref().map_or(0, |p| p.chunks.len());
        let done = record.chunks.len();
        let resumption = Resumption {
            at: now,
            reason: reason.clone(),
            chunks_done: u32::try_from(done).unwrap_or(u32::MAX),
            chunks_total: u32::try_from(total).unwrap_or(u32::MAX),
            by: self.local_holder(now),
            carried_out: false,
        };
        let mut resumed = self
            .state
            .update_run(
                run_id,
                Box::new(move |r| {
                    if r.status.is_terminal() {
                        return Err(format!("is {}; it is not resumed", r.status));
                    }
                    r.holder = resumption.by.clone();
                    r.resumptions.push(resumption);
                    Ok(())
                }),
            )
            .await?;
        // The update answers with the header; the chunks done are those read before.
        resumed.chunks = record.chunks;
        let record = resumed;
        warn!(%run_id, table = %record.table_key, %reason, done, total, "resuming run");
        Ok(record)
    }

    /// Removes what the dead holder of a resumed run left of the chunks it never recorded
    /// done (finished files of a chunk cut off before its record, unfinished uploads): those
    /// chunks are extracted again, and nothing of theirs may stay where readers look. The
    /// done chunks' files stay. `record` is the whole run (with its chunk outcomes).
    pub async fn remove_leftovers(&self, record: &RunRecord) {
        if let Some(plan) = &record.plan {
            let kept: BTreeSet<String> = record
                .chunks
                .values()
                .flat_map(|c| c.files.iter().map(|f| f.key.clone()))
                .collect();
            self.remove_run_files(record.run_id, plan, &kept, false)
                .await;
        }
    }

    /// Keeps `run_id`'s lease of `table_key` alive while the returned guard lives: renews it
    /// at once and then every quarter of the lease TTL, so it lapses within the TTL once this
    /// process dies. Every piece of live work holds one: a local run, and in Lambda each
    /// extract and finalize invocation.
    pub fn keep_lease(&self, table_key: String, run_id: RunId) -> LeaseKeeper {
        let state = self.state.clone();
        let ttl = self.options.lease_ttl;
        let every = (ttl / 4)
            .to_std()
            .unwrap_or(std::time::Duration::from_secs(30))
            .max(std::time::Duration::from_millis(100));
        let task = tokio::spawn(
            async move {
                loop {
                    match state.renew_lease(&table_key, run_id, Utc::now() + ttl).await {
                        Ok(true) => {}
                        Ok(false) => {
                            info!(%run_id, table = %table_key, "the run no longer holds its table's lease (it ended, or was taken over); renewals stop");
                            break;
                        }
                        Err(e) => {
                            warn!(%run_id, table = %table_key, error = %e, "renewing the lease failed; retrying")
                        }
                    }
                    tokio::time::sleep(every).await;
                }
            }
            .in_current_span(),
        );
        LeaseKeeper(AbortOnDrop(task))
    }
}

/// Renews a run's lease while it lives (see [`Pipeline::keep_lease`]).
pub struct LeaseKeeper(#[allow(dead_code)] AbortOnDrop);
