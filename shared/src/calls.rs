//! A user's call history: the rows of MikoPBX's call records (`cdr_general`, in
//! the database its `dbCDR` connection names) where the user's extension is
//! the caller (`src_num`) or the callee (`dst_num`), for one local day.
//!
//! MikoPBX writes `start` as local-time text (`2024-01-15 10:23:45.123`), so a
//! day is the text range `[day, next day)` on `start`. MikoPBX indexes `start`,
//! `src_num`, `dst_num`, `linkedid`, `UNIQUEID`, `src_chan` and `dst_chan`
//! (we never add one to a database that is not ours), which gives two ways to
//! the rows: that day's calls of the whole PBX (the `start` index), or every
//! call the user ever made or took (the two number indexes). Which one reads
//! fewer rows differs by user and day, so each request first counts both in
//! the indexes alone (tens of microseconds) and reads the smaller; the `+`
//! before a column keeps SQLite off its index, so each query walks the index
//! it was chosen for.

use rusqlite::Connection;
use serde::Serialize;

use crate::Result;
use crate::recordings::Recordings;
use crate::users::mikopbx::PbxDatabase;

/// A calendar day, `YYYY-MM-DD`, years 0001 to 9999.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Day(time::Date);

impl Day {
    /// Exactly `YYYY-MM-DD` of a date that exists (no sign, no spaces, no
    /// 2023-02-29).
    pub fn parse(text: &str) -> Option<Day> {
        let b = text.as_bytes();
        let digits = |range: std::ops::Range<usize>| -> Option<u32> {
            b.get(range)?.iter().try_fold(0u32, |n, &c| {
                c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
            })
        };
        if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
            return None;
        }
        let year = i32::try_from(digits(0..4)?).ok().filter(|y| *y >= 1)?;
        let month = time::Month::try_from(u8::try_from(digits(5..7)?).ok()?).ok()?;
        let day = u8::try_from(digits(8..10)?).ok()?;
        time::Date::from_calendar_date(year, month, day)
            .ok()
            .map(Day)
    }

    /// Today in this host's local time (`TZ`, else `/etc/localtime`), as SQLite
    /// reckons it on `conn`: on a PBX, the time MikoPBX writes its records in.
    pub fn today(conn: &Connection) -> rusqlite::Result<Day> {
        conn.query_row("SELECT date('now', 'localtime')", [], |r| {
            let text: String = r.get(0)?;
            Day::parse(&text).ok_or_else(|| {
                rusqlite::Error::InvalidColumnType(0, "date".into(), rusqlite::types::Type::Text)
            })
        })
    }

    /// As [`Day::today`], without a database of our own at hand.
    pub fn today_here() -> Result<Day> {
        Ok(Day::today(&Connection::open_in_memory()?)?)
    }

    /// The day after (the range's end); 9999-12-31 has none and ends at `:`,
    /// which sorts after every digit.
    fn end(self) -> String {
        match self.0.next_day() {
            Some(next) => Day(next).to_string(),
            None => "9999-12-31:".to_owned(),
        }
    }
}

impl std::fmt::Display for Day {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let d = self.0;
        write!(
            f,
            "{:04}-{:02}-{:02}",
            d.year(),
            u8::from(d.month()),
            d.day()
        )
    }
}

/// Which way a call went, seen from the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Incoming,
    Outgoing,
}

/// One call record, as `history` answers it. Times are Unix seconds (the
/// record's local time read in this host's time zone); `None` where the
/// record has none (an unanswered call has no `answer`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Call {
    pub id: i64,
    /// Shared by every leg of one conversation (a transfer adds legs).
    pub linkedid: String,
    pub start: Option<i64>,
    pub answer: Option<i64>,
    pub end: Option<i64>,
    /// Seconds from start to end.
    pub duration: i64,
    /// Seconds from answer to end.
    pub billsec: i64,
    pub direction: Direction,
    /// The other party's number.
    pub peer: String,
    /// Asterisk's: `ANSWERED`, `NO ANSWER`, `BUSY`, `FAILED`.
    pub disposition: String,
    /// This leg was made by a transfer.
    pub transfer: bool,
    /// Its recording's URL path, when the file exists inside the recordings
    /// directory.
    pub recording: Option<String>,
}

/// One day's calls of a user, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct History {
    pub day: Day,
    pub calls: Vec<Call>,
    /// More calls than the limit that day: the oldest are left out.
    pub truncated: bool,
}

