//! Extracting one chunk of a planned run into Parquet files.

use super::*;

impl Pipeline {
    /// Extracts one chunk into Parquet files and records its outcome. A chunk already
    /// recorded is not extracted again: its recorded outcome is returned.
    ///
    /// `is_last` in the report is true for exactly one call per run, the one whose chunk
    /// completed the run, however often chunks are retried or delivered twice: that caller
    /// hands the run on to finalize (the Lambda extract function invokes finalize).
    pub async fn extract_chunk(
        &self,
        run_id: RunId,
        chunk: u32,
        observer: &dyn RunObserver,
    ) -> Result<ChunkReport> {
        self.extract_chunk_sharing(run_id, chunk, observer, 1).await
    }

    /// Extracts a chunk while `sharing` chunks run at once in this process: the row-group
    /// buffer, the writer's largest allocation, is divided among them so memory stays within
    /// one chunk's budget however many run.
    pub(super) async fn extract_chunk_sharing(
        &self,
        run_id: RunId,
        chunk: u32,
        observer: &dyn RunObserver,
        sharing: usize,
    ) -> Result<ChunkReport> {
        // The run's header and this chunk's outcome: two small reads, however many chunks.
        let record = self
            .state
            .get_run_header(run_id)
            .await?
            .ok_or(StateError::RunNotFound(run_id))?;
        if let Some(done) = self.state.chunk_outcome(run_id, chunk).await? {
            return Ok(ChunkReport {
                outcome: done,
                newly_recorded: false,
                is_last: false,
            });
        }
        let plan = record.plan.clone().ok_or_else(|| PipelineError::Run {
            run_id,
            message: "has no plan".into(),
        })?;
        if !matches!(record.status, RunStatus::Planned | RunStatus::Extracting) {
            return Err(PipelineError::Run {
                run_id,
                message: format!("is {}; chunk {chunk} is not extracted", record.status),
            });
        }
        let key = record.table_key.clone();
        let span = info_span!("extract", %run_id, table = %key, chunk, rows = tracing::field::Empty, bytes = tracing::field::Empty);
        let started = Instant::now();
        async {
            // Only the first chunks find the run PLANNED: the others skip the update, which
            // the DynamoDB store serializes per run (a fan-out of many chunks would queue).
            if record.status == RunStatus::Planned {
                self.state
                    .update_run(
                        run_id,
                        Box::new(|r| match r.status {
                            RunStatus::Planned => r.transition(RunStatus::Extracting, Utc::now()),
                            RunStatus::Extracting => Ok(()),
                            other => Err(format!("is {other}; no more chunks are extracted")),
                        }),
                    )
                    .await?;
            }
            let source = self.source(&plan.table)?;
            let layout = self.layout_of(run_id, &plan)?;
            let slot = self
                .source_slot(&plan.table.source, SlotHolder::chunk(run_id, chunk))
                .await?;
            let opened = held(slot.as_ref(), async {
                Ok(source.extract_chunk(&plan, chunk).await?)
            })
            .await;
            let stream = match opened {
                Ok(stream) => stream,
                Err(e) => {
                    release(slot).await;
                    return Err(e);
                }
            };
            let schema = stream.schema.clone();
            let warnings = stream.warnings.clone();
            let bound_rows = stream.bound_rows;
            let closed = stream.closed;
            let cdc_reached = stream.cdc_reached;
            let source_count = stream.source_count;
            // A read of the change log is counted by nothing but itself.
            let exact = plan.table.filter.is_none() && cdc_reached.is_none();
            let bound_rows = if cdc_reached.is_some() {
                u64::MAX
            } else {
                bound_rows
            };
            let mut batches = prefetch(stream.batches, self.options.prefetch_batches);
            let started_at = plan.started_at;
            let mut writer = ChunkFileWriter::new(
                self.sink.clone(),
                &schema,
                run_id,
                chunk,
                Utc::now(),
                ParquetSettings {
                    row_group_bytes: (self.options.parquet.row_group_bytes / sharing.max(1))
                        .max(MIN_ROW_GROUP_BYTES),
                    ..self.options.parquet
                },
                move |part| layout.data_file(started_at, run_id, chunk, part),
            );
            let written = held(slot.as_ref(), async {
                let mut read_rows = 0u64;
                while let Some(batch) = batches.next().await {
                    let batch: RecordBatch = batch?;
                    // Belt and braces behind the `where` parser: rows beyond the chunk's
                    // range would land twice (once per chunk) and COMPLETE silently.
                    read_rows += batch.num_rows() as u64;
                    if read_rows > bound_rows {
                        return Err(PipelineError::Run {
                            run_id,
                            message: format!(
                                "chunk {chunk} read more rows ({read_rows} so far) than the {bound_rows} its range holds at the source, counted in the same snapshot: its query reads outside the chunk's range (is `where` one boolean expression?); stopped before anything was loaded"
                            ),
                        });
                    }
                    writer.write(&batch).await?;
                    observer.rows_written(&key, batch.num_rows() as u64);
                    // Tests crash a chunk here, mid-upload (FAILPOINTS=extract-after-batch=1*panic).
                    fail::fail_point!("extract-after-batch");
                }
                // A source that counts its own read says how many rows it sent once done.
                let source_rows = match &source_count {
                    Some(counted) => {
                        let counted = *counted.lock().unwrap_or_else(|e| e.into_inner());
                        counted.ok_or_else(|| PipelineError::Run {
                            run_id,
                            message: format!(
                                "chunk {chunk}'s read ended without the source's count of the rows it sent; nothing was loaded"
                            ),
                        })?
                    }
                    None => bound_rows,
                };
                // Without a `where` the count is exactly what the read must bring: fewer rows
                // means some were lost between the source and the files.
                if exact && read_rows != source_rows {
                    let counted = if source_count.is_some() {
                        "the source sent"
                    } else {
                        "its range holds at the source, counted in the same snapshot"
                    };
                    return Err(PipelineError::Run {
                        run_id,
                        message: format!(
                            "chunk {chunk} read {read_rows} rows, but {source_rows} is what {counted}: rows were lost between the source and the files; nothing was loaded"
                        ),
                    });
                }
                Ok::<_, PipelineError>(source_rows)
            })
            .await;
            // The source is read: its connection closes with the stream, and its slot is
            // free for the next reader, once it has closed, while the last part uploads.
            drop(batches);
            if let (Some(_), Some(closed)) = (&slot, closed) {
                // Bounded: a connection that does not close in time is the server's to end.
                let _ = tokio::time::timeout(CONNECTION_CLOSE_WAIT, closed).await;
            }
            release(slot).await;
            let source_rows = match written {
                Ok(source_rows) => source_rows,
                Err(e) => {
                    writer.abort().await;
                    return Err(e);
                }
            };
            let files = writer.finish().await?;
            let outcome = ChunkOutcome {
                rows: files.iter().map(|f| f.rows).sum(),
                bytes: files.iter().map(|f| f.bytes).sum(),
                files,
                schema: manifest_columns(&file_schema(&schema)),
                warnings: warnings.snapshot(),
                seconds: started.elapsed().as_secs_f64(),
                source_rows: (!plan.reads_changes()).then_some(source_rows),
                cdc_reached: match &cdc_reached {
                    Some(reached) => {
                        let reached = *reached.lock().unwrap_or_else(|e| e.into_inner());
                        Some(reached.ok_or_else(|| PipelineError::Run {
                            run_id,
                            message: format!(
                                "chunk {chunk} read the change log but did not say where it ended; nothing was recorded"
                            ),
                        })?)
                    }
                    None => None,
                },
            };
            tracing::Span::current()
                .record("rows", outcome.rows)
                .record("bytes", outcome.bytes);
            info!(files = outcome.files.len(), "chunk extracted");
            let done = self
                .state
                .record_chunk_done(run_id, chunk, &outcome)
                .await?;
            info!(
                newly_recorded = done.newly_recorded,
                done = done.done,
                total = done.total,
                is_last = done.is_last,
                "chunk recorded"
            );
            // The crash tests kill a run here: a chunk recorded, its successor not started.
            fail::fail_point!("extract-after-record");
            observer.chunk_done(&key, chunk, &outcome);
            Ok(ChunkReport {
                outcome,
                newly_recorded: done.newly_recorded,
                is_last: done.is_last,
            })
        }
        .instrument(span)
        .await
    }
}

