//! The methods of seed 004 and the typed document/literal-wrapped WSDL describing them.
//!
//! Methods whose seed example wraps the parameters in `<data>` (AddInteraction,
//! GetSegmentState, GetSegmentVariables and the other `PlatformToolkitResponse` methods) are
//! declared with a `data` parameter; the VXML Interaction Server methods (CreateInteraction,
//! Interaction*, ...) with their parameters directly. Requests are accepted either way.

use crate::soap::escape;

/// The response shape a method answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// `Header` (ClientID, Id, Status) and `Data`, as AddInteraction's example.
    Toolkit,
    /// GetSegmentState's `Header` (Status, Id) and `Data`.
    SegmentState,
    /// `ResultCode`, `Result`, `Description`, `Guid` (+ `InteractionId`, `Variables`), as
    /// CreateInteraction's example.
    Result,
}

/// A parameter's schema type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    /// One of a closed list of values: an `xs:string` restricted by `xs:enumeration`, so a
    /// client generated from the WSDL can discover them.
    Enum(&'static Enumeration),
    Options,
    UserData,
    InteractionData,
}

/// A closed list of values a parameter takes, declared in the WSDL as a simpleType of this
/// name. The methods accept the values case-insensitively and answer the seed's status code
/// for anything else; the list is the one place they are kept.
#[derive(Debug, PartialEq, Eq)]
pub struct Enumeration {
    pub name: &'static str,
    pub values: &'static [&'static str],
}

/// InteractionCancelled's `CancelledBy` (seed 004).
pub static CANCELLED_BY: Enumeration = Enumeration {
    name: "CancelledBy",
    values: &[
        "Caller",
        "Agent",
        "EyeQueue",
        "Configuration",
        "ChoseMessaging",
        "RejectMessaging",
        "Administrator",
        "Web",
    ],
};

/// InteractionDequeued's `Reason`.
pub static DEQUEUE_REASONS: Enumeration = Enumeration {
    name: "DequeueReason",
    values: &["AgentAnswered", "Abandoned"],
};

/// InteractionDisconnectedByApplication's `Reason`.
pub static APPLICATION_DISCONNECT_REASONS: Enumeration = Enumeration {
    name: "ApplicationDisconnectReason",
    values: &["AfterHours", "SmartCallBlock", "Other"],
};

/// InteractionDisconnectedByCaller's `Reason`.
pub static CALLER_DISCONNECT_REASONS: Enumeration = Enumeration {
    name: "CallerDisconnectReason",
    values: &[
        "Abandon",
        "CBDCDisconnectAndKeepPendingCallback",
        "CBDCDisconnectAndCancelPendingCallback",
        "CBDCMaxInvalidResponse",
        "ChoseMessaging",
    ],
};

/// InteractionOutboundAttemptFailed's `Reason`.
pub static ATTEMPT_REASONS: Enumeration = Enumeration {
    name: "OutboundAttemptFailedReason",
    values: &[
        "Busy",
        "NoAnswer",
        "AnsweringMachine",
        "TryAgain",
        "Abandon",
        "InvalidResponse",
        "MaxInvalidResponse",
        "Other",
    ],
};

/// InteractionSendToQueue's `Reason`.
pub static SEND_REASONS: Enumeration = Enumeration {
    name: "SendToQueueReason",
    values: &[
        "ChoseHold",
        "ForceHold",
        "MaxInvalidResponse",
        "QueueSpeak",
        "SpeakToAgent",
        "TroubleTransfer",
        "UnderThreshold",
        "CBDCSendToHoldingQueue",
        "CNDCSendToPriorityQueue",
        "CBDCSendToPriorityQueue",
    ],
};

/// ModifyInteraction's `Action`: which field of the interaction changes.
pub static MODIFY_ACTIONS: Enumeration = Enumeration {
    name: "ModifyAction",
    values: &[
        "AppointmentTime",
        "Result",
        "ClientId",
        "DataName",
        "DataValue",
    ],
};

/// RemoveInteraction's `Reason`, as the seed spells them (the method also takes
/// "Cancelled" and the words without their space).
pub static REMOVE_REASONS: Enumeration = Enumeration {
    name: "RemoveReason",
    values: &["Web Canceled", "Admin Canceled"],
};

