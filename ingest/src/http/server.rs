//! The HTTP listener every role serves its router on: axum's router on hyper's HTTP/1 connection,
//! with the bounds a server exposed to many clients needs, which `axum::serve` does not set.
//!
//! - **Connections** past `http.max_connections` wait in the kernel's backlog instead of being
//!   accepted, so idle or slow clients cannot take every file descriptor (and the writes of others).
//! - **Headers** must arrive within `http.header_read_timeout`, timed from when the connection waits
//!   for a request: a client that sends nothing, half a request line, or idles on keep-alive is
//!   disconnected (Slowloris).
//! - **Bodies** must arrive within `http.body_read_timeout` (applied where a body is read, 408).
//! - **Shutdown** stops accepting, lets requests in flight finish for up to `http.shutdown_grace`,
//!   then returns.
//! - **TLS** with `http.tls` (see [`TlsConfig`]): the handshake is bounded by the header timeout too.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use crate::config::{HttpConfig, TlsConfig};

/// Serves `router` on `listener` under `config`'s bounds until `shutdown` completes. Fails at once
/// when `http.tls` names files that do not make a certificate.
pub async fn serve_router(
    listener: TcpListener,
    router: Router,
    config: &HttpConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let mut tls =
        if config.tls.enabled() { Some(Tls::load(&config.tls).map_err(std::io::Error::other)?) } else { None };
    let permits = Arc::new(Semaphore::new(config.max_connections));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(config.header_read_timeout);
    let service = TowerToHyperService::new(router);
    let handshake_timeout = config.header_read_timeout;
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = Arc::clone(&permits).acquire_owned() => p.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let acceptor = tls.as_mut().map(Tls::acceptor);
        let (http, service, watcher) = (http.clone(), service.clone(), graceful.watcher());
        tokio::spawn(async move {
            let served = match acceptor {
                None => watcher.watch(http.serve_connection(TokioIo::new(stream), service)).await,
                Some(acceptor) => match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => watcher.watch(http.serve_connection(TokioIo::new(stream), service)).await,
                    Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
                },
            };
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(config.shutdown_grace, graceful.shutdown()).await.is_err() {
        tracing::warn!(grace = ?config.shutdown_grace, "connections still open after the shutdown grace; closing");
    }
    Ok(())
}

/// The listener's TLS state: the acceptor of the current certificate, and the files' times it was
/// read at.
struct Tls {
    files: TlsConfig,
    acceptor: TlsAcceptor,
    read_at: (SystemTime, SystemTime),
    checked: Instant,
}

impl Tls {
    fn load(files: &TlsConfig) -> Result<Self, String> {
        let read_at = modified(files)?;
        Ok(Self { files: files.clone(), acceptor: acceptor(files)?, read_at, checked: Instant::now() })
    }

    /// The acceptor for a new connection, after reading the files again if they changed.
    fn acceptor(&mut self) -> TlsAcceptor {
        if self.checked.elapsed() >= Duration::from_secs(1) {
            self.checked = Instant::now();
            match modified(&self.files) {
                Ok(at) if at != self.read_at => match acceptor(&self.files) {
                    Ok(a) => {
                        tracing::info!(cert = %self.files.cert.display(), "TLS certificate reloaded");
                        (self.acceptor, self.read_at) = (a, at);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "the new TLS certificate does not load; keeping the previous one")
                    }
                },
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "cannot check the TLS certificate files"),
            }
        }
        self.acceptor.clone()
    }
}

fn modified(files: &TlsConfig) -> Result<(SystemTime, SystemTime), String> {
    let at = |p: &std::path::Path| {
        std::fs::metadata(p).and_then(|m| m.modified()).map_err(|e| format!("http.tls: {}: {e}", p.display()))
    };
    Ok((at(&files.cert)?, at(&files.key)?))
}

