//! Where a map sends its pairs ([`Emitter`]) and learns where its input lies
//! ([`Position`]).

use std::borrow::Borrow;
use std::fmt::{self, Display};
use std::hash::Hash;
use std::path::Path;

#[cfg(doc)]
use super::{JobSpec, Mapper};
use super::{Key, Value};
use crate::shuffle::buffer::{Combine, MapBuffer};

/// Where a map input record lies: its file, the byte offset where it starts, and its
/// 1-based line number when that is cheap to know.
///
/// A line's number is known when its shard starts at the start of its file: always for a
/// file of at most one shard, and for every file with [`JobSpec::split_files`] off
/// (compressed files are never split). A shard that starts inside a file would have to
/// read the whole file before it to count lines, so there the number is `None`, as in
/// Hadoop, whose text input gives the byte offset only. Offsets are those of the file,
/// whatever bytes were replaced with U+FFFD; in a compressed file, of its decompressed
/// text. A record of a record file is at its index (from 0) and "line" index + 1; a whole
/// file at 0, line 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position<'a> {
    path: &'a str,
    offset: u64,
    line: Option<u64>,
}

impl<'a> Position<'a> {
    /// The position of byte `offset` of the file `path`, on line `line` (1-based) if known.
    pub fn new(path: &'a str, offset: u64, line: Option<u64>) -> Self {
        Position { path, offset, line }
    }

    /// The input file, as the job listed it (absolute).
    pub fn path(&self) -> &'a Path {
        Path::new(self.path)
    }

    /// The input file's path as a string (a listed path is always UTF-8).
    pub fn path_str(&self) -> &'a str {
        self.path
    }

    /// The byte offset in the file where the record starts.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The record's 1-based line number, when known (see the type's docs).
    pub fn line(&self) -> Option<u64> {
        self.line
    }
}

impl Display for Position<'_> {
    /// `path:line` when the line is known, else `path, byte offset`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}", self.path),
            None => write!(f, "{}, byte {}", self.path, self.offset),
        }
    }
}

/// Where a map function sends its pairs, and where it learns what it maps
/// ([`Emitter::position`]).
///
/// Prefer [`Emitter::emit_str`] for string keys, and [`Emitter::emit_borrowed`] when
/// another key is at hand as a borrowed form: a key already in the map task's buffer then
/// costs no allocation.
pub struct Emitter<'a, K, V> {
    sink: Sink<'a, K, V>,
    position: Position<'a>,
}

/// Looks up the string keys queued in a map task's buffer (see [`Emitter::buffered_in`]).
type FlushFn<'a, K, V> = &'a dyn Fn(&mut MapBuffer<K, V>);

/// How an emitter batches string keys: the text the map input is cut from, and what
/// flushes a full batch.
struct Batch<'a, K, V> {
    text: &'a str,
    flush: Option<FlushFn<'a, K, V>>,
}

/// [`Emitter::emit_str`] to a sink that takes owned keys.
#[inline(never)]
fn emit_to_fn<K: for<'q> From<&'q str>, V>(f: &mut dyn FnMut(K, V), key: &str, value: V) {
    f(K::from(key), value)
}

