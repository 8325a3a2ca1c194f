//! `s3://BUCKET/PREFIX` as the operator writes it, and what a source URL points at.

use std::fmt;
use std::str::FromStr;

use crate::dump::naming;

/// A bucket and a prefix within it (without slashes at either end; may be empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketUrl {
    /// The bucket's name.
    pub bucket: String,
    /// The folder-like prefix the objects go under (`db`), without slashes at its ends.
    pub prefix: String,
}

impl BucketUrl {
    /// The full key of `name` under the prefix.
    pub fn key(&self, name: &str) -> String {
        if self.prefix.is_empty() { name.to_owned() } else { format!("{}/{name}", self.prefix) }
    }

    /// `s3://BUCKET/KEY` of `name` under the prefix.
    pub fn key_url(&self, name: &str) -> String {
        format!("s3://{}/{}", self.bucket, self.key(name))
    }
}

impl FromStr for BucketUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s.strip_prefix("s3://").ok_or_else(|| format!("`{s}` is not an s3://BUCKET/PREFIX URL"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let valid_bucket = (3..=63).contains(&bucket.len())
            && bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        if !valid_bucket {
            return Err(format!("`{bucket}` is not a bucket name (3-63 lowercase letters, digits, dots and dashes)"));
        }
        let prefix = prefix.trim_matches('/');
        if prefix.split('/').any(|part| part == "." || part == "..") || prefix.contains("//") {
            return Err(format!("`{prefix}` is not a plain prefix"));
        }
        Ok(Self { bucket: bucket.to_owned(), prefix: prefix.to_owned() })
    }
}

impl fmt::Display for BucketUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.prefix)
    }
}

/// A backup to read: the newest complete one under a prefix, or one by its data key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `s3://BUCKET/PREFIX/latest`.
    Latest(BucketUrl),
    /// `s3://BUCKET/PREFIX/dailyreps-<time>.sql.zst[.age]`: the name under the prefix.
    Named(BucketUrl, String),
}

impl Source {
    /// The bucket and prefix.
    pub fn bucket(&self) -> &BucketUrl {
        match self {
            Self::Latest(url) | Self::Named(url, _) => url,
        }
    }
}

impl FromStr for Source {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (parent, last) =
            s.trim_end_matches('/').rsplit_once('/').ok_or_else(|| format!("`{s}` is not an s3:// URL"))?;
        let url: BucketUrl = parent.parse()?;
        if parent == "s3:/" {
            return Err(format!("`{s}` names no object: end it with /latest or a backup's name"));
        }
        match last {
            "latest" => Ok(Self::Latest(url)),
            name if naming::parse_stem(name).is_some_and(|(_, rest)| rest.starts_with(naming::SUFFIX)) => {
                Ok(Self::Named(url, name.to_owned()))
            }
            _ => Err(format!("`{s}` ends in neither /latest nor a backup's name (dailyreps-<time>.sql.zst…)")),
        }
    }
}

/// Where a dump to read is: a local file or a backup in a bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DumpSource {
    /// A file.
    File(std::path::PathBuf),
    /// In a bucket.
    Bucket(Source),
}

impl FromStr for DumpSource {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.starts_with("s3://") { s.parse().map(Self::Bucket) } else { Ok(Self::File(s.into())) }
    }
}

impl fmt::Display for DumpSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(path) => write!(f, "{}", path.display()),
            Self::Bucket(Source::Latest(url)) => write!(f, "{}", url.key_url("latest")),
            Self::Bucket(Source::Named(url, name)) => write!(f, "{}", url.key_url(name)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_into_bucket_and_prefix() {
        let url: BucketUrl = "s3://dailyreps-backups/db/prod/".parse().unwrap();
        assert_eq!((url.bucket.as_str(), url.prefix.as_str()), ("dailyreps-backups", "db/prod"));
        assert_eq!(url.key("x"), "db/prod/x");
        let bare: BucketUrl = "s3://bucket".parse().unwrap();
        assert_eq!(bare.key("x"), "x");
        for bad in ["bucket/x", "s3://", "s3://B/x", "s3://a/x", "s3://bucket/../x", "s3://bucket/a//b"] {
            assert!(bad.parse::<BucketUrl>().is_err(), "{bad}");
        }
    }

    #[test]
    fn sources_are_latest_or_a_backups_name() {
        let latest: Source = "s3://bucket/db/latest".parse().unwrap();
        assert_eq!(latest, Source::Latest("s3://bucket/db".parse().unwrap()));
        let name = "dailyreps-20261201T030000.000Z.sql.zst.age";
        let named: Source = format!("s3://bucket/db/{name}").parse().unwrap();
        assert_eq!(named, Source::Named("s3://bucket/db".parse().unwrap(), name.to_owned()));
        assert_eq!("s3://bucket/latest".parse::<Source>().unwrap().bucket().prefix, "");
        for bad in ["s3://bucket/db/other.txt", "s3://bucket", "s3://bucket/db/dailyreps-x.sql.zst"] {
            assert!(bad.parse::<Source>().is_err(), "{bad}");
        }
    }
}
