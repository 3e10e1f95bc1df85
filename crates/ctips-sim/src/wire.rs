//! The CTIPS wire: contracts read from [`crate::spec`], values, and a DataContract-ordered
//! writer and a WCF-like reader (strict: namespace, order and IsRequired enforced).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::OnceLock;

use crate::spec;
use crate::xml::{esc, Elem, NS_XSI};

/// `http://www.aspect.com/unifiedip/edk/ctipsapi/2009/08`: requests, SessionObject, faults.
pub const NS_API: &str = "http://www.aspect.com/unifiedip/edk/ctipsapi/2009/08";
/// `http://www.aspect.com/unifiedip/edk/clientpublishapi/2009/08`: the callback service, events.
pub const NS_PUB: &str = "http://www.aspect.com/unifiedip/edk/clientpublishapi/2009/08";
/// `http://www.aspect.com/unifiedip/edk/commondata/2009/08`: UserCredentials, CTICallDataItem, enums.
pub const NS_CD: &str = "http://www.aspect.com/unifiedip/edk/commondata/2009/08";
/// Arrays of int and string.
pub const NS_ARR: &str = "http://schemas.microsoft.com/2003/10/Serialization/Arrays";
/// SOAP 1.1 envelope.
pub const NS_SOAP: &str = "http://schemas.xmlsoap.org/soap/envelope/";
/// WCF dispatcher fault codes (DeserializationFailed, ActionNotSupported).
pub const NS_WCF_DISPATCHER: &str =
    "http://schemas.microsoft.com/net/2005/12/windowscommunicationfoundation/dispatcher";

/// The namespace URI of a WIRE.md namespace key (`api`, `pub`, `cd`).
pub fn ns_of(key: &str) -> &'static str {
    match key {
        "api" => NS_API,
        "pub" => NS_PUB,
        _ => NS_CD,
    }
}

/// A member's type.
#[derive(Debug, Clone, PartialEq)]
pub enum Ty {
    /// xs:int
    Int,
    /// xs:long
    Long,
    /// xs:string (nillable)
    Str,
    /// xs:boolean
    Bool,
    /// An enum, serialized by name.
    Enum(String),
    /// A data contract.
    Contract(String),
    /// An array of the inner type.
    Array(Box<Ty>),
}

/// One DataMember.
#[derive(Debug, Clone)]
pub struct Member {
    /// Element name.
    pub name: String,
    /// Type.
    pub ty: Ty,
    /// `IsRequired=true` (WCF faults when missing).
    pub required: bool,
}

/// One operation of the CTIPS service or of the client's callback service.
#[derive(Debug, Clone)]
pub struct Operation {
    /// Operation name (`RouteSelect`).
    pub name: String,
    /// SOAP action.
    pub action: String,
    /// Contract of the single `args` parameter (empty for Heartbeat).
    pub args_contract: String,
    /// Its members in wire order.
    pub members: Vec<Member>,
}

/// A data contract: namespace and members in wire order.
#[derive(Debug, Clone)]
pub struct Contract {
    /// Namespace URI.
    pub ns: &'static str,
    /// Members in wire order (base first).
    pub members: Vec<Member>,
}

/// Every contract, operation and enum of WIRE.md.
#[derive(Debug)]
pub struct Spec {
    /// Operations by name (CTIPS service and callback service).
    pub ops: BTreeMap<String, Operation>,
    /// Contracts by name, events and argument contracts included.
    pub contracts: BTreeMap<String, Contract>,
    /// Enums: names with their numeric values, in declaration order.
    pub enums: BTreeMap<String, Vec<(String, i64)>>,
}

fn parse_ty(raw: &str, enums: &BTreeMap<String, Vec<(String, i64)>>) -> Ty {
    if let Some(inner) = raw.strip_suffix("[]") {
        return Ty::Array(Box::new(parse_ty(inner, enums)));
    }
    match raw {
        "int" => Ty::Int,
        "long" => Ty::Long,
        "string" => Ty::Str,
        "bool" => Ty::Bool,
        other if enums.contains_key(other) => Ty::Enum(other.to_string()),
        other => Ty::Contract(other.to_string()),
    }
}

