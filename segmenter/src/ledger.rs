//! Per-customer order ledgers: the state the segmenter keeps, restores and replays.
//!
//! For every customer the ledger holds the newest known version of each of their orders. A
//! version is newer when its `updated_at` is later; two versions with the same `updated_at`
//! (Shopify's timestamps have one-second resolution) are ordered by a fingerprint of their
//! content, so the winner never depends on arrival order. An older or equal version is a no-op.
//! Totals are derived from the stored orders, never accumulated, so duplicates and replays
//! cannot double-count.

use std::collections::{HashMap, HashSet};

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::changelog::OrderRecord;
use crate::normalize::{NormalizedOrder, OrderFacts};

/// Orders' version order: `updated_at`, then a content fingerprint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Version {
    pub updated_at_us: i64,
    pub fingerprint: u32,
}

impl Version {
    /// Older than any real version.
    const NONE: Version = Version {
        updated_at_us: i64::MIN,
        fingerprint: 0,
    };
}

/// A customer: one shop (interned per ledger) and the Shopify customer id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CustomerKey {
    shop: u32,
    pub customer_id: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct OrderEntry {
    order_id: u64,
    version: Version,
    amount: Decimal,
    counted: bool,
    /// `created_at` in seconds since 2000-01-01 (Shopify's resolution); 0 unknown.
    created_at: u32,
    name: CompactName,
}

/// 2000-01-01T00:00:00Z in seconds since the Unix epoch.
const EPOCH_2000: i64 = 946_684_800;

fn compact_time(us: Option<i64>) -> u32 {
    us.map(|us| us.div_euclid(1_000_000) - EPOCH_2000)
        .and_then(|s| u32::try_from(s).ok())
        .unwrap_or(0)
}

/// An order name without an allocation: Shopify writes names as the shop's prefix, the
/// order number and the shop's suffix (`#1001`, `SO-1001-EU`), so the number is kept inline
/// and the prefix/suffix pair is interned once per ledger ([`Forms`]). Names without a
/// number (or with one beyond `u32`, or a leading zero) are interned whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CompactName {
    number: u32,
    /// Index into [`Forms`]; `u16::MAX`: no name.
    form: u16,
}

impl CompactName {
    const NONE: CompactName = CompactName {
        number: 0,
        form: u16::MAX,
    };
}

/// Interned strings that repeat across customers: name forms `(prefix, suffix, numbered)`,
/// and consent states. Bounded: past the bound a new value is not stored (unknown), so a
/// stream of odd names cannot grow it without end.
#[derive(Debug, Default)]
struct Forms {
    names: Vec<(Box<str>, Box<str>, bool)>,
    /// Hash of a name form → its indexes in `names`: a shop whose names carry no number
    /// interns each one whole, and a linear search per order would then cost up to 65,533
    /// comparisons.
    name_index: HashMap<u64, Vec<u16>>,
    consents: Vec<Box<str>>,
}

fn form_hash(key: (&str, &str, bool)) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    h.finish()
}

impl Forms {
    fn name(&mut self, name: Option<&str>) -> CompactName {
        let Some(name) = name else {
            return CompactName::NONE;
        };
        // The last run of digits is the order number.
        let end = name.rfind(|c: char| c.is_ascii_digit()).map(|i| i + 1);
        let split = end.map(|e| {
            let s = name[..e]
                .rfind(|c: char| !c.is_ascii_digit())
                .map_or(0, |i| i + 1);
            (s, e)
        });
        let (prefix, number, suffix) = match split {
            Some((s, e)) => match name[s..e].parse::<u32>() {
                Ok(n) if !name[s..e].starts_with('0') || e - s == 1 => {
                    (&name[..s], Some(n), &name[e..])
                }
                _ => (name, None, ""),
            },
            None => (name, None, ""),
        };
        let key = (prefix, suffix, number.is_some());
        let hash = form_hash(key);
        let found = self.name_index.get(&hash).and_then(|candidates| {
            candidates.iter().copied().find(|&i| {
                let (p, s, n) = &self.names[usize::from(i)];
                (&**p, &**s, *n) == key
            })
        });
        let form = match found {
            Some(i) => i,
            None if self.names.len() < usize::from(u16::MAX - 1) => {
                let i = u16::try_from(self.names.len()).expect("bounded above");
                self.names
                    .push((prefix.into(), suffix.into(), number.is_some()));
                self.name_index.entry(hash).or_default().push(i);
                i
            }
            None => return CompactName::NONE,
        };
        CompactName {
            number: number.unwrap_or(0),
            form,
        }
    }

