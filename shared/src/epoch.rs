//! The revocation epoch: a doorbell that lets the verifier notice a committed
//! change to sessions on the very next request without asking SQLite each time.
//!
//! Every writer bumps the counter *after* its transaction has committed and
//! *before* it answers; the verifier compares one atomic load per request with
//! the value it last synchronised at, and only on a difference reads the changes
//! from SQLite. The database stays the single source of truth: the epoch is
//! only a doorbell.
//!
//! Where the counter lives. Not in a shared mapping of a file: whoever truncates
//! the file (an in-place `cp` or `rsync --inplace` restore, `: >`) turns the next
//! load into SIGBUS, and no check before the load closes that race (may's
//! handler then wedges the verifier; the issuer dies). Not read with `pread` per
//! request either: ≈ 0.5 µs on our machines, a tenth of a whole verifier request.
//! It lives in a System V shared-memory segment: nobody can shrink or unmap a
//! segment under the processes attached to it. The file `<database>-epoch` only
//! *names* the segment (`softphone-epoch shm <id> <nonce>`); the nonce, also
//! stored in the segment, tells a stale id (a restored file, an id the kernel
//! reused) from ours. Each segment is marked removed as soon as it is created
//! (Linux still lets other processes attach it by id), so it disappears with
//! its last user and nothing leaks.
//!
//! Damage to the file therefore cannot touch the bell of the processes already
//! running. Each daemon looks at the file about once a second ([`Epoch::check`]):
//! a file that names another live segment is followed (and every segment this
//! process knows keeps being rung); a file that is missing, truncated, enlarged,
//! garbage or names a dead segment is reported and, when seen damaged a second
//! time, rewritten to name ours. The second look gives every daemon (each looks
//! once a second) the chance to see and report the damage first. Processes
//! started while the file was damaged may ring a bell nobody else reads: the
//! verifier checks every request against the database while the file is
//! damaged and for a few seconds after any change of bell.
//!
//! Both daemons must share an IPC namespace (systemd's `PrivateIPC=` off, the
//! default).

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ring::rand::{SecureRandom, SystemRandom};

use crate::{Error, Result};

/// One page: the counter, then the nonce.
const SEGMENT_LEN: usize = 4096;
/// A damaged file is rewritten once it has been seen damaged this long: every
/// daemon looks about once a second, so each sees and reports it first.
const REWRITE_AFTER: Duration = Duration::from_millis(1500);
/// A well-formed file is one short line; more than this is damage.
const MAX_FILE_LEN: usize = 128;
const MAGIC: &str = "softphone-epoch shm";

/// What the file says: which segment, and the nonce that proves it is ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Name {
    id: i32,
    nonce: u64,
}

impl Name {
    fn text(self) -> String {
        format!("{MAGIC} {} {:016x}\n", self.id, self.nonce)
    }

    fn parse(text: &[u8]) -> Option<Name> {
        let text = std::str::from_utf8(text).ok()?;
        let rest = text.strip_prefix(MAGIC)?.strip_prefix(' ')?;
        let rest = rest.strip_suffix('\n')?;
        let (id, nonce) = rest.split_once(' ')?;
        if nonce.len() != 16 {
            return None;
        }
        Some(Name {
            id: id.parse().ok().filter(|id: &i32| *id >= 0)?,
            nonce: u64::from_str_radix(nonce, 16).ok()?,
        })
    }
}

/// An attached segment. Detached only when the [`Epoch`] is dropped: a request
/// may still be reading an older one, and writers ring every one they know.
struct Segment {
    name: Name,
    base: *mut u8,
}

// SAFETY: the segment is plain shared memory, accessed only through the atomics
// at its start; the pointer stays valid until `Drop` detaches it.
#[allow(unsafe_code)]
unsafe impl Send for Segment {}
#[allow(unsafe_code)]
unsafe impl Sync for Segment {}

