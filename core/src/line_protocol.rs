//! InfluxDB line protocol parser.
//!
//! Parsing is split in two steps so the hot loop allocates nothing:
//! 1. [`Parser`] tokenizes one line into a reusable [`Line`] that borrows from the input: names are
//!    [`LpStr`] slices (unescaped only on demand), numbers are already parsed.
//! 2. [`Line::to_point`] validates what needs the whole line (duplicate tags and fields, UTF-8) and builds
//!    an owned [`Point`] for a database.
//!
//! The grammar and escaping follow InfluxDB 2.x: measurements escape commas and spaces; tag keys, tag
//! values and field keys escape commas, equals signs and spaces; string field values escape double quotes
//! and backslashes; a backslash before any other character is kept literally. Floats (`1`, `1.5`, `-2e3`),
//! integers (`1i`), unsigned integers (`1u`, a 2.x addition that 1.x rejects), booleans (`t`, `T`, `true`,
//! `True`, `TRUE` and the `f` forms) and strings (`"a \"b\""`) are accepted. Blank lines and lines
//! starting with `#` are skipped, a trailing `\r` is ignored, and a string value may span lines.
//! NaN and infinities are rejected, as InfluxDB does.
//!
//! ```
//! use yaffle_core::line_protocol::{Line, Parser, Precision};
//!
//! let body = b"cpu,host=a usage=0.5,count=3i 1700000000\n# comment\nmem free=1u";
//! let mut parser = Parser::new(body, Precision::Seconds);
//! let mut line = Line::default();
//! parser.next_into(&mut line).unwrap().unwrap();
//! assert_eq!(line.measurement.unescape().unwrap(), "cpu");
//! assert_eq!(line.timestamp, Some(1_700_000_000_000_000_000));
//! let point = line.to_point("telegraf", 0).unwrap();
//! assert_eq!(point.series.tag("host"), Some("a"));
//! assert!(parser.next_into(&mut line).unwrap().is_ok());
//! assert!(parser.next_into(&mut line).is_none());
//! ```

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use crate::point::{FieldValue, Point};
use crate::series::{SeriesId, SeriesKey};

/// The unit of timestamps in a request (`precision` parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// `n`, `ns` (the default).
    #[default]
    Nanoseconds,
    /// `u`, `us`, `µ`, `µs`.
    Microseconds,
    /// `ms`.
    Milliseconds,
    /// `s`.
    Seconds,
    /// `m`.
    Minutes,
    /// `h`.
    Hours,
}

impl Precision {
    /// Parses the `precision` query parameter of InfluxDB 1.x and 2.x.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "" | "n" | "ns" => Precision::Nanoseconds,
            "u" | "us" | "µ" | "µs" => Precision::Microseconds,
            "ms" => Precision::Milliseconds,
            "s" => Precision::Seconds,
            "m" => Precision::Minutes,
            "h" => Precision::Hours,
            _ => return None,
        })
    }

    /// Nanoseconds per unit.
    pub fn nanos(self) -> i64 {
        match self {
            Precision::Nanoseconds => 1,
            Precision::Microseconds => 1_000,
            Precision::Milliseconds => 1_000_000,
            Precision::Seconds => 1_000_000_000,
            Precision::Minutes => 60_000_000_000,
            Precision::Hours => 3_600_000_000_000,
        }
    }
}

/// A name or string value as it appears in the input, still escaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LpStr<'a> {
    raw: &'a [u8],
    escaped: bool,
    kind: Escaping,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Escaping {
    #[default]
    Measurement,
    Key,
    StringValue,
}

