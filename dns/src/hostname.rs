//! Host names as they arrive from leases (DHCP option 12: anything a client sends), static hosts,
//! guests and config entries, checked against RFC 1123 before they become DNS names.

use crate::error::HostnameError;

/// Longest name in presentation form without the trailing dot (RFC 1035 §2.3.4: 255 octets on
/// the wire).
const MAX_NAME: usize = 253;
const MAX_LABEL: usize = 63;

/// Checks `raw` as an RFC 1123 host name (labels of letters, digits and inner hyphens) and returns
/// it lowercased, without a trailing dot. Underscores, spaces, UTF-8 and empty labels are refused.
pub fn normalize(raw: &str) -> Result<String, HostnameError> {
    let name = raw.strip_suffix('.').unwrap_or(raw);
    if name.is_empty() {
        return Err(HostnameError::Empty);
    }
    if name.len() > MAX_NAME {
        return Err(HostnameError::TooLong {
            name: shorten(name),
            len: name.len(),
        });
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err(HostnameError::EmptyLabel { name: name.into() });
        }
        if label.len() > MAX_LABEL {
            return Err(HostnameError::LabelTooLong {
                name: name.into(),
                len: label.len(),
            });
        }
        if let Some(bad) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
        {
            return Err(HostnameError::BadCharacter {
                name: name.into(),
                bad,
            });
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(HostnameError::EdgeHyphen { name: name.into() });
        }
    }
    Ok(name.to_ascii_lowercase())
}

/// Keeps error messages readable when a client sent a kilobyte of garbage as its name.
fn shorten(name: &str) -> String {
    let mut end = 40.min(name.len());
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &name[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_rfc1123_names_and_lowercases_them() {
        assert_eq!(normalize("Bastion").unwrap(), "bastion");
        assert_eq!(normalize("node-1.lab.").unwrap(), "node-1.lab");
        assert_eq!(normalize("1host").unwrap(), "1host");
        assert_eq!(normalize(&"a".repeat(63)).unwrap(), "a".repeat(63));
    }

    #[test]
    fn refuses_each_malformation_by_name() {
        assert_eq!(normalize(""), Err(HostnameError::Empty));
        assert_eq!(normalize("."), Err(HostnameError::Empty));
        assert!(matches!(
            normalize("a..b"),
            Err(HostnameError::EmptyLabel { .. })
        ));
        assert!(matches!(
            normalize(".a"),
            Err(HostnameError::EmptyLabel { .. })
        ));
        assert!(matches!(
            normalize(&"a".repeat(64)),
            Err(HostnameError::LabelTooLong { len: 64, .. })
        ));
        assert!(matches!(
            normalize(&["abc"; 70].join(".")),
            Err(HostnameError::TooLong { .. })
        ));
        assert!(matches!(
            normalize("my_host"),
            Err(HostnameError::BadCharacter { bad: '_', .. })
        ));
        assert!(matches!(
            normalize("host name"),
            Err(HostnameError::BadCharacter { bad: ' ', .. })
        ));
        assert!(matches!(
            normalize("hôte"),
            Err(HostnameError::BadCharacter { bad: 'ô', .. })
        ));
        assert!(matches!(
            normalize("-a"),
            Err(HostnameError::EdgeHyphen { .. })
        ));
        assert!(matches!(
            normalize("a-"),
            Err(HostnameError::EdgeHyphen { .. })
        ));
        assert!(matches!(
            normalize("a\0b"),
            Err(HostnameError::BadCharacter { bad: '\0', .. })
        ));
    }

    #[test]
    fn long_garbage_is_shortened_in_the_error_without_splitting_a_character() {
        let junk = "é".repeat(200);
        let err = normalize(&junk).unwrap_err().to_string();
        assert!(err.len() < 200, "{err}");
    }
}
