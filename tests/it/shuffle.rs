//! Worker shuffle through the real transport on loopback: map output stays in each
//! worker's own work directory, reduces fetch it from the worker that holds it (`Fetch`),
//! and the job's map output is removed from every worker when the job ends.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use mapreduce::security::Token;
use mapreduce::worker::{Registry, Worker, WorkerService};
use mapreduce::{Cluster, JobSpec, SchedulerConfig};
use mapreduce_examples::corpus::generate_corpus;
use mapreduce_examples::wordcount::WordCount;
use mapreduce_rpc::pb;
use mapreduce_rpc::pb::worker_client::WorkerClient;
use mapreduce_rpc::pb::worker_server::Worker as _;
use tokio::sync::oneshot;
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status};

use crate::support::{Hooks, assert_wordcount_output, init_tracing, serve_hooked, tree};

/// A word count worker confined to `root`, keeping map output in `work`, served on
/// 127.0.0.1 until the sender is dropped.
async fn serve(root: &Path, work: &Path, token: Option<&Token>) -> (SocketAddr, oneshot::Sender<()>) {
    let mut worker = Worker::new(Registry::new().register::<WordCount>()).with_root(root).with_work_dir(work);
    if let Some(token) = token {
        worker = worker.with_token(token.clone());
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(worker.serve_with_shutdown(listener, async { stopped.await.unwrap_or(()) }));
    (addr, stop)
}

/// A corpus of about `bytes` in a new directory (the workers' data root), and where its
/// output goes.
fn corpus(bytes: u64, seed: u64) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("corpus.txt");
    generate_corpus(&input, bytes, 5_000, seed).unwrap();
    let out = dir.path().join("out");
    (dir, input, out)
}

