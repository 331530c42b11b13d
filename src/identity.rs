//! The From gate: rmilter's single source of the author identity (RFC5322.From).
//!
//! DKIM alignment, DMARC and the signer all need one author domain, and every
//! DMARC bypass of recent years (OpenDMARC CVE-2019-16378, CVE-2020-12272,
//! the CVE-2021-34555 crash, the "Composition Kills" payloads) came from a From
//! value that two parsers read differently. This module therefore parses the
//! header fields itself, with a real RFC 5322 tokenizer, and either returns
//! exactly one author address and domain or a typed [`Refusal`]: no From
//! field, several From fields, several mailboxes, no mailbox, invalid syntax,
//! or syntax that parsers could read in more than one way. It never picks one
//! reading silently. A display name or comment that shows another domain's
//! address is reported in [`Author::display_domain`], so callers can flag it.
//!
//! RFC 2047 encoded-words are decoded only to look for such hidden addresses
//! (in display names, quoted strings, comments and the local part; never to
//! read the addr-spec itself), in every charset mail-parser knows (an
//! unknown one is read as UTF-8, as mail-parser does); a local part holding
//! an address (`"ceo@bank.example"@evil.example`) is reported the same way.
//!
//! A value that is not UTF-8 (a raw Latin-1 display name, still common) is
//! accepted when its addr-spec is plain ASCII: the other bytes can only be
//! display text, read as opaque.

use std::borrow::Cow;
use std::fmt;

/// Deepest comment nesting accepted. RFC 5322 sets no limit; rmilter bounds it
/// so that a hostile value cannot build deep state.
const MAX_COMMENT_DEPTH: usize = 64;
/// Distinct domains kept in [`Refusal::SeveralAddresses`].
const MAX_DOMAINS_KEPT: usize = 50;
/// RFC 1035 §2.3.4: 255 octets on the wire, 253 in text form without the root dot.
const MAX_DOMAIN_OCTETS: usize = 253;
/// RFC 1035 §2.3.4: labels are 63 octets or less.
const MAX_LABEL_OCTETS: usize = 63;
/// Longest domain text handed to IDNA processing. Every non-ASCII character
/// becomes at least one A-label octet, so anything longer than four times the
/// DNS limit cannot give a valid name.
const MAX_RAW_DOMAIN: usize = 4 * MAX_DOMAIN_OCTETS;

/// One author address that passed the gate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Author {
    /// The addr-spec as written (`local@domain`), route portion removed, domain part lower-cased A-label.
    pub address: String,
    /// The author domain: lower case, A-label (IDNA), no trailing dot.
    pub domain: String,
    /// Set when the display name or a comment (after decoding RFC 2047 encoded-words) contains an
    /// address whose domain differs from `domain` (RFC 9989 §11.4 display-name attacks; espoofer server_a15).
    /// Holds that other domain (lower case). The gate does NOT refuse for this; callers decide.
    pub display_domain: Option<String>,
}

/// Why the gate did not yield one author.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No From field at all.
    NoFrom,
    /// More than one From field (count).
    SeveralFromFields(usize),
    /// One From field with several mailboxes. `count` mailboxes; `domains`: the distinct author
    /// domains (lower-case A-label, in order of appearance, at most 50 kept).
    SeveralAddresses { count: usize, domains: Vec<String> },
    /// A From field with no mailbox (empty value, empty group `undisclosed-recipients:;`).
    NoAddress,
    /// Syntax that is invalid (reason is a short lowercase text for logs and SMTP replies).
    Malformed(&'static str),
    /// Syntax that parsers can read in more than one way (reason as above).
    Ambiguous(&'static str),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::NoFrom => f.write_str("message has no From field"),
            Refusal::SeveralFromFields(n) => write!(f, "message has {n} From fields"),
            Refusal::SeveralAddresses { count, domains } => {
                write!(f, "From field has {count} addresses")?;
                if !domains.is_empty() {
                    f.write_str(" (")?;
                    for (i, d) in domains.iter().take(3).enumerate() {
                        if i > 0 {
                            f.write_str(", ")?;
                        }
                        f.write_str(d)?;
                    }
                    if domains.len() > 3 {
                        write!(f, " and {} more domains", domains.len() - 3)?;
                    }
                    f.write_str(")")?;
                }
                Ok(())
            }
            Refusal::NoAddress => f.write_str("From field has no address"),
            Refusal::Malformed(reason) => write!(f, "malformed From field: {reason}"),
            Refusal::Ambiguous(reason) => write!(f, "ambiguous From field: {reason}"),
        }
    }
}

