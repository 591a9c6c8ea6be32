//! Draining the buffer sorted by `(partition, key)`: string keys sort as integers of their
//! first 16 bytes, other keys as records.
//!
//! A short string key's slot holds all of its record (the key's bytes and length, and the
//! value), so those records are sorted as they are and the key is made again from its
//! bytes as it is written out: no read of the key vector in sorted order, which for a
//! table larger than the cache was a cache miss a record. The other records (long keys,
//! keys of the other table, records kept aside) are sorted by position and gathered, and
//! the two sorted runs merged.

use super::slots::{ENTRY, StrKeys, empty_slots, unpack};
use super::{INITIAL_SLOTS, INLINE, Key, MapBuffer, Value};

impl<K: Key, V: Value> MapBuffer<K, V> {
    /// Empties the buffer into a vector sorted by `(partition, key)`, with the partition
    /// of each record computed once per distinct key. String keys still queued are looked
    /// up first, folding with `combine`.
    pub fn drain_sorted(
        &mut self,
        combine: impl Fn(&K, &mut V, V) -> Option<V>,
        partition: impl FnMut(&K) -> u32,
    ) -> Vec<(u32, K, V)> {
        self.drain_sorted_iter(combine, partition).collect()
    }

    /// [`Self::drain_sorted`] as an iterator: the records are sorted (and `partition`
    /// called for each) before it returns, and each is moved out as the iterator reaches
    /// it, so a caller that writes them out never holds a second copy of the buffer.
    /// Records the buffer did not combine are sorted where they are, and the buffer keeps
    /// their room for its next fill.
    pub fn drain_sorted_iter(
        &mut self,
        combine: impl Fn(&K, &mut V, V) -> Option<V>,
        mut partition: impl FnMut(&K) -> u32,
    ) -> Drained<'_, K, V> {
        self.flush(combine);
        // The tables start small again: a buffer that spilled need not keep its peak.
        let slots = std::mem::replace(&mut self.slots, empty_slots(INITIAL_SLOTS));
        let short = std::mem::take(&mut self.short);
        self.queue_fast = false;
        let short_len = std::mem::take(&mut self.short_len);
        self.bytes = 0;
        let keys = std::mem::take(&mut self.keys);
        let held = (slots.into_iter().filter(|s| s.meta != 0))
            .map(|s| ((s.meta & ENTRY) as usize, s.value.expect("a full slot has a value")));
        let Some(str_keys) = self.str_keys else {
            // Every key is in the table: each key's value, by the key's position.
            let mut values: Vec<Option<V>> = std::iter::repeat_with(|| None).take(keys.len()).collect();
            for (at, v) in held {
                values[at] = Some(v);
            }
            let values = values.into_iter().map(|v| v.expect("every key has a slot"));
            self.extra.extend(keys.into_iter().zip(values).map(|(k, v)| (0, k, v)));
            // In place: a fresh vector for the records, each drain, costs a copy of them
            // and the page faults of memory the size of the buffer.
            for r in self.extra.iter_mut() {
                r.0 = partition(&r.1);
            }
            // Sorting the records themselves beats sorting keys and gathering large
            // values afterwards: the gather's random reads cost more than the moves.
            self.extra.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
            return Drained(Box::new(self.extra.drain(..)));
        };
        // The other table's values with their keys' positions, in the keys' order.
        let mut held: Vec<(usize, V)> = held.collect();
        held.sort_unstable_by_key(|h| h.0);
        // Each key's partition, by position: computed over the keys in their order, since
        // a partitioner called on keys read in the table's order waits for each read.
        let parts: Vec<u32> = keys.iter().map(&mut partition).collect();
        // The short keys are made again from their records: only the other table's keys
        // stay, and the key vector goes before the short keys' records are made.
        let mut records: Vec<Option<(K, V)>> = Vec::with_capacity(held.len() + self.extra.len());
        let mut held_parts = Vec::with_capacity(held.len());
        let mut keys = keys.into_iter();
        let mut at = 0;
        for (i, v) in held {
            let k = keys.nth(i - at).expect("every held key is in the key vector");
            at = i + 1;
            held_parts.push(parts[i]);
            records.push(Some((k, v)));
        }
        drop(keys);
        // The short keys' records, from their slots.
        let mut shorts: Vec<ShortRecord<V>> = Vec::with_capacity(short_len);
        for s in short.into_iter().filter(|s| s.meta != 0) {
            let len = (s.meta >> 32) & 0xff;
            let head = (u128::from(s.lo) | (u128::from(s.hi) << 64)).swap_bytes();
            let p = parts[(s.meta & ENTRY) as usize];
            shorts.push(ShortRecord { bits: SortKey::bits(p, head, len), value: s.value });
        }
        records.extend(self.extra.drain(..).map(|(_, k, v)| Some((k, v))));
        // String keys sort by the partition and their first 16 bytes, as integers; keys
        // longer than that by the whole key where those are equal. `Borrow<str>` promises
        // that `K` orders as its `str` does, so this is `K`'s order.
        let mut part_of = |i: usize, k: &K| held_parts.get(i).copied().unwrap_or_else(|| partition(k));
        let mut order: Vec<SortKey> = (records.iter().enumerate())
            .map(|(i, r)| {
                let k = &r.as_ref().expect("not gathered yet").0;
                SortKey::new(part_of(i, k), (str_keys.bytes)(k), i)
            })
            .collect();
        let key = |o: &SortKey| &records[o.at as usize].as_ref().expect("not gathered yet").0;
        order.sort_unstable_by(|a, b| {
            a.bits.cmp(&b.bits).then_with(|| match a.is_long() {
                true => key(a).cmp(key(b)),
                false => std::cmp::Ordering::Equal,
            })
        });
        shorts.sort_unstable_by_key(|a| a.bits);
        let others = Gather { order, records, next: 0, batch: Vec::with_capacity(GATHER) };
        let (text, bytes) = (String::new(), Vec::new());
        let shorts = shorts.into_iter();
        Drained(Box::new(Sorted { shorts, text, at: 0, bytes, others, keys: str_keys }))
    }
}

