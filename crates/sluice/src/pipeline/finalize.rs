//! Finalizing a run whose chunks are done: manifest, catalog, load, merge, watermark.

use sluice_core::manifest::assemble;

use super::*;

impl Pipeline {
    /// Once every chunk is done: writes the manifest, registers the files in the catalog, loads
    /// RAW (LOADING), merges into STAGING and runs the gold procedures (MERGING) when a
    /// warehouse is attached, then commits the watermark and completes the run. Any failure
    /// leaves the watermark where it was. A key-set run loads its keys into the keys table
    /// instead, reconciles STAGING with them, and records itself as the table's latest key set.
    ///
    /// A finalize retried after a crash (a re-delivered event, a resumed run) finds the run
    /// LOADING or MERGING and goes through the same steps again: each is safe to repeat (the
    /// same manifest, a catalog registration that tolerates what exists, RAW loads that
    /// replace the run's rows, a merge that never moves data backwards), and the watermark
    /// still moves only at the end.
    ///
    /// The `fail_point!`s mark the boundaries the crash matrix (`tests/tests/crash_matrix.rs`)
    /// crashes at, in builds with the `failpoints` feature only.
    pub async fn finalize_run(&self, run_id: RunId) -> Result<RunRecord> {
        // The one read of the run's chunk outcomes in finalize.
        let record = self
            .state
            .get_run(run_id)
            .await?
            .ok_or(StateError::RunNotFound(run_id))?;
        if record.status == RunStatus::Completed {
            // A finalize that died between completing the run and giving the lease back is
            // retried here: without this the table would stay leased until the lease lapses.
            self.write_run_story(&record).await;
            self.state.release_lease(&record.table_key, run_id).await?;
            return Ok(record);
        }
        let plan = record.plan.clone().ok_or_else(|| PipelineError::Run {
            run_id,
            message: "has no plan".into(),
        })?;
        let manifest = assemble(run_id, &plan, &record.chunks).map_err(|e| PipelineError::Run {
            run_id,
            message: e.to_string(),
        })?;
        let key = record.table_key.clone();
        if plan.keyset && self.warehouse.is_none() {
            return Err(PipelineError::Run {
                run_id,
                message: "a key set deletes from STAGING what the source no longer has, and this pipeline has no warehouse to reconcile".into(),
            });
        }
        let span = info_span!("finalize", %run_id, table = %key);
        async {
            match record.status {
                RunStatus::Loading | RunStatus::Merging => {
                    info!(status = %record.status, "resuming an interrupted finalize");
                }
                _ => {
                    self.transition(run_id, RunStatus::Extracting, RunStatus::Loading)
                        .await?;
                }
            }
            let layout = self.layout_of(run_id, &plan)?;
            let manifest_key = self
                .write_manifest(run_id, &plan, &layout, &manifest)
                .await?;
            fail::fail_point!("finalize-before-catalog");
            // Key-only files are no part of the table's data: nothing registers them.
            if !plan.keyset {
                self.register_in_catalog(&key, &plan, &layout, &manifest)
                    .await?;
            }
            fail::fail_point!("finalize-after-catalog");
            let mut loaded_rows = None;
            if let Some(loader) = &self.warehouse {
                fail::fail_point!("finalize-before-copy");
                let prefix = self.options.prefix.as_deref();
                let loaded = if plan.keyset {
                    loader.load_keys(&plan.table, &manifest, prefix).await?
                } else {
                    loader.load(&plan.table, &manifest, prefix).await?
                };
                info!(
                    files = loaded.files,
                    rows = loaded.rows,
                    "loaded into the warehouse"
                );
                loaded_rows = Some(loaded.rows);
                fail::fail_point!("finalize-after-copy");
            }
            self.state
                .update_run(
                    run_id,
                    Box::new(move |r| {
                        r.manifest_key = Some(manifest_key);
                        if loaded_rows.is_some() {
                            r.loaded_rows = loaded_rows;
                        }
                        if r.status == RunStatus::Merging {
                            return Ok(());
                        }
                        r.transition(RunStatus::Merging, Utc::now())
                    }),
                )
                .await?;
            if let Some(loader) = &self.warehouse {
                fail::fail_point!("finalize-before-merge");
                let merged = if plan.keyset {
                    loader.reconcile(&plan.table, run_id).await?
                } else if plan.cdc.as_ref().is_some_and(|c| c.snapshot) {
                    loader.merge_cdc_snapshot(&plan.table, run_id).await?
                } else {
                    loader.merge(&plan.table, run_id).await?
                };
                fail::fail_point!("finalize-after-merge");
                let merged_keys = if plan.keyset {
                    None
                } else {
                    loader.merged_keys(&plan.table, run_id).await?
                };
                let merged = self
                    .state
                    .update_run(
                        run_id,
                        Box::new(move |r| {
                            r.merge = Some(merged);
                            r.merged_keys = merged_keys;
                            if let Some(duplicates) = r.duplicate_key_rows().filter(|n| *n > 0) {
                                warn!(
                                    duplicates,
                                    "rows of the run share a key with another row of it; the merge kept the latest of each"
                                );
                            }
                            Ok(())
                        }),
                    )
                    .await?;
                if merged.merged_nothing() {
                    return Err(PipelineError::Run {
                        run_id,
                        message: format!(
                            "the merge merged none of the {} rows the run loaded: a run with a later id is in the table's merge log, so this run's rows would never reach STAGING (is a host's clock ahead of this one's? run ids carry their start time). The watermark was not moved; run the table again",
                            merged.loaded_rows.unwrap_or(0)
                        ),
                    });
                }
            }
            let next = record.next_watermark();
            fail::fail_point!("finalize-before-watermark");
            if let Some(watermark) = &next {
                self.state.commit_watermark(&key, run_id, watermark).await?;
            }
            // A key set's only mark on the table: when the next one comes due.
            if plan.keyset {
                self.state.commit_keyset(&key, run_id).await?;
            }
            fail::fail_point!("finalize-after-watermark");
            let mut completed = self
                .state
                .update_run(
                    run_id,
                    Box::new(move |r| {
                        r.watermark_committed = next;
                        r.transition(RunStatus::Completed, Utc::now())
                    }),
                )
                .await?;
            // The update answers with the header; the chunks read at the start are the run's.
            completed.chunks = record.chunks.clone();
            let record = completed;
            self.write_run_story(&record).await;
            fail::fail_point!("finalize-before-lease-release");
            self.state.release_lease(&key, run_id).await?;
            info!(
                rows = record.rows(),
                bytes = record.bytes(),
                "run completed"
            );
            Ok(record)
        }
        .instrument(span)
        .await
    }

