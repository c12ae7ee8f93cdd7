"""The demo: its prediction function on this backend (real CIFAR-10 images, the tiny trained
ViT and a tiny CNN), bad uploads, the CLI's one-line errors, and the page end to end in
headless Chromium driven by Playwright (in the torch process only: one browser run is
enough, and torch starts fastest).

Set KERASVIT_SCREENSHOT=docs/demo.png to keep the browser test's screenshot, and
KERASVIT_DEMO_RUN=runs/<run> to serve that run instead of the tiny one.
"""

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import png_claiming
from optional_extras import skip_or_fail
from PIL import Image
from trained_run import tiny_vit_run

from kerasvit import CLASS_NAMES
from kerasvit.cli import demo, predict
from kerasvit.serving import classifier, page

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
# As the machine notes advise: no background connections (the network is closed here).
CHROMIUM_ARGS = ["--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
BROWSER_BACKEND = "torch"
SERVER_START_S = 180  # imports of three frameworks and gradio on 2 busy cores
RESULT_WAIT_MS = 60_000


# ---------------------------------------------------------------- models and images

@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return tiny_vit_run(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def served_vit(tiny_run, backend):
    return classifier.load_served_model(tiny_run, backend)


@pytest.fixture(scope="module")
def served_cnn(backend):
    """A tiny untrained CNN: Grad-CAM's path through the page logic, without a run."""
    import keras

    from kerasvit.models.cnn import build_cnn

    keras.utils.set_random_seed(0)
    model = build_cnn(widths=(8, 16, 16))
    return classifier.ServedModel(model, "cnn", backend, "tiny cnn")


@pytest.fixture(scope="module")
def examples():
    found = classifier.gallery_examples()
    if not found:
        pytest.fail("the gallery needs the prepared CIFAR-10 copy (TFDS_DATA_DIR)")
    return found


@pytest.fixture
def image_files(tmp_path, examples):
    """Real test images in every format an upload may have, and files that must be refused."""
    cat = Image.fromarray(examples[3][0])
    files = {
        "rgb.png": cat,
        "large.jpg": cat.resize((640, 480)),
        "grey.png": cat.convert("L"),
        "rgba.png": cat.convert("RGBA"),
        "tiny.png": cat.resize((1, 1)),
    }
    paths = {}
    for name, image in files.items():
        image.save(tmp_path / name)
        paths[name] = tmp_path / name
    paths["notes.txt"] = tmp_path / "notes.txt"
    paths["notes.txt"].write_text("these are not pixels")
    paths["fake.png"] = tmp_path / "fake.png"
    paths["fake.png"].write_bytes(b"\x89PNG\r\n\x1a\n but then garbage")
    paths["cut.png"] = tmp_path / "cut.png"  # a real PNG, cut off halfway
    whole = paths["rgb.png"].read_bytes()
    paths["cut.png"].write_bytes(whole[:len(whole) // 2])
    paths["empty.jpg"] = tmp_path / "empty.jpg"
    paths["empty.jpg"].write_bytes(b"")
    paths["bomb.png"] = tmp_path / "bomb.png"
    paths["bomb.png"].write_bytes(png_claiming(20000, 20000))
    paths["huge.png"] = tmp_path / "huge.png"
    paths["huge.png"].write_bytes(png_claiming(6000, 5000))
    return paths


# ---------------------------------------------------------------- the prediction function

def check_result(result, served, pixels):
    top = list(result["top5"].items())
    assert len(top) == classifier.TOP_K
    assert all(name in CLASS_NAMES for name, _ in top)
    probabilities = [p for _, p in top]
    assert probabilities == sorted(probabilities, reverse=True)
    assert 0 < sum(probabilities) <= 1 + 1e-5
    assert result["predicted_class"] == top[0][0]
    assert result["probability"] == pytest.approx(top[0][1])
    assert 0 < result["inference_ms"] < 60_000
    assert result["overlay"].shape == (224, 224, 3) and result["overlay"].dtype == np.uint8
    # The same probabilities as the predict CLI (model.predict) gives these pixels.
    expected = predict.predict_probabilities(served.model, [pixels])[0]
    for name, probability in top:
        assert probability == pytest.approx(expected[CLASS_NAMES.index(name)], abs=1e-5)


def test_gallery_has_one_test_image_per_class(examples):
    assert [name for _, name in examples] == list(CLASS_NAMES)
    assert all(pixels.shape == (32, 32, 3) and pixels.dtype == np.uint8 for pixels, _ in examples)


@pytest.mark.parametrize("model", ["vit", "cnn"])
def test_classify_gives_top5_timing_and_overlay(model, served_vit, served_cnn, examples):
    served = served_vit if model == "vit" else served_cnn
    assert served.name == model
    for pixels, _ in examples[:3]:
        result = classifier.classify(served, pixels)
        check_result(result, served, pixels)
        assert result["method"] == ("attention" if model == "vit" else "gradcam")


def test_served_run_describes_itself(served_vit, tiny_run, backend):
    assert served_vit.source == str(tiny_run)
    assert served_vit.backend == backend
    assert 0 <= served_vit.test_accuracy <= 1
    header = page.header_markdown(served_vit)
    assert "`vit`" in header and f"`{backend}`" in header and str(tiny_run) in header
    assert f"{100 * served_vit.test_accuracy:.2f}%" in header


def test_every_image_format_is_classified_with_a_note(served_vit, image_files):
    expected_notes = {"rgb.png": [], "large.jpg": ["resized from 640x480"],
                      "grey.png": ["greyscale"], "rgba.png": ["transparency dropped"]}
    for name, note_starts in expected_notes.items():
        result = classifier.classify_file(served_vit, image_files[name])
        assert "message" not in result, result.get("message")
        check_result(result, served_vit, result["pixels"])
        assert len(result["notes"]) == len(note_starts), result["notes"]
        assert all(note.startswith(start) for note, start in zip(result["notes"], note_starts))
    text = page.result_markdown(classifier.classify_file(served_vit, image_files["grey.png"]), "g",
                                "torch")
    assert " ms**" in text and "greyscale" in text and "on torch" in text


def test_bad_uploads_get_a_clear_message(served_vit, image_files):
    expected = {"notes.txt": "not an image file", "fake.png": "not an image file",
                "cut.png": "cannot be decoded",
                "empty.jpg": "not an image file", "tiny.png": "is 1x1 pixels",
                "huge.png": "is 6000x5000 pixels (30 megapixels)",
                "bomb.png": "megapixels (a possible decompression bomb)"}
    for name, phrase in expected.items():
        started = time.perf_counter()
        result = classifier.classify_file(served_vit, image_files[name])
        assert set(result) == {"message"}, name
        assert phrase in result["message"] and name in result["message"]
        # Refused from the header: decoding 400 megapixels would take seconds and 1.2 GB.
        assert time.perf_counter() - started < 2
    outputs = page.handle_upload(served_vit, str(image_files["bomb.png"]))
    assert outputs[:3] == (None, None, None) and "Cannot classify" in outputs[3]


# ---------------------------------------------------------------- the CLI

@pytest.mark.parametrize("argv, phrase", [
    (["no/such/run"], "does not exist"),
    (["no/such/run", "--port", "70000"], "--port must be between 1 and 65535"),
    (["no/such/run", "--port", "http"], "invalid int value"),
])
def test_cli_bad_input_is_one_line_and_exit_2(argv, phrase, capsys):
    with pytest.raises(SystemExit) as exit_info:
        demo.main(argv)
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kerasvit.demo: error:") and phrase in lines[0]


# ---------------------------------------------------------------- the page in a browser

def browser_missing_reason():
    for module, fix in (("gradio", "pip install -e '.[demo]'"),
                        ("playwright", "bash scripts/setup_browser.sh")):
        try:
            __import__(module)
        except ImportError:
            return f"{module} is not installed ({fix})"
    if not os.access(CHROMIUM, os.X_OK):
        return f"no Chromium at {CHROMIUM} (bash scripts/setup_browser.sh installs Debian's)"
    return None


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_serving(url, server, log_path):
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"the demo exited with {server.returncode}:\n{log_path.read_text()}")
        try:
            # A fresh opener without proxies: urlopen's global opener keeps the proxy settings
            # of its first use, which another test may have pointed at a dead port.
            opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
            with opener.open(url, timeout=15):  # slow answers on a loaded CPU
                return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"the demo did not answer within {SERVER_START_S} s:\n{log_path.read_text()}")


@pytest.fixture
def browser_ready(backend):
    """Skips (with the reason, which -ra prints) before anything slow is set up; where a
    piece is missing, skips or fails as optional_extras says."""
    if backend != BROWSER_BACKEND:
        pytest.skip(f"the browser test runs in the KERAS_BACKEND={BROWSER_BACKEND} process only")
    reason = browser_missing_reason()
    if reason:
        skip_or_fail(reason)


@pytest.fixture
def served_page(browser_ready, tmp_path, tiny_run, backend):
    """The demo CLI in a subprocess on a free loopback port; yields (url, run folder)."""
    run = Path(os.environ.get("KERASVIT_DEMO_RUN") or tiny_run)
    port = free_port()
    log_path = tmp_path / "demo.log"
    env = dict(os.environ, KERAS_BACKEND=backend, GRADIO_ANALYTICS_ENABLED="False")
    with open(log_path, "w") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "kerasvit.demo", str(run), "--port", str(port)],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_until_serving(url, server, log_path)
        yield url, run
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
    assert "Traceback" not in log_path.read_text(), log_path.read_text()


def test_page_in_headless_chromium(served_page, served_vit, image_files, backend, tmp_path):
    """A bad upload, an example click and a good upload, as a user would do them."""
    from playwright.sync_api import expect, sync_playwright

    url, run = served_page
    served = served_vit if run == Path(served_vit.source) else classifier.load_served_model(run, backend)
    expected_top = classifier.classify_file(served, image_files["large.jpg"])["predicted_class"]
    screenshot = Path(os.environ.get("KERASVIT_SCREENSHOT") or tmp_path / "demo.png")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(url)
            expect(page.locator("#header")).to_contain_text(f"backend {backend}",
                                                            timeout=RESULT_WAIT_MS)
            result = page.locator("#result")
            upload = page.locator("#upload input[type=file]")
            # The server answers a bad upload with a message and keeps serving.
            upload.set_input_files(str(image_files["notes.txt"]))
            expect(result).to_contain_text("notes.txt is not an image file",
                                           timeout=RESULT_WAIT_MS)
            page.locator("#examples img").first.click()
            expect(result).to_contain_text("test image of class airplane", timeout=RESULT_WAIT_MS)
            page.locator("#upload button[aria-label='Clear']").first.click()
            upload.set_input_files(str(image_files["large.jpg"]))
            expect(result).to_contain_text(f"{expected_top} (", timeout=RESULT_WAIT_MS)
            expect(result).to_contain_text("for large.jpg")
            expect(result).to_contain_text(re.compile(r"Inference time: \d+\.\d ms"))
            expect(page.locator("#top5")).to_contain_text(expected_top)
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    print(f"screenshot: {screenshot}")
    assert screenshot.stat().st_size > 10_000
