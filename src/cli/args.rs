//! The flags of the job runner's commands, and the shape of a job they give with the
//! config file.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::config::{self, parse_duration, parse_size};
use crate::{Compression, DEFAULT_SHARD_SIZE, DEFAULT_SORT_BUFFER};

/// The shape of a job from flags and config.
#[derive(Debug, Clone, Copy)]
pub(super) struct Resolved {
    pub(super) reducers: u32,
    pub(super) shard_size: u64,
    pub(super) sort_buffer: u64,
    pub(super) compression: Compression,
}

#[derive(Args)]
pub(super) struct ShapeArgs {
    /// Number of reduce tasks, so of output files [default: 4, or the job's]
    #[arg(long)]
    pub(super) reducers: Option<u32>,
    /// Target input per map task: bytes, or with a unit (64MiB) [default: 128MiB]
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub(super) shard_size: Option<u64>,
    /// Memory budget of a map task's sort buffer [default: 64MiB]
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub(super) sort_buffer: Option<u64>,
    /// How intermediate files store their blocks: none or lz4 [default: lz4]
    #[arg(long)]
    pub(super) compression: Option<Compression>,
    /// A TOML file of settings (see `mapreduce::cli::Config`); flags override it
    #[arg(long, value_name = "FILE")]
    pub(super) config: Option<PathBuf>,
}

impl ShapeArgs {
    pub(super) fn resolve(&self, file: &config::JobConfig) -> Result<Resolved, String> {
        let size = |flag: Option<u64>, file: &Option<config::Size>, key: &str, default: u64| match (flag, file) {
            (Some(n), _) => Ok(n),
            (None, Some(s)) => s.bytes().map_err(|e| format!("[job] {key}: {e}")),
            (None, None) => Ok(default),
        };
        let compression = match (self.compression, &file.compression) {
            (Some(c), _) => c,
            (None, Some(text)) => text.parse().map_err(|e| format!("[job] compression: {e}"))?,
            (None, None) => Compression::default(),
        };
        Ok(Resolved {
            reducers: self.reducers.or(file.reducers).unwrap_or(4),
            shard_size: size(self.shard_size, &file.shard_size, "shard_size", DEFAULT_SHARD_SIZE)?,
            sort_buffer: size(self.sort_buffer, &file.sort_buffer, "sort_buffer", DEFAULT_SORT_BUFFER)?,
            compression,
        })
    }
}

#[derive(Args)]
pub(super) struct RunArgs {
    /// Input files or directories (repeatable)
    #[arg(long = "input", value_name = "PATH")]
    pub(super) inputs: Vec<PathBuf>,
    /// Output directory; must not exist or be empty [default: a new temporary directory]
    #[arg(long, value_name = "DIR")]
    pub(super) output: Option<PathBuf>,
    /// Number of in-process workers [default: 2]
    #[arg(long)]
    pub(super) workers: Option<usize>,
    /// Keep map output on the worker that wrote it and fetch it over gRPC
    #[arg(long)]
    pub(super) worker_shuffle: bool,
    /// Keep map output in the job's work directory beside the output (the default of run)
    #[arg(long, conflicts_with = "worker_shuffle")]
    pub(super) shared_shuffle: bool,
    /// Write the job report as JSON to this file
    #[arg(long, value_name = "FILE")]
    pub(super) report: Option<PathBuf>,
    #[command(flatten)]
    pub(super) shape: ShapeArgs,
}

#[derive(Args)]
pub(super) struct MasterArgs {
    /// A worker's address, host:port or http://host:port (repeatable)
    #[arg(long = "worker", value_name = "ADDR")]
    pub(super) workers: Vec<String>,
    /// Listen on ADDR for workers that join (`worker --join`)
    #[arg(long, value_name = "ADDR")]
    pub(super) listen: Option<String>,
    /// Input files or directories (repeatable)
    #[arg(long = "input", value_name = "PATH")]
    pub(super) inputs: Vec<PathBuf>,
    /// Output directory; must not exist or be empty
    #[arg(long, value_name = "DIR")]
    pub(super) output: Option<PathBuf>,
    /// Keep map output on the worker that wrote it; reduces fetch it over gRPC (the
    /// master's default)
    #[arg(long)]
    pub(super) worker_shuffle: bool,
    /// Keep map output in the job's work directory beside the output, which every worker
    /// must see (a shared filesystem), instead of on the workers
    #[arg(long, conflicts_with = "worker_shuffle")]
    pub(super) shared_shuffle: bool,
    /// Deadline of one task attempt (seconds, or with a unit: 90s), doubled per worker
    /// after a miss [default: 60s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub(super) task_timeout: Option<Duration>,
    /// Give up when no worker has answered for this long [default: 60s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub(super) no_worker_timeout: Option<Duration>,
    /// Write the job report as JSON to this file
    #[arg(long, value_name = "FILE")]
    pub(super) report: Option<PathBuf>,
    /// A file holding the token the workers expect (surrounding whitespace ignored)
    #[arg(long, value_name = "FILE")]
    pub(super) token_file: Option<PathBuf>,
    /// Dial the workers over TLS, trusting this CA (PEM)
    #[arg(long, value_name = "FILE")]
    pub(super) tls_ca: Option<PathBuf>,
    /// Present this client certificate chain (PEM) over TLS; needs --tls-key
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub(super) tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM)
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub(super) tls_key: Option<PathBuf>,
    #[command(flatten)]
    pub(super) shape: ShapeArgs,
}

#[derive(Args)]
pub(super) struct WorkerArgs {
    /// Address to listen on, e.g. 127.0.0.1:7001
    #[arg(long, value_name = "ADDR")]
    pub(super) listen: Option<String>,
    /// A data root: the worker reads and writes only beneath its roots (repeatable)
    /// [default: the current directory]
    #[arg(long = "root", value_name = "DIR")]
    pub(super) roots: Vec<PathBuf>,
    /// Where map output stays (job directories left in it are removed at start)
    /// [default: a new directory under the OS's temporary directory]
    #[arg(long, value_name = "DIR")]
    pub(super) work_dir: Option<PathBuf>,
    /// Offer this worker to the master listening at MASTER_ADDR, now and every few seconds
    #[arg(long, value_name = "MASTER_ADDR")]
    pub(super) join: Option<String>,
    /// On SIGTERM, the longest to keep serving map output for jobs still running
    /// [default: 10m]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub(super) drain_timeout: Option<Duration>,
    /// Most tasks at once [default: the machine's cores]
    #[arg(long, value_name = "N")]
    pub(super) max_tasks: Option<usize>,
    /// A file holding the token every call must carry (surrounding whitespace ignored)
    #[arg(long, value_name = "FILE")]
    pub(super) token_file: Option<PathBuf>,
    /// Serve an address that is not loopback with no token: anyone who reaches it can run
    /// tasks
    #[arg(long)]
    pub(super) insecure: bool,
    /// Serve TLS with this certificate chain (PEM); needs --tls-key
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub(super) tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM)
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub(super) tls_key: Option<PathBuf>,
    /// Require client certificates signed by this CA (PEM): mutual TLS
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub(super) tls_client_ca: Option<PathBuf>,
    /// A TOML file of settings (its [worker] table); flags override it
    #[arg(long, value_name = "FILE")]
    pub(super) config: Option<PathBuf>,
}
