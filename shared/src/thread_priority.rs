//! Background work (the issuer's purge of expired sessions, its
//! checkpoints, the PBX watcher's sweep) runs at a lower CPU priority than the threads that answer
//! requests, so that on a busy core the kernel hands the core to requests
//! first. At the same priority a purge took its fair share of a core the
//! requests needed: with the bench's load on the servers' core, the refresh
//! p99 during a purge of 100 000 sessions was 2.4-2.9x idle, and 1.3-1.4x with
//! the purge at [`BACKGROUND`] (bench/README.md, eighth pass).
//!
//! A lowered thread that holds what a request waits for (the writer
//! connection) must be raised back while the request waits, or the request
//! waits for every busier thread too (a batch of refreshes waited up to
//! 347 ms behind a purge step at nice 19). Raising needs CAP_SYS_NICE or an
//! RLIMIT_NICE that reaches [`NORMAL`] (the unit's `LimitNICE=+0`):
//! [`may_raise`] says whether this process has either.

use std::io;

/// The nice value of background work: a weight of 110 against the 1 024 of
/// a request's thread, so a purge step that competes with requests gets about
/// a tenth of the core they leave, and all of a core nobody else wants.
pub const BACKGROUND: i32 = 10;
/// The nice value threads start with.
pub const NORMAL: i32 = 0;

/// A thread, by the id the kernel knows it by (not [`std::thread::ThreadId`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tid(libc::pid_t);

impl Tid {
    /// The calling thread.
    pub fn current() -> Tid {
        // SAFETY: gettid has no arguments and cannot fail.
        #[allow(unsafe_code)]
        Tid(unsafe { libc::gettid() })
    }

    /// For keeping in an atomic: never 0, which no thread has.
    pub fn raw(self) -> i32 {
        self.0
    }

    /// The thread `raw` came from, None for 0.
    pub fn from_raw(raw: i32) -> Option<Tid> {
        (raw != 0).then_some(Tid(raw))
    }
}

/// Sets `thread`'s nice value (on Linux, nice values are per thread).
/// Lowering one's own priority is always allowed; raising it needs
/// [`may_raise`].
pub fn set_nice(thread: Tid, nice: i32) -> io::Result<()> {
    let id = libc::id_t::try_from(thread.0).map_err(|_| io::ErrorKind::InvalidInput)?;
    // SAFETY: plain system call on integers; an unknown id is an error.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, id, nice) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `thread`'s nice value, read from `/proc` (getpriority's answer cannot tell
/// -1 from an error without errno juggling).
pub fn nice(thread: Tid) -> io::Result<i32> {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{}/stat", thread.0))?;
    // The name, in parentheses, may hold spaces: fields are counted after it.
    // The nice value is field 19 of stat(5); the state after ")" is field 3.
    stat.rsplit_once(')')
        .and_then(|(_, fields)| fields.split_whitespace().nth(19 - 3))
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| io::Error::other("unreadable /proc stat"))
}

/// Whether this process may raise a lowered thread back to [`NORMAL`]: tried
/// on a thread of its own, which is lowered and raised and then ends.
pub fn may_raise() -> bool {
    std::thread::Builder::new()
        .name("nice-probe".into())
        .spawn(|| {
            let me = Tid::current();
            set_nice(me, BACKGROUND).is_ok() && set_nice(me, NORMAL).is_ok()
        })
        .ok()
        .and_then(|probe| probe.join().ok())
        .unwrap_or(false)
}

/// Runs `work` on the calling thread at [`BACKGROUND`] and sets the thread
/// back to [`NORMAL`] afterwards (on a panic too): for background work on a
/// thread of a pool, which must go back as it came. `lowers` is
/// [`may_raise`]'s answer, asked once: without it the thread could not be set
/// back, and `work` runs at the thread's priority.
pub fn in_background<T>(lowers: bool, work: impl FnOnce() -> T) -> T {
    struct Back(Tid);
    impl Drop for Back {
        fn drop(&mut self) {
            let _ = set_nice(self.0, NORMAL);
        }
    }
    let me = Tid::current();
    let _back = (lowers && set_nice(me, BACKGROUND).is_ok()).then_some(Back(me));
    work()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn background_work_on_a_pool_thread_gives_the_thread_back_as_it_came() {
        let me = Tid::current();
        assert_eq!(in_background(true, || nice(me).unwrap()), BACKGROUND);
        assert_eq!(nice(me).unwrap(), NORMAL);
        assert_eq!(in_background(false, || nice(me).unwrap()), NORMAL);
        let panicked = std::panic::catch_unwind(|| in_background(true, || panic!("work failed")));
        assert!(panicked.is_err());
        assert_eq!(nice(me).unwrap(), NORMAL);
    }

    /// One thread lowered by another and raised back; the others keep theirs.
    /// (Tests run as root in CI, so raising is allowed.)
    #[test]
    fn a_thread_is_lowered_and_raised_by_another() {
        assert!(may_raise(), "the tests need to raise priorities (root)");
        let (tell, told) = std::sync::mpsc::channel();
        let (done, finish) = std::sync::mpsc::channel::<()>();
        let worker = std::thread::spawn(move || {
            tell.send(Tid::current()).unwrap();
            let _ = finish.recv();
        });
        let tid = told.recv().unwrap();
        assert_eq!(nice(tid).unwrap(), NORMAL);
        set_nice(tid, BACKGROUND).unwrap();
        assert_eq!(nice(tid).unwrap(), BACKGROUND);
        assert_eq!(nice(Tid::current()).unwrap(), NORMAL, "only that thread");
        set_nice(tid, NORMAL).unwrap();
        assert_eq!(nice(tid).unwrap(), NORMAL);
        done.send(()).unwrap();
        worker.join().unwrap();
    }

    #[test]
    fn zero_is_no_thread() {
        assert_eq!(Tid::from_raw(0), None);
        let me = Tid::current();
        assert_eq!(Tid::from_raw(me.raw()), Some(me));
    }
}
