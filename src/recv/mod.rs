//! UDP receive: the camera's datagrams, from the socket into packet buffers.
//!
//! This module owns the UDP socket the modules send to, the packet buffers
//! the datagrams land in ([`PacketPool`]) and the system calls that fill
//! them. Callers see one type, [`Receiver`], and three calls: `recv` a batch
//! of [`RecvMeta`] (buffer, length, source address, arrival time), read a
//! payload through [`PacketPool::payload`], and `release` the buffer when
//! done with it. [`Receiver::caught_up`] tells when every datagram the
//! kernel received before a given time has been handed out.
//!
//! **Arrival time** is the kernel's receive stamp (`SO_TIMESTAMPNS`,
//! CLOCK_REALTIME, taken when the datagram reached the host's network
//! stack), not the time the daemon got to it: datagrams that waited in the
//! socket while the daemon was busy or stopped keep the times they arrived.
//! Where the kernel gives no stamp, the time the batch was harvested stands
//! in (counted in [`RecvStats::unstamped`]). Buffers travel between threads as [`BufId`] ownership
//! tokens, so the consumer reads the kernel's bytes in place, without a copy.
//!
//! Two backends sit behind `Receiver`:
//!
//! * **io_uring** (default): one multishot `RecvMsgMulti` request fed from a
//!   ring of provided buffers, on a ring set up `SINGLE_ISSUER` +
//!   `DEFER_TASKRUN` so completions are produced in batches when the receive
//!   thread waits for them. When the consumer holds every buffer the kernel
//!   ends the request (`ENOBUFS`); datagrams wait in the socket queue and the
//!   request is armed again once buffers come back.
//! * **recvmmsg**: batches of up to [`BATCH`] datagrams with `MSG_DONTWAIT`,
//!   and `ppoll` only when the socket is empty.
//!
//! Both put the payload at [`PAYLOAD_OFFSET`] in its buffer, so the rest of
//! the daemon cannot tell them apart.
//!
//! How it degrades: with [`IoMode::Auto`] the io_uring backend is tried first
//! and, if it cannot be set up, one line is logged
//! (`io_uring unavailable (<error>): using recvmmsg`) and recvmmsg is used.
//! Typical causes are a kernel older than 6.1 (multishot recvmsg needs 6.0,
//! `DEFER_TASKRUN` 6.1) and container runtimes whose default seccomp profile
//! blocks the io_uring system calls (Docker since 2023, containerd).
//!
//! What it must never do: allocate, take a lock or log per datagram (errors
//! are counted and logged at most once a minute), or block longer than the
//! timeout the caller asked for.

mod mmsg;
mod uring;

use std::cell::UnsafeCell;
use std::fmt;
use std::io;
use std::mem;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use crate::metrics::RateLimit;

/// Size of one packet buffer.
pub const BUF_SIZE: usize = 4096;
/// Where the payload starts in its buffer, in both backends. io_uring writes
/// a 16-byte `io_uring_recvmsg_out` header, the 16-byte `sockaddr_in` of
/// the sender and the [`CONTROL_LEN`]-byte control area (the receive
/// stamp) first; recvmmsg's iovec points at the same offset.
pub const PAYLOAD_OFFSET: usize = 16 + SOCKADDR_IN_LEN + CONTROL_LEN;
/// Bytes of control data asked for: one `SCM_TIMESTAMPNS` message
/// (`CMSG_SPACE(sizeof(struct timespec))`).
pub const CONTROL_LEN: usize = 32;
/// How long after the kernel stamped a datagram it may still be on its way
/// into the socket queue: [`Receiver::caught_up`] vouches for stamps this
/// much older than the time it checked.
pub const STAMP_SETTLE_NS: u64 = 1_000_000;
/// Largest payload a buffer holds; longer datagrams are reported truncated.
pub const MAX_PAYLOAD: usize = BUF_SIZE - PAYLOAD_OFFSET;
/// Most datagrams returned by one [`Receiver::recv`].
pub const BATCH: usize = 64;
/// Most buffers in a pool (the io_uring buffer ring's limit).
pub const MAX_BUFFERS: usize = 32768;

/// Length of the IPv4 socket address both backends ask the kernel for.
const SOCKADDR_IN_LEN: usize = mem::size_of::<libc::sockaddr_in>();
const _: () = assert!(SOCKADDR_IN_LEN == 16);
const _: () = assert!(
    MAX_PAYLOAD >= 1472,
    "a buffer must hold a full-MTU datagram"
);

/// A fixed set of packet buffers shared by the receiving thread, the kernel
/// and a consumer thread.
///
/// `n` buffers of [`BUF_SIZE`] bytes, mapped and made resident once at
/// creation (`MAP_POPULATE`: the io_uring ring cycles through every buffer,
/// and first-touch page faults inside the kernel's copy cost ~10 % of the
/// drain rate), so the pool's RSS is `n * BUF_SIZE` from the start.
///
/// A pool serves a single [`Receiver`] for its whole life (even one whose
/// setup failed); readers reach a payload only through the [`BufId`] that
/// proves they own the buffer.
pub struct PacketPool {
    /// `n * BUF_SIZE` bytes from `mmap`; the cells say that the bytes are
    /// written behind shared references (by the kernel, into buffers nobody
    /// else owns at that time).
    mem: NonNull<UnsafeCell<u8>>,
    n: usize,
    /// Stamped into the upper half of every `BufId` of this pool, so that a
    /// token of another pool is refused instead of aliasing one of ours.
    tag: u32,
    /// Set by the one `Receiver` that hands this pool's buffers out.
    claimed: AtomicBool,
}

