//! Who may use a worker: a shared secret on every call ([`Token`]), and TLS ([`Tls`]),
//! both held by one [`Security`] value that a [`Worker`](crate::Worker) and a
//! [`Cluster`](crate::Cluster) are each given.
//!
//! - **Token.** The master sends `authorization: Bearer <token>` with every call; the
//!   worker compares it in constant time before any handler runs, and answers a missing
//!   or wrong one with `UNAUTHENTICATED` (logged at warn with the peer's address), running
//!   nothing.
//! - **TLS** (rustls with the `ring` provider). A worker has its certificate and key, and
//!   optionally the CA of client certificates, which it then requires (mutual TLS). A
//!   master has the CA that signed the workers' certificates, and optionally a client
//!   certificate and key. With TLS, the master dials `https://`: a bare `host:port` means
//!   `https://host:port`, and `http://` is refused.
//! - **Protected mode** (as Redis's). A worker asked to listen on an address that is not
//!   loopback, with no token and no client CA, refuses to start unless told
//!   [`Security::insecure`].
//!
//! ```
//! use mapreduce_runtime::security::{Security, Token};
//! let token = Token::new("correct horse battery staple".replace(' ', "-"))?;
//! let security = Security::new().with_token(token);
//! assert!(security.token().is_some() && !security.is_insecure());
//! # Ok::<(), mapreduce_runtime::error::SecurityError>(())
//! ```

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use subtle::ConstantTimeEq;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::transport::{Certificate, ClientTlsConfig, Identity};
use tonic::{Request, Status};

use crate::error::SecurityError;

/// The metadata key that carries the token.
const AUTHORIZATION: &str = "authorization";

/// What a refused call is told; the master shows it in its "refused" message.
pub(crate) const UNAUTHENTICATED: &str = "unauthenticated (wrong or missing token)";

/// The secret shared by a master and its workers. Printable ASCII without spaces (it goes
/// into a header); never printed (`Debug` shows `Token(..)`).
#[derive(Clone)]
pub struct Token {
    secret: Arc<str>,
    /// `Bearer <secret>`, made once, marked sensitive so HTTP/2 never indexes it.
    header: MetadataValue<Ascii>,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

impl Token {
    /// A token of `secret`: non-empty, printable ASCII without spaces.
    pub fn new(secret: impl Into<String>) -> Result<Token, SecurityError> {
        Self::checked(secret.into()).map_err(SecurityError::Token)
    }

    /// The token held in `path`, surrounding whitespace ignored.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Token, SecurityError> {
        let path = path.as_ref();
        let text =
            std::fs::read_to_string(path).map_err(|error| SecurityError::Read { path: path.to_path_buf(), error })?;
        Self::checked(text.trim().to_string())
            .map_err(|problem| SecurityError::TokenFile { path: path.to_path_buf(), problem })
    }

    /// A fresh random token (32 bytes from the operating system, in hex).
    pub fn random() -> Result<Token, SecurityError> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| SecurityError::Random(e.into()))?;
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        Ok(Self::checked(hex).expect("hex is a valid token"))
    }

    fn checked(secret: String) -> Result<Token, &'static str> {
        if secret.is_empty() {
            return Err("is empty");
        }
        if !secret.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("must be printable ASCII without spaces");
        }
        let mut header: MetadataValue<Ascii> =
            format!("Bearer {secret}").parse().map_err(|_| "must be printable ASCII without spaces")?;
        header.set_sensitive(true);
        Ok(Token { secret: secret.into(), header })
    }

    /// Whether `presented` is this token, in time that does not depend on where they
    /// differ (their lengths are not secret).
    fn matches(&self, presented: &[u8]) -> bool {
        self.secret.as_bytes().ct_eq(presented).into()
    }
}

