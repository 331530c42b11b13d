//! DKIM key records (mail-auth) and rmilter's RSA key-size reader.
//! Input format and properties: `input_dkim_key` in tests/properties/checks.rs.
#![no_main]

#[allow(dead_code)]
#[path = "../../tests/properties/checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    checks::input_dkim_key(data);
});
