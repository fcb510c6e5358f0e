//! Background work runs at a lower CPU priority than the threads that answer
//! requests, so that on a busy core the kernel hands the core to requests
//! first. Two classes, by what the work holds:
//!
//! - [`BACKGROUND`], nice 10, for work that must keep moving on a busy core:
//!   the issuer's purge of expired sessions holds the writer connection, and
//!   its checkpoints bound the log every read goes through (they copy under
//!   SCHED_IDLE while the log is short, and at nice 10 once it is long). At the same
//!   priority a purge took
//!   its fair share of a core the requests needed: with the bench's load on
//!   the servers' core, the refresh p99 during a purge of 100 000 sessions was
//!   2.4-2.9x idle, and 1.3-1.4x with the purge at nice 10 (bench/README.md,
//!   eighth pass).
//! - [`when_idle`], SCHED_IDLE, for work that holds nothing a request waits
//!   for: the PBX watcher's sweep, on a handle of its own. A nice value only
//!   weighs the share of a core, not how soon a woken request gets it, which
//!   SCHED_IDLE gives at once. At nice 10 the sweep of a
//!   100 000-peer PBX, in an issuer's first second, took the refresh p99 from
//!   1.45 ms (no sweep) to 4.1-4.5 ms, at nice 19 to 3.0-3.8 ms, under
//!   SCHED_IDLE to 1.8-2.1 ms (bench/README.md, tenth pass).
//!
//! A lowered thread that holds what a request waits for (the writer
//! connection) must be raised back while the request waits, or the request
//! waits for every busier thread too (a batch of refreshes waited up to
//! 347 ms behind a purge step at nice 19). Raising needs CAP_SYS_NICE or an
//! RLIMIT_NICE that reaches [`NORMAL`] (the unit's `LimitNICE=+0`), and so
//! does leaving SCHED_IDLE: [`may_raise`] says whether this process may do
//! both.

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

/// Whether this process may raise a lowered thread back to [`NORMAL`] and
/// take a thread out of SCHED_IDLE: tried on a thread of its own, which is
/// lowered and raised both ways and then ends.
pub fn may_raise() -> bool {
    std::thread::Builder::new()
        .name("nice-probe".into())
        .spawn(|| {
            let me = Tid::current();
            set_nice(me, BACKGROUND).is_ok()
                && set_nice(me, NORMAL).is_ok()
                && set_policy(libc::SCHED_IDLE).is_ok()
                && set_policy(libc::SCHED_OTHER).is_ok()
        })
        .ok()
        .and_then(|probe| probe.join().ok())
        .unwrap_or(false)
}

/// Runs `work` on the calling thread under SCHED_IDLE, which gets a core only
/// when no other thread wants it, and sets the thread back to SCHED_OTHER
/// afterwards (on a panic too): for background work on a thread of a pool,
/// which must go back as it came. `lowers` is [`may_raise`]'s answer, asked
/// once: without it the thread could not be set back, and `work` runs at the
/// thread's priority.
///
/// Only for work that holds nothing a request waits for: on a core that
/// requests keep busy, such work waits for as long as they do.
pub fn when_idle<T>(lowers: bool, work: impl FnOnce() -> T) -> T {
    struct Back;
    impl Drop for Back {
        fn drop(&mut self) {
            let _ = set_policy(libc::SCHED_OTHER);
        }
    }
    let _back = (lowers && set_policy(libc::SCHED_IDLE).is_ok()).then_some(Back);
    work()
}

/// Puts `thread` under SCHED_IDLE, or takes it out to SCHED_OTHER, its nice
/// value kept: for a thread that stays in one class for a while, switched by
/// itself or by another that knows better (see [`when_idle`] for a piece of
/// work on a thread of a pool). Taking a thread out needs [`may_raise`].
pub fn set_idle(thread: Tid, idle: bool) -> io::Result<()> {
    set_policy_of(
        thread.0,
        if idle {
            libc::SCHED_IDLE
        } else {
            libc::SCHED_OTHER
        },
    )
}

/// Whether `thread` is under SCHED_IDLE.
pub fn is_idle(thread: Tid) -> io::Result<bool> {
    // SAFETY: plain system call on an integer; an unknown id is an error.
    #[allow(unsafe_code)]
    let policy = unsafe { libc::sched_getscheduler(thread.0) };
    if policy < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(policy == libc::SCHED_IDLE)
    }
}

/// Sets the calling thread's scheduling policy, one of the normal ones
/// (SCHED_OTHER, SCHED_BATCH, SCHED_IDLE), whose static priority is 0. The
/// thread's nice value is kept.
fn set_policy(policy: libc::c_int) -> io::Result<()> {
    set_policy_of(0, policy)
}

/// [`set_policy`] for thread `id` (0: the calling one).
fn set_policy_of(id: libc::pid_t, policy: libc::c_int) -> io::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: plain system call on a thread id with a valid pointer to a
    // parameter that lives across it; an unknown id is an error.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::sched_setscheduler(id, policy, &param) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The calling thread's scheduling policy (`libc::SCHED_*`).
pub fn policy() -> io::Result<libc::c_int> {
    // SAFETY: plain system call on the calling thread.
    #[allow(unsafe_code)]
    let policy = unsafe { libc::sched_getscheduler(0) };
    if policy >= 0 {
        Ok(policy)
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_work_on_a_pool_thread_gives_the_thread_back_as_it_came() {
        let me = Tid::current();
        assert_eq!(policy().unwrap(), libc::SCHED_OTHER);
        assert_eq!(
            when_idle(true, || (policy().unwrap(), nice(me).unwrap())),
            (libc::SCHED_IDLE, NORMAL)
        );
        assert_eq!(
            (policy().unwrap(), nice(me).unwrap()),
            (libc::SCHED_OTHER, NORMAL)
        );
        assert_eq!(when_idle(false, || policy().unwrap()), libc::SCHED_OTHER);
        let panicked = std::panic::catch_unwind(|| when_idle(true, || panic!("work failed")));
        assert!(panicked.is_err());
        assert_eq!(policy().unwrap(), libc::SCHED_OTHER);
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
        set_idle(tid, true).unwrap();
        assert!(is_idle(tid).unwrap());
        assert!(!is_idle(Tid::current()).unwrap(), "only that thread");
        set_idle(tid, false).unwrap();
        assert!(!is_idle(tid).unwrap());
        assert_eq!(nice(tid).unwrap(), NORMAL, "its nice value kept");
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
