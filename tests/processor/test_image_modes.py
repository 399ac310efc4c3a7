"""Every image mode against its 8-bit twin: files (`load_image`), PIL images and arrays give the same model input."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from m2f_hf.image_processing_m2f import M2FImageProcessor
from m2f_hf.processing import image_modes
from m2f_hf.processing.image_modes import load_image, prepare_pil_image

# no resize: the twins must give identical pixel values, not just close ones
PROCESSOR = M2FImageProcessor(do_resize=False)


@pytest.fixture(scope="module")
def rgb():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def grey(rgb):
    grey = rgb[..., 0].copy()
    grey[0, 0], grey[0, 1] = 0, 255  # the full 8-bit range, so that min-max scaling is the identity
    return grey


def pixels(image, **kwargs):
    return PROCESSOR(image, **kwargs)["pixel_values"]


def _save(tmp_path, name, image, **kwargs):
    path = tmp_path / name
    image.save(path, **kwargs)
    return path


@pytest.mark.parametrize(
    ("name", "make"),
    [
        ("16bit.png", lambda g: Image.fromarray(g.astype(np.uint16) * 257)),  # I;16
        ("16bit.tif", lambda g: Image.fromarray(g.astype(np.uint16) * 257)),
        ("int32.tif", lambda g: Image.fromarray(g.astype(np.int32) * 257)),  # I
        ("float.tif", lambda g: Image.fromarray(g.astype(np.float32) / 255, mode="F")),
        ("bilevel.png", lambda g: Image.fromarray(g > 127).convert("1")),
        ("grey_alpha.png", lambda g: Image.fromarray(np.stack([g, 255 - g], -1), mode="LA")),
    ],
)
def test_grey_files_equal_their_8bit_twin(tmp_path, grey, name, make):
    made = make(grey)
    twin = (
        Image.fromarray(np.where(grey > 127, 255, 0).astype(np.uint8)) if made.mode == "1" else Image.fromarray(grey)
    )
    loaded = load_image(_save(tmp_path, name, made))
    assert loaded.mode in ("L", "F")
    torch.testing.assert_close(pixels(loaded), pixels(twin), rtol=0, atol=1e-5)


def test_16bit_big_endian_and_every_16bit_container_agree(grey):
    sixteen = grey.astype(np.uint16) * 257
    expected = pixels(Image.fromarray(grey))
    pil = Image.fromarray(sixteen)
    for image in (
        pil,  # PIL I;16
        Image.frombytes("I;16B", pil.size, sixteen.astype(">u2").tobytes()),  # (PIL's convert("I;16B") clips)
        sixteen,  # numpy uint16
        torch.from_numpy(sixteen),  # torch uint16
        sixteen.astype(">u2"),  # big-endian numpy
        np.stack([sixteen] * 3, -1),  # 16-bit RGB (as tifffile or OpenCV read it)
    ):
        assert torch.equal(pixels(image), expected)


def test_float_inputs_agree_across_pil_numpy_and_torch(grey):
    values = grey.astype(np.float32)  # the processor's float convention: the 0-255 scale
    expected = pixels(Image.fromarray(grey))
    for image in (Image.fromarray(values, mode="F"), values, torch.from_numpy(values), values.astype(np.float64)):
        assert torch.equal(pixels(image), expected)


def test_arrays_are_read_without_writing_to_them_or_warning(rgb):
    # `np.asarray(pil_image)` is read-only: the processor copies it rather than let torch warn about shared memory;
    # a writable array (numpy or torch) is left as it was
    expected = pixels(Image.fromarray(rgb))
    read_only = np.asarray(Image.fromarray(rgb))
    assert not read_only.flags.writeable
    writable = rgb.astype(np.float32)
    tensor = torch.from_numpy(rgb.copy())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for image in (read_only, writable, tensor):
            assert torch.equal(pixels(image), expected)
    assert np.array_equal(writable, rgb) and torch.equal(tensor, torch.from_numpy(rgb))


def test_colour_modes_equal_their_rgb_twin(tmp_path, rgb):
    twin = Image.fromarray(rgb)
    palette = twin.quantize(colors=200)  # the twin of a palette image is its colours
    rgba = Image.fromarray(np.concatenate([rgb, rgb[..., :1]], -1), mode="RGBA")
    files = {
        "palette.gif": (palette, palette.convert("RGB")),
        "palette.png": (palette, palette.convert("RGB")),
        "cmyk.tif": (twin.convert("CMYK"), twin),  # PIL's CMYK has no profile: the naive inverse is exact
        "rgba.png": (rgba, twin),  # alpha dropped
    }
    for name, (image, expected) in files.items():
        loaded = load_image(_save(tmp_path, name, image))
        assert loaded.mode == "RGB", name
        assert torch.equal(pixels(loaded), pixels(expected)), name
    in_memory = {
        "P": (palette, palette.convert("RGB")),
        "PA": (palette.convert("PA"), palette.convert("RGB")),
        "CMYK": (twin.convert("CMYK"), twin),
        "YCbCr": (twin.convert("YCbCr"), twin.convert("YCbCr").convert("RGB")),
        "HSV": (twin.convert("HSV"), twin.convert("HSV").convert("RGB")),
        "RGBA": (rgba, twin),
    }
    for mode, (image, expected) in in_memory.items():
        assert image.mode == mode
        assert prepare_pil_image(image).mode == "RGB", mode
        assert torch.equal(pixels(image), pixels(expected)), mode  # the processor takes every mode as is
        assert torch.equal(pixels(prepare_pil_image(image)), pixels(expected)), mode


def test_exif_orientation_is_applied(tmp_path):
    # a smooth picture (JPEG keeps it) whose four corners differ, so that a wrong turn shows
    rows, cols = np.mgrid[:37, :53]
    rgb = np.stack([rows * 6, cols * 4, 255 - rows * 3 - cols * 2], -1).astype(np.uint8)
    upright = Image.fromarray(rgb)
    # a phone stores the sensor's pixels and says in EXIF how to turn them: orientation 6 = rotate 90 degrees clockwise
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    path = _save(tmp_path, "phone.jpg", stored, exif=exif, quality=95)
    loaded = load_image(path)
    assert loaded.size == upright.size
    with Image.open(path) as raw:  # the same decoded JPEG pixels, turned by hand
        expected = raw.convert("RGB").transpose(Image.Transpose.ROTATE_270)
    assert np.array_equal(np.asarray(loaded), np.asarray(expected))
    # and the JPEG round trip keeps it close to the upright original
    assert np.abs(np.asarray(loaded, dtype=np.int16) - rgb).mean() < 4


def test_minmax_stretches_each_image(tmp_path, grey):
    # a 12-bit-like image: 1000 + 8 v spans [1000, 3040]; stretched to 0..255 it is v again (exactly: 255 / 2040 = 1/8)
    dim = Image.fromarray((1000 + 8 * grey.astype(np.uint16)).astype(np.uint16))
    path = _save(tmp_path, "dim.png", dim)
    stretched = load_image(path, scaling="minmax")
    assert torch.equal(pixels(stretched), pixels(Image.fromarray(grey)))
    assert torch.equal(pixels(dim, scaling="minmax"), pixels(Image.fromarray(grey)))  # the processor's option
    # by the 16-bit range it stays dark: at most 3040 / 257 = 11.8 of 255
    assert np.asarray(load_image(path)).max() == pytest.approx(3040 / 257, rel=1e-6)
    # a float file outside 0..1 can only be min-max scaled
    wide = Image.fromarray(grey.astype(np.float32) * 4 + 100, mode="F")
    assert torch.equal(pixels(load_image(_save(tmp_path, "wide.tif", wide), scaling="minmax")), pixels(stretched))


def test_12bit_data_in_16bit_files_warn(grey, caplog):
    image_modes.logger.warning_once.cache_clear()
    with caplog.at_level("WARNING"):
        prepare_pil_image(Image.fromarray(grey.astype(np.uint16) * 16))  # at most 4080
    assert "12 bits" in caplog.text and "minmax" in caplog.text


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (Image.fromarray(np.full((8, 8), 3.0, np.float32), mode="F"), r"values in \[3, 3\].*scaling='minmax'"),
        (Image.fromarray(np.full((8, 8), np.nan, np.float32), mode="F"), "NaN"),
        (Image.fromarray(np.full((8, 8), -5, np.int32)), r"32-bit integer image with values in \[-5, -5\]"),
    ],
)
def test_values_range_scaling_cannot_map_are_readable_errors(tmp_path, image, message):
    with pytest.raises(OSError, match=message):
        load_image(_save(tmp_path, "bad.tif", image))


def test_unreadable_files_raise_oserror(tmp_path):
    (tmp_path / "notes.png").write_text("not an image")
    for path, message in (
        (tmp_path / "missing.png", "no such file"),
        (tmp_path, "is a directory"),
        (tmp_path / "notes.png", "not an image file"),
    ):
        with pytest.raises(OSError, match=message):
            load_image(path)
    with pytest.raises(ValueError, match="`scaling` must be one of"):
        load_image(tmp_path / "notes.png", scaling="gamma")
    with pytest.raises(ValueError, match="`scaling` must be one of"):
        M2FImageProcessor(scaling="log")


def test_cmyk_with_a_broken_icc_profile_falls_back_with_a_warning(rgb, caplog):
    cmyk = Image.fromarray(rgb).convert("CMYK")
    cmyk.info["icc_profile"] = b"not an ICC profile"
    with caplog.at_level("WARNING"):
        converted = prepare_pil_image(cmyk)
    assert "ICC profile" in caplog.text
    assert np.array_equal(np.asarray(converted), rgb)  # PIL's formula, exact for PIL's own CMYK