impl std::error::Error for Refusal {}

/// Run the gate over a message's header fields in order. `name` is the field name as the MTA gave it
/// (no colon; may carry trailing whitespace, e.g. Postfix passes `From ` for the obsolete `From :`),
/// `value` the raw value (may start with the space after the colon; folded lines are joined with
/// "\n" followed by space/tab as the milter protocol delivers them, or "\r\n" + WSP; either is accepted).
///
/// # Errors
///
/// A [`Refusal`] unless the header names exactly one unambiguous author. The
/// checks run in this order and the first that fails decides: a field name
/// that is `From` disguised by whitespace or control characters, then the
/// number of From fields, then the value of the one From field.
pub fn author<'a>(
    headers: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
) -> Result<Author, Refusal> {
    let mut count: usize = 0;
    let mut value: Option<&'a [u8]> = None;
    let mut disguised = false;
    for (name, val) in headers {
        match classify_name(name) {
            FieldName::From => {
                count = count.saturating_add(1);
                value.get_or_insert(val);
            }
            FieldName::Disguised => disguised = true,
            FieldName::Other => {}
        }
    }
    // RELIABILITY F3: a From name broken by whitespace, folding or a control
    // character is read as From by some parsers and not by others.
    if disguised {
        return Err(Refusal::Malformed("malformed From field name"));
    }
    // RFC 5322 §3.6: exactly one From field (RFC 7489 §6.6.1: several are
    // refused, not picked from).
    match (count, value) {
        (1, Some(v)) => parse_value(v),
        (0, _) | (_, None) => Err(Refusal::NoFrom),
        (n, _) => Err(Refusal::SeveralFromFields(n)),
    }
}

/// How a field name relates to From.
enum FieldName {
    From,
    /// Reads as `from` once whitespace and control characters are removed.
    Disguised,
    Other,
}

fn is_wsp(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn classify_name(name: &[u8]) -> FieldName {
    let mut end = name.len();
    while end > 0 && name.get(end - 1).copied().is_some_and(is_wsp) {
        end -= 1;
    }
    let trimmed = name.get(..end).unwrap_or_default();
    // RFC 5322 §4.5.2: obs-from = "From" *WSP ":", so `From ` (Postfix's
    // view of `From :`) is a From field. Field names are ABNF strings and
    // compare case-insensitively (RFC 5234 §2.3).
    if trimmed.eq_ignore_ascii_case(b"from") {
        return FieldName::From;
    }
    let visible = name
        .iter()
        .filter(|b| !(b.is_ascii_whitespace() || b.is_ascii_control()))
        .map(u8::to_ascii_lowercase);
    if visible.eq(b"from".iter().copied()) {
        FieldName::Disguised
    } else {
        FieldName::Other
    }
}

/// Check the raw value and unfold it. The flag is set when the value was not
/// UTF-8 and its invalid bytes were replaced (U+FFFD, which reads as atext:
/// no ASCII delimiter is ever consumed by the replacement).
fn unfold(raw: &[u8]) -> Result<(String, bool), Refusal> {
    for (i, &b) in raw.iter().enumerate() {
        let next = raw.get(i + 1).copied();
        match b {
            b'\0' => return Err(Refusal::Malformed("nul in From")),
            // RFC 5322 §2.2.3: CR and LF appear only together, as CRLF
            // followed by WSP (folding).
            b'\r' if next != Some(b'\n') => return Err(Refusal::Malformed("bare cr in From")),
            b'\n' if !next.is_some_and(is_wsp) => {
                return Err(Refusal::Malformed("bare lf in From"));
            }
            _ => {}
        }
    }
    // RFC 6532 §3.2: UTF-8 is allowed in header values. Raw 8-bit text in
    // another charset is not, but real mail carries it in display names.
    let text = String::from_utf8_lossy(raw);
    let lossy = matches!(text, Cow::Owned(_));
    // RFC 5322 §2.2.3: unfolding removes every CRLF that is followed by WSP.
    Ok((text.replace("\r\n", "").replace('\n', ""), lossy))
}

/// Parse the value of the one From field.
fn parse_value(raw: &[u8]) -> Result<Author, Refusal> {
    let (text, lossy) = unfold(raw)?;
    let author = parse_text(&text, lossy);
    if lossy && let Err(Refusal::Malformed(_)) = author {
        // The bytes that are not UTF-8 are the likeliest reason.
        return Err(Refusal::Malformed("From is not valid utf-8"));
    }
    author
}

fn parse_text(text: &str, lossy: bool) -> Result<Author, Refusal> {
    let lexed = lex(text)?;
    let mut parser = Parser {
        toks: &lexed.tokens,
        pos: 0,
    };
    let mut found = Found::default();
    // RFC 5322 §3.6.2: from = "From:" mailbox-list CRLF; groups (address-list,
    // §3.4) are read too and their members count as mailboxes.
    parser.list(&mut found, false)?;
    match found.count {
        0 => Err(Refusal::NoAddress),
        1 => {
            let mb = found.first.ok_or(Refusal::NoAddress)?;
            // Bytes that are not UTF-8 are opaque display text only: an
            // addr-spec that holds any is read differently by every parser.
            if lossy && !mb.address.is_ascii() {
                return Err(Refusal::Malformed("From is not valid utf-8"));
            }
            // The local part may show an address too, quoted or encoded.
            let local = mb.address.rsplit_once('@').map_or("", |(local, _)| local);
            let texts = found
                .group_names
                .iter()
                .map(|g| Cow::Borrowed(g.as_str()))
                .chain(std::iter::once(Cow::Borrowed(mb.display.as_str())))
                .chain(lexed.comments.iter().map(|c| unescape(c)))
                .chain(std::iter::once(unescape(local)));
            let display_domain = other_display_domain(texts, &mb.domain);
            Ok(Author {
                address: mb.address,
                domain: mb.domain,
                display_domain,
            })
        }
        count => Err(Refusal::SeveralAddresses {
            count,
            domains: found.domains,
        }),
    }
}

// ---------------------------------------------------------------------------
// Tokenizer
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A run of atext (RFC 5322 §3.2.3, with UTF-8 per RFC 6532 §3.2).
    Atom,
    /// A quoted string, `text` includes the quotes.
    Quoted,
    /// A domain literal, `text` includes the brackets.
    DomainLiteral,
    Dot,
    Lt,
    Gt,
    At,
    Comma,
    Semi,
    Colon,
}

