//! The scenario suite: starts the real stack, runs the wanted scenario families
//! in a fixed order and returns their report.

use crate::report::Report;
use crate::scenarios::{
    directory, generator, issuer, media, mikopbx, nchan, peers, scale, verifier,
};
use crate::stack::{self, Settings, Stack};

pub fn run(settings: &Settings) -> Result<Report, String> {
    if settings.pin {
        stack::pin_generator()?;
    }
    let stack = Stack::start(settings)?;
    let mut report = Report::new(
        settings.duration,
        settings.connections,
        settings.threads,
        settings.pin,
    );
    let wanted = |name: &str| {
        settings.only.is_empty() || settings.only.iter().any(|o| name.starts_with(o.as_str()))
    };

    if wanted("verifier") {
        verifier::run(settings, &stack, &mut report)?;
    }
    if wanted("media") {
        let ours = media::run(settings, &stack, &mut report)?;
        // The peers answer the same media request, so they run with it and are
        // held against our fronts at the same worker counts.
        peers::run(settings, &stack, &mut report, &ours)?;
    }
    if wanted("nchan") {
        nchan::run(settings, &stack, &mut report)?;
    }
    if wanted("issuer") {
        issuer::run(settings, &stack, &mut report)?;
    }
    if wanted("mikopbx") {
        mikopbx::run(settings, &mut report)?;
    }
    if wanted("directory") {
        directory::run(settings, &mut report)?;
    }
    if wanted("scale") {
        scale::run(settings, stack.bare_addr, &mut report)?;
    }
    if wanted("generator") {
        generator::run(settings, &stack, &mut report)?;
    }
    Ok(report)
}