fn parse_members(list: &str, enums: &BTreeMap<String, Vec<(String, i64)>>) -> Vec<Member> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .filter_map(|m| {
            let (name, ty) = m.split_once(':')?;
            let (name, required) = match name.strip_suffix('*') {
                Some(n) => (n, true),
                None => (name, false),
            };
            Some(Member {
                name: name.to_string(),
                ty: parse_ty(ty.trim(), enums),
                required,
            })
        })
        .collect()
}

/// The parsed WIRE.md tables.
pub fn spec() -> &'static Spec {
    static SPEC: OnceLock<Spec> = OnceLock::new();
    SPEC.get_or_init(|| {
        let mut enums = BTreeMap::new();
        for (name, values) in spec::ENUMS {
            let vals = values
                .split(',')
                .filter_map(|v| {
                    let (n, x) = v.trim().split_once('=')?;
                    Some((n.to_string(), x.trim().parse().unwrap_or(0)))
                })
                .collect();
            enums.insert(name.to_string(), vals);
        }
        let mut contracts = BTreeMap::new();
        for (name, ns, members) in spec::CONTRACTS {
            contracts.insert(
                name.to_string(),
                Contract {
                    ns: ns_of(ns),
                    members: parse_members(members, &enums),
                },
            );
        }
        for (name, members) in spec::EVENTS {
            contracts.insert(
                name.to_string(),
                Contract {
                    ns: NS_PUB,
                    members: parse_members(members, &enums),
                },
            );
        }
        let mut ops = BTreeMap::new();
        for (name, action, contract, ns, members) in spec::OPERATIONS {
            let members = parse_members(members, &enums);
            if !contract.is_empty() && !contracts.contains_key(*contract) {
                contracts.insert(
                    contract.to_string(),
                    Contract {
                        ns: ns_of(ns),
                        members: members.clone(),
                    },
                );
            }
            ops.insert(
                name.to_string(),
                Operation {
                    name: name.to_string(),
                    action: action.to_string(),
                    args_contract: contract.to_string(),
                    members,
                },
            );
        }
        Spec {
            ops,
            contracts,
            enums,
        }
    })
}

/// A value of any member.
#[derive(Debug, Clone, PartialEq)]
pub enum V {
    /// int or long.
    Int(i64),
    /// string.
    Str(String),
    /// `i:nil="true"`.
    Nil,
    /// bool.
    Bool(bool),
    /// An enum member name.
    Enum(String),
    /// An array.
    Arr(Vec<V>),
    /// A data contract's members.
    Obj(Fields),
}

/// Member values by name.
pub type Fields = BTreeMap<String, V>;

impl V {
    /// As an integer (0 when not one).
    pub fn int(&self) -> i64 {
        match self {
            V::Int(i) => *i,
            V::Str(s) | V::Enum(s) => s.trim().parse().unwrap_or(0),
            V::Bool(b) => i64::from(*b),
            _ => 0,
        }
    }

    /// As text (empty for nil and containers).
    pub fn text(&self) -> String {
        match self {
            V::Int(i) => i.to_string(),
            V::Str(s) | V::Enum(s) => s.clone(),
            V::Bool(b) => b.to_string(),
            _ => String::new(),
        }
    }

    /// As a bool.
    pub fn bool(&self) -> bool {
        match self {
            V::Bool(b) => *b,
            V::Int(i) => *i != 0,
            _ => false,
        }
    }

    /// As an array (empty when not one).
    pub fn arr(&self) -> &[V] {
        match self {
            V::Arr(a) => a,
            _ => &[],
        }
    }
}

