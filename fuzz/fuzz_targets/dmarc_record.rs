//! DMARC records (mail-auth) through rmilter's policy decision and A-R field.
//! Input format and properties: `input_dmarc_record` in tests/properties/checks.rs.
#![no_main]

#[allow(dead_code)]
#[path = "../../tests/properties/checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    checks::input_dmarc_record(data);
});
