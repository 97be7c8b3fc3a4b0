//! `sluice check`'s Snowflake family as pure logic: which of `sluice snowflake doctor`'s
//! probes a check can judge with what it was told (the doctor's own statements and judging,
//! their outcomes turned into report rows), the read-only `SHOW GRANTS` statements that tell
//! whether sluice's role may create RAW and STAGING where the config puts them, and how a
//! table that already exists is compared with the source's current schema through the
//! loader's own type map (`staging::staging_columns`, `snowflake::schema_columns`) and its
//! rule of what loads unchanged (`staging::compatible_type`).
//!
//! The engine runs the statements (`sluice::check::snowflake`); nothing here does I/O.

use std::collections::BTreeSet;

use arrow_schema::Schema;

use super::{CheckResult, Family};
use crate::config::{Config, TableConfig};
use crate::doctor::{Answer, Outcome, Probe, Verdict, probes};
use crate::setup::{SetupOptions, SetupSql, setup_sql};
use crate::snowflake::{ObjectName, SnowflakeType, quote, schema_columns};
use crate::staging::{
    ExistingColumn, MergeSpec, TableTargets, compatible_type, describe_existing, staging_columns,
};

/// The set-up's IAM roles and API URL (the stack's outputs, as `sluice snowflake sql` takes
/// them): only with them can the integrations and external functions be judged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Integrations {
    pub storage_role_arn: String,
    pub api_role_arn: String,
    pub api_url: String,
}

/// What the Snowflake checks know of the deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnowflakeScope {
    pub database: String,
    pub user: String,
    /// sluice's role and warehouse, as the session has them once signed in.
    pub role: String,
    pub warehouse: String,
    pub max_batch_rows: usize,
    /// The bucket and prefix runs write to (the stage's URL), when the output is on S3.
    pub location: Option<(String, Option<String>)>,
    pub integrations: Option<Integrations>,
}

// Stand-ins for what the scope does not know, so that the set-up SQL (the source of every
// fix) can be generated; the probes that would judge them are left out, and any text that
// still names one is rewritten by `unknown`.
const UNKNOWN_BUCKET: &str = "sluice-check-unknown-bucket";
const UNKNOWN_ROLE_ARN: &str = "arn:aws:iam::000000000000:role/sluice-check-unknown";
const UNKNOWN_API_URL: &str = "https://sluice-check-unknown.invalid/unknown/";

fn unknown(text: &str) -> String {
    text.replace(UNKNOWN_ROLE_ARN, "<the integration's IAM role>")
        .replace(UNKNOWN_API_URL, "<the API's stage URL>")
        .replace(UNKNOWN_BUCKET, "<the bucket>")
}

/// The doctor's probes a check runs, with what judges them.
#[derive(Debug, Clone)]
pub struct DoctorPlan {
    pub options: SetupOptions,
    pub setup: SetupSql,
    pub probes: Vec<Probe>,
    /// What was left out for want of options, to say so (e.g. the integrations).
    pub left_out: Vec<&'static str>,
}

