//! Bad input gets a clear error naming the thing, before work starts where possible.

use std::fs;
use std::time::Duration;

use mapreduce::{
    BoxError, Cluster, Emitter, Job, JobError, JobSpec, Mapper, Output, Reducer, RunError, SchedulerConfig,
};
use mapreduce_examples::wordcount::{Word, WordCount};
use serde::{Deserialize, Serialize};

use crate::support::{init_tracing, tree};

/// Word count that fails on purpose: panics on a line holding `panic_on`, or returns an
/// error when reducing the word `fail_on`.
#[derive(Serialize, Deserialize)]
struct Fragile {
    panic_on: String,
    fail_on: String,
}

impl Mapper for Fragile {
    type Key = Word;
    type Value = u64;
    fn map(&self, line: &str, emit: &mut Emitter<'_, Word, u64>) -> Result<(), BoxError> {
        if !self.panic_on.is_empty() && line.contains(&self.panic_on) {
            panic!("refusing to map {:?}", self.panic_on);
        }
        WordCount.map(line, emit)
    }
}

impl Reducer for Fragile {
    fn reduce(&self, key: &Word, values: &mut dyn Iterator<Item = u64>, out: &mut Output<'_>) -> Result<(), BoxError> {
        if *key == self.fail_on {
            return Err(format!("cannot reduce {key:?}").into());
        }
        WordCount.reduce(key, values, out)
    }
}

impl Job for Fragile {
    const NAME: &'static str = "fragile";
}

fn fragile(panic_on: &str, fail_on: &str) -> Fragile {
    Fragile { panic_on: panic_on.into(), fail_on: fail_on.into() }
}

#[tokio::test]
async fn a_missing_input_is_named_and_nothing_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-file.txt");
    let out = dir.path().join("out");
    let cluster = Cluster::local(1).await.unwrap();
    let err = cluster.run(JobSpec::new(WordCount, [&missing], &out)).await.unwrap_err();
    assert!(matches!(err, RunError::Input { .. }), "{err:?}");
    assert!(err.to_string().contains("no-such-file.txt"), "{err}");
    assert!(!out.exists());
}

#[tokio::test]
async fn a_non_empty_output_directory_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.txt");
    fs::write(&input, "a b c\n").unwrap();
    let out = dir.path().join("out");
    fs::create_dir(&out).unwrap();
    fs::write(out.join("precious"), "keep me").unwrap();
    let cluster = Cluster::local(1).await.unwrap();
    let err = cluster.run(JobSpec::new(WordCount, [&input], &out)).await.unwrap_err();
    assert!(matches!(err, RunError::OutputExists { .. }), "{err:?}");
    assert!(err.to_string().contains("out"), "{err}");
    assert_eq!(tree(&out), vec!["precious"]);
    assert_eq!(fs::read_to_string(out.join("precious")).unwrap(), "keep me");
}

#[tokio::test]
async fn no_reachable_worker_fails_fast_naming_the_workers() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("in.txt"), "a\n").unwrap();
    // A port that nothing listens on: bind one, note it, close it.
    let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let cluster = Cluster::connect([addr.to_string()]).unwrap();
    let out = dir.path().join("out");
    let run = cluster.run(JobSpec::new(WordCount, [dir.path().join("in.txt")], &out));
    let err = tokio::time::timeout(Duration::from_secs(30), run).await.expect("bounded time").unwrap_err();
    assert!(matches!(err, RunError::NoReachableWorker(_)), "{err:?}");
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
    assert!(!out.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_code_that_panics_fails_the_job_naming_task_record_and_panic() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.txt");
    fs::write(&input, "fine line\nanother fine line\nthis one is poison\nfine\n").unwrap();
    let out = dir.path().join("out");
    let cluster = Cluster::local(2).await.unwrap();
    let err = cluster.run(JobSpec::new(fragile("poison", ""), [&input], &out)).await.unwrap_err();
    let RunError::Job(JobError::TaskFailed { task, input: shard, attempts, last }) = &err else {
        panic!("expected a failed task, got {err:?}");
    };
    assert_eq!(task.to_string(), "map-00000");
    assert_eq!(*attempts, SchedulerConfig::default().max_attempts);
    assert!(shard.contains("in.txt"), "{shard}");
    let last = last.to_string();
    assert!(last.contains("refusing to map \"poison\""), "{last}");
    assert!(last.contains("in.txt:3:"), "names the record's line: {last}");
    // No partial output: the work directory is gone, and so is the output directory.
    assert!(!out.exists(), "{:?}", tree(&out));
    // The workers survived the panics and still run jobs.
    let out2 = dir.path().join("out2");
    cluster.run(JobSpec::new(WordCount, [&input], &out2)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reduce_error_names_the_reduce_task_and_the_message() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.txt");
    fs::write(&input, "apple banana cherry\n").unwrap();
    let cluster = Cluster::local(2).await.unwrap();
    let err = cluster.run(JobSpec::new(fragile("", "banana"), [&input], dir.path().join("out"))).await.unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("reduce-00000") && msg.contains("cannot reduce \"banana\""), "{msg}");
}

/// A worker that cannot run the job at all refuses it, and the job fails at its first
/// attempt (no retries, no probation), naming the job, the worker and why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_a_remote_worker_cannot_run_fails_at_once_naming_job_and_worker() {
    for (registry, sort_buffer, want) in [
        (mapreduce::Registry::new(), 1 << 20, "job \"wordcount\" is not registered on this worker"),
        (
            mapreduce::Registry::new().register::<WordCount>(),
            2 << 20,
            "sort buffer of 2097152 bytes, more than this worker's limit of 1048576 (Worker::with_max_sort_buffer)",
        ),
    ] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(
            mapreduce::worker::Worker::new(registry)
                .with_root(std::env::temp_dir())
                .with_max_sort_buffer(1 << 20)
                .serve_with_shutdown(listener, async { stopped.await.unwrap_or(()) }),
        );
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("in.txt"), "a\n").unwrap();
        let cluster = Cluster::connect([addr.to_string()]).unwrap();
        let spec = JobSpec::new(WordCount, [dir.path()], dir.path().join("out")).sort_buffer_bytes(sort_buffer);
        let err = cluster.run(spec).await.unwrap_err();
        let RunError::Job(mapreduce::JobError::Refused { last, .. }) = &err else { panic!("{err}") };
        assert_eq!(last.attempt.0, 0, "the first attempt ends the job: {err}");
        let msg = err.to_string();
        assert!(msg.contains("map-00000") && msg.contains("worker-0") && msg.contains(want), "{msg}");
        assert!(msg.len() < 300, "short: {msg}");
        drop(stop);
        server.await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn a_job_whose_reduce_requests_would_pass_the_message_limit_is_refused_up_front() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.txt");
    fs::write(&input, "ab\n".repeat(120_000)).unwrap();
    let out = dir.path().join("out");
    let cluster = Cluster::local(1).await.unwrap();
    // One map task per byte: 360,000 map outputs for every reduce to name.
    let err = cluster.run(JobSpec::new(WordCount, [&input], &out).shard_size(1)).await.unwrap_err();
    assert!(matches!(err, RunError::TooManyMaps { maps: 360_000, shard_size: 1 }), "{err}");
    assert!(err.to_string().contains("larger shard size"), "{err}");
    assert!(!out.exists(), "nothing left behind");
}
