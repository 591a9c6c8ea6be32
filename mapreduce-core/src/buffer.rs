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

/// The hash of keys that are not short strings: foldhash, fast and well mixed for short
/// keys (FxHash clusters linear probes), with a fixed seed so runs are reproducible.
const HASHER: foldhash::fast::FixedState = foldhash::fast::FixedState::with_seed(0x5eed_cafe_f00d_d00d);

/// Records after which a buffer that saw no repeated key stops looking keys up.
const PROBE: u64 = 10_000;

/// String keys looked up together by [`MapBuffer::insert_str`].
const BATCH: usize = 32;

/// Slots of a new buffer.
const INITIAL_SLOTS: usize = 1 << 10;

/// String keys up to this long are held in their slot.
const INLINE: usize = 16;

/// A combiner, as the buffer calls it.
pub type Combine<'c, K, V> = &'c dyn Fn(&K, &mut V, V) -> Option<V>;

/// What the buffer needs of a string-like `K` to look up and keep queued string keys,
/// captured where `K: Borrow<str> + From<&str>` is known, so that the flush itself needs
/// no such bound and can be called with any combiner, statically dispatched.
#[derive(Debug)]
struct StrKeys<K, V> {
    /// `K::from(str)`.
    make: fn(&str) -> K,
    /// Whether a key's `str` is these bytes.
    equals: fn(&K, &[u8]) -> bool,
    /// `V::default()`, for the empty slots of the short-key table.
    fill: fn() -> V,
    /// A key's `str`, as bytes.
    bytes: fn(&K) -> &[u8],
}

// By hand: a derive would ask `K: Copy, V: Copy`, and these are only function pointers.
impl<K, V> Clone for StrKeys<K, V> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<K, V> Copy for StrKeys<K, V> {}

impl<K: Borrow<str> + for<'q> From<&'q str>, V: Default> StrKeys<K, V> {
    fn new() -> Self {
        StrKeys {
            make: |s| K::from(s),
            equals: |k, b| Borrow::<str>::borrow(k).as_bytes() == b,
            fill: V::default,
            bytes: |k| Borrow::<str>::borrow(k).as_bytes(),
        }
    }
}

/// `meta` of a slot in use.
const FULL: u64 = 1 << 63;
/// `meta` of a slot holding a short string key in `lo`, `hi`, with its length at bit 32.
const SHORT: u64 = 1 << 62;
/// The entry's position, in the low half of `meta`.
const ENTRY: u64 = 0xffff_ffff;

/// A slot of the table of other keys: empty if `meta` is 0, else the key's hash in `lo`
/// and `meta = FULL | tag << 32 | key`, `key` the key's position in `keys`. `value` is
/// the key's combined value, `None` when empty.
#[derive(Debug)]
struct Slot<V> {
    lo: u64,
    meta: u64,
    value: Option<V>,
}

/// A slot of the short-key table, 32 bytes for a `u64` value and aligned to 32, so that a
/// lookup touches one cache line: empty if `meta` is 0, else the key's bytes as two
/// little-endian integers, zero-padded, and `meta = FULL | SHORT | len << 32 | key`.
/// An empty slot's `value` is `V::default()`, never read.
#[derive(Debug)]
#[repr(align(32))]
struct ShortSlot<V> {
    lo: u64,
    hi: u64,
    meta: u64,
    value: V,
}

/// Where the probe for `hash` starts in the short-key table `slots`: the first slot of a
/// 64-byte cache line, so that the two first probes (for a `u64` value) are in the line
/// the batch loaded ahead. The table is only aligned to 32, so which slots start lines
/// depends on where it was allocated.
#[inline(always)]
fn short_start<V>(slots: &[ShortSlot<V>], hash: u64) -> usize {
    let phase = (slots.as_ptr() as usize / std::mem::size_of::<ShortSlot<V>>()) & 1;
    (hash as usize & (slots.len() - 1) & !1) | phase
}

fn empty_short_slots<V>(n: usize, fill: fn() -> V) -> Vec<ShortSlot<V>> {
    std::iter::repeat_with(|| ShortSlot { lo: 0, hi: 0, meta: 0, value: fill() }).take(n).collect()
}

