//! Deterministic inputs: the text corpus of word count, the records of the sort, and the
//! seeded generator both draw from, so that every machine generates the same bytes.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use crate::sort::{KEY_LEN, RECORD_LEN};

/// A small, fast, seeded generator (SplitMix64), so corpora are the same on every machine.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

/// Writes a deterministic text corpus of about `bytes` bytes to `path`: words drawn from a
/// vocabulary of `vocabulary` words with Zipf-like frequencies (rank `r` has weight
/// `1/r`), some with non-ASCII letters, in lines of 4 to 16 words with some punctuation.
pub fn generate_corpus(path: &Path, bytes: u64, vocabulary: usize, seed: u64) -> io::Result<()> {
    const LETTERS: &[&str] = &[
        "a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m", "n", "o", "p", "q", "r", "s", "t", "u", "v",
        "w", "x", "y", "z", "e", "a", "o", "i", "n", "t", "é", "ß", "ø", "ж",
    ];
    let mut rng = SplitMix64::new(seed);
    let vocabulary = vocabulary.max(1);
    let vocab: Vec<String> = (0..vocabulary)
        .map(|i| {
            let len = 2 + rng.below(9) as usize;
            let mut w: String = (0..len).map(|_| LETTERS[rng.below(LETTERS.len() as u64) as usize]).collect();
            if i % 7 == 0 && w.as_bytes()[0].is_ascii() {
                w[..1].make_ascii_uppercase();
            }
            w
        })
        .collect();
    // Cumulative 1/r weights scaled to u64, for sampling by binary search.
    let total: f64 = (1..=vocabulary).map(|r| 1.0 / r as f64).sum();
    let mut acc = 0.0;
    let cumulative: Vec<u64> = (1..=vocabulary)
        .map(|r| {
            acc += 1.0 / r as f64 / total;
            (acc.min(1.0) * u64::MAX as f64) as u64
        })
        .collect();
    let mut out = BufWriter::with_capacity(1 << 20, File::create(path)?);
    let mut written = 0u64;
    while written < bytes {
        let n = 4 + rng.below(13);
        let mut line = String::with_capacity(128);
        for i in 0..n {
            let x = rng.next_u64();
            let idx = cumulative.partition_point(|&c| c < x).min(vocabulary - 1);
            if i > 0 {
                line.push_str(match rng.below(20) {
                    0 => ", ",
                    1 => " - ",
                    _ => " ",
                });
            }
            line.push_str(&vocab[idx]);
        }
        line.push_str(if rng.below(10) == 0 { ".\r\n" } else { "\n" });
        out.write_all(line.as_bytes())?;
        written += line.len() as u64;
    }
    out.flush()
}

/// Writes `count` deterministic sort records to `path`: a random key of printable,
/// non-space ASCII, then the payload `"  "`, the record number in 32 hex digits, `"  "`
/// and 53 filler letters (the layout of gensort's ASCII records).
pub fn generate_records(path: &Path, count: u64, seed: u64) -> io::Result<()> {
    const FILLER: &[u8; 16] = b"0123456789ABCDEF";
    let mut rng = SplitMix64::new(seed);
    let mut out = BufWriter::with_capacity(1 << 20, File::create(path)?);
    let mut record = [b' '; RECORD_LEN];
    record[RECORD_LEN - 1] = b'\n';
    for i in 0..count {
        for b in &mut record[..KEY_LEN] {
            *b = b'!' + rng.below(94) as u8;
        }
        for (d, b) in record[KEY_LEN + 2..KEY_LEN + 34].iter_mut().rev().enumerate() {
            *b = FILLER[((u128::from(i) >> (4 * d)) & 0xf) as usize];
        }
        let fill = FILLER[(i % 16) as usize];
        record[KEY_LEN + 36..RECORD_LEN - 1].fill(fill);
        out.write_all(&record)?;
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::count_sequential;

    #[test]
    fn corpus_is_deterministic_and_sized() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        generate_corpus(&a, 50_000, 1000, 7).unwrap();
        generate_corpus(&b, 50_000, 1000, 7).unwrap();
        let (x, y) = (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        assert_eq!(x, y);
        assert!((50_000..50_200).contains(&x.len()), "{}", x.len());
        let counts = count_sequential(&[a]).unwrap();
        let top = counts.values().max().copied().unwrap();
        let total: u64 = counts.values().sum();
        assert!(top * 20 > total, "the most frequent word should be frequent (Zipf): {top} of {total}");
    }

    #[test]
    fn records_are_deterministic_and_well_formed() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        generate_records(&a, 500, 3).unwrap();
        generate_records(&b, 500, 3).unwrap();
        let bytes = std::fs::read(&a).unwrap();
        assert_eq!(bytes, std::fs::read(&b).unwrap());
        assert_eq!(bytes.len(), 500 * RECORD_LEN);
        for r in bytes.chunks(RECORD_LEN) {
            assert!(r[..KEY_LEN].iter().all(u8::is_ascii_graphic), "{r:?}");
            assert!(r[..RECORD_LEN - 1].iter().all(|&c| c == b' ' || c.is_ascii_graphic()));
            assert_eq!(r[RECORD_LEN - 1], b'\n');
        }
    }
}
