//! The worker: a tonic server running map and reduce attempts for registered job types.
//!
//! - this module: the gRPC service, the registry, and the checks of every request;
//! - `map`: a map attempt, from input lines to its output file;
//! - `reduce`: a reduce attempt, from map output ranges to its output file;
//! - `files`: the atomic output file and the scratch files of both.
//!
//! With worker shuffle (a map request's `worker_shuffle`), a map attempt writes into the
//! worker's own work directory ([`Worker::with_work_dir`]), one directory per job run,
//! and the worker serves the output with `Fetch` until the master's `EndJob` (see
//! `crate::shuffle`).
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
//! most [`MAX_SHARD_SEGMENTS`] segments of paths of at most [`MAX_PATH_BYTES`], about
//! 16 MiB; a map reply holds two varints per stream, at most 20 bytes, so one run of
//! 2^20 partitions ([`MAX_REDUCERS`]) takes at most 20 MiB, and a reply that would pass
//! the limit (many runs of many partitions) fails the attempt with a message saying so;
//! errors name a shard by its first file and size, so a status stays a few hundred bytes
//! plus one path.

mod files;
#[cfg(test)]
mod fuzz;
mod map;
mod reduce;
#[cfg(test)]
mod testing;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use mapreduce_core::shard::{MAX_PATH_BYTES, MAX_SHARD_SEGMENTS, Segment};
use mapreduce_core::{Compression, Job};
use mapreduce_rpc::pb;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status};

use crate::confine::Files;
use crate::convert;
use crate::error::{ServeError, TaskError, panic_message};
use crate::security::{Authenticate, Security, Token};
use crate::shuffle::store::{Store, default_work_dir};
use crate::shuffle::{GrpcShuffle, SharedFs, ShuffleSource, Shuffles, WorkerLocation};
use crate::storage::{self, JobId};
use map::{MapResult, MapTask};
use reduce::{ReduceResult, ReduceTask};

use mapreduce_core::job::{MAX_MAX_LINE_BYTES, MAX_REDUCERS, MAX_SORT_BUFFER, MIN_MAX_LINE_BYTES};
use mapreduce_core::scheduler::MAX_IDLE_WAIT as MAX_WAIT;
use mapreduce_core::shuffle::reduce_side::MERGE_FANIN;

/// A job type erased behind the worker's two operations.
trait ErasedJob: Send + Sync {
    fn map(&self, task: &MapTask) -> Result<MapResult, TaskError>;
    fn reduce(&self, task: &ReduceTask, source: &dyn ShuffleSource) -> Result<ReduceResult, TaskError>;
}

struct Typed<J>(J);

impl<J: Job> ErasedJob for Typed<J> {
    fn map(&self, task: &MapTask) -> Result<MapResult, TaskError> {
        // Records are guarded one by one; this catches panics elsewhere in user code (the
        // partitioner, the combiner while merging spills) with the task's name.
        catch_unwind(AssertUnwindSafe(|| map::run_map(&self.0, task))).unwrap_or_else(|payload| {
            Err(TaskError::Panic { at: format!("map-{:05}", task.task), message: panic_message(&*payload) })
        })
    }
    fn reduce(&self, task: &ReduceTask, source: &dyn ShuffleSource) -> Result<ReduceResult, TaskError> {
        catch_unwind(AssertUnwindSafe(|| reduce::run_reduce(&self.0, task, source))).unwrap_or_else(|payload| {
            Err(TaskError::Panic { at: format!("reduce-{:05}", task.partition), message: panic_message(&*payload) })
        })
    }
}

type Decoder = fn(&[u8]) -> Result<Arc<dyn ErasedJob>, postcard::Error>;

fn decode<J: Job>(bytes: &[u8]) -> Result<Arc<dyn ErasedJob>, postcard::Error> {
    Ok(Arc::new(Typed(postcard::from_bytes::<J>(bytes)?)))
}

/// A request's job, found in the registry but not decoded yet.
struct PendingJob {
    decoder: Decoder,
    name: String,
    payload: Vec<u8>,
}

impl PendingJob {
    fn decode(self) -> Result<Arc<dyn ErasedJob>, TaskError> {
        (self.decoder)(&self.payload).map_err(|source| TaskError::BadPayload { job: self.name, error: source })
    }
}