/// Shorthand for field maps: `fields![("CallId", V::Int(5))]`.
pub fn fields<I: IntoIterator<Item = (&'static str, V)>>(items: I) -> Fields {
    items.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// Reads a field as int, 0 when missing.
pub fn get_int(f: &Fields, name: &str) -> i64 {
    f.get(name).map(V::int).unwrap_or(0)
}

/// Reads a field as text, empty when missing.
pub fn get_str(f: &Fields, name: &str) -> String {
    f.get(name).map(V::text).unwrap_or_default()
}

fn default_for(ty: &Ty) -> V {
    match ty {
        Ty::Int | Ty::Long => V::Int(0),
        Ty::Str => V::Nil,
        Ty::Bool => V::Bool(false),
        Ty::Enum(e) => V::Enum(
            spec()
                .enums
                .get(e)
                .and_then(|v| v.first())
                .map(|(n, _)| n.clone())
                .unwrap_or_default(),
        ),
        Ty::Array(_) => V::Arr(Vec::new()),
        Ty::Contract(_) => V::Nil,
    }
}

fn prefix_for(ns: &str) -> &'static str {
    if ns == NS_API || ns == NS_PUB {
        "a"
    } else {
        "b"
    }
}

/// (namespace, element name) of an array item of this type.
pub fn item_of(ty: &Ty) -> (&'static str, String) {
    match ty {
        Ty::Int | Ty::Long => (NS_ARR, if *ty == Ty::Int { "int" } else { "long" }.into()),
        Ty::Str => (NS_ARR, "string".into()),
        Ty::Bool => (NS_ARR, "boolean".into()),
        // Enums are commondata contracts (the proxy's CLR namespace for CTIEventType and
        // the other enums; SnapshotArgs' sample agrees): SIM-3.
        Ty::Enum(e) => (NS_CD, e.clone()),
        Ty::Contract(c) => (
            spec().contracts.get(c).map(|c| c.ns).unwrap_or(NS_PUB),
            c.clone(),
        ),
        Ty::Array(_) => (NS_ARR, "ArrayOfanyType".into()),
    }
}

/// Writes members of a contract whose namespace is bound to `prefix` (in scope).
pub fn write_members(out: &mut String, prefix: &str, members: &[Member], f: &Fields) {
    for m in members {
        let v = f
            .get(&m.name)
            .cloned()
            .unwrap_or_else(|| default_for(&m.ty));
        write_value(out, prefix, &m.name, &m.ty, &v);
    }
}

fn write_value(out: &mut String, prefix: &str, name: &str, ty: &Ty, v: &V) {
    let tag = format!("{prefix}:{name}");
    match (ty, v) {
        (_, V::Nil) => {
            let _ = write!(out, "<{tag} i:nil=\"true\"/>");
        }
        (Ty::Array(inner), V::Arr(items)) => {
            let (ins, iname) = item_of(inner);
            let ip = if ins == NS_ARR { "b" } else { prefix_for(ins) };
            let decl = if ip == prefix {
                String::new()
            } else {
                format!(" xmlns:{ip}=\"{ins}\"")
            };
            if items.is_empty() {
                let _ = write!(out, "<{tag}{decl}/>");
                return;
            }
            let _ = write!(out, "<{tag}{decl}>");
            for it in items {
                write_value(out, ip, &iname, inner, it);
            }
            let _ = write!(out, "</{tag}>");
        }
        (Ty::Contract(c), V::Obj(fs)) => {
            let Some(contract) = spec().contracts.get(c) else {
                let _ = write!(out, "<{tag} i:nil=\"true\"/>");
                return;
            };
            let cp = prefix_for(contract.ns);
            let decl = if cp == prefix {
                String::new()
            } else {
                format!(" xmlns:{cp}=\"{}\"", contract.ns)
            };
            let _ = write!(out, "<{tag}{decl}>");
            write_members(out, cp, &contract.members, fs);
            let _ = write!(out, "</{tag}>");
        }
        (_, V::Bool(b)) => {
            let _ = write!(out, "<{tag}>{b}</{tag}>");
        }
        (_, other) => {
            let _ = write!(out, "<{tag}>{}</{tag}>", esc(&other.text()));
        }
    }
}

/// A SOAP 1.1 envelope around a body fragment.
pub fn envelope(body: &str) -> String {
    format!("<s:Envelope xmlns:s=\"{NS_SOAP}\"><s:Body>{body}</s:Body></s:Envelope>")
}

/// A request body for operation `op` (a CTIPS request, as a client would write it).
pub fn request_body(op: &str, args: &Fields) -> String {
    let Some(o) = spec().ops.get(op) else {
        return String::new();
    };
    let mut out = String::new();
    let _ = write!(
        out,
        "<{op} xmlns=\"{NS_API}\"><args xmlns:a=\"{NS_API}\" xmlns:i=\"{NS_XSI}\">"
    );
    write_members(&mut out, "a", &o.members, args);
    let _ = write!(out, "</args></{op}>");
    envelope(&out)
}

