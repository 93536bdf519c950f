//! `manifests/`: the Kubernetes objects parse as their API types with no
//! unknown field (each is read into k8s-openapi's type and must serialize
//! back to the same document), and they fit together and with the app: the
//! Deployments run every component of `spin.toml` exactly once through
//! `-c`, probes hit the ops listener's `/health` and `/ready`, Services and
//! the autoscaler point at real Deployments, the ConfigMap holds a runtime
//! config spindle accepts, and the container image starts `spindle up` on
//! the ports the pods declare.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Namespace, Secret, Service};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value as Json;
use support::workspace_root;

/// The objects of the kustomization, by kind.
#[derive(Default)]
struct Objects {
    deployments: Vec<Deployment>,
    services: Vec<Service>,
    autoscalers: Vec<HorizontalPodAutoscaler>,
    config_maps: Vec<ConfigMap>,
    secrets: Vec<Secret>,
}

fn kubernetes_dir() -> PathBuf {
    workspace_root().join("manifests/kubernetes")
}

fn read_yaml(path: &Path) -> Vec<Json> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|error| panic!("reading {}: {error}", path.display()));
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|document| {
            Json::deserialize(document)
                .unwrap_or_else(|error| panic!("{}: not YAML: {error}", path.display()))
        })
        .filter(|document| !document.is_null())
        .collect()
}

/// `document` as `T`, insisting that nothing was lost on the way: a
/// misspelt or misplaced field would be dropped by the typed read.
fn typed<T: DeserializeOwned + serde::Serialize>(document: &Json, file: &Path) -> T {
    let value: T = serde_json::from_value(document.clone()).unwrap_or_else(|error| {
        panic!(
            "{}: not a valid {}: {error}",
            file.display(),
            document["kind"]
        )
    });
    let round_trip = without_nulls(serde_json::to_value(&value).expect("serialize"));
    if let Some(path) =
        first_difference(&without_nulls(document.clone()), &round_trip, String::new())
    {
        panic!(
            "{}: `{path}` is not a field of {} (or has the wrong shape)",
            file.display(),
            document["kind"]
        );
    }
    value
}

/// The path of the first place where `written` has something `typed` lacks.
fn first_difference(written: &Json, typed: &Json, path: String) -> Option<String> {
    match (written, typed) {
        (Json::Object(written), Json::Object(typed)) => written.iter().find_map(|(key, value)| {
            let path = format!("{path}.{key}");
            match typed.get(key) {
                Some(typed_value) => first_difference(value, typed_value, path),
                None => Some(path),
            }
        }),
        (Json::Array(written), Json::Array(typed)) if written.len() == typed.len() => written
            .iter()
            .zip(typed)
            .enumerate()
            .find_map(|(index, (w, t))| first_difference(w, t, format!("{path}[{index}]"))),
        (written, typed) if written == typed => None,
        _ => Some(path),
    }
}

fn without_nulls(value: Json) -> Json {
    match value {
        Json::Object(map) => Json::Object(
            map.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, without_nulls(v)))
                .collect(),
        ),
        Json::Array(items) => Json::Array(items.into_iter().map(without_nulls).collect()),
        other => other,
    }
}

fn load_objects() -> Objects {
    let dir = kubernetes_dir();
    let kustomization = read_yaml(&dir.join("kustomization.yaml")).remove(0);
    let resources = kustomization["resources"]
        .as_array()
        .expect("kustomization resources");
    let mut objects = Objects::default();
    for resource in resources {
        let file = dir.join(resource.as_str().expect("a file name"));
        for document in read_yaml(&file) {
            match document["kind"].as_str() {
                Some("Deployment") => objects.deployments.push(typed(&document, &file)),
                Some("Service") => objects.services.push(typed(&document, &file)),
                Some("HorizontalPodAutoscaler") => {
                    objects.autoscalers.push(typed(&document, &file))
                }
                Some("ConfigMap") => objects.config_maps.push(typed(&document, &file)),
                Some("Secret") => objects.secrets.push(typed(&document, &file)),
                Some("Namespace") => drop(typed::<Namespace>(&document, &file)),
                other => panic!("{}: unexpected kind {other:?}", file.display()),
            }
        }
    }
    let listed: BTreeSet<String> = resources
        .iter()
        .filter_map(|r| r.as_str().map(str::to_owned))
        .collect();
    for entry in std::fs::read_dir(&dir).expect("manifests/kubernetes") {
        let name = entry
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .into_owned();
        assert!(
            name == "kustomization.yaml" || listed.contains(&name),
            "{name} is not listed in kustomization.yaml"
        );
    }
    objects
}

