//! The milter wire protocol as the MTA side speaks it: packet framing, command encoding,
//! option negotiation, and decoding of the milter's replies. Pure bytes in, values out;
//! no sockets here, so every rule is unit-tested below.
//!
//! Constants and behaviour follow Sendmail's libmilter `mfdef.h` and Postfix 3.7's
//! `src/milter/milter8.c` (the MTA side this tool imitates).

/// Protocol version Postfix 3.7 offers (`milter_protocol = 6`).
pub const VERSION: u32 = 6;

// Commands (MTA → milter).
pub const C_ABORT: u8 = b'A';
pub const C_BODY: u8 = b'B';
pub const C_CONNECT: u8 = b'C';
pub const C_MACRO: u8 = b'D';
pub const C_BODYEOB: u8 = b'E';
pub const C_HELO: u8 = b'H';
pub const C_HEADER: u8 = b'L';
pub const C_MAIL: u8 = b'M';
pub const C_EOH: u8 = b'N';
pub const C_OPTNEG: u8 = b'O';
pub const C_QUIT: u8 = b'Q';
pub const C_RCPT: u8 = b'R';
pub const C_DATA: u8 = b'T';

// Replies (milter → MTA).
pub const R_ADDRCPT: u8 = b'+';
pub const R_DELRCPT: u8 = b'-';
pub const R_ADDRCPT_PAR: u8 = b'2';
pub const R_SHUTDOWN: u8 = b'4';
pub const R_ACCEPT: u8 = b'a';
pub const R_REPLBODY: u8 = b'b';
pub const R_CONTINUE: u8 = b'c';
pub const R_DISCARD: u8 = b'd';
pub const R_CHGFROM: u8 = b'e';
pub const R_ADDHEADER: u8 = b'h';
pub const R_INSHEADER: u8 = b'i';
pub const R_CHGHEADER: u8 = b'm';
pub const R_PROGRESS: u8 = b'p';
pub const R_QUARANTINE: u8 = b'q';
pub const R_REJECT: u8 = b'r';
pub const R_SKIP: u8 = b's';
pub const R_TEMPFAIL: u8 = b't';
pub const R_REPLYCODE: u8 = b'y';

// Protocol flags (SMFIP_*).
pub const P_NOCONNECT: u32 = 1 << 0;
pub const P_NOHELO: u32 = 1 << 1;
pub const P_NOMAIL: u32 = 1 << 2;
pub const P_NORCPT: u32 = 1 << 3;
pub const P_NOBODY: u32 = 1 << 4;
pub const P_NOHDRS: u32 = 1 << 5;
pub const P_NOEOH: u32 = 1 << 6;
pub const P_NR_HDR: u32 = 1 << 7;
pub const P_NOUNKNOWN: u32 = 1 << 8;
pub const P_NODATA: u32 = 1 << 9;
pub const P_SKIP: u32 = 1 << 10;
pub const P_RCPT_REJ: u32 = 1 << 11;
pub const P_NR_CONN: u32 = 1 << 12;
pub const P_NR_HELO: u32 = 1 << 13;
pub const P_NR_MAIL: u32 = 1 << 14;
pub const P_NR_RCPT: u32 = 1 << 15;
pub const P_NR_DATA: u32 = 1 << 16;
pub const P_NR_UNKN: u32 = 1 << 17;
pub const P_NR_EOH: u32 = 1 << 18;
pub const P_NR_BODY: u32 = 1 << 19;
pub const P_HDR_LEADSPC: u32 = 1 << 20;

/// What Postfix 3.7 offers with `milter_protocol = 6` (milter8.c `MILTER8_V6_PROTO_MASK`):
/// every SMFIP_NO* event flag, SMFIP_SKIP, SMFIP_RCPT_REJ, every SMFIP_NR_* no-reply flag and
/// SMFIP_HDR_LEADSPC; not the SMFIP_MDS_* buffer-size flags.
pub const POSTFIX_PROTOCOL: u32 = P_NOCONNECT
    | P_NOHELO
    | P_NOMAIL
    | P_NORCPT
    | P_NOBODY
    | P_NOHDRS
    | P_NOEOH
    | P_NR_HDR
    | P_NOUNKNOWN
    | P_NODATA
    | P_SKIP
    | P_RCPT_REJ
    | P_NR_CONN
    | P_NR_HELO
    | P_NR_MAIL
    | P_NR_RCPT
    | P_NR_DATA
    | P_NR_UNKN
    | P_NR_EOH
    | P_NR_BODY
    | P_HDR_LEADSPC;

