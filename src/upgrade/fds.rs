//! The upgrade socket's I/O: a SOCK_SEQPACKET Unix socket (one message per
//! packet, never split or merged), messages with at most one file
//! descriptor attached (SCM_RIGHTS), and the peer's credentials. std has no
//! SCM_RIGHTS and socket2 no control-message builder, hence the small
//! `unsafe` blocks around sendmsg/recvmsg.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::time::Duration;

use socket2::{Domain, SockAddr, Socket, Type};

use super::wire::{Message, MAX_MESSAGE};

/// Binds the upgrade socket at `path` (a leftover file from a process that
/// is gone, or from the process being taken over, is replaced), readable
/// and writable by this user only.
pub fn listen(path: &Path) -> io::Result<Socket> {
    let socket = Socket::new(Domain::UNIX, Type::SEQPACKET.cloexec(), None)?;
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    socket.bind(&SockAddr::unix(path)?)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    socket.listen(4)?;
    Ok(socket)
}

pub fn connect(path: &Path, timeout: Duration) -> io::Result<Socket> {
    let socket = Socket::new(Domain::UNIX, Type::SEQPACKET.cloexec(), None)?;
    socket.connect(&SockAddr::unix(path)?)?;
    socket.set_read_timeout(Some(timeout))?;
    socket.set_write_timeout(Some(timeout))?;
    Ok(socket)
}

/// The user id of the process at the other end (SO_PEERCRED).
pub fn peer_uid(socket: &Socket) -> io::Result<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cred`, which we own.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cred.uid)
}

/// Sends one message, with `fd` attached when given.
pub fn send(socket: &Socket, msg: &Message, fd: Option<BorrowedFd<'_>>) -> io::Result<()> {
    let bytes = msg.encode();
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    // u64 elements keep the control buffer aligned for cmsghdr.
    let mut control = [0u64; 8];
    // SAFETY: a zeroed msghdr is a valid empty header.
    let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
    hdr.msg_iov = &mut iov;
    hdr.msg_iovlen = 1;
    if let Some(fd) = fd {
        let raw: RawFd = fd.as_raw_fd();
        // SAFETY: CMSG_SPACE/LEN are pure arithmetic; the control buffer
        // (64 bytes) is larger than CMSG_SPACE(4), so CMSG_FIRSTHDR is
        // non-null and its data area lies inside `control`.
        unsafe {
            let space = libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) as usize;
            hdr.msg_control = control.as_mut_ptr().cast();
            hdr.msg_controllen = space;
            let cmsg = libc::CMSG_FIRSTHDR(&hdr);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as usize;
            std::ptr::copy_nonoverlapping(
                (&raw as *const RawFd).cast::<u8>(),
                libc::CMSG_DATA(cmsg),
                std::mem::size_of::<RawFd>(),
            );
        }
    }
    // SAFETY: hdr points at iov and control, both alive for the call.
    let n = unsafe { libc::sendmsg(socket.as_raw_fd(), &hdr, libc::MSG_NOSIGNAL) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    if n as usize != bytes.len() {
        return Err(io::Error::new(io::ErrorKind::WriteZero, "short send"));
    }
    Ok(())
}

/// Receives one message and the descriptor attached to it, if any.
pub fn recv(socket: &Socket) -> io::Result<(Message, Option<OwnedFd>)> {
    let mut buf = [MaybeUninit::<u8>::uninit(); MAX_MESSAGE + 1];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut control = [0u64; 8];
    // SAFETY: a zeroed msghdr is a valid empty header.
    let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
    hdr.msg_iov = &mut iov;
    hdr.msg_iovlen = 1;
    hdr.msg_control = control.as_mut_ptr().cast();
    hdr.msg_controllen = std::mem::size_of_val(&control);
    // SAFETY: hdr points at buffers we own, alive for the call.
    let n = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut hdr, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // Take ownership of every descriptor first, so none leaks on an error.
    let mut fds = Vec::new();
    // SAFETY: the kernel filled hdr's control area; CMSG_FIRSTHDR/NXTHDR
    // walk only within msg_controllen, and each SCM_RIGHTS payload is an
    // array of fds that are now ours.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&hdr);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg);
                let len = (*cmsg).cmsg_len - (data as usize - cmsg as usize);
                for k in 0..len / std::mem::size_of::<RawFd>() {
                    let raw = std::ptr::read_unaligned(data.cast::<RawFd>().add(k));
                    fds.push(OwnedFd::from_raw_fd(raw));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&hdr, cmsg);
        }
    }
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the other process closed the upgrade connection",
        ));
    }
    if hdr.msg_flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "a message longer than the protocol allows",
        ));
    }
    if fds.len() > 1 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "more than one descriptor in one message",
        ));
    }
    // SAFETY: recvmsg initialised the first n bytes.
    let bytes = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), n as usize) };
    let msg = Message::decode(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    Ok((msg, fds.pop()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn a_listening_socket_crosses_with_its_message() {
        let (a, b) = Socket::pair(Domain::UNIX, Type::SEQPACKET, None).expect("socketpair");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let bound = listener.local_addr().expect("addr");
        let msg = Message::Listener {
            configured: "127.0.0.1:0".parse().expect("addr"),
            bound,
        };
        send(&a, &msg, Some(std::os::fd::AsFd::as_fd(&listener))).expect("send");
        send(&a, &Message::Accepting, None).expect("send");
        let (got, fd) = recv(&b).expect("recv");
        assert_eq!(got, msg);
        let passed = TcpListener::from(fd.expect("a descriptor"));
        assert_eq!(passed.local_addr().expect("addr"), bound);
        // The very same socket: a connection queued on it is seen by both.
        drop(listener);
        let _client = std::net::TcpStream::connect(bound).expect("connect");
        passed.accept().expect("accept on the passed socket");
        let (got, fd) = recv(&b).expect("recv");
        assert_eq!((got, fd.is_none()), (Message::Accepting, true));
        // SAFETY: geteuid has no preconditions.
        assert_eq!(peer_uid(&b).expect("peer uid"), unsafe { libc::geteuid() });
        drop(a);
        let err = recv(&b).expect_err("closed");
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
