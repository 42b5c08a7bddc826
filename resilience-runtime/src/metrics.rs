//! Metrics through the `metrics` facade (feature `metrics`). Being written.

use crate::breaker::CircuitState;
use crate::events::EventKind;
use crate::ServiceName;

/// Per-service metric handles.
pub(crate) struct ServiceMetrics {}

impl ServiceMetrics {
    pub(crate) fn new(_service: &ServiceName) -> Self {
        Self {}
    }
    #[inline]
    pub(crate) fn record(&self, _kind: &EventKind) {}
}

pub(crate) fn transition(_service: &ServiceName, _from: CircuitState, _to: CircuitState) {}
