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

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::config::HttpConfig;

/// Serves `router` on `listener` under `config`'s bounds until `shutdown` completes.
pub async fn serve_router(
    listener: TcpListener,
    router: Router,
    config: &HttpConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let permits = Arc::new(Semaphore::new(config.max_connections));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(config.header_read_timeout);
    let service = TowerToHyperService::new(router);
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
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service.clone()));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
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

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::*;

    async fn start(config: HttpConfig) -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = Router::new().route("/", axum::routing::get(|| async { "ok" }));
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
}
