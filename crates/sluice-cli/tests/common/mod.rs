//! What the tests of the `sluice` binary share: the binary with a clean environment,
//! optionally pointed at a moto server, run under a time limit, and its output as text.
// Each test binary uses its own part of this module.
#![allow(dead_code)]

use std::io::Read;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use sluice_tests::moto::MotoServer;

/// Whether a variable of the developer's shell could change what a test asks for by flag, or
/// point the binary at a real AWS account or Snowflake.
fn ambient(name: &str) -> bool {
    name.starts_with("SLUICE_") || name.starts_with("AWS_") || name == "RUST_LOG"
}

/// No command of these tests comes near this; one that reaches it is stuck, and is killed
/// rather than left to hold up the whole test run.
const STUCK_AFTER: Duration = Duration::from_secs(300);

/// The binary with `args`, run in `cwd`, without the ambient settings.
pub fn sluice_command(args: &[&str], cwd: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
    command.args(args).current_dir(cwd);
    for (name, _) in std::env::vars_os() {
        if name.to_str().is_some_and(ambient) {
            command.env_remove(name);
        }
    }
    command
}

/// Runs `command` to its end and collects its output; kills it and fails the test if it is
/// still running after [`STUCK_AFTER`].
pub fn output_of(command: &mut Command) -> Output {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the sluice binary starts");
    // Each pipe drained on its own thread, so a child writing a lot never blocks on a full one.
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            pipe.read_to_end(&mut bytes).map(|_| bytes)
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > STUCK_AFTER {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "sluice {:?} was still running after {STUCK_AFTER:?}",
                command.get_args().collect::<Vec<_>>()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: stdout.join().unwrap().unwrap(),
        stderr: stderr.join().unwrap().unwrap(),
    }
}

/// The binary run locally (no AWS).
pub fn sluice(args: &[&str], cwd: &Path) -> Output {
    output_of(&mut sluice_command(args, cwd))
}

/// The binary pointed at `moto` (its endpoint, region and dummy credentials from the
/// environment, as on a developer's machine pointed at a local stack), with `env` on top.
pub fn sluice_on(moto: &MotoServer, args: &[&str], cwd: &Path, env: &[(&str, &str)]) -> Output {
    let mut command = sluice_command(args, cwd);
    moto.local_env(&mut command).envs(env.iter().copied());
    output_of(&mut command)
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Standard output of a command that must succeed; both streams in the failure message.
pub fn ok(out: &Output) -> String {
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Both streams of a command, for "never printed" checks.
pub fn both(out: &Output) -> String {
    format!("{}\n{}", text(&out.stdout), text(&out.stderr))
}

/// Fails with the whole of `text` unless it contains `part`.
pub fn assert_contains(text: &str, part: &str) {
    assert!(text.contains(part), "expected {part:?} in:\n{text}");
}

/// `sluice snowflake sql|apply` options for `config`, the stand-in's `database` and the lake.
pub fn setup_args<'a>(
    config: &'a str,
    database: &'a str,
    bucket: &'a str,
    prefix: &'a str,
    api: &'a str,
) -> Vec<&'a str> {
    vec![
        "--config",
        config,
        "--database",
        database,
        "--role",
        "SLUICE_LOADER",
        "--bucket",
        bucket,
        "--prefix",
        prefix,
        "--storage-role-arn",
        "arn:aws:iam::123456789012:role/snowflake-s3",
        "--api-role-arn",
        "arn:aws:iam::123456789012:role/snowflake-api",
        "--api-url",
        api,
    ]
}

/// `sluice snowflake apply` against a stand-in with the test binary's key.
pub fn apply_args<'a>(key: &'a str, base_url: &'a str, setup: Vec<&'a str>) -> Vec<&'a str> {
    let mut args = vec![
        "snowflake",
        "apply",
        "--account",
        sluice_tests::snowflake::ACCOUNT,
        "--user",
        sluice_tests::snowflake::USER,
        "--private-key-file",
        key,
        "--base-url",
        base_url,
    ];
    args.extend(setup);
    args
}

