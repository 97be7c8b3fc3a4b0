//! Planning: taking the table's lease, recording the run, and the plan gathered from the
//! source in one snapshot.

use super::*;

impl Pipeline {
    /// Takes the table's lease, gathers catalog facts in one snapshot and records the plan.
    /// On failure after the run was recorded, the run is FAILED and the error carries its id.
    pub async fn plan_run(&self, table: &TableConfig) -> Result<PlannedRun, PlanFailure> {
        self.plan_run_with(table, false).await
    }

    /// [`Pipeline::plan_run`]; with `full_reload` an incremental table is read whole, as if
    /// it had no watermark, and the run still commits the new watermark when it completes.
    pub async fn plan_run_with(
        &self,
        table: &TableConfig,
        full_reload: bool,
    ) -> Result<PlannedRun, PlanFailure> {
        let kind = if full_reload {
            RunKind::FullReload
        } else {
            RunKind::Load
        };
        let unrecorded = |error: PipelineError| PlanFailure {
            run_id: None,
            error,
        };
        // An unknown source is refused before anything is recorded.
        self.source(table).map_err(unrecorded)?;
        let now = Utc::now();
        let record = self
            .open_run(&table.key(), kind, now, now + self.options.lease_ttl)
            .await
            .map_err(unrecorded)?;
        self.plan_opened_run(table, record.run_id).await
    }

