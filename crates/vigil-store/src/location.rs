//! Where a storage root lives: a local directory (the default) or an
//! S3-compatible object store (`s3://bucket/prefix`), and the handle the
//! writers, the checkpoint store and the reader use to reach it.
//!
//! ```text
//!  "vigil-data" | "file:///srv/vigil" ──▶ Location::Local ──open()──▶ Root (std::fs, tmp + fsync + rename)
//!  "s3://bucket/prefix"               ──▶ Location::S3    ──open()──▶ Root (object_store AmazonS3, one PUT per file)
//! ```
//!
//! A local root keeps its `std::fs` code paths (fsync, rename, directory
//! fsync), byte for byte what it did before object stores existed. An
//! object root goes through the [`object_store`] crate, the one DataFusion
//! reads through: each file is encoded in memory and published by one
//! `PUT` of its final name, which S3 makes visible whole or not at all
//! (there is no rename on an object store; see docs/storage.md "Object
//! stores").
//!
//! Credentials never come from the location: `s3://` takes the standard
//! `AWS_*` environment variables (`AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`,
//! `AWS_ENDPOINT_URL` for an S3-compatible server, `AWS_ALLOW_HTTP=true`
//! for one without TLS, web identity and container credentials), and
//! nothing here formats them: [`Location`]'s `Display` and `Debug` show
//! the bucket and prefix only, and a URL that carries user information
//! (`s3://key:secret@bucket`) is refused without being echoed.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use futures_util::TryStreamExt as _;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt as _, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};

use crate::error::{Result, StoreError};

/// Scheme of S3-compatible object store locations.
pub const S3_SCHEME: &str = "s3";

/// Counter of object store requests made by the synchronous callers (the
/// worker's publishes, checkpoints and sweeps), labels `op` (`put`, `get`,
/// `list`, `delete`) and `status` (`ok`, `error`; an error is counted
/// once, after the client's own retries).
pub const OBJECT_REQUESTS: &str = "vigil_store_object_requests_total";
/// Histogram of the duration of those requests in seconds, label `op`.
pub const OBJECT_REQUEST_SECONDS: &str = "vigil_store_object_request_duration_seconds";

/// Counts one request of `op` that took since `started`.
fn record(op: &'static str, started: std::time::Instant, ok: bool) {
    let status = if ok { "ok" } else { "error" };
    metrics::counter!(OBJECT_REQUESTS, "op" => op, "status" => status).increment(1);
    metrics::histogram!(OBJECT_REQUEST_SECONDS, "op" => op).record(started.elapsed().as_secs_f64());
}

/// A storage root as configured: `data_dir`, `worker.state_dir`, or a
/// command's `--data-dir`. Parsed from a string (see [`FromStr`]):
/// `s3://bucket/prefix` is an object store location, `file:///path` and
/// anything without a scheme a local path.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Location {
    /// A local directory.
    Local(PathBuf),
    /// An S3-compatible bucket and a key prefix (no leading or trailing
    /// `/`; empty for the bucket's root).
    S3 {
        /// Bucket name.
        bucket: String,
        /// Key prefix under which the root's layout starts.
        prefix: String,
    },
}

impl Location {
    /// The local directory, or an error naming `what` (the command or
    /// setting) for an object store location: for the parts of Vigil
    /// that work on local directories only.
    pub fn local_dir(&self, what: &str) -> Result<&Path> {
        match self {
            Location::Local(p) => Ok(p),
            Location::S3 { .. } => Err(StoreError::Location {
                location: self.to_string(),
                problem: format!(
                    "{what} works on a local directory only (object stores are read by \
                     vigil sql, report and export, written by vigil run, compact and retention)"
                ),
            }),
        }
    }

    /// Whether this is an object store location.
    pub fn is_object_store(&self) -> bool {
        !matches!(self, Location::Local(_))
    }

    /// The location `sub` (a relative `/`-separated path) below this one.
    pub fn join(&self, sub: &str) -> Location {
        let sub = sub.trim_matches('/');
        match self {
            Location::Local(p) => Location::Local(p.join(sub)),
            Location::S3 { bucket, prefix } => Location::S3 {
                bucket: bucket.clone(),
                prefix: join_key(prefix, sub),
            },
        }
    }

