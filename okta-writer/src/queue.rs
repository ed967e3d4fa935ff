//! The writer's per-customer queue: what was received and not yet handed to an application,
//! which customers have one in flight, and how many records are held in all.
//!
//! A customer (the record key) has at most one application in flight, so their updates apply
//! in the order they were received; everything queued for a customer when their turn comes is
//! one [`Job`] (the application coalesces it: updates carry absolute state).
//!
//! **Tier changes first.** Okta's rate limits, not Kafka, bound the writer, so under a backlog
//! the order of turns decides what marketers see first. A customer waits in one of two lanes:
//! *urgent* if any of their waiting records changes their tier, is their first update, is a
//! redaction, or cannot be read (it is dead-lettered at once); *spend-only* otherwise. Urgent
//! customers take their turns first; spend-only ones keep coalescing while they wait, until the
//! oldest has waited `spend_only_max_wait`, when it goes next. A spend-only customer who gets an
//! urgent record moves to the urgent lane. With `tier_changes_first = false` there is one lane,
//! in arrival order. Only records held here are reordered: at most `max_buffered_records`; the
//! rest wait in Kafka in offset order.
//!
//! Within a lane customers take turns in the order their oldest waiting record arrived; a busy
//! customer is passed over and keeps its place at the back; a job that must be redone goes back
//! to the front.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use rdkafka::message::OwnedHeaders;
use schemas::UpdateKind;
use serde::de::IgnoredAny;
use serde::Deserialize;
use tokio::time::Instant;

/// One received record, owned (the consumer's borrowed message is gone by the time the
/// application runs).
#[derive(Debug)]
pub struct Rec {
    pub partition: i32,
    pub offset: i64,
    /// The assignment epoch the record was received in (`GroupContext::epoch`): a record of an
    /// older epoch belongs to whoever owns the partition now and is never applied here.
    pub epoch: u64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    /// The record's headers, copied into its dead letter and read for the trace context.
    pub headers: Option<OwnedHeaders>,
    /// The record's timestamp, for the apply-latency histogram.
    pub timestamp_ms: Option<i64>,
    /// Whether it goes in the urgent lane ([`is_urgent`]).
    pub urgent: bool,
}

impl Rec {
    /// The queue the record joins: its key; a record without one cannot be ordered with any
    /// other, so it stands alone (a key no Kafka key can collide with: it starts with NUL).
    fn customer(&self) -> Vec<u8> {
        self.key
            .clone()
            .unwrap_or_else(|| format!("\0{}/{}", self.partition, self.offset).into_bytes())
    }
}

/// Whether a segment update (the record value) is urgent: a tier change, a customer's first
/// update (no previous tier), a redaction, or anything that is not a readable update.
pub fn is_urgent(payload: Option<&[u8]>) -> bool {
    /// The fields that decide, read without the rest of the update.
    #[derive(Deserialize)]
    struct Urgency {
        kind: UpdateKind,
        tier_changed: bool,
        previous_tier: Option<IgnoredAny>,
    }
    match payload.map(serde_json::from_slice::<Urgency>) {
        Some(Ok(u)) => u.kind != UpdateKind::Segment || u.tier_changed || u.previous_tier.is_none(),
        _ => true,
    }
}

/// One customer's records handed to an application.
#[derive(Debug)]
pub struct Job {
    pub customer: Vec<u8>,
    /// Oldest first; the newest valid one is applied, the others are coalesced into it.
    pub recs: Vec<Rec>,
    /// Whether this application is the probe that tries rejected credentials again.
    pub probe: bool,
}

/// The two lanes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    Urgent,
    SpendOnly,
}

impl Lane {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Lane::Urgent => "urgent",
            Lane::SpendOnly => "spend_only",
        }
    }
}

/// How turns are ordered (`[okta_writer]`).
#[derive(Debug, Clone, Copy)]
pub struct Ordering {
    /// Urgent customers first; `false`: one lane, arrival order.
    pub tier_changes_first: bool,
    /// The longest a spend-only customer waits behind urgent ones.
    pub spend_only_max_wait: Duration,
}

