//! The master: [`Cluster`] and the driver loop that adapts the pure scheduler to gRPC.
//!
//! One task owns the [`Scheduler`]; every in-flight RPC is a future in a
//! `FuturesUnordered`, each under its deadline. When one completes, its result is fed to
//! the scheduler with the current time, and the actions it asks for are started. No thread
//! per worker, no lock around the scheduler.

use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use mapreduce_core::scheduler::{Action, AttemptId, Event, Failure, JobPlan, TaskId, TaskOutput, TaskSpec, WorkerId};
use mapreduce_core::shard::plan_shards;
use mapreduce_core::{Job, JobReport, JobSpec, Scheduler, SchedulerConfig};
use mapreduce_rpc::pb;
use mapreduce_rpc::pb::worker_client::WorkerClient;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::transport::{Channel, Endpoint};

use crate::convert;
use crate::error::{ClusterError, RunError};
use crate::storage::{self, OutputDir};
use crate::worker::{Registry, SharedRegistry, Worker};

/// How long the pre-flight check waits for a worker to answer.
const PREFLIGHT_TIMEOUT: Duration = Duration::from_secs(5);

/// A set of workers that jobs run on.
///
/// ```no_run
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// use mapreduce_runtime::Cluster;
/// let local = Cluster::local(2).await?; // two in-process workers behind real gRPC
/// let remote = Cluster::connect(["127.0.0.1:7001", "http://127.0.0.1:7002"]).await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Cluster {
    workers: Vec<WorkerEndpoint>,
    config: SchedulerConfig,
    /// In-process workers: their registry (jobs are added to it as they run) and the
    /// senders whose drop stops them.
    local: Option<(SharedRegistry, Vec<oneshot::Sender<()>>)>,
}

#[derive(Debug, Clone)]
struct WorkerEndpoint {
    addr: String,
    client: WorkerClient<Channel>,
}

fn endpoint(addr: &str) -> Result<WorkerEndpoint, ClusterError> {
    let uri = if addr.contains("://") { addr.to_string() } else { format!("http://{addr}") };
    let bad = |reason: String| ClusterError::BadAddress { addr: addr.to_string(), reason };
    let endpoint = Endpoint::from_shared(uri).map_err(|e| bad(e.to_string()))?;
    if endpoint.uri().port_u16().is_none() {
        return Err(bad("no port".into()));
    }
    let channel = endpoint
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(20))
        .connect_lazy();
    let client = WorkerClient::new(channel).max_decoding_message_size(64 << 20);
    Ok(WorkerEndpoint { addr: addr.to_string(), client })
}

impl Cluster {
    /// Starts `n` workers in this process, each a real gRPC server on `127.0.0.1` with an
    /// OS-chosen port. They stop when the cluster is dropped. Job types need no
    /// registration: [`Cluster::run`] registers its job's type on them.
    pub async fn local(n: usize) -> Result<Self, ClusterError> {
        if n == 0 {
            return Err(ClusterError::NoWorkers);
        }
        let registry: SharedRegistry = Arc::new(RwLock::new(Registry::new()));
        let mut workers = Vec::with_capacity(n);
        let mut stops = Vec::with_capacity(n);
        for _ in 0..n {
            let listener = TcpListener::bind(("127.0.0.1", 0)).await.map_err(ClusterError::Bind)?;
            let addr = listener.local_addr().map_err(ClusterError::Bind)?;
            let (stop, stopped) = oneshot::channel::<()>();
            let worker = Worker::with_shared(registry.clone());
            tokio::spawn(async move {
                if let Err(e) = worker.serve_with_shutdown(listener, async { stopped.await.unwrap_or(()) }).await {
                    tracing::error!(%addr, error = %e, "local worker failed");
                }
            });
            workers.push(endpoint(&addr.to_string())?);
            stops.push(stop);
        }
        Ok(Cluster { workers, config: SchedulerConfig::default(), local: Some((registry, stops)) })
    }

