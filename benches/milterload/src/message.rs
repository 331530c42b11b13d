//! A message file turned into what Postfix's cleanup hands a milter: header fields with
//! their folding kept, the body with CRLF line ends, and the chain's edits applied in
//! between milters (a later milter in `smtpd_milters` sees the earlier ones' changes).
//! No Received: header is added: Postfix does not show its own first header to milters.

/// One header field. `raw` is everything after the colon, with the original leading
/// whitespace and with continuation lines joined by a bare "\n" (Postfix keeps a folded
/// header as one buffer with "\n" between its lines, and milter8.c sends it like that:
/// "Sendmail 8 sends multi-line headers as text separated by newline").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub name: Vec<u8>,
    pub raw: Vec<u8>,
}

impl Header {
    /// The value as sent in SMFIC_HEADER: milter8.c eats one space (not tab) after the
    /// colon unless the milter negotiated SMFIP_HDR_LEADSPC.
    pub fn wire_value(&self, leading_space: bool) -> &[u8] {
        if !leading_space && self.raw.first() == Some(&b' ') {
            &self.raw[1..]
        } else {
            &self.raw
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub headers: Vec<Header>,
    /// Body with CRLF line ends; every line (the last included) ends in CRLF.
    pub body: Vec<u8>,
}

/// Split one line off `input`, returning (line without CR/LF, rest).
fn line(input: &[u8]) -> (&[u8], &[u8]) {
    match input.iter().position(|&b| b == b'\n') {
        Some(i) => {
            let l = &input[..i];
            let l = l.strip_suffix(b"\r").unwrap_or(l);
            (l, &input[i + 1..])
        }
        None => (input, &[][..]),
    }
}

impl Message {
    /// Parse an RFC 5322 message (LF or CRLF line ends). Header lines that are neither a
    /// field nor a continuation end the header section, like a MIME parser would treat
    /// them (Postfix would put them in the body too).
    pub fn parse(input: &[u8]) -> Result<Message, String> {
        let mut headers: Vec<Header> = Vec::new();
        let mut rest = input;
        // A leading mbox "From " line is not a header.
        if rest.starts_with(b"From ") {
            rest = line(rest).1;
        }
        let mut body_start = rest;
        while !rest.is_empty() {
            let (l, next) = line(rest);
            if l.is_empty() {
                body_start = next;
                break;
            }
            if (l[0] == b' ' || l[0] == b'\t') && !headers.is_empty() {
                let h = headers.last_mut().unwrap();
                h.raw.push(b'\n');
                h.raw.extend_from_slice(l);
                rest = next;
                body_start = rest;
                continue;
            }
            match l.iter().position(|&b| b == b':') {
                Some(colon)
                    if colon > 0
                        && l[..colon]
                            .iter()
                            .all(|&b| b.is_ascii_graphic() || b == b' ' || b == b'\t') =>
                {
                    // Postfix (is_header.c) allows whitespace before the colon and drops it.
                    let name = l[..colon].trim_ascii_end().to_vec();
                    if name.is_empty() || name.iter().any(|&b| b == b' ' || b == b'\t') {
                        body_start = rest;
                        break;
                    }
                    headers.push(Header {
                        name,
                        raw: l[colon + 1..].to_vec(),
                    });
                    rest = next;
                    body_start = rest;
                }
                _ => {
                    body_start = rest;
                    break;
                }
            }
        }
        if headers.is_empty() {
            return Err("no header fields found".into());
        }
        let mut body = Vec::with_capacity(body_start.len() + body_start.len() / 32);
        let mut r = body_start;
        while !r.is_empty() {
            let (l, next) = line(r);
            body.extend_from_slice(l);
            body.extend_from_slice(b"\r\n");
            r = next;
        }
        Ok(Message { headers, body })
    }

    pub fn header(&self, name: &str) -> Option<&Header> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name.as_bytes()))
    }

    /// The first address in From:, for the default MAIL FROM.
    pub fn author_address(&self) -> Option<String> {
        let h = self.header("From")?;
        let v = String::from_utf8_lossy(&h.raw).replace('\n', " ");
        extract_address(&v)
    }

    pub fn add_header(&mut self, name: &[u8], raw: Vec<u8>) {
        self.headers.push(Header {
            name: name.to_vec(),
            raw,
        });
    }

    /// Sendmail semantics: index 0 is the top of the header.
    pub fn insert_header(&mut self, index: u32, name: &[u8], raw: Vec<u8>) {
        let at = (index as usize).min(self.headers.len());
        self.headers.insert(
            at,
            Header {
                name: name.to_vec(),
                raw,
            },
        );
    }

    /// Change or delete (empty `raw`) the index-th (1-based; 0 treated as 1, as milter8.c
    /// does) header of that name; a change of a missing instance appends it.
    pub fn change_header(&mut self, index: u32, name: &[u8], raw: Option<Vec<u8>>) {
        let want = index.max(1) as usize;
        let pos = self
            .headers
            .iter()
            .enumerate()
            .filter(|(_, h)| h.name.eq_ignore_ascii_case(name))
            .nth(want - 1)
            .map(|(i, _)| i);
        match (pos, raw) {
            (Some(i), Some(raw)) => self.headers[i].raw = raw,
            (Some(i), None) => {
                self.headers.remove(i);
            }
            (None, Some(raw)) => self.add_header(name, raw),
            (None, None) => {}
        }
    }
}