/// A customer's waiting records.
#[derive(Debug)]
struct Waiting {
    recs: Vec<Rec>,
    lane: Lane,
    /// When the oldest of `recs` arrived (or was put back).
    since: Instant,
    /// Matches this customer's valid entry in its lane; older entries (left behind by a move
    /// to the urgent lane, or by a turn taken) are skipped when reached.
    ticket: u64,
}

/// The records held between the consumer and the applications.
#[derive(Debug)]
pub struct CustomerQueue {
    ordering: Ordering,
    waiting: HashMap<Vec<u8>, Waiting>,
    /// Customers with waiting records, in turn order, with their ticket.
    urgent: VecDeque<(u64, Vec<u8>)>,
    spend_only: VecDeque<(u64, Vec<u8>)>,
    /// Customers with an application in flight.
    busy: HashSet<Vec<u8>>,
    /// Records held: waiting plus in flight. Consuming pauses above `max_buffered_records`.
    held: usize,
    /// Customers waiting per lane: `[urgent, spend_only]`.
    counts: [usize; 2],
    next_ticket: u64,
}

fn slot(lane: Lane) -> usize {
    match lane {
        Lane::Urgent => 0,
        Lane::SpendOnly => 1,
    }
}

impl CustomerQueue {
    pub fn new(ordering: Ordering) -> CustomerQueue {
        CustomerQueue {
            ordering,
            waiting: HashMap::new(),
            urgent: VecDeque::new(),
            spend_only: VecDeque::new(),
            busy: HashSet::new(),
            held: 0,
            counts: [0; 2],
            next_ticket: 0,
        }
    }

    /// Records held, waiting or in flight.
    pub fn held(&self) -> usize {
        self.held
    }

    /// Whether some customer waits for a turn.
    pub fn has_waiting(&self) -> bool {
        !self.waiting.is_empty()
    }

    /// Customers waiting in `lane`.
    pub fn waiting_in(&self, lane: Lane) -> usize {
        self.counts[slot(lane)]
    }

    fn lane_of(&self, urgent: bool) -> Lane {
        if urgent && self.ordering.tier_changes_first {
            Lane::Urgent
        } else {
            Lane::SpendOnly
        }
    }

    fn lane_mut(&mut self, lane: Lane) -> &mut VecDeque<(u64, Vec<u8>)> {
        match lane {
            Lane::Urgent => &mut self.urgent,
            Lane::SpendOnly => &mut self.spend_only,
        }
    }

    /// Put `customer` in `lane` (at the front if `front`) with a new ticket.
    fn enter(&mut self, customer: &[u8], lane: Lane, front: bool) -> u64 {
        self.next_ticket += 1;
        let ticket = self.next_ticket;
        let entry = (ticket, customer.to_vec());
        let q = self.lane_mut(lane);
        if front {
            q.push_front(entry);
        } else {
            q.push_back(entry);
        }
        ticket
    }

    /// Queue a received record behind the customer's others.
    pub fn push(&mut self, rec: Rec, now: Instant) {
        let customer = rec.customer();
        let lane = self.lane_of(rec.urgent);
        self.held += 1;
        match self.waiting.get_mut(&customer) {
            Some(w) => {
                w.recs.push(rec);
                if lane == Lane::Urgent && w.lane == Lane::SpendOnly {
                    self.promote(&customer, false);
                }
            }
            None => self.open(customer, vec![rec], lane, now, false),
        }
    }

    /// Start `customer`'s wait with `recs` in `lane` (at its front if `front`).
    fn open(&mut self, customer: Vec<u8>, recs: Vec<Rec>, lane: Lane, now: Instant, front: bool) {
        let ticket = self.enter(&customer, lane, front);
        self.counts[slot(lane)] += 1;
        self.waiting.insert(
            customer,
            Waiting {
                recs,
                lane,
                since: now,
                ticket,
            },
        );
    }

    /// Move a waiting spend-only customer to the urgent lane.
    fn promote(&mut self, customer: &[u8], front: bool) {
        let ticket = self.enter(customer, Lane::Urgent, front);
        let w = self
            .waiting
            .get_mut(customer)
            .expect("promoting a waiting customer");
        w.lane = Lane::Urgent;
        w.ticket = ticket;
        self.counts[slot(Lane::SpendOnly)] -= 1;
        self.counts[slot(Lane::Urgent)] += 1;
    }

