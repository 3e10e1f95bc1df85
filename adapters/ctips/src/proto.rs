//! The CTIPS wire protocol as ivrgate speaks it: requests in DataContract element order with
//! the names of the real service description (WIRE.md), replies and faults.

use bytes::Bytes;
use ivrgate_adapter::{OutboundError, OutboundRequest, OutboundResponse, PlatformClient};

use ivrgate_wire::soap;

use crate::xml::{self, Node};

pub const NS_API: &str = "http://www.aspect.com/unifiedip/edk/ctipsapi/2009/08";
pub const NS_PUB: &str = "http://www.aspect.com/unifiedip/edk/clientpublishapi/2009/08";
pub const NS_CD: &str = "http://www.aspect.com/unifiedip/edk/commondata/2009/08";
pub const NS_ARRAYS: &str = "http://schemas.microsoft.com/2003/10/Serialization/Arrays";
pub const NS_XSI: &str = "http://www.w3.org/2001/XMLSchema-instance";
pub const NS_SOAP11: &str = "http://schemas.xmlsoap.org/soap/envelope/";

/// The deepest nesting a CTIPS reply may have.
pub const MAX_DEPTH: usize = 32;

/// Which contract an operation belongs to (its SOAPAction path).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Service {
    Registration,
    Routing,
    AgentCall,
}

impl Service {
    fn name(self) -> &'static str {
        match self {
            Service::Registration => "RegistrationService",
            Service::Routing => "RoutingService",
            Service::AgentCall => "AgentCallService",
        }
    }
}

macro_rules! wire_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident = $wire:literal),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
        pub enum $name { $($variant),* }
        impl $name {
            /// The name sent on the wire.
            pub fn wire(self) -> &'static str {
                match self { $($name::$variant => $wire),* }
            }
            /// Reads the wire name (ASCII case-insensitive).
            pub fn from_wire(text: &str) -> Option<Self> {
                let text = text.trim();
                $(if text.eq_ignore_ascii_case($wire) { return Some($name::$variant); })*
                None
            }
        }
    };
}

wire_enum!(
    /// CTIMessageClass (AddMessageClass).
    MessageClass {
        Agent = "EventCategoryAgent",
        Call = "EventCategoryCall",
        Route = "EventCategoryRoute",
        System = "EventCategorySystem",
    }
);

wire_enum!(
    /// CTIFieldType (AddFilter).
    FieldType {
        Agent = "FT_AGENT_ID",
        Service = "FT_SERVICE_ID",
        Switch = "FT_SWITCH_ID",
        Tenant = "FT_TENANT_ID",
    }
);

wire_enum!(
    /// CTIEntityType (Snapshot).
    EntityType {
        Agent = "AgentInfo",
        Call = "CallInfo",
        Service = "ServiceInfo",
    }
);

wire_enum!(
    /// CTIRouteType (RouteSelect).
    RouteType {
        ToAgent = "RouteToAgent",
        ToService = "RouteToService",
        ToExternal = "RouteToExternal",
        ToDefault = "RouteToDefault",
        Ivr = "Ivr",
        Voicemail = "Voicemail",
    }
);

wire_enum!(
    /// CTIDestinationType.
    DestinationType {
        Agent = "Agent",
        Service = "Service",
        External = "External",
        NoDestination = "NoDestination",
    }
);

wire_enum!(
    /// CTIAgentState.
    AgentState {
        NotReady = "NotReady",
        NotReadyPark = "NotReadyPark",
        Idle = "Idle",
        PendingActive = "PendingActive",
        Active = "Active",
        Wrap = "Wrap",
        WrapWarning = "WrapWarning",
        Reserved = "Reserved",
        MultiLine = "MultiLine",
    }
);

wire_enum!(
    /// CTITransferType.
    TransferType {
        Blind = "Blind",
        Consultation = "Consultation",
    }
);

/// Whether an operation's arguments carry a RequestId. WIRE.md marks it required on Snapshot,
/// RouteSelect and every AgentCallService operation, and on none of the other registration
/// operations; WCF faults a request that lacks a required member, so where an operation takes
/// one it is always sent, whatever its value (CT-11).
pub fn takes_request_id(op: &str) -> bool {
    !matches!(
        op,
        "OpenConnection"
            | "CloseConnection"
            | "OnLine"
            | "OffLine"
            | "AddMessageClass"
            | "DeleteMessageClass"
            | "AddFilter"
            | "DeleteFilter"
    )
}

