//! `GET users` (the PBX directory) and `GET features` (its feature codes):
//! the same answer for every user, from the configured source, served through
//! a [`Cached`](crate::listing::Cached) listing with its `ETag`.

use std::sync::Arc;

use serde::Serialize;
use softphone_shared::features::Features;
use softphone_shared::token::PAYLOAD_BUF;
use softphone_shared::users::mikopbx::Version;
use softphone_shared::users::{DirectoryEntry, builtin};
use warp::reply::Response;

use crate::ApiError;
use crate::handlers::{Meta, authorize};
use crate::state::App;

pub async fn users(app: Arc<App>, meta: Meta) -> Result<Response, ApiError> {
    let mut buf = [0u8; PAYLOAD_BUF];
    authorize(&app, &meta, &mut buf).await?;
    let listing = app
        .directory()
        .get(
            || pbx_version(&app),
            || async {
                let users = match app.pbx() {
                    Some(pbx) => app.read_pbx(move || pbx.listings.directory()).await?,
                    None => app.read(|store| builtin::directory(store)).await?,
                };
                body(&Users {
                    success: true,
                    users: &users,
                })
            },
        )
        .await?;
    Ok(listing.respond(meta.if_none_match.as_ref()))
}

pub async fn features(app: Arc<App>, meta: Meta) -> Result<Response, ApiError> {
    let mut buf = [0u8; PAYLOAD_BUF];
    authorize(&app, &meta, &mut buf).await?;
    let listing = app
        .features()
        .get(
            || pbx_version(&app),
            || async {
                let configured = Features::from_config(&app.config());
                let features = match app.pbx() {
                    Some(pbx) => {
                        app.read_pbx(move || pbx.listings.features(&configured))
                            .await?
                    }
                    None => configured,
                };
                body(&FeatureCodes {
                    success: true,
                    features: &features,
                })
            },
        )
        .await?;
    Ok(listing.respond(meta.if_none_match.as_ref()))
}

/// The PBX database's version, for a listing made from it; `None` (made
/// again whenever stale) for the `builtin` source, or when it cannot be read.
async fn pbx_version(app: &App) -> Option<Version> {
    let pbx = app.pbx()?;
    app.read_pbx(move || pbx.listings.version()).await.ok()
}

#[derive(Serialize)]
struct Users<'a> {
    success: bool,
    users: &'a [DirectoryEntry],
}

#[derive(Serialize)]
struct FeatureCodes<'a> {
    success: bool,
    features: &'a Features,
}

fn body(value: &impl Serialize) -> Result<Vec<u8>, ApiError> {
    serde_json::to_vec(value).map_err(|_| ApiError::Internal)
}
