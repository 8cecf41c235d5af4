//! Line sinks: one encoded event per line, on stdout or in a file.
//!
//! A file is written atomically: events go to `.<name>.partial` beside
//! the target, which is flushed at each commit, fsynced and renamed over
//! the target when the export ends. A reader therefore sees the previous
//! file or the whole new one, and a failed export leaves the target as it
//! was (the partial file is removed), never a silently partial file.
//! Appending was the alternative; it would leave a half-written export
//! behind a failure, mixed with earlier ones.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::{Envelope, ExportSink, SendError};

/// Events as lines on stdout (flushed at each commit).
#[derive(Debug)]
pub struct StdoutSink {
    out: BufWriter<std::io::Stdout>,
}

impl Default for StdoutSink {
    fn default() -> Self {
        StdoutSink {
            out: BufWriter::with_capacity(1 << 16, std::io::stdout()),
        }
    }
}

impl ExportSink for StdoutSink {
    fn kind(&self) -> &'static str {
        "stdout"
    }

    fn send(&mut self, _: &Envelope<'_>, payload: &[u8]) -> Result<(), SendError> {
        self.out
            .write_all(payload)
            .and_then(|()| self.out.write_all(b"\n"))
            .map_err(|e| SendError::permanent("writing to stdout", e))
    }

    fn commit(&mut self) -> Result<(), SendError> {
        self.out
            .flush()
            .map_err(|e| SendError::permanent("writing to stdout", e))
    }

    fn reset(&mut self) {}

    fn finish(&mut self) -> Result<(), SendError> {
        self.commit()
    }
}

/// Events as lines of one file, published atomically (see the module docs).
#[derive(Debug)]
pub struct FileSink {
    path: PathBuf,
    partial: PathBuf,
    out: Option<BufWriter<File>>,
}

impl FileSink {
    /// Starts writing `path` (through its partial file).
    pub fn create(path: &Path) -> Result<FileSink, SendError> {
        let name = path
            .file_name()
            .ok_or_else(|| {
                SendError::permanent(
                    format!("exporting to {}", path.display()),
                    "the path names no file",
                )
            })?
            .to_string_lossy();
        let partial = path.with_file_name(format!(".{name}.partial"));
        let file = File::create(&partial)
            .map_err(|e| SendError::permanent(format!("creating {}", partial.display()), e))?;
        Ok(FileSink {
            path: path.to_owned(),
            partial,
            out: Some(BufWriter::with_capacity(1 << 16, file)),
        })
    }

    fn err(&self, e: std::io::Error) -> SendError {
        SendError::permanent(format!("writing {}", self.partial.display()), e)
    }
}

impl ExportSink for FileSink {
    fn kind(&self) -> &'static str {
        "file"
    }

    fn send(&mut self, _: &Envelope<'_>, payload: &[u8]) -> Result<(), SendError> {
        let Some(out) = self.out.as_mut() else {
            return Err(SendError::permanent("writing after finish", "file closed"));
        };
        let r = out.write_all(payload).and_then(|()| out.write_all(b"\n"));
        r.map_err(|e| self.err(e))
    }

    fn commit(&mut self) -> Result<(), SendError> {
        let r = self.out.as_mut().map_or(Ok(()), |o| o.flush());
        r.map_err(|e| self.err(e))
    }

    fn reset(&mut self) {}

    fn finish(&mut self) -> Result<(), SendError> {
        let Some(out) = self.out.take() else {
            return Ok(());
        };
        let file = out.into_inner().map_err(|e| self.err(e.into_error()))?;
        file.sync_all().map_err(|e| self.err(e))?;
        drop(file);
        std::fs::rename(&self.partial, &self.path).map_err(|e| {
            SendError::permanent(
                format!(
                    "renaming {} to {}",
                    self.partial.display(),
                    self.path.display()
                ),
                e,
            )
        })?;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            // Makes the rename durable; a directory that cannot be opened
            // (some file systems) still has the file.
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }
}

impl Drop for FileSink {
    fn drop(&mut self) {
        // Not finished: the export failed; leave the target as it was.
        if self.out.take().is_some() {
            let _ = std::fs::remove_file(&self.partial);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoding::testing::{firing, resolved};
    use crate::export::{ExportOptions, Exportable, Exporter};

    #[test]
    fn a_file_appears_whole_at_the_end_and_not_on_failure() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alerts.cef");
        std::fs::write(&path, "before\n").unwrap();
        let mut sink = FileSink::create(&path).unwrap();
        let mut x = Exporter::new(
            &mut sink,
            crate::encoding("cef").unwrap(),
            ExportOptions::default(),
        );
        x.send(&[firing(), resolved()]).unwrap();
        // Not yet published.
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "before\n");
        let r = x.finish().unwrap();
        assert_eq!(r.events, 2);
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0], crate::encoding::cef::line(&firing()));
        assert_eq!(lines[1], crate::encoding::cef::line(&resolved()));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

        // An export that does not finish leaves the previous file.
        {
            let mut sink = FileSink::create(&path).unwrap();
            sink.send(&firing().envelope(), b"x").unwrap();
            sink.commit().unwrap();
        }
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
