//! Known-answer vectors and failure kinds for the token format.

use super::*;

/// A fixed `secret.key` as the original module writes it: 64 hex characters.
const KEY_TEXT: &str = "3f1c9a7e5b2d4f608a1c3e5f7092b4d6e8f0a2c4e6081a3c5e7f9b1d3f5a7c9e";
const IAT: i64 = 1_795_773_600;
const EXP: i64 = IAT + 3600;

/// Made outside this crate (Python's hmac/hashlib) the original module's way: PHP's
/// header order (`typ` first) and HMAC-SHA256 keyed by the key file's 64 ASCII
/// characters, carrying our claims.
const ORIGINAL_WAY: &str = "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.eyJzdWIiOjcsInVzZXJuYW1lIjoiMjAxIiwicm9sZSI6InVzZXIiLCJpYXQiOjE3OTU3NzM2MDAsImV4cCI6MTc5NTc3NzIwMCwidHlwZSI6ImFjY2VzcyIsInNpZCI6ImMyVnpjMmx2YmkxcFpDMHdNREF3TVEiLCJqdGkiOiJkRzlyWlc0dGFXUXRNREF3TURBd01RIn0.wv_gbpqc8t2sHO_0XuDAAn9C3Gp8OwNPHZyr-YMepBM";
/// The same claims as our `sign` must write them, byte for byte, with the header
/// naming the key: `kid` is the first 8 bytes of SHA-256 of the key text, hex
/// (`8ac0d8c4186f30d9`; also made with Python).
const OURS: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6IjhhYzBkOGM0MTg2ZjMwZDkifQ.eyJzdWIiOjcsInVzZXJuYW1lIjoiMjAxIiwicm9sZSI6InVzZXIiLCJpYXQiOjE3OTU3NzM2MDAsImV4cCI6MTc5NTc3NzIwMCwidHlwZSI6ImFjY2VzcyIsInNpZCI6ImMyVnpjMmx2YmkxcFpDMHdNREF3TVEiLCJqdGkiOiJkRzlyWlc0dGFXUXRNREF3TURBd01RIn0.0WTTw9kOPKoqum7RIjtAdeilo8vc7wFRDLiyXrGMN4s";

fn key() -> Key {
    Key::from_text(KEY_TEXT).unwrap()
}

fn ring() -> KeyRing {
    KeyRing::single(key())
}

fn at(now: i64) -> Validation {
    Validation { now, leeway: 30 }
}

fn claims() -> Claims<'static> {
    Claims {
        sub: 7,
        username: "201",
        role: "user",
        iat: IAT,
        exp: EXP,
        kind: TokenType::Access,
        sid: "c2Vzc2lvbi1pZC0wMDAwMQ",
        jti: "dG9rZW4taWQtMDAwMDAwMQ",
        nbf: None,
    }
}

/// Signs arbitrary header and payload JSON with HMAC-SHA256 under `KEY_TEXT`.
fn craft(header: &str, payload: &str) -> String {
    let mut out = URL_SAFE_NO_PAD.encode(header);
    out.push('.');
    out.push_str(&URL_SAFE_NO_PAD.encode(payload));
    let tag = hmac::sign(key().hmac(), out.as_bytes());
    out.push('.');
    out.push_str(&URL_SAFE_NO_PAD.encode(tag.as_ref()));
    out
}

fn payload_with(field: &str) -> String {
    format!(r#"{{"sub":7,"username":"201","role":"user","iat":{IAT},{field},"sid":"s","jti":"j"}}"#)
}

/// Verifies and keeps the claims, as every caller does.
fn decode<'b>(
    token: &str,
    keys: &KeyRing,
    validation: Validation,
    buf: &'b mut [u8; PAYLOAD_BUF],
) -> Result<Claims<'b>, TokenError> {
    verify(token, keys, validation, buf).map(|v| v.claims)
}