/// Where a key goes, before it has a position and a value.
#[derive(Clone, Copy)]
struct Place {
    lo: u64,
    hi: u64,
    meta: u64,
}

fn empty_slots<V>(n: usize) -> Vec<Slot<V>> {
    std::iter::repeat_with(|| Slot { lo: 0, meta: 0, value: None }).take(n).collect()
}

/// The `meta` bits above the entry of a key that is not a short string: 28 bits of its
/// hash.
#[inline(always)]
fn tag(hash: u64) -> u64 {
    FULL | ((hash >> 36) << 32)
}

/// The `meta` bits above the entry of a short string key.
#[inline(always)]
fn short_meta(len: usize) -> u64 {
    FULL | SHORT | ((len as u64) << 32)
}

/// The hash of a short string key: a few multiplies over its packed bytes and length.
#[inline(always)]
fn short_hash(lo: u64, hi: u64, len: usize) -> u64 {
    let mut h = (lo ^ 0x9e37_79b9_7f4a_7c15).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= (hi ^ len as u64).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    h = h.wrapping_mul(0xd6e8_feb8_6659_fd93);
    h ^ (h >> 32)
}

/// `bytes` (at most [`INLINE`] long) as two little-endian integers, zero-padded, built in
/// registers from overlapping loads: no call to `memcpy`, and no narrow stores read back
/// wide (which defeats the CPU's store forwarding).
#[inline(always)]
fn pack(bytes: &[u8]) -> (u64, u64) {
    let n = bytes.len();
    let u64_at = |i: usize| u64::from_le_bytes(bytes[i..i + 8].try_into().expect("8 bytes"));
    let u32_at = |i: usize| u64::from(u32::from_le_bytes(bytes[i..i + 4].try_into().expect("4 bytes")));
    match n {
        // The bytes that both loads hold are the same, so OR-ing them is harmless.
        9..=16 => (u64_at(0), u64_at(n - 8) >> (8 * (16 - n))),
        8 => (u64_at(0), 0),
        4..=7 => (u32_at(0) | (u32_at(n - 4) << (8 * (n - 4))), 0),
        1..=3 => {
            let b = |i: usize| u64::from(bytes[i]) << (8 * i);
            (b(0) | b(n / 2) | b(n - 1), 0)
        }
        _ => (0, 0),
    }
}

/// [`pack`] for a key cut from `text`: one 16-byte load of the text at the key and a mask,
/// where the text goes on for 16 bytes from there (nearly always); else [`pack`].
#[inline(always)]
fn pack_in(text: &[u8], key: &[u8]) -> (u64, u64) {
    let n = key.len();
    // Where the key starts in `text`, if it is a part of it (else this is out of range).
    let at = (key.as_ptr() as usize).wrapping_sub(text.as_ptr() as usize);
    match at.checked_add(INLINE).and_then(|end| text.get(at..end)) {
        Some(word) => {
            let raw = u128::from_le_bytes(word.try_into().expect("16 bytes"));
            let lo_mask = u64::MAX.checked_shr(8 * (8 - n.min(8)) as u32).unwrap_or(0);
            let hi_mask = u64::MAX.checked_shr(8 * (16 - n.max(8)) as u32).unwrap_or(0);
            (raw as u64 & lo_mask, (raw >> 64) as u64 & hi_mask)
        }
        None => pack(key),
    }
}

/// The bytes of a packed short key.
fn unpack(lo: u64, hi: u64) -> [u8; INLINE] {
    (u128::from(lo) | (u128::from(hi) << 64)).to_le_bytes()
}

/// A string key waiting in the batch: its hash, its bytes (packed if short, else at
/// `start` in the arena), its value.
#[derive(Debug)]
struct Pending<V> {
    hash: u64,
    lo: u64,
    hi: u64,
    len: u32,
    start: u32,
    value: V,
}

