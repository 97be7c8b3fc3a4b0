//! The SAM template (`template.yaml`) against the code it deploys. Wherever the code can say
//! what the template must hold, the expectation comes from the code: the binaries from
//! `functions/Cargo.toml`, the DynamoDB layouts from `sluice::ddb::create_table` (run against
//! moto and described back), the environment from the functions' own settings parser
//! (`sluice_core::deploy::DeploymentSettings::from_env`), the API routes from the external
//! functions `sluice snowflake sql` creates (`sluice_core::setup`). The rest is the deployment's
//! own rules: IAM auth on the API, no `*` resource outside an allow-list, a private encrypted
//! TLS-only bucket, on-demand tables with point-in-time recovery and encryption.
//!
//! The template is read with cfn-lint's YAML loader (the one `cfn-lint` and `sam validate
//! --lint` use; scripts/setup installs it, and this crate has no YAML parser of its own),
//! which writes CloudFormation's short tags in their long form (`!Ref X` is
//! `{"Ref": "X"}`, `!GetAtt A.B` is `{"Fn::GetAtt": ["A", "B"]}`). Intrinsic functions are
//! evaluated for a stack named `sluice` in us-east-1 with the parameters' defaults, or the
//! values a test gives.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::{Map, Value};
use sluice::ddb::{self, TableKind};
use sluice_core::deploy::{Compression, DeploymentSettings};
use sluice_core::output::OutputLocation;
use sluice_core::setup::{SetupOptions, setup_sql};
use sluice_tests::moto::{MotoServer, unique_name};

const STACK: &str = "sluice";
const REGION: &str = "us-east-1";
const ACCOUNT: &str = "123456789012";
/// The one parameter without a default.
const SOURCE_SECRET: &str =
    "arn:aws:secretsmanager:us-east-1:123456789012:secret:sluice/shop-AbCdEf";

/// Actions that AWS only grants on `Resource: '*'` (they name no resource, or Lambda calls
/// them for the function's VPC before any network interface exists).
const STAR_RESOURCE_ACTIONS: [&str; 10] = [
    "xray:PutTraceSegments",
    "xray:PutTelemetryRecords",
    "xray:GetSamplingRules",
    "xray:GetSamplingTargets",
    "ec2:CreateNetworkInterface",
    "ec2:DescribeNetworkInterfaces",
    "ec2:DescribeSubnets",
    "ec2:DeleteNetworkInterface",
    "ec2:AssignPrivateIpAddresses",
    "ec2:UnassignPrivateIpAddresses",
];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// `template.yaml`, or the file `SLUICE_TEMPLATE` names (to see these tests fail on a broken
/// copy).
fn template() -> &'static Value {
    static TEMPLATE: OnceLock<Value> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let path = std::env::var_os("SLUICE_TEMPLATE")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace().join("template.yaml"));
        decode(&path)
    })
}

/// A CloudFormation YAML file as JSON, through cfn-lint's loader (scripts/setup installs it).
fn decode(path: &Path) -> Value {
    const SCRIPT: &str = "import json, sys\n\
        from cfnlint.decode import decode\n\
        template, problems = decode(sys.argv[1])\n\
        if problems:\n\
        \x20   sys.exit('\\n'.join(str(p) for p in problems))\n\
        json.dump(template, sys.stdout)\n";
    let python = workspace().join("target/tools/cfn-lint/bin/python3");
    let out = Command::new(&python)
        .args(["-c", SCRIPT])
        .arg(path)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} ({e}); run scripts/setup to install cfn-lint",
                python.display()
            )
        });
    assert!(
        out.status.success(),
        "{} does not parse: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The `[[bin]]` names of a Cargo manifest (a line-based reading: `name = "…"` under `[[bin]]`).
fn cargo_bins(manifest: &str) -> BTreeSet<String> {
    let mut bins = BTreeSet::new();
    let mut in_bin = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_bin = line == "[[bin]]";
        } else if in_bin
            && let Some((key, value)) = line.split_once('=')
            && key.trim() == "name"
        {
            bins.insert(value.trim().trim_matches('"').to_owned());
        }
    }
    bins
}

// ------------------------------------------------------------------ reading the template

fn resources(kind: &str) -> Vec<(&'static str, &'static Value)> {
    template()["Resources"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, r)| r["Type"] == kind)
        .map(|(name, r)| (name.as_str(), r))
        .collect()
}

fn resource(name: &str) -> &'static Value {
    template()["Resources"]
        .get(name)
        .unwrap_or_else(|| panic!("no resource {name}"))
}

fn functions() -> Vec<(&'static str, &'static Value)> {
    resources("AWS::Serverless::Function")
}

