//! `sluice snowflake sql` and `apply` as a user runs them: bad options named by flag, the
//! script written where asked, and the objects part applied (twice: it is idempotent) through
//! the SQL API to the local stand-in.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use common::{
    SnowflakeScene, apply_args, assert_contains, both, ok, output_of, setup_args, sluice,
    sluice_command, text,
};

use sluice::warehouse::Statement;
use sluice_tests::snowflake::{ACCOUNT, KeyPair, StandIn, USER};

const CONFIG: &str = "sources:\n  - name: shop\n    engine: postgres\n    connection:\n      url: postgres://u@h/db\n\
    tables:\n  - source: shop\n    table: public.orders\n    primary_key: [order_id]\n\
    \x20   target: {staging_table: MART.ORDERS}\n\
    \x20 - source: shop\n    table: public.products\n    primary_key: [product_id]\n";

#[test]
fn sql_names_bad_options_and_writes_the_script() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tables.yaml");
    std::fs::write(&config, CONFIG).unwrap();
    let config = config.to_str().unwrap();

    let mut args = vec!["snowflake", "sql"];
    args.extend(setup_args(
        config,
        "SLUICE",
        "Bad_Bucket",
        "raw/v1",
        "http://x/'; DROP",
    ));
    let out = sluice(&args, dir.path());
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--bucket: 'Bad_Bucket' is not an S3 bucket name"),
        "{stderr}"
    );
    assert!(stderr.contains("--api-url: "), "{stderr}");
    assert!(!dir.path().join("out/setup.sql").exists());

    let mut args = vec!["snowflake", "sql", "--out-dir", "out"];
    args.extend(setup_args(
        config,
        "SLUICE",
        "acme-lake",
        "raw/v1",
        "https://abc.execute-api.eu-west-1.amazonaws.com/prod/",
    ));
    let out = sluice(&args, dir.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let written = std::fs::read_to_string(dir.path().join("out/setup.sql")).unwrap();
    assert_eq!(written, String::from_utf8_lossy(&out.stdout));
    for expected in [
        "CREATE STORAGE INTEGRATION IF NOT EXISTS \"SLUICE_S3\"",
        "STORAGE_ALLOWED_LOCATIONS = ('s3://acme-lake/raw/v1/')",
        "CREATE STAGE IF NOT EXISTS \"SLUICE\".\"RAW\".\"SLUICE_STAGE\"",
        "CREATE TABLE IF NOT EXISTS \"SLUICE\".\"MART\".\"ORDERS_MERGES\"",
        "CREATE OR REPLACE EXTERNAL FUNCTION \"SLUICE\".\"SLUICE\".\"RUN_STATUS\"(RUN_ID VARCHAR)",
        "CREATE USER IF NOT EXISTS \"SLUICE\"\n  TYPE = SERVICE",
        "GRANT USAGE, OPERATE ON WAREHOUSE \"SLUICE_WH\" TO ROLE \"SLUICE_LOADER\"",
    ] {
        assert!(written.contains(expected), "{expected} not in:\n{written}");
    }
    // The functions take the deployed trigger's batch limit: the default, or what the
    // deployment says (SLUICE_MAX_BATCH_ROWS, the template's MaxBatchRows).
    let default = format!(
        "MAX_BATCH_ROWS = {}\n",
        sluice_core::deploy::DEFAULT_MAX_BATCH_ROWS
    );
    // One per external function the set-up creates (ingest, ingest_async, run_status,
    // check_source with and without a table).
    let functions = written
        .matches("CREATE OR REPLACE EXTERNAL FUNCTION")
        .count();
    assert_eq!(functions, 6, "{written}");
    assert_eq!(written.matches(&default).count(), functions, "{written}");
    let mut args = vec!["snowflake", "sql", "--no-write"];
    args.extend(setup_args(
        config,
        "SLUICE",
        "acme-lake",
        "raw/v1",
        "https://abc.execute-api.eu-west-1.amazonaws.com/prod/",
    ));
    let mut command = sluice_command(&args, dir.path());
    command.env("SLUICE_MAX_BATCH_ROWS", "50");
    let out = output_of(&mut command);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .matches("MAX_BATCH_ROWS = 50\n")
            .count(),
        functions
    );
    args.extend(["--max-batch-rows", "0"]);
    let out = sluice(&args, dir.path());
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--max-batch-rows: 0 must be a whole number from 1 to 1000"),
        "{stderr}"
    );
}