/// The addr-spec from a mailbox list: the first <...> if any, else the first bare token
/// with an '@' (comments and quoted display names are skipped crudely but adequately for
/// test messages).
pub fn extract_address(v: &str) -> Option<String> {
    if let Some(start) = v.find('<') {
        let end = v[start..].find('>')? + start;
        return Some(v[start + 1..end].trim().to_string());
    }
    let mut depth = 0i32;
    let cleaned: String = v
        .chars()
        .filter(|&c| {
            match c {
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    return false;
                }
                _ => {}
            }
            depth == 0
        })
        .collect();
    cleaned
        .split([',', ' ', '\t'])
        .find(|t| t.contains('@'))
        .map(|t| t.trim().to_string())
}

/// Split the body into SMFIC_BODY chunks of at most `chunk` bytes, filled to the brim as
/// milter8.c's 65535-byte buffer is (chunks do not follow line boundaries).
pub fn chunks(body: &[u8], chunk: usize) -> impl Iterator<Item = &[u8]> {
    body.chunks(chunk.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    // (Not a "\" continued literal: that would eat the folded lines' leading whitespace.)
    const MSG: &[u8] = concat!(
        "From: Alice <alice@example.test>\r\n",
        "To: bob@example.org\r\n",
        "Subject: a long\r\n",
        " folded\r\n",
        "\tsubject\r\n",
        "X-Tab:\tv\r\n",
        "\r\n",
        "line one\r\n",
        "line two"
    )
    .as_bytes();

    #[test]
    fn headers_keep_folding_as_lf() {
        let m = Message::parse(MSG).unwrap();
        assert_eq!(m.headers.len(), 4);
        let s = m.header("subject").unwrap();
        assert_eq!(s.raw, b" a long\n folded\n\tsubject");
        assert_eq!(s.wire_value(false), b"a long\n folded\n\tsubject");
        assert_eq!(s.wire_value(true), b" a long\n folded\n\tsubject");
        // Only a space is eaten, never a tab.
        assert_eq!(m.header("x-tab").unwrap().wire_value(false), b"\tv");
    }

    #[test]
    fn body_is_crlf_and_ends_in_crlf() {
        let m = Message::parse(MSG).unwrap();
        assert_eq!(m.body, b"line one\r\nline two\r\n");
        let lf = Message::parse(b"From: a@b.test\nSubject: x\n\nhello\nworld\n").unwrap();
        assert_eq!(lf.body, b"hello\r\nworld\r\n");
        let none = Message::parse(b"From: a@b.test\n").unwrap();
        assert!(none.body.is_empty());
    }

    #[test]
    fn name_whitespace_before_colon_is_dropped() {
        let m = Message::parse(b"Subject : x\nFrom: a@b.test\n\nb\n").unwrap();
        assert_eq!(m.headers[0].name, b"Subject");
        assert_eq!(m.headers[0].raw, b" x");
    }

    #[test]
    fn from_address_variants() {
        let m = Message::parse(MSG).unwrap();
        assert_eq!(m.author_address().as_deref(), Some("alice@example.test"));
        assert_eq!(
            extract_address("bob@example.org (Bob)").as_deref(),
            Some("bob@example.org")
        );
        assert_eq!(
            extract_address("\"Q\" <q@x.test>, r@y.test").as_deref(),
            Some("q@x.test")
        );
        assert_eq!(extract_address("undisclosed"), None);
    }

    #[test]
    fn chain_edits() {
        let mut m = Message::parse(MSG).unwrap();
        m.insert_header(0, b"DKIM-Signature", b" v=1".to_vec());
        assert_eq!(m.headers[0].name, b"DKIM-Signature");
        m.add_header(b"X-Z", b" z".to_vec());
        assert_eq!(m.headers.last().unwrap().name, b"X-Z");
        m.change_header(1, b"subject", Some(b" new".to_vec()));
        assert_eq!(m.header("Subject").unwrap().raw, b" new");
        m.change_header(1, b"Subject", None);
        assert!(m.header("Subject").is_none());
        m.change_header(3, b"X-New", Some(b" appended".to_vec()));
        assert_eq!(m.headers.last().unwrap().name, b"X-New");
    }

    #[test]
    fn chunking_fills_to_size() {
        let body = vec![b'a'; 10];
        let c: Vec<_> = chunks(&body, 4).map(<[u8]>::len).collect();
        assert_eq!(c, [4, 4, 2]);
    }
}
