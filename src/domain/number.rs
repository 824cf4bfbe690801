//! Whole numbers as JSON carries them: `2` and `2.0` are the same number (JSON Schema calls both
//! an integer), so an integer field takes either; `2.5` is refused as a wrong type.

use serde::de::{Error, Unexpected};
use serde::{Deserialize, Deserializer};

fn whole<'de, D: Deserializer<'de>, T: TryFrom<i64>>(d: D, expected: &'static str) -> Result<T, D::Error> {
    let n = serde_json::Number::deserialize(d)?;
    let value = match (n.as_i64(), n.as_f64()) {
        (Some(i), _) => i,
        // Within ±2^53 a float spells its integer exactly.
        (None, Some(f)) if f.fract() == 0.0 && f.abs() <= 9_007_199_254_740_992.0 => f as i64,
        (None, Some(f)) => return Err(D::Error::invalid_type(Unexpected::Float(f), &expected)),
        (None, None) => return Err(D::Error::invalid_type(Unexpected::Other("a number"), &expected)),
    };
    T::try_from(value).map_err(|_| D::Error::invalid_value(Unexpected::Signed(value), &expected))
}

/// For `i64` fields: `#[serde(deserialize_with = "whole_i64")]`.
pub fn whole_i64<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    whole(d, "i64")
}

/// For `u32` fields.
pub fn whole_u32<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    whole(d, "u32")
}

/// For `Option<i64>` fields (with `#[serde(default)]`): `null` is `None`.
pub fn opt_whole_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    #[derive(Deserialize)]
    struct Whole(#[serde(deserialize_with = "whole_i64")] i64);
    Ok(Option::<Whole>::deserialize(d)?.map(|w| w.0))
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;
    use serde_json::json;

    #[derive(Deserialize, Debug, PartialEq)]
    struct T {
        #[serde(deserialize_with = "super::whole_i64")]
        a: i64,
        #[serde(default, deserialize_with = "super::opt_whole_i64")]
        b: Option<i64>,
        #[serde(deserialize_with = "super::whole_u32")]
        c: u32,
    }

    #[test]
    fn whole_floats_are_integers() {
        let t: T = serde_json::from_value(json!({"a": -2486.0, "b": 3, "c": 12.0})).unwrap();
        assert_eq!(t, T { a: -2486, b: Some(3), c: 12 });
        let t: T = serde_json::from_value(json!({"a": 1, "b": null, "c": 1})).unwrap();
        assert_eq!(t.b, None);
        let t: T = serde_json::from_value(json!({"a": 1, "c": 1})).unwrap();
        assert_eq!(t.b, None);
        for bad in [
            json!({"a": 2.5, "c": 1}),
            json!({"a": "1", "c": 1}),
            json!({"a": 1, "c": -1}),
            json!({"a": 1e300, "c": 1}),
        ] {
            let err = serde_json::from_value::<T>(bad.clone()).unwrap_err().to_string();
            assert!(err.starts_with("invalid"), "{bad}: {err}");
        }
    }
}
