"""The style layers' cache is bounded by bytes (a long-lived ingress must not keep up to
288 MiB of canvases, as per-style entry counts allowed) and drops the least recently used."""

from __future__ import annotations

from PIL import Image

from imaging.backdrops import CanvasCache


def _maker(made: list[tuple[int, int]]):
    def make(width: int, height: int) -> Image.Image:
        made.append((width, height))
        return Image.new("RGB", (width, height))

    return make


def test_the_cache_keeps_at_most_its_bytes_and_drops_the_least_recently_used() -> None:
    made: list[tuple[int, int]] = []
    make = _maker(made)
    cache = CanvasCache(max_bytes=3 * 10 * 10 * 3)  # three 10x10 RGB canvases
    a = cache.get(("minimal", 10, 10), make)
    assert cache.get(("minimal", 10, 10), make) is a and (cache.hits, cache.misses) == (1, 1)
    cache.get(("mood", 10, 10), make)  # b
    cache.get(("minimal", 10, 10), make)  # a used again: b is now the least recent
    cache.get(("minimal", 10, 12), make)  # c: 960 bytes > 900, so b goes
    assert len(cache) == 2 and cache.nbytes == 10 * 10 * 3 + 10 * 12 * 3
    assert cache.get(("minimal", 10, 10), make) is a  # kept
    assert made == [(10, 10), (10, 10), (10, 12)]
    cache.get(("mood", 10, 10), make)  # b built again
    assert made[-1] == (10, 10) and len(made) == 4 and cache.nbytes <= cache.max_bytes


def test_a_layer_larger_than_the_whole_cache_is_built_but_not_kept() -> None:
    made: list[tuple[int, int]] = []
    cache = CanvasCache(max_bytes=100)
    big = cache.get(("street", 20, 20), _maker(made))
    assert big.size == (20, 20) and len(cache) == 0 and cache.nbytes == 0
    street = cache.get(("street", 4, 4), lambda w, h: (Image.new("RGB", (w, h)),) * 2)
    assert len(street) == 2 and cache.nbytes == 2 * 4 * 4 * 3
