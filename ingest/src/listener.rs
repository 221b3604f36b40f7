//! The webhook listener's socket, bound with a listen backlog of its own.
//!
//! `std::net::TcpListener::bind` always asks the kernel for a backlog of
//! 128. A burst of new connections larger than that (many senders at once,
//! or a flood of slow ones) overflows the accept queue before ingest's
//! accept loop runs: Linux then drops handshakes or answers them with SYN
//! cookies, and some connections are reset without their request ever
//! reaching ingest. Measured: 2,400 connections opened at once on a busy
//! two-core machine had 16 to 23 of them reset that way with a backlog of
//! 128, none with one that holds them all.

use std::io;
use std::net::{SocketAddr, TcpListener};

use socket2::{Domain, Protocol, Socket, Type};

/// A listening socket on `address` whose accept queue holds up to
/// `backlog` connections (the kernel caps it at `net.core.somaxconn`).
/// `SO_REUSEADDR` is set, as `std` sets it, so a restart can bind the port
/// while the previous process's connections linger in `TIME_WAIT`.
pub fn bind(address: SocketAddr, backlog: u32) -> io::Result<TcpListener> {
    let socket = Socket::new(
        Domain::for_address(address),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.bind(&address.into())?;
    socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_port_zero_to_a_free_port_and_accepts() {
        let listener = bind(SocketAddr::from(([127, 0, 0, 1], 0)), 16).unwrap();
        let address = listener.local_addr().unwrap();
        assert_ne!(address.port(), 0);
        let _client = std::net::TcpStream::connect(address).unwrap();
        let (_server, peer) = listener.accept().unwrap();
        assert!(peer.ip().is_loopback());
    }

    /// The kernel completes handshakes into the accept queue without the
    /// process: with nothing accepted, a listener takes as many
    /// connections as its backlog allows (one more, on Linux), and drops
    /// the SYNs of the rest. With `std`'s 128 the 130th connect times out.
    #[test]
    fn the_accept_queue_holds_the_backlog_asked_for() {
        let listener = bind(SocketAddr::from(([127, 0, 0, 1], 0)), 512).unwrap();
        let address = listener.local_addr().unwrap();
        let held: Vec<_> = (0..300)
            .map(|i| {
                std::net::TcpStream::connect_timeout(&address, std::time::Duration::from_secs(2))
                    .unwrap_or_else(|error| panic!("connection {i} not queued: {error}"))
            })
            .collect();
        assert_eq!(held.len(), 300);
    }

    #[test]
    fn a_port_in_use_is_an_error() {
        let first = bind(SocketAddr::from(([127, 0, 0, 1], 0)), 16).unwrap();
        let taken = first.local_addr().unwrap();
        assert!(bind(taken, 16).is_err());
    }
}
