//! Outbound signing: which keys apply to a message, which header fields
//! each signature covers, and the streaming DKIM signer.
//!
//! Nothing here knows about milter callbacks: the milter hands over the
//! author domain, the header fields and body chunks, and gets back the
//! `DKIM-Signature` values to insert.

use crate::config::{RuleMatch, SENDER_DOMAIN, SenderPattern, Signing};
use crate::keys::{LoadedKey, SharedKey};
use mail_auth::dkim::{Canonicalization, DkimSigner, DkimSigningStream};
use mail_auth::headers::HeaderWriter;
use mail_auth::signer::Ready;
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

pub mod logins;

/// The loaded signing keys, by signing domain, and the signing rules that
/// choose among them (`[[signing.rule]]`).
#[derive(Debug, Default)]
pub struct KeyTable {
    by_domain: HashMap<String, Vec<Arc<LoadedKey>>>,
    /// Every key, `%` keys included, in load order.
    all: Vec<Arc<LoadedKey>>,
    rules: Vec<Rule>,
    rule_match: Option<RuleMatch>,
}

/// A signing rule with its key references resolved.
#[derive(Debug)]
struct Rule {
    sender: SenderPattern,
    keys: Vec<Arc<LoadedKey>>,
    origin: String,
}

/// One key chosen for a message, with the `d=` it signs with: the key's
/// domain, or the From domain for a `%` key.
#[derive(Debug, Clone)]
pub struct Selected {
    pub key: Arc<LoadedKey>,
    pub domain: String,
}

impl Selected {
    /// Each key signing with its own domain (keys chosen by From domain).
    pub fn own(keys: &[Arc<LoadedKey>]) -> Vec<Selected> {
        keys.iter()
            .map(|k| Selected {
                key: k.clone(),
                domain: k.domain.clone(),
            })
            .collect()
    }
}

/// The keys chosen for a message and why.
#[derive(Debug, Clone, Default)]
pub struct Choice {
    pub keys: Vec<Selected>,
    /// The rules that matched (`signing.rule[N] "pattern"`), in order;
    /// empty when there are no rules (keys by From domain).
    pub matched: Vec<String>,
    /// Whether `[[signing.rule]]` rows chose (rather than the From domain).
    pub by_rules: bool,
}

impl KeyTable {
    /// A key table without rules: keys are chosen by the From domain.
    pub fn new(keys: Vec<Arc<LoadedKey>>) -> Self {
        let mut by_domain: HashMap<String, Vec<Arc<LoadedKey>>> = HashMap::new();
        for key in &keys {
            if key.domain != SENDER_DOMAIN {
                by_domain
                    .entry(key.domain.clone())
                    .or_default()
                    .push(key.clone());
            }
        }
        KeyTable {
            by_domain,
            all: keys,
            rules: Vec::new(),
            rule_match: None,
        }
    }

    /// A key table whose keys `signing.rules` choose (none: by From
    /// domain). A rule's reference reaches the keys of that name, else
    /// every key of that signing domain (static and active managed keys).
    pub fn with_rules(keys: Vec<Arc<LoadedKey>>, signing: &Signing) -> Self {
        let mut table = KeyTable::new(keys);
        if signing.rules.is_empty() {
            return table;
        }
        table.rule_match = Some(signing.rule_match);
        table.rules = signing
            .rules
            .iter()
            .map(|rule| {
                let mut keys: Vec<Arc<LoadedKey>> = Vec::new();
                for r in &rule.keys {
                    let named: Vec<&Arc<LoadedKey>> = table
                        .all
                        .iter()
                        .filter(|k| k.name.as_deref() == Some(r.as_str()))
                        .collect();
                    let reached = if named.is_empty() {
                        table.all.iter().filter(|k| k.domain == *r).collect()
                    } else {
                        named
                    };
                    for k in reached {
                        if !keys.iter().any(|have| Arc::ptr_eq(have, k)) {
                            keys.push(k.clone());
                        }
                    }
                }
                Rule {
                    sender: rule.sender.clone(),
                    keys,
                    origin: rule.origin.clone(),
                }
            })
            .collect();
        table
    }

