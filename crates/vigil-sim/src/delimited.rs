//! Length-delimited record files: each record is a base-128 varint length
//! followed by that many bytes (the usual protobuf stream framing, as
//! written by `prost::Message::encode_length_delimited`).

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
        if self.n == 9 && b > 1 {
            return Err(DelimitedError::BadLength { index, offset });
        }
        self.len |= u64::from(b & 0x7f) << (7 * self.n);
        self.n += 1;
        if b & 0x80 == 0 {
            if self.len > MAX_DELIMITED_RECORD {
                return Err(DelimitedError::TooLong {
                    index,
                    offset,
                    len: self.len,
                    max: MAX_DELIMITED_RECORD,
                });
            }
            return Ok(Some(self.len));
        }
        if self.n == 10 {
            return Err(DelimitedError::BadLength { index, offset });
        }
        Ok(None)
    }
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
