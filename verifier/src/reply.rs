//! The one table from decisions to HTTP. On its auth paths the verifier answers
//! only 200, 401 or 403: nginx turns anything else into a 500 for the app, and
//! nchan takes a 3xx as "allowed".

use may_minihttp::Response;

use crate::decision::{Decision, DenyReason};

const CHALLENGE: &str = "WWW-Authenticate: Bearer realm=\"softphone\"";
const CHALLENGE_INVALID: &str =
    "WWW-Authenticate: Bearer realm=\"softphone\", error=\"invalid_token\"";
const CHALLENGE_SCOPE: &str =
    "WWW-Authenticate: Bearer realm=\"softphone\", error=\"insufficient_scope\"";
const NO_STORE: &str = "Cache-Control: no-store";
const JSON: &str = "Content-Type: application/json";

pub fn write(decision: Decision, rsp: &mut Response<'_>) {
    match decision {
        Decision::Allow(identity) => {
            rsp.header(identity.user_id)
                .header(identity.username)
                .header(identity.role);
        }
        // RFC 6750 §3.1: no error code when the request carried no credentials.
        Decision::Unauthorized(DenyReason::NoToken) => {
            rsp.status_code(401, "Unauthorized")
                .header(CHALLENGE)
                .header(NO_STORE);
        }
        Decision::Unauthorized(_) => {
            rsp.status_code(401, "Unauthorized")
                .header(CHALLENGE_INVALID)
                .header(NO_STORE);
        }
        Decision::Forbidden => {
            rsp.status_code(403, "Forbidden")
                .header(CHALLENGE_SCOPE)
                .header(NO_STORE);
        }
        Decision::Health => {
            rsp.header(JSON)
                .body("{\"success\":true,\"status\":\"ok\"}");
        }
        Decision::NotFound => {
            rsp.status_code(404, "Not Found")
                .header(JSON)
                .body("{\"success\":false,\"error\":\"Not found\"}");
        }
    }
}