/// Verifies and requires the purpose `kind`, as the issuer and the verifier do.
fn decode_as<'b>(
    kind: TokenType,
    token: &str,
    keys: &KeyRing,
    validation: Validation,
    buf: &'b mut [u8; PAYLOAD_BUF],
) -> Result<Claims<'b>, TokenError> {
    decode(token, keys, validation, buf).and_then(|c| c.require(kind))
}

fn check(token: &str) -> Result<(), TokenError> {
    let mut buf = [0u8; PAYLOAD_BUF];
    decode(token, &ring(), at(IAT), &mut buf).map(|_| ())
}

#[test]
fn a_token_made_the_original_way_verifies() {
    let mut buf = [0u8; PAYLOAD_BUF];
    let got = decode_as(
        TokenType::Access,
        ORIGINAL_WAY,
        &ring(),
        at(IAT + 10),
        &mut buf,
    )
    .unwrap();
    assert_eq!(got, claims());
}

#[test]
fn we_sign_exactly_the_known_answer() {
    assert_eq!(sign(&claims(), &key()), OURS);
    let mut buf = [0u8; PAYLOAD_BUF];
    assert_eq!(decode(OURS, &ring(), at(IAT), &mut buf).unwrap(), claims());
}

#[test]
fn the_key_is_the_ascii_text_not_the_hex_decoded_bytes() {
    let decoded: Vec<u8> = (0..KEY_TEXT.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&KEY_TEXT[i..i + 2], 16).unwrap())
        .collect();
    let (signed, sig) = OURS.rsplit_once('.').unwrap();
    let wrong = hmac::sign(
        &hmac::Key::new(hmac::HMAC_SHA256, &decoded),
        signed.as_bytes(),
    );
    assert_ne!(URL_SAFE_NO_PAD.encode(wrong.as_ref()), sig);
}

#[test]
fn one_changed_character_anywhere_is_rejected() {
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    for i in 0..OURS.len() {
        let mut bytes = OURS.as_bytes().to_vec();
        if bytes[i] == b'.' {
            continue;
        }
        for replacement in [bytes[i] ^ 0x01, alphabet[(i * 7) % 64]] {
            if replacement == OURS.as_bytes()[i] {
                continue;
            }
            bytes[i] = replacement;
            let token = String::from_utf8_lossy(&bytes).into_owned();
            assert!(
                check(&token).is_err(),
                "position {i} -> {}",
                replacement as char
            );
        }
    }
    // And a wrong key: ours names a key the other ring does not hold; the
    // original module's token (no kid) fails on the MAC.
    let other = KeyRing::single(
        Key::from_text("0000000000000000000000000000000000000000000000000000000000000000").unwrap(),
    );
    let mut buf = [0u8; PAYLOAD_BUF];
    assert_eq!(
        decode(OURS, &other, at(IAT), &mut buf).unwrap_err(),
        TokenError::UnknownKey
    );
    assert_eq!(
        decode(ORIGINAL_WAY, &other, at(IAT), &mut buf).unwrap_err(),
        TokenError::BadSignature
    );
}