#[test]
fn apply_creates_the_objects_through_the_sql_api_and_can_run_again() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tables.yaml");
    std::fs::write(&config, CONFIG).unwrap();
    let key = dir.path().join("rsa_key.p8");
    std::fs::write(&key, &KeyPair::shared().private_pem).unwrap();
    let standin = StandIn::shared();
    let database = standin.config("apply").database.unwrap();
    let base_url = standin.base_url();
    let args = apply_args(
        key.to_str().unwrap(),
        &base_url,
        setup_args(
            config.to_str().unwrap(),
            &database,
            "acme-lake",
            "raw/v1",
            "https://abc.execute-api.eu-west-1.amazonaws.com/prod/",
        ),
    );
    for _ in 0..2 {
        let out = sluice(&args, dir.path());
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = standin.client("applycheck");
    let tables = rt
        .block_on(client.execute(
            &Statement::new(format!(
                "SELECT table_schema || '.' || table_name FROM \"{database}\".INFORMATION_SCHEMA.TABLES \
                 WHERE table_name LIKE '%MERGES' ORDER BY 1"
            )),
        ))
        .unwrap();
    let names: Vec<&str> = tables.rows.iter().map(|r| r[0].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["MART.ORDERS_MERGES", "STAGING.SHOP_PUBLIC_PRODUCTS_MERGES"]
    );
}

