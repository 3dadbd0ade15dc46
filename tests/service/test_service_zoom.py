"""Reading a number twice (``service.zoom``): the window around the first reading's digits, the input cut from
it, the two readings combined, the metadata that turns it on, and the bundled ``stn_number`` read both ways."""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.app import create_app
from service.preprocess import Decoded, Prepared
from service.repository import ModelEntry, parse_spec
from service.schemas import Prediction
from service.sequence import Reading
from service.zoom import combine, is_alone, prepare_window, read_length, window
from tests.utils.app import make_settings, wait_ready
from tests.utils.toys import BUNDLED, bundled_has

MODEL = "stn_number"
SEQ_META = {"stn.kind": "sequence", "stn.input_size": "64,64", "stn.resize": "letterbox"}
SEQ_OUTS = {"length_logits": ["N", 4], "digit_logits": ["N", 3, 11], "theta": ["N", 3, 2, 3],
            "rectified": ["N", 3, 1, 16, 16]}
ENTRY = ModelEntry("num", "1", Path("num/1/model.onnx"))


def spec(**meta: str) -> Any:
    return parse_spec(ENTRY, {**SEQ_META, **meta}, "image", ["N", 1, 64, 64], SEQ_OUTS)


def outputs(n: int, thetas: list[list[list[float]]]) -> dict[str, np.ndarray]:
    """One image's outputs that read ``n`` digits (all 7s), with the given crops."""
    length = np.full(4, -20.0, np.float32)
    length[n] = 20.0
    digits = np.full((3, 11), -10.0, np.float32)
    digits[:, 7] = 10.0
    return {"length_logits": length, "digit_logits": digits, "theta": np.array(thetas, np.float32)}


def test_zoom_metadata_is_parsed_and_checked() -> None:
    assert spec().zoom_fill is None
    s = spec(**{"stn.zoom_fill": "0.8", "stn.zoom_alone_below": "0.4"})
    assert s.zoom_fill == 0.8 and s.zoom_alone_below == 0.4
    with pytest.raises(ValueError, match=r"stn.zoom_fill must be in \(0, 1\]"):
        spec(**{"stn.zoom_fill": "1.5"})
    with pytest.raises(ValueError, match="stn.zoom_alone_below must be a number"):
        spec(**{"stn.zoom_fill": "0.8", "stn.zoom_alone_below": "half"})
    with pytest.raises(ValueError, match="for a letterboxed sequence model"):
        spec(**{"stn.zoom_fill": "0.8", "stn.resize": "stretch"})
    with pytest.raises(ValueError, match="for a letterboxed sequence model"):
        parse_spec(ENTRY, {"stn.input_size": "64,64", "stn.resize": "letterbox", "stn.zoom_fill": "0.8"}, "image",
                   ["N", 1, 64, 64], {"logits": ["N", 10], "theta": ["N", 2, 3], "rectified": ["N", 1, 16, 16]})


def test_the_window_is_square_on_the_digits_read_and_no_larger_than_the_photo() -> None:
    # A 400x200 upload letterboxed into a square: input-normalised y spans half the upload's height.
    prep = Prepared(np.zeros((1, 64, 64), np.float32), False, (400, 200), (1.0, 0.0, 2.0, 0.0))
    a = 0.05  # each crop's half-side, input-normalised: 10 px of the 400-px-wide upload
    crops = [[[a, 0, -0.2], [0, a, 0.0]], [[a, 0, 0.0], [0, a, 0.0]], [[a, 0, 0.6], [0, a, 0.0]]]
    cx, cy, side = window(outputs(2, crops), prep, 0.8)
    # Two digits read: crops 0 and 1, x from -0.25 to 0.05 (px 150..210), y +-0.1 upload-normalised (90..110).
    assert (cx, cy) == pytest.approx((180.0, 100.0))
    assert side == pytest.approx(60 / 0.8)
    assert window(outputs(3, crops), prep, 0.8)[2] == pytest.approx(180 / 0.8)  # px 150..330
    assert window(outputs(0, crops), prep, 0.8)[2] == pytest.approx(20 / 0.8)  # nothing read: the first crop
    assert window(outputs(3, crops), prep, 0.1)[2] == 400.0  # capped at the longer side
    assert read_length(outputs(2, crops)) == 2
    s = spec(**{"stn.zoom_fill": "0.8", "stn.zoom_alone_below": "0.5"})
    assert is_alone(s, prep, (0.0, 0.0, 199.0)) and not is_alone(s, prep, (0.0, 0.0, 200.0))


