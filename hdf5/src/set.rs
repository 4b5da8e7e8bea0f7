//! A run's HDF5 files: naming, rotation, and what the whole set holds.
//!
//! [`FileSet`] takes events one at a time and keeps one [`EventFile`] open.
//! Given a directory, it names each file by its start time
//! (`ssdaq-20261126T105534Z.h5`); given a file name, the first file has that
//! name and later ones `name.0001.h5`, `name.0002.h5` … It starts a new file
//! when the current one reaches `max_events` or `max_bytes`, when the
//! events' wire format changes, or when the event numbers start again (the
//! daemon was restarted): one file never mixes two numberings. It never
//! overwrites a file: the first file's name, if given, must be free, and
//! any other name that is taken (a second writer, or a restart, in the same
//! second) is skipped for the next index. Where the files go is checked
//! when the set is made, so a path that cannot be written is refused at
//! start, not at the first event.
//!
//! It holds one open file and a summary; nothing grows with the run.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use ssdaq_wire::event::{EventView, Format};

use crate::file::{Error, EventFile, FileSummary, Options};

/// When to start the next file.
#[derive(Clone, Copy, Debug, Default)]
pub struct Limits {
    /// Events per file (None: no limit).
    pub max_events: Option<u64>,
    /// Bytes per file, checked at each flush (None: no limit).
    pub max_bytes: Option<u64>,
}

/// Totals over every file of the set.
#[derive(Clone, Debug, Default)]
pub struct SetSummary {
    pub files: u64,
    /// Events in the files (written, or pending in the open one).
    pub events: u64,
    /// Events received that never reached a file (the disk was full).
    pub unwritten: u64,
    /// Events missing in the numbers, within files and between them.
    pub missed: u64,
    pub gaps: u64,
    /// Times the numbering started again (a new file each time).
    pub restarts: u64,
    pub last_path: Option<PathBuf>,
}

impl std::fmt::Display for SetSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "wrote {} event(s) in {} file(s); {} missed in {} gap(s) of the event numbers",
            self.events, self.files, self.missed, self.gaps
        )?;
        if self.restarts > 0 {
            write!(f, "; numbering restarted {} time(s)", self.restarts)?;
        }
        if self.unwritten > 0 {
            write!(f, "; {} event(s) NOT written (disk full)", self.unwritten)?;
        }
        Ok(())
    }
}

/// How the set's files are named.
#[derive(Clone, Debug)]
enum Naming {
    /// A directory: files named by start time.
    Dir(PathBuf),
    /// A first file's path: later files `stem.NNNN.ext`.
    File {
        dir: PathBuf,
        // The user's bytes: a name need not be UTF-8.
        stem: OsString,
        ext: OsString,
    },
}

/// What is told when a file is closed.
type OnClose = dyn FnMut(&Path, &FileSummary);

/// What [`FileSet::append`] found in the event numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Numbering {
    /// The next number (or the first event).
    InOrder,
    /// `missed` events before this one were never received.
    Gap { missed: u64 },
    /// The number went back (the daemon restarted): a new file was
    /// started; the new numbering's `missed` first events never came.
    Restart { missed: u64 },
}

/// The most files one name (or one start second) gets: `.0001` … `.9999`.
const MAX_INDEX: u32 = 9_999;
/// Longest file name and path Linux file systems take (NAME_MAX, PATH_MAX).
const NAME_MAX: usize = 255;
const PATH_MAX: usize = 4096;

/// The files of one run, one open at a time.
pub struct FileSet {
    naming: Naming,
    opts: Options,
    limits: Limits,
    current: Option<EventFile>,
    /// The next file's index (for `Naming::Dir`, within its start second).
    started: u32,
    /// The start second of the last file named in a directory.
    stamp: Option<String>,
    /// The last event number seen, across files.
    last_number: Option<u64>,
    summary: SetSummary,
    /// Called with each file's path and summary when it is closed.
    on_close: Box<OnClose>,
}

