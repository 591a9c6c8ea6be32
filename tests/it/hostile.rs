//! A trust boundary: hostile requests sent with a raw gRPC client to a real worker confined
//! to a data root in a temporary directory. Each gets the right status promptly, the
//! worker stays healthy (an honest map still succeeds), and no file appears outside the
//! root.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use mapreduce::worker::Worker;
use mapreduce::{BoxError, Cluster, Emitter, Job, JobSpec, Mapper, Output, Reducer, Registry, SchedulerConfig};
use mapreduce_examples::wordcount::{Word, WordCount};
use mapreduce_rpc::pb;
use mapreduce_rpc::pb::worker_client::WorkerClient;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tonic::Code;
use tonic::transport::Channel;

use crate::support::tree;

static NEXT_ATTEMPT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// How long any refusal may take: it must come at once, never after a hang.
const PROMPT: Duration = Duration::from_secs(10);

/// Word count whose maps wait at a gate the test opens: to hold tasks running.
#[derive(Serialize, Deserialize)]
struct Gated;

/// Maps at the gate, and whether it is open.
static GATE: (Mutex<(usize, bool)>, Condvar) = (Mutex::new((0, false)), Condvar::new());

impl Mapper for Gated {
    type Key = Word;
    type Value = u64;
    fn map(&self, line: &str, emit: &mut Emitter<'_, Word, u64>) -> Result<(), BoxError> {
        let (lock, changed) = &GATE;
        let mut state = lock.lock().unwrap();
        state.0 += 1;
        changed.notify_all();
        while !state.1 {
            state = changed.wait(state).unwrap();
        }
        drop(state);
        WordCount.map(line, emit)
    }
}

impl Reducer for Gated {
    fn reduce(&self, w: &Word, counts: &mut dyn Iterator<Item = u64>, out: &mut Output<'_>) -> Result<(), BoxError> {
        WordCount.reduce(w, counts, out)
    }
}

impl Job for Gated {
    const NAME: &'static str = "gated";
}

/// A worker confined to `root` (and any `extra` roots), with a sentinel directory beside
/// the root that nothing may touch.
struct Confined {
    _dir: tempfile::TempDir,
    root: PathBuf,
    work: PathBuf,
    sentinel: PathBuf,
    addr: SocketAddr,
    client: WorkerClient<Channel>,
    _stop: oneshot::Sender<()>,
}

impl Confined {
    async fn start(max_tasks: usize, extra: &[&str]) -> Confined {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let work = root.join("work");
        let sentinel = dir.path().join("sentinel");
        fs::create_dir_all(&work).unwrap();
        fs::create_dir_all(&sentinel).unwrap();
        fs::write(sentinel.join("secret.txt"), "secret words\n").unwrap();
        fs::write(root.join("in.txt"), "a b\nb c\n").unwrap();
        let registry = Registry::new().register::<WordCount>().register::<Gated>();
        let worker = extra.iter().fold(Worker::new(registry).with_root(&root), |w, r| w.with_root(r));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = worker.with_max_tasks(max_tasks).serve_with_shutdown(listener, async {
            stopped.await.unwrap_or(());
        });
        tokio::spawn(async move { server.await.unwrap() });
        let client = WorkerClient::connect(format!("http://{addr}")).await.unwrap();
        Confined { _dir: dir, root, work, sentinel, addr, client, _stop: stop }
    }

    fn map(&self, segments: &[(&Path, u64, u64)], work_dir: &Path) -> pb::MapRequest {
        pb::MapRequest {
            job: Some(job("wordcount", 2)),
            task: 0,
            // Attempt files are never replaced: each request its own attempt.
            attempt: NEXT_ATTEMPT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            segments: segments
                .iter()
                .map(|(p, start, end)| pb::Segment {
                    path: p.to_string_lossy().into(),
                    start: *start,
                    end: *end,
                    file_bytes: 0,
                })
                .collect(),
            work_dir: work_dir.to_string_lossy().into(),
            worker_shuffle: false,
            streamed_bytes: Vec::new(),
        }
    }

    /// A map of the whole honest input into the work directory.
    fn honest(&self) -> pb::MapRequest {
        self.map(&[(&self.root.join("in.txt"), 0, 8)], &self.work)
    }

    /// Sends `req` and expects `code` promptly, with a message containing each of `says`.
    async fn refused(&self, what: &str, req: pb::MapRequest, code: Code, says: &[&str]) {
        let before = tree(&self.sentinel);
        let call = tokio::time::timeout(PROMPT, self.client.clone().map(req)).await;
        let status = call.unwrap_or_else(|_| panic!("{what}: no answer within {PROMPT:?}")).expect_err(what);
        assert_eq!(status.code(), code, "{what}: {status:?}");
        for s in says {
            assert!(status.message().contains(s), "{what}: {:?} lacks {s:?}", status.message());
        }
        assert!(status.message().len() < 600, "{what}: a message of {} bytes", status.message().len());
        assert_eq!(tree(&self.sentinel), before, "{what}: nothing appears outside the root");
    }

