//! Streaming k-way merge of sorted record streams, and grouping by key.
//!
//! Memory holds one record per source, never a whole partition: the reduce side of a job
//! of any size runs in the space of its fan-in.

use std::cmp::Ordering;

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

/// Merges sorted streams of `(key, value)` into one sorted stream, through a tree of
/// losers (Knuth, TAOCP 5.4.1): each record taken costs `ceil(log2 k)` key comparisons
/// for `k` sources, against up to twice that for a binary heap's sift-down. Equal keys
/// come from the lower source index first, so the merge is deterministic.
pub struct Merge<K, V, I> {
    sources: Vec<I>,
    /// Each source's next record; `None` once it is exhausted (a key above every key).
    heads: Vec<Option<(K, V)>>,
    /// `tree[0]` is the source holding the smallest head; `tree[n]`, `1 <= n < k`, the
    /// source that lost the match at node `n`, whose children are `2n` and `2n + 1` and
    /// whose leaves `k + s` are the sources `s`.
    tree: Vec<usize>,
}

impl<K, V, E, I> Merge<K, V, I>
where
    K: Ord,
    I: Iterator<Item = Result<(K, V), E>>,
{
    /// Starts a merge, reading the first record of every source.
    pub fn new(sources: Vec<I>) -> Result<Self, MergeError<E>> {
        let mut sources = sources;
        let mut heads = Vec::with_capacity(sources.len());
        for (source, records) in sources.iter_mut().enumerate() {
            heads.push(records.next().transpose().map_err(|error| MergeError::Source { input: source, error })?);
        }
        let mut merge = Merge { sources, heads, tree: Vec::new() };
        merge.build();
        Ok(merge)
    }

    /// Whether source `a`'s head orders before source `b`'s: by key, then source.
    #[inline]
    fn less(&self, a: usize, b: usize) -> bool {
        match (&self.heads[a], &self.heads[b]) {
            (Some((x, _)), Some((y, _))) => x.cmp(y).then(a.cmp(&b)) == Ordering::Less,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => a < b,
        }
    }

    /// Plays every match, leaves up.
    fn build(&mut self) {
        let k = self.heads.len();
        if k == 0 {
            return;
        }
        let mut winners = vec![0; 2 * k];
        for (s, w) in winners[k..].iter_mut().enumerate() {
            *w = s;
        }
        self.tree = vec![0; k];
        for n in (1..k).rev() {
            let (a, b) = (winners[2 * n], winners[2 * n + 1]);
            let (win, lose) = if self.less(a, b) { (a, b) } else { (b, a) };
            winners[n] = win;
            self.tree[n] = lose;
        }
        self.tree[0] = winners[1];
    }

    /// Replays the matches from source `s`'s leaf to the root, after its head changed.
    #[inline]
    fn replay(&mut self, s: usize) {
        let mut winner = s;
        let mut n = (self.heads.len() + s) / 2;
        while n >= 1 {
            let loser = self.tree[n];
            if self.less(loser, winner) {
                self.tree[n] = winner;
                winner = loser;
            }
            n /= 2;
        }
        self.tree[0] = winner;
    }

    /// The smallest key not yet taken.
    pub fn peek_key(&self) -> Option<&K> {
        let s = *self.tree.first()?;
        self.heads[s].as_ref().map(|(k, _)| k)
    }

    /// Takes the smallest record.
    #[allow(clippy::should_implement_trait)] // fallible; an Iterator would hide the source
    pub fn next(&mut self) -> Result<Option<(K, V)>, MergeError<E>> {
        let Some(&s) = self.tree.first() else { return Ok(None) };
        let Some(head) = self.heads[s].take() else { return Ok(None) };
        match self.sources[s].next() {
            None => {}
            Some(Err(error)) => {
                self.heads[s] = Some(head);
                return Err(MergeError::Source { input: s, error });
            }
            Some(Ok(next)) => {
                if next.0 < head.0 {
                    self.heads[s] = Some(head);
                    return Err(MergeError::Unsorted { input: s });
                }
                self.heads[s] = Some(next);
            }
        }
        self.replay(s);
        Ok(Some(head))
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
        fn merge_equals_sort(mut runs in proptest::collection::vec(proptest::collection::vec((0u32..50, any::<u32>()), 0..30), 0..40)) {
            for r in &mut runs { r.sort_by_key(|p| p.0); }
            let mut expected: Vec<(u32, u32)> = runs.concat();
            expected.sort_by_key(|p| p.0);
            let mut m = Merge::new(sources(&runs)).unwrap();
            let mut got = Vec::new();
            while let Some(r) = m.next().unwrap() { got.push(r); }
            // `expected` is a stable sort of the runs in source order: equal keys come
            // from the lower source first, and in order within a source.
            prop_assert_eq!(got, expected);
        }
    }
}
