//! The reduce side: merge passes that bound how many inputs are read at once, and the
//! final merge, grouped by key, that the reduce function reads.
//!
//! A reduce has one input per sorted record stream of its partition (one per map run).
//! Inputs are opened by index, only when a merge reads them, through a function the
//! runtime gives (a file on a shared filesystem, a stream from another worker...). With
//! more inputs than the fan-in, groups of `fanin` inputs are merged into scratch runs, and
//! the runs merged again, until at most `fanin` remain (Hadoop's `io.sort.factor`): a
//! reduce over any number of map outputs holds a bounded number of readers and buffers.

use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom};
use std::sync::atomic::AtomicBool;

use super::merge::{Merge, MergeError};
use super::record::{Compression, FormatError, RecordReader, RecordWriter};
use super::{Scratch, ShuffleError, ensure_not_cancelled};
use crate::job::{Key, Value};

/// Most inputs merged at once by default (Hadoop's `io.sort.factor` is 10 to 100).
pub const MERGE_FANIN: usize = 100;

const READ_BUFFER: usize = 64 << 10;
const WRITE_BUFFER: usize = 256 << 10;

/// What a merge reads: one of the reduce's inputs, or the run of an earlier pass.
#[derive(Debug)]
pub enum MergeInput<F> {
    /// Input number `n` of the reduce, not opened yet.
    Input(usize),
    /// A scratch file holding a merged run, positioned at its start.
    Run(F),
}

/// A reader of a merge input: boxed, so that `BufReader` reaches the reader's own
/// `read_buf` (a wrapper with only `read` would have every buffer zeroed first: 64 KiB per
/// input, a cost that showed in jobs of many small map outputs).
type Reader<K, V> = RecordReader<BufReader<Box<dyn Read>>, K, V>;

/// The merge of a reduce's inputs (or of one pass's group of them), which says which input
/// failed.
pub struct ReduceMerge<K, V> {
    merge: Merge<K, V, Reader<K, V>>,
    /// For each source of the merge, the reduce input it reads (`None`: a pass's run).
    origins: Vec<Option<usize>>,
}

impl<K: Key, V: Value> ReduceMerge<K, V> {
    /// Opens `level` (with `open` for the reduce's inputs) and reads the first record of
    /// each.
    pub fn open<R: Read + 'static, F: Read + 'static>(
        level: Vec<MergeInput<F>>,
        open: &mut impl FnMut(usize) -> io::Result<R>,
    ) -> Result<Self, ShuffleError> {
        let mut readers = Vec::with_capacity(level.len());
        let mut origins = Vec::with_capacity(level.len());
        for input in level {
            let (reader, origin): (Box<dyn Read>, _) = match input {
                MergeInput::Input(n) => {
                    let r = open(n).map_err(|e| ShuffleError::Input { input: n, error: FormatError::Io(e) })?;
                    (Box::new(r), Some(n))
                }
                MergeInput::Run(f) => (Box::new(f), None),
            };
            readers.push(RecordReader::new(BufReader::with_capacity(READ_BUFFER, reader)));
            origins.push(origin);
        }
        let merge = Merge::new(readers).map_err(|e| merge_error(&origins, e))?;
        Ok(ReduceMerge { merge, origins })
    }

    /// Calls `f` once per key, in key order, with all its values (see
    /// [`Merge::for_each_group`]). An error of `f` comes back as `Ok(Err(..))`.
    pub fn for_each_group<X>(
        &mut self,
        f: impl FnMut(&K, &mut dyn Iterator<Item = V>) -> Result<(), X>,
    ) -> Result<Result<(), X>, ShuffleError> {
        self.for_each_group_by(|a, b| a == b, f)
    }

    /// [`ReduceMerge::for_each_group`] with a grouping comparator (see
    /// [`Merge::for_each_group_by`]).
    pub fn for_each_group_by<X>(
        &mut self,
        same: impl Fn(&K, &K) -> bool,
        f: impl FnMut(&K, &mut dyn Iterator<Item = V>) -> Result<(), X>,
    ) -> Result<Result<(), X>, ShuffleError> {
        match self.merge.for_each_group_by(same, f) {
            Ok(r) => Ok(r),
            Err(e) => Err(merge_error(&self.origins, e)),
        }
    }

    /// Takes the smallest record.
    fn next(&mut self) -> Result<Option<(K, V)>, ShuffleError> {
        match self.merge.next() {
            Ok(r) => Ok(r),
            Err(e) => Err(merge_error(&self.origins, e)),
        }
    }
}

/// A merge's error, naming the reduce input behind the failing source.
fn merge_error(origins: &[Option<usize>], e: MergeError<FormatError>) -> ShuffleError {
    match e {
        MergeError::Source { input, error } => match origins.get(input).copied().flatten() {
            Some(input) => ShuffleError::Input { input, error },
            None => ShuffleError::Scratch(error),
        },
        MergeError::Unsorted { input } => match origins.get(input).copied().flatten() {
            Some(input) => ShuffleError::Unsorted { input },
            None => ShuffleError::Scratch(FormatError::Corrupt { offset: 0, what: "merge pass run not sorted" }),
        },
    }
}

