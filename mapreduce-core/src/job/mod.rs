//! The user API: the [`Mapper`] and [`Reducer`] traits, the [`Job`] that names them, and
//! the [`JobSpec`] that says what to run them on.

use std::hash::Hash;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::shuffle::record::Compression;

mod emit;
mod output;

pub use emit::{Emitter, Position};
pub use output::{InputFormat, InvalidUtf8, Output, OutputFormat, Record, RecordSink};

/// The error type user code returns. Anything that implements `std::error::Error` converts
/// into it with `?`, and so does a `String` or `&str`.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What a key must be: serialisable (it crosses processes), totally ordered (reduce input is
/// sorted by key) and hashable (the map side combines equal keys in a hash table).
pub trait Key: Serialize + DeserializeOwned + Ord + Hash + Send + 'static {}
impl<T: Serialize + DeserializeOwned + Ord + Hash + Send + 'static> Key for T {}

/// What a value must be: serialisable, since it crosses processes.
pub trait Value: Serialize + DeserializeOwned + Send + 'static {}
impl<T: Serialize + DeserializeOwned + Send + 'static> Value for T {}

/// The map side of a job: turns one input line into any number of key/value pairs.
pub trait Mapper {
    /// The intermediate key.
    type Key: Key;
    /// The intermediate value.
    type Value: Value;

    /// Maps one input line (without its line terminator; bytes that are not UTF-8 are
    /// replaced with U+FFFD). [`Emitter::position`] says where the line lies: its file,
    /// byte offset and line number. An error fails the task attempt, naming the line as
    /// `path:line`.
    ///
    /// The default fails: a job that reads only typed records
    /// ([`InputFormat::Records`]) implements [`Mapper::map_record`] instead.
    fn map(&self, line: &str, emit: &mut Emitter<'_, Self::Key, Self::Value>) -> Result<(), BoxError> {
        let _ = (line, emit);
        Err("this job reads text but implements no Mapper::map".into())
    }

    /// Maps one typed record of a record file ([`InputFormat::Records`]: the output of a
    /// job with [`OutputFormat::Records`]). Decode it with [`Record::decode`] into the
    /// type the earlier job wrote, `(K, V)` for its reduce's [`Output::record`].
    ///
    /// The default fails: a job that reads text implements [`Mapper::map`] instead.
    fn map_record(&self, record: Record<'_>, emit: &mut Emitter<'_, Self::Key, Self::Value>) -> Result<(), BoxError> {
        let _ = (record, emit);
        Err("this job reads typed records but implements no Mapper::map_record".into())
    }

    /// Maps one whole file ([`InputFormat::WholeFiles`]): its path (as listed, absolute)
    /// and its bytes, as stored (no decompression, no UTF-8 check). The default fails.
    fn map_file(
        &self,
        path: &Path,
        bytes: &[u8],
        emit: &mut Emitter<'_, Self::Key, Self::Value>,
    ) -> Result<(), BoxError> {
        let _ = (path, bytes, emit);
        Err("this job reads whole files but implements no Mapper::map_file".into())
    }

    /// Called once per map attempt before its first record. The job value is the
    /// attempt's own (each attempt decodes its own copy from the job's fields), so state
    /// kept in it (in a `Mutex` or an atomic, `#[serde(skip)]`) is per task.
    fn map_setup(&self) -> Result<(), BoxError> {
        Ok(())
    }

    /// Called once per map attempt after its last record: may emit what the task kept
    /// (a per-task top N, say). The default emits nothing.
    fn map_finish(&self, emit: &mut Emitter<'_, Self::Key, Self::Value>) -> Result<(), BoxError> {
        let _ = emit;
        Ok(())
    }

    /// Maps a block of whole lines at once (Spark's `mapPartitions`, at a smaller scale):
    /// `lines` holds one or more lines, each ending in `\n` or `\r\n` but perhaps the
    /// last. The default calls [`Mapper::map`] on each line, without its terminator.
    ///
    /// Override it when the map function works faster on many lines together, such as a
    /// tokenizer to which a line end is one more separator; it must emit what `map` would
    /// for the same lines. A worker hands out blocks of about 64 KiB and checks the sort
    /// buffer's budget after each. When it fails, the worker maps the block's lines one by
    /// one (dropping what they emit) to find the line that fails and name it.
    ///
    /// [`Emitter::position`] is the block's first line; the default moves it on to each
    /// line before calling `map` (an override that calls `map` itself does the same with
    /// [`Emitter::advance`]).
    fn map_lines(&self, lines: &str, emit: &mut Emitter<'_, Self::Key, Self::Value>) -> Result<(), BoxError> {
        for raw in lines.split_inclusive('\n') {
            let line = raw.strip_suffix('\n').map_or(raw, |l| l.strip_suffix('\r').unwrap_or(l));
            self.map(line, emit)?;
            emit.advance(raw.len());
        }
        Ok(())
    }
}