    /// Opens the location: a [`Root`] that reaches it, with the default
    /// [`ObjectStoreOptions`]. For `s3://`, the client is configured from
    /// the `AWS_*` environment variables; no request is made yet.
    pub fn open(&self) -> Result<Root> {
        self.open_with(&ObjectStoreOptions::default())
    }

    /// Opens the location with `opts` bounding every object store request
    /// (ignored for a local directory).
    pub fn open_with(&self, opts: &ObjectStoreOptions) -> Result<Root> {
        match self {
            Location::Local(p) => Ok(Root::local(p.clone())),
            Location::S3 { bucket, prefix } => {
                let store = object_store::aws::AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    .with_retry(opts.retry_config());
                // Set key by key: with_client_options would replace the
                // client settings read from the environment
                // (AWS_ALLOW_HTTP, proxies).
                let store = opts
                    .client_config()
                    .into_iter()
                    .fold(store, |b, (k, v)| {
                        b.with_config(object_store::aws::AmazonS3ConfigKey::Client(k), v)
                    })
                    .build()
                    .map_err(|source| StoreError::Object {
                        op: "configure",
                        location: self.to_string(),
                        source: Box::new(source),
                    })?;
                tracing::debug!(location = %self, "object store configured from the environment");
                Ok(Root(RootKind::Object(Arc::new(ObjectRoot {
                    store: Arc::new(store),
                    base_url: format!("{S3_SCHEME}://{bucket}"),
                    prefix: prefix.clone(),
                    location: self.clone(),
                    runtime: OnceLock::new(),
                }))))
            }
        }
    }
}

/// How long one object store request may take, retries included: the
/// client's per-attempt timeouts and its retry budget. object_store's own
/// defaults (10 retries within 3 minutes, 30 s per attempt) let one
/// request of a worker's flush hang for longer than the worker's
/// `stall_timeout` (120 s), so a store outage would fail the liveness
/// probe before the flush reported an error; these defaults bound it to
/// [`ObjectStoreOptions::worst_case`] = 70 s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectStoreOptions {
    /// Longest time of one attempt, from connecting to the last byte of
    /// the response.
    pub request_timeout: std::time::Duration,
    /// Longest time to establish a connection (within `request_timeout`).
    pub connect_timeout: std::time::Duration,
    /// Most retries of a failed request (0: none).
    pub max_retries: usize,
    /// No retry starts once this long has passed since the first attempt.
    pub retry_timeout: std::time::Duration,
    /// Longest pause between two attempts (the pauses start at 100 ms and
    /// double, with jitter, up to this).
    pub max_backoff: std::time::Duration,
}

impl Default for ObjectStoreOptions {
    fn default() -> Self {
        ObjectStoreOptions {
            request_timeout: std::time::Duration::from_secs(20),
            connect_timeout: std::time::Duration::from_secs(5),
            max_retries: 3,
            retry_timeout: std::time::Duration::from_secs(45),
            max_backoff: std::time::Duration::from_secs(5),
        }
    }
}

impl ObjectStoreOptions {
    /// The longest one request can take before it fails, retries
    /// included: the smaller of every attempt timing out with the longest
    /// pause between each (`(max_retries + 1) × request_timeout +
    /// max_retries × max_backoff`), and a last retry started just before
    /// `retry_timeout` ran out (`retry_timeout + max_backoff +
    /// request_timeout`: object_store starts no retry after it).
    pub fn worst_case(&self) -> std::time::Duration {
        let n = u32::try_from(self.max_retries).unwrap_or(u32::MAX);
        let every = self
            .request_timeout
            .saturating_mul(n.saturating_add(1))
            .saturating_add(self.max_backoff.saturating_mul(n));
        let cut = if n == 0 {
            self.request_timeout
        } else {
            self.retry_timeout
                .saturating_add(self.max_backoff)
                .saturating_add(self.request_timeout)
        };
        every.min(cut)
    }