/// A combining buffer of map output.
#[derive(Debug)]
pub struct MapBuffer<K, V> {
    /// One per distinct key, with its values folded together by the combiner; the length
    /// is a power of two.
    slots: Vec<Slot<V>>,
    /// The distinct keys, in insertion order.
    keys: Vec<K>,
    /// Values the combiner handed back (no combiner, or it declined).
    extra: Vec<(K, V)>,
    /// String keys queued by [`Self::insert_str`], at most [`BATCH`].
    pending: Vec<Pending<V>>,
    /// The bytes of the queued string keys longer than [`INLINE`], back to back.
    arena: String,
    /// The short string keys from [`Self::queue_str`], apart: their slots need no `Option`
    /// around the value. Empty until the first such key; the length is then a power of two.
    short: Vec<ShortSlot<V>>,
    /// Keys in `short`.
    short_len: usize,
    /// Set by the first [`Self::queue_str`], where `K` is known to borrow as `str` and `V`
    /// to have a default.
    str_keys: Option<StrKeys<K, V>>,
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
            str_keys: None,
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

    /// Queues a string key cut from `text` (see [`Self::insert_str_in`]) without looking
    /// it up: returns `true` once a batch is full, when the caller must call
    /// [`Self::flush`]. This lets a caller that knows the combiner's type flush with it
    /// statically dispatched, one dynamic call a batch instead of one a record.
    #[inline]
    pub fn queue_str(&mut self, text: &str, key: &str, value: V) -> bool
    where
        K: Borrow<str> + for<'q> From<&'q str>,
        V: Default,
    {
        if self.no_combiner {
            // Nothing is looked up any more, so nothing is folded: no combiner is called.
            self.records_in += 1;
            self.keep_aside(K::from(key), value);
            return false;
        }
        self.records_in += 1;
        let len = u32::try_from(key.len()).expect("a key shorter than 4 GiB");
        let p = if key.len() <= INLINE {
            let (lo, hi) = pack_in(text.as_bytes(), key.as_bytes());
            Pending { hash: short_hash(lo, hi, key.len()), lo, hi, len, start: 0, value }
        } else {
            let start = u32::try_from(self.arena.len()).expect("a batch of keys shorter than 4 GiB");
            self.arena.push_str(key);
            Pending { hash: HASHER.hash_one(key), lo: 0, hi: 0, len, start, value }
        };
        self.pending.push(p);
        // Both are set here, where `K` and `V` are known to allow it, and `short` is
        // emptied only by a drain: one test covers both.
        if self.short.is_empty() {
            self.str_keys = Some(StrKeys::new());
            self.short = empty_short_slots(INITIAL_SLOTS, V::default);
        }
        self.pending.len() >= BATCH
    }

