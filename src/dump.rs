//! Raw dumps: every datagram the socket delivered, kept in a memory-mapped file.
//!
//! This module owns the dump format (docs/dump.md, version 1), its writer and
//! its reader.
//!
//! **Format.** A 4096-byte file header (magic `SSDAQDMP`, version, creation
//! time, the writing run's identity, and a `key=value` text block with the
//! ssdaqd version, its command line and its builder settings), then records,
//! each aligned to 8 bytes: a 32-byte [`RecordHeader`] (marker, CRC32,
//! arrival ns, source IPv4 and port, flags, length) and the payload, zero
//! padded. Little-endian. Readers cast both in place.
//!
//! **Writer.** [`DumpWriter::append`] runs in the pipeline's data path (in
//! ssdaqd, on the core that builds) for every datagram, accepted or not, in
//! arrival order: it copies the record into the mapping and
//! nothing else — no syscall, no allocation, no lock. Two helper threads do
//! the rest. Ahead of the writer, the *helper* preallocates the file in
//! chunks with `fallocate` (so a full disk is an error up front, never a
//! SIGBUS in the hot path), faults the next pages in
//! (`MADV_POPULATE_WRITE`), and prepares the next file of a rotated set; it
//! never waits for the disk. WriteBackMsg the writer, the *write-back* thread
//! starts writing each finished window back (`sync_file_range`), drops it
//! from this process and from the page cache once it is on disk
//! (`MADV_DONTNEED`, `POSIX_FADV_DONTNEED`: the dump holds a few windows of
//! memory however long it runs), and closes finished files (truncated to
//! their used length, `fsync`); all of that may wait for the disk. Should
//! the helper fall behind, a record is counted lost rather than the data
//! path waiting. On any write error the dump stops with one log line;
//! receiving goes on.
//!
//! **Crash safety.** The mapping is `MAP_SHARED`: whatever was copied into it
//! is in the page cache and survives `kill -9` of the process. A record's
//! marker is written last, so a record torn by the kill reads as the end of
//! the data; a torn or corrupt record is in any case caught by its CRC.
//!
//! **Reader.** [`Dump::open`] maps a file and iterates its records without
//! copying ([`Dump::entries`]); corrupt regions are reported with their file
//! offset and skipped to the next valid record. [`open_set`] reads several
//! files (a rotated set, a directory) as one stream in recording order.

use std::fs::{File, OpenOptions};
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, TryRecvError, channel};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use tracing::{error, info, warn};
use zerocopy::byteorder::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// First bytes of every dump file.
pub const MAGIC: [u8; 8] = *b"SSDAQDMP";
/// The format version this code writes and reads.
pub const VERSION: u32 = 1;
/// Bytes of the file header; records start here.
pub const HEADER_LEN: usize = 4096;
/// Marks the start of a record ("SSR1").
pub const RECORD_MARKER: u32 = u32::from_le_bytes(*b"SSR1");
/// Record flag: the kernel truncated the datagram to the receive buffer.
pub const FLAG_TRUNCATED: u16 = 1;
/// Largest payload a record may hold (a UDP datagram).
pub const MAX_PAYLOAD: usize = 65_535;

/// The fixed part of the file header.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy)]
#[repr(C)]
pub struct FileHeader {
    pub magic: [u8; 8],
    pub version: U32,
    pub header_len: U32,
    /// CLOCK_REALTIME ns when the file was created.
    pub created_ns: U64,
    /// The same for every file written by one ssdaqd run.
    pub set_id: U64,
    /// 0, 1, 2 … within the set.
    pub file_index: U32,
    /// Bytes of the `key=value` text that follows.
    pub info_len: U32,
}

const FILE_HEADER_FIXED: usize = std::mem::size_of::<FileHeader>();
const _: () = assert!(FILE_HEADER_FIXED == 40);

/// The header of one record.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy)]
#[repr(C)]
pub struct RecordHeader {
    /// [`RECORD_MARKER`]; written last.
    pub marker: U32,
    /// CRC32 of bytes 8..32 of this header and of the payload.
    pub crc: U32,
    /// CLOCK_REALTIME ns when the datagram arrived: the kernel's receive
    /// stamp (when ssdaqd took it from the socket, if the kernel gave none).
    pub arrival_ns: U64,
    /// Source IPv4 address, in network order.
    pub src_ip: [u8; 4],
    pub src_port: U16,
    pub flags: U16,
    pub len: U32,
    pub reserved: U32,
}

/// Bytes of a record header.
pub const RECORD_HEADER_LEN: usize = std::mem::size_of::<RecordHeader>();
const _: () = assert!(RECORD_HEADER_LEN == 32);

/// Bytes a record of `payload_len` occupies (header, payload, padding).
#[inline]
pub const fn record_len(payload_len: usize) -> usize {
    RECORD_HEADER_LEN + payload_len.div_ceil(8) * 8
}

fn record_crc(h: &RecordHeader, payload: &[u8]) -> u32 {
    let mut c = crc32fast::Hasher::new();
    c.update(&h.as_bytes()[8..]);
    c.update(payload);
    c.finalize()
}

// ───────────────────────────── writer ─────────────────────────────

/// Where and how to dump.
#[derive(Clone, Debug)]
pub struct DumpConfig {
    /// A file to create, or a directory to create the files in.
    pub path: PathBuf,
    /// Rotate to a new numbered file at this size.
    pub max_file_size: u64,
    /// Preallocate the file in steps of this many bytes.
    pub chunk_size: u64,
    /// `key=value` pairs stored in each file header (version, command line,
    /// builder settings: what a replay needs to reproduce the run).
    pub info: Vec<(String, String)>,
    /// Pin both helper threads to this core (ssdaqd: the build core, so
    /// their page-cache work never interrupts the receive core).
    pub helper_core: Option<usize>,
    /// The run the files are for, started by run control: it goes in their
    /// names (`ssdaq-run000042-<UTC>.raw` in a directory, `NAME-run000042.raw`
    /// beside a file), so each run is its own set.
    pub run: Option<u64>,
}

impl DumpConfig {
    pub const DEFAULT_MAX_FILE_SIZE: u64 = 1 << 30;
    pub const DEFAULT_CHUNK_SIZE: u64 = 64 << 20;
}

/// What the dump counted; shared with the status line.
#[derive(Debug, Default)]
pub struct DumpStats {
    pub records: AtomicU64,
    pub bytes: AtomicU64,
    /// Records not written because the helper had not prepared space in time.
    pub lost: AtomicU64,
    /// Records not written because the dump had stopped on an error.
    pub not_recorded: AtomicU64,
    pub files: AtomicU64,
    pub failed: AtomicBool,
}

impl DumpStats {
    /// A snapshot for summaries.
    pub fn snapshot(&self) -> DumpSummary {
        DumpSummary {
            records: self.records.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            lost: self.lost.load(Ordering::Relaxed),
            not_recorded: self.not_recorded.load(Ordering::Relaxed),
            files: self.files.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DumpSummary {
    pub records: u64,
    pub bytes: u64,
    pub lost: u64,
    pub not_recorded: u64,
    pub files: u64,
    pub failed: bool,
}

impl std::fmt::Display for DumpSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} records, {} bytes in {} file(s); lost {}{}",
            self.records,
            self.bytes,
            self.files,
            self.lost,
            if self.failed {
                format!("; STOPPED on an error, {} not recorded", self.not_recorded)
            } else {
                String::new()
            }
        )
    }
}

/// Pages are prepared ahead of the writer, and released behind it, in windows of this size.
const WINDOW: usize = 4 << 20;
/// The page size madvise works in (the x86_64 and aarch64 base page).
const PAGE: usize = 4096;

/// A shared, writable mapping of a whole dump file (up to its maximum size),
/// through memmap2.
///
/// Three threads use it at once. The writer copies records into
/// `[written, allocated)`. The helper faults pages in at or above `written`
/// (`MADV_POPULATE_WRITE` reads and writes no bytes: it only maps pages the
/// writer is about to touch anyway). The write-back thread writes back pages
/// below `written - WINDOW` and drops those below `written - 3 * WINDOW`,
/// which the writer no longer touches.
struct Mapping {
    raw: memmap2::MmapRaw,
}

impl Mapping {
    fn new(file: &File, len: usize) -> io::Result<Mapping> {
        let raw = memmap2::MmapOptions::new().len(len).map_raw(file)?;
        // Ask for 2 MiB folios where the filesystem has them (ext4 since
        // Linux 6.16): one fault, one zero-fill and one page table entry per
        // 2 MiB instead of 512 of each (docs/performance.md). Best effort.
        let _ = raw.advise(memmap2::Advice::HugePage);
        Ok(Mapping { raw })
    }

