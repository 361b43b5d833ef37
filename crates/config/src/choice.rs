//! The closed sets of words a config may write (opt-out directions, filter operators, the
//! filter combinator) as serde enums, and [`Choice`], which reads one while keeping a value
//! outside the set, so that every bad value is reported with its position and the valid
//! values, together with the config's other problems, instead of stopping at the first.

use std::fmt;
use std::str::FromStr;

use serde::de::IntoDeserializer;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A closed set of words: each value has one spelling, written once (in [`closed_set!`]).
pub trait ClosedSet: Copy + Sized + 'static {
    /// Every spelling, in the order hints list them.
    const NAMES: &'static [&'static str];

    /// The value as the config writes it.
    fn as_str(self) -> &'static str;

    /// "one of a, b, c": the valid values, for hints.
    fn one_of() -> String {
        format!("one of {}", Self::NAMES.join(", "))
    }
}

/// A value written for a key of a closed set: one of the set, or the text written when it is
/// not (the validator reports it, located, with the valid values).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice<T> {
    /// A value of the set.
    Known(T),
    /// Anything else, as written.
    Unknown(String),
}

impl<T: ClosedSet> Choice<T> {
    /// The value, when it is one of the set.
    pub fn known(&self) -> Option<T> {
        match self {
            Choice::Known(value) => Some(*value),
            Choice::Unknown(_) => None,
        }
    }

    /// The text as written.
    pub fn as_str(&self) -> &str {
        match self {
            Choice::Known(value) => value.as_str(),
            Choice::Unknown(text) => text,
        }
    }
}

impl<'de, T> Deserialize<'de> for Choice<T>
where
    T: ClosedSet + Deserialize<'de>,
{
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let parsed: Result<T, serde::de::value::Error> =
            T::deserialize(text.as_str().into_deserializer());
        Ok(match parsed {
            Ok(value) => Choice::Known(value),
            Err(_) => Choice::Unknown(text),
        })
    }
}

impl<T: ClosedSet> Serialize for Choice<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// Why a word is not one of a closed set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{written}' is not {expected}")]
pub struct NotInSet {
    /// What was written.
    pub written: String,
    /// "one of ...".
    pub expected: String,
}

/// Defines a closed set: the enum, its spellings (written once), `Display`, `FromStr` and the
/// serde impls (a string of the set; anything else is serde's "unknown variant" error listing
/// the valid values).
macro_rules! closed_set {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $($(#[$variant_meta:meta])* $variant:ident = $text:literal,)+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$variant_meta])* $variant,)+
        }

        impl $name {
            /// Every value, in the order hints list them.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];
        }

        impl ClosedSet for $name {
            const NAMES: &'static [&'static str] = &[$($text,)+];

            fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = NotInSet;

            fn from_str(text: &str) -> Result<Self, NotInSet> {
                match text {
                    $($text => Ok($name::$variant),)+
                    _ => Err(NotInSet {
                        written: text.to_owned(),
                        expected: <$name as ClosedSet>::one_of(),
                    }),
                }
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                text.parse().map_err(|_| {
                    serde::de::Error::unknown_variant(&text, <$name as ClosedSet>::NAMES)
                })
            }
        }
    };
}

closed_set! {
    /// Which way opt-out flags flow (`optinout.direction`).
    pub enum Direction {
        /// Nothing moves.
        Disabled = "disabled",
        /// Dynamics 365 values are copied to Campaign.
        DynamicsToCampaign = "dynamics-to-campaign",
        /// Campaign values (from its opt-out exports) are copied to Dynamics 365.
        CampaignToDynamics = "campaign-to-dynamics",
        /// Both ways, with the conflict rule.
        Bidirectional = "bidirectional",
    }
}

impl Direction {
    /// Whether anything moves.
    pub fn is_active(self) -> bool {
        self != Direction::Disabled
    }

    /// Whether this direction reads Campaign's opt-out exports.
    pub fn reads_exports(self) -> bool {
        matches!(
            self,
            Direction::CampaignToDynamics | Direction::Bidirectional
        )
    }
}

closed_set! {
    /// A filter rule's comparison (`filters.rules[].op`), as the table mapper understands it.
    pub enum FilterOp {
        /// Equal.
        Eq = "eq",
        /// Not equal.
        Ne = "ne",
        /// Greater than.
        Gt = "gt",
        /// Greater than or equal.
        Ge = "ge",
        /// Less than.
        Lt = "lt",
        /// Less than or equal.
        Le = "le",
        /// Contains the value.
        Contains = "contains",
        /// Starts with the value.
        StartsWith = "startswith",
        /// Ends with the value.
        EndsWith = "endswith",
        /// The field is empty.
        Null = "null",
        /// The field is not empty.
        NotNull = "notnull",
    }
}

impl FilterOp {
    /// Whether a rule with this operator needs a `value`.
    pub fn needs_value(self) -> bool {
        !matches!(self, FilterOp::Null | FilterOp::NotNull)
    }
}

closed_set! {
    /// How a mapping's filter rules combine (`filters.combine`).
    pub enum Combine {
        /// Every rule must hold.
        And = "and",
        /// Any rule may hold.
        Or = "or",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each spelling parses back to its value and serialises as written, through serde too.
    fn round_trips<T>()
    where
        T: ClosedSet + FromStr + PartialEq + fmt::Debug + Serialize + for<'de> Deserialize<'de>,
    {
        for name in T::NAMES {
            let Ok(value) = name.parse::<T>() else {
                panic!("{name} does not parse");
            };
            assert_eq!(value.as_str(), *name);
            assert_eq!(serde_json::to_value(value).unwrap(), *name);
            let back: T = serde_json::from_value(serde_json::json!(name)).unwrap();
            assert_eq!(back, value);
            let choice: Choice<T> = serde_json::from_value(serde_json::json!(name)).unwrap();
            assert_eq!(choice, Choice::Known(value));
        }
        let error = serde_json::from_value::<T>(serde_json::json!("sideways"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("unknown variant `sideways`"), "{error}");
        assert!(error.contains(T::NAMES[T::NAMES.len() - 1]), "{error}");
        let choice: Choice<T> = serde_json::from_value(serde_json::json!("sideways")).unwrap();
        assert_eq!(choice, Choice::Unknown("sideways".to_owned()));
        assert_eq!(serde_json::to_value(choice).unwrap(), "sideways");
    }

    #[test]
    fn every_closed_set_round_trips_and_keeps_an_unknown_word() {
        round_trips::<Direction>();
        round_trips::<FilterOp>();
        round_trips::<Combine>();
        assert_eq!(Direction::ALL.len(), Direction::NAMES.len());
        assert_eq!(FilterOp::ALL.len(), FilterOp::NAMES.len());
        assert_eq!(Combine::ALL.len(), Combine::NAMES.len());
    }
}
