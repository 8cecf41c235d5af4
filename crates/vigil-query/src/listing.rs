//! The storage contract's reader rule, applied to DataFusion's file
//! listings: [`RuleStore`] wraps the local file system's object store and
//! drops from every listing the dataset files that a compacted file in the
//! same directory covers ([`vigil_store::compact::superseded`]).
//!
//! Compaction publishes its output before it removes the inputs (a POSIX
//! directory cannot swap several names at once), so for a moment (or,
//! after a crash, until the next run) a `date=` directory holds a
//! compacted file and some of the files it merged. A listing always holds
//! whole directories (DataFusion lists the table or one `date=` prefix),
//! so the rule sees every file it needs to decide.
//!
//! On an object store, `vigil retention` cannot hide a `date=` directory
//! by renaming it: it first puts a marker object
//! ([`vigil_store::retention::RETENTION_MARKER`]) into it, then deletes
//! its files. A listing drops every file of a directory holding the
//! marker, so a query reads a day whole or not at all.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::object_store::path::Path;
use datafusion::object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};
use futures_util::stream::{self, BoxStream, StreamExt, TryStreamExt};

/// An object store that lists like `inner` minus the files the reader
/// rule supersedes; every other call goes to `inner` unchanged.
#[derive(Debug)]
pub struct RuleStore {
    inner: Arc<dyn ObjectStore>,
}

impl RuleStore {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn ObjectStore>) -> Self {
        RuleStore { inner }
    }
}

impl fmt::Display for RuleStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RuleStore({})", self.inner)
    }
}

/// Drops the superseded files of `objects`, deciding per directory, and
/// every file of a directory being removed by retention (holding the
/// marker).
pub fn apply_rule(objects: Vec<ObjectMeta>) -> Vec<ObjectMeta> {
    let mut by_dir: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, o) in objects.iter().enumerate() {
        let loc = o.location.as_ref();
        let dir = loc.rsplit_once('/').map_or("", |(d, _)| d);
        by_dir.entry(dir.to_owned()).or_default().push(i);
    }
    let mut keep = vec![true; objects.len()];
    for idx in by_dir.values() {
        let retired = idx.iter().any(|&i| {
            objects[i].location.filename() == Some(vigil_store::retention::RETENTION_MARKER)
        });
        if retired {
            for &i in idx {
                keep[i] = false;
            }
            continue;
        }
        let names: Vec<&str> = idx
            .iter()
            .map(|&i| {
                let loc = objects[i].location.as_ref();
                loc.rsplit_once('/').map_or(loc, |(_, n)| n)
            })
            .collect();
        for (&i, covered) in idx.iter().zip(vigil_store::compact::superseded(&names)) {
            keep[i] = !covered;
        }
    }
    objects
        .into_iter()
        .zip(keep)
        .filter_map(|(o, k)| k.then_some(o))
        .collect()
}

#[async_trait]
impl ObjectStore for RuleStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[std::ops::Range<u64>],
    ) -> Result<Vec<bytes::Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        let all = self.inner.list(prefix);
        stream::once(async move { all.try_collect::<Vec<_>>().await })
            .map_ok(|objects| stream::iter(apply_rule(objects).into_iter().map(Ok)))
            .try_flatten()
            .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        let mut r = self.inner.list_with_delimiter(prefix).await?;
        r.objects = apply_rule(r.objects);
        Ok(r)
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(key: &str) -> ObjectMeta {
        ObjectMeta {
            location: Path::from(key),
            last_modified: Default::default(),
            size: 1,
            e_tag: None,
            version: None,
        }
    }

    /// A directory holding retention's marker lists as empty; its
    /// neighbours are untouched.
    #[test]
    fn a_directory_being_removed_by_retention_lists_as_empty() {
        let marker = vigil_store::retention::RETENTION_MARKER;
        let objects = vec![
            meta("aggregates/date=2026-11-01/part-t-p00000-00000000000000000000-00000000000000000009.parquet"),
            meta(&format!("aggregates/date=2026-11-01/{marker}")),
            meta("aggregates/date=2026-11-02/part-t-p00000-00000000000000000010-00000000000000000019.parquet"),
        ];
        let kept: Vec<String> = apply_rule(objects)
            .into_iter()
            .map(|o| o.location.to_string())
            .collect();
        assert_eq!(
            kept,
            vec!["aggregates/date=2026-11-02/part-t-p00000-00000000000000000010-00000000000000000019.parquet"]
        );
    }
}
