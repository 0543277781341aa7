use std::time::Duration;

use super::*;

fn load(text: &str) -> Result<RuleSet, Vec<RuleError>> {
    let mut set = RuleSet::default();
    let mut errors = Vec::new();
    set.add_file(Path::new("rules.yml"), text, Duration::from_secs(60), &mut errors);
    if errors.is_empty() { Ok(set) } else { Err(errors) }
}

#[test]
fn prometheus_rule_files_load() {
    let set = load(
        r#"
groups:
  - name: node
    interval: 30s
    limit: 10
    rules:
      - alert: HighLoad
        expr: avg by (host) (system_load1) > 4
        for: 5m
        keep_firing_for: 1m
        labels:
          severity: page
        annotations:
          summary: "{{ $labels.host }} load is {{ $value | humanize }}"
      - alert: NoData
        expr: absent(system_load1)
"#,
    )
    .unwrap();
    let g = &set.groups[0];
    assert_eq!((g.name.as_str(), g.interval, g.limit, g.rules.len()), ("node", Duration::from_secs(30), 10, 2));
    let r = &g.rules[0];
    assert_eq!(
        (r.name.as_str(), r.for_, r.keep_firing_for),
        ("HighLoad", Duration::from_secs(300), Duration::from_secs(60))
    );
    assert_eq!(set.rule_count(), 2);
    assert_eq!(set.selectors.matchers.len(), 1, "the same selector is stored once");
}

#[test]
fn errors_name_the_file_group_rule_and_construct() {
    let errors = load(
        r#"
groups:
  - name: g
    rules:
      - alert: Fine
        expr: up == 0
      - alert: Top
        expr: up @ 100 == 0
      - record: job up sum
        expr: sum by (job) (up)
      - alert: BadFor
        expr: up == 0
        for: soon
      - alert: BadTemplate
        expr: up == 0
        annotations:
          x: "{{ query \"up\" }}"
"#,
    )
    .unwrap_err();
    let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(text.len(), 4, "{text:#?}");
    assert!(
        text[0].starts_with(r#"rules.yml: group "g", rule 2 (Top): "#) && text[0].contains("@ modifier"),
        "{}",
        text[0]
    );
    assert!(text[1].contains("rule 3 (job up sum)") && text[1].contains("invalid recording rule name"), "{}", text[1]);
    assert!(text[2].contains("rule 4 (BadFor)") && text[2].contains("for:"), "{}", text[2]);
    assert!(text[3].contains("rule 5 (BadTemplate)") && text[3].contains("query"), "{}", text[3]);
}

#[test]
fn unknown_keys_and_scalar_rules_are_rejected() {
    let e =
        load("groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up\n        fore: 1m\n").unwrap_err();
    assert!(e[0].message.contains("fore"), "{}", e[0]);
    let e = load("groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: 1 + 1\n").unwrap_err();
    assert!(e[0].message.contains("scalar"), "{}", e[0]);
    let e = load("groups:\n  - name: g\n    rules: []\n  - name: g\n    rules: []\n").unwrap_err();
    assert!(e[0].message.contains("repeated"), "{}", e[0]);
}