/// The set-up applied, then `sluice run` with an s3:// output loads the run into Snowflake:
/// STAGING ends up with the source's rows and `sluice status` shows the merge counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_loads_into_snowflake_after_apply() {
    let scene = SnowflakeScene::applied(
        "cli_sf",
        "  - source: shop\n    table: public.products\n    primary_key: [product_id]\n    target: {json_columns: [attributes]}\n",
    )
    .await;
    let pg = scene.db.client().await;
    let run_sluice = |args: &[&str]| {
        let out = scene.sluice(args, &[]);
        assert!(
            out.status.success(),
            "sluice {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let run = scene.run_args();
    run_sluice(&run.iter().map(String::as_str).collect::<Vec<_>>());
    let status = run_sluice(&["status"]);
    let run_id = status
        .split_whitespace()
        .find(|w| w.len() == 26 && w.parse::<sluice_core::RunId>().is_ok())
        .unwrap_or_else(|| panic!("no run id in {status}"));
    let story = run_sluice(&["status", run_id]);
    assert!(
        story.contains("merge     {\"inserted\":200,\"updated\":0}"),
        "{story}"
    );

    let client = scene.warehouse();
    let count = client
        .execute(&Statement::new(format!(
            "SELECT COUNT(*), COUNT(\"attributes\") FROM \"{}\".STAGING.SHOP_PUBLIC_PRODUCTS",
            scene.database
        )))
        .await
        .unwrap();
    let source = pg
        .query_one(
            "SELECT count(*), count(attributes) FROM public.products",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(count.rows[0][0].as_i64(), Some(source.get::<_, i64>(0)));
    assert_eq!(count.rows[0][1].as_i64(), Some(source.get::<_, i64>(1)));
}

/// With --with-tables, the set-up also holds each table's RAW/STAGING tables and merge
/// procedure, generated from the source's catalog before any run: applied through the SQL
/// API, RAW has exactly the source's columns (then sluice's), in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tables_the_setup_creates_each_tables_objects_from_the_source_catalog() {
    let db = sluice_tests::shop_db("cli_sf_tables").await;
    let pg = db.client().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("shop.yaml");
    std::fs::write(
        &config,
        sluice_tests::shop_config(
            &db,
            "  - source: shop\n    table: public.orders\n    primary_key: [order_id]\n    load: {mode: incremental, cursor: updated_at}\n",
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let standin = StandIn::shared();
    let database = standin.config("withtables").database.unwrap();
    let api = "https://abc.execute-api.eu-west-1.amazonaws.com/prod/";
    let mut sql = vec!["snowflake", "sql", "--no-write", "--with-tables"];
    sql.extend(setup_args(config, &database, "acme-lake", "raw", api));
    let out = sluice(&sql, dir.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let script = String::from_utf8_lossy(&out.stdout).into_owned();
    for expected in [
        "-- 3. tables: shop/public.orders",
        "\"RAW\".\"SHOP_PUBLIC_ORDERS\"",
        "\"total\" NUMBER(14,2)",
        "\"ordered_at\" TIMESTAMP_TZ",
        "\"updated_at\" TIMESTAMP_NTZ",
        "CREATE OR REPLACE PROCEDURE",
    ] {
        assert!(
            script.contains(expected),
            "missing {expected} in:\n{script}"
        );
    }

    let key = dir.path().join("rsa_key.p8");
    std::fs::write(&key, &KeyPair::shared().private_pem).unwrap();
    let base_url = standin.base_url();
    let mut setup = setup_args(config, &database, "acme-lake", "raw", api);
    setup.push("--with-tables");
    let out = sluice(
        &apply_args(key.to_str().unwrap(), &base_url, setup),
        dir.path(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let client = standin.client("withtablescheck");
    let columns = client
        .execute(&Statement::new(format!(
            "SELECT column_name FROM \"{database}\".INFORMATION_SCHEMA.COLUMNS \
             WHERE table_schema = 'RAW' AND table_name = 'SHOP_PUBLIC_ORDERS' ORDER BY ordinal_position"
        )))
        .await
        .unwrap();
    let got: Vec<String> = columns
        .rows
        .iter()
        .map(|r| r[0].as_str().unwrap().to_owned())
        .collect();
    let mut expected: Vec<String> = pg
        .query(
            "SELECT column_name::text FROM information_schema.columns \
             WHERE table_schema = 'public' AND table_name = 'orders' ORDER BY ordinal_position",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    expected.extend(
        [
            "_sluice_run_id",
            "_sluice_extracted_at",
            "_sluice_file",
            "_sluice_row",
        ]
        .map(String::from),
    );
    assert_eq!(got, expected);
}

/// The key can come from Secrets Manager, as the functions read it: `apply` works with the
/// secret's key, and a missing secret is a clear error that prints no key material.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_can_come_from_secrets_manager() {
    let moto = sluice_tests::moto::MotoServer::shared();
    let sdk = moto.sdk_config().await;
    let secrets = aws_sdk_secretsmanager::Client::new(&sdk);
    let pem = KeyPair::shared().private_pem.clone();
    let name = sluice_tests::moto::unique_name("sfkey");
    let arn = secrets
        .create_secret()
        .name(&name)
        .secret_string(serde_json::json!({ "private_key": pem }).to_string())
        .send()
        .await
        .unwrap()
        .arn
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tables.yaml");
    std::fs::write(&config, CONFIG).unwrap();
    let standin = StandIn::shared();
    let database = standin.config("keysecret").database.unwrap();
    let base_url = standin.base_url();
    let apply = |secret: &str| {
        let mut args = vec![
            "snowflake",
            "apply",
            "--account",
            ACCOUNT,
            "--user",
            USER,
            "--private-key-secret",
            secret,
            "--base-url",
            &base_url,
        ];
        args.extend(setup_args(
            config.to_str().unwrap(),
            &database,
            "acme-lake",
            "raw",
            "https://abc.execute-api.eu-west-1.amazonaws.com/prod/",
        ));
        output_of(moto.local_env(&mut sluice_command(&args, dir.path())))
    };
    let out = apply(&arn);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let missing = format!("{arn}-gone");
    let out = apply(&missing);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the Snowflake key: secret")
            && err.contains("does not exist (check --private-key-secret)"),
        "{err}"
    );
    let body = pem.lines().nth(1).unwrap();
    assert!(!err.contains(body), "key material leaked: {err}");
}

/// `sluice snowflake doctor` against a stand-in holding the whole set-up (run as the admin
/// would, every part): every check passes, the probe procedure compiles and runs; an external
/// function created without MAX_BATCH_ROWS fails its check with the statement that fixes it,
/// and running that statement makes the doctor pass again.
#[test]
fn doctor_passes_on_the_set_up_and_names_the_fix_for_what_drifted() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tables.yaml");
    std::fs::write(&config, CONFIG).unwrap();
    let config = config.to_str().unwrap().to_owned();
    let key = dir.path().join("rsa_key.p8");
    std::fs::write(&key, &KeyPair::shared().private_pem).unwrap();
    let key = key.to_str().unwrap().to_owned();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let moto = sluice_tests::moto::MotoServer::shared();
    let bucket = rt.block_on(moto.bucket_with("doctor", vec![("raw/x.txt", b"x".to_vec())]));
    let standin = StandIn::start(&sluice_tests::snowflake::Options {
        s3_endpoint: Some(moto.endpoint()),
        ..Default::default()
    });
    let admin = standin.client("doctor");
    let database = standin.config("doctor").database.unwrap();
    let api = "https://abc.execute-api.eu-west-1.amazonaws.com/prod/";
    let setup = |extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = setup_args(&config, &database, &bucket, "raw", api)
            .into_iter()
            .map(str::to_owned)
            .collect();
        args.extend(["--user".to_owned(), USER.to_owned()]);
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        args
    };
    let run_all = |statements: &[String]| {
        for statement in statements {
            rt.block_on(admin.execute(&Statement::new(statement.as_str())))
                .unwrap_or_else(|e| panic!("{e}\n{statement}"));
        }
    };

    // The admin runs the whole script `sluice snowflake sql` prints.
    let mut args = vec![
        "snowflake".to_owned(),
        "sql".to_owned(),
        "--no-write".to_owned(),
    ];
    args.extend(setup(&[]));
    let out = sluice(
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        dir.path(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    run_all(&sluice_tests::snowflake::split_script(
        &String::from_utf8_lossy(&out.stdout),
    ));

    let base_url = standin.base_url();
    let doctor = || {
        let mut args = vec![
            "snowflake".to_owned(),
            "doctor".to_owned(),
            "--account".to_owned(),
            ACCOUNT.to_owned(),
            "--private-key-file".to_owned(),
            key.clone(),
            "--base-url".to_owned(),
            base_url.clone(),
            "--probe".to_owned(),
            "--json".to_owned(),
        ];
        args.extend(setup(&[]));
        let out = sluice(
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
            dir.path(),
        );
        let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        (
            out.status.code(),
            lines,
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, lines, stderr) = doctor();
    let not_passed: Vec<&serde_json::Value> =
        lines.iter().filter(|l| l["result"] != "pass").collect();
    assert_eq!(code, Some(0), "{not_passed:#?}\n{stderr}");
    // Every check ran; only the merge procedures wait for the tables' first runs.
    assert!(lines.len() >= 14, "{lines:#?}");
    assert!(
        not_passed
            .iter()
            .all(|l| l["result"] == "skip" && l["check"] == "merge procedures"),
        "{not_passed:#?}"
    );
    for check in [
        "session",
        "storage integration",
        "API integration",
        "file format",
        "stage",
        "stage lists the bucket",
        "external function",
        "procedure compiles and runs",
    ] {
        assert!(
            lines.iter().any(|l| l["check"] == check),
            "no {check} check"
        );
    }

    // Drift: INGEST recreated without its batch limit.
    let drifted = format!(
        "CREATE OR REPLACE EXTERNAL FUNCTION \"{database}\".\"SLUICE\".\"INGEST\"(SOURCE_NAME VARCHAR, TABLE_NAME VARCHAR) \
         RETURNS VARIANT API_INTEGRATION = \"SLUICE_API\" AS '{api}ingest'"
    );
    run_all(&[drifted]);
    let (code, lines, _) = doctor();
    assert_eq!(code, Some(1), "{lines:#?}");
    let failed: Vec<&serde_json::Value> = lines.iter().filter(|l| l["result"] == "fail").collect();
    assert_eq!(failed.len(), 1, "{failed:#?}");
    assert_eq!(
        failed[0]["target"],
        format!("\"{database}\".\"SLUICE\".\"INGEST\"(VARCHAR, VARCHAR)")
    );
    assert!(
        failed[0]["detail"]
            .as_str()
            .unwrap()
            .contains("MAX_BATCH_ROWS is 'not set', the trigger accepts 100"),
        "{failed:#?}"
    );
    let fix: Vec<String> = failed[0]["fix"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap().to_owned())
        .collect();
    assert!(fix[0].contains("MAX_BATCH_ROWS = 100"), "{fix:?}");
    run_all(&fix);
    let (code, lines, _) = doctor();
    assert_eq!(code, Some(0), "the printed fix mends it: {lines:#?}");
}

/// `sluice validate` after a run: every level matches (exit 0, a table per table, JSON on
/// request); a value changed in STAGING makes it exit 1 naming the metric; a call without
/// Snowflake options says what is missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_matches_after_a_run_and_names_what_differs() {
    let scene = SnowflakeScene::applied(
        "cli_sf_val",
        "  - source: shop\n    table: public.products\n    primary_key: [product_id]\n",
    )
    .await;
    let run = scene.run_args();
    let out = scene.sluice(&run.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
    assert!(out.status.success(), "{}", both(&out));
    // The Snowflake options of `run`, with `validate` instead.
    let mut validate: Vec<String> = run.clone();
    validate[0] = "validate".into();
    let output_at = validate.iter().position(|a| a == "--output").unwrap();
    validate.drain(output_at..output_at + 2);
    let args: Vec<&str> = validate.iter().map(String::as_str).collect();

    let mut every_level = args.clone();
    every_level.extend(["--level", "rows"]);
    let out = scene.sluice(&every_level, &[]);
    let report = ok(&out);
    assert_contains(&report, "0 missing, 0 extra, 0 different: OK");
    assert_contains(&report, "shop/public.products → ");
    assert_contains(&report, ": OK\n");
    assert_contains(&report, "sum(price)");
    let pg = scene.db.client().await;
    let total: String = pg
        .query_one("SELECT sum(price)::text FROM products", &[])
        .await
        .unwrap()
        .get(0);
    assert_contains(&report, &total);

    let mut json = args.clone();
    json.push("--json");
    let line = ok(&scene.sluice(&json, &[]));
    let parsed: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
    assert_eq!(parsed["table"], "shop/public.products");
    assert!(parsed["metrics"].as_array().unwrap().len() > 5);

    scene
        .warehouse()
        .execute(&Statement::new(format!(
            "UPDATE \"{}\".STAGING.SHOP_PUBLIC_PRODUCTS SET \"price\" = \"price\" + 1 WHERE \"product_id\" = 1",
            scene.database
        )))
        .await
        .unwrap();
    let out = scene.sluice(&every_level, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    assert_contains(&text(&out.stdout), "key (1) Different in price");
    let shown = text(&out.stdout);
    assert_contains(&shown, ": MISMATCH\n");
    let line = shown.lines().find(|l| l.contains("sum(price)")).unwrap();
    assert!(line.contains("MISMATCH"), "{line}");

    // Every validation is kept as a run of the table: the passes COMPLETED, the mismatch
    // FAILED, and its story is the validation itself.
    let said = text(&out.stderr);
    let recorded = said
        .split_whitespace()
        .find(|w| w.len() == 26 && w.parse::<sluice_core::RunId>().is_ok())
        .unwrap_or_else(|| panic!("no run id in {said}"));
    assert_contains(&said, "validation recorded as run");
    let list = ok(&scene.sluice(&["status"], &[]));
    let validations: Vec<&str> = list
        .lines()
        .filter(|l| l.contains("shop/public.products (validation)"))
        .collect();
    assert_eq!(validations.len(), 3, "{list}");
    assert_eq!(
        validations.iter().filter(|l| l.contains("FAILED")).count(),
        1,
        "{list}"
    );
    let story = ok(&scene.sluice(&["status", recorded], &[]));
    assert_contains(&story, "kind      validation");
    assert_contains(&story, "status    FAILED");
    assert_contains(&story, "metric(s) differ");
    assert_contains(&story, "key (1) Different in price");

    let out = scene.sluice(
        &["validate", "--config", scene.config.to_str().unwrap()],
        &[],
    );
    assert!(!out.status.success());
    assert_contains(&both(&out), "give --snowflake-account");
}

/// `sluice run` runs a table's key set after its load once `deletes.keyset.every` has passed
/// since the last one (here: never run), not again while it has not; `--keyset` asks for one;
/// a table without key sets is refused it, and the STAGING rows the source deleted are gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_takes_a_key_set_when_it_is_due_and_when_asked() {
    let scene = SnowflakeScene::applied(
        "cli_keyset",
        "  - source: shop\n    table: public.orders\n    primary_key: [order_id]\n    load: {mode: incremental, cursor: updated_at}\n    deletes: {mode: hard, keyset: {every: 1h}}\n  - source: shop\n    table: public.products\n    primary_key: [product_id]\n",
    )
    .await;
    let pg = scene.db.client().await;
    let mut run = scene.run_args();
    run.extend(["--table".to_owned(), "public.orders".to_owned()]);
    let run: Vec<&str> = run.iter().map(String::as_str).collect();
    let ok_run = |args: &[&str]| {
        let out = scene.sluice(args, &[]);
        assert!(out.status.success(), "sluice {args:?}: {}", both(&out));
        text(&out.stdout)
    };
    let staging = format!("\"{}\".STAGING.SHOP_PUBLIC_ORDERS", scene.database);
    let warehouse = scene.warehouse();
    let count = async |sql: &str| -> i64 {
        let result = warehouse
            .execute(&sluice::warehouse::Statement::new(sql))
            .await
            .unwrap();
        result.rows[0][0].as_i64().unwrap()
    };

    // The first run: the load, then the key set that has never run.
    let first = ok_run(&run);
    assert_eq!(
        first.matches("shop/public.orders (key set)").count(),
        1,
        "{first}"
    );
    // Deleted at the source: the next load cannot see it, and no key set is due for an hour.
    let deleted = pg
        .execute("DELETE FROM public.orders WHERE order_id % 10 = 3", &[])
        .await
        .unwrap();
    assert!(deleted > 0);
    let second = ok_run(&run);
    assert!(!second.contains("(key set)"), "{second}");
    let source: i64 = pg
        .query_one("SELECT count(*) FROM public.orders", &[])
        .await
        .unwrap()
        .get(0);
    let in_staging = count(&format!("SELECT COUNT(*) FROM {staging}")).await;
    assert_eq!(in_staging, source + deleted as i64);
    // Asked for: the deleted rows leave STAGING.
    let mut keyset = run.clone();
    keyset.push("--keyset");
    let third = ok_run(&keyset);
    assert!(third.contains("shop/public.orders (key set)"), "{third}");
    sluice_tests::snowflake::assert_staging_equals_source(
        &warehouse,
        &pg,
        &staging,
        "public.orders",
    )
    .await;
    let story = ok_run(&["status"]);
    assert!(story.contains("shop/public.orders (key set)"), "{story}");

    // A table without key sets is refused one, and nothing runs.
    let mut refused = scene.run_args();
    refused.extend(["--table", "public.products", "--keyset"].map(str::to_owned));
    let refused: Vec<&str> = refused.iter().map(String::as_str).collect();
    let out = scene.sluice(&refused, &[]);
    assert!(!out.status.success());
    assert!(
        text(&out.stdout).contains("takes no key-set runs"),
        "{}",
        both(&out)
    );
}

/// One `sluice run` is one batch: its gold procedure, reading two tables, is called once,
/// after both merged (it sees both tables' rows in STAGING), with the batch's id; the summary
/// and the story of each run show it. When one of its inputs fails, it is not called, the
/// summary says why, and the command exits 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_calls_its_batchs_gold_once_after_every_input_and_not_after_a_failed_one() {
    let scene = SnowflakeScene::applied(
        "cli_sf_gold",
        "  - source: shop\n    table: public.products\n    primary_key: [product_id]\n    target: {json_columns: [attributes]}\n\
         \x20 - source: shop\n    table: public.customers\n    primary_key: [customer_id]\n\
         gold:\n  - {procedure: GOLD.COUNT_BOTH, inputs: [shop/public.products, shop/public.customers]}\n",
    )
    .await;
    let pg = scene.db.client().await;
    let client = scene.warehouse();
    for sql in [
        "CREATE SCHEMA IF NOT EXISTS GOLD".to_owned(),
        "CREATE TABLE GOLD.CALL_LOG (BATCH_ID VARCHAR, PRODUCTS NUMBER(19,0), CUSTOMERS NUMBER(19,0))".to_owned(),
        "CREATE OR REPLACE PROCEDURE GOLD.COUNT_BOTH(RUN_ID VARCHAR)
         RETURNS VARCHAR
         LANGUAGE SQL
         AS $$
         BEGIN
         INSERT INTO GOLD.CALL_LOG (BATCH_ID, PRODUCTS, CUSTOMERS)
             SELECT :RUN_ID, (SELECT COUNT(*) FROM STAGING.SHOP_PUBLIC_PRODUCTS),
                    (SELECT COUNT(*) FROM STAGING.SHOP_PUBLIC_CUSTOMERS);
         RETURN 'counted';
         END;
         $$"
        .to_owned(),
    ] {
        client.execute(&Statement::new(sql)).await.unwrap();
    }
    let run: Vec<String> = scene.run_args();
    let run: Vec<&str> = run.iter().map(String::as_str).collect();
    let out = scene.sluice(&run, &[]);
    let summary = ok(&out);
    assert!(summary.contains("Gold of batch run-"), "{summary}");
    assert!(summary.contains("GOLD.COUNT_BOTH"), "{summary}");
    assert!(summary.contains("DONE"), "{summary}");
    let count = |table: &'static str| {
        let pg = &pg;
        async move {
            pg.query_one(&format!("SELECT count(*) FROM {table}"), &[])
                .await
                .unwrap()
                .get::<_, i64>(0)
        }
    };
    let logged = call_log(&client).await;
    assert_eq!(logged.len(), 1, "called once: {logged:?}");
    assert_eq!(
        (logged[0].1, logged[0].2),
        (
            count("public.products").await,
            count("public.customers").await
        ),
        "called after both merged"
    );
    assert!(summary.contains(&logged[0].0), "the batch id: {summary}");

    // The story of either run ends with its batch's gold.
    let status = ok(&scene.sluice(&["status"], &[]));
    let run_id = status
        .split_whitespace()
        .find(|w| w.len() == 26 && w.parse::<sluice_core::RunId>().is_ok())
        .unwrap_or_else(|| panic!("no run id in {status}"));
    let story = ok(&scene.sluice(&["status", run_id], &[]));
    assert!(
        story.contains(&format!("Gold of batch {}", logged[0].0)),
        "{story}"
    );

    // customers fails: COUNT_BOTH is not called, the summary says why, the exit code is 1.
    pg.batch_execute("ALTER TABLE public.customers RENAME TO customers_away")
        .await
        .unwrap();
    let out = scene.sluice(&run, &[]);
    pg.batch_execute("ALTER TABLE public.customers_away RENAME TO customers")
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let summary = text(&out.stdout);
    assert!(
        summary.contains("SKIPPED: input shop/public.customers failed in this batch"),
        "{summary}"
    );
    assert_eq!(call_log(&client).await, logged, "not called again");
}

/// `GOLD.CALL_LOG` of the gold test: batch id, STAGING rows of products and of customers.
async fn call_log(
    client: &sluice::warehouse::snowflake::SnowflakeClient,
) -> Vec<(String, i64, i64)> {
    client
        .execute(&Statement::new(
            "SELECT BATCH_ID, PRODUCTS, CUSTOMERS FROM GOLD.CALL_LOG ORDER BY BATCH_ID",
        ))
        .await
        .unwrap()
        .rows
        .iter()
        .map(|r| {
            (
                r[0].as_str().unwrap().to_owned(),
                r[1].as_i64().unwrap(),
                r[2].as_i64().unwrap(),
            )
        })
        .collect()
}
