//! Gold procedures as objects of their own: each names the tables (and other gold procedures)
//! it reads, and runs once per batch, after every input of that batch has merged, in
//! dependency order; not at all when an input failed.
//!
//! A *batch* is what one request started together: one external-function call, one schedule
//! tick, one operator invocation, one `sluice run`. Calling a table's gold after that table's
//! own merge (as `target.gold_procedures` did) let a gold that reads orders and customers run
//! between the two merges of one batch, on half-new data.
//!
//! Pure: the graph and its checks (unknown inputs, duplicates, cycles) for
//! [`crate::Config::validate`], the levels `sluice status` shows, and the steps of one batch
//! with what each waits for. The engine runs the steps.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::run::RunId;
use crate::staging::{GOLD_SCHEMA, qualify};

/// The SQL API request id of `CALL procedure(batch_id)`: a UUID (version 5 layout) from a
/// SHA-256 of both, so every attempt at that CALL for that batch carries the same id.
pub fn gold_request_id(batch_id: &str, procedure: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("sluice gold\0{batch_id}\0{procedure}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    bytes[6] = (bytes[6] & 0x0f) | 0x50;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// One gold procedure as configured (`gold:` at the top level of the configuration).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoldConfig {
    /// `NAME`, `SCHEMA.NAME` or `DATABASE.SCHEMA.NAME` (schema `GOLD` and the target database
    /// by default), `CALL`ed with the batch's id.
    pub procedure: String,
    /// What it reads: tables as `source/schema.table`, or the `procedure` of another gold entry.
    pub inputs: Vec<String>,
}

/// What a gold input names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum GoldInput {
    /// A configured table, by its key (`source/schema.table`).
    Table(String),
    /// Another gold entry, by its place in `gold:`.
    Gold(usize),
}

/// One gold entry placed in the graph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoldNode {
    /// Its place in `gold:`.
    pub index: usize,
    pub procedure: String,
    pub inputs: Vec<GoldInput>,
    /// 1 for a gold reading only tables, else one more than the highest gold it reads.
    pub level: u32,
}

/// Every gold entry in dependency order: by level, then as configured.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GoldGraph {
    pub nodes: Vec<GoldNode>,
}

/// A problem with `gold:`, with the path of the field (`gold[1].inputs[0]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoldIssue {
    pub path: String,
    pub message: String,
}

/// The name a procedure is known by when comparing: schema and name, schema `GOLD` when not
/// given. The database is left out: unwritten it is the target database, which the
/// configuration does not name, so `DB.GOLD.A` and `GOLD.A` may be one procedure, and are
/// taken as one (listing both is refused rather than calling it twice).
fn identity(procedure: &str) -> (String, String) {
    let name = qualify(procedure, "", GOLD_SCHEMA);
    (name.schema, name.name)
}

