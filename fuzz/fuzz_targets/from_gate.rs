//! Fuzz the From gate: arbitrary header fields must never panic, and an
//! accepted author must pass the gate again with the same domain.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Split the input into header fields: "name\0value\0name\0value...".
    let parts: Vec<&[u8]> = data.split(|&b| b == 0).collect();
    let fields: Vec<(&[u8], &[u8])> = parts.chunks(2).filter_map(|c| Some((c[0], *c.get(1)?))).collect();
    if let Ok(author) = rmilter::identity::author(fields.iter().copied()) {
        let value = format!(" {}", author.address);
        let again = rmilter::identity::author([(&b"From"[..], value.as_bytes())])
            .expect("an accepted address is accepted again");
        assert_eq!(again.domain, author.domain);
    }
});
