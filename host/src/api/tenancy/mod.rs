//! Tenancy (`mme serve --tenants FILE`): every call carries a bearer key, a
//! key belongs to a tenant (or an administrator), and a tenant owns the
//! model names its patterns match and sees nothing else.
//!
//! The file is read at start and again on SIGHUP; a file that fails to
//! read leaves the tenants as they were.

mod file;
mod keys;
mod names;
mod urls;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use governor::clock::{Clock, DefaultClock};

pub use file::{MAX_FILE_BYTES, Role, Tenant, Tenants, TenantsError};
pub use keys::Key;
pub use urls::{AllowedUrls, UrlsError};

use file::Holder;

/// The tenants, as the file said when it was last read.
pub struct Tenancy {
    path: PathBuf,
    current: ArcSwap<Tenants>,
}

impl Tenancy {
    /// Reads the tenants file at `path`, logging what deserves a warning.
    pub fn load(path: &Path) -> Result<Self, TenantsError> {
        let tenants = read(path)?;
        Ok(Tenancy {
            path: path.to_path_buf(),
            current: ArcSwap::from_pointee(tenants),
        })
    }

    /// Reads the file again; on an error the tenants stay as they were.
    /// Rate limits start afresh.
    pub fn reload(&self) -> Result<usize, TenantsError> {
        let tenants = read(&self.path)?;
        let count = tenants.tenants().len();
        self.current.store(Arc::new(tenants));
        Ok(count)
    }

    /// The tenants as they are now.
    pub fn tenants(&self) -> Arc<Tenants> {
        self.current.load_full()
    }

    /// Who holds `token`. The token is hashed before it is looked up, so
    /// the lookup's timing can tell only about its digest, which a caller
    /// cannot steer toward a key's; the one candidate found is compared in
    /// constant time all the same.
    pub fn identify(&self, token: Option<&str>) -> Result<Caller, Denied> {
        let token = token.ok_or(Denied::NoKey)?;
        let presented = Key::of_token(token);
        let tenants = self.current.load();
        let holder = tenants
            .keys
            .get_key_value(&presented)
            .filter(|(key, _)| key.matches(&presented))
            .map(|(_, holder)| *holder);
        match holder.ok_or(Denied::UnknownKey)? {
            Holder::Admin => Ok(Caller::Admin),
            Holder::Tenant(index, role) => tenants
                .tenants
                .get(index)
                .map(|tenant| Caller::Tenant {
                    tenant: tenant.clone(),
                    role,
                })
                .ok_or(Denied::UnknownKey),
        }
    }
}

fn read(path: &Path) -> Result<Tenants, TenantsError> {
    let shown = || path.display().to_string();
    let file = std::fs::File::open(path).map_err(|source| TenantsError::Read {
        path: shown(),
        source,
    })?;
    let mut text = String::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|source| TenantsError::Read {
            path: shown(),
            source,
        })?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(TenantsError::TooLarge { path: shown() });
    }
    let (tenants, warnings) = Tenants::parse(&text)?;
    for warning in warnings {
        tracing::warn!(file = %path.display(), "{warning}");
    }
    Ok(tenants)
}

/// What a call does, for deciding who may make it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Runs a model, or reads what it takes and gives.
    Infer,
    /// Loads, unloads, rescales, describes or lists models.
    Manage,
    /// Reads the whole server's state (`/metrics`).
    Admin,
}

/// Who is calling.
#[derive(Debug, Clone)]
pub enum Caller {
    /// Anyone: the server runs without tenants.
    Anyone,
    /// An administrator: may do everything.
    Admin,
    /// A tenant's key.
    Tenant {
        /// The tenant.
        tenant: Arc<Tenant>,
        /// What its key may do.
        role: Role,
    },
}

impl Caller {
    /// Whether the caller may know that `model` exists.
    pub fn sees(&self, model: &str) -> bool {
        match self {
            Caller::Anyone | Caller::Admin => true,
            // A later version (`m/2`) belongs to whoever owns the name.
            Caller::Tenant { tenant, .. } => tenant.owns(crate::store::split_key(model).0),
        }
    }

    /// Whether the caller's key may do `action`, and its tenant has the
    /// rate left for one more call.
    pub fn permit(&self, action: Action) -> Result<(), Denied> {
        let Caller::Tenant { tenant, role } = self else {
            return Ok(());
        };
        match (action, role) {
            (Action::Admin, _) => return Err(Denied::AdminOnly),
            (Action::Manage, Role::Inference) => return Err(Denied::InferenceOnly),
            _ => {}
        }
        if let Some(rate) = &tenant.rate
            && let Err(later) = rate.check()
        {
            return Err(Denied::RateLimited {
                tenant: tenant.name.clone(),
                retry_after: later.wait_time_from(DefaultClock::default().now()),
            });
        }
        Ok(())
    }

    /// The caller's tenant, if it is one.
    pub fn tenant(&self) -> Option<&Arc<Tenant>> {
        match self {
            Caller::Tenant { tenant, .. } => Some(tenant),
            _ => None,
        }
    }

    /// The caller as the audit log names it: never by its key.
    pub fn audit_name(&self) -> &str {
        match self {
            Caller::Anyone => "-",
            Caller::Admin => "admin",
            Caller::Tenant { tenant, .. } => &tenant.name,
        }
    }
}

/// Why a call is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Denied {
    /// No key came with the call.
    #[error("this server needs a key: send the header Authorization: Bearer <token>")]
    NoKey,
    /// A key that the tenants file does not hold.
    #[error(
        "the key is not known to this server: send Authorization: Bearer <token> with a token the tenants file holds"
    )]
    UnknownKey,
    /// A tenant's key on an administrator's route.
    #[error("only an administrator's key may do this")]
    AdminOnly,
    /// An inference key on a management route.
    #[error(
        "this key may only invoke models: loading, unloading, rescaling and describing need a management key"
    )]
    InferenceOnly,
    /// The tenant's rate is spent.
    #[error("tenant {tenant:?} is over its requests_per_second; retry after {retry_after:?}")]
    RateLimited {
        /// The tenant.
        tenant: String,
        /// When one more call fits.
        retry_after: Duration,
    },
    /// The tenant has as many models loaded as it may.
    #[error("tenant {tenant:?} has {max_models} models loaded, its max_models; unload one first")]
    QuotaExceeded {
        /// The tenant.
        tenant: String,
        /// Its quota.
        max_models: usize,
    },
    /// A package url outside the allowed roots, or one that does not exist.
    #[error(
        "packages may not be registered from this url: it is outside the allowed urls, or does not exist"
    )]
    UrlNotAllowed,
}

#[cfg(test)]
mod tests;
