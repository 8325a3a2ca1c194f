//! The checksums a dump's manifest lists. Format 1 used SHA-256; format 2 uses XXH3-128, some
//! 25 times cheaper, where SHA-256 was a sixth of `backup-db`'s own work (bench/README.md,
//! "Figures behind choices in the code"). Both catch damage equally well: the manifest travels
//! in the same file as the data, so no checksum in it could stop a deliberate edit.

use sha2::{Digest, Sha256};
use twox_hash::XxHash3_128;

/// A running checksum of the kind a format version uses.
#[derive(Clone)]
pub enum Checksum {
    /// Format 1.
    Sha256(Sha256),
    /// Format 2 and later.
    Xxh3(Box<XxHash3_128>),
}

impl Checksum {
    /// The checksum dumps of `format_version` carry.
    pub fn for_format(format_version: u32) -> Self {
        if format_version < 2 { Self::Sha256(Sha256::new()) } else { Self::Xxh3(Box::new(XxHash3_128::new())) }
    }

    /// Adds bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            Self::Sha256(hash) => hash.update(bytes),
            Self::Xxh3(hash) => hash.write(bytes),
        }
    }

    /// The digest of everything added so far.
    pub fn digest(&self) -> Vec<u8> {
        match self {
            Self::Sha256(hash) => hash.clone().finalize().to_vec(),
            Self::Xxh3(hash) => hash.finish_128().to_be_bytes().to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoding::hex;

    #[test]
    fn each_format_has_its_published_algorithm() {
        let digest = |version| {
            let mut checksum = Checksum::for_format(version);
            checksum.update(b"a");
            checksum.update(b"bc");
            hex(&checksum.digest())
        };
        // "abc" as FIPS 180-2 gives it for SHA-256, and the reference xxHash library (XXH3_128bits).
        assert_eq!(digest(1), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(digest(2), "06b05ab6733a618578af5f94892f3950");
    }
}