    /// An honest map succeeds: the worker is healthy.
    async fn healthy(&self) -> pb::MapResponse {
        let reply = tokio::time::timeout(PROMPT, self.client.clone().map(self.honest())).await.unwrap();
        reply.expect("an honest map succeeds").into_inner()
    }
}

fn job(name: &str, reducers: u32) -> pb::Job {
    pb::Job {
        name: name.into(),
        payload: Vec::new(), // a unit struct's postcard encoding
        reducers,
        sort_buffer_bytes: 1 << 20,
        compression: pb::Compression::Lz4 as i32,
        max_line_bytes: 1 << 20,
        skip_long_lines: false,
        job_id: String::new(),
        input_format: pb::InputFormat::Text as i32,
        output_format: pb::OutputFormat::Text as i32,
        invalid_utf8: pb::InvalidUtf8::Replace as i32,
    }
}

fn mkfifo(path: &Path) {
    assert!(std::process::Command::new("mkfifo").arg(path).status().unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_paths_are_refused_promptly_and_nothing_is_read_or_written_outside_the_root() {
    let w = Confined::start(4, &[]).await;
    let root = w.root.display().to_string();
    let secret = w.sentinel.join("secret.txt");
    std::os::unix::fs::symlink(&secret, w.root.join("link.txt")).unwrap();
    std::os::unix::fs::symlink(&w.sentinel, w.root.join("out-dir")).unwrap();
    let denied = Code::PermissionDenied;
    let outside: [(&str, PathBuf); 4] = [
        ("/etc/shadow", "/etc/shadow".into()),
        ("/proc/self/environ", "/proc/self/environ".into()),
        ("a file beside the root", secret.clone()),
        ("/dev/zero", "/dev/zero".into()),
    ];
    // An input outside the roots is one this worker cannot see: it says so (the master
    // then streams the shard, from its own files) and reads nothing.
    let unseen = Code::FailedPrecondition;
    for (what, path) in &outside {
        let req = w.map(&[(path, 0, 1)], &w.work);
        w.refused(what, req, unseen, &[&path.display().to_string(), &root, "not visible"]).await;
    }
    let link = w.root.join("link.txt");
    w.refused("a symlink in the root pointing out", w.map(&[(&link, 0, 5)], &w.work), unseen, &["link.txt", &root])
        .await;
    let dotdot = w.root.join("work/../../sentinel/secret.txt");
    w.refused("..", w.map(&[(&dotdot, 0, 5)], &w.work), Code::InvalidArgument, &["'..'"]).await;
    let relative = Path::new("in.txt");
    w.refused("a relative path", w.map(&[(relative, 0, 5)], &w.work), Code::InvalidArgument, &["absolute"]).await;

    // Work directories: outside, through a symlink, not a directory.
    let input = w.root.join("in.txt");
    let (etc, sentinel) = (Path::new("/etc"), w.sentinel.as_path());
    w.refused("work dir /etc", w.map(&[(&input, 0, 8)], etc), denied, &["\"/etc\"", &root]).await;
    w.refused("work dir beside the root", w.map(&[(&input, 0, 8)], sentinel), denied, &["sentinel"]).await;
    let out_dir = w.root.join("out-dir");
    w.refused("work dir through a symlink", w.map(&[(&input, 0, 8)], &out_dir), denied, &["out-dir"]).await;
    let mut reduce = pb::ReduceRequest {
        job: Some(job("wordcount", 2)),
        task: 0,
        attempt: 2,
        partition: 0,
        locations: vec![secret.display().to_string()],
        inputs: vec![pb::ReduceInput { location: 0, map: 0, attempt: 1, offset: 0, bytes: 5, records: 1 }],
        work_dir: w.work.display().to_string(),
    };
    let status = w.client.clone().reduce(reduce.clone()).await.expect_err("a reduce input outside the root");
    assert_eq!(status.code(), denied, "{status:?}");
    reduce.locations = vec![link.display().to_string()];
    let status = w.client.clone().reduce(reduce.clone()).await.expect_err("a reduce input through a symlink");
    assert!(status.message().contains("outside the worker's data roots"), "{status:?}");
    reduce.locations = vec![w.root.join("in.txt").display().to_string()];
    // A work directory outside the roots is one the worker cannot see: it would keep the
    // output in its own work directory (under the job id), never in /etc.
    reduce.work_dir = "/etc".into();
    let status = w.client.clone().reduce(reduce).await.expect_err("a reduce writing in /etc");
    assert!(status.code() == Code::InvalidArgument && status.message().contains("job id"), "{status:?}");

    assert!(!fs::read_dir("/etc").unwrap().any(|e| e.unwrap().file_name().to_string_lossy().starts_with("m00000")));
    assert_eq!(tree(&w.sentinel), ["secret.txt"]);
    let reply = w.healthy().await;
    assert_eq!((reply.stream_bytes.len(), reply.input_records), (2, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifos_devices_and_pseudo_files_in_a_root_are_refused_without_blocking() {
    // Roots that hold devices and pseudo files: only regular files are read from them.
    let w = Confined::start(4, &["/dev", "/proc"]).await;
    let fifo = w.root.join("fifo");
    mkfifo(&fifo);
    let invalid = Code::InvalidArgument;
    for (path, what) in [
        (fifo.as_path(), "a FIFO"),
        (Path::new("/dev/zero"), "a character device"),
        (Path::new("/dev/urandom"), "a character device"),
        (Path::new("/proc/cpuinfo"), "a file of procfs"),
    ] {
        let req = w.map(&[(path, 0, 1)], &w.work);
        w.refused(&path.display().to_string(), req, invalid, &[&path.display().to_string(), what]).await;
    }
    // Many maps on a FIFO: each refused at once, none holds a thread.
    for _ in 0..20 {
        w.refused("a FIFO again", w.map(&[(&fifo, 0, 1)], &w.work), invalid, &["a FIFO"]).await;
    }
    assert_eq!(w.healthy().await.input_records, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absurd_sizes_are_refused_naming_the_limit() {
    let w = Confined::start(4, &[]).await;
    let input = w.root.join("in.txt");
    let with_job = |f: &dyn Fn(&mut pb::Job)| {
        let mut req = w.honest();
        f(req.job.as_mut().unwrap());
        req
    };
    let invalid = Code::InvalidArgument;
    w.refused("no input format", with_job(&|j| j.input_format = 0), invalid, &["unknown input format 0"]).await;
    w.refused("an unknown output format", with_job(&|j| j.output_format = 9), invalid, &["unknown output format 9"])
        .await;
    w.refused("no UTF-8 policy", with_job(&|j| j.invalid_utf8 = 0), invalid, &["unknown invalid_utf8 policy 0"]).await;
    w.refused(
        "2^20 + 1 reducers",
        with_job(&|j| j.reducers = (1 << 20) + 1),
        invalid,
        &["reducers must be in 0..=1048576, got 1048577"],
    )
    .await;
    w.refused("a huge sort buffer", with_job(&|j| j.sort_buffer_bytes = u64::MAX), invalid, &["sort buffer"]).await;
    w.refused("no sort buffer", with_job(&|j| j.sort_buffer_bytes = 0), invalid, &["sort buffer"]).await;
    w.refused("an unset max line", with_job(&|j| j.max_line_bytes = 0), invalid, &["max line of 0 bytes"]).await;
    w.refused("a huge max line", with_job(&|j| j.max_line_bytes = u64::MAX), invalid, &["max line of"]).await;
    let past_eof = w.map(&[(&input, 0, 1 << 40)], &w.work);
    w.refused("a segment past the end", past_eof, Code::Aborted, &["in.txt is 8 bytes", "shrink"]).await;
    let backwards = w.map(&[(&input, 5, 2)], &w.work);
    w.refused("a segment ending before it starts", backwards, invalid, &["starts after it ends"]).await;
    let many: Vec<(&Path, u64, u64)> = (0..5000).map(|_| (input.as_path(), 0, 1)).collect();
    w.refused("5000 segments", w.map(&many, &w.work), invalid, &["5000 segments", "limit of 4096"]).await;
    let long = w.root.join("x".repeat(5000));
    w.refused("a 5000-byte path", w.map(&[(&long, 0, 1)], &w.work), invalid, &["longer than the limit of 4096"]).await;
    let mut reduce = pb::ReduceRequest {
        job: Some(job("wordcount", 2)),
        partition: 7,
        work_dir: w.work.display().to_string(),
        ..Default::default()
    };
    let status = w.client.clone().reduce(reduce.clone()).await.expect_err("partition 7 of 2");
    assert_eq!((status.code(), status.message()), (invalid, "invalid request: partition 7 of 2 reducers"));
    reduce.partition = 0;
    reduce.inputs = vec![pb::ReduceInput { location: 3, ..Default::default() }];
    let status = w.client.clone().reduce(reduce).await.expect_err("a location that is not there");
    assert!(status.message().contains("names location 3 of 0"), "{status:?}");
    w.healthy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_answers_resource_exhausted_past_its_task_limit_at_once() {
    let w = Confined::start(2, &[]).await;
    let gated = || {
        let mut req = w.honest();
        req.job.as_mut().unwrap().name = "gated".into();
        req
    };
    let running: Vec<_> = (0..2)
        .map(|_| {
            let (mut client, req) = (w.client.clone(), gated());
            tokio::spawn(async move { client.map(req).await })
        })
        .collect();
    // Wait until both maps are at the gate.
    tokio::task::spawn_blocking(|| {
        let (lock, changed) = &GATE;
        drop(changed.wait_while(lock.lock().unwrap(), |state| state.0 < 2).unwrap());
    })
    .await
    .unwrap();
    w.refused("a third task", gated(), Code::ResourceExhausted, &["worker busy: 2 tasks running (limit 2)"]).await;
    {
        let (lock, changed) = &GATE;
        lock.lock().unwrap().1 = true;
        changed.notify_all();
    }
    for call in running {
        call.await.unwrap().expect("a map within the limit succeeds");
    }
    // The slots are free again.
    w.healthy().await;
    w.healthy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_longer_than_max_line_bytes_fails_naming_file_and_offset_or_is_skipped_and_counted() {
    let w = Confined::start(4, &[]).await;
    let long = w.root.join("long.txt");
    fs::write(&long, format!("a b\n{}\nc d\n", "x".repeat(2000))).unwrap();
    let len = fs::metadata(&long).unwrap().len();
    let mut req = w.map(&[(&long, 0, len)], &w.work);
    req.job.as_mut().unwrap().max_line_bytes = 1024;
    // Named by its line number, since the segment starts the file.
    let says = format!("line {}:2 is longer than the limit of 1024 bytes (max_line_bytes)", long.display());
    w.refused("a long line", req.clone(), Code::Aborted, &[&says]).await;
    req.job.as_mut().unwrap().skip_long_lines = true;
    let reply = w.client.clone().map(req).await.expect("skipped").into_inner();
    assert_eq!((reply.input_records, reply.skipped_records), (2, 1));

    // Through the master: the job fails with that message, or succeeds with skipping on.
    let config = SchedulerConfig { max_attempts: 1, ..SchedulerConfig::default() };
    let cluster = Cluster::connect([w.addr.to_string()]).unwrap().with_scheduler_config(config);
    let spec = |out: &str| JobSpec::new(WordCount, [&long], w.root.join(out)).max_line_bytes(1024);
    let err = cluster.run(spec("out-fails")).await.unwrap_err();
    assert!(err.to_string().contains(&says), "{err}");
    cluster.run(spec("out").skip_long_lines(true)).await.unwrap();
    let text = fs::read_to_string(w.root.join("out/part-00000")).unwrap();
    assert_eq!(text, "a\t1\nb\t1\nc\t1\nd\t1\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_8_gib_file_without_a_newline_fails_after_the_line_limit_without_an_abort() {
    let w = Confined::start(4, &[]).await;
    let sparse = w.root.join("sparse");
    let size = 8u64 << 30;
    fs::File::create(&sparse).unwrap().set_len(size).unwrap();
    let mut req = w.map(&[(&sparse, 0, size)], &w.work);
    req.job.as_mut().unwrap().max_line_bytes = 1 << 20;
    let says = format!("line {}:1 is longer than the limit of 1048576 bytes", sparse.display());
    w.refused("an endless line", req.clone(), Code::Aborted, &[&says]).await;
    // A segment starting inside the line skips to the segment's end, not the file's.
    let mut later = w.map(&[(&sparse, 1 << 30, (1 << 30) + (64 << 20))], &w.work);
    later.job = req.job.clone();
    let reply = tokio::time::timeout(PROMPT, w.client.clone().map(later)).await.unwrap().unwrap().into_inner();
    assert_eq!(reply.input_records, 0);
    w.healthy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_refuses_a_fifo_and_proc_files_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    mkfifo(&fifo);
    let cluster = Cluster::local(1).await.unwrap();
    for (input, what) in [(fifo.as_path(), "a FIFO"), (Path::new("/proc/cpuinfo"), "a file of procfs")] {
        let run = cluster.run(JobSpec::new(WordCount, [input], dir.path().join("out")));
        let err = tokio::time::timeout(PROMPT, run).await.expect("no hang").unwrap_err();
        assert_eq!(err.to_string(), format!("input {} is {what}, not a regular file", input.display()));
    }
    assert!(!dir.path().join("out").exists());
}
