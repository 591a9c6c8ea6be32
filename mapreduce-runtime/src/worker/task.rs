//! Running map and reduce attempts: the blocking data path of a worker.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Take, Write};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use mapreduce_core::buffer::{Drained, MapBuffer};
use mapreduce_core::merge::{Merge, MergeError};
use mapreduce_core::record::{FormatError, RecordReader, RecordWriter};
use mapreduce_core::scheduler::PartitionFile;
use mapreduce_core::shard::{Block, LineReader, Segment};
use mapreduce_core::{BoxError, Compression, Emitter, Job, Output};
use tempfile::NamedTempFile;

use crate::error::{TaskError, panic_message};
use crate::storage;

const WRITE_BUFFER: usize = 256 << 10;
const MERGE_READ_BUFFER: usize = 64 << 10;
/// Most files a reduce merges at once (Hadoop's `io.sort.factor`), so a reduce over any
/// number of map outputs holds a bounded number of files and buffers.
pub(crate) const MERGE_FANIN: usize = 100;

/// A validated map request.
#[derive(Debug)]
pub(crate) struct MapTask {
    pub(crate) task: u32,
    pub(crate) attempt: u64,
    pub(crate) segments: Vec<Segment>,
    pub(crate) work_dir: PathBuf,
    pub(crate) reducers: u32,
    pub(crate) sort_buffer: u64,
    /// How the attempt's output and spills store their blocks.
    pub(crate) compression: Compression,
    /// Set when the master abandons the attempt: stop at the next block of input.
    pub(crate) cancelled: Arc<AtomicBool>,
}

/// What a map attempt wrote.
#[derive(Debug)]
pub(crate) struct MapResult {
    pub(crate) files: Vec<PartitionFile>,
    pub(crate) input_records: u64,
}

/// A validated reduce request.
#[derive(Debug)]
pub(crate) struct ReduceTask {
    pub(crate) attempt: u64,
    pub(crate) partition: u32,
    pub(crate) inputs: Vec<PartitionFile>,
    pub(crate) work_dir: PathBuf,
    /// Most files merged at once.
    pub(crate) fanin: usize,
    /// How the runs of merge passes store their blocks.
    pub(crate) compression: Compression,
    /// Set when the master abandons the attempt: stop at the next key.
    pub(crate) cancelled: Arc<AtomicBool>,
}

/// What a reduce attempt wrote.
#[derive(Debug)]
pub(crate) struct ReduceResult {
    pub(crate) path: String,
    pub(crate) records: u64,
    pub(crate) bytes: u64,
}

/// Fails with [`TaskError::Cancelled`] once the master abandoned the attempt.
fn check(cancelled: &AtomicBool) -> Result<(), TaskError> {
    if cancelled.load(Ordering::Relaxed) { Err(TaskError::Cancelled) } else { Ok(()) }
}
/// A drained sort buffer: `(partition, key, value)` sorted by partition, then key.
type Sorted<J> = Drained<<J as mapreduce_core::Mapper>::Key, <J as mapreduce_core::Mapper>::Value>;
/// Open merge inputs and their names for errors.
type Opened<K, V> = (Vec<Reader<K, V>>, Vec<PathBuf>);

/// One spill of the sort buffer: an anonymous temporary file (deleted when dropped)
/// holding one record stream per partition, back to back, with their byte ranges. One
/// file per spill, not per partition, so the open files do not grow with the reducers.
struct Spill {
    file: File,
    ranges: Vec<(u64, u64)>,
}

/// Reads `[pos, end)` of a file with positioned reads, so that readers of several ranges
/// of one file do not disturb each other.
struct RangeReader<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
}

impl std::io::Read for RangeReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = (self.end - self.pos).min(buf.len() as u64) as usize;
        if left == 0 {
            return Ok(0);
        }
        let n = read_at(self.file, &mut buf[..left], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

#[cfg(unix)]
fn read_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    std::os::unix::fs::FileExt::read_at(file, buf, offset)
}

#[cfg(windows)]
fn read_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    std::os::windows::fs::FileExt::seek_read(file, buf, offset)
}

