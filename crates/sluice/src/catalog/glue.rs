//! The Glue adapter of the `Catalog` port: an EXTERNAL_TABLE per source table over Parquet,
//! partitioned by `ingest_date`/`ingest_hour`, each run's partition registered with its
//! explicit S3 location (no crawler, no `MSCK REPAIR`). Beside them, `sluice_runs`: one
//! JSON table over every table's run stories, a partition per table at its `_runs/` directory.

use aws_sdk_glue::Client;
use aws_sdk_glue::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_glue::types::{
    Column, PartitionInput, SerDeInfo, StorageDescriptor, Table, TableInput,
};
use sluice_core::catalog::{HiveColumn, PARTITION_KEYS, evolve_columns};
use sluice_core::run::{RUN_STORY_COLUMNS, RUN_STORY_PARTITION_KEYS, RUNS_TABLE};
use tokio::sync::OnceCell;
use tracing::info;

use super::{Catalog, CatalogError, CatalogOutcome, StoryRegistration, TableRegistration};

const INPUT_FORMAT: &str = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat";
const OUTPUT_FORMAT: &str = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat";
const SERDE: &str = "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe";

/// The run stories are JSON Lines, one object per line, which is what Athena's OpenX JSON
/// SerDe reads (<https://docs.aws.amazon.com/athena/latest/ug/openx-json-serde.html>,
/// <https://docs.aws.amazon.com/athena/latest/ug/json-serde.html>); as text files, with the
/// input and output formats `STORED AS TEXTFILE` gives a table.
const JSON_SERDE: &str = "org.openx.data.jsonserde.JsonSerDe";
const TEXT_INPUT_FORMAT: &str = "org.apache.hadoop.mapred.TextInputFormat";
const TEXT_OUTPUT_FORMAT: &str = "org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat";

pub struct GlueCatalog {
    client: Client,
    database: String,
    database_checked: OnceCell<()>,
    /// Set once this process has found (or made) the runs table as this build defines it.
    runs_table_checked: OnceCell<()>,
    /// The runs table's partitions this process has registered: a story per ended run would
    /// otherwise call Glue for a partition that exists since the table's first story.
    story_partitions: std::sync::Mutex<std::collections::HashSet<[String; 4]>>,
}

impl GlueCatalog {
    /// Adds one partition to `table`: `true` when created, `false` when it existed already
    /// (BatchCreatePartition reports that per partition, not as a failed call).
    async fn create_partition(
        &self,
        table: &str,
        partition: PartitionInput,
    ) -> Result<bool, CatalogError> {
        let out = self
            .client
            .batch_create_partition()
            .database_name(&self.database)
            .table_name(table)
            .partition_input_list(partition)
            .send()
            .await
            .map_err(|e| self.service_error("BatchCreatePartition", table, &e))?;
        let mut created = true;
        for error in out.errors() {
            let detail = error.error_detail();
            match detail.and_then(|d| d.error_code()) {
                Some("AlreadyExistsException") => created = false,
                code => {
                    return Err(CatalogError::Service {
                        action: "BatchCreatePartition",
                        target: format!(
                            "{} partition {:?}",
                            self.target(table),
                            error.partition_values()
                        ),
                        message: format!(
                            "{}: {}",
                            code.unwrap_or("error"),
                            detail
                                .and_then(|d| d.error_message())
                                .unwrap_or("no message")
                        ),
                    });
                }
            }
        }
        Ok(created)
    }

    pub fn new(client: Client, database: impl Into<String>) -> GlueCatalog {
        GlueCatalog {
            client,
            database: database.into(),
            database_checked: OnceCell::new(),
            runs_table_checked: OnceCell::new(),
            story_partitions: Default::default(),
        }
    }

    /// Creates the runs table, or replaces its definition when it is not this build's (columns,
    /// SerDe or partition keys changed): its partitions keep their own locations.
    async fn ensure_runs_table(
        &self,
        registration: &StoryRegistration,
    ) -> Result<CatalogOutcome, CatalogError> {
        let mut outcome = CatalogOutcome::default();
        let columns = story_columns();
        let input = self.runs_table_input(registration, &columns)?;
        match self.existing_table(RUNS_TABLE).await? {
            None => match self
                .client
                .create_table()
                .database_name(&self.database)
                .table_input(input)
                .send()
                .await
            {
                Ok(_) => outcome.table_created = true,
                // Another process's story made it first: it defines it the same way.
                Err(e) if code_of(&e) == Some("AlreadyExistsException") => {}
                Err(e) => return Err(self.service_error("CreateTable", RUNS_TABLE, &e)),
            },
            Some(table) if runs_table_is_current(&table, &columns) => {}
            Some(_) => {
                self.client
                    .update_table()
                    .database_name(&self.database)
                    .table_input(input)
                    .send()
                    .await
                    .map_err(|e| self.service_error("UpdateTable", RUNS_TABLE, &e))?;
                outcome.table_updated = true;
            }
        }
        Ok(outcome)
    }

