//! The table's slots: their layout, how a short string key is packed into two words and
//! hashed, and the function table a string-like key type lends the buffer.

use std::borrow::Borrow;

use super::INLINE;

/// What the buffer needs of a string-like `K` to look up and keep queued string keys,
/// captured where `K: Borrow<str> + From<&str>` is known, so that the flush itself needs
/// no such bound and can be called with any combiner, statically dispatched.
#[derive(Debug)]
pub(super) struct StrKeys<K, V> {
    /// `K::from(str)`.
    pub(super) make: fn(&str) -> K,
    /// Whether a key's `str` is these bytes.
    pub(super) equals: fn(&K, &[u8]) -> bool,
    /// Lengthens a short-key table to this many slots with empty ones, each value
    /// `V::default()`: made where `V::default` is known, so that filling a table is a loop
    /// of stores, not a call a slot.
    pub(super) fill: fn(&mut Vec<ShortSlot<V>>, usize),
    /// A key's `str`, as bytes.
    pub(super) bytes: fn(&K) -> &[u8],
}

// By hand: a derive would ask `K: Copy, V: Copy`, and these are only function pointers.
impl<K, V> Clone for StrKeys<K, V> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<K, V> Copy for StrKeys<K, V> {}

impl<K: Borrow<str> + for<'q> From<&'q str>, V: Default> StrKeys<K, V> {
    pub(super) fn new() -> Self {
        StrKeys {
            make: |s| K::from(s),
            equals: |k, b| Borrow::<str>::borrow(k).as_bytes() == b,
            fill: fill_short_slots::<V>,
            bytes: |k| Borrow::<str>::borrow(k).as_bytes(),
        }
    }
}

/// `meta` of a slot in use.
pub(super) const FULL: u64 = 1 << 63;
/// `meta` of a slot holding a short string key in `lo`, `hi`, with its length at bit 32.
pub(super) const SHORT: u64 = 1 << 62;
/// The entry's position, in the low half of `meta`.
pub(super) const ENTRY: u64 = 0xffff_ffff;
/// `meta` bit of a slot whose entry a growth in place has yet to place again.
pub(super) const MOVING: u64 = 1 << 61;

/// A slot of the table of other keys: empty if `meta` is 0, else the key's hash in `lo`
/// and `meta = FULL | tag << 32 | key`, `key` the key's position in `keys`. `value` is
/// the key's combined value, `None` when empty.
#[derive(Debug)]
pub(super) struct Slot<V> {
    pub(super) lo: u64,
    pub(super) meta: u64,
    pub(super) value: Option<V>,
}

/// A slot of the short-key table, 32 bytes for a `u64` value and aligned to 32, so that a
/// lookup touches one cache line: empty if `meta` is 0, else the key's bytes as two
/// little-endian integers, zero-padded, and `meta = FULL | SHORT | len << 32 | key`.
/// An empty slot's `value` is `V::default()`, never read.
#[derive(Debug)]
#[repr(align(32))]
pub(super) struct ShortSlot<V> {
    pub(super) lo: u64,
    pub(super) hi: u64,
    pub(super) meta: u64,
    pub(super) value: V,
}

/// Where the probe for `hash` starts in the short-key table `slots`: the first slot of a
/// 64-byte cache line, so that the two first probes (for a `u64` value) are in the line
/// the batch loaded ahead. The table is only aligned to 32, so which slots start lines
/// depends on where it was allocated.
#[inline(always)]
pub(super) fn short_start<V>(slots: &[ShortSlot<V>], hash: u64) -> usize {
    let (mask, phase) = short_mask(slots);
    (hash as usize & mask) | phase
}

/// The two parts of [`short_start`] that do not depend on the hash: the mask, and the
/// index of the first slot of a cache line (0 or 1).
#[inline(always)]
pub(super) fn short_mask<V>(slots: &[ShortSlot<V>]) -> (usize, usize) {
    let phase = (slots.as_ptr() as usize / std::mem::size_of::<ShortSlot<V>>()) & 1;
    ((slots.len() - 1) & !1, phase)
}

/// Lengthens `slots` to `n` with empty slots.
pub(super) fn fill_short_slots<V: Default>(slots: &mut Vec<ShortSlot<V>>, n: usize) {
    let more = n.saturating_sub(slots.len());
    slots.extend(std::iter::repeat_with(|| ShortSlot { lo: 0, hi: 0, meta: 0, value: V::default() }).take(more));
}

/// Where a key goes, before it has a position and a value.
#[derive(Clone, Copy)]
pub(super) struct Place {
    pub(super) lo: u64,
    pub(super) hi: u64,
    pub(super) meta: u64,
}

pub(super) fn empty_slots<V>(n: usize) -> Vec<Slot<V>> {
    std::iter::repeat_with(|| Slot { lo: 0, meta: 0, value: None }).take(n).collect()
}

/// The `meta` bits above the entry of a key that is not a short string: 28 bits of its
/// hash.
#[inline(always)]
pub(super) fn tag(hash: u64) -> u64 {
    FULL | ((hash >> 36) << 32)
}

/// The `meta` bits above the entry of a short string key.
#[inline(always)]
pub(super) fn short_meta(len: usize) -> u64 {
    FULL | SHORT | ((len as u64) << 32)
}

/// The hash of a short string key: a few multiplies over its packed bytes and length.
#[inline(always)]
pub(super) fn short_hash(lo: u64, hi: u64, len: usize) -> u64 {
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
pub(super) fn pack(bytes: &[u8]) -> (u64, u64) {
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
pub(super) fn pack_in(text: &[u8], key: &[u8]) -> (u64, u64) {
    pack_loaded(text, key).unwrap_or_else(|| pack(key))
}

/// The load and mask of [`pack_in`], if the text goes on for 16 bytes from the key.
#[inline(always)]
pub(super) fn pack_loaded(text: &[u8], key: &[u8]) -> Option<(u64, u64)> {
    let n = key.len();
    // Where the key starts in `text`, if it is a part of it (else this is out of range).
    let at = (key.as_ptr() as usize).wrapping_sub(text.as_ptr() as usize);
    let word = text.get(at..at.checked_add(INLINE)?)?;
    let raw = u128::from_le_bytes(word.try_into().expect("16 bytes")) & *KEEP.get(n)?;
    Some((raw as u64, (raw >> 64) as u64))
}

/// `KEEP[n]` keeps the low `n` bytes of a little-endian 16-byte load: a mask loaded, not
/// computed from the length (a dozen instructions a key, in the map loop).
const KEEP: [u128; INLINE + 1] = {
    let mut keep = [0u128; INLINE + 1];
    let mut n = 1;
    while n <= INLINE {
        keep[n] = u128::MAX >> (8 * (INLINE - n));
        n += 1;
    }
    keep
};

/// The bytes of a packed short key.
pub(super) fn unpack(lo: u64, hi: u64) -> [u8; INLINE] {
    (u128::from(lo) | (u128::from(hi) << 64)).to_le_bytes()
}

/// A string key waiting in the batch: its hash, its bytes (packed if short, else at
/// `start` in the arena), its value.
#[derive(Debug)]
pub(super) struct Pending<V> {
    pub(super) hash: u64,
    pub(super) lo: u64,
    pub(super) hi: u64,
    pub(super) len: u32,
    pub(super) start: u32,
    pub(super) value: V,
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