/// `PublishCTIEvent` body for an event contract (`CTIRouteRequest`).
pub fn publish_body(kind: &str, f: &Fields) -> String {
    let members = spec()
        .contracts
        .get(kind)
        .map(|c| c.members.as_slice())
        .unwrap_or(&[]);
    let mut out = String::new();
    let _ = write!(
        out,
        "<PublishCTIEvent xmlns=\"{NS_PUB}\"><ctiEvent i:type=\"a:{kind}\" xmlns:a=\"{NS_PUB}\" xmlns:i=\"{NS_XSI}\">"
    );
    write_members(&mut out, "a", members, f);
    out.push_str("</ctiEvent></PublishCTIEvent>");
    envelope(&out)
}

/// `Heartbeat(sessionId)` body.
pub fn heartbeat_body(session_id: &str) -> String {
    envelope(&format!(
        "<Heartbeat xmlns=\"{NS_PUB}\"><sessionId>{}</sessionId></Heartbeat>",
        esc(session_id)
    ))
}

/// `StartSession(userinfo, sessionId)` body.
pub fn start_session_body(user: &str, password: &str, session_id: &str) -> String {
    let mut creds = String::new();
    if let Some(c) = spec().contracts.get("UserCredentials") {
        let f = fields([
            ("UserName", V::Str(user.to_string())),
            ("Password", V::Str(password.to_string())),
        ]);
        write_members(&mut creds, "a", &c.members, &f);
    }
    envelope(&format!(
        "<StartSession xmlns=\"{NS_PUB}\"><userinfo xmlns:a=\"{NS_CD}\" xmlns:i=\"{NS_XSI}\">{creds}</userinfo><sessionId>{}</sessionId></StartSession>",
        esc(session_id)
    ))
}

/// `<OpResponse><OpResult>n</OpResult></OpResponse>` in the given namespace.
pub fn int_response(op: &str, ns: &str, result: i64) -> String {
    envelope(&format!(
        "<{op}Response xmlns=\"{ns}\"><{op}Result>{result}</{op}Result></{op}Response>"
    ))
}

/// The OpenConnection reply carrying a SessionObject.
pub fn open_connection_response(session_id: Option<&str>, response: &str) -> String {
    let sid = match session_id {
        Some(s) => format!("<a:SessionId>{}</a:SessionId>", esc(s)),
        None => "<a:SessionId i:nil=\"true\"/>".into(),
    };
    envelope(&format!(
        "<OpenConnectionResponse xmlns=\"{NS_API}\"><OpenConnectionResult xmlns:a=\"{NS_API}\" xmlns:i=\"{NS_XSI}\">{sid}<a:Response>{response}</a:Response></OpenConnectionResult></OpenConnectionResponse>"
    ))
}

/// A `CTIPortalServiceFault` (HTTP 500).
pub fn service_fault(code: &str, message: &str) -> String {
    envelope(&format!(
        "<s:Fault><faultcode>s:Client</faultcode><faultstring xml:lang=\"en-US\">{m}</faultstring><detail><CTIPortalServiceFault xmlns=\"{NS_API}\" xmlns:i=\"{NS_XSI}\"><ErrorCode>{code}</ErrorCode><Message>{m}</Message></CTIPortalServiceFault></detail></s:Fault>",
        m = esc(message)
    ))
}

/// A WCF dispatcher fault (DeserializationFailed, ActionNotSupported), without detail, as WCF
/// sends it when `includeExceptionDetailInFaults` is off.
pub fn dispatcher_fault(code: &str, message: &str) -> String {
    envelope(&format!(
        "<s:Fault><faultcode xmlns:a=\"{NS_WCF_DISPATCHER}\">a:{code}</faultcode><faultstring xml:lang=\"en-US\">{}</faultstring></s:Fault>",
        esc(message)
    ))
}

