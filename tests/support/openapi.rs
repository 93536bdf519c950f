//! Checks replies against the demo app's OpenAPI document (`openapi.yaml`):
//! the status must be documented for the operation, and a JSON body must
//! match the documented schema.

use serde_json::{Value, json};

use super::{Reply, workspace_root};

/// The parsed `openapi.yaml`.
pub struct OpenApi {
    document: Value,
}

impl OpenApi {
    /// Reads `openapi.yaml` at the workspace root.
    pub fn load() -> OpenApi {
        let path = workspace_root().join("openapi.yaml");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|error| panic!("reading {}: {error}", path.display()));
        let document: Value = serde_yaml_ng::from_str(&text)
            .unwrap_or_else(|error| panic!("{} is not valid YAML: {error}", path.display()));
        OpenApi { document }
    }

    /// Panics, saying what differs, unless `reply` to `method path` is what
    /// the document describes.
    pub fn check(&self, method: &str, path: &str, reply: &Reply) {
        let (template, operation) = self.operation(method, path);
        let status = reply.status.to_string();
        let response = match operation {
            Some(operation) => {
                let responses = &operation["responses"];
                match responses.get(&status).or_else(|| responses.get("default")) {
                    Some(response) => self.resolve(response),
                    None => panic!(
                        "{method} {path} answered {status}, which openapi.yaml does not \
                         document for {method} {template}: {reply:?}"
                    ),
                }
            }
            // A method the path does not have must be refused as such.
            None => {
                assert_eq!(
                    reply.status, 405,
                    "{method} {template} is not in openapi.yaml, so it must answer 405: {reply:?}"
                );
                &self.document["components"]["responses"]["MethodNotAllowed"]
            }
        };
        let Some(schema) = response.pointer("/content/application~1json/schema") else {
            return;
        };
        let body: Value = serde_json::from_str(&reply.body).unwrap_or_else(|error| {
            panic!("{method} {path} ({status}) should answer JSON ({error}): {reply:?}")
        });
        // The schema refers to `#/components/...`: validate with the
        // document's components at the root, so the references resolve.
        let root = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "components": self.document["components"],
            "allOf": [schema],
        });
        let validator = jsonschema::draft202012::new(&root)
            .unwrap_or_else(|error| panic!("the schema for {method} {template} {status}: {error}"));
        let problems: Vec<String> = validator
            .iter_errors(&body)
            .map(|error| format!("{} at {}", error, error.instance_path()))
            .collect();
        assert!(
            problems.is_empty(),
            "{method} {path} ({status}) does not match openapi.yaml: {problems:?}\nbody: {body}"
        );
    }

    /// The path template matching `path` and its operation for `method`,
    /// if the document has one.
    fn operation(&self, method: &str, path: &str) -> (&str, Option<&Value>) {
        let path = path.split('?').next().unwrap_or(path);
        let paths = self.document["paths"]
            .as_object()
            .expect("openapi.yaml has paths");
        let (template, item) = paths
            .iter()
            .find(|(template, _)| matches_template(template, path))
            .unwrap_or_else(|| panic!("openapi.yaml documents no path matching {path}"));
        (template, item.get(method.to_ascii_lowercase()))
    }

    /// Follows a `$ref` to `#/components/...`.
    fn resolve<'a>(&'a self, value: &'a Value) -> &'a Value {
        match value.get("$ref").and_then(Value::as_str) {
            Some(reference) => self
                .document
                .pointer(reference.trim_start_matches('#'))
                .unwrap_or_else(|| panic!("openapi.yaml: dangling $ref {reference}")),
            None => value,
        }
    }
}

/// `/orders/{id}` matches `/orders/42`: same segments, `{…}` matching any
/// non-empty one.
fn matches_template(template: &str, path: &str) -> bool {
    let (template, path): (Vec<_>, Vec<_>) =
        (template.split('/').collect(), path.split('/').collect());
    template.len() == path.len()
        && template.iter().zip(&path).all(|(expected, actual)| {
            (expected.starts_with('{') && !actual.is_empty()) || expected == actual
        })
}