    /// Looks up the string keys queued by [`Self::insert_str`] or [`Self::queue_str`],
    /// folding with `combine`: every slot loaded first, then the probes.
    pub fn flush(&mut self, combine: impl Fn(&K, &mut V, V) -> Option<V>) {
        let Some(keys) = self.str_keys.filter(|_| !self.pending.is_empty()) else { return };
        let mut pending = std::mem::take(&mut self.pending);
        let mut touch = 0u64;
        for p in pending.iter().filter(|p| p.len as usize <= INLINE) {
            touch ^= self.short[short_start(&self.short, p.hash)].meta;
        }
        std::hint::black_box(touch);
        let arena = std::mem::take(&mut self.arena);
        for p in pending.drain(..) {
            let len = p.len as usize;
            let short = len <= INLINE;
            if short && !self.no_combiner {
                let bytes = || unpack(p.lo, p.hi);
                match self.find_short(p.hash, p.lo, p.hi, len) {
                    // The common case, kept free of the key's bytes: fold into the slot.
                    Found::Entry(i) => {
                        self.hits += 1;
                        let slot = &mut self.short[i];
                        let key = &self.keys[(slot.meta & ENTRY) as usize];
                        if let Some(value) = combine(key, &mut slot.value, p.value) {
                            self.no_combiner = true;
                            self.keep_aside((keys.make)(queued_str(&bytes()[..len])), value);
                        }
                    }
                    Found::Vacant(i) => {
                        let key = (keys.make)(queued_str(&bytes()[..len]));
                        let place = Place { lo: p.lo, hi: p.hi, meta: short_meta(len) };
                        self.add_short(i, place, key, p.value, keys.fill);
                    }
                }
                continue;
            }
            let bytes = unpack(p.lo, p.hi);
            let key = Queued {
                bytes: match short {
                    true => &bytes[..len],
                    false => &arena.as_bytes()[p.start as usize..p.start as usize + len],
                },
                make: keys.make,
            };
            if self.no_combiner {
                self.keep_aside(key.into_key(), p.value);
            } else {
                let found = self.find(p.hash, |k: &K| (keys.equals)(k, key.bytes));
                let slot = Place { lo: p.hash, hi: 0, meta: tag(p.hash) };
                self.settle(found, slot, key, p.value, &combine);
            }
        }
        self.arena = arena;
        self.arena.clear();
        self.pending = pending;
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

    fn keep_aside(&mut self, key: K, value: V) {
        self.bytes += estimate(&mut self.scratch, &key, &value) + std::mem::size_of::<(K, V)>() as u64;
        self.extra.push((key, value));
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
                    self.no_combiner = true;
                    self.keep_aside(source.into_key(), value);
                }
            }
            Found::Vacant(i) => {
                let key = source.into_key();
                // The key, its slot and the third of an empty one the table keeps beside
                // it, and what the key and value hold beyond their inline size.
                let inline = std::mem::size_of::<K>() + 4 * std::mem::size_of::<Slot<V>>() / 3;
                self.bytes += estimate(&mut self.scratch, &key, &value) + inline as u64;
                let at = u32::try_from(self.keys.len()).expect("fewer than 2^32 distinct keys");
                let meta = place.meta | u64::from(at);
                self.slots[i] = Slot { lo: place.lo, meta, value: Some(value) };
                self.keys.push(key);
                if (self.keys.len() - self.short_len) * 4 > self.slots.len() * 3 {
                    self.grow();
                }
                if self.records_in >= PROBE && self.hits == 0 {
                    self.no_combiner = true;
                }
            }
        }
    }

    /// Puts a new short string key in the empty slot `i` of the short-key table.
    #[inline(always)]
    fn add_short(&mut self, i: usize, place: Place, key: K, value: V, fill: fn() -> V) {
        // As in `settle`, with this table's slots.
        let inline = std::mem::size_of::<K>() + 4 * std::mem::size_of::<ShortSlot<V>>() / 3;
        self.bytes += estimate(&mut self.scratch, &key, &value) + inline as u64;
        let at = u32::try_from(self.keys.len()).expect("fewer than 2^32 distinct keys");
        self.short[i] = ShortSlot { lo: place.lo, hi: place.hi, meta: place.meta | u64::from(at), value };
        self.keys.push(key);
        self.short_len += 1;
        if self.short_len * 4 > self.short.len() * 3 {
            self.grow_short(fill);
        }
        if self.records_in >= PROBE && self.hits == 0 {
            self.no_combiner = true;
        }
    }

    /// Doubles the short-key table and places every slot again from what it holds.
    fn grow_short(&mut self, fill: fn() -> V) {
        let n = self.short.len() * 2;
        let old = std::mem::replace(&mut self.short, empty_short_slots(n, fill));
        let mask = n - 1;
        for s in old.into_iter().filter(|s| s.meta != 0) {
            let mut i = short_start(&self.short, short_hash(s.lo, s.hi, ((s.meta >> 32) & 0xff) as usize));
            while self.short[i].meta != 0 {
                i = (i + 1) & mask;
            }
            self.short[i] = s;
        }
    }

    /// Finds a short string key by its packed bytes: no key is read.
    #[inline(always)]
    fn find_short(&self, hash: u64, lo: u64, hi: u64, len: usize) -> Found {
        let mask = self.short.len() - 1;
        let want = short_meta(len);
        let mut i = short_start(&self.short, hash);
        loop {
            let s = &self.short[i];
            if s.meta == 0 {
                return Found::Vacant(i);
            }
            if s.meta & !ENTRY == want && s.lo == lo && s.hi == hi {
                return Found::Entry(i);
            }
            i = (i + 1) & mask;
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
        self.records_in
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
    pub fn drain_sorted_iter(
        &mut self,
        combine: impl Fn(&K, &mut V, V) -> Option<V>,
        mut partition: impl FnMut(&K) -> u32,
    ) -> Drained<K, V> {
        self.flush(combine);
        // The tables start small again: a buffer that spilled need not keep its peak.
        let slots = std::mem::replace(&mut self.slots, empty_slots(INITIAL_SLOTS));
        let short = std::mem::take(&mut self.short);
        self.short_len = 0;
        self.bytes = 0;
        let mut keys = std::mem::take(&mut self.keys);
        // Each key's value, by the key's position.
        let mut values: Vec<Option<V>> = std::iter::repeat_with(|| None).take(keys.len()).collect();
        for s in slots.into_iter().filter(|s| s.meta != 0) {
            values[(s.meta & ENTRY) as usize] = s.value;
        }
        for s in short.into_iter().filter(|s| s.meta != 0) {
            values[(s.meta & ENTRY) as usize] = Some(s.value);
        }
        let Some(str_keys) = self.str_keys else {
            let held = keys.into_iter().zip(values).map(|(k, v)| (k, v.expect("every key has a slot")));
            let records = held.chain(self.extra.drain(..));
            // Sorting the records themselves beats sorting keys and gathering large
            // values afterwards: the gather's random reads cost more than the moves.
            let mut out: Vec<(u32, K, V)> = records.map(|(k, v)| (partition(&k), k, v)).collect();
            out.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
            return Drained(Box::new(out.into_iter()));
        };
        for (k, v) in self.extra.drain(..) {
            keys.push(k);
            values.push(Some(v));
        }
        // String keys sort by the partition and their first 16 bytes, as integers; keys
        // longer than that by the whole key where those are equal. `Borrow<str>` promises
        // that `K` orders as its `str` does, so this is `K`'s order.
        let mut order: Vec<SortKey> =
            keys.iter().enumerate().map(|(i, k)| SortKey::new(partition(k), (str_keys.bytes)(k), i)).collect();
        order.sort_unstable_by(|a, b| {
            a.bits.cmp(&b.bits).then_with(|| match a.is_long() {
                true => keys[a.at as usize].cmp(&keys[b.at as usize]),
                false => std::cmp::Ordering::Equal,
            })
        });
        let mut keys: Vec<Option<K>> = keys.into_iter().map(Some).collect();
        Drained(Box::new(order.into_iter().map(move |o| {
            let at = o.at as usize;
            let key = keys[at].take().expect("each key drained once");
            (o.partition(), key, values[at].take().expect("every key has a value"))
        })))
    }
}

/// The records of a drained buffer, sorted by `(partition, key)`: see
/// [`MapBuffer::drain_sorted_iter`].
pub struct Drained<K, V>(Box<dyn ExactSizeIterator<Item = (u32, K, V)>>);

impl<K, V> Iterator for Drained<K, V> {
    type Item = (u32, K, V);

    fn next(&mut self) -> Option<(u32, K, V)> {
        self.0.next()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

impl<K, V> ExactSizeIterator for Drained<K, V> {}

impl<K, V> std::fmt::Debug for Drained<K, V> {
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
        let head = u128::from_be_bytes(head);
        let len = bytes.len().min(INLINE + 1) as u64;
        let bits = [
            (u64::from(partition) << 32) | (head >> 96) as u64,
            (head >> 32) as u64,
            ((head as u64) << 32) | (len << 24),
        ];
        SortKey { bits, at: u32::try_from(at).expect("fewer than 2^32 records") }
    }

    fn partition(&self) -> u32 {
        (self.bits[0] >> 32) as u32
    }

    /// Longer than 16 bytes: equal bits say nothing of the rest.
    fn is_long(&self) -> bool {
        (self.bits[2] >> 24) & 0xff > INLINE as u64
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

/// The bytes of a queued string key: turned back into a `str` (checked as UTF-8 again)
/// and into a `K` only for a new key.
struct Queued<'a, K> {
    bytes: &'a [u8],
    make: fn(&str) -> K,
}

impl<'a, K> Queued<'a, K> {
    fn as_str(&self) -> &'a str {
        queued_str(self.bytes)
    }
}

/// The `str` a queued key's bytes were cut from (checked as UTF-8 again).
fn queued_str(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).expect("a queued key is the bytes of a str")
}

impl<K> KeySource<K, str> for Queued<'_, K> {
    fn key(&self) -> &str {
        self.as_str()
    }
    fn into_key(self) -> K {
        (self.make)(self.as_str())
    }
}