// Actions (SMFIF_*): Postfix offers all of them.
pub const F_ADDHDRS: u32 = 1 << 0;
pub const F_CHGBODY: u32 = 1 << 1;
pub const F_ADDRCPT: u32 = 1 << 2;
pub const F_DELRCPT: u32 = 1 << 3;
pub const F_CHGHDRS: u32 = 1 << 4;
pub const F_QUARANTINE: u32 = 1 << 5;
pub const F_CHGFROM: u32 = 1 << 6;
pub const F_ADDRCPT_PAR: u32 = 1 << 7;
pub const F_SETSYMLIST: u32 = 1 << 8;
pub const POSTFIX_ACTIONS: u32 = F_ADDHDRS
    | F_CHGBODY
    | F_ADDRCPT
    | F_DELRCPT
    | F_CHGHDRS
    | F_QUARANTINE
    | F_CHGFROM
    | F_ADDRCPT_PAR
    | F_SETSYMLIST;

/// Largest reply packet accepted; anything bigger is a protocol error (Postfix allows
/// INT_MAX/2, but no sane milter reply comes near this).
pub const MAX_PACKET: usize = 64 << 20;

/// Frame one packet: 4-byte big-endian length (command byte + data), command, data.
pub fn packet(out: &mut Vec<u8>, cmd: u8, data: &[u8]) {
    let len = u32::try_from(data.len() + 1).expect("packet too large");
    out.extend_from_slice(&len.to_be_bytes());
    out.push(cmd);
    out.extend_from_slice(data);
}

/// Frame one packet whose data is a list of NUL-terminated strings.
pub fn packet_strs(out: &mut Vec<u8>, cmd: u8, strs: &[&[u8]]) {
    let mut data = Vec::with_capacity(strs.iter().map(|s| s.len() + 1).sum());
    for s in strs {
        data.extend_from_slice(s);
        data.push(0);
    }
    packet(out, cmd, &data);
}

/// SMFIC_OPTNEG as Postfix sends it: version, actions, protocol flags.
pub fn optneg(out: &mut Vec<u8>, version: u32, actions: u32, protocol: u32) {
    let mut data = Vec::with_capacity(12);
    data.extend_from_slice(&version.to_be_bytes());
    data.extend_from_slice(&actions.to_be_bytes());
    data.extend_from_slice(&protocol.to_be_bytes());
    packet(out, C_OPTNEG, &data);
}

/// SMFIC_MACRO for `event`: the event's command byte, then name/value pairs.
pub fn macros(out: &mut Vec<u8>, event: u8, pairs: &[(&str, &str)]) {
    let mut data = vec![event];
    for (name, value) in pairs {
        data.extend_from_slice(name.as_bytes());
        data.push(0);
        data.extend_from_slice(value.as_bytes());
        data.push(0);
    }
    packet(out, C_MACRO, &data);
}

/// Client address family in SMFIC_CONNECT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Inet4,
    Inet6,
    Unix,
}

/// SMFIC_CONNECT: hostname, family, port (network order), address (milter8.c
/// `milter8_conn_event`; for 'L' the port is 0 and the address is the socket path).
pub fn connect(out: &mut Vec<u8>, hostname: &str, family: Family, port: u16, addr: &str) {
    let mut data = Vec::new();
    data.extend_from_slice(hostname.as_bytes());
    data.push(0);
    let (fam, port) = match family {
        Family::Inet4 => (b'4', port),
        Family::Inet6 => (b'6', port),
        Family::Unix => (b'L', 0),
    };
    data.push(fam);
    data.extend_from_slice(&port.to_be_bytes());
    data.extend_from_slice(addr.as_bytes());
    data.push(0);
    packet(out, C_CONNECT, &data);
}

