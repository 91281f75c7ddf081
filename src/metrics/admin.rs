//! The plain-HTTP admin listener: `/metrics` and `/healthz`, on threads of
//! its own, bounded.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use tracing::info;

use super::Published;

/// Serves `/metrics` and `/healthz` on a plain-HTTP admin listener, off the
/// worker cores (blocking I/O: a scrape is rare and must never compete with a
/// worker core). Each connection gets its own short-lived thread, so one slow
/// client cannot hold up `/metrics`; at most [`ADMIN_MAX_CONNECTIONS`] are
/// served at once (more are closed at once) and each has
/// [`ADMIN_DEADLINE`] in all to send its request and take the answer.
pub fn serve_admin(addr: SocketAddr, published: Arc<Published>) -> std::io::Result<SocketAddr> {
    serve_admin_on(TcpListener::bind(addr)?, published)
}

/// [`serve_admin`] on a socket already bound (or passed by a takeover).
pub fn serve_admin_on(
    listener: TcpListener,
    published: Arc<Published>,
) -> std::io::Result<SocketAddr> {
    // A passed socket may be non-blocking; this thread blocks in accept.
    listener.set_nonblocking(false)?;
    let bound = listener.local_addr()?;
    let active = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    std::thread::Builder::new()
        .name("admin".into())
        .spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else {
                    // EMFILE and friends: do not spin.
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                use std::sync::atomic::Ordering;
                if active.fetch_add(1, Ordering::AcqRel) >= ADMIN_MAX_CONNECTIONS {
                    active.fetch_sub(1, Ordering::AcqRel);
                    continue; // dropped: closed at once
                }
                let (published, done) = (published.clone(), active.clone());
                let spawned =
                    std::thread::Builder::new()
                        .name("admin-conn".into())
                        .spawn(move || {
                            serve_admin_connection(stream, &published);
                            done.fetch_sub(1, Ordering::AcqRel);
                        });
                if spawned.is_err() {
                    active.fetch_sub(1, Ordering::AcqRel);
                }
            }
        })?;
    info!(address = %bound, "admin listener: /metrics, /healthz");
    Ok(bound)
}

/// Admin connections served at once; more are closed at accept.
pub const ADMIN_MAX_CONNECTIONS: usize = 16;
/// The whole of one admin exchange: request in, answer out.
pub const ADMIN_DEADLINE: Duration = Duration::from_secs(5);

fn serve_admin_connection(mut stream: std::net::TcpStream, published: &Published) {
    let deadline = std::time::Instant::now() + ADMIN_DEADLINE;
    let left = || deadline.saturating_duration_since(std::time::Instant::now());
    let mut buf = [0u8; 4096];
    let mut len = 0;
    while len < buf.len() {
        let wait = left();
        if wait.is_zero() || stream.set_read_timeout(Some(wait)).is_err() {
            return;
        }
        match stream.read(&mut buf[len..]) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                len += n;
                if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
        }
    }
    let line = String::from_utf8_lossy(&buf[..len]);
    let path = line.split_whitespace().nth(1).unwrap_or("");
    let (status, ctype, body) = match path {
        "/metrics" => ("200 OK", "text/plain; version=0.0.4", published.render()),
        "/healthz" => ("200 OK", "text/plain", "ok\n".to_string()),
        _ => (
            "404 Not Found",
            "text/plain",
            "not found: try /metrics or /healthz\n".to_string(),
        ),
    };
    let wait = left();
    if wait.is_zero() || stream.set_write_timeout(Some(wait)).is_err() {
        return;
    }
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}