/// Every enumeration the WSDL declares.
pub static ENUMERATIONS: &[&Enumeration] = &[
    &CANCELLED_BY,
    &DEQUEUE_REASONS,
    &APPLICATION_DISCONNECT_REASONS,
    &CALLER_DISCONNECT_REASONS,
    &ATTEMPT_REASONS,
    &SEND_REASONS,
    &MODIFY_ACTIONS,
    &REMOVE_REASONS,
];

/// One method's WSDL operation: its name, whether the WSDL wraps its parameters in `data`,
/// its parameters and its response shape. In the order of [`crate::method::Method`].
#[derive(Debug)]
pub struct Operation {
    pub name: &'static str,
    pub wrapped: bool,
    pub params: &'static [(&'static str, Kind)],
    pub shape: Shape,
}

use Kind::*;

const T: (&str, Kind) = ("Tenant", Text);
const ID: (&str, Kind) = ("InteractionId", Text);
const OPT: (&str, Kind) = ("Options", Options);

pub static METHODS: &[Operation] = &[
    Operation {
        name: "AddInteraction",
        wrapped: true,
        params: &[T, ("Segment", Text), ("Contact", Text), OPT],
        shape: Shape::Toolkit,
    },
    Operation {
        name: "AssociateInteractionWithExternalTrackingID",
        wrapped: false,
        params: &[T, ID, ("ExternalTrackingId", Text)],
        shape: Shape::Result,
    },
    Operation {
        name: "CreateInteraction",
        wrapped: false,
        params: &[
            T,
            ("Segment", Text),
            ("ExternalTrackingId", Text),
            ("SourceApplication", Text),
            ("UserData", UserData),
        ],
        shape: Shape::Result,
    },
    Operation {
        name: "FindInteraction",
        wrapped: true,
        params: &[T, ("Contact", Text), ("Segment", Text), ID, OPT],
        shape: Shape::Toolkit,
    },
    Operation {
        name: "GetInteractionData",
        wrapped: true,
        params: &[T, ID, OPT],
        shape: Shape::Toolkit,
    },
    Operation {
        name: "GetNextAvailableAppointmentTime",
        wrapped: true,
        params: &[T, ("Segment", Text), OPT],
        shape: Shape::Toolkit,
    },
    Operation {
        name: "GetSegments",
        wrapped: true,
        params: &[T, OPT],
        shape: Shape::Toolkit,
    },
    Operation {
        name: "GetSegmentState",
        wrapped: true,
        params: &[T, ("Segment", Text), OPT, ("SourceApplication", Text)],
        shape: Shape::SegmentState,
    },
    Operation {
        name: "GetSegmentVariables",
        wrapped: true,
        params: &[T, ("Segment", Text), OPT],
        shape: Shape::Toolkit,
    },
    Operation {
        name: "GetStatus",
        wrapped: true,
        params: &[T, OPT],
        shape: Shape::Toolkit,
    },
    Operation {
        name: "GetSystemVariables",
        wrapped: false,
        params: &[T],
        shape: Shape::Result,
    },
    Operation {
        name: "GetVersion",
        wrapped: true,
        params: &[OPT],
        shape: Shape::Toolkit,
    },
    Operation {
        name: "InteractionCancelled",
        wrapped: false,
        params: &[T, ID, ("CancelledBy", Enum(&CANCELLED_BY))],
        shape: Shape::Result,
    },
    Operation {
        name: "InteractionDequeued",
        wrapped: false,
        params: &[
            T,
            ID,
            ("ExternalTrackingId", Text),
            ("Reason", Enum(&DEQUEUE_REASONS)),
        ],
        shape: Shape::Result,
    },
    Operation {
        name: "InteractionDisconnectedByApplication",
        wrapped: false,
        params: &[
            T,
            ID,
            ("Reason", Enum(&APPLICATION_DISCONNECT_REASONS)),
            ("DataName", Text),
            ("DataValue", Text),
        ],
        shape: Shape::Result,
    },
    Operation {
        name: "InteractionDisconnectedByCaller",
        wrapped: false,
        params: &[T, ID, ("Reason", Enum(&CALLER_DISCONNECT_REASONS))],
        shape: Shape::Result,
    },
    Operation {
        name: "InteractionOutboundAttemptFailed",
        wrapped: false,
        params: &[
            T,
            ID,
            ("Reason", Enum(&ATTEMPT_REASONS)),
            ("DataName", Text),
            ("DataValue", Text),
        ],
        shape: Shape::Result,
    },
    Operation {
        name: "InteractionOutboundConnected",
        wrapped: false,
        params: &[T, ID],
        shape: Shape::Result,
    },
    Operation {
        name: "InteractionQueued",
        wrapped: false,
        params: &[
            T,
            ID,
            ("ExternalTrackingId", Text),
            ("SkillId", Text),
            ("Segment", Text),
        ],
        shape: Shape::Result,
    },
    Operation {
        name: "InteractionRequestContact",
        wrapped: false,
        params: &[T, ID, ("ContactURI", Text), ("Segment", Text)],
        shape: Shape::Result,
    },
    Operation {
        name: "InteractionSendToQueue",
        wrapped: false,
        params: &[
            T,
            ID,
            ("Reason", Enum(&SEND_REASONS)),
            ("DataName", Text),
            ("DataValue", Text),
        ],
        shape: Shape::Result,
    },
    Operation {
        name: "ModifyInteraction",
        wrapped: true,
        params: &[T, ID, ("Action", Enum(&MODIFY_ACTIONS)), OPT],
        shape: Shape::Toolkit,
    },
    Operation {
        name: "RemoveInteraction",
        wrapped: true,
        params: &[T, ID, ("Reason", Enum(&REMOVE_REASONS)), OPT],
        shape: Shape::Toolkit,
    },
    Operation {
        name: "UpdateInteractionData",
        wrapped: false,
        params: &[T, ID, ("InteractionData", InteractionData)],
        shape: Shape::Result,
    },
    Operation {
        name: "UpdateUserData",
        wrapped: true,
        params: &[T, ID, ("UserData", UserData)],
        shape: Shape::Toolkit,
    },
    Operation {
        name: "ValidateContact",
        wrapped: true,
        params: &[T, ("Segment", Text), ("Contact", Text), OPT],
        shape: Shape::Toolkit,
    },
];

