//! The record's numeric fields, typed: how the judge, the exporter and the model read a
//! window's numbers without JSON.

use super::WindowRecord;
use crate::window::{
    numeric::{NumericField, numeric_fields},
    system::SystemFeatures,
};

/// Two lists of (name, …) in name order as one, in name order.
fn merge_by_name<T>(
    a: impl Iterator<Item = (&'static str, T)>,
    b: impl Iterator<Item = (&'static str, T)>,
) -> impl Iterator<Item = (&'static str, T)> {
    let (mut a, mut b) = (a.peekable(), b.peekable());
    std::iter::from_fn(move || match (a.peek(), b.peek()) {
        (Some(x), Some(y)) if y.0 < x.0 => b.next(),
        (Some(_), _) => a.next(),
        (None, _) => b.next(),
    })
}

impl WindowRecord {
    /// The record's own numeric fields (the flattened [`SystemFeatures`] have theirs), in
    /// name order.
    const NUMERIC_FIELDS: &[NumericField<Self>] = numeric_fields!(WindowRecord:
        block_discard_ops_per_s,
        block_errors_per_s,
        block_flush_ops_per_s,
        block_inflight,
        block_latency_mean_us,
        block_latency_p50_us,
        block_latency_p90_us,
        block_latency_p99_us,
        block_read_bytes_per_s,
        block_read_ops_per_s,
        block_slow_io_events,
        block_write_bytes_per_s,
        block_write_ops_per_s,
        cpu_throttled_cgroups,
        cpu_throttled_ms_per_s,
        cpu_throttled_periods_per_s,
        events_lost,
        psi_cpu_some_pct,
        psi_io_full_pct,
        psi_io_some_pct,
        psi_memory_full_pct,
        psi_memory_some_pct,
        schema,
        unix_ms,
        window_s,
    );

    /// Every numeric top-level field with its value (`None`: missing), in name order: the
    /// numbers (and `null`s) of the record's JSON, read without JSON. Features and bookkeeping
    /// alike (see `model::input::NOT_FEATURES`); `partial`, strings and the per-device and
    /// per-program maps are not numbers of the window.
    pub fn fields(&self) -> impl Iterator<Item = (&'static str, Option<f64>)> + '_ {
        merge_by_name(
            Self::NUMERIC_FIELDS
                .iter()
                .map(move |(name, value)| (*name, value(self))),
            SystemFeatures::NUMERIC_FIELDS
                .iter()
                .map(move |(name, value)| (*name, value(&self.system))),
        )
    }

    /// The names of [`WindowRecord::fields`], in name order: what every record has.
    pub fn field_names() -> impl Iterator<Item = &'static str> {
        merge_by_name(
            Self::NUMERIC_FIELDS.iter().map(|(name, _)| (*name, ())),
            SystemFeatures::NUMERIC_FIELDS
                .iter()
                .map(|(name, _)| (*name, ())),
        )
        .map(|(name, ())| name)
    }

    /// The features this collector produces: [`WindowRecord::field_names`] without the
    /// bookkeeping (`model::input::NOT_FEATURES`). What a model may ask for.
    pub fn feature_names() -> impl Iterator<Item = &'static str> {
        Self::field_names().filter(|name| model::input::is_feature(name))
    }

    /// One field: `None` when the record has no such numeric field, `Some(None)` when it is
    /// missing in this window.
    fn numeric(&self, name: &str) -> Option<Option<f64>> {
        if let Ok(index) = Self::NUMERIC_FIELDS.binary_search_by(|(own, _)| (*own).cmp(name)) {
            return Some((Self::NUMERIC_FIELDS[index].1)(self));
        }
        SystemFeatures::NUMERIC_FIELDS
            .binary_search_by(|(own, _)| (*own).cmp(name))
            .ok()
            .map(|index| (SystemFeatures::NUMERIC_FIELDS[index].1)(&self.system))
    }
}

/// The model reads a record directly: a field the collector could not read this window is
/// missing ([`model::WindowFields::is_missing`]), one it never has is absent.
impl model::WindowFields for WindowRecord {
    fn field(&self, name: &str) -> Option<f64> {
        self.numeric(name).flatten()
    }

    fn is_missing(&self, name: &str) -> bool {
        matches!(self.numeric(name), Some(None))
    }

    fn feature_fields(&self) -> Vec<String> {
        self.fields()
            .filter(|(name, value)| value.is_some() && model::input::is_feature(name))
            .map(|(name, _)| name.to_string())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_typed_fields_are_the_numbers_of_the_json() {
        use model::WindowFields as _;
        let record = WindowRecord::populated();
        let json = serde_json::to_value(&record).unwrap();
        let from_json: Vec<(String, Option<f64>)> = json
            .as_object()
            .unwrap()
            .iter()
            .filter(|(_, value)| value.is_number() || value.is_null())
            .map(|(name, value)| (name.clone(), value.as_f64()))
            .collect();
        let typed: Vec<(String, Option<f64>)> = record
            .fields()
            .map(|(name, value)| (name.to_string(), value))
            .collect();
        // Same names, same order (name order, as the exporter lists them), same values.
        assert_eq!(typed, from_json);
        assert!(
            WindowRecord::field_names().eq(typed.iter().map(|(name, _)| name.as_str())),
            "field_names lists the fields"
        );
        assert!(
            WindowRecord::field_names()
                .zip(WindowRecord::field_names().skip(1))
                .all(|(a, b)| a < b),
            "the field tables are in name order (binary search relies on it)"
        );
        let mut nulls = 0;
        for (name, value) in json.as_object().unwrap() {
            if model::input::NOT_FEATURES.contains(&name.as_str()) {
                continue;
            }
            if value.is_null() {
                nulls += 1;
                assert!(record.is_missing(name), "{name} is null: missing");
                assert_eq!(record.field(name), None, "{name}");
            } else if let Some(number) = value.as_f64() {
                assert_eq!(record.field(name), Some(number), "{name}");
                assert!(!record.is_missing(name), "{name}");
            } else {
                assert_eq!(record.field(name), None, "{name} is not a number");
                assert!(!record.is_missing(name), "{name} is not a missing number");
            }
        }
        assert_eq!(nulls, 5, "four missing values and a NaN");
        // An absent field is neither a number nor missing.
        assert_eq!(record.field("no_such_field"), None);
        assert!(!record.is_missing("no_such_field"));
        // The features a baseline learns from: what `model` reads from the JSON Lines.
        let values = model::input::Row::from_json(&json, 1).unwrap().values;
        assert_eq!(
            record.feature_fields(),
            values.keys().cloned().collect::<Vec<_>>()
        );
        assert!(
            WindowRecord::feature_names().eq(WindowRecord::empty()
                .feature_fields()
                .iter()
                .map(String::as_str)),
            "an empty record has every feature"
        );
    }
}
