//! [`GrpcShuffle`]: map output fetched from the worker that holds it, with the `Fetch`
//! call, in chunks of [`FETCH_CHUNK`]; and the serving side of that call.
//!
//! A fetch is a server stream. On the reduce's side a tokio task (spawned on the
//! runtime of the worker) feeds the chunks into a channel of at most [`IN_FLIGHT`]
//! chunks, and the reduce, on a blocking thread, reads them through [`ChunkReader`]; so a
//! reduce holds a few chunks per open input whatever the range's size, and the merge
//! opens at most `MERGE_FANIN` inputs at once. On the serving side a blocking task reads
//! the file a chunk at a time into a channel of the same bound. The checksums of the
//! record blocks are checked as the reduce merges, as for a file on disk.

use std::collections::HashMap;
use std::fmt;
use std::io::{self, Read, Seek, SeekFrom};
use std::sync::Mutex;

use mapreduce_core::scheduler::ReduceInput;
use mapreduce_rpc::pb;
use prost::bytes::Bytes;
use tokio::sync::mpsc;

use super::ShuffleSource;
use super::store::{HeldRange, Store};
use crate::master::replies::status_message;
use crate::master::transport::{Client, Scheme, WorkerEndpoint};
use crate::security::Security;

/// The size of a fetched chunk (the last of a range may be shorter).
pub const FETCH_CHUNK: usize = 1 << 20;

/// Chunks buffered per fetch, on either side.
const IN_FLIGHT: usize = 2;

/// Where a map attempt's output lies with worker shuffle: the worker that holds it and
/// the ids it is known by there. Written `grpc://host:port/<job id>/<map>/<attempt>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerLocation {
    /// The holder's address as the master dials it, `host:port` (no scheme: the fetching
    /// worker uses TLS if it has TLS settings).
    pub addr: String,
    /// The job run's id (32 hex digits).
    pub job: String,
    /// The map task.
    pub map: u32,
    /// Its attempt.
    pub attempt: u64,
}

impl WorkerLocation {
    const SCHEME: &'static str = "grpc://";

    /// The location of `map`'s `attempt` in `job` on the worker the master dials at
    /// `addr` (`host:port`, `http://host:port` or `https://host:port`).
    pub fn new(addr: &str, job: &str, map: u32, attempt: u64) -> Self {
        let addr = addr.split_once("://").map_or(addr, |(_, rest)| rest).trim_end_matches('/');
        WorkerLocation { addr: addr.to_string(), job: job.to_string(), map, attempt }
    }

    /// Whether `location` is written as a worker location (it may still not parse).
    pub fn is_one(location: &str) -> bool {
        location.starts_with(Self::SCHEME)
    }

    /// Parses `grpc://host:port/<job id>/<map>/<attempt>`; `None` if it is not that.
    pub fn parse(location: &str) -> Option<Self> {
        let rest = location.strip_prefix(Self::SCHEME)?;
        let mut parts = rest.split('/');
        let (addr, job, map, attempt) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let number_ok = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        let addr_ok = addr.rsplit_once(':').is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if parts.next().is_some() || !addr_ok || crate::storage::JobId::parse(job).is_none() {
            return None;
        }
        if !number_ok(map) || !number_ok(attempt) {
            return None;
        }
        Some(WorkerLocation {
            addr: addr.into(),
            job: job.into(),
            map: map.parse().ok()?,
            attempt: attempt.parse().ok()?,
        })
    }
}

impl fmt::Display for WorkerLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}/{}/{}/{}", Self::SCHEME, self.addr, self.job, self.map, self.attempt)
    }
}

/// Reads map output from the worker that holds it: from disk when that is this worker,
/// else with a `Fetch` call that carries this worker's token (and TLS, which needs a CA
/// of the other workers' certificates).
pub struct GrpcShuffle {
    /// This worker's own map output.
    store: Store,
    security: Security,
    /// A client per holder, made on first use.
    clients: Mutex<HashMap<String, Client>>,
}

impl fmt::Debug for GrpcShuffle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcShuffle").field("store", &self.store.dir()).finish_non_exhaustive()
    }
}

impl GrpcShuffle {
    /// Fetches with `security`'s token and TLS; reads `store`'s output from disk.
    pub(crate) fn new(store: Store, security: Security) -> Self {
        GrpcShuffle { store, security, clients: Mutex::default() }
    }

