//! The methods of seed 004 as one closed enum, parsed once from the SOAP operation's name.
//! Grouped as the seed's methods fall: creating interactions, queries (interactions and
//! segments), the state reports of the VXML Interaction Server (`Interaction*`), and changes
//! to an interaction.

use crate::wsdl::{self, Operation};

/// One PTK method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    AddInteraction,
    AssociateInteractionWithExternalTrackingId,
    CreateInteraction,
    FindInteraction,
    GetInteractionData,
    GetNextAvailableAppointmentTime,
    GetSegments,
    GetSegmentState,
    GetSegmentVariables,
    GetStatus,
    GetSystemVariables,
    GetVersion,
    InteractionCancelled,
    InteractionDequeued,
    InteractionDisconnectedByApplication,
    InteractionDisconnectedByCaller,
    InteractionOutboundAttemptFailed,
    InteractionOutboundConnected,
    InteractionQueued,
    InteractionRequestContact,
    InteractionSendToQueue,
    ModifyInteraction,
    RemoveInteraction,
    UpdateInteractionData,
    UpdateUserData,
    ValidateContact,
}

impl Method {
    /// Every method, in the order of [`wsdl::METHODS`].
    pub const ALL: [Method; 26] = [
        Method::AddInteraction,
        Method::AssociateInteractionWithExternalTrackingId,
        Method::CreateInteraction,
        Method::FindInteraction,
        Method::GetInteractionData,
        Method::GetNextAvailableAppointmentTime,
        Method::GetSegments,
        Method::GetSegmentState,
        Method::GetSegmentVariables,
        Method::GetStatus,
        Method::GetSystemVariables,
        Method::GetVersion,
        Method::InteractionCancelled,
        Method::InteractionDequeued,
        Method::InteractionDisconnectedByApplication,
        Method::InteractionDisconnectedByCaller,
        Method::InteractionOutboundAttemptFailed,
        Method::InteractionOutboundConnected,
        Method::InteractionQueued,
        Method::InteractionRequestContact,
        Method::InteractionSendToQueue,
        Method::ModifyInteraction,
        Method::RemoveInteraction,
        Method::UpdateInteractionData,
        Method::UpdateUserData,
        Method::ValidateContact,
    ];

    /// The method an operation element names (matched case-insensitively, as every element).
    pub fn parse(name: &str) -> Option<Method> {
        Method::ALL
            .into_iter()
            .find(|m| m.name().eq_ignore_ascii_case(name))
    }

    /// Its WSDL operation: parameters and response shape.
    pub fn operation(self) -> &'static Operation {
        &wsdl::METHODS[self as usize]
    }

    /// The seed's name.
    pub fn name(self) -> &'static str {
        self.operation().name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_wsdl_operation_is_one_method() {
        assert_eq!(Method::ALL.len(), wsdl::METHODS.len());
        for (index, m) in Method::ALL.into_iter().enumerate() {
            assert_eq!(m as usize, index);
            let spelled = format!("{m:?}").to_ascii_lowercase();
            assert_eq!(spelled, m.name().to_ascii_lowercase(), "{m:?}");
            assert_eq!(Method::parse(m.name()), Some(m));
            assert_eq!(Method::parse(&m.name().to_ascii_uppercase()), Some(m));
        }
        assert_eq!(Method::parse("Nothing"), None);
    }
}
