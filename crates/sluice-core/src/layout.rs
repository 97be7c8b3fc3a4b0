//! Object key layout, the one place that decides where a run's files go.
//!
//! `<prefix>/<engine>/<source>/<table>/<YYYY-MM-DD>/<HH>/part-<run_id>-<chunk:04>-<part:04>.parquet`,
//! date and hour from the run's start in UTC, so a retried chunk rewrites its own keys.
//! Manifests live at `<prefix>/<engine>/<source>/<table>/_manifests/<run_id>.json`, outside the
//! date/hour partitions (and with a leading `_`, which Hive-style readers skip).
//!
//! Key-set runs (primary keys only, to find deleted rows) keep the same shape under
//! `<prefix>/_keysets/`, away from the table's data, so nothing that reads the table's
//! directory (Glue, Athena, an external table) ever sees a key-only file.

use chrono::{DateTime, Utc};

use crate::config::Engine;
use crate::run::RunId;

/// The directory under the prefix that holds every table's key-set runs.
pub const KEYSETS_DIR: &str = "_keysets";

/// Where a table's files live under the sink's root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableLayout {
    base: String,
}

impl TableLayout {
    /// `prefix` is an optional leading path (no leading or trailing `/`); `table` is the
    /// configured name (`schema.table` or `table`), already validated.
    pub fn new(prefix: Option<&str>, engine: Engine, source: &str, table: &str) -> TableLayout {
        let mut base = String::new();
        if let Some(prefix) = prefix
            .map(|p| p.trim_matches('/'))
            .filter(|p| !p.is_empty())
        {
            base.push_str(prefix);
            base.push('/');
        }
        base.push_str(&format!("{}/{source}/{table}", engine.as_str()));
        TableLayout { base }
    }

    /// Where the key-set runs of the same table put their files and manifests.
    pub fn keysets(prefix: Option<&str>, engine: Engine, source: &str, table: &str) -> TableLayout {
        let prefix = match prefix
            .map(|p| p.trim_matches('/'))
            .filter(|p| !p.is_empty())
        {
            Some(prefix) => format!("{prefix}/{KEYSETS_DIR}"),
            None => KEYSETS_DIR.to_owned(),
        };
        TableLayout::new(Some(&prefix), engine, source, table)
    }

    /// The table's root directory: every run's partitions and manifests are under it.
    pub fn table_dir(&self) -> &str {
        &self.base
    }

    /// The date/hour partition directory of a run started at `started_at`.
    pub fn partition_dir(&self, started_at: DateTime<Utc>) -> String {
        format!("{}/{}", self.base, started_at.format("%Y-%m-%d/%H"))
    }

    pub fn data_file(
        &self,
        started_at: DateTime<Utc>,
        run_id: RunId,
        chunk: u32,
        part: u32,
    ) -> String {
        format!(
            "{}/part-{run_id}-{chunk:04}-{part:04}.parquet",
            self.partition_dir(started_at)
        )
    }

    pub fn manifest(&self, run_id: RunId) -> String {
        format!("{}/_manifests/{run_id}.json", self.base)
    }

    /// Where an ended run's story goes (see [`crate::run::run_story`]): beside the manifests,
    /// so the lake keeps each table's run history after the state store's retention.
    pub fn run_story(&self, run_id: RunId) -> String {
        format!("{}/_runs/{run_id}.json", self.base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_documented_layout() {
        let started = DateTime::parse_from_rfc3339("2024-03-09T07:59:59.999+01:00")
            .unwrap()
            .with_timezone(&Utc);
        let run_id: RunId = "01HRB7X6Q3M4Z8E9V2K5N1P0TA".parse().unwrap();
        let layout = TableLayout::new(None, Engine::Postgres, "shop", "public.orders");
        assert_eq!(
            layout.data_file(started, run_id, 3, 12),
            "postgres/shop/public.orders/2024-03-09/06/part-01HRB7X6Q3M4Z8E9V2K5N1P0TA-0003-0012.parquet"
        );
        let keys = TableLayout::keysets(Some("/lake/"), Engine::Postgres, "shop", "public.orders");
        assert_eq!(
            keys.data_file(started, run_id, 0, 1),
            "lake/_keysets/postgres/shop/public.orders/2024-03-09/06/part-01HRB7X6Q3M4Z8E9V2K5N1P0TA-0000-0001.parquet"
        );
        assert_eq!(
            TableLayout::keysets(None, Engine::Mysql, "m", "t").manifest(run_id),
            "_keysets/mysql/m/t/_manifests/01HRB7X6Q3M4Z8E9V2K5N1P0TA.json"
        );
        assert_eq!(
            layout.manifest(run_id),
            "postgres/shop/public.orders/_manifests/01HRB7X6Q3M4Z8E9V2K5N1P0TA.json"
        );
        let layout = TableLayout::new(Some("/raw/"), Engine::Mysql, "crm", "contacts");
        assert_eq!(
            layout.partition_dir(started),
            "raw/mysql/crm/contacts/2024-03-09/06"
        );
    }
}
