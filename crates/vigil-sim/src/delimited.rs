//! Length-delimited record files: each record is a base-128 varint length
//! followed by that many bytes (the usual protobuf stream framing, as
//! written by `prost::Message::encode_length_delimited`).
//!
//! [`DelimitedReader::read_frame`] is the reader for input that must not
//! stop at one bad record (`vigil ingest`): a record whose length prefix
//! is above [`MAX_DELIMITED_RECORD`] is skipped (its length is known; its
//! bytes are read through, never held) and reported as a
//! [`Frame::Skipped`] with its first bytes and xxh3-128 digest, and so is
//! a record cut by the end of the input. Only a corrupt length prefix,
//! after which no record boundary can be found, ends the stream with an
//! error.

use std::io::{self, BufRead, Read, Write};

/// Largest record [`read_delimited`] accepts (64 MiB), so that a corrupt
/// length cannot make the reader allocate without bound.
pub const MAX_DELIMITED_RECORD: u64 = 64 << 20;

/// Why a length-delimited stream could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DelimitedError {
    /// The underlying reader failed.
    #[error("reading record {index} at byte {offset}: {source}")]
    Io {
        /// Index of the record being read.
        index: u64,
        /// Byte offset of the record's length prefix.
        offset: u64,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The input ends inside a length prefix or inside a record.
    #[error("truncated record {index} at byte {offset}: expected {expected} bytes, got {got}")]
    Truncated {
        /// Index of the truncated record.
        index: u64,
        /// Byte offset of its length prefix.
        offset: u64,
        /// Bytes announced (or 0 when the prefix itself is cut).
        expected: u64,
        /// Bytes present.
        got: u64,
    },
    /// The length prefix is not a valid varint (more than 10 bytes or overflowing).
    #[error("invalid length prefix of record {index} at byte {offset}")]
    BadLength {
        /// Index of the record.
        index: u64,
        /// Byte offset of its length prefix.
        offset: u64,
    },
    /// The announced length is above [`MAX_DELIMITED_RECORD`].
    #[error("record {index} at byte {offset} announces {len} bytes, above the {max} limit")]
    TooLong {
        /// Index of the record.
        index: u64,
        /// Byte offset of its length prefix.
        offset: u64,
        /// Announced length.
        len: u64,
        /// The limit.
        max: u64,
    },
}

/// Accumulates the bytes of one varint length prefix, shared by both
/// readers: at most 10 bytes, at most [`MAX_DELIMITED_RECORD`].
#[derive(Default)]
struct LenPrefix {
    len: u64,
    n: u32,
}

impl LenPrefix {
    /// Feeds one byte; `Some(len)` once the prefix is complete.
    fn push(&mut self, b: u8, index: u64, offset: u64) -> Result<Option<u64>, DelimitedError> {
        match self.push_any(b, index, offset)? {
            Some(len) if len > MAX_DELIMITED_RECORD => Err(DelimitedError::TooLong {
                index,
                offset,
                len,
                max: MAX_DELIMITED_RECORD,
            }),
            other => Ok(other),
        }
    }

    /// Like [`LenPrefix::push`], for any length.
    fn push_any(&mut self, b: u8, index: u64, offset: u64) -> Result<Option<u64>, DelimitedError> {
        if self.n == 9 && b > 1 {
            return Err(DelimitedError::BadLength { index, offset });
        }
        self.len |= u64::from(b & 0x7f) << (7 * self.n);
        self.n += 1;
        if b & 0x80 == 0 {
            return Ok(Some(self.len));
        }
        if self.n == 10 {
            return Err(DelimitedError::BadLength { index, offset });
        }
        Ok(None)
    }
}

/// What [`DelimitedReader::read_frame`] read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// A whole record, in the buffer.
    Record,
    /// A record that was skipped; the buffer holds its first bytes.
    Skipped(Skipped),
}

/// Why a record was skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipKind {
    /// Its length prefix is above [`MAX_DELIMITED_RECORD`]. Reading goes
    /// on after it (unless the input also ends inside it: `got < len`).
    TooLong,
    /// The input ends inside it (or inside its length prefix: `len` is
    /// `None`). Nothing follows.
    Truncated,
}

