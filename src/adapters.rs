//! The one place that knows every adapter: the server routes a path's first segment here,
//! configuration checks each adapter's settings, and timers go to the adapter owning them.

use ivrgate_adapter::Adapter;

static VOICENTER: ivrgate_voicenter::Voicenter = ivrgate_voicenter::Voicenter;
static PTK: ivrgate_ptk::Ptk = ivrgate_ptk::Ptk;
static OPENSCAPE: ivrgate_openscape::OpenScape = ivrgate_openscape::OpenScape;
static CTIPS: ivrgate_ctips::Ctips = ivrgate_ctips::Ctips;

/// The adapter with this name (the first path segment, the prefix of its entity kinds).
pub fn get(name: &str) -> Option<&'static dyn Adapter> {
    match name {
        "voicenter" => Some(&VOICENTER),
        "ptk" => Some(&PTK),
        "openscape" => Some(&OPENSCAPE),
        "ctips" => Some(&CTIPS),
        _ => None,
    }
}

/// Every adapter.
pub fn all() -> [&'static dyn Adapter; 4] {
    [&VOICENTER, &PTK, &OPENSCAPE, &CTIPS]
}
