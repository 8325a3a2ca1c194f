//! COPY's binary format, made from the text format a dump carries. PostgreSQL parses text
//! rows byte by byte in its one backend, which made that backend the whole of a restore's
//! critical path; binary fields are taken as they come, which loads 1.6 times as fast (bench/
//! README.md, "Figures behind choices in the code"). The conversion runs on the restoring side, which has a core
//! to spare. Only the column types our schema uses are converted; a table with any other
//! type loads as text.

/// The signature, flags and header extension length that open a binary COPY.
pub const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
/// The field count -1 that ends one.
pub const TRAILER: &[u8] = &[0xff, 0xff];

/// Days from 1970-01-01 to 2000-01-01, PostgreSQL's epoch for timestamps.
const DAYS_1970_TO_2000: i64 = 10_957;
const MICROS_PER_DAY: i64 = 86_400_000_000;

/// A column type this module converts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Column {
    /// `text` and `character varying`: the bytes themselves.
    Text,
    /// `uuid`: 16 bytes.
    Uuid,
    /// `bytea`: the bytes, from hex or escape output.
    Bytea,
    /// `boolean`: one byte.
    Bool,
    /// `smallint`.
    Int2,
    /// `integer`.
    Int4,
    /// `bigint`.
    Int8,
    /// `timestamp with time zone`: microseconds since 2000-01-01 UTC.
    Timestamptz,
}

impl Column {
    /// The column type as `format_type()` names it, if this module converts it.
    pub fn of(type_name: &str) -> Option<Self> {
        Some(match type_name {
            "text" => Self::Text,
            name if name.starts_with("character varying") => Self::Text,
            "uuid" => Self::Uuid,
            "bytea" => Self::Bytea,
            "boolean" => Self::Bool,
            "smallint" => Self::Int2,
            "integer" => Self::Int4,
            "bigint" => Self::Int8,
            "timestamp with time zone" => Self::Timestamptz,
            _ => return None,
        })
    }
}

/// A row that does not fit the table's columns.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// The row has another number of fields than the table has columns.
    #[error("a row has {found} fields where the table has {expected} columns")]
    FieldCount {
        /// Fields in the row.
        found: usize,
        /// Columns of the table.
        expected: usize,
    },
    /// A field does not read as its column's type.
    #[error("column {column} of a row does not read as {kind:?}: {text:?}")]
    Field {
        /// The column's position, from 1.
        column: usize,
        /// What the column holds, which decides the field's binary form.
        kind: Column,
        /// The start of the field's text.
        text: String,
    },
}

/// Appends the binary form of whole COPY text rows (each ending in a newline) to `out`.
pub fn convert_rows(columns: &[Column], text: &[u8], out: &mut Vec<u8>) -> Result<(), ConvertError> {
    let mut field = Vec::new();
    let mut rows = text;
    while !rows.is_empty() {
        let end = memchr::memchr(b'\n', rows).unwrap_or(rows.len());
        let row = &rows[..end];
        rows = rows.get(end + 1..).unwrap_or_default();
        out.extend_from_slice(&(columns.len() as i16).to_be_bytes());
        let mut fields = fields(row);
        for (index, &kind) in columns.iter().enumerate() {
            let raw = fields.next().ok_or_else(|| field_count_error(columns, row))?;
            if raw == b"\\N" {
                out.extend_from_slice(&(-1i32).to_be_bytes());
                continue;
            }
            let at = out.len();
            out.extend_from_slice(&[0; 4]);
            if kind == Column::Text {
                unescape(raw, out);
            } else {
                field.clear();
                unescape(raw, &mut field);
                convert(kind, &field, out).ok_or_else(|| ConvertError::Field {
                    column: index + 1,
                    kind,
                    text: String::from_utf8_lossy(&field[..field.len().min(40)]).into_owned(),
                })?;
            }
            let length = i32::try_from(out.len() - at - 4).map_err(|_| ConvertError::Field {
                column: index + 1,
                kind,
                text: "a field of 2 GiB or more".into(),
            })?;
            out[at..at + 4].copy_from_slice(&length.to_be_bytes());
        }
        if fields.next().is_some() {
            return Err(field_count_error(columns, row));
        }
    }
    Ok(())
}

/// A row's fields, split at its tabs (a tab inside a field is escaped).
fn fields(row: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(row);
    std::iter::from_fn(move || {
        let current = rest?;
        match memchr::memchr(b'\t', current) {
            Some(tab) => {
                rest = Some(&current[tab + 1..]);
                Some(&current[..tab])
            }
            None => rest.take(),
        }
    })
}

fn field_count_error(columns: &[Column], row: &[u8]) -> ConvertError {
    ConvertError::FieldCount { found: fields(row).count(), expected: columns.len() }
}