    /// A cluster of remote workers at `addrs` (`host:port` or `http://host:port`). Nothing
    /// is dialled yet: [`Cluster::run`] checks that some worker answers before it starts.
    pub async fn connect(addrs: impl IntoIterator<Item = impl AsRef<str>>) -> Result<Self, ClusterError> {
        let workers = addrs.into_iter().map(|a| endpoint(a.as_ref())).collect::<Result<Vec<_>, _>>()?;
        if workers.is_empty() {
            return Err(ClusterError::NoWorkers);
        }
        Ok(Cluster { workers, config: SchedulerConfig::default(), local: None })
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

    /// The scheduler configuration in force.
    pub fn scheduler_config(&self) -> &SchedulerConfig {
        &self.config
    }

    /// The workers' addresses, in [`WorkerId`] order.
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
        if let Some((registry, _)) = &self.local {
            registry.write().unwrap_or_else(|e| e.into_inner()).insert::<J>();
        }
        let payload =
            postcard::to_allocvec(&spec.job).map_err(|source| RunError::EncodeJob { job: J::NAME, source })?;
        let inputs = spec.inputs.clone();
        let files =
            tokio::task::spawn_blocking(move || storage::list_inputs(&inputs)).await.expect("listing inputs")?;
        self.preflight().await?;
        let output = OutputDir::prepare(&spec.output)?;
        let shards = plan_shards(&files, spec.shard_size);
        tracing::info!(
            job = J::NAME,
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
        let plan = JobPlan { shards, reducers: spec.reducers, workers: self.workers.len() as u32 };
        let scheduler = Scheduler::new(plan, self.config.clone())?;
        let job = Arc::new(pb::JobSpec {
            name: J::NAME.to_string(),
            payload,
            reducers: spec.reducers,
            sort_buffer_bytes: spec.sort_buffer_bytes,
            compression: convert::compression_to_pb(spec.compression) as i32,
        });
        let result = drive(scheduler, &self.workers, job, Arc::from(output.work_str())).await;
        let output = Arc::new(output);
        match result {
            Ok(mut report) => {
                let out = output.clone();
                let outputs = std::mem::take(&mut report.outputs);
                let committed = tokio::task::spawn_blocking(move || out.commit(&outputs)).await.expect("commit task");
                match committed {
                    Ok(paths) => report.outputs = paths,
                    Err(e) => {
                        output.abort();
                        return Err(e);
                    }
                }
                report.elapsed_ms = started.elapsed().as_millis() as u64;
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

    /// Fails fast, before any output exists, when no worker answers at all.
    async fn preflight(&self) -> Result<(), RunError> {
        let timeout = PREFLIGHT_TIMEOUT.min(self.config.task_timeout.max(Duration::from_millis(500)));
        let probes = self.workers.iter().map(|w| {
            let mut client = w.client.clone();
            async move {
                match tokio::time::timeout(timeout, client.wait(pb::WaitRequest { millis: 0 })).await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(status)) => Err(format!("{}: {}", w.addr, status.message())),
                    Err(_) => Err(format!("{}: no answer within {timeout:?}", w.addr)),
                }
            }
        });
        let results = futures_util::future::join_all(probes).await;
        if results.iter().any(Result::is_ok) {
            return Ok(());
        }
        Err(RunError::NoReachableWorker(results.into_iter().filter_map(Result::err).collect()))
    }
}

/// How an RPC ended, turned into a scheduler event.
fn classify(status: &tonic::Status) -> Failure {
    use tonic::Code;
    match status.code() {
        Code::Unavailable | Code::Unknown | Code::Cancelled => Failure::Unreachable(status.message().to_string()),
        Code::DeadlineExceeded => Failure::TimedOut,
        _ => Failure::Task(status.message().to_string()),
    }
}

/// An RPC in flight: its event, or `None` for an idle Wait that was woken (dropped).
type Call = std::pin::Pin<Box<dyn std::future::Future<Output = Option<Event>> + Send>>;

/// Everything an RPC future needs, cheap to clone.
struct Ctx<'a> {
    workers: &'a [WorkerEndpoint],
    job: Arc<pb::JobSpec>,
    work_dir: Arc<str>,
}

impl Ctx<'_> {
    /// A Wait call, dropped (ending in `None`) when `woken` fires or its sender is dropped.
    fn wait(&self, worker: WorkerId, for_: Duration, deadline: Duration, woken: oneshot::Receiver<()>) -> Call {
        let endpoint = &self.workers[worker.0 as usize];
        let (mut client, addr) = (endpoint.client.clone(), endpoint.addr.clone());
        Box::pin(async move {
            let req = pb::WaitRequest { millis: for_.as_millis() as u64 };
            let answer = tokio::select! {
                answer = tokio::time::timeout(deadline, client.wait(req)) => answer,
                _ = woken => return None,
            };
            Some(match answer {
                Ok(Ok(_)) => Event::WorkerIdle(worker),
                Ok(Err(status)) => {
                    tracing::warn!(%worker, %addr, code = ?status.code(), message = status.message(), "wait failed");
                    Event::Unreachable(worker)
                }
                Err(_) => {
                    tracing::warn!(%worker, %addr, ?deadline, "wait passed its deadline");
                    Event::Unreachable(worker)
                }
            })
        })
    }