/// A short string key's record, as its slot held it: the sort bits of [`SortKey`] (which
/// hold the whole key), and the value.
struct ShortRecord<V> {
    bits: [u64; 3],
    value: V,
}

/// The drained records of a buffer of string keys: the short keys' records and the
/// others, each sorted, merged.
struct Sorted<K, V> {
    shorts: std::vec::IntoIter<ShortRecord<V>>,
    /// The text of the next short keys, from `at`: [`GATHER`] keys' bytes checked as
    /// UTF-8 at once, not a key at a time (each key is the bytes of a `str`, so the
    /// text is too, and a key's end is a character's).
    text: String,
    at: usize,
    bytes: Vec<u8>,
    others: Gather<K, V>,
    keys: StrKeys<K, V>,
}

impl<K, V> Sorted<K, V> {
    /// Puts the next [`GATHER`] short keys' bytes in `text`.
    fn refill(&mut self) {
        self.bytes.clear();
        for r in self.shorts.as_slice().iter().take(GATHER) {
            self.bytes.extend_from_slice(&short_bytes(&r.bits)[..short_len(&r.bits)]);
        }
        self.text.clear();
        self.text.push_str(simdutf8::basic::from_utf8(&self.bytes).expect("short keys are the bytes of strs"));
        self.at = 0;
    }
}

/// The packed bytes of the short key whose sort bits are `bits`, from the big-endian
/// head they hold.
fn short_bytes(bits: &[u64; 3]) -> [u8; INLINE] {
    let packed =
        ((u128::from(bits[0] as u32) << 96) | (u128::from(bits[1]) << 32) | u128::from(bits[2] >> 32)).swap_bytes();
    unpack(packed as u64, (packed >> 64) as u64)
}

/// The length of the short key whose sort bits are `bits`.
fn short_len(bits: &[u64; 3]) -> usize {
    ((bits[2] >> 24) & 0xff) as usize
}

impl<K, V> Iterator for Sorted<K, V> {
    type Item = (u32, K, V);

    fn next(&mut self) -> Option<(u32, K, V)> {
        // Equal bits are equal short keys (one from each table): either may go first.
        let short = match (self.shorts.as_slice().first(), self.others.peek_bits()) {
            (Some(s), Some(o)) => s.bits <= *o,
            (s, _) => s.is_some(),
        };
        if !short {
            return self.others.next();
        }
        if self.at == self.text.len() {
            self.refill();
        }
        let ShortRecord { bits, value } = self.shorts.next()?;
        let key = &self.text[self.at..self.at + short_len(&bits)];
        self.at += key.len();
        Some(((bits[0] >> 32) as u32, (self.keys.make)(key), value))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.shorts.len() + self.others.len();
        (n, Some(n))
    }
}

