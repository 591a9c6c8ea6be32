//! A complete command-line program for your job types: `run` (on workers in this
//! process), `worker` and `master`, with the flags every job needs (inputs, output,
//! reducers, sizes with units, durations with units, tokens, TLS, joining workers), a TOML
//! config file that flags override, progress on stderr, a job summary at the end, and a
//! clean stop on SIGINT or SIGTERM (exit status 130 or 143, no partial output left).
//!
//! The job's own parameters are its fields, as [`clap::Args`]: the runner adds them to
//! `run` and `master`. A user's whole `main`:
//!
//! ```no_run
//! use mapreduce::{BoxError, Emitter, Job, Mapper, Output, Reducer};
//! use serde::{Deserialize, Serialize};
//!
//! /// Lines that hold a word, as `path:line:text` (map-only).
//! #[derive(Serialize, Deserialize, clap::Args)]
//! struct Grep {
//!     /// The word to look for.
//!     #[arg(long)]
//!     word: String,
//! }
//!
//! impl Mapper for Grep {
//!     type Key = String;
//!     type Value = ();
//!     fn map(&self, line: &str, emit: &mut Emitter<'_, String, ()>) -> Result<(), BoxError> {
//!         if line.contains(&self.word) {
//!             emit.emit(format!("{}:{line}", emit.position()), ());
//!         }
//!         Ok(())
//!     }
//! }
//! impl Reducer for Grep {
//!     fn reduce(&self, _: &String, _: &mut dyn Iterator<Item = ()>, _: &mut Output<'_>) -> Result<(), BoxError> {
//!         Ok(())
//!     }
//! }
//! impl Job for Grep {
//!     const NAME: &'static str = "grep";
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     mapreduce::cli::Runner::<Grep>::new("grep")
//!         .configure(|spec| spec.reducers(0).split_files(false))
//!         .main()
//! }
//! ```
//!
//! ```text
//! grep run    --input PATH... [--output DIR] [--workers N] [--reducers R] [--shard-size SIZE]
//!             [--sort-buffer SIZE] [--compression none|lz4] [--worker-shuffle] [--report FILE]
//!             [--config FILE] JOB FLAGS
//! grep worker --listen ADDR [--root DIR]... [--work-dir DIR] [--join MASTER_ADDR]
//!             [--drain-timeout DURATION] [--max-tasks N] [--token-file FILE] [--insecure]
//!             [--tls-cert FILE --tls-key FILE [--tls-client-ca FILE]] [--config FILE]
//! grep master [--worker ADDR]... [--listen ADDR] --input PATH... --output DIR [--reducers R]
//!             [--shard-size SIZE] [--sort-buffer SIZE] [--compression none|lz4]
//!             [--shared-shuffle] [--task-timeout DURATION] [--no-worker-timeout DURATION]
//!             [--report FILE] [--token-file FILE] [--tls-ca FILE [--tls-cert FILE --tls-key FILE]]
//!             [--config FILE] JOB FLAGS
//! ```
//!
//! Logs go to stderr, filtered by `RUST_LOG` (default `warn`; `RUST_LOG=mapreduce=info`
//! shows the job's start and end and each worker, `mapreduce=debug` every attempt; h2 and
//! tonic stay at `warn` unless named). Colour only on a terminal.

use std::ffi::OsString;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::ExitCode;
use std::time::Duration;

use clap::{ArgMatches, Args, Command, FromArgMatches};

use crate::security::{Security, SecurityError, Tls, Token};
use crate::worker::Worker;
use crate::{BoxError, Cluster, Job, JobReport, JobSpec, Registry, RunError, SchedulerConfig, ServeError};
use args::{MasterArgs, Resolved, RunArgs, WorkerArgs};

mod args;
pub mod config;
mod progress;

pub use clap;
pub use config::{Config, parse_duration, parse_size};

/// What a pipeline's driver returns: the future of its last job's report.
pub type Stage<'a> = Pin<Box<dyn Future<Output = Result<JobReport, RunError>> + 'a>>;

