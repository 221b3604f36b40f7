//! One hostile request as raw bytes, how they are paced, and sending it
//! over its own TCP connection (an HTTP client would refuse to send most
//! of the corpus: a lying `Content-Length`, broken chunks, non-ASCII).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;

/// The bytes of one request and how to send them.
#[derive(Clone)]
pub struct Attack {
    pub bytes: Vec<u8>,
    pub pacing: Pacing,
}

impl std::fmt::Debug for Attack {
    // A mebibyte of body is no help in a failure message.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = &self.bytes[..self.bytes.len().min(160)];
        f.debug_struct("Attack")
            .field("bytes", &String::from_utf8_lossy(shown))
            .field("len", &self.bytes.len())
            .field("pacing", &self.pacing)
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pacing {
    /// All bytes in one go, then wait for the answer (the connection held).
    AtOnce,
    /// All bytes, then close the write side (FIN): the body ends early.
    HalfClose,
    /// `bytes[..from]` at once, then one byte every `every`.
    Dribble { from: usize, every: Duration },
}

/// How a request ended, seen from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A response head arrived: its status, and the `error` of a JSON body
    /// when there was one (empty otherwise).
    Answered { status: u16, reason: String },
    /// The server closed (or reset) the connection before any answer.
    Closed,
    /// Neither an answer nor a close within the deadline.
    NoAnswer,
    /// The connection could not be opened.
    ConnectFailed(String),
}

/// The start of `POST /webhook`, to which headers are added.
#[derive(Debug, Clone)]
pub struct Head(Vec<u8>);

impl Head {
    pub fn post() -> Self {
        Self(
            b"POST /webhook HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                .to_vec(),
        )
    }

    /// Adds `name: value`, the value's bytes as they are.
    pub fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.0.extend_from_slice(name.as_bytes());
        self.0.extend_from_slice(b": ");
        self.0.extend_from_slice(value.as_ref());
        self.0.extend_from_slice(b"\r\n");
        self
    }

    pub fn signature(self, value: impl AsRef<[u8]>) -> Self {
        self.header("Stripe-Signature", value)
    }

    /// The head with an honest `Content-Length`, and `body`.
    pub fn body(self, body: &[u8]) -> Vec<u8> {
        let mut bytes = self.header("Content-Length", body.len().to_string()).end();
        bytes.extend_from_slice(body);
        bytes
    }

    /// The head with `Transfer-Encoding: chunked`, and `body` framed in
    /// chunks of `chunk` bytes, terminated.
    pub fn chunked(self, body: &[u8], chunk: usize) -> Vec<u8> {
        let mut bytes = self.header("Transfer-Encoding", "chunked").end();
        bytes.extend(chunks(body, chunk));
        bytes
    }

    /// The head, ended by its blank line.
    pub fn end(mut self) -> Vec<u8> {
        self.0.extend_from_slice(b"\r\n");
        self.0
    }
}

/// `body` framed in chunks of `size` bytes, terminated.
pub fn chunks(body: &[u8], size: usize) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(body.len() + body.len() / size.max(1) * 8 + 8);
    for part in body.chunks(size.max(1)) {
        bytes.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        bytes.extend_from_slice(part);
        bytes.extend_from_slice(b"\r\n");
    }
    bytes.extend_from_slice(b"0\r\n\r\n");
    bytes
}

