//! Running a map attempt: read the shard's lines, map them into the data path of
//! `mapreduce_core::shuffle::map_side`, and write the attempt's one output file.

use std::io::{self, Read, Seek, SeekFrom};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use mapreduce_core::counters::{self, Counters, builtin};
use mapreduce_core::shard::{BadUtf8, Block, LineReader, LineTooLong, Segment};
use mapreduce_core::shuffle::ShuffleError;
use mapreduce_core::shuffle::map_side::{MapSettings, MapSide, StreamRange};
use mapreduce_core::shuffle::record::RecordReader;
use mapreduce_core::{BoxError, Compression, Emitter, InputFormat, InvalidUtf8, Job, OutputFormat, Position, Record};
use mapreduce_rpc::pb;
use tokio::sync::mpsc;

use super::files::{AtomicFile, JobOutput, TempFiles, WorkDir};
use crate::confine::{Files, Refused};
use crate::error::{TaskError, panic_message};
use crate::storage;

/// Input handed to [`mapreduce_core::Mapper::map_lines`] at once, about; the sort buffer's
/// budget is checked after each block.
const MAP_BLOCK: usize = 64 << 10;

/// A validated map request.
#[derive(Debug)]
pub(crate) struct MapTask {
    pub(crate) task: u32,
    pub(crate) attempt: u64,
    pub(crate) segments: Vec<Segment>,
    pub(crate) work_dir: PathBuf,
    /// The work directory is the worker's own (worker shuffle): named by the worker, not
    /// the request, so opened whatever the data roots.
    pub(crate) own_work_dir: bool,
    pub(crate) reducers: u32,
    pub(crate) sort_buffer: u64,
    /// How the attempt's output and spills store their blocks.
    pub(crate) compression: Compression,
    /// Set when the master abandons the attempt: stop at the next block of input.
    pub(crate) cancelled: Arc<AtomicBool>,
    /// What the attempt may open.
    pub(crate) files: Files,
    /// The longest line, and whether longer ones are skipped (and counted).
    pub(crate) max_line: usize,
    pub(crate) skip_long_lines: bool,
    /// How the shard is read, what becomes of bytes that are not UTF-8, and (map-only)
    /// how the output is written.
    pub(crate) input_format: InputFormat,
    pub(crate) invalid_utf8: InvalidUtf8,
    pub(crate) output_format: OutputFormat,
    /// Where the shard's bytes come from.
    pub(crate) input: Input,
}

/// Where a map attempt reads its shard.
#[derive(Debug)]
pub(crate) enum Input {
    /// Each segment's file, beneath the data roots; per segment, the file's length as the
    /// master listed it (0: not said). A file absent, outside the roots or of another
    /// length is [`TaskError::InputUnseen`].
    Files(Vec<u64>),
    /// The bytes the master sends (`MapStream`).
    Streamed(std::sync::Mutex<Streamed>),
}

/// A shard's bytes as the master sends them: chunks of each segment in order, as many
/// bytes of each as the request said.
#[derive(Debug)]
pub(crate) struct Streamed {
    chunks: mpsc::Receiver<io::Result<pb::InputChunk>>,
    /// Per segment, the bytes to come.
    sizes: Vec<u64>,
    /// The chunk being read, and how much of it was.
    chunk: Vec<u8>,
    at: usize,
}

impl Streamed {
    pub(crate) fn new(chunks: mpsc::Receiver<io::Result<pb::InputChunk>>, sizes: Vec<u64>) -> Self {
        Streamed { chunks, sizes, chunk: Vec::new(), at: 0 }
    }

    /// Checks that nothing follows the last segment's bytes.
    fn finish(&mut self) -> io::Result<()> {
        if self.at < self.chunk.len() || self.chunks.blocking_recv().is_some() {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "the master sent more bytes than it said"));
        }
        Ok(())
    }
}

/// The reader of segment `segment` of a [`Streamed`] shard.
struct SegmentReader<'a> {
    input: &'a mut Streamed,
    segment: u32,
    left: u64,
}

