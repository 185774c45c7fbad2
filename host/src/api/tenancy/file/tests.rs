use super::*;

const ACME: &str = r#"
[admin]
keys = ["sha256:2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b"]

[tenants.acme]
models = ["acme-*", "shared-iris"]
inference_keys = ["acme-infer"]
management_keys = ["acme-manage"]
memory = "2GiB"
max_models = 500
requests_per_second = 1000
cpu_weight = 3
"#;

fn error_of(text: &str) -> String {
    Tenants::parse(text).unwrap_err().to_string()
}

#[test]
fn the_documented_file_reads_as_written() {
    let (tenants, warnings) = Tenants::parse(ACME).unwrap();
    let acme = &tenants.tenants()[0];
    assert_eq!(acme.name, "acme");
    assert_eq!(acme.memory, Some(2 << 30));
    assert_eq!(acme.max_models, Some(500));
    assert_eq!(acme.cpu_weight, 3);
    assert!(acme.rate.is_some());
    assert!(acme.owns("acme-iris") && acme.owns("shared-iris"));
    assert!(!acme.owns("globex-iris") && !acme.owns("acme"));
    assert_eq!(tenants.keys.len(), 3);
    // Both literal tokens are warned about, and the warning names no token.
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(warnings.iter().all(|w| !w.contains("acme-infer\"")));
    assert!(warnings[0].contains("[tenants.acme] inference_keys[0]"));
}

#[test]
fn every_mistake_names_its_place() {
    for (text, expected) in [
        ("[tenants.a]\nmodels = []\n", "[tenants.a] models"),
        ("[tenants.a]\nmodels = [\"a[\"]\n", "[tenants.a] models"),
        (
            "[tenants.a]\nmodels = [\"a*\"]\nmemory = \"lots\"\n",
            "[tenants.a] memory",
        ),
        (
            "[tenants.a]\nmodels = [\"a*\"]\nrequests_per_second = 0\n",
            "requests_per_second",
        ),
        (
            "[tenants.a]\nmodels = [\"a*\"]\ncpu_weight = 0\n",
            "cpu_weight",
        ),
        (
            "[tenants.a]\nmodels = [\"a*\"]\ncpu_weight = 1001\n",
            "cpu_weight",
        ),
        (
            "[tenants.a]\nmodels = [\"a*\"]\nurls = [\"/no/such/root\"]\n",
            "[tenants.a] urls",
        ),
        (
            "[tenants.a]\nmodels = [\"a*\"]\ninference_keys = [\"sha256:xyz\"]\n",
            "inference_keys[0]",
        ),
        (
            "[tenants.a]\nmodels = [\"a*\"]\ninference_keys = [\"\"]\n",
            "inference_keys[0]",
        ),
        ("[tenants.\"a b\"]\nmodels = [\"a*\"]\n", "[tenants.a b]"),
        (
            "[tenants.a]\nmodels = [\"a*\"]\nmax_models = -1\n",
            "max_models",
        ),
        (
            "[tenants.a]\nmodels = [\"a*\"]\nkeys = [\"k\"]\n",
            "unknown field",
        ),
        ("[admin]\nkeys = \"k\"\n", "invalid type"),
        ("[tenants.a]\ninference_keys = [\"k\"]\n", "missing field"),
        ("not toml at all = = =", "not valid"),
    ] {
        let message = error_of(text);
        assert!(message.contains(expected), "{text:?} gave {message:?}");
    }
}

#[test]
fn a_key_names_one_caller() {
    let text = "[admin]\nkeys = [\"k\"]\n[tenants.a]\nmodels = [\"a*\"]\ninference_keys = [\"sha256:2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b\"]\nmanagement_keys = [\"secret\"]\n";
    let message = error_of(text);
    assert!(
        message.contains("[tenants.a] management_keys[0]"),
        "{message}"
    );
    assert!(message.contains("more than once"), "{message}");
    assert!(!message.contains("secret"), "{message}");
}

#[test]
fn hostile_files_are_refused_without_a_panic() {
    let deep = format!("x = {}1{}", "[".repeat(10_000), "]".repeat(10_000));
    let many_tenants: String = (0..2000)
        .map(|i| {
            format!(
                "[tenants.t{i}]\nmodels = [\"t{i}-*\"]\ninference_keys = [\"sha256:{i:064x}\"]\n"
            )
        })
        .collect();
    for text in [
        deep.as_str(),
        "\0\u{feff}[[[",
        "[tenants.a]\nmodels = [\"**/**/**/**/**/**/**/**/**/**/**/**/**/**/**/**\"]\n",
        "[tenants]\na = 1\n",
        &"a".repeat(100_000),
    ] {
        let _ = Tenants::parse(text);
    }
    let (tenants, _) = Tenants::parse(&many_tenants).unwrap();
    assert_eq!(tenants.tenants().len(), 2000);
    assert_eq!(
        tenants.owner_of("t1999-iris").map(|t| t.name.as_str()),
        Some("t1999")
    );
    assert!(tenants.owner_of("nobody").is_none());
}