fn container(deployment: &Deployment) -> &Container {
    let spec = deployment.spec.as_ref().expect("deployment spec");
    let pod = spec.template.spec.as_ref().expect("pod spec");
    pod.containers.first().expect("a container")
}

fn name(metadata: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    metadata.name.clone().expect("a name")
}

/// The components `spin.toml` defines.
fn app_components() -> BTreeSet<String> {
    let app = spindle::manifest::load(&workspace_root().join("spin.toml")).expect("spin.toml");
    app.components.keys().cloned().collect()
}

/// The `-c` values of a container's arguments.
fn selected_components(container: &Container) -> Vec<String> {
    let args = container.args.clone().unwrap_or_default();
    args.windows(2)
        .filter(|pair| pair[0] == "-c" || pair[0] == "--component-id")
        .map(|pair| pair[1].clone())
        .collect()
}

fn port_number(container: &Container, name: &str) -> i32 {
    container
        .ports
        .iter()
        .flatten()
        .find(|port| port.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("container port `{name}`"))
        .container_port
}

#[test]
fn deployments_run_every_component_once_with_probes_limits_and_a_drain() {
    let objects = load_objects();
    assert!(!objects.deployments.is_empty());
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    for deployment in &objects.deployments {
        let deployment_name = name(&deployment.metadata);
        let container = container(deployment);
        let selected = selected_components(container);
        assert!(
            !selected.is_empty(),
            "{deployment_name} runs a group of components with -c"
        );
        for component in selected {
            if let Some(other) = seen.insert(component.clone(), deployment_name.clone()) {
                panic!("component {component} runs in both {other} and {deployment_name}");
            }
        }

        let ops = port_number(container, "ops");
        for (probe, path) in [
            (container.liveness_probe.as_ref(), "/health"),
            (container.readiness_probe.as_ref(), "/ready"),
        ] {
            let get = probe
                .and_then(|probe| probe.http_get.as_ref())
                .unwrap_or_else(|| panic!("{deployment_name}: an HTTP probe on {path}"));
            assert_eq!(get.path.as_deref(), Some(path));
            let port = match &get.port {
                k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(name) => {
                    port_number(container, name)
                }
                k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(number) => *number,
            };
            assert_eq!(
                port, ops,
                "{deployment_name}: {path} is served on the ops port"
            );
        }

        let resources = container.resources.as_ref().expect("resources");
        for key in ["cpu", "memory"] {
            assert!(
                resources
                    .requests
                    .as_ref()
                    .is_some_and(|r| r.contains_key(key)),
                "{deployment_name}: requests.{key}"
            );
            assert!(
                resources
                    .limits
                    .as_ref()
                    .is_some_and(|r| r.contains_key(key)),
                "{deployment_name}: limits.{key}"
            );
        }
        let pod = deployment
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .expect("pod spec");
        assert!(
            pod.termination_grace_period_seconds.unwrap_or(30) > 30,
            "{deployment_name}: the grace period outlasts the host's 30 s drain"
        );
        let secrets_from_env = container
            .env_from
            .iter()
            .flatten()
            .filter_map(|source| source.secret_ref.as_ref().map(|s| s.name.clone()))
            .collect::<Vec<_>>();
        for secret in &secrets_from_env {
            assert!(
                objects.secrets.iter().any(|s| &name(&s.metadata) == secret),
                "{deployment_name} reads Secret {secret}, which is not defined"
            );
        }
    }
    let running: BTreeSet<String> = seen.into_keys().collect();
    assert_eq!(
        running,
        app_components(),
        "the Deployments run exactly spin.toml's components"
    );
}

