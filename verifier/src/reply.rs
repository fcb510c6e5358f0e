//! The one table from decisions to HTTP, written out as raw HTTP/1.1 bytes for
//! both listeners. On its auth paths the verifier answers only 200, 401 or 403:
//! nginx turns anything else into a 500 for the app, and nchan takes a 3xx as
//! "allowed".

use crate::decision::{Decision, DenyReason};
use crate::metrics;

const CHALLENGE: &str = "WWW-Authenticate: Bearer realm=\"softphone\"";
const CHALLENGE_INVALID: &str =
    "WWW-Authenticate: Bearer realm=\"softphone\", error=\"invalid_token\"";
const CHALLENGE_SCOPE: &str =
    "WWW-Authenticate: Bearer realm=\"softphone\", error=\"insufficient_scope\"";
const NO_STORE: &str = "Cache-Control: no-store";
const JSON: &str = "Content-Type: application/json";

/// Status, reason, header lines and body of an answer.
pub struct Answer {
    pub status: u16,
    pub reason: &'static str,
    pub headers: [&'static str; 3],
    pub body: &'static str,
    /// `body.len()` as text, written out by hand so encoding needs no formatting
    /// (a test keeps the two in step).
    pub length: &'static str,
}

pub fn answer(decision: Decision) -> Answer {
    match decision {
        Decision::Allow(identity) | Decision::Subscribe(identity, _) => Answer {
            status: 200,
            reason: "OK",
            headers: [identity.headers, "", ""],
            body: "",
            length: "0",
        },
        // RFC 6750 §3.1: no error code when the request carried no credentials.
        Decision::Unauthorized(DenyReason::NoToken) => Answer {
            status: 401,
            reason: "Unauthorized",
            headers: [CHALLENGE, NO_STORE, ""],
            body: "",
            length: "0",
        },
        Decision::Unauthorized(_) => Answer {
            status: 401,
            reason: "Unauthorized",
            headers: [CHALLENGE_INVALID, NO_STORE, ""],
            body: "",
            length: "0",
        },
        Decision::Forbidden => Answer {
            status: 403,
            reason: "Forbidden",
            headers: [CHALLENGE_SCOPE, NO_STORE, ""],
            body: "",
            length: "0",
        },
        Decision::Health => Answer {
            status: 200,
            reason: "OK",
            headers: [JSON, "", ""],
            body: "{\"success\":true,\"status\":\"ok\"}",
            length: "30",
        },
        Decision::NotFound => Answer {
            status: 404,
            reason: "Not Found",
            headers: [JSON, "", ""],
            body: "{\"success\":false,\"error\":\"Not found\"}",
            length: "37",
        },
        // The body is the scrape's: see `encode_scrape`.
        Decision::Metrics => Answer {
            status: 200,
            reason: "OK",
            headers: [NO_STORE, "", ""],
            body: "",
            length: "0",
        },
    }
}

/// As raw HTTP/1.1 bytes appended to `out`; `close` says the connection closes
/// after this answer. A scrape's answer is [`encode_scrape`]'s.
pub fn encode(decision: Decision, close: bool, out: &mut Vec<u8>) {
    let a = answer(decision);
    write_head(&a, a.length.as_bytes(), close, out, |out| {
        if let Decision::Subscribe(_, channels) = decision {
            // nginx hands these to the subscriber's channel ids (locations.conf.in).
            out.extend_from_slice(b"\r\nX-Softphone-Session: ");
            out.extend_from_slice(channels.sid());
            out.extend_from_slice(b"\r\nX-Softphone-Expiry: ");
            out.extend_from_slice(itoa::Buffer::new().format(channels.expiry).as_bytes());
        }
    });
    out.extend_from_slice(a.body.as_bytes());
}

/// A scrape's answer: [`Decision::Metrics`]'s head, the encoder's content
/// type, and `text` as the body.
pub fn encode_scrape(text: &str, close: bool, out: &mut Vec<u8>) {
    let a = answer(Decision::Metrics);
    let mut length = itoa::Buffer::new();
    write_head(
        &a,
        length.format(text.len()).as_bytes(),
        close,
        out,
        |out| {
            out.extend_from_slice(b"\r\nContent-Type: ");
            out.extend_from_slice(metrics::CONTENT_TYPE.as_bytes());
        },
    );
    out.extend_from_slice(text.as_bytes());
}

/// The status line and headers of `a`, then what `more` adds, up to the blank
/// line.
fn write_head(
    a: &Answer,
    length: &[u8],
    close: bool,
    out: &mut Vec<u8>,
    more: impl FnOnce(&mut Vec<u8>),
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status_text(a.status).as_bytes());
    out.push(b' ');
    out.extend_from_slice(a.reason.as_bytes());
    out.extend_from_slice(b"\r\nContent-Length: ");
    out.extend_from_slice(length);
    for header in a.headers.iter().filter(|h| !h.is_empty()) {
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(header.as_bytes());
    }
    more(out);
    if close {
        out.extend_from_slice(b"\r\nConnection: close");
    }
    out.extend_from_slice(b"\r\n\r\n");
}

fn status_text(status: u16) -> &'static str {
    match status {
        200 => "200",
        401 => "401",
        403 => "403",
        _ => "404",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_answers_are_well_formed() {
        let mut out = Vec::new();
        encode(Decision::Unauthorized(DenyReason::NoToken), false, &mut out);
        assert_eq!(
            String::from_utf8_lossy(&out),
            "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nWWW-Authenticate: Bearer realm=\"softphone\"\r\nCache-Control: no-store\r\n\r\n"
        );
        for d in [
            Decision::Health,
            Decision::NotFound,
            Decision::Forbidden,
            Decision::Unauthorized(DenyReason::Conflict),
        ] {
            assert_eq!(answer(d).length, answer(d).body.len().to_string());
            let mut out = Vec::new();
            encode(d, true, &mut out);
            let text = String::from_utf8_lossy(&out).into_owned();
            let (head, body) = text.split_once("\r\n\r\n").unwrap();
            assert!(
                head.contains(&format!("Content-Length: {}", body.len())),
                "{text}"
            );
            assert!(head.ends_with("\r\nConnection: close"), "{text}");
        }
    }

    #[test]
    fn a_scrape_is_the_encoders_text_with_its_type() {
        let mut out = Vec::new();
        let body = "# TYPE x gauge\nx 1\n";
        encode_scrape(body, false, &mut out);
        assert_eq!(
            String::from_utf8_lossy(&out),
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nCache-Control: no-store\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\r\n{body}",
                body.len()
            )
        );
    }

    #[test]
    fn subscribers_are_told_their_channels() {
        let identity = crate::identity::Identities::new()
            .get(7, "201", "user")
            .unwrap();
        let channels = crate::decision::Channels::new("AbC-_9", 1_800_000_000).unwrap();
        let mut out = Vec::new();
        encode(Decision::Subscribe(identity, channels), false, &mut out);
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(
            text.ends_with(
                "\r\nX-Softphone-Session: AbC-_9\r\nX-Softphone-Expiry: 1800000000\r\n\r\n"
            ),
            "{text}"
        );
        for sid in ["", "a.b", "a b", "ä", &"a".repeat(33)] {
            assert!(crate::decision::Channels::new(sid, 1).is_none(), "{sid:?}");
        }
    }
}
