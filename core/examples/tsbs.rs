//! Prints TSBS cpu-only shaped line protocol: `tsbs [HOSTS] [STEPS] [--integer]`.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |i: usize, default: usize| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    let scenario = yaffle_core::tsbs::Scenario {
        hosts: num(0, 100),
        steps: num(1, 10),
        start_ns: 1_451_606_400_000_000_000,
        integer_fields: args.iter().any(|a| a == "--integer"),
    };
    print!("{}", yaffle_core::tsbs::generate(&scenario));
}
