//! Answers every user gets alike (the directory, the feature codes): made at
//! most once per [`FRESH_FOR`] and served from memory with a strong `ETag`, so
//! an app polling with `If-None-Match` costs a token check and a string
//! comparison, not a query of the PBX database. A change in the PBX reaches
//! the apps within [`FRESH_FOR`]. When the PBX database cannot be read, the
//! last answer made is served until it can.

use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ring::digest;
use warp::http::{HeaderValue, StatusCode, header};
use warp::reply::Response;

use crate::ApiError;

/// How long a listing is served before it is made again.
pub const FRESH_FOR: Duration = Duration::from_secs(1);

/// A made answer: its JSON body and the entity tag of exactly those bytes.
#[derive(Debug)]
pub struct Listing {
    body: Bytes,
    etag: HeaderValue,
}

impl Listing {
    pub fn new(body: Vec<u8>) -> Listing {
        let hash = digest::digest(&digest::SHA256, &body);
        let mut tag = String::with_capacity(34);
        tag.push('"');
        for b in &hash.as_ref()[..16] {
            tag.push(char::from(HEX[usize::from(b >> 4)]));
            tag.push(char::from(HEX[usize::from(b & 0xf)]));
        }
        tag.push('"');
        Listing {
            body: Bytes::from(body),
            // Quotes and hex digits only: always a valid header value.
            etag: HeaderValue::from_str(&tag).unwrap_or(HeaderValue::from_static("\"\"")),
        }
    }

    /// 304 when `if_none_match` names this listing, else 200 with the body.
    /// Either way the app may keep it but must ask again before using it
    /// (`no-cache`), and no shared cache may keep it (`private`).
    pub fn respond(&self, if_none_match: Option<&HeaderValue>) -> Response {
        let unchanged = if_none_match.is_some_and(|v| matches(v.as_bytes(), self.etag.as_bytes()));
        let mut response = if unchanged {
            let mut r = Response::new(Bytes::new().into());
            *r.status_mut() = StatusCode::NOT_MODIFIED;
            r
        } else {
            let mut r = Response::new(self.body.clone().into());
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            r
        };
        let headers = response.headers_mut();
        headers.insert(header::ETAG, self.etag.clone());
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("private, no-cache"),
        );
        response
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// `If-None-Match` (RFC 9110 §13.1.2): `*`, or a list of entity tags of which
/// one equals ours by the weak comparison (a `W/` prefix is ignored).
fn matches(header: &[u8], etag: &[u8]) -> bool {
    header.split(|&b| b == b',').any(|candidate| {
        let candidate = candidate.trim_ascii();
        candidate == b"*" || candidate.strip_prefix(b"W/").unwrap_or(candidate) == etag
    })
}

/// One listing, remade when stale by one request while the others wait for it.
#[derive(Debug, Default)]
pub struct Cached {
    current: RwLock<Option<(Instant, Arc<Listing>)>>,
    remaking: tokio::sync::Mutex<()>,
}

impl Cached {
    /// The listing, made by `make` when there is none younger than
    /// [`FRESH_FOR`].
    pub async fn get<F, Fut>(&self, make: F) -> Result<Arc<Listing>, ApiError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Vec<u8>, ApiError>>,
    {
        if let Some(fresh) = self.fresh() {
            return Ok(fresh);
        }
        let _one_at_a_time = self.remaking.lock().await;
        if let Some(fresh) = self.fresh() {
            return Ok(fresh);
        }
        match make().await {
            Ok(body) => {
                let listing = Arc::new(Listing::new(body));
                self.set(Some((Instant::now(), Arc::clone(&listing))));
                Ok(listing)
            }
            // The cause was logged where it happened; the last listing is
            // better than none, and is tried again next time.
            Err(e) => self.last().ok_or(e),
        }
    }

    /// Forgets the listing (a reload may have changed what it is made of).
    pub fn clear(&self) {
        self.set(None);
    }

    fn fresh(&self) -> Option<Arc<Listing>> {
        let current = self.current.read().unwrap_or_else(|p| p.into_inner());
        current
            .as_ref()
            .filter(|(made, _)| made.elapsed() < FRESH_FOR)
            .map(|(_, listing)| Arc::clone(listing))
    }

    fn last(&self) -> Option<Arc<Listing>> {
        let current = self.current.read().unwrap_or_else(|p| p.into_inner());
        current.as_ref().map(|(_, listing)| Arc::clone(listing))
    }

    fn set(&self, value: Option<(Instant, Arc<Listing>)>) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = value;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match_compares_weakly_and_accepts_lists_and_star() {
        let listing = Listing::new(br#"{"success":true}"#.to_vec());
        let etag = listing.etag.to_str().unwrap().to_owned();
        assert_eq!(etag.len(), 34);
        assert!(etag.starts_with('"') && etag.ends_with('"'));
        for header in [
            etag.clone(),
            format!("W/{etag}"),
            format!("\"x\", {etag}"),
            format!(" {etag} ,\"y\""),
            "*".to_owned(),
        ] {
            let r = listing.respond(Some(&HeaderValue::from_str(&header).unwrap()));
            assert_eq!(r.status(), StatusCode::NOT_MODIFIED, "{header}");
        }
        for header in ["\"x\"", &etag[1..], "", "W/", &etag.to_uppercase()] {
            let r = listing.respond(Some(&HeaderValue::from_str(header).unwrap()));
            assert_eq!(r.status(), StatusCode::OK, "{header}");
        }
        let r = listing.respond(None);
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[header::ETAG], etag.as_str());
        // A different body, a different tag.
        assert_ne!(
            Listing::new(br#"{"success":false}"#.to_vec()).etag,
            listing.etag
        );
    }

    #[tokio::test]
    async fn a_listing_is_made_once_while_fresh_and_kept_when_remaking_fails() {
        let cached = Cached::default();
        let made = std::sync::atomic::AtomicUsize::new(0);
        let make = || async {
            made.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok(b"{}".to_vec())
        };
        let first = cached.get(make).await.unwrap();
        let again = cached.get(make).await.unwrap();
        assert!(Arc::ptr_eq(&first, &again));
        assert_eq!(made.load(std::sync::atomic::Ordering::Relaxed), 1);
        cached.set(Some((Instant::now() - FRESH_FOR, Arc::clone(&first))));
        let kept = cached
            .get(|| async { Err(ApiError::Internal) })
            .await
            .unwrap();
        assert!(Arc::ptr_eq(&first, &kept));
        cached.clear();
        assert_eq!(
            cached
                .get(|| async { Err(ApiError::Internal) })
                .await
                .unwrap_err(),
            ApiError::Internal
        );
    }
}
