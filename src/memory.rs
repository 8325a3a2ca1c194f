//! The memory budget: what request bodies and documents in flight may hold together, and the
//! only place that knows how many copies of a document each step holds.
//!
//! The server lives in 256 MB. Rather than growing until the kernel kills it, work that would
//! take the budget past its size is refused (the API answers 503 with `Retry-After`). No one
//! client may hold more than a share of it with bodies still arriving, so sockets that trickle
//! bodies in (or never finish them) cannot starve everyone else.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Bytes per permit: the budget is counted in KiB so a large budget fits the semaphore.
const UNIT: usize = 1024;
/// A gzip body of a tiny document is a little larger than the document.
const GZIP_OVERHEAD: usize = 64 * 1024;
/// An upload, once its body is in, also has the database driver's two copies of what it sends
/// in flight (the statement's arguments, then the connection's write buffer): the chunks its
/// user has not stored, at most the whole document.
const DRIVER_COPIES: usize = 2;
/// A download holds the row in the connection's read buffer and the document decoded from it,
/// until the buffer is given back; then only the document, until it is sent.
const DOWNLOAD_COPIES: usize = 2;
/// The share of the budget one client address may hold with bodies, as a fraction.
const CLIENT_SHARE_DIVISOR: usize = 4;

/// The largest body of an upload of documents of at most `max_document` bytes: a little more
/// than the document, for gzip's framing of one that does not compress.
pub fn max_upload_body(max_document: usize) -> usize {
    max_document + GZIP_OVERHEAD
}

/// The most one upload of a `max_document`-byte document holds at once, whatever its encoding:
/// its body (gzip: up to the limit), the decoded document, and the driver's copies.
pub fn max_upload_holding(max_document: usize) -> usize {
    max_upload_body(max_document) + max_document + DRIVER_COPIES * max_document
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
    pub fn keep_only(&mut self, bytes: usize) {
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

/// A chunk of a document, each holding the document's room until the last of them is sent
/// (or dropped).
struct HeldChunk {
    chunk: String,
    _held: Arc<Held>,
}

impl AsRef<[u8]> for HeldChunk {
    fn as_ref(&self) -> &[u8] {
        self.chunk.as_bytes()
    }
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
        Self::new(total, (total / CLIENT_SHARE_DIVISOR).max(max_upload_body(max_document)))
    }

    /// Holds `bytes`, or `None` when they are not free now.
    pub fn hold(&self, bytes: usize) -> Option<Held> {
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

    /// Holds room for the database driver's copies of a document of `len` bytes being stored.
    pub fn hold_for_storing(&self, len: usize) -> Option<Held> {
        self.hold(DRIVER_COPIES * len)
    }

    /// Holds room for fetching a document of up to `len` bytes from the database.
    pub fn hold_for_fetching(&self, len: usize) -> Option<Held> {
        self.hold(DOWNLOAD_COPIES * len)
    }

    /// `chunks` as buffers to send in order, keeping of `held` only the document's own size
    /// until the last of them is dropped (sent, or abandoned by the client).
    pub fn held_chunks(chunks: Vec<String>, mut held: Held) -> impl Iterator<Item = Bytes> + Send {
        held.keep_only(chunks.iter().map(String::len).sum());
        let held = Arc::new(held);
        chunks.into_iter().map(move |chunk| Bytes::from_owner(HeldChunk { chunk, _held: Arc::clone(&held) }))
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
    fn a_download_keeps_only_the_documents_size_until_its_last_chunk_is_sent() {
        let budget = MemoryBudget::new(64 * UNIT, 64 * UNIT);
        let held = budget.hold_for_fetching(10 * UNIT).unwrap();
        assert_eq!(budget.in_use_bytes(), 20 * UNIT);
        let mut chunks = MemoryBudget::held_chunks(vec!["x".repeat(4 * UNIT), "y".repeat(6 * UNIT)], held);
        assert_eq!(budget.in_use_bytes(), 10 * UNIT);
        let first = chunks.next().unwrap();
        drop(chunks);
        assert_eq!(budget.in_use_bytes(), 10 * UNIT, "held while a chunk is still being sent");
        drop(first);
        assert_eq!(budget.in_use_bytes(), 0);
    }

    #[test]
    fn an_upload_at_most_holds_what_start_up_checks_for() {
        let max = 4 * UNIT * UNIT;
        let budget = MemoryBudget::new(max_upload_holding(max), max_upload_holding(max));
        let body = budget.hold_body(CLIENT, max_upload_body(max)).unwrap();
        let decoded = budget.hold(max).unwrap();
        let storing = budget.hold_for_storing(max).unwrap();
        assert!(budget.hold(1).is_none(), "exactly full");
        drop((body, decoded, storing));
    }
}
