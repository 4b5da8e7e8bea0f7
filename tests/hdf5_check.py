"""Checks HDF5 files against the events that were published, the way
astronomers' code reads them: h5py, PyTables (as the original's
EventFileWriter described the table), the successor's reading code, and
ssdaq_tools.reader. Run by tests/hdf5.rs:

    python hdf5_check.py MESSAGES FORMAT LAYOUT FILE [FILE ...]

MESSAGES is the published messages back to back, in FORMAT (v1 or v2); FILE ... are
the files of one set in order. Prints "ok <events>" or fails with the first
difference.
"""

import sys

import h5py
import numpy as np
import tables

from ssdaq_tools.listener import V1_LEN, V2_LEN, decode
from ssdaq_tools.reader import SSFile

SSL2ASIC_CH = [29, 23, 21, 22, 30, 27, 24, 0, 25, 31, 20, 18, 28, 26, 17, 3, 2, 16, 10, 12, 19, 4,
               15, 9, 1, 8, 11, 14, 6, 7, 5, 13, 62, 56, 54, 53, 59, 60, 55, 50, 57, 58, 52, 49, 61,
               63, 32, 35, 51, 47, 42, 46, 33, 34, 45, 48, 44, 36, 41, 43, 40, 38, 39, 37]


# The original's table description (its EventFileWriter), as PyTables sees it.
class SSEventTableDs(tables.IsDescription):
    event_number = tables.UInt64Col()
    runt_number = tables.UInt64Col()
    ev_time = tables.UInt64Col()
    data = tables.Float32Col((32, 64))
    time_stamps = tables.UInt64Col((32, 2))


# The successor's SSDataWriter description.
class SSReadoutTableDs(tables.IsDescription):
    iro = tables.UInt64Col()
    time = tables.UInt64Col()
    cpu_t = tables.Float64Col()
    cpu_t_s = tables.UInt64Col()
    cpu_t_ns = tables.UInt64Col()
    data = tables.Float32Col((32, 64))


class SuccessorReader:
    """The successor's SSDataReader, its reading code (layout only): what it
    asks of a file."""

    def __init__(self, filename):
        self.file = tables.open_file(filename, mode="r")
        self.table = self.file.root.SlowSignal.readout
        self.attrs = self.table.attrs
        self.n_readouts = len(self.table)

    def read(self, start=None, stop=None, step=None):
        for r in self.table.iterrows(start, stop, step):
            self.iro = r["iro"]
            self.time = r["time"]
            self.cpu_t = r["cpu_t"]
            self.cpu_t_s = r["cpu_t_s"]
            self.cpu_t_ns = r["cpu_t_ns"]
            self.raw_data = r["data"]
            yield self.raw_data

    def close(self):
        self.file.close()


def fail(msg):
    print("FAIL: " + msg)
    sys.exit(1)


def messages(path, fmt):
    b = open(path, "rb").read()
    n = {"v1": V1_LEN, "v2": V2_LEN}[fmt]
    if len(b) % n:
        fail("%s: %d bytes is not a whole number of %s messages" % (path, len(b), fmt))
    return [decode(b[i : i + n]) for i in range(0, len(b), n)]


def same_f32(a, b):
    return np.array_equal(np.asarray(a, np.float32), np.asarray(b, np.float32), equal_nan=True)


def check_dtype(dt, layout):
    desc = SSEventTableDs if layout == "seed" else SSReadoutTableDs
    want = tables.Description(desc().columns)._v_dtype
    names = list(dt.names)
    if names[: len(want.names)] != list(want.names) or names[len(want.names) :] != ["module_mask"]:
        fail("columns %s, PyTables' description gives %s (+ module_mask)" % (names, list(want.names)))
    for n in want.names:
        if dt.fields[n][0] != want.fields[n][0] or dt.fields[n][1] != want.fields[n][1]:
            fail("column %s: %s at %d, PyTables' description: %s at %d"
                 % (n, dt.fields[n][0], dt.fields[n][1], want.fields[n][0], want.fields[n][1]))