/// TLS settings; what each part means depends on the side:
///
/// | part       | on a worker                               | on a master                          |
/// |------------|-------------------------------------------|--------------------------------------|
/// | identity   | its server certificate and key (required) | a client certificate and key         |
/// | CA         | the CA of client certificates: required   | the CA of the workers' certificates  |
/// |            | of every caller (mutual TLS)              | (required)                           |
/// | domain     | unused                                    | the name to check in the workers'    |
/// |            |                                           | certificates instead of the host     |
///
/// Every PEM is checked when it is given, and an error names the file it came from.
/// `Debug` shows which parts are set, never the key.
#[derive(Clone, Default)]
pub struct Tls {
    identity: Option<Identity>,
    /// The identity's PEM text, certificate chain and key, for a server's own handshakes.
    identity_pem: Option<Arc<(Vec<u8>, Vec<u8>)>>,
    ca: Option<Certificate>,
    domain: Option<String>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("identity", &self.has_identity())
            .field("ca", &self.has_ca())
            .field("domain", &self.domain)
            .finish()
    }
}

impl Tls {
    /// No certificates yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the identity from PEM text: a certificate chain and its private key.
    pub fn with_identity_pem(self, cert: impl AsRef<[u8]>, key: impl AsRef<[u8]>) -> Result<Self, SecurityError> {
        self.identity_checked(cert.as_ref(), "the certificate", key.as_ref(), "the key")
    }

    /// Sets the identity from PEM files: a certificate chain and its private key.
    pub fn with_identity_files(self, cert: impl AsRef<Path>, key: impl AsRef<Path>) -> Result<Self, SecurityError> {
        let (cert, key) = (cert.as_ref(), key.as_ref());
        self.identity_checked(&read(cert)?, &cert.display().to_string(), &read(key)?, &key.display().to_string())
    }

    /// Sets the CA from PEM text (one or more certificates).
    pub fn with_ca_pem(self, ca: impl AsRef<[u8]>) -> Result<Self, SecurityError> {
        self.ca_checked(ca.as_ref(), "the CA")
    }

    /// Sets the CA from a PEM file (one or more certificates).
    pub fn with_ca_file(self, ca: impl AsRef<Path>) -> Result<Self, SecurityError> {
        let ca = ca.as_ref();
        self.ca_checked(&read(ca)?, &ca.display().to_string())
    }

    /// On a master: checks this name in the workers' certificates instead of the host of
    /// each worker's address.
    pub fn with_domain(mut self, name: impl Into<String>) -> Self {
        self.domain = Some(name.into());
        self
    }

    /// Whether an identity (certificate and key) is set.
    pub fn has_identity(&self) -> bool {
        self.identity.is_some()
    }

    /// Whether a CA is set.
    pub fn has_ca(&self) -> bool {
        self.ca.is_some()
    }

    fn identity_checked(
        mut self,
        cert: &[u8],
        cert_from: &str,
        key: &[u8],
        key_from: &str,
    ) -> Result<Self, SecurityError> {
        certificates(cert, cert_from)?;
        let key_der = PrivateKeyDer::from_pem_slice(key).map_err(|e| pem_error(key_from, "no private key", e))?;
        rustls::crypto::ring::sign::any_supported_type(&key_der).map_err(|e| SecurityError::Pem {
            from: key_from.to_string(),
            problem: format!("unusable private key: {e}"),
        })?;
        self.identity = Some(Identity::from_pem(cert, key));
        self.identity_pem = Some(Arc::new((cert.to_vec(), key.to_vec())));
        Ok(self)
    }

    fn ca_checked(mut self, ca: &[u8], from: &str) -> Result<Self, SecurityError> {
        certificates(ca, from)?;
        self.ca = Some(Certificate::from_pem(ca));
        Ok(self)
    }

