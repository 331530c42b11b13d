//! The Authentication-Results writer: one field that reads back, token by token.
//! Input format and properties: `input_authres_render` in tests/properties/checks.rs.
#![no_main]

#[allow(dead_code)]
#[path = "../../tests/properties/checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    checks::input_authres_render(data);
});
