//! Workers and masters as real processes: the wordcount example's, and workers killed,
//! restarted and stopped (SIGKILL, SIGSTOP) under a running job.
//!
//! The chaos tests need their job to outlast the chaos in any build profile, so their
//! workers are this test binary run again ([`worker_process`]), serving a word count that
//! sleeps before each block of input ([`SlowWordCount`]); their master is a [`Cluster`]
//! in this process.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use mapreduce::worker::Worker;
use mapreduce::{
    BoxError, Cluster, Emitter, Job, JobReport, JobSpec, Mapper, Output, Reducer, Registry, RunError, SchedulerConfig,
};
use mapreduce_examples::corpus::{SplitMix64, generate_corpus};
use mapreduce_examples::wordcount::{Word, WordCount};
use serde::{Deserialize, Serialize};

use crate::support::assert_wordcount_output;

/// What a worker prints before the address it listens on, for whoever started it.
const BANNER: &str = "worker listening on ";

/// The environment variable that makes [`worker_process`] a worker: the address to listen on.
const WORKER_LISTEN: &str = "MAPREDUCE_IT_WORKER_LISTEN";

/// How long [`SlowWordCount`] sleeps before each block of lines. The chaos tests' shards
/// are one block each, so a map task takes at least this long, and a job of `n` shards on
/// `w` workers at least `n / w` times it.
const BLOCK_DELAY: Duration = Duration::from_millis(50);

/// Word count that sleeps `block_delay_ms` before mapping each block of lines and
/// `key_delay_us` before each key it reduces: slow on purpose, by the same amount in a
/// debug and a release build.
#[derive(Serialize, Deserialize, Default)]
pub(crate) struct SlowWordCount {
    pub(crate) block_delay_ms: u64,
    pub(crate) key_delay_us: u64,
}

impl Mapper for SlowWordCount {
    type Key = Word;
    type Value = u64;

    fn map(&self, line: &str, emit: &mut Emitter<'_, Word, u64>) -> Result<(), BoxError> {
        WordCount.map(line, emit)
    }

    fn map_lines(&self, lines: &str, emit: &mut Emitter<'_, Word, u64>) -> Result<(), BoxError> {
        thread::sleep(Duration::from_millis(self.block_delay_ms));
        WordCount.map_lines(lines, emit)
    }
}

impl Reducer for SlowWordCount {
    fn reduce(&self, word: &Word, counts: &mut dyn Iterator<Item = u64>, out: &mut Output<'_>) -> Result<(), BoxError> {
        if self.key_delay_us > 0 {
            thread::sleep(Duration::from_micros(self.key_delay_us));
        }
        WordCount.reduce(word, counts, out)
    }

    fn combine(&self, word: &Word, acc: &mut u64, count: u64) -> Option<u64> {
        WordCount.combine(word, acc, count)
    }
}

impl Job for SlowWordCount {
    const NAME: &'static str = "slow-wordcount";
}

/// Not a test: the worker processes of the chaos tests, which run this binary again with
/// `--exact processes::worker_process --ignored` and [`WORKER_LISTEN`] set. Without that
/// variable (`--include-ignored`) it returns at once.
#[test]
#[ignore = "the entry point of the chaos tests' worker processes"]
#[allow(clippy::print_stdout)] // the process that started this one reads the address from stdout
fn worker_process() {
    let Ok(listen) = std::env::var(WORKER_LISTEN) else { return };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(&listen).await.unwrap();
        println!("{BANNER}{}", listener.local_addr().unwrap());
        let worker = Worker::new(Registry::new().register::<SlowWordCount>()).with_root(std::env::temp_dir());
        worker.serve_with_shutdown(listener, std::future::pending()).await.unwrap();
    });
}

/// The example binary built by `cargo test` beside this test binary.
pub(crate) fn example_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let bin = dir.join("examples").join(format!("wordcount{}", std::env::consts::EXE_SUFFIX));
    assert!(bin.exists(), "{} is missing: run the tests with `cargo test`, which builds examples", bin.display());
    bin
}

/// A worker process, killed on drop.
pub(crate) struct WorkerProcess {
    child: Child,
    pub(crate) addr: String,
}