fn type_of(kind: Kind) -> String {
    match kind {
        Text => "xs:string".into(),
        Enum(e) => format!("tns:{}", e.name),
        Options => "tns:Options".into(),
        UserData => "tns:UserData".into(),
        InteractionData => "tns:InteractionData".into(),
    }
}

/// The simpleType declarations of [`ENUMERATIONS`].
fn enumeration_types() -> String {
    let mut out = String::new();
    for e in ENUMERATIONS {
        out.push_str(&format!(
            "<xs:simpleType name=\"{}\"><xs:restriction base=\"xs:string\">",
            e.name
        ));
        for value in e.values {
            out.push_str(&format!("<xs:enumeration value=\"{}\"/>", escape(value)));
        }
        out.push_str("</xs:restriction></xs:simpleType>\n");
    }
    out
}

const TYPES: &str = r#"
<xs:complexType name="UserData"><xs:sequence>
 <xs:element name="UserDataAssignment" type="tns:UserDataAssignment" minOccurs="0" maxOccurs="unbounded"/>
</xs:sequence></xs:complexType>
<xs:complexType name="UserDataAssignment"><xs:sequence>
 <xs:element name="Key" type="xs:string"/>
 <xs:element name="Value" type="tns:UserDataValue"/>
</xs:sequence></xs:complexType>
<xs:complexType name="UserDataValue"><xs:choice>
 <xs:element name="StringValue" type="xs:string"/>
 <xs:element name="IntegerValue" type="xs:long"/>
 <xs:element name="BinaryValue" type="xs:string"/>
 <xs:element name="ListValue" type="tns:UserData"/>
</xs:choice></xs:complexType>
<xs:complexType name="Options"><xs:sequence>
 <xs:element name="ClientId" type="xs:string" minOccurs="0"/>
 <xs:element name="Tenant" type="xs:string" minOccurs="0"/>
 <xs:element name="AppointmentTime" type="xs:string" minOccurs="0"/>
 <xs:element name="SourceApplication" type="xs:string" minOccurs="0"/>
 <xs:element name="NumberOfAppointments" type="xs:int" minOccurs="0"/>
 <xs:element name="Result" type="xs:string" minOccurs="0"/>
 <xs:element name="DataName" type="xs:string" minOccurs="0"/>
 <xs:element name="DataValue" type="xs:string" minOccurs="0"/>
 <xs:element name="Variable" type="xs:string" minOccurs="0" maxOccurs="unbounded"/>
 <xs:element name="UserDataContainer" type="tns:UserData" minOccurs="0"/>
