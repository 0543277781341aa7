//! Escaping of the canonical series key: line protocol's, plus the backslash itself.
//!
//! Line protocol leaves a backslash before an ordinary character as it is, so its own escaping is not
//! injective (measurement `a\` with tag `b=c`, and measurement `a,b=c`, both print `a\,b=c`). The
//! canonical key escapes the backslash too, so that every part ends at the first separator not
//! preceded by an escaping backslash and two different series never print the same key.

/// Escapes a measurement: commas, spaces and backslashes get a backslash.
pub(crate) fn measurement(s: &str, out: &mut String) {
    escape_set(s, &[',', ' ', '\\'], out);
}

/// Escapes a tag key, tag value or field key: commas, equals signs, spaces and backslashes get a
/// backslash.
pub(crate) fn tag(s: &str, out: &mut String) {
    escape_set(s, &[',', '=', ' ', '\\'], out);
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