/// Reads the members of a contract from `el`'s children.
///
/// Strict (WCF DataContractSerializer): members are matched in wire order and namespace; an
/// element that is out of order, in the wrong namespace or unknown is skipped as extension
/// data, and a required member that was not matched is an error; a value that cannot be read
/// (an int that is not a number, an unknown enum name, nil for a value type) is an error.
/// Tolerant: matched by local name in any order and namespace; unreadable values default.
pub fn read_members(
    el: &Elem,
    ns: &str,
    members: &[Member],
    strict: bool,
) -> Result<Fields, String> {
    let mut out = Fields::new();
    if strict {
        let mut next = 0usize;
        for child in &el.children {
            let found = members[next..]
                .iter()
                .position(|m| m.name == child.name && child.ns == ns);
            if let Some(off) = found {
                let idx = next + off;
                for skipped in &members[next..idx] {
                    if skipped.required {
                        return Err(format!(
                            "'EndElement' or element '{}' from namespace '{ns}' is expected. Found element '{}' from namespace '{}'.",
                            skipped.name, child.name, child.ns
                        ));
                    }
                }
                let m = &members[idx];
                out.insert(m.name.clone(), read_value(child, &m.ty, true, &m.name)?);
                next = idx + 1;
            }
            // else: extension data (WCF ignores it)
        }
        if let Some(m) = members[next..].iter().find(|m| m.required) {
            return Err(format!(
                "Element '{}' from namespace '{ns}' is required but was not found.",
                m.name
            ));
        }
    } else {
        for m in members {
            if let Some(child) = el.children.iter().find(|c| c.name == m.name) {
                if let Ok(v) = read_value(child, &m.ty, false, &m.name) {
                    out.insert(m.name.clone(), v);
                }
            }
        }
    }
    Ok(out)
}

fn read_value(el: &Elem, ty: &Ty, strict: bool, name: &str) -> Result<V, String> {
    if el.is_nil() {
        return match ty {
            Ty::Str | Ty::Array(_) | Ty::Contract(_) => Ok(V::Nil),
            _ if strict => Err(format!("'{name}' is nil but its type cannot be null")),
            _ => Ok(default_for(ty)),
        };
    }
    let t = el.text.trim();
    match ty {
        Ty::Int | Ty::Long => {
            let parsed = t
                .parse::<i64>()
                .ok()
                .filter(|v| *ty == Ty::Long || i32::try_from(*v).is_ok());
            match parsed {
                Some(v) => Ok(V::Int(v)),
                None => Err(format!(
                    "'{name}': the value '{t}' cannot be parsed as the type '{}'",
                    if *ty == Ty::Int { "Int32" } else { "Int64" }
                )),
            }
        }
        Ty::Str => Ok(V::Str(el.text.clone())),
        Ty::Bool => match t {
            "true" | "1" => Ok(V::Bool(true)),
            "false" | "0" => Ok(V::Bool(false)),
            _ => Err(format!(
                "'{name}': the value '{t}' cannot be parsed as the type 'Boolean'"
            )),
        },
        Ty::Enum(e) => {
            let known = spec()
                .enums
                .get(e)
                .is_some_and(|vals| vals.iter().any(|(n, _)| n == t));
            if known {
                Ok(V::Enum(t.to_string()))
            } else if strict {
                Err(format!(
                    "Invalid enum value '{t}' cannot be deserialized into type '{e}'"
                ))
            } else {
                Ok(V::Enum(t.to_string()))
            }
        }
        Ty::Array(inner) => {
            let (ins, iname) = item_of(inner);
            let mut items = Vec::new();
            for c in &el.children {
                if strict && (c.ns != ins || c.name != iname) {
                    return Err(format!(
                        "'{name}': expecting element '{iname}' from namespace '{ins}', found '{}' from namespace '{}'",
                        c.name, c.ns
                    ));
                }
                items.push(read_value(c, inner, strict, &iname)?);
            }
            Ok(V::Arr(items))
        }
        Ty::Contract(c) => {
            let Some(contract) = spec().contracts.get(c) else {
                return Ok(V::Nil);
            };
            Ok(V::Obj(read_members(
                el,
                contract.ns,
                &contract.members,
                strict,
            )?))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::xml::parse;

    #[test]
    fn spec_tables_are_complete() {
        let s = spec();
        assert_eq!(s.ops.len(), 30);
        assert!(s.contracts.contains_key("CTIRouteRequest"));
        let rs = &s.ops["RouteSelect"];
        let names: Vec<_> = rs.members.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "SessionId",
                "RequestId",
                "TenantId",
                "CallId",
                "DestinationAddress",
                "RouteActionType",
                "UserData"
            ]
        );
        assert_eq!(s.enums["ResponseCode"][1], ("success".to_string(), 101));
    }

    #[test]
    fn request_round_trip_and_strict_order() {
        let args = fields([
            ("SessionId", V::Str("s1".into())),
            ("RequestId", V::Int(7)),
            ("TenantId", V::Int(1)),
            ("CallId", V::Int(5551)),
            ("DestinationAddress", V::Str("3".into())),
            ("RouteActionType", V::Enum("RouteToService".into())),
            ("UserData", V::Arr(vec![V::Str("acct=42".into())])),
        ]);
        let body = request_body("RouteSelect", &args);
        let env = parse(body.as_bytes()).unwrap();
        let a = env.children[0].children[0].children[0].clone();
        let m = &spec().ops["RouteSelect"].members;
        let got = read_members(&a, NS_API, m, true).unwrap();
        assert_eq!(got, args);
        // swap CallId and TenantId: strict faults, tolerant reads
        let mut swapped = a.clone();
        swapped.children.swap(2, 3);
        assert!(read_members(&swapped, NS_API, m, true).is_err());
        assert_eq!(read_members(&swapped, NS_API, m, false).unwrap(), args);
    }
}

