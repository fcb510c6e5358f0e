//! The verifier runs under SCHED_BATCH (at nice 0): its wake-ups do not preempt
//! the task that woke it.
//!
//! nginx hands the verifier one subrequest per connection and, on a busy core,
//! many in one pass of its event loop. Under SCHED_OTHER each request written
//! woke the verifier at once and preempted nginx mid-pass: one context switch
//! pair per request. Under SCHED_BATCH nginx finishes its pass, then the verifier
//! answers the whole batch. Measured with nginx and the verifier sharing one core:
//! media through `auth_request` 52.2k → 62.5k req/s (8 s runs, alternating). On a
//! PBX the same property keeps the verifier from preempting Asterisk.
//!
//! An operator's choice wins: a process started with another policy (systemd's
//! `CPUSchedulingPolicy=`, `chrt`) or another nice value is left as it is.

use thread_priority::{
    NormalThreadSchedulePolicy, ThreadPriority, ThreadPriorityOsValue, ThreadSchedulePolicy,
    set_thread_priority_and_policy, thread_native_id, thread_schedule_policy,
};

/// Switches the calling thread (and so every thread it starts later) to
/// SCHED_BATCH, unless the operator chose a policy or a nice value. Returns what
/// was done, for the startup log.
pub fn batch() -> String {
    match thread_schedule_policy() {
        Ok(ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Other)) => {}
        Ok(other) => return format!("scheduling policy {other:?} kept"),
        Err(e) => return format!("scheduling policy unknown ({e:?}), kept"),
    }
    match nice() {
        Some(0) => {}
        Some(n) => return format!("nice {n} kept, scheduling policy kept"),
        None => return "nice value unknown, scheduling policy kept".into(),
    }
    let set = set_thread_priority_and_policy(
        thread_native_id(),
        // On Linux this is the nice value for normal policies: 0, as it was.
        ThreadPriority::Os(ThreadPriorityOsValue::default()),
        ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Batch),
    );
    match set {
        Ok(()) => "scheduling policy SCHED_BATCH".into(),
        Err(e) => format!("scheduling policy kept ({e:?})"),
    }
}

/// The calling thread's nice value, from /proc (field 19 of `stat`).
fn nice() -> Option<i64> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    // The command name (field 2) may hold spaces; fields after it do not.
    let after_name = &stat[stat.rfind(')')? + 2..];
    after_name.split(' ').nth(16)?.parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_the_nice_value() {
        assert_eq!(super::nice(), Some(0), "tests run at nice 0");
    }
}
