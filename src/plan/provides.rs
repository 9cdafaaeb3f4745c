//! Provides learned from built packages: what rpmspec cannot see (`pkgconfig(...)`,
//! `perl(...)`, `cmake(...)` are added by rpm's generators at build time) is read from the
//! headers of the binary RPMs a build made ([`crate::format::rpm::rpm_provides`]), stored
//! by package and target, and used by the next plans for ordering.

use std::collections::BTreeMap;

use crate::model::TargetName;

/// Provides learned from earlier builds: target → package (its spec's file stem, as builds
/// name it) → capabilities.
pub type Learned = BTreeMap<TargetName, BTreeMap<String, Vec<String>>>;

/// What the last successful builds of the spec `stem` provided on `targets`.
pub fn learned_for<'a>(
    learned: &'a Learned,
    targets: &'a [TargetName],
    stem: &'a str,
) -> impl Iterator<Item = &'a String> + 'a {
    targets
        .iter()
        .filter_map(move |t| learned.get(t).and_then(|m| m.get(stem)))
        .flatten()
}
