//! Forged and mangled tokens against the real verifier and issuer: every one ends
//! in 401 or 403, never a 2xx or a 5xx, and the next valid request still works.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;
use softphone_testkit::{BASE, CHECK, Daemons, request};

use crate::{PASSWORD, USER};

struct Forge {
    key: Vec<u8>,
    sid: String,
    now: i64,
}

impl Forge {
    fn sign(&self, algorithm: hmac::Algorithm, header: &str, payload: &str) -> String {
        let mut out = URL_SAFE_NO_PAD.encode(header);
        out.push('.');
        out.push_str(&URL_SAFE_NO_PAD.encode(payload));
        let tag = hmac::sign(&hmac::Key::new(algorithm, &self.key), out.as_bytes());
        out.push('.');
        out.push_str(&URL_SAFE_NO_PAD.encode(tag.as_ref()));
        out
    }

    fn hs256(&self, header: &str, payload: &str) -> String {
        self.sign(hmac::HMAC_SHA256, header, payload)
    }

    /// Valid claims for a live session, with `field` spliced in at the end.
    fn claims(&self, fields: &str) -> String {
        format!(
            r#"{{"sub":1,"username":"201","role":"user","iat":{},"sid":"{}","jti":"x"{fields}}}"#,
            self.now, self.sid
        )
    }
}

const H: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

fn forged(f: &Forge) -> Vec<(String, String)> {
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
    add("8 KB", "a".repeat(8 * 1024));
    add("64 KB", format!("{h}.{}.{s}", "a".repeat(64 * 1024)));
    cases
}

#[test]
fn forged_tokens_never_pass_and_never_break_anything() {
    let d = Daemons::start("attacks");
    d.add_user(USER, PASSWORD);
    let (access, _) = d.tokens(USER, PASSWORD);
    let mut buf = [0u8; 4096];
    let payload = access.split('.').nth(1).unwrap();
    let n = URL_SAFE_NO_PAD.decode_slice(payload, &mut buf).unwrap();
    let claims: serde_json::Value = serde_json::from_slice(&buf[..n]).unwrap();
    let forge = Forge {
        key: std::fs::read_to_string(d.data_dir().join("db/secret.key"))
            .unwrap()
            .trim()
            .as_bytes()
            .to_vec(),
        sid: claims["sid"].as_str().unwrap().to_owned(),
        now: claims["iat"].as_i64().unwrap(),
    };
    // Sanity: the forge makes valid tokens when nothing is wrong.
    let control = forge.hs256(
        H,
        &forge.claims(&format!(r#","exp":{},"type":"access""#, forge.now + 600)),
    );
    assert_eq!(d.check(Some(&control)).status, 200);

    let cases = forged(&forge);
    for (why, token) in &cases {
        let bearer = format!("Bearer {token}");
        for (place, status) in [
            ("verifier header", d.check(Some(token)).status),
            (
                "verifier query",
                request(
                    d.verifier,
                    "GET",
                    &format!("{CHECK}?authorization={token}"),
                    &[],
                    b"",
                )
                .status,
            ),
            (
                "issuer profile",
                request(
                    d.issuer,
                    "GET",
                    &format!("{BASE}/profile"),
                    &[("Authorization", &bearer)],
                    b"",
                )
                .status,
            ),
            (
                "issuer refresh",
                request(
                    d.issuer,
                    "POST",
                    &format!("{BASE}/auth/refresh"),
                    &[("Authorization", &bearer)],
                    b"",
                )
                .status,
            ),
            (
                "issuer logout",
                request(
                    d.issuer,
                    "POST",
                    &format!("{BASE}/auth/logout"),
                    &[("Authorization", &bearer)],
                    b"",
                )
                .status,
            ),
        ] {
            assert!(
                matches!(status, 400 | 401 | 403 | 431),
                "{why} at {place}: {status}"
            );
        }
    }
    // A megabyte token, then the ones that are fine still are.
    let huge = format!("Bearer {}", "a".repeat(1024 * 1024));
    let r = request(d.verifier, "GET", CHECK, &[("Authorization", &huge)], b"");
    assert_eq!(r.status, 401);
    assert_eq!(d.check(Some(&access)).status, 200);
    assert_eq!(d.issuer_get("/profile", Some(&access)).status, 200);
    eprintln!("{} forged tokens tried at 5 places each", cases.len());
    d.assert_logs_clean(&[PASSWORD]);
}
