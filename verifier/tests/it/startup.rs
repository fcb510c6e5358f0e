//! A broken key file or database stops the verifier with a message naming the
//! file: it never starts without a key or without its revocation list.

use std::process::Stdio;

use softphone_testkit::Daemons;

/// Runs the verifier against the fixture's data and returns (exit ok, stderr).
fn run_verifier(d: &Daemons) -> (bool, String) {
    let out = d
        .command("softphone-verifier")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn broken_keys_and_databases_stop_it_with_a_clear_message() {
    let mut d = Daemons::start("startup");
    d.stop();
    let key = d.key_file();
    let db = d.database();
    let good_key = std::fs::read(&key).unwrap();

    for (bad, why) in [(&b""[..], "empty"), (&b"0123456789abcdef"[..], "too short")] {
        std::fs::write(&key, bad).unwrap();
        let (ok, stderr) = run_verifier(&d);
        assert!(!ok, "started with a key that is {why}");
        assert!(
            stderr.contains(&key.display().to_string()),
            "{why}: {stderr}"
        );
    }
    std::fs::remove_file(&key).unwrap();
    std::fs::create_dir(&key).unwrap();
    let (ok, stderr) = run_verifier(&d);
    assert!(
        !ok && stderr.contains(&key.display().to_string()),
        "unreadable key: {stderr}"
    );
    std::fs::remove_dir(&key).unwrap();
    std::fs::write(&key, &good_key).unwrap();

    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    std::fs::write(&db, vec![0x5a; 8192]).unwrap();
    let (ok, stderr) = run_verifier(&d);
    assert!(!ok, "started on a corrupt database");
    assert!(stderr.contains(&db.display().to_string()), "{stderr}");
}

/// Every thread of the verifier runs SCHED_BATCH (see `sched.rs` for why), and
/// the startup line says so.
#[test]
fn it_runs_every_thread_under_sched_batch() {
    const SCHED_BATCH: &str = "3";
    let (d, access, _) = crate::logged_in("sched");
    assert_eq!(d.check(Some(&access)).status, 200);
    let (_, pid) = d.pids();
    let tasks: Vec<_> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .map(|t| t.unwrap().path())
        .collect();
    assert!(tasks.len() >= 3, "{tasks:?}");
    for task in tasks {
        let stat = std::fs::read_to_string(task.join("stat")).unwrap();
        let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
        // Field 41 of stat (the 39th after the command name) is the policy.
        assert_eq!(fields[38], SCHED_BATCH, "{}: {stat}", task.display());
    }
    let stderr = std::fs::read_to_string(d.stderr_file("verifier")).unwrap();
    assert!(stderr.contains("SCHED_BATCH"), "{stderr}");
}