impl GoldGraph {
    /// The graph of `config.gold`, or every problem with it: an input that is neither a
    /// configured table nor another entry's procedure, a procedure listed twice, an entry
    /// without inputs or reading itself, and cycles (each named by its path).
    pub fn of(config: &Config) -> Result<GoldGraph, Vec<GoldIssue>> {
        let mut issues = Vec::new();
        let tables: BTreeSet<String> = config.tables.iter().map(|t| t.key()).collect();
        let mut by_name: BTreeMap<(String, String), usize> = BTreeMap::new();
        for (i, gold) in config.gold.iter().enumerate() {
            if let Some(first) = by_name.insert(identity(&gold.procedure), i) {
                issues.push(GoldIssue {
                    path: format!("gold[{i}].procedure"),
                    message: format!(
                        "'{}' is also gold[{first}]'s procedure; list each procedure once, with all its inputs",
                        gold.procedure
                    ),
                });
                by_name.insert(identity(&gold.procedure), first);
            }
        }
        let mut nodes = Vec::with_capacity(config.gold.len());
        for (i, gold) in config.gold.iter().enumerate() {
            if gold.inputs.is_empty() {
                issues.push(GoldIssue {
                    path: format!("gold[{i}].inputs"),
                    message: "at least one input is required: the tables (source/schema.table) or gold procedures it reads; it runs after they merge".into(),
                });
            }
            let mut inputs = Vec::new();
            let mut seen = BTreeSet::new();
            for (j, input) in gold.inputs.iter().enumerate() {
                let path = format!("gold[{i}].inputs[{j}]");
                let resolved = if tables.contains(input) {
                    GoldInput::Table(input.clone())
                } else if let Some(&k) = by_name.get(&identity(input)) {
                    if k == i {
                        issues.push(GoldIssue {
                            path,
                            message: format!("'{input}' is this entry's own procedure"),
                        });
                        continue;
                    }
                    GoldInput::Gold(k)
                } else {
                    issues.push(GoldIssue {
                        path,
                        message: format!(
                            "'{input}' is neither a configured table (source/schema.table: {}) nor the procedure of another gold entry",
                            known(&tables)
                        ),
                    });
                    continue;
                };
                if !seen.insert(resolved.clone()) {
                    issues.push(GoldIssue {
                        path,
                        message: format!("'{input}' is listed twice"),
                    });
                    continue;
                }
                inputs.push(resolved);
            }
            nodes.push(GoldNode {
                index: i,
                procedure: gold.procedure.clone(),
                inputs,
                level: 0,
            });
        }
        if !issues.is_empty() {
            return Err(issues);
        }
        match levels(&nodes) {
            Ok(levels) => {
                for (node, level) in nodes.iter_mut().zip(levels) {
                    node.level = level;
                }
            }
            Err(cycle) => {
                let names: Vec<&str> = cycle
                    .iter()
                    .map(|&i| config.gold[i].procedure.as_str())
                    .collect();
                return Err(vec![GoldIssue {
                    path: format!("gold[{}].inputs", cycle[0]),
                    message: format!(
                        "gold procedures read each other in a cycle (each reads the next): {} -> {}; no order runs each after its inputs",
                        names.join(" -> "),
                        names[0]
                    ),
                }]);
            }
        }
        nodes.sort_by_key(|n| (n.level, n.index));
        Ok(GoldGraph { nodes })
    }

    #[cfg(test)]
    fn node(&self, index: usize) -> Option<&GoldNode> {
        self.nodes.iter().find(|n| n.index == index)
    }

    /// The steps of a batch whose tables ended as `tables` says (by table key): every gold
    /// entry reading one of them (directly, or through another gold of the batch), in
    /// dependency order. A step with an input that failed in this batch is skipped at once,
    /// with the reason; the rest wait to run.
    pub fn batch_steps(&self, tables: &BTreeMap<String, TableOutcome>) -> Vec<GoldStep> {
        let mut steps: Vec<GoldStep> = Vec::new();
        let mut in_batch: BTreeMap<usize, usize> = BTreeMap::new();
        for node in &self.nodes {
            let mut waits_for = Vec::new();
            let mut skipped = None;
            for input in &node.inputs {
                match input {
                    GoldInput::Table(key) => {
                        if let Some(outcome) = tables.get(key) {
                            waits_for.push(key.clone());
                            if skipped.is_none() && !outcome.merged {
                                skipped = Some(format!(
                                    "input {key} failed in this batch (run {}{})",
                                    outcome.run_id,
                                    outcome
                                        .error
                                        .as_deref()
                                        .map(|e| format!(": {e}"))
                                        .unwrap_or_default()
                                ));
                            }
                        }
                    }
                    GoldInput::Gold(k) => {
                        if let Some(&step) = in_batch.get(k) {
                            let input: &GoldStep = &steps[step];
                            waits_for.push(input.procedure.clone());
                            if skipped.is_none() && input.status == GoldStatus::Skipped {
                                skipped = Some(format!("input {} was skipped", input.procedure));
                            }
                        }
                    }
                }
            }
            if waits_for.is_empty() {
                continue;
            }
            in_batch.insert(node.index, steps.len());
            steps.push(GoldStep {
                procedure: node.procedure.clone(),
                level: node.level,
                inputs: waits_for,
                status: if skipped.is_some() {
                    GoldStatus::Skipped
                } else {
                    GoldStatus::Pending
                },
                detail: skipped,
                ended_at: None,
            });
        }
        steps
    }
}

