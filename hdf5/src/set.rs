//! A run's HDF5 files: naming, rotation, and what the whole set holds.
//!
//! [`FileSet`] takes events one at a time and keeps one [`EventFile`] open.
//! Given a directory, it names each file by its start time
//! (`ssdaq-20261126T105534Z.h5`); given a file name, the first file has that
//! name and later ones `name.0001.h5`, `name.0002.h5` … It starts a new file
//! when the current one reaches `max_events` or `max_bytes`, when the
//! events' wire format changes, or when the event numbers start again (the
//! daemon was restarted): one file never mixes two numberings. It never
//! overwrites a file: a name that is taken is skipped.
//!
//! It holds one open file and a summary; nothing grows with the run.

use std::path::{Path, PathBuf};

use ssdaq_wire::event::EventView;

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
        stem: String,
        ext: String,
    },
}

/// What is told when a file is closed.
type OnClose = dyn FnMut(&Path, &FileSummary);

/// The files of one run, one open at a time.
pub struct FileSet {
    naming: Naming,
    opts: Options,
    limits: Limits,
    current: Option<EventFile>,
    /// Files started (the next file's index for `Naming::File`).
    started: u32,
    /// The last event number seen, across files.
    last_number: Option<u64>,
    summary: SetSummary,
    /// Called with each file's path and summary when it is closed.
    on_close: Box<OnClose>,
}

impl FileSet {
    /// A set written to `path`: an existing directory, or the first file's name.
    pub fn new(path: &Path, opts: Options, limits: Limits) -> FileSet {
        let naming = if path.is_dir() {
            Naming::Dir(path.to_path_buf())
        } else {
            let dir = path.parent().unwrap_or(Path::new("")).to_path_buf();
            let stem = path
                .file_stem()
                .map_or_else(|| "ssdaq".into(), |s| s.to_string_lossy().into_owned());
            let ext = path
                .extension()
                .map_or_else(|| "h5".into(), |s| s.to_string_lossy().into_owned());
            Naming::File { dir, stem, ext }
        };
        FileSet {
            naming,
            opts,
            limits,
            current: None,
            started: 0,
            last_number: None,
            summary: SetSummary::default(),
            on_close: Box::new(|_, _| {}),
        }
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

    /// The next free name for a file started at `now_ns`.
    fn next_path(&mut self, now_ns: u64) -> PathBuf {
        loop {
            let index = self.started;
            self.started += 1;
            let p = match &self.naming {
                Naming::Dir(dir) => {
                    let stamp = ssdaq_wire::utc::stamp(now_ns / 1_000_000_000);
                    if index == 0 || !dir.join(format!("ssdaq-{stamp}.h5")).exists() {
                        dir.join(format!("ssdaq-{stamp}.h5"))
                    } else {
                        dir.join(format!("ssdaq-{stamp}.{index:04}.h5"))
                    }
                }
                Naming::File { dir, stem, ext } if index == 0 => dir.join(format!("{stem}.{ext}")),
                Naming::File { dir, stem, ext } => dir.join(format!("{stem}.{index:04}.{ext}")),
            };
            // The first name is the user's: refused if taken (create says so).
            if index == 0 || !p.exists() {
                return p;
            }
        }
    }

    /// Appends `ev`, received at `now_ns`, starting a file if needed.
    pub fn append(&mut self, ev: &EventView<'_>, now_ns: u64) -> Result<(), Error> {
        let n = ev.number();
        if let Some(last) = self.last_number {
            if n <= last {
                self.summary.restarts += 1;
                self.close(now_ns)?;
            } else if n > last + 1 {
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
            let path = self.next_path(now_ns);
            self.current = Some(EventFile::create(&path, ev.format(), now_ns, &self.opts)?);
            self.summary.files += 1;
            self.summary.last_path = Some(path);
        }
        let f = self.current.as_mut().expect("opened above");
        f.append(ev, now_ns)?;
        if self.limits.max_events.is_some_and(|m| f.events() >= m) {
            self.close(now_ns)?;
        }
        Ok(())
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
            self.summary.events += f.events();
            if let Ok(s) = &s {
                (self.on_close)(f.path(), s);
            }
            s?;
        }
        Ok(())
    }
}
