//! The `StateStore` port's contract, one suite run against every store: the local JSON files
//! and DynamoDB (a real moto server). Each promise is a generic test body over
//! `Arc<dyn StateStore>`; the `contract!` macro instantiates it once per store.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::any::Any;
use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use sluice::state::dynamo::DynamoStateStore;
use sluice::state::local::LocalStateStore;
use sluice::state::prelude::*;
use sluice::state::{ChunkStart, Lease, SlotAcquire, SlotHolder, StateError};
use sluice_core::external_function::batch::{BatchRecord, BatchRow};
use sluice_core::plan::ChunkRange;
use sluice_core::run::{ChunkOutcome, FileEntry};
use sluice_core::{Config, Engine, RunId, RunPlan, RunRecord, RunStatus, ScalarValue};
use sluice_tests::moto::{MotoServer, unique_name};

type Store = Arc<dyn StateStore>;

/// A store and whatever must live as long as it (the local store's directory).
async fn local_store() -> (Store, Box<dyn Any>) {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStateStore::open(dir.path()).unwrap();
    (Arc::new(store), Box::new(dir))
}

async fn dynamo_store() -> (Store, Box<dyn Any>) {
    // Serial, as DynamoDB serializes writes to one item (see the fixture).
    let moto = MotoServer::shared_serial();
    let store = DynamoStateStore::new(&moto.sdk_config().await, unique_name("state"));
    assert!(store.create_table().await.unwrap());
    assert!(
        !store.create_table().await.unwrap(),
        "creating an existing table is a no-op"
    );
    (Arc::new(store), Box::new(()))
}

macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod local {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let (store, _guard) = super::local_store().await;
                    super::$name(store).await;
                }
            )*
        }
        mod dynamo {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let (store, _guard) = super::dynamo_store().await;
                    super::$name(store).await;
                }
            )*
        }
    };
}

contract!(
    exactly_one_of_concurrent_runs_takes_the_lease,
    an_expired_lease_is_taken_over_and_the_crashed_run_failed,
    the_watermark_is_committed_only_by_the_lease_holder_at_full_precision,
    a_duplicated_chunk_done_is_counted_once,
    the_last_chunk_signal_fires_once_under_concurrent_completion,
    status_never_moves_backwards_and_refused_updates_change_nothing,
    records_round_trip_and_list_newest_first,
    a_batch_is_claimed_once_and_round_trips,
    a_chunk_start_is_claimed_once_and_started_once,
    a_lease_is_renewed_only_by_its_holder,
    a_source_has_at_most_its_number_of_slot_holders,
    an_expired_source_slot_is_taken_over_and_a_renewed_one_is_not,
    concurrent_slot_acquirers_never_exceed_the_slots,
    a_lease_is_taken_over_only_from_its_holder_and_by_one_taker,
    a_header_holds_no_chunks_and_one_chunk_reads_alone,
    a_batch_gold_has_one_holder_at_a_time_and_is_carried_on_by_a_retry,
);

/// Snowflake's retried POST of one batch must find it claimed, however many race. The id has
/// the real shape (`…:1:1:0:0`): opaque text, stored under its hash.
async fn a_batch_is_claimed_once_and_round_trips(store: Store) {
    let id = sluice_tests::stack::real_shape_batch_id();
    assert_eq!(store.get_batch(&id).await.unwrap(), None);
    let claim = BatchRecord::claim(&id, Utc::now());
    let claims = futures::future::join_all((0..4).map(|_| store.create_batch(&claim))).await;
    let won = claims.iter().filter(|c| matches!(c, Ok(true))).count();
    assert_eq!(won, 1, "{claims:?}");
    assert!(claims.iter().all(Result::is_ok), "{claims:?}");
    assert_eq!(store.get_batch(&id).await.unwrap(), Some(claim.clone()));
    let run_id = RunId::new();
    let started = BatchRecord {
        started: true,
        rows: vec![
            BatchRow {
                row: 0,
                run_id: Some(run_id),
                answer: None,
            },
            BatchRow {
                row: 1,
                run_id: None,
                answer: Some(
                    sluice_core::external_function::answer::RowError::new("no table 'x'").into(),
                ),
            },
        ],
        ..claim
    };
    store.save_batch(&started).await.unwrap();
    assert_eq!(store.get_batch(&id).await.unwrap(), Some(started.clone()));
    // A later claim of the same id still loses, and changes nothing.
    assert!(
        !store
            .create_batch(&BatchRecord::claim(&id, Utc::now()))
            .await
            .unwrap()
    );
    assert_eq!(store.get_batch(&id).await.unwrap(), Some(started));
}

/// A batch's gold is run by one holder at a time: of several racing claims one wins; the
/// winner's retry (same holder) carries on with the steps recorded; another holder gets it
/// only once the claim lapsed; a save by a holder that lost it is refused; a finished record
/// is never claimed again.
async fn a_batch_gold_has_one_holder_at_a_time_and_is_carried_on_by_a_retry(store: Store) {
    use sluice::state::GoldClaim;
    use sluice_core::gold::{GoldRecord, GoldStatus, GoldStep};
    let id = sluice_tests::stack::real_shape_batch_id();
    let now = Utc::now();
    let step = |procedure: &str| GoldStep {
        procedure: procedure.into(),
        level: 1,
        inputs: vec!["shop/public.orders".into()],
        status: GoldStatus::Pending,
        detail: None,
        ended_at: None,
    };
    let claim = |holder: &str, until: DateTime<Utc>| GoldRecord {
        batch_id: id.clone(),
        holder: holder.into(),
        claimed_until: until,
        steps: vec![step("GOLD.A"), step("GOLD.B")],
        finished: false,
        updated_at: now,
    };
    assert_eq!(store.get_gold(&id).await.unwrap(), None);
    let holders = ["run-1", "run-2", "run-3", "run-4"];
    let racing: Vec<GoldRecord> = holders
        .iter()
        .map(|h| claim(h, now + Duration::minutes(5)))
        .collect();
    let claims = futures::future::join_all(racing.iter().map(|c| store.claim_gold(c, now))).await;
    let won: Vec<&GoldRecord> = claims
        .iter()
        .filter_map(|c| match c {
            Ok(GoldClaim::Claimed(r)) => Some(r),
            _ => None,
        })
        .collect();
    assert_eq!(won.len(), 1, "{claims:?}");
    assert!(
        claims
            .iter()
            .all(|c| matches!(c, Ok(GoldClaim::Claimed(_) | GoldClaim::Held(_)))),
        "{claims:?}"
    );
    let mut held = won[0].clone();
    let winner = held.holder.clone();
    let loser = holders.iter().find(|h| **h != winner).unwrap().to_string();

    // The holder records a step; a retry of its event carries on from there.
    held.steps[0].status = GoldStatus::Done;
    store.save_gold(&held).await.unwrap();
    let retried = store
        .claim_gold(&claim(&winner, now + Duration::minutes(5)), now)
        .await
        .unwrap();
    let GoldClaim::Claimed(retried) = retried else {
        panic!("the holder's retry was refused: {retried:?}");
    };
    assert_eq!(
        retried.steps[0].status,
        GoldStatus::Done,
        "the retry starts over"
    );

    // Another holder waits while the claim holds, and cannot write.
    let other = store
        .claim_gold(&claim(&loser, now + Duration::minutes(5)), now)
        .await
        .unwrap();
    assert!(
        matches!(other, GoldClaim::Held(ref r) if r.holder == winner),
        "{other:?}"
    );
    let refused = store.save_gold(&claim(&loser, now)).await;
    assert!(
        matches!(refused, Err(StateError::GoldTakenOver { ref holder, .. }) if *holder == winner),
        "{refused:?}"
    );

    // Once the claim lapsed, the other takes it over with the steps done so far, and the
    // first holder's late save is refused.
    let later = now + Duration::minutes(6);
    let taken = store
        .claim_gold(&claim(&loser, later + Duration::minutes(5)), later)
        .await
        .unwrap();
    let GoldClaim::Claimed(mut taken) = taken else {
        panic!("a lapsed claim was not taken over: {taken:?}");
    };
    assert_eq!(taken.holder, loser);
    assert_eq!(taken.steps[0].status, GoldStatus::Done);
    assert!(matches!(
        store.save_gold(&held).await,
        Err(StateError::GoldTakenOver { .. })
    ));

    // Finished, it is never claimed again, not even after its claim lapsed.
    taken.steps[1].status = GoldStatus::Done;
    taken.finished = true;
    store.save_gold(&taken).await.unwrap();
    let much_later = later + Duration::hours(1);
    let again = store
        .claim_gold(
            &claim("run-9", much_later + Duration::minutes(5)),
            much_later,
        )
        .await
        .unwrap();
    assert!(
        matches!(again, GoldClaim::Finished(ref r) if r.finished),
        "{again:?}"
    );
    assert_eq!(store.get_gold(&id).await.unwrap(), Some(taken));
}

