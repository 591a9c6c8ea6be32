//! How the driver reaches its workers: the [`Transport`] seam, and [`Grpc`], the transport
//! of production (tonic clients of `mapreduce.v1.Worker`).
//!
//! A transport turns each scheduler action into a call and each reply into what the
//! scheduler hears; the driver puts deadlines on the calls and cuts woken Waits short, so
//! a transport knows nothing of time. Tests drive the driver through a fake.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use mapreduce_core::scheduler::{AttemptId, Failure, TaskId, TaskOutput, TaskSpec, WorkerId};
use mapreduce_rpc::pb;
use mapreduce_rpc::pb::worker_client::WorkerClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use super::replies::{Expected, Holder, counters_from_pb, failure_from_status, map_output};
use crate::convert;
use crate::error::{ClusterError, DRAINING, INPUT_UNSEEN};
use crate::security::{Bearer, Security};
use crate::shuffle::WorkerLocation;
use crate::storage;

/// The reply of a call, as the scheduler hears it.
pub(crate) type Reply<T> = Pin<Box<dyn Future<Output = Result<T, Failure>> + Send>>;

/// How the driver calls workers. Calls are futures that the driver may drop at any time
/// (a deadline passed, a Wait was woken): dropping one abandons the call.
pub(crate) trait Transport: Send + Sync {
    /// A Wait of `for_` on `worker`.
    fn wait(&self, worker: WorkerId, for_: Duration) -> Reply<()>;
    /// Runs `task` as `attempt` on `worker`.
    fn run(&self, worker: WorkerId, attempt: AttemptId, task: TaskId, spec: TaskSpec) -> Reply<TaskOutput>;
    /// Deletes the output of an attempt that lost (in the background).
    fn discard(&self, output: TaskOutput);
    /// The worker's address, for logs.
    fn addr(&self, worker: WorkerId) -> &str;
    /// Whether a worker of this address takes part already.
    fn knows(&self, addr: &str) -> bool;
    /// A worker that joined: the next [`WorkerId`] in order.
    fn add(&mut self, worker: WorkerEndpoint);
}

/// A worker's gRPC client, which puts the master's token on every call.
pub(crate) type Client = WorkerClient<InterceptedService<Channel, Bearer>>;

/// A worker's address and its gRPC client.
#[derive(Debug, Clone)]
pub(crate) struct WorkerEndpoint {
    pub(crate) addr: String,
    pub(crate) client: Client,
}

/// Whether an `https://` address without TLS settings is an error now ([`Scheme::Strict`])
/// or waits for the settings ([`Scheme::Lenient`], in `Cluster::connect`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scheme {
    Strict,
    Lenient,
}

/// The most a message may hold, either way.
pub(crate) const MAX_MESSAGE: usize = 64 << 20;

impl WorkerEndpoint {
    /// A lazily connected client of `addr` with `security`'s token and TLS (see [`channel`]).
    pub(crate) fn new(addr: &str, security: &Security, scheme: Scheme) -> Result<WorkerEndpoint, ClusterError> {
        let client =
            WorkerClient::with_interceptor(channel(addr, security, scheme)?, Bearer(security.token().cloned()))
                .max_decoding_message_size(MAX_MESSAGE);
        Ok(WorkerEndpoint { addr: addr.to_string(), client })
    }
}

/// A lazily connected channel to `addr` with `security`'s TLS. Without TLS, `addr` is
/// `host:port` or `http://host:port` (and `https://host:port` only if `scheme` is
/// lenient, for TLS settings to come); with TLS, `host:port` or `https://host:port`.
pub(crate) fn channel(addr: &str, security: &Security, scheme: Scheme) -> Result<Channel, ClusterError> {
    let bad = |reason: &str| ClusterError::BadAddress { addr: addr.to_string(), reason: reason.to_string() };
    let tls = security.tls();
    let uri = match (addr.split_once("://"), tls) {
        (None, None) => format!("http://{addr}"),
        (None, Some(_)) => format!("https://{addr}"),
        (Some(("http", _)), Some(_)) => return Err(bad("http:// with TLS settings: use https:// or host:port")),
        (Some(("https", _)), None) if scheme == Scheme::Strict => {
            return Err(bad("https:// needs TLS settings (a CA)"));
        }
        (Some(_), _) => addr.to_string(),
    };
    let mut endpoint = Endpoint::from_shared(uri).map_err(|e| bad(&e.to_string()))?;
    if endpoint.uri().port_u16().is_none() {
        return Err(bad("no port"));
    }
    if let Some(tls) = tls {
        endpoint = endpoint
            .tls_config(tls.client_config()?)
            .map_err(|error| ClusterError::Tls { addr: addr.to_string(), error })?;
    }
    Ok(endpoint
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(20))
        .connect_lazy())
}