/// A driver of several jobs (a pipeline), run by `run` and `master` instead of the one job
/// (see [`Runner::driver`]).
pub type Driver<J> = for<'a> fn(J, &'a Stages) -> Stage<'a>;

/// What prints a job's result after a successful run: given its report and output.
pub type Summarize = fn(&JobReport, &Path) -> Result<(), BoxError>;

/// A job runner: turns job types into a complete command-line program (see the module
/// docs). `J` is the job that `run` and `master` run; its fields are flags.
pub struct Runner<J> {
    name: &'static str,
    about: String,
    registry: Registry,
    configure: fn(JobSpec<J>) -> JobSpec<J>,
    summarize: Option<Summarize>,
    driver: Option<Driver<J>>,
    sample: Option<fn(&Path) -> std::io::Result<()>>,
}

impl<J: Job + Args + FromArgMatches> Runner<J> {
    /// A runner named `name` (the program's name in messages) for job `J`, registered on
    /// its workers.
    pub fn new(name: &'static str) -> Self {
        Runner {
            name,
            about: format!("Runs the {} job with mapreduce-rs", J::NAME),
            registry: Registry::new().register::<J>(),
            configure: |spec| spec,
            summarize: None,
            driver: None,
            sample: None,
        }
    }

    /// The one-line description `--help` shows.
    pub fn about(mut self, about: impl Into<String>) -> Self {
        self.about = about.into();
        self
    }

    /// Registers another job type on this program's workers (the stages of a pipeline).
    pub fn register<O: Job>(mut self) -> Self {
        self.registry = self.registry.register::<O>();
        self
    }

    /// Sets what the job needs of its spec beyond the flags: map-only (`reducers(0)`),
    /// input and output formats, whole files... Applied after the flags.
    pub fn configure(mut self, configure: fn(JobSpec<J>) -> JobSpec<J>) -> Self {
        self.configure = configure;
        self
    }

    /// Prints what the output says after a successful run (on stdout); the job summary
    /// goes to stderr either way.
    pub fn summarize(mut self, summarize: Summarize) -> Self {
        self.summarize = Some(summarize);
        self
    }

    /// Runs `driver` instead of the one job: a pipeline of jobs, each through
    /// [`Stages::run`], the last into the output.
    pub fn driver(mut self, driver: Driver<J>) -> Self {
        self.driver = Some(driver);
        self
    }

    /// What `run` reads without `--input`: a sample it writes into the file given.
    pub fn sample_input(mut self, write: fn(&Path) -> std::io::Result<()>) -> Self {
        self.sample = Some(write);
        self
    }

    /// Parses the process's arguments, runs the command, and returns the exit status.
    pub fn main(self) -> ExitCode {
        self.main_from(std::env::args_os())
    }