    fn ptr(&self) -> *mut u8 {
        self.raw.as_mut_ptr()
    }

    fn len(&self) -> usize {
        self.raw.len()
    }

    /// Faults pages in ahead of the writer (best effort).
    /// `offset` must be page-aligned (madvise refuses anything else).
    fn populate(&self, offset: usize, len: usize) -> io::Result<()> {
        debug_assert_eq!(offset % PAGE, 0, "madvise needs a page-aligned start");
        let Some(len) = self.within(offset, len) else {
            return Ok(());
        };
        self.raw
            .advise_range(memmap2::Advice::PopulateWrite, offset, len)
    }

    /// `len` cut to end at the end of the mapping; None if nothing is left.
    fn within(&self, offset: usize, len: usize) -> Option<usize> {
        Some(len.min(self.len().saturating_sub(offset))).filter(|&l| l > 0)
    }

    /// Starts writing back `[offset, offset + len)` (which the writer is
    /// done with) without waiting for it.
    fn start_write_back(&self, file: &File, offset: usize, len: usize) {
        if let Some(len) = self.within(offset, len) {
            sync_range(file, offset, len, libc::SYNC_FILE_RANGE_WRITE);
        }
    }

    /// Waits for the write-back of `[offset, offset + len)` (started two
    /// windows earlier: normally done), then unmaps it from this process and
    /// drops it from the page cache. The data stays in the file.
    ///
    /// Only clean pages are dropped: for pages still dirty or under
    /// write-back `POSIX_FADV_DONTNEED` falls back to draining every CPU's
    /// page lists (`lru_add_drain_all`), which interrupts the receive and
    /// build cores and blocks for milliseconds.
    fn release(&self, file: &File, offset: usize, len: usize) {
        let Some(len) = self.within(offset, len) else {
            return;
        };
        sync_range(file, offset, len, libc::SYNC_FILE_RANGE_WAIT_BEFORE);
        // SAFETY: for a shared file mapping MADV_DONTNEED only unmaps the
        // pages: dirty data is kept for write-back and re-read from the file
        // if touched again, so no byte changes; and the writer no longer
        // touches this range (see the struct doc).
        let _ = unsafe {
            self.raw
                .unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, offset, len)
        };
        drop_cached(file, offset, len);
    }
}

/// One file of the dump, shared by the writer and the helper.
struct DumpFile {
    file: File,
    path: PathBuf,
    /// 0, 1, 2 … within the set.
    index: u32,
    map: Mapping,
    /// Bytes preallocated (the file's size while being written): the writer
    /// may use everything below.
    allocated: AtomicUsize,
    /// Bytes faulted in ahead of the writer (an optimisation only).
    ready: AtomicUsize,
    /// Bytes written so far.
    written: AtomicUsize,
    /// Bytes whose write-back has been started, behind the writer.
    flushing: AtomicUsize,
    /// Bytes unmapped and dropped from the page cache behind the writer.
    released: AtomicUsize,
}

/// Naming of the files of one run.
#[derive(Clone, Debug)]
struct Naming {
    dir: PathBuf,
    stem: String,
    ext: String,
}

impl Naming {
    fn new(path: &Path, created_ns: u64, run: Option<u64>) -> Naming {
        let run_tag = run.map(|r| format!("-run{r:06}")).unwrap_or_default();
        if path.is_dir() {
            // Named by the start second; a set already started in that
            // second (a restart, a second daemon) keeps its name and this
            // one is `…Z-1`, `…Z-2` …: a restart never fails on a name.
            let secs = created_ns / 1_000_000_000;
            let base = format!("ssdaq{run_tag}-{}", ssdaq_wire::utc::stamp(secs));
            let stem = (0u32..)
                .map(|k| match k {
                    0 => base.clone(),
                    k => format!("{base}-{k}"),
                })
                .find(|s| !path.join(format!("{s}.raw")).exists())
                .expect("a free name within u32 tries");
            return Naming {
                dir: path.to_path_buf(),
                stem,
                ext: "raw".into(),
            };
        }
        // "run.raw" has the parent "": kept as is, so that the files of the
        // set are named as the user named the first ("run.0001.raw", not
        // "./run.0001.raw", which a reader would not recognise as its set).
        let dir = path.parent().unwrap_or(Path::new("")).to_path_buf();
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "dump".into())
            + &run_tag;
        let ext = path
            .extension()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "raw".into());
        Naming { dir, stem, ext }
    }

    /// A later file of a set of this name that is already there
    /// (`stem.NNNN.raw`): a new set would stop at it when it got that far.
    fn existing_later(&self) -> Option<PathBuf> {
        let dir = if self.dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            &self.dir
        };
        let (prefix, suffix) = (format!("{}.", self.stem), format!(".{}", self.ext));
        std::fs::read_dir(dir)
            .ok()?
            .filter_map(Result::ok)
            .find_map(|e| {
                let name = e.file_name();
                let index = name
                    .to_str()?
                    .strip_prefix(&prefix)?
                    .strip_suffix(&suffix)?;
                (!index.is_empty() && index.bytes().all(|b| b.is_ascii_digit()))
                    .then(|| self.dir.join(&name))
            })
    }

    /// File `index` of the set: `stem.raw`, `stem.0001.raw`, …
    fn path(&self, index: u32) -> PathBuf {
        if index == 0 {
            self.dir.join(format!("{}.{}", self.stem, self.ext))
        } else {
            self.dir
                .join(format!("{}.{index:04}.{}", self.stem, self.ext))
        }
    }
}

/// The header's `key=value` lines, at most `limit` bytes. Every key is
/// kept: should the text be too long (a long command line), the longest
/// values are shortened (at a character boundary, ending in "...") until it
/// fits, so the short builder settings a replay needs survive.
fn info_text(pairs: &[(String, String)], limit: usize) -> String {
    let mut values: Vec<String> = pairs.iter().map(|(_, v)| v.replace('\n', " ")).collect();
    let len = |values: &[String]| -> usize {
        pairs
            .iter()
            .zip(values)
            .map(|((k, _), v)| k.len() + v.len() + 2)
            .sum()
    };
    while len(&values) > limit {
        let Some(longest) = (0..values.len()).max_by_key(|&i| values[i].len()) else {
            break;
        };
        let excess = len(&values) - limit;
        let v = &mut values[longest];
        if v.is_empty() {
            break; // Only keys are left, and they do not fit: cut below.
        }
        let mut keep = v.len().saturating_sub(excess + 3);
        while !v.is_char_boundary(keep) {
            keep -= 1;
        }
        if keep == 0 {
            v.clear();
        } else {
            v.truncate(keep);
            v.push_str("...");
        }
    }
    let mut text = String::new();
    for ((k, _), v) in pairs.iter().zip(&values) {
        text.push_str(&format!("{k}={v}\n"));
    }
    let mut keep = text.len().min(limit);
    while !text.is_char_boundary(keep) {
        keep -= 1;
    }
    text.truncate(keep);
    text
}

/// The header text's last line: `crc32=` and 8 hex digits of the CRC-32 of
/// the lines before it, so a header edited by hand (a changed `window_ns`
/// would silently change what a replay builds) is refused.
const CHECKSUM_KEY: &str = "crc32=";
const CHECKSUM_LINE_LEN: usize = CHECKSUM_KEY.len() + 8 + 1;

fn with_checksum(mut text: String) -> String {
    let crc = crc32fast::hash(text.as_bytes());
    text.push_str(&format!("{CHECKSUM_KEY}{crc:08x}\n"));
    text
}

/// Checks the header text's checksum line, if it has one (dumps before 0.2
/// have none).
fn checksum_ok(text: &str) -> bool {
    let body = text.trim_end_matches('\n');
    let at = body.rfind('\n').map_or(0, |i| i + 1);
    let Some(hex) = body[at..].strip_prefix(CHECKSUM_KEY) else {
        return true;
    };
    u32::from_str_radix(hex, 16).is_ok_and(|crc| crc == crc32fast::hash(&text.as_bytes()[..at]))
}

/// Everything the helper needs to create files.
struct FileMaker {
    naming: Naming,
    max_file_size: usize,
    chunk_size: usize,
    header: Vec<u8>,
}

