//! Ingest's shape check accepts a number in a body exactly when the
//! worker's path after it does: serde_json reads the body into a `Value`
//! (refusing a number beyond an `f64`), and the store binds that `Value`
//! as `jsonb` (PostgreSQL parses it written out again, never the sender's
//! text: `1e-16384`, too many decimals for its `numeric`, arrives as
//! `0.0`). Checked against the real PostgreSQL on both sides of the
//! boundaries.
#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers outside #[test] fns

use idv_tests::database::TestDatabase;
use shared::event::shape::{self, ShapeError};

/// Numbers near each boundary, on both sides, and ordinary ones.
fn literals() -> Vec<String> {
    let mut literals: Vec<String> = [
        "0",
        "-0",
        "1767225899",
        "-12.5",
        "123456789012345678901234567890",
        "1e308",
        "1.7976931348623157e308",
        "1.7976931348623158e308",
        "1.7976931348623159e308",
        "1.8e308",
        "-1E+309",
        "1e400",
        "1E400",
        "2e308",
        "-9e999",
        "123e307",
        "0.001e312",
        "0.000001e314",
        "1e-400",
        "0e131072",
        "0e131073",
        "0e1073741822",
        "0e1073741823",
        "0e-1073741822",
        "0e99999999999999999999",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    literals.push(f64::MAX.to_string());
    literals.push(format!("1{}", f64::MAX));
    literals.push(format!("{}9", f64::MAX));
    for exponent in [16_381, 16_382, 16_383, 16_384, 16_385] {
        literals.push(format!("1e-{exponent}"));
        literals.push(format!("0e-{exponent}"));
        literals.push(format!("0.5e-{exponent}"));
        literals.push(format!("-2.25E-{}", exponent - 1));
    }
    for decimals in [16_382, 16_383, 16_384] {
        literals.push(format!("1.{}", "0".repeat(decimals)));
        literals.push(format!("0.{}1e2", "0".repeat(decimals)));
    }
    literals
}

#[tokio::test]
async fn a_number_passes_the_shape_check_exactly_when_serde_and_jsonb_take_it() {
    let db = TestDatabase::new().await;
    let client = db.client().await;
    let (mut accepted, mut refused) = (0, 0);
    for literal in literals() {
        let body = format!(r#"{{"id":"evt_1","data":{{"object":{{"n":[{literal}]}}}}}}"#);
        let value = serde_json::from_str::<serde_json::Value>(&body);
        let serde_takes = value.is_ok();
        let jsonb_takes = match &value {
            // As the worker's store binds an event's payload.
            Ok(value) => client
                .query_one("SELECT $1::jsonb IS NOT NULL", &[value])
                .await
                .is_ok(),
            Err(_) => false,
        };
        let shown = &literal[..literal.len().min(40)];
        match shape::check(body.as_bytes()) {
            Ok(()) => {
                assert!(
                    serde_takes && jsonb_takes,
                    "{shown}… passed the check, serde {serde_takes}, jsonb {jsonb_takes}"
                );
                accepted += 1;
            }
            Err(error) => {
                assert_eq!(error, ShapeError::NumberOutOfRange, "{shown}…");
                assert!(
                    !(serde_takes && jsonb_takes),
                    "{shown}… refused, yet serde and jsonb both take it"
                );
                refused += 1;
            }
        }
    }
    // Both sides of the boundaries were tried.
    assert!(
        accepted >= 15 && refused >= 12,
        "{accepted} accepted, {refused} refused"
    );
}
