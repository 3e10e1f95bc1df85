//! The 25 functions' signatures (seed 000 chapter 4) and the calling convention: by-value
//! parameters positional in the documented order; by-reference parameters (the `>` ones of
//! each Syntax line) either all left out, or sent as placeholders (`nil` or a string that
//! starts with `>`) in their positions, trailing ones optional as in the seed's own examples.

use serde_json::{Map, Value};

/// Which way a parameter goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// Passed by value.
    In,
    /// Passed by reference: returned under its name.
    Out,
    /// QueryAgentStatus's AgentID and Device: by reference, but the one the script knows is
    /// given as a value in its position (the seed's example passes `'188001'`).
    InOut,
}

/// A parameter's type and range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ty {
    /// A string of at most this many characters (0: unlimited).
    Str(usize),
    /// An integer within the inclusive range.
    Int(i64, i64),
}

#[derive(Debug, Clone, Copy)]
pub struct Param {
    pub name: &'static str,
    pub dir: Dir,
    pub ty: Ty,
    /// May be left out at the end of the list (or given empty).
    pub optional: bool,
}

const fn p(name: &'static str, dir: Dir, ty: Ty, optional: bool) -> Param {
    Param {
        name,
        dir,
        ty,
        optional,
    }
}

const CALL_ID: Param = p("CallID", Dir::In, Ty::Str(18), false);
const QUEUE: Param = p("QueueName", Dir::In, Ty::Str(32), false);
const IVR_HOLD: Param = p("IVRHold", Dir::In, Ty::Int(0, 1), false);
const PRIORITY: Param = p("InitialPriority", Dir::In, Ty::Int(1, 100), false);
const DESCRIPTION: Param = p("Description", Dir::In, Ty::Str(100), true);
const EST_WAIT: Param = p("EstimatedWait", Dir::Out, Ty::Int(0, i64::MAX), false);
const IN_QUEUE: Param = p("CallsInQueue", Dir::Out, Ty::Int(0, i64::MAX), false);
const ANIDNIS: Param = p("ANIDNIS", Dir::In, Ty::Str(161), true);
const SCHEDULE: Param = p("Schedule1", Dir::In, Ty::Str(81), false);
const MAX_INT: i64 = i64::MAX;

/// One IVR API function.
#[derive(Debug)]
pub struct Function {
    pub name: &'static str,
    pub params: &'static [Param],
    /// SetContactData: the seed's example passes a fourth argument (`, 0`); a trailing
    /// integer beyond the documented parameters is accepted and ignored.
    pub extra_int_tolerated: bool,
}

macro_rules! functions {
    ($($name:literal => [$($param:expr),* $(,)?] $(, $extra:literal)?;)*) => {
        pub static FUNCTIONS: &[Function] = &[
            $(Function { name: $name, params: &[$($param),*], extra_int_tolerated: false $(|| $extra)? },)*
        ];
    };
}

