//! The worker server: [`Worker`], its options (roots, limits, security, work directory),
//! and [`serve`].

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::RwLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use mapreduce_rpc::pb;
use tokio::net::TcpListener;
use tonic::service::interceptor::InterceptedService;

use super::{DEFAULT_MAX_SORT_BUFFER, Registry, SharedRegistry, Slots, WorkerService};
use crate::confine::Files;
use crate::error::ServeError;
use crate::master::replies::status_message;
use crate::master::transport::{Scheme, channel};
use crate::security::{Authenticate, Bearer, Security, Token};
use crate::shuffle::store::{Store, default_work_dir};
use crate::shuffle::{GrpcShuffle, SharedFs, Shuffles};

/// Runs a worker on `addr` until the process ends, with no token and no TLS: protected
/// mode lets it serve only a loopback address (see [`Worker::with_security`]).
pub async fn serve(addr: SocketAddr, registry: Registry) -> Result<(), ServeError> {
    let listener = TcpListener::bind(addr).await.map_err(|source| ServeError::Bind { addr, error: source })?;
    Worker::new(registry).serve_with_shutdown(listener, std::future::pending()).await
}

/// A worker server, with its options.
#[derive(Debug)]
pub struct Worker {
    service: WorkerService,
    /// The data roots to open when the service is built: `None` for an unconfined worker
    /// (in-process), empty for the default, the current directory.
    roots: Option<Vec<PathBuf>>,
    /// Who may call it: checked on every call, and against the listener's address.
    security: Security,
    /// Where map output stays with worker shuffle: `None` for a new directory under the
    /// OS's temporary directory, removed when the worker stops.
    work_dir: Option<PathBuf>,
    /// The master to offer itself to ([`Worker::with_join`]).
    join: Option<String>,
    /// The longest a drain waits for the jobs whose map output it holds to end.
    drain_timeout: Duration,
}

/// How often a worker with [`Worker::with_join`] offers itself to its master again.
const JOIN_PERIOD: Duration = Duration::from_secs(3);

/// The default of [`Worker::with_drain_timeout`].
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(600);

