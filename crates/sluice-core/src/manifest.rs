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
