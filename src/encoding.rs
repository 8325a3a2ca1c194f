//! Hex and SHA-256, as the API, the dumps and the clients write them.

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
