//! One HDF5 file of events: created, appended to in batches, flushed, closed.
//!
//! [`EventFile`] owns an open file in one [`Layout`]: the PyTables groups
//! and attributes that make readers see a Table (`CLASS`, `TITLE`,
//! `VERSION`, `FIELD_n_NAME`, `NROWS` …), the table itself, and a buffer of
//! at most one chunk of rows. Rows reach the file a chunk at a time or at
//! [`EventFile::flush`]; a flush also writes the table's running summary
//! (rows, event numbers, gaps, end time) and the library's metadata, so a
//! file is valid up to its last flush if the writer is killed.
//!
//! It never overwrites: the file is created with `O_EXCL` first. It never
//! fills a disk: before each write it checks the free space and, if there is
//! not room for the write and the metadata with a margin, closes the file
//! cleanly and says so. It reads no clock: callers pass times in.

use std::path::{Path, PathBuf};

use ssdaq_wire::event::{EventView, Format};

use crate::chunk::ChunkEncoder;
use crate::h5::{
    self, H5T_IEEE_F32LE, H5T_IEEE_F64LE, H5T_STD_I32LE, H5T_STD_I64LE, H5T_STD_U32LE,
    H5T_STD_U64LE, Id, MemberType,
};
use crate::layout::{Column, Layout, SSL2ASIC_CH};

/// PyTables' names, titles and versions, written as it writes them.
const FILE_TITLE: &str = "CHEC-S Slow signal monitor data";
const GROUP: &str = "SlowSignal";
const GROUP_TITLE: &str = "Slow signal data";
const TABLE: &str = "readout";
const TABLE_TITLE: &str = "Slow signal readout";
/// Rows on disk and the time (Unix ns) of each flush.
const FLUSH_LOG: &str = "flush_log";
const FLUSH_LOG_TITLE: &str = "rows written and time (ns) at each flush of the readout table";

/// Rows per HDF5 chunk (one chunk is about 560 kB uncompressed).
pub const CHUNK_ROWS: usize = 64;

/// The longest the rows of a partly filled chunk wait for it to fill
/// before a flush writes them anyway. A chunk written partly filled is
/// written again when it fills (and its first copy's space is lost: see
/// `h5::create_flush_log`); at the camera's 250 events/s a chunk fills in a
/// quarter of a second, so this never happens, and at a trickle the rows
/// are still on disk within a flush interval plus this.
pub const TAIL_MAX_AGE_NS: u64 = 500_000_000;

/// Free space kept on the disk beyond what a write needs (metadata, other users).
pub const DISK_RESERVE: u64 = 8 << 20;

/// How a file is written.
#[derive(Clone, Debug)]
pub struct Options {
    pub layout: Layout,
    /// deflate level 0..=9 (0: uncompressed).
    pub compress: u8,
    /// Run number for events that carry none (wire format v2).
    pub run_number: u64,
    /// Extra string attributes of the table (source, command lines, settings).
    pub attrs: Vec<(String, String)>,
    /// Free bytes left on the disk beyond any write ([`DISK_RESERVE`]).
    pub disk_reserve: u64,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            layout: Layout::Seed,
            compress: 1,
            run_number: 0,
            attrs: Vec::new(),
            disk_reserve: DISK_RESERVE,
        }
    }
}

/// Why a file could not be written. The file stays valid up to its last flush.
#[derive(Debug)]
pub enum Error {
    /// The path could not be created (exists, no such directory, no permission …).
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Not enough free space for the next write: the file was closed cleanly.
    DiskFull {
        path: PathBuf,
        free: u64,
        needed: u64,
        /// Rows in the closed file.
        rows: u64,
        /// Events appended to it that are not in it.
        unwritten: u64,
    },
    /// The HDF5 library refused.
    Hdf5 { path: PathBuf, what: String },
    /// Files cannot be written there (checked before any is started).
    Path { path: PathBuf, why: String },
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Create { path, source } => {
                write!(f, "cannot create {}: {source}", path.display())
            }
            Error::DiskFull {
                path,
                free,
                needed,
                rows,
                unwritten,
            } => write!(
                f,
                "{}: the disk is full ({free} bytes free, the next chunk needs {needed} with the \
                 reserve): the file was closed, valid, with its first {rows} event(s); the \
                 {unwritten} after them are NOT in it",
                path.display()
            ),
            Error::Hdf5 { path, what } => write!(f, "{}: {what}", path.display()),
            Error::Path { path, why } => write!(f, "{}: {why}", path.display()),
        }
    }
}

