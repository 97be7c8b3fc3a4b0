//! The one-time Snowflake set-up of a sluice deployment, as reviewable SQL: what an admin
//! runs once (`sluice snowflake sql`), in three parts by who may run them:
//!
//! 1. **account** (an admin, once: ACCOUNTADMIN, since the integrations need it or the global
//!    CREATE INTEGRATION privilege): sluice's role, its warehouse (`USAGE`, `OPERATE`), its
//!    key-pair service user, the database
//!    (`USAGE`, `CREATE SCHEMA`), the storage integration over the bucket, the API integration
//!    for the external functions (`USAGE` on both). Nothing at run time needs more: sluice's
//!    role creates and so owns its schemas, and with them every table, stage and procedure
//!    COPY, MERGE and CALL touch;
//! 2. **objects** (sluice's role; `sluice snowflake apply` runs this part): the RAW, STAGING,
//!    GOLD and SLUICE schemas, the Parquet file format, the stage, each table's merge log;
//! 3. **functions** (sluice's role, with USAGE on the API integration): the external functions
//!    `sluice.ingest(source, table [, options])`, `sluice.ingest_async(source, table)`,
//!    `sluice.run_status(run_id)` and `sluice.check_source(source [, table])`.
//!
//! RAW and STAGING tables and the generated merge procedures are not here: their columns are
//! the source's, known for certain only from a run's files, so every run creates them if
//! missing, adds new columns and regenerates the procedure (see `staging`). Every statement is
//! idempotent (`IF NOT EXISTS`, or `OR REPLACE` where the definition is sluice's own).

use crate::config::{Config, ConfigIssue};
use crate::ident::check_identifier;
use crate::snowflake::{ObjectName, parquet_file_format_ddl, quote, string_literal};
use crate::staging::{GOLD_SCHEMA, RAW_SCHEMA, STAGING_SCHEMA, TableTargets, merge_log_ddl};

/// The schema holding sluice's external functions.
pub const FUNCTION_SCHEMA: &str = "SLUICE";
pub const STAGE_NAME: &str = "SLUICE_STAGE";
pub const FILE_FORMAT_NAME: &str = "SLUICE_PARQUET";
pub const STORAGE_INTEGRATION: &str = "SLUICE_S3";
pub const API_INTEGRATION: &str = "SLUICE_API";

/// What the set-up needs beyond the table config. Field names are the command's flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetupOptions {
    pub database: String,
    /// The Snowflake role sluice runs as.
    pub role: String,
    /// The key-pair service user sluice signs in as.
    pub user: String,
    /// The warehouse sluice's statements run on.
    pub warehouse: String,
    /// The largest external-function batch the deployed trigger accepts
    /// (`SLUICE_MAX_BATCH_ROWS`): the functions' `MAX_BATCH_ROWS`, so Snowflake never sends a
    /// batch the trigger refuses.
    pub max_batch_rows: usize,
    pub bucket: String,
    /// The key prefix sluice writes under (the pipeline's `prefix`), if any.
    pub prefix: Option<String>,
    /// The IAM role Snowflake assumes to read the bucket.
    pub storage_role_arn: String,
    /// The IAM role Snowflake assumes to call API Gateway.
    pub api_role_arn: String,
    /// The API Gateway stage URL the external functions call (`https://…/prod/`).
    pub api_url: String,
}

/// The set-up statements, by part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetupSql {
    pub account: Vec<String>,
    pub objects: Vec<String>,
    /// Per table (by key): its RAW/STAGING tables, merge log and merge procedure. Filled by
    /// [`SetupSql::add_table`] from each table's file schema; empty when the source catalogs
    /// were not read.
    pub tables: Vec<(String, Vec<String>)>,
    pub functions: Vec<String>,
}