    fn render(&self, name: CompactName) -> Option<String> {
        let (prefix, suffix, numbered) = self.names.get(usize::from(name.form))?;
        Some(if *numbered {
            format!("{prefix}{}{suffix}", name.number)
        } else {
            prefix.to_string()
        })
    }

    /// A consent state's index + 1 (0: unknown).
    fn consent(&mut self, state: Option<&str>) -> u8 {
        let Some(state) = state else { return 0 };
        match self.consents.iter().position(|c| &**c == state) {
            Some(i) => u8::try_from(i + 1).unwrap_or(0),
            None if self.consents.len() < 254 => {
                self.consents.push(state.into());
                u8::try_from(self.consents.len()).unwrap_or(0)
            }
            None => 0,
        }
    }

    fn render_consent(&self, c: u8) -> Option<String> {
        let i = usize::from(c.checked_sub(1)?);
        self.consents.get(i).map(|s| s.to_string())
    }
}

impl OrderEntry {
    fn new(
        order_id: u64,
        version: Version,
        amount: Decimal,
        counted: bool,
        facts: &OrderFacts,
        forms: &mut Forms,
    ) -> Self {
        OrderEntry {
            order_id,
            version,
            amount,
            counted,
            created_at: compact_time(facts.created_at_us),
            name: forms.name(facts.name.as_deref()),
        }
    }
}

/// Kept small on purpose: a million customers' states live in one hash table (about 72 bytes
/// a slot), and each customer's orders in one exactly-sized allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CustomerState {
    email: Option<Box<str>>,
    /// Version of the order the email and currency were taken from.
    contact_version: Version,
    orders: Box<[OrderEntry]>,
    currency: Option<Currency>,
    /// `customer.tags` and `customer.email_marketing_consent.state` (interned, 0 unknown),
    /// from the same newest version as the email.
    tags: Option<Box<str>>,
    consent: u8,
}

impl Default for CustomerState {
    fn default() -> Self {
        CustomerState {
            email: None,
            contact_version: Version::NONE,
            orders: Box::new([]),
            currency: None,
            tags: None,
            consent: 0,
        }
    }
}

/// An ISO 4217 code held inline; anything else Shopify might send is kept as `XXX` (ISO's
/// "no currency") rather than costing an allocation per customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Currency([u8; 3]);

impl Currency {
    fn new(code: &str) -> Currency {
        match code.as_bytes() {
            [a, b, c] if code.bytes().all(|b| b.is_ascii_uppercase()) => Currency([*a, *b, *c]),
            _ => Currency(*b"XXX"),
        }
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("ASCII by construction")
    }
}

/// An order whose amount would take its customer's total past what `Decimal` can hold. The
/// ledger refuses it (nothing changes) so every stored total stays computable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the customer's total spent would exceed the largest representable amount")]
pub struct TotalOverflow;

/// Sum of the counted orders' amounts, `None` on overflow.
fn counted_total(orders: &[OrderEntry]) -> Option<Decimal> {
    orders
        .iter()
        .filter(|e| e.counted)
        .try_fold(Decimal::ZERO, |t, e| t.checked_add(e.amount))
}

/// Would storing `entry` keep the customer's total computable?
fn fits(orders: &[OrderEntry], entry: &OrderEntry) -> bool {
    let others = orders
        .iter()
        .filter(|e| e.counted && e.order_id != entry.order_id)
        .try_fold(Decimal::ZERO, |t, e| t.checked_add(e.amount));
    match others {
        Some(t) if entry.counted => t.checked_add(entry.amount).is_some(),
        Some(_) => true,
        None => false,
    }
}

/// What the spend rule says about a customer right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub total_spent: Decimal,
    pub orders_count: u64,
    pub email: Option<String>,
    pub currency: Option<String>,
    pub facts: schemas::CustomerFacts,
}

impl Summary {
    /// A customer with nothing counted: redacted, or whose orders were all deleted.
    pub fn zero(email: Option<String>, currency: Option<String>) -> Summary {
        Summary {
            total_spent: Decimal::ZERO,
            orders_count: 0,
            email,
            currency,
            facts: schemas::CustomerFacts::default(),
        }
    }
}

