//! The connections a server (a worker's, a listening master's) accepts: Nagle's algorithm
//! off, accept errors survived, a bound on the connections open at once, and a deadline for
//! a connection's first bytes.
//!
//! - Nagle off: a reply's headers and body go out in separate writes, and with Nagle on the
//!   body waits for the client's delayed ACK, 40 ms a call. (tonic turns it off only on
//!   listeners it binds itself.)
//! - tonic stops serving at the first accept error it does not know to be passing, and
//!   running out of file descriptors (`EMFILE`), which anyone who can open enough
//!   connections causes, is not one it knows. So the stream never yields an error: it waits
//!   [`ACCEPT_BACKOFF`] and accepts again, as Go's and hyper's servers do.
//! - At most [`max_connections`] are open at once: past that the server accepts no more
//!   until one closes (they wait in the kernel's backlog), so connections alone cannot use
//!   up the descriptors its tasks need to open their files.
//! - A connection must send its first [`FIRST_BYTES`] bytes (a TLS ClientHello, or
//!   HTTP/2's 24-byte preface) within [`FIRST_BYTES_DEADLINE`], or it is closed: neither
//!   tonic's TLS accept nor hyper has a deadline of its own, so a client that connects and
//!   sends nothing would hold its connection, and its place, for ever.

use std::future::Future;
use std::io::{self, ErrorKind};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::transport::server::{Connected, TcpConnectInfo};

/// How long the accept loop waits after an accept failed for want of a resource.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Bytes a connection must send within [`FIRST_BYTES_DEADLINE`]: HTTP/2's preface (a TLS
/// ClientHello is longer).
const FIRST_BYTES: usize = 24;

/// How long a new connection has to send its first [`FIRST_BYTES`] bytes.
const FIRST_BYTES_DEADLINE: Duration = Duration::from_secs(10);

/// The connections a server keeps open at once: half the process's limit of open files
/// (read from `/proc/self/limits` where there is one), at most 8,192; 512 where the limit
/// is unknown.
pub(crate) fn max_connections() -> usize {
    let soft = std::fs::read_to_string("/proc/self/limits").ok().and_then(|limits| {
        let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
        line.split_whitespace().nth(3)?.parse::<usize>().ok()
    });
    soft.map_or(512, |n| (n / 2).clamp(16, 8192))
}

/// The connections `listener` accepts (see the module docs).
pub(crate) fn incoming(listener: TcpListener) -> impl tokio_stream::Stream<Item = io::Result<Guarded>> {
    incoming_from(listener, max_connections(), FIRST_BYTES_DEADLINE)
}

/// Where [`incoming`] takes connections from: a listener (or, in tests, one that fails).
pub(crate) trait Accept: Send + 'static {
    /// The next connection.
    fn accept_one(&mut self) -> impl Future<Output = io::Result<TcpStream>> + Send;
}

impl Accept for TcpListener {
    async fn accept_one(&mut self) -> io::Result<TcpStream> {
        self.accept().await.map(|(stream, _)| stream)
    }
}

