//! The job runner's settings: a TOML config file, and the parsers of sizes and durations
//! that its flags and its file share.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// The settings a config file (`--config FILE`) may hold; a flag given on the command line
/// overrides the file's value.
///
/// ```toml
/// [job]                  # run and master
/// reducers = 8
/// shard_size = "64MiB"   # sizes: bytes, or with a unit
/// sort_buffer = "128MiB"
/// compression = "lz4"    # or "none"
///
/// [run]
/// workers = 4
///
/// [master]
/// workers = ["10.0.0.2:7001", "10.0.0.3:7001"]
/// listen = "0.0.0.0:7000"
/// task_timeout = "90s"   # durations: seconds, or with a unit
/// no_worker_timeout = "2m"
/// token_file = "/etc/mapreduce/token"
/// tls_ca = "/etc/mapreduce/ca.pem"
///
/// [worker]
/// listen = "0.0.0.0:7001"
/// roots = ["/data"]
/// work_dir = "/var/tmp/mapreduce"
/// join = "10.0.0.1:7000"
/// drain_timeout = "10m"
/// token_file = "/etc/mapreduce/token"
/// ```
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The job's shape.
    #[serde(default)]
    pub job: JobConfig,
    /// The `run` command's.
    #[serde(default)]
    pub run: RunConfig,
    /// The `master` command's.
    #[serde(default)]
    pub master: MasterConfig,
    /// The `worker` command's.
    #[serde(default)]
    pub worker: WorkerConfig,
}

/// `[job]`: the shape of the job, for `run` and `master`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobConfig {
    /// Reduce tasks (0: map-only, where the job allows it).
    pub reducers: Option<u32>,
    /// Target input per map task.
    pub shard_size: Option<Size>,
    /// Memory budget of a map task's sort buffer.
    pub sort_buffer: Option<Size>,
    /// `none` or `lz4`.
    pub compression: Option<String>,
}

/// `[run]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// In-process workers.
    pub workers: Option<usize>,
}

/// `[master]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MasterConfig {
    /// Workers' addresses.
    #[serde(default)]
    pub workers: Vec<String>,
    /// Where to listen for workers that join.
    pub listen: Option<String>,
    /// Deadline of one attempt.
    pub task_timeout: Option<Span>,
    /// How long to wait for any worker.
    pub no_worker_timeout: Option<Span>,
    /// The token file.
    pub token_file: Option<PathBuf>,
    /// The CA of the workers' certificates.
    pub tls_ca: Option<PathBuf>,
    /// The master's client certificate chain.
    pub tls_cert: Option<PathBuf>,
    /// Its private key.
    pub tls_key: Option<PathBuf>,
}

/// `[worker]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerConfig {
    /// Where to serve.
    pub listen: Option<String>,
    /// Data roots.
    #[serde(default)]
    pub roots: Vec<PathBuf>,
    /// Where map output stays.
    pub work_dir: Option<PathBuf>,
    /// The master to join.
    pub join: Option<String>,
    /// How long a drain waits at most.
    pub drain_timeout: Option<Span>,
    /// The token file.
    pub token_file: Option<PathBuf>,
    /// Serve TLS with this certificate chain.
    pub tls_cert: Option<PathBuf>,
    /// Its private key.
    pub tls_key: Option<PathBuf>,
    /// The CA of client certificates (mutual TLS).
    pub tls_client_ca: Option<PathBuf>,
    /// Serve an address that is not loopback without a token.
    pub insecure: Option<bool>,
    /// Most tasks at once.
    pub max_tasks: Option<usize>,
}

/// A size in a config file: a number of bytes, or a string with a unit (`"64MiB"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Size {
    /// Bytes.
    Bytes(u64),
    /// With a unit.
    Text(String),
}

impl Size {
    /// The size in bytes.
    pub fn bytes(&self) -> Result<u64, String> {
        match self {
            Size::Bytes(n) => Ok(*n),
            Size::Text(text) => parse_size(text),
        }
    }
}

/// A duration in a config file: a number of seconds, or a string with a unit (`"90s"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Span {
    /// Seconds.
    Seconds(f64),
    /// With a unit.
    Text(String),
}

impl Span {
    /// The duration.
    pub fn duration(&self) -> Result<Duration, String> {
        match self {
            Span::Seconds(s) => parse_duration(&s.to_string()),
            Span::Text(text) => parse_duration(text),
        }
    }
}

impl Config {
    /// Reads and checks the config file `path`; an error names the file, and the line and
    /// key where TOML says so.
    pub fn load(path: &Path) -> Result<Config, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read config {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| {
            let at = e.span().map(|s| text[..s.start].matches('\n').count() + 1);
            let at = at.map_or(String::new(), |line| format!(":{line}"));
            format!("bad config {}{at}: {}", path.display(), e.message())
        })
    }
}

/// A duration: a number of seconds (`30`, `0.5`) or one with units (`90s`, `2m`,
/// `1h 30m`, humantime's syntax); positive.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
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
pub fn parse_size(text: &str) -> Result<u64, String> {
    match text.trim().parse::<u64>() {
        Ok(bytes) => Ok(bytes),
        Err(_) => text
            .trim()
            .parse::<bytesize::ByteSize>()
            .map(|size| size.as_u64())
            .map_err(|e| format!("{text:?}: {e} (bytes, or a size such as 64MiB or 1GB)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_take_units() {
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert!(parse_size("64 parsecs").unwrap_err().contains("64MiB"));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("soon").unwrap_err().contains("90s"));
    }

    #[test]
    fn a_config_file_is_read_and_its_errors_name_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("job.toml");
        std::fs::write(&path, "[job]\nreducers = 8\nshard_size = \"64MiB\"\n[master]\ntask_timeout = 90\n").unwrap();
        let config = Config::load(&path).unwrap();
        assert_eq!(config.job.reducers, Some(8));
        assert_eq!(config.job.shard_size.unwrap().bytes(), Ok(64 << 20));
        assert_eq!(config.master.task_timeout.unwrap().duration(), Ok(Duration::from_secs(90)));
        std::fs::write(&path, "[job]\nreducers = 8\nshards = 3\n").unwrap();
        let err = Config::load(&path).unwrap_err();
        assert!(err.starts_with(&format!("bad config {}:3: unknown field `shards`", path.display())), "{err}");
        let err = Config::load(&dir.path().join("absent.toml")).unwrap_err();
        assert!(err.contains("cannot read config") && err.contains("absent.toml"), "{err}");
    }
}