/// Appends the binary value of an unescaped field of a type other than text.
fn convert(kind: Column, field: &[u8], out: &mut Vec<u8>) -> Option<()> {
    match kind {
        Column::Text => out.extend_from_slice(field),
        Column::Uuid => out.extend_from_slice(uuid::Uuid::try_parse_ascii(field).ok()?.as_bytes()),
        Column::Bytea => bytea(field, out)?,
        Column::Bool => out.push(match field {
            b"t" => 1,
            b"f" => 0,
            _ => return None,
        }),
        Column::Int2 => out.extend_from_slice(&parse::<i16>(field)?.to_be_bytes()),
        Column::Int4 => out.extend_from_slice(&parse::<i32>(field)?.to_be_bytes()),
        Column::Int8 => out.extend_from_slice(&parse::<i64>(field)?.to_be_bytes()),
        Column::Timestamptz => out.extend_from_slice(&timestamptz(field)?.to_be_bytes()),
    }
    Some(())
}

/// Appends `raw` with COPY's text escaping undone: `\b \f \n \r \t \v`, octal `\ooo`, hex
/// `\xhh`, and any other escaped character as itself.
fn unescape(raw: &[u8], out: &mut Vec<u8>) {
    let mut rest = raw;
    while let Some(at) = memchr::memchr(b'\\', rest) {
        out.extend_from_slice(&rest[..at]);
        rest = &rest[at + 1..];
        let Some(&escaped) = rest.first() else { break };
        rest = &rest[1..];
        match escaped {
            b'b' => out.push(0x08),
            b'f' => out.push(0x0c),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(0x0b),
            b'0'..=b'7' => {
                let digits = 1 + rest.iter().take(2).take_while(|b| (b'0'..=b'7').contains(b)).count();
                let value = [escaped].iter().chain(&rest[..digits - 1]).fold(0u32, |v, &d| v * 8 + u32::from(d - b'0'));
                out.push(value as u8);
                rest = &rest[digits - 1..];
            }
            b'x' if rest.first().is_some_and(u8::is_ascii_hexdigit) => {
                let digits = rest.iter().take(2).take_while(|b| b.is_ascii_hexdigit()).count();
                out.push(rest[..digits].iter().fold(0u8, |v, &d| v * 16 + hex_value(d)));
                rest = &rest[digits..];
            }
            other => out.push(other),
        }
    }
    out.extend_from_slice(rest);
}

fn hex_value(digit: u8) -> u8 {
    match digit {
        b'0'..=b'9' => digit - b'0',
        b'a'..=b'f' => digit - b'a' + 10,
        _ => digit - b'A' + 10,
    }
}

/// A bytea's output text (`\x` and hex pairs, or the escape format) as its bytes.
fn bytea(text: &[u8], out: &mut Vec<u8>) -> Option<()> {
    if let Some(hex) = text.strip_prefix(b"\\x") {
        if hex.len() % 2 != 0 || !hex.iter().all(u8::is_ascii_hexdigit) {
            return None;
        }
        out.extend(hex.chunks(2).map(|pair| hex_value(pair[0]) * 16 + hex_value(pair[1])));
        return Some(());
    }
    let mut rest = text;
    while let Some((&first, tail)) = rest.split_first() {
        if first != b'\\' {
            out.push(first);
            rest = tail;
        } else if tail.first() == Some(&b'\\') {
            out.push(b'\\');
            rest = &tail[1..];
        } else {
            let octal = tail.get(..3).filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)))?;
            out.push(octal.iter().fold(0u32, |v, &d| v * 8 + u32::from(d - b'0')) as u8);
            rest = &tail[3..];
        }
    }
    Some(())
}

fn parse<T: std::str::FromStr>(text: &[u8]) -> Option<T> {
    std::str::from_utf8(text).ok()?.parse().ok()
}

/// A `timestamp with time zone` as PostgreSQL prints it with `DateStyle` ISO (as every sqlx
/// connection sets), e.g. `2026-11-29 16:08:46.870514+00` or `0044-03-15 12:00:00+00:53:28 BC`,
/// as microseconds since 2000-01-01 UTC.
fn timestamptz(text: &[u8]) -> Option<i64> {
    match text {
        b"infinity" => return Some(i64::MAX),
        b"-infinity" => return Some(i64::MIN),
        _ => {}
    }
    let text = std::str::from_utf8(text).ok()?;
    let (text, bc) = text.strip_suffix(" BC").map_or((text, false), |text| (text, true));
    let (date, time) = text.split_once(' ')?;
    let [year, month, day] = numbers(date, '-')?;
    let (clock, offset) = time.split_at(time.rfind(['+', '-'])?);
    let (clock, fraction) = clock.split_once('.').unwrap_or((clock, ""));
    let [hour, minute, second] = numbers(clock, ':')?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let micros = match fraction.len() {
        0 => 0,
        1..=6 if fraction.bytes().all(|b| b.is_ascii_digit()) => format!("{fraction:0<6}").parse::<i64>().ok()?,
        _ => return None,
    };
    // The offset is hours, then optionally minutes and seconds: +00, +05:30, +00:53:28.
    let mut offset_seconds = 0;
    let mut unit = 3600;
    for part in offset[1..].split(':') {
        let [value] = numbers(part, ':')?;
        if unit == 0 || value > 59 && unit < 3600 {
            return None;
        }
        offset_seconds += value * unit;
        unit /= 60;
    }
    if offset.starts_with('-') {
        offset_seconds = -offset_seconds;
    }
    let days = days_from_civil(if bc { 1 - year } else { year }, month, day)? - DAYS_1970_TO_2000;
    let seconds = (hour * 60 + minute) * 60 + second - offset_seconds;
    days.checked_mul(MICROS_PER_DAY)?.checked_add(seconds * 1_000_000 + micros)
}

