//! Canonical JSON (RFC 8785, JCS): the byte form plans are hashed in. Keys sorted by UTF-16
//! code units, strings escaped minimally, numbers as ECMAScript prints them. Numbers are
//! delegated to `serde_json_canonicalizer`; the structure is written here, because that
//! crate re-parses every object key and is too slow for plans with 10,000 steps.

use serde::Serialize;
use serde_json::Value;

/// The canonical JSON text of `value`.
pub fn to_string<T: Serialize + ?Sized>(value: &T) -> String {
    let v = serde_json::to_value(value).expect("plans and events are representable as JSON");
    let mut out = String::with_capacity(1024);
    write(&v, &mut out);
    out
}

fn write(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            // Integers that a double holds exactly print as themselves; everything else the
            // ECMAScript way, which the crate implements.
            match n.as_i64() {
                Some(i) if i.unsigned_abs() <= 1 << 53 => out.push_str(&i.to_string()),
                _ => out.push_str(&serde_json_canonicalizer::to_string(n).expect("finite number")),
            }
        }
        Value::String(s) => out.push_str(&serde_json::to_string(s).expect("strings serialise")),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::to_string(k).expect("strings serialise"));
                out.push(':');
                write(v, out);
            }
            out.push('}');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|i| json!(i)),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| json!(f)),
            "\\PC{0,12}".prop_map(Value::String),
            "[\\x00-\\x1f\"\\\\/\u{7f}\u{e9}\u{1f600}\u{ffff}]{0,6}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map("\\PC{0,6}|[\u{e9}\u{1f600}\u{ff61}a-c]{1,3}", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn matches_the_reference_implementation(v in arb_json()) {
            prop_assert_eq!(to_string(&v), serde_json_canonicalizer::to_string(&v).unwrap());
        }
    }

    #[test]
    fn rfc_8785_examples() {
        let v = json!({"numbers": [333_333_333.333_333_3, 1E30, 4.50, 2e-3, 0.000000000000000000000000001], "string": "\u{20ac}$\u{000F}\u{000a}A'\u{0042}\u{0022}\u{005c}\\\"/", "literals": [null, true, false]});
        assert_eq!(
            to_string(&v),
            r#"{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],"string":"€$\u000f\nA'B\"\\\\\"/"}"#
        );
        // Keys sort by UTF-16 code units: U+FF61 (one unit) after U+1F600 (surrogate pair 0xD83D…).
        assert_eq!(
            to_string(&json!({"\u{ff61}": 1, "\u{1f600}": 2, "a": 3})),
            "{\"a\":3,\"\u{1f600}\":2,\"\u{ff61}\":1}"
        );
    }
}
