//! Failures injected by a seeded plan around the real worker service, behind real gRPC.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mapreduce::worker::{Registry, Worker, WorkerService};
use mapreduce::{Cluster, JobReport, JobSpec, SchedulerConfig};
use mapreduce_examples::corpus::{SplitMix64, generate_corpus};
use mapreduce_examples::wordcount::WordCount;
use mapreduce_rpc::pb;
use mapreduce_rpc::pb::worker_server::Worker as _;
use tokio::sync::oneshot;
use tonic::{Request, Response, Status};

use crate::support::{Hooks, assert_wordcount_output, init_tracing, serve, serve_hooked, tree};

/// What a faulty worker does to one task call.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    /// Runs it normally.
    None,
    /// Never answers (the master's deadline must fire).
    Hang,
    /// Answers with a task error.
    Error,
    /// Answers as if the connection broke.
    Drop,
}

/// How often each task was hurt, across all workers' plans.
type Hurt = Arc<Mutex<HashMap<(bool, u64), u32>>>;

/// A seeded fault plan: each task call draws a fault, but no task is hurt more than
/// `max_per_task` times in all (whichever workers run it), so every task can finish
/// within its attempt budget.
#[derive(Debug)]
struct Plan {
    rng: SplitMix64,
    /// Percent chances of Hang, Error and Drop.
    odds: [u64; 3],
    max_per_task: u32,
    hurt: Hurt,
    injected: HashMap<&'static str, u32>,
}

impl Plan {
    fn new(seed: u64, odds: [u64; 3], hurt: &Hurt) -> Self {
        Plan { rng: SplitMix64::new(seed), odds, max_per_task: 2, hurt: hurt.clone(), injected: HashMap::new() }
    }

    fn draw(&mut self, map: bool, task: u64) -> Fault {
        let roll = self.rng.below(100);
        let fault = match roll {
            r if r < self.odds[0] => Fault::Hang,
            r if r < self.odds[0] + self.odds[1] => Fault::Error,
            r if r < self.odds[0] + self.odds[1] + self.odds[2] => Fault::Drop,
            _ => Fault::None,
        };
        let mut hurt = self.hurt.lock().unwrap();
        let hurt = hurt.entry((map, task)).or_default();
        if fault == Fault::None || *hurt >= self.max_per_task {
            return Fault::None;
        }
        *hurt += 1;
        *self.injected.entry(format!("{fault:?}").leak()).or_default() += 1;
        fault
    }
}

/// The least a call to a slowed worker takes, per unit of slowdown.
const SLOW_FLOOR: Duration = Duration::from_millis(10);

/// The real worker service behind a fault plan and an optional slowdown.
struct Faulty {
    plan: Arc<Mutex<Plan>>,
    /// Each task call takes this many times as long as it really does, and at least this
    /// many times [`SLOW_FLOOR`], so that a slowed worker is slow in any build profile.
    slowdown: u32,
}

impl Faulty {
    async fn fault(&self, map: bool, task: u64) -> Result<(), Status> {
        let fault = self.plan.lock().unwrap().draw(map, task);
        match fault {
            Fault::None => Ok(()),
            Fault::Hang => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok(())
            }
            Fault::Error => Err(Status::aborted("injected task failure")),
            Fault::Drop => Err(Status::unavailable("injected: connection dropped")),
        }
    }

    async fn slow<T>(&self, call: impl std::future::Future<Output = T>) -> T {
        let started = tokio::time::Instant::now();
        let out = call.await;
        if self.slowdown > 1 {
            let took = started.elapsed();
            tokio::time::sleep((took * (self.slowdown - 1)).max((SLOW_FLOOR * self.slowdown).saturating_sub(took)))
                .await;
        }
        out
    }
}

#[tonic::async_trait]
impl Hooks for Faulty {
    async fn map(
        &self,
        inner: &WorkerService,
        request: Request<pb::MapRequest>,
    ) -> Result<Response<pb::MapResponse>, Status> {
        self.fault(true, request.get_ref().task).await?;
        self.slow(inner.map(request)).await
    }

