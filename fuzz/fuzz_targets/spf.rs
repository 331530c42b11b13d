//! SPF record parser, macro expansion and check_host over an in-memory zone.
//! Input format and properties: `input_spf` in tests/properties/checks.rs.
#![no_main]

#[allow(dead_code)]
#[path = "../../tests/properties/checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    checks::input_spf(data);
});