    /// [`Runner::main`] with the given arguments (the first is the program's name).
    pub fn main_from<I, T>(self, args: I) -> ExitCode
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let matches = match self.command().try_get_matches_from(args) {
            Ok(m) => m,
            Err(e) => {
                let _ = e.print();
                return if e.use_stderr() { ExitCode::from(2) } else { ExitCode::SUCCESS };
            }
        };
        init_logs();
        let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
            Ok(r) => r,
            Err(e) => {
                eprintln!("{}: error: cannot start the async runtime: {e}", self.name);
                return ExitCode::FAILURE;
            }
        };
        let name = self.name;
        match runtime.block_on(self.dispatch(matches)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(Failure::Interrupted(signal)) => {
                let which = if signal == 2 { "SIGINT" } else { "SIGTERM" };
                eprintln!("{name}: interrupted by {which}: the job is stopped and its partial output removed");
                // As a shell reports a process killed by the signal.
                ExitCode::from(128 + signal)
            }
            Err(Failure::Error(e)) => {
                eprintln!("{name}: error: {e}");
                ExitCode::FAILURE
            }
        }
    }

    fn command(&self) -> Command {
        // The job's flags under their own heading; `about` last, as a job's doc comment
        // would set it.
        let job = |c: Command| J::augment_args(c.next_help_heading("Job"));
        let run = job(RunArgs::augment_args(Command::new("run")))
            .about("Runs the job on workers in this process (a generated sample with no --input)");
        let worker = WorkerArgs::augment_args(Command::new("worker")).about("Serves as a worker until SIGTERM");
        let master =
            job(MasterArgs::augment_args(Command::new("master"))).about("Drives remote workers through the job");
        Command::new(self.name)
            .about(self.about.clone())
            .version(env!("CARGO_PKG_VERSION"))
            .subcommand_required(true)
            .subcommands([run, worker, master])
    }

    async fn dispatch(self, matches: ArgMatches) -> Result<(), Failure> {
        let (sub, m) = matches.subcommand().expect("a subcommand is required");
        let from = |e: clap::Error| Failure::Error(e.to_string());
        match sub {
            "worker" => self.worker(WorkerArgs::from_arg_matches(m).map_err(from)?).await,
            "run" => {
                let args = RunArgs::from_arg_matches(m).map_err(from)?;
                let job = J::from_arg_matches(m).map_err(from)?;
                self.run(args, job).await
            }
            _ => {
                let args = MasterArgs::from_arg_matches(m).map_err(from)?;
                let job = J::from_arg_matches(m).map_err(from)?;
                self.master(args, job).await
            }
        }
    }

    async fn worker(self, args: WorkerArgs) -> Result<(), Failure> {
        let config = load(args.config.as_deref())?.worker;
        let listen = args.listen.or(config.listen).ok_or("worker needs --listen ADDR (or [worker] listen)")?;
        let listen: SocketAddr = listen.parse().map_err(|e| format!("--listen {listen:?}: {e}"))?;
        let token_file = args.token_file.or(config.token_file);
        let tls_cert = args.tls_cert.or(config.tls_cert);
        let tls_key = args.tls_key.or(config.tls_key);
        let tls_client_ca = args.tls_client_ca.or(config.tls_client_ca);
        let mut security =
            security(token_file.as_deref(), tls_cert.as_deref(), tls_key.as_deref(), tls_client_ca.as_deref())?;
        if args.insecure || config.insecure == Some(true) {
            security = security.insecure();
        }
        let roots = if args.roots.is_empty() { config.roots } else { args.roots };
        let mut worker = roots.into_iter().fold(Worker::new(self.registry).with_security(security), Worker::with_root);
        if let Some(dir) = args.work_dir.or(config.work_dir) {
            worker = worker.with_work_dir(dir);
        }
        if let Some(master) = args.join.or(config.join) {
            worker = worker.with_join(master);
        }
        if let Some(n) = args.max_tasks.or(config.max_tasks) {
            worker = worker.with_max_tasks(n);
        }
        let drain = match (args.drain_timeout, config.drain_timeout) {
            (Some(d), _) => d,
            (None, Some(span)) => span.duration().map_err(|e| format!("[worker] drain_timeout: {e}"))?,
            (None, None) => crate::worker::DEFAULT_DRAIN_TIMEOUT,
        };
        worker = worker.with_drain_timeout(drain);
        let listener =
            tokio::net::TcpListener::bind(listen).await.map_err(|e| format!("cannot listen on {listen}: {e}"))?;
        let addr = listener.local_addr().map_err(|e| format!("cannot listen on {listen}: {e}"))?;
        worker.check_listen(addr).map_err(|e| match e {
            ServeError::Security(SecurityError::Unprotected { .. }) => {
                format!("{e} (--token-file FILE, --tls-client-ca FILE, or --insecure)")
            }
            e => e.to_string(),
        })?;
        // The bound address (the OS picks the port for :0), for whoever started us.
        say(&format!("{}: worker listening on {addr}", self.name));
        let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| format!("cannot handle SIGTERM: {e}"))?;
        worker
            .serve_with_drain(listener, async move {
                sigterm.recv().await;
            })
            .await
            .map_err(|e| e.to_string())?;
        eprintln!("{}: worker drained", self.name);
        Ok(())
    }

    async fn run(self, args: RunArgs, job: J) -> Result<(), Failure> {
        let config = load(args.shape.config.as_deref())?;
        let sample_dir = tempfile::tempdir().map_err(|e| format!("cannot make a temporary directory: {e}"))?;
        let inputs = match (args.inputs.is_empty(), self.sample) {
            (false, _) => args.inputs,
            (true, Some(write)) => {
                let path = sample_dir.path().join("sample.txt");
                write(&path).map_err(|e| format!("cannot write the sample input {}: {e}", path.display()))?;
                eprintln!("{}: no --input, running on a generated sample ({})", self.name, path.display());
                vec![path]
            }
            (true, None) => return Err("run needs --input PATH".into()),
        };
        let output = match args.output {
            Some(o) => o,
            None => tempfile::Builder::new()
                .prefix(&format!("{}-out-", self.name))
                .tempdir()
                .map_err(|e| format!("cannot make an output directory: {e}"))?
                .keep(),
        };
        let workers = args.workers.or(config.run.workers).unwrap_or(2);
        let cluster =
            Cluster::local(workers).await.map_err(|e| e.to_string())?.with_worker_shuffle(args.worker_shuffle);
        let shape = args.shape.resolve(&config.job)?;
        self.drive(cluster, shape, inputs, output, job, args.report).await
    }

    async fn master(self, args: MasterArgs, job: J) -> Result<(), Failure> {
        let config = load(args.shape.config.as_deref())?;
        let m = &config.master;
        let workers = if args.workers.is_empty() { m.workers.clone() } else { args.workers };
        let listen = match args.listen.or(m.listen.clone()) {
            Some(l) => Some(l.parse::<SocketAddr>().map_err(|e| format!("--listen {l:?}: {e}"))?),
            None => None,
        };
        if workers.is_empty() && listen.is_none() {
            return Err("master needs --worker ADDR or --listen ADDR (or [master] workers or listen)".into());
        }
        let inputs = args.inputs;
        if inputs.is_empty() {
            return Err("master needs --input PATH".into());
        }
        let output = args.output.ok_or("master needs --output DIR")?;
        let span = |flag: Option<Duration>, file: &Option<config::Span>, key: &str, default: u64| match (flag, file) {
            (Some(d), _) => Ok(d),
            (None, Some(s)) => s.duration().map_err(|e| format!("[master] {key}: {e}")),
            (None, None) => Ok(Duration::from_secs(default)),
        };
        let task_timeout = span(args.task_timeout, &m.task_timeout, "task_timeout", 60)?;
        let no_worker_timeout = span(args.no_worker_timeout, &m.no_worker_timeout, "no_worker_timeout", 60)?;
        let token_file = args.token_file.or(m.token_file.clone());
        let tls_cert = args.tls_cert.or(m.tls_cert.clone());
        let tls_key = args.tls_key.or(m.tls_key.clone());
        let tls_ca = args.tls_ca.or(m.tls_ca.clone());
        let security = security(token_file.as_deref(), tls_cert.as_deref(), tls_key.as_deref(), tls_ca.as_deref())?;
        let mut cluster = Cluster::connect(&workers)
            .and_then(|c| c.with_security(security))
            .map_err(|e| e.to_string())?
            .with_task_timeout(task_timeout)
            .with_worker_shuffle(!args.shared_shuffle);
        let scheduler = SchedulerConfig { no_worker_timeout, ..cluster.scheduler_config().clone() };
        cluster = cluster.with_scheduler_config(scheduler);
        if let Some(listen) = listen {
            let listener =
                tokio::net::TcpListener::bind(listen).await.map_err(|e| format!("cannot listen on {listen}: {e}"))?;
            cluster = cluster.listen(listener).map_err(|e| e.to_string())?;
            let addr = cluster.listen_addr().expect("listening");
            say(&format!("{}: master listening on {addr}", self.name));
        }
        let shape = args.shape.resolve(&config.job)?;
        self.drive(cluster, shape, inputs, output, job, args.report).await
    }

    /// Runs the job (or the driver's pipeline) with progress, until a signal; then the
    /// report, the summary and the user's summary.
    async fn drive(
        self,
        cluster: Cluster,
        shape: Resolved,
        inputs: Vec<PathBuf>,
        output: PathBuf,
        job: J,
        report_file: Option<PathBuf>,
    ) -> Result<(), Failure> {
        let stages = Stages { name: self.name, cluster, shape, inputs, output: output.clone() };
        let configure = self.configure;
        let work = async {
            match self.driver {
                Some(driver) => driver(job, &stages).await,
                None => stages.run(configure(stages.spec(job, stages.inputs.clone(), &stages.output))).await,
            }
        };
        let report = until_signal(work).await?.map_err(|e| name_workers(&e.to_string(), &stages.cluster.addrs()))?;
        if let Some(file) = report_file {
            let json = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
            std::fs::write(&file, json + "\n").map_err(|e| format!("cannot write report {}: {e}", file.display()))?;
        }
        if let Some(summarize) = self.summarize {
            summarize(&report, &output).map_err(|e| format!("reading output {}: {e}", output.display()))?;
        } else {
            say(&format!("{}: {} records in {}", self.name, report.output_records, output.display()));
        }
        Ok(())
    }
}

