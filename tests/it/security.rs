//! The trust boundary, through the real transport: tokens, protected mode, TLS and mutual
//! TLS, and the example's flags. Certificates are made at run time (rcgen); every server
//! listens on 127.0.0.1, except the protected-mode check, which binds 0.0.0.0 and is only
//! ever dialled on 127.0.0.1.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use mapreduce::security::{Security, SecurityError, Tls, Token};
use mapreduce::worker::Worker;
use mapreduce::{Cluster, JobSpec, Registry, RunError, ServeError};
use mapreduce_examples::corpus::generate_corpus;
use mapreduce_examples::wordcount::WordCount;
use mapreduce_rpc::pb;
use mapreduce_rpc::pb::worker_client::WorkerClient;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use tonic::Code;
use tonic::transport::Channel;

use crate::processes::{WorkerProcess, example_binary};
use crate::support::{assert_wordcount_output, init_tracing, serve};

fn token(secret: &str) -> Token {
    Token::new(secret).unwrap()
}

fn word_count_worker() -> Worker {
    Worker::new(Registry::new().register::<WordCount>())
}

/// A corpus in a new directory, and where its output goes.
fn corpus(seed: u64) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("corpus.txt");
    generate_corpus(&input, 200 << 10, 2_000, seed).unwrap();
    let out = dir.path().join("out");
    (dir, input, out)
}

/// Runs the word count of `input` on `cluster` into `out`, in a few shards.
async fn count(cluster: &Cluster, input: &Path, out: &Path) -> Result<(), RunError> {
    cluster.run(JobSpec::new(WordCount, [input], out).reducers(2).shard_size(64 << 10)).await.map(drop)
}

