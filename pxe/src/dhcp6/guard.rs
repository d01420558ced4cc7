//! What a DHCPv6 packet must look like before dhcproto decodes it.
//!
//! dhcproto 0.15's v6 decoder trusts option lengths: Authentication (11), Status Code (13),
//! Vendor Class (16) and Vendor Options (17) subtract a fixed size from the length (`len - 11`,
//! `len - 2`, `len - 4`) and overflow on a shorter one (a panic in debug builds, and the fuzz
//! target's); Preference, Elapsed Time, Server Unicast and Reconfigure Message read their fixed
//! size whatever the length says, so the rest of the packet is read out of step; a malformed
//! option silently ends option parsing with `Ok`; and IA options nest without a depth limit.
//! So every option is walked here first, by its own length, with each known option's size
//! checked, and nested options (IA_NA, IA_TA, IA Address, IA_PD, IA Prefix, Vendor Options) at
//! most [`MAX_DEPTH`] deep. Only a packet this accepts reaches the decoder.
//!
//! Relay messages (Relay-Forward) are dropped: the server serves its own link only.

/// Why a packet was dropped before it was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drop6 {
    /// Shorter than the 4-byte header.
    Short,
    /// A type a client does not send to a server (Advertise, Reply, Reconfigure, ...), or a
    /// relay message.
    NotClientMessage,
    /// An option runs past the end of the packet or of the option holding it.
    OptionOverflow,
    /// An option's length does not fit its kind.
    BadOptionLength,
    /// Options nested deeper than [`MAX_DEPTH`].
    TooDeep,
    /// dhcproto refused the packet after all.
    Undecodable,
    /// RFC 8415 §16: a required Client Identifier is missing, or a Server Identifier is
    /// present where it must not be, or missing where it must be.
    MissingOrWrongIds,
    /// Addressed to another server (its Server Identifier is not ours).
    NotForUs,
}

impl Drop6 {
    pub const ALL: [Drop6; 8] = [
        Drop6::Short,
        Drop6::NotClientMessage,
        Drop6::OptionOverflow,
        Drop6::BadOptionLength,
        Drop6::TooDeep,
        Drop6::Undecodable,
        Drop6::MissingOrWrongIds,
        Drop6::NotForUs,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Drop6::Short => "short",
            Drop6::NotClientMessage => "not_client_message",
            Drop6::OptionOverflow => "option_overflow",
            Drop6::BadOptionLength => "bad_option_length",
            Drop6::TooDeep => "too_deep",
            Drop6::Undecodable => "undecodable",
            Drop6::MissingOrWrongIds => "missing_or_wrong_ids",
            Drop6::NotForUs => "not_for_us",
        }
    }

    pub fn index(self) -> usize {
        Drop6::ALL.iter().position(|d| *d == self).unwrap_or(0)
    }
}

/// IA_NA holds IA Address, which holds Status Code: three levels are all a client needs.
pub const MAX_DEPTH: usize = 4;

/// Message types a client sends to a server (RFC 8415 §7.3).
const CLIENT_TYPES: [u8; 8] = [1, 3, 4, 5, 6, 8, 9, 11];

/// Accepts a client message whose options are all well-formed (module docs).
pub fn check(packet: &[u8]) -> Result<(), Drop6> {
    let Some((&kind, _)) = packet.split_first() else {
        return Err(Drop6::Short);
    };
    if packet.len() < 4 {
        return Err(Drop6::Short);
    }
    if !CLIENT_TYPES.contains(&kind) {
        return Err(Drop6::NotClientMessage);
    }
    options(&packet[4..], 1)
}

fn options(mut buf: &[u8], depth: usize) -> Result<(), Drop6> {
    if depth > MAX_DEPTH {
        return Err(Drop6::TooDeep);
    }
    while !buf.is_empty() {
        if buf.len() < 4 {
            return Err(Drop6::OptionOverflow);
        }
        let code = u16::from_be_bytes([buf[0], buf[1]]);
        let len = u16::from_be_bytes([buf[2], buf[3]]) as usize;
        let body = buf.get(4..4 + len).ok_or(Drop6::OptionOverflow)?;
        option(code, body, depth)?;
        buf = &buf[4 + len..];
    }
    Ok(())
}