// SAFETY: the pool is a block of memory plus immutable bookkeeping. Each
// buffer is owned by exactly one of: the kernel (in the io_uring buffer ring,
// or named by a recvmmsg call in progress), the receiver's free list, or the
// holder of its `BufId`. Only the owner touches the bytes: the kernel writes
// while it owns a buffer, the holder of a `BufId` reads (`payload`), nobody
// writes while a `BufId` exists. Ownership passes to the kernel and back
// through system calls and the completion queue (whose tail the io-uring
// crate loads with Acquire), and `BufId`s move between threads only through
// channels with release/acquire ordering (std mpsc, rtrb), so a reader sees
// the bytes the kernel wrote before the hand-over.
// `claimed` makes sure a single `Receiver` ever hands out ids, and `tag`
// makes sure an id only ever names a buffer of the pool that issued it.
unsafe impl Sync for PacketPool {}
// SAFETY: as above; the memory is not tied to the thread that mapped it.
unsafe impl Send for PacketPool {}

/// Source of pool tags; a tag must fit the upper 16 bits of a `BufId`.
static NEXT_POOL_TAG: AtomicU32 = AtomicU32::new(1);

impl PacketPool {
    /// Maps `n` buffers of [`BUF_SIZE`] bytes and faults them in.
    ///
    /// Panics if `n` is not a power of two in `1..=MAX_BUFFERS`, if the
    /// memory cannot be mapped, or if more than 65535 pools are created in
    /// one process (each pool stamps its ids with its own 16-bit tag).
    pub fn new(n: usize) -> Arc<PacketPool> {
        assert!(
            n.is_power_of_two() && n <= MAX_BUFFERS,
            "PacketPool::new({n}): the number of buffers must be a power of two <= {MAX_BUFFERS}"
        );
        let tag = NEXT_POOL_TAG.fetch_add(1, Ordering::Relaxed);
        assert!(
            tag <= 0xFFFF,
            "PacketPool::new: more than 65535 pools created"
        );
        let bytes = n * BUF_SIZE;
        // SAFETY: an anonymous private mapping with no address hint touches
        // no existing memory; the result is checked before use.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            panic!(
                "PacketPool::new: mmap of {n} buffers ({bytes} bytes) failed: {}",
                io::Error::last_os_error()
            );
        }
        let mem = NonNull::new(p.cast::<UnsafeCell<u8>>()).expect("mmap returned null");
        Arc::new(PacketPool {
            mem,
            n,
            tag,
            claimed: AtomicBool::new(false),
        })
    }

    /// Number of buffers.
    pub fn len(&self) -> usize {
        self.n
    }

    /// Always false: a pool has at least one buffer.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The first `len` payload bytes of the buffer `buf` owns.
    ///
    /// The slice borrows `buf`, so the buffer cannot be released while it is
    /// read. Panics if `buf` belongs to another pool or `len > MAX_PAYLOAD`.
    pub fn payload<'a>(&'a self, buf: &'a BufId, len: usize) -> &'a [u8] {
        assert!(len <= MAX_PAYLOAD, "payload length {len} > MAX_PAYLOAD");
        let i = self.index_of(buf);
        // SAFETY: `buf` is the ownership token of buffer `i` of this pool
        // (tag checked), so neither the kernel nor the receiver writes to it
        // while the borrow of `buf` lasts; the range lies inside the buffer.
        unsafe { std::slice::from_raw_parts(self.buf_ptr(i).add(PAYLOAD_OFFSET), len) }
    }

    /// The whole buffer, header area included (tests check the layout).
    #[cfg(test)]
    fn raw<'a>(&'a self, buf: &'a BufId) -> &'a [u8] {
        let i = self.index_of(buf);
        // SAFETY: as in `payload`, over the full buffer.
        unsafe { std::slice::from_raw_parts(self.buf_ptr(i), BUF_SIZE) }
    }

    /// Start of buffer `i` (`i < n`), for the kernel and for the owner.
    fn buf_ptr(&self, i: u32) -> *mut u8 {
        assert!((i as usize) < self.n);
        // SAFETY: `i < n`, so the offset stays inside the mapping.
        unsafe { UnsafeCell::raw_get(self.mem.as_ptr().add(i as usize * BUF_SIZE)) }
    }

    /// Mints the token of buffer `i`. Only a backend that has just taken the
    /// buffer back from the kernel calls this.
    fn mint(&self, i: u32) -> BufId {
        debug_assert!((i as usize) < self.n);
        BufId(self.tag << 16 | i)
    }

    /// Consumes a token and returns its buffer index; the caller now owns it.
    fn redeem(&self, buf: BufId) -> u32 {
        self.index_of(&buf)
    }

    fn index_of(&self, buf: &BufId) -> u32 {
        assert!(
            buf.0 >> 16 == self.tag,
            "BufId {} belongs to another PacketPool",
            buf.index()
        );
        buf.index()
    }

    /// Marks the pool as serving one receiver; false if one already has it.
    fn claim(&self) -> bool {
        !self.claimed.swap(true, Ordering::AcqRel)
    }
}

impl Drop for PacketPool {
    fn drop(&mut self) {
        // SAFETY: the mapping was made in `new` with this length. The last
        // `Arc` is gone, so no `BufId` can be read any more, and the
        // io_uring backend gives up its `Arc` only after the kernel can no
        // longer pick a buffer (or it leaks one to keep the pool alive).
        unsafe { libc::munmap(self.mem.as_ptr().cast(), self.n * BUF_SIZE) };
    }
}

impl fmt::Debug for PacketPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PacketPool")
            .field("buffers", &self.n)
            .finish_non_exhaustive()
    }
}

