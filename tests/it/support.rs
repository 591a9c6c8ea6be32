//! Helpers shared by the integration tests.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use std::net::SocketAddr;

use mapreduce::worker::{Worker, WorkerService};
use mapreduce_examples::reference::{count_sequential, read_output};
use mapreduce_rpc::pb;
use mapreduce_rpc::pb::worker_server::{Worker as WorkerRpc, WorkerServer};
use tokio::sync::oneshot;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

/// Installs a log subscriber once (logs show with `--nocapture` and `RUST_LOG`).
pub(crate) fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .try_init();
}

/// All files (recursively) under `dir`, relative, sorted.
pub(crate) fn tree(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                out.push(path.strip_prefix(root).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// All files (recursively) under `dir`, relative, sorted; what cannot be read (a file
/// removed meanwhile, a directory of a process gone) is left out.
pub(crate) fn tree_lossy(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for entry in entries.flatten() {
            let path = entry.path();
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                walk(root, &path, out);
            } else if let Ok(rel) = path.strip_prefix(root) {
                out.push(rel.to_string_lossy().into_owned());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Asserts that `out` is a complete word count output of `reducers` partitions, equal to
/// the sequential count of `inputs`, with nothing else left in it.
pub(crate) fn assert_wordcount_output(out: &Path, reducers: u32, inputs: &[PathBuf]) -> BTreeMap<String, u64> {
    let mut expected_files: Vec<String> = (0..reducers).map(|r| format!("part-{r:05}")).collect();
    expected_files.push("_SUCCESS".into());
    expected_files.sort();
    assert_eq!(tree(out), expected_files, "output directory holds exactly R part files and _SUCCESS");
    let got = read_output(out).unwrap();
    let expected = count_sequential(inputs).unwrap();
    assert_eq!(got.len(), expected.len(), "distinct words");
    assert!(got == expected, "word counts differ from the sequential count");
    got
}

/// Serves `worker` on 127.0.0.1 with an OS-chosen port until the sender is dropped.
pub(crate) async fn serve(worker: Worker) -> (SocketAddr, oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    // Test data lives in temporary directories: the worker's root.
    tokio::spawn(
        worker.with_root(std::env::temp_dir()).serve_with_shutdown(listener, async { stopped.await.unwrap_or(()) }),
    );
    (addr, stop)
}

/// The lines of every `part-*` file of `out`, sorted.
pub(crate) fn output_lines(out: &Path) -> Vec<String> {
    let mut lines = Vec::new();
    for entry in std::fs::read_dir(out).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap().to_string_lossy().starts_with("part-") {
            lines.extend(std::fs::read_to_string(&path).unwrap().lines().map(String::from));
        }
    }
    lines.sort();
    lines
}

/// What a test worker does around the real service's map, reduce and end-of-job calls
/// (inject a fault, damage a file, slow down, never answer); the other calls pass through.
#[tonic::async_trait]
pub(crate) trait Hooks: Send + Sync + 'static {
    /// Around a map call; by default it passes through.
    async fn map(
        &self,
        inner: &WorkerService,
        request: Request<pb::MapRequest>,
    ) -> Result<Response<pb::MapResponse>, Status> {
        inner.map(request).await
    }

    /// Around a reduce call; by default it passes through.
    async fn reduce(
        &self,
        inner: &WorkerService,
        request: Request<pb::ReduceRequest>,
    ) -> Result<Response<pb::ReduceResponse>, Status> {
        inner.reduce(request).await
    }

    /// Around the end of a job; by default it passes through.
    async fn end_job(
        &self,
        inner: &WorkerService,
        request: Request<pb::EndJobRequest>,
    ) -> Result<Response<pb::EndJobResponse>, Status> {
        inner.end_job(request).await
    }
}

/// The real worker service with [`Hooks`] around its calls.
struct Hooked<H> {
    inner: WorkerService,
    hooks: H,
}

#[tonic::async_trait]
impl<H: Hooks> WorkerRpc for Hooked<H> {
    type FetchStream = <WorkerService as WorkerRpc>::FetchStream;

    async fn fetch(&self, request: Request<pb::FetchRequest>) -> Result<Response<Self::FetchStream>, Status> {
        self.inner.fetch(request).await
    }

    async fn end_job(&self, request: Request<pb::EndJobRequest>) -> Result<Response<pb::EndJobResponse>, Status> {
        self.hooks.end_job(&self.inner, request).await
    }

    async fn wait(&self, request: Request<pb::WaitRequest>) -> Result<Response<pb::WaitResponse>, Status> {
        self.inner.wait(request).await
    }

    async fn map(&self, request: Request<pb::MapRequest>) -> Result<Response<pb::MapResponse>, Status> {
        self.hooks.map(&self.inner, request).await
    }

    async fn map_stream(
        &self,
        request: Request<tonic::Streaming<pb::MapInput>>,
    ) -> Result<Response<pb::MapResponse>, Status> {
        self.inner.map_stream(request).await
    }

    async fn reduce(&self, request: Request<pb::ReduceRequest>) -> Result<Response<pb::ReduceResponse>, Status> {
        self.hooks.reduce(&self.inner, request).await
    }
}

/// Serves `inner` with `hooks` around it on 127.0.0.1 with an OS-chosen port (no token)
/// until the sender is dropped.
pub(crate) async fn serve_hooked(inner: WorkerService, hooks: impl Hooks) -> (SocketAddr, oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(WorkerServer::new(Hooked { inner, hooks }))
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async { stopped.await.unwrap_or(()) }),
    );
    (addr, stop)
}
