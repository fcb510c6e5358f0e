//! The parts of a request the verifier looks at, and finding the token in them.
//!
//! Token sources, in the original nginx Lua's order: query parameter
//! `authorization`, query parameter `token`, then the `Authorization` header. The
//! query comes from the request target (where `nchan_authorize_request`, which an
//! older nginx config may still use, appends the original query) and
//! from `X-Original-URI` (set by nginx for `auth_request`). Each value is read by
//! [`bearer`]; query values are percent-decoded first. Every source that is
//! present must carry the same token: two different tokens are refused.

use softphone_shared::paths::SUBSCRIBE;
use softphone_shared::token::{MAX_TOKEN_LEN, bearer};

/// Short internal path for nginx's `auth_request` (media, WebSocket, nchan
/// subscribers).
pub const AUTH_PATH: &str = "/auth";
/// Liveness probe of the verifier itself.
pub const HEALTH_PATH: &str = "/health";
/// Prometheus scrapes (nginx routes nothing to it: only the auth paths).
pub const METRICS_PATH: &str = "/metrics";

/// Most `Authorization` headers we compare; more are refused as a conflict.
const MAX_AUTH_HEADERS: usize = 4;

/// What the verifier reads from a request head.
#[derive(Debug, Default, Clone, Copy)]
pub struct Head<'a> {
    pub target: &'a str,
    pub original_uri: Option<&'a [u8]>,
    pub authorization: [Option<&'a [u8]>; MAX_AUTH_HEADERS],
    pub authorization_count: usize,
    pub real_ip: Option<&'a [u8]>,
    /// A `Content-Length` other than 0, or any `Transfer-Encoding`.
    pub has_body: bool,
    /// A method other than GET or HEAD (see [`Head::set_method`]).
    pub other_method: bool,
}

impl<'a> Head<'a> {
    pub fn new(target: &'a str) -> Head<'a> {
        Head {
            target,
            ..Head::default()
        }
    }

    /// Records the method. nginx asks with the client's GET or HEAD (media,
    /// WebSocket) and nchan with GET; anything else is not a question nginx asks.
    pub fn set_method(&mut self, method: &str) {
        self.other_method = method != "GET" && method != "HEAD";
    }

    /// Records one header; names are matched case-insensitively.
    pub fn add_header(&mut self, name: &str, value: &'a [u8]) {
        if name.eq_ignore_ascii_case("authorization") {
            if let Some(slot) = self.authorization.get_mut(self.authorization_count) {
                *slot = Some(value);
            }
            self.authorization_count += 1;
        } else if name.eq_ignore_ascii_case("x-original-uri") {
            self.original_uri = Some(value);
        } else if name.eq_ignore_ascii_case("x-real-ip") {
            self.real_ip = Some(value);
        } else if name.eq_ignore_ascii_case("content-length") {
            self.has_body |= value.trim_ascii() != b"0";
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            self.has_body = true;
        }
    }

    /// Whether nginx asks for an nchan subscriber: the original request's
    /// target, exactly as the client sent it, is under [`SUBSCRIBE`]. (A
    /// subscription reached by a spelling nginx normalizes differently gets no
    /// channels in the answer, and nginx then refuses it: fail closed.)
    pub fn subscription(&self) -> bool {
        self.original_uri
            .is_some_and(|uri| uri.starts_with(SUBSCRIBE.as_bytes()))
    }

    /// The path part of the request target.
    pub fn path(&self) -> &'a str {
        self.target.split_once('?').map_or(self.target, |(p, _)| p)
    }
}

/// The outcome of looking for a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found<'r> {
    None,
    /// The token's bytes; verification checks they are base64url, so they need
    /// no UTF-8 check here.
    One(&'r [u8]),
    /// Sources disagree.
    Conflict,
    /// A source cannot be read (bad escape, too long, not UTF-8).
    Unreadable,
}

/// Most token sources we compare; more are refused as a conflict.
const MAX_SOURCES: usize = 8;