    fn runs_table_input(
        &self,
        registration: &StoryRegistration,
        columns: &[HiveColumn],
    ) -> Result<TableInput, CatalogError> {
        let mut builder = TableInput::builder()
            .name(RUNS_TABLE)
            .description(
                "sluice: every run's story, one JSON line per ended run (README: Output layout)",
            )
            .table_type("EXTERNAL_TABLE")
            .parameters("classification", "json")
            .parameters("EXTERNAL", "TRUE")
            .storage_descriptor(json_storage_descriptor(columns, &registration.location)?);
        for key in RUN_STORY_PARTITION_KEYS {
            builder = builder.partition_keys(glue_column(key, "string")?);
        }
        builder.build().map_err(|e| self.build_error(RUNS_TABLE, e))
    }

    /// Once per process: a missing database gets its own message instead of a confusing
    /// "table not found".
    async fn check_database(&self) -> Result<(), CatalogError> {
        self.database_checked
            .get_or_try_init(|| async {
                match self.client.get_database().name(&self.database).send().await {
                    Ok(_) => Ok(()),
                    Err(e) if code_of(&e) == Some("EntityNotFoundException") => {
                        Err(CatalogError::DatabaseMissing {
                            database: self.database.clone(),
                        })
                    }
                    Err(e) => Err(self.service_error("GetDatabase", &self.database, &e)),
                }
            })
            .await
            .map(|_| ())
    }

    async fn existing_table(&self, name: &str) -> Result<Option<Table>, CatalogError> {
        match self
            .client
            .get_table()
            .database_name(&self.database)
            .name(name)
            .send()
            .await
        {
            Ok(out) => Ok(out.table),
            Err(e) if code_of(&e) == Some("EntityNotFoundException") => Ok(None),
            Err(e) => Err(self.service_error("GetTable", name, &e)),
        }
    }

    fn table_input(
        &self,
        registration: &TableRegistration,
        columns: &[HiveColumn],
    ) -> Result<TableInput, CatalogError> {
        let mut builder = TableInput::builder()
            .name(&registration.table)
            .description(&registration.description)
            .table_type("EXTERNAL_TABLE")
            .parameters("classification", "parquet")
            .parameters("EXTERNAL", "TRUE")
            .storage_descriptor(storage_descriptor(columns, &registration.location)?);
        for key in PARTITION_KEYS {
            builder = builder.partition_keys(glue_column(key, "string")?);
        }
        builder
            .build()
            .map_err(|e| self.build_error(&registration.table, e))
    }

    fn target(&self, table: &str) -> String {
        format!("{}.{table}", self.database)
    }

    fn service_error<E: ProvideErrorMetadata + std::error::Error + 'static, R: std::fmt::Debug>(
        &self,
        action: &'static str,
        table: &str,
        error: &SdkError<E, R>,
    ) -> CatalogError {
        let message = error
            .message()
            .map(str::to_owned)
            .unwrap_or_else(|| crate::error_chain(error));
        if code_of(error).is_some_and(|c| c.contains("AccessDenied")) {
            return CatalogError::AccessDenied {
                action,
                target: self.target(table),
                message,
            };
        }
        CatalogError::Service {
            action,
            target: self.target(table),
            message,
        }
    }

    fn build_error(&self, table: &str, e: impl std::fmt::Display) -> CatalogError {
        CatalogError::Service {
            action: "request",
            target: self.target(table),
            message: e.to_string(),
        }
    }
}

#[async_trait::async_trait]
impl Catalog for GlueCatalog {
    async fn register_run(
        &self,
        registration: &TableRegistration,
    ) -> Result<CatalogOutcome, CatalogError> {
        self.check_database().await?;
        let name = &registration.table;
        let mut outcome = CatalogOutcome::default();
        let columns = match self.existing_table(name).await? {
            None => {
                let input = self.table_input(registration, &registration.columns)?;
                match self
                    .client
                    .create_table()
                    .database_name(&self.database)
                    .table_input(input)
                    .send()
                    .await
                {
                    Ok(_) => outcome.table_created = true,
                    // Another run of a sibling partition created it first: evolve from theirs.
                    Err(e) if code_of(&e) == Some("AlreadyExistsException") => {
                        return Box::pin(self.register_run(registration)).await;
                    }
                    Err(e) => return Err(self.service_error("CreateTable", name, &e)),
                }
                registration.columns.clone()
            }
            Some(table) => {
                let current = table_columns(&table);
                let evolved =
                    evolve_columns(&current, &registration.columns).map_err(|source| {
                        CatalogError::Schema {
                            table: self.target(name),
                            source,
                        }
                    })?;
                match evolved {
                    None => current,
                    Some(columns) => {
                        let input = self.table_input(registration, &columns)?;
                        self.client
                            .update_table()
                            .database_name(&self.database)
                            .table_input(input)
                            .send()
                            .await
                            .map_err(|e| self.service_error("UpdateTable", name, &e))?;
                        outcome.table_updated = true;
                        columns
                    }
                }
            }
        };
        let partition = PartitionInput::builder()
            .set_values(Some(registration.partition_values.to_vec()))
            .storage_descriptor(storage_descriptor(
                &columns,
                &registration.partition_location,
            )?)
            .build();
        outcome.partition_created = self.create_partition(name, partition).await?;
        info!(
            table = %self.target(name),
            partition = ?registration.partition_values,
            created = outcome.table_created,
            updated = outcome.table_updated,
            "catalog registered"
        );
        Ok(outcome)
    }