/// A field value in a request.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Field {
    Text(String),
    Strings(Vec<String>),
    Ints(Vec<i64>),
    Credentials(String, String),
    EntityTypes(Vec<EntityType>),
}

/// One request, its fields in the order they are added (the caller adds them in WIRE.md's
/// DataContract order).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Request {
    pub op: String,
    pub service: Service,
    pub fields: Vec<(String, Field)>,
}

impl Request {
    pub fn new(op: &str, service: Service) -> Self {
        Request {
            op: op.to_owned(),
            service,
            fields: Vec::new(),
        }
    }

    pub fn text(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.fields
            .push((name.to_owned(), Field::Text(value.into())));
        self
    }

    pub fn int(self, name: &'static str, value: i64) -> Self {
        self.text(name, value.to_string())
    }

    pub fn bool(self, name: &'static str, value: bool) -> Self {
        self.text(name, if value { "true" } else { "false" })
    }

    pub fn strings(mut self, name: &'static str, values: Vec<String>) -> Self {
        self.fields.push((name.to_owned(), Field::Strings(values)));
        self
    }

    pub fn ints(mut self, name: &'static str, values: Vec<i64>) -> Self {
        self.fields.push((name.to_owned(), Field::Ints(values)));
        self
    }

    pub fn credentials(mut self, name: &'static str, user: &str, password: &str) -> Self {
        self.fields.push((
            name.to_owned(),
            Field::Credentials(user.into(), password.into()),
        ));
        self
    }

    pub fn entity_types(mut self, name: &'static str, values: Vec<EntityType>) -> Self {
        self.fields
            .push((name.to_owned(), Field::EntityTypes(values)));
        self
    }

    /// `SOAPAction` (unquoted).
    pub fn action(&self) -> String {
        format!("{NS_API}/{}/{}", self.service.name(), self.op)
    }

    /// The whole SOAP 1.1 envelope, written with the shared SOAP writer.
    pub fn envelope(&self) -> String {
        let mut b = soap::Builder::new();
        b.start_with("args", &[("xmlns:a", NS_API), ("xmlns:i", NS_XSI)]);
        for (name, field) in &self.fields {
            let name = format!("a:{name}");
            match field {
                Field::Text(text) => {
                    b.leaf(&name, text);
                }
                Field::Strings(values) => {
                    b.array(&name, NS_ARRAYS, "string", values);
                }
                Field::Ints(values) => {
                    b.array(&name, NS_ARRAYS, "int", values.iter().map(i64::to_string));
                }
                Field::Credentials(user, password) => {
                    b.start_with(&name, &[("xmlns:b", NS_CD)])
                        .leaf("b:UserName", user)
                        .leaf("b:Password", password)
                        .end();
                }
                Field::EntityTypes(values) => {
                    b.array(
                        &name,
                        NS_CD,
                        "CTIEntityType",
                        values.iter().map(|v| v.wire()),
                    );
                }
            }
        }
        b.end();
        soap::write_request(&self.op, NS_API, b)
    }
}

/// Why a request did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// No HTTP answer (refused, reset, timed out): the server is not reachable.
    Unreachable(String),
    /// A SOAP fault; `code` is the `CTIPortalServiceFault` ErrorCode when there was one,
    /// otherwise the SOAP faultcode.
    Fault { code: String, message: String },
    /// The int result was not a success code (0 or 101, CT-4).
    Result(i64),
    /// Something that is not a CTIPS answer.
    Protocol(String),
}

impl CallError {
    pub fn is_fault(&self, code: &str) -> bool {
        matches!(self, CallError::Fault { code: c, .. } if c == code)
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Unreachable(why) => write!(f, "unreachable: {why}"),
            CallError::Fault { code, message } => write!(f, "fault {code}: {message}"),
            CallError::Result(code) => write!(f, "result code {code}"),
            CallError::Protocol(why) => write!(f, "bad answer: {why}"),
        }
    }
}

/// The `ResponseCode` values that mean success (`_success` and `success`, CT-4).
pub fn is_success_code(code: i64) -> bool {
    code == 0 || code == 101
}

