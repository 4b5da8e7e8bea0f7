//! The ZeroMQ publisher: one message per camera event.
//!
//! This module owns the publishing socket (libzmq through the `zmq` crate).
//! It binds `tcp://127.0.0.101:5555` by default, as the original did, and
//! sends each event as one single-frame message without topic (PROTOCOL.md
//! §4/§5), so the original's Python subscribers work unchanged.
//!
//! It must never block the pipeline. The socket is an XPUB (to subscribers
//! exactly a PUB) so that subscriptions can be seen and logged. Every send
//! is non-blocking with `ZMQ_XPUB_NODROP` on, so a subscriber whose queue is
//! at its high-water mark makes the send fail visibly: that event is
//! counted as an *overflow*, then sent again with NODROP off, so only the
//! slow subscriber misses it and the others still get it. libzmq then stops
//! checking that subscriber until it has read its queue down, so an
//! overflow counts one episode, not every event missed in it: the daemon's
//! figure is a lower bound, and says so; the exact figure is each
//! subscriber's own gap count (docs/design.md).
//!
//! Events are handed to libzmq without a copy ([`Publisher::send_event`]):
//! the event's buffer is lent to the message and a spare takes its place in
//! the builder's slot; libzmq's free callback, on whichever thread drops the
//! last reference, hands the buffer back through a bounded channel. With
//! every spare in flight (a slow subscriber) it falls back to a copying send.
//! A lent send costs a tenth of a copying one (docs/design.md, "Publishing").

use std::ffi::c_void;
use std::fmt;
use std::mem::MaybeUninit;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use crate::builder::Event;
use crate::event::{EventBuf, Format};

/// Default endpoint, as the original `ssdaqd.py`.
pub const DEFAULT_ENDPOINT: &str = "tcp://127.0.0.101:5555";
/// Default host of the endpoint when only `-p PORT` is given.
pub const DEFAULT_HOST: &str = "127.0.0.101";
/// Messages queued per subscriber before it counts as slow (~17 MB of v1).
pub const DEFAULT_HWM: i32 = 1000;
/// The largest per-subscriber queue accepted: 100 000 v1 events, 1.7 GB
/// for a stalled subscriber. Zero (libzmq's "unbounded") is refused.
pub const MAX_HWM: i32 = 100_000;
/// How long closing waits for queued messages to leave.
const LINGER_MS: i32 = 2000;
/// Event buffers that can be lent to libzmq at once (~17 KB each).
pub const LEND_BUFFERS: usize = 256;
/// After this long without a send, libzmq's send path has gone cold.
const COLD_AFTER_NS: u64 = 1_000_000;

/// The publisher could not start.
#[derive(Debug)]
pub struct BindError {
    pub endpoint: String,
    pub source: zmq::Error,
}

impl fmt::Display for BindError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot bind the publisher to {}: {}",
            self.endpoint, self.source
        )?;
        match self.source {
            zmq::Error::EADDRINUSE => write!(
                f,
                " (another ssdaqd running? choose another with -p PORT or --pub)"
            ),
            zmq::Error::EADDRNOTAVAIL => write!(f, " (no such local address)"),
            _ => Ok(()),
        }
    }
}

impl std::error::Error for BindError {}

/// What the publisher counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PublishStats {
    /// Messages handed to ZeroMQ.
    pub sent: u64,
    /// Times a subscriber's queue was found full (its high-water mark): each
    /// cost that subscriber at least one event, so this is a **lower bound**
    /// of the events slow subscribers missed. libzmq stops checking a full
    /// subscriber until it has caught up, so the events it misses after the
    /// first are not seen here; each subscriber's own count of gaps in the
    /// event numbers is exact (`EventListener::missed`, the Python
    /// `Listener.missed`).
    pub overflows: u64,
    /// Sends that failed for another reason (dropped).
    pub errors: u64,
    /// Subscriptions currently held by connected subscribers.
    pub subscriptions: i64,
}

