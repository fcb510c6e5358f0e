//! The admin commands: user management and session revocation, seen through the
//! running daemons.

use softphone_testkit::Daemons;

use crate::{PASSWORD, USER};

#[test]
fn passwd_disable_and_revoke_end_sessions_at_once() {
    let d = Daemons::start("admin");
    d.add_user(USER, PASSWORD);
    d.add_user("alice@example.com", "alice-password");

    let (ok, out) = d.admin(&["user", "add", USER], "x\n");
    assert!(!ok && out.contains("already exists"), "{out}");
    let (ok, out) = d.admin(&["user", "add", "bad name"], "x\n");
    assert!(!ok && out.contains("username must be"), "{out}");
    let (ok, out) = d.admin(&["user", "add", "carol"], "\n");
    assert!(!ok && out.contains("empty password"), "{out}");
    let (ok, out) = d.admin(&["user", "add", "carol"], "pass\0word\n");
    assert!(!ok && out.contains("NUL"), "{out}");

    let (ok, list) = d.admin(&["user", "list"], "");
    assert!(ok);
    assert!(
        list.contains("201") && list.contains("alice@example.com") && list.contains("600000"),
        "{list}"
    );
    assert!(!list.contains("pbkdf2"), "hashes are not listed: {list}");
    let (_, count) = d.admin(&["user", "count"], "");
    assert_eq!(count.lines().next(), Some("2"), "stdout first: {count}");

    // passwd
    let (a1, _) = d.tokens(USER, PASSWORD);
    let (ok, out) = d.admin(&["user", "passwd", USER], "new-password\n");
    assert!(ok, "{out}");
    assert!(out.contains("1 session(s) revoked"), "{out}");
    assert_eq!(d.check(Some(&a1)).status, 401);
    assert_eq!(d.login(USER, PASSWORD).status, 401);
    let (a2, r2) = d.tokens(USER, "new-password");

    // disable / enable
    let (ok, _) = d.admin(&["user", "disable", USER], "");
    assert!(ok);
    assert_eq!(d.check(Some(&a2)).status, 401);
    assert_eq!(d.issuer_post("/auth/refresh", Some(&r2)).status, 401);
    assert_eq!(d.login(USER, "new-password").status, 401);
    let (ok, _) = d.admin(&["user", "enable", USER], "");
    assert!(ok);
    let (a3, _) = d.tokens(USER, "new-password");

    // session list / revoke
    let (ok, sessions) = d.admin(&["session", "list"], "");
    assert!(ok && sessions.contains(USER), "{sessions}");
    let (alice, _) = d.tokens("alice@example.com", "alice-password");
    let (ok, out) = d.admin(&["session", "revoke", "--user", USER], "");
    assert!(ok && out.contains("1 session(s) of 201 revoked"), "{out}");
    assert_eq!(d.check(Some(&a3)).status, 401);
    assert_eq!(d.check(Some(&alice)).status, 200);
    let (ok, out) = d.admin(&["session", "revoke"], "");
    assert!(!ok, "{out}");

    d.assert_logs_clean(&[PASSWORD, "new-password", "alice-password"]);
}

/// Run from elsewhere (another data directory than the daemons'), the commands
/// that need the database refuse and create nothing; every command names the
/// database it acts on.
#[test]
fn admin_commands_name_their_database_and_never_make_an_empty_one() {
    let d = Daemons::start("admin-files");
    d.add_user(USER, PASSWORD);
    let database = d.database().display().to_string();
    let (ok, out) = d.admin(&["session", "list"], "");
    assert!(ok && out.contains(&database), "{out}");

    let elsewhere = softphone_testkit::TestDir::new("admin-elsewhere");
    let data = elsewhere.path().join("var");
    for args in [
        &["session", "list"][..],
        &["session", "revoke", "--user", USER],
        &["user", "list"],
        &["user", "count"],
        &["user", "disable", USER],
        &["user", "passwd", USER],
    ] {
        let mut cmd = d.command("softphone-issuer");
        cmd.env("SOFTPHONE_DATA", &data).args(args);
        let (ok, out) = softphone_testkit::run_with_input(&mut cmd, "pw\n");
        assert!(!ok, "{args:?}: {out}");
        assert!(out.contains("no database at"), "{args:?}: {out}");
        assert!(
            !data.join("db/softphone.db").exists(),
            "{args:?} made a database"
        );
    }
    // The daemons' database is untouched: the user is still there and enabled.
    assert_eq!(d.login(USER, PASSWORD).status, 200);

    // `user add` is the one that starts a database: the first user of a new
    // system (deploy/run.sh on a fresh machine), before any daemon ran.
    let mut cmd = d.command("softphone-issuer");
    cmd.env("SOFTPHONE_DATA", &data)
        .args(["user", "add", "301"]);
    let (ok, out) = softphone_testkit::run_with_input(&mut cmd, "first-password\n");
    assert!(ok, "{out}");
    assert!(out.contains("user 301 added"), "{out}");
    let mut cmd = d.command("softphone-issuer");
    cmd.env("SOFTPHONE_DATA", &data).args(["user", "count"]);
    let (ok, out) = softphone_testkit::run_with_input(&mut cmd, "");
    assert!(ok && out.lines().any(|l| l.trim() == "1"), "{out}");
}

/// An operator runs the commands as root while the data directory belongs to
/// the daemons' user: the key, the previous-keys file and the epoch file it
/// writes end up owned like their directory, so the daemons can read them.
#[test]
fn files_written_by_root_are_owned_like_their_directory() {
    let id = std::process::Command::new("id").arg("-u").output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&id.stdout).trim(),
        "0",
        "this test runs as root (as CI does): it gives files away"
    );
    let mut d = Daemons::start("admin-owner");
    d.add_user(USER, PASSWORD);
    d.stop();
    // nobody:nogroup stands for the `softphone` user.
    let chown = std::process::Command::new("chown")
        .args(["-R", "65534:65534"])
        .arg(d.data_dir())
        .status()
        .unwrap();
    assert!(chown.success());
    std::fs::remove_file(d.epoch_file()).unwrap();

    let (ok, out) = d.admin(&["key", "rotate"], "");
    assert!(ok, "{out}");
    let (ok, out) = d.admin(&["user", "disable", USER], "");
    assert!(ok, "{out}");
    use std::os::unix::fs::MetadataExt;
    for file in [
        d.key_file(),
        d.previous_keys_file(),
        d.epoch_file(),
        d.database(),
    ] {
        let meta = std::fs::metadata(&file).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid()),
            (65534, 65534),
            "{}",
            file.display()
        );
    }
}
