//! A simulated call's script: which platform, who calls whom, the keys the caller presses,
//! how a transfer ends. Read from a TOML file (`--scenario`), then overridden by flags.

use serde::{Deserialize, Serialize};

/// The legacy platforms a call can be simulated for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    Voicenter,
    Openscape,
    Ptk,
    Ctips,
}

impl Platform {
    pub const NAMES: &'static str = "voicenter, openscape, ptk, ctips";

    pub fn parse(name: &str) -> Option<Platform> {
        match name.trim().to_ascii_lowercase().as_str() {
            "voicenter" => Some(Platform::Voicenter),
            "openscape" => Some(Platform::Openscape),
            "ptk" => Some(Platform::Ptk),
            "ctips" => Some(Platform::Ctips),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Voicenter => "voicenter",
            Platform::Openscape => "openscape",
            Platform::Ptk => "ptk",
            Platform::Ctips => "ctips",
        }
    }
}

/// How the far end of a transfer (a dial) answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransferOutcome {
    #[default]
    Answered,
    Busy,
    NoAnswer,
}

impl TransferOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            TransferOutcome::Answered => "answered",
            TransferOutcome::Busy => "busy",
            TransferOutcome::NoAnswer => "no_answer",
        }
    }
}

/// Voicenter's request encodings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    #[default]
    Json,
    Xmlrpc,
}

/// One simulated call. Every field but `platform` has a default.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// `voicenter`, `openscape`, `ptk` or `ctips`.
    pub platform: Platform,
    /// The caller's number (Voicenter `CALLER_ID`, OpenScape ANI, ...).
    #[serde(default = "default_caller")]
    pub caller: String,
    /// The number called (Voicenter `DID`, OpenScape DNIS, ...).
    #[serde(default = "default_called")]
    pub called: String,
    /// The caller's name, where the platform sends one.
    #[serde(default)]
    pub caller_name: Option<String>,
    /// Voicenter: the encoding of its requests, `json` (default) or `xmlrpc`.
    #[serde(default)]
    pub encoding: Encoding,
    /// The keys the caller presses, one entry per menu, in order ("1", "42#"). When they run
    /// out the caller presses `1`, the first option.
    #[serde(default)]
    pub keys: Vec<String>,
    /// Waits before each key press, in milliseconds (a caller thinking).
    #[serde(default)]
    pub key_delay_ms: u64,
    /// The caller hangs up after this many decisions, instead of waiting for the flow to end.
    #[serde(default)]
    pub hangup_after: Option<u32>,
    /// How a transfer (dial) ends: `answered` (default), `busy` or `no_answer`.
    #[serde(default)]
    pub transfer: TransferOutcome,
    /// Seconds the transferred call lasts once answered.
    #[serde(default = "default_talk_s")]
    pub talk_s: u32,
    /// Seconds a transfer rings before it is answered (or given up).
    #[serde(default = "default_ring_s")]
    pub ring_s: u32,
    /// The most decisions one call may take; a flow that goes round longer is cut (and
    /// reported), so a receiver that answers `menu` forever cannot keep the simulator busy.
    #[serde(default = "default_max_decisions")]
    pub max_decisions: u32,
    /// The decision deadline in milliseconds (the gateway's default, 3000, otherwise).
    #[serde(default)]
    pub deadline_ms: Option<u64>,
    /// The platform's id for the call; a fresh one per run when absent. A recording keeps
    /// it, so its replay sends the same requests.
    #[serde(default)]
    pub call_id: Option<String>,
    /// When the call starts, in Unix seconds; now when absent. A recording keeps it.
    #[serde(default)]
    pub start_epoch: Option<i64>,
    /// OpenScape: the IVR channel (line) the call arrives on.
    #[serde(default = "default_channel")]
    pub channel: String,
    /// CTIPS: the service the call arrives on (default 3, routed externally).
    #[serde(default)]
    pub queue: Option<String>,
    /// PTK: the Mindful tenant name the IVR sends.
    #[serde(default = "default_ptk_tenant")]
    pub ptk_tenant: String,
    /// PTK: the callback segment.
    #[serde(default = "default_segment")]
    pub segment: String,
}

fn default_caller() -> String {
    "0541234567".into()
}
fn default_called() -> String {
    "0731234567".into()
}
fn default_talk_s() -> u32 {
    30
}
fn default_ring_s() -> u32 {
    5
}
fn default_max_decisions() -> u32 {
    10
}
fn default_channel() -> String {
    "ivr1".into()
}
fn default_ptk_tenant() -> String {
    "SimTenant".into()
}
fn default_segment() -> String {
    "Sales".into()
}

