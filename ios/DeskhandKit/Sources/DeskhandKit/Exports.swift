// The app and the tests see the bindings' records and enums (PhoneSnapshot, MessageView, Risk, …)
// through DeskhandKit alone.
@_exported import DeskhandMobile
