//! The PTK status codes, with the names and descriptions seed 004 gives them.

/// `(code, name, description)` for every status code ivrgate answers.
pub const CODES: &[(u32, &str, &str)] = &[
    (106000, "PlatformAvailable", "The platform for the tenant can process requests now"),
    (107000, "RequestCompleted", "The platform completed the request."),
    (107001, "RequestPartiallyCompleted", "The platform completed part of the request."),
    (107002, "InteractionNotFound", "The platform cannot find the interaction. The system is no longer tracking interactions for this ID."),
    (107003, "SegmentsNotFound", "The platform cannot find any segments. Set up segments for the tenant or tenants and retry the request."),
    (107004, "InvalidOperationModeReturned", "The Operation Mode that this request returned is either missing or not valid."),
    (107005, "RequestRefusedDueToOperationMode", "The current Operation Mode cannot accept this interaction. Change the Operation Mode and retry the request."),
    (107007, "AppointmentsDisabled", "Appointment interactions are disabled in the platform. Enable appointment interactions and retry the request."),
    (107009, "DuplicateContactInQueue", "The platform could not complete the request because callback double check detected another interaction with this contact in this queue. Change the contact and retry the request."),
    (107010, "AppointmentTimeAfterHours", "The appointment time that you submitted is outside of the business hours."),
    (107011, "AppointmentTimeBeforeEWT", "The appointment time that you submitted is before the estimated wait time for this queue."),
    (107012, "AppointmentSlotsNotFound", "No appointments are available for the specified times."),
    (107014, "AppointmentTimeFull", "No appointments are available for the specified times."),
    (107015, "InteractionStatePreventsModifyingAppointmentTime", "You cannot change the appointment time because the interaction is already active."),
    (107017, "InvalidContactURIFormat", "The Contact URI you submitted is not valid. Either the phone number is not valid or the date is not in the correct format: yyyy-mm-ddTHH:mm:ssZ."),
    (107018, "InteractionStatePreventsRequestedAction", "The Interaction is currently in a state the prevents the requested action from being performed. The action is not appropriate at this time."),
    (107019, "InvalidSourceApplicationFormat", "The Source Application specified is in an invalid format and cannot be processed. Check the data value and resubmit the request. This return is only applicable for the Add Interaction and Create Interaction methods."),
    (107020, "SegmentNotSet", "The interaction has no segment and the request did not name one."),
    (107100, "RequestCompletedWithInteractionId", "The platform completed the request and returned an interaction id."),
    (108000, "InvalidTenant", "The tenant name that you submitted is not valid. Try another tenant name and resubmit your request."),
    (108001, "InvalidSegment", "The segment is not valid for the specified tenant."),
    (108004, "InvalidDateTime", "The date or time that you submitted is not valid. Verify that the date or time is in the following format: yyyy-mm-ddTHH:mm:ssZ. The hours must be in 24-hour format."),
    (108005, "InvalidContact", "The contact that you provided is not valid. Verify that the contact meets the phone number validation requirements in Callback and then resubmit the request."),
    (108007, "InvalidInteractionId", "The interaction ID that you submitted is not valid. Revise the interaction ID and resubmit the request."),
    (108009, "ContactRequired", "You must submit a contact for this request."),
    (108010, "AppointmentTimeRequired", "You must submit an appointment time for this request."),
    (108011, "UserDataRequired", "You must submit user data for this request."),
    (108014, "InteractionIdRequired", "You must submit an interaction ID for this request."),
    (108016, "QueueIdRequired", "You must submit a QueueID for this request."),
    (108019, "AppointmentTimeInThePast", "The time that you submitted for the appointment is before the current time. Submit a valid time and retry the request."),
    (108022, "SegmentRequired", "You must submit a segment for this request."),
    (108026, "InvalidSearchParameters", "One or more of the search parameters is not valid."),
    (108027, "ReasonRequired", "You must submit a reason code for this request."),
    (108028, "InvalidInteractionReason", "You must submit a valid reason for the interaction that you want to remove. Valid reasons are Web Canceled and Admin Canceled."),
    (108029, "InteractionCannotBeCancelled", "An interaction can only be cancelled if it is a callback and if that callback has not been accepted by the caller. The interaction was not cancelled."),
    (108030, "InvalidAction", "The action that you selected to modify the interaction is invalid."),
    (108031, "CancelledByRequired", "The cancelling party must be included in the CancelledBy field."),
    (108033, "InvalidResult", "The result code for the attempt to modify the interaction is not valid."),
    (108037, "AppointmentTimeAfterAppointmentTimesRange", "The appointment time that you provided is after the valid appointment time range."),
    (108038, "InvalidDataName", "You must submit a valid data name for this request."),
    (108039, "DataValueRequired", "You must submit a data value for this request."),
    (108040, "UserDataFailedValidation", "The user data entered is not in the correct format."),
    (108041, "ExternalTrackingIdMissing", "The external tracking id is missing or invalid."),
    (108042, "DuplicateExternalTrackingIdFound", "The external tracking id passed in already exists in our system."),
    (108043, "KeyNotSupportedUpdatingData", "The key used to update the interaction is not supported or invalid."),
    (108045, "SkillIdNotFound", "The skill id submitted was not found."),
    (108046, "InteractionIDOrExternalTrackingIDRequired", "The interaction is missing an Interaction ID and external tracking ID."),
    (108047, "DequeuedReasonMissing", "Reason for dequeue is blank."),
    (108048, "DequeuedReasonInvalid", "When reason provided is something other than AgentAnswered or Abandoned"),
    (108054, "InvalidCallType", "The call type must be valid (ASAP or Callback)"),
    (108055, "InteractionCannotBeDisconnected", "The interaction must be receiving inbound treatment or be in a queue for an agent in order to be disconnected. Interaction was not disconnected."),
    (109000, "UnexpectedError", "The request could not be completed because the server encountered an unexpected condition. Try the request again. If this error continues, contact your support representative."),
    (109001, "MethodNotImplemented", "The request could not be completed because the server does not support the functionality required to do so."),
    (109003, "ResourcesUnavailable", "The request could not be completed. A Callback resource might be down or unavailable. Submit your request again."),
    (109004, "PlatformUnavailable", "The request could not be completed. The platform is not available and cannot process requests. Submit your request again."),
    (109005, "LicenseUnavailable", "A license for this request is not available."),
    (109006, "TenantsNotFound", "No tenants were found."),
    (109009, "AppointmentError", "An error occurred when making the interaction appointment. Verify that you have scheduling enabled and then try your request again."),
    (109010, "UnableToCreateInteraction", "Callback was unable to create the interaction because an error occurred in a Callback component."),
    (109012, "InvalidEWTReturned", "A request to retrieve the estimated wait time returned a value that is not valid."),
    (109015, "InvalidOfferTreatment", "The offer treatment is not valid."),
    (109016, "QueueIdNotFound", "The Queue ID could not be found."),
    (109020, "InvalidResultConfiguration", "The configuration for interaction results is incorrect. Revise your configuration file and retry your request."),
    (109021, "ContactNotFound", "The contact that you submitted does not exist in Callback."),
    (109024, "InvalidModeStatusReturned", "A request for treatment data returned a mode status that is not valid."),
    (109025, "InvalidRecommendedDestinationReturned", "A request for treatment data returned a recommended destination that is not valid."),
    (109028, "DataNameUnavailable", "When requesting a private data name"),
    (109029, "DataRequired", "All data is missing when sending request"),
    (109030, "InvalidModeStatusForInteraction", "The request to add an interaction failed because the mode status was not valid."),
    (109031, "UpdateInteractionDataFailed", "Two or More Data Values failed to update."),
    (109032, "InvalidLicenseResult", "The license availability request returned an invalid result."),
    (109033, "FeatureUnavailable", "The feature for this request is not available for Site or Queue."),
    (109034, "NoValidLicenseFile", "The license file is missing, invalid, or expired."),
    (109035, "BandwidthExceeded", "Total number of requests from the previous time period (specified in license file, default = 15 minutes) is greater than the allowed bandwidth for this group."),
    (109036, "QueueModeInvalidOrMissing", "The queue mode is invalid or missing."),
];

