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
