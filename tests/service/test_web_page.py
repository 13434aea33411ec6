"""The web page at `/`, in a real headless Chromium against a real Serve app (u2net mode).

Chromium and chromedriver are Debian's (`/usr/bin`), named explicitly so that Selenium
Manager never downloads anything. Where they are missing these tests skip, unless
`BG_REMOVAL_REQUIRE_BROWSER=1` (CI: scripts/test.sh), where they fail.
`BG_REMOVAL_SCREENSHOT=<path>` writes the screenshot there (the README's
docs/web-page.png); otherwise it goes to the test's tmp_path.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, NoReturn

import httpx
import pytest

from tests.support.http import post_image
from tests.support.shared import IMAGES

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

PHOTO = IMAGES / "horse.jpg"  # 770x595, 59 KB: quick through u2netp
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
DESKTOP = (1280, 1000)
PHONE = (360, 780)  # narrower than most phones (375-430 px)
SCREENSHOT_HEIGHT = 1100
WAIT_S = 90


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("BG_REMOVAL_REQUIRE_BROWSER") == "1":
        pytest.fail(
            f"{reason}, and BG_REMOVAL_REQUIRE_BROWSER=1 requires the browser tests: "
            "apt-get install chromium chromium-driver, and pip install -e '.[test]'",
            pytrace=False,
        )
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    """Headless Chromium, checked before the app is deployed so that a skip costs nothing."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.is_file()]
    if missing:
        _unavailable(f"no {' or '.join(missing)}")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _unavailable("selenium is not installed")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--force-device-scale-factor=1",
        "--lang=en-US",
        f"--window-size={DESKTOP[0]},{DESKTOP[1]}",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def url(browser: WebDriver, request: pytest.FixtureRequest) -> str:
    """The app's root, under its route prefix and without a trailing slash (the session's
    u2netp app, deployed once the browser is known to be there)."""
    return request.getfixturevalue("u2netp_app")


def _wait(driver: WebDriver, condition: Callable[[WebDriver], Any], what: str) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT_S, poll_frequency=0.1).until(condition, what)


def _js(driver: WebDriver, script: str, *args: Any) -> Any:
    return driver.execute_script(script, *args)


def _open_page(driver: WebDriver, url: str) -> None:
    driver.get(url)
    _wait(driver, lambda d: "u2net" in _text(d, "health"), "the health pill to show the model")


def _text(driver: WebDriver, element_id: str) -> str:
    return str(_js(driver, "return document.getElementById(arguments[0]).textContent", element_id))


def _shown(driver: WebDriver, element_id: str) -> bool:
    return bool(_js(driver, "return !document.getElementById(arguments[0]).hidden", element_id))


def _choose_photo(driver: WebDriver) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.ID, "file").send_keys(str(PHOTO))
    _wait(driver, lambda d: _natural_width(d, "before") > 0, "the original's preview")


def _natural_width(driver: WebDriver, element_id: str) -> int:
    script = (
        "const i = document.getElementById(arguments[0]); return i.complete ? i.naturalWidth : 0"
    )
    return int(_js(driver, script, element_id))


def _select(driver: WebDriver, element_id: str, value: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    Select(driver.find_element(By.ID, element_id)).select_by_value(value)


def _submit_and_wait(driver: WebDriver) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.ID, "go").click()
    _wait(
        driver,
        lambda d: _shown(d, "error") or (_shown(d, "details") and _natural_width(d, "after") > 0),
        "a result or an error",
    )


def _result(driver: WebDriver) -> tuple[int, int, str]:
    """The result's natural size and media type, as the page shows them."""
    _wait(driver, lambda d: " px, " in _text(d, "size"), "the result's size")
    width, height = _js(
        driver,
        "const i = document.getElementById('after'); return [i.naturalWidth, i.naturalHeight]",
    )
    media_type = _text(driver, "size").split(", ")[1]
    return int(width), int(height), media_type


def _record_sent_fields(driver: WebDriver) -> None:
    """Remember the form fields of the page's next requests (in `window.sent`)."""
    _js(
        driver,
        "window.sent = []; const fetch0 = window.fetch; window.fetch = (url, init) => {"
        " if (init && init.body instanceof FormData) window.sent.push("
        "[...init.body.entries()].map(([k, v]) => [k, typeof v === 'string' ? v : v.name]));"
        " return fetch0(url, init); }",
    )


