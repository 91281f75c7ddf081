//! Socket options and a non-blocking peek that monoio does not expose, on any
//! socket that has a raw fd (monoio's `TcpStream` has `AsRawFd` but not
//! `AsFd`, so socket2 is reached through a borrowed fd).
//!
//! These exist so that every connection has a bound: an abortive close for
//! a response that must read as aborted, `TCP_USER_TIMEOUT` so the kernel
//! gives up on a peer that stopped reading (Linux otherwise keeps a
//! zero-window connection alive for as long as the peer answers probes), and
//! a peek that tells whether an idle pooled backend connection is still clean.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::Duration;

use socket2::SockRef;

fn with_sock<T>(s: &impl AsRawFd, f: impl FnOnce(SockRef<'_>) -> T) -> T {
    // SAFETY: the fd belongs to `s`, which the caller borrows for the whole
    // call, so it stays open while the borrowed fd and the SockRef exist.
    let fd = unsafe { BorrowedFd::borrow_raw(s.as_raw_fd()) };
    f(SockRef::from(&fd))
}

/// Makes the next close send a reset instead of a FIN: the peer sees the
/// stream end in an error, never as a clean (possibly truncated) end.
pub fn set_abortive_close(s: &impl AsRawFd) {
    let _ = with_sock(s, |sock| sock.set_linger(Some(Duration::ZERO)));
}

/// Bounds how long sent data may stay unacknowledged (zero-window probes
/// included) before the kernel drops the connection.
pub fn set_user_timeout(s: &impl AsRawFd, timeout: Duration) -> io::Result<()> {
    with_sock(s, |sock| sock.set_tcp_user_timeout(Some(timeout)))
}

/// What an idle socket holds right now, without waiting or consuming.
#[derive(Debug, PartialEq, Eq)]
pub enum Idle {
    /// Nothing to read: the peer has said nothing since our last read.
    Quiet,
    /// Bytes are waiting, the peer closed, or the socket has an error.
    NotQuiet,
}

pub fn peek_idle(s: &impl AsRawFd) -> Idle {
    let mut byte = [MaybeUninit::<u8>::uninit(); 1];
    match with_sock(s, |sock| {
        sock.recv_with_flags(&mut byte, libc::MSG_PEEK | libc::MSG_DONTWAIT)
    }) {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Idle::Quiet,
        _ => Idle::NotQuiet,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn peek_tells_quiet_from_data_and_eof_without_consuming() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let mut client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (server, _) = listener.accept().expect("accept");
        assert_eq!(peek_idle(&server), Idle::Quiet);
        client.write_all(b"x").expect("write");
        client.flush().expect("flush");
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(peek_idle(&server), Idle::NotQuiet);
        assert_eq!(
            peek_idle(&server),
            Idle::NotQuiet,
            "a peek consumes nothing"
        );
        let (listener2, _) = (TcpListener::bind("127.0.0.1:0").expect("bind"), ());
        let closing = TcpStream::connect(listener2.local_addr().expect("addr")).expect("connect");
        let (server2, _) = listener2.accept().expect("accept");
        drop(closing);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(peek_idle(&server2), Idle::NotQuiet, "EOF is not quiet");
    }

    #[test]
    fn options_apply_to_a_real_socket() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        set_user_timeout(&client, Duration::from_secs(7)).expect("TCP_USER_TIMEOUT");
        let got = with_sock(&client, |s| s.tcp_user_timeout()).expect("read back");
        assert_eq!(got, Some(Duration::from_secs(7)));
        set_abortive_close(&client);
        let linger = with_sock(&client, |s| s.linger()).expect("read back");
        assert_eq!(linger, Some(Duration::ZERO));
    }
}