    async fn register_story(
        &self,
        registration: &StoryRegistration,
    ) -> Result<CatalogOutcome, CatalogError> {
        self.check_database().await?;
        let mut outcome = CatalogOutcome::default();
        if self.runs_table_checked.get().is_none() {
            outcome = self.ensure_runs_table(registration).await?;
            // Set by this call or a concurrent one: both found the table current.
            let _ = self.runs_table_checked.set(());
        }
        let values = &registration.partition_values;
        let known = self
            .story_partitions
            .lock()
            .map(|known| known.contains(values))
            .unwrap_or(false);
        if known {
            return Ok(outcome);
        }
        // A partition per table with its explicit location, as `ALTER TABLE ADD PARTITION …
        // LOCATION` makes (<https://docs.aws.amazon.com/athena/latest/ug/alter-table-add-partition.html>:
        // partition columns must not be columns of the data, and a partition keeps the table's
        // data format; its schema may differ from the table's).
        let partition = PartitionInput::builder()
            .set_values(Some(values.to_vec()))
            .storage_descriptor(json_storage_descriptor(
                &story_columns(),
                &registration.partition_location,
            )?)
            .build();
        // An existing partition was registered by an earlier story of the table (another
        // process's, or before this process started).
        outcome.partition_created = self.create_partition(RUNS_TABLE, partition).await?;
        if let Ok(mut known) = self.story_partitions.lock() {
            known.insert(values.clone());
        }
        info!(
            table = %self.target(RUNS_TABLE),
            partition = ?values,
            location = %registration.partition_location,
            created = outcome.table_created,
            updated = outcome.table_updated,
            partition_created = outcome.partition_created,
            "run stories registered"
        );
        Ok(outcome)
    }
}

/// The runs table's columns, from the one list that goes with the story's fields.
fn story_columns() -> Vec<HiveColumn> {
    RUN_STORY_COLUMNS
        .iter()
        .map(|(name, hive_type)| HiveColumn {
            name: (*name).to_owned(),
            hive_type: (*hive_type).to_owned(),
        })
        .collect()
}

/// Whether the runs table in the catalog is the one this build would create.
fn runs_table_is_current(table: &Table, columns: &[HiveColumn]) -> bool {
    let serde = table
        .storage_descriptor()
        .and_then(|sd| sd.serde_info())
        .and_then(|si| si.serialization_library());
    let keys: Vec<&str> = table.partition_keys().iter().map(|c| c.name()).collect();
    table_columns(table) == columns && serde == Some(JSON_SERDE) && keys == RUN_STORY_PARTITION_KEYS
}

fn json_storage_descriptor(
    columns: &[HiveColumn],
    location: &str,
) -> Result<StorageDescriptor, CatalogError> {
    descriptor(
        columns,
        location,
        (TEXT_INPUT_FORMAT, TEXT_OUTPUT_FORMAT),
        SerDeInfo::builder()
            .serialization_library(JSON_SERDE)
            .build(),
    )
}

/// Columns and location with the given input/output formats and SerDe.
fn descriptor(
    columns: &[HiveColumn],
    location: &str,
    (input, output): (&str, &str),
    serde: SerDeInfo,
) -> Result<StorageDescriptor, CatalogError> {
    let columns = columns
        .iter()
        .map(|c| glue_column(&c.name, &c.hive_type))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(StorageDescriptor::builder()
        .set_columns(Some(columns))
        .location(location)
        .input_format(input)
        .output_format(output)
        .serde_info(serde)
        .build())
}

fn code_of<E: ProvideErrorMetadata, R>(error: &SdkError<E, R>) -> Option<&str> {
    match error {
        SdkError::ServiceError(e) => e.err().code(),
        _ => None,
    }
}

fn glue_column(name: &str, hive_type: &str) -> Result<Column, CatalogError> {
    Column::builder()
        .name(name)
        .r#type(hive_type)
        .build()
        .map_err(|e| CatalogError::Service {
            action: "request",
            target: name.to_owned(),
            message: e.to_string(),
        })
}

fn storage_descriptor(
    columns: &[HiveColumn],
    location: &str,
) -> Result<StorageDescriptor, CatalogError> {
    descriptor(
        columns,
        location,
        (INPUT_FORMAT, OUTPUT_FORMAT),
        SerDeInfo::builder()
            .serialization_library(SERDE)
            .parameters("serialization.format", "1")
            .build(),
    )
}

fn table_columns(table: &Table) -> Vec<HiveColumn> {
    table
        .storage_descriptor()
        .map(|sd| {
            sd.columns()
                .iter()
                .map(|c| HiveColumn {
                    name: c.name().to_owned(),
                    hive_type: c.r#type().unwrap_or_default().to_owned(),
                })
                .collect()
        })
        .unwrap_or_default()
}