/// Finds the token of a request.
///
/// The common case (one source, nothing to decode) borrows the token straight
/// from the request; only a percent-encoded query value is decoded, into
/// `scratch`, which the caller keeps across requests so nothing is zeroed or
/// allocated per request.
pub fn find_token<'r>(head: &Head<'r>, scratch: &'r mut [u8; MAX_TOKEN_LEN]) -> Found<'r> {
    let mut sources: [(&[u8], bool); MAX_SOURCES] = [(&[], false); MAX_SOURCES];
    let mut count = 0;
    let mut add = |raw: &'r [u8], query: bool| {
        if let Some(slot) = sources.get_mut(count) {
            *slot = (raw, query);
        }
        count += 1;
    };
    for query in [
        query_of(head.target.as_bytes()),
        head.original_uri.and_then(query_of),
    ]
    .into_iter()
    .flatten()
    {
        for name in [&b"authorization"[..], b"token"] {
            for value in params(query, name) {
                add(value, true);
            }
        }
    }
    if head.authorization_count > MAX_AUTH_HEADERS {
        return Found::Conflict;
    }
    for value in head.authorization.iter().flatten() {
        add(value, false);
    }
    if count > MAX_SOURCES {
        return Found::Conflict;
    }

    // The first source that is not empty is the token; every other must agree.
    let mut token: Option<&'r [u8]> = None;
    let mut scratch = Some(scratch);
    for &(raw, query) in &sources[..count] {
        let plain = !(query && needs_decoding(raw));
        let candidate = if plain {
            bearer(raw)
        } else if token.is_none() {
            let Some(buf) = scratch.take() else {
                return Found::Unreadable;
            };
            match percent_decode(raw, buf) {
                Some(n) => bearer(&buf[..n]),
                None => return Found::Unreadable,
            }
        } else {
            // A second encoded source: compare without keeping it.
            match same_when_decoded(raw, token.unwrap_or_default()) {
                Some(true) => continue,
                Some(false) => return Found::Conflict,
                None => return Found::Unreadable,
            }
        };
        // An empty value (`?token=`) or a bare "Bearer" counts as no token.
        let Some(candidate) = candidate else {
            continue;
        };
        if candidate.len() > MAX_TOKEN_LEN {
            return Found::Unreadable;
        }
        match token {
            None => token = Some(candidate),
            Some(t) if t == candidate => {}
            Some(_) => return Found::Conflict,
        }
    }
    match token {
        None => Found::None,
        Some(t) => Found::One(t),
    }
}

fn needs_decoding(value: &[u8]) -> bool {
    value.iter().any(|&b| b == b'%' || b == b'+')
}

/// Decodes `raw` on the stack and compares it with `token`; `None` when it
/// cannot be decoded. Rare (two encoded sources), so its buffer is paid only here.
#[cold]
fn same_when_decoded(raw: &[u8], token: &[u8]) -> Option<bool> {
    let mut buf = [0u8; MAX_TOKEN_LEN];
    let n = percent_decode(raw, &mut buf)?;
    Some(bearer(&buf[..n]).is_none_or(|decoded| decoded == token))
}

fn query_of(target: &[u8]) -> Option<&[u8]> {
    let at = target.iter().position(|&b| b == b'?')?;
    let query = &target[at + 1..];
    // A fragment never reaches a server, but do not read one as part of a value.
    Some(query.split(|&b| b == b'#').next().unwrap_or(query))
}

/// Values of parameter `name` in a query string.
fn params<'q>(query: &'q [u8], name: &'q [u8]) -> impl Iterator<Item = &'q [u8]> + 'q {
    query.split(|&b| b == b'&').filter_map(move |pair| {
        let (key, value) = match pair.iter().position(|&b| b == b'=') {
            Some(at) => (&pair[..at], &pair[at + 1..]),
            None => (pair, &b""[..]),
        };
        (key == name).then_some(value)
    })
}

