"""Backend health: active rise/fall, passive outlier ejection, eligibility with panic.

Owns the public face of the health package. It must never probe, sleep or read a clock.
"""

from gateway.health.active import (
    ActiveHealth,
    ActiveHealthBoard,
    ActiveState,
    HealthTransitionError,
    Transition,
)
from gateway.health.outlier import (
    Ejected,
    EjectionRefused,
    FailureKind,
    OutlierDetector,
    OutlierSettings,
)
from gateway.health.selection import eligible

__all__ = [
    "ActiveHealth",
    "ActiveHealthBoard",
    "ActiveState",
    "Ejected",
    "EjectionRefused",
    "FailureKind",
    "HealthTransitionError",
    "OutlierDetector",
    "OutlierSettings",
    "Transition",
    "eligible",
]
