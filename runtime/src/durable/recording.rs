//! Simulated power loss over real I/O (cargo feature `power-loss`, for tests only).
//!
//! A [`Session`] records every durable operation under one directory: the real files are
//! written as usual, and each write (with its bytes), length change, sync, creation, rename,
//! removal and directory sync is also noted here with the logical time of its submission and of
//! its completion. The test then stops the clock at a moment of its choosing ([`Session::freeze`],
//! or [`Session::freeze_after`] a seeded number of operations: a group half written, a sync in
//! flight, a segment being renamed, a checkpoint being written), and [`Session::write_image`]
//! builds, in a fresh directory, the disk as a power loss at that moment could leave it:
//!
//! * A write is **durable** when a sync of its file (by any descriptor) was submitted after the
//!   write completed, and that sync completed before the loss. Its bytes are in the image.
//! * Every other write (in flight, completed but not synced, failed) is, independently and
//!   chosen by the seeded generator, kept whole, dropped, or torn: an arbitrary subset of its
//!   512-byte sectors (absolute file offsets) reached the device. A dropped sector holds what
//!   it held before the write (earlier writes, the file's contents when recording began, the
//!   old contents of a recycled file), never zeros unless that is what was there.
//! * Length changes (fallocate, truncation) are durable by the same rule, else kept or lost.
//! * Name changes (file and directory creations, renames, removals) are durable when a sync of
//!   their directory was submitted after them and completed. A file system journals the name
//!   changes of a directory in order, so the ones lost are a seeded suffix of those no directory
//!   sync covers, chosen per directory. A file whose name is lost is not in the image (its
//!   content is kept with the inode: a lost removal brings the file back whole).
//!
//! The recorder is process-wide (the store's IO thread, its checkpoint thread and the test's
//! thread all report into it); a session only takes operations on paths under its root, or on
//! files it has seen created or found there. Sessions with disjoint roots can record at once.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

mod image;

/// Sector size a torn write is cut at.
pub const SECTOR_BYTES: u64 = 512;

/// Sessions recording now; zero makes every report a single atomic load.
static ACTIVE: AtomicUsize = AtomicUsize::new(0);
static RECORDER: Mutex<Recorder> = Mutex::new(Recorder {
    sessions: Vec::new(),
    next_id: 0,
});

struct Recorder {
    sessions: Vec<SessionState>,
    next_id: u64,
}

fn recorder() -> MutexGuard<'static, Recorder> {
    // A test that panicked while holding the lock leaves consistent-enough state for the others.
    RECORDER
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn active() -> bool {
    ACTIVE.load(Ordering::Relaxed) != 0
}

type FileId = usize;
type InodeKey = (u64, u64);

/// What the recorder knows about one file (inode).
struct FileModel {
    /// Contents when recording began (empty for a file created since).
    base: Vec<u8>,
    operations: Vec<FileOperation>,
}

#[derive(Debug)]
enum FileChange {
    Write {
        offset: u64,
        bytes: Vec<u8>,
    },
    /// fallocate (never shrinks) or truncate/extend.
    Length {
        len: u64,
        allocate: bool,
    },
    Sync,
}

#[derive(Debug)]
struct FileOperation {
    change: FileChange,
    submitted: u64,
    /// Logical time of the completion, and what it reported: `Ok(bytes)` or a failure.
    completed: Option<(u64, Result<usize, ()>)>,
}

#[derive(Debug, Clone)]
enum NameChange {
    CreateFile { path: PathBuf, file: FileId },
    CreateDirectory { path: PathBuf },
    Rename { from: PathBuf, to: PathBuf },
    Remove { path: PathBuf },
}

impl NameChange {
    /// The directory whose sync makes the change durable.
    fn directory(&self) -> PathBuf {
        let path = match self {
            NameChange::CreateFile { path, .. }
            | NameChange::CreateDirectory { path }
            | NameChange::Remove { path } => path,
            NameChange::Rename { to, .. } => to,
        };
        path.parent().map(Path::to_path_buf).unwrap_or_default()
    }
}

#[derive(Debug)]
struct DirectorySync {
    directory: PathBuf,
    submitted: u64,
    completed: Option<(u64, Result<usize, ()>)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    File(FileId),
    Directory,
}

/// Where a reported operation's completion goes.
#[derive(Debug, Clone, Copy)]
enum Pending {
    File(FileId, usize),
    DirectorySync(usize),
}

