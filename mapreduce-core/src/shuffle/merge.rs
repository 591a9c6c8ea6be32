//! Streaming k-way merge of sorted record streams, and grouping by key.
//!
//! Memory holds one record per source, never a whole partition: the reduce side of a job
//! of any size runs in the space of its fan-in.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::collections::binary_heap::PeekMut;

/// A merge failed: a source failed, or a source's keys were not sorted.
#[derive(Debug, thiserror::Error)]
pub enum MergeError<E> {
    /// Source number `source` failed to yield a record.
    #[error("input {input} failed: {error}")]
    Source {
        /// Index of the failing source.
        input: usize,
        /// Its error (in the message, not the source: each cause is printed once).
        error: E,
    },
    /// Source number `source` yielded a key smaller than the key before it.
    #[error("input {input} is not sorted by key")]
    Unsorted {
        /// Index of the unsorted source.
        input: usize,
    },
}

struct Head<K, V> {
    key: K,
    value: V,
    source: usize,
}

impl<K: Ord, V> PartialEq for Head<K, V> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl<K: Ord, V> Eq for Head<K, V> {}
impl<K: Ord, V> PartialOrd for Head<K, V> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<K: Ord, V> Ord for Head<K, V> {
    /// Reversed, so that `BinaryHeap` (a max-heap) pops the smallest key; ties go to the
    /// lower source index, which makes the merge deterministic.
    fn cmp(&self, other: &Self) -> Ordering {
        other.key.cmp(&self.key).then_with(|| other.source.cmp(&self.source))
    }
}

/// Merges sorted streams of `(key, value)` into one sorted stream.
pub struct Merge<K, V, I> {
    sources: Vec<I>,
    heap: BinaryHeap<Head<K, V>>,
}

impl<K, V, E, I> Merge<K, V, I>
where
    K: Ord,
    I: Iterator<Item = Result<(K, V), E>>,
{
    /// Starts a merge, reading the first record of every source.
    pub fn new(sources: Vec<I>) -> Result<Self, MergeError<E>> {
        let mut heap = BinaryHeap::with_capacity(sources.len());
        let mut sources = sources;
        for (source, records) in sources.iter_mut().enumerate() {
            match records.next() {
                None => {}
                Some(Err(error)) => return Err(MergeError::Source { input: source, error }),
                Some(Ok((key, value))) => heap.push(Head { key, value, source }),
            }
        }
        Ok(Merge { heap, sources })
    }

    /// The smallest key not yet taken.
    pub fn peek_key(&self) -> Option<&K> {
        self.heap.peek().map(|h| &h.key)
    }

    /// Takes the smallest record.
    #[allow(clippy::should_implement_trait)] // fallible; an Iterator would hide the source
    pub fn next(&mut self) -> Result<Option<(K, V)>, MergeError<E>> {
        let Some(mut top) = self.heap.peek_mut() else { return Ok(None) };
        let source = top.source;
        // The top's source's next record takes its place, sifted down once: half the
        // work of a pop and a push, and little when one source holds a run of the
        // smallest keys.
        match self.sources[source].next() {
            None => {
                let head = PeekMut::pop(top);
                Ok(Some((head.key, head.value)))
            }
            Some(Err(error)) => Err(MergeError::Source { input: source, error }),
            Some(Ok((key, value))) => {
                if key < top.key {
                    return Err(MergeError::Unsorted { input: source });
                }
                let head = std::mem::replace(&mut *top, Head { key, value, source });
                Ok(Some((head.key, head.value)))
            }
        }
    }

    /// Calls `f` once per distinct key, in key order, with an iterator over all the values
    /// of that key. Values `f` leaves unread are skipped. Stops at the first error of `f`
    /// (returned as `Ok(Err(..))`) or of the merge.
    pub fn for_each_group<X>(
        &mut self,
        f: impl FnMut(&K, &mut dyn Iterator<Item = V>) -> Result<(), X>,
    ) -> Result<Result<(), X>, MergeError<E>> {
        self.for_each_group_by(|a, b| a == b, f)
    }

    /// [`Merge::for_each_group`] with groups of keys for which `same(first, next)` holds
    /// (a grouping comparator): `f` gets the group's first key and the values of all its
    /// keys, in key order.
    pub fn for_each_group_by<X>(
        &mut self,
        same: impl Fn(&K, &K) -> bool,
        mut f: impl FnMut(&K, &mut dyn Iterator<Item = V>) -> Result<(), X>,
    ) -> Result<Result<(), X>, MergeError<E>> {
        while let Some((key, first)) = self.next()? {
            let mut values = GroupValues { merge: self, key: &key, first: Some(first), error: None, same: &same };
            let result = f(&key, &mut values);
            // Skip what `f` left unread, so the next group starts at the next key.
            for _ in values.by_ref() {}
            if let Some(e) = values.error {
                return Err(e);
            }
            if let Err(x) = result {
                return Ok(Err(x));
            }
        }
        Ok(Ok(()))
    }
}

