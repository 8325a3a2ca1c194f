//! Hex and SHA-256, as the API, the dumps and the clients write them, and readers and writers
//! that hash (and count) what passes through them.

use std::io::{self, Read, Write};

use sha2::{Digest, Sha256};

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        text.push(char::from(DIGITS[usize::from(byte >> 4)]));
        text.push(char::from(DIGITS[usize::from(byte & 0xf)]));
    }
    text
}

/// Serializes bytes as [`hex`] (for `#[serde(serialize_with)]`).
pub fn serialize_hex<S: serde::Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&hex(bytes))
}

/// The bytes of exactly `len` bytes' worth of lowercase hex; `None` for anything else.
pub fn parse_hex(text: &str, len: usize) -> Option<Vec<u8>> {
    let digit = |c: u8| DIGITS.iter().position(|&d| d == c).and_then(|n| u8::try_from(n).ok());
    if text.len() != len * 2 {
        return None;
    }
    text.as_bytes().chunks_exact(2).map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?)).collect()
}

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// SHA-256 of `parts` one after another, as if they were one text.
pub fn sha256_of_parts<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> [u8; 32] {
    let mut hash = Sha256::new();
    for part in parts {
        hash.update(part);
    }
    hash.finalize().into()
}

/// A writer that counts and hashes what it passes on.
pub struct HashingWriter<W> {
    inner: W,
    bytes: u64,
    hash: Sha256,
}

impl<W: Write> HashingWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        Self { inner, bytes: 0, hash: Sha256::new() }
    }

    /// The inner writer, the bytes written and their SHA-256.
    pub fn finish(self) -> (W, u64, [u8; 32]) {
        (self.inner, self.bytes, self.hash.finalize().into())
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        self.hash.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that counts and hashes what it reads, for a [`ReadDigest`] to look at later (the
/// reader itself may end up deep inside a chain of decoders).
pub struct HashingReader<R> {
    inner: R,
    seen: ReadDigest,
}

/// What a [`HashingReader`] has read so far.
#[derive(Clone, Default)]
pub struct ReadDigest(std::sync::Arc<std::sync::Mutex<(u64, Sha256)>>);

impl ReadDigest {
    /// The bytes read so far and their SHA-256.
    pub fn value(&self) -> (u64, [u8; 32]) {
        let seen = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        (seen.0, seen.1.clone().finalize().into())
    }
}

impl<R: Read> HashingReader<R> {
    /// Wraps `inner`; the digest follows what is read.
    pub fn new(inner: R) -> (Self, ReadDigest) {
        let seen = ReadDigest::default();
        (Self { inner, seen: seen.clone() }, seen)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut seen = self.seen.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        seen.0 += n as u64;
        seen.1.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_refuses_what_it_does_not_write() {
        let bytes = [0x00, 0x0f, 0xa5, 0xff];
        assert_eq!(hex(&bytes), "000fa5ff");
        assert_eq!(parse_hex("000fa5ff", 4), Some(bytes.to_vec()));
        for bad in ["000fa5f", "000FA5FF", "000fa5fg", "000fa5ff00", "+0fa5ff"] {
            assert_eq!(parse_hex(bad, 4), None, "{bad}");
        }
        assert_eq!(hex(&sha256(b"abc")), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