/// Ownership token of one buffer of a [`PacketPool`].
///
/// Not `Clone`/`Copy`: exactly one exists for each buffer that is neither
/// with the kernel nor on the receiver's free list, and only the `Receiver`
/// creates them. Give it back with [`Receiver::release`]; a dropped token
/// takes its buffer out of circulation for good.
#[derive(Debug, PartialEq, Eq)]
pub struct BufId(u32);

impl BufId {
    /// Index of the buffer in its pool.
    pub fn index(&self) -> u32 {
        self.0 & 0xFFFF
    }
}

/// One received datagram.
#[derive(Debug)]
pub struct RecvMeta {
    /// The buffer holding it; the payload starts at [`PAYLOAD_OFFSET`].
    pub buf: BufId,
    /// Payload bytes in the buffer (at most [`MAX_PAYLOAD`]).
    pub len: u32,
    /// Who sent it.
    pub src: SocketAddrV4,
    /// When the kernel received it, CLOCK_REALTIME ns (`SO_TIMESTAMPNS`; the
    /// harvest time where the kernel gave no stamp).
    pub arrival_ns: u64,
    /// When the receiver took it from the kernel, CLOCK_REALTIME ns.
    pub read_ns: u64,
    /// The datagram was longer than [`MAX_PAYLOAD`]; `len` bytes were kept.
    pub truncated: bool,
}

/// Which backend to use (`--io auto|uring|recvmmsg`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum IoMode {
    /// io_uring if it can be set up, else recvmmsg (with one log line).
    #[default]
    Auto,
    /// io_uring or an error.
    Uring,
    /// recvmmsg.
    Recvmmsg,
}

impl IoMode {
    /// The mode's name: `auto`, `uring` or `recvmmsg`.
    pub const fn name(self) -> &'static str {
        match self {
            IoMode::Auto => "auto",
            IoMode::Uring => "uring",
            IoMode::Recvmmsg => "recvmmsg",
        }
    }
}

impl std::str::FromStr for IoMode {
    type Err = String;
    fn from_str(s: &str) -> Result<IoMode, String> {
        match s {
            "auto" => Ok(IoMode::Auto),
            "uring" => Ok(IoMode::Uring),
            "recvmmsg" => Ok(IoMode::Recvmmsg),
            _ => Err(format!("no receive backend {s:?} (auto, uring, recvmmsg)")),
        }
    }
}

/// The backend a [`Receiver`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// io_uring multishot `RecvMsgMulti` with a provided-buffer ring.
    Uring,
    /// `recvmmsg` batches.
    Recvmmsg,
}

impl Backend {
    /// Short name for logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Uring => "io_uring",
            Backend::Recvmmsg => "recvmmsg",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a receiver counted besides datagrams. None of these is a loss: the
/// kernel's own drop counter is [`Receiver::kernel_drops`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecvStats {
    /// io_uring: completions the receiver could not use (their buffers go
    /// straight back to its free stack) and receives ended by an error; logged at
    /// most once a minute. (recvmmsg returns its errors from `recv`.)
    pub unusable: u64,
    /// Times the consumer held every buffer when the receiver needed one;
    /// datagrams waited in the socket queue meanwhile.
    pub starved: u64,
    /// io_uring: times the multishot receive was armed again after the
    /// kernel ended it (`ENOBUFS` or otherwise).
    pub rearms: u64,
    /// Datagrams without a kernel receive stamp (stamped when harvested).
    pub unstamped: u64,
}

/// Receives the camera's datagrams into a [`PacketPool`].
///
/// Created on any thread, then used by one: with io_uring, the first thread
/// that calls [`recv`](Receiver::recv) becomes the ring's only submitter;
/// `recv` from another thread fails, and a receiver dropped on another
/// thread leaks its pool (with a warning) because it cannot make sure the
/// kernel is done with the buffers.
pub struct Receiver {
    // Field order is drop order: the backend lets go of the kernel's
    // references to the socket and the pool before the socket closes.
    state: BackendState,
    socket: UdpSocket,
}

// One receiver per process: its size does not matter, an extra indirection
// per call would.
#[allow(clippy::large_enum_variant)]
enum BackendState {
    Uring(uring::Uring),
    Mmsg(mmsg::Mmsg),
}

