//! Stripe's API, for what the dispatcher asks of it. (Being written: issue 8.)

pub mod cancel;
pub mod verified_outputs;

use super::settings::StripeSettings;

/// A client of Stripe's API (`STRIPE_API_KEY`, `STRIPE_API_BASE`).
#[derive(Debug, Clone)]
pub struct StripeClient {
    _settings: StripeSettings,
    _http: reqwest::Client,
}

impl StripeClient {
    pub fn new(settings: StripeSettings, http: reqwest::Client) -> Self {
        Self {
            _settings: settings,
            _http: http,
        }
    }
}