/// A function's property, else the one in `Globals: Function`.
fn function_property(function: &'static Value, key: &str) -> Option<&'static Value> {
    function["Properties"]
        .get(key)
        .or_else(|| template()["Globals"]["Function"].get(key))
}

/// The function built from `binary`.
fn function_of(binary: &str) -> (&'static str, &'static Value) {
    functions()
        .into_iter()
        .find(|(_, f)| f["Metadata"]["BuildProperties"]["Binary"] == binary)
        .unwrap_or_else(|| panic!("no function is built from binary {binary}"))
}

/// Every value `value` may take, through `Fn::If` branches; `AWS::NoValue` is none.
fn branches(value: &Value) -> Vec<&Value> {
    if let Some([_, yes, no]) = value
        .get("Fn::If")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
    {
        let mut all = branches(yes);
        all.extend(branches(no));
        return all;
    }
    if value.get("Ref").and_then(Value::as_str) == Some("AWS::NoValue") {
        return Vec::new();
    }
    vec![value]
}

/// The logical id `!Ref X` or `!GetAtt X.Attr` points at.
fn target_of(value: &Value) -> Option<&str> {
    value.get("Ref").and_then(Value::as_str).or_else(|| {
        value
            .get("Fn::GetAtt")
            .and_then(|a| a.get(0))
            .and_then(Value::as_str)
    })
}

/// Whether a role's trust policy names the principal a parameter gives (in some branch).
fn trusts_parameter(role: &Value, param: &str) -> bool {
    let trust = &role["Properties"]["AssumeRolePolicyDocument"]["Statement"][0];
    one_or_many(&trust["Principal"]["AWS"])
        .iter()
        .any(|p| p.get("Ref").and_then(Value::as_str) == Some(param))
}

/// A string or a list of strings (IAM's Action, Resource), every branch.
fn one_or_many(value: &Value) -> Vec<&Value> {
    branches(value)
        .into_iter()
        .flat_map(|v| match v.as_array() {
            Some(items) => items.iter().flat_map(branches).collect(),
            None => vec![v],
        })
        .collect()
}

/// Every statement of every identity policy in the template, with where it is.
fn identity_statements() -> Vec<(String, &'static Value)> {
    let mut found = Vec::new();
    let mut add = |place: String, document: &'static Value| {
        for list in branches(&document["Statement"]) {
            for statement in one_or_many(list) {
                found.push((place.clone(), statement));
            }
        }
    };
    for (name, role) in resources("AWS::IAM::Role") {
        for policy in role["Properties"]["Policies"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(branches)
        {
            add(
                format!("{name} {}", policy["PolicyName"]),
                &policy["PolicyDocument"],
            );
        }
    }
    for kind in ["AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"] {
        for (name, policy) in resources(kind) {
            add(name.to_owned(), &policy["Properties"]["PolicyDocument"]);
        }
    }
    found
}

// ------------------------------------------------------------------ evaluating it

/// A stack made from the template: parameter values, and intrinsic functions evaluated the
/// way CloudFormation would, with made-up physical names where AWS would choose them.
struct Stack {
    params: BTreeMap<String, String>,
}

impl Stack {
    fn new(overrides: &[(&str, &str)]) -> Stack {
        let mut params = BTreeMap::new();
        for (name, param) in template()["Parameters"].as_object().unwrap() {
            if let Some(default) = param.get("Default") {
                params.insert(name.clone(), scalar(default));
            }
        }
        params.insert("SourceSecretArns".into(), SOURCE_SECRET.into());
        for (name, value) in overrides {
            assert!(
                template()["Parameters"].get(*name).is_some(),
                "no parameter {name}"
            );
            params.insert((*name).into(), (*value).into());
        }
        Stack { params }
    }

    fn condition(&self, name: &str) -> bool {
        let condition = template()["Conditions"]
            .get(name)
            .unwrap_or_else(|| panic!("no condition {name}"));
        self.truth(condition)
    }

    fn truth(&self, value: &Value) -> bool {
        let (function, args) =
            single_key(value).unwrap_or_else(|| panic!("{value} is no condition"));
        match function {
            "Fn::Equals" => self.text(&args[0]) == self.text(&args[1]),
            "Fn::Not" => !self.truth(&args[0]),
            "Fn::And" => args.as_array().unwrap().iter().all(|c| self.truth(c)),
            "Fn::Or" => args.as_array().unwrap().iter().any(|c| self.truth(c)),
            "Condition" => self.condition(args.as_str().unwrap()),
            // A rule function: every member of the list equals the string.
            "Fn::EachMemberEquals" => {
                let expected = self.text(&args[1]);
                self.eval(&args[0])
                    .unwrap()
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|member| scalar(member) == expected)
            }
            other => panic!("condition function {other} is not evaluated here"),
        }
    }

    /// The value, or None for `AWS::NoValue`.
    fn eval(&self, value: &Value) -> Option<Value> {
        if let Some((function, args)) = single_key(value) {
            match function {
                "Ref" => return self.reference(args.as_str().unwrap()),
                "Fn::GetAtt" => {
                    let name = args[0].as_str().unwrap();
                    let attr = args[1].as_str().unwrap();
                    return Some(Value::String(self.attribute(name, attr)));
                }
                "Fn::Sub" => return Some(Value::String(self.sub(args))),
                "Fn::If" => {
                    let branch = if self.condition(args[0].as_str().unwrap()) {
                        &args[1]
                    } else {
                        &args[2]
                    };
                    return self.eval(branch);
                }
                "Fn::Join" => {
                    let parts = self.eval(&args[1]).unwrap();
                    let parts: Vec<String> = parts.as_array().unwrap().iter().map(scalar).collect();
                    return Some(Value::String(parts.join(args[0].as_str().unwrap())));
                }
                f if f.starts_with("Fn::") => panic!("{f} is not evaluated here"),
                _ => {}
            }
        }
        Some(match value {
            Value::Array(items) => {
                Value::Array(items.iter().filter_map(|v| self.eval(v)).collect())
            }
            Value::Object(map) => Value::Object(
                map.iter()
                    .filter_map(|(k, v)| Some((k.clone(), self.eval(v)?)))
                    .collect::<Map<_, _>>(),
            ),
            other => other.clone(),
        })
    }

    fn text(&self, value: &Value) -> String {
        scalar(&self.eval(value).unwrap_or_default())
    }

    fn reference(&self, name: &str) -> Option<Value> {
        let text = match name {
            "AWS::NoValue" => return None,
            "AWS::StackName" => STACK.to_owned(),
            "AWS::Region" => REGION.to_owned(),
            "AWS::AccountId" => ACCOUNT.to_owned(),
            "AWS::Partition" => "aws".to_owned(),
            "AWS::URLSuffix" => "amazonaws.com".to_owned(),
            _ => match template()["Parameters"].get(name) {
                Some(param) => {
                    let value = self.params.get(name).cloned().unwrap_or_default();
                    if param["Type"] == "CommaDelimitedList" {
                        return Some(value.split(',').map(|s| Value::from(s.trim())).collect());
                    }
                    value
                }
                None => self.physical_name(name),
            },
        };
        Some(Value::String(text))
    }

    /// What `!Ref` of a resource gives: its name (made up where AWS would choose it).
    fn physical_name(&self, logical: &str) -> String {
        let r = resource(logical);
        let p = &r["Properties"];
        let named = match r["Type"].as_str().unwrap() {
            "AWS::DynamoDB::Table" => p.get("TableName"),
            "AWS::Serverless::Function" => p.get("FunctionName"),
            "AWS::Glue::Database" => p["DatabaseInput"].get("Name"),
            "AWS::S3::Bucket" => p.get("BucketName"),
            "AWS::Logs::LogGroup" => p.get("LogGroupName"),
            "AWS::IAM::Role" => p.get("RoleName"),
            _ => None,
        };
        match named {
            Some(name) => self.text(name),
            None => format!("{STACK}-{}-1a2b3c", logical.to_lowercase()),
        }
    }

    fn attribute(&self, logical: &str, attr: &str) -> String {
        assert_eq!(attr, "Arn", "only Arn attributes are evaluated here");
        let name = self.physical_name(logical);
        match resource(logical)["Type"].as_str().unwrap() {
            "AWS::Serverless::Function" => function_arn(&name),
            "AWS::DynamoDB::Table" => format!("arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{name}"),
            "AWS::S3::Bucket" => format!("arn:aws:s3:::{name}"),
            "AWS::IAM::Role" => format!("arn:aws:iam::{ACCOUNT}:role/{name}"),
            "AWS::Logs::LogGroup" => format!("arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{name}:*"),
            "AWS::CloudWatch::Alarm" => {
                format!("arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:{name}")
            }
            other => panic!("the Arn of a {other} is not evaluated here"),
        }
    }

    fn sub(&self, args: &Value) -> String {
        let (text, vars) = match args {
            Value::String(text) => (text.as_str(), None),
            _ => (args[0].as_str().unwrap(), args.get(1)),
        };
        let mut out = String::new();
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let end = rest[start..].find('}').expect("unclosed ${") + start;
            let name = &rest[start + 2..end];
            let value = if let Some(literal) = name.strip_prefix('!') {
                format!("${{{literal}}}")
            } else if let Some(v) = vars.and_then(|v| v.get(name)) {
                self.text(v)
            } else if let Some((logical, attr)) = name.split_once('.') {
                self.attribute(logical, attr)
            } else {
                scalar(&self.reference(name).unwrap_or_default())
            };
            out.push_str(&value);
            rest = &rest[end + 1..];
        }
        out.push_str(rest);
        out
    }

    /// A function's environment: the global variables with its own over them.
    fn environment(&self, function: &Value) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        for variables in [
            &template()["Globals"]["Function"]["Environment"]["Variables"],
            &function["Properties"]["Environment"]["Variables"],
        ] {
            for (name, value) in variables.as_object().into_iter().flatten() {
                env.insert(name.clone(), self.text(value));
            }
        }
        env
    }

    /// Whether a role's policies allow `action` on `arn` (exact or `*`-suffixed patterns).
    fn role_allows(&self, role: &str, action: &str, arn: &str) -> bool {
        let policies = self
            .eval(&resource(role)["Properties"]["Policies"])
            .unwrap_or_default();
        policies
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|p| list(&p["PolicyDocument"]["Statement"]))
            .filter(|s| s["Effect"] == "Allow" && s.get("Condition").is_none())
            .any(|s| {
                list(&s["Action"]).iter().any(|a| a == action)
                    && list(&s["Resource"])
                        .iter()
                        .any(|r| arn_matches(&scalar(r), arn))
            })
    }
}

fn single_key(value: &Value) -> Option<(&str, &Value)> {
    let map = value.as_object()?;
    (map.len() == 1).then(|| map.iter().next().map(|(k, v)| (k.as_str(), v)))?
}

