//! The API server's CEL cost limit for device selectors: an expression whose worst-case cost exceeds
//! `CELSelectorExpressionMaxCost` (1,000,000 units) is refused when the claim or class is written
//! ("too complex, exceeds cost limit"), so the scheduler never runs it. kube-cel evaluates without
//! a budget, so explain refuses such expressions the same way before evaluating anything.
//!
//! The estimate walks the parsed expression as cel-go's `EstimateCost` does, in its units: one per
//! identifier, field selection and function call, ten per list built, thirty per map; every call
//! also reads its operands, a tenth of a unit per byte or element (cel-go's string traversal
//! factor); a comprehension (`all`, `exists`, `map`, `filter`, ...) costs its loop body once per
//! element of its range at the range's largest size. Unlike cel-go, which meters values built at
//! run time, a call is also charged for what it builds, by the largest size it can build: one
//! unit per list element (`lists.range(n)`: n, a literal; any other argument is unbounded;
//! `split`, `flatten`, `sort`), a tenth per byte of a string (`+`, `replace`, `join`, `format`,
//! `strings.quote`, `string()`); `distinct` and `sets.*` compare every pair; a `map` or `filter`
//! rebuilds its list at every step (kube-cel copies it); and `matches`, `find` and `findAll`
//! compile their pattern at every call (`regex.rs`). Sizes: a literal's own; anything read from
//! the device is bounded by the API's limits (32 attributes and capacities per device, 64-byte
//! names and strings); an element of a range, by the largest element the range can hold; a size
//! that cannot be bounded is unbounded, as the API server's estimator takes inputs without a
//! declared maximum. A `format` precision of 65,535 or more, or one in a format string that is not
//! a literal, is unbounded: Rust's formatter panics on it. So explain may refuse an expression
//! that the API server's estimate admits and cel-go would stop at run time.

use kube_cel::cel::IdedExpr;
use kube_cel::cel::common::ast::{ComprehensionExpr, EntryExpr, Expr, LiteralValue, operators};

mod calls;
mod regex;
#[cfg(test)]
mod tests;

/// `resource.k8s.io/v1` `CELSelectorExpressionMaxCost`.
pub const MAX_COST: u64 = 1_000_000;

/// The longest name or string read from a device (63-byte names and domains, 64-byte values),
/// and more than its 32 domains, attributes or capacities.
const DEVICE_STRING: u64 = 64;
/// All a device holds: 32 attributes and capacities with their domains, names and values, and
/// the driver's name, rounded up.
const DEVICE_TOTAL: u64 = 8192;
/// The longest rendering of one number (`format`'s `%f` of 1e308: 309 digits, sign and
/// fraction), and of any one value per unit of its size.
const NUMBER: u64 = 330;
/// The longest rendering of a value `join` takes that is not a string (Rust's debug format,
/// `Int(-9223372036854775808)`), per unit of its size.
const DEBUG: u64 = 32;
/// A size without a bound.
const UNBOUNDED: u64 = u64::MAX / 4;

/// How large a value can be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Size {
    /// Its own size: bytes of a string, elements of a list, entries of a map; 1 otherwise.
    len: u64,
    /// The whole size of any one element, entry key or value.
    item: u64,
    /// Its whole size, nested values included.
    total: u64,
    /// What compiling it (or any string in it) as a regular expression costs.
    regex: u64,
}

impl Size {
    const SCALAR: Size = Size::flat(1);
    const UNBOUNDED: Size = Size::flat(UNBOUNDED);

    /// A string of `len` bytes (or a value of that size), its text unknown.
    const fn flat(len: u64) -> Size {
        Size {
            len,
            item: 0,
            total: len,
            regex: regex::LIMIT,
        }
    }

    /// A collection of `len` elements, any one of size `item`, all of size `total`.
    const fn of(len: u64, item: u64, total: u64) -> Size {
        Size {
            len,
            item,
            total,
            regex: regex::LIMIT,
        }
    }