enum Sink<'a, K, V> {
    Fn(&'a mut dyn FnMut(K, V)),
    /// The buffer and its combiner.
    Buffer(&'a mut MapBuffer<K, V>, Combine<'a, K, V>, Batch<'a, K, V>),
}

impl<'a, K: Key, V: Value> Emitter<'a, K, V> {
    /// An emitter that hands every pair to `sink`.
    pub fn new(sink: &'a mut dyn FnMut(K, V)) -> Self {
        Emitter { sink: Sink::Fn(sink), position: Position::new("", 0, None) }
    }

    /// This emitter, with its input at `position`.
    pub fn at(mut self, position: Position<'a>) -> Self {
        self.position = position;
        self
    }

    /// Where the record being mapped lies: in [`Mapper::map`], the line's file, offset
    /// and line number; in [`Mapper::map_lines`], those of the block's first line.
    pub fn position(&self) -> Position<'a> {
        self.position
    }

    /// Moves [`Emitter::position`] past a line of `bytes` bytes (its terminator
    /// included), to the next line: what the default [`Mapper::map_lines`] does after
    /// each line.
    pub fn advance(&mut self, bytes: usize) {
        self.position.offset += bytes as u64;
        self.position.line = self.position.line.map(|l| l + 1);
    }

    /// An emitter that inserts into a map task's buffer, combining with `combine`.
    #[cfg(test)]
    pub(crate) fn buffered(buffer: &'a mut MapBuffer<K, V>, combine: Combine<'a, K, V>) -> Self {
        Emitter {
            sink: Sink::Buffer(buffer, combine, Batch { text: "", flush: None }),
            position: Position::new("", 0, None),
        }
    }

    /// [`Self::buffered`] for map input cut from `text` (a block of lines), and with
    /// `flush` to look a batch of queued string keys up (see [`MapBuffer::queue_str`]):
    /// a worker passes a closure that calls [`MapBuffer::flush`] with the job's combiner
    /// itself, so that the combiner is called directly, not through `combine`'s vtable.
    pub(crate) fn buffered_in(
        buffer: &'a mut MapBuffer<K, V>,
        combine: Combine<'a, K, V>,
        flush: FlushFn<'a, K, V>,
        text: &'a str,
        position: Position<'a>,
    ) -> Self {
        Emitter { sink: Sink::Buffer(buffer, combine, Batch { text, flush: Some(flush) }), position }
    }

    /// Adds `n` to the counter `name` of this task (see [`crate::counters`]): the job's
    /// report sums it over the accepted attempt of every task, whatever the retries.
    pub fn count(&mut self, name: &str, n: u64) {
        crate::counters::add(name, n);
    }

    /// Emits one intermediate pair.
    #[inline]
    pub fn emit(&mut self, key: K, value: V) {
        match &mut self.sink {
            Sink::Fn(f) => f(key, value),
            Sink::Buffer(buffer, combine, _) => buffer.insert(key, value, combine),
        }
    }

    /// Emits one intermediate pair whose key is given borrowed; it is turned into a `K`
    /// only if the buffer does not hold that key yet.
    #[inline]
    pub fn emit_borrowed<Q>(&mut self, key: &Q, value: V)
    where
        K: Borrow<Q> + for<'q> From<&'q Q>,
        Q: Hash + Eq + ?Sized,
    {
        match &mut self.sink {
            Sink::Fn(f) => f(K::from(key), value),
            Sink::Buffer(buffer, combine, _) => buffer.insert_borrowed(key, value, combine),
        }
    }

    /// Emits one intermediate pair with a string key (a `String`, a `CompactString`...):
    /// the fastest way to emit string keys. The key is turned into a `K` only if the
    /// buffer does not hold it yet, and keys are looked up a batch at a time, so that the
    /// cache misses of a large key set overlap. The value type needs a `Default` (every
    /// number has one): the table of short keys keeps it in its empty slots.
    #[inline]
    pub fn emit_str(&mut self, key: &str, value: V)
    where
        K: Borrow<str> + for<'q> From<&'q str>,
        V: Default,
    {
        match &mut self.sink {
            // Out of line, so that the buffer's path is small enough to be inlined into
            // the mapper's loop.
            Sink::Fn(f) => emit_to_fn(f, key, value),
            Sink::Buffer(buffer, combine, batch) => {
                if buffer.queue_str(batch.text, key, value) {
                    flush_batch(buffer, *combine, batch.flush);
                }
            }
        }
    }
}

/// Looks up a full batch of string keys, with the flush the emitter was given (the
/// combiner statically dispatched) or else through `combine`. Out of line, as
/// [`emit_to_fn`].
#[inline(never)]
fn flush_batch<K: Key, V: Value>(
    buffer: &mut MapBuffer<K, V>,
    combine: Combine<'_, K, V>,
    flush: Option<FlushFn<'_, K, V>>,
) {
    match flush {
        Some(flush) => flush(buffer),
        None => buffer.flush(combine),
    }
}
