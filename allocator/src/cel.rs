//! The CEL environment of DRA selectors: `device.driver`, `device.attributes[domain].name`,
//! `device.capacity[domain].name` (quantities), `device.allowMultipleAllocations`, with the Kubernetes
//! extension functions (`quantity()`, `semver()`, strings, lists, ...) from kube-cel. A domain the
//! device lacks is an empty map, as in Kubernetes (`domains.rs`).

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use kube_cel::KubeCelExt;
use kube_cel::cel::{Context, ExecutionError, IdedExpr, Program, Value};

use crate::cost::{self, MAX_COST};
use crate::domains;
use crate::model::{AttrValue, Candidate};

/// What one selector said of one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// `true`.
    Selected,
    /// `false`.
    NotSelected,
    /// The expression looked up an attribute or capacity the device does not have: not selected.
    /// (The Kubernetes scheduler stops the whole allocation with a CEL runtime error here.)
    Missing(String),
    /// Any other runtime error, or a result that is not a bool.
    Error(String),
}

/// A selector the API server would not accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    /// Not CEL.
    #[error("CEL syntax error: {0}")]
    Syntax(String),
    /// Its worst-case cost is over the API server's limit.
    #[error(
        "Forbidden: too complex, exceeds cost limit (estimated worst case {0} units, limit {MAX_COST}; the API server refuses it)"
    )]
    TooComplex(u64),
    /// Longer than the API server allows (`CELSelectorExpressionMaxLength`).
    #[error(
        "Too long: may not be more than {MAX_LENGTH} bytes (it has {0}; the API server refuses it)"
    )]
    TooLong(usize),
    /// More operators than [`MAX_OPERATORS`]: nested too deep to parse safely.
    #[error(
        "Too deep: more than {MAX_OPERATORS} operators, selections and brackets (it has {0}); \
         cel-go's parser refuses nesting past 250 levels, kube-cel's past 95"
    )]
    TooDeep(usize),
}

/// `resource.k8s.io/v1` `CELSelectorExpressionMaxLength`: 10 Ki.
pub const MAX_LENGTH: usize = 10 * 1024;

/// The most operator characters (`+ - * / % < > = ! & | ? : . [ ( {`) outside string literals an
/// expression may have. kube-cel's parser, cost walk and evaluator recurse once per nesting level,
/// and a chain of operators is nested as deep as it is long, so the length limit alone lets a
/// 10 KiB chain (5,000 levels) overflow a thread's stack. cel-go's parser refuses more than 250
/// levels; counting every operator is stricter than counting levels, and this bound leaves a
/// selector far more than real ones use (tens).
///
/// Nesting (brackets, calls, parentheses: `[[…]]`, `f(f(…))`, `((…))`) is bound tighter, by
/// kube-cel's parser: its recursion limit (96) refuses an expression nested more than 95 levels
/// deep, as a [`CompileError::Syntax`] ("Recursion limit of 96 exceeded"). cel-go's parser allows
/// 250, so a selector nested 96 to 250 levels deep may pass the API server and is refused here.
/// Chains of binary operators and selections (`1 + 1 + …`, `a.b.c…`) do not nest in the parser;
/// for them this bound is the one that binds.
pub const MAX_OPERATORS: usize = 1000;

/// A syntax error's text is cut to this many bytes: kube-cel's message repeats the whole
/// expression for each error it finds, and a 2,000-bracket selector gave 4.8 MB.
const MAX_SYNTAX_ERROR_BYTES: usize = 4 * 1024;

/// The stack a thread needs to compile and evaluate any expression within [`MAX_LENGTH`] and
/// [`MAX_OPERATORS`] (measured with a debug build, which needs the most; the default 2 MiB of a
/// spawned thread holds about 200 levels there). Run [`crate::Allocator`] work on such a thread.
pub const STACK_BYTES: usize = 64 << 20;

/// What kind of [`CompileError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompileErrorKind {
    /// [`CompileError::Syntax`].
    Syntax,
    /// [`CompileError::TooComplex`], [`CompileError::TooLong`], [`CompileError::TooDeep`]: over
    /// a limit.
    TooComplex,
}

impl CompileError {
    /// Its kind.
    pub fn kind(&self) -> CompileErrorKind {
        match self {
            CompileError::Syntax(_) => CompileErrorKind::Syntax,
            CompileError::TooComplex(_) | CompileError::TooLong(_) | CompileError::TooDeep(_) => {
                CompileErrorKind::TooComplex
            }
        }
    }
}

/// A selector as it is evaluated: its parse tree with domain lookups defaulted (`domains.rs`).
#[derive(Debug)]
pub struct Compiled(IdedExpr);

