//! The recvmmsg backend: batches of up to `BATCH` datagrams per system call.
//!
//! Free buffers wait on a stack of indices. Each call points the iovecs of
//! up to `BATCH` of them at `buf + PAYLOAD_OFFSET` (so the payload sits where
//! io_uring puts it) and drains the socket with `MSG_DONTWAIT`; only when the
//! socket is empty does it wait in `ppoll`, so an idle socket costs nothing
//! and a full queue is drained without a poll per batch. Each slot has a
//! control area for the kernel's receive stamp.

use std::io;
use std::mem;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{
    BATCH, BufId, CONTROL_LEN, MAX_PAYLOAD, PAYLOAD_OFFSET, PacketPool, RecvMeta, RecvStats,
    SOCKADDR_IN_LEN, clamp_timeout, kernel_stamp, sockaddr_v4, timespec,
};
use zerocopy::IntoBytes;

use crate::clock::now_ns;

pub(super) struct Mmsg {
    pub(super) pool: Arc<PacketPool>,
    fd: RawFd,
    /// Indices of the buffers this backend owns; capacity = pool size, so
    /// pushing never allocates.
    free: Vec<u32>,
    /// Message headers whose `msg_name`/`msg_iov` point into `addrs`/`iovs`
    /// (boxed, so the pointers survive moves of `Mmsg`).
    hdrs: Box<[libc::mmsghdr; BATCH]>,
    iovs: Box<[libc::iovec; BATCH]>,
    addrs: Box<[libc::sockaddr_in; BATCH]>,
    /// Control areas (receive stamps), 8-byte aligned as `cmsghdr` needs.
    controls: Box<[[u64; CONTROL_LEN / 8]; BATCH]>,
    starved: u64,
    unstamped: u64,
    /// Taken before the last `recvmmsg`, if that call emptied the socket.
    drained_at: Option<u64>,
}

// SAFETY: the raw pointers in `hdrs` point into `iovs` and `addrs`, heap
// memory owned by this struct, and are used only by system calls issued
// through `&mut self`; the iovec bases point into the pool, kept alive by
// the `Arc`. Nothing here is tied to a thread.
unsafe impl Send for Mmsg {}

impl Mmsg {
    pub(super) fn new(fd: RawFd, pool: Arc<PacketPool>) -> Mmsg {
        let n = pool.len();
        let mut free = Vec::with_capacity(n);
        // Reversed, so that buffer 0 is handed out first.
        free.extend((0..n as u32).rev());
        // SAFETY: mmsghdr, iovec and sockaddr_in are plain C structs for
        // which all-zero bytes are a valid value (null pointers, zero lengths).
        let (mut hdrs, mut iovs, mut addrs) = unsafe {
            (
                zeroed_box::<[libc::mmsghdr; BATCH]>(),
                zeroed_box::<[libc::iovec; BATCH]>(),
                zeroed_box::<[libc::sockaddr_in; BATCH]>(),
            )
        };
        let mut controls = Box::new([[0u64; CONTROL_LEN / 8]; BATCH]);
        for (((h, iov), addr), ctl) in hdrs
            .iter_mut()
            .zip(iovs.iter_mut())
            .zip(addrs.iter_mut())
            .zip(controls.iter_mut())
        {
            h.msg_hdr.msg_name = (addr as *mut libc::sockaddr_in).cast();
            h.msg_hdr.msg_iov = iov;
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_control = ctl.as_mut_ptr().cast();
        }
        Mmsg {
            pool,
            fd,
            free,
            hdrs,
            iovs,
            addrs,
            controls,
            starved: 0,
            unstamped: 0,
            drained_at: None,
        }
    }

