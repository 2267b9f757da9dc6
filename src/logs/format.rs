//! The CRI log format, one record a line, as containerd and CRI-O write it:
//!
//! ```text
//! 2026-12-03T14:31:08.01354868Z stdout F hello
//! <RFC3339Nano time>            <stream> <tags> <content>
//! ```
//!
//! The tags are `F` (a full line: the record's content is the line) or `P`
//! (a partial line: the runtime split a line longer than its limit, 16 KiB by
//! default, and the next records continue it), possibly followed by more
//! tags after `:`. The runtime trims trailing zeros of the fraction, so the
//! time is parsed leniently and printed the kubelet's way, always with nine
//! digits (`RFC3339NanoFixed`).

/// Which of the container's output streams a record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
        }
    }
}

/// One record of a CRI log file, borrowing the line it was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<'a> {
    pub time: Timestamp<'a>,
    pub stream: Stream,
    /// The runtime split a long line here; the next record continues it.
    pub partial: bool,
    /// The output itself, without the record's end of line.
    pub content: &'a [u8],
}

/// Why a line is not a CRI log record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("the line has fewer than four fields")]
    TooFewFields,
    #[error("the time of the record is not RFC 3339")]
    Time,
    #[error("the stream of the record is neither stdout nor stderr")]
    Stream,
    #[error("the tag of the record is neither P nor F")]
    Tag,
}

/// Parses one line of a CRI log file (with or without its `\n`).
pub fn parse(line: &[u8]) -> Result<Record<'_>, ParseError> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let mut fields = line.splitn(4, |b| *b == b' ');
    let (Some(time), Some(stream), Some(tags)) = (fields.next(), fields.next(), fields.next())
    else {
        return Err(ParseError::TooFewFields);
    };
    // A record of an empty line may end right after its tags.
    let content = fields.next().unwrap_or_default();
    let time = Timestamp::parse(time).ok_or(ParseError::Time)?;
    let stream = match stream {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        _ => return Err(ParseError::Stream),
    };
    let partial = match tags.split(|b| *b == b':').next() {
        Some(b"P") => true,
        Some(b"F") => false,
        _ => return Err(ParseError::Tag),
    };
    Ok(Record {
        time,
        stream,
        partial,
        content,
    })
}

/// An RFC 3339 time as a record wrote it: its instant, and its text for the
/// kubelet's fixed-width rendering (which keeps the zone as written).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timestamp<'a> {
    /// Nanoseconds since the Unix epoch.
    pub unix_nanos: i128,
    /// `YYYY-MM-DDTHH:MM:SS`.
    seconds: &'a [u8],
    /// The fraction's digits, without the dot (may be empty).
    fraction: &'a [u8],
    /// `Z` or `±HH:MM`.
    zone: &'a [u8],
}

