//! String keys given to [`MapBuffer::queue_str`]: queued, then looked up a batch at a
//! time (see the module docs of [`super`]). The loop over a batch handles the common case,
//! a short key the table holds, itself; every other case is out of line, so that the
//! loop's state stays in registers and the caller's loop can inline the queueing.

use std::borrow::Borrow;
use std::hash::BuildHasher;

use super::keys::{KeySource, Queued, queued_str};
use super::slots::*;
use super::{BATCH, Found, HASHER, INITIAL_SLOTS, INLINE, Key, MapBuffer, PROBE, Value, estimate};

impl<K: Key, V: Value> MapBuffer<K, V> {
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
        // The common case, small enough to be inlined into the caller's loop (a word
        // splitter's, say): a short key, read with one load, looked up, into a table
        // already made.
        if key.len() <= INLINE
            && self.queue_fast
            && let Some((lo, hi)) = pack_loaded(text.as_bytes(), key.as_bytes())
        {
            // Counted by `flush`, a batch at a time.
            let hash = short_hash(lo, hi, key.len());
            let p = Pending { hash, lo, hi, len: key.len() as u32, start: 0, value };
            // The queue has room for a batch, so this never grows it; said here, so the
            // loop holds no call to grow it (and keeps the key in registers around it).
            if self.pending.len() < self.pending.capacity() {
                self.pending.push(p);
                return self.pending.len() >= BATCH;
            }
            return self.queue_str_other(text, key, p.value);
        }
        self.queue_str_other(text, key, value)
    }

    /// [`Self::queue_str`] for the other cases: a long key, a short one at the end of
    /// the text, no more lookups, or the first key since the buffer was made or drained.
    #[inline(never)]
    fn queue_str_other(&mut self, text: &str, key: &str, value: V) -> bool
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
            let keys = StrKeys::new();
            self.str_keys = Some(keys);
            // Room for the largest table the budget allows, if the address space has it:
            // its pages are backed only once touched, and the table then grows in place.
            let mut short = Vec::new();
            if self.short_reserve <= INITIAL_SLOTS || short.try_reserve_exact(self.short_reserve).is_err() {
                short.reserve_exact(INITIAL_SLOTS);
            }
            (keys.fill)(&mut short, INITIAL_SLOTS);
            self.short = short;
            self.queue_fast = !self.no_combiner;
        }
        self.pending.len() >= BATCH
    }

    /// Looks up the string keys queued by [`Self::insert_str`] or [`Self::queue_str`],
    /// folding with `combine`: every slot loaded first, then the probes.
    pub fn flush(&mut self, combine: impl Fn(&K, &mut V, V) -> Option<V>) {
        let Some(keys) = self.str_keys.filter(|_| !self.pending.is_empty()) else { return };
        let mut pending = std::mem::take(&mut self.pending);
        self.records_in += pending.len() as u64;
        // As few instructions a key as can be (nine), so that the whole batch's loads fit
        // in the core's out-of-order window (~250 instructions) and are in flight at once.
        // A long key loads a slot it does not need: cheaper than the branch to skip it.
        let (mask, phase) = short_mask(&self.short);
        let mut touch = 0u64;
        for p in &pending {
            touch ^= self.short[(p.hash as usize & mask) | phase].meta;
        }
        std::hint::black_box(touch);
        let arena = std::mem::take(&mut self.arena);
        let mut rest = pending.drain(..);
        loop {
            let next = match self.no_combiner {
                false => self.fold_held(&mut rest, &combine),
                true => rest.next().map(Next::Other),
            };
            match next {
                None => break,
                Some(Next::Other(p)) => self.flush_other(p, &arena, keys, &combine),
                Some(Next::Declined { lo, hi, len, value }) => {
                    self.stop_combining();
                    self.keep_aside((keys.make)(queued_str(&unpack(lo, hi)[..len])), value);
                }
            }
        }
        drop(rest);
        self.arena = arena;
        self.arena.clear();
        self.pending = pending;
    }

    /// The loop of the common case, a short key the table holds: folds queued keys until
    /// one that is not, or one the combiner declines, and returns it (`None`: the batch is
    /// done). Nothing in it changes the table, so the table's shape stays in registers;
    /// the rest is out of line, and the hits are counted after it.
    #[inline(always)]
    fn fold_held(
        &mut self,
        rest: &mut std::vec::Drain<'_, Pending<V>>,
        combine: &impl Fn(&K, &mut V, V) -> Option<V>,
    ) -> Option<Next<V>> {
        let before = rest.len();
        let (mask, phase) = short_mask(&self.short);
        let wrap = self.short.len() - 1;
        let (short, keys) = (&mut self.short[..], &self.keys[..]);
        let next = loop {
            let Some(p) = rest.next() else { break None };
            if p.len as usize > INLINE {
                break Some(Next::Other(p));
            }
            let start = (p.hash as usize & mask) | phase;
            let Found::Entry(i) = probe_short(short, start, wrap, p.lo, p.hi, short_meta(p.len as usize)) else {
                break Some(Next::Other(p));
            };
            let slot = &mut short[i];
            if let Some(value) = combine(&keys[(slot.meta & ENTRY) as usize], &mut slot.value, p.value) {
                break Some(Next::Declined { lo: p.lo, hi: p.hi, len: p.len as usize, value });
            }
        };
        let taken = before - rest.len() - usize::from(matches!(next, Some(Next::Other(_))));
        self.hits += taken as u64;
        next
    }

    /// [`Self::flush`] for one queued key that is not a short key the table holds: a new
    /// short key, a long one, or any once the buffer stopped looking keys up.
    #[inline(never)]
    fn flush_other(
        &mut self,
        p: Pending<V>,
        arena: &str,
        keys: StrKeys<K, V>,
        combine: &impl Fn(&K, &mut V, V) -> Option<V>,
    ) {
        let len = p.len as usize;
        let short = len <= INLINE;
        let bytes = unpack(p.lo, p.hi);
        if short && !self.no_combiner {
            match self.find_short(p.hash, p.lo, p.hi, len) {
                Found::Entry(i) => {
                    // Not reached: `flush`, the only caller, folds held short keys itself
                    // and sends here only those it found no slot for. Kept so that this
                    // function is right on its own; handing the empty slot over instead
                    // (one probe, not two, for a new key) cost the batch's loop more
                    // (+29 M instructions against -22 M on 128 MiB of english).
                    self.hits += 1;
                    let slot = &mut self.short[i];
                    if let Some(value) = combine(&self.keys[(slot.meta & ENTRY) as usize], &mut slot.value, p.value) {
                        self.stop_combining();
                        self.keep_aside((keys.make)(queued_str(&bytes[..len])), value);
                    }
                }
                Found::Vacant(i) => {
                    let key = (keys.make)(queued_str(&bytes[..len]));
                    let place = Place { lo: p.lo, hi: p.hi, meta: short_meta(len) };
                    self.add_short(i, place, key, p.value, keys.fill);
                }
            }
            return;
        }
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
            self.settle(found, slot, key, p.value, combine);
        }
    }

    /// Puts a new short string key in the empty slot `i` of the short-key table.
    #[inline(always)]
    fn add_short(&mut self, i: usize, place: Place, key: K, value: V, fill: fn(&mut Vec<ShortSlot<V>>, usize)) {
        // As in `settle`, with this table's slots.
        let inline = std::mem::size_of::<K>() + 4 * std::mem::size_of::<ShortSlot<V>>() / 3;
        self.bytes += estimate(&key, &value) + inline as u64;
        let at = u32::try_from(self.keys.len()).expect("fewer than 2^32 distinct keys");
        self.short[i] = ShortSlot { lo: place.lo, hi: place.hi, meta: place.meta | u64::from(at), value };
        self.keys.push(key);
        self.short_len += 1;
        if self.short_len * 4 > self.short.len() * 3 {
            self.grow_short(fill);
        }
        if self.records_in >= PROBE && self.hits == 0 {
            self.stop_combining();
        }
    }

    /// Doubles the short-key table and places every slot again from what it holds: in
    /// place when the table has the room (its pages stay, only the new half is touched
    /// for the first time), else into a new table.
    fn grow_short(&mut self, fill: fn(&mut Vec<ShortSlot<V>>, usize)) {
        let n = self.short.len() * 2;
        if self.short.capacity() >= n {
            for s in self.short.iter_mut().filter(|s| s.meta != 0) {
                s.meta |= MOVING;
            }
            fill(&mut self.short, n);
            self.place_moving(n / 2);
            return;
        }
        let mut grown = Vec::with_capacity(n);
        fill(&mut grown, n);
        let old = std::mem::replace(&mut self.short, grown);
        let mask = n - 1;
        for s in old.into_iter().filter(|s| s.meta != 0) {
            let mut i = short_start(&self.short, short_hash(s.lo, s.hi, ((s.meta >> 32) & 0xff) as usize));
            while self.short[i].meta != 0 {
                i = (i + 1) & mask;
            }
            self.short[i] = s;
        }
    }

    /// Places again, in the doubled table, the entries of its first `old` slots marked
    /// [`MOVING`]. Each goes to the first slot of its probe sequence that is empty or
    /// still holds a marked entry (or stays, if that is its own): so no placed entry's
    /// sequence ever crosses an empty slot or a marked one, and a marked entry it
    /// displaces is placed next, from the same slot.
    fn place_moving(&mut self, old: usize) {
        let wrap = self.short.len() - 1;
        for i in 0..old {
            while self.short[i].meta & MOVING != 0 {
                let meta = self.short[i].meta & !MOVING;
                let s = &self.short[i];
                let mut j = short_start(&self.short, short_hash(s.lo, s.hi, ((meta >> 32) & 0xff) as usize));
                while j != i && self.short[j].meta != 0 && self.short[j].meta & MOVING == 0 {
                    j = (j + 1) & wrap;
                }
                self.short[i].meta = meta;
                if j == i {
                    break;
                }
                let vacant = self.short[j].meta == 0;
                self.short.swap(i, j);
                if vacant {
                    break;
                }
            }
        }
    }

    /// Finds a short string key by its packed bytes: no key is read.
    #[inline(always)]
    fn find_short(&self, hash: u64, lo: u64, hi: u64, len: usize) -> Found {
        probe_short(&self.short, short_start(&self.short, hash), self.short.len() - 1, lo, hi, short_meta(len))
    }
}

/// What [`MapBuffer::fold_held`] stopped at.
enum Next<V> {
    /// A key that is not a short key the table holds, for [`MapBuffer::flush_other`].
    Other(Pending<V>),
    /// A held short key (its packed bytes and length) whose value the combiner declined
    /// to fold: kept aside.
    Declined { lo: u64, hi: u64, len: usize, value: V },
}

/// The probe for a short key in `short` from slot `start`, wrapping with `wrap`, whose
/// slot `meta` is `want` above the entry. A hit's compares come first, as most lookups
/// are hits.
#[inline(always)]
fn probe_short<V>(short: &[ShortSlot<V>], start: usize, wrap: usize, lo: u64, hi: u64, want: u64) -> Found {
    let mut i = start;
    loop {
        let s = &short[i];
        // The upper half of `meta` alone: a 32-bit compare, with no mask to hold.
        if s.lo == lo && s.hi == hi && s.meta >> 32 == want >> 32 {
            return Found::Entry(i);
        }
        if s.meta == 0 {
            return Found::Vacant(i);
        }
        i = (i + 1) & wrap;
    }
}
