//! The tuned baselines the framework is measured against: a word count written for speed
//! on one thread. (The sort's baseline is its reference,
//! [`sort_sequential`](crate::reference::sort_sequential).) What makes the count fast:
//!
//! - The text is read in large blocks, validated as UTF-8 with SIMD (`simdutf8`), and
//!   split 64 bytes at a time ([`for_each_word`]), branching per word, not per byte.
//! - An open-addressing table whose 24-byte slots hold words of up to 16 bytes inline
//!   (nearly all words), so a lookup touches one cache line and compares two machine
//!   words; a word's key is two unaligned loads and a mask, never a copy. Longer words go
//!   to a side table.
//! - Keys and hashes computed for a batch of words first, then the batch's slots loaded
//!   together, so the cache misses of a table larger than the cache overlap instead of
//!   queueing; then the batch is probed.
//! - The counts written sorted ([`count_tuned_to`]) without a string per word: the slots
//!   sort as 128-bit integers of their bytes, the rare long words apart, the two merged
//!   as they are written, numbers formatted with `itoa`.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use rustc_hash::FxHasher;

use crate::wordcount::for_each_word;

const INLINE: usize = 16;
const BATCH: usize = 32;
const BLOCK: usize = 4 << 20;

/// 24 bytes: the word's bytes zero-padded as two integers (compared in registers), and
/// its length (top byte; 0 marks an empty slot) with its count (low 56 bits).
#[derive(Clone, Copy, Default)]
struct Slot {
    lo: u64,
    hi: u64,
    meta: u64,
}

const COUNT_BITS: u32 = 56;

impl Slot {
    fn len(&self) -> usize {
        (self.meta >> COUNT_BITS) as usize
    }
    fn count(&self) -> u64 {
        self.meta & ((1 << COUNT_BITS) - 1)
    }
}

/// A short word as a table key: its bytes zero-padded into two integers, and its length.
#[derive(Clone, Copy, Default)]
struct Key {
    lo: u64,
    hi: u64,
    len: u64,
    hash: u64,
}

impl Key {
    /// The key of `text[at..at + len]`, `len <= 16`: one 16-byte load and a mask where
    /// the text goes on for 16 bytes, a copy only near its end.
    #[inline(always)]
    fn of(text: &[u8], at: usize, len: usize) -> Key {
        let raw = match text.get(at..at + INLINE) {
            Some(b) => u128::from_le_bytes(b.try_into().expect("16 bytes")),
            None => {
                let mut b = [0u8; INLINE];
                b[..len].copy_from_slice(&text[at..at + len]);
                u128::from_le_bytes(b)
            }
        };
        let raw = if len == INLINE { raw } else { raw & ((1u128 << (8 * len)) - 1) };
        let (lo, hi) = (raw as u64, (raw >> 64) as u64);
        Key { lo, hi, len: len as u64, hash: Self::hash(lo, hi, len as u64) }
    }

    /// A few multiplies over the packed bytes and the length.
    #[inline(always)]
    fn hash(lo: u64, hi: u64, len: u64) -> u64 {
        let mut h = (lo ^ 0x9e37_79b9_7f4a_7c15).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        h ^= (hi ^ len).wrapping_mul(0x94d0_49bb_1331_11eb);
        h ^= h >> 31;
        h = h.wrapping_mul(0xd6e8_feb8_6659_fd93);
        h ^ (h >> 32)
    }

    fn bytes(&self) -> Vec<u8> {
        let mut b = (u128::from(self.lo) | (u128::from(self.hi) << 64)).to_le_bytes().to_vec();
        b.truncate(self.len as usize);
        b
    }
}

/// Counts of short words inline, long words aside.
struct Table {
    slots: Vec<Slot>,
    mask: usize,
    len: usize,
    long: HashMap<Box<[u8]>, u64, BuildHasherDefault<FxHasher>>,
    batch: [Key; BATCH],
    queued: usize,
}

