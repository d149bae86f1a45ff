"""zstandard: compress and decompress a payload, 2,000 round trips."""
import zstandard

payload = b"".join(b"line %d of the log, status=ok\n" % i for i in range(50))
cctx = zstandard.ZstdCompressor(level=3)
dctx = zstandard.ZstdDecompressor()
total = 0
for i in range(2000):
    frame = cctx.compress(payload + bytes([i % 256]))
    back = dctx.decompress(frame)
    assert back[-1] == i % 256 and len(back) == len(payload) + 1
    total += len(frame)
print("zstandard", total)