    /// One element of it (an iteration variable, an index).
    fn element(self) -> Size {
        Size {
            regex: self.regex,
            ..Size::of(self.item, self.item, self.item)
        }
    }

    /// Either.
    fn max(self, other: Size) -> Size {
        Size {
            len: self.len.max(other.len),
            item: self.item.max(other.item),
            total: self.total.max(other.total),
            regex: self.regex.max(other.regex),
        }
    }

    /// Both, concatenated.
    fn plus(self, other: Size) -> Size {
        Size::of(
            self.len.saturating_add(other.len),
            self.item.max(other.item),
            self.total.saturating_add(other.total),
        )
    }

    /// Kept within [`UNBOUNDED`], so that sums of unbounded sizes stay unbounded.
    fn capped(self) -> Size {
        Size {
            len: self.len.min(UNBOUNDED),
            item: self.item.min(UNBOUNDED),
            total: self.total.min(UNBOUNDED),
            regex: self.regex,
        }
    }
}

/// What is read from the device at `depth` selections below `device`: the device, its
/// `attributes` (a map of domains) or `driver`, one domain's map, one value.
fn device_path(depth: usize) -> Size {
    match depth {
        0 => Size::of(4, DEVICE_TOTAL, DEVICE_TOTAL),
        1 => Size::of(DEVICE_STRING, DEVICE_TOTAL, DEVICE_TOTAL),
        2 => Size::of(DEVICE_STRING, DEVICE_STRING, DEVICE_TOTAL),
        _ => Size::flat(DEVICE_STRING),
    }
}

/// The estimated worst-case cost of `expression`.
pub fn estimate(expression: &IdedExpr) -> u64 {
    walk(expression, &mut Vec::new()).0
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

/// The variables of the comprehensions around a node, innermost last, with their sizes.
type Scope = Vec<(String, Size)>;

fn add(a: u64, b: u64) -> u64 {
    a.saturating_add(b)
}

/// The cost of `e` and the largest size of its value.
fn walk(e: &IdedExpr, scope: &mut Scope) -> (u64, Size) {
    let (cost, size) = match &e.expr {
        Expr::Unspecified => (0, Size::UNBOUNDED),
        Expr::Literal(LiteralValue::String(s)) => (
            0,
            Size {
                regex: regex::cost(s),
                ..Size::flat(s.len() as u64)
            },
        ),
        Expr::Literal(LiteralValue::Bytes(b)) => (0, Size::flat(b.len() as u64)),
        Expr::Literal(_) => (0, Size::SCALAR),
        Expr::Ident(name) => (1, variable(name, scope)),
        Expr::Select(select) => {
            let (cost, operand) = walk(&select.operand, scope);
            let size = match (select.test, device_depth(e, scope)) {
                (true, _) => Size::SCALAR,
                (false, Some(depth)) => device_path(depth),
                (false, None) => operand.element(),
            };
            (add(cost, 1), size)
        }
        Expr::List(list) => literal(10, list.elements.len(), list.elements.iter(), scope),
        Expr::Map(map) => {
            let parts = map.entries.iter().flat_map(|entry| match &entry.expr {
                EntryExpr::MapEntry(m) => vec![&m.key, &m.value],
                EntryExpr::StructField(f) => vec![&f.value],
            });
            literal(30, map.entries.len(), parts, scope)
        }
        Expr::Struct(s) => {
            let cost = s
                .entries
                .iter()
                .filter_map(|entry| match &entry.expr {
                    EntryExpr::StructField(f) => Some(walk(&f.value, scope).0),
                    EntryExpr::MapEntry(_) => None,
                })
                .fold(40, add);
            (cost, Size::UNBOUNDED)
        }
        Expr::Call(call) => calls::call(e, call, scope),
        Expr::Comprehension(c) => comprehension(c, scope),
    };
    (cost.min(UNBOUNDED), size.capped())
}

/// A list or map literal of `n` entries made of `parts`: `base` (what building it costs) plus what
/// its parts cost; each item at most as large as its largest part.
fn literal<'a>(
    base: u64,
    n: usize,
    parts: impl Iterator<Item = &'a IdedExpr>,
    scope: &mut Scope,
) -> (u64, Size) {
    let n = n as u64;
    let mut cost = base;
    let mut size = Size {
        regex: 0,
        ..Size::of(n, 0, n)
    };
    for part in parts {
        let (c, s) = walk(part, scope);
        cost = add(cost, c);
        size.item = size.item.max(s.total);
        size.total = add(size.total, s.total);
        size.regex = size.regex.max(s.regex);
    }
    (cost, size)
}