/// The columns of a call, for either way to the rows.
macro_rules! history_query {
    ($filter:literal) => {
        concat!(
            "SELECT id,
                CAST(src_num AS TEXT), CAST(dst_num AS TEXT),
                CAST(strftime('%s', start, 'utc') AS INTEGER),
                CAST(strftime('%s', NULLIF(answer, ''), 'utc') AS INTEGER),
                CAST(strftime('%s', NULLIF(endtime, ''), 'utc') AS INTEGER),
                CAST(duration AS INTEGER), CAST(billsec AS INTEGER),
                CAST(disposition AS TEXT), CAST(recordingfile AS TEXT),
                CAST(linkedid AS TEXT), CAST(transfer AS INTEGER)
            FROM cdr_general
            WHERE ",
            $filter,
            " ORDER BY start DESC, id DESC LIMIT ?4"
        )
    };
}

/// Through the `start` index: that day's calls of the whole PBX.
const BY_DAY: &str =
    history_query!("start >= ?2 AND start < ?3 AND (+src_num = ?1 OR +dst_num = ?1)");
/// Through the number indexes: every call of the user, then that day's.
const BY_NUMBER: &str =
    history_query!("(src_num = ?1 OR dst_num = ?1) AND +start >= ?2 AND +start < ?3");
/// What each way reads, counted in the indexes without touching the table.
/// The user's side is counted only up to the day's count (?2): a busy
/// extension's whole history would cost more to count than the day to read.
const COUNT_BY_DAY: &str = "SELECT count(*) FROM cdr_general WHERE start >= ?1 AND start < ?2";
const COUNT_BY_NUMBER: &str = "SELECT
    (SELECT count(*) FROM (SELECT 1 FROM cdr_general WHERE src_num = ?1 LIMIT ?2))
    + (SELECT count(*) FROM (SELECT 1 FROM cdr_general WHERE dst_num = ?1 LIMIT ?2))";

/// A record as read, before its recording is looked for on disk.
struct Row {
    call: Call,
    recordingfile: Option<String>,
}

/// The calls of `extension` on `day` (today when `None`), at most `limit`,
/// with links to the recordings inside `recordings`. The database handle is
/// held only for the query; the files are looked at after.
pub fn history(
    db: &PbxDatabase,
    extension: &str,
    day: Option<Day>,
    limit: usize,
    recordings: &Recordings,
) -> Result<History> {
    let (day, mut rows) = db.read(|conn| {
        let day = match day {
            Some(day) => day,
            None => Day::today(conn)?,
        };
        let rows = query(conn, extension, day, limit)?;
        Ok((day, rows))
    })?;
    let truncated = rows.len() > limit;
    rows.truncate(limit);
    let calls = rows
        .into_iter()
        .map(|row| Call {
            recording: row
                .recordingfile
                .as_deref()
                .filter(|f| !f.is_empty())
                .and_then(|f| recordings.link(f)),
            ..row.call
        })
        .collect();
    Ok(History {
        day,
        calls,
        truncated,
    })
}

/// Up to `limit + 1` rows, so the caller knows whether there were more.
fn query(conn: &Connection, extension: &str, day: Day, limit: usize) -> rusqlite::Result<Vec<Row>> {
    let (from, to) = (day.to_string(), day.end());
    let by_day: i64 = conn
        .prepare_cached(COUNT_BY_DAY)?
        .query_row(rusqlite::params![from, to], |r| r.get(0))?;
    let by_number: i64 = conn.prepare_cached(COUNT_BY_NUMBER)?.query_row(
        rusqlite::params![extension, by_day.saturating_add(1)],
        |r| r.get(0),
    )?;
    let sql = if by_number < by_day {
        BY_NUMBER
    } else {
        BY_DAY
    };
    read(conn, sql, extension, (&from, &to), limit)
}