/// Macro classes a milter may override in its OPTNEG reply (SMFIM_*).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stage {
    Connect = 0,
    Helo = 1,
    Mail = 2,
    Rcpt = 3,
    Data = 4,
    Eom = 5,
    Eoh = 6,
}

impl Stage {
    pub const ALL: [Stage; 7] = [
        Stage::Connect,
        Stage::Helo,
        Stage::Mail,
        Stage::Rcpt,
        Stage::Data,
        Stage::Eoh,
        Stage::Eom,
    ];

    pub fn from_smfim(n: u32) -> Option<Stage> {
        Some(match n {
            0 => Stage::Connect,
            1 => Stage::Helo,
            2 => Stage::Mail,
            3 => Stage::Rcpt,
            4 => Stage::Data,
            5 => Stage::Eom,
            6 => Stage::Eoh,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Stage::Connect => "connect",
            Stage::Helo => "helo",
            Stage::Mail => "mail",
            Stage::Rcpt => "rcpt",
            Stage::Data => "data",
            Stage::Eoh => "eoh",
            Stage::Eom => "eom",
        }
    }

    pub fn parse(s: &str) -> Option<Stage> {
        Stage::ALL.into_iter().find(|st| st.name() == s)
    }
}

/// The milter's answer to SMFIC_OPTNEG.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Negotiated {
    pub version: u32,
    pub actions: u32,
    pub protocol: u32,
    /// SMFIM_* macro lists the milter asked for instead of the MTA's defaults.
    pub macro_lists: Vec<(Stage, Vec<String>)>,
}

impl Negotiated {
    pub fn has(&self, flag: u32) -> bool {
        self.protocol & flag != 0
    }
}

/// Parse the data of an SMFIC_OPTNEG reply and check it the way milter8.c does: a version
/// above ours or actions we did not offer are errors.
pub fn parse_optneg(data: &[u8], our_actions: u32) -> Result<Negotiated, String> {
    if data.len() < 12 {
        return Err(format!("OPTNEG reply too short ({} bytes)", data.len()));
    }
    let word = |i: usize| u32::from_be_bytes([data[i], data[i + 1], data[i + 2], data[i + 3]]);
    let version = word(0);
    let actions = word(4);
    let protocol = word(8);
    if version > VERSION {
        return Err(format!(
            "milter protocol version {version} conflicts with MTA version {VERSION}"
        ));
    }
    if actions & our_actions != actions {
        return Err(format!(
            "milter request mask {actions:#x} conflicts with MTA mask {our_actions:#x}"
        ));
    }
    let mut macro_lists = Vec::new();
    let mut rest = &data[12..];
    while !rest.is_empty() {
        if rest.len() < 5 {
            return Err("truncated macro list in OPTNEG reply".into());
        }
        let class = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
        let body = &rest[4..];
        let nul = body
            .iter()
            .position(|&b| b == 0)
            .ok_or("macro list in OPTNEG reply lacks NUL terminator")?;
        let names: Vec<String> = String::from_utf8_lossy(&body[..nul])
            .split([' ', ',', '\t'])
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        // milter8.c ignores unknown macro classes with a warning.
        if let Some(stage) = Stage::from_smfim(class) {
            macro_lists.push((stage, names));
        }
        rest = &body[nul + 1..];
    }
    Ok(Negotiated {
        version,
        actions,
        protocol,
        macro_lists,
    })
}

/// Split data into NUL-terminated strings (the last may lack a terminator).
fn strings(data: &[u8]) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = data.split(|&b| b == 0).map(<[u8]>::to_vec).collect();
    if data.last() == Some(&0) {
        out.pop();
    }
    out
}

