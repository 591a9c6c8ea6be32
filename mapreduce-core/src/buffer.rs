//! The map side's in-memory buffer: combines equal keys as records arrive, tracks an
//! estimate of its memory, and drains sorted by `(partition, key)` when it is full or the
//! task ends (like Hadoop's sort buffer, with the combiner applied on insert).

use std::borrow::Borrow;
use std::hash::{BuildHasher, Hash};

use hashbrown::HashTable;
use rustc_hash::FxBuildHasher;
use serde::Serialize;

use crate::job::{Key, Value};

/// Records after which a buffer that saw no repeated key stops looking keys up.
const PROBE: u64 = 10_000;

/// Fixed bytes counted per buffered record besides its encoded size: the record's inline
/// size plus the hash table's control bytes and slack.
const ENTRY_OVERHEAD: u64 = 24;

/// A combining buffer of map output.
#[derive(Debug)]
pub struct MapBuffer<K, V> {
    /// One entry per distinct key: the values folded together by the combiner.
    table: HashTable<(K, V)>,
    /// Values the combiner handed back (no combiner, or it declined).
    extra: Vec<(K, V)>,
    /// Set once the combiner declines, or once [`PROBE`] records brought no repeated key
    /// (a sort, say, where combining cannot help): from then on every record goes to
    /// `extra` without a hash lookup, so such a job pays nothing for the table.
    no_combiner: bool,
    /// Records that found their key in the table.
    hits: u64,
    bytes: u64,
    records_in: u64,
    scratch: Vec<u8>,
}

impl<K: Key, V: Value> Default for MapBuffer<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Key, V: Value> MapBuffer<K, V> {
    /// An empty buffer.
    pub fn new() -> Self {
        MapBuffer {
            table: HashTable::new(),
            extra: Vec::new(),
            no_combiner: false,
            hits: 0,
            bytes: 0,
            records_in: 0,
            scratch: Vec::with_capacity(64),
        }
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
            let key = source.into_key();
            self.bytes += estimate(&mut self.scratch, &key, &value);
            self.extra.push((key, value));
            return;
        }
        // `Borrow` promises equal hashes for `K` and `Q`, so one hash serves both the
        // lookup and the insert.
        let hash = FxBuildHasher.hash_one(source.key());
        if let Some((k, acc)) = self.table.find_mut(hash, |(k, _)| k.borrow() == source.key()) {
            self.hits += 1;
            if let Some(value) = combine(k, acc, value) {
                self.no_combiner = true;
                let key = source.into_key();
                self.bytes += estimate(&mut self.scratch, &key, &value);
                self.extra.push((key, value));
            }
        } else {
            let key = source.into_key();
            self.bytes += estimate(&mut self.scratch, &key, &value);
            self.table.insert_unique(hash, (key, value), |(k, _)| FxBuildHasher.hash_one(k));
            if self.records_in == PROBE && self.hits == 0 {
                self.no_combiner = true;
            }
        }
    }

    /// Estimated memory held, in bytes.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Records inserted since the buffer was created (before combining).
    pub fn records_in(&self) -> u64 {
        self.records_in
    }

    /// Whether the buffer holds nothing.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty() && self.extra.is_empty()
    }

    /// Empties the buffer into a vector sorted by `(partition, key)`, with the partition
    /// of each record computed once per distinct key.
    pub fn drain_sorted(&mut self, mut partition: impl FnMut(&K) -> u32) -> Vec<(u32, K, V)> {
        let mut out = Vec::with_capacity(self.table.len() + self.extra.len());
        out.extend(self.table.drain().map(|(k, v)| (partition(&k), k, v)));
        self.table.shrink_to_fit(|(k, _)| FxBuildHasher.hash_one(k));
        out.extend(self.extra.drain(..).map(|(k, v)| (partition(&k), k, v)));
        out.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
        self.bytes = 0;
        out
    }
}

/// A key given owned or borrowed: looked up as `Q`, turned into a `K` only when kept.
trait KeySource<K, Q: ?Sized> {
    fn key(&self) -> &Q;
    fn into_key(self) -> K;
}

struct Owned<K>(K);

impl<K> KeySource<K, K> for Owned<K> {
    fn key(&self) -> &K {
        &self.0
    }
    fn into_key(self) -> K {
        self.0
    }
}

struct Borrowed<'a, Q: ?Sized>(&'a Q);

impl<K: for<'q> From<&'q Q>, Q: ?Sized> KeySource<K, Q> for Borrowed<'_, Q> {
    fn key(&self) -> &Q {
        self.0
    }
    fn into_key(self) -> K {
        K::from(self.0)
    }
}

fn estimate<K: Serialize, V: Serialize>(scratch: &mut Vec<u8>, key: &K, value: &V) -> u64 {
    scratch.clear();
    let encoded = if postcard::to_io(&(key, value), &mut *scratch).is_ok() { scratch.len() } else { 0 };
    (std::mem::size_of::<(K, V)>() + encoded) as u64 + ENTRY_OVERHEAD
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
        let got = b.drain_sorted(|k| u32::from(k != "b"));
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
        let got: Vec<(String, u64)> = b.drain_sorted(|_| 0).into_iter().map(|(_, k, v)| (k, v)).collect();
        assert_eq!(got, vec![("x".into(), 3), ("y".into(), 6)]);
        let mut b = MapBuffer::new();
        for (w, v) in [("x", 1), ("x", 2)] {
            b.insert_borrowed(w, v, keep);
        }
        assert_eq!(b.drain_sorted(|_| 0).len(), 2, "without a combiner both stay");
    }

    #[test]
    fn without_a_combiner_every_value_is_kept() {
        let mut b = MapBuffer::new();
        for (w, v) in [("x", 1), ("y", 2), ("x", 3), ("x", 4)] {
            b.insert(w.to_string(), v, keep);
        }
        let mut got: Vec<(String, u64)> = b.drain_sorted(|_| 0).into_iter().map(|(_, k, v)| (k, v)).collect();
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
        let got = b.drain_sorted(|_| 0);
        assert_eq!(got.len() as u64, PROBE + 101);
        assert!(got.windows(2).all(|w| w[0].1 <= w[1].1), "sorted");
        assert_eq!(got.iter().map(|r| r.2).sum::<u64>(), PROBE + 100 + 5);
        // With repeats early, the table stays on.
        let mut b = MapBuffer::new();
        for i in 0..PROBE + 100 {
            b.insert(format!("k{}", i % 50), 1, sum);
        }
        assert!(!b.no_combiner);
        assert_eq!(b.drain_sorted(|_| 0).len(), 50);
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