#[test]
fn the_known_header_fast_path_matches_the_headers_it_stands_for() {
    for (json, b64) in [
        (r#"{"alg":"HS256","typ":"JWT"}"#, KNOWN_HEADERS[0]),
        (r#"{"typ":"JWT","alg":"HS256"}"#, KNOWN_HEADERS[1]),
    ] {
        assert_eq!(URL_SAFE_NO_PAD.encode(json).as_bytes(), b64);
        let ring = ring();
        let (found, until) = check_header(b64, &ring).unwrap();
        assert_eq!((found.kid(), until), (key().kid(), NO_DEADLINE));
    }
    // And the header our keys precompute is the one check_header accepts.
    let ring = ring();
    let ours = ring.current().header_b64().as_bytes();
    assert_eq!(
        ring.by_header(ours).map(|(k, _)| k.kid()),
        Some(key().kid())
    );
    assert_eq!(
        check_header(ours, &ring).map(|(k, u)| (k.kid(), u)),
        Ok((key().kid(), NO_DEADLINE))
    );
}

const NEW_KEY_TEXT: &str = "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf";

/// A ring after one rotation: a new current key, `KEY_TEXT` previous until `until`.
fn rotated(until: i64) -> KeyRing {
    KeyRing::new(Key::from_text(NEW_KEY_TEXT).unwrap(), vec![(key(), until)])
}

#[test]
fn after_rotation_tokens_of_the_previous_key_verify_until_its_deadline() {
    let ring = rotated(IAT + 100);
    let mut buf = [0u8; PAYLOAD_BUF];
    // OURS names the previous key by kid.
    let got = verify(OURS, &ring, at(IAT + 99), &mut buf).unwrap();
    assert_eq!((got.claims, got.times.key_until), (claims(), IAT + 100));
    assert_eq!(
        decode(OURS, &ring, at(IAT + 100), &mut buf).unwrap_err(),
        TokenError::UnknownKey
    );
    // New tokens name the new key and verify with no deadline.
    let new = sign(&claims(), ring.current());
    let got = verify(&new, &ring, at(IAT), &mut buf).unwrap();
    assert_eq!(got.times.key_until, NO_DEADLINE);
    assert_ne!(new.split('.').next(), OURS.split('.').next());
    // The previous key's header spelled differently (no fast path) still works.
    let reordered = craft(
        &format!(r#"{{"kid":"{}","alg":"HS256"}}"#, key().kid()),
        &payload_with(&format!(r#""exp":{EXP},"type":"access""#)),
    );
    assert!(decode(&reordered, &ring, at(IAT), &mut buf).is_ok());
}

#[test]
fn tokens_without_kid_are_checked_against_the_current_key_only() {
    let ring = rotated(IAT + 100);
    let mut buf = [0u8; PAYLOAD_BUF];
    // Made the original way with the (now previous) key: refused.
    assert_eq!(
        decode(ORIGINAL_WAY, &ring, at(IAT), &mut buf).unwrap_err(),
        TokenError::BadSignature
    );
    // The same claims, no kid, signed with the current key: accepted.
    let (signed, _) = ORIGINAL_WAY.rsplit_once('.').unwrap();
    let tag = hmac::sign(ring.current().hmac(), signed.as_bytes());
    let resigned = format!("{signed}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()));
    assert!(decode(&resigned, &ring, at(IAT), &mut buf).is_ok());
    // A kid of the previous key on a token signed with the current key: refused.
    let (_, rest) = sign(&claims(), ring.current())
        .split_once('.')
        .map(|(h, r)| (h.to_owned(), r.to_owned()))
        .unwrap();
    let swapped = format!("{}.{rest}", key().header_b64());
    assert_eq!(
        decode(&swapped, &ring, at(IAT), &mut buf).unwrap_err(),
        TokenError::BadSignature
    );
}

#[test]
fn only_hs256_is_accepted() {
    let payload = payload_with(&format!(r#""exp":{EXP},"type":"access""#));
    for alg in [
        "none", "None", "NONE", "nOnE", "HS512", "HS384", "RS256", "ES256", "hs256", "HS256 ", "",
    ] {
        let token = craft(&format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#), &payload);
        assert_eq!(check(&token), Err(TokenError::BadAlgorithm), "alg {alg:?}");
    }
    // `none` with an empty signature, the classic.
    let unsigned = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(&payload)
    );
    assert_eq!(check(&unsigned), Err(TokenError::BadAlgorithm));
    // Valid header, but the signature of another algorithm's length.
    let (signed, _) = OURS.rsplit_once('.').unwrap();
    let long_sig = format!("{signed}.{}", URL_SAFE_NO_PAD.encode([7u8; 64]));
    assert_eq!(check(&long_sig), Err(TokenError::BadSignature));
}

#[test]
fn dangerous_or_unknown_header_fields_are_rejected() {
    let payload = payload_with(&format!(r#""exp":{EXP},"type":"access""#));
    for extra in [
        r#","crit":["exp"]"#,
        r#","jku":"http://127.0.0.1/keys""#,
        r#","jwk":{"kty":"oct","k":"AA"}"#,
        r#","x5u":"http://127.0.0.1/cert""#,
        r#","x5c":["AA"]"#,
        r#","alg":"HS256""#,
    ] {
        let token = craft(
            &format!(r#"{{"alg":"HS256","typ":"JWT"{extra}}}"#),
            &payload,
        );
        assert_eq!(check(&token), Err(TokenError::BadHeader), "{extra}");
    }
    let token = craft(r#"{"alg":"HS256","kid":"../../etc/passwd"}"#, &payload);
    assert_eq!(check(&token), Err(TokenError::UnknownKey));
    let token = craft(
        &format!(r#"{{"alg":"HS256","kid":"{}"}}"#, key().kid()),
        &payload,
    );
    assert_eq!(check(&token), Ok(()));
    for not_a_header in ["[]", "\"HS256\"", "{", "null"] {
        assert!(
            check(&craft(not_a_header, &payload)).is_err(),
            "{not_a_header}"
        );
    }
}

#[test]
fn claims_must_have_the_right_types() {
    for (field, why) in [
        (r#""exp":"1795777200","type":"access""#, "exp as string"),
        (r#""exp":1795777200.5,"type":"access""#, "exp as float"),
        (r#""exp":null,"type":"access""#, "exp null"),
        (r#""exp":[1795777200],"type":"access""#, "exp array"),
        (r#""exp":18446744073709551616,"type":"access""#, "exp 2^64"),
        (r#""type":"access""#, "exp missing"),
        (
            r#""exp":1795777200,"nbf":"0","type":"access""#,
            "nbf as string",
        ),
        (r#""exp":1795777200,"type":"ACCESS""#, "type uppercase"),
        (r#""exp":1795777200,"type":" access""#, "type padded"),
        (r#""exp":1795777200,"type":["access"]"#, "type array"),
        (r#""exp":1795777200"#, "type missing"),
        (
            r#""exp":1795777200,"type":"access","exp":1795777200"#,
            "exp twice",
        ),
    ] {
        let token = craft(r#"{"alg":"HS256","typ":"JWT"}"#, &payload_with(field));
        assert_eq!(check(&token), Err(TokenError::BadClaims), "{why}");
    }
    let token = craft(
        r#"{"alg":"HS256","typ":"JWT"}"#,
        &format!(
            r#"{{"sub":"7","username":"201","role":"user","iat":1,"exp":{EXP},"type":"access","sid":"s","jti":"j"}}"#
        ),
    );
    assert_eq!(check(&token), Err(TokenError::BadClaims), "sub as string");
}

#[test]
fn expiry_and_not_before_edges_are_exact_with_leeway() {
    let mut buf = [0u8; PAYLOAD_BUF];
    assert!(decode(OURS, &ring(), at(EXP + 30), &mut buf).is_ok());
    assert_eq!(
        decode(OURS, &ring(), at(EXP + 31), &mut buf).unwrap_err(),
        TokenError::Expired
    );
    let with_nbf = craft(
        r#"{"alg":"HS256","typ":"JWT"}"#,
        &payload_with(&format!(
            r#""exp":{EXP},"nbf":{},"type":"access""#,
            IAT + 100
        )),
    );
    assert_eq!(
        decode(&with_nbf, &ring(), at(IAT + 69), &mut buf).unwrap_err(),
        TokenError::NotYetValid
    );
    assert!(decode(&with_nbf, &ring(), at(IAT + 70), &mut buf).is_ok());
    // Clocks at the ends of time: no panic, a clear answer.
    assert_eq!(
        decode(OURS, &ring(), at(i64::MAX), &mut buf).unwrap_err(),
        TokenError::Expired
    );
    // A clock at the epoch sees a token issued in 2026 as one from the future.
    assert_eq!(
        decode(OURS, &ring(), at(0), &mut buf).unwrap_err(),
        TokenError::NotYetValid
    );
    let far = craft(
        r#"{"alg":"HS256"}"#,
        &payload_with(r#""exp":9223372036854775807,"nbf":-9223372036854775808,"type":"access""#),
    );
    assert!(decode(&far, &ring(), at(IAT), &mut buf).is_ok());
    assert_eq!(
        decode(&far, &ring(), at(i64::MIN), &mut buf).unwrap_err(),
        TokenError::NotYetValid
    );
    // Issued in the future: refused until then (with leeway).
    assert_eq!(
        decode(OURS, &ring(), at(IAT - 31), &mut buf).unwrap_err(),
        TokenError::NotYetValid
    );
    assert!(decode(OURS, &ring(), at(IAT - 30), &mut buf).is_ok());
}

#[test]
fn issued_at_must_be_a_time_before_expiry() {
    for (why, iat) in [
        ("negative", "-1"),
        ("after exp", &format!("{}", EXP + 1)),
        ("string", &format!(r#""{IAT}""#)),
        ("float", &format!("{IAT}.5")),
        ("2^64", "18446744073709551616"),
        ("null", "null"),
        ("array", &format!("[{IAT}]")),
    ] {
        let token = craft(
            r#"{"alg":"HS256"}"#,
            &format!(
                r#"{{"sub":7,"username":"201","role":"user","iat":{iat},"exp":{EXP},"type":"access","sid":"s","jti":"j"}}"#
            ),
        );
        assert_eq!(check(&token), Err(TokenError::BadClaims), "iat {why}");
    }
}

#[test]
fn the_purpose_is_checked_only_after_everything_else() {
    let mut refresh = claims();
    refresh.kind = TokenType::Refresh;
    let token = sign(&refresh, &key());
    let mut buf = [0u8; PAYLOAD_BUF];
    assert_eq!(
        decode_as(TokenType::Access, &token, &ring(), at(IAT), &mut buf).unwrap_err(),
        TokenError::WrongType
    );
    assert!(decode_as(TokenType::Refresh, &token, &ring(), at(IAT), &mut buf).is_ok());
    assert_eq!(
        decode_as(TokenType::Refresh, OURS, &ring(), at(IAT), &mut buf).unwrap_err(),
        TokenError::WrongType
    );
    // An expired refresh token at an access-only place is expired, not wrong-type.
    assert_eq!(
        decode_as(TokenType::Access, &token, &ring(), at(EXP + 100), &mut buf).unwrap_err(),
        TokenError::Expired
    );
}

#[test]
fn structure_must_be_three_canonical_unpadded_segments() {
    let (h, rest) = OURS.split_once('.').unwrap();
    let (p, s) = rest.split_once('.').unwrap();
    for (token, why) in [
        (h.to_owned(), "1 segment"),
        (format!("{h}.{p}"), "2 segments"),
        (format!("{h}.{p}.{s}.{s}"), "4 segments"),
        (format!("{h}.{p}.{s}.{s}.{s}"), "5 segments"),
        (format!("{h}=.{p}.{s}"), "padded header"),
        (format!("{h}.{p}=.{s}"), "padded payload"),
        (format!("{h}.{p}.{s}="), "padded signature"),
        (
            format!("{h}.{p}.{}", &s[..s.len() - 1]),
            "signature truncated",
        ),
        (format!("{h}.{p}."), "signature empty"),
        (format!(".{p}.{s}"), "header empty"),
        (format!("{h}..{s}"), "payload empty"),
        (format!("{h}.{p}.{s} "), "trailing space"),
        (
            format!("{}.{p}.{s}", h.replace('J', "+")),
            "standard alphabet",
        ),
        ("a".repeat(MAX_TOKEN_LEN + 1), "too long"),
        (String::new(), "empty"),
    ] {
        assert!(check(&token).is_err(), "{why}");
    }
}

#[test]
fn non_canonical_trailing_bits_are_rejected() {
    // The payload segment's length is 2 or 3 mod 4, so its last character carries
    // unused low bits; setting them keeps the decoded bytes but must be refused.
    let (h, rest) = OURS.split_once('.').unwrap();
    let (p, s) = rest.split_once('.').unwrap();
    for (segment, rebuild) in [
        (
            p,
            Box::new(|x: &str| format!("{h}.{x}.{s}")) as Box<dyn Fn(&str) -> String>,
        ),
        (s, Box::new(|x: &str| format!("{h}.{p}.{x}"))),
    ] {
        assert_ne!(segment.len() % 4, 0);
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let last = segment.as_bytes()[segment.len() - 1];
        let index = alphabet.iter().position(|&c| c == last).unwrap();
        let unused_bits = if segment.len() % 4 == 2 { 0b1111 } else { 0b11 };
        assert_eq!(index & unused_bits, 0, "canonical to begin with");
        let tweaked = alphabet[index | 1] as char;
        let token = rebuild(&format!("{}{tweaked}", &segment[..segment.len() - 1]));
        assert!(check(&token).is_err(), "{token}");
    }
}

#[test]
fn bearer_takes_one_scheme_in_any_case_and_one_space() {
    let cases: [(&[u8], Option<&[u8]>); 10] = [
        (b"Bearer abc", Some(b"abc")),
        (b"bEaReR abc", Some(b"abc")),
        (b"abc", Some(b"abc")),
        // Only one space belongs to the scheme: the rest is the token (and fails).
        (b"Bearer  abc", Some(b" abc")),
        // Not the scheme: the whole value is a bare token (and fails).
        (b"Bearerabc", Some(b"Bearerabc")),
        (b"Basic abc", Some(b"Basic abc")),
        // No token at all.
        (b"", None),
        (b"Bearer", None),
        (b"bearer ", None),
        (b"BEARER", None),
    ];
    for (value, token) in cases {
        assert_eq!(bearer(value), token, "{:?}", String::from_utf8_lossy(value));
    }
}

/// The rules a cached token is judged by again, on its times alone.
#[test]
fn validation_checks_key_deadline_then_expiry_then_not_before() {
    let times = TokenTimes {
        exp: EXP,
        not_before: IAT,
        key_until: IAT + 100,
    };
    assert_eq!(at(IAT + 99).check(times), Ok(()));
    assert_eq!(at(IAT + 100).check(times), Err(TokenError::UnknownKey));
    // A retired key's token is refused as such even when it has also expired.
    assert_eq!(at(EXP + 31).check(times), Err(TokenError::UnknownKey));
    let current = TokenTimes {
        key_until: NO_DEADLINE,
        ..times
    };
    assert_eq!(at(EXP + 30).check(current), Ok(()));
    assert_eq!(at(EXP + 31).check(current), Err(TokenError::Expired));
    assert_eq!(at(IAT - 30).check(current), Ok(()));
    assert_eq!(at(IAT - 31).check(current), Err(TokenError::NotYetValid));
    // Expiry as sessions and cache entries use it: the same edge.
    assert!(!at(EXP + 30).expired(EXP) && at(EXP + 31).expired(EXP));
    assert_eq!(at(EXP + 31).oldest_live_exp(), EXP + 1);
    assert!(!at(i64::MIN).expired(EXP) && !at(i64::MAX).expired(i64::MAX));
}

/// Metrics index counters by kind: every kind has its own place and name.
#[test]
fn every_error_kind_has_its_index_and_a_name_of_its_own() {
    let mut names = std::collections::HashSet::new();
    for (i, kind) in TokenError::ALL.into_iter().enumerate() {
        assert_eq!(kind.index(), i, "{kind:?}");
        assert!(names.insert(kind.as_str()), "{kind:?}");
    }
}
