//! Source credentials from Secrets Manager (a real moto server): a good secret completes the
//! connection; a missing, malformed or forbidden one is a clear error that never prints the
//! secret.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};

use aws_credential_types::Credentials;
use aws_sdk_secretsmanager::primitives::Blob;
use sluice::aws::AwsEndpoint;
use sluice::secrets::{SecretError, SecretResolver};
use sluice_core::{Config, SourceConfig, SslMode};
use sluice_tests::moto::{MotoServer, REGION, unique_name};

const PASSWORD: &str = "s3cr3t-Zq8!";

fn source(arn: &str, extra: &str) -> SourceConfig {
    let yaml = format!(
        "sources:\n  - name: shop\n    engine: postgres\n    connection:\n      secret_arn: {arn}\n{extra}\
         tables:\n  - source: shop\n    table: public.orders\n"
    );
    Config::from_yaml(&yaml, "t").unwrap().sources.remove(0)
}

async fn create_secret(sdk: &aws_config::SdkConfig, body: Option<&str>) -> String {
    let client = aws_sdk_secretsmanager::Client::new(sdk);
    let request = client.create_secret().name(unique_name("db"));
    let request = match body {
        Some(text) => request.secret_string(text),
        None => request.secret_binary(Blob::new(PASSWORD.as_bytes())),
    };
    request.send().await.unwrap().arn.unwrap()
}

#[tokio::test]
async fn a_database_secret_completes_the_connection() {
    let sdk = MotoServer::shared().sdk_config().await;
    let arn = create_secret(
        &sdk,
        Some(&format!(
            r#"{{"engine":"postgres","host":"127.0.0.1","port":5432,"username":"postgres","password":"{PASSWORD}","dbname":"postgres","sslmode":"disable"}}"#
        )),
    )
    .await;
    let resolver = SecretResolver::new(&sdk);
    let (resolved, credentials) = resolver.resolve(&source(&arn, "")).await.unwrap();
    let c = &resolved.connection;
    assert_eq!(c.host.as_deref(), Some("127.0.0.1"));
    assert_eq!(c.port, Some(5432));
    assert_eq!(c.database.as_deref(), Some("postgres"));
    assert_eq!(c.sslmode, Some(SslMode::Disable));
    let credentials = credentials.unwrap();
    assert_eq!(credentials.user.as_deref(), Some("postgres"));
    assert_eq!(credentials.password.as_deref(), Some(PASSWORD));
    assert!(!format!("{credentials:?}").contains(PASSWORD));
    // What the config sets wins over the secret.
    let (resolved, _) = resolver
        .resolve(&source(
            &arn,
            "      database: sluice_shop\n      port: 6543\n",
        ))
        .await
        .unwrap();
    assert_eq!(resolved.connection.database.as_deref(), Some("sluice_shop"));
    assert_eq!(resolved.connection.port, Some(6543));
    // The adapter accepts the resolved source (it refuses a secret nobody resolved).
    sluice::source::postgres::PostgresSource::from_config(&resolved, Some(&credentials)).unwrap();
    assert!(
        sluice::source::postgres::PostgresSource::from_config(&source(&arn, ""), None).is_err()
    );
}

#[tokio::test]
async fn missing_and_malformed_secrets_are_clear_errors_without_the_secret() {
    let sdk = MotoServer::shared().sdk_config().await;
    let resolver = SecretResolver::new(&sdk);
    let missing = "arn:aws:secretsmanager:us-east-1:123456789012:secret:sluice/nope-AbCdEf";
    let err = resolver.resolve(&source(missing, "")).await.unwrap_err();
    assert!(matches!(err, SecretError::NotFound { .. }), "{err}");
    assert!(
        err.to_string()
            .contains(&format!("secret {missing} does not exist")),
        "{err}"
    );

    let cases = [
        (
            Some(format!(
                r#"{{"host":"h","username":"u","pwd":"{PASSWORD}"}}"#
            )),
            "has no 'password' field",
        ),
        (
            Some(format!("host=h password={PASSWORD}")),
            "is not valid JSON",
        ),
        (
            Some(format!(
                r#"{{"host":"h","username":"u","password":"{PASSWORD}","port":"x{PASSWORD}"}}"#
            )),
            "'port' field that is not a port number",
        ),
        (
            Some(format!(
                r#"{{"host":"h","username":"u","password":"{PASSWORD}"}}"#
            )),
            "has no 'dbname' field and connection.database is not set",
        ),
        (None, "holds binary data"),
    ];
    for (body, expected) in cases {
        let arn = create_secret(&sdk, body.as_deref()).await;
        let err = resolver.resolve(&source(&arn, "")).await.unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, SecretError::Malformed { .. }), "{text}");
        assert!(text.contains(expected), "{text}");
        assert!(
            text.contains("source 'shop'") && text.contains(&arn),
            "{text}"
        );
        assert!(!text.contains(PASSWORD), "the secret leaked: {text}");
        assert!(
            !format!("{err:?}").contains(PASSWORD),
            "the secret leaked: {err:?}"
        );
    }
}

/// One IAM call in the Query protocol, sent before moto enforces IAM (so unsigned).
fn iam_call(moto: &MotoServer, params: &str) -> String {
    let body = format!("{params}&Version=2010-05-08");
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", moto.port)).unwrap();
    write!(
        stream,
        "POST / HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\
         Authorization: AWS4-HMAC-SHA256 Credential=testing/20240101/{REGION}/iam/aws4_request, SignedHeaders=host, Signature=0\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        moto.port,
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
}

fn between<'a>(text: &'a str, tag: &str) -> &'a str {
    let start = text.find(&format!("<{tag}>")).unwrap() + tag.len() + 2;
    let end = text[start..].find(&format!("</{tag}>")).unwrap();
    &text[start..start + end]
}

#[tokio::test]
async fn a_forbidden_secret_says_access_denied_without_the_secret() {
    // IAM is enforced after the first three actions: a user, its key, the secret.
    let moto = MotoServer::start(&[("INITIAL_NO_AUTH_ACTION_COUNT", "3")]);
    iam_call(&moto, "Action=CreateUser&UserName=nobody");
    let key = iam_call(&moto, "Action=CreateAccessKey&UserName=nobody");
    let arn = create_secret(
        &moto.sdk_config().await,
        Some(&format!(
            r#"{{"host":"h","username":"u","password":"{PASSWORD}","dbname":"d"}}"#
        )),
    )
    .await;
    let nobody = AwsEndpoint::local(
        &moto.endpoint(),
        REGION,
        Credentials::new(
            between(&key, "AccessKeyId"),
            between(&key, "SecretAccessKey"),
            None,
            None,
            "nobody",
        ),
    );
    let resolver = SecretResolver::new(&sluice::aws::sdk_config(&nobody).await);
    let err = resolver.resolve(&source(&arn, "")).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, SecretError::AccessDenied { .. }), "{text}");
    assert!(text.contains("not allowed to read secret"), "{text}");
    assert!(text.contains("secretsmanager:GetSecretValue"), "{text}");
    assert!(!text.contains(PASSWORD), "{text}");
}