    pub fn is_empty(&self) -> bool {
        self.all.is_empty()
    }

    pub fn len(&self) -> usize {
        self.all.len()
    }

    /// Every key, ordered by domain and selector.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<LoadedKey>> {
        let mut all: Vec<&Arc<LoadedKey>> = self.all.iter().collect();
        all.sort_by(|a, b| (&a.domain, &a.selector).cmp(&(&b.domain, &b.selector)));
        all.into_iter()
    }

    /// Whether `[[signing.rule]]` rows choose the keys.
    pub fn has_rules(&self) -> bool {
        !self.rules.is_empty()
    }

    /// What a reload or check-config should say about the rules: keys no
    /// rule reaches (they never sign) and rules that reach no key.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.rules.is_empty() {
            for key in self.all.iter().filter(|k| k.domain == SENDER_DOMAIN) {
                out.push(format!(
                    "key {} (domain \"%\", selector {}) never signs: no [[signing.rule]] names it",
                    key.name.as_deref().unwrap_or("?"),
                    key.selector
                ));
            }
            return out;
        }
        for key in &self.all {
            if !self
                .rules
                .iter()
                .any(|r| r.keys.iter().any(|k| Arc::ptr_eq(k, key)))
            {
                out.push(format!(
                    "key {}{} (s={}) never signs: no [[signing.rule]] names it",
                    key.domain,
                    key.name
                        .as_deref()
                        .map(|n| format!(" named {n}"))
                        .unwrap_or_default(),
                    key.selector
                ));
            }
        }
        for rule in &self.rules {
            if rule.keys.is_empty() {
                out.push(format!(
                    "{} (sender {:?}) reaches no key: matching mail is not signed",
                    rule.origin, rule.sender.text
                ));
            }
        }
        out
    }

    /// The keys that sign mail whose From gate found `address` (domain
    /// `author_domain`, a lower-case A-label).
    ///
    /// With `[[signing.rule]]` rows, the rules choose: the first matching
    /// rule's keys, or with `rule_match = "all"` those of every matching
    /// rule; a `%` key signs with `d=` the author domain, any other key
    /// with its own domain (a third-party signature when it differs). Two
    /// keys giving the same `d=` and `s=` sign once (the first).
    ///
    /// Without rules: the author domain's own keys or, with `subdomains`,
    /// those of its nearest parent domain that has keys.
    pub fn choose(&self, address: &str, author_domain: &str, subdomains: bool) -> Choice {
        let Some(mode) = self.rule_match else {
            return Choice {
                keys: Selected::own(self.select(author_domain, subdomains)),
                matched: Vec::new(),
                by_rules: false,
            };
        };
        let mut choice = Choice {
            by_rules: true,
            ..Choice::default()
        };
        for rule in &self.rules {
            if !rule.sender.matches(address) {
                continue;
            }
            choice
                .matched
                .push(format!("{} {:?}", rule.origin, rule.sender.text));
            for key in &rule.keys {
                // OpenDKIM's KeyTable `%`: the domain of the sender.
                let domain = if key.domain == SENDER_DOMAIN {
                    author_domain.to_string()
                } else {
                    key.domain.clone()
                };
                if !choice
                    .keys
                    .iter()
                    .any(|s| s.domain == domain && s.key.selector == key.selector)
                {
                    choice.keys.push(Selected {
                        key: key.clone(),
                        domain,
                    });
                }
            }
            if mode == RuleMatch::First {
                break;
            }
        }
        choice
    }

    /// The keys that sign mail whose author domain is `author_domain`
    /// (lower-case A-label) when there are no rules: the domain's own keys
    /// or, with `subdomains`, the keys of its nearest parent domain that
    /// has keys. All keys returned share one signing domain (`d=`), so the
    /// signatures align with the From domain (RFC 9989 §3.2.6).
    pub fn select(&self, author_domain: &str, subdomains: bool) -> &[Arc<LoadedKey>] {
        if let Some(keys) = self.by_domain.get(author_domain) {
            return keys;
        }
        if subdomains {
            let mut rest = author_domain;
            while let Some((_, parent)) = rest.split_once('.') {
                // Never sign with a key configured for a top-level label.
                if !parent.contains('.') {
                    break;
                }
                if let Some(keys) = self.by_domain.get(parent) {
                    return keys;
                }
                rest = parent;
            }
        }
        &[]
    }
}

