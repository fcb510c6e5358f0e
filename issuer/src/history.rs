//! `GET history?date=YYYY-MM-DD`: the calling user's own calls of one day
//! (today in the PBX's local time by default), newest first, from MikoPBX's
//! call records ([`softphone_shared::calls`]). The extension is the token's
//! username and nothing else: no parameter can name another user's calls.

use std::sync::Arc;

use serde::Serialize;
use softphone_shared::calls::{self, Call, Day};
use softphone_shared::recordings::Recordings;
use softphone_shared::token::PAYLOAD_BUF;
use warp::http::StatusCode;
use warp::reply::Response;

use crate::ApiError;
use crate::error::json_response;
use crate::handlers::{Meta, authorize};
use crate::state::{App, blocking};

/// Calls per answer at most; a day with more leaves out the oldest and says
/// `"truncated":true`.
pub const MAX_CALLS: usize = 1000;

pub async fn history(app: Arc<App>, meta: Meta, query: String) -> Result<Response, ApiError> {
    let mut buf = [0u8; PAYLOAD_BUF];
    let claims = authorize(&app, &meta, &mut buf).await?;
    let day = date_of(&query)?;
    let extension = claims.username.to_owned();
    let recordings_dir = app.config().recordings_dir();
    let history = match app.calls() {
        Some(cdr) => {
            app.read_pbx(move || {
                let recordings = Recordings::new(&recordings_dir);
                calls::history(&cdr, &extension, day, MAX_CALLS, &recordings)
            })
            .await?
        }
        // No call records configured (the `builtin` source's default): no calls.
        None => calls::History {
            day: match day {
                Some(day) => day,
                None => blocking(Day::today_here).await?,
            },
            calls: Vec::new(),
            truncated: false,
        },
    };

    #[derive(Serialize)]
    struct Body<'a> {
        success: bool,
        date: String,
        calls: &'a [Call],
        truncated: bool,
    }
    Ok(json_response(
        StatusCode::OK,
        &Body {
            success: true,
            date: history.day.to_string(),
            calls: &history.calls,
            truncated: history.truncated,
        },
    ))
}

/// The `date` parameter of the raw query string, if given. Other parameters
/// are ignored (an app may add a cache buster); `date` must be exactly
/// `YYYY-MM-DD`, once.
fn date_of(query: &str) -> Result<Option<Day>, ApiError> {
    let mut found = None;
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if key == "date" {
            let day = Day::parse(value).ok_or(ApiError::BadDate)?;
            if found.replace(day).is_some() {
                return Err(ApiError::BadDate);
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_date_parameter_is_one_exact_day() {
        assert_eq!(date_of(""), Ok(None));
        assert_eq!(date_of("_=123&x"), Ok(None));
        assert_eq!(
            date_of("date=2024-01-15").unwrap().unwrap().to_string(),
            "2024-01-15"
        );
        assert_eq!(
            date_of("x=1&date=2024-01-15&y")
                .unwrap()
                .unwrap()
                .to_string(),
            "2024-01-15"
        );
        for bad in [
            "date",
            "date=",
            "date=2024-1-15",
            "date=2024-01-15&date=2024-01-16",
            "date=2024-01-15&date=2024-01-15",
            "date=2024%2D01%2D15",
            "date=2023-02-29",
            "date=today",
        ] {
            assert_eq!(date_of(bad), Err(ApiError::BadDate), "{bad}");
        }
    }
}
