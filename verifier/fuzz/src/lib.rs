//! What the fuzz targets share: the fixed key and clock, the verifier fixture on a
//! real SQLite store, the `request` input format, and the seed corpus.
//!
//! Built only by `deploy/fuzz.sh`, with coverage instrumentation; a panic here or
//! in a target is a finding, so failing loudly is the point.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "fuzzing harness: a panic is how a finding is reported"
)]

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;
use softphone_shared::keyfile;
use softphone_shared::keys::{Key, KeyRing};
use softphone_shared::live_keys::LiveKeys;
use softphone_shared::seclog::{Event, RATE_LIMIT_PER_SECOND, SecurityLog};
use softphone_shared::store::{NewSession, RevokeReason, Store};
use softphone_shared::token::{self, Claims, TokenType};
use softphone_verifier::revocations::Revocations;
use softphone_verifier::state::Verifier;

/// The key file's text. The HMAC key is these ASCII characters, as in the file.
pub const KEY_TEXT: &str = "5f1c0e9a7b3d2c4e6a8b0d1f3e5c7a9b2d4f6e8a0c1b3d5f7e9a2c4b6d8f0e1a";
/// The fixed clock every decision and decode runs at.
pub const NOW: i64 = 1_800_000_000;
/// The daemons' default leeway.
pub const LEEWAY: i64 = 30;
/// Longest input either target looks at (`-max_len`): a maximal token plus room.
pub const MAX_INPUT: usize = 4096;

/// A key rotated out before [`KEY_TEXT`], still verifying until [`NOW`] + 100.
pub const PREVIOUS_KEY_TEXT: &str =
    "0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e";

/// The one place that builds the keys: the fixture key as the current one, and a
/// previous key so the previous-key paths (lookup by `kid`, deadline) are fuzzed too.
pub fn key() -> KeyRing {
    let current = Key::from_text(KEY_TEXT).expect("the fixed key is long enough");
    let previous = Key::from_text(PREVIOUS_KEY_TEXT).expect("the fixed key is long enough");
    KeyRing::new(current, vec![(previous, NOW + 100)])
}

/// The fixture key's `kid`, for seeds whose header names it.
fn key_id() -> String {
    key().current().kid().to_owned()
}

/// Signs raw header and payload JSON as the contract defines HS256 (HMAC over the
/// key file's text), so targets can reach the code behind the MAC check with
/// JSON that `token::sign` would never write.
pub fn sign_segments(header: &[u8], payload: &[u8]) -> String {
    hs256(KEY_TEXT, header, payload)
}

fn hs256(key_text: &str, header: &[u8], payload: &[u8]) -> String {
    let mut out = URL_SAFE_NO_PAD.encode(header);
    out.push('.');
    URL_SAFE_NO_PAD.encode_string(payload, &mut out);
    let tag = hmac::sign(
        &hmac::Key::new(hmac::HMAC_SHA256, key_text.as_bytes()),
        out.as_bytes(),
    );
    out.push('.');
    URL_SAFE_NO_PAD.encode_string(tag.as_ref(), &mut out);
    out
}

// ----- the `request` input format ---------------------------------------------------

/// Most headers a request carries: the verifier's connection loop parses at most 32.
pub const MAX_HEADERS: usize = softphone_verifier::conn::MAX_HEADERS;

/// One request as the verifier sees it, borrowed from the fuzz input:
///
/// ```text
/// <request target: path and query>\n
/// <Header-Name>: <value>\n        (up to MAX_HEADERS lines; others are skipped)
/// ```
///
/// Bytes that are not UTF-8 end the target (httparse hands the verifier `&str`) and
/// skip a header name; values are raw bytes, leading blanks trimmed as httparse does.
#[derive(Debug, Default)]
pub struct RequestInput<'a> {
    pub target: &'a str,
    pub headers: [(&'a str, &'a [u8]); MAX_HEADERS],
    pub header_count: usize,
}

