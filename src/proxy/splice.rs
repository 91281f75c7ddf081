//! Moves body bytes between two sockets through a pipe (io_uring SPLICE), so
//! they never enter user memory. Used when the client side is a kernel-TLS
//! socket: the kernel encrypts or decrypts on the way.

use std::io;
use std::time::{Duration, Instant};

use monoio::io::splice::{SpliceDestination, SpliceSource};
use monoio::net::{Pipe, TcpStream};

use super::WorkerContext;

/// A pipe holds 64 KiB by default; ask for no more per splice.
const PIPE_CHUNK: u64 = 64 * 1024;
/// Idle pipes kept per core.
const MAX_IDLE_PIPES: usize = 64;

/// (read end, write end)
pub(crate) type PipePair = (Pipe, Pipe);

pub(crate) enum Side {
    Source,
    Destination,
}

pub(crate) struct SpliceFailure {
    /// Bytes that reached the destination before the failure.
    pub moved: u64,
    pub side: Side,
    pub error: io::Error,
}

/// How long a splice may wait: per read from the source, per write to the
/// destination, and in all (e.g. a request body's deadline).
pub(crate) struct SpliceLimits {
    pub source: Duration,
    pub destination: Duration,
    pub deadline: Option<Instant>,
}

impl SpliceLimits {
    fn wait(&self, per_op: Duration) -> Duration {
        match self.deadline {
            Some(d) => per_op.min(d.saturating_duration_since(Instant::now())),
            None => per_op,
        }
    }
}

/// Moves exactly `len` bytes from `src` to `dst`. Never asks the source for
/// more than remains, so the next message on a kept-alive socket stays there.
/// A wait that runs out fails with `TimedOut` on the side that was waited on.
pub(crate) async fn splice_exact(
    src: &mut TcpStream,
    dst: &mut TcpStream,
    pipe: &mut PipePair,
    len: u64,
    limits: &SpliceLimits,
) -> Result<(), SpliceFailure> {
    let mut moved = 0u64;
    let fail = |moved, side, error| Err(SpliceFailure { moved, side, error });
    while moved < len {
        let want = (len - moved).min(PIPE_CHUNK) as u32;
        let wait = limits.wait(limits.source);
        let got = match monoio::time::timeout(wait, src.splice_to_pipe(&mut pipe.1, want)).await {
            Ok(Ok(0)) => return fail(moved, Side::Source, io::ErrorKind::UnexpectedEof.into()),
            Ok(Ok(n)) => n,
            Ok(Err(e)) => return fail(moved, Side::Source, e),
            Err(_) => return fail(moved, Side::Source, io::ErrorKind::TimedOut.into()),
        };
        let mut in_pipe = got;
        while in_pipe > 0 {
            let wait = limits.wait(limits.destination);
            match monoio::time::timeout(wait, dst.splice_from_pipe(&mut pipe.0, in_pipe)).await {
                Ok(Ok(0)) => {
                    return fail(moved, Side::Destination, io::ErrorKind::WriteZero.into())
                }
                Ok(Ok(n)) => {
                    in_pipe -= n;
                    moved += u64::from(n);
                }
                Ok(Err(e)) => return fail(moved, Side::Destination, e),
                Err(_) => return fail(moved, Side::Destination, io::ErrorKind::TimedOut.into()),
            }
        }
    }
    Ok(())
}

/// A clean pipe from this core's pool, or a new one.
pub(crate) fn take_pipe(ctx: &WorkerContext) -> Option<PipePair> {
    if let Some(p) = ctx.pipes.borrow_mut().pop() {
        return Some(p);
    }
    monoio::net::unix::new_pipe().ok()
}

/// Returns a pipe after a splice that completed (so it is empty). A pipe
/// from a failed splice may hold bytes and must be dropped instead.
pub(crate) fn return_pipe(ctx: &WorkerContext, pipe: PipePair) {
    let mut pipes = ctx.pipes.borrow_mut();
    if pipes.len() < MAX_IDLE_PIPES {
        pipes.push(pipe);
    }
}