impl FileMaker {
    /// Creates file `index`: header written, first chunk allocated.
    fn create(&self, index: u32) -> io::Result<DumpFile> {
        let path = self.naming.path(index);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| {
                if e.kind() == io::ErrorKind::AlreadyExists {
                    io::Error::new(
                        e.kind(),
                        format!("{} exists: refusing to overwrite a dump", path.display()),
                    )
                } else {
                    io::Error::new(e.kind(), format!("cannot create {}: {e}", path.display()))
                }
            })?;
        // Held until the file is closed, truncated to its length: a reader
        // that mapped it at its preallocated size would fault (SIGBUS) on
        // the part cut off, so readers refuse a locked file, and one that
        // cannot be locked: a dump needs a filesystem with locks.
        // SAFETY: flock on our own, open descriptor; it changes no memory.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = io::Error::last_os_error();
            let _ = std::fs::remove_file(&path);
            return Err(io::Error::new(
                e.kind(),
                format!(
                    "cannot lock {} ({e}): a dump needs a filesystem with flock, \
                     so that readers can tell a file still being written",
                    path.display()
                ),
            ));
        }
        let map = Mapping::new(&file, self.max_file_size)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot map {}: {e}", path.display())))?;
        let f = DumpFile {
            file,
            path,
            index,
            map,
            allocated: AtomicUsize::new(0),
            ready: AtomicUsize::new(0),
            written: AtomicUsize::new(HEADER_LEN),
            flushing: AtomicUsize::new(0),
            released: AtomicUsize::new(0),
        };
        let cleanup = |e: io::Error| {
            let _ = std::fs::remove_file(&f.path);
            e
        };
        allocate(&f, self.chunk_size.min(self.max_file_size)).map_err(cleanup)?;
        let mut header = self.header.clone();
        let fixed = FileHeader::mut_from_prefix(&mut header)
            .expect("header buffer is large enough")
            .0;
        fixed.file_index = U32::new(index);
        // SAFETY: the header range [0, HEADER_LEN) was just allocated, is
        // inside the mapping, and no other thread uses this file yet.
        unsafe { std::ptr::copy_nonoverlapping(header.as_ptr(), f.map.ptr(), HEADER_LEN) };
        // Pages are faulted in by the helper's rounds, not here: a file
        // handed over unfaulted costs its writer page faults, one handed
        // over late costs records (on these VMs faulting in 8 MiB of fresh
        // memory took ~50 ms).
        Ok(f)
    }
}

/// Extends the preallocation by one chunk (bounded by the mapping).
fn allocate(f: &DumpFile, chunk: usize) -> io::Result<()> {
    let from = f.allocated.load(Ordering::Relaxed);
    let len = chunk.min(f.map.len() - from);
    if len == 0 {
        return Ok(());
    }
    // SAFETY: fallocate on our own descriptor; it only changes the file.
    let rc = unsafe {
        libc::fallocate(
            f.file.as_raw_fd(),
            0,
            from as libc::off_t,
            len as libc::off_t,
        )
    };
    if rc != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("cannot preallocate {}: {e}", f.path.display()),
        ));
    }
    f.allocated.store(from + len, Ordering::Release);
    Ok(())
}

// Ahead of the writer the helper keeps a chunk preallocated
// (`keep_allocated`) and faults pages in up to two windows beyond it, one
// step per pass of its loop (`populate_step`), so that between two steps it
// checks the preallocation again and prepares files. Preallocation is what
// keeps records from being lost (the writer never writes past it, and a
// file of a rotated set must be ready when the previous one is full), and
// it is cheap (`fallocate`, well under a millisecond for a chunk); faulting
// in only keeps the writer from page-faulting, and it can be slow (on these
// VMs ~13 ms for a 2 MiB folio of memory the host had taken back, measured).

/// Preallocates until a whole chunk lies beyond the writer (or the file is
/// at its maximum size).
///
/// Where the disk (or a file size limit) cannot take a whole chunk, smaller
/// steps down to a window are tried, so the dump uses the space to the end;
/// the error is returned (and stops the dump) only when not even a window
/// more fits and the writer is within a window of what is allocated.
fn keep_allocated(f: &DumpFile, chunk: usize) -> io::Result<()> {
    let written = f.written.load(Ordering::Acquire);
    let want = (written + chunk).min(f.map.len());
    let mut step = chunk;
    while f.allocated.load(Ordering::Relaxed) < want {
        match allocate(f, step) {
            Ok(()) => {}
            Err(_) if step > WINDOW => step = (step / 2).max(WINDOW),
            Err(e) if f.allocated.load(Ordering::Relaxed) < written + WINDOW => return Err(e),
            Err(_) => return Ok(()),
        }
    }
    Ok(())
}

/// Bytes faulted in per step: one 2 MiB folio.
const POPULATE_STEP: usize = 2 << 20;

/// Faults in the next step of pages toward two windows beyond the writer,
/// within the preallocation; false when there is nothing left to do.
///
/// Every populate call starts on a page boundary: an unaligned start makes
/// madvise fail with EINVAL, and the writer would take a page fault per 4 KiB
/// (found by the micro-benchmark: appends cost ~3x).
fn populate_step(f: &DumpFile) -> io::Result<bool> {
    let written = f.written.load(Ordering::Acquire);
    let allocated = f.allocated.load(Ordering::Acquire);
    let target = (written + 2 * WINDOW).next_multiple_of(PAGE).min(allocated);
    let ready = f.ready.load(Ordering::Relaxed).max(written / PAGE * PAGE);
    if ready >= target {
        return Ok(false);
    }
    let len = (target - ready).min(POPULATE_STEP);
    let r = f.map.populate(ready, len);
    f.ready.store(ready + len, Ordering::Release);
    r.map(|()| true)
}

/// WriteBackMsg the writer: starts writing back each window as soon as the
/// writer is a window past it, and two windows later, its write-back done
/// (on a disk that keeps up it has been for milliseconds), unmaps it and
/// drops it from the page cache.
///
/// So the dump holds a few windows of page cache however long it runs, and
/// the memory it frees is reused for the windows ahead. On these VMs that is
/// also what keeps it fast: the host takes freed guest memory back after
/// ~2 s (virtio-balloon free page reporting), and touching such memory
/// again costs ~10 µs per 4 KiB page instead of ~0.6 µs (measured).
fn release_behind(f: &DumpFile) {
    let written = f.written.load(Ordering::Acquire);
    let done = written.saturating_sub(WINDOW) / WINDOW * WINDOW;
    let flushing = f.flushing.load(Ordering::Relaxed);
    if done > flushing {
        f.map.start_write_back(&f.file, flushing, done - flushing);
        f.flushing.store(done, Ordering::Relaxed);
    }
    let drop_upto = done.saturating_sub(2 * WINDOW);
    let released = f.released.load(Ordering::Relaxed);
    if drop_upto > released {
        f.map.release(&f.file, released, drop_upto - released);
        f.released.store(drop_upto, Ordering::Relaxed);
    }
}

/// `sync_file_range(2)` of `[offset, offset + len)` with `flags`: start
/// write-back (`WRITE`) or wait for write-back under way (`WAIT_BEFORE`).
fn sync_range(file: &File, offset: usize, len: usize, flags: libc::c_uint) {
    // SAFETY: sync_file_range on our own descriptor with a valid range; it
    // starts or waits for write-back of page-cache pages, and nothing else.
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            flags,
        )
    };
}

/// Drops the clean pages of `[offset, offset + len)` from the page cache.
fn drop_cached(file: &File, offset: usize, len: usize) {
    if len == 0 {
        return;
    }
    // SAFETY: posix_fadvise on our own descriptor; DONTNEED drops clean,
    // unmapped pages of the range from the page cache and nothing else.
    unsafe {
        libc::posix_fadvise(
            file.as_raw_fd(),
            offset as libc::off_t,
            len as libc::off_t,
            libc::POSIX_FADV_DONTNEED,
        )
    };
}

/// Closes a finished file: unmapped, truncated to its used length, synced.
fn close(f: DumpFile) -> io::Result<(PathBuf, usize)> {
    let used = f.written.load(Ordering::Acquire);
    let (file, path) = (f.file, f.path);
    drop(f.map);
    file.set_len(used as u64)?;
    file.sync_all()?;
    // All of it is on disk now: leave none of it in the page cache.
    drop_cached(&file, 0, used);
    Ok((path, used))
}

/// Messages from the writer to the helper.
enum Request {
    /// This file is full (or the run ended): close it.
    Finish(Arc<DumpFile>),
    /// The run ended: close up and exit.
    Stop,
}

/// The writer, owned by the stage that builds (one thread at a time).
pub struct DumpWriter {
    current: Option<Arc<DumpFile>>,
    next: Receiver<Arc<DumpFile>>,
    requests: Sender<Request>,
    helper: Option<JoinHandle<()>>,
    helper_thread: thread::Thread,
    behind: Option<JoinHandle<()>>,
    behind_thread: thread::Thread,
    stats: Arc<DumpStats>,
    max_file_size: usize,
}

