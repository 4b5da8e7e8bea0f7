//! The io_uring backend: one multishot `RecvMsgMulti` fed by a ring of
//! provided buffers.
//!
//! Buffers of the pool are put in a provided-buffer ring (page-aligned,
//! `mmap`ed, registered as buffer group `BGID`). The kernel takes buffers from
//! the ring's head as datagrams arrive, writes `io_uring_recvmsg_out` (16
//! bytes), the sender's `sockaddr_in` (16 bytes), the control data (the
//! receive stamp, `CONTROL_LEN` bytes) and the payload, and posts
//! one completion per datagram naming the buffer. The ring is kept shallow
//! ([`RING_FILL`] buffers): released buffers wait on a last-in first-out
//! stack and each `recv` tops the ring up from its top, so the kernel keeps
//! writing into the few buffers that are still in cache. The tail is
//! published with one Release store per `recv`.
//!
//! The ring is set up `SINGLE_ISSUER` + `DEFER_TASKRUN`: the kernel does the
//! receive work when this thread waits for completions, in batches, instead
//! of interrupting it per datagram. It is also created disabled and enabled
//! by the first `recv`, because a single-issuer ring belongs to the thread
//! that enables it: the `Receiver` may be built on one thread and run on
//! another.
//!
//! The multishot request ends when the ring runs dry (`-ENOBUFS`: the
//! consumer holds every buffer; datagrams wait in the socket queue) or on an
//! error; it is armed again once there are buffers to receive into.
//!
//! Setup first runs a probe on a throwaway ring and a UNIX socket pair: it
//! receives one datagram the same way and checks that the kernel put the
//! payload at `PAYLOAD_OFFSET`. A kernel that cannot do this, or does it
//! differently, fails setup instead of being misparsed later.

use std::io;
use std::mem;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use io_uring::{IoUring, cqueue, opcode, types};

use super::{
    BATCH, BUF_SIZE, BufId, CONTROL_LEN, PAYLOAD_OFFSET, PacketPool, RecvMeta, RecvStats,
    SOCKADDR_IN_LEN, Unusable, clamp_timeout, kernel_stamp,
};
use crate::clock::now_ns;

/// `user_data` of the multishot receive.
const RECV: u64 = 1;
/// `user_data` of the request that cancels it at teardown.
const CANCEL: u64 = 2;
/// The longest teardown waits for the kernel to end the receive.
const DISARM_WAIT: Duration = Duration::from_millis(200);
/// The provided-buffer group (one per ring).
const BGID: u16 = 0;
/// Submission entries: the receive is the only request in flight.
const SQ_ENTRIES: u32 = 4;
/// Buffers kept in the kernel's ring; the rest of the pool waits on a
/// last-in first-out stack. The kernel takes ring buffers in ring order, so
/// a ring holding the whole pool would cycle through all of it and write
/// each datagram into the buffer used longest ago (docs/design.md,
/// "Receiving", has the drain rates). Four batches is enough for the
/// completions the kernel produces per wait.
const RING_FILL: usize = 4 * BATCH;

pub(super) struct Uring {
    // Field order is drop order, after `Drop::drop` has unregistered the
    // buffer ring: the io_uring instance closes first, then the buffer
    // ring's memory and the msghdr go, then this backend's hold on the pool.
    ring: IoUring,
    bufs: BufRing,
    /// Sizes of the name (16) and control (`CONTROL_LEN`) areas for `RecvMsgMulti`;
    /// boxed so its address is stable for as long as the request is armed.
    msghdr: Box<libc::msghdr>,
    pub(super) pool: Arc<PacketPool>,
    fd: RawFd,
    /// The thread whose first `recv` enabled the ring (its only submitter).
    owner: Option<std::thread::ThreadId>,
    /// A multishot receive is in flight.
    armed: bool,
    /// Buffers published to the ring and not yet completed by the kernel.
    in_kernel: usize,
    /// Buffers this backend owns that are not in the ring, the most
    /// recently released (still in cache) on top; capacity = pool size.
    free: Vec<u32>,
    arms: u64,
    starved: u64,
    unstamped: u64,
    errors: Unusable,
}

