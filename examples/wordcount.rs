//! Word count, in-process or across worker processes.
//!
//! ```text
//! wordcount run    [--input PATH]... [--output DIR] [--workers N] [--reducers R]
//!                  [--shard-size SIZE] [--worker-shuffle | --shared-shuffle] [--report FILE]
//! wordcount worker --listen ADDR [--root DIR]... [--work-dir DIR] [--join MASTER_ADDR]
//!                  [--drain-timeout DURATION] [--token-file FILE] [--insecure]
//!                  [--tls-cert FILE --tls-key FILE [--tls-client-ca FILE]]
//! wordcount master [--worker ADDR]... [--listen ADDR] --input PATH... --output DIR
//!                  [--reducers R] [--shard-size SIZE] [--worker-shuffle | --shared-shuffle]
//!                  [--task-timeout DURATION]
//!                  [--report FILE]
//!                  [--token-file FILE] [--tls-ca FILE [--tls-cert FILE --tls-key FILE]]
//! ```
//!
//! A master needs `--worker` or `--listen` (or both): with `--listen`, workers started
//! with `--join` offer themselves to it and get tasks at once, even mid-job. A worker
//! drains on SIGTERM: it finishes its running task, takes no new one, serves its map
//! output until the master's job ends (or `--drain-timeout`), and exits 0.
//!
//! A worker on an address that is not loopback needs `--token-file` (or client
//! certificates, `--tls-client-ca`), or `--insecure`. With `--tls-ca`, the master dials
//! its workers over TLS: `--worker host:port` means `https://host:port`. The master's map
//! output stays in each worker's `--work-dir` and reduces fetch it from the worker that
//! wrote it (`--shared-shuffle`: in the job's directory, which every worker must see); a
//! worker that cannot see an input or the output directory gets the shard streamed by
//! the master, which pulls its reduce output. So no filesystem need be shared.
//!
//! `run` and `master` show the job's progress on stderr (bars on a terminal, else a line
//! at each phase change and every 5 s), and stop the job on SIGINT or SIGTERM: its partial
//! output is removed and the exit status is 130 or 143.

#![allow(clippy::print_stdout)] // a command-line program: printing is its job

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use mapreduce::security::{Security, SecurityError, Tls, Token};
use mapreduce::worker::Worker;
use mapreduce::{
    Cluster, Compression, DEFAULT_SHARD_SIZE, JobReport, JobSpec, JobStatus, Phase, Registry, SchedulerConfig,
    ServeError,
};
use mapreduce_examples::corpus::generate_corpus;
use mapreduce_examples::reference::read_output;
use mapreduce_examples::wordcount::WordCount;
use tokio::sync::watch;

