#![allow(clippy::unwrap_used)]

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
    assert!(cost_of(r#"device.driver == "gpu.example.com""#) < 20);
    assert!(cost_of(r#"device.attributes["dra.net"].ifName.matches("^eth[0-9]+$")"#) < 100);
    // Over the device's attributes: bounded by the API's limits.
    assert!(cost_of(r#"device.attributes["x"].all(k, k.startsWith("a"))"#) < 1_000);
    // Nested over what the device holds: bounded.
    assert!(
        cost_of(r#"device.attributes.all(d, device.attributes[d].all(k, k.startsWith("x")))"#)
            < MAX_COST
    );
    // Over the elements of a known list: as large as its largest element.
    assert!(cost_of(&format!("{ten}.all(a, {ten}.all(b, a + b > 0))")) < 10_000);
    assert!(cost_of(r#"["ab", "c"].all(s, (s + s).split("").all(c, c == s))"#) < 1_000);
}

/// Calls that build values are charged by what they can build, so that a small expression that
/// builds a huge value (`lists.range(100000000)` took 52 s and 7.8 GB in kube-cel, which has no
/// budget at run time) is refused before it runs, as any other over the limit.
#[test]
fn building_calls_are_charged_by_what_they_build() {
    let over = |e: &str| assert!(cost_of(e) > MAX_COST, "{e}: {}", cost_of(e));
    let under = |e: &str| assert!(cost_of(e) < MAX_COST, "{e}: {}", cost_of(e));
    // `lists.range(n)`: n elements, a literal; any other n has no bound.
    over("lists.range(100000000).size() > 0");
    over("lists.range(1000000000) == []");
    over("lists.range(1000).all(i, lists.range(1000).all(j, i < j))");
    over("lists.range(device.attributes['x'].n).size() > 0");
    under("lists.range(10).all(i, i < 10)");
    // A string grows by each replace, join or concatenation.
    let doubling = format!("'ab'{}.size() > 0", ".replace('a', 'aa')".repeat(30));
    over(&doubling);
    under("device.attributes['x'].name.replace('-', '_') == 'a_b'");
    over("lists.range(1000).all(i, lists.range(1000).join('-').size() > 0)");
    under("device.attributes['x'].name.split(',').join('-') == 'a-b'");
    // A map or filter copies its list at each step, and the step's elements can be large.
    over("lists.range(5000).map(x, x).size() > 0");
    over("lists.range(1000).map(x, lists.range(1000)).size() > 0");
    under("lists.range(100).map(x, x * 2).size() == 100");
    // An element of a large list is large, a comprehension variable too.
    over("[lists.range(100000)].all(l, lists.range(100).all(i, i in l))");
    over("[lists.range(100000)].all(l, [l, l, l, l, l, l, l, l, l, l].flatten().size() > 0)");
    // Quadratic: every pair compared.
    over("lists.range(10000).distinct().size() > 0");
    over("sets.contains(lists.range(10000), lists.range(10000))");
    under("sets.contains(['a', 'b'], [device.attributes['x'].name])");
    // `format`: a precision is as many digits; Rust's formatter panics at 65,535 and above.
    over("'%.900000f'.format([1.0]).size() > 0");
    over("'%.65535e'.format([1.0]).size() > 0");
    over("device.attributes['x'].name.format([1.0]) == ''");
    under("'%s-%d'.format([device.attributes['x'].name, 1]) == 'a-1'");
    over("lists.range(10000).map(x, '%s'.format([lists.range(100)])).size() > 0");
    // `strings.quote`, `string()` and `+` of large values.
    over("lists.range(1000).all(x, strings.quote(string(lists.range(1000))).size() > 0)");
    over("[lists.range(200000)].all(l, (l + l + l + l + l + l + l + l + l + l).size() > 0)");
}

/// kube-cel compiles a pattern at every call, and counted repetitions of Unicode classes make
/// large programs (`'a'.matches('\\w{200}')` took 60 ms, 100 of them 6 s).
#[test]
fn regular_expressions_are_charged_by_what_compiling_them_builds() {
    let over = |e: &str| assert!(cost_of(e) > MAX_COST, "{e}: {}", cost_of(e));
    let under = |e: &str| assert!(cost_of(e) < MAX_COST, "{e}: {}", cost_of(e));
    let ten = "[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]";
    under(r"'a'.matches('\\w{200}')");
    over(&format!(
        r"{ten}.all(i, {ten}.all(j, !'a'.matches('\\w{{200}}')))"
    ));
    over(&format!(
        r"{ten}.all(i, 'a'.find('(\\pL{{10}}){{10}}') == '')"
    ));
    over(&format!(
        r"['\\d{{1000}}', 'a'].exists(p, {ten}.exists(i, 'x'.matches(p)))"
    ));
    under(r#"["^mlx", "^ib"].exists(p, device.attributes["x"].name.matches(p))"#);
    under(
        r"device.attributes['x'].uuid.matches('^[a-f0-9]{8}-[a-f0-9]{4}-[a-f0-9]{4}-[a-f0-9]{4}-[a-f0-9]{12}$')",
    );
    // A pattern that is not a literal may cost as much as any: one, not ten.
    under("'a'.matches(device.attributes['x'].pattern)");
    over(&format!(
        "{ten}.all(i, 'a'.matches(device.attributes['x'].pattern))"
    ));
    assert!(cost_of(r"'a'.matches('(a{10}){10}')") < cost_of(r"'a'.matches('(a{10}){100}')"));
}
