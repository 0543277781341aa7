//! A generator of TSBS "cpu-only" shaped line protocol: measurement `cpu`, the 10 TSBS host tags and the
//! 10 `usage_*` fields, one line per host per 10-second step, hosts in order within a step.
//!
//! Values are floats with two decimals from a deterministic random walk, so the same arguments always
//! give the same bytes (benchmarks compare like with like). `integer_fields` writes `58i` instead, the
//! way TSBS's own influx output does.

const REGIONS: [(&str, [&str; 3]); 3] = [
    ("us-east-1", ["us-east-1a", "us-east-1b", "us-east-1c"]),
    ("eu-central-1", ["eu-central-1a", "eu-central-1b", "eu-central-1c"]),
    ("ap-southeast-2", ["ap-southeast-2a", "ap-southeast-2b", "ap-southeast-2c"]),
];
const OS: [&str; 3] = ["Ubuntu16.10", "Ubuntu16.04LTS", "Ubuntu15.10"];
const ARCH: [&str; 2] = ["x64", "x86"];
const TEAM: [&str; 4] = ["SF", "NYC", "LON", "CHI"];
const ENV: [&str; 3] = ["production", "staging", "test"];
/// The ten TSBS cpu fields.
pub const FIELDS: [&str; 10] = [
    "usage_user",
    "usage_system",
    "usage_idle",
    "usage_nice",
    "usage_iowait",
    "usage_irq",
    "usage_softirq",
    "usage_steal",
    "usage_guest",
    "usage_guest_nice",
];

/// What to generate.
#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    /// Number of hosts (series per field).
    pub hosts: usize,
    /// Number of 10-second steps.
    pub steps: usize,
    /// First timestamp, nanoseconds.
    pub start_ns: i64,
    /// Write integers (`58i`) instead of floats.
    pub integer_fields: bool,
}

/// Generates the scenario as line protocol with nanosecond timestamps.
pub fn generate(s: &Scenario) -> String {
    let mut out = String::with_capacity(s.hosts * s.steps * 330);
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let mut values = vec![50.0f64; s.hosts * FIELDS.len()];
    let tags: Vec<String> = (0..s.hosts).map(|h| host_tags(h, &mut rng)).collect();
    for step in 0..s.steps {
        let ts = s.start_ns + step as i64 * 10_000_000_000;
        for (h, tags) in tags.iter().enumerate() {
            out.push_str("cpu,");
            out.push_str(tags);
            for (f, name) in FIELDS.iter().enumerate() {
                let v = &mut values[h * FIELDS.len() + f];
                *v = (*v + (next(&mut rng) % 2001) as f64 / 100.0 - 10.0).clamp(0.0, 100.0);
                out.push(if f == 0 { ' ' } else { ',' });
                out.push_str(name);
                out.push('=');
                if s.integer_fields {
                    out.push_str(&format!("{}i", *v as i64));
                } else {
                    out.push_str(&format!("{:.2}", *v));
                }
            }
            out.push(' ');
            out.push_str(&ts.to_string());
            out.push('\n');
        }
    }
    out
}

fn host_tags(h: usize, rng: &mut u64) -> String {
    let (region, dcs) = REGIONS[(next(rng) % 3) as usize];
    format!(
        "hostname=host_{h},region={region},datacenter={},rack={},os={},arch={},team={},service={},service_version={},service_environment={}",
        dcs[(next(rng) % 3) as usize],
        next(rng) % 100,
        OS[(next(rng) % 3) as usize],
        ARCH[(next(rng) % 2) as usize],
        TEAM[(next(rng) % 4) as usize],
        next(rng) % 20,
        next(rng) % 2,
        ENV[(next(rng) % 3) as usize],
    )
}

/// xorshift64*: deterministic, dependency-free.
fn next(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::line_protocol::{Line, Parser, Precision};

    #[test]
    fn lines_have_the_tsbs_shape_and_parse() {
        let text = generate(&Scenario { hosts: 3, steps: 2, start_ns: 0, integer_fields: false });
        assert_eq!(text.lines().count(), 6);
        let mut parser = Parser::new(text.as_bytes(), Precision::Nanoseconds);
        let mut line = Line::default();
        while let Some(r) = parser.next_into(&mut line) {
            r.unwrap();
            let p = line.to_point("bench", 0).unwrap();
            assert_eq!(p.series.tags().len(), 10);
            assert_eq!(p.fields.len(), 10);
        }
        assert_eq!(text, generate(&Scenario { hosts: 3, steps: 2, start_ns: 0, integer_fields: false }));
    }
}
