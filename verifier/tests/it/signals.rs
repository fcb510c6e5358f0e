//! SIGHUP reloads the key (and reopens logs); SIGTERM stops cleanly.

use std::time::{Duration, Instant};

use softphone_testkit::eventually;

use crate::{PASSWORD, USER, logged_in, signal};

fn wait_exit(child: &mut std::process::Child) -> std::process::ExitStatus {
    eventually(Duration::from_secs(10), "the daemon exits", || {
        child.try_wait().unwrap()
    })
}

#[test]
fn sighup_loads_a_new_key_and_sigterm_exits_zero() {
    let (mut d, old_access, _) = logged_in("signals");
    let key_path = d.key_file();
    std::fs::write(&key_path, "f".repeat(64)).unwrap();

    // A broken key file on SIGHUP keeps the running key.
    let verifier_pid = d.verifier_child().id();
    std::fs::write(&key_path, "short").unwrap();
    signal(verifier_pid, "HUP");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(d.check(Some(&old_access)).status, 200);

    std::fs::write(&key_path, "f".repeat(64)).unwrap();
    let issuer_pid = d.issuer_child().id();
    signal(verifier_pid, "HUP");
    signal(issuer_pid, "HUP");
    eventually(
        Duration::from_secs(5),
        "the verifier drops the old key (refuses its token)",
        || d.check(Some(&old_access)).status == 401,
    );
    let new_access = eventually(
        Duration::from_secs(5),
        "the issuer signs with the new key (the verifier takes its token)",
        || {
            let (access, _) = d.tokens(USER, PASSWORD);
            (d.check(Some(&access)).status == 200).then_some(access)
        },
    );
    assert_eq!(d.issuer_get("/profile", Some(&new_access)).status, 200);

    signal(verifier_pid, "TERM");
    assert!(wait_exit(d.verifier_child()).success());
    signal(issuer_pid, "TERM");
    assert!(wait_exit(d.issuer_child()).success());
    let stderr = std::fs::read_to_string(d.stderr_file("verifier")).unwrap();
    assert!(stderr.contains("keeping the old key"), "{stderr}");
    // (The clean-log check compares against the key file: put the real one back.)
    std::fs::write(&key_path, "e".repeat(64)).unwrap();
    d.assert_logs_clean(&[PASSWORD]);
}

#[test]
fn a_key_file_changed_on_disk_is_picked_up_within_a_second_or_so() {
    let (d, old_access, _) = logged_in("key-watch");
    let key_path = d.key_file();
    let tmp = std::path::PathBuf::from(format!("{}.new", key_path.display()));
    std::fs::write(&tmp, "e".repeat(64)).unwrap();
    std::fs::rename(&tmp, &key_path).unwrap();
    // Both daemons within 5 s of the change.
    let changed_at = Instant::now();
    let within = Duration::from_secs(5);
    eventually(
        within,
        "the verifier drops the old key (refuses its token)",
        || d.check(Some(&old_access)).status == 401,
    );
    let verifier_took = changed_at.elapsed();
    let new_access = eventually(
        within.saturating_sub(verifier_took),
        "the issuer signs with the new key (the verifier takes its token)",
        || {
            let (access, _) = d.tokens(USER, PASSWORD);
            (d.check(Some(&access)).status == 200).then_some(access)
        },
    );
    assert_eq!(d.issuer_get("/profile", Some(&new_access)).status, 200);
    assert!(
        verifier_took < Duration::from_millis(2500),
        "{verifier_took:?}"
    );
    // A broken replacement keeps the running key.
    std::fs::write(&key_path, "short").unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(d.check(Some(&new_access)).status, 200);
    let stderr = std::fs::read_to_string(d.stderr_file("verifier")).unwrap();
    assert!(stderr.contains("keeping the old key"), "{stderr}");
    // (The clean-log check compares against the key file: put the real one back.)
    std::fs::write(&key_path, "e".repeat(64)).unwrap();
    d.assert_logs_clean(&[PASSWORD]);
}

#[test]
fn sighup_under_load_never_refuses_a_valid_token_nor_errs() {
    let (mut d, access, refresh) = logged_in("hup-under-load");
    let pid = d.verifier_child().id();
    let addr = d.verifier;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers: Vec<_> = (0..4)
        .map(|i| {
            let stop = std::sync::Arc::clone(&stop);
            let (token, expect) = if i == 3 {
                (refresh.clone(), 403)
            } else {
                (access.clone(), 200)
            };
            std::thread::spawn(move || {
                let mut conn = softphone_testkit::http::Conn::open(addr).unwrap();
                let request = softphone_testkit::http::build(
                    "GET",
                    softphone_testkit::CHECK,
                    &[("Authorization", &format!("Bearer {token}"))],
                    b"",
                );
                let (mut ok, mut wrong) = (0u64, 0u64);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    conn.send(&request).unwrap();
                    let status = conn.read_response().unwrap().status;
                    if status == expect {
                        ok += 1
                    } else {
                        wrong += 1
                    }
                }
                (ok, wrong)
            })
        })
        .collect();
    for _ in 0..30 {
        signal(pid, "HUP");
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut ok, mut wrong) = (0, 0);
    for w in workers {
        let (o, x) = w.join().unwrap();
        ok += o;
        wrong += x;
    }
    assert!(ok > 1000, "only {ok} answers");
    assert_eq!(wrong, 0, "{wrong} wrong answers out of {}", ok + wrong);
}