/// A variable: a comprehension's, else `device`, else one CEL does not know (an error when run).
fn variable(name: &str, scope: &Scope) -> Size {
    match scope.iter().rev().find(|(n, _)| n == name) {
        Some((_, size)) => *size,
        None if name == "device" => device_path(0),
        None => Size::SCALAR,
    }
}

/// How many selections (`.x`, `[x]`) below `device` `e` is, if it reads the device.
fn device_depth(e: &IdedExpr, scope: &Scope) -> Option<usize> {
    match &e.expr {
        Expr::Ident(name) if name == "device" && !scope.iter().any(|(n, _)| n == name) => Some(0),
        Expr::Select(select) if !select.test => device_depth(&select.operand, scope).map(|d| d + 1),
        Expr::Call(call)
            if call.target.is_none()
                && [
                    operators::INDEX,
                    operators::OPT_INDEX,
                    operators::OPT_SELECT,
                ]
                .contains(&call.func_name.as_str()) =>
        {
            device_depth(call.args.first()?, scope).map(|d| d + 1)
        }
        _ => None,
    }
}

fn comprehension(c: &ComprehensionExpr, scope: &mut Scope) -> (u64, Size) {
    let (range_cost, range) = walk(&c.iter_range, scope);
    let (init_cost, init) = walk(&c.accu_init, scope);
    let bound = scope.len();
    scope.push((c.iter_var.clone(), range.element()));
    if let Some(second) = &c.iter_var2 {
        scope.push((second.clone(), range.element()));
    }
    // `map` and `filter` append a list to the accumulator at each step (`@result + [x]`); the
    // other macros keep a bool or a count.
    let accumulator = match appended(&c.loop_step, &c.accu_var) {
        Some(list) => {
            let (_, each) = walk(list, scope);
            Size::of(
                add(init.len, range.len.saturating_mul(each.len)),
                init.item.max(each.item),
                add(init.total, range.len.saturating_mul(each.total)),
            )
            .capped()
        }
        None => init,
    };
    scope.push((c.accu_var.clone(), accumulator));
    let per_element = add(walk(&c.loop_cond, scope).0, walk(&c.loop_step, scope).0);
    scope.truncate(bound);
    scope.push((c.accu_var.clone(), accumulator));
    let (result_cost, result) = walk(&c.result, scope);
    scope.truncate(bound);
    let cost = add(range_cost, init_cost)
        .saturating_add(range.len.saturating_mul(per_element))
        .saturating_add(result_cost);
    (cost, result)
}

/// The list `step` appends to the accumulator `accu` (`accu + [...]`), if any.
fn appended<'a>(step: &'a IdedExpr, accu: &str) -> Option<&'a IdedExpr> {
    let Expr::Call(call) = &step.expr else {
        return None;
    };
    match (call.func_name.as_str(), call.args.as_slice()) {
        (operators::ADD, [left, right]) if matches!(&left.expr, Expr::Ident(n) if n == accu) => {
            matches!(right.expr, Expr::List(_)).then_some(right)
        }
        (operators::CONDITIONAL, [_, then, otherwise]) => {
            appended(then, accu).or_else(|| appended(otherwise, accu))
        }
        _ => None,
    }
}
