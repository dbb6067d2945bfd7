//! Which test tools this machine has, as `cfg`s the tests that need them
//! read: a test whose tool is missing is ignored, with the reason, in
//! `cargo test`'s own output (never a silent "ok"). Under `CI=true` the
//! tools `.ci/run` installs count as present, so that a missing one fails
//! its tests instead; the optional ones (Node.js and Go examples, Helm)
//! are ignored wherever they are absent.

use std::path::Path;

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| {
            let file = dir.join(tool);
            file.is_file()
                && std::fs::metadata(&file).is_ok_and(|m| {
                    use std::os::unix::fs::PermissionsExt;
                    m.permissions().mode() & 0o111 != 0
                })
        })
    })
}

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=PATH");
    println!("cargo::rerun-if-env-changed=CI");
    // A tool installed later adds a file to one of these directories.
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths).filter(|d| d.is_dir()) {
            println!("cargo::rerun-if-changed={}", dir.display());
        }
    }
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let manifest = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
    let jose = Path::new(&manifest).join("examples/upstreams/node/node_modules/jose");
    let golang_jwt = Path::new("/usr/share/gocode/src/github.com/golang-jwt/jwt");
    let node_example = Path::new(&manifest).join("examples/upstreams/node");
    for dir in [node_example.as_path(), Path::new("/usr/share/gocode")] {
        if dir.is_dir() {
            println!("cargo::rerun-if-changed={}", dir.display());
        }
    }
    let go_render = ["github.com/Masterminds/sprig", "sigs.k8s.io/yaml"]
        .iter()
        .all(|p| Path::new("/usr/share/gocode/src").join(p).exists());
    let postgres = std::fs::read_dir("/usr/lib/postgresql")
        .is_ok_and(|mut d| d.any(|e| e.is_ok_and(|e| e.path().join("bin/initdb").exists())));
    let tools: [(&str, bool, bool); 11] = [
        // (cfg, present, installed by .ci/run)
        ("tool_redis", on_path("redis-server"), true),
        ("tool_nginx", on_path("nginx"), true),
        ("tool_kube", on_path("kubernetes-validate"), true),
        ("tool_node_example", on_path("node") && jose.exists(), false),
        (
            "tool_go_example",
            on_path("go") && golang_jwt.exists(),
            false,
        ),
        ("tool_go_render", on_path("go") && go_render, true),
        ("tool_helm", on_path("helm"), false),
        ("tool_memcached", on_path("memcached"), true),
        // The machine's database services, and servers of the tests' own.
        ("tool_postgres", postgres, true),
        (
            "tool_mariadb",
            Path::new("/usr/sbin/mariadbd").exists(),
            true,
        ),
        (
            "tool_chromium",
            on_path("chromium") && on_path("chromedriver"),
            true,
        ),
    ];
    for (cfg, present, required_in_ci) in tools {
        println!("cargo::rustc-check-cfg=cfg({cfg})");
        if present || (ci && required_in_ci) {
            println!("cargo::rustc-cfg={cfg}");
        }
    }
}
