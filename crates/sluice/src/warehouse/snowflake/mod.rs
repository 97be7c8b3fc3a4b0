//! The Snowflake adapter of the `Warehouse` port: Snowflake's SQL API v2 over HTTPS with
//! key-pair JWT authentication.
//!
//! Every statement is submitted with a `requestId`; a resubmission after a lost answer carries
//! the same id and `retry=true`, so Snowflake returns the first execution's outcome instead of
//! running the statement again. A 202 (async, or a statement still running after Snowflake's
//! 45 s) is polled with backoff until the statement finishes or the configured statement
//! timeout passes, after which it is cancelled. It never logs or returns the key, its
//! passphrase or a token.

mod client;
mod decode;
pub mod jwt;

use std::time::Duration;

pub use client::{SnowflakeClient, decode_response};
pub use jwt::PrivateKey;

/// Where and as whom to run statements. Validated once by [`SnowflakeConfig::validate`].
#[derive(Debug, Clone)]
pub struct SnowflakeConfig {
    /// The account identifier: `myorg-myaccount` (preferred) or an account locator, with its
    /// region and cloud when the account needs them in its URL (`xy12345.us-east-2.aws`).
    pub account: String,
    pub user: String,
    /// The API's base URL; `None` is `https://<account>.snowflakecomputing.com`. Plain
    /// `http://` is accepted only for a loopback host (the local stand-in).
    pub base_url: Option<String>,
    pub warehouse: Option<String>,
    pub role: Option<String>,
    pub database: Option<String>,
    pub schema: Option<String>,
    /// Submit with `async=true` and always poll (no request waits on a running statement).
    pub submit_async: bool,
    pub tuning: Tuning,
}

/// Tunables, with defaults and clamps in one place ([`Tuning::clamped`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Tuning {
    /// How long a statement may run (sent to Snowflake as `timeout`, and the bound on polling).
    pub statement_timeout: Duration,
    /// How much longer than `statement_timeout` polling goes on, so Snowflake's own timeout
    /// error arrives before the client gives up and cancels.
    pub timeout_grace: Duration,
    /// How long one HTTP request may take.
    pub request_timeout: Duration,
    /// Attempts per HTTP request on transport errors, 5xx and 429 (1 = no retry).
    pub max_attempts: u32,
    /// First wait between retries, doubled up to `max_backoff`.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// First wait between status polls, doubled up to `max_poll_interval`.
    pub initial_poll_interval: Duration,
    pub max_poll_interval: Duration,
}

impl Default for Tuning {
    fn default() -> Tuning {
        Tuning {
            statement_timeout: Duration::from_secs(3600),
            timeout_grace: Duration::from_secs(30),
            request_timeout: Duration::from_secs(60),
            max_attempts: 5,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
            initial_poll_interval: Duration::from_millis(50),
            max_poll_interval: Duration::from_secs(5),
        }
    }
}

impl Tuning {
    /// The tunables forced into sane ranges: a statement runs at least 1 s and at most
    /// Snowflake's 7 days, with at most 5 min of grace; at least one attempt, at most 20;
    /// waits between 10 ms and 1 min.
    pub fn clamped(&self) -> Tuning {
        let wait = |d: Duration| d.clamp(Duration::from_millis(10), Duration::from_secs(60));
        Tuning {
            statement_timeout: self
                .statement_timeout
                .clamp(Duration::from_secs(1), Duration::from_secs(604_800)),
            timeout_grace: self.timeout_grace.min(Duration::from_secs(300)),
            request_timeout: self
                .request_timeout
                .clamp(Duration::from_secs(1), Duration::from_secs(600)),
            max_attempts: self.max_attempts.clamp(1, 20),
            initial_backoff: wait(self.initial_backoff),
            max_backoff: wait(self.max_backoff.max(self.initial_backoff)),
            initial_poll_interval: wait(self.initial_poll_interval),
            max_poll_interval: wait(self.max_poll_interval.max(self.initial_poll_interval)),
        }
    }
}

