//! The `mikopbx` user source under a login flood: a wrong password for a
//! distinct unknown username on every request, against a PBX database with
//! MikoPBX's 63 tables. Profile and refresh must keep their idle p99 within 2×:
//! PBX lookups run on long-lived handles, never under the store's lock, logins'
//! on the low-priority hashing threads, and refused logins are answered after
//! `login_failure_delay_ms`.

use softphone_shared::config::Config;
use softphone_testkit::mikopbx;
use softphone_testkit::{Daemons, TestDir};

use crate::report::Report;
use crate::scenarios::issuer::{bad_login_flood, profile_request, refresh_request, under_flood};
use crate::stack::{Settings, daemon_options};

/// Extensions in the fixture, and tables besides the three logins read.
const PEERS: usize = 200;
const OTHER_TABLES: usize = 60;

pub(crate) fn run(settings: &Settings, report: &mut Report) -> Result<(), String> {
    let fixture = TestDir::new("bench-mikopbx");
    let db = fixture.path().join("mikopbx.db");
    let names = mikopbx::numbered(2000, PEERS);
    mikopbx::create(&db, &mikopbx::enabled_peers(&names, false));
    mikopbx::pad_schema(&db, OTHER_TABLES);
    // With the delay refused logins get in production: it is what holds a
    // flood of cheap PBX logins down.
    let delay = Config::default().login_failure_delay_ms.to_string();
    let d = Daemons::start_with(
        "bench-mikopbx",
        daemon_options(settings)
            .with(
                "SOFTPHONE_USER_SOURCE",
                &format!("mikopbx:{}", db.display()),
            )
            .with("SOFTPHONE_LOGIN_FAILURE_DELAY_MS", &delay),
    );
    let (access, refresh) = d.tokens(&names[0].0, &names[0].1);
    let flood = bad_login_flood("9", 5000);
    let profile = profile_request(&access);
    under_flood(
        settings,
        d.issuer,
        report,
        ("mikopbx-profile", "mikopbx source: GET profile", profile),
        &flood,
    )?;
    let refresh = refresh_request(&refresh);
    under_flood(
        settings,
        d.issuer,
        report,
        ("mikopbx-refresh", "mikopbx source: POST refresh", refresh),
        &flood,
    )?;
    Ok(())
}
