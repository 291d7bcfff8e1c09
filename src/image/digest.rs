//! Content digests (`sha256:<hex>`) and a hashing writer.

use std::fmt;
use std::io::{self, Write};

use sha2::{Digest as _, Sha256};

#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct Digest {
    /// 64 lowercase hex characters of a sha256.
    hex: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid digest {0:?}: expected sha256:<64 lowercase hex characters>")]
pub struct DigestError(pub String);

impl Digest {
    pub fn parse(s: &str) -> Result<Digest, DigestError> {
        match s.split_once(':') {
            Some(("sha256", hex))
                if hex.len() == 64
                    && hex.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) =>
            {
                Ok(Digest {
                    hex: hex.to_string(),
                })
            }
            _ => Err(DigestError(s.to_string())),
        }
    }

    pub fn of(data: &[u8]) -> Digest {
        Digest {
            hex: hex::encode(Sha256::digest(data)),
        }
    }

    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// The first 12 hex characters, as image listings show them.
    pub fn short(&self) -> &str {
        &self.hex[..12]
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl TryFrom<String> for Digest {
    type Error = DigestError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Digest::parse(&s)
    }
}

impl From<Digest> for String {
    fn from(d: Digest) -> String {
        d.to_string()
    }
}

/// Counts and hashes what passes through.
#[derive(Default, Clone)]
pub struct Hasher {
    sha: Sha256,
    len: u64,
}

impl Hasher {
    pub fn update(&mut self, data: &[u8]) {
        self.sha.update(data);
        self.len += data.len() as u64;
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn finish(self) -> Digest {
        Digest {
            hex: hex::encode(self.sha.finalize()),
        }
    }
}

/// A reader adapter that hashes everything read through it.
pub struct HashingReader<R> {
    inner: R,
    hasher: Hasher,
}

impl<R: io::Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Hasher::default(),
        }
    }

    /// Reads what is left (a tar stream ends before its padding), then returns
    /// the digest and length of everything read.
    pub fn drain_and_finish(mut self) -> io::Result<(Digest, u64)> {
        io::copy(&mut self, &mut io::sink())?;
        let len = self.hasher.len();
        Ok((self.hasher.finish(), len))
    }
}

impl<R: io::Read> HashingReader<R> {
    /// Like [`HashingReader::drain_and_finish`], but hands back the inner
    /// reader too: `((digest, inner), length)`.
    pub fn drain_and_finish_inner(mut self) -> io::Result<((Digest, R), u64)> {
        io::copy(&mut self, &mut io::sink())?;
        let len = self.hasher.len();
        Ok(((self.hasher.finish(), self.inner), len))
    }
}

impl<R: io::Read> io::Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

impl Write for Hasher {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_of_empty_input_is_the_well_known_one() {
        assert_eq!(
            Digest::of(b"").to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let mut h = Hasher::default();
        h.update(b"");
        assert_eq!(h.finish(), Digest::of(b""));
    }

    #[test]
    fn only_sha256_lowercase_hex_parses() {
        assert!(Digest::parse(
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855"
        )
        .is_err());
        assert!(Digest::parse("sha512:abc").is_err());
        assert!(Digest::parse("sha256:../../etc/passwd").is_err());
        assert!(Digest::parse(&Digest::of(b"x").to_string()).is_ok());
    }
}