fn write_err(path: &Path) -> impl Fn(std::io::Error) -> TaskError + '_ {
    move |source| TaskError::Write { path: path.to_path_buf(), source }
}

fn user_error(at: String, e: BoxError) -> TaskError {
    TaskError::User { at, message: e.to_string() }
}

/// Input handed to [`mapreduce_core::Mapper::map_lines`] at once, about; the sort buffer's
/// budget is checked after each block.
const MAP_BLOCK: usize = 64 << 10;

/// The lines of a block of whole lines.
fn line_count(text: &str) -> u64 {
    // Sums of at most 255 bytes' worth fit a `u8`, and LLVM turns such a sum of compares
    // into vector compares and adds, 32 bytes at a time.
    let newlines: u64 =
        text.as_bytes().chunks(255).map(|c| u64::from(c.iter().fold(0u8, |n, &b| n + u8::from(b == b'\n')))).sum();
    newlines + u64::from(!text.is_empty() && !text.ends_with('\n'))
}

/// The error of a block whose map failed with `result`, naming the first line that fails
/// on its own (mapped again, what it emits dropped), or else the block's first line.
fn block_failure<J: Job>(
    job: &J,
    name: &str,
    path: &str,
    block: &Block<'_>,
    result: std::thread::Result<Result<(), BoxError>>,
) -> TaskError {
    let failure = |offset: u64, result: std::thread::Result<Result<(), BoxError>>| {
        let at = format!("{name}, record at {path}:{offset}");
        match result {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(user_error(at, e)),
            Err(payload) => Some(TaskError::Panic { at, message: panic_message(&*payload) }),
        }
    };
    for (offset, line) in block.lines() {
        let alone = catch_unwind(AssertUnwindSafe(|| job.map(line, &mut Emitter::new(&mut |_, _| {}))));
        if let Some(e) = failure(offset, alone) {
            return e;
        }
    }
    let start = block.lines().next().map_or(0, |(offset, _)| offset);
    failure(start, result).unwrap_or_else(|| TaskError::User {
        at: format!("{name}, records at {path}:{start}"),
        message: "map_lines failed".into(),
    })
}

/// Runs one map attempt: reads the shard's lines, maps them into the combining buffer,
/// spills sorted runs when the buffer passes its budget, and writes the attempt's output
/// file: one sorted record stream per partition, or, when the buffer spilled without
/// combining anything (a sort, say), one run of such streams per spill, which the reduce
/// side merges (merging them here would read and write every record once more for
/// nothing).
pub(crate) fn run_map<J: Job>(job: &J, t: &MapTask) -> Result<MapResult, TaskError> {
    let name = format!("map-{:05}", t.task);
    let mut buffer = MapBuffer::<J::Key, J::Value>::new();
    let mut spills: Vec<Spill> = Vec::new();
    let mut runs: Option<MapOutput> = None;
    let mut input_records = 0u64;
    for seg in &t.segments {
        let path = Path::new(&seg.path);
        let input_err = |source| TaskError::Input { path: path.to_path_buf(), source };
        let mut file = File::open(path).map_err(input_err)?;
        file.seek(SeekFrom::Start(seg.start.saturating_sub(1))).map_err(input_err)?;
        let mut reader = LineReader::with_block_size(file, seg.start, seg.end, MAP_BLOCK);
        while let Some(block) = reader.next_block().map_err(input_err)? {
            check(&t.cancelled)?;
            let text = block.text();
            input_records += line_count(text);
            let combine = |k: &J::Key, acc: &mut J::Value, v| job.combine(k, acc, v);
            // The job's combiner called directly for each record of a batch.
            let flush = |b: &mut MapBuffer<J::Key, J::Value>| b.flush(combine);
            let result = catch_unwind(AssertUnwindSafe(|| {
                job.map_lines(text, &mut Emitter::buffered_in(&mut buffer, &combine, &flush, text))
            }));
            if !matches!(result, Ok(Ok(()))) {
                return Err(block_failure(job, &name, &seg.path, &block, result));
            }
            if buffer.bytes() >= t.sort_buffer {
                match &mut runs {
                    Some(out) => write_run(job, &mut buffer, t, &name, out)?,
                    None if spills.is_empty() && !buffer.combines() => {
                        let mut out = MapOutput::create(t)?;
                        write_run(job, &mut buffer, t, &name, &mut out)?;
                        runs = Some(out);
                    }
                    None => spills.push(spill(job, &mut buffer, t, &name)?),
                }
            }
        }
    }
    let files = match runs {
        Some(mut out) => {
            if !buffer.is_empty() {
                write_run(job, &mut buffer, t, &name, &mut out)?;
            }
            out.persist(t)?
        }
        None if spills.is_empty() => {
            let sorted = drain(job, &mut buffer, t.reducers, &name)?;
            let mut out = MapOutput::create(t)?;
            write_sorted(t, &mut out, sorted)?;
            out.persist(t)?
        }
        None => {
            if !buffer.is_empty() {
                spills.push(spill(job, &mut buffer, t, &name)?);
            }
            merge_spills(job, t, spills)?
        }
    };
    Ok(MapResult { files, input_records })
}

