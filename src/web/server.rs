//! Listening sockets, optional TLS, and graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};

use super::AppState;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The server could not start.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// A `--web.listen-address` is malformed.
    #[error("--web.listen-address {address:?}: {reason}")]
    Address {
        /// The address as given.
        address: String,
        /// Why it is unusable.
        reason: String,
    },
    /// Binding failed (port in use, permission).
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address.
        address: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Turns a Prometheus-style address (`:9830`, `127.0.0.1:9830`, `[::1]:9830`) into a
/// socket address; an empty host means every interface.
pub fn parse_listen_address(address: &str) -> Result<SocketAddr, WebError> {
    let full = if address.starts_with(':') {
        format!("0.0.0.0{address}")
    } else {
        address.to_string()
    };
    if let Ok(a) = full.parse::<SocketAddr>() {
        return Ok(a);
    }
    use std::net::ToSocketAddrs;
    full.to_socket_addrs()
        .map_err(|e| WebError::Address {
            address: address.to_string(),
            reason: e.to_string(),
        })?
        .next()
        .ok_or_else(|| WebError::Address {
            address: address.to_string(),
            reason: "resolves to no address".into(),
        })
}

/// Binds every listen address before anything is served, so that a port in use stops
/// start-up with a clear error.
pub async fn bind(addresses: &[String]) -> Result<Vec<TcpListener>, WebError> {
    let mut out = Vec::new();
    for a in addresses {
        let addr = parse_listen_address(a)?;
        let l = TcpListener::bind(addr)
            .await
            .map_err(|source| WebError::Bind {
                address: a.clone(),
                source,
            })?;
        tracing::info!(address = %l.local_addr().unwrap_or(addr), tls = false, "listening");
        out.push(l);
    }
    Ok(out)
}

/// Serves until `shutdown` completes, then lets in-flight requests finish for up to
/// [`super::SHUTDOWN_GRACE`].
pub async fn serve(
    listeners: Vec<TcpListener>,
    state: Arc<AppState>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(TcpStream, SocketAddr)>(64);
    let mut accept_tasks = Vec::new();
    for l in listeners {
        let tx = tx.clone();
        accept_tasks.push(tokio::spawn(async move {
            loop {
                match l.accept().await {
                    Ok(conn) => {
                        if tx.send(conn).await.is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        }));
    }
    drop(tx);
    let graceful = GracefulShutdown::new();
    // HTTP/1.1 only: Prometheus scrapes and every API client of the exporter and the sidecar
    // speak it, and an HTTP/2 server (h2) would add a quarter of a MiB of code pages to the
    // resident memory (docs/BENCHMARKS.md). TLS advertises only http/1.1 over ALPN.
    let builder = Arc::new(http1::Builder::new());
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            conn = rx.recv() => {
                let Some((stream, peer)) = conn else { break };
                let _ = stream.set_nodelay(true);
                let state = state.clone();
                let builder = builder.clone();
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    let tls = state.web_config.as_ref().and_then(|w| w.current().tls());
                    let service = service_fn(move |req| super::handle(state.clone(), req));
                    let result = match tls {
                        Some(cfg) => {
                            let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
                            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                                Ok(Ok(s)) => {
                                    let conn = builder.serve_connection(TokioIo::new(s), service);
                                    watcher.watch(conn).await
                                }
                                Ok(Err(e)) => {
                                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                    return;
                                }
                                Err(_) => {
                                    tracing::debug!(%peer, "TLS handshake timed out");
                                    return;
                                }
                            }
                        }
                        None => {
                            let conn = builder.serve_connection(TokioIo::new(stream), service);
                            watcher.watch(conn).await
                        }
                    };
                    if let Err(e) = result {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    for t in accept_tasks {
        t.abort();
    }
    tracing::info!("shutting down; waiting for in-flight requests");
    if tokio::time::timeout(super::SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("in-flight requests did not finish in time");
    }
}