    /// Takes the table's lease until `lease_until` and records a new run in PLANNED, without
    /// touching the source: the first half of planning, cheap and bounded (a few state
    /// writes), so an HTTP trigger can do it inside its answer and leave the source's part to
    /// [`Pipeline::plan_opened_run`] elsewhere. A lease shorter than the lease TTL marks the
    /// run `planning_until` then: if nobody plans it by that time, the table is free again.
    /// `Err` means nothing was recorded.
    pub async fn open_run(
        &self,
        table_key: &str,
        kind: RunKind,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<RunRecord> {
        // Later than every run the table has recorded, whatever this host's clock says.
        let table = self.state.table_state(table_key).await?;
        let earlier = [
            table.watermark_run_id,
            table.keyset_run_id,
            table.lease.map(|l| l.run_id),
        ];
        let run_id = RunId::after(now, earlier.into_iter().flatten());
        let taken_over = self
            .state
            .acquire_lease(table_key, run_id, now, lease_until)
            .await?;
        if let Some(crashed) = taken_over {
            self.clean_up_taken_over(crashed, run_id).await;
        }
        self.create_opened_run(table_key, run_id, kind, now).await
    }

    /// Records run `run_id`, whose lease the caller just took, in PLANNED; gives the lease
    /// back when that fails, so `Err` means nothing was started.
    pub(super) async fn create_opened_run(
        &self,
        table_key: &str,
        run_id: RunId,
        kind: RunKind,
        now: DateTime<Utc>,
    ) -> Result<RunRecord> {
        let opened = async {
            let table_state = self.state.table_state(table_key).await?;
            let mut record = RunRecord::new(run_id, table_key.to_owned(), now);
            record.watermark_before = table_state.watermark;
            record.set_kind(kind);
            record.holder = self.local_holder(now);
            record.batch_id = self.options.batch_id.clone();
            self.state.create_run(&record).await?;
            Ok::<_, PipelineError>(record)
        }
        .await;
        if opened.is_err() {
            let _ = self.state.release_lease(table_key, run_id).await;
        }
        opened
    }

    /// Plans a run [`Pipeline::open_run`] recorded: gathers catalog facts in one snapshot and
    /// records the plan, unless the run is no longer PLANNED without a plan (it was taken
    /// over, failed, or planned by a duplicate). Any failure marks the run FAILED and the
    /// error carries its id.
    pub async fn plan_opened_run(
        &self,
        table: &TableConfig,
        run_id: RunId,
    ) -> Result<PlannedRun, PlanFailure> {
        let key = table.key();
        let span = info_span!("plan", %run_id, table = %key);
        async {
            let planned = async {
                let record = self
                    .state
                    .get_run_header(run_id)
                    .await?
                    .ok_or(StateError::RunNotFound(run_id))?;
                if record.status != RunStatus::Planned || record.plan.is_some() {
                    return Err(PipelineError::Run {
                        run_id,
                        message: format!(
                            "is {}{}; it is not planned again",
                            record.status,
                            if record.plan.is_some() {
                                " with a plan"
                            } else {
                                ""
                            }
                        ),
                    });
                }
                let source = self.source(table)?;
                // The CLI and the functions check their settings before anything runs; this
                // catches a pipeline built with a bad prefix by any other caller, as a FAILED
                // run rather than keys nobody can load.
                if let Some(prefix) = &self.options.prefix {
                    sluice_core::output::check_prefix(prefix).map_err(|e| PipelineError::Run {
                        run_id,
                        message: format!("output prefix '{prefix}' {e}"),
                    })?;
                }
                let watermark = if record.full_reload {
                    None
                } else {
                    record.watermark_before.as_ref()
                };
                if record.keyset && !table.deletes_by_keyset() {
                    return Err(PipelineError::NoKeysets {
                        table_key: table.key(),
                    });
                }
                // A key-set run reads the key of every row, with no cursor window; a CDC
                // table's facts are its columns (and, for a snapshot, its chunks).
                let cdc = table.load.mode == sluice_core::LoadMode::Cdc && !record.keyset;
                let read = if record.keyset {
                    table.keyset_read()
                } else if cdc {
                    let mut read = table.clone();
                    read.load.mode = sluice_core::LoadMode::Full;
                    if watermark.is_some() {
                        read.partition = None;
                    }
                    read
                } else {
                    table.clone()
                };
                let lower = if record.keyset {
                    None
                } else {
                    window_lower_bound(table, watermark)?
                };
                // Tests make planning slow or hang here (FAILPOINTS=plan-before-source=1*sleep(…)).
                fail::fail_point!("plan-before-source");
                let slot = self
                    .source_slot(&table.source, SlotHolder::plan(run_id))
                    .await?;
                let gathered = held(slot.as_ref(), async {
                    // The log's positions first: a snapshot taken after them sees every
                    // change before them, and the log holds every change after.
                    let positions = if cdc {
                        let at = match watermark {
                            Some(sluice_core::ScalarValue::Int(at)) => u64::try_from(*at).ok(),
                            _ => None,
                        };
                        Some(source.cdc_facts(table, at).await?)
                    } else {
                        None
                    };
                    Ok((positions, source.gather_facts(&read, lower.as_ref()).await?))
                })
                .await;
                let gathered = match gathered {
                    Ok(gathered) => gathered,
                    Err(e) => {
                        release(slot).await;
                        return Err(e);
                    }
                };
                let (positions, gathered) = gathered;
                let mut facts = gathered.facts;
                // Block ranges only where every chunk will read the plan's snapshot: a caller
                // that holds it through the chunks (local runs), for a source whose snapshot
                // is not given up to free a capped connection, and not a CDC snapshot (its
                // snapshot belongs to the replication slot's connection).
                if !self.options.block_chunks
                    || self.connection_limits.contains_key(&table.source)
                    || cdc
                {
                    facts.blocks = None;
                }
                // The plan's snapshot keeps its connection open: it keeps the slot too, and
                // whoever drops the snapshot gives both back.
                let snapshot = match (gathered.hold, slot) {
                    (Some(hold), Some(slot)) => Some(SnapshotHold::new(SlotHeldSnapshot {
                        _hold: hold,
                        _slot: slot,
                    })),
                    (hold, slot) => {
                        release(slot).await;
                        hold
                    }
                };
                // The run's start time places its files, whenever it is planned.
                let plan = if record.keyset {
                    build_keyset_plan(run_id, source.engine(), record.created_at, table, facts)?
                } else if let Some(positions) = positions {
                    build_cdc_plan(
                        run_id,
                        source.engine(),
                        record.created_at,
                        table,
                        watermark,
                        positions,
                        facts,
                    )?
                } else {
                    build_plan(
                        run_id,
                        source.engine(),
                        record.created_at,
                        table,
                        watermark,
                        facts,
                    )?
                };
                match &plan.cdc {
                    // A field a log metric filter can alarm on: WAL a slot keeps from removal.
                    Some(cdc) => info!(
                        chunks = plan.chunks.len(),
                        retained_wal_bytes = cdc.retained_wal,
                        snapshot = cdc.snapshot,
                        "planned"
                    ),
                    None => info!(chunks = plan.chunks.len(), "planned"),
                }
                let record = self
                    .state
                    .update_run(
                        run_id,
                        Box::new(move |r| {
                            // A planner that outlived its lease finds its run failed (taken
                            // over, or abandoned): its plan must not revive it.
                            if r.status != RunStatus::Planned || r.plan.is_some() {
                                return Err(format!(
                                    "is {}{}; this plan is not recorded",
                                    r.status,
                                    if r.plan.is_some() {
                                        " and planned already"
                                    } else {
                                        ""
                                    }
                                ));
                            }
                            r.plan = Some(plan);
                            Ok(())
                        }),
                    )
                    .await?;
                // The crash tests kill a run here: planned, no chunk started.
                fail::fail_point!("plan-after-record");
                Ok::<_, PipelineError>(PlannedRun { record, snapshot })
            }
            .await;
            match planned {
                Ok(planned) => Ok(planned),
                Err(error) => {
                    // A duplicate planner that lost the race to record the plan leaves the
                    // run to the one that won.
                    let planned_elsewhere = matches!(
                        self.state.get_run_header(run_id).await,
                        Ok(Some(r)) if r.plan.is_some() && !r.status.is_terminal()
                    );
                    if !planned_elsewhere
                        && let Err(fail_error) =
                            self.fail_run(run_id, error.to_string(), None).await
                    {
                        warn!(error = %fail_error, "recording the failed plan failed");
                    }
                    Err(PlanFailure {
                        run_id: Some(run_id),
                        error,
                    })
                }
            }
        }
        .instrument(span)
        .await
    }
}

/// The schema a run of `table` writes (the source's columns as mapped, then sluice's metadata
/// columns), read from the source's catalog without reading a row: the table is planned as a
/// full load filtered to nothing and only its chunk stream's schema is kept. For set-up SQL
/// that must exist before the first run.
pub async fn file_schema_of(source: &dyn Source, table: &TableConfig) -> Result<SchemaRef> {
    let mut probe = table.clone();
    probe.filter = Some("1 = 0".into());
    probe.partition = None;
    probe.load.mode = sluice_core::LoadMode::Full;
    let gathered = source.gather_facts(&probe, None).await?;
    let plan = build_plan(
        RunId::new(),
        source.engine(),
        Utc::now(),
        &probe,
        None,
        gathered.facts,
    )?;
    let schema = file_schema(&source.chunk_schema(&plan).await?);
    drop(gathered.hold);
    Ok(schema)
}