impl Segment {
    /// A new, zeroed segment of our own, already marked removed (it lives as long
    /// as someone is attached).
    fn create() -> std::io::Result<Segment> {
        let mut nonce = [0u8; 8];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| std::io::Error::other("no randomness for the epoch nonce"))?;
        #[allow(unsafe_code)]
        // SAFETY: plain system calls; the result is checked.
        let id = unsafe { libc::shmget(libc::IPC_PRIVATE, SEGMENT_LEN, libc::IPC_CREAT | 0o600) };
        if id < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let segment = Segment::attach_id(id);
        #[allow(unsafe_code)]
        // SAFETY: `id` is a segment we just created; removing it only stops new
        // attachments by key (we attach by id).
        unsafe {
            libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut());
        }
        let mut segment = segment?;
        segment.name.nonce = u64::from_ne_bytes(nonce);
        segment
            .nonce_cell()
            .store(segment.name.nonce, Ordering::Release);
        Ok(segment)
    }

    /// Attaches the segment the file names, if it is still there and carries the
    /// nonce (so it is ours, not an unrelated segment that reuses the id).
    fn attach(name: Name) -> Option<Segment> {
        let mut ds = std::mem::MaybeUninit::<libc::shmid_ds>::zeroed();
        #[allow(unsafe_code)]
        // SAFETY: IPC_STAT fills `ds`; the result is checked before use.
        let stat = unsafe { libc::shmctl(name.id, libc::IPC_STAT, ds.as_mut_ptr()) };
        #[allow(unsafe_code)]
        // SAFETY: zero-initialised and, on success, filled by the kernel.
        let size = unsafe { ds.assume_init() }.shm_segsz;
        if stat != 0 || size < SEGMENT_LEN {
            return None;
        }
        let mut segment = Segment::attach_id(name.id).ok()?;
        segment.name.nonce = segment.nonce_cell().load(Ordering::Acquire);
        (segment.name == name).then_some(segment)
    }

    fn attach_id(id: i32) -> std::io::Result<Segment> {
        #[allow(unsafe_code)]
        // SAFETY: the kernel picks the address; the result is checked.
        let base = unsafe { libc::shmat(id, std::ptr::null(), 0) };
        if base as isize == -1 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Segment {
            name: Name { id, nonce: 0 },
            base: base.cast(),
        })
    }

    fn counter(&self) -> &AtomicU64 {
        // SAFETY: the segment is at least SEGMENT_LEN bytes, page aligned, attached
        // until `self` drops, and every process accesses it through atomics only.
        #[allow(unsafe_code)]
        unsafe {
            &*self.base.cast::<AtomicU64>()
        }
    }

    fn nonce_cell(&self) -> &AtomicU64 {
        // SAFETY: as for `counter`, eight bytes further.
        #[allow(unsafe_code)]
        unsafe {
            &*self.base.add(8).cast::<AtomicU64>()
        }
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        // SAFETY: attached by us, and nothing borrows it any more (`Epoch` drops
        // its segments only when it is dropped itself).
        #[allow(unsafe_code)]
        unsafe {
            libc::shmdt(self.base.cast());
        }
    }
}

/// What [`Epoch::check`] found in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileState {
    /// It names the segment this process reads and rings.
    Ours,
    /// It names another live segment (made by a process started while the file
    /// was damaged): this process now reads that one and rings both.
    Followed,
    /// It cannot be used (`what` says why); `first` at the look that found the
    /// damage, `rewritten` at the look that repaired it.
    Damaged {
        what: String,
        first: bool,
        rewritten: bool,
    },
}

pub struct Epoch {
    path: PathBuf,
    /// The counter of the segment read now: one load per request, no lock.
    current: AtomicPtr<AtomicU64>,
    /// Every segment attached, the current one last.
    segments: Mutex<Vec<Segment>>,
    /// Since when the file has been found damaged.
    damaged: Mutex<Option<Instant>>,
    rewrite_after: Duration,
    /// Whether `open` made a new segment (nobody rang it before us).
    created: bool,
}