impl Receiver {
    /// Takes a bound IPv4 UDP socket, makes it nonblocking and sets up the
    /// backend `mode` asks for, handing out the buffers of `pool`.
    ///
    /// Fails if the socket is not IPv4, if `pool` already serves another
    /// receiver, or (mode `Uring`) if io_uring cannot be set up.
    pub fn new(socket: UdpSocket, pool: Arc<PacketPool>, mode: IoMode) -> io::Result<Receiver> {
        let local = socket.local_addr()?;
        if !local.is_ipv4() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("recv: socket {local} is not IPv4"),
            ));
        }
        if !pool.claim() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "recv: this PacketPool already serves another Receiver",
            ));
        }
        socket.set_nonblocking(true)?;
        let fd = socket.as_raw_fd();
        if let Err(e) = enable_timestamps(fd) {
            tracing::warn!(
                "recv: the kernel gives no receive stamps ({e}): arrival is when ssdaqd \
                 takes a datagram, so a stall delays its timeouts"
            );
        }
        let state = match mode {
            IoMode::Recvmmsg => BackendState::Mmsg(mmsg::Mmsg::new(fd, pool)),
            IoMode::Uring => BackendState::Uring(
                uring::Uring::new(fd, pool)
                    .map_err(|e| io::Error::new(e.kind(), format!("io_uring setup: {e}")))?,
            ),
            IoMode::Auto => match uring::Uring::new(fd, Arc::clone(&pool)) {
                Ok(u) => BackendState::Uring(u),
                Err(e) => {
                    tracing::warn!("io_uring unavailable ({e}): using recvmmsg");
                    BackendState::Mmsg(mmsg::Mmsg::new(fd, pool))
                }
            },
        };
        Ok(Receiver { state, socket })
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        match self.state {
            BackendState::Uring(_) => Backend::Uring,
            BackendState::Mmsg(_) => Backend::Recvmmsg,
        }
    }

    /// The pool the buffers come from (clone it for the consumer).
    pub fn pool(&self) -> &Arc<PacketPool> {
        match &self.state {
            BackendState::Uring(u) => &u.pool,
            BackendState::Mmsg(m) => &m.pool,
        }
    }

    /// The address the socket is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Waits up to `timeout` for datagrams and appends at most [`BATCH`] of
    /// them to `out` (keep its capacity ≥ `BATCH` and nothing is allocated);
    /// returns how many. Zero on timeout, on `EINTR`, and after `timeout` when
    /// the consumer holds every buffer. Arrival is stamped with
    /// [`crate::clock::now_ns`] when the batch is harvested.
    pub fn recv(&mut self, out: &mut Vec<RecvMeta>, timeout: Duration) -> io::Result<usize> {
        out.reserve(BATCH);
        match &mut self.state {
            BackendState::Uring(u) => u.recv(out, timeout),
            BackendState::Mmsg(m) => m.recv(out, timeout),
        }
    }

    /// A time (CLOCK_REALTIME ns) such that every datagram the kernel
    /// stamped before it has been returned by [`recv`](Receiver::recv), if
    /// the socket can be shown empty now; `None` while datagrams wait.
    ///
    /// Checks with one `poll` system call (recvmmsg: none, when its last
    /// call emptied the socket), so call it when about to go idle, not per
    /// batch under load. The time lies [`STAMP_SETTLE_NS`] before the check,
    /// for a datagram stamped but not yet in the socket queue.
    pub fn caught_up(&mut self) -> Option<u64> {
        let known = match &mut self.state {
            BackendState::Uring(u) => u.completions_waiting().then_some(None),
            BackendState::Mmsg(m) => m.drained_at().map(Some),
        };
        let checked = match known {
            Some(None) => return None,
            Some(Some(t)) => t,
            None => {
                let t = crate::clock::now_ns();
                if readable(self.socket.as_raw_fd()) {
                    return None;
                }
                if let BackendState::Uring(u) = &mut self.state
                    && u.completions_waiting()
                {
                    return None;
                }
                t
            }
        };
        Some(checked.saturating_sub(STAMP_SETTLE_NS))
    }

    /// Gives a buffer back. io_uring: it goes back to the buffer ring, the
    /// ring's tail is published at the next `recv` (one store for a batch);
    /// recvmmsg: back on the free list. Panics if `buf` is of another pool.
    pub fn release(&mut self, buf: BufId) {
        match &mut self.state {
            BackendState::Uring(u) => u.release(buf),
            BackendState::Mmsg(m) => m.release(buf),
        }
    }

    /// Counters of errors, starvation and re-arms.
    pub fn stats(&self) -> RecvStats {
        match &self.state {
            BackendState::Uring(u) => u.stats(),
            BackendState::Mmsg(m) => m.stats(),
        }
    }

    /// Datagrams the kernel dropped on this socket (`SO_MEMINFO`,
    /// `SK_MEMINFO_DROPS`): the kernel's own loss counter, mostly a full
    /// receive queue. `None` if the kernel does not report it.
    pub fn kernel_drops(&self) -> Option<u64> {
        socket_drops(self.socket.as_raw_fd())
    }
}

/// Asks the kernel to stamp each datagram with its receive time.
fn enable_timestamps(fd: RawFd) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: passes a c_int by pointer with its exact size.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&raw const on).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The receive stamp in a datagram's control data (one `cmsghdr` followed
/// by a `timespec`), in ns; None if there is none.
fn kernel_stamp(control: &[u8]) -> Option<u64> {
    const HDR: usize = mem::size_of::<libc::cmsghdr>();
    const TS: usize = mem::size_of::<libc::timespec>();
    let word = |at: usize, n: usize| control.get(at..at + n);
    let len = usize::from_ne_bytes(word(0, 8)?.try_into().ok()?);
    let level = i32::from_ne_bytes(word(8, 4)?.try_into().ok()?);
    let kind = i32::from_ne_bytes(word(12, 4)?.try_into().ok()?);
    if level != libc::SOL_SOCKET || kind != libc::SCM_TIMESTAMPNS || len < HDR + TS {
        return None;
    }
    let sec = i64::from_ne_bytes(word(HDR, 8)?.try_into().ok()?);
    let nsec = i64::from_ne_bytes(word(HDR + 8, 8)?.try_into().ok()?);
    let ns = u64::try_from(sec).ok()?.checked_mul(1_000_000_000)? + u64::try_from(nsec).ok()?;
    (ns > 0).then_some(ns)
}

/// Whether a datagram waits in the socket (`poll` with no timeout).
fn readable(fd: RawFd) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, zero timeout.
    let r = unsafe { libc::poll(&mut pfd, 1, 0) };
    // On an error, claim nothing: the caller tries again later.
    r != 0
}

fn socket_drops(fd: RawFd) -> Option<u64> {
    const SK_MEMINFO_VARS: usize = libc::SK_MEMINFO_DROPS as usize + 1;
    let mut info = [0u32; SK_MEMINFO_VARS];
    let mut len = mem::size_of_val(&info) as libc::socklen_t;
    // SAFETY: `info` is writable for `len` bytes and `len` is a valid
    // in/out length; the kernel writes at most that many.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_MEMINFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    (r == 0 && len as usize == mem::size_of_val(&info))
        .then(|| u64::from(info[libc::SK_MEMINFO_DROPS as usize]))
}

