//! Bearer tokens: `drb_` + base64url of 32 random bytes. The server keeps only their SHA-256.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::encoding::sha256;

const PREFIX: &str = "drb_";
/// Length of a token: the prefix and 43 base64url characters.
const TOKEN_LEN: usize = 4 + 43;

/// A new token and the hash to store.
pub struct NewToken {
    /// Given to the client once; never stored.
    pub token: String,
    /// What the database keeps.
    pub hash: [u8; 32],
}

/// Makes a token from 32 bytes of the operating system's randomness.
pub fn generate() -> Result<NewToken, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    let token = format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes));
    let hash = sha256(token.as_bytes());
    Ok(NewToken { token, hash })
}

/// The stored hash of a presented token, or `None` when it cannot be one of ours.
pub fn hash_presented(token: &str) -> Option<[u8; 32]> {
    let well_formed = token.len() == TOKEN_LEN
        && token.starts_with(PREFIX)
        && token[PREFIX.len()..].bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    well_formed.then(|| sha256(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_are_well_formed_distinct_and_hash_as_presented() {
        let (a, b) = (generate().unwrap(), generate().unwrap());
        assert_ne!(a.token, b.token);
        assert!(a.token.starts_with("drb_") && a.token.len() == TOKEN_LEN, "{}", a.token);
        assert_eq!(URL_SAFE_NO_PAD.decode(&a.token[4..]).unwrap().len(), 32);
        assert_eq!(hash_presented(&a.token), Some(a.hash));
    }

    #[test]
    fn malformed_tokens_have_no_hash() {
        let good = generate().unwrap().token;
        for bad in [
            "",
            "drb_",
            "xyz_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            &good[..good.len() - 1],
            &format!("{good}a"),
        ] {
            assert_eq!(hash_presented(bad), None, "{bad}");
        }
        let foreign_character = format!("{}+", &good[..good.len() - 1]);
        assert_eq!(hash_presented(&foreign_character), None);
    }
}
