"""Read the HDF5 files that ssdaq-write and ssdaq-replay --hdf5 write.

Both layouts (docs/formats.md) open the same way; h5py and numpy are all it
needs:

    from ssdaq_tools.reader import SSFile
    with SSFile("run/ssdaq-20261202T190000Z.h5") as f:
        print(f.layout, len(f), f.attrs["missed_events"])
        for ev in f:                       # Event: number, timestamp, data (32 x 64 mV) ...
            print(ev.number, ev.present.sum())
        mean = f.data(0, 1000).mean(axis=0)  # a (32, 64) float32 array

A file still being written opens too (it is flushed every second): it
shows the rows written up to its last flush.
"""

import h5py
import numpy as np

TABLE = "SlowSignal/readout"
SEED = "seed"
SUCCESSOR = "successor"


class Event:
    """One event read from a file.

    number     -- event_number (seed) or iro (successor)
    run        -- runt_number (seed; 0 where the events carried none), None for successor
    timestamp  -- ev_time (seed) or time (successor): mean primary timestamp, ns
    data       -- float32 [32, 64] mV; a missing module's row is NaN
    timestamps -- uint64 [32, 2] (primary, aux) per module (seed), else None
    cpu_time   -- (seconds, nanoseconds) (successor), else None
    """

    __slots__ = ("number", "run", "timestamp", "data", "timestamps", "cpu_time")

    def __init__(self, number, run, timestamp, data, timestamps, cpu_time):
        self.number = number
        self.run = run
        self.timestamp = timestamp
        self.data = data
        self.timestamps = timestamps
        self.cpu_time = cpu_time

    @property
    def present(self):
        """Boolean [32]: which modules are in this event."""
        return ~np.isnan(self.data[:, 0])

    def __repr__(self):
        return "Event(number=%d, timestamp=%d, modules=%d/32)" % (
            self.number,
            self.timestamp,
            int(self.present.sum()),
        )


def layout_of(table):
    """'seed' or 'successor', from the table's columns."""
    names = set(table.dtype.names or ())
    if {"event_number", "ev_time", "data"} <= names:
        return SEED
    if {"iro", "time", "data"} <= names:
        return SUCCESSOR
    raise ValueError("%s is neither the seed nor the successor layout (columns: %s)" % (TABLE, sorted(names)))


class SSFile:
    """An ssdaq HDF5 file, either layout."""

    def __init__(self, path, batch=1024):
        self.path = path
        self._f = h5py.File(path, "r")
        if TABLE not in self._f:
            self._f.close()
            raise ValueError("%s has no %s table: not an ssdaq slow-signal file" % (path, TABLE))
        self.table = self._f[TABLE]
        self.layout = layout_of(self.table)
        self.batch = batch

    @property
    def attrs(self):
        """The table's attributes (run number, source, start and end time, gaps ...)."""
        return dict(self.table.attrs)

    def __len__(self):
        return self.table.shape[0]

    def read(self, start=0, stop=None):
        """Rows start..stop as a numpy structured array."""
        return self.table[start:stop]

    def data(self, start=0, stop=None):
        """mV of rows start..stop: float32 [n, 32, 64]."""
        return self.table.fields("data")[start:stop]

    def _events(self, rows):
        if self.layout == SEED:
            for r in rows:
                yield Event(int(r["event_number"]), int(r["runt_number"]), int(r["ev_time"]),
                            r["data"], r["time_stamps"], None)
        else:
            for r in rows:
                yield Event(int(r["iro"]), None, int(r["time"]), r["data"], None,
                            (int(r["cpu_t_s"]), int(r["cpu_t_ns"])))

    def __iter__(self):
        n = len(self)
        for start in range(0, n, self.batch):
            yield from self._events(self.table[start : min(start + self.batch, n)])

    def close(self):
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