def main():
    msgs_path, fmt, layout, files = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
    evs = messages(msgs_path, fmt)
    rows = []
    for f in files:
        with h5py.File(f, "r") as h:
            t = h["SlowSignal/readout"]
            check_dtype(t.dtype, layout)
            if t.dtype["data"].shape != (32, 64) or t["data"].shape[1:] != (32, 64):
                fail("data is not one (32, 64) array per row")
            if t.compression not in (None, "gzip"):
                fail("compression %s: h5py must read it without plugins" % t.compression)
            a = dict(t.attrs)
            n = t.shape[0]
            if a["events_written"] != n or a["NROWS"] != n:
                fail("%s: events_written %s, NROWS %s, rows %d" % (f, a["events_written"], a["NROWS"], n))
            part = t[:]
            nums = part["event_number" if layout == "seed" else "iro"].astype(np.int64)
            missed = int(np.sum(np.maximum(np.diff(nums) - 1, 0))) if n > 1 else 0
            if a["missed_events"] != missed:
                fail("%s: missed_events %s, the numbers say %d" % (f, a["missed_events"], missed))
            for k in ("ssdaq_source", "ssdaq_command_line", "start_time", "end_time", "ssdaq_writer"):
                if k not in a:
                    fail("%s: no attribute %s" % (f, k))
            rows.append(part)
        with tables.open_file(f) as p:
            if p.title != "CHEC-S Slow signal monitor data":
                fail("file title %r" % p.title)
            g = p.root.SlowSignal
            if not isinstance(g, tables.Group) or g._v_title != "Slow signal data":
                fail("/SlowSignal is not a PyTables group titled 'Slow signal data'")
            tab = g.readout
            if not isinstance(tab, tables.Table) or tab.title != "Slow signal readout":
                fail("readout is not a PyTables Table titled 'Slow signal readout'")
            if tab.coldtypes["data"].shape != (32, 64):
                fail("PyTables sees data as %s" % (tab.coldtypes["data"],))
            ptrows = tab.read()
            if not all(np.array_equal(ptrows[c], rows[-1][c], equal_nan=True) for c in ptrows.dtype.names):
                fail("PyTables and h5py read different values")
            if layout == "successor":
                if tab.attrs.ss_data_version != 0 or list(tab.attrs.ssl2asic_ch) != SSL2ASIC_CH:
                    fail("successor attributes: ss_data_version %r, ssl2asic_ch %r"
                         % (tab.attrs.ss_data_version, tab.attrs.ssl2asic_ch))
                if not str(tab.attrs.ssdaq_version):
                    fail("no ssdaq_version")
    rows = np.concatenate(rows) if rows else []
    if len(rows) != len(evs):
        fail("%d rows in the files, %d events published" % (len(rows), len(evs)))
    for r, ev in zip(rows, evs):
        present = sum(1 << m for m in range(32) if ev.present[m])
        if r["module_mask"] != present:
            fail("event %d: module_mask %x, present %x" % (ev.number, r["module_mask"], present))
        if not same_f32(r["data"], ev.data):
            fail("event %d: data differs from float32 of the published mV" % ev.number)
        if layout == "seed":
            got = (r["event_number"], r["ev_time"], r["runt_number"])
            want = (ev.number, ev.timestamp, ev.run if ev.run is not None else r["runt_number"])
            if got != want:
                fail("event %d: (number, ev_time, runt_number) %s, published %s" % (ev.number, got, want))
            tss = ev.timestamps if ev.timestamps is not None else np.zeros((32, 2), np.uint64)
            if not np.array_equal(r["time_stamps"], tss):
                fail("event %d: time_stamps differ" % ev.number)
        else:
            s, ns = ev.cpu_time if ev.cpu_time is not None else (0, 0)
            got = (r["iro"], r["time"], r["cpu_t_s"], r["cpu_t_ns"])
            if got != (ev.number, ev.timestamp, s, ns) or r["cpu_t"] != s + ns * 1e-9:
                fail("event %d: (iro, time, cpu_t_s, cpu_t_ns) %s, published %s" % (ev.number, got, (ev.number, ev.timestamp, s, ns)))
    # The reader helper iterates the same events.
    seen = 0
    for f in files:
        with SSFile(f) as sf:
            if sf.layout != layout:
                fail("reader says %s is %s" % (f, sf.layout))
            for e in sf:
                ev = evs[seen]
                if e.number != ev.number or e.timestamp != ev.timestamp or not same_f32(e.data, ev.data):
                    fail("reader: event %d differs" % ev.number)
                seen += 1
    if seen != len(evs):
        fail("reader iterated %d events of %d" % (seen, len(evs)))
    # The successor's own reading code.
    if layout == "successor":
        k = 0
        for f in files:
            r = SuccessorReader(f)
            for raw in r.read():
                ev = evs[k]
                if r.iro != ev.number or not same_f32(raw, ev.data):
                    fail("successor reader: readout %d differs" % ev.number)
                k += 1
            r.close()
        if k != len(evs):
            fail("successor reader read %d of %d" % (k, len(evs)))
    print("ok %d" % len(evs))


if __name__ == "__main__":
    main()