/// The rows of `sql` (one of the two ways), newest first.
fn read(
    conn: &Connection,
    sql: &str,
    extension: &str,
    (from, to): (&str, &str),
    limit: usize,
) -> rusqlite::Result<Vec<Row>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let fetch = i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX);
    let rows = stmt.query_map(rusqlite::params![extension, from, to, fetch], |r| {
        let src: Option<String> = r.get(1)?;
        let dst: Option<String> = r.get(2)?;
        let (direction, peer) = if src.as_deref() == Some(extension) {
            (Direction::Outgoing, dst)
        } else {
            (Direction::Incoming, src)
        };
        Ok(Row {
            call: Call {
                id: r.get(0)?,
                start: r.get(3)?,
                answer: r.get(4)?,
                end: r.get(5)?,
                duration: r.get::<_, Option<i64>>(6)?.unwrap_or(0),
                billsec: r.get::<_, Option<i64>>(7)?.unwrap_or(0),
                disposition: r.get::<_, Option<String>>(8)?.unwrap_or_default(),
                recording: None,
                linkedid: r.get::<_, Option<String>>(10)?.unwrap_or_default(),
                transfer: r.get::<_, Option<i64>>(11)?.unwrap_or(0) != 0,
                direction,
                peer: peer.unwrap_or_default(),
            },
            recordingfile: r.get(9)?,
        })
    })?;
    rows.collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_are_exactly_year_month_day_of_a_real_date() {
        let day = Day::parse("2024-02-29").unwrap();
        assert_eq!(day.to_string(), "2024-02-29");
        assert_eq!(day.end(), "2024-03-01");
        assert_eq!(Day::parse("2023-12-31").unwrap().end(), "2024-01-01");
        assert_eq!(Day::parse("9999-12-31").unwrap().end(), "9999-12-31:");
        assert_eq!(Day::parse("0001-01-01").unwrap().to_string(), "0001-01-01");
        for bad in [
            "",
            "2024-1-15",
            "2024-01-5",
            "24-01-15",
            "2023-02-29",
            "2024-13-01",
            "2024-00-10",
            "2024-01-00",
            "2024-01-32",
            "0000-01-01",
            "+024-01-15",
            "2024-01-15 ",
            " 2024-01-15",
            "2024/01/15",
            "2024-01-15T00",
            "２０２４-01-15",
            "2024-0a-15",
            "2024--1-15",
        ] {
            assert_eq!(Day::parse(bad), None, "{bad:?}");
        }
    }

    /// Both ways to the rows read the same calls, each through the index it
    /// was chosen for; a user with few calls ever takes the number indexes,
    /// one with many the `start` index.
    #[test]
    fn both_ways_find_the_same_calls_through_their_own_index() {
        let dir = softphone_testkit::TestDir::new("calls-plans");
        let db = dir.path().join("cdr.db");
        softphone_testkit::mikopbx::create_cdr(&db);
        let call = |start: &'static str, src: &'static str, dst: &'static str| {
            softphone_testkit::mikopbx::Cdr {
                start,
                answer: "",
                endtime: "",
                src_num: src,
                dst_num: dst,
                disposition: "ANSWERED",
                recordingfile: "",
                linkedid: "l",
                duration: 1,
                billsec: 1,
                transfer: 0,
            }
        };
        // 201 calls every day of January; 202 once, on the 15th; others fill
        // the 15th.
        const DAYS: [&str; 28] = [
            "01", "02", "03", "04", "05", "06", "07", "08", "09", "10", "11", "12", "13", "14",
            "15", "16", "17", "18", "19", "20", "21", "22", "23", "24", "25", "26", "27", "28",
        ];
        let starts: Vec<String> = DAYS
            .iter()
            .map(|d| format!("2024-01-{d} 10:00:00"))
            .collect();
        let mut calls: Vec<_> = starts
            .iter()
            .map(|start| softphone_testkit::mikopbx::Cdr {
                start,
                ..call("", "201", "900")
            })
            .collect();
        calls.push(call("2024-01-15 11:00:00", "901", "202"));
        for _ in 0..40 {
            calls.push(call("2024-01-15 12:00:00", "903", "904"));
        }
        softphone_testkit::mikopbx::insert_calls(&db, &calls);
        let conn = Connection::open(&db).unwrap();
        let day = Day::parse("2024-01-15").unwrap();
        let (from, to) = (day.to_string(), day.end());
        for (extension, want) in [("201", 1), ("202", 1), ("903", 40), ("999", 0)] {
            let by_day = read(&conn, BY_DAY, extension, (&from, &to), 100).unwrap();
            let by_number = read(&conn, BY_NUMBER, extension, (&from, &to), 100).unwrap();
            let ids = |rows: &[Row]| rows.iter().map(|r| r.call.id).collect::<Vec<_>>();
            assert_eq!(ids(&by_day), ids(&by_number), "{extension}");
            assert_eq!(by_day.len(), want, "{extension}");
            assert_eq!(query(&conn, extension, day, 100).unwrap().len(), want);
        }
        let plan = |sql: &str| -> String {
            let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let rows = stmt
                .query_map(rusqlite::params!["201", from, to, 10], |r| {
                    r.get::<_, String>(3)
                })
                .unwrap();
            rows.map(|r| r.unwrap()).collect::<Vec<_>>().join("; ")
        };
        let (day_plan, number_plan) = (plan(BY_DAY), plan(BY_NUMBER));
        assert!(day_plan.contains("i_cdr_general_start"), "{day_plan}");
        assert!(!day_plan.contains("_num"), "{day_plan}");
        assert!(
            number_plan.contains("i_cdr_general_src_num"),
            "{number_plan}"
        );
        assert!(
            number_plan.contains("i_cdr_general_dst_num"),
            "{number_plan}"
        );
    }

    #[test]
    fn today_is_a_real_day() {
        let today = Day::today_here().unwrap();
        assert!(today.to_string().starts_with("20"), "{today}");
    }
}