impl Table {
    fn new() -> Self {
        let cap = 1 << 16;
        Table {
            slots: vec![Slot::default(); cap],
            mask: cap - 1,
            len: 0,
            long: HashMap::default(),
            batch: [Key::default(); BATCH],
            queued: 0,
        }
    }

    /// Counts `text[at..at + len]`, in the next batch if it is short.
    #[inline(always)]
    fn push(&mut self, text: &[u8], at: usize, len: usize) {
        if len > INLINE {
            *self.long.entry(text[at..at + len].into()).or_insert(0) += 1;
            return;
        }
        self.batch[self.queued] = Key::of(text, at, len);
        self.queued += 1;
        if self.queued == BATCH {
            self.flush();
        }
    }

    /// Counts the queued batch: every slot loaded before any is probed, so their misses
    /// overlap.
    fn flush(&mut self) {
        let mut touch = 0u64;
        for k in &self.batch[..self.queued] {
            touch ^= self.slots[k.hash as usize & self.mask].meta;
        }
        std::hint::black_box(touch);
        for i in 0..self.queued {
            let k = self.batch[i];
            self.add(k);
        }
        self.queued = 0;
    }

    #[inline(always)]
    fn add(&mut self, k: Key) {
        let mut i = k.hash as usize & self.mask;
        loop {
            let slot = &mut self.slots[i];
            if slot.lo == k.lo && slot.hi == k.hi && slot.len() == k.len as usize {
                slot.meta += 1;
                return;
            }
            if slot.meta == 0 {
                *slot = Slot { lo: k.lo, hi: k.hi, meta: (k.len << COUNT_BITS) | 1 };
                self.len += 1;
                // Linear probing stays short up to three quarters full.
                if self.len * 4 > self.slots.len() * 3 {
                    self.grow();
                }
                return;
            }
            i = (i + 1) & self.mask;
        }
    }

    fn grow(&mut self) {
        let cap = self.slots.len() * 2;
        let old = std::mem::replace(&mut self.slots, vec![Slot::default(); cap]);
        self.mask = cap - 1;
        for s in old.into_iter().filter(|s| s.meta != 0) {
            let mut i = Key::hash(s.lo, s.hi, s.len() as u64) as usize & self.mask;
            while self.slots[i].meta != 0 {
                i = (i + 1) & self.mask;
            }
            self.slots[i] = s;
        }
    }

    /// Counts the words of the UTF-8 `text`.
    fn count(&mut self, text: &str) {
        let bytes = text.as_bytes();
        let base = bytes.as_ptr() as usize;
        for_each_word(text, |w| self.push(bytes, w.as_ptr() as usize - base, w.len()));
        self.flush();
    }

    /// Writes the counts as `word<TAB>count` lines sorted by word (bytewise, as `str`
    /// orders); returns the number of words.
    fn write_sorted<W: Write>(self, out: &mut W) -> io::Result<usize> {
        // A short word's bytes, big-endian and zero-padded, order as the word does: a word
        // has no 0 byte, so the padding puts a word before its extensions.
        let mut short: Vec<(u128, u64)> = (self.slots.iter().filter(|s| s.meta != 0))
            .map(|s| ((u128::from(s.lo) | (u128::from(s.hi) << 64)).swap_bytes(), s.meta))
            .collect();
        short.sort_unstable_by_key(|e| e.0);
        let mut long: Vec<(Box<[u8]>, u64)> = self.long.into_iter().collect();
        long.sort_unstable();
        let mut num = itoa::Buffer::new();
        let mut line = |out: &mut W, word: &[u8], n: u64| -> io::Result<()> {
            out.write_all(word)?;
            out.write_all(b"\t")?;
            out.write_all(num.format(n).as_bytes())?;
            out.write_all(b"\n")
        };
        let mut long_words = long.iter().peekable();
        for &(bits, meta) in &short {
            let slot = Slot { meta, ..Slot::default() };
            let bytes = bits.to_be_bytes();
            let word = &bytes[..slot.len()];
            while let Some((w, n)) = long_words.next_if(|(w, _)| **w < *word) {
                line(out, w, *n)?;
            }
            line(out, word, slot.count())?;
        }
        for (w, n) in long_words {
            line(out, w, *n)?;
        }
        Ok(short.len() + long.len())
    }

