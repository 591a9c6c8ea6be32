//! How a key reaches the table: owned, borrowed, or queued as bytes of the map input.

/// A key given owned or borrowed: looked up as `Q`, turned into a `K` only when kept.
pub(super) trait KeySource<K, Q: ?Sized> {
    fn key(&self) -> &Q;
    fn into_key(self) -> K;
}

pub(super) struct Owned<K>(pub(super) K);

impl<K> KeySource<K, K> for Owned<K> {
    fn key(&self) -> &K {
        &self.0
    }
    fn into_key(self) -> K {
        self.0
    }
}

pub(super) struct Borrowed<'a, Q: ?Sized>(pub(super) &'a Q);

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
pub(super) struct Queued<'a, K> {
    pub(super) bytes: &'a [u8],
    pub(super) make: fn(&str) -> K,
}

impl<'a, K> Queued<'a, K> {
    fn as_str(&self) -> &'a str {
        queued_str(self.bytes)
    }
}

/// The `str` a queued key's bytes were cut from (checked as UTF-8 again).
pub(super) fn queued_str(bytes: &[u8]) -> &str {
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

#[cfg(test)]
mod tests {
    use super::super::{INLINE, MapBuffer};

    fn sum(_: &String, acc: &mut u64, v: u64) -> Option<u64> {
        *acc += v;
        None
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
}