/// Reads an answer: the `{Op}Result` element on success, the fault otherwise.
pub fn read_reply(op: &str, response: &OutboundResponse) -> Result<Node, CallError> {
    let root = xml::parse_typed(&response.body, response.content_type.as_deref(), MAX_DEPTH)
        .map_err(|e| {
            if response.status == 200 {
                CallError::Protocol(e.0)
            } else {
                CallError::Protocol(format!(
                    "HTTP {} with an unreadable body: {}",
                    response.status, e.0
                ))
            }
        })?;
    let first = xml::body_op(&root).map_err(|e| CallError::Protocol(e.0))?;
    if first.name == "Fault" {
        return Err(read_fault(first));
    }
    if response.status != 200 {
        return Err(CallError::Protocol(format!("HTTP {}", response.status)));
    }
    let expected = format!("{op}Response");
    if first.name != expected {
        return Err(CallError::Protocol(format!(
            "expected <{expected}>, got <{}>",
            first.name
        )));
    }
    first
        .child(&format!("{op}Result"))
        .cloned()
        .ok_or_else(|| CallError::Protocol(format!("<{expected}> has no {op}Result")))
}

fn read_fault(fault: &Node) -> CallError {
    let faultstring = fault
        .child("faultstring")
        .or_else(|| fault.path(&["Reason", "Text"]))
        .map(|n| n.value().to_owned())
        .unwrap_or_default();
    let detail = fault
        .child("detail")
        .or_else(|| fault.child("Detail"))
        .and_then(|d| d.child("CTIPortalServiceFault"));
    match detail {
        Some(d) => CallError::Fault {
            code: d
                .child("ErrorCode")
                .map(|n| n.value().to_owned())
                .unwrap_or_else(|| "GeneralError".into()),
            message: d
                .child("Message")
                .map(|n| n.value().to_owned())
                .filter(|m| !m.is_empty())
                .unwrap_or(faultstring),
        },
        None => CallError::Fault {
            code: fault
                .child("faultcode")
                .map(|n| n.value().rsplit(':').next().unwrap_or_default().to_owned())
                .unwrap_or_else(|| "Server".into()),
            message: faultstring,
        },
    }
}

/// Sends a request to `url` and reads the `{Op}Result` element.
pub async fn call(
    http: &dyn PlatformClient,
    url: &str,
    request: &Request,
    timeout: Option<std::time::Duration>,
) -> Result<Node, CallError> {
    let outbound = OutboundRequest {
        url: url.to_owned(),
        headers: vec![
            ("Content-Type".into(), "text/xml; charset=utf-8".into()),
            ("SOAPAction".into(), format!("\"{}\"", request.action())),
        ],
        body: Bytes::from(request.envelope()),
        timeout,
    };
    let response = http.post(outbound).await.map_err(|e| match e {
        OutboundError::Connect(why) => CallError::Unreachable(why),
        OutboundError::Timeout => CallError::Unreachable("timed out".into()),
        OutboundError::Body(why) => CallError::Protocol(why),
    })?;
    read_reply(&request.op, &response)
}

/// Sends a request whose result is an int code, and checks it.
pub async fn call_int(
    http: &dyn PlatformClient,
    url: &str,
    request: &Request,
    timeout: Option<std::time::Duration>,
) -> Result<i64, CallError> {
    let result = call(http, url, request, timeout).await?;
    let code: i64 = result
        .value()
        .parse()
        .map_err(|_| CallError::Protocol(format!("{}Result is not an int", request.op)))?;
    if is_success_code(code) {
        Ok(code)
    } else {
        Err(CallError::Result(code))
    }
}

/// The session object OpenConnection returns.
pub fn read_session(result: &Node) -> Result<String, CallError> {
    let response = result.child("Response").map(|n| n.value()).unwrap_or("");
    let ok = matches!(
        response,
        "_success" | "success" | "0" | "101" | "logonSuccess"
    );
    let id = result
        .child("SessionId")
        .filter(|n| !n.is_nil())
        .map(|n| n.value().to_owned())
        .unwrap_or_default();
    if !ok {
        return Err(CallError::Fault {
            code: if response.is_empty() {
                "unspecified".into()
            } else {
                response.to_owned()
            },
            message: "OpenConnection refused".into(),
        });
    }
    if id.is_empty() {
        return Err(CallError::Protocol(
            "OpenConnection returned no SessionId".into(),
        ));
    }
    Ok(id)
}
