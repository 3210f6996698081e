"""Image decoding: formats, colour order, orientation, and the guards that run before pixels are read."""

import io
import time

import cv2
import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from handlers.core.errors import RequestError
from handlers.core.images import (
    ImageHeader,
    ImageLimits,
    channels_last,
    dct_scale,
    decode_image,
    decode_jpegs_on,
    decode_pixels,
    encode_image,
    normalize,
    read_header,
    resize_pixels,
)
from handlers.vision.geometry import warp_crops
from tests.fixtures.serving import pixel_bomb_png

LIMITS = ImageLimits(max_bytes=5_000_000, max_pixels=4_000_000)


def encoded(array: np.ndarray, image_format: str, **save_args) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=image_format, **save_args)
    return buffer.getvalue()


def colour_blocks() -> np.ndarray:
    """A 40x60 RGB image: red left third, green middle, blue right."""
    image = np.zeros((40, 60, 3), dtype=np.uint8)
    image[:, :20, 0] = 255
    image[:, 20:40, 1] = 255
    image[:, 40:, 2] = 255
    return image


@pytest.mark.parametrize(("image_format", "tolerance"), [("PNG", 0), ("BMP", 0), ("WEBP", 0), ("JPEG", 12)])
def test_formats_decode_to_rgb_chw(image_format, tolerance):
    blocks = colour_blocks()
    save_args = {"lossless": True} if image_format == "WEBP" else {}
    decoded = decode_image(encoded(blocks, image_format, **save_args), LIMITS)
    assert decoded.shape == (3, 40, 60) and decoded.dtype == torch.uint8
    centre_columns = decoded[:, 20, [10, 30, 50]].T.int().numpy()  # red, green, blue block centres
    assert np.abs(centre_columns - np.diag([255, 255, 255])).max() <= tolerance


def test_grey_and_rgba_images_become_rgb():
    grey = decode_image(encoded(np.full((5, 7), 100, np.uint8), "PNG"), LIMITS)
    rgba = decode_image(encoded(np.full((5, 7, 4), 50, np.uint8), "PNG"), LIMITS)
    assert grey.shape == rgba.shape == (3, 5, 7)
    assert (grey == 100).all() and (rgba == 50).all()


