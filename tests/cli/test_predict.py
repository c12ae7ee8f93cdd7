"""kerasvit.predict on PNG, JPEG, greyscale, RGBA and non-image files, with the tiny run."""

import json

import numpy as np
import pytest
from PIL import Image
from trained_run import tiny_vit_run

from kerasvit import CLASS_NAMES
from kerasvit.cli import predict
from kerasvit.data import cifar, stream
from kerasvit.evaluation import classification
from kerasvit.runs import loading


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    return tiny_vit_run(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def test_images():
    images, labels = cifar.load_cifar10(cifar.resolve_data_dir())["test"]
    return images[:4], labels[:4]


@pytest.fixture
def image_files(tmp_path, test_images):
    """Four real test images in the four formats, plus two files that are not images."""
    images, _ = test_images
    files = {
        "rgb.png": Image.fromarray(images[0]),
        "large.jpg": Image.fromarray(images[1]).resize((120, 90)),
        "grey.png": Image.fromarray(images[2]).convert("L"),
        "rgba.png": Image.fromarray(images[3]).convert("RGBA"),
    }
    paths = {}
    for name, image in files.items():
        image.save(tmp_path / name)
        paths[name] = str(tmp_path / name)
    (tmp_path / "notes.txt").write_text("these are not pixels")
    (tmp_path / "fake.png").write_bytes(b"\x89PNG but then garbage")
    paths["notes.txt"] = str(tmp_path / "notes.txt")
    paths["fake.png"] = str(tmp_path / "fake.png")
    return paths


def run_predict(argv, capsys):
    code = predict.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_predict_json_for_every_format_and_errors_for_non_images(tiny_run, image_files, capsys):
    code, out, err = run_predict(["--model", str(tiny_run), "--top-k", "3", "--json",
                                  *image_files.values()], capsys)
    assert code == 1  # Some files were not images; the others were still predicted.
    result = json.loads(out)
    assert [r["file"] for r in result["results"]] == [
        image_files[n] for n in ("rgb.png", "large.jpg", "grey.png", "rgba.png")]
    images = {r["file"]: r for r in result["results"]}
    assert images[image_files["large.jpg"]]["image"] == "120x90 RGB"
    assert images[image_files["grey.png"]]["image"] == "32x32 L"
    assert images[image_files["rgba.png"]]["image"] == "32x32 RGBA"
    for entry in result["results"]:
        probabilities = [p["probability"] for p in entry["predictions"]]
        assert len(probabilities) == 3
        assert probabilities == sorted(probabilities, reverse=True)
        assert 0 < sum(probabilities) <= 1 + 1e-6
        assert all(p["class"] in CLASS_NAMES for p in entry["predictions"])
    # One line per bad file, naming it.
    error_lines = err.strip().splitlines()
    assert len(error_lines) == 2
    assert "notes.txt" in error_lines[0] and "not an image file" in error_lines[0]
    assert "fake.png" in error_lines[1]
    assert len(result["errors"]) == 2


def test_predict_matches_the_model_on_the_same_pixels(tiny_run, image_files, test_images, capsys):
    """The PNG of a test image gets exactly the probabilities the model gives that image
    (the same preparation as evaluation); RGBA is the RGB image, greyscale is its luminance."""
    images, _ = test_images
    _, out, _ = run_predict(["--model", str(tiny_run / "model.keras"), "--top-k", "10", "--json",
                             image_files["rgb.png"], image_files["rgba.png"],
                             image_files["grey.png"]], capsys)
    result = json.loads(out)["results"]
    model = loading.load_model(tiny_run)
    grey = np.asarray(Image.fromarray(images[2]).convert("L").convert("RGB"))
    expected = classification.softmax(model.predict(
        stream.prepare_images(np.stack([images[0], images[3], grey]), (32, 32)), verbose=0))
    for row, entry in zip(expected, result):
        got = {p["class"]: p["probability"] for p in entry["predictions"]}
        assert [got[name] for name in CLASS_NAMES] == pytest.approx(row, abs=1e-6)


def test_predict_table(tiny_run, image_files, capsys):
    code, out, _ = run_predict(["--model", str(tiny_run), "--top-k", "2",
                                image_files["large.jpg"]], capsys)
    assert code == 0
    lines = out.strip().splitlines()
    assert lines[0] == f"{image_files['large.jpg']}  (120x90 RGB)"
    assert lines[1].startswith("  1. ") and lines[2].startswith("  2. ") and len(lines) == 3
    assert lines[1].split()[1] in CLASS_NAMES and lines[1].endswith("%")


@pytest.mark.parametrize("argv, expected", [
    (["--top-k", "11"], "--top-k must be between 1 and 10"),
    ([], "none of the files could be read as an image"),
])
def test_predict_bad_input_is_one_line(argv, expected, image_files, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        predict.main(["--model", str(tmp_path / "never-loaded.keras"), *argv,
                      image_files["notes.txt"]])
    assert exit_info.value.code == 2
    assert expected in capsys.readouterr().err.strip().splitlines()[-1]


def test_predict_missing_model_is_one_line(image_files, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        predict.main(["--model", str(tmp_path / "missing"), image_files["rgb.png"]])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not exist" in err[0]
