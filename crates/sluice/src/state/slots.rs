//! A source's connection slots as the pipeline holds them (`connection.max_connections`):
//! wait for a free slot, hold it for as long as a connection to the source is open, and give
//! it back on every path.
//!
//! The slots live in the state store ([`SlotStore::acquire_source_slot`]), so the cap holds
//! across everything that shares it: concurrent Lambda invocations, several local runs, any
//! mix of runs and tables of one source. A slot is taken with an expiry and renewed while its
//! holder works, rather than taken once for the longest a chunk may run: a local chunk has no
//! time bound at all, and a holder that dies (a killed process, a Lambda that timed out
//! hard) should block its slot for minutes, not for the longest chunk anyone might run. A
//! holder whose renewal fails past its own expiry stops its work ([`SlotGuard::hold`])
//! rather than keep a connection open beside the one that took its slot over.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use thiserror::Error;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::{HeldSlot, SlotAcquire, SlotHolder, StateError, StateStore};

/// First pause while every slot is busy; each further pause doubles, up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(200);
/// Longest pause between two looks at a busy source: a freed slot waits at most this long
/// for its next holder, and a source with many waiters is read at most this often by each.
const MAX_PAUSE: Duration = Duration::from_secs(2);
/// Holders named in a busy error; the rest are counted.
const NAMED_HOLDERS: usize = 3;

#[derive(Debug, Error)]
pub enum SlotError {
    #[error(
        "source '{source_name}': all {slots} connections that connection.max_connections allows stayed busy for {}s{}; nothing was read: raise connection.max_connections, or start fewer runs of this source at once",
        waited.as_secs(),
        holders_text(holders)
    )]
    Busy {
        source_name: String,
        slots: u32,
        waited: Duration,
        holders: Vec<HeldSlot>,
    },
    #[error(
        "source '{source_name}': {holder} lost its connection slot {slot} (connection.max_connections): it could not be renewed before it expired, and the work stopped rather than read beside whoever takes the slot next"
    )]
    Lost {
        source_name: String,
        slot: u32,
        holder: SlotHolder,
    },
    #[error(transparent)]
    State(#[from] StateError),
}

fn holders_text(holders: &[HeldSlot]) -> String {
    if holders.is_empty() {
        return String::new();
    }
    let mut named: Vec<String> = holders
        .iter()
        .take(NAMED_HOLDERS)
        .map(|h| format!("{} until {}", h.holder, h.expires_at.format("%H:%M:%SZ")))
        .collect();
    let more = holders.len().saturating_sub(NAMED_HOLDERS);
    if more > 0 {
        named.push(format!("{more} more"));
    }
    format!(" (held by {})", named.join(", "))
}

/// How slots are taken and kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotTiming {
    /// How long a slot stays held without renewal; its holder renews it every third of this.
    pub ttl: Duration,
    /// Longest wait for a free slot before giving up with [`SlotError::Busy`].
    pub wait: Duration,
}

/// A number below `bound` (0 when `bound` is 0), random enough to spread racers and pauses:
/// std's hasher keys are seeded randomly per thread and differ per instance.
pub(crate) fn random_below(bound: usize) -> usize {
    use std::hash::BuildHasher;
    if bound == 0 {
        return 0;
    }
    let random = std::collections::hash_map::RandomState::new().hash_one(Instant::now());
    usize::try_from(random % bound as u64).unwrap_or(0)
}

/// Half of `pause` plus a random part of the other half, so waiters that found the source
/// busy together do not all look again together.
fn jittered(pause: Duration) -> Duration {
    let half = pause / 2;
    let millis = usize::try_from(half.as_millis()).unwrap_or(usize::MAX);
    half + Duration::from_millis(random_below(millis.saturating_add(1)) as u64)
}

/// Takes one of `slots` connection slots of `source` for `holder`, waiting while all are busy
/// (pauses of 200 ms doubling to 2 s, with jitter) for at most `timing.wait`. The slot is
/// renewed in the background until the guard is released or dropped.
///
/// A caller cancelled in the middle of a store call may leave a slot taken that nobody
/// renews: it lapses after `timing.ttl`.
pub async fn acquire(
    state: Arc<dyn StateStore>,
    source: &str,
    slots: u32,
    holder: SlotHolder,
    timing: SlotTiming,
) -> Result<SlotGuard, SlotError> {
    let started = Instant::now();
    let ttl = chrono::Duration::from_std(timing.ttl).unwrap_or(chrono::Duration::minutes(2));
    let mut pause = FIRST_PAUSE;
    let mut told = false;
    loop {
        let (asked, now) = (Instant::now(), Utc::now());
        let taken = state
            .acquire_source_slot(source, slots, &holder, now, now + ttl)
            .await?;
        let waited = started.elapsed();
        match taken {
            SlotAcquire::Taken(slot) => {
                info!(
                    source,
                    slot,
                    slots,
                    waited_ms = waited.as_millis() as u64,
                    run_id = %holder.run_id,
                    chunk = holder.chunk,
                    "source slot taken"
                );
                return Ok(SlotGuard::start(state, source, slot, holder, timing, asked));
            }
            SlotAcquire::Busy(holders) => {
                if waited >= timing.wait {
                    warn!(
                        source,
                        slots,
                        waited_ms = waited.as_millis() as u64,
                        run_id = %holder.run_id,
                        chunk = holder.chunk,
                        "every source slot stayed busy; giving up"
                    );
                    return Err(SlotError::Busy {
                        source_name: source.to_owned(),
                        slots,
                        waited,
                        holders,
                    });
                }
                if !told {
                    told = true;
                    info!(
                        source,
                        slots,
                        run_id = %holder.run_id,
                        chunk = holder.chunk,
                        busy = holders.len(),
                        "every source slot is busy; waiting for one"
                    );
                }
                tokio::time::sleep(jittered(pause).min(timing.wait - waited)).await;
                pause = (pause * 2).min(MAX_PAUSE);
            }
        }
    }
}

