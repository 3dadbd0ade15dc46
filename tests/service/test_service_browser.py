"""The demo page in a real headless browser (Debian's chromium driven by playwright) on a real stn-serve."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from tests.utils.payloads import pattern
from tests.utils.server import ServerProcess, serve_args, stn_serve
from tests.utils.toys import bundled_has, default_test_model

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOT = Path("/tmp/stn_demo_page.png")


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (tests/setup_system.sh installs it with apt)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        pytest.skip(f"playwright is not installed: {exc}")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def page_server(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with stn_serve(tmp_path_factory.mktemp("browser"), *serve_args(repo, default_model=default_test_model())) as s:
        yield s


def image_loaded(page, selector: str) -> bool:  # type: ignore[no-untyped-def]
    return bool(page.eval_on_selector(selector, "img => img.complete && img.naturalWidth > 0"))


def test_draw_a_digit_and_predict(browser, page_server: ServerProcess) -> None:  # type: ignore[no-untyped-def]
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(page_server.url + "/")
    page.wait_for_function("document.querySelectorAll('#model option').length > 0")
    box = page.locator("#canvas").bounding_box()
    assert box is not None
    # A "7": a bar across the top, then a stroke down to the lower left.
    x0, y0 = box["x"], box["y"]
    page.mouse.move(x0 + 70, y0 + 60)
    page.mouse.down()
    for x, y in [(140, 58), (210, 60), (180, 130), (150, 190), (125, 240)]:
        page.mouse.move(x0 + x, y0 + y, steps=8)
    page.mouse.up()
    page.click("#predict")
    page.wait_for_function("document.getElementById('label').textContent.trim().length > 0", timeout=30000)
    page.wait_for_function(
        "(() => { const i = document.getElementById('crop'); return i.complete && i.naturalWidth > 0; })()",
        timeout=30000,
    )
    label = page.text_content("#label")
    assert label is not None and label.strip() in [str(i) for i in range(10)]
    assert "%" in (page.text_content("#probability") or "")
    assert page.locator("#topk li").count() == 5
    assert image_loaded(page, "#overlay") and image_loaded(page, "#crop")
    assert page.eval_on_selector("#crop", "img => img.naturalWidth") == 256
    assert "error" not in (page.get_attribute("#status", "class") or "")
    page.screenshot(path=str(SCREENSHOT), full_page=True)
    assert not errors, errors
    page.close()


def test_upload_a_photo(browser, page_server: ServerProcess, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    photo = tmp_path / "photo.png"
    Image.fromarray(255 - pattern(42)).resize((400, 300)).save(photo)
    page = browser.new_page()
    page.goto(page_server.url + "/")
    page.wait_for_function("document.querySelectorAll('#model option').length > 0")
    page.set_input_files("#file", str(photo))
    page.wait_for_function("document.getElementById('label').textContent.trim().length > 0", timeout=30000)
    page.wait_for_function(
        "(() => { const i = document.getElementById('overlay');"
        " return i.complete && i.naturalWidth > 0; })()",
        timeout=30000,
    )
    assert page.eval_on_selector("#overlay", "img => img.naturalWidth") == 400  # the upload itself, drawn on
    assert "inverted" in (page.text_content("#probability") or "")
    page.close()


def test_a_sequence_model_shows_the_number_its_digits_and_every_crop(browser, page_server: ServerProcess,  # type: ignore[no-untyped-def]
                                                                       tmp_path: Path) -> None:
    """The toy sequence model (three fixed windows, an untrained reader): the number read, one framed entry
    per digit, the overlay with the windows, and the three crops side by side."""
    import numpy as np

    canvas = tmp_path / "canvas.png"
    arr = np.zeros((100, 100), np.uint8)
    arr[40:60, 15:25] = arr[30:50, 45:55] = arr[50:70, 75:85] = 255
    Image.fromarray(arr).save(canvas)
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(page_server.url + "/")
    page.wait_for_function("document.querySelectorAll('#model option').length > 0")
    page.select_option("#model", "toy_seq")
    page.set_input_files("#file", str(canvas))
    page.wait_for_function(
        "(() => { const i = document.getElementById('crop'); return i.complete && i.naturalWidth > 0; })()",
        timeout=30000,
    )
    page.wait_for_function("document.getElementById('label').textContent.trim().length > 0", timeout=30000)
    label = (page.text_content("#label") or "").strip()
    shown = page.locator("#digits li").count()
    assert (label == "(no digits)" and shown == 0) or (label.isdigit() and shown == len(label) <= 3)
    assert page.eval_on_selector("#crop", "img => img.naturalWidth") == 3 * 128  # every transformer's crop
    assert page.eval_on_selector("#overlay", "img => img.naturalWidth") >= 100
    assert "error" not in (page.get_attribute("#status", "class") or "")
    assert not errors, errors
    page.close()


def test_errors_show_in_the_page(browser, page_server: ServerProcess, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not really a png")
    page = browser.new_page()
    page.goto(page_server.url + "/")
    page.wait_for_function("document.querySelectorAll('#model option').length > 0")
    page.set_input_files("#file", str(bad))
    page.wait_for_function("document.getElementById('status').className === 'error'", timeout=30000)
    assert "image" in (page.text_content("#status") or "")
    page.close()


@pytest.fixture(scope="module")
def photo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    from tests.utils.toys import BUNDLED

    if not bundled_has("stn_photo"):
        pytest.skip("the trained model service/model_repository/stn_photo is not exported yet")
    with stn_serve(tmp_path_factory.mktemp("browser_photo"), "--model-repository", str(BUNDLED), "--provider",
                   "cpu", "--intra-op-threads", "1") as s:  # the default default model: stn_photo
        yield s


def test_upload_a_rendered_photo_shows_its_digit(browser, photo_server: ServerProcess, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                 mnist) -> None:
    """Held-out photos (MNIST-test digits, medium size, JPEG) through the page: the class shown, the box drawn
    on the photo, the crop. Three photos, at most one misread (the model's error is not zero)."""
    import numpy as np

    from model.photo import TEST_FONT_DIRS, PhotoGenerator, font_files

    gen = PhotoGenerator(mnist["test_images"][:100], mnist["test_labels"][:100], font_files(TEST_FONT_DIRS))
    rng = np.random.default_rng(2026)
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    page.goto(photo_server.url + "/")
    page.wait_for_function("document.querySelectorAll('#model option').length > 0")
    assert page.eval_on_selector("#model", "s => s.value") == "stn_photo"
    right = 0
    for i in range(3):
        p = gen.render(rng, "medium")
        path = tmp_path / f"photo{i}.jpg"
        path.write_bytes(p.data)
        page.evaluate("() => { for (const id of ['label', 'status']) document.getElementById(id).textContent = ''; }")
        page.set_input_files("#file", str(path))
        page.wait_for_function("document.getElementById('status').textContent.startsWith('Done')", timeout=30000)
        # The box is drawn on the photo itself (its own width); the crop is 256 px.
        page.wait_for_function(
            f"(() => {{ const a = document.getElementById('overlay'), b = document.getElementById('crop');"
            f" return a.complete && a.naturalWidth === {p.size[0]} && b.complete && b.naturalWidth === 256; }})()",
            timeout=30000,
        )
        right += (page.text_content("#label") or "").strip() == str(p.label)
    assert right >= 2, f"{right} of 3 photos read right in the page"
    page.screenshot(path=str(SCREENSHOT.with_name("stn_demo_photo.png")), full_page=True)
    page.close()
