//! The webhook listener's socket, bound with a listen backlog of its own.
//!
//! `std::net::TcpListener::bind` always asks the kernel for a backlog of
//! 128. A burst of new connections larger than that (many senders at once,
//! or a flood of slow ones) overflows the accept queue before ingest's
//! accept loop runs: Linux then drops handshakes (and answers SYNs with
//! cookies), and some connections are reset without their request ever
//! reaching ingest. Measured: of 2,400 connections opened at once on a
//! busy two-core machine, 16 and 23 of the 800 whose heads should have been
//! refused were reset that way instead with a backlog of 128 (48 in a CI
//! run); none with a backlog that holds them all.

use std::io;
use std::net::{SocketAddr, TcpListener};

use socket2::{Domain, Protocol, Socket, Type};

/// The kernel's cap on a listen backlog (`net.core.somaxconn`), where
/// Linux shows it.
pub fn kernel_cap() -> Option<u32> {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// A listening socket on `address` whose accept queue holds up to
/// `backlog` connections. The kernel quietly uses `net.core.somaxconn`
/// when that is smaller, so that is logged as a warning.
/// `SO_REUSEADDR` is set, as `std` sets it, so a restart can bind the port
/// while the previous process's connections linger in `TIME_WAIT`.
pub fn bind(address: SocketAddr, backlog: u32) -> io::Result<TcpListener> {
    if let Some(cap) = kernel_cap().filter(|cap| *cap < backlog) {
        tracing::warn!(
            asked = backlog,
            kernel_cap = cap,
            "INGEST_LISTEN_BACKLOG is above net.core.somaxconn; the kernel uses net.core.somaxconn instead"
        );
    }
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

    #[test]
    fn a_port_in_use_is_an_error() {
        let first = bind(SocketAddr::from(([127, 0, 0, 1], 0)), 16).unwrap();
        let taken = first.local_addr().unwrap();
        assert!(bind(taken, 16).is_err());
    }
}