/// RFC 3339 in UTC, to the second (as Shopify writes timestamps).
fn rfc3339(compact: u32) -> Option<String> {
    chrono::DateTime::from_timestamp(EPOCH_2000 + i64::from(compact), 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

/// The customer's facts: first and last counted order (by `created_at`, ties by id), and the
/// contact facts of the newest version.
fn facts(state: &CustomerState, forms: &Forms) -> schemas::CustomerFacts {
    let counted = || {
        state
            .orders
            .iter()
            .filter(|e| e.counted && e.created_at != 0)
    };
    let last = counted().max_by_key(|e| (e.created_at, e.order_id));
    let first = counted().min_by_key(|e| (e.created_at, e.order_id));
    schemas::CustomerFacts {
        last_order_id: last.map(|e| e.order_id),
        last_order_name: last.and_then(|e| forms.render(e.name)),
        first_order_at: first.and_then(|e| rfc3339(e.created_at)),
        last_order_at: last.and_then(|e| rfc3339(e.created_at)),
        email_marketing_consent: forms.render_consent(state.consent),
        tags: state.tags.as_deref().map(str::to_owned),
    }
}

/// Replace the entry with the same order id, or append; true when appended. Appending
/// reallocates the slice to its exact new size: a customer gains orders rarely, and exact
/// sizing saves the spare capacity a `Vec` would keep for each of a million customers.
fn upsert(orders: &mut Box<[OrderEntry]>, entry: OrderEntry) -> bool {
    if let Some(e) = orders.iter_mut().find(|e| e.order_id == entry.order_id) {
        *e = entry;
        return false;
    }
    let mut v = std::mem::take(orders).into_vec();
    v.reserve_exact(1);
    v.push(entry);
    *orders = v.into_boxed_slice();
    true
}

impl CustomerState {
    /// Email, currency, tags and consent come from the customer's newest order version.
    fn take_contact(
        &mut self,
        version: Version,
        email: Option<&str>,
        currency: Option<&str>,
        facts: &OrderFacts,
        forms: &mut Forms,
    ) {
        if self.contact_version < version {
            self.contact_version = version;
            if let Some(e) = email {
                self.email = Some(e.into());
            }
            if let Some(c) = currency {
                self.currency = Some(Currency::new(c));
            }
            // Absent (a body of an API version without them) keeps what is known; removed tags
            // arrive as "".
            if let Some(t) = facts.tags.as_deref() {
                self.tags = Some(t.into());
            }
            if facts.email_marketing_consent.is_some() {
                self.consent = forms.consent(facts.email_marketing_consent.as_deref());
            }
        }
    }
}

/// The content fingerprint that breaks `updated_at` ties deterministically.
pub fn fingerprint(o: &NormalizedOrder, counted: bool) -> u32 {
    let mut h = Sha256::new();
    h.update(o.amount.normalize().to_string().as_bytes());
    h.update([u8::from(counted), u8::from(o.cancelled), u8::from(o.test)]);
    h.update(o.financial_status.as_deref().unwrap_or("").as_bytes());
    h.update([0]);
    h.update(o.currency.as_deref().unwrap_or("").as_bytes());
    h.update([0]);
    h.update(o.email.as_deref().unwrap_or("").as_bytes());
    // The facts too, so two versions with one `updated_at` differing only there still order
    // the same way whatever their arrival; hashed only when known, so versions without them
    // keep the fingerprints stored before they existed.
    let f = &o.facts;
    if *f != OrderFacts::default() {
        for text in [&f.name, &f.tags, &f.email_marketing_consent] {
            h.update([0, u8::from(text.is_some())]);
            h.update(text.as_deref().unwrap_or("").as_bytes());
        }
        h.update(f.created_at_us.unwrap_or(i64::MIN).to_be_bytes());
    }
    let d = h.finalize();
    u32::from_be_bytes(d[..4].try_into().expect("4 bytes"))
}

/// All customers of the partitions one segmenter instance owns.
#[derive(Debug, Default)]
pub struct Ledger {
    shops: Vec<Box<str>>,
    shop_ids: HashMap<Box<str>, u32>,
    customers: HashMap<CustomerKey, CustomerState>,
    orders: usize,
    forms: Forms,
    /// Orders Shopify deleted (`orders/delete`), as (shop, order id). A deletion is final, so
    /// a version of such an order arriving later (a delayed retry, a replay, a backfill) must
    /// not bring it back. `orders/delete` names no customer, so every partition keeps the
    /// marker (few orders are ever deleted: Shopify deletes only archived or cancelled ones).
    deleted: HashSet<(u32, u64)>,
}

impl Ledger {
    pub fn new() -> Self {
        Ledger::default()
    }

    pub fn key(&mut self, shop: &str, customer_id: u64) -> CustomerKey {
        let shop = match self.shop_ids.get(shop) {
            Some(id) => *id,
            None => {
                let id = u32::try_from(self.shops.len()).expect("fewer than 2^32 shops");
                self.shops.push(shop.into());
                self.shop_ids.insert(shop.into(), id);
                id
            }
        };
        CustomerKey { shop, customer_id }
    }

    /// The key of an existing customer, without interning a new shop.
    pub fn find(&self, shop: &str, customer_id: u64) -> Option<CustomerKey> {
        let key = CustomerKey {
            shop: *self.shop_ids.get(shop)?,
            customer_id,
        };
        self.customers.contains_key(&key).then_some(key)
    }

    pub fn shop_of(&self, key: CustomerKey) -> &str {
        &self.shops[key.shop as usize]
    }

    pub fn customers(&self) -> usize {
        self.customers.len()
    }

    pub fn orders(&self) -> usize {
        self.orders
    }

    pub fn contains(&self, key: CustomerKey) -> bool {
        self.customers.contains_key(&key)
    }

    /// Store `order` if it is newer than what the ledger has. Returns the stored record when
    /// it was (for the changelog), `None` for a duplicate or stale version, and an error
    /// (nothing stored) if the customer's total would overflow.
    pub fn apply(
        &mut self,
        key: CustomerKey,
        order: &NormalizedOrder,
        counted: bool,
    ) -> Result<Option<OrderRecord>, TotalOverflow> {
        let version = Version {
            updated_at_us: order.updated_at_us,
            fingerprint: fingerprint(order, counted),
        };
        let entry = OrderEntry::new(
            order.order_id,
            version,
            order.amount,
            counted,
            &order.facts,
            &mut self.forms,
        );
        if let Some(state) = self.customers.get(&key) {
            if let Some(existing) = state.orders.iter().find(|e| e.order_id == order.order_id) {
                if existing.version >= version {
                    return Ok(None);
                }
            }
            if !fits(&state.orders, &entry) {
                return Err(TotalOverflow);
            }
        } else if !fits(&[], &entry) {
            return Err(TotalOverflow);
        }
        let state = self.customers.entry(key).or_default();
        if upsert(&mut state.orders, entry) {
            self.orders += 1;
        }
        state.take_contact(
            version,
            order.email.as_deref(),
            order.currency.as_deref(),
            &order.facts,
            &mut self.forms,
        );
        Ok(Some(OrderRecord {
            shop: self.shops[key.shop as usize].to_string(),
            customer_id: key.customer_id,
            order_id: order.order_id,
            version,
            amount: order.amount,
            counted,
            email: order.email.clone(),
            currency: order.currency.clone(),
            facts: order.facts.clone(),
        }))
    }

    /// Put a changelog record back, as it was when written (restore path: no version check,
    /// the changelog holds accepted versions in the order they were accepted). A record that
    /// would make the total overflow (only a changelog written before the ledger refused such
    /// orders can hold one) is refused, as `apply` would have.
    pub fn restore(&mut self, r: &OrderRecord) -> Result<(), TotalOverflow> {
        let key = self.key(&r.shop, r.customer_id);
        let entry = OrderEntry::new(
            r.order_id,
            r.version,
            r.amount,
            r.counted,
            &r.facts,
            &mut self.forms,
        );
        let state = self.customers.entry(key).or_default();
        if !fits(&state.orders, &entry) {
            if state.orders.is_empty() {
                self.customers.remove(&key);
            }
            return Err(TotalOverflow);
        }
        if upsert(&mut state.orders, entry) {
            self.orders += 1;
        }
        state.take_contact(
            r.version,
            r.email.as_deref(),
            r.currency.as_deref(),
            &r.facts,
            &mut self.forms,
        );
        Ok(())
    }

    /// Apply a changelog tombstone for one order.
    pub fn restore_delete(&mut self, shop: &str, customer_id: u64, order_id: u64) {
        let key = self.key(shop, customer_id);
        if let Some(state) = self.customers.get_mut(&key) {
            let before = state.orders.len();
            state.orders = state
                .orders
                .iter()
                .filter(|e| e.order_id != order_id)
                .cloned()
                .collect();
            self.orders -= before - state.orders.len();
            if state.orders.is_empty() {
                self.customers.remove(&key);
            }
        }
    }

    pub fn summary(&self, key: CustomerKey) -> Option<Summary> {
        let state = self.customers.get(&key)?;
        // `apply` and `restore` refuse any order that would overflow, so this sum fits;
        // saturating keeps a broken invariant from ever becoming a panic.
        let total_spent = counted_total(&state.orders).unwrap_or(Decimal::MAX);
        let orders_count = state.orders.iter().filter(|e| e.counted).count() as u64;
        Some(Summary {
            total_spent,
            orders_count,
            email: state.email.as_deref().map(str::to_owned),
            currency: state.currency.map(|c| c.as_str().to_owned()),
            facts: facts(state, &self.forms),
        })
    }

    /// Whether `order_id` of `shop` was deleted.
    pub fn is_deleted(&self, shop: &str, order_id: u64) -> bool {
        self.shop_ids
            .get(shop)
            .is_some_and(|s| self.deleted.contains(&(*s, order_id)))
    }

    /// Remember that `order_id` of `shop` was deleted (restore path too). Returns whether this
    /// is news.
    pub fn mark_deleted(&mut self, shop: &str, order_id: u64) -> bool {
        let shop = self.key(shop, 0).shop;
        self.deleted.insert((shop, order_id))
    }

    /// Delete `order_id` of `shop`: mark it, and take it out of the customer who has it (a
    /// customer left without orders is forgotten, as a changelog restore of the tombstone
    /// does). Returns that customer and their summary before, if any here has the order. One
    /// scan of the customers: the deletion names no customer, and deletions are rare.
    pub fn delete_order(&mut self, shop: &str, order_id: u64) -> Option<(CustomerKey, Summary)> {
        self.mark_deleted(shop, order_id);
        let shop_id = *self.shop_ids.get(shop)?;
        let key = self
            .customers
            .iter()
            .find(|(k, s)| k.shop == shop_id && s.orders.iter().any(|e| e.order_id == order_id))
            .map(|(k, _)| *k)?;
        let before = self.summary(key)?;
        self.restore_delete(shop, key.customer_id, order_id);
        Some((key, before))
    }

    /// Forget a customer; returns the order ids that were stored (for changelog tombstones).
    pub fn remove(&mut self, key: CustomerKey) -> Vec<u64> {
        match self.customers.remove(&key) {
            Some(state) => {
                self.orders -= state.orders.len();
                state.orders.iter().map(|e| e.order_id).collect()
            }
            None => Vec::new(),
        }
    }

    /// Every customer of `shop`, sorted by customer id (for deterministic output).
    pub fn customers_of(&self, shop: &str) -> Vec<CustomerKey> {
        let Some(&shop) = self.shop_ids.get(shop) else {
            return Vec::new();
        };
        let mut keys: Vec<CustomerKey> = self
            .customers
            .keys()
            .filter(|k| k.shop == shop)
            .copied()
            .collect();
        keys.sort_by_key(|k| k.customer_id);
        keys
    }

    /// Every customer key, sorted (shop name, customer id): for digests and what-if listings.
    pub fn all_customers(&self) -> Vec<CustomerKey> {
        let mut keys: Vec<CustomerKey> = self.customers.keys().copied().collect();
        keys.sort_by(|a, b| {
            self.shops[a.shop as usize]
                .cmp(&self.shops[b.shop as usize])
                .then(a.customer_id.cmp(&b.customer_id))
        });
        keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_kept_as_number_and_interned_form() {
        let mut f = Forms::default();
        for name in [
            "#1001",
            "#1002",
            "SO-1001-EU",
            "0042",
            "#0",
            "draft",
            "#99999999999",
        ] {
            let c = f.name(Some(name));
            assert_eq!(f.render(c).as_deref(), Some(name), "{name}");
        }
        // `#1001`, `#1002` and `#0` share one form; a leading zero, no number and an oversized
        // one are kept whole.
        assert_eq!(f.names.len(), 5);
        let none = f.name(None);
        assert_eq!(f.render(none), None);
        let subscribed = f.consent(Some("subscribed"));
        assert_eq!(f.render_consent(subscribed).as_deref(), Some("subscribed"));
        assert_eq!(f.consent(Some("subscribed")), 1);
        let unknown = f.consent(None);
        assert_eq!(f.render_consent(unknown), None);
    }

    #[test]
    fn creation_times_keep_seconds_and_unknown_outside_the_range() {
        let t = 1_640_995_200_000_000; // 2022-01-01T00:00:00Z
        assert_eq!(
            rfc3339(compact_time(Some(t))).as_deref(),
            Some("2022-01-01T00:00:00Z")
        );
        assert_eq!(compact_time(Some(0)), 0, "before 2000: unknown");
        assert_eq!(compact_time(None), 0);
    }
}
