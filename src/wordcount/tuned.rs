//! A word count written for speed on one thread: the baseline the framework is measured
//! against. What makes it fast, besides reading large blocks and splitting bytes with a
//! lookup table:
//!
//! - An open-addressing table whose slots hold words of up to 16 bytes inline (most words),
//!   so a lookup touches one cache line and compares two machine words; longer words go
//!   to a side table.
//! - Hashes computed for a batch of words first, then the batch's slots loaded together,
//!   so the cache misses of a table larger than the cache overlap instead of queueing.
//! - Words that are pure ASCII never go through UTF-8 decoding; a run with other bytes
//!   is decoded lossily and split by `char::is_alphabetic`, as the job does.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::io::{self, Read};
use std::path::PathBuf;

use rustc_hash::FxHasher;

use super::words;

const INLINE: usize = 16;
const BATCH: usize = 32;
const BLOCK: usize = 4 << 20;

/// Byte classes: 0 separates words, 1 is an ASCII letter, 2 is a non-ASCII byte.
const CLASS: [u8; 256] = {
    let mut c = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        c[i] = if b.is_ascii_alphabetic() {
            1
        } else if b >= 0x80 {
            2
        } else {
            0
        };
        i += 1;
    }
    c
};

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
    fn len(&self) -> u8 {
        (self.meta >> COUNT_BITS) as u8
    }
    fn count(&self) -> u64 {
        self.meta & ((1 << COUNT_BITS) - 1)
    }
    fn key(&self) -> u128 {
        u128::from(self.lo) | (u128::from(self.hi) << 64)
    }
}

/// Counts of short words inline, long words aside.
struct Table {
    slots: Vec<Slot>,
    mask: usize,
    len: usize,
    long: HashMap<Box<[u8]>, u64, BuildHasherDefault<FxHasher>>,
}

fn pack(word: &[u8]) -> u128 {
    let mut key = [0u8; INLINE];
    key[..word.len()].copy_from_slice(word);
    u128::from_le_bytes(key)
}

fn hash(key: &u128, len: usize) -> u64 {
    let (a, b) = (*key as u64, (*key >> 64) as u64);
    let mut h = (a ^ 0x9e37_79b9_7f4a_7c15).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= (b ^ len as u64).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    h = h.wrapping_mul(0xd6e8_feb8_6659_fd93);
    h ^ (h >> 32)
}

impl Table {
    fn new() -> Self {
        let cap = 1 << 16;
        Table { slots: vec![Slot::default(); cap], mask: cap - 1, len: 0, long: HashMap::default() }
    }

