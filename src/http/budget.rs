//! The memory budget: what request bodies and documents in flight may hold together, and the
//! only place that knows how many copies of a document each step holds.
//!
//! The server lives in 256 MB. Rather than growing until the kernel kills it, a request that
//! would take the budget past its size is answered 503 with `Retry-After`. No one client may
//! hold more than a share of it with bodies still arriving, so sockets that trickle bodies in
//! (or never finish them) cannot starve everyone else.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::document::{self, DocumentError, Encoding};

/// Bytes per permit: the budget is counted in KiB so a large budget fits the semaphore.
const UNIT: usize = 1024;
/// A gzip body of a tiny document is a little larger than the document.
pub const GZIP_OVERHEAD: usize = 64 * 1024;
/// Every body but a backup document's is empty or a small JSON object.
pub const SMALL_BODY_LIMIT: usize = 64 * 1024;
/// An upload, once its body is in, also has the database driver's two copies of what it sends
/// in flight (the statement's arguments, then the connection's write buffer): the chunks its
/// user has not stored, at most the whole document.
const DRIVER_COPIES: usize = 2;
/// A download holds the row in the connection's read buffer and the document decoded from it,
/// until the buffer is given back; then only the document, until it is sent.
const DOWNLOAD_COPIES: usize = 2;
/// JSON usually compresses 5–20×; a first decode is allowed this ratio before the full limit
/// is held, so an ordinary gzip upload does not hold the whole maximum of the budget.
const EXPECTED_GZIP_RATIO: usize = 32;
/// The share of the budget one client address may hold with bodies, as a fraction.
const CLIENT_SHARE_DIVISOR: usize = 4;

/// The largest body a route takes, declared where the route is mounted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyLimit {
    /// [`SMALL_BODY_LIMIT`].
    Small,
    /// A backup document: `MAX_BACKUP_BYTES` decoded, a little more gzip-encoded.
    Document,
}

impl BodyLimit {
    /// The limit in bytes, for documents of at most `max_document` bytes.
    pub fn bytes(self, max_document: usize) -> usize {
        match self {
            Self::Small => SMALL_BODY_LIMIT,
            Self::Document => max_document + GZIP_OVERHEAD,
        }
    }
}

/// The most one upload of a `max_document`-byte document holds at once, whatever its encoding:
/// its body (gzip: up to the limit), the decoded document, and the driver's copies.
pub fn max_upload_holding(max_document: usize) -> usize {
    BodyLimit::Document.bytes(max_document) + max_document + DRIVER_COPIES * max_document
}

/// KiB each client address holds with bodies now; an address holding nothing is not listed.
type ByClient = Arc<Mutex<HashMap<IpAddr, usize>>>;

/// A shared byte budget.
#[derive(Debug, Clone)]
pub struct MemoryBudget {
    permits: Arc<Semaphore>,
    total_units: usize,
    client_share_units: usize,
    by_client: ByClient,
}

/// Bytes held from the budget until dropped.
#[derive(Debug)]
pub struct Held {
    permit: OwnedSemaphorePermit,
    /// The client whose share this counts against, for bodies.
    client: Option<(ByClient, IpAddr)>,
}

impl Held {
    /// Gives back all but `bytes` of what is held.
    fn keep_only(&mut self, bytes: usize) {
        let keep = units(bytes).max(1);
        if let Some(excess) = self.permit.num_permits().checked_sub(keep).filter(|n| *n > 0) {
            drop(self.permit.split(excess));
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some((by_client, client)) = &self.client {
            let mut by_client = by_client.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(held) = by_client.get_mut(client) {
                *held = held.saturating_sub(self.permit.num_permits());
                if *held == 0 {
                    by_client.remove(client);
                }
            }
        }
    }
}

fn units(bytes: usize) -> usize {
    bytes.div_ceil(UNIT)
}

/// A document decoded within the budget.
pub struct Decoded {
    /// The document's bytes.
    pub bytes: Bytes,
    _held: Option<Held>,
}

/// A chunk of a document, each holding the document's room until the response that carries
/// them has sent (or dropped) the last.
struct HeldChunk {
    chunk: String,
    _held: Arc<Held>,
}

impl AsRef<[u8]> for HeldChunk {
    fn as_ref(&self) -> &[u8] {
        self.chunk.as_bytes()
    }
}

/// Why a decode could not go ahead.
#[derive(Debug)]
pub enum DecodeError {
    /// The budget has no room now.
    Busy,
    /// The body is not an acceptable document.
    Document(DocumentError),
}

impl MemoryBudget {
    /// A budget of `total` bytes, of which one client may hold at most `client_share` with
    /// bodies.
    pub fn new(total: usize, client_share: usize) -> Self {
        let total_units = units(total).min(Semaphore::MAX_PERMITS);
        Self {
            permits: Arc::new(Semaphore::new(total_units)),
            total_units,
            client_share_units: units(client_share),
            by_client: Arc::default(),
        }
    }

    /// The budget for documents of at most `max_document` bytes: a client may hold a quarter
    /// of it with bodies, and never less than one body of the largest size.
    pub fn for_documents(total: usize, max_document: usize) -> Self {
        Self::new(total, (total / CLIENT_SHARE_DIVISOR).max(BodyLimit::Document.bytes(max_document)))
    }

    /// Holds `bytes`, or `None` when they are not free now.
    fn hold(&self, bytes: usize) -> Option<Held> {
        let units = u32::try_from(units(bytes).max(1)).ok()?;
        if units as usize > self.total_units {
            return None;
        }
        let permit = Arc::clone(&self.permits).try_acquire_many_owned(units).ok()?;
        Some(Held { permit, client: None })
    }

