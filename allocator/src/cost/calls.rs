//! What a call costs: reading its operands, and what it builds (`cost.rs`).

use kube_cel::cel::IdedExpr;
use kube_cel::cel::common::ast::{CallExpr, Expr, LiteralValue, operators};

use super::{DEBUG, NUMBER, Scope, Size, UNBOUNDED, add, device_depth, device_path, walk};

/// The cost of the call `e` and the largest size of its value.
pub(super) fn call(e: &IdedExpr, call: &CallExpr, scope: &mut Scope) -> (u64, Size) {
    // `lists.range(n)` parses as a method `range` of `lists`; kube-cel calls the function
    // `lists.range` wherever one of that name exists, whatever `lists` is.
    let qualified = match call.target.as_deref().map(|t| &t.expr) {
        Some(Expr::Ident(prefix)) => Some(format!("{prefix}.{}", call.func_name))
            .filter(|name| QUALIFIED.contains(&name.as_str())),
        _ => None,
    };
    let (name, target) = match &qualified {
        Some(name) => (name.as_str(), None),
        None => (call.func_name.as_str(), call.target.as_deref()),
    };
    let mut cost: u64 = 1;
    let mut operands = Vec::new();
    for operand in target.into_iter().chain(&call.args) {
        let (c, size) = walk(operand, scope);
        cost = add(cost, c);
        operands.push(size);
    }
    let picks = [
        operators::INDEX,
        operators::OPT_INDEX,
        operators::OPT_SELECT,
        operators::CONDITIONAL,
    ];
    // A call reads its operands (an index or a conditional only picks one).
    if !picks.contains(&name) {
        let read = operands.iter().fold(0, |sum, s| add(sum, s.len));
        cost = add(cost, read / 10);
    }
    // What a method is called on, or a function's first argument; then the others.
    let (this, rest) = match operands.split_first() {
        Some((this, rest)) => (*this, rest),
        None => (Size::SCALAR, &[][..]),
    };
    let arg = |i: usize| rest.get(i).copied().unwrap_or(Size::SCALAR);
    // A list of `size` elements built, or a string of `len` bytes.
    let list = |size: Size| (size.len, size);
    let string = |len: u64| (len / 10, Size::flat(len));
    let (work, size) = match name {
        operators::INDEX | operators::OPT_INDEX | operators::OPT_SELECT => {
            let size = device_depth(e, scope).map_or(this.element(), device_path);
            (0, size)
        }
        operators::CONDITIONAL => (0, arg(0).max(arg(1))),
        operators::ADD => {
            let size = this.plus(arg(0));
            (size.len / 10, size)
        }
        "lists.range" => match literal_int(call.args.first()) {
            Some(n) => list(Size::of(n, 1, n.saturating_mul(2))),
            None => (UNBOUNDED, Size::UNBOUNDED),
        },
        "split" => list(Size::of(
            add(this.len, 1),
            this.len,
            add(this.len.saturating_mul(2), 1),
        )),
        "findAll" => {
            let (work, size) = list(Size::of(
                add(this.len, 1),
                this.len,
                add(this.len.saturating_mul(2), 1),
            ));
            (add(work, arg(0).regex), size)
        }
        "matches" => (arg(0).regex, Size::SCALAR),
        "find" => (add(this.len / 10, arg(0).regex), Size::flat(this.len)),
        "flatten" => list(Size::of(this.total, this.item, this.total)),
        "reverse" | "slice" => list(this),
        "sort" => {
            let comparisons = this
                .len
                .saturating_mul(u64::from(u64::BITS - this.len.leading_zeros()));
            (add(this.len, comparisons / 10), this)
        }
        "distinct" => (add(this.len, this.len.saturating_mul(this.len) / 10), this),
        "sets.contains" | "sets.intersects" | "sets.equivalent" => {
            (this.len.saturating_mul(arg(0).len) / 5, Size::SCALAR)
        }
        "replace" => string(add(this.len, add(this.len, 1).saturating_mul(arg(1).len))),
        "join" => string(add(
            this.total.saturating_mul(DEBUG),
            this.len.saturating_mul(arg(0).len),
        )),
        "format" => string(format_len(target.or(call.args.first()), arg(0))),
        "strings.quote" => string(add(this.len.saturating_mul(2), 2)),
        "lowerAscii" | "upperAscii" | "trim" | "substring" | "bytes" => string(this.len),
        "string" => string(this.len.saturating_mul(3).max(NUMBER)),
        "charAt" => (0, Size::flat(4)),
        "url" | "getScheme" | "getHost" | "getHostname" | "getEscapedPath" | "getPort" => {
            (0, Size::flat(this.len))
        }
        "getQuery" => (0, Size::of(this.len, this.len, this.len.saturating_mul(2))),
        "first" | "last" => (0, this.element()),
        "min" | "max" => {
            let size = operands
                .iter()
                .fold(Size::SCALAR, |m, s| m.max(*s).max(s.element()));
            (0, size)
        }
        "optional.of" | "optional.ofNonZeroValue" | "value" | "dyn" => (0, this),
        "or" | "orValue" => (0, this.max(arg(0))),
        // Everything else gives a number, a bool, or an object of a few fields (a quantity, a
        // semantic version, an IP address or CIDR).
        _ => (0, Size::SCALAR),
    };
    (add(cost, work), size)
}

/// The functions of a qualified name that kube-cel registers (with the features explain enables).
const QUALIFIED: &[&str] = &[
    "lists.range",
    "sets.contains",
    "sets.equivalent",
    "sets.intersects",
    "strings.quote",
    "optional.none",
    "optional.of",
    "optional.ofNonZeroValue",
    "ip.isCanonical",
    "math.ceil",
    "math.floor",
    "math.round",
    "math.trunc",
    "math.abs",
    "math.sign",
    "math.isInf",
    "math.isNaN",
    "math.isFinite",
    "math.bitAnd",
    "math.bitOr",
    "math.bitXor",
    "math.bitNot",
    "math.bitShiftLeft",
    "math.bitShiftRight",
    "math.sqrt",
    "math.greatest",
    "math.least",
];

/// A non-negative integer literal.
fn literal_int(e: Option<&IdedExpr>) -> Option<u64> {
    match &e?.expr {
        Expr::Literal(LiteralValue::Int(n)) => u64::try_from(**n).ok(),
        Expr::Literal(LiteralValue::UInt(n)) => Some(**n),
        _ => None,
    }
}

/// The longest string `format` makes of the format string `text` and arguments of `args`: the
/// text, each verb's number and precision, every argument rendered. Rust's formatter panics on a
/// precision of 65,535 or more, and a format string that is not a literal may hold one.
fn format_len(text: Option<&IdedExpr>, args: Size) -> u64 {
    let Some(Expr::Literal(LiteralValue::String(text))) = text.map(|t| &t.expr) else {
        return UNBOUNDED;
    };
    let mut len = text.len() as u64;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            continue;
        }
        match chars.peek() {
            Some('%') => {
                chars.next();
                continue;
            }
            Some('.') => {
                chars.next();
                let mut precision: u64 = 0;
                while let Some(digit) = chars.peek().and_then(|d| d.to_digit(10)) {
                    chars.next();
                    precision = precision * 10 + u64::from(digit);
                    if precision >= 65_535 {
                        return UNBOUNDED;
                    }
                }
                len = add(len, precision);
            }
            _ => {}
        }
        len = add(len, NUMBER);
    }
    add(len, args.total.saturating_mul(NUMBER))
}