impl<'a> LpStr<'a> {
    /// The raw, escaped bytes.
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    /// The unescaped text; borrowed when the input had no escapes. Fails on invalid UTF-8.
    pub fn unescape(&self) -> Result<Cow<'a, str>, std::str::Utf8Error> {
        if !self.escaped {
            return std::str::from_utf8(self.raw).map(Cow::Borrowed);
        }
        let special: &[u8] = match self.kind {
            Escaping::Measurement => b", ",
            Escaping::Key => b", =",
            Escaping::StringValue => b"\"\\",
        };
        let mut out = Vec::with_capacity(self.raw.len());
        let mut i = 0;
        while i < self.raw.len() {
            let b = self.raw[i];
            if b == b'\\' && i + 1 < self.raw.len() && special.contains(&self.raw[i + 1]) {
                out.push(self.raw[i + 1]);
                i += 2;
            } else {
                out.push(b);
                i += 1;
            }
        }
        String::from_utf8(out).map(Cow::Owned).map_err(|e| e.utf8_error())
    }
}

/// A field value with numbers already parsed and strings still escaped.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LpValue<'a> {
    /// A float.
    Float(f64),
    /// `<n>i`.
    Integer(i64),
    /// `<n>u`.
    Unsigned(u64),
    /// A boolean.
    Boolean(bool),
    /// A quoted string, without its quotes.
    String(LpStr<'a>),
}

/// One parsed line, borrowing from the input. Reuse one `Line` across calls of [`Parser::next_into`]
/// so its vectors keep their capacity.
#[derive(Debug, Clone, Default)]
pub struct Line<'a> {
    /// The measurement.
    pub measurement: LpStr<'a>,
    /// Tags in input order.
    pub tags: Vec<(LpStr<'a>, LpStr<'a>)>,
    /// Fields in input order.
    pub fields: Vec<(LpStr<'a>, LpValue<'a>)>,
    /// The timestamp in nanoseconds (the precision applied), if the line had one.
    pub timestamp: Option<i64>,
    /// 1-based line number in the input.
    pub line_number: usize,
    /// The line's bytes, without its newline.
    pub raw: &'a [u8],
    /// The measurement and tag bytes, as written (the key of [`SeriesCache`]).
    pub series_raw: &'a [u8],
}

/// What is wrong with a line. Messages follow InfluxDB's where it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// No measurement before the first comma or space.
    MissingMeasurement,
    /// A tag with an empty key.
    MissingTagKey,
    /// A tag with an empty value or no `=`.
    MissingTagValue,
    /// An unescaped `=` inside a tag value.
    InvalidTagFormat,
    /// The line has no field set.
    MissingFields,
    /// A field with an empty key.
    MissingFieldKey,
    /// A field with no value.
    MissingFieldValue,
    /// A field that is not `key=value`, or junk after a value.
    InvalidFieldFormat,
    /// A numeric value that does not parse, or NaN/infinity.
    InvalidNumber,
    /// A value that starts like a boolean but is not one.
    InvalidBoolean,
    /// An integer outside the range of its type.
    ValueOutOfRange,
    /// A string value without its closing quote.
    UnbalancedQuotes,
    /// A timestamp that is not an integer or overflows with the precision applied.
    BadTimestamp,
    /// The same tag key twice.
    DuplicateTags,
    /// The same field key twice.
    DuplicateField(String),
    /// A name or string that is not UTF-8.
    InvalidUtf8,
    /// The line is longer than the configured limit.
    LineTooLong(usize),
    /// More tags than [`SeriesLimits::max_tags`].
    TooManyTags(usize),
    /// A measurement, tag key or tag value longer than its limit.
    TooLong {
        /// `measurement`, `tag key` or `tag value`.
        what: &'static str,
        /// Its length in bytes (unescaped).
        len: usize,
        /// The configuration key of the limit.
        limit_name: &'static str,
        /// The limit.
        limit: usize,
    },
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorKind::MissingMeasurement => f.write_str("missing measurement"),
            ErrorKind::MissingTagKey => f.write_str("missing tag key"),
            ErrorKind::MissingTagValue => f.write_str("missing tag value"),
            ErrorKind::InvalidTagFormat => f.write_str("invalid tag format"),
            ErrorKind::MissingFields => f.write_str("missing fields"),
            ErrorKind::MissingFieldKey => f.write_str("missing field key"),
            ErrorKind::MissingFieldValue => f.write_str("missing field value"),
            ErrorKind::InvalidFieldFormat => f.write_str("invalid field format"),
            ErrorKind::InvalidNumber => f.write_str("invalid number"),
            ErrorKind::InvalidBoolean => f.write_str("invalid boolean"),
            ErrorKind::ValueOutOfRange => f.write_str("value out of range"),
            ErrorKind::UnbalancedQuotes => f.write_str("unbalanced quotes"),
            ErrorKind::BadTimestamp => f.write_str("bad timestamp"),
            ErrorKind::DuplicateTags => f.write_str("duplicate tags"),
            ErrorKind::DuplicateField(k) => write!(f, "duplicate field key {k:?}"),
            ErrorKind::InvalidUtf8 => f.write_str("invalid UTF-8"),
            ErrorKind::LineTooLong(max) => write!(f, "line longer than limits.max_line_bytes ({max} bytes)"),
            ErrorKind::TooManyTags(max) => write!(f, "more than limits.max_labels_per_series ({max}) tags"),
            ErrorKind::TooLong { what, len, limit_name, limit } => {
                write!(f, "{what} of {len} bytes is longer than limits.{limit_name} ({limit} bytes)")
            }
        }
    }
}

