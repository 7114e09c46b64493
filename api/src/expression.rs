//! CEL expressions over one Device (the language of Kubernetes validation rules), shared by
//! DeviceConfiguration custom metrics in the operator and `kubectl twin query`. The variables
//! are `name`, `namespace`, `labels`, `spec` and `status` (an empty object before the
//! operator wrote one).

use serde_json::{Value, json};

use crate::Device;

/// Why an expression cannot be compiled or evaluated, for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpressionError(pub String);

impl std::fmt::Display for ExpressionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ExpressionError {}

/// A compiled CEL expression over one Device.
pub struct DeviceExpression {
    source: String,
    program: cel::Program,
}

impl std::fmt::Debug for DeviceExpression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceExpression").field("source", &self.source).finish()
    }
}

impl DeviceExpression {
    /// Compiles `source`; the error says where it does not parse.
    pub fn compile(source: &str) -> Result<Self, ExpressionError> {
        let program = cel::Program::compile(source).map_err(|errors| {
            ExpressionError(format!("{source:?} is not a CEL expression: {errors}"))
        })?;
        Ok(Self { source: source.to_string(), program })
    }

    /// The expression as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Evaluates the expression on `device`.
    pub fn evaluate(&self, device: &Device) -> Result<cel::Value, ExpressionError> {
        let mut context = cel::Context::default();
        let variables = variables(device).map_err(|e| {
            ExpressionError(format!("reading {} as JSON: {e}", device_name(device)))
        })?;
        for (name, value) in variables {
            let value = cel::to_value(&value)
                .map_err(|e| ExpressionError(format!("cannot hand {name} to CEL: {e}")))?;
            context.add_variable_from_value(name, value);
        }
        self.program.execute(&context).map_err(|error| {
            ExpressionError(format!("{:?} on {}: {error}", self.source, device_name(device)))
        })
    }

    /// Whether the expression is true for `device` (an error if it is not a boolean).
    pub fn matches(&self, device: &Device) -> Result<bool, ExpressionError> {
        match self.evaluate(device)? {
            cel::Value::Bool(matches) => Ok(matches),
            other => Err(ExpressionError(format!(
                "{:?} must be true or false; on {} it is {other:?}",
                self.source,
                device_name(device)
            ))),
        }
    }
}

/// `namespace/name` of a Device.
pub fn device_name(device: &Device) -> String {
    let namespace = device.metadata.namespace.as_deref().unwrap_or_default();
    format!("{namespace}/{}", device.metadata.name.as_deref().unwrap_or_default())
}

/// The CEL variables of one Device: `name`, `namespace`, `labels`, `spec` and `status` (an
/// empty object before the operator wrote one).
pub fn variables(device: &Device) -> serde_json::Result<Vec<(&'static str, Value)>> {
    Ok(vec![
        ("name", json!(device.metadata.name.clone().unwrap_or_default())),
        ("namespace", json!(device.metadata.namespace.clone().unwrap_or_default())),
        ("labels", json!(device.metadata.labels.clone().unwrap_or_default())),
        ("spec", serde_json::to_value(&device.spec)?),
        (
            "status",
            match &device.status {
                Some(status) => serde_json::to_value(status)?,
                None => json!({}),
            },
        ),
    ])
}
