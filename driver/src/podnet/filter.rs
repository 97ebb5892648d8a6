//! `--device-filter`: a CEL expression over a network device's published attributes, as dranet's
//! `--filter`; devices it does not select are not published. Evaluated with kube-cel, the CEL
//! implementation the allocator uses, with the same view of a device as a DRA selector:
//! `device.driver`, `device.attributes[domain].name` (unqualified names in the driver's domain),
//! `device.capacity[domain].name` (quantities).

use std::collections::HashMap;

use k8s_openapi::api::resource::v1::Device;
use kube_cel::KubeCelExt;
use kube_cel::cel::{Context, Program, Value};

/// A filter that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// The expression is not CEL.
    #[error("--device-filter: CEL syntax error: {0}")]
    Syntax(String),
    /// It failed on a device (a missing attribute, a type error) or did not return a bool.
    #[error("--device-filter on device {device}: {message}")]
    Evaluation {
        /// The device.
        device: String,
        /// What went wrong.
        message: String,
    },
}

/// What kind of [`FilterError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterErrorKind {
    /// [`FilterError::Syntax`].
    Syntax,
    /// [`FilterError::Evaluation`].
    Evaluation,
}

impl FilterError {
    /// Its kind.
    pub fn kind(&self) -> FilterErrorKind {
        match self {
            FilterError::Syntax(_) => FilterErrorKind::Syntax,
            FilterError::Evaluation { .. } => FilterErrorKind::Evaluation,
        }
    }
}

/// The longest filter: the API server's limit for a selector (10 KiB).
pub const MAX_FILTER_LENGTH: usize = 10 * 1024;

/// The most operators, selections and brackets a filter may have outside its strings
/// ([`hal::text::cel_operator_count`]): kube-cel parses and evaluates recursively, a filter is
/// evaluated on the runtime's threads (2 MiB of stack), and there a debug build overflows at about
/// 60 levels (a release build holds far more). A filter of a few clauses uses 10 to 30.
pub const MAX_FILTER_OPERATORS: usize = 40;

/// A compiled `--device-filter`.
pub struct DeviceFilter {
    root: Context<'static>,
    program: Program,
    to_quantity: Program,
    to_semver: Program,
}

impl DeviceFilter {
    /// Compiles `expression`; refused over [`MAX_FILTER_LENGTH`] or [`MAX_FILTER_OPERATORS`].
    pub fn new(expression: &str) -> Result<DeviceFilter, FilterError> {
        if expression.len() > MAX_FILTER_LENGTH {
            let why = format!("longer than {MAX_FILTER_LENGTH} bytes");
            return Err(FilterError::Syntax(why));
        }
        let operators = hal::text::cel_operator_count(expression);
        if operators > MAX_FILTER_OPERATORS {
            let why = format!(
                "{operators} operators, selections and brackets, more than {MAX_FILTER_OPERATORS}"
            );
            return Err(FilterError::Syntax(why));
        }
        let compile = |s: &str| Program::compile(s).map_err(|e| FilterError::Syntax(e.to_string()));
        Ok(DeviceFilter {
            root: Context::default().with_all(),
            program: compile(expression)?,
            to_quantity: compile("quantity(s)")?,
            to_semver: compile("semver(s)")?,
        })
    }

    fn convert(&self, program: &Program, text: &str) -> Value {
        let mut scope = self.root.new_inner_scope();
        scope.add_variable_from_value("s", text.to_owned());
        program
            .execute(&scope)
            .unwrap_or_else(|_| Value::from(text.to_owned()))
    }

    /// `device` of `driver` as a DRA selector sees it.
    fn value(&self, device: &Device, driver: &str) -> Value {
        let mut attributes: HashMap<String, HashMap<String, Value>> = HashMap::new();
        attributes.entry(driver.to_owned()).or_default();
        for (name, attribute) in device.attributes.iter().flatten() {
            let (domain, id) = name.rsplit_once('/').unwrap_or((driver, name));
            let value = if let Some(i) = attribute.int {
                Value::Int(i)
            } else if let Some(b) = attribute.bool {
                Value::Bool(b)
            } else if let Some(s) = &attribute.string {
                Value::from(s.clone())
            } else if let Some(v) = &attribute.version {
                self.convert(&self.to_semver, v)
            } else {
                continue;
            };
            attributes
                .entry(domain.to_owned())
                .or_default()
                .insert(id.to_owned(), value);
        }
        let mut capacity: HashMap<String, HashMap<String, Value>> = HashMap::new();
        capacity.entry(driver.to_owned()).or_default();
        for (name, cap) in device.capacity.iter().flatten() {
            let (domain, id) = name.rsplit_once('/').unwrap_or((driver, name));
            capacity
                .entry(domain.to_owned())
                .or_default()
                .insert(id.to_owned(), self.convert(&self.to_quantity, &cap.value.0));
        }
        let nest = |m: HashMap<String, HashMap<String, Value>>| -> Value {
            m.into_iter()
                .map(|(k, v)| (k, Value::from(v)))
                .collect::<HashMap<String, Value>>()
                .into()
        };
        let mut map: HashMap<String, Value> = HashMap::new();
        map.insert("driver".into(), Value::from(driver.to_owned()));
        map.insert("attributes".into(), nest(attributes));
        map.insert("capacity".into(), nest(capacity));
        map.into()
    }

    /// Whether the filter selects `device` of `driver`.
    pub fn selects(&self, device: &Device, driver: &str) -> Result<bool, FilterError> {
        let mut scope = self.root.new_inner_scope();
        scope.add_variable_from_value("device", self.value(device, driver));
        // kube-cel panics on what it does not implement (message construction: `Foo{}`); that is
        // this filter's error, not the plugin's end.
        let executed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.program.execute(&scope)
        }));
        let Ok(executed) = executed else {
            return Err(FilterError::Evaluation {
                device: device.name.clone(),
                message: "the CEL evaluator cannot run this expression".into(),
            });
        };
        match executed {
            Ok(Value::Bool(b)) => Ok(b),
            Ok(other) => Err(FilterError::Evaluation {
                device: device.name.clone(),
                message: format!("returned {other:?}, not a bool"),
            }),
            Err(e) => Err(FilterError::Evaluation {
                device: device.name.clone(),
                message: e.to_string(),
            }),
        }
    }
}
