//! Streaming Parquet writer for one chunk: opens a file lazily on the first batch, adds the
//! `_sluice_*` metadata columns, flushes row groups by size and rolls files at a size limit.

use std::sync::Arc;

use arrow::array::{ArrayRef, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use object_store::buffered::BufWriter;
use parquet::arrow::AsyncArrowWriter;
use parquet::arrow::async_writer::AsyncFileWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::properties::{EnabledStatistics, WriterProperties, WriterVersion};
use parquet::schema::types::ColumnPath;
use sluice_core::RunId;
use sluice_core::run::FileEntry;
use tokio::io::AsyncWriteExt;
use tracing::debug;

use super::{ObjectSink, Result, SinkError, object_path};

pub const RUN_ID_COLUMN: &str = "_sluice_run_id";
/// Row groups smaller than this compress poorly and bloat file metadata.
pub const MIN_ROW_GROUP_BYTES: usize = 8 * 1024 * 1024;
pub const EXTRACTED_AT_COLUMN: &str = "_sluice_extracted_at";

/// File and row-group sizing. Defaults keep a writer's memory to a few tens of megabytes
/// while producing files large enough for efficient warehouse loads.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ParquetSettings {
    pub compression: ParquetCompression,
    /// A file is closed and the next part opened once it reaches this size.
    pub max_file_bytes: u64,
    /// A row group is flushed once its encoded size reaches this many bytes…
    pub row_group_bytes: usize,
    /// …or this many rows, whichever comes first.
    pub row_group_rows: usize,
    /// Bytes buffered before an upload part is sent. Raised where needed to the store's
    /// minimum (S3: 5 MiB) and so that S3's 10,000 parts cover a file of `max_file_bytes`.
    pub upload_part_bytes: usize,
    /// Parts uploaded at once per file; each holds a part's bytes in memory.
    pub upload_concurrency: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParquetCompression {
    Zstd,
    Snappy,
}

impl ParquetSettings {
    /// The defaults with the sizes a deployment or the CLI sets, in MiB.
    pub fn sized(
        compression: ParquetCompression,
        row_group_mb: u32,
        file_mb: u32,
        part_mb: u32,
    ) -> ParquetSettings {
        const MIB: usize = 1024 * 1024;
        ParquetSettings {
            compression,
            max_file_bytes: u64::from(file_mb) * MIB as u64,
            row_group_bytes: row_group_mb as usize * MIB,
            upload_part_bytes: part_mb as usize * MIB,
            ..ParquetSettings::default()
        }
    }
}

impl Default for ParquetSettings {
    fn default() -> Self {
        ParquetSettings {
            compression: ParquetCompression::Zstd,
            max_file_bytes: 256 * 1024 * 1024,
            row_group_bytes: 32 * 1024 * 1024,
            row_group_rows: 1_000_000,
            upload_part_bytes: 10 * 1024 * 1024,
            upload_concurrency: 2,
        }
    }
}

impl ParquetSettings {
    /// The part size actually used with a store whose parts must be at least `minimum`: at
    /// least the configured size, and large enough that S3's part limit covers twice the
    /// file size target (a file may overshoot it by a row group).
    pub fn part_bytes(&self, minimum: usize) -> usize {
        let cover = self
            .max_file_bytes
            .saturating_mul(2)
            .div_ceil(super::s3::S3_MAX_PARTS);
        self.upload_part_bytes
            .max(minimum)
            .max(usize::try_from(cover).unwrap_or(usize::MAX))
            .max(1)
    }
}

/// The one place writer properties are decided.
pub fn writer_properties(settings: &ParquetSettings, schema: &SchemaRef) -> WriterProperties {
    let compression = match settings.compression {
        // Level 1: most of zstd's ratio at a fraction of its CPU.
        ParquetCompression::Zstd => Compression::ZSTD(ZstdLevel::try_new(1).unwrap_or_default()),
        ParquetCompression::Snappy => Compression::SNAPPY,
    };
    let mut builder = WriterProperties::builder()
        .set_writer_version(WriterVersion::PARQUET_1_0)
        .set_compression(compression)
        .set_max_row_group_row_count(Some(settings.row_group_rows.max(1)))
        .set_max_row_group_bytes(Some(settings.row_group_bytes.max(1)))
        .set_created_by(format!("sluice {}", env!("CARGO_PKG_VERSION")));
    // Dictionaries pay off for repeated strings (statuses, codes, the run id); keys, amounts
    // and timestamps are mostly distinct, and hashing every one of them into a dictionary that
    // is then abandoned costs more CPU than the rest of the encoding.
    for field in schema.fields() {
        if !matches!(
            field.data_type(),
            DataType::Utf8 | DataType::Binary | DataType::List(_)
        ) {
            builder = builder
                .set_column_dictionary_enabled(ColumnPath::from(field.name().as_str()), false);
        }
    }
    // The run id is one value per file, named by the file's manifest: its min/max would say
    // nothing new, and computing them compared it twice per row (8 % of a narrow table's CPU).
    builder = builder
        .set_column_statistics_enabled(ColumnPath::from(RUN_ID_COLUMN), EnabledStatistics::None);
    builder.build()
}

/// The schema of the files: the source's columns, then the metadata columns.
pub fn file_schema(source: &SchemaRef) -> SchemaRef {
    let mut fields: Vec<Field> = source.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new(RUN_ID_COLUMN, DataType::Utf8, false));
    fields.push(Field::new(
        EXTRACTED_AT_COLUMN,
        DataType::Timestamp(TimeUnit::Microsecond, Some(Arc::from("UTC"))),
        false,
    ));
    Arc::new(Schema::new(fields))
}