    /// Checks every setting; one problem per bad setting, named by its key.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.request_timeout.is_zero() {
            problems.push("request_timeout: must be above 0".to_owned());
        }
        if self.connect_timeout.is_zero() {
            problems.push("connect_timeout: must be above 0".to_owned());
        } else if self.connect_timeout > self.request_timeout {
            problems.push(format!(
                "connect_timeout: {:?} exceeds request_timeout ({:?}), which bounds the whole attempt",
                self.connect_timeout, self.request_timeout
            ));
        }
        problems
    }

    fn retry_config(&self) -> object_store::RetryConfig {
        object_store::RetryConfig {
            backoff: object_store::BackoffConfig {
                init_backoff: std::time::Duration::from_millis(100).min(self.max_backoff),
                max_backoff: self.max_backoff,
                base: 2.0,
            },
            max_retries: self.max_retries,
            retry_timeout: self.retry_timeout,
        }
    }

    fn client_config(&self) -> [(object_store::ClientConfigKey, String); 2] {
        let ms = |d: std::time::Duration| format!("{}ms", d.as_millis());
        [
            (
                object_store::ClientConfigKey::Timeout,
                ms(self.request_timeout),
            ),
            (
                object_store::ClientConfigKey::ConnectTimeout,
                ms(self.connect_timeout),
            ),
        ]
    }
}

fn join_key(prefix: &str, sub: &str) -> String {
    match (prefix.is_empty(), sub.is_empty()) {
        (true, _) => sub.to_owned(),
        (false, true) => prefix.to_owned(),
        (false, false) => format!("{prefix}/{sub}"),
    }
}

impl From<PathBuf> for Location {
    fn from(p: PathBuf) -> Self {
        Location::Local(p)
    }
}

impl From<&Path> for Location {
    fn from(p: &Path) -> Self {
        Location::Local(p.to_path_buf())
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Local(p) => write!(f, "{}", p.display()),
            Location::S3 { bucket, prefix } if prefix.is_empty() => {
                write!(f, "{S3_SCHEME}://{bucket}")
            }
            Location::S3 { bucket, prefix } => write!(f, "{S3_SCHEME}://{bucket}/{prefix}"),
        }
    }
}

impl fmt::Debug for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Location({self})")
    }
}

impl FromStr for Location {
    type Err = StoreError;

    /// `s3://bucket[/prefix]`, `file:///abs/path` or a path. A location
    /// with any other scheme, an `s3://` URL with user information
    /// (credentials belong in the environment; the value is not echoed),
    /// a query or fragment, or an empty bucket is an error.
    fn from_str(s: &str) -> Result<Self> {
        let err = |location: &str, problem: &str| StoreError::Location {
            location: location.to_owned(),
            problem: problem.to_owned(),
        };
        let Some((scheme, rest)) = s.split_once("://") else {
            return Ok(Location::Local(PathBuf::from(s)));
        };
        // A Windows-like or relative path with "://" in it is not a URL
        // unless the part before is a scheme.
        if scheme.is_empty()
            || !scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        {
            return Ok(Location::Local(PathBuf::from(s)));
        }
        match scheme.to_ascii_lowercase().as_str() {
            "file" => {
                if !rest.starts_with('/') {
                    return Err(err(
                        s,
                        "a file:// URL needs an absolute path (file:///data/vigil)",
                    ));
                }
                Ok(Location::Local(PathBuf::from(rest)))
            }
            S3_SCHEME => {
                let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
                if authority.contains('@') {
                    // Never echo it: the part before '@' is a secret.
                    return Err(err(
                        "s3://<redacted>",
                        "credentials in the URL are refused; set AWS_ACCESS_KEY_ID and \
                         AWS_SECRET_ACCESS_KEY (or another AWS credential source) in the environment",
                    ));
                }
                if path.contains(['?', '#']) || authority.contains(['?', '#']) {
                    return Err(err(s, "an s3:// location has no query or fragment"));
                }
                if authority.is_empty() {
                    return Err(err(s, "an s3:// location needs a bucket: s3://bucket/prefix"));
                }
                let prefix: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
                if prefix.iter().any(|p| *p == "." || *p == "..") {
                    return Err(err(s, "an s3:// prefix has no . or .. parts"));
                }
                Ok(Location::S3 {
                    bucket: authority.to_owned(),
                    prefix: prefix.join("/"),
                })
            }
            other => Err(err(
                s,
                &format!(
                    "unsupported scheme {other}:// (a local path, file:///path or s3://bucket/prefix)"
                ),
            )),
        }
    }
}