/// Compiled selectors and the values devices are seen as.
pub struct Cel {
    root: Context<'static>,
    to_quantity: Program,
    to_semver: Program,
    programs: HashMap<String, Result<Rc<Compiled>, CompileError>>,
}

impl Cel {
    /// A fresh environment with every Kubernetes CEL library.
    pub fn new() -> Result<Cel, String> {
        let compile = |s: &str| Program::compile(s).map_err(|e| e.to_string());
        let mut root = Context::default().with_all();
        root.add_function(domains::DOMAIN, domains::domain);
        Ok(Cel {
            root,
            to_quantity: compile("quantity(s)")?,
            to_semver: compile("semver(s)")?,
            programs: HashMap::new(),
        })
    }

    /// Compiles `expression` once; later calls return the same program (or the same error). An
    /// expression over the API server's cost limit is refused, as the API server refuses it.
    pub fn compile(&mut self, expression: &str) -> Result<Rc<Compiled>, CompileError> {
        self.programs
            .entry(expression.to_owned())
            .or_insert_with(|| {
                if expression.len() > MAX_LENGTH {
                    return Err(CompileError::TooLong(expression.len()));
                }
                match hal::text::cel_operator_count(expression) {
                    n if n > MAX_OPERATORS => return Err(CompileError::TooDeep(n)),
                    _ => {}
                }
                let program = Program::compile(expression)
                    .map_err(|e| CompileError::Syntax(bounded(e.to_string())))?;
                // Message construction (`Foo{}`) names a type the DRA environment does not
                // declare (the API server refuses it); kube-cel cannot evaluate it.
                if cost::constructs_message(program.expression()) {
                    let why = "undeclared reference: DRA selectors have no message types";
                    return Err(CompileError::Syntax(why.to_owned()));
                }
                match cost::estimate(program.expression()) {
                    cost if cost > MAX_COST => Err(CompileError::TooComplex(cost)),
                    _ => {
                        let mut tree = program.expression().clone();
                        domains::rewrite(&mut tree, false);
                        Ok(Rc::new(Compiled(tree)))
                    }
                }
            })
            .clone()
    }

    fn convert(&self, program: &Program, text: &str) -> Value {
        let mut scope = self.root.new_inner_scope();
        scope.add_variable_from_value("s", text.to_owned());
        program
            .execute(&scope)
            .unwrap_or_else(|_| Value::from(text.to_owned()))
    }

    /// `device` as CEL sees it: the device's own domains (a lookup of any other is an empty map,
    /// `domains.rs`).
    pub fn device_value(&self, device: &Candidate) -> Value {
        let mut attributes: BTreeMap<&str, HashMap<String, Value>> = BTreeMap::new();
        let mut capacity: BTreeMap<&str, HashMap<String, Value>> = BTreeMap::new();
        for (name, value) in &device.attributes {
            let (domain, id) = split(name);
            let value = match value {
                AttrValue::Int(i) => Value::Int(*i),
                AttrValue::Bool(b) => Value::Bool(*b),
                AttrValue::String(s) => Value::from(s.clone()),
                AttrValue::Version(v) => self.convert(&self.to_semver, v),
            };
            attributes
                .entry(domain)
                .or_default()
                .insert(id.to_owned(), value);
        }
        for (name, cap) in &device.capacity {
            let (domain, id) = split(name);
            let value = self.convert(&self.to_quantity, &cap.text);
            capacity
                .entry(domain)
                .or_default()
                .insert(id.to_owned(), value);
        }
        let nest = |m: BTreeMap<&str, HashMap<String, Value>>| -> Value {
            m.into_iter()
                .map(|(k, v)| (k.to_owned(), Value::from(v)))
                .collect::<HashMap<String, Value>>()
                .into()
        };
        let mut map: HashMap<String, Value> = HashMap::new();
        map.insert("driver".into(), Value::from(device.driver.clone()));
        map.insert("attributes".into(), nest(attributes));
        map.insert("capacity".into(), nest(capacity));
        map.insert(
            "allowMultipleAllocations".into(),
            Value::Bool(device.allow_multiple),
        );
        map.into()
    }

    /// Runs `program` with `device` bound.
    pub fn eval(&self, program: &Compiled, device: &Value) -> Verdict {
        let mut scope = self.root.new_inner_scope();
        scope.add_variable_from_value("device", device.clone());
        match Value::resolve(&program.0, &scope) {
            Ok(Value::Bool(true)) => Verdict::Selected,
            Ok(Value::Bool(false)) => Verdict::NotSelected,
            Ok(other) => Verdict::Error(format!("the expression returned {other:?}, not a bool")),
            Err(ExecutionError::NoSuchKey(key)) => Verdict::Missing(key.to_string()),
            Err(e) => Verdict::Error(e.to_string()),
        }
    }
}

