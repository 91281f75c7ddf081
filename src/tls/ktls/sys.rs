//! The few raw socket calls kernel TLS needs and monoio does not offer:
//! reading a control record (recvmsg with a cmsg) and sending one (sendmsg
//! with a cmsg). Always MSG_DONTWAIT: sockets accepted by io_uring are
//! blocking, and a blocked syscall would stall the whole core.

use std::io;
use std::os::fd::{BorrowedFd, RawFd};

/// Borrows a raw fd for APIs that want `AsFd`.
pub fn borrow(fd: &RawFd) -> BorrowedFd<'_> {
    // SAFETY: the fd belongs to a TcpStream that the caller holds for the
    // whole borrow (the lifetime ties the BorrowedFd to that reference).
    unsafe { BorrowedFd::borrow_raw(*fd) }
}

/// Control-message buffer, aligned for `cmsghdr`, big enough for one u8 cmsg.
#[repr(C, align(8))]
struct CmsgBuf([u8; 64]);

/// Reads one TLS record that the kernel refused to hand to a plain read
/// (a non-application-data record). Returns (record type, payload length).
pub fn recv_record(fd: RawFd, buf: &mut [u8]) -> io::Result<(u8, usize)> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut cmsg = CmsgBuf([0; 64]);
    // SAFETY: an all-zero msghdr is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg.0.as_mut_ptr().cast();
    msg.msg_controllen = cmsg.0.len();
    // SAFETY: msg points at iov and cmsg, both alive and sized for the call.
    let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "kernel TLS control message truncated",
        ));
    }
    let mut record_type = None;
    // SAFETY: the CMSG_* walk stays within msg_controllen bytes of cmsg, which
    // the kernel filled; CMSG_DATA of a TLS_GET_RECORD_TYPE cmsg holds one byte.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_TLS && (*c).cmsg_type == libc::TLS_GET_RECORD_TYPE {
                record_type = Some(*libc::CMSG_DATA(c));
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    // No cmsg: plain application data reached us first.
    Ok((record_type.unwrap_or(23), n as usize))
}

/// Sends `payload` as one TLS record of `record_type` (21 alert, 22 handshake).
/// WouldBlock when the send buffer is full: wait for writability and retry.
pub fn send_record(fd: RawFd, record_type: u8, payload: &[u8]) -> io::Result<usize> {
    let mut iov = libc::iovec {
        iov_base: payload.as_ptr() as *mut _,
        iov_len: payload.len(),
    };
    let mut cmsg = CmsgBuf([0; 64]);
    // SAFETY: an all-zero msghdr is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg.0.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE/CMSG_LEN are pure size computations.
    let space = unsafe { libc::CMSG_SPACE(1) } as usize;
    msg.msg_controllen = space;
    // SAFETY: cmsg has room for CMSG_SPACE(1) bytes (64 > 24); we fill the one
    // header and its one data byte the kernel will read.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_TLS;
        (*c).cmsg_type = libc::TLS_SET_RECORD_TYPE;
        (*c).cmsg_len = libc::CMSG_LEN(1) as _;
        *libc::CMSG_DATA(c) = record_type;
    }
    // SAFETY: msg points at live iov (read-only use by the kernel) and cmsg.
    let n = unsafe { libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}