impl TryFrom<String> for Location {
    type Error = StoreError;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<Location> for String {
    fn from(l: Location) -> String {
        l.to_string()
    }
}

/// An opened storage root: how the writers, the checkpoint store and the
/// reader reach a [`Location`]. Cheap to clone (shared client).
#[derive(Clone)]
pub struct Root(RootKind);

#[derive(Clone)]
enum RootKind {
    Local(PathBuf),
    Object(Arc<ObjectRoot>),
}

impl fmt::Debug for Root {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the client's own Debug (its configuration).
        write!(f, "Root({})", self.location())
    }
}

impl Root {
    /// A local directory root.
    pub fn local(dir: impl Into<PathBuf>) -> Root {
        Root(RootKind::Local(dir.into()))
    }

    /// A local directory under `dir` and an in-memory object store: the
    /// two kinds of root a store test runs on.
    #[cfg(test)]
    pub(crate) fn test_pair(dir: &std::path::Path) -> [Root; 2] {
        let mem = Arc::new(object_store::memory::InMemory::new());
        [Root::local(dir), Root::s3_with_store("b", "p", mem)]
    }

    /// A root over an already built `store`, standing for
    /// `s3://bucket/prefix` (a client configured in code rather than from
    /// the environment, or `object_store`'s in-memory store in tests).
    pub fn s3_with_store(bucket: &str, prefix: &str, store: Arc<dyn ObjectStore>) -> Root {
        let prefix = prefix.trim_matches('/').to_owned();
        Root(RootKind::Object(Arc::new(ObjectRoot {
            store,
            base_url: format!("{S3_SCHEME}://{bucket}"),
            location: Location::S3 {
                bucket: bucket.to_owned(),
                prefix: prefix.clone(),
            },
            prefix,
            runtime: OnceLock::new(),
        })))
    }

    /// The local directory, or `None` for an object store.
    pub fn as_local(&self) -> Option<&Path> {
        match &self.0 {
            RootKind::Local(p) => Some(p),
            RootKind::Object(_) => None,
        }
    }

    /// The object store, or `None` for a local directory.
    pub fn as_object(&self) -> Option<&ObjectRoot> {
        match &self.0 {
            RootKind::Local(_) => None,
            RootKind::Object(o) => Some(o),
        }
    }

    /// The location this root was opened from.
    pub fn location(&self) -> Location {
        match &self.0 {
            RootKind::Local(p) => Location::Local(p.clone()),
            RootKind::Object(o) => o.location.clone(),
        }
    }

    /// Publishes `bytes` as `rel` (a `/`-separated path under the root):
    /// in a local directory by tmp + fsync (when `sync`) + rename, in an
    /// object store by one PUT that replaces an object of that name.
    /// Returns the path (for an object store, its URL).
    pub fn write_file(&self, rel: &str, bytes: &[u8], sync: bool) -> Result<PathBuf> {
        match &self.0 {
            RootKind::Local(root) => {
                let path = root.join(rel);
                let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
                    return Err(StoreError::Config {
                        field: "file path",
                        problem: format!("{rel} has no file name"),
                    });
                };
                let name = name.to_string_lossy().into_owned();
                let (path, ()) = crate::atomic::write_atomic(dir, &name, sync, |mut file, tmp| {
                    use std::io::Write as _;
                    file.write_all(bytes).map_err(StoreError::io("write", tmp))
                })?;
                Ok(path)
            }
            RootKind::Object(o) => {
                o.put(rel, bytes.to_vec(), PutMode::Overwrite)?;
                Ok(PathBuf::from(o.url(rel)))
            }
        }
    }

    /// How `rel` (a `/`-separated path under the root) is shown in logs,
    /// reports and errors: the local path, or `s3://bucket/prefix/rel`.
    pub fn display_path(&self, rel: &str) -> PathBuf {
        match &self.0 {
            RootKind::Local(p) => p.join(rel),
            RootKind::Object(o) => PathBuf::from(o.url(rel)),
        }
    }
}