impl std::error::Error for Error {}

/// What a file holds so far: the rows in the file, not those still
/// waiting in memory (its attributes say the same, so a file read while it
/// is written, or after a crash, describes itself).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FileSummary {
    /// Rows in the file.
    pub events: u64,
    pub first_number: Option<u64>,
    pub last_number: Option<u64>,
    /// Events missing between the first and the last (gaps in the numbers).
    pub missed: u64,
    /// Places where numbers jumped forward (each gap counts once).
    pub gaps: u64,
    /// Bit m set if module m was in any event.
    pub modules_seen: u32,
    pub run_number: Option<u64>,
    /// Events appended that never reached the file (the disk was full).
    pub unwritten: u64,
}

impl FileSummary {
    /// Counts row `r` as written (rows are counted in the order appended).
    fn add(&mut self, r: &RowFacts) {
        if let Some(last) = self.last_number
            && r.number > last + 1
        {
            self.missed += r.number - last - 1;
            self.gaps += 1;
        }
        self.first_number.get_or_insert(r.number);
        self.last_number = Some(r.number);
        self.events += 1;
        self.modules_seen |= r.modules;
        self.run_number.get_or_insert(r.run);
    }
}

/// What the summary needs of a row, kept until the row is in the file.
#[derive(Clone, Copy, Debug)]
struct RowFacts {
    number: u64,
    modules: u32,
    run: u64,
}

/// What must be closed, table and type before the file (HDF5 keeps a file
/// open until its last object is closed).
struct Handles {
    table: Id,
    row_type: Id,
    flush_log: Id,
    file: Id,
}

/// An HDF5 file being written.
pub struct EventFile {
    path: PathBuf,
    layout: Layout,
    run_default: u64,
    format: Format,
    /// The open handles; None once finished.
    open: Option<Handles>,
    /// The rows of the chunk being filled, back to back, from its first
    /// (row `rows - written_in_chunk` of the table); written whole when
    /// full, and rewritten partly filled by a flush that finds rows waiting.
    chunk: Vec<u8>,
    /// Rows of `chunk` that are in the file.
    written_in_chunk: usize,
    /// Bytes the chunk being filled takes in the file (0: not written yet).
    room: usize,
    /// Compressed bytes of the last full chunk (0: none yet): the room a
    /// partly filled chunk is given to grow into.
    full_len: usize,
    /// The summary facts of each row of `chunk`.
    facts: Vec<RowFacts>,
    encoder: ChunkEncoder,
    /// When the first row not yet in the file was appended.
    pending_since_ns: u64,
    /// Rows of the flush log.
    flushes: u64,
    disk_reserve: u64,
    summary: FileSummary,
    /// The newest time passed in (start, appends, flushes): the end time
    /// of a file closed without one (a full disk, a drop), so that times in
    /// the file never go backwards.
    latest_ns: u64,
}