impl Read for SegmentReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let input = &mut *self.input;
        while input.at == input.chunk.len() {
            let bad = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
            match input.chunks.blocking_recv() {
                None => {
                    let what =
                        format!("the master's stream ended {} bytes short of segment {}", self.left, self.segment);
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, what));
                }
                Some(Err(e)) => return Err(e),
                Some(Ok(chunk)) if chunk.segment != self.segment => {
                    return Err(bad(format!(
                        "bytes of segment {} while reading segment {}",
                        chunk.segment, self.segment
                    )));
                }
                Some(Ok(chunk)) if chunk.data.len() as u64 > self.left => {
                    return Err(bad(format!("more bytes of segment {} than the master said", self.segment)));
                }
                Some(Ok(chunk)) => (input.chunk, input.at) = (chunk.data, 0),
            }
        }
        let n = buf.len().min(input.chunk.len() - input.at).min(usize::try_from(self.left).unwrap_or(usize::MAX));
        buf[..n].copy_from_slice(&input.chunk[input.at..input.at + n]);
        input.at += n;
        self.left -= n as u64;
        Ok(n)
    }
}

/// What a map attempt wrote.
#[derive(Debug)]
pub(crate) struct MapResult {
    /// Where the output lies: its file's path.
    pub(crate) location: String,
    /// Its streams: runs of one per partition, in partition order.
    pub(crate) streams: Vec<StreamRange>,
    pub(crate) input_records: u64,
    /// Lines skipped for being longer than the limit.
    pub(crate) skipped_records: u64,
    /// The attempt's counters, built-in and the user's.
    pub(crate) counters: Counters,
}

/// Fails with [`TaskError::Cancelled`] once the master abandoned the attempt.
pub(crate) fn ensure_not_cancelled(cancelled: &AtomicBool) -> Result<(), TaskError> {
    if cancelled.load(Ordering::Relaxed) { Err(TaskError::Cancelled) } else { Ok(()) }
}

/// Runs one map attempt into its output file in the work directory: runs of one sorted
/// record stream per partition (see `mapreduce_core::shuffle::map_side`), or, in a
/// map-only job, the job's output itself.
pub(crate) fn run_map<J: Job>(job: &J, t: &MapTask) -> Result<MapResult, TaskError> {
    let name = format!("map-{:05}", t.task);
    counters::start_task();
    let work = WorkDir::open(if t.own_work_dir { &Files::Unconfined } else { &t.files }, &t.work_dir)?;
    guarded(&name, || job.map_setup())?;
    if t.reducers == 0 {
        return run_map_only(job, t, &name, &work);
    }
    let output = AtomicFile::create(&work, &storage::map_file_name(t.task, t.attempt))?;
    let output_path = output.path().to_path_buf();
    let shuffle_err = |e| shuffle_error(e, &name, &output_path, &t.work_dir);
    let settings = MapSettings { reducers: t.reducers, sort_buffer: t.sort_buffer, compression: t.compression };
    let mut side = MapSide::<J, _, _>::new(settings, TempFiles(&work.dir), output);
    let read = read_input(t, &mut |piece| {
        match piece {
            Piece::Lines(block, at) => {
                let result = catch_unwind(AssertUnwindSafe(|| side.map_block(job, block.text(), at)));
                if !matches!(result, Ok(Ok(()))) {
                    return Err(block_failure(job, &name, block, at, result));
                }
            }
            Piece::Record(record, at) => {
                let result = catch_unwind(AssertUnwindSafe(|| side.map_record(job, record, at)));
                user_failure(&format!("{name}, record at {at}"), result)?;
            }
            Piece::File(bytes, at) => {
                let result = catch_unwind(AssertUnwindSafe(|| side.map_file(job, bytes, at)));
                user_failure(&format!("{name}, file {}", at.path_str()), result)?;
            }
        }
        side.after_block(job, &t.cancelled).map_err(shuffle_err)
    })?;
    guarded(&name, || side.map_finish(job))?;
    let (records_in, spill_records) = (side.records_in(), side.spill_records());
    let (output, streams) = side.finish(job, &t.cancelled).map_err(shuffle_err)?;
    // Checked before the output is committed: an attempt past the limits leaves nothing.
    let mut counters = counters::end_task().map_err(|message| TaskError::User { at: name.clone(), message })?;
    let (path, _) = output.persist()?;
    let written: u64 = streams.iter().map(|s| s.records).sum();
    for (counter, n) in [
        (builtin::MAP_OUTPUT_RECORDS, records_in),
        (builtin::MAP_OUTPUT_BYTES, streams.iter().map(|s| s.bytes).sum()),
        (builtin::COMBINE_INPUT_RECORDS, records_in),
        (builtin::COMBINE_OUTPUT_RECORDS, written),
        (builtin::SPILLED_RECORDS, spill_records + written),
    ] {
        counters.insert(counter.to_string(), n);
    }
    read.count(t, &mut counters);
    Ok(MapResult {
        location: path.to_string_lossy().into_owned(),
        streams,
        input_records: read.records,
        skipped_records: read.skipped + read.skipped_utf8,
        counters,
    })
}