// SAFETY: the raw pointers inside (`msghdr`'s null name/control pointers,
// the buffer ring mapping) point to memory this struct owns, not to
// anything tied to a thread. The one thread affinity, the single-issuer
// ring's submitter, is fixed by the first `recv` (the ring is created
// disabled), so moving the backend to its thread before that is sound;
// afterwards a call from another thread fails with an error, not UB.
unsafe impl Send for Uring {}

impl Uring {
    pub(super) fn new(fd: RawFd, pool: Arc<PacketPool>) -> io::Result<Uring> {
        probe()?;
        let n = pool.len();
        let cq_entries = (2 * n).max(64) as u32;
        let ring = build_ring(cq_entries, true)?;
        let mut bufs = BufRing::new(n).map_err(context("mapping the buffer ring"))?;
        let mut free = Vec::with_capacity(n);
        // Reversed, so that the ring starts with buffers 0, 1, 2 …
        free.extend((0..n as u32).rev());
        let mut in_kernel = 0;
        top_up(&mut bufs, &pool, &mut free, &mut in_kernel);
        // SAFETY: `bufs` is a page-aligned mapping of `n` entries (n a power
        // of two <= 32768), each naming a whole buffer of `pool`. Both stay
        // alive until `Drop` has unregistered the group: this struct owns
        // them and holds an `Arc` of the pool.
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(bufs.addr(), n as u16, BGID, 0)
        }
        .map_err(context("registering the buffer ring"))?;
        Ok(Uring {
            ring,
            bufs,
            msghdr: recv_msghdr(),
            pool,
            fd,
            owner: None,
            armed: false,
            in_kernel,
            free,
            arms: 0,
            starved: 0,
            unstamped: 0,
            errors: Unusable::default(),
        })
    }

    pub(super) fn recv(&mut self, out: &mut Vec<RecvMeta>, timeout: Duration) -> io::Result<usize> {
        let timeout = clamp_timeout(timeout);
        let me = std::thread::current().id();
        match self.owner {
            Some(owner) if owner != me => return Err(wrong_thread()),
            Some(_) => {}
            None => {
                self.ring.submitter().register_enable_rings()?;
                self.owner = Some(me);
            }
        }
        top_up(
            &mut self.bufs,
            &self.pool,
            &mut self.free,
            &mut self.in_kernel,
        );
        // Completions left over when the previous call filled its batch.
        if !self.ring.completion().is_empty() {
            let n = self.harvest(out);
            if n > 0 {
                return Ok(n);
            }
        }
        let deadline = Instant::now() + timeout;
        let mut armed_now = false;
        loop {
            if !self.armed {
                // Arm at most once per call: a request that ends again at
                // once (an error) must not turn this into a busy loop.
                if self.in_kernel == 0 || armed_now {
                    if self.in_kernel == 0 {
                        self.starved += 1;
                    }
                    std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
                    return Ok(0);
                }
                self.arm()?;
                armed_now = true;
            }
            if timeout.is_zero() {
                // A poll: run the receive work and return without waiting.
                self.enter_without_waiting()?;
                return Ok(self.harvest(out));
            }
            let ts = types::Timespec::from(deadline.saturating_duration_since(Instant::now()));
            let args = types::SubmitArgs::new().timespec(&ts);
            match self.ring.submitter().submit_with_args(1, &args) {
                Ok(_) => {}
                Err(e) => match e.raw_os_error() {
                    Some(libc::ETIME | libc::EINTR) => return Ok(0),
                    // The completion queue is full: reap it.
                    Some(libc::EBUSY) => {}
                    Some(libc::EEXIST) => return Err(wrong_thread()),
                    _ => return Err(e),
                },
            }
            let n = self.harvest(out);
            if n > 0 || Instant::now() >= deadline {
                return Ok(n);
            }
        }
    }

    /// Submits what is queued and runs the receive work the kernel has
    /// deferred to this thread (`DEFER_TASKRUN`), without waiting for
    /// anything: `io_uring_enter` with `GETEVENTS` and no minimum.
    ///
    /// A wait with a zero timeout is not the same: the kernel still arms the
    /// timer and sleeps until it fires, and a core that goes to sleep takes
    /// long to come back (docs/design.md, "Receiving").
    fn enter_without_waiting(&mut self) -> io::Result<()> {
        /// `IORING_ENTER_GETEVENTS` (linux/io_uring.h).
        const GETEVENTS: u32 = 1;
        let to_submit = self.ring.submission().len() as u32;
        // SAFETY: io_uring_enter on our own ring, from its submitter thread
        // (checked by `recv`), with no argument structure; what is submitted
        // was checked by `arm`.
        match unsafe {
            self.ring
                .submitter()
                .enter::<libc::sigset_t>(to_submit, 0, GETEVENTS, None)
        } {
            Ok(_) => Ok(()),
            Err(e) => match e.raw_os_error() {
                Some(libc::EINTR | libc::EBUSY | libc::EAGAIN) => Ok(()),
                Some(libc::EEXIST) => Err(wrong_thread()),
                _ => Err(e),
            },
        }
    }

    /// Queues the multishot receive; the next wait submits it.
    fn arm(&mut self) -> io::Result<()> {
        let sqe = opcode::RecvMsgMulti::new(types::Fd(self.fd), &*self.msghdr, BGID)
            .build()
            .user_data(RECV);
        // SAFETY: the msghdr is boxed in `self` and outlives the request (the
        // ring is closed before it is freed); the socket outlives `self`
        // (the `Receiver` drops its backend first); the buffers the request
        // selects are registered and kept alive by `self.pool`.
        unsafe { self.ring.submission().push(&sqe) }
            .map_err(|_| io::Error::other("io_uring submission queue full"))?;
        self.armed = true;
        self.arms += 1;
        Ok(())
    }

    /// Turns up to `BATCH` completions into `RecvMeta`s; returns how many.
    fn harvest(&mut self, out: &mut Vec<RecvMeta>) -> usize {
        let harvested = now_ns();
        let Uring {
            ring,
            msghdr,
            pool,
            armed,
            in_kernel,
            free,
            errors,
            unstamped,
            ..
        } = self;
        let mut n = 0;
        let mut cq = ring.completion();
        while n < BATCH {
            let Some(cqe) = cq.next() else { break };
            if cqe.user_data() != RECV {
                continue;
            }
            let (res, flags) = (cqe.result(), cqe.flags());
            if !cqueue::more(flags) {
                *armed = false;
            }
            let Some(bid) = cqueue::buffer_select(flags) else {
                // No datagram: the request ended. ENOBUFS (the ring ran dry)
                // is the normal way back-pressure shows; anything else is
                // counted.
                if res != -libc::ENOBUFS {
                    errors.record(
                        "io_uring multishot recvmsg",
                        &io::Error::from_raw_os_error(res.saturating_neg()),
                    );
                }
                continue;
            };
            *in_kernel -= 1;
            let i = u32::from(bid);
            match parse(pool, i, res, msghdr) {
                Ok((len, src, truncated, stamp)) => {
                    let arrival_ns = stamp.unwrap_or_else(|| {
                        *unstamped += 1;
                        harvested
                    });
                    out.push(RecvMeta {
                        buf: pool.mint(i),
                        len,
                        src,
                        arrival_ns,
                        read_ns: harvested,
                        truncated,
                    });
                    n += 1;
                }
                Err(what) => {
                    errors.record(what, &format_args!("completion result {res}"));
                    free.push(i);
                }
            }
        }
        n
    }

    pub(super) fn release(&mut self, buf: BufId) {
        let i = self.pool.redeem(buf);
        debug_assert!(self.free.len() < self.free.capacity());
        self.free.push(i);
    }

    pub(super) fn stats(&self) -> RecvStats {
        RecvStats {
            unusable: self.errors.count,
            starved: self.starved,
            rearms: self.arms.saturating_sub(1),
            unstamped: self.unstamped,
        }
    }

    /// Completions are waiting to be harvested.
    pub(super) fn completions_waiting(&mut self) -> bool {
        !self.ring.completion().is_empty()
    }
}

