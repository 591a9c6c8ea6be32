//! [`Cluster`]: the workers a job runs on, and [`Cluster::run`], which plans a job, drives
//! it to its end and commits its output.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use mapreduce_core::scheduler::{JobPlan, WorkerId};
use mapreduce_core::shard::plan_shards;
use mapreduce_core::{Job, JobReport, JobSpec, Scheduler, SchedulerConfig};
use mapreduce_rpc::pb;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use super::driver::drive;
use super::transport::{Grpc, WorkerEndpoint};
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
/// let remote = Cluster::connect(["127.0.0.1:7001", "http://127.0.0.1:7002"])?;
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
            workers.push(WorkerEndpoint::new(&addr.to_string())?);
            stops.push(stop);
        }
        Ok(Cluster { workers, config: SchedulerConfig::default(), local: Some((registry, stops)) })
    }

    /// A cluster of remote workers at `addrs` (`host:port` or `http://host:port`). Nothing
    /// is dialled yet: [`Cluster::run`] checks that some worker answers before it starts.
    pub fn connect(addrs: impl IntoIterator<Item = impl AsRef<str>>) -> Result<Self, ClusterError> {
        let workers = addrs.into_iter().map(|a| WorkerEndpoint::new(a.as_ref())).collect::<Result<Vec<_>, _>>()?;
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
        let plan = JobPlan { shards, reducers: spec.reducers, workers: self.workers.len() as u32 };
        let scheduler = Scheduler::new(plan, self.config.clone())?;
        let job = Arc::new(pb::Job {
            name: J::NAME.to_string(),
            payload,
            reducers: spec.reducers,
            sort_buffer_bytes: spec.sort_buffer_bytes,
            compression: convert::compression_to_pb(spec.compression) as i32,
            max_line_bytes: spec.max_line_bytes,
            skip_long_lines: spec.skip_long_lines,
        });
        let transport = Grpc { workers: self.workers.clone(), job, work_dir: Arc::from(output.work_str()) };
        let result = drive(scheduler, &transport).await.map_err(RunError::from);
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