/// Binds a UDP socket to `addr` (without `SO_REUSEADDR`/`SO_REUSEPORT`, so a
/// port in use is an error) and asks for a receive buffer of `rcvbuf` bytes:
/// `SO_RCVBUFFORCE` (root or `CAP_NET_ADMIN`), else `SO_RCVBUF` (capped by
/// `net.core.rmem_max`); `rcvbuf == 0` keeps the system default. Returns the
/// socket and the size the kernel granted, as `getsockopt(SO_RCVBUF)`
/// reports it (Linux doubles the request to account for its overhead).
pub fn bind_udp(addr: SocketAddrV4, rcvbuf: usize) -> io::Result<(UdpSocket, usize)> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    if rcvbuf > 0 {
        let size = libc::c_int::try_from(rcvbuf).unwrap_or(libc::c_int::MAX);
        // SAFETY: passes a c_int by pointer with its exact size.
        let forced = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                (&raw const size).cast(),
                mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        } == 0;
        if !forced {
            socket.set_recv_buffer_size(size as usize)?;
        }
    }
    socket
        .bind(&SocketAddr::V4(addr).into())
        .map_err(|e| io::Error::new(e.kind(), format!("bind UDP {addr}: {e}")))?;
    let granted = socket.recv_buffer_size()?;
    Ok((socket.into(), granted))
}

/// Says what receive buffer the kernel granted, in its own units: Linux
/// doubles the size asked for (the other half pays for its bookkeeping of
/// each datagram) and `getsockopt` reports the doubled figure, so "128 MiB
/// granted of 64 MiB asked" read as more than asked. This says both halves.
pub fn describe_rcvbuf(asked: usize, granted: usize) -> String {
    let mib = |b: usize| {
        if b >= 1 << 20 {
            format!("{} MiB", b >> 20)
        } else {
            format!("{} KiB", b >> 10)
        }
    };
    if asked == 0 {
        return format!(
            "receive buffer {} as the kernel counts it (the system default)",
            mib(granted)
        );
    }
    if granted >= asked.saturating_mul(2) {
        format!(
            "receive buffer {} as asked ({} as the kernel counts it, doubled for its bookkeeping)",
            mib(asked),
            mib(granted)
        )
    } else {
        format!(
            "receive buffer only {} of the {} asked ({} as the kernel counts it; \
             raise net.core.rmem_max, or give ssdaqd CAP_NET_ADMIN)",
            mib(granted / 2),
            mib(asked),
            mib(granted)
        )
    }
}

/// The sender of a datagram from the `sockaddr_in` the kernel filled in.
fn sockaddr_v4(sa: &libc::sockaddr_in) -> SocketAddrV4 {
    SocketAddrV4::new(
        Ipv4Addr::from(u32::from_be(sa.sin_addr.s_addr)),
        u16::from_be(sa.sin_port),
    )
}

/// `timeout` clamped to a year: a longer wait is not a timeout anyone
/// means, and the clamp keeps deadlines and timespec seconds in range.
fn clamp_timeout(timeout: Duration) -> Duration {
    timeout.min(Duration::from_secs(365 * 24 * 3600))
}

/// `timeout` (clamped) as a kernel timespec.
fn timespec(timeout: Duration) -> libc::timespec {
    let t = clamp_timeout(timeout);
    libc::timespec {
        tv_sec: t.as_secs() as libc::time_t,
        tv_nsec: t.subsec_nanos() as libc::c_long,
    }
}

/// Counts completions the receiver cannot use and logs them through the
/// one rate limiter ([`RateLimit`], at most a line a minute), so a
/// persistent fault costs a counter increment per datagram, not a log line.
struct Unusable {
    count: u64,
    log: RateLimit,
}

impl Default for Unusable {
    fn default() -> Unusable {
        Unusable {
            count: 0,
            log: RateLimit::new(60_000_000_000),
        }
    }
}

