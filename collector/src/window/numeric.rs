//! A window's numbers, typed: a field's name beside how its value is read, so that the judge,
//! the exporter and the model read a window without JSON. The tables themselves are the
//! record's ([`super::record`]) and the system features' ([`super::system`]).

/// A numeric field of `T`: its name in the window record, and how its value is read (`None`:
/// a missing value, `null` in the JSON Lines).
pub type NumericField<T> = (&'static str, fn(&T) -> Option<f64>);

/// A field's value as the model reads it. A value that is not finite is missing, as it is in
/// the JSON Lines (serde_json writes NaN and infinities as `null`).
pub trait Numeric {
    fn number(self) -> Option<f64>;
}

impl Numeric for f64 {
    fn number(self) -> Option<f64> {
        self.is_finite().then_some(self)
    }
}

impl Numeric for u64 {
    fn number(self) -> Option<f64> {
        Some(self as f64)
    }
}

impl Numeric for u32 {
    fn number(self) -> Option<f64> {
        Some(f64::from(self))
    }
}

impl<T: Numeric> Numeric for Option<T> {
    fn number(self) -> Option<f64> {
        self.and_then(Numeric::number)
    }
}

/// `numeric_fields!(Type: a, b, …)`: the [`NumericField`]s of `Type`'s fields `a`, `b`, …
/// (written in name order).
macro_rules! numeric_fields {
    ($type:ty: $($field:ident),+ $(,)?) => {
        &[$((stringify!($field), |value: &$type| {
            $crate::window::numeric::Numeric::number(value.$field)
        })),+]
    };
}
pub(crate) use numeric_fields;
