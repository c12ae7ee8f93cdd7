"""Reading the user's image files (predict, the demo, explain --images): only common photo
formats are decoded, and a file's pixel count is checked on its header, before anything is
decoded. Each command words its own message from the exceptions."""

import contextlib

from PIL import Image

# Only these decoders may see user files: PIL's other plugins include rarely used formats
# (EPS even runs Ghostscript), and none of them is a photo format anyone needs here.
IMAGE_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP")
# A small file can claim 20000x20000 pixels (1.2 GB of RGB once decoded); 25 megapixels
# (~75 MB decoded) covers any camera photo.
MAX_PIXELS = 25_000_000


class TooManyPixels(ValueError):
    """The header claims more than MAX_PIXELS."""

    def __init__(self, width, height):
        super().__init__(f"{width}x{height} pixels")
        self.width, self.height = width, height

    @property
    def megapixels(self):
        return self.width * self.height / 1e6


@contextlib.contextmanager
def open_image(path):
    """PIL's Image.open limited to IMAGE_FORMATS; raises TooManyPixels from the header.
    PIL's own errors (not an image, a decompression bomb, ...) pass through."""
    with Image.open(path, formats=IMAGE_FORMATS) as image:
        width, height = image.size
        if width * height > MAX_PIXELS:
            raise TooManyPixels(width, height)
        yield image
