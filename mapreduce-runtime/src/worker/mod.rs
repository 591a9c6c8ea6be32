//! The worker: a tonic server running map and reduce attempts for registered job types.
//!
//! - this module: the gRPC service and the checks of every request;
//! - `server`: [`Worker`], its options, and [`serve`];
//! - `registry`: the job types a worker runs ([`Registry`]);
//! - `map`: a map attempt, from input lines to its output file;
//! - `reduce`: a reduce attempt, from map output ranges to its output file;
//! - `files`: the atomic output file and the scratch files of both.
//!
//! With worker shuffle (a map request's `worker_shuffle`), a map attempt writes into the
//! worker's own work directory ([`Worker::with_work_dir`]), one directory per job run,
//! and the worker serves the output with `Fetch` until the master's `EndJob` (see
//! `crate::shuffle`).
//!
//! A worker told to drain ([`Worker::serve_with_drain`]) answers Wait, Map and Reduce
//! with `UNAVAILABLE` and the metadata `mapreduce-draining` (the master takes it out of
//! the job, keeping its map output), finishes the tasks it runs, and serves `Fetch` until
//! it holds no job's map output (each removed by `EndJob`), or its drain timeout passes.
//!
//! User code runs on tokio's blocking pool, never on the async threads, and a panic in it
//! is caught and answered as a failed attempt: a worker survives any task.
//!
//! A worker trusts no request. It reads and writes only beneath its data roots (see
//! `crate::confine`; by default the directory it was started in), reads only regular
//! files, never blocks in an open, runs at most [`Worker::with_max_tasks`] tasks at once
//! (more are answered `RESOURCE_EXHAUSTED` at once), buffers at most the job's
//! `max_line_bytes` of a line, and checks every size before anything runs.
//!
//! Message sizes, worst cases (the limit is 64 MiB either way): a map request holds at
//! most [`MAX_SHARD_SEGMENTS`] segments of paths of at most [`MAX_PATH_BYTES`](mapreduce_core::shard::MAX_PATH_BYTES), about
//! 16 MiB; a map reply holds two varints per stream, at most 20 bytes, so one run of
//! 2^20 partitions ([`MAX_REDUCERS`](mapreduce_core::job::MAX_REDUCERS)) takes at most 20 MiB, and a reply that would pass
//! the limit (many runs of many partitions) fails the attempt with a message saying so;
//! errors name a shard by its first file and size, so a status stays a few hundred bytes
//! plus one path.

mod accept;
mod files;
#[cfg(test)]
mod fuzz;
mod input;
mod map;
mod reduce;
mod registry;
mod request;
pub(crate) mod server;
#[cfg(test)]
mod testing;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use mapreduce_core::shard::{MAX_SHARD_SEGMENTS, Segment};
use mapreduce_rpc::pb;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::confine::Files;
use crate::convert;
use crate::error::{TaskError, panic_message};
use crate::shuffle::store::Store;
use crate::shuffle::{ShuffleSource, WorkerLocation};
use crate::storage::{self, JobId};
pub(crate) use accept::{incoming, tls};
use input::{Input, Streamed};
use map::MapTask;
use reduce::ReduceTask;
pub use registry::Registry;
pub(crate) use registry::SharedRegistry;
use request::JobParts;
pub use server::{DEFAULT_DRAIN_TIMEOUT, Worker, serve};

use mapreduce_core::scheduler::MAX_IDLE_WAIT as MAX_WAIT;
use mapreduce_core::shuffle::reduce_side::MERGE_FANIN;

/// Chunks of a streamed shard that wait in memory at most.
const STREAMED_IN_FLIGHT: usize = 4;

/// The largest chunk of a streamed shard a worker takes (the master sends 1 MiB).
const MAX_INPUT_CHUNK: usize = 4 << 20;

/// The most a reply may hold: the message limit, less room for tonic's framing.
const MAX_REPLY: usize = (64 << 20) - (64 << 10);