    async fn reduce(
        &self,
        inner: &WorkerService,
        request: Request<pb::ReduceRequest>,
    ) -> Result<Response<pb::ReduceResponse>, Status> {
        self.fault(false, request.get_ref().task).await?;
        self.slow(inner.reduce(request)).await
    }
}

/// Faulty workers on 127.0.0.1 with OS-chosen ports; stopped on drop.
struct FaultyWorkers {
    addrs: Vec<SocketAddr>,
    plans: Vec<Arc<Mutex<Plan>>>,
    _stops: Vec<oneshot::Sender<()>>,
}

impl FaultyWorkers {
    async fn start(configs: Vec<(Plan, u32)>) -> Self {
        let (mut addrs, mut plans, mut stops) = (Vec::new(), Vec::new(), Vec::new());
        for (plan, slowdown) in configs {
            let plan = Arc::new(Mutex::new(plan));
            plans.push(plan.clone());
            let inner = Worker::new(Registry::new().register::<WordCount>())
                .with_root(std::env::temp_dir())
                .into_service()
                .unwrap();
            let (addr, stop) = serve_hooked(inner, Faulty { plan, slowdown }).await;
            addrs.push(addr);
            stops.push(stop);
        }
        FaultyWorkers { addrs, plans, _stops: stops }
    }

    async fn cluster(&self, config: SchedulerConfig) -> Cluster {
        Cluster::connect(self.addrs.iter().map(|a| a.to_string())).unwrap().with_scheduler_config(config)
    }

    fn injected(&self, fault: &str) -> u32 {
        self.plans.iter().map(|p| p.lock().unwrap().injected.get(fault).copied().unwrap_or(0)).sum()
    }
}