    /// Holds room for a body of `bytes` from `client`, within that client's share.
    pub fn hold_body(&self, client: IpAddr, bytes: usize) -> Option<Held> {
        let mut by_client = self.by_client.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let held_by_client = by_client.get(&client).copied().unwrap_or(0);
        let wanted = units(bytes).max(1);
        if held_by_client + wanted > self.client_share_units {
            return None;
        }
        let mut held = self.hold(bytes)?;
        *by_client.entry(client).or_insert(0) += held.permit.num_permits();
        held.client = Some((Arc::clone(&self.by_client), client));
        Some(held)
    }

    /// Decodes an upload's body, holding room for the decoded document. A gzip body first gets
    /// room for a usual compression ratio; only a document that needs more gets the whole limit.
    pub fn decode(&self, body: &Bytes, encoding: Encoding, limit: usize) -> Result<Decoded, DecodeError> {
        if encoding == Encoding::Identity {
            // The body is the document, and already held by the body layer.
            let bytes = document::decode(body.clone(), encoding, limit).map_err(DecodeError::Document)?;
            return Ok(Decoded { bytes, _held: None });
        }
        let first_try = limit.min(body.len().saturating_mul(EXPECTED_GZIP_RATIO).max(SMALL_BODY_LIMIT));
        let held = self.hold(first_try).ok_or(DecodeError::Busy)?;
        match document::decode(body.clone(), encoding, first_try) {
            Err(DocumentError::TooLarge { .. }) if first_try < limit => {
                drop(held);
                let held = self.hold(limit).ok_or(DecodeError::Busy)?;
                let bytes = document::decode(body.clone(), encoding, limit).map_err(DecodeError::Document)?;
                Ok(Decoded { bytes, _held: Some(held) })
            }
            decoded => Ok(Decoded { bytes: decoded.map_err(DecodeError::Document)?, _held: Some(held) }),
        }
    }

    /// Holds room for the database driver's copies of a document of `len` bytes being stored.
    pub fn hold_for_storing(&self, len: usize) -> Option<Held> {
        self.hold(DRIVER_COPIES * len)
    }

    /// Holds room for fetching a document of up to `len` bytes from the database.
    pub fn hold_for_fetching(&self, len: usize) -> Option<Held> {
        self.hold(DOWNLOAD_COPIES * len)
    }

    /// A response body streaming `chunks` out in order, keeping of `held` only the document's
    /// own size until the body is dropped (sent, or abandoned by the client). The caller sets
    /// its Content-Length.
    pub fn response_body(chunks: Vec<String>, mut held: Held) -> Body {
        held.keep_only(chunks.iter().map(String::len).sum());
        let held = Arc::new(held);
        let chunks = chunks.into_iter().map(move |chunk| {
            Ok::<_, std::convert::Infallible>(Bytes::from_owner(HeldChunk { chunk, _held: Arc::clone(&held) }))
        });
        Body::from_stream(futures_util::stream::iter(chunks))
    }

    /// Bytes held right now.
    pub fn in_use_bytes(&self) -> usize {
        (self.total_units - self.permits.available_permits()) * UNIT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLIENT: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn holdings_are_refused_beyond_the_budget_and_returned_on_drop() {
        let budget = MemoryBudget::new(10 * UNIT, 10 * UNIT);
        let six = budget.hold(6 * UNIT).unwrap();
        assert_eq!(budget.in_use_bytes(), 6 * UNIT);
        assert!(budget.hold(5 * UNIT).is_none());
        let four = budget.hold(4 * UNIT - 100).unwrap();
        assert!(budget.hold(1).is_none());
        drop((six, four));
        assert_eq!(budget.in_use_bytes(), 0);
        assert!(budget.hold(11 * UNIT).is_none(), "more than the whole budget");
    }

    #[test]
    fn one_client_holds_bodies_only_up_to_its_share() {
        let budget = MemoryBudget::new(16 * UNIT, 4 * UNIT);
        let other = IpAddr::from([192, 0, 2, 1]);
        let first = budget.hold_body(CLIENT, 3 * UNIT).unwrap();
        assert!(budget.hold_body(CLIENT, 2 * UNIT).is_none(), "over the client's share");
        let second = budget.hold_body(CLIENT, UNIT).unwrap();
        assert!(budget.hold_body(other, 4 * UNIT).is_some(), "another client has its own share");
        drop((first, second));
        assert!(budget.hold_body(CLIENT, 4 * UNIT).is_some(), "the share is given back on drop");
        assert!(budget.by_client.lock().unwrap().is_empty(), "no client is remembered once it holds nothing");
    }

    #[test]
    fn a_response_keeps_only_the_documents_size() {
        let budget = MemoryBudget::new(64 * UNIT, 64 * UNIT);
        let held = budget.hold_for_fetching(10 * UNIT).unwrap();
        assert_eq!(budget.in_use_bytes(), 20 * UNIT);
        let body = MemoryBudget::response_body(vec!["x".repeat(4 * UNIT), "y".repeat(6 * UNIT)], held);
        assert_eq!(budget.in_use_bytes(), 10 * UNIT);
        drop(body);
        assert_eq!(budget.in_use_bytes(), 0);
    }

    #[test]
    fn an_upload_at_most_holds_what_start_up_checks_for() {
        let max = 4 * UNIT * UNIT;
        let budget = MemoryBudget::new(max_upload_holding(max), max_upload_holding(max));
        let body = budget.hold_body(CLIENT, BodyLimit::Document.bytes(max)).unwrap();
        let decoded = budget.hold(max).unwrap();
        let storing = budget.hold_for_storing(max).unwrap();
        assert!(budget.hold(1).is_none(), "exactly full");
        drop((body, decoded, storing));
    }
}
