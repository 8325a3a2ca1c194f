//! age encryption of the dumps sent off-site, to X25519 public keys: the machine that takes
//! backups holds only recipients and cannot read what it wrote; restoring needs an identity
//! file, which never goes to Fly. The output is a standard age file (`age -d` reads it).

use std::io::{self, BufRead, Read, Write};
use std::str::FromStr;

use age::stream::{StreamReader, StreamWriter};

/// The first line of every age file.
const AGE_MAGIC: &[u8] = b"age-encryption.org/v1\n";
/// The longest age header this tool reads. An X25519 recipient's stanza takes about 120
/// bytes, so this is some 130 recipients. age 0.12 re-parses the whole header after each line
/// it reads, so a hostile file with a header of megabytes would take minutes of CPU (bench/
/// README.md, "The age header cap"); capped here, it fails at once.
const MAX_HEADER_BYTES: usize = 16 * 1024;

/// An age file whose header was read (within [`MAX_HEADER_BYTES`]) before age saw it.
pub type CappedHeader<R> = io::Chain<io::Cursor<Vec<u8>>, R>;

/// Why a key or an age file cannot be used. Never carries key material.
#[derive(Debug, thiserror::Error)]
pub enum CryptError {
    /// A recipient is not an `age1…` public key.
    #[error("recipient #{0} is not an age X25519 public key (age1…; `age-keygen -y key.txt` prints one)")]
    BadRecipient(usize),
    /// No recipient was given.
    #[error("no recipient: set BACKUP_AGE_RECIPIENTS or --encrypt-to to one or more age1… public keys")]
    NoRecipients,
    /// The identity file cannot be read or holds no usable identity.
    #[error("the identity file {path} cannot be used: {reason}")]
    BadIdentity {
        /// The identity file's path.
        path: String,
        /// Why (never its contents).
        reason: String,
    },
    /// None of the identities opens the file, or the file is not a whole age file.
    #[error("cannot decrypt: {0}")]
    Decrypt(String),
    /// Writing failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// The public keys a dump is encrypted to (any one of their identities opens it).
#[derive(Debug, Clone)]
pub struct Recipients(Vec<age::x25519::Recipient>);

impl Recipients {
    /// Comma-separated `age1…` keys, as `BACKUP_AGE_RECIPIENTS` holds them.
    pub fn parse(text: &str) -> Result<Self, CryptError> {
        let keys: Vec<&str> = text.split(',').map(str::trim).filter(|k| !k.is_empty()).collect();
        if keys.is_empty() {
            return Err(CryptError::NoRecipients);
        }
        keys.iter()
            .enumerate()
            .map(|(n, key)| age::x25519::Recipient::from_str(key).map_err(|_| CryptError::BadRecipient(n + 1)))
            .collect::<Result<_, _>>()
            .map(Self)
    }

    /// The `age1…` public keys, as the manifest records them.
    pub fn public_keys(&self) -> Vec<String> {
        self.0.iter().map(ToString::to_string).collect()
    }

    /// Encrypts everything written to the returned writer into `output`; call `finish` on it.
    pub fn encrypt<W: Write>(&self, output: W) -> Result<StreamWriter<W>, CryptError> {
        let recipients = self.0.iter().map(|r| r as &dyn age::Recipient);
        let encryptor = age::Encryptor::with_recipients(recipients).map_err(|e| CryptError::Decrypt(e.to_string()))?;
        Ok(encryptor.wrap_output(output)?)
    }
}

/// Private keys read from an identity file (as `age-keygen` writes it), with the file's name
/// and their public keys, which errors may show.
pub struct Identities {
    keys: Vec<Box<dyn age::Identity + Send + Sync>>,
    path: String,
    public: Vec<String>,
}

impl Identities {
    /// Reads an identity file; errors name the file, never what is in it.
    pub fn from_file(path: &std::path::Path) -> Result<Self, CryptError> {
        let bad = |reason: String| CryptError::BadIdentity { path: path.display().to_string(), reason };
        let file = std::fs::File::open(path).map_err(|e| bad(e.to_string()))?;
        let identities = age::IdentityFile::from_buffer(io::BufReader::new(file))
            .map_err(|_| bad("it is not an age identity file".into()))?
            .into_identities()
            .map_err(|_| bad("it holds an identity this tool cannot use".into()))?;
        if identities.is_empty() {
            return Err(bad("it holds no identity".into()));
        }
        // The public halves, which a wrong file is named by: age-keygen writes one identity a
        // line, and a line that does not parse holds none of ours.
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let public = text
            .lines()
            .filter_map(|line| age::x25519::Identity::from_str(line.trim()).ok())
            .map(|identity| identity.to_public().to_string())
            .collect();
        Ok(Self { keys: identities, path: path.display().to_string(), public })
    }