/// The reduce side of a job, plus its optional combiner and its partitioner.
pub trait Reducer: Mapper {
    /// Reduces all values of one key, in key order. Values come in no particular order.
    /// Write results with [`Output::emit`] or [`Output::write_line`].
    fn reduce(
        &self,
        key: &Self::Key,
        values: &mut dyn Iterator<Item = Self::Value>,
        out: &mut Output<'_>,
    ) -> Result<(), BoxError>;

    /// The combiner: folds `value` into `acc`, two values of the same `key`, on the map side,
    /// so that fewer records are written and shuffled (word count sums its counts here).
    ///
    /// Return `None` once `value` is folded in, or hand it back with `Some(value)` to keep
    /// both. The default keeps every value: no combiner. A combiner must be associative and
    /// commutative and must not change what `reduce` computes; it may run zero, one or many
    /// times for a key.
    fn combine(&self, key: &Self::Key, acc: &mut Self::Value, value: Self::Value) -> Option<Self::Value> {
        let _ = (key, acc);
        Some(value)
    }

    /// The partitioner: which of the `reducers` partitions `key` goes to. The default is
    /// [`stable_partition`], a hash of the key's serialised bytes that is the same in every
    /// process and every Rust release.
    fn partition(&self, key: &Self::Key, reducers: u32) -> u32 {
        stable_partition(key, reducers)
    }

    /// The grouping comparator (secondary sort): whether `a` and `b`, two keys next to
    /// each other in sort order, go to the same call of [`Reducer::reduce`]. The default
    /// groups equal keys only.
    ///
    /// To see a key's values in an order of your choosing, put the sort field in the key
    /// (`(user, time)`) and in the value, group by the first part, and partition by it
    /// too: `reduce` is then called once per user, with the first key of the group and
    /// every value of the group in key order, so sorted by time. It must agree with the
    /// key order: keys that group together are adjacent.
    ///
    /// ```
    /// # use mapreduce_core::*;
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct Sessions;
    /// # impl Mapper for Sessions { type Key = (String, u64); type Value = u64;
    /// #   fn map(&self, _: &str, _: &mut Emitter<'_, (String, u64), u64>) -> Result<(), BoxError> { Ok(()) } }
    /// impl Reducer for Sessions {
    ///     fn reduce(&self, key: &(String, u64), times: &mut dyn Iterator<Item = u64>, out: &mut Output<'_>)
    ///         -> Result<(), BoxError> {
    ///         // One call per user, its times in increasing order.
    ///         let times: Vec<String> = times.map(|t| t.to_string()).collect();
    ///         out.emit(&key.0, times.join(","))?;
    ///         Ok(())
    ///     }
    ///     fn group_eq(&self, a: &(String, u64), b: &(String, u64)) -> bool {
    ///         a.0 == b.0
    ///     }
    ///     fn partition(&self, key: &(String, u64), reducers: u32) -> u32 {
    ///         stable_partition(&key.0, reducers)
    ///     }
    /// }
    /// ```
    fn group_eq(&self, a: &Self::Key, b: &Self::Key) -> bool {
        a == b
    }

    /// Called once per reduce attempt before its first key (see [`Mapper::map_setup`] for
    /// where per-task state lives).
    fn reduce_setup(&self) -> Result<(), BoxError> {
        Ok(())
    }

    /// Called once per reduce attempt after its last key: writes what the task kept
    /// across keys. The default writes nothing.
    fn reduce_finish(&self, out: &mut Output<'_>) -> Result<(), BoxError> {
        let _ = out;
        Ok(())
    }
}

/// A whole job type: a serde value (its fields are the job's parameters, shipped to the
/// workers with every task) that maps and reduces, registered on workers under [`Job::NAME`].
pub trait Job: Reducer + Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The name workers know this job type by. Unique within a worker's registry.
    const NAME: &'static str;
}