/// Drains the buffer as one more run of the attempt's output.
fn write_run<J: Job>(
    job: &J,
    buffer: &mut MapBuffer<J::Key, J::Value>,
    t: &MapTask,
    name: &str,
    out: &mut MapOutput,
) -> Result<(), TaskError> {
    let started = std::time::Instant::now();
    let sorted = drain(job, buffer, t.reducers, name)?;
    let (records, drained) = (sorted.len(), started.elapsed());
    write_sorted(t, out, sorted)?;
    tracing::debug!(
        task = name,
        runs = out.ranges.len() / t.reducers as usize,
        records,
        drain_ms = drained.as_millis() as u64,
        write_ms = (started.elapsed() - drained).as_millis() as u64,
        "wrote a run of the sort buffer"
    );
    Ok(())
}

/// Empties the buffer sorted by (partition, key), checking the partitioner's answers.
fn drain<J: Job>(
    job: &J,
    buffer: &mut MapBuffer<J::Key, J::Value>,
    reducers: u32,
    name: &str,
) -> Result<Sorted<J>, TaskError> {
    let mut bad = None;
    let combine = |k: &J::Key, acc: &mut J::Value, v| job.combine(k, acc, v);
    let sorted = buffer.drain_sorted_iter(combine, |k| {
        let p = job.partition(k, reducers);
        if p >= reducers {
            bad = Some(p);
        }
        p
    });
    match bad {
        Some(p) => Err(TaskError::User {
            at: name.to_string(),
            message: format!("partitioner returned partition {p} for {reducers} reducers"),
        }),
        None => Ok(sorted),
    }
}

/// Writes one record stream per partition, back to back, into `out`; `each` fills
/// partition `p`'s stream. Returns each partition's `(offset, bytes, records)`.
fn write_partitions<W: Write>(
    out: &mut W,
    t: &MapTask,
    mut each: impl FnMut(u32, &mut RecordWriter<&mut W>) -> Result<(), TaskError>,
) -> Result<Vec<(u64, u64, u64)>, TaskError> {
    let werr = write_err(&t.work_dir);
    let mut ranges = Vec::with_capacity(t.reducers as usize);
    let mut offset = 0;
    for p in 0..t.reducers {
        check(&t.cancelled)?;
        let mut w = RecordWriter::with_compression(&mut *out, t.compression).map_err(&werr)?;
        each(p, &mut w)?;
        let (_, records, bytes) = w.finish().map_err(&werr)?;
        ranges.push((offset, bytes, records));
        offset += bytes;
    }
    Ok(ranges)
}

