//! Failing a run and removing what it left where readers look.

use super::*;

impl Pipeline {
    /// After taking over the lease of `crashed` (its holder died; the store marked it FAILED):
    /// counts its failure as `fail_run` would (the `run failed` line the alarm counts) and
    /// removes what it wrote from the table's partition directory, where Glue, Athena and
    /// Spectrum readers would otherwise see its rows. Best effort: the new run goes on.
    pub(super) async fn clean_up_taken_over(&self, crashed: RunId, by: RunId) {
        let record = match self.state.get_run_header(crashed).await {
            Ok(Some(record)) => record,
            Ok(None) => return,
            Err(e) => {
                warn!(%crashed, error = %e, "reading the run whose lease expired failed; its files stay");
                return;
            }
        };
        if record.status != RunStatus::Failed {
            return;
        }
        let message = record
            .error
            .as_ref()
            .map_or("lease expired", |e| e.message.as_str());
        warn!(run_id = %crashed, table = %record.table_key, taken_over_by = %by, error = %message, "run failed");
        if let Some(plan) = &record.plan {
            self.remove_run_files(crashed, plan, &BTreeSet::new(), true)
                .await;
        }
        if let Ok(Some(whole)) = self.state.get_run(crashed).await {
            self.write_run_story(&whole).await;
        }
    }

    /// Marks a run FAILED with its first error and releases the table's lease. The watermark
    /// is untouched.
    pub async fn fail_run(
        &self,
        run_id: RunId,
        message: String,
        chunk: Option<u32>,
    ) -> Result<RunRecord> {
        let newly_failed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let record = {
            let message = message.clone();
            let newly_failed = newly_failed.clone();
            self.state
                .update_run(
                    run_id,
                    Box::new(move |r| {
                        newly_failed.store(
                            !r.status.is_terminal(),
                            std::sync::atomic::Ordering::Relaxed,
                        );
                        r.fail(message, chunk, Utc::now());
                        Ok(())
                    }),
                )
                .await?
        };
        if newly_failed.load(std::sync::atomic::Ordering::Relaxed) {
            warn!(%run_id, chunk, error = %message, "run failed");
        } else {
            // The run had already ended: the failure is not recorded again, nor logged as one
            // (the failed-runs alarm counts each run's failure once).
            info!(%run_id, chunk, status = %record.status, error = %message, "run already ended; failure not recorded");
        }
        if record.status != RunStatus::Failed {
            // It had completed: a late failure report changes nothing. The whole record, as
            // the update answered with the header only.
            return Ok(self.state.get_run(run_id).await?.unwrap_or(record));
        }
        // Also for a run failed before: the call that failed it may have died (or its store
        // call failed) before giving the lease back or removing the files, and a retry comes
        // here. Both are idempotent.
        self.state.release_lease(&record.table_key, run_id).await?;
        if let Some(plan) = &record.plan {
            self.remove_run_files(run_id, plan, &BTreeSet::new(), true)
                .await;
        }
        // The whole record, with the chunks it got through, once per failure.
        let record = self.state.get_run(run_id).await?.unwrap_or(record);
        self.write_run_story(&record).await;
        Ok(record)
    }

    /// Writes an ended run's story (`_runs/<run_id>.json`, see
    /// [`sluice_core::run::run_story`]) beside the table's manifests, again each time the run
    /// is seen ending (a retried finalize or failure rewrites the same run's file with what it
    /// knows now), then registers the table's stories as its partition of the catalog's
    /// `sluice_runs` table. Best effort: the run's outcome stands if the write or the
    /// registration fails, and is logged.
    pub(super) async fn write_run_story(&self, record: &RunRecord) {
        let Some((layout, partition_values)) = self.story_layout(record) else {
            return;
        };
        let key = layout.run_story(record.run_id);
        let body = match sluice_core::run::run_story(record) {
            Ok(body) => body,
            Err(e) => {
                warn!(run_id = %record.run_id, error = %e, "serialising the run's story failed");
                return;
            }
        };
        match put_bytes(self.sink.as_ref(), &key, Bytes::from(body)).await {
            Ok(bytes) => info!(run_id = %record.run_id, %key, bytes, "run story written"),
            Err(e) => {
                warn!(run_id = %record.run_id, %key, error = %e, "writing the run's story failed");
                return;
            }
        }
        let root = match self.options.prefix.as_deref().map(|p| p.trim_matches('/')) {
            Some(prefix) if !prefix.is_empty() => format!("{prefix}/"),
            _ => String::new(),
        };
        let registration = crate::catalog::StoryRegistration {
            location: self.sink.url_for(&root),
            partition_values,
            partition_location: self.sink.url_for(&format!("{}/_runs/", layout.table_dir())),
        };
        if let Err(e) = self.catalog.register_story(&registration).await {
            warn!(run_id = %record.run_id, table = sluice_core::run::RUNS_TABLE, error = %e, "registering the run's story in the catalog failed");
        }
    }