/// What an operation reported by a blocking call hands to its completion.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Token(Option<(u64, Pending)>);

struct SessionState {
    id: u64,
    root: PathBuf,
    /// Logical time: one tick per submission, completion and name change recorded.
    clock: u64,
    freeze_at: Option<u64>,
    frozen: bool,
    files: Vec<FileModel>,
    inodes: HashMap<InodeKey, FileId>,
    /// The namespace when recording began, paths relative to the root.
    base_names: BTreeMap<PathBuf, Node>,
    names: Vec<(u64, NameChange)>,
    directory_syncs: Vec<DirectorySync>,
    /// Ring operations in flight, by (ring descriptor, user data).
    ring_pending: HashMap<(RawFd, u64), Pending>,
}

impl SessionState {
    /// Advances the clock for one event; `None` once the power is off.
    fn tick(&mut self) -> Option<u64> {
        if self.frozen {
            return None;
        }
        self.clock += 1;
        if self.freeze_at.is_some_and(|at| self.clock >= at) {
            // This event happened; nothing after it did.
            self.frozen = true;
        }
        Some(self.clock)
    }

    fn relative(&self, path: &Path) -> Option<PathBuf> {
        path.strip_prefix(&self.root).ok().map(Path::to_path_buf)
    }

    fn new_file(&mut self, base: Vec<u8>) -> FileId {
        self.files.push(FileModel {
            base,
            operations: Vec::new(),
        });
        self.files.len() - 1
    }

    fn submit_file(&mut self, file: FileId, change: FileChange) -> Option<Pending> {
        let submitted = self.tick()?;
        let operations = &mut self.files[file].operations;
        operations.push(FileOperation {
            change,
            submitted,
            completed: None,
        });
        Some(Pending::File(file, operations.len() - 1))
    }

    fn complete(&mut self, pending: Pending, result: Result<usize, ()>) {
        let Some(at) = self.tick() else {
            return;
        };
        match pending {
            Pending::File(file, operation) => {
                self.files[file].operations[operation].completed = Some((at, result));
            }
            Pending::DirectorySync(sync) => {
                self.directory_syncs[sync].completed = Some((at, result));
            }
        }
    }

    fn name_change(&mut self, change: NameChange) {
        if let Some(at) = self.tick() {
            self.names.push((at, change));
        }
    }
}

fn inode_of_fd(fd: RawFd) -> Option<InodeKey> {
    // SAFETY: all-zero is a valid `stat`; fstat writes it and reads nothing else of ours.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `stat` is a live, exclusively borrowed buffer of the right type.
    if unsafe { libc::fstat(fd, &mut stat) } != 0 {
        return None;
    }
    Some((stat.st_dev, stat.st_ino))
}

impl Recorder {
    fn by_path(&mut self, path: &Path) -> Option<(&mut SessionState, PathBuf)> {
        self.sessions.iter_mut().find_map(|session| {
            let relative = session.relative(path)?;
            Some((session, relative))
        })
    }

    /// The session recording the file open as `fd`: found by the file's path (inode numbers
    /// of files removed under one session are reused by files of another), then by its inode.
    fn by_fd(&mut self, fd: RawFd) -> Option<(&mut SessionState, FileId)> {
        let path = std::fs::read_link(format!("/proc/self/fd/{fd}")).ok()?;
        let inode = inode_of_fd(fd)?;
        let (session, _) = self.by_path(&path)?;
        let file = *session.inodes.get(&inode)?;
        Some((session, file))
    }

    fn session(&mut self, id: u64) -> Option<&mut SessionState> {
        self.sessions.iter_mut().find(|session| session.id == id)
    }
}

/// The reports `crate::durable` makes; each is a no-op unless a session records the file.
pub(crate) mod hooks {
    use super::*;

    /// What `open` saw before opening: whether the file existed and its length.
    pub(crate) struct BeforeOpen(Option<Option<u64>>);

    pub(crate) fn before_open(path: &Path) -> BeforeOpen {
        if !active() {
            return BeforeOpen(None);
        }
        BeforeOpen(Some(std::fs::metadata(path).ok().map(|meta| meta.len())))
    }