/// Sends `attack` on a connection of its own and waits up to `deadline`
/// for the answer or the close. The bytes are written while the answer is
/// read, so an answer that comes before the body is sent (a refused head)
/// is seen, and a write the server cut short is no error of the client.
pub async fn send(addr: SocketAddr, attack: &Attack, deadline: Duration) -> Outcome {
    let connect = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(addr)).await;
    let stream = match connect {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => return Outcome::ConnectFailed(error.to_string()),
        Err(_) => return Outcome::ConnectFailed("connect timed out".to_owned()),
    };
    let _ = stream.set_nodelay(true);
    let (mut reader, mut writer) = stream.into_split();
    let write = async {
        let written = match attack.pacing {
            Pacing::AtOnce | Pacing::HalfClose => writer.write_all(&attack.bytes).await,
            Pacing::Dribble { from, every } => {
                dribble(
                    &mut writer,
                    &attack.bytes,
                    from.min(attack.bytes.len()),
                    every,
                )
                .await
            }
        };
        if written.is_ok() && attack.pacing == Pacing::HalfClose {
            let _ = writer.shutdown().await;
        }
        // Written or cut short: the answer decides. Keep the write half
        // (dropping it would close it) until the read is done.
        std::future::pending::<()>().await;
    };
    let outcome = tokio::time::timeout(deadline, async {
        tokio::select! {
            outcome = read_answer(&mut reader) => outcome,
            () = write => Outcome::NoAnswer,
        }
    })
    .await;
    outcome.unwrap_or(Outcome::NoAnswer)
}

async fn dribble(
    writer: &mut tokio::net::tcp::OwnedWriteHalf,
    bytes: &[u8],
    from: usize,
    every: Duration,
) -> std::io::Result<()> {
    writer.write_all(&bytes[..from]).await?;
    for byte in &bytes[from..] {
        tokio::time::sleep(every).await;
        writer.write_all(std::slice::from_ref(byte)).await?;
    }
    Ok(())
}

/// Reads until a whole response (by its `Content-Length`), or until the
/// server closes: a status line already read still counts as the answer.
async fn read_answer(reader: &mut OwnedReadHalf) -> Outcome {
    let mut received = Vec::new();
    let mut buffer = [0_u8; 4096];
    loop {
        if let Some(outcome) = parse(&received, false) {
            return outcome;
        }
        match reader.read(&mut buffer).await {
            Ok(0) | Err(_) => return parse(&received, true).unwrap_or(Outcome::Closed),
            Ok(read) => received.extend_from_slice(&buffer[..read]),
        }
    }
}

/// The outcome of the bytes received so far: `None` while the response is
/// incomplete, unless the connection has `ended`.
fn parse(received: &[u8], ended: bool) -> Option<Outcome> {
    let head_end = received.windows(4).position(|w| w == b"\r\n\r\n");
    let head_bytes = head_end.map_or(received, |end| &received[..end]);
    let head = String::from_utf8_lossy(head_bytes);
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let length: Option<usize> = lines
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse().ok());
    let body = head_end.map_or(&[][..], |end| &received[end + 4..]);
    let complete = head_end.is_some() && length.is_none_or(|length| body.len() >= length);
    if !complete && !ended {
        return None;
    }
    let reason = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|value| value["error"].as_str().map(str::to_owned))
        .unwrap_or_default();
    Some(Outcome::Answered { status, reason })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_are_complete_by_their_length_or_by_the_close() {
        let full = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 14\r\n\r\n{\"error\":\"no\"}";
        assert_eq!(parse(&full[..full.len() - 1], false), None);
        assert_eq!(
            parse(full, false),
            Some(Outcome::Answered {
                status: 400,
                reason: "no".to_owned()
            })
        );
        assert_eq!(
            parse(b"HTTP/1.1 408 Request Timeout\r\n", true),
            Some(Outcome::Answered {
                status: 408,
                reason: String::new()
            })
        );
        assert_eq!(parse(b"", true), None);
    }

    #[test]
    fn heads_frame_bodies_honestly_or_in_chunks() {
        let bytes = Head::post().signature("t=1,v1=a").body(b"{}");
        assert!(bytes.ends_with(b"Content-Length: 2\r\n\r\n{}"));
        let bytes = Head::post().chunked(b"abcde", 2);
        assert!(bytes.ends_with(b"chunked\r\n\r\n2\r\nab\r\n2\r\ncd\r\n1\r\ne\r\n0\r\n\r\n"));
    }
}
