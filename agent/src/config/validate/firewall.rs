//! `[firewall]`: `coexist = "auto" | "off"` (see netcfg::coexist for what each does).

use netcfg::coexist::Coexist;

use super::super::checks;
use super::super::wire::{self, S};
use super::Checker;

pub(super) fn coexist(c: &mut Checker, w: Option<&S<wire::Firewall>>) -> Coexist {
    let Some(value) = w.and_then(|w| w.get_ref().coexist.as_ref()) else {
        return Coexist::default();
    };
    match value.get_ref().as_str() {
        "auto" => Coexist::Auto,
        "off" => Coexist::Off,
        other => {
            c.report(
                value.span(),
                checks::bad(
                    format!("coexist = \"{}\" is not known", other.escape_debug()),
                    "write coexist = \"auto\" (add marked accepts to other firewalls that would drop guest traffic) or \"off\" (only report them)",
                ),
            );
            Coexist::default()
        }
    }
}
