//! Property tests for the container spec parser (`voxnix::engine::spec`).

use proptest::prelude::*;
use proptest::sample::subsequence;
use serde_json::{Map, Value, json};
use voxnix::engine::spec::{
    ContainerSpec, NAME_MAX_LEN, format_size, parse_size, parse_spec, validate_name,
};

const MODULES: [&str; 6] = ["code-server", "dev", "fish", "git", "ssh", "workspace"];

fn known() -> Vec<String> {
    MODULES.iter().map(|s| s.to_string()).collect()
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'
}

/// Any JSON value, nested a few levels, with object keys that are often the
/// spec's own field names or module names so that deep paths get exercised.
fn arb_json() -> impl Strategy<Value = Value> {
    arb_json_with(true)
}

/// `floats: false` leaves out floats, whose text form need not parse back
/// bit-identically (serde_json without `float_roundtrip`).
fn arb_json_with(floats: bool) -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        3 => prop::sample::select(vec![
            "name", "modules", "workspace", "memory_max", "cpu_weight", "cpu_quota",
            "tasks_max", "settings", "ssh", "git", "owner", "resources",
        ])
        .prop_map(str::to_string),
        1 => ".{0,8}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        // A non-finite float becomes null.
        any::<f64>().prop_map(move |f| if floats { Value::from(f) } else { Value::Null }),
        prop_oneof![
            ".{0,12}",
            "[a-z0-9-]{0,14}",
            "[0-9]{1,6}(\\.[0-9]{1,3})?[KMGTkmgt]?(i?B)?",
            "-?[0-9]{1,7}%",
        ]
        .prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(key.clone(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Resource fields in range, each present or not; weight and quota exclusive.
fn arb_resources() -> impl Strategy<Value = (Option<u64>, Option<u64>, Option<u32>, Option<u64>)> {
    let cpu = prop_oneof![
        Just((None, None)),
        (1u64..=10_000).prop_map(|w| (Some(w), None)),
        (1u32..=102_400).prop_map(|q| (None, Some(q))),
    ];
    (
        proptest::option::of(32u64 << 20..=16u64 << 40),
        cpu,
        proptest::option::of(1u64..=4_194_304),
    )
        .prop_map(|(mem, (w, q), t)| (mem, w, q, t))
}

/// A valid client spec as JSON (with the size and quota in string or number form).
fn arb_valid_client_json() -> impl Strategy<Value = Value> {
    (
        "[a-z0-9]([a-z0-9-]{0,9}[a-z0-9])?",
        subsequence(MODULES.to_vec(), 0..=MODULES.len()).prop_shuffle(),
        proptest::option::of(any::<bool>()),
        arb_resources(),
        any::<bool>(),
        prop::collection::btree_map(
            prop::sample::select(MODULES.to_vec()),
            prop::collection::btree_map("[a-z_]{1,8}", arb_json_with(false), 0..3),
            0..3,
        ),
    )
        .prop_map(
            |(name, modules, workspace, (mem, weight, quota, tasks), as_strings, settings)| {
                let mut o = Map::new();
                o.insert("name".into(), json!(name));
                o.insert("modules".into(), json!(modules));
                if let Some(w) = workspace {
                    o.insert("workspace".into(), json!(w));
                }
                if let Some(m) = mem {
                    let v = if as_strings && m % (1 << 20) == 0 {
                        json!(format!("{}M", m >> 20))
                    } else {
                        json!(m)
                    };
                    o.insert("memory_max".into(), v);
                }
                if let Some(w) = weight {
                    o.insert("cpu_weight".into(), json!(w));
                }
                if let Some(q) = quota {
                    let v = if as_strings {
                        json!(format!("{q}%"))
                    } else {
                        json!(q)
                    };
                    o.insert("cpu_quota".into(), v);
                }
                if let Some(t) = tasks {
                    o.insert("tasks_max".into(), json!(t));
                }
                let settings: Map<String, Value> = settings
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), Value::Object(v.into_iter().collect())))
                    .collect();
                o.insert("settings".into(), Value::Object(settings));
                Value::Object(o)
            },
        )
}