fn spill<J: Job>(
    job: &J,
    buffer: &mut MapBuffer<J::Key, J::Value>,
    t: &MapTask,
    name: &str,
) -> Result<Spill, TaskError> {
    let sorted = drain(job, buffer, t.reducers, name)?;
    let werr = write_err(&t.work_dir);
    let file = tempfile::tempfile_in(&t.work_dir).map_err(&werr)?;
    let mut out = BufWriter::with_capacity(WRITE_BUFFER, file);
    let mut records = sorted.peekable();
    let ranges = write_partitions(&mut out, t, |p, w| {
        while let Some((_, k, v)) = records.next_if(|r| r.0 == p) {
            w.write(&k, &v).map_err(|source| TaskError::Intermediate { path: t.work_dir.clone(), source })?;
        }
        Ok(())
    })?;
    let file = out.into_inner().map_err(|e| werr(e.into_error()))?;
    tracing::debug!(task = name, spill_bytes = ranges.iter().map(|r| r.1).sum::<u64>(), "spilled sort buffer");
    Ok(Spill { file, ranges: ranges.into_iter().map(|(offset, bytes, _)| (offset, bytes)).collect() })
}

/// A map attempt's output file while it is written, under a temporary name: runs of one
/// record stream per partition, back to back. Renamed to its attempt-unique name at the
/// end: one file per map attempt, whatever R is.
struct MapOutput {
    path: PathBuf,
    out: BufWriter<NamedTempFile>,
    /// `(offset, bytes, records)` of every stream written, run after run.
    ranges: Vec<(u64, u64, u64)>,
    offset: u64,
}

impl MapOutput {
    fn create(t: &MapTask) -> Result<MapOutput, TaskError> {
        let path = t.work_dir.join(storage::map_file_name(t.task, t.attempt));
        let tmp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(&t.work_dir).map_err(write_err(&path))?;
        Ok(MapOutput { path, out: BufWriter::with_capacity(WRITE_BUFFER, tmp), ranges: Vec::new(), offset: 0 })
    }

    /// Writes one run: `each` fills partition `p`'s stream, for every partition in order.
    fn run(
        &mut self,
        t: &MapTask,
        each: impl FnMut(u32, &mut RecordWriter<&mut BufWriter<NamedTempFile>>) -> Result<(), TaskError>,
    ) -> Result<(), TaskError> {
        for (offset, bytes, records) in write_partitions(&mut self.out, t, each)? {
            self.ranges.push((self.offset + offset, bytes, records));
        }
        self.offset = self.ranges.last().map_or(0, |&(offset, bytes, _)| offset + bytes);
        Ok(())
    }

    /// Renames the file to its attempt-unique name: the ranges, run after run, each run
    /// one range per partition in order.
    fn persist(self, t: &MapTask) -> Result<Vec<PartitionFile>, TaskError> {
        let werr = write_err(&self.path);
        let tmp = self.out.into_inner().map_err(|e| werr(e.into_error()))?;
        tmp.persist_noclobber(&self.path).map_err(|e| werr(e.error))?;
        let path = self.path.to_string_lossy().into_owned();
        Ok(self
            .ranges
            .into_iter()
            .enumerate()
            .map(|(i, (offset, bytes, records))| PartitionFile {
                partition: (i % t.reducers as usize) as u32,
                path: path.clone(),
                offset,
                bytes,
                records,
            })
            .collect())
    }
}

fn format_error(t: &MapTask) -> impl Fn(FormatError) -> TaskError + '_ {
    move |source| TaskError::Intermediate { path: t.work_dir.clone(), source }
}

/// Merges the spills partition by partition, combining equal keys, into the output file.
fn merge_spills<J: Job>(job: &J, t: &MapTask, spills: Vec<Spill>) -> Result<Vec<PartitionFile>, TaskError> {
    let spill_err = |e: MergeError<FormatError>| match e {
        MergeError::Source { error, .. } => TaskError::Intermediate { path: t.work_dir.clone(), source: error },
        MergeError::Unsorted { .. } => TaskError::Intermediate {
            path: t.work_dir.clone(),
            source: FormatError::Corrupt { offset: 0, what: "spill not sorted" },
        },
    };
    let mut out = MapOutput::create(t)?;
    out.run(t, |p, w| {
        let readers: Vec<RecordReader<_, J::Key, J::Value>> = spills
            .iter()
            .map(|s| {
                let (pos, len) = s.ranges[p as usize];
                let range = RangeReader { file: &s.file, pos, end: pos + len };
                RecordReader::new(BufReader::with_capacity(MERGE_READ_BUFFER, range))
            })
            .collect();
        let mut merge = Merge::new(readers).map_err(spill_err)?;
        let mut current: Option<(J::Key, J::Value)> = None;
        while let Some((k, v)) = merge.next().map_err(spill_err)? {
            match &mut current {
                Some((ck, acc)) if *ck == k => {
                    if let Some(v) = job.combine(ck, acc, v) {
                        w.write(ck, acc).map_err(format_error(t))?;
                        *acc = v;
                    }
                }
                _ => {
                    if let Some((ck, acc)) = current.replace((k, v)) {
                        w.write(&ck, &acc).map_err(format_error(t))?;
                    }
                }
            }
        }
        if let Some((ck, acc)) = current {
            w.write(&ck, &acc).map_err(format_error(t))?;
        }
        Ok(())
    })?;
    out.persist(t)
}

