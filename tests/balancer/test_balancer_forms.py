"""What the `.pxd` types could make differ between the forms: the same in both (this
module runs in each, see helpers/forms.py; test_pxd_fields.py checks the field names)."""

from __future__ import annotations

import pytest

from haproxyd.balancer.base import create
from haproxyd.balancer.state import Backend, Pool


def test_this_process_runs_the_form_under_test(form: str) -> None:
    import haproxyd.balancer.state as state

    assert state.__file__.endswith(".py") == (form == "interpreted"), state.__file__


def test_a_fractional_weight_is_refused_in_either_form(form: str) -> None:
    with pytest.raises(TypeError):
        Backend("b1", "127.0.0.1", 9001, weight=1.5)  # type: ignore[arg-type]
    backend = Backend("b1", "127.0.0.1", 9001, weight=3)
    pool = Pool("web", create("round_robin"), [backend])
    with pytest.raises(TypeError):
        pool.set_weight("b1", 1.5)  # type: ignore[arg-type]
    assert (backend.weight, backend.effective_weight) == (3, 3)
    pool.set_weight("b1", 2)
    assert (backend.weight, backend.effective_weight) == (2, 2)


def test_the_configured_weight_keeps_what_is_assigned_in_either_form(form: str) -> None:
    # A C integer field would keep 1 of 1.5 compiled and 1.5 interpreted: it is an object.
    backend = Backend("b1", "127.0.0.1", 9001)
    backend.weight = 1.5  # type: ignore[assignment]
    assert backend.weight == 1.5