    /// Whether these identities can open a file encrypted to `recipients` (`age1…` keys, as a
    /// manifest records them); an error names both sides. An empty list (a manifest from before
    /// they were recorded) cannot be checked, and passes.
    pub fn check_opens(&self, recipients: &[String]) -> Result<(), CryptError> {
        if recipients.is_empty() || self.public.iter().any(|key| recipients.contains(key)) {
            return Ok(());
        }
        Err(self.not_a_recipient(&format!("it was encrypted to {}", recipients.join(", "))))
    }

    fn not_a_recipient(&self, encrypted_to: &str) -> CryptError {
        let held = if self.public.is_empty() { "no X25519 identity".to_owned() } else { self.public.join(", ") };
        CryptError::Decrypt(format!(
            "{encrypted_to}; the identity file {} holds {held}, none of them a recipient (is it another \
             backup key?)",
            self.path
        ))
    }

    /// Decrypts an age file as it is read.
    pub fn decrypt<R: BufRead>(&self, input: R) -> Result<StreamReader<CappedHeader<R>>, CryptError> {
        let input = cap_header(input)?;
        let decryptor = age::Decryptor::new_buffered(input).map_err(|e| CryptError::Decrypt(e.to_string()))?;
        decryptor.decrypt(self.keys.iter().map(|i| i.as_ref() as &dyn age::Identity)).map_err(|e| match e {
            age::DecryptError::NoMatchingKeys => self.not_a_recipient("it was encrypted to other keys"),
            other => CryptError::Decrypt(other.to_string()),
        })
    }
}

/// Reads an age file's header, up to its MAC line (`---`), and refuses one longer than
/// [`MAX_HEADER_BYTES`] before age parses any of it; returns the file whole again.
fn cap_header<R: BufRead>(mut input: R) -> Result<CappedHeader<R>, CryptError> {
    let mut header = Vec::new();
    loop {
        let start = header.len();
        let room = (MAX_HEADER_BYTES + 1 - start) as u64;
        if (&mut input).take(room).read_until(b'\n', &mut header)? == 0 {
            break; // The end of the file: age says what is missing.
        }
        if header[start..].starts_with(b"---") {
            break;
        }
        if header.len() > MAX_HEADER_BYTES {
            return Err(CryptError::Decrypt(format!(
                "the age header is longer than {} KiB (no file this tool writes has one so long)",
                MAX_HEADER_BYTES / 1024
            )));
        }
    }
    Ok(io::Cursor::new(header).chain(input))
}

/// Whether `start` (a file's first bytes) is the start of an age file.
pub fn is_age(start: &[u8]) -> bool {
    start.starts_with(AGE_MAGIC)
}

/// Reads a file's first bytes without losing them.
pub fn peek<R: BufRead>(input: &mut R) -> io::Result<bool> {
    Ok(is_age(input.fill_buf()?))
}

/// An age-decrypting reader, or the input as it is.
pub enum MaybeDecrypted<R: BufRead> {
    /// Encrypted.
    Age(Box<StreamReader<CappedHeader<R>>>),
    /// Plain.
    Plain(R),
}

impl<R: BufRead> Read for MaybeDecrypted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Age(reader) => reader.read(buf),
            Self::Plain(reader) => reader.read(buf),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Identities of `keys`, as if read from a file named `test.key`.
    fn identities_of(keys: &[age::x25519::Identity]) -> Identities {
        Identities {
            keys: keys.iter().map(|key| Box::new(key.clone()) as Box<dyn age::Identity + Send + Sync>).collect(),
            path: "test.key".to_owned(),
            public: keys.iter().map(|key| key.to_public().to_string()).collect(),
        }
    }