#[derive(Debug, Clone, Copy)]
struct Token<'s> {
    kind: Kind,
    text: &'s str,
    /// Whitespace or a comment came right before this token.
    space_before: bool,
}

struct Lexed<'s> {
    tokens: Vec<Token<'s>>,
    /// The inner text of every top-level comment, as written.
    comments: Vec<&'s str>,
}

/// RFC 5322 §3.2.3: atext, plus UTF-8 non-ASCII (RFC 6532 §3.2).
fn is_atext(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&c) || c >= 0x80
}

/// Control characters other than HTAB (RFC 5322 §3.2.3 obs-NO-WS-CTL and
/// friends); rmilter refuses them anywhere in From.
fn is_forbidden_ctl(c: u8) -> bool {
    (c < 0x20 && c != b'\t') || c == 0x7f
}

fn lex(s: &str) -> Result<Lexed<'_>, Refusal> {
    let b = s.as_bytes();
    let mut tokens = Vec::new();
    let mut comments = Vec::new();
    let mut i = 0;
    let mut space = false;
    while let Some(&c) = b.get(i) {
        let single = match c {
            b' ' | b'\t' => {
                space = true;
                i += 1;
                continue;
            }
            b'(' => {
                // RFC 5322 §3.2.2: comments nest and are CFWS.
                let end = skip_comment(b, i)?;
                comments.push(s.get(i + 1..end - 1).unwrap_or_default());
                space = true;
                i = end;
                continue;
            }
            b')' => return Err(Refusal::Ambiguous("unbalanced parenthesis")),
            b'"' => {
                // RFC 5322 §3.2.4: quoted-string.
                let end = skip_delimited(b, i, b'"', "unbalanced quote")?;
                tokens.push(Token {
                    kind: Kind::Quoted,
                    text: s.get(i..end).unwrap_or_default(),
                    space_before: space,
                });
                space = false;
                i = end;
                continue;
            }
            b'[' => {
                // RFC 5322 §3.4.1: domain-literal.
                let end = skip_delimited(b, i, b']', "unbalanced square bracket")?;
                tokens.push(Token {
                    kind: Kind::DomainLiteral,
                    text: s.get(i..end).unwrap_or_default(),
                    space_before: space,
                });
                space = false;
                i = end;
                continue;
            }
            b']' => return Err(Refusal::Ambiguous("unbalanced square bracket")),
            // RFC 5322 §3.2.1: a quoted-pair exists only inside a quoted
            // string, a comment or a domain literal. Outside them parsers
            // disagree on what `\,` means (espoofer server_a17).
            b'\\' => {
                return Err(Refusal::Ambiguous(
                    "quoted-pair outside quoted string or comment",
                ));
            }
            b'.' => Kind::Dot,
            b'<' => Kind::Lt,
            b'>' => Kind::Gt,
            b'@' => Kind::At,
            b',' => Kind::Comma,
            b';' => Kind::Semi,
            b':' => Kind::Colon,
            c if is_atext(c) => {
                let start = i;
                while b.get(i).copied().is_some_and(is_atext) {
                    i += 1;
                }
                tokens.push(Token {
                    kind: Kind::Atom,
                    text: s.get(start..i).unwrap_or_default(),
                    space_before: space,
                });
                space = false;
                continue;
            }
            _ => return Err(Refusal::Malformed("control character in From")),
        };
        tokens.push(Token {
            kind: single,
            text: s.get(i..i + 1).unwrap_or_default(),
            space_before: space,
        });
        space = false;
        i += 1;
    }
    Ok(Lexed { tokens, comments })
}