/// The name and description of a code (`UnexpectedError` for one not in the table).
pub fn describe(code: u32) -> (&'static str, &'static str) {
    CODES
        .iter()
        .find(|(c, _, _)| *c == code)
        .map(|(_, n, d)| (*n, *d))
        .unwrap_or(("UnexpectedError", "The request could not be completed because the server encountered an unexpected condition."))
}

pub const COMPLETED: u32 = 107000;
pub const PLATFORM_AVAILABLE: u32 = 106000;
pub const NOT_FOUND: u32 = 107002;
pub const SEGMENTS_NOT_FOUND: u32 = 107003;
pub const MODE_REFUSED: u32 = 107005;
pub const APPOINTMENTS_DISABLED: u32 = 107007;
pub const DUPLICATE_CONTACT: u32 = 107009;
pub const AFTER_HOURS: u32 = 107010;
pub const BEFORE_EWT: u32 = 107011;
pub const SLOTS_NOT_FOUND: u32 = 107012;
pub const TIME_FULL: u32 = 107014;
pub const STATE_PREVENTS_APPOINTMENT: u32 = 107015;
pub const BAD_CONTACT_URI: u32 = 107017;
pub const STATE_PREVENTS: u32 = 107018;
pub const BAD_SOURCE_APP: u32 = 107019;
pub const SEGMENT_NOT_SET: u32 = 107020;
pub const COMPLETED_WITH_ID: u32 = 107100;
pub const INVALID_TENANT: u32 = 108000;
pub const INVALID_SEGMENT: u32 = 108001;
pub const INVALID_DATETIME: u32 = 108004;
pub const INVALID_CONTACT: u32 = 108005;
pub const INVALID_ID: u32 = 108007;
pub const CONTACT_REQUIRED: u32 = 108009;
pub const APPOINTMENT_REQUIRED: u32 = 108010;
pub const USERDATA_REQUIRED: u32 = 108011;
pub const ID_REQUIRED: u32 = 108014;
pub const IN_THE_PAST: u32 = 108019;
pub const SEGMENT_REQUIRED: u32 = 108022;
pub const BAD_SEARCH: u32 = 108026;
pub const REASON_REQUIRED: u32 = 108027;
pub const BAD_REASON: u32 = 108028;
pub const CANNOT_CANCEL: u32 = 108029;
pub const BAD_ACTION: u32 = 108030;
pub const CANCELLED_BY_REQUIRED: u32 = 108031;
pub const BAD_RESULT: u32 = 108033;
pub const AFTER_RANGE: u32 = 108037;
pub const BAD_DATA_NAME: u32 = 108038;
pub const DATA_VALUE_REQUIRED: u32 = 108039;
pub const USERDATA_INVALID: u32 = 108040;
pub const EXTERNAL_MISSING: u32 = 108041;
pub const EXTERNAL_DUPLICATE: u32 = 108042;
pub const KEY_NOT_SUPPORTED: u32 = 108043;
pub const SKILL_NOT_FOUND: u32 = 108045;
pub const ID_OR_EXTERNAL_REQUIRED: u32 = 108046;
pub const DEQUEUE_REASON_MISSING: u32 = 108047;
pub const DEQUEUE_REASON_INVALID: u32 = 108048;
pub const BAD_CALL_TYPE: u32 = 108054;
pub const CANNOT_DISCONNECT: u32 = 108055;
pub const UNEXPECTED: u32 = 109000;
pub const RESOURCES_UNAVAILABLE: u32 = 109003;
pub const PLATFORM_UNAVAILABLE: u32 = 109004;
pub const LICENCE_UNAVAILABLE: u32 = 109005;
pub const TENANTS_NOT_FOUND: u32 = 109006;
pub const APPOINTMENT_ERROR: u32 = 109009;
pub const UNABLE_TO_CREATE: u32 = 109010;
pub const QUEUE_NOT_FOUND: u32 = 109016;
pub const QUEUE_ID_REQUIRED: u32 = 108016;
pub const CONTACT_NOT_FOUND: u32 = 109021;
pub const DATA_REQUIRED: u32 = 109029;
pub const UPDATE_FAILED: u32 = 109031;
pub const BANDWIDTH_EXCEEDED: u32 = 109035;
