"""Property-based tests (hypothesis) of config overrides and of predict's image input."""

import io
import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image, features

from kerasvit import config as cfg
from kerasvit.cli import predict

VALUE_FIELDS = {name: kind for name, kind in cfg.FIELD_TYPES.items() if kind in (int, float, bool, str)}
BOOL_WORDS = {"true": True, "1": True, "yes": True, "on": True,
              "false": False, "0": False, "no": False, "off": False}
PRECISION_CHOICES = ("auto", "on", "off")
PRECISION_WORDS = {"auto": "auto", "on": "on", "off": "off", "true": "on", "yes": "on", "1": "on",
                   "false": "off", "no": "off", "0": "off"}


@st.composite
def typed_assignment(draw):
    """(KEY=VALUE text, the value it must set) for a random field and a value of its type."""
    name = draw(st.sampled_from(sorted(VALUE_FIELDS)))
    kind = VALUE_FIELDS[name]
    if kind is bool:
        word = draw(st.sampled_from(sorted(BOOL_WORDS)))
        text = draw(st.sampled_from([word, word.upper(), f" {word} "]))
        return f"{name}={text}", BOOL_WORDS[word]
    if kind is int:
        value = draw(st.integers(-10**12, 10**12))
        return f"{name}={value}", value
    if kind is float:
        value = draw(st.floats(allow_nan=False, allow_infinity=False))
        return f"{name}={value!r}", value
    if name == "mixed_precision":  # a choice, or a boolean word from configs before "auto"
        word = draw(st.sampled_from(sorted(PRECISION_WORDS)))
        text = draw(st.sampled_from([word, word.upper()])) if word not in PRECISION_CHOICES else word
        return f"{name}={text}", PRECISION_WORDS[word]
    value = draw(st.text())
    return f"{name}={value}", value


@given(typed_assignment())
def test_override_of_the_right_type_round_trips(assignment):
    text, value = assignment
    config = cfg.apply_overrides(cfg.TrainConfig(), [text])
    assert getattr(config, text.split("=", 1)[0]) == value
    # ... and survives config.json (what --resume reads).
    assert cfg.config_from_dict(json.loads(json.dumps(config.to_dict()))) == config


KEYS = st.one_of(st.sampled_from(sorted(cfg.FIELD_TYPES)), st.text(max_size=20),
                 st.sampled_from(["model_args", "model_args.", "model_args.widths"]))
JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
                           lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                           max_leaves=6)


@given(st.lists(st.tuples(KEYS, st.text()), max_size=4))
def test_any_override_text_is_accepted_or_a_config_error(pairs):
    assignments = [f"{key}={value}" for key, value in pairs]
    try:
        cfg.validate(cfg.apply_overrides(cfg.TrainConfig(), assignments))
    except cfg.ConfigError as error:
        assert "\n" not in str(error).strip()


@given(st.dictionaries(KEYS, JSON_VALUES, max_size=5))
def test_any_saved_config_is_accepted_or_a_config_error(saved):
    """A damaged or hand-edited config.json (what --resume reads) fails as ConfigError."""
    try:
        cfg.validate(cfg.config_from_dict(saved))
    except cfg.ConfigError:
        pass


IMAGE_PREFIXES = [b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"BM", b"GIF89a",
                  b"RIFF\x00\x00\x00\x00WEBPVP8 "]


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(IMAGE_PREFIXES), st.binary(max_size=512))
def test_random_bytes_are_an_image_or_a_one_line_error(tmp_path, prefix, body):
    path = tmp_path / "upload.png"
    path.write_bytes(prefix + body)
    try:
        pixels, description = predict.read_image(path)
    except predict.ImageError as error:
        assert str(error).startswith(f"{path}: ") and "\n" not in str(error)
    else:
        assert pixels.dtype == np.uint8 and pixels.ndim == 3 and pixels.shape[2] == 3


WRITABLE_FORMATS = ["PNG", "JPEG", "BMP", "GIF"] + (["WEBP"] if features.check("webp") else [])


@st.composite
def image_files(draw):
    """(encoded image bytes, format): random pixels, sizes, modes and formats."""
    mode = draw(st.sampled_from(["RGB", "RGBA", "L", "P"]))
    image_format = draw(st.sampled_from(WRITABLE_FORMATS))
    height, width = draw(st.integers(1, 48)), draw(st.integers(1, 48))
    channels = {"RGB": 3, "RGBA": 4}.get(mode)
    shape = (height, width, channels) if channels else (height, width)
    image = Image.fromarray(draw(hnp.arrays(np.uint8, shape)))  # RGB, RGBA or L
    image = image.convert("P") if mode == "P" else image
    if image_format == "JPEG" and mode in ("RGBA", "P"):
        image = image.convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format=image_format)
    return buffer.getvalue(), image_format


@pytest.fixture(scope="module")
def reference_model(reference_run):
    from kerasvit.runs import loading

    return loading.load_model(reference_run)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(image_files())
def test_random_images_get_a_prediction(reference_model, tmp_path, image_file):
    encoded, image_format = image_file
    path = tmp_path / f"image.{image_format.lower()}"
    path.write_bytes(encoded)
    pixels, _ = predict.read_image(path)
    probabilities = predict.predict_probabilities(reference_model, [pixels])
    assert probabilities.shape == (1, 10) and np.all(np.isfinite(probabilities))
    assert probabilities.sum() == pytest.approx(1.0, abs=1e-5)


def test_unknown_keys_never_pass_silently():
    with pytest.raises(cfg.ConfigError, match="unknown config key"):
        cfg.apply_overrides(cfg.TrainConfig(), ["learningrate=0.1"])