impl Unusable {
    #[cold]
    fn record(&mut self, what: &str, err: &dyn fmt::Display) {
        self.count += 1;
        if let Some(held) = self.log.allow(crate::clock::mono_ns()) {
            tracing::warn!(
                "recv: {what}: {err} ({} so far, {held} not logged; at most one a minute)",
                self.count
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::time::Instant;

    const GENEROUS: Duration = Duration::from_secs(2);

    /// A receiver on a fresh loopback port, with its address.
    fn receiver(n: usize, mode: IoMode) -> (Receiver, SocketAddrV4) {
        let (socket, _) = bind_udp(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0), 4 << 20).unwrap();
        let rx = Receiver::new(socket, PacketPool::new(n), mode).unwrap();
        let SocketAddr::V4(addr) = rx.local_addr().unwrap() else {
            unreachable!()
        };
        let expected = match mode {
            IoMode::Recvmmsg => Backend::Recvmmsg,
            _ => Backend::Uring,
        };
        assert_eq!(rx.backend(), expected);
        (rx, addr)
    }

    /// A sender bound to `127.0.0.<host>`.
    fn sender(host: u8) -> UdpSocket {
        UdpSocket::bind((Ipv4Addr::new(127, 0, 0, host), 0)).unwrap()
    }

    /// Receives until `want` datagrams arrived (releasing none) or the
    /// generous deadline passed.
    fn collect(rx: &mut Receiver, want: usize) -> Vec<RecvMeta> {
        let deadline = Instant::now() + GENEROUS;
        let mut got = Vec::with_capacity(want + BATCH);
        while got.len() < want && Instant::now() < deadline {
            rx.recv(&mut got, Duration::from_millis(20)).unwrap();
        }
        got
    }

    /// Payload number `seq` from source `src`: its length and bytes say who
    /// sent it, so a mixed-up buffer shows.
    fn payload_of(src: u8, seq: u8) -> Vec<u8> {
        let len = 144 * (1 + (seq as usize % 10));
        (0..len).map(|i| src ^ seq ^ (i as u8)).collect()
    }

    fn every_datagram_sent_from_32_sources_arrives_once_with_its_source_length_and_bytes(
        mode: IoMode,
    ) {
        let (mut rx, addr) = receiver(64, mode);
        let senders: Vec<_> = (100..132).map(sender).collect();
        const PER_SOURCE: u8 = 8;
        let before = crate::clock::now_ns();
        for seq in 0..PER_SOURCE {
            for (s, tx) in senders.iter().enumerate() {
                tx.send_to(&payload_of(s as u8, seq), addr).unwrap();
            }
        }
        let want = senders.len() * PER_SOURCE as usize;
        let mut seen: HashMap<(SocketAddrV4, u8), usize> = HashMap::new();
        let mut out = Vec::with_capacity(BATCH);
        let deadline = Instant::now() + GENEROUS;
        while seen.values().sum::<usize>() < want && Instant::now() < deadline {
            out.clear();
            let n = rx.recv(&mut out, Duration::from_millis(20)).unwrap();
            assert_eq!(n, out.len());
            assert!(n <= BATCH);
            for m in out.drain(..) {
                let host = m.src.ip().octets()[3];
                assert!((100..132).contains(&host), "unexpected source {}", m.src);
                let s = host - 100;
                assert_eq!(
                    m.src.port(),
                    senders[s as usize].local_addr().unwrap().port()
                );
                let bytes = rx.pool().payload(&m.buf, m.len as usize);
                // The bytes identify the datagram: find its sequence number.
                let seq = (0..PER_SOURCE)
                    .find(|&q| payload_of(s, q) == bytes)
                    .unwrap_or_else(|| panic!("datagram from {} has unknown bytes", m.src));
                assert!(!m.truncated);
                assert!(m.arrival_ns >= before && m.arrival_ns <= crate::clock::now_ns());
                *seen.entry((m.src, seq)).or_default() += 1;
                rx.release(m.buf);
            }
        }
        assert_eq!(seen.len(), want, "every datagram arrives");
        assert!(seen.values().all(|&c| c == 1), "and arrives once");
        assert_eq!(rx.kernel_drops(), Some(0));
        assert_eq!(rx.stats().unusable, 0);
    }

    fn a_datagram_longer_than_max_payload_is_reported_truncated(mode: IoMode) {
        let (mut rx, addr) = receiver(4, mode);
        let tx = sender(1);
        let fits: Vec<u8> = (0..MAX_PAYLOAD).map(|i| (i % 251) as u8).collect();
        let long: Vec<u8> = (0..MAX_PAYLOAD + 100).map(|i| (i % 249) as u8).collect();
        tx.send_to(&fits, addr).unwrap();
        tx.send_to(&long, addr).unwrap();
        let got = collect(&mut rx, 2);
        assert_eq!(got.len(), 2);
        assert!(!got[0].truncated);
        assert_eq!(got[0].len as usize, MAX_PAYLOAD);
        assert_eq!(rx.pool().payload(&got[0].buf, MAX_PAYLOAD), &fits[..]);
        assert!(got[1].truncated);
        assert_eq!(got[1].len as usize, MAX_PAYLOAD);
        assert_eq!(
            rx.pool().payload(&got[1].buf, MAX_PAYLOAD),
            &long[..MAX_PAYLOAD]
        );
    }

    fn an_empty_datagram_arrives_with_length_zero(mode: IoMode) {
        let (mut rx, addr) = receiver(4, mode);
        sender(1).send_to(&[], addr).unwrap();
        let got = collect(&mut rx, 1);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].len, 0);
        assert!(!got[0].truncated);
    }

    fn the_payload_lands_at_payload_offset(mode: IoMode) {
        let (mut rx, addr) = receiver(4, mode);
        let tx = sender(7);
        tx.send_to(b"slow signal", addr).unwrap();
        let got = collect(&mut rx, 1);
        assert_eq!(got.len(), 1);
        let raw = rx.pool().raw(&got[0].buf);
        assert_eq!(&raw[PAYLOAD_OFFSET..PAYLOAD_OFFSET + 11], b"slow signal");
        if mode == IoMode::Uring {
            // io_uring_recvmsg_out {namelen, controllen, payloadlen, flags},
            // then the sockaddr_in of the sender, then the receive stamp.
            let word = |i: usize| u32::from_ne_bytes(raw[i..i + 4].try_into().unwrap());
            assert_eq!((word(0), word(4), word(8)), (16, CONTROL_LEN as u32, 11));
            let family = u16::from_ne_bytes([raw[16], raw[17]]);
            assert_eq!(family, libc::AF_INET as u16);
            assert_eq!(&raw[18..20], &tx.local_addr().unwrap().port().to_be_bytes());
            assert_eq!(&raw[20..24], &[127, 0, 0, 7]);
        }
    }

    fn a_datagram_that_waited_in_the_socket_keeps_the_time_it_arrived(mode: IoMode) {
        let (mut rx, addr) = receiver(4, mode);
        let before = crate::clock::now_ns();
        sender(3).send_to(&[1; 144], addr).unwrap();
        let sent = crate::clock::now_ns();
        std::thread::sleep(Duration::from_millis(50));
        let got = collect(&mut rx, 1);
        assert_eq!(got.len(), 1);
        let a = got[0].arrival_ns;
        assert!(
            before <= a && a <= sent,
            "arrival {a} is the kernel's stamp, within [{before}, {sent}], not the harvest"
        );
        assert_eq!(rx.stats().unstamped, 0);
    }

