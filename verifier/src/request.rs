//! The parts of a request the verifier looks at, and finding the token in them.
//!
//! Token sources, in the original nginx Lua's order: query parameter
//! `authorization`, query parameter `token`, then the `Authorization` header. The
//! query comes from the request target (nchan appends the original query there) and
//! from `X-Original-URI` (set by nginx for `auth_request`). Each value may be
//! `Bearer <jwt>` (scheme case-insensitive, one space) or the bare `<jwt>`; query
//! values are percent-decoded. Every source that is present must carry the same
//! token: two different tokens are refused.

use softphone_shared::token::MAX_TOKEN_LEN;

/// Public path of the check, as the original module names it.
pub const CHECK_PATH: &str = "/pbxcore/api/module-softphone-backend/v1/check-media-access";
/// Short internal path for nginx's `auth_request` and `nchan_authorize_request`.
pub const AUTH_PATH: &str = "/auth";
/// Liveness probe of the verifier itself.
pub const HEALTH_PATH: &str = "/health";

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
}

impl<'a> Head<'a> {
    pub fn new(target: &'a str) -> Head<'a> {
        Head {
            target,
            ..Head::default()
        }
    }

    /// Records one header; names are matched case-insensitively.
    pub fn header(&mut self, name: &str, value: &'a [u8]) {
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

    /// The path part of the request target.
    pub fn path(&self) -> &'a str {
        self.target.split_once('?').map_or(self.target, |(p, _)| p)
    }
}

/// The outcome of looking for a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found<'b> {
    None,
    One(&'b str),
    /// Sources disagree, or one cannot be read (too long, not UTF-8).
    Conflict,
    Unreadable,
}

/// Scratch space for token extraction, kept on the stack by the caller.
pub struct TokenBuf {
    token: [u8; MAX_TOKEN_LEN],
    len: usize,
    scratch: [u8; MAX_TOKEN_LEN],
}

impl Default for TokenBuf {
    fn default() -> Self {
        TokenBuf {
            token: [0; MAX_TOKEN_LEN],
            len: 0,
            scratch: [0; MAX_TOKEN_LEN],
        }
    }
}

enum Offer {
    Ok,
    Conflict,
    Unreadable,
}

impl TokenBuf {
    /// Finds the token of a request.
    pub fn find<'b>(&'b mut self, head: &Head<'_>) -> Found<'b> {
        self.len = 0;
        let mut state = Offer::Ok;
        let mut offer = |buf: &mut TokenBuf, raw: &[u8], query: bool| {
            if matches!(state, Offer::Ok) {
                state = buf.offer(raw, query);
            }
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
                    offer(self, value, true);
                }
            }
        }
        if head.authorization_count > MAX_AUTH_HEADERS {
            return Found::Conflict;
        }
        for value in head.authorization.iter().flatten() {
            offer(self, value, false);
        }
        match state {
            Offer::Conflict => Found::Conflict,
            Offer::Unreadable => Found::Unreadable,
            Offer::Ok if self.len == 0 => Found::None,
            Offer::Ok => match std::str::from_utf8(&self.token[..self.len]) {
                Ok(token) => Found::One(token),
                Err(_) => Found::Unreadable,
            },
        }
    }

    fn offer(&mut self, raw: &[u8], query: bool) -> Offer {
        let decoded: &[u8] = if query {
            match percent_decode(raw, &mut self.scratch) {
                Some(n) => &self.scratch[..n],
                None => return Offer::Unreadable,
            }
        } else {
            raw
        };
        let token = strip_scheme(decoded);
        if token.is_empty() {
            // An empty value (`?token=`) or a bare "Bearer" counts as no token.
            return Offer::Ok;
        }
        if token.len() > MAX_TOKEN_LEN {
            return Offer::Unreadable;
        }
        if self.len == 0 {
            self.token[..token.len()].copy_from_slice(token);
            self.len = token.len();
            Offer::Ok
        } else if &self.token[..self.len] == token {
            Offer::Ok
        } else {
            Offer::Conflict
        }
    }
}

/// `Bearer <t>` (any case, one space) gives `<t>`; anything else is the bare token.
fn strip_scheme(value: &[u8]) -> &[u8] {
    const SCHEME: &[u8] = b"bearer";
    if value.len() >= SCHEME.len() && value[..SCHEME.len()].eq_ignore_ascii_case(SCHEME) {
        let rest = &value[SCHEME.len()..];
        if rest.is_empty() {
            return rest;
        }
        if let Some(token) = rest.strip_prefix(b" ") {
            return token;
        }
    }
    value
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
            head.header(name, value);
        }
        let mut buf = TokenBuf::default();
        match buf.find(&head) {
            Found::None => "none".into(),
            Found::One(t) => t.into(),
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
        assert_eq!(
            find("/auth", &[("Authorization", b"Bearer \xff\xfe")]),
            "unreadable"
        );
        let long = "a".repeat(MAX_TOKEN_LEN + 1);
        assert_eq!(find(&format!("/auth?token={long}"), &[]), "unreadable");
    }

    #[test]
    fn bodies_are_noticed() {
        let mut head = Head::new("/auth");
        head.header("Content-Length", b"0");
        assert!(!head.has_body);
        head.header("content-length", b"5");
        assert!(head.has_body);
        let mut head = Head::new("/auth");
        head.header("Transfer-Encoding", b"chunked");
        assert!(head.has_body);
    }
}