/// A rejected line: where, why, and the line's text (cut to 256 bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// 1-based byte column where the problem was found; `None` for problems of the whole line
    /// (duplicate keys, invalid UTF-8) found after tokenizing.
    pub column: Option<usize>,
    /// What is wrong.
    pub kind: ErrorKind,
    /// The offending line, lossily decoded and cut.
    pub text: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unable to parse '{}' (line {}", self.text, self.line)?;
        if let Some(c) = self.column {
            write!(f, ", column {c}")?;
        }
        write!(f, "): {}", self.kind)
    }
}

impl std::error::Error for ParseError {}

const MAX_ERROR_TEXT: usize = 256;

fn error_text(raw: &[u8]) -> String {
    let mut text = String::from_utf8_lossy(&raw[..raw.len().min(MAX_ERROR_TEXT)]).into_owned();
    if text.ends_with('\r') {
        text.pop();
    }
    text
}

/// Bytes that end or escape a token, per context.
const fn table(stops: &[u8]) -> [bool; 256] {
    let mut t = [false; 256];
    let mut i = 0;
    while i < stops.len() {
        t[stops[i] as usize] = true;
        i += 1;
    }
    t
}
const MEASUREMENT_STOPS: [bool; 256] = table(b", \n\\");
const KEY_STOPS: [bool; 256] = table(b", =\n\\");
const VALUE_STOPS: [bool; 256] = table(b", \n\r");

/// Tokenizes line protocol, one line per call.
#[derive(Debug)]
pub struct Parser<'a> {
    input: &'a [u8],
    pos: usize,
    line: usize,
    precision: Precision,
    max_line_bytes: usize,
}

impl<'a> Parser<'a> {
    /// A parser over `input` whose timestamps are in `precision`.
    pub fn new(input: &'a [u8], precision: Precision) -> Self {
        Self { input, pos: 0, line: 0, precision, max_line_bytes: usize::MAX }
    }

    /// Rejects lines longer than `max` bytes.
    pub fn with_max_line_bytes(mut self, max: usize) -> Self {
        self.max_line_bytes = max;
        self
    }

