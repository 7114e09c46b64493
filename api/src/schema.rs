//! Hand-written schema fragments that schemars cannot derive for Kubernetes.

use schemars::{Schema, SchemaGenerator, json_schema};

/// A free-form JSON object whose fields the API server keeps as they are.
pub(crate) fn free_form_object(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// Like [`free_form_object`], described as the desired properties of a device.
pub(crate) fn desired_properties(generator: &mut SchemaGenerator) -> Schema {
    let mut schema = free_form_object(generator);
    schema.insert(
        "description".into(),
        "Desired properties of the device: any JSON object (at most 32 KiB serialized). \
         The operator publishes it to the device as a retained MQTT message on every change."
            .into(),
    );
    schema
}

/// Like [`free_form_object`], described as the properties a device reported.
pub(crate) fn reported_properties(generator: &mut SchemaGenerator) -> Schema {
    let mut schema = free_form_object(generator);
    schema.insert(
        "description".into(),
        "Properties the device reported, merged from its reported patches (a null value \
         deletes a key). Well-known keys: firmwareVersion, lastReboot, reboot."
            .into(),
    );
    schema
}

/// Like [`free_form_object`], described as a method's parameters.
pub(crate) fn method_params(generator: &mut SchemaGenerator) -> Schema {
    let mut schema = free_form_object(generator);
    schema.insert(
        "description".into(),
        "Parameters of the method: any JSON object, sent to the device as is (at most 16 KiB \
         serialized; a larger one is rejected before anything is sent, reason ParamsTooLarge)."
            .into(),
    );
    schema
}

/// Any JSON value the API server keeps as it is, described as a method's result.
pub(crate) fn method_result_payload(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "description": "What the method returned, any JSON value, as the device sent it (at \
            most 8 KiB serialized; a larger one is left out and truncated is true).",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// Like [`free_form_object`], described as a configuration's merge patch.
pub(crate) fn configuration_patch(generator: &mut SchemaGenerator) -> Schema {
    let mut schema = free_form_object(generator);
    schema.insert(
        "description".into(),
        "A JSON merge patch (RFC 7386) applied to each selected Device's desired properties: \
         objects merge key by key, any other value replaces, and null deletes the key."
            .into(),
    );
    schema
}