/// The production transport: gRPC calls to workers. A worker reads an input itself if it
/// sees it as the master listed it, else the master streams the shard to it (and to that
/// worker from then on); a reduce output a worker could not write into the job's work
/// directory is fetched from it and written there by the master.
pub(crate) struct Grpc {
    pub(crate) workers: Vec<WorkerEndpoint>,
    pub(crate) job: Arc<pb::Job>,
    /// The job's work directory, where every attempt writes (maps: unless `worker_shuffle`).
    pub(crate) work_dir: Arc<str>,
    /// Map output stays on the worker that wrote it, named by a `WorkerLocation`.
    pub(crate) worker_shuffle: bool,
    /// The inputs' lengths as listed, by path.
    pub(crate) file_bytes: Arc<std::collections::HashMap<String, u64>>,
    /// The workers (by address) that cannot see the inputs: the master streams them.
    pub(crate) streamed_to: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
    /// Whether some worker kept a reduce output (it is removed by `EndJob`).
    pub(crate) held_reduces: Arc<std::sync::atomic::AtomicBool>,
}

impl Grpc {
    /// A transport of `job` to `workers`, writing into `work_dir`, of inputs of
    /// `file_bytes` (by path).
    pub(crate) fn new(
        workers: Vec<WorkerEndpoint>,
        job: Arc<pb::Job>,
        work_dir: &str,
        worker_shuffle: bool,
        file_bytes: std::collections::HashMap<String, u64>,
    ) -> Self {
        Grpc {
            workers,
            job,
            work_dir: Arc::from(work_dir),
            worker_shuffle,
            file_bytes: Arc::new(file_bytes),
            streamed_to: Arc::default(),
            held_reduces: Arc::default(),
        }
    }
}

impl Transport for Grpc {
    fn wait(&self, worker: WorkerId, for_: Duration) -> Reply<()> {
        let mut client = self.workers[worker.0 as usize].client.clone();
        Box::pin(async move {
            let req = pb::WaitRequest { millis: for_.as_millis() as u64 };
            match client.wait(req).await {
                Ok(_) => Ok(()),
                Err(status) if status.metadata().contains_key(DRAINING) => Err(failure_from_status(&status)),
                // A refusal says so (the job's end names the last failure of a Wait)...
                Err(status) if status.code() == tonic::Code::Unauthenticated => Err(failure_from_status(&status)),
                // ...otherwise, however the worker answers, it is not idle: an unreachable worker.
                Err(status) => Err(Failure::Unreachable(status.message().to_string())),
            }
        })
    }

