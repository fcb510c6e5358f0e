//! A logout's 200 is sent only after the revocation is on disk: `kill -9` the
//! issuer at random moments while logouts are in flight, restart it, and every
//! session whose logout was answered 200 is still revoked, everywhere.

use std::hash::{BuildHasher, RandomState};
use std::time::Duration;

use softphone_shared::keyfile;
use softphone_shared::store::Store;
use softphone_testkit::{BASE, Daemons, http};

const ITERATIONS: usize = 200;

#[test]
fn logouts_answered_200_survive_kill_9() {
    let mut d = Daemons::start("durability");
    let key = keyfile::load(&d.key_file()).unwrap();
    let now = softphone_shared::unix_now();
    let mut store = Store::open(&d.database()).unwrap();
    let tokens: Vec<(String, String)> = (0..ITERATIONS)
        .map(|i| {
            let sid = format!("durability-{i:04}");
            softphone_testkit::insert_session(&mut store, &sid, now);
            let token = softphone_testkit::access_token(key.current(), &sid, now);
            (sid, token)
        })
        .collect();
    // (Creating a session bumps the epoch: the verifier knows them already.)

    let random = RandomState::new();
    let mut answered = Vec::new();
    let mut killed_mid_flight = 0;
    for (i, (sid, token)) in tokens.iter().enumerate() {
        let issuer = d.issuer;
        let bearer = format!("Bearer {token}");
        let logout = std::thread::spawn(move || {
            http::try_request(
                issuer,
                "POST",
                &format!("{BASE}/auth/logout"),
                &[("Authorization", &bearer)],
                b"",
            )
            .map(|r| r.status)
        });
        // A random moment within the logout's few milliseconds (or just after).
        let wait = random.hash_one(i) % 4000;
        std::thread::sleep(Duration::from_micros(wait));
        d.kill_issuer();
        match logout.join().unwrap() {
            Ok(200) => answered.push(sid.clone()),
            Ok(status) => panic!("logout of {sid} answered {status}"),
            Err(_) => killed_mid_flight += 1,
        }
        d.start_issuer();
    }
    eprintln!(
        "{ITERATIONS} kill -9s: {} logouts answered 200 before the kill, {killed_mid_flight} cut off",
        answered.len()
    );
    assert!(
        !answered.is_empty(),
        "no logout ever finished: the test proves nothing"
    );
    assert!(
        killed_mid_flight > 0,
        "no kill landed mid-request: the test proves nothing"
    );

    let store = Store::open(&d.database()).unwrap();
    for (sid, token) in &tokens {
        let revoked = store.session(sid).unwrap().unwrap().revoked;
        if answered.contains(sid) {
            assert!(revoked, "{sid} got a 200 but is not revoked after kill -9");
            assert_eq!(
                d.check(Some(token)).status,
                401,
                "{sid} still passes the verifier"
            );
        }
    }
}