impl EventFile {
    /// Creates `path` (which must not exist) for events of `format`, started
    /// at `start_ns` (Unix ns), with the groups, table and attributes.
    pub fn create(
        path: &Path,
        format: Format,
        start_ns: u64,
        opts: &Options,
    ) -> Result<EventFile, Error> {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|source| Error::Create {
                path: path.to_path_buf(),
                source,
            })?;
        let hdf5 = |what: String| Error::Hdf5 {
            path: path.to_path_buf(),
            what,
        };
        let layout = opts.layout;
        let file = h5::create_file(path).map_err(|e| {
            // Not left behind empty: a 0-byte .h5 breaks a reader's glob.
            let _ = std::fs::remove_file(path);
            hdf5(e)
        })?;
        let (table, row_type, flush_log) = (|| {
            pytables_node(&file, "GROUP", FILE_TITLE, "1.0")?;
            h5::set_str(&file, "PYTABLES_FORMAT_VERSION", "2.1")?;
            let group = h5::create_group(&file, GROUP)?;
            pytables_node(&group, "GROUP", GROUP_TITLE, "1.0")?;
            let row_type = row_type(layout)?;
            let table = h5::create_table(
                &group,
                TABLE,
                &row_type,
                &h5::TableOptions {
                    chunk_rows: CHUNK_ROWS,
                    deflate: opts.compress,
                },
            )?;
            pytables_node(&table, "TABLE", TABLE_TITLE, "2.7")?;
            let flush_log = h5::create_flush_log(&group, FLUSH_LOG)?;
            pytables_node(&flush_log, "EARRAY", FLUSH_LOG_TITLE, "1.1")?;
            h5::set_scalar(&flush_log, "EXTDIM", H5T_STD_I32LE, 0i32)?;
            for (i, m) in layout.members().iter().enumerate() {
                h5::set_str(&table, &format!("FIELD_{i}_NAME"), m.name)?;
                let fill = format!("FIELD_{i}_FILL");
                match m.column {
                    Column::U32 => h5::set_scalar(&table, &fill, H5T_STD_U32LE, 0u32)?,
                    Column::U64 | Column::ModuleTimestamps => {
                        h5::set_scalar(&table, &fill, H5T_STD_U64LE, 0u64)?
                    }
                    Column::F64 => h5::set_scalar(&table, &fill, H5T_IEEE_F64LE, 0f64)?,
                    Column::Mv => h5::set_scalar(&table, &fill, H5T_IEEE_F32LE, 0f32)?,
                }
            }
            h5::set_scalar(&table, "NROWS", H5T_STD_I64LE, 0i64)?;
            if layout == Layout::Successor {
                h5::set_scalar(&table, "ss_data_version", H5T_STD_I64LE, 0i64)?;
                h5::set_str(&table, "ssdaq_version", env!("CARGO_PKG_VERSION"))?;
                h5::set_i64_array(&table, "ssl2asic_ch", &SSL2ASIC_CH)?;
            }
            h5::set_str(
                &table,
                "ssdaq_writer",
                concat!("ssdaq ", env!("CARGO_PKG_VERSION")),
            )?;
            h5::set_str(&table, "ssdaq_layout", layout.name())?;
            h5::set_str(&table, "ssdaq_event_format", format.name())?;
            h5::set_str(&table, "start_time", &ssdaq_wire::utc::iso(start_ns))?;
            h5::set_scalar(&table, "start_time_ns", H5T_STD_U64LE, start_ns)?;
            for (k, v) in &opts.attrs {
                h5::set_str(&table, k, v)?;
            }
            Ok((table, row_type, flush_log))
        })()
        .map_err(hdf5)?;
        let mut f = EventFile {
            path: path.to_path_buf(),
            layout,
            run_default: opts.run_number,
            format,
            open: Some(Handles {
                table,
                row_type,
                flush_log,
                file,
            }),
            pending_since_ns: start_ns,
            flushes: 0,
            disk_reserve: opts.disk_reserve,
            chunk: Vec::with_capacity(CHUNK_ROWS * layout.row_len()),
            written_in_chunk: 0,
            room: 0,
            full_len: 0,
            facts: Vec::with_capacity(CHUNK_ROWS),
            encoder: ChunkEncoder::new(layout.row_len(), CHUNK_ROWS, opts.compress),
            summary: FileSummary::default(),
            latest_ns: start_ns,
        };
        f.flush(start_ns)?;
        Ok(f)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The wire format of the events this file was started for.
    pub fn format(&self) -> Format {
        self.format
    }

    /// What the file holds (rows written; not those pending).
    pub fn summary(&self) -> &FileSummary {
        &self.summary
    }

    /// Events appended: rows in the file and rows pending.
    pub fn events(&self) -> u64 {
        self.summary.events + self.unwritten_rows() as u64
    }

    /// Appends one event, received at `now_ns`. It reaches the file when its
    /// chunk is full, or at a flush once it has waited [`TAIL_MAX_AGE_NS`].
    pub fn append(&mut self, ev: &EventView<'_>, now_ns: u64) -> Result<(), Error> {
        self.handles()?;
        self.latest_ns = self.latest_ns.max(now_ns);
        if self.chunk.len() == self.chunk.capacity() {
            if let Err(mut e) = self.write_pending(false) {
                // This event is not in the file either.
                self.summary.unwritten += 1;
                if let Error::DiskFull { unwritten, .. } = &mut e {
                    *unwritten += 1;
                }
                return Err(e);
            }
            self.chunk.clear();
            self.facts.clear();
            self.written_in_chunk = 0;
            self.room = 0;
        }
        if self.unwritten_rows() == 0 {
            self.pending_since_ns = now_ns;
        }
        let len = self.layout.row_len();
        let at = self.chunk.len();
        self.chunk.resize(at + len, 0);
        self.layout
            .fill_row(ev, self.run_default, &mut self.chunk[at..]);
        self.facts.push(RowFacts {
            number: ev.number(),
            modules: ev.present_mask(),
            run: ev.run().unwrap_or(self.run_default),
        });
        Ok(())
    }