impl std::fmt::Debug for Epoch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Epoch")
            .field("path", &self.path)
            .field("value", &self.load())
            .finish()
    }
}

impl Epoch {
    /// The epoch file that belongs to a database file.
    pub fn path_for(db_path: &Path) -> PathBuf {
        let mut name = db_path.as_os_str().to_os_string();
        name.push("-epoch");
        PathBuf::from(name)
    }

    /// Attaches the segment the file names, or makes one and names it in the file
    /// when the file is missing or unusable.
    pub fn open(path: &Path) -> Result<Epoch> {
        let (segment, created) = match read_file(path).ok().and_then(Segment::attach) {
            Some(segment) => (segment, false),
            None => {
                let segment = Segment::create().map_err(|e| Error::io(path, e))?;
                publish(path, segment.name).map_err(|e| Error::io(path, e))?;
                (segment, true)
            }
        };
        Ok(Epoch {
            path: path.to_path_buf(),
            current: AtomicPtr::new(std::ptr::from_ref(segment.counter()).cast_mut()),
            segments: Mutex::new(vec![segment]),
            damaged: Mutex::new(None),
            rewrite_after: REWRITE_AFTER,
            created,
        })
    }

    /// The current value: one atomic load, no system call.
    pub fn load(&self) -> u64 {
        let counter = self.current.load(Ordering::Acquire);
        // SAFETY: `current` always points at the counter of a segment in
        // `segments`, which stay attached until `self` is dropped.
        #[allow(unsafe_code)]
        unsafe { &*counter }.load(Ordering::Acquire)
    }

    /// Announces a committed change to every verifier: rings every segment this
    /// process knows (a verifier may not have followed a new one yet).
    pub fn bump(&self) -> u64 {
        let segments = self
            .segments
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut value = 0;
        for segment in segments.iter() {
            value = segment
                .counter()
                .fetch_add(1, Ordering::AcqRel)
                .wrapping_add(1);
        }
        value
    }

    /// True when this process made the segment it rings: processes started
    /// earlier may still ring another one until their next [`check`](Self::check).
    pub fn created(&self) -> bool {
        self.created
    }

    /// Looks at the file (about once a second): follows a new segment it names,
    /// reports damage, and rewrites a file that has been damaged for a while.
    pub fn check(&self) -> FileState {
        let ours = self
            .segments
            .lock()
            .ok()
            .and_then(|s| s.last().map(|s| s.name));
        let found = read_file(&self.path);
        let mut damaged = self
            .damaged
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let what = match found {
            Ok(name) if Some(name) == ours => {
                *damaged = None;
                return FileState::Ours;
            }
            Ok(name) => match Segment::attach(name) {
                Some(segment) => {
                    *damaged = None;
                    self.follow(segment);
                    return FileState::Followed;
                }
                None => format!(
                    "names shared-memory segment {} that no longer exists (a restored copy?)",
                    name.id
                ),
            },
            Err(what) => what,
        };
        let since = match *damaged {
            Some(since) => since,
            None => {
                *damaged = Some(Instant::now());
                return FileState::Damaged {
                    what,
                    first: true,
                    rewritten: false,
                };
            }
        };
        if since.elapsed() < self.rewrite_after {
            return FileState::Damaged {
                what,
                first: false,
                rewritten: false,
            };
        }
        let rewritten = ours.is_some_and(|name| publish(&self.path, name).is_ok());
        if rewritten {
            *damaged = None;
        }
        FileState::Damaged {
            what,
            first: false,
            rewritten,
        }
    }

    /// [`check`](Self::check), reporting on standard error what it found (once
    /// per event: damage when first seen, then its repair) as `who`.
    pub fn check_and_report(&self, who: &str) -> FileState {
        let state = self.check();
        let path = self.path.display();
        match &state {
            FileState::Ours => {}
            FileState::Followed => eprintln!(
                "{who}: {path} names another shared-memory doorbell (made while the file was damaged); following it"
            ),
            FileState::Damaged {
                what, first: true, ..
            } => eprintln!(
                "{who}: {path} is damaged: {what}; the doorbell itself is unaffected, the file is rewritten in a second"
            ),
            FileState::Damaged {
                rewritten: true, ..
            } => eprintln!("{who}: {path} rewritten"),
            FileState::Damaged { .. } => {}
        }
        state
    }

