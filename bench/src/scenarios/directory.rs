//! What the app shows besides calls, at a PBX's size: `GET users` with 5 000
//! extensions (the answer, its `304`, and remaking it when stale) and `GET
//! history` for a busy user among `--cdr-rows` call records (1 000 000 by
//! default) over a year, from a MikoPBX fixture with the real layouts. Rows
//! are held against `GET profile` on the same daemon in the same run.
//! Seeding happens before anything is timed.

use std::path::Path;
use std::time::{Duration, Instant};

use softphone_issuer::listing::FRESH_FOR;
use softphone_testkit::mikopbx::{self, Cdr};
use softphone_testkit::{BASE, Daemons, TestDir};

use crate::load::Request;
use crate::report::{Report, Target};
use crate::scenarios::issuer::profile_request;
use crate::stack::{Settings, assert_status, daemon_options, get, measure, plan};

/// Extensions in the directory: 2000 to 6999.
const EXTENSIONS: usize = 5000;
/// Days of call records, from 2024-01-01.
const DAYS: usize = 365;
/// The busy user: a party to one call in [`BUSY_SHARE`] of the whole PBX's.
const BUSY: &str = "2000";
const BUSY_SHARE: usize = 20;
/// Connections of the latency rows (an app asks once per screen, not 64 at a
/// time): the bounds are on the time to answer, not on queueing behind a
/// saturating load.
const LATENCY_CONNECTIONS: usize = 4;
/// Remakes of the directory timed one by one.
const COLD_SAMPLES: usize = 5;

pub(crate) fn run(settings: &Settings, report: &mut Report) -> Result<(), String> {
    let fixture = TestDir::new("bench-directory");
    let db = fixture.path().join("mikopbx.db");
    let cdr = fixture.path().join("cdr.db");
    let root = fixture.path().join("monitor");
    let seeding = Instant::now();
    let secrets = mikopbx::numbered(2000, EXTENSIONS);
    mikopbx::create(&db, &mikopbx::enabled_peers(&secrets, true));
    let day = seed_calls(&cdr, &root, settings.cdr_rows)?;
    let seeded = seeding.elapsed();

    let d = Daemons::start_with(
        "bench-directory",
        daemon_options(settings)
            .with(
                "SOFTPHONE_USER_SOURCE",
                &format!("mikopbx:{}", db.display()),
            )
            .with("SOFTPHONE_CDR_DATABASE", &cdr.display().to_string())
            .with("SOFTPHONE_RECORDINGS_DIR", &root.display().to_string()),
    );
    let (access, _) = d.tokens(&secrets[0].0, &secrets[0].1);
    let bearer = format!("Bearer {access}");
    let users_path = format!("{BASE}/users");
    let history_path = format!("{BASE}/history?date={day}");

    // What the rows must see: the whole directory, the busy user's day.
    let first = softphone_testkit::request(
        d.issuer,
        "GET",
        &users_path,
        &[("Authorization", &bearer)],
        b"",
    );
    assert_status(&first, 200)?;
    let listed = first.json()["users"].as_array().map_or(0, Vec::len);
    if listed != EXTENSIONS {
        return Err(format!(
            "the directory lists {listed} of {EXTENSIONS} extensions"
        ));
    }
    let etag = first
        .header("ETag")
        .ok_or("GET users has no ETag")?
        .to_owned();
    let history = softphone_testkit::request(
        d.issuer,
        "GET",
        &history_path,
        &[("Authorization", &bearer)],
        b"",
    );
    assert_status(&history, 200)?;
    let calls = history.json()["calls"].as_array().map_or(0, Vec::len);
    let recordings = history.json()["calls"].as_array().map_or(0, |c| {
        c.iter().filter(|c| c["recording"].is_string()).count()
    });

    let profile = measure(
        "directory: profile",
        &plan(settings, d.issuer, vec![profile_request(&access)]),
    )?;
    let floor = report.floor(
        "directory-profile",
        "GET profile on the mikopbx daemon of this family",
        &profile,
    );
    let not_modified = Request {
        bytes: get(
            &users_path,
            &[("Authorization", &bearer), ("If-None-Match", &etag)],
        ),
        expect: Some(304),
    };
    let polled = measure(
        "directory: users 304",
        &plan(settings, d.issuer, vec![not_modified]),
    )?;
    let ratio = report.against(
        &floor,
        "directory-users-304",
        "GET users with the current ETag: 304",
        &polled,
    );
    report.target(Target::at_least("users 304 / profile, req/s", ratio, 0.5));

    let mut latency = plan(
        settings,
        d.issuer,
        vec![Request {
            bytes: get(&users_path, &[("Authorization", &bearer)]),
            expect: Some(200),
        }],
    );
    latency.connections = LATENCY_CONNECTIONS;
    let users = measure("directory: users", &latency)?;
    report.against(
        &floor,
        "directory-users",
        &format!(
            "GET users, {EXTENSIONS} extensions ({} KiB), {LATENCY_CONNECTIONS} connections",
            first.body.len() / 1024
        ),
        &users,
    );
    report.target(Target::at_most(
        &format!("users p99 ms ({EXTENSIONS} extensions)"),
        users.percentile_ms(0.99),
        10.0,
    ));

    // Once the listing is stale, a request looks at the PBX database: changed
    // (a user renamed, as its web interface does), the directory is made
    // again; unchanged, it is kept. To tell the remake from the rest, the
    // same request right after, served from memory, on a fresh connection of
    // the same client.
    let users_once = || {
        let started = Instant::now();
        let r = softphone_testkit::request(
            d.issuer,
            "GET",
            &users_path,
            &[("Authorization", &bearer)],
            b"",
        );
        assert_status(&r, 200).map(|()| started.elapsed())
    };
    let pbx = rusqlite::Connection::open(&db).map_err(|e| e.to_string())?;
    let (mut remade, mut kept, mut cached) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    for sample in 0..COLD_SAMPLES {
        std::thread::sleep(FRESH_FOR + Duration::from_millis(50));
        kept = kept.max(users_once()?);
        std::thread::sleep(FRESH_FOR + Duration::from_millis(50));
        pbx.execute(
            "UPDATE m_Users SET username = ?1 WHERE id = 1",
            [format!("User 1 ({sample})")],
        )
        .map_err(|e| e.to_string())?;
        remade = remade.max(users_once()?);
        cached = cached.max(users_once()?);
    }
    report.annotate(format!(
        "the same request served from memory right after each remake: slowest {:.3} ms",
        cached.as_secs_f64() * 1000.0
    ));
    report.target(Target::at_most(
        &format!("users once stale, PBX unchanged, slowest of {COLD_SAMPLES}, ms"),
        kept.as_secs_f64() * 1000.0,
        10.0,
    ));
    report.target(Target::at_most(
        &format!(
            "users remade from {EXTENSIONS} extensions after a PBX change, slowest of {COLD_SAMPLES}, ms"
        ),
        remade.as_secs_f64() * 1000.0,
        10.0,
    ));

    latency.requests = vec![Request {
        bytes: get(&history_path, &[("Authorization", &bearer)]),
        expect: Some(200),
    }];
    let answered = measure("directory: history", &latency)?;
    report.against(
        &floor,
        "directory-history",
        &format!(
            "GET history, {calls} calls ({recordings} recorded) of one user's day among {} records, {LATENCY_CONNECTIONS} connections",
            settings.cdr_rows
        ),
        &answered,
    );
    report.annotate(format!(
        "{} call records and {EXTENSIONS} extensions seeded in {:.1} s, untimed",
        settings.cdr_rows,
        seeded.as_secs_f64()
    ));
    report.target(Target::at_most(
        &format!("history p99 ms ({} call records)", settings.cdr_rows),
        answered.percentile_ms(0.99),
        20.0,
    ));
    Ok(())
}