    fn handles(&self) -> Result<&Handles, Error> {
        self.open
            .as_ref()
            .ok_or_else(|| self.hdf5_err("the file was already closed".into()))
    }

    fn hdf5_err(&self, what: String) -> Error {
        Error::Hdf5 {
            path: self.path.clone(),
            what,
        }
    }

    /// Rows appended and not yet in the file.
    fn unwritten_rows(&self) -> usize {
        self.chunk.len() / self.layout.row_len() - self.written_in_chunk
    }

    /// Writes the chunk being filled if it has rows not yet in the file,
    /// after checking there is room for it.
    /// `last`: the file is being closed, so this write is the chunk's last.
    fn write_pending(&mut self, last: bool) -> Result<(), Error> {
        let unwritten = self.unwritten_rows();
        if unwritten == 0 {
            return Ok(());
        }
        let Some(h) = self.open.as_ref() else {
            return Err(self.hdf5_err("the file was already closed".into()));
        };
        let free = free_bytes(&self.path);
        // Rows in the file (the table's extent) are the summary's events.
        let rows = self.summary.events;
        let first = rows - self.written_in_chunk as u64;
        // A chunk written before it is full will be written again: it is
        // given room to grow (an eighth more than the last full chunk, or,
        // in a file's first chunk, twice its size, doubled as it grows), and
        // each rewrite that fits stays in place. A full chunk, or the last
        // write, takes what it needs.
        let rows_now = self.chunk.len() / self.layout.row_len();
        let (room, full_len) = (self.room, self.full_len);
        let full = rows_now == CHUNK_ROWS;
        let mut stream_len = 0;
        let (mask, bytes) = self.encoder.encode(&self.chunk, |n| {
            stream_len = n;
            if n <= room {
                room
            } else if full || last {
                n
            } else if full_len > 0 {
                (full_len + full_len / 8).max(n)
            } else {
                // No full size to go by: what doubling leaves behind is at
                // most the final size, so a short file stays short.
                (2 * n).max(room * 2)
            }
        });
        // What this write adds to the file at most: the chunk as encoded
        // (a rewritten chunk may not reuse its first copy's space).
        let bytes_len = bytes.len();
        let needed = bytes_len as u64 + self.disk_reserve;
        if free < needed {
            // Close what is there (its metadata needs far less than the
            // reserve), and count the rows that do not fit as unwritten.
            self.chunk
                .truncate(self.written_in_chunk * self.layout.row_len());
            self.facts.truncate(self.written_in_chunk);
            self.summary.unwritten += unwritten as u64;
            let _ = self.finish(self.latest_ns);
            return Err(Error::DiskFull {
                path: self.path.clone(),
                free,
                needed,
                rows,
                unwritten: unwritten as u64,
            });
        }
        h5::write_chunk(&h.table, first, rows + unwritten as u64, mask, bytes)
            .map_err(|e| self.hdf5_err(e))?;
        self.room = self.room.max(bytes_len);
        if full && stream_len > 0 {
            self.full_len = stream_len;
        }
        for r in &self.facts[self.written_in_chunk..] {
            self.summary.add(r);
        }
        self.written_in_chunk += unwritten;
        Ok(())
    }

    /// Writes the pending rows that have waited [`TAIL_MAX_AGE_NS`], the
    /// running summary (`NROWS`, events, gaps, end time `now_ns`) and the
    /// library's metadata to the file: it is valid as it is now should the
    /// writer be killed.
    pub fn flush(&mut self, now_ns: u64) -> Result<(), Error> {
        self.sync(now_ns, false)
    }

    fn sync(&mut self, now_ns: u64, all: bool) -> Result<(), Error> {
        let now_ns = now_ns.max(self.latest_ns);
        self.latest_ns = now_ns;
        if all || now_ns.saturating_sub(self.pending_since_ns) >= TAIL_MAX_AGE_NS {
            self.write_pending(all)?;
        }
        let h = self.handles()?;
        // The log row first, so that the flush puts it on disk with the rows.
        self.write_summary(&h.table, now_ns)
            .and_then(|()| {
                h5::append_flush_log(&h.flush_log, self.flushes, [self.summary.events, now_ns])
            })
            .and_then(|()| h5::flush(&h.file))
            .map_err(|e| self.hdf5_err(e))?;
        self.flushes += 1;
        Ok(())
    }