    pub(crate) fn opened(path: &Path, file: &File, before: BeforeOpen) {
        let BeforeOpen(Some(before)) = before else {
            return;
        };
        let Some(inode) = inode_of_fd(file.as_raw_fd()) else {
            return;
        };
        let len_now = file.metadata().map(|meta| meta.len()).unwrap_or(0);
        let mut recorder = recorder();
        let Some((session, relative)) = recorder.by_path(path) else {
            return;
        };
        match before {
            None => {
                let id = session.new_file(Vec::new());
                session.inodes.insert(inode, id);
                session.name_change(NameChange::CreateFile {
                    path: relative,
                    file: id,
                });
            }
            Some(len_before) => {
                if !session.inodes.contains_key(&inode) {
                    // Created outside the recorder after the session began: its contents count
                    // as they are now.
                    let contents = std::fs::read(path).unwrap_or_default();
                    let id = session.new_file(contents);
                    session.inodes.insert(inode, id);
                } else if len_now < len_before {
                    let id = session.inodes[&inode];
                    let change = FileChange::Length {
                        len: len_now,
                        allocate: false,
                    };
                    if let Some(pending) = session.submit_file(id, change) {
                        session.complete(pending, Ok(0));
                    }
                }
            }
        }
    }

    pub(crate) fn directory_created(path: &Path) {
        if !active() {
            return;
        }
        let mut recorder = recorder();
        if let Some((session, relative)) = recorder.by_path(path) {
            if !relative.as_os_str().is_empty() {
                session.name_change(NameChange::CreateDirectory { path: relative });
            }
        }
    }

    fn submit_on_fd(fd: RawFd, change: impl FnOnce() -> FileChange) -> Option<(u64, Pending)> {
        if !active() {
            return None;
        }
        let mut recorder = recorder();
        let (session, file) = recorder.by_fd(fd)?;
        let pending = session.submit_file(file, change())?;
        Some((session.id, pending))
    }

    pub(crate) fn write_submitted(fd: RawFd, offset: u64, bytes: &[u8]) -> Token {
        Token(submit_on_fd(fd, || FileChange::Write {
            offset,
            bytes: bytes.to_vec(),
        }))
    }

    pub(crate) fn sync_submitted(fd: RawFd) -> Token {
        Token(submit_on_fd(fd, || FileChange::Sync))
    }

    pub(crate) fn length_submitted(fd: RawFd, len: u64, allocate: bool) -> Token {
        Token(submit_on_fd(fd, || FileChange::Length { len, allocate }))
    }

    pub(crate) fn directory_sync_submitted(directory: &Path) -> Token {
        if !active() {
            return Token(None);
        }
        let mut recorder = recorder();
        let Some((session, relative)) = recorder.by_path(directory) else {
            return Token(None);
        };
        let Some(submitted) = session.tick() else {
            return Token(None);
        };
        session.directory_syncs.push(DirectorySync {
            directory: relative,
            submitted,
            completed: None,
        });
        let pending = Pending::DirectorySync(session.directory_syncs.len() - 1);
        Token(Some((session.id, pending)))
    }

    pub(crate) fn completed(token: Token, result: Result<usize, ()>) {
        let Token(Some((id, pending))) = token else {
            return;
        };
        let mut recorder = recorder();
        if let Some(session) = recorder.session(id) {
            session.complete(pending, result);
        }
    }

    pub(crate) fn renamed(from: &Path, to: &Path) {
        if !active() {
            return;
        }
        let mut recorder = recorder();
        let Some((session, to)) = recorder.by_path(to) else {
            return;
        };
        let Some(from) = session.relative(from) else {
            return;
        };
        session.name_change(NameChange::Rename { from, to });
    }

    pub(crate) fn removed(path: &Path) {
        if !active() {
            return;
        }
        let mut recorder = recorder();
        if let Some((session, relative)) = recorder.by_path(path) {
            session.name_change(NameChange::Remove { path: relative });
        }
    }

    pub(crate) fn ring_write_submitted(
        ring: RawFd,
        user_data: u64,
        fd: RawFd,
        offset: u64,
        bytes: &[u8],
    ) {
        ring_submitted(ring, user_data, fd, || FileChange::Write {
            offset,
            bytes: bytes.to_vec(),
        });
    }

    pub(crate) fn ring_sync_submitted(ring: RawFd, user_data: u64, fd: RawFd) {
        ring_submitted(ring, user_data, fd, || FileChange::Sync);
    }

    fn ring_submitted(ring: RawFd, user_data: u64, fd: RawFd, change: impl FnOnce() -> FileChange) {
        if !active() {
            return;
        }
        let mut recorder = recorder();
        let Some((session, file)) = recorder.by_fd(fd) else {
            return;
        };
        if let Some(pending) = session.submit_file(file, change()) {
            session.ring_pending.insert((ring, user_data), pending);
        }
    }