/// The publishing socket.
pub struct Publisher {
    // Drop order matters: the socket closes, then terminating the context
    // waits until libzmq has released every lent buffer, and only then may
    // `lending` (which its free callback uses) and the spares go.
    sock: zmq::Socket,
    /// A PUB socket without peers (never bound or connected): sending on it
    /// warms libzmq's send path before a burst, and nothing leaves.
    warm: zmq::Socket,
    _ctx: zmq::Context,
    lending: Box<Lending>,
    /// Lent buffers coming back from libzmq, in the order it freed them.
    returned: Receiver<Box<EventBuf>>,
    /// Buffers at hand, the most recently returned on top: it is the one
    /// still in cache (a FIFO of all 256 would write every event into the
    /// coldest of 4 MiB).
    spares: Vec<Box<EventBuf>>,
    format: Format,
    endpoint: String,
    stats: PublishStats,
    nodrop: bool,
    last_used_ns: u64,
}

/// What libzmq's free callback needs to hand a lent buffer back.
struct Lending {
    returns: SyncSender<Box<EventBuf>>,
    /// Where the message starts inside an [`EventBuf`] for this format.
    offset: usize,
}

/// libzmq's free callback for a lent event buffer; runs on the thread that
/// drops the message's last reference (ours or libzmq's I/O thread).
unsafe extern "C" fn give_back(data: *mut c_void, hint: *mut c_void) {
    // SAFETY: `hint` is the `Lending` boxed inside the Publisher that lent
    // this buffer; the Publisher terminates its context (which waits for
    // every message to be released) before `lending` is dropped.
    let lending = unsafe { &*(hint as *const Lending) };
    // SAFETY: `data` is `lending.offset` bytes into a `Box<EventBuf>` that
    // `send_event` leaked with `Box::into_raw` for exactly this message, and
    // libzmq calls this once per message.
    let buf = unsafe { Box::from_raw(data.cast::<u8>().sub(lending.offset).cast::<EventBuf>()) };
    // The channel holds LEND_BUFFERS and only that many buffers are ever
    // lent, so this cannot be full; were it, the buffer would just be freed.
    let _ = lending.returns.try_send(buf);
}

/// A change in subscriptions, for the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subscription {
    Joined,
    Left,
}

impl Publisher {
    /// Binds a publisher of `format` events at `endpoint` with a
    /// per-subscriber queue of `hwm` messages.
    pub fn bind(endpoint: &str, format: Format, hwm: i32) -> Result<Publisher, BindError> {
        let err = |source| BindError {
            endpoint: endpoint.to_string(),
            source,
        };
        let ctx = zmq::Context::new();
        let sock = ctx.socket(zmq::XPUB).map_err(err)?;
        sock.set_sndhwm(hwm).map_err(err)?;
        sock.set_linger(LINGER_MS).map_err(err)?;
        sock.set_xpub_verbose(true).map_err(err)?;
        let (returns, returned) = sync_channel(LEND_BUFFERS);
        let spares = (0..LEND_BUFFERS).map(|_| EventBuf::new_boxed()).collect();
        let offset = EventBuf::message_offset(format);
        let warm = ctx.socket(zmq::PUB).map_err(err)?;
        let mut p = Publisher {
            sock,
            warm,
            _ctx: ctx,
            lending: Box::new(Lending { returns, offset }),
            returned,
            spares,
            format,
            endpoint: endpoint.to_string(),
            stats: PublishStats::default(),
            nodrop: false,
            last_used_ns: 0,
        };
        p.set_int(zmq_sys::ZMQ_XPUB_VERBOSER, 1).map_err(err)?;
        p.set_nodrop(true).map_err(err)?;
        p.sock.bind(endpoint).map_err(err)?;
        // Report the bound endpoint (a port of 0 or `*` becomes the real one).
        if let Ok(Ok(e)) = p.sock.get_last_endpoint() {
            p.endpoint = e;
        }
        Ok(p)
    }

