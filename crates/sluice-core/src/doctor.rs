//! `sluice snowflake doctor` as pure logic: the read-only statements that ask a real account
//! how its set-up looks, and how each answer is judged against what `sluice snowflake sql`
//! creates, with the statement that fixes a failure. The CLI runs the statements; nothing
//! here talks to Snowflake.
//!
//! Only what a real account can tell is checked here (the stand-in answers the same shapes so
//! the command is tested, but proves nothing about an account): the integrations as the
//! template expects them, the file format's options, the stage's location and that it lists
//! the bucket, the external functions' URL and `MAX_BATCH_ROWS`, the role's warehouse, the
//! session parameters sluice relies on, and (with `--probe`) that a procedure of the shape
//! sluice generates compiles and runs.

use std::collections::BTreeMap;

use crate::config::Config;
use crate::setup::{
    API_INTEGRATION, FILE_FORMAT_NAME, FUNCTION_SCHEMA, STORAGE_INTEGRATION, SetupOptions,
    SetupSql, external_functions,
};
use crate::snowflake::{ObjectName, quote};
use crate::staging::{RAW_SCHEMA, TableTargets};

/// A statement's answer as text: column names (lower case) and rows of nullable text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Answer {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Option<String>>>,
}

impl Answer {
    fn column(&self, name: &str) -> Option<usize> {
        self.columns
            .iter()
            .position(|c| c.eq_ignore_ascii_case(name))
    }

    /// `property → value` of a DESC answer (`property` and `property_value`, or `value`).
    fn properties(&self) -> BTreeMap<String, String> {
        let key = self.column("property");
        let value = self.column("property_value").or(self.column("value"));
        let (Some(key), Some(value)) = (key, value) else {
            return BTreeMap::new();
        };
        self.rows
            .iter()
            .filter_map(|row| {
                Some((
                    row.get(key)?.clone()?.to_ascii_uppercase(),
                    row.get(value)?.clone().unwrap_or_default(),
                ))
            })
            .collect()
    }

    fn text(&self, row: usize, column: &str) -> Option<&str> {
        self.rows.get(row)?.get(self.column(column)?)?.as_deref()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Fail(String),
    /// Nothing to check yet (e.g. a merge procedure the table's first run creates).
    Skip(String),
}

/// One line of the doctor's report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub check: String,
    pub target: String,
    pub verdict: Verdict,
    /// The statements that mend a failure (from the set-up sluice generates).
    pub fix: Vec<String>,
}

/// What a probe asks, and so how its answer is judged.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Expect {
    Session,
    Parameter {
        name: &'static str,
        value: &'static str,
    },
    StorageIntegration,
    ApiIntegration,
    FileFormat,
    Stage,
    StageLists,
    Function {
        create: String,
        url: String,
    },
    MergeProcedures {
        names: Vec<String>,
    },
}

/// One read-only statement of the doctor, with what its answer must show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub check: &'static str,
    pub target: String,
    pub sql: String,
    expect: Expect,
}

impl Probe {
    /// Whether judging this probe needs the integrations' IAM roles or the API's URL (the
    /// storage and API integrations, the external functions): `sluice check` leaves it out
    /// when it was not told them.
    pub fn needs_integrations(&self) -> bool {
        matches!(
            self.expect,
            Expect::StorageIntegration | Expect::ApiIntegration | Expect::Function { .. }
        )
    }

    /// Whether judging it needs the bucket and prefix the stage reads (`--output s3://…`).
    pub fn needs_location(&self) -> bool {
        matches!(
            self.expect,
            Expect::StorageIntegration | Expect::Stage | Expect::StageLists
        )
    }
}

