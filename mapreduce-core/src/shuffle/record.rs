//! The intermediate record file format.
//!
//! ```text
//! file    = magic block* trailer
//! magic   = "MRR1" | "MRZ1"                                 (plain | LZ4 blocks)
//! block   = len:u32le crc:u32le count:u32le [raw:u32le] payload[len]   (len > 0)
//! payload = (frame_len:varint postcard((key, value)))*       (count frames)
//! trailer = 0:u32le records:u64le crc:u32le                 (crc of the 8 record bytes)
//! ```
//!
//! In an `MRZ1` file every block's payload is LZ4-compressed (the block format, one
//! block at a time) and `raw` is its length before compression; `crc` covers the bytes
//! as stored, so corruption is found before anything is decompressed. Readers tell the
//! two apart by the magic, so only the writer chooses ([`Compression`]).
//!
//! Every block carries a CRC-32C of its payload and the trailer carries the total record
//! count, so a flipped bit, a truncated file or a file cut at a block boundary is an
//! error, never silently fewer records.

use std::io::{self, Read, Write};
use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;

const MAGIC: &[u8; 4] = b"MRR1";
const MAGIC_LZ4: &[u8; 4] = b"MRZ1";

/// How the blocks of intermediate record files are stored: a job setting
/// ([`crate::JobSpec::compression`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Compression {
    /// As encoded.
    None,
    /// LZ4 (the block format), the default: it cuts what a sort of gensort-style records
    /// writes and reads between map and reduce to a fifth, and costs within noise on
    /// data that does not compress (random bytes grow by 0.4%); see `benches/README.md`.
    #[default]
    Lz4,
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Compression::None => "none",
            Compression::Lz4 => "lz4",
        })
    }
}

impl std::str::FromStr for Compression {
    type Err = String;

    /// `none` or `lz4`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(Compression::None),
            "lz4" => Ok(Compression::Lz4),
            other => Err(format!("unknown compression {other:?}: expected none or lz4")),
        }
    }
}
/// A block is flushed once its payload reaches this size.
const BLOCK_TARGET: usize = 64 << 10;
/// Refuse to allocate for a block claimed larger than this (a corrupt length).
const BLOCK_LIMIT: usize = 256 << 20;
/// The largest record (its key and value encoded) a writer accepts: 240 MiB. A block holds
/// less than its 64 KiB target before it, so with LZ4's worst growth (n/255 + 16 bytes)
/// its stored and raw lengths stay under the reader's block limit of 256 MiB.
pub const MAX_RECORD_BYTES: usize = 240 << 20;

/// Why a record file could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// The underlying reader or writer failed.
    #[error("i/o error: {0}")]
    Io(io::Error),
    /// The file does not start with the record-file magic.
    #[error("not a record file (bad magic)")]
    BadMagic,
    /// A block's checksum does not match its bytes.
    #[error("checksum mismatch in block at byte {offset}")]
    Checksum {
        /// Offset of the block header in the file.
        offset: u64,
    },
    /// The file ends before its trailer.
    #[error("truncated at byte {offset}")]
    Truncated {
        /// Where the file ended.
        offset: u64,
    },
    /// A block header or the trailer is inconsistent.
    #[error("corrupt block at byte {offset}: {what}")]
    Corrupt {
        /// Offset of the block or trailer.
        offset: u64,
        /// What is wrong.
        what: &'static str,
    },
    /// A record is larger than [`MAX_RECORD_BYTES`], which readers would refuse.
    #[error("record {record} is {bytes} bytes encoded, more than the limit of {limit} bytes of a record")]
    RecordTooLarge {
        /// Index of the record in the file.
        record: u64,
        /// Its encoded size.
        bytes: usize,
        /// The limit, [`MAX_RECORD_BYTES`].
        limit: usize,
    },
    /// A record could not be encoded.
    #[error("cannot encode record {record}: {error}")]
    Encode {
        /// Index of the record in the file.
        record: u64,
        /// The serializer's error.
        error: postcard::Error,
    },
    /// A record's bytes do not decode as the job's key and value types.
    #[error("cannot decode record {record}: {error}")]
    Decode {
        /// Index of the record in the file.
        record: u64,
        /// The deserializer's error.
        error: postcard::Error,
    },
}

