//! A logout's or a refresh's 200 is sent only after what it changed is on
//! disk: `kill -9` the issuer at random moments while they are in flight,
//! restart it, and every session whose logout was answered 200 is still
//! revoked, everywhere; every refresh token a 200 handed out still works.
//! Refreshes run several at a time, so the kills land in shared commits.

use std::hash::{BuildHasher, RandomState};
use std::time::Duration;

use softphone_shared::keyfile;
use softphone_shared::store::Store;
use softphone_testkit::{BASE, Daemons, Options, http};

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

/// Sessions refreshing at once: enough for their writes to share commits.
const CONCURRENT: usize = 8;
const REFRESH_ROUNDS: usize = 60;

#[test]
fn refreshes_answered_200_survive_kill_9() {
    let mut d = Daemons::start_with(
        "durability-refresh",
        Options::default().with("SOFTPHONE_REFRESH_BURST", "1000000"),
    );
    d.add_user("301", "the-password");
    // Each session's newest refresh token: from a 200, or the one before
    // when the answer was cut off (it is then the current or the previous
    // generation, both of which the issuer accepts).
    let mut chains: Vec<String> = (0..CONCURRENT)
        .map(|_| d.tokens("301", "the-password").1)
        .collect();
    let random = RandomState::new();
    let (mut answered, mut cut_off) = (0, 0);
    for round in 0..REFRESH_ROUNDS {
        let issuer = d.issuer;
        let flights: Vec<_> = chains
            .iter()
            .map(|refresh| {
                let bearer = format!("Bearer {refresh}");
                std::thread::spawn(move || {
                    http::try_request(
                        issuer,
                        "POST",
                        &format!("{BASE}/auth/refresh"),
                        &[("Authorization", &bearer)],
                        b"",
                    )
                })
            })
            .collect();
        // A refresh takes a few milliseconds here: kill before, during or after.
        let wait = random.hash_one(round) % 30_000;
        std::thread::sleep(Duration::from_micros(wait));
        d.kill_issuer();
        for (chain, flight) in chains.iter_mut().zip(flights) {
            match flight.join().unwrap() {
                Ok(r) if r.status == 200 => {
                    *chain = r.json_str("refresh_token");
                    answered += 1;
                }
                // A refused token: the rotation its 200 promised was lost.
                Ok(r) => panic!("round {round}: refresh answered {}: {}", r.status, r.text()),
                Err(_) => cut_off += 1,
            }
        }
        d.start_issuer();
    }
    eprintln!(
        "{REFRESH_ROUNDS} kill -9s over {CONCURRENT} sessions: {answered} refreshes answered 200, {cut_off} cut off"
    );
    assert!(
        answered > 0,
        "no refresh ever finished: the test proves nothing"
    );
    assert!(
        cut_off > 0,
        "no kill landed mid-request: the test proves nothing"
    );
    // And the last tokens handed out work after the last restart.
    for refresh in &chains {
        let r = d.issuer_post("/auth/refresh", Some(refresh));
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(d.check(Some(&r.json_str("access_token"))).status, 200);
    }
}
