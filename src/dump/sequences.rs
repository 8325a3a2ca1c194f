//! The sequences section: one `setval` call per sequence, written so `psql` can run it and
//! parsed back by `restore-db`, which sets each value itself and never runs the line.
//!
//! ```text
//! SELECT pg_catalog.setval('public."a name"', 42, true);
//! ```
//!
//! The name is the sequence's qualified name as PostgreSQL quotes identifiers
//! (`format('%I.%I')`), inside a standard SQL string literal (quotes doubled; the dump turns
//! `standard_conforming_strings` on, so a backslash is itself).

use super::DumpError;

/// One sequence's position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SequenceValue {
    /// Its schema-qualified name, identifiers quoted as PostgreSQL quotes them.
    pub name: String,
    /// The value `setval` sets.
    pub value: i64,
    /// Whether that value was already handed out (`nextval` then returns the one after it).
    pub is_called: bool,
}

const PREFIX: &str = "SELECT pg_catalog.setval('";

impl SequenceValue {
    /// The line that sets it, for `psql`.
    pub fn to_sql(&self) -> String {
        format!("{PREFIX}{}', {}, {});", self.name.replace('\'', "''"), self.value, self.is_called)
    }

    /// Reads back one line written by [`Self::to_sql`]; anything else is refused.
    pub fn parse(line: &str) -> Result<Self, DumpError> {
        let bad = || DumpError::Corrupt("a line of the sequences section is not a setval call this tool writes".into());
        let rest = line.trim_end().strip_prefix(PREFIX).ok_or_else(bad)?;
        // The literal ends at the first quote that is not doubled.
        let mut name = String::new();
        let mut chars = rest.char_indices();
        let after_literal = loop {
            match chars.next().ok_or_else(bad)? {
                (i, '\'') if rest[i + 1..].starts_with('\'') => {
                    name.push('\'');
                    chars.next();
                }
                (i, '\'') => break &rest[i + 1..],
                (_, c) => name.push(c),
            }
        };
        let args = after_literal.strip_prefix(", ").and_then(|a| a.strip_suffix(");")).ok_or_else(bad)?;
        let (value, is_called) = args.split_once(", ").ok_or_else(bad)?;
        let value = value.parse::<i64>().map_err(|_| bad())?;
        let is_called = match is_called {
            "true" => true,
            "false" => false,
            _ => return Err(bad()),
        };
        if name.is_empty() || name.len() > 256 || name.chars().any(char::is_control) {
            return Err(bad());
        }
        Ok(Self { name, value, is_called })
    }

    /// Every line of a sequences section.
    pub fn parse_section(sql: &str) -> Result<Vec<Self>, DumpError> {
        sql.lines().filter(|line| !line.trim().is_empty()).map(Self::parse).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hostile_name_round_trips_as_a_literal() {
        let hostile = SequenceValue {
            name: r#"public."'||'',1,false)WHERE false;CREATE TABLE injected();--""#.into(),
            value: -9,
            is_called: false,
        };
        let line = hostile.to_sql();
        assert_eq!(
            line,
            r#"SELECT pg_catalog.setval('public."''||'''',1,false)WHERE false;CREATE TABLE injected();--"', -9, false);"#
        );
        assert_eq!(SequenceValue::parse(&line).unwrap(), hostile);
        let plain = SequenceValue { name: "public.s".into(), value: 42, is_called: true };
        assert_eq!(SequenceValue::parse_section(&format!("{}\n\n", plain.to_sql())).unwrap(), [plain]);
    }

    #[test]
    fn anything_but_a_setval_line_is_refused() {
        for line in [
            "SELECT 1;",
            "SELECT pg_catalog.setval('public.s', 1, true); DROP TABLE users;",
            "SELECT pg_catalog.setval('public.s', 1, true);--",
            "SELECT pg_catalog.setval('public.s', 1);",
            "SELECT pg_catalog.setval('public.s', 1, maybe);",
            "SELECT pg_catalog.setval('public.s', 99999999999999999999, true);",
            "SELECT pg_catalog.setval('public.s, 1, true);",
            "SELECT pg_catalog.setval('', 1, true);",
            "COPY (SELECT 1) TO PROGRAM 'id';",
        ] {
            assert!(SequenceValue::parse(line).is_err(), "{line}");
        }
    }
}