// By hand, not `#[from]`: that would also make the cause the error's source, and a
// printer that walks the chain would print it twice.
impl From<io::Error> for FormatError {
    fn from(e: io::Error) -> Self {
        FormatError::Io(e)
    }
}

/// Writes records into the block format. Call [`RecordWriter::finish`] to write the
/// trailer; a writer dropped without it leaves a file that reads as truncated.
#[derive(Debug)]
pub struct RecordWriter<W: Write> {
    inner: W,
    compression: Compression,
    /// The compressed block, with LZ4.
    packed: Vec<u8>,
    block: Vec<u8>,
    scratch: Vec<u8>,
    block_records: u32,
    records: u64,
    bytes: u64,
}

impl<W: Write> RecordWriter<W> {
    /// Starts a record file on `inner` (writes the magic), blocks stored as encoded.
    pub fn new(inner: W) -> io::Result<Self> {
        Self::with_compression(inner, Compression::None)
    }

    /// Starts a record file on `inner` whose blocks are stored with `compression`.
    pub fn with_compression(mut inner: W, compression: Compression) -> io::Result<Self> {
        inner.write_all(match compression {
            Compression::None => MAGIC,
            Compression::Lz4 => MAGIC_LZ4,
        })?;
        Ok(RecordWriter {
            inner,
            compression,
            packed: Vec::new(),
            block: Vec::with_capacity(BLOCK_TARGET + 1024),
            scratch: Vec::with_capacity(256),
            block_records: 0,
            records: 0,
            bytes: MAGIC.len() as u64,
        })
    }

    /// Appends one record; refuses one larger than [`MAX_RECORD_BYTES`] encoded.
    pub fn write<K: Serialize + ?Sized, V: Serialize + ?Sized>(
        &mut self,
        key: &K,
        value: &V,
    ) -> Result<(), FormatError> {
        self.scratch.clear();
        let scratch = std::mem::take(&mut self.scratch);
        self.scratch = postcard::to_extend(&(key, value), scratch)
            .map_err(|error| FormatError::Encode { record: self.records, error })?;
        if self.scratch.len() > MAX_RECORD_BYTES {
            let bytes = self.scratch.len();
            self.scratch = Vec::with_capacity(256); // do not keep the huge buffer
            return Err(FormatError::RecordTooLarge { record: self.records, bytes, limit: MAX_RECORD_BYTES });
        }
        push_varint(&mut self.block, self.scratch.len() as u64);
        self.block.extend_from_slice(&self.scratch);
        self.block_records += 1;
        self.records += 1;
        if self.block.len() >= BLOCK_TARGET {
            self.flush_block()?;
        }
        Ok(())
    }

    /// Appends one record already encoded with postcard (read back with
    /// [`RecordReader::next_frame`]); refuses one larger than [`MAX_RECORD_BYTES`].
    pub fn write_encoded(&mut self, record: &[u8]) -> Result<(), FormatError> {
        if record.len() > MAX_RECORD_BYTES {
            return Err(FormatError::RecordTooLarge {
                record: self.records,
                bytes: record.len(),
                limit: MAX_RECORD_BYTES,
            });
        }
        push_varint(&mut self.block, record.len() as u64);
        self.block.extend_from_slice(record);
        self.block_records += 1;
        self.records += 1;
        if self.block.len() >= BLOCK_TARGET {
            self.flush_block()?;
        }
        Ok(())
    }

    fn flush_block(&mut self) -> io::Result<()> {
        if self.block.is_empty() {
            return Ok(());
        }
        let (stored, header_len) = match self.compression {
            Compression::None => (&self.block, 12),
            Compression::Lz4 => {
                self.packed.resize(lz4_flex::block::get_maximum_output_size(self.block.len()), 0);
                let n = lz4_flex::block::compress_into(&self.block, &mut self.packed)
                    .map_err(|e| io::Error::other(format!("lz4 compression failed: {e}")))?;
                self.packed.truncate(n);
                (&self.packed, 16)
            }
        };
        let mut header = [0u8; 16];
        header[0..4].copy_from_slice(&(stored.len() as u32).to_le_bytes());
        header[4..8].copy_from_slice(&crc32c::crc32c(stored).to_le_bytes());
        header[8..12].copy_from_slice(&self.block_records.to_le_bytes());
        header[12..16].copy_from_slice(&(self.block.len() as u32).to_le_bytes());
        self.inner.write_all(&header[..header_len])?;
        self.inner.write_all(stored)?;
        self.bytes += (header_len + stored.len()) as u64;
        self.block.clear();
        self.block_records = 0;
        Ok(())
    }

