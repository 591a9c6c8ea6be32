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
    Spec(SpecError),
    /// The scheduler configuration is invalid.
    #[error("invalid scheduler configuration: {0}")]
    Config(ConfigError),
    /// An input path cannot be read.
    #[error("cannot read input {}: {error}", path.display())]
    Input {
        /// The path.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// An input is not a regular file (a FIFO, a device, a file of procfs...).
    #[error("input {} is {what}, not a regular file", path.display())]
    NotRegular {
        /// The path.
        path: PathBuf,
        /// What it is instead.
        what: &'static str,
    },
    /// An input path is longer than [`mapreduce_core::shard::MAX_PATH_BYTES`].
    #[error("input path {path}... is {bytes} bytes long, more than the limit of {limit}")]
    PathTooLong {
        /// The path's first 100 characters.
        path: String,
        /// Its length in bytes.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
    /// The output directory already holds files.
    #[error("output directory {} already exists and is not empty; refusing to overwrite it", path.display())]
    OutputExists {
        /// The directory.
        path: PathBuf,
    },
    /// Another job run holds the output directory: its `_temporary` exists.
    #[error(
        "output directory {} is claimed by {}: another master runs on it, or one was killed; if none runs, remove {}/_temporary and retry",
        path.display(),
        job.as_ref().map_or_else(|| "another job".to_string(), |j| format!("job {j}")),
        path.display()
    )]
    OutputClaimed {
        /// The directory.
        path: PathBuf,
        /// The id of the job run that holds it, if it is known yet.
        job: Option<String>,
    },
    /// The output directory cannot be created or written.
    #[error("cannot prepare output directory {}: {error}", path.display())]
    Output {
        /// The path.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The job value cannot be encoded for the workers.
    #[error("cannot encode job {job}: {error}")]
    EncodeJob {
        /// The job's name.
        job: &'static str,
        /// Why.
        error: postcard::Error,
    },
    /// The input makes so many map tasks that a reduce request naming all their outputs
    /// would pass the message limit.
    #[error(
        "the input makes {maps} map tasks of {shard_size} bytes: a reduce request naming every map output would pass the 64 MiB message limit; use a larger shard size"
    )]
    TooManyMaps {
        /// Map tasks planned.
        maps: u64,
        /// The job's shard size.
        shard_size: u64,
    },
    /// The cluster has no workers and does not listen for any.
    #[error("no workers: none given, and the master does not listen for workers that join")]
    NoWorkers,
    /// No worker answered before the job started (each, and why).
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
    #[error("cannot commit output {}: {error}", path.display())]
    Commit {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
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
    /// A local cluster of no workers was asked for.
    #[error("a cluster needs at least one worker")]
    NoWorkers,
    /// The master cannot listen for workers that join on this address.
    #[error("cannot listen for workers on {addr}: {reason}")]
    Listen {
        /// The listener's address.
        addr: std::net::SocketAddr,
        /// Why.
        reason: String,
    },
    /// A local worker could not bind its port.
    #[error("cannot start local worker: {0}")]
    Bind(std::io::Error),
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
    #[error("cannot listen on {addr}: {error}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        error: std::io::Error,
    },
    /// A data root cannot be opened.
    #[error("cannot open data root {}: {error}", path.display())]
    Root {
        /// The root as given.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The work directory (where map output stays with worker shuffle) cannot be made
    /// or cleaned.
    #[error("cannot prepare work directory {}: {error}", path.display())]
    WorkDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The master to join cannot be dialled as given.
    #[error("cannot join master {master}: {reason}")]
    Join {
        /// The master's address, as given.
        master: String,
        /// Why.
        reason: String,
    },
    /// The gRPC server failed.
    #[error("worker server failed: {0}")]
    Transport(tonic::transport::Error),
    /// The listener's own address cannot be read.
    #[error("cannot read the address of the listener: {0}")]
    LocalAddr(std::io::Error),
    /// The security settings refuse this server (protected mode), or are incomplete.
    #[error(transparent)]
    Security(#[from] SecurityError),
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
    /// A path lies outside every data root of the worker (lexically, or through a symlink).
    #[error("path {path:?} is outside the worker's data roots ({roots})")]
    OutsideRoots {
        /// The path as requested.
        path: String,
        /// The roots (the first few).
        roots: String,
    },
    /// An input is not a regular file with real contents.
    #[error("input {} is {what}, not a regular file", path.display())]
    NotRegular {
        /// The file.
        path: PathBuf,
        /// What it is instead.
        what: &'static str,
    },
    /// An input is shorter than the segment to read: it shrank since it was listed.
    #[error("input {} is {len} bytes, shorter than its segment [{start}..{end}): did it shrink since it was listed?", path.display())]
    InputShrank {
        /// The file.
        path: PathBuf,
        /// Its length now.
        len: u64,
        /// The segment's first byte.
        start: u64,
        /// One past the segment's last byte.
        end: u64,
    },
    /// An input line is longer than the job's `max_line_bytes` (and skipping is off).
    #[error("line {at} is longer than the limit of {limit} bytes (max_line_bytes)")]
    LineTooLong {
        /// The line: `path:line`, or `path, byte offset` where its number is not known.
        at: String,
        /// The limit.
        limit: usize,
    },
    /// An input line is not UTF-8, and the job says to fail (`invalid_utf8`).
    #[error("line {at} is not valid UTF-8 (the job's invalid_utf8 is Fail)")]
    InvalidUtf8 {
        /// The line: `path:line`, or `path, byte offset`.
        at: String,
    },
    /// An input of a job that reads record files is not one, or is corrupt.
    #[error("cannot read record input {}: {error}", path.display())]
    RecordInput {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        error: FormatError,
    },
    /// The worker runs as many tasks as it may; the master should come back later.
    #[error("worker busy: {running} tasks running (limit {limit})")]
    Busy {
        /// Tasks running now.
        running: usize,
        /// The worker's limit.
        limit: usize,
    },
    /// The worker cannot see an input as the master listed it: absent, outside its data
    /// roots, or of another length. The master sends the shard's bytes instead.
    #[error("input {path} is not visible to this worker ({why})")]
    InputUnseen {
        /// The input, as requested.
        path: String,
        /// Why.
        why: String,
    },
    /// The worker drains (it was told to stop): it takes no new task.
    #[error("worker draining: it finishes its running tasks and takes no new one")]
    Draining,
    /// A map attempt's reply would not fit a gRPC message.
    #[error(
        "map output of {streams} streams ({reducers} partitions) needs a reply of {bytes} bytes, more than the limit of {limit}: use fewer reducers or a larger sort buffer"
    )]
    ReplyTooLarge {
        /// The reply's encoded size.
        bytes: usize,
        /// The limit.
        limit: usize,
        /// Streams in the output (runs × partitions).
        streams: usize,
        /// Partitions.
        reducers: u32,
    },
    /// The worker has no job of this name.
    #[error("job {0:?} is not registered on this worker")]
    UnknownJob(String),
    /// The job asks more of something than this worker allows.
    #[error("the job asks for a {what} of {asked} bytes, more than this worker's limit of {limit} ({knob})")]
    OverLimit {
        /// What: `sort buffer`.
        what: &'static str,
        /// How much the job asked.
        asked: u64,
        /// The worker's limit.
        limit: u64,
        /// The setting that sets the limit.
        knob: &'static str,
    },
    /// The job's fields do not decode as the registered type.
    #[error("cannot decode the fields of job {job:?}: {error}")]
    BadPayload {
        /// The job's name.
        job: String,
        /// Why.
        error: postcard::Error,
    },
    /// An input file cannot be read.
    #[error("cannot read input {}: {error}", path.display())]
    Input {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// A map output that a reduce reads is missing, short or corrupt: the map must run
    /// again (the master re-runs map task `map`).
    // The master's failure names the map and attempt (from the status's metadata), so
    // the message does not repeat them.
    #[error("cannot read map output {}: {error}", path.display())]
    MapOutputLost {
        /// The map task that wrote it.
        map: u32,
        /// Its attempt.
        attempt: u64,
        /// Where it was read.
        path: PathBuf,
        /// What is wrong.
        error: FormatError,
    },
    /// An intermediate record file is corrupt, truncated or unreadable.
    #[error("bad intermediate file {}: {error}", path.display())]
    Intermediate {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        error: FormatError,
    },
    /// A file cannot be written.
    #[error("cannot write {}: {error}", path.display())]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
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

// By hand, not `#[from]`, for the variants whose message holds the cause: `#[from]`
// would also make it the source, and a printer that walks the chain would print it twice.
impl From<SpecError> for RunError {
    fn from(e: SpecError) -> Self {
        RunError::Spec(e)
    }
}

impl From<ConfigError> for RunError {
    fn from(e: ConfigError) -> Self {
        RunError::Config(e)
    }
}

impl From<tonic::transport::Error> for ServeError {
    fn from(e: tonic::transport::Error) -> Self {
        ServeError::Transport(e)
    }
}

/// The metadata keys that name a lost map output in a `DATA_LOSS` status.
pub(crate) const LOST_MAP: &str = "mapreduce-lost-map";
/// See [`LOST_MAP`].
pub(crate) const LOST_ATTEMPT: &str = "mapreduce-lost-attempt";
/// Present (`1`) on a lost map output whose holder is gone for the job: the reduce could
/// not reach it, or it does not have the output.
pub(crate) const HOLDER_GONE: &str = "mapreduce-holder-gone";

/// The kind of the I/O error a fetch fails with when the worker that holds the output is
/// gone for the job: it cannot be reached, the connection to it broke, or it does not
/// have the output (it restarted, or lost files). Not for corrupt bytes, which are about
/// the one output: see [`HOLDER_GONE`].
pub(crate) const HOLDER_GONE_KIND: std::io::ErrorKind = std::io::ErrorKind::NotConnected;
/// The metadata key of a `FAILED_PRECONDITION` status from a worker that cannot see an input.
pub(crate) const INPUT_UNSEEN: &str = "mapreduce-input-unseen";
/// The metadata key of a `FAILED_PRECONDITION` status from a worker that cannot run the
/// job at all (it lacks the job type, or the job asks more than it allows).
pub(crate) const REFUSED: &str = "mapreduce-refused";
/// The metadata key of an `UNAVAILABLE` status from a worker that drains.
pub(crate) const DRAINING: &str = "mapreduce-draining";

impl From<TaskError> for tonic::Status {
    fn from(e: TaskError) -> Self {
        let msg = e.to_string();
        match e {
            TaskError::MapOutputLost { map, attempt, error, .. } => {
                let mut status = tonic::Status::data_loss(msg);
                let meta = status.metadata_mut();
                meta.insert(LOST_MAP, map.into());
                meta.insert(LOST_ATTEMPT, attempt.into());
                if matches!(&error, FormatError::Io(e) if e.kind() == HOLDER_GONE_KIND) {
                    meta.insert(HOLDER_GONE, tonic::metadata::MetadataValue::from_static("1"));
                }
                status
            }
            TaskError::InvalidRequest(_) | TaskError::NotRegular { .. } => tonic::Status::invalid_argument(msg),
            TaskError::OutsideRoots { .. } => tonic::Status::permission_denied(msg),
            TaskError::Busy { .. } => tonic::Status::resource_exhausted(msg),
            TaskError::InputUnseen { .. } => {
                let mut status = tonic::Status::failed_precondition(msg);
                status.metadata_mut().insert(INPUT_UNSEEN, tonic::metadata::MetadataValue::from_static("1"));
                status
            }
            TaskError::Draining => {
                let mut status = tonic::Status::unavailable(msg);
                status.metadata_mut().insert(DRAINING, tonic::metadata::MetadataValue::from_static("1"));
                status
            }
            // Permanent on this worker, whatever the task: the master stops the job at once.
            TaskError::UnknownJob(_) | TaskError::OverLimit { .. } => {
                let mut status = tonic::Status::failed_precondition(msg);
                status.metadata_mut().insert(REFUSED, tonic::metadata::MetadataValue::from_static("1"));
                status
            }
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

#[cfg(test)]
mod tests {
    use std::error::Error;
    use std::io;

    use super::*;

    /// The error and its sources, as `anyhow` prints them with `{:#}`.
    fn chain(e: &dyn Error) -> String {
        let mut out = e.to_string();
        let mut next = e.source();
        while let Some(cause) = next {
            out += &format!(": {cause}");
            next = cause.source();
        }
        out
    }

    #[test]
    fn every_cause_is_printed_once_even_by_a_printer_that_walks_the_chain() {
        let denied = || io::Error::new(io::ErrorKind::PermissionDenied, "permission denied");
        let path = PathBuf::from("/data/in.txt");
        let errors: Vec<Box<dyn Error>> = vec![
            Box::new(RunError::Input { path: path.clone(), error: denied() }),
            Box::new(RunError::Output { path: path.clone(), error: denied() }),
            Box::new(RunError::Commit { path: path.clone(), error: denied() }),
            Box::new(RunError::from(SpecError::NoInput)),
            Box::new(ClusterError::Bind(denied())),
            Box::new(ServeError::Bind { addr: "127.0.0.1:1".parse().unwrap(), error: denied() }),
            Box::new(TaskError::Input { path: path.clone(), error: denied() }),
            Box::new(TaskError::Write { path: path.clone(), error: denied() }),
            Box::new(TaskError::Intermediate { path: path.clone(), error: FormatError::from(denied()) }),
        ];
        for e in errors {
            let text = chain(&*e);
            let cause = if text.contains("permission denied") { "permission denied" } else { "no input" };
            assert_eq!(text.matches(cause).count(), 1, "{text}");
        }
    }
}
