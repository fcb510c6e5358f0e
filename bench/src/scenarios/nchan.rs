//! nchan long-poll subscribers authorized by the verifier, against the same
//! subscribe without authorization.

use softphone_testkit::{BASE, request};

use crate::report::{Report, Target};
use crate::stack::{Settings, Stack, measure, ok_get, per_session, plan};

pub(crate) fn run(settings: &Settings, stack: &Stack, report: &mut Report) -> Result<(), String> {
    let nginx = stack.nginx.addr;
    // One buffered message: a long-poll subscriber without a message id gets it at once.
    let r = request(
        nginx,
        "POST",
        &format!("{BASE}/pub/bench-lp"),
        &[],
        br#"{"event":"users-state-update"}"#,
    );
    if !(r.status == 201 || r.status == 202) {
        return Err(format!("publish: {}", r.status));
    }
    let outcome = measure(
        "floor: nchan without auth",
        &plan(settings, nginx, vec![ok_get("/bench/sub-noauth/bench-lp")]),
    )?;
    let floor = report.floor(
        "nchan-floor",
        "nchan long-poll subscribe, no authorization",
        &outcome,
    );
    let requests = per_session(stack, false, |access| {
        format!("{BASE}/sub/bench-lp?authorization={access}")
    });
    let outcome = measure(
        "nchan: authorized subscribe",
        &plan(settings, nginx, requests),
    )?;
    let ratio = report.against(
        &floor,
        "nchan-auth",
        "nchan long-poll subscribe authorized by the verifier",
        &outcome,
    );
    report.target(Target::reported("nchan authorized / unauthorized", ratio));
    Ok(())
}