    fn caught_up_only_once_the_socket_is_empty(mode: IoMode) {
        let (mut rx, addr) = receiver(4, mode);
        let tx = sender(4);
        // Nothing sent: caught up with everything stamped before the check.
        let t0 = crate::clock::now_ns();
        let c = rx.caught_up().expect("an empty socket is caught up");
        assert!(c <= t0.saturating_sub(STAMP_SETTLE_NS) + 1_000_000);
        // Six datagrams into four buffers: two wait in the socket.
        for _ in 0..6 {
            tx.send_to(&[2; 144], addr).unwrap();
        }
        let held = collect(&mut rx, 4);
        assert_eq!(held.len(), 4);
        assert_eq!(rx.caught_up(), None, "datagrams wait in the socket");
        for m in held {
            rx.release(m.buf);
        }
        let rest = collect(&mut rx, 2);
        assert_eq!(rest.len(), 2);
        let c = rx.caught_up().expect("drained");
        assert!(
            c + STAMP_SETTLE_NS >= rest[1].arrival_ns,
            "vouches for what it returned"
        );
    }

    fn when_the_consumer_holds_every_buffer_recv_times_out_and_after_release_nothing_is_lost(
        mode: IoMode,
    ) {
        const POOL: usize = 8;
        const SENT: usize = 20;
        let (mut rx, addr) = receiver(POOL, mode);
        let tx = sender(2);
        for seq in 0..SENT as u8 {
            tx.send_to(&[seq; 144], addr).unwrap();
        }
        let mut held = collect(&mut rx, POOL);
        assert_eq!(held.len(), POOL, "the consumer now holds every buffer");

        let timeout = Duration::from_millis(30);
        let t = Instant::now();
        assert_eq!(rx.recv(&mut held, timeout).unwrap(), 0);
        let waited = t.elapsed();
        assert!(
            waited >= timeout / 2 && waited < timeout + GENEROUS,
            "{waited:?}"
        );
        assert!(rx.stats().starved >= 1);

        let mut seqs: Vec<u8> = Vec::new();
        for m in held.drain(..) {
            seqs.push(rx.pool().payload(&m.buf, 1)[0]);
            rx.release(m.buf);
        }
        let deadline = Instant::now() + GENEROUS;
        let mut out = Vec::with_capacity(BATCH);
        while seqs.len() < SENT && Instant::now() < deadline {
            rx.recv(&mut out, Duration::from_millis(20)).unwrap();
            for m in out.drain(..) {
                seqs.push(rx.pool().payload(&m.buf, 1)[0]);
                rx.release(m.buf);
            }
        }
        assert_eq!(seqs, (0..SENT as u8).collect::<Vec<_>>(), "all, in order");
        assert_eq!(rx.kernel_drops(), Some(0));
        if mode == IoMode::Uring {
            assert!(
                rx.stats().rearms >= 1,
                "the multishot ended and was armed again"
            );
        }
    }

    fn recv_returns_zero_after_the_timeout_when_idle_and_not_much_later(mode: IoMode) {
        let (mut rx, _) = receiver(4, mode);
        let mut out = Vec::with_capacity(BATCH);
        for timeout in [
            Duration::ZERO,
            Duration::from_millis(1),
            Duration::from_millis(40),
        ] {
            let t = Instant::now();
            assert_eq!(rx.recv(&mut out, timeout).unwrap(), 0);
            let waited = t.elapsed();
            assert!(
                waited >= timeout / 2,
                "{timeout:?}: returned after {waited:?}"
            );
            assert!(waited < timeout + GENEROUS / 4, "{timeout:?}: {waited:?}");
        }
        assert!(out.is_empty());
    }

    fn a_receiver_made_on_one_thread_receives_on_another(mode: IoMode) {
        let (mut rx, addr) = receiver(4, mode);
        let t = std::thread::spawn(move || {
            let got = collect(&mut rx, 1);
            let len = got.len();
            for m in got {
                rx.release(m.buf);
            }
            len
        });
        std::thread::sleep(Duration::from_millis(10));
        sender(3).send_to(b"x", addr).unwrap();
        assert_eq!(t.join().unwrap(), 1);
    }

    fn a_held_buffer_stays_readable_after_the_receiver_is_gone(mode: IoMode) {
        let (mut rx, addr) = receiver(4, mode);
        sender(4).send_to(b"kept", addr).unwrap();
        let got = collect(&mut rx, 1);
        let pool = Arc::clone(rx.pool());
        drop(rx);
        assert_eq!(pool.payload(&got[0].buf, 4), b"kept");
    }