/// 64-bit FNV-1a over `bytes`: a fixed, documented function, so partitions never depend on
/// the process, the platform or the Rust release.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h = Fnv::new();
    h.update(bytes);
    h.finish()
}

/// 64-bit FNV-1a as a byte sink, so a key is hashed as postcard writes it: no buffer.
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    fn update(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        // FNV's low bits mix poorly; fold the high half in before a modulo.
        self.0 ^ (self.0 >> 32)
    }
}

impl Write for Fnv {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The default partitioner: [`stable_hash`] of the key's postcard encoding, modulo
/// `reducers`. Panics if `reducers` is zero (a map-only job never partitions).
pub fn stable_partition<K: Serialize + ?Sized>(key: &K, reducers: u32) -> u32 {
    assert!(reducers > 0, "stable_partition needs at least one reducer");
    // Encoded on the stack and hashed in one loop; streamed into the hash if it is larger
    // (the same bytes, so the same hash).
    let mut buf = [0u8; 64];
    let h = match postcard::to_slice(key, &mut buf) {
        Ok(bytes) => stable_hash(bytes),
        Err(postcard::Error::SerializeBufferFull) => {
            let mut h = Fnv::new();
            match postcard::to_io(key, &mut h) {
                Ok(_) => h.finish(),
                Err(_) => 0,
            }
        }
        // A key that cannot be serialised cannot be shuffled either; the record writer
        // reports it with its task. Send it somewhere deterministic meanwhile.
        Err(_) => 0,
    };
    (h % u64::from(reducers)) as u32
}

/// Default size of an input shard: 128 MiB, the default block size of HDFS and so the
/// split size of Hadoop jobs (and Spark's `maxPartitionBytes`).
pub const DEFAULT_SHARD_SIZE: u64 = 128 << 20;
/// Default memory budget of a map task's sort buffer: 64 MiB.
pub const DEFAULT_SORT_BUFFER: u64 = 64 << 20;

/// What to run a job on: the job value, its inputs and output, and its shape.
#[derive(Debug, Clone)]
pub struct JobSpec<J> {
    /// The job value; its fields travel to the workers with every task.
    pub job: J,
    /// Input files or directories (directories are read recursively, in name order; files
    /// whose name starts with `.` or `_` are skipped, as Hadoop does).
    pub inputs: Vec<PathBuf>,
    /// The output directory. It must not exist or be empty.
    pub output: PathBuf,
    /// Number of reduce tasks, and so of output files `part-00000`...; 0 for a map-only
    /// job, whose map output is the job's output: one file per map task, `part-m-00000`...,
    /// each pair written as it was emitted (no sort, no combiner), committed exactly once
    /// like reduce output.
    pub reducers: u32,
    /// Target size of an input shard in bytes (one map task each): at least 1. An input
    /// smaller than a shard per worker is cut finer, down to 4 MiB shards, so that every
    /// worker gets a task ([`crate::shard::split_size`], Spark's rule).
    pub shard_size: u64,
    /// Memory budget of a map task's sort buffer in bytes, before it spills to disk.
    pub sort_buffer_bytes: u64,
    /// How map outputs and spills store their blocks: [`Compression::Lz4`] by default.
    pub compression: Compression,
    /// The longest input line a map reads, in bytes before its `\n`:
    /// [`DEFAULT_MAX_LINE_BYTES`] (64 MiB) by default, within
    /// [`MIN_MAX_LINE_BYTES`]`..=`[`MAX_MAX_LINE_BYTES`]. A map attempt never buffers more
    /// than this (plus a block) of input, so a file without newlines cannot exhaust a
    /// worker's memory. A longer line fails the map naming its file and offset, unless
    /// [`JobSpec::skip_long_lines`] is set.
    pub max_line_bytes: u64,
    /// Skip (and count) lines longer than `max_line_bytes` instead of failing: off by
    /// default.
    pub skip_long_lines: bool,
    /// Whether a file may be cut into several shards (on by default). Off, each file is
    /// read whole by one task (small files still share a shard), so every line's number is
    /// known ([`Position::line`]). Compressed files and record files are never cut.
    pub split_files: bool,
    /// How the inputs are read: text lines by default.
    pub input_format: InputFormat,
    /// How the output is written: text by default.
    pub output_format: OutputFormat,
    /// What to do with input bytes that are not UTF-8: replace them by default.
    pub invalid_utf8: InvalidUtf8,
}

impl<J: Job> JobSpec<J> {
    /// A spec with one reducer and the default shard size and sort buffer.
    pub fn new(job: J, inputs: impl IntoIterator<Item = impl Into<PathBuf>>, output: impl Into<PathBuf>) -> Self {
        JobSpec {
            job,
            inputs: inputs.into_iter().map(Into::into).collect(),
            output: output.into(),
            reducers: 1,
            shard_size: DEFAULT_SHARD_SIZE,
            sort_buffer_bytes: DEFAULT_SORT_BUFFER,
            compression: Compression::default(),
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
            skip_long_lines: false,
            split_files: true,
            input_format: InputFormat::Text,
            output_format: OutputFormat::Text,
            invalid_utf8: InvalidUtf8::Replace,
        }
    }

