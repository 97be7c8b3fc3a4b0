//! The run manifest: written last, after every data file is complete, so its presence means
//! the run's data is complete. COPY loads exactly the files it lists.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::Engine;
use crate::plan::ScalarValue;
use crate::run::{FileEntry, RunId};

pub const MANIFEST_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u32,
    pub run_id: RunId,
    pub engine: Engine,
    pub source: String,
    pub table: String,
    pub started_at: DateTime<Utc>,
    /// Every data file, in chunk then part order.
    pub files: Vec<FileEntry>,
    pub rows: u64,
    pub bytes: u64,
    /// The Arrow schema of every file (they all share it).
    pub schema: Vec<ManifestColumn>,
    /// The cursor window the run read: `(lower, upper]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watermark_lower: Option<ScalarValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watermark_upper: Option<ScalarValue>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestColumn {
    pub name: String,
    /// Arrow's display form of the type, e.g. `Decimal128(12, 2)`.
    pub data_type: String,
    pub nullable: bool,
    /// How the column is stored in Parquet: physical type and logical annotation of each leaf,
    /// e.g. `INT64 TIMESTAMP(MICROS, utc=true)` or `FIXED_LEN_BYTE_ARRAY(6) DECIMAL(12,2)`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub parquet_type: String,
}

/// Why a run's chunks cannot make one manifest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssembleError {
    #[error("cannot finalize: chunks {0:?} are not done")]
    ChunksMissing(Vec<u32>),
    #[error(
        "chunk {0} wrote a different schema than the other chunks (the table changed during the run)"
    )]
    SchemaChanged(u32),
}

/// The manifest of a run whose chunks are all done: every chunk's files in chunk then part
/// order, their one schema, and the plan's cursor window. Refused while a planned chunk has no
/// outcome, or when chunks that wrote files disagree on the schema (the table changed under
/// the run: loading them together would misplace columns). A chunk that wrote nothing has no
/// say in the schema.
pub fn assemble(
    run_id: RunId,
    plan: &crate::plan::RunPlan,
    chunks: &std::collections::BTreeMap<u32, crate::run::ChunkOutcome>,
) -> Result<Manifest, AssembleError> {
    let planned = u32::try_from(plan.chunks.len()).unwrap_or(u32::MAX);
    let missing: Vec<u32> = (0..planned).filter(|c| !chunks.contains_key(c)).collect();
    if !missing.is_empty() {
        return Err(AssembleError::ChunksMissing(missing));
    }
    let schema = chunks
        .values()
        .find(|c| !c.files.is_empty())
        .or_else(|| chunks.values().next())
        .map(|c| c.schema.clone())
        .unwrap_or_default();
    if let Some((chunk, _)) = chunks
        .iter()
        .find(|(_, c)| !c.files.is_empty() && c.schema != schema)
    {
        return Err(AssembleError::SchemaChanged(*chunk));
    }
    let files: Vec<FileEntry> = chunks.values().flat_map(|c| c.files.clone()).collect();
    Ok(Manifest {
        version: MANIFEST_VERSION,
        run_id,
        engine: plan.engine,
        source: plan.table.source.clone(),
        table: plan.table.table.clone(),
        started_at: plan.started_at,
        rows: files.iter().map(|f| f.rows).sum(),
        bytes: files.iter().map(|f| f.bytes).sum(),
        files,
        schema,
        watermark_lower: plan.cursor.as_ref().and_then(|c| c.lower.clone()),
        watermark_upper: plan.cursor.as_ref().and_then(|c| c.upper.clone()),
    })
}
