//! The connections a server (a worker's, a listening master's) accepts: Nagle's algorithm
//! off, accept errors survived, a bound on the connections open at once, deadlines for a
//! connection's first bytes and for its TLS handshake.
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
//!   HTTP/2's 24-byte preface) within [`FIRST_BYTES_DEADLINE`], or it is closed: hyper has
//!   no deadline of its own, so a client that connects and sends nothing would hold its
//!   connection, and its place, for ever.
//! - With TLS, the handshakes run here ([`tls`]), not in tonic, whose TLS accept has no
//!   deadline and no bound: at most [`HANDSHAKES_AT_ONCE`] at once, each within
//!   [`HANDSHAKE_DEADLINE`], and a failed one is a warning naming the peer (rate-limited).

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
fn max_connections() -> usize {
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

/// How long a connection's TLS handshake may take, from its first byte to its last.
const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(10);

/// TLS handshakes run at once; past that, accepted connections wait for one to end.
const HANDSHAKES_AT_ONCE: usize = 64;

/// The connections of `incoming` once their TLS handshake with `config` succeeds: at most
/// [`HANDSHAKES_AT_ONCE`] at once, each within [`HANDSHAKE_DEADLINE`] (a client that
/// stalls its handshake is cut off; tonic's own TLS accept waits for it for ever). A
/// failed handshake is a warning naming the peer, at most one every
/// [`HANDSHAKE_WARNINGS`], the rest at debug: a misconfigured client shows in the log, a
/// flood of bad ones does not flood it.
pub(crate) fn tls(
    incoming: impl tokio_stream::Stream<Item = io::Result<Guarded>>,
    config: Arc<rustls::ServerConfig>,
) -> impl tokio_stream::Stream<Item = io::Result<tokio_rustls::server::TlsStream<Guarded>>> {
    tls_within(incoming, config, HANDSHAKE_DEADLINE)
}

fn tls_within(
    incoming: impl tokio_stream::Stream<Item = io::Result<Guarded>>,
    config: Arc<rustls::ServerConfig>,
    deadline: Duration,
) -> impl tokio_stream::Stream<Item = io::Result<tokio_rustls::server::TlsStream<Guarded>>> {
    use futures_util::StreamExt;
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let warned: Arc<std::sync::Mutex<Option<tokio::time::Instant>>> = Arc::default();
    incoming
        .map(move |accepted| {
            let (acceptor, warned) = (acceptor.clone(), warned.clone());
            async move {
                let connection = accepted.ok()?;
                let peer = connection.peer();
                let why = match tokio::time::timeout(deadline, acceptor.accept(connection)).await {
                    Ok(Ok(tls)) => return Some(Ok(tls)),
                    Ok(Err(error)) => error.to_string(),
                    Err(_) => format!("no handshake within {deadline:?}"),
                };
                let now = tokio::time::Instant::now();
                let mut last = warned.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                match *last {
                    Some(at) if now.duration_since(at) < HANDSHAKE_WARNINGS => {
                        tracing::debug!(%peer, why, "TLS handshake failed");
                    }
                    _ => {
                        *last = Some(now);
                        tracing::warn!(%peer, why, "TLS handshake failed");
                    }
                }
                None
            }
        })
        .buffer_unordered(HANDSHAKES_AT_ONCE)
        .filter_map(std::future::ready)
}

/// The least time between two warnings of a failed handshake.
const HANDSHAKE_WARNINGS: Duration = Duration::from_secs(10);

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

    /// The peer's address, for a log line.
    fn peer(&self) -> String {
        self.stream.peer_addr().map_or_else(|_| "unknown".to_string(), |a| a.to_string())
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
                tracing::debug!(peer = %self.peer(), bytes = self.read, "closing a connection that sent too little too late");
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

    /// A server's TLS settings for `localhost`, and a client's that trust them.
    fn tls_pair() -> (Arc<rustls::ServerConfig>, tokio_rustls::TlsConnector) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap().self_signed(&key).unwrap();
        let settings = crate::security::Tls::new().with_identity_pem(cert.pem(), key.serialize_pem()).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        (settings.rustls_server_config().unwrap(), tokio_rustls::TlsConnector::from(Arc::new(client)))
    }

    #[tokio::test]
    async fn a_stalled_handshake_is_cut_off_and_does_not_hold_up_the_next_one() {
        let (listener, addr) = listener().await;
        let (config, connector) = tls_pair();
        assert_eq!(config.alpn_protocols, [b"h2".to_vec()], "HTTP/2 offered, as tonic's server does");
        let server = tokio::spawn(async move {
            let connections =
                tls_within(incoming_from(listener, 8, FIRST_BYTES_DEADLINE), config, Duration::from_millis(500));
            tokio::pin!(connections);
            let good = connections.next().await.unwrap().unwrap();
            // Keep the stream, and the stalled handshake in it, for 3 s more.
            let next = tokio::time::timeout(Duration::from_secs(3), connections.next()).await;
            assert!(next.is_err(), "the stalled handshake yields no connection");
            drop(good);
        });
        // 40 bytes of a ClientHello's start, then nothing: past the first-bytes deadline,
        // stalled in the handshake.
        let started = std::time::Instant::now();
        let mut stalled = TcpStream::connect(addr).await.unwrap();
        stalled.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03]).await.unwrap();
        stalled.write_all(&[0u8; 29]).await.unwrap();
        // A whole handshake meanwhile goes through.
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        let mut good = connector.connect(name, tcp).await.expect("a handshake beside a stalled one");
        good.write_all(b"x").await.unwrap();
        // The stalled one is closed once its deadline passes, while the server still runs.
        let mut buf = [0u8; 16];
        let closed = tokio::time::timeout(Duration::from_secs(2), stalled.read(&mut buf)).await.expect("closed");
        assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
        assert!(started.elapsed() >= Duration::from_millis(500), "not before its deadline");
        assert!(!server.is_finished(), "closed by its deadline, not by the server's end");
        tokio::time::timeout(Duration::from_secs(5), server).await.unwrap().unwrap();
    }
}