functions! {
    "CallerDisconnected" => [CALL_ID, p("TermType", Dir::In, Ty::Int(0, 2), false)];
    "CreateCallback" => [
        CALL_ID, QUEUE, DESCRIPTION,
        p("TimeZoneOffset", Dir::In, Ty::Int(-720, 720), false),
        p("ContactName", Dir::In, Ty::Str(80), false),
        p("CallbackID", Dir::Out, Ty::Str(17), false),
        SCHEDULE,
        p("Schedule2", Dir::In, Ty::Str(81), true),
        p("Schedule3", Dir::In, Ty::Str(81), true),
    ];
    "DeleteCallback" => [p("CallbackID", Dir::In, Ty::Str(17), false)];
    "Dequeue" => [CALL_ID];
    "Disconnect" => [CALL_ID];
    "Enqueue" => [CALL_ID, IVR_HOLD, QUEUE, PRIORITY, DESCRIPTION, EST_WAIT, IN_QUEUE, ANIDNIS];
    "EnqueueForAgent" => [
        CALL_ID, IVR_HOLD, QUEUE, PRIORITY, DESCRIPTION,
        p("AgentID", Dir::In, Ty::Str(8), false),
        p("AgentWaitTime", Dir::In, Ty::Int(1, MAX_INT), false),
        EST_WAIT, IN_QUEUE, ANIDNIS,
    ];
    "GetBusinessUnit" => [CALL_ID, p("BusinessUnitName", Dir::Out, Ty::Str(32), false)];
    "GetCallTransferable" => [CALL_ID, p("FlagValue", Dir::Out, Ty::Int(0, 1), false)];
    "GetContactData" => [
        CALL_ID,
        p("Key", Dir::In, Ty::Str(32), false),
        p("Value", Dir::Out, Ty::Str(128), false),
    ];
    "GetTransitNumber" => [CALL_ID, p("TransitNumber", Dir::Out, Ty::Str(80), false)];
    "Initialize" => [
        p("LocalPort", Dir::In, Ty::Int(1, 32767), false),
        p("AdminServerName", Dir::In, Ty::Str(128), false),
        p("RpcTimeout", Dir::In, Ty::Int(1, MAX_INT), false),
    ];
    "QueryAgentStatus" => [
        p("AgentID", Dir::InOut, Ty::Str(8), true),
        p("Device", Dir::InOut, Ty::Str(16), true),
        p("AgentStatus", Dir::Out, Ty::Int(1, 16), false),
    ];
    "QueryCallInfo" => [
        p("Device", Dir::In, Ty::Str(16), false),
        p("CallID", Dir::Out, Ty::Str(18), false),
        p("originalANI", Dir::Out, Ty::Str(80), false),
        p("originalDNIS", Dir::Out, Ty::Str(80), false),
        p("UUID", Dir::Out, Ty::Str(32), true),
        p("Visits", Dir::Out, Ty::Int(0, MAX_INT), true),
        p("FMNQ", Dir::Out, Ty::Int(0, 1), true),
        p("InternalANI", Dir::Out, Ty::Str(80), true),
        p("InternalDNIS", Dir::Out, Ty::Str(80), true),
        p("TrunkConnectedIVRCall", Dir::In, Ty::Str(0), true),
    ];
    "QueryCallStatus" => [
        CALL_ID,
        p("Timeout", Dir::In, Ty::Int(0, MAX_INT), false),
        p("Extension", Dir::Out, Ty::Str(80), false),
        p("PositionInQueue", Dir::Out, Ty::Int(1, MAX_INT), false),
    ];
    "QueryQueueStatistics" => [
        QUEUE, IN_QUEUE, EST_WAIT,
        p("AverageWait", Dir::Out, Ty::Int(0, MAX_INT), false),
        p("OldestCallInQueue", Dir::Out, Ty::Int(0, MAX_INT), false),
        p("ServiceLevel", Dir::Out, Ty::Int(0, 100), false),
        p("BusinessUnitName", Dir::In, Ty::Str(32), true),
    ];
    "QueryRoutingInfo" => [
        CALL_ID,
        p("Destination", Dir::Out, Ty::Str(80), false),
        p("AgentID", Dir::Out, Ty::Str(8), false),
        p("AgentWaitTime", Dir::Out, Ty::Int(1, MAX_INT), false),
        p("Description", Dir::Out, Ty::Str(100), false),
        p("InitialPriority", Dir::Out, Ty::Int(1, 100), false),
        EST_WAIT, IN_QUEUE, ANIDNIS,
    ];
    "QuerySystemStatus" => [
        p("OverallStatus", Dir::Out, Ty::Int(0, 1), false),
        p("IndividualServerStates", Dir::Out, Ty::Str(250), false),
        p("Entries", Dir::Out, Ty::Int(0, MAX_INT), false),
    ];
    "ReleaseTransitNumber" => [CALL_ID];
    "SetBusinessUnit" => [CALL_ID, p("BusinessUnitName", Dir::In, Ty::Str(32), false)];
    "SetCallInfo" => [
        p("ANI", Dir::In, Ty::Str(80), false),
        p("DNIS", Dir::In, Ty::Str(80), false),
    ];
    "SetCallTransferable" => [CALL_ID, p("FlagValue", Dir::In, Ty::Int(0, 1), false)];
    "SetContactData" => [
        CALL_ID,
        p("Key", Dir::In, Ty::Str(32), false),
        p("Value", Dir::In, Ty::Str(128), false),
    ], true;
    "SetDisplay" => [CALL_ID, p("DisplayInfo", Dir::In, Ty::Str(240), false)];
    "Transfer" => [CALL_ID, p("ToDevice", Dir::In, Ty::Str(80), false)];
}

