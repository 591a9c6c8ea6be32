//! The map side's in-memory buffer: combines equal keys as records arrive, tracks an
//! estimate of its memory, and drains sorted by `(partition, key)` when it is full or the
//! task ends (like Hadoop's sort buffer, with the combiner applied on insert).
//!
//! The table is built for a key set larger than the cache (a word count's vocabulary):
//!
//! - the keys, in a dense vector in insertion order, read only when a key is new, when a
//!   combiner reads it, or when the buffer drains;
//! - for string keys of up to 16 bytes given to [`MapBuffer::insert_str`] (the bulk of a
//!   word count), a table of 32-byte slots (for a `u64` value) aligned to 32, so a
//!   lookup touches one cache line: the key's bytes and length, its position, and the
//!   combined value. A lookup compares three machine words and folds the value without
//!   reading the key (the combiner gets a reference to it). Empty slots hold
//!   `V::default()`, which is why `insert_str` asks `V: Default`;
//! - for the other keys, slots with the key's hash, a tag of it, its position and the
//!   value in an `Option`; a probe compares keys only where the tags agree.
//!
//! Both use open addressing with linear probing, at most three quarters full. String keys
//! given to [`MapBuffer::insert_str`] are queued and looked up a batch at a time: the
//! batch's slots are loaded before any is probed, so the cache misses of a large table
//! overlap instead of queueing one after the other. Given the text the key was cut from
//! ([`MapBuffer::insert_str_in`]), a short key is read with one 16-byte load and a mask,
//! without a branch on its length. [`MapBuffer::flush`] is generic over the combiner, so
//! a caller that knows it (the worker) has it called directly.
//!
//! Short string keys from `insert_str` and keys from [`MapBuffer::insert`] or
//! [`MapBuffer::insert_borrowed`] live in different slots, so a job that emits the same
//! short key both ways gets two records for it: still correct (reduce groups equal keys
//! across and within map outputs), only less combined.

use std::borrow::Borrow;
use std::hash::{BuildHasher, Hash};

use serde::Serialize;

use crate::job::{Key, Value};

mod batch;
mod drain;
mod keys;
mod slots;

pub use drain::Drained;
use keys::{Borrowed, KeySource, Owned};
use slots::*;

/// The hash of keys that are not short strings: foldhash, fast and well mixed for short
/// keys (FxHash clusters linear probes), with a fixed seed so runs are reproducible.
const HASHER: foldhash::fast::FixedState = foldhash::fast::FixedState::with_seed(0x5eed_cafe_f00d_d00d);

/// Records after which a buffer that saw no repeated key stops looking keys up.
const PROBE: u64 = 10_000;

/// Most short-key slots [`MapBuffer::with_budget`] reserves (1 GiB of address space for
/// a `u64` value).
const MAX_RESERVE: usize = 1 << 25;

/// String keys looked up together by [`MapBuffer::insert_str`].
const BATCH: usize = 32;

/// Slots of a new buffer.
const INITIAL_SLOTS: usize = 1 << 10;

/// String keys up to this long are held in their slot.
const INLINE: usize = 16;

/// A combiner, as the buffer calls it.
pub type Combine<'c, K, V> = &'c dyn Fn(&K, &mut V, V) -> Option<V>;

