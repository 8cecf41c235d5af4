//! Route files: the destination of alert routes in replays (`vigil
//! ingest`, `vigil demo`), where there is no Kafka. Each route's encoded
//! events are buffered, one per line, and published with the replay's
//! range as `<root>/routes/<route>/alerts-<source>-p<partition>-<first>-<last>.<ext>`
//! (tmp + rename, like the datasets), so replaying the same input rewrites
//! the same files; a replay removes its source's earlier route files when
//! it starts ([`vigil_store::remove_source_files`]).

use std::path::{Path, PathBuf};
use std::time::Instant;

use vigil_ops::Rejected;
use vigil_store::{SourceRange, ROUTES_DIR, ROUTE_FILE_PREFIX};

use crate::error::{DestinationError, Result, SinkError};
use crate::output::Destinations;
use crate::route::Route;

/// Per-route alert files of one replay. See the module docs.
#[derive(Debug)]
pub struct RouteFiles {
    root: PathBuf,
    sync: bool,
    /// (route name, file extension, buffered lines), in first-use order.
    buffers: Vec<(String, &'static str, Vec<u8>)>,
}

impl RouteFiles {
    /// Route files under `root` (`sync`: fsync each file and directory).
    pub fn new(root: &Path, sync: bool) -> RouteFiles {
        RouteFiles {
            root: root.to_path_buf(),
            sync,
            buffers: Vec::new(),
        }
    }

    /// Bytes buffered over all routes.
    pub fn buffered_bytes(&self) -> usize {
        self.buffers.iter().map(|(_, _, b)| b.len()).sum()
    }

    /// Publishes one file per route with events buffered, named after
    /// `range`; returns their paths.
    pub fn publish(&mut self, range: SourceRange<'_>) -> Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        for (route, ext, buf) in &mut self.buffers {
            if buf.is_empty() {
                continue;
            }
            let store = |source| SinkError::Store {
                what: "writing route files",
                source,
            };
            let name = range.file_name(ROUTE_FILE_PREFIX, ext).map_err(store)?;
            let dir = self.root.join(ROUTES_DIR).join(route.as_str());
            out.push(vigil_store::write_file_atomic(&dir, &name, buf, self.sync).map_err(store)?);
            buf.clear();
        }
        Ok(out)
    }
}

impl Destinations for RouteFiles {
    fn send_alert(
        &mut self,
        route: &Route,
        _key: &[u8],
        payload: &[u8],
        _emitted: Instant,
    ) -> Result<(), DestinationError> {
        let i = match self.buffers.iter().position(|(n, _, _)| n == route.name()) {
            Some(i) => i,
            None => {
                let ext = route.encoding().file_extension();
                self.buffers
                    .push((route.name().to_string(), ext, Vec::new()));
                self.buffers.len() - 1
            }
        };
        let buf = &mut self.buffers[i].2;
        buf.extend_from_slice(payload);
        buf.push(b'\n');
        Ok(())
    }

    fn send_dead_letter(&mut self, _: &Rejected, _: u32) -> Result<bool, DestinationError> {
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoding::testing::{firing, resolved};
    use crate::encoding::{cef::Cef, json::Json, Encoding, ENCODINGS};

    #[test]
    fn every_encoding_has_an_extension_that_replays_replace() {
        for e in ENCODINGS {
            assert!(
                vigil_store::ROUTE_FILE_EXTENSIONS.contains(&e.file_extension()),
                "{}",
                e.name()
            );
        }
    }

    #[test]
    fn each_route_gets_its_own_file_per_range_and_a_replay_replaces_them() {
        let root = tempfile::tempdir().unwrap();
        let mut f = RouteFiles::new(root.path(), false);
        let soc = Route::new("soc", "t", &Cef);
        let all = Route::new("all", "t", &Json);
        let now = Instant::now();
        for a in [firing(), resolved()] {
            let mut buf = Vec::new();
            Json.encode(&a, &mut buf);
            f.send_alert(&all, b"k", &buf, now).unwrap();
        }
        f.send_alert(&soc, b"k", b"CEF:0|x", now).unwrap();
        let range = SourceRange {
            source: "demo",
            partition: 0,
            first_offset: 0,
            last_offset: 9,
            tick: 0,
        };
        let paths = f.publish(range).unwrap();
        assert_eq!(paths.len(), 2);
        let all_file = root
            .path()
            .join("routes/all/alerts-demo-p00000-00000000000000000000-00000000000000000009.jsonl");
        assert_eq!(paths[0], all_file);
        let text = std::fs::read_to_string(&all_file).unwrap();
        assert_eq!(text.lines().count(), 2);
        assert!(paths[1].ends_with(
            "routes/soc/alerts-demo-p00000-00000000000000000000-00000000000000000009.cef"
        ));
        // Nothing buffered: nothing published.
        assert!(f.publish(range).unwrap().is_empty());
        assert_eq!(
            vigil_store::remove_source_files(root.path(), "demo").unwrap(),
            2
        );
        assert!(!all_file.exists());
    }
}
