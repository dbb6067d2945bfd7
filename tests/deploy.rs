//! The Kubernetes manifests (deploy/kubernetes) and the Helm chart
//! (deploy/helm/sessiongate): read as `kubectl apply -k` and `helm
//! template` would render them, checked against the Kubernetes schemas
//! (`kubernetes-validate --strict`), and read as a cluster would use them:
//! the probes and the Service reach the ports sessiongate's config listens
//! on, and the config they carry passes `sessiongate check` with the
//! environment the Deployment gives it. No cluster runs here. The image's
//! own config is run as the container would run it.

mod common;

use common::process::*;
use common::*;
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Stdio};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn run(cmd: &mut Command) -> String {
    String::from_utf8(succeeded(cmd).stdout).unwrap()
}

/// The documents of a rendered multi-document YAML stream.
fn documents(yaml: &str) -> Vec<Value> {
    yaml.split("\n---")
        .map(|d| d.trim_start_matches("---"))
        .filter(|d| {
            d.lines()
                .any(|l| !l.trim().is_empty() && !l.starts_with('#'))
        })
        .map(|d| serde_saphyr::from_str::<Value>(d).unwrap_or_else(|e| panic!("{e}:\n{d}")))
        .filter(|v| !v.is_null())
        .collect()
}

/// `kubernetes-validate --strict` on the rendered manifests: unknown or
/// mistyped fields fail.
fn schema_check(yaml: &str, what: &str) {
    let dir = temp_dir("k8s-schema");
    let file = dir.join("rendered.yaml");
    std::fs::write(&file, yaml).unwrap();
    let out = Command::new("kubernetes-validate")
        .args(["--strict", "--quiet"])
        .arg(&file)
        .stdin(Stdio::null())
        .output()
        .expect("kubernetes-validate (pip install kubernetes-validate)");
    assert!(
        out.status.success(),
        "{what} does not match the Kubernetes schemas:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} named {name}"))
}

/// What the manifests promise, read as a cluster would: the container's
/// ports are the config's listeners, the probes hit the admin endpoints,
/// the Service targets the proxy port, and the config passes `check` with
/// the Deployment's environment and the Secret's keys.
fn check_manifests(docs: &[Value], name: &str, replicas: u64) {
    let deployment = find(docs, "Deployment", name);
    let spec = &deployment["spec"];
    assert_eq!(spec["replicas"], replicas);
    let pod = &spec["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let labels = spec["template"]["metadata"]["labels"].as_object().unwrap();
    for (k, v) in spec["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(labels.get(k), Some(v), "the selector matches the pods");
    }
    let container = &pod["containers"][0];
    let port = |name: &str| {
        container["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("no port {name}"))["containerPort"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(port("http"), 8080);
    assert_eq!(port("admin"), 9090);
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["livenessProbe"]["httpGet"]["port"], "admin");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["readinessProbe"]["httpGet"]["port"], "admin");

    let service = find(docs, "Service", name);
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "http");
    for (k, v) in service["spec"]["selector"].as_object().unwrap() {
        assert_eq!(labels.get(k), Some(v), "the Service selects the pods");
    }
    if replicas > 1 {
        let pdb = find(docs, "PodDisruptionBudget", name);
        for (k, v) in pdb["spec"]["selector"]["matchLabels"].as_object().unwrap() {
            assert_eq!(labels.get(k), Some(v), "the PDB covers the pods");
        }
    }

    // The config, checked with the environment the pod gets.
    let config_map = find(docs, "ConfigMap", name);
    let yaml = config_map["data"]["sessiongate.yaml"].as_str().unwrap();
    let config: Value = serde_saphyr::from_str(yaml).unwrap();
    assert_eq!(config["listen"][0]["addr"], "0.0.0.0:8080");
    assert_eq!(config["admin"]["addr"], "0.0.0.0:9090");
    let dir = temp_dir("k8s-config");
    let path = dir.join("sessiongate.yaml");
    std::fs::write(&path, yaml).unwrap();
    let mut check = sessiongate(&["check", "--config", path.to_str().unwrap()]);
    check
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap());
    for env in container["env"].as_array().unwrap() {
        check.env(
            env["name"].as_str().unwrap(),
            env["value"].as_str().unwrap(),
        );
    }
    let secret = find(docs, "Secret", name);
    for (k, v) in secret["stringData"].as_object().unwrap() {
        check.env(k, v.as_str().unwrap());
    }
    assert_eq!(run(&mut check).trim(), "ok");
}