/// Writes drained records, sorted by partition and key, as one run of `out`.
fn write_sorted<K: serde::Serialize, V: serde::Serialize>(
    t: &MapTask,
    out: &mut MapOutput,
    sorted: impl Iterator<Item = (u32, K, V)>,
) -> Result<(), TaskError> {
    let mut sorted = sorted.peekable();
    out.run(t, |p, w| {
        while let Some((_, k, v)) = sorted.next_if(|r| r.0 == p) {
            w.write(&k, &v).map_err(format_error(t))?;
        }
        Ok(())
    })
}

/// An input of a reduce merge: a map output, or a run of an earlier merge pass.
enum Input {
    /// `bytes` bytes at `offset` of a map output file.
    Range { path: PathBuf, offset: u64, bytes: u64 },
    /// A whole temporary file, positioned at its start.
    Run(File),
}

impl Input {
    fn open(self) -> Result<(Take<File>, PathBuf), TaskError> {
        match self {
            Input::Range { path, offset, bytes } => {
                let opened = File::open(&path).and_then(|mut f| f.seek(SeekFrom::Start(offset)).map(|_| f));
                match opened {
                    Ok(f) => Ok((f.take(bytes), path)),
                    Err(e) => Err(TaskError::Intermediate { path, source: FormatError::Io(e) }),
                }
            }
            Input::Run(f) => Ok((f.take(u64::MAX), PathBuf::from("(merge pass run)"))),
        }
    }
}

type Reader<K, V> = RecordReader<BufReader<Take<File>>, K, V>;

fn open_all<K: serde::de::DeserializeOwned, V: serde::de::DeserializeOwned>(
    inputs: Vec<Input>,
) -> Result<Opened<K, V>, TaskError> {
    let mut readers = Vec::with_capacity(inputs.len());
    let mut names = Vec::with_capacity(inputs.len());
    for input in inputs {
        let (file, name) = input.open()?;
        readers.push(RecordReader::new(BufReader::with_capacity(MERGE_READ_BUFFER, file)));
        names.push(name);
    }
    Ok((readers, names))
}

fn merge_error(names: &[PathBuf]) -> impl Fn(MergeError<FormatError>) -> TaskError + '_ {
    move |e| match e {
        MergeError::Source { input, error } => TaskError::Intermediate { path: names[input].clone(), source: error },
        MergeError::Unsorted { input } => TaskError::Intermediate {
            path: names[input].clone(),
            source: FormatError::Corrupt { offset: 0, what: "records not sorted by key" },
        },
    }
}

