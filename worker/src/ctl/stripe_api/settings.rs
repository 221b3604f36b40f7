//! The settings of [`StripeApi`](super::StripeApi) that need more than a
//! range: the key and the base URL. Neither is ever echoed.

use shared::config::{ConfigError, Env, invalid};

use crate::dispatch::settings::DEFAULT_STRIPE_API_BASE;

/// `sk_…` or `rk_…` then letters, digits and `_`: a publishable key
/// (`pk_…`) cannot list events or create endpoints, and anything else
/// would not make a header.
pub(super) fn check_key(key: &str) -> Result<(), ConfigError> {
    let rest = key.strip_prefix("sk_").or_else(|| key.strip_prefix("rk_"));
    match rest {
        Some(rest) if is_key_body(rest) => Ok(()),
        _ => Err(invalid(
            "STRIPE_API_KEY",
            "the account's secret key (sk_…) or a restricted key (rk_…): letters, digits and _ \
             (a publishable key pk_… cannot call these endpoints)",
            None,
        )),
    }
}

fn is_key_body(rest: &str) -> bool {
    !rest.is_empty()
        && rest.len() <= 512
        && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// `STRIPE_API_BASE`: an http(s) URL without credentials, query or
/// fragment (never echoed: it may carry a token); without a trailing slash.
pub(super) fn api_base(env: &Env) -> Result<String, ConfigError> {
    const VAR: &str = "STRIPE_API_BASE";
    let raw = env.string_or(VAR, DEFAULT_STRIPE_API_BASE);
    let well_formed = reqwest::Url::parse(&raw).is_ok_and(|url| {
        matches!(url.scheme(), "http" | "https")
            && url.host_str().is_some_and(|h| !h.is_empty())
            && url.username().is_empty()
            && url.password().is_none()
            && url.query().is_none()
            && url.fragment().is_none()
    });
    if well_formed {
        Ok(raw.trim_end_matches('/').to_owned())
    } else {
        Err(invalid(
            VAR,
            "an http:// or https:// URL without credentials, query or fragment, such as \
             https://api.stripe.com",
            None,
        ))
    }
}