    /// Parses the next line into `out`: `None` at the end of the input, `Some(Err)` for a bad line
    /// (the parser has then moved past it, so the next call continues with the following line).
    pub fn next_into(&mut self, out: &mut Line<'a>) -> Option<Result<(), ParseError>> {
        let start = self.skip_blank_and_comments()?;
        self.line += 1;
        out.line_number = self.line;
        match self.parse_line(start, out) {
            Ok(extra_newlines) => {
                let len = self.pos - start;
                let content_end = if self.input[..self.pos].ends_with(b"\r\n") {
                    self.pos - 2
                } else if self.input[..self.pos].ends_with(b"\n") {
                    self.pos - 1
                } else {
                    self.pos
                };
                out.raw = &self.input[start..content_end];
                self.line += extra_newlines;
                if len > self.max_line_bytes {
                    return Some(Err(self.error_at(
                        start,
                        start + self.max_line_bytes,
                        ErrorKind::LineTooLong(self.max_line_bytes),
                        self.line - extra_newlines,
                    )));
                }
                Some(Ok(()))
            }
            Err((at, kind)) => {
                let line = self.line;
                // Resume at the next line after the error.
                self.pos = memchr::memchr(b'\n', &self.input[at.min(self.input.len())..])
                    .map_or(self.input.len(), |i| at + i + 1);
                Some(Err(self.error_at(start, at, kind, line)))
            }
        }
    }

    fn error_at(&self, start: usize, at: usize, kind: ErrorKind, line: usize) -> ParseError {
        let end = memchr::memchr(b'\n', &self.input[start..]).map_or(self.input.len(), |i| start + i);
        ParseError { line, column: Some(at.saturating_sub(start) + 1), kind, text: error_text(&self.input[start..end]) }
    }

    /// Moves past blank lines and comments; returns the start of the next line with content.
    fn skip_blank_and_comments(&mut self) -> Option<usize> {
        loop {
            while self.pos < self.input.len() && matches!(self.input[self.pos], b' ' | b'\t' | b'\r') {
                self.pos += 1;
            }
            match self.input.get(self.pos)? {
                b'\n' => {
                    self.line += 1;
                    self.pos += 1;
                }
                b'#' => {
                    self.line += 1;
                    self.pos =
                        memchr::memchr(b'\n', &self.input[self.pos..]).map_or(self.input.len(), |i| self.pos + i + 1);
                }
                _ => return Some(self.pos),
            }
        }
    }

    #[inline]
    fn scan(&self, mut i: usize, stops: &[bool; 256]) -> (usize, bool) {
        let input = self.input;
        let mut escaped = false;
        while i < input.len() {
            let b = input[i];
            if stops[b as usize] {
                if b == b'\\' {
                    escaped = true;
                    i = (i + 2).min(input.len());
                    continue;
                }
                break;
            }
            i += 1;
        }
        (i, escaped)
    }

    #[inline]
    fn at_line_end(&self, i: usize) -> bool {
        match self.input.get(i) {
            None | Some(b'\n') => true,
            Some(b'\r') => matches!(self.input.get(i + 1), None | Some(b'\n')),
            _ => false,
        }
    }

