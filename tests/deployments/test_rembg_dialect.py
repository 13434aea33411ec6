"""rembg's parameters onto our options, and a request's model choice in the router (no cluster).

The service tests (`tests/service/test_rembg_dialect.py`) run rembg's documented requests
against a real app; these pin the mapping and every refusal's message.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
import pytest

from deployments.dialects import rembg
from deployments.group_monitor import GroupMonitor
from deployments.routing import MaskRouter, RoutingConfig
from imaging.errors import InvalidOptionError
from imaging.options import Channels, Edges, RenderOptions
from models.registry import RMBG, U2NET


def test_defaults_are_rembgs_plain_cutout_with_the_configured_model() -> None:
    parsed = rembg.parse({})
    # rembg's default cut-out keeps the photo's pixels under the mask (no decontamination)
    assert parsed.options == RenderOptions(edges=Edges.RAW)
    assert parsed.model is None


@pytest.mark.parametrize(
    ("params", "fields"),
    [
        ({"om": "true"}, {"channels": "alpha", "edges": "raw"}),
        ({"dc": "1"}, {"edges": "refined"}),
        ({"bgc": "255,255,255,255"}, {"bg_color": "ffffffff", "edges": "raw"}),
        ({"bgc": "0, 128, 255"}, {"bg_color": "0080ffff", "edges": "raw"}),
        ({"bgc": "10,20,30,0", "dc": "on"}, {"bg_color": "0a141e00", "edges": "refined"}),
        ({"ppm": "yes"}, {"post_process_mask": "true", "edges": "raw"}),
        # rembg ignores bgc with om (the mask has no background): so do we
        ({"om": "t", "bgc": "1,2,3,4"}, {"channels": "alpha", "edges": "raw"}),
        # alpha matting's thresholds are checked, and used only with a (refused)
        ({"a": "false", "af": "240", "ab": "10", "ae": "15"}, {"edges": "raw"}),
        ({"vm": "0", "extras": "{}", "a": ""}, {"edges": "raw"}),
    ],
)
def test_parameters_map_onto_native_fields(params: dict[str, str], fields: dict[str, str]) -> None:
    assert rembg.native_fields(params) == fields
    assert rembg.parse(params).options == RenderOptions.parse(fields)


def test_om_is_the_native_alpha_channel() -> None:
    options = rembg.parse({"om": "true", "ppm": "true"}).options
    assert options.channels is Channels.ALPHA and options.post_process_mask


@pytest.mark.parametrize(
    ("name", "tier"), [("bria-rmbg", RMBG), ("u2net", U2NET), ("u2netp", U2NET), (" U2NET ", U2NET)]
)
def test_models_map_to_tiers(name: str, tier: str) -> None:
    assert rembg.parse({"model": name}).model == tier


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"model": "isnet-general-use"}, "not served here: send bria-rmbg, u2net, u2netp"),
        ({"a": "true"}, "alpha matting.*Send dc=true"),
        ({"vm": "true"}, "ViTMatte.*send dc=true"),
        ({"extras": '{"model_path": "/x"}'}, "extras .*Send no extras"),
        ({"extras": "not json"}, "Send no extras"),
        ({"af": "256"}, "invalid af '256': send a whole number from 0 to 255"),
        ({"ab": "-1"}, "invalid ab '-1'"),
        ({"ae": "x"}, "invalid ae 'x': send a whole number of 0 or more"),
        ({"om": "maybe"}, "invalid om 'maybe': send true or false"),
        ({"bgc": "255,255"}, "invalid bgc '255,255': send R,G,B,A with 3 or 4"),
        ({"bgc": "256,0,0,0"}, "from 0 to 255"),
        ({"bgc": "white"}, "e.g. 255,255,255,255"),
    ],
)
def test_refusals_say_what_to_send(params: dict[str, str], match: str) -> None:
    with pytest.raises(InvalidOptionError, match=match):
        rembg.parse(params)


def test_collect_merges_query_and_form() -> None:
    query = [("model", "u2net"), ("bgc", "1,2,3,4")]
    form = [("om", "true"), ("model", "u2net")]  # the same value twice is fine
    merged = rembg.collect([query, form], rembg.POST_PARAMS)
    assert merged == {"model": "u2net", "bgc": "1,2,3,4", "om": "true"}
    with pytest.raises(InvalidOptionError, match="om was sent twice with different values"):
        rembg.collect([[("om", "true")], [("om", "false")]], rembg.POST_PARAMS)
    with pytest.raises(InvalidOptionError, match=r"unknown parameter 'url'.*takes a, ab"):
        rembg.collect([[("url", "http://x")]], rembg.POST_PARAMS)
    assert rembg.collect([[("url", "http://x")]], rembg.GET_PARAMS) == {"url": "http://x"}


def test_openapi_lists_every_parameter() -> None:
    names = [p["name"] for p in rembg.openapi_parameters(get=True)]
    assert names == ["url", *rembg.PARAMS]
    assert [p["name"] for p in rembg.openapi_parameters(get=False)] == list(rembg.PARAMS)


class _Done:
    """A DeploymentResponse that has its answer."""

    def __init__(self, mask: np.ndarray) -> None:
        self._mask = mask

    def __await__(self) -> Any:
        async def result() -> np.ndarray:
            return self._mask

        return result().__await__()

    def cancel(self) -> None:
        pass


class _Handle:
    def __init__(self, value: int) -> None:
        self.calls = 0
        self.predict = self
        self._value = value

    def remote(self, image: np.ndarray) -> _Done:
        self.calls += 1
        return _Done(np.full(image.shape[:2], self._value, dtype=np.uint8))


def _router(model: str) -> tuple[MaskRouter, dict[str, _Handle]]:
    """Both groups live; the configured primary is ``model``."""
    handles = {RMBG: _Handle(200), U2NET: _Handle(100)}
    monitor = GroupMonitor(handles, interval_s=60)  # type: ignore[arg-type]
    monitor._current.set()  # no polling: the states are set here
    now = time.monotonic()
    for state in monitor.states.values():
        state.updated_at, state.running_replicas = now, 1
        state.replicas["r0"] = ({"replica_id": "r0", "loaded": True}, 0)
    router = MaskRouter(handles, monitor)  # type: ignore[arg-type]
    router.config = RoutingConfig.from_user_config({"model": model})
    return router, handles


def test_a_request_picks_its_model_and_keeps_the_fallback() -> None:
    image = np.zeros((4, 4, 3), dtype=np.uint8)

    async def run() -> None:
        router, handles = _router(RMBG)
        outcome = await router.mask(image, model=U2NET)
        assert (outcome.model, outcome.fallback_reason) == (U2NET, None)
        assert handles[RMBG].calls == 0
        outcome = await router.mask(image, model=RMBG)
        assert (outcome.model, int(outcome.mask[0, 0])) == (RMBG, 200)
        # a U2-Net-only app runs no RMBG-2.0 replica: asking for it falls back, saying why,
        # and never calls (and so never starts) the idle group
        router, handles = _router(U2NET)
        outcome = await router.mask(image, model=RMBG)
        assert (outcome.model, outcome.fallback_reason) == (U2NET, "not_deployed")
        assert handles[RMBG].calls == 0 and handles[U2NET].calls == 1
        assert (await router.mask(image)).model == U2NET

    asyncio.run(run())
