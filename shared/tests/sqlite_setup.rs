//! In a test binary of its own: SQLite's settings must come before anything
//! in the process starts SQLite, which other tests would.

use softphone_shared::sqlite_setup;

#[test]
fn memory_statistics_are_off_before_the_first_connection_and_stay_as_they_are_after() {
    // SAFETY: the only test of this binary, and nothing else uses SQLite.
    #[allow(unsafe_code)]
    let applied = unsafe { sqlite_setup::apply() };
    assert!(applied);
    let conn = rusqlite::Connection::open_in_memory().unwrap();
    conn.execute_batch(
        "CREATE TABLE t (x TEXT);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000)
         INSERT INTO t SELECT printf('%0100d', i) FROM n;",
    )
    .unwrap();
    // SAFETY: a plain read of a counter.
    #[allow(unsafe_code)]
    let counted = unsafe { rusqlite::ffi::sqlite3_memory_used() };
    assert_eq!(counted, 0, "nothing is counted");
    // Too late once SQLite runs: the answer says so.
    // SAFETY: as above.
    #[allow(unsafe_code)]
    let again = unsafe { sqlite_setup::apply() };
    assert!(!again);
}