#[test]
fn services_and_autoscalers_point_at_deployments() {
    let objects = load_objects();
    for service in &objects.services {
        let target = selected_deployment(&objects, service);
        let target = target.unwrap_or_else(|| {
            panic!(
                "Service {} selects no Deployment's pods",
                name(&service.metadata)
            )
        });
        for port in service
            .spec
            .as_ref()
            .and_then(|s| s.ports.clone())
            .unwrap_or_default()
        {
            if let Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(
                port_name,
            )) = &port.target_port
            {
                port_number(container(target), port_name);
            }
        }
    }
    assert!(!objects.autoscalers.is_empty());
    for autoscaler in &objects.autoscalers {
        let target = &autoscaler.spec.as_ref().expect("spec").scale_target_ref;
        assert_eq!(target.kind, "Deployment");
        assert!(
            objects
                .deployments
                .iter()
                .any(|d| name(&d.metadata) == target.name),
            "HPA {} scales {}, which is not defined",
            name(&autoscaler.metadata),
            target.name
        );
    }
}

#[test]
fn the_config_map_and_secret_give_spindle_what_it_reads() {
    let objects = load_objects();
    let config = objects
        .config_maps
        .iter()
        .find_map(|map| map.data.as_ref()?.get("runtime-config.toml").cloned())
        .expect("a ConfigMap with runtime-config.toml");
    let parsed = spindle::manifest::parse_runtime_config(&config, Path::new("runtime-config.toml"))
        .expect("spindle accepts the runtime config");
    assert!(
        parsed
            .messaging
            .as_ref()
            .is_some_and(|m| m.url.starts_with("nats://")),
        "the replicas share a NATS bus"
    );
    let secret = objects.secrets.first().expect("a Secret");
    let keys: BTreeSet<&String> = secret
        .string_data
        .iter()
        .flatten()
        .map(|(k, _)| k)
        .collect();
    // Every secret variable of spin.toml reaches the app from the Secret.
    let app = spindle::manifest::load(&workspace_root().join("spin.toml")).expect("spin.toml");
    let secret_variables = app
        .variables
        .iter()
        .filter(|(_, variable)| variable.secret)
        .map(|(name, _)| format!("SPIN_VARIABLE_{}", name.to_uppercase()));
    let expected: Vec<String> = ["SPINDLE_DEPLOY_TOKEN", "PGPASSWORD"]
        .map(String::from)
        .into_iter()
        .chain(secret_variables)
        .collect();
    assert!(expected.len() > 2, "spin.toml has a secret variable");
    for expected in expected {
        assert!(keys.contains(&expected), "Secret key {expected}");
    }
}

/// The Deployment whose pods `service` selects.
fn selected_deployment<'a>(objects: &'a Objects, service: &Service) -> Option<&'a Deployment> {
    let selector = service
        .spec
        .as_ref()
        .and_then(|s| s.selector.clone())
        .expect("a selector");
    objects.deployments.iter().find(|deployment| {
        let labels = deployment
            .spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.labels.clone())
            .unwrap_or_default();
        selector
            .iter()
            .all(|(key, value)| labels.get(key) == Some(value))
    })
}

