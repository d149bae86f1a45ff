"""Pillow: make an image, resize it and encode/decode a PNG in memory, 2,000 round trips."""
import io

from PIL import Image

total = 0
for i in range(2000):
    im = Image.new("RGB", (16, 16), (i % 256, 40, 200))
    small = im.resize((8, 8))
    buf = io.BytesIO()
    small.save(buf, format="PNG")
    back = Image.open(io.BytesIO(buf.getvalue()))
    back.load()
    assert back.size == (8, 8) and back.getpixel((0, 0))[0] == i % 256
    total += buf.tell()
print("pillow", total)
