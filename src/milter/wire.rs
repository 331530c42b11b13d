//! Pure conversions from what the milter protocol delivers to wire form,
//! kept apart from the session so that fuzz targets and property tests can
//! call them directly.

/// The header section in wire form for the signer and the verifier:
/// `Name:value\r\n` per field, with the milter's "\n" line breaks turned
/// back into CRLF. `fields` are (name without colon, value) as the MTA
/// sent them; with `leading_space` negotiated the value keeps the space
/// after the colon, otherwise one is put back.
pub fn header_section<'a>(
    fields: impl IntoIterator<Item = (&'a [u8], &'a [u8])> + Clone,
    leading_space: bool,
) -> Vec<u8> {
    let size: usize = fields
        .clone()
        .into_iter()
        .map(|(name, value)| name.len() + value.len() + 8)
        .sum();
    let mut block = Vec::with_capacity(size);
    for (name, value) in fields {
        block.extend_from_slice(name);
        block.push(b':');
        if !leading_space {
            block.push(b' ');
        }
        let mut prev = 0u8;
        for &b in value {
            if b == b'\n' && prev != b'\r' {
                block.push(b'\r');
            }
            block.push(b);
            prev = b;
        }
        block.extend_from_slice(b"\r\n");
    }
    block
}
