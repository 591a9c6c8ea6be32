//! The reader of record files, checking every block.

use std::io::{self, Read};
use std::marker::PhantomData;

use serde::de::DeserializeOwned;

#[cfg(doc)]
use super::RecordWriter;
use super::{BLOCK_LIMIT, FormatError, MAGIC, MAGIC_LZ4, STORED, read_varint};

/// Reads `(key, value)` records written by [`RecordWriter`], checking every block.
/// Yields `Err` once and then ends, on any corruption.
#[derive(Debug)]
pub struct RecordReader<R, K, V> {
    inner: R,
    /// Set by the magic: blocks are LZ4-compressed.
    lz4: bool,
    /// A compressed block as read, with LZ4.
    packed: Vec<u8>,
    block: Vec<u8>,
    cursor: usize,
    block_left: u32,
    offset: u64,
    records: u64,
    state: ReadState,
    /// The last frame read, in `block`.
    frame: std::ops::Range<usize>,
    _types: PhantomData<fn() -> (K, V)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadState {
    Start,
    Blocks,
    Done,
}

impl<R: Read, K: DeserializeOwned, V: DeserializeOwned> RecordReader<R, K, V> {
    /// A reader over `inner`, positioned at the start of a record file.
    pub fn new(inner: R) -> Self {
        RecordReader {
            inner,
            lz4: false,
            packed: Vec::new(),
            block: Vec::new(),
            cursor: 0,
            block_left: 0,
            offset: 0,
            records: 0,
            state: ReadState::Start,
            frame: 0..0,
            _types: PhantomData,
        }
    }

    /// Reads exactly `buf.len()` bytes, or reports truncation.
    fn read_exact_at(&mut self, buf: &mut [u8]) -> Result<(), FormatError> {
        match self.inner.read_exact(buf) {
            Ok(()) => {
                self.offset += buf.len() as u64;
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(FormatError::Truncated { offset: self.offset }),
            Err(e) => Err(e.into()),
        }
    }

    /// Loads the next block; `Ok(false)` at a valid trailer.
    fn next_block(&mut self) -> Result<bool, FormatError> {
        if self.state == ReadState::Start {
            let mut magic = [0u8; 4];
            self.read_exact_at(&mut magic)?;
            self.lz4 = match &magic {
                MAGIC => false,
                MAGIC_LZ4 => true,
                _ => return Err(FormatError::BadMagic),
            };
            self.state = ReadState::Blocks;
        }
        let at = self.offset;
        let mut len = [0u8; 4];
        self.read_exact_at(&mut len)?;
        let len = u32::from_le_bytes(len) as usize;
        if len == 0 {
            let mut trailer = [0u8; 12];
            self.read_exact_at(&mut trailer)?;
            if crc32c::crc32c(&trailer[0..8]).to_le_bytes() != trailer[8..12] {
                return Err(FormatError::Checksum { offset: at });
            }
            let total = u64::from_le_bytes(trailer[0..8].try_into().expect("8 bytes"));
            if total != self.records {
                return Err(FormatError::Corrupt { offset: at, what: "record count differs from trailer" });
            }
            let mut extra = [0u8; 1];
            if self.inner.read(&mut extra)? != 0 {
                return Err(FormatError::Corrupt { offset: self.offset, what: "bytes after trailer" });
            }
            return Ok(false);
        }
        if len > BLOCK_LIMIT {
            return Err(FormatError::Corrupt { offset: at, what: "block length too large" });
        }
        let mut header = [0u8; 12];
        let header = &mut header[..if self.lz4 { 12 } else { 8 }];
        self.read_exact_at(header)?;
        let crc = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes"));
        let count = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
        let raw = header.get(8..12).map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize);
        let mut stored = std::mem::take(if self.lz4 { &mut self.packed } else { &mut self.block });
        stored.resize(len, 0);
        let read = self.read_exact_at(&mut stored);
        *(if self.lz4 { &mut self.packed } else { &mut self.block }) = stored;
        read?;
        if crc32c::crc32c(if self.lz4 { &self.packed } else { &self.block }) != crc {
            return Err(FormatError::Checksum { offset: at });
        }
        match raw {
            // Stored as encoded in an LZ4 file: its length said twice.
            Some(raw) if raw & STORED as usize != 0 => {
                if raw & !(STORED as usize) != len {
                    return Err(FormatError::Corrupt {
                        offset: at,
                        what: "stored block length differs from its header",
                    });
                }
                std::mem::swap(&mut self.block, &mut self.packed);
            }
            Some(raw) => {
                if raw > BLOCK_LIMIT {
                    return Err(FormatError::Corrupt { offset: at, what: "block length too large" });
                }
                self.block.resize(raw, 0);
                if lz4_flex::block::decompress_into(&self.packed, &mut self.block).ok() != Some(raw) {
                    return Err(FormatError::Corrupt { offset: at, what: "block does not decompress to its length" });
                }
            }
            None => {}
        }
        if count == 0 {
            return Err(FormatError::Corrupt { offset: at, what: "empty block" });
        }
        self.cursor = 0;
        self.block_left = count;
        Ok(true)
    }

    fn next_record(&mut self) -> Result<Option<(K, V)>, FormatError> {
        let records = self.records;
        match self.next_frame_inner()? {
            None => Ok(None),
            Some(frame) => {
                Ok(Some(postcard::from_bytes(frame).map_err(|error| FormatError::Decode { record: records, error })?))
            }
        }
    }

    /// The next record's postcard bytes, undecoded (for a reader that decodes records into
    /// types of its own choosing), or `None` after the last, checked against the trailer.
    pub fn next_frame(&mut self) -> Result<Option<&[u8]>, FormatError> {
        if self.state == ReadState::Done {
            return Ok(None);
        }
        match self.next_frame_inner() {
            Ok(Some(_)) => {}
            Ok(None) => {
                self.state = ReadState::Done;
                return Ok(None);
            }
            Err(e) => {
                self.state = ReadState::Done;
                return Err(e);
            }
        }
        Ok(Some(&self.block[self.frame.clone()]))
    }

    /// Records read so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    fn next_frame_inner(&mut self) -> Result<Option<&[u8]>, FormatError> {
        while self.block_left == 0 {
            if self.cursor != self.block.len() {
                return Err(FormatError::Corrupt { offset: self.offset, what: "block has bytes past its records" });
            }
            if !self.next_block()? {
                return Ok(None);
            }
        }
        let corrupt = FormatError::Corrupt { offset: self.offset, what: "frame overruns its block" };
        let (len, used) = read_varint(&self.block[self.cursor..]).ok_or(corrupt)?;
        let start = self.cursor + used;
        let end = usize::try_from(len).ok().and_then(|l| start.checked_add(l)).filter(|&e| e <= self.block.len());
        let end = end.ok_or(FormatError::Corrupt { offset: self.offset, what: "frame overruns its block" })?;
        self.cursor = end;
        self.block_left -= 1;
        self.records += 1;
        self.frame = start..end;
        Ok(Some(&self.block[start..end]))
    }
}

impl<R: Read, K: DeserializeOwned, V: DeserializeOwned> Iterator for RecordReader<R, K, V> {
    type Item = Result<(K, V), FormatError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.state == ReadState::Done {
            return None;
        }
        match self.next_record() {
            Ok(Some(r)) => Some(Ok(r)),
            Ok(None) => {
                self.state = ReadState::Done;
                None
            }
            Err(e) => {
                self.state = ReadState::Done;
                Some(Err(e))
            }
        }
    }
}