/// A combining buffer of map output.
#[derive(Debug)]
pub struct MapBuffer<K, V> {
    /// One per distinct key, with its values folded together by the combiner; the length
    /// is a power of two.
    slots: Vec<Slot<V>>,
    /// The distinct keys, in insertion order.
    keys: Vec<K>,
    /// Values the combiner handed back (no combiner, or it declined).
    /// Each with room for its partition, set and sorted in place by the drain: a buffer
    /// that combines nothing (a sort) holds all its records here and drains without a
    /// second copy of them.
    extra: Vec<(u32, K, V)>,
    /// String keys queued by [`Self::insert_str`], at most [`BATCH`].
    pending: Vec<Pending<V>>,
    /// The bytes of the queued string keys longer than [`INLINE`], back to back.
    arena: String,
    /// The short string keys from [`Self::queue_str`], apart: their slots need no `Option`
    /// around the value. Empty until the first such key; the length is then a power of two.
    short: Vec<ShortSlot<V>>,
    /// Keys in `short`.
    short_len: usize,
    /// Slots to reserve for `short` when it is made ([`Self::with_budget`]; 0: none).
    short_reserve: usize,
    /// Set by the first [`Self::queue_str`], where `K` is known to borrow as `str` and `V`
    /// to have a default.
    str_keys: Option<StrKeys<K, V>>,
    /// Set once the combiner declines, or once [`PROBE`] records brought no repeated key
    /// (a sort, say, where combining cannot help): from then on every record goes to
    /// `extra` without a hash lookup, so such a job pays nothing for the table.
    no_combiner: bool,
    /// `!no_combiner` and `short` made: [`Self::queue_str`]'s common case may queue a
    /// short key (one test in the map loop, not two).
    queue_fast: bool,
    /// Records that found their key in the table.
    hits: u64,
    bytes: u64,
    /// Records inserted, but for the queued ones in `pending`.
    records_in: u64,
}

impl<K: Key, V: Value> Default for MapBuffer<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

/// Where a key is, or would go, in the table.
enum Found {
    /// At this slot.
    Entry(usize),
    /// Not held; this empty slot ends its probe sequence.
    Vacant(usize),
}

impl<K: Key, V: Value> MapBuffer<K, V> {
    /// An empty buffer.
    pub fn new() -> Self {
        MapBuffer {
            slots: empty_slots(INITIAL_SLOTS),
            keys: Vec::new(),
            extra: Vec::new(),
            pending: Vec::with_capacity(BATCH),
            arena: String::new(),
            short: Vec::new(),
            short_len: 0,
            short_reserve: 0,
            str_keys: None,
            no_combiner: false,
            queue_fast: false,
            hits: 0,
            bytes: 0,
            records_in: 0,
        }
    }

    /// An empty buffer that will spill at about `bytes`: its short-key table reserves the
    /// address space of the largest table that many bytes of keys can need, and grows in
    /// place, touching only each new half (a table grown into new memory faults in every
    /// page of every size it passes through).
    pub fn with_budget(bytes: u64) -> Self {
        let per_key = (std::mem::size_of::<K>() + 4 * std::mem::size_of::<ShortSlot<V>>() / 3).max(1) as u64;
        let slots = (bytes / per_key).saturating_mul(4) / 3 + 1;
        let short_reserve = usize::try_from(slots).unwrap_or(usize::MAX).min(MAX_RESERVE).next_power_of_two();
        MapBuffer { short_reserve, ..Self::new() }
    }

    /// Adds one record, folding it into the value already held for `key` with `combine`
    /// (see [`crate::Reducer::combine`] for its contract).
    #[inline]
    pub fn insert(&mut self, key: K, value: V, combine: impl FnOnce(&K, &mut V, V) -> Option<V>) {
        self.insert_with(Owned(key), value, combine);
    }

