//! Running map and reduce attempts: the blocking data path of a worker.

use std::fs::File;
use std::io::{BufReader, BufWriter, Seek, SeekFrom, Write};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use mapreduce_core::buffer::MapBuffer;
use mapreduce_core::merge::{Merge, MergeError};
use mapreduce_core::record::{FormatError, RecordReader, RecordWriter};
use mapreduce_core::scheduler::PartitionFile;
use mapreduce_core::shard::{LineReader, Segment};
use mapreduce_core::{BoxError, Emitter, Job, Output};
use tempfile::NamedTempFile;

use crate::error::{TaskError, panic_message};
use crate::storage;

const READ_BUFFER: usize = 256 << 10;
const WRITE_BUFFER: usize = 256 << 10;
const MERGE_READ_BUFFER: usize = 64 << 10;

/// A validated map request.
#[derive(Debug)]
pub(crate) struct MapTask {
    pub(crate) task: u32,
    pub(crate) attempt: u64,
    pub(crate) segments: Vec<Segment>,
    pub(crate) work_dir: PathBuf,
    pub(crate) reducers: u32,
    pub(crate) sort_buffer: u64,
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
    pub(crate) inputs: Vec<PathBuf>,
    pub(crate) work_dir: PathBuf,
}

/// What a reduce attempt wrote.
#[derive(Debug)]
pub(crate) struct ReduceResult {
    pub(crate) path: String,
    pub(crate) records: u64,
    pub(crate) bytes: u64,
}

type Writer = RecordWriter<BufWriter<NamedTempFile>>;
/// One spill: an anonymous temporary file per partition (deleted when dropped).
type Spill = Vec<File>;

fn write_err(path: &Path) -> impl Fn(std::io::Error) -> TaskError + '_ {
    move |source| TaskError::Write { path: path.to_path_buf(), source }
}

fn user_error(at: String, e: BoxError) -> TaskError {
    TaskError::User { at, message: e.to_string() }
}

/// Runs one map attempt: reads the shard's lines, maps them into the combining buffer,
/// spills sorted runs when the buffer passes its budget, and writes one sorted record
/// file per partition.
pub(crate) fn run_map<J: Job>(job: &J, t: &MapTask) -> Result<MapResult, TaskError> {
    let name = format!("map-{:05}", t.task);
    let mut buffer = MapBuffer::<J::Key, J::Value>::new();
    let mut spills: Vec<Spill> = Vec::new();
    let mut input_records = 0u64;
    for seg in &t.segments {
        let path = Path::new(&seg.path);
        let input_err = |source| TaskError::Input { path: path.to_path_buf(), source };
        let mut file = File::open(path).map_err(input_err)?;
        file.seek(SeekFrom::Start(seg.start.saturating_sub(1))).map_err(input_err)?;
        let mut lines = LineReader::new(BufReader::with_capacity(READ_BUFFER, file), seg.start, seg.end);
        while let Some(line) = lines.next_line().map_err(input_err)? {
            input_records += 1;
            let mut sink = |k, v| buffer.insert(k, v, |k, acc, v| job.combine(k, acc, v));
            let result = catch_unwind(AssertUnwindSafe(|| job.map(&line, &mut Emitter::new(&mut sink))));
            let at = || format!("{name}, record at {}:{}", seg.path, lines.line_start());
            match result {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(user_error(at(), e)),
                Err(payload) => return Err(TaskError::Panic { at: at(), message: panic_message(&*payload) }),
            }
            if buffer.bytes() >= t.sort_buffer {
                spills.push(spill(job, &mut buffer, t, &name)?);
            }
        }
    }
    let files = if spills.is_empty() {
        let sorted = drain(job, &mut buffer, t.reducers, &name)?;
        write_final(t, sorted.into_iter())?
    } else {
        if !buffer.is_empty() {
            spills.push(spill(job, &mut buffer, t, &name)?);
        }
        merge_spills(job, t, spills)?
    };
    Ok(MapResult { files, input_records })
}