impl FileSet {
    /// A set written to `path`: an existing directory (`DIR` or `DIR/`), or
    /// the first file's name, which must not exist (not even as a dangling
    /// symbolic link). Refused now, with [`Error::Path`], if the files could
    /// not be created there: no such directory, no permission, a read-only
    /// file system.
    pub fn new(path: &Path, opts: Options, limits: Limits) -> Result<FileSet, Error> {
        let refuse = |why: String| Error::Path {
            path: path.to_path_buf(),
            why,
        };
        let as_dir = path.as_os_str().as_encoded_bytes().ends_with(b"/");
        let naming = if path.is_dir() {
            Naming::Dir(path.to_path_buf())
        } else if as_dir && std::fs::symlink_metadata(path.components().as_path()).is_ok() {
            return Err(refuse("is not a directory".into()));
        } else if as_dir {
            return Err(refuse("no such directory".into()));
        } else {
            let dir = path.parent().unwrap_or(Path::new("")).to_path_buf();
            let stem = path.file_stem().unwrap_or("ssdaq".as_ref()).to_os_string();
            let ext = path.extension().unwrap_or("h5".as_ref()).to_os_string();
            Naming::File { dir, stem, ext }
        };
        // The names it will use: the first (a name without an extension
        // gets `.h5`) must be free, and the longest must be one the file
        // system takes.
        let (dir, first, longest) = match &naming {
            Naming::Dir(d) => (d, None, OsString::from("ssdaq-20261203T120000Z.9999.h5")),
            Naming::File { dir, stem, ext } => (
                dir,
                Some(dir.join(numbered(stem, None, ext))),
                numbered(stem, Some(MAX_INDEX), ext),
            ),
        };
        if let Some(first) = &first
            && std::fs::symlink_metadata(first).is_ok()
        {
            return Err(Error::Path {
                path: first.clone(),
                why: "exists: give a directory or a new file name (files are never overwritten)"
                    .into(),
            });
        }
        if longest.len() > NAME_MAX || dir.join(&longest).as_os_str().len() >= PATH_MAX {
            return Err(refuse(format!(
                "names too long for the file system (a rotated file would be {:?}, \
                 over {NAME_MAX} bytes, or its path over {PATH_MAX})",
                longest.to_string_lossy()
            )));
        }
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        probe(dir).map_err(refuse)?;
        // Room for a chunk beyond the reserve, or the first write would fail.
        let needed = opts
            .disk_reserve
            .saturating_add((opts.layout.row_len() * crate::file::CHUNK_ROWS) as u64);
        let free = crate::file::free_bytes(dir);
        if free < needed {
            return Err(refuse(format!(
                "the disk is full: {free} bytes free, writing needs {needed} \
                 (a chunk and the {} MiB kept free)",
                opts.disk_reserve >> 20
            )));
        }
        Ok(FileSet {
            naming,
            opts,
            limits,
            current: None,
            started: 0,
            stamp: None,
            last_number: None,
            summary: SetSummary::default(),
            on_close: Box::new(|_, _| {}),
        })
    }

    /// Sets what is told about each file as it is closed (a log line).
    pub fn on_close(&mut self, f: impl FnMut(&Path, &FileSummary) + 'static) {
        self.on_close = Box::new(f);
    }

    /// Totals so far, the open file's events included.
    pub fn summary(&self) -> SetSummary {
        let mut s = self.summary.clone();
        s.events += self.current.as_ref().map_or(0, EventFile::events);
        s
    }

    /// The file being written, if any.
    pub fn current(&self) -> Option<&EventFile> {
        self.current.as_ref()
    }