    /// The endpoint subscribers connect to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    pub fn stats(&self) -> PublishStats {
        self.stats
    }

    /// Warms libzmq's send path if it sat idle for over a millisecond.
    ///
    /// Call it when data arrives that will soon produce events (the first
    /// datagram of a camera burst). After 40 ms idle on these VMs the first
    /// send of a burst cost ~8 µs (measured, median: taking a spare 1.3 µs,
    /// `zmq_msg_init_data`'s allocation 1.9 µs, `zmq_msg_send` 5.0 µs),
    /// the next ones 0.2 µs together. Querying `ZMQ_EVENTS` processes the
    /// real socket's pending commands; a lent one-byte message sent on the
    /// `warm` socket, which has no peers, runs the same
    /// allocation, send and free code without anything leaving. The first
    /// send then costs ~3 µs: what is left is the real socket's own check of
    /// its command mailbox (a `poll`), which libzmq makes on the first send
    /// after a millisecond and which only a send on that socket resets.
    #[inline]
    pub fn prepare(&mut self, now_ns: u64) {
        if now_ns.saturating_sub(self.last_used_ns) > COLD_AFTER_NS {
            let _ = self.sock.get_events();
            self.warm_send();
        }
        self.last_used_ns = now_ns;
    }

    /// Sends one lent byte on the socket without peers (see `prepare`).
    fn warm_send(&mut self) {
        static BYTE: u8 = 0;
        unsafe extern "C" fn keep(_data: *mut c_void, _hint: *mut c_void) {}
        let mut msg = MaybeUninit::<zmq_sys::zmq_msg_t>::uninit();
        // SAFETY: `BYTE` is a static, valid for the whole program, and libzmq
        // only reads lent data; `keep` frees nothing. zmq_msg_init_data only
        // initialises `msg`.
        let rc = unsafe {
            zmq_sys::zmq_msg_init_data(
                msg.as_mut_ptr(),
                (&BYTE as *const u8).cast_mut().cast(),
                1,
                Some(keep),
                std::ptr::null_mut(),
            )
        };
        if rc != 0 {
            return;
        }
        // SAFETY: `msg` was initialised above; `warm` is our live socket,
        // used only from this thread. A PUB without peers drops the message
        // (success); should the send fail, the message is still ours to close.
        unsafe {
            if zmq_sys::zmq_msg_send(
                msg.as_mut_ptr(),
                self.warm.as_mut_ptr(),
                zmq_sys::ZMQ_DONTWAIT as i32,
            ) < 0
            {
                zmq_sys::zmq_msg_close(msg.as_mut_ptr());
            }
        }
    }

    /// Hands one event to ZeroMQ without blocking and, when a spare buffer
    /// is at hand, without copying it.
    #[inline]
    pub fn send_event(&mut self, ev: &mut Event<'_>) {
        self.collect_returned();
        let Some(mut buf) = self.spares.pop() else {
            // Every spare is in flight: copy.
            return self.send(ev.encode(self.format));
        };
        ev.swap_buf(&mut buf);
        let bytes = buf.encode(self.format, &ev.header);
        let len = bytes.len();
        assert_eq!(
            bytes.as_ptr() as usize - (&*buf as *const EventBuf as usize),
            self.lending.offset,
            "the message starts at the format's offset in the buffer"
        );
        // The pointer lent to libzmq is derived from `into_raw`, after the
        // last borrow of `buf`: it carries the whole buffer's provenance, so
        // `give_back` may rebuild the Box from it.
        let raw = Box::into_raw(buf);
        // SAFETY: `lending.offset` is where `encode` put the message inside
        // the EventBuf (checked above), so the offset stays in the allocation.
        let data = unsafe { raw.cast::<u8>().add(self.lending.offset) }.cast::<c_void>();
        let hint = (&*self.lending as *const Lending)
            .cast_mut()
            .cast::<c_void>();
        let mut msg = MaybeUninit::<zmq_sys::zmq_msg_t>::uninit();
        // SAFETY: `data..data+len` lies inside the buffer just leaked, which
        // nothing touches until libzmq calls `give_back` with `hint`, a
        // pointer that stays valid until the context has terminated (see
        // the field order of Publisher). zmq_msg_init_data only initialises
        // `msg`.
        let rc = unsafe {
            zmq_sys::zmq_msg_init_data(msg.as_mut_ptr(), data, len, Some(give_back), hint)
        };
        if rc != 0 {
            // Cannot happen for a non-null callback; the buffer is leaked, not reused.
            self.stats.errors += 1;
            return;
        }
        let msg = msg.as_mut_ptr();
        let sent = self.deliver(|sock| {
            // SAFETY: `msg` was initialised above and is still ours (a failed
            // send leaves it with us); `sock` is our live socket, used only
            // from this thread. On success libzmq owns the message.
            if unsafe {
                zmq_sys::zmq_msg_send(msg, sock.as_mut_ptr(), zmq_sys::ZMQ_DONTWAIT as i32)
            } >= 0
            {
                Ok(())
            } else {
                // SAFETY: reads libzmq's thread-local errno.
                Err(zmq::Error::from_raw(unsafe { zmq_sys::zmq_errno() }))
            }
        });
        if !sent {
            // SAFETY: the send failed, so `msg` is still ours: closing it
            // hands the buffer back through `give_back`.
            unsafe { zmq_sys::zmq_msg_close(msg) };
        }
    }

    /// Hands one message to ZeroMQ without blocking (copying it).
    #[inline]
    pub fn send(&mut self, msg: &[u8]) {
        self.deliver(|sock| sock.send(msg, zmq::DONTWAIT));
    }

    /// The high-water-mark policy, for both kinds of send: try with NODROP
    /// on; if some subscriber's queue is full, count the drop and try once
    /// more with NODROP off, so only that subscriber misses the message.
    /// Counts what was sent or failed; true if sent.
    #[inline]
    fn deliver(&mut self, mut try_send: impl FnMut(&mut zmq::Socket) -> zmq::Result<()>) -> bool {
        let mut r = try_send(&mut self.sock);
        if r == Err(zmq::Error::EAGAIN) {
            self.stats.overflows += 1;
            r = self
                .set_nodrop(false)
                .and_then(|_| try_send(&mut self.sock));
            let _ = self.set_nodrop(true);
        }
        match r {
            Ok(()) => self.stats.sent += 1,
            Err(_) => self.stats.errors += 1,
        }
        r.is_ok()
    }

    /// Puts the buffers libzmq has given back on the spare stack, the last
    /// one returned on top.
    #[inline]
    fn collect_returned(&mut self) {
        while let Ok(b) = self.returned.try_recv() {
            self.spares.push(b);
        }
    }

    /// Buffers ready to be lent (every returned one collected first).
    #[cfg(test)]
    fn at_hand(&mut self) -> usize {
        self.collect_returned();
        self.spares.len()
    }

    /// Reads subscription messages (never blocks); returns the last change seen.
    pub fn poll_subscriptions(&mut self) -> Option<Subscription> {
        let mut change = None;
        let mut buf = [0u8; 256];
        while let Ok(n) = self.sock.recv_into(&mut buf, zmq::DONTWAIT) {
            match buf.get(..n.min(buf.len())).and_then(|b| b.first()) {
                Some(1) => {
                    self.stats.subscriptions += 1;
                    change = Some(Subscription::Joined);
                }
                Some(0) => {
                    self.stats.subscriptions -= 1;
                    change = Some(Subscription::Left);
                }
                _ => {}
            }
        }
        change
    }

    fn set_nodrop(&mut self, on: bool) -> zmq::Result<()> {
        if self.nodrop != on {
            self.set_int(zmq_sys::ZMQ_XPUB_NODROP, on as i32)?;
            self.nodrop = on;
        }
        Ok(())
    }

    /// Sets an integer socket option the `zmq` crate does not wrap.
    fn set_int(&mut self, option: u32, value: i32) -> zmq::Result<()> {
        let ptr = self.sock.as_mut_ptr();
        // SAFETY: `ptr` is the live socket owned by `self.sock`, used only
        // from this thread; the option value is a valid c_int for the size
        // given, as libzmq's zmq_setsockopt requires for these int options.
        let rc = unsafe {
            zmq_sys::zmq_setsockopt(
                ptr,
                option as i32,
                (&value as *const i32).cast(),
                std::mem::size_of::<i32>(),
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            // SAFETY: zmq_errno only reads libzmq's thread-local errno.
            Err(zmq::Error::from_raw(unsafe { zmq_sys::zmq_errno() }))
        }
    }
}

