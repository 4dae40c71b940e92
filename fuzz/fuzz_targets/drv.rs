//! The .drv (ATerm) reader: whatever bytes a derivation file holds, it
//! answers a derivation or an error, never a panic; and the name splitting
//! and module lookup built on it never panic either.
//!
//! Input: one byte N, then N bytes of derivation name (Nix keeps the name
//! outside the file), then the file's bytes. Seed it with real files, e.g.
//! `for f in /nix/store/*.drv; do (printf '\x05hello'; cat "$f") > corpus/drv/$(basename "$f"); done`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use voxnix::nix::drv::{modules_of, name_from_path, parse, parse_drv_name};

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let n = usize::from(n).min(rest.len());
    let (name, bytes) = rest.split_at(n);
    let name = String::from_utf8_lossy(name).into_owned();
    let split = parse_drv_name(&name);
    assert!(name.starts_with(&split.name));
    let _ = name_from_path(std::path::Path::new(&name));
    if let Ok(drv) = parse(bytes, &name) {
        assert_eq!(drv.name, name);
        let _ = modules_of(&drv);
        for input in drv.input_drvs.keys() {
            let _ = parse_drv_name(input);
            let _ = name_from_path(std::path::Path::new(input));
        }
    }
});
