//! Rotated source credentials on a warm function: the serverless flow (`Functions` over a
//! `Deployment` built once, as a warm Lambda keeps it) against moto's Secrets Manager,
//! DynamoDB and S3 and a PostgreSQL server of the test's own with password (SCRAM)
//! authentication, so a changed password really refuses the old one. Between runs the test
//! does what an RDS single-user rotation does: changes the password in the database, puts the
//! new one in the secret (its AWSCURRENT version), and ends the connections made with the old
//! one.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};
use sluice::config_store::ConfigStore;
use sluice::state::dynamo::DynamoStateStore;
use sluice_core::deploy::DeploymentSettings;
use sluice_core::{Config, RunId, RunRecord, RunStatus};
use sluice_functions::deployment::Deployment;
use sluice_functions::events::TriggerTables;
use sluice_functions::flow::Functions;
use sluice_functions::invoke::{ExtractFunctionEvent, FinalizeEvent, InvokeError, Invoker};
use sluice_tests::moto::{MotoServer, unique_name};
use sluice_tests::private_pg::{self, PrivatePg};

const USER: &str = "sluice_reader";
const EXTRACT: &str = "sluice-extract";
const FINALIZE: &str = "sluice-finalize";
/// Every step of a run is bounded: a retry loop would hang, and this turns it into a failure.
const STEP_LIMIT: Duration = Duration::from_secs(120);

/// Asynchronous invocations, queued for the test to deliver (as Lambda would).
#[derive(Default)]
struct Queue(Mutex<VecDeque<(String, Vec<u8>)>>);

#[async_trait]
impl Invoker for Queue {
    async fn invoke_async(&self, function: &str, payload: Vec<u8>) -> Result<(), InvokeError> {
        self.0
            .lock()
            .unwrap()
            .push_back((function.to_owned(), payload));
        Ok(())
    }
}

/// The services of one test: a private PostgreSQL whose `USER` reads `public.orders`, moto
/// with a bucket, the state and config tables, and the source's secret.
struct Fixture {
    pg: PrivatePg,
    moto: &'static MotoServer,
    sdk: aws_config::SdkConfig,
    secret_arn: String,
    env: std::collections::BTreeMap<String, String>,
}

