//! The writer's failure vocabulary: why a segment update is dead-lettered.
//!
//! One enum, each reason carrying its metric label and its Connect-style exception class, so
//! the applier, the dead-letter writer, the redrive report and the metrics name a failure the
//! same way. Depends on nothing else in the crate: every module may import it.

/// Why a segment update was dead-lettered: the `reason` label of
/// `tierflow_okta_writer_dead_letters_total` and the `tierflow-dlq-reason` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeadLetterReason {
    /// No Okta user has the customer's login or email, and the writer does not create users.
    MissingUser,
    /// More than one Okta user matches the customer's email.
    AmbiguousUser,
    /// The update has no email to find (or create) the user by.
    NoEmail,
    /// Okta refused a call for good (a 4xx other than 401/404/429).
    OktaRejected,
    /// Okta answered 404 for the user or group the call named.
    NotFound,
    /// The update names a tier group this writer's `[[tiers]]` does not have.
    UnknownGroup,
    /// The update's shop is not declared in `[okta.stores]`.
    UnknownStore,
    /// A transient failure (429, 5xx, transport) outlasted `retry_max_elapsed`.
    RetriesExhausted,
    /// Okta answered 2xx with a body the call cannot use.
    InvalidResponse,
    /// The record is not a valid segment update.
    InvalidRecord,
}

impl DeadLetterReason {
    pub const ALL: [DeadLetterReason; 10] = [
        DeadLetterReason::MissingUser,
        DeadLetterReason::AmbiguousUser,
        DeadLetterReason::NoEmail,
        DeadLetterReason::OktaRejected,
        DeadLetterReason::NotFound,
        DeadLetterReason::UnknownGroup,
        DeadLetterReason::UnknownStore,
        DeadLetterReason::RetriesExhausted,
        DeadLetterReason::InvalidResponse,
        DeadLetterReason::InvalidRecord,
    ];

    /// The metric label and header value.
    pub fn label(self) -> &'static str {
        match self {
            DeadLetterReason::MissingUser => "missing_user",
            DeadLetterReason::AmbiguousUser => "ambiguous_user",
            DeadLetterReason::NoEmail => "no_email",
            DeadLetterReason::OktaRejected => "okta_rejected",
            DeadLetterReason::NotFound => "not_found",
            DeadLetterReason::UnknownGroup => "unknown_group",
            DeadLetterReason::UnknownStore => "unknown_store",
            DeadLetterReason::RetriesExhausted => "retries_exhausted",
            DeadLetterReason::InvalidResponse => "invalid_response",
            DeadLetterReason::InvalidRecord => "invalid_record",
        }
    }

    /// `__connect.errors.exception.class.name`: where the failure came from (Okta, or the
    /// record itself) and what it was.
    pub fn exception_class(self) -> &'static str {
        match self {
            DeadLetterReason::MissingUser => "okta.missing_user",
            DeadLetterReason::AmbiguousUser => "okta.ambiguous_user",
            DeadLetterReason::NoEmail => "okta.no_email",
            DeadLetterReason::OktaRejected => "okta.okta_rejected",
            DeadLetterReason::NotFound => "okta.not_found",
            DeadLetterReason::UnknownGroup => "okta.unknown_group",
            DeadLetterReason::UnknownStore => "tierflow.unknown_store",
            DeadLetterReason::RetriesExhausted => "okta.retries_exhausted",
            DeadLetterReason::InvalidResponse => "okta.invalid_response",
            DeadLetterReason::InvalidRecord => "tierflow.invalid_record",
        }
    }
}

impl std::fmt::Display for DeadLetterReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_classes_are_distinct_and_complete() {
        let labels: std::collections::HashSet<_> =
            DeadLetterReason::ALL.iter().map(|r| r.label()).collect();
        let classes: std::collections::HashSet<_> = DeadLetterReason::ALL
            .iter()
            .map(|r| r.exception_class())
            .collect();
        assert_eq!(labels.len(), DeadLetterReason::ALL.len());
        assert_eq!(classes.len(), DeadLetterReason::ALL.len());
        for r in DeadLetterReason::ALL {
            assert!(r.exception_class().ends_with(r.label()), "{r}");
        }
    }
}