#[derive(Parser)]
#[command(name = "wordcount", about = "Counts words with mapreduce-rs", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the job on workers in this process (on a generated sample if no --input).
    Run {
        /// Input files or directories (repeatable). Default: a generated sample corpus.
        #[arg(long = "input")]
        inputs: Vec<PathBuf>,
        /// Output directory; must not exist or be empty. Default: a new temporary directory.
        #[arg(long)]
        output: Option<PathBuf>,
        /// Number of in-process workers.
        #[arg(long, default_value_t = 2)]
        workers: usize,
        #[command(flatten)]
        shape: Shape,
        /// Write the job report as JSON to this file.
        #[arg(long)]
        report: Option<PathBuf>,
    },
    /// Serves as a worker on ADDR until killed.
    Worker {
        /// Address to listen on, e.g. 127.0.0.1:7001.
        #[arg(long)]
        listen: SocketAddr,
        /// A data root: the worker reads and writes only beneath its roots (repeatable;
        /// default: the current directory).
        #[arg(long = "root", value_name = "DIR")]
        roots: Vec<PathBuf>,
        /// Where map output stays with --worker-shuffle (the worker's own; job directories
        /// left in it are removed at start). Default: a new directory under the OS's
        /// temporary directory, removed when the worker stops.
        #[arg(long, value_name = "DIR")]
        work_dir: Option<PathBuf>,
        /// Offer this worker to the master listening at MASTER_ADDR (host:port), now and
        /// every few seconds until it drains.
        #[arg(long, value_name = "MASTER_ADDR")]
        join: Option<String>,
        /// On SIGTERM, the longest to keep serving map output for jobs still running
        /// (seconds, or with a unit: 10m).
        #[arg(long, default_value = "600", value_name = "DURATION", value_parser = parse_duration)]
        drain_timeout: Duration,
        /// A file holding the token every call must carry (surrounding whitespace ignored).
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// Serve an address that is not loopback with no token: anyone who reaches it can
        /// run tasks.
        #[arg(long)]
        insecure: bool,
        /// Serve TLS with this certificate chain (PEM); needs --tls-key.
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The private key of --tls-cert (PEM).
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Require client certificates signed by this CA (PEM): mutual TLS.
        #[arg(long, requires = "tls_cert")]
        tls_client_ca: Option<PathBuf>,
    },
    /// Drives remote workers through the job.
    #[command(group = clap::ArgGroup::new("workers_from").required(true).multiple(true).args(["workers", "listen"]))]
    Master {
        /// A worker's address, host:port or http://host:port (repeatable).
        #[arg(long = "worker")]
        workers: Vec<String>,
        /// Listen on ADDR for workers that join (`wordcount worker --join`).
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Input files or directories (repeatable).
        #[arg(long = "input", required = true)]
        inputs: Vec<PathBuf>,
        /// Output directory; must not exist or be empty.
        #[arg(long)]
        output: PathBuf,
        #[command(flatten)]
        shape: Shape,
        /// Deadline of one task attempt (seconds, or with a unit: 90s, 2m), doubled per
        /// worker after a miss.
        #[arg(long, default_value = "60", value_name = "DURATION", value_parser = parse_duration)]
        task_timeout: Duration,
        /// Give up when no worker has answered for this long (seconds, or with a unit).
        #[arg(long, default_value = "60", value_name = "DURATION", value_parser = parse_duration)]
        no_worker_timeout: Duration,
        /// Write the job report as JSON to this file.
        #[arg(long)]
        report: Option<PathBuf>,
        /// A file holding the token the workers expect (surrounding whitespace ignored).
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// Dial the workers over TLS, trusting this CA (PEM).
        #[arg(long)]
        tls_ca: Option<PathBuf>,
        /// Present this client certificate chain (PEM) over TLS; needs --tls-key.
        #[arg(long, requires_all = ["tls_ca", "tls_key"])]
        tls_cert: Option<PathBuf>,
        /// The private key of --tls-cert (PEM).
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
struct Shape {
    /// Number of reduce tasks (output files).
    #[arg(long, default_value_t = 4)]
    reducers: u32,
    /// Target input per map task: bytes, or with a unit (64MiB, 1GB).
    #[arg(long, default_value_t = DEFAULT_SHARD_SIZE, value_name = "SIZE", value_parser = parse_size)]
    shard_size: u64,
    /// How intermediate files store their blocks: none or lz4.
    #[arg(long, default_value_t = Compression::default())]
    compression: Compression,
    /// Keep map output on the worker that wrote it; reduces fetch it over gRPC (the
    /// master's default).
    #[arg(long)]
    worker_shuffle: bool,
    /// Keep map output in the job's work directory beside the output, which every worker
    /// must see (a shared filesystem); the default of `run`.
    #[arg(long, conflicts_with = "worker_shuffle")]
    shared_shuffle: bool,
}

impl Shape {
    fn spec(&self, inputs: Vec<PathBuf>, output: &Path) -> JobSpec<WordCount> {
        JobSpec::new(WordCount, inputs, output)
            .reducers(self.reducers)
            .shard_size(self.shard_size)
            .compression(self.compression)
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // Colour only on a terminal: logs redirected to a file stay plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .init();
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => match e.downcast_ref::<Interrupted>() {
            Some(Interrupted(signal)) => {
                eprintln!("wordcount: {}", e);
                // As a shell reports a process killed by the signal.
                ExitCode::from(128 + *signal as u8)
            }
            None => {
                eprintln!("wordcount: error: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

/// The job was stopped by SIGINT (2) or SIGTERM (15).
#[derive(Debug)]
struct Interrupted(i32);

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = if self.0 == 2 { "SIGINT" } else { "SIGTERM" };
        write!(f, "interrupted by {name}: the job is stopped and its partial output removed")
    }
}

impl std::error::Error for Interrupted {}

/// Shows `progress` on stderr until `run` ends: on a terminal, a bar per phase
/// (indicatif); otherwise a plain line at each phase change and every 5 s, `map D/T,
/// reduce D/T`, with the attempts running, failed and backed up.
async fn with_progress<T>(
    progress: watch::Receiver<Option<JobStatus>>,
    run: impl std::future::Future<Output = T>,
) -> T {
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let shown = show_progress(progress, stopped);
    let done = run.await;
    let _ = stop.send(());
    let _ = shown.await;
    done
}

/// The task of [`with_progress`]: it shows the last state once more when `stop` fires.
fn show_progress(
    mut progress: watch::Receiver<Option<JobStatus>>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) -> tokio::task::JoinHandle<()> {
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let started = std::time::Instant::now();
    tokio::spawn(async move {
        let bars = terminal.then(|| {
            let multi = indicatif::MultiProgress::new();
            let style = indicatif::ProgressStyle::with_template(
                "{prefix:>6} [{bar:40}] {pos}/{len} {msg} ({elapsed}, ETA {eta})",
            )
            .expect("a valid template")
            .progress_chars("=> ");
            let bar = |name: &str| {
                let bar = multi.add(indicatif::ProgressBar::new(0).with_style(style.clone()));
                bar.set_prefix(name.to_string());
                bar
            };
            (bar("map"), bar("reduce"))
        });
        // The last line printed, and when.
        let mut last: Option<(JobStatus, std::time::Instant)> = None;
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        let mut stopping = false;
        while !stopping {
            tokio::select! {
                changed = progress.changed() => if changed.is_err() { return },
                _ = tick.tick() => {}
                _ = &mut stop => stopping = true,
            }
            let Some(s) = progress.borrow_and_update().clone() else { continue };
            let msg = format!("running {}, failed {}, backups {}", s.running, s.failed, s.backups);
            match &bars {
                Some((map, reduce)) => {
                    map.set_length(u64::from(s.maps_total));
                    map.set_position(u64::from(s.maps_done));
                    reduce.set_length(u64::from(s.reduces_total));
                    reduce.set_position(u64::from(s.reduces_done));
                    let (now, other) = if s.phase == Phase::Map { (map, reduce) } else { (reduce, map) };
                    now.set_message(msg);
                    other.set_message("");
                    if stopping {
                        map.finish();
                        reduce.finish();
                    }
                }
                None => {
                    let due = match &last {
                        None => true,
                        Some((shown, _)) if stopping => *shown != s,
                        Some((shown, at)) => shown.phase != s.phase || at.elapsed() >= Duration::from_secs(5),
                    };
                    if due {
                        eprintln!(
                            "wordcount: map {}/{}, reduce {}/{} ({msg}) after {:.1} s",
                            s.maps_done,
                            s.maps_total,
                            s.reduces_done,
                            s.reduces_total,
                            started.elapsed().as_secs_f64()
                        );
                        last = Some((s, std::time::Instant::now()));
                    }
                }
            }
        }
    })
}

/// Runs `job` until it ends or SIGINT or SIGTERM comes: then the job's future is dropped,
/// which abandons its attempts and removes `_temporary` (and the output directory if the
/// job made it), so a rerun on the same directory works.
async fn until_signal<T>(job: impl std::future::Future<Output = T>) -> anyhow::Result<T> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    tokio::select! {
        done = job => Ok(done),
        _ = int.recv() => Err(Interrupted(2).into()),
        _ = term.recv() => Err(Interrupted(15).into()),
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Worker {
            listen,
            roots,
            work_dir,
            join,
            drain_timeout,
            token_file,
            insecure,
            tls_cert,
            tls_key,
            tls_client_ca,
        } => {
            let mut security =
                security(token_file.as_deref(), tls_cert.as_deref(), tls_key.as_deref(), tls_client_ca.as_deref())?;
            if insecure {
                security = security.insecure();
            }
            let worker = Worker::new(Registry::new().register::<WordCount>()).with_security(security);
            let mut worker = roots.into_iter().fold(worker, Worker::with_root);
            if let Some(dir) = work_dir {
                worker = worker.with_work_dir(dir);
            }
            if let Some(master) = join {
                worker = worker.with_join(master);
            }
            worker = worker.with_drain_timeout(drain_timeout);
            let listener =
                tokio::net::TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))?;
            let addr = listener.local_addr()?;
            worker.check_listen(addr).map_err(|e| match e {
                ServeError::Security(SecurityError::Unprotected { .. }) => {
                    anyhow::anyhow!("{e} (--token-file FILE, --tls-client-ca FILE, or --insecure)")
                }
                e => e.into(),
            })?;
            // The bound address (the OS picks the port for :0), for whoever started us.
            println!("wordcount: worker listening on {addr}");
            let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .context("cannot handle SIGTERM")?;
            worker
                .serve_with_drain(listener, async move {
                    sigterm.recv().await;
                })
                .await?;
            eprintln!("wordcount: worker drained");
            Ok(())
        }
        Command::Run { inputs, output, workers, shape, report } => {
            let sample = tempfile::tempdir().context("creating a directory for the sample corpus")?;
            let inputs = if inputs.is_empty() {
                let path = sample.path().join("sample.txt");
                generate_corpus(&path, 4 << 20, 20_000, 42).context("generating the sample corpus")?;
                eprintln!("wordcount: no --input, counting a generated 4 MiB sample corpus");
                vec![path]
            } else {
                inputs
            };
            let output = match output {
                Some(o) => o,
                None => tempfile::Builder::new().prefix("wordcount-out-").tempdir()?.keep(),
            };
            let cluster = Cluster::local(workers).await?.with_worker_shuffle(shape.worker_shuffle);
            let spec = shape.spec(inputs, &output);
            let done = with_progress(cluster.progress(), until_signal(cluster.run(spec))).await;
            finish(done??, &output, report.as_deref())
        }
        Command::Master {
            workers,
            listen,
            inputs,
            output,
            shape,
            task_timeout,
            no_worker_timeout,
            report,
            token_file,
            tls_ca,
            tls_cert,
            tls_key,
        } => {
            let security = security(token_file.as_deref(), tls_cert.as_deref(), tls_key.as_deref(), tls_ca.as_deref())?;
            let mut cluster = Cluster::connect(&workers)?
                .with_security(security)?
                .with_task_timeout(task_timeout)
                .with_worker_shuffle(!shape.shared_shuffle);
            let config = SchedulerConfig { no_worker_timeout, ..cluster.scheduler_config().clone() };
            cluster = cluster.with_scheduler_config(config);
            if let Some(listen) = listen {
                let listener = tokio::net::TcpListener::bind(listen)
                    .await
                    .with_context(|| format!("cannot listen on {listen}"))?;
                cluster = cluster.listen(listener)?;
                let addr = cluster.listen_addr().expect("listening");
                println!("wordcount: master listening on {addr}");
            }
            let spec = shape.spec(inputs, &output);
            let done = with_progress(cluster.progress(), until_signal(cluster.run(spec))).await;
            finish(done??, &output, report.as_deref())
        }
    }
}

/// The security of a worker or a master from its flags: the token in `token_file`, and
/// TLS with the identity `cert` + `key` (clap requires both or neither) and the CA `ca`
/// (of client certificates on a worker, of the workers' on a master).
fn security(
    token_file: Option<&Path>,
    cert: Option<&Path>,
    key: Option<&Path>,
    ca: Option<&Path>,
) -> anyhow::Result<Security> {
    let mut security = Security::new();
    if let Some(file) = token_file {
        security = security.with_token(Token::from_file(file)?);
    }
    if cert.is_some() || ca.is_some() {
        let mut tls = Tls::new();
        if let (Some(cert), Some(key)) = (cert, key) {
            tls = tls.with_identity_files(cert, key)?;
        }
        if let Some(ca) = ca {
            tls = tls.with_ca_file(ca)?;
        }
        security = security.with_tls(tls);
    }
    Ok(security)
}

/// A duration: a number of seconds (`30`, `0.5`) or one with units (`90s`, `2m`,
/// `1h 30m`, humantime's syntax); positive.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = match text.trim().parse::<f64>() {
        Ok(secs) => Duration::try_from_secs_f64(secs).map_err(|_| format!("{text:?} is not a number of seconds"))?,
        Err(_) => humantime::parse_duration(text.trim())
            .map_err(|e| format!("{text:?}: {e} (seconds, or a duration such as 90s or 2m)"))?,
    };
    if duration.is_zero() {
        return Err(format!("{text:?}: must be more than zero"));
    }
    Ok(duration)
}