def test_the_window_input_is_cut_from_the_upload_and_maps_back_to_it() -> None:
    """A dark square at (340..380, 100..140) of a 400x300 upload, decoded at half scale (a JPEG draft): the
    window centred on it holds it at the input's centre, the window's part past the upload's right edge is
    filled with the border's median, and ``to_upload`` maps the input's coordinates back onto the upload."""
    arr = np.full((300, 400), 200, np.uint8)
    arr[100:140, 340:380] = 20
    arr[:, :5] = 190  # the border band's median stays the paper's 200
    img = Image.fromarray(arr).resize((200, 150), Image.Resampling.BILINEAR)  # the decoded (draft) image
    decoded = Decoded(img, (400, 300), "JPEG")
    s = spec(**{"stn.zoom_fill": "0.8"})
    prep = prepare_window(decoded, s, False, (360.0, 120.0, 160.0))  # x 280..440: 40 px past the edge
    x = prep.x[0] * 255.0  # stn.mean 0, stn.std 1
    assert x.shape == (64, 64)
    assert x[28:36, 28:36].mean() < 40  # the square, at the centre
    assert abs(float(x[5, 5]) - 200) < 3  # paper
    assert np.abs(x[:, 49:] - 200).max() < 1  # past the edge: the fill
    assert prep.size == (400, 300) and prep.inverted is False
    sx, bx, sy, by = prep.to_upload  # type: ignore[misc]
    # Input-normalised (0, 0) is the window's centre, (+-1, +-1) its edges, in upload-normalised coordinates.
    assert ((bx + 1) * 200, (by + 1) * 150) == pytest.approx((360.0, 120.0))
    assert (sx * 200, sy * 150) == pytest.approx((80.0, 80.0))


def test_a_window_far_larger_than_the_input_costs_an_inputs_worth() -> None:
    """A 20,000 x 100 upload and a window its whole length: the input is made at the input's size (the
    window's 20,000 x 20,000 pixels are never built), the band holds the image, the rest is fill."""
    arr = np.full((100, 20_000), 30, np.uint8)
    decoded = Decoded(Image.fromarray(arr), (20_000, 100), "PNG")
    prep = prepare_window(decoded, spec(**{"stn.zoom_fill": "0.8"}), False, (10_000.0, 50.0, 20_000.0))
    x = prep.x[0] * 255.0
    assert x.shape == (64, 64)
    assert np.allclose(x, 30)  # the image's own border median fills, so one level everywhere


def test_crops_that_are_not_finite_give_no_window() -> None:
    prep = Prepared(np.zeros((1, 64, 64), np.float32), False, (400, 200), (1.0, 0.0, 2.0, 0.0))
    crops = [[[np.nan, 0, 0], [0, 0.1, 0]]] * 3
    assert window(outputs(1, crops), prep, 0.8) is None


def test_two_readings_add_their_log_probabilities_unless_the_second_is_alone() -> None:
    rng = np.random.default_rng(0)
    first = {"length_logits": rng.normal(size=4), "digit_logits": rng.normal(size=(3, 11)), "theta": np.zeros(1)}
    second = {"length_logits": rng.normal(size=4), "digit_logits": rng.normal(size=(3, 11)), "theta": np.ones(1)}
    assert combine(first, second, alone=True) is second
    both = combine(first, second, alone=False)
    assert both["theta"] is second["theta"]

    def probs(v: np.ndarray) -> np.ndarray:
        e = np.exp(v - v.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)  # type: ignore[no-any-return]

    for k in ("length_logits", "digit_logits"):
        product = probs(first[k]) * probs(second[k])
        np.testing.assert_allclose(probs(both[k]), product / product.sum(-1, keepdims=True), rtol=1e-5)
    # Per position, over the digits only (Reading's "given a digit"), the product renormalised too.
    reading = Reading(probs(both["length_logits"]).tolist(), [probs(r[:-1]).tolist() for r in both["digit_logits"]])
    p = probs(first["digit_logits"][0, :-1]) * probs(second["digit_logits"][0, :-1])
    np.testing.assert_allclose(reading.digits[0], p / p.sum(), rtol=1e-5)


# ---- the bundled stn_number, read both ways -----------------------------------------------------------------


@pytest.fixture(scope="module")
def number_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    if not bundled_has(MODEL):
        pytest.skip(f"the trained model service/model_repository/{MODEL} is not exported yet")
    root = tmp_path_factory.mktemp("zoom_repo")
    (root / MODEL).symlink_to(BUNDLED / MODEL)
    with TestClient(create_app(make_settings(root, default_model=MODEL))) as c:
        wait_ready(c)
        yield c


@pytest.fixture(scope="module")
def small_numbers(mnist: dict[str, Any]) -> list[Any]:
    """Eight numbers 12-35 % of the photo's width in 768-1,344 px photos (MNIST-test digits, held-out fonts,
    a seed of their own), smaller in the frame than the model was trained on."""
    from model.number import NumberGenerator
    from model.photo import TEST_FONT_DIRS, font_files

    fonts = font_files(TEST_FONT_DIRS)
    if not fonts:
        pytest.skip("no held-out fonts (tests/setup_system.sh installs fonts-urw-base35)")
    gen = NumberGenerator(mnist["test_images"], mnist["test_labels"], fonts, line_width=(0.12, 0.35),
                          long_side=(768, 1344))
    rng = np.random.default_rng(20_261_207)
    return [gen.render(rng, 3 + i % 3) for i in range(8)]