impl From<&Path> for Root {
    fn from(p: &Path) -> Self {
        Root::local(p)
    }
}

impl From<&Root> for Root {
    fn from(r: &Root) -> Self {
        r.clone()
    }
}

impl From<&PathBuf> for Root {
    fn from(p: &PathBuf) -> Self {
        Root::local(p.clone())
    }
}

impl From<PathBuf> for Root {
    fn from(p: PathBuf) -> Self {
        Root::local(p)
    }
}

/// An object store root: the client, the key prefix, and a small runtime
/// for the synchronous callers (the worker's flush, the checkpoint
/// store). Async callers (DataFusion) use [`ObjectRoot::store`] directly.
pub struct ObjectRoot {
    store: Arc<dyn ObjectStore>,
    /// `s3://bucket`: the URL DataFusion registers the store under.
    base_url: String,
    prefix: String,
    location: Location,
    /// Started at the first synchronous call (one thread): a root only
    /// queried through DataFusion never starts it.
    runtime: OnceLock<std::io::Result<tokio::runtime::Runtime>>,
}

impl fmt::Debug for ObjectRoot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectRoot({})", self.location)
    }
}

impl ObjectRoot {
    /// The client.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// `s3://bucket`, the URL the store is registered under in a
    /// DataFusion session.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The key prefix of the root (no leading or trailing `/`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The object key of `rel` under the root.
    pub fn key(&self, rel: &str) -> ObjectPath {
        ObjectPath::from(join_key(&self.prefix, rel.trim_matches('/')))
    }

    /// `s3://bucket/prefix/rel`.
    pub fn url(&self, rel: &str) -> String {
        let key = join_key(&self.prefix, rel.trim_matches('/'));
        if key.is_empty() {
            self.base_url.clone()
        } else {
            format!("{}/{key}", self.base_url)
        }
    }

    fn error(&self, op: &'static str, rel: &str, source: object_store::Error) -> StoreError {
        StoreError::Object {
            op,
            location: self.url(rel),
            source: Box::new(source),
        }
    }