impl WorkerProcess {
    /// The wordcount example's worker, on `listen`.
    fn example(listen: &str) -> Self {
        let mut cmd = Command::new(example_binary());
        cmd.args(["worker", "--listen", listen]).arg("--root").arg(std::env::temp_dir());
        Self::spawn(cmd)
    }

    /// A worker of [`SlowWordCount`] on `listen`: this test binary, running [`worker_process`].
    fn slow(listen: &str) -> Self {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args(["--exact", "processes::worker_process", "--ignored", "--nocapture"]).env(WORKER_LISTEN, listen);
        Self::spawn(cmd)
    }

    /// Starts `cmd` and waits for the line that says where it listens.
    pub(crate) fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        // The test harness may print before the banner, even on the same line.
        let addr = lines
            .map(Result::unwrap)
            .find_map(|line| Some(line.split_once(BANNER)?.1.trim().to_string()))
            .expect("the worker exited before saying where it listens");
        assert!(addr.starts_with("127.0.0.1:"), "unexpected worker address {addr:?}");
        WorkerProcess { child, addr }
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn worker_and_master_processes_count_words() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("corpus.txt");
    generate_corpus(&input, 1 << 20, 10_000, 3).unwrap();
    let workers: Vec<WorkerProcess> = (0..3).map(|_| WorkerProcess::example("127.0.0.1:0")).collect();
    let out = dir.path().join("out");
    let report = dir.path().join("report.json");
    let mut master = Command::new(example_binary());
    master.arg("master");
    for w in &workers {
        master.args(["--worker", &w.addr]);
    }
    let status = master
        .args(["--input", input.to_str().unwrap(), "--output", out.to_str().unwrap()])
        .args(["--reducers", "3", "--shard-size", "100kB", "--task-timeout", "30s"])
        .args(["--report", report.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(status.success());
    assert_wordcount_output(&out, 3, std::slice::from_ref(&input));
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(report["map_tasks"], 11);
    assert_eq!(report["reduce_tasks"], 3);
    for key in ["launched", "succeeded", "failed", "timed_out", "speculative"] {
        assert!(report["attempts"][key].is_u64(), "attempts.{key} in {report}");
    }
    for key in ["elapsed_ms", "input_bytes", "intermediate_bytes", "output_records", "map_outputs_lost"] {
        assert!(report[key].is_u64(), "{key} in {report}");
    }
    // Counters, with Hadoop's names.
    assert_eq!(report["counters"]["map_input_bytes"], std::fs::metadata(&input).unwrap().len());
    assert_eq!(report["counters"]["reduce_output_records"], report["output_records"]);
    // Every worker that took part, by the address the master dialled.
    let addrs: Vec<&str> = report["workers"].as_array().unwrap().iter().map(|w| w["addr"].as_str().unwrap()).collect();
    assert_eq!(addrs, workers.iter().map(|w| w.addr.as_str()).collect::<Vec<_>>(), "{report}");
}

#[test]
fn the_master_exits_non_zero_with_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(example_binary())
        .args(["master", "--worker", "127.0.0.1:1", "--input", "/no/such/input", "--output"])
        .arg(dir.path().join("out"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("wordcount:")).collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].contains("/no/such/input"), "{stderr}");
}

fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill").args([sig, &pid.to_string()]).status().unwrap();
    assert!(status.success(), "kill {sig} {pid}");
}

/// Starts the slow word count of `input` into `out` on `workers`, in shards of 32 KiB
/// with deadlines of 2 s, driven from a thread of its own so that this one is free to
/// hurt the workers meanwhile.
fn start_job(
    workers: &[String],
    input: &Path,
    out: &Path,
    reducers: u32,
    no_worker_timeout: Duration,
) -> JoinHandle<Result<JobReport, RunError>> {
    let job = SlowWordCount { block_delay_ms: BLOCK_DELAY.as_millis() as u64, ..Default::default() };
    let spec = JobSpec::new(job, [input], out).reducers(reducers).shard_size(32 << 10);
    let workers = workers.to_vec();
    thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let cluster = Cluster::connect(&workers).unwrap().with_task_timeout(Duration::from_secs(2));
            let config = SchedulerConfig { no_worker_timeout, ..cluster.scheduler_config().clone() };
            cluster.with_scheduler_config(config).run(spec).await
        })
    })
}