/// What `sluice run` into Snowflake needs, set up: a lake bucket and Glue database on moto,
/// the Snowflake stand-in reading that bucket, the shop sample in a PostgreSQL database of
/// its own, a config for `tables_yaml`, the key file, and `sluice snowflake apply` done.
pub struct SnowflakeScene {
    pub moto: &'static MotoServer,
    pub lake: sluice_tests::s3::Lake,
    pub standin: sluice_tests::snowflake::StandIn,
    pub db: sluice_tests::TestDb,
    pub dir: tempfile::TempDir,
    pub config: std::path::PathBuf,
    pub key: std::path::PathBuf,
    pub database: String,
    pub base_url: String,
}

impl SnowflakeScene {
    pub async fn applied(label: &str, tables_yaml: &str) -> SnowflakeScene {
        SnowflakeScene::applied_with(label, |db| sluice_tests::shop_config(db, tables_yaml)).await
    }

    /// [`SnowflakeScene::applied`] with the config `config` writes (given the scene's shop
    /// database), e.g. one reading another server.
    pub async fn applied_with(
        label: &str,
        config_text: impl FnOnce(&sluice_tests::TestDb) -> String,
    ) -> SnowflakeScene {
        let moto = MotoServer::shared();
        let lake = sluice_tests::s3::Lake::create(moto).await;
        let standin = sluice_tests::snowflake::StandIn::start(&sluice_tests::snowflake::Options {
            s3_endpoint: Some(moto.endpoint()),
            ..Default::default()
        });
        let db = sluice_tests::shop_db(label).await;
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("shop.yaml");
        std::fs::write(&config, config_text(&db)).unwrap();
        let key = dir.path().join("rsa_key.p8");
        std::fs::write(
            &key,
            &sluice_tests::snowflake::KeyPair::shared().private_pem,
        )
        .unwrap();
        let database = standin.config(label).database.unwrap();
        let base_url = standin.base_url();
        let scene = SnowflakeScene {
            moto,
            lake,
            standin,
            db,
            dir,
            config,
            key,
            database,
            base_url,
        };
        let apply = apply_args(
            scene.key.to_str().unwrap(),
            &scene.base_url,
            setup_args(
                scene.config.to_str().unwrap(),
                &scene.database,
                &scene.lake.bucket,
                "lake/raw",
                "https://abc.execute-api.eu-west-1.amazonaws.com/prod/",
            ),
        );
        let applied = scene.sluice(&apply, &[]);
        assert!(applied.status.success(), "{}", both(&applied));
        scene
    }

    /// The binary in the scene's directory, pointed at moto, with `env` on top.
    pub fn sluice(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        sluice_on(self.moto, args, self.dir.path(), env)
    }

    /// `sluice run` of the config into the lake's `lake/raw` and the stand-in's database.
    pub fn run_args(&self) -> Vec<String> {
        [
            "run",
            "--config",
            self.config.to_str().unwrap(),
            "--output",
            &format!("s3://{}/lake/raw", self.lake.bucket),
            "--snowflake-account",
            sluice_tests::snowflake::ACCOUNT,
            "--snowflake-user",
            sluice_tests::snowflake::USER,
            "--snowflake-private-key-file",
            self.key.to_str().unwrap(),
            "--snowflake-url",
            &self.base_url,
            "--snowflake-database",
            &self.database,
        ]
        .map(str::to_owned)
        .to_vec()
    }

    /// A client of the stand-in, in the scene's database.
    pub fn warehouse(&self) -> sluice::warehouse::snowflake::SnowflakeClient {
        let mut config = self.standin.config("scene_check");
        config.database = Some(self.database.clone());
        sluice::warehouse::snowflake::SnowflakeClient::new(
            config,
            sluice_tests::snowflake::KeyPair::shared().private_key(),
        )
        .unwrap()
    }
}

/// A config reading `public.docs` as a cdc table (hard deletes) from the PostgreSQL at `url`,
/// with `load_extra` inside its `load` (e.g. `, max_slot_lag_mb: 1`) and `more_tables` after.
pub fn cdc_docs_config(url: &str, load_extra: &str, more_tables: &str) -> String {
    format!(
        "sources:
  - name: shop
    engine: postgres
    connection: {{ url: \"{url}\", sslmode: disable }}
tables:
  - source: shop
    table: public.docs
    primary_key: [id]
    load: {{ mode: cdc{load_extra} }}
    deletes: {{ mode: hard }}
{more_tables}"
    )
}