/// What `kubectl apply -k` applies: the kustomization's resources, which
/// use no transformers, so that they read the same without kustomize.
fn kustomize(variant: &str) -> String {
    let dir = Path::new(ROOT).join("deploy/kubernetes").join(variant);
    let k: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(dir.join("kustomization.yaml")).unwrap())
            .unwrap();
    let keys: Vec<_> = k.as_object().unwrap().keys().cloned().collect();
    assert_eq!(
        keys,
        ["apiVersion", "kind", "resources"],
        "plain resources only"
    );
    k["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| std::fs::read_to_string(dir.join(r.as_str().unwrap())).unwrap())
        .collect::<Vec<_>>()
        .join("\n---\n")
}

#[test]
#[cfg_attr(
    not(tool_kube),
    ignore = "needs kubernetes-validate (pip install kubernetes-validate)"
)]
fn single_instance_manifests_are_valid_and_consistent() {
    let yaml = kustomize("single");
    schema_check(&yaml, "deploy/kubernetes/single");
    let docs = documents(&yaml);
    check_manifests(&docs, "sessiongate", 1);
    let deployment = find(&docs, "Deployment", "sessiongate");
    assert_eq!(
        deployment["spec"]["strategy"]["type"], "Recreate",
        "one process opens the embedded file at a time"
    );
    assert_eq!(
        deployment["spec"]["template"]["spec"]["securityContext"]["fsGroup"],
        65532
    );
    find(&docs, "PersistentVolumeClaim", "sessiongate-data");
}

#[test]
#[cfg_attr(
    not(tool_kube),
    ignore = "needs kubernetes-validate (pip install kubernetes-validate)"
)]
fn redis_manifests_are_valid_and_consistent() {
    let yaml = kustomize("redis");
    schema_check(&yaml, "deploy/kubernetes/redis");
    let docs = documents(&yaml);
    check_manifests(&docs, "sessiongate", 3);
    let config_map = find(&docs, "ConfigMap", "sessiongate");
    let config: Value =
        serde_saphyr::from_str(config_map["data"]["sessiongate.yaml"].as_str().unwrap()).unwrap();
    let url = config["session"]["store"]["url"].as_str().unwrap();
    let redis = find(&docs, "Service", "sessiongate-redis");
    let host = redis["metadata"]["name"].as_str().unwrap();
    assert!(
        url.starts_with(&format!("redis://{host}:6379")),
        "{url} names the Redis Service"
    );
}

