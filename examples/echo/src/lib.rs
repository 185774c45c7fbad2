//! A model that answers its input unchanged. Serving it costs everything a
//! request costs the host (HTTP, the model's queue, a compute thread, the
//! call into the sandbox and back) and nothing of a model's own: the demo
//! measures it beside the linear-regression example for that reason.

use mme_guest::{Config, Error, Model, Request, Response, export_model};

/// No state: there is nothing to load.
struct Echo;

impl Model for Echo {
    fn load(_config: &Config) -> Result<Self, Error> {
        Ok(Echo)
    }

    fn predict(&self, request: Request) -> Result<Response, Error> {
        Ok(Response::new(request.content_type, request.body))
    }
}

export_model!(Echo);