impl Uring {
    /// Cancels the armed receive and waits (at most [`DISARM_WAIT`]) for
    /// its last completion. An armed request holds the socket: left to the
    /// ring's teardown, which the kernel runs later in a worker, the port
    /// stayed bound after the process had exited, and a daemon restarted
    /// at once failed with "Address already in use" (1 restart in 6 under
    /// traffic). Datagrams completed meanwhile are dropped: the receiver
    /// has stopped taking them. Only the ring's submitter can do this.
    fn disarm(&mut self) {
        if !self.armed || self.owner != Some(std::thread::current().id()) {
            return;
        }
        let sqe = opcode::AsyncCancel::new(RECV).build().user_data(CANCEL);
        // SAFETY: a cancel request names its target by user_data and
        // points to no memory.
        if unsafe { self.ring.submission().push(&sqe) }.is_err() {
            return;
        }
        let deadline = Instant::now() + DISARM_WAIT;
        while self.armed {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                tracing::warn!(
                    "io_uring teardown: the receive did not end within {DISARM_WAIT:?}; \
                     the port may stay bound for a moment after exit"
                );
                return;
            }
            let ts = types::Timespec::from(left);
            let args = types::SubmitArgs::new().timespec(&ts);
            match self.ring.submitter().submit_with_args(1, &args) {
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::ETIME | libc::EINTR | libc::EBUSY)
                    ) => {}
                Err(_) => return,
            }
            for cqe in self.ring.completion() {
                if cqe.user_data() == RECV && !cqueue::more(cqe.flags()) {
                    self.armed = false;
                }
            }
        }
    }
}

