//! The API server's CEL cost limit for device selectors: an expression whose worst-case cost exceeds
//! `CELSelectorExpressionMaxCost` (1,000,000 units) is refused when the claim or class is written
//! ("too complex, exceeds cost limit"), so the scheduler never runs it. kube-cel evaluates without
//! a budget, so explain refuses such expressions the same way before evaluating anything.
//!
//! The estimate walks the parsed expression as cel-go's `EstimateCost` does, in the same units:
//! one per identifier, field selection and function call, ten per list built, thirty per map; a
//! comprehension (`all`, `exists`, `map`, `filter`, ...) costs its loop body once per element of
//! its range at the range's largest size. Sizes: a literal's own; anything read from the device is
//! bounded by the API's limits (32 attributes and capacities per device, 48 values in a list
//! attribute, 64-byte strings); a size that cannot be bounded is taken as unbounded, as the API
//! server's estimator does for inputs without a declared maximum.

use kube_cel::cel::IdedExpr;
use kube_cel::cel::common::ast::{EntryExpr, Expr, LiteralValue};

/// `resource.k8s.io/v1` `CELSelectorExpressionMaxCost`.
pub const MAX_COST: u64 = 1_000_000;

/// The largest collection read from a device: 48 values of a list-typed attribute (32 map
/// entries otherwise).
const DEVICE_COLLECTION: u64 = 48;
/// The longest string read from a device.
const DEVICE_STRING: u64 = 64;
/// A size without a bound.
const UNBOUNDED: u64 = u64::MAX / 4;

/// The estimated worst-case cost of `expression`.
pub fn estimate(expression: &IdedExpr) -> u64 {
    cost(expression, &mut vec!["device".to_owned()])
}

/// Whether `expression` builds a message (`Foo{...}`) or holds an unspecified node anywhere.
pub fn constructs_message(expression: &IdedExpr) -> bool {
    fn any<'a>(exprs: impl IntoIterator<Item = &'a IdedExpr>) -> bool {
        exprs.into_iter().any(constructs_message)
    }
    match &expression.expr {
        Expr::Struct(_) | Expr::Unspecified => true,
        Expr::Literal(_) | Expr::Ident(_) => false,
        Expr::Select(select) => constructs_message(&select.operand),
        Expr::Call(call) => any(call.target.as_deref().into_iter().chain(&call.args)),
        Expr::List(list) => any(&list.elements),
        Expr::Map(map) => map.entries.iter().any(|entry| match &entry.expr {
            EntryExpr::MapEntry(m) => any([&m.key, &m.value]),
            EntryExpr::StructField(f) => constructs_message(&f.value),
        }),
        Expr::Comprehension(c) => any([
            &c.iter_range,
            &c.accu_init,
            &c.loop_cond,
            &c.loop_step,
            &c.result,
        ]),
    }
}

/// Names bound to values read from the device: `device`, and the variables of comprehensions
/// over such values.
type Scope = Vec<String>;

fn sum<'a>(exprs: impl IntoIterator<Item = &'a IdedExpr>, scope: &mut Scope) -> u64 {
    exprs
        .into_iter()
        .map(|e| cost(e, scope))
        .fold(0, u64::saturating_add)
}

fn cost(e: &IdedExpr, scope: &mut Scope) -> u64 {
    match &e.expr {
        Expr::Unspecified | Expr::Literal(_) => 0,
        Expr::Ident(_) => 1,
        Expr::Select(select) => cost(&select.operand, scope).saturating_add(1),
        Expr::Call(call) => {
            let args = sum(call.target.as_deref().into_iter().chain(&call.args), scope);
            // String functions scan their input: cost grows with its length (cel-go charges
            // 0.1 per byte; a device string is at most 64 bytes).
            let scan = match call.func_name.as_str() {
                "matches" | "contains" | "startsWith" | "endsWith" | "split" | "replace"
                | "lowerAscii" | "upperAscii" | "indexOf" | "lastIndexOf" | "find" | "findAll" => {
                    call.target
                        .as_deref()
                        .map_or(1, |t| size(t, scope).min(UNBOUNDED) / 10 + 1)
                }
                _ => 1,
            };
            args.saturating_add(scan)
        }
        Expr::List(list) => sum(&list.elements, scope).saturating_add(10),
        Expr::Map(map) => map
            .entries
            .iter()
            .map(|entry| match &entry.expr {
                EntryExpr::MapEntry(m) => cost(&m.key, scope).saturating_add(cost(&m.value, scope)),
                EntryExpr::StructField(f) => cost(&f.value, scope),
            })
            .fold(30, u64::saturating_add),
        Expr::Struct(s) => s
            .entries
            .iter()
            .map(|entry| match &entry.expr {
                EntryExpr::MapEntry(m) => cost(&m.key, scope).saturating_add(cost(&m.value, scope)),
                EntryExpr::StructField(f) => cost(&f.value, scope),
            })
            .fold(40, u64::saturating_add),
        Expr::Comprehension(c) => {
            let range = cost(&c.iter_range, scope);
            let elements = size(&c.iter_range, scope);
            let bound = scope.len();
            if rooted_at_device(&c.iter_range, scope) {
                scope.push(c.iter_var.clone());
                scope.extend(c.iter_var2.clone());
            }
            let per_element = cost(&c.loop_cond, scope).saturating_add(cost(&c.loop_step, scope));
            scope.truncate(bound);
            range
                .saturating_add(cost(&c.accu_init, scope))
                .saturating_add(elements.saturating_mul(per_element))
                .saturating_add(cost(&c.result, scope))
        }
    }
}

