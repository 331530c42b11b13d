//! A minimal HTTP/1.1 server for the metrics endpoint: `GET /metrics`
//! (Prometheus text format) and `GET /health` (200 "ok", or 503 while the
//! milter cannot verify). One request per connection, request head at most
//! 8 KiB read within 5 seconds, at most 16 connections at once; anything
//! else gets 400, 404 or 405 and the connection is closed.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, warn};

/// What the endpoint serves.
pub trait Source: Send + Sync + 'static {
    /// The Prometheus text exposition.
    fn metrics(&self) -> String;
    /// `None` when healthy, else why not.
    fn unhealthy(&self) -> Option<String>;
}

const MAX_HEAD: usize = 8192;
const READ_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_CONNECTIONS: usize = 16;

/// Serve until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    source: Arc<dyn Source>,
    shutdown: impl Future<Output = ()> + Send,
) {
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                warn!(error = %e, "metrics endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            // Too many at once: close this one rather than queue it.
            continue;
        };
        let source = source.clone();
        tokio::spawn(async move {
            if let Err(e) = handle(stream, source.as_ref()).await {
                debug!(error = %e, "metrics endpoint: connection failed");
            }
            drop(permit);
        });
    }
}

async fn handle(mut stream: TcpStream, source: &dyn Source) -> std::io::Result<()> {
    let head = match tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream)).await {
        Ok(Ok(Some(head))) => head,
        Ok(Ok(None)) => {
            return respond(&mut stream, 400, "text/plain", "bad request\n", false).await;
        }
        Ok(Err(e)) => return Err(e),
        Err(_) => return Ok(()),
    };
    let line = head.lines().next().unwrap_or_default();
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next(), parts.next(), parts.next());
    let (Some(method), Some(target), Some(version)) = (method, target, version) else {
        return respond(&mut stream, 400, "text/plain", "bad request\n", false).await;
    };
    if !version.starts_with("HTTP/1.") || parts.next().is_some() {
        return respond(&mut stream, 400, "text/plain", "bad request\n", false).await;
    }
    let head_only = method == "HEAD";
    if method != "GET" && !head_only {
        return respond(&mut stream, 405, "text/plain", "only GET and HEAD\n", false).await;
    }
    let path = target.split('?').next().unwrap_or_default();
    match path {
        "/metrics" => {
            let body = source.metrics();
            respond(
                &mut stream,
                200,
                "text/plain; version=0.0.4; charset=utf-8",
                &body,
                head_only,
            )
            .await
        }
        "/health" => match source.unhealthy() {
            None => respond(&mut stream, 200, "text/plain", "ok\n", head_only).await,
            Some(why) => {
                respond(
                    &mut stream,
                    503,
                    "text/plain",
                    &format!("{why}\n"),
                    head_only,
                )
                .await
            }
        },
        "/" => {
            respond(
                &mut stream,
                200,
                "text/plain",
                "rmilter: /metrics (Prometheus), /health\n",
                head_only,
            )
            .await
        }
        _ => respond(&mut stream, 404, "text/plain", "not found\n", head_only).await,
    }
}

/// The request head up to the empty line; `None` when it is too long or
/// not text.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<String>> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = find_end(&buf) {
            return Ok(String::from_utf8(buf[..end].to_vec()).ok());
        }
        if buf.len() > MAX_HEAD {
            return Ok(None);
        }
    }
}

fn find_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .or_else(|| buf.windows(2).position(|w| w == b"\n\n"))
}

async fn respond(
    stream: &mut TcpStream,
    status: u16,
    content_type: &str,
    body: &str,
    head_only: bool,
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Service Unavailable",
    };
    let mut response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n",
        body.len()
    );
    if status == 405 {
        response.push_str("Allow: GET, HEAD\r\n");
    }
    response.push_str("\r\n");
    if !head_only {
        response.push_str(body);
    }
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(bool);

    impl Source for Fixed {
        fn metrics(&self) -> String {
            "rmilter_up 1\n".to_string()
        }
        fn unhealthy(&self) -> Option<String> {
            (!self.0).then(|| "dns resolver unreachable".to_string())
        }
    }

    async fn get(addr: std::net::SocketAddr, request: &str) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        // A server that closes with request bytes unread may reset the
        // connection: keep what arrived.
        let _ = s.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    #[tokio::test]
    async fn answers_metrics_health_and_refuses_the_rest() {
        for healthy in [true, false] {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            let server = tokio::spawn(serve(listener, Arc::new(Fixed(healthy)), async {
                let _ = rx.await;
            }));
            let r = get(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
            assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
            assert!(r.contains("Content-Type: text/plain; version=0.0.4"), "{r}");
            assert!(r.ends_with("\r\n\r\nrmilter_up 1\n"), "{r}");
            let r = get(addr, "GET /health HTTP/1.0\r\n\r\n").await;
            if healthy {
                assert!(
                    r.starts_with("HTTP/1.1 200 OK") && r.ends_with("ok\n"),
                    "{r}"
                );
            } else {
                assert!(r.starts_with("HTTP/1.1 503 "), "{r}");
                assert!(r.ends_with("dns resolver unreachable\n"), "{r}");
            }
            let r = get(addr, "HEAD /metrics HTTP/1.1\r\n\r\n").await;
            assert!(
                r.ends_with("\r\n\r\n") && r.contains("Content-Length: 13"),
                "{r}"
            );
            let r = get(addr, "POST /metrics HTTP/1.1\r\n\r\n").await;
            assert!(r.starts_with("HTTP/1.1 405 "), "{r}");
            let r = get(addr, "GET /nope HTTP/1.1\r\n\r\n").await;
            assert!(r.starts_with("HTTP/1.1 404 "), "{r}");
            let r = get(addr, "garbage\r\n\r\n").await;
            assert!(r.starts_with("HTTP/1.1 400 "), "{r}");
            let huge = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(20_000));
            let r = get(addr, &huge).await;
            assert!(r.is_empty() || r.starts_with("HTTP/1.1 400 "), "{r}");
            let _ = tx.send(());
            server.await.unwrap();
        }
    }
}