/// A message modification requested at end of message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Modification {
    AddHeader {
        name: Vec<u8>,
        value: Vec<u8>,
    },
    InsertHeader {
        index: u32,
        name: Vec<u8>,
        value: Vec<u8>,
    },
    /// An empty value deletes the header (libmilter `smfi_chgheader` with NULL).
    ChangeHeader {
        index: u32,
        name: Vec<u8>,
        value: Vec<u8>,
    },
    ReplaceBody(Vec<u8>),
    AddRcpt {
        rcpt: Vec<u8>,
        args: Option<Vec<u8>>,
    },
    DelRcpt(Vec<u8>),
    ChangeFrom {
        from: Vec<u8>,
        args: Option<Vec<u8>>,
    },
    Quarantine(Vec<u8>),
}

impl Modification {
    /// The key used when counting modifications by type.
    pub fn kind(&self) -> &'static str {
        match self {
            Modification::AddHeader { .. } => "add_header",
            Modification::InsertHeader { .. } => "insert_header",
            Modification::ChangeHeader { value, .. } if value.is_empty() => "delete_header",
            Modification::ChangeHeader { .. } => "change_header",
            Modification::ReplaceBody(_) => "replace_body",
            Modification::AddRcpt { .. } => "add_rcpt",
            Modification::DelRcpt(_) => "del_rcpt",
            Modification::ChangeFrom { .. } => "change_from",
            Modification::Quarantine(_) => "quarantine",
        }
    }
}

/// One decoded reply packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    Continue,
    Accept,
    Reject,
    Tempfail,
    Discard,
    Shutdown,
    Skip,
    Progress,
    /// SMFIR_REPLYCODE: "4xx ..." or "5xx ..." text.
    Code(String),
    Modify(Modification),
}

fn index_name_value(data: &[u8]) -> Result<(u32, Vec<u8>, Vec<u8>), String> {
    if data.len() < 4 {
        return Err("header change reply too short".into());
    }
    let index = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
    let mut s = strings(&data[4..]);
    if s.is_empty() || s.len() > 2 {
        return Err("malformed header change reply".into());
    }
    let value = if s.len() == 2 {
        s.pop().unwrap()
    } else {
        Vec::new()
    };
    Ok((index, s.pop().unwrap(), value))
}

/// Decode one reply packet (command byte and data).
pub fn parse_reply(cmd: u8, data: &[u8]) -> Result<Reply, String> {
    let empty = |r: Reply| {
        if data.is_empty() {
            Ok(r)
        } else {
            Err(format!(
                "reply '{}' followed by {} data bytes",
                cmd as char,
                data.len()
            ))
        }
    };
    match cmd {
        R_CONTINUE => empty(Reply::Continue),
        R_ACCEPT => empty(Reply::Accept),
        R_REJECT => empty(Reply::Reject),
        R_TEMPFAIL => empty(Reply::Tempfail),
        R_DISCARD => empty(Reply::Discard),
        R_SHUTDOWN => empty(Reply::Shutdown),
        R_SKIP => empty(Reply::Skip),
        R_PROGRESS => empty(Reply::Progress),
        R_REPLYCODE => {
            let text = strings(data).into_iter().next().unwrap_or_default();
            let t = String::from_utf8_lossy(&text).into_owned();
            let b = t.as_bytes();
            // milter8.c: "ddd d.d+.d+ text" with a 4 or 5 first digit.
            if b.len() < 4
                || !(b[0] == b'4' || b[0] == b'5')
                || !b[1].is_ascii_digit()
                || !b[2].is_ascii_digit()
                || !(b[3] == b' ' || b[3] == b'-')
            {
                return Err(format!("malformed reply code: {t:?}"));
            }
            Ok(Reply::Code(t))
        }
        R_ADDHEADER => {
            let mut s = strings(data);
            if s.len() != 2 {
                return Err("malformed add-header reply".into());
            }
            let value = s.pop().unwrap();
            Ok(Reply::Modify(Modification::AddHeader {
                name: s.pop().unwrap(),
                value,
            }))
        }
        R_INSHEADER => {
            let (index, name, value) = index_name_value(data)?;
            Ok(Reply::Modify(Modification::InsertHeader {
                index,
                name,
                value,
            }))
        }
        R_CHGHEADER => {
            let (index, name, value) = index_name_value(data)?;
            Ok(Reply::Modify(Modification::ChangeHeader {
                index,
                name,
                value,
            }))
        }
        R_REPLBODY => Ok(Reply::Modify(Modification::ReplaceBody(data.to_vec()))),
        R_ADDRCPT | R_ADDRCPT_PAR => {
            let mut s = strings(data).into_iter();
            let rcpt = s.next().ok_or("empty add-recipient reply")?;
            Ok(Reply::Modify(Modification::AddRcpt {
                rcpt,
                args: s.next(),
            }))
        }
        R_DELRCPT => {
            let rcpt = strings(data).into_iter().next().unwrap_or_default();
            Ok(Reply::Modify(Modification::DelRcpt(rcpt)))
        }
        R_CHGFROM => {
            let mut s = strings(data).into_iter();
            let from = s.next().ok_or("empty change-sender reply")?;
            Ok(Reply::Modify(Modification::ChangeFrom {
                from,
                args: s.next(),
            }))
        }
        R_QUARANTINE => {
            let reason = strings(data).into_iter().next().unwrap_or_default();
            Ok(Reply::Modify(Modification::Quarantine(reason)))
        }
        other => Err(format!(
            "unknown reply command {:?} (0x{other:02x})",
            other as char
        )),
    }
}