/// Skip a (nested) comment starting at `start` (the `(`); return the index
/// after its closing `)`. Iterative, so the cost is linear in its length.
fn skip_comment(b: &[u8], start: usize) -> Result<usize, Refusal> {
    let mut depth: usize = 0;
    let mut i = start;
    loop {
        match b.get(i) {
            None => return Err(Refusal::Ambiguous("unbalanced parenthesis")),
            Some(b'(') => {
                depth += 1;
                if depth > MAX_COMMENT_DEPTH {
                    return Err(Refusal::Malformed("comments nested too deeply"));
                }
            }
            Some(b')') => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return Ok(i + 1);
                }
            }
            // RFC 5322 §3.2.2: quoted-pair inside ccontent.
            Some(b'\\') => {
                i += 1;
                match b.get(i) {
                    None => return Err(Refusal::Ambiguous("unbalanced parenthesis")),
                    Some(&c) if is_forbidden_ctl(c) => {
                        return Err(Refusal::Malformed("control character in From"));
                    }
                    Some(_) => {}
                }
            }
            Some(&c) if is_forbidden_ctl(c) => {
                return Err(Refusal::Malformed("control character in From"));
            }
            Some(_) => {}
        }
        i += 1;
    }
}

/// Skip a quoted string or domain literal starting at `start`; return the
/// index after the closing delimiter.
fn skip_delimited(
    b: &[u8],
    start: usize,
    close: u8,
    unbalanced: &'static str,
) -> Result<usize, Refusal> {
    let mut i = start + 1;
    loop {
        match b.get(i) {
            None => return Err(Refusal::Ambiguous(unbalanced)),
            Some(&c) if c == close => return Ok(i + 1),
            // RFC 5322 §3.4.1: dtext excludes `[`, so a nested one is invalid.
            Some(b'[') if close == b']' => {
                return Err(Refusal::Malformed("invalid domain literal"));
            }
            // RFC 5322 §3.2.1: quoted-pair.
            Some(b'\\') => {
                i += 1;
                match b.get(i) {
                    None => return Err(Refusal::Ambiguous(unbalanced)),
                    Some(&c) if is_forbidden_ctl(c) => {
                        return Err(Refusal::Malformed("control character in From"));
                    }
                    Some(_) => {}
                }
            }
            Some(&c) if is_forbidden_ctl(c) => {
                return Err(Refusal::Malformed("control character in From"));
            }
            Some(_) => {}
        }
        i += 1;
    }
}

// ---------------------------------------------------------------------------
// Parser
// ---------------------------------------------------------------------------

/// One mailbox found in the field.
struct Mailbox {
    address: String,
    domain: String,
    /// Its display name, quoted strings unescaped, encoded-words not yet decoded.
    display: String,
}

#[derive(Default)]
struct Found {
    count: usize,
    first: Option<Mailbox>,
    domains: Vec<String>,
    group_names: Vec<String>,
}

impl Found {
    fn push(&mut self, mb: Mailbox) {
        self.count = self.count.saturating_add(1);
        if self.domains.len() < MAX_DOMAINS_KEPT && !self.domains.contains(&mb.domain) {
            self.domains.push(mb.domain.clone());
        }
        if self.first.is_none() {
            self.first = Some(mb);
        }
    }
}

struct Parser<'t, 's> {
    toks: &'t [Token<'s>],
    pos: usize,
}

fn is_word(kind: Option<Kind>) -> bool {
    matches!(kind, Some(Kind::Atom | Kind::Quoted | Kind::Dot))
}

impl<'t, 's> Parser<'t, 's> {
    fn kind(&self) -> Option<Kind> {
        self.toks.get(self.pos).map(|t| t.kind)
    }

