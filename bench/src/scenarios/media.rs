//! Media downloads through nginx's auth_request to the verifier, against nginx
//! serving the same file without auth: the deploy defaults (`worker_processes
//! auto`, the verifier over its unix socket), the same over TCP, and with one
//! worker.

use crate::load::Outcome;
use crate::report::{Report, Target};
use crate::stack::{Settings, Stack, measure, ok_get, per_session, plan};

/// What the peers are held against: the deploy defaults, and one worker.
pub(crate) struct Fronts {
    pub(crate) defaults: Outcome,
    pub(crate) one_worker: Outcome,
}

pub(crate) fn run(
    settings: &Settings,
    stack: &Stack,
    report: &mut Report,
) -> Result<Fronts, String> {
    let outcome = measure(
        "floor: nginx static file",
        &plan(
            settings,
            stack.nginx.addr,
            vec![ok_get("/bench/static.mp3")],
        ),
    )?;
    let floor = report.floor(
        "media-floor",
        "nginx (workers auto) serving the file without auth",
        &outcome,
    );
    let requests = per_session(stack, true, |_| {
        "/pbxcore/softphone/recordings/a.mp3".to_owned()
    });
    let mut outcomes = Vec::new();
    for (scenario, label, front) in [
        (
            "media-auth",
            "nginx auth_request -> verifier, deploy defaults (workers auto, unix socket)",
            &stack.nginx,
        ),
        (
            "media-auth-tcp",
            "the same over the verifier's TCP listener",
            &stack.nginx_tcp,
        ),
        (
            "media-auth-1w",
            "the deploy defaults with one nginx worker",
            &stack.nginx_one,
        ),
    ] {
        let outcome = measure(scenario, &plan(settings, front.addr, requests.clone()))?;
        let ratio = report.against(&floor, scenario, label, &outcome);
        report.target(Target::reported(
            &format!("{scenario} / nginx static"),
            ratio,
        ));
        outcomes.push(outcome);
    }
    let mut outcomes = outcomes.into_iter();
    let (Some(defaults), Some(_tcp), Some(one_worker)) =
        (outcomes.next(), outcomes.next(), outcomes.next())
    else {
        return Err("media: a front was not measured".into());
    };
    Ok(Fronts {
        defaults,
        one_worker,
    })
}