impl Fixture {
    async fn start(label: &str, password: &str, rows: u32) -> Fixture {
        let pg = PrivatePg::start("host all all 127.0.0.1/32 scram-sha-256");
        pg.psql(&format!(
            "CREATE ROLE {USER} LOGIN PASSWORD '{password}';\
             CREATE TABLE public.orders (id int PRIMARY KEY, note text);\
             INSERT INTO public.orders SELECT g, 'order ' || g FROM generate_series(1, {rows}) g;\
             GRANT SELECT ON public.orders TO {USER};"
        ));
        let moto = MotoServer::shared();
        let sdk = moto.sdk_config().await;
        let bucket = moto.bucket_with(label, Vec::new()).await;
        let state_table = unique_name(&format!("{label}-state"));
        let config_table = unique_name(&format!("{label}-config"));
        DynamoStateStore::new(&sdk, state_table.clone())
            .create_table()
            .await
            .unwrap();
        let store = ConfigStore::new(&sdk, config_table.clone());
        store.create_table().await.unwrap();
        let secret_arn = aws_sdk_secretsmanager::Client::new(&sdk)
            .create_secret()
            .name(unique_name(&format!("{label}-db")))
            .secret_string(secret(&pg, password, "postgres"))
            .send()
            .await
            .unwrap()
            .arn
            .unwrap();
        let yaml = format!(
            "sources:\n  - name: shop\n    engine: postgres\n    connection:\n      secret_arn: {secret_arn}\n\
             tables:\n  - source: shop\n    table: public.orders\n    primary_key: [id]\n    load:\n      mode: full\n"
        );
        store
            .push(&Config::from_yaml(&yaml, "test").unwrap())
            .await
            .unwrap();
        let env = [
            ("SLUICE_OUTPUT", format!("s3://{bucket}/lake")),
            ("SLUICE_STATE_TABLE", state_table),
            ("SLUICE_CONFIG_TABLE", config_table),
            ("SLUICE_EXTRACT_FUNCTION", EXTRACT.to_owned()),
            ("SLUICE_FINALIZE_FUNCTION", FINALIZE.to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        Fixture {
            pg,
            moto,
            sdk,
            secret_arn,
            env,
        }
    }

    /// A warm function: the deployment is built once and kept for every event.
    async fn deployment(&self, queue: Arc<Queue>) -> Deployment {
        let settings = DeploymentSettings::from_env(&self.env).unwrap();
        Deployment::build_with_s3(settings, &self.sdk, &self.moto.aws(), queue)
            .await
            .unwrap()
    }

    /// Puts a new AWSCURRENT version of the secret, as the last step of a rotation does.
    async fn put_secret(&self, password: &str, dbname: &str) {
        aws_sdk_secretsmanager::Client::new(&self.sdk)
            .put_secret_value()
            .secret_id(&self.secret_arn)
            .secret_string(secret(&self.pg, password, dbname))
            .send()
            .await
            .unwrap();
    }

    /// A single-user rotation: the database's password changes, the secret follows, and the
    /// connections made with the old password end (on RDS they would outlive the change).
    async fn rotate(&self, password: &str) {
        self.set_password(password);
        self.put_secret(password, "postgres").await;
    }

    fn set_password(&self, password: &str) {
        self.pg.psql(&format!(
            "ALTER ROLE {USER} PASSWORD '{password}';\
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{USER}';"
        ));
    }

    /// How often the server has refused `USER`'s password so far.
    fn refusals(&self) -> usize {
        self.pg
            .log()
            .matches(&format!(
                "password authentication failed for user \"{USER}\""
            ))
            .count()
    }

    async fn count(&self, dbname: &str) -> u64 {
        let client = sluice_tests::connect(&format!(
            "postgres://postgres:{}@127.0.0.1:{}/{dbname}?sslmode=disable",
            private_pg::PASSWORD,
            self.pg.port
        ))
        .await;
        let row = client
            .query_one("SELECT count(*) FROM public.orders", &[])
            .await
            .unwrap();
        row.get::<_, i64>(0) as u64
    }
}

fn secret(pg: &PrivatePg, password: &str, dbname: &str) -> String {
    json!({
        "engine": "postgres",
        "host": "127.0.0.1",
        "port": pg.port,
        "username": USER,
        "password": password,
        "dbname": dbname,
        "sslmode": "disable",
    })
    .to_string()
}

/// The trigger's answer for the table: the run it started (its id), or its error.
async fn trigger(functions: &Functions) -> Value {
    let answer = tokio::time::timeout(
        STEP_LIMIT,
        functions.trigger_tables(TriggerTables {
            tables: vec!["shop/public.orders".into()],
            full_reload: false,
            keyset: false,
        }),
    )
    .await
    .expect("the trigger answered in time");
    serde_json::to_value(answer).unwrap()["runs"][0].clone()
}

/// Delivers the queued invocations (the plan, each chunk's extract, then finalize) until none
/// is left.
async fn deliver(functions: &Functions, queue: &Queue) {
    while deliver_next(functions, queue).await {}
}

/// Delivers the oldest queued invocation, if any.
async fn deliver_next(functions: &Functions, queue: &Queue) -> bool {
    let Some((function, payload)) = queue.0.lock().unwrap().pop_front() else {
        return false;
    };
    let step = async {
        match function.as_str() {
            EXTRACT => match serde_json::from_slice(&payload).unwrap() {
                ExtractFunctionEvent::Plan(event) => functions.plan(event, None).await.map(|_| ()),
                ExtractFunctionEvent::Chunk(event) => {
                    functions.extract(event, None).await.map(|_| ())
                }
                ExtractFunctionEvent::Resume(event) => functions.resume(event).await.map(|_| ()),
            },
            FINALIZE => {
                let event: FinalizeEvent = serde_json::from_slice(&payload).unwrap();
                functions.finalize(event).await.map(|_| ())
            }
            other => panic!("invoked an unknown function {other}"),
        }
    };
    tokio::time::timeout(STEP_LIMIT, step)
        .await
        .expect("the step finished in time")
        .unwrap_or_else(|e| panic!("{function} failed: {e}"));
    true
}

async fn run_record(functions: &Functions, started: &Value) -> RunRecord {
    let run_id: RunId = started["run_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no run started: {started}"))
        .parse()
        .unwrap();
    functions
        .deployment
        .state
        .get_run(run_id)
        .await
        .unwrap()
        .unwrap()
}

/// Triggers the table and delivers its events: the run must complete with `rows` rows.
async fn run_completed(functions: &Functions, queue: &Queue, rows: u64) -> RunRecord {
    let started = trigger(functions).await;
    deliver(functions, queue).await;
    let record = run_record(functions, &started).await;
    assert_eq!(
        record.status,
        RunStatus::Completed,
        "{started}: {:?}",
        record.error
    );
    assert_eq!(record.rows(), rows, "rows of {}", record.run_id);
    record
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_function_reads_a_rotated_secret_once_when_the_database_refuses_the_old_one() {
    let fx = Fixture::start("rotation", "first-Pw-1", 40).await;
    let queue = Arc::new(Queue::default());
    let functions = Functions::new(fx.deployment(queue.clone()).await);

    // Run 1 reads the secret and caches the adapter built from it.
    run_completed(&functions, &queue, fx.count("postgres").await).await;
    assert_eq!(fx.refusals(), 0);

    // Rotation between the runs, and new rows: run 2's plan is refused with the cached
    // password, reads the secret again and plans with the new one.
    fx.pg
        .psql("INSERT INTO public.orders SELECT g, 'late' FROM generate_series(41, 55) g;");
    fx.rotate("second-Pw-2").await;
    let started = trigger(&functions).await;
    assert!(started["error"].is_null(), "{started}");
    // The plan (extract's first event) connects to the source.
    assert!(deliver_next(&functions, &queue).await);
    let planned = run_record(&functions, &started).await;
    assert!(
        planned.plan.is_some(),
        "planning failed: {:?}",
        planned.error
    );
    assert_eq!(fx.refusals(), 1, "one refusal, then the new secret");

    // Another rotation between the plan and its chunk: the chunk's connection is refused,
    // the secret read again, and the chunk retried once.
    fx.rotate("third-Pw-3").await;
    deliver(&functions, &queue).await;
    let record = run_record(&functions, &started).await;
    assert_eq!(
        record.status,
        RunStatus::Completed,
        "{started}: {:?}",
        record.error
    );
    assert_eq!(record.rows(), fx.count("postgres").await);
    assert_eq!(record.rows(), 55);
    assert_eq!(fx.refusals(), 2);

    // The adapter built from the new secret is kept: no more refusals, no more reads needed.
    run_completed(&functions, &queue, 55).await;
    assert_eq!(fx.refusals(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_secret_fails_with_the_refusal_after_one_more_read() {
    let fx = Fixture::start("wrong-secret", "first-Pw-1", 10).await;
    let queue = Arc::new(Queue::default());
    let functions = Functions::new(fx.deployment(queue.clone()).await);
    run_completed(&functions, &queue, 10).await;

    // The password changes, but the secret gets a wrong one.
    fx.set_password("actual-Pw-2");
    fx.put_secret("not-the-password", "postgres").await;
    let started = trigger(&functions).await;
    deliver(&functions, &queue).await;
    let record = run_record(&functions, &started).await;
    assert_eq!(record.status, RunStatus::Failed, "{started}");
    let error = record.error.expect("the run's error").message;
    assert!(
        error.contains(&format!("authentication failed for user '{USER}'")),
        "{error}"
    );
    assert!(
        error.contains("refused again after reading the secret again"),
        "{error}"
    );
    assert!(
        !error.contains("not-the-password") && !error.contains("actual-Pw-2"),
        "a password leaked: {error}"
    );
    // Refused with the cached password, then once with the secret read again: no loop.
    assert_eq!(fx.refusals(), 2);
    // The plan was the only event: a failed plan fans out nothing.
    assert!(queue.0.lock().unwrap().is_empty());

    // The next event fails the same way, refused once with what it holds and once after
    // one more read of the secret.
    let started = trigger(&functions).await;
    deliver(&functions, &queue).await;
    assert_eq!(
        run_record(&functions, &started).await.status,
        RunStatus::Failed,
        "{started}"
    );
    assert_eq!(fx.refusals(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_source_is_rebuilt_from_its_secret_once_it_is_older_than_the_maximum_age() {
    let fx = Fixture::start("secret-age", "first-Pw-1", 12).await;
    // A second database the secret will point at, with other rows: nothing refuses the
    // cached credentials, so only the age can make a function read the secret again.
    fx.pg.psql("CREATE DATABASE other;");
    let other = sluice_tests::connect(&format!(
        "postgres://postgres:{}@127.0.0.1:{}/other?sslmode=disable",
        private_pg::PASSWORD,
        fx.pg.port
    ))
    .await;
    other
        .batch_execute(&format!(
            "CREATE TABLE public.orders (id int PRIMARY KEY, note text);\
             INSERT INTO public.orders SELECT g, 'other ' || g FROM generate_series(1, 30) g;\
             GRANT SELECT ON public.orders TO {USER};"
        ))
        .await
        .unwrap();

    let queue = Arc::new(Queue::default());
    let kept = Functions::new(fx.deployment(queue.clone()).await);
    let aged = Functions::new(
        fx.deployment(queue.clone())
            .await
            .with_source_max_age(Duration::ZERO),
    );
    run_completed(&kept, &queue, 12).await;
    run_completed(&aged, &queue, 12).await;

    fx.put_secret("first-Pw-1", "other").await;
    // Within the maximum age the adapter (and the secret it was built from) is reused...
    run_completed(&kept, &queue, 12).await;
    // ...and past it the secret is read again.
    run_completed(&aged, &queue, 30).await;
    assert_eq!(fx.refusals(), 0);
}