impl SetupOptions {
    /// Every problem with the options, each naming its flag.
    pub fn validate(&self) -> Result<(), Vec<ConfigIssue>> {
        let mut issues = Vec::new();
        let mut push = |path: &str, message: String| {
            issues.push(ConfigIssue {
                path: path.to_owned(),
                message,
            })
        };
        for (path, value) in [
            ("--database", &self.database),
            ("--role", &self.role),
            ("--user", &self.user),
            ("--warehouse", &self.warehouse),
        ] {
            if let Err(message) = check_identifier(value) {
                push(path, message);
            }
        }
        if let Err(message) = crate::deploy::check_max_batch_rows(self.max_batch_rows) {
            push("--max-batch-rows", message);
        }
        // The pipeline's own rules, so every output sluice can write to can be staged.
        if let Err(e) = crate::output::check_bucket_name(&self.bucket) {
            push(
                "--bucket",
                format!("'{}' is not an S3 bucket name: it {e}", self.bucket),
            );
        }
        if let Some(prefix) = &self.prefix {
            let checked = match prefix.as_str() {
                "" => Err("is empty (leave --prefix out instead)".to_owned()),
                p if p.ends_with('/') => Err("must not end with '/'".to_owned()),
                p => crate::output::check_prefix(p),
            };
            if let Err(e) = checked {
                push("--prefix", format!("'{prefix}' {e}"));
            }
        }
        for (path, arn) in [
            ("--storage-role-arn", &self.storage_role_arn),
            ("--api-role-arn", &self.api_role_arn),
        ] {
            if !is_role_arn(arn) {
                push(
                    path,
                    format!(
                        "'{arn}' is not an IAM role ARN like arn:aws:iam::123456789012:role/snowflake-sluice"
                    ),
                );
            }
        }
        let url_ok = self.api_url.strip_prefix("https://").is_some_and(|rest| {
            !rest.is_empty()
                && rest
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-._~/:".contains(c))
        });
        if !url_ok {
            push(
                "--api-url",
                format!(
                    "'{}' must be the https:// URL of the API Gateway stage (e.g. https://abc123.execute-api.eu-west-1.amazonaws.com/prod/)",
                    self.api_url
                ),
            );
        }
        if issues.is_empty() {
            Ok(())
        } else {
            Err(issues)
        }
    }

    /// The stage sluice's COPY reads from.
    pub fn stage(&self) -> ObjectName {
        ObjectName::new(&self.database, RAW_SCHEMA, STAGE_NAME)
    }

    /// The stage's URL: the bucket and prefix sluice writes under.
    pub fn location(&self) -> String {
        match &self.prefix {
            Some(prefix) => format!("s3://{}/{prefix}/", self.bucket),
            None => format!("s3://{}/", self.bucket),
        }
    }
}

fn is_role_arn(arn: &str) -> bool {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    matches!(parts.as_slice(),
        ["arn", partition, "iam", "", account, resource]
            if partition.starts_with("aws")
                && account.len() == 12
                && account.chars().all(|c| c.is_ascii_digit())
                && resource.strip_prefix("role/").is_some_and(|name| !name.is_empty()
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || "/+=,.@_-".contains(c))))
}

