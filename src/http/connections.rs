//! The API's connection loop: HTTP/1.1 on hyper directly, for the limits `axum::serve` does not
//! offer.
//!
//! - A header timeout: a client must send a request's headers within it, else the connection
//!   is closed. It also closes keep-alive connections idle for that long, so a client that
//!   dribbles headers a byte at a time, or opens connections and says nothing, holds a slot
//!   only briefly. (axum's `serve` sets no timer, which leaves hyper's timeout off.)
//! - A cap on open connections: beyond it the loop stops accepting until one closes, so
//!   connections wait in the kernel's backlog instead of costing memory.
//! - A cap on the size of a request's headers: beyond it hyper answers 431 and closes.
//!
//! On shutdown the listener closes at once (a new connection is refused, and Fly's proxy sends
//! it to another machine), then the open connections drain: for up to [`DRAIN`], every answer
//! carries `Connection: close`, so a client's next request on a kept-alive connection is
//! answered and the connection closes after it, cleanly. Only then are the connections still
//! idle closed. Closing an idle kept-alive connection at the signal, as hyper's graceful
//! shutdown alone does, races a client already sending on it: in the deploy drill that was a
//! few uploads per deploy with no answer at all (tests/integration/deploy_drill.rs).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::header::{CONNECTION, HeaderValue};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower_service::Service;

use crate::config::ConnectionLimits;

/// Largest request line plus headers accepted; the API's own headers take well under 2 KiB.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// How long open connections drain after the signal before the idle ones are closed: longer
/// than a busy client's gap between two requests, far inside the shutdown grace period.
pub const DRAIN: Duration = Duration::from_secs(2);

/// Serves `router` on `listener` until `stop` resolves, then waits for in-flight requests.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    stop: impl Future<Output = ()>,
) -> io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let draining = Arc::new(AtomicBool::new(false));
    let graceful = GracefulShutdown::new();
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout).max_header_size(MAX_HEADER_BYTES);
    tokio::pin!(stop);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            () = &mut stop => break,
        };
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: back off rather than spin.
                    tracing::warn!(error = %e, "could not accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let _ = stream.set_nodelay(true);
        let (router, draining) = (router.clone(), Arc::clone(&draining));
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo::<SocketAddr>(remote));
            let (answer, draining) = (router.clone().call(request), Arc::clone(&draining));
            async move {
                let mut response = answer.await?;
                if draining.load(Ordering::Relaxed) {
                    response.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
                }
                Ok::<_, std::convert::Infallible>(response)
            }
        });
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, %remote, "connection closed with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    draining.store(true, Ordering::Relaxed);
    // Every connection closed gives its slot back: all slots free means none is left to drain.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(DRAIN, slots.acquire_many(all)).await;
    graceful.shutdown().await;
    Ok(())
}
