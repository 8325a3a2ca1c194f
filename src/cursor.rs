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

/// The position a cursor stands for; `None` if this code did not make it.
pub fn decode(cursor: &str) -> Option<After> {
    let text = String::from_utf8(URL_SAFE_NO_PAD.decode(cursor).ok()?).ok()?;
    let (micros, id) = text.split_once('.')?;
    let micros: i128 = micros.parse().ok()?;
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
        for bad in ["", "???", "bm90LWEtY3Vyc29y", &URL_SAFE_NO_PAD.encode("99999999999999999999999999999.x")] {
            assert_eq!(decode(bad), None, "{bad}");
        }
    }
}