/// The job types a worker can run, by [`Job::NAME`]. The master ships each task with its
/// job's fields, which the worker decodes into the registered type.
#[derive(Clone, Default)]
pub struct Registry {
    jobs: HashMap<&'static str, Decoder>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.jobs.keys()).finish()
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers job type `J` under `J::NAME` (replacing any type of that name).
    pub fn register<J: Job>(mut self) -> Self {
        self.insert::<J>();
        self
    }

    pub(crate) fn insert<J: Job>(&mut self) {
        self.jobs.insert(J::NAME, decode::<J>);
    }

    /// Whether a job type of this name is registered.
    pub fn contains(&self, name: &str) -> bool {
        self.jobs.contains_key(name)
    }
}

/// A worker's registry, shared with an in-process cluster that adds job types to it.
pub(crate) type SharedRegistry = Arc<RwLock<Registry>>;

/// Runs a worker on `addr` until the process ends, with no token and no TLS: protected
/// mode lets it serve only a loopback address (see [`Worker::with_security`]).
pub async fn serve(addr: SocketAddr, registry: Registry) -> Result<(), ServeError> {
    let listener = TcpListener::bind(addr).await.map_err(|source| ServeError::Bind { addr, error: source })?;
    Worker::new(registry).serve_with_shutdown(listener, std::future::pending()).await
}

/// A worker server, with its options.
#[derive(Debug)]
pub struct Worker {
    service: WorkerService,
    /// The data roots to open when the service is built: `None` for an unconfined worker
    /// (in-process), empty for the default, the current directory.
    roots: Option<Vec<PathBuf>>,
    /// Who may call it: checked on every call, and against the listener's address.
    security: Security,
    /// Where map output stays with worker shuffle: `None` for a new directory under the
    /// OS's temporary directory, removed when the worker stops.
    work_dir: Option<PathBuf>,
}

