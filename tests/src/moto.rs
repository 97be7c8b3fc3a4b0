//! `moto` in server mode on a free loopback port: the local S3, DynamoDB, Glue, Secrets
//! Manager, IAM and Lambda APIs.
//!
//! [`MotoServer::shared`] starts one server per test binary; tests isolate themselves by
//! naming their buckets and tables uniquely. [`MotoServer::start`] starts a private one (for
//! tests that change server-wide behaviour, such as enforcing IAM). The server is killed when
//! the value is dropped, and the shared one when the test binary exits (the kernel sends it
//! SIGKILL when the thread that started it ends, and that thread lives as long as the
//! process).
//!
//! moto's server handles requests on threads and its DynamoDB checks a write's condition and
//! applies it in separate steps, so two concurrent conditional writes to one item can both
//! pass: DynamoDB itself never allows that. Tests of concurrent conditional writes use
//! [`MotoServer::shared_serial`], which handles one request at a time, as DynamoDB serializes
//! writes to one item.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use aws_credential_types::Credentials;
use sluice::aws::AwsEndpoint;

use crate::process::{die_with_parent, start_for_process};

/// The region every test uses.
pub const REGION: &str = "us-east-1";

pub struct MotoServer {
    pub port: u16,
    child: Option<Child>,
}

impl MotoServer {
    /// The test binary's shared server, started on first use.
    pub fn shared() -> &'static MotoServer {
        static SHARED: OnceLock<MotoServer> = OnceLock::new();
        SHARED.get_or_init(|| MotoServer::spawn_for_process(false))
    }

    /// The test binary's shared server that handles one request at a time (see above).
    pub fn shared_serial() -> &'static MotoServer {
        static SHARED: OnceLock<MotoServer> = OnceLock::new();
        SHARED.get_or_init(|| MotoServer::spawn_for_process(true))
    }

    fn spawn_for_process(serial: bool) -> MotoServer {
        let port = start_for_process(move || {
            let server = MotoServer::spawn(&[], serial);
            let port = server.port;
            // The child is kept for the rest of the process's life.
            std::mem::forget(server);
            port
        });
        MotoServer { port, child: None }
    }

    /// A private server with extra environment (e.g. `INITIAL_NO_AUTH_ACTION_COUNT`), killed
    /// on drop.
    pub fn start(env: &[(&str, &str)]) -> MotoServer {
        MotoServer::spawn(env, false)
    }

    fn spawn(env: &[(&str, &str)], serial: bool) -> MotoServer {
        let binary = moto_binary();
        let port = free_port();
        let mut command = if serial {
            // moto_server's own start-up, with werkzeug's threads off.
            let mut command = Command::new(binary.with_file_name("python3"));
            command.args([
                "-c",
                "import sys\n\
                 from werkzeug.serving import run_simple\n\
                 from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app\n\
                 run_simple('127.0.0.1', int(sys.argv[1]), DomainDispatcherApplication(create_backend_app), threaded=False)\n",
                &port.to_string(),
            ]);
            command
        } else {
            let mut command = Command::new(&binary);
            command.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
            command
        };
        command
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        die_with_parent(&mut command);
        let child = command.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot start {} ({e}); run scripts/setup to install moto",
                binary.display()
            )
        });
        let server = MotoServer {
            port,
            child: Some(child),
        };
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(
                Instant::now() < deadline,
                "moto_server did not listen on {addr} within 60 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// How sluice's adapters reach this server: its endpoint, the test region and moto's
    /// accepted dummy credentials.
    pub fn aws(&self) -> AwsEndpoint {
        AwsEndpoint::local(&self.endpoint(), REGION, test_credentials())
    }

    /// Points a `sluice` command at this server, as the local stack does: its endpoint, the
    /// test region and moto's dummy credentials (no profile from the machine).
    pub fn local_env<'c>(
        &self,
        command: &'c mut std::process::Command,
    ) -> &'c mut std::process::Command {
        command
            .env("SLUICE_AWS_ENDPOINT", self.endpoint())
            .env("AWS_REGION", REGION)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env_remove("AWS_PROFILE")
    }

    /// An SDK config for the test's own clients (to inspect what sluice did).
    pub async fn sdk_config(&self) -> aws_config::SdkConfig {
        sluice::aws::sdk_config(&self.aws()).await
    }

    /// A new bucket (named after `label`, unique) holding `objects` as (key, body).
    pub async fn bucket_with(&self, label: &str, objects: Vec<(&str, Vec<u8>)>) -> String {
        let bucket = unique_name(label);
        let s3 = crate::s3::s3_client(&self.sdk_config().await);
        s3.create_bucket().bucket(&bucket).send().await.unwrap();
        for (key, body) in objects {
            s3.put_object()
                .bucket(&bucket)
                .key(key)
                .body(body.into())
                .send()
                .await
                .unwrap();
        }
        bucket
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn test_credentials() -> Credentials {
    Credentials::new("testing", "testing", None, None, "sluice-tests")
}

/// `SLUICE_MOTO_SERVER`, or the one scripts/setup installs under target/tools.
fn moto_binary() -> PathBuf {
    if let Ok(path) = std::env::var("SLUICE_MOTO_SERVER") {
        return PathBuf::from(path);
    }
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    workspace.join("target/tools/moto/bin/moto_server")
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// A name no other test in this run uses, valid as a bucket, table or database name.
pub fn unique_name(label: &str) -> String {
    format!(
        "sluice-{label}-{}",
        sluice_core::RunId::new().to_string().to_lowercase()
    )
}
