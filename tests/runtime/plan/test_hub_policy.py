"""One rule decides whether the hub may be used: the compiler's check, checkpoint loading
and hub datasets all ask `runtime.plan.hub_policy`."""

import pytest

from runtime.plan import hub_policy as hub


@pytest.mark.parametrize("variable", hub.OFFLINE_VARIABLES)
@pytest.mark.parametrize(
    "value, offline",
    [("1", True), ("true", True), ("YES", True), ("on", True), ("0", False), ("", False), ("false", False)],
)
def test_every_offline_variable_and_spelling(monkeypatch, variable, value, offline):
    for name in hub.OFFLINE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(variable, value)
    assert hub.offline_requested() is offline


def test_the_compiler_and_the_runtime_share_the_rule():
    import runtime.checkpoints.hf_checkpoint as hf
    import runtime.data.sources as sources
    import sftlang.check as check

    assert check.offline_requested is hf.offline_requested is sources.offline_requested is hub.offline_requested
    assert check.hub_reachable is sources.hub_reachable is hub.hub_reachable


def test_an_unreachable_endpoint_answers_fast(monkeypatch):
    """What keeps it fast: one connection attempt, bounded by a timeout, asked once per process."""
    import socket

    hub.hub_reachable.cache_clear()
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: nothing listens
    assert hub.hub_reachable() is False
    hub.hub_reachable.cache_clear()
    attempts = []

    def unreachable(address, timeout=None, *args, **kwargs):
        attempts.append((address, timeout))
        raise OSError("unreachable")

    monkeypatch.setattr(socket, "create_connection", unreachable)
    assert hub.hub_reachable() is False and hub.hub_reachable() is False
    assert attempts == [(("127.0.0.1", 9), 1.5)]  # a bounded wait, and the answer is remembered
    hub.hub_reachable.cache_clear()