impl Worker {
    /// A worker that runs the job types of `registry`, with no token and no TLS, confined
    /// to its current directory (see [`Worker::with_root`]) and to as many tasks at once
    /// as the machine has cores (see [`Worker::with_max_tasks`]).
    pub fn new(registry: Registry) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut worker = Self::with_shared(Arc::new(RwLock::new(registry))).with_max_tasks(cores);
        worker.roots = Some(Vec::new());
        worker
    }

    /// An unconfined worker without a task limit, sharing `registry`: the in-process
    /// workers of `Cluster::local`, which run the user's own job in the user's process.
    pub(crate) fn with_shared(registry: SharedRegistry) -> Self {
        let service = WorkerService {
            registry,
            files: Files::Unconfined,
            shuffle: Arc::new(SharedFs::default()),
            store: None,
            slots: Arc::new(Slots { running: AtomicUsize::new(0), limit: usize::MAX }),
        };
        Worker { service, roots: None, security: Security::new(), work_dir: None }
    }

    /// Adds a data root: the worker reads inputs and map outputs, and writes attempt
    /// files, only beneath its roots. A request naming a path outside every root, or one
    /// that leads out through a symlink, is refused (`PERMISSION_DENIED`), naming the path
    /// and the roots. The first call replaces the default root, the current directory;
    /// call it again for more roots. Roots are opened when the worker starts serving.
    pub fn with_root(mut self, root: impl Into<PathBuf>) -> Self {
        self.roots.get_or_insert_with(Vec::new).push(root.into());
        self
    }

    /// Keeps map output (with worker shuffle) in `dir`, one directory per job run, each
    /// removed when its job ends. The directory is the worker's own: made if missing,
    /// and the job directories in it (left by an earlier run of a worker) are removed
    /// when the worker starts. It is always writable by the worker, whatever its data
    /// roots. The default is a new directory `mapreduce-worker-<pid>-<random>` under the
    /// OS's temporary directory, removed when [`Worker::serve_with_shutdown`] ends.
    pub fn with_work_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.work_dir = Some(dir.into());
        self
    }

    /// Replaces the security settings: a call without the token is answered
    /// `UNAUTHENTICATED` before any handler runs; with TLS, the worker serves its
    /// certificate and, given a client CA, requires client certificates (see
    /// [`crate::security`]).
    pub fn with_security(mut self, security: Security) -> Self {
        self.security = security;
        self
    }

    /// Requires `token` on every call (keeping the other security settings).
    pub fn with_token(mut self, token: Token) -> Self {
        self.security = self.security.with_token(token);
        self
    }

    /// Lets the worker serve an address that is not loopback with nothing to authenticate
    /// its callers (protected mode off): anyone who reaches it can run tasks.
    pub fn insecure(mut self) -> Self {
        self.security = self.security.insecure();
        self
    }

    /// Runs at most `n` tasks (maps and reduces) at once (at least 1); a request for more
    /// is answered at once with `RESOURCE_EXHAUSTED` ("worker busy"). The default is the
    /// number of cores.
    pub fn with_max_tasks(mut self, n: usize) -> Self {
        self.service.slots = Arc::new(Slots { running: AtomicUsize::new(0), limit: n.max(1) });
        self
    }

    /// The gRPC service, for embedding in a server of your own (or wrapping in tests),
    /// with its data roots opened. It checks no token: that is
    /// [`Worker::serve_with_shutdown`]'s.
    pub fn into_service(self) -> Result<WorkerService, ServeError> {
        Ok(self.into_parts()?.0)
    }

    /// The service, and whether its work directory is a default one (to remove at the end).
    fn into_parts(mut self) -> Result<(WorkerService, bool), ServeError> {
        if let Some(mut roots) = self.roots.take() {
            if roots.is_empty() {
                roots.push(std::env::current_dir().map_err(|error| ServeError::Root { path: ".".into(), error })?);
            }
            let files = Files::confined(&roots).map_err(|(path, error)| ServeError::Root { path, error })?;
            self.service.files = files;
        }
        let default = self.work_dir.is_none();
        let dir = self.work_dir.take().unwrap_or_else(default_work_dir);
        let store = Store::open(&dir).map_err(|error| ServeError::WorkDir { path: dir, error })?;
        self.service.shuffle = Arc::new(Shuffles {
            shared: SharedFs::new(self.service.files.clone()),
            grpc: GrpcShuffle::new(store.clone(), self.security.clone()),
        });
        self.service.store = Some(store);
        Ok((self.service, default))
    }

    /// Whether [`Worker::serve_with_shutdown`] would serve a listener on `addr`: protected
    /// mode, and a certificate if TLS is set. For a caller that says where it listens only
    /// once this holds.
    pub fn check_listen(&self, addr: SocketAddr) -> Result<(), ServeError> {
        self.security.check_listen(addr)?;
        if let Some(tls) = self.security.tls() {
            tls.server_config()?;
        }
        Ok(())
    }

    /// Serves on an already-bound `listener` until `shutdown` completes.
    ///
    /// Refuses to start (protected mode, [`SecurityError::Unprotected`](crate::error::SecurityError::Unprotected)) when the
    /// listener's address is not loopback and neither a token nor a client CA is set,
    /// unless [`Worker::insecure`]; fails when the TLS settings lack the worker's
    /// certificate.
    pub async fn serve_with_shutdown(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ServeError> {
        let addr = listener.local_addr().map_err(ServeError::LocalAddr)?;
        self.check_listen(addr)?;
        let mut server = tonic::transport::Server::builder();
        if let Some(tls) = self.security.tls() {
            server = server.tls_config(tls.server_config()?).map_err(ServeError::Tls)?;
        }
        let authenticate = Authenticate(self.security.token().cloned());
        let (service, default_dir) = self.into_parts()?;
        let store = service.store.clone();
        let service = pb::worker_server::WorkerServer::new(service).max_decoding_message_size(64 << 20);
        let served = server
            .add_service(InterceptedService::new(service, authenticate))
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
            .await;
        if let Some(store) = store.filter(|_| default_dir) {
            store.remove();
        }
        served?;
        Ok(())
    }
}

