//! The writer's per-customer queue: what was received and not yet handed to an application,
//! which customers have one in flight, and how many records are held in all.
//!
//! A customer (the record key) has at most one application in flight, so their updates apply
//! in the order they were received; everything queued for a customer when their turn comes is
//! one [`Job`] (the application coalesces it: updates carry absolute state). Customers take
//! turns in the order their first queued record arrived; a job that must be redone goes back to
//! the front.

use std::collections::{HashMap, HashSet, VecDeque};

use rdkafka::message::OwnedHeaders;

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

/// One customer's records handed to an application.
#[derive(Debug)]
pub struct Job {
    pub customer: Vec<u8>,
    /// Oldest first; the newest valid one is applied, the others are coalesced into it.
    pub recs: Vec<Rec>,
    /// Whether this application is the probe that tries rejected credentials again.
    pub probe: bool,
}

/// The records held between the consumer and the applications.
#[derive(Debug, Default)]
pub struct CustomerQueue {
    /// Records waiting per customer, oldest first.
    queued: HashMap<Vec<u8>, Vec<Rec>>,
    /// Customers with waiting records, in turn order; a busy customer is passed over and keeps
    /// its place at the back.
    ready: VecDeque<Vec<u8>>,
    /// Customers with an application in flight.
    busy: HashSet<Vec<u8>>,
    /// Records held: queued plus in flight. Consuming pauses above `max_buffered_records`.
    held: usize,
}

impl CustomerQueue {
    /// Records held, waiting or in flight.
    pub fn held(&self) -> usize {
        self.held
    }

    /// Whether some customer waits for a turn.
    pub fn has_waiting(&self) -> bool {
        !self.ready.is_empty()
    }

    /// Queue a received record behind the customer's others.
    pub fn push(&mut self, rec: Rec) {
        let customer = rec.customer();
        let q = self.queued.entry(customer.clone()).or_default();
        if q.is_empty() {
            self.ready.push_back(customer);
        }
        q.push(rec);
        self.held += 1;
    }

