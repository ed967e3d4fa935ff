//! The shops this writer serves and what each one owns in Okta: `[okta.stores."<shop>"]`.
//!
//! One person can be a customer of several shops, and the writer finds their Okta user by
//! email or login, so two shops' updates can reach one Okta user. Written into the same
//! attributes and tier groups they overwrite each other: shop A's customer at 600 (VIP) and
//! shop B's at 50 (New) left the user with A's total and B's group.
//!
//! The model: every declared store owns its own profile attributes and its own tier groups,
//! named by suffixes (`attribute_suffix = "_eu"` → `shopify_total_spent_eu`,
//! `group_suffix = " (EU)"` → `Shopify VIP (EU)`), as Netcore's Shopify sync names attributes
//! per store (`SH_TOTALSPENT_<STORE>`). A person who is VIP in one shop and New in another is in
//! both stores' groups, in exactly one of each store's tier groups. A combined tier across
//! stores was the other choice, rejected: stores may sell in different currencies (no exchange
//! rate makes a tier boundary right), the segmenter's state is per shop and customer, and a
//! marketer who wants "VIP anywhere" can build it from the per-store groups with an Okta group
//! rule.
//!
//! Enforced at startup: at least one store is declared, and no two stores resolve to the same
//! attribute or group name (a config that would let them overwrite each other is refused with
//! the fix named). At run time an update of a shop that is not declared is dead-lettered
//! `unknown_store` (declare it, restart, `dlq redrive`). A single store needs no suffixes.

use std::collections::{BTreeMap, HashMap};

use schemas::TierTable;
use serde::Deserialize;
use service_runtime::config::ConfigError;

use crate::config::UserLookup;
use crate::profile::ProfileAttributes;

/// Okta's longest group name.
const GROUP_NAME_MAX: usize = 255;

/// `[okta.stores."<shop>"]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Appended to every `[okta.profile_attributes]` name (and to an `attribute:` lookup's
    /// attribute): `_eu` makes `shopify_total_spent_eu`.
    pub attribute_suffix: String,
    /// Appended to every tier's `okta_group`: ` (EU)` makes `Shopify VIP (EU)`.
    pub group_suffix: String,
}

/// `[okta.stores]`: tables (`[okta.stores."<shop>"]`), or, as the environment can only give a
/// string (`TIERFLOW_OKTA__STORES`), a comma-separated list of shops without suffixes (one
/// store; several are refused by [`resolve`] as they would share names).
pub fn deserialize<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, StoreConfig>, D::Error> {
    use serde::de::Error;
    match toml::Value::deserialize(d)? {
        toml::Value::String(list) => Ok(list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|shop| (shop.to_owned(), StoreConfig::default()))
            .collect()),
        tables => tables.try_into().map_err(D::Error::custom),
    }
}

/// One tier's group in one store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreGroup {
    pub tier: String,
    /// The tier's `okta_group` as the segmenter writes it in updates (`tier.okta_group`).
    pub in_updates: String,
    /// This store's Okta group: `in_updates` + `group_suffix`.
    pub name: String,
}

/// One store's names in Okta, resolved from the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreNames {
    pub shop: String,
    pub attributes: ProfileAttributes,
    pub groups: Vec<StoreGroup>,
    pub lookup: UserLookup,
}