def _sent_fields(driver: WebDriver) -> dict[str, str]:
    return dict(_js(driver, "return window.sent[window.sent.length - 1]"))


def _no_horizontal_scroll(driver: WebDriver) -> bool:
    script = "const e = document.documentElement; return e.scrollWidth <= e.clientWidth"
    return bool(_js(driver, script))


def test_page_is_served_at_the_root_with_a_strict_csp(url: str) -> None:
    response = httpx.get(f"{url}/", timeout=30)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    csp = response.headers["content-security-policy"]
    assert "default-src 'self'" in csp
    assert "script-src 'sha256-" in csp and "style-src 'sha256-" in csp
    assert "img-src 'self' blob: data:" in csp
    assert "unsafe" not in csp
    # the prefix without its slash leads to the page too
    assert httpx.get(url, timeout=30, follow_redirects=True).text == response.text
    assert "/" not in httpx.get(f"{url}/openapi.json", timeout=30).json()["paths"]


@pytest.mark.parametrize(
    ("path", "public"),
    [("/web", True), ("/web/", True), ("/web/api/v1/remove-background", False)],
)
def test_the_page_needs_no_api_key(path: str, public: bool) -> None:
    """The page is public (a key is typed into it), under its prefix with or without a slash."""
    from deployments.guard import RequestGuard

    reached: list[str] = []
    sent: list[dict[str, Any]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        reached.append(scope["path"])

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    config = SimpleNamespace(
        cors_allow_origins=(), api_key_hashes=frozenset({"0" * 64}), max_upload_bytes=1000
    )
    guard = RequestGuard(app, config_of=lambda: config)
    scope = {"type": "http", "method": "GET", "path": path, "root_path": "/web", "headers": []}
    asyncio.run(guard(scope, receive, send))
    assert reached == ([path] if public else [])
    if not public:
        assert sent[0]["status"] == 401


def test_cut_out_in_the_browser(browser: WebDriver, url: str, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    _open_page(browser, url)
    _choose_photo(browser)
    _select(browser, "style", "minimal")
    _submit_and_wait(browser)
    assert not _shown(browser, "error"), _text(browser, "error")
    after = browser.find_element(By.ID, "after")
    assert after.is_displayed()
    # minimal keeps the photo's ratio (770x595)
    width, height = _js(
        browser, "return [arguments[0].naturalWidth, arguments[0].naturalHeight]", after
    )
    assert width > 0 and abs(width / height - 770 / 595) < 0.02
    assert _text(browser, "model") == "u2net"  # X-Model-Used of the only model of the app
    assert not _shown(browser, "fallback")
    assert re.fullmatch(r"\d+ ms", _text(browser, "time"))
    assert "Done: u2net" in _text(browser, "status")
    link = browser.find_element(By.ID, "download")
    assert link.get_attribute("download") == "horse-cutout.png"
    assert str(link.get_attribute("href")).startswith("blob:")

    screenshot = Path(os.environ.get("BG_REMOVAL_SCREENSHOT") or tmp_path / "web-page.png")
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    browser.set_window_size(DESKTOP[0], SCREENSHOT_HEIGHT)  # the whole form
    try:
        _js(browser, "window.scrollTo(0, 0)")
        assert browser.save_screenshot(str(screenshot))
    finally:
        browser.set_window_size(*DESKTOP)

    # the before/after slider works from the keyboard
    slider = browser.find_element(By.ID, "compare")
    slider.send_keys(Keys.HOME)
    assert _js(browser, "return arguments[0].style.clipPath", after) == "inset(0px 0px 0px 0%)"
    slider.send_keys(Keys.END)
    assert _js(browser, "return document.getElementById('before').style.clipPath") == (
        "inset(0px 0% 0px 0px)"
    )
    violations = [
        entry["message"]
        for entry in browser.get_log("browser")
        if "Content Security Policy" in entry["message"]
    ]
    assert not violations


def test_api_error_is_shown_as_it_is(browser: WebDriver, url: str) -> None:
    expected = post_image(url, PHOTO.read_bytes(), filename=PHOTO.name, format="jpeg")
    assert expected.status_code == 422
    _open_page(browser, url)
    _choose_photo(browser)
    _select(browser, "format", "jpeg")  # no style, no colour: nothing to fill the transparency
    _submit_and_wait(browser)
    assert _shown(browser, "error")
    assert _text(browser, "error") == f"Error 422: {expected.json()['error']['message']}"
    assert not _shown(browser, "after") and not _shown(browser, "details")


def test_every_control_is_reached_with_the_keyboard(browser: WebDriver, url: str) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    _open_page(browser, url)
    _js(browser, "document.activeElement.blur()")
    visited: list[str] = []
    outlines: dict[str, str] = {}
    for _ in range(30):
        ActionChains(browser).send_keys(Keys.TAB).perform()
        focused = _js(
            browser,
            "const e = document.activeElement; return [e.id, getComputedStyle(e).outlineStyle]",
        )
        visited.append(focused[0])
        outlines[focused[0]] = focused[1]
        if focused[0] == "go":
            break
    controls = ["drop", "preset", "style", "ratio", "output-size", "channels"]
    controls += ["bg-none", "bg-color", "bg-choose", "crop", "format", "edges", "key-summary", "go"]
    assert [v for v in visited if v in controls] == controls, visited
    assert "file" not in visited and "bg-file" not in visited  # their buttons are the tab stops
    assert all(outlines[c] == "solid" for c in controls), outlines  # focus is visible
    # crop's margin joins the tab order once crop is on
    _js(browser, "document.getElementById('crop').focus()")
    ActionChains(browser).send_keys(Keys.SPACE).send_keys(Keys.TAB).perform()
    assert _js(browser, "return document.activeElement.id") == "margin"
    # Enter on the drop zone opens the file picker (caught here: headless has no dialog)
    _js(
        browser,
        "window.picked = false; document.getElementById('file').addEventListener("
        "'click', (e) => { e.preventDefault(); window.picked = true; })",
    )
    _js(browser, "document.getElementById('drop').focus()")
    ActionChains(browser).send_keys(Keys.ENTER).perform()
    assert _js(browser, "return window.picked") is True
    # and so does Enter on the background image's button
    _js(
        browser,
        "window.picked = false; document.getElementById('bg-file').addEventListener("
        "'click', (e) => { e.preventDefault(); window.picked = true; })",
    )
    _js(browser, "document.getElementById('bg-choose').focus()")
    ActionChains(browser).send_keys(Keys.ENTER).perform()
    assert _js(browser, "return window.picked") is True


def test_every_control_has_a_label() -> None:
    """Each form control is named by a <label for> (or sits inside its label)."""
    from deployments.webpage import web_page

    html = web_page().html
    ids = re.findall(r'<(?:input|select)\b[^>]*\bid="([^"]+)"', html)
    assert {"preset", "output-size", "channels", "bg-file", "bg-img"} <= set(ids)
    for control in ids:
        wrapped = re.search(rf'<label\b[^>]*>\s*<input[^>]*\bid="{control}"', html)
        assert f'<label for="{control}"' in html or wrapped, control


def test_static_presets_match_the_built_in_ones() -> None:
    """The page lists the built-in presets until the server names its own (health details)."""
    from deployments.webpage import web_page
    from imaging.presets import builtin_presets

    select = re.search(r'<select id="preset"[^>]*>(.*?)</select>', web_page().html, re.DOTALL)
    assert select is not None
    values = re.findall(r'<option value="([^"]*)"', select.group(1))
    assert values == ["", *sorted(builtin_presets())]


def test_marketplace_preset_in_the_browser(browser: WebDriver, url: str) -> None:
    _open_page(browser, url)
    # the test app reports health details: the page lists the server's presets
    _wait(
        browser,
        lambda d: _js(d, "return document.getElementById('preset').dataset.source") == "server",
        "the server's presets",
    )
    _record_sent_fields(browser)
    _choose_photo(browser)
    _select(browser, "preset", "marketplace-white")
    _submit_and_wait(browser)
    assert not _shown(browser, "error"), _text(browser, "error")
    # only what was set is sent: the preset's own values apply
    assert _sent_fields(browser) == {"file": PHOTO.name, "preset": "marketplace-white"}
    assert _result(browser) == (2000, 2000, "image/jpeg")
    assert _js(browser, "return document.getElementById('download').download") == "horse-cutout.jpg"


def test_alpha_channel_in_the_browser(browser: WebDriver, url: str) -> None:
    _open_page(browser, url)
    _record_sent_fields(browser)
    _choose_photo(browser)
    _select(browser, "channels", "alpha")
    _submit_and_wait(browser)
    assert not _shown(browser, "error"), _text(browser, "error")
    assert _sent_fields(browser) == {"file": PHOTO.name, "channels": "alpha"}
    assert _result(browser) == (770, 595, "image/png")
    # the mask alone: grey, opaque, with both subject (white) and background (black)
    grey, opaque, lo, hi = _js(
        browser,
        "const i = document.getElementById('after'), c = document.createElement('canvas');"
        "c.width = i.naturalWidth; c.height = i.naturalHeight;"
        "const g = c.getContext('2d'); g.drawImage(i, 0, 0);"
        "const d = g.getImageData(0, 0, c.width, c.height).data;"
        "let grey = true, opaque = true, lo = 255, hi = 0;"
        "for (let k = 0; k < d.length; k += 4) {"
        " grey = grey && d[k] === d[k + 1] && d[k + 1] === d[k + 2];"
        " opaque = opaque && d[k + 3] === 255;"
        " lo = Math.min(lo, d[k]); hi = Math.max(hi, d[k]); }"
        "return [grey, opaque, lo, hi]",
    )
    assert grey and opaque and lo < 16 and hi > 240, (grey, opaque, lo, hi)


def test_bad_output_size_shows_the_api_message(browser: WebDriver, url: str) -> None:
    from selenium.webdriver.common.by import By

    bad = "2000 by 2000"
    expected = post_image(url, PHOTO.read_bytes(), filename=PHOTO.name, output_size=bad)
    assert expected.status_code == 422
    _open_page(browser, url)
    _choose_photo(browser)
    size = browser.find_element(By.ID, "output-size")
    size.send_keys(bad)
    # the pattern marks it (the page still sends it: the API's message says what is wrong)
    assert _js(browser, "return arguments[0].matches(':invalid')", size) is True
    _submit_and_wait(browser)
    assert _text(browser, "error") == f"Error 422: {expected.json()['error']['message']}"
    assert "output_size" in _text(browser, "error")
    assert not _shown(browser, "after") and not _shown(browser, "details")


def test_phone_width_has_no_horizontal_scroll(browser: WebDriver, url: str) -> None:
    browser.set_window_size(*PHONE)
    try:
        _open_page(browser, url)
        assert _js(browser, "return window.innerWidth") <= PHONE[0]
        assert _no_horizontal_scroll(browser)
        _choose_photo(browser)
        _select(browser, "style", "street")
        _submit_and_wait(browser)
        assert _shown(browser, "details"), _text(browser, "error")
        assert _no_horizontal_scroll(browser)
    finally:
        browser.set_window_size(*DESKTOP)


def test_background_image_in_the_browser(browser: WebDriver, url: str) -> None:
    from selenium.webdriver.common.by import By

    backdrop = IMAGES / "boat.jpg"
    _open_page(browser, url)
    _record_sent_fields(browser)
    _choose_photo(browser)
    browser.find_element(By.ID, "bg-file").send_keys(str(backdrop))
    assert browser.find_element(By.ID, "bg-img").is_selected()  # choosing one selects it
    assert _text(browser, "bg-name") == backdrop.name
    _select(browser, "format", "jpeg")  # opaque now: JPEG is allowed
    _submit_and_wait(browser)
    assert not _shown(browser, "error"), _text(browser, "error")
    assert _sent_fields(browser) == {
        "file": PHOTO.name,
        "bg_image_file": backdrop.name,
        "format": "jpeg",
    }
    assert _result(browser) == (770, 595, "image/jpeg")
    # back to no background: the image stays chosen but is no longer sent
    browser.find_element(By.ID, "bg-none").click()
    _submit_and_wait(browser)
    assert _sent_fields(browser) == {"file": PHOTO.name, "format": "jpeg"}
    assert _text(browser, "error").startswith("Error 422: ")  # a transparent JPEG