/// Levels of `nodes` (1 + the highest gold input's), or the indexes of a cycle.
fn levels(nodes: &[GoldNode]) -> Result<Vec<u32>, Vec<usize>> {
    let gold_inputs = |i: usize| {
        nodes[i].inputs.iter().filter_map(|input| match input {
            GoldInput::Gold(k) => Some(*k),
            GoldInput::Table(_) => None,
        })
    };
    // 0: not visited, 1: on the current path, 2: done.
    let mut mark = vec![0u8; nodes.len()];
    let mut level = vec![0u32; nodes.len()];
    for start in 0..nodes.len() {
        if mark[start] != 0 {
            continue;
        }
        let mut path: Vec<(usize, Vec<usize>)> = vec![(start, gold_inputs(start).collect())];
        mark[start] = 1;
        while let Some((node, pending)) = path.last_mut() {
            let node = *node;
            if let Some(next) = pending.pop() {
                match mark[next] {
                    0 => {
                        mark[next] = 1;
                        path.push((next, gold_inputs(next).collect()));
                    }
                    1 => {
                        let from = path.iter().position(|(n, _)| *n == next).unwrap_or(0);
                        // The path runs from a reader to what it reads: the cycle is told
                        // in that order, from its first-configured entry.
                        let mut cycle: Vec<usize> = path[from..].iter().map(|(n, _)| *n).collect();
                        let first = cycle
                            .iter()
                            .enumerate()
                            .min_by_key(|(_, n)| **n)
                            .map_or(0, |(i, _)| i);
                        cycle.rotate_left(first);
                        return Err(cycle);
                    }
                    _ => {}
                }
            } else {
                level[node] = 1 + gold_inputs(node).map(|k| level[k]).max().unwrap_or(0);
                mark[node] = 2;
                path.pop();
            }
        }
    }
    Ok(level)
}

fn known(tables: &BTreeSet<String>) -> String {
    if tables.is_empty() {
        "none configured".into()
    } else {
        tables.iter().cloned().collect::<Vec<_>>().join(", ")
    }
}

/// How a table's runs in a batch ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableOutcome {
    pub run_id: RunId,
    /// Every run of the table in the batch completed (its rows are in STAGING).
    pub merged: bool,
    /// The first error of a run that failed.
    pub error: Option<String>,
}

/// Table outcomes of a batch from its runs (a table run twice in one batch, a load and then
/// its key set, counts as merged only when both completed).
pub fn table_outcomes<'a>(
    runs: impl IntoIterator<Item = &'a crate::RunRecord>,
) -> BTreeMap<String, TableOutcome> {
    let mut outcomes: BTreeMap<String, TableOutcome> = BTreeMap::new();
    for run in runs {
        let merged = run.status == crate::RunStatus::Completed;
        let outcome = TableOutcome {
            run_id: run.run_id,
            merged,
            error: run.error.as_ref().map(|e| e.message.clone()),
        };
        match outcomes.get_mut(&run.table_key) {
            Some(first) if first.merged && !merged => *first = outcome,
            Some(_) => {}
            None => {
                outcomes.insert(run.table_key.clone(), outcome);
            }
        }
    }
    outcomes
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum GoldStatus {
    /// Waits for its turn.
    Pending,
    /// `CALL`ed and returned.
    Done,
    /// `CALL`ed and failed (`detail` says how).
    Failed,
    /// Not called: an input failed or was skipped (`detail` says which).
    Skipped,
}

impl GoldStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            GoldStatus::Pending => "PENDING",
            GoldStatus::Done => "DONE",
            GoldStatus::Failed => "FAILED",
            GoldStatus::Skipped => "SKIPPED",
        }
    }
}