fn incoming_from<A: Accept>(
    acceptor: A,
    limit: usize,
    deadline: Duration,
) -> impl tokio_stream::Stream<Item = io::Result<Guarded>> {
    let open = Arc::new(Semaphore::new(limit));
    futures_util::stream::unfold((acceptor, open), move |(mut acceptor, open)| async move {
        let Ok(place) = open.clone().acquire_owned().await else { return None };
        // Failures since the last connection: the first of a run is a warning, the rest
        // (ten a second while it lasts) are not.
        let mut failures = 0u64;
        loop {
            match acceptor.accept_one().await {
                Ok(stream) => {
                    if failures > 0 {
                        tracing::info!(failures, "accepting connections again");
                    }
                    let _ = stream.set_nodelay(true);
                    let guarded = Guarded::new(stream, place, deadline);
                    return Some((Ok(guarded), (acceptor, open)));
                }
                // The peer gave up before its connection was taken: nothing to wait for.
                Err(error) if matches!(error.kind(), ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset) => {
                    tracing::debug!(%error, "a connection closed before it was accepted");
                }
                Err(error) => {
                    failures += 1;
                    match failures {
                        1 => tracing::warn!(%error, "accepting a connection failed; trying again every 100 ms"),
                        _ => tracing::debug!(%error, failures, "accepting a connection failed again"),
                    }
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            }
        }
    })
}

/// An accepted connection: it holds a place among the open connections until it is
/// dropped, and fails its reads once [`FIRST_BYTES_DEADLINE`] passes before its first
/// bytes came.
pub(crate) struct Guarded {
    stream: TcpStream,
    _place: OwnedSemaphorePermit,
    /// Until the first bytes came: when they must have.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Bytes read so far, counted up to [`FIRST_BYTES`].
    read: usize,
}

impl Guarded {
    fn new(stream: TcpStream, place: OwnedSemaphorePermit, within: Duration) -> Self {
        let deadline = Some(Box::pin(tokio::time::sleep(within)));
        Guarded { stream, _place: place, deadline, read: 0 }
    }
}

impl AsyncRead for Guarded {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if self.deadline.is_some() {
            self.read += buf.filled().len() - before;
            if self.read >= FIRST_BYTES {
                self.deadline = None;
            } else if polled.is_pending()
                && let Some(deadline) = self.deadline.as_mut()
                && deadline.as_mut().poll(cx).is_ready()
            {
                let peer = self.stream.peer_addr().map_or_else(|_| "unknown".to_string(), |a| a.to_string());
                tracing::debug!(%peer, bytes = self.read, "closing a connection that sent too little too late");
                return Poll::Ready(Err(io::Error::new(
                    ErrorKind::TimedOut,
                    format!("fewer than {FIRST_BYTES} bytes in {FIRST_BYTES_DEADLINE:?}"),
                )));
            }
        }
        polled
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

impl Connected for Guarded {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.stream.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_stream::StreamExt;

    use super::*;

    /// A listener whose first accepts fail as a process out of file descriptors does.
    struct OutOfDescriptors {
        listener: TcpListener,
        failures: usize,
    }

    impl Accept for OutOfDescriptors {
        async fn accept_one(&mut self) -> io::Result<TcpStream> {
            if self.failures > 0 {
                self.failures -= 1;
                return Err(io::Error::from_raw_os_error(24)); // EMFILE
            }
            self.listener.accept_one().await
        }
    }

    async fn listener() -> (TcpListener, std::net::SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        (listener, addr)
    }

    #[tokio::test]
    async fn failed_accepts_do_not_end_the_connections_and_nagle_is_off() {
        let (listener, addr) = listener().await;
        let connections = incoming_from(OutOfDescriptors { listener, failures: 3 }, 8, FIRST_BYTES_DEADLINE);
        tokio::pin!(connections);
        let client = tokio::spawn(TcpStream::connect(addr));
        let started = std::time::Instant::now();
        let accepted = tokio::time::timeout(Duration::from_secs(10), connections.next())
            .await
            .expect("accepted after the failures")
            .expect("the stream goes on")
            .expect("a connection, never an error");
        assert!(started.elapsed() >= 3 * ACCEPT_BACKOFF, "it waited after each failure");
        assert!(accepted.stream.nodelay().unwrap());
        client.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn past_the_limit_a_connection_waits_until_another_closes() {
        let (listener, addr) = listener().await;
        let connections = incoming_from(listener, 2, FIRST_BYTES_DEADLINE);
        tokio::pin!(connections);
        let mut clients = Vec::new();
        for _ in 0..3 {
            clients.push(TcpStream::connect(addr).await.unwrap());
        }
        let first = connections.next().await.unwrap().unwrap();
        let _second = connections.next().await.unwrap().unwrap();
        let third = tokio::time::timeout(Duration::from_millis(300), connections.next()).await;
        assert!(third.is_err(), "a third connection waits while two are open");
        drop(first);
        let third = tokio::time::timeout(Duration::from_secs(5), connections.next()).await;
        assert!(third.expect("taken once one closed").unwrap().is_ok());
    }

    #[tokio::test]
    async fn a_connection_that_sends_too_little_in_time_fails_and_one_that_sends_enough_does_not() {
        let (listener, addr) = listener().await;
        let connections = incoming_from(listener, 8, Duration::from_millis(300));
        tokio::pin!(connections);

        let mut quiet = TcpStream::connect(addr).await.unwrap();
        quiet.write_all(b"PRI * HTTP/2.0").await.unwrap(); // 14 of the preface's 24 bytes
        let mut server = connections.next().await.unwrap().unwrap();
        let mut buf = [0u8; 64];
        let mut got = 0;
        let err = loop {
            match server.read(&mut buf).await {
                Ok(n) => got += n,
                Err(e) => break e,
            }
        };
        assert_eq!((got, err.kind()), (14, ErrorKind::TimedOut), "{err}");

        let mut talker = TcpStream::connect(addr).await.unwrap();
        let mut server = connections.next().await.unwrap().unwrap();
        talker.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.unwrap();
        let mut preface = [0u8; 24];
        server.read_exact(&mut preface).await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        talker.write_all(b"later").await.unwrap();
        let n = server.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"later", "past its first bytes a connection has no deadline");
    }
}