def exif_jpeg(array: np.ndarray, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encoded(array, "JPEG", quality=95, subsampling=0, exif=exif.tobytes())


def corner_marks(height: int, width: int) -> np.ndarray:
    """Dark grey with a red, green and blue 16x16 block in three corners: every turn and mirror looks different."""
    image = np.full((height, width, 3), 40, np.uint8)
    image[:16, :16] = (255, 0, 0)
    image[:16, -16:] = (0, 255, 0)
    image[-16:, :16] = (0, 0, 255)
    return image


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("scale", [1, 2, 4, 8])
def test_every_exif_orientation_at_every_scale_matches_pillow(orientation, scale):
    data = exif_jpeg(corner_marks(64, 96), orientation)
    header = read_header(data, LIMITS)
    with Image.open(io.BytesIO(data)) as image:
        expected = np.array(ImageOps.exif_transpose(image).convert("RGB"))
    assert header.size == expected.shape[:2]
    decoded = decode_pixels(data, header, scale).permute(1, 2, 0).numpy()
    assert decoded.shape[:2] == (expected.shape[0] // scale, expected.shape[1] // scale)
    # Block means: each decoded pixel covers scale x scale image pixels.
    blocks = expected.reshape(expected.shape[0] // scale, scale, expected.shape[1] // scale, scale, 3).mean(axis=(1, 3))
    assert np.abs(decoded.astype(float) - blocks).mean() < 4


def test_exif_orientation_is_applied():
    blocks = colour_blocks()  # 40 rows x 60 columns
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display needs a 90 degree clockwise turn
    decoded = decode_image(encoded(blocks, "JPEG", exif=exif.tobytes()), LIMITS)
    assert decoded.shape == (3, 60, 40)
    assert decoded[0, 5, 20] > 200  # red, left in storage, is now on top


@pytest.mark.parametrize(
    ("data", "code", "kind"),
    [
        (b"", 400, "EmptyRequest"),
        (b"hello, I am not an image at all", 400, "InvalidImage"),
        (encoded(colour_blocks(), "JPEG")[:300], 400, "InvalidImage"),
        (encoded(colour_blocks(), "PNG")[:-40], 400, "InvalidImage"),
        (encoded(colour_blocks(), "GIF"), 415, "UnsupportedImageType"),
        (encoded(colour_blocks(), "TIFF"), 415, "UnsupportedImageType"),
        (pixel_bomb_png(), 413, "ImageTooLarge"),
        (pixel_bomb_png(0, 10), 400, "InvalidImage"),
        (b"\xff\xd8\xff" + b"\0" * 6_000_000, 413, "ImageTooLarge"),
    ],
    ids=[
        "empty",
        "text",
        "truncated-jpeg",
        "truncated-png",
        "gif",
        "tiff",
        "pixel-bomb",
        "zero-width",
        "too-many-bytes",
    ],
)
def test_unusable_images_get_the_right_code(data, code, kind):
    with pytest.raises(RequestError) as caught:
        decode_image(data, LIMITS)
    assert (caught.value.code, caught.value.kind) == (code, kind)


def test_pixel_bomb_is_refused_before_decoding():
    bomb = pixel_bomb_png()
    started = time.perf_counter()
    with pytest.raises(RequestError, match="10000000000 pixels"):
        decode_image(bomb, LIMITS)
    assert len(bomb) < 200
    assert time.perf_counter() - started < 1.0  # 10^10 pixels would take minutes and 30 GB to decode


def test_encode_round_trips_through_decode():
    blocks = colour_blocks()
    pixels = torch.from_numpy(blocks).permute(2, 0, 1)
    assert (decode_image(encode_image(pixels, "png"), LIMITS).permute(1, 2, 0).numpy() == blocks).all()
    rgba = torch.cat([pixels, torch.full((1, 40, 60), 128, dtype=torch.uint8)])
    with Image.open(io.BytesIO(encode_image(rgba, "png"))) as image:
        assert image.mode == "RGBA" and np.array(image)[0, 0].tolist() == [255, 0, 0, 128]


def test_every_pixel_layout_encodes_to_the_same_png():
    """Channels-last and channels-first pixels, cropped views and RGBX views: each layout's own conversion, one
    picture."""
    rgba = np.random.default_rng(3).integers(0, 256, (41, 63, 4), dtype=np.uint8)
    padded = torch.from_numpy(rgba)
    planar = padded.permute(2, 0, 1).contiguous()
    layouts = {
        "rgb channels-last": (padded[:, :, :3].contiguous().permute(2, 0, 1), 3),
        "rgb channels-first": (planar[:3], 3),
        "rgb view of rgbx": (padded.permute(2, 0, 1)[:3], 3),
        "rgb cropped channels-first": (torch.cat([planar[:3], planar[:3]], dim=2)[:, :, :63], 3),
        "rgba channels-last": (padded.permute(2, 0, 1), 4),
        "rgba channels-first": (planar, 4),
    }
    for name, (pixels, channels) in layouts.items():
        with Image.open(io.BytesIO(encode_image(pixels, "png"))) as image:
            assert (np.array(image) == rgba[:, :, :channels]).all(), name


@pytest.mark.parametrize(
    ("size", "most", "scale"),
    [
        ((480, 640), 4.2, 4),
        ((480, 640), 9.0, 8),
        ((480, 640), 1.9, 1),
        ((1080, 1920), 12.5, 8),
        ((1080, 1920), 7.99, 4),
        ((1081, 1920), 8.0, 1),
        ((100, 150), 8.0, 2),
        ((96, 160), 3.0, 2),
    ],
)
def test_dct_scale_is_the_largest_allowed_that_divides_both_sides(size, most, scale):
    assert dct_scale(ImageHeader("JPEG", *size), most) == scale


def test_only_jpegs_are_decoded_smaller():
    assert dct_scale(ImageHeader("PNG", 800, 800), 8.0) == 1


@pytest.mark.parametrize("scale", [1, 2, 4, 8])
def test_a_point_in_a_scaled_decode_is_at_its_image_position_over_the_scale(scale):
    """A bright square at a known sub-pixel centre stays there: decoded pixel j covers image [s*j, s*(j+1))."""
    height, width = 400, 544
    ys, xs = np.mgrid[0:height, 0:width] + 0.5
    for cx, cy in [(101.3, 77.9), (400.6, 300.2), (37.0, 350.5)]:
        square = (np.abs(xs - cx) <= 12) & (np.abs(ys - cy) <= 12)
        image = np.where(square[..., None], 250, 10).astype(np.uint8).repeat(3, axis=2)
        data = encoded(image, "JPEG", quality=98, subsampling=0)
        grey = decode_pixels(data, read_header(data, LIMITS), scale)[0].double() - 10
        v, u = np.mgrid[0 : height // scale, 0 : width // scale] + 0.5
        found = (grey * torch.from_numpy(u)).sum() / grey.sum(), (grey * torch.from_numpy(v)).sum() / grey.sum()
        assert abs(found[0] * scale - cx) < 0.6 and abs(found[1] * scale - cy) < 0.6, (scale, cx, cy, found)


def photo_jpeg(width: int = 320, height: int = 240, **save_args) -> bytes:
    """A smooth colour photo as JPEG (quality 90 unless said)."""
    ys, xs = np.mgrid[0:height, 0:width]
    array = np.stack([127 + 100 * np.sin(xs / 13.0), 127 + 100 * np.cos(ys / 9.0), (xs + 2 * ys) % 256], axis=2).astype(
        np.uint8
    )
    return encoded(array, "JPEG", **{"quality": 90, **save_args})


OPENCV_SCALES = {
    1: cv2.IMREAD_COLOR_RGB,
    2: cv2.IMREAD_REDUCED_COLOR_2,
    4: cv2.IMREAD_REDUCED_COLOR_4,
    8: cv2.IMREAD_REDUCED_COLOR_8,
}


@pytest.mark.parametrize(
    "save_args", [{}, {"progressive": True}, {"subsampling": 0}], ids=["baseline", "progressive", "4:4:4"]
)
@pytest.mark.parametrize("scale", [1, 2, 4, 8])
def test_jpegs_decode_into_an_rgbx_buffer_with_opencvs_pixels(scale, save_args):
    """The decoder's four-channel buffer is behind the RGB view, and its pixels are OpenCV's (libjpeg's) exactly."""
    data = photo_jpeg(**save_args)
    decoded = decode_pixels(data, read_header(data, LIMITS), scale)
    assert decoded.shape == (3, 240 // scale, 320 // scale) and decoded.dtype == torch.uint8
    padded = channels_last(decoded)
    assert padded.shape == (240 // scale, 320 // scale, 4)
    reference = cv2.imdecode(np.frombuffer(data, np.uint8), OPENCV_SCALES[scale])
    reference = reference if scale == 1 else reference[:, :, ::-1]  # the reduced flags decode to BGR
    assert (padded[:, :, :3] == reference).all() and (decoded.permute(1, 2, 0).numpy() == reference).all()


def test_channels_last_copies_whatever_is_not_a_whole_rgbx_buffer():
    data = photo_jpeg()
    decoded = decode_pixels(data, read_header(data, LIMITS))
    png = decode_image(encoded(decoded.permute(1, 2, 0).numpy(), "PNG"), LIMITS)
    rotated = exif_jpeg(corner_marks(64, 96), 6)
    turned = decode_pixels(rotated, read_header(rotated, LIMITS))
    for pixels in (png, decoded[:, 10:50, 20:70], decoded[1:], turned, decoded.float()):
        array = channels_last(pixels)
        assert array.shape == (*pixels.shape[1:], pixels.shape[0]) and array.flags.c_contiguous
        assert (torch.from_numpy(array).permute(2, 0, 1) == pixels).all()


def test_jpegs_libjpeg_can_only_partly_recover_decode_as_opencv_did():
    """Corrupt entropy data: simplejpeg (strict) refuses it and OpenCV decodes what it can, as before; a cut-off JPEG
    stays refused."""
    data = bytearray(photo_jpeg())
    data[len(data) // 2] ^= 0xFF
    data[len(data) // 2 + 300] ^= 0x55
    decoded = decode_image(bytes(data), LIMITS)
    reference = cv2.imdecode(np.frombuffer(bytes(data), np.uint8), cv2.IMREAD_COLOR_RGB)
    assert (decoded.permute(1, 2, 0).numpy() == reference).all()
    with pytest.raises(RequestError, match="corrupt or truncated"):
        decode_image(photo_jpeg()[:3000], LIMITS)


def test_resize_and_crops_of_an_rgbx_view_equal_those_of_its_rgb_copy():
    data = photo_jpeg(640, 480)
    decoded = decode_pixels(data, read_header(data, LIMITS))
    copy = decoded.contiguous()
    assert channels_last(decoded).shape[2] == 4 and channels_last(copy).shape[2] == 3
    for size in ((300, 400), (520, 693), (120, 160)):  # bilinear, upscaled, area
        assert (resize_pixels(decoded, size) == resize_pixels(copy, size)).all()
    boxes = torch.tensor([[10.5, 20.25, 300.0, 400.0], [-50.0, -20.0, 700.0, 500.0], [100.0, 100.0, 130.0, 140.0]])
    together = warp_crops([decoded, copy], boxes, torch.tensor([0, 1, 0]), (256, 192))
    assert together.shape == (3, 3, 256, 192)
    assert (together[0] == warp_crops([copy], boxes[:1], torch.tensor([0]), (256, 192))[0]).all()
    assert (together[1] == warp_crops([decoded], boxes[1:2], torch.tensor([0]), (256, 192))[0]).all()


def test_device_decode_matches_the_cpu_decode():
    """The batched decoder CUDA models use, run here on the CPU: same pixels and orientation as OpenCV's."""
    datas = [exif_jpeg(corner_marks(64, 96), orientation) for orientation in (1, 6, 3)]
    headers = [read_header(data, LIMITS) for data in datas]
    for data, header, pixels in zip(datas, headers, decode_jpegs_on(torch.device("cpu"), datas, headers)):
        reference = decode_pixels(data, header)
        assert pixels.shape == reference.shape
        assert (pixels.int() - reference.int()).abs().float().mean() < 2


def test_device_decode_falls_back_when_a_jpeg_is_corrupt():
    good = exif_jpeg(corner_marks(64, 96), 1)
    header = read_header(good, LIMITS)
    assert decode_jpegs_on(torch.device("cpu"), [good, good[:400]], [header, header]) == [None, None]


@pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs CUDA (nvJPEG); the same code is tested on the CPU above"
)
def test_cuda_decode_matches_the_cpu_decode():
    datas = [exif_jpeg(corner_marks(64, 96), orientation) for orientation in (1, 6, 8)]
    headers = [read_header(data, LIMITS) for data in datas]
    for data, header, pixels in zip(datas, headers, decode_jpegs_on(torch.device("cuda"), datas, headers)):
        assert pixels.device.type == "cuda"
        assert (pixels.cpu().int() - decode_pixels(data, header).int()).abs().float().mean() < 2


@pytest.mark.parametrize("channels", ["rgb", "bgr"])
def test_normalize_takes_the_same_values_on_its_opencv_and_torch_paths(channels):
    """Channels-last uint8 crops (OpenCV's) and any other layout or dtype: (x/255 - mean) / std in the model's order."""
    crops = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (3, 20, 30, 3), dtype=np.uint8)).permute(
        0, 3, 1, 2
    )
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    ordered = crops.flip(1) if channels == "bgr" else crops
    expected = (ordered.double() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    for layout in (crops, crops.contiguous(), crops.float()):
        assert torch.allclose(normalize(layout, mean, std, channels).double(), expected, atol=1e-5)
    assert normalize(crops[:0], mean, std, channels).shape == (0, 3, 20, 30)


@pytest.mark.parametrize(
    ("source", "size"),
    [
        ((120, 160), (60, 80)),  # one exact halving
        ((120, 160), (37, 101)),
        ((120, 160), (80, 107)),
        ((120, 160), (200, 300)),
        ((1080, 1920), (520, 924)),  # halved, then bilinear
        ((1081, 1919), (250, 460)),  # odd sides: no halving, area average
        ((1080, 1922), (250, 460)),  # halved once, then an odd side: area average
        ((480, 640), (400, 100)),  # squeezed on one axis only
        ((541, 2000), (256, 480)),  # an odd side: no halving, area average at uneven ratios
    ],
)
def test_opencv_resize_on_the_cpu_matches_torchvisions_antialiased_resize(source, size):
    """The CPU path of resize_pixels against the device path (run on the CPU): smooth photos differ by rounding."""
    ys, xs = np.mgrid[0 : source[0], 0 : source[1]]
    smooth = np.stack(
        [127 + 100 * np.sin(xs / 9.0), 127 + 100 * np.cos(ys / 7.0), (xs + ys) % 256 * 0 + 90], axis=2
    ).astype(np.uint8)
    pixels = torch.from_numpy(smooth).permute(2, 0, 1)
    resized = resize_pixels(pixels, size)
    assert resized.shape == (3, *size) and resized.dtype == torch.uint8
    expected = torch.nn.functional.interpolate(
        pixels[None].float(), size=size, mode="bilinear", antialias=True, align_corners=False
    )[0]
    assert (resized.float() - expected).abs().mean() < 2.5
    assert resize_pixels(pixels, source) is pixels
