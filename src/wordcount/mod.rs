//! Word count, the canonical MapReduce job, with what its example, tests and benchmarks
//! share: the job, a sequential reference implementation, and a deterministic corpus.
//!
//! A word is a maximal run of characters for which [`char::is_alphabetic`] holds; case is
//! kept. Output lines are `word<TAB>count`.

use std::collections::BTreeMap;
use std::hash::BuildHasherDefault;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{BoxError, Emitter, Job, Mapper, Output, Reducer};

mod split;
mod tuned;
pub use split::for_each_word;
pub use tuned::count_tuned;

/// The word count job.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct WordCount;

/// The words of `text`: maximal runs of alphabetic characters.
pub fn words(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !is_alphabetic(c)).filter(|w| !w.is_empty())
}

/// [`char::is_alphabetic`], with answers for ASCII and the Latin and Cyrillic letters of
/// European text that skip the general Unicode table search.
#[inline]
pub fn is_alphabetic(c: char) -> bool {
    match c {
        'a'..='z' | 'A'..='Z' => true,
        '\0'..='\x7f' => false,
        // Latin-1 letters, Latin Extended-A and -B: all letters but × and ÷.
        '\u{c0}'..='\u{24f}' => c != '\u{d7}' && c != '\u{f7}',
        // Cyrillic: letters but for the signs and combining marks U+0482..U+0489.
        '\u{400}'..='\u{481}' | '\u{48a}'..='\u{52f}' => true,
        _ => c.is_alphabetic(),
    }
}

/// Words as keys: a string stored inline up to 24 bytes (nearly every word), so the map
/// side's table compares keys without following a pointer to the heap.
pub type Word = compact_str::CompactString;

impl Mapper for WordCount {
    type Key = Word;
    type Value = u64;

    fn map(&self, line: &str, emit: &mut Emitter<'_, Word, u64>) -> Result<(), BoxError> {
        for_each_word(line, |word| emit.emit_str(word, 1));
        Ok(())
    }

    /// Line ends separate words like any other separator: split the whole block.
    fn map_lines(&self, lines: &str, emit: &mut Emitter<'_, Word, u64>) -> Result<(), BoxError> {
        self.map(lines, emit)
    }
}

impl Reducer for WordCount {
    fn reduce(&self, word: &Word, counts: &mut dyn Iterator<Item = u64>, out: &mut Output<'_>) -> Result<(), BoxError> {
        out.emit(word, counts.sum::<u64>())?;
        Ok(())
    }

    fn combine(&self, _word: &Word, acc: &mut u64, count: u64) -> Option<u64> {
        *acc += count;
        None
    }
}

impl Job for WordCount {
    const NAME: &'static str = "wordcount";
}

type FxMap<K, V> = std::collections::HashMap<K, V, BuildHasherDefault<rustc_hash::FxHasher>>;

/// Counts the words of `files` in this thread: the reference the distributed job must
/// equal. Bytes that are not UTF-8 separate words, as in the job.
pub fn count_sequential(files: &[PathBuf]) -> io::Result<BTreeMap<String, u64>> {
    let mut counts: FxMap<Box<str>, u64> = FxMap::default();
    for file in files {
        let bytes = std::fs::read(file)?;
        for word in words(&String::from_utf8_lossy(&bytes)) {
            match counts.get_mut(word) {
                Some(c) => *c += 1,
                None => {
                    counts.insert(word.into(), 1);
                }
            }
        }
    }
    Ok(counts.into_iter().map(|(w, c)| (w.into_string(), c)).collect())
}

/// Reads a word count output directory (`part-*` files of `word<TAB>count` lines) into a
/// map, checking that each file is sorted and no word appears twice.
pub fn read_output(dir: &Path) -> io::Result<BTreeMap<String, u64>> {
    let bad = |msg: String| io::Error::new(io::ErrorKind::InvalidData, msg);
    let mut parts: Vec<PathBuf> = std::fs::read_dir(dir)?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>()?;
    parts.retain(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("part-")));
    parts.sort();
    let mut counts = BTreeMap::new();
    for part in parts {
        let text = std::fs::read_to_string(&part)?;
        let mut previous: Option<&str> = None;
        for line in text.lines() {
            let (word, count) =
                line.split_once('\t').ok_or_else(|| bad(format!("{}: no tab in {line:?}", part.display())))?;
            let count: u64 = count.parse().map_err(|_| bad(format!("{}: bad count in {line:?}", part.display())))?;
            if previous.is_some_and(|p| p >= word) {
                return Err(bad(format!("{}: {word:?} is out of order", part.display())));
            }
            previous = Some(word);
            if counts.insert(word.to_string(), count).is_some() {
                return Err(bad(format!("{}: {word:?} appears in two partitions", part.display())));
            }
        }
    }
    Ok(counts)
}

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
    let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fast_is_alphabetic_agrees_with_std_everywhere() {
        for c in (0..=0x10ffff).filter_map(char::from_u32) {
            assert_eq!(is_alphabetic(c), c.is_alphabetic(), "{c:?} U+{:04X}", c as u32);
        }
    }

    #[test]
    fn words_are_alphabetic_runs_with_case_kept() {
        let got: Vec<&str> = words("Hello, wörld! it's 42x ß-Straße\u{fffd}ok").collect();
        assert_eq!(got, vec!["Hello", "wörld", "it", "s", "x", "ß", "Straße", "ok"]);
    }

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
}
