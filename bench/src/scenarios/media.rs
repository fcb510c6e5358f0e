//! Media downloads through nginx's auth_request to the verifier, over TCP and
//! over its unix socket, against nginx serving the same file without auth.

use crate::load::Outcome;
use crate::report::{Report, Target};
use crate::stack::{Settings, Stack, measure, ok_get, per_session, plan};

/// Returns the faster of the two fronts: the peers are held against it.
pub(crate) fn run(
    settings: &Settings,
    stack: &Stack,
    report: &mut Report,
) -> Result<Outcome, String> {
    let nginx = stack.nginx.addr;
    let outcome = measure(
        "floor: nginx static file",
        &plan(settings, nginx, vec![ok_get("/bench/static.mp3")]),
    )?;
    let floor = report.floor(
        "media-floor",
        "nginx serving the file without auth",
        &outcome,
    );
    let requests = per_session(stack, true, |_| {
        "/pbxcore/softphone/recordings/a.mp3".to_owned()
    });
    let tcp = measure(
        "media: auth_request",
        &plan(settings, nginx, requests.clone()),
    )?;
    let ratio = report.against(
        &floor,
        "media-auth",
        "nginx auth_request -> verifier (deploy config)",
        &tcp,
    );
    report.target(Target::reported("media auth_request / nginx static", ratio));

    // The same through the verifier's unix socket (nginx-unix renders it as
    // `server unix:...`); the same static file is its floor.
    let unix = measure(
        "media: auth_request, unix",
        &plan(settings, stack.nginx_unix.addr, requests),
    )?;
    let ratio = report.against(
        &floor,
        "media-auth-unix",
        "nginx auth_request -> verifier over its unix socket",
        &unix,
    );
    report.target(Target::reported(
        "media auth_request over unix / nginx static",
        ratio,
    ));
    Ok(if unix.rate() > tcp.rate() { unix } else { tcp })
}