    pub(super) fn recv(&mut self, out: &mut Vec<RecvMeta>, timeout: Duration) -> io::Result<usize> {
        let timeout = clamp_timeout(timeout);
        let top = self.free.len();
        let k = top.min(BATCH);
        if k == 0 {
            // The consumer holds every buffer; only `release` (this thread)
            // can change that, so waiting is all there is to do.
            self.starved += 1;
            std::thread::sleep(timeout);
            return Ok(0);
        }
        // Slot s receives into the buffer at free[top - 1 - s], so the `got`
        // buffers used are exactly the top `got` entries of the stack.
        for s in 0..k {
            let i = self.free[top - 1 - s];
            // SAFETY: buffer i is on our free list, so we own it; the
            // offset stays inside the buffer.
            let base = unsafe { self.pool.buf_ptr(i).add(PAYLOAD_OFFSET) };
            self.iovs[s] = libc::iovec {
                iov_base: base.cast(),
                iov_len: MAX_PAYLOAD,
            };
            let h = &mut self.hdrs[s];
            h.msg_hdr.msg_namelen = SOCKADDR_IN_LEN as libc::socklen_t;
            h.msg_hdr.msg_controllen = CONTROL_LEN as _;
            h.msg_hdr.msg_flags = 0;
            h.msg_len = 0;
        }
        let deadline = Instant::now() + timeout;
        let got = loop {
            let before = now_ns();
            let got = self.recvmmsg(k)?;
            self.drained_at = (got < k).then_some(before);
            if got > 0 {
                break got;
            }
            if !self.wait(deadline.saturating_duration_since(Instant::now()))? {
                return Ok(0);
            }
        };
        let harvested = now_ns();
        for s in 0..got {
            let i = self.free[top - 1 - s];
            let h = &self.hdrs[s];
            let ctl_len = h.msg_hdr.msg_controllen.min(CONTROL_LEN);
            let ctl = &self.controls[s].as_bytes()[..ctl_len];
            let arrival_ns = kernel_stamp(ctl).unwrap_or_else(|| {
                self.unstamped += 1;
                harvested
            });
            out.push(RecvMeta {
                buf: self.pool.mint(i),
                len: h.msg_len.min(MAX_PAYLOAD as u32),
                src: sockaddr_v4(&self.addrs[s]),
                arrival_ns,
                read_ns: harvested,
                truncated: h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
            });
        }
        self.free.truncate(top - got);
        Ok(got)
    }

    /// One nonblocking `recvmmsg` into the first `k` slots: how many
    /// datagrams arrived, zero if none were waiting (or on `EINTR`).
    fn recvmmsg(&mut self, k: usize) -> io::Result<usize> {
        // SAFETY: the first k headers point at k live iovecs (each MAX_PAYLOAD
        // bytes inside a buffer we own), k sockaddr_in and k control areas
        // of the lengths given; the kernel writes only there and into the
        // headers.
        let r = unsafe {
            libc::recvmmsg(
                self.fd,
                self.hdrs.as_mut_ptr(),
                k as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if r >= 0 {
            return Ok(r as usize);
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
            _ => Err(e),
        }
    }

    /// Waits up to `timeout` for the socket to become readable; false on
    /// timeout or `EINTR`.
    fn wait(&self, timeout: Duration) -> io::Result<bool> {
        let mut pfd = libc::pollfd {
            fd: self.fd,
            events: libc::POLLIN,
            revents: 0,
        };
        let ts = timespec(timeout);
        // SAFETY: one valid pollfd, a valid timespec, no signal mask.
        let r = unsafe { libc::ppoll(&mut pfd, 1, &ts, std::ptr::null()) };
        match r {
            0 => Ok(false),
            r if r > 0 => Ok(true),
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    Ok(false)
                } else {
                    Err(e)
                }
            }
        }
    }

    pub(super) fn release(&mut self, buf: BufId) {
        let i = self.pool.redeem(buf);
        debug_assert!(self.free.len() < self.free.capacity());
        self.free.push(i);
    }

    pub(super) fn stats(&self) -> RecvStats {
        RecvStats {
            unusable: 0,
            starved: self.starved,
            rearms: 0,
            unstamped: self.unstamped,
        }
    }

    /// When the last `recvmmsg` began, if it emptied the socket.
    pub(super) fn drained_at(&self) -> Option<u64> {
        self.drained_at
    }
}

/// A heap `T` of zero bytes.
///
/// # Safety
/// All-zero bytes must be a valid `T`.
unsafe fn zeroed_box<T>() -> Box<T> {
    // SAFETY: the caller promises all-zero bytes are a valid T.
    Box::new(unsafe { mem::zeroed() })
}