/// The doctor's probes for `config`'s tables that `scope` lets a check judge: every probe
/// when it knows the integrations and the location, else those that need neither. `Err`
/// names each option that is wrong.
pub fn doctor_plan(config: &Config, scope: &SnowflakeScope) -> Result<DoctorPlan, String> {
    let (bucket, prefix) = scope
        .location
        .clone()
        .unwrap_or_else(|| (UNKNOWN_BUCKET.to_owned(), None));
    let integrations = scope.integrations.clone().unwrap_or(Integrations {
        storage_role_arn: UNKNOWN_ROLE_ARN.to_owned(),
        api_role_arn: UNKNOWN_ROLE_ARN.to_owned(),
        api_url: UNKNOWN_API_URL.to_owned(),
    });
    let options = SetupOptions {
        database: scope.database.clone(),
        role: scope.role.clone(),
        user: scope.user.clone(),
        warehouse: scope.warehouse.clone(),
        max_batch_rows: scope.max_batch_rows,
        bucket,
        prefix,
        storage_role_arn: integrations.storage_role_arn,
        api_role_arn: integrations.api_role_arn,
        api_url: integrations.api_url,
    };
    let setup = setup_sql(config, &options).map_err(|issues| {
        issues
            .iter()
            .map(|i| unknown(&i.to_string()))
            .collect::<Vec<_>>()
            .join("; ")
    })?;
    let mut left_out = Vec::new();
    if scope.integrations.is_none() {
        left_out.push("the storage and API integrations and the external functions");
    }
    if scope.location.is_none() {
        left_out.push("the stage and its listing of the bucket");
    }
    let probes = probes(config, &options)
        .into_iter()
        .filter(|p| scope.integrations.is_some() || !p.needs_integrations())
        .filter(|p| scope.location.is_some() || !p.needs_location())
        .collect();
    Ok(DoctorPlan {
        options,
        setup,
        probes,
        left_out,
    })
}

/// A doctor outcome as a report row: its fix statements one per line; a probe with nothing
/// to check yet (a merge procedure the first run creates) passes, saying so.
pub fn doctor_result(outcome: &Outcome) -> CheckResult {
    let fix: Vec<String> = outcome.fix.iter().map(|f| unknown(f)).collect();
    let result = match &outcome.verdict {
        Verdict::Pass => CheckResult::pass(Family::Snowflake, &outcome.check, &outcome.target, ""),
        Verdict::Skip(why) => CheckResult::pass(
            Family::Snowflake,
            &outcome.check,
            &outcome.target,
            unknown(why),
        ),
        Verdict::Fail(why) => CheckResult::fail(
            Family::Snowflake,
            &outcome.check,
            &outcome.target,
            unknown(why),
        ),
    };
    if fix.is_empty() {
        result
    } else {
        result.with_fix(fix.join(";\n"))
    }
}

/// `SELECT CURRENT_ROLE(), CURRENT_WAREHOUSE()`: the session's own, when not configured.
pub const SESSION_SQL: &str = "SELECT CURRENT_ROLE(), CURRENT_WAREHOUSE()";

/// The roles granted to `role` (whose privileges it inherits), then what is granted on a
/// schema and on a database. SHOW GRANTS lists explicit grants and the owner's OWNERSHIP
/// (<https://docs.snowflake.com/en/sql-reference/sql/show-grants>); an object a role cannot
/// see is "does not exist or not authorized".
pub fn grants_to_role_sql(role: &str) -> String {
    format!("SHOW GRANTS TO ROLE {}", quote(role))
}

pub fn grants_on_schema_sql(database: &str, schema: &str) -> String {
    format!(
        "SHOW GRANTS ON SCHEMA {}.{}",
        quote(database),
        quote(schema)
    )
}

pub fn grants_on_database_sql(database: &str) -> String {
    format!("SHOW GRANTS ON DATABASE {}", quote(database))
}

/// Whether an error of a SHOW GRANTS ON says the object is not there (Snowflake's 002003,
/// "… does not exist or not authorized."), rather than that the statement failed.
pub fn is_missing(error: &str) -> bool {
    error.contains("does not exist")
}

fn same_role(a: &str, b: &str) -> bool {
    a.trim_matches('"')
        .eq_ignore_ascii_case(b.trim_matches('"'))
}

/// The roles a `SHOW GRANTS TO ROLE` answer says the role was granted (`USAGE` on a `ROLE`).
pub fn granted_roles(answer: &Answer) -> Vec<String> {
    let col = |name: &str| answer.columns.iter().position(|c| c == name);
    let (Some(privilege), Some(on), Some(name)) =
        (col("privilege"), col("granted_on"), col("name"))
    else {
        return Vec::new();
    };
    answer
        .rows
        .iter()
        .filter(|r| {
            r.get(privilege).cloned().flatten().as_deref() == Some("USAGE")
                && r.get(on).cloned().flatten().as_deref() == Some("ROLE")
        })
        .filter_map(|r| r.get(name).cloned().flatten())
        .collect()
}