    /// Parses one line starting at `start`; on success `self.pos` is after its newline and the result is
    /// the number of newlines inside string values. On failure returns the error's byte position.
    fn parse_line(&mut self, start: usize, out: &mut Line<'a>) -> Result<usize, (usize, ErrorKind)> {
        let input = self.input;
        out.tags.clear();
        out.fields.clear();
        out.timestamp = None;

        let (end, escaped) = self.scan(start, &MEASUREMENT_STOPS);
        if end == start {
            return Err((start, ErrorKind::MissingMeasurement));
        }
        out.measurement = LpStr { raw: &input[start..end], escaped, kind: Escaping::Measurement };
        let mut i = end;

        while input.get(i) == Some(&b',') {
            let key_start = i + 1;
            let (key_end, key_escaped) = self.scan(key_start, &KEY_STOPS);
            if input.get(key_end) != Some(&b'=') {
                return Err((
                    key_end,
                    if key_end == key_start { ErrorKind::MissingTagKey } else { ErrorKind::MissingTagValue },
                ));
            }
            if key_end == key_start {
                return Err((key_start, ErrorKind::MissingTagKey));
            }
            let value_start = key_end + 1;
            let (value_end, value_escaped) = self.scan(value_start, &KEY_STOPS);
            if value_end == value_start {
                return Err((value_start, ErrorKind::MissingTagValue));
            }
            if input.get(value_end) == Some(&b'=') {
                return Err((value_end, ErrorKind::InvalidTagFormat));
            }
            out.tags.push((
                LpStr { raw: &input[key_start..key_end], escaped: key_escaped, kind: Escaping::Key },
                LpStr { raw: &input[value_start..value_end], escaped: value_escaped, kind: Escaping::Key },
            ));
            i = value_end;
        }

        if input.get(i) != Some(&b' ') {
            return Err((i, ErrorKind::MissingFields));
        }
        out.series_raw = &input[start..i];
        while input.get(i) == Some(&b' ') {
            i += 1;
        }
        if self.at_line_end(i) {
            return Err((i, ErrorKind::MissingFields));
        }

        let mut newlines = 0;
        loop {
            let key_start = i;
            let (key_end, key_escaped) = self.scan(key_start, &KEY_STOPS);
            if input.get(key_end) != Some(&b'=') {
                return Err((
                    key_end,
                    if key_end == key_start { ErrorKind::MissingFieldKey } else { ErrorKind::InvalidFieldFormat },
                ));
            }
            if key_end == key_start {
                return Err((key_start, ErrorKind::MissingFieldKey));
            }
            let key = LpStr { raw: &input[key_start..key_end], escaped: key_escaped, kind: Escaping::Key };
            let value_start = key_end + 1;
            let value_end;
            let value = if input.get(value_start) == Some(&b'"') {
                let (end, escaped, nl) =
                    self.scan_string(value_start + 1).ok_or((value_start, ErrorKind::UnbalancedQuotes))?;
                newlines += nl;
                value_end = end + 1;
                LpValue::String(LpStr { raw: &input[value_start + 1..end], escaped, kind: Escaping::StringValue })
            } else {
                let (end, _) = self.scan(value_start, &VALUE_STOPS);
                value_end = end;
                if end == value_start {
                    return Err((value_start, ErrorKind::MissingFieldValue));
                }
                parse_value(&input[value_start..end]).map_err(|k| (value_start, k))?
            };
            out.fields.push((key, value));
            i = value_end;
            match input.get(i) {
                Some(b',') => i += 1,
                Some(b' ') => break,
                _ if self.at_line_end(i) => break,
                _ => return Err((i, ErrorKind::InvalidFieldFormat)),
            }
        }

        while input.get(i) == Some(&b' ') {
            i += 1;
        }
        if !self.at_line_end(i) {
            let ts_start = i;
            let negative = input[i] == b'-';
            if negative {
                i += 1;
            }
            let digits_start = i;
            let mut ts: i64 = 0;
            while let Some(&b) = input.get(i).filter(|b| b.is_ascii_digit()) {
                ts = ts
                    .checked_mul(10)
                    .and_then(|t| t.checked_add(i64::from(b - b'0')))
                    .ok_or((ts_start, ErrorKind::BadTimestamp))?;
                i += 1;
            }
            while input.get(i) == Some(&b' ') {
                i += 1;
            }
            if i == digits_start || !self.at_line_end(i) {
                return Err((ts_start, ErrorKind::BadTimestamp));
            }
            let ts = if negative { -ts } else { ts };
            out.timestamp = Some(ts.checked_mul(self.precision.nanos()).ok_or((ts_start, ErrorKind::BadTimestamp))?);
        }
        if input.get(i) == Some(&b'\r') {
            i += 1;
        }
        self.pos = (i + 1).min(input.len());
        Ok(newlines)
    }