fn acceptor(files: &TlsConfig) -> Result<TlsAcceptor, String> {
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|c| c.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("http.tls.cert {}: {e}", files.cert.display()))?;
    let key =
        PrivateKeyDer::from_pem_file(&files.key).map_err(|e| format!("http.tls.key {}: {e}", files.key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
        .map_err(|e| format!("http.tls: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::*;

    /// Serves `/` answering `ok` under `config`.
    async fn start(config: HttpConfig) -> std::net::SocketAddr {
        start_router(config, Router::new().route("/", axum::routing::get(|| async { "ok" }))).await
    }

    async fn start_router(config: HttpConfig, router: Router) -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { serve_router(listener, router, &config, std::future::pending()).await });
        addr
    }

    async fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
        let mut buf = [0u8; 1024];
        let started = Instant::now();
        loop {
            match tokio::time::timeout(limit.saturating_sub(started.elapsed()), stream.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => continue,
                Err(_) => return false,
            }
        }
    }

    /// Clients that send nothing or half a request are disconnected after the header timeout, and
    /// the connections they held are given to others.
    #[tokio::test]
    async fn silent_and_half_sent_requests_are_cut_and_the_connection_limit_holds() {
        let config =
            HttpConfig { header_read_timeout: Duration::from_millis(300), max_connections: 2, ..HttpConfig::default() };
        let addr = start(config).await;
        let mut silent = TcpStream::connect(addr).await.unwrap();
        let mut half = TcpStream::connect(addr).await.unwrap();
        half.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        // Both slots are taken: a third client is not served until they are cut.
        let mut third = TcpStream::connect(addr).await.unwrap();
        third.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
        let mut answer = Vec::new();
        let early = tokio::time::timeout(Duration::from_millis(150), third.read_to_end(&mut answer)).await;
        assert!(early.is_err(), "served past the connection limit");
        assert!(closed_within(&mut silent, Duration::from_secs(3)).await, "a silent client was kept");
        assert!(closed_within(&mut half, Duration::from_secs(3)).await, "a half-sent request was kept");
        tokio::time::timeout(Duration::from_secs(3), third.read_to_end(&mut answer)).await.unwrap().unwrap();
        assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"), "{answer:?}");
    }

    /// A CA and a certificate it signed for 127.0.0.1: (CA PEM, certificate PEM, key PEM).
    fn issue() -> (String, String, String) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap().signed_by(&key, &ca, &ca_key);
        (ca.pem(), cert.unwrap().pem(), key.serialize_pem())
    }

    /// A certificate issued by a new CA, written to `dir`: the CA's PEM and the listener's files.
    fn certificate_in(dir: &std::path::Path) -> (String, TlsConfig) {
        let tls = TlsConfig { cert: dir.join("cert.pem"), key: dir.join("key.pem") };
        let (ca, chain, private) = issue();
        std::fs::write(&tls.cert, chain).unwrap();
        std::fs::write(&tls.key, private).unwrap();
        (ca, tls)
    }

    async fn get(addr: std::net::SocketAddr, ca: &str) -> Result<String, reqwest::Error> {
        let client = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).unwrap())
            .build()
            .unwrap();
        client.get(format!("https://{addr}/")).send().await?.text().await
    }

    /// HTTPS with the configured certificate, verified against its CA (another CA is refused), and a
    /// new certificate written over the files is served to the next connections.
    #[tokio::test]
    async fn tls_is_served_verified_and_a_new_certificate_is_picked_up() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, tls) = certificate_in(dir.path());
        let (cert, key) = (tls.cert.clone(), tls.key.clone());
        let addr = start(HttpConfig { tls, ..HttpConfig::default() }).await;
        assert_eq!(get(addr, &ca).await.unwrap(), "ok");
        let (other_ca, other_chain, other_key) = issue();
        assert!(get(addr, &other_ca).await.is_err(), "a certificate of another CA is refused");

        tokio::time::sleep(Duration::from_millis(1100)).await;
        std::fs::write(&cert, other_chain).unwrap();
        std::fs::write(&key, other_key).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while get(addr, &other_ca).await.is_err() {
            assert!(Instant::now() < deadline, "the new certificate was never served");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(get(addr, &ca).await.is_err(), "the old certificate is no longer served");
    }

    #[test]
    fn broken_certificate_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert, "not a certificate").unwrap();
        std::fs::write(&key, "not a key").unwrap();
        let e = Tls::load(&TlsConfig { cert, key }).err().unwrap();
        assert!(e.starts_with("http.tls"), "{e}");
    }

    /// Yaffle's own client of an https evaluator verifies it against `sinks.alert.tls_ca`.
    #[tokio::test]
    async fn the_alert_sink_verifies_an_https_evaluator_against_its_ca() {
        use crate::sinks::alert::{Destination, HttpDestination};
        let dir = tempfile::tempdir().unwrap();
        let (ca, tls) = certificate_in(dir.path());
        let status = || async { axum::Json(serde_json::json!({ "instance": "i", "horizon_seconds": 60.0 })) };
        let router = Router::new().route("/api/v1/status", axum::routing::get(status));
        let addr = start_router(HttpConfig { tls, ..HttpConfig::default() }, router).await;
        let ca = reqwest::Certificate::from_pem(ca.as_bytes()).unwrap();
        let trusted = HttpDestination::new(&format!("https://{addr}"), Duration::from_secs(5), "", &[ca]);
        assert_eq!(trusted.status().await.unwrap().instance, "i");
        let (other, _, _) = issue();
        let other = reqwest::Certificate::from_pem(other.as_bytes()).unwrap();
        let untrusted = HttpDestination::new(&format!("https://{addr}"), Duration::from_secs(5), "", &[other]);
        assert!(untrusted.status().await.is_err(), "an evaluator of another CA is refused");
    }
}
