//! The tenants file (`mme serve --tenants FILE`, TOML): who may call, which
//! model names each tenant owns, and its quotas.

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU32;
use std::sync::Arc;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde::Deserialize;

use super::keys::{ByDigest, Key, KeyError, Written};
use super::names::NamePatterns;
use super::urls::{AllowedUrls, UrlsError};

/// The largest tenants file read: thousands of tenants fit well below it.
pub const MAX_FILE_BYTES: u64 = 4 << 20;
/// The largest `cpu_weight`: shares are relative, so more adds nothing.
const MAX_CPU_WEIGHT: u32 = 1000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    admin: AdminTable,
    #[serde(default)]
    tenants: BTreeMap<String, TenantTable>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct AdminTable {
    #[serde(default)]
    keys: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantTable {
    models: Vec<String>,
    #[serde(default)]
    inference_keys: Vec<String>,
    #[serde(default)]
    management_keys: Vec<String>,
    memory: Option<String>,
    max_models: Option<usize>,
    requests_per_second: Option<u32>,
    cpu_weight: Option<u32>,
    #[serde(default)]
    urls: Vec<String>,
}

/// Why a tenants file cannot be used. Keys are never part of a message.
#[derive(Debug, thiserror::Error)]
pub enum TenantsError {
    /// The file cannot be read.
    #[error("cannot read the tenants file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is larger than [`MAX_FILE_BYTES`].
    #[error("the tenants file {path} is larger than {MAX_FILE_BYTES} bytes")]
    TooLarge {
        /// The file.
        path: String,
    },
    /// Not TOML, or not the tenants file's shape.
    #[error("the tenants file is not valid: {0}")]
    Syntax(String),
    /// One entry is wrong.
    #[error("{place}: {reason}")]
    Entry {
        /// Where, as `[tenants.acme] models`.
        place: String,
        /// What is wrong and what to write instead.
        reason: String,
    },
}

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Invoke the tenant's models.
    Inference,
    /// Also load, unload, rescale and describe them.
    Management,
}

/// Who a key belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Holder {
    /// An administrator.
    Admin,
    /// The tenant at this index, in this role.
    Tenant(usize, Role),
}

/// One tenant, as the file describes it.
pub struct Tenant {
    /// Its name, the table's.
    pub name: String,
    models: NamePatterns,
    /// Its share of the memory budget, in bytes.
    pub memory: Option<u64>,
    /// How many of its models may be loaded at once.
    pub max_models: Option<usize>,
    /// Its requests per second, refilled continuously.
    pub(super) rate: Option<DefaultDirectRateLimiter>,
    /// Its share of the compute threads against other tenants.
    pub cpu_weight: u32,
    /// Where its packages may come from, within the server's roots; empty:
    /// wherever the server allows.
    pub urls: AllowedUrls,
}

impl Tenant {
    /// Whether `model` is one of this tenant's names.
    pub fn owns(&self, model: &str) -> bool {
        self.models.matches(model)
    }
}

impl std::fmt::Debug for Tenant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tenant")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// The tenants file, read and checked.
#[derive(Debug, Default)]
pub struct Tenants {
    pub(super) tenants: Vec<Arc<Tenant>>,
    /// Every key by its digest.
    pub(super) keys: HashMap<Key, Holder, ByDigest>,
}

/// Something in a file that works but deserves the operator's attention.
pub type Warning = String;

