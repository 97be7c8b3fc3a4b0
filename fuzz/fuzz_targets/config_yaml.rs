//! The configuration file: any UTF-8 text through `Config::from_yaml` (which parses and
//! validates). What parses must print as canonical YAML that reads back to the same
//! configuration, as `sluice config pull` / `push` rely on.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_core::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = Config::from_yaml(text, "fuzz.yaml") else {
        return;
    };
    let _ = config.warnings();
    for table in &config.tables {
        let _ = config.find_table(&table.key());
    }
    let Ok(canonical) = config.to_yaml() else {
        panic!("a valid configuration does not print as YAML");
    };
    match Config::from_yaml(&canonical, "canonical.yaml") {
        Ok(again) => assert_eq!(
            again.to_yaml().ok().as_deref(),
            Some(canonical.as_str()),
            "canonical YAML is not a fixed point"
        ),
        Err(e) => panic!("canonical YAML of a valid configuration is refused: {e}\n{canonical}"),
    }
});
