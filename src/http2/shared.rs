//! The client stream, shared between `h2` and the connection task, so that
//! the task gets the socket back once `h2` is done with it.
//!
//! `h2` owns the I/O object it is given and has no way to return it: when
//! its connection ends (GOAWAY after a protocol error, drain, idle) the
//! socket would be closed by dropping it, and a close with the client's
//! later bytes still unread is a TCP reset, which can destroy the GOAWAY
//! before the client reads it. Through this handle the task keeps a second
//! reference and, after dropping `h2`'s connection, closes the stream with
//! a lingering close (`io::PollClose`) as HTTP/1.1 does.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use monoio::io::poll_io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::io::PollClose;

/// `h2`'s end of the stream. Only `h2`'s connection polls it, from one task,
/// one call at a time, so the borrow is never contended; were it ever, the
/// call fails as an I/O error rather than panicking.
pub(super) struct SharedIo<T>(Rc<RefCell<T>>);

/// The connection task's end: the stream, back once `h2` dropped its end.
pub(super) struct Owner<T>(Rc<RefCell<T>>);

pub(super) fn share<T>(io: T) -> (SharedIo<T>, Owner<T>) {
    let io = Rc::new(RefCell::new(io));
    (SharedIo(io.clone()), Owner(io))
}

impl<T: PollClose> Owner<T> {
    /// Lingering close. Call it after dropping `h2`'s connection (and with
    /// it the `SharedIo`); if something still held the stream, it is only
    /// dropped.
    pub(super) async fn linger_close(self) {
        if let Ok(cell) = Rc::try_unwrap(self.0) {
            cell.into_inner().linger_close().await;
        }
    }
}

fn busy() -> io::Error {
    io::Error::other("HTTP/2 client stream used from two places at once")
}

impl<T: AsyncRead + Unpin> AsyncRead for SharedIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.0.try_borrow_mut() {
            Ok(mut io) => Pin::new(&mut *io).poll_read(cx, buf),
            Err(_) => Poll::Ready(Err(busy())),
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for SharedIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.0.try_borrow_mut() {
            Ok(mut io) => Pin::new(&mut *io).poll_write(cx, data),
            Err(_) => Poll::Ready(Err(busy())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.0.try_borrow_mut() {
            Ok(mut io) => Pin::new(&mut *io).poll_flush(cx),
            Err(_) => Poll::Ready(Err(busy())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.0.try_borrow_mut() {
            Ok(mut io) => Pin::new(&mut *io).poll_shutdown(cx),
            Err(_) => Poll::Ready(Err(busy())),
        }
    }
}
