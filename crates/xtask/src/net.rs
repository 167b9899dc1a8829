//! The little networking the automation needs on 127.0.0.1: a free port, and a readiness GET.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use anyhow::{Context, Result};

/// Where [`free_port`] looks: below the kernel's ephemeral range (32768 and up on Linux), which
/// every outbound connection draws its local port from. A port the OS picked from that range
/// could be taken by some test's outbound connection between the probe and the server's bind
/// (seen as wrangler's "Address already in use"); ports here are only ever taken by a bind.
const PORTS: std::ops::Range<u16> = 20_000..32_000;

/// A port that was free on 127.0.0.1 a moment ago, never the same twice in one process, and
/// spread by the process id so that two runs seldom probe the same ones.
pub fn free_port() -> Result<u16> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let span = u32::from(PORTS.end - PORTS.start);
    let start = std::process::id().wrapping_mul(7_919) % span;
    for _ in 0..span {
        let offset = (start + NEXT.fetch_add(1, Ordering::Relaxed)) % span;
        let port = PORTS.start + offset as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    anyhow::bail!("no free port in {PORTS:?} on 127.0.0.1")
}

/// A minimal HTTP/1.1 GET against 127.0.0.1 (enough for readiness checks; tests use a real
/// client). Returns the status code and the body.
pub fn http_get(port: u16, path: &str) -> Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .context("no HTTP status line")?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}