    /// Runs `f` to completion on the root's runtime. Usable from any
    /// thread, also one inside another tokio runtime (it then waits on a
    /// scoped thread of its own).
    fn block_on<F, T>(&self, f: F) -> Result<T>
    where
        F: std::future::Future<Output = T> + Send,
        T: Send,
    {
        let rt = self.runtime.get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("vigil-object-store")
                .enable_all()
                .build()
        });
        let rt = rt.as_ref().map_err(|e| StoreError::Io {
            op: "start the object store runtime",
            path: PathBuf::from(self.location.to_string()),
            source: std::io::Error::new(e.kind(), e.to_string()),
        })?;
        if tokio::runtime::Handle::try_current().is_ok() {
            Ok(std::thread::scope(|s| {
                s.spawn(|| rt.block_on(f))
                    .join()
                    .unwrap_or_else(|p| std::panic::resume_unwind(p))
            }))
        } else {
            Ok(rt.block_on(f))
        }
    }

    /// Writes `bytes` as `rel` with one PUT: the object appears whole or
    /// not at all. `PutMode::Overwrite` replaces an object of that name
    /// (a replay's rewrite, a checkpoint); `PutMode::Create` fails with
    /// [`StoreError::Object`] whose source is `AlreadyExists` when one
    /// exists (a conditional PUT, `If-None-Match: *`).
    pub fn put(&self, rel: &str, bytes: Vec<u8>, mode: PutMode) -> Result<u64> {
        let key = self.key(rel);
        let n = bytes.len() as u64;
        let opts = PutOptions {
            mode,
            ..PutOptions::default()
        };
        let payload = PutPayload::from(Bytes::from(bytes));
        let started = std::time::Instant::now();
        let r = self.block_on(self.store.put_opts(&key, payload, opts))?;
        record("put", started, r.is_ok());
        r.map_err(|e| self.error("put", rel, e))?;
        tracing::debug!(location = %self.url(rel), bytes = n, "object put");
        Ok(n)
    }

    /// Writes what `write` streams as `rel`, replacing an object of that
    /// name, without holding more than [`PART_BYTES`] of it in memory: up
    /// to that size one PUT, beyond it a multipart upload of parts of that
    /// size, sent as they fill, which the store makes visible only when
    /// the upload completes (whole, like a PUT). When `write` or a request
    /// fails, the upload is aborted and `rel` keeps its old content.
    /// Returns the bytes written.
    pub fn put_streamed(
        &self,
        rel: &str,
        write: impl FnOnce(&mut dyn std::io::Write) -> std::io::Result<()>,
    ) -> Result<u64> {
        let mut w = PartWriter {
            root: self,
            rel,
            buf: Vec::new(),
            upload: None,
            parts: 0,
            bytes: 0,
            failed: None,
        };
        let streamed = write(&mut w).and_then(|()| std::io::Write::flush(&mut w));
        if let Err(e) = streamed {
            w.abort();
            return Err(w.failed.take().unwrap_or(StoreError::Io {
                op: "encode",
                path: PathBuf::from(self.url(rel)),
                source: e,
            }));
        }
        let Some(mut upload) = w.upload.take() else {
            return self.put(rel, std::mem::take(&mut w.buf), PutMode::Overwrite);
        };
        let last = std::mem::take(&mut w.buf);
        let started = std::time::Instant::now();
        let done = self.block_on(async {
            if !last.is_empty() {
                upload.put_part(PutPayload::from(Bytes::from(last))).await?;
            }
            upload.complete().await
        })?;
        record("put", started, done.is_ok());
        match done {
            Ok(_) => {
                tracing::debug!(location = %self.url(rel), bytes = w.bytes, parts = w.parts + 1, "object put in parts");
                Ok(w.bytes)
            }
            Err(e) => {
                w.upload = Some(upload);
                w.abort();
                Err(self.error("put", rel, e))
            }
        }
    }

    /// The bytes of `rel`, or `None` when there is no such object.
    pub fn get(&self, rel: &str) -> Result<Option<Bytes>> {
        let key = self.key(rel);
        let started = std::time::Instant::now();
        let r = self.block_on(async {
            match self.store.get(&key).await {
                Ok(g) => g.bytes().await.map(Some),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        })?;
        record("get", started, r.is_ok());
        r.map_err(|e| self.error("get", rel, e))
    }

    /// Every object under `rel` (recursively), with keys relative to the
    /// root. A prefix with no object lists nothing.
    pub fn list(&self, rel: &str) -> Result<Vec<ObjectMeta>> {
        let key = self.key(rel);
        let prefix = (!key.as_ref().is_empty()).then_some(&key);
        let started = std::time::Instant::now();
        let r = self.block_on(self.store.list(prefix).try_collect::<Vec<_>>())?;
        record("list", started, r.is_ok());
        let mut all = r.map_err(|e| self.error("list", rel, e))?;
        let strip = if self.prefix.is_empty() {
            0
        } else {
            self.prefix.len() + 1
        };
        for o in &mut all {
            let k = o.location.as_ref();
            o.location = ObjectPath::from(k.get(strip..).unwrap_or(k));
        }
        Ok(all)
    }

    /// The entries directly under `rel` (a "directory": the keys below
    /// `rel/` up to the next `/`): names of the sub-prefixes and the
    /// objects, each object's location being its name alone; both sorted.
    pub fn list_dir(&self, rel: &str) -> Result<(Vec<String>, Vec<ObjectMeta>)> {
        let key = self.key(rel);
        let prefix = (!key.as_ref().is_empty()).then_some(&key);
        let started = std::time::Instant::now();
        let r = self.block_on(self.store.list_with_delimiter(prefix))?;
        record("list", started, r.is_ok());
        let r = r.map_err(|e| self.error("list", rel, e))?;
        let last = |p: &ObjectPath| p.filename().unwrap_or_default().to_owned();
        let mut dirs: Vec<String> = r.common_prefixes.iter().map(last).collect();
        let mut files = r.objects;
        for o in &mut files {
            o.location = ObjectPath::from(last(&o.location));
        }
        dirs.sort();
        files.sort_by(|a, b| a.location.cmp(&b.location));
        Ok((dirs, files))
    }

    /// Writes `bytes` as `rel` with one conditional PUT that never
    /// replaces (`If-None-Match: *`): `Ok(None)` when an object of that
    /// name exists, else the new object's entity tag (when the store gives
    /// one).
    pub fn put_new(&self, rel: &str, bytes: Vec<u8>) -> Result<Option<Option<String>>> {
        let key = self.key(rel);
        let n = bytes.len() as u64;
        let opts = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        let payload = PutPayload::from(Bytes::from(bytes));
        let started = std::time::Instant::now();
        let r = self.block_on(self.store.put_opts(&key, payload, opts))?;
        record("put", started, r.is_ok());
        match r {
            Ok(done) => {
                tracing::debug!(location = %self.url(rel), bytes = n, "object put (new)");
                Ok(Some(done.e_tag))
            }
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. },
            ) => Ok(None),
            Err(e) => Err(self.error("put", rel, e)),
        }
    }

    /// Copies `from` to `to` on the store (server side), replacing `to`.
    /// Returns false when `from` does not exist (nothing is copied).
    pub fn copy(&self, from: &str, to: &str) -> Result<bool> {
        let (src, dst) = (self.key(from), self.key(to));
        let started = std::time::Instant::now();
        let r = match self.block_on(self.store.copy(&src, &dst))? {
            Ok(()) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.error("copy", from, e)),
        };
        record("copy", started, r.is_ok());
        r
    }

    /// Removes `rel`; removing an object that is not there is not an error.
    pub fn delete(&self, rel: &str) -> Result<()> {
        let key = self.key(rel);
        let started = std::time::Instant::now();
        let r = match self.block_on(self.store.delete(&key))? {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.error("delete", rel, e)),
        };
        record("delete", started, r.is_ok());
        r
    }
}