struct OpenFile {
    key: String,
    part: u32,
    rows: u64,
    writer: AsyncArrowWriter<UploadWriter>,
}

/// The upload under a Parquet file. It remembers whether completion began: once it has,
/// `object_store` has either finished the upload or aborted it itself (`WriteMultipart::finish`
/// aborts when a part or the completion fails), and aborting again would panic; before, an
/// abort is what keeps a half-written file from ever appearing.
struct UploadWriter {
    upload: BufWriter,
    part_bytes: usize,
    completing: bool,
}

impl UploadWriter {
    async fn abort(mut self) -> object_store::Result<()> {
        if self.completing {
            return Ok(());
        }
        self.upload.abort().await
    }
}

impl AsyncFileWriter for UploadWriter {
    fn write(&mut self, bytes: Bytes) -> BoxFuture<'_, parquet::errors::Result<()>> {
        // A row group arrives as one buffer of up to the row-group size. `BufWriter::put`
        // waits for upload capacity only once per call and then starts every part the buffer
        // fills, so it is fed a part at a time: that is what bounds the parts in flight.
        Box::pin(async move {
            let mut rest = bytes;
            while !rest.is_empty() {
                let piece = rest.split_to(rest.len().min(self.part_bytes));
                self.upload
                    .put(piece)
                    .await
                    .map_err(|e| ParquetError::External(Box::new(e)))?;
            }
            Ok(())
        })
    }

    fn complete(&mut self) -> BoxFuture<'_, parquet::errors::Result<()>> {
        self.completing = true;
        Box::pin(async move {
            self.upload
                .shutdown()
                .await
                .map_err(|e| ParquetError::External(Box::new(e)))
        })
    }
}

/// Writes one chunk's batches as `part-…-<chunk>-<part>.parquet` files.
pub struct ChunkFileWriter {
    sink: Arc<dyn ObjectSink>,
    key_for_part: Box<dyn Fn(u32) -> String + Send + Sync>,
    chunk: u32,
    schema: SchemaRef,
    run_id: String,
    extracted_at_micros: i64,
    /// The metadata columns for the largest batch so far (see `metadata_columns`).
    metadata: Option<(ArrayRef, ArrayRef)>,
    settings: ParquetSettings,
    properties: WriterProperties,
    current: Option<OpenFile>,
    next_part: u32,
    files: Vec<FileEntry>,
}

impl ChunkFileWriter {
    pub fn new(
        sink: Arc<dyn ObjectSink>,
        source_schema: &SchemaRef,
        run_id: RunId,
        chunk: u32,
        extracted_at: DateTime<Utc>,
        settings: ParquetSettings,
        key_for_part: impl Fn(u32) -> String + Send + Sync + 'static,
    ) -> ChunkFileWriter {
        let schema = file_schema(source_schema);
        ChunkFileWriter {
            sink,
            key_for_part: Box::new(key_for_part),
            chunk,
            schema: schema.clone(),
            run_id: run_id.to_string(),
            extracted_at_micros: extracted_at.timestamp_micros(),
            metadata: None,
            properties: writer_properties(&settings, &schema),
            settings,
            current: None,
            next_part: 0,
            files: Vec::new(),
        }
    }