impl Worker {
    /// A worker that runs the job types of `registry`, with no token and no TLS, confined
    /// to its current directory (see [`Worker::with_root`]) and to as many tasks at once
    /// as the machine has cores (see [`Worker::with_max_tasks`]).
    pub fn new(registry: Registry) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut worker = Self::with_shared(Arc::new(RwLock::new(registry))).with_max_tasks(cores);
        worker.roots = Some(Vec::new());
        worker
    }

    /// An unconfined worker without a task limit, sharing `registry`: the in-process
    /// workers of `Cluster::local`, which run the user's own job in the user's process.
    pub(crate) fn with_shared(registry: SharedRegistry) -> Self {
        let service = WorkerService {
            registry,
            files: Files::Unconfined,
            shuffle: Arc::new(SharedFs::default()),
            store: None,
            slots: Arc::new(Slots { running: AtomicUsize::new(0), limit: usize::MAX }),
            drain: Arc::new(tokio::sync::watch::Sender::new(false)),
            max_sort_buffer: DEFAULT_MAX_SORT_BUFFER,
        };
        Worker {
            service,
            roots: None,
            security: Security::new(),
            work_dir: None,
            join: None,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
        }
    }

    /// Adds a data root: the worker reads inputs and map outputs, and writes attempt
    /// files, only beneath its roots. A request naming a path outside every root, or one
    /// that leads out through a symlink, is refused (`PERMISSION_DENIED`), naming the path
    /// and the roots. The first call replaces the default root, the current directory;
    /// call it again for more roots. Roots are opened when the worker starts serving.
    pub fn with_root(mut self, root: impl Into<PathBuf>) -> Self {
        self.roots.get_or_insert_with(Vec::new).push(root.into());
        self
    }

    /// Keeps map output (with worker shuffle) in `dir`, one directory per job run, each
    /// removed when its job ends. The directory is the worker's own: made if missing,
    /// and the job directories in it (left by an earlier run of a worker) are removed
    /// when the worker starts. It is always writable by the worker, whatever its data
    /// roots. The default is a new directory `mapreduce-worker-<pid>-<random>` under the
    /// OS's temporary directory, removed when [`Worker::serve_with_shutdown`] ends.
    pub fn with_work_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.work_dir = Some(dir.into());
        self
    }

    /// Offers this worker to the master at `master` (`host:port`, which must listen:
    /// `Cluster::listen`) when it starts serving, and again every few seconds (a master
    /// started later, or again, learns of it so) until it drains. It names the address it
    /// listens on; one of an unspecified host (`0.0.0.0:7001`) is dialled at the address
    /// the call came from. The call carries the worker's token and, with TLS, its
    /// certificate; it checks the master's certificate against its CA.
    pub fn with_join(mut self, master: impl Into<String>) -> Self {
        self.join = Some(master.into());
        self
    }

    /// The longest a drain ([`Worker::serve_with_drain`]) serves map output after its
    /// running tasks end, waiting for the jobs whose output it holds to end (default ten
    /// minutes): past it, the worker stops, and a master that still needs the output
    /// runs those maps again.
    pub fn with_drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// Replaces the security settings: a call without the token is answered
    /// `UNAUTHENTICATED` before any handler runs; with TLS, the worker serves its
    /// certificate and, given a client CA, requires client certificates (see
    /// [`crate::security`]).
    pub fn with_security(mut self, security: Security) -> Self {
        self.security = security;
        self
    }

    /// Requires `token` on every call (keeping the other security settings).
    pub fn with_token(mut self, token: Token) -> Self {
        self.security = self.security.with_token(token);
        self
    }

    /// Lets the worker serve an address that is not loopback with nothing to authenticate
    /// its callers (protected mode off): anyone who reaches it can run tasks.
    pub fn insecure(mut self) -> Self {
        self.security = self.security.insecure();
        self
    }

    /// Gives a map task at most `bytes` of sort buffer (default
    /// [`DEFAULT_MAX_SORT_BUFFER`], 2 GiB, Hadoop's limit of `mapreduce.task.io.sort.mb`):
    /// a job that asks more is refused, and fails at once with a message that names this
    /// limit, instead of taking the worker's memory `max_tasks` times over.
    pub fn with_max_sort_buffer(mut self, bytes: u64) -> Self {
        self.service.max_sort_buffer = bytes;
        self
    }

    /// Runs at most `n` tasks (maps and reduces) at once (at least 1); a request for more
    /// is answered at once with `RESOURCE_EXHAUSTED` ("worker busy"). The default is the
    /// number of cores.
    pub fn with_max_tasks(mut self, n: usize) -> Self {
        self.service.slots = Arc::new(Slots { running: AtomicUsize::new(0), limit: n.max(1) });
        self
    }

    /// The gRPC service, for embedding in a server of your own (or wrapping in tests),
    /// with its data roots opened. It checks no token: that is
    /// [`Worker::serve_with_shutdown`]'s.
    pub fn into_service(self) -> Result<WorkerService, ServeError> {
        Ok(self.into_parts()?.0)
    }

    /// The service, and whether its work directory is a default one (to remove at the end).
    fn into_parts(mut self) -> Result<(WorkerService, bool), ServeError> {
        if let Some(mut roots) = self.roots.take() {
            if roots.is_empty() {
                roots.push(std::env::current_dir().map_err(|error| ServeError::Root { path: ".".into(), error })?);
            }
            let files = Files::confined(&roots).map_err(|(path, error)| ServeError::Root { path, error })?;
            self.service.files = files;
        }
        let default = self.work_dir.is_none();
        let dir = self.work_dir.take().unwrap_or_else(default_work_dir);
        let store = Store::open(&dir).map_err(|error| ServeError::WorkDir { path: dir, error })?;
        self.service.shuffle = Arc::new(Shuffles {
            shared: SharedFs::new(self.service.files.clone()),
            grpc: GrpcShuffle::new(store.clone(), self.security.clone()),
        });
        self.service.store = Some(store);
        Ok((self.service, default))
    }

    /// Whether [`Worker::serve_with_shutdown`] would serve a listener on `addr`: protected
    /// mode, and a certificate if TLS is set. For a caller that says where it listens only
    /// once this holds.
    pub fn check_listen(&self, addr: SocketAddr) -> Result<(), ServeError> {
        self.security.check_listen(addr)?;
        if let Some(tls) = self.security.tls() {
            tls.rustls_server_config()?;
        }
        Ok(())
    }

    /// Serves on an already-bound `listener` until `shutdown` completes.
    ///
    /// Refuses to start (protected mode, [`SecurityError::Unprotected`](crate::error::SecurityError::Unprotected)) when the
    /// listener's address is not loopback and neither a token nor a client CA is set,
    /// unless [`Worker::insecure`]; fails when the TLS settings lack the worker's
    /// certificate.
    pub async fn serve_with_shutdown(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ServeError> {
        self.serve_until(listener, |_| shutdown).await
    }

    /// Serves on `listener` as [`Worker::serve_with_shutdown`] does, and drains when
    /// `drain` completes (a SIGTERM, say): it answers every Wait, Map and Reduce from then
    /// on with `UNAVAILABLE` and the metadata `mapreduce-draining` (the master takes it
    /// out of its job without counting a failure, and keeps its map output), finishes
    /// the tasks it runs, serves the map output it holds until every job it belongs to
    /// has ended (the master's `EndJob`) or the drain timeout passes
    /// ([`Worker::with_drain_timeout`]), and then stops, returning `Ok`.
    pub async fn serve_with_drain(
        self,
        listener: TcpListener,
        drain: impl Future<Output = ()> + Send,
    ) -> Result<(), ServeError> {
        let timeout = self.drain_timeout;
        self.serve_until(listener, move |drainer| async move {
            drain.await;
            drainer.drain(timeout).await;
        })
        .await
    }

    async fn serve_until<F: Future<Output = ()> + Send>(
        self,
        listener: TcpListener,
        stop: impl FnOnce(Drainer) -> F,
    ) -> Result<(), ServeError> {
        let addr = listener.local_addr().map_err(ServeError::LocalAddr)?;
        self.check_listen(addr)?;
        // TLS handshakes run in `accept::tls`, with a deadline tonic's own lack.
        let tls = self.security.tls().map(|tls| tls.rustls_server_config()).transpose()?;
        let mut server = tonic::transport::Server::builder();
        let authenticate = Authenticate(self.security.token().cloned());
        let joiner = match &self.join {
            Some(master) => Some(Joiner::new(master, &self.security, addr)?),
            None => None,
        };
        let (service, default_dir) = self.into_parts()?;
        let store = service.store.clone();
        let drainer = Drainer { drain: service.drain.clone(), slots: service.slots.clone(), store: store.clone() };
        let joining = joiner.map(|j| tokio::spawn(j.run(service.drain.subscribe())));
        let service = pb::worker_server::WorkerServer::new(service).max_decoding_message_size(64 << 20);
        let router = server.add_service(InterceptedService::new(service, authenticate));
        let incoming = super::accept::incoming(listener);
        let served = match tls {
            Some(config) => {
                router.serve_with_incoming_shutdown(super::accept::tls(incoming, config), stop(drainer)).await
            }
            None => router.serve_with_incoming_shutdown(incoming, stop(drainer)).await,
        };
        if let Some(joining) = joining {
            joining.abort();
        }
        if let Some(store) = store.filter(|_| default_dir) {
            store.remove();
        }
        served?;
        Ok(())
    }
}

