//! Answers every user gets alike (the directory, the feature codes): served
//! from memory with a strong `ETag`, so an app polling with `If-None-Match`
//! costs a token check and a string comparison, not a query of the PBX
//! database. Once a listing is [`FRESH_FOR`] old, the next request looks at
//! the database's [`Version`] (a pragma): unchanged, the listing is kept;
//! changed, it is made again (5 000 extensions: about 5 ms). So a change in
//! the PBX reaches the apps within [`FRESH_FOR`], and an app asking now and
//! then on a PBX nobody edits never waits for a remake. When the PBX database
//! cannot be read, the last answer made is served until it can.

use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ring::digest;
use warp::http::{HeaderValue, StatusCode, header};
use warp::reply::Response;

use softphone_shared::users::mikopbx::Version;

use crate::ApiError;

/// How long a listing is served before the database is looked at again.
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

/// One listing, looked at when stale by one request while the others wait.
#[derive(Debug, Default)]
pub struct Cached {
    current: RwLock<Option<Made>>,
    remaking: tokio::sync::Mutex<()>,
}

#[derive(Debug, Clone)]
struct Made {
    /// When it was made or last found unchanged.
    checked: Instant,
    /// The source's version it was made from; `None`: unknown (a source
    /// without versions, or one that could not say), so made again when stale.
    version: Option<Version>,
    listing: Arc<Listing>,
}

impl Cached {
    /// The listing: as it is while younger than [`FRESH_FOR`]; then as it is
    /// if `version` says the source is unchanged since it was made; else made
    /// by `make`.
    pub async fn get<V, VFut, F, Fut>(&self, version: V, make: F) -> Result<Arc<Listing>, ApiError>
    where
        V: FnOnce() -> VFut,
        VFut: Future<Output = Option<Version>>,
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
        // Looked at before making, so a change while making is seen next time.
        let version = version().await;
        if let Some(last) = self.last()
            && version.is_some()
            && last.version == version
        {
            self.set(Some(Made {
                checked: Instant::now(),
                ..last.clone()
            }));
            return Ok(last.listing);
        }
        match make().await {
            Ok(body) => {
                let listing = Arc::new(Listing::new(body));
                self.set(Some(Made {
                    checked: Instant::now(),
                    version,
                    listing: Arc::clone(&listing),
                }));
                Ok(listing)
            }
            // The cause was logged where it happened; the last listing is
            // better than none, and is tried again next time.
            Err(e) => self.last().map(|last| last.listing).ok_or(e),
        }
    }

    /// Forgets the listing (a reload may have changed what it is made of).
    pub fn clear(&self) {
        self.set(None);
    }

    fn fresh(&self) -> Option<Arc<Listing>> {
        self.last()
            .filter(|made| made.checked.elapsed() < FRESH_FOR)
            .map(|made| made.listing)
    }

    fn last(&self) -> Option<Made> {
        let current = self.current.read().unwrap_or_else(|p| p.into_inner());
        current.clone()
    }

    fn set(&self, value: Option<Made>) {
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

    /// Makes the stored listing stale, as if made [`FRESH_FOR`] ago.
    fn age(cached: &Cached) {
        let mut current = cached.current.write().unwrap();
        let made = current.as_mut().unwrap();
        made.checked -= FRESH_FOR;
    }

    #[tokio::test]
    async fn a_stale_listing_is_remade_only_when_its_source_changed() {
        use softphone_shared::users::mikopbx::PbxDatabase;
        use softphone_testkit::mikopbx;
        use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

        let dir = softphone_testkit::TestDir::new("listing-versions");
        let path = dir.path().join("mikopbx.db");
        mikopbx::create(
            &path,
            &mikopbx::enabled_peers(&mikopbx::numbered(201, 2), true),
        );
        let pbx = PbxDatabase::new(&path);
        let version = || async { pbx.version().ok() };
        let cached = Cached::default();
        let made = AtomicUsize::new(0);
        let make = || async {
            made.fetch_add(1, Relaxed);
            Ok(b"{}".to_vec())
        };

        let first = cached.get(version, make).await.unwrap();
        let fresh = cached.get(version, make).await.unwrap();
        assert!(Arc::ptr_eq(&first, &fresh));
        assert_eq!(made.load(Relaxed), 1);

        // Stale, the PBX unchanged: kept, and fresh again.
        age(&cached);
        let kept = cached.get(version, make).await.unwrap();
        assert!(Arc::ptr_eq(&first, &kept));
        assert_eq!(made.load(Relaxed), 1);
        assert!(cached.fresh().is_some());

        // Stale after a commit of another connection (the PBX's web
        // interface): made again.
        mikopbx::set_setting(&path, "PBXFeaturePickupExten", "*9");
        assert_eq!(made.load(Relaxed), 1, "fresh listings are not looked at");
        age(&cached);
        let remade = cached.get(version, make).await.unwrap();
        assert_eq!(made.load(Relaxed), 2);
        assert!(!Arc::ptr_eq(&first, &remade));

        // A source that cannot say its version: made again whenever stale.
        age(&cached);
        cached.get(|| async { None }, make).await.unwrap();
        age(&cached);
        cached.get(|| async { None }, make).await.unwrap();
        assert_eq!(made.load(Relaxed), 4);
    }

    #[tokio::test]
    async fn a_listing_is_kept_when_remaking_fails() {
        let cached = Cached::default();
        let unknown = || async { None };
        let first = cached
            .get(unknown, || async { Ok(b"{}".to_vec()) })
            .await
            .unwrap();
        age(&cached);
        let kept = cached
            .get(unknown, || async { Err(ApiError::Internal) })
            .await
            .unwrap();
        assert!(Arc::ptr_eq(&first, &kept));
        cached.clear();
        assert_eq!(
            cached
                .get(unknown, || async { Err(ApiError::Internal) })
                .await
                .unwrap_err(),
            ApiError::Internal
        );
    }
}