impl<'a> Timestamp<'a> {
    /// A time in RFC 3339 with any number of fractional digits (Go's
    /// `time.RFC3339Nano` parsing, which the kubelet uses), or `None`.
    pub fn parse(text: &'a [u8]) -> Option<Self> {
        if text.len() < 20 || text[10] != b'T' && text[10] != b't' {
            return None;
        }
        let (seconds, rest) = text.split_at(19);
        let num = |range: std::ops::Range<usize>| -> Option<i64> {
            let digits = seconds.get(range)?;
            if !digits.iter().all(u8::is_ascii_digit) {
                return None;
            }
            std::str::from_utf8(digits).ok()?.parse().ok()
        };
        if seconds[4] != b'-' || seconds[7] != b'-' || seconds[13] != b':' || seconds[16] != b':' {
            return None;
        }
        let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
        let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
        if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
            return None;
        }
        // A leap second (60) is what RFC 3339 allows; Go refuses it too.
        if second > 59 {
            return None;
        }
        let (fraction, zone) = match rest.strip_prefix(b".") {
            Some(after) => {
                let digits = after.iter().take_while(|b| b.is_ascii_digit()).count();
                if digits == 0 || digits > 9 {
                    return None;
                }
                after.split_at(digits)
            }
            None => (&rest[..0], rest),
        };
        let offset_seconds = match zone {
            b"Z" | b"z" => 0,
            [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2]
                if [h1, h2, m1, m2].iter().all(|b| b.is_ascii_digit()) =>
            {
                let hours = i64::from((h1 - b'0') * 10 + (h2 - b'0'));
                let minutes = i64::from((m1 - b'0') * 10 + (m2 - b'0'));
                let offset = hours * 3600 + minutes * 60;
                if *sign == b'+' { offset } else { -offset }
            }
            _ => return None,
        };
        let mut nanos: i128 = 0;
        for (i, digit) in fraction.iter().enumerate() {
            nanos += i128::from(digit - b'0') * 10i128.pow(8 - i as u32);
        }
        let days = days_from_civil(year, month, day);
        let unix = days * 86_400 + hour * 3600 + minute * 60 + second - offset_seconds;
        Some(Self {
            unix_nanos: i128::from(unix) * 1_000_000_000 + nanos,
            seconds,
            fraction,
            zone,
        })
    }

    /// The time as the kubelet prints it with `timestamps=true`
    /// (`RFC3339NanoFixed`: nine fractional digits, the zone as written).
    pub fn write_fixed(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.seconds);
        out.push(b'.');
        out.extend_from_slice(self.fraction);
        out.extend(std::iter::repeat_n(b'0', 9 - self.fraction.len()));
        // Go prints a zero offset as `Z` whatever was written.
        match self.zone {
            b"z" | b"+00:00" | b"-00:00" => out.push(b'Z'),
            zone => out.extend_from_slice(zone),
        }
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixed(text: &str) -> String {
        let mut out = Vec::new();
        Timestamp::parse(text.as_bytes())
            .unwrap()
            .write_fixed(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_record_written_by_containerd_on_the_test_bed_parses() {
        // Recorded from /var/log/nsdebug-testbed/pods/…/server/0.log.
        let record =
            parse(b"2026-12-03T12:46:13.67565821Z stdout F hello: listening on 0.0.0.0:8080\n")
                .unwrap();
        assert_eq!(record.stream, Stream::Stdout);
        assert!(!record.partial);
        assert_eq!(record.content, b"hello: listening on 0.0.0.0:8080");
        assert_eq!(
            record.time.unix_nanos, 1_796_301_973_675_658_210,
            "date +%s -d 2026-12-03T12:46:13Z is 1796301973"
        );
    }

    #[test]
    fn partial_records_empty_lines_and_more_tags_parse() {
        let record = parse(b"2026-12-03T12:46:13.5Z stderr P:x abc").unwrap();
        assert_eq!(record.stream, Stream::Stderr);
        assert!(record.partial);
        assert_eq!(record.content, b"abc");
        let empty = parse(b"2026-12-03T12:46:13.5Z stdout F \n").unwrap();
        assert_eq!(empty.content, b"");
        let bare = parse(b"2026-12-03T12:46:13.5Z stdout F").unwrap();
        assert_eq!(bare.content, b"");
        // Content keeps its own spaces.
        let spaced = parse(b"2026-12-03T12:46:13.5Z stdout F  a  b ").unwrap();
        assert_eq!(spaced.content, b" a  b ");
    }

    #[test]
    fn lines_that_are_not_records_are_refused() {
        assert_eq!(parse(b"hello"), Err(ParseError::TooFewFields));
        assert_eq!(parse(b"yesterday stdout F x"), Err(ParseError::Time));
        assert_eq!(
            parse(b"2026-12-03T12:46:13Z stdin F x"),
            Err(ParseError::Stream)
        );
        assert_eq!(
            parse(b"2026-12-03T12:46:13Z stdout X x"),
            Err(ParseError::Tag)
        );
    }

    #[test]
    fn times_print_with_nine_digits_and_their_zone() {
        assert_eq!(
            fixed("2026-12-03T14:31:08.01354868Z"),
            "2026-12-03T14:31:08.013548680Z"
        );
        assert_eq!(
            fixed("2026-12-03T14:31:08Z"),
            "2026-12-03T14:31:08.000000000Z"
        );
        assert_eq!(
            fixed("2026-12-03T15:31:08.1+01:00"),
            "2026-12-03T15:31:08.100000000+01:00"
        );
    }

    #[test]
    fn zones_and_fractions_give_the_same_instant() {
        let utc = Timestamp::parse(b"2026-12-03T14:31:08.5Z").unwrap();
        let cet = Timestamp::parse(b"2026-12-03T15:31:08.500000000+01:00").unwrap();
        assert_eq!(utc.unix_nanos, cet.unix_nanos);
        assert_eq!(
            Timestamp::parse(b"1970-01-01T00:00:00Z")
                .unwrap()
                .unix_nanos,
            0
        );
        assert_eq!(
            Timestamp::parse(b"2000-03-01T00:00:00Z")
                .unwrap()
                .unix_nanos,
            951_868_800_000_000_000
        );
    }

    #[test]
    fn malformed_times_are_refused() {
        for text in [
            "2026-12-03 14:31:08Z",
            "2026-13-03T14:31:08Z",
            "2026-12-03T14:31:08",
            "2026-12-03T14:31:08.Z",
            "2026-12-03T14:31:08.1234567890Z",
            "2026-12-03T14:31:08+0100",
        ] {
            assert!(Timestamp::parse(text.as_bytes()).is_none(), "{text}");
        }
    }
}
