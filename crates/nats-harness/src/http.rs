//! A GET on a nats-server's monitoring port (HTTP/1.0, one request per connection).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// The most a monitoring answer may be; the endpoints read here answer a few kilobytes.
const MAX_ANSWER_BYTES: u64 = 1 << 20;

/// `GET path` on `addr`: the status code and the body parsed as JSON.
pub(crate) fn get_json(addr: SocketAddr, path: &str) -> Result<(u16, serde_json::Value), crate::Error> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut answer = Vec::new();
    stream.take(MAX_ANSWER_BYTES).read_to_end(&mut answer)?;
    let text = String::from_utf8(answer)?;
    let (head, body) = text.split_once("\r\n\r\n").ok_or("monitoring answer without a header end")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("monitoring answer without a status: {head}"))?;
    Ok((status, serde_json::from_str(body)?))
}