/// The set-up SQL of a validated config and options.
pub fn setup_sql(config: &Config, options: &SetupOptions) -> Result<SetupSql, Vec<ConfigIssue>> {
    options.validate()?;
    let db = quote(&options.database);
    let role = quote(&options.role);
    let storage = quote(STORAGE_INTEGRATION);
    let api = quote(API_INTEGRATION);
    let api_base = options.api_url.trim_end_matches('/');
    let user = quote(&options.user);
    let warehouse = quote(&options.warehouse);
    let account = vec![
        format!("CREATE ROLE IF NOT EXISTS {role}"),
        // Suspended until used, and again after a minute idle: sluice's statements come in
        // bursts per run.
        format!(
            "CREATE WAREHOUSE IF NOT EXISTS {warehouse}\n  WAREHOUSE_SIZE = XSMALL\n  AUTO_SUSPEND = 60\n  AUTO_RESUME = TRUE\n  INITIALLY_SUSPENDED = TRUE"
        ),
        // USAGE runs statements and auto-resumes the warehouse; OPERATE lets sluice resume it
        // when someone turned AUTO_RESUME off
        // (<https://docs.snowflake.com/en/user-guide/security-access-control-privileges#virtual-warehouse-privileges>).
        format!("GRANT USAGE, OPERATE ON WAREHOUSE {warehouse} TO ROLE {role}"),
        // A service user signs in with its key pair only. QUOTED_IDENTIFIERS_IGNORE_CASE is a
        // session parameter the SQL API does not take per request, so it is pinned here:
        // sluice quotes every identifier and means its case.
        format!(
            "CREATE USER IF NOT EXISTS {user}\n  TYPE = SERVICE\n  DEFAULT_ROLE = {role}\n  DEFAULT_WAREHOUSE = {warehouse}\n  QUOTED_IDENTIFIERS_IGNORE_CASE = FALSE"
        ),
        // A default role is not a grant
        // (<https://docs.snowflake.com/en/sql-reference/sql/create-user>).
        format!("GRANT ROLE {role} TO USER {user}"),
        format!("CREATE DATABASE IF NOT EXISTS {db}"),
        format!("GRANT USAGE, CREATE SCHEMA ON DATABASE {db} TO ROLE {role}"),
        format!(
            "CREATE STORAGE INTEGRATION IF NOT EXISTS {storage}\n  TYPE = EXTERNAL_STAGE\n  STORAGE_PROVIDER = 'S3'\n  ENABLED = TRUE\n  STORAGE_AWS_ROLE_ARN = {}\n  STORAGE_ALLOWED_LOCATIONS = ({})",
            string_literal(&options.storage_role_arn),
            string_literal(&options.location())
        ),
        format!("GRANT USAGE ON INTEGRATION {storage} TO ROLE {role}"),
        format!(
            "CREATE API INTEGRATION IF NOT EXISTS {api}\n  API_PROVIDER = aws_api_gateway\n  API_AWS_ROLE_ARN = {}\n  API_ALLOWED_PREFIXES = ({})\n  ENABLED = TRUE",
            string_literal(&options.api_role_arn),
            string_literal(&format!("{api_base}/"))
        ),
        format!("GRANT USAGE ON INTEGRATION {api} TO ROLE {role}"),
    ];
    let format = ObjectName::new(&options.database, RAW_SCHEMA, FILE_FORMAT_NAME);
    let mut objects: Vec<String> = [RAW_SCHEMA, STAGING_SCHEMA, GOLD_SCHEMA, FUNCTION_SCHEMA]
        .iter()
        .map(|schema| format!("CREATE SCHEMA IF NOT EXISTS {db}.{}", quote(schema)))
        .collect();
    objects.push(parquet_file_format_ddl(&format));
    objects.push(format!(
        "CREATE STAGE IF NOT EXISTS {}\n  URL = {}\n  STORAGE_INTEGRATION = {storage}\n  FILE_FORMAT = {}",
        options.stage().quoted(),
        string_literal(&options.location()),
        format.quoted()
    ));
    let mut schemas_seen = vec![
        (options.database.clone(), RAW_SCHEMA.to_owned()),
        (options.database.clone(), STAGING_SCHEMA.to_owned()),
    ];
    for table in &config.tables {
        let targets = TableTargets::resolve(table, &options.database);
        for object in [&targets.raw, &targets.staging] {
            let key = (object.database.clone(), object.schema.clone());
            if !schemas_seen.contains(&key) {
                objects.push(format!(
                    "CREATE SCHEMA IF NOT EXISTS {}.{}",
                    quote(&object.database),
                    quote(&object.schema)
                ));
                schemas_seen.push(key);
            }
        }
        objects.push(merge_log_ddl(&targets.merge_log));
    }
    let functions = external_functions(options)
        .iter()
        .map(|f| f.create_sql(options))
        .collect();
    Ok(SetupSql {
        account,
        objects,
        tables: Vec::new(),
        functions,
    })
}

/// One external function of the set-up: its name, its arguments, and the trigger's route it
/// calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalFunction {
    pub name: ObjectName,
    /// `(argument, Snowflake type)`.
    pub arguments: Vec<(&'static str, &'static str)>,
    /// The trigger's route under the API's URL (`ingest`, `ingest_async`, `status`).
    pub route: &'static str,
}

