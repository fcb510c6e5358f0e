//! SQLite's process-wide settings, made once before the first connection of
//! a daemon opens.
//!
//! SQLite counts every allocation it makes, in every connection of the
//! process, under one global mutex (its "memory statistics"). Nothing here
//! reads the counts, and the mutex is held across each `malloc`: a thread of
//! lower priority preempted while holding it stalls the requests' reads of
//! the same process. Measured in the issuer's first second on a 100 000-peer
//! PBX, with the watcher's sweep reading the PBX under SCHED_IDLE: refresh
//! p99 during / idle 1.49, 2.13 and 2.13 with the counts, 1.28, 1.24 and 1.23
//! without (bench/README.md, tenth pass).

/// Turns SQLite's memory statistics off; returns false when it came too late
/// (SQLite had started: a connection was opened) and the counts stay on.
///
/// # Safety
///
/// No other thread may use SQLite meanwhile (`sqlite3_config` is not
/// thread-safe): call it first thing in `main`, before any thread starts.
#[allow(unsafe_code)]
pub unsafe fn apply() -> bool {
    // SAFETY: the caller keeps other threads out of SQLite; after SQLite has
    // started, sqlite3_config only answers SQLITE_MISUSE. This option takes
    // one int argument.
    let rc = unsafe {
        rusqlite::ffi::sqlite3_config(
            rusqlite::ffi::SQLITE_CONFIG_MEMSTATUS,
            std::ffi::c_int::from(false),
        )
    };
    rc == rusqlite::ffi::SQLITE_OK
}