/// Merges the reduce's `inputs` in passes of at most `fanin` into scratch runs until at
/// most `fanin` are left, and returns what is left, for [`ReduceMerge::open`].
pub fn merge_passes<K: Key, V: Value, R: Read + 'static, S: Scratch>(
    inputs: usize,
    open: &mut impl FnMut(usize) -> io::Result<R>,
    fanin: usize,
    compression: Compression,
    scratch: &mut S,
    cancelled: &AtomicBool,
) -> Result<Vec<MergeInput<S::File>>, ShuffleError> {
    let fanin = fanin.max(2);
    let scratch_err = |e: io::Error| ShuffleError::Scratch(FormatError::Io(e));
    let mut level: Vec<MergeInput<S::File>> = (0..inputs).map(MergeInput::Input).collect();
    while level.len() > fanin {
        let mut next = Vec::with_capacity(level.len().div_ceil(fanin));
        let mut rest = level.into_iter();
        loop {
            ensure_not_cancelled(cancelled)?;
            let group: Vec<_> = rest.by_ref().take(fanin).collect();
            if group.is_empty() {
                break;
            }
            let mut merge = ReduceMerge::<K, V>::open(group, open)?;
            let file = scratch.create().map_err(scratch_err)?;
            let mut w = RecordWriter::with_compression(BufWriter::with_capacity(WRITE_BUFFER, file), compression)
                .map_err(scratch_err)?;
            while let Some((k, v)) = merge.next()? {
                w.write(&k, &v).map_err(ShuffleError::Scratch)?;
            }
            let (buf, _, _) = w.finish().map_err(scratch_err)?;
            let mut file = buf.into_inner().map_err(|e| scratch_err(e.into_error()))?;
            file.seek(SeekFrom::Start(0)).map_err(scratch_err)?;
            next.push(MergeInput::Run(file));
        }
        level = next;
    }
    Ok(level)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shuffle::MemScratch;
    use std::io::Cursor;

    fn stream(keys: impl IntoIterator<Item = u64>) -> Vec<u8> {
        let mut w = RecordWriter::new(Vec::new()).unwrap();
        for k in keys {
            w.write(&format!("k{k:03}"), &1u64).unwrap();
        }
        w.finish().unwrap().0
    }

    fn reduce(inputs: &[Vec<u8>], fanin: usize) -> Result<Vec<(String, u64)>, ShuffleError> {
        let mut opened = 0;
        let mut open = |n: usize| {
            opened += 1;
            Ok(Cursor::new(inputs[n].clone()))
        };
        let no = AtomicBool::new(false);
        let level =
            merge_passes::<String, u64, _, _>(inputs.len(), &mut open, fanin, Compression::Lz4, &mut MemScratch, &no)?;
        assert!(level.len() <= fanin.max(2));
        let mut merge = ReduceMerge::<String, u64>::open(level, &mut open)?;
        let mut got = Vec::new();
        merge
            .for_each_group(|k, vs| -> Result<(), ()> {
                got.push((k.clone(), vs.sum()));
                Ok(())
            })?
            .unwrap();
        assert_eq!(opened, inputs.len(), "each input opened once");
        Ok(got)
    }

    #[test]
    fn more_inputs_than_the_fanin_merge_in_passes_to_the_same_groups() {
        let inputs: Vec<Vec<u8>> = (0..9u64).map(|i| stream((0..50).map(|k| k * 9 + i % 3))).collect();
        let direct = reduce(&inputs, 100).unwrap();
        for fanin in [2, 3, 4] {
            assert_eq!(reduce(&inputs, fanin).unwrap(), direct, "fan-in {fanin}");
        }
        assert!(direct.windows(2).all(|w| w[0].0 < w[1].0), "one group per key, in order");
        assert_eq!(direct.iter().map(|g| g.1).sum::<u64>(), 9 * 50);
    }

    #[test]
    fn a_corrupt_or_unsorted_input_is_named_by_its_index_even_behind_a_pass() {
        let mut inputs: Vec<Vec<u8>> = (0..5u64).map(|i| stream(i..i + 20)).collect();
        inputs[3][20] ^= 1;
        for fanin in [2, 10] {
            let err = reduce(&inputs, fanin).unwrap_err();
            assert!(matches!(err, ShuffleError::Input { input: 3, .. }), "fan-in {fanin}: {err}");
        }
        let mut inputs: Vec<Vec<u8>> = (0..3u64).map(|i| stream(i..i + 20)).collect();
        inputs[1] = stream([5, 4]);
        let err = reduce(&inputs, 10).unwrap_err();
        assert!(matches!(err, ShuffleError::Unsorted { input: 1 }), "{err}");
    }
}