/// A record [`DelimitedReader::read_frame`] could not hand over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Skipped {
    /// Why.
    pub kind: SkipKind,
    /// Index of the record (records before it, skipped ones included).
    pub index: u64,
    /// Byte offset of its length prefix.
    pub offset: u64,
    /// Length its prefix announced (`None` when the prefix is cut).
    pub len: Option<u64>,
    /// Bytes of it present in the input.
    pub got: u64,
    /// xxh3-128 of those bytes.
    pub digest: u128,
}

/// Writes one record: the varint length of `payload`, then `payload`.
pub fn write_delimited<W: Write + ?Sized>(w: &mut W, payload: &[u8]) -> io::Result<()> {
    let mut prefix = [0u8; 10];
    let mut slot: &mut [u8] = &mut prefix[..];
    prost::encoding::encode_varint(payload.len() as u64, &mut slot);
    let n = 10 - slot.len();
    w.write_all(&prefix[..n])?;
    w.write_all(payload)
}

/// Reads length-delimited records from any [`BufRead`] (a `&[u8]` is one).
/// Yields owned records; a stream cut inside a record or length prefix
/// yields one [`DelimitedError::Truncated`] and then ends. For zero-copy
/// reading of an in-memory buffer use [`read_delimited_slice`].
pub fn read_delimited<R: BufRead>(reader: R) -> DelimitedReader<R> {
    DelimitedReader {
        reader,
        offset: 0,
        index: 0,
        done: false,
    }
}

/// Reads length-delimited records from a byte slice without copying.
pub fn read_delimited_slice(buf: &[u8]) -> DelimitedSlice<'_> {
    DelimitedSlice {
        buf,
        pos: 0,
        index: 0,
        done: false,
    }
}

/// Iterator returned by [`read_delimited`].
#[derive(Debug)]
pub struct DelimitedReader<R> {
    reader: R,
    offset: u64,
    index: u64,
    done: bool,
}

