//! A TCP proxy a test controls, to take a dependency away from one service
//! under test (and give it back) while other tests keep using the real one.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy does with bytes and connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Forward both ways.
    Forward,
    /// Keep every connection open but move no bytes: a peer that hangs.
    Freeze,
    /// Close every connection and refuse new ones: a peer that is gone.
    Refuse,
    /// New connections carry PostgreSQL's start-up exchange (up to the
    /// server's first ReadyForQuery), then hang: a server that accepts
    /// connections but answers no query.
    HangAfterStartup,
}

/// The mode, and how many times the proxy was cut: a connection ends when
/// the count passes the one it was opened under. A watch keeps only the
/// latest value, so a cut followed at once by a restore would otherwise
/// leave every connection as it was.
#[derive(Debug, Clone, Copy)]
struct State {
    mode: Mode,
    cuts: u64,
}

impl State {
    /// Whether the proxy was cut since a connection opened under `born`.
    fn cut_since(&self, born: u64) -> bool {
        self.cuts != born
    }
}

/// Forwards connections to `upstream` until told otherwise.
#[derive(Debug)]
pub struct TcpProxy {
    addr: SocketAddr,
    mode: watch::Sender<State>,
    accept_task: tokio::task::JoinHandle<()>,
}

impl TcpProxy {
    /// Listens on a free loopback port and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let (mode, _) = watch::channel(State {
            mode: Mode::Forward,
            cuts: 0,
        });
        let accept_task = tokio::spawn(accept_loop(listener, upstream, mode.clone()));
        Self {
            addr,
            mode,
            accept_task,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Drops every open connection and refuses new ones, like a dead host.
    pub fn cut(&self) {
        self.mode.send_modify(|state| {
            state.mode = Mode::Refuse;
            state.cuts += 1;
        });
    }

    fn set(&self, mode: Mode) {
        self.mode.send_modify(|state| state.mode = mode);
    }

    /// Stops moving bytes but keeps connections open, like a hung host.
    /// Cut before restoring: a frozen connection may have lost bytes.
    pub fn freeze(&self) {
        self.set(Mode::Freeze);
    }

    /// New connections complete PostgreSQL's start-up, then no byte moves
    /// either way, until cut: PostgreSQL stuck after accepting connections,
    /// or a pooler in front of a server that stopped answering (PgBouncer
    /// authenticates clients itself). Connections already open keep going.
    /// Cut before restoring.
    pub fn hang_after_startup(&self) {
        self.set(Mode::HangAfterStartup);
    }

    /// Lets new connections through again.
    pub fn restore(&self) {
        self.set(Mode::Forward);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.cut();
        self.accept_task.abort();
    }
}

async fn accept_loop(listener: TcpListener, upstream: SocketAddr, mode: watch::Sender<State>) {
    while let Ok((client, _)) = listener.accept().await {
        // Subscribe before looking at the mode, so no change is missed.
        let mut changes = mode.subscribe();
        let current = *changes.borrow_and_update();
        let born = current.cuts;
        match current.mode {
            Mode::Refuse => drop(client),
            Mode::Freeze => {
                tokio::spawn(async move {
                    let _ = changes.wait_for(|s| s.cut_since(born)).await;
                    drop(client);
                });
            }
            Mode::Forward => {
                tokio::spawn(forward(client, upstream, changes, born));
            }
            Mode::HangAfterStartup => {
                tokio::spawn(forward_startup(client, upstream, changes, born));
            }
        }
    }
}

/// Forwards PostgreSQL's start-up exchange, then holds both ends silent
/// until cut.
async fn forward_startup(
    mut client: TcpStream,
    upstream: SocketAddr,
    mut changes: watch::Receiver<State>,
    born: u64,
) {
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    let (mut client_read, mut client_write) = client.split();
    let (mut server_read, mut server_write) = server.split();
    let up = async {
        let mut buffer = [0_u8; 4096];
        loop {
            match client_read.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if server_write.write_all(&buffer[..n]).await.is_err() {
                        return;
                    }
                }
            }
        }
    };
    // Server messages are a type byte and a big-endian length that counts
    // itself; the start-up ends with the first ReadyForQuery ('Z').
    let down = async {
        let mut buffer = [0_u8; 4096];
        let mut unparsed = Vec::new();
        loop {
            let n = match server_read.read(&mut buffer).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => n,
            };
            if client_write.write_all(&buffer[..n]).await.is_err() {
                return false;
            }
            unparsed.extend_from_slice(&buffer[..n]);
            while unparsed.len() >= 5 {
                let length =
                    u32::from_be_bytes([unparsed[1], unparsed[2], unparsed[3], unparsed[4]]);
                let end = 1 + usize::try_from(length).unwrap_or(usize::MAX);
                if unparsed.len() < end {
                    break;
                }
                if unparsed[0] == b'Z' {
                    return true;
                }
                unparsed.drain(..end);
            }
        }
    };
    let started = tokio::select! {
        () = up => false,
        started = down => started,
        _ = changes.wait_for(|s| s.cut_since(born)) => false,
    };
    if started {
        let _ = changes.wait_for(|s| s.cut_since(born)).await;
    }
}

async fn forward(
    mut client: TcpStream,
    upstream: SocketAddr,
    mut changes: watch::Receiver<State>,
    born: u64,
) {
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => return,
        _ = changes.wait_for(|s| s.mode == Mode::Freeze || s.cut_since(born)) => {}
    }
    // Frozen: hold both ends, silent, until cut.
    let _ = changes.wait_for(|s| s.cut_since(born)).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A cut followed at once by a restore still ends the connections
    /// open before it (a watch keeps only the latest mode: before the
    /// count of cuts, they were never dropped).
    #[tokio::test]
    async fn a_cut_at_once_restored_still_drops_the_open_connections() {
        let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream_addr = upstream.local_addr().unwrap();
        let echo = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((mut stream, _)) = upstream.accept().await {
                let mut byte = [0_u8; 1];
                if stream.read_exact(&mut byte).await.is_ok() {
                    let _ = stream.write_all(&byte).await;
                }
                held.push(stream);
            }
        });
        let proxy = TcpProxy::start(upstream_addr).await;
        let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
        client.write_all(b"x").await.unwrap();
        let mut byte = [0_u8; 1];
        tokio::time::timeout(Duration::from_secs(10), client.read_exact(&mut byte))
            .await
            .expect("forwarded within 10 s")
            .unwrap();
        assert_eq!(&byte, b"x", "forwarded before the cut");

        proxy.cut();
        proxy.restore();
        let read = tokio::time::timeout(Duration::from_secs(10), client.read(&mut byte))
            .await
            .expect("the connection ends after the cut");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");

        // New connections go through again.
        let mut again = TcpStream::connect(proxy.addr()).await.unwrap();
        again.write_all(b"y").await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), again.read_exact(&mut byte))
            .await
            .expect("forwarded within 10 s")
            .unwrap();
        assert_eq!(&byte, b"y");
        echo.abort();
    }
}