/// A held source slot. [`SlotGuard::release`] gives it back; dropping it (a cancelled or
/// panicking holder) gives it back in the background, and failing that it lapses after the
/// slot's ttl.
pub struct SlotGuard {
    state: Arc<dyn StateStore>,
    source: String,
    slot: u32,
    holder: SlotHolder,
    taken: Instant,
    renewer: tokio::task::JoinHandle<()>,
    lost: watch::Receiver<bool>,
    released: bool,
}

impl SlotGuard {
    fn start(
        state: Arc<dyn StateStore>,
        source: &str,
        slot: u32,
        holder: SlotHolder,
        timing: SlotTiming,
        asked: Instant,
    ) -> SlotGuard {
        let (lost_tx, lost) = watch::channel(false);
        let renewer = tokio::spawn(renew(
            state.clone(),
            source.to_owned(),
            slot,
            holder.clone(),
            timing.ttl,
            asked + timing.ttl,
            lost_tx,
        ));
        SlotGuard {
            state,
            source: source.to_owned(),
            slot,
            holder,
            taken: Instant::now(),
            renewer,
            lost,
            released: false,
        }
    }

    /// Runs `work` while the slot is held: if the slot is lost first, `work` is dropped (its
    /// connection with it) and the answer is [`SlotError::Lost`].
    pub async fn hold<T, E: From<SlotError>>(
        &self,
        work: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        let mut lost = self.lost.clone();
        tokio::select! {
            result = work => result,
            // A renewer that ended without losing the slot (it cannot, short of a panic) never
            // resolves this branch.
            Ok(_) = lost.wait_for(|lost| *lost) => Err(SlotError::Lost {
                source_name: self.source.clone(),
                slot: self.slot,
                holder: self.holder.clone(),
            }
            .into()),
        }
    }

    /// Gives the slot back. A failure is logged: the slot then lapses after its ttl.
    pub async fn release(mut self) {
        self.released = true;
        self.renewer.abort();
        let result = self
            .state
            .release_source_slot(&self.source, self.slot, &self.holder)
            .await;
        let held_ms = self.taken.elapsed().as_millis() as u64;
        match result {
            Ok(()) => debug!(
                source = %self.source,
                slot = self.slot,
                held_ms,
                run_id = %self.holder.run_id,
                chunk = self.holder.chunk,
                "source slot released"
            ),
            Err(e) => warn!(
                source = %self.source,
                slot = self.slot,
                run_id = %self.holder.run_id,
                chunk = self.holder.chunk,
                error = %e,
                "releasing a source slot failed; it lapses on its own"
            ),
        }
    }
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        self.renewer.abort();
        let (state, source, slot, holder) = (
            self.state.clone(),
            self.source.clone(),
            self.slot,
            self.holder.clone(),
        );
        // Outside a runtime nothing can be awaited: the slot lapses after its ttl.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(e) = state.release_source_slot(&source, slot, &holder).await {
                    warn!(%source, slot, run_id = %holder.run_id, chunk = holder.chunk, error = %e, "releasing a dropped source slot failed; it lapses on its own");
                }
            });
        }
    }
}

/// Renews the slot every third of `ttl` until aborted; it is held until `valid_until` (by the
/// clock of the call that last took or renewed it, counted from before that call, so never
/// later than the store's expiry). A refused renewal (another holder has
/// the slot) or none that succeeded within `ttl` (the slot may have been taken over) marks the
/// slot lost; a failed store call is tried again at the next tick.
async fn renew(
    state: Arc<dyn StateStore>,
    source: String,
    slot: u32,
    holder: SlotHolder,
    ttl: Duration,
    mut valid_until: Instant,
    lost: watch::Sender<bool>,
) {
    // Never a busy loop, whatever ttl a caller sets.
    let every = (ttl / 3).max(Duration::from_millis(100));
    let chrono_ttl = chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::minutes(2));
    loop {
        tokio::time::sleep(every).await;
        let asked = Instant::now();
        match state
            .renew_source_slot(&source, slot, &holder, Utc::now() + chrono_ttl)
            .await
        {
            Ok(true) => valid_until = asked + ttl,
            Ok(false) => {
                warn!(%source, slot, run_id = %holder.run_id, chunk = holder.chunk, "source slot was taken over");
                let _ = lost.send(true);
                return;
            }
            Err(e) if Instant::now() < valid_until => {
                warn!(%source, slot, run_id = %holder.run_id, chunk = holder.chunk, error = %e, "renewing a source slot failed; trying again");
            }
            Err(e) => {
                warn!(%source, slot, run_id = %holder.run_id, chunk = holder.chunk, error = %e, "a source slot expired before it could be renewed");
                let _ = lost.send(true);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_are_jittered_within_half_and_whole() {
        for pause in [FIRST_PAUSE, MAX_PAUSE] {
            for _ in 0..100 {
                let p = jittered(pause);
                assert!(p >= pause / 2 && p <= pause, "{p:?} for {pause:?}");
            }
        }
        assert_eq!(random_below(0), 0);
        assert!((0..100).all(|_| random_below(3) < 3));
    }
}
