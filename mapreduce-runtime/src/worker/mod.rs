//! The worker: a tonic server running map and reduce attempts for registered job types.
//!
//! - this module: the gRPC service, the registry, and the checks of every request;
//! - `map`: a map attempt, from input lines to its output file;
//! - `reduce`: a reduce attempt, from map output ranges to its output file;
//! - `files`: the atomic output file and the scratch files of both.
//!
//! User code runs on tokio's blocking pool, never on the async threads, and a panic in it
//! is caught and answered as a failed attempt: a worker survives any task.

mod files;
mod map;
mod reduce;
#[cfg(test)]
mod testing;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use mapreduce_core::shard::Segment;
use mapreduce_core::{Compression, Job};
use mapreduce_rpc::pb;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status};

use crate::convert;
use crate::error::{ServeError, TaskError, panic_message};
use crate::security::{Authenticate, Security, Token};
use crate::shuffle::{SharedFs, ShuffleSource};
use map::{MapResult, MapTask};
use reduce::{ReduceResult, ReduceTask};

use mapreduce_core::job::{MAX_REDUCERS, MAX_SORT_BUFFER};
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
        (self.decoder)(&self.payload).map_err(|source| TaskError::BadPayload { job: self.name, source })
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
    let listener = TcpListener::bind(addr).await.map_err(|source| ServeError::Bind { addr, source })?;
    Worker::new(registry).serve_with_shutdown(listener, std::future::pending()).await
}

/// A worker server, with its options.
#[derive(Debug)]
pub struct Worker {
    service: WorkerService,
    /// Who may call it: checked on every call, and against the listener's address.
    security: Security,
}

impl Worker {
    /// A worker that runs the job types of `registry`, with no token and no TLS.
    pub fn new(registry: Registry) -> Self {
        Self::with_shared(Arc::new(RwLock::new(registry)))
    }

    pub(crate) fn with_shared(registry: SharedRegistry) -> Self {
        Worker {
            service: WorkerService { registry, root: None, shuffle: Arc::new(SharedFs) },
            security: Security::new(),
        }
    }

    /// Confines the worker to files under `root`: a request naming any path outside it is
    /// refused. Without a root, any absolute path is accepted.
    pub fn with_root(mut self, root: impl Into<PathBuf>) -> Self {
        self.service.root = Some(root.into());
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

    /// The gRPC service, for embedding in a server of your own (or wrapping in tests).
    /// It checks no token: that is [`Worker::serve_with_shutdown`]'s.
    pub fn into_service(self) -> WorkerService {
        self.service
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
        let service = pb::worker_server::WorkerServer::new(self.service).max_decoding_message_size(64 << 20);
        let authenticate = Authenticate(self.security.token().cloned());
        server
            .add_service(InterceptedService::new(service, authenticate))
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
            .await?;
        Ok(())
    }
}

/// The job part of a request, checked.
struct JobParts {
    job: PendingJob,
    reducers: u32,
    sort_buffer: u64,
    compression: Compression,
}

/// The worker's gRPC service (`mapreduce.v1.Worker`).
#[derive(Debug, Clone)]
pub struct WorkerService {
    registry: SharedRegistry,
    root: Option<PathBuf>,
    /// Where reduces read map output from.
    shuffle: Arc<dyn ShuffleSource>,
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
        Ok(JobParts {
            job: PendingJob { decoder, name: spec.name, payload: spec.payload },
            reducers: spec.reducers,
            sort_buffer: spec.sort_buffer_bytes,
            compression,
        })
    }

    /// Checks that `path` is absolute, has no `..`, and lies under the root if one is set.
    fn path(&self, path: &str) -> Result<PathBuf, TaskError> {
        let p = Path::new(path);
        if !p.is_absolute() || p.components().any(|c| matches!(c, Component::ParentDir)) {
            return Err(TaskError::InvalidRequest(format!("path {path:?} must be absolute without '..'")));
        }
        if let Some(root) = self.root.as_ref().filter(|root| !p.starts_with(root)) {
            return Err(TaskError::InvalidRequest(format!(
                "path {path:?} is outside the data root {}",
                root.display()
            )));
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

#[tonic::async_trait]
impl pb::worker_server::Worker for WorkerService {
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
        let JobParts { job, reducers, sort_buffer, compression } = self.job(req.job)?;
        let task = u32::try_from(req.task).map_err(|_| TaskError::InvalidRequest("task index too large".into()))?;
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
        let work_dir = self.path(&req.work_dir)?;
        let cancelled = Arc::new(AtomicBool::new(false));
        let _cancel = CancelOnDrop(cancelled.clone());
        let t =
            MapTask { task, attempt: req.attempt, segments, work_dir, reducers, sort_buffer, compression, cancelled };
        tracing::debug!(task, attempt = req.attempt, "map");
        let started = std::time::Instant::now();
        let result = blocking(move || job.decode()?.map(&t))
            .await
            .inspect_err(|e| tracing::warn!(task, error = %e, "map failed"))?;
        tracing::debug!(task, attempt = req.attempt, ms = started.elapsed().as_millis() as u64, "map done");
        Ok(Response::new(pb::MapResponse {
            location: result.location,
            ranges: result
                .streams
                .into_iter()
                .map(|s| pb::StreamRange {
                    partition: s.partition,
                    offset: s.offset,
                    bytes: s.bytes,
                    records: s.records,
                })
                .collect(),
            input_records: result.input_records,
        }))
    }

    async fn reduce(&self, request: Request<pb::ReduceRequest>) -> Result<Response<pb::ReduceResponse>, Status> {
        let req = request.into_inner();
        let JobParts { job, reducers, compression, .. } = self.job(req.job)?;
        if req.partition >= reducers {
            return Err(TaskError::InvalidRequest(format!("partition {} of {reducers} reducers", req.partition)).into());
        }
        for location in &req.locations {
            self.path(location)?;
        }
        let inputs = convert::reduce_inputs_from_pb(req.locations, req.inputs, req.partition)
            .map_err(TaskError::InvalidRequest)?;
        let work_dir = self.path(&req.work_dir)?;
        let partition = req.partition;
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
        };
        tracing::debug!(partition, attempt = req.attempt, "reduce");
        let started = std::time::Instant::now();
        let shuffle = self.shuffle.clone();
        let result = blocking(move || job.decode()?.reduce(&t, &*shuffle))
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
        let service = Worker::new(Registry::new().register::<Nop>()).into_service();
        let spec = |compression| pb::Job {
            name: "nop".into(),
            payload: Vec::new(),
            reducers: 2,
            sort_buffer_bytes: 1 << 20,
            compression,
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
    }
}