/// Merges inputs in passes of at most `fanin` files (like Hadoop's `io.sort.factor`), so
/// that a reduce over any number of map outputs keeps a bounded number of files open.
fn merge_passes<K: mapreduce_core::Key, V: mapreduce_core::Value>(
    mut level: Vec<Input>,
    t: &ReduceTask,
) -> Result<Vec<Input>, TaskError> {
    let (fanin, work_dir) = (t.fanin.max(2), t.work_dir.as_path());
    let werr = write_err(work_dir);
    while level.len() > fanin {
        check(&t.cancelled)?;
        let mut next = Vec::with_capacity(level.len().div_ceil(fanin));
        let mut rest = level.into_iter();
        loop {
            let chunk: Vec<Input> = rest.by_ref().take(fanin).collect();
            if chunk.is_empty() {
                break;
            }
            let (readers, names) = open_all::<K, V>(chunk)?;
            let mut merge = Merge::new(readers).map_err(merge_error(&names))?;
            let file = tempfile::tempfile_in(work_dir).map_err(&werr)?;
            let mut w = RecordWriter::with_compression(BufWriter::with_capacity(WRITE_BUFFER, file), t.compression)
                .map_err(&werr)?;
            while let Some((k, v)) = merge.next().map_err(merge_error(&names))? {
                w.write(&k, &v).map_err(|source| TaskError::Intermediate { path: work_dir.to_path_buf(), source })?;
            }
            let (buf, _, _) = w.finish().map_err(&werr)?;
            let mut file = buf.into_inner().map_err(|e| werr(e.into_error()))?;
            file.seek(SeekFrom::Start(0)).map_err(&werr)?;
            next.push(Input::Run(file));
        }
        level = next;
    }
    Ok(level)
}

/// Runs one reduce attempt: a streaming merge of the partition's map outputs, grouped by
/// key, through the user's reduce into a text file renamed to its attempt-unique name.
pub(crate) fn run_reduce<J: Job>(job: &J, t: &ReduceTask) -> Result<ReduceResult, TaskError> {
    let name = format!("reduce-{:05}", t.partition);
    let inputs = t
        .inputs
        .iter()
        .map(|f| Input::Range { path: PathBuf::from(&f.path), offset: f.offset, bytes: f.bytes })
        .collect();
    let inputs = merge_passes::<J::Key, J::Value>(inputs, t)?;
    let (readers, names) = open_all::<J::Key, J::Value>(inputs)?;
    let merge_err = merge_error(&names);
    let werr = write_err(&t.work_dir);
    let tmp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(&t.work_dir).map_err(&werr)?;
    let mut writer = BufWriter::with_capacity(WRITE_BUFFER, tmp);
    let mut out = Output::new(&mut writer);
    let mut keys = 0u64;
    let result = catch_unwind(AssertUnwindSafe(|| -> Result<Result<(), BoxError>, TaskError> {
        let mut merge = Merge::new(readers).map_err(&merge_err)?;
        merge
            .for_each_group(|key, values| {
                if t.cancelled.load(Ordering::Relaxed) {
                    return Err(BoxError::from(TaskError::Cancelled));
                }
                keys += 1;
                job.reduce(key, values, &mut out)
            })
            .map_err(&merge_err)
    }));
    let at = || format!("{name}, key #{keys}");
    match result {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => return Err(user_error(at(), e)),
        Ok(Err(e)) => return Err(e),
        Err(payload) => return Err(TaskError::Panic { at: at(), message: panic_message(&*payload) }),
    }
    let records = out.records();
    writer.flush().map_err(&werr)?;
    let tmp = writer.into_inner().map_err(|e| werr(e.into_error()))?;
    let bytes = tmp.as_file().metadata().map_err(&werr)?.len();
    let path = t.work_dir.join(storage::reduce_file_name(t.partition, t.attempt));
    tmp.persist_noclobber(&path).map_err(|e| write_err(&path)(e.error))?;
    Ok(ReduceResult { path: path.to_string_lossy().into_owned(), records, bytes })
}

#[cfg(test)]
mod tests {
    use super::*;
    use mapreduce_core::{Mapper, Reducer};
    use serde::{Deserialize, Serialize};

    /// Counts words; `combine` is switchable to test the no-combiner path.
    #[derive(Serialize, Deserialize)]
    struct Count {
        combine: bool,
    }

    impl Mapper for Count {
        type Key = String;
        type Value = u64;
        fn map(&self, line: &str, emit: &mut Emitter<'_, String, u64>) -> Result<(), BoxError> {
            line.split_whitespace().for_each(|w| emit.emit(w.to_string(), 1));
            Ok(())
        }
    }