/// The client JSON that describes the same container as a build JSON.
fn client_json_from_build(build: &Value) -> Value {
    let mut o = build.as_object().cloned().unwrap_or_default();
    o.remove("owner");
    if let Some(Value::Object(resources)) = o.remove("resources") {
        for (k, v) in resources {
            let k = if k == "cpu_quota_percent" {
                "cpu_quota".to_string()
            } else {
                k
            };
            o.insert(k, v);
        }
    }
    Value::Object(o)
}

const UNITS: [(&str, u64); 7] = [
    ("", 1),
    ("K", 1 << 10),
    ("M", 1 << 20),
    ("G", 1 << 30),
    ("T", 1 << 40),
    ("P", 1 << 50),
    ("E", 1 << 60),
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn names_matching_the_pattern_are_accepted(name in "[a-z0-9]([a-z0-9-]{0,9}[a-z0-9])?") {
        prop_assert!(name.len() <= NAME_MAX_LEN);
        prop_assert_eq!(validate_name(&name), Ok(()));
        let spec = parse_spec(&json!({ "name": name }).to_string(), &known());
        prop_assert_eq!(spec.map(|s| s.name), Ok(name));
    }

    #[test]
    fn names_with_a_foreign_char_are_rejected(
        pre in "[a-z0-9-]{0,6}",
        bad in any::<char>().prop_filter("outside [a-z0-9-]", |c| !is_name_char(*c)),
        post in "[a-z0-9-]{0,6}",
    ) {
        let name = format!("{pre}{bad}{post}");
        let e = validate_name(&name).expect_err("must be rejected");
        prop_assert_eq!(&e.field, "name");
        let e = parse_spec(&json!({ "name": name }).to_string(), &known())
            .expect_err("must be rejected");
        prop_assert_eq!(&e.field, "name");
    }

    #[test]
    fn names_longer_than_the_limit_are_rejected(name in "[a-z0-9]{12,40}") {
        let e = validate_name(&name).expect_err("too long");
        prop_assert!(e.rule.contains("at most 11"), "{}", e);
    }

    #[test]
    fn validate_name_agrees_with_the_pattern(name in "[a-z0-9A-Z_ -]{0,14}") {
        let bytes = name.as_bytes();
        let matches = !name.is_empty()
            && name.len() <= NAME_MAX_LEN
            && name.chars().all(is_name_char)
            && bytes[0] != b'-'
            && bytes[bytes.len() - 1] != b'-';
        prop_assert_eq!(validate_name(&name).is_ok(), matches, "{:?}", name);
    }

    #[test]
    fn parse_spec_never_panics_on_strings(s in ".{0,200}") {
        let _ = parse_spec(&s, &known());
    }

    #[test]
    fn parse_spec_never_panics_on_json(v in arb_json()) {
        let text = v.to_string();
        let _ = parse_spec(&text, &known());
        // And with a valid name, so the other fields are reached.
        if let Value::Object(mut o) = v {
            o.insert("name".into(), json!("dev"));
            let text = Value::Object(o).to_string();
            if let Err(e) = parse_spec(&text, &known()) {
                prop_assert!(!e.field.is_empty());
                prop_assert!(!e.rule.is_empty());
            }
        }
    }

    #[test]
    fn parse_spec_errors_are_deterministic(v in arb_json()) {
        let text = v.to_string();
        prop_assert_eq!(parse_spec(&text, &known()), parse_spec(&text, &known()));
    }

    #[test]
    fn valid_specs_round_trip_through_build_json(
        client in arb_valid_client_json(),
    ) {
        let spec = parse_spec(&client.to_string(), &known())
            .map_err(|e| TestCaseError::fail(format!("{client}: {e}")))?;
        let build = spec.to_build_json(|_, _| false);
        prop_assert!(build.get("owner").is_none(), "no owner in what Nix builds");
        prop_assert_eq!(&build["name"], &client["name"]);
        prop_assert_eq!(&build["modules"], &client["modules"]);
        prop_assert_eq!(&build["settings"], &client["settings"]);
        let workspace = client["workspace"].as_bool().unwrap_or(true);
        prop_assert_eq!(build["workspace"].as_bool(), Some(workspace));
        // Resources that are not set are left out.
        let resources = build["resources"].as_object().cloned().unwrap_or_default();
        prop_assert_eq!(resources.contains_key("memory_max"), spec.resources.memory_max.is_some());
        prop_assert_eq!(resources.values().any(Value::is_null), false);

        let again = parse_spec(&client_json_from_build(&build).to_string(), &known())
            .map_err(|e| TestCaseError::fail(format!("{build}: {e}")))?;
        prop_assert_eq!(&again, &spec);
        // The client form the daemon writes back (update) reads as the same spec.
        let client_again = spec.to_client_json();
        let again = parse_spec(&client_again.to_string(), &known())
            .map_err(|e| TestCaseError::fail(format!("{client_again}: {e}")))?;
        prop_assert_eq!(&again, &spec);

        let text = serde_json::to_string(&spec).unwrap();
        let stored: ContainerSpec = serde_json::from_str(&text).unwrap();
        prop_assert_eq!(&stored, &spec);
        prop_assert_eq!(
            spec.cpu_quota_per_sec_usec(),
            spec.resources.cpu_quota_percent.map(|p| u64::from(p) * 10_000)
        );
    }

    #[test]
    fn parse_size_of_number_and_unit(
        n in prop_oneof![0u64..4096, any::<u64>()],
        unit in 0..UNITS.len(),
        suffix in prop::sample::select(vec!["", "B", "iB", "b", "ib"]),
        lower in any::<bool>(),
    ) {
        let (letter, mult) = UNITS[unit];
        // "iB" only follows a unit letter.
        let suffix = if letter.is_empty() && suffix.eq_ignore_ascii_case("ib") {
            ""
        } else {
            suffix
        };
        let letter = if lower { letter.to_ascii_lowercase() } else { letter.to_string() };
        let s = format!("{n}{letter}{suffix}");
        match n.checked_mul(mult) {
            Some(bytes) => prop_assert_eq!(parse_size(&s), Ok(bytes), "{}", s),
            None => {
                let e = parse_size(&s).expect_err("overflow");
                prop_assert!(e.contains("too large"), "{}: {}", s, e);
            }
        }
    }

    #[test]
    fn parse_size_with_a_fraction(whole in 0u64..1024, tenths in 0u64..10, unit in 1..UNITS.len()) {
        let (letter, mult) = UNITS[unit];
        let s = format!("{whole}.{tenths}{letter}");
        let mult = u128::from(mult);
        let expected = u128::from(whole) * mult + u128::from(tenths) * mult / 10;
        match u64::try_from(expected) {
            Ok(expected) => prop_assert_eq!(parse_size(&s), Ok(expected), "{}", s),
            Err(_) => {
                let e = parse_size(&s).expect_err("overflow");
                prop_assert!(e.contains("too large"), "{}: {}", s, e);
            }
        }
    }

    #[test]
    fn parse_size_never_panics(s in ".{0,40}") {
        let _ = parse_size(&s);
    }

    #[test]
    fn parse_size_rejects_signs_and_whitespace(n in any::<u32>(), sign in "[-+ ]") {
        let signed = format!("{sign}{n}");
        let trailing = format!("{n} ");
        prop_assert!(parse_size(&signed).is_err(), "{}", signed);
        prop_assert!(parse_size(&trailing).is_err(), "{}", trailing);
    }

    #[test]
    fn format_size_reads_back_within_five_percent(bytes in any::<u64>()) {
        let s = format_size(bytes);
        match parse_size(&s) {
            Ok(back) => {
                let diff = back.abs_diff(bytes) as f64;
                prop_assert!(diff <= bytes as f64 * 0.05, "{} -> {} -> {}", bytes, s, back);
                if bytes < 1024 {
                    prop_assert_eq!(back, bytes);
                }
            }
            // Only the very top rounds up to "16E", one past u64::MAX.
            Err(_) => prop_assert_eq!(s, "16E"),
        }
    }

    #[test]
    fn format_size_of_exact_multiples_is_exact(n in 1u64..1024, unit in 0..6usize) {
        let (_, mult) = UNITS[unit];
        let bytes = n * mult;
        let s = format_size(bytes);
        prop_assert_eq!(parse_size(&s), Ok(bytes), "{}", s);
        // At most 4 digits and a unit: "1023B", "2.0G", "512M".
        prop_assert!(s.len() <= 5, "{}", s);
    }
}