#[cfg(test)]
mod mutation_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::xml::parse;

    /// Deterministic byte mutations of valid requests and events: the reader answers Ok or
    /// Err, never panics (bad input must become a fault, not a crash).
    #[test]
    fn mutated_bodies_never_panic() {
        let mut seeds = vec![
            request_body(
                "RouteSelect",
                &fields([
                    ("SessionId", V::Str("s".into())),
                    ("CallId", V::Int(5)),
                    ("RouteActionType", V::Enum("RouteToAgent".into())),
                    ("UserData", V::Arr(vec![V::Str("a".into())])),
                ]),
            ),
            request_body(
                "OpenConnection",
                &fields([
                    ("TenantIds", V::Arr(vec![V::Int(1)])),
                    (
                        "UserCredentials",
                        V::Obj(fields([("UserName", V::Str("u".into()))])),
                    ),
                ]),
            ),
        ];
        seeds.push(publish_body(
            "CTIRouteRequest",
            &fields([(
                "CallInfo",
                V::Obj(fields([(
                    "CallData",
                    V::Arr(vec![V::Obj(fields([("key", V::Str("k".into()))]))]),
                )])),
            )]),
        ));
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let alphabet = b"<>/&;:=\"' aAiz0-9\x00\xff";
        let mut parsed = 0;
        for seed in &seeds {
            for _ in 0..1500 {
                let mut b = seed.as_bytes().to_vec();
                for _ in 0..(1 + next() % 4) {
                    let pos = (next() as usize) % b.len();
                    match next() % 3 {
                        0 => b[pos] = alphabet[(next() as usize) % alphabet.len()],
                        1 => {
                            b.remove(pos);
                        }
                        _ => {
                            let end = (pos + (next() as usize) % 40).min(b.len());
                            let chunk = b[pos..end].to_vec();
                            b.splice(pos..pos, chunk);
                        }
                    }
                }
                let Ok(root) = parse(&b) else { continue };
                parsed += 1;
                let Some(op) = root.child("Body").and_then(|x| x.children.first()) else {
                    continue;
                };
                let Some(args) = op.children.first() else {
                    continue;
                };
                for o in spec().ops.values() {
                    let _ = read_members(args, NS_API, &o.members, true);
                    let _ = read_members(args, NS_API, &o.members, false);
                }
                for c in spec().contracts.values() {
                    let _ = read_members(args, c.ns, &c.members, true);
                }
            }
        }
        assert!(
            parsed > 100,
            "mutations should leave some documents readable"
        );
    }
}