    fn bump(&mut self) {
        self.pos = self.pos.saturating_add(1);
    }

    /// Consume words (atoms, quoted strings, dots) and return them.
    fn words(&mut self) -> &'t [Token<'s>] {
        let start = self.pos;
        while is_word(self.kind()) {
            self.bump();
        }
        self.toks.get(start..self.pos).unwrap_or_default()
    }

    /// RFC 5322 §3.4 address-list / mailbox-list; with `in_group`, a
    /// group-list ending before `;`.
    fn list(&mut self, found: &mut Found, in_group: bool) -> Result<(), Refusal> {
        loop {
            // RFC 5322 §4.4: obs-addr-list and obs-mbox-list allow empty
            // list elements.
            while self.kind() == Some(Kind::Comma) {
                self.bump();
            }
            match self.kind() {
                None if in_group => return Err(Refusal::Malformed("group not terminated")),
                None => return Ok(()),
                Some(Kind::Semi) if in_group => return Ok(()),
                _ => {}
            }
            self.address(found, in_group)?;
        }
    }

    /// RFC 5322 §3.4: address = mailbox / group; mailbox = name-addr / addr-spec.
    /// On success the next token is a comma, the end, or (in a group) `;`.
    fn address(&mut self, found: &mut Found, in_group: bool) -> Result<(), Refusal> {
        // RFC 5322 §3.2.5 / §4.1: a phrase (obs-phrase allows dots) or the
        // local part of an addr-spec; the next special decides which.
        let words = self.words();
        match self.kind() {
            Some(Kind::Lt) => {
                // RFC 5322 §3.4: name-addr = [display-name] angle-addr.
                self.bump();
                let (address, domain) = self.angle_addr()?;
                // RFC 5322 §3.4: only CFWS may follow the `>`; text after it
                // is read as the address by some parsers (espoofer server_a19).
                match self.kind() {
                    None | Some(Kind::Comma) => {}
                    Some(Kind::Semi) if in_group => {}
                    Some(Kind::Semi) => return Err(Refusal::Ambiguous("semicolon outside group")),
                    Some(_) => return Err(Refusal::Ambiguous("text after angle address")),
                }
                found.push(Mailbox {
                    address,
                    domain,
                    display: phrase_text(words),
                });
                Ok(())
            }
            Some(Kind::Colon) => {
                // RFC 5322 §3.4: group = display-name ":" [group-list] ";" [CFWS].
                if in_group {
                    return Err(Refusal::Malformed("nested group"));
                }
                if words.is_empty() {
                    return Err(Refusal::Malformed("group without display name"));
                }
                self.bump();
                found.group_names.push(phrase_text(words));
                self.list(found, true)?;
                self.bump(); // the `;` that ended the group-list
                match self.kind() {
                    None | Some(Kind::Comma) => Ok(()),
                    Some(Kind::Semi) => Err(Refusal::Ambiguous("semicolon outside group")),
                    Some(_) => Err(Refusal::Ambiguous("text after group")),
                }
            }
            Some(Kind::At) => {
                // RFC 5322 §3.4.1: addr-spec = local-part "@" domain.
                let local = local_part(words)?;
                self.bump();
                let domain = self.domain()?;
                match self.kind() {
                    None | Some(Kind::Comma) => {}
                    Some(Kind::Semi) if in_group => {}
                    Some(Kind::Semi) => return Err(Refusal::Ambiguous("semicolon outside group")),
                    // `admin@victim <x@attack>`: an unquoted `@` in what
                    // would be the display name.
                    Some(Kind::Lt | Kind::Colon) => {
                        return Err(Refusal::Ambiguous("unquoted @ in display name"));
                    }
                    Some(Kind::At) => return Err(Refusal::Ambiguous("more than one @ in address")),
                    Some(Kind::Gt) => return Err(Refusal::Ambiguous("unbalanced angle bracket")),
                    Some(_) => {
                        return Err(Refusal::Ambiguous("address followed by text without comma"));
                    }
                }
                found.push(Mailbox {
                    address: format!("{local}@{domain}"),
                    domain,
                    display: String::new(),
                });
                Ok(())
            }
            Some(Kind::Gt) => Err(Refusal::Ambiguous("unbalanced angle bracket")),
            Some(Kind::DomainLiteral) => Err(Refusal::Malformed("misplaced domain literal")),
            // Only reachable outside a group: `list` stops at `;` in one.
            Some(Kind::Semi) if words.is_empty() => {
                Err(Refusal::Ambiguous("semicolon outside group"))
            }
            // A phrase with no address at all. An MUA that decodes an
            // encoded-word may show an address here (espoofer server_a15).
            Some(Kind::Semi | Kind::Comma) | None => {
                let text = phrase_text(words);
                if !text.contains('@') && decode_encoded_words(&text).contains('@') {
                    Err(Refusal::Ambiguous("encoded-word hides an address"))
                } else {
                    Err(Refusal::Ambiguous("missing @ in address"))
                }
            }
            // `words` stops only at a special, so no other kind follows it.
            Some(Kind::Atom | Kind::Quoted | Kind::Dot) => {
                Err(Refusal::Malformed("unexpected token"))
            }
        }
    }

    /// After `<`: RFC 5322 §3.4 angle-addr, or §4.4 obs-angle-addr with a
    /// route. Consumes the closing `>`. Returns (address, domain).
    fn angle_addr(&mut self) -> Result<(String, String), Refusal> {
        if matches!(self.kind(), Some(Kind::At | Kind::Comma)) {
            self.route()?;
        }
        let words = self.words();
        match self.kind() {
            Some(Kind::At) => {}
            Some(Kind::Gt) if words.is_empty() => {
                return Err(Refusal::Malformed("empty angle address"));
            }
            Some(Kind::Gt) => return Err(Refusal::Ambiguous("missing @ in address")),
            None | Some(Kind::Lt) => return Err(Refusal::Ambiguous("unbalanced angle bracket")),
            Some(_) => return Err(Refusal::Ambiguous("unexpected text in angle address")),
        }
        let local = local_part(words)?;
        self.bump();
        let domain = self.domain()?;
        match self.kind() {
            // RFC 5322 §3.4: CFWS may precede the `>` (`<test@facebook.com >`).
            Some(Kind::Gt) => {
                self.bump();
                Ok((format!("{local}@{domain}"), domain))
            }
            Some(Kind::At) => Err(Refusal::Ambiguous("more than one @ in address")),
            None | Some(Kind::Lt) => Err(Refusal::Ambiguous("unbalanced angle bracket")),
            Some(_) => Err(Refusal::Ambiguous("unexpected text in angle address")),
        }
    }

    /// RFC 5322 §4.4: obs-route = obs-domain-list ":", where obs-domain-list =
    /// *(CFWS / ",") "@" domain *("," [CFWS] ["@" domain]). The route is
    /// dropped; only the addr-spec after it names the author.
    fn route(&mut self) -> Result<(), Refusal> {
        let mut domains = 0usize;
        loop {
            while self.kind() == Some(Kind::Comma) {
                self.bump();
            }
            match self.kind() {
                Some(Kind::At) => {
                    self.bump();
                    self.route_domain()?;
                    domains += 1;
                }
                Some(Kind::Colon) if domains > 0 => {
                    self.bump();
                    return Ok(());
                }
                // `<@example.com>`: a route-like start with no local part.
                Some(Kind::Gt) if domains > 0 => {
                    return Err(Refusal::Malformed("empty local part"));
                }
                None => return Err(Refusal::Ambiguous("unbalanced angle bracket")),
                Some(_) => return Err(Refusal::Malformed("invalid route")),
            }
        }
    }

    fn route_domain(&mut self) -> Result<(), Refusal> {
        match self.kind() {
            Some(Kind::DomainLiteral) => {
                self.bump();
                Ok(())
            }
            Some(Kind::Atom) => {
                while matches!(self.kind(), Some(Kind::Atom | Kind::Dot)) {
                    self.bump();
                }
                Ok(())
            }
            _ => Err(Refusal::Malformed("invalid route")),
        }
    }

    /// After `@`: RFC 5322 §3.4.1 domain = dot-atom / domain-literal /
    /// obs-domain. Returns the normalised author domain.
    fn domain(&mut self) -> Result<String, Refusal> {
        match self.kind() {
            // RFC 7489 §6.6.1: the author domain is a domain name; an
            // address literal has no DMARC policy to look up.
            Some(Kind::DomainLiteral) => return Err(Refusal::Malformed("address literal in From")),
            Some(Kind::Atom | Kind::Dot) => {}
            _ => return Err(Refusal::Malformed("empty domain")),
        }
        let mut raw = String::new();
        let mut first = true;
        let mut last_atom = false;
        while let Some(t) = self.toks.get(self.pos) {
            match t.kind {
                Kind::Atom if !last_atom => last_atom = true,
                Kind::Dot => last_atom = false,
                _ => break,
            }
            // RFC 5322 §4.4: obs-domain allows CFWS around the dots, but
            // parsers that do not implement it cut the domain at the space
            // or comment, so rmilter refuses it as ambiguous.
            if !first && t.space_before {
                return Err(Refusal::Ambiguous("whitespace inside domain"));
            }
            raw.push_str(t.text);
            first = false;
            self.bump();
        }
        normalise_domain(&raw)
    }
}