impl fmt::Display for PublishStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "sent {}  errors {}  subscriptions {}; subscriber queue overflows {} \
             (slow subscribers missed at least that many events; each subscriber's own gap \
             count is exact)",
            self.sent, self.errors, self.subscriptions, self.overflows
        )
    }
}

/// The endpoint from `--pub` or `-p PORT` (PORT on the default host).
pub fn endpoint_from(pub_endpoint: Option<&str>, port: Option<u16>) -> String {
    match (pub_endpoint, port) {
        (Some(e), _) => e.to_string(),
        (None, Some(p)) => format!("tcp://{DEFAULT_HOST}:{p}"),
        (None, None) => DEFAULT_ENDPOINT.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_follow_the_flags() {
        assert_eq!(endpoint_from(None, None), "tcp://127.0.0.101:5555");
        assert_eq!(endpoint_from(None, Some(6000)), "tcp://127.0.0.101:6000");
        assert_eq!(
            endpoint_from(Some("ipc:///tmp/x"), Some(6000)),
            "ipc:///tmp/x"
        );
    }

    #[test]
    fn binding_a_taken_endpoint_is_a_clear_error() {
        let a = Publisher::bind("tcp://127.0.0.1:*", Format::V1, 10).unwrap();
        let e = Publisher::bind(a.endpoint(), Format::V1, 10)
            .err()
            .expect("second bind must fail");
        assert_eq!(e.source, zmq::Error::EADDRINUSE);
        assert!(e.to_string().contains(a.endpoint()), "{e}");
    }

    #[test]
    fn a_full_subscriber_is_counted_and_the_others_still_receive() {
        let mut p = Publisher::bind("tcp://127.0.0.1:*", Format::V1, 1000).unwrap();
        let ctx = zmq::Context::new();
        let sub = || {
            let s = ctx.socket(zmq::SUB).unwrap();
            s.set_rcvhwm(10).unwrap();
            s.set_subscribe(b"").unwrap();
            s.connect(p.endpoint()).unwrap();
            s
        };
        let (slow, fast) = (sub(), sub());
        for _ in 0..500 {
            p.poll_subscriptions();
            if p.stats().subscriptions == 2 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(p.stats().subscriptions, 2, "both subscriptions seen");
        let n = 3_000u64;
        let reader = std::thread::spawn(move || {
            let mut got = 0u64;
            while fast.recv_bytes(0).map(|m| m.len()) == Ok(16_920) {
                got += 1;
            }
            got
        });
        // The slow subscriber never reads: its socket buffers and then its
        // queue of 1000 fill up. The fast one keeps up.
        let msg = vec![7u8; 16_920];
        for i in 0..n {
            p.send(&msg);
            if i % 20 == 0 {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
        p.send(b"end");
        let s = p.stats();
        assert!(s.overflows > 0, "the slow subscriber overflowed: {s}");
        assert_eq!(s.sent, n + 1, "{s}");
        assert_eq!(s.errors, 0);
        assert_eq!(
            reader.join().unwrap(),
            n,
            "the fast subscriber got every message"
        );
        drop(slow);
    }

    fn subscriber(ctx: &zmq::Context, p: &mut Publisher) -> zmq::Socket {
        let s = ctx.socket(zmq::SUB).unwrap();
        s.set_subscribe(b"").unwrap();
        s.set_rcvtimeo(5_000).unwrap();
        s.connect(p.endpoint()).unwrap();
        for _ in 0..500 {
            p.poll_subscriptions();
            if p.stats().subscriptions == 1 {
                return s;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("no subscription seen");
    }

    /// Builds `frames` frames of a 2-module camera, handing each event to `f`.
    fn build_events(frames: u64, mut f: impl FnMut(&mut crate::builder::Event<'_>)) {
        use crate::builder::{Builder, BuilderConfig, Datagram};
        use crate::packet::{Readout, module_addr};
        use zerocopy::IntoBytes;
        let mut b = Builder::new(BuilderConfig {
            modules: Some(0b11),
            ..Default::default()
        });
        for fr in 0..frames {
            for m in 0..2u8 {
                let mut d = Vec::new();
                for i in 0..10 {
                    let ts = 1_000_000 + (fr * 10 + i) * 4_000_000;
                    let adc: [u16; 64] =
                        std::array::from_fn(|p| (ts / 1000) as u16 ^ (p as u16 * 31) ^ m as u16);
                    d.extend_from_slice(Readout::new(ts, ts + 5, &adc).as_bytes());
                }
                let dg = Datagram {
                    payload: &d,
                    src: module_addr([127, 0, 0, 1].into(), m),
                    arrival_ns: fr,
                    truncated: false,
                };
                b.push(dg, &mut |mut ev: crate::builder::Event<'_>| f(&mut ev));
            }
        }
    }

    #[test]
    fn lent_events_arrive_byte_for_byte_and_every_buffer_comes_back() {
        for format in [Format::V1, Format::V2] {
            let mut p = Publisher::bind("tcp://127.0.0.1:*", format, 100_000).unwrap();
            let ctx = zmq::Context::new();
            let sub = subscriber(&ctx, &mut p);
            // More events than spare buffers: buffers must come back to be reused.
            let frames = (LEND_BUFFERS as u64 * 3) / 10;
            let mut expected = Vec::new();
            build_events(frames, |ev| expected.push(ev.encode(format).to_vec()));
            build_events(frames, |ev| p.send_event(ev));
            assert_eq!(p.stats().sent, expected.len() as u64);
            for (i, want) in expected.iter().enumerate() {
                let got = sub
                    .recv_bytes(0)
                    .unwrap_or_else(|e| panic!("event {i}: {e}"));
                assert_eq!(&got, want, "{format:?} event {i} differs");
            }
            drop(sub);
            // With the subscriber gone every lent buffer returns.
            let mut back = 0;
            for _ in 0..500 {
                back = p.at_hand();
                if back == LEND_BUFFERS {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            assert_eq!(
                back, LEND_BUFFERS,
                "{format:?}: every lent buffer came back"
            );
        }
    }

    #[test]
    fn warming_up_before_a_burst_sends_a_subscriber_nothing() {
        let mut p = Publisher::bind("tcp://127.0.0.1:*", Format::V1, 100).unwrap();
        let ctx = zmq::Context::new();
        let sub = subscriber(&ctx, &mut p);
        // Idle for longer than COLD_AFTER_NS before each burst.
        let mut now = 0;
        let mut expected = Vec::new();
        for burst in 0..3 {
            now += 10 * COLD_AFTER_NS;
            p.prepare(now);
            p.prepare(now + 1);
            let msg = vec![burst as u8; 16_920];
            p.send(&msg);
            expected.push(msg);
        }
        for (i, want) in expected.iter().enumerate() {
            assert_eq!(&sub.recv_bytes(0).unwrap(), want, "message {i}");
        }
        sub.set_rcvtimeo(200).unwrap();
        assert_eq!(sub.recv_bytes(0), Err(zmq::Error::EAGAIN), "nothing else");
        assert_eq!(p.stats().sent, 3);
    }

    #[test]
    fn without_subscribers_lent_buffers_come_back_at_once() {
        let mut p = Publisher::bind("tcp://127.0.0.1:*", Format::V1, 10).unwrap();
        build_events(LEND_BUFFERS as u64, |ev| p.send_event(ev));
        assert_eq!(p.stats().sent, 10 * LEND_BUFFERS as u64);
        assert_eq!(p.at_hand(), LEND_BUFFERS);
    }

    #[test]
    fn the_buffer_returned_last_is_lent_next_so_few_buffers_stay_in_use() {
        // Without subscribers every lent buffer comes back at once. Taken
        // last-in first-out, the events of a steady camera keep cycling
        // through the same few buffers (in cache); first-in first-out they
        // would walk through every spare in turn.
        let mut p = Publisher::bind("tcp://127.0.0.1:*", Format::V1, 10).unwrap();
        let mut seen = std::collections::HashSet::new();
        build_events(LEND_BUFFERS as u64, |ev| {
            seen.insert(ev.buf() as *const EventBuf as usize);
            p.send_event(ev)
        });
        assert_eq!(p.stats().sent, 10 * LEND_BUFFERS as u64);
        assert!(
            seen.len() <= 20,
            "{} distinct buffers held events, of {LEND_BUFFERS} spares",
            seen.len()
        );
    }
}