def test_the_model_list_says_the_number_model_reads_twice(number_client: TestClient) -> None:
    (info,) = number_client.get("/v1/models").json()["models"]
    assert info["name"] == MODEL and info["kind"] == "sequence" and info["zoom_fill"] == 0.8


def test_small_numbers_are_read_from_their_window(number_client: TestClient, small_numbers: list[Any]) -> None:
    """Read twice, at least seven of the eight small numbers are right (bench/results/number_zoom_*.md: about
    4 % of such numbers wrong, against about 17 % read once) and never fewer than once; every digit read right
    lies inside the window the answer reports, and the window is a square inside the photo's extent."""
    right = {"false": 0, "true": 0}
    for photo in small_numbers:
        truth = "".join(map(str, photo.labels))
        for zoom in ("false", "true"):
            r = number_client.post(f"/v1/models/{MODEL}/predict?zoom={zoom}", content=photo.data,
                                   headers={"content-type": "image/jpeg"})
            assert r.status_code == 200, r.text
            p = r.json()
            Prediction.model_validate(p)
            right[zoom] += p["text"] == truth
            if zoom == "false":
                assert p["zoom_window"] is None
                continue
            x0, y0, x1, y1 = p["zoom_window"]
            assert x1 - x0 == pytest.approx(y1 - y0) and x1 - x0 <= max(photo.size) + 1e-6
            if p["text"] == truth:
                for d, (cx, cy) in zip(p["digits"], photo.centres, strict=True):
                    assert x0 <= cx <= x1 and y0 <= cy <= y1
                    quad = np.array(d["region"])
                    assert quad[:, 0].min() < cx < quad[:, 0].max() and quad[:, 1].min() < cy < quad[:, 1].max()
    assert right["true"] >= 7 and right["true"] >= right["false"], right


def test_rectify_gives_the_second_readings_crops(number_client: TestClient, small_numbers: list[Any]) -> None:
    """The crops ``/v1/rectify`` returns are those of the reading the prediction gives: with the zoom, sampled
    from the window (a different sampling of the photo than one reading's)."""
    photo = small_numbers[0]
    pngs = {}
    for zoom in ("false", "true"):
        r = number_client.post(f"/v1/models/{MODEL}/rectify?index=0&zoom={zoom}", content=photo.data,
                               headers={"content-type": "image/jpeg"})
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        pngs[zoom] = np.asarray(Image.open(io.BytesIO(r.content)))
        assert pngs[zoom].shape == (32, 32)
    assert not np.array_equal(pngs["false"], pngs["true"])
    overlays = {}
    for zoom in ("false", "true"):
        r = number_client.post(f"/v1/models/{MODEL}/rectify?overlay=true&zoom={zoom}", content=photo.data,
                               headers={"content-type": "image/jpeg"})
        assert r.status_code == 200
        overlays[zoom] = np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB")).astype(int)
        assert overlays[zoom].shape[:2] == (photo.size[1], photo.size[0])
    # Read twice, the overlay also frames the window in white: at the window's top edge, midway along it.
    p = number_client.post(f"/v1/models/{MODEL}/predict", content=photo.data, headers={"content-type": "image/jpeg"})
    x0, y0, x1, _ = p.json()["zoom_window"]
    y, x = round(y0), round((x0 + x1) / 2)
    assert 1 <= y < photo.size[1] - 1 and 0 <= x < photo.size[0]  # this photo's window is inside it
    assert (overlays["true"][y - 1 : y + 2, x] >= 250).all(-1).any()
    assert not (overlays["false"][y - 1 : y + 2, x] >= 250).all(-1).any()


def test_a_batch_reads_each_file_twice(number_client: TestClient, small_numbers: list[Any]) -> None:
    """The batch route gives each file the answer the single route gives it (the windows' inputs run as one
    batch of their own), and a file that cannot be decoded still gets its own 400 only."""
    photos = small_numbers[:3]
    files = [("image", (f"{k}.jpg", ph.data, "image/jpeg")) for k, ph in enumerate(photos)]
    files.insert(1, ("image", ("bad.jpg", b"not an image", "image/jpeg")))
    r = number_client.post(f"/v1/models/{MODEL}/predict/batch", files=files)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [i["status"] for i in results] == [200, 400, 200, 200]
    for item, photo in zip(results[:1] + results[2:], photos, strict=True):
        single = number_client.post(f"/v1/models/{MODEL}/predict", content=photo.data,
                                    headers={"content-type": "image/jpeg"}).json()
        assert item["status"] == 200
        assert item["prediction"]["text"] == single["text"]
        assert item["prediction"]["zoom_window"] == pytest.approx(single["zoom_window"])
        assert item["prediction"]["probability"] == pytest.approx(single["probability"], rel=1e-4)
        assert math.isfinite(single["probability"])
