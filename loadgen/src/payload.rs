//! Order bodies shaped like Shopify's REST webhook payloads (API 2025-07).
//!
//! Money is computed in integer cents and rendered as decimal strings, as Shopify does; the
//! order's `current_total_price_set.shop_money.amount` is the sum of its line items plus
//! shipping and tax minus refunds, so a reference spend computation can be checked against it.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

/// What an order is, independent of its rendering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderSpec {
    pub order_id: u64,
    /// `None` renders `"customer": null` (a guest checkout).
    pub customer_id: Option<u64>,
    pub email: String,
    /// Line items as (quantity, unit price in cents).
    pub line_items: Vec<(u32, u64)>,
    pub shipping_cents: u64,
    pub tax_cents: u64,
    pub refunded_cents: u64,
    pub currency: String,
    pub financial_status: String,
    pub test: bool,
    pub cancelled_at: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

impl OrderSpec {
    /// The order's current total in cents: what `current_total_price` says.
    pub fn current_total_cents(&self) -> u64 {
        let items: u64 = self.line_items.iter().map(|(q, p)| u64::from(*q) * p).sum();
        (items + self.shipping_cents + self.tax_cents).saturating_sub(self.refunded_cents)
    }

    /// A random, plausible order for customer `customer_id` (or a guest).
    pub fn random(rng: &mut impl Rng, order_id: u64, customer_id: Option<u64>) -> Self {
        let items = rng.random_range(1..=3);
        OrderSpec {
            order_id,
            customer_id,
            email: match customer_id {
                Some(c) => customer_email(c),
                None => format!("guest-{order_id}@example.com"),
            },
            line_items: (0..items)
                .map(|_| (rng.random_range(1..=3), rng.random_range(199..=19_999)))
                .collect(),
            shipping_cents: [0, 499, 999][rng.random_range(0..3)],
            tax_cents: rng.random_range(0..=2_000),
            refunded_cents: 0,
            currency: "USD".into(),
            financial_status: "paid".into(),
            test: false,
            cancelled_at: None,
            created_at: "2026-11-20T10:15:30-05:00".into(),
            updated_at: "2026-11-20T10:15:31-05:00".into(),
        }
    }
}