/// A map-only attempt: every pair the map emits goes straight into the job's output
/// format, in the order emitted, one file per attempt (committed as `part-m-NNNNN`).
fn run_map_only<J: Job>(job: &J, t: &MapTask, name: &str, work: &WorkDir) -> Result<MapResult, TaskError> {
    let file = AtomicFile::create_public(work, &storage::map_file_name(t.task, t.attempt))?;
    let path = file.path().to_path_buf();
    let werr = |e: io::Error| TaskError::Write { path: path.clone(), error: e };
    let mut out = JobOutput::new(file, t.output_format).map_err(werr)?;
    let failed: std::cell::RefCell<Option<io::Error>> = Default::default();
    let mut sink = |key: J::Key, value: J::Value| {
        let mut failed = failed.borrow_mut();
        if failed.is_none() {
            *failed = out.pair(&key, &value).err();
        }
    };
    let read = read_input(t, &mut |piece| {
        match piece {
            Piece::Lines(block, at) => {
                let result =
                    catch_unwind(AssertUnwindSafe(|| job.map_lines(block.text(), &mut Emitter::new(&mut sink).at(at))));
                if !matches!(result, Ok(Ok(()))) {
                    return Err(block_failure(job, name, block, at, result));
                }
            }
            Piece::Record(record, at) => {
                let result =
                    catch_unwind(AssertUnwindSafe(|| job.map_record(record, &mut Emitter::new(&mut sink).at(at))));
                user_failure(&format!("{name}, record at {at}"), result)?;
            }
            Piece::File(bytes, at) => {
                let mut emit = Emitter::new(&mut sink).at(at);
                let result = catch_unwind(AssertUnwindSafe(|| job.map_file(at.path(), bytes, &mut emit)));
                user_failure(&format!("{name}, file {}", at.path_str()), result)?;
            }
        }
        failed.borrow_mut().take().map_or(Ok(()), |e| Err(werr(e)))
    })?;
    guarded(name, || job.map_finish(&mut Emitter::new(&mut sink)))?;
    if let Some(e) = failed.into_inner() {
        return Err(werr(e));
    }
    let (file, records) = out.finish().map_err(werr)?;
    let mut counters = counters::end_task().map_err(|message| TaskError::User { at: name.to_string(), message })?;
    let (path, bytes) = file.persist()?;
    counters.insert(builtin::MAP_OUTPUT_RECORDS.to_string(), records);
    counters.insert(builtin::MAP_OUTPUT_BYTES.to_string(), bytes);
    read.count(t, &mut counters);
    let streams = vec![StreamRange { partition: 0, offset: 0, bytes, records }];
    Ok(MapResult {
        location: path.to_string_lossy().into_owned(),
        streams,
        input_records: read.records,
        skipped_records: read.skipped + read.skipped_utf8,
        counters,
    })
}

/// What a map reads next: a block of whole lines, or one typed record, and where it lies.
enum Piece<'a> {
    Lines(&'a Block<'a>, Position<'a>),
    Record(Record<'a>, Position<'a>),
    File(&'a [u8], Position<'a>),
}

/// What an attempt read.
struct ReadStats {
    records: u64,
    /// Lines skipped for their length.
    skipped: u64,
    /// Lines skipped for bytes that are not UTF-8.
    skipped_utf8: u64,
}

impl ReadStats {
    /// Puts the input's built-in counters in `counters`.
    fn count(&self, t: &MapTask, counters: &mut Counters) {
        let bytes = t.segments.iter().map(|s| s.end.saturating_sub(s.start)).fold(0, u64::saturating_add);
        counters.insert(builtin::MAP_INPUT_RECORDS.to_string(), self.records);
        counters.insert(builtin::MAP_INPUT_BYTES.to_string(), bytes);
        if self.skipped + self.skipped_utf8 > 0 {
            counters.insert(builtin::MAP_SKIPPED_RECORDS.to_string(), self.skipped + self.skipped_utf8);
        }
    }
}

