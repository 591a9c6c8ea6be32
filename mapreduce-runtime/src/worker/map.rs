//! Running a map attempt: read the shard's lines, map them into the data path of
//! `mapreduce_core::shuffle::map_side`, and write the attempt's one output file.

use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use mapreduce_core::counters::{self, Counters, builtin};
use mapreduce_core::shard::{Block, Segment};
use mapreduce_core::shuffle::ShuffleError;
use mapreduce_core::shuffle::map_side::{MapSettings, MapSide, StreamRange};
use mapreduce_core::{BoxError, Compression, Emitter, InputFormat, InvalidUtf8, Job, OutputFormat, Position};

use super::files::{AtomicFile, JobOutput, TempFiles, WorkDir};
use super::input::{Input, Piece, read_input};
use crate::confine::Files;
use crate::error::{TaskError, panic_message};
use crate::storage;

/// Input handed to [`mapreduce_core::Mapper::map_lines`] at once, about; the sort buffer's
/// budget is checked after each block.
pub(super) const MAP_BLOCK: usize = 64 << 10;

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
    Ok(read.result(t, &path, streams, counters))
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
    let streams = vec![StreamRange { partition: 0, offset: 0, bytes, records }];
    Ok(read.result(t, &path, streams, counters))
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
}