impl Drop for Uring {
    fn drop(&mut self) {
        self.disarm();
        // Once the group is unregistered no request can select a buffer of
        // the pool (selection and the copy into the buffer happen under the
        // ring's lock, as does unregistering), so the pool may be freed.
        // Unregistering fails (EEXIST) when dropped on a thread other than
        // the ring's submitter; then the kernel might still write into the
        // pool, so the pool and the ring memory are leaked instead.
        if let Err(e) = self.ring.submitter().unregister_buf_ring(BGID) {
            tracing::warn!(
                "io_uring teardown: cannot unregister the buffer ring ({e}); \
                 leaking the packet pool so the kernel never writes into freed memory"
            );
            mem::forget(Arc::clone(&self.pool));
            self.bufs.leak = true;
        }
    }
}

/// Refills the kernel's ring up to [`RING_FILL`] buffers from the top of
/// the free stack and shows them to the kernel.
fn top_up(bufs: &mut BufRing, pool: &PacketPool, free: &mut Vec<u32>, in_kernel: &mut usize) {
    let room = RING_FILL.saturating_sub(*in_kernel);
    for i in free.drain(free.len().saturating_sub(room)..).rev() {
        bufs.push(pool, i);
    }
    *in_kernel += usize::from(bufs.publish());
}

/// Checks one received completion and returns (payload length, sender,
/// truncated, kernel receive stamp), or what is wrong with it.
fn parse(
    pool: &PacketPool,
    i: u32,
    res: i32,
    msghdr: &libc::msghdr,
) -> Result<(u32, std::net::SocketAddrV4, bool, Option<u64>), &'static str> {
    let Ok(filled) = usize::try_from(res) else {
        return Err("io_uring recvmsg failed after taking a buffer");
    };
    // SAFETY: the completion hands buffer i back: the kernel has finished
    // writing its `filled` bytes, and nobody else owns it (it is neither in
    // the ring nor named by a `BufId`).
    let bytes = unsafe { std::slice::from_raw_parts(pool.buf_ptr(i), filled.min(BUF_SIZE)) };
    let m = types::RecvMsgOut::parse(bytes, msghdr)
        .map_err(|()| "io_uring completion shorter than its header")?;
    let payload = m.payload_data();
    if payload.as_ptr() as usize - bytes.as_ptr() as usize != PAYLOAD_OFFSET {
        return Err("io_uring payload not at PAYLOAD_OFFSET");
    }
    let name = m.name_data();
    if m.incoming_name_len() as usize != SOCKADDR_IN_LEN
        || name.len() != SOCKADDR_IN_LEN
        || u16::from_ne_bytes([name[0], name[1]]) != libc::AF_INET as u16
    {
        return Err("io_uring sender address is not a sockaddr_in");
    }
    let src = std::net::SocketAddrV4::new(
        std::net::Ipv4Addr::new(name[4], name[5], name[6], name[7]),
        u16::from_be_bytes([name[2], name[3]]),
    );
    Ok((
        payload.len() as u32,
        src,
        m.is_payload_truncated(),
        kernel_stamp(m.control_data()),
    ))
}

