//! The writer of record files.

use std::io::{self, Write};

use serde::Serialize;

#[cfg(doc)]
use super::RecordReader;
use super::{BLOCK_TARGET, Compression, FormatError, MAGIC, MAGIC_LZ4, MAX_RECORD_BYTES, STORED, push_varint};

/// With LZ4, blocks stored as encoded after one that LZ4 did not halve, before the next
/// is tried again.
const STORE_AFTER_POOR: u32 = 15;

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
    /// With LZ4: blocks still to store as encoded before trying to compress again.
    store: u32,
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
            store: 0,
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
        // Most records fit on the stack, encoded through a cursor; the rest grow a vector.
        let mut small = [0u8; 128];
        match postcard::to_slice(&(key, value), &mut small) {
            Ok(frame) => return self.write_encoded(frame),
            Err(postcard::Error::SerializeBufferFull) => {}
            Err(error) => return Err(FormatError::Encode { record: self.records, error }),
        }
        self.scratch.clear();
        let scratch = std::mem::take(&mut self.scratch);
        let frame = postcard::to_extend(&(key, value), scratch)
            .map_err(|error| FormatError::Encode { record: self.records, error })?;
        let written = self.write_encoded(&frame);
        // Keep the buffer for the next record, unless a huge one made it huge.
        self.scratch = if frame.len() > MAX_RECORD_BYTES { Vec::with_capacity(256) } else { frame };
        written
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
        // With LZ4, a block is stored compressed only if that at least halves it: below
        // that, compressing and decompressing cost more than the bytes save (a word
        // count's runs shrink by a third, gensort payloads to a fifth). After a block it
        // does not halve, the next ones are stored as encoded, and every 16th tried again.
        let raw = self.block.len() as u32;
        let (stored, raw_field, header_len) = match self.compression {
            Compression::None => (&self.block, 0, 12),
            Compression::Lz4 if self.store > 0 => {
                self.store -= 1;
                (&self.block, raw | STORED, 16)
            }
            Compression::Lz4 => {
                self.packed.resize(lz4_flex::block::get_maximum_output_size(self.block.len()), 0);
                let n = lz4_flex::block::compress_into(&self.block, &mut self.packed)
                    .map_err(|e| io::Error::other(format!("lz4 compression failed: {e}")))?;
                self.packed.truncate(n);
                if n * 2 > self.block.len() {
                    self.store = STORE_AFTER_POOR;
                    (&self.block, raw | STORED, 16)
                } else {
                    (&self.packed, raw, 16)
                }
            }
        };
        let mut header = [0u8; 16];
        header[0..4].copy_from_slice(&(stored.len() as u32).to_le_bytes());
        header[4..8].copy_from_slice(&crc32c::crc32c(stored).to_le_bytes());
        header[8..12].copy_from_slice(&self.block_records.to_le_bytes());
        header[12..16].copy_from_slice(&raw_field.to_le_bytes());
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
