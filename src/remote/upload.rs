//! Streaming a dump up as a multipart upload while it is written: a blocking writer cuts parts
//! and hands them over a small queue to an async task that sends each, retrying transient
//! failures. Memory is a few parts, whatever the dump's size.

use std::io::{self, Write};

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use object_store::multipart::{MultipartStore, PartId};
use object_store::{ObjectStoreExt, PutPayload};
use tokio::sync::{mpsc, oneshot};

use super::{Bucket, RemoteError};

/// Bytes per part: above S3's 5 MiB minimum, and the same for every part but the last (R2
/// requires that).
pub const PART_BYTES: usize = 8 * 1024 * 1024;
/// Parts sent at once: while the store takes in one, the next is on its way. (Memory: these,
/// the one queued and the one being filled.)
const PARTS_IN_FLIGHT: usize = 2;
/// Parts waiting for the uploader.
const PARTS_QUEUED: usize = 1;

/// A multipart upload in progress.
#[derive(Debug, Clone)]
pub struct Upload {
    /// The data object's name under the prefix.
    pub name: String,
    /// The upload's id, as the store gave it.
    pub id: String,
}

/// The blocking side: everything written goes into parts.
pub struct PartWriter {
    part: Vec<u8>,
    parts: mpsc::Sender<Bytes>,
    finished: oneshot::Sender<()>,
    sent: usize,
}

/// The parts a [`PartWriter`] cuts, for [`Bucket::send_parts`].
pub struct Parts {
    parts: mpsc::Receiver<Bytes>,
    /// Sent by [`PartWriter::finish`] after the last part. A writer dropped without it (the
    /// dump failed or was interrupted) leaves the upload unfinished, never completed short.
    finished: oneshot::Receiver<()>,
}

/// What became of an upload's parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// The writer finished: every part is up and the object is complete.
    Completed,
    /// The writer stopped before its end: the object was not completed (the caller aborts it).
    Abandoned,
}

impl PartWriter {
    /// Ends the data: sends what is left as the last part. Only this completes the upload.
    pub fn finish(mut self) -> io::Result<()> {
        if !self.part.is_empty() || self.sent == 0 {
            self.send()?;
        }
        self.finished.send(()).map_err(|()| io::Error::other("the upload stopped"))
    }

    fn send(&mut self) -> io::Result<()> {
        let part = Bytes::from(std::mem::replace(&mut self.part, Vec::with_capacity(PART_BYTES)));
        self.parts.blocking_send(part).map_err(|_| io::Error::other("the upload stopped"))?;
        self.sent += 1;
        Ok(())
    }
}

impl Write for PartWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = PART_BYTES - self.part.len();
        let taken = room.min(buf.len());
        self.part.extend_from_slice(&buf[..taken]);
        if self.part.len() == PART_BYTES {
            self.send()?;
        }
        Ok(taken)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Bucket {
    /// Starts a multipart upload of `name`.
    pub async fn start_upload(&self, name: &str) -> Result<Upload, RemoteError> {
        let id = self.store.create_multipart(&self.path(name)).await;
        let id = id.map_err(|e| self.failed(format!("starting the upload of {name}"), e))?;
        Ok(Upload { name: name.to_owned(), id })
    }

    /// A writer whose parts [`Self::send_parts`] uploads.
    pub fn part_writer() -> (PartWriter, Parts) {
        let (parts, receiver) = mpsc::channel(PARTS_QUEUED);
        let (finished, finished_receiver) = oneshot::channel();
        let writer = PartWriter { part: Vec::with_capacity(PART_BYTES), parts, finished, sent: 0 };
        (writer, Parts { parts: receiver, finished: finished_receiver })
    }

    /// Sends every part as it arrives, [`PARTS_IN_FLIGHT`] at a time, then completes the upload
    /// if, and only if, the writer finished: a dump cut short by an error or Ctrl-C must not
    /// become an object under its final name.
    pub async fn send_parts(&self, upload: &Upload, parts: Parts) -> Result<Sent, RemoteError> {
        let Parts { parts: mut received, mut finished } = parts;
        let path = self.path(&upload.name);
        let done: Vec<PartId> = futures_util::stream::poll_fn(|cx| received.poll_recv(cx))
            .enumerate()
            .map(|(index, part)| {
                let path = &path;
                async move {
                    // The store retries transient failures itself (see `Bucket::from_env`).
                    let sent = self.store.put_part(path, &upload.id, index, PutPayload::from(part)).await;
                    sent.map_err(|e| self.failed(format!("uploading part {} of {}", index + 1, upload.name), e))
                }
            })
            .buffered(PARTS_IN_FLIGHT)
            .try_collect()
            .await?;
        // The writer signals before it drops its side of the queue, so this is settled now.
        if finished.try_recv().is_err() {
            return Ok(Sent::Abandoned);
        }
        self.store
            .complete_multipart(&path, &upload.id, done)
            .await
            .map(|_| Sent::Completed)
            .map_err(|e| self.failed(format!("completing the upload of {}", upload.name), e))
    }

    /// Aborts an upload, so no part of it is kept (or billed).
    pub async fn abort(&self, upload: &Upload) -> Result<(), RemoteError> {
        self.store
            .abort_multipart(&self.path(&upload.name), &upload.id)
            .await
            .map_err(|e| self.failed(format!("aborting the upload of {}", upload.name), e))
    }

    /// The stored size of `name`.
    pub async fn size(&self, name: &str) -> Result<u64, RemoteError> {
        let meta = self.store.head(&self.path(name)).await;
        meta.map(|meta| meta.size).map_err(|e| self.failed(format!("looking at {name}"), e))
    }
}
