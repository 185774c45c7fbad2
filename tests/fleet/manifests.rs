//! The shipped proxy configurations and Kubernetes manifests, checked by
//! the tools that will read them.

use super::*;

/// `deploy/{path}`, read.
fn deploy_file(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

/// Runs `program` with `args`; panics with its output if it fails.
fn must_pass(program: &str, args: &[&str]) {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} (installed by .ci/run): {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `text` without the lines from `# BEGIN replicas` to `# END replicas`,
/// and without a `resolvers` section.
fn without_replica_lines(text: &str) -> String {
    let mut kept = Vec::new();
    let mut skip = false;
    for line in text.lines() {
        if line.contains("# BEGIN replicas") || line.starts_with("resolvers ") {
            skip = true;
        } else if line.contains("# END replicas") {
            skip = false;
        } else if !skip {
            kept.push(line);
        }
    }
    // The comment above a section that was left out goes with it.
    while kept
        .last()
        .is_some_and(|line| line.trim().is_empty() || line.starts_with('#'))
    {
        kept.pop();
    }
    kept.join("\n")
}

#[test]
fn the_proxy_configurations_are_what_nginx_and_haproxy_accept() {
    let work = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    // nginx: the file is meant for `http { }`, as Debian's conf.d includes it.
    let conf = work.path().join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "pid {dir}/nginx.pid;\nerror_log stderr;\nevents {{}}\nhttp {{ include {file}; }}\n",
            dir = work.path().display(),
            file = root.join("nginx/mme.conf").display()
        ),
    )
    .unwrap();
    let error_log = work.path().join("error.log");
    must_pass(
        "nginx",
        &[
            "-t",
            "-q",
            "-e",
            error_log.to_str().unwrap(),
            "-c",
            conf.to_str().unwrap(),
        ],
    );
    let haproxy = root.join("haproxy/haproxy.cfg");
    must_pass("haproxy", &["-c", "-q", "-f", haproxy.to_str().unwrap()]);

    // Kubernetes' proxy runs the same configuration but for how it finds
    // the replicas (DNS), and HAProxy accepts that one too.
    let manifest = deploy_file("kubernetes/proxy.yaml");
    let embedded: String = manifest
        .split_once("  haproxy.cfg: |\n")
        .unwrap()
        .1
        .lines()
        .take_while(|line| !line.starts_with("---"))
        .map(|line| format!("{}\n", line.strip_prefix("    ").unwrap_or(line)))
        .collect();
    assert_eq!(
        without_replica_lines(&embedded),
        without_replica_lines(&deploy_file("haproxy/haproxy.cfg")),
        "kubernetes/proxy.yaml's haproxy.cfg drifted from haproxy/haproxy.cfg"
    );
    assert!(embedded.contains("server-template mme"), "{embedded}");
    let k8s_cfg = work.path().join("k8s-haproxy.cfg");
    // Without a cluster's DNS to read, the check parses it all the same.
    std::fs::write(
        &k8s_cfg,
        embedded.replace("parse-resolv-conf", "nameserver dns 127.0.0.1:53"),
    )
    .unwrap();
    must_pass("haproxy", &["-c", "-q", "-f", k8s_cfg.to_str().unwrap()]);
}

#[test]
fn the_kubernetes_manifests_validate_and_agree_with_the_server() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes");
    let manifests: Vec<String> = [
        "mme.yaml",
        "hpa.yaml",
        "proxy.yaml",
        "prometheus-adapter.yaml",
    ]
    .iter()
    .map(|name| root.join(name).display().to_string())
    .collect();
    let config = root.join(".yamllint").display().to_string();
    let mut args = vec!["-s", "-c", &config];
    args.extend(manifests.iter().map(String::as_str));
    must_pass("yamllint", &args);
    let mut args = vec!["--strict", "--version", "1.34"];
    args.extend(manifests.iter().map(String::as_str));
    must_pass("kubernetes-validate", &args);

    // The grace period outlasts the drain and the shutdown timeout.
    let server = deploy_file("kubernetes/mme.yaml");
    let value_after = |key: &str| -> String {
        let at = server.find(key).unwrap_or_else(|| panic!("no {key}"));
        let rest = &server[at + key.len()..];
        let line = rest.lines().nth(1).unwrap_or_default();
        line.trim().trim_start_matches("value:").trim().to_string()
    };
    let drain = humantime::parse_duration(&value_after("name: MME_DRAIN_DELAY")).unwrap();
    let shutdown = humantime::parse_duration(&value_after("name: MME_SHUTDOWN_TIMEOUT")).unwrap();
    let grace: u64 = server
        .split_once("terminationGracePeriodSeconds: ")
        .unwrap()
        .1
        .lines()
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        Duration::from_secs(grace) > drain + shutdown,
        "terminationGracePeriodSeconds {grace} is not above {drain:?} + {shutdown:?}"
    );
    // The probe the drain turns to 503 is the readiness probe.
    let readiness = server.split_once("readinessProbe:").unwrap().1;
    assert!(
        readiness
            .lines()
            .take(6)
            .any(|l| l.contains("path: /v2/health/ready")),
        "{readiness}"
    );
    // The HPA's metric is one the adapter provides, from one the server exports.
    let hpa = deploy_file("kubernetes/hpa.yaml");
    let adapter = deploy_file("kubernetes/prometheus-adapter.yaml");
    assert!(hpa.contains("name: mme_queue_length"));
    assert!(adapter.contains("as: \"mme_queue_length\""));
}
