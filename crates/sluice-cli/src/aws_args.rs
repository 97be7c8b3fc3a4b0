//! Command-line options shared by every command that talks to AWS (DynamoDB, S3, Glue,
//! Secrets Manager). Credentials always come from the standard AWS chain, never a flag.

use clap::Args;
use sluice::aws::AwsEndpoint;

#[derive(Args, Debug, Clone, Default)]
pub struct AwsArgs {
    /// AWS region (default: the standard chain's, e.g. AWS_REGION).
    #[arg(long, env = "AWS_REGION", global = true)]
    pub aws_region: Option<String>,
    /// Endpoint for every AWS service, for a local stack (e.g. http://127.0.0.1:5000 for
    /// moto). Unset means real AWS.
    #[arg(long, env = "SLUICE_AWS_ENDPOINT", global = true, value_parser = endpoint_url)]
    pub aws_endpoint: Option<String>,
}

fn endpoint_url(text: &str) -> Result<String, String> {
    sluice::aws::check_endpoint_url(text).map(|()| text.trim_end_matches('/').to_owned())
}

impl AwsArgs {
    pub fn endpoint(&self) -> AwsEndpoint {
        AwsEndpoint {
            region: self.aws_region.clone(),
            endpoint_url: self.aws_endpoint.clone(),
            credentials: None,
        }
    }

    /// The SDK configuration every client of one command is built from.
    pub async fn sdk_config(&self) -> aws_config::SdkConfig {
        sluice::aws::sdk_config(&self.endpoint()).await
    }
}