impl DumpWriter {
    /// Creates the first file (an error here is one the operator must fix:
    /// ssdaqd refuses to start) and starts the helper thread.
    pub fn create(cfg: &DumpConfig, stats: Arc<DumpStats>) -> io::Result<DumpWriter> {
        let created_ns = crate::clock::now_ns();
        let info = with_checksum(info_text(
            &cfg.info,
            HEADER_LEN - FILE_HEADER_FIXED - CHECKSUM_LINE_LEN,
        ));
        let max_file_size = (cfg.max_file_size as usize).max(HEADER_LEN + record_len(MAX_PAYLOAD));
        let chunk_size = (cfg.chunk_size as usize).max(2 * WINDOW);
        let mut header = vec![0u8; HEADER_LEN];
        let fixed = FileHeader {
            magic: MAGIC,
            version: U32::new(VERSION),
            header_len: U32::new(HEADER_LEN as u32),
            created_ns: U64::new(created_ns),
            set_id: U64::new(created_ns ^ ((std::process::id() as u64) << 32)),
            file_index: U32::new(0),
            info_len: U32::new(info.len() as u32),
        };
        header[..FILE_HEADER_FIXED].copy_from_slice(fixed.as_bytes());
        header[FILE_HEADER_FIXED..FILE_HEADER_FIXED + info.len()].copy_from_slice(info.as_bytes());
        let plan = FileMaker {
            naming: Naming::new(&cfg.path, created_ns, cfg.run),
            max_file_size,
            chunk_size,
            header,
        };
        if let Some(later) = plan.naming.existing_later() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "{} exists: refusing to start a dump set that would overwrite it",
                    later.display()
                ),
            ));
        }
        let first = Arc::new(plan.create(0)?);
        // The stats may go on from an earlier writer (run control): files
        // add up, and this file is not (yet) failed.
        stats.files.fetch_add(1, Ordering::Relaxed);
        stats.failed.store(false, Ordering::Relaxed);
        info!("dumping every datagram to {}", first.path.display());
        let (requests, req_rx) = channel();
        let (next_tx, next) = channel();
        let (to_write_back, behind_rx) = channel();
        let _ = to_write_back.send(WriteBackMsg::Current(first.clone()));
        let core = cfg.helper_core;
        let behind = thread::Builder::new()
            .name("ssdaq-dump-sync".into())
            .spawn(move || {
                crate::cores::pin_current(core, "the dump's write-back thread");
                write_back(behind_rx)
            })?;
        let (h_first, h_stats) = (first.clone(), stats.clone());
        let helper = thread::Builder::new()
            .name("ssdaq-dump".into())
            .spawn(move || {
                crate::cores::pin_current(core, "the dump's helper");
                helper(plan, h_first, req_rx, next_tx, to_write_back, h_stats)
            });
        let helper = match helper {
            Ok(h) => h,
            Err(e) => {
                // The write-back thread sees the helper's end of its channel
                // close and ends; the file was never written to.
                let _ = behind.join();
                let _ = std::fs::remove_file(&first.path);
                return Err(e);
            }
        };
        Ok(DumpWriter {
            current: Some(first),
            next,
            requests,
            helper_thread: helper.thread().clone(),
            helper: Some(helper),
            behind_thread: behind.thread().clone(),
            behind: Some(behind),
            stats,
            max_file_size,
        })
    }

    /// The file being written.
    pub fn path(&self) -> Option<&Path> {
        self.current.as_deref().map(|f| f.path.as_path())
    }

    /// Records one datagram. Never blocks, never allocates, no syscall.
    #[inline]
    pub fn append(&mut self, arrival_ns: u64, src: SocketAddrV4, truncated: bool, payload: &[u8]) {
        if self.stats.failed.load(Ordering::Relaxed) {
            self.stats.not_recorded.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let payload = &payload[..payload.len().min(MAX_PAYLOAD)];
        let need = record_len(payload.len());
        let f = match &self.current {
            Some(f) if f.written.load(Ordering::Relaxed) + need <= self.max_file_size => f,
            _ => match self.rotate() {
                Some(f) => f,
                None => {
                    self.stats.lost.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            },
        };
        let pos = f.written.load(Ordering::Relaxed);
        if pos + need > f.allocated.load(Ordering::Acquire) {
            // The helper has not preallocated this space yet: lose the
            // record rather than wait in the data path.
            self.stats.lost.fetch_add(1, Ordering::Relaxed);
            self.helper_thread.unpark();
            return;
        }
        // SAFETY: [pos, pos + need) lies below `allocated`, so it is inside
        // the live mapping and backed by the file (no SIGBUS), and only this
        // thread reads or writes bytes of the mapping (see `Mapping`).
        let rec = unsafe { std::slice::from_raw_parts_mut(f.map.ptr().add(pos), need) };
        let (head, body) = rec.split_at_mut(RECORD_HEADER_LEN);
        body[..payload.len()].copy_from_slice(payload);
        let mut h = RecordHeader {
            marker: U32::ZERO,
            crc: U32::ZERO,
            arrival_ns: U64::new(arrival_ns),
            src_ip: src.ip().octets(),
            src_port: U16::new(src.port()),
            flags: U16::new(if truncated { FLAG_TRUNCATED } else { 0 }),
            len: U32::new(payload.len() as u32),
            reserved: U32::ZERO,
        };
        h.crc = U32::new(record_crc(&h, payload));
        head[4..].copy_from_slice(&h.as_bytes()[4..]);
        // The marker goes last: a record cut short by a crash has none.
        std::sync::atomic::fence(Ordering::Release);
        head[..4].copy_from_slice(&RECORD_MARKER.to_le_bytes());
        f.written.store(pos + need, Ordering::Release);
        self.stats.records.fetch_add(1, Ordering::Relaxed);
        self.stats.bytes.fetch_add(need as u64, Ordering::Relaxed);
        if (pos + need) / WINDOW != pos / WINDOW {
            self.helper_thread.unpark();
            self.behind_thread.unpark();
        }
    }

    /// Switches to the next file of the set, if the helper has it ready.
    fn rotate(&mut self) -> Option<&Arc<DumpFile>> {
        let next = match self.next.try_recv() {
            Ok(n) => n,
            Err(TryRecvError::Empty) => {
                self.helper_thread.unpark();
                return None;
            }
            Err(TryRecvError::Disconnected) => return None,
        };
        if let Some(old) = self.current.take() {
            let _ = self.requests.send(Request::Finish(old));
        }
        self.current = Some(next);
        self.helper_thread.unpark();
        self.current.as_ref()
    }

    /// Closes the dump: the last file truncated to its length and synced.
    pub fn finish(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(f) = self.current.take() {
            let _ = self.requests.send(Request::Finish(f));
        }
        let _ = self.requests.send(Request::Stop);
        self.helper_thread.unpark();
        if let Some(h) = self.helper.take() {
            let _ = h.join();
        }
        // The helper has handed every file over to be closed and hung up.
        self.behind_thread.unpark();
        if let Some(h) = self.behind.take() {
            let _ = h.join();
        }
    }
}

impl Drop for DumpWriter {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The helper thread: keeps space ready ahead of the writer and prepares
/// the next file of the set. It never waits for the disk: everything behind
/// the writer (write-back, dropping pages, closing full files) is the
/// [`write_back`] thread's, so that a busy disk can slow that down but never
/// leave the writer without allocated space.
fn helper(
    plan: FileMaker,
    first: Arc<DumpFile>,
    requests: Receiver<Request>,
    next_tx: Sender<Arc<DumpFile>>,
    behind: Sender<WriteBackMsg>,
    stats: Arc<DumpStats>,
) {
    let mut h = Helper {
        plan,
        requests,
        next_tx,
        behind,
        stats,
        current: Some(first),
        prepared: None,
        next_index: 1,
        populate_failed: false,
    };
    while h.take_requests() {
        let busy = h.work_ahead();
        if !busy {
            thread::park_timeout(Duration::from_millis(200));
        }
    }
    h.finish();
}

/// The dump helper's state (see [`helper`]).
struct Helper {
    plan: FileMaker,
    requests: Receiver<Request>,
    next_tx: Sender<Arc<DumpFile>>,
    behind: Sender<WriteBackMsg>,
    stats: Arc<DumpStats>,
    /// The file the writer is filling, and the one made ready for it next.
    current: Option<Arc<DumpFile>>,
    prepared: Option<Arc<DumpFile>>,
    next_index: u32,
    populate_failed: bool,
}

impl Helper {
    fn fail(&self, what: String) {
        if !self.stats.failed.swap(true, Ordering::Relaxed) {
            error!("dump stopped: {what}; receiving, building and publishing go on");
        }
    }

    /// Hands `f` to the write-back thread to close (or closes it here if
    /// that thread is gone).
    fn close_later(&self, f: Arc<DumpFile>) {
        if let Err(std::sync::mpsc::SendError(WriteBackMsg::Close(f))) =
            self.behind.send(WriteBackMsg::Close(f))
        {
            close_file(f);
        }
    }

    /// Takes the writer's requests; false once it has stopped.
    fn take_requests(&mut self) -> bool {
        loop {
            match self.requests.try_recv() {
                Ok(Request::Finish(f)) => {
                    if self.current.as_ref().is_some_and(|c| Arc::ptr_eq(c, &f)) {
                        // The writer moved on to the prepared file (or stopped).
                        self.current = self.prepared.take();
                        if let Some(c) = &self.current {
                            let _ = self.behind.send(WriteBackMsg::Current(c.clone()));
                        }
                    }
                    // (The write-back thread lets go of its own reference
                    // when told of the new file, so it can close this one.)
                    self.close_later(f);
                }
                Ok(Request::Stop) | Err(TryRecvError::Disconnected) => return false,
                Err(TryRecvError::Empty) => return true,
            }
        }
    }

    /// Keeps space allocated and pages faulted in ahead of the writer, and
    /// the next file ready well before this one is full. True if there is
    /// more to fault in at once.
    fn work_ahead(&mut self) -> bool {
        let Some(f) = self.current.clone() else {
            return false;
        };
        if self.stats.failed.load(Ordering::Relaxed) {
            return false;
        }
        let written = f.written.load(Ordering::Acquire);
        if let Err(e) = keep_allocated(&f, self.plan.chunk_size) {
            self.fail(e.to_string());
        }
        // Ahead of the writer in its file; that done, the first windows of
        // the file it will write next (or a rotation would have it fault
        // its way through them).
        let step = match populate_step(&f) {
            Ok(false) => self.prepared.as_deref().map_or(Ok(false), populate_step),
            r => r,
        };
        let busy = match step {
            Ok(more) => more,
            Err(e) => {
                if !self.populate_failed {
                    self.populate_failed = true;
                    warn!(
                        "dump: cannot fault pages in ahead ({e}); the writing thread faults them instead"
                    );
                }
                false
            }
        };
        let near_end = written + 2 * self.plan.chunk_size.min(f.map.len() / 2) >= f.map.len();
        if self.prepared.is_none() && near_end {
            match self.plan.create(self.next_index) {
                Ok(n) => {
                    let n = Arc::new(n);
                    self.next_index += 1;
                    self.stats.files.fetch_add(1, Ordering::Relaxed);
                    self.prepared = Some(n.clone());
                    let _ = self.next_tx.send(n);
                }
                Err(e) => self.fail(e.to_string()),
            }
        }
        busy
    }

    /// The writer has stopped: close what it finished; remove a next file
    /// made ready but never written to. (The writer may still hold the
    /// mapping, which goes when it drops: unlinking a mapped file is fine.)
    fn finish(mut self) {
        while let Ok(Request::Finish(f)) = self.requests.try_recv() {
            self.close_later(f);
        }
        // Taken, not cloned: the write-back thread closes a file only when
        // it holds the last reference.
        for f in [self.current.take(), self.prepared.take()]
            .into_iter()
            .flatten()
        {
            if f.index > 0 && f.written.load(Ordering::Acquire) == HEADER_LEN {
                let _ = std::fs::remove_file(&f.path);
                self.stats.files.fetch_sub(1, Ordering::Relaxed);
            } else {
                self.close_later(f);
            }
        }
    }
}

/// What the write-back thread is told.
enum WriteBackMsg {
    /// The writer now fills this file.
    Current(Arc<DumpFile>),
    /// The writer is done with this file: close it.
    Close(Arc<DumpFile>),
}

/// The write-back thread: behind the writer of the current file it starts
/// write-back and drops finished windows from the page cache
/// ([`release_behind`]), and it closes full files (truncated, synced). All
/// of this may wait for the disk. Runs until the helper hangs up, having
/// closed every file.
fn write_back(msgs: Receiver<WriteBackMsg>) {
    let mut current: Option<Arc<DumpFile>> = None;
    loop {
        loop {
            match msgs.try_recv() {
                Ok(WriteBackMsg::Current(f)) => current = Some(f),
                Ok(WriteBackMsg::Close(f)) => {
                    if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, &f)) {
                        current = None;
                    }
                    close_file(f);
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return,
            }
        }
        if let Some(f) = &current {
            release_behind(f);
        }
        // Woken by the writer at each window it finishes.
        thread::park_timeout(Duration::from_millis(200));
    }
}

/// Closes a file the writer has handed back (it holds no reference to it).
fn close_file(f: Arc<DumpFile>) {
    match Arc::try_unwrap(f) {
        Ok(file) => match close(file) {
            Ok((path, used)) => info!("dump file {} closed: {used} bytes", path.display()),
            Err(e) => warn!("closing a dump file: {e}"),
        },
        // Cannot happen: the writer hands its file over with `Finish`, the
        // helper drops its own reference before it sends `Close`, and the
        // write-back thread drops `current` before closing. Should it happen,
        // the mapping still goes with the last reference, and the file keeps
        // its preallocated size.
        Err(f) => warn!(
            "dump file {} left at its preallocated size",
            f.path.display()
        ),
    }
}

// ───────────────────────────── reader ─────────────────────────────

/// Why a dump cannot be read.
#[derive(Debug)]
pub enum DumpError {
    Io {
        path: PathBuf,
        source: io::Error,
    },
    Empty {
        path: PathBuf,
    },
    NotADump {
        path: PathBuf,
    },
    UnknownVersion {
        path: PathBuf,
        version: u32,
    },
    BadHeader {
        path: PathBuf,
        what: &'static str,
    },
    /// A FIFO, a device, a socket: not a regular file.
    NotAFile {
        path: PathBuf,
    },
    /// A running ssdaqd is writing it (it holds the file's lock).
    BeingWritten {
        path: PathBuf,
    },
    /// Its lock cannot be taken (the filesystem has no `flock`), so
    /// nothing shows that no ssdaqd is writing it: it is not mapped.
    Unlockable {
        path: PathBuf,
        source: io::Error,
    },
}

impl std::fmt::Display for DumpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DumpError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            DumpError::Empty { path } => write!(f, "{}: empty file, not a dump", path.display()),
            DumpError::NotADump { path } => {
                write!(
                    f,
                    "{}: not an ssdaq dump (no SSDAQDMP magic at offset 0)",
                    path.display()
                )
            }
            DumpError::UnknownVersion { path, version } => write!(
                f,
                "{}: dump format version {version} at offset 8; this ssdaq reads version {VERSION}",
                path.display()
            ),
            DumpError::BadHeader { path, what } => {
                write!(f, "{}: damaged file header: {what}", path.display())
            }
            DumpError::BeingWritten { path } => write!(
                f,
                "{}: a running ssdaqd is writing this file; it can be read once closed \
                 (when the dump moves to its next file, or ssdaqd stops)",
                path.display()
            ),
            DumpError::NotAFile { path } => write!(
                f,
                "{}: not a regular file (a FIFO, a device or a socket): a dump is a file",
                path.display()
            ),
            DumpError::Unlockable { path, source } => write!(
                f,
                "{}: cannot take the file's lock ({source}), so nothing shows that no ssdaqd \
                 is still writing it; copy it to a local filesystem and read the copy",
                path.display()
            ),
        }
    }
}

