//! What the benchmark examples share: a changelog as the segmenter writes it.

use rust_decimal::Decimal;
use segmenter::changelog::OrderRecord;
use segmenter::ledger::Version;

/// `customers` customers with `per_customer` counted $45.50 orders each, as changelog records
/// with the index of their customer (0..customers), customer by customer.
pub fn changelog(customers: u64, per_customer: u64) -> impl Iterator<Item = (u64, OrderRecord)> {
    (0..customers).flat_map(move |c| {
        let customer_id = 115_310_627_314_723_954 + c;
        (0..per_customer).map(move |i| {
            let r = OrderRecord {
                shop: "bench.myshopify.com".into(),
                customer_id,
                order_id: 820_982_911_946_154_509 + c * per_customer + i,
                version: Version {
                    updated_at_us: 1_795_000_000_000_000 + i as i64,
                    fingerprint: 7,
                },
                amount: Decimal::new(4550, 2),
                counted: true,
                email: Some(format!("customer-{customer_id}@example.com")),
                currency: Some("USD".into()),
                facts: Default::default(),
            };
            (c, r)
        })
    })
}