/// Whether some worker's work directory holds a map output file.
fn holds_map_output(work: &Path) -> bool {
    work.exists() && tree(work).iter().any(|f| f.rsplit('/').next().is_some_and(|n| n.starts_with('m')))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_shuffle_with_a_token_equals_the_sequential_count_and_leaves_no_map_output() {
    init_tracing();
    let (dir, input, out) = corpus(1 << 20, 11);
    let token = Token::random().unwrap();
    let works: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut workers = Vec::new();
    for work in &works {
        // The work directory lies outside the worker's one data root: it is its own.
        workers.push(serve(dir.path(), work.path(), Some(&token)).await);
    }
    let cluster = Cluster::connect(workers.iter().map(|(a, _)| a.to_string()))
        .unwrap()
        .with_token(token)
        .with_worker_shuffle(true);
    let spec = JobSpec::new(WordCount, [&input], &out).reducers(3).shard_size(64 << 10);
    let report = cluster.run(spec).await.unwrap();
    assert_wordcount_output(&out, 3, std::slice::from_ref(&input));
    assert!(report.map_tasks > 10, "{report:?}");
    assert_eq!(report.map_outputs_lost, 0, "{report:?}");
    for work in &works {
        assert_eq!(tree(work.path()), Vec::<String>::new(), "the job's directory is gone from every worker");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shared_filesystem_mode_leaves_the_worker_work_dirs_untouched() {
    init_tracing();
    let (dir, input, out) = corpus(256 << 10, 12);
    let work = tempfile::tempdir().unwrap();
    let (addr, _stop) = serve(dir.path(), work.path(), None).await;
    let cluster = Cluster::connect([addr.to_string()]).unwrap();
    cluster.run(JobSpec::new(WordCount, [&input], &out).reducers(2).shard_size(64 << 10)).await.unwrap();
    assert_wordcount_output(&out, 2, std::slice::from_ref(&input));
    assert!(std::fs::read_dir(work.path()).unwrap().next().is_none(), "no map output kept on the worker");
}

/// A raw client of `addr`, sending `token` if any.
fn fetch_request<T>(message: T, token: Option<&str>) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(t) = token {
        request.metadata_mut().insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_serves_only_held_ids_with_the_token_in_chunks_of_a_mebibyte() {
    init_tracing();
    let root = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let token = Token::new("fetch-secret").unwrap();
    let (addr, _stop) = serve(root.path(), work.path(), Some(&token)).await;
    let channel = Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    let mut client = WorkerClient::new(channel);
    let secret = Some("fetch-secret");
    // Serving: the worker has cleaned its work directory.
    client.wait(fetch_request(pb::WaitRequest { millis: 0 }, secret)).await.unwrap();
    // A map output as a worker-shuffle map leaves it: <work>/<job id>/m00002-a5.
    let job = "00112233445566778899aabbccddeeff";
    std::fs::create_dir(work.path().join(job)).unwrap();
    let data: Vec<u8> = (0..(5 << 20) + 100).map(|i| (i % 253) as u8).collect();
    std::fs::write(work.path().join(job).join("m00002-a5"), &data).unwrap();
    let range = |map, attempt, offset, bytes| pb::FetchRequest {
        job_id: job.into(),
        map,
        attempt,
        offset,
        bytes,
        reduce: false,
    };

    let mut stream = client.fetch(fetch_request(range(2, 5, 50, 4 << 20), secret)).await.unwrap().into_inner();
    let (mut sizes, mut got) = (Vec::new(), Vec::new());
    while let Some(chunk) = stream.message().await.unwrap() {
        sizes.push(chunk.data.len());
        got.extend(chunk.data);
    }
    assert_eq!(sizes, [1 << 20; 4], "a big range arrives in 1 MiB chunks");
    assert!(got == data[50..50 + (4 << 20)], "the range's bytes, in order");

    for (what, request, code) in [
        ("another attempt", range(2, 6, 0, 1), Code::NotFound),
        ("another map", range(3, 5, 0, 1), Code::NotFound),
        (
            "another job",
            pb::FetchRequest { job_id: "ffeeddccbbaa99887766554433221100".into(), ..range(2, 5, 0, 1) },
            Code::NotFound,
        ),
        (
            "a path for a job",
            pb::FetchRequest { job_id: "../../etc".into(), ..range(2, 5, 0, 1) },
            Code::InvalidArgument,
        ),
        ("past the end", range(2, 5, data.len() as u64 - 10, 11), Code::OutOfRange),
    ] {
        let status = client.fetch(fetch_request(request, secret)).await.err().unwrap_or_else(|| panic!("{what}"));
        assert_eq!(status.code(), code, "{what}: {status:?}");
    }
    for token in [None, Some("wrong")] {
        let status = client.fetch(fetch_request(range(2, 5, 0, 1), token)).await.expect_err("refused");
        assert_eq!(status.code(), Code::Unauthenticated, "{token:?}");
        let end = client.end_job(fetch_request(pb::EndJobRequest { job_id: job.into() }, token)).await;
        assert_eq!(end.unwrap_err().code(), Code::Unauthenticated);
    }
    assert!(holds_map_output(work.path()));
    client.end_job(fetch_request(pb::EndJobRequest { job_id: job.into() }, secret)).await.unwrap();
    assert!(!work.path().join(job).exists(), "EndJob removes the job's map output");
    let status = client.fetch(fetch_request(range(2, 5, 0, 1), secret)).await.expect_err("gone");
    assert_eq!(status.code(), Code::NotFound);
}

/// The real worker service, deleting the first map output held by any of the workers
/// (once in all) when the first reduce arrives.
struct Deleting {
    works: Arc<Vec<PathBuf>>,
    deleted: Arc<Mutex<Option<String>>>,
}

impl Deleting {
    fn delete_one(&self) {
        let mut deleted = self.deleted.lock().unwrap();
        if deleted.is_some() {
            return;
        }
        for work in self.works.iter() {
            if let Some(file) = tree(work).into_iter().find(|f| f.contains("/m")) {
                std::fs::remove_file(work.join(&file)).unwrap();
                *deleted = Some(file);
                return;
            }
        }
    }
}

#[tonic::async_trait]
impl Hooks for Deleting {
    async fn reduce(
        &self,
        inner: &WorkerService,
        request: Request<pb::ReduceRequest>,
    ) -> Result<Response<pb::ReduceResponse>, Status> {
        self.delete_one();
        inner.reduce(request).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_map_output_deleted_from_its_worker_is_made_again_and_the_count_is_exact() {
    init_tracing();
    let (dir, input, out) = corpus(512 << 10, 13);
    let works: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let paths = Arc::new(works.iter().map(|w| w.path().to_path_buf()).collect::<Vec<_>>());
    let deleted = Arc::new(Mutex::new(None));
    let (mut addrs, mut stops) = (Vec::new(), Vec::new());
    for work in &works {
        let inner = Worker::new(Registry::new().register::<WordCount>())
            .with_root(dir.path())
            .with_work_dir(work.path())
            .into_service()
            .unwrap();
        let (addr, stop) = serve_hooked(inner, Deleting { works: paths.clone(), deleted: deleted.clone() }).await;
        addrs.push(addr);
        stops.push(stop);
    }
    let cluster = Cluster::connect(addrs.iter().map(|a| a.to_string()))
        .unwrap()
        .with_worker_shuffle(true)
        .with_scheduler_config(SchedulerConfig { speculation: false, ..SchedulerConfig::default() });
    let spec = JobSpec::new(WordCount, [&input], &out).reducers(3).shard_size(64 << 10);
    let report = cluster.run(spec).await.unwrap();
    assert!(deleted.lock().unwrap().is_some(), "a map output was deleted");
    assert_wordcount_output(&out, 3, std::slice::from_ref(&input));
    assert!(report.map_outputs_lost >= 1, "{report:?}");
    assert!(report.attempts.map_reruns >= 1, "{report:?}");
    for work in &works {
        assert!(!holds_map_output(work.path()), "the job's map output is gone: {:?}", tree(work.path()));
    }
}

/// Never answers the end of a job, like a worker cut off from the master after its last
/// task.
struct Silent;

#[tonic::async_trait]
impl Hooks for Silent {
    async fn end_job(
        &self,
        _: &WorkerService,
        _: Request<pb::EndJobRequest>,
    ) -> Result<Response<pb::EndJobResponse>, Status> {
        std::future::pending().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_never_acknowledges_the_end_of_a_job_does_not_hold_its_result() {
    init_tracing();
    let (dir, input, out) = corpus(256 << 10, 14);
    let works: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let silent = Worker::new(Registry::new().register::<WordCount>())
        .with_root(dir.path())
        .with_work_dir(works[0].path())
        .into_service()
        .unwrap();
    let (silent, _stop_silent) = serve_hooked(silent, Silent).await;
    let (other, _stop_other) = serve(dir.path(), works[1].path(), None).await;
    let cluster = Cluster::connect([silent.to_string(), other.to_string()]).unwrap().with_worker_shuffle(true);
    let spec = JobSpec::new(WordCount, [&input], &out).reducers(2).shard_size(64 << 10);
    let job = cluster.run(spec);
    // The end of job waits 500 ms for its answers; the RPC deadline is 5 s.
    let report = tokio::time::timeout(std::time::Duration::from_secs(4), job)
        .await
        .expect("the result came before the silent worker's end-of-job deadline")
        .unwrap();
    assert_wordcount_output(&out, 2, std::slice::from_ref(&input));
    assert!(report.map_tasks >= 2, "{report:?}");
    assert!(!holds_map_output(works[1].path()), "the answering worker removed its map output");
    assert!(holds_map_output(works[0].path()), "the silent one keeps its own until it restarts");
}