impl std::error::Error for DumpError {}

/// The header of an open dump.
#[derive(Clone, Debug)]
pub struct DumpInfo {
    pub version: u32,
    pub created_ns: u64,
    pub set_id: u64,
    pub file_index: u32,
    /// The `key=value` lines written by ssdaqd.
    pub settings: Vec<(String, String)>,
}

impl DumpInfo {
    /// The value of `key` in the header text.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.settings
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// One recorded datagram, borrowed from the mapping.
#[derive(Clone, Copy, Debug)]
pub struct Record<'a> {
    /// Offset of the record in its file.
    pub offset: u64,
    pub arrival_ns: u64,
    pub src: SocketAddrV4,
    pub truncated: bool,
    pub payload: &'a [u8],
}

/// What iterating a dump yields.
#[derive(Clone, Copy, Debug)]
pub enum Entry<'a> {
    Record(Record<'a>),
    /// Bytes at `offset` that are no valid record (`len` bytes skipped to
    /// the next valid one, or to the end).
    Corrupt {
        offset: u64,
        len: u64,
    },
    /// The data ends at `offset` before the end of the file (the writer was
    /// killed: the rest is preallocated, unused space).
    Unfinished {
        offset: u64,
        file_len: u64,
    },
}

/// An open dump file.
pub struct Dump {
    path: PathBuf,
    map: memmap2::Mmap,
    info: DumpInfo,
}