fn option(code: u16, body: &[u8], depth: usize) -> Result<(), Drop6> {
    let len = body.len();
    let exactly = |n: usize| {
        if len == n {
            Ok(())
        } else {
            Err(Drop6::BadOptionLength)
        }
    };
    let at_least = |n: usize| {
        if len >= n {
            Ok(())
        } else {
            Err(Drop6::BadOptionLength)
        }
    };
    match code {
        // Client / Server Identifier: a DUID (type + at least one byte, at most 130).
        1 | 2 => {
            if (3..=130).contains(&len) {
                Ok(())
            } else {
                Err(Drop6::BadOptionLength)
            }
        }
        // IA_NA, IA_PD: IAID, T1, T2, options.
        3 | 25 => {
            at_least(12)?;
            options(&body[12..], depth + 1)
        }
        // IA_TA: IAID, options.
        4 => {
            at_least(4)?;
            options(&body[4..], depth + 1)
        }
        // IA Address: address, lifetimes, options.
        5 => {
            at_least(24)?;
            options(&body[24..], depth + 1)
        }
        // IA Prefix: lifetimes, length, prefix, options.
        26 => {
            at_least(25)?;
            options(&body[25..], depth + 1)
        }
        // ORO: a list of u16.
        6 => {
            if len.is_multiple_of(2) {
                Ok(())
            } else {
                Err(Drop6::BadOptionLength)
            }
        }
        7 => exactly(1),
        8 => exactly(2),
        // A relay message inside a client message is nonsense.
        9 => Err(Drop6::NotClientMessage),
        11 => at_least(11),
        12 => exactly(16),
        // Status code: u16 and UTF-8 text (dhcproto reads it as a String).
        13 => {
            at_least(2)?;
            std::str::from_utf8(&body[2..])
                .map(|_| ())
                .map_err(|_| Drop6::BadOptionLength)
        }
        14 | 20 => exactly(0),
        16 => at_least(4),
        17 => {
            at_least(4)?;
            options(&body[4..], depth + 1)
        }
        19 => exactly(1),
        // DNS servers: whole addresses.
        23 => {
            if len.is_multiple_of(16) {
                Ok(())
            } else {
                Err(Drop6::BadOptionLength)
            }
        }
        // Client architecture types: whole u16s.
        61 => {
            if len.is_multiple_of(2) {
                Ok(())
            } else {
                Err(Drop6::BadOptionLength)
            }
        }
        // NTP server: its own sub-options; dhcproto's decoder stops at the first bad one.
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opt(code: u16, body: &[u8]) -> Vec<u8> {
        let mut v = code.to_be_bytes().to_vec();
        v.extend_from_slice(&(body.len() as u16).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    fn solicit(opts: &[Vec<u8>]) -> Vec<u8> {
        let mut p = vec![1, 0xaa, 0xbb, 0xcc];
        for o in opts {
            p.extend_from_slice(o);
        }
        p
    }

    #[test]
    fn each_malformation_has_its_reason() {
        let duid = opt(1, &[0, 3, 0, 1, 1, 2, 3, 4, 5, 6]);
        assert_eq!(check(&solicit(std::slice::from_ref(&duid))), Ok(()));
        assert_eq!(check(&[1, 2]), Err(Drop6::Short));
        assert_eq!(check(&[2, 0, 0, 0]), Err(Drop6::NotClientMessage));
        assert_eq!(check(&[12, 0, 0, 0]), Err(Drop6::NotClientMessage));
        let mut cut = solicit(std::slice::from_ref(&duid));
        cut.pop();
        assert_eq!(check(&cut), Err(Drop6::OptionOverflow));
        for short in [
            (13, 1),
            (11, 10),
            (16, 3),
            (17, 3),
            (7, 0),
            (8, 1),
            (12, 15),
        ] {
            let p = solicit(&[duid.clone(), opt(short.0, &vec![0; short.1])]);
            assert_eq!(check(&p), Err(Drop6::BadOptionLength), "option {}", short.0);
        }
        let mut nested = opt(13, &[0, 0]);
        for _ in 0..MAX_DEPTH {
            let mut ia = vec![0; 12];
            ia.extend_from_slice(&nested);
            nested = opt(3, &ia);
        }
        assert_eq!(check(&solicit(&[duid, nested])), Err(Drop6::TooDeep));
    }
}