    /// The server side of these settings as rustls takes it, for handshakes a server runs
    /// itself ([`crate::worker::accept`]): the certificate and key, client certificates
    /// checked against the CA if there is one, HTTP/2 offered by ALPN (as tonic's own
    /// TLS server does).
    pub(crate) fn rustls_server_config(&self) -> Result<Arc<rustls::ServerConfig>, SecurityError> {
        let pem = self
            .identity_pem
            .as_ref()
            .ok_or(SecurityError::Incomplete("a worker's TLS needs its certificate and key"))?;
        let problem = |what: &str, e: &dyn std::fmt::Display| SecurityError::Pem {
            from: "the TLS settings".to_string(),
            problem: format!("{what}: {e}"),
        };
        let certs = CertificateDer::pem_slice_iter(&pem.0)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| problem("the certificate", &e))?;
        let key = PrivateKeyDer::from_pem_slice(&pem.1).map_err(|e| problem("the key", &e))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| problem("the protocol versions", &e))?;
        let builder = match &self.ca {
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in CertificateDer::pem_slice_iter(ca.get_ref()) {
                    roots.add(cert.map_err(|e| problem("the CA", &e))?).map_err(|e| problem("the CA", &e))?;
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .map_err(|e| problem("the CA", &e))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_single_cert(certs, key).map_err(|e| problem("the certificate and key", &e))?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }

    /// The client side of these settings, or why they cannot dial.
    pub(crate) fn client_config(&self) -> Result<ClientTlsConfig, SecurityError> {
        let ca = self.ca.clone().ok_or(SecurityError::Incomplete("a master's TLS needs the CA of its workers"))?;
        let mut config = ClientTlsConfig::new().ca_certificate(ca);
        if let Some(identity) = &self.identity {
            config = config.identity(identity.clone());
        }
        if let Some(domain) = &self.domain {
            config = config.domain_name(domain.clone());
        }
        Ok(config)
    }
}

fn read(path: &Path) -> Result<Vec<u8>, SecurityError> {
    std::fs::read(path).map_err(|error| SecurityError::Read { path: path.to_path_buf(), error })
}

/// Checks that `pem` holds one or more certificates, and nothing unparsable.
fn certificates(pem: &[u8], from: &str) -> Result<(), SecurityError> {
    let mut found = 0;
    for cert in CertificateDer::pem_slice_iter(pem) {
        cert.map_err(|e| pem_error(from, "no certificate", e))?;
        found += 1;
    }
    if found == 0 {
        return Err(SecurityError::Pem { from: from.to_string(), problem: "no certificate found".into() });
    }
    Ok(())
}

fn pem_error(from: &str, missing: &str, e: rustls_pki_types::pem::Error) -> SecurityError {
    let problem = match e {
        rustls_pki_types::pem::Error::NoItemsFound => format!("{missing} found"),
        e => format!("bad PEM: {e}"),
    };
    SecurityError::Pem { from: from.to_string(), problem }
}

/// How a worker or a master proves itself: a token, TLS, and whether a worker may serve
/// a non-loopback address unprotected. The default is none of them.
#[derive(Debug, Clone, Default)]
pub struct Security {
    token: Option<Token>,
    tls: Option<Tls>,
    insecure: bool,
}

impl Security {
    /// No token, no TLS, protected mode on.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every call carries (master) or must carry (worker) this token.
    pub fn with_token(mut self, token: Token) -> Self {
        self.token = Some(token);
        self
    }

    /// Calls go over TLS with these settings.
    pub fn with_tls(mut self, tls: Tls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Lets a worker serve a non-loopback address with no token and no client CA, so that
    /// anyone who reaches it can run tasks. For networks that are private by other means.
    pub fn insecure(mut self) -> Self {
        self.insecure = true;
        self
    }

    /// The token, if any.
    pub fn token(&self) -> Option<&Token> {
        self.token.as_ref()
    }

    /// The TLS settings, if any.
    pub fn tls(&self) -> Option<&Tls> {
        self.tls.as_ref()
    }

    /// Whether [`Security::insecure`] was given.
    pub fn is_insecure(&self) -> bool {
        self.insecure
    }

    /// Whether a worker with these settings authenticates its callers.
    fn authenticates(&self) -> bool {
        self.token.is_some() || self.tls.as_ref().is_some_and(Tls::has_ca)
    }

    /// Protected mode: refuses to serve `addr` when it is not loopback and nothing
    /// authenticates the callers, unless told insecure.
    pub(crate) fn check_listen(&self, addr: SocketAddr) -> Result<(), SecurityError> {
        if addr.ip().to_canonical().is_loopback() || self.authenticates() || self.insecure {
            return Ok(());
        }
        Err(SecurityError::Unprotected { addr })
    }
}

/// The worker's check of every call, before any handler runs.
#[derive(Clone)]
pub(crate) struct Authenticate(pub(crate) Option<Token>);

impl Interceptor for Authenticate {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(token) = &self.0 else { return Ok(request) };
        let presented = request.metadata().get(AUTHORIZATION).map(|v| v.as_bytes().strip_prefix(b"Bearer "));
        let why = match presented {
            Some(Some(p)) if token.matches(p) => return Ok(request),
            Some(Some(_)) => "wrong token",
            Some(None) => "not a bearer token",
            None => "no token",
        };
        let peer = request.remote_addr().map_or_else(|| "unknown".to_string(), |a| a.to_string());
        tracing::warn!(%peer, why, "refused a call: unauthenticated");
        Err(Status::unauthenticated(UNAUTHENTICATED))
    }
}

