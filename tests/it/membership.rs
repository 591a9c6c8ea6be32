//! Workers that join a listening master and leave by draining, in process behind real
//! gRPC: a joined worker gets tasks at once, even mid-job; a drained one finishes its
//! attempt, takes no new one, keeps serving its map output until the job ends, and the
//! job neither fails nor re-runs a map.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mapreduce::security::Token;
use mapreduce::worker::{Registry, Worker};
use mapreduce::{Cluster, JobReport, JobSpec, RunError};
use mapreduce_examples::corpus::generate_corpus;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::processes::SlowWordCount;
use crate::support::{assert_wordcount_output, init_tracing, tree};

/// A worker of [`SlowWordCount`] that joins `master`, confined to `root`, keeping map
/// output in `work`; it drains when the sender is fired or dropped. The handle ends when
/// the worker has stopped.
async fn joining_worker(
    master: SocketAddr,
    token: &Token,
    root: &Path,
    work: &Path,
) -> (SocketAddr, oneshot::Sender<()>, JoinHandle<Result<(), mapreduce::ServeError>>) {
    let worker = Worker::new(Registry::new().register::<SlowWordCount>())
        .with_token(token.clone())
        .with_root(root)
        .with_work_dir(work)
        .with_join(master.to_string())
        .with_max_tasks(1);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (drain, drained) = oneshot::channel::<()>();
    let handle = tokio::spawn(worker.serve_with_drain(listener, async { drained.await.unwrap_or(()) }));
    (addr, drain, handle)
}

/// A master that listens on 127.0.0.1 and has no worker of its own.
async fn listening_master(token: &Token) -> Cluster {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    Cluster::connect(Vec::<String>::new())
        .unwrap()
        .with_token(token.clone())
        .with_worker_shuffle(true)
        .listen(listener)
        .unwrap()
}

/// Workers that join the master at `at`, one per work directory of `works`, confined to `root`.
async fn join_all(
    at: SocketAddr,
    token: &Token,
    root: &Path,
    works: &[tempfile::TempDir],
) -> Vec<(SocketAddr, oneshot::Sender<()>, JoinHandle<Result<(), mapreduce::ServeError>>)> {
    let mut workers = Vec::new();
    for work in works {
        workers.push(joining_worker(at, token, root, work.path()).await);
    }
    workers
}

fn corpus(dir: &Path, bytes: u64) -> (PathBuf, PathBuf) {
    let input = dir.join("corpus.txt");
    generate_corpus(&input, bytes, 5_000, 21).unwrap();
    (input, dir.join("out"))
}

/// The slow word count of `input`: 16 KiB shards of 50 ms each at least.
fn spec(input: &Path, out: &Path) -> JobSpec<SlowWordCount> {
    JobSpec::new(SlowWordCount { block_delay_ms: 50, ..Default::default() }, [input], out)
        .reducers(2)
        .shard_size(16 << 10)
}

