//! A device's capacity and its request policy (consumable capacity).

use crate::quantity::Quantity;

/// One capacity of a device, with its request policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capacity {
    /// The total.
    pub value: Quantity,
    /// The total as published (for CEL and the report).
    pub text: String,
    /// The name as the slice spells it (`memory` or `example.com/memory`): allocation results
    /// report consumed capacity under it.
    pub published_name: String,
    /// `requestPolicy.default`.
    pub default: Option<Quantity>,
    /// `requestPolicy.validValues`, ascending.
    pub valid_values: Vec<Quantity>,
    /// `requestPolicy.validRange`: min, max, step.
    pub valid_range: Option<(Quantity, Option<Quantity>, Option<Quantity>)>,
}

impl Capacity {
    /// A capacity without a request policy.
    pub fn plain(value: Quantity, text: &str) -> Capacity {
        Capacity {
            value,
            text: text.to_owned(),
            published_name: String::new(),
            default: None,
            valid_values: Vec::new(),
            valid_range: None,
        }
    }

    /// How much one allocation consumes when it asks for `requested` (None: did not ask), per the
    /// request policy: rounded up to the next valid value or range step; None when no valid amount fits.
    pub fn consumption(&self, requested: Option<Quantity>) -> Option<Quantity> {
        // Not asked for: the policy's default, else all of it.
        let wanted = requested.or(self.default).unwrap_or(self.value);
        let amount = if !self.valid_values.is_empty() {
            *self.valid_values.iter().find(|v| **v >= wanted)?
        } else if let Some((min, max, step)) = self.valid_range {
            let rounded = wanted.round_up_to_step(min, step.unwrap_or(Quantity::ZERO))?;
            if max.is_some_and(|max| rounded > max) {
                return None;
            }
            rounded
        } else {
            wanted
        };
        (amount <= self.value).then_some(amount)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quantity {
        Quantity::parse(s).unwrap()
    }

    #[test]
    fn consumption_follows_the_request_policy() {
        let mut cap = Capacity::plain(q("100Gi"), "100Gi");
        assert_eq!(
            cap.consumption(None),
            Some(q("100Gi")),
            "no policy, no request: all of it"
        );
        assert_eq!(cap.consumption(Some(q("10Gi"))), Some(q("10Gi")));
        assert_eq!(cap.consumption(Some(q("200Gi"))), None);

        cap.default = Some(q("1Gi"));
        cap.valid_values = vec![q("1Gi"), q("10Gi"), q("50Gi")];
        assert_eq!(cap.consumption(None), Some(q("1Gi")));
        assert_eq!(
            cap.consumption(Some(q("2Gi"))),
            Some(q("10Gi")),
            "rounded up"
        );
        assert_eq!(
            cap.consumption(Some(q("60Gi"))),
            None,
            "above every valid value"
        );

        cap.valid_values.clear();
        cap.valid_range = Some((q("1Gi"), Some(q("8Gi")), Some(q("1Gi"))));
        assert_eq!(cap.consumption(Some(q("2.5Gi"))), Some(q("3Gi")));
        assert_eq!(cap.consumption(Some(q("9Gi"))), None, "above max");
    }
}