/// The function of this name (exact spelling first, then case-insensitively: IVR script
/// languages are often case-blind).
pub fn function(name: &str) -> Option<&'static Function> {
    FUNCTIONS
        .iter()
        .find(|f| f.name == name)
        .or_else(|| FUNCTIONS.iter().find(|f| f.name.eq_ignore_ascii_case(name)))
}

/// A by-value argument after conversion.
#[derive(Debug, Clone, PartialEq)]
pub enum Arg {
    Str(String),
    Int(i64),
}

/// The by-value arguments of one call, by parameter name.
#[derive(Debug, Clone, Default)]
pub struct Args {
    values: Vec<(&'static str, Arg)>,
}

impl Args {
    pub fn str(&self, name: &str) -> Option<&str> {
        self.values.iter().find_map(|(n, v)| match v {
            Arg::Str(s) if *n == name => Some(s.as_str()),
            _ => None,
        })
    }

    /// The string, empty when not given.
    pub fn text(&self, name: &str) -> String {
        self.str(name).unwrap_or_default().to_owned()
    }

    pub fn int(&self, name: &str) -> Option<i64> {
        self.values.iter().find_map(|(n, v)| match v {
            Arg::Int(i) if *n == name => Some(*i),
            _ => None,
        })
    }

    /// For logs and events: every by-value argument given.
    pub fn to_json(&self) -> Map<String, Value> {
        self.values
            .iter()
            .map(|(n, v)| {
                let v = match v {
                    Arg::Str(s) => Value::String(s.clone()),
                    Arg::Int(i) => Value::from(*i),
                };
                ((*n).to_owned(), v)
            })
            .collect()
    }
}

/// Why the arguments are `-306`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadArgs(pub String);

/// A by-reference placeholder: `nil`/`null` or a string starting with `>`.
pub fn is_placeholder(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::String(s) => s.starts_with('>'),
        _ => false,
    }
}

/// Reads the arguments of one call of `function`.
pub fn parse(function: &Function, args: &[Value]) -> Result<Args, BadArgs> {
    let mut out = Args::default();
    let has_refs = function.params.iter().any(|p| p.dir != Dir::In);
    let placeholders = has_refs && args.iter().any(is_placeholder);
    let slots: Vec<&Param> = if placeholders {
        function.params.iter().collect()
    } else {
        function
            .params
            .iter()
            .filter(|p| p.dir != Dir::Out)
            .collect()
    };
    let mut args = args;
    if args.len() > slots.len() {
        let extra = &args[slots.len()..];
        if function.extra_int_tolerated && extra.len() == 1 && as_int(&extra[0]).is_some() {
            args = &args[..slots.len()];
        } else {
            return Err(BadArgs(format!(
                "{} arguments given, {} takes at most {}",
                args.len(),
                function.name,
                slots.len()
            )));
        }
    }
    for (i, param) in slots.iter().enumerate() {
        let Some(arg) = args.get(i) else {
            if param.dir == Dir::In && !param.optional {
                return Err(BadArgs(format!("{} missing", param.name)));
            }
            continue;
        };
        match param.dir {
            Dir::Out => {
                if !is_placeholder(arg) {
                    return Err(BadArgs(format!(
                        "{} is passed by reference: send nil or a string starting with '>'",
                        param.name
                    )));
                }
            }
            Dir::In | Dir::InOut => {
                if placeholders && is_placeholder(arg) {
                    if param.dir == Dir::In && !(param.optional && arg.is_null()) {
                        return Err(BadArgs(format!(
                            "{} is passed by value, got a placeholder",
                            param.name
                        )));
                    }
                    continue;
                }
                let value = convert(param, arg)?;
                if param.optional && value == Arg::Str(String::new()) {
                    continue;
                }
                out.values.push((param.name, value));
            }
        }
    }
    Ok(out)
}