/// `text` cut to [`MAX_SYNTAX_ERROR_BYTES`] on a character boundary, saying how much was cut.
fn bounded(text: String) -> String {
    if text.len() <= MAX_SYNTAX_ERROR_BYTES {
        return text;
    }
    let kept = hal::text::truncate_utf8(&text, MAX_SYNTAX_ERROR_BYTES);
    format!("{kept}… (cut: {} more bytes)", text.len() - kept.len())
}

/// `domain/id` into its parts (a bare name has no domain here; the model qualifies names first).
fn split(name: &str) -> (&str, &str) {
    name.rsplit_once('/').unwrap_or(("", name))
}

/// Verdicts by expression and device, so a class's selectors (and repeated request selectors) are
/// evaluated once per device, however many requests name them. Filled lazily: a device is only
/// evaluated by a selector when the selectors before it passed, as in the scheduler. Sparse: it
/// holds what was evaluated, so its size follows the work done, not selectors × devices (the API
/// caps a claim's selectors, not the number of slices).
#[derive(Default)]
pub(crate) struct VerdictCache {
    by_expression: BTreeMap<String, Verdicts>,
}

/// One expression's verdicts by device index.
type Verdicts = HashMap<usize, Verdict, foldhash::fast::FixedState>;

impl VerdictCache {
    pub(crate) fn get(
        &mut self,
        expression: &str,
        device: usize,
        eval: impl FnOnce() -> Verdict,
    ) -> Verdict {
        if !self.by_expression.contains_key(expression) {
            self.by_expression
                .insert(expression.to_owned(), Verdicts::default());
        }
        match self.by_expression.get_mut(expression) {
            Some(verdicts) => verdicts.entry(device).or_insert_with(eval).clone(),
            None => eval(),
        }
    }

