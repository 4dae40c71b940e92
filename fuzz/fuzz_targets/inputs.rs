//! Everything else that parses outside input: owners (from the bus), NixOS
//! conf files (read back from /etc), sizes (from specs and the CLI), daemon
//! configuration files.
#![no_main]

use libfuzzer_sys::fuzz_target;
use voxnix::config::Config;
use voxnix::engine::Owner;
use voxnix::engine::spec::{format_size, parse_size};
use voxnix::host::conf;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(o) = Owner::parse(text) {
        assert_eq!(o.as_str(), text);
        assert!(!o.kind().is_empty());
    }
    let kv = conf::parse(text);
    for (k, _) in kv {
        assert!(!k.contains('\n'));
    }
    if let Ok(n) = parse_size(text) {
        let back = parse_size(&format_size(n));
        assert!(back.is_ok());
    }
    let _ = Config::parse(text);
    let c = conf::ContainerConf { extra_nspawn_flags: vec![text.to_string()], ..Default::default() };
    if let Some(rendered) = c.render() {
        // A flag that renders must come back as exactly itself.
        assert_eq!(conf::parse(&rendered).get("EXTRA_NSPAWN_FLAGS").map(String::as_str), Some(text));
    }
});