    fn into_counts(self) -> Vec<(String, u64)> {
        let slots = self.slots.into_iter().filter(|s| s.meta != 0);
        let short = slots.map(|s| {
            let key = Key { lo: s.lo, hi: s.hi, len: s.len() as u64, hash: 0 };
            (String::from_utf8(key.bytes()).expect("words are UTF-8"), s.count())
        });
        let long = self.long.into_iter().map(|(k, c)| (String::from_utf8(k.into()).expect("words are UTF-8"), c));
        short.chain(long).collect()
    }
}

/// Counts the words of `files` on this thread, as fast as we know how. Unsorted. Bytes
/// that are not UTF-8 separate words, as in the job.
pub fn count_tuned(files: &[PathBuf]) -> io::Result<Vec<(String, u64)>> {
    Ok(count_into_table(files)?.into_counts())
}

/// [`count_tuned`], written to `out` as `word<TAB>count` lines sorted by word, as the word
/// count job writes its output (which sorts within each output file): the best single
/// thread from the input to a sorted output file. Returns the number of words.
pub fn count_tuned_to(files: &[PathBuf], out: &Path) -> io::Result<usize> {
    let table = count_into_table(files)?;
    let mut out = io::BufWriter::with_capacity(1 << 20, std::fs::File::create(out)?);
    let n = table.write_sorted(&mut out)?;
    out.flush()?;
    Ok(n)
}

fn count_into_table(files: &[PathBuf]) -> io::Result<Table> {
    let mut table = Table::new();
    let mut buf = vec![0u8; BLOCK];
    for path in files {
        let mut file = std::fs::File::open(path)?;
        let mut filled = 0;
        loop {
            if filled == buf.len() {
                buf.resize(buf.len() * 2, 0); // a block without a separator: a huge word
            }
            let n = file.read(&mut buf[filled..])?;
            filled += n;
            // Count up to the last ASCII byte that is not a letter (a word and character
            // boundary), or all at the end; carry the tail over.
            let cut = if n == 0 {
                filled
            } else {
                match buf[..filled].iter().rposition(|&b| b.is_ascii() && !b.is_ascii_alphabetic()) {
                    Some(cut) => cut + 1,
                    None => continue,
                }
            };
            match simdutf8::basic::from_utf8(&buf[..cut]) {
                Ok(text) => table.count(text),
                Err(_) => table.count(&String::from_utf8_lossy(&buf[..cut])),
            }
            if n == 0 {
                break;
            }
            buf.copy_within(cut..filled, 0);
            filled -= cut;
        }
    }
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::corpus::generate_corpus;
    use crate::reference::count_sequential;

    #[test]
    fn tuned_count_equals_the_reference() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        generate_corpus(&a, 3 << 20, 50_000, 9).unwrap();
        let b = dir.path().join("b");
        let long = "x".repeat(40);
        let mut text = format!("caf\u{e9} na\u{ef}ve {long} {long}\n").into_bytes();
        text.extend_from_slice(b"\xffbad\xe2\x80\x94dash abcdefghijklmnop abcdefghijklmnopq abcdefghijklmnop \xc3");
        std::fs::write(&b, text).unwrap();
        let files = vec![a, b];
        let mut got = count_tuned(&files).unwrap();
        got.sort();
        let want: Vec<(String, u64)> = count_sequential(&files).unwrap().into_iter().collect();
        assert_eq!(got, want);
        // Written sorted: the same lines, in `str` order (a BTreeMap's), long words among
        // the short ones where they belong.
        let out = dir.path().join("counts");
        assert_eq!(count_tuned_to(&files, &out).unwrap(), want.len());
        let lines: Vec<String> = want.iter().map(|(w, n)| format!("{w}\t{n}\n")).collect();
        assert_eq!(std::fs::read_to_string(&out).unwrap(), lines.concat());
    }
}
