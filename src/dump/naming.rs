//! The names this tool gives its dumps, in a folder and in a bucket:
//! `dailyreps-20261201T030000.000Z.sql.zst`. The UTC time of the snapshot is in the name, to
//! the millisecond, so names sort by age and rotation can tell the tool's dumps from any
//! other file.

use time::{OffsetDateTime, PrimitiveDateTime};

/// Every dump name starts so.
pub const PREFIX: &str = "dailyreps-";
/// A dump's extension.
pub const SUFFIX: &str = ".sql.zst";

fn stamp_format() -> Vec<time::format_description::BorrowedFormatItem<'static>> {
    time::format_description::parse_borrowed::<2>("[year][month][day]T[hour][minute][second].[subsecond digits:3]Z")
        .expect("a valid format description")
}

/// The name of the dump taken at `at`, without extension: `dailyreps-20261201T030000.000Z`.
pub fn stem(at: OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    let stamp = PrimitiveDateTime::new(at.date(), at.time()).format(&stamp_format()).expect("a UTC time formats");
    format!("{PREFIX}{stamp}")
}

/// When `name` starts with a stem this tool writes, the time in it and the rest of the name.
pub fn parse_stem(name: &str) -> Option<(PrimitiveDateTime, &str)> {
    let rest = name.strip_prefix(PREFIX)?;
    let (stamp, after) = rest.split_at_checked("20261201T030000.000Z".len())?;
    Some((PrimitiveDateTime::parse(stamp, &stamp_format()).ok()?, after))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_their_utc_time_and_nothing_else_parses() {
        let at = OffsetDateTime::from_unix_timestamp_nanos(1_764_558_000_123_456_789).unwrap();
        let name = format!("{}{SUFFIX}", stem(at));
        assert_eq!(name, "dailyreps-20251201T030000.123Z.sql.zst");
        let (parsed, rest) = parse_stem(&name).unwrap();
        assert_eq!((parsed.assume_utc().unix_timestamp(), rest), (at.unix_timestamp(), SUFFIX));
        for other in ["dailyreps-before-upgrade.sql.zst", "dailyreps-2099.sql.zst", "x-20251201T030000.123Z", ""] {
            assert!(parse_stem(other).is_none(), "{other}");
        }
    }
}