impl<R: BufRead> DelimitedReader<R> {
    /// Reads one byte; `Ok(None)` at end of input.
    fn byte(&mut self) -> io::Result<Option<u8>> {
        loop {
            match self.reader.fill_buf() {
                Ok([]) => return Ok(None),
                Ok(b) => {
                    let v = b[0];
                    self.reader.consume(1);
                    return Ok(Some(v));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    fn read_one(&mut self) -> Result<Option<Vec<u8>>, DelimitedError> {
        let mut out = Vec::new();
        Ok(self.read_into(&mut out)?.then_some(out))
    }

    /// Reads the next record into `buf` (replacing its contents, reusing
    /// its capacity): `Ok(false)` at the end of the input. Streaming
    /// without an allocation per record.
    pub fn read_into(&mut self, buf: &mut Vec<u8>) -> Result<bool, DelimitedError> {
        buf.clear();
        if self.done {
            return Ok(false);
        }
        let (index, offset) = (self.index, self.offset);
        let io_err = |source| DelimitedError::Io {
            index,
            offset,
            source,
        };
        let mut prefix = LenPrefix::default();
        let res = (|| {
            let len = loop {
                let Some(b) = self.byte().map_err(io_err)? else {
                    if prefix.n == 0 {
                        return Ok(None);
                    }
                    return Err(DelimitedError::Truncated {
                        index,
                        offset,
                        expected: 0,
                        got: 0,
                    });
                };
                if let Some(len) = prefix.push(b, index, offset)? {
                    break len;
                }
            };
            buf.reserve(len as usize);
            let got = (&mut self.reader)
                .take(len)
                .read_to_end(buf)
                .map_err(io_err)? as u64;
            if got < len {
                return Err(DelimitedError::Truncated {
                    index,
                    offset,
                    expected: len,
                    got,
                });
            }
            Ok(Some(len))
        })();
        match res {
            Ok(Some(len)) => {
                self.offset += u64::from(prefix.n) + len;
                self.index += 1;
                Ok(true)
            }
            Ok(None) => {
                self.done = true;
                Ok(false)
            }
            Err(e) => {
                self.done = true;
                Err(e)
            }
        }
    }
}

impl<R: BufRead> DelimitedReader<R> {
    /// Reads the next record into `buf` (replacing its contents):
    /// `Ok(None)` at the end of the input. A record over
    /// [`MAX_DELIMITED_RECORD`] or cut by the end of the input is skipped
    /// and reported, `buf` then holding its first `head_max` bytes (see
    /// the module docs). Errors: I/O, and a corrupt length prefix (both
    /// end the stream).
    pub fn read_frame(
        &mut self,
        buf: &mut Vec<u8>,
        head_max: usize,
    ) -> Result<Option<Frame>, DelimitedError> {
        buf.clear();
        if self.done {
            return Ok(None);
        }
        let res = self.read_frame_inner(buf, head_max);
        match &res {
            Ok(Some(Frame::Record)) => {}
            Ok(Some(Frame::Skipped(s))) if s.kind == SkipKind::TooLong && Some(s.got) == s.len => {}
            _ => self.done = true,
        }
        res
    }

    fn read_frame_inner(
        &mut self,
        buf: &mut Vec<u8>,
        head_max: usize,
    ) -> Result<Option<Frame>, DelimitedError> {
        let (index, offset) = (self.index, self.offset);
        let io_err = |source| DelimitedError::Io {
            index,
            offset,
            source,
        };
        let mut prefix = LenPrefix::default();
        let len = loop {
            let Some(b) = self.byte().map_err(io_err)? else {
                if prefix.n == 0 {
                    return Ok(None);
                }
                return Ok(Some(Frame::Skipped(Skipped {
                    kind: SkipKind::Truncated,
                    index,
                    offset,
                    len: None,
                    got: 0,
                    digest: xxhash_rust::xxh3::xxh3_128(&[]),
                })));
            };
            if let Some(len) = prefix.push_any(b, index, offset)? {
                break len;
            }
        };
        if len <= MAX_DELIMITED_RECORD {
            buf.reserve(len as usize);
            let got = (&mut self.reader)
                .take(len)
                .read_to_end(buf)
                .map_err(io_err)? as u64;
            if got == len {
                self.offset += u64::from(prefix.n) + len;
                self.index += 1;
                return Ok(Some(Frame::Record));
            }
            let digest = xxhash_rust::xxh3::xxh3_128(buf);
            buf.truncate(head_max);
            return Ok(Some(Frame::Skipped(Skipped {
                kind: SkipKind::Truncated,
                index,
                offset,
                len: Some(len),
                got,
                digest,
            })));
        }
        // Too long: read through it, keeping its head and digest only.
        let mut hasher = xxhash_rust::xxh3::Xxh3::new();
        let mut got = 0u64;
        while got < len {
            let chunk = match self.reader.fill_buf() {
                Ok([]) => break,
                Ok(c) => c,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_err(e)),
            };
            let n = chunk
                .len()
                .min(usize::try_from(len - got).unwrap_or(usize::MAX));
            hasher.update(&chunk[..n]);
            if buf.len() < head_max {
                let keep = n.min(head_max - buf.len());
                buf.extend_from_slice(&chunk[..keep]);
            }
            self.reader.consume(n);
            got += n as u64;
        }
        self.offset += u64::from(prefix.n) + got;
        self.index += 1;
        Ok(Some(Frame::Skipped(Skipped {
            kind: SkipKind::TooLong,
            index,
            offset,
            len: Some(len),
            got,
            digest: hasher.digest128(),
        })))
    }
}

impl<R: BufRead> Iterator for DelimitedReader<R> {
    type Item = Result<Vec<u8>, DelimitedError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.read_one().transpose()
    }
}

/// Iterator returned by [`read_delimited_slice`].
#[derive(Debug, Clone)]
pub struct DelimitedSlice<'a> {
    buf: &'a [u8],
    pos: usize,
    index: u64,
    done: bool,
}

impl<'a> DelimitedSlice<'a> {
    fn read_one(&mut self) -> Result<Option<&'a [u8]>, DelimitedError> {
        let (index, offset) = (self.index, self.pos as u64);
        let rest = &self.buf[self.pos..];
        if rest.is_empty() {
            return Ok(None);
        }
        let mut prefix = LenPrefix::default();
        let mut n = 0usize;
        let len = loop {
            let Some(&b) = rest.get(n) else {
                return Err(DelimitedError::Truncated {
                    index,
                    offset,
                    expected: 0,
                    got: 0,
                });
            };
            n += 1;
            if let Some(len) = prefix.push(b, index, offset)? {
                break len;
            }
        };
        let body = &rest[n..];
        let len_us = len as usize;
        if body.len() < len_us {
            return Err(DelimitedError::Truncated {
                index,
                offset,
                expected: len,
                got: body.len() as u64,
            });
        }
        self.pos += n + len_us;
        self.index += 1;
        Ok(Some(&body[..len_us]))
    }
}