impl<K, V> ExactSizeIterator for Sorted<K, V> {}

/// Records [`Gather`] moves out of the buffer at a time.
const GATHER: usize = 64;

/// Moves the records out of the buffer in their sorted order, [`GATHER`] records at a
/// time: in a loop that does nothing else the reads, each to a place in a vector larger
/// than the cache, are independent and their misses overlap, where one record at a time
/// between the writes of the records before it they would queue.
struct Gather<K, V> {
    order: Vec<SortKey>,
    records: Vec<Option<(K, V)>>,
    /// The next entry of `order` to gather.
    next: usize,
    /// Gathered records, the next one last.
    batch: Vec<(u32, K, V)>,
}

impl<K, V> Gather<K, V> {
    /// The sort bits of the next record.
    fn peek_bits(&self) -> Option<&[u64; 3]> {
        self.order.get(self.next - self.batch.len()).map(|o| &o.bits)
    }
}

impl<K, V> Iterator for Gather<K, V> {
    type Item = (u32, K, V);

    fn next(&mut self) -> Option<(u32, K, V)> {
        if self.batch.is_empty() {
            let end = self.order.len().min(self.next + GATHER);
            for o in self.order[self.next..end].iter().rev() {
                let (key, value) = self.records[o.at as usize].take().expect("each record drained once");
                self.batch.push((o.partition(), key, value));
            }
            self.next = end;
        }
        self.batch.pop()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.order.len() - self.next + self.batch.len();
        (n, Some(n))
    }
}

impl<K, V> ExactSizeIterator for Gather<K, V> {}

/// The records of a drained buffer, sorted by `(partition, key)`: see
/// [`MapBuffer::drain_sorted_iter`].
pub struct Drained<'b, K, V>(Box<dyn ExactSizeIterator<Item = (u32, K, V)> + 'b>);

impl<K, V> Iterator for Drained<'_, K, V> {
    type Item = (u32, K, V);

    fn next(&mut self) -> Option<(u32, K, V)> {
        self.0.next()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

impl<K, V> ExactSizeIterator for Drained<'_, K, V> {}

impl<K, V> std::fmt::Debug for Drained<'_, K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Drained({} records)", self.0.len())
    }
}

/// Where a string key goes in the drained order: its partition and first 16 bytes
/// big-endian (so integers order as the bytes do), then its length capped at 17 (a key
/// orders before the same key with bytes appended), as three integers; and its position.
#[derive(Debug, Clone, Copy)]
struct SortKey {
    bits: [u64; 3],
    at: u32,
}

impl SortKey {
    fn new(partition: u32, bytes: &[u8], at: usize) -> SortKey {
        let n = bytes.len().min(INLINE);
        let mut head = [0u8; INLINE];
        head[..n].copy_from_slice(&bytes[..n]);
        let len = bytes.len().min(INLINE + 1) as u64;
        let bits = Self::bits(partition, u128::from_be_bytes(head), len);
        SortKey { bits, at: u32::try_from(at).expect("fewer than 2^32 records") }
    }

    /// The bits of a key in `partition` whose first 16 bytes, zero-padded, are `head`
    /// big-endian, and whose length capped at 17 is `len`.
    #[inline(always)]
    fn bits(partition: u32, head: u128, len: u64) -> [u64; 3] {
        [(u64::from(partition) << 32) | (head >> 96) as u64, (head >> 32) as u64, ((head as u64) << 32) | (len << 24)]
    }

    fn partition(&self) -> u32 {
        (self.bits[0] >> 32) as u32
    }

    /// Longer than 16 bytes: equal bits say nothing of the rest.
    fn is_long(&self) -> bool {
        (self.bits[2] >> 24) & 0xff > INLINE as u64
    }
}

#[cfg(test)]
mod tests {
    use super::super::MapBuffer;

