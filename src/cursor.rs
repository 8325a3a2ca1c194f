//! Opaque list cursors: a position (time, id) in a newest-first list, as a URL-safe string.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::db::backups::After;

/// The cursor for the page after `after`.
pub fn encode(after: After) -> String {
    let micros = after.created_at.unix_timestamp_nanos() / 1000;
    URL_SAFE_NO_PAD.encode(format!("{micros}.{}", after.id.simple()))
}

/// The longest cursor this code makes (a 20-digit time, a dot and a simple UUID, in base64).
const MAX_CURSOR_CHARS: usize = 80;
/// Cursors stand for times from 1970 to the year 9999: every backup's, and anything a
/// database can compare with (a forged year -5000 made PostgreSQL refuse the query).
const LATEST_MICROS: i128 = 253_402_300_799_999_999;

/// The position a cursor stands for; `None` if this code did not make it.
pub fn decode(cursor: &str) -> Option<After> {
    if cursor.len() > MAX_CURSOR_CHARS {
        return None;
    }
    let text = String::from_utf8(URL_SAFE_NO_PAD.decode(cursor).ok()?).ok()?;
    let (micros, id) = text.split_once('.')?;
    let micros: i128 = micros.parse().ok().filter(|m| (0..=LATEST_MICROS).contains(m))?;
    let created_at = OffsetDateTime::from_unix_timestamp_nanos(micros.checked_mul(1000)?).ok()?;
    Some(After { created_at, id: Uuid::parse_str(id).ok()? })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_round_trips_to_the_microsecond() {
        let after = After {
            created_at: OffsetDateTime::from_unix_timestamp_nanos(1_764_400_000_123_456_000).unwrap(),
            id: Uuid::new_v4(),
        };
        assert_eq!(decode(&encode(after)), Some(after));
        let id = Uuid::nil().simple();
        let year_minus_5000 = URL_SAFE_NO_PAD.encode(format!("-219936096000000000.{id}"));
        let year_10000 = URL_SAFE_NO_PAD.encode(format!("253402300800000000.{id}"));
        let long = "A".repeat(MAX_CURSOR_CHARS + 1);
        for bad in [
            "",
            "???",
            "bm90LWEtY3Vyc29y",
            &URL_SAFE_NO_PAD.encode("99999999999999999999999999999.x"),
            &year_minus_5000,
            &year_10000,
            &long,
        ] {
            assert_eq!(decode(bad), None, "{bad}");
        }
    }
}