/// Empties the buffer sorted by (partition, key), checking the partitioner's answers.
fn drain<J: Job>(
    job: &J,
    buffer: &mut MapBuffer<J::Key, J::Value>,
    reducers: u32,
    name: &str,
) -> Result<Vec<(u32, J::Key, J::Value)>, TaskError> {
    let mut bad = None;
    let sorted = buffer.drain_sorted(|k| {
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

fn spill<J: Job>(
    job: &J,
    buffer: &mut MapBuffer<J::Key, J::Value>,
    t: &MapTask,
    name: &str,
) -> Result<Spill, TaskError> {
    let sorted = drain(job, buffer, t.reducers, name)?;
    let werr = write_err(&t.work_dir);
    let mut writers = (0..t.reducers)
        .map(|_| {
            let file = tempfile::tempfile_in(&t.work_dir)?;
            RecordWriter::new(BufWriter::with_capacity(WRITE_BUFFER, file))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(&werr)?;
    for (p, k, v) in &sorted {
        writers[*p as usize]
            .write(k, v)
            .map_err(|e| TaskError::Intermediate { path: t.work_dir.clone(), source: e })?;
    }
    drop(sorted);
    let mut files = Vec::with_capacity(writers.len());
    for w in writers {
        let (buf, _, _) = w.finish().map_err(&werr)?;
        let mut file = buf.into_inner().map_err(|e| werr(e.into_error()))?;
        file.seek(SeekFrom::Start(0)).map_err(&werr)?;
        files.push(file);
    }
    tracing::debug!(task = name, spill = files.len(), "spilled sort buffer");
    Ok(files)
}

/// Merges the spills partition by partition, combining equal keys, into the final files.
fn merge_spills<J: Job>(job: &J, t: &MapTask, spills: Vec<Spill>) -> Result<Vec<PartitionFile>, TaskError> {
    let mut files = Vec::with_capacity(t.reducers as usize);
    let mut runs: Vec<std::vec::IntoIter<File>> = spills.into_iter().map(Vec::into_iter).collect();
    for p in 0..t.reducers {
        let readers: Vec<RecordReader<_, J::Key, J::Value>> = runs
            .iter_mut()
            .map(|r| {
                RecordReader::new(BufReader::with_capacity(
                    MERGE_READ_BUFFER,
                    r.next().expect("one file per partition"),
                ))
            })
            .collect();
        let spill_err = |e: MergeError<FormatError>| match e {
            MergeError::Source { error, .. } => TaskError::Intermediate { path: t.work_dir.clone(), source: error },
            MergeError::Unsorted { .. } => TaskError::Intermediate {
                path: t.work_dir.clone(),
                source: FormatError::Corrupt { offset: 0, what: "spill not sorted" },
            },
        };
        let mut merge = Merge::new(readers).map_err(spill_err)?;
        let mut w = FinalFile::create(t)?;
        let mut current: Option<(J::Key, J::Value)> = None;
        while let Some((k, v)) = merge.next().map_err(spill_err)? {
            match &mut current {
                Some((ck, acc)) if *ck == k => {
                    if let Some(v) = job.combine(ck, acc, v) {
                        w.write(ck, acc)?;
                        *acc = v;
                    }
                }
                _ => {
                    if let Some((ck, acc)) = current.replace((k, v)) {
                        w.write(&ck, &acc)?;
                    }
                }
            }
        }
        if let Some((ck, acc)) = current {
            w.write(&ck, &acc)?;
        }
        files.push(w.persist(t, p)?);
    }
    Ok(files)
}

/// A partition's final intermediate file, written under a temporary name.
struct FinalFile {
    writer: Writer,
    tmp_dir: PathBuf,
}

impl FinalFile {
    fn create(t: &MapTask) -> Result<Self, TaskError> {
        let werr = write_err(&t.work_dir);
        let tmp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(&t.work_dir).map_err(&werr)?;
        let writer = RecordWriter::new(BufWriter::with_capacity(WRITE_BUFFER, tmp)).map_err(&werr)?;
        Ok(FinalFile { writer, tmp_dir: t.work_dir.clone() })
    }

    fn write<K: serde::Serialize, V: serde::Serialize>(&mut self, k: &K, v: &V) -> Result<(), TaskError> {
        self.writer.write(k, v).map_err(|e| TaskError::Intermediate { path: self.tmp_dir.clone(), source: e })
    }

    /// Finishes the file and renames it to its attempt-unique name.
    fn persist(self, t: &MapTask, partition: u32) -> Result<PartitionFile, TaskError> {
        let path = t.work_dir.join(storage::map_file_name(t.task, t.attempt, partition));
        let werr = write_err(&path);
        let (buf, records, bytes) = self.writer.finish().map_err(&werr)?;
        let tmp = buf.into_inner().map_err(|e| werr(e.into_error()))?;
        tmp.persist_noclobber(&path).map_err(|e| werr(e.error))?;
        Ok(PartitionFile { partition, path: path.to_string_lossy().into_owned(), bytes, records })
    }
}

fn write_final<K: serde::Serialize, V: serde::Serialize>(
    t: &MapTask,
    sorted: impl Iterator<Item = (u32, K, V)>,
) -> Result<Vec<PartitionFile>, TaskError> {
    let mut files = Vec::with_capacity(t.reducers as usize);
    let mut sorted = sorted.peekable();
    for p in 0..t.reducers {
        let mut w = FinalFile::create(t)?;
        while let Some((_, k, v)) = sorted.next_if(|r| r.0 == p) {
            w.write(&k, &v)?;
        }
        files.push(w.persist(t, p)?);
    }
    Ok(files)
}

/// Runs one reduce attempt: a streaming merge of the partition's map outputs, grouped by
/// key, through the user's reduce into a text file renamed to its attempt-unique name.
pub(crate) fn run_reduce<J: Job>(job: &J, t: &ReduceTask) -> Result<ReduceResult, TaskError> {
    let name = format!("reduce-{:05}", t.partition);
    let readers = t
        .inputs
        .iter()
        .map(|path| {
            File::open(path)
                .map(|f| RecordReader::<_, J::Key, J::Value>::new(BufReader::with_capacity(MERGE_READ_BUFFER, f)))
                .map_err(|e| TaskError::Intermediate { path: path.clone(), source: FormatError::Io(e) })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let merge_err = |e: MergeError<FormatError>| match e {
        MergeError::Source { input, error } => TaskError::Intermediate { path: t.inputs[input].clone(), source: error },
        MergeError::Unsorted { input } => TaskError::Intermediate {
            path: t.inputs[input].clone(),
            source: FormatError::Corrupt { offset: 0, what: "records not sorted by key" },
        },
    };
    let werr = write_err(&t.work_dir);
    let tmp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(&t.work_dir).map_err(&werr)?;
    let mut writer = BufWriter::with_capacity(WRITE_BUFFER, tmp);
    let mut out = Output::new(&mut writer);
    let mut keys = 0u64;
    let result = catch_unwind(AssertUnwindSafe(|| -> Result<Result<(), BoxError>, TaskError> {
        let mut merge = Merge::new(readers).map_err(merge_err)?;
        merge
            .for_each_group(|key, values| {
                keys += 1;
                job.reduce(key, values, &mut out)
            })
            .map_err(merge_err)
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
