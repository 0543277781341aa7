//! Compatibility cases, written from InfluxDB's line-protocol reference and its observed behaviour.

use super::*;

fn parse_all(input: &str, precision: Precision) -> Vec<Result<Point, (usize, String)>> {
    let mut parser = Parser::new(input.as_bytes(), precision);
    let mut line = Line::default();
    let mut out = Vec::new();
    while let Some(r) = parser.next_into(&mut line) {
        out.push(match r {
            Ok(()) => line.to_point("db", -1).map_err(|e| (e.line, e.kind.to_string())),
            Err(e) => Err((e.line, e.kind.to_string())),
        });
    }
    out
}

fn one(input: &str) -> Point {
    let mut all = parse_all(input, Precision::Nanoseconds);
    assert_eq!(all.len(), 1, "{input:?}: {all:?}");
    all.remove(0).unwrap_or_else(|e| panic!("{input:?}: {e:?}"))
}

fn err(input: &str) -> String {
    let all = parse_all(input, Precision::Nanoseconds);
    assert_eq!(all.len(), 1, "{input:?}: {all:?}");
    all[0].clone().expect_err(input).1
}

fn field(p: &Point, k: &str) -> FieldValue {
    p.fields.iter().find(|(n, _)| n == k).unwrap_or_else(|| panic!("no field {k}")).1.clone()
}

#[test]
fn every_field_type() {
    let p = one(
        r#"m f=1.5,neg=-2e3,int=-7i,big=9223372036854775807i,u=18446744073709551615u,s="x",b1=t,b2=TRUE,b3=False,b4=f,plain=3 10"#,
    );
    assert_eq!(field(&p, "f"), FieldValue::Float(1.5));
    assert_eq!(field(&p, "neg"), FieldValue::Float(-2000.0));
    assert_eq!(field(&p, "int"), FieldValue::Integer(-7));
    assert_eq!(field(&p, "big"), FieldValue::Integer(i64::MAX));
    assert_eq!(field(&p, "u"), FieldValue::Unsigned(u64::MAX));
    assert_eq!(field(&p, "s"), FieldValue::String("x".into()));
    assert_eq!(field(&p, "b1"), FieldValue::Boolean(true));
    assert_eq!(field(&p, "b2"), FieldValue::Boolean(true));
    assert_eq!(field(&p, "b3"), FieldValue::Boolean(false));
    assert_eq!(field(&p, "b4"), FieldValue::Boolean(false));
    assert_eq!(field(&p, "plain"), FieldValue::Float(3.0), "a number without a suffix is a float");
    assert_eq!(p.timestamp, 10);
    assert_eq!(one("m i=-9223372036854775808i").fields[0].1, FieldValue::Integer(i64::MIN));
}