/// What a pipeline's driver runs its jobs with: the cluster, the shape the flags gave,
/// the inputs and the output (see [`Runner::driver`]).
pub struct Stages {
    name: &'static str,
    cluster: Cluster,
    shape: Resolved,
    inputs: Vec<PathBuf>,
    output: PathBuf,
}

impl Stages {
    /// The inputs given (`--input`).
    pub fn inputs(&self) -> &[PathBuf] {
        &self.inputs
    }

    /// The number of reducers the flags (or the config) gave.
    pub fn reducers(&self) -> u32 {
        self.shape.reducers
    }

    /// The output directory given (`--output`): where the last stage writes.
    pub fn output(&self) -> &Path {
        &self.output
    }

    /// A directory for an intermediate stage's output, `<output>.stages/<name>` beside the
    /// output (`out/` and `out` alike): removed first if a run before left it.
    pub fn scratch(&self, name: &str) -> Result<PathBuf, RunError> {
        let dir = stages_dir(&self.output).join(name);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| RunError::Output { path: dir.clone(), error: e })?;
        }
        Ok(dir)
    }

    /// A spec of `job` over `inputs` into `output` with the shape the flags gave (reducers,
    /// shard size, sort buffer, compression).
    pub fn spec<K: Job>(&self, job: K, inputs: Vec<PathBuf>, output: &Path) -> JobSpec<K> {
        JobSpec::new(job, inputs, output)
            .reducers(self.shape.reducers)
            .shard_size(self.shape.shard_size)
            .sort_buffer_bytes(self.shape.sort_buffer)
            .compression(self.shape.compression)
    }

    /// Runs one job, showing its progress, then prints its summary on stderr.
    pub async fn run<K: Job>(&self, spec: JobSpec<K>) -> Result<JobReport, RunError> {
        let report = progress::with_progress(self.name, self.cluster.progress(), self.cluster.run(spec)).await?;
        eprint!("{}", progress::summary(self.name, &report));
        Ok(report)
    }
}