    fn run(&self, worker: WorkerId, attempt: AttemptId, task: TaskId, spec: TaskSpec, deadline: Duration) -> Call {
        let mut client = self.workers[worker.0 as usize].client.clone();
        let job = Some((*self.job).clone());
        let reducers = self.job.reducers;
        let work_dir = self.work_dir.clone();
        Box::pin(async move {
            let result = match spec {
                TaskSpec::Map { shard } => {
                    let req = pb::MapRequest {
                        job,
                        task: u64::from(task.index),
                        attempt: attempt.0,
                        segments: shard
                            .segments
                            .into_iter()
                            .map(|s| pb::Segment { path: s.path, start: s.start, end: s.end })
                            .collect(),
                        work_dir: work_dir.to_string(),
                    };
                    match tokio::time::timeout(deadline, client.map(req)).await {
                        Ok(Ok(resp)) => map_output(resp.into_inner(), reducers, &work_dir, task.index, attempt),
                        Ok(Err(status)) => Err(classify(&status)),
                        Err(_) => Err(Failure::TimedOut),
                    }
                }
                TaskSpec::Reduce { partition, inputs } => {
                    let req = pb::ReduceRequest {
                        job,
                        task: u64::from(task.index),
                        attempt: attempt.0,
                        partition,
                        inputs: inputs.into_iter().map(convert::file_to_pb).collect(),
                        work_dir: work_dir.to_string(),
                    };
                    match tokio::time::timeout(deadline, client.reduce(req)).await {
                        Ok(Ok(resp)) => {
                            let r = resp.into_inner();
                            let expected = Path::new(&*work_dir).join(storage::reduce_file_name(partition, attempt.0));
                            if Path::new(&r.path) == expected {
                                Ok(TaskOutput::Reduce { path: r.path, records: r.records, bytes: r.bytes })
                            } else {
                                Err(Failure::Task(format!(
                                    "worker answered output {:?}, expected {expected:?}",
                                    r.path
                                )))
                            }
                        }
                        Ok(Err(status)) => Err(classify(&status)),
                        Err(_) => Err(Failure::TimedOut),
                    }
                }
            };
            Some(match result {
                Ok(output) => Event::Succeeded { attempt, output },
                Err(reason) => Event::Failed { attempt, reason },
            })
        })
    }
}

/// Checks a map reply: one or more runs of one range per partition, in order, back to
/// back in the one file this attempt must write, so that the master never deletes or
/// reads a path a worker made up.
fn map_output(
    resp: pb::MapResponse,
    reducers: u32,
    work_dir: &str,
    task: u32,
    attempt: AttemptId,
) -> Result<TaskOutput, Failure> {
    let expected = Path::new(work_dir).join(storage::map_file_name(task, attempt.0));
    let mut next = 0;
    let as_expected = resp.files.iter().enumerate().all(|(i, f)| {
        let contiguous = f.offset == next;
        next = f.offset.saturating_add(f.bytes);
        u64::from(f.partition) == i as u64 % u64::from(reducers) && Path::new(&f.path) == expected && contiguous
    });
    let whole_runs = !resp.files.is_empty() && (resp.files.len() as u64).is_multiple_of(u64::from(reducers));
    if !whole_runs || !as_expected {
        return Err(Failure::Task(format!(
            "worker answered {} ranges for {reducers} partitions, not runs of the expected file {expected:?}",
            resp.files.len()
        )));
    }
    let files = resp.files.into_iter().map(convert::file_from_pb).collect();
    Ok(TaskOutput::Map { files, input_records: resp.input_records })
}

/// The driver loop: owns the scheduler until the job finishes.
async fn drive(
    mut scheduler: Scheduler,
    workers: &[WorkerEndpoint],
    job: Arc<pb::JobSpec>,
    work_dir: Arc<str>,
) -> Result<JobReport, RunError> {
    let ctx = Ctx { workers, job, work_dir };
    let mut calls: FuturesUnordered<Call> = FuturesUnordered::new();
    // Per worker, what wakes its Wait in flight: dropping the sender drops the call.
    let mut wakers: Vec<Option<oneshot::Sender<()>>> = workers.iter().map(|_| None).collect();
    loop {
        let now = tokio::time::Instant::now().into_std();
        while let Some(action) = scheduler.poll_action(now) {
            match action {
                Action::Run { worker, attempt, task, spec, deadline } => {
                    tracing::debug!(%task, %attempt, worker = %workers[worker.0 as usize].addr, "run");
                    calls.push(ctx.run(worker, attempt, task, spec, deadline));
                }
                Action::Wait { worker, for_, deadline } => {
                    let (wake, woken) = oneshot::channel();
                    wakers[worker.0 as usize] = Some(wake);
                    calls.push(ctx.wait(worker, for_, deadline, woken));
                }
                Action::Wake { worker } => {
                    tracing::debug!(worker = %workers[worker.0 as usize].addr, "wake");
                    wakers[worker.0 as usize] = None;
                }
                Action::Discard(output) => {
                    let paths: Vec<String> = output.paths().into_iter().map(String::from).collect();
                    tokio::task::spawn_blocking(move || {
                        for p in paths {
                            let _ = std::fs::remove_file(p);
                        }
                    });
                }
                Action::Finished(result) => return result.map_err(RunError::from),
            }
        }
        let wake = scheduler.poll_timeout().map(tokio::time::Instant::from_std);
        tokio::select! {
            Some(event) = calls.next() => {
                if let Some(event) = event {
                    let now = tokio::time::Instant::now().into_std();
                    scheduler.handle_event(now, event);
                }
            }
            () = async { tokio::time::sleep_until(wake.expect("guarded")).await }, if wake.is_some() => {}
            else => {
                panic!("scheduler stalled: no call in flight and no timeout pending ({:?})", scheduler.status());
            }
        }
    }
}