/// Size of the parts of a streamed upload ([`ObjectRoot::put_streamed`]),
/// and the most of it held in memory: 8 MiB (S3's parts must be at least
/// 5 MiB, except the last).
pub const PART_BYTES: usize = 8 << 20;

/// The writer behind [`ObjectRoot::put_streamed`].
struct PartWriter<'a> {
    root: &'a ObjectRoot,
    rel: &'a str,
    buf: Vec<u8>,
    upload: Option<Box<dyn object_store::MultipartUpload>>,
    parts: usize,
    bytes: u64,
    /// The store's error behind a failed write, reported instead of the
    /// I/O error the encoder sees.
    failed: Option<StoreError>,
}

impl PartWriter<'_> {
    /// Sends the buffer as the next part, starting the upload first.
    fn send_part(&mut self) -> Result<()> {
        let root = self.root;
        let key = root.key(self.rel);
        let started = std::time::Instant::now();
        if self.upload.is_none() {
            let up = root.block_on(root.store.put_multipart(&key))?;
            record("put", started, up.is_ok());
            self.upload = Some(up.map_err(|e| root.error("put", self.rel, e))?);
        }
        let part = PutPayload::from(Bytes::from(std::mem::take(&mut self.buf)));
        let Some(upload) = self.upload.as_mut() else {
            return Ok(());
        };
        let sent = root.block_on(upload.put_part(part))?;
        record("put", started, sent.is_ok());
        sent.map_err(|e| root.error("put", self.rel, e))?;
        self.parts += 1;
        Ok(())
    }

    /// Aborts a started upload (best effort: a store's lifecycle rule
    /// removes parts an abort could not).
    fn abort(&mut self) {
        if let Some(mut up) = self.upload.take() {
            match self.root.block_on(up.abort()) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(location = %self.root.url(self.rel), error = %e, "could not abort a multipart upload")
                }
                Err(e) => {
                    tracing::warn!(location = %self.root.url(self.rel), error = %e, "could not abort a multipart upload")
                }
            }
        }
    }
}

