"""Design review of planned products: a planned product's BOM, routing and tolerances
(:mod:`~sqems.design.plan`) held against what the plant's quality history says about
them."""

from sqems.design.plan import (
    BomItem,
    PlannedParameter,
    PlannedProductSpec,
    RoutingStep,
    SavedPlan,
    StoredPlan,
    check_plan,
    get_plan,
    parse_plan,
    planned_products,
    read_plan,
    release_plan,
    save_plan,
)

__all__ = [
    "BomItem",
    "PlannedParameter",
    "PlannedProductSpec",
    "RoutingStep",
    "SavedPlan",
    "StoredPlan",
    "check_plan",
    "get_plan",
    "parse_plan",
    "planned_products",
    "read_plan",
    "release_plan",
    "save_plan",
]
