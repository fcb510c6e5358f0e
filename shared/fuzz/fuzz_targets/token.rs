//! Fuzz target `token`: arbitrary bytes through the token decoders.
//!
//! Input: a token as it arrives (`header.payload.signature`), or, when it starts
//! with `{`, JSON that the target signs with the fixture key first: `<payload>`
//! under our standard header, or `<header>\n<payload>`. The second form reaches
//! the claims parser and the time checks, which sit behind the MAC.
//!
//! Checks: nothing panics (overflow checks are on); `decode_access` and
//! `decode_refresh` agree with `decode`; and whatever decodes, re-signed with
//! `token::sign`, decodes again to equal claims.
#![no_main]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "fuzz target: a panic is how a finding is reported"
)]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use softphone_fuzz::{LEEWAY, MAX_INPUT, NOW, sign_segments};
use softphone_shared::keyfile::KeyRing;
use softphone_shared::token::{
    self, PAYLOAD_BUF, TokenError, TokenType, Validation, decode, decode_access, decode_refresh,
};

static KEY: LazyLock<KeyRing> = LazyLock::new(softphone_fuzz::key);

const AT_NOW: Validation = Validation {
    now: NOW,
    leeway: LEEWAY,
};

/// Clocks at the ends of the range: the time checks must saturate, not overflow.
const EXTREMES: [Validation; 3] = [
    Validation {
        now: i64::MIN,
        leeway: i64::MAX,
    },
    Validation {
        now: i64::MAX,
        leeway: i64::MAX,
    },
    Validation {
        now: i64::MAX,
        leeway: 0,
    },
];

fuzz_target!(
    init: {
        softphone_fuzz::write_seeds_if_asked();
        LazyLock::force(&KEY);
    },
    |data: &[u8]| {
        if data.len() > MAX_INPUT {
            return;
        }
        if data.first() == Some(&b'{') {
            let (header, payload) = match data.iter().position(|&b| b == b'\n') {
                Some(at) => (&data[..at], &data[at + 1..]),
                None => (&br#"{"alg":"HS256","typ":"JWT"}"#[..], data),
            };
            check(sign_segments(header, payload).as_bytes());
        } else {
            check(data);
        }
    }
);

fn check(token: &[u8]) {
    let key = &*KEY;
    let mut buf = [0u8; PAYLOAD_BUF];
    let decoded = decode(token, key, AT_NOW, &mut buf);

    let mut access_buf = [0u8; PAYLOAD_BUF];
    let access = decode_access(token, key, AT_NOW, &mut access_buf);
    let mut refresh_buf = [0u8; PAYLOAD_BUF];
    let refresh = decode_refresh(token, key, AT_NOW, &mut refresh_buf);
    match &decoded {
        Ok(claims) => {
            let typed = |kind| {
                if claims.kind == kind {
                    Ok(claims.clone())
                } else {
                    Err(TokenError::WrongType)
                }
            };
            assert_eq!(access, typed(TokenType::Access), "decode_access");
            assert_eq!(refresh, typed(TokenType::Refresh), "decode_refresh");

            let again = token::sign(claims, key.current());
            let mut again_buf = [0u8; PAYLOAD_BUF];
            assert_eq!(
                decode(&again, key, AT_NOW, &mut again_buf).as_ref(),
                Ok(claims),
                "re-signed claims decode differently: {again}"
            );
        }
        Err(e) => {
            assert_eq!(access.as_ref().err(), Some(e), "decode_access");
            assert_eq!(refresh.as_ref().err(), Some(e), "decode_refresh");
        }
    }

    for validation in EXTREMES {
        let mut buf = [0u8; PAYLOAD_BUF];
        let _ = decode(token, key, validation, &mut buf);
    }
}