/// The worker's gRPC service (`mapreduce.v1.Worker`).
#[derive(Debug, Clone)]
pub struct WorkerService {
    registry: SharedRegistry,
    /// What requests may name: beneath the data roots, or anything (in-process workers).
    files: Files,
    /// Where reduces read map output from.
    shuffle: Arc<dyn ShuffleSource>,
    /// Where map output stays with worker shuffle (set when the service is built).
    store: Option<Store>,
    /// Tasks running, and the most at once.
    slots: Arc<Slots>,
    /// Whether the worker drains: it refuses new tasks and answers Waits at once.
    drain: Arc<tokio::sync::watch::Sender<bool>>,
    /// The most sort buffer a map task may have ([`Worker::with_max_sort_buffer`]).
    max_sort_buffer: u64,
}

/// The default of [`Worker::with_max_sort_buffer`]: 2 GiB a task.
pub const DEFAULT_MAX_SORT_BUFFER: u64 = 2 << 30;

/// The tasks a worker runs at once, and its limit.
#[derive(Debug)]
struct Slots {
    running: AtomicUsize,
    limit: usize,
}

/// One running task's place in [`Slots`], given back when dropped: when the task's
/// blocking work ends, not when its call does (an abandoned task runs until it sees its
/// cancel flag, and holds a thread until then).
struct Slot(Arc<Slots>);

impl Slots {
    /// A place for one more task, or [`TaskError::Busy`] at once.
    fn take(self: &Arc<Self>) -> Result<Slot, TaskError> {
        let running = self.running.fetch_add(1, Ordering::AcqRel);
        if running >= self.limit {
            self.running.fetch_sub(1, Ordering::AcqRel);
            return Err(TaskError::Busy { running, limit: self.limit });
        }
        Ok(Slot(self.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::AcqRel);
    }
}

impl WorkerService {
    /// The worker's own directory of `job`'s map output, made if missing.
    fn job_dir(&self, job: &Option<JobId>) -> Result<PathBuf, TaskError> {
        let job =
            job.as_ref().ok_or_else(|| TaskError::InvalidRequest("a worker-shuffle map needs a job id".into()))?;
        let store = self.store()?;
        store.job_dir(job).map_err(|error| TaskError::Write { path: store.dir().join(job.as_str()), error })
    }

    /// Refuses a new task once the worker drains.
    fn admit(&self) -> Result<(), TaskError> {
        if *self.drain.borrow() { Err(TaskError::Draining) } else { Ok(()) }
    }