    /// Whether the spend-only lane's oldest customer has waited its limit. Entries no longer
    /// valid at the front are dropped on the way.
    fn spend_only_overdue(&mut self, now: Instant) -> bool {
        while let Some((ticket, customer)) = self.spend_only.front() {
            match self.waiting.get(customer) {
                Some(w) if w.ticket == *ticket => {
                    return now.saturating_duration_since(w.since)
                        >= self.ordering.spend_only_max_wait
                }
                _ => {
                    self.spend_only.pop_front();
                }
            }
        }
        false
    }

    /// The next customer whose turn it is and who has no application in flight, with all of
    /// their waiting records that `is_current` keeps (records of a partition this instance no
    /// longer owns belong to its new owner and are dropped). The customer is busy until
    /// [`finished`](Self::finished), [`requeue`](Self::requeue) or [`aborted`](Self::aborted).
    pub fn next_job(
        &mut self,
        probe: bool,
        now: Instant,
        is_current: impl Fn(&Rec) -> bool,
    ) -> Option<Job> {
        let order = if self.spend_only_overdue(now) {
            [Lane::SpendOnly, Lane::Urgent]
        } else {
            [Lane::Urgent, Lane::SpendOnly]
        };
        for lane in order {
            if let Some(job) = self.next_in(lane, probe, &is_current) {
                return Some(job);
            }
        }
        None
    }

    fn next_in(
        &mut self,
        lane: Lane,
        probe: bool,
        is_current: &impl Fn(&Rec) -> bool,
    ) -> Option<Job> {
        for _ in 0..self.lane_mut(lane).len() {
            let (ticket, customer) = self.lane_mut(lane).pop_front()?;
            if self
                .waiting
                .get(&customer)
                .is_none_or(|w| w.ticket != ticket)
            {
                continue;
            }
            if self.busy.contains(&customer) {
                // Dispatched again when the in-flight application ends.
                self.lane_mut(lane).push_back((ticket, customer));
                continue;
            }
            let w = self
                .waiting
                .remove(&customer)
                .expect("a valid ticket has records");
            self.counts[slot(w.lane)] -= 1;
            let before = w.recs.len();
            let recs: Vec<Rec> = w.recs.into_iter().filter(|r| is_current(r)).collect();
            self.held -= before - recs.len();
            if recs.is_empty() {
                continue;
            }
            self.busy.insert(customer.clone());
            return Some(Job {
                customer,
                recs,
                probe,
            });
        }
        None
    }

    /// The job's records are done: they are no longer held.
    pub fn finished(&mut self, job: &Job) {
        self.busy.remove(&job.customer);
        self.held -= job.recs.len();
    }

    /// The job must be redone: its records go back in front of whatever arrived for the
    /// customer meanwhile, and the customer to the front of their lane.
    pub fn requeue(&mut self, job: Job, now: Instant) {
        self.busy.remove(&job.customer);
        let urgent = job.recs.iter().any(|r| r.urgent);
        let lane = self.lane_of(urgent);
        match self.waiting.get_mut(&job.customer) {
            Some(w) => {
                let mut recs = job.recs;
                recs.append(&mut w.recs);
                w.recs = recs;
                if lane == Lane::Urgent && w.lane == Lane::SpendOnly {
                    self.promote(&job.customer, true);
                }
            }
            None => self.open(job.customer, job.recs, lane, now, true),
        }
    }

