//! A user's call history: the rows of MikoPBX's call records (`cdr_general`, in
//! the database its `dbCDR` connection names) where the user's extension is
//! the caller (`src_num`) or the callee (`dst_num`), for one local day.
//!
//! MikoPBX writes `start` as local-time text (`2024-01-15 10:23:45.123`), so a
//! day is the text range `[day, next day)` on `start`. MikoPBX indexes `start`,
//! `src_num`, `dst_num`, `linkedid`, `UNIQUEID`, `src_chan` and `dst_chan`,
//! each alone (we never add one to a database that is not ours). Neither
//! single index finds a user's day: the day's calls of the whole PBX (`start`)
//! are thousands of rows on a busy PBX, and the user's calls ever (the number
//! indexes) are thousands more on a busy extension. But every index also
//! holds the row's `id`, in order within one number: so the day is first
//! turned into the range of ids its records have (read in the `start` index
//! alone, never touching the table), and then each number index gives the
//! user's rows inside that id range only. That reads the user's calls of
//! about that day and nothing else, whatever order MikoPBX wrote them in (a
//! record is written when the call ends, so ids follow end times, not starts:
//! the range is the smallest and the largest id of the day, not a guess).

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

/// The ids of one day's records: ?1 and ?2 are the day's bounds.
const DAY_IDS: &str = "SELECT min(id), max(id) FROM cdr_general WHERE start >= ?1 AND start < ?2";

/// The user's (?1) records among the day's ids (?5 to ?6) that started that
/// day (?2 to ?3), newest first, at most ?4. The `+` keeps SQLite off the
/// `start` index, so each number index is walked over the id range only.
const CALLS: &str = "SELECT id,
        CAST(src_num AS TEXT), CAST(dst_num AS TEXT),
        CAST(strftime('%s', start, 'utc') AS INTEGER),
        CAST(strftime('%s', NULLIF(answer, ''), 'utc') AS INTEGER),
        CAST(strftime('%s', NULLIF(endtime, ''), 'utc') AS INTEGER),
        CAST(duration AS INTEGER), CAST(billsec AS INTEGER),
        CAST(disposition AS TEXT), CAST(recordingfile AS TEXT),
        CAST(linkedid AS TEXT), CAST(transfer AS INTEGER)
    FROM cdr_general
    WHERE ((src_num = ?1 AND id BETWEEN ?5 AND ?6) OR (dst_num = ?1 AND id BETWEEN ?5 AND ?6))
        AND +start >= ?2 AND +start < ?3
    ORDER BY start DESC, id DESC LIMIT ?4";

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
    let ids: (Option<i64>, Option<i64>) = conn
        .prepare_cached(DAY_IDS)?
        .query_row(rusqlite::params![from, to], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let (Some(first), Some(last)) = ids else {
        return Ok(Vec::new()); // Nobody called that day.
    };
    let fetch = i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX);
    let mut stmt = conn.prepare_cached(CALLS)?;
    let rows = stmt.query_map(
        rusqlite::params![extension, from, to, fetch, first, last],
        |r| {
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
        },
    )?;
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

    /// The id range finds exactly what a plain scan of the table finds, also
    /// for records written out of order (a long call ends, and is written,
    /// after calls that started later), and it reads the number indexes over
    /// that range only.
    #[test]
    fn the_day_s_id_range_finds_exactly_the_user_s_calls_of_that_day() {
        use softphone_testkit::mikopbx::{Cdr, create_cdr, insert_calls};
        let dir = softphone_testkit::TestDir::new("calls-ids");
        let db = dir.path().join("cdr.db");
        create_cdr(&db);
        let call = |start: &'static str, src: &'static str, dst: &'static str| Cdr {
            start,
            disposition: "ANSWERED",
            linkedid: "l",
            src_num: src,
            dst_num: dst,
            ..Cdr::default()
        };
        insert_calls(
            &db,
            &[
                call("2024-01-14 10:00:00", "201", "900"),
                // Started the day before, written among the 15th's records.
                call("2024-01-14 23:50:00", "201", "202"),
                call("2024-01-15 09:00:00", "201", "900"),
                call("2024-01-15 09:30:00", "903", "904"),
                call("2024-01-15 10:00:00", "900", "201"),
                // Started on the 15th, written after the 16th's first record.
                call("2024-01-16 00:05:00", "202", "201"),
                call("2024-01-15 23:55:00", "202", "201"),
                call("2024-01-15 11:00:00", "201", "201"),
                call("2024-01-16 10:00:00", "201", "900"),
            ],
        );
        let conn = Connection::open(&db).unwrap();
        let mut scan = conn
            .prepare(
                "SELECT id FROM cdr_general NOT INDEXED
                 WHERE (src_num = ?1 OR dst_num = ?1) AND start >= ?2 AND start < ?3
                 ORDER BY start DESC, id DESC",
            )
            .unwrap();
        for date in ["2024-01-14", "2024-01-15", "2024-01-16", "2024-01-17"] {
            let day = Day::parse(date).unwrap();
            for extension in ["201", "202", "900", "903", "999"] {
                let want: Vec<i64> = scan
                    .query_map(rusqlite::params![extension, date, day.end()], |r| r.get(0))
                    .unwrap()
                    .collect::<rusqlite::Result<_>>()
                    .unwrap();
                let got: Vec<i64> = query(&conn, extension, day, 100)
                    .unwrap()
                    .iter()
                    .map(|r| r.call.id)
                    .collect();
                assert_eq!(got, want, "{extension} on {date}");
            }
        }
        let day = Day::parse("2024-01-15").unwrap();
        assert_eq!(query(&conn, "201", day, 100).unwrap().len(), 4);
        // One more than the limit, so the caller can tell it truncated.
        assert_eq!(query(&conn, "201", day, 2).unwrap().len(), 3);

        let mut plan = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {CALLS}"))
            .unwrap();
        let plan = plan
            .query_map(rusqlite::params!["201", "a", "b", 10, 1, 2], |r| {
                r.get::<_, String>(3)
            })
            .unwrap()
            .map(|r| r.unwrap())
            .collect::<Vec<_>>()
            .join("; ");
        for index in ["i_cdr_general_src_num", "i_cdr_general_dst_num"] {
            assert!(
                plan.contains(&format!("{index} (")) && plan.contains("rowid>? AND rowid<?"),
                "{plan}"
            );
        }
        assert!(!plan.contains("i_cdr_general_start"), "{plan}");
    }

    #[test]
    fn today_is_a_real_day() {
        let today = Day::today_here().unwrap();
        assert!(today.to_string().starts_with("20"), "{today}");
    }
}