/// A msghdr asking for a `sockaddr_in` and `CONTROL_LEN` bytes of control
/// data (the receive stamp).
fn recv_msghdr() -> Box<libc::msghdr> {
    // SAFETY: msghdr is a plain C struct; all-zero (null pointers, zero
    // lengths) is a valid value.
    let mut m: libc::msghdr = unsafe { mem::zeroed() };
    m.msg_namelen = SOCKADDR_IN_LEN as libc::socklen_t;
    m.msg_controllen = CONTROL_LEN as _;
    Box::new(m)
}

fn build_ring(cq_entries: u32, disabled: bool) -> io::Result<IoUring> {
    let mut b = IoUring::builder();
    b.setup_single_issuer()
        .setup_defer_taskrun()
        .setup_cqsize(cq_entries);
    if disabled {
        b.setup_r_disabled();
    }
    b.build(SQ_ENTRIES).map_err(context("io_uring_setup"))
}

fn wrong_thread() -> io::Error {
    io::Error::other("io_uring: recv called from a thread other than the one that first called it")
}

/// Prefixes an error with the step that failed, keeping its kind.
fn context(step: &'static str) -> impl Fn(io::Error) -> io::Error {
    move |e| io::Error::new(e.kind(), format!("{step}: {e}"))
}

/// A provided-buffer ring: `n` entries of (address, length, buffer id) in a
/// page-aligned private mapping, shared with the kernel. The kernel consumes
/// entries from its head; we append at the tail, which lives in entry 0.
struct BufRing {
    entries: NonNull<types::BufRingEntry>,
    n: usize,
    /// Entries written (wrapping).
    tail: u16,
    /// The tail the kernel has been shown.
    published: u16,
    /// Set when the kernel may still use the ring: never unmap it then.
    leak: bool,
}

