"""`stargan serve` in a real browser: headless Chromium (Debian's `chromium`) driven by Playwright.

The server runs as its own process (`python -m stargan.cli serve`) on a free loopback port with a
tiny model. Skipped, saying why, when Gradio, Playwright or Chromium is missing.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

import stargan
from stargan.serve.uploads import MAX_UPLOAD_BYTES

pytest.importorskip("gradio", reason="the serve extra is not installed: pip install -e '.[serve]'")
sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed")
CHROMIUM = os.environ.get("STARGAN_TEST_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [pytest.mark.slow, pytest.mark.browser,
              pytest.mark.skipif(CHROMIUM is None, reason="no Chromium: apt-get install -y chromium")]

# Root in a container: no sandbox; and nothing that reaches for the internet.
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
                  "--disable-background-networking", "--disable-component-update", "--disable-dev-shm-usage"]
SCREENSHOT = Path(os.environ.get("STARGAN_SCREENSHOT_DIR", "")) if os.environ.get("STARGAN_SCREENSHOT_DIR") \
    else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def server(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log = tmp_path_factory.mktemp("server") / "serve.log"
    src = str(Path(stargan.__file__).parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    with open(log, "w") as out:
        process = subprocess.Popen([sys.executable, "-m", "stargan.cli", "serve", str(tiny_run), "--port",
                                    str(port), "--device", "cpu"], stdout=out, stderr=subprocess.STDOUT,
                                   env=env, cwd=tiny_run.parent)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 90
        while not answers(url):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"`stargan serve` did not start:\n{log.read_text()}")
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="module")
def page(server: str) -> Iterator[object]:
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.set_default_timeout(30_000)
        page.goto(server)
        page.wait_for_selector("#translate")
        yield page
        browser.close()


def images_loaded(page: object, selector: str, count: int) -> None:
    """Wait until ``count`` images under ``selector`` exist and have finished loading (a busy machine
    shows the <img> elements before their pixels arrive)."""
    page.wait_for_function(
        "([sel, n]) => { const imgs = [...document.querySelectorAll(sel)];"
        " return imgs.length >= n && imgs.every(i => i.complete && i.naturalWidth > 0); }",
        arg=[selector, count])


def status_contains(page: object, text: str) -> None:
    page.wait_for_function("t => document.querySelector('#status').innerText.includes(t)", arg=text)


def test_upload_translate_and_see_the_outputs(page: object, demo_data: Path, tmp_path: Path) -> None:
    source = demo_data / "val" / "circle" / "00000.png"
    page.locator("#source-file input[type=file]").set_input_files(str(source))
    status_contains(page, "source: 00000.png (16x16)")
    page.locator("#domain").get_by_label("square").check()
    page.locator("#num-styles input[type=number]").fill("3")
    page.locator("#num-styles input[type=number]").press("Enter")
    page.click("#translate")
    status_contains(page, "3 image(s) of 16x16 px, target square")
    images = page.locator("#outputs img")
    images_loaded(page, "#outputs img", 3)
    sizes = [images.nth(i).evaluate("img => [img.naturalWidth, img.naturalHeight]") for i in range(images.count())]
    assert sizes == [[16, 16]] * 3
    shot = (SCREENSHOT or tmp_path) / "serve.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000


def test_a_text_file_gets_a_message_and_the_server_keeps_serving(page: object, server: str,
                                                                tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello, this is not an image\n")
    clear = page.locator("#source-file button[aria-label='Clear']")
    if clear.count():
        clear.click()
    page.locator("#source-file input[type=file]").set_input_files(str(text))
    status_contains(page, "notes.txt is not an image Pillow can read")
    page.click("#translate")
    status_contains(page, "upload a source image (or pick an example) first")
    assert answers(server)
    # The same page still translates: an example instead of an upload.
    pick(page, "#source-example", "triangle/00001.png")
    status_contains(page, "source: example triangle/00001.png")
    page.click("#translate")
    status_contains(page, "target square")


def pick(page: object, dropdown: str, option: str) -> None:
    page.locator(f"{dropdown} input").click()
    page.get_by_role("option", name=option).click()
    # the list closes after the choice; the next pick must not see it beside its own (both are "options")
    page.locator("[role=option]").first.wait_for(state="detached")


def test_reference_style_and_interpolation_gif(page: object) -> None:
    pick(page, "#source-example", "circle/00001.png")
    page.locator("#mode").get_by_label("reference").check()
    pick(page, "#ref-a-example", "square/00000.png")
    status_contains(page, "reference A: example square/00000.png")
    page.click("#translate")
    status_contains(page, "1 image(s) of 16x16 px, target square")
    pick(page, "#ref-b-example", "square/00001.png")
    status_contains(page, "reference B: example square/00001.png")
    page.click("#interpolate")
    status_contains(page, "style interpolation A -> B -> A in square")
    gif = page.locator("#gif img")
    images_loaded(page, "#gif img", 1)
    assert gif.evaluate("img => [img.naturalWidth, img.naturalHeight]") == [32, 16]


def test_two_users_at_once_each_get_their_own_outputs(page: object, server: str) -> None:
    other = page.context.browser.new_page(viewport={"width": 1280, "height": 1000})
    try:
        other.goto(server)
        other.wait_for_selector("#translate")
        for tab, example, styles in ((page, "triangle/00000.png", "2"), (other, "circle/00001.png", "5")):
            tab.reload()
            tab.wait_for_selector("#translate")
            pick(tab, "#source-example", example)
            status_contains(tab, f"source: example {example}")
            tab.locator("#num-styles input[type=number]").fill(styles)
            tab.locator("#num-styles input[type=number]").press("Enter")
        page.click("#translate")
        other.click("#translate")  # queued behind the first request, not mixed with it
        status_contains(page, "2 image(s) of 16x16 px")
        status_contains(other, "5 image(s) of 16x16 px")
        page.locator("#outputs img").nth(1).wait_for()
        other.locator("#outputs img").nth(4).wait_for()
        assert page.locator("#outputs img").count() == 2 and other.locator("#outputs img").count() == 5
    finally:
        other.close()


def test_an_oversized_file_is_refused_with_a_message(page: object, server: str, tmp_path: Path) -> None:
    page.reload()
    page.wait_for_selector("#translate")
    big = tmp_path / "huge.png"
    with open(big, "wb") as f:
        f.truncate(MAX_UPLOAD_BYTES + 1)
    page.locator("#source-file input[type=file]").set_input_files(str(big))
    page.get_by_text("exceed the maximum allowed size").wait_for()
    assert answers(server)