    #[test]
    fn what_one_key_encrypts_only_its_identity_opens() {
        let (mine, theirs) = (age::x25519::Identity::generate(), age::x25519::Identity::generate());
        let recipients = Recipients::parse(&format!(" {} ,", mine.to_public())).unwrap();
        let mut writer = recipients.encrypt(Vec::new()).unwrap();
        writer.write_all(b"the dump").unwrap();
        let encrypted = writer.finish().unwrap();
        assert!(is_age(&encrypted));
        assert!(!encrypted.windows(8).any(|w| w == b"the dump"));

        let identities = identities_of(std::slice::from_ref(&mine));
        let mut plain = Vec::new();
        identities.decrypt(encrypted.as_slice()).unwrap().read_to_end(&mut plain).unwrap();
        assert_eq!(plain, b"the dump");
        let others = identities_of(std::slice::from_ref(&theirs));
        let named = |m: &str| m.contains("none of them") && m.contains(&theirs.to_public().to_string());
        assert!(matches!(others.decrypt(encrypted.as_slice()), Err(CryptError::Decrypt(m)) if named(&m)));
        assert!(identities.check_opens(&recipients.public_keys()).is_ok());
        assert!(others.check_opens(&recipients.public_keys()).is_err());
        assert!(others.check_opens(&[]).is_ok(), "a manifest without recipients cannot be checked");
        let mut cut = Vec::new();
        let truncated = identities.decrypt(&encrypted[..encrypted.len() - 5]).unwrap().read_to_end(&mut cut);
        assert!(truncated.is_err(), "age authenticates every chunk, the last one too");
    }

    #[test]
    fn a_header_past_the_cap_is_refused_before_age_parses_it() {
        let mine = age::x25519::Identity::generate();
        let identities = identities_of(std::slice::from_ref(&mine));
        // Many recipients' worth of stanzas: 2 MiB of header, then a MAC line.
        let stanza =
            "-> X25519 CJM36AHmTbdHSuOQL+NESqyVQE75f2e610iRdLPEN20\nC3ZAeY64NXS4QFrksLm3EGz+uPRyI0eQsWw7LWbbYig\n";
        let mut hostile = AGE_MAGIC.to_vec();
        while hostile.len() < 2 * 1024 * 1024 {
            hostile.extend_from_slice(stanza.as_bytes());
        }
        hostile.extend_from_slice(b"--- AAAA\n");
        let Err(error) = identities.decrypt(hostile.as_slice()) else { panic!("a 2 MiB header was accepted") };
        assert!(error.to_string().contains("header is longer than 16 KiB"), "{error}");

        // A real file with recipients up to the cap still opens.
        let many: Vec<String> = std::iter::once(mine.to_public().to_string())
            .chain((0..100).map(|_| age::x25519::Identity::generate().to_public().to_string()))
            .collect();
        let mut writer = Recipients::parse(&many.join(",")).unwrap().encrypt(Vec::new()).unwrap();
        writer.write_all(b"the dump").unwrap();
        let encrypted = writer.finish().unwrap();
        let mut plain = Vec::new();
        identities.decrypt(encrypted.as_slice()).unwrap().read_to_end(&mut plain).unwrap();
        assert_eq!(plain, b"the dump");
    }

    #[test]
    fn recipients_must_be_public_keys() {
        assert!(matches!(Recipients::parse(""), Err(CryptError::NoRecipients)));
        let secret = age::x25519::Identity::generate();
        let error = Recipients::parse(&format!("{},AGE-SECRET-KEY-1X", secret.to_public())).unwrap_err();
        assert_eq!(error.to_string().split(' ').take(2).collect::<Vec<_>>(), ["recipient", "#2"]);
        assert!(!error.to_string().contains("AGE-SECRET"), "never repeats what was given");
    }
}