    fn run(&self, worker: WorkerId, attempt: AttemptId, task: TaskId, spec: TaskSpec) -> Reply<TaskOutput> {
        let endpoint = &self.workers[worker.0 as usize];
        let mut client = endpoint.client.clone();
        let job = Some((*self.job).clone());
        let reducers = self.job.reducers;
        let work_dir = self.work_dir.clone();
        let holder = self.worker_shuffle.then(|| Holder { addr: endpoint.addr.clone(), job: self.job.job_id.clone() });
        let (addr, file_bytes, streamed_to) =
            (endpoint.addr.clone(), self.file_bytes.clone(), self.streamed_to.clone());
        let max_line = self.job.max_line_bytes;
        let (job_id, held_reduces) = (self.job.job_id.clone(), self.held_reduces.clone());
        Box::pin(async move {
            match spec {
                TaskSpec::Map { shard } => {
                    let segments = shard
                        .segments
                        .into_iter()
                        .map(|s| {
                            let file_bytes = file_bytes.get(&s.path).copied().unwrap_or(0);
                            pb::Segment { path: s.path, start: s.start, end: s.end, file_bytes }
                        })
                        .collect();
                    let req = pb::MapRequest {
                        job,
                        task: u64::from(task.index),
                        attempt: attempt.0,
                        segments,
                        work_dir: if holder.is_some() { String::new() } else { work_dir.to_string() },
                        worker_shuffle: holder.is_some(),
                        streamed_bytes: Vec::new(),
                    };
                    let stream = streamed_to.lock().unwrap_or_else(|e| e.into_inner()).contains(&addr);
                    let reply = if stream { None } else { Some(client.map(req.clone()).await) };
                    let mut reply = match reply {
                        Some(Err(status)) if status.metadata().contains_key(INPUT_UNSEEN) => {
                            tracing::info!(%addr, why = status.message(), "the master streams this worker its shards");
                            streamed_to.lock().unwrap_or_else(|e| e.into_inner()).insert(addr.clone());
                            stream_map(&mut client, req, max_line).await?
                        }
                        Some(reply) => reply.map_err(|s| failure_from_status(&s))?.into_inner(),
                        None => stream_map(&mut client, req, max_line).await?,
                    };
                    if reply.held {
                        // A map-only job's output, kept by a worker that cannot see the work
                        // directory: fetched into it now, as a held reduce output is.
                        let name = storage::map_file_name(task.index, attempt.0);
                        if reducers != 0 || reply.location != name || reply.stream_bytes.len() != 1 {
                            return Err(Failure::Task(format!(
                                "worker answered held map output {:?} of {} streams, expected {name:?} of a map-only job",
                                reply.location,
                                reply.stream_bytes.len()
                            )));
                        }
                        held_reduces.store(true, std::sync::atomic::Ordering::Relaxed);
                        let expected = Path::new(&*work_dir).join(&name);
                        let fetch = pb::FetchRequest {
                            job_id,
                            map: task.index,
                            attempt: attempt.0,
                            offset: 0,
                            bytes: reply.stream_bytes[0],
                            reduce: false,
                        };
                        pull_output(&mut client, fetch, expected.clone()).await?;
                        reply.location = expected.to_string_lossy().into_owned();
                    }
                    let at = match &holder {
                        Some(holder) => Expected::Held(holder),
                        None => Expected::InWorkDir(&work_dir),
                    };
                    map_output(reply, reducers, at, task.index, attempt)
                }
                TaskSpec::Reduce { partition, inputs } => {
                    let (locations, inputs) = convert::reduce_inputs_to_pb(&inputs);
                    let req = pb::ReduceRequest {
                        job,
                        task: u64::from(task.index),
                        attempt: attempt.0,
                        partition,
                        locations,
                        inputs,
                        work_dir: work_dir.to_string(),
                    };
                    let r = client.reduce(req).await.map_err(|s| failure_from_status(&s))?.into_inner();
                    let name = storage::reduce_file_name(partition, attempt.0);
                    let expected = Path::new(&*work_dir).join(&name);
                    if r.held {
                        if r.path != name {
                            return Err(Failure::Task(format!(
                                "worker answered held output {:?}, expected {name:?}",
                                r.path
                            )));
                        }
                        held_reduces.store(true, std::sync::atomic::Ordering::Relaxed);
                        let fetch = pb::FetchRequest {
                            job_id,
                            map: partition,
                            attempt: attempt.0,
                            offset: 0,
                            bytes: r.bytes,
                            reduce: true,
                        };
                        let counters = counters_from_pb(r.counters)?;
                        pull_output(&mut client, fetch, expected.clone()).await?;
                        let path = expected.to_string_lossy().into_owned();
                        return Ok(TaskOutput::Reduce { path, records: r.records, bytes: r.bytes, counters });
                    }
                    if Path::new(&r.path) != expected {
                        return Err(Failure::Task(format!(
                            "worker answered output {:?}, expected {expected:?}",
                            r.path
                        )));
                    }
                    let counters = counters_from_pb(r.counters)?;
                    Ok(TaskOutput::Reduce { path: r.path, records: r.records, bytes: r.bytes, counters })
                }
            }
        })
    }

    fn discard(&self, output: TaskOutput) {
        let path = output.location().to_string();
        if WorkerLocation::is_one(&path) {
            // On its worker: removed with the rest of the job's map output (EndJob).
            return;
        }
        tokio::task::spawn_blocking(move || {
            let _ = std::fs::remove_file(path);
        });
    }

    fn addr(&self, worker: WorkerId) -> &str {
        &self.workers[worker.0 as usize].addr
    }

    fn knows(&self, addr: &str) -> bool {
        self.workers.iter().any(|w| w.addr == addr)
    }

    fn add(&mut self, worker: WorkerEndpoint) {
        self.workers.push(worker);
    }
}

/// Bytes of a streamed shard per message.
const INPUT_CHUNK: usize = 1 << 20;

