//! Errors of the runtime, one enum per operation. Messages name the file, task or worker.

use std::path::PathBuf;

use mapreduce_core::scheduler::ConfigError;
use mapreduce_core::shuffle::record::FormatError;
use mapreduce_core::{JobError, SpecError};

/// Why [`crate::Cluster::run`] failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The job spec is invalid.
    #[error("invalid job: {0}")]
    Spec(#[from] SpecError),
    /// The scheduler configuration is invalid.
    #[error("invalid scheduler configuration: {0}")]
    Config(#[from] ConfigError),
    /// An input path cannot be read.
    #[error("cannot read input {}: {source}", path.display())]
    Input {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The output directory already holds files.
    #[error("output directory {} already exists and is not empty; refusing to overwrite it", path.display())]
    OutputExists {
        /// The directory.
        path: PathBuf,
    },
    /// The output directory cannot be created or written.
    #[error("cannot prepare output directory {}: {source}", path.display())]
    Output {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The job value cannot be encoded for the workers.
    #[error("cannot encode job {job}: {source}")]
    EncodeJob {
        /// The job's name.
        job: &'static str,
        /// Why.
        source: postcard::Error,
    },
    /// No worker answered before the job started.
    #[error("no reachable worker: {}", .0.join("; "))]
    NoReachableWorker(Vec<String>),
    /// Every worker refused this master before the job started: its token was refused
    /// (`UNAUTHENTICATED`) or the TLS handshake failed. Each entry names a worker and why.
    #[error("every worker refused this master: {}", .0.join("; "))]
    Refused(Vec<String>),
    /// The job failed while running.
    #[error(transparent)]
    Job(#[from] JobError),
    /// The accepted outputs could not be committed.
    #[error("cannot commit output {}: {source}", path.display())]
    Commit {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Why a cluster could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A worker address is not a valid URI.
    #[error("invalid worker address {addr:?}: {reason}")]
    BadAddress {
        /// The address as given.
        addr: String,
        /// Why it is invalid.
        reason: String,
    },
    /// No worker address was given.
    #[error("a cluster needs at least one worker")]
    NoWorkers,
    /// A local worker could not bind its port.
    #[error("cannot start local worker: {0}")]
    Bind(#[source] std::io::Error),
    /// The security settings are incomplete or cannot be used.
    #[error(transparent)]
    Security(#[from] SecurityError),
    /// The TLS settings cannot be applied to a worker's endpoint.
    #[error("cannot set up TLS to worker {addr}")]
    Tls {
        /// The worker's address.
        addr: String,
        /// Why.
        #[source]
        error: tonic::transport::Error,
    },
}

/// Why a worker server stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The listening address cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The gRPC server failed.
    #[error("worker server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The listener's own address cannot be read.
    #[error("cannot read the address of the listener: {0}")]
    LocalAddr(std::io::Error),
    /// The security settings refuse this server (protected mode), or are incomplete.
    #[error(transparent)]
    Security(#[from] SecurityError),
    /// The TLS settings cannot be applied to the server.
    #[error("cannot set up the worker's TLS")]
    Tls(#[source] tonic::transport::Error),
}

/// Why a token or TLS settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    /// A token given in code is unfit.
    #[error("the token {0}")]
    Token(&'static str),
    /// The token in a file is unfit.
    #[error("token file {}: the token {problem}", path.display())]
    TokenFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it ("is empty").
        problem: &'static str,
    },
    /// A file cannot be read.
    #[error("cannot read {}: {error}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// A certificate or key cannot be found or parsed in its PEM.
    #[error("{from}: {problem}")]
    Pem {
        /// The file it came from (or which PEM text: "the CA").
        from: String,
        /// What is wrong.
        problem: String,
    },
    /// The operating system gave no random bytes for a token.
    #[error("cannot draw a random token: {0}")]
    Random(std::io::Error),
    /// Required TLS parts are missing (a worker's certificate, a master's CA).
    #[error("incomplete TLS settings: {0}")]
    Incomplete(&'static str),
    /// Protected mode: a worker was asked to serve an address that is not loopback with
    /// nothing to authenticate its callers.
    #[error(
        "refusing to serve {addr} with no token: anyone who can reach a non-loopback address could run tasks; \
         set a token (or client certificates), listen on a loopback address, or allow it explicitly (insecure)"
    )]
    Unprotected {
        /// The listener's address.
        addr: std::net::SocketAddr,
    },
}

/// Why a task attempt failed on a worker. Sent to the master as a gRPC status.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// The request is malformed or unsafe (path outside the data root, absurd sizes).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The worker has no job of this name.
    #[error("job {0:?} is not registered on this worker")]
    UnknownJob(String),
    /// The job's fields do not decode as the registered type.
    #[error("cannot decode the fields of job {job:?}: {source}")]
    BadPayload {
        /// The job's name.
        job: String,
        /// Why.
        source: postcard::Error,
    },
    /// An input file cannot be read.
    #[error("cannot read input {}: {source}", path.display())]
    Input {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// An intermediate record file is corrupt, truncated or unreadable.
    #[error("bad intermediate file {}: {source}", path.display())]
    Intermediate {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: FormatError,
    },
    /// A file cannot be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// User code returned an error.
    #[error("{at}: {message}")]
    User {
        /// Where: the task and record.
        at: String,
        /// The user's error.
        message: String,
    },
    /// The master abandoned the attempt (its deadline passed, or another attempt won), so
    /// the worker stopped running it.
    #[error("attempt abandoned by the master")]
    Cancelled,
    /// User code panicked.
    #[error("{at}: panicked: {message}")]
    Panic {
        /// Where: the task and record.
        at: String,
        /// The panic message.
        message: String,
    },
}

impl From<TaskError> for tonic::Status {
    fn from(e: TaskError) -> Self {
        let msg = e.to_string();
        match e {
            TaskError::InvalidRequest(_) => tonic::Status::invalid_argument(msg),
            TaskError::UnknownJob(_) => tonic::Status::not_found(msg),
            TaskError::BadPayload { .. } => tonic::Status::failed_precondition(msg),
            _ => tonic::Status::aborted(msg),
        }
    }
}

/// The message of a panic payload.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}
