//! A deterministic generated catalog with known answers, for relevance tests and benches.
//!
//! Product `i` is a pure function of `i`: its SKU (`P0000042`), category, brand, title words,
//! price and marker words are picked by arithmetic on `i`, so a test can count the
//! expected matches of a query without an index.

use std::collections::BTreeMap;

use holdfast_store::Product;

/// Categories, each with the noun its titles use.
pub const CATEGORIES: [(&str, &str); 10] = [
    ("shoes/running", "runner"),
    ("shoes/hiking", "boot"),
    ("apparel/jackets", "jacket"),
    ("apparel/shirts", "shirt"),
    ("outdoor/tents", "tent"),
    ("outdoor/packs", "backpack"),
    ("kitchen/cookware", "skillet"),
    ("kitchen/knives", "knife"),
    ("home/lighting", "lamp"),
    ("home/textiles", "blanket"),
];

/// Brands (product `i` has brand `i % 25`).
pub const BRANDS: [&str; 25] = [
    "Acme", "Borealis", "Cascade", "Dune", "Ember", "Fjord", "Granite", "Harbor", "Iris", "Juniper",
    "Kestrel", "Lumen", "Meridian", "Nimbus", "Orchid", "Pinnacle", "Quarry", "Ridge", "Summit", "Tundra",
    "Umber", "Vale", "Willow", "Xylo", "Yarrow",
];

/// Colours (product `i` is colour `(i / 3) % 8`).
pub const COLOURS: [&str; 8] = [
    "red", "blue", "green", "black", "white", "orange", "grey", "yellow",
];

/// Rare marker words: product `i` has `MARKERS[k]` in its title iff `i % MARKER_MODULI[k] == k`.
pub const MARKERS: [&str; 3] = ["zephyr", "quokka", "obsidian"];
/// See [`MARKERS`].
pub const MARKER_MODULI: [usize; 3] = [1000, 5003, 20011];

/// A word only in descriptions: product `i` mentions "waterproof" iff `i % 7 == 0`.
pub const DESCRIPTION_WORD: &str = "waterproof";

fn mix(i: u64) -> u64 {
    // splitmix64: a fixed, well-spread function of i.
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The category index of product `i`.
pub fn category_of(i: usize) -> usize {
    i % CATEGORIES.len()
}

/// The brand index of product `i`.
pub fn brand_of(i: usize) -> usize {
    (i / 10) % BRANDS.len()
}

/// The price of product `i` in USD cents: 1.00 to 999.99, well spread.
pub fn price_of(i: usize) -> i64 {
    100 + (mix(i as u64) % 99_900) as i64
}

/// Product `i`. Its `created_at_ms` grows with `i`; `version` is 1.
pub fn product(i: usize) -> Product {
    let (category, noun) = CATEGORIES[category_of(i)];
    let brand = BRANDS[brand_of(i)];
    let colour = COLOURS[(i / 3) % COLOURS.len()];
    let mut title = format!("{brand} {colour} {noun}");
    for (k, marker) in MARKERS.iter().enumerate() {
        if i % MARKER_MODULI[k] == k {
            title.push(' ');
            title.push_str(marker);
        }
    }
    title.push_str(&format!(" model {i}"));
    let mut description = format!(
        "A dependable {noun} from {brand}, in {colour}. Built for everyday use and tested in the field."
    );
    if i.is_multiple_of(7) {
        description.push_str(" Fully waterproof seams.");
    }
    let mut attributes = BTreeMap::new();
    attributes.insert("color".to_string(), colour.to_string());
    attributes.insert(
        "material".to_string(),
        ["cotton", "nylon", "steel", "wool"][(i / 5) % 4].to_string(),
    );
    Product {
        sku: sku(i),
        title,
        description,
        price_minor: price_of(i),
        currency: "USD".into(),
        category: category.into(),
        brand: brand.into(),
        attributes,
        active: true,
        version: 1,
        created_at_ms: 1_700_000_000_000 + i as i64,
        updated_at_ms: 1_700_000_000_000 + i as i64,
    }
}

/// The SKU of product `i`.
pub fn sku(i: usize) -> String {
    format!("P{i:07}")
}