</xs:sequence></xs:complexType>
<xs:complexType name="KeyValuePair"><xs:sequence>
 <xs:element name="Key" type="xs:string"/>
 <xs:element name="Value" type="xs:string" minOccurs="0"/>
</xs:sequence></xs:complexType>
<xs:complexType name="InteractionData"><xs:sequence>
 <xs:element name="KeyValuePair" type="tns:KeyValuePair" minOccurs="0" maxOccurs="unbounded"/>
</xs:sequence></xs:complexType>
<xs:complexType name="NameValue">
 <xs:attribute name="Name" type="xs:string"/>
 <xs:attribute name="Value" type="xs:string"/>
</xs:complexType>
<xs:complexType name="StateDataList"><xs:sequence>
 <xs:element name="StateData" type="tns:NameValue" minOccurs="0" maxOccurs="unbounded"/>
</xs:sequence></xs:complexType>
<xs:complexType name="VariableList"><xs:sequence>
 <xs:element name="Variable" type="tns:NameValue" minOccurs="0" maxOccurs="unbounded"/>
</xs:sequence></xs:complexType>
<xs:complexType name="Segment"><xs:sequence>
 <xs:element name="StateData" type="tns:StateDataList" minOccurs="0"/>
 <xs:element name="Variables" type="tns:VariableList" minOccurs="0"/>
</xs:sequence>
 <xs:attribute name="Name" type="xs:string"/>
 <xs:attribute name="Queue" type="xs:string"/>
 <xs:attribute name="Tenant" type="xs:string"/>
</xs:complexType>
<xs:complexType name="SegmentList"><xs:sequence>
 <xs:element name="Segment" type="tns:Segment" minOccurs="0" maxOccurs="unbounded"/>
</xs:sequence></xs:complexType>
<xs:complexType name="Information"><xs:sequence>
 <xs:element name="InteractionInformation" type="tns:NameValue" minOccurs="0" maxOccurs="unbounded"/>
</xs:sequence></xs:complexType>
<xs:complexType name="Interaction"><xs:sequence>
 <xs:element name="Information" type="tns:Information" minOccurs="0"/>
 <xs:element name="UserData" type="tns:UserData" minOccurs="0"/>
</xs:sequence>
 <xs:attribute name="Contact" type="xs:string"/>
 <xs:attribute name="Id" type="xs:string"/>
 <xs:attribute name="InteractionType" type="xs:string"/>
 <xs:attribute name="Queue" type="xs:string"/>
 <xs:attribute name="Segment" type="xs:string"/>
 <xs:attribute name="Tenant" type="xs:string"/>
</xs:complexType>
<xs:complexType name="InteractionList"><xs:sequence>
 <xs:element name="Interaction" type="tns:Interaction" minOccurs="0" maxOccurs="unbounded"/>
</xs:sequence></xs:complexType>
<xs:complexType name="AppointmentTimeList"><xs:sequence>
 <xs:element name="AppointmentTime" type="xs:string" minOccurs="0" maxOccurs="unbounded"/>
</xs:sequence></xs:complexType>
<xs:complexType name="TenantList"><xs:sequence>
 <xs:element name="Tenant" type="xs:string" minOccurs="0" maxOccurs="unbounded"/>
</xs:sequence></xs:complexType>
<xs:complexType name="ToolkitData"><xs:sequence>
 <xs:element name="Interactions" type="tns:InteractionList" minOccurs="0"/>
 <xs:element name="Segments" type="tns:SegmentList" minOccurs="0"/>
 <xs:element name="AppointmentTimes" type="tns:AppointmentTimeList" minOccurs="0"/>
 <xs:element name="Tenants" type="tns:TenantList" minOccurs="0"/>
 <xs:element name="PlatformToolkitVersion" type="xs:string" minOccurs="0"/>
 <xs:element name="Valid" type="xs:boolean" minOccurs="0"/>
</xs:sequence></xs:complexType>
<xs:complexType name="ToolkitStatus"><xs:sequence>
 <xs:element name="Code" type="xs:int"/>
 <xs:element name="Description" type="xs:string"/>
 <xs:element name="ErrorMessage" type="xs:string"/>
 <xs:element name="Result" type="xs:string"/>