/// What a drain watches: the flag that turns new tasks away, the tasks running, and the
/// map output held.
struct Drainer {
    drain: Arc<tokio::sync::watch::Sender<bool>>,
    slots: Arc<Slots>,
    store: Option<Store>,
}

impl Drainer {
    /// Turns new tasks away, then waits until no task runs and no job's map output is
    /// held, or `timeout` passes.
    async fn drain(self, timeout: Duration) {
        self.drain.send_replace(true);
        tracing::info!(?timeout, "draining: no new task; serving map output until its jobs end");
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let running = self.slots.running.load(Ordering::Acquire);
            let store = self.store.clone();
            let held = tokio::task::spawn_blocking(move || store.map_or(0, |s| s.jobs_held())).await.unwrap_or(0);
            if running == 0 && held == 0 {
                tracing::info!("drained: no task runs and no map output is held");
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(running, jobs = held, ?timeout, "drain timed out; stopping");
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A worker's offers of itself to its master ([`Worker::with_join`]).
struct Joiner {
    master: String,
    client: pb::master_client::MasterClient<InterceptedService<tonic::transport::Channel, Bearer>>,
    /// The address offered: the one listened on.
    addr: SocketAddr,
    /// Whether it has joined once (logged then, and after each failure).
    logged: bool,
}

impl Joiner {
    fn new(master: &str, security: &Security, addr: SocketAddr) -> Result<Joiner, ServeError> {
        let channel = channel(master, security, Scheme::Strict)
            .map_err(|e| ServeError::Join { master: master.to_string(), reason: e.to_string() })?;
        let client = pb::master_client::MasterClient::with_interceptor(channel, Bearer(security.token().cloned()));
        Ok(Joiner { master: master.to_string(), client, addr, logged: false })
    }

    /// Offers the worker now and every [`JOIN_PERIOD`] until it drains. A refusal or an
    /// unreachable master is logged when it starts (and its end), not at every try.
    async fn run(mut self, mut drain: tokio::sync::watch::Receiver<bool>) {
        let mut failing = None::<String>;
        loop {
            let request = pb::JoinRequest { addr: self.addr.to_string() };
            let answer = tokio::time::timeout(JOIN_PERIOD, self.client.join(request)).await;
            match answer {
                Ok(Ok(reply)) => {
                    if failing.take().is_some() || !self.joined() {
                        tracing::info!(master = %self.master, addr = %reply.into_inner().addr, "joined the master");
                    }
                }
                Ok(Err(status)) => {
                    let why = status_message(&status);
                    if failing.as_deref() != Some(why.as_str()) {
                        tracing::warn!(master = %self.master, error = %why, "cannot join the master; trying again");
                    }
                    failing = Some(why);
                }
                Err(_) => {
                    if failing.is_none() {
                        tracing::warn!(master = %self.master, "no answer from the master; trying again");
                    }
                    failing = Some("no answer".into());
                }
            }
            tokio::select! {
                () = tokio::time::sleep(JOIN_PERIOD) => {}
                _ = drain.wait_for(|d| *d) => return,
            }
        }
    }

    /// Whether it has joined before (logged once, then at each recovery).
    fn joined(&mut self) -> bool {
        std::mem::replace(&mut self.logged, true)
    }
}