    /// Finds the closing quote of a string value starting at `i`: (its index, had escapes, newlines inside).
    fn scan_string(&self, mut i: usize) -> Option<(usize, bool, usize)> {
        let input = self.input;
        let mut escaped = false;
        let from = i;
        loop {
            i += memchr::memchr2(b'"', b'\\', &input[i..])?;
            if input[i] == b'"' {
                let newlines = memchr::memchr_iter(b'\n', &input[from..i]).count();
                return Some((i, escaped, newlines));
            }
            escaped = true;
            i += 2;
            if i > input.len() {
                return None;
            }
        }
    }
}

fn parse_value(s: &[u8]) -> Result<LpValue<'static>, ErrorKind> {
    match s[0] {
        b't' | b'T' | b'f' | b'F' => match s {
            b"t" | b"T" | b"true" | b"True" | b"TRUE" => Ok(LpValue::Boolean(true)),
            b"f" | b"F" | b"false" | b"False" | b"FALSE" => Ok(LpValue::Boolean(false)),
            _ => Err(ErrorKind::InvalidBoolean),
        },
        b'0'..=b'9' | b'-' | b'+' | b'.' => match s[s.len() - 1] {
            b'i' => parse_int(&s[..s.len() - 1]).map(LpValue::Integer),
            b'u' => parse_uint(&s[..s.len() - 1]).map(LpValue::Unsigned),
            _ => match fast_float2::parse::<f64, _>(s) {
                Ok(v) if v.is_finite() => Ok(LpValue::Float(v)),
                _ => Err(ErrorKind::InvalidNumber),
            },
        },
        _ => Err(ErrorKind::InvalidFieldFormat),
    }
}

fn parse_int(s: &[u8]) -> Result<i64, ErrorKind> {
    let (negative, digits) = match s.first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let magnitude = parse_uint(digits)?;
    if negative {
        0i64.checked_sub_unsigned(magnitude).ok_or(ErrorKind::ValueOutOfRange)
    } else {
        i64::try_from(magnitude).map_err(|_| ErrorKind::ValueOutOfRange)
    }
}

fn parse_uint(s: &[u8]) -> Result<u64, ErrorKind> {
    if s.is_empty() {
        return Err(ErrorKind::InvalidNumber);
    }
    let mut v: u64 = 0;
    for &b in s {
        if !b.is_ascii_digit() {
            return Err(ErrorKind::InvalidNumber);
        }
        v = v.checked_mul(10).and_then(|v| v.checked_add(u64::from(b - b'0'))).ok_or(ErrorKind::ValueOutOfRange)?;
    }
    Ok(v)
}

impl<'a> Line<'a> {
    /// Builds the owned point for `database`, with `default_timestamp` (nanoseconds) when the line had
    /// none. Checks UTF-8 and duplicate tag and field keys.
    pub fn to_point(&self, database: &str, default_timestamp: i64) -> Result<Point, ParseError> {
        let series = self.series_key(database, &SeriesLimits::default()).map(Arc::new).map_err(|k| self.error(k))?;
        let id = series.id();
        self.build(series, id, default_timestamp).map_err(|k| self.error(k))
    }

    /// Like [`Line::to_point`], reusing the series of an earlier line of the same input with the same
    /// measurement and tag bytes: no re-parsing, no re-hashing, one shared allocation.
    pub fn to_point_cached(&self, cache: &mut SeriesCache<'a>, default_timestamp: i64) -> Result<Point, ParseError> {
        let (series, id) = match cache.series.get(self.series_raw) {
            Some((s, id)) => (Arc::clone(s), *id),
            None => {
                let s = Arc::new(self.series_key(&cache.database, &cache.limits).map_err(|k| self.error(k))?);
                let id = s.id();
                cache.series.insert(self.series_raw, (Arc::clone(&s), id));
                (s, id)
            }
        };
        self.build(series, id, default_timestamp).map_err(|k| self.error(k))
    }

    fn error(&self, kind: ErrorKind) -> ParseError {
        ParseError { line: self.line_number, column: None, kind, text: error_text(self.raw) }
    }

