use std::io::Write;

use super::*;

fn tenancy(text: &str) -> (Tenancy, tempfile::NamedTempFile) {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(text.as_bytes()).unwrap();
    (Tenancy::load(file.path()).unwrap(), file)
}

const TWO: &str = r#"
[admin]
keys = ["root"]
[tenants.acme]
models = ["acme-*"]
inference_keys = ["acme-i"]
management_keys = ["acme-m"]
requests_per_second = 2
[tenants.globex]
models = ["globex-*"]
management_keys = ["globex-m"]
"#;

#[test]
fn keys_name_their_holder_and_role() {
    let (tenancy, _file) = tenancy(TWO);
    assert_eq!(tenancy.identify(None).unwrap_err(), Denied::NoKey);
    assert_eq!(
        tenancy.identify(Some("nope")).unwrap_err(),
        Denied::UnknownKey
    );
    assert!(matches!(tenancy.identify(Some("root")), Ok(Caller::Admin)));
    let Ok(Caller::Tenant { tenant, role }) = tenancy.identify(Some("acme-i")) else {
        panic!("acme's inference key");
    };
    assert_eq!((tenant.name.as_str(), role), ("acme", Role::Inference));
    let globex = tenancy.identify(Some("globex-m")).unwrap();
    assert!(globex.sees("globex-iris") && !globex.sees("acme-iris"));
    assert_eq!(globex.audit_name(), "globex");
}

#[test]
fn roles_decide_actions_and_the_rate_is_the_tenants() {
    let (tenancy, _file) = tenancy(TWO);
    let inference = tenancy.identify(Some("acme-i")).unwrap();
    let management = tenancy.identify(Some("acme-m")).unwrap();
    assert_eq!(inference.permit(Action::Manage), Err(Denied::InferenceOnly));
    assert_eq!(management.permit(Action::Admin), Err(Denied::AdminOnly));
    // Two per second for the tenant, whichever of its keys calls.
    assert_eq!(inference.permit(Action::Infer), Ok(()));
    assert_eq!(management.permit(Action::Manage), Ok(()));
    let Err(Denied::RateLimited {
        tenant,
        retry_after,
    }) = inference.permit(Action::Infer)
    else {
        panic!("the third call in a second is over the rate");
    };
    assert_eq!(tenant, "acme");
    assert!(retry_after > Duration::ZERO && retry_after <= Duration::from_secs(1));
    // Another tenant is not slowed.
    let globex = tenancy.identify(Some("globex-m")).unwrap();
    for _ in 0..10 {
        assert_eq!(globex.permit(Action::Infer), Ok(()));
    }
    assert_eq!(Caller::Admin.permit(Action::Admin), Ok(()));
}

#[test]
fn a_reload_keeps_the_old_tenants_when_the_new_file_is_wrong() {
    let (tenancy, mut file) = tenancy(TWO);
    file.as_file_mut().set_len(0).unwrap();
    file.write_all(b"[tenants.acme]\nmodels = [").unwrap();
    assert!(tenancy.reload().is_err());
    assert!(tenancy.identify(Some("acme-i")).is_ok());
    std::fs::write(
        file.path(),
        "[tenants.new]\nmodels = [\"n-*\"]\ninference_keys = [\"n\"]\n",
    )
    .unwrap();
    assert_eq!(tenancy.reload().unwrap(), 1);
    assert_eq!(
        tenancy.identify(Some("acme-i")).unwrap_err(),
        Denied::UnknownKey
    );
    assert!(tenancy.identify(Some("n")).is_ok());
}

#[test]
fn an_oversized_file_is_refused() {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(&vec![b'#'; MAX_FILE_BYTES as usize + 1])
        .unwrap();
    assert!(matches!(
        Tenancy::load(file.path()),
        Err(TenantsError::TooLarge { .. })
    ));
    assert!(matches!(
        Tenancy::load(Path::new("/no/such/tenants.toml")),
        Err(TenantsError::Read { .. })
    ));
}