    /// A map attempt of `req`, reading its inputs from files or, with `streamed`, from the
    /// chunks of the master's stream.
    async fn run_map(
        &self,
        req: pb::MapRequest,
        streamed: Option<tokio::sync::mpsc::Receiver<std::io::Result<pb::InputChunk>>>,
    ) -> Result<Response<pb::MapResponse>, Status> {
        let JobParts {
            job,
            reducers,
            sort_buffer,
            compression,
            max_line,
            skip_long_lines,
            job_id,
            input_format,
            output_format,
            invalid_utf8,
        } = self.job(req.job)?;
        let task = u32::try_from(req.task).map_err(|_| TaskError::InvalidRequest("task index too large".into()))?;
        if req.segments.len() > MAX_SHARD_SEGMENTS {
            return Err(TaskError::InvalidRequest(format!(
                "shard of {} segments is more than the limit of {MAX_SHARD_SEGMENTS}",
                req.segments.len()
            ))
            .into());
        }
        let segments = req
            .segments
            .iter()
            .map(|s| {
                if s.start > s.end {
                    return Err(TaskError::InvalidRequest(format!("segment of {} starts after it ends", s.path)));
                }
                match self.path(&s.path) {
                    // Streamed, a path only names the input (in errors).
                    Err(TaskError::OutsideRoots { .. }) if streamed.is_some() => {}
                    Err(TaskError::OutsideRoots { roots, .. }) => {
                        return Err(TaskError::InputUnseen { path: s.path.clone(), why: format!("outside {roots}") });
                    }
                    Err(e) => return Err(e),
                    Ok(_) => {}
                }
                Ok(Segment { path: s.path.clone(), start: s.start, end: s.end })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let input = match streamed {
            None => Input::Files(req.segments.iter().map(|s| s.file_bytes).collect()),
            Some(chunks) => {
                let sizes = req.streamed_bytes.clone();
                // What a worker reading the file itself reads at most: from the byte before
                // the segment to the end of a line as long as the limit past its end.
                let most = |s: &pb::Segment| (s.end - s.start.saturating_sub(1)).saturating_add(max_line as u64 + 2);
                if sizes.len() != req.segments.len() || sizes.iter().zip(&req.segments).any(|(&n, s)| n > most(s)) {
                    return Err(TaskError::InvalidRequest(format!(
                        "{} streamed sizes for {} segments, or one longer than its segment and a line",
                        sizes.len(),
                        req.segments.len()
                    ))
                    .into());
                }
                Input::Streamed(std::sync::Mutex::new(Streamed::new(chunks, sizes)))
            }
        };
        let own_work_dir = req.worker_shuffle;
        // A map-only job's map writes the job's output: into the work directory if this
        // worker sees it, else kept here for the master to fetch (as a reduce's).
        let mut held = false;
        let work_dir = if reducers == 0 {
            if own_work_dir {
                return Err(TaskError::InvalidRequest("a map-only job's map has no worker shuffle".into()).into());
            }
            match self.path(&req.work_dir) {
                Ok(dir) if tokio::fs::metadata(&dir).await.is_ok_and(|m| m.is_dir()) => dir,
                Ok(_) | Err(TaskError::OutsideRoots { .. }) => {
                    held = true;
                    self.job_dir(&job_id)?
                }
                Err(e) => return Err(e.into()),
            }
        } else if own_work_dir {
            if !req.work_dir.is_empty() {
                return Err(TaskError::InvalidRequest("a worker-shuffle map names no work directory".into()).into());
            }
            self.job_dir(&job_id)?
        } else {
            self.path(&req.work_dir)?
        };
        let slot = self.slots.take()?;
        let cancelled = Arc::new(AtomicBool::new(false));
        let _cancel = CancelOnDrop(cancelled.clone());
        let t = MapTask {
            task,
            attempt: req.attempt,
            segments,
            work_dir,
            own_work_dir: own_work_dir || held,
            reducers,
            sort_buffer,
            compression,
            cancelled,
            files: self.files.clone(),
            max_line,
            skip_long_lines,
            input_format,
            invalid_utf8,
            output_format,
            input,
        };
        // Every log line of the attempt, on the blocking thread too, names job and task.
        let span = tracing::info_span!("map", job = %job.name, task, attempt = req.attempt);
        span.in_scope(|| tracing::debug!("map"));
        let started = std::time::Instant::now();
        let result = blocking({
            let span = span.clone();
            move || {
                let _in = span.entered();
                let _slot = slot;
                job.decode()?.map(&t)
            }
        })
        .instrument(span.clone())
        .await
        .inspect_err(|e| span.in_scope(|| tracing::warn!(error = %e, "map failed")))?;
        tracing::debug!(task, attempt = req.attempt, ms = started.elapsed().as_millis() as u64, "map done");
        let (stream_bytes, stream_records) = convert::streams_to_pb(&result.streams);
        let path = result.location;
        // With worker shuffle the output stays here: the master names it by this worker.
        let location = if own_work_dir || held { storage::map_file_name(task, req.attempt) } else { path.clone() };
        let reply = pb::MapResponse {
            location,
            stream_bytes,
            stream_records,
            input_records: result.input_records,
            skipped_records: result.skipped_records,
            counters: result.counters.into_iter().collect(),
            held,
        };
        let bytes = prost::Message::encoded_len(&reply);
        if bytes > MAX_REPLY {
            let _ = std::fs::remove_file(&path);
            let streams = reply.stream_bytes.len();
            return Err(TaskError::ReplyTooLarge { bytes, limit: MAX_REPLY, streams, reducers }.into());
        }
        Ok(Response::new(reply))
    }

    fn store(&self) -> Result<&Store, TaskError> {
        self.store.as_ref().ok_or_else(|| TaskError::InvalidRequest("this worker keeps no map output".into()))
    }
}

/// Sets its flag when dropped: the handler of an RPC the master abandoned is dropped, and
/// the task running for it sees the flag and stops instead of burning a core.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Runs blocking user code off the async threads; a panic that escapes becomes an error.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, TaskError> + Send + 'static,
) -> Result<T, TaskError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) if e.is_panic() => Err(TaskError::Panic { at: "task".into(), message: panic_message(&*e.into_panic()) }),
        // The runtime is shutting down: nobody waits for the answer.
        Err(_) => Err(TaskError::Cancelled),
    }
}