    /// Records written so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Writes the last block and the trailer, flushes, and returns the inner writer with
    /// the record count and the file's size in bytes.
    pub fn finish(mut self) -> io::Result<(W, u64, u64)> {
        self.flush_block()?;
        let mut trailer = [0u8; 16];
        trailer[4..12].copy_from_slice(&self.records.to_le_bytes());
        let crc = crc32c::crc32c(&trailer[4..12]);
        trailer[12..16].copy_from_slice(&crc.to_le_bytes());
        self.inner.write_all(&trailer)?;
        self.inner.flush()?;
        self.bytes += trailer.len() as u64;
        Ok((self.inner, self.records, self.bytes))
    }
}

fn push_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

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
        if let Some(raw) = raw {
            if raw > BLOCK_LIMIT {
                return Err(FormatError::Corrupt { offset: at, what: "block length too large" });
            }
            self.block.resize(raw, 0);
            if lz4_flex::block::decompress_into(&self.packed, &mut self.block).ok() != Some(raw) {
                return Err(FormatError::Corrupt { offset: at, what: "block does not decompress to its length" });
            }
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

fn read_varint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, &b) in bytes.iter().enumerate().take(10) {
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const BOTH: [Compression; 2] = [Compression::None, Compression::Lz4];

    fn encode(records: &[(String, u64)]) -> Vec<u8> {
        encode_with(records, Compression::None)
    }

    fn encode_with(records: &[(String, u64)], compression: Compression) -> Vec<u8> {
        let mut w = RecordWriter::with_compression(Vec::new(), compression).unwrap();
        for (k, v) in records {
            w.write(k, v).unwrap();
        }
        let (bytes, n, len) = w.finish().unwrap();
        assert_eq!(n, records.len() as u64);
        assert_eq!(len, bytes.len() as u64);
        bytes
    }

    #[test]
    fn the_writer_refuses_a_record_the_reader_would_refuse_and_names_its_size() {
        // At the limit: written and read back (stored as is, the largest block).
        let key = "x".repeat(MAX_RECORD_BYTES - 10);
        let mut w = RecordWriter::new(Vec::new()).unwrap();
        w.write(key.as_str(), &1u64).unwrap();
        let (bytes, _, _) = w.finish().unwrap();
        let back: Vec<(String, u64)> = RecordReader::new(&bytes[..]).collect::<Result<_, _>>().unwrap();
        assert_eq!((back.len(), back[0].0.len()), (1, key.len()));
        drop((back, bytes));
        // Past it: refused at once with its size and the limit, and the writer goes on.
        let key = "x".repeat(MAX_RECORD_BYTES);
        let mut w = RecordWriter::with_compression(Vec::new(), Compression::Lz4).unwrap();
        w.write("small", &1u64).unwrap();
        let err = w.write(key.as_str(), &1u64).unwrap_err();
        assert!(matches!(err, FormatError::RecordTooLarge { record: 1, limit: MAX_RECORD_BYTES, .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!(
                "record 1 is {} bytes encoded, more than the limit of {MAX_RECORD_BYTES} bytes of a record",
                MAX_RECORD_BYTES + 5
            )
        );
        w.write("after", &2u64).unwrap();
        let (bytes, n, _) = w.finish().unwrap();
        assert_eq!(n, 2);
        assert_eq!(decode(&bytes).unwrap().len(), 2);
    }

    fn decode(bytes: &[u8]) -> Result<Vec<(String, u64)>, FormatError> {
        RecordReader::new(bytes).collect()
    }

    #[test]
    fn round_trip_across_many_blocks() {
        let records: Vec<(String, u64)> = (0..50_000).map(|i| (format!("key{i:07}"), i)).collect();
        for c in BOTH {
            assert_eq!(decode(&encode_with(&records, c)).unwrap(), records, "{c}");
            assert_eq!(decode(&encode_with(&[], c)).unwrap(), vec![], "{c}");
        }
        let (plain, packed) = (encode(&records), encode_with(&records, Compression::Lz4));
        assert!(packed.len() * 2 < plain.len(), "lz4 {} bytes, plain {}", packed.len(), plain.len());
    }

    #[test]
    fn every_flipped_byte_and_every_truncation_is_detected() {
        let records: Vec<(String, u64)> = (0..40).map(|i| (format!("k{i}"), i * 1000)).collect();
        for c in BOTH {
            let bytes = encode_with(&records, c);
            for i in 0..bytes.len() {
                let mut bad = bytes.clone();
                bad[i] ^= 0x10;
                assert!(decode(&bad).is_err(), "{c}: flip at byte {i} went unnoticed");
                assert!(decode(&bytes[..i]).is_err(), "{c}: truncation to {i} bytes went unnoticed");
            }
            let mut longer = bytes.clone();
            longer.push(0);
            assert!(decode(&longer).is_err());
        }
    }

    #[test]
    fn a_compressed_block_that_does_not_decompress_is_corrupt_even_with_a_good_checksum() {
        let bytes = encode_with(&[("key".into(), 7), ("key".into(), 8)], Compression::Lz4);
        let block = |bytes: &[u8]| u32::from_le_bytes(bytes[4..8].try_into().unwrap()) as usize;
        let resealed = |mut bytes: Vec<u8>| {
            let len = block(&bytes);
            let crc = crc32c::crc32c(&bytes[20..20 + len]);
            bytes[8..12].copy_from_slice(&crc.to_le_bytes());
            bytes
        };
        // A raw length that differs from what the payload holds.
        let mut wrong_len = bytes.clone();
        wrong_len[16] ^= 1;
        // Payload bytes that are not LZ4 of the claimed length, under a recomputed CRC.
        let mut garbage = bytes.clone();
        let len = block(&garbage);
        garbage[20..20 + len].fill(0xff);
        for bad in [wrong_len, resealed(garbage)] {
            let got = decode(&bad);
            assert!(matches!(got, Err(FormatError::Corrupt { offset: 4, .. })), "{got:?}");
        }
    }

    #[test]
    fn a_file_cut_at_a_block_boundary_is_truncated() {
        let records: Vec<(String, u64)> = (0..30_000).map(|i| (format!("key{i}"), i)).collect();
        for (c, header) in [(Compression::None, 12), (Compression::Lz4, 16)] {
            let bytes = encode_with(&records, c);
            let first_block = 4 + header + u32::from_le_bytes(bytes[4..8].try_into().unwrap()) as usize;
            assert!(first_block < bytes.len() - 16);
            assert!(matches!(decode(&bytes[..first_block]), Err(FormatError::Truncated { .. })), "{c}");
        }
    }

    #[test]
    fn compression_names_parse_and_print() {
        for c in BOTH {
            assert_eq!(c.to_string().parse::<Compression>(), Ok(c));
        }
        assert_eq!("zip".parse::<Compression>(), Err("unknown compression \"zip\": expected none or lz4".into()));
    }

    #[test]
    fn wrong_types_are_a_decode_error() {
        let bytes = encode(&[("a".into(), 300)]);
        let got: Result<Vec<(u64, String)>, _> = RecordReader::new(&bytes[..]).collect();
        assert!(matches!(got, Err(FormatError::Decode { record: 0, .. })), "{got:?}");
    }

    proptest! {
        #[test]
        fn round_trip(records in proptest::collection::vec((".{0,20}", any::<u64>()), 0..200), lz4 in any::<bool>()) {
            let c = if lz4 { Compression::Lz4 } else { Compression::None };
            prop_assert_eq!(decode(&encode_with(&records, c)).unwrap(), records);
        }
    }
}

// Hostile-input property tests of the reader, in their own file.
#[cfg(test)]
#[path = "record_fuzz.rs"]
mod fuzz;