    macro_rules! for_both_backends {
        ($($name:ident),* $(,)?) => {
            mod uring {
                $( #[test] fn $name() { super::$name(super::IoMode::Uring) } )*
            }
            mod recvmmsg {
                $( #[test] fn $name() { super::$name(super::IoMode::Recvmmsg) } )*
            }
        };
    }

    for_both_backends!(
        every_datagram_sent_from_32_sources_arrives_once_with_its_source_length_and_bytes,
        a_datagram_longer_than_max_payload_is_reported_truncated,
        an_empty_datagram_arrives_with_length_zero,
        the_payload_lands_at_payload_offset,
        a_datagram_that_waited_in_the_socket_keeps_the_time_it_arrived,
        caught_up_only_once_the_socket_is_empty,
        when_the_consumer_holds_every_buffer_recv_times_out_and_after_release_nothing_is_lost,
        recv_returns_zero_after_the_timeout_when_idle_and_not_much_later,
        a_receiver_made_on_one_thread_receives_on_another,
        a_held_buffer_stays_readable_after_the_receiver_is_gone,
    );

    #[test]
    fn auto_mode_gives_a_working_receiver() {
        // Auto takes io_uring here (`receiver` checks which backend it got;
        // the seccomp test below checks the fallback), and receives.
        let (mut rx, addr) = receiver(4, IoMode::Auto);
        sender(9).send_to(b"auto", addr).unwrap();
        let got = collect(&mut rx, 1);
        assert_eq!(got.len(), 1);
        assert_eq!(rx.pool().payload(&got[0].buf, 4), b"auto");
    }

    /// Makes `io_uring_setup` fail with `EPERM` on the calling thread only
    /// (a seccomp filter without TSYNC), as Docker's default profile does for
    /// a whole container.
    fn forbid_io_uring_on_this_thread() {
        let stmt = |code: u32, k: u32, jt: u8, jf: u8| libc::sock_filter {
            code: code as u16,
            jt,
            jf,
            k,
        };
        let filter = [
            // Load seccomp_data.nr; if io_uring_setup, fail it, else allow.
            stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0, 0, 0),
            stmt(
                libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
                libc::SYS_io_uring_setup as u32,
                0,
                1,
            ),
            stmt(
                libc::BPF_RET | libc::BPF_K,
                libc::SECCOMP_RET_ERRNO | libc::EPERM as u32,
                0,
                0,
            ),
            stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW, 0, 0),
        ];
        let prog = libc::sock_fprog {
            len: filter.len() as u16,
            filter: filter.as_ptr().cast_mut(),
        };
        // SAFETY: prctl and seccomp with valid arguments; the kernel copies
        // the program. Without SECCOMP_FILTER_FLAG_TSYNC the filter binds
        // only this thread, which the caller spawned for the purpose.
        unsafe {
            assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
            let r = libc::syscall(libc::SYS_seccomp, libc::SECCOMP_SET_MODE_FILTER, 0, &prog);
            assert_eq!(r, 0, "seccomp: {}", io::Error::last_os_error());
        }
    }

    #[test]
    fn without_io_uring_auto_falls_back_to_recvmmsg_and_uring_mode_is_an_error() {
        std::thread::spawn(|| {
            forbid_io_uring_on_this_thread();
            let any = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0);
            let (socket, _) = bind_udp(any, 0).unwrap();
            let err = Receiver::new(socket, PacketPool::new(2), IoMode::Uring)
                .err()
                .unwrap();
            assert_eq!(err.kind(), io::ErrorKind::PermissionDenied, "{err}");
            assert!(err.to_string().starts_with("io_uring setup"), "{err}");

            let (socket, _) = bind_udp(any, 0).unwrap();
            let mut rx = Receiver::new(socket, PacketPool::new(2), IoMode::Auto).unwrap();
            assert_eq!(rx.backend(), Backend::Recvmmsg);
            let SocketAddr::V4(addr) = rx.local_addr().unwrap() else {
                unreachable!()
            };
            sender(9).send_to(b"still here", addr).unwrap();
            let got = collect(&mut rx, 1);
            assert_eq!(rx.pool().payload(&got[0].buf, 10), b"still here");
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_pool_serves_a_single_receiver() {
        let pool = PacketPool::new(2);
        let (a, _) = bind_udp(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0), 0).unwrap();
        let (b, _) = bind_udp(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0), 0).unwrap();
        let _rx = Receiver::new(a, Arc::clone(&pool), IoMode::Recvmmsg).unwrap();
        let err = Receiver::new(b, pool, IoMode::Recvmmsg).err().unwrap();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    #[should_panic(expected = "belongs to another PacketPool")]
    fn a_buffer_id_of_another_pool_is_refused() {
        let (mut rx, addr) = receiver(2, IoMode::Recvmmsg);
        sender(5).send_to(b"y", addr).unwrap();
        let got = collect(&mut rx, 1);
        let other = PacketPool::new(2);
        let _ = other.payload(&got[0].buf, 1);
    }

    #[test]
    fn binding_a_port_in_use_is_an_error() {
        let (a, granted) = bind_udp(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0), 1 << 20).unwrap();
        assert!(granted >= 1 << 20, "granted {granted}");
        let SocketAddr::V4(addr) = a.local_addr().unwrap() else {
            unreachable!()
        };
        let err = bind_udp(addr, 0).err().unwrap();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        assert!(err.to_string().contains(&addr.to_string()), "{err}");
    }

    #[test]
    fn io_uring_belongs_to_the_thread_that_first_receives() {
        let (mut rx, _) = receiver(4, IoMode::Uring);
        let mut out = Vec::new();
        assert_eq!(rx.recv(&mut out, Duration::ZERO).unwrap(), 0);
        let mut rx = std::thread::spawn(move || {
            let err = rx.recv(&mut Vec::new(), Duration::ZERO).err().unwrap();
            assert!(err.to_string().contains("other than"), "{err}");
            rx
        })
        .join()
        .unwrap();
        assert_eq!(rx.recv(&mut out, Duration::ZERO).unwrap(), 0);
        // Dropped elsewhere, the ring cannot be torn down in order, so the
        // pool is leaked rather than freed under the kernel's feet.
        let pool = Arc::downgrade(rx.pool());
        std::thread::spawn(move || drop(rx)).join().unwrap();
        assert!(pool.upgrade().is_some());

        // A receiver that never received has no owner thread yet.
        let (rx, _) = receiver(4, IoMode::Uring);
        let pool = Arc::downgrade(rx.pool());
        std::thread::spawn(move || drop(rx)).join().unwrap();
        assert!(pool.upgrade().is_none(), "freed normally");
    }

    #[test]
    fn the_handles_are_send() {
        fn send<T: Send>() {}
        fn sync<T: Send + Sync>() {}
        send::<Receiver>();
        send::<RecvMeta>();
        sync::<Arc<PacketPool>>();
    }
}
