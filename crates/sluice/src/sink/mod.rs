//! The `ObjectSink` port: where Parquet files and manifests are written.
//!
//! Every sink is an `object_store` store plus a way to name its objects for people; the local
//! directory and S3 differ only in how the store is built (`LocalDirSink`, `s3::S3Sink`).

pub mod parquet;
pub mod s3;

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
    #[error(
        "bucket '{bucket}' does not exist (writing {url}): create it or fix the output location"
    )]
    BucketMissing { bucket: String, url: String },
    #[error(
        "access denied writing {url}: the credentials in use may not write there (the IAM policy needs s3:PutObject and s3:AbortMultipartUpload on the output prefix)"
    )]
    AccessDenied { url: String },
}

impl SinkError {
    /// Replaces an object store's raw answer with what it means for the person running
    /// sluice, where it is one of the usual mistakes (wrong bucket, missing permission).
    pub fn explained(self, sink: &dyn ObjectSink) -> SinkError {
        let key = match &self {
            SinkError::Object { key, .. } | SinkError::Parquet { key, .. } => key.clone(),
            _ => return self,
        };
        let mut chain = String::new();
        let mut denied = false;
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&self);
        while let Some(e) = source {
            if let Some(store_error) = e.downcast_ref::<object_store::Error>() {
                denied |= matches!(
                    store_error,
                    object_store::Error::PermissionDenied { .. }
                        | object_store::Error::Unauthenticated { .. }
                );
            }
            chain.push_str(&e.to_string());
            source = e.source();
        }
        let url = sink.url_for(&key);
        if chain.contains("NoSuchBucket") {
            let bucket = url
                .strip_prefix("s3://")
                .and_then(|rest| rest.split('/').next())
                .unwrap_or_default()
                .to_owned();
            return SinkError::BucketMissing { bucket, url };
        }
        if denied || chain.contains("<Code>AccessDenied</Code>") {
            return SinkError::AccessDenied { url };
        }
        self
    }
}

pub type Result<T, E = SinkError> = std::result::Result<T, E>;

/// A place to write objects: the local directory here, S3 in AWS.
pub trait ObjectSink: Send + Sync {
    fn store(&self) -> Arc<dyn ObjectStore>;
    /// A URL a person can follow to the object (`file:///…`, `s3://bucket/…`).
    fn url_for(&self, key: &str) -> String;
    /// The smallest multipart part the store accepts (S3: 5 MiB); 0 where parts are free.
    fn minimum_part_bytes(&self) -> usize {
        0
    }
    /// Removes the unfinished uploads a killed writer left in directory `dir` for objects
    /// whose name starts with `name_prefix`, and says which (as keys). Readers never see an
    /// unfinished upload as an object, but a local directory shows it as a file. On S3 it does
    /// nothing: an upload never completed is no object (no listing shows it), and the bucket's
    /// lifecycle rule `AbortIncompleteMultipartUpload` (in `template.yaml`) removes its parts
    /// (<https://docs.aws.amazon.com/AmazonS3/latest/API/API_AbortIncompleteMultipartUpload.html>,
    /// <https://docs.aws.amazon.com/AmazonS3/latest/userguide/mpuoverview.html>).
    fn remove_unfinished_uploads<'a>(
        &'a self,
        _dir: &'a str,
        _name_prefix: &'a str,
    ) -> futures::future::BoxFuture<'a, Result<Vec<String>>> {
        Box::pin(async { Ok(Vec::new()) })
    }
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
        .map_err(|source| {
            SinkError::Object {
                key: key.to_owned(),
                source,
            }
            .explained(sink)
        })?;
    Ok(len)
}

/// The keys of the objects directly or indirectly under `dir`.
pub async fn list_keys(sink: &dyn ObjectSink, dir: &str) -> Result<Vec<String>> {
    use futures::TryStreamExt;
    let prefix = object_path(dir)?;
    sink.store()
        .list(Some(&prefix))
        .map_ok(|meta| meta.location.to_string())
        .try_collect()
        .await
        .map_err(|source| {
            SinkError::Object {
                key: dir.to_owned(),
                source,
            }
            .explained(sink)
        })
}

/// Deletes an object; one that does not exist is not an error.
pub async fn delete_key(sink: &dyn ObjectSink, key: &str) -> Result<()> {
    match sink.store().delete(&object_path(key)?).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(source) => Err(SinkError::Object {
            key: key.to_owned(),
            source,
        }
        .explained(sink)),
    }
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

    /// `object_store` stages a local upload in `<key>#<n>` beside its key and renames it into
    /// place when complete; a process killed mid-upload leaves that file behind.
    fn remove_unfinished_uploads<'a>(
        &'a self,
        dir: &'a str,
        name_prefix: &'a str,
    ) -> futures::future::BoxFuture<'a, Result<Vec<String>>> {
        Box::pin(async move {
            let path = self.root.join(dir);
            let entries = match std::fs::read_dir(&path) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                Err(e) => {
                    return Err(SinkError::Location {
                        location: path.display().to_string(),
                        message: format!("cannot list it: {e}"),
                    });
                }
            };
            let mut removed = Vec::new();
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let staged = name.starts_with(name_prefix)
                    && name.rsplit_once('#').is_some_and(|(_, n)| {
                        !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())
                    });
                if staged && std::fs::remove_file(entry.path()).is_ok() {
                    removed.push(format!("{dir}/{name}"));
                }
            }
            Ok(removed)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::{ObjectStoreExt, WriteMultipart};

    /// A multipart upload abandoned mid-way (its writer forgotten, as a killed process's is)
    /// leaves `object_store`'s staged file beside its key; only the named run's are removed,
    /// and complete objects stay.
    #[tokio::test]
    async fn unfinished_local_uploads_of_a_run_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let sink = LocalDirSink::new(dir.path()).unwrap();
        let store = sink.store();
        for key in [
            "t/2026/part-A-0001-0000.parquet",
            "t/2026/part-B-0001-0000.parquet",
        ] {
            let upload = store
                .put_multipart(&object_path(key).unwrap())
                .await
                .unwrap();
            let mut writer = WriteMultipart::new(upload);
            writer.write(b"half a file");
            writer.wait_for_capacity(0).await.unwrap();
            // A killed process runs no destructor (dropping the upload would delete it).
            std::mem::forget(writer);
        }
        put_bytes(
            &sink,
            "t/2026/part-A-0000-0000.parquet",
            Bytes::from_static(b"whole"),
        )
        .await
        .unwrap();
        let on_disk = || {
            let mut names: Vec<String> = std::fs::read_dir(dir.path().join("t/2026"))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        };
        assert!(
            on_disk()
                .iter()
                .any(|n| n.starts_with("part-A-0001-0000.parquet#")),
            "the abandoned upload left its staged file: {:?}",
            on_disk()
        );
        let removed = sink
            .remove_unfinished_uploads("t/2026", "part-A-")
            .await
            .unwrap();
        assert_eq!(removed.len(), 1, "{removed:?}");
        assert!(removed[0].starts_with("t/2026/part-A-0001-0000.parquet#"));
        let left = on_disk();
        assert!(
            left.contains(&"part-A-0000-0000.parquet".to_owned()),
            "{left:?}"
        );
        assert!(
            left.iter()
                .any(|n| n.starts_with("part-B-0001-0000.parquet#")),
            "{left:?}"
        );
        assert!(
            !left.iter().any(|n| n.starts_with("part-A-0001")),
            "{left:?}"
        );
        // Nothing is listed as an object either way.
        assert!(
            store
                .head(&object_path("t/2026/part-A-0001-0000.parquet").unwrap())
                .await
                .is_err()
        );
    }
}