/// Helm's merge of values files: maps merge key by key, and null removes.
fn merge(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                if v.is_null() {
                    b.remove(k);
                } else {
                    merge(b.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (b, o) => *b = o.clone(),
    }
}

fn chart() -> std::path::PathBuf {
    Path::new(ROOT).join("deploy/helm/sessiongate")
}

fn values(file: &str) -> Value {
    serde_saphyr::from_str(&std::fs::read_to_string(chart().join(file)).unwrap()).unwrap()
}

/// The chart's `config` values are sessiongate's YAML config key for key:
/// the defaults and the Redis overlay each pass `check` as written.
#[test]
fn helm_values_are_a_config_that_passes_check() {
    let defaults = values("values.yaml");
    let mut redis = defaults.clone();
    merge(&mut redis, &values("values-redis.yaml"));
    for (name, v) in [("values.yaml", &defaults), ("values-redis.yaml", &redis)] {
        let dir = temp_dir("helm-values");
        let path = dir.join("sessiongate.yaml");
        std::fs::write(&path, serde_json::to_string_pretty(&v["config"]).unwrap()).unwrap();
        let out = sessiongate(&["check", "--config", path.to_str().unwrap()])
            .env("UPSTREAM_URL", v["upstreamUrl"].as_str().unwrap())
            .env(
                "SESSIONGATE_SECRET",
                "helm-secret-0123456789abcdef-0123456789",
            )
            .env(
                "UPSTREAM_JWT_SECRET",
                "helm-jwt-secret-0123456789abcdef-012345",
            )
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(redis["config"]["session"]["store"]["kind"], "redis");
    assert!(redis["config"]["session"]["store"].get("path").is_none());
}

const SECRETS: [&str; 4] = [
    "--set",
    "secrets.sessiongateSecret=helm-secret-0123456789abcdef-0123456789",
    "--set",
    "secrets.upstreamJwtSecret=helm-jwt-secret-0123456789abcdef-012345",
];

/// The chart rendered by `render` (a command taking helm's `-f`/`--set`
/// after the chart and the release name), with its defaults and with the
/// Redis values, checked as the Kustomize manifests are.
fn chart_renders_valid_consistent_manifests(render: impl Fn(&[&str]) -> Command) {
    let single = run(&mut render(&SECRETS));
    schema_check(&single, "the chart with its defaults");
    check_manifests(&documents(&single), "sg", 1);
    let redis_values = chart().join("values-redis.yaml");
    let mut args = vec!["-f", redis_values.to_str().unwrap()];
    args.extend(SECRETS);
    let redis = run(&mut render(&args));
    schema_check(&redis, "the chart with values-redis.yaml");
    check_manifests(&documents(&redis), "sg", 3);

    // What the chart refuses: several replicas on the embedded store, and
    // no secrets.
    let mut args = vec!["--set", "replicaCount=3"];
    args.extend(SECRETS);
    let out = render(&args).output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("the embedded store is one file"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = render(&[]).output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("secrets.sessiongateSecret is required"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
#[cfg_attr(
    not(tool_helm),
    ignore = "needs helm (https://helm.sh/docs/intro/install/)"
)]
fn helm_chart_renders_valid_consistent_manifests() {
    chart_renders_valid_consistent_manifests(|args| {
        let mut c = Command::new("helm");
        c.args(["template", "sg"]).arg(chart()).args(args);
        c
    });
}

/// Without helm: the chart rendered by tests/helm/render.go, built on what
/// Helm's engine is built on (Go's text/template, sprig, and
/// sigs.k8s.io/yaml for toYaml), from Debian's Go packages.
#[test]
#[cfg_attr(
    not(tool_go_render),
    ignore = "needs go with Debian's golang-github-masterminds-sprig-dev and golang-k8s-sigs-yaml-dev"
)]
fn chart_rendered_by_go_templates_and_sprig_is_valid_and_consistent() {
    let dir = temp_dir("helm-render");
    // Debian's Go sources sit under their import paths without the
    // module's major version, which the imports name.
    for (module, path) in [("semver", "semver/v3"), ("sprig", "sprig/v3")] {
        let link = dir.join("gopath/src/github.com/Masterminds").join(path);
        std::fs::create_dir_all(link.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(
            Path::new("/usr/share/gocode/src/github.com/Masterminds").join(module),
            link,
        )
        .unwrap();
    }
    let bin = dir.join("render");
    run(Command::new("go")
        .args(["build", "-o"])
        .arg(&bin)
        .arg(Path::new(ROOT).join("tests/helm/render.go"))
        .env("GO111MODULE", "off")
        .env(
            "GOPATH",
            format!("{}:/usr/share/gocode", dir.join("gopath").display()),
        )
        .env("GOCACHE", dir.join("cache")));
    chart_renders_valid_consistent_manifests(|args| {
        let mut c = Command::new(&bin);
        c.arg(chart()).arg("sg").args(args);
        c
    });
}

/// The image's built-in config: every variable it needs, named at once when
/// unset; with them set, it passes and the process runs as the container would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_config_names_each_missing_variable_then_runs() {
    let container = concat!(env!("CARGO_MANIFEST_DIR"), "/config/container.yaml");
    let out = sessiongate(&["--config", container])
        .env_remove("UPSTREAM_URL")
        .env_remove("SESSIONGATE_SECRET")
        .env_remove("UPSTREAM_JWT_SECRET")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "upstreams.app.url: environment variable UPSTREAM_URL is not set",
        "secrets[0]: environment variable SESSIONGATE_SECRET is not set",
        "routes[0].forward.secret: environment variable UPSTREAM_JWT_SECRET is not set",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }

    // The same file with the addresses and the data directory moved into
    // a temporary place: it starts, and its admin listener answers probes.
    let up = upstream().await;
    let dir = temp_dir("container");
    let (listen, admin) = (free_addr(), free_addr());
    let yaml = std::fs::read_to_string(container)
        .unwrap()
        .replace("0.0.0.0:8080", &listen.to_string())
        .replace("0.0.0.0:9090", &admin.to_string())
        .replace("/home/nonroot/data/", &format!("{}/", dir.display()));
    let path = dir.join("container.yaml");
    std::fs::write(&path, yaml).unwrap();
    let upstream_url = format!("http://{}", up.addr);
    let proc = Running::start(
        &path,
        admin,
        &dir,
        &[
            ("UPSTREAM_URL", upstream_url.as_str()),
            (
                "SESSIONGATE_SECRET",
                "container-secret-0123456789abcdef-012345",
            ),
            (
                "UPSTREAM_JWT_SECRET",
                "container-jwt-secret-0123456789abcdef-01",
            ),
        ],
    );
    let c = TestClient::new();
    assert_eq!(
        c.get(&format!("http://{admin}/healthz"), &[]).await.status,
        200
    );
    let r = c.get(&format!("http://{listen}/"), &[]).await;
    assert_eq!(r.status, 200);
    assert!(
        r.echo().header("x-session-token").is_some(),
        "a signed session header"
    );
    assert!(dir.join("sessions.db").exists());
    drop(proc);
}
