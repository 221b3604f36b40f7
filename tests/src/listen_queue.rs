//! The kernel's view of a listening socket: how many connections wait in
//! its accept queue, from `/proc/net/tcp`. A client-side count cannot say
//! it: a connect completes on the client even when the server drops the
//! handshake's last ACK because the queue is full.

/// Connections whose handshake is complete and which wait to be accepted
/// on the IPv4 socket listening on `port`, or `None` when there is none.
pub fn accept_queue_length(port: u16) -> Option<usize> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    table
        .lines()
        .skip(1)
        .find_map(|row| listening_row(row, port))
}

/// One row of `/proc/net/tcp`: `sl local_address rem_address st
/// tx_queue:rx_queue …`, all in hex. For a socket in `LISTEN` (`0A`) the
/// kernel puts its accept queue's length in `rx_queue`.
fn listening_row(row: &str, port: u16) -> Option<usize> {
    let mut fields = row.split_whitespace();
    let local = fields.nth(1)?;
    let state = fields.nth(1)?;
    let queues = fields.next()?;
    let (_, local_port) = local.split_once(':')?;
    if state != "0A" || u16::from_str_radix(local_port, 16).ok()? != port {
        return None;
    }
    let (_, received) = queues.split_once(':')?;
    usize::from_str_radix(received, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_listening_row_and_skips_the_others() {
        let listening = "   3: 0100007F:1F90 00000000:0000 0A 00000000:00000029 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0";
        let established = "   4: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0 20 4 30 10 -1";
        assert_eq!(listening_row(listening, 8080), Some(41));
        assert_eq!(listening_row(listening, 8081), None);
        assert_eq!(listening_row(established, 8080), None);
    }

    #[test]
    fn a_listener_with_nothing_waiting_has_an_empty_queue() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert_eq!(accept_queue_length(port), Some(0));
        let _client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        // The server side may take the handshake's last ACK a moment
        // after the client's connect returned.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while accept_queue_length(port) != Some(1) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(accept_queue_length(port), Some(1));
    }
}