/// Exactly `N` unsigned decimal numbers separated by `separator`.
fn numbers<const N: usize>(text: &str, separator: char) -> Option<[i64; N]> {
    let mut numbers = [0; N];
    let mut parts = text.split(separator);
    for number in &mut numbers {
        let part = parts.next().filter(|p| !p.is_empty() && p.len() <= 9 && p.bytes().all(|b| b.is_ascii_digit()))?;
        *number = part.parse().ok()?;
    }
    parts.next().is_none().then_some(numbers)
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar (year 0 is 1 BC), by
/// Howard Hinnant's `days_from_civil`.
fn days_from_civil(year: i64, month: i64, day: i64) -> Option<i64> {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let day_of_year = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era.checked_mul(146_097)?.checked_add(day_of_era - 719_468)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_count_microseconds_from_2000_in_utc() {
        assert_eq!(timestamptz(b"2000-01-01 00:00:00+00"), Some(0));
        assert_eq!(timestamptz(b"2000-01-01 05:30:00+05:30"), Some(0));
        assert_eq!(timestamptz(b"1999-12-31 23:00:00-01"), Some(0));
        assert_eq!(timestamptz(b"1970-01-01 00:00:00+00"), Some(-946_684_800_000_000));
        // From Python's datetime: (2026-11-29 16:08:46.870514 UTC - 2000-01-01 UTC) in µs.
        assert_eq!(timestamptz(b"2026-11-29 16:08:46.870514+00"), Some(849_283_726_870_514));
        assert_eq!(timestamptz(b"2000-01-01 00:00:00.5+00"), Some(500_000));
        // 1 BC is year 0, a leap year: 366 + 365 * 1999 + 485 leap days between it and 2000.
        assert_eq!(timestamptz(b"0001-01-01 00:00:00+00 BC"), Some(-730_485 * MICROS_PER_DAY));
        assert_eq!(timestamptz(b"infinity"), Some(i64::MAX));
        assert_eq!(timestamptz(b"-infinity"), Some(i64::MIN));
        for bad in [
            &b""[..],
            b"2026-11-29",
            b"2026-13-01 00:00:00+00",
            b"2026-11-29 24:00:00+00",
            b"2026-11-29 16:08:46.1234567+00",
            b"2026-11-29 16:08:46+00:60",
            b"11/29/2026 16:08:46 UTC",
            b"2026-11-29 16:08:46",
        ] {
            assert_eq!(timestamptz(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn escapes_and_bytea_read_back_as_their_bytes() {
        let mut out = Vec::new();
        unescape(br"tab\there\\ \n\r\b\f\v \101\x42\7 \q", &mut out);
        assert_eq!(out, b"tab\there\\ \n\r\x08\x0c\x0b AB\x07 q");
        let mut out = Vec::new();
        bytea(br"\x00ff10", &mut out).unwrap();
        assert_eq!(out, [0x00, 0xff, 0x10]);
        let mut out = Vec::new();
        bytea(br"a\\b\000\377", &mut out).unwrap();
        assert_eq!(out, b"a\\b\x00\xff");
        assert!(bytea(br"\x0", &mut Vec::new()).is_none());
        assert!(bytea(br"\xzz", &mut Vec::new()).is_none());
        assert!(bytea(br"bad\9", &mut Vec::new()).is_none());
    }

    #[test]
    fn a_row_becomes_a_binary_tuple() {
        let columns = [Column::Int4, Column::Text, Column::Bool, Column::Uuid];
        let mut out = Vec::new();
        convert_rows(&columns, b"7\ta\\tb\tt\t\\N\n", &mut out).unwrap();
        let mut expected = vec![0, 4];
        expected.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 7]);
        expected.extend_from_slice(&[0, 0, 0, 3, b'a', b'\t', b'b']);
        expected.extend_from_slice(&[0, 0, 0, 1, 1]);
        expected.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]);
        assert_eq!(out, expected);

        let error = convert_rows(&columns, b"7\ta\tyes\t\\N\n", &mut Vec::new()).unwrap_err();
        assert!(matches!(error, ConvertError::Field { column: 3, kind: Column::Bool, .. }), "{error}");
        let error = convert_rows(&columns, b"7\ta\n", &mut Vec::new()).unwrap_err();
        assert_eq!(error.to_string(), "a row has 2 fields where the table has 4 columns");
        let error = convert_rows(&columns, b"7\ta\tt\t\\N\textra\n", &mut Vec::new()).unwrap_err();
        assert!(matches!(error, ConvertError::FieldCount { found: 5, expected: 4 }), "{error}");
    }
}
