//! The `ObjectSink` port: where Parquet files and manifests are written.
//!
//! Every sink is an `object_store` store plus a way to name its objects for people; the local
//! directory and S3 differ only in how the store is built.

pub mod parquet;

use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum SinkError {
    #[error("output location {location}: {message}")]
    Location { location: String, message: String },
    #[error("object {key}: {source}")]
    Object {
        key: String,
        #[source]
        source: object_store::Error,
    },
    #[error("object key '{key}' is not valid: {message}")]
    Key { key: String, message: String },
    #[error("writing Parquet {key}: {source}")]
    Parquet {
        key: String,
        #[source]
        source: ::parquet::errors::ParquetError,
    },
    #[error("batch for {key} does not match the file's schema: {message}")]
    Schema { key: String, message: String },
}

pub type Result<T, E = SinkError> = std::result::Result<T, E>;

/// A place to write objects: the local directory here, S3 in AWS.
pub trait ObjectSink: Send + Sync {
    fn store(&self) -> Arc<dyn ObjectStore>;
    /// A URL a person can follow to the object (`file:///…`, `s3://bucket/…`).
    fn url_for(&self, key: &str) -> String;
}

pub fn object_path(key: &str) -> Result<Path> {
    Path::parse(key).map_err(|e| SinkError::Key {
        key: key.to_owned(),
        message: e.to_string(),
    })
}

/// Writes a small object in one request (manifests); object stores make it appear whole.
pub async fn put_bytes(sink: &dyn ObjectSink, key: &str, bytes: Bytes) -> Result<u64> {
    let len = bytes.len() as u64;
    sink.store()
        .put(&object_path(key)?, PutPayload::from_bytes(bytes))
        .await
        .map_err(|source| SinkError::Object {
            key: key.to_owned(),
            source,
        })?;
    Ok(len)
}

/// Reads a whole object (manifests, tests).
pub async fn get_bytes(sink: &dyn ObjectSink, key: &str) -> Result<Bytes> {
    let object = |source| SinkError::Object {
        key: key.to_owned(),
        source,
    };
    sink.store()
        .get(&object_path(key)?)
        .await
        .map_err(object)?
        .bytes()
        .await
        .map_err(object)
}

/// A directory on the local file system. Objects appear only when complete: `object_store`
/// writes to a temporary file and renames it into place.
pub struct LocalDirSink {
    root: PathBuf,
    store: Arc<LocalFileSystem>,
}

impl LocalDirSink {
    /// Creates the directory if it is missing.
    pub fn new(root: impl AsRef<FsPath>) -> Result<LocalDirSink> {
        let root = root.as_ref();
        let location_error = |message: String| SinkError::Location {
            location: root.display().to_string(),
            message,
        };
        std::fs::create_dir_all(root)
            .map_err(|e| location_error(format!("cannot create it: {e}")))?;
        let root = root
            .canonicalize()
            .map_err(|e| location_error(format!("cannot resolve it: {e}")))?;
        let store =
            LocalFileSystem::new_with_prefix(&root).map_err(|e| location_error(e.to_string()))?;
        Ok(LocalDirSink {
            root,
            store: Arc::new(store),
        })
    }

    pub fn root(&self) -> &FsPath {
        &self.root
    }
}

impl ObjectSink for LocalDirSink {
    fn store(&self) -> Arc<dyn ObjectStore> {
        self.store.clone()
    }

    fn url_for(&self, key: &str) -> String {
        format!("file://{}/{key}", self.root.display())
    }
}
