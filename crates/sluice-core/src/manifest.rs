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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::config::Config;
    use crate::plan::{ChunkRange, CursorWindow, RunPlan};
    use crate::run::ChunkOutcome;

    fn plan(chunks: usize) -> RunPlan {
        let config = Config::from_yaml(
            "sources:\n  - name: shop\n    engine: postgres\n    connection:\n      url: postgres://u@h/db\n\
             tables:\n  - source: shop\n    table: public.orders\n    primary_key: [id]\n    load: { mode: incremental, cursor: n }\n",
            "test",
        )
        .unwrap();
        RunPlan {
            run_id: RunId::new(),
            engine: Engine::Postgres,
            started_at: Utc::now(),
            table: config.tables[0].clone(),
            columns: vec!["id".into(), "n".into()],
            cursor: Some(CursorWindow {
                column: "n".into(),
                lower: Some(ScalarValue::Int(10)),
                upper: Some(ScalarValue::Int(20)),
                include_nulls: false,
                hold: None,
            }),
            partition_column: None,
            chunks: vec![ChunkRange::All; chunks],
            snapshot: None,
            casts: BTreeMap::new(),
            warnings: BTreeMap::new(),
            keyset: false,
            cdc: None,
        }
    }

    fn column(name: &str) -> ManifestColumn {
        ManifestColumn {
            name: name.into(),
            data_type: "Int64".into(),
            nullable: false,
            parquet_type: "INT64".into(),
        }
    }

    fn outcome(chunk: u32, parts: u32, schema: &[&str]) -> ChunkOutcome {
        let files: Vec<FileEntry> = (0..parts)
            .map(|part| FileEntry {
                key: format!("t/part-{chunk}-{part}.parquet"),
                chunk,
                part,
                rows: 10,
                bytes: 100,
            })
            .collect();
        ChunkOutcome {
            rows: 10 * u64::from(parts),
            bytes: 100 * u64::from(parts),
            files,
            schema: schema.iter().map(|c| column(c)).collect(),
            warnings: BTreeMap::new(),
            seconds: 1.0,
            source_rows: None,
            cdc_reached: None,
        }
    }

    #[test]
    fn a_manifest_lists_every_chunks_files_in_order_with_the_plans_window() {
        let plan = plan(3);
        let chunks = BTreeMap::from([
            (2, outcome(2, 1, &["id", "n"])),
            (0, outcome(0, 2, &["id", "n"])),
            // A chunk that read nothing wrote no file and has no say in the schema.
            (1, outcome(1, 0, &[])),
        ]);
        let manifest = assemble(plan.run_id, &plan, &chunks).unwrap();
        let keys: Vec<&str> = manifest.files.iter().map(|f| f.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "t/part-0-0.parquet",
                "t/part-0-1.parquet",
                "t/part-2-0.parquet"
            ]
        );
        assert_eq!((manifest.rows, manifest.bytes), (30, 300));
        assert_eq!(manifest.schema, vec![column("id"), column("n")]);
        assert_eq!(manifest.watermark_lower, Some(ScalarValue::Int(10)));
        assert_eq!(manifest.watermark_upper, Some(ScalarValue::Int(20)));
        assert_eq!(
            (manifest.source.as_str(), manifest.table.as_str()),
            ("shop", "public.orders")
        );
    }

    #[test]
    fn a_manifest_is_refused_while_a_chunk_is_missing_or_when_chunks_disagree_on_the_schema() {
        let plan = plan(3);
        let missing = BTreeMap::from([(1, outcome(1, 1, &["id", "n"]))]);
        assert_eq!(
            assemble(plan.run_id, &plan, &missing),
            Err(AssembleError::ChunksMissing(vec![0, 2]))
        );
        let changed = BTreeMap::from([
            (0, outcome(0, 1, &["id", "n"])),
            (1, outcome(1, 1, &["id", "n", "added"])),
            (2, outcome(2, 1, &["id", "n"])),
        ]);
        assert_eq!(
            assemble(plan.run_id, &plan, &changed),
            Err(AssembleError::SchemaChanged(1))
        );
    }
}
