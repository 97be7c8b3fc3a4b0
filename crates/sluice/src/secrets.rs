//! Source credentials from AWS Secrets Manager: a source's `connection.secret_arn` names a
//! JSON secret (RDS's layout: `host`, `port`, `username`, `password`, `dbname`, optionally
//! `sslmode`), resolved into the connection settings and credentials the source adapters take.
//!
//! A secret's value must never reach a log line, an error message or a `Debug` print: errors
//! say which field is missing or of the wrong type, never what it holds, and
//! [`DatabaseSecret`]'s `Debug` redacts the password.

use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::error::{DisplayErrorContext, ProvideErrorMetadata};
use serde_json::Value;
use sluice_core::{SourceConfig, SslMode};
use thiserror::Error;
use tracing::info;

use crate::source::Credentials;

#[derive(Debug, Error)]
pub enum SecretError {
    #[error("{owner}: secret {arn} does not exist (check {setting})")]
    NotFound {
        owner: String,
        setting: &'static str,
        arn: String,
    },
    #[error(
        "{owner}: not allowed to read secret {arn} ({message}); grant secretsmanager:GetSecretValue on it (and kms:Decrypt on its key)"
    )]
    AccessDenied {
        owner: String,
        arn: String,
        message: String,
    },
    #[error("{owner}: secret {arn} {problem}")]
    Malformed {
        owner: String,
        arn: String,
        problem: String,
    },
    #[error("{owner}: reading secret {arn} failed: {message}")]
    Service {
        owner: String,
        arn: String,
        message: String,
    },
}

pub type Result<T, E = SecretError> = std::result::Result<T, E>;

/// A database secret's fields.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseSecret {
    pub host: String,
    pub port: Option<u16>,
    pub username: String,
    pub password: String,
    pub dbname: Option<String>,
    pub sslmode: Option<SslMode>,
}

impl std::fmt::Debug for DatabaseSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseSecret")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("dbname", &self.dbname)
            .field("sslmode", &self.sslmode)
            .finish()
    }
}

const EXPECTED: &str =
    "expected a JSON object with host, port, username, password, dbname and optionally sslmode";

/// Parses a secret's text. The problem it reports names fields and types only: never a value.
pub fn parse_secret(text: &str) -> std::result::Result<DatabaseSecret, String> {
    let value: Value =
        serde_json::from_str(text).map_err(|_| format!("is not valid JSON ({EXPECTED})"))?;
    let Value::Object(fields) = value else {
        return Err(format!("is not a JSON object ({EXPECTED})"));
    };
    let text_field = |name: &str, required: bool| -> std::result::Result<Option<String>, String> {
        match fields.get(name) {
            Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
            Some(Value::String(_)) | None | Some(Value::Null) if !required => Ok(None),
            Some(Value::String(_)) => Err(format!("has an empty '{name}' field")),
            None | Some(Value::Null) => Err(format!("has no '{name}' field ({EXPECTED})")),
            Some(_) => Err(format!("has a '{name}' field that is not a string")),
        }
    };
    let required = |name: &str| text_field(name, true).map(Option::unwrap_or_default);
    let port = match fields.get("port") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => Some(n.as_u64().and_then(|p| u16::try_from(p).ok())),
        Some(Value::String(s)) => Some(s.parse::<u16>().ok()),
        Some(_) => Some(None),
    };
    let port = match port {
        None => None,
        Some(Some(p)) if p > 0 => Some(p),
        Some(_) => return Err("has a 'port' field that is not a port number (1-65535)".into()),
    };
    let sslmode = match text_field("sslmode", false)? {
        None => None,
        Some(mode) => Some(
            serde_json::from_value::<SslMode>(Value::String(mode)).map_err(|_| {
                "has an 'sslmode' field that is not one of disable, prefer, require, verify-ca, verify-full"
                    .to_owned()
            })?,
        ),
    };
    Ok(DatabaseSecret {
        host: required("host")?,
        port,
        username: required("username")?,
        password: required("password")?,
        dbname: text_field("dbname", false)?,
        sslmode,
    })
}

/// The connection settings of `source` completed from `secret`, and the credentials. Fields
/// the config sets win over the secret's; a source with a `url` takes only the credentials
/// (and `sslmode` when the config has none).
pub fn apply_secret(
    source: &SourceConfig,
    secret: DatabaseSecret,
) -> std::result::Result<(SourceConfig, Credentials), String> {
    let mut resolved = source.clone();
    let c = &mut resolved.connection;
    if c.url.is_none() {
        c.host = c.host.take().or(Some(secret.host));
        c.port = c.port.or(secret.port);
        c.database = c.database.take().or(secret.dbname);
        if c.database.is_none() {
            return Err(
                "has no 'dbname' field and connection.database is not set; give one of them".into(),
            );
        }
    }
    c.sslmode = c.sslmode.or(secret.sslmode);
    c.user = None;
    let credentials = Credentials {
        user: Some(secret.username),
        password: Some(secret.password),
    };
    Ok((resolved, credentials))
}