    fn client(&self, addr: &str) -> io::Result<Client> {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(client) = clients.get(addr) {
            return Ok(client.clone());
        }
        let endpoint = WorkerEndpoint::new(addr, &self.security, Scheme::Strict)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        clients.insert(addr.to_string(), endpoint.client.clone());
        Ok(endpoint.client)
    }
}

impl ShuffleSource for GrpcShuffle {
    fn open(&self, input: &ReduceInput) -> io::Result<Box<dyn Read + Send>> {
        let location = input.location.as_str();
        let at = WorkerLocation::parse(location)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a worker location"))?;
        let range = &input.range;
        if let Ok(HeldRange { mut file, offset, bytes }) =
            self.store.open_range(&at.job, at.map, at.attempt, range.offset, range.bytes)
        {
            file.seek(SeekFrom::Start(offset))?;
            return Ok(Box::new(file.take(bytes)));
        }
        let mut client = self.client(&at.addr)?;
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| io::Error::other(format!("a fetch needs the worker's runtime: {e}")))?;
        let request = pb::FetchRequest {
            job_id: at.job.clone(),
            map: at.map,
            attempt: at.attempt,
            offset: range.offset,
            bytes: range.bytes,
            reduce: false,
        };
        let (tx, rx) = mpsc::channel(IN_FLIGHT);
        let addr = at.addr;
        runtime.spawn(async move {
            let failed = |status: tonic::Status| {
                // No connection, or it broke, or the holder does not have what the master
                // says it holds (it restarted since, or lost files): it is gone for the
                // job, as Spark takes a fetch failure to mean. Corrupt bytes, found as
                // the reduce merges, are about the one output only.
                let kind = match status.code() {
                    tonic::Code::NotFound
                    | tonic::Code::Unavailable
                    | tonic::Code::Unknown
                    | tonic::Code::Cancelled => crate::error::HOLDER_GONE_KIND,
                    _ => io::ErrorKind::Other,
                };
                io::Error::new(kind, format!("fetch from {addr}: {}", status_message(&status)))
            };
            let mut stream = match client.fetch(request).await {
                Ok(response) => response.into_inner(),
                Err(status) => {
                    let _ = tx.send(Err(failed(status))).await;
                    return;
                }
            };
            loop {
                let next = match stream.message().await {
                    Ok(Some(chunk)) => Ok(chunk.data),
                    Ok(None) => return,
                    Err(status) => Err(failed(status)),
                };
                let end = next.is_err();
                // The reader dropped (the reduce ended): dropping the stream cancels it.
                if tx.send(next).await.is_err() || end {
                    return;
                }
            }
        });
        Ok(Box::new(ChunkReader::new(rx, range.bytes)))
    }
}

/// A blocking reader of exactly `left` bytes that arrive as chunks on a channel: the end
/// of the channel before them, or more bytes than that, is an error.
#[derive(Debug)]
pub(crate) struct ChunkReader {
    chunks: mpsc::Receiver<io::Result<Bytes>>,
    chunk: Bytes,
    /// Read of `chunk` so far.
    at: usize,
    /// Bytes still to come after `chunk`.
    left: u64,
    /// Bytes expected in all.
    total: u64,
}

impl ChunkReader {
    pub(crate) fn new(chunks: mpsc::Receiver<io::Result<Bytes>>, bytes: u64) -> Self {
        ChunkReader { chunks, chunk: Bytes::new(), at: 0, left: bytes, total: bytes }
    }
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.chunk.len() {
            if self.left == 0 {
                return Ok(0);
            }
            match self.chunks.blocking_recv() {
                Some(Ok(chunk)) if chunk.len() as u64 > self.left => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("fetch sent more than the {} bytes asked", self.total),
                    ));
                }
                Some(Ok(chunk)) => {
                    self.left -= chunk.len() as u64;
                    (self.chunk, self.at) = (chunk, 0);
                }
                Some(Err(e)) => return Err(e),
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("fetch ended after {} of {} bytes", self.total - self.left, self.total),
                    ));
                }
            }
        }
        let n = buf.len().min(self.chunk.len() - self.at);
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// The chunks of a held range, read on a blocking thread a chunk at a time (at most
/// [`IN_FLIGHT`] ahead of the client): the body of a `Fetch` answer.
pub(crate) fn serve_range(held: HeldRange) -> mpsc::Receiver<Result<pb::FetchChunk, tonic::Status>> {
    let (tx, rx) = mpsc::channel(IN_FLIGHT);
    tokio::task::spawn_blocking(move || {
        let HeldRange { file, mut offset, bytes } = held;
        let end = offset + bytes;
        while offset < end {
            let mut data = vec![0; ((end - offset) as usize).min(FETCH_CHUNK)];
            let read = read_exact_at(&file, &mut data, offset)
                .map(|()| pb::FetchChunk { data: data.into() })
                .map_err(|e| tonic::Status::internal(format!("cannot read map output: {e}")));
            let failed = read.is_err();
            if tx.blocking_send(read).is_err() || failed {
                return;
            }
            offset += FETCH_CHUNK as u64;
        }
    });
    rx
}