    /// Sets whether input files may be cut into several shards (see
    /// [`JobSpec::split_files`]).
    pub fn split_files(mut self, split: bool) -> Self {
        self.split_files = split;
        self
    }

    /// Sets how the inputs are read.
    pub fn input_format(mut self, format: InputFormat) -> Self {
        self.input_format = format;
        self
    }

    /// Sets how the output is written.
    pub fn output_format(mut self, format: OutputFormat) -> Self {
        self.output_format = format;
        self
    }

    /// Sets what a map does with bytes that are not UTF-8.
    pub fn invalid_utf8(mut self, policy: InvalidUtf8) -> Self {
        self.invalid_utf8 = policy;
        self
    }

    /// Sets the number of reducers (0: a map-only job).
    pub fn reducers(mut self, reducers: u32) -> Self {
        self.reducers = reducers;
        self
    }

    /// Sets the target shard size in bytes.
    pub fn shard_size(mut self, bytes: u64) -> Self {
        self.shard_size = bytes;
        self
    }

    /// Sets the sort buffer budget of a map task in bytes.
    pub fn sort_buffer_bytes(mut self, bytes: u64) -> Self {
        self.sort_buffer_bytes = bytes;
        self
    }

    /// Sets how intermediate files store their blocks (LZ4 by default; it pays for map
    /// output that compresses well and costs next to nothing on output that does not).
    pub fn compression(mut self, compression: Compression) -> Self {
        self.compression = compression;
        self
    }

    /// Sets the longest input line in bytes (see [`JobSpec::max_line_bytes`]).
    pub fn max_line_bytes(mut self, bytes: u64) -> Self {
        self.max_line_bytes = bytes;
        self
    }

    /// Whether lines longer than the limit are skipped and counted rather than an error.
    pub fn skip_long_lines(mut self, skip: bool) -> Self {
        self.skip_long_lines = skip;
        self
    }

    /// Checks the parts that need no I/O: at least one input, a positive shard
    /// size, a sort buffer of at least 64 KiB and a line limit in range.
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.inputs.is_empty() {
            return Err(SpecError::NoInput);
        }
        if self.reducers > MAX_REDUCERS {
            return Err(SpecError::TooManyReducers(self.reducers));
        }
        if self.shard_size == 0 {
            return Err(SpecError::ZeroShardSize);
        }
        if self.sort_buffer_bytes < MIN_SORT_BUFFER {
            return Err(SpecError::SortBufferTooSmall(self.sort_buffer_bytes));
        }
        if self.sort_buffer_bytes > MAX_SORT_BUFFER {
            return Err(SpecError::SortBufferTooLarge(self.sort_buffer_bytes));
        }
        if !(MIN_MAX_LINE_BYTES..=MAX_MAX_LINE_BYTES).contains(&self.max_line_bytes) {
            return Err(SpecError::MaxLineOutOfRange(self.max_line_bytes));
        }
        Ok(())
    }
}