/// Whether `path` names a compressed file, and which kind.
fn codec(path: &str) -> Option<&'static str> {
    if path.ends_with(".gz") {
        Some("gzip")
    } else if path.ends_with(".zst") {
        Some("zstd")
    } else {
        None
    }
}

/// Reads the attempt's shard, piece by piece, into `f`: lines of text (decompressed when
/// the file's name says so), or the records of record files, each with its position.
fn read_input(t: &MapTask, f: &mut dyn FnMut(Piece<'_>) -> Result<(), TaskError>) -> Result<ReadStats, TaskError> {
    let mut stats = ReadStats { records: 0, skipped: 0, skipped_utf8: 0 };
    let mut streamed = match &t.input {
        Input::Streamed(s) => Some(s.lock().unwrap_or_else(|e| e.into_inner())),
        Input::Files(_) => None,
    };
    for (i, seg) in t.segments.iter().enumerate() {
        let path = Path::new(&seg.path);
        let input_err = |source| TaskError::Input { path: path.to_path_buf(), error: source };
        let source: Box<dyn Read + '_> = match (&t.input, streamed.as_deref_mut()) {
            (_, Some(streamed)) => {
                let left = streamed.sizes.get(i).copied().unwrap_or(0);
                Box::new(SegmentReader { input: streamed, segment: i as u32, left })
            }
            (Input::Files(listed), None) => {
                let unseen = |why: String| TaskError::InputUnseen { path: seg.path.clone(), why };
                let mut file = match t.files.open_regular(path) {
                    Ok(file) => file,
                    Err(Refused::Io(e)) if e.kind() == io::ErrorKind::NotFound => return Err(unseen("absent".into())),
                    Err(Refused::Outside) => return Err(unseen(format!("outside {}", t.files.describe_roots()))),
                    Err(r) => return Err(r.into_task_error(path, &t.files, input_err)),
                };
                let len = file.metadata().map_err(input_err)?.len();
                let listed = listed.get(i).copied().unwrap_or(0);
                if listed != 0 && len != listed {
                    return Err(unseen(format!("{len} bytes here, {listed} as the master listed it")));
                }
                if seg.end > len {
                    return Err(TaskError::InputShrank {
                        path: path.to_path_buf(),
                        len,
                        start: seg.start,
                        end: seg.end,
                    });
                }
                file.seek(SeekFrom::Start(seg.start.saturating_sub(1))).map_err(input_err)?;
                Box::new(file)
            }
            (Input::Streamed(_), None) => unreachable!("a streamed input is locked above"),
        };
        let whole = || {
            if seg.start != 0 {
                return Err(TaskError::InvalidRequest(format!(
                    "{} cannot be split, but the segment starts at byte {}",
                    seg.path, seg.start
                )));
            }
            Ok(())
        };
        if t.input_format == InputFormat::Records {
            whole()?;
            read_records(t, &seg.path, source, &mut stats, f)?;
            continue;
        }
        if t.input_format == InputFormat::WholeFiles {
            whole()?;
            let mut bytes = Vec::new();
            source.take(t.max_line as u64 + 1).read_to_end(&mut bytes).map_err(input_err)?;
            if bytes.len() > t.max_line {
                return Err(TaskError::LineTooLong { at: format!("{} (a whole file)", seg.path), limit: t.max_line });
            }
            ensure_not_cancelled(&t.cancelled)?;
            f(Piece::File(&bytes, Position::new(&seg.path, 0, Some(1))))?;
            stats.records += 1;
            continue;
        }
        let source: Box<dyn Read + '_> = match codec(&seg.path) {
            None => source,
            Some(kind) => {
                whole()?;
                let source = io::BufReader::with_capacity(256 << 10, source.take(seg.end));
                match kind {
                    "gzip" => Box::new(flate2::bufread::MultiGzDecoder::new(source)),
                    _ => Box::new(
                        ruzstd::decoding::StreamingDecoder::new(source)
                            .map_err(|e| input_err(io::Error::new(io::ErrorKind::InvalidData, e.to_string())))?,
                    ),
                }
            }
        };
        // A compressed file is read whole: its segment is all of its decompressed bytes.
        read_lines(t, seg, source, codec(&seg.path).is_some(), &mut stats, f)?;
    }
    if let Some(streamed) = streamed.as_deref_mut() {
        let path = t.segments.last().map_or_else(Default::default, |s| PathBuf::from(&s.path));
        streamed.finish().map_err(|error| TaskError::Input { path, error })?;
    }
    Ok(stats)
}