    #[inline]
    fn add_hashed(&mut self, key: u128, len: u8, h: u64) {
        let mut i = h as usize & self.mask;
        loop {
            let slot = &mut self.slots[i];
            if slot.len() == len && slot.lo == key as u64 && slot.hi == (key >> 64) as u64 {
                slot.meta += 1;
                return;
            }
            if slot.meta == 0 {
                *slot = Slot { lo: key as u64, hi: (key >> 64) as u64, meta: (u64::from(len) << COUNT_BITS) | 1 };
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
        self.mask = self.slots.len() - 1;
        for s in old.into_iter().filter(|s| s.meta != 0) {
            let mut i = hash(&s.key(), s.len() as usize) as usize & self.mask;
            while self.slots[i].meta != 0 {
                i = (i + 1) & self.mask;
            }
            self.slots[i] = s;
        }
    }

    fn add_long(&mut self, word: &[u8]) {
        match self.long.get_mut(word) {
            Some(c) => *c += 1,
            None => {
                self.long.insert(word.into(), 1);
            }
        }
    }

    /// Counts a batch of ASCII words: hashes first, then every slot loaded before any is
    /// probed, so their misses overlap.
    fn add_batch(&mut self, batch: &[(usize, usize)], text: &[u8]) {
        let mut keys = [(0u128, 0u8, 0u64); BATCH];
        let mut touch = 0u64;
        for (k, &(start, end)) in keys.iter_mut().zip(batch) {
            let key = pack(&text[start..end]);
            let h = hash(&key, end - start);
            touch ^= self.slots[h as usize & self.mask].meta;
            *k = (key, (end - start) as u8, h);
        }
        std::hint::black_box(touch);
        for &(key, len, h) in &keys[..batch.len()] {
            self.add_hashed(key, len, h);
        }
    }

    fn into_counts(self) -> Vec<(String, u64)> {
        let mut out: Vec<(String, u64)> = self
            .slots
            .into_iter()
            .filter(|s| s.meta != 0)
            .map(|s| (String::from_utf8_lossy(&s.key().to_le_bytes()[..s.len() as usize]).into_owned(), s.count()))
            .collect();
        out.extend(self.long.into_iter().map(|(k, c)| (String::from_utf8_lossy(&k).into_owned(), c)));
        out
    }
}

/// Words of a block waiting to be counted as one batch.
struct Batch {
    words: [(usize, usize); BATCH],
    n: usize,
}

impl Batch {
    /// Queues `text[start..end]`; counts words too long to store inline at once.
    #[inline]
    fn push(&mut self, table: &mut Table, text: &[u8], start: usize, end: usize) {
        if end - start > INLINE {
            table.add_long(&text[start..end]);
            return;
        }
        self.words[self.n] = (start, end);
        self.n += 1;
        if self.n == BATCH {
            table.add_batch(&self.words, text);
            self.n = 0;
        }
    }

    fn flush(&mut self, table: &mut Table, text: &[u8]) {
        table.add_batch(&self.words[..self.n], text);
        self.n = 0;
    }
}

/// Counts the words of `text` (whole words only: `text` ends at a separator or at EOF).
fn count_block(table: &mut Table, text: &[u8]) {
    let mut batch = Batch { words: [(0, 0); BATCH], n: 0 };
    let mut i = 0;
    while i < text.len() {
        while i < text.len() && CLASS[text[i] as usize] == 0 {
            i += 1;
        }
        let start = i;
        let mut ascii = true;
        while i < text.len() && CLASS[text[i] as usize] != 0 {
            ascii &= CLASS[text[i] as usize] == 1;
            i += 1;
        }
        if ascii {
            if start < i {
                batch.push(table, text, start, i);
            }
            continue;
        }
        // Non-ASCII bytes: split at the characters that are not alphabetic. Valid UTF-8
        // (the common case) is split in place and batched like ASCII words; invalid bytes
        // are decoded lossily first, as the job does.
        match std::str::from_utf8(&text[start..i]) {
            Ok(run) => {
                for w in words(run) {
                    let at = start + (w.as_ptr() as usize - run.as_ptr() as usize);
                    batch.push(table, text, at, at + w.len());
                }
            }
            Err(_) => {
                for w in words(&String::from_utf8_lossy(&text[start..i])) {
                    if w.len() <= INLINE {
                        let key = pack(w.as_bytes());
                        table.add_hashed(key, w.len() as u8, hash(&key, w.len()));
                    } else {
                        table.add_long(w.as_bytes());
                    }
                }
            }
        }
    }
    batch.flush(table, text);
}

/// Counts the words of `files` on this thread, as fast as we know how. Unsorted.
pub fn count_tuned(files: &[PathBuf]) -> io::Result<Vec<(String, u64)>> {
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
            if n == 0 {
                count_block(&mut table, &buf[..filled]);
                break;
            }
            // Count up to the last separator; carry the tail (a word cut by the block).
            if let Some(cut) = buf[..filled].iter().rposition(|&b| CLASS[b as usize] == 0) {
                count_block(&mut table, &buf[..=cut]);
                buf.copy_within(cut + 1..filled, 0);
                filled -= cut + 1;
            }
        }
    }
    Ok(table.into_counts())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wordcount::{count_sequential, generate_corpus};

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
    }
}