/// Fills `cdr` with `rows` calls spread evenly over [`DAYS`] days, MikoPBX's
/// way (local-time text, answered and unanswered, most recorded); the busy
/// user's calls of the last day get real files under `root`. Returns that day.
fn seed_calls(cdr: &Path, root: &Path, rows: usize) -> Result<String, String> {
    mikopbx::create_cdr(cdr);
    let per_day = (rows / DAYS).max(1);
    let last = date(DAYS - 1);
    let hour_dir = root.join(format!("{}/10", last.replace('-', "/")));
    std::fs::create_dir_all(&hour_dir).map_err(|e| e.to_string())?;
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        // xorshift: the same calls every run.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut made = Ok(());
    mikopbx::insert_generated(cdr, rows, |i, sink| {
        let day = (i / per_day).min(DAYS - 1);
        let second = (i % per_day) * 86_400 / per_day;
        let start = format!(
            "{} {:02}:{:02}:{:02}.{:03}",
            date(day),
            second / 3600,
            second / 60 % 60,
            second % 60,
            i % 1000
        );
        let r = next();
        let extension = |n: u64| format!("{}", 2000 + n % EXTENSIONS as u64);
        let outside = format!("7900{:07}", r % 10_000_000);
        let (src, dst) = match (i % BUSY_SHARE == 0, r % 3) {
            (true, 0) => (BUSY.to_owned(), outside),
            (true, 1) => (outside, BUSY.to_owned()),
            (true, _) => (BUSY.to_owned(), extension(r >> 8).replace(BUSY, "2001")),
            (false, 0) => (extension(r >> 8), outside),
            (false, 1) => (outside, extension(r >> 8)),
            (false, _) => (extension(r >> 8), extension(r >> 24)),
        };
        let answered = r % 5 != 0;
        let file = if answered {
            let name = format!("mikopbx-{i}.{}_{:06x}.mp3", r % 1000, r >> 40);
            let path = hour_dir.join(&name);
            if day == DAYS - 1 && (src == BUSY || dst == BUSY) && made.is_ok() {
                made = std::fs::write(&path, b"ID3").map_err(|e| e.to_string());
            }
            path.display().to_string()
        } else {
            String::new()
        };
        let linkedid = format!("mikopbx-{i}.{}", r % 1000);
        sink(Cdr {
            start: &start,
            answer: if answered { &start } else { "" },
            endtime: &start,
            src_num: &src,
            dst_num: &dst,
            disposition: if answered { "ANSWERED" } else { "NO ANSWER" },
            recordingfile: &file,
            linkedid: &linkedid,
            duration: (r % 600) as i64,
            billsec: if answered { (r % 590) as i64 } else { 0 },
            transfer: i64::from(i % 50 == 0),
        });
    });
    made.map(|()| last)
}

/// Day `n` of 2024 (a leap year) as `YYYY-MM-DD`.
fn date(n: usize) -> String {
    const MONTHS: [usize; 12] = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    let mut left = n;
    for (month, days) in MONTHS.iter().enumerate() {
        if left < *days {
            return format!("2024-{:02}-{:02}", month + 1, left + 1);
        }
        left -= days;
    }
    "2024-12-31".to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_of_2024() {
        assert_eq!(date(0), "2024-01-01");
        assert_eq!(date(59), "2024-02-29");
        assert_eq!(date(364), "2024-12-30");
        assert_eq!(date(365), "2024-12-31");
    }
}