    /// How many verdicts it holds.
    #[cfg(test)]
    fn held(&self) -> usize {
        self.by_expression.values().map(HashMap::len).sum()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::model::Capacity;
    use crate::quantity::Quantity;

    /// Each expression is evaluated once per device, and only what was evaluated is held: a
    /// million devices cost nothing until they are looked at.
    #[test]
    fn the_verdict_cache_evaluates_once_and_holds_only_what_it_evaluated() {
        let mut cache = VerdictCache::default();
        let mut evaluated = 0;
        for device in [7, 999_999, 7] {
            let verdict = cache.get("device.driver == \"x\"", device, || {
                evaluated += 1;
                Verdict::Selected
            });
            assert_eq!(verdict, Verdict::Selected);
        }
        cache.get("true", 999_999, || Verdict::NotSelected);
        assert_eq!(evaluated, 2);
        assert_eq!(cache.held(), 3);
    }

    fn gpu() -> Candidate {
        let mut device = Candidate::bare("gpu.example.com", "node", "gpu-0");
        device
            .attributes
            .insert("gpu.example.com/numaNode".into(), AttrValue::Int(1));
        device.attributes.insert(
            "gpu.example.com/driverVersion".into(),
            AttrValue::Version("580.105.8".into()),
        );
        device.capacity.insert(
            "gpu.example.com/memory".into(),
            Capacity::plain(Quantity::parse("80Gi").unwrap(), "80Gi"),
        );
        device
    }

    fn verdict(expression: &str) -> Verdict {
        let mut cel = Cel::new().unwrap();
        let program = cel.compile(expression).unwrap();
        let value = cel.device_value(&gpu());
        cel.eval(&program, &value)
    }

    #[test]
    fn attributes_capacity_quantity_and_semver() {
        use Verdict::*;
        assert_eq!(verdict(r#"device.driver == "gpu.example.com""#), Selected);
        assert_eq!(
            verdict(r#"device.attributes["gpu.example.com"].numaNode == 1"#),
            Selected
        );
        assert_eq!(
            verdict(
                r#"device.capacity["gpu.example.com"].memory.compareTo(quantity("40Gi")) >= 0"#
            ),
            Selected
        );
        assert_eq!(
            verdict(
                r#"device.attributes["gpu.example.com"].driverVersion.isLessThan(semver("570.0.0"))"#
            ),
            NotSelected
        );
        assert_eq!(verdict("device.allowMultipleAllocations"), NotSelected);
    }

    #[test]
    fn missing_attributes_and_unknown_domains_are_not_selected() {
        assert_eq!(
            verdict(r#"device.attributes["gpu.example.com"].rdma"#),
            Verdict::Missing("rdma".into())
        );
        assert_eq!(
            verdict(r#"device.attributes["other.vendor.com"].x == 1"#),
            Verdict::Missing("x".into())
        );
        assert_eq!(
            verdict(r#""x" in device.attributes["other.vendor.com"]"#),
            Verdict::NotSelected
        );
    }

    #[test]
    fn runtime_errors_and_non_bools_are_errors() {
        assert!(matches!(verdict("1 / 0 == 1"), Verdict::Error(_)));
        assert!(matches!(verdict("42"), Verdict::Error(_)));
    }

    #[test]
    fn syntax_errors_fail_to_compile() {
        let mut cel = Cel::new().unwrap();
        let error = cel.compile("device.attributes[").unwrap_err();
        assert_eq!(error.kind(), CompileErrorKind::Syntax);
    }

    #[test]
    fn message_construction_is_refused_not_evaluated() {
        // kube-cel's evaluator panics on it (`todo!`); the API server has no such type.
        let mut cel = Cel::new().unwrap();
        for expression in ["Foo{}", "device.driver == 'a' || [Foo{x: 1}].size() > 0"] {
            let error = cel.compile(expression).unwrap_err();
            assert_eq!(error.kind(), CompileErrorKind::Syntax, "{expression}");
            assert!(error.to_string().contains("undeclared"), "{error}");
        }
    }

    #[test]
    fn expressions_over_the_length_limit_are_refused_before_parsing() {
        let mut cel = Cel::new().unwrap();
        let long = format!("device.driver == '{}'", "x".repeat(MAX_LENGTH));
        let error = cel.compile(&long).unwrap_err();
        assert_eq!(error, CompileError::TooLong(long.len()));
        assert_eq!(error.kind(), CompileErrorKind::TooComplex);
    }

    /// The deepest expressions the limits let through compile and evaluate on a thread of
    /// [`STACK_BYTES`]. Chains are bound by [`MAX_OPERATORS`]: one operator more is refused as
    /// too deep before parsing. Nesting is bound by kube-cel's parser at 95 levels (see
    /// [`MAX_OPERATORS`]): one level more is a syntax error.
    #[test]
    fn the_deepest_expressions_within_the_limits_run_on_the_documented_stack() {
        const PARSER_DEPTH: usize = 95;
        // `n` operators: `+` and `==`; `.a`, `.x` and `==`.
        let sum = |n: usize| format!("{}1 == {}", "1+".repeat(n - 2), n - 1);
        let path = |n: usize| format!("device{}.x == 1", ".a".repeat(n - 3));
        let chains = [
            (sum as fn(usize) -> String, Verdict::Selected),
            (path, Verdict::Missing("a".into())),
        ]
        .map(|(shape, verdict)| {
            let (expression, deeper) = (shape(MAX_OPERATORS), shape(MAX_OPERATORS + 1));
            assert_eq!(hal::text::cel_operator_count(&expression), MAX_OPERATORS);
            assert_eq!(hal::text::cel_operator_count(&deeper), MAX_OPERATORS + 1);
            (expression, verdict, deeper)
        });
        let nested = |depth: usize| {
            let list = format!("{}true{}", "[".repeat(depth), "]".repeat(depth));
            format!("{list} == {list}")
        };
        // Not `string(`: the cost estimate takes `string()` to triple its input (bytes with
        // invalid UTF-8), so ten nested calls are over the cost limit.
        let calls = |depth: usize| format!("{}1{} == 1", "int(".repeat(depth), ")".repeat(depth));
        let parens = |depth: usize| format!("{}true{}", "(".repeat(depth), ")".repeat(depth));
        let nestings = [nested, calls, parens].map(|shape| {
            (
                shape(PARSER_DEPTH),
                Verdict::Selected,
                shape(PARSER_DEPTH + 1),
            )
        });
        let cases = chains.into_iter().chain(nestings);
        for (expression, expected, deeper) in cases {
            let count = hal::text::cel_operator_count(&expression);
            assert!(count <= MAX_OPERATORS, "{count}");
            assert!(expression.len() <= MAX_LENGTH, "{}", expression.len());
            std::thread::Builder::new()
                .stack_size(STACK_BYTES)
                .spawn(move || {
                    let mut cel = Cel::new().unwrap();
                    let program = match cel.compile(&expression) {
                        Ok(program) => program,
                        Err(e) => panic!("{e}: {expression}"),
                    };
                    assert_eq!(cel.eval(&program, &cel.device_value(&gpu())), expected);
                    let refused = cel.compile(&deeper).map(drop);
                    let past_the_parser = hal::text::cel_operator_count(&deeper) <= MAX_OPERATORS;
                    match refused {
                        Err(CompileError::TooDeep(_)) if !past_the_parser => {}
                        Err(CompileError::Syntax(e))
                            if past_the_parser && e.contains("Recursion limit of 96 exceeded") => {}
                        other => panic!("{other:?}: {deeper}"),
                    }
                })
                .unwrap()
                .join()
                .expect("the checks on the thread passed (a stack overflow aborts instead)");
        }
    }

    /// kube-cel repeats the whole expression in its message for each error: a 2,000-bracket
    /// selector gave a 4.8 MB message. The message is cut, and says so.
    #[test]
    fn syntax_errors_are_cut_to_a_few_kilobytes() {
        let depth = MAX_OPERATORS / 2 - 1;
        let expression = format!("{}true{}", "[".repeat(depth), "]".repeat(depth));
        std::thread::Builder::new()
            .stack_size(STACK_BYTES)
            .spawn(move || {
                let mut cel = Cel::new().unwrap();
                let error = cel.compile(&expression).unwrap_err();
                assert_eq!(error.kind(), CompileErrorKind::Syntax);
                let text = error.to_string();
                assert!(text.len() <= MAX_SYNTAX_ERROR_BYTES + 100, "{}", text.len());
                assert!(text.contains("Recursion limit of 96 exceeded"), "{text}");
                assert!(text.ends_with(" more bytes)"), "{text}");
                // A short error is whole.
                let error = cel.compile("device.attributes[").unwrap_err().to_string();
                assert!(!error.contains("(cut: "), "{error}");
                // Cut on a character boundary.
                let cut = bounded("é".repeat(MAX_SYNTAX_ERROR_BYTES));
                assert!(
                    cut.starts_with(&"é".repeat(MAX_SYNTAX_ERROR_BYTES / 2)),
                    "{cut}"
                );
                assert!(cut.ends_with("… (cut: 4096 more bytes)"), "{cut}");
            })
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn expressions_over_the_cost_limit_are_refused_before_running() {
        // Issue 25 item 19: 8 nested `.all()` over 10-element lists ran for over 120 s.
        let ten = "[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]";
        let mut expression = "true".to_owned();
        for v in ["a", "b", "c", "d", "e", "f", "g", "h"] {
            expression = format!("{ten}.all({v}, {expression})");
        }
        let mut cel = Cel::new().unwrap();
        let error = cel.compile(&expression).unwrap_err();
        assert_eq!(error.kind(), CompileErrorKind::TooComplex);
        assert!(
            error
                .to_string()
                .starts_with("Forbidden: too complex, exceeds cost limit"),
            "{error}"
        );
        // Two levels are fine.
        assert!(
            cel.compile(&format!("{ten}.all(a, {ten}.all(b, a + b > 0))"))
                .is_ok()
        );
        // Small, but builds a list of 10^8 elements (52 s and 7.8 GB in kube-cel).
        let error = cel
            .compile("lists.range(100000000).size() > 0")
            .unwrap_err();
        assert_eq!(error.kind(), CompileErrorKind::TooComplex);
    }

    /// Kubernetes answers a lookup of any domain the device lacks with an empty map
    /// (`newStringInterfaceMapWithDefault`, `cel/compile.go`), whether or not the selector spells
    /// it as a literal or any device has it; only lookups, not `in`, `size()` or iteration.
    #[test]
    fn any_unknown_domain_is_an_empty_map_as_in_kubernetes() {
        use Verdict::*;
        for expression in [
            r#"device.attributes["localhost"].size() == 0"#,
            r#"device.capacity["localhost"].size() == 0"#,
            r#"device.attributes["local" + "host"].size() == 0"#,
            "device.attributes.localhost.size() == 0",
            "has(device.attributes.localhost)",
            r#"device.attributes["gpu.example.com"].numaNode == 1 && device.attributes["gpu.example.com"].all(a, a != "x")"#,
            r#""gpu.example.com" in device.attributes && !("localhost" in device.attributes)"#,
            "size(device.attributes) == 1 && device.attributes.all(d, d == 'gpu.example.com')",
            // A comprehension variable named `device` is not the device.
            r#"[{"attributes": {"x": 1}}].all(device, device.attributes["x"] == 1)"#,
        ] {
            assert_eq!(verdict(expression), Selected, "{expression}");
        }
        assert_eq!(
            verdict(r#"device.attributes["localhost"].x == 1"#),
            Missing("x".into())
        );
        assert_eq!(
            verdict(r#"[{"attributes": {}}].all(device, device.attributes["x"] == 1)"#),
            Missing("x".into())
        );
    }
}
