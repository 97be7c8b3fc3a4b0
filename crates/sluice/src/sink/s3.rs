//! The S3 sink: an `object_store` S3 store. Parquet reaches it through multipart uploads
//! (see `parquet.rs`), manifests through single PUTs; nothing is staged on local disk.

use std::sync::Arc;

use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::{ClientOptions, ObjectStore};

use super::{ObjectSink, Result, SinkError};
use crate::aws::AwsEndpoint;

pub struct S3Sink {
    bucket: String,
    store: Arc<AmazonS3>,
}

impl S3Sink {
    /// A sink writing into `bucket`. Credentials come from `endpoint.credentials` or the
    /// standard environment chain (what Lambda provides); the region from `endpoint.region`,
    /// `AWS_REGION` or us-east-1. With an endpoint override (moto, MinIO), requests are
    /// path-style, and plain HTTP is allowed only if the endpoint itself is `http://`.
    pub fn new(bucket: &str, endpoint: &AwsEndpoint) -> Result<S3Sink> {
        crate::aws::install_crypto_provider();
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
        if let Some(region) = &endpoint.region {
            builder = builder.with_region(region);
        }
        if let Some(url) = &endpoint.endpoint_url {
            builder = builder
                .with_endpoint(url)
                .with_virtual_hosted_style_request(false)
                .with_client_options(ClientOptions::new().with_allow_http(endpoint.allows_http()));
        }
        if let Some(credentials) = &endpoint.credentials {
            builder = builder
                .with_access_key_id(credentials.access_key_id())
                .with_secret_access_key(credentials.secret_access_key());
            if let Some(token) = credentials.session_token() {
                builder = builder.with_token(token);
            }
        }
        let store = builder.build().map_err(|e| SinkError::Location {
            location: format!("s3://{bucket}"),
            message: e.to_string(),
        })?;
        Ok(S3Sink {
            bucket: bucket.to_owned(),
            store: Arc::new(store),
        })
    }
}

impl ObjectSink for S3Sink {
    fn store(&self) -> Arc<dyn ObjectStore> {
        self.store.clone()
    }

    fn url_for(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket)
    }

    fn minimum_part_bytes(&self) -> usize {
        S3_MIN_PART_BYTES
    }
}

/// S3 rejects multipart parts below 5 MiB (except the last).
pub const S3_MIN_PART_BYTES: usize = 5 * 1024 * 1024;
/// S3 allows at most this many parts per object.
pub const S3_MAX_PARTS: u64 = 10_000;