/// Longest a chunk waits for its source connection to close before it frees its slot.
const CONNECTION_CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

fn manifest_columns(schema: &SchemaRef) -> Vec<ManifestColumn> {
    let parquet = parquet_types(schema);
    schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| ManifestColumn {
            name: f.name().clone(),
            data_type: f.data_type().to_string(),
            nullable: f.is_nullable(),
            parquet_type: parquet.get(i).cloned().unwrap_or_default(),
        })
        .collect()
}

/// The Parquet type of each top-level column, as the writer will store it (the same
/// conversion the Arrow writer makes); nested columns list their leaves.
fn parquet_types(schema: &SchemaRef) -> Vec<String> {
    use parquet::basic::{LogicalType, Type as PhysicalType};
    let Ok(descriptor) = parquet::arrow::ArrowSchemaConverter::new().convert(schema) else {
        return Vec::new();
    };
    let mut out = vec![String::new(); schema.fields().len()];
    for (leaf, column) in descriptor.columns().iter().enumerate() {
        let physical = match column.physical_type() {
            PhysicalType::FIXED_LEN_BYTE_ARRAY => {
                format!("FIXED_LEN_BYTE_ARRAY({})", column.type_length())
            }
            other => other.to_string(),
        };
        let logical = match column.logical_type_ref() {
            None => String::new(),
            Some(LogicalType::Decimal(d)) => format!(" DECIMAL({},{})", d.precision, d.scale),
            Some(LogicalType::Timestamp(t)) => {
                format!(" TIMESTAMP({:?}, utc={})", t.unit, t.is_adjusted_to_u_t_c)
            }
            Some(LogicalType::Time(t)) => {
                format!(" TIME({:?}, utc={})", t.unit, t.is_adjusted_to_u_t_c)
            }
            Some(LogicalType::Integer(i)) => format!(
                " INT({}, {})",
                i.bit_width,
                if i.is_signed { "signed" } else { "unsigned" }
            ),
            Some(LogicalType::String) => " STRING".into(),
            Some(LogicalType::Date) => " DATE".into(),
            Some(other) => format!(" {other:?}").to_uppercase(),
        };
        let path = column.path().parts();
        let text = if path.len() > 1 {
            format!("{}: {physical}{logical}", path[1..].join("."))
        } else {
            format!("{physical}{logical}")
        };
        if let Some(slot) = out.get_mut(descriptor.get_column_root_idx(leaf)) {
            if !slot.is_empty() {
                slot.push_str("; ");
            }
            slot.push_str(&text);
        }
    }
    out
}

/// Drives a source stream on its own task, `depth` batches ahead of the consumer, so decoding
/// and Parquet encoding run on different cores while memory stays bounded by `depth`. Dropping
/// the returned stream stops the task (and drops the source stream, closing its connection)
/// at once, not after the batch it is reading.
fn prefetch(
    mut stream: BoxStream<'static, Result<RecordBatch, SourceError>>,
    depth: usize,
) -> BoxStream<'static, Result<RecordBatch, PipelineError>> {
    let (tx, rx) = tokio::sync::mpsc::channel(depth.max(1));
    let task = tokio::spawn(
        async move {
            while let Some(item) = stream.next().await {
                let stop = item.is_err();
                if tx.send(item).await.is_err() || stop {
                    break;
                }
            }
        }
        .in_current_span(),
    );
    futures::stream::unfold((rx, AbortOnDrop(task)), |(mut rx, task)| async move {
        rx.recv()
            .await
            .map(|item| (item.map_err(PipelineError::from), (rx, task)))
    })
    .boxed()
}

/// Aborts its task when dropped.
pub(super) struct AbortOnDrop(pub(super) tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