    fn follow(&self, segment: Segment) {
        let mut segments = self
            .segments
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        self.current.store(
            std::ptr::from_ref(segment.counter()).cast_mut(),
            Ordering::Release,
        );
        segments.push(segment);
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The segment the file names, or what is wrong with it (for the log).
fn read_file(path: &Path) -> std::result::Result<Name, String> {
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err("missing".to_owned()),
        Err(e) => return Err(format!("unreadable ({e})")),
    };
    let mut text = Vec::with_capacity(MAX_FILE_LEN + 1);
    if let Err(e) = (&mut file)
        .take(MAX_FILE_LEN as u64 + 1)
        .read_to_end(&mut text)
    {
        return Err(format!("unreadable ({e})"));
    }
    match text.len() {
        0 => Err("empty (truncated)".to_owned()),
        n if n > MAX_FILE_LEN => {
            let len = file.metadata().map(|m| m.len()).unwrap_or(n as u64);
            Err(format!("{len} bytes long (enlarged or replaced)"))
        }
        n => Name::parse(&text).ok_or_else(|| format!("{n} bytes that are not a doorbell name")),
    }
}

/// Writes the file afresh (a new file renamed over the old one, so no reader
/// ever sees it half written).
fn publish(path: &Path, name: Name) -> std::io::Result<()> {
    let mut temp = path.as_os_str().to_os_string();
    temp.push(format!(".tmp{}", std::process::id()));
    let temp = PathBuf::from(temp);
    let written = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temp)
        .and_then(|mut file| file.write_all(name.text().as_bytes()))
        .and_then(|()| std::fs::rename(&temp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written
}

#[cfg(test)]
mod tests {
    use softphone_testkit::TestDir;

    use super::*;

    #[test]
    fn a_bump_in_one_process_is_seen_by_another_whatever_happens_to_the_file() {
        let dir = TestDir::new("epoch");
        let path = Epoch::path_for(&dir.path().join("softphone.db"));
        let mut writer = Epoch::open(&path).unwrap();
        writer.rewrite_after = Duration::ZERO;
        assert!(writer.created());
        let mut reader = Epoch::open(&path).unwrap();
        reader.rewrite_after = Duration::ZERO;
        assert!(!reader.created());
        let before = reader.load();
        assert_eq!(writer.bump(), before + 1);
        assert_eq!(reader.load(), before + 1);
        assert_eq!(reader.check(), FileState::Ours);

        for damage in [
            &b""[..],
            b"garbage\0\xff",
            &[0u8; 8192][..],
            b"softphone-epoch shm 2147483000 0123456789abcdef\n",
        ] {
            std::fs::write(&path, damage).unwrap();
            let rung = writer.bump();
            assert_eq!(reader.load(), rung);
            assert!(
                matches!(reader.check(), FileState::Damaged { first: true, .. }),
                "{damage:?}"
            );
            assert!(matches!(
                writer.check(),
                FileState::Damaged { first: true, .. }
            ));
            assert!(matches!(
                reader.check(),
                FileState::Damaged {
                    rewritten: true,
                    ..
                }
            ));
            assert_eq!(writer.check(), FileState::Ours);
        }
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(reader.check(), FileState::Damaged { .. }));

        // A process started while the file is missing rings a bell of its own
        // and names it; the others follow it and keep ringing theirs too.
        let late = Epoch::open(&path).unwrap();
        assert!(late.created());
        assert_eq!(writer.check(), FileState::Followed);
        assert_eq!(reader.check(), FileState::Followed);
        let seen = reader.load();
        late.bump();
        assert_eq!(reader.load(), seen + 1);
        writer.bump();
        assert_eq!(late.load(), seen + 2);
    }
}
