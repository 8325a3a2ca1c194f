//! Reading an object as a blocking `Read` (for the dump reader's thread): an async task pulls
//! the object's body and hands chunks over a small queue, so memory stays a few chunks.

use std::io::{self, Read};

use bytes::{Buf, Bytes};
use futures_util::StreamExt;
use object_store::ObjectStoreExt;
use tokio::sync::mpsc;

use super::{Bucket, RemoteError};

/// Chunks in flight between the network and the reader.
const CHUNKS_QUEUED: usize = 4;

/// The blocking side of a download.
pub struct ObjectReader {
    chunks: mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
}

impl Read for ObjectReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while !self.current.has_remaining() {
            match self.chunks.blocking_recv() {
                Some(chunk) => self.current = chunk?,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.remaining());
        self.current.copy_to_slice(&mut buf[..n]);
        Ok(n)
    }
}

impl Bucket {
    /// Starts reading `name`; the returned reader is for a blocking thread.
    pub async fn open(&self, name: &str) -> Result<ObjectReader, RemoteError> {
        let got = self.store.get(&self.path(name)).await.map_err(|e| self.failed(format!("reading {name}"), e))?;
        let (sender, chunks) = mpsc::channel(CHUNKS_QUEUED);
        let mut stream = got.into_stream();
        tokio::spawn(async move {
            while let Some(chunk) = stream.next().await {
                let failed = chunk.is_err();
                if sender.send(chunk.map_err(io::Error::other)).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(ObjectReader { chunks, current: Bytes::new() })
    }
}