#[test]
fn the_job_survives_workers_killed_restarted_and_stopped_at_random_moments() {
    crate::support::init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("corpus.txt");
    generate_corpus(&input, 6 << 20, 20_000, 5).unwrap();
    for seed in [1u64, 2, 3] {
        let mut rng = SplitMix64::new(seed);
        let mut workers: Vec<WorkerProcess> = (0..3).map(|_| WorkerProcess::slow("127.0.0.1:0")).collect();
        let addrs: Vec<String> = workers.iter().map(|w| w.addr.clone()).collect();
        let out = dir.path().join(format!("out-{seed}"));
        // 192 shards on 3 workers: at least 64 times BLOCK_DELAY, 3.2 s, whatever the build.
        let job = start_job(&addrs, &input, &out, 4, Duration::from_secs(60));
        let mut kills = 0;
        let mut stopped = false;
        // Chaos while the job runs, at seeded moments: SIGKILL a worker and restart it on
        // the same address; once, SIGSTOP one for longer than the deadline.
        for round in 0.. {
            thread::sleep(Duration::from_millis(100 + rng.below(300)));
            if job.is_finished() {
                break;
            }
            let victim = rng.below(workers.len() as u64) as usize;
            if round == 1 {
                let pid = workers[victim].child.id();
                signal(pid, "-STOP");
                thread::sleep(Duration::from_millis(3000));
                signal(pid, "-CONT");
                stopped = true;
            } else if kills < 6 {
                let addr = workers[victim].addr.clone();
                workers[victim].child.kill().unwrap();
                workers[victim].child.wait().unwrap();
                kills += 1;
                thread::sleep(Duration::from_millis(50 + rng.below(400)));
                workers[victim] = WorkerProcess::slow(&addr);
                assert_eq!(workers[victim].addr, addr, "restarted on the same address");
            }
        }
        let report = job.join().unwrap().unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        assert!(kills > 0 && stopped, "seed {seed}: the job ended before the chaos; make it longer");
        assert_wordcount_output(&out, 4, std::slice::from_ref(&input));
        let hurt = report.attempts.lost + report.attempts.timed_out;
        assert!(hurt > 0, "seed {seed}: no attempt was lost or timed out: {report:?}");
    }
}

#[test]
fn when_every_worker_dies_the_master_fails_in_bounded_time() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("corpus.txt");
    generate_corpus(&input, 6 << 20, 20_000, 6).unwrap();
    let mut workers: Vec<WorkerProcess> = (0..2).map(|_| WorkerProcess::slow("127.0.0.1:0")).collect();
    let addrs: Vec<String> = workers.iter().map(|w| w.addr.clone()).collect();
    let out = dir.path().join("out");
    // 192 shards on 2 workers: at least 96 times BLOCK_DELAY, 4.8 s.
    let job = start_job(&addrs, &input, &out, 4, Duration::from_secs(3));
    thread::sleep(Duration::from_millis(300));
    assert!(!job.is_finished(), "the job ended before its workers died; make it longer");
    for w in &mut workers {
        w.child.kill().unwrap();
        w.child.wait().unwrap();
    }
    let started = Instant::now();
    let result = job.join().unwrap();
    assert!(started.elapsed() < Duration::from_secs(60), "bounded time");
    let err = result.expect_err("no worker is left to finish the job");
    assert!(err.to_string().contains("no worker has been reachable"), "{err}");
    assert!(!out.join("_SUCCESS").exists());
    assert!(!out.exists(), "the output directory the job created is removed");
}