impl Tenants {
    /// The tenants `text` describes, and what deserves a warning.
    pub fn parse(text: &str) -> Result<(Tenants, Vec<Warning>), TenantsError> {
        let file: File = toml::from_str(text).map_err(|e| TenantsError::Syntax(e.to_string()))?;
        let mut warnings = Vec::new();
        let mut parsed = Tenants::default();
        add_keys(
            &mut parsed,
            &mut warnings,
            &file.admin.keys,
            "[admin] keys".into(),
            Holder::Admin,
        )?;
        for (name, table) in file.tenants {
            let place = |field: &str| format!("[tenants.{name}] {field}");
            let index = parsed.tenants.len();
            check_name(&name).map_err(|reason| TenantsError::Entry {
                place: format!("[tenants.{name}]"),
                reason,
            })?;
            add_keys(
                &mut parsed,
                &mut warnings,
                &table.inference_keys,
                place("inference_keys"),
                Holder::Tenant(index, Role::Inference),
            )?;
            add_keys(
                &mut parsed,
                &mut warnings,
                &table.management_keys,
                place("management_keys"),
                Holder::Tenant(index, Role::Management),
            )?;
            let entry = |field: &str| {
                let at = place(field);
                move |reason: String| TenantsError::Entry { place: at, reason }
            };
            let tenant = Tenant {
                models: NamePatterns::new(&table.models).map_err(entry("models"))?,
                memory: table
                    .memory
                    .map(|text| {
                        text.parse::<bytesize::ByteSize>()
                            .map(|size| size.as_u64())
                            .map_err(|e| format!("{text:?} is not a size such as \"2GiB\": {e}"))
                    })
                    .transpose()
                    .map_err(entry("memory"))?,
                max_models: table.max_models,
                rate: table
                    .requests_per_second
                    .map(|rate| {
                        NonZeroU32::new(rate)
                            .map(|rate| RateLimiter::direct(Quota::per_second(rate)))
                            .ok_or_else(|| {
                                "must be at least 1; leave it out for no limit".to_string()
                            })
                    })
                    .transpose()
                    .map_err(entry("requests_per_second"))?,
                cpu_weight: match table.cpu_weight {
                    None => 1,
                    Some(weight @ 1..=MAX_CPU_WEIGHT) => weight,
                    Some(weight) => {
                        return Err(entry("cpu_weight")(format!(
                            "{weight} is not between 1 and {MAX_CPU_WEIGHT}"
                        )));
                    }
                },
                urls: AllowedUrls::parse(&table.urls)
                    .map_err(|e: UrlsError| entry("urls")(e.to_string()))?,
                name,
            };
            if table.inference_keys.is_empty() && table.management_keys.is_empty() {
                warnings.push(format!(
                    "[tenants.{}] has no keys: nobody can call its models",
                    tenant.name
                ));
            }
            parsed.tenants.push(Arc::new(tenant));
        }
        Ok((parsed, warnings))
    }

    /// The tenant that owns `model`, if one does: the first in the file's
    /// order of names whose patterns match.
    pub fn owner_of(&self, model: &str) -> Option<&Arc<Tenant>> {
        self.tenants.iter().find(|tenant| tenant.owns(model))
    }

    /// Every tenant.
    pub fn tenants(&self) -> &[Arc<Tenant>] {
        &self.tenants
    }
}

/// Adds the keys `written` at `place` for `holder`, refusing one that is
/// already someone's.
fn add_keys(
    parsed: &mut Tenants,
    warnings: &mut Vec<Warning>,
    written: &[String],
    place: String,
    holder: Holder,
) -> Result<(), TenantsError> {
    for (index, key) in written.iter().enumerate() {
        let at = || format!("{place}[{index}]");
        let (key, how) = Key::parse(key).map_err(|e: KeyError| TenantsError::Entry {
            place: at(),
            reason: e.to_string(),
        })?;
        if how == Written::Literally {
            warnings.push(format!(
                "{} is a token written literally: anyone who reads the file can use it; write sha256:<hex> of the token instead",
                at()
            ));
        }
        if parsed.keys.contains_key(&key) {
            return Err(TenantsError::Entry {
                place: at(),
                reason: "this key appears more than once in the file; a key must name one caller"
                    .into(),
            });
        }
        parsed.keys.insert(key, holder);
    }
    Ok(())
}

fn check_name(name: &str) -> Result<(), String> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err("a tenant's name is 1 to 64 letters, digits, '-', '_' or '.'".into())
    }
}

#[cfg(test)]
mod tests;