    /// The customer's application of `records` records was aborted by a revoke: they belong to
    /// the partition's next owner.
    pub fn aborted(&mut self, customer: &[u8], records: usize) {
        self.busy.remove(customer);
        self.held -= records;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: Duration = Duration::from_secs(60);

    fn queue(tier_changes_first: bool) -> CustomerQueue {
        CustomerQueue::new(Ordering {
            tier_changes_first,
            spend_only_max_wait: WAIT,
        })
    }

    fn rec_in(key: Option<&str>, partition: i32, offset: i64, epoch: u64, urgent: bool) -> Rec {
        Rec {
            partition,
            offset,
            epoch,
            key: key.map(|k| k.as_bytes().to_vec()),
            payload: None,
            headers: None,
            timestamp_ms: None,
            urgent,
        }
    }

    fn rec(key: Option<&str>, partition: i32, offset: i64, epoch: u64) -> Rec {
        rec_in(key, partition, offset, epoch, false)
    }

    fn offsets(job: &Job) -> Vec<i64> {
        job.recs.iter().map(|r| r.offset).collect()
    }

    fn next(q: &mut CustomerQueue, now: Instant) -> Option<Job> {
        q.next_job(false, now, |_| true)
    }

    #[test]
    fn a_customers_records_coalesce_into_one_job_in_arrival_order() {
        let now = Instant::now();
        let mut q = queue(true);
        q.push(rec(Some("a"), 0, 1, 1), now);
        q.push(rec(Some("b"), 0, 2, 1), now);
        q.push(rec(Some("a"), 0, 3, 1), now);
        assert_eq!(q.held(), 3);
        let a = next(&mut q, now).unwrap();
        assert_eq!(
            (a.customer.as_slice(), offsets(&a)),
            (&b"a"[..], vec![1, 3])
        );
        let b = next(&mut q, now).unwrap();
        assert_eq!(offsets(&b), vec![2]);
        assert!(next(&mut q, now).is_none());
        assert_eq!(q.held(), 3, "in-flight records are still held");
        q.finished(&a);
        q.finished(&b);
        assert_eq!(q.held(), 0);
        assert!(!q.has_waiting());
    }

    #[test]
    fn a_busy_customer_waits_for_its_application_to_end() {
        let now = Instant::now();
        let mut q = queue(true);
        q.push(rec(Some("a"), 0, 1, 1), now);
        let first = next(&mut q, now).unwrap();
        q.push(rec(Some("a"), 0, 2, 1), now);
        q.push(rec(Some("b"), 0, 3, 1), now);
        let b = next(&mut q, now).unwrap();
        assert_eq!(b.customer, b"b", "a is busy, b goes first");
        assert!(next(&mut q, now).is_none());
        assert!(q.has_waiting(), "a keeps its turn");
        q.finished(&first);
        let again = next(&mut q, now).unwrap();
        assert_eq!(
            (again.customer.as_slice(), offsets(&again)),
            (&b"a"[..], vec![2])
        );
    }

    #[test]
    fn a_requeued_job_goes_first_and_before_newer_records() {
        let now = Instant::now();
        let mut q = queue(true);
        q.push(rec(Some("a"), 0, 1, 1), now);
        q.push(rec(Some("b"), 0, 2, 1), now);
        let a = q.next_job(true, now, |_| true).unwrap();
        assert!(a.probe);
        q.push(rec(Some("a"), 0, 5, 1), now);
        q.requeue(a, now);
        assert_eq!(q.held(), 3);
        // `a` had newer records waiting (so kept its place in the turn order) and `b` is first.
        let b = next(&mut q, now).unwrap();
        assert_eq!(b.customer, b"b");
        let a = next(&mut q, now).unwrap();
        assert_eq!(offsets(&a), vec![1, 5], "the redone records stay oldest");
        assert!(!a.probe);

        let mut q = queue(true);
        q.push(rec(Some("a"), 0, 1, 1), now);
        q.push(rec(Some("b"), 0, 2, 1), now);
        let a = next(&mut q, now).unwrap();
        q.requeue(a, now);
        assert_eq!(next(&mut q, now).unwrap().customer, b"a");
    }

    #[test]
    fn records_of_a_lost_assignment_are_dropped_and_no_longer_held() {
        let now = Instant::now();
        let mut q = queue(true);
        q.push(rec(Some("a"), 0, 1, 1), now);
        q.push(rec(Some("a"), 0, 2, 2), now);
        q.push(rec(Some("b"), 1, 3, 1), now);
        let job = q.next_job(false, now, |r| r.epoch == 2).unwrap();
        assert_eq!(offsets(&job), vec![2]);
        assert_eq!(q.held(), 2);
        assert!(
            q.next_job(false, now, |r| r.epoch == 2).is_none(),
            "b is all stale"
        );
        assert_eq!(q.held(), 1);
        assert!(!q.has_waiting());
    }

    #[test]
    fn keyless_records_stand_alone_and_an_aborted_job_is_released() {
        let now = Instant::now();
        let mut q = queue(true);
        q.push(rec(None, 0, 1, 1), now);
        q.push(rec(None, 0, 2, 1), now);
        let one = next(&mut q, now).unwrap();
        let two = next(&mut q, now).unwrap();
        assert_eq!((one.recs.len(), two.recs.len()), (1, 1));
        assert_ne!(one.customer, two.customer);
        q.aborted(&one.customer, 1);
        q.finished(&two);
        assert_eq!(q.held(), 0);
    }

    #[test]
    fn tier_changes_go_before_spend_only_updates_that_arrived_earlier() {
        let now = Instant::now();
        let mut q = queue(true);
        q.push(rec(Some("s1"), 0, 1, 1), now);
        q.push(rec(Some("s2"), 0, 2, 1), now);
        q.push(rec_in(Some("t1"), 0, 3, 1, true), now);
        // s2 gets a tier change behind its spend-only update: both go with it, urgently.
        q.push(rec_in(Some("s2"), 0, 4, 1, true), now);
        assert_eq!(
            (q.waiting_in(Lane::Urgent), q.waiting_in(Lane::SpendOnly)),
            (2, 1)
        );
        let order: Vec<(Vec<u8>, Vec<i64>)> = std::iter::from_fn(|| next(&mut q, now))
            .map(|j| (j.customer.clone(), offsets(&j)))
            .collect();
        assert_eq!(
            order,
            [
                (b"t1".to_vec(), vec![3]),
                (b"s2".to_vec(), vec![2, 4]),
                (b"s1".to_vec(), vec![1])
            ]
        );
        assert_eq!(
            (q.waiting_in(Lane::Urgent), q.waiting_in(Lane::SpendOnly)),
            (0, 0)
        );
    }

    #[test]
    fn a_spend_only_customer_waits_at_most_its_bound() {
        let start = Instant::now();
        let mut q = queue(true);
        q.push(rec(Some("s"), 0, 1, 1), start);
        q.push(rec_in(Some("t1"), 0, 2, 1, true), start);
        q.push(rec_in(Some("t2"), 0, 3, 1, true), start);
        assert_eq!(next(&mut q, start).unwrap().customer, b"t1");
        // The bound has passed: the spend-only customer goes before the remaining urgent one.
        let late = start + WAIT;
        assert_eq!(next(&mut q, late).unwrap().customer, b"s");
        assert_eq!(next(&mut q, late).unwrap().customer, b"t2");
    }

    #[test]
    fn without_tier_changes_first_turns_follow_arrival() {
        let now = Instant::now();
        let mut q = queue(false);
        q.push(rec(Some("s"), 0, 1, 1), now);
        q.push(rec_in(Some("t"), 0, 2, 1, true), now);
        assert_eq!(q.waiting_in(Lane::Urgent), 0);
        assert_eq!(next(&mut q, now).unwrap().customer, b"s");
        assert_eq!(next(&mut q, now).unwrap().customer, b"t");
    }

    #[test]
    fn what_is_urgent() {
        let update = |kind: &str, changed: bool, previous: &str| {
            format!(
                r#"{{"kind":"{kind}","tier_changed":{changed},"previous_tier":{previous},"total_spent":"1"}}"#
            )
        };
        let urgent = |s: String| is_urgent(Some(s.as_bytes()));
        let old = r#"{"name":"New","okta_group":"G"}"#;
        assert!(!urgent(update("segment", false, old)), "spend only");
        assert!(urgent(update("segment", true, old)), "tier change");
        assert!(urgent(update("segment", false, "null")), "first update");
        assert!(urgent(update("redact", false, old)), "redaction");
        assert!(is_urgent(Some(b"not json")), "dead-lettered at once");
        assert!(is_urgent(None));
    }
}