fn scalar(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        Value::Array(items) => items.iter().map(scalar).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

fn list(value: &Value) -> Vec<Value> {
    match value {
        Value::Array(items) => items.clone(),
        Value::Null => Vec::new(),
        other => vec![other.clone()],
    }
}

fn arn_matches(pattern: &str, arn: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => arn.starts_with(prefix),
        None => pattern == arn,
    }
}

fn function_arn(name: &str) -> String {
    format!("arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}")
}

// ------------------------------------------------------------------ functions

#[test]
fn every_function_is_a_cargo_lambda_binary_of_the_functions_package() {
    let manifest = std::env::var_os("SLUICE_FUNCTIONS_MANIFEST")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("functions/Cargo.toml"));
    let bins = cargo_bins(&std::fs::read_to_string(&manifest).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (the functions package is missing)",
            manifest.display()
        )
    }));
    assert!(!bins.is_empty(), "{} has no [[bin]]", manifest.display());
    let mut deployed = BTreeSet::new();
    for (name, function) in functions() {
        let metadata = &function["Metadata"];
        assert_eq!(
            metadata["BuildMethod"], "rust-cargolambda",
            "{name}: BuildMethod"
        );
        let binary = metadata["BuildProperties"]["Binary"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: no BuildProperties.Binary"));
        assert!(
            bins.contains(binary),
            "{name}: Binary {binary} is not a [[bin]] of functions/Cargo.toml ({bins:?})"
        );
        assert!(
            deployed.insert(binary),
            "{name}: binary {binary} deployed twice"
        );
        // One cargo-lambda build of the workspace serves every function.
        let property = |key| {
            function_property(function, key)
                .cloned()
                .unwrap_or_default()
        };
        assert_eq!(property("CodeUri"), "./", "{name}: CodeUri");
        assert_eq!(property("Handler"), "bootstrap", "{name}: Handler");
        assert_eq!(property("Runtime"), "provided.al2023", "{name}: Runtime");
        assert_eq!(
            property("Architectures"),
            serde_json::json!(["arm64"]),
            "{name}: Architectures"
        );
        assert_eq!(
            property("LoggingConfig")["LogFormat"],
            "JSON",
            "{name}: LogFormat"
        );
    }
    let bins: BTreeSet<&str> = bins.iter().map(String::as_str).collect();
    assert_eq!(
        deployed, bins,
        "every binary of the functions package is deployed"
    );
}

#[test]
fn the_environment_parses_with_the_functions_own_settings_parser() {
    let stack = Stack::new(&[]);
    let bucket = stack.physical_name(the_only("AWS::S3::Bucket"));
    for (name, function) in functions() {
        let env = stack.environment(function);
        let settings = DeploymentSettings::from_env(&env)
            .unwrap_or_else(|e| panic!("{name}: {e}\nenvironment: {env:#?}"));
        assert_eq!(
            settings.output,
            OutputLocation::S3 {
                bucket: bucket.clone(),
                prefix: stack.params["OutputPrefix"].clone()
            },
            "{name}: SLUICE_OUTPUT"
        );
        assert_eq!(
            settings.extract_function.as_deref(),
            Some(stack.physical_name(function_of("extract").0).as_str()),
            "{name}: SLUICE_EXTRACT_FUNCTION names the extract function"
        );
        assert_eq!(
            settings.finalize_function.as_deref(),
            Some(stack.physical_name(function_of("finalize").0).as_str()),
            "{name}: SLUICE_FINALIZE_FUNCTION names the finalize function"
        );
        assert_eq!(
            settings.glue_database.as_deref(),
            Some(
                stack
                    .physical_name(resources("AWS::Glue::Database")[0].0)
                    .as_str()
            ),
            "{name}: SLUICE_GLUE_DATABASE"
        );
        // Which is which is checked against the layouts sluice creates (the DynamoDB test).
        for table in [&settings.state_table, &settings.config_table] {
            assert!(
                resources("AWS::DynamoDB::Table")
                    .iter()
                    .any(|(logical, _)| &stack.physical_name(logical) == table),
                "{name}: table {table} is not in the template"
            );
        }
        assert_eq!(
            settings.snowflake, None,
            "{name}: no Snowflake without an account"
        );
        assert_eq!(
            settings.run_retention,
            sluice_core::deploy::DEFAULT_RUN_RETENTION,
            "{name}: SLUICE_RUN_RETENTION defaults to the code's (and the CLI's) retention"
        );
    }
    // RunRetention takes whole days within the functions' own bounds, so a value they would
    // refuse at every start is refused at deploy.
    let params = &template()["Parameters"];
    assert_eq!(
        params["RunRetention"]["AllowedPattern"],
        "^([2-9]|[1-9][0-9]{1,2}|[1-2][0-9]{3}|3[0-5][0-9]{2}|36[0-4][0-9]|3650)d$",
        "RunRetention's AllowedPattern"
    );
    let day = 24 * 3600;
    assert_eq!(
        sluice_core::deploy::RUN_RETENTION_RANGE,
        (
            std::time::Duration::from_secs(2 * day),
            std::time::Duration::from_secs(3650 * day)
        ),
        "the pattern's bounds are the functions' RUN_RETENTION_RANGE"
    );
    // One batch limit: the template's default and bounds are the ones the external
    // functions' MAX_BATCH_ROWS is generated from.
    let max_batch_rows = &template()["Parameters"]["MaxBatchRows"];
    assert_eq!(
        (
            max_batch_rows["Default"].as_u64(),
            max_batch_rows["MinValue"].as_u64(),
            max_batch_rows["MaxValue"].as_u64()
        ),
        (
            Some(sluice_core::deploy::DEFAULT_MAX_BATCH_ROWS as u64),
            Some(u64::from(sluice_core::deploy::MAX_BATCH_ROWS_RANGE.0)),
            Some(u64::from(sluice_core::deploy::MAX_BATCH_ROWS_RANGE.1))
        ),
        "MaxBatchRows"
    );
    let trigger = function_of("trigger").1;
    assert!(
        stack
            .environment(trigger)
            .contains_key("SLUICE_SCHEDULE_LOOKBACK"),
        "the trigger gets SLUICE_SCHEDULE_LOOKBACK"
    );

    // Every tunable parameter reaches every function.
    let stack = Stack::new(&[
        ("LeaseTtl", "3h"),
        ("RunRetention", "30d"),
        ("ScheduleLookback", "90m"),
        ("ParquetCompression", "snappy"),
        ("RowGroupMb", "64"),
        ("FileMb", "128"),
        ("PartMb", "16"),
        ("MaxBatchRows", "50"),
        ("ChunkTimeout", "10m"),
        ("PlanTimeout", "2m"),
        ("SnowflakeAccount", "myorg-myaccount"),
        ("SnowflakeUser", "SLUICE"),
        (
            "SnowflakePrivateKeySecretArn",
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:sluice/snowflake-AbCdEf",
        ),
        ("SnowflakeDatabase", "ANALYTICS"),
        ("SnowflakeWarehouse", "LOAD_WH"),
        ("SnowflakeRole", "SLUICE_ROLE"),
    ]);
    for (name, function) in functions() {
        let s = DeploymentSettings::from_env(&stack.environment(function)).unwrap();
        assert_eq!(s.lease_ttl.as_secs(), 3 * 3600, "{name}: SLUICE_LEASE_TTL");
        // The trigger leases for it and the planner in extract renews for it: both read it.
        assert_eq!(s.plan_timeout.as_secs(), 120, "{name}: SLUICE_PLAN_TIMEOUT");
        assert_eq!(
            s.run_retention.as_secs(),
            30 * 86_400,
            "{name}: SLUICE_RUN_RETENTION"
        );
        assert_eq!(
            s.compression,
            Compression::Snappy,
            "{name}: SLUICE_PARQUET_COMPRESSION"
        );
        assert_eq!(
            (s.row_group_mb, s.file_mb, s.part_mb),
            (64, 128, 16),
            "{name}: sizes"
        );
        assert_eq!(s.max_batch_rows, 50, "{name}: SLUICE_MAX_BATCH_ROWS");
        let snowflake = s
            .snowflake
            .unwrap_or_else(|| panic!("{name}: no Snowflake settings"));
        assert_eq!(
            (
                snowflake.account.as_str(),
                snowflake.user.as_str(),
                snowflake.database.as_str(),
                snowflake.warehouse.as_deref(),
                snowflake.role.as_deref()
            ),
            (
                "myorg-myaccount",
                "SLUICE",
                "ANALYTICS",
                Some("LOAD_WH"),
                Some("SLUICE_ROLE")
            ),
            "{name}: Snowflake settings"
        );
        assert!(
            snowflake
                .private_key_secret
                .ends_with("sluice/snowflake-AbCdEf")
        );
    }
    let s = DeploymentSettings::from_env(&stack.environment(trigger)).unwrap();
    assert_eq!(
        s.schedule_lookback.as_secs(),
        90 * 60,
        "SLUICE_SCHEDULE_LOOKBACK"
    );
    let s = DeploymentSettings::from_env(&stack.environment(function_of("extract").1)).unwrap();
    assert_eq!(
        s.chunk_timeout.map(|d| d.as_secs()),
        Some(600),
        "SLUICE_CHUNK_TIMEOUT"
    );
}

