//! Configuration text through the real loader: a configuration or a one-line error.
//! Input format and properties: `input_config` in tests/properties/checks.rs.
#![no_main]

#[allow(dead_code)]
#[path = "../../tests/properties/checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    checks::input_config(data);
});