/// Windows in which a reader maps pages in ahead and drops them behind.
const READ_WINDOW: usize = 16 << 20;

impl Dump {
    /// Opens and checks a dump file.
    pub fn open(path: impl AsRef<Path>) -> Result<Dump, DumpError> {
        let path = path.as_ref().to_path_buf();
        let io_err = |source| DumpError::Io {
            path: path.clone(),
            source,
        };
        // A FIFO would block the open and a device be read forever: open
        // without blocking (no effect on a regular file), then refuse
        // anything that is not a regular file.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path)
            .map_err(io_err)?;
        if !file.metadata().map_err(io_err)?.is_file() {
            return Err(DumpError::NotAFile { path });
        }
        // The writer locks a file exclusively from its creation until it is
        // closed; a closed file is never opened for writing again, so a
        // check here is enough.
        // SAFETY: flock on our own, open descriptor; it changes no memory.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) } != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                return Err(DumpError::BeingWritten { path });
            }
            // Mapping a file that may still be written (and truncated) could
            // kill the reader with SIGBUS: refuse.
            return Err(DumpError::Unlockable { path, source: e });
        }
        let len = file.metadata().map_err(io_err)?.len();
        if len == 0 {
            return Err(DumpError::Empty { path });
        }
        // SAFETY: a read-only mapping of a file that does not change while we
        // read it: ssdaqd holds an exclusive lock on a file from its creation
        // until it has truncated and closed it, and we refused locked files
        // above; a closed dump is never written again. (Anyone else changing
        // a dump file underneath a reader is outside this contract.)
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io_err)?;
        let Ok((h, rest)) = FileHeader::ref_from_prefix(&map[..]) else {
            return Err(DumpError::NotADump { path });
        };
        if h.magic != MAGIC {
            return Err(DumpError::NotADump { path });
        }
        if h.version.get() != VERSION {
            return Err(DumpError::UnknownVersion {
                path,
                version: h.version.get(),
            });
        }
        if h.header_len.get() as usize != HEADER_LEN || map.len() < HEADER_LEN {
            return Err(DumpError::BadHeader {
                path,
                what: "header shorter than 4096 bytes",
            });
        }
        let text_len = (h.info_len.get() as usize).min(HEADER_LEN - FILE_HEADER_FIXED);
        let text = String::from_utf8_lossy(&rest[..text_len]);
        if !checksum_ok(&text) {
            return Err(DumpError::BadHeader {
                path,
                what: "its settings text was changed after it was written (the crc32 line \
                       does not match); replay the original file",
            });
        }
        let info = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let info = DumpInfo {
            version: h.version.get(),
            created_ns: h.created_ns.get(),
            set_id: h.set_id.get(),
            file_index: h.file_index.get(),
            settings: info,
        };
        Ok(Dump { path, map, info })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn info(&self) -> &DumpInfo {
        &self.info
    }

    /// Bytes of the file.
    pub fn len(&self) -> u64 {
        self.map.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.map.len() <= HEADER_LEN
    }

    /// Iterates the records in file order.
    pub fn entries(&self) -> Entries<'_> {
        Entries {
            dump: self,
            pos: HEADER_LEN,
            window_end: 0,
            done: false,
        }
    }

    /// The record at `pos`, if a valid one starts there.
    fn record_at(&self, pos: usize) -> Option<Record<'_>> {
        let (h, rest) = RecordHeader::ref_from_prefix(self.map.get(pos..)?).ok()?;
        if h.marker.get() != RECORD_MARKER {
            return None;
        }
        let len = h.len.get() as usize;
        if len > MAX_PAYLOAD || rest.len() < len {
            return None;
        }
        let payload = &rest[..len];
        if record_crc(h, payload) != h.crc.get() {
            return None;
        }
        Some(Record {
            offset: pos as u64,
            arrival_ns: h.arrival_ns.get(),
            src: SocketAddrV4::new(Ipv4Addr::from(h.src_ip), h.src_port.get()),
            truncated: h.flags.get() & FLAG_TRUNCATED != 0,
            payload,
        })
    }
}

/// Iterator over a dump's entries (see [`Entry`]).
pub struct Entries<'a> {
    dump: &'a Dump,
    pos: usize,
    window_end: usize,
    done: bool,
}

impl<'a> Entries<'a> {
    /// Keeps only a window of the file mapped in: memory does not grow with
    /// the dump's size, and pages arrive in large batches instead of faults.
    fn slide_window(&mut self) {
        if self.pos < self.window_end {
            return;
        }
        let map = &self.dump.map;
        let start = self.pos / READ_WINDOW * READ_WINDOW;
        if start >= READ_WINDOW {
            // SAFETY: MADV_DONTNEED on a read-only shared file mapping only
            // drops page-table entries; the data is re-read from the file if
            // touched again, so no reference sees different bytes.
            unsafe {
                let _ = map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, 0, start);
            }
        }
        let len = READ_WINDOW.min(map.len() - start);
        let _ = map.advise_range(memmap2::Advice::PopulateRead, start, len);
        self.window_end = start + len;
    }

    /// The next offset, at or after `from`, where a valid record starts.
    fn resync(&self, from: usize) -> Option<usize> {
        let map = &self.dump.map;
        let marker = RECORD_MARKER.to_le_bytes();
        let mut p = from.next_multiple_of(8);
        while p + RECORD_HEADER_LEN <= map.len() {
            if map[p..p + 4] == marker && self.dump.record_at(p).is_some() {
                return Some(p);
            }
            p += 8;
        }
        None
    }
}

impl<'a> Iterator for Entries<'a> {
    type Item = Entry<'a>;

    fn next(&mut self) -> Option<Entry<'a>> {
        if self.done {
            return None;
        }
        self.slide_window();
        let dump = self.dump;
        let len = dump.map.len();
        if self.pos >= len {
            self.done = true;
            return None;
        }
        if let Some(r) = dump.record_at(self.pos) {
            self.pos += record_len(r.payload.len());
            return Some(Entry::Record(r));
        }
        let at = self.pos;
        match self.resync(at + 8) {
            Some(next) => {
                self.pos = next;
                Some(Entry::Corrupt {
                    offset: at as u64,
                    len: (next - at) as u64,
                })
            }
            None => {
                self.done = true;
                // Nothing valid follows. All zeros: the unused tail of a file
                // whose writer was killed. Anything else: corruption.
                if dump.map[at..].iter().all(|&b| b == 0) {
                    Some(Entry::Unfinished {
                        offset: at as u64,
                        file_len: len as u64,
                    })
                } else {
                    Some(Entry::Corrupt {
                        offset: at as u64,
                        len: (len - at) as u64,
                    })
                }
            }
        }
    }
}