    proptest::proptest! {
        /// Whatever the keys (NUL bytes, a shared 16-byte head, multibyte characters,
        /// lengths around 16) and however they are inserted, with the combiner folding or
        /// declining, the drain is sorted by (partition, key) and loses no value.
        #[test]
        fn drained_string_keys_are_sorted_by_partition_then_key(
            records in proptest::collection::vec(
                ("(abcdefghijklmnop)?[a\u{0}\u{e9}z]{0,20}", 0u64..1000, 0u8..3), 0..300),
            decline in proptest::bool::ANY,
            budget in proptest::option::of(0u64..1 << 16),
        ) {
            let combine = |_: &String, acc: &mut u64, v: u64| if decline && v.is_multiple_of(5) { Some(v) } else { *acc += v; None };
            let mut b: MapBuffer<String, u64> = budget.map_or_else(MapBuffer::new, MapBuffer::with_budget);
            let mut want = std::collections::BTreeMap::new();
            for (key, v, how) in &records {
                *want.entry(key.clone()).or_insert(0) += v;
                match how {
                    0 => b.insert_str(key, *v, combine),
                    1 => b.insert_borrowed(key.as_str(), *v, combine),
                    _ => b.insert(key.clone(), *v, combine),
                }
            }
            let got = b.drain_sorted(combine, |k| k.len() as u32 % 3);
            proptest::prop_assert!(got.windows(2).all(|w| (w[0].0, &w[0].1) <= (w[1].0, &w[1].1)), "{:?}", got);
            proptest::prop_assert!(got.iter().all(|(p, k, _)| *p == k.len() as u32 % 3));
            let mut sums = std::collections::BTreeMap::new();
            for (_, k, v) in got {
                *sums.entry(k).or_insert(0) += v;
            }
            proptest::prop_assert_eq!(sums, want);
        }
    }

    /// A drain of many distinct keys (several tables' growth, in place or not, a sort
    /// larger than the cache): shared heads, keys that are prefixes of others, long keys
    /// equal in their first 16 bytes, bytes above 0x7f, NUL bytes, and an empty key.
    #[test]
    fn a_large_drain_of_string_keys_is_sorted_and_loses_nothing() {
        let combine = |_: &String, acc: &mut u64, v: u64| {
            *acc += v;
            None
        };
        // No room reserved (every growth into a new table), room for the whole table (every
        // growth in place), and room for part of it (in place, then into a new table).
        for budget in [None, Some(64 << 20), Some(1 << 20)] {
            let mut b: MapBuffer<String, u64> = budget.map_or_else(MapBuffer::new, MapBuffer::with_budget);
            let mut x = 0x9e37_79b9_7f4a_7c15u64;
            let mut want = std::collections::BTreeMap::new();
            for i in 0..300_000u64 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let len = (x % 24) as usize;
                let alphabet = ["a", "b", "é", "z", "ab", "\u{0}"];
                let mut key: String = (0..len).map(|j| alphabet[((x >> (j * 2 + 8)) % 6) as usize]).collect();
                if i % 7 == 0 {
                    key = format!("abcdefghijklmnop{key}");
                }
                *want.entry(key.clone()).or_insert(0) += i;
                b.insert_str(&key, i, combine);
            }
            assert!(want.len() > 100_000, "{} distinct keys", want.len());
            let got = b.drain_sorted(combine, |k| (k.len() % 2) as u32);
            assert!(got.windows(2).all(|w| (w[0].0, &w[0].1) < (w[1].0, &w[1].1)), "{budget:?}: sorted");
            assert!(got.iter().all(|(p, k, _)| *p == (k.len() % 2) as u32));
            let sums: std::collections::BTreeMap<String, u64> = got.into_iter().map(|(_, k, v)| (k, v)).collect();
            assert_eq!(sums, want, "{budget:?}");
        }
    }

    #[test]
    fn large_values_stay_with_their_keys_through_the_drain() {
        type Big = [u64; 8];
        let keep = |_: &u64, _: &mut Big, v: Big| Some(v);
        let mut b: MapBuffer<u64, Big> = MapBuffer::new();
        let keys: Vec<u64> = (0..20_000u64).map(|i| (i * 7919) % 5003).collect();
        for (i, &k) in keys.iter().enumerate() {
            b.insert(k, [k, i as u64, 0, 0, 0, 0, 0, k ^ 0xff], keep);
        }
        let got = b.drain_sorted(keep, |k| (*k % 3) as u32);
        assert_eq!(got.len(), keys.len());
        assert!(got.windows(2).all(|w| (w[0].0, w[0].1) <= (w[1].0, w[1].1)), "sorted by partition, key");
        assert!(got.iter().all(|(p, k, v)| *p == (*k % 3) as u32 && v[0] == *k && v[7] == *k ^ 0xff));
        let mut seen: Vec<u64> = got.iter().map(|r| r.2[1]).collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..keys.len() as u64).collect::<Vec<_>>(), "every value once");
    }
}