/// The doctor's statements for a deployment's set-up (the same options `sluice snowflake sql`
/// takes), in the order a person would read the report.
pub fn probes(config: &Config, options: &SetupOptions) -> Vec<Probe> {
    let database = &options.database;
    let stage = options.stage();
    let format = ObjectName::new(database, RAW_SCHEMA, FILE_FORMAT_NAME);
    let mut probes = vec![
        Probe {
            check: "session",
            target: format!("user {}, role {}", options.user, options.role),
            sql: "SELECT CURRENT_USER(), CURRENT_ROLE(), CURRENT_WAREHOUSE()".into(),
            expect: Expect::Session,
        },
        Probe {
            check: "session parameter",
            target: "QUOTED_IDENTIFIERS_IGNORE_CASE".into(),
            sql: "SHOW PARAMETERS LIKE 'QUOTED_IDENTIFIERS_IGNORE_CASE' IN SESSION".into(),
            expect: Expect::Parameter {
                name: "QUOTED_IDENTIFIERS_IGNORE_CASE",
                value: "false",
            },
        },
        Probe {
            check: "session parameter",
            target: "TIMEZONE".into(),
            sql: "SHOW PARAMETERS LIKE 'TIMEZONE' IN SESSION".into(),
            expect: Expect::Parameter {
                name: "TIMEZONE",
                value: "UTC",
            },
        },
        Probe {
            check: "storage integration",
            target: STORAGE_INTEGRATION.into(),
            sql: format!("DESC INTEGRATION {}", quote(STORAGE_INTEGRATION)),
            expect: Expect::StorageIntegration,
        },
        Probe {
            check: "API integration",
            target: API_INTEGRATION.into(),
            sql: format!("DESC INTEGRATION {}", quote(API_INTEGRATION)),
            expect: Expect::ApiIntegration,
        },
        Probe {
            check: "file format",
            target: format.quoted(),
            sql: format!("DESC FILE FORMAT {}", format.quoted()),
            expect: Expect::FileFormat,
        },
        Probe {
            check: "stage",
            target: stage.quoted(),
            sql: format!("DESC STAGE {}", stage.quoted()),
            expect: Expect::Stage,
        },
        Probe {
            check: "stage lists the bucket",
            target: options.location(),
            // A path no run writes: the listing proves access without reading every file.
            sql: format!("LIST @{}/_sluice_doctor/", stage.quoted()),
            expect: Expect::StageLists,
        },
    ];
    for function in external_functions(options) {
        probes.push(Probe {
            check: "external function",
            target: function.signature(),
            sql: format!("DESC FUNCTION {}", function.signature()),
            expect: Expect::Function {
                create: function.create_sql(options),
                url: function.url(options),
            },
        });
    }
    let mut by_schema: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for table in &config.tables {
        let targets = TableTargets::resolve(table, database);
        let procedure = targets.merge_procedure;
        by_schema
            .entry((procedure.database.clone(), procedure.schema.clone()))
            .or_default()
            .push(procedure.name);
    }
    for ((db, schema), names) in by_schema {
        probes.push(Probe {
            check: "merge procedures",
            target: format!("{}.{}", quote(&db), quote(&schema)),
            sql: format!(
                "SHOW PROCEDURES IN SCHEMA {}.{}",
                quote(&db),
                quote(&schema)
            ),
            expect: Expect::MergeProcedures { names },
        });
    }
    probes
}

/// The statements of the set-up that start with `prefix` (its fix).
fn statements(setup: &SetupSql, prefix: &str) -> Vec<String> {
    setup
        .account
        .iter()
        .chain(&setup.objects)
        .chain(&setup.functions)
        .filter(|s| s.starts_with(prefix))
        .cloned()
        .collect()
}

fn list(value: &str) -> Vec<String> {
    value
        .trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .split(',')
        .map(|item| item.trim().trim_matches('"').trim().to_owned())
        .filter(|item| !item.is_empty())
        .collect()
}

fn same_name(a: &str, b: &str) -> bool {
    a.trim()
        .trim_matches('"')
        .eq_ignore_ascii_case(b.trim().trim_matches('"'))
}