impl<'a> RequestInput<'a> {
    pub fn parse(data: &'a [u8]) -> RequestInput<'a> {
        let mut lines = data.split(|&b| b == b'\n');
        let first = lines.next().unwrap_or_default();
        let target = match std::str::from_utf8(first) {
            Ok(s) => s,
            Err(e) => std::str::from_utf8(&first[..e.valid_up_to()]).unwrap_or_default(),
        };
        let mut input = RequestInput {
            target,
            ..RequestInput::default()
        };
        for line in lines {
            if input.header_count == MAX_HEADERS {
                break;
            }
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                continue;
            };
            let Ok(name) = std::str::from_utf8(&line[..colon]) else {
                continue;
            };
            let value = &line[colon + 1..];
            let start = value
                .iter()
                .position(|&b| b != b' ' && b != b'\t')
                .unwrap_or(value.len());
            input.headers[input.header_count] = (name, &value[start..]);
            input.header_count += 1;
        }
        input
    }

    pub fn headers(&self) -> &[(&'a str, &'a [u8])] {
        &self.headers[..self.header_count]
    }
}

// ----- the verifier fixture ---------------------------------------------------------

/// Session ids in the fixture database.
pub const LIVE_SID: &str = "live-session";
pub const REVOKED_SID: &str = "revoked-session";

/// A verifier as the daemon builds it, on a real SQLite store in `dir` holding one
/// live and one revoked session, with the security log's per-second budget
/// already spent at [`NOW`] (the steady state of a flood of bad requests).
pub fn verifier(dir: &Path) -> Verifier {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).expect("fuzz data dir");
    let key_path = dir.join("secret.key");
    std::fs::write(&key_path, KEY_TEXT).expect("key file");
    // The previous key of [`key`], as `key rotate` writes it.
    std::fs::write(
        keyfile::previous_path(&key_path),
        format!("{} {PREVIOUS_KEY_TEXT}\n", NOW + 100),
    )
    .expect("previous key file");
    let db = dir.join("softphone.db");
    let mut store = Store::open(&db).expect("store");
    for sid in [LIVE_SID, REVOKED_SID] {
        store
            .create_session(
                &NewSession {
                    sid,
                    user_id: 7,
                    username: "201",
                    role: "user",
                    cred_tag: "t",
                    created: NOW - 60,
                    expires: NOW + 30 * 86_400,
                    refresh_jti: "r",
                    password_hash: None,
                },
                usize::MAX,
            )
            .expect("session");
    }
    store
        .revoke_session(REVOKED_SID, RevokeReason::Logout, NOW)
        .expect("revoke");
    let revocations = Revocations::open(&db, NOW, LEEWAY).expect("revocations");
    let log = SecurityLog::open(&dir.join("security.log"), false, "softphone-fuzz").expect("log");
    for _ in 0..RATE_LIMIT_PER_SECOND {
        log.log_limited(Event::MediaAccessDenied, "warm-up", "", None, NOW);
    }
    let keys = LiveKeys::open(&key_path, "softphone-fuzz").expect("keys");
    Verifier::new(keys, LEEWAY, revocations, Some(log))
}

/// Where a target keeps its fixture: `SOFTPHONE_FUZZ_DIR` (the runner's temporary
/// directory, removed after the run), or a per-process directory under the temp dir.
pub fn data_dir() -> PathBuf {
    std::env::var_os("SOFTPHONE_FUZZ_DIR").map_or_else(
        || std::env::temp_dir().join(format!("softphone-fuzz-{}", std::process::id())),
        PathBuf::from,
    )
}

// ----- seeds --------------------------------------------------------------------------

/// With `SOFTPHONE_FUZZ_SEEDS=<dir>` set, a target writes the seed corpus of every
/// target to `<dir>/<target>/` and exits (`deploy/fuzz.sh --seeds`). A separate
/// program would not link: everything in this build calls libFuzzer's hooks.
pub fn write_seeds_if_asked() {
    let Some(dir) = std::env::var_os("SOFTPHONE_FUZZ_SEEDS") else {
        return;
    };
    let dir = PathBuf::from(dir);
    for (target, seeds) in [("token", token_seeds()), ("request", request_seeds())] {
        let out = dir.join(target);
        std::fs::create_dir_all(&out).expect("corpus dir");
        for (name, bytes) in seeds {
            std::fs::write(out.join(name), bytes).expect("seed file");
        }
    }
    eprintln!("seed corpus written to {}", dir.display());
    std::process::exit(0);
}