fn read_exact_at(file: &std::fs::File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_location_prints_and_parses_back() {
        let job = "0123456789abcdef0123456789abcdef";
        let at = WorkerLocation::new("http://127.0.0.1:7001", job, 3, 17);
        assert_eq!(at.to_string(), format!("grpc://127.0.0.1:7001/{job}/3/17"));
        assert_eq!(WorkerLocation::parse(&at.to_string()), Some(at.clone()));
        assert_eq!(WorkerLocation::new("127.0.0.1:7001", job, 3, 17), at);
        let host = WorkerLocation::new("https://node-2.example:443", job, 0, 0);
        assert_eq!(WorkerLocation::parse(&host.to_string()).unwrap().addr, "node-2.example:443");
        assert!(WorkerLocation::is_one(&host.to_string()) && !WorkerLocation::is_one("/w/m00003-a17"));
        for bad in [
            "/w/m00003-a17".to_string(),
            format!("grpc://127.0.0.1/{job}/3/17"),
            format!("grpc://:7001/{job}/3/17"),
            format!("grpc://h:7001/{job}/3"),
            format!("grpc://h:7001/{job}/3/17/x"),
            format!("grpc://h:7001/{job}/-3/17"),
            format!("grpc://h:7001/{job}/4294967296/17"),
            "grpc://h:7001/../3/17".to_string(),
            format!("grpc://h:7001/{}/3/17", job.to_uppercase()),
        ] {
            assert_eq!(WorkerLocation::parse(&bad), None, "{bad}");
        }
    }

    fn reader(chunks: Vec<io::Result<Vec<u8>>>, bytes: u64) -> ChunkReader {
        let (tx, rx) = mpsc::channel(chunks.len().max(1));
        for c in chunks {
            tx.try_send(c.map(Bytes::from)).unwrap();
        }
        ChunkReader::new(rx, bytes)
    }

    #[test]
    fn the_chunked_reader_reads_exactly_its_bytes_and_refuses_short_or_long_streams() {
        let mut out = Vec::new();
        reader(vec![Ok(vec![1, 2, 3]), Ok(vec![]), Ok(vec![4])], 4).read_to_end(&mut out).unwrap();
        assert_eq!(out, [1, 2, 3, 4]);
        let mut empty = reader(vec![], 0);
        assert_eq!(empty.read(&mut [0; 4]).unwrap(), 0, "an empty range needs no chunk");
        let short = reader(vec![Ok(vec![1, 2])], 4).read_to_end(&mut Vec::new()).unwrap_err();
        assert_eq!(
            (short.kind(), short.to_string()),
            (io::ErrorKind::UnexpectedEof, "fetch ended after 2 of 4 bytes".into())
        );
        let long = reader(vec![Ok(vec![1, 2, 3])], 2).read_to_end(&mut Vec::new()).unwrap_err();
        assert_eq!(long.kind(), io::ErrorKind::InvalidData);
        let failed = reader(vec![Ok(vec![1]), Err(io::Error::other("cut"))], 4).read_to_end(&mut Vec::new());
        assert_eq!(failed.unwrap_err().to_string(), "cut");
    }

    #[tokio::test]
    async fn a_range_is_served_in_chunks_of_a_mebibyte() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        let data: Vec<u8> = (0..(5 * FETCH_CHUNK + 10)).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let held =
            HeldRange { file: std::fs::File::open(&path).unwrap(), offset: 7, bytes: 3 * FETCH_CHUNK as u64 + 1 };
        let mut rx = serve_range(held);
        let mut sizes = Vec::new();
        let mut got = Vec::new();
        while let Some(chunk) = rx.recv().await {
            let chunk = chunk.unwrap();
            sizes.push(chunk.data.len());
            got.extend_from_slice(&chunk.data);
        }
        assert_eq!(sizes, [FETCH_CHUNK, FETCH_CHUNK, FETCH_CHUNK, 1]);
        assert_eq!(got, &data[7..7 + 3 * FETCH_CHUNK + 1]);
    }
}
