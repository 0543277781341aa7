//! Line-protocol escaping, used to write canonical series keys.

/// Escapes a measurement: commas and spaces get a backslash.
pub(crate) fn measurement(s: &str, out: &mut String) {
    escape_set(s, &[',', ' '], out);
}

/// Escapes a tag key, tag value or field key: commas, equals signs and spaces get a backslash.
pub(crate) fn tag(s: &str, out: &mut String) {
    escape_set(s, &[',', '=', ' '], out);
}

fn escape_set(s: &str, special: &[char], out: &mut String) {
    if !s.contains(special) {
        out.push_str(s);
        return;
    }
    for c in s.chars() {
        if special.contains(&c) {
            out.push('\\');
        }
        out.push(c);
    }
}