/// RFC 5322 §3.4.1 local-part = dot-atom / quoted-string / obs-local-part
/// (§4.4: word *("." word)). Returns the local part as written, without CFWS.
///
/// Dots at the start or end and doubled dots are tolerated (seen in real
/// mail, and they do not touch the domain); two words with no dot between
/// them are not.
fn local_part(words: &[Token<'_>]) -> Result<String, Refusal> {
    let mut out = String::new();
    let mut prev_word = false;
    let mut content = false;
    for t in words {
        match t.kind {
            Kind::Dot => {
                out.push('.');
                prev_word = false;
            }
            Kind::Atom | Kind::Quoted => {
                if prev_word {
                    return Err(Refusal::Malformed("invalid local part"));
                }
                if t.kind == Kind::Atom || t.text.len() > 2 {
                    content = true;
                }
                out.push_str(t.text);
                prev_word = true;
            }
            _ => return Err(Refusal::Malformed("invalid local part")),
        }
    }
    if !content {
        return Err(Refusal::Malformed("empty local part"));
    }
    Ok(out)
}

/// The display text of a phrase: words joined as written, quoted strings
/// unescaped. Encoded-words are left for [`decode_encoded_words`].
fn phrase_text(words: &[Token<'_>]) -> String {
    let mut out = String::new();
    for (i, t) in words.iter().enumerate() {
        if i > 0 && t.space_before {
            out.push(' ');
        }
        match t.kind {
            Kind::Quoted => {
                let inner = t
                    .text
                    .get(1..t.text.len().saturating_sub(1))
                    .unwrap_or_default();
                out.push_str(&unescape(inner));
            }
            _ => out.push_str(t.text),
        }
    }
    out
}

/// Remove the backslash of each quoted-pair (RFC 5322 §3.2.1).
fn unescape(s: &str) -> Cow<'_, str> {
    if !s.contains('\\') {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

// ---------------------------------------------------------------------------
// Domains
// ---------------------------------------------------------------------------

/// Turn a domain as written into the author domain: lower-case A-labels, no
/// trailing dot, LDH labels within the DNS limits.
fn normalise_domain(raw: &str) -> Result<String, Refusal> {
    // RFC 1034 §3.1: one trailing dot (the root) names the same domain.
    let d = raw.strip_suffix('.').unwrap_or(raw);
    if d.is_empty() {
        return Err(Refusal::Malformed("empty domain"));
    }
    if d.len() > MAX_RAW_DOMAIN {
        return Err(Refusal::Malformed("domain too long"));
    }
    if d.split('.').any(str::is_empty) {
        return Err(Refusal::Malformed("empty domain label"));
    }
    // RFC 9989 §5.3.1, RFC 5891 §5: U-labels become A-labels before any
    // DNS query.
    let ascii =
        idna::domain_to_ascii(d).map_err(|_| Refusal::Malformed("invalid international domain"))?;
    // RELIABILITY F8: UTS-46 mapping other than case folding (full-width
    // letters, ideographic dots, ignored characters) is not silently
    // accepted; the label must round-trip to exactly what was written.
    let lower = d.to_lowercase();
    // A non-ASCII character that lower-cases into ASCII (KELVIN SIGN to `k`)
    // is a confusable, not a case variant: refuse it rather than fold it
    // into a match.
    if d.chars()
        .any(|c| !c.is_ascii() && c.to_lowercase().any(|l| l.is_ascii()))
    {
        return Err(Refusal::Malformed("domain not in normalised form"));
    }
    let mut written = lower.split('.');
    let mut converted = ascii.split('.');
    loop {
        match (written.next(), converted.next()) {
            (None, None) => break,
            (Some(w), Some(a)) => {
                let same = if w.is_ascii() {
                    w == a
                } else {
                    let (u, r) = idna::domain_to_unicode(a);
                    r.is_ok() && u == w
                };
                if !same {
                    return Err(Refusal::Malformed("domain not in normalised form"));
                }
            }
            _ => return Err(Refusal::Malformed("domain not in normalised form")),
        }
    }
    // RFC 1035 §2.3.4: name and label lengths.
    if ascii.len() > MAX_DOMAIN_OCTETS {
        return Err(Refusal::Malformed("domain too long"));
    }
    let mut last = "";
    for label in ascii.split('.') {
        if label.is_empty() {
            return Err(Refusal::Malformed("empty domain label"));
        }
        if label.len() > MAX_LABEL_OCTETS {
            return Err(Refusal::Malformed("domain label too long"));
        }
        // RFC 1123 §2.1 / RFC 5890 §2.3.1: LDH labels, no hyphen at either end.
        let ldh = label
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-');
        if !ldh || label.starts_with('-') || label.ends_with('-') {
            return Err(Refusal::Malformed("invalid domain"));
        }
        last = label;
    }
    // RFC 3696 §2: a top-level label is never all-numeric; `a@192.0.2.1`
    // is an address literal without its brackets.
    if last.bytes().all(|c| c.is_ascii_digit()) {
        return Err(Refusal::Malformed("numeric top-level label"));
    }
    Ok(ascii)
}

// ---------------------------------------------------------------------------
// Display-name check and RFC 2047
// ---------------------------------------------------------------------------

/// RFC 9989 §11.4: find the first `local@domain` in display text (after
/// decoding encoded-words) whose domain differs from the author domain.
fn other_display_domain<'a>(
    texts: impl Iterator<Item = Cow<'a, str>>,
    author_domain: &str,
) -> Option<String> {
    for text in texts {
        if text.is_empty() {
            continue;
        }
        let decoded = decode_encoded_words(&text);
        for candidate in at_domains(&decoded) {
            let shown = normalise_domain(candidate)
                .unwrap_or_else(|_| candidate.trim_end_matches('.').to_lowercase());
            if shown != author_domain {
                return Some(shown);
            }
        }
    }
    None
}

fn is_domain_char(c: char) -> bool {
    // Letters and digits of any script, so that confusable or full-width
    // domains are caught; the dots UTS-46 maps to `.` likewise.
    c.is_alphanumeric() || matches!(c, '-' | '.' | '_' | '\u{3002}' | '\u{ff0e}' | '\u{ff61}')
}

/// The domains of the `x@domain` patterns in `text`. The `@` must follow a
/// non-space character that could end a local part, so `(@handle)` is not
/// an address.
fn at_domains(text: &str) -> impl Iterator<Item = &str> {
    text.match_indices('@').filter_map(|(i, _)| {
        let before = text.get(..i)?.chars().next_back()?;
        if before.is_whitespace() || matches!(before, '(' | '<' | '[' | ',' | ';' | ':' | '@') {
            return None;
        }
        let rest = text.get(i + 1..)?;
        let end = rest
            .char_indices()
            .find(|&(_, c)| !is_domain_char(c))
            .map_or(rest.len(), |(j, _)| j);
        let candidate = rest.get(..end)?.trim_end_matches('.');
        (!candidate.is_empty()).then_some(candidate)
    })
}

/// Decode RFC 2047 encoded-words wherever they appear in `text` (leniently:
/// MUAs decode them in places RFC 2047 §5 does not allow, and this is used to
/// see what an MUA may show). Whitespace between two adjacent encoded-words
/// is dropped (RFC 2047 §6.2). Undecodable words stay as written.
fn decode_encoded_words(text: &str) -> Cow<'_, str> {
    if !text.contains("=?") {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut after_word = false;
    while let Some(idx) = rest.find("=?") {
        let before = rest.get(..idx).unwrap_or_default();
        let tail = rest.get(idx..).unwrap_or_default();
        match decode_one(tail) {
            Some((decoded, used)) => {
                if !(after_word && before.chars().all(|c| c == ' ' || c == '\t')) {
                    out.push_str(before);
                }
                out.push_str(&decoded);
                after_word = true;
                rest = tail.get(used..).unwrap_or_default();
            }
            None => {
                out.push_str(before);
                out.push_str("=?");
                after_word = false;
                rest = tail.get(2..).unwrap_or_default();
            }
        }
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// RFC 2047 §2: `=?charset?encoding?encoded-text?=` at the start of `s`,
/// decoded (encodify) and converted from its charset (mail-parser; an
/// unknown charset reads as UTF-8, invalid sequences replaced). Returns the
/// text and the number of bytes used.
fn decode_one(s: &str) -> Option<(String, usize)> {
    let (word, used) = encodify::rfc2047::EncodedWord::parse(s.as_bytes())?;
    let bytes = word.decode().ok()?;
    let mut decoded = String::new();
    mail_parser::decoders::charsets::decode_append(word.charset, &bytes, &mut decoded);
    Some((decoded, used))
}

#[cfg(test)]
mod tests;
