"""Subscribe to ssdaqd and receive decoded CHEC-S slow-signal events.

A small module for astronomers: numpy + pyzmq, nothing else.

    from ssdaq_tools.listener import Listener
    with Listener("tcp://127.0.0.101:5555") as listener:
        for ev in listener:                  # blocks; or listener.recv(timeout=1.0)
            print(ev.number, ev.timestamp, ev.data.shape)   # data: 32 x 64 mV, NaN rows = missing

Both wire formats ssdaqd can publish are understood (PROTOCOL.md §4, §5):
v1 (`SSEvent`, 16 920 bytes, the default) and v2 (`SSReadout`, 16 416 bytes).
Event numbers go 1, 2, 3 ...; `Listener.missed` counts the gaps (events lost
because this subscriber fell behind the publisher's high-water mark).

Run it as a program to print events:  ssdaq-listen-py [ENDPOINT] [-n N] [-t MODULE]
"""

import argparse
import struct
import sys

import numpy as np
import zmq

DEFAULT_ENDPOINT = "tcp://127.0.0.101:5555"
V1_LEN = 16920
V2_LEN = 16416
N_MODULES = 32
N_PIXELS = 64


class Event:
    """One camera event.

    number     -- event number (v1) or readout number (v2), 1, 2, 3 ...
    run        -- run number (v1), None for v2
    timestamp  -- mean primary (TACK) timestamp of the modules present, ns
    data       -- float64 array [32, 64] of mV; a missing module's row is NaN
    timestamps -- uint64 array [32, 2] of (primary, aux) ns per module, zero
                  for missing modules (v1); None for v2
    cpu_time   -- (seconds, nanoseconds) of arrival (v2), None for v1
    """

    __slots__ = ("format", "number", "run", "timestamp", "data", "timestamps", "cpu_time")

    def __init__(self, fmt, number, run, timestamp, data, timestamps, cpu_time):
        self.format = fmt
        self.number = number
        self.run = run
        self.timestamp = timestamp
        self.data = data
        self.timestamps = timestamps
        self.cpu_time = cpu_time

    @property
    def present(self):
        """Boolean array [32]: which modules contributed to this event."""
        return ~np.isnan(self.data[:, 0])

    def __repr__(self):
        return "Event(format=%s, number=%d, timestamp=%d, modules=%d/32)" % (
            self.format,
            self.number,
            self.timestamp,
            int(self.present.sum()),
        )


def decode(msg):
    """Decodes one published message (bytes) into an Event."""
    b = bytes(msg) if not isinstance(msg, (bytes, bytearray, memoryview)) else msg
    if len(b) == V1_LEN:
        number, run, ts = struct.unpack_from("<3Q", b, 0)
        data = np.frombuffer(b, "<f8", N_MODULES * N_PIXELS, 24).reshape(N_MODULES, N_PIXELS)
        tss = np.frombuffer(b, "<u8", N_MODULES * 2, 16408).reshape(N_MODULES, 2)
        return Event("v1", number, run, ts, data, tss, None)
    if len(b) == V2_LEN:
        number, tack, cpu_s, cpu_ns = struct.unpack_from("<4Q", b, 0)
        data = np.frombuffer(b, "<f8", N_MODULES * N_PIXELS, 32).reshape(N_MODULES, N_PIXELS)
        return Event("v2", number, None, tack, data, None, (cpu_s, cpu_ns))
    raise ValueError(
        "a message of %d bytes is neither wire format v1 (%d) nor v2 (%d)" % (len(b), V1_LEN, V2_LEN)
    )


class Listener:
    """A ZeroMQ subscriber to ssdaqd's events."""

    def __init__(self, endpoint=DEFAULT_ENDPOINT, rcvhwm=10000):
        self.endpoint = endpoint
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.SUB)
        self._sock.setsockopt(zmq.RCVHWM, rcvhwm)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.SUBSCRIBE, b"")
        self._sock.connect(endpoint)
        self._last = None
        self.received = 0
        self.missed = 0

    def recv(self, timeout=None):
        """The next Event, or None if none arrives within `timeout` seconds
        (None: wait forever)."""
        ms = None if timeout is None else int(timeout * 1000)
        if self._sock.poll(ms) == 0:
            return None
        ev = decode(self._sock.recv(copy=True))
        if self._last is not None and ev.number > self._last:
            self.missed += ev.number - self._last - 1
        self._last = ev.number
        self.received += 1
        return ev

    def __iter__(self):
        while True:
            ev = self.recv()
            if ev is not None:
                yield ev

    def close(self):
        self._sock.close(0)
        self._ctx.term()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def main(argv=None):
    p = argparse.ArgumentParser(description="Print the events an ssdaqd publishes.")
    p.add_argument("endpoint", nargs="?", default=DEFAULT_ENDPOINT)
    p.add_argument("-n", "--count", type=int, help="exit after this many events")
    p.add_argument("-t", "--module", type=int, default=0, help="print this module's values")
    p.add_argument("--timeout", type=float, help="exit 1 if no event arrives for this many seconds")
    args = p.parse_args(argv)
    with Listener(args.endpoint) as listener:
        while args.count is None or listener.received < args.count:
            ev = listener.recv(args.timeout)
            if ev is None:
                print("no event for %.1f s" % args.timeout, file=sys.stderr)
                return 1
            print("event %d ts %d modules %d/32" % (ev.number, ev.timestamp, int(ev.present.sum())))
            print("  module %d (mV): %s" % (args.module, np.array2string(ev.data[args.module], precision=2)))
        print("received %d events, missed %d" % (listener.received, listener.missed), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