/// The lines of one segment, a block at a time (all of a compressed file's lines).
fn read_lines(
    t: &MapTask,
    seg: &Segment,
    source: Box<dyn Read + '_>,
    compressed: bool,
    stats: &mut ReadStats,
    f: &mut dyn FnMut(Piece<'_>) -> Result<(), TaskError>,
) -> Result<(), TaskError> {
    let (start, end) = if compressed { (0, u64::MAX) } else { (seg.start, seg.end) };
    let mut reader = LineReader::with_block_size(source, start, end, MAP_BLOCK)
        .with_max_line(t.max_line, t.skip_long_lines)
        .with_invalid_utf8(t.invalid_utf8);
    // Line numbers are known when the segment starts its file.
    let known = start == 0;
    let mut lines = 0u64;
    loop {
        let block = match reader.next_block() {
            Ok(Some(block)) => block,
            Ok(None) => break,
            Err(e) => return Err(read_error(&seg.path, &e, known.then(|| 1 + lines + reader.skipped_all()))),
        };
        ensure_not_cancelled(&t.cancelled)?;
        let n = line_count(block.text());
        let at = Position::new(&seg.path, block.offset(), known.then(|| 1 + lines + block.skipped_before()));
        f(Piece::Lines(&block, at))?;
        lines += n;
    }
    stats.records += lines;
    stats.skipped += reader.skipped();
    stats.skipped_utf8 += reader.skipped_utf8();
    Ok(())
}

/// The records of one record file.
fn read_records(
    t: &MapTask,
    path: &str,
    source: Box<dyn Read + '_>,
    stats: &mut ReadStats,
    f: &mut dyn FnMut(Piece<'_>) -> Result<(), TaskError>,
) -> Result<(), TaskError> {
    let bad = |error| TaskError::RecordInput { path: PathBuf::from(path), error };
    let mut reader = RecordReader::<_, (), ()>::new(io::BufReader::with_capacity(256 << 10, source));
    let mut n = 0u64;
    loop {
        if n.is_multiple_of(1024) {
            ensure_not_cancelled(&t.cancelled)?;
        }
        let Some(frame) = reader.next_frame().map_err(bad)? else { break };
        // A record's position: its index in the file, as its "line".
        f(Piece::Record(Record::new(frame), Position::new(path, n, Some(n + 1))))?;
        n += 1;
    }
    stats.records += n;
    Ok(())
}

/// An error reading `path`'s lines, naming the line (`line`, when known).
fn read_error(path: &str, e: &io::Error, line: Option<u64>) -> TaskError {
    if let Some(&LineTooLong { offset, limit }) = LineTooLong::find(e) {
        return TaskError::LineTooLong { at: Position::new(path, offset, line).to_string(), limit };
    }
    if let Some(&BadUtf8 { offset }) = BadUtf8::find(e) {
        return TaskError::InvalidUtf8 { at: Position::new(path, offset, line).to_string() };
    }
    TaskError::Input { path: PathBuf::from(path), error: io::Error::new(e.kind(), e.to_string()) }
}

/// Runs user code `f` of task `name` that is not about one record, a panic caught.
fn guarded(name: &str, f: impl FnOnce() -> Result<(), BoxError>) -> Result<(), TaskError> {
    user_failure(name, catch_unwind(AssertUnwindSafe(f)))
}

/// The error of user code at `at` that returned `result`.
fn user_failure(at: &str, result: std::thread::Result<Result<(), BoxError>>) -> Result<(), TaskError> {
    match result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(TaskError::User { at: at.to_string(), message: e.to_string() }),
        Err(payload) => Err(TaskError::Panic { at: at.to_string(), message: panic_message(&*payload) }),
    }
}

/// A failure of the data path, naming the file it concerns: the attempt's output, or its
/// work directory for the anonymous scratch files.
pub(crate) fn shuffle_error(e: ShuffleError, task: &str, output: &Path, work_dir: &Path) -> TaskError {
    match e {
        ShuffleError::Output(source) => TaskError::Intermediate { path: output.to_path_buf(), error: source },
        ShuffleError::Scratch(source) => TaskError::Intermediate { path: work_dir.to_path_buf(), error: source },
        ShuffleError::BadPartition { .. } => TaskError::User { at: task.to_string(), message: e.to_string() },
        ShuffleError::Cancelled => TaskError::Cancelled,
        // A map reads no reduce input; a reduce maps these itself, naming the input.
        ShuffleError::Input { .. } | ShuffleError::Unsorted { .. } => {
            TaskError::User { at: task.to_string(), message: e.to_string() }
        }
    }
}

/// The lines of a block of whole lines.
fn line_count(text: &str) -> u64 {
    // Sums of at most 255 bytes' worth fit a `u8`, and LLVM turns such a sum of compares
    // into vector compares and adds, 32 bytes at a time.
    let newlines: u64 =
        text.as_bytes().chunks(255).map(|c| u64::from(c.iter().fold(0u8, |n, &b| n + u8::from(b == b'\n')))).sum();
    newlines + u64::from(!text.is_empty() && !text.ends_with('\n'))
}

/// The error of a block (its first line at `at`) whose map failed with `result`, naming
/// the first line that fails on its own (mapped again, what it emits dropped), or else
/// the block's first line.
fn block_failure<J: Job>(
    job: &J,
    name: &str,
    block: &Block<'_>,
    at: Position<'_>,
    result: std::thread::Result<Result<(), BoxError>>,
) -> TaskError {
    for (i, (offset, line)) in block.lines().enumerate() {
        let here = Position::new(at.path_str(), offset, at.line().map(|l| l + i as u64));
        let alone = catch_unwind(AssertUnwindSafe(|| job.map(line, &mut Emitter::new(&mut |_, _| {}).at(here))));
        if let Err(e) = user_failure(&format!("{name}, record at {here}"), alone) {
            return e;
        }
    }
    match user_failure(&format!("{name}, records from {at}"), result) {
        Err(e) => e,
        Ok(()) => TaskError::User { at: format!("{name}, records from {at}"), message: "map_lines failed".into() },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker::testing::{Count, corpus, map_all, read};
    use mapreduce_core::scheduler::ReduceInput;

    #[test]
    fn map_output_is_one_file_per_attempt_whatever_it_spilled() {
        let dir = tempfile::tempdir().unwrap();
        let input = corpus(dir.path(), 20_000);
        for combine in [true, false] {
            let job = Count { combine };
            let work = dir.path().join(format!("work-{combine}"));
            std::fs::create_dir(&work).unwrap();
            let big = map_all(&job, &input, &work, 1 << 30, 3, Compression::None);
            // Spills several times; the spills were anonymous and are gone.
            let small = map_all(&job, &input, &work, 64 << 10, 3, Compression::Lz4);
            assert_eq!(big.len(), 3);
            assert_eq!(small.len() > 3, !combine, "runs only when nothing combined");
            for files in [&big, &small] {
                assert!(files.iter().all(|f| f.location == files[0].location), "one file per attempt");
                let last = &files.last().unwrap().range;
                let len = std::fs::metadata(files[0].location.as_str()).unwrap().len();
                assert_eq!(last.offset + last.bytes, len);
            }
            let total = |files: &[ReduceInput]| files.iter().map(|f| read(f).len()).sum::<usize>();
            assert_eq!(total(&big), if combine { 997 + 1 } else { 60_000 });
            assert_eq!(total(&small), if combine { 997 + 1 } else { 60_000 });
            assert_eq!(std::fs::read_dir(&work).unwrap().count(), 2, "two attempt files, nothing else");
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
            own_work_dir: false,
            reducers: 2,
            sort_buffer: 1 << 20,
            compression: Compression::None,
            cancelled: Arc::new(AtomicBool::new(true)),
            files: Files::Unconfined,
            max_line: 1 << 20,
            skip_long_lines: false,
            input_format: InputFormat::Text,
            invalid_utf8: InvalidUtf8::Replace,
            output_format: OutputFormat::Text,
            input: Input::Files(vec![0]),
        };
        assert!(matches!(run_map(&Count { combine: true }, &t), Err(TaskError::Cancelled)));
        assert_eq!(std::fs::read_dir(&work).unwrap().count(), 0);
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