fn as_int(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => {
            let t = s.trim();
            if t.is_empty() || t.len() > 19 {
                return None;
            }
            t.parse().ok()
        }
        _ => None,
    }
}

fn convert(param: &Param, arg: &Value) -> Result<Arg, BadArgs> {
    match param.ty {
        Ty::Int(min, max) => {
            let value = as_int(arg).ok_or_else(|| {
                BadArgs(format!(
                    "{} must be an integer, got {}",
                    param.name,
                    kind(arg)
                ))
            })?;
            if value < min || value > max {
                return Err(BadArgs(format!(
                    "{} = {value} is outside {min}..={max}",
                    param.name
                )));
            }
            // Initialize's LocalPort is documented as a string; it is kept as one.
            if param.name == "LocalPort" {
                return Ok(Arg::Str(value.to_string()));
            }
            Ok(Arg::Int(value))
        }
        Ty::Str(max) => {
            let text = match arg {
                Value::String(s) => s.clone(),
                Value::Number(n) if n.is_i64() || n.is_u64() => n.to_string(),
                other => {
                    return Err(BadArgs(format!(
                        "{} must be a string, got {}",
                        param.name,
                        kind(other)
                    )))
                }
            };
            if max > 0 && text.chars().count() > max {
                return Err(BadArgs(format!(
                    "{} is longer than {max} characters",
                    param.name
                )));
            }
            if text.chars().any(|c| c.is_control() && c != '\t') {
                return Err(BadArgs(format!("{} holds control characters", param.name)));
            }
            if !param.optional && param.dir == Dir::In && text.is_empty() {
                return Err(BadArgs(format!("{} is empty", param.name)));
            }
            Ok(Arg::Str(text))
        }
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "nil",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "a struct",
    }
}

