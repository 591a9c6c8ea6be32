//! [`Cluster`]: the workers a job runs on, and [`Cluster::run`], which plans a job, drives
//! it to its end and commits its output.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use mapreduce_core::InputFormat;
use mapreduce_core::scheduler::{JobPlan, JobStatus, WorkerId};
use mapreduce_core::shard::{Codec, InputFile, plan_shards_with, split_size};
use mapreduce_core::{Job, JobReport, JobSpec, Scheduler, SchedulerConfig};
use mapreduce_rpc::pb;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use super::driver::drive;
use super::join::{JoinService, Joined, MAX_JOIN_ADDR};
use super::replies::status_message;
use super::transport::{Grpc, MAX_MESSAGE, Scheme, WorkerEndpoint};
use crate::convert;
use crate::error::{ClusterError, RunError};
use crate::security::{self, Security, Token};
use crate::storage::{self, OutputDir};
use crate::worker::{Registry, SharedRegistry, Worker};

/// How long the pre-flight check waits for a worker to answer.
const PREFLIGHT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a job's result waits for its workers to acknowledge its end.
const END_JOB_GRACE: Duration = Duration::from_millis(500);

/// A set of workers that jobs run on, and how the master proves itself to them
/// ([`Cluster::with_token`], [`Cluster::with_security`]).
///
/// ```no_run
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// use mapreduce_runtime::Cluster;
/// let local = Cluster::local(2).await?; // two in-process workers behind real gRPC
/// let remote = Cluster::connect(["127.0.0.1:7001", "http://127.0.0.1:7002"])?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Cluster {
    workers: Vec<WorkerEndpoint>,
    /// The token and TLS settings the endpoints were made with, kept to remake them.
    security: Security,
    config: SchedulerConfig,
    /// In-process workers: their registry (jobs are added to it as they run) and the
    /// senders whose drop stops them.
    local: Option<(SharedRegistry, Vec<oneshot::Sender<()>>)>,
    /// Map output stays on the worker that wrote it ([`Cluster::with_worker_shuffle`]).
    worker_shuffle: bool,
    /// Where the master listens for workers that join ([`Cluster::listen`]).
    listening: Option<Listening>,
    /// The running job's progress ([`Cluster::progress`]).
    progress: tokio::sync::watch::Sender<Option<JobStatus>>,
}

/// A master's `Join` server: its address, the workers offered, and the sender whose drop
/// stops it.
#[derive(Debug)]
struct Listening {
    addr: std::net::SocketAddr,
    joined: Arc<Joined>,
    _stop: oneshot::Sender<()>,
}

impl Cluster {
    /// Starts `n` workers in this process, each a real gRPC server on `127.0.0.1` with an
    /// OS-chosen port. They stop when the cluster is dropped. Job types need no
    /// registration: [`Cluster::run`] registers its job's type on them.
    ///
    /// The workers and the cluster share a fresh random token, so that other users of
    /// this host who reach `127.0.0.1` cannot use them; no TLS (the traffic stays on
    /// loopback).
    pub async fn local(n: usize) -> Result<Self, ClusterError> {
        if n == 0 {
            return Err(ClusterError::NoWorkers);
        }
        let security = Security::new().with_token(Token::random()?);
        let registry: SharedRegistry = Arc::new(RwLock::new(Registry::new()));
        let mut workers = Vec::with_capacity(n);
        let mut stops = Vec::with_capacity(n);
        for _ in 0..n {
            let listener = TcpListener::bind(("127.0.0.1", 0)).await.map_err(ClusterError::Bind)?;
            let addr = listener.local_addr().map_err(ClusterError::Bind)?;
            let (stop, stopped) = oneshot::channel::<()>();
            let worker = Worker::with_shared(registry.clone()).with_security(security.clone());
            tokio::spawn(async move {
                if let Err(e) = worker.serve_with_shutdown(listener, async { stopped.await.unwrap_or(()) }).await {
                    tracing::error!(%addr, error = %e, "local worker failed");
                }
            });
            workers.push(WorkerEndpoint::new(&addr.to_string(), &security, Scheme::Strict)?);
            stops.push(stop);
        }
        Ok(Cluster {
            workers,
            security,
            config: SchedulerConfig::default(),
            local: Some((registry, stops)),
            worker_shuffle: false,
            listening: None,
            progress: tokio::sync::watch::Sender::new(None),
        })
    }