/// The privileges a `SHOW GRANTS ON` answer grants to any of `roles`.
pub fn held_privileges(answer: &Answer, roles: &BTreeSet<String>) -> BTreeSet<String> {
    let col = |name: &str| answer.columns.iter().position(|c| c == name);
    let (Some(privilege), Some(grantee)) = (col("privilege"), col("grantee_name")) else {
        return BTreeSet::new();
    };
    answer
        .rows
        .iter()
        .filter(|r| {
            r.get(grantee)
                .cloned()
                .flatten()
                .is_some_and(|g| roles.iter().any(|role| same_role(role, &g)))
        })
        .filter_map(|r| r.get(privilege).cloned().flatten())
        .map(|p| p.to_ascii_uppercase())
        .collect()
}

/// A schema RAW or STAGING lives in, and what sluice's role does there: create tables, and in
/// STAGING's the generated merge (and reconcile) procedures
/// (<https://docs.snowflake.com/en/user-guide/security-access-control-privileges>: CREATE
/// TABLE, CREATE PROCEDURE on a schema; CREATE SCHEMA on a database).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaNeed {
    pub database: String,
    pub schema: String,
    pub privileges: BTreeSet<&'static str>,
}

impl SchemaNeed {
    pub fn quoted(&self) -> String {
        format!("{}.{}", quote(&self.database), quote(&self.schema))
    }
}

/// Every schema the tables' RAW and STAGING live in, with what the role needs there.
pub fn schema_needs(tables: &[&TableConfig], database: &str) -> Vec<SchemaNeed> {
    let mut needs: Vec<SchemaNeed> = Vec::new();
    for table in tables {
        let targets = TableTargets::resolve(table, database);
        for (object, procedure) in [
            (&targets.raw, false),
            (&targets.staging, targets.generated_merge),
        ] {
            let index = match needs
                .iter()
                .position(|n| n.database == object.database && n.schema == object.schema)
            {
                Some(i) => i,
                None => {
                    needs.push(SchemaNeed {
                        database: object.database.clone(),
                        schema: object.schema.clone(),
                        privileges: BTreeSet::new(),
                    });
                    needs.len() - 1
                }
            };
            needs[index].privileges.insert("CREATE TABLE");
            if procedure {
                needs[index].privileges.insert("CREATE PROCEDURE");
            }
        }
    }
    needs
}

/// Whether the role may create what it needs in a schema: `Ok` says how, `Err` is the
/// failure's detail and fix. Owning the schema grants everything in it
/// (<https://docs.snowflake.com/en/user-guide/security-access-control-overview>: the owner
/// role holds every privilege on the object; the role that creates an object owns it).
pub type SchemaVerdict = Result<String, (String, String)>;