fn claims<'a>(sid: &'a str, username: &'a str, kind: TokenType) -> Claims<'a> {
    Claims {
        sub: 7,
        username,
        role: "user",
        iat: NOW - 60,
        exp: NOW + 3540,
        kind,
        sid,
        jti: "jti-1",
        nbf: None,
    }
}

/// The claims JSON exactly as `token::sign` writes it.
fn payload(c: &Claims<'_>) -> String {
    serde_json::to_string(c).expect("claims serialise")
}

const HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

/// Named tokens covering every verdict: valid access and refresh, revoked,
/// unknown session, expired, not yet valid, unsendable identity, and the classic
/// forgeries (alg none, other algorithms, stray header fields, wrong key).
pub fn seed_tokens() -> Vec<(&'static str, String)> {
    let ring = key();
    let k = ring.current();
    let access = claims(LIVE_SID, "201", TokenType::Access);
    let mut expired = access.clone();
    expired.iat = NOW - 7200;
    expired.exp = NOW - 3600;
    let mut future = access.clone();
    future.nbf = Some(NOW + 600);
    let body = payload(&access);
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(&body)
    );
    vec![
        ("access", token::sign(&access, &k)),
        ("previous-key", token::sign(&access, &ring.previous()[0].0)),
        (
            "refresh",
            token::sign(&claims(LIVE_SID, "201", TokenType::Refresh), &k),
        ),
        (
            "revoked",
            token::sign(&claims(REVOKED_SID, "201", TokenType::Access), &k),
        ),
        (
            "unknown-session",
            token::sign(&claims("ghost", "201", TokenType::Access), &k),
        ),
        ("expired", token::sign(&expired, &k)),
        ("not-yet-valid", token::sign(&future, &k)),
        (
            "bad-identity",
            token::sign(&claims(LIVE_SID, "a b", TokenType::Access), &k),
        ),
        (
            "wrong-key",
            hs256(
                "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                HEADER.as_bytes(),
                body.as_bytes(),
            ),
        ),
        ("alg-none", none),
        (
            "alg-hs512",
            sign_segments(br#"{"alg":"HS512","typ":"JWT"}"#, body.as_bytes()),
        ),
        (
            "php-header",
            sign_segments(br#"{"typ":"JWT","alg":"HS256"}"#, body.as_bytes()),
        ),
        (
            "kid",
            sign_segments(
                format!(r#"{{"alg":"HS256","typ":"JWT","kid":"{}"}}"#, key_id()).as_bytes(),
                body.as_bytes(),
            ),
        ),
        (
            "kid-unknown",
            sign_segments(br#"{"alg":"HS256","kid":"nope"}"#, body.as_bytes()),
        ),
        (
            "jku",
            sign_segments(
                br#"{"alg":"HS256","jku":"https://x/k.json"}"#,
                body.as_bytes(),
            ),
        ),
        (
            "no-sid",
            sign_segments(
                HEADER.as_bytes(),
                format!(
                    r#"{{"sub":7,"exp":{},"type":"access","jti":"j"}}"#,
                    NOW + 60
                )
                .as_bytes(),
            ),
        ),
    ]
}

/// Seeds of the `token` target: the tokens as they are, and JSON inputs (which the
/// target signs itself) for the claims parser behind the MAC.
pub fn token_seeds() -> Vec<(String, Vec<u8>)> {
    let mut seeds: Vec<(String, Vec<u8>)> = seed_tokens()
        .into_iter()
        .map(|(name, t)| (name.to_owned(), t.into_bytes()))
        .collect();
    let access = payload(&claims(LIVE_SID, "201", TokenType::Access));
    let mut refresh = claims(LIVE_SID, "201", TokenType::Refresh);
    refresh.nbf = Some(NOW - 10);
    let with_nbf = payload(&refresh);
    let kid_header = format!(r#"{{"alg":"HS256","kid":"{}"}}"#, key_id());
    let escapes = concat!(
        r#"{"sub":7,"username":"2\u0030","role":"user","iat":0,"exp":9e99,"#,
        r#""type":"access","sid":"s","jti":"j"}"#
    );
    // A token without `kid` just under the length limit: signed again (with
    // `kid`), it no longer fits (a harness mistake the fuzzer once found).
    let near_limit = (1000..2000)
        .map(|n| payload(&claims(LIVE_SID, &"x".repeat(n), TokenType::Access)))
        .find(|p| {
            let unsigned = r#"{"alg":"HS256","typ":"JWT"}"#.len() + p.len();
            let len = (unsigned + 2) / 3 * 4 + 2 + 43;
            (token::MAX_TOKEN_LEN - 8..=token::MAX_TOKEN_LEN).contains(&len)
        })
        .expect("a username length that lands near the limit");
    for (name, json) in [
        ("json-near-limit", near_limit),
        ("json-access", access.clone()),
        ("json-refresh-nbf", with_nbf),
        ("json-header-kid", format!("{kid_header}\n{access}")),
        (
            "json-header-typ-first",
            format!("{{\"typ\":\"JWT\",\"alg\":\"HS256\"}}\n{access}"),
        ),
        ("json-escapes", escapes.to_owned()),
    ] {
        seeds.push((name.to_owned(), json.into_bytes()));
    }
    seeds
}

/// Seeds of the `request` target, in [`RequestInput`]'s format.
pub fn request_seeds() -> Vec<(String, Vec<u8>)> {
    let tokens = seed_tokens();
    let t = |name: &str| {
        tokens
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, t)| t.clone())
            .expect("seed token")
    };
    let base = softphone_shared::paths::API_BASE;
    let check = softphone_shared::paths::CHECK_MEDIA_ACCESS;
    let access = t("access");
    let encoded = access.replace('.', "%2E");
    let mut seeds = vec![
        (
            "header-access",
            format!("/auth\nAuthorization: Bearer {access}\n"),
        ),
        (
            "query-access",
            format!("{check}?authorization={access}\nHost: pbx\nCookie: a=b\n"),
        ),
        (
            "original-uri",
            format!(
                "/auth\nX-Original-URI: /media/x.mp3?x=1&token=Bearer%20{encoded}\n\
                 X-Real-IP: 10.0.0.5\n"
            ),
        ),
        (
            "nchan",
            format!(
                "/auth?authorization={access}\nX-Original-URI: {base}/sub/users-state?authorization={encoded}\n"
            ),
        ),
        (
            "conflict",
            format!(
                "/auth?token={access}\nAuthorization: Bearer {}\n",
                t("refresh")
            ),
        ),
        ("health", "/health\n".to_owned()),
        ("not-found", "/media/x.mp3?token=x\n".to_owned()),
        (
            "body",
            format!(
                "/auth\nAuthorization: {access}\nContent-Length: 5\nTransfer-Encoding: chunked\n"
            ),
        ),
        (
            "bad-escape",
            "/auth?authorization=%zz&token=a+b\n".to_owned(),
        ),
        (
            "five-headers",
            format!(
                "/auth\n{}",
                format!("Authorization: Bearer {access}\n").repeat(5)
            ),
        ),
        (
            "no-token",
            "/auth?token=&authorization=Bearer\nAuthorization: Bearer\n".to_owned(),
        ),
    ];
    for name in [
        "refresh",
        "revoked",
        "unknown-session",
        "expired",
        "not-yet-valid",
        "bad-identity",
        "alg-none",
        "jku",
        "kid-unknown",
        "no-sid",
    ] {
        seeds.push((
            name,
            format!("/auth\nAuthorization: Bearer {}\nX-Real-IP: ::1\n", t(name)),
        ));
    }
    seeds
        .into_iter()
        .map(|(name, s)| (name.to_owned(), s.into_bytes()))
        .collect()
}