impl Scenario {
    /// The defaults for `platform`.
    pub fn new(platform: Platform) -> Scenario {
        Scenario {
            platform,
            caller: default_caller(),
            called: default_called(),
            caller_name: None,
            encoding: Encoding::default(),
            keys: Vec::new(),
            key_delay_ms: 0,
            hangup_after: None,
            transfer: TransferOutcome::default(),
            talk_s: default_talk_s(),
            ring_s: default_ring_s(),
            max_decisions: default_max_decisions(),
            deadline_ms: None,
            call_id: None,
            start_epoch: None,
            channel: default_channel(),
            queue: None,
            ptk_tenant: default_ptk_tenant(),
            segment: default_segment(),
        }
    }

    /// Reads a scenario file, TOML or (named `*.json`) JSON; the error names the file and
    /// what is wrong.
    pub fn load(path: &std::path::Path) -> Result<Scenario, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read scenario {}: {e}", path.display()))?;
        let json = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"));
        let scenario: Scenario = if json {
            serde_json::from_str(&text).map_err(|e| format!("scenario {}: {e}", path.display()))?
        } else {
            toml::from_str(&text)
                .map_err(|e| format!("scenario {}: {}", path.display(), e.message()))?
        };
        scenario
            .check()
            .map_err(|e| format!("scenario {}: {e}", path.display()))?;
        Ok(scenario)
    }

    /// Rules across fields.
    pub fn check(&self) -> Result<(), String> {
        if self.max_decisions == 0 || self.max_decisions > 1000 {
            return Err("max_decisions must be 1 to 1000".into());
        }
        if self.key_delay_ms > 60_000 {
            return Err("key_delay_ms must be at most 60000".into());
        }
        for key in &self.keys {
            if key.is_empty()
                || !key
                    .chars()
                    .all(|c| c.is_ascii_digit() || c == '*' || c == '#')
            {
                return Err(format!(
                    "key {key:?} is not a key press (digits, * and #, at least one)"
                ));
            }
        }
        if self.caller.trim().is_empty() || self.called.trim().is_empty() {
            return Err("caller and called must not be empty".into());
        }
        Ok(())
    }
}

/// The keys a caller presses: the scripted ones in order, then `1`.
#[derive(Debug, Default)]
pub struct Keys {
    scripted: std::collections::VecDeque<String>,
}

impl Keys {
    pub fn new(keys: &[String]) -> Keys {
        Keys {
            scripted: keys.iter().cloned().collect(),
        }
    }

    /// The next key press and whether the script named it.
    pub fn press(&mut self) -> (String, bool) {
        match self.scripted.pop_front() {
            Some(key) => (key, true),
            None => ("1".into(), false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scenario_file_reads_with_defaults_and_refuses_unknown_fields() {
        let s: Scenario = toml::from_str("platform = \"voicenter\"\nkeys = [\"1\", \"42#\"]\n")
            .expect("scenario");
        assert_eq!(s.platform, Platform::Voicenter);
        assert_eq!(s.keys, ["1", "42#"]);
        assert_eq!(s.max_decisions, 10);
        assert!(s.check().is_ok());
        assert!(toml::from_str::<Scenario>("platform = \"voicenter\"\nkeyz = []\n").is_err());
        assert!(toml::from_str::<Scenario>("platform = \"asterisk\"\n").is_err());
        let bad: Scenario =
            toml::from_str("platform = \"voicenter\"\nkeys = [\"1a\"]\n").expect("parses");
        assert!(bad.check().expect_err("refused").contains("1a"));
    }

    #[test]
    fn a_json_scenario_reads_like_a_toml_one() {
        let dir = std::env::temp_dir().join(format!("ivrgate-scenario-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("call.json");
        std::fs::write(
            &path,
            r#"{"platform": "ptk", "keys": ["2"], "transfer": "busy"}"#,
        )
        .expect("write");
        let s = Scenario::load(&path).expect("scenario");
        assert_eq!(s.platform, Platform::Ptk);
        assert_eq!(s.transfer, TransferOutcome::Busy);
        std::fs::write(&path, r#"{"platform": "ptk", "kees": []}"#).expect("write");
        let e = Scenario::load(&path).expect_err("unknown field");
        assert!(e.contains("kees"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn keys_run_out_into_the_first_option() {
        let mut keys = Keys::new(&["3".into()]);
        assert_eq!(keys.press(), ("3".into(), true));
        assert_eq!(keys.press(), ("1".into(), false));
    }
}