#[test]
fn an_empty_glue_database_name_deploys_without_the_catalog() {
    let glue_actions = [
        "glue:GetTable",
        "glue:CreateTable",
        "glue:UpdateTable",
        "glue:BatchCreatePartition",
    ];
    let (database, _) = resources("AWS::Glue::Database")[0];
    let finalize_role = target_of(function_property(function_of("finalize").1, "Role").unwrap())
        .expect("finalize has its own role");

    // By default finalize may register tables and partitions in the stack's database.
    let stack = Stack::new(&[]);
    let name = stack.physical_name(database);
    let table_arn = format!("arn:aws:glue:{REGION}:{ACCOUNT}:table/{name}/shop_public_orders");
    for action in glue_actions {
        assert!(
            stack.role_allows(finalize_role, action, &table_arn),
            "finalize may {action} on {table_arn}"
        );
    }

    // Without a name: no database, no SLUICE_GLUE_DATABASE (so no catalog step), no Glue rights.
    let stack = Stack::new(&[("GlueDatabaseName", "")]);
    let condition = resource(database)["Condition"].as_str().unwrap();
    assert!(!stack.condition(condition), "the database is not created");
    for (name, function) in functions() {
        let settings = DeploymentSettings::from_env(&stack.environment(function))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(settings.glue_database, None, "{name}: SLUICE_GLUE_DATABASE");
    }
    // The catalog's ARN names no database, so it would still match a Glue statement left
    // in without its condition.
    let catalog_arn = format!("arn:aws:glue:{REGION}:{ACCOUNT}:catalog");
    for (role, _) in resources("AWS::IAM::Role") {
        for action in glue_actions {
            for arn in [&table_arn, &catalog_arn] {
                assert!(
                    !stack.role_allows(role, action, arn),
                    "{role} may still {action} on {arn}"
                );
            }
        }
    }
}

/// The logical id of the template's only resource of `kind`.
fn the_only(kind: &str) -> &'static str {
    let found = resources(kind);
    assert_eq!(found.len(), 1, "exactly one {kind}");
    found[0].0
}

/// The table the functions are told holds `kind` (SLUICE_STATE_TABLE / SLUICE_CONFIG_TABLE).
fn table_of_kind(kind: TableKind) -> Option<&'static str> {
    let variable = match kind {
        TableKind::State => "SLUICE_STATE_TABLE",
        TableKind::Config => "SLUICE_CONFIG_TABLE",
    };
    target_of(&template()["Globals"]["Function"]["Environment"]["Variables"][variable])
}

#[test]
fn async_invocations_retry_twice_then_reach_finalize_and_roles_may_invoke_what_they_must() {
    let stack = Stack::new(&[]);
    let finalize = function_arn(&stack.physical_name(function_of("finalize").0));
    let extract = function_arn(&stack.physical_name(function_of("extract").0));
    for binary in ["extract", "finalize"] {
        let (name, function) = function_of(binary);
        let config = stack
            .eval(&function["Properties"]["EventInvokeConfig"])
            .unwrap_or_default();
        assert_eq!(
            config["MaximumRetryAttempts"], 2,
            "{name}: MaximumRetryAttempts"
        );
        let on_failure = &config["DestinationConfig"]["OnFailure"];
        assert_eq!(on_failure["Type"], "Lambda", "{name}: OnFailure type");
        assert_eq!(
            on_failure["Destination"],
            finalize.as_str(),
            "{name}: OnFailure goes to finalize"
        );
    }
    // Who invokes whom, with the role's own permission (a destination too is invoked with the
    // failing function's role): trigger hands each run to extract to plan; the planner starts
    // the first chunks (or finalize, for a run without chunks), each chunk the next of its
    // chain, the last chunk finalize (functions/src/flow.rs).
    for (binary, target) in [
        ("trigger", &extract),
        ("extract", &extract),
        ("extract", &finalize),
        ("finalize", &finalize),
    ] {
        let (name, function) = function_of(binary);
        let role = target_of(&function["Properties"]["Role"]).unwrap();
        assert!(
            stack.role_allows(role, "lambda:InvokeFunction", target),
            "{name}: its role {role} may not invoke {target}"
        );
    }
}

/// Who reads which secret (functions/src/flow.rs): extract connects to the sources (it
/// plans and extracts), finalize loads into Snowflake, and the trigger reads both for
/// `sluice.check_source` (functions/src/check.rs), which checks a source's catalog and
/// Snowflake's; nobody else reads either.
#[test]
fn each_role_reads_exactly_the_secrets_its_function_needs() {
    let key = "arn:aws:secretsmanager:us-east-1:123456789012:secret:sluice/snowflake-AbCdEf";
    let stack = Stack::new(&[
        ("SnowflakeAccount", "myorg-myaccount"),
        ("SnowflakeUser", "SLUICE"),
        ("SnowflakePrivateKeySecretArn", key),
    ]);
    for (binary, reads_sources, reads_key) in [
        ("trigger", true, true),
        ("extract", true, false),
        ("finalize", false, true),
    ] {
        let (name, function) = function_of(binary);
        let role = target_of(&function["Properties"]["Role"]).unwrap();
        let read = |arn| stack.role_allows(role, "secretsmanager:GetSecretValue", arn);
        assert_eq!(read(SOURCE_SECRET), reads_sources, "{name}: source secret");
        assert_eq!(read(key), reads_key, "{name}: Snowflake key");
    }
    // Without Snowflake, nobody reads a key secret.
    let stack = Stack::new(&[]);
    let finalize = target_of(&function_of("finalize").1["Properties"]["Role"]).unwrap();
    let policies = stack
        .eval(&resource(finalize)["Properties"]["Policies"])
        .unwrap();
    // Finalize reads no source secret either, so no statement of its may read any secret.
    let reads_secrets = policies
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|p| list(&p["PolicyDocument"]["Statement"]))
        .any(|s| {
            list(&s["Action"])
                .iter()
                .any(|a| a == "secretsmanager:GetSecretValue")
        });
    assert!(
        !reads_secrets,
        "{finalize}: reads a secret although there is no Snowflake key"
    );
}

// ------------------------------------------------------------------ API