/// The body of a `Fetch` answer.
type FetchStream = tokio_stream::wrappers::ReceiverStream<Result<pb::FetchChunk, Status>>;

#[tonic::async_trait]
impl pb::worker_server::Worker for WorkerService {
    type FetchStream = FetchStream;

    async fn fetch(&self, request: Request<pb::FetchRequest>) -> Result<Response<FetchStream>, Status> {
        let req = request.into_inner();
        let store = self.store()?;
        let held = if req.reduce {
            store.open_reduce_range(&req.job_id, req.map, req.attempt, req.offset, req.bytes)?
        } else {
            store.open_range(&req.job_id, req.map, req.attempt, req.offset, req.bytes)?
        };
        tracing::debug!(reduce = req.reduce, task = req.map, attempt = req.attempt, bytes = req.bytes, "fetch");
        Ok(Response::new(FetchStream::new(crate::shuffle::serve_range(held))))
    }

    async fn end_job(&self, request: Request<pb::EndJobRequest>) -> Result<Response<pb::EndJobResponse>, Status> {
        let id = request.into_inner().job_id;
        let job = JobId::parse(&id)
            .ok_or_else(|| TaskError::InvalidRequest(format!("job id {:?} is not 32 hex digits", id)))?;
        let store = self.store()?.clone();
        let path = store.dir().join(job.as_str());
        tokio::task::spawn_blocking(move || store.end_job(&job))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|error| TaskError::Write { path, error })?;
        Ok(Response::new(pb::EndJobResponse {}))
    }

    async fn wait(&self, request: Request<pb::WaitRequest>) -> Result<Response<pb::WaitResponse>, Status> {
        let wait = Duration::from_millis(request.into_inner().millis);
        if wait > MAX_WAIT {
            return Err(TaskError::InvalidRequest(format!("wait of {wait:?} exceeds {MAX_WAIT:?}")).into());
        }
        self.admit()?;
        if !wait.is_zero() {
            // A drain ends the Wait at once, so that the master hears of it now.
            let mut drain = self.drain.subscribe();
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = drain.wait_for(|draining| *draining) => return Err(TaskError::Draining.into()),
            }
        }
        Ok(Response::new(pb::WaitResponse {}))
    }

    async fn map(&self, request: Request<pb::MapRequest>) -> Result<Response<pb::MapResponse>, Status> {
        self.admit()?;
        self.run_map(request.into_inner(), None).await
    }

    async fn map_stream(
        &self,
        request: Request<tonic::Streaming<pb::MapInput>>,
    ) -> Result<Response<pb::MapResponse>, Status> {
        self.admit()?;
        let mut stream = request.into_inner();
        let first = stream.message().await?;
        let Some(pb::MapInput { part: Some(pb::map_input::Part::Request(req)) }) = first else {
            return Err(TaskError::InvalidRequest("a MapStream starts with its request".into()).into());
        };
        let (tx, rx) = tokio::sync::mpsc::channel(STREAMED_IN_FLIGHT);
        // The stream is read as the map reads: at most a few chunks wait in memory.
        tokio::spawn(async move {
            loop {
                let next = match stream.message().await {
                    Ok(Some(pb::MapInput { part: Some(pb::map_input::Part::Chunk(chunk)) })) => {
                        if chunk.data.len() > MAX_INPUT_CHUNK {
                            Err(std::io::Error::new(
                                std::io::ErrorKind::InvalidData,
                                format!("a chunk of {} bytes, more than {MAX_INPUT_CHUNK}", chunk.data.len()),
                            ))
                        } else {
                            Ok(chunk)
                        }
                    }
                    Ok(Some(_)) => Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "a second request")),
                    Ok(None) => return,
                    Err(status) => {
                        Err(std::io::Error::other(format!("the master's stream broke: {}", status.message())))
                    }
                };
                let end = next.is_err();
                if tx.send(next).await.is_err() || end {
                    return;
                }
            }
        });
        self.run_map(req, Some(rx)).await
    }

    async fn reduce(&self, request: Request<pb::ReduceRequest>) -> Result<Response<pb::ReduceResponse>, Status> {
        self.admit()?;
        let req = request.into_inner();
        let JobParts { job, reducers, compression, job_id, output_format, .. } = self.job(req.job)?;
        if req.partition >= reducers {
            return Err(TaskError::InvalidRequest(format!("partition {} of {reducers} reducers", req.partition)).into());
        }
        for location in &req.locations {
            if WorkerLocation::is_one(location) {
                WorkerLocation::parse(location)
                    .ok_or_else(|| TaskError::InvalidRequest(format!("bad worker location {location:?}")))?;
            } else {
                self.path(location)?;
            }
        }
        let inputs = convert::reduce_inputs_from_pb(req.locations, req.inputs, req.partition)
            .map_err(TaskError::InvalidRequest)?;
        // A work directory this worker cannot see (not there, or outside its roots): the
        // output stays in its own, for the master to fetch.
        let (work_dir, held) = match self.path(&req.work_dir) {
            Ok(dir) if tokio::fs::metadata(&dir).await.is_ok_and(|m| m.is_dir()) => (dir, false),
            Ok(_) | Err(TaskError::OutsideRoots { .. }) => (self.job_dir(&job_id)?, true),
            Err(e) => return Err(e.into()),
        };
        let partition = req.partition;
        let slot = self.slots.take()?;
        let cancelled = Arc::new(AtomicBool::new(false));
        let _cancel = CancelOnDrop(cancelled.clone());
        let t = ReduceTask {
            attempt: req.attempt,
            partition,
            inputs,
            work_dir,
            own_work_dir: held,
            fanin: MERGE_FANIN,
            compression,
            cancelled,
            files: self.files.clone(),
            output_format,
        };
        let span = tracing::info_span!("reduce", job = %job.name, partition, attempt = req.attempt);
        span.in_scope(|| tracing::debug!("reduce"));
        let started = std::time::Instant::now();
        let shuffle = self.shuffle.clone();
        let result = blocking({
            let span = span.clone();
            move || {
                let _in = span.entered();
                let _slot = slot;
                job.decode()?.reduce(&t, &*shuffle)
            }
        })
        .instrument(span.clone())
        .await
        .inspect_err(|e| span.in_scope(|| tracing::warn!(error = %e, "reduce failed")))?;
        tracing::debug!(partition, attempt = req.attempt, ms = started.elapsed().as_millis() as u64, "reduce done");
        // A held output is named by its file: the master fetches it by the ids it gave.
        let path = if held { storage::reduce_file_name(partition, req.attempt) } else { result.path };
        Ok(Response::new(pb::ReduceResponse {
            path,
            records: result.records,
            bytes: result.bytes,
            held,
            counters: result.counters.into_iter().collect(),
        }))
    }
}
