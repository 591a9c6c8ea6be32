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
    let cumulative = zipf_cumulative(vocabulary);
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

/// Cumulative Zipf weights (rank `r` has weight `1/r`) of `n` ranks, scaled to `u64`: a
/// uniform `u64` finds its rank by binary search.
fn zipf_cumulative(n: usize) -> Vec<u64> {
    let total: f64 = (1..=n).map(|r| 1.0 / r as f64).sum();
    let mut acc = 0.0;
    (1..=n)
        .map(|r| {
            acc += 1.0 / r as f64 / total;
            (acc.min(1.0) * u64::MAX as f64) as u64
        })
        .collect()
}

/// The word list of Debian's `wamerican-huge`, where it is installed.
pub const DICTIONARY: &str = "/usr/share/dict/american-english-huge";

/// Writes about `bytes` of English-like text to `path`: sentences of 4 to 24 words drawn
/// with Zipf frequencies (rank `r` has weight `1/r`) from the lines of `words` (a word
/// list such as [`DICTIONARY`], in an order shuffled by `seed`), one word in forty
/// inflected (`-s`, `-ed`, `-ing`), the first word of each sentence capitalized,
/// commas and periods as in prose, lines wrapped near 72 columns.
/// Without a word list (`None`, or a file that cannot be read), the vocabulary is 400,000
/// made-up words of English syllables. Returns whether the word list was used.
pub fn generate_english(path: &Path, bytes: u64, words: Option<&Path>, seed: u64) -> io::Result<bool> {
    let mut rng = SplitMix64::new(seed);
    let listed: Option<Vec<String>> = words
        .and_then(|w| std::fs::read_to_string(w).ok())
        .map(|text| text.lines().map(str::trim).filter(|w| !w.is_empty()).map(String::from).collect());
    let from_list = listed.as_ref().is_some_and(|l| l.len() > 1000);
    let mut vocab = match listed.filter(|l| l.len() > 1000) {
        Some(list) => list,
        None => {
            const SYLLABLES: &[&str] = &[
                "th", "er", "on", "an", "re", "he", "in", "ed", "nd", "ha", "at", "en", "es", "of", "or", "nt", "ea",
                "ti", "to", "it", "st", "io", "le", "is", "ou", "ar", "as", "de", "rt", "ve", "a", "e", "i", "o", "u",
                "y", "ing", "tion", "ment", "ly", "ous", "able", "pre", "con", "com", "pro",
            ];
            let mut seen = std::collections::HashSet::new();
            while seen.len() < 400_000 {
                let n = 1 + rng.below(4) as usize;
                let w: String = (0..n).map(|_| SYLLABLES[rng.below(SYLLABLES.len() as u64) as usize]).collect();
                seen.insert(w);
            }
            let mut v: Vec<String> = seen.into_iter().collect();
            v.sort();
            v
        }
    };
    // Shuffle (Fisher-Yates), so that the frequent words are not the alphabetically first.
    for i in (1..vocab.len()).rev() {
        vocab.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let n = vocab.len();
    let cumulative = zipf_cumulative(n);
    let mut out = BufWriter::with_capacity(1 << 20, File::create(path)?);
    let (mut written, mut column) = (0u64, 0usize);
    let mut word = String::new();
    while written < bytes {
        let len = 4 + rng.below(21);
        for i in 0..len {
            let x = rng.next_u64();
            word.clear();
            word.push_str(&vocab[cumulative.partition_point(|&c| c < x).min(n - 1)]);
            // Inflections, as in prose (and more distinct words, as real text has).
            if rng.below(40) == 0 {
                word.push_str(["s", "ed", "ing"][rng.below(3) as usize]);
            }
            if let Some(first) = word.chars().next().filter(|_| i == 0) {
                let upper: String = first.to_uppercase().collect();
                word.replace_range(..first.len_utf8(), &upper);
            }
            if i + 1 == len {
                word.push('.');
            } else if rng.below(12) == 0 {
                word.push(',');
            }
            let sep = if column == 0 {
                ""
            } else if column + 1 + word.len() > 72 {
                column = 0;
                "\n"
            } else {
                " "
            };
            out.write_all(sep.as_bytes())?;
            out.write_all(word.as_bytes())?;
            column += sep.len().min(1) + word.len();
            written += (sep.len() + word.len()) as u64;
        }
    }
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(from_list)
}

/// What [`gather_documents`] found.
#[derive(Debug, Clone, Copy, Default)]
pub struct Gathered {
    /// Documents taken (text files, decompressed where they were gzipped).
    pub documents: u64,
    /// Their bytes, once each.
    pub unique_bytes: u64,
}

/// Writes about `bytes` of real text to `path`: the documents found under `roots` (in
/// name order), gzipped ones decompressed, each taken if it is UTF-8 without NUL bytes
/// and under 16 MiB, concatenated; if they are fewer bytes than asked, they are
/// concatenated again. Fails if no document is found.
pub fn gather_documents(path: &Path, bytes: u64, roots: &[&Path]) -> io::Result<Gathered> {
    fn walk(dir: &Path, files: &mut Vec<std::path::PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        let mut entries: Vec<_> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
        entries.sort();
        for p in entries {
            match std::fs::symlink_metadata(&p) {
                Ok(m) if m.is_dir() => walk(&p, files),
                Ok(m) if m.is_file() && m.len() < 16 << 20 => files.push(p),
                _ => {}
            }
        }
    }
    let mut files = Vec::new();
    for root in roots {
        walk(root, &mut files);
    }
    let mut docs: Vec<Vec<u8>> = Vec::new();
    let mut unique = 0u64;
    for file in files {
        let Ok(raw) = std::fs::read(&file) else { continue };
        let text = if file.extension().is_some_and(|e| e == "gz") {
            let mut out = Vec::new();
            let decoder = flate2::read::MultiGzDecoder::new(&raw[..]);
            if io::Read::read_to_end(&mut io::Read::take(decoder, 16 << 20), &mut out).is_err() {
                continue;
            }
            out
        } else {
            raw
        };
        if text.is_empty() || text.contains(&0) || std::str::from_utf8(&text).is_err() {
            continue;
        }
        unique += text.len() as u64;
        docs.push(text);
        if unique >= bytes {
            break;
        }
    }
    if docs.is_empty() {
        return Err(io::Error::new(io::ErrorKind::NotFound, "no text document under the roots given"));
    }
    let mut out = BufWriter::with_capacity(1 << 20, File::create(path)?);
    let mut written = 0u64;
    'fill: loop {
        for doc in &docs {
            out.write_all(doc)?;
            if !doc.ends_with(b"\n") {
                out.write_all(b"\n")?;
            }
            written += doc.len() as u64 + 1;
            if written >= bytes {
                break 'fill;
            }
        }
    }
    out.flush()?;
    Ok(Gathered { documents: docs.len() as u64, unique_bytes: unique })
}
