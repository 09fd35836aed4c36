//! Axis values as text (records.csv, run.json, `[scoring] baseline`), compared the one way
//! every layer compares them. A leaf module: it imports no layer.

/// Equal as text or as numbers (`0` and `0.0`).
pub fn values_match(a: &str, b: &str) -> bool {
    a == b || matches!((a.parse::<f64>(), b.parse::<f64>()), (Ok(x), Ok(y)) if x == y)
}

#[cfg(test)]
mod tests {
    use super::values_match;

    #[test]
    fn axis_values_match_as_text_or_as_numbers() {
        assert!(values_match("0", "0.0") && values_match("none", "none"));
        assert!(values_match("1e-1", "0.1"));
        assert!(!values_match("0.5", "0.50001") && !values_match("none", "image"));
    }
}