/// A source name no other test uses.
fn source_name() -> String {
    format!("src_{}", RunId::new().to_string().to_lowercase())
}

/// The slot `holder` took; panics on a busy answer.
fn taken(answer: SlotAcquire) -> u32 {
    match answer {
        SlotAcquire::Taken(slot) => slot,
        SlotAcquire::Busy(held) => panic!("expected a slot, every one is busy: {held:?}"),
    }
}

/// N holders take the N slots; the next is refused and told who holds them; a retried
/// acquire by a holder is its own slot again; a release or renewal by anyone but the holder
/// changes nothing; a released slot is taken again; sources do not share slots.
async fn a_source_has_at_most_its_number_of_slot_holders(store: Store) {
    let source = source_name();
    let now = Utc::now();
    let until = now + Duration::minutes(5);
    let run_id = RunId::new();
    let holders: Vec<SlotHolder> = (0..3).map(|c| SlotHolder::chunk(run_id, c)).collect();
    let mut slots = Vec::new();
    for holder in &holders {
        slots.push(taken(
            store
                .acquire_source_slot(&source, 3, holder, now, until)
                .await
                .unwrap(),
        ));
    }
    let mut distinct = slots.clone();
    distinct.sort_unstable();
    assert_eq!(
        distinct,
        vec![0, 1, 2],
        "three holders, three different slots"
    );

    let fourth = SlotHolder::plan(RunId::new());
    match store
        .acquire_source_slot(&source, 3, &fourth, now, until)
        .await
        .unwrap()
    {
        SlotAcquire::Busy(held) => {
            let mut held: Vec<(u32, SlotHolder)> =
                held.into_iter().map(|h| (h.slot, h.holder)).collect();
            held.sort_by_key(|(slot, _)| *slot);
            let mut expected: Vec<(u32, SlotHolder)> =
                slots.iter().copied().zip(holders.iter().cloned()).collect();
            expected.sort_by_key(|(slot, _)| *slot);
            assert_eq!(held, expected, "the busy answer names the live holders");
        }
        other => panic!("a fourth holder of three slots: {other:?}"),
    }
    // A holder asking again (a retried call) gets its own slot back, not a second one.
    assert_eq!(
        taken(
            store
                .acquire_source_slot(&source, 3, &holders[1], now, until)
                .await
                .unwrap()
        ),
        slots[1]
    );
    assert!(matches!(
        store
            .acquire_source_slot(&source, 3, &fourth, now, until)
            .await
            .unwrap(),
        SlotAcquire::Busy(_)
    ));

    // Releases and renewals by others, even a second attempt at the same chunk, change nothing.
    let twin = SlotHolder::chunk(run_id, 0);
    for slot in 0..3 {
        store
            .release_source_slot(&source, slot, &fourth)
            .await
            .unwrap();
        store
            .release_source_slot(&source, slot, &twin)
            .await
            .unwrap();
        assert!(
            !store
                .renew_source_slot(&source, slot, &twin, until + Duration::hours(1))
                .await
                .unwrap()
        );
    }
    // The holder of one slot releasing another is not a release of either.
    store
        .release_source_slot(&source, slots[1], &holders[0])
        .await
        .unwrap();
    assert!(matches!(
        store
            .acquire_source_slot(&source, 3, &twin, now, until)
            .await
            .unwrap(),
        SlotAcquire::Busy(held) if held.len() == 3
    ));
    for (holder, slot) in holders.iter().zip(&slots) {
        assert!(
            store
                .renew_source_slot(&source, *slot, holder, until)
                .await
                .unwrap(),
            "{holder} still holds slot {slot}"
        );
    }

    // Another source has its own slots.
    let other = source_name();
    assert_eq!(
        taken(
            store
                .acquire_source_slot(&other, 1, &fourth, now, until)
                .await
                .unwrap()
        ),
        0
    );

    // A released slot is free again: the next holder takes exactly that one.
    store
        .release_source_slot(&source, slots[1], &holders[1])
        .await
        .unwrap();
    assert!(
        !store
            .renew_source_slot(&source, slots[1], &holders[1], until)
            .await
            .unwrap(),
        "a released slot is not renewed back"
    );
    assert_eq!(
        taken(
            store
                .acquire_source_slot(&source, 3, &twin, now, until)
                .await
                .unwrap()
        ),
        slots[1]
    );
    assert!(matches!(
        store
            .acquire_source_slot(&source, 3, &fourth, now, until)
            .await
            .unwrap(),
        SlotAcquire::Busy(_)
    ));
    // The old holder's late release does not free its successor's slot.
    store
        .release_source_slot(&source, slots[1], &holders[1])
        .await
        .unwrap();
    assert!(matches!(
        store
            .acquire_source_slot(&source, 3, &fourth, now, until)
            .await
            .unwrap(),
        SlotAcquire::Busy(_)
    ));
    // A larger cap opens more slots beside the held ones.
    assert_eq!(
        taken(
            store
                .acquire_source_slot(&source, 4, &fourth, now, until)
                .await
                .unwrap()
        ),
        3
    );
}