/// One gold procedure's part in a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GoldStep {
    pub procedure: String,
    pub level: u32,
    /// The inputs it waited for in this batch: table keys and gold procedures.
    pub inputs: Vec<String>,
    pub status: GoldStatus,
    /// Why it was skipped, or how it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<DateTime<Utc>>,
}

/// The next step to `CALL`: the first pending one, once every gold it waits for is done. A
/// pending step whose gold input failed or was skipped is marked skipped on the way, so the
/// loop `while let Some(i) = next_step(..) { call; record }` ends with every step decided.
pub fn next_step(steps: &mut [GoldStep], now: DateTime<Utc>) -> Option<usize> {
    for i in 0..steps.len() {
        if steps[i].status != GoldStatus::Pending {
            continue;
        }
        let blocked = steps[i].inputs.iter().find_map(|input| {
            steps[..i]
                .iter()
                .find(|s| &s.procedure == input)
                .filter(|s| matches!(s.status, GoldStatus::Failed | GoldStatus::Skipped))
                .map(|s| format!("input {} {}", s.procedure, s.status.as_str().to_lowercase()))
        });
        match blocked {
            Some(reason) => {
                steps[i].status = GoldStatus::Skipped;
                steps[i].detail = Some(reason);
                steps[i].ended_at = Some(now);
            }
            None => return Some(i),
        }
    }
    None
}

/// What the state store keeps of a batch's gold: who runs it, and each step's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GoldRecord {
    pub batch_id: String,
    /// Whoever runs the steps: an invocation's id, kept by its retries, so a retry carries on
    /// where a crashed attempt stopped and a duplicate event does not run them twice at once.
    pub holder: String,
    /// A holder that has not finished by then is taken over.
    pub claimed_until: DateTime<Utc>,
    pub steps: Vec<GoldStep>,
    /// Every step decided.
    pub finished: bool,
    pub updated_at: DateTime<Utc>,
}

impl GoldRecord {
    /// A one-line account: `GOLD.A done, GOLD.B skipped (input shop/public.c failed …)`.
    pub fn summary(&self) -> String {
        summary(self.steps.iter())
    }

    /// The account of the steps that read table `table_key`, directly or through another
    /// step; `None` when none does.
    pub fn summary_for(&self, table_key: &str) -> Option<String> {
        let mut reading: BTreeSet<&str> = BTreeSet::new();
        for step in &self.steps {
            // Steps are in dependency order: a gold input's step comes first.
            if step
                .inputs
                .iter()
                .any(|i| i == table_key || reading.contains(i.as_str()))
            {
                reading.insert(&step.procedure);
            }
        }
        let steps: Vec<&GoldStep> = self
            .steps
            .iter()
            .filter(|s| reading.contains(s.procedure.as_str()))
            .collect();
        (!steps.is_empty()).then(|| summary(steps.into_iter()))
    }
}

