//! Fuzz target `token`: arbitrary bytes through the token decoders.
//!
//! Input: a token as it arrives (`header.payload.signature`), or, when it starts
//! with `{`, JSON that the target signs with the fixture key first: `<payload>`
//! under our standard header, or `<header>\n<payload>`. The second form reaches
//! the claims parser and the time checks, which sit behind the MAC.
//!
//! Checks: nothing panics (overflow checks are on); what verifies passes the time
//! rules of `Validation::check` and `Claims::require` accepts exactly its own
//! type; and whatever verifies, re-signed with `token::sign`, verifies again to
//! equal claims.
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
use softphone_shared::keys::KeyRing;
use softphone_shared::token::{
    self, Claims, MAX_TOKEN_LEN, PAYLOAD_BUF, TokenError, TokenType, Validation,
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

/// Verifies and keeps the claims.
fn decode<'b>(
    token: &[u8],
    key: &KeyRing,
    validation: Validation,
    buf: &'b mut [u8; PAYLOAD_BUF],
) -> Result<Claims<'b>, TokenError> {
    token::verify(token, key, validation, buf).map(|v| v.claims)
}

fn check(token: &[u8]) {
    let key = &*KEY;
    let mut buf = [0u8; PAYLOAD_BUF];
    if let Ok(verified) = token::verify(token, key, AT_NOW, &mut buf) {
        assert_eq!(AT_NOW.check(verified.times), Ok(()), "time rules");
        let claims = verified.claims;
        for kind in [TokenType::Access, TokenType::Refresh] {
            let required = claims.clone().require(kind);
            if claims.kind == kind {
                assert_eq!(required.as_ref(), Ok(&claims), "require");
            } else {
                assert_eq!(required, Err(TokenError::WrongType), "require");
            }
        }

        // Re-signing names the key in the header, so a token near the length
        // limit without `kid` can come back longer than verification reads.
        let again = token::sign(&claims, key.current());
        let mut again_buf = [0u8; PAYLOAD_BUF];
        let decoded = decode(again.as_bytes(), key, AT_NOW, &mut again_buf);
        if again.len() > MAX_TOKEN_LEN {
            assert_eq!(decoded, Err(TokenError::Malformed), "re-signed: {again}");
        } else {
            assert_eq!(
                decoded.as_ref(),
                Ok(&claims),
                "re-signed claims decode differently: {again}"
            );
        }
    }

    for validation in EXTREMES {
        let mut buf = [0u8; PAYLOAD_BUF];
        let _ = decode(token, key, validation, &mut buf);
    }
}