    pub(crate) fn ring_completed(ring: RawFd, user_data: u64, result: i32) {
        if !active() {
            return;
        }
        let mut recorder = recorder();
        for session in &mut recorder.sessions {
            if let Some(pending) = session.ring_pending.remove(&(ring, user_data)) {
                let result = usize::try_from(result).map_err(|_| ());
                session.complete(pending, result);
                return;
            }
        }
    }
}

/// A tiny seeded generator (SplitMix64): reproducible choices from one `u64`.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator whose whole sequence is determined by `seed`.
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..bound` (`bound` > 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        debug_assert!(bound > 0);
        ((self.next_u64() as u128 * bound as u128) >> 64) as u64
    }

    /// True with probability `numerator / denominator`.
    pub fn chance(&mut self, numerator: u64, denominator: u64) -> bool {
        self.below(denominator) < numerator
    }
}

/// Records the durable operations under one directory until dropped.
#[derive(Debug)]
pub struct Session {
    id: u64,
    root: PathBuf,
}

/// What [`Session::write_image`] did: how the operations that no sync covered fared.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageSummary {
    /// Events recorded before the loss.
    pub events: u64,
    /// Writes a completed sync covers.
    pub durable_writes: u64,
    /// Writes no sync covers that were kept whole.
    pub kept_writes: u64,
    /// Writes no sync covers that were dropped (their sectors hold what was there before).
    pub dropped_writes: u64,
    /// Writes no sync covers that were torn (some of their sectors kept).
    pub torn_writes: u64,
    /// Length changes no sync covers that were lost.
    pub lost_lengths: u64,
    /// Name changes no directory sync covers that were lost.
    pub lost_names: u64,
    /// Files in the image.
    pub files: u64,
    /// What was under way at the loss: operations submitted and not completed (`write
    /// wal/0000000000020000.wal`, `sync checkpoint.tmp`, `allocate ...`), and name changes no
    /// completed directory sync covers (`rename wal/a.wal.tmp -> wal/a.wal`, `create ...`,
    /// `remove ...`), files named as the recording last knew them.
    pub at_loss: Vec<String>,
}

/// The seeds a power-loss test runs, from the environment: `<PREFIX>_SEED=<seed>` reruns one;
/// `<PREFIX>_CASES=<n>` runs `n` from `<PREFIX>_FIRST_SEED` (default: `default`'s start);
/// otherwise `default` (what CI runs). Panics on a value that is not a number (test input).
pub fn seeds_from_env(prefix: &str, default: std::ops::Range<u64>) -> std::ops::Range<u64> {
    let read = |name: String| {
        let value = std::env::var(&name).ok()?;
        Some(
            value
                .parse::<u64>()
                .unwrap_or_else(|_| panic!("{name}: expected a number, found {value:?}")),
        )
    };
    if let Some(seed) = read(format!("{prefix}_SEED")) {
        return seed..seed + 1;
    }
    let first = read(format!("{prefix}_FIRST_SEED")).unwrap_or(default.start);
    match read(format!("{prefix}_CASES")) {
        Some(cases) => first..first + cases,
        None => first..first + (default.end - default.start),
    }
}

impl fmt::Display for ImageSummary {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "{} events; writes: {} durable, {} kept, {} dropped, {} torn; {} lengths and {} \
             names lost; {} files",
            self.events,
            self.durable_writes,
            self.kept_writes,
            self.dropped_writes,
            self.torn_writes,
            self.lost_lengths,
            self.lost_names,
            self.files
        )
    }
}