/// A size: a number of bytes (`1048576`) or one with a unit (`64MiB`, `1GB`, `512 KiB`).
fn parse_size(text: &str) -> Result<u64, String> {
    match text.trim().parse::<u64>() {
        Ok(bytes) => Ok(bytes),
        Err(_) => text
            .trim()
            .parse::<bytesize::ByteSize>()
            .map(|size| size.as_u64())
            .map_err(|e| format!("{text:?}: {e} (bytes, or a size such as 64MiB or 1GB)")),
    }
}

fn finish(report: JobReport, output: &Path, report_file: Option<&Path>) -> anyhow::Result<()> {
    if let Some(file) = report_file {
        let json = serde_json::to_string_pretty(&report)?;
        std::fs::write(file, json + "\n").with_context(|| format!("writing report {}", file.display()))?;
    }
    let counts = read_output(output).with_context(|| format!("reading output {}", output.display()))?;
    let mut top: Vec<(&String, &u64)> = counts.iter().collect();
    top.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let top: Vec<String> = top.iter().take(5).map(|(w, c)| format!("{w} {c}")).collect();
    println!(
        "wordcount: {} distinct words from {} input bytes in {} ms ({} map, {} reduce tasks, {} attempts); output in {}",
        report.output_records,
        report.input_bytes,
        report.elapsed_ms,
        report.map_tasks,
        report.reduce_tasks,
        report.attempts.launched,
        output.display()
    );
    println!("wordcount: most frequent: {}", top.join(", "));
    // The job summary, as Hadoop prints its counters at the end of a job.
    let width = report.counters.keys().map(String::len).max().unwrap_or(0);
    eprintln!(
        "wordcount: counters ({} attempts failed, {} map outputs lost):",
        report.attempts.failed, report.map_outputs_lost
    );
    for (name, n) in &report.counters {
        eprintln!("    {name:<width$} {n:>14}");
    }
    Ok(())
}
