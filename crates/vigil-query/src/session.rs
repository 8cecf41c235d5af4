//! The query session: a DataFusion [`SessionContext`] with the Parquet
//! datasets registered as listing tables.
//!
//! Each dataset `<root>/<name>/date=YYYY-MM-DD/*.parquet` becomes the table
//! `<name>` with the file schema from `vigil-store` plus the Hive partition
//! column `date` of type `Date32` (see [`PARTITION_TYPE`]). The schemas are
//! given, not inferred, so an empty or missing dataset is an empty table,
//! and a file with a foreign schema is an error rather than a silent change.
//! Files are listed through [`RuleStore`], so the inputs of a compaction
//! that a published compacted file covers are never read twice.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::TableProvider;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::execution::context::{SQLOptions, SessionConfig, SessionContext};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::Expr;
use datafusion::object_store::local::LocalFileSystem;
use vigil_store::{Dataset, PARTITION_COLUMN};

use crate::listing::RuleStore;

use crate::error::{QueryError, Result};

/// Type of the `date` partition column: `Date32`.
///
/// Chosen over `Utf8` because comparisons with string literals
/// (`WHERE date >= '2026-11-02'`) coerce the literal to a date and still
/// prune directories, while date arithmetic
/// (`date >= current_date - INTERVAL '7 days'`) and `BETWEEN` work too;
/// DuckDB and Spark infer the same type for `date=YYYY-MM-DD` directories.
pub const PARTITION_TYPE: DataType = DataType::Date32;

/// The table schema of a dataset: its file schema followed by the
/// `date` partition column.
pub fn table_schema(dataset: Dataset) -> SchemaRef {
    let file = dataset.schema();
    let mut fields: Vec<Field> = file.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new(PARTITION_COLUMN, PARTITION_TYPE, false));
    Arc::new(Schema::new(fields))
}

/// A read-only SQL session over one storage root.
///
/// Async methods do CPU-heavy work: run them on a runtime the caller owns
/// (the binary's, or [`crate::block_on`]), not on an I/O runtime serving
/// network traffic.
#[derive(Clone)]
pub struct QuerySession {
    ctx: SessionContext,
    root: PathBuf,
}

impl std::fmt::Debug for QuerySession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuerySession")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

impl QuerySession {
    /// Opens `root`, registering `aggregates` and `alerts` over
    /// `<root>/aggregates/` and `<root>/alerts/`. A dataset directory that
    /// does not exist yet is an empty table; files that appear later are
    /// seen by later queries (directories are listed per query).
    pub fn open(root: &Path) -> Result<Self> {
        let mut config = SessionConfig::new().with_information_schema(true);
        {
            let opts = config.options_mut();
            opts.execution.collect_statistics = true;
            opts.execution.parquet.pruning = true;
            opts.execution.parquet.enable_page_index = true;
            opts.execution.parquet.pushdown_filters = true;
            opts.execution.parquet.reorder_filters = true;
        }
        let ctx = SessionContext::new_with_config(config);
        // Listings follow the storage contract's reader rule: inputs a
        // published compacted file covers are not read (docs/storage.md).
        let local = ObjectStoreUrl::local_filesystem();
        ctx.register_object_store(
            local.as_ref(),
            Arc::new(RuleStore::new(Arc::new(LocalFileSystem::new()))),
        );
        let root = std::path::absolute(root).unwrap_or_else(|_| root.to_path_buf());
        for dataset in Dataset::ALL {
            let dir = root.join(dataset.name());
            let table = listing_table(&dir, dataset).map_err(|source| QueryError::Register {
                table: dataset.name(),
                path: dir.clone(),
                source: Box::new(source),
            })?;
            ctx.register_table(dataset.name(), Arc::new(table))
                .map_err(|source| QueryError::Register {
                    table: dataset.name(),
                    path: dir.clone(),
                    source: Box::new(source),
                })?;
        }
        Ok(QuerySession { ctx, root })
    }

    /// The storage root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The underlying DataFusion context (to register more tables or UDFs).
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// A session over the same datasets in which each table holds only
    /// the rows `filter` keeps for its dataset (`None`: every row): the
    /// tables keep their names, so the same SQL text runs over the whole
    /// history or a slice of it. Filters are expressions (values only ever
    /// literals), applied below every query and pushed down to the Parquet
    /// scans (partition and statistics pruning).
    pub async fn scoped(&self, filter: impl Fn(Dataset) -> Option<Expr>) -> Result<QuerySession> {
        // The same runtime: its object stores list through the reader rule.
        let ctx =
            SessionContext::new_with_config_rt(self.ctx.copied_config(), self.ctx.runtime_env());
        for dataset in Dataset::ALL {
            let name = dataset.name();
            let err = |source| QueryError::Register {
                table: name,
                path: self.root.join(name),
                source: Box::new(source),
            };
            let provider = self.ctx.table_provider(name).await.map_err(err)?;
            let table: Arc<dyn TableProvider> = match filter(dataset) {
                None => provider,
                Some(expr) => self
                    .ctx
                    .read_table(provider)
                    .and_then(|df| df.filter(expr))
                    .map_err(err)?
                    .into_view(),
            };
            ctx.register_table(name, table).map_err(err)?;
        }
        Ok(QuerySession {
            ctx,
            root: self.root.clone(),
        })
    }

    /// Runs one read-only SQL statement (`SELECT`, `WITH`, `EXPLAIN`,
    /// `SHOW`/`information_schema`; DDL, DML such as `COPY` or `INSERT`,
    /// and `SET` are refused) and collects the result. The result always
    /// holds at least one batch, empty when there are no rows, so the
    /// schema is known to renderers.
    pub async fn sql(&self, query: &str) -> Result<Vec<RecordBatch>> {
        let err = |source| QueryError::Sql {
            query: query.to_owned(),
            source: Box::new(source),
        };
        let options = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let df = self
            .ctx
            .sql_with_options(query, options)
            .await
            .map_err(err)?;
        let schema: SchemaRef = df.schema().inner().clone();
        let mut batches = df.collect().await.map_err(err)?;
        if batches.is_empty() {
            batches.push(RecordBatch::new_empty(schema));
        }
        Ok(batches)
    }
}

fn listing_table(dir: &Path, dataset: Dataset) -> datafusion::error::Result<ListingTable> {
    // A trailing separator marks a directory even when it does not exist.
    let mut url = dir.to_string_lossy().into_owned();
    if !url.ends_with(std::path::MAIN_SEPARATOR) {
        url.push(std::path::MAIN_SEPARATOR);
    }
    let url = ListingTableUrl::parse(url)?;
    let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
        .with_file_extension(".parquet")
        .with_table_partition_cols(vec![(PARTITION_COLUMN.to_owned(), PARTITION_TYPE)]);
    let config = ListingTableConfig::new(url)
        .with_listing_options(options)
        .with_schema(dataset.schema());
    ListingTable::try_new(config)
}