    /// The next customer whose turn it is and who has no application in flight, with all of
    /// their queued records that `is_current` keeps (records of a partition this instance no
    /// longer owns belong to its new owner and are dropped). The customer is busy until
    /// [`finished`](Self::finished), [`requeue`](Self::requeue) or [`aborted`](Self::aborted).
    pub fn next_job(&mut self, probe: bool, is_current: impl Fn(&Rec) -> bool) -> Option<Job> {
        for _ in 0..self.ready.len() {
            let customer = self.ready.pop_front()?;
            if self.busy.contains(&customer) {
                // Dispatched again when the in-flight application ends.
                self.ready.push_back(customer);
                continue;
            }
            let all = self.queued.remove(&customer).unwrap_or_default();
            let before = all.len();
            let recs: Vec<Rec> = all.into_iter().filter(|r| is_current(r)).collect();
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
    /// customer meanwhile, and the customer to the front of the turn order.
    pub fn requeue(&mut self, job: Job) {
        self.busy.remove(&job.customer);
        let q = self.queued.entry(job.customer.clone()).or_default();
        let was_empty = q.is_empty();
        let mut recs = job.recs;
        recs.append(q);
        *q = recs;
        if was_empty {
            self.ready.push_front(job.customer);
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

    fn rec(key: Option<&str>, partition: i32, offset: i64, epoch: u64) -> Rec {
        Rec {
            partition,
            offset,
            epoch,
            key: key.map(|k| k.as_bytes().to_vec()),
            payload: None,
            headers: None,
            timestamp_ms: None,
        }
    }

    fn offsets(job: &Job) -> Vec<i64> {
        job.recs.iter().map(|r| r.offset).collect()
    }

    #[test]
    fn a_customers_records_coalesce_into_one_job_in_arrival_order() {
        let mut q = CustomerQueue::default();
        q.push(rec(Some("a"), 0, 1, 1));
        q.push(rec(Some("b"), 0, 2, 1));
        q.push(rec(Some("a"), 0, 3, 1));
        assert_eq!(q.held(), 3);
        let a = q.next_job(false, |_| true).unwrap();
        assert_eq!(
            (a.customer.as_slice(), offsets(&a)),
            (&b"a"[..], vec![1, 3])
        );
        let b = q.next_job(false, |_| true).unwrap();
        assert_eq!(offsets(&b), vec![2]);
        assert!(q.next_job(false, |_| true).is_none());
        assert_eq!(q.held(), 3, "in-flight records are still held");
        q.finished(&a);
        q.finished(&b);
        assert_eq!(q.held(), 0);
        assert!(!q.has_waiting());
    }

    #[test]
    fn a_busy_customer_waits_for_its_application_to_end() {
        let mut q = CustomerQueue::default();
        q.push(rec(Some("a"), 0, 1, 1));
        let first = q.next_job(false, |_| true).unwrap();
        q.push(rec(Some("a"), 0, 2, 1));
        q.push(rec(Some("b"), 0, 3, 1));
        let next = q.next_job(false, |_| true).unwrap();
        assert_eq!(next.customer, b"b", "a is busy, b goes first");
        assert!(q.next_job(false, |_| true).is_none());
        assert!(q.has_waiting(), "a keeps its turn");
        q.finished(&first);
        let again = q.next_job(false, |_| true).unwrap();
        assert_eq!(
            (again.customer.as_slice(), offsets(&again)),
            (&b"a"[..], vec![2])
        );
    }

    #[test]
    fn a_requeued_job_goes_first_and_before_newer_records() {
        let mut q = CustomerQueue::default();
        q.push(rec(Some("a"), 0, 1, 1));
        q.push(rec(Some("b"), 0, 2, 1));
        let a = q.next_job(true, |_| true).unwrap();
        assert!(a.probe);
        q.push(rec(Some("a"), 0, 5, 1));
        q.requeue(a);
        assert_eq!(q.held(), 3);
        // `a` had newer records waiting (so kept its place in the turn order) and `b` is first.
        let b = q.next_job(false, |_| true).unwrap();
        assert_eq!(b.customer, b"b");
        let a = q.next_job(false, |_| true).unwrap();
        assert_eq!(offsets(&a), vec![1, 5], "the redone records stay oldest");
        assert!(!a.probe);

        let mut q = CustomerQueue::default();
        q.push(rec(Some("a"), 0, 1, 1));
        q.push(rec(Some("b"), 0, 2, 1));
        let a = q.next_job(false, |_| true).unwrap();
        q.requeue(a);
        assert_eq!(q.next_job(false, |_| true).unwrap().customer, b"a");
    }

    #[test]
    fn records_of_a_lost_assignment_are_dropped_and_no_longer_held() {
        let mut q = CustomerQueue::default();
        q.push(rec(Some("a"), 0, 1, 1));
        q.push(rec(Some("a"), 0, 2, 2));
        q.push(rec(Some("b"), 1, 3, 1));
        let job = q.next_job(false, |r| r.epoch == 2).unwrap();
        assert_eq!(offsets(&job), vec![2]);
        assert_eq!(q.held(), 2);
        assert!(
            q.next_job(false, |r| r.epoch == 2).is_none(),
            "b is all stale"
        );
        assert_eq!(q.held(), 1);
        assert!(!q.has_waiting());
    }

    #[test]
    fn keyless_records_stand_alone_and_an_aborted_job_is_released() {
        let mut q = CustomerQueue::default();
        q.push(rec(None, 0, 1, 1));
        q.push(rec(None, 0, 2, 1));
        let one = q.next_job(false, |_| true).unwrap();
        let two = q.next_job(false, |_| true).unwrap();
        assert_eq!((one.recs.len(), two.recs.len()), (1, 1));
        assert_ne!(one.customer, two.customer);
        q.aborted(&one.customer, 1);
        q.finished(&two);
        assert_eq!(q.held(), 0);
    }
}