/// Reads sources' secrets. Build it once per process (a Lambda cold start); clones share the
/// client.
///
/// Every read asks for the secret's `AWSCURRENT` version: `GetSecretValue` without a
/// `VersionId` or `VersionStage` returns it
/// (<https://docs.aws.amazon.com/secretsmanager/latest/apireference/API_GetSecretValue.html>),
/// and rotation moves that label to the new version only as its last step, after the database
/// has the new password and it was tested, so an `AWSPENDING` version is never read
/// (<https://docs.aws.amazon.com/secretsmanager/latest/userguide/rotate-secrets_how.html>).
/// Nothing here caches: how long a read is reused is the caller's decision (the Lambda functions' deployment keeps a source for at most a quarter hour).
#[derive(Clone)]
pub struct SecretResolver {
    client: Client,
}

impl SecretResolver {
    pub fn new(sdk: &aws_config::SdkConfig) -> SecretResolver {
        SecretResolver {
            client: Client::new(sdk),
        }
    }

    /// A source ready to connect: unchanged with no credentials when it names no secret,
    /// else completed from its secret (see [`apply_secret`]).
    pub async fn resolve(
        &self,
        source: &SourceConfig,
    ) -> Result<(SourceConfig, Option<Credentials>)> {
        let Some(arn) = source.connection.secret_arn.as_deref() else {
            return Ok((source.clone(), None));
        };
        let owner = format!("source '{}'", source.name);
        let malformed = |problem: String| SecretError::Malformed {
            owner: owner.clone(),
            arn: arn.to_owned(),
            problem,
        };
        let secret = self.fetch(&owner, "connection.secret_arn", arn).await?;
        let secret = parse_secret(&secret).map_err(malformed)?;
        let (resolved, credentials) = apply_secret(source, secret).map_err(malformed)?;
        info!(source = %source.name, secret_arn = arn, "credentials resolved from Secrets Manager");
        Ok((resolved, Some(credentials)))
    }

    /// A Snowflake key pair's private half: the secret is the PKCS#8 PEM itself, or JSON
    /// `{"private_key": PEM, "passphrase": "…"}` for an encrypted key.
    pub async fn snowflake_key(&self, arn: &str, setting: &'static str) -> Result<KeySecret> {
        let owner = "the Snowflake key";
        let text = self.fetch(owner, setting, arn).await?;
        parse_key_secret(&text).map_err(|problem| SecretError::Malformed {
            owner: owner.to_owned(),
            arn: arn.to_owned(),
            problem,
        })
    }

    /// The secret's string; `owner` ("source 'shop'") and `setting` (where its ARN is
    /// configured) make the errors say whose secret it is and where to fix it.
    async fn fetch(&self, owner: &str, setting: &'static str, arn: &str) -> Result<String> {
        let out = self
            .client
            .get_secret_value()
            .secret_id(arn)
            .send()
            .await
            .map_err(|e| {
                let (owner, arn) = (owner.to_owned(), arn.to_owned());
                let not_found = e
                    .as_service_error()
                    .is_some_and(|se| se.is_resource_not_found_exception());
                // AWS answers AccessDeniedException; an IAM-enforcing moto answers a bare 403
                // whose XML body the JSON client cannot parse. Both mean the same.
                let forbidden = e.code() == Some("AccessDeniedException")
                    || e.raw_response().is_some_and(|r| r.status().as_u16() == 403);
                if not_found {
                    SecretError::NotFound {
                        owner,
                        setting,
                        arn,
                    }
                } else if forbidden {
                    SecretError::AccessDenied {
                        owner,
                        arn,
                        message: e.message().unwrap_or("access denied, HTTP 403").to_owned(),
                    }
                } else {
                    SecretError::Service {
                        owner,
                        arn,
                        message: DisplayErrorContext(&e).to_string(),
                    }
                }
            })?;
        out.secret_string.ok_or_else(|| SecretError::Malformed {
            owner: owner.to_owned(),
            arn: arn.to_owned(),
            problem: "holds binary data, not a JSON SecretString".into(),
        })
    }
}