/// Validate a reply packet's length header (command byte + data; milter8.c refuses 0).
pub fn packet_len(hdr: [u8; 4]) -> Result<usize, String> {
    let len = u32::from_be_bytes(hdr) as usize;
    if len == 0 {
        return Err("bad packet length 0".into());
    }
    if len > MAX_PACKET {
        return Err(format!("unreasonable packet length {len}"));
    }
    Ok(len)
}

/// Which SMFIP_NO* flag suppresses a command, and which SMFIP_NR_* flag suppresses its
/// reply (milter8.c; SMFIC_BODYEOB is always sent and always answered).
pub fn flags_for(cmd: u8) -> (u32, u32) {
    match cmd {
        C_CONNECT => (P_NOCONNECT, P_NR_CONN),
        C_HELO => (P_NOHELO, P_NR_HELO),
        C_MAIL => (P_NOMAIL, P_NR_MAIL),
        C_RCPT => (P_NORCPT, P_NR_RCPT),
        C_DATA => (P_NODATA, P_NR_DATA),
        C_HEADER => (P_NOHDRS, P_NR_HDR),
        C_EOH => (P_NOEOH, P_NR_EOH),
        C_BODY => (P_NOBODY, P_NR_BODY),
        _ => (0, 0),
    }
}

/// What to do for a command given the negotiated protocol flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Send {
    /// The milter asked not to receive this command (SMFIP_NO*); macros are still sent.
    Skip,
    /// Send and do not wait for a reply (SMFIP_NR*).
    NoReply,
    /// Send and wait for the reply.
    Reply,
}