fn addrs(report: &JobReport) -> Vec<String> {
    let mut addrs: Vec<String> = report.workers.iter().map(|w| w.addr.clone()).collect();
    addrs.sort();
    addrs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_that_join_a_listening_master_run_its_job_and_are_in_its_report() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let (input, out) = corpus(dir.path(), 256 << 10);
    let token = Token::random().unwrap();
    let master = listening_master(&token).await;
    let at = master.listen_addr().unwrap();
    let works: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let workers = join_all(at, &token, dir.path(), &works).await;
    let report = master.run(spec(&input, &out)).await.unwrap();
    assert_wordcount_output(&out, 2, std::slice::from_ref(&input));
    let mut joined: Vec<String> = workers.iter().map(|(a, ..)| a.to_string()).collect();
    joined.sort();
    assert_eq!(addrs(&report), joined, "{report:?}");
    assert!(report.workers.iter().all(|w| w.accepted > 0), "both took tasks: {report:?}");

    // A second job on the same master uses the same workers.
    let out2 = dir.path().join("out2");
    let report = master.run(spec(&input, &out2)).await.unwrap();
    assert_eq!(addrs(&report), joined);
    assert_wordcount_output(&out2, 2, &[input]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_joins_mid_job_gets_tasks_at_once() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    // 48 shards of 50 ms: 2.4 s on one worker of one task at a time.
    let (input, out) = corpus(dir.path(), 768 << 10);
    let token = Token::random().unwrap();
    let master = listening_master(&token).await;
    let at = master.listen_addr().unwrap();
    let works: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let first = joining_worker(at, &token, dir.path(), works[0].path()).await;
    let job = tokio::spawn({
        let (input, out) = (input.clone(), out.clone());
        async move { master.run(spec(&input, &out)).await }
    });
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(!job.is_finished(), "the job ended before the second worker joined");
    let second = joining_worker(at, &token, dir.path(), works[1].path()).await;
    let report = job.await.unwrap().unwrap();
    assert_wordcount_output(&out, 2, &[input]);
    let late = report.workers.iter().find(|w| w.addr == second.0.to_string()).expect("the late worker is listed");
    assert!(late.accepted >= 3, "the late worker took tasks: {report:?}");
    assert_eq!(report.workers[0].addr, first.0.to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_drained_mid_job_serves_its_map_output_until_the_job_ends_then_stops() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let (input, out) = corpus(dir.path(), 768 << 10);
    let token = Token::random().unwrap();
    let master = listening_master(&token).await;
    let at = master.listen_addr().unwrap();
    let works: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let (drained_addr, drain, drained) = joining_worker(at, &token, dir.path(), works[0].path()).await;
    let _other = joining_worker(at, &token, dir.path(), works[1].path()).await;
    let job = tokio::spawn({
        let (input, out) = (input.clone(), out.clone());
        async move { master.run(spec(&input, &out)).await }
    });
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(tree(works[0].path()).len() >= 2, "the worker to drain holds map output: {:?}", tree(works[0].path()));
    drain.send(()).unwrap();
    // It holds map output of the running job: it keeps serving until the job ends.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!drained.is_finished(), "the drained worker stopped while its map output was needed");
    let report = job.await.unwrap().unwrap();
    assert_wordcount_output(&out, 2, &[input]);
    let w = report.workers.iter().find(|w| w.addr == drained_addr.to_string()).unwrap();
    assert!(w.drained && w.accepted >= 2, "{report:?}");
    assert_eq!((report.map_outputs_lost, report.attempts.failed), (0, 0), "{report:?}");
    // The job's end (EndJob) lets it stop, at once.
    let stopped = tokio::time::timeout(Duration::from_secs(5), drained).await.expect("the drained worker stops");
    stopped.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_without_the_token_is_refused_and_a_master_with_no_workers_says_so() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let (input, out) = corpus(dir.path(), 64 << 10);
    let token = Token::random().unwrap();
    let master = listening_master(&token).await;
    let at = master.listen_addr().unwrap();
    // A worker with the wrong token cannot join: the job finds no worker.
    let work = tempfile::tempdir().unwrap();
    let _intruder = joining_worker(at, &Token::random().unwrap(), dir.path(), work.path()).await;
    let config = mapreduce::SchedulerConfig { no_worker_timeout: Duration::from_secs(2), ..Default::default() };
    let master = master.with_scheduler_config(config);
    let err = master.run(spec(&input, &out)).await.unwrap_err();
    assert!(matches!(err, RunError::Job(mapreduce::JobError::NoWorkers { .. })), "{err}");

    // Neither workers nor a listener: refused before anything is made.
    let lonely = Cluster::connect(Vec::<String>::new()).unwrap();
    let err = lonely.run(spec(&input, &dir.path().join("out3"))).await.unwrap_err();
    assert!(matches!(err, RunError::NoWorkers), "{err}");
    assert!(!dir.path().join("out3").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_that_see_no_file_of_the_master_get_their_shards_streamed_and_their_outputs_pulled() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let (input, out) = corpus(dir.path(), 256 << 10);
    // The workers' only data root is an empty directory: neither the input nor the
    // output directory is visible to them.
    let nothing = tempfile::tempdir().unwrap();
    let token = Token::random().unwrap();
    let master = listening_master(&token).await;
    let at = master.listen_addr().unwrap();
    let works: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let _workers = join_all(at, &token, nothing.path(), &works).await;
    let report = master.run(spec(&input, &out)).await.unwrap();
    assert_wordcount_output(&out, 2, &[input]);
    assert_eq!((report.attempts.failed, report.map_outputs_lost), (0, 0), "{report:?}");
    for work in &works {
        assert_eq!(tree(work.path()), Vec::<String>::new(), "held outputs are removed at the job's end");
    }
}