/// Opens the dumps named by `paths` as one stream in recording order.
///
/// A directory stands for the `.raw` files in it. A single file stands for
/// itself and the later files of its rotated set (`x.raw`, `x.0001.raw`, …).
/// Files that cannot be opened are returned as errors beside the rest.
pub fn open_set(paths: &[PathBuf]) -> (Vec<Dump>, Vec<DumpError>) {
    let mut files: Vec<PathBuf> = Vec::new();
    for p in paths {
        if p.is_dir() {
            match std::fs::read_dir(p) {
                Ok(rd) => {
                    let mut v: Vec<PathBuf> = rd
                        .filter_map(Result::ok)
                        .map(|e| e.path())
                        .filter(|p| p.extension().is_some_and(|e| e == "raw"))
                        .collect();
                    v.sort();
                    files.extend(v);
                }
                Err(e) => files.push(p.join(format!("<{e}>"))),
            }
        } else {
            files.push(p.clone());
            if paths.len() == 1 {
                let naming = Naming::new(p, 0, None);
                if naming.path(0) == *p {
                    files.extend((1..).map(|i| naming.path(i)).take_while(|q| q.exists()));
                }
            }
        }
    }
    files.dedup();
    let (mut ok, mut bad) = (Vec::new(), Vec::new());
    for f in files {
        match Dump::open(&f) {
            Ok(d) => ok.push(d),
            Err(e) => bad.push(e),
        }
    }
    ok.sort_by_key(|d| (d.info.created_ns, d.info.set_id, d.info.file_index));
    (ok, bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ssdaq-dump-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn cfg(path: PathBuf) -> DumpConfig {
        DumpConfig {
            path,
            max_file_size: DumpConfig::DEFAULT_MAX_FILE_SIZE,
            chunk_size: 8 << 20,
            info: vec![
                ("ssdaqd_version".into(), "test".into()),
                ("window_ns".into(), "10000".into()),
            ],
            helper_core: None,
            run: None,
        }
    }

    fn payload(i: u32) -> Vec<u8> {
        (0..(i % 50) * 29 + 1).map(|b| (b ^ i) as u8).collect()
    }

    fn src(i: u32) -> SocketAddrV4 {
        SocketAddrV4::new(
            Ipv4Addr::new(127, 0, 0, 100 + (i % 32) as u8),
            40_000 + (i % 20_000) as u16,
        )
    }

    fn write(c: &DumpConfig, n: u32) -> Arc<DumpStats> {
        let stats = Arc::new(DumpStats::default());
        let mut w = DumpWriter::create(c, stats.clone()).unwrap();
        for i in 0..n {
            w.append(1_000 + i as u64, src(i), i % 7 == 0, &payload(i));
            // At most ~100 MB/s, 80x the camera's ~1.2 MB/s: an unpaced
            // optimised loop copies ~6 GB/s and fills a 12 MiB file before
            // the helper thread has had a core once (the tests share two
            // cores), which would test the scheduler, not the dump. The
            // dump's speed is measured by the benchmarks.
            if i % 1024 == 1023 {
                std::thread::sleep(std::time::Duration::from_millis(8));
            }
        }
        w.finish();
        stats
    }

    fn records(d: &Dump) -> Vec<(u64, SocketAddrV4, bool, Vec<u8>)> {
        d.entries()
            .map(|e| match e {
                Entry::Record(r) => (r.arrival_ns, r.src, r.truncated, r.payload.to_vec()),
                other => panic!("unexpected {other:?}"),
            })
            .collect()
    }

    #[test]
    fn every_record_written_is_read_back_exactly_and_the_file_is_trimmed() {
        let dir = tmpdir("roundtrip");
        let stats = write(&cfg(dir.join("run.raw")), 10_000);
        let s = stats.snapshot();
        assert_eq!(
            (s.records, s.lost, s.files, s.failed),
            (10_000, 0, 1, false)
        );
        let d = Dump::open(dir.join("run.raw")).unwrap();
        assert_eq!(d.info().get("window_ns"), Some("10000"));
        assert_eq!(
            d.len(),
            HEADER_LEN as u64 + s.bytes,
            "truncated to its used length"
        );
        let recs = records(&d);
        assert_eq!(recs.len(), 10_000);
        for (i, r) in recs.iter().enumerate() {
            let i = i as u32;
            assert_eq!(r, &(1_000 + i as u64, src(i), i % 7 == 0, payload(i)));
        }
    }

    #[test]
    fn a_directory_gets_a_timestamped_file_and_an_existing_file_is_never_overwritten() {
        let dir = tmpdir("naming");
        write(&cfg(dir.clone()), 3);
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1);
        let name = names[0].to_string_lossy().into_owned();
        assert!(
            name.starts_with("ssdaq-20") && name.ends_with("Z.raw"),
            "{name}"
        );
        // A set started in the same second as one already there (a
        // restart) is not refused for its name, and leaves the first alone.
        let secs = 1_764_763_200u64;
        let base = format!("ssdaq-{}", ssdaq_wire::utc::stamp(secs));
        std::fs::write(dir.join(format!("{base}.raw")), b"").unwrap();
        std::fs::write(dir.join(format!("{base}-1.raw")), b"").unwrap();
        let n = Naming::new(&dir, secs * 1_000_000_000 + 5, None);
        assert_eq!(n.path(0), dir.join(format!("{base}-2.raw")));
        assert_eq!(n.path(1), dir.join(format!("{base}-2.0001.raw")));
        let existing = dir.join(&name);
        let e = DumpWriter::create(&cfg(existing), Arc::new(DumpStats::default()))
            .err()
            .unwrap();
        assert!(e.to_string().contains("refusing to overwrite"), "{e}");
        let e = DumpWriter::create(
            &cfg(dir.join("no/such/dir/x.raw")),
            Arc::new(DumpStats::default()),
        )
        .err()
        .unwrap();
        assert!(e.to_string().contains("cannot create"), "{e}");
    }

    #[test]
    fn rotation_makes_numbered_files_read_back_as_one_stream() {
        let dir = tmpdir("rotate");
        let mut c = cfg(dir.join("run.raw"));
        c.max_file_size = 12 << 20;
        let n = 30_000;
        let stats = write(&c, n);
        let s = stats.snapshot();
        assert_eq!(s.lost, 0);
        assert!(s.files >= 2, "{s:?}");
        assert!(dir.join("run.0001.raw").exists());
        let (dumps, errors) = open_set(&[dir.join("run.raw")]);
        assert!(errors.is_empty());
        assert_eq!(dumps.len() as u64, s.files);
        let all: Vec<_> = dumps.iter().flat_map(records).collect();
        assert_eq!(all.len(), n as usize);
        assert!(
            all.iter().enumerate().all(|(i, r)| r.0 == 1_000 + i as u64),
            "in order across files"
        );
        let (from_dir, _) = open_set(std::slice::from_ref(&dir));
        assert_eq!(from_dir.len(), dumps.len());
    }

    #[test]
    fn corruption_is_reported_with_its_offset_and_reading_goes_on() {
        let dir = tmpdir("corrupt");
        let path = dir.join("run.raw");
        write(&cfg(path.clone()), 100);
        let mut bytes = std::fs::read(&path).unwrap();
        let third = HEADER_LEN + record_len(payload(0).len()) + record_len(payload(1).len());
        bytes[third + 40] ^= 0xFF; // inside the third record's payload
        std::fs::write(&path, &bytes).unwrap();
        let d = Dump::open(&path).unwrap();
        let entries: Vec<_> = d.entries().collect();
        let corrupt: Vec<_> = entries
            .iter()
            .filter_map(|e| {
                if let Entry::Corrupt { offset, .. } = e {
                    Some(*offset)
                } else {
                    None
                }
            })
            .collect();
        assert_eq!(corrupt, vec![third as u64]);
        let n = entries
            .iter()
            .filter(|e| matches!(e, Entry::Record(_)))
            .count();
        assert_eq!(n, 99, "only the damaged record is skipped");
    }

    #[test]
    fn a_torn_tail_is_reported_never_returned_as_data() {
        let dir = tmpdir("torn");
        let path = dir.join("run.raw");
        write(&cfg(path.clone()), 10);
        let mut bytes = std::fs::read(&path).unwrap();
        let full = bytes.len();
        bytes.truncate(full - 5); // the last record cut short
        bytes.extend(std::iter::repeat_n(0u8, 1 << 16)); // preallocated zeros after it
        std::fs::write(&path, &bytes).unwrap();
        let d = Dump::open(&path).unwrap();
        let entries: Vec<_> = d.entries().collect();
        assert_eq!(
            entries
                .iter()
                .filter(|e| matches!(e, Entry::Record(_)))
                .count(),
            9
        );
        assert!(matches!(
            entries.last(),
            Some(Entry::Corrupt { .. }) | Some(Entry::Unfinished { .. })
        ));
    }

    #[test]
    fn files_that_are_no_dump_get_a_clear_error() {
        let dir = tmpdir("bad");
        let empty = dir.join("empty.raw");
        std::fs::write(&empty, b"").unwrap();
        assert!(matches!(Dump::open(&empty), Err(DumpError::Empty { .. })));
        let text = dir.join("text.raw");
        std::fs::write(&text, b"hello, this is not a dump at all").unwrap();
        let e = Dump::open(&text).err().unwrap();
        assert!(e.to_string().contains("not an ssdaq dump"), "{e}");
        let mut v2 = vec![0u8; HEADER_LEN];
        v2[..8].copy_from_slice(&MAGIC);
        v2[8..12].copy_from_slice(&2u32.to_le_bytes());
        let future = dir.join("future.raw");
        std::fs::write(&future, &v2).unwrap();
        let e = Dump::open(&future).err().unwrap();
        assert!(e.to_string().contains("version 2"), "{e}");
        let missing = Dump::open(dir.join("missing.raw")).err().unwrap();
        assert!(missing.to_string().contains("missing.raw"), "{missing}");
    }

    /// Bytes of `[from, to)` of the file at `path` that are in the page cache.
    fn cached_bytes(path: &Path, from: usize, to: usize) -> usize {
        let file = File::open(path).unwrap();
        // SAFETY: a read-only mapping of a file nobody truncates meanwhile;
        // only its residency is looked at, never its bytes.
        let map = unsafe { memmap2::Mmap::map(&file) }.unwrap();
        let len = to.min(map.len()) - from;
        let mut vec = vec![0u8; len.div_ceil(PAGE)];
        // SAFETY: `from` is page-aligned inside the mapping, `vec` has a
        // byte per page of the range.
        let rc = unsafe {
            libc::mincore(
                map.as_ptr().add(from).cast_mut().cast(),
                len,
                vec.as_mut_ptr(),
            )
        };
        assert_eq!(rc, 0, "mincore: {}", io::Error::last_os_error());
        vec.iter().filter(|&&b| b & 1 != 0).count() * PAGE
    }

    #[test]
    fn a_long_dump_keeps_only_a_few_windows_in_the_page_cache() {
        let dir = tmpdir("bounded");
        let c = DumpConfig {
            chunk_size: 16 << 20,
            ..cfg(dir.join("run.raw"))
        };
        let stats = Arc::new(DumpStats::default());
        let mut w = DumpWriter::create(&c, stats.clone()).unwrap();
        let payload = vec![0x5a; 1440];
        let records = (96 << 20) / record_len(payload.len());
        for i in 0..records {
            w.append(i as u64, src(i as u32), false, &payload);
            if i % 1024 == 1023 {
                // ~750 MB/s: a flood, within what the disk writes back.
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        }
        let written = stats.bytes.load(Ordering::Relaxed) as usize + HEADER_LEN;
        let path = w.path().unwrap().to_path_buf();
        // Before finishing (which syncs the file): all but the last few
        // windows are written back and dropped from the page cache, within
        // a round of the write-back thread (it runs at least every 200 ms).
        let behind = (written - 4 * WINDOW) / WINDOW * WINDOW;
        let mut cached = cached_bytes(&path, 0, behind);
        for _ in 0..50 {
            if cached <= 2 * WINDOW {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
            cached = cached_bytes(&path, 0, behind);
        }
        w.finish();
        assert_eq!(stats.snapshot().lost, 0);
        assert!(
            cached <= 2 * WINDOW,
            "{} MiB of the first {} MiB still in the page cache",
            cached >> 20,
            behind >> 20
        );
        let d = Dump::open(&path).unwrap();
        assert_eq!(d.entries().count(), records, "every record is in the file");
    }

    #[test]
    fn pages_are_faulted_in_ahead_of_any_writer_position() {
        let dir = tmpdir("populate");
        let plan = FileMaker {
            naming: Naming::new(&dir.join("p.raw"), 0, None),
            max_file_size: 64 << 20,
            chunk_size: 64 << 20,
            header: vec![0; HEADER_LEN],
        };
        let f = plan.create(0).unwrap();
        for written in [
            HEADER_LEN,
            12_345_679,
            20 << 20,
            (40 << 20) + 1,
            (63 << 20) + 7,
        ] {
            f.written.store(written, Ordering::Release);
            keep_allocated(&f, plan.chunk_size).unwrap();
            while populate_step(&f).unwrap_or_else(|e| panic!("written {written}: {e}")) {}
            let ready = f.ready.load(Ordering::Acquire);
            assert!(
                ready >= (written + 2 * WINDOW).min(64 << 20),
                "written {written}, ready {ready}"
            );
            assert!(
                ready % PAGE == 0 || ready == 64 << 20,
                "ready {ready} is not page-aligned"
            );
        }
    }

    #[test]
    fn a_later_file_of_an_earlier_set_stops_the_start_not_the_run() {
        // Left over from an earlier run of the same name: the new set would
        // have met it at its first rotation and stopped dumping there.
        let dir = tmpdir("later");
        std::fs::write(dir.join("run.0003.raw"), b"old").unwrap();
        std::fs::write(dir.join("run.notes.raw"), b"not of the set").unwrap();
        let e = DumpWriter::create(&cfg(dir.join("run.raw")), Arc::new(DumpStats::default()))
            .err()
            .expect("must refuse");
        assert!(e.to_string().contains("run.0003.raw exists"), "{e}");
        assert!(!dir.join("run.raw").exists(), "nothing created");
        assert_eq!(std::fs::read(dir.join("run.0003.raw")).unwrap(), b"old");
        // Another name in the same directory is not affected.
        write(&cfg(dir.join("other.raw")), 3);
    }

    #[test]
    fn a_bare_file_name_names_its_set_the_way_a_reader_finds_it() {
        // `ssdaq-replay run.raw` in the dump's directory must find
        // run.0001.raw, …: the reader compares names built the same way.
        let n = Naming::new(Path::new("run.raw"), 0, None);
        assert_eq!(n.path(0), Path::new("run.raw"));
        assert_eq!(n.path(1), Path::new("run.0001.raw"));
        let n = Naming::new(Path::new("./d/run.raw"), 0, None);
        assert_eq!(n.path(0), Path::new("./d/run.raw"));
        assert_eq!(n.path(12), Path::new("./d/run.0012.raw"));
    }

    #[test]
    fn a_long_command_line_is_shortened_and_every_setting_kept() {
        // Non-ASCII, and far longer than the header: the cut must fall on a
        // character boundary, and the settings after it must survive.
        let long = "ssdaqd --dump /données/".to_string() + &"é".repeat(3000);
        let pairs: Vec<(String, String)> = vec![
            ("ssdaqd_version".into(), "1".into()),
            ("command_line".into(), long),
            ("window_ns".into(), "10000".into()),
            ("slots".into(), "1024".into()),
        ];
        let limit = HEADER_LEN - FILE_HEADER_FIXED;
        let text = info_text(&pairs, limit);
        assert!(text.len() <= limit, "{}", text.len());
        let kv: Vec<(&str, &str)> = text.lines().filter_map(|l| l.split_once('=')).collect();
        assert_eq!(kv.len(), 4, "{text}");
        assert_eq!(kv[0], ("ssdaqd_version", "1"));
        assert!(kv[1].1.starts_with("ssdaqd --dump /données/é") && kv[1].1.ends_with("..."));
        assert_eq!(kv[2], ("window_ns", "10000"));
        assert_eq!(kv[3], ("slots", "1024"));
        // Written and read back through a real file.
        let dir = tmpdir("longinfo");
        let mut c = cfg(dir.join("run.raw"));
        c.info = pairs;
        write(&c, 2);
        let d = Dump::open(dir.join("run.raw")).unwrap();
        assert_eq!(d.info().get("slots"), Some("1024"));
        assert_eq!(d.info().get("window_ns"), Some("10000"));
        // Short text is left alone.
        let short = [("a".to_string(), "b\nc".to_string())];
        assert_eq!(info_text(&short, limit), "a=b c\n");
    }

    #[test]
    fn a_header_edited_after_writing_is_refused() {
        let dir = tmpdir("edited");
        let mut c = cfg(dir.join("run.raw"));
        c.info = vec![("window_ns".into(), "10000".into())];
        write(&c, 2);
        let path = dir.join("run.raw");
        assert_eq!(
            Dump::open(&path).unwrap().info().get("window_ns"),
            Some("10000")
        );
        let mut bytes = std::fs::read(&path).unwrap();
        let at = bytes.windows(5).position(|w| w == b"10000").unwrap();
        bytes[at] = b'9';
        std::fs::write(&path, &bytes).unwrap();
        let e = Dump::open(&path).err().unwrap();
        assert!(matches!(e, DumpError::BadHeader { .. }), "{e}");
        assert!(
            e.to_string().contains("changed after it was written"),
            "{e}"
        );
        // A header without the line (before 0.2) is read as it is.
        assert!(checksum_ok("window_ns=10000\n"));
        assert!(checksum_ok(&with_checksum("a=b\n".into())));
        assert!(!checksum_ok(
            &with_checksum("a=b\n".into()).replace('b', "c")
        ));
    }

    #[test]
    fn a_file_still_being_written_is_refused_by_readers_until_closed() {
        // Read while being written, the file would be mapped at its
        // preallocated size and then truncated under the reader (SIGBUS).
        let dir = tmpdir("live");
        let path = dir.join("run.raw");
        let mut w = DumpWriter::create(&cfg(path.clone()), Arc::new(DumpStats::default())).unwrap();
        for i in 0..10 {
            w.append(1_000 + i as u64, src(i), false, &payload(i));
        }
        let e = Dump::open(&path)
            .err()
            .expect("a live file must be refused");
        assert!(matches!(e, DumpError::BeingWritten { .. }), "{e}");
        assert!(e.to_string().contains("a running ssdaqd is writing"), "{e}");
        w.finish();
        let d = Dump::open(&path).unwrap();
        assert_eq!(records(&d).len(), 10);
    }
}