    impl Reducer for Count {
        fn reduce(&self, k: &String, vs: &mut dyn Iterator<Item = u64>, out: &mut Output<'_>) -> Result<(), BoxError> {
            out.emit(k, vs.sum::<u64>())?;
            Ok(())
        }
        fn combine(&self, _: &String, acc: &mut u64, v: u64) -> Option<u64> {
            if self.combine {
                *acc += v;
                None
            } else {
                Some(v)
            }
        }
    }

    impl Job for Count {
        const NAME: &'static str = "count";
    }

    fn corpus(dir: &Path, lines: usize) -> PathBuf {
        let path = dir.join("in.txt");
        let text: String = (0..lines).map(|i| format!("w{} w{} common\n", i % 997, i % 13)).collect();
        std::fs::write(&path, text).unwrap();
        path
    }

    fn map_all(job: &Count, input: &Path, work: &Path, sort_buffer: u64, reducers: u32) -> Vec<PartitionFile> {
        map_with(job, input, work, sort_buffer, reducers, Compression::None)
    }

    fn map_with(
        job: &Count,
        input: &Path,
        work: &Path,
        sort_buffer: u64,
        reducers: u32,
        compression: Compression,
    ) -> Vec<PartitionFile> {
        let len = std::fs::metadata(input).unwrap().len();
        let seg = Segment { path: input.to_string_lossy().into(), start: 0, end: len };
        let t = MapTask {
            task: 0,
            attempt: sort_buffer,
            segments: vec![seg],
            work_dir: work.into(),
            reducers,
            sort_buffer,
            compression,
            cancelled: Arc::default(),
        };
        run_map(job, &t).unwrap().files
    }

    /// The records of one partition's range.
    fn read(f: &PartitionFile) -> Vec<(String, u64)> {
        let (file, _) = Input::Range { path: PathBuf::from(&f.path), offset: f.offset, bytes: f.bytes }.open().unwrap();
        RecordReader::new(BufReader::new(file)).collect::<Result<_, _>>().unwrap()
    }

    /// A partition range covering the whole of a record file.
    fn whole(path: &Path) -> PartitionFile {
        let bytes = std::fs::metadata(path).unwrap().len();
        PartitionFile { partition: 0, path: path.to_string_lossy().into(), offset: 0, bytes, records: 0 }
    }

    #[test]
    fn spilling_map_output_equals_the_in_memory_output() {
        let dir = tempfile::tempdir().unwrap();
        let input = corpus(dir.path(), 20_000);
        let cases = [true, false].into_iter().flat_map(|c| [(c, Compression::None), (c, Compression::Lz4)]);
        for (combine, compression) in cases {
            let job = Count { combine };
            let work = dir.path().join(format!("work-{combine}-{compression}"));
            std::fs::create_dir(&work).unwrap();
            let big = map_all(&job, &input, &work, 1 << 30, 3);
            // Spills several times; the spills, the runs and the output stored compressed
            // or not.
            let small = map_with(&job, &input, &work, 64 << 10, 3, compression);
            assert_eq!(big.len(), 3);
            if combine {
                assert_eq!(small.len(), 3, "combining spills are merged into one run");
            } else {
                // Spills that combined nothing are not merged: one run of 3 ranges each.
                assert!(small.len() > 3 && small.len().is_multiple_of(3), "{} ranges", small.len());
            }
            assert!(small.iter().enumerate().all(|(i, f)| f.partition as usize == i % 3));
            assert!(small.windows(2).all(|w| w[1].offset == w[0].offset + w[0].bytes && w[1].path == w[0].path));
            let last = small.last().unwrap();
            assert_eq!(last.offset + last.bytes, std::fs::metadata(&last.path).unwrap().len());
            for a in &big {
                let ra = read(a);
                assert!(ra.windows(2).all(|w| w[0].0 <= w[1].0), "sorted");
                assert_eq!(ra.len() as u64, a.records);
                let runs: Vec<_> = small.iter().filter(|f| f.partition == a.partition).map(read).collect();
                assert!(runs.iter().all(|r| r.windows(2).all(|w| w[0].0 <= w[1].0)), "every run sorted");
                if combine {
                    assert_eq!(ra, runs[0], "combined spills merge to the same records");
                    assert!(ra.windows(2).all(|w| w[0].0 < w[1].0), "one record per key");
                } else {
                    let mut sa = ra.clone();
                    let mut sb = runs.concat();
                    sa.sort();
                    sb.sort();
                    assert_eq!(sa, sb);
                }
            }
            let keys: usize = big.iter().map(|f| read(f).len()).sum();
            assert_eq!(keys, if combine { 997 + 1 } else { 60_000 });
            // One file per attempt, its partitions back to back; the spills were anonymous
            // and are gone.
            assert!(big.iter().all(|f| f.path == big[0].path));
            assert_eq!(big[2].offset + big[2].bytes, std::fs::metadata(&big[0].path).unwrap().len());
            assert_eq!(std::fs::read_dir(&work).unwrap().count(), 2);
        }
    }