impl Session {
    /// Starts recording under `root` (an existing directory): its files and their contents as
    /// they are now are the disk's durable state. Fails if another session records `root`, a
    /// directory inside it or one holding it.
    pub fn start(root: &Path) -> io::Result<Session> {
        let mut base_names = BTreeMap::new();
        let mut files = Vec::new();
        let mut inodes = HashMap::new();
        let mut pending = vec![PathBuf::new()];
        while let Some(relative) = pending.pop() {
            for entry in std::fs::read_dir(root.join(&relative))? {
                let entry = entry?;
                let name = relative.join(entry.file_name());
                let meta = entry.metadata()?;
                if meta.is_dir() {
                    base_names.insert(name.clone(), Node::Directory);
                    pending.push(name);
                } else if meta.is_file() {
                    files.push(FileModel {
                        base: std::fs::read(entry.path())?,
                        operations: Vec::new(),
                    });
                    inodes.insert((meta.dev(), meta.ino()), files.len() - 1);
                    base_names.insert(name, Node::File(files.len() - 1));
                }
            }
        }
        let mut recorder = recorder();
        if recorder
            .sessions
            .iter()
            .any(|session| session.root.starts_with(root) || root.starts_with(&session.root))
        {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} is already being recorded", root.display()),
            ));
        }
        let id = recorder.next_id;
        recorder.next_id += 1;
        recorder.sessions.push(SessionState {
            id,
            root: root.to_path_buf(),
            clock: 0,
            freeze_at: None,
            frozen: false,
            files,
            inodes,
            base_names,
            names: Vec::new(),
            directory_syncs: Vec::new(),
            ring_pending: HashMap::new(),
        });
        ACTIVE.fetch_add(1, Ordering::Relaxed);
        Ok(Session {
            id,
            root: root.to_path_buf(),
        })
    }

    /// The directory recorded.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn with<T>(&self, action: impl FnOnce(&mut SessionState) -> T) -> T {
        let mut recorder = recorder();
        let Some(session) = recorder.session(self.id) else {
            unreachable!("a session is removed only when its handle is dropped");
        };
        action(session)
    }

    /// Events (submissions, completions, name changes) recorded so far.
    pub fn events(&self) -> u64 {
        self.with(|session| session.clock)
    }

    /// The power fails right after `events` more events: that one is recorded, none after it.
    pub fn freeze_after(&self, events: u64) {
        self.with(|session| {
            session.freeze_at = Some(session.clock + events.max(1));
        });
    }

    /// The power fails now.
    pub fn freeze(&self) {
        self.with(|session| session.frozen = true);
    }

    /// True once the power failed. An acknowledgement a test receives and then finds the power
    /// still on was given before the loss: the events it followed from are recorded.
    pub fn is_frozen(&self) -> bool {
        self.with(|session| session.frozen)
    }

    /// Writes into `target` (an empty or missing directory) the disk as the power loss could
    /// leave it, with the choices for what no sync covers drawn from `seed`. Freezes first if
    /// the power is still on.
    pub fn write_image(&self, seed: u64, target: &Path) -> io::Result<ImageSummary> {
        // Built under the lock, written after it: the lock is never held across file I/O
        // beyond what the recorded threads do themselves.
        let (directories, files, summary) = self.with(|session| {
            session.frozen = true;
            image::build(session, &mut SplitMix64::new(seed))
        });
        std::fs::create_dir_all(target)?;
        for directory in directories {
            std::fs::create_dir_all(target.join(directory))?;
        }
        for (path, contents) in files {
            std::fs::write(target.join(path), contents)?;
        }
        Ok(summary)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let mut recorder = recorder();
        recorder.sessions.retain(|session| session.id != self.id);
        ACTIVE.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::durable;
    use std::fs::OpenOptions;

    fn read(path: &Path) -> Vec<u8> {
        std::fs::read(path).unwrap()
    }

    #[test]
    fn synced_writes_survive_and_unsynced_ones_are_kept_dropped_or_torn() {
        let directory = tempfile::tempdir().unwrap();
        let root = directory.path().join("store");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(root.join("old"), vec![7u8; 4096]).unwrap();
        let session = Session::start(&root).unwrap();
        let file = durable::open(&root.join("old"), OpenOptions::new().write(true)).unwrap();
        durable::write_all_at(&file, &[1u8; 1024], 0).unwrap();
        durable::sync_data(&file).unwrap();
        durable::write_all_at(&file, &[2u8; 4096], 0).unwrap();
        let mut fates = [0u32; 3];
        for seed in 0..64 {
            let image = directory.path().join(format!("image-{seed}"));
            let summary = session.write_image(seed, &image).unwrap();
            assert_eq!(summary.durable_writes, 1, "{summary}");
            let contents = read(&image.join("old"));
            assert_eq!(contents.len(), 4096);
            for sector in contents.chunks(512) {
                // Every sector is one of the versions written, never zeros.
                let first = sector[0];
                assert!(sector.iter().all(|&byte| byte == first));
                assert!([1u8, 2, 7].contains(&first), "sector holds {first}");
            }
            // The synced write is there unless the later one replaced it.
            assert!(contents[..1024].iter().all(|&byte| byte == 1 || byte == 2));
            let twos = contents.chunks(512).filter(|sector| sector[0] == 2).count();
            fates[match twos {
                0 => 0,
                8 => 1,
                _ => 2,
            }] += 1;
            std::fs::remove_dir_all(&image).unwrap();
        }
        assert!(fates.iter().all(|&count| count > 0), "{fates:?}");
    }

    #[test]
    fn names_without_a_directory_sync_may_be_lost_with_them_later_ones() {
        let directory = tempfile::tempdir().unwrap();
        let root = directory.path().join("store");
        std::fs::create_dir(&root).unwrap();
        let session = Session::start(&root).unwrap();
        durable::write_file_durably(&root.join("durable"), b"synced").unwrap();
        let file = durable::open(
            &root.join("a.tmp"),
            OpenOptions::new().write(true).create(true),
        )
        .unwrap();
        durable::write_all_at(&file, b"contents", 0).unwrap();
        durable::sync_all(&file).unwrap();
        durable::rename(&root.join("a.tmp"), &root.join("a")).unwrap();
        let mut seen = std::collections::BTreeSet::new();
        for seed in 0..32 {
            let image = directory.path().join(format!("image-{seed}"));
            session.write_image(seed, &image).unwrap();
            assert_eq!(read(&image.join("durable")), b"synced");
            let mut names: Vec<String> = std::fs::read_dir(&image)
                .unwrap()
                .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            if names.contains(&"a".to_string()) {
                assert_eq!(read(&image.join("a")), b"contents");
            }
            // In order: the rename never survives without the creation before it.
            assert!(names != ["a", "a.tmp", "durable"]);
            seen.insert(names);
            std::fs::remove_dir_all(&image).unwrap();
        }
        assert_eq!(seen.len(), 3, "{seen:?}");
    }

    #[test]
    fn a_recycled_file_shows_its_old_contents_where_a_write_was_dropped() {
        let directory = tempfile::tempdir().unwrap();
        let root = directory.path().join("store");
        std::fs::create_dir_all(root.join("wal")).unwrap();
        std::fs::write(root.join("wal/old"), vec![9u8; 2048]).unwrap();
        let session = Session::start(&root).unwrap();
        // Recycled: renamed (durably) and written again without a sync.
        durable::rename_durably(&root.join("wal/old"), &root.join("wal/new")).unwrap();
        let file = durable::open(&root.join("wal/new"), OpenOptions::new().write(true)).unwrap();
        durable::allocate(&file, 2048).unwrap();
        durable::write_all_at(&file, &[4u8; 2048], 0).unwrap();
        let mut old_sectors = 0;
        for seed in 0..32 {
            let image = directory.path().join(format!("image-{seed}"));
            session.write_image(seed, &image).unwrap();
            assert!(!image.join("wal/old").exists());
            let contents = read(&image.join("wal/new"));
            assert_eq!(contents.len(), 2048);
            assert!(contents.iter().all(|&byte| byte == 4 || byte == 9));
            old_sectors += contents.chunks(512).filter(|sector| sector[0] == 9).count();
            std::fs::remove_dir_all(&image).unwrap();
        }
        assert!(old_sectors > 0);
    }

    #[test]
    fn freezing_after_n_events_ignores_everything_later() {
        let directory = tempfile::tempdir().unwrap();
        let root = directory.path().join("store");
        std::fs::create_dir(&root).unwrap();
        let session = Session::start(&root).unwrap();
        let file = durable::open(
            &root.join("log"),
            OpenOptions::new().write(true).create(true),
        )
        .unwrap();
        durable::sync_directory(&root).unwrap();
        durable::write_all_at(&file, b"first", 0).unwrap();
        // The sync's submission is the last event before the loss: its completion comes too late.
        session.freeze_after(1);
        durable::sync_data(&file).unwrap();
        assert!(session.is_frozen());
        durable::write_all_at(&file, b"later", 5).unwrap();
        for seed in 0..16 {
            let image = directory.path().join(format!("image-{seed}"));
            let summary = session.write_image(seed, &image).unwrap();
            assert_eq!(summary.durable_writes, 0, "{summary}");
            let contents = read(&image.join("log"));
            assert!(contents.is_empty() || contents == b"first", "{contents:?}");
            std::fs::remove_dir_all(&image).unwrap();
        }
    }
}