/// Service chaining (`<id>.spin.internal`) only reaches components in the
/// same process: where a component's outbound host is another component
/// that runs in another Deployment, the Deployment sets that address
/// (through the variable in the entry, `SPIN_VARIABLE_*`) to a Service
/// whose pods run the callee.
#[test]
fn calls_between_deployments_go_to_a_service_that_runs_the_callee() {
    let objects = load_objects();
    let app = spindle::manifest::load(&workspace_root().join("spin.toml")).expect("spin.toml");
    let components = app_components();
    let mut across = 0;
    for deployment in &objects.deployments {
        let pod = container(deployment);
        let group = selected_components(pod);
        // What the host allows with the manifest's defaults, and with this
        // Deployment's `SPIN_VARIABLE_*` on top.
        let defaults = allowed_hosts(&app, Vec::new());
        let set_here = pod
            .env
            .iter()
            .flatten()
            .filter_map(|var| {
                let name = var.name.strip_prefix("SPIN_VARIABLE_")?.to_lowercase();
                Some((name, var.value.clone()?))
            })
            .collect();
        let here = allowed_hosts(&app, set_here);
        for id in &group {
            for callee in components.iter().filter(|callee| !group.contains(callee)) {
                let chained = format!("{callee}.spin.internal");
                if !defaults[id].allows("http", &chained, None) {
                    continue;
                }
                across += 1;
                let reached = objects.services.iter().any(|service| {
                    here[id].allows("http", &name(&service.metadata), None)
                        && selected_deployment(&objects, service).is_some_and(|target| {
                            selected_components(container(target)).contains(callee)
                        })
                });
                assert!(
                    reached,
                    "{id} in {} calls {callee}, which runs in another Deployment: \
                     set the address to a Service that runs {callee}",
                    name(&deployment.metadata)
                );
            }
        }
    }
    assert!(across > 0, "orders calls users across Deployments");
}

/// Each component's `allowed_outbound_hosts` as the host renders and parses
/// them, with `variables` set as `--variable` would (and a stand-in for the
/// required secret).
fn allowed_hosts(
    app: &spindle::manifest::App,
    mut variables: Vec<(String, String)>,
) -> spindle::capabilities::allowed_hosts::ByComponent {
    variables.insert(0, ("jwt_secret".into(), "x".repeat(32)));
    let settings = spindle::capabilities::HostSettings {
        cli_variables: variables,
        ..Default::default()
    };
    let resolved = spindle::capabilities::variables::AppState::configure(app, &[], &settings)
        .expect("spin.toml's variables resolve");
    spindle::capabilities::allowed_hosts::render_all(app, &resolved)
        .expect("spin.toml's allowed_outbound_hosts parse")
}

#[test]
fn the_container_image_starts_spindle_up_on_the_declared_ports() {
    let text = std::fs::read_to_string(workspace_root().join("manifests/Containerfile"))
        .expect("Containerfile");
    let stages: Vec<&str> = text
        .lines()
        .filter(|line| line.starts_with("FROM "))
        .collect();
    assert!(
        stages.len() >= 2 && stages[0].contains(" AS build"),
        "a multi-stage build: {stages:?}"
    );
    let entrypoint = text
        .lines()
        .find_map(|line| line.strip_prefix("ENTRYPOINT "))
        .expect("an ENTRYPOINT");
    let command: Vec<String> =
        serde_json::from_str(entrypoint).expect("ENTRYPOINT in exec (JSON) form");
    assert_eq!(&command[..2], ["spindle", "up"]);
    let flag = |name: &str| {
        command
            .iter()
            .position(|arg| arg == name)
            .and_then(|at| command.get(at + 1))
            .unwrap_or_else(|| panic!("ENTRYPOINT sets {name}"))
            .clone()
    };
    let objects = load_objects();
    for deployment in &objects.deployments {
        let container = container(deployment);
        assert_eq!(
            flag("--listen"),
            format!("0.0.0.0:{}", port_number(container, "http"))
        );
        assert_eq!(
            flag("--ops-listen"),
            format!("0.0.0.0:{}", port_number(container, "ops"))
        );
        let config_path = flag("--runtime-config-file");
        let (dir, file) = config_path.rsplit_once('/').expect("an absolute path");
        assert_eq!(file, "runtime-config.toml");
        assert!(
            container
                .volume_mounts
                .iter()
                .flatten()
                .any(|mount| mount.mount_path == dir),
            "{}: the ConfigMap is mounted at {dir}",
            name(&deployment.metadata)
        );
    }
}