impl<'a> Iterator for DelimitedSlice<'a> {
    type Item = Result<&'a [u8], DelimitedError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.read_one() {
            Ok(Some(v)) => Some(Ok(v)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufReader, Cursor};

    use super::*;

    fn prefix(len: u64) -> Vec<u8> {
        let mut p = Vec::new();
        prost::encoding::encode_varint(len, &mut p);
        p
    }

    /// `len` bytes of 7, never held in memory by the input.
    fn sevens(len: u64) -> impl Read {
        io::repeat(7).take(len)
    }

    fn digest_of_sevens(len: u64) -> u128 {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        let chunk = [7u8; 1 << 16];
        let mut left = len;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            h.update(&chunk[..n]);
            left -= n as u64;
        }
        h.digest128()
    }

    #[test]
    fn records_over_the_limit_are_skipped_and_reading_goes_on() {
        let max = MAX_DELIMITED_RECORD;
        let mut small = Vec::new();
        write_delimited(&mut small, b"a").unwrap();
        let input = Cursor::new(small.clone())
            .chain(Cursor::new(prefix(max + 1)))
            .chain(sevens(max + 1))
            .chain(Cursor::new(prefix(1)))
            .chain(Cursor::new(b"b".to_vec()))
            .chain(Cursor::new(prefix(max)))
            .chain(sevens(max))
            .chain(Cursor::new(prefix(10)))
            .chain(Cursor::new(b"cut".to_vec()));
        let mut r = read_delimited(BufReader::with_capacity(1 << 16, input));
        let mut buf = Vec::new();
        assert_eq!(r.read_frame(&mut buf, 100).unwrap(), Some(Frame::Record));
        assert_eq!(buf, b"a");
        let skipped = r.read_frame(&mut buf, 100).unwrap();
        let p = prefix(max + 1).len() as u64;
        assert_eq!(
            skipped,
            Some(Frame::Skipped(Skipped {
                kind: SkipKind::TooLong,
                index: 1,
                offset: 2,
                len: Some(max + 1),
                got: max + 1,
                digest: digest_of_sevens(max + 1),
            }))
        );
        assert_eq!(buf, [7u8; 100]);
        assert_eq!(r.read_frame(&mut buf, 100).unwrap(), Some(Frame::Record));
        assert_eq!(buf, b"b");
        // Exactly at the limit: a record.
        assert_eq!(r.read_frame(&mut buf, 100).unwrap(), Some(Frame::Record));
        assert_eq!(buf.len() as u64, max);
        let cut = r.read_frame(&mut buf, 2).unwrap();
        assert_eq!(
            cut,
            Some(Frame::Skipped(Skipped {
                kind: SkipKind::Truncated,
                index: 4,
                offset: 2 + p + max + 1 + 2 + prefix(max).len() as u64 + max,
                len: Some(10),
                got: 3,
                digest: xxhash_rust::xxh3::xxh3_128(b"cut"),
            }))
        );
        assert_eq!(buf, b"cu");
        assert_eq!(r.read_frame(&mut buf, 2).unwrap(), None);
    }

    #[test]
    fn a_record_over_the_limit_cut_by_the_end_is_the_last_frame() {
        let input = Cursor::new(prefix(MAX_DELIMITED_RECORD + 5)).chain(sevens(1000));
        let mut r = read_delimited(BufReader::new(input));
        let mut buf = Vec::new();
        let Some(Frame::Skipped(s)) = r.read_frame(&mut buf, 10).unwrap() else {
            panic!("not skipped");
        };
        assert_eq!((s.kind, s.got), (SkipKind::TooLong, 1000));
        assert_eq!(r.read_frame(&mut buf, 10).unwrap(), None);
        // A cut prefix.
        let mut r = read_delimited(&[0x80u8][..]);
        let Some(Frame::Skipped(s)) = r.read_frame(&mut buf, 10).unwrap() else {
            panic!("not skipped");
        };
        assert_eq!((s.kind, s.len, s.got), (SkipKind::Truncated, None, 0));
        assert_eq!(r.read_frame(&mut buf, 10).unwrap(), None);
        // A corrupt prefix is still an error.
        let mut r = read_delimited(&[0xffu8; 12][..]);
        assert!(matches!(
            r.read_frame(&mut buf, 10),
            Err(DelimitedError::BadLength { .. })
        ));
        assert_eq!(r.read_frame(&mut buf, 10).unwrap(), None);
    }
}
