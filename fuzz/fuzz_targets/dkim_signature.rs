//! DKIM-Signature parsing (mail-auth) and rmilter's prefilter.
//! Input format and properties: `input_dkim_signature` in tests/properties/checks.rs.
#![no_main]

#[allow(dead_code)]
#[path = "../../tests/properties/checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    checks::input_dkim_signature(data);
});
