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
    assert_eq!(count.trim(), "2");

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