    fn series_key(&self, database: &str, limits: &SeriesLimits) -> Result<SeriesKey, ErrorKind> {
        if self.tags.len() > limits.max_tags {
            return Err(ErrorKind::TooManyTags(limits.max_tags));
        }
        let check = |s: Cow<'a, str>, what, limit_name, limit| {
            if s.len() > limit {
                return Err(ErrorKind::TooLong { what, len: s.len(), limit_name, limit });
            }
            Ok(s)
        };
        let measurement =
            check(unescaped(&self.measurement)?, "measurement", "max_label_value_bytes", limits.max_value_bytes)?;
        let mut tags = Vec::with_capacity(self.tags.len());
        for (k, v) in &self.tags {
            tags.push((
                check(unescaped(k)?, "tag key", "max_label_name_bytes", limits.max_name_bytes)?,
                check(unescaped(v)?, "tag value", "max_label_value_bytes", limits.max_value_bytes)?,
            ));
        }
        let key = SeriesKey::from_tags(database, &measurement, tags);
        if key.duplicate_tag().is_some() {
            return Err(ErrorKind::DuplicateTags);
        }
        Ok(key)
    }

    fn build(&self, series: Arc<SeriesKey>, series_id: SeriesId, default_timestamp: i64) -> Result<Point, ErrorKind> {
        let mut fields = Vec::with_capacity(self.fields.len());
        for (k, v) in &self.fields {
            let name = owned(k)?;
            if fields.iter().any(|(n, _)| *n == name) {
                return Err(ErrorKind::DuplicateField(name));
            }
            let value = match *v {
                LpValue::Float(f) => FieldValue::Float(f),
                LpValue::Integer(i) => FieldValue::Integer(i),
                LpValue::Unsigned(u) => FieldValue::Unsigned(u),
                LpValue::Boolean(b) => FieldValue::Boolean(b),
                LpValue::String(s) => FieldValue::String(owned(&s)?),
            };
            fields.push((name, value));
        }
        Ok(Point { series, series_id, fields, timestamp: self.timestamp.unwrap_or(default_timestamp) })
    }
}

/// The unescaped, owned text of a name or string value.
fn owned(s: &LpStr<'_>) -> Result<String, ErrorKind> {
    unescaped(s).map(Cow::into_owned)
}

/// The unescaped text of a name or string value, borrowed when it had no escapes.
fn unescaped<'a>(s: &LpStr<'a>) -> Result<Cow<'a, str>, ErrorKind> {
    s.unescape().map_err(|_| ErrorKind::InvalidUtf8)
}

/// Series already built for the lines of one input, keyed by their measurement and tag bytes. Use one
/// per request (it belongs to one database).
#[derive(Debug)]
pub struct SeriesCache<'a> {
    database: String,
    limits: SeriesLimits,
    series: HashMap<&'a [u8], (Arc<SeriesKey>, SeriesId)>,
}

impl SeriesCache<'_> {
    /// An empty cache for points of `database`, with no limits on the series.
    pub fn new(database: &str) -> Self {
        Self::with_limits(database, SeriesLimits::default())
    }

    /// An empty cache whose new series are checked against `limits` (a line naming a series over a
    /// limit is an error of that line).
    pub fn with_limits(database: &str, limits: SeriesLimits) -> Self {
        Self { database: database.to_string(), limits, series: HashMap::new() }
    }
}

/// Limits on the series a line names, checked once per distinct series of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeriesLimits {
    /// Most tags on one line.
    pub max_tags: usize,
    /// Longest tag key, in bytes after unescaping.
    pub max_name_bytes: usize,
    /// Longest measurement or tag value, in bytes after unescaping.
    pub max_value_bytes: usize,
}

impl Default for SeriesLimits {
    /// No limits.
    fn default() -> Self {
        Self { max_tags: usize::MAX, max_name_bytes: usize::MAX, max_value_bytes: usize::MAX }
    }
}

#[cfg(test)]
mod tests;
