//! The one place that knows every adapter. Everything else asks an adapter about itself
//! through the `ivrgate_adapter::Adapter` trait: the server routes a path's first segment to
//! the adapter of that name, configuration hands each adapter its tenant section
//! (`settings_section`, `parse_settings`) and checks its decision points, timers go to the
//! adapter owning the entity kind, the connector supervisor asks for `connectors`, and the
//! command API for `command`.
//!
//! A new platform is one crate under `adapters/` (depending on `ivrgate-adapter` only) and one
//! line in [`BUILT_IN`]. Closed on purpose: no registry filled at link time, no type tags.

use ivrgate_adapter::{Adapter, DecisionPoint};

/// Every adapter the binary serves, in the order configuration checks them.
pub static BUILT_IN: &[&dyn Adapter] = &[
    &ivrgate_voicenter::Voicenter,
    &ivrgate_ptk::Ptk,
    &ivrgate_openscape::OpenScape,
    &ivrgate_ctips::Ctips,
];

/// The built-in adapter with this name (the first path segment, the prefix of its entity
/// kinds).
pub fn get(name: &str) -> Option<&'static dyn Adapter> {
    find(BUILT_IN, name)
}

/// Every built-in adapter.
pub fn all() -> &'static [&'static dyn Adapter] {
    BUILT_IN
}

/// The adapter with this name among `adapters`.
pub fn find(adapters: &[&'static dyn Adapter], name: &str) -> Option<&'static dyn Adapter> {
    adapters.iter().copied().find(|a| a.name() == name)
}

/// Every decision point of `adapters`, for checking configuration.
pub fn decision_points(adapters: &[&'static dyn Adapter]) -> Vec<&'static DecisionPoint> {
    adapters
        .iter()
        .flat_map(|a| a.decision_points().iter())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names route requests and key settings and entity kinds: no two adapters may share
    /// one, nor a settings section, nor a decision kind.
    #[test]
    fn names_sections_and_decision_kinds_are_unique() {
        let mut names: Vec<_> = all().iter().map(|a| a.name()).collect();
        let mut sections: Vec<_> = all().iter().map(|a| a.settings_section()).collect();
        let mut kinds: Vec<_> = decision_points(all()).iter().map(|p| p.kind).collect();
        for list in [&mut names, &mut sections, &mut kinds] {
            let before = list.len();
            list.sort_unstable();
            list.dedup();
            assert_eq!(list.len(), before, "{list:?}");
        }
        for name in ["voicenter", "ptk", "openscape", "ctips"] {
            assert_eq!(get(name).map(|a| a.name()), Some(name));
        }
        assert!(get("nope").is_none());
        assert_eq!(
            get("voicenter").map(|a| a.settings_section()),
            Some("voicenter_api")
        );
    }
}
