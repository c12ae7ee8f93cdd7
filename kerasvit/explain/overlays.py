"""Heat maps drawn over images: normalisation, bilinear resizing and colour overlays (PIL and
matplotlib colour maps; no framework)."""

import numpy as np

OVERLAY_ALPHA = 0.45
COLORMAP = "jet"


def normalise(heat):
    heat = np.asarray(heat, dtype="float32")
    spread = heat.max() - heat.min()
    return (heat - heat.min()) / spread if spread > 0 else np.zeros_like(heat)


def resize(array, size):
    """Bilinear resize of an HxW float map or HxWx3 image with PIL (no framework)."""
    from PIL import Image

    if array.ndim == 2:
        return np.asarray(Image.fromarray(array.astype("float32"), mode="F")
                          .resize((size, size), Image.BILINEAR))
    image = Image.fromarray(array.clip(0, 255).astype("uint8"))
    return np.asarray(image.resize((size, size), Image.BILINEAR)).astype("float32")


def overlay(image, heat, size):
    """The heat map (any grid) upsampled and coloured over the image, as uint8 size x size x 3."""
    import matplotlib

    colours = matplotlib.colormaps[COLORMAP](normalise(resize(normalise(heat), size)))[..., :3]
    blended = (1 - OVERLAY_ALPHA) * resize(image, size) + OVERLAY_ALPHA * 255 * colours
    return blended.clip(0, 255).astype("uint8")
