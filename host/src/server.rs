//! The HTTP server loop: accepts connections and serves the API on each,
//! within the connection limits (`MAX_CONNECTIONS`, `HTTP_HEADER_TIMEOUT_SECONDS`,
//! `HTTP_BODY_IDLE_TIMEOUT_SECONDS`).
//!
//! `axum::serve` sets no timer, so hyper's header read timeout is off and a
//! connection that sends half a request is kept forever; nor does it bound
//! the number of connections. Here each connection is served by hyper with a
//! timer and a header deadline, and a semaphore holds the count.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::ServiceBuilder;
use tower_http::timeout::RequestBodyTimeoutLayer;

use crate::config::Limits;

/// How long to pause accepting after `accept` fails (out of file
/// descriptors, mostly): retrying at once would spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Serves `router` on `listener` until `shutdown` fires, then waits for the
/// requests in flight to finish (connections are closed as they go idle).
pub async fn serve(listener: TcpListener, router: Router, limits: Limits, shutdown: CancellationToken) {
    let mut builder = Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_timeout);
    // HTTP/2 is not offered (the API never spoke it), so every connection
    // is HTTP/1 and gets the header deadline above.
    let builder = builder.http1_only();
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.connections));
    loop {
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break, // never closed
            },
            () = shutdown.cancelled() => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(
            ServiceBuilder::new().layer(RequestBodyTimeoutLayer::new(limits.body_idle_timeout)).service(router.clone()),
        );
        // Upgrades keep a connection that switches protocol (WebSocket)
        // under the same watch.
        let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service).into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}
