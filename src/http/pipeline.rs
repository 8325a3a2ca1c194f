//! The `/api/*` request pipeline, one named layer per job, in the order a request meets them:
//!
//! 1. [`admission`](super::admission): the client's rate, then the caller's bearer token and
//!    its rate (applied once, at the root);
//! 2. [`body`](super::body): the body read within the route group's [`BodyLimit`], the memory
//!    budget and a minimum rate (a route taking a document needs a known account first);
//! 3. [`signed`](super::signed): the app signature over the raw bytes;
//! 4. [`deadline`](super::deadline): the handler's time limit.
//!
//! Each route module mounts its groups with [`signed`], declaring there how large their bodies
//! may be; a test checks that every `/api` route refuses an unsigned request.

use axum::middleware;
use utoipa_axum::router::OpenApiRouter;

use super::body::BodyLimit;
use super::state::AppState;
use super::{body, deadline, signed as signature};

/// `routes` behind steps 2–4, taking bodies of at most `limit`.
pub fn signed(routes: OpenApiRouter<AppState>, state: &AppState, limit: BodyLimit) -> OpenApiRouter<AppState> {
    // The last layer added runs first.
    routes
        .layer(middleware::from_fn_with_state(state.clone(), deadline::middleware))
        .layer(middleware::from_fn_with_state(state.clone(), signature::middleware))
        .layer(middleware::from_fn_with_state((state.clone(), limit), body::middleware))
}