impl std::io::Write for PartWriter<'_> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = data.len().min(PART_BYTES - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        self.bytes += n as u64;
        if self.buf.len() == PART_BYTES {
            if let Err(e) = self.send_part() {
                let io = std::io::Error::other(e.to_string());
                self.failed = Some(e);
                return Err(io);
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_paths_files_and_s3() {
        let l: Location = "vigil-data".parse().unwrap();
        assert_eq!(l, Location::Local("vigil-data".into()));
        let l: Location = "file:///srv/vigil".parse().unwrap();
        assert_eq!(l, Location::Local("/srv/vigil".into()));
        let l: Location = "s3://bucket/a//b/".parse().unwrap();
        assert_eq!(
            l,
            Location::S3 {
                bucket: "bucket".into(),
                prefix: "a/b".into()
            }
        );
        assert_eq!(l.to_string(), "s3://bucket/a/b");
        assert_eq!(
            l.join("aggregates").to_string(),
            "s3://bucket/a/b/aggregates"
        );
        let root: Location = "s3://bucket".parse().unwrap();
        assert_eq!(root.to_string(), "s3://bucket");
        assert_eq!(root.join("x").to_string(), "s3://bucket/x");
        assert!(l.is_object_store());
        assert!(l.local_dir("vigil compact").is_err());
        for bad in [
            "gs://b/p",
            "s3://",
            "s3:///p",
            "s3://b/p?x=1",
            "s3://b/../p",
            "file://relative",
            "file://",
        ] {
            assert!(bad.parse::<Location>().is_err(), "{bad}");
        }
    }

    /// The worst case of one request: the retry budget's cut by default
    /// (45 s + 5 s + 20 s), every attempt timing out when retries are few,
    /// one attempt without retries.
    #[test]
    fn worst_case_request_time_is_the_smaller_bound() {
        let d = ObjectStoreOptions::default();
        assert_eq!(d.worst_case(), std::time::Duration::from_secs(70));
        let few = ObjectStoreOptions {
            max_retries: 1,
            ..d
        };
        // 2 attempts x 20 s + 1 pause of 5 s = 45 s < 70 s.
        assert_eq!(few.worst_case(), std::time::Duration::from_secs(45));
        let none = ObjectStoreOptions {
            max_retries: 0,
            ..d
        };
        assert_eq!(none.worst_case(), d.request_timeout);
        // object_store's own defaults: 10 retries within 3 min, 30 s per
        // attempt, pauses up to 15 s: 225 s, above a 120 s stall timeout.
        let theirs = ObjectStoreOptions {
            request_timeout: std::time::Duration::from_secs(30),
            connect_timeout: std::time::Duration::from_secs(5),
            max_retries: 10,
            retry_timeout: std::time::Duration::from_secs(180),
            max_backoff: std::time::Duration::from_secs(15),
        };
        assert_eq!(theirs.worst_case(), std::time::Duration::from_secs(225));
        assert!(d.validate().is_empty());
    }

    #[test]
    fn credentials_in_a_url_are_refused_without_echo() {
        let e = "s3://AKIA:marker-secret-0451@bucket/p"
            .parse::<Location>()
            .unwrap_err()
            .to_string();
        assert!(
            !e.contains("marker-secret-0451") && !e.contains("AKIA"),
            "{e}"
        );
        assert!(e.contains("environment"), "{e}");
    }

    #[test]
    fn serde_round_trips_as_a_string() {
        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        struct S {
            d: Location,
        }
        let s: S = toml::from_str("d = \"s3://b/p\"").unwrap();
        assert_eq!(s.d.to_string(), "s3://b/p");
        assert_eq!(toml::to_string(&s).unwrap().trim(), "d = \"s3://b/p\"");
        assert!(toml::from_str::<S>("d = \"ftp://x\"").is_err());
    }
}