impl SnowflakeConfig {
    pub fn new(account: &str, user: &str) -> SnowflakeConfig {
        SnowflakeConfig {
            account: account.to_owned(),
            user: user.to_owned(),
            base_url: None,
            warehouse: None,
            role: None,
            database: None,
            schema: None,
            submit_async: false,
            tuning: Tuning::default(),
        }
    }

    /// Checks the fields, returning the API's base URL (no trailing slash).
    pub fn validate(&self) -> Result<String, SnowflakeError> {
        let ident = |field: &'static str, value: &str| {
            if value.trim().is_empty() {
                return Err(config_error(field, "must not be empty"));
            }
            if value.chars().any(|c| c.is_whitespace() || c == '/') {
                return Err(config_error(
                    field,
                    format!("{value:?} must not contain whitespace or '/'"),
                ));
            }
            Ok(())
        };
        sluice_core::snowflake::check_account_name(&self.account)
            .map_err(|message| config_error("account", message))?;
        ident("user", &self.user)?;
        for (field, value) in [
            ("warehouse", &self.warehouse),
            ("role", &self.role),
            ("database", &self.database),
            ("schema", &self.schema),
        ] {
            if let Some(value) = value {
                ident(field, value)?;
            }
        }
        let base = match &self.base_url {
            Some(url) => url.trim().trim_end_matches('/').to_owned(),
            None => format!(
                "https://{}.snowflakecomputing.com",
                sluice_core::snowflake::account_forms(&self.account).host
            ),
        };
        reqwest::Url::parse(&base)
            .map_err(|e| config_error("base_url", format!("{base:?} is not a URL: {e}")))?;
        // The requests carry a signed token: plain http only to a loopback stand-in.
        sluice_core::output::check_endpoint_url(&base)
            .map_err(|message| config_error("base_url", message))?;
        Ok(base)
    }
}

fn config_error(field: &'static str, message: impl Into<String>) -> SnowflakeError {
    SnowflakeError::Config {
        field,
        message: message.into(),
    }
}

/// What can go wrong talking to Snowflake. None of the messages carry a key or a token.
#[derive(Debug, thiserror::Error)]
pub enum SnowflakeError {
    #[error("snowflake config: {field}: {message}")]
    Config {
        field: &'static str,
        message: String,
    },
    #[error("snowflake private key: {0}")]
    Key(String),
    #[error(
        "snowflake refused the key-pair JWT of {subject} (HTTP 401{}): {message}; check that the \
         user's RSA_PUBLIC_KEY matches the private key (fingerprint {fingerprint})",
        code.as_deref().map(|c| format!(", code {c}")).unwrap_or_default()
    )]
    Auth {
        subject: String,
        fingerprint: String,
        code: Option<String>,
        message: String,
    },
    #[error("statement failed: {message} (code {code}, sqlState {sql_state}{})",
        statement_handle.as_deref().map(|h| format!(", statement {h}")).unwrap_or_default())]
    Statement {
        code: String,
        sql_state: String,
        message: String,
        statement_handle: Option<String>,
    },
    #[error("statement {statement_handle} did not finish within {timeout:?} and was cancelled")]
    Timeout {
        statement_handle: String,
        timeout: Duration,
    },
    #[error("snowflake SQL API {url}: {message} (after {attempts} attempt(s))")]
    Transport {
        url: String,
        message: String,
        attempts: u32,
    },
    #[error("snowflake SQL API {url} answered HTTP {status}{}: {message}",
        code.as_deref().map(|c| format!(" (code {c})")).unwrap_or_default())]
    Http {
        url: String,
        status: u16,
        code: Option<String>,
        message: String,
    },
    #[error("snowflake SQL API answer not understood: {0}")]
    Protocol(String),
    #[error("column {column} ({type_name}): cannot read {value:?}: {message}")]
    Decode {
        column: String,
        type_name: String,
        value: String,
        message: String,
    },
}

impl SnowflakeError {
    /// Snowflake's SQLSTATE of a failed statement.
    pub fn sql_state(&self) -> Option<&str> {
        match self {
            SnowflakeError::Statement { sql_state, .. } => Some(sql_state),
            _ => None,
        }
    }
}