/// Judges the schema from `SHOW GRANTS ON SCHEMA` (Err: Snowflake's error), and, when the
/// schema is missing, from `SHOW GRANTS ON DATABASE` (a run creates the schema first).
pub fn judge_schema(
    need: &SchemaNeed,
    role: &str,
    roles: &BTreeSet<String>,
    on_schema: Result<&Answer, &str>,
    on_database: Option<Result<&Answer, &str>>,
) -> SchemaVerdict {
    let schema = need.quoted();
    let wanted: Vec<&str> = need.privileges.iter().copied().collect();
    match on_schema {
        Ok(answer) => {
            let held = held_privileges(answer, roles);
            if held.contains("OWNERSHIP") {
                return Ok(format!("role {role} owns {schema}"));
            }
            let missing: Vec<&str> = wanted
                .iter()
                .copied()
                .filter(|p| !held.contains(*p))
                .collect();
            if missing.is_empty() {
                Ok(format!("role {role} has {} on {schema}", wanted.join(", ")))
            } else {
                Err((
                    format!(
                        "role {role} may not create in {schema}: it lacks {}",
                        missing.join(", ")
                    ),
                    format!(
                        "GRANT USAGE, {} ON SCHEMA {schema} TO ROLE {}",
                        missing.join(", "),
                        quote(role)
                    ),
                ))
            }
        }
        Err(error) if is_missing(error) => {
            let database = quote(&need.database);
            let create = format!(
                "GRANT USAGE, CREATE SCHEMA ON DATABASE {database} TO ROLE {}",
                quote(role)
            );
            match on_database {
                Some(Ok(answer)) => {
                    let held = held_privileges(answer, roles);
                    if held.contains("OWNERSHIP") || held.contains("CREATE SCHEMA") {
                        Ok(format!(
                            "{schema} does not exist yet: the first run creates it (role {role} may create schemas in {database})"
                        ))
                    } else {
                        Err((
                            format!(
                                "{schema} does not exist and role {role} may not create schemas in {database}"
                            ),
                            create,
                        ))
                    }
                }
                Some(Err(why)) => Err((
                    format!("{schema} does not exist, and database {database}: {why}"),
                    create,
                )),
                None => Err((format!("{schema} does not exist"), create)),
            }
        }
        Err(error) => Err((
            format!("{schema}: {error}"),
            format!(
                "GRANT USAGE, {} ON SCHEMA {schema} TO ROLE {}",
                wanted.join(", "),
                quote(role)
            ),
        )),
    }
}

/// RAW's and STAGING's columns as a run of `table` would create them from `file_schema` (the
/// source's current schema as the files carry it): the loader's own steps (`Loader::load`).
pub type WantedColumns = (Vec<(String, SnowflakeType)>, Vec<(String, SnowflakeType)>);

pub fn wanted_columns(
    table: &TableConfig,
    database: &str,
    file_schema: &Schema,
) -> Result<WantedColumns, String> {
    let targets = TableTargets::resolve(table, database);
    let spec = MergeSpec::of(table);
    let schema = if spec.cdc {
        crate::cdc::changes::with_change_columns(file_schema)
    } else {
        file_schema.clone()
    };
    let raw = schema_columns(&schema).map_err(|e| e.to_string())?;
    let staging =
        staging_columns(&schema, &spec, &targets.staging.quoted()).map_err(|e| e.to_string())?;
    Ok((raw, staging))
}

