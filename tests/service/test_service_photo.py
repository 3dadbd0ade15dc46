"""Photos: letterbox preprocessing, EXIF orientations, HEIC, and the bundled photo model through the app."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw

from service import preprocess
from service.app import create_app
from service.errors import UnsupportedMediaType
from service.geometry import region_corners, to_upload
from service.model import DRAFT
from service.preprocess import decode, prepare
from service.repository import ModelSpec
from tests.utils.app import make_settings, wait_ready
from tests.utils.toys import BUNDLED

SPEC = ModelSpec(name="photo", version="1", input_name="image", input_size=(256, 256), output_size=(32, 32),
                 labels=[str(i) for i in range(10)], mean=0.0, std=1.0, polarity="any", transform="affine",
                 param_output="theta", output_names=["logits", "theta", "rectified"], output_shapes={},
                 resize="letterbox", padding="border")


def jpeg(img: Image.Image, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=95, **kw)
    return buf.getvalue()


def disc_photo(w: int, h: int) -> Image.Image:
    img = Image.new("L", (w, h), 200)
    r = min(w, h) // 3
    ImageDraw.Draw(img).ellipse([w // 2 - r, h // 2 - r, w // 2 + r, h // 2 + r], fill=20)
    return img


@pytest.mark.parametrize("size", [(400, 100), (100, 400), (300, 300), (1600, 900)])
def test_letterbox_keeps_the_aspect_ratio(size: tuple[int, int]) -> None:
    """A disc stays a disc (never squashed), centred; the bands are the photo's paper level."""
    prep = prepare(decode(jpeg(disc_photo(*size)), 10**8), SPEC)
    x = prep.x[0]
    assert x.shape == (256, 256)
    ys, xs = np.nonzero(x < 0.4)
    assert abs((xs.max() - xs.min()) - (ys.max() - ys.min())) <= 2, "the disc is as wide as it is tall"
    assert abs((xs.max() + xs.min()) / 2 - 127.5) <= 1.5 and abs((ys.max() + ys.min()) / 2 - 127.5) <= 1.5
    assert abs(float(x[0, 0]) - 200 / 255) < 0.03, "the letterbox fill is the paper's level"


def test_to_upload_known_answer() -> None:
    """400x100 upload: the input square spans x in [-1, 1] and y in [-4, 4] of the upload's coordinates, so
    the identity crop's corners are the square's corners in the upload's pixels."""
    prep = prepare(decode(jpeg(disc_photo(400, 100)), 10**8), SPEC)
    theta = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    up = to_upload(theta, prep.to_upload)
    np.testing.assert_allclose(up, [[1, 0, 0], [0, 4, 0]], atol=0.02)
    corners = region_corners(up, 400, 100)
    np.testing.assert_allclose(corners, [[0, -150], [400, -150], [400, 250], [0, 250]], atol=2)


def test_stretch_models_are_unchanged() -> None:
    spec = replace(SPEC, resize="stretch")
    prep = prepare(decode(jpeg(disc_photo(400, 100)), 10**8), spec)
    assert prep.to_upload is None
    np.testing.assert_array_equal(to_upload(np.eye(3)[:2], None), np.eye(3)[:2])


def test_service_letterbox_is_the_training_one() -> None:
    """model.photo.photo_input (what training saw) and the service's prepare agree exactly, large photos
    (JPEG draft decoding) and EXIF-rotated ones included."""
    photo = pytest.importorskip("model.photo")
    rng = np.random.default_rng(0)
    imgs = [disc_photo(420, 300), disc_photo(240, 427), disc_photo(2400, 1800)]
    noise = [Image.fromarray(np.clip(np.asarray(i, np.float32) + rng.normal(0, 8, (i.height, i.width)), 0,
                                     255).astype(np.uint8)) for i in imgs]
    exif = Image.Exif()
    exif[0x0112] = 6
    bodies = [jpeg(i) for i in noise] + [jpeg(noise[0].transpose(Image.Transpose.ROTATE_90), exif=exif.tobytes())]
    for body in bodies:
        x_train, _ = photo.photo_input(body, 256)
        x_serve = prepare(decode(body, 10**8, (DRAFT * 256, DRAFT * 256)), SPEC).x[0]
        np.testing.assert_allclose(x_serve, x_train, atol=1e-6)