    /// A cluster of remote workers at `addrs` (`host:port`, `http://host:port`, or
    /// `https://host:port`, which needs TLS settings from [`Cluster::with_security`]),
    /// with no token and no TLS until [`Cluster::with_token`] or
    /// [`Cluster::with_security`]. Nothing is dialled yet: [`Cluster::run`] checks that
    /// some worker answers before it starts. `addrs` may be empty if the master listens
    /// for workers that join ([`Cluster::listen`]).
    pub fn connect(addrs: impl IntoIterator<Item = impl AsRef<str>>) -> Result<Self, ClusterError> {
        let security = Security::new();
        let workers = addrs
            .into_iter()
            .map(|a| WorkerEndpoint::new(a.as_ref(), &security, Scheme::Lenient))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Cluster {
            workers,
            security,
            config: SchedulerConfig::default(),
            local: None,
            // Remote workers need not share a filesystem: map output stays where it is
            // made, as in Google MR and Hadoop.
            worker_shuffle: true,
            listening: None,
            progress: tokio::sync::watch::Sender::new(None),
        })
    }

    /// Listens on `listener` for workers that join (`mapreduce.v1.Master`'s `Join`, which
    /// a worker started with [`Worker::with_join`](crate::Worker::with_join) calls): a
    /// joined worker takes part in the job that runs, getting tasks at once, and in every
    /// job after; its address is listed in the report. The calls are checked as a
    /// worker checks the master's: the token, and with TLS the master serves its
    /// certificate (it needs one) and, having a CA, requires the workers' client
    /// certificates. Call it after [`Cluster::with_security`]: the server keeps the
    /// security settings it was started with. It stops when the cluster is dropped.
    ///
    /// Refuses, as a worker does (protected mode), an address that is not loopback when
    /// nothing authenticates the callers (neither a token nor a CA), unless the security
    /// settings are [`Security::insecure`].
    pub fn listen(mut self, listener: TcpListener) -> Result<Self, ClusterError> {
        let addr = listener.local_addr().map_err(ClusterError::Bind)?;
        let listen_error = |reason: String| ClusterError::Listen { addr, reason };
        self.security.check_listen(addr).map_err(|e| listen_error(e.to_string()))?;
        let tls = match self.security.tls() {
            Some(tls) if !tls.has_identity() => {
                return Err(listen_error("a master's TLS needs its certificate and key to listen".into()));
            }
            Some(tls) => Some(tls.rustls_server_config().map_err(|e| listen_error(e.to_string()))?),
            None => None,
        };
        let mut server = tonic::transport::Server::builder();
        let joined = Arc::new(Joined::new(Vec::new()));
        let service = JoinService { joined: joined.clone(), security: self.security.clone() };
        let authenticate = security::Authenticate(self.security.token().cloned());
        let service = tonic::service::interceptor::InterceptedService::new(
            pb::master_server::MasterServer::new(service).max_decoding_message_size(64 << 10),
            authenticate,
        );
        let (stop, stopped) = oneshot::channel::<()>();
        let router = server.add_service(service);
        tokio::spawn(async move {
            let incoming = crate::worker::incoming(listener);
            let shutdown = async { stopped.await.unwrap_or(()) };
            let served = match tls {
                Some(config) => {
                    router.serve_with_incoming_shutdown(crate::worker::tls(incoming, config), shutdown).await
                }
                None => router.serve_with_incoming_shutdown(incoming, shutdown).await,
            };
            if let Err(e) = served {
                tracing::error!(%addr, error = %e, "the master's join server failed");
            }
        });
        tracing::info!(%addr, "listening for workers that join");
        self.listening = Some(Listening { addr, joined, _stop: stop });
        Ok(self)
    }

    /// Where the master listens for workers that join, if it does ([`Cluster::listen`]).
    pub fn listen_addr(&self) -> Option<std::net::SocketAddr> {
        self.listening.as_ref().map(|l| l.addr)
    }

    /// Replaces how the master proves itself: every call carries the token, and with TLS
    /// the master dials `https://` (a bare `host:port` means `https://host:port`; an
    /// `http://` address is refused), checks the workers' certificates against the CA and
    /// presents its client certificate if it has one. Fails when the TLS settings lack a
    /// CA, or an address's scheme contradicts them.
    ///
    /// On a [`Cluster::local`] cluster this replaces only what the master presents: its
    /// workers keep their own token, and refuse any other.
    pub fn with_security(self, security: Security) -> Result<Self, ClusterError> {
        self.remade(security, Scheme::Strict)
    }

    /// Sends `token` with every call (keeping the TLS settings).
    pub fn with_token(self, token: Token) -> Self {
        let security = self.security.clone().with_token(token);
        // The same TLS settings and addresses as before, which were accepted then.
        self.remade(security, Scheme::Lenient).expect("endpoints remade with the settings they were made with")
    }

    fn remade(mut self, security: Security, scheme: Scheme) -> Result<Self, ClusterError> {
        self.workers = self
            .workers
            .iter()
            .map(|w| WorkerEndpoint::new(&w.addr, &security, scheme))
            .collect::<Result<Vec<_>, _>>()?;
        self.security = security;
        Ok(self)
    }

    /// Replaces the scheduler configuration (deadlines, retries, speculation).
    pub fn with_scheduler_config(mut self, config: SchedulerConfig) -> Self {
        self.config = config;
        self
    }

    /// Sets the base deadline of a task attempt (doubled per worker after each miss).
    pub fn with_task_timeout(mut self, timeout: Duration) -> Self {
        self.config.task_timeout = timeout;
        self.config.max_task_timeout = self.config.max_task_timeout.max(timeout);
        self
    }

    /// Keeps map output on the worker that wrote it (`true`, the default of
    /// [`Cluster::connect`]), in the worker's own work directory (`Worker::with_work_dir`),
    /// instead of in the job's work directory on a shared filesystem (`false`, the default
    /// of [`Cluster::local`], whose workers share this process's). Each reduce then
    /// fetches its ranges from the workers that hold them over gRPC (the `Fetch` call,
    /// with the same token and TLS), or reads them from disk when it holds them itself; a
    /// fetch that fails makes the map run again. When the job ends, every worker is told to remove the job's map
    /// output (`EndJob`). A worker that cannot see an input gets its shards streamed by
    /// the master, and one that cannot see the output directory keeps its reduce output
    /// for the master to pull and commit: no filesystem need be shared.
    pub fn with_worker_shuffle(mut self, on: bool) -> Self {
        self.worker_shuffle = on;
        self
    }

    /// The scheduler configuration in force.
    pub fn scheduler_config(&self) -> &SchedulerConfig {
        &self.config
    }

    /// The progress of the job [`Cluster::run`] is running (the last one's, once it has
    /// ended; `None` before the first): phase, tasks done of total, attempts running,
    /// failed and backups so far. It changes as the scheduler hears from workers; watch it
    /// from another task (`changed().await`) to show progress.
    ///
    /// ```no_run
    /// # async fn show(cluster: &mapreduce_runtime::Cluster) {
    /// let mut progress = cluster.progress();
    /// while progress.changed().await.is_ok() {
    ///     if let Some(s) = progress.borrow_and_update().clone() {
    ///         eprintln!("map {}/{}, reduce {}/{}", s.maps_done, s.maps_total, s.reduces_done, s.reduces_total);
    ///     }
    /// }
    /// # }
    /// ```
    pub fn progress(&self) -> tokio::sync::watch::Receiver<Option<JobStatus>> {
        self.progress.subscribe()
    }

    /// The addresses of the workers given, in [`WorkerId`] order (not those that joined:
    /// a job's report lists every worker that took part).
    pub fn addrs(&self) -> Vec<&str> {
        self.workers.iter().map(|w| w.addr.as_str()).collect()
    }

    /// Runs a job to completion: plans shards, drives the workers, commits the outputs as
    /// `part-00000`... with `_SUCCESS`, and returns the report. On error, the work
    /// directory is removed and no `_SUCCESS` is written.
    pub async fn run<J: Job>(&self, spec: JobSpec<J>) -> Result<JobReport, RunError> {
        let started = tokio::time::Instant::now();
        spec.validate()?;
        self.config.validate()?;
        if self.workers.is_empty() && self.listening.is_none() {
            return Err(RunError::NoWorkers);
        }
        if let Some((registry, _)) = &self.local {
            registry.write().unwrap_or_else(|e| e.into_inner()).insert::<J>();
        }
        let payload =
            postcard::to_allocvec(&spec.job).map_err(|source| RunError::EncodeJob { job: J::NAME, error: source })?;
        let inputs = spec.inputs.clone();
        let files =
            tokio::task::spawn_blocking(move || storage::list_inputs(&inputs)).await.expect("listing inputs")?;
        // Compressed files and record files are read whole, and so is every file when
        // the job says not to split them.
        let splittable =
            |f: &InputFile| spec.split_files && spec.input_format == InputFormat::Text && Codec::of(&f.path).is_none();
        // An input smaller than a shard per worker still gives every worker a task.
        let total = files.iter().map(|f| f.len).fold(0, u64::saturating_add);
        let shard_size = split_size(total, spec.shard_size, self.workers.len() as u32);
        let shards = plan_shards_with(&files, shard_size, splittable);
        let map_only = spec.reducers == 0;
        // A map-only job's output goes to the output directory, never stays on workers.
        let worker_shuffle = self.worker_shuffle && !map_only;
        // A reduce request names every map output once (its location) and each of its
        // streams of the partition (about 30 bytes): it must fit a message. Checked before
        // anything is claimed or dialled.
        let location = if worker_shuffle {
            // grpc://host:port/<32 hex digits>/<map>/<attempt>
            let joined = if self.listening.is_some() { MAX_JOIN_ADDR } else { 0 };
            self.workers.iter().map(|w| w.addr.len()).max().unwrap_or(0).max(joined) + 7 + 32 + 3
        } else {
            // <output>/_temporary/<32 hex digits>/m00000-a0
            storage::absolute(&spec.output).map_or(0, |p| p.as_os_str().len()) + 12 + 32
        };
        let per_map = location as u64 + 16 + 30;
        let request = (shards.len() as u64).saturating_mul(per_map);
        if request > MAX_MESSAGE as u64 / 2 {
            return Err(RunError::TooManyMaps { maps: shards.len() as u64, shard_size: spec.shard_size });
        }
        self.preflight().await?;
        let output = OutputDir::prepare(&spec.output)?;
        tracing::info!(
            job = J::NAME,
            id = %output.job,
            files = files.len(),
            maps = shards.len(),
            reducers = spec.reducers,
            workers = self.workers.len(),
            "job starts"
        );
        // Scheduler messages name workers by index (`worker-2`); this says which is which.
        for (i, w) in self.workers.iter().enumerate() {
            tracing::info!(worker = %WorkerId(i as u32), addr = %w.addr, "worker");
        }
        let plan = JobPlan {
            shards,
            reducers: spec.reducers,
            workers: self.workers.len() as u32,
            outputs_on_workers: worker_shuffle,
        };
        let scheduler = Scheduler::new(plan, self.config.clone())?;
        let job = Arc::new(pb::Job {
            name: J::NAME.to_string(),
            payload,
            reducers: spec.reducers,
            sort_buffer_bytes: spec.sort_buffer_bytes,
            compression: convert::compression_to_pb(spec.compression) as i32,
            max_line_bytes: spec.max_line_bytes,
            skip_long_lines: spec.skip_long_lines,
            job_id: output.job.to_string(),
            input_format: convert::input_format_to_pb(spec.input_format) as i32,
            output_format: convert::output_format_to_pb(spec.output_format) as i32,
            invalid_utf8: convert::invalid_utf8_to_pb(spec.invalid_utf8) as i32,
        });
        let file_bytes = files.iter().map(|f| (f.path.clone(), f.len)).collect();
        let mut transport = Grpc::new(self.workers.clone(), job, output.work_str(), worker_shuffle, file_bytes);
        let held_reduces = transport.held_reduces.clone();
        let joined = self.listening.as_ref().map(|l| &*l.joined);
        let result = drive(scheduler, &mut transport, joined, &self.progress).await.map_err(RunError::from);
        // Every worker that took part, in WorkerId order (those that joined last).
        let workers = transport.workers;
        if worker_shuffle || held_reduces.load(std::sync::atomic::Ordering::Relaxed) {
            end_job(&workers, &output.job).await;
        }
        let output = Arc::new(output);
        match result {
            Ok(mut report) => {
                let out = output.clone();
                let outputs = std::mem::take(&mut report.outputs);
                let committed =
                    tokio::task::spawn_blocking(move || out.commit(&outputs, map_only)).await.expect("commit task");
                match committed {
                    Ok(paths) => report.outputs = paths,
                    Err(e) => {
                        output.abort();
                        return Err(e);
                    }
                }
                report.elapsed_ms = started.elapsed().as_millis() as u64;
                for (worker, endpoint) in report.workers.iter_mut().zip(&workers) {
                    worker.addr.clone_from(&endpoint.addr);
                }
                tracing::info!(
                    job = J::NAME,
                    elapsed_ms = report.elapsed_ms,
                    records = report.output_records,
                    "job done"
                );
                Ok(report)
            }
            Err(e) => {
                let out = output.clone();
                let _ = tokio::task::spawn_blocking(move || out.abort()).await;
                Err(e)
            }
        }
    }

    /// Fails fast, before any output exists, when no worker answers at all: with
    /// [`RunError::Refused`] when every worker refused this master (its token, or the TLS
    /// handshake), else with [`RunError::NoReachableWorker`]. Workers that refuse while
    /// others answer are logged.
    async fn preflight(&self) -> Result<(), RunError> {
        let timeout = PREFLIGHT_TIMEOUT.min(self.config.task_timeout.max(Duration::from_millis(500)));
        let probes = self.workers.iter().map(|w| {
            let mut client = w.client.clone();
            let tls = self.security.tls().is_some();
            async move {
                if !tls && w.addr.starts_with("https://") {
                    return Probe::Unreachable(format!("{}: https:// needs TLS settings (a CA)", w.addr));
                }
                match tokio::time::timeout(timeout, client.wait(pb::WaitRequest { millis: 0 })).await {
                    Ok(Ok(_)) => Probe::Answered,
                    Ok(Err(status)) => match security::refusal(&status, tls) {
                        Some(why) => Probe::Refused(format!("{}: {why}", w.addr)),
                        None => Probe::Unreachable(format!("{}: {}", w.addr, status_message(&status))),
                    },
                    Err(_) => Probe::Unreachable(format!("{}: no answer within {timeout:?}", w.addr)),
                }
            }
        });
        let results = futures_util::future::join_all(probes).await;
        let answered = results.iter().any(|p| matches!(p, Probe::Answered));
        let (mut refused, mut unreachable) = (Vec::new(), Vec::new());
        for probe in results {
            match probe {
                Probe::Answered => {}
                Probe::Refused(why) if answered => tracing::warn!(worker = %why, "a worker refused this master"),
                Probe::Refused(why) => refused.push(why),
                Probe::Unreachable(why) => unreachable.push(why),
            }
        }
        if self.listening.is_some() && !answered {
            // Workers may yet join: the job waits for one as for an unreachable cluster.
            for why in refused.iter().chain(&unreachable) {
                tracing::warn!(worker = %why, "a worker given does not answer; waiting for workers to join");
            }
            return Ok(());
        }
        match (answered, unreachable.is_empty()) {
            (true, _) => Ok(()),
            (false, true) => Err(RunError::Refused(refused)),
            (false, false) => Err(RunError::NoReachableWorker(refused.into_iter().chain(unreachable).collect())),
        }
    }
}