/// One layer (RAW or STAGING) of one table, judged: the check name is `raw table` or
/// `staging table`, the target the table's key. `existing` is its columns
/// (`INFORMATION_SCHEMA.COLUMNS`; none: it does not exist), `wanted` what a run would give
/// it (`Err`: why the source's schema is unknown). Each incompatible column fails on its
/// own row, naming the column, both types and the fix.
pub fn judge_layer(
    table: &TableConfig,
    layer: &str,
    object: &ObjectName,
    schema: &SchemaVerdict,
    existing: Result<&[ExistingColumn], &str>,
    wanted: Result<&[(String, SnowflakeType)], &str>,
) -> Vec<CheckResult> {
    let target = table.key();
    let check = format!("{layer} table");
    let name = object.quoted();
    let existing = match existing {
        Ok(columns) => columns,
        Err(why) => {
            return vec![
                CheckResult::fail(
                    Family::Snowflake,
                    &check,
                    &target,
                    format!("{name}: its columns could not be read: {why}"),
                )
                .with_fix(format!(
                    "GRANT USAGE ON SCHEMA {}.{} TO ROLE <sluice's role>",
                    quote(&object.database),
                    quote(&object.schema)
                )),
            ];
        }
    };
    if existing.is_empty() {
        return vec![match schema {
            Ok(how) => CheckResult::pass(
                Family::Snowflake,
                &check,
                &target,
                format!("{name} does not exist yet: the first run creates it ({how})"),
            ),
            Err((why, fix)) => CheckResult::fail(
                Family::Snowflake,
                &check,
                &target,
                format!("{name} does not exist and cannot be created: {why}"),
            )
            .with_fix(fix.clone()),
        }];
    }
    let wanted = match wanted {
        Ok(wanted) => wanted,
        Err(why) => {
            return vec![
                CheckResult::pass(
                    Family::Snowflake,
                    &check,
                    &target,
                    format!("{name} exists ({} columns)", existing.len()),
                ),
                CheckResult::warn(
                    Family::Snowflake,
                    &format!("{layer} column types"),
                    &target,
                    format!("not compared with the source: {why}"),
                )
                .with_fix("mend the source checks' failures, then run sluice check again"),
            ];
        }
    };
    let mut results = Vec::new();
    let mut to_add = Vec::new();
    for (column, wanted_type) in wanted {
        match existing.iter().find(|c| &c.name == column) {
            None => to_add.push(column.as_str()),
            Some(found) if !compatible_type(found, wanted_type) => {
                let was = describe_existing(found);
                results.push(
                    CheckResult::fail(
                        Family::Snowflake,
                        &format!("{layer} column type"),
                        &target,
                        format!(
                            "column {column} is {was} in {name} but the source now gives {wanted_type}: the next run fails"
                        ),
                    )
                    .with_fix(format!(
                        "ALTER TABLE {name} RENAME COLUMN {} TO {} (the next run adds {column} as {wanted_type}; copy the kept values across if you need them), or change the source column back to a type that maps to {was}",
                        quote(column),
                        quote(&format!("{column}_old"))
                    )),
                );
            }
            Some(_) => {}
        }
    }
    if results.is_empty() {
        let added = if to_add.is_empty() {
            String::new()
        } else {
            format!("; the next run adds {}", to_add.join(", "))
        };
        results.push(CheckResult::pass(
            Family::Snowflake,
            &check,
            &target,
            format!("{name} exists and its column types fit the source's{added}"),
        ));
    }
    results
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::Status;

    fn config() -> Config {
        Config::from_yaml(
            "sources:\n  - name: shop\n    engine: postgres\n    connection: { url: 'postgres://app@db/shop' }\n\
             tables:\n  - source: shop\n    table: public.orders\n    primary_key: [id]\n",
            "t",
        )
        .unwrap()
    }

    fn scope(integrations: bool, location: bool) -> SnowflakeScope {
        SnowflakeScope {
            database: "SLUICE".into(),
            user: "SLUICE".into(),
            role: "SLUICE_LOADER".into(),
            warehouse: "SLUICE_WH".into(),
            max_batch_rows: 100,
            location: location.then(|| ("acme-lake".to_owned(), Some("raw".to_owned()))),
            integrations: integrations.then(|| Integrations {
                storage_role_arn: "arn:aws:iam::123456789012:role/s".into(),
                api_role_arn: "arn:aws:iam::123456789012:role/a".into(),
                api_url: "https://abc.execute-api.eu-west-1.amazonaws.com/prod/".into(),
            }),
        }
    }

    fn answer(columns: &[&str], rows: &[&[&str]]) -> Answer {
        Answer {
            columns: columns.iter().map(|c| (*c).to_owned()).collect(),
            rows: rows
                .iter()
                .map(|r| r.iter().map(|c| Some((*c).to_owned())).collect())
                .collect(),
        }
    }

    #[test]
    fn without_the_integrations_or_the_location_their_probes_are_left_out() {
        let config = config();
        let all = doctor_plan(&config, &scope(true, true)).unwrap();
        let checks: Vec<&str> = all.probes.iter().map(|p| p.check).collect();
        assert!(checks.contains(&"external function"), "{checks:?}");
        assert!(all.left_out.is_empty());
        let some = doctor_plan(&config, &scope(false, false)).unwrap();
        let checks: Vec<&str> = some.probes.iter().map(|p| p.check).collect();
        for gone in [
            "storage integration",
            "API integration",
            "external function",
            "stage",
            "stage lists the bucket",
        ] {
            assert!(!checks.contains(&gone), "{gone} in {checks:?}");
        }
        for kept in [
            "session",
            "session parameter",
            "file format",
            "merge procedures",
        ] {
            assert!(checks.contains(&kept), "{kept} not in {checks:?}");
        }
        assert_eq!(some.left_out.len(), 2);
        let mut bad = scope(false, false);
        bad.role = "no\"role".into();
        assert!(doctor_plan(&config, &bad).unwrap_err().contains("--role"));
    }

    #[test]
    fn a_doctor_failure_keeps_its_fix_and_a_skip_passes() {
        let failed = doctor_result(&Outcome {
            check: "file format".into(),
            target: "\"SLUICE\".\"RAW\".\"SLUICE_PARQUET\"".into(),
            verdict: Verdict::Fail("does not exist".into()),
            fix: vec!["CREATE FILE FORMAT x".into(), "GRANT y".into()],
        });
        assert_eq!(failed.status, Status::Fail);
        assert_eq!(failed.family, Family::Snowflake);
        assert_eq!(
            failed.fix.as_deref(),
            Some("CREATE FILE FORMAT x;\nGRANT y")
        );
        let skipped = doctor_result(&Outcome {
            check: "merge procedures".into(),
            target: "s".into(),
            verdict: Verdict::Skip(format!("see {UNKNOWN_ROLE_ARN}")),
            fix: Vec::new(),
        });
        assert_eq!(skipped.status, Status::Pass);
        assert!(
            !skipped.detail.contains("000000000000"),
            "{}",
            skipped.detail
        );
    }

    #[test]
    fn grants_statements_quote_and_roles_are_followed() {
        assert_eq!(
            grants_on_schema_sql("SLUICE", "RAW"),
            "SHOW GRANTS ON SCHEMA \"SLUICE\".\"RAW\""
        );
        assert_eq!(grants_to_role_sql("a\"b"), "SHOW GRANTS TO ROLE \"a\"\"b\"");
        let to_role = answer(
            &["privilege", "granted_on", "name"],
            &[
                &["USAGE", "ROLE", "LOADER_BASE"],
                &["USAGE", "WAREHOUSE", "WH"],
            ],
        );
        assert_eq!(granted_roles(&to_role), ["LOADER_BASE"]);
    }

    #[test]
    fn a_schema_passes_when_owned_or_granted_and_a_missing_one_needs_create_schema() {
        let tables = config();
        let tables: Vec<&TableConfig> = tables.tables.iter().collect();
        let needs = schema_needs(&tables, "SLUICE");
        assert_eq!(needs.len(), 2);
        assert_eq!(needs[1].schema, "STAGING");
        assert!(needs[1].privileges.contains("CREATE PROCEDURE"));
        assert!(!needs[0].privileges.contains("CREATE PROCEDURE"));
        let roles: BTreeSet<String> = ["SLUICE_LOADER".to_owned()].into();
        let grants = |rows: &[&[&str]]| answer(&["privilege", "granted_to", "grantee_name"], rows);
        let owned = grants(&[&["OWNERSHIP", "ROLE", "sluice_loader"]]);
        assert!(judge_schema(&needs[1], "SLUICE_LOADER", &roles, Ok(&owned), None).is_ok());
        let partial = grants(&[&["CREATE TABLE", "ROLE", "SLUICE_LOADER"]]);
        let (why, fix) =
            judge_schema(&needs[1], "SLUICE_LOADER", &roles, Ok(&partial), None).unwrap_err();
        assert!(why.contains("lacks CREATE PROCEDURE"), "{why}");
        assert_eq!(
            fix,
            "GRANT USAGE, CREATE PROCEDURE ON SCHEMA \"SLUICE\".\"STAGING\" TO ROLE \"SLUICE_LOADER\""
        );
        let other = grants(&[&["OWNERSHIP", "ROLE", "SYSADMIN"]]);
        assert!(judge_schema(&needs[0], "SLUICE_LOADER", &roles, Ok(&other), None).is_err());
        let missing = Err("Schema 'SLUICE.RAW' does not exist or not authorized.");
        let db = grants(&[&["CREATE SCHEMA", "ROLE", "SLUICE_LOADER"]]);
        assert!(
            judge_schema(&needs[0], "SLUICE_LOADER", &roles, missing, Some(Ok(&db)))
                .unwrap()
                .contains("the first run creates it")
        );
        let none = grants(&[&["USAGE", "ROLE", "SLUICE_LOADER"]]);
        let (_, fix) =
            judge_schema(&needs[0], "SLUICE_LOADER", &roles, missing, Some(Ok(&none))).unwrap_err();
        assert!(
            fix.contains("CREATE SCHEMA ON DATABASE \"SLUICE\""),
            "{fix}"
        );
    }

    #[test]
    fn a_retyped_column_fails_naming_it_both_types_and_the_fix() {
        let config = config();
        let table = &config.tables[0];
        let schema = Schema::new(vec![
            arrow_schema::Field::new("id", arrow_schema::DataType::Int64, false),
            arrow_schema::Field::new("in_stock", arrow_schema::DataType::Boolean, true),
            arrow_schema::Field::new("note", arrow_schema::DataType::Utf8, true),
        ]);
        let (_, staging) = wanted_columns(table, "SLUICE", &schema).unwrap();
        let column = |name: &str, data_type: &str, p: Option<u32>, s: Option<u32>| ExistingColumn {
            name: name.into(),
            data_type: data_type.into(),
            precision: p,
            scale: s,
        };
        let existing = vec![
            column("id", "NUMBER", Some(19), Some(0)),
            column("in_stock", "TEXT", None, None),
        ];
        let object = ObjectName::new("SLUICE", "STAGING", "SHOP_PUBLIC_ORDERS");
        let ok: SchemaVerdict = Ok("owned".into());
        let rows = judge_layer(table, "staging", &object, &ok, Ok(&existing), Ok(&staging));
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!(rows[0].status, Status::Fail);
        assert_eq!(rows[0].check, "staging column type");
        assert_eq!(rows[0].target, "shop/public.orders");
        assert!(
            rows[0].detail.starts_with("column in_stock is TEXT in \"SLUICE\".\"STAGING\".\"SHOP_PUBLIC_ORDERS\" but the source now gives BOOLEAN"),
            "{}",
            rows[0].detail
        );
        assert!(
            rows[0]
                .fix
                .as_deref()
                .unwrap()
                .starts_with("ALTER TABLE \"SLUICE\".\"STAGING\".\"SHOP_PUBLIC_ORDERS\" RENAME COLUMN \"in_stock\" TO \"in_stock_old\""),
            "{:?}",
            rows[0].fix
        );
        // Compatible, with a column the next run adds.
        let fine = vec![column("id", "NUMBER", Some(19), Some(0))];
        let rows = judge_layer(table, "staging", &object, &ok, Ok(&fine), Ok(&staging));
        assert_eq!(rows[0].status, Status::Pass);
        assert!(
            rows[0].detail.contains("the next run adds in_stock, note"),
            "{}",
            rows[0].detail
        );
        // Missing: created by the first run, or not creatable.
        let rows = judge_layer(table, "raw", &object, &ok, Ok(&[]), Ok(&staging));
        assert!(rows[0].detail.contains("the first run creates it"));
        let denied: SchemaVerdict = Err(("no".into(), "GRANT".into()));
        let rows = judge_layer(table, "raw", &object, &denied, Ok(&[]), Err("x"));
        assert_eq!(rows[0].status, Status::Fail);
        assert_eq!(rows[0].fix.as_deref(), Some("GRANT"));
    }
}
