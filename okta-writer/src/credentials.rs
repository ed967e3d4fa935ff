//! The credentials pause: what the writer does while Okta rejects its credentials.
//!
//! An application that fails on the credentials (a 401, the token endpoint refusing the client,
//! or 403s on consecutive calls) dead-letters nothing: its records go back to the queue and
//! consuming pauses for `[okta] credentials_pause`. When the pause is over, one customer's
//! application is tried as a probe; its success resumes everything, its rejection pauses again
//! for twice as long, up to `credentials_pause_max`. Applications that were already in flight
//! when the pause began and fail the same way do not extend it.

use std::time::Duration;

use tokio::time::Instant;

/// Whether the writer is paused on rejected credentials, and until when.
#[derive(Debug)]
pub struct CredentialsGate {
    /// The first pause.
    first: Duration,
    /// The longest pause the doubling reaches.
    max: Duration,
    pause: Option<Pause>,
}

#[derive(Debug, Clone, Copy)]
struct Pause {
    /// When the next probe may start.
    until: Instant,
    /// This pause's length; the next one after a rejected probe is twice it (capped).
    length: Duration,
    /// A probe application is running: no other starts until it ends.
    probe_in_flight: bool,
}

impl CredentialsGate {
    pub fn new(first: Duration, max: Duration) -> CredentialsGate {
        CredentialsGate {
            first,
            max,
            pause: None,
        }
    }

    /// Whether Okta is rejecting the credentials (no application but a probe may start).
    pub fn is_paused(&self) -> bool {
        self.pause.is_some()
    }

    /// When a probe should start: the pause's end, unless a probe is already running.
    pub fn probe_due(&self) -> Option<Instant> {
        self.pause.filter(|p| !p.probe_in_flight).map(|p| p.until)
    }

    /// An application (the probe if `probe`) failed on the credentials. Returns the length of
    /// the pause that now begins, or `None` when it fell inside the running one.
    pub fn rejected(&mut self, probe: bool, now: Instant) -> Option<Duration> {
        let length = match self.pause {
            Some(p) if probe => (p.length * 2).min(self.max),
            Some(_) => return None,
            None => self.first,
        };
        self.pause = Some(Pause {
            until: now + length,
            length,
            probe_in_flight: false,
        });
        Some(length)
    }

    /// An application succeeded. Returns whether this ends a pause.
    pub fn accepted(&mut self) -> bool {
        self.pause.take().is_some()
    }

    /// A probe application started.
    pub fn probe_started(&mut self) {
        if let Some(p) = self.pause.as_mut() {
            p.probe_in_flight = true;
        }
    }

    /// The probe ended without an answer on the credentials (aborted by a revoke): the next
    /// one may start when the pause is over.
    pub fn probe_lost(&mut self) {
        if let Some(p) = self.pause.as_mut() {
            p.probe_in_flight = false;
        }
    }

    /// A probe was due but nothing is queued to try: wait another pause length.
    pub fn nothing_to_probe(&mut self, now: Instant) {
        if let Some(p) = self.pause.as_mut() {
            p.until = now + p.length;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn rejected_probes_double_the_pause_up_to_its_cap() {
        let now = Instant::now();
        let mut g = CredentialsGate::new(2 * S, 5 * S);
        assert!(!g.is_paused() && g.probe_due().is_none());
        assert_eq!(g.rejected(false, now), Some(2 * S));
        assert_eq!(g.probe_due(), Some(now + 2 * S));
        g.probe_started();
        assert_eq!(g.probe_due(), None, "one probe at a time");
        assert_eq!(g.rejected(true, now), Some(4 * S));
        g.probe_started();
        assert_eq!(g.rejected(true, now), Some(5 * S), "capped");
        g.probe_started();
        assert_eq!(g.rejected(true, now), Some(5 * S));
        assert!(g.accepted(), "a success ends the pause");
        assert!(!g.is_paused());
        assert!(!g.accepted(), "and only once");
        assert_eq!(
            g.rejected(false, now),
            Some(2 * S),
            "a new pause starts short"
        );
    }

    #[test]
    fn stragglers_do_not_extend_a_pause() {
        let now = Instant::now();
        let mut g = CredentialsGate::new(2 * S, 60 * S);
        g.rejected(false, now);
        assert_eq!(g.rejected(false, now + S), None);
        assert_eq!(g.probe_due(), Some(now + 2 * S));
    }

    #[test]
    fn a_lost_probe_or_an_empty_queue_waits_for_the_next_turn() {
        let now = Instant::now();
        let mut g = CredentialsGate::new(2 * S, 60 * S);
        g.rejected(false, now);
        g.probe_started();
        g.probe_lost();
        assert_eq!(g.probe_due(), Some(now + 2 * S));
        g.nothing_to_probe(now + 3 * S);
        assert_eq!(g.probe_due(), Some(now + 5 * S));
        assert!(g.is_paused());
    }
}