/// A holder that died leaves its slot only until its expiry; one that renews keeps it; once
/// taken over, the old holder can neither renew nor release it.
async fn an_expired_source_slot_is_taken_over_and_a_renewed_one_is_not(store: Store) {
    let source = source_name();
    let now = Utc::now();
    let dead = SlotHolder::chunk(RunId::new(), 4);
    assert_eq!(
        taken(
            store
                .acquire_source_slot(&source, 1, &dead, now, now + Duration::minutes(2))
                .await
                .unwrap()
        ),
        0
    );
    let next = SlotHolder::chunk(RunId::new(), 0);
    let early = now + Duration::minutes(1);
    match store
        .acquire_source_slot(&source, 1, &next, early, early + Duration::minutes(2))
        .await
        .unwrap()
    {
        SlotAcquire::Busy(held) => {
            assert_eq!(held.len(), 1);
            assert_eq!(held[0].holder, dead);
            assert_eq!(held[0].expires_at, now + Duration::minutes(2));
        }
        other => panic!("a live slot is not taken over: {other:?}"),
    }
    let late = now + Duration::minutes(3);
    assert_eq!(
        taken(
            store
                .acquire_source_slot(&source, 1, &next, late, late + Duration::minutes(2))
                .await
                .unwrap()
        ),
        0,
        "an expired slot is taken over"
    );
    assert!(
        !store
            .renew_source_slot(&source, 0, &dead, late + Duration::hours(1))
            .await
            .unwrap(),
        "the dead holder cannot renew a slot taken over"
    );
    store.release_source_slot(&source, 0, &dead).await.unwrap();
    let third = SlotHolder::plan(RunId::new());
    match store
        .acquire_source_slot(&source, 1, &third, late, late + Duration::minutes(2))
        .await
        .unwrap()
    {
        SlotAcquire::Busy(held) => assert_eq!(held[0].holder, next),
        other => panic!("the dead holder's release freed its successor's slot: {other:?}"),
    }
    // Renewed past the time it would have expired: still held then.
    assert!(
        store
            .renew_source_slot(&source, 0, &next, late + Duration::minutes(10))
            .await
            .unwrap()
    );
    let after_first_expiry = late + Duration::minutes(5);
    match store
        .acquire_source_slot(
            &source,
            1,
            &third,
            after_first_expiry,
            after_first_expiry + Duration::minutes(2),
        )
        .await
        .unwrap()
    {
        SlotAcquire::Busy(held) => {
            assert_eq!(held[0].holder, next);
            assert_eq!(held[0].expires_at, late + Duration::minutes(10));
        }
        other => panic!("a renewed slot is not taken over: {other:?}"),
    }
}

