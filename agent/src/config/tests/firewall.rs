//! `[firewall]`.

use netcfg::coexist::Coexist;

use super::{ok, one_error, with};

#[test]
fn coexist_defaults_to_auto_and_takes_off() {
    assert_eq!(ok(&with("")).desired().coexist, Coexist::Auto);
    let m = ok(&format!("[firewall]\ncoexist = \"off\"\n{}", with("")));
    assert_eq!(m.desired().coexist, Coexist::Off);
    let d = one_error(
        &format!("[firewall]\ncoexist = \"sometimes\"\n{}", with("")),
        2,
        11,
        "coexist = \"sometimes\" is not known",
    );
    assert!(d.hint.unwrap().contains("\"off\""));
}