/// Tells every worker of a job (`workers`) that the job run `job` ended, so that it
/// removes the map output it holds of it. The job's result waits for the answers at most
/// [`END_JOB_GRACE`] (a live worker answers in milliseconds; a lost one would hold the
/// result for the whole RPC deadline); calls still open go on in the background for up
/// to [`PREFLIGHT_TIMEOUT`]. A worker that never hears keeps the output until it
/// restarts (a worker removes what it finds in its work directory at start).
async fn end_job(workers: &[WorkerEndpoint], job: &storage::JobId) {
    let calls: Vec<_> = workers
        .iter()
        .map(|w| {
            let (mut client, addr) = (w.client.clone(), w.addr.clone());
            let request = pb::EndJobRequest { job_id: job.to_string() };
            tokio::spawn(async move {
                match tokio::time::timeout(PREFLIGHT_TIMEOUT, client.end_job(request)).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(status)) => {
                        tracing::warn!(%addr, error = %status_message(&status), "end of job refused");
                    }
                    Err(_) => tracing::warn!(%addr, "no answer to the end of job"),
                }
            })
        })
        .collect();
    if tokio::time::timeout(END_JOB_GRACE, futures_util::future::join_all(calls)).await.is_err() {
        tracing::debug!("some workers had not answered the end of job; their calls go on in the background");
    }
}

/// How a worker answered the pre-flight Wait.
enum Probe {
    Answered,
    /// It refused this master: the worker and why.
    Refused(String),
    /// No answer, or a broken one: the worker and why.
    Unreachable(String),
}
