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
//! counted as a high-water-mark drop, then sent again with NODROP off, so
//! only the slow subscriber misses it and the others still get it.

use std::fmt;

/// Default endpoint, as the original `ssdaqd.py`.
pub const DEFAULT_ENDPOINT: &str = "tcp://127.0.0.101:5555";
/// Default host of the endpoint when only `-p PORT` is given.
pub const DEFAULT_HOST: &str = "127.0.0.101";
/// Messages queued per subscriber before it counts as slow (~17 MB of v1).
pub const DEFAULT_HWM: i32 = 1000;
/// How long closing waits for queued messages to leave.
const LINGER_MS: i32 = 2000;

/// The publisher could not start.
#[derive(Debug)]
pub struct BindError {
    pub endpoint: String,
    pub source: zmq::Error,
}

impl fmt::Display for BindError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot bind the publisher to {}: {}", self.endpoint, self.source)?;
        match self.source {
            zmq::Error::EADDRINUSE => write!(f, " (another ssdaqd running? choose another with -p PORT or --pub)"),
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
    /// Messages at least one subscriber missed because its queue was full.
    pub hwm_drops: u64,
    /// Sends that failed for another reason (dropped).
    pub errors: u64,
    /// Subscriptions currently held by connected subscribers.
    pub subscriptions: i64,
}

/// The publishing socket.
pub struct Publisher {
    // The socket must close before its context terminates: field order matters.
    sock: zmq::Socket,
    _ctx: zmq::Context,
    endpoint: String,
    stats: PublishStats,
    nodrop: bool,
}

/// A change in subscriptions, for the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subscription {
    Joined,
    Left,
}

impl Publisher {
    /// Binds a publisher at `endpoint` with a per-subscriber queue of `hwm` messages.
    pub fn bind(endpoint: &str, hwm: i32) -> Result<Publisher, BindError> {
        let err = |source| BindError { endpoint: endpoint.to_string(), source };
        let ctx = zmq::Context::new();
        let sock = ctx.socket(zmq::XPUB).map_err(err)?;
        sock.set_sndhwm(hwm).map_err(err)?;
        sock.set_linger(LINGER_MS).map_err(err)?;
        sock.set_xpub_verbose(true).map_err(err)?;
        let mut p = Publisher { sock, _ctx: ctx, endpoint: endpoint.to_string(), stats: PublishStats::default(), nodrop: false };
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

    /// Hands one message to ZeroMQ without blocking.
    #[inline]
    pub fn send(&mut self, msg: &[u8]) {
        match self.sock.send(msg, zmq::DONTWAIT) {
            Ok(()) => self.stats.sent += 1,
            Err(zmq::Error::EAGAIN) => {
                // Some subscriber's queue is full: count it, and deliver to
                // the others with NODROP off for this one message.
                self.stats.hwm_drops += 1;
                let lossy = self.set_nodrop(false).and_then(|_| self.sock.send(msg, zmq::DONTWAIT));
                let _ = self.set_nodrop(true);
                match lossy {
                    Ok(()) => self.stats.sent += 1,
                    Err(_) => self.stats.errors += 1,
                }
            }
            Err(_) => self.stats.errors += 1,
        }
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
            "sent {}  hwm_drops {}  errors {}  subscriptions {}",
            self.sent, self.hwm_drops, self.errors, self.subscriptions
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
        assert_eq!(endpoint_from(Some("ipc:///tmp/x"), Some(6000)), "ipc:///tmp/x");
    }

    #[test]
    fn binding_a_taken_endpoint_is_a_clear_error() {
        let a = Publisher::bind("tcp://127.0.0.1:*", 10).unwrap();
        let e = Publisher::bind(a.endpoint(), 10).err().expect("second bind must fail");
        assert_eq!(e.source, zmq::Error::EADDRINUSE);
        assert!(e.to_string().contains(a.endpoint()), "{e}");
    }

    #[test]
    fn a_full_subscriber_is_counted_and_the_others_still_receive() {
        let mut p = Publisher::bind("tcp://127.0.0.1:*", 1000).unwrap();
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
        assert!(s.hwm_drops > 0, "the slow subscriber overflowed: {s}");
        assert_eq!(s.sent, n + 1, "{s}");
        assert_eq!(s.errors, 0);
        assert_eq!(reader.join().unwrap(), n, "the fast subscriber got every message");
        drop(slow);
    }
}