fn fast_config() -> SchedulerConfig {
    SchedulerConfig {
        task_timeout: Duration::from_secs(2),
        max_task_timeout: Duration::from_secs(8),
        retry_base: Duration::from_millis(20),
        retry_cap: Duration::from_millis(200),
        probation_base: Duration::from_millis(200),
        ..SchedulerConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn word_count_is_exact_under_seeded_hangs_errors_and_dropped_connections() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("corpus.txt");
    generate_corpus(&input, 1 << 20, 5_000, 11).unwrap();
    for seed in [1u64, 2, 3] {
        let hurt = Hurt::default();
        let configs = (0..4).map(|w| (Plan::new(seed * 10 + w, [4, 8, 8], &hurt), 1)).collect();
        let workers = FaultyWorkers::start(configs).await;
        let cluster = workers.cluster(SchedulerConfig { speculation: false, ..fast_config() }).await;
        let out = dir.path().join(format!("out-{seed}"));
        let spec = JobSpec::new(WordCount, [&input], &out).reducers(4).shard_size(32 << 10);
        let report: JobReport = cluster.run(spec).await.unwrap();
        assert_wordcount_output(&out, 4, std::slice::from_ref(&input));
        let (hangs, errors, drops) = (workers.injected("Hang"), workers.injected("Error"), workers.injected("Drop"));
        assert!(hangs + errors + drops > 0, "seed {seed} injected nothing");
        assert_eq!(report.attempts.timed_out, u64::from(hangs), "every hang is a missed deadline");
        assert_eq!(report.attempts.failed, u64::from(errors));
        assert_eq!(report.attempts.lost, u64::from(drops));
        assert_eq!(
            report.attempts.succeeded,
            u64::from(report.map_tasks + report.reduce_tasks),
            "without speculation, one success per task"
        );
        assert_eq!(tree(&out).len(), 5, "no attempt leftovers");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_straggler_is_overtaken_by_backup_attempts() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("corpus.txt");
    generate_corpus(&input, 1 << 20, 5_000, 12).unwrap();
    let mut reports = Vec::new();
    for speculation in [false, true] {
        // Worker 0 is 20 times slower than the others.
        let hurt = Hurt::default();
        let configs = (0..3).map(|w| (Plan::new(w, [0, 0, 0], &hurt), if w == 0 { 20 } else { 1 })).collect();
        let workers = FaultyWorkers::start(configs).await;
        let config = SchedulerConfig {
            speculation,
            speculation_min: Duration::from_millis(100),
            task_timeout: Duration::from_secs(120),
            ..fast_config()
        };
        let cluster = workers.cluster(config).await;
        let out = dir.path().join(format!("out-{speculation}"));
        let spec = JobSpec::new(WordCount, [&input], &out).reducers(3).shard_size(64 << 10);
        let report = cluster.run(spec).await.unwrap();
        assert_wordcount_output(&out, 3, std::slice::from_ref(&input));
        reports.push(report);
    }
    let (off, on) = (&reports[0], &reports[1]);
    assert_eq!(off.attempts.speculative, 0);
    assert!(on.attempts.speculative > 0, "backups were launched: {:?}", on.attempts);
    assert!(on.attempts.speculative_won > 0, "some backups beat the straggler: {:?}", on.attempts);
    // Every task the straggler held up to the end without speculation was a task the
    // job waited for; with speculation the straggler's accepted work shrinks.
    let slow_off = off.workers[0].accepted;
    let slow_on = on.workers[0].accepted;
    assert!(slow_on < slow_off, "the straggler's accepted tasks: {slow_on} with backups, {slow_off} without");
}

/// What a broken worker runs under the word count's name: every map and reduce fails.
#[derive(serde::Serialize, serde::Deserialize)]
struct Broken;

impl mapreduce::Mapper for Broken {
    type Key = mapreduce_examples::wordcount::Word;
    type Value = u64;

    fn map(&self, _: &str, _: &mut mapreduce::Emitter<'_, Self::Key, u64>) -> Result<(), mapreduce::BoxError> {
        Err("this worker's disk is on fire".into())
    }
}

impl mapreduce::Reducer for Broken {
    fn reduce(
        &self,
        _: &Self::Key,
        _: &mut dyn Iterator<Item = u64>,
        _: &mut mapreduce::Output<'_>,
    ) -> Result<(), mapreduce::BoxError> {
        Err("this worker's disk is on fire".into())
    }
}

impl mapreduce::Job for Broken {
    const NAME: &'static str = WordCount::NAME;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_fails_every_task_cannot_fail_the_job() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("corpus.txt");
    generate_corpus(&input, 256 << 10, 2_000, 13).unwrap();
    // Worker 0's "wordcount" is broken: every task it gets fails at once. (A worker that
    // lacks the job type altogether fails the job at once: `errors.rs`.)
    let (bad, _stop_bad) = serve(Worker::new(Registry::new().register::<Broken>())).await;
    let (good, _stop_good) = serve(Worker::new(Registry::new().register::<WordCount>())).await;
    let cluster = Cluster::connect([bad.to_string(), good.to_string()]).unwrap().with_scheduler_config(fast_config());
    let out = dir.path().join("out");
    let spec = JobSpec::new(WordCount, [&input], &out).reducers(2).shard_size(16 << 10);
    let report = cluster.run(spec).await.unwrap();
    assert_wordcount_output(&out, 2, std::slice::from_ref(&input));
    let tasks = u64::from(report.map_tasks + report.reduce_tasks);
    assert_eq!(report.workers[0].accepted, 0);
    assert!(report.workers[0].failed > 0, "{:?}", report.workers);
    assert_eq!(report.workers[1].accepted, tasks);
}

/// A word count that counts, with counters of its own, the lines it maps and the words
/// it writes that are longer than five letters.
#[derive(serde::Serialize, serde::Deserialize)]
struct Counting;

impl mapreduce::Mapper for Counting {
    type Key = mapreduce_examples::wordcount::Word;
    type Value = u64;

    fn map(&self, line: &str, emit: &mut mapreduce::Emitter<'_, Self::Key, u64>) -> Result<(), mapreduce::BoxError> {
        emit.count("lines", 1);
        WordCount.map(line, emit)
    }
}

impl mapreduce::Reducer for Counting {
    fn reduce(
        &self,
        word: &Self::Key,
        counts: &mut dyn Iterator<Item = u64>,
        out: &mut mapreduce::Output<'_>,
    ) -> Result<(), mapreduce::BoxError> {
        if word.as_str().chars().count() > 5 {
            out.count("long_words", 1);
        }
        WordCount.reduce(word, counts, out)
    }

    fn combine(&self, word: &Self::Key, acc: &mut u64, count: u64) -> Option<u64> {
        WordCount.combine(word, acc, count)
    }
}

impl mapreduce::Job for Counting {
    const NAME: &'static str = "counting";
}

/// Runs every task's first attempt for real, then answers it failed: its counts must not
/// reach the job's counters.
struct RunThenFail {
    seen: Mutex<std::collections::HashSet<(bool, u64)>>,
}

impl RunThenFail {
    fn first(&self, map: bool, task: u64) -> bool {
        self.seen.lock().unwrap().insert((map, task))
    }
}

#[tonic::async_trait]
impl Hooks for RunThenFail {
    async fn map(
        &self,
        inner: &WorkerService,
        request: Request<pb::MapRequest>,
    ) -> Result<Response<pb::MapResponse>, Status> {
        let first = self.first(true, request.get_ref().task);
        let answer = inner.map(request).await?;
        if first { Err(Status::aborted("injected: failed after running")) } else { Ok(answer) }
    }

    async fn reduce(
        &self,
        inner: &WorkerService,
        request: Request<pb::ReduceRequest>,
    ) -> Result<Response<pb::ReduceResponse>, Status> {
        let first = self.first(false, request.get_ref().task);
        let answer = inner.reduce(request).await?;
        if first { Err(Status::aborted("injected: failed after running")) } else { Ok(answer) }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_count_the_accepted_attempt_of_each_task_only() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("corpus.txt");
    generate_corpus(&input, 256 << 10, 2_000, 17).unwrap();
    let hooks = RunThenFail { seen: Mutex::default() };
    let service = Worker::new(Registry::new().register::<Counting>()).with_root(dir.path()).into_service().unwrap();
    let (addr, _stop) = serve_hooked(service, hooks).await;
    let cluster = Cluster::connect([addr.to_string()]).unwrap().with_scheduler_config(fast_config());
    let out = dir.path().join("out");
    let spec = JobSpec::new(Counting, [&input], &out).reducers(2).shard_size(32 << 10);
    let report = cluster.run(spec).await.unwrap();
    let counts = assert_wordcount_output(&out, 2, std::slice::from_ref(&input));
    let tasks = u64::from(report.map_tasks + report.reduce_tasks);
    assert_eq!(report.attempts.failed, tasks, "every task ran twice: {:?}", report.attempts);

    let text = std::fs::read_to_string(&input).unwrap();
    let c = &report.counters;
    let lines = text.lines().count() as u64;
    assert_eq!(c["lines"], lines, "{c:?}");
    assert_eq!(c["map_input_records"], lines);
    assert_eq!(c["map_input_bytes"], text.len() as u64);
    assert_eq!(c["map_output_records"], counts.values().sum::<u64>());
    assert_eq!(c["combine_input_records"], c["map_output_records"]);
    assert!(c["combine_output_records"] < c["combine_input_records"], "the combiner combined: {c:?}");
    assert_eq!(c["reduce_input_records"], c["combine_output_records"]);
    assert_eq!(c["reduce_input_groups"], counts.len() as u64);
    assert_eq!(c["reduce_output_records"], counts.len() as u64);
    assert_eq!(c["reduce_output_records"], report.output_records);
    assert_eq!(c["long_words"], counts.keys().filter(|w| w.chars().count() > 5).count() as u64);
    assert_eq!(c["map_output_bytes"], report.intermediate_bytes);
    assert_eq!(c["reduce_shuffle_bytes"], report.intermediate_bytes);
}
