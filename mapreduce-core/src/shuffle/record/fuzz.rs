//! Hostile input for the reader: arbitrary bytes, and valid files with bytes flipped, cut
//! or spliced. It never panics, never ends a corrupt file without an error, and never
//! allocates for a block claimed larger than the block limit.

use std::time::{Duration, Instant};

use super::*;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;

fn encode(records: &[(String, u64)], lz4: bool) -> Vec<u8> {
    let compression = if lz4 { Compression::Lz4 } else { Compression::None };
    let mut w = RecordWriter::with_compression(Vec::new(), compression).unwrap();
    for (k, v) in records {
        w.write(k, v).unwrap();
    }
    w.finish().unwrap().0
}

fn decode(bytes: &[u8]) -> Result<Vec<(String, u64)>, FormatError> {
    RecordReader::new(bytes).collect()
}

/// Records whose files span one block or several: `n` keys of up to 12 bytes, or of up
/// to 3000 (built from a seed: generating that much text is slow).
fn records() -> impl Strategy<Value = Vec<(String, u64)>> {
    (0usize..60, any::<bool>(), any::<u64>()).prop_map(|(n, big, mut seed)| {
        let mut next = move || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            seed >> 11
        };
        let max = if big { 3000 } else { 12 };
        let record = |_| {
            let len = next() as usize % (max + 1);
            let key: String = (0..len).map(|_| char::from(b'a' + (next() % 26) as u8)).collect();
            (key, next())
        };
        (0..n).map(record).collect()
    })
}

/// A block length as a corrupt header may claim it: small enough to read at once, or
/// past the limit. (A claim just under the limit is honoured: the reader allocates up
/// to the limit before it finds the file short.)
fn claimed_len() -> impl Strategy<Value = u32> {
    prop_oneof![0u32..4096, (BLOCK_LIMIT as u32 + 1)..=u32::MAX]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any bytes, after either magic or none, with the first block length claimed
    /// small or huge: the reader ends with records or an error, and never panics, as
    /// either pair of types.
    #[test]
    fn arbitrary_bytes_never_panic(magic in 0usize..3, len in claimed_len(), tail in vec(any::<u8>(), 0..2048)) {
        let mut bytes = [&MAGIC[..], &MAGIC_LZ4[..], b""][magic].to_vec();
        bytes.extend_from_slice(&len.to_le_bytes());
        bytes.extend_from_slice(&tail);
        let _ = decode(&bytes);
        let _ = RecordReader::<_, u64, Vec<u8>>::new(&bytes[..]).collect::<Result<Vec<_>, _>>();
        let _ = RecordReader::<_, (), ()>::new(&bytes[..]).take(10_000).count();
    }

    /// Up to four bytes flipped anywhere in a valid file: always an error, whatever
    /// records came before it.
    #[test]
    fn flipped_bytes_are_always_an_error(
        records in records(),
        lz4 in any::<bool>(),
        flips in vec((any::<Index>(), 1u8..=255), 1..5),
    ) {
        let good = encode(&records, lz4);
        let mut bad = good.clone();
        let mut flipped = Vec::new();
        for (at, mask) in flips {
            let i = at.index(bad.len());
            if !flipped.contains(&i) {
                bad[i] ^= mask;
                flipped.push(i);
            }
        }
        prop_assert!(decode(&bad).is_err(), "flips at {:?} went unnoticed", flipped);
    }

    /// A valid file cut short, extended, or with a run of bytes cut out of its middle:
    /// always an error.
    #[test]
    fn cut_extended_and_spliced_files_are_always_an_error(
        records in records(),
        lz4 in any::<bool>(),
        cut in any::<Index>(),
        gap in (any::<Index>(), 1usize..64),
        extra in vec(any::<u8>(), 1..16),
    ) {
        let good = encode(&records, lz4);
        prop_assert_eq!(decode(&good).unwrap(), records);
        let cut = cut.index(good.len());
        prop_assert!(decode(&good[..cut]).is_err(), "cut to {} of {} bytes", cut, good.len());
        let longer = [&good[..], &extra[..]].concat();
        prop_assert!(decode(&longer).is_err());
        let from = gap.0.index(good.len());
        let to = (from + gap.1).min(good.len());
        let spliced = [&good[..from], &good[to..]].concat();
        prop_assert!(decode(&spliced).is_err(), "bytes {}..{} cut out", from, to);
    }
}

/// A header or an LZ4 raw length claiming more than the block limit (up to 4 GiB) is
/// an error at once, before anything is allocated for it.
#[test]
fn a_block_claiming_up_to_4_gib_is_an_error_at_once() {
    let too_large = |got: Result<Vec<(String, u64)>, FormatError>| {
        matches!(got, Err(FormatError::Corrupt { offset: 4, what: "block length too large" }))
    };
    for claimed in [u32::MAX, 1 << 31, BLOCK_LIMIT as u32 + 1] {
        for magic in [MAGIC, MAGIC_LZ4] {
            let mut bytes = magic.to_vec();
            bytes.extend_from_slice(&claimed.to_le_bytes());
            bytes.extend_from_slice(&[0; 12]);
            let started = Instant::now();
            let got = decode(&bytes);
            assert!(too_large(got), "{claimed} claimed after {magic:?}");
            assert!(started.elapsed() < Duration::from_secs(1));
        }
        // A well-sealed LZ4 block whose raw length claims too much (with the top bit set,
        // a stored block's length that differs from its header's).
        let mut bytes = encode(&[("key".into(), 7)], true);
        bytes[16..20].copy_from_slice(&claimed.to_le_bytes());
        let started = Instant::now();
        let got = decode(&bytes);
        let differs =
            matches!(got, Err(FormatError::Corrupt { offset: 4, what: "stored block length differs from its header" }));
        assert!(if claimed & (1 << 31) != 0 { differs } else { too_large(got) }, "raw {claimed}");
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}
