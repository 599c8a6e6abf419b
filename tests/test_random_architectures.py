"""Random architectures: slim == mask, counted == modeled costs, model unchanged (issue 8)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings

from helpers import check_slim_matches_mask, randomize
from strategies import random_nets


@settings(max_examples=300, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(random_nets())
def test_random_architectures_slim_equals_mask(case):
    net, inputs = case
    randomize(net, 1)
    check_slim_matches_mask(net, inputs)