    /// The layout a run's story goes under: its plan's, or, for a run that failed before it
    /// had one, the one its table key and source say; with the story's partition of the
    /// catalog's runs table.
    fn story_layout(&self, record: &RunRecord) -> Option<(TableLayout, [String; 4])> {
        // A prefix that failed the run (see planning) gets no keys either.
        if let Some(prefix) = &self.options.prefix
            && sluice_core::output::check_prefix(prefix).is_err()
        {
            return None;
        }
        if let Some(plan) = &record.plan {
            let layout = self.layout_of(record.run_id, plan).ok()?;
            let table = plan.table.table_name().ok()?.to_string();
            let values = sluice_core::run::run_story_partition_values(
                plan.engine,
                &plan.table.source,
                &table,
                plan.keyset,
            );
            return Some((layout, values));
        }
        let (source, table) = record.table_key.split_once('/')?;
        let engine = self.sources.get(source)?.engine();
        let layout = if record.keyset {
            TableLayout::keysets
        } else {
            TableLayout::new
        };
        let values =
            sluice_core::run::run_story_partition_values(engine, source, table, record.keyset);
        Some((
            layout(self.options.prefix.as_deref(), engine, source, table),
            values,
        ))
    }

    /// Deletes what no loader should see of a run: its data files in its date/hour partition
    /// other than `keep` (the manifest's, or a resumed run's done chunks'), the unfinished
    /// uploads a killed process left there, and with `manifest_too` its manifest; then lists
    /// what it removed in the run's record (`sluice status <run>` shows it). COPY loads the
    /// manifest's list only, but Athena and Spectrum read the Glue partition's whole
    /// directory, where a failed run's files, or the surplus parts of a chunk whose retry
    /// wrote fewer parts, would count as data. Best effort: a failure is logged, and the run's
    /// outcome stands.
    pub(super) async fn remove_run_files(
        &self,
        run_id: RunId,
        plan: &sluice_core::RunPlan,
        keep: &BTreeSet<String>,
        manifest_too: bool,
    ) {
        let Ok(layout) = self.layout_of(run_id, plan) else {
            return;
        };
        let dir = layout.partition_dir(plan.started_at);
        let name_prefix = format!("part-{run_id}-");
        let ours = format!("{dir}/{name_prefix}");
        let mut doomed: Vec<String> = match list_keys(self.sink.as_ref(), &dir).await {
            Ok(keys) => keys
                .into_iter()
                .filter(|k| k.starts_with(&ours) && !keep.contains(k))
                .collect(),
            Err(e) => {
                warn!(%run_id, error = %e, "listing the run's files for clean-up failed");
                return;
            }
        };
        if manifest_too {
            doomed.push(layout.manifest(run_id));
        }
        let mut removed = Vec::new();
        for key in doomed {
            match delete_key(self.sink.as_ref(), &key).await {
                Ok(()) => {
                    info!(%run_id, %key, "removed a file no load will use");
                    removed.push(key);
                }
                Err(e) => warn!(%run_id, %key, error = %e, "removing a file of the run failed"),
            }
        }
        match self
            .sink
            .remove_unfinished_uploads(&dir, &name_prefix)
            .await
        {
            Ok(aborted) => {
                for key in &aborted {
                    info!(%run_id, %key, "removed an unfinished upload");
                }
                removed.extend(aborted);
            }
            Err(e) => warn!(%run_id, error = %e, "removing the run's unfinished uploads failed"),
        }
        if removed.is_empty() {
            return;
        }
        let listed = self
            .state
            .update_run(
                run_id,
                Box::new(move |r| {
                    for key in removed {
                        if !r.removed_files.contains(&key) {
                            r.removed_files.push(key);
                        }
                    }
                    Ok(())
                }),
            )
            .await;
        if let Err(e) = listed {
            warn!(%run_id, error = %e, "listing the removed files in the run's record failed");
        }
    }
}