    #[test]
    fn an_attempt_the_master_abandoned_stops_and_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let input = corpus(dir.path(), 1000);
        let work = dir.path().join("work");
        std::fs::create_dir(&work).unwrap();
        let seg = Segment { path: input.to_string_lossy().into(), start: 0, end: 100 };
        let t = MapTask {
            task: 0,
            attempt: 0,
            segments: vec![seg],
            work_dir: work.clone(),
            reducers: 2,
            sort_buffer: 1 << 20,
            compression: Compression::None,
            cancelled: Arc::new(AtomicBool::new(true)),
        };
        assert!(matches!(run_map(&Count { combine: true }, &t), Err(TaskError::Cancelled)));
        assert_eq!(std::fs::read_dir(&work).unwrap().count(), 0);
    }

    #[test]
    fn a_reduce_over_more_inputs_than_its_fanin_merges_in_passes() {
        let dir = tempfile::tempdir().unwrap();
        let job = Count { combine: true };
        let mut inputs = Vec::new();
        for i in 0..9u64 {
            let path = dir.path().join(format!("m{i}"));
            let mut w = RecordWriter::new(File::create(&path).unwrap()).unwrap();
            for k in 0..50u64 {
                w.write(&format!("k{:03}", k * 9 + i % 3), &1u64).unwrap();
            }
            w.finish().unwrap();
            inputs.push(whole(&path));
        }
        let t = ReduceTask {
            attempt: 1,
            partition: 0,
            inputs,
            work_dir: dir.path().into(),
            fanin: 2,
            compression: Compression::Lz4,
            cancelled: Arc::default(),
        };
        let out = run_reduce(&job, &t).unwrap();
        let text = std::fs::read_to_string(&out.path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(out.records, lines.len() as u64);
        assert!(lines.windows(2).all(|w| w[0] < w[1]), "sorted, one line per key");
        let total: u64 = lines.iter().map(|l| l.split('\t').nth(1).unwrap().parse::<u64>().unwrap()).sum();
        assert_eq!(total, 9 * 50);
    }

    #[test]
    fn a_corrupt_map_output_fails_the_reduce_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m-corrupt");
        let mut w = RecordWriter::new(File::create(&path).unwrap()).unwrap();
        w.write("key", &1u64).unwrap();
        w.finish().unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[20] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        let t = ReduceTask {
            attempt: 1,
            partition: 0,
            inputs: vec![whole(&path)],
            work_dir: dir.path().into(),
            fanin: 10,
            compression: Compression::None,
            cancelled: Arc::default(),
        };
        let err = run_reduce(&Count { combine: true }, &t).unwrap_err();
        assert!(matches!(err, TaskError::Intermediate { .. }), "{err:?}");
        assert!(err.to_string().contains("m-corrupt"), "{err}");
        // No attempt file is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn line_count_counts_lines_with_and_without_a_final_newline() {
        let plain = |t: &str| t.split_inclusive('\n').count() as u64;
        for text in ["", "a", "\n", "a\n", "a\nb", "\n\n\n", "\u{10a}\n\u{a0a}\n\n", "x\n\x0b\x09\u{8a}\n"] {
            assert_eq!(line_count(text), plain(text), "{text:?}");
        }
        let long: String = (0..1000).map(|i| if i % 7 == 0 { '\n' } else { 'é' }).collect();
        assert_eq!(line_count(&long), plain(&long));
    }
}
