//! `sluice trigger`: starts tables through the deployed trigger function (or the local
//! stack's), as an operator's direct invocation. Prints each table's run id and status.

use anyhow::{Context, Result, bail};
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::InvocationType;
use clap::Args;
use serde_json::{Value, json};

use crate::aws_args::AwsArgs;

#[derive(Args)]
pub struct TriggerArgs {
    /// A table to start: source/schema.table, or a name unique across sources (repeatable).
    #[arg(long, required = true)]
    table: Vec<String>,
    /// Read incremental tables whole, as if they had no watermark.
    #[arg(long, conflicts_with = "keyset")]
    full_reload: bool,
    /// Start key-set runs (`deletes.keyset`): find rows deleted at the source.
    #[arg(long)]
    keyset: bool,
    /// The trigger function's name or ARN.
    #[arg(
        long,
        env = "SLUICE_TRIGGER_FUNCTION",
        default_value = "sluice-trigger"
    )]
    function: String,
}

pub async fn run(args: TriggerArgs, aws: &AwsArgs) -> Result<bool> {
    for table in &args.table {
        if table.trim().is_empty() {
            bail!("--table: must not be empty");
        }
    }
    if args.function.trim().is_empty() {
        bail!("--function: must not be empty");
    }
    let mut payload = json!({ "tables": args.table, "full_reload": args.full_reload });
    // Only when asked: a trigger deployed before key sets refuses fields it does not know.
    if args.keyset {
        payload["keyset"] = json!(true);
    }
    let client = aws_sdk_lambda::Client::new(&aws.sdk_config().await);
    let answer = client
        .invoke()
        .function_name(&args.function)
        .invocation_type(InvocationType::RequestResponse)
        .payload(Blob::new(payload.to_string()))
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("invoking {}: {}", args.function, sluice::error_chain(&e)))?;
    let body = answer
        .payload()
        .map(|p| String::from_utf8_lossy(p.as_ref()).into_owned())
        .unwrap_or_default();
    if let Some(kind) = answer.function_error() {
        bail!("{} failed ({kind}): {body}", args.function);
    }
    let value: Value = serde_json::from_str(&body).with_context(|| {
        format!(
            "{} answered something that is not JSON: {body}",
            args.function
        )
    })?;
    let mut all_started = true;
    for run in value["runs"].as_array().into_iter().flatten() {
        let table = run["table"]
            .as_str()
            .or(run["selector"].as_str())
            .unwrap_or("?");
        match (run["run_id"].as_str(), run["error"].as_str()) {
            (_, Some(error)) => {
                all_started = false;
                println!("{table}: error: {error}");
            }
            (Some(id), None) => println!(
                "{table}: {} {id}{}",
                run["status"].as_str().unwrap_or("?"),
                run["message"]
                    .as_str()
                    .map(|m| format!(" ({m})"))
                    .unwrap_or_default()
            ),
            (None, None) => println!("{table}: {run}"),
        }
    }
    Ok(all_started)
}