struct GroupValues<'a, K, V, I, E, G> {
    merge: &'a mut Merge<K, V, I>,
    key: &'a K,
    first: Option<V>,
    error: Option<MergeError<E>>,
    same: &'a G,
}

impl<K, V, E, I, G> Iterator for GroupValues<'_, K, V, I, E, G>
where
    K: Ord,
    I: Iterator<Item = Result<(K, V), E>>,
    G: Fn(&K, &K) -> bool,
{
    type Item = V;

    fn next(&mut self) -> Option<V> {
        if let Some(v) = self.first.take() {
            return Some(v);
        }
        if self.error.is_some() || !self.merge.peek_key().is_some_and(|next| (self.same)(self.key, next)) {
            return None;
        }
        match self.merge.next() {
            Ok(Some((_, v))) => Some(v),
            Ok(None) => None,
            Err(e) => {
                self.error = Some(e);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    type Src = std::vec::IntoIter<Result<(u32, u32), String>>;

    fn sources(runs: &[Vec<(u32, u32)>]) -> Vec<Src> {
        runs.iter().map(|r| r.iter().cloned().map(Ok).collect::<Vec<_>>().into_iter()).collect()
    }

    #[test]
    fn groups_and_skips_unread_values() {
        let mut m = Merge::new(sources(&[vec![(1, 10), (3, 30)], vec![(1, 11), (2, 20), (3, 31)], vec![]])).unwrap();
        let mut seen = Vec::new();
        m.for_each_group(|k, vs| {
            if *k == 1 {
                seen.push((*k, vs.next().into_iter().collect::<Vec<_>>())); // reads one of two
            } else {
                seen.push((*k, vs.collect()));
            }
            Ok::<(), ()>(())
        })
        .unwrap()
        .unwrap();
        assert_eq!(seen, vec![(1, vec![10]), (2, vec![20]), (3, vec![30, 31])]);
    }

    #[test]
    fn a_grouping_comparator_groups_adjacent_keys_and_keeps_key_order_within() {
        // Keys (user, time): grouped by user, values come in time order across sources.
        let runs = [vec![((1, 5), 'b'), ((2, 1), 'x')], vec![((1, 2), 'a'), ((1, 9), 'c'), ((3, 0), 'z')]];
        let mut m = Merge::new(sources_of(&runs)).unwrap();
        let mut seen = Vec::new();
        m.for_each_group_by(
            |a: &(u32, u32), b: &(u32, u32)| a.0 == b.0,
            |k, vs| {
                seen.push((*k, vs.collect::<String>()));
                Ok::<(), ()>(())
            },
        )
        .unwrap()
        .unwrap();
        assert_eq!(seen, vec![((1, 2), "abc".to_string()), ((2, 1), "x".into()), ((3, 0), "z".into())]);
    }

    fn sources_of<K: Clone, V: Clone>(runs: &[Vec<(K, V)>]) -> Vec<std::vec::IntoIter<Result<(K, V), String>>> {
        runs.iter().map(|r| r.iter().cloned().map(Ok).collect::<Vec<_>>().into_iter()).collect()
    }

    #[test]
    fn unsorted_and_failing_sources_are_errors() {
        let mut m = Merge::new(sources(&[vec![(2, 0), (1, 0)]])).unwrap();
        assert!(matches!(m.next(), Err(MergeError::Unsorted { input: 0 })));
        let bad: Vec<Src> = vec![vec![Ok((1, 1))].into_iter(), vec![Ok((0, 0)), Err("boom".to_string())].into_iter()];
        let mut m = Merge::new(bad).unwrap();
        let got = m.for_each_group(|_, vs| {
            vs.for_each(drop);
            Ok::<(), ()>(())
        });
        assert!(matches!(got, Err(MergeError::Source { input: 1, .. })));
    }

    proptest! {
        #[test]
        fn merge_equals_sort(mut runs in proptest::collection::vec(proptest::collection::vec((0u32..50, any::<u32>()), 0..30), 0..6)) {
            for r in &mut runs { r.sort_by_key(|p| p.0); }
            let mut expected: Vec<(u32, u32)> = runs.concat();
            expected.sort_by_key(|p| p.0);
            let mut m = Merge::new(sources(&runs)).unwrap();
            let mut got = Vec::new();
            while let Some(r) = m.next().unwrap() { got.push(r); }
            let keys = |v: &[(u32, u32)]| v.iter().map(|p| p.0).collect::<Vec<_>>();
            prop_assert_eq!(keys(&got), keys(&expected));
            let mut a = got.clone(); a.sort();
            let mut b = expected.clone(); b.sort();
            prop_assert_eq!(a, b);
        }
    }
}
