//! End to end through the real nginx and nchan, configured from deploy/nginx/ for
//! temporary ports and directories, in front of the real daemons.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod attacks;
mod errors;
mod front;
mod live_subscriptions;
mod metrics;
mod nchan;
mod ops;
mod package;
mod pbx_data;
mod seed;
mod sessions;
mod throttle;
mod tls;
mod websocket;

use softphone_testkit::Daemons;
use softphone_testkit::nginx::Nginx;

pub const USER: &str = "201";
/// The seed README's example password.
pub const PASSWORD: &str = "b749601f329a635a19c4a87bc359be3d";

/// Daemons with the seed's user, and nginx in front (WebSocket upstream given).
pub fn stack(name: &str, ws_upstream: &str) -> (Daemons, Nginx) {
    let d = Daemons::start(name);
    d.add_user(USER, PASSWORD);
    let nginx = Nginx::start(&d, ws_upstream);
    (d, nginx)
}

/// Publishes `body` to `channel` from this host (nginx's publisher); the status.
pub fn publish(addr: std::net::SocketAddr, channel: &str, body: &str) -> u16 {
    softphone_testkit::request(
        addr,
        "POST",
        &format!("{}/pub/{channel}", softphone_testkit::BASE),
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    )
    .status
}

/// As [`publish`], asserting nchan took the message (201, or 202 without
/// subscribers).
pub fn published(addr: std::net::SocketAddr, channel: &str, body: &str) {
    let status = publish(addr, channel, body);
    assert!(
        matches!(status, 201 | 202),
        "publish to {channel}: {status}"
    );
}

/// Logs out through nginx, asserting the 200.
pub fn logout(nginx: &Nginx, access: &str) {
    let bearer = format!("Bearer {access}");
    let r = softphone_testkit::request(
        nginx.addr,
        "POST",
        &format!("{}/auth/logout", softphone_testkit::BASE),
        &[("Authorization", &bearer)],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
}

/// Asserts nginx's logs and the daemons' logs hold no token and no password.
pub fn assert_no_secrets(d: &Daemons, nginx: &Nginx, tokens: &[&str]) {
    let access = nginx.access_log();
    assert!(!access.is_empty(), "the access log was written");
    for log in [&access, &nginx.error_log()] {
        assert!(!log.contains("eyJ"), "a token reached an nginx log:\n{log}");
        for t in tokens {
            assert!(!log.contains(t), "a token reached an nginx log");
        }
        assert!(!log.contains(PASSWORD));
    }
    d.assert_logs_clean(&[PASSWORD]);
}