/// A raw client of `addr` that sends `token` (if any) with a zero Wait.
async fn wait_with(addr: &str, token: Option<&str>) -> Result<(), tonic::Status> {
    let channel = Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    let mut client = WorkerClient::new(channel);
    let mut request = tonic::Request::new(pb::WaitRequest { millis: 0 });
    if let Some(t) = token {
        request.metadata_mut().insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    client.wait(request).await.map(drop)
}

#[tokio::test]
async fn a_call_without_the_right_token_is_unauthenticated_and_runs_nothing() {
    init_tracing();
    let (addr, _stop) = serve(word_count_worker().with_token(token("right"))).await;
    let addr = addr.to_string();
    for (presented, want) in [(None, Code::Unauthenticated), (Some("wrong"), Code::Unauthenticated)] {
        let status = wait_with(&addr, presented).await.expect_err("refused");
        assert_eq!(status.code(), want, "{presented:?}: {status:?}");
        assert!(status.message().contains("unauthenticated"), "{status:?}");
    }
    // A map that the handler would refuse as invalid is refused before: it never ran.
    let channel = Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    let status = WorkerClient::new(channel).map(pb::MapRequest::default()).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    // The worker stays healthy: the right token works, again and again.
    for _ in 0..2 {
        wait_with(&addr, Some("right")).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_runs_with_the_right_token_and_a_wrong_one_is_refused_before_it_starts() {
    init_tracing();
    let (a, _stop_a) = serve(word_count_worker().with_token(token("right"))).await;
    let (b, _stop_b) = serve(word_count_worker().with_token(token("right"))).await;
    let addrs = [a.to_string(), b.to_string()];
    let (_dir, input, out) = corpus(21);

    let cluster = Cluster::connect(&addrs).unwrap().with_token(token("right"));
    count(&cluster, &input, &out).await.unwrap();
    assert_wordcount_output(&out, 2, std::slice::from_ref(&input));

    for master in [Cluster::connect(&addrs).unwrap().with_token(token("wrong")), Cluster::connect(&addrs).unwrap()] {
        let out = out.with_extension("refused");
        let started = Instant::now();
        let err = count(&master, &input, &out).await.unwrap_err();
        assert!(matches!(err, RunError::Refused(ref workers) if workers.len() == 2), "{err:?}");
        let message = err.to_string();
        assert!(message.starts_with("every worker refused this master: "), "{message}");
        assert!(message.contains(&format!("{a}: unauthenticated")), "{message}");
        assert_eq!(message.lines().count(), 1, "{message}");
        assert!(started.elapsed() < Duration::from_secs(5), "refused at once");
        assert!(!out.exists(), "nothing is created for a refused master");
    }
}

#[tokio::test]
async fn a_local_cluster_shares_a_token_with_its_workers() {
    let (_dir, input, out) = corpus(22);
    let cluster = Cluster::local(2).await.unwrap();
    count(&cluster, &input, &out).await.unwrap();
    assert_wordcount_output(&out, 2, std::slice::from_ref(&input));
    // Its workers demand that token: a raw client without it is refused.
    let status = wait_with(cluster.addrs()[0], None).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn a_worker_refuses_to_serve_a_non_loopback_address_unprotected_unless_told_insecure() {
    init_tracing();
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let err = word_count_worker().serve_with_shutdown(listener, std::future::pending()).await.unwrap_err();
    assert!(matches!(err, ServeError::Security(SecurityError::Unprotected { addr: a }) if a == addr), "{err:?}");
    assert!(err.to_string().contains(&format!("refusing to serve {addr} with no token")), "{err}");

    // With a token, or told insecure, it serves (dialled here on loopback only).
    for worker in [word_count_worker().with_token(token("t")), word_count_worker().insecure()] {
        let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(worker.serve_with_shutdown(listener, async { stopped.await.unwrap_or(()) }));
        wait_with(&format!("127.0.0.1:{port}"), Some("t")).await.unwrap();
        drop(stop);
        server.await.unwrap().unwrap();
    }
}

/// A CA made at run time, and certificates it signs for 127.0.0.1 and localhost.
struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    fn new() -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, "mapreduce test CA");
        Pki { ca: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap() }
    }

    fn ca_pem(&self) -> String {
        self.ca.as_ref().pem()
    }

    /// A certificate and key for a server (`server`) or a client.
    fn issue(&self, server: bool) -> (String, String) {
        let mut params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        params.extended_key_usages =
            vec![if server { ExtendedKeyUsagePurpose::ServerAuth } else { ExtendedKeyUsagePurpose::ClientAuth }];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// A worker's TLS: its certificate, and the CA of client certificates if `mutual`.
    fn worker(&self, mutual: bool) -> Tls {
        let (cert, key) = self.issue(true);
        let tls = Tls::new().with_identity_pem(cert, key).unwrap();
        if mutual { tls.with_ca_pem(self.ca_pem()).unwrap() } else { tls }
    }

    /// A master's TLS: the CA, and a client certificate if `client_cert`.
    fn master(&self, client_cert: bool) -> Tls {
        let tls = Tls::new().with_ca_pem(self.ca_pem()).unwrap();
        if client_cert {
            let (cert, key) = self.issue(false);
            tls.with_identity_pem(cert, key).unwrap()
        } else {
            tls
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_runs_over_tls_with_a_ca_made_at_run_time() {
    init_tracing();
    let pki = Pki::new();
    let security = |tls| Security::new().with_token(token("right")).with_tls(tls);
    let (addr, _stop) = serve(word_count_worker().with_security(security(pki.worker(false)))).await;
    let (_dir, input, out) = corpus(23);
    // A bare host:port means https:// under TLS settings; so does an explicit https://.
    for (i, a) in [addr.to_string(), format!("https://{addr}")].into_iter().enumerate() {
        let cluster = Cluster::connect([&a]).unwrap().with_security(security(pki.master(false))).unwrap();
        let out = out.with_extension(i.to_string());
        count(&cluster, &input, &out).await.unwrap();
        assert_wordcount_output(&out, 2, std::slice::from_ref(&input));
    }
    // http:// contradicts TLS settings, and https:// needs them.
    let err = Cluster::connect([format!("http://{addr}")]).unwrap().with_security(security(pki.master(false)));
    assert!(err.unwrap_err().to_string().contains("http:// with TLS"));
    let plaintext = Cluster::connect([format!("https://{addr}")]).unwrap().with_token(token("right"));
    let err = count(&plaintext, &input, &out.with_extension("plaintext")).await.unwrap_err();
    assert!(err.to_string().contains("https:// needs TLS"), "{err}");
    // A master that trusts another CA refuses the worker's certificate: a refusal.
    let other = Pki::new();
    let cluster = Cluster::connect([&addr.to_string()]).unwrap().with_security(security(other.master(false))).unwrap();
    let err = count(&cluster, &input, &out.with_extension("other-ca")).await.unwrap_err();
    assert!(matches!(err, RunError::Refused(_)), "{err:?}");
    assert!(err.to_string().contains("TLS handshake failed"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_refuses_a_master_without_a_client_certificate() {
    init_tracing();
    let pki = Pki::new();
    // Client certificates authenticate: such a worker may serve with no token.
    let (addr, _stop) = serve(word_count_worker().with_security(Security::new().with_tls(pki.worker(true)))).await;
    let (_dir, input, out) = corpus(24);
    let master = |client_cert| {
        let security = Security::new().with_tls(pki.master(client_cert));
        Cluster::connect([addr.to_string()]).unwrap().with_security(security).unwrap()
    };
    let err = count(&master(false), &input, &out).await.unwrap_err();
    assert!(matches!(err, RunError::Refused(_)), "{err:?}");
    assert!(err.to_string().contains("TLS handshake failed"), "{err}");
    assert!(!out.exists());
    count(&master(true), &input, &out).await.unwrap();
    assert_wordcount_output(&out, 2, std::slice::from_ref(&input));
}

#[tokio::test]
async fn a_plaintext_client_of_a_tls_worker_fails_cleanly() {
    init_tracing();
    let pki = Pki::new();
    let security = Security::new().with_token(token("right")).with_tls(pki.worker(false));
    let (addr, _stop) = serve(word_count_worker().with_security(security)).await;
    let answer = tokio::time::timeout(Duration::from_secs(10), async {
        let channel = Channel::from_shared(format!("http://{addr}")).unwrap().connect().await?;
        Ok::<_, Box<dyn std::error::Error>>(WorkerClient::new(channel).wait(pb::WaitRequest { millis: 0 }).await?)
    });
    assert!(answer.await.expect("an answer, not a hang").is_err());
    let (_dir, input, out) = corpus(25);
    let cluster = Cluster::connect([addr.to_string()]).unwrap().with_token(token("right"));
    let err = count(&cluster, &input, &out).await.unwrap_err();
    assert!(matches!(err, RunError::NoReachableWorker(_) | RunError::Refused(_)), "{err:?}");
    // The worker still serves TLS clients.
    let tls = Security::new().with_token(token("right")).with_tls(pki.master(false));
    count(&Cluster::connect([addr.to_string()]).unwrap().with_security(tls).unwrap(), &input, &out).await.unwrap();
}

#[test]
fn the_example_worker_takes_a_token_file_and_a_root_and_a_master_with_a_wrong_token_exits_quickly() {
    let (dir, input, out) = corpus(26);
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let right = write("right.token", "  s3cret-token\n");
    let wrong = write("wrong.token", "not-the-token\n");
    let empty = write("empty.token", " \n");
    let mut cmd = Command::new(example_binary());
    cmd.args(["worker", "--listen", "127.0.0.1:0", "--token-file"]).arg(&right).arg("--root").arg(dir.path());
    let worker = WorkerProcess::spawn(cmd);
    let master = |token: &Path, out: &Path| {
        let started = Instant::now();
        let output = Command::new(example_binary())
            .args(["master", "--worker", &worker.addr, "--input", input.to_str().unwrap(), "--output"])
            .arg(out)
            .args(["--reducers", "2", "--shard-size", "65536", "--task-timeout", "3", "--token-file"])
            .arg(token)
            .output()
            .unwrap();
        (output, started.elapsed())
    };
    let (output, _) = master(&right, &out);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_wordcount_output(&out, 2, std::slice::from_ref(&input));

    let (output, took) = master(&wrong, &dir.path().join("out-wrong"));
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("wordcount:")).collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].contains("refused") && lines[0].contains("unauthenticated"), "{stderr}");
    assert!(took < Duration::from_secs(5), "took {took:?}");

    let (output, _) = master(&empty, &dir.path().join("out-empty"));
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&empty.display().to_string()) && stderr.contains("empty"), "{stderr}");

    // Input outside the worker's root: the worker does not read it; the master, which
    // may, streams the shard to it, and the job counts it.
    let elsewhere = tempfile::tempdir().unwrap();
    let outside = elsewhere.path().join("outside.txt");
    std::fs::write(&outside, "not yours not\n").unwrap();
    let out = dir.path().join("out-outside");
    let output = Command::new(example_binary())
        .args(["master", "--worker", &worker.addr, "--input", outside.to_str().unwrap(), "--output"])
        .arg(&out)
        .args(["--task-timeout", "3", "--reducers", "1", "--token-file"])
        .arg(&right)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let counts = mapreduce_examples::reference::read_output(&out).unwrap();
    assert_eq!((counts["not"], counts["yours"]), (2, 1), "{counts:?}");
}

#[test]
fn the_example_worker_refuses_a_non_loopback_address_without_a_token() {
    use std::io::BufRead;
    let mut child = Command::new(example_binary())
        .args(["worker", "--listen", "0.0.0.0:0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // It exits before saying where it listens; were it to serve, the banner would come
    // before the end of its output, and it is killed at once.
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    if let Some(banner) = stdout.lines().map_while(Result::ok).find(|l| l.contains("listening")) {
        let _ = child.kill();
        let _ = child.wait();
        panic!("the worker served 0.0.0.0 with no token: {banner}");
    }
    let output = child.wait_with_output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("refusing to serve") && stderr.contains("--insecure"), "{stderr}");
}
