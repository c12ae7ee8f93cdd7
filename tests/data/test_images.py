"""kerasvit.data.images: the one reader of user image files (predict, demo, explain)."""

import io

import numpy as np
import pytest
from cli_helpers import png_bytes, png_claiming
from PIL import Image, UnidentifiedImageError

from kerasvit.data import images


def test_a_photo_format_opens_and_decodes(tmp_path):
    path = tmp_path / "ramp.png"
    path.write_bytes(png_bytes((40, 30)))
    with images.open_image(path) as image:
        assert image.size == (40, 30)
        assert np.asarray(image.convert("RGB")).shape == (30, 40, 3)


def test_too_many_pixels_is_refused_from_the_header_before_decoding(tmp_path):
    path = tmp_path / "claims.png"
    path.write_bytes(png_claiming(6000, 5000))  # its data is cut short: decoding would fail
    with pytest.raises(images.TooManyPixels) as refused:
        with images.open_image(path):
            pytest.fail("the body ran for a file over the pixel limit")
    assert (refused.value.width, refused.value.height) == (6000, 5000)
    assert refused.value.megapixels == 30.0


def test_formats_outside_the_photo_list_are_not_decoded(tmp_path):
    path = tmp_path / "scan.tiff"
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(buffer, format="TIFF")
    path.write_bytes(buffer.getvalue())
    with pytest.raises(UnidentifiedImageError):
        with images.open_image(path):
            pass