</xs:sequence></xs:complexType>
<xs:complexType name="ToolkitHeader"><xs:sequence>
 <xs:element name="ClientID" type="xs:string"/>
 <xs:element name="Id" type="xs:string"/>
 <xs:element name="Status" type="tns:ToolkitStatus"/>
</xs:sequence></xs:complexType>
<xs:complexType name="PlatformToolkitResponse"><xs:sequence>
 <xs:element name="Header" type="tns:ToolkitHeader"/>
 <xs:element name="Data" type="tns:ToolkitData" minOccurs="0"/>
</xs:sequence></xs:complexType>
<xs:complexType name="StateStatus"><xs:sequence>
 <xs:element name="Code" type="xs:int"/>
 <xs:element name="Result" type="xs:string"/>
 <xs:element name="Description" type="xs:string"/>
</xs:sequence></xs:complexType>
<xs:complexType name="StateHeader"><xs:sequence>
 <xs:element name="Status" type="tns:StateStatus"/>
 <xs:element name="Id" type="xs:string"/>
</xs:sequence></xs:complexType>
<xs:complexType name="SegmentStateData"><xs:sequence>
 <xs:element name="Segments" type="tns:SegmentList" minOccurs="0"/>
</xs:sequence></xs:complexType>
<xs:complexType name="SegmentStateResponse"><xs:sequence>
 <xs:element name="Header" type="tns:StateHeader"/>
 <xs:element name="Data" type="tns:SegmentStateData" minOccurs="0"/>
</xs:sequence></xs:complexType>
<xs:complexType name="ResultResponse"><xs:sequence>
 <xs:element name="ResultCode" type="xs:int"/>
 <xs:element name="Result" type="xs:string"/>
 <xs:element name="Description" type="xs:string"/>
 <xs:element name="Guid" type="xs:string"/>
 <xs:element name="InteractionId" type="xs:string" minOccurs="0"/>
 <xs:element name="Variables" type="tns:VariableList" minOccurs="0"/>
</xs:sequence></xs:complexType>
"#;