def _inverse(img: Image.Image, orientation: int) -> Image.Image:
    t = Image.Transpose
    op = {2: t.FLIP_LEFT_RIGHT, 3: t.ROTATE_180, 4: t.FLIP_TOP_BOTTOM, 5: t.TRANSPOSE, 6: t.ROTATE_90,
          7: t.TRANSVERSE, 8: t.ROTATE_270}[orientation]
    return img.transpose(op)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_all_eight_exif_orientations(orientation: int) -> None:
    """Stored turned or mirrored with the tag that undoes it: decoded upright, at the upright size."""
    upright = Image.new("L", (120, 80), 230)
    ImageDraw.Draw(upright).rectangle([10, 10, 40, 30], fill=10)  # a mark in the top-left corner
    stored = upright if orientation == 1 else _inverse(upright, orientation)
    exif = Image.Exif()
    exif[0x0112] = orientation
    d = decode(jpeg(stored, exif=exif.tobytes()), 10**8)
    assert d.size == (120, 80)
    arr = np.asarray(d.image.convert("L"), np.float32)
    assert arr[10:30, 10:40].mean() < 60 and arr[50:70, 80:110].mean() > 200, "the mark is back top-left"


def _heic(img: Image.Image) -> bytes:
    pytest.importorskip("pillow_heif")
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="HEIF", quality=90)
    return buf.getvalue()


def test_heic_decodes() -> None:
    if not preprocess.HEIF_AVAILABLE:
        pytest.skip("pillow-heif is not installed here")
    body = _heic(disc_photo(320, 240))
    d = decode(body, 10**8)
    assert d.size == (320, 240) and d.format == "HEIF"
    x = prepare(d, SPEC).x[0]
    assert x[128, 128] < 0.3 and x[128, 10] > 0.6


def test_heic_without_the_plugin_is_a_415_naming_the_format(monkeypatch: pytest.MonkeyPatch) -> None:
    body = _heic(disc_photo(64, 48))
    monkeypatch.setattr(preprocess, "HEIF_AVAILABLE", False)
    with pytest.raises(UnsupportedMediaType, match="HEIC/HEIF image .*install the pillow-heif package"):
        decode(body, 10**8)


# --- the bundled photo model through the app -------------------------------------------------------------


def bundled_photo() -> Path:
    if not (BUNDLED / "stn_photo" / "1" / "model.onnx").is_file():
        pytest.skip("the trained model service/model_repository/stn_photo is not exported yet")
    return BUNDLED


@pytest.fixture(scope="module")
def photo_client() -> Iterator[TestClient]:
    app = create_app(make_settings(bundled_photo()))  # the default default model
    with TestClient(app) as c:
        wait_ready(c)
        yield c


@pytest.fixture(scope="module")
def photos(mnist) -> list:
    photo = pytest.importorskip("model.photo")
    fonts = photo.font_files(photo.TEST_FONT_DIRS)
    gen = photo.PhotoGenerator(mnist["test_images"][:500], mnist["test_labels"][:500], fonts)
    rng = np.random.default_rng(11)
    return [gen.render(rng, c) for c in ("large", "medium", "small", "exif", "printed", "ruled", "dark")
            for _ in range(3)]


def test_photo_model_is_the_default_and_reads_photos(photo_client: TestClient, photos: list) -> None:
    right = 0
    for p in photos:
        r = photo_client.post("/v1/predict", content=p.data, headers={"content-type": "image/jpeg"})
        assert r.status_code == 200, r.text
        a = r.json()
        assert a["model"] == "stn_photo" and a["image_size"] == list(p.size)
        right += int(a["label"]) == p.label
        # The region is the digit's, in the photo's pixels: it covers the ink box's centre and is not the
        # whole photo.
        poly = np.array(a["region"])
        x0, y0, x1, y1 = p.ink_box
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        assert poly[:, 0].min() < cx < poly[:, 0].max() and poly[:, 1].min() < cy < poly[:, 1].max()
        side = max(x1 - x0, y1 - y0)
        assert np.ptp(poly[:, 0]) < 4 * side and np.ptp(poly[:, 1]) < 4 * side
    assert right >= len(photos) - 2, f"{right} of {len(photos)} read"


def test_photo_rectify_and_overlay(photo_client: TestClient, photos: list) -> None:
    p = photos[1]  # medium
    r = photo_client.post("/v1/rectify?size=256x256", content=p.data, headers={"content-type": "image/jpeg"})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    crop = np.asarray(Image.open(io.BytesIO(r.content)).convert("L"), np.float32)
    assert crop.shape == (256, 256)
    # The digit is in the middle of the crop: dark ink there, paper at the edges.
    assert crop[96:160, 96:160].min() < crop[:16].mean() - 40
    r = photo_client.post("/v1/rectify?overlay=true", content=p.data, headers={"content-type": "image/jpeg"})
    assert r.status_code == 200
    assert Image.open(io.BytesIO(r.content)).size == p.size