/// The master's side: puts the token on every call.
#[derive(Clone, Debug)]
pub(crate) struct Bearer(pub(crate) Option<Token>);

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(token) = &self.0 {
            request.metadata_mut().insert(AUTHORIZATION, token.header.clone());
        }
        Ok(request)
    }
}

/// Why a worker refused this master, if the call failed because it did: the token was
/// refused, or (over TLS, `tls`) the handshake failed: a rustls error, or the data error
/// that tokio-rustls makes of one (an alert such as `CertificateRequired` arrives as
/// `InvalidData` with rustls's message).
///
/// Over TLS 1.3 a worker checks the client's certificate after the client has finished
/// its side of the handshake and sent its request; the worker's alert then races the
/// close of the connection, and the master may see only the close. So, over TLS, a
/// connection closed before any answer counts as a refusal too (a worker that is down
/// refuses the connection or does not answer instead): a cancelled call, a broken pipe
/// or a reset.
pub(crate) fn refusal(status: &Status, tls: bool) -> Option<String> {
    use std::error::Error;
    use std::io::ErrorKind;
    if status.code() == tonic::Code::Unauthenticated {
        return Some(UNAUTHENTICATED.to_string());
    }
    const CLOSED: &str = "TLS handshake failed: the worker closed the connection (does it want a client certificate?)";
    let mut cause: Option<&(dyn Error + 'static)> = status.source();
    while let Some(e) = cause {
        if let Some(rustls) = e.downcast_ref::<rustls::Error>() {
            return Some(format!("TLS handshake failed: {rustls}"));
        }
        if tls && e.downcast_ref::<hyper::Error>().is_some_and(hyper::Error::is_canceled) {
            return Some(CLOSED.into());
        }
        // Neither an io::Error's `source` nor an h2::Error's shows the error it wraps.
        let io = e.downcast_ref::<std::io::Error>().or_else(|| e.downcast_ref::<h2::Error>()?.get_io());
        if let Some(io) = io {
            if let Some(rustls) = io.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
                return Some(format!("TLS handshake failed: {rustls}"));
            }
            match io.kind() {
                ErrorKind::InvalidData if tls => return Some(format!("TLS handshake failed: {io}")),
                ErrorKind::BrokenPipe | ErrorKind::ConnectionReset if tls => return Some(CLOSED.into()),
                _ => {}
            }
        }
        cause = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_non_empty_printable_ascii_and_never_printed() {
        assert!(Token::new("s3cret-!~").is_ok());
        for bad in ["", "two words", "tab\there", "naïve", "line\n"] {
            let err = Token::new(bad).expect_err(bad);
            assert!(matches!(err, SecurityError::Token(_)), "{bad:?}: {err}");
        }
        assert_eq!(format!("{:?}", Token::new("s3cret").unwrap()), "Token(..)");
        let (a, b) = (Token::random().unwrap(), Token::random().unwrap());
        assert_eq!(a.secret.len(), 64);
        assert_ne!(a.secret, b.secret);
    }

    #[test]
    fn a_token_file_is_trimmed_and_an_empty_one_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "  s3cret\n").unwrap();
        assert!(Token::from_file(&file).unwrap().matches(b"s3cret"));
        std::fs::write(&file, " \n\t").unwrap();
        let err = Token::from_file(&file).unwrap_err().to_string();
        assert!(err.contains(&file.display().to_string()) && err.contains("empty"), "{err}");
        let missing = dir.path().join("missing");
        let err = Token::from_file(&missing).unwrap_err().to_string();
        assert!(err.contains(&missing.display().to_string()), "{err}");
    }

    #[test]
    fn a_token_matches_only_itself() {
        let token = Token::new("abcdef").unwrap();
        assert!(token.matches(b"abcdef"));
        for other in [&b""[..], b"abcde", b"abcdeg", b"abcdefg", b"ABCDEF"] {
            assert!(!token.matches(other), "{other:?}");
        }
    }

    #[test]
    fn the_interceptor_lets_through_only_the_right_bearer_token() {
        let token = Token::new("right").unwrap();
        let mut check = Authenticate(Some(token.clone()));
        let call = |value: Option<&str>| {
            let mut request = Request::new(());
            if let Some(v) = value {
                request.metadata_mut().insert(AUTHORIZATION, v.parse().unwrap());
            }
            request
        };
        assert!(check.call(call(Some("Bearer right"))).is_ok());
        for refused in [None, Some("Bearer wrong"), Some("right"), Some("Basic right"), Some("Bearer right ")] {
            let status = check.call(call(refused)).expect_err(&format!("{refused:?}"));
            assert_eq!(status.code(), tonic::Code::Unauthenticated, "{refused:?}");
            assert_eq!(refusal(&status, false).as_deref(), Some(UNAUTHENTICATED));
        }
        assert!(Authenticate(None).call(call(None)).is_ok(), "a worker with no token checks nothing");
        let sent = Bearer(Some(token)).call(Request::new(())).unwrap();
        assert_eq!(sent.metadata().get(AUTHORIZATION).unwrap(), "Bearer right");
        assert!(refusal(&Status::unavailable("connection refused"), true).is_none());
    }

    #[test]
    fn protected_mode_refuses_a_non_loopback_address_with_nothing_to_authenticate() {
        let open: SocketAddr = "0.0.0.0:7001".parse().unwrap();
        for loopback in ["127.0.0.1:7001", "[::1]:7001", "[::ffff:127.0.0.1]:7001"] {
            assert!(Security::new().check_listen(loopback.parse().unwrap()).is_ok(), "{loopback}");
        }
        let err = Security::new().check_listen(open).unwrap_err();
        assert!(matches!(err, SecurityError::Unprotected { addr } if addr == open), "{err}");
        assert!(Security::new().insecure().check_listen(open).is_ok());
        assert!(Security::new().with_token(Token::new("t").unwrap()).check_listen(open).is_ok());
    }

    #[test]
    fn pem_problems_name_where_the_pem_came_from() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ca.pem");
        std::fs::write(&file, "not a certificate\n").unwrap();
        let err = Tls::new().with_ca_file(&file).unwrap_err().to_string();
        assert!(err.contains(&file.display().to_string()) && err.contains("no certificate"), "{err}");
        let missing = dir.path().join("cert.pem");
        let err = Tls::new().with_identity_files(&missing, &file).unwrap_err().to_string();
        assert!(err.contains(&missing.display().to_string()), "{err}");

        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap().self_signed(&key).unwrap();
        std::fs::write(&file, cert.pem()).unwrap();
        let key_file = dir.path().join("key.pem");
        std::fs::write(&key_file, "-----BEGIN PRIVATE KEY-----\n-----END PRIVATE KEY-----\n").unwrap();
        let err = Tls::new().with_identity_files(&file, &key_file).unwrap_err().to_string();
        assert!(err.contains(&key_file.display().to_string()), "{err}");
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        let tls = Tls::new().with_identity_files(&file, &key_file).unwrap();
        assert!(tls.has_identity() && !tls.has_ca());
        assert_eq!(format!("{tls:?}"), "Tls { identity: true, ca: false, domain: None }");
        assert!(tls.rustls_server_config().is_ok());
        assert!(matches!(tls.client_config(), Err(SecurityError::Incomplete(_))), "a master needs a CA");
    }
}
