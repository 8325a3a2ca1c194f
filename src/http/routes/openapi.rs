//! The OpenAPI 3.1 document, generated from the handlers' annotations and types.

use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::signature::{SIGNATURE_HEADER, TIMESTAMP_HEADER};

/// The document's fixed parts; paths and schemas are added by the routers.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "DailyReps backup API",
        description = "Anonymous accounts and JSON backups for the DailyReps app. Every /api route except \
                       this document needs the app signature (X-DailyReps-Timestamp, X-DailyReps-Signature); \
                       all but POST /api/users also need the account's bearer token."
    ),
    modifiers(&SecuritySchemes),
    tags(
        (name = "users", description = "anonymous accounts"),
        (name = "backups", description = "backup documents"),
        (name = "operations", description = "health and readiness"),
    )
)]
pub struct ApiDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("drb_…").build()),
        );
        let header = |name: &str, description: &str| {
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(name, description)))
        };
        components.add_security_scheme(
            "signature",
            header(SIGNATURE_HEADER, "v1=<hex HMAC-SHA256(secret, \"v1\\n\" + timestamp + \"\\n\" + METHOD + \"\\n\" + path_and_query + \"\\n\" + hex(SHA-256(body)))>"),
        );
        components.add_security_scheme(
            "timestamp",
            header(TIMESTAMP_HEADER, "unix seconds, within 300 s of the server's clock"),
        );
    }
}