    /// Writes one batch of source columns.
    pub async fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        if self.current.is_none() {
            self.open_next()?;
        }
        let rows = batch.num_rows();
        let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
        let (run_id, extracted_at) = self.metadata_columns(rows);
        columns.push(run_id);
        columns.push(extracted_at);
        let Some(file) = self.current.as_mut() else {
            return Ok(());
        };
        let full =
            RecordBatch::try_new(self.schema.clone(), columns).map_err(|e| SinkError::Schema {
                key: file.key.clone(),
                message: e.to_string(),
            })?;
        let parquet_error = |key: &str| {
            let key = key.to_owned();
            move |source| SinkError::Parquet { key, source }
        };
        let sink = self.sink.clone();
        file.writer
            .write(&full)
            .await
            .map_err(parquet_error(&file.key))
            .map_err(|e| e.explained(sink.as_ref()))?;
        file.rows += rows as u64;
        let size = (file.writer.bytes_written() + file.writer.in_progress_size()) as u64;
        if size >= self.settings.max_file_bytes {
            self.close_current().await?;
        }
        Ok(())
    }

    /// The run id and extraction time columns for `rows` rows. They hold one value each, so
    /// they are built once, for the largest batch seen, and sliced (no copy) for each batch:
    /// building them anew cost a copy of the run id per row.
    fn metadata_columns(&mut self, rows: usize) -> (ArrayRef, ArrayRef) {
        let (run_id, extracted_at) = match &self.metadata {
            Some(built) if built.0.len() >= rows => built.clone(),
            _ => {
                let run_id: ArrayRef = Arc::new(StringArray::from_iter_values(
                    std::iter::repeat_n(self.run_id.as_str(), rows),
                ));
                let extracted_at: ArrayRef = Arc::new(
                    TimestampMicrosecondArray::from_value(self.extracted_at_micros, rows)
                        .with_timezone("UTC"),
                );
                self.metadata = Some((run_id.clone(), extracted_at.clone()));
                (run_id, extracted_at)
            }
        };
        (run_id.slice(0, rows), extracted_at.slice(0, rows))
    }

    /// Completes the open file and returns every file written, in part order.
    pub async fn finish(mut self) -> Result<Vec<FileEntry>> {
        self.close_current().await?;
        Ok(std::mem::take(&mut self.files))
    }

    /// Abandons the open file: its upload is aborted so nothing appears at its key. Files
    /// already completed stay; a retry of the chunk overwrites them under the same keys.
    pub async fn abort(mut self) {
        if let Some(file) = self.current.take()
            && let Err(e) = file.writer.into_inner().abort().await
        {
            debug!(key = %file.key, error = %e, "aborting an unfinished upload failed");
        }
    }

    fn open_next(&mut self) -> Result<()> {
        let part = self.next_part;
        self.next_part += 1;
        let key = (self.key_for_part)(part);
        let part_bytes = self.settings.part_bytes(self.sink.minimum_part_bytes());
        let writer = BufWriter::with_capacity(self.sink.store(), object_path(&key)?, part_bytes)
            .with_max_concurrency(self.settings.upload_concurrency.max(1));
        let writer = UploadWriter {
            upload: writer,
            part_bytes,
            completing: false,
        };
        let writer =
            AsyncArrowWriter::try_new(writer, self.schema.clone(), Some(self.properties.clone()))
                .map_err(|source| SinkError::Parquet {
                key: key.clone(),
                source,
            })?;
        self.current = Some(OpenFile {
            key,
            part,
            rows: 0,
            writer,
        });
        Ok(())
    }

    async fn close_current(&mut self) -> Result<()> {
        let Some(mut file) = self.current.take() else {
            return Ok(());
        };
        if let Err(source) = file.writer.finish().await {
            let key = file.key.clone();
            if let Err(e) = file.writer.into_inner().abort().await {
                debug!(%key, error = %e, "aborting an unfinished upload failed");
            }
            return Err(SinkError::Parquet { key, source }.explained(self.sink.as_ref()));
        }
        let bytes = file.writer.bytes_written() as u64;
        debug!(key = %file.key, rows = file.rows, bytes, "parquet file complete");
        self.files.push(FileEntry {
            key: file.key,
            chunk: self.chunk,
            part: file.part,
            rows: file.rows,
            bytes,
        });
        // The crash tests kill a run here: a file complete, its chunk not yet recorded.
        fail::fail_point!("extract-after-file");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1024 * 1024;

    #[test]
    fn parts_respect_the_store_minimum_and_the_part_limit() {
        let settings = ParquetSettings {
            upload_part_bytes: MIB,
            max_file_bytes: 256 * MIB as u64,
            ..ParquetSettings::default()
        };
        // Locally any size goes; S3 gets its 5 MiB minimum.
        assert_eq!(settings.part_bytes(0), MIB);
        assert_eq!(settings.part_bytes(5 * MIB), 5 * MIB);
        // A 100 GiB file target needs parts of at least 2 × 100 GiB / 10,000.
        let huge = ParquetSettings {
            max_file_bytes: 100 * 1024 * MIB as u64,
            ..settings
        };
        let part = huge.part_bytes(5 * MIB);
        assert!(part as u64 * 10_000 >= 2 * huge.max_file_bytes, "{part}");
        assert!(part < 21 * MIB + MIB, "{part}");
    }
}