    /// Creates the next file, for events of `format` starting at `now_ns`,
    /// under the first name that is free.
    fn create_next(&mut self, format: Format, now_ns: u64) -> Result<(), Error> {
        let stamp = ssdaq_wire::utc::stamp(now_ns / 1_000_000_000);
        loop {
            // In a directory each start second has its own numbering.
            let index = match &self.naming {
                Naming::Dir(_) => {
                    if self.stamp.as_deref() != Some(stamp.as_str()) {
                        self.stamp = Some(stamp.clone());
                        self.started = 0;
                    }
                    self.started
                }
                Naming::File { .. } => self.started,
            };
            self.started += 1;
            let p = match &self.naming {
                Naming::Dir(dir) if index == 0 => dir.join(format!("ssdaq-{stamp}.h5")),
                Naming::Dir(dir) => dir.join(format!("ssdaq-{stamp}.{index:04}.h5")),
                Naming::File { dir, stem, ext } => {
                    dir.join(numbered(stem, (index > 0).then_some(index), ext))
                }
            };
            // The user's own first name must be free; any other taken name
            // (another writer's) is passed over. Create (O_EXCL) decides,
            // so two writers racing for a name cannot both have it.
            let users = index == 0 && matches!(self.naming, Naming::File { .. });
            match EventFile::create(&p, format, now_ns, &self.opts) {
                Ok(f) => {
                    self.current = Some(f);
                    self.summary.files += 1;
                    self.summary.last_path = Some(p);
                    return Ok(());
                }
                Err(Error::Create { source, .. })
                    if !users
                        && index < MAX_INDEX
                        && source.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Appends `ev`, received at `now_ns`, starting a file if needed, and
    /// says what its number told.
    pub fn append(&mut self, ev: &EventView<'_>, now_ns: u64) -> Result<Numbering, Error> {
        let n = ev.number();
        let mut told = Numbering::InOrder;
        if let Some(last) = self.last_number {
            if n <= last {
                // Events 1..n of the new numbering were published before
                // this one reached us.
                told = Numbering::Restart { missed: n - 1 };
                self.summary.restarts += 1;
                if n > 1 {
                    self.summary.missed += n - 1;
                    self.summary.gaps += 1;
                }
                self.close(now_ns)?;
            } else if n > last + 1 {
                told = Numbering::Gap {
                    missed: n - last - 1,
                };
                self.summary.missed += n - last - 1;
                self.summary.gaps += 1;
            }
        }
        self.last_number = Some(n);
        if self
            .current
            .as_ref()
            .is_some_and(|f| f.format() != ev.format())
        {
            self.close(now_ns)?;
        }
        if self.current.is_none() {
            self.create_next(ev.format(), now_ns)?;
        }
        let f = self.current.as_mut().expect("opened above");
        let rows = f.rows();
        f.append(ev, now_ns)?;
        // A chunk went to the file: time to look at its size (a replay
        // never flushes, so the flush's own check is not enough).
        let grown = f.rows() != rows;
        if self.limits.max_events.is_some_and(|m| f.events() >= m)
            || (grown && self.limits.max_bytes.is_some_and(|m| f.size_on_disk() >= m))
        {
            self.close(now_ns)?;
        }
        Ok(told)
    }

    /// Flushes the open file; starts the next one at the next event if it
    /// has reached `max_bytes`.
    pub fn flush(&mut self, now_ns: u64) -> Result<(), Error> {
        let Some(f) = self.current.as_mut() else {
            return Ok(());
        };
        f.flush(now_ns)?;
        if self.limits.max_bytes.is_some_and(|m| f.size_on_disk() >= m) {
            self.close(now_ns)?;
        }
        Ok(())
    }

    /// Closes the open file, if any.
    pub fn close(&mut self, now_ns: u64) -> Result<(), Error> {
        if let Some(mut f) = self.current.take() {
            let s = f.finish(now_ns);
            // Whatever the outcome, the file holds what its summary says.
            self.summary.events += f.summary().events;
            self.summary.unwritten += f.summary().unwritten;
            if let Ok(s) = &s {
                (self.on_close)(f.path(), s);
            }
            s?;
        }
        Ok(())
    }
}

/// `stem.ext`, or `stem.NNNN.ext` for file `index`, byte for byte.
fn numbered(stem: &OsStr, index: Option<u32>, ext: &OsStr) -> OsString {
    let mut name = stem.to_os_string();
    if let Some(i) = index {
        name.push(format!(".{i:04}"));
    }
    name.push(".");
    name.push(ext);
    name
}

/// Whether files can be created in `dir`: an empty file is created (never
/// over another) and removed again, which is the only test that sees
/// permissions, read-only mounts and the like as the writer will.
fn probe(dir: &Path) -> Result<(), String> {
    if !dir.is_dir() {
        return Err(format!("{}: no such directory", dir.display()));
    }
    let p = dir.join(format!(".ssdaq-write-probe-{}", std::process::id()));
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&p)
    {
        Ok(_) => {
            let _ = std::fs::remove_file(&p);
            Ok(())
        }
        Err(e) => Err(format!("cannot create files in {}: {e}", dir.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ssdaq_wire::event::V1_LEN;

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ssdaq-set-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// An event numbered `n`: every module present, every value 0 mV.
    fn event(n: u64) -> Vec<u8> {
        let mut m = vec![0u8; V1_LEN];
        m[..8].copy_from_slice(&n.to_le_bytes());
        m
    }

    fn set(path: &Path) -> Result<FileSet, Error> {
        FileSet::new(path, Options::default(), Limits::default())
    }

    fn append(s: &mut FileSet, n: u64, now_ns: u64) -> Numbering {
        s.append(&EventView::parse(&event(n)).unwrap(), now_ns)
            .unwrap()
    }

    #[test]
    fn a_directory_passes_over_names_taken_in_the_same_second() {
        let dir = tmpdir("taken");
        let t = 1_764_763_200_000_000_000u64;
        let stamp = ssdaq_wire::utc::stamp(t / 1_000_000_000);
        // Another writer (or this one before a restart) took the second's
        // first two names.
        for name in [
            format!("ssdaq-{stamp}.h5"),
            format!("ssdaq-{stamp}.0001.h5"),
        ] {
            std::fs::write(dir.join(name), b"not ours").unwrap();
        }
        let mut s = set(&dir).unwrap();
        assert_eq!(append(&mut s, 1, t), Numbering::InOrder);
        assert_eq!(append(&mut s, 3, t), Numbering::Gap { missed: 1 });
        // The numbering starts again: a new file, in the same second.
        assert_eq!(append(&mut s, 1, t + 1), Numbering::Restart { missed: 0 });
        s.close(t + 2).unwrap();
        let names = |d: &Path| {
            let mut v: Vec<String> = std::fs::read_dir(d)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        let mut want = [0, 1, 2, 3].map(|i| match i {
            0 => format!("ssdaq-{stamp}.h5"),
            i => format!("ssdaq-{stamp}.{i:04}.h5"),
        });
        want.sort();
        assert_eq!(names(&dir), want);
        for name in [
            format!("ssdaq-{stamp}.h5"),
            format!("ssdaq-{stamp}.0001.h5"),
        ] {
            assert_eq!(std::fs::read(dir.join(name)).unwrap(), b"not ours");
        }
        let sum = s.summary();
        assert_eq!((sum.files, sum.events, sum.missed, sum.gaps), (2, 3, 1, 1));
        // A new second starts its own numbering.
        let mut s = set(&dir).unwrap();
        append(&mut s, 1, t + 1_000_000_000);
        s.close(t + 1_000_000_000).unwrap();
        let next = ssdaq_wire::utc::stamp(t / 1_000_000_000 + 1);
        assert!(dir.join(format!("ssdaq-{next}.h5")).exists());
    }

    #[test]
    fn a_name_that_is_not_utf8_is_kept_byte_for_byte() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tmpdir("bytes");
        let t = 1_764_763_200_000_000_000u64;
        // 90 bytes of 0xFF: 90 bytes long (not 270 once made UTF-8).
        let stem = [0xFFu8; 90];
        let mut name = stem.to_vec();
        name.extend(b".h5");
        let mut s = FileSet::new(
            &dir.join(OsStr::from_bytes(&name)),
            Options::default(),
            Limits {
                max_events: Some(1),
                ..Limits::default()
            },
        )
        .unwrap();
        append(&mut s, 1, t);
        append(&mut s, 2, t);
        s.close(t).unwrap();
        let mut second = stem.to_vec();
        second.extend(b".0001.h5");
        for n in [name, second] {
            assert!(dir.join(OsStr::from_bytes(&n)).exists());
        }
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 2);
    }

    #[test]
    fn paths_that_cannot_be_written_are_refused_before_any_event() {
        let dir = tmpdir("refused");
        let taken = dir.join("run.h5");
        std::fs::write(&taken, b"x").unwrap();
        let dangling = dir.join("dangling.h5");
        std::os::unix::fs::symlink(dir.join("nowhere"), &dangling).unwrap();
        let no_dir = format!("{}/newdir/", dir.display());
        let long = dir.join(format!("{}.h5", "a".repeat(248)));
        for (p, says) in [
            (taken.clone(), "never overwritten"),
            (dir.join("run"), "never overwritten"), // run.h5 is taken
            (dangling.clone(), "never overwritten"),
            (long, "names too long"),
            (
                PathBuf::from(format!("{}/", taken.display())),
                "is not a directory",
            ),
            (PathBuf::from(&no_dir), "no such directory"),
            (dir.join("no/such/x.h5"), "no such directory"),
        ] {
            match set(&p) {
                Err(e @ Error::Path { .. }) => assert!(e.to_string().contains(says), "{p:?}: {e}"),
                Err(e) => panic!("{p:?}: {e}"),
                Ok(_) => panic!("{p:?} accepted"),
            }
        }
        assert!(!dir.join("newdir.h5").exists() && !dir.join("nowhere").exists());
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 2, "no probe left");
        // A new name beside them is fine, and nothing is created until an event.
        let s = set(&dir.join("new.h5")).unwrap();
        assert!(!dir.join("new.h5").exists());
        drop(s);
    }

    #[test]
    fn a_file_summary_counts_rows_in_the_file_and_a_full_disk_the_rest() {
        let dir = tmpdir("rows");
        let t = 1_764_763_200_000_000_000u64;
        let mut s = set(&dir.join("run.h5")).unwrap();
        for n in 1..=10 {
            append(&mut s, n, t + n);
        }
        // Pending rows (younger than TAIL_MAX_AGE_NS) are not in the file yet.
        s.flush(t + 20).unwrap();
        let f = s.current().unwrap();
        assert_eq!((f.events(), f.summary().events), (10, 0));
        assert_eq!(f.summary().last_number, None);
        s.flush(t + 20 + crate::file::TAIL_MAX_AGE_NS).unwrap();
        let f = s.current().unwrap();
        assert_eq!(f.summary().events, 10);
        assert_eq!(f.summary().last_number, Some(10));
        assert_eq!(f.summary().modules_seen, u32::MAX);
        s.close(t + 30).unwrap();

        // A restart of the numbering at 4: events 1..3 of it never came.
        let mut s = set(&dir.join("restart.h5")).unwrap();
        append(&mut s, 7, t);
        assert_eq!(append(&mut s, 4, t + 1), Numbering::Restart { missed: 3 });
        s.close(t + 2).unwrap();
        assert_eq!((s.summary().missed, s.summary().restarts), (3, 1));

        // No room beyond the reserve: refused at start, not at a chunk.
        let e = FileSet::new(
            &dir.join("full.h5"),
            Options {
                disk_reserve: u64::MAX / 2,
                ..Options::default()
            },
            Limits::default(),
        )
        .err()
        .unwrap();
        assert!(e.to_string().contains("the disk is full"), "{e}");
        assert!(!dir.join("full.h5").exists());
    }
}
