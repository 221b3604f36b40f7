//! One bounded attempt to open an AMQP connection that, when given up,
//! takes its thread and socket with it.
//!
//! lapin's `Connection::connect` starts an io-loop thread that owns the
//! socket and opens the TCP (and TLS) stream itself; the future the caller
//! holds only waits for the handshake's outcome. Dropping that future on a
//! timeout stops nobody: the thread and its socket live on, waiting for a
//! peer that says nothing, until that peer closes (one thread and one
//! descriptor per timed-out attempt, and reconnect loops make many).
//!
//! So the stream is opened here, through `Connection::connector`, with the
//! very call lapin makes (`AMQPUriTcpExt::connect_with_config_async`, TLS for
//! amqps:// with the default configuration), and the attempt keeps a second
//! descriptor of the socket while the handshake runs. Giving the attempt up
//! (a timeout, an error, or the caller dropping it) shuts that socket down:
//! the io loop reads the end of the stream and its thread ends, closing the
//! socket. A TCP connect or TLS handshake still running when the attempt is
//! given up is abandoned, and the io loop is refused a stream from then on.
//! (That ends the thread at once with lapin's default backoff, which retries
//! nothing; properties with retries, `enable_auto_recover`, would keep it
//! through their delays, each retry refused, with no socket.)
//! Once the connection is open the descriptor is let go, so lapin's own
//! close alone ends the socket, and a reconnect by lapin (auto-recover)
//! opens a stream as lapin itself would.

use std::io;
use std::mem;
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsFd;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use lapin::tcp::{AMQPUriTcpExt, OwnedTLSConfig};
use lapin::uri::AMQPUri;
use lapin::{AsyncTcpStream, Connection, ConnectionProperties, ErrorKind};
use tokio::sync::watch;

use super::AttemptError;

/// Opens a connection to `uri` within `bound`, or gives the attempt up
/// leaving no thread or socket of it behind.
pub(super) async fn connect(
    uri: AMQPUri,
    properties: ConnectionProperties,
    bound: Duration,
) -> Result<Connection, AttemptError> {
    let attempt = Attempt::new();
    let guard = GiveUpOnDrop(Arc::clone(&attempt));
    let runtime = lapin::runtime::default_runtime()?;
    // The io loop's connect closure: the stream lapin would open, unless
    // the attempt is given up before or while it opens. Written in the call
    // so that the runtime's stream type is inferred, not named (lapin does
    // not export the runtime crate).
    let handshake = Connection::connector(
        uri,
        runtime,
        async move |uri: AMQPUri, runtime| {
            let mut given_up = attempt.given_up.subscribe();
            if *given_up.borrow_and_update() {
                return Err(given_up_error());
            }
            let tls = OwnedTLSConfig::default();
            let opening = AMQPUriTcpExt::connect_with_config_async(&uri, tls.as_ref(), &runtime);
            let stream = tokio::select! {
                opened = opening => opened.map_err(|error| {
                    // As lapin's own closure maps it.
                    if runtime.is_runtime_shutdown_error(&error) {
                        lapin::Error::from(ErrorKind::RuntimeShutdownError(Arc::new(error)))
                    } else {
                        lapin::Error::from(error)
                    }
                })?,
                _ = given_up.wait_for(|given_up| *given_up) => return Err(given_up_error()),
            };
            let socket = match &stream {
                AsyncTcpStream::Plain(tcp) => tcp.get_ref().as_fd().try_clone_to_owned(),
                AsyncTcpStream::Rustls(tls) => {
                    tls.get_ref().0.get_ref().as_fd().try_clone_to_owned()
                }
                // Only plain and rustls streams are built in (the workspace's
                // lapin features); another could not be shut down from here.
                _ => Err(io::Error::other(
                    "a TLS stream of a kind this build does not use",
                )),
            };
            attempt.hold(socket.map(TcpStream::from)?)?;
            Ok(stream)
        },
        properties,
    );
    match tokio::time::timeout(bound, handshake).await {
        Ok(Ok(connection)) => {
            guard.0.opened();
            Ok(connection)
        }
        Ok(Err(error)) => Err(AttemptError::Broker(error)),
        Err(_) => Err(AttemptError::Timeout(bound)),
    }
    // `guard` gives the attempt up here unless it opened.
}

/// What an attempt shares with the io loop's connect closure.
struct Attempt {
    /// Turns true when the attempt is given up, waking a TCP connect or TLS
    /// handshake that is still running in the io loop.
    given_up: watch::Sender<bool>,
    /// Where the attempt is, and the socket's second descriptor meanwhile.
    stage: Mutex<Stage>,
}

/// Where an attempt is.
enum Stage {
    /// The handshake runs; the socket once the io loop has a stream.
    Opening(Option<TcpStream>),
    /// The connection is open; lapin owns its socket alone.
    Opened,
    /// Nothing more may be opened for this attempt.
    GivenUp,
}

impl Attempt {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            given_up: watch::Sender::new(false),
            stage: Mutex::new(Stage::Opening(None)),
        })
    }

    fn stage(&self) -> MutexGuard<'_, Stage> {
        // The stage is replaced whole under the lock; a panic elsewhere
        // cannot have left it half-written.
        self.stage.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps the second descriptor of the socket the io loop was just
    /// given, unless the attempt ended meanwhile.
    fn hold(&self, socket: TcpStream) -> lapin::Result<()> {
        match &mut *self.stage() {
            Stage::Opening(held) => {
                // A stream opened again (lapin retrying the protocol header
                // on a fresh socket) replaces the one before, already dropped.
                *held = Some(socket);
                Ok(())
            }
            // A reconnect (auto-recover) of the open connection: lapin's alone.
            Stage::Opened => Ok(()),
            Stage::GivenUp => Err(given_up_error()),
        }
    }

    /// The connection opened: let the second descriptor go.
    fn opened(&self) {
        *self.stage() = Stage::Opened;
    }

    /// Shuts the socket down if the io loop has one, and stops any stream
    /// still opening. Does nothing to a connection that opened.
    fn give_up(&self) {
        let mut stage = self.stage();
        if matches!(*stage, Stage::Opened) {
            return;
        }
        if let Stage::Opening(Some(socket)) = mem::replace(&mut *stage, Stage::GivenUp) {
            // The io loop reads the end of the stream and its thread ends.
            // An error means the socket is no longer connected: nothing to end.
            let _ = socket.shutdown(Shutdown::Both);
        }
        self.given_up.send_replace(true);
    }
}

/// Gives the attempt up when dropped, however `connect` ended: returned,
/// or dropped by its caller mid-attempt.
struct GiveUpOnDrop(Arc<Attempt>);

impl Drop for GiveUpOnDrop {
    fn drop(&mut self) {
        self.0.give_up();
    }
}

/// The error the io loop gets for a stream asked after the attempt ended.
fn given_up_error() -> lapin::Error {
    io::Error::other("the connect attempt was given up").into()
}
