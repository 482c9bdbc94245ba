//! serve: the accept loop — a cap on open connections, a header read timeout, and graceful shutdown.
//!
//! `axum::serve` has neither a connection cap nor a header timeout, so a client that opens sockets and
//! trickles header bytes could hold a task each, forever. Here every connection needs a permit before it
//! is accepted (beyond the cap, new ones wait in the kernel's backlog), and hyper closes a connection
//! whose request head has not arrived within `read_timeout` (this also bounds idle keep-alive). The body
//! has its own deadline in the webhook handler (408). One client address may hold only
//! `max_connections_per_ip` of them, so a single flooder cannot fill the table; connections beyond that
//! are closed at once.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::guard::{ClientAddr, ConnectionsPerClient};

/// Limits of the accept loop.
#[derive(Debug, Clone, Copy)]
pub struct ServeLimits {
    /// Open connections at most; further ones are not accepted until one closes.
    pub max_connections: usize,
    /// Open connections from one client address at most; further ones are closed when accepted.
    pub max_connections_per_ip: usize,
    /// Time allowed for a request head (and for the next one on an idle keep-alive connection).
    pub header_timeout: Duration,
}

/// hyper's read buffer per connection: it bounds request heads (refused 431; hyper lets a head grow to
/// somewhat over this — 130 KiB passed, 256 KiB is refused), and body bytes
/// are handed over in pieces of at most this size (the default, ~400 KB, would let idle uploads hold
/// 400 KB each outside the body budget).
const READ_BUFFER: usize = 64 << 10;

/// File descriptors kept for everything but client connections: the store's files and connections,
/// command pipes, the listener, the runtime's own.
const RESERVED_FILES: u64 = 256;

/// The connection cap the open-file limit allows: the soft `RLIMIT_NOFILE` is raised to the hard limit
/// first, then `configured` is lowered if the descriptors would run out before it is reached (accept
/// failing with EMFILE would also starve the store and the commands).
pub fn connection_cap(configured: usize) -> usize {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let files = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => hard,
            Err(e) => {
                tracing::warn!(error = %e, soft, hard, "could not raise the open-file limit");
                soft
            }
        },
        Ok((soft, _)) => soft,
        Err(e) => {
            tracing::warn!(error = %e, "could not read the open-file limit");
            return configured;
        }
    };
    let allowed = usize::try_from(files.saturating_sub(RESERVED_FILES).max(1)).unwrap_or(usize::MAX);
    let cap = configured.min(allowed);
    if cap < configured {
        tracing::warn!(
            configured,
            cap,
            open_files = files,
            "server.max_connections lowered to fit the open-file limit"
        );
    } else {
        tracing::info!(max_connections = cap, open_files = files, "connection cap");
    }
    cap
}

/// Serve `router` on `listener` until `shutdown` fires; then stop accepting and wait for in-flight
/// requests to finish (idle connections are closed at once).
pub async fn serve(listener: TcpListener, router: Router, limits: ServeLimits, shutdown: CancellationToken) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let per_client = ConnectionsPerClient::new(limits.max_connections_per_ip);
    let graceful = GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true)
        // What hyper may buffer per connection beyond the body budget (a request head must fit too).
        .max_buf_size(READ_BUFFER);
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(client_slot) = per_client.open(peer.ip()) else {
            // Never log who it was: client addresses are personal data.
            tracing::debug!("connection closed: its address has too many open");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ClientAddr(peer));
            router.clone().oneshot(request)
        });
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            // Errors here are clients going away or timing out; never log who they were.
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection closed with an error");
            }
            drop(client_slot);
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}