fn is_true(value: Option<&String>) -> bool {
    value.is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// Judges one probe's answer (or the error Snowflake gave) against the set-up.
pub fn judge(
    probe: &Probe,
    answer: Result<&Answer, &str>,
    options: &SetupOptions,
    setup: &SetupSql,
) -> Outcome {
    let outcome = |verdict: Verdict, fix: Vec<String>| Outcome {
        check: probe.check.to_owned(),
        target: probe.target.clone(),
        verdict,
        fix,
    };
    let answer = match answer {
        Ok(answer) => answer,
        Err(error) => {
            let fix = match &probe.expect {
                Expect::StorageIntegration => [
                    statements(setup, "CREATE STORAGE INTEGRATION"),
                    statements(
                        setup,
                        &format!("GRANT USAGE ON INTEGRATION {}", quote(STORAGE_INTEGRATION)),
                    ),
                ]
                .concat(),
                Expect::ApiIntegration => [
                    statements(setup, "CREATE API INTEGRATION"),
                    statements(
                        setup,
                        &format!("GRANT USAGE ON INTEGRATION {}", quote(API_INTEGRATION)),
                    ),
                ]
                .concat(),
                Expect::FileFormat => statements(setup, "CREATE FILE FORMAT"),
                Expect::Stage => statements(setup, "CREATE STAGE"),
                Expect::Function { create, .. } => vec![create.clone()],
                Expect::StageLists => vec![format!(
                    "DESC INTEGRATION {}; -- and check that the IAM role {} trusts its \
                     STORAGE_AWS_IAM_USER_ARN with its STORAGE_AWS_EXTERNAL_ID",
                    quote(STORAGE_INTEGRATION),
                    options.storage_role_arn
                )],
                Expect::Session | Expect::Parameter { .. } | Expect::MergeProcedures { .. } => {
                    Vec::new()
                }
            };
            return outcome(Verdict::Fail(error.to_owned()), fix);
        }
    };
    let props = answer.properties();
    let mut problems = Vec::new();
    let mut fix = Vec::new();
    match &probe.expect {
        Expect::Session => {
            let got = |i: usize| {
                answer
                    .rows
                    .first()
                    .and_then(|r| r.get(i))
                    .cloned()
                    .flatten()
            };
            let (user, role, warehouse) = (got(0), got(1), got(2));
            if !user.as_deref().is_some_and(|u| same_name(u, &options.user)) {
                problems.push(format!(
                    "signed in as {user:?}, expected {} (sign in as the set-up's user, or give --user)",
                    options.user
                ));
            }
            if !role.as_deref().is_some_and(|r| same_name(r, &options.role)) {
                problems.push(format!("role is {role:?}, expected {}", options.role));
                fix.extend(statements(setup, "GRANT ROLE"));
            }
            if !warehouse
                .as_deref()
                .is_some_and(|w| same_name(w, &options.warehouse))
            {
                problems.push(format!(
                    "warehouse is {warehouse:?}: role {} cannot use warehouse {}",
                    options.role, options.warehouse
                ));
                fix.extend(statements(setup, "CREATE WAREHOUSE"));
                fix.extend(statements(setup, "GRANT USAGE, OPERATE ON WAREHOUSE"));
            }
        }
        Expect::Parameter { name, value } => {
            let got = answer.text(0, "value").unwrap_or_default();
            if !got.eq_ignore_ascii_case(value) {
                problems.push(format!(
                    "{name} is '{got}' in sluice's session, expected '{value}'"
                ));
                if *name == "QUOTED_IDENTIFIERS_IGNORE_CASE" {
                    fix.push(format!(
                        "ALTER USER {} SET QUOTED_IDENTIFIERS_IGNORE_CASE = FALSE",
                        quote(&options.user)
                    ));
                }
            }
        }
        Expect::StorageIntegration => {
            if !is_true(props.get("ENABLED")) {
                problems.push("ENABLED is not true".into());
            }
            let role = props
                .get("STORAGE_AWS_ROLE_ARN")
                .cloned()
                .unwrap_or_default();
            if role != options.storage_role_arn {
                problems.push(format!(
                    "STORAGE_AWS_ROLE_ARN is '{role}', expected '{}'",
                    options.storage_role_arn
                ));
            }
            let allowed = list(
                props
                    .get("STORAGE_ALLOWED_LOCATIONS")
                    .map_or("", String::as_str),
            );
            let location = options.location();
            if !allowed
                .iter()
                .any(|a| a == "*" || location.starts_with(a.as_str()))
            {
                problems.push(format!(
                    "STORAGE_ALLOWED_LOCATIONS {allowed:?} do not cover {location}"
                ));
            }
            if !problems.is_empty() {
                fix.push(format!(
                    "ALTER STORAGE INTEGRATION {} SET ENABLED = TRUE STORAGE_AWS_ROLE_ARN = {} STORAGE_ALLOWED_LOCATIONS = ({})",
                    quote(STORAGE_INTEGRATION),
                    crate::snowflake::string_literal(&options.storage_role_arn),
                    crate::snowflake::string_literal(&location)
                ));
            }
        }
        Expect::ApiIntegration => {
            if !is_true(props.get("ENABLED")) {
                problems.push("ENABLED is not true".into());
            }
            let role = props.get("API_AWS_ROLE_ARN").cloned().unwrap_or_default();
            if role != options.api_role_arn {
                problems.push(format!(
                    "API_AWS_ROLE_ARN is '{role}', expected '{}'",
                    options.api_role_arn
                ));
            }
            let allowed = list(props.get("API_ALLOWED_PREFIXES").map_or("", String::as_str));
            let url = format!("{}/", options.api_url.trim_end_matches('/'));
            if !allowed
                .iter()
                .any(|a| a == "*" || url.starts_with(a.as_str()))
            {
                problems.push(format!(
                    "API_ALLOWED_PREFIXES {allowed:?} do not cover {url}"
                ));
            }
            if !problems.is_empty() {
                fix.push(format!(
                    "ALTER API INTEGRATION {} SET ENABLED = TRUE API_AWS_ROLE_ARN = {} API_ALLOWED_PREFIXES = ({})",
                    quote(API_INTEGRATION),
                    crate::snowflake::string_literal(&options.api_role_arn),
                    crate::snowflake::string_literal(&url)
                ));
            }
        }
        Expect::FileFormat => {
            let get = |k: &str| props.get(k).cloned().unwrap_or_default();
            if !get("TYPE").eq_ignore_ascii_case("PARQUET") {
                problems.push(format!("TYPE is '{}', expected PARQUET", get("TYPE")));
            }
            if !is_true(props.get("USE_LOGICAL_TYPE")) {
                problems.push(
                    "USE_LOGICAL_TYPE is not true (timestamps and decimals load wrong)".into(),
                );
            }
            if !get("BINARY_AS_TEXT").eq_ignore_ascii_case("false") {
                problems.push("BINARY_AS_TEXT is not false (binary read as text)".into());
            }
            let null_if = list(&get("NULL_IF"));
            if !null_if.is_empty() {
                problems.push(format!(
                    "NULL_IF is {null_if:?}: those strings would load as NULL"
                ));
            }
            if !problems.is_empty() {
                fix.push(format!(
                    "ALTER FILE FORMAT {} SET USE_LOGICAL_TYPE = TRUE BINARY_AS_TEXT = FALSE NULL_IF = ()",
                    probe.target
                ));
            }
        }
        Expect::Stage => {
            let location = options.location();
            let url = list(props.get("URL").map_or("", String::as_str));
            if !url.iter().any(|u| u == &location) {
                problems.push(format!("URL is {url:?}, expected {location}"));
            }
            let integration = props
                .get("STORAGE_INTEGRATION")
                .cloned()
                .unwrap_or_default();
            if !same_name(&integration, STORAGE_INTEGRATION) {
                problems.push(format!(
                    "STORAGE_INTEGRATION is '{integration}', expected {STORAGE_INTEGRATION}"
                ));
            }
            if !problems.is_empty() {
                fix.push(format!(
                    "ALTER STAGE {} SET URL = {} STORAGE_INTEGRATION = {}",
                    probe.target,
                    crate::snowflake::string_literal(&location),
                    quote(STORAGE_INTEGRATION)
                ));
            }
        }
        Expect::StageLists => {}
        Expect::Function { create, url } => {
            let get = |k: &str| props.get(k).cloned().unwrap_or_default();
            let rows = get("MAX_BATCH_ROWS");
            if rows.trim() != options.max_batch_rows.to_string() {
                problems.push(format!(
                    "MAX_BATCH_ROWS is '{rows}', the trigger accepts {}",
                    options.max_batch_rows
                ));
            }
            let body = get("BODY");
            if !body.trim().trim_matches('\'').eq_ignore_ascii_case(url) {
                problems.push(format!("calls '{body}', expected '{url}'"));
            }
            // DESC FUNCTION's documented rows do not promise the integration; checked where shown.
            if let Some(integration) = props.get("API_INTEGRATION")
                && !same_name(integration, API_INTEGRATION)
            {
                problems.push(format!(
                    "API_INTEGRATION is '{integration}', expected {API_INTEGRATION}"
                ));
            }
            if !problems.is_empty() {
                fix.push(create.clone());
            }
        }
        Expect::MergeProcedures { names } => {
            let present: Vec<String> = answer
                .column("name")
                .map(|i| {
                    answer
                        .rows
                        .iter()
                        .filter_map(|r| r.get(i).cloned().flatten())
                        .collect()
                })
                .unwrap_or_default();
            let missing: Vec<&String> = names
                .iter()
                .filter(|n| !present.iter().any(|p| same_name(p, n)))
                .collect();
            if !missing.is_empty() {
                return outcome(
                    Verdict::Skip(format!(
                        "not created yet: {}; each table's first run creates its own",
                        missing
                            .iter()
                            .map(|s| s.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )),
                    Vec::new(),
                );
            }
        }
    }
    if problems.is_empty() {
        outcome(Verdict::Pass, Vec::new())
    } else {
        outcome(Verdict::Fail(problems.join("; ")), fix)
    }
}

/// With `--probe`: create, call and drop a procedure of the shape sluice generates
/// (`BEGIN … RETURN (SELECT OBJECT_CONSTRUCT(…)); END;` with `:RUN_ID`), proving that the
/// account compiles and runs it. Writes to sluice's own function schema only.
/// The statements are `[create, call]` and the `drop` that must follow whatever they did.
pub fn procedure_probe(database: &str) -> (ObjectName, [String; 2], String) {
    let name = ObjectName::new(database, FUNCTION_SCHEMA, "SLUICE_DOCTOR_PROBE");
    let statements = [
        format!(
            "CREATE OR REPLACE PROCEDURE {}(RUN_ID VARCHAR)\nRETURNS VARIANT\nLANGUAGE SQL\nEXECUTE AS OWNER\nAS $$\n\
             BEGIN\n\
             RETURN (SELECT OBJECT_CONSTRUCT('run_id', :RUN_ID, 'rows', N) FROM (SELECT COUNT(*) AS N FROM (SELECT 1 AS X)));\n\
             END;\n$$",
            name.quoted()
        ),
        format!("CALL {}('doctor')", name.quoted()),
    ];
    let drop = format!("DROP PROCEDURE IF EXISTS {}(VARCHAR)", name.quoted());
    (name, statements, drop)
}

/// With `--probe` and `--with-tables`: each table's generated merge procedure, created under a
/// probe name in sluice's function schema and dropped again (never called, so no data is
/// touched), so the account's compiler judges the exact text sluice will create. Returns
/// `(table key, create, drop)`.
pub fn merge_procedure_probes(
    config: &Config,
    database: &str,
    setup: &SetupSql,
) -> Vec<(String, String, String)> {
    let probe = ObjectName::new(database, FUNCTION_SCHEMA, "SLUICE_DOCTOR_MERGE_PROBE");
    let mut probes = Vec::new();
    for (key, statements) in &setup.tables {
        let Some(table) = config.tables.iter().find(|t| &t.key() == key) else {
            continue;
        };
        let targets = TableTargets::resolve(table, database);
        if !targets.generated_merge {
            continue;
        }
        let head = format!(
            "CREATE OR REPLACE PROCEDURE {}(",
            targets.merge_procedure.quoted()
        );
        let Some(create) = statements.iter().find(|s| s.starts_with(&head)) else {
            continue;
        };
        let renamed = create.replacen(
            &head,
            &format!("CREATE OR REPLACE PROCEDURE {}(", probe.quoted()),
            1,
        );
        let drop = format!("DROP PROCEDURE IF EXISTS {}(VARCHAR)", probe.quoted());
        probes.push((key.clone(), renamed, drop));
    }
    probes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> SetupOptions {
        crate::setup::example_options()
    }

    fn config() -> Config {
        Config::from_yaml(
            "sources:\n  - name: shop\n    engine: postgres\n    connection:\n      url: postgres://u@h/db\n\
             tables:\n  - source: shop\n    table: public.orders\n    primary_key: [id]\n",
            "t",
        )
        .unwrap()
    }

    fn desc(rows: &[(&str, &str)]) -> Answer {
        Answer {
            columns: vec![
                "property".into(),
                "property_type".into(),
                "property_value".into(),
                "property_default".into(),
            ],
            rows: rows
                .iter()
                .map(|(k, v)| {
                    vec![
                        Some((*k).into()),
                        Some("String".into()),
                        Some((*v).into()),
                        None,
                    ]
                })
                .collect(),
        }
    }

    fn probe<'a>(probes: &'a [Probe], check: &str) -> &'a Probe {
        probes.iter().find(|p| p.check == check).unwrap()
    }

    #[test]
    fn a_file_format_that_would_null_backslash_n_fails_with_its_fix() {
        let (config, options) = (config(), options());
        let setup = crate::setup::setup_sql(&config, &options).unwrap();
        let probes = probes(&config, &options);
        let format = probe(&probes, "file format");
        assert_eq!(
            format.sql,
            "DESC FILE FORMAT \"SLUICE\".\"RAW\".\"SLUICE_PARQUET\""
        );
        let good = desc(&[
            ("TYPE", "PARQUET"),
            ("USE_LOGICAL_TYPE", "true"),
            ("BINARY_AS_TEXT", "false"),
            ("NULL_IF", "[]"),
        ]);
        assert_eq!(
            judge(format, Ok(&good), &options, &setup).verdict,
            Verdict::Pass
        );
        let bad = desc(&[
            ("TYPE", "PARQUET"),
            ("USE_LOGICAL_TYPE", "true"),
            ("BINARY_AS_TEXT", "false"),
            ("NULL_IF", "[\\N]"),
        ]);
        let outcome = judge(format, Ok(&bad), &options, &setup);
        assert!(
            matches!(&outcome.verdict, Verdict::Fail(m) if m.contains("NULL_IF")),
            "{outcome:?}"
        );
        assert_eq!(
            outcome.fix,
            [
                "ALTER FILE FORMAT \"SLUICE\".\"RAW\".\"SLUICE_PARQUET\" SET USE_LOGICAL_TYPE = TRUE BINARY_AS_TEXT = FALSE NULL_IF = ()"
            ]
        );
        let missing = judge(format, Err("File format does not exist"), &options, &setup);
        assert!(
            missing.fix[0].starts_with("CREATE FILE FORMAT IF NOT EXISTS"),
            "{missing:?}"
        );
    }

    #[test]
    fn each_external_function_is_checked_for_its_url_and_batch_limit() {
        let (config, options) = (config(), options());
        let setup = crate::setup::setup_sql(&config, &options).unwrap();
        let probes = probes(&config, &options);
        let functions: Vec<&Probe> = probes
            .iter()
            .filter(|p| p.check == "external function")
            .collect();
        let sqls: Vec<&str> = functions.iter().map(|p| p.sql.as_str()).collect();
        assert_eq!(
            sqls,
            [
                "DESC FUNCTION \"SLUICE\".\"SLUICE\".\"INGEST\"(VARCHAR, VARCHAR)",
                "DESC FUNCTION \"SLUICE\".\"SLUICE\".\"INGEST\"(VARCHAR, VARCHAR, OBJECT)",
                "DESC FUNCTION \"SLUICE\".\"SLUICE\".\"INGEST_ASYNC\"(VARCHAR, VARCHAR)",
                "DESC FUNCTION \"SLUICE\".\"SLUICE\".\"RUN_STATUS\"(VARCHAR)",
                "DESC FUNCTION \"SLUICE\".\"SLUICE\".\"CHECK_SOURCE\"(VARCHAR)",
                "DESC FUNCTION \"SLUICE\".\"SLUICE\".\"CHECK_SOURCE\"(VARCHAR, VARCHAR)",
            ]
        );
        let answer = |rows: &str| Answer {
            columns: vec!["property".into(), "value".into()],
            rows: [
                ("max_batch_rows", rows),
                (
                    "body",
                    "https://abc123.execute-api.eu-west-1.amazonaws.com/prod/ingest",
                ),
                ("api_integration", "SLUICE_API"),
            ]
            .iter()
            .map(|(k, v)| vec![Some((*k).into()), Some((*v).into())])
            .collect(),
        };
        assert_eq!(
            judge(functions[0], Ok(&answer("100")), &options, &setup).verdict,
            Verdict::Pass
        );
        let unset = judge(functions[0], Ok(&answer("")), &options, &setup);
        assert!(
            matches!(&unset.verdict, Verdict::Fail(m) if m.contains("MAX_BATCH_ROWS is ''")),
            "{unset:?}"
        );
        assert!(unset.fix[0].contains("MAX_BATCH_ROWS = 100"), "{unset:?}");
        // The async variant must call its own route, not /ingest.
        let wrong_route = judge(functions[2], Ok(&answer("100")), &options, &setup);
        assert!(
            matches!(&wrong_route.verdict, Verdict::Fail(m) if m.contains("ingest_async")),
            "{wrong_route:?}"
        );
    }

    #[test]
    fn a_tables_merge_procedure_is_compiled_under_a_probe_name_and_dropped() {
        let (config, options) = (config(), options());
        let mut setup = crate::setup::setup_sql(&config, &options).unwrap();
        let schema = arrow_schema::Schema::new(vec![
            arrow_schema::Field::new("id", arrow_schema::DataType::Int64, false),
            arrow_schema::Field::new("_sluice_run_id", arrow_schema::DataType::Utf8, false),
            arrow_schema::Field::new(
                "_sluice_extracted_at",
                arrow_schema::DataType::Timestamp(
                    arrow_schema::TimeUnit::Microsecond,
                    Some("UTC".into()),
                ),
                false,
            ),
        ]);
        setup
            .add_table(&config.tables[0], "SLUICE", &schema)
            .unwrap();
        let probes = merge_procedure_probes(&config, "SLUICE", &setup);
        assert_eq!(probes.len(), 1);
        let (key, create, drop) = &probes[0];
        assert_eq!(key, "shop/public.orders");
        assert!(
            create.starts_with(
                "CREATE OR REPLACE PROCEDURE \"SLUICE\".\"SLUICE\".\"SLUICE_DOCTOR_MERGE_PROBE\"(RUN_ID VARCHAR)"
            ),
            "{create}"
        );
        // The body is the generated one, word for word.
        let original = setup.tables[0]
            .1
            .iter()
            .find(|s| s.starts_with("CREATE OR REPLACE PROCEDURE"))
            .unwrap();
        assert_eq!(
            create.split_once("AS $$").unwrap().1,
            original.split_once("AS $$").unwrap().1
        );
        assert!(!create.contains("MERGE_SHOP_PUBLIC_ORDERS\"("), "{create}");
        assert_eq!(
            drop,
            "DROP PROCEDURE IF EXISTS \"SLUICE\".\"SLUICE\".\"SLUICE_DOCTOR_MERGE_PROBE\"(VARCHAR)"
        );
    }

    #[test]
    fn the_session_must_have_sluices_role_and_a_usable_warehouse() {
        let (config, options) = (config(), options());
        let setup = crate::setup::setup_sql(&config, &options).unwrap();
        let probes = probes(&config, &options);
        let session = probe(&probes, "session");
        let row = |w: Option<&str>| Answer {
            columns: vec![
                "current_user()".into(),
                "current_role()".into(),
                "current_warehouse()".into(),
            ],
            rows: vec![vec![
                Some("SLUICE".into()),
                Some("SLUICE_LOADER".into()),
                w.map(Into::into),
            ]],
        };
        assert_eq!(
            judge(session, Ok(&row(Some("SLUICE_WH"))), &options, &setup).verdict,
            Verdict::Pass
        );
        let none = judge(session, Ok(&row(None)), &options, &setup);
        assert!(
            matches!(&none.verdict, Verdict::Fail(m) if m.contains("cannot use warehouse SLUICE_WH"))
        );
        assert!(
            none.fix[0].starts_with("CREATE WAREHOUSE IF NOT EXISTS \"SLUICE_WH\""),
            "{none:?}"
        );
        assert_eq!(
            none.fix[1],
            "GRANT USAGE, OPERATE ON WAREHOUSE \"SLUICE_WH\" TO ROLE \"SLUICE_LOADER\""
        );
    }

    #[test]
    fn integrations_must_point_at_the_templates_roles_and_cover_the_locations() {
        let (config, options) = (config(), options());
        let setup = crate::setup::setup_sql(&config, &options).unwrap();
        let probes = probes(&config, &options);
        let storage = probe(&probes, "storage integration");
        let good = desc(&[
            ("ENABLED", "true"),
            (
                "STORAGE_AWS_ROLE_ARN",
                "arn:aws:iam::123456789012:role/snowflake-s3",
            ),
            ("STORAGE_ALLOWED_LOCATIONS", "s3://acme-lake/raw/v1/"),
        ]);
        assert_eq!(
            judge(storage, Ok(&good), &options, &setup).verdict,
            Verdict::Pass
        );
        let elsewhere = desc(&[
            ("ENABLED", "true"),
            (
                "STORAGE_AWS_ROLE_ARN",
                "arn:aws:iam::123456789012:role/snowflake-s3",
            ),
            ("STORAGE_ALLOWED_LOCATIONS", "s3://other-bucket/"),
        ]);
        let outcome = judge(storage, Ok(&elsewhere), &options, &setup);
        assert!(
            matches!(&outcome.verdict, Verdict::Fail(m) if m.contains("do not cover s3://acme-lake/raw/v1/"))
        );
        assert!(
            outcome.fix[0].starts_with("ALTER STORAGE INTEGRATION \"SLUICE_S3\" SET"),
            "{outcome:?}"
        );
        let api = probe(&probes, "API integration");
        let missing = judge(
            api,
            Err("Integration 'SLUICE_API' does not exist or not authorized."),
            &options,
            &setup,
        );
        assert!(
            missing.fix[0].starts_with("CREATE API INTEGRATION IF NOT EXISTS"),
            "{missing:?}"
        );
        assert!(
            missing.fix[1].starts_with("GRANT USAGE ON INTEGRATION \"SLUICE_API\""),
            "{missing:?}"
        );
    }
}