    /// Where the files of `plan`'s run go: the table's directory, or its key sets'.
    pub(super) fn layout_of(
        &self,
        run_id: RunId,
        plan: &sluice_core::RunPlan,
    ) -> Result<TableLayout> {
        let table_name = plan
            .table
            .table_name()
            .map_err(|message| PipelineError::Run { run_id, message })?;
        let layout = if plan.keyset {
            TableLayout::keysets
        } else {
            TableLayout::new
        };
        Ok(layout(
            self.options.prefix.as_deref(),
            plan.engine,
            &plan.table.source,
            &table_name.to_string(),
        ))
    }

    /// Writes the manifest (the same bytes however often it is repeated), then removes the
    /// run's files it does not list, so the partition directory holds exactly its files.
    async fn write_manifest(
        &self,
        run_id: RunId,
        plan: &sluice_core::RunPlan,
        layout: &TableLayout,
        manifest: &Manifest,
    ) -> Result<String> {
        let manifest_key = layout.manifest(run_id);
        let body = serde_json::to_vec_pretty(manifest).map_err(|e| PipelineError::Run {
            run_id,
            message: format!("serialising the manifest: {e}"),
        })?;
        fail::fail_point!("finalize-before-manifest");
        put_bytes(self.sink.as_ref(), &manifest_key, Bytes::from(body)).await?;
        info!(key = %manifest_key, rows = manifest.rows, files = manifest.files.len(), "manifest written");
        fail::fail_point!("finalize-after-manifest");
        let keep: BTreeSet<String> = manifest.files.iter().map(|f| f.key.clone()).collect();
        self.remove_run_files(run_id, plan, &keep, false).await;
        Ok(manifest_key)
    }

    async fn register_in_catalog(
        &self,
        key: &str,
        plan: &sluice_core::RunPlan,
        layout: &TableLayout,
        manifest: &Manifest,
    ) -> Result<()> {
        let columns = sluice_core::catalog::hive_columns(&manifest.schema).map_err(|source| {
            CatalogError::Schema {
                table: key.to_owned(),
                source,
            }
        })?;
        let registration = TableRegistration {
            table: catalog_table_name(&plan.table.source, &plan.table.table),
            description: format!("sluice: {} {key}", plan.engine.as_str()),
            columns,
            location: self.sink.url_for(&format!("{}/", layout.table_dir())),
            partition_values: partition_values(plan.started_at),
            partition_location: self
                .sink
                .url_for(&format!("{}/", layout.partition_dir(plan.started_at))),
        };
        self.catalog.register_run(&registration).await?;
        Ok(())
    }
}