pub fn send_mode(cmd: u8, protocol: u32) -> Send {
    let (no, nr) = flags_for(cmd);
    if protocol & no != 0 {
        Send::Skip
    } else if protocol & nr != 0 {
        Send::NoReply
    } else {
        Send::Reply
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_is_length_then_command_then_data() {
        let mut out = Vec::new();
        packet(&mut out, C_HELO, b"client.example\0");
        assert_eq!(&out[..4], &16u32.to_be_bytes());
        assert_eq!(out[4], b'H');
        assert_eq!(&out[5..], b"client.example\0");
        assert_eq!(
            packet_len([out[0], out[1], out[2], out[3]]),
            Ok(out.len() - 4)
        );
        // Zero and huge lengths are errors.
        assert!(packet_len([0, 0, 0, 0]).is_err());
        assert!(packet_len([0x7f, 0, 0, 0]).is_err());
    }

    #[test]
    fn empty_command_is_length_one() {
        let mut out = Vec::new();
        packet(&mut out, C_EOH, b"");
        assert_eq!(out, [0, 0, 0, 1, b'N']);
    }

    #[test]
    fn strings_are_nul_terminated() {
        let mut out = Vec::new();
        packet_strs(&mut out, C_MAIL, &[b"<a@example.test>", b"SIZE=10"]);
        assert_eq!(&out[4..], b"M<a@example.test>\0SIZE=10\0");
    }

    #[test]
    fn macro_packet_carries_event_then_pairs() {
        let mut out = Vec::new();
        macros(
            &mut out,
            C_CONNECT,
            &[("j", "mx.example.test"), ("{daemon_name}", "smtpd")],
        );
        assert_eq!(out[4], b'D');
        assert_eq!(&out[5..], b"Cj\0mx.example.test\0{daemon_name}\0smtpd\0");
        // An empty value is still sent (Postfix sends {mail_addr} "" for <>).
        let mut out = Vec::new();
        macros(&mut out, C_MAIL, &[("{mail_addr}", "")]);
        assert_eq!(&out[5..], b"M{mail_addr}\0\0");
    }

    #[test]
    fn connect_info_per_family() {
        let mut out = Vec::new();
        connect(&mut out, "localhost", Family::Inet4, 4242, "127.0.0.1");
        assert_eq!(&out[5..], b"localhost\x004\x10\x92127.0.0.1\0");
        let mut out = Vec::new();
        connect(&mut out, "h", Family::Inet6, 25, "::1");
        assert_eq!(&out[5..], b"h\x006\x00\x19::1\0");
        let mut out = Vec::new();
        connect(&mut out, "localhost", Family::Unix, 4242, "/run/x");
        assert_eq!(&out[5..], b"localhost\0L\0\0/run/x\0");
    }

    #[test]
    fn optneg_offers_postfix_masks() {
        let mut out = Vec::new();
        optneg(&mut out, VERSION, POSTFIX_ACTIONS, POSTFIX_PROTOCOL);
        assert_eq!(&out[..5], &[0, 0, 0, 13, b'O']);
        assert_eq!(&out[5..9], &6u32.to_be_bytes());
        assert_eq!(&out[9..13], &0x1ffu32.to_be_bytes());
        // Bits 0..=20: all NO*, NR*, SKIP, RCPT_REJ, HDR_LEADSPC; no MDS_* size bits.
        assert_eq!(&out[13..17], &0x1f_ffffu32.to_be_bytes());
    }

    fn optneg_reply(version: u32, actions: u32, protocol: u32, extra: &[u8]) -> Vec<u8> {
        let mut d = Vec::new();
        d.extend_from_slice(&version.to_be_bytes());
        d.extend_from_slice(&actions.to_be_bytes());
        d.extend_from_slice(&protocol.to_be_bytes());
        d.extend_from_slice(extra);
        d
    }

    #[test]
    fn optneg_reply_parses_flags_and_macro_lists() {
        let mut extra = Vec::new();
        extra.extend_from_slice(&0u32.to_be_bytes());
        extra.extend_from_slice(b"j {daemon_name} {client_addr}\0");
        extra.extend_from_slice(&2u32.to_be_bytes());
        extra.extend_from_slice(b"{auth_type},{auth_authen}\0");
        extra.extend_from_slice(&99u32.to_be_bytes()); // unknown class: ignored
        extra.extend_from_slice(b"x\0");
        let d = optneg_reply(
            6,
            F_ADDHDRS | F_CHGHDRS,
            P_NR_HDR | P_HDR_LEADSPC | P_NOUNKNOWN,
            &extra,
        );
        let n = parse_optneg(&d, POSTFIX_ACTIONS).unwrap();
        assert_eq!(n.version, 6);
        assert!(n.has(P_NR_HDR) && n.has(P_HDR_LEADSPC) && !n.has(P_NR_BODY));
        assert_eq!(
            n.macro_lists,
            vec![
                (
                    Stage::Connect,
                    vec!["j".into(), "{daemon_name}".into(), "{client_addr}".into()]
                ),
                (
                    Stage::Mail,
                    vec!["{auth_type}".into(), "{auth_authen}".into()]
                ),
            ]
        );
    }

    #[test]
    fn optneg_reply_conflicts_are_errors() {
        assert!(parse_optneg(&optneg_reply(7, 0, 0, b""), POSTFIX_ACTIONS).is_err());
        assert!(parse_optneg(&optneg_reply(6, 1 << 12, 0, b""), POSTFIX_ACTIONS).is_err());
        assert!(parse_optneg(&[0, 0, 0, 6], POSTFIX_ACTIONS).is_err());
        let mut bad = optneg_reply(6, 0, 0, &0u32.to_be_bytes());
        bad.extend_from_slice(b"no-nul");
        assert!(parse_optneg(&bad, POSTFIX_ACTIONS).is_err());
        // Older versions are fine (milter8.c only refuses a newer one).
        assert!(parse_optneg(&optneg_reply(2, F_ADDHDRS, 0, b""), POSTFIX_ACTIONS).is_ok());
    }

    #[test]
    fn nr_and_no_flags_decide_sending() {
        let p = P_NR_HDR | P_NOHELO | P_NR_BODY | P_NR_CONN;
        assert_eq!(send_mode(C_HEADER, p), Send::NoReply);
        assert_eq!(send_mode(C_BODY, p), Send::NoReply);
        assert_eq!(send_mode(C_CONNECT, p), Send::NoReply);
        assert_eq!(send_mode(C_HELO, p), Send::Skip);
        assert_eq!(send_mode(C_MAIL, p), Send::Reply);
        assert_eq!(send_mode(C_EOH, p), Send::Reply);
        // End of body is always sent and always answered.
        assert_eq!(send_mode(C_BODYEOB, u32::MAX), Send::Reply);
        // NO wins over NR for the same command.
        assert_eq!(send_mode(C_RCPT, P_NORCPT | P_NR_RCPT), Send::Skip);
    }

    #[test]
    fn replies_decode() {
        assert_eq!(parse_reply(b'c', b"").unwrap(), Reply::Continue);
        assert_eq!(parse_reply(b'p', b"").unwrap(), Reply::Progress);
        assert!(parse_reply(b'c', b"x").is_err());
        assert!(parse_reply(b'Z', b"").is_err());
        assert_eq!(
            parse_reply(b'y', b"550 5.7.1 no\0").unwrap(),
            Reply::Code("550 5.7.1 no".into())
        );
        assert!(parse_reply(b'y', b"250 ok\0").is_err());
        let mut ins = 0u32.to_be_bytes().to_vec();
        ins.extend_from_slice(b"DKIM-Signature\0 v=1; a=ed25519-sha256\0");
        assert_eq!(
            parse_reply(b'i', &ins).unwrap(),
            Reply::Modify(Modification::InsertHeader {
                index: 0,
                name: b"DKIM-Signature".to_vec(),
                value: b" v=1; a=ed25519-sha256".to_vec()
            })
        );
        let mut del = 2u32.to_be_bytes().to_vec();
        del.extend_from_slice(b"Authentication-Results\0\0");
        let r = parse_reply(b'm', &del).unwrap();
        match &r {
            Reply::Modify(m) => assert_eq!(m.kind(), "delete_header"),
            _ => panic!("{r:?}"),
        }
        assert_eq!(
            parse_reply(b'h', b"X-A\0b\0").unwrap(),
            Reply::Modify(Modification::AddHeader {
                name: b"X-A".to_vec(),
                value: b"b".to_vec()
            })
        );
        assert_eq!(
            parse_reply(b'q', b"held\0").unwrap(),
            Reply::Modify(Modification::Quarantine(b"held".to_vec()))
        );
        assert_eq!(
            parse_reply(b'e', b"<x@y>\0").unwrap(),
            Reply::Modify(Modification::ChangeFrom {
                from: b"<x@y>".to_vec(),
                args: None
            })
        );
    }

    #[test]
    fn stages_round_trip() {
        for s in Stage::ALL {
            assert_eq!(Stage::parse(s.name()), Some(s));
            assert_eq!(Stage::from_smfim(s as u32), Some(s));
        }
        assert_eq!(Stage::parse("body"), None);
    }
}