/// How the command ended, if not well.
enum Failure {
    /// SIGINT (2) or SIGTERM (15).
    Interrupted(u8),
    Error(String),
}

impl From<String> for Failure {
    fn from(e: String) -> Self {
        Failure::Error(e)
    }
}

impl From<&str> for Failure {
    fn from(e: &str) -> Self {
        Failure::Error(e.to_string())
    }
}

/// `<output>.stages` beside `output`, whatever its trailing slashes (`Path::file_name`
/// ignores them); under the output itself only for a path without a name (`/`, `..`).
fn stages_dir(output: &Path) -> PathBuf {
    match (output.parent(), output.file_name()) {
        (Some(parent), Some(name)) => parent.join(format!("{}.stages", name.to_string_lossy())),
        _ => output.join(".stages"),
    }
}

/// `message`, followed by the address of each worker it names by index (`worker-2`): the
/// scheduler knows workers by index, a user by address.
fn name_workers(message: &str, addrs: &[&str]) -> String {
    let named: Vec<String> = addrs
        .iter()
        .enumerate()
        .filter(|(i, _)| {
            let id = format!("worker-{i}");
            message
                .match_indices(&id)
                .any(|(at, _)| !message[at + id.len()..].starts_with(|c: char| c.is_ascii_digit()))
        })
        .map(|(i, addr)| format!("worker-{i} is {addr}"))
        .collect();
    if named.is_empty() { message.to_string() } else { format!("{message} ({})", named.join(", ")) }
}