/// The largest size (elements, entries or bytes) `e` can have.
fn size(e: &IdedExpr, scope: &Scope) -> u64 {
    match &e.expr {
        Expr::Literal(LiteralValue::String(s)) => s.len() as u64,
        Expr::Literal(LiteralValue::Bytes(b)) => b.len() as u64,
        Expr::Literal(_) => 1,
        Expr::List(list) => list.elements.len() as u64,
        Expr::Map(map) => map.entries.len() as u64,
        // A map, list or string read from the device.
        Expr::Ident(_) | Expr::Select(_) | Expr::Call(_) if rooted_at_device(e, scope) => {
            match &e.expr {
                Expr::Call(call) if call.func_name == "split" => DEVICE_STRING + 1,
                _ => DEVICE_COLLECTION.max(DEVICE_STRING),
            }
        }
        Expr::Call(call) if call.func_name == "split" => call
            .target
            .as_deref()
            .map_or(UNBOUNDED, |t| size(t, scope).saturating_add(1)),
        // `map` and `filter` give at most as many elements as they iterate over.
        Expr::Comprehension(c) => size(&c.iter_range, scope),
        _ => UNBOUNDED,
    }
}

/// Whether `e` reads from `device` (`device.attributes["d"].x`, `device.capacity[...]`).
fn rooted_at_device(e: &IdedExpr, scope: &Scope) -> bool {
    match &e.expr {
        Expr::Ident(name) => scope.contains(name),
        Expr::Select(select) => rooted_at_device(&select.operand, scope),
        Expr::Call(call) => match call.func_name.as_str() {
            // Indexing, and functions of one device value.
            "_[_]" | "split" | "lowerAscii" | "upperAscii" | "trim" => call
                .target
                .as_deref()
                .or(call.args.first())
                .is_some_and(|t| rooted_at_device(t, scope)),
            _ => false,
        },
        _ => false,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use kube_cel::cel::Program;

    fn cost_of(expression: &str) -> u64 {
        estimate(Program::compile(expression).unwrap().expression())
    }

    #[test]
    fn nested_comprehensions_multiply_and_simple_selectors_are_cheap() {
        let ten = "[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]";
        let nested = |depth: usize| {
            let vars = ["a", "b", "c", "d", "e", "f", "g", "h"];
            let mut text = "true".to_owned();
            for v in vars.iter().take(depth).rev() {
                text = format!("{ten}.all({v}, {text})");
            }
            text
        };
        // Issue 25 item 19: 8 nested `.all()` over 10-element lists (252 bytes) ran for minutes.
        assert!(cost_of(&nested(8)) > MAX_COST * 10);
        assert!(cost_of(&nested(2)) < 10_000);
        assert!(cost_of(&nested(6)) > MAX_COST, "{}", cost_of(&nested(6)));
        assert!(cost_of(r#"device.driver == "gpu.example.com""#) < 10);
        assert!(cost_of(r#"device.attributes["dra.net"].ifName.matches("^eth[0-9]+$")"#) < 100);
        // Over the device's attributes: bounded by the API's limits.
        assert!(cost_of(r#"device.attributes["x"].all(k, k.startsWith("a"))"#) < 1_000);
        // Nested over what the device holds: bounded.
        assert!(
            cost_of(r#"device.attributes.all(d, device.attributes[d].all(k, k.startsWith("x")))"#)
                < MAX_COST
        );
        // Over a list of no known size (a string of no known length, split): unbounded.
        assert!(
            cost_of(r#"[1].map(x, string(x)).all(s, (s + s).split("").all(c, c == s))"#) > MAX_COST
        );
    }
}
