//! Forged and mangled tokens for the attack suites (at the daemons directly and
//! through nginx): each must be refused with 401 or 403, never 2xx or 5xx; and
//! an expired copy of a real token for the soak and the bench's mix.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;
use softphone_shared::keyfile;
use softphone_shared::token::{self, Claims, PAYLOAD_BUF, Validation};

pub struct Forge {
    /// The HMAC key: the key file's text.
    pub key: Vec<u8>,
    /// A live session's id.
    pub sid: String,
    /// The clock the claims are made at.
    pub now: i64,
}

impl Forge {
    /// A forge with the daemons' key, for the session of `access`.
    pub fn for_session(daemons: &crate::Daemons, access: &str) -> Forge {
        let payload = access.split('.').nth(1).unwrap();
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        Forge {
            key: std::fs::read_to_string(daemons.key_file())
                .unwrap()
                .trim()
                .as_bytes()
                .to_vec(),
            sid: claims["sid"].as_str().unwrap().to_owned(),
            now: claims["iat"].as_i64().unwrap(),
        }
    }

    /// A valid access token of the session, as the issuer would make it (no kid).
    pub fn valid(&self) -> String {
        self.hs256(
            H,
            &self.claims(&format!(r#","exp":{},"type":"access""#, self.now + 600)),
        )
    }

    pub fn sign(&self, algorithm: hmac::Algorithm, header: &str, payload: &str) -> String {
        let mut out = URL_SAFE_NO_PAD.encode(header);
        out.push('.');
        out.push_str(&URL_SAFE_NO_PAD.encode(payload));
        let tag = hmac::sign(&hmac::Key::new(algorithm, &self.key), out.as_bytes());
        out.push('.');
        out.push_str(&URL_SAFE_NO_PAD.encode(tag.as_ref()));
        out
    }

    pub fn hs256(&self, header: &str, payload: &str) -> String {
        self.sign(hmac::HMAC_SHA256, header, payload)
    }

    /// Valid claims for a live session, with `field` spliced in at the end.
    pub fn claims(&self, fields: &str) -> String {
        format!(
            r#"{{"sub":1,"username":"201","role":"user","iat":{},"sid":"{}","jti":"x"{fields}}}"#,
            self.now, self.sid
        )
    }
}

/// `access` with the same claims, issued two hours ago and expired for one,
/// signed with the current key of `key_file`: the issuer never hands out such a
/// token.
pub fn expired_copy(key_file: &Path, access: &str) -> String {
    let keys = keyfile::load(key_file).unwrap();
    let now = softphone_shared::unix_now();
    let mut buf = [0u8; PAYLOAD_BUF];
    let claims = token::verify(access, &keys, Validation { now, leeway: 30 }, &mut buf)
        .unwrap()
        .claims;
    let old = Claims {
        iat: now - 7200,
        exp: now - 3600,
        ..claims
    };
    token::sign(&old, keys.current())
}

pub const H: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

/// Every forged or mangled token of the attack suite, with why it must fail.
pub fn forged(f: &Forge) -> Vec<(String, String)> {
    let exp = f.now + 600;
    let ok = |extra: &str| f.claims(&format!(r#","exp":{exp},"type":"access"{extra}"#));
    let mut cases: Vec<(String, String)> = Vec::new();
    let mut add = |why: &str, token: String| cases.push((why.to_owned(), token));
    for alg in ["none", "None", "NONE", "nOnE"] {
        let header = format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#);
        add(
            &format!("alg {alg}, unsigned"),
            format!(
                "{}.{}.",
                URL_SAFE_NO_PAD.encode(&header),
                URL_SAFE_NO_PAD.encode(ok(""))
            ),
        );
        add(&format!("alg {alg}, signed"), f.hs256(&header, &ok("")));
    }
    add(
        "HS384 with our key",
        f.sign(hmac::HMAC_SHA384, r#"{"alg":"HS384","typ":"JWT"}"#, &ok("")),
    );
    add(
        "HS512 with our key",
        f.sign(hmac::HMAC_SHA512, r#"{"alg":"HS512","typ":"JWT"}"#, &ok("")),
    );
    add(
        "HS512 signature under an HS256 header",
        f.sign(hmac::HMAC_SHA512, H, &ok("")),
    );
    for alg in ["RS256", "ES256"] {
        add(
            alg,
            f.hs256(&format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#), &ok("")),
        );
    }
    for extra in [
        r#","jwk":{"kty":"oct","k":"AAAA"}"#,
        r#","jku":"http://127.0.0.1:1/keys""#,
        r#","x5u":"http://127.0.0.1:1/cert""#,
        r#","kid":"/etc/passwd""#,
        r#","kid":"' OR 1=1 --""#,
        r#","crit":["exp"]"#,
        r#","alg":"none""#,
        r#","alg":"HS256""#,
        r#","typ":"JWT""#,
    ] {
        add(
            extra,
            f.hs256(&format!(r#"{{"alg":"HS256","typ":"JWT"{extra}}}"#), &ok("")),
        );
    }
    for (why, fields) in [
        ("exp string", format!(r#","exp":"{exp}","type":"access""#)),
        ("exp float", format!(r#","exp":{exp}.5,"type":"access""#)),
        ("exp negative", r#","exp":-1,"type":"access""#.to_owned()),
        (
            "exp 2^64",
            r#","exp":18446744073709551616,"type":"access""#.to_owned(),
        ),
        ("exp null", r#","exp":null,"type":"access""#.to_owned()),
        ("exp array", format!(r#","exp":[{exp}],"type":"access""#)),
        (
            "nbf string",
            format!(r#","exp":{exp},"nbf":"0","type":"access""#),
        ),
        (
            "nbf future",
            format!(r#","exp":{exp},"nbf":{},"type":"access""#, f.now + 3600),
        ),
        ("type missing", format!(r#","exp":{exp}"#)),
        ("type uppercase", format!(r#","exp":{exp},"type":"ACCESS""#)),
        ("type padded", format!(r#","exp":{exp},"type":"access ""#)),
        ("type array", format!(r#","exp":{exp},"type":["access"]"#)),
        (
            "duplicate exp",
            format!(r#","exp":1,"exp":{exp},"type":"access""#),
        ),
        (
            "duplicate type",
            format!(r#","exp":{exp},"type":"refresh","type":"access""#),
        ),
    ] {
        add(why, f.hs256(H, &f.claims(&fields)));
    }
    // `iat` is part of the base claims: splice variants in its place.
    let base = f.claims(&format!(r#","exp":{exp},"type":"access""#));
    let iat_field = format!(r#""iat":{}"#, f.now);
    for (why, iat) in [
        ("iat string", format!(r#""{}""#, f.now)),
        ("iat float", format!("{}.5", f.now)),
        ("iat negative", "-1".to_owned()),
        ("iat 2^64", "18446744073709551616".to_owned()),
        ("iat null", "null".to_owned()),
        ("iat array", format!("[{}]", f.now)),
        ("iat in the future", format!("{}", f.now + 120)),
        ("iat after exp", format!("{}", exp + 1)),
    ] {
        let claims = base.replace(&iat_field, &format!(r#""iat":{iat}"#));
        add(why, f.hs256(H, &claims));
    }
    add(
        "unknown session",
        f.hs256(H, &ok("").replace(&f.sid, "no-such-session")),
    );
    let valid = f.hs256(H, &ok(""));
    let (h, rest) = valid.split_once('.').unwrap();
    let (p, s) = rest.split_once('.').unwrap();
    add("signature truncated", format!("{h}.{p}.{}", &s[..20]));
    add("signature empty", format!("{h}.{p}."));
    add("1 segment", h.to_owned());
    add("2 segments", format!("{h}.{p}"));
    add("4 segments", format!("{h}.{p}.{s}.{s}"));
    add("5 segments", format!("{h}.{p}.{s}.{s}.{s}"));
    add("padding", format!("{h}.{p}.{s}="));
    add("non-canonical trailing bits", non_canonical(&valid));
    add("8 KB", "a".repeat(8 * 1024));
    add("64 KB", format!("{h}.{}.{s}", "a".repeat(64 * 1024)));
    cases
}

/// The same token with the signature's unused trailing bits set: it decodes to
/// the same bytes with a lenient decoder, and must be refused by a strict one.
pub fn non_canonical(token: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bytes = token.as_bytes().to_vec();
    let last = bytes.last_mut().unwrap();
    // 32 bytes are 43 characters: the last carries 4 bits and 2 unused ones.
    let value = ALPHABET.iter().position(|c| c == last).unwrap();
    *last = ALPHABET[value | 0b11];
    assert_ne!(bytes, token.as_bytes(), "already non-canonical");
    String::from_utf8(bytes).unwrap()
}
