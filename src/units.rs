//! The values settings are written in, parsed at the edge: addresses, durations and sizes with
//! their units, and text that may be secret. The CLI's types use these; `config` builds the
//! settings from them.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::str::FromStr;

/// An address to listen on: `HOST:PORT` (a name such as `localhost` is resolved, its first
/// address taken), or a bare port meaning every IPv4 interface (so Fly's conventional
/// `PORT=8080` works as is).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BindAddr(pub SocketAddr);

impl FromStr for BindAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(port) = s.parse::<u16>() {
            return Ok(Self(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port))));
        }
        let bad = || format!("`{s}` is neither a port nor HOST:PORT (e.g. 8080, 0.0.0.0:8080 or localhost:8080)");
        if let Ok(addr) = s.parse::<SocketAddr>() {
            return Ok(Self(addr));
        }
        // A name needs a port, or `to_socket_addrs` would fail anyway.
        if !s.rsplit_once(':').is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok()) {
            return Err(bad());
        }
        let resolved = std::net::ToSocketAddrs::to_socket_addrs(s).map_err(|e| format!("{}: {e}", bad()))?;
        // IPv4 first where a name has both, as `localhost` usually does: what people expect
        // `curl http://localhost:8080` to reach.
        let mut addrs: Vec<SocketAddr> = resolved.collect();
        addrs.sort_by_key(|addr| !addr.is_ipv4());
        addrs.first().copied().map(Self).ok_or_else(bad)
    }
}

/// A duration as people write it, always with its unit: `500ms`, `60s`, `5m`, `2h`, `90d`.
/// A bare number is refused (`--inactive-users 365` meaning seconds would select everyone),
/// and so is anything over a century, so that no date arithmetic can overflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub std::time::Duration);

/// The longest duration accepted: 100 years.
const MAX_DURATION: std::time::Duration = std::time::Duration::from_secs(36_500 * 86_400);

impl FromStr for HumanDuration {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (number, unit) = s.split_at(split);
        let bad = || format!("`{s}` is not a duration like 500ms, 60s, 5m, 2h or 90d");
        let number: u64 = number.parse().map_err(|_| bad())?;
        let seconds = |factor: u64| number.checked_mul(factor).map(std::time::Duration::from_secs);
        let duration = match unit {
            "" => return Err(format!("`{s}` has no unit: write {s}d (days), {s}h, {s}m, {s}s or {s}ms")),
            "ms" => Some(std::time::Duration::from_millis(number)),
            "s" => seconds(1),
            "m" => seconds(60),
            "h" => seconds(3600),
            "d" => seconds(86_400),
            _ => return Err(bad()),
        };
        match duration {
            Some(duration) if duration <= MAX_DURATION => Ok(Self(duration)),
            _ => Err(format!("`{s}` is longer than 100 years (36500d)")),
        }
    }
}

impl HumanDuration {
    /// The moment this long before `now`; `None` if that is not a representable time.
    pub fn before(self, now: time::OffsetDateTime) -> Option<time::OffsetDateTime> {
        now.checked_sub(time::Duration::try_from(self.0).ok()?)
    }
}

impl fmt::Display for HumanDuration {
    /// In the largest unit that divides it: `90 days`, `12 hours`, `500 ms`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let millis = self.0.as_millis();
        let plural = |n: u128, unit: &str| format!("{n} {unit}{}", if n == 1 { "" } else { "s" });
        let text = match millis {
            m if m % 86_400_000 == 0 => plural(m / 86_400_000, "day"),
            m if m % 3_600_000 == 0 => plural(m / 3_600_000, "hour"),
            m if m % 60_000 == 0 => plural(m / 60_000, "minute"),
            m if m % 1000 == 0 => plural(m / 1000, "second"),
            m => format!("{m} ms"),
        };
        f.write_str(&text)
    }
}

/// A duration setting of `serve`, from its flag or its environment variable: the flag takes a
/// unit like every duration on the command line (`--body-timeout 60s`), the variable takes
/// seconds, as its name says (`BODY_TIMEOUT_SECONDS=60`). One parser reads both; a bare number
/// is remembered as such, and `cli` refuses it when it came from the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnvDuration {
    /// The duration.
    pub duration: std::time::Duration,
    /// Written as bare seconds, without a unit.
    pub bare_seconds: bool,
}

impl FromStr for EnvDuration {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let text = s.trim();
        if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
            let seconds: u64 = text.parse().map_err(|_| format!("`{text}` seconds is too long"))?;
            let duration = std::time::Duration::from_secs(seconds);
            if duration > MAX_DURATION {
                return Err(format!("`{text}` seconds is longer than 100 years"));
            }
            return Ok(Self { duration, bare_seconds: true });
        }
        Ok(Self { duration: text.parse::<HumanDuration>()?.0, bare_seconds: false })
    }
}

impl fmt::Display for EnvDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        HumanDuration(self.duration).fmt(f)
    }
}