#[test]
fn the_api_takes_iam_auth_from_snowflakes_role_only_on_the_routes_snowflake_calls() {
    for kind in [
        "AWS::ApiGateway::RestApi",
        "AWS::Serverless::HttpApi",
        "AWS::ApiGatewayV2::Api",
    ] {
        assert!(
            resources(kind).is_empty(),
            "a {kind} would bypass the checked API"
        );
    }
    let apis = resources("AWS::Serverless::Api");
    assert!(!apis.is_empty(), "no API");
    for (name, api) in &apis {
        let auth = &api["Properties"]["Auth"];
        assert_eq!(
            auth["DefaultAuthorizer"], "AWS_IAM",
            "{name}: DefaultAuthorizer"
        );
        assert_eq!(
            auth["InvokeRole"], "NONE",
            "{name}: the caller's credentials must not invoke the function"
        );
        let statements = auth["ResourcePolicy"]["CustomStatements"]
            .as_array()
            .unwrap_or_else(|| panic!("{name}: no resource policy"));
        let allowed: Vec<_> = statements
            .iter()
            .filter(|s| s["Effect"] == "Allow")
            .collect();
        assert!(
            !allowed.is_empty(),
            "{name}: the resource policy allows nobody"
        );
        let mut role = None;
        for s in allowed {
            let principal = target_of(&s["Principal"]["AWS"]).unwrap_or_else(|| {
                panic!(
                    "{name}: Allow to {} (only a role of this template may call)",
                    s["Principal"]
                )
            });
            assert_eq!(
                resource(principal)["Type"],
                "AWS::IAM::Role",
                "{name}: principal {principal}"
            );
            role.get_or_insert(principal);
            assert_eq!(role, Some(principal), "{name}: one role may call");
        }
        let role = role.unwrap();
        assert!(
            statements.iter().any(|s| s["Effect"] == "Deny"
                && s["Principal"] == "*"
                && target_of(&s["Condition"]["ArnNotEquals"]["aws:PrincipalArn"]) == Some(role)),
            "{name}: no Deny for every principal but {role}"
        );
        // That role is the one Snowflake's API integration assumes.
        assert!(
            trusts_parameter(resource(role), "SnowflakeApiUserArn"),
            "{role} trusts API_AWS_IAM_USER_ARN"
        );
    }

    // The routes: every external function `sluice snowflake sql` creates, and the polling GET
    // of sluice.ingest (Snowflake's async protocol).
    let api_url = "https://abc123.execute-api.us-east-1.amazonaws.com/prod/";
    let config = sluice_core::Config::from_yaml(
        &std::fs::read_to_string(workspace().join("infra/config/shop.yaml")).unwrap(),
        "shop.yaml",
    )
    .unwrap();
    let setup = setup_sql(
        &config,
        &SetupOptions {
            database: "SLUICE".into(),
            role: "SLUICE".into(),
            user: "SLUICE".into(),
            warehouse: "SLUICE_WH".into(),
            max_batch_rows: sluice_core::deploy::DEFAULT_MAX_BATCH_ROWS,
            bucket: "lake".into(),
            prefix: Some("raw".into()),
            storage_role_arn: "arn:aws:iam::123456789012:role/s".into(),
            api_role_arn: "arn:aws:iam::123456789012:role/a".into(),
            api_url: api_url.into(),
        },
    )
    .unwrap();
    let mut needed: BTreeSet<(String, String)> = setup
        .functions
        .iter()
        .map(|statement| {
            let url = statement
                .split(" AS '")
                .nth(1)
                .unwrap()
                .trim_end_matches('\'');
            let path = url.strip_prefix(api_url.trim_end_matches('/')).unwrap();
            ("post".to_owned(), path.to_owned())
        })
        .collect();
    assert!(
        needed.contains(&("post".into(), "/ingest".into())),
        "{needed:?}"
    );
    needed.insert(("get".into(), "/ingest".into()));

    let stack = Stack::new(&[]);
    let mut routed = BTreeSet::new();
    for (name, function) in functions() {
        let events = function["Properties"]["Events"]
            .as_object()
            .into_iter()
            .flatten();
        let mut has_api = false;
        for (event, e) in events.filter(|(_, e)| e["Type"] == "Api") {
            has_api = true;
            let p = &e["Properties"];
            let api = target_of(&p["RestApiId"]).unwrap_or_else(|| {
                panic!("{name} {event}: no RestApiId (the implicit API has no IAM auth)")
            });
            assert!(
                apis.iter().any(|(a, _)| *a == api),
                "{name} {event}: {api} is not a checked API"
            );
            assert!(
                p.get("Auth").is_none_or(|a| a["Authorizer"] == "AWS_IAM"),
                "{name} {event}: overrides the API's IAM auth"
            );
            routed.insert((
                p["Method"].as_str().unwrap().to_lowercase(),
                p["Path"].as_str().unwrap().to_owned(),
            ));
        }
        if has_api {
            // API Gateway gives up after 29 s: the function must time out first.
            let timeout = function_property(function, "Timeout").unwrap();
            assert!(
                stack.text(timeout).parse::<u32>().unwrap() < 29,
                "{name}: Timeout"
            );
            if let Some(param) = timeout.get("Ref").and_then(Value::as_str) {
                let max = &template()["Parameters"][param]["MaxValue"];
                assert!(
                    max.as_u64().is_some_and(|m| m < 29),
                    "{name}: parameter {param} allows a timeout of 29 s or more"
                );
            }
        }
    }
    let missing: Vec<_> = needed.difference(&routed).collect();
    assert!(
        missing.is_empty(),
        "routes Snowflake calls and the API lacks: {missing:?}"
    );
}

// ------------------------------------------------------------------ IAM

#[test]
fn no_iam_statement_allows_every_resource_except_where_aws_requires_it() {
    // Functions use the roles defined here, so every statement they get is checked below:
    // no SAM policy templates or managed policies with their own `*`.
    for (name, function) in functions() {
        assert!(
            function["Properties"].get("Policies").is_none(),
            "{name}: Policies (give it a Role of this template)"
        );
        let role =
            target_of(&function["Properties"]["Role"]).unwrap_or_else(|| panic!("{name}: no Role"));
        assert_eq!(resource(role)["Type"], "AWS::IAM::Role", "{name}: Role");
    }
    for (name, role) in resources("AWS::IAM::Role") {
        assert!(
            role["Properties"].get("ManagedPolicyArns").is_none(),
            "{name}: managed policies are not reviewed here"
        );
    }
    let statements = identity_statements();
    assert!(
        statements.len() > 10,
        "found only {} statements",
        statements.len()
    );
    for (place, statement) in statements {
        if statement["Effect"] != "Allow" {
            continue;
        }
        assert!(
            statement.get("NotResource").is_none() && statement.get("NotAction").is_none(),
            "{place}: NotResource/NotAction in an Allow"
        );
        let actions: Vec<&str> = one_or_many(&statement["Action"])
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        for action in &actions {
            assert!(!action.ends_with('*'), "{place}: wildcard action {action}");
        }
        let star = one_or_many(&statement["Resource"])
            .iter()
            .any(|r| *r == "*");
        if star {
            let not_allowed: Vec<_> = actions
                .iter()
                .filter(|a| !STAR_RESOURCE_ACTIONS.contains(a))
                .collect();
            assert!(
                not_allowed.is_empty(),
                "{place}: Resource '*' for {not_allowed:?}"
            );
        }
    }
}

// ------------------------------------------------------------------ storage

