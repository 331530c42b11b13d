//! Milter header fields (LF folds) to the CRLF header section and back.
//! Input format and properties: `input_header_assembly` in tests/properties/checks.rs.
#![no_main]

#[allow(dead_code)]
#[path = "../../tests/properties/checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    checks::input_header_assembly(data);
});