/// The external functions, as the trigger's routes serve them (functions/src/http.rs):
/// `sluice.ingest` follows Snowflake's async protocol on /ingest, and its three-argument
/// overload takes options such as `{'mode': 'full'}`; `sluice.check_source` runs `sluice
/// check`'s source and Snowflake checks on /check.
pub fn external_functions(options: &SetupOptions) -> Vec<ExternalFunction> {
    let function =
        |name: &str, arguments: Vec<(&'static str, &'static str)>, route| ExternalFunction {
            name: ObjectName::new(&options.database, FUNCTION_SCHEMA, name),
            arguments,
            route,
        };
    let ingest = vec![("SOURCE_NAME", "VARCHAR"), ("TABLE_NAME", "VARCHAR")];
    vec![
        function("INGEST", ingest.clone(), "ingest"),
        function(
            "INGEST",
            [ingest.clone(), vec![("OPTIONS", "OBJECT")]].concat(),
            "ingest",
        ),
        function("INGEST_ASYNC", ingest, "ingest_async"),
        function("RUN_STATUS", vec![("RUN_ID", "VARCHAR")], "status"),
        // `sluice.check_source(source [, table])`: not `CHECK`, a reserved word in Snowflake
        // (<https://docs.snowflake.com/en/sql-reference/reserved-keywords>).
        function("CHECK_SOURCE", vec![("SOURCE_NAME", "VARCHAR")], "check"),
        function(
            "CHECK_SOURCE",
            vec![("SOURCE_NAME", "VARCHAR"), ("TABLE_NAME", "VARCHAR")],
            "check",
        ),
    ]
}

impl ExternalFunction {
    /// The URL Snowflake calls: the API stage's URL and the route.
    pub fn url(&self, options: &SetupOptions) -> String {
        format!("{}/{}", options.api_url.trim_end_matches('/'), self.route)
    }

    /// `name(TYPE, …)`, how Snowflake tells overloads apart (`DESC FUNCTION`, `DROP`).
    pub fn signature(&self) -> String {
        let types: Vec<&str> = self.arguments.iter().map(|(_, t)| *t).collect();
        format!("{}({})", self.name.quoted(), types.join(", "))
    }

    /// `CREATE OR REPLACE EXTERNAL FUNCTION`. `MAX_BATCH_ROWS` is a maximum Snowflake keeps
    /// to; without it Snowflake picks a size of its own
    /// (<https://docs.snowflake.com/en/sql-reference/sql/create-external-function>), and a
    /// batch over the trigger's limit is a 400, which Snowflake does not retry
    /// (<https://docs.snowflake.com/en/sql-reference/external-functions-best-practices>).
    pub fn create_sql(&self, options: &SetupOptions) -> String {
        let arguments: Vec<String> = self
            .arguments
            .iter()
            .map(|(name, t)| format!("{name} {t}"))
            .collect();
        format!(
            "CREATE OR REPLACE EXTERNAL FUNCTION {}({})\n  RETURNS VARIANT\n  VOLATILE\n  API_INTEGRATION = {}\n  MAX_BATCH_ROWS = {}\n  AS {}",
            self.name.quoted(),
            arguments.join(", "),
            quote(API_INTEGRATION),
            options.max_batch_rows,
            string_literal(&self.url(options))
        )
    }
}

impl SetupSql {
    /// Adds one table's objects, generated from the schema its files will have.
    pub fn add_table(
        &mut self,
        table: &crate::config::TableConfig,
        database: &str,
        schema: &arrow_schema::Schema,
    ) -> Result<(), crate::staging::StagingError> {
        let statements = crate::staging::table_objects_sql(table, database, schema)?;
        self.tables.push((table.key(), statements));
        Ok(())
    }

    /// The whole script, each part under a comment saying who runs it.
    pub fn render(&self) -> String {
        let part = |title: &str, statements: &[String]| {
            let mut out = format!("-- {title}\n\n");
            for s in statements {
                out.push_str(s);
                out.push_str(";\n\n");
            }
            out
        };
        [
            "-- sluice: Snowflake set-up, generated by `sluice snowflake sql`. Idempotent: safe to run again.\n\
             -- RAW/STAGING tables and merge procedures: part 3 (with --with-tables, from the sources' catalogs);\n\
             -- each run also creates and evolves them from its files, so a new column needs no set-up.\n\n"
                .to_owned(),
            part(
                "1. account: an admin runs this once as ACCOUNTADMIN (the integrations need it, or the global \
                 CREATE INTEGRATION privilege). Then:\n\
                 --    ALTER USER <user> SET RSA_PUBLIC_KEY = '<the public key, without its BEGIN/END lines>';\n\
                 --    DESC INTEGRATION \"SLUICE_S3\" / \"SLUICE_API\" and put their STORAGE_AWS_IAM_USER_ARN / \
                 API_AWS_IAM_USER_ARN and EXTERNAL_ID in the IAM roles' trust policies.",
                &self.account,
            ),
            part(
                "2. objects: run as sluice's role (`sluice snowflake apply` runs this part)",
                &self.objects,
            ),
            self.tables
                .iter()
                .map(|(key, statements)| {
                    part(
                        &format!("3. tables: {key} (run as sluice's role; `sluice snowflake apply --with-tables` runs these)"),
                        statements,
                    )
                })
                .collect::<String>(),
            part(
                "4. functions: run as sluice's role once the API integration is trusted",
                &self.functions,
            ),
        ]
        .concat()
    }
}