/// The config file, or the defaults without one.
fn load(path: Option<&Path>) -> Result<Config, String> {
    path.map_or_else(|| Ok(Config::default()), Config::load)
}

/// Logs on stderr, filtered by `RUST_LOG` (default `warn`), coloured only on a terminal.
fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(filter)
        .try_init();
}

/// One line on stdout: what the program says for whoever started it (an address, where
/// the output is).
fn say(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Runs `job` until it ends or SIGINT or SIGTERM comes: then the job's future is dropped,
/// which abandons its attempts and removes `_temporary` (and the output directory if the
/// job made it), so a rerun on the same directory works.
async fn until_signal<T>(job: impl Future<Output = T>) -> Result<T, Failure> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt()).map_err(|e| format!("cannot handle SIGINT: {e}"))?;
    let mut term = signal(SignalKind::terminate()).map_err(|e| format!("cannot handle SIGTERM: {e}"))?;
    tokio::select! {
        done = job => Ok(done),
        _ = int.recv() => Err(Failure::Interrupted(2)),
        _ = term.recv() => Err(Failure::Interrupted(15)),
    }
}

/// The security of a worker or a master from its flags: the token in `token_file`, and
/// TLS with the identity `cert` + `key` and the CA `ca` (of client certificates on a
/// worker, of the workers' on a master).
fn security(
    token_file: Option<&Path>,
    cert: Option<&Path>,
    key: Option<&Path>,
    ca: Option<&Path>,
) -> Result<Security, String> {
    let mut security = Security::new();
    if let Some(file) = token_file {
        security = security.with_token(Token::from_file(file).map_err(|e| e.to_string())?);
    }
    if cert.is_some() != key.is_some() {
        return Err("--tls-cert and --tls-key go together".into());
    }
    if cert.is_some() || ca.is_some() {
        let mut tls = Tls::new();
        if let (Some(cert), Some(key)) = (cert, key) {
            tls = tls.with_identity_files(cert, key).map_err(|e| e.to_string())?;
        }
        if let Some(ca) = ca {
            tls = tls.with_ca_file(ca).map_err(|e| e.to_string())?;
        }
        security = security.with_tls(tls);
    }
    Ok(security)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pipelines_stages_sit_beside_the_output_with_or_without_a_trailing_slash() {
        for out in ["top", "top/", "./top//"] {
            assert_eq!(stages_dir(Path::new(out)).file_name().unwrap(), "top.stages", "{out}");
        }
        assert_eq!(stages_dir(Path::new("/data/out/")), Path::new("/data/out.stages"));
    }

    #[test]
    fn errors_name_workers_by_address_too() {
        let addrs = ["10.0.0.1:7001", "10.0.0.2:7001"];
        assert_eq!(
            name_workers("map-00000 failed on worker-1: boom", &addrs),
            "map-00000 failed on worker-1: boom (worker-1 is 10.0.0.2:7001)"
        );
        assert_eq!(name_workers("no worker named", &addrs), "no worker named");
        assert_eq!(name_workers("worker-12 failed", &addrs), "worker-12 failed", "not worker-1");
    }
}
