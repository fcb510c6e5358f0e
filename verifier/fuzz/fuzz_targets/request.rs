//! Fuzz target `request`: a request target and headers through the verifier's
//! decision, as the server feeds it (`Head::new`, `head.add_header`, `decide`), on a
//! real SQLite store (see `softphone_fuzz::verifier`).
//!
//! Input format: see `softphone_fuzz::RequestInput` (first line the target, then
//! `Name: value` lines).
//!
//! Checks: nothing panics; deciding the same request twice gives the same answer
//! (the second comes from the token cache when the first verified a token); an
//! allow or a 403 is backed by token verification of the right type; and a counting global
//! allocator holds every decision to the allocation budget below.
#![no_main]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "fuzz target: a panic is how a finding is reported"
)]

use std::cell::RefCell;
use std::sync::{LazyLock, Mutex};

use libfuzzer_sys::fuzz_target;
use softphone_fuzz::{LEEWAY, MAX_INPUT, NOW, RequestInput};
use softphone_shared::keys::KeyRing;
use softphone_shared::token::{
    self, MAX_TOKEN_LEN, PAYLOAD_BUF, TokenError, TokenType, Validation,
};
use softphone_testkit::counting::{Counting, allocations};
use softphone_verifier::decision::{Decision, DenyReason, Scratch};
use softphone_verifier::request::{Found, Head, find_token};
use softphone_verifier::state::Verifier;

/// Allocations a request may cost the first time it is seen: a token that passes
/// full verification is copied into the token cache (token, sid, username, map
/// growth) and its identity is interned once (three header lines, two names, the
/// table). Measured: 15 for the first token of a new identity, 3 or 4 for any
/// other newly cached token (refresh, revoked, unsendable identity).
const FIRST_BUDGET: u64 = 20;
/// Allocations a repeated request may cost when serde_json cannot read the
/// token's header, or its claims behind a valid MAC: serde_json boxes an error
/// value and formats its message (which can quote the 192-byte header, escaped).
/// The header check runs before the MAC, so anyone can trigger this. Measured:
/// at most 8 in tens of millions of runs.
const JSON_ERROR_BUDGET: u64 = 12;

/// What a request may allocate once it has been seen: nothing, the hot path
/// promises, except for the serde_json errors above.
fn repeated_budget(decision: Decision) -> u64 {
    match decision {
        Decision::Unauthorized(DenyReason::Token(
            TokenError::Malformed | TokenError::BadHeader | TokenError::BadClaims,
        )) => JSON_ERROR_BUDGET,
        _ => 0,
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

static VERIFIER: LazyLock<Verifier> =
    LazyLock::new(|| softphone_fuzz::verifier(&softphone_fuzz::data_dir()));

static KEY: LazyLock<KeyRing> = LazyLock::new(softphone_fuzz::key);

thread_local! {
    /// One connection's scratch, kept across inputs as the server keeps it.
    static SCRATCH: RefCell<Box<Scratch>> = RefCell::new(Scratch::new());
}

fuzz_target!(
    init: {
        LazyLock::force(&VERIFIER);
    },
    |data: &[u8]| {
        if data.len() > MAX_INPUT {
            return;
        }
        let verifier = &*VERIFIER;
        let input = RequestInput::parse(data);
        let mut head = Head::new(input.target);
        for &(name, value) in input.headers() {
            head.add_header(name, value);
        }
        SCRATCH.with_borrow_mut(|scratch| {
            let (first, first_allocs) = counted(|| verifier.decide(&head, NOW, scratch));
            let (second, second_allocs) = counted(|| verifier.decide(&head, NOW, scratch));
            assert_eq!(first, second, "the same request decided twice");
            if *REPORT {
                report(first, first_allocs, second_allocs);
            } else {
                assert!(
                    first_allocs <= FIRST_BUDGET,
                    "{first_allocs} allocations for a first decision ({first:?})"
                );
                assert!(
                    second_allocs <= repeated_budget(second),
                    "{second_allocs} allocations for a repeated decision ({second:?})"
                );
            }
            backed_by_the_decoders(&head, first);
        });
    }
);

/// `SOFTPHONE_FUZZ_ALLOC_REPORT=1`: instead of enforcing the budgets, print each
/// distinct (decision, first, repeated) allocation count once, to find the real
/// numbers after a change.
static REPORT: LazyLock<bool> =
    LazyLock::new(|| std::env::var_os("SOFTPHONE_FUZZ_ALLOC_REPORT").is_some());

fn report(decision: Decision, first: u64, second: u64) {
    static SEEN: Mutex<Vec<(String, u64, u64)>> = Mutex::new(Vec::new());
    let kind = match decision {
        Decision::Allow(_) => "Allow".to_owned(),
        Decision::Subscribe(..) => "Subscribe".to_owned(),
        other => format!("{other:?}"),
    };
    let mut seen = SEEN.lock().unwrap();
    let entry = (kind, first, second);
    if !seen.contains(&entry) {
        eprintln!(
            "allocations: {} first {} repeated {}",
            entry.0, entry.1, entry.2
        );
        seen.push(entry);
    }
}

fn counted<R>(f: impl FnOnce() -> R) -> (R, u64) {
    let before = allocations();
    let result = f();
    (result, allocations() - before)
}

/// A 200 needs a token that verifies as an access token, a 403 one that
/// verifies as a refresh token.
fn backed_by_the_decoders(head: &Head<'_>, decision: Decision) {
    let refresh = match decision {
        Decision::Allow(_) | Decision::Subscribe(..) => false,
        Decision::Forbidden => true,
        _ => return,
    };
    let mut token_buf = [0u8; MAX_TOKEN_LEN];
    let Found::One(token) = find_token(head, &mut token_buf) else {
        panic!("{decision:?} without exactly one token");
    };
    let validation = Validation {
        now: NOW,
        leeway: LEEWAY,
    };
    let mut buf = [0u8; PAYLOAD_BUF];
    let kind = if refresh {
        TokenType::Refresh
    } else {
        TokenType::Access
    };
    let decoded =
        token::verify(token, &KEY, validation, &mut buf).and_then(|v| v.claims.require(kind));
    assert!(
        decoded.is_ok(),
        "{decision:?} for a token the decoder refuses: {decoded:?}"
    );
}