/// Every declared store's names, checked: at least one store, valid names, and no attribute
/// or group written by two stores.
pub fn resolve(
    stores: &BTreeMap<String, StoreConfig>,
    attributes: &ProfileAttributes,
    tiers: &TierTable,
    lookup: &UserLookup,
) -> Result<Vec<StoreNames>, ConfigError> {
    if stores.is_empty() {
        return Err(ConfigError::invalid(
            "okta.stores",
            "no store declared: declare each shop this writer serves, e.g. \
             [okta.stores.\"name.myshopify.com\"] (one store needs nothing more; with several, \
             give each an attribute_suffix and a group_suffix, e.g. \"_eu\" and \" (EU)\", so no \
             two shops write the same Okta attribute or group)",
        ));
    }
    let mut out = Vec::new();
    // Okta name → the store that writes it.
    let mut attribute_owner: HashMap<String, &str> = HashMap::new();
    let mut group_owner: HashMap<String, &str> = HashMap::new();
    for (shop, cfg) in stores {
        let field = format!("okta.stores.\"{shop}\"");
        if !schemas::is_shop_domain(shop) {
            return Err(ConfigError::invalid(
                field,
                "is not a shop domain (lower-case letters, digits, `.` and `-`, e.g. `name.myshopify.com`)",
            ));
        }
        let store_attributes = attributes.with_suffix(&cfg.attribute_suffix);
        if let Some(problem) = store_attributes.problem() {
            return Err(ConfigError::invalid(
                format!("{field}.attribute_suffix"),
                format!("`{}` makes a bad name: {problem}", cfg.attribute_suffix),
            ));
        }
        if cfg.group_suffix.chars().any(char::is_control) {
            return Err(ConfigError::invalid(
                format!("{field}.group_suffix"),
                "must not contain control characters",
            ));
        }
        for name in store_attributes.names() {
            if let Some(other) = attribute_owner.insert(name.to_owned(), shop) {
                return Err(ConfigError::invalid(
                    format!("{field}.attribute_suffix"),
                    format!(
                        "store `{other}` writes Okta attribute `{name}` too: a person who is a customer of both shops would get one shop's values overwritten by the other's. Give each store its own attribute_suffix (e.g. \"_{}\")",
                        shop.split('.').next().unwrap_or(shop).replace('-', "_")
                    ),
                ));
            }
        }
        let mut groups = Vec::new();
        for row in tiers.rows() {
            let name = format!("{}{}", row.okta_group, cfg.group_suffix);
            if name.chars().count() > GROUP_NAME_MAX {
                return Err(ConfigError::invalid(
                    format!("{field}.group_suffix"),
                    format!(
                        "makes `{name}`, longer than Okta's {GROUP_NAME_MAX}-character group names"
                    ),
                ));
            }
            if let Some(other) = group_owner.insert(name.clone(), shop) {
                return Err(ConfigError::invalid(
                    format!("{field}.group_suffix"),
                    format!(
                        "store `{other}` uses Okta group `{name}` too: one store's tiers would move a person out of the other's. Give each store its own group_suffix (e.g. \" ({shop})\")"
                    ),
                ));
            }
            groups.push(StoreGroup {
                tier: row.name.clone(),
                in_updates: row.okta_group.clone(),
                name,
            });
        }
        let lookup = match lookup {
            UserLookup::Attribute(a) => {
                UserLookup::Attribute(format!("{a}{}", cfg.attribute_suffix))
            }
            other => other.clone(),
        };
        out.push(StoreNames {
            shop: shop.clone(),
            attributes: store_attributes,
            groups,
            lookup,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiers() -> TierTable {
        toml::from_str::<BTreeMap<String, Vec<schemas::TierRow>>>(
            "[[t]]\nname = \"New\"\nmin = \"0\"\nmax = \"100\"\nokta_group = \"Shopify New\"\n\
             [[t]]\nname = \"VIP\"\nmin = \"100\"\nokta_group = \"Shopify VIP\"\n",
        )
        .map(|mut m| TierTable::new(m.remove("t").unwrap()).unwrap())
        .unwrap()
    }

    fn stores(text: &str) -> BTreeMap<String, StoreConfig> {
        toml::from_str(text).unwrap()
    }

    fn check(text: &str, lookup: &UserLookup) -> Result<Vec<StoreNames>, String> {
        resolve(
            &stores(text),
            &ProfileAttributes::default(),
            &tiers(),
            lookup,
        )
        .map_err(|e| e.to_string())
    }

    #[test]
    fn one_store_keeps_the_plain_names() {
        let [one] = <[StoreNames; 1]>::try_from(
            check("[\"a.myshopify.com\"]\n", &UserLookup::Login).unwrap(),
        )
        .unwrap();
        assert_eq!(one.attributes, ProfileAttributes::default());
        assert_eq!(
            one.groups
                .iter()
                .map(|g| g.name.as_str())
                .collect::<Vec<_>>(),
            ["Shopify New", "Shopify VIP"]
        );
    }

    #[test]
    fn two_stores_own_suffixed_attributes_groups_and_lookup() {
        let both = check(
            "[\"a.myshopify.com\"]\n\
             [\"b.myshopify.com\"]\nattribute_suffix = \"_b\"\ngroup_suffix = \" (B)\"\n",
            &UserLookup::Attribute("shopify_customer_id".into()),
        )
        .unwrap();
        let b = &both[1];
        assert_eq!(b.shop, "b.myshopify.com");
        assert_eq!(
            b.attributes.names().collect::<Vec<_>>(),
            ["shopify_orders_count_b", "shopify_total_spent_b"]
        );
        assert_eq!(b.groups[1].name, "Shopify VIP (B)");
        assert_eq!(b.groups[1].in_updates, "Shopify VIP");
        assert_eq!(
            b.lookup,
            UserLookup::Attribute("shopify_customer_id_b".into())
        );
    }

    #[test]
    fn configs_that_let_two_stores_overwrite_each_other_are_refused_with_the_fix() {
        let e = check("", &UserLookup::Login).unwrap_err();
        assert!(
            e.contains("okta.stores") && e.contains("no store declared"),
            "{e}"
        );
        let e = check(
            "[\"a.myshopify.com\"]\n[\"b.myshopify.com\"]\n",
            &UserLookup::Login,
        )
        .unwrap_err();
        assert!(
            e.contains("attribute_suffix") && e.contains("shopify_orders_count"),
            "{e}"
        );
        // Own attributes but shared groups: still refused.
        let e = check(
            "[\"a.myshopify.com\"]\n[\"b.myshopify.com\"]\nattribute_suffix = \"_b\"\n",
            &UserLookup::Login,
        )
        .unwrap_err();
        assert!(
            e.contains("group_suffix") && e.contains("Shopify New"),
            "{e}"
        );
        // A suffix that makes another store's name.
        let e = check(
            "[\"a.myshopify.com\"]\nattribute_suffix = \"_x\"\ngroup_suffix = \" x\"\n\
             [\"b.myshopify.com\"]\nattribute_suffix = \"_x\"\ngroup_suffix = \" y\"\n",
            &UserLookup::Login,
        )
        .unwrap_err();
        assert!(e.contains("shopify_orders_count_x"), "{e}");
    }

    #[test]
    fn the_environment_declares_stores_as_a_list() {
        #[derive(Deserialize)]
        struct View {
            #[serde(deserialize_with = "deserialize")]
            stores: BTreeMap<String, StoreConfig>,
        }
        let v: View = toml::from_str("stores = \"a.myshopify.com, \"").unwrap();
        assert_eq!(
            v.stores,
            BTreeMap::from([("a.myshopify.com".to_owned(), StoreConfig::default())])
        );
        let v: View =
            toml::from_str("[stores.\"a.myshopify.com\"]\ngroup_suffix = \" (A)\"\n").unwrap();
        assert_eq!(v.stores["a.myshopify.com"].group_suffix, " (A)");
        let e = toml::from_str::<View>("[stores.\"a.myshopify.com\"]\nsufix = \"x\"\n")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("sufix"), "{e}");
    }

    #[test]
    fn bad_names_are_refused() {
        let e = check("[\"A.myshopify.com\"]\n", &UserLookup::Login).unwrap_err();
        assert!(e.contains("not a shop domain"), "{e}");
        let e = check(
            "[\"a.myshopify.com\"]\nattribute_suffix = \"-eu\"\n",
            &UserLookup::Login,
        )
        .unwrap_err();
        assert!(e.contains("attribute_suffix") && e.contains("-eu"), "{e}");
        let e = check(
            "[\"a.myshopify.com\"]\ngroup_suffix = \"\\n\"\n",
            &UserLookup::Login,
        )
        .unwrap_err();
        assert!(e.contains("control"), "{e}");
        assert!(check(
            &format!(
                "[\"a.myshopify.com\"]\ngroup_suffix = \"{}\"\n",
                "x".repeat(250)
            ),
            &UserLookup::Login
        )
        .unwrap_err()
        .contains("255"));
    }
}