/// A Snowflake private key from Secrets Manager. `Debug` shows neither the key nor the
/// passphrase.
pub struct KeySecret {
    pub pem: String,
    pub passphrase: Option<String>,
}

impl std::fmt::Debug for KeySecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySecret")
            .field("pem", &"<redacted>")
            .field(
                "passphrase",
                &self.passphrase.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// Reads a key secret; the problem never quotes the secret.
pub fn parse_key_secret(text: &str) -> std::result::Result<KeySecret, String> {
    let trimmed = text.trim();
    if trimmed.starts_with("-----BEGIN") {
        return Ok(KeySecret {
            pem: trimmed.to_owned(),
            passphrase: None,
        });
    }
    let value: serde_json::Value = serde_json::from_str(trimmed)
        .map_err(|_| "is neither a PEM key nor JSON with a 'private_key' field".to_owned())?;
    let field = |name: &str| match value.get(name) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("has a '{name}' field that is not a string")),
    };
    let pem = field("private_key")?.ok_or("has no 'private_key' field")?;
    if !pem.trim_start().starts_with("-----BEGIN") {
        return Err("has a 'private_key' field that is not a PEM key".into());
    }
    Ok(KeySecret {
        pem,
        passphrase: field("passphrase")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWORD: &str = "pw-9f3b1c";

    #[test]
    fn a_complete_secret_parses_and_debug_redacts_the_password() {
        let secret = parse_secret(&format!(
            r#"{{"engine":"postgres","host":"db.internal","port":"5433","username":"reader","password":"{PASSWORD}","dbname":"shop","sslmode":"verify-full"}}"#
        ))
        .unwrap();
        assert_eq!(secret.port, Some(5433));
        assert_eq!(secret.sslmode, Some(SslMode::VerifyFull));
        let debug = format!("{secret:?}");
        assert!(!debug.contains(PASSWORD), "{debug}");
        assert!(debug.contains("<redacted>"), "{debug}");
    }

    #[test]
    fn key_secrets_are_a_pem_or_json_and_never_quoted() {
        let pem = "-----BEGIN PRIVATE KEY-----\nMIIsecret\n-----END PRIVATE KEY-----";
        let plain = parse_key_secret(pem).unwrap();
        assert_eq!((plain.pem.as_str(), plain.passphrase), (pem, None));
        let json = serde_json::json!({"private_key": pem, "passphrase": PASSWORD}).to_string();
        let wrapped = parse_key_secret(&json).unwrap();
        assert_eq!(wrapped.passphrase.as_deref(), Some(PASSWORD));
        let debug = format!("{wrapped:?}");
        assert!(
            !debug.contains("MIIsecret") && !debug.contains(PASSWORD),
            "{debug}"
        );
        for (text, expected) in [
            (format!("MIIsecret{PASSWORD}"), "neither a PEM key nor JSON"),
            (
                format!(r#"{{"key": "{PASSWORD}"}}"#),
                "has no 'private_key' field",
            ),
            (
                format!(r#"{{"private_key": "{PASSWORD}"}}"#),
                "not a PEM key",
            ),
            (
                format!(r#"{{"private_key": "{pem}", "passphrase": 7}}"#).replace('\n', "\\n"),
                "'passphrase' field that is not a string",
            ),
        ] {
            let problem = parse_key_secret(&text).unwrap_err();
            assert!(problem.contains(expected), "{problem}");
            assert!(
                !problem.contains(PASSWORD) && !problem.contains("MIIsecret"),
                "{problem}"
            );
        }
    }

    #[test]
    fn malformed_secrets_name_the_field_never_the_value() {
        let cases = [
            (format!("not json {PASSWORD}"), "is not valid JSON"),
            (format!(r#"["{PASSWORD}"]"#), "is not a JSON object"),
            (
                format!(r#"{{"host":"h","username":"u","pass":"{PASSWORD}"}}"#),
                "has no 'password' field",
            ),
            (
                format!(
                    r#"{{"host":"h","username":"u","password":"{PASSWORD}","port":"{PASSWORD}"}}"#
                ),
                "'port' field that is not a port number",
            ),
            (
                format!(r#"{{"host":"h","username":"u","password":{{"v":"{PASSWORD}"}}}}"#),
                "'password' field that is not a string",
            ),
            (
                format!(r#"{{"host":"h","username":"u","password":"p","sslmode":"{PASSWORD}"}}"#),
                "'sslmode' field that is not one of",
            ),
        ];
        for (text, expected) in cases {
            let problem = parse_secret(&text).unwrap_err();
            assert!(problem.contains(expected), "{problem}");
            assert!(!problem.contains(PASSWORD), "{problem}");
        }
    }
}