/// However many race, a slot never has two live holders and a source never more than its
/// slots: a burst takes exactly the slots there are, and holders that come and go (each
/// marking its slot in use while it holds it) never overlap on a slot or exceed the count.
async fn concurrent_slot_acquirers_never_exceed_the_slots(store: Store) {
    const SLOTS: u32 = 3;
    let source = source_name();
    let now = Utc::now();
    let burst: Vec<_> = (0..12)
        .map(|i| {
            let (store, source) = (store.clone(), source.clone());
            tokio::spawn(async move {
                let holder = SlotHolder::chunk(RunId::new(), i);
                let answer = store
                    .acquire_source_slot(&source, SLOTS, &holder, now, now + Duration::minutes(5))
                    .await
                    .unwrap();
                (holder, answer)
            })
        })
        .collect();
    let mut winners = Vec::new();
    for attempt in burst {
        if let (holder, SlotAcquire::Taken(slot)) = attempt.await.unwrap() {
            winners.push((slot, holder));
        }
    }
    let mut won: Vec<u32> = winners.iter().map(|(slot, _)| *slot).collect();
    won.sort_unstable();
    assert_eq!(
        won,
        vec![0, 1, 2],
        "exactly the three slots are taken, once each"
    );
    for (slot, holder) in &winners {
        store
            .release_source_slot(&source, *slot, holder)
            .await
            .unwrap();
    }

    // Holders coming and going: 8 workers, 4 turns each, against 3 slots.
    let in_use = Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
    let peak = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let workers: Vec<_> = (0..8u32)
        .map(|worker| {
            let (store, source) = (store.clone(), source.clone());
            let (in_use, peak) = (in_use.clone(), peak.clone());
            tokio::spawn(async move {
                for turn in 0..4 {
                    let holder = SlotHolder::chunk(RunId::new(), worker * 10 + turn);
                    let slot = loop {
                        let now = Utc::now();
                        match store
                            .acquire_source_slot(
                                &source,
                                SLOTS,
                                &holder,
                                now,
                                now + Duration::minutes(5),
                            )
                            .await
                            .unwrap()
                        {
                            SlotAcquire::Taken(slot) => break slot,
                            SlotAcquire::Busy(held) => {
                                assert!(held.len() <= SLOTS as usize, "{held:?}");
                                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                            }
                        }
                    };
                    {
                        let mut in_use = in_use.lock().unwrap();
                        assert!(slot < SLOTS, "slot {slot} of {SLOTS}");
                        assert!(in_use.insert(slot), "slot {slot} has two live holders");
                        peak.fetch_max(in_use.len(), std::sync::atomic::Ordering::SeqCst);
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    assert!(in_use.lock().unwrap().remove(&slot));
                    store
                        .release_source_slot(&source, slot, &holder)
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.unwrap();
    }
    let peak = peak.load(std::sync::atomic::Ordering::SeqCst);
    assert!(peak <= SLOTS as usize, "{peak} holders at once");
    assert!(peak >= 2, "the workers did overlap: {peak}");
}

fn key() -> String {
    format!("shop/public.t_{}", RunId::new().to_string().to_lowercase())
}

fn plan(run_id: RunId, chunks: usize) -> RunPlan {
    let config = Config::from_yaml(
        "sources:\n  - name: shop\n    engine: postgres\n    connection:\n      url: postgres://u@h/db\n\
         tables:\n  - source: shop\n    table: public.orders\n    primary_key: [id]\n    load: { mode: incremental, cursor: updated_at }\n",
        "test",
    )
    .unwrap();
    RunPlan {
        run_id,
        engine: Engine::Postgres,
        started_at: Utc::now(),
        table: config.tables[0].clone(),
        columns: vec!["id".into(), "updated_at".into()],
        cursor: None,
        partition_column: None,
        chunks: vec![ChunkRange::All; chunks],
        snapshot: None,
        casts: BTreeMap::new(),
        warnings: BTreeMap::new(),
        keyset: false,
        cdc: None,
    }
}

/// The start of a chunk is claimed by one chunk (its predecessor) and started once: the
/// claimer's retry may invoke again until the start is recorded, a duplicate after that starts
/// nothing, and another claimer never gets it, however many race.
async fn a_chunk_start_is_claimed_once_and_started_once(store: Store) {
    let missing = RunId::new();
    assert!(matches!(
        store.claim_chunk_start(missing, 2, 0, Utc::now()).await,
        Err(StateError::RunNotFound(id)) if id == missing
    ));
    assert!(matches!(
        store.chunk_started(missing, 2).await,
        Err(StateError::RunNotFound(id)) if id == missing
    ));
    let run_id = extracting_run(&store, &key(), 6).await;
    let now = Utc::now();
    assert_eq!(
        store.claim_chunk_start(run_id, 2, 0, now).await.unwrap(),
        ChunkStart::Claimed
    );
    // The same claimer again at once is a duplicate delivery running alongside: it starts
    // nothing. A retry once the claim is RECLAIM_AFTER old (its first attempt died before
    // invoking, and Lambda retries a minute later): still its claim.
    assert_eq!(
        store
            .claim_chunk_start(run_id, 2, 0, now + Duration::seconds(1))
            .await
            .unwrap(),
        ChunkStart::ClaimedBy(0)
    );
    let retry = now + sluice::state::RECLAIM_AFTER;
    assert_eq!(
        store.claim_chunk_start(run_id, 2, 0, retry).await.unwrap(),
        ChunkStart::Claimed
    );
    // Re-claimed, its age counts from the retry.
    assert_eq!(
        store
            .claim_chunk_start(run_id, 2, 0, retry + Duration::seconds(29))
            .await
            .unwrap(),
        ChunkStart::ClaimedBy(0)
    );
    assert_eq!(
        store
            .claim_chunk_start(run_id, 2, 1, retry + Duration::hours(1))
            .await
            .unwrap(),
        ChunkStart::ClaimedBy(0)
    );
    store.chunk_started(run_id, 2).await.unwrap();
    store.chunk_started(run_id, 2).await.unwrap();
    for claimer in [0, 1] {
        assert_eq!(
            store
                .claim_chunk_start(run_id, 2, claimer, Utc::now() + Duration::hours(1))
                .await
                .unwrap(),
            ChunkStart::Started
        );
    }

    // Racing claimers of one chunk, each twice at once: exactly one claim wins (a claimer's
    // second, concurrent delivery does not win again).
    let claims: Vec<_> = (0..8u32)
        .chain(0..8u32)
        .map(|claimer| {
            let store = store.clone();
            tokio::spawn(async move {
                (
                    claimer,
                    store
                        .claim_chunk_start(run_id, 5, claimer, Utc::now())
                        .await
                        .unwrap(),
                )
            })
        })
        .collect();
    let mut winners = std::collections::BTreeSet::new();
    let mut refused_by = std::collections::BTreeSet::new();
    for claim in claims {
        match claim.await.unwrap() {
            (claimer, ChunkStart::Claimed) => {
                assert!(winners.insert(claimer), "{claimer} won twice");
            }
            (_, ChunkStart::ClaimedBy(holder)) => {
                refused_by.insert(holder);
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    assert!(refused_by.is_subset(&winners), "{refused_by:?} {winners:?}");

    // Claims are not part of the record and survive its updates; a run that ended keeps them.
    let failed = store
        .update_run(
            run_id,
            Box::new(|r| {
                r.fail("stopped".into(), None, Utc::now());
                Ok(())
            }),
        )
        .await
        .unwrap();
    assert!(failed.chunks.is_empty());
    assert_eq!(
        store
            .claim_chunk_start(run_id, 2, 0, Utc::now())
            .await
            .unwrap(),
        ChunkStart::Started
    );
    let winner = *winners.first().unwrap();
    assert_eq!(
        store
            .claim_chunk_start(run_id, 5, winner + 100, Utc::now())
            .await
            .unwrap(),
        ChunkStart::ClaimedBy(winner)
    );
    // Chunks done are recorded as before.
    assert!(matches!(
        store.record_chunk_done(run_id, 2, &outcome(2, 1)).await,
        Err(StateError::Refused { .. })
    ));
}

/// A run of `chunks` chunks, recorded and moved to EXTRACTING.
async fn extracting_run(store: &Store, table_key: &str, chunks: usize) -> RunId {
    let run_id = RunId::new();
    let mut record = RunRecord::new(run_id, table_key.to_owned(), Utc::now());
    record.plan = Some(plan(run_id, chunks));
    store.create_run(&record).await.unwrap();
    store
        .update_run(
            run_id,
            Box::new(|r| r.transition(RunStatus::Extracting, Utc::now())),
        )
        .await
        .unwrap();
    run_id
}

fn outcome(chunk: u32, rows: u64) -> ChunkOutcome {
    ChunkOutcome {
        rows,
        bytes: rows * 10,
        files: vec![FileEntry {
            key: format!("postgres/shop/public.orders/part-{chunk}.parquet"),
            chunk,
            part: 0,
            rows,
            bytes: rows * 10,
        }],
        schema: Vec::new(),
        warnings: BTreeMap::from([("c: zero date written as NULL".to_owned(), 2)]),
        seconds: 0.5,
        source_rows: Some(rows),
        cdc_reached: None,
    }
}

async fn exactly_one_of_concurrent_runs_takes_the_lease(store: Store) {
    let table = key();
    let now = Utc::now();
    let attempts: Vec<_> = (0..8)
        .map(|_| {
            let (store, table) = (store.clone(), table.clone());
            tokio::spawn(async move {
                let run_id = RunId::new();
                let result = store
                    .acquire_lease(&table, run_id, now, now + Duration::minutes(5))
                    .await;
                (run_id, result)
            })
        })
        .collect();
    let mut winners = Vec::new();
    let mut refused = Vec::new();
    for attempt in attempts {
        match attempt.await.unwrap() {
            (run_id, Ok(None)) => winners.push(run_id),
            (_, Err(StateError::AlreadyRunning { run_id, table_key })) => {
                assert_eq!(table_key, table);
                refused.push(run_id);
            }
            (_, Err(other)) => panic!("expected AlreadyRunning, got {other}"),
            (_, Ok(Some(taken))) => panic!("a free table has no lease to take over: {taken}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one run proceeds");
    assert_eq!(refused.len(), 7);
    assert!(
        refused.iter().all(|holder| *holder == winners[0]),
        "the refusal names the running run"
    );
    let state = store.table_state(&table).await.unwrap();
    assert_eq!(state.lease.unwrap().run_id, winners[0]);
    // Taking the lease again is harmless for its holder, and a release by anyone else is not one.
    store
        .acquire_lease(&table, winners[0], now, now + Duration::minutes(5))
        .await
        .unwrap();
    store.release_lease(&table, RunId::new()).await.unwrap();
    assert!(store.table_state(&table).await.unwrap().lease.is_some());
    store.release_lease(&table, winners[0]).await.unwrap();
    assert_eq!(store.table_state(&table).await.unwrap().lease, None);
}

async fn an_expired_lease_is_taken_over_and_the_crashed_run_failed(store: Store) {
    let table = key();
    let now = Utc::now();
    let crashed = extracting_run(&store, &table, 2).await;
    store
        .acquire_lease(&table, crashed, now, now + Duration::minutes(5))
        .await
        .unwrap();
    let next = RunId::new();
    match store
        .acquire_lease(
            &table,
            next,
            now + Duration::minutes(4),
            now + Duration::minutes(9),
        )
        .await
    {
        Err(StateError::AlreadyRunning { run_id, .. }) => assert_eq!(run_id, crashed),
        other => panic!("a live lease is not taken over: {other:?}"),
    }
    let later = now + Duration::minutes(6);
    let taken_over = store
        .acquire_lease(&table, next, later, later + Duration::minutes(5))
        .await
        .unwrap();
    assert_eq!(
        taken_over,
        Some(crashed),
        "the taker learns whose lease it took"
    );
    let record = store.get_run(crashed).await.unwrap().unwrap();
    assert_eq!(record.status, RunStatus::Failed);
    let error = record.error.unwrap();
    assert!(error.message.contains("lease expired"), "{}", error.message);
    assert!(
        error.message.contains(&next.to_string()),
        "{}",
        error.message
    );
    assert_eq!(error.phase, RunStatus::Extracting);
    let lease = store.table_state(&table).await.unwrap().lease.unwrap();
    assert_eq!(lease.run_id, next);
    assert_eq!(lease.expires_at, later + Duration::minutes(5));
}

/// A run judged dead is taken over by exactly one of the processes that race for it, even
/// when every one resumes that same run; only from the lease as it was seen (a holder that
/// renewed meanwhile keeps it); and the run's record is left to the taker (resumed or failed).
async fn a_lease_is_taken_over_only_from_its_holder_and_by_one_taker(store: Store) {
    let table = key();
    let now = Utc::now();
    let dead = extracting_run(&store, &table, 2).await;
    store
        .acquire_lease(&table, dead, now, now + Duration::minutes(5))
        .await
        .unwrap();
    let seen = store.table_state(&table).await.unwrap().lease.unwrap();
    let stranger = Lease {
        run_id: RunId::new(),
        ..seen.clone()
    };
    assert!(
        !store
            .take_over_lease(&table, &stranger, RunId::new(), now + Duration::minutes(5))
            .await
            .unwrap(),
        "only the holder's lease is taken"
    );
    // Eight processes resume the dead run at once: one wins.
    let takers: Vec<_> = (0..8)
        .map(|_| {
            let (store, table, seen) = (store.clone(), table.clone(), seen.clone());
            tokio::spawn(async move {
                store
                    .take_over_lease(&table, &seen, dead, now + Duration::minutes(7))
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut winners = 0;
    for taker in takers {
        winners += usize::from(taker.await.unwrap());
    }
    assert_eq!(winners, 1, "exactly one taker wins");
    let lease = store.table_state(&table).await.unwrap().lease.unwrap();
    assert_eq!(
        (lease.run_id, lease.expires_at),
        (dead, now + Duration::minutes(7))
    );
    let record = store.get_run(dead).await.unwrap().unwrap();
    assert_eq!(
        record.status,
        RunStatus::Extracting,
        "the record is the taker's to change"
    );
    // The lease as first seen is gone: a late taker that read it takes nothing.
    assert!(
        !store
            .take_over_lease(&table, &seen, RunId::new(), now + Duration::minutes(9))
            .await
            .unwrap()
    );
    // A holder that renewed keeps its lease from a taker that read it before the renewal.
    assert!(
        store
            .renew_lease(&table, dead, now + Duration::minutes(11))
            .await
            .unwrap()
    );
    assert!(
        !store
            .take_over_lease(&table, &lease, RunId::new(), now + Duration::minutes(12))
            .await
            .unwrap(),
        "renewed since it was read"
    );
    // Moved to a new run (the dead one is not resumed): the new run holds it.
    let current = store.table_state(&table).await.unwrap().lease.unwrap();
    let next = RunId::new();
    assert!(
        store
            .take_over_lease(&table, &current, next, now + Duration::minutes(13))
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .table_state(&table)
            .await
            .unwrap()
            .lease
            .unwrap()
            .run_id,
        next
    );
    store.release_lease(&table, next).await.unwrap();
    let released = Lease {
        run_id: next,
        expires_at: now + Duration::minutes(13),
    };
    assert!(
        !store
            .take_over_lease(&table, &released, RunId::new(), now + Duration::minutes(14))
            .await
            .unwrap(),
        "a released lease is not taken over (it is acquired)"
    );
}

/// The header (what every step but the manifest and the story reads) carries no chunk
/// outcomes, an update answers with the header, and one chunk's outcome is read alone.
async fn a_header_holds_no_chunks_and_one_chunk_reads_alone(store: Store) {
    let run_id = extracting_run(&store, &key(), 3).await;
    store
        .record_chunk_done(run_id, 1, &outcome(1, 100))
        .await
        .unwrap();
    let header = store.get_run_header(run_id).await.unwrap().unwrap();
    assert_eq!(header.status, RunStatus::Extracting);
    assert!(header.plan.is_some());
    assert!(header.chunks.is_empty(), "{:?}", header.chunks);
    assert_eq!(
        store.chunk_outcome(run_id, 1).await.unwrap(),
        Some(outcome(1, 100))
    );
    assert_eq!(store.chunk_outcome(run_id, 2).await.unwrap(), None);
    let updated = store
        .update_run(
            run_id,
            Box::new(|r| {
                r.removed_files.push("x".into());
                Ok(())
            }),
        )
        .await
        .unwrap();
    assert!(updated.chunks.is_empty());
    assert_eq!(updated.removed_files, vec!["x".to_owned()]);
    let whole = store.get_run(run_id).await.unwrap().unwrap();
    assert_eq!(whole.chunks.len(), 1);
    assert_eq!(whole.removed_files, vec!["x".to_owned()]);
    assert!(store.get_run_header(RunId::new()).await.unwrap().is_none());
}

/// A planner renews the short lease the trigger took for it; once another run took the table
/// over, or the lease was released, renewing must not take the table back.
async fn a_lease_is_renewed_only_by_its_holder(store: Store) {
    let table = key();
    let now = Utc::now();
    let holder = RunId::new();
    assert!(
        !store
            .renew_lease(&table, holder, now + Duration::minutes(5))
            .await
            .unwrap(),
        "a table nobody leased is not taken by a renewal"
    );
    assert_eq!(store.table_state(&table).await.unwrap().lease, None);
    store
        .acquire_lease(&table, holder, now, now + Duration::seconds(30))
        .await
        .unwrap();
    assert!(
        store
            .renew_lease(&table, holder, now + Duration::minutes(10))
            .await
            .unwrap()
    );
    let lease = store.table_state(&table).await.unwrap().lease.unwrap();
    assert_eq!(
        (lease.run_id, lease.expires_at),
        (holder, now + Duration::minutes(10))
    );
    // A shorter renewal (a duplicate planner's, after the run's lease was lengthened) keeps
    // the holder's lease as far as it reached.
    assert!(
        store
            .renew_lease(&table, holder, now + Duration::minutes(1))
            .await
            .unwrap()
    );
    let lease = store.table_state(&table).await.unwrap().lease.unwrap();
    assert_eq!(
        (lease.run_id, lease.expires_at),
        (holder, now + Duration::minutes(10))
    );
    // A renewal by another run changes nothing.
    let other = RunId::new();
    assert!(
        !store
            .renew_lease(&table, other, now + Duration::hours(1))
            .await
            .unwrap()
    );
    let lease = store.table_state(&table).await.unwrap().lease.unwrap();
    assert_eq!(
        (lease.run_id, lease.expires_at),
        (holder, now + Duration::minutes(10))
    );
    // Once the lease lapsed and another run took the table, the old holder cannot renew.
    let later = now + Duration::minutes(11);
    store
        .acquire_lease(&table, other, later, later + Duration::minutes(5))
        .await
        .unwrap();
    assert!(
        !store
            .renew_lease(&table, holder, later + Duration::hours(1))
            .await
            .unwrap()
    );
    let lease = store.table_state(&table).await.unwrap().lease.unwrap();
    assert_eq!(
        (lease.run_id, lease.expires_at),
        (other, later + Duration::minutes(5))
    );
    // Nor after the holder released it.
    store.release_lease(&table, other).await.unwrap();
    assert!(
        !store
            .renew_lease(&table, other, later + Duration::hours(1))
            .await
            .unwrap()
    );
    assert_eq!(store.table_state(&table).await.unwrap().lease, None);
}

async fn the_watermark_is_committed_only_by_the_lease_holder_at_full_precision(store: Store) {
    let table = key();
    let now = Utc::now();
    let (old, new) = (RunId::new(), RunId::new());
    store
        .acquire_lease(&table, old, now, now + Duration::minutes(1))
        .await
        .unwrap();
    let later = now + Duration::minutes(2);
    store
        .acquire_lease(&table, new, later, later + Duration::minutes(1))
        .await
        .unwrap();
    let precise = ScalarValue::TimestampTz(
        DateTime::parse_from_rfc3339("2024-02-29T23:59:59.123456Z")
            .unwrap()
            .with_timezone(&Utc),
    );
    match store.commit_watermark(&table, old, &precise).await {
        Err(StateError::LeaseLost { run_id, holder, .. }) => {
            assert_eq!((run_id, holder), (old, Some(new)));
        }
        other => panic!("a run that lost its lease cannot commit: {other:?}"),
    }
    assert_eq!(store.table_state(&table).await.unwrap().watermark, None);
    store.commit_watermark(&table, new, &precise).await.unwrap();
    let state = store.table_state(&table).await.unwrap();
    assert_eq!(state.watermark, Some(precise));
    assert_eq!(state.watermark_run_id, Some(new));
    assert!(matches!(
        store.clear_watermark(&table, old).await,
        Err(StateError::LeaseLost { .. })
    ));
    store.clear_watermark(&table, new).await.unwrap();
    let state = store.table_state(&table).await.unwrap();
    assert_eq!((state.watermark, state.watermark_run_id), (None, None));
    // A key set is recorded the same way, and leaves the watermark alone.
    assert!(matches!(
        store.commit_keyset(&table, old).await,
        Err(StateError::LeaseLost { .. })
    ));
    assert_eq!(store.table_state(&table).await.unwrap().keyset_run_id, None);
    let big = ScalarValue::Int(i64::MAX);
    store.commit_watermark(&table, new, &big).await.unwrap();
    store.commit_keyset(&table, new).await.unwrap();
    let state = store.table_state(&table).await.unwrap();
    assert_eq!(
        (state.keyset_run_id, state.watermark),
        (Some(new), Some(big.clone()))
    );
    store.release_lease(&table, new).await.unwrap();
    assert!(matches!(
        store.commit_keyset(&table, RunId::new()).await,
        Err(StateError::LeaseLost { holder: None, .. })
    ));
    assert_eq!(
        store.table_state(&table).await.unwrap().keyset_run_id,
        Some(new)
    );
    assert_eq!(
        store.table_state(&table).await.unwrap().watermark,
        Some(big.clone())
    );
    assert!(matches!(
        store
            .commit_watermark(&table, new, &ScalarValue::Int(1))
            .await,
        Err(StateError::LeaseLost { holder: None, .. })
    ));
    assert_eq!(
        store.table_state(&table).await.unwrap().watermark,
        Some(big)
    );
}

async fn a_duplicated_chunk_done_is_counted_once(store: Store) {
    let run_id = extracting_run(&store, &key(), 3).await;
    let first = store
        .record_chunk_done(run_id, 1, &outcome(1, 100))
        .await
        .unwrap();
    assert!(first.newly_recorded);
    assert_eq!((first.done, first.total, first.is_last), (1, 3, false));
    let again = store
        .record_chunk_done(run_id, 1, &outcome(1, 999))
        .await
        .unwrap();
    assert!(!again.newly_recorded);
    assert_eq!((again.done, again.total, again.is_last), (1, 3, false));
    let record = store.get_run(run_id).await.unwrap().unwrap();
    assert_eq!(record.chunks.len(), 1);
    assert_eq!(
        record.chunks[&1],
        outcome(1, 100),
        "the first outcome stands"
    );
    assert_eq!(record.rows(), 100);
    assert_eq!(record.warnings()["c: zero date written as NULL"], 2);
}

async fn the_last_chunk_signal_fires_once_under_concurrent_completion(store: Store) {
    let chunks = 6u32;
    let run_id = extracting_run(&store, &key(), chunks as usize).await;
    // Every chunk-done event delivered twice, all at once.
    let events: Vec<_> = (0..chunks)
        .chain(0..chunks)
        .map(|chunk| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .record_chunk_done(run_id, chunk, &outcome(chunk, 10))
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut results = Vec::new();
    for event in events {
        results.push(event.await.unwrap());
    }
    assert_eq!(results.iter().filter(|r| r.is_last).count(), 1);
    assert_eq!(
        results.iter().filter(|r| r.newly_recorded).count(),
        chunks as usize
    );
    let last = results.iter().find(|r| r.is_last).unwrap();
    assert_eq!((last.done, last.total), (chunks, chunks));
    let record = store.get_run(run_id).await.unwrap().unwrap();
    assert_eq!(record.chunks.len(), chunks as usize);
    assert_eq!(record.rows(), u64::from(chunks) * 10);
}

async fn status_never_moves_backwards_and_refused_updates_change_nothing(store: Store) {
    let run_id = RunId::new();
    let mut record = RunRecord::new(run_id, key(), Utc::now());
    record.plan = Some(plan(run_id, 2));
    store.create_run(&record).await.unwrap();
    // A chunk cannot be recorded before the run extracts.
    assert!(matches!(
        store.record_chunk_done(run_id, 0, &outcome(0, 1)).await,
        Err(StateError::Refused { .. })
    ));
    // The same transition delivered four times at once: exactly one applies.
    let moves: Vec<_> = (0..4)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .update_run(
                        run_id,
                        Box::new(|r| r.transition(RunStatus::Extracting, Utc::now())),
                    )
                    .await
            })
        })
        .collect();
    let mut applied = 0;
    for m in moves {
        match m.await.unwrap() {
            Ok(r) => {
                assert_eq!(r.status, RunStatus::Extracting);
                applied += 1;
            }
            Err(StateError::Refused { message, .. }) => {
                assert!(
                    message.contains("cannot move from EXTRACTING to EXTRACTING"),
                    "{message}"
                )
            }
            Err(other) => panic!("{other}"),
        }
    }
    assert_eq!(applied, 1);
    let before = store.get_run(run_id).await.unwrap().unwrap();
    let err = store
        .update_run(
            run_id,
            Box::new(|r| r.transition(RunStatus::Planned, Utc::now())),
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("cannot move from EXTRACTING to PLANNED"),
        "{err}"
    );
    let err = store
        .update_run(
            run_id,
            Box::new(|r| {
                r.chunks.insert(0, ChunkOutcome::default());
                Ok(())
            }),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("record_chunk_done"), "{err}");
    assert_eq!(store.get_run(run_id).await.unwrap().unwrap(), before);
    store
        .record_chunk_done(run_id, 0, &outcome(0, 5))
        .await
        .unwrap();
    let failed = store
        .update_run(
            run_id,
            Box::new(|r| {
                r.fail("boom".into(), Some(1), Utc::now());
                Ok(())
            }),
        )
        .await
        .unwrap();
    assert_eq!(failed.status, RunStatus::Failed);
    assert!(
        failed.chunks.is_empty(),
        "an update answers with the header"
    );
    assert_eq!(
        store.get_run(run_id).await.unwrap().unwrap().chunks.len(),
        1,
        "an update keeps the recorded chunks"
    );
    // Nothing moves a finished run, and its chunks are closed.
    for next in [
        RunStatus::Completed,
        RunStatus::Extracting,
        RunStatus::Failed,
    ] {
        assert!(matches!(
            store
                .update_run(run_id, Box::new(move |r| r.transition(next, Utc::now())))
                .await,
            Err(StateError::Refused { .. })
        ));
    }
    assert!(matches!(
        store.record_chunk_done(run_id, 1, &outcome(1, 1)).await,
        Err(StateError::Refused { .. })
    ));
    let after = store.get_run(run_id).await.unwrap().unwrap();
    assert_eq!(after.status, RunStatus::Failed);
    assert_eq!(after.error.unwrap().message, "boom");
    assert!(matches!(
        store.update_run(RunId::new(), Box::new(|_| Ok(()))).await,
        Err(StateError::RunNotFound(_))
    ));
}

async fn records_round_trip_and_list_newest_first(store: Store) {
    let (table, other) = (key(), key());
    let now = Utc::now();
    let ids: Vec<RunId> = (0..3)
        .map(|i| RunId::at(now + Duration::seconds(i)))
        .collect();
    for (i, id) in ids.iter().enumerate() {
        let mut record =
            RunRecord::new(*id, if i == 1 { other.clone() } else { table.clone() }, now);
        record.plan = Some(plan(*id, 1));
        record.watermark_before = Some(ScalarValue::Int(-7));
        store.create_run(&record).await.unwrap();
        assert_eq!(store.get_run(*id).await.unwrap().unwrap(), record);
        assert!(matches!(
            store.create_run(&record).await,
            Err(StateError::RunExists(_))
        ));
    }
    let listed = |runs: Vec<RunRecord>| runs.iter().map(|r| r.run_id).collect::<Vec<_>>();
    assert_eq!(
        listed(store.list_runs(Some(&table), 10).await.unwrap()),
        vec![ids[2], ids[0]]
    );
    assert_eq!(
        listed(store.list_runs(Some(&table), 1).await.unwrap()),
        vec![ids[2]]
    );
    let all = listed(store.list_runs(None, 100).await.unwrap());
    let mine: Vec<RunId> = all.into_iter().filter(|id| ids.contains(id)).collect();
    assert_eq!(mine, vec![ids[2], ids[1], ids[0]]);
    assert!(store.get_run(RunId::new()).await.unwrap().is_none());
}

/// DynamoDB only: an update lock left by an updater that crashed mid-update expires, and the
/// next update proceeds (and leaves no lock behind).
#[tokio::test]
async fn dynamo_an_update_lock_left_by_a_crashed_updater_expires() {
    use aws_sdk_dynamodb::types::AttributeValue;
    let moto = MotoServer::shared_serial();
    let table = unique_name("state");
    let store = DynamoStateStore::new(&moto.sdk_config().await, &table);
    store.create_table().await.unwrap();
    let run_id = RunId::new();
    store
        .create_run(&RunRecord::new(run_id, key(), Utc::now()))
        .await
        .unwrap();
    let client = aws_sdk_dynamodb::Client::new(&moto.sdk_config().await);
    let run_key =
        |request: aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder| {
            request
                .table_name(&table)
                .key("pk", AttributeValue::S(format!("RUN#{run_id}")))
                .key("sk", AttributeValue::S("RUN".into()))
        };
    let expired = (Utc::now() - Duration::seconds(1))
        .timestamp_nanos_opt()
        .unwrap();
    run_key(client.update_item())
        .update_expression("SET lock_token = :t, lock_expires = :e")
        .expression_attribute_values(":t", AttributeValue::S("crashed-updater".into()))
        .expression_attribute_values(":e", AttributeValue::N(expired.to_string()))
        .send()
        .await
        .unwrap();
    let record = store
        .update_run(
            run_id,
            Box::new(|r| r.transition(RunStatus::Extracting, Utc::now())),
        )
        .await
        .unwrap();
    assert_eq!(record.status, RunStatus::Extracting);
    let item = raw_item(&client, &table, &format!("RUN#{run_id}"), "RUN").await;
    assert!(!item.contains_key("lock_token"), "{item:?}");
    assert_eq!(item["status"], AttributeValue::S("EXTRACTING".into()));
    assert_eq!(item["version"], AttributeValue::N("1".into()));
}

/// DynamoDB only: a run item written before chunk-start claims existed has no `chunk_starts`
/// map; claiming a start there still works (the map is added first).
#[tokio::test]
async fn dynamo_a_chunk_start_is_claimed_on_a_run_item_without_the_claims_map() {
    use aws_sdk_dynamodb::types::AttributeValue;
    let moto = MotoServer::shared_serial();
    let table = unique_name("state");
    let store: Store = Arc::new(DynamoStateStore::new(&moto.sdk_config().await, &table));
    let dynamo = DynamoStateStore::new(&moto.sdk_config().await, &table);
    dynamo.create_table().await.unwrap();
    let run_id = extracting_run(&store, &key(), 4).await;
    let client = aws_sdk_dynamodb::Client::new(&moto.sdk_config().await);
    client
        .update_item()
        .table_name(&table)
        .key("pk", AttributeValue::S(format!("RUN#{run_id}")))
        .key("sk", AttributeValue::S("RUN".into()))
        .update_expression("REMOVE chunk_starts, chunk_claimed_at")
        .send()
        .await
        .unwrap();
    let now = Utc::now();
    assert_eq!(
        store.claim_chunk_start(run_id, 3, 1, now).await.unwrap(),
        ChunkStart::Claimed
    );
    assert_eq!(
        store.claim_chunk_start(run_id, 3, 2, now).await.unwrap(),
        ChunkStart::ClaimedBy(1)
    );
    store.chunk_started(run_id, 3).await.unwrap();
    assert_eq!(
        store.claim_chunk_start(run_id, 3, 1, now).await.unwrap(),
        ChunkStart::Started
    );
    // A claim written before claim times were kept counts as old: its claimer may retry.
    client
        .update_item()
        .table_name(&table)
        .key("pk", AttributeValue::S(format!("RUN#{run_id}")))
        .key("sk", AttributeValue::S("RUN".into()))
        .update_expression("SET chunk_starts.#c = :claimer REMOVE chunk_claimed_at")
        .expression_attribute_names("#c", "2")
        .expression_attribute_values(":claimer", AttributeValue::N("1".into()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        store.claim_chunk_start(run_id, 2, 1, now).await.unwrap(),
        ChunkStart::Claimed
    );
}

/// The raw items of a run (its `RUN#` partition), as DynamoDB holds them.
async fn raw_run_items(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    run_id: RunId,
) -> Vec<std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>> {
    use aws_sdk_dynamodb::types::AttributeValue;
    client
        .query()
        .table_name(table)
        .key_condition_expression("pk = :pk")
        .expression_attribute_values(":pk", AttributeValue::S(format!("RUN#{run_id}")))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .items
        .unwrap_or_default()
}

/// DynamoDB only: a run's item and each of its chunk items carry `expires_at` = the run's start
/// plus the store's retention, in epoch seconds (the state table's TTL attribute), set again
/// by every write and brought back in line on a chunk item that disagrees; the table's item,
/// which holds the watermark, never expires.
#[tokio::test]
async fn dynamo_run_and_chunk_items_expire_a_retention_after_the_run_started_and_the_table_item_never()
 {
    use aws_sdk_dynamodb::types::AttributeValue;
    let moto = MotoServer::shared_serial();
    let table = unique_name("state");
    let store = DynamoStateStore::new(&moto.sdk_config().await, &table)
        .with_run_retention(std::time::Duration::from_secs(30 * 86_400));
    store.create_table().await.unwrap();
    let client = aws_sdk_dynamodb::Client::new(&moto.sdk_config().await);
    let table_key = key();
    // Started days ago and written since: the expiry follows the start, not the writes.
    let started = Utc::now() - Duration::days(3);
    let expected = AttributeValue::N((started + Duration::days(30)).timestamp().to_string());
    let run_id = RunId::at(started);
    let mut record = RunRecord::new(run_id, table_key.clone(), started);
    record.plan = Some(plan(run_id, 2));
    let now = Utc::now();
    store
        .acquire_lease(&table_key, run_id, now, now + Duration::minutes(5))
        .await
        .unwrap();
    store.create_run(&record).await.unwrap();
    store
        .update_run(
            run_id,
            Box::new(|r| r.transition(RunStatus::Extracting, Utc::now())),
        )
        .await
        .unwrap();
    for chunk in [0, 1] {
        let done = store
            .record_chunk_done(run_id, chunk, &outcome(chunk, 5))
            .await
            .unwrap();
        assert!(done.newly_recorded);
    }
    store
        .update_run(
            run_id,
            Box::new(|r| r.transition(RunStatus::Loading, Utc::now())),
        )
        .await
        .unwrap();
    store
        .commit_watermark(&table_key, run_id, &ScalarValue::Int(7))
        .await
        .unwrap();

    let items = raw_run_items(&client, &table, run_id).await;
    let kinds = |items: &[std::collections::HashMap<String, AttributeValue>]| {
        items
            .iter()
            .map(|i| {
                i["sk"]
                    .as_s()
                    .unwrap()
                    .split('#')
                    .next()
                    .unwrap()
                    .to_owned()
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(kinds(&items), vec!["CHUNK", "CHUNK", "RUN"], "{items:?}");
    for item in &items {
        assert_eq!(item.get("expires_at"), Some(&expected), "{item:?}");
    }
    // The watermark's item: no TTL, so the table's state is never deleted.
    let table_item = raw_item(&client, &table, &format!("TABLE#{table_key}"), "STATE").await;
    assert!(table_item.contains_key("watermark"), "{table_item:?}");
    assert!(table_item.contains_key("lease_run_id"), "{table_item:?}");
    assert!(!table_item.contains_key("expires_at"), "{table_item:?}");

    // A chunk item written under another retention (here: tampered with) is realigned by the
    // run's next whole read (finalize makes one), so it expires with its run.
    let chunk_sk = items
        .iter()
        .map(|i| i["sk"].as_s().unwrap().clone())
        .find(|sk| sk.starts_with("CHUNK#"))
        .unwrap();
    client
        .update_item()
        .table_name(&table)
        .key("pk", AttributeValue::S(format!("RUN#{run_id}")))
        .key("sk", AttributeValue::S(chunk_sk.clone()))
        .update_expression("SET expires_at = :e")
        .expression_attribute_values(":e", AttributeValue::N("1234".into()))
        .send()
        .await
        .unwrap();
    store
        .update_run(
            run_id,
            Box::new(|r| r.transition(RunStatus::Merging, Utc::now())),
        )
        .await
        .unwrap();
    store.get_run(run_id).await.unwrap().unwrap();
    let items = raw_run_items(&client, &table, run_id).await;
    assert_eq!(kinds(&items), vec!["CHUNK", "CHUNK", "RUN"], "{items:?}");
    for item in &items {
        assert_eq!(item.get("expires_at"), Some(&expected), "{item:?}");
    }
    store.release_lease(&table_key, run_id).await.unwrap();
    let run = store.get_run(run_id).await.unwrap().unwrap();
    assert_eq!((run.chunks.len(), run.rows()), (2, 10));
}

/// DynamoDB only: DynamoDB deletes an expired item some time after its `expires_at` (moto
/// never does), and deletes a run's items one by one; until then the run reads as gone (not
/// found, not listed, not updatable) rather than as a run that may be missing chunks.
#[tokio::test]
async fn dynamo_a_run_past_its_expiry_reads_as_gone_before_dynamodb_deletes_it() {
    use aws_sdk_dynamodb::types::AttributeValue;
    let moto = MotoServer::shared_serial();
    let table = unique_name("state");
    let store = DynamoStateStore::new(&moto.sdk_config().await, &table);
    store.create_table().await.unwrap();
    let client = aws_sdk_dynamodb::Client::new(&moto.sdk_config().await);
    let store: Store = Arc::new(store);
    let table_key = key();
    let kept = RunId::at(Utc::now() - Duration::seconds(5));
    store
        .create_run(&RunRecord::new(kept, table_key.clone(), Utc::now()))
        .await
        .unwrap();
    // The newer run expired a minute ago: listing one run must reach past it to the kept one.
    let gone = extracting_run(&store, &table_key, 1).await;
    client
        .update_item()
        .table_name(&table)
        .key("pk", AttributeValue::S(format!("RUN#{gone}")))
        .key("sk", AttributeValue::S("RUN".into()))
        .update_expression("SET expires_at = :e")
        .expression_attribute_values(
            ":e",
            AttributeValue::N((Utc::now() - Duration::minutes(1)).timestamp().to_string()),
        )
        .send()
        .await
        .unwrap();

    assert_eq!(
        raw_run_items(&client, &table, gone).await.len(),
        1,
        "the premise: the expired item is still in the table"
    );
    assert!(store.get_run(gone).await.unwrap().is_none());
    assert!(store.get_run(kept).await.unwrap().is_some());
    let listed = |runs: Vec<RunRecord>| runs.iter().map(|r| r.run_id).collect::<Vec<_>>();
    assert_eq!(
        listed(store.list_runs(Some(&table_key), 10).await.unwrap()),
        vec![kept]
    );
    assert_eq!(
        listed(store.list_runs(Some(&table_key), 1).await.unwrap()),
        vec![kept]
    );
    assert!(
        !listed(store.list_runs(None, 1000).await.unwrap()).contains(&gone),
        "the index of all runs does not show it either"
    );
    assert!(matches!(
        store
            .update_run(
                gone,
                Box::new(|r| r.transition(RunStatus::Loading, Utc::now()))
            )
            .await,
        Err(StateError::RunNotFound(id)) if id == gone
    ));
    assert!(matches!(
        store.record_chunk_done(gone, 0, &outcome(0, 1)).await,
        Err(StateError::RunNotFound(id)) if id == gone
    ));
    let items = raw_run_items(&client, &table, gone).await;
    assert_eq!(items.len(), 1, "nothing was written for it: {items:?}");
    assert!(!items[0].contains_key("lock_token"), "{items:?}");
}

/// One item of the state table as DynamoDB holds it, read past the store.
async fn raw_item(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    pk: &str,
    sk: &str,
) -> std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue> {
    client
        .get_item()
        .table_name(table)
        .key(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S(pk.to_owned()),
        )
        .key(
            "sk",
            aws_sdk_dynamodb::types::AttributeValue::S(sk.to_owned()),
        )
        .send()
        .await
        .unwrap()
        .item
        .unwrap_or_else(|| panic!("no item {pk} / {sk}"))
}