/// The example's master with `--listen`, and workers that `--join` it: the job runs on
/// them, the report lists them, and on SIGTERM a worker that holds nothing exits 0 at once.
#[test]
fn example_workers_join_a_listening_master_and_drain_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("corpus.txt");
    generate_corpus(&input, 2 << 20, 10_000, 8).unwrap();
    let (out, report) = (dir.path().join("out"), dir.path().join("report.json"));
    let mut master = Command::new(example_binary());
    master
        .args(["master", "--listen", "127.0.0.1:0", "--worker-shuffle"])
        .args(["--input", input.to_str().unwrap(), "--output", out.to_str().unwrap()])
        .args(["--reducers", "2", "--shard-size", "200000", "--report", report.to_str().unwrap()]);
    let mut master = master.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().unwrap();
    let mut lines = BufReader::new(master.stdout.take().unwrap()).lines();
    let at = lines
        .by_ref()
        .map(Result::unwrap)
        .find_map(|line| Some(line.split_once("master listening on ")?.1.trim().to_string()))
        .expect("the master says where it listens");
    // Keep reading, so that the master never blocks on a full pipe.
    let _reader = thread::spawn(move || lines.for_each(drop));
    let workers: Vec<WorkerProcess> = (0..2)
        .map(|i| {
            let work = dir.path().join(format!("work-{i}"));
            let mut cmd = Command::new(example_binary());
            cmd.args(["worker", "--listen", "127.0.0.1:0", "--join", &at, "--root"])
                .arg(dir.path())
                .arg("--work-dir")
                .arg(work);
            WorkerProcess::spawn(cmd)
        })
        .collect();
    let status = master.wait().unwrap();
    assert!(status.success(), "master: {status}");
    assert_wordcount_output(&out, 2, std::slice::from_ref(&input));
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let listed: Vec<&str> = report["workers"].as_array().unwrap().iter().map(|w| w["addr"].as_str().unwrap()).collect();
    assert!(!listed.is_empty(), "{report}");
    for addr in &listed {
        assert!(workers.iter().any(|w| w.addr == *addr), "{addr} is one of the joined workers: {report}");
    }
    for mut w in workers {
        signal(w.child.id(), "-TERM");
        let start = Instant::now();
        let status = loop {
            if let Some(status) = w.child.try_wait().unwrap() {
                break status;
            }
            assert!(start.elapsed() < Duration::from_secs(10), "a drained worker with nothing held exits at once");
            thread::sleep(Duration::from_millis(20));
        };
        assert!(status.success(), "a drained worker exits 0: {status}");
    }
}

/// SIGINT on the example's master stops its job: exit status 130, one line that says so,
/// no `_temporary` left, and a rerun on the same output directory works.
#[test]
fn an_interrupted_master_leaves_nothing_and_the_rerun_works() {
    use std::os::unix::process::ExitStatusExt;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("corpus.txt");
    generate_corpus(&input, 256 << 10, 5_000, 9).unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    // A master that waits for workers to join: the job runs (and holds the directory)
    // until it is interrupted.
    let mut master = Command::new(example_binary());
    master
        .args(["master", "--listen", "127.0.0.1:0", "--input", input.to_str().unwrap(), "--output"])
        .arg(&out)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut master = master.spawn().unwrap();
    let lines = BufReader::new(master.stdout.take().unwrap()).lines();
    lines.map(Result::unwrap).find(|l| l.contains("master listening on ")).expect("the master listens");
    let claimed = Instant::now();
    while !out.join("_temporary").exists() {
        assert!(claimed.elapsed() < Duration::from_secs(10), "the job never claimed its output directory");
        thread::sleep(Duration::from_millis(10));
    }
    signal(master.id(), "-INT");
    let output = master.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(130), "{:?}", output.status.signal());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.lines().any(|l| l.starts_with("wordcount: interrupted by SIGINT")), "{stderr}");
    // Not a terminal: progress as plain lines, without colour codes.
    assert!(stderr.lines().any(|l| l.starts_with("wordcount: map 0/1, reduce 0/4")), "{stderr}");
    assert!(!stderr.contains('\x1b'), "{stderr}");
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 0, "nothing left in the output directory");

    let worker = WorkerProcess::example("127.0.0.1:0");
    let status = Command::new(example_binary())
        .args(["master", "--worker", &worker.addr, "--input", input.to_str().unwrap(), "--output"])
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success(), "the rerun: {status}");
    assert_wordcount_output(&out, 4, &[input]);
}