    /// Like [`Self::insert`], for a borrowed key: the key is turned into a `K` only when the
    /// buffer does not hold it yet, so a map loop emitting `&str` for `String` keys
    /// allocates once per distinct key, not once per record.
    #[inline]
    pub fn insert_borrowed<Q>(&mut self, key: &Q, value: V, combine: impl FnOnce(&K, &mut V, V) -> Option<V>)
    where
        K: Borrow<Q> + for<'q> From<&'q Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.insert_with(Borrowed(key), value, combine);
    }

    /// Like [`Self::insert_borrowed`] for a string key, and faster on large key sets (see
    /// the module docs): the key is queued and looked up with the next 31
    /// string keys. So `combine` may run for records inserted earlier: pass the same
    /// combiner on every call, and to [`Self::flush`] and [`Self::drain_sorted`].
    #[inline]
    pub fn insert_str(&mut self, key: &str, value: V, combine: impl Fn(&K, &mut V, V) -> Option<V>)
    where
        K: Borrow<str> + for<'q> From<&'q str>,
        V: Default,
    {
        self.insert_str_in("", key, value, combine);
    }

    /// [`Self::insert_str`] for a key cut from `text` (a map task's input, say): a short
    /// key is then read from the text with one load. Any `text` is correct; one that does
    /// not hold the key only makes the insert slower.
    #[inline]
    pub fn insert_str_in(&mut self, text: &str, key: &str, value: V, combine: impl Fn(&K, &mut V, V) -> Option<V>)
    where
        K: Borrow<str> + for<'q> From<&'q str>,
        V: Default,
    {
        if self.queue_str(text, key, value) {
            self.flush(combine);
        }
    }

    #[inline]
    fn insert_with<Q>(
        &mut self,
        source: impl KeySource<K, Q>,
        value: V,
        combine: impl FnOnce(&K, &mut V, V) -> Option<V>,
    ) where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.records_in += 1;
        if self.no_combiner {
            self.keep_aside(source.into_key(), value);
            return;
        }
        // `Borrow` promises equal hashes for `K` and `Q`, so one hash serves both the
        // lookup and the insert.
        let hash = HASHER.hash_one(source.key());
        let found = self.find(hash, |k: &K| k.borrow() == source.key());
        self.settle(found, Place { lo: hash, hi: 0, meta: tag(hash) }, source, value, combine);
    }

    /// Stops looking keys up (see `no_combiner`).
    fn stop_combining(&mut self) {
        self.no_combiner = true;
        self.queue_fast = false;
    }

    fn keep_aside(&mut self, key: K, value: V) {
        self.bytes += estimate(&key, &value) + std::mem::size_of::<(u32, K, V)>() as u64;
        self.extra.push((0, key, value));
    }

    /// Folds `value` into the slot `found` for `source`'s key, or fills the empty slot
    /// `found` with `place` (its key bits left 0).
    #[inline(always)]
    fn settle<Q: ?Sized>(
        &mut self,
        found: Found,
        place: Place,
        source: impl KeySource<K, Q>,
        value: V,
        combine: impl FnOnce(&K, &mut V, V) -> Option<V>,
    ) {
        match found {
            Found::Entry(i) => {
                self.hits += 1;
                let slot = &mut self.slots[i];
                let acc = slot.value.as_mut().expect("a full slot has a value");
                if let Some(value) = combine(&self.keys[(slot.meta & ENTRY) as usize], acc, value) {
                    self.stop_combining();
                    self.keep_aside(source.into_key(), value);
                }
            }
            Found::Vacant(i) => {
                let key = source.into_key();
                // The key, its slot and the third of an empty one the table keeps beside
                // it, and what the key and value hold beyond their inline size.
                let inline = std::mem::size_of::<K>() + 4 * std::mem::size_of::<Slot<V>>() / 3;
                self.bytes += estimate(&key, &value) + inline as u64;
                let at = u32::try_from(self.keys.len()).expect("fewer than 2^32 distinct keys");
                let meta = place.meta | u64::from(at);
                self.slots[i] = Slot { lo: place.lo, meta, value: Some(value) };
                self.keys.push(key);
                if (self.keys.len() - self.short_len) * 4 > self.slots.len() * 3 {
                    self.grow();
                }
                if self.records_in >= PROBE && self.hits == 0 {
                    self.stop_combining();
                }
            }
        }
    }

    /// Finds another key: by tag, then `eq` on the entry's key.
    #[inline(always)]
    fn find(&self, hash: u64, eq: impl Fn(&K) -> bool) -> Found {
        let mask = self.slots.len() - 1;
        let want = tag(hash);
        let mut i = hash as usize & mask;
        loop {
            let s = &self.slots[i];
            if s.meta == 0 {
                return Found::Vacant(i);
            }
            if s.meta & !ENTRY == want && s.lo == hash && eq(&self.keys[(s.meta & ENTRY) as usize]) {
                return Found::Entry(i);
            }
            i = (i + 1) & mask;
        }
    }

    /// Doubles the slots and places every slot again, from what the slots hold: no key
    /// is read or hashed again.
    fn grow(&mut self) {
        let n = self.slots.len() * 2;
        let old = std::mem::replace(&mut self.slots, empty_slots(n));
        let mask = n - 1;
        for s in old.into_iter().filter(|s| s.meta != 0) {
            let mut i = s.lo as usize & mask;
            while self.slots[i].meta != 0 {
                i = (i + 1) & mask;
            }
            self.slots[i] = s;
        }
    }

    /// Estimated memory held, in bytes.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Records inserted since the buffer was created (before combining).
    pub fn records_in(&self) -> u64 {
        // Queued string keys are counted when they are looked up.
        self.records_in + self.pending.len() as u64
    }

    /// Whether records are still looked up and folded: `false` once the combiner
    /// declined, or once the first 10,000 records brought no repeated key. Merging spills
    /// of such a buffer would combine nothing.
    pub fn combines(&self) -> bool {
        !self.no_combiner
    }

    /// Whether the buffer holds nothing.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.extra.is_empty() && self.pending.is_empty()
    }
}
/// What a record holds beyond its inline size: its encoded size, a stand-in for the heap
/// bytes of its key and value.
fn estimate<K: Serialize, V: Serialize>(key: &K, value: &V) -> u64 {
    // Counted, not written.
    postcard::serialize_with_flavor(&(key, value), postcard::ser_flavors::Size::default()).map_or(0, |n| n as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(_: &String, acc: &mut u64, v: u64) -> Option<u64> {
        *acc += v;
        None
    }

    fn keep(_: &String, _: &mut u64, v: u64) -> Option<u64> {
        Some(v)
    }

    #[test]
    fn combines_on_insert_and_drains_sorted_by_partition_then_key() {
        let mut b = MapBuffer::new();
        for w in ["b", "a", "c", "a", "b", "a"] {
            b.insert(w.to_string(), 1, sum);
        }
        assert_eq!(b.records_in(), 6);
        let before = b.bytes();
        b.insert("a".into(), 1, sum);
        assert_eq!(b.bytes(), before, "folding into a held key costs no memory");
        let got = b.drain_sorted(sum, |k| u32::from(k != "b"));
        let got: Vec<(u32, &str, u64)> = got.iter().map(|(p, k, v)| (*p, k.as_str(), *v)).collect();
        assert_eq!(got, vec![(0, "b", 2), (1, "a", 4), (1, "c", 1)]);
        assert!(b.is_empty());
        assert_eq!(b.bytes(), 0);
    }

    #[test]
    fn borrowed_keys_combine_with_owned_ones_and_are_kept_when_new() {
        let mut b = MapBuffer::new();
        b.insert("x".to_string(), 1, sum);
        b.insert_borrowed("x", 2, sum);
        b.insert_borrowed("y", 5, sum);
        b.insert("y".to_string(), 1, sum);
        let got: Vec<(String, u64)> = b.drain_sorted(sum, |_| 0).into_iter().map(|(_, k, v)| (k, v)).collect();
        assert_eq!(got, vec![("x".into(), 3), ("y".into(), 6)]);
        let mut b = MapBuffer::new();
        for (w, v) in [("x", 1), ("x", 2)] {
            b.insert_borrowed(w, v, keep);
        }
        assert_eq!(b.drain_sorted(keep, |_| 0).len(), 2, "without a combiner both stay");
    }

    #[test]
    fn without_a_combiner_every_value_is_kept() {
        let mut b = MapBuffer::new();
        for (w, v) in [("x", 1), ("y", 2), ("x", 3), ("x", 4)] {
            b.insert(w.to_string(), v, keep);
        }
        let mut got: Vec<(String, u64)> = b.drain_sorted(keep, |_| 0).into_iter().map(|(_, k, v)| (k, v)).collect();
        got.sort();
        assert_eq!(got, vec![("x".into(), 1), ("x".into(), 3), ("x".into(), 4), ("y".into(), 2)]);
    }

    #[test]
    fn a_stream_of_distinct_keys_stops_using_the_table_and_loses_nothing() {
        let mut b = MapBuffer::new();
        for i in 0..PROBE + 100 {
            b.insert(format!("k{i:06}"), 1, sum);
        }
        assert!(b.no_combiner, "no repeated key in {PROBE} records");
        b.insert("k000000".to_string(), 5, sum); // a repeat after the switch is kept aside
        let got = b.drain_sorted(sum, |_| 0);
        assert_eq!(got.len() as u64, PROBE + 101);
        assert!(got.windows(2).all(|w| w[0].1 <= w[1].1), "sorted");
        assert_eq!(got.iter().map(|r| r.2).sum::<u64>(), PROBE + 100 + 5);
        // With repeats early, the table stays on.
        let mut b = MapBuffer::new();
        for i in 0..PROBE + 100 {
            b.insert(format!("k{}", i % 50), 1, sum);
        }
        assert!(!b.no_combiner);
        assert_eq!(b.drain_sorted(sum, |_| 0).len(), 50);
    }

    #[test]
    fn batched_string_keys_combine_and_lose_nothing() {
        // More keys than a batch and than the first slots hold, short and long, some
        // cut from a text the buffer is told of and some not.
        let text: String = (0..3000).map(|i| format!("w{i} ")).collect();
        let mut b: MapBuffer<String, u64> = MapBuffer::new();
        let n = 5000u64;
        for round in 0..3u64 {
            for i in 0..n {
                let key = match (i * 7919) % n {
                    j if j % 10 == 0 => format!("a-long-key-of-more-than-sixteen-bytes-{j}"),
                    j => format!("w{j}"),
                };
                match text.find(&format!("{key} ")) {
                    Some(at) if round == 1 => b.insert_str_in(&text, &text[at..at + key.len()], 1, sum),
                    _ => b.insert_str(&key, 1, sum),
                }
            }
        }
        assert_eq!(b.records_in(), 3 * n);
        assert!(!b.is_empty());
        let got = b.drain_sorted(sum, |_| 0);
        assert_eq!(got.len() as u64, n, "one entry per key");
        assert!(got.iter().all(|(_, _, c)| *c == 3), "every key three times");
        assert!(b.is_empty());
        // Queued keys alone are flushed by the drain too.
        b.insert_str("x", 2, sum);
        b.insert_str("x", 3, sum);
        assert!(!b.is_empty());
        let got: Vec<(String, u64)> = b.drain_sorted(sum, |_| 0).into_iter().map(|(_, k, v)| (k, v)).collect();
        assert_eq!(got, vec![("x".into(), 5)]);
    }

    #[test]
    fn batched_string_keys_without_a_combiner_keep_every_value() {
        let mut b: MapBuffer<String, u64> = MapBuffer::new();
        for v in 0..100 {
            b.insert_str("k", v, keep);
        }
        let got = b.drain_sorted(keep, |_| 0);
        assert_eq!(got.len(), 100);
        assert_eq!(got.iter().map(|r| r.2).sum::<u64>(), (0..100).sum::<u64>());
        assert!(got.iter().all(|r| r.1 == "k"), "every record keeps its key");
    }

    #[test]
    fn memory_estimate_grows_with_distinct_keys() {
        let mut b = MapBuffer::new();
        for i in 0..1000u64 {
            b.insert(format!("key-{i}"), i, sum);
        }
        assert!(b.bytes() >= 1000 * (std::mem::size_of::<(String, u64)>() as u64 + 6), "{}", b.bytes());
    }
}
