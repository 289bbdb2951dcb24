//! The HTTP/1.1 server loop, with the limits `axum::serve` does not offer:
//! a deadline for request headers (a slowloris client that trickles its
//! headers is cut off), caps on header size and count, a cap on open
//! connections overall and per client address, and a graceful drain.

use std::{
    collections::HashMap,
    convert::Infallible,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{body::Body, extract::ConnectInfo, Router};
use hyper::{body::Incoming, server::conn::http1, Request};
use hyper_util::rt::{TokioIo, TokioTimer};
use ipnet::IpNet;
use mailroom_ratelimit::ip_bucket;
use mailroom_telemetry::names;
use tokio::{io::AsyncWriteExt, net::TcpListener, sync::Semaphore};
use tokio_io_timeout::TimeoutStream;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// Connection-level limits.
#[derive(Debug, Clone)]
pub struct ServeLimits {
    pub max_connections: usize,
    /// Per client address; trusted proxies are exempt (they carry many
    /// clients).
    pub max_connections_per_ip: usize,
    /// From the first byte of a request (or the end of the previous one on
    /// a kept-alive connection) to the end of its headers.
    pub header_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    /// Longest a write may wait for the client to read: a client that
    /// stops reading its responses gives its connection up.
    pub write_timeout: Duration,
    pub trusted_proxies: Vec<IpNet>,
}

impl Default for ServeLimits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            max_connections_per_ip: 256,
            header_timeout: Duration::from_secs(10),
            max_header_bytes: 32 * 1024,
            max_headers: 100,
            write_timeout: Duration::from_secs(30),
            trusted_proxies: Vec::new(),
        }
    }
}

/// Open connections per client address (IPv6 by /64, like the rate
/// limits: one subscriber holds a whole /64).
#[derive(Default)]
struct PerIp(Mutex<HashMap<String, usize>>);

struct PerIpSlot {
    table: Arc<PerIp>,
    ip: String,
}

impl PerIp {
    fn take(table: &Arc<PerIp>, ip: IpAddr, max: usize) -> Option<PerIpSlot> {
        let ip = ip_bucket(ip);
        let mut map = table.0.lock().ok()?;
        let count = map.entry(ip.clone()).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(PerIpSlot {
            table: Arc::clone(table),
            ip,
        })
    }
}

impl Drop for PerIpSlot {
    fn drop(&mut self) {
        if let Ok(mut map) = self.table.0.lock() {
            if let Some(count) = map.get_mut(&self.ip) {
                *count -= 1;
                if *count == 0 {
                    map.remove(&self.ip);
                }
            }
        }
    }
}

const TOO_MANY: &[u8] = b"HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\nconnection: close\r\nretry-after: 1\r\ncontent-length: 102\r\n\r\n{\"error\":{\"code\":\"rate_limited\",\"message\":\"too many open connections from this address; retry later\"}}";

/// Serves `router` on `listener` until `stop` is cancelled, then lets open
/// connections finish their current request and returns when all closed.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServeLimits,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let per_ip = Arc::new(PerIp::default());
    let tracker = tokio_util::task::TaskTracker::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .max_headers(limits.max_headers)
        .keep_alive(true);
    let builder = Arc::new(builder);
    loop {
        // A free slot first: beyond the cap, connections wait in the
        // kernel's backlog instead of holding memory here.
        let slot = tokio::select! {
            slot = Arc::clone(&slots).acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            _ = stop.cancelled() => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: pause, do not spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            },
            _ = stop.cancelled() => break,
        };
        let exempt = limits
            .trusted_proxies
            .iter()
            .any(|n| n.contains(&peer.ip()));
        let ip_slot = if exempt {
            None
        } else {
            match PerIp::take(&per_ip, peer.ip(), limits.max_connections_per_ip) {
                Some(s) => Some(s),
                None => {
                    metrics::counter!(names::HTTP_CONNECTIONS_REJECTED_TOTAL).increment(1);
                    tracker.spawn(async move {
                        let mut stream = stream;
                        let _ = tokio::time::timeout(
                            Duration::from_secs(1),
                            stream.write_all(TOO_MANY),
                        )
                        .await;
                        drop(slot);
                    });
                    continue;
                }
            }
        };
        let _ = stream.set_nodelay(true);
        let mut stream = TimeoutStream::new(stream);
        stream.set_write_timeout(Some(limits.write_timeout));
        let router = router.clone();
        let builder = Arc::clone(&builder);
        let stop = stop.clone();
        tracker.spawn(async move {
            let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
                request
                    .extensions_mut()
                    .insert(ConnectInfo::<SocketAddr>(peer));
                let router = router.clone();
                async move {
                    Ok::<_, Infallible>(
                        router
                            .oneshot(request.map(Body::new))
                            .await
                            .unwrap_or_else(|e| match e {}),
                    )
                }
            });
            let connection = builder
                .serve_connection(TokioIo::new(Box::pin(stream)), service)
                .with_upgrades();
            tokio::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                }
                _ = stop.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
            drop(ip_slot);
            drop(slot);
        });
    }
    tracker.close();
    tracker.wait().await;
    Ok(())
}