/// The `h=` list for one message (RFC 6376 §5.4): each configured field
/// that is present, and every oversigned field once more, so that a
/// verifier also covers one instance beyond those present (§5.4.2) and no
/// instance can be added after signing.
///
/// The list is handed to the DKIM signer, which signs every instance of a
/// listed field present in the message (bottom-up) and appends each listed
/// entry it did not find as an empty (null) instance.
pub fn header_list<'a>(
    signing: &Signing,
    present: impl Iterator<Item = &'a [u8]> + Clone,
) -> Vec<String> {
    let is_present = |name: &str| {
        present
            .clone()
            .any(|p| trim_name(p).eq_ignore_ascii_case(name.as_bytes()))
    };
    let mut list = Vec::with_capacity(signing.headers.len() + signing.oversign.len() * 2);
    for name in &signing.headers {
        if is_present(name) {
            list.push(name.clone());
        }
    }
    for name in &signing.oversign {
        let signed_already = signing.headers.iter().any(|h| h.eq_ignore_ascii_case(name));
        if is_present(name) && !signed_already {
            list.push(name.clone());
        }
        list.push(name.clone());
    }
    list
}

fn trim_name(name: &[u8]) -> &[u8] {
    let end = name
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(0, |i| i + 1);
    &name[..end]
}

// `Option` so that `finish`, which consumes the stream, can take it out.
type Stream<'a> = Option<DkimSigningStream<'a, SharedKey>>;

self_cell::self_cell!(
    /// A per-message DKIM signer together with its body stream.
    struct KeyStream {
        owner: DkimSigner<SharedKey, Ready>,
        #[covariant]
        dependent: Stream,
    }
);

/// One signature made for a message.
#[derive(Debug, Clone)]
pub struct MadeSignature {
    /// The `d=` of the signature.
    pub domain: String,
    /// The key's configured domain (`%` for a key signing with the
    /// sender's domain), for the per-key counters.
    pub key_domain: String,
    pub selector: String,
    pub algorithm: &'static str,
    /// The header value as the milter inserts it: leading space, folded
    /// with "\n\t" (the milter protocol's line ending).
    pub value: String,
}

/// Signs one message with one or more keys as it streams through.
pub struct MessageSigner {
    streams: Vec<(Selected, KeyStream)>,
}

impl MessageSigner {
    /// Start signing with `keys`, covering the fields in `headers` (see
    /// [`header_list`]), and feed the header section. `header_block` is the
    /// message's header section in wire form: each field `Name:value\r\n`,
    /// without the empty line that ends it.
    pub fn start(
        keys: &[Selected],
        headers: &[String],
        signing: &Signing,
        header_block: &[u8],
    ) -> Self {
        let header_block = signable_section(header_block);
        let header_block = &header_block[..];
        let canon = |c| match c {
            crate::config::Canon::Simple => Canonicalization::Simple,
            crate::config::Canon::Relaxed => Canonicalization::Relaxed,
        };
        let streams = keys
            .iter()
            .map(|chosen| {
                let key = &chosen.key;
                let mut signer = DkimSigner::from_key(key.key.clone())
                    .domain(chosen.domain.clone())
                    .selector(key.selector.clone())
                    .headers(headers.iter().cloned())
                    .header_canonicalization(canon(signing.header_canon))
                    .body_canonicalization(canon(signing.body_canon));
                if let Some(expire) = signing.expire {
                    signer = signer.expiration(expire);
                }
                let mut stream = KeyStream::new(signer, |signer| Some(signer.sign_streaming()));
                stream.with_dependent_mut(|_, s| {
                    if let Some(s) = s {
                        s.write(header_block);
                        s.write(b"\r\n");
                    }
                });
                (chosen.clone(), stream)
            })
            .collect();
        MessageSigner { streams }
    }

