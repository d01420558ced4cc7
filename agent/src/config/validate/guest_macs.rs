//! Guest MACs meeting other MACs. A derived MAC is 24 bits of a hash of the name, so two names
//! can meet (after a few thousand names, and for names that differ in their last characters,
//! often in pairs); an explicit `mac` can repeat one too. Every guest MAC is checked against the
//! bridges', the `[[network.dhcp.host]]` reservations' and the guests' before it; a collision is
//! an error that names both sides and offers a MAC to write.

use std::collections::HashMap;

use hwaddr::Mac;

use super::super::checks::{self, Bad};
use super::super::model::{network_macs, Network};

/// Up to this `count`, a hint spells out the whole `mac = [...]` list to paste.
const MAX_SPELLED_OUT: u32 = 8;

/// Who has a MAC already.
struct Holder {
    /// `guest "db"`, `[[network.dhcp.host]] "bastion" on network "lab"`, ...
    who: String,
    /// The line of a guest holder's `[[guest]]` name, for "(line N)".
    line: Option<usize>,
}

/// A guest whose MAC someone has already.
pub(super) struct Clash {
    guest: String,
    /// The guest's place in its `[[guest]]` (from 1).
    position: u32,
    mac: Mac,
    holder: String,
    holder_line: Option<usize>,
}

/// Every MAC given out so far.
pub(super) struct GuestMacs {
    holders: HashMap<Mac, Holder>,
}

impl GuestMacs {
    /// The bridges' and the reservations' MACs, which guests must not meet.
    pub(super) fn new(networks: &[Network]) -> GuestMacs {
        let mut holders = HashMap::new();
        for (mac, who) in network_macs(networks) {
            holders.entry(mac).or_insert(Holder { who, line: None });
        }
        GuestMacs { holders }
    }

    /// Give `mac` to guest `name`, the `position`th of the `[[guest]]` named on `line`; or say
    /// who has it.
    pub(super) fn claim(
        &mut self,
        mac: Mac,
        name: &str,
        position: u32,
        line: usize,
    ) -> Result<(), Clash> {
        if let Some(h) = self.holders.get(&mac) {
            return Err(Clash {
                guest: name.to_string(),
                position,
                mac,
                holder: h.who.clone(),
                holder_line: h.line,
            });
        }
        self.holders.insert(
            mac,
            Holder {
                who: format!("guest \"{name}\""),
                line: Some(line),
            },
        );
        Ok(())
    }

    /// An explicit `mac` value that is taken.
    pub(super) fn explicit(&self, clash: &Clash) -> Bad {
        let Clash {
            guest, mac, holder, ..
        } = clash;
        let free = self.free(&[clash]).pop().unwrap_or(*mac);
        checks::bad(
            format!("mac {mac} of guest \"{guest}\" is also the MAC of {holder}"),
            format!(
                "give guest \"{guest}\" another MAC here, e.g. \"{free}\"{}",
                or_the_holder(clash)
            ),
        )
    }

    /// The derived MACs of one `[[guest]]` (named `group`, `count` guests) that are taken, as one
    /// problem with one `mac = [...]` that settles them all; None when there are none.
    pub(super) fn derived(&self, group: &str, count: u32, clashes: &[Clash]) -> Option<Bad> {
        let refs: Vec<&Clash> = clashes.iter().collect();
        let free = self.free(&refs);
        let (first, more) = clashes.split_first()?;
        let message = if more.is_empty() {
            format!(
                "guest \"{}\" gets the MAC {} derived from its name, but {} has that MAC too",
                first.guest, first.mac, first.holder
            )
        } else {
            let each: Vec<String> = clashes
                .iter()
                .map(|c| format!("\"{}\" meets {} ({})", c.guest, c.holder, c.mac))
                .collect();
            format!(
                "{} guests of [[guest]] \"{group}\" get MACs derived from their names that others have: {}",
                clashes.len(),
                each.join(", ")
            )
        };
        let whom = if more.is_empty() {
            format!("give guest \"{}\" another MAC", first.guest)
        } else {
            "give them other MACs".to_string()
        };
        let set = if count == 1 {
            format!("{whom}: mac = \"{}\" in its [[guest]]", free[0])
        } else if count <= MAX_SPELLED_OUT {
            let list: Vec<String> = (1..=count)
                .map(|p| match clashes.iter().position(|c| c.position == p) {
                    Some(k) => format!("\"{}\"", free[k]),
                    None => "\"auto\"".to_string(),
                })
                .collect();
            format!(
                "{whom}: in [[guest]] \"{group}\" write mac = [{}] (one entry per guest, \"auto\" keeps the derived MAC)",
                list.join(", ")
            )
        } else {
            let at: Vec<String> = clashes
                .iter()
                .zip(&free)
                .map(|(c, m)| format!("\"{m}\" at position {}", c.position))
                .collect();
            format!(
                "{whom}: in [[guest]] \"{group}\" write mac = [...] with {count} entries, {} and \"auto\" (the derived MAC) at the others",
                at.join(", ")
            )
        };
        let other = if more.is_empty() {
            or_the_holder(first)
        } else {
            String::new()
        };
        Some(checks::bad(message, format!("{set}{other}")))
    }

    /// A MAC nobody has for each clash, distinct from each other, derived from the guest's name
    /// so the suggestion is the same on every run.
    fn free(&self, clashes: &[&Clash]) -> Vec<Mac> {
        let mut out: Vec<Mac> = Vec::new();
        for c in clashes {
            let m = (1u32..)
                .map(|k| Mac::derived(&format!("guest:{}#{k}", c.guest)))
                .find(|m| !self.holders.contains_key(m) && !out.contains(m))
                .unwrap_or(c.mac);
            out.push(m);
        }
        out
    }
}

/// ", or set mac on guest "a" (line 17)" when the other side is a guest, which can take a `mac`
/// just as well.
fn or_the_holder(clash: &Clash) -> String {
    match clash.holder_line {
        Some(line) => format!(", or set mac on {} (line {line})", clash.holder),
        None => String::new(),
    }
}
