//! Rendering a method's answer in its shape (see [`crate::wsdl::Shape`]).

use crate::codes;
use crate::soap::{envelope, escape, Version, Writer};
use crate::wsdl::{Operation, Shape};

/// What an internal failure answers in `ErrorMessage`.
pub const INTERNAL_MESSAGE: &str = "ivrgate could not read its stored state; the error is logged";

/// What a method answers: its status code and the pieces its shape carries.
#[derive(Debug, Clone, Default)]
pub struct Reply {
    pub code: u32,
    /// `ErrorMessage` (PlatformToolkitResponse shape): why the request failed.
    pub message: String,
    /// The inner XML of `Data` (Toolkit and SegmentState shapes) or of `Variables` (Result).
    pub data: String,
    /// `InteractionId` (Result shape).
    pub interaction_id: Option<String>,
    /// Answer a SOAP Fault with this reason instead (a parameter the WSDL types as an
    /// enumeration holds something else and the method documents no status code for it).
    pub fault: Option<String>,
    /// The request failed on ivrgate's side, not the caller's (a stored state that does not
    /// read): answered 109000, logged as an error and counted as `internal_error`.
    pub internal: bool,
}

impl Reply {
    pub fn code(code: u32) -> Reply {
        Reply {
            code,
            ..Reply::default()
        }
    }

    pub fn error(code: u32, message: impl Into<String>) -> Reply {
        Reply {
            code,
            message: message.into(),
            ..Reply::default()
        }
    }

    pub fn fault(reason: impl Into<String>) -> Reply {
        Reply {
            code: crate::codes::UNEXPECTED,
            fault: Some(reason.into()),
            ..Reply::default()
        }
    }

    /// 109000 UnexpectedError for a fault of ivrgate's own; `why` is logged, not answered.
    pub fn internal(why: impl Into<String>) -> Reply {
        Reply {
            code: crate::codes::UNEXPECTED,
            message: why.into(),
            internal: true,
            ..Reply::default()
        }
    }

    pub fn ok() -> Reply {
        Reply::code(codes::COMPLETED)
    }

    pub fn with_data(mut self, data: String) -> Reply {
        self.data = data;
        self
    }

    pub fn with_id(mut self, id: impl Into<String>) -> Reply {
        self.interaction_id = Some(id.into());
        self
    }

    /// The `ErrorMessage` answered: an internal failure's reason stays in the log.
    pub fn answered_message(&self) -> &str {
        if self.internal {
            INTERNAL_MESSAGE
        } else {
            &self.message
        }
    }

    /// Whether the code reports success.
    pub fn succeeded(&self) -> bool {
        matches!(
            self.code,
            codes::COMPLETED | codes::COMPLETED_WITH_ID | codes::PLATFORM_AVAILABLE
        )
    }
}

/// The whole SOAP answer for `method`.
pub fn render(
    version: Version,
    namespace: &str,
    method: &Operation,
    client_id: &str,
    guid: &str,
    reply: &Reply,
) -> String {
    let (name, description) = codes::describe(reply.code);
    let mut w = Writer::default();
    let response = format!("{}Response", method.name);
    let result = format!("{}Result", method.name);
    w.out
        .push_str(&format!("<{response} xmlns=\"{}\">", escape(namespace)));
    w.open(&result);
    match method.shape {
        Shape::Toolkit => {
            w.open("Header")
                .leaf("ClientID", client_id)
                .leaf("Id", guid)
                .open("Status")
                .leaf("Code", &reply.code.to_string())
                .leaf("Description", description)
                .leaf("ErrorMessage", reply.answered_message())
                .leaf("Result", name)
                .close("Status")
                .close("Header");
            if !reply.data.is_empty() {
                w.open("Data");
                w.out.push_str(&reply.data);
                w.close("Data");
            }
        }
        Shape::SegmentState => {
            w.open("Header")
                .open("Status")
                .leaf("Code", &reply.code.to_string())
                .leaf("Result", name)
                .leaf("Description", description)
                .close("Status")
                .leaf("Id", guid)
                .close("Header");
            if !reply.data.is_empty() {
                w.open("Data");
                w.out.push_str(&reply.data);
                w.close("Data");
            }
        }
        Shape::Result => {
            w.leaf("ResultCode", &reply.code.to_string())
                .leaf("Result", name)
                .leaf("Description", description)
                .leaf("Guid", guid);
            if let Some(id) = &reply.interaction_id {
                w.leaf("InteractionId", id);
            }
            if !reply.data.is_empty() {
                w.open("Variables");
                w.out.push_str(&reply.data);
                w.close("Variables");
            }
        }
    }
    w.close(&result);
    w.close(&response);
    envelope(version, &w.out)
}