    /// Feed a body chunk (CRLF line endings, as the milter protocol sends it).
    pub fn body(&mut self, chunk: &[u8]) {
        for (_, stream) in &mut self.streams {
            stream.with_dependent_mut(|_, s| {
                if let Some(s) = s {
                    s.write(chunk);
                }
            });
        }
    }

    /// Finish every signature.
    pub fn finish(self) -> Result<Vec<MadeSignature>, SignError> {
        self.streams
            .into_iter()
            .map(|(chosen, stream)| {
                let key = &chosen.key;
                let mut stream = stream;
                let signature = stream
                    .with_dependent_mut(|_, s| s.take().map(|s| s.finish()))
                    .unwrap_or(Err(mail_auth::Error::NoHeadersFound))
                    .map_err(|e| SignError {
                        domain: chosen.domain.clone(),
                        selector: key.selector.clone(),
                        reason: e.to_string(),
                    })?;
                Ok(MadeSignature {
                    domain: chosen.domain.clone(),
                    key_domain: key.domain.clone(),
                    selector: key.selector.clone(),
                    algorithm: key.algorithm.dkim_name(),
                    value: milter_value(&signature.to_header()),
                })
            })
            .collect()
    }
}

/// A signature failed (a crypto library error).
#[derive(Debug, thiserror::Error)]
#[error("signing with {selector}._domainkey.{domain} failed: {reason}")]
pub struct SignError {
    pub domain: String,
    pub selector: String,
    pub reason: String,
}

/// The header section as the DKIM signer must see it. mail-auth matches
/// `h=` names byte for byte, so a field in the obsolete `Name :` form (RFC
/// 5322 §4.5; Postfix passes its name as `Name `, and [`header_list`] and the
/// From gate read it as `Name`) was left unsigned, and when it was the only
/// listed field present (a lone `From :`) signing failed with "no headers
/// found" (found by the `signer` fuzz target). Whitespace between a field
/// name and its colon is therefore removed. Relaxed header canonicalization
/// (RFC 6376 §3.4.2) removes it too, so the signature is the one a verifier
/// computes; under simple canonicalization a verifier hashes `Name :` as it
/// stands, and a signature covering such a field does not verify there.
fn signable_section(block: &[u8]) -> Cow<'_, [u8]> {
    let mut out: Option<Vec<u8>> = None;
    let mut start = 0;
    while start < block.len() {
        let end = block[start..]
            .windows(2)
            .position(|w| w == b"\r\n")
            .map_or(block.len(), |i| start + i + 2);
        let line = &block[start..end];
        let colon = line.iter().position(|&b| b == b':');
        let name_end = match (line.first(), colon) {
            (Some(b' ' | b'\t'), _) | (_, None) => None,
            (_, Some(c)) => line[..c]
                .iter()
                .rposition(|&b| b != b' ' && b != b'\t')
                .map(|i| i + 1)
                .filter(|&e| e < c),
        };
        match (name_end, colon) {
            (Some(e), Some(c)) => {
                let out = out.get_or_insert_with(|| block[..start].to_vec());
                out.extend_from_slice(&line[..e]);
                out.extend_from_slice(&line[c..]);
            }
            _ => {
                if let Some(out) = out.as_mut() {
                    out.extend_from_slice(line);
                }
            }
        }
        start = end;
    }
    out.map_or(Cow::Borrowed(block), Cow::Owned)
}

/// Turn `DKIM-Signature: v=1; ...\r\n\t...\r\n` into the value a milter
/// inserts: " v=1; ...\n\t...".
fn milter_value(header: &str) -> String {
    let value = header
        .split_once(':')
        .map_or(header, |(_, v)| v)
        .trim_end_matches(['\r', '\n']);
    value.replace("\r\n", "\n")
}

#[cfg(test)]
mod tests;