/// The WSDL for `namespace`, with the service at `location`.
pub fn wsdl(namespace: &str, location: &str) -> String {
    let ns = escape(namespace);
    let mut elements = String::new();
    let mut messages = String::new();
    let mut port_ops = String::new();
    let mut ops11 = String::new();
    let mut ops12 = String::new();
    for m in METHODS {
        let mut params = String::new();
        for (name, kind) in m.params {
            params.push_str(&format!(
                "<xs:element name=\"{name}\" type=\"{}\" minOccurs=\"0\" nillable=\"true\"/>",
                type_of(*kind)
            ));
        }
        if m.wrapped {
            elements.push_str(&format!(
                "<xs:complexType name=\"{n}Data\"><xs:sequence>{params}</xs:sequence></xs:complexType>\
<xs:element name=\"{n}\"><xs:complexType><xs:sequence><xs:element name=\"data\" type=\"tns:{n}Data\" minOccurs=\"0\"/></xs:sequence></xs:complexType></xs:element>\n",
                n = m.name
            ));
        } else {
            elements.push_str(&format!(
                "<xs:element name=\"{n}\"><xs:complexType><xs:sequence>{params}</xs:sequence></xs:complexType></xs:element>\n",
                n = m.name
            ));
        }
        let result_type = match m.shape {
            Shape::Toolkit => "tns:PlatformToolkitResponse",
            Shape::SegmentState => "tns:SegmentStateResponse",
            Shape::Result => "tns:ResultResponse",
        };
        elements.push_str(&format!(
            "<xs:element name=\"{n}Response\"><xs:complexType><xs:sequence><xs:element name=\"{n}Result\" type=\"{result_type}\" minOccurs=\"0\"/></xs:sequence></xs:complexType></xs:element>\n",
            n = m.name
        ));
        messages.push_str(&format!(
            "<wsdl:message name=\"{n}SoapIn\"><wsdl:part name=\"parameters\" element=\"tns:{n}\"/></wsdl:message>\
<wsdl:message name=\"{n}SoapOut\"><wsdl:part name=\"parameters\" element=\"tns:{n}Response\"/></wsdl:message>\n",
            n = m.name
        ));
        port_ops.push_str(&format!(
            "<wsdl:operation name=\"{n}\"><wsdl:input message=\"tns:{n}SoapIn\"/><wsdl:output message=\"tns:{n}SoapOut\"/></wsdl:operation>\n",
            n = m.name
        ));
        for (out, prefix) in [(&mut ops11, "soap"), (&mut ops12, "soap12")] {
            out.push_str(&format!(
                "<wsdl:operation name=\"{n}\"><{prefix}:operation soapAction=\"{ns}/{n}\" style=\"document\"/>\
<wsdl:input><{prefix}:body use=\"literal\"/></wsdl:input><wsdl:output><{prefix}:body use=\"literal\"/></wsdl:output></wsdl:operation>\n",
                n = m.name
            ));
        }
    }
    let location = escape(location);
    let enumerations = enumeration_types();
    format!(
        r#"<?xml version="1.0" encoding="utf-8"?>
<wsdl:definitions xmlns:wsdl="http://schemas.xmlsoap.org/wsdl/" xmlns:soap="http://schemas.xmlsoap.org/wsdl/soap/" xmlns:soap12="http://schemas.xmlsoap.org/wsdl/soap12/" xmlns:xs="http://www.w3.org/2001/XMLSchema" xmlns:tns="{ns}" targetNamespace="{ns}">
<wsdl:types>
<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" xmlns:tns="{ns}" elementFormDefault="qualified" targetNamespace="{ns}">
{TYPES}
{enumerations}{elements}</xs:schema>
</wsdl:types>
{messages}<wsdl:portType name="PlatformToolkitSoap">
{port_ops}</wsdl:portType>
<wsdl:binding name="PlatformToolkitSoap" type="tns:PlatformToolkitSoap">
<soap:binding transport="http://schemas.xmlsoap.org/soap/http"/>
{ops11}</wsdl:binding>
<wsdl:binding name="PlatformToolkitSoap12" type="tns:PlatformToolkitSoap">
<soap12:binding transport="http://schemas.xmlsoap.org/soap/http"/>
{ops12}</wsdl:binding>
<wsdl:service name="PlatformToolkit">
<wsdl:port name="PlatformToolkitSoap" binding="tns:PlatformToolkitSoap"><soap:address location="{location}"/></wsdl:port>
<wsdl:port name="PlatformToolkitSoap12" binding="tns:PlatformToolkitSoap12"><soap12:address location="{location}"/></wsdl:port>
</wsdl:service>
</wsdl:definitions>
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_seed_method_is_described_and_typed() {
        assert_eq!(METHODS.len(), 26);
        let text = wsdl("urn:test", "http://h/ptk/acme");
        assert!(!text.contains("anyType"));
        for m in METHODS {
            assert!(
                text.contains(&format!("<xs:element name=\"{}\">", m.name)),
                "{}",
                m.name
            );
        }
        crate::soap::parse(&text, 64).expect("the WSDL is well-formed");
    }

    #[test]
    fn enumerated_parameters_declare_their_values() {
        let text = wsdl("urn:test", "http://h/ptk/acme");
        for e in ENUMERATIONS {
            let mut declared = format!(
                "<xs:simpleType name=\"{}\"><xs:restriction base=\"xs:string\">",
                e.name
            );
            for v in e.values {
                declared.push_str(&format!("<xs:enumeration value=\"{v}\"/>"));
            }
            assert!(text.contains(&declared), "{}", e.name);
            assert!(
                text.contains(&format!("type=\"tns:{}\"", e.name)),
                "{} is not used",
                e.name
            );
        }
        for (method, param) in [
            ("InteractionCancelled", "CancelledBy"),
            ("InteractionDequeued", "Reason"),
            ("InteractionDisconnectedByApplication", "Reason"),
            ("InteractionDisconnectedByCaller", "Reason"),
            ("InteractionOutboundAttemptFailed", "Reason"),
            ("InteractionSendToQueue", "Reason"),
            ("ModifyInteraction", "Action"),
            ("RemoveInteraction", "Reason"),
        ] {
            let m = method_named(method);
            assert!(
                m.params
                    .iter()
                    .any(|(name, kind)| *name == param && matches!(kind, Enum(_))),
                "{method}.{param} is not enumerated"
            );
        }
    }

    fn method_named(name: &str) -> &'static Operation {
        METHODS
            .iter()
            .find(|m| m.name == name)
            .unwrap_or_else(|| panic!("{name}"))
    }
}
