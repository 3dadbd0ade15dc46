"""The bundled sequence model (``stn_seq3``) in a real ``stn-serve``: it reads fixed MNIST-sequence test
canvases (MNIST-test digits and clutter, never trained on) through ``/v1/predict``, and each digit's
``region`` holds that digit."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from service.schemas import Prediction
from tests.utils.server import ServerProcess, serve_args, stn_serve
from tests.utils.toys import BUNDLED, bundled_has

MODEL = "stn_seq3"
N = 40


@pytest.fixture(scope="module")
def seq_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    if not bundled_has(MODEL):
        pytest.skip(f"the trained model service/model_repository/{MODEL} is not exported yet")
    with stn_serve(tmp_path_factory.mktemp("numbers"), *serve_args(BUNDLED, default_model=MODEL)) as s:
        yield s


def png(arr: np.ndarray, scale: int = 1) -> bytes:
    img = Image.fromarray(arr)
    if scale > 1:
        img = img.resize((arr.shape[1] * scale, arr.shape[0] * scale), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("scale", [1, 3])
def test_reads_test_canvases_and_each_region_holds_its_digit(seq_server: ServerProcess, mnist: dict[str, Any],
                                                            scale: int) -> None:
    """``N`` test canvases, posted at 100x100 and enlarged 3x (the regions scale with the upload): at most
    one misread digit in ten (the model's error is about 2 %), and each digit read has the centre of its
    true 28x28 frame inside its region."""
    from model import sequence

    xs, ys, boxes = sequence.test_set(mnist, N)
    wrong_digits, inside = 0, []
    with httpx.Client(base_url=seq_server.url, timeout=30) as client:
        for x, y, b in zip(xs, ys, boxes, strict=True):
            r = client.post("/v1/predict?rectified=true", content=png(x, scale), headers={"content-type": "image/png"})
            assert r.status_code == 200, r.text
            p = r.json()
            Prediction.model_validate(p)
            assert p["model"] == MODEL and p["image_size"] == [100 * scale] * 2
            read = [int(d["label"]) for d in p["digits"]]
            assert len(read) == 3 and p["text"] == "".join(map(str, read))
            wrong_digits += sum(int(a != b_) for a, b_ in zip(read, y, strict=True))
            for d, (x0, y0, x1, y1) in zip(p["digits"], b, strict=True):
                corners = np.array(d["region"])  # TL, TR, BR, BL: an axis-aligned window here
                cx, cy = (x0 + x1) / 2 * scale, (y0 + y1) / 2 * scale
                inside.append(corners[:, 0].min() <= cx <= corners[:, 0].max()
                              and corners[:, 1].min() <= cy <= corners[:, 1].max())
    assert wrong_digits <= 3 * N // 10, f"{wrong_digits} of {3 * N} digits misread"
    assert all(inside), f"{inside.count(False)} of {len(inside)} regions miss their digit"


def test_rectify_returns_the_three_crops_and_one_by_index(seq_server: ServerProcess, mnist: dict[str, Any]) -> None:
    from model import sequence

    xs, _, _ = sequence.test_set(mnist, 1)
    body = png(xs[0])
    with httpx.Client(base_url=seq_server.url, timeout=30) as client:
        strip = np.asarray(Image.open(io.BytesIO(client.post("/v1/rectify", content=body).content)))
        assert strip.shape == (28, 84)
        one = np.asarray(Image.open(io.BytesIO(client.post("/v1/rectify?index=2", content=body).content)))
        np.testing.assert_array_equal(one, strip[:, 56:])
        r = client.post("/v1/rectify?index=3", content=body)
        assert r.status_code == 422 and "index must be 0..2" in r.json()["error"]
        models = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
        assert models[MODEL]["kind"] == "sequence" and models[MODEL]["max_digits"] == 3
