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
use datafusion::common::ScalarValue;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::error::DataFusionError;
use datafusion::execution::cache::cache_manager::CacheManagerConfig;
use datafusion::execution::context::{SQLOptions, SessionConfig, SessionContext};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::logical_expr::Expr;
use datafusion::object_store::local::LocalFileSystem;
use datafusion::object_store::ObjectStore;
use vigil_store::{Dataset, Location, Root, PARTITION_COLUMN};

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
        let root = std::path::absolute(root).unwrap_or_else(|_| root.to_path_buf());
        let local = ObjectStoreUrl::local_filesystem();
        let dir_url = |dataset: Dataset| {
            // A trailing separator marks a directory even when it does
            // not exist.
            let mut url = root.join(dataset.name()).to_string_lossy().into_owned();
            if !url.ends_with(std::path::MAIN_SEPARATOR) {
                url.push(std::path::MAIN_SEPARATOR);
            }
            url
        };
        Self::open_store(&root, &local, Arc::new(LocalFileSystem::new()), dir_url)
    }

    /// Opens `location`: a local directory as [`QuerySession::open`], or
    /// an object store (`s3://bucket/prefix`, its client configured from
    /// the `AWS_*` environment variables) registered in the session under
    /// `s3://bucket`, with the datasets under `<prefix>/aggregates/` and
    /// `<prefix>/alerts/`. Listings follow the same reader rule on both.
    pub fn open_location(location: &Location) -> Result<Self> {
        let root = location.open().map_err(|source| QueryError::Location {
            location: location.to_string(),
            source,
        })?;
        Self::open_root(&root)
    }

    /// [`QuerySession::open_location`] over an opened [`Root`] (for a
    /// client configured in code).
    pub fn open_root(root: &Root) -> Result<Self> {
        let Some(obj) = root.as_object() else {
            return Self::open(&root.display_path(""));
        };
        let location = root.location().to_string();
        let base =
            ObjectStoreUrl::parse(obj.base_url()).map_err(|source| QueryError::Register {
                table: "(object store)",
                path: PathBuf::from(&location),
                source: Box::new(source),
            })?;
        let dir_url = |dataset: Dataset| format!("{}/", obj.url(dataset.name()));
        Self::open_store(Path::new(&location), &base, obj.store().clone(), dir_url)
    }

    /// Builds the session: `store` registered under `store_url` (listing
    /// through the reader rule), each dataset a table over `dir_url(it)`.
    fn open_store(
        root: &Path,
        store_url: &ObjectStoreUrl,
        store: Arc<dyn ObjectStore>,
        dir_url: impl Fn(Dataset) -> String,
    ) -> Result<Self> {
        let mut config = SessionConfig::new().with_information_schema(true);
        {
            let opts = config.options_mut();
            opts.execution.collect_statistics = true;
            opts.execution.parquet.pruning = true;
            opts.execution.parquet.enable_page_index = true;
            opts.execution.parquet.pushdown_filters = true;
            opts.execution.parquet.reorder_filters = true;
        }
        // No cache of directory listings (DataFusion keeps them forever by
        // default): a long-lived session must see the files workers
        // publish, and not the ones compaction or retention removed.
        // Statistics and footer caches stay: they are keyed by each
        // file's size and modification time.
        let runtime = RuntimeEnvBuilder::new()
            .with_cache_manager(CacheManagerConfig::default().with_list_files_cache_limit(0))
            .build_arc()
            .map_err(|source| QueryError::Register {
                table: "(runtime)",
                path: root.to_path_buf(),
                source: Box::new(source),
            })?;
        let ctx = SessionContext::new_with_config_rt(config, runtime);
        // Listings follow the storage contract's reader rule: inputs a
        // published compacted file covers are not read (docs/storage.md).
        ctx.register_object_store(store_url.as_ref(), Arc::new(RuleStore::new(store)));
        let root = root.to_path_buf();
        for dataset in Dataset::ALL {
            let dir = root.join(dataset.name());
            let table = listing_table(&dir_url(dataset), dataset).map_err(|source| {
                QueryError::Register {
                    table: dataset.name(),
                    path: dir.clone(),
                    source: Box::new(source),
                }
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

    /// The storage root (for an object store, its URL as a path, for
    /// messages).
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
        self.sql_with_params(query, &[]).await
    }

    /// [`QuerySession::sql`] with named parameters: each `$name` in the
    /// query is replaced by the value given for `name`, as a literal of
    /// the type the query expects there (`mean > $limit` makes `$limit` a
    /// float, `tenant = $t` a string), never as SQL text, so a value
    /// cannot change the statement. A placeholder without a value, a
    /// value for no placeholder, and a value that does not parse as the
    /// expected type are errors ([`QueryError::Param`]).
    ///
    /// A file that disappears between planning and reading (compaction
    /// or retention removing what a worker or an earlier run published)
    /// makes the query plan again over the files then present, up to
    /// [`REPLAN_ATTEMPTS`] times: every published file holds whole rows
    /// and the reader rule hides inputs a compacted file covers, so a
    /// re-planned query sees each row once.
    pub async fn sql_with_params(
        &self,
        query: &str,
        params: &[(String, String)],
    ) -> Result<Vec<RecordBatch>> {
        let mut attempt = 1;
        loop {
            let df = self.plan(query, params).await?;
            let schema: SchemaRef = df.schema().inner().clone();
            match df.collect().await {
                Ok(mut batches) => {
                    if batches.is_empty() {
                        batches.push(RecordBatch::new_empty(schema));
                    }
                    return Ok(batches);
                }
                Err(e) if attempt < REPLAN_ATTEMPTS && is_vanished_file(&e) => {
                    tracing::warn!(attempt, error = %e, "a file went away during the query; planning again");
                    attempt += 1;
                }
                Err(e) => return Err(sql_error(query, e)),
            }
        }
    }

    /// The plan of `query` (with `params` as in
    /// [`QuerySession::sql_with_params`]) as `EXPLAIN` shows it: the
    /// logical and physical plans, or with `analyze` the physical plan
    /// annotated with what running it did (rows, files and row groups
    /// pruned, time).
    pub async fn explain(
        &self,
        query: &str,
        params: &[(String, String)],
        analyze: bool,
    ) -> Result<Vec<RecordBatch>> {
        let df = self.plan(query, params).await?;
        let df = df
            .explain(false, analyze)
            .map_err(|e| sql_error(query, e))?;
        df.collect().await.map_err(|e| sql_error(query, e))
    }

    /// Plans one read-only statement and binds its parameters.
    async fn plan(
        &self,
        query: &str,
        params: &[(String, String)],
    ) -> Result<datafusion::dataframe::DataFrame> {
        let options = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let df = self
            .ctx
            .sql_with_options(query, options)
            .await
            .map_err(|e| sql_error(query, e))?;
        let types = df
            .logical_plan()
            .get_parameter_types()
            .map_err(|e| sql_error(query, e))?;
        if types.is_empty() && params.is_empty() {
            return Ok(df);
        }
        let values = bind(&types, params)?;
        df.with_param_values(values)
            .map_err(|e| sql_error(query, e))
    }
}

/// How many times a query is planned when files vanish under it.
pub const REPLAN_ATTEMPTS: u32 = 3;

/// Placeholder values for `types` (ids `$name`) from `name=value` pairs.
fn bind(
    types: &std::collections::HashMap<String, Option<DataType>>,
    params: &[(String, String)],
) -> Result<std::collections::HashMap<String, ScalarValue>> {
    let mut values = std::collections::HashMap::new();
    for (name, value) in params {
        let Some(expected) = types.get(&format!("${name}")) else {
            let mut known: Vec<&str> = types.keys().map(|k| &k[1..]).collect();
            known.sort_unstable();
            return Err(QueryError::Param {
                name: name.clone(),
                problem: if known.is_empty() {
                    "the query has no $placeholders".into()
                } else {
                    format!("the query has no ${name} (it has ${})", known.join(", $"))
                },
            });
        };
        if values.contains_key(name) {
            return Err(QueryError::Param {
                name: name.clone(),
                problem: "given twice".into(),
            });
        }
        let ty = expected.clone().unwrap_or(DataType::Utf8);
        let scalar =
            ScalarValue::try_from_string(value.clone(), &ty).map_err(|e| QueryError::Param {
                name: name.clone(),
                problem: format!("{value:?} is not a {ty}: {e}"),
            })?;
        values.insert(name.clone(), scalar);
    }
    let mut missing: Vec<&str> = types
        .keys()
        .map(|k| &k[1..])
        .filter(|k| !values.contains_key(*k))
        .collect();
    missing.sort_unstable();
    if let Some(first) = missing.first() {
        return Err(QueryError::Param {
            name: (*first).to_string(),
            problem: format!(
                "no value given (--param {}=...)",
                missing.join("=... --param ")
            ),
        });
    }
    Ok(values)
}

/// Whether `e` is an object store "not found": a listed file was gone
/// when it was read.
fn is_vanished_file(e: &DataFusionError) -> bool {
    use datafusion::object_store::Error as StoreError;
    // Walk the chain: DataFusion wraps the store error in contexts,
    // shared errors and Parquet errors.
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = next {
        if matches!(
            err.downcast_ref::<StoreError>(),
            Some(StoreError::NotFound { .. })
        ) || err
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::NotFound)
        {
            return true;
        }
        next = err.source();
    }
    false
}

fn sql_error(query: &str, source: DataFusionError) -> QueryError {
    QueryError::Sql {
        query: query.to_owned(),
        source: Box::new(source),
    }
}

fn listing_table(url: &str, dataset: Dataset) -> datafusion::error::Result<ListingTable> {
    let url = ListingTableUrl::parse(url)?;
    let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
        .with_file_extension(".parquet")
        .with_table_partition_cols(vec![(PARTITION_COLUMN.to_owned(), PARTITION_TYPE)]);
    let config = ListingTableConfig::new(url)
        .with_listing_options(options)
        .with_schema(dataset.schema());
    ListingTable::try_new(config)
}