/// What a record holds beyond its inline size: its encoded size, a stand-in for the heap
/// bytes of its key and value.
fn estimate<K: Serialize, V: Serialize>(scratch: &mut Vec<u8>, key: &K, value: &V) -> u64 {
    scratch.clear();
    if postcard::to_io(&(key, value), &mut *scratch).is_ok() { scratch.len() as u64 } else { 0 }
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

    proptest::proptest! {
        /// Whatever the keys (NUL bytes, a shared 16-byte head, multibyte characters,
        /// lengths around 16) and however they are inserted, with the combiner folding or
        /// declining, the drain is sorted by (partition, key) and loses no value.
        #[test]
        fn drained_string_keys_are_sorted_by_partition_then_key(
            records in proptest::collection::vec(
                ("(abcdefghijklmnop)?[a\u{0}\u{e9}z]{0,20}", 0u64..1000, 0u8..3), 0..300),
            decline in proptest::bool::ANY,
        ) {
            let combine = |_: &String, acc: &mut u64, v: u64| if decline && v.is_multiple_of(5) { Some(v) } else { *acc += v; None };
            let mut b: MapBuffer<String, u64> = MapBuffer::new();
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

    #[test]
    fn string_keys_given_every_way_add_up() {
        // A short key given through `insert_str` and through `insert` may be held twice
        // (see the module docs): its total is still exact, and the drain still sorted.
        let mut b: MapBuffer<String, u64> = MapBuffer::new();
        let n = 3000u64;
        for round in 0..3u64 {
            for i in 0..n {
                let key =
                    if i % 3 == 0 { format!("a-long-key-of-more-than-sixteen-bytes-{i}") } else { format!("k{i}") };
                match (i + round) % 3 {
                    0 => b.insert_str(&key, i, sum),
                    1 => b.insert_borrowed(key.as_str(), i, sum),
                    _ => b.insert(key, i, sum),
                }
            }
        }
        let got = b.drain_sorted(sum, |k| u32::from(k.len() % 2 == 0));
        assert!(got.len() as u64 <= 2 * n);
        assert!(got.windows(2).all(|w| (w[0].0, &w[0].1) <= (w[1].0, &w[1].1)), "sorted by partition, key");
        let mut by_key = std::collections::BTreeMap::new();
        for (_, k, v) in &got {
            *by_key.entry(k.clone()).or_insert(0) += v;
        }
        assert_eq!(by_key.len() as u64, n);
        for i in 0..n {
            let key = if i % 3 == 0 { format!("a-long-key-of-more-than-sixteen-bytes-{i}") } else { format!("k{i}") };
            assert_eq!(by_key[&key], 3 * i, "{key}");
        }
        // Long string keys share their slots with the other paths: one entry each.
        assert_eq!(got.iter().filter(|r| r.1.len() > INLINE).count() as u64, n / 3);
    }

    #[test]
    fn packing_short_keys_agrees_with_the_bytes() {
        let text = "abcdefghijklmnopqrstuvwxyz0123456789é";
        for start in 0..text.len() {
            for end in start..=text.len().min(start + INLINE) {
                let Some(key) = text.get(start..end) else { continue };
                let want = unpack(pack(key.as_bytes()).0, pack(key.as_bytes()).1);
                assert_eq!(&want[..key.len()], key.as_bytes());
                assert!(want[key.len()..].iter().all(|&b| b == 0), "zero-padded");
                assert_eq!(pack_in(text.as_bytes(), key.as_bytes()), pack(key.as_bytes()), "{key:?}");
                assert_eq!(pack_in(b"unrelated text, long enough", key.as_bytes()), pack(key.as_bytes()));
            }
        }
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