/// The README's example options, for the tests of this module and of `doctor`.
#[cfg(test)]
pub(crate) fn example_options() -> SetupOptions {
    SetupOptions {
        database: "SLUICE".into(),
        role: "SLUICE_LOADER".into(),
        user: "SLUICE".into(),
        warehouse: "SLUICE_WH".into(),
        max_batch_rows: 100,
        bucket: "acme-lake".into(),
        prefix: Some("raw/v1".into()),
        storage_role_arn: "arn:aws:iam::123456789012:role/snowflake-s3".into(),
        api_role_arn: "arn:aws:iam::123456789012:role/snowflake-api".into(),
        api_url: "https://abc123.execute-api.eu-west-1.amazonaws.com/prod/".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> SetupOptions {
        example_options()
    }

    fn config() -> Config {
        Config::from_yaml(
            "sources:\n  - name: shop\n    engine: postgres\n    connection:\n      url: postgres://u@h/db\n\
             tables:\n  - source: shop\n    table: public.orders\n    primary_key: [id]\n\
             \x20   target: {staging_table: MART.ORDERS}\n",
            "t",
        )
        .unwrap()
    }

    #[test]
    fn setup_names_every_object_quoted_and_is_idempotent() {
        let sql = setup_sql(&config(), &options()).unwrap();
        let storage = sql
            .account
            .iter()
            .find(|s| s.starts_with("CREATE STORAGE INTEGRATION"))
            .unwrap();
        assert_eq!(
            storage,
            "CREATE STORAGE INTEGRATION IF NOT EXISTS \"SLUICE_S3\"\n  TYPE = EXTERNAL_STAGE\n  STORAGE_PROVIDER = 'S3'\n  ENABLED = TRUE\n  \
             STORAGE_AWS_ROLE_ARN = 'arn:aws:iam::123456789012:role/snowflake-s3'\n  STORAGE_ALLOWED_LOCATIONS = ('s3://acme-lake/raw/v1/')"
        );
        assert_eq!(
            sql.objects,
            [
                "CREATE SCHEMA IF NOT EXISTS \"SLUICE\".\"RAW\"",
                "CREATE SCHEMA IF NOT EXISTS \"SLUICE\".\"STAGING\"",
                "CREATE SCHEMA IF NOT EXISTS \"SLUICE\".\"GOLD\"",
                "CREATE SCHEMA IF NOT EXISTS \"SLUICE\".\"SLUICE\"",
                "CREATE FILE FORMAT IF NOT EXISTS \"SLUICE\".\"RAW\".\"SLUICE_PARQUET\" TYPE = PARQUET USE_LOGICAL_TYPE = TRUE BINARY_AS_TEXT = FALSE NULL_IF = ()",
                "CREATE STAGE IF NOT EXISTS \"SLUICE\".\"RAW\".\"SLUICE_STAGE\"\n  URL = 's3://acme-lake/raw/v1/'\n  \
                 STORAGE_INTEGRATION = \"SLUICE_S3\"\n  FILE_FORMAT = \"SLUICE\".\"RAW\".\"SLUICE_PARQUET\"",
                "CREATE SCHEMA IF NOT EXISTS \"SLUICE\".\"MART\"",
                "CREATE TABLE IF NOT EXISTS \"SLUICE\".\"MART\".\"ORDERS_MERGES\" (\"run_id\" VARCHAR, \"inserted\" NUMBER(19,0), \"updated\" NUMBER(19,0), \"deleted\" NUMBER(19,0), \"keys\" NUMBER(19,0))",
            ]
        );
        assert_eq!(
            sql.functions[0],
            "CREATE OR REPLACE EXTERNAL FUNCTION \"SLUICE\".\"SLUICE\".\"INGEST\"(SOURCE_NAME VARCHAR, TABLE_NAME VARCHAR)\n  \
             RETURNS VARIANT\n  VOLATILE\n  API_INTEGRATION = \"SLUICE_API\"\n  MAX_BATCH_ROWS = 100\n  \
             AS 'https://abc123.execute-api.eu-west-1.amazonaws.com/prod/ingest'"
        );
        // The options overload and the async variant share the trigger's routes.
        assert!(
            sql.functions[1]
                .contains("\"INGEST\"(SOURCE_NAME VARCHAR, TABLE_NAME VARCHAR, OPTIONS OBJECT)")
        );
        assert!(sql.functions[1].ends_with("/prod/ingest'"));
        assert!(
            sql.functions[2].contains("\"INGEST_ASYNC\"(SOURCE_NAME VARCHAR, TABLE_NAME VARCHAR)")
        );
        assert!(sql.functions[2].ends_with("/prod/ingest_async'"));
        assert!(sql.functions[3].contains("\"RUN_STATUS\"(RUN_ID VARCHAR)"));
        assert!(sql.functions[3].ends_with("/prod/status'"));
        assert!(sql.functions[4].contains("\"CHECK_SOURCE\"(SOURCE_NAME VARCHAR)\n"));
        assert!(
            sql.functions[5].contains("\"CHECK_SOURCE\"(SOURCE_NAME VARCHAR, TABLE_NAME VARCHAR)")
        );
        assert!(sql.functions[5].ends_with("/prod/check'"));
        let all = sql.account.iter().chain(&sql.objects).chain(&sql.functions);
        for statement in all {
            assert!(
                statement.contains("IF NOT EXISTS")
                    || statement.contains("OR REPLACE")
                    || statement.starts_with("GRANT"),
                "not idempotent: {statement}"
            );
        }
        let text = sql.render();
        assert!(text.contains("-- 2. objects"), "{text}");
        assert!(text.contains("\"SLUICE_STAGE\"\n  URL"), "{text}");
    }

    /// What COPY, MERGE and CALL need at run time, and no more: the role can use and resume
    /// its warehouse, the key-pair service user has the role, the role may use the database,
    /// create its schemas (and so own what is in them) and use both integrations; nothing
    /// grants ACCOUNTADMIN or another system role to sluice.
    #[test]
    fn the_account_part_creates_the_role_user_and_warehouse_with_least_privilege() {
        let sql = setup_sql(&config(), &options()).unwrap();
        let account = sql.account.join(";\n");
        for expected in [
            "CREATE ROLE IF NOT EXISTS \"SLUICE_LOADER\"",
            "CREATE WAREHOUSE IF NOT EXISTS \"SLUICE_WH\"\n  WAREHOUSE_SIZE = XSMALL\n  AUTO_SUSPEND = 60\n  AUTO_RESUME = TRUE\n  INITIALLY_SUSPENDED = TRUE",
            "GRANT USAGE, OPERATE ON WAREHOUSE \"SLUICE_WH\" TO ROLE \"SLUICE_LOADER\"",
            "CREATE USER IF NOT EXISTS \"SLUICE\"\n  TYPE = SERVICE\n  DEFAULT_ROLE = \"SLUICE_LOADER\"\n  DEFAULT_WAREHOUSE = \"SLUICE_WH\"\n  QUOTED_IDENTIFIERS_IGNORE_CASE = FALSE",
            "GRANT ROLE \"SLUICE_LOADER\" TO USER \"SLUICE\"",
            "GRANT USAGE, CREATE SCHEMA ON DATABASE \"SLUICE\" TO ROLE \"SLUICE_LOADER\"",
            "GRANT USAGE ON INTEGRATION \"SLUICE_S3\" TO ROLE \"SLUICE_LOADER\"",
            "GRANT USAGE ON INTEGRATION \"SLUICE_API\" TO ROLE \"SLUICE_LOADER\"",
        ] {
            assert!(
                sql.account.iter().any(|s| s == expected),
                "missing: {expected}\nin:\n{account}"
            );
        }
        // The role exists before anything is granted to it, the user after the role.
        let position = |prefix: &str| {
            sql.account
                .iter()
                .position(|s| s.starts_with(prefix))
                .unwrap()
        };
        assert!(position("CREATE ROLE") < position("GRANT"));
        assert!(position("CREATE USER") < position("GRANT ROLE"));
        let grants: Vec<&String> = sql
            .account
            .iter()
            .filter(|s| s.starts_with("GRANT"))
            .collect();
        assert_eq!(grants.len(), 5, "{grants:?}");
        for grant in grants {
            assert!(
                grant.ends_with("TO ROLE \"SLUICE_LOADER\"")
                    || grant.ends_with("TO USER \"SLUICE\""),
                "{grant}"
            );
            for system in [
                "ACCOUNTADMIN",
                "SECURITYADMIN",
                "SYSADMIN",
                "OWNERSHIP",
                "ALL",
            ] {
                assert!(!grant.contains(system), "{grant}");
            }
        }
        // The objects and functions parts run as sluice's role: no admin statement there.
        for statement in sql.objects.iter().chain(&sql.functions) {
            assert!(
                !statement.starts_with("GRANT") && !statement.contains("ACCOUNTADMIN"),
                "{statement}"
            );
        }
    }

    #[test]
    fn every_external_function_carries_the_deployed_batch_limit() {
        for rows in [1, 100, 1_000] {
            let sql = setup_sql(
                &config(),
                &SetupOptions {
                    max_batch_rows: rows,
                    ..options()
                },
            )
            .unwrap();
            assert_eq!(sql.functions.len(), 6);
            for function in &sql.functions {
                let line = format!("\n  MAX_BATCH_ROWS = {rows}\n  AS '");
                assert!(function.contains(&line), "{function}");
            }
        }
        for rows in [0, 1_001] {
            let issues = setup_sql(
                &config(),
                &SetupOptions {
                    max_batch_rows: rows,
                    ..options()
                },
            )
            .unwrap_err();
            assert_eq!(issues[0].path, "--max-batch-rows");
            assert!(
                issues[0].message.contains("from 1 to 1000"),
                "{}",
                issues[0].message
            );
        }
    }

    #[test]
    fn any_bucket_and_prefix_the_pipeline_writes_to_can_be_staged_and_no_other() {
        let with = |bucket: &str, prefix: &str| SetupOptions {
            bucket: bucket.into(),
            prefix: Some(prefix.into()),
            ..options()
        };
        for prefix in ["raw", "raw/v1", "team=data/raw_1", "v.2-b"] {
            assert_eq!(crate::output::check_prefix(prefix), Ok(()), "{prefix}");
            let sql = setup_sql(&config(), &with("acme-lake", prefix)).unwrap();
            let literal = string_literal(&format!("s3://acme-lake/{prefix}/"));
            assert!(sql.render().contains(&literal), "{prefix}: {literal}");
        }
        for prefix in [
            "", "/raw", "raw/", "raw//x", "raw data", "raw/../x", "raw*", "it's",
        ] {
            let issues = setup_sql(&config(), &with("acme-lake", prefix)).unwrap_err();
            let paths: Vec<&str> = issues.iter().map(|i| i.path.as_str()).collect();
            assert_eq!(paths, ["--prefix"], "{prefix:?}");
        }
        for bucket in ["ab", "Acme", "a..b", "192.168.1.1", "-acme", ""] {
            let issues = setup_sql(&config(), &with(bucket, "raw")).unwrap_err();
            let paths: Vec<&str> = issues.iter().map(|i| i.path.as_str()).collect();
            assert_eq!(paths, ["--bucket"], "{bucket:?}");
        }
    }

    #[test]
    fn bad_options_name_their_flags() {
        let bad = SetupOptions {
            database: "SLUICE;DROP".into(),
            role: String::new(),
            user: "a user".into(),
            warehouse: "WH\"".into(),
            max_batch_rows: 0,
            bucket: "Acme_Lake".into(),
            prefix: Some("/raw/".into()),
            storage_role_arn: "arn:aws:iam::123:role/x".into(),
            api_role_arn: "role/x".into(),
            api_url: "http://example.com/prod'".into(),
        };
        let issues: Vec<String> = setup_sql(&config(), &bad)
            .unwrap_err()
            .iter()
            .map(|i| i.path.clone())
            .collect();
        assert_eq!(
            issues,
            [
                "--database",
                "--role",
                "--user",
                "--warehouse",
                "--max-batch-rows",
                "--bucket",
                "--prefix",
                "--storage-role-arn",
                "--api-role-arn",
                "--api-url"
            ]
        );
    }
}
