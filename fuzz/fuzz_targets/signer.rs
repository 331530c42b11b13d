//! The signer: whole body, chunked body and mail-auth's one-shot signer agree.
//! Input format and properties: `input_signer` in tests/properties/checks.rs.
#![no_main]

#[allow(dead_code)]
#[path = "../../tests/properties/checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    checks::input_signer(data);
});