/// The job part of a request, checked.
struct JobParts {
    job: PendingJob,
    reducers: u32,
    sort_buffer: u64,
    compression: Compression,
    max_line: usize,
    skip_long_lines: bool,
    /// The job run's id, if the master sent one.
    job_id: Option<JobId>,
}

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
}

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
    /// Checks the job part of a request and finds its type; the fields are decoded later,
    /// off the async threads (a user's `Deserialize` may be slow or panic).
    fn job(&self, spec: Option<pb::Job>) -> Result<JobParts, TaskError> {
        let spec = spec.ok_or_else(|| TaskError::InvalidRequest("missing job".into()))?;
        if !(1..=MAX_REDUCERS).contains(&spec.reducers) {
            return Err(TaskError::InvalidRequest(format!(
                "reducers must be in 1..={MAX_REDUCERS}, got {}",
                spec.reducers
            )));
        }
        if !(mapreduce_core::job::MIN_SORT_BUFFER..=MAX_SORT_BUFFER).contains(&spec.sort_buffer_bytes) {
            return Err(TaskError::InvalidRequest(format!(
                "sort buffer of {} bytes is out of range",
                spec.sort_buffer_bytes
            )));
        }
        let decoder = {
            let registry = self.registry.read().unwrap_or_else(|e| e.into_inner());
            registry.jobs.get(spec.name.as_str()).copied()
        };
        let decoder = decoder.ok_or_else(|| TaskError::UnknownJob(spec.name.clone()))?;
        let compression = convert::compression_from_pb(spec.compression)
            .ok_or_else(|| TaskError::InvalidRequest(format!("unknown compression {}", spec.compression)))?;
        if !(MIN_MAX_LINE_BYTES..=MAX_MAX_LINE_BYTES).contains(&spec.max_line_bytes) {
            return Err(TaskError::InvalidRequest(format!(
                "max line of {} bytes is outside {MIN_MAX_LINE_BYTES}..={MAX_MAX_LINE_BYTES}",
                spec.max_line_bytes
            )));
        }
        let job_id = match spec.job_id.as_str() {
            "" => None,
            id => Some(
                JobId::parse(id)
                    .ok_or_else(|| TaskError::InvalidRequest(format!("job id {id:?} is not 32 hex digits")))?,
            ),
        };
        Ok(JobParts {
            job_id,
            job: PendingJob { decoder, name: spec.name, payload: spec.payload },
            reducers: spec.reducers,
            sort_buffer: spec.sort_buffer_bytes,
            compression,
            max_line: spec.max_line_bytes as usize,
            skip_long_lines: spec.skip_long_lines,
        })
    }

    /// The worker's own directory of `job`'s map output, made if missing.
    fn job_dir(&self, job: &Option<JobId>) -> Result<PathBuf, TaskError> {
        let job =
            job.as_ref().ok_or_else(|| TaskError::InvalidRequest("a worker-shuffle map needs a job id".into()))?;
        let store = self.store()?;
        store.job_dir(job).map_err(|error| TaskError::Write { path: store.dir().join(job.as_str()), error })
    }

    fn store(&self) -> Result<&Store, TaskError> {
        self.store.as_ref().ok_or_else(|| TaskError::InvalidRequest("this worker keeps no map output".into()))
    }

    /// Checks that `path` is absolute, not too long, has no `..`, and lies under a data
    /// root (by name: opening it resolves it beneath the root, symlinks included).
    fn path(&self, path: &str) -> Result<PathBuf, TaskError> {
        if path.len() > MAX_PATH_BYTES {
            let start: String = path.chars().take(100).collect();
            return Err(TaskError::InvalidRequest(format!(
                "path {start:?}... of {} bytes is longer than the limit of {MAX_PATH_BYTES}",
                path.len()
            )));
        }
        let p = Path::new(path);
        if Files::Unconfined.admits(p) && !self.files.admits(p) {
            return Err(TaskError::OutsideRoots { path: path.to_string(), roots: self.files.describe_roots() });
        }
        if !self.files.admits(p) {
            return Err(TaskError::InvalidRequest(format!("path {path:?} must be absolute without '..'")));
        }
        Ok(p.to_path_buf())
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
        let held = self.store()?.open_range(&req.job_id, req.map, req.attempt, req.offset, req.bytes)?;
        tracing::debug!(map = req.map, attempt = req.attempt, bytes = req.bytes, "fetch");
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
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        Ok(Response::new(pb::WaitResponse {}))
    }

    async fn map(&self, request: Request<pb::MapRequest>) -> Result<Response<pb::MapResponse>, Status> {
        let req = request.into_inner();
        let JobParts { job, reducers, sort_buffer, compression, max_line, skip_long_lines, job_id } =
            self.job(req.job)?;
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
                self.path(&s.path)?;
                Ok(Segment { path: s.path.clone(), start: s.start, end: s.end })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let own_work_dir = req.worker_shuffle;
        let work_dir = if own_work_dir {
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
            own_work_dir,
            reducers,
            sort_buffer,
            compression,
            cancelled,
            files: self.files.clone(),
            max_line,
            skip_long_lines,
        };
        tracing::debug!(task, attempt = req.attempt, "map");
        let started = std::time::Instant::now();
        let result = blocking(move || {
            let _slot = slot;
            job.decode()?.map(&t)
        })
        .await
        .inspect_err(|e| tracing::warn!(task, error = %e, "map failed"))?;
        tracing::debug!(task, attempt = req.attempt, ms = started.elapsed().as_millis() as u64, "map done");
        let (stream_bytes, stream_records) = convert::streams_to_pb(&result.streams);
        let path = result.location;
        // With worker shuffle the output stays here: the master names it by this worker.
        let location = if own_work_dir { storage::map_file_name(task, req.attempt) } else { path.clone() };
        let reply = pb::MapResponse {
            location,
            stream_bytes,
            stream_records,
            input_records: result.input_records,
            skipped_records: result.skipped_records,
        };
        let bytes = prost::Message::encoded_len(&reply);
        if bytes > MAX_REPLY {
            let _ = std::fs::remove_file(&path);
            let streams = reply.stream_bytes.len();
            return Err(TaskError::ReplyTooLarge { bytes, limit: MAX_REPLY, streams, reducers }.into());
        }
        Ok(Response::new(reply))
    }

    async fn reduce(&self, request: Request<pb::ReduceRequest>) -> Result<Response<pb::ReduceResponse>, Status> {
        let req = request.into_inner();
        let JobParts { job, reducers, compression, .. } = self.job(req.job)?;
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
        let work_dir = self.path(&req.work_dir)?;
        let partition = req.partition;
        let slot = self.slots.take()?;
        let cancelled = Arc::new(AtomicBool::new(false));
        let _cancel = CancelOnDrop(cancelled.clone());
        let t = ReduceTask {
            attempt: req.attempt,
            partition,
            inputs,
            work_dir,
            fanin: MERGE_FANIN,
            compression,
            cancelled,
            files: self.files.clone(),
        };
        tracing::debug!(partition, attempt = req.attempt, "reduce");
        let started = std::time::Instant::now();
        let shuffle = self.shuffle.clone();
        let result = blocking(move || {
            let _slot = slot;
            job.decode()?.reduce(&t, &*shuffle)
        })
        .await
        .inspect_err(|e| tracing::warn!(partition, error = %e, "reduce failed"))?;
        tracing::debug!(partition, attempt = req.attempt, ms = started.elapsed().as_millis() as u64, "reduce done");
        Ok(Response::new(pb::ReduceResponse { path: result.path, records: result.records, bytes: result.bytes }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mapreduce_core::{BoxError, Emitter, Mapper, Output, Reducer};

    #[derive(serde::Serialize, serde::Deserialize)]
    struct Nop;

    impl Mapper for Nop {
        type Key = String;
        type Value = u64;
        fn map(&self, _: &str, _: &mut Emitter<'_, String, u64>) -> Result<(), BoxError> {
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
    fn the_job_part_of_a_request_is_checked_and_names_what_is_wrong() {
        let service = Worker::new(Registry::new().register::<Nop>()).into_service().unwrap();
        let spec = |compression| pb::Job {
            name: "nop".into(),
            payload: Vec::new(),
            reducers: 2,
            sort_buffer_bytes: 1 << 20,
            compression,
            max_line_bytes: 1 << 20,
            skip_long_lines: false,
            job_id: String::new(),
        };
        let parts = service.job(Some(spec(pb::Compression::Lz4 as i32))).unwrap();
        assert_eq!((parts.reducers, parts.sort_buffer, parts.compression), (2, 1 << 20, Compression::Lz4));
        for unknown in [0, 7] {
            let err = service.job(Some(spec(unknown))).err().expect("an unset or unknown compression is refused");
            assert!(
                matches!(&err, TaskError::InvalidRequest(m) if *m == format!("unknown compression {unknown}")),
                "{err}"
            );
        }
        let err = service.job(Some(pb::Job { name: "other".into(), ..spec(1) })).err().unwrap();
        assert!(matches!(&err, TaskError::UnknownJob(name) if name == "other"), "{err}");
        for max_line_bytes in [0, 1023, MAX_MAX_LINE_BYTES + 1] {
            let err = service.job(Some(pb::Job { max_line_bytes, ..spec(1) })).err().expect("refused");
            assert!(err.to_string().contains(&format!("max line of {max_line_bytes} bytes")), "{err}");
        }
    }
}