/// Decodes `%XX` and `+` into `out`; `None` on a bad escape or overflow.
fn percent_decode(input: &[u8], out: &mut [u8]) -> Option<usize> {
    let mut i = 0;
    let mut n = 0;
    while i < input.len() {
        let byte = match input[i] {
            b'%' => {
                let hi = hex_digit(*input.get(i + 1)?)?;
                let lo = hex_digit(*input.get(i + 2)?)?;
                i += 2;
                hi << 4 | lo
            }
            b'+' => b' ',
            b => b,
        };
        *out.get_mut(n)? = byte;
        n += 1;
        i += 1;
    }
    Some(n)
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find(target: &str, headers: &[(&str, &[u8])]) -> String {
        let mut head = Head::new(target);
        for (name, value) in headers {
            head.add_header(name, value);
        }
        let mut scratch = [0u8; MAX_TOKEN_LEN];
        match find_token(&head, &mut scratch) {
            Found::None => "none".into(),
            Found::One(t) => String::from_utf8_lossy(t).into_owned(),
            Found::Conflict => "conflict".into(),
            Found::Unreadable => "unreadable".into(),
        }
    }

    #[test]
    fn every_source_and_form() {
        assert_eq!(find("/auth?authorization=abc", &[]), "abc");
        assert_eq!(find("/auth?token=abc", &[]), "abc");
        assert_eq!(find("/auth?x=1&token=abc&y=2", &[]), "abc");
        assert_eq!(find("/auth?authorization=Bearer%20abc", &[]), "abc");
        assert_eq!(find("/auth?authorization=bEaReR+abc", &[]), "abc");
        assert_eq!(find("/auth?token=a%2Eb%2ec", &[]), "a.b.c");
        assert_eq!(find("/auth", &[("Authorization", b"Bearer abc")]), "abc");
        assert_eq!(find("/auth", &[("authorization", b"BEARER abc")]), "abc");
        assert_eq!(find("/auth", &[("Authorization", b"abc")]), "abc");
        assert_eq!(
            find("/auth", &[("X-Original-URI", b"/media/x.mp3?token=abc")]),
            "abc"
        );
        assert_eq!(find("/auth", &[]), "none");
        assert_eq!(
            find("/auth?token=", &[("Authorization", b"Bearer")]),
            "none"
        );
    }

    #[test]
    fn the_same_token_twice_is_fine_two_different_ones_are_not() {
        assert_eq!(
            find(
                "/auth?token=abc",
                &[
                    ("Authorization", b"Bearer abc"),
                    ("X-Original-URI", b"/x?authorization=abc")
                ]
            ),
            "abc"
        );
        assert_eq!(
            find("/auth?token=abc", &[("Authorization", b"Bearer abd")]),
            "conflict"
        );
        assert_eq!(find("/auth?token=abc&token=abd", &[]), "conflict");
        assert_eq!(find("/auth?authorization=abc&token=abd", &[]), "conflict");
        assert_eq!(
            find(
                "/auth",
                &[
                    ("Authorization", b"Bearer abc"),
                    ("Authorization", b"Bearer abd")
                ]
            ),
            "conflict"
        );
        assert_eq!(find("/auth", &[("X-Original-URI", b"/x?token=abd")]), "abd");
        assert_eq!(
            find("/auth?token=abc", &[("X-Original-URI", b"/x?token=abd")]),
            "conflict"
        );
    }

    #[test]
    fn odd_spacing_and_bad_bytes_are_not_repaired() {
        // Not a single space after the scheme: kept whole, so it fails verification.
        assert_eq!(
            find("/auth", &[("Authorization", b"Bearer\tabc")]),
            "Bearer\tabc"
        );
        assert_eq!(find("/auth", &[("Authorization", b"Bearer  abc")]), " abc");
        assert_eq!(find("/auth?token=%zz", &[]), "unreadable");
        assert_eq!(find("/auth?token=%4", &[]), "unreadable");
        // Non-UTF-8 bytes are passed on; verification refuses them as base64.
        assert_eq!(
            find("/auth", &[("Authorization", b"Bearer \xff\xfe")]),
            "\u{fffd}\u{fffd}"
        );
        let long = "a".repeat(MAX_TOKEN_LEN + 1);
        assert_eq!(find(&format!("/auth?token={long}"), &[]), "unreadable");
    }

    #[test]
    fn bodies_are_noticed() {
        let mut head = Head::new("/auth");
        head.add_header("Content-Length", b"0");
        assert!(!head.has_body);
        head.add_header("content-length", b"5");
        assert!(head.has_body);
        let mut head = Head::new("/auth");
        head.add_header("Transfer-Encoding", b"chunked");
        assert!(head.has_body);
    }
}
