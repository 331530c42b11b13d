//! The From gate: never panics; an accepted author passes again with the same domain.
//! Input format and properties: `input_from_gate` in tests/properties/checks.rs.
#![no_main]

#[allow(dead_code)]
#[path = "../../tests/properties/checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    checks::input_from_gate(data);
});
