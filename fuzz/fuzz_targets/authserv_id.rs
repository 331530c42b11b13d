//! The authserv-id reader of Authentication-Results values.
//! Input format and properties: `input_authserv_id` in tests/properties/checks.rs.
#![no_main]

#[allow(dead_code)]
#[path = "../../tests/properties/checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    checks::input_authserv_id(data);
});
