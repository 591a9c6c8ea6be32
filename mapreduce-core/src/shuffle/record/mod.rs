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
//! In an `MRZ1` file a block's payload is LZ4-compressed (the block format, one block at
//! a time) and `raw` is its length before compression, or, with its top bit set, the
//! payload is stored as encoded (the writer does so where LZ4 does not halve a block)
//! and `raw` repeats its length; `crc` covers the bytes as stored, so corruption is found
//! before anything is decompressed. Readers tell the two files apart by the magic, so
//! only the writer chooses ([`Compression`]).
//!
//! Every block carries a CRC-32C of its payload and the trailer carries the total record
//! count, so a flipped bit, a truncated file or a file cut at a block boundary is an
//! error, never silently fewer records.

use std::io;

mod reader;
mod writer;

pub use reader::RecordReader;
pub use writer::RecordWriter;

const MAGIC: &[u8; 4] = b"MRR1";
const MAGIC_LZ4: &[u8; 4] = b"MRZ1";
/// The top bit of an `MRZ1` block's `raw` field: the payload is stored as encoded.
const STORED: u32 = 1 << 31;

/// How the blocks of intermediate record files are stored: a job setting
/// ([`crate::JobSpec::compression`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Compression {
    /// As encoded.
    None,
    /// LZ4 (the block format), the default: it cuts what a sort of gensort-style records
    /// writes and reads between map and reduce to a fifth. Blocks it does not halve (a
    /// word count's, random bytes) are stored as encoded, and compression tried again
    /// every 16th block, so such data costs little more than [`Compression::None`]; see
    /// `benches/README.md`.
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

fn push_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
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
        // Records LZ4 halves, so the block is stored compressed.
        let records: Vec<(String, u64)> = (0..100).map(|i| ("key".into(), i % 2)).collect();
        let bytes = encode_with(&records, Compression::Lz4);
        let block = |bytes: &[u8]| u32::from_le_bytes(bytes[4..8].try_into().unwrap()) as usize;
        assert_eq!(u32::from_le_bytes(bytes[16..20].try_into().unwrap()) & STORED, 0, "compressed");
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

    /// Records whose keys are pseudo-random letters: LZ4 does not halve them.
    fn noise(n: usize, seed: u64) -> Vec<(String, u64)> {
        let mut x = seed | 1;
        let mut letter = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b'a' + (x % 26) as u8)
        };
        (0..n).map(|i| ((0..24).map(|_| letter()).collect(), i as u64)).collect()
    }

    /// The `raw` fields of an `MRZ1` file's blocks, in order.
    fn raw_fields(bytes: &[u8]) -> Vec<u32> {
        let (mut at, mut raws) = (4, Vec::new());
        loop {
            let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
            if len == 0 {
                return raws;
            }
            raws.push(u32::from_le_bytes(bytes[at + 12..at + 16].try_into().unwrap()));
            at += 16 + len;
        }
    }

    #[test]
    fn lz4_stores_blocks_it_does_not_halve_as_encoded_and_tries_again_later() {
        // Noise first, then records that compress: the noise is stored as encoded (no
        // bigger than a plain file but for the raw fields), the rest compressed again.
        let noisy = noise(20_000, 7);
        let regular: Vec<(String, u64)> = (0..300_000).map(|i| (format!("key{i:07}"), i)).collect();
        let records: Vec<(String, u64)> = noisy.iter().chain(&regular).cloned().collect();
        let bytes = encode_with(&records, Compression::Lz4);
        assert_eq!(decode(&bytes).unwrap(), records);
        let raws = raw_fields(&bytes);
        let stored = raws.iter().filter(|&&r| r & STORED != 0).count();
        let noisy_blocks = encode(&noisy).len().div_ceil(BLOCK_TARGET);
        assert!(stored >= noisy_blocks - 1 && stored < raws.len() / 2, "{stored} of {} blocks stored", raws.len());
        assert!(raws.last().is_some_and(|&r| r & STORED == 0), "compressed again once it pays");
        let plain = encode(&noise(20_000, 7)).len();
        let packed = encode_with(&noise(20_000, 7), Compression::Lz4).len();
        assert!(packed <= plain + 4 * plain.div_ceil(BLOCK_TARGET), "noise: lz4 {packed} bytes, plain {plain}");
    }

    #[test]
    fn a_stored_block_whose_lengths_disagree_is_corrupt() {
        let bytes = encode_with(&noise(50, 3), Compression::Lz4);
        assert_ne!(raw_fields(&bytes)[0] & STORED, 0, "stored as encoded");
        let mut bad = bytes.clone();
        bad[16] ^= 1;
        let got = decode(&bad);
        assert!(matches!(got, Err(FormatError::Corrupt { offset: 4, .. })), "{got:?}");
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
mod fuzz;
