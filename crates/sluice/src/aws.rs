//! How sluice reaches AWS: one place that builds the SDK configuration (region, an endpoint
//! override for local services such as moto, the rustls/ring HTTP client) so every client
//! (S3, DynamoDB, Glue, Secrets Manager, Lambda) is configured the same way, once per process.

use aws_config::{BehaviorVersion, SdkConfig};
use aws_credential_types::Credentials;
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};

/// Where and as whom to call AWS. The default is the real AWS with the standard credential
/// chain (environment, profile, web identity, container, instance metadata), which is what a
/// Lambda function uses.
#[derive(Debug, Clone, Default)]
pub struct AwsEndpoint {
    /// Region; `None` takes the standard chain's (`AWS_REGION`, profile).
    pub region: Option<String>,
    /// Endpoint override for every service (a local moto server). `None` also honours the
    /// SDK's own `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_<SERVICE>` variables.
    pub endpoint_url: Option<String>,
    /// Fixed credentials for local services; `None` uses the standard chain. The SDK's
    /// `Credentials` redacts its secret in `Debug`.
    pub credentials: Option<Credentials>,
}

impl AwsEndpoint {
    /// A local endpoint (moto) with fixed credentials.
    pub fn local(endpoint_url: &str, region: &str, credentials: Credentials) -> AwsEndpoint {
        AwsEndpoint {
            region: Some(region.to_owned()),
            endpoint_url: Some(endpoint_url.to_owned()),
            credentials: Some(credentials),
        }
    }

    /// Whether plain HTTP must be allowed (only ever for a loopback/local endpoint).
    pub fn allows_http(&self) -> bool {
        self.endpoint_url
            .as_deref()
            .is_some_and(|url| url.starts_with("http://"))
    }
}

pub use sluice_core::output::check_endpoint_url;

/// Builds the SDK configuration every client is made from. Call once per cold start.
pub async fn sdk_config(endpoint: &AwsEndpoint) -> SdkConfig {
    let http_client = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).http_client(http_client);
    if let Some(region) = &endpoint.region {
        loader = loader.region(aws_config::Region::new(region.clone()));
    }
    if let Some(url) = &endpoint.endpoint_url {
        loader = loader.endpoint_url(url.clone());
    }
    if let Some(credentials) = &endpoint.credentials {
        loader = loader.credentials_provider(credentials.clone());
    }
    loader.load().await
}

/// Makes ring the process's rustls provider. reqwest (under `object_store`, and the Snowflake
/// client) asks rustls for the process default and panics without one; ring is the only
/// provider compiled in, so installing it changes nothing else. Idempotent.
pub fn install_crypto_provider() {
    // Err means a provider is already installed, which is all that is needed.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_http_only_on_loopback() {
        for ok in [
            "http://127.0.0.1:5000",
            "http://localhost:4566/",
            "http://[::1]:9000",
            "https://s3.eu-west-1.amazonaws.com",
        ] {
            assert_eq!(check_endpoint_url(ok), Ok(()), "{ok}");
        }
        for (bad, expected) in [
            ("127.0.0.1:5000", "is not a URL"),
            ("http://10.0.0.5:5000", "only on loopback"),
            ("ftp://127.0.0.1", "scheme 'ftp'"),
            ("https://", "has no host"),
        ] {
            let err = check_endpoint_url(bad).unwrap_err();
            assert!(err.contains(expected), "{bad}: {err}");
        }
    }
}