/// The by-reference parameter names of a function, in order.
pub fn outputs(function: &Function) -> impl Iterator<Item = &'static Param> {
    function.params.iter().filter(|p| p.dir != Dir::In)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn args(v: Value) -> Vec<Value> {
        v.as_array().cloned().unwrap_or_default()
    }

    fn f(name: &str) -> &'static Function {
        function(name).expect("function")
    }

    #[test]
    fn twenty_five_functions() {
        assert_eq!(FUNCTIONS.len(), 25);
    }

    #[test]
    fn enqueue_seed_example_with_placeholders() {
        let a = parse(
            f("Enqueue"),
            &args(json!([
                "1341023126268002",
                1,
                "Sales",
                12,
                "Call enqueued from IVR",
                ">EstWaitTime",
                ">CallInQueue",
                "9055557900;69030"
            ])),
        )
        .expect("parse");
        assert_eq!(a.str("QueueName"), Some("Sales"));
        assert_eq!(a.int("InitialPriority"), Some(12));
        assert_eq!(a.str("ANIDNIS"), Some("9055557900;69030"));
    }

    #[test]
    fn by_reference_omitted_entirely() {
        let a = parse(
            f("Enqueue"),
            &args(json!(["1341023126268002", 1, "Sales", 12, "d", "1;2"])),
        )
        .expect("parse");
        assert_eq!(a.str("ANIDNIS"), Some("1;2"));
    }

    #[test]
    fn a_value_where_a_reference_belongs_is_306() {
        let e = parse(
            f("Enqueue"),
            &args(json!([
                "1341023126268002",
                1,
                "Sales",
                12,
                "d",
                5,
                ">X",
                "1;2"
            ])),
        );
        assert!(e.is_err());
    }

    #[test]
    fn placeholder_where_a_value_belongs_is_306() {
        assert!(parse(
            f("Enqueue"),
            &args(json!(["1", 1, ">Q", 12, "d", ">E", ">C"]))
        )
        .is_err());
    }

    #[test]
    fn trailing_references_may_be_left_out() {
        let a = parse(
            f("QueryCallStatus"),
            &args(json!(["1341023126268002", 60000, ">TRANSFER_EXT"])),
        )
        .expect("parse");
        assert_eq!(a.int("Timeout"), Some(60000));
        let a = parse(
            f("QueryCallInfo"),
            &args(json!(["36200", ">CallID", ">originalANI", ">originalDNIS"])),
        )
        .expect("parse");
        assert_eq!(a.str("Device"), Some("36200"));
        assert_eq!(a.str("TrunkConnectedIVRCall"), None);
        let a = parse(
            f("QueryCallInfo"),
            &args(json!([
                "6060", null, null, null, null, null, null, null, null, "1;"
            ])),
        )
        .expect("parse");
        assert_eq!(a.str("TrunkConnectedIVRCall"), Some("1;"));
    }

    #[test]
    fn ranges() {
        let e = |v: Value| parse(f("Enqueue"), &args(v)).is_err();
        assert!(e(json!(["1", 1, "Sales", 0])));
        assert!(e(json!(["1", 1, "Sales", 101])));
        assert!(e(json!(["1", 2, "Sales", 10])));
        assert!(e(json!(["1", 1, "a".repeat(33), 10])));
        assert!(e(json!(["1".repeat(19), 1, "Sales", 10])));
        assert!(!e(json!(["1", 1, "Sales", "100"])));
        assert!(parse(
            f("CreateCallback"),
            &args(json!(["1", "Q", "", 721, "n", "5;a"]))
        )
        .is_err());
        assert!(parse(
            f("CreateCallback"),
            &args(json!(["1", "Q", "", -720, "n", "5;a"]))
        )
        .is_ok());
        assert!(parse(f("Initialize"), &args(json!(["0", "s", 10000]))).is_err());
        assert!(parse(f("Initialize"), &args(json!(["6060", "6000@deerhurst", 0]))).is_err());
        assert!(parse(f("Initialize"), &args(json!(["x", "s", 1]))).is_err());
    }

    #[test]
    fn set_contact_data_fourth_argument() {
        let a = parse(
            f("SetContactData"),
            &args(json!(["8271023217459002", "Name", "John Doe", 0])),
        )
        .expect("tolerated");
        assert_eq!(a.str("Value"), Some("John Doe"));
        assert!(parse(f("SetContactData"), &args(json!(["8", "Name", "J", "x"]))).is_err());
        assert!(parse(f("SetDisplay"), &args(json!(["8", "x", 0]))).is_err());
    }

    #[test]
    fn query_agent_status_in_out() {
        let a = parse(
            f("QueryAgentStatus"),
            &args(json!(["188001", ">Device", ">AgentStatus"])),
        )
        .expect("parse");
        assert_eq!(a.str("AgentID"), Some("188001"));
        assert_eq!(a.str("Device"), None);
        let a = parse(f("QueryAgentStatus"), &args(json!([">A", "4711", ">S"]))).expect("parse");
        assert_eq!(a.str("Device"), Some("4711"));
    }

    #[test]
    fn missing_required_is_306() {
        assert!(parse(f("Transfer"), &args(json!(["1"]))).is_err());
        assert!(parse(f("CallerDisconnected"), &args(json!(["1", 3]))).is_err());
        assert!(parse(f("CallerDisconnected"), &args(json!(["1", "2"]))).is_ok());
        assert!(parse(f("SetCallInfo"), &args(json!(["1", true]))).is_err());
    }
}
