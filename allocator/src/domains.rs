//! Unknown attribute domains. Kubernetes hands a selector `device.attributes` and
//! `device.capacity` as maps whose lookup never misses (`newStringInterfaceMapWithDefault`,
//! `cel/compile.go`): a domain the device does not have is an empty map, whatever its name. kube-cel's
//! maps have no default, so each lookup of a domain in `device.attributes` or `device.capacity`
//! (`[d]`, `.d`, `[?d]`, `?.d`) is rewritten into a call of [`DOMAIN`], which answers the same: the
//! domain's map, or an empty one. Only lookups change, as upstream: `d in device.attributes`,
//! `size(device.attributes)` and iteration see the device's own domains, and `has(device.attributes.d)`
//! is true (the lookup finds something).

use std::collections::HashMap;

use kube_cel::cel::common::ast::{CallExpr, EntryExpr, Expr, IdedExpr, LiteralValue, operators};
use kube_cel::cel::objects::{Key, Value};
use kube_cel::cel::{ExecutionError, ResolveResult};

/// The function a domain lookup becomes (`@` cannot be written in CEL, so no selector calls it).
pub(crate) const DOMAIN: &str = "@dra.domain";

/// `map[key]`, or an empty map where `map` has no `key`.
pub(crate) fn domain(map: Value, key: Value) -> ResolveResult {
    match (&map, &key) {
        (Value::Map(map), Value::String(name)) => Ok(map
            .map
            .get(&Key::String(name.clone()))
            .cloned()
            .unwrap_or_else(|| Value::from(HashMap::<String, Value>::new()))),
        _ => Err(ExecutionError::UnsupportedKeyType(key)),
    }
}

/// Rewrites every lookup of a domain in `device.attributes` or `device.capacity` of `e` into a
/// call of [`DOMAIN`]; `shadowed`: a comprehension variable named `device` hides the device here.
pub(crate) fn rewrite(e: &mut IdedExpr, shadowed: bool) {
    let id = e.id;
    match &mut e.expr {
        Expr::Select(select) if !shadowed && is_domains(&select.operand) => {
            let base = std::mem::take(select.operand.as_mut());
            e.expr = match select.test {
                // `has(device.attributes.d)`: upstream's lookup always finds.
                true => Expr::Literal(LiteralValue::Boolean(true.into())),
                false => lookup(base, name(id, &select.field)),
            };
        }
        Expr::Call(call)
            if !shadowed
                && call.target.is_none()
                && call.args.len() == 2
                && [
                    operators::INDEX,
                    operators::OPT_INDEX,
                    operators::OPT_SELECT,
                ]
                .contains(&call.func_name.as_str())
                && call.args.first().is_some_and(is_domains) =>
        {
            let optional = call.func_name != operators::INDEX;
            let mut args = std::mem::take(&mut call.args).into_iter();
            let (Some(base), Some(mut key)) = (args.next(), args.next()) else {
                return;
            };
            rewrite(&mut key, shadowed);
            let found = lookup(base, key);
            e.expr = match optional {
                // `device.attributes[?d]`: always present upstream.
                true => Expr::Call(CallExpr {
                    func_name: "optional.of".to_owned(),
                    target: None,
                    args: vec![IdedExpr { id, expr: found }],
                }),
                false => found,
            };
        }
        Expr::Unspecified | Expr::Literal(_) | Expr::Ident(_) => {}
        Expr::Select(select) => rewrite(&mut select.operand, shadowed),
        Expr::Call(call) => {
            for arg in call.target.as_deref_mut().into_iter().chain(&mut call.args) {
                rewrite(arg, shadowed);
            }
        }
        Expr::List(list) => {
            for element in &mut list.elements {
                rewrite(element, shadowed);
            }
        }
        Expr::Map(map) => {
            for entry in &mut map.entries {
                match &mut entry.expr {
                    EntryExpr::MapEntry(m) => {
                        rewrite(&mut m.key, shadowed);
                        rewrite(&mut m.value, shadowed);
                    }
                    EntryExpr::StructField(f) => rewrite(&mut f.value, shadowed),
                }
            }
        }
        Expr::Struct(s) => {
            for entry in &mut s.entries {
                if let EntryExpr::StructField(f) = &mut entry.expr {
                    rewrite(&mut f.value, shadowed);
                }
            }
        }
        Expr::Comprehension(c) => {
            let hides =
                shadowed || c.iter_var == "device" || c.iter_var2.as_deref() == Some("device");
            rewrite(&mut c.iter_range, shadowed);
            rewrite(&mut c.accu_init, shadowed);
            rewrite(&mut c.loop_cond, hides);
            rewrite(&mut c.loop_step, hides);
            rewrite(&mut c.result, shadowed);
        }
    }
}

/// `device.attributes` or `device.capacity`.
fn is_domains(e: &IdedExpr) -> bool {
    matches!(&e.expr, Expr::Select(s)
        if !s.test
            && (s.field == "attributes" || s.field == "capacity")
            && matches!(&s.operand.expr, Expr::Ident(name) if name == "device"))
}

fn name(id: u64, field: &str) -> IdedExpr {
    IdedExpr {
        id,
        expr: Expr::Literal(LiteralValue::String(field.to_owned().into())),
    }
}

fn lookup(base: IdedExpr, key: IdedExpr) -> Expr {
    Expr::Call(CallExpr {
        func_name: DOMAIN.to_owned(),
        target: None,
        args: vec![base, key],
    })
}