#[test]
fn the_bucket_is_private_encrypted_tls_only_and_drops_incomplete_uploads() {
    let buckets = resources("AWS::S3::Bucket");
    assert!(!buckets.is_empty());
    for (name, bucket) in buckets {
        let p = &bucket["Properties"];
        for flag in [
            "BlockPublicAcls",
            "BlockPublicPolicy",
            "IgnorePublicAcls",
            "RestrictPublicBuckets",
        ] {
            assert_eq!(
                p["PublicAccessBlockConfiguration"][flag], true,
                "{name}: {flag}"
            );
        }
        let rules = p["BucketEncryption"]["ServerSideEncryptionConfiguration"]
            .as_array()
            .unwrap_or_else(|| panic!("{name}: no encryption"));
        assert!(
            rules
                .iter()
                .any(|r| ["AES256", "aws:kms", "aws:kms:dsse"].contains(
                    &r["ServerSideEncryptionByDefault"]["SSEAlgorithm"]
                        .as_str()
                        .unwrap_or_default()
                )),
            "{name}: encryption"
        );
        let lifecycle = p["LifecycleConfiguration"]["Rules"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(branches);
        let lifecycle: Vec<_> = lifecycle.into_iter().collect();
        assert!(
            lifecycle.iter().any(|r| r["Status"] == "Enabled"
                && r["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"].is_number()),
            "{name}: no rule aborting incomplete multipart uploads"
        );
        assert!(
            lifecycle.iter().any(|r| r["Status"] == "Enabled"
                && r["Prefix"].to_string().contains("/_keysets/")
                && r["ExpirationInDays"].is_number()),
            "{name}: no rule expiring key sets"
        );
        let stack = Stack::new(&[]);
        let arn = stack.attribute(name, "Arn");
        let denies_plain_http =
            resources("AWS::S3::BucketPolicy")
                .into_iter()
                .any(|(_, policy)| {
                    let policy = stack.eval(&policy["Properties"]).unwrap();
                    policy["Bucket"] == stack.physical_name(name)
                        && list(&policy["PolicyDocument"]["Statement"])
                            .iter()
                            .any(|s| {
                                let resources = list(&s["Resource"]);
                                s["Effect"] == "Deny"
                                    && s["Principal"] == "*"
                                    && list(&s["Action"]).iter().any(|a| a == "s3:*")
                                    && s["Condition"]["Bool"]["aws:SecureTransport"] == "false"
                                    && resources.iter().any(|r| *r == arn)
                                    && resources.iter().any(|r| *r == format!("{arn}/*"))
                            })
                });
        assert!(
            denies_plain_http,
            "{name}: no policy denying requests without TLS on the bucket and its objects"
        );
    }
}

#[tokio::test]
async fn dynamodb_tables_are_on_demand_recoverable_encrypted_and_keyed_as_the_code_creates_them() {
    let tables = resources("AWS::DynamoDB::Table");
    assert_eq!(tables.len(), 2, "the state and config tables");
    for (name, table) in &tables {
        let p = &table["Properties"];
        assert_eq!(p["BillingMode"], "PAY_PER_REQUEST", "{name}: BillingMode");
        assert_eq!(
            p["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"], true,
            "{name}: PITR"
        );
        assert_eq!(p["SSESpecification"]["SSEEnabled"], true, "{name}: SSE");
    }

    // The layouts sluice's own code creates, described back by a DynamoDB (moto).
    let sdk = MotoServer::shared().sdk_config().await;
    let client = ddb::Client::new(&sdk);
    for kind in [TableKind::State, TableKind::Config] {
        let logical = table_of_kind(kind)
            .unwrap_or_else(|| panic!("no {kind:?} table in the functions' environment"));
        let table_name = unique_name("template");
        assert!(ddb::create_table(&client, &table_name, kind).await.unwrap());
        let made = client
            .describe_table()
            .table_name(&table_name)
            .send()
            .await
            .unwrap()
            .table
            .unwrap();
        let key_schema =
            |elements: &[aws_sdk_dynamodb::types::KeySchemaElement]| -> Vec<(String, String)> {
                elements
                    .iter()
                    .map(|k| {
                        (
                            k.attribute_name().to_owned(),
                            k.key_type().as_str().to_owned(),
                        )
                    })
                    .collect()
            };
        let expected_keys = key_schema(made.key_schema());
        let expected_attributes: BTreeSet<(String, String)> = made
            .attribute_definitions()
            .iter()
            .map(|a| {
                (
                    a.attribute_name().to_owned(),
                    a.attribute_type().as_str().to_owned(),
                )
            })
            .collect();
        let expected_indexes: BTreeMap<String, (Vec<(String, String)>, String)> = made
            .global_secondary_indexes()
            .iter()
            .map(|i| {
                let projection = i
                    .projection()
                    .and_then(|p| p.projection_type())
                    .map(|t| t.as_str().to_owned())
                    .unwrap_or_default();
                (
                    i.index_name().unwrap().to_owned(),
                    (key_schema(i.key_schema()), projection),
                )
            })
            .collect();

        let p = &resource(logical)["Properties"];
        let pairs = |list: &Value, a: &str, b: &str| -> Vec<(String, String)> {
            list.as_array()
                .into_iter()
                .flatten()
                .map(|e| (scalar(&e[a]), scalar(&e[b])))
                .collect()
        };
        assert_eq!(
            pairs(&p["KeySchema"], "AttributeName", "KeyType"),
            expected_keys,
            "{logical}: KeySchema"
        );
        assert_eq!(
            pairs(&p["AttributeDefinitions"], "AttributeName", "AttributeType")
                .into_iter()
                .collect::<BTreeSet<_>>(),
            expected_attributes,
            "{logical}: AttributeDefinitions"
        );
        let indexes: BTreeMap<String, (Vec<(String, String)>, String)> =
            p["GlobalSecondaryIndexes"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|i| {
                    (
                        scalar(&i["IndexName"]),
                        (
                            pairs(&i["KeySchema"], "AttributeName", "KeyType"),
                            scalar(&i["Projection"]["ProjectionType"]),
                        ),
                    )
                })
                .collect();
        assert_eq!(
            indexes, expected_indexes,
            "{logical}: GlobalSecondaryIndexes"
        );
    }
    // External-function batch items, and run and chunk items, carry `expires_at` (epoch
    // seconds) for DynamoDB's TTL to remove them (crates/sluice/src/state/dynamo.rs; its
    // retention test reads the items back).
    let state = &resource(table_of_kind(TableKind::State).unwrap())["Properties"];
    assert_eq!(
        state["TimeToLiveSpecification"],
        serde_json::json!({"AttributeName": "expires_at", "Enabled": true}),
        "the state table's TTL"
    );
}

// ------------------------------------------------------------------ Snowflake's roles

#[test]
fn snowflakes_roles_trust_its_users_with_the_external_ids_and_read_only_the_prefix() {
    for (params, principal, external_id) in [
        (
            ("SnowflakeApiUserArn", "SnowflakeApiExternalId"),
            "arn:aws:iam::999999999999:user/abc-s-v2",
            "ACME_SFCRole=2_abc=",
        ),
        (
            ("SnowflakeStorageUserArn", "SnowflakeStorageExternalId"),
            "arn:aws:iam::999999999999:user/def-s-v2",
            "ACME_SFCRole=2_def=",
        ),
    ] {
        let role = resources("AWS::IAM::Role")
            .into_iter()
            .find(|(_, r)| trusts_parameter(r, params.0))
            .unwrap_or_else(|| panic!("no role trusts {}", params.0))
            .0;
        let trust = |stack: &Stack| {
            let doc = stack
                .eval(&resource(role)["Properties"]["AssumeRolePolicyDocument"])
                .unwrap();
            let s = &doc["Statement"][0];
            assert_eq!(s["Action"], "sts:AssumeRole", "{role}");
            (
                scalar(&s["Principal"]["AWS"]),
                scalar(&s["Condition"]["StringEquals"]["sts:ExternalId"]),
            )
        };
        let configured = Stack::new(&[(params.0, principal), (params.1, external_id)]);
        assert_eq!(
            trust(&configured),
            (principal.to_owned(), external_id.to_owned()),
            "{role}: trust once configured"
        );
        // Before the integration exists: only this account, nobody outside.
        let (before, _) = trust(&Stack::new(&[]));
        assert_eq!(
            before,
            format!("arn:aws:iam::{ACCOUNT}:root"),
            "{role}: trust before the integration exists"
        );
    }

    let stack = Stack::new(&[("OutputPrefix", "lake/raw")]);
    let storage = resources("AWS::IAM::Role")
        .into_iter()
        .find(|(_, r)| r.to_string().contains("SnowflakeStorageUserArn"))
        .unwrap()
        .0;
    let bucket = stack.physical_name(the_only("AWS::S3::Bucket"));
    assert!(stack.role_allows(
        storage,
        "s3:GetObject",
        &format!("arn:aws:s3:::{bucket}/lake/raw/x.parquet")
    ));
    assert!(
        !stack.role_allows(
            storage,
            "s3:GetObject",
            &format!("arn:aws:s3:::{bucket}/other/x.parquet")
        ),
        "{storage} reads outside the prefix"
    );
    assert!(
        !stack.role_allows(
            storage,
            "s3:PutObject",
            &format!("arn:aws:s3:::{bucket}/lake/raw/x.parquet")
        ),
        "{storage} writes"
    );
}

#[test]
fn outputs_carry_what_the_snowflake_setup_needs() {
    let outputs = template()["Outputs"].as_object().unwrap();
    let stack = Stack::new(&[]);
    let values: Vec<String> = outputs.values().map(|o| stack.text(&o["Value"])).collect();
    let has = |what: &str, value: &str| {
        assert!(
            values.iter().any(|v| v == value),
            "no output is {what} ({value})"
        )
    };
    let api = the_only("AWS::Serverless::Api");
    has(
        "the API URL",
        &format!(
            "https://{}.execute-api.{REGION}.amazonaws.com/{}/",
            stack.physical_name(api),
            stack.params["ApiStageName"]
        ),
    );
    for (name, _) in resources("AWS::IAM::Role") {
        has(&format!("the ARN of {name}"), &stack.attribute(name, "Arn"));
    }
    has(
        "the bucket",
        &stack.physical_name(the_only("AWS::S3::Bucket")),
    );
    for (name, _) in resources("AWS::DynamoDB::Table")
        .into_iter()
        .chain(functions())
    {
        has(&format!("the name of {name}"), &stack.physical_name(name));
    }
    // The set-up command creates the external functions with the trigger's own batch limit,
    // and for the deployment's user and warehouse.
    let stack = Stack::new(&[
        ("MaxBatchRows", "50"),
        ("SnowflakeUser", "LOADER"),
        ("SnowflakeWarehouse", "LOAD_WH"),
    ]);
    let command = stack.text(&template()["Outputs"]["SnowflakeSetupCommand"]["Value"]);
    for expected in [
        "--max-batch-rows 50",
        "--user LOADER",
        "--warehouse LOAD_WH",
    ] {
        assert!(command.contains(expected), "{expected} not in {command}");
    }
    let defaults = Stack::new(&[]).text(&template()["Outputs"]["SnowflakeSetupCommand"]["Value"]);
    assert!(
        defaults.contains(&format!(
            "--user SLUICE --warehouse SLUICE_WH --max-batch-rows {}",
            sluice_core::deploy::DEFAULT_MAX_BATCH_ROWS
        )),
        "{defaults}"
    );
}

impl Stack {
    /// What the template's `Rules` refuse for these parameters: the descriptions of the failed
    /// assertions of every rule whose condition holds (CloudFormation's evaluation, before any
    /// resource changes).
    fn refusals(&self) -> Vec<String> {
        let mut refused = Vec::new();
        for (_, rule) in template()["Rules"].as_object().unwrap() {
            if let Some(condition) = rule.get("RuleCondition")
                && !self.truth(condition)
            {
                continue;
            }
            for assertion in rule["Assertions"].as_array().unwrap() {
                if !self.truth(&assertion["Assert"]) {
                    refused.push(assertion["AssertDescription"].as_str().unwrap().to_owned());
                }
            }
        }
        refused
    }
}

/// Settings that only work together are refused at deploy time with a message naming the
/// parameter, and every combination the other tests deploy passes.
#[test]
fn rules_refuse_settings_that_would_fail_every_start() {
    let key = "arn:aws:secretsmanager:us-east-1:123456789012:secret:sluice/snowflake-AbCdEf";
    let snowflake = [
        ("SnowflakeAccount", "myorg-myaccount"),
        ("SnowflakeUser", "SLUICE"),
        ("SnowflakePrivateKeySecretArn", key),
    ];
    let fine: Vec<Vec<(&str, &str)>> = vec![
        vec![],
        snowflake.to_vec(),
        vec![
            ("SubnetIds", "subnet-1,subnet-2"),
            ("SecurityGroupIds", "sg-1"),
        ],
        [
            snowflake.to_vec(),
            vec![
                ("SnowflakeApiUserArn", "arn:aws:iam::999999999999:user/x"),
                ("SnowflakeApiExternalId", "ABC_SFCRole=1_x"),
            ],
        ]
        .concat(),
    ];
    for params in fine {
        assert_eq!(
            Stack::new(&params).refusals(),
            Vec::<String>::new(),
            "{params:?}"
        );
    }
    let refused = |params: &[(&str, &str)], parameter: &str| {
        let refusals = Stack::new(params).refusals();
        assert!(
            refusals
                .iter()
                .any(|r| r.starts_with(parameter) || r.contains(&format!(" {parameter} "))),
            "{params:?}: expected a refusal naming {parameter}, got {refusals:?}"
        );
    };
    refused(&[("SubnetIds", "subnet-1")], "SecurityGroupIds");
    refused(&[("SecurityGroupIds", "sg-1")], "SecurityGroupIds");
    refused(&[("SnowflakeAccount", "myorg-myaccount")], "SnowflakeUser");
    refused(
        &[
            ("SnowflakeAccount", "myorg-myaccount"),
            ("SnowflakeUser", "SLUICE"),
        ],
        "SnowflakePrivateKeySecretArn",
    );
    refused(
        &[snowflake.to_vec(), vec![("SnowflakeDatabase", "")]].concat(),
        "SnowflakeDatabase",
    );
    refused(&[("SnowflakeUser", "SLUICE")], "SnowflakeAccount");
    refused(
        &[("SnowflakeApiUserArn", "arn:aws:iam::999999999999:user/x")],
        "SnowflakeApiExternalId",
    );
    refused(
        &[(
            "SnowflakeStorageUserArn",
            "arn:aws:iam::999999999999:user/x",
        )],
        "SnowflakeStorageExternalId",
    );
}

/// The failed-runs alarm counts exactly the lines whose message is "run failed" (the engine's
/// `fail_run`, logged as the JSON field `message`), not every line holding those words.
#[test]
fn the_failed_runs_alarm_counts_the_run_failed_message_only() {
    let filters = resources("AWS::Logs::MetricFilter");
    assert_eq!(filters.len(), 3, "one filter per function's log group");
    for (name, filter) in filters {
        assert_eq!(
            filter["Properties"]["FilterPattern"], "{ $.message = \"run failed\" }",
            "{name}"
        );
    }
    let cleanup =
        std::fs::read_to_string(workspace().join("crates/sluice/src/pipeline/cleanup.rs")).unwrap();
    assert!(
        cleanup.contains("\"run failed\");"),
        "fail_run no longer logs the message \"run failed\" the alarm counts"
    );
}

/// `ExtractReservedConcurrency` reserves (and caps) the extract function's concurrency when
/// set; by default nothing is reserved, and no other function ever is.
#[test]
fn extract_reserved_concurrency_is_set_only_when_given() {
    let (extract, function) = function_of("extract");
    let reserved = |stack: &Stack| {
        stack.eval(&function["Properties"]).unwrap_or_default()["ReservedConcurrentExecutions"]
            .clone()
    };
    assert_eq!(
        reserved(&Stack::new(&[])),
        Value::Null,
        "{extract}: default"
    );
    let stack = Stack::new(&[("ExtractReservedConcurrency", "25")]);
    assert_eq!(scalar(&reserved(&stack)), "25", "{extract}");
    let pattern = template()["Parameters"]["ExtractReservedConcurrency"]["AllowedPattern"]
        .as_str()
        .unwrap();
    assert_eq!(pattern, "^([1-9][0-9]*)?$", "0 would stop every extract");
    for (name, other) in functions() {
        if name != extract {
            assert!(
                function_property(other, "ReservedConcurrentExecutions").is_none(),
                "{name}"
            );
        }
    }
}

/// cfn-lint (the linter `sam validate --lint` runs) finds nothing in the template, the alarms
/// and the dashboard included.
#[test]
fn the_template_lints_clean() {
    let path = std::env::var_os("SLUICE_TEMPLATE")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("template.yaml"));
    let lint = workspace().join("target/tools/cfn-lint/bin/cfn-lint");
    let out = Command::new(&lint).arg(&path).output().unwrap_or_else(|e| {
        panic!(
            "cannot run {} ({e}); run scripts/setup to install cfn-lint",
            lint.display()
        )
    });
    assert!(
        out.status.success(),
        "cfn-lint {}:\n{}{}",
        path.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The metric names a dashboard widget reads: each SEARCH expression's `MetricName="…"` and
/// each plain metric's second member, with the namespace and dimension the search names.
fn dashboard_metrics(body: &Value) -> Vec<(String, String, Option<String>)> {
    let mut found = Vec::new();
    for widget in body["widgets"].as_array().unwrap() {
        for line in widget["properties"]["metrics"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let line = line.as_array().unwrap();
            if let Some(expression) = line[0].get("expression").and_then(Value::as_str) {
                // SEARCH('{"NAMESPACE",DIMENSION} MetricName="NAME"', …)
                let schema = &expression[expression.find('{').unwrap() + 1..];
                let schema = &schema[..schema.find('}').unwrap()];
                let (namespace, dimension) = schema.split_once(',').unwrap();
                let name = expression.split("MetricName=\"").nth(1).unwrap();
                let name = &name[..name.find('"').unwrap()];
                found.push((
                    namespace.trim_matches('"').to_owned(),
                    name.to_owned(),
                    Some(dimension.to_owned()),
                ));
            } else {
                found.push((scalar(&line[0]), scalar(&line[1]), None));
            }
        }
    }
    found
}

/// The functions' metrics and what reads them agree, with names taken from
/// `sluice_core::metrics`: the namespace the functions are given is the alarms', the
/// dashboard's and the failed-runs filters'; the lag alarm watches the dimensionless
/// LagOverThreshold the code writes for every table; the failed-runs alarm watches the
/// dimensionless RunsFailed only the log filters make (the code writes RunsFailed per Table and
/// Source only, so no failure is counted twice); the dashboard graphs only metrics the code
/// writes, per the dimension the code writes them with, and shows both alarms.
#[test]
fn the_alarms_and_dashboard_read_the_metrics_the_functions_write() {
    use sluice_core::metrics;
    let stack = Stack::new(&[]);
    let namespace = format!("sluice/{STACK}");
    metrics::check_namespace(&namespace).unwrap();
    for (name, function) in functions() {
        assert_eq!(
            stack.environment(function).get(metrics::NAMESPACE_ENV),
            Some(&namespace),
            "{name}: {}",
            metrics::NAMESPACE_ENV
        );
    }
    let alarm = |logical: &str| stack.eval(&resource(logical)["Properties"]).unwrap();

    let lag = alarm("LagOverThresholdAlarm");
    assert_eq!(scalar(&lag["Namespace"]), namespace);
    assert_eq!(lag["MetricName"], metrics::LAG_OVER_THRESHOLD);
    assert!(
        lag.get("Dimensions").is_none() && metrics::stack_wide(metrics::LAG_OVER_THRESHOLD),
        "the lag alarm covers every table through the metric the code writes without dimensions"
    );
    // 0 or 1 per run: the maximum is 1 when any table is over, however often it is written.
    assert_eq!(lag["Statistic"], "Maximum");
    assert_eq!(scalar(&lag["Threshold"]), "1");
    assert_eq!(lag["ComparisonOperator"], "GreaterThanOrEqualToThreshold");

    let failed = alarm("RunsFailedAlarm");
    assert_eq!(scalar(&failed["Namespace"]), namespace);
    assert_eq!(failed["MetricName"], metrics::RUNS_FAILED);
    assert!(failed.get("Dimensions").is_none());
    assert!(
        !metrics::stack_wide(metrics::RUNS_FAILED),
        "the functions would write the dimensionless RunsFailed the log filters count"
    );
    for (name, filter) in resources("AWS::Logs::MetricFilter") {
        let transform = &stack
            .eval(&filter["Properties"]["MetricTransformations"])
            .unwrap()[0];
        assert_eq!(scalar(&transform["MetricNamespace"]), namespace, "{name}");
        assert_eq!(transform["MetricName"], metrics::RUNS_FAILED, "{name}");
        assert!(transform.get("Dimensions").is_none(), "{name}");
    }
    // A document the code writes puts its dimensionless metrics in the alarms' namespace.
    let now = chrono::Utc::now();
    let mut record = sluice_core::RunRecord::new(
        sluice_core::RunId::at(now),
        "shop/public.orders".into(),
        now,
    );
    record.fail("boom".into(), None, now);
    let doc = metrics::run_metrics(&record, now, None)
        .document(&namespace, now, "INFO")
        .unwrap();
    let directives = doc["_aws"]["CloudWatchMetrics"].as_array().unwrap();
    let dimensionless: Vec<&Value> = directives
        .iter()
        .filter(|d| d["Dimensions"] == serde_json::json!([[]]))
        .collect();
    assert_eq!(dimensionless.len(), 1);
    assert_eq!(dimensionless[0]["Namespace"], namespace.as_str());
    assert!(
        dimensionless[0]["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["Name"] != metrics::RUNS_FAILED)
    );

    let dashboard = &resource("Dashboard")["Properties"];
    let body: Value = serde_json::from_str(&stack.text(&dashboard["DashboardBody"]))
        .expect("the dashboard body is JSON");
    let graphed = dashboard_metrics(&body);
    for (ns, name, dimension) in &graphed {
        assert_eq!(ns, &namespace, "{name}");
        assert!(
            metrics::METRICS.contains(&name.as_str()),
            "the dashboard graphs {name}, which the code does not write"
        );
        if let Some(dimension) = dimension {
            assert_eq!(dimension, metrics::TABLE, "{name}");
        }
    }
    for wanted in [
        metrics::ROWS,
        metrics::BYTES,
        metrics::RUN_SECONDS,
        metrics::LAG_SECONDS,
        metrics::RUNS_FAILED,
    ] {
        assert!(
            graphed
                .iter()
                .any(|(_, name, dimension)| name == wanted && dimension.is_some()),
            "no per-table graph of {wanted}"
        );
    }
    assert!(
        graphed
            .iter()
            .any(|(_, name, dimension)| name == metrics::RUNS_FAILED && dimension.is_none()),
        "no graph of every failed run"
    );
    let shown: Vec<Value> = body["widgets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["type"] == "alarm")
        .flat_map(|w| w["properties"]["alarms"].as_array().unwrap().clone())
        .collect();
    for logical in ["RunsFailedAlarm", "LagOverThresholdAlarm"] {
        let arn = stack.attribute(logical, "Arn");
        assert!(shown.contains(&Value::String(arn.clone())), "{arn}");
    }
}