    fn write_summary(&self, t: &Id, now_ns: u64) -> Result<(), String> {
        let s = &self.summary;
        h5::set_scalar(t, "NROWS", H5T_STD_I64LE, s.events as i64)?;
        h5::set_scalar(t, "events_written", H5T_STD_U64LE, s.events)?;
        h5::set_scalar(
            t,
            "first_event_number",
            H5T_STD_U64LE,
            s.first_number.unwrap_or(0),
        )?;
        h5::set_scalar(
            t,
            "last_event_number",
            H5T_STD_U64LE,
            s.last_number.unwrap_or(0),
        )?;
        h5::set_scalar(t, "missed_events", H5T_STD_U64LE, s.missed)?;
        h5::set_scalar(t, "gaps", H5T_STD_U64LE, s.gaps)?;
        h5::set_scalar(t, "modules_seen", H5T_STD_U32LE, s.modules_seen)?;
        h5::set_scalar(
            t,
            "run_number",
            H5T_STD_U64LE,
            s.run_number.unwrap_or(self.run_default),
        )?;
        h5::set_str(t, "end_time", &ssdaq_wire::utc::iso(now_ns))?;
        h5::set_scalar(t, "end_time_ns", H5T_STD_U64LE, now_ns)?;
        Ok(())
    }

    /// Flushes and closes the file, its end time `now_ns`.
    pub fn finish(&mut self, now_ns: u64) -> Result<FileSummary, Error> {
        if self.open.is_none() {
            return Ok(self.summary.clone());
        }
        let flushed = self.sync(now_ns, true);
        let Some(h) = self.open.take() else {
            // A full disk found by that last write closed the file already.
            return flushed.map(|()| self.summary.clone());
        };
        let closed = h
            .table
            .close("closing the table")
            .and(h.flush_log.close("closing the flush log"))
            .and(h.row_type.close("closing the row type"))
            .and(h.file.close("closing the file"))
            .map_err(|e| self.hdf5_err(e));
        flushed.and(closed).map(|_| self.summary.clone())
    }

    /// Rows in the file (written chunks; not those pending).
    pub fn rows(&self) -> u64 {
        self.summary.events
    }

    /// Bytes of the file on disk (as of the last write).
    pub fn size_on_disk(&self) -> u64 {
        std::fs::metadata(&self.path).map_or(0, |m| m.len())
    }
}

impl Drop for EventFile {
    fn drop(&mut self) {
        let _ = self.finish(self.latest_ns);
    }
}

/// CLASS, TITLE and VERSION, which make PyTables see a node of that class.
fn pytables_node(obj: &Id, class: &str, title: &str, version: &str) -> Result<(), String> {
    h5::set_str(obj, "CLASS", class)?;
    h5::set_str(obj, "TITLE", title)?;
    h5::set_str(obj, "VERSION", version)
}

/// The compound type of a row of `layout`.
fn row_type(layout: Layout) -> Result<Id, String> {
    const MV: &[u64] = &[32, 64];
    const TS: &[u64] = &[32, 2];
    let members: Vec<_> = layout
        .members()
        .iter()
        .map(|m| {
            let ty = match m.column {
                Column::U32 => MemberType::Scalar(H5T_STD_U32LE),
                Column::U64 => MemberType::Scalar(H5T_STD_U64LE),
                Column::F64 => MemberType::Scalar(H5T_IEEE_F64LE),
                Column::Mv => MemberType::Array(H5T_IEEE_F32LE, MV),
                Column::ModuleTimestamps => MemberType::Array(H5T_STD_U64LE, TS),
            };
            (m.name, m.offset, ty)
        })
        .collect();
    h5::compound(layout.row_len(), &members)
}

/// Free bytes for an unprivileged writer on the file system holding `path`
/// (u64::MAX if it cannot be asked: the write then reports its own error).
pub(crate) fn free_bytes(path: &Path) -> u64 {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return u64::MAX;
    };
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is a valid C string and `st` room for one statvfs, which
    // the call fills when it returns 0 (and only then is it read).
    if unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) } != 0 {
        return u64::MAX;
    }
    // SAFETY: initialised by the successful call above.
    let st = unsafe { st.assume_init() };
    // (Both fields are u64 on Linux targets of every width we build for.)
    #[allow(clippy::unnecessary_cast)]
    let free = (st.f_bavail as u64).saturating_mul(st.f_frsize as u64);
    free
}