#[test]
fn escaping_rules() {
    let p = one(r#"my\ meas\,ure,ta\ g\=k=v\,a\ l\=ue fie\ ld\,k\=ey="str \"q\" back\\slash \n" 1"#);
    assert_eq!(p.series.measurement(), "my meas,ure");
    assert_eq!(p.series.tags().collect::<Vec<_>>(), [("ta g=k", "v,a l=ue")]);
    assert_eq!(p.fields[0].0, "fie ld,k=ey");
    assert_eq!(p.fields[0].1, FieldValue::String(r#"str "q" back\slash \n"#.into()));
    // A backslash before an ordinary character is literal; `=` needs no escape in a measurement.
    let p = one(r"a\b=c,t=x\y f=1");
    assert_eq!(p.series.measurement(), r"a\b=c");
    assert_eq!(p.series.tag("t"), Some(r"x\y"));
    // Unicode passes through.
    assert_eq!(one("温度,地点=東京 値=1").series.tag("地点"), Some("東京"));
}

#[test]
fn string_values_may_contain_separators_and_newlines() {
    let all = parse_all("m s=\"a, b=c\nd\" 1\nm f=2 2\n", Precision::Nanoseconds);
    assert_eq!(all.len(), 2);
    assert_eq!(field(all[0].as_ref().unwrap(), "s"), FieldValue::String("a, b=c\nd".into()));
    assert_eq!(all[1].as_ref().unwrap().timestamp, 2);
}

#[test]
fn precision_is_applied() {
    for (p, want) in [
        (Precision::Nanoseconds, 5),
        (Precision::Microseconds, 5_000),
        (Precision::Milliseconds, 5_000_000),
        (Precision::Seconds, 5_000_000_000),
        (Precision::Minutes, 300_000_000_000),
        (Precision::Hours, 18_000_000_000_000),
    ] {
        assert_eq!(parse_all("m f=1 5", p)[0].as_ref().unwrap().timestamp, want, "{p:?}");
    }
    assert_eq!(Precision::parse("us"), Some(Precision::Microseconds));
    assert_eq!(Precision::parse("x"), None);
    assert_eq!(parse_all("m f=1 9223372036854775807", Precision::Seconds)[0].clone().unwrap_err().1, "bad timestamp");
}

#[test]
fn missing_timestamp_uses_the_default_and_negative_timestamps_work() {
    assert_eq!(one("m f=1").timestamp, -1);
    assert_eq!(one("m f=1 -5").timestamp, -5);
}

#[test]
fn tags_are_sorted_and_duplicates_rejected() {
    let p = one("m,z=1,a=2 f=1");
    assert_eq!(p.series.canonical(), "m,a=2,z=1");
    assert_eq!(err("m,a=1,a=2 f=1"), "duplicate tags");
    assert_eq!(err("m f=1,f=2"), "duplicate field key \"f\"");
}

#[test]
fn blank_lines_comments_and_crlf() {
    let all = parse_all("\n  \n# comment f=1\r\nm f=1\r\nm f=2 7\r\n\n", Precision::Nanoseconds);
    assert_eq!(all.len(), 2);
    assert_eq!(all[1].as_ref().unwrap().timestamp, 7);
}

#[test]
fn errors_name_the_problem() {
    let cases = [
        (",t=1 f=1", "missing measurement"),
        ("m", "missing fields"),
        ("m ", "missing fields"),
        ("m,t=1", "missing fields"),
        ("m,=1 f=1", "missing tag key"),
        ("m,t= f=1", "missing tag value"),
        ("m,t f=1", "missing tag value"),
        ("m,t=a=b f=1", "invalid tag format"),
        ("m =1", "missing field key"),
        ("m f=", "missing field value"),
        ("m f", "invalid field format"),
        ("m f=1 x", "bad timestamp"),
        ("m f=1 1 2", "bad timestamp"),
        ("m f=abc", "invalid field format"),
        ("m f=tru", "invalid boolean"),
        ("m f=1.2.3", "invalid number"),
        ("m f=NaN", "invalid field format"),
        ("m f=-inf", "invalid number"),
        ("m f=1.5i", "invalid number"),
        ("m f=9223372036854775808i", "value out of range"),
        ("m f=-1u", "invalid number"),
        ("m f=\"open", "unbalanced quotes"),
        ("m f=1x", "invalid number"),
        ("m f=\"a\"b", "invalid field format"),
    ];
    for (input, want) in cases {
        assert_eq!(err(input), want, "{input:?}");
    }
}

#[test]
fn bad_lines_are_skipped_and_reported_with_their_line_and_column() {
    let input = "m f=1 1\nm,t f=1\nm f=2 2\nm f=@\n";
    let mut parser = Parser::new(input.as_bytes(), Precision::Nanoseconds);
    let mut line = Line::default();
    let mut results = Vec::new();
    while let Some(r) = parser.next_into(&mut line) {
        results.push(r.map(|()| line.to_point("db", 0).unwrap().timestamp));
    }
    assert_eq!(results[0], Ok(1));
    let e = results[1].clone().unwrap_err();
    assert_eq!((e.line, e.column, e.text.as_str()), (2, Some(4), "m,t f=1"));
    assert_eq!(e.to_string(), "unable to parse 'm,t f=1' (line 2, column 4): missing tag value");
    assert_eq!(results[2], Ok(2));
    let e = results[3].clone().unwrap_err();
    assert_eq!((e.line, e.column), (4, Some(5)));
}

#[test]
fn long_lines_are_rejected_by_the_limit() {
    let input = "m f=1\nmeasurement,with=a_long_tag f=1\nm f=2";
    let mut parser = Parser::new(input.as_bytes(), Precision::Nanoseconds).with_max_line_bytes(10);
    let mut line = Line::default();
    assert!(parser.next_into(&mut line).unwrap().is_ok());
    let e = parser.next_into(&mut line).unwrap().unwrap_err();
    assert_eq!((e.line, e.kind), (2, ErrorKind::LineTooLong(10)));
    assert!(parser.next_into(&mut line).unwrap().is_ok());
    assert!(parser.next_into(&mut line).is_none());
}

#[test]
fn invalid_utf8_is_reported() {
    let mut parser = Parser::new(b"m\xff f=1", Precision::Nanoseconds);
    let mut line = Line::default();
    parser.next_into(&mut line).unwrap().unwrap();
    let e = line.to_point("db", 0).unwrap_err();
    assert_eq!((&e.kind, e.column), (&ErrorKind::InvalidUtf8, None));
    assert_eq!(e.to_string(), "unable to parse 'm\u{fffd} f=1' (line 1): invalid UTF-8");
}

#[test]
fn multiple_spaces_between_sections_are_accepted() {
    assert_eq!(one("m  f=1  5").timestamp, 5);
}

proptest::proptest! {
    #[test]
    fn never_panics(input in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
        let mut parser = Parser::new(&input, Precision::Nanoseconds);
        let mut line = Line::default();
        let mut n = 0;
        while let Some(r) = parser.next_into(&mut line) {
            if r.is_ok() {
                let _ = line.to_point("db", 0);
            }
            n += 1;
            proptest::prop_assert!(n <= input.len() + 1, "parser made no progress");
        }
    }

    #[test]
    fn canonical_keys_parse_back(m in "[a-z ,=]{1,8}", k in "[a-z ,=]{1,5}", v in "[a-z ,=]{1,5}") {
        let key = SeriesKey::new("db", m, vec![(k, v)]);
                let text = format!("{} f=1 1", key.canonical());
        let mut parser = Parser::new(text.as_bytes(), Precision::Nanoseconds);
        let mut line = Line::default();
        parser.next_into(&mut line).unwrap().unwrap();
        let p = line.to_point("db", 0).unwrap();
        proptest::prop_assert_eq!(&*p.series, &key);
    }
}

#[test]
fn cached_series_give_the_same_points_and_share_keys() {
    let input = "m,b=2,a=1 f=1 1\nm,b=2,a=1 f=2 2\nm,a=1,b=2 f=3 3\nm,a=1,a=1 f=4 4\n";
    let mut parser = Parser::new(input.as_bytes(), Precision::Nanoseconds);
    let mut cache = SeriesCache::new("db");
    let mut line = Line::default();
    let mut cached = Vec::new();
    while let Some(r) = parser.next_into(&mut line) {
        r.unwrap();
        cached.push((line.to_point_cached(&mut cache, 0), line.to_point("db", 0)));
    }
    for (c, plain) in &cached {
        assert_eq!(c, plain);
    }
    let p: Vec<&Point> = cached.iter().take(3).map(|(c, _)| c.as_ref().unwrap()).collect();
    assert!(Arc::ptr_eq(&p[0].series, &p[1].series), "same bytes share one key");
    assert_eq!(p[0].series_id, p[2].series_id, "another tag order is the same series");
    assert_eq!(cached[3].0.clone().unwrap_err().kind, ErrorKind::DuplicateTags);
}

#[test]
fn series_limits_are_line_errors_checked_once_per_series() {
    let limits = SeriesLimits { max_tags: 2, max_name_bytes: 3, max_value_bytes: 4 };
    let input =
        "m,a=1,b=2 v=1\nm,a=1,b=2,c=3 v=1\nm,long=1 v=1\nm,a=12345 v=1\nmeasure v=1\nm,a=1\\ 2 v=1\nm,b=2,a=1 v=2";
    let mut parser = Parser::new(input.as_bytes(), Precision::Nanoseconds);
    let mut cache = SeriesCache::with_limits("db", limits);
    let mut line = Line::default();
    let mut out = Vec::new();
    while let Some(r) = parser.next_into(&mut line) {
        r.unwrap();
        out.push(line.to_point_cached(&mut cache, 0).map(|_| ()).map_err(|e| e.kind.to_string()));
    }
    assert_eq!(
        out,
        [
            Ok(()),
            Err("more than limits.max_labels_per_series (2) tags".into()),
            Err("tag key of 4 bytes is longer than limits.max_label_name_bytes (3 bytes)".into()),
            Err("tag value of 5 bytes is longer than limits.max_label_value_bytes (4 bytes)".into()),
            Err("measurement of 7 bytes is longer than limits.max_label_value_bytes (4 bytes)".into()),
            // Lengths are of the unescaped strings: `1\ 2` is three bytes.
            Ok(()),
            Ok(()),
        ]
    );
}
