//! A full disk: logout answers 500 (never a 200 it could not keep), the verifier
//! keeps answering, and once space is back the logout works.

use std::io::Write;
use std::process::Command;

use softphone_testkit::{Daemons, Options, TestDir};

use crate::{PASSWORD, USER};

/// A small tmpfs, unmounted on drop.
struct Tmpfs(TestDir);

impl Tmpfs {
    fn mount(name: &str, size: &str) -> Tmpfs {
        let dir = TestDir::new(name);
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(
            ok.success(),
            "mounting a tmpfs failed (the tests run as root)"
        );
        Tmpfs(dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

#[test]
fn logout_on_a_full_disk_is_a_500_and_changes_nothing() {
    let disk = Tmpfs::mount("disk-full", "8m");
    let data = disk.0.path().join("var");
    let d = Daemons::start_with(
        "disk-full",
        Options::default().with("SOFTPHONE_DATA", data.to_str().unwrap()),
    );
    d.add_user(USER, PASSWORD);
    let (a, _) = d.tokens(USER, PASSWORD);
    let (b, _) = d.tokens(USER, PASSWORD);

    // Empty the write-ahead log first: a log that was checkpointed is reused
    // from its start, so a commit that fits in it needs no new space and
    // would rightly succeed on a full disk. Then fill the disk to the last byte.
    rusqlite::Connection::open(d.database())
        .unwrap()
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
    let filler_path = disk.0.path().join("filler");
    let mut filler = std::fs::File::create(&filler_path).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    while filler.write_all(&chunk).is_ok() {}
    while filler.write_all(&chunk[..512]).is_ok() {}
    drop(filler);

    let r = d.issuer_post("/auth/logout", Some(&a));
    assert_eq!(r.status, 500, "{}", r.text());
    assert_eq!(r.error(), "Internal server error");
    // Nothing changed: both sessions still work, the verifier still answers.
    assert_eq!(d.check(Some(&a)).status, 200);
    assert_eq!(d.check(Some(&b)).status, 200);
    assert_eq!(d.issuer_get("/profile", Some(&b)).status, 200);

    std::fs::remove_file(&filler_path).unwrap();
    assert_eq!(d.issuer_post("/auth/logout", Some(&a)).status, 200);
    assert_eq!(d.check(Some(&a)).status, 401);
    assert_eq!(d.check(Some(&b)).status, 200);
    drop(d);
}