/// A size as people write it, always with its unit: `1GB`, `500MB`, `3GiB` (GB and MB are
/// powers of ten, as Fly sizes volumes; GiB and MiB powers of two). A bare number is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
        let (number, unit) = (&s[..split], s[split..].trim());
        let bad = || format!("`{s}` is not a size like 1GB, 500MB or 3GiB");
        let number: f64 = number.parse().map_err(|_| bad())?;
        let factor: u64 = match unit.to_ascii_lowercase().as_str() {
            "" => return Err(format!("`{s}` has no unit: write {s}GB, {s}MB or {s}GiB")),
            "b" => 1,
            "kb" => 1_000,
            "mb" => 1_000_000,
            "gb" => 1_000_000_000,
            "tb" => 1_000_000_000_000,
            "kib" => 1 << 10,
            "mib" => 1 << 20,
            "gib" => 1 << 30,
            "tib" => 1 << 40,
            _ => return Err(bad()),
        };
        let bytes = number * factor as f64;
        // At most a petabyte: no volume is larger, and the arithmetic stays exact.
        if !(bytes.is_finite() && (1.0..=1e15).contains(&bytes)) {
            return Err(format!("`{s}` is not a size between 1 B and 1,000 TB"));
        }
        Ok(Self(bytes.round() as u64))
    }
}

/// A setting that may hold a secret, as typed: never shown.
#[derive(Clone)]
pub struct SecretString(String);

impl SecretString {
    /// The value itself, for parsing.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl FromStr for SecretString {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretString(redacted)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_addr_takes_a_bare_port_or_an_address() {
        assert_eq!("8080".parse::<BindAddr>().unwrap().0, "0.0.0.0:8080".parse().unwrap());
        assert_eq!("127.0.0.1:9".parse::<BindAddr>().unwrap().0, "127.0.0.1:9".parse().unwrap());
        assert!("localhost".parse::<BindAddr>().unwrap_err().contains("neither a port"));
        let local = "localhost:8080".parse::<BindAddr>().unwrap().0;
        assert!(local.ip().is_loopback() && local.port() == 8080, "{local}");
    }

    #[test]
    fn sizes_need_a_unit_and_read_gb_as_fly_does() {
        let parse = |s: &str| s.parse::<ByteSize>().map(|b| b.0);
        assert_eq!(parse("1GB"), Ok(1_000_000_000));
        assert_eq!(parse("1 gb"), Ok(1_000_000_000));
        assert_eq!(parse("1.5GiB"), Ok(3 << 29));
        assert_eq!(parse("500MB"), Ok(500_000_000));
        assert!(parse("1").unwrap_err().contains("has no unit: write 1GB"));
        for bad in ["", "GB", "1.2.3GB", "1XB", "-1GB", "0GB", "2000TB"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_duration_setting_takes_a_unit_or_bare_seconds_and_remembers_which() {
        let parse = |s: &str| s.parse::<EnvDuration>().map(|d| (d.duration.as_millis(), d.bare_seconds));
        assert_eq!(parse("60"), Ok((60_000, true)));
        assert_eq!(parse("60s"), Ok((60_000, false)));
        assert_eq!(parse("500ms"), Ok((500, false)));
        assert!(parse("60 parsecs").is_err());
        assert!(parse("").is_err());
        assert!(parse("99999999999999").unwrap_err().contains("100 years"));
    }

    #[test]
    fn durations_read_as_people_write_them() {
        let parse = |s: &str| s.parse::<HumanDuration>().map(|d| d.0);
        assert_eq!(parse("500ms"), Ok(std::time::Duration::from_millis(500)));
        assert_eq!(parse("60s"), Ok(std::time::Duration::from_secs(60)));
        assert_eq!(parse("5m"), Ok(std::time::Duration::from_secs(300)));
        assert_eq!(parse("2h"), Ok(std::time::Duration::from_secs(7200)));
        assert_eq!(parse("90d"), Ok(std::time::Duration::from_secs(90 * 86_400)));
        for bad in ["", "s", "1.5s", "10 years", "-1s", "99999999999999999999d", "36501d"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert!(parse("365").unwrap_err().contains("has no unit: write 365d"), "a bare number is refused");
        assert!(parse("99999999d").unwrap_err().contains("longer than 100 years"));
        let century: HumanDuration = "36500d".parse().unwrap();
        assert!(century.before(time::OffsetDateTime::now_utc()).is_some());
        assert!(century.before(time::PrimitiveDateTime::MIN.assume_utc()).is_none(), "checked, not wrapped");
        assert_eq!("90d".parse::<HumanDuration>().unwrap().to_string(), "90 days");
        assert_eq!("1h".parse::<HumanDuration>().unwrap().to_string(), "1 hour");
        assert_eq!("1500ms".parse::<HumanDuration>().unwrap().to_string(), "1500 ms");
    }
}