/// `cents` as Shopify renders money: `"45.50"`.
pub fn money(cents: u64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

fn money_set(cents: u64, currency: &str) -> Value {
    json!({
        "shop_money": {"amount": money(cents), "currency_code": currency},
        "presentment_money": {"amount": money(cents), "currency_code": currency},
    })
}

fn address(seed: u64) -> Value {
    json!({
        "first_name": "Avery", "last_name": format!("Buyer{}", seed % 997),
        "address1": format!("{} Chestnut Street", 100 + seed % 900), "address2": "Suite 4/B",
        "city": "Louisville", "province": "Kentucky", "province_code": "KY",
        "country": "United States", "country_code": "US", "zip": "40202",
        "phone": "+1 (555) 010-0199", "company": null, "latitude": 38.2527, "longitude": -85.7585,
        "name": format!("Avery Buyer{}", seed % 997)
    })
}

/// Render `spec` as Shopify would send it for an `orders/*` topic: bytes with `/` escaped.
pub fn order_body(spec: &OrderSpec, shop: &str) -> Vec<u8> {
    let c = &spec.currency;
    let id = spec.order_id;
    let subtotal: u64 = spec.line_items.iter().map(|(q, p)| u64::from(*q) * p).sum();
    let total = spec.current_total_cents();
    let line_items: Vec<Value> = spec
        .line_items
        .iter()
        .enumerate()
        .map(|(i, (qty, price))| {
            let item_id = 466_157_049_000_000_000 + id % 1_000_000_000 * 10 + i as u64;
            json!({
                "id": item_id,
                "admin_graphql_api_id": format!("gid://shopify/LineItem/{item_id}"),
                "fulfillable_quantity": qty, "fulfillment_service": "manual",
                "fulfillment_status": null, "gift_card": false, "grams": 200,
                "name": format!("Organic Cotton Tee - M / Blue #{i}"),
                "price": money(*price), "price_set": money_set(*price, c),
                "product_exists": true, "product_id": 632_910_392_000_000_000u64 + i as u64,
                "properties": [], "quantity": qty, "requires_shipping": true,
                "sku": format!("TEE-M-BLU-{i:03}"), "taxable": true,
                "title": "Organic Cotton Tee", "total_discount": "0.00",
                "total_discount_set": money_set(0, c),
                "variant_id": 808_950_810_000_000_000u64 + i as u64,
                "variant_inventory_management": "shopify", "variant_title": "M / Blue",
                "vendor": "Tierflow Apparel", "tax_lines": [], "duties": [], "discount_allocations": []
            })
        })
        .collect();
    let customer = match spec.customer_id {
        None => Value::Null,
        Some(cid) => json!({
            "id": cid, "email": spec.email, "accepts_marketing": false,
            "created_at": "2026-01-02T03:04:05-05:00", "updated_at": spec.updated_at,
            "first_name": "Avery", "last_name": "Buyer", "state": "enabled", "note": null,
            "verified_email": true, "multipass_identifier": null, "tax_exempt": false,
            "phone": null, "tags": "vip/loyal, newsletter", "currency": c,
            "admin_graphql_api_id": format!("gid://shopify/Customer/{cid}"),
            "default_address": address(cid),
        }),
    };
    let order = json!({
        "id": id,
        "admin_graphql_api_id": format!("gid://shopify/Order/{id}"),
        "app_id": 580_111, "browser_ip": "203.0.113.7", "buyer_accepts_marketing": false,
        "cancel_reason": spec.cancelled_at.as_ref().map(|_| "customer"),
        "cancelled_at": spec.cancelled_at,
        "cart_token": format!("c1-{:032x}", id.wrapping_mul(2_654_435_761)),
        "checkout_id": 901_414_060_000_000_000u64 + id % 1_000_000,
        "checkout_token": format!("{:032x}", id.wrapping_mul(40_503)),
        "client_details": {
            "accept_language": "en-US,en;q=0.9", "browser_height": 900, "browser_ip": "203.0.113.7",
            "browser_width": 1440, "session_hash": null,
            "user_agent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36"
        },
        "closed_at": null, "confirmation_number": format!("X{:08}", id % 100_000_000), "confirmed": true,
        "contact_email": spec.email, "created_at": spec.created_at, "currency": c,
        "current_subtotal_price": money(subtotal), "current_subtotal_price_set": money_set(subtotal, c),
        "current_total_discounts": "0.00", "current_total_discounts_set": money_set(0, c),
        "current_total_price": money(total), "current_total_price_set": money_set(total, c),
        "current_total_tax": money(spec.tax_cents), "current_total_tax_set": money_set(spec.tax_cents, c),
        "customer_locale": "en-US", "discount_codes": [], "email": spec.email,
        "estimated_taxes": false, "financial_status": spec.financial_status,
        "fulfillment_status": null, "landing_site": "/products/organic-cotton-tee?variant=1",
        "name": format!("#{}", 1000 + id % 100_000), "note": null, "note_attributes": [],
        "number": id % 100_000, "order_number": 1000 + id % 100_000,
        "order_status_url": format!("https://{shop}/6930370084/orders/{:032x}/authenticate?key={:016x}", id, id ^ 0x5bd1_e995),
        "payment_gateway_names": ["shopify_payments"], "phone": null,
        "presentment_currency": c, "processed_at": spec.created_at,
        "referring_site": "https://www.example.com/search?q=tees", "source_name": "web",
        "subtotal_price": money(subtotal), "subtotal_price_set": money_set(subtotal, c),
        "tags": "", "tax_lines": [{"price": money(spec.tax_cents), "rate": 0.06, "title": "KY State Tax", "price_set": money_set(spec.tax_cents, c)}],
        "taxes_included": false, "test": spec.test,
        "token": format!("{:032x}", id.wrapping_mul(97)),
        "total_discounts": "0.00", "total_discounts_set": money_set(0, c),
        "total_line_items_price": money(subtotal), "total_line_items_price_set": money_set(subtotal, c),
        "total_price": money(subtotal + spec.shipping_cents + spec.tax_cents),
        "total_price_set": money_set(subtotal + spec.shipping_cents + spec.tax_cents, c),
        "total_tax": money(spec.tax_cents), "total_tax_set": money_set(spec.tax_cents, c),
        "total_weight": 1200, "updated_at": spec.updated_at, "user_id": null,
        "billing_address": address(id), "shipping_address": address(id + 1),
        "customer": customer,
        "line_items": line_items,
        "shipping_lines": [{
            "id": 271_878_346_000_000_000u64 + id % 1_000_000, "carrier_identifier": null,
            "code": "Standard", "discounted_price": money(spec.shipping_cents),
            "price": money(spec.shipping_cents), "price_set": money_set(spec.shipping_cents, c),
            "source": "shopify", "title": "Standard Shipping", "tax_lines": []
        }],
        "refunds": if spec.refunded_cents > 0 {
            json!([{"id": 509_562_969_000_000_000u64 + id % 1_000_000, "order_id": id, "note": "returned",
                    "transactions": [{"amount": money(spec.refunded_cents), "kind": "refund", "status": "success"}]}])
        } else { json!([]) },
    });
    let text = serde_json::to_string(&order).expect("a json! value always serialises");
    // Shopify's encoder escapes every `/` inside strings; `/` only ever occurs inside strings.
    text.replace('/', "\\/").into_bytes()
}

/// The first of the customer ids an [`OrderStream`] uses (18 digits, like Shopify's).
pub const FIRST_CUSTOMER_ID: u64 = 115_310_627_314_723_954;

/// The ids of an [`OrderStream`]'s `customers` customers.
pub fn customer_ids(customers: u64) -> impl Iterator<Item = u64> {
    (0..customers).map(|i| FIRST_CUSTOMER_ID + i)
}

/// The email every order of customer `id` carries (their Okta login in a local pipeline).
pub fn customer_email(id: u64) -> String {
    format!("customer-{id}@example.com")
}

/// A reproducible stream of orders over `customers` customers (about 1 in 20 a guest).
#[derive(Debug)]
pub struct OrderStream {
    rng: StdRng,
    customers: u64,
    next_order: u64,
}

impl OrderStream {
    pub fn new(seed: u64, customers: u64) -> Self {
        OrderStream {
            rng: StdRng::seed_from_u64(seed),
            customers: customers.max(1),
            // 18-digit ids, like Shopify's.
            next_order: 820_982_911_946_154_508 + seed % 1_000_000 * 1_000_000,
        }
    }
}

impl Iterator for OrderStream {
    type Item = OrderSpec;

    fn next(&mut self) -> Option<OrderSpec> {
        self.next_order += 1;
        let customer = if self.rng.random_ratio(1, 20) {
            None
        } else {
            Some(FIRST_CUSTOMER_ID + self.rng.random_range(0..self.customers))
        };
        Some(OrderSpec::random(&mut self.rng, self.next_order, customer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_look_like_shopify_and_weigh_about_7kb() {
        let mut sizes = Vec::new();
        for spec in OrderStream::new(7, 1000).take(200) {
            let body = order_body(&spec, "shop.myshopify.com");
            sizes.push(body.len());
            let text = std::str::from_utf8(&body).unwrap();
            assert!(text.contains(r#"gid:\/\/shopify\/Order\/"#));
            assert!(!text.contains("://"), "every / escaped");
            let v: Value = serde_json::from_slice(&body).unwrap();
            // Ids stay exact integers when parsed as u64.
            assert_eq!(v["id"].as_u64(), Some(spec.order_id));
            assert_eq!(v["customer"]["id"].as_u64(), spec.customer_id);
            assert_eq!(
                v["current_total_price_set"]["shop_money"]["amount"],
                money(spec.current_total_cents())
            );
        }
        sizes.sort_unstable();
        let median = sizes[sizes.len() / 2];
        assert!(
            (6_000..=8_500).contains(&median),
            "median body {median} bytes"
        );
    }

    #[test]
    fn money_renders_two_decimals() {
        assert_eq!(money(4550), "45.50");
        assert_eq!(money(5), "0.05");
        assert_eq!(money(0), "0.00");
    }
}