impl BufRing {
    fn new(n: usize) -> io::Result<BufRing> {
        debug_assert!(n.is_power_of_two() && n <= 1 << 15);
        // SAFETY: an anonymous private mapping with no address hint touches
        // no existing memory; mmap returns page-aligned, zeroed memory.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                n * mem::size_of::<types::BufRingEntry>(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(BufRing {
            entries: NonNull::new(p.cast()).expect("mmap returned null"),
            n,
            tail: 0,
            published: 0,
            leak: false,
        })
    }

    fn addr(&self) -> u64 {
        self.entries.as_ptr() as u64
    }

    /// Appends buffer `i` of `pool` (which the caller owns) after the tail;
    /// the kernel sees it after the next `publish`.
    fn push(&mut self, pool: &PacketPool, i: u32) {
        self.push_addr(pool.buf_ptr(i), i as u16);
    }

    /// Appends the `BUF_SIZE` bytes at `addr` as buffer `bid`. The caller
    /// owns them, and at most `n` buffers ever go through this ring.
    fn push_addr(&mut self, addr: *mut u8, bid: u16) {
        let slot = usize::from(self.tail) & (self.n - 1);
        // SAFETY: slot < n lies in the mapping. The kernel reads only the
        // entries between its head and the published tail; this slot is
        // past the tail, because at most n buffers exist and the caller
        // owns this one, so fewer than n are in the ring. The tail field
        // (inside entry 0) is written only by `publish`, never here.
        let e = unsafe { &mut *self.entries.as_ptr().add(slot) };
        e.set_addr(addr as u64);
        e.set_len(BUF_SIZE as u32);
        e.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Shows the kernel every entry pushed since the last call (one Release
    /// store, so the entries are visible before the tail that covers them);
    /// returns how many.
    fn publish(&mut self) -> u16 {
        let new = self.tail.wrapping_sub(self.published);
        if new > 0 {
            // SAFETY: the tail is the reserved field of entry 0 of our
            // mapping, a naturally aligned u16 the kernel only reads; this
            // thread is its only writer.
            let tail = unsafe {
                AtomicU16::from_ptr(types::BufRingEntry::tail(self.entries.as_ptr()).cast_mut())
            };
            tail.store(self.tail, Ordering::Release);
            self.published = self.tail;
        }
        new
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        if !self.leak {
            // SAFETY: the mapping made in `new`, with its length; the owner
            // unregistered it from the kernel (or set `leak`).
            unsafe {
                libc::munmap(
                    self.entries.as_ptr().cast(),
                    self.n * mem::size_of::<types::BufRingEntry>(),
                )
            };
        }
    }
}

/// Receives one datagram on a throwaway ring, the way `Uring` will, into a
/// buffer of its own, and checks that the payload lands at `PAYLOAD_OFFSET`.
fn probe() -> io::Result<()> {
    const DATA: &[u8] = b"ssdaq io_uring probe";
    let mut ring = build_ring(4, false)?;
    let msghdr = recv_msghdr();
    let mut bufs = BufRing::new(1).map_err(context("mapping the buffer ring"))?;
    // Owned through a raw pointer while the kernel may write into it.
    let buf: *mut [u8] = Box::into_raw(vec![0u8; BUF_SIZE].into_boxed_slice());
    bufs.push_addr(buf.cast(), 0);
    bufs.publish();
    // SAFETY: a page-aligned one-entry ring naming `buf`; both outlive the
    // registration, which ends below before they can go.
    let registered = unsafe {
        ring.submitter()
            .register_buf_ring_with_flags(bufs.addr(), 1, BGID, 0)
    };
    if let Err(e) = registered {
        // SAFETY: from `Box::into_raw` above, never given to the kernel.
        drop(unsafe { Box::from_raw(buf) });
        return Err(context("registering the buffer ring")(e));
    }
    let result = probe_receive(&mut ring, &msghdr, buf.cast(), DATA);
    if let Err(e) = ring.submitter().unregister_buf_ring(BGID) {
        // Not expected (same thread, ring alive); if it happens the kernel
        // may still own the buffer and the ring memory: leak both.
        bufs.leak = true;
        return Err(context("unregistering the probe's buffer ring")(e));
    }
    // SAFETY: from `Box::into_raw` above; with the group unregistered the
    // kernel can no longer write into it.
    drop(unsafe { Box::from_raw(buf) });
    result.map_err(context("multishot recvmsg probe"))
}

fn probe_receive(
    ring: &mut IoUring,
    msghdr: &libc::msghdr,
    buf: *const u8,
    data: &[u8],
) -> io::Result<()> {
    let (rx, tx) = UnixDatagram::pair()?;
    tx.send(data)?;
    let sqe = opcode::RecvMsgMulti::new(types::Fd(rx.as_raw_fd()), msghdr, BGID)
        .build()
        .user_data(RECV);
    // SAFETY: the msghdr and the socket outlive the request (the ring's
    // buffer group is unregistered before they go, and nothing more is
    // sent); the one provided buffer is registered and owned by the caller.
    unsafe { ring.submission().push(&sqe) }
        .map_err(|_| io::Error::other("submission queue full"))?;
    let ts = types::Timespec::from(Duration::from_secs(1));
    ring.submitter()
        .submit_with_args(1, &types::SubmitArgs::new().timespec(&ts))?;
    let Some(cqe) = ring.completion().next() else {
        return Err(io::Error::other("no completion within 1 s"));
    };
    if cqe.result() < 0 {
        return Err(io::Error::from_raw_os_error(-cqe.result()));
    }
    if cqueue::buffer_select(cqe.flags()) != Some(0) {
        return Err(io::Error::other("completion without the provided buffer"));
    }
    let filled = (cqe.result() as usize).min(BUF_SIZE);
    // SAFETY: the completion handed the buffer (BUF_SIZE bytes at `buf`)
    // back to us, filled up to `filled`.
    let bytes = unsafe { std::slice::from_raw_parts(buf, filled) };
    let payloadlen = bytes
        .get(8..12)
        .map(|w| u32::from_ne_bytes(w.try_into().unwrap()));
    let at_offset = bytes.get(PAYLOAD_OFFSET..PAYLOAD_OFFSET + data.len());
    let parsed_at = types::RecvMsgOut::parse(bytes, msghdr)
        .ok()
        .map(|m| m.payload_data().as_ptr() as usize - bytes.as_ptr() as usize);
    if payloadlen != Some(data.len() as u32)
        || at_offset != Some(data)
        || parsed_at != Some(PAYLOAD_OFFSET)
    {
        return Err(io::Error::other(format!(
            "the kernel did not put the payload at byte {PAYLOAD_OFFSET} of the buffer"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_finds_the_payload_at_payload_offset() {
        probe().unwrap();
    }
}
