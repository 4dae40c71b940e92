//! The container spec parser: whatever a client sends, it answers a spec or a
//! typed error naming a field, never a panic; and what it accepts round-trips.
#![no_main]

use libfuzzer_sys::fuzz_target;
use voxnix::engine::spec::{parse_spec, validate_name};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let known: Vec<String> = ["git", "fish", "ssh", "workspace"].iter().map(|s| s.to_string()).collect();
    match parse_spec(text, &known) {
        Ok(spec) => {
            assert!(validate_name(&spec.name).is_ok());
            assert!(spec.modules.iter().all(|m| known.contains(m)));
            let build = spec.to_build_json("telegram:1");
            assert_eq!(build["name"], spec.name.as_str());
        }
        Err(e) => assert!(!e.field.is_empty() && !e.rule.is_empty()),
    }
});
