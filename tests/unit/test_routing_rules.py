"""Pure routing rules: the budget threshold in integers, smooth weighted round robin,
what a request needs from a model."""

from __future__ import annotations

from relay_server.domain.routing import BudgetRoute, Target, VirtualModel
from relay_server.pipeline.routing.strategies.weighted import Weighted
from relay_server.pipeline.routing.targets import request_needs


def test_the_budget_threshold_is_exact_to_the_micro_dollar() -> None:
    rule = BudgetRoute("br", "ten", None, "smart", "cheap", 9000)
    cap = 1_000_000
    assert not rule.fires(899_999, cap)
    assert rule.fires(900_000, cap)
    assert rule.fires(900_001, cap)
    assert not rule.fires(10**12, 0)  # no cap: never
    odd = BudgetRoute("br", "ten", None, "smart", "cheap", 9001)  # 90.01 % of 333 micros = 299.73
    assert not odd.fires(299, 333) and odd.fires(300, 333)


def test_smooth_weighted_round_robin_is_exact_per_window_and_follows_edits() -> None:
    a, b, c = Target("a", weight=5), Target("b", weight=1), Target("c", weight=1)
    vm = VirtualModel("vm", "fast", None, "weighted", (a, b, c))
    strategy = Weighted()
    picks = [strategy.pick(vm, [a, b, c]).model for _ in range(70)]
    for i in range(0, 70, 7):
        window = picks[i : i + 7]
        assert (window.count("a"), window.count("b"), window.count("c")) == (5, 1, 1)
    assert picks[:7] == ["a", "a", "b", "a", "c", "a", "a"]  # interleaved, never five in a row
    # A target out of reach (residency, capability) is skipped without skewing the others.
    assert {strategy.pick(vm, [b, c]).model for _ in range(10)} == {"b", "c"}
    edited = VirtualModel("vm", "fast", None, "weighted", (a, b))
    assert [strategy.pick(edited, [a, b]).model for _ in range(6)].count("b") == 1


def test_request_needs() -> None:
    assert request_needs({"messages": []}) == frozenset()
    assert request_needs({"tools": [{"type": "function"}]}) == {"tools"}
    assert request_needs({"response_format": {"type": "json_schema"}}) == {"json_schema"}
    assert request_needs({"response_format": {"type": "json_object"}}) == frozenset()
    image = {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}
    assert request_needs({"messages": [{"role": "user", "content": "hi"}, image]}) == {"vision"}
