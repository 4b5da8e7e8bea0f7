//! The subscriber side: connect to an ssdaqd publisher and receive events.
//!
//! [`EventListener`] is what a Rust program uses to consume the event stream
//! (the example `ssdaq-listen` and writers are built on it). It connects a
//! ZeroMQ XSUB socket (a SUB that can unsubscribe without dropping what is
//! queued), subscribes to everything, and checks and decodes each message
//! in place as wire format v1 or v2 ([`EventView::decode`]). Because event numbers go
//! 1, 2, 3 … it can tell how many events it missed (a slow subscriber loses
//! events at its high-water mark; the publisher never waits for it).
//!
//! It owns its socket and nothing else; it never blocks longer than asked.

pub mod control;

use std::fmt;
use std::time::Duration;

use ssdaq_wire::event::{DecodeError, EventView};

/// Messages queued in the subscriber before it starts losing events.
pub const DEFAULT_RCVHWM: i32 = 10_000;

/// The largest step forward in event numbers taken as the same numbering.
pub const MAX_NUMBER_JUMP: u64 = 1 << 32;

/// Something went wrong receiving.
#[derive(Debug)]
pub enum ListenError {
    /// ZeroMQ refused (bad endpoint, context terminated …).
    Zmq {
        endpoint: String,
        source: zmq::Error,
    },
    /// Not an endpoint ZeroMQ can connect to (`tcp://HOST:PORT`, `ipc://PATH` …).
    Endpoint {
        endpoint: String,
        source: zmq::Error,
    },
    /// A message that is not an event (its bytes were dropped).
    Decode(DecodeError),
}

impl fmt::Display for ListenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenError::Zmq { endpoint, source } => write!(f, "{endpoint}: {source}"),
            ListenError::Endpoint { endpoint, source } => write!(
                f,
                "{endpoint:?} is not an endpoint to subscribe to ({source}); give \
                 tcp://HOST:PORT (e.g. tcp://127.0.0.101:5555) or ipc://PATH"
            ),
            ListenError::Decode(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ListenError {}

/// One received event. Decoding is in place; [`ReceivedEvent::view`] reads it.
pub struct ReceivedEvent {
    msg: zmq::Message,
}

impl ReceivedEvent {
    pub fn view(&self) -> EventView<'_> {
        EventView::parse(&self.msg).expect("validated when received")
    }

    /// The message exactly as published.
    pub fn bytes(&self) -> &[u8] {
        &self.msg
    }
}

/// A subscriber to an ssdaqd event stream.
pub struct EventListener {
    sock: zmq::Socket,
    _ctx: zmq::Context,
    endpoint: String,
    last_number: Option<u64>,
    received: u64,
    missed: u64,
}

impl EventListener {
    /// Connects to `endpoint` (e.g. `tcp://127.0.0.101:5555`) and subscribes
    /// to everything. ZeroMQ connects in the background: this succeeds even
    /// if the publisher is not up yet, and events flow once it is.
    pub fn connect(endpoint: &str) -> Result<EventListener, ListenError> {
        let err = |source| ListenError::Zmq {
            endpoint: endpoint.to_string(),
            source,
        };
        let ctx = zmq::Context::new();
        // XSUB, not SUB: the same subscriber to a PUB, with the
        // subscription sent as a message (0x01 + topic; libzmq keeps it and
        // sends it again on a reconnect), and no filtering of what is
        // already queued here, so an unsubscribe stops the publisher without
        // dropping what it sent before (`EventListener::unsubscribe`).
        let sock = ctx.socket(zmq::XSUB).map_err(err)?;
        sock.set_rcvhwm(DEFAULT_RCVHWM).map_err(err)?;
        sock.set_linger(0).map_err(err)?;
        sock.send(&[1u8][..], 0).map_err(err)?;
        sock.connect(endpoint).map_err(|source| match source {
            zmq::Error::EINVAL | zmq::Error::EPROTONOSUPPORT => ListenError::Endpoint {
                endpoint: endpoint.to_string(),
                source,
            },
            _ => err(source),
        })?;
        Ok(EventListener {
            sock,
            _ctx: ctx,
            endpoint: endpoint.to_string(),
            last_number: None,
            received: 0,
            missed: 0,
        })
    }

    /// Waits up to `timeout` for the next event; `Ok(None)` on timeout or
    /// when a signal interrupted the wait.
    pub fn recv(&mut self, timeout: Duration) -> Result<Option<ReceivedEvent>, ListenError> {
        let err = |source| ListenError::Zmq {
            endpoint: self.endpoint.clone(),
            source,
        };
        let ms = timeout.as_millis().min(i64::MAX as u128) as i64;
        match self.sock.poll(zmq::POLLIN, ms) {
            Ok(0) => return Ok(None),
            Ok(_) => {}
            // A signal arrived while waiting (SIGINT to stop, say): the
            // caller looks at its flags and calls again.
            Err(zmq::Error::EINTR) => return Ok(None),
            Err(e) => return Err(err(e)),
        }
        let msg = self.sock.recv_msg(zmq::DONTWAIT).map_err(err)?;
        let number = EventView::decode(&msg)
            .map_err(ListenError::Decode)?
            .number();
        match self.last_number {
            // No daemon publishes 2^32 events (200 days at the camera's
            // rate) between two a subscriber receives: not its numbering.
            Some(last) if number >= last.saturating_add(MAX_NUMBER_JUMP) => {
                return Err(ListenError::Decode(DecodeError::Header(
                    "an event number 2^32 or more ahead of the last",
                )));
            }
            Some(last) if number > last => self.missed += number - last - 1,
            // The publisher restarted its numbering (a new ssdaqd): events
            // 1..number were published before this one reached us.
            Some(_) => self.missed += number - 1,
            None => {}
        }
        self.last_number = Some(number);
        self.received += 1;
        Ok(Some(ReceivedEvent { msg }))
    }

    /// Stops the subscription: the publisher sends nothing more once it
    /// has seen this, and what it sent before (queued here, in the kernel,
    /// or in its own queue) still arrives. What a stop that must not lose
    /// the events already published calls, before reading to the end.
    pub fn unsubscribe(&mut self) -> Result<(), ListenError> {
        self.sock
            .send(&[0u8][..], zmq::DONTWAIT)
            .map_err(|source| ListenError::Zmq {
                endpoint: self.endpoint.clone(),
                source,
            })
    }

    /// The number of the last event received.
    pub fn last_number(&self) -> Option<u64> {
        self.last_number
    }

    /// Events received so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Events missed so far: gaps in the event numbers since the first one
    /// received (a subscriber that fell behind, or was not yet connected).
    pub fn missed(&self) -> u64 {
        self.missed
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Disconnects. (Dropping the listener does the same.)
    pub fn close(self) {}
}