fn summary<'a>(steps: impl Iterator<Item = &'a GoldStep>) -> String {
    steps
        .map(|s| match &s.detail {
            Some(d) => format!("{} {} ({d})", s.procedure, s.status.as_str().to_lowercase()),
            None => format!("{} {}", s.procedure, s.status.as_str().to_lowercase()),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(gold: &str) -> Config {
        let text = format!(
            "sources:\n  - name: shop\n    engine: postgres\n    connection: {{url: 'postgres://u@h/d'}}\n\
             tables:\n  - {{source: shop, table: public.orders, primary_key: [id]}}\n  \
             - {{source: shop, table: public.customers, primary_key: [id]}}\n  \
             - {{source: shop, table: public.items, primary_key: [id]}}\n{gold}"
        );
        serde_yaml_ng::from_str(&text).unwrap()
    }

    fn graph(gold: &str) -> Result<GoldGraph, Vec<GoldIssue>> {
        GoldGraph::of(&config(gold))
    }

    fn order(g: &GoldGraph) -> Vec<(String, u32)> {
        g.nodes
            .iter()
            .map(|n| (n.procedure.clone(), n.level))
            .collect()
    }

    const CHAIN: &str = "gold:\n  \
        - {procedure: REPORTS.TOP, inputs: [GOLD.REVENUE, DAILY]}\n  \
        - {procedure: GOLD.REVENUE, inputs: [shop/public.orders, shop/public.customers]}\n  \
        - {procedure: DAILY, inputs: [REVENUE, shop/public.items]}\n  \
        - {procedure: CUSTOMERS, inputs: [shop/public.customers]}\n";

    #[test]
    fn gold_runs_in_levels_after_what_it_reads() {
        let g = graph(CHAIN).unwrap();
        assert_eq!(
            order(&g),
            [
                ("GOLD.REVENUE".to_owned(), 1),
                ("CUSTOMERS".to_owned(), 1),
                ("DAILY".to_owned(), 2),
                ("REPORTS.TOP".to_owned(), 3)
            ]
        );
        // `GOLD.REVENUE` and `REVENUE` are one procedure: schema GOLD is the default.
        assert_eq!(g.node(2).unwrap().inputs[0], GoldInput::Gold(1));
    }

    #[test]
    fn unknown_inputs_duplicates_and_empty_inputs_are_named() {
        let issues = graph(
            "gold:\n  - {procedure: A, inputs: [shop/public.nope, public.orders]}\n  \
             - {procedure: GOLD.A, inputs: [shop/public.orders]}\n  - {procedure: B, inputs: []}\n  \
             - {procedure: C, inputs: [shop/public.orders, shop/public.orders, C]}\n",
        )
        .unwrap_err();
        let text: Vec<String> = issues
            .iter()
            .map(|i| format!("{}: {}", i.path, i.message))
            .collect();
        assert!(
            text[0].starts_with("gold[1].procedure: 'GOLD.A' is also gold[0]'s procedure"),
            "{text:?}"
        );
        assert!(text.iter().any(|t| t.starts_with("gold[0].inputs[0]: 'shop/public.nope' is neither a configured table (source/schema.table: shop/public.customers, shop/public.items, shop/public.orders)")), "{text:?}");
        // A table must be named by its key, as `sluice status` shows it.
        assert!(
            text.iter()
                .any(|t| t.starts_with("gold[0].inputs[1]: 'public.orders' is neither")),
            "{text:?}"
        );
        assert!(
            text.iter()
                .any(|t| t.starts_with("gold[2].inputs: at least one input is required")),
            "{text:?}"
        );
        assert!(
            text.contains(&"gold[3].inputs[1]: 'shop/public.orders' is listed twice".to_owned()),
            "{text:?}"
        );
        assert!(
            text.contains(&"gold[3].inputs[2]: 'C' is this entry's own procedure".to_owned()),
            "{text:?}"
        );
    }

    #[test]
    fn a_procedure_is_one_whether_or_not_its_database_is_written() {
        let issues = graph(
            "gold:\n  - {procedure: GOLD.A, inputs: [shop/public.orders]}\n  \
             - {procedure: DB.GOLD.A, inputs: [shop/public.orders]}\n",
        )
        .unwrap_err();
        assert_eq!(issues[0].path, "gold[1].procedure");
        let g = graph(
            "gold:\n  - {procedure: GOLD.A, inputs: [shop/public.orders]}\n  \
             - {procedure: B, inputs: [DB.GOLD.A]}\n",
        )
        .unwrap();
        assert_eq!(order(&g), [("GOLD.A".to_owned(), 1), ("B".to_owned(), 2)]);
    }

    #[test]
    fn each_calls_request_id_is_a_uuid_fixed_by_batch_and_procedure() {
        let id = gold_request_id("b1", "\"DB\".\"GOLD\".\"A\"");
        assert_eq!(id, gold_request_id("b1", "\"DB\".\"GOLD\".\"A\""));
        assert_ne!(id, gold_request_id("b2", "\"DB\".\"GOLD\".\"A\""));
        assert_ne!(id, gold_request_id("b1", "\"DB\".\"GOLD\".\"B\""));
        let groups: Vec<usize> = id.split('-').map(str::len).collect();
        assert_eq!(groups, [8, 4, 4, 4, 12]);
        assert!(id.chars().all(|c| c == '-' || c.is_ascii_hexdigit()));
        assert_eq!(&id[14..15], "5");
    }

    #[test]
    fn cycles_are_refused_with_their_path() {
        let issues = graph(
            "gold:\n  - {procedure: A, inputs: [shop/public.orders, C]}\n  \
             - {procedure: B, inputs: [A]}\n  - {procedure: C, inputs: [B]}\n  \
             - {procedure: D, inputs: [shop/public.orders]}\n",
        )
        .unwrap_err();
        assert_eq!(issues.len(), 1);
        assert_eq!(issues[0].path, "gold[0].inputs");
        // A reads C, C reads B, B reads A.
        assert!(
            issues[0].message.starts_with(
                "gold procedures read each other in a cycle (each reads the next): A -> C -> B -> A;"
            ),
            "{}",
            issues[0].message
        );
    }

    fn outcome(merged: bool) -> TableOutcome {
        TableOutcome {
            run_id: RunId::new(),
            merged,
            error: (!merged).then(|| "boom".to_owned()),
        }
    }

    fn statuses(steps: &[GoldStep]) -> Vec<(&str, GoldStatus)> {
        steps
            .iter()
            .map(|s| (s.procedure.as_str(), s.status))
            .collect()
    }

    #[test]
    fn a_batch_runs_only_the_gold_of_its_tables_and_skips_what_a_failed_input_feeds() {
        let g = graph(CHAIN).unwrap();
        // Only items ran: DAILY reads it (and REVENUE, not in this batch); TOP reads DAILY.
        let only_items = BTreeMap::from([("shop/public.items".to_owned(), outcome(true))]);
        let steps = g.batch_steps(&only_items);
        assert_eq!(
            statuses(&steps),
            [
                ("DAILY", GoldStatus::Pending),
                ("REPORTS.TOP", GoldStatus::Pending)
            ]
        );
        assert_eq!(steps[0].inputs, ["shop/public.items"]);
        assert_eq!(steps[1].inputs, ["DAILY"]);

        // customers failed: REVENUE and CUSTOMERS are skipped, DAILY (reading REVENUE) too,
        // and TOP; nothing else runs.
        let failed = BTreeMap::from([
            ("shop/public.orders".to_owned(), outcome(true)),
            ("shop/public.customers".to_owned(), outcome(false)),
            ("shop/public.items".to_owned(), outcome(true)),
        ]);
        let steps = g.batch_steps(&failed);
        assert_eq!(
            statuses(&steps),
            [
                ("GOLD.REVENUE", GoldStatus::Skipped),
                ("CUSTOMERS", GoldStatus::Skipped),
                ("DAILY", GoldStatus::Skipped),
                ("REPORTS.TOP", GoldStatus::Skipped)
            ]
        );
        let reason = steps[0].detail.as_deref().unwrap();
        assert!(
            reason.starts_with("input shop/public.customers failed in this batch (run ")
                && reason.ends_with(": boom)"),
            "{reason}"
        );
        assert_eq!(
            steps[2].detail.as_deref(),
            Some("input GOLD.REVENUE was skipped")
        );
    }

    #[test]
    fn a_failed_gold_skips_the_gold_that_reads_it_and_nothing_else() {
        let g = graph(CHAIN).unwrap();
        let all = BTreeMap::from([
            ("shop/public.orders".to_owned(), outcome(true)),
            ("shop/public.customers".to_owned(), outcome(true)),
            ("shop/public.items".to_owned(), outcome(true)),
        ]);
        let mut steps = g.batch_steps(&all);
        let now = Utc::now();
        let mut called = Vec::new();
        while let Some(i) = next_step(&mut steps, now) {
            called.push(steps[i].procedure.clone());
            steps[i].status = if steps[i].procedure == "GOLD.REVENUE" {
                GoldStatus::Failed
            } else {
                GoldStatus::Done
            };
        }
        assert_eq!(called, ["GOLD.REVENUE", "CUSTOMERS"]);
        assert_eq!(
            statuses(&steps),
            [
                ("GOLD.REVENUE", GoldStatus::Failed),
                ("CUSTOMERS", GoldStatus::Done),
                ("DAILY", GoldStatus::Skipped),
                ("REPORTS.TOP", GoldStatus::Skipped)
            ]
        );
        assert_eq!(
            steps[2].detail.as_deref(),
            Some("input GOLD.REVENUE failed")
        );
        // TOP reads REVENUE itself, ahead of DAILY.
        assert_eq!(
            steps[3].detail.as_deref(),
            Some("input GOLD.REVENUE failed")
        );
    }

    #[test]
    fn a_table_run_twice_in_a_batch_merged_only_if_both_completed() {
        use crate::{RunRecord, RunStatus};
        let now = Utc::now();
        let mut load = RunRecord::new(RunId::new(), "shop/public.orders".into(), now);
        load.status = RunStatus::Completed;
        let mut keyset = RunRecord::new(RunId::new(), "shop/public.orders".into(), now);
        keyset.status = RunStatus::Failed;
        let outcomes = table_outcomes([&load, &keyset]);
        assert!(!outcomes["shop/public.orders"].merged);
        assert_eq!(outcomes["shop/public.orders"].run_id, keyset.run_id);
        let outcomes = table_outcomes([&load]);
        assert!(outcomes["shop/public.orders"].merged);
    }

    #[test]
    fn config_validation_names_each_gold_problem() {
        let text = text_with_gold(
            "gold:\n  - {procedure: 'GOLD.A;DROP', inputs: [shop/public.orders]}\n  \
             - {procedure: B, inputs: [A_missing]}\n",
        );
        let Err(crate::ConfigError::Invalid { issues, .. }) = Config::from_yaml(&text, "t") else {
            panic!("accepted");
        };
        let text: Vec<String> = issues.iter().map(ToString::to_string).collect();
        assert!(
            text.iter()
                .any(|t| t.starts_with("gold[0].procedure: 'A;DROP'")),
            "{text:?}"
        );
        assert!(
            text.iter()
                .any(|t| t.starts_with("gold[1].inputs[0]: 'A_missing' is neither")),
            "{text:?}"
        );
        // A good one parses, and keeps its order through YAML.
        let good = Config::from_yaml(
            &text_with_gold("gold:\n  - {procedure: GOLD.A, inputs: [shop/public.orders]}\n"),
            "t",
        )
        .unwrap();
        let again = Config::from_yaml(&good.to_yaml().unwrap(), "t").unwrap();
        assert_eq!(again.gold, good.gold);
    }

    fn text_with_gold(gold: &str) -> String {
        format!(
            "sources:\n  - name: shop\n    engine: postgres\n    connection: {{url: 'postgres://u@h/d'}}\n\
             tables:\n  - {{source: shop, table: public.orders, primary_key: [id]}}\n{gold}"
        )
    }

    #[test]
    fn each_table_is_told_the_gold_that_read_it() {
        let g = graph(CHAIN).unwrap();
        let all = BTreeMap::from([
            ("shop/public.orders".to_owned(), outcome(true)),
            ("shop/public.items".to_owned(), outcome(true)),
        ]);
        let mut steps = g.batch_steps(&all);
        while let Some(i) = next_step(&mut steps, Utc::now()) {
            steps[i].status = GoldStatus::Done;
        }
        let record = GoldRecord {
            batch_id: "b".into(),
            holder: "h".into(),
            claimed_until: Utc::now(),
            steps,
            finished: true,
            updated_at: Utc::now(),
        };
        assert_eq!(
            record.summary_for("shop/public.orders").as_deref(),
            Some("GOLD.REVENUE done, DAILY done, REPORTS.TOP done")
        );
        assert_eq!(
            record.summary_for("shop/public.items").as_deref(),
            Some("DAILY done, REPORTS.TOP done")
        );
        assert_eq!(record.summary_for("shop/public.customers"), None);
    }
}