/// The smallest sort buffer a job may ask for.
pub const MIN_SORT_BUFFER: u64 = 64 << 10;
/// The largest sort buffer a job may ask for (64 GiB).
pub const MAX_SORT_BUFFER: u64 = 64 << 30;
/// The most reducers a job may have: 2^20. A map reply names one range per partition per
/// run, at most 20 bytes each (two varints), so one run of 2^20 ranges takes at most
/// 20 MiB of a 64 MiB message; a worker refuses to answer a reply that would not fit.
pub const MAX_REDUCERS: u32 = 1 << 20;
/// Default of [`JobSpec::max_line_bytes`]: 64 MiB.
pub const DEFAULT_MAX_LINE_BYTES: u64 = crate::shard::DEFAULT_MAX_LINE as u64;
/// The smallest line limit a job may set: 1 KiB.
pub const MIN_MAX_LINE_BYTES: u64 = 1 << 10;
/// The largest line limit a job may set: the largest record the intermediate format holds
/// ([`crate::shuffle::record::MAX_RECORD_BYTES`], 240 MiB), since a line may become a key.
pub const MAX_MAX_LINE_BYTES: u64 = crate::shuffle::record::MAX_RECORD_BYTES as u64;

/// A [`JobSpec`] that cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// No input path was given.
    #[error("job has no input path")]
    NoInput,
    /// `shard_size` is zero.
    #[error("shard size must be at least 1 byte, got 0")]
    ZeroShardSize,
    /// `sort_buffer_bytes` is below [`MIN_SORT_BUFFER`].
    #[error("sort buffer of {0} bytes is below the minimum of 65536")]
    SortBufferTooSmall(u64),
    /// `sort_buffer_bytes` is above [`MAX_SORT_BUFFER`].
    #[error("sort buffer of {0} bytes is above the maximum of 64 GiB")]
    SortBufferTooLarge(u64),
    /// `reducers` is above [`MAX_REDUCERS`].
    #[error("{0} reducers is more than the maximum of 1048576")]
    TooManyReducers(u32),
    /// `max_line_bytes` is outside [`MIN_MAX_LINE_BYTES`]`..=`[`MAX_MAX_LINE_BYTES`].
    #[error("max_line_bytes of {0} is outside 1024..=251658240 (1 KiB to the largest record, 240 MiB)")]
    MaxLineOutOfRange(u64),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shuffle::buffer::MapBuffer;

    #[test]
    fn stable_hash_is_fnv1a_with_fold() {
        // Fixed vectors: if these change, partitions of existing outputs change.
        assert_eq!(stable_hash(b""), 0xcbf2_9ce4_8422_2325 ^ (0xcbf2_9ce4_8422_2325u64 >> 32));
        let h = 0xaf63_dc4c_8601_ec8cu64; // FNV-1a("a")
        assert_eq!(stable_hash(b"a"), h ^ (h >> 32));
    }

    #[test]
    fn stable_partition_is_fixed_and_in_range() {
        // Pinned values: the partition of a key must never change between releases.
        let got: Vec<u32> = ["the", "quick", "brown", "fox", ""].iter().map(|w| stable_partition(*w, 7)).collect();
        let again: Vec<u32> = ["the", "quick", "brown", "fox", ""].iter().map(|w| stable_partition(*w, 7)).collect();
        assert_eq!(got, again);
        assert!(got.iter().all(|&p| p < 7));
        let mut bytes = vec![3u8];
        bytes.extend_from_slice(b"the");
        assert_eq!(stable_partition("the", 1000), (stable_hash(&bytes) % 1000) as u32);
        // Keys that fill the stack buffer, overflow it by a byte, or are far larger (hashed
        // as they stream): the same function of the encoding.
        for len in [62, 63, 64, 300] {
            let key = "x".repeat(len);
            let bytes = postcard::to_allocvec(key.as_str()).unwrap();
            assert_eq!(stable_partition(key.as_str(), 1000), (stable_hash(&bytes) % 1000) as u32, "{len} bytes");
        }
    }

    #[derive(Serialize, serde::Deserialize)]
    struct Nop;

    impl Mapper for Nop {
        type Key = String;
        type Value = u64;
        fn map(&self, _line: &str, _emit: &mut Emitter<'_, String, u64>) -> Result<(), BoxError> {
            Ok(())
        }
    }

    impl Reducer for Nop {
        fn reduce(&self, _: &String, _: &mut dyn Iterator<Item = u64>, _: &mut Output<'_>) -> Result<(), BoxError> {
            Ok(())
        }
    }

    impl Job for Nop {
        const NAME: &'static str = "nop";
    }

    #[test]
    fn validate_rejects_too_many_reducers_and_too_large_a_sort_buffer() {
        let spec = || JobSpec::new(Nop, ["in"], "out");
        let cases = [
            (spec().reducers(MAX_REDUCERS), Ok(())),
            (spec().reducers(MAX_REDUCERS + 1), Err(SpecError::TooManyReducers(MAX_REDUCERS + 1))),
            (spec().reducers(u32::MAX), Err(SpecError::TooManyReducers(u32::MAX))),
            (spec().sort_buffer_bytes(MAX_SORT_BUFFER), Ok(())),
            (spec().sort_buffer_bytes(MAX_SORT_BUFFER + 1), Err(SpecError::SortBufferTooLarge(MAX_SORT_BUFFER + 1))),
            (spec().sort_buffer_bytes(u64::MAX), Err(SpecError::SortBufferTooLarge(u64::MAX))),
            // The lower bounds still hold.
            (spec().reducers(0), Ok(())),
            (spec().sort_buffer_bytes(MIN_SORT_BUFFER - 1), Err(SpecError::SortBufferTooSmall(MIN_SORT_BUFFER - 1))),
            (spec().max_line_bytes(MIN_MAX_LINE_BYTES), Ok(())),
            (spec().max_line_bytes(MAX_MAX_LINE_BYTES), Ok(())),
            (spec().max_line_bytes(MIN_MAX_LINE_BYTES - 1), Err(SpecError::MaxLineOutOfRange(MIN_MAX_LINE_BYTES - 1))),
            (spec().max_line_bytes(MAX_MAX_LINE_BYTES + 1), Err(SpecError::MaxLineOutOfRange(MAX_MAX_LINE_BYTES + 1))),
            (spec().max_line_bytes(0), Err(SpecError::MaxLineOutOfRange(0))),
        ];
        for (spec, want) in cases {
            assert_eq!(spec.validate(), want, "reducers {}, sort buffer {}", spec.reducers, spec.sort_buffer_bytes);
        }
        assert_eq!(MAX_SORT_BUFFER, 64 << 30);
        assert_eq!((MIN_MAX_LINE_BYTES, MAX_MAX_LINE_BYTES, spec().max_line_bytes), (1024, 251_658_240, 64 << 20));
        assert_eq!(
            SpecError::SortBufferTooLarge(MAX_SORT_BUFFER + 1).to_string(),
            "sort buffer of 68719476737 bytes is above the maximum of 64 GiB"
        );
        assert_eq!(
            SpecError::TooManyReducers(MAX_REDUCERS + 1).to_string(),
            format!("{} reducers is more than the maximum of {MAX_REDUCERS}", MAX_REDUCERS + 1)
        );
    }

    #[test]
    fn emit_str_reaches_every_kind_of_sink() {
        // A plain sink gets owned keys.
        let mut got = Vec::new();
        let mut sink = |k: String, v: u64| got.push((k, v));
        let mut emit = Emitter::new(&mut sink);
        emit.emit_str("a", 1);
        emit.emit_str("b", 2);
        assert_eq!(got, vec![("a".to_string(), 1), ("b".to_string(), 2)]);

        // A buffer, flushed through the combiner (no flush function) and by a worker's.
        let add = |_: &String, acc: &mut u64, v: u64| {
            *acc += v;
            None
        };
        let text = "one two three four five six seven eight nine ten ".repeat(10);
        let words: Vec<&str> = text.split(' ').filter(|w| !w.is_empty()).collect();
        let flushes = std::cell::Cell::new(0);
        let flush = |b: &mut MapBuffer<String, u64>| {
            flushes.set(flushes.get() + 1);
            b.flush(add);
        };
        let mut buffer = MapBuffer::new();
        for w in &words {
            Emitter::buffered(&mut buffer, &add).emit_str(w, 1);
        }
        for w in &words {
            Emitter::buffered_in(&mut buffer, &add, &flush, &text, Position::new("", 0, None)).emit_str(w, 2);
        }
        assert!(flushes.get() >= 1, "a full batch goes to the worker's flush");
        let got = buffer.drain_sorted(add, |_| 0);
        assert_eq!(got.len(), 10);
        assert!(got.iter().all(|(_, _, n)| *n == 30), "{got:?}");
    }

    #[test]
    fn stable_partition_spreads_keys() {
        let mut counts = [0u32; 8];
        for i in 0..8000 {
            counts[stable_partition(&format!("word{i}"), 8) as usize] += 1;
        }
        assert!(counts.iter().all(|&c| (800..1200).contains(&c)), "{counts:?}");
    }
}
