//! A minimal HTTP/1.1 keep-alive client for the load generator: one request
//! written in a single `write`, the answer read until its `Content-Length`.
//! A general client spends more CPU per request than the server under test,
//! and on a small machine that CPU comes out of the server's share.

use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Where to send: `http://host:port/path` split once.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub path: String,
}

impl Target {
    /// Parses `http://127.0.0.1:4242/webhook` (plain HTTP, an IP address).
    pub fn parse(url: &str) -> anyhow::Result<Self> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| anyhow::anyhow!("expected an http:// URL, found {url:?}"))?;
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        Ok(Self {
            addr: authority.parse()?,
            path: format!("/{path}"),
        })
    }
}

/// One keep-alive connection; reconnects after the server closes it.
#[derive(Debug)]
pub struct Connection {
    target: Target,
    stream: Option<TcpStream>,
    request: Vec<u8>,
    response: Vec<u8>,
}

impl Connection {
    pub fn new(target: Target) -> Self {
        Self {
            target,
            stream: None,
            request: Vec::with_capacity(4096),
            response: Vec::with_capacity(1024),
        }
    }

    /// POSTs `body` with a `Stripe-Signature`; returns the status code.
    pub async fn post(&mut self, signature: &str, body: &[u8]) -> io::Result<u16> {
        self.request.clear();
        self.request.extend_from_slice(
            format!(
                "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
                 Stripe-Signature: {signature}\r\nContent-Length: {}\r\n\r\n",
                self.target.path,
                self.target.addr,
                body.len()
            )
            .as_bytes(),
        );
        self.request.extend_from_slice(body);
        let result = self.exchange().await;
        if result.is_err() {
            self.stream = None;
        }
        result
    }

    async fn exchange(&mut self) -> io::Result<u16> {
        if self.stream.is_none() {
            let stream = TcpStream::connect(self.target.addr).await?;
            stream.set_nodelay(true)?;
            self.stream = Some(stream);
        }
        let stream = self.stream.as_mut().ok_or(io::ErrorKind::NotConnected)?;
        stream.write_all(&self.request).await?;
        self.response.clear();
        let (head_end, status, length, close) = loop {
            if let Some(parsed) = parse_head(&self.response) {
                break parsed;
            }
            read_more(stream, &mut self.response).await?;
        };
        while self.response.len() < head_end + length {
            read_more(stream, &mut self.response).await?;
        }
        if close {
            self.stream = None;
        }
        Ok(status)
    }
}

async fn read_more(stream: &mut TcpStream, into: &mut Vec<u8>) -> io::Result<()> {
    let mut chunk = [0u8; 4096];
    let read = stream.read(&mut chunk).await?;
    if read == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    into.extend_from_slice(&chunk[..read]);
    Ok(())
}

/// Once the head is complete: (its length, status, Content-Length, close?).
fn parse_head(buffer: &[u8]) -> Option<(usize, u16, usize, bool)> {
    let end = buffer.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&buffer[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let (mut length, mut close) = (0, false);
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = value.parse().ok()?;
            } else if name.eq_ignore_ascii_case("connection") {
                close = value.eq_ignore_ascii_case("close");
            }
        }
    }
    Some((end, status, length, close))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_are_parsed_once_complete() {
        assert_eq!(
            parse_head(b"HTTP/1.1 200 OK\r\ncontent-length: 17\r\n"),
            None
        );
        let head = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 5\r\nconnection: close\r\n\r\nhello";
        assert_eq!(parse_head(head), Some((head.len() - 5, 503, 5, true)));
    }

    #[test]
    fn targets_split_address_and_path() {
        let target = Target::parse("http://127.0.0.1:4242/webhook").unwrap();
        assert_eq!(target.addr.port(), 4242);
        assert_eq!(target.path, "/webhook");
        assert!(Target::parse("https://x/").is_err());
    }
}