/// Runs `req` as a `MapStream`: the master reads the shard's bytes from its own files and
/// sends them, as much of each segment as a worker reading it would read.
async fn stream_map(client: &mut Client, mut req: pb::MapRequest, max_line: u64) -> Result<pb::MapResponse, Failure> {
    let segments = req.segments.clone();
    let ranges = tokio::task::spawn_blocking(move || streamed_ranges(&segments, max_line))
        .await
        .map_err(|e| Failure::Task(format!("reading the shard: {e}")))?
        .map_err(Failure::Task)?;
    req.streamed_bytes = ranges.iter().map(|r| r.1).collect();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let first = pb::MapInput { part: Some(pb::map_input::Part::Request(req.clone())) };
    tx.send(first).await.map_err(|_| Failure::Task("the stream closed".into()))?;
    let paths: Vec<String> = req.segments.iter().map(|s| s.path.clone()).collect();
    tokio::task::spawn_blocking(move || {
        for (segment, ((from, len), path)) in ranges.into_iter().zip(paths).enumerate() {
            let file = match std::fs::File::open(&path) {
                Ok(file) => file,
                Err(e) => return tracing::warn!(%path, error = %e, "cannot stream an input"),
            };
            let mut at = from;
            while at < from + len {
                let mut data = vec![0; ((from + len - at) as usize).min(INPUT_CHUNK)];
                if let Err(e) = std::os::unix::fs::FileExt::read_exact_at(&file, &mut data, at) {
                    return tracing::warn!(%path, error = %e, "cannot stream an input");
                }
                at += data.len() as u64;
                let chunk = pb::InputChunk { segment: segment as u32, data };
                if tx.blocking_send(pb::MapInput { part: Some(pb::map_input::Part::Chunk(chunk)) }).is_err() {
                    return; // the call ended
                }
            }
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    Ok(client.map_stream(stream).await.map_err(|s| failure_from_status(&s))?.into_inner())
}

/// Per segment, the bytes a worker reading the file would read: from the byte before the
/// segment (0 for one at 0) through the newline that ends the line holding its last byte,
/// or the file's end, or `max_line + 2` bytes past that byte (a line too long to read).
fn streamed_ranges(segments: &[pb::Segment], max_line: u64) -> Result<Vec<(u64, u64)>, String> {
    use std::io::Read;
    segments
        .iter()
        .map(|s| {
            let fail = |e: std::io::Error| format!("the master cannot read input {}: {e}", s.path);
            let file = std::fs::File::open(&s.path).map_err(fail)?;
            let len = file.metadata().map_err(fail)?.len();
            if s.end > len {
                return Err(format!("input {} is {len} bytes, shorter than its segment: did it shrink?", s.path));
            }
            let from = s.start.saturating_sub(1);
            if s.end == len || s.end == 0 {
                return Ok((from, s.end - from));
            }
            let mut tail = std::io::BufReader::with_capacity(64 << 10, &file);
            std::io::Seek::seek(&mut tail, std::io::SeekFrom::Start(s.end - 1)).map_err(fail)?;
            let most = max_line.saturating_add(2).min(len - (s.end - 1));
            let mut scanned = 0u64;
            let mut buf = [0u8; 64 << 10];
            while scanned < most {
                let want = (most - scanned).min(buf.len() as u64) as usize;
                let n = tail.read(&mut buf[..want]).map_err(fail)?;
                if n == 0 {
                    break;
                }
                if let Some(i) = buf[..n].iter().position(|&b| b == b'\n') {
                    return Ok((from, s.end - 1 + scanned + i as u64 + 1 - from));
                }
                scanned += n as u64;
            }
            Ok((from, s.end - 1 + scanned - from))
        })
        .collect()
}

/// Fetches a reduce output a worker held and writes it at `to` atomically (a temporary
/// name in the same directory, then a rename).
async fn pull_output(client: &mut Client, fetch: pb::FetchRequest, to: std::path::PathBuf) -> Result<(), Failure> {
    let bytes = fetch.bytes;
    let mut stream = client.fetch(fetch).await.map_err(|s| failure_from_status(&s))?.into_inner();
    let tmp = to.with_extension("pull");
    let fail = |e: std::io::Error| Failure::Task(format!("cannot write {}: {e}", tmp.display()));
    let mut file = tokio::fs::File::create(&tmp).await.map_err(fail)?;
    let mut got = 0u64;
    let result = async {
        while let Some(chunk) = stream.message().await.map_err(|s| failure_from_status(&s))? {
            got += chunk.data.len() as u64;
            if got > bytes {
                return Err(Failure::Task(format!("the worker sent more than the {bytes} bytes of its output")));
            }
            tokio::io::AsyncWriteExt::write_all(&mut file, &chunk.data).await.map_err(fail)?;
        }
        if got != bytes {
            return Err(Failure::Task(format!("the worker sent {got} of the {bytes} bytes of its output")));
        }
        tokio::io::AsyncWriteExt::flush(&mut file).await.map_err(fail)?;
        file.sync_all().await.map_err(fail)?;
        tokio::fs::rename(&tmp, &to).await.map_err(fail)
    }
    .await;
    if result.is_err() {
        let _ = tokio::fs::remove_file(&tmp).await;
    }
    result
}