def test_real_stn_serve_reads_rendered_photos(photos: list, tmp_path: Path) -> None:
    """A real ``stn-serve`` process on the bundled repository, photos posted over HTTP as a phone would."""
    import httpx

    from tests.utils.server import stn_serve

    bundled_photo()
    with stn_serve(tmp_path, "--model-repository", str(BUNDLED), "--provider", "cpu", "--intra-op-threads",
                   "1") as s:
        right = 0
        for p in photos[::3]:  # one of each condition
            r = httpx.post(s.url + "/v1/predict", content=p.data, headers={"content-type": "image/jpeg"},
                           timeout=30)
            assert r.status_code == 200, r.text
            assert r.json()["model"] == "stn_photo"
            right += int(r.json()["label"]) == p.label
        heic = _heic(Image.open(io.BytesIO(photos[1].data)))
        r = httpx.post(s.url + "/v1/predict", content=heic, headers={"content-type": "image/heic"}, timeout=30)
        assert r.status_code == 200, r.text
        assert r.json()["image_size"] == list(photos[1].size)
    assert right >= len(photos[::3]) - 1, f"{right} of {len(photos[::3])} read"


def _blobs(w: int, h: int, centres: list[tuple[float, float]], sigma: float = 25.0) -> Image.Image:
    """Paper (200) with a dark Gaussian blob at each of ``centres`` (pixel-edge coordinates)."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5
    ink = sum(np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * sigma**2)) for cx, cy in centres)
    return Image.fromarray(np.clip(200 - 180 * ink, 0, 255).astype(np.uint8))


def _centroid(x: np.ndarray) -> tuple[float, float]:
    """The ink's centroid in pixel-edge coordinates of an input in [0, 1] (paper at 200/255)."""
    wgt = np.clip(0.75 - x, 0, None)
    ys, xs = np.mgrid[0 : x.shape[0], 0 : x.shape[1]] + 0.5
    return float((wgt * xs).sum() / wgt.sum()), float((wgt * ys).sum() / wgt.sum())


@pytest.mark.parametrize("orientation", range(1, 9))
def test_a_jpeg_draft_is_read_over_the_photo_s_own_extent(orientation: int) -> None:
    """A 4001x3001 JPEG decoded at 1/4 is 1001x751 pixels, whose last column and row reach 0.75 of a pixel
    past the photo (3 upload px); turned upright by its EXIF tag, that overhang moves to other sides. The
    service reads the photo's own extent (``Decoded.extent``): a window on a blob at either far corner holds
    it at the window's centre (off by 3 of 240 upload px, 3.2 input px, were the overhang read as photo),
    and the letterboxed and the stretched inputs match the full decode's."""
    from service.zoom import prepare_window

    centres = [(3880.0, 2890.0), (120.0, 110.0)]
    upright = _blobs(4001, 3001, centres)
    exif = Image.Exif()
    exif[0x0112] = orientation
    body = jpeg(upright if orientation == 1 else _inverse(upright, orientation), exif=exif.tobytes())
    draft = decode(body, 10**8, (DRAFT * 256, DRAFT * 256))
    full = decode(body, 10**8)
    assert draft.size == full.size == (4001, 3001) and draft.image.size == (1001, 751)
    assert full.extent is None and draft.extent is not None
    x0, y0, x1, y1 = draft.extent
    assert (x1 - x0, y1 - y0) == pytest.approx((1000.25, 750.25))
    for cx, cy in centres:
        for decoded in (draft, full):
            prep = prepare_window(decoded, SPEC, False, (cx, cy, 240.0))
            assert _centroid(prep.x[0]) == pytest.approx((128.0, 128.0), abs=0.4), (decoded.extent, cx, cy)
            assert prep.to_upload == pytest.approx((240 / 4001, 2 * cx / 4001 - 1, 240 / 3001, 2 * cy / 3001 - 1))
    # Letterboxed or stretched, each blob where the full decode puts it (0.19 input px off at the overhang's
    # sides when the overhang is read as photo).
    for spec in (SPEC, replace(SPEC, resize="stretch")):
        a, b = prepare(draft, spec).x[0], prepare(full, spec).x[0]
        for half in (np.s_[:, :128], np.s_[:, 128:]):
            assert _centroid(a[half]) == pytest.approx(_centroid(b[half]), abs=0.05), spec.resize


def test_the_border_median_is_the_median_of_the_band() -> None:
    """``border_median`` counts a histogram; it answers what ``int(np.median(band))`` does (an even count:
    the mean of the two middle values, rounded down), on bands of odd and even size, narrow value ranges
    (where the two middle values differ by one) and images down to one pixel."""
    rng = np.random.default_rng(0)
    for shape in [(1, 1), (1, 6), (2, 2), (3, 7), (28, 28), (42, 43), (600, 800), (601, 799), (1, 1000), (40, 3)]:
        for k in range(12):
            arr = rng.integers(0, 256, shape, dtype=np.uint8) if k % 2 else rng.integers(100, 102, shape, np.uint8)
            h, w = shape
            b = preprocess.border_band(h, w)
            band = np.concatenate([arr[:b].ravel(), arr[h - b :].ravel(), arr[b : h - b, :b].ravel(),
                                   arr[b : h - b, w - b :].ravel()])
            assert preprocess.border_median(arr) == int(np.median(band)), (shape, k)
